/* log.c: one line per event on stderr, which every web server collects. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "kw.h"

enum kw_log_level kw_log_threshold = KW_LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

/* Parses "error", "warn", "info" or "debug"; KW_EINVAL otherwise. */
int
kw_log_parse_level(const char *name, enum kw_log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcasecmp(name, level_names[i]) == 0) {
			*out = (enum kw_log_level)i;
			return KW_OK;
		}
	return KW_EINVAL;
}

/*
 * Writes "time level pid file:line message" as one write(2), so lines from
 * concurrent workers never interleave.  Callers never pass secrets.
 */
void
kw_log_write(enum kw_log_level level, const char *file, int line, const char *fmt, ...)
{
	char buf[1024];
	char when[KW_TIME_LEN];
	va_list ap;
	int n, m;

	if (level > kw_log_threshold)
		return;
	kw_time_format(time(NULL), when);	/* the one RFC 3339 writer: never overruns */
	n = snprintf(buf, sizeof(buf), "%s %s [%ld] %s:%d: ", when, level_names[level],
	    (long)getpid(), file, line);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return;
	va_start(ap, fmt);
	m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += m;
	if ((size_t)n > sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	(void)!write(STDERR_FILENO, buf, (size_t)n);
}

/*
 * The verdict the request in progress reached, noted where it is decided:
 * a worker serves one request at a time, and kw_log_access clears it.
 */
static struct {
	int set;
	enum kw_verdict_code code;
	char token[KW_TOKEN_LEN + 1];
} verdict;

void
kw_log_verdict(enum kw_verdict_code code, const char *token)
{
	verdict.set = 1;
	verdict.code = code;
	snprintf(verdict.token, sizeof(verdict.token), "%s", token != NULL ? token : "");
}

/*
 * What a log line may say about a key: the first 8 characters of its
 * token, a SHA-256 in hex, and nothing at all of anything else.
 */
static const char *
token_prefix(const char *token, char out[9])
{
	if (token == NULL || strlen(token) != KW_TOKEN_LEN ||
	    strspn(token, "0123456789abcdef") != KW_TOKEN_LEN)
		return "-";
	memcpy(out, token, 8);
	out[8] = '\0';
	return out;
}

/*
 * The access line of a request, at info: "access method=M route=R
 * status=S ms=D key=K", then "verdict=CODE" when the request reached one
 * and, for /key/verify, "subject=" the verified key.  The route is a
 * template from the route table ("authorizer", "-" when none matched) and
 * the method one of a fixed list, so nothing the client sent (a path or
 * query can carry a key) is copied into it.  The key is the caller's token
 * prefix, "master" for the master key, "-" when none was identified; in
 * the authorizer (when the request asked as one), the presented key's.
 */
void
kw_log_access(const struct kw_req *req, int status, double secs)
{
	int authorizer = req->authorizer;
	const char *route = authorizer ? "authorizer" : req->route ? req->route->path : "-";
	const char *key = "-", *subject = "-";
	char kbuf[9], sbuf[9], tail[80] = "";

	if (req->caller != NULL && req->caller->known)
		key = req->caller->is_master ? "master" : token_prefix(req->caller->token, kbuf);
	if (verdict.set) {
		subject = token_prefix(verdict.token, sbuf);
		if (authorizer)
			key = subject;
		snprintf(tail, sizeof(tail), " verdict=%s%s%s", kw_verdict_code_name(verdict.code),
		    authorizer ? "" : " subject=", authorizer ? "" : subject);
	}
	verdict.set = 0;
	kw_log_write(KW_LOG_INFO, __FILE__, __LINE__, "access method=%s route=%s status=%d "
	    "ms=%.3f key=%s%s", kw_metrics_method(req->method), route, status, secs * 1e3, key, tail);
}

static const char *const err_names[] = {
	[KW_OK] = "ok",
	[KW_EINVAL] = "invalid request",
	[KW_EVALID] = "validation failed",
	[KW_EAUTH] = "authentication failed",
	[KW_EFORBIDDEN] = "forbidden",
	[KW_ENOTFOUND] = "not found",
	[KW_EMETHOD] = "method not allowed",
	[KW_ECONFLICT] = "conflict",
	[KW_ETOOLARGE] = "request body too large",
	[KW_EMEDIA] = "unsupported media type",
	[KW_ELIMIT] = "limit reached",
	[KW_EUPGRADE] = "client too old",
	[KW_EPAYMENT] = "consumption limit spent",
	[KW_EDEADLOCK] = "deadlock",
	[KW_EUNAVAIL] = "store unavailable",
	[KW_ENOMEM] = "out of memory",
	[KW_EINTERNAL] = "internal error",
	[KW_ERUNRECOVERY] = "store needs recovery",
};

/* Returns a static, human-readable name for err. */
const char *
kw_err_name(enum kw_err err)
{
	if ((size_t)err < sizeof(err_names) / sizeof(err_names[0]) && err_names[err] != NULL)
		return err_names[err];
	return "unknown error";
}
