/* http.c: one FastCGI request, from its parameters and body to a response in the right face's envelope. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>
#include <time.h>

#include <fastcgi.h>
#include <fcgiapp.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/* Returns the CGI parameter (e.g. "HTTP_AUTHORIZATION"), borrowed until the request ends, or NULL. */
const char *
kw_req_header(struct kw_req *req, const char *cgi_name)
{
	return FCGX_GetParam(cgi_name, req->fcgi->envp);
}

/* Returns the decoded value of path parameter name (arena-owned), or NULL. */
const char *
kw_req_path_param(struct kw_req *req, const char *name)
{
	for (size_t i = 0; i < req->match.nparams; i++)
		if (strcmp(req->match.names[i], name) == 0)
			return req->match.values[i];
	return NULL;
}

/* Sets the response to status with body owned (the response takes the reference). */
void
kw_resp_json(struct kw_resp *resp, int status, json_object *owned)
{
	if (resp->json != NULL)
		json_object_put(resp->json);
	resp->status = status;
	resp->json = owned;
}

/*
 * Releases what an earlier attempt of a transaction left in *answer: a
 * transaction body that builds an answer starts with it, since a deadlock
 * runs the body again.
 */
void
kw_answer_reset(json_object **answer)
{
	json_object_put(*answer);
	*answer = NULL;
}

/*
 * Finishes an operation whose transaction ended with rc: on success *answer
 * becomes the 200 response, else it is released.  Returns rc.
 */
enum kw_err
kw_answer_respond(struct kw_resp *resp, json_object **answer, enum kw_err rc)
{
	if (rc == KW_OK)
		kw_resp_json(resp, 200, *answer);
	else
		json_object_put(*answer);
	*answer = NULL;
	return rc;
}

/*
 * Adds a "Name: value" header, formatted into the request's arena; one that
 * would hold CR or LF, or not fit, is left out.  Room for the longest value
 * a header carries: an id (KW_ID_MAX) or a request id (KW_REQUEST_ID_BYTES).
 */
void
kw_resp_header(struct kw_req *req, struct kw_resp *resp, const char *fmt, ...)
{
	char buf[(KW_ID_MAX > KW_REQUEST_ID_BYTES ? KW_ID_MAX : KW_REQUEST_ID_BYTES) + 128];
	va_list ap;
	int n;

	if (resp->nheaders == KW_MAX_HEADERS)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf) || strpbrk(buf, "\r\n") != NULL)
		return;
	if ((resp->headers[resp->nheaders] = kw_arena_strndup(req->arena, buf, (size_t)n)) != NULL)
		resp->nheaders++;
}

static const char *
reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 411: return "Length Required";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Content";
	case 426: return "Upgrade Required";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Status";
	}
}

/*
 * The length of the mount prefix at the start of path (n bytes): what
 * SCRIPT_NAME says, as a whole segment.  It is the mount itself (lighttpd's
 * prefix "/keywarden", "" with fix-root-scriptname; nginx's
 * fastcgi_split_path_info) or a script's own URL (/keywarden/keywarden.fcgi
 * under Apache); or the whole path, which says nothing about a mount (nginx's
 * fastcgi_params without a split); or, with a PATH_INFO, a script that
 * mod_rewrite sent the request to, which lives in the mount's directory
 * (/keywarden/key/info to /keywarden/keywarden.fcgi).
 */
static size_t
mount_len(const char *path, size_t n, const char *script, const char *info)
{
	const char *slash;
	size_t m;

	if (script == NULL || *script != '/')
		return 0;
	m = strlen(script);
	if (m < n && path[m] == '/' && strncmp(path, script, m) == 0)
		return m;
	if (info == NULL || *info == '\0' || (m <= n && strncmp(path, script, m) == 0))
		return 0;
	slash = strrchr(script, '/');
	m = (size_t)(slash - script);
	if (m > 0 && m < n && path[m] == '/' && strncmp(path, script, m) == 0)
		return m;
	return 0;
}

/*
 * The path to route on: the raw path of REQUEST_URI, decoded segment by
 * segment by the router, so an encoded slash or dot stays inside its
 * parameter (servers decode %2F into PATH_INFO and SCRIPT_NAME and then
 * remove dot segments, which would route "/api/providers/..%2f..%2fhealth"
 * to /health).  When keywarden is mounted under a prefix, the prefix is cut
 * off: mod_proxy_fcgi names the backend's URL in SCRIPT_FILENAME
 * ("proxy:fcgi://host:port/key/info", the path less ProxyPass's prefix, its
 * SCRIPT_NAME the whole path decoded); every other server says it in
 * SCRIPT_NAME (mount_len).  Without REQUEST_URI, PATH_INFO (already
 * decoded).  *decoded says which.
 */
static const char *
route_path(struct kw_req *req, int *decoded)
{
	const char *uri = kw_req_header(req, "REQUEST_URI");
	const char *script = kw_req_header(req, "SCRIPT_NAME");
	const char *info = kw_req_header(req, "PATH_INFO");
	const char *file = kw_req_header(req, "SCRIPT_FILENAME"), *p;
	size_t n, b, skip;

	if (uri == NULL || *uri != '/') {
		*decoded = 1;
		if (info != NULL && *info != '\0')
			return info;
		return script != NULL ? script : "";
	}
	*decoded = 0;
	n = strcspn(uri, "?#");
	if (file != NULL && strncmp(file, "proxy:fcgi://", 13) == 0 &&
	    (p = strchr(file + 13, '/')) != NULL) {
		/* the end of the client's path, as sent, unless mod_proxy re-encoded it */
		b = strcspn(p, "?#");
		if (b <= n && strncmp(uri + n - b, p, b) == 0)
			p = uri + n - b;
		return kw_arena_strndup(req->arena, p, b);
	}
	skip = mount_len(uri, n, script, info);
	return kw_arena_strndup(req->arena, uri + skip, n - skip);
}

/* Accepts application/json and any +json type, with parameters; case-insensitive. */
static int
is_json_media(const char *ct)
{
	size_t n = strcspn(ct, "; \t");

	if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
		return 1;
	return n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
	    strncasecmp(ct + n - 5, "+json", 5) == 0;
}

/*
 * Reads, parses and validates the body against the route's schema.  The
 * size cap is checked before anything is read.  A request without a
 * Content-Type is read as JSON, as FastAPI does; any other type is 415.
 */
static enum kw_err
read_body(struct kw_req *req)
{
	const char *cl = req->no_body ? NULL : kw_req_header(req, "CONTENT_LENGTH");
	const char *ct = kw_req_header(req, "CONTENT_TYPE");
	size_t len = 0, got = 0;
	char *buf, *end;
	enum kw_err rc;

	if (cl != NULL && *cl != '\0') {
		unsigned long long v;

		errno = 0;
		v = strtoull(cl, &end, 10);
		if (errno != 0 || *end != '\0' || *cl == '-') {
			kw_error_set(&req->err, KW_EINVAL, "Content-Length", "invalid Content-Length");
			return KW_EINVAL;
		}
		if (v > kw_config.max_body) {
			kw_error_set(&req->err, KW_ETOOLARGE, NULL,
			    "request body is larger than %zu bytes", kw_config.max_body);
			return KW_ETOOLARGE;
		}
		len = (size_t)v;
	}
	if (req->route->body == NULL)
		return KW_OK;	/* a body this operation does not take is ignored */
	if (len == 0) {
		if (!req->route->body_required)
			return KW_OK;
		kw_error_set(&req->err, KW_EVALID, NULL, "request body is required");
		return KW_EVALID;
	}
	if (ct != NULL && *ct != '\0' && !is_json_media(ct)) {
		kw_error_set(&req->err, KW_EMEDIA, "Content-Type",
		    "request body must be application/json");
		return KW_EMEDIA;
	}
	if ((buf = kw_arena_alloc(req->arena, len + 1)) == NULL)
		return KW_ENOMEM;
	while (got < len) {
		int n = FCGX_GetStr(buf + got, (int)(len - got), req->fcgi->in);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got != len) {
		kw_error_set(&req->err, KW_EINVAL, NULL,
		    "request body ended after %zu of %zu bytes", got, len);
		return KW_EINVAL;
	}
	req->raw_body = buf;
	req->raw_body_len = len;
	if ((rc = kw_json_parse(buf, len, KW_JSON_MAX_DEPTH, &req->body, &req->err)) != KW_OK)
		return rc;
	return kw_valid_check(req->route->body, req->body, NULL, &req->err);
}

/* Validates the header parameters the route declares, as its schema says. */
static enum kw_err
check_headers(struct kw_req *req)
{
	for (size_t j = 0; j < req->route->nparams; j++) {
		const struct kw_param *p = &req->route->params[j];
		char cgi[160], field[KW_FIELD_MAX];
		const char *v;
		json_object *value;
		size_t i;
		enum kw_err rc;

		if (p->in != KW_IN_HEADER)
			continue;
		/* the CGI name: HTTP_ and the name upper-cased, '-' as '_' */
		snprintf(cgi, sizeof(cgi), "HTTP_%s", p->name);
		for (i = 5; cgi[i] != '\0'; i++)
			cgi[i] = cgi[i] == '-' ? '_' : (char)toupper((unsigned char)cgi[i]);
		if ((v = kw_req_header(req, cgi)) == NULL)
			continue;
		snprintf(field, sizeof(field), "header.%s", p->name);
		if (!kw_valid_utf8(v, strlen(v))) {
			kw_error_set(&req->err, KW_EVALID, field, "must be valid UTF-8");
			return KW_EVALID;
		}
		value = json_object_new_string(v);
		rc = kw_valid_check(p->schema, value, field, &req->err);
		json_object_put(value);
		if (rc != KW_OK)
			return rc;
	}
	return KW_OK;
}

/*
 * The credential, before anything the request says is looked at: an
 * operation whose spec asks for one (route->credential) answers 401 to a
 * missing, unknown, blocked or expired key whatever its body, query, path
 * or headers hold, so nobody without a key learns the schema from the
 * answers.  LiteLLM's user_api_key_auth dependency runs before the request
 * model is parsed; Bifrost and Venice authenticate first too.  The
 * metrics token is a credential only /metrics knows; its handler judges it.
 * Returns kw_auth_caller's answer; the handler's own call then answers from
 * the first.
 */
static enum kw_err
authenticate(struct kw_req *req)
{
	if (!req->route->credential)
		return KW_OK;
	if (req->route->handler == kw_op_metrics && kw_metrics_token_presented(req))
		return KW_OK;
	if (kw_relay_route(req->route))
		return kw_relay_authenticate(req);	/* model keys: judged by the limits engine */
	return kw_auth_caller(req);
}

/*
 * A request the web server refused itself and then handed to keywarden
 * as its error handler (lighttpd's server.error-handler): REDIRECT_STATUS
 * holds the status it would have answered, in its own HTML page.  A POST
 * without a Content-Length (411) is taken as a POST with no body, and
 * served as any other (0).  Returns the status of any other refusal, 0
 * for a request the server passed (Apache says 200 for its own handlers).
 */
static int
refused_status(struct kw_req *req)
{
	const char *s = kw_req_header(req, "REDIRECT_STATUS");
	int status = s != NULL ? atoi(s) : 0;

	if (status == 411) {
		req->method = "POST";	/* the error handler is asked with GET */
		req->no_body = 1;
		return 0;
	}
	return status >= 400 && status <= 599 ? status : 0;
}

/* The error a refusal of the web server's (status) is answered with, in the face's envelope. */
static enum kw_err
refusal_error(struct kw_req *req, int status)
{
	if (status == 413) {
		kw_error_set(&req->err, KW_ETOOLARGE, NULL,
		    "request body is larger than the web server takes");
		return KW_ETOOLARGE;
	}
	if (status >= 500) {
		kw_error_set(&req->err, KW_EUNAVAIL, NULL, "the service is busy: retry");
		return KW_EUNAVAIL;
	}
	kw_error_set(&req->err, KW_EINVAL, NULL, "the web server refused this request (%d %s)",
	    status, reason(status));
	return KW_EINVAL;
}

/*
 * Routes, authenticates, decodes and validates everything the handler will
 * read; refused (a status of the web server's own, refused_status) is
 * answered in the face of the path.
 */
static enum kw_err
prepare(struct kw_req *req, enum kw_face *face, int refused)
{
	int decoded;
	enum kw_err rc;

	req->path = route_path(req, &decoded);
	*face = kw_router_face(kw_gen_face_prefixes, kw_gen_nface_prefixes, req->path);
	if (refused != 0)
		return refusal_error(req, refused);
	rc = kw_router_match(req->arena, kw_gen_routes, kw_gen_nroutes, req->method, req->path,
	    decoded, &req->match, &req->err);
	if (rc != KW_OK)
		return rc;
	req->route = req->match.route;
	*face = req->route->face;
	if ((rc = authenticate(req)) != KW_OK)
		return rc;
	for (size_t i = 0; i < req->match.nparams; i++) {
		for (size_t j = 0; j < req->route->nparams; j++) {
			const struct kw_param *p = &req->route->params[j];
			json_object *v;

			if (p->in != KW_IN_PATH || strcmp(p->name, req->match.names[i]) != 0)
				continue;
			char field[KW_FIELD_MAX];

			/* the place goes with the name: faces that say where render it */
			snprintf(field, sizeof(field), "path.%s", p->name);
			v = json_object_new_string(req->match.values[i]);
			rc = kw_valid_check(p->schema, v, field, &req->err);
			json_object_put(v);
			if (rc != KW_OK)
				return rc;
		}
	}
	if ((rc = kw_query_parse(req->arena, req->route, kw_req_header(req, "QUERY_STRING"),
	    &req->query, &req->err)) != KW_OK)
		return rc;
	if ((rc = check_headers(req)) != KW_OK)
		return rc;
	return read_body(req);
}

/*
 * Whether the web server asks as an authorizer: the FastCGI AUTHORIZER role
 * (lighttpd, mod_authnz_fcgi), or a responder request whose KEYWARDEN_ROLE
 * parameter is "authorizer" (nginx's auth_request, whose subrequests go to
 * responders only).  The parameter can be trusted: only the server's own
 * configuration sets FastCGI parameters; a client's headers arrive as HTTP_*
 * parameters and nothing else.
 */
static int
is_authorizer(FCGX_Request *fcgi)
{
	const char *role;

	if (fcgi->role == FCGI_AUTHORIZER)
		return 1;
	role = FCGX_GetParam("KEYWARDEN_ROLE", fcgi->envp);
	return fcgi->role == FCGI_RESPONDER && role != NULL && strcmp(role, "authorizer") == 0;
}

/* v in decimal, in buf (at least 21 bytes); returns buf. */
static const char *
decimal(size_t v, char buf[24])
{
	char *p = buf + 23;

	*p = '\0';
	do {
		*--p = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	return p;
}

/* Writes the response: status line, headers, body. */
static void
write_response(struct kw_req *req, struct kw_resp *resp)
{
	FCGX_Stream *out = req->fcgi->out;
	const char *body = resp->raw;
	size_t len = resp->raw_len;
	/* an authorizer's pass: the web server reads only the status and Variable-* headers */
	int pass = req->authorizer && resp->status == 200;
	char num[24];

	if (resp->json != NULL) {
		body = json_object_to_json_string_ext(resp->json,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
		len = strlen(body);
	}
	if (pass) {
		FCGX_PutS("Status: 200 OK\r\n", out);
		body = NULL;
	} else {
		/* written piece by piece, not through printf: every answer has this head */
		FCGX_PutS("Status: ", out);
		FCGX_PutS(decimal((size_t)resp->status, num), out);
		FCGX_PutS(" ", out);
		FCGX_PutS(reason(resp->status), out);
		FCGX_PutS("\r\nContent-Type: ", out);
		FCGX_PutS(resp->content_type ? resp->content_type : "application/json", out);
		FCGX_PutS("\r\nContent-Length: ", out);
		FCGX_PutS(decimal(body ? len : 0, num), out);
		FCGX_PutS("\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n", out);
	}
	for (size_t i = 0; i < resp->nheaders; i++) {
		FCGX_PutS(resp->headers[i], out);
		FCGX_PutS("\r\n", out);
	}
	FCGX_PutS("\r\n", out);
	if (body != NULL && len > 0)
		FCGX_PutStr(body, (int)len, out);
}

#define REP_RETRIES 30		/* a replica synchronising: tries, 100 ms apart */

/*
 * Runs the route's handler.  On a site of a replicated group, a write the
 * store refused because this site is a replica sends the request to the
 * master, whose answer becomes ours; a handle a replica's synchronisation
 * made stale is reopened, and a request that met a synchronisation under
 * way waits for it, and the handler runs again (nothing it did was
 * committed: a replica commits nothing of its own).
 */
static enum kw_err
run_handler(struct kw_req *req, struct kw_resp *resp, struct kw_store **store)
{
	for (int attempt = 0;; attempt++) {
		enum kw_store_trouble trouble;
		enum kw_err rc;

		kw_store_trouble_clear();
		rc = req->route->handler(req, resp);
		trouble = kw_store_trouble();
		if (trouble == KW_TROUBLE_NONE || resp->sent || !kw_group_enabled())
			return rc;
		/* what the handler answered is dropped: the master's answer, or the next try's */
		if (resp->json != NULL)
			json_object_put(resp->json);
		*resp = (struct kw_resp){ .status = 200 };
		memset(&req->err, 0, sizeof(req->err));
		if (trouble == KW_TROUBLE_NOT_MASTER)
			return kw_group_forward(req, resp);
		if (attempt == REP_RETRIES)
			return KW_EUNAVAIL;
		if (trouble == KW_TROUBLE_HANDLE_DEAD) {
			kw_store_close(*store);
			*store = NULL;
			(void)kw_store_open(store, kw_config.data_dir, KW_STORE_JOIN);
			kw_group_attach(*store);
			if ((req->store = *store) == NULL)
				return KW_EUNAVAIL;
		} else {
			usleep(100000);
		}
	}
}

/*
 * Serves one request.  *store is the worker's store handle, opened here when
 * it is not yet open (NULL while the store is unavailable).  Returns
 * KW_ERUNRECOVERY when the worker must exit after this request so the pool
 * manager can recover the environment; KW_OK otherwise.
 */
enum kw_err
kw_http_serve(FCGX_Request *fcgi, struct kw_arena *arena, struct kw_store **store)
{
	struct kw_req req = { .fcgi = fcgi, .arena = arena };
	struct kw_resp resp = { .status = 200 };
	enum kw_face face = KW_FACE_LITELLM;
	struct timespec t0, t1;
	const char *uri;
	int refused;
	double secs;
	enum kw_err rc;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	req.now = kw_clock_now();
	req.method = kw_req_header(&req, "REQUEST_METHOD");
	if (req.method == NULL)
		req.method = "GET";
	if (*store != NULL && kw_group_worker_stale()) {
		/* a site joined or left: a fresh handle's threads connect to every member */
		kw_store_close(*store);
		*store = NULL;
	}
	if (*store == NULL)
		(void)kw_store_open(store, kw_config.data_dir, KW_STORE_JOIN);
	kw_group_attach(*store);
	req.store = *store;

	req.authorizer = is_authorizer(fcgi);
	refused = req.authorizer ? 0 : refused_status(&req);
	uri = kw_req_header(&req, "REQUEST_URI");
	if (refused != 0 && (uri == NULL || *uri == '\0')) {
		/* refused before the server read a path: no face to answer in; plain, as the server would */
		resp.status = refused;
		resp.raw = reason(refused);
		resp.raw_len = strlen(resp.raw);
		resp.content_type = "text/plain";
		rc = KW_OK;
	} else if (req.authorizer) {
		kw_store_trouble_clear();
		rc = kw_authorize(&req, &resp);	/* no route and no body: a question about a request */
		if (kw_store_trouble() == KW_TROUBLE_NOT_MASTER) {
			/* an authorizer's question cannot be forwarded: the web server asked us */
			kw_error_set(&req.err, KW_EUNAVAIL, NULL, "this site is a replica, and the "
			    "key's counters are kept by the master: ask the master");
			rc = KW_EUNAVAIL;
		}
	} else if ((rc = prepare(&req, &face, refused)) == KW_OK) {
		rc = run_handler(&req, &resp, store);
	}
	if (rc != KW_OK) {
		int status = kw_http_status_for(face, rc);

		if (req.err.code != rc)
			kw_error_set(&req.err, rc, NULL, "%s", kw_err_name(rc));
		kw_resp_json(&resp, status, kw_face_error(face, status, &req.err));
		if (face == KW_FACE_BIFROST && kw_req_path_param(&req, "provider") != NULL)
			/* Bifrost names the provider an error is about */
			json_object_object_add(json_object_object_get(resp.json, "extra_fields"),
			    "provider", json_object_new_string(kw_req_path_param(&req, "provider")));
		if (rc == KW_EMETHOD)
			kw_resp_header(&req, &resp, "Allow: %s", req.match.allow);
		if (kw_http_status_for(KW_FACE_LITELLM, rc) == 503)	/* the store: retry */
			kw_resp_header(&req, &resp, "Retry-After: 1");
	}
	if (!resp.sent)
		write_response(&req, &resp);

	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	kw_metrics_request(&req, resp.status, secs);
	kw_log_access(&req, resp.status, secs);
	if (resp.json != NULL)
		json_object_put(resp.json);
	if (req.query != NULL)
		json_object_put(req.query);
	if (req.body != NULL)
		json_object_put(req.body);
	if (rc == KW_ERUNRECOVERY) {
		kw_store_close(*store);
		*store = NULL;
	}
	return rc == KW_ERUNRECOVERY ? KW_ERUNRECOVERY : KW_OK;
}
