/* fuzz_fcgi.c: libFuzzer target: one FastCGI request, parameters and body, served by kw_http_serve against a real store. */
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sanitizer/common_interface_defs.h>

#include <fastcgi.h>
#include <fcgiapp.h>
#include <json-c/json.h>

#include "kw.h"
#include "fuzz_dir.h"

/*
 * The input is text, so the seeds in fixtures/fuzz/fcgi/ read as requests:
 *
 *	AUTHORIZER			(optional: the role; RESPONDER otherwise)
 *	REQUEST_METHOD=POST		(FastCGI parameters, one a line)
 *	u=/key/generate			(one-letter names stand for the common ones)
 *	HTTP_AUTHORIZATION=Bearer $MASTER
 *					(an empty line, then the body)
 *	{"key_alias": "a"}
 *
 * In values, $KEY is a virtual key with limits, $TOKEN its hash, $USER the
 * key of a user who administers an organization, $VENICE a Venice ADMIN
 * key, and in credential headers $MASTER the master key: secrets the
 * fuzzer could never guess.
 * CONTENT_LENGTH is the body's length unless the input gives one, which
 * may be wrong.  Every answer must be a well-formed CGI response: a Status
 * line, headers, a blank line, a body of Content-Length bytes that is JSON
 * when the type says so; never 500, never the master key, and in an error
 * no key the request did not send in the open (outside its credential
 * headers).  What the request logs (at debug level) holds none either.
 */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PARAMS 64
#define MAX_BODY (64 << 10)	/* larger bodies are cut: the cap itself is KEYWARDEN_MAX_BODY */
#define MAX_OUT (16 << 20)
#define RESET_RUNS 20000	/* a fresh store after this many requests, so writes do not pile up */
#define MAINTAIN_RUNS 500	/* checkpoint and drop old logs this often */

static const struct {
	char abbr;
	const char *name;
} short_names[] = {
	{ 'm', "REQUEST_METHOD" }, { 'u', "REQUEST_URI" }, { 's', "SCRIPT_NAME" },
	{ 'p', "PATH_INFO" }, { 'q', "QUERY_STRING" }, { 'l', "CONTENT_LENGTH" },
	{ 't', "CONTENT_TYPE" }, { 'a', "HTTP_AUTHORIZATION" }, { 'k', "HTTP_X_API_KEY" },
	{ 'r', "HTTP_X_REQUEST_ID" }, { 'x', "HTTP_X_MODEL" }, { 'v', "HTTP_X_CLIENT_VERSION" },
	{ 'c', "HTTP_LITELLM_CHANGED_BY" },
};

static struct {
	char dir[4096];
	struct kw_store *store;
	struct kw_arena *arena;
	unsigned long runs;
	int print;
	int log_fd;		/* an unlinked file: what the request at hand logged */
	int stderr_fd;		/* the real stderr, where the fuzzer reports */
	/* the secrets $NAME stands for; secret[0] is the master key */
	char secret[5][256];
} fz;

static const char *const secret_names[] = { "$MASTER", "$KEY", "$TOKEN", "$USER", "$VENICE" };

/* The output stream: a buffer that grows. */
struct outbuf {
	unsigned char *p;
	size_t cap;
};

static void
out_grow(FCGX_Stream *s, int doClose)
{
	struct outbuf *o = s->data;
	size_t used = (size_t)(s->wrNext - o->p);
	unsigned char *p;

	(void)doClose;
	if (o->cap >= MAX_OUT || (p = realloc(o->p, o->cap * 2)) == NULL) {
		s->isClosed = 1;
		return;
	}
	o->p = p;
	o->cap *= 2;
	s->wrNext = p + used;
	s->stop = s->rdNext = p + o->cap;
}

/* The input stream: the body, then end of input. */
static void
in_end(FCGX_Stream *s)
{
	s->isClosed = 1;
}

static void
remove_dir(void)
{
	if (fz.dir[0] != '\0')
		fuzz_remove_tree(fz.dir);
}

/* stderr goes to the log file while a request is served, so its log can be read. */
static void
capture_log(int on)
{
	if (dup2(on ? fz.log_fd : fz.stderr_fd, STDERR_FILENO) < 0)
		abort();
}

/*
 * A sanitizer's report, written while a request was served, is in the log
 * file: copy it to the real stderr before the process ends.
 */
static void
on_death(void)
{
	char buf[4096];
	ssize_t n;
	off_t at = 0;

	capture_log(0);
	while ((n = pread(fz.log_fd, buf, sizeof(buf), at)) > 0) {
		(void)!write(STDERR_FILENO, buf, (size_t)n);
		at += n;
	}
	remove_dir();
}

/* Ends the run, so the fuzzer keeps the input, without leaving the data directory behind. */
static void die(void) __attribute__((noreturn));

static void
die(void)
{
	remove_dir();
	abort();
}

/* Bytes of the data directory's files, the store's logs included. */
static off_t dir_bytes;

static int
add_size(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)path;
	(void)ftw;
	if (flag == FTW_F)
		dir_bytes += st->st_size;
	return 0;
}

/*
 * Serves one request: params (NAME=VALUE strings, borrowed), the role and
 * the body.  Returns the output (owned, NUL-ended) and its length.
 */
static unsigned char *
serve(char **params, int role, const char *body, size_t len, size_t *outlen)
{
	FCGX_Stream in = { 0 }, out = { 0 };
	struct outbuf o = { malloc(4096), 4096 };
	FCGX_Request req = { 0 };
	enum kw_err rc;

	if (o.p == NULL)
		die();
	in.rdNext = in.stopUnget = (unsigned char *)body;
	in.stop = in.wrNext = (unsigned char *)body + len;
	in.isReader = 1;
	in.fillBuffProc = in_end;
	out.wrNext = o.p;
	out.stop = out.rdNext = o.p + o.cap;
	out.emptyBuffProc = out_grow;
	out.data = &o;
	req.role = role;
	req.in = &in;
	req.out = &out;
	req.envp = params;
	capture_log(1);
	rc = kw_http_serve(&req, fz.arena, &fz.store);
	capture_log(0);
	kw_arena_reset(fz.arena);
	if (rc != KW_OK) {
		fprintf(stderr, "fuzz_fcgi: kw_http_serve returned %s\n", kw_err_name(rc));
		die();
	}
	*outlen = (size_t)(out.wrNext - o.p);
	if (*outlen == o.cap)
		out_grow(&out, 0);	/* room for the NUL */
	if (out.isClosed) {
		fprintf(stderr, "fuzz_fcgi: an answer of %d bytes or more\n", MAX_OUT);
		die();
	}
	o.p[*outlen] = '\0';
	return o.p;
}

static void
forget_log(void)
{
	if (ftruncate(fz.log_fd, 0) != 0 || lseek(fz.log_fd, 0, SEEK_SET) != 0)
		die();
}

/*
 * Which secret (an index of fz.secret) is in buf, or -1: the hash $TOKEN is
 * no secret, nor are those the request sent in the open (bits of sent).
 */
static int
secret_in(const void *buf, size_t n, unsigned sent)
{
	for (int i = 0; i < 5; i++)
		if (i != 2 && !(sent & 1u << i) &&
		    memmem(buf, n, fz.secret[i], strlen(fz.secret[i])) != NULL)
			return i;
	return -1;
}

/* Adds to *sent the secrets in buf. */
static void
note_secrets(const void *buf, size_t n, unsigned *sent)
{
	for (int i = 0; i < 5; i++)
		if (memmem(buf, n, fz.secret[i], strlen(fz.secret[i])) != NULL)
			*sent |= 1u << i;
}

/* The JSON body of a setup request's answer, which must be 200 (owned). */
static json_object *
setup_request(const char *method, const char *uri, const char *auth, const char *body)
{
	char m[64], u[512], a[300], cl[32], *params[] = { m, u, a, cl,
	    "CONTENT_TYPE=application/json", NULL };
	unsigned char *out;
	size_t n;
	const char *sep;
	json_object *obj;

	snprintf(m, sizeof(m), "REQUEST_METHOD=%s", method);
	snprintf(u, sizeof(u), "REQUEST_URI=%s", uri);
	snprintf(a, sizeof(a), "HTTP_AUTHORIZATION=Bearer %s", auth);
	snprintf(cl, sizeof(cl), "CONTENT_LENGTH=%zu", strlen(body));
	out = serve(params, FCGI_RESPONDER, body, strlen(body), &n);
	forget_log();
	if (strncmp((char *)out, "Status: 200 ", 12) != 0 ||
	    (sep = strstr((char *)out, "\r\n\r\n")) == NULL ||
	    (obj = json_tokener_parse(sep + 4)) == NULL) {
		fprintf(stderr, "fuzz_fcgi: setup %s %s failed:\n%s\n", method, uri, out);
		die();
	}
	free(out);
	return obj;
}

static void
keep(int which, json_object *obj, const char *outer, const char *field)
{
	json_object *v = obj;
	const char *s;

	if (outer != NULL)
		v = json_object_object_get(obj, outer);
	if ((s = kw_json_str(v, field)) == NULL)
		die();
	snprintf(fz.secret[which], sizeof(fz.secret[which]), "%s", s);
	json_object_put(obj);
}

/*
 * A new data directory and store, and the records the secrets name: a user
 * who administers an organization, a key of theirs with limits in a team,
 * and a Venice ADMIN key.
 */
static void
fresh_store(void)
{
	const char *m = fz.secret[0];

	kw_store_close(fz.store);
	fz.store = NULL;
	remove_dir();
	if (mkdir(fz.dir, 0700) != 0 || kw_config_init_data_dir(0) != KW_OK ||
	    kw_store_open(&fz.store, fz.dir, KW_STORE_RECOVER) != KW_OK) {
		fprintf(stderr, "fuzz_fcgi: cannot make a store in %s\n", fz.dir);
		die();
	}
	json_object_put(setup_request("POST", "/team/new", m,
	    "{\"team_id\": \"fuzz-team\", \"models\": [\"gpt-4\", \"openai/*\"]}"));
	keep(3, setup_request("POST", "/user/new", m,
	    "{\"user_id\": \"fuzz-user\", \"user_role\": \"internal_user\"}"), NULL, "key");
	json_object_put(setup_request("POST", "/organization/new", m,
	    "{\"organization_id\": \"fuzz-org\", \"organization_alias\": \"Fuzz\"}"));
	json_object_put(setup_request("POST", "/organization/member_add", m,
	    "{\"organization_id\": \"fuzz-org\", "
	    "\"member\": {\"user_id\": \"fuzz-user\", \"role\": \"org_admin\"}}"));
	keep(1, setup_request("POST", "/key/generate", m,
	    "{\"key_alias\": \"fuzz-key\", \"user_id\": \"fuzz-user\", \"team_id\": \"fuzz-team\", "
	    "\"models\": [\"gpt-4\"], \"max_budget\": 1000000, \"rpm_limit\": 1000000, "
	    "\"max_parallel_requests\": 100000, \"permissions\": {\"verify_keys\": true}}"),
	    NULL, "key");
	kw_keys_token_of(fz.secret[1], fz.secret[2]);
	keep(4, setup_request("POST", "/api/v1/api_keys", m,
	    "{\"apiKeyType\": \"ADMIN\", \"description\": \"fuzz\", "
	    "\"consumptionLimit\": {\"usd\": 1000}}"), "data", "apiKey");
}

static void
cleanup(void)
{
	kw_store_close(fz.store);
	fz.store = NULL;
	remove_dir();
}

/* Settings as main.c makes them, a random master key, and a store in a temp directory. */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	unsigned char raw[16];
	char path[4200];
	const char *tmp = getenv("TMPDIR");
	size_t n;

	(void)argc;
	(void)argv;
	if (kw_crypto_init() != KW_OK || (fz.arena = kw_arena_new()) == NULL)
		die();
	/* on tmpfs the log flush of each durable commit costs nothing */
	if (tmp == NULL || *tmp == '\0')
		tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(fz.dir, sizeof(fz.dir), "%s/kw-fuzz-fcgi-XXXXXX", tmp);
	if (mkdtemp(fz.dir) == NULL)
		die();
	snprintf(path, sizeof(path), "%s.log", fz.dir);
	if ((fz.log_fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0 ||
	    unlink(path) != 0 || (fz.stderr_fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3)) < 0)
		die();
	memcpy(fz.secret[0], "sk-", 3);
	kw_crypto_random(raw, sizeof(raw));
	n = 3 + kw_crypto_b64url(raw, sizeof(raw), fz.secret[0] + 3);
	fz.secret[0][n] = '\0';
	setenv("KEYWARDEN_MASTER_KEY", fz.secret[0], 1);
	setenv("KEYWARDEN_LOG_LEVEL", "debug", 1);	/* every log line is checked */
	setenv("KEYWARDEN_MAX_BODY", "16384", 1);	/* so that 413 is within reach */
	unsetenv("KEYWARDEN_CLOCK_FILE");
	fz.print = getenv("FUZZ_FCGI_PRINT") != NULL;
	if (kw_config_load(fz.dir) != KW_OK)
		die();
	json_c_set_serialization_double_format("%.15g", JSON_C_OPTION_GLOBAL);
	atexit(cleanup);
	__sanitizer_set_death_callback(on_death);	/* a sanitizer's report ends with _exit */
	fresh_store();
	return 0;
}

/*
 * Copies src[0..n) to dst (a buffer of cap bytes), NUL-ended, with the
 * secrets for their names; $MASTER only when master (a credential header):
 * anywhere else the client would have put the master key in the answer itself.
 */
static size_t
expand(char *dst, size_t cap, const char *src, size_t n, int master)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 1 < cap; ) {
		size_t j, len = 0;

		for (j = master ? 0 : 1; src[i] == '$' &&
		    j < sizeof(secret_names) / sizeof(secret_names[0]); j++) {
			len = strlen(secret_names[j]);
			if (n - i >= len && memcmp(src + i, secret_names[j], len) == 0)
				break;
		}
		if (src[i] == '$' && j < sizeof(secret_names) / sizeof(secret_names[0])) {
			o += (size_t)snprintf(dst + o, cap - o, "%s", fz.secret[j]);
			if (o >= cap)
				o = cap - 1;
			i += len;
		} else {
			dst[o++] = src[i++];
		}
	}
	dst[o] = '\0';
	return o;
}

static int
is_token_char(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	    c == '-' || c == '_';
}

/*
 * Checks the answer: "Status: NNN reason", headers "Name: value", a blank
 * line, then exactly Content-Length bytes (none for an authorizer's pass),
 * JSON when the type says so; never 500 while the store answers; never
 * the master key.  Aborts, so the fuzzer keeps the input, on any breach.
 */
static void
check_answer(const unsigned char *out, size_t n, int role, unsigned sent, const char *in,
    size_t insize)
{
	const char *p = (const char *)out, *end = p + n, *eol, *body;
	long content_length = -1;
	int status, json = 0, secret;
	char reason[64];

#define FAIL(...) do { fprintf(stderr, "fuzz_fcgi: " __VA_ARGS__); \
	fprintf(stderr, "\n--- request\n%.*s\n--- answer\n%.*s\n", (int)insize, in, \
	    (int)n, (const char *)out); \
	die(); } while (0)

	if (memmem(out, n, fz.secret[0], strlen(fz.secret[0])) != NULL)
		FAIL("the master key is in the answer");
	if (sscanf(p, "Status: %3d %63[^\r\n]", &status, reason) != 2 || status < 200 ||
	    status > 599 || (eol = strstr(p, "\r\n")) == NULL)
		FAIL("no Status line");
	if (status >= 400 && (secret = secret_in(out, n, sent)) >= 0)
		FAIL("%s is in an error answer", secret_names[secret]);
	if (status == 500) {
		struct kw_store_state st;

		if (fz.store != NULL && kw_store_state(fz.store, &st) == KW_OK)
			FAIL("500 while the store answers");
		return;
	}
	for (p = eol + 2; ; p = eol + 2) {
		const char *colon;

		if ((eol = strstr(p, "\r\n")) == NULL)
			FAIL("the head does not end");
		if (eol == p)
			break;
		for (colon = p; colon < eol && is_token_char((unsigned char)*colon); colon++)
			;
		if (colon == p || colon + 1 >= eol || colon[0] != ':' || colon[1] != ' ' ||
		    memchr(p, '\n', (size_t)(eol - p)) != NULL || memchr(p, '\r', (size_t)(eol - p)))
			FAIL("a malformed header line");
		if (strncasecmp(p, "Content-Length: ", 16) == 0) {
			char *e;

			content_length = strtol(colon + 2, &e, 10);
			if (e != eol || content_length < 0)
				FAIL("a malformed Content-Length");
		}
		if (strncasecmp(p, "Content-Type: ", 14) == 0)
			json = strncasecmp(colon + 2, "application/json", 16) == 0 ||
			    memmem(colon + 2, (size_t)(eol - colon - 2), "+json", 5) != NULL;
	}
	body = eol + 2;
	if (role == FCGI_AUTHORIZER && status == 200) {
		if (body != end || content_length != -1)
			FAIL("an authorizer's 200 with a body");
		return;
	}
	if (content_length < 0)
		FAIL("no Content-Length");
	if ((size_t)content_length != (size_t)(end - body))
		FAIL("Content-Length %ld, body %zu bytes", content_length, (size_t)(end - body));
	if (json) {
		struct json_object *obj = NULL;
		struct kw_error err;

		if (kw_json_parse(body, (size_t)(end - body), 4096, &obj, &err) != KW_OK)
			FAIL("the JSON body does not parse: %s", err.message);
		json_object_put(obj);
	}
#undef FAIL
}

/* What the request logged holds no key: aborts, like check_answer, when it does. */
static void
check_log(unsigned sent, const char *in, size_t insize)
{
	off_t n = lseek(fz.log_fd, 0, SEEK_END);
	char *buf;
	int secret;

	if (n <= 0)
		return;
	if ((buf = malloc((size_t)n)) == NULL || pread(fz.log_fd, buf, (size_t)n, 0) != n)
		die();
	if (fz.print)
		fprintf(stderr, "%.*s", (int)n, buf);
	if ((secret = secret_in(buf, (size_t)n, sent)) >= 0) {
		fprintf(stderr, "fuzz_fcgi: %s is in the log\n--- request\n%.*s\n--- log\n%.*s\n",
		    secret_names[secret], (int)insize, in, (int)n, buf);
		die();
	}
	free(buf);
	forget_log();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data, *end = s + size, *line, *nl, *body = "";
	char *params[MAX_PARAMS + 2], *buf, *bodybuf;
	size_t nparams = 0, body_len = 0, outlen, cap = 16 * size + 4096;
	int role = FCGI_RESPONDER, has_length = 0;
	unsigned sent = 0;	/* the secrets sent in the open: an answer may repeat them */
	unsigned char *out;

	if ((buf = malloc(cap)) == NULL)
		return 0;
	/* the head: lines up to an empty one; the rest is the body */
	for (line = s; line < end; line = nl + 1) {
		size_t len, o, namelen;
		const char *eq, *name;
		int credential;

		if ((nl = memchr(line, '\n', (size_t)(end - line))) == NULL)
			nl = end;
		len = (size_t)(nl - line);
		if (len == 0) {
			body = nl + 1 < end ? nl + 1 : end;
			body_len = (size_t)(end - body);
			break;
		}
		if (len == 10 && memcmp(line, "AUTHORIZER", 10) == 0) {
			role = FCGI_AUTHORIZER;
			continue;
		}
		if ((eq = memchr(line, '=', len)) == NULL || nparams == MAX_PARAMS)
			continue;
		name = line;
		namelen = (size_t)(eq - line);
		for (size_t i = 0; namelen == 1 && i < sizeof(short_names) / sizeof(short_names[0]); i++)
			if (short_names[i].abbr == *line) {
				name = short_names[i].name;
				namelen = strlen(name);
			}
		/* NAME=VALUE as libfcgi hands them over: NUL-ended strings */
		o = (size_t)snprintf(buf, cap, "%.*s=", (int)namelen, name);
		credential = strncmp(buf, "HTTP_", 5) == 0 &&
		    (strstr(buf, "AUTHORIZATION=") != NULL || strstr(buf, "API_KEY=") != NULL);
		o += expand(buf + o, cap - o, eq + 1, (size_t)(nl - eq - 1), credential);
		if (!credential)
			note_secrets(buf, strlen(buf), &sent);
		if (strncmp(buf, "CONTENT_LENGTH=", 15) == 0)
			has_length = 1;
		if ((params[nparams] = strdup(buf)) == NULL)
			break;
		nparams++;
		if (nl == end)
			break;
	}
	if (body_len > MAX_BODY)
		body_len = MAX_BODY;
	if ((bodybuf = malloc(16 * body_len + 4096)) == NULL) {
		free(buf);
		for (size_t i = 0; i < nparams; i++)
			free(params[i]);
		return 0;
	}
	body_len = expand(bodybuf, 16 * body_len + 4096, body, body_len, 0);
	if (body_len > MAX_BODY)
		body_len = MAX_BODY;
	/*
	 * The fuzzer learns the master key from the comparisons it watches.  A
	 * request that carries it anywhere but in a credential header is not
	 * served: an answer may repeat what it was sent, and a record may keep
	 * it (a provider key's value) for a later answer to show.
	 */
	note_secrets(bodybuf, body_len, &sent);
	if (sent & 1) {
		free(buf);
		free(bodybuf);
		for (size_t i = 0; i < nparams; i++)
			free(params[i]);
		return 0;
	}
	if (!has_length && role == FCGI_RESPONDER && nparams < MAX_PARAMS + 1) {
		snprintf(buf, cap, "CONTENT_LENGTH=%zu", body_len);
		params[nparams++] = strdup(buf);
		if (params[nparams - 1] == NULL)
			nparams--;
	}
	params[nparams] = NULL;
	free(buf);

	out = serve(params, role, bodybuf, body_len, &outlen);
	if (fz.print)	/* FUZZ_FCGI_PRINT=1: see what a seed gets */
		fprintf(stderr, "%.*s\n", (int)outlen, (const char *)out);
	check_answer(out, outlen, role, sent, s, size);
	check_log(sent, s, size);
	free(out);
	free(bodybuf);
	for (size_t i = 0; i < nparams; i++)
		free(params[i]);

	if (++fz.runs % MAINTAIN_RUNS == 0) {
		(void)kw_store_maintain(fz.store);
		dir_bytes = 0;
		(void)nftw(fz.dir, add_size, 16, FTW_PHYS);
		if (dir_bytes > (64 << 20) || fz.runs % RESET_RUNS == 0)
			fresh_store();
	}
	return 0;
}
