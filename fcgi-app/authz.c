/* authz.c: the ways in to the limits: POST /key/verify, POST /key/usage, and the FastCGI AUTHORIZER role. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/*
 * Who may ask about other keys: the master key, proxy admins, and a
 * gateway's service key whose permissions say "verify_keys": true.
 */
static enum kw_err
verifier(struct kw_req *req)
{
	enum kw_err rc = kw_auth_caller(req);

	if (rc != KW_OK)
		return rc;
	if (kw_auth_is_admin(req->caller) || req->caller->may_verify)
		return KW_OK;
	kw_error_set(&req->err, KW_EFORBIDDEN, NULL,
	    "only proxy admins and keys with permissions.verify_keys verify keys");
	return KW_EFORBIDDEN;
}

/* POST /key/verify: the verdict on a presented key; always 200 once the caller may ask. */
enum kw_err
kw_op_key_verify(struct kw_req *req, struct kw_resp *resp)
{
	struct kw_check in = {
		.key = kw_json_str(req->body, "key"),
		.model = kw_json_str(req->body, "model"),
		.route = kw_json_str(req->body, "route"),
		.request_id = kw_json_str(req->body, "request_id"),
		.expected_cost = kw_json_num(req->body, "expected_cost", 0),
		.expected_tokens = (int64_t)kw_json_num(req->body, "expected_tokens", 0),
		.dry_run = kw_json_bool(req->body, "dry_run"),
		.end_user = kw_json_str(req->body, "end_user"),
	};
	struct kw_verdict v;
	enum kw_err rc;

	if ((rc = verifier(req)) != KW_OK)
		return rc;
	if ((rc = kw_limits_check(req->store, req->now, &in, &v)) != KW_OK)
		return rc;
	kw_metrics_verdict(v.code);
	kw_log_verdict(v.code, v.token);
	resp->status = 200;
	resp->raw_len = (size_t)v.answer->bpos;
	resp->raw = kw_arena_strndup(req->arena, v.answer->buf, resp->raw_len);
	kw_verdict_clear(&v);
	return resp->raw != NULL ? KW_OK : KW_ENOMEM;
}

/* POST /key/usage: what a request used, counted once per request_id. */
enum kw_err
kw_op_key_usage(struct kw_req *req, struct kw_resp *resp)
{
	double prompt = kw_json_num(req->body, "prompt_tokens", 0);
	double completion = kw_json_num(req->body, "completion_tokens", 0);
	struct kw_usage in = {
		.key = kw_json_str(req->body, "key"),
		.request_id = kw_json_str(req->body, "request_id"),
		.model = kw_json_str(req->body, "model"),
		.tokens = (int64_t)kw_json_num(req->body, "total_tokens", prompt + completion),
		.cost = kw_json_num(req->body, "cost", 0),
		.diem = kw_json_num(req->body, "diem", 0),
		.end_user = kw_json_str(req->body, "end_user"),
	};
	json_object *answer;
	enum kw_err rc;

	if ((rc = verifier(req)) != KW_OK)
		return rc;
	if ((rc = kw_limits_record(req->store, req->now, &in, &answer, &req->err)) != KW_OK)
		return rc;
	kw_resp_json(resp, 200, answer);
	return KW_OK;
}

/*
 * The model a request to an upstream names: the {model} of an Azure-style
 * path (/openai/deployments/{model}/...), else the x-model header.  The
 * authorizer sees no body, so a model named only in the body is unknown.
 */
static const char *
model_of(struct kw_req *req, const char *path)
{
	const char *p = strstr(path, "/deployments/"), *end;

	if (p != NULL) {
		const char *name;

		p += strlen("/deployments/");
		end = p + strcspn(p, "/");
		if (end == p)
			return kw_req_header(req, "HTTP_X_MODEL");
		/* undecodable, it stays as sent: a name no models list allows */
		name = kw_url_decode(req->arena, p, (size_t)(end - p), 0);
		return name != NULL ? name : kw_arena_strndup(req->arena, p, (size_t)(end - p));
	}
	return kw_req_header(req, "HTTP_X_MODEL");
}

/*
 * The request's end user, from the headers LiteLLM always reads for it
 * (STANDARD_CUSTOMER_ID_HEADERS, in _get_customer_id_from_standard_headers:
 * x-litellm-customer-id, then x-litellm-end-user-id); blank is none.  The
 * body's "user" is not seen here.
 */
static const char *
end_user_of(struct kw_req *req)
{
	static const char *const headers[] = {
		"HTTP_X_LITELLM_CUSTOMER_ID", "HTTP_X_LITELLM_END_USER_ID",
	};

	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
		const char *v = kw_req_header(req, headers[i]);

		if (v != NULL && v[strspn(v, " \t")] != '\0')
			return v;
	}
	return NULL;
}

/* The HTTP status an authorizer answers for a verdict that is not VALID. */
static int
status_of(enum kw_verdict_code code)
{
	switch (code) {
	case KW_V_ROUTE_NOT_ALLOWED:
		return 403;
	case KW_V_RATE_LIMITED:
		return 429;
	case KW_V_BUDGET_EXCEEDED:	/* LiteLLM's UserAPIKeyAuthExceptionHandler: 400 budget_exceeded */
	case KW_V_DUPLICATE_REQUEST:
	case KW_V_END_USER_BLOCKED:
		return 400;	/* the blocked end user: _ENTERPRISE_BlockedUserList's 400 */
	case KW_V_USD_LIMIT:
	case KW_V_DIEM_LIMIT:
		return 402;	/* Venice's answer to a spent consumption limit */
	default:
		return 401;	/* MODEL_NOT_ALLOWED too: LiteLLM's _can_object_call_model */
	}
}

/* The OpenAI-style x-ratelimit-* headers of one window, when the key has that limit. */
static void
rate_headers(struct kw_req *req, struct kw_resp *resp, const char *what, const struct kw_rate *r)
{
	if (r->limit < 0)
		return;
	kw_resp_header(req, resp, "x-ratelimit-limit-%s: %lld", what, (long long)r->limit);
	kw_resp_header(req, resp, "x-ratelimit-remaining-%s: %lld", what, (long long)r->remaining);
	kw_resp_header(req, resp, "x-ratelimit-reset-%s: %llds", what,
	    (long long)(r->reset > req->now ? r->reset - req->now : 0));
}

/* The x-ratelimit-* headers of both of the verdict's windows (requests and tokens). */
void
kw_authz_rate_headers(struct kw_req *req, struct kw_resp *resp, const struct kw_verdict *v)
{
	rate_headers(req, resp, "requests", &v->requests);
	rate_headers(req, resp, "tokens", &v->tokens);
}

/*
 * Sets resp to the refusal of v (not VALID) as LiteLLM answers it: the
 * LiteLLM error envelope with 401 (a model the key may not use is 401, as
 * LiteLLM answers it), 403 or 429 with Retry-After and the x-ratelimit-*
 * headers, 400 for a spent budget, 402 for a spent Venice limit.
 */
void
kw_authz_refusal(struct kw_req *req, struct kw_resp *resp, const struct kw_verdict *v)
{
	int status = status_of(v->code);
	struct kw_error e;

	if (v->code == KW_V_MODEL_NOT_ALLOWED && v->limit != NULL &&
	    strcmp(v->limit, "modelPrivacy") == 0) {
		/* a Venice key's modelPrivacy: Venice answers 403, the key being good */
		status = 403;
		kw_error_set(&e, KW_EFORBIDDEN, "model", "%s", v->message);
		e.type = v->error_type;
	} else if (v->code == KW_V_MODEL_NOT_ALLOWED) {
		/* LiteLLM's ProxyException, word for word: its message, type and param */
		kw_error_set(&e, KW_EAUTH, "model", "%s", v->message);
		e.type = v->error_type;
	} else if (v->code == KW_V_BUDGET_EXCEEDED) {
		/*
		 * As LiteLLM's proxy answers a BudgetExceededError: 400, type
		 * budget_exceeded, param null, its message as it is
		 * (UserAPIKeyAuthExceptionHandler._handle_authentication_error)
		 */
		kw_error_set(&e, KW_EINVAL, NULL, "%s", v->message);
		e.type = "budget_exceeded";
	} else {
		kw_error_set(&e, status == 401 ? KW_EAUTH : status == 403 ? KW_EFORBIDDEN :
		    status == 400 ? KW_EINVAL : status == 402 ? KW_EPAYMENT : KW_ELIMIT,
		    v->code == KW_V_DUPLICATE_REQUEST ? "x-request-id" : v->limit,
		    "%s: %s", kw_verdict_code_name(v->code), v->message);
	}
	kw_resp_json(resp, status, kw_face_error(KW_FACE_LITELLM, status, &e));
	if (status == 429) {
		if (v->retry_after > 0)
			kw_resp_header(req, resp, "Retry-After: %d", v->retry_after);
		kw_authz_rate_headers(req, resp, v);
	}
	if (v->code == KW_V_BUDGET_EXCEEDED)
		/* OpenAI's clients may retry unless told not to; a spent budget will not come back */
		kw_resp_header(req, resp, "x-should-retry: false");
}

/*
 * The refusal's envelope again on one line in x-kw-error, for a server that
 * answers the client itself and never passes the body on (nginx's
 * auth_request keeps only the subrequest's status and headers).
 */
static void
echo_error(struct kw_req *req, struct kw_resp *resp)
{
	kw_resp_header(req, resp, "x-kw-error: %s",
	    json_object_to_json_string_ext(resp->json, JSON_C_TO_STRING_PLAIN));
}

/* Answers a refusal: e in LiteLLM's envelope with status, echoed in x-kw-error. */
static void
refuse(struct kw_req *req, struct kw_resp *resp, int status, const struct kw_error *e)
{
	kw_resp_json(resp, status, kw_face_error(KW_FACE_LITELLM, status, e));
	echo_error(req, resp);
}

/*
 * The FastCGI AUTHORIZER role: the web server asks before it passes a
 * request on to the upstream.  200 with Variable-KW-* headers lets it
 * through (the server hands them to the upstream's environment); anything
 * else is sent to the client as it is: the LiteLLM error envelope with 401
 * (a model the key may not use is 401, as LiteLLM answers it), 403 or 429,
 * 400 for a spent budget (as LiteLLM answers it) or for an x-request-id
 * that /key/usage could not name (a request must never pass that cannot be
 * charged).
 */
enum kw_err
kw_authorize(struct kw_req *req, struct kw_resp *resp)
{
	const char *uri = kw_req_header(req, "REQUEST_URI");
	char *path = kw_arena_strndup(req->arena, uri ? uri : "/", strcspn(uri ? uri : "/", "?#"));
	struct kw_check in = { .verdict_only = 1 };
	struct kw_verdict v;
	struct kw_error e;
	const char *why;
	char *normal;
	enum kw_err rc;

	if (path == NULL || (normal = kw_arena_alloc(req->arena, strlen(path) + 1)) == NULL)
		return KW_ENOMEM;
	/*
	 * The server passes on the path it normalised, not the one sent: a path
	 * it would rewrite (/v1/chat/../embeddings) is refused, not guessed at,
	 * whatever the key, before the key is even looked at.
	 */
	if (kw_limits_route_path(path, strlen(path), normal, &why) != KW_OK) {
		kw_error_set(&e, KW_EINVAL, "path", "%s", why);
		refuse(req, resp, 400, &e);
		return KW_OK;
	}
	if (req->store == NULL)
		return KW_EUNAVAIL;
	/* Authorization: Bearer, x-api-key, api-key (Azure), x-litellm-api-key */
	if ((in.key = kw_auth_credential(req)) == NULL) {
		kw_error_set(&e, KW_EAUTH, NULL, "no API key: send Authorization: Bearer sk-...");
		refuse(req, resp, 401, &e);
		return KW_OK;
	}
	in.route = path;
	in.model = model_of(req, path);
	in.request_id = kw_req_header(req, "HTTP_X_REQUEST_ID");
	in.end_user = end_user_of(req);
	if (in.request_id != NULL && !kw_valid_request_id(in.request_id)) {
		/* passed, it would be served and never charged: /key/usage refuses it */
		kw_error_set(&e, KW_EINVAL, "x-request-id", "x-request-id must be 1 to %d "
		    "characters of UTF-8, or absent", KW_REQUEST_ID_MAX);
		refuse(req, resp, 400, &e);
		return KW_OK;
	}
	if ((rc = kw_limits_check(req->store, req->now, &in, &v)) != KW_OK)
		return rc;
	kw_metrics_verdict(v.code);
	kw_log_verdict(v.code, v.token);

	if (v.code == KW_V_VALID) {
		resp->status = 200;
		resp->raw = "";
		kw_resp_header(req, resp, "Variable-KW-Key-Hash: %s", v.token);
		if (v.user_id[0] != '\0')
			kw_resp_header(req, resp, "Variable-KW-User-Id: %s", v.user_id);
		if (v.team_id[0] != '\0')
			kw_resp_header(req, resp, "Variable-KW-Team-Id: %s", v.team_id);
		if (v.request_id[0] != '\0')
			kw_resp_header(req, resp, "Variable-KW-Request-Id: %s", v.request_id);
		/* what is left, for a server that passes it on (nginx's auth_request_set) */
		rate_headers(req, resp, "requests", &v.requests);
		rate_headers(req, resp, "tokens", &v.tokens);
		kw_verdict_clear(&v);
		return KW_OK;
	}
	kw_authz_refusal(req, resp, &v);
	echo_error(req, resp);
	kw_verdict_clear(&v);
	return KW_OK;
}
