/* face.c: each API dialect's error envelope and status mapping, one internal error rendered at the boundary; and the faces' one-transaction handler. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"

/*
 * Returns the HTTP status a face answers for err.  The faces differ only
 * where their documents do: LiteLLM and the provisioning API answer body
 * validation with 422 (FastAPI), Bifrost and Venice with 400; LiteLLM
 * reports a duplicate as 400, the others as 409.
 */
int
kw_http_status_for(enum kw_face face, enum kw_err err)
{
	/*
	 * The provisioning API documents 400, 401, 403, 404, 409, 422, 426,
	 * 429, 500, 502 and 504 alone: what has no status of its own there is
	 * an invalid request (a body too large, not JSON, a method the path
	 * does not take), or an internal error to retry (the store).
	 */
	if (face == KW_FACE_PROVISIONING) {
		if (err == KW_ETOOLARGE || err == KW_EMEDIA || err == KW_EMETHOD)
			return 400;
		if (err == KW_EDEADLOCK || err == KW_EUNAVAIL || err == KW_ERUNRECOVERY)
			return 500;
	}
	switch (err) {
	case KW_OK:
		return 200;
	case KW_EINVAL:
		return 400;
	case KW_EVALID:
		return face == KW_FACE_LITELLM || face == KW_FACE_PROVISIONING ? 422 : 400;
	case KW_EAUTH:
		return 401;
	case KW_EFORBIDDEN:
		/* Venice answers 401 to every credential that may not manage keys there */
		return face == KW_FACE_VENICE ? 401 : 403;
	case KW_ENOTFOUND:
		return 404;
	case KW_EMETHOD:
		return 405;
	case KW_ECONFLICT:
		return face == KW_FACE_LITELLM ? 400 : 409;
	case KW_ETOOLARGE:
		return 413;
	case KW_EMEDIA:
		return 415;
	case KW_ELIMIT:
		return 429;
	case KW_EUPGRADE:
		return 426;
	case KW_EPAYMENT:
		return 402;
	case KW_EDEADLOCK:
	case KW_EUNAVAIL:
	case KW_ERUNRECOVERY:
		return 503;
	case KW_ENOMEM:
	case KW_EINTERNAL:
		break;
	}
	return 500;
}

/* A stable machine-readable type for err, in the OpenAI/LiteLLM vocabulary. */
static const char *
error_type(enum kw_err err)
{
	switch (err) {
	case KW_EAUTH:
		return "auth_error";
	case KW_EFORBIDDEN:
		return "permission_error";
	case KW_ENOTFOUND:
		return "not_found_error";
	case KW_EVALID:
		return "validation_error";
	case KW_ECONFLICT:
		return "conflict_error";
	case KW_ELIMIT:
		return "rate_limit_error";
	case KW_EUPGRADE:
		return "upgrade_required";
	case KW_EPAYMENT:
		return "insufficient_quota";
	case KW_EINVAL:
	case KW_EMETHOD:
	case KW_ETOOLARGE:
	case KW_EMEDIA:
		return "invalid_request_error";
	case KW_EDEADLOCK:
	case KW_EUNAVAIL:
	case KW_ERUNRECOVERY:
		return "service_unavailable";
	default:
		return "internal_server_error";
	}
}

static const char *
message_of(const struct kw_error *e)
{
	return e->message[0] != '\0' ? e->message : kw_err_name(e->code);
}

/*
 * Fields name their place in the request: "path.org", "header.X-Client-
 * Version", "query.page", or a body field as it is.  Returns the length
 * of the place's prefix (0 for the body) and its name in *where.
 */
static size_t
field_place(const char *field, const char **where)
{
	static const char *const places[] = { "path", "header", "query" };

	for (size_t i = 0; i < sizeof(places) / sizeof(places[0]); i++) {
		size_t n = strlen(places[i]);

		if (strncmp(field, places[i], n) == 0 && field[n] == '.') {
			*where = places[i];
			return n + 1;
		}
	}
	*where = "body";
	return 0;
}

/* The field an error names, without its place (the faces that say param), or null. */
static json_object *
field_or_null(const struct kw_error *e)
{
	const char *where;

	if (e->field[0] == '\0')
		return NULL;
	return json_object_new_string(e->field + field_place(e->field, &where));
}

/* LiteLLM: {"error": {"message", "type", "param", "code": "<status>"}} */
static json_object *
litellm_error(int status, const struct kw_error *e)
{
	json_object *root = json_object_new_object(), *in = json_object_new_object();
	char code[8];

	snprintf(code, sizeof(code), "%d", status);
	json_object_object_add(in, "message", json_object_new_string(message_of(e)));
	json_object_object_add(in, "type",
	    json_object_new_string(e->type != NULL ? e->type : error_type(e->code)));
	json_object_object_add(in, "param", field_or_null(e));
	json_object_object_add(in, "code", json_object_new_string(code));
	json_object_object_add(root, "error", in);
	return root;
}

/*
 * Bifrost: its error object.  is_bifrost_error is false because the error
 * comes from the management API itself, not from an upstream provider.
 */
static json_object *
bifrost_error(int status, const struct kw_error *e)
{
	json_object *root = json_object_new_object(), *in = json_object_new_object();
	char code[8], event_id[37];

	/* one id for the error and its inner object, as Bifrost logs them */
	kw_uuid4(event_id);
	snprintf(code, sizeof(code), "%d", status);
	json_object_object_add(root, "event_id", json_object_new_string(event_id));
	json_object_object_add(root, "type", json_object_new_string(error_type(e->code)));
	json_object_object_add(root, "is_bifrost_error", json_object_new_boolean(0));
	json_object_object_add(root, "status_code", json_object_new_int(status));
	json_object_object_add(in, "type", json_object_new_string(error_type(e->code)));
	json_object_object_add(in, "code", json_object_new_string(code));
	json_object_object_add(in, "message", json_object_new_string(message_of(e)));
	json_object_object_add(in, "param", field_or_null(e));
	json_object_object_add(in, "event_id", json_object_new_string(event_id));
	json_object_object_add(root, "error", in);
	json_object_object_add(root, "extra_fields", json_object_new_object());
	return root;
}

/*
 * Appends the steps of field ("consumptionLimit.usd", "models[2]"), without
 * its place, to path: names as strings, indexes as numbers.
 */
static void
field_path(const char *field, json_object *path)
{
	const char *p = field;

	while (*p != '\0') {
		size_t n = strcspn(p, ".[");

		if (n > 0)
			json_object_array_add(path, json_object_new_string_len(p, (int)n));
		p += n;
		if (*p == '[') {
			json_object_array_add(path, json_object_new_int(atoi(p + 1)));
			p += strcspn(p, "]");
			if (*p == ']')
				p++;
		}
		if (*p == '.')
			p++;
	}
}

/*
 * Venice's DetailedError for a request that fails its schema, as zod's
 * formatted error builds it: {"error": "Invalid request parameters",
 * "details": {"_errors": [], "<name>": {"_errors": [], ...: {"_errors":
 * [message]}}}, "issues": [{"code", "path", "message"}]}.
 */
static json_object *
venice_detailed_error(const struct kw_error *e)
{
	json_object *root = json_object_new_object(), *details = json_object_new_object();
	json_object *issues = json_object_new_array(), *issue = json_object_new_object();
	json_object *path = json_object_new_array(), *node = details, *list;
	const char *where;

	field_path(e->field + field_place(e->field, &where), path);
	json_object_object_add(details, "_errors", json_object_new_array());
	for (size_t i = 0; i < json_object_array_length(path); i++) {
		json_object *step = json_object_new_object();

		json_object_object_add(step, "_errors", json_object_new_array());
		json_object_object_add(node, json_object_get_string(json_object_array_get_idx(path,
		    i)), step);
		node = step;
	}
	json_object_object_get_ex(node, "_errors", &list);
	json_object_array_add(list, json_object_new_string(message_of(e)));
	json_object_object_add(issue, "code", json_object_new_string("custom"));
	json_object_object_add(issue, "path", path);
	json_object_object_add(issue, "message", json_object_new_string(message_of(e)));
	json_object_array_add(issues, issue);
	json_object_object_add(root, "error", json_object_new_string("Invalid request parameters"));
	json_object_object_add(root, "details", details);
	json_object_object_add(root, "issues", issues);
	return root;
}

/*
 * Venice: {"error": "..."} (its StandardError), or its DetailedError when
 * a field of the body, query or path is at fault.
 */
static json_object *
venice_error(const struct kw_error *e)
{
	json_object *root;
	const char *where = "body";

	if (e->field[0] != '\0')
		(void)field_place(e->field, &where);
	if ((e->code == KW_EVALID || e->code == KW_EINVAL) && e->field[0] != '\0' &&
	    strcmp(where, "header") != 0 && strcmp(e->field, "Content-Length") != 0)
		return venice_detailed_error(e);
	root = json_object_new_object();
	json_object_object_add(root, "error", json_object_new_string(message_of(e)));
	return root;
}

/* Provisioning: {"code", "detail", "type", "errors": [{"loc", "msg", "type"}]} */
static json_object *
provisioning_error(int status, const struct kw_error *e)
{
	json_object *root = json_object_new_object();

	/* its documented 401: {"code": 401, "detail": ..., "type": "authentication_error"} */
	const char *type = e->code == KW_EAUTH ? "authentication_error" : error_type(e->code);

	json_object_object_add(root, "code", json_object_new_int(status));
	json_object_object_add(root, "detail", json_object_new_string(message_of(e)));
	json_object_object_add(root, "type", json_object_new_string(type));
	if (e->field[0] != '\0') {
		json_object *errors = json_object_new_array(), *item = json_object_new_object();
		json_object *loc = json_object_new_array();

		const char *where;
		size_t skip = field_place(e->field, &where);

		json_object_array_add(loc, json_object_new_string(where));
		json_object_array_add(loc, json_object_new_string(e->field + skip));
		json_object_object_add(item, "loc", loc);
		json_object_object_add(item, "msg", json_object_new_string(message_of(e)));
		json_object_object_add(item, "type", json_object_new_string(error_type(e->code)));
		json_object_array_add(errors, item);
		json_object_object_add(root, "errors", errors);
	}
	return root;
}

/* Returns the error body for face (owned by the caller: one json_object_put). */
json_object *
kw_face_error(enum kw_face face, int status, const struct kw_error *e)
{
	switch (face) {
	case KW_FACE_BIFROST:
		return bifrost_error(status, e);
	case KW_FACE_VENICE:
		return venice_error(e);
	case KW_FACE_PROVISIONING:
		return provisioning_error(status, e);
	case KW_FACE_LITELLM:
		break;
	}
	return litellm_error(status, e);
}

/*
 * The handler of an operation that runs one transaction: the caller's
 * check for who, then body with the op, then the answer.  What a
 * body checks of the request comes after the caller's check: who calls is
 * refused before what they sent.
 */
static enum kw_err
op_txn(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct kw_op *op = baton;

	(void)st;
	kw_answer_reset(&op->answer);
	return op->body(op->req, txn, op);
}

enum kw_err
kw_face_op(struct kw_req *req, struct kw_resp *resp, const struct kw_op_def *def)
{
	struct kw_op op = { .req = req, .body = def->body };
	char uuid[37];
	enum kw_err rc;

	if (def->who == KW_OP_ADMIN)
		rc = kw_auth_admin(req);
	else if (def->who == KW_OP_ADMIN_VIEW)
		rc = kw_auth_admin_view(req, def->refusal);
	else if ((rc = kw_auth_caller(req)) == KW_OK && def->who == KW_OP_WRITER)
		rc = kw_auth_can_write(req);
	if (rc != KW_OK)
		return rc;
	if (def->id_field != NULL)
		op.id = kw_json_str(strcmp(req->method, "GET") == 0 ? req->query : req->body,
		    def->id_field);
	if (def->new_id)
		op.id = kw_id_or_new(op.id, uuid);
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, op_txn, &op));
}

/*
 * The change /team/member_update and /organization/member_update make to
 * rec, a record of t read for writing (org, borrowed or NULL, a team's
 * organization): 400 without user_id or user_email, 403 for a caller who
 * stands nowhere toward the membership, 404 naming the field for a user
 * who is no member, 403 for a field the caller's standing does not reach
 * (policy.c), 400 naming budget_id for one that names no budget, then
 * the body's role and limits (null or absent: as they are).  *user_id
 * (request-owned) is the member's.
 */
enum kw_err
kw_face_member_update(struct kw_req *req, DB_TXN *txn, enum kw_members_table t, const char *id,
    json_object *rec, json_object *org, const char **user_id)
{
	const char *named = kw_json_str(req->body, "user_id");
	const char *email = kw_json_str(req->body, "user_email");
	enum kw_standing standing;
	enum kw_err rc;

	*user_id = NULL;
	if (named == NULL && email == NULL) {
		kw_error_set(&req->err, KW_EINVAL, "user_id", "send user_id or user_email");
		return KW_EINVAL;
	}
	if ((rc = kw_members_find(req, txn, t, rec, named, email, user_id)) != KW_OK)
		return rc;
	standing = kw_policy_member_standing(req, t == KW_MEMBERS_TEAMS, rec, org, *user_id);
	if (standing == KW_STANDING_NONE) {
		kw_error_set(&req->err, KW_EFORBIDDEN, t == KW_MEMBERS_TEAMS ? "team_id" :
		    "organization_id", "only a proxy admin or one of its admins may do this");
		return KW_EFORBIDDEN;
	}
	if (*user_id == NULL) {
		kw_error_set(&req->err, KW_ENOTFOUND, named != NULL ? "user_id" : "user_email",
		    "this user is not a member");
		return KW_ENOTFOUND;
	}
	if ((rc = kw_policy_check(req, KW_POLICY_MEMBER, standing,
	    kw_members_entry(t, rec, *user_id), req->body)) != KW_OK ||
	    (rc = kw_budget_named(req, txn, req->body)) != KW_OK)
		return rc;
	return kw_members_change(req, txn, t, id, rec, *user_id, req->body);
}
