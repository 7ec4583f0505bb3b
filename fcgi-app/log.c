/* log.c: one line per event on stderr, which every web server collects. */
#include <pthread.h>
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
 * The line's start, "time level [pid] ", as it was last written: the time
 * changes once a second and the pid once a fork (forget_pid), so a
 * request's access line formats neither (gmtime and a getpid system call
 * each time cost more than the rest of the line).
 */
static struct {
	time_t second;
	pid_t pid;
	enum kw_log_level level;
	size_t len;
	char text[KW_TIME_LEN + 48];
} head = { .second = -1 };

static void
forget_pid(void)
{
	head.pid = 0;
	head.second = -1;
}

/* The start of a line at level now, borrowed until the next call; *len its length. */
static const char *
line_head(enum kw_log_level level, size_t *len)
{
	static int registered;
	time_t now = time(NULL);
	char when[KW_TIME_LEN];
	int n;

	if (!registered) {
		pthread_atfork(NULL, NULL, forget_pid);
		registered = 1;
	}
	if (head.pid == 0)
		head.pid = getpid();
	if (now != head.second || level != head.level) {
		kw_time_format(now, when);	/* the one RFC 3339 writer: never overruns */
		n = snprintf(head.text, sizeof(head.text), "%s %s [%ld] ", when,
		    level_names[level], (long)head.pid);
		head.len = n > 0 && (size_t)n < sizeof(head.text) ? (size_t)n : 0;
		head.second = now;
		head.level = level;
	}
	*len = head.len;
	return head.text;
}

/* A line being put together in a fixed buffer; what does not fit is cut. */
struct line {
	char buf[1024];
	size_t n;
};

static void
put(struct line *l, const char *s, size_t n)
{
	if (n > sizeof(l->buf) - 2 - l->n)
		n = sizeof(l->buf) - 2 - l->n;	/* room for the newline */
	memcpy(l->buf + l->n, s, n);
	l->n += n;
}

static void
put_str(struct line *l, const char *s)
{
	put(l, s, strlen(s));
}

/* Appends v in decimal; with decimals > 0, v is in units of 10^-decimals ("1.234"). */
static void
put_num(struct line *l, long long v, int decimals)
{
	char digits[32];
	int n = 0, neg = v < 0;
	unsigned long long u = neg ? 0ULL - (unsigned long long)v : (unsigned long long)v;

	do {
		digits[n++] = (char)('0' + u % 10);
		u /= 10;
		if (n == decimals)
			digits[n++] = '.';
	} while (u != 0 || n <= decimals + (decimals > 0));
	if (neg)
		digits[n++] = '-';
	while (n > 0)
		put(l, &digits[--n], 1);
}

/* The line's start and "file:line: " */
static void
put_head(struct line *l, enum kw_log_level level, const char *file, int line)
{
	size_t n;
	const char *h = line_head(level, &n);

	l->n = 0;
	put(l, h, n);
	put_str(l, file);
	put(l, ":", 1);
	put_num(l, line, 0);
	put(l, ": ", 2);
}

/* Ends the line and writes it as one write(2), so lines from concurrent workers never interleave. */
static void
put_end(struct line *l)
{
	l->buf[l->n++] = '\n';
	(void)!write(STDERR_FILENO, l->buf, l->n);
}

/* Writes "time level [pid] file:line: message".  Callers never pass secrets. */
void
kw_log_write(enum kw_log_level level, const char *file, int line, const char *fmt, ...)
{
	struct line l;
	va_list ap;
	int m;

	if (level > kw_log_threshold)
		return;
	put_head(&l, level, file, line);
	va_start(ap, fmt);
	m = vsnprintf(l.buf + l.n, sizeof(l.buf) - l.n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	l.n += (size_t)m;
	if (l.n > sizeof(l.buf) - 2)
		l.n = sizeof(l.buf) - 2;
	put_end(&l);
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
	size_t n = token != NULL ? strnlen(token, KW_TOKEN_LEN) : 0;

	verdict.set = 1;
	verdict.code = code;
	memcpy(verdict.token, token != NULL ? token : "", n);
	verdict.token[n] = '\0';
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
	char kbuf[9], sbuf[9];
	struct line l;

	if (KW_LOG_INFO > kw_log_threshold) {
		verdict.set = 0;
		return;
	}
	if (req->caller != NULL && req->caller->known)
		key = req->caller->is_master ? "master" : token_prefix(req->caller->token, kbuf);
	if (verdict.set) {
		subject = token_prefix(verdict.token, sbuf);
		if (authorizer)
			key = subject;
	}
	/* put together by hand, not by printf: it is written for every request */
	put_head(&l, KW_LOG_INFO, __FILE__, __LINE__);
	put_str(&l, "access method=");
	put_str(&l, kw_metrics_method(req->method));
	put_str(&l, " route=");
	put_str(&l, route);
	put_str(&l, " status=");
	put_num(&l, status, 0);
	put_str(&l, " ms=");
	put_num(&l, (long long)(secs * 1e6 + 0.5), 3);
	put_str(&l, " key=");
	put_str(&l, key);
	if (verdict.set) {
		put_str(&l, " verdict=");
		put_str(&l, kw_verdict_code_name(verdict.code));
		if (!authorizer) {
			put_str(&l, " subject=");
			put_str(&l, subject);
		}
	}
	verdict.set = 0;
	put_end(&l);
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
