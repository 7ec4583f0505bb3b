/* face_customer.c: LiteLLM's /customer/... operations: end users, the callers' own customers. */
#include <stdio.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/* LiteLLM's words when a caller who does not read everything asks (its role follows) */
#define NOT_ADMIN_VIEW "Admin-only endpoint. Your user role="

/* The end-user fields a request may set (LiteLLM_EndUserTable's, the budget's apart). */
static const char *const end_user_fields[] = {
	"alias", "blocked", "allowed_model_region", "default_model", "metadata", "spend",
};

/*
 * The end user as LiteLLM answers it (owned): the record with its budget
 * joined as litellm_budget_table (null when it has none); without nulls
 * when drop_nulls (end_user_info's model_dump(exclude_none=True)).
 */
static enum kw_err
customer_view(struct kw_req *req, DB_TXN *txn, json_object *rec, int drop_nulls,
    json_object **out)
{
	json_object *view = kw_json_copy(rec), *budget = NULL;
	const char *budget_id = kw_json_str(rec, "budget_id");
	enum kw_err rc = KW_OK;

	if (budget_id != NULL &&
	    (rc = kw_rec_get(req->store, txn, KW_DB_BUDGETS, budget_id, 0, &budget)) != KW_OK &&
	    rc != KW_ENOTFOUND) {
		json_object_put(view);
		return rc;
	}
	if (rc == KW_OK)
		kw_limits_end_user_settle(view, budget, req->now);	/* shown as the check sees it */
	json_object_object_add(view, "litellm_budget_table", rc == KW_OK ? budget : NULL);
	if (drop_nulls) {
		json_object *clean = json_object_new_object();

		json_object_object_foreach(view, name, v)
			if (v != NULL)
				json_object_object_add(clean, name, json_object_get(v));
		json_object_put(view);
		view = clean;
	}
	*out = view;
	return KW_OK;
}

/* Reads end user id for update; 404 naming field, in LiteLLM's words, when there is none. */
static enum kw_err
get_customer(struct kw_req *req, DB_TXN *txn, const char *id, const char *field,
    json_object **out)
{
	enum kw_err rc = kw_rec_get(req->store, txn, KW_DB_END_USERS, id, KW_RMW, out);

	if (rc == KW_ENOTFOUND)
		kw_error_set(&req->err, KW_ENOTFOUND, field, "End User Id=%s does not exist in db",
		    id);
	return rc;
}

/* /customer/new's transaction. */
static enum kw_err
customer_new_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	struct kw_store *st = req->store;
	const char *id = kw_json_str(req->body, "user_id");
	const char *budget_id = kw_json_str(req->body, "budget_id");
	json_object *rec, *v;
	char uuid[37];
	enum kw_err rc;

	rec = kw_limits_end_user_new(id);
	for (size_t i = 0; i < sizeof(end_user_fields) / sizeof(end_user_fields[0]); i++)
		if (json_object_object_get_ex(req->body, end_user_fields[i], &v) && v != NULL)
			json_object_object_add(rec, end_user_fields[i], kw_json_copy(v));
	/* new_budget_request: budget fields sent make a budget of their own */
	if (kw_budget_fields_in(req->body)) {
		kw_uuid4(uuid);
		rc = kw_budget_create(req, txn, uuid, req->body, NULL);
		budget_id = uuid;
	} else {
		rc = kw_budget_named(req, txn, req->body);
	}
	if (rc == KW_OK && budget_id != NULL)
		json_object_object_add(rec, "budget_id", json_object_new_string(budget_id));
	if (rc == KW_OK && (rc = kw_rec_put(st, txn, KW_DB_END_USERS, id, rec, 1)) == KW_ECONFLICT)
		kw_error_set(&req->err, KW_ECONFLICT, "user_id", "Customer already exists, passed "
		    "user_id=%s. Please pass a new user_id.", id);
	if (rc == KW_OK)
		rc = kw_audit_record(req, txn, "created", KW_TABLE_END_USERS, id, NULL, rec);
	if (rc == KW_OK)
		rc = customer_view(req, txn, rec, 0, &op->answer);
	json_object_put(rec);
	return rc;
}

/*
 * POST /customer/new: an end user (LiteLLM's new_end_user), proxy admins
 * only.  max_budget and the other budget fields make it a budget of its
 * own; else budget_id links one that exists.  A taken user_id is 400.
 */
KW_FACE_OP(kw_op_customer_new, .who = KW_OP_ADMIN, .body = customer_new_body)

/* A value /customer/update takes: not null, [], {} or 0 (LiteLLM's non_default_values). */
static int
non_default(json_object *v)
{
	if (v == NULL)
		return 0;
	if (json_object_is_type(v, json_type_array))
		return json_object_array_length(v) > 0;
	if (json_object_is_type(v, json_type_object))
		return json_object_object_length(v) > 0;
	if (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double))
		return json_object_get_double(v) != 0;
	return 1;
}

/* /customer/update's transaction. */
static enum kw_err
customer_update_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	struct kw_store *st = req->store;
	const char *id = kw_json_str(req->body, "user_id"), *budget_id;
	json_object *rec, *before, *v, *settings;
	char uuid[37];
	enum kw_err rc;

	if ((rc = get_customer(req, txn, id, "user_id", &rec)) != KW_OK)
		return rc;
	before = kw_json_copy(rec);
	/* what is sent as null, [], {} or 0 changes nothing */
	settings = json_object_new_object();
	json_object_object_foreach(req->body, name, value)
		if (non_default(value))
			json_object_object_add(settings, name, json_object_get(value));
	for (size_t i = 0; i < sizeof(end_user_fields) / sizeof(end_user_fields[0]); i++)
		if (json_object_object_get_ex(settings, end_user_fields[i], &v))
			json_object_object_add(rec, end_user_fields[i], kw_json_copy(v));
	if ((rc = kw_budget_named(req, txn, settings)) == KW_OK &&
	    (budget_id = kw_json_str(settings, "budget_id")) != NULL)
		json_object_object_add(rec, "budget_id", json_object_new_string(budget_id));
	/* budget fields change the end user's budget, or make it one */
	if (rc == KW_OK && kw_budget_fields_in(settings)) {
		if ((budget_id = kw_json_str(rec, "budget_id")) != NULL)
			rc = kw_budget_change(req, txn, budget_id, settings, "budget_id", NULL);
		else if ((rc = kw_budget_create(req, txn, kw_id_or_new(NULL, uuid), settings,
		    NULL)) == KW_OK)
			json_object_object_add(rec, "budget_id", json_object_new_string(uuid));
	}
	if (rc == KW_OK && (rc = kw_rec_put(st, txn, KW_DB_END_USERS, id, rec, 0)) == KW_OK)
		rc = kw_audit_record(req, txn, "updated", KW_TABLE_END_USERS, id, before, rec);
	if (rc == KW_OK)
		rc = customer_view(req, txn, rec, 0, &op->answer);
	json_object_put(settings);
	json_object_put(before);
	json_object_put(rec);
	return rc;
}

/* POST /customer/update: LiteLLM's update_end_user, proxy admins only; 404 for an unknown user_id. */
KW_FACE_OP(kw_op_customer_update, .who = KW_OP_ADMIN, .body = customer_update_body)

/* Python's repr of a list of strings, as LiteLLM's messages quote user_ids. */
static void
ids_repr(json_object *ids, const char *sep, int quoted, char *buf, size_t n)
{
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < json_object_array_length(ids) && len < n; i++) {
		int w = snprintf(buf + len, n - len, "%s%s%s%s", i ? sep : "", quoted ? "'" : "",
		    json_object_get_string(json_object_array_get_idx(ids, i)), quoted ? "'" : "");

		if (w < 0)
			break;
		len += (size_t)w;
	}
}

/* /customer/delete's transaction: 404 naming every unknown id, else all of them go. */
static enum kw_err
customer_delete_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	struct kw_store *st = req->store;
	json_object *ids = json_object_object_get(req->body, "user_ids");
	json_object *missing = json_object_new_array(), *rec;
	char list[KW_MESSAGE_MAX], message[KW_MESSAGE_MAX + 64];
	int64_t deleted = 0;
	enum kw_err rc = KW_OK;

	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(ids); i++) {
		const char *id = json_object_get_string(json_object_array_get_idx(ids, i));

		rc = kw_rec_get(st, txn, KW_DB_END_USERS, id, KW_RMW, &rec);
		if (rc == KW_ENOTFOUND) {
			json_object_array_add(missing, json_object_new_string(id));
			rc = KW_OK;
			continue;
		}
		if (rc == KW_OK && json_object_array_length(missing) == 0 &&
		    (rc = kw_rec_del(st, txn, KW_DB_END_USERS, id)) == KW_OK &&
		    (rc = kw_audit_record(req, txn, "deleted", KW_TABLE_END_USERS, id, rec,
		    NULL)) == KW_OK)
			deleted++;
		json_object_put(rec);
	}
	if (rc == KW_OK && json_object_array_length(missing) > 0) {
		ids_repr(missing, ", ", 0, list, sizeof(list));
		kw_error_set(&req->err, KW_ENOTFOUND, "user_ids",
		    "End User Id(s)=%s do not exist in db", list);
		rc = KW_ENOTFOUND;	/* the transaction is aborted: nothing deleted */
	}
	if (rc == KW_OK) {
		ids_repr(ids, ", ", 1, list, sizeof(list));
		op->answer = json_object_new_object();
		json_object_object_add(op->answer, "deleted_customers",
		    json_object_new_int64(deleted));
		snprintf(message, sizeof(message), "Successfully deleted customers with ids: [%s]",
		    list);
		json_object_object_add(op->answer, "message", json_object_new_string(message));
	}
	json_object_put(missing);
	return rc;
}

/* POST /customer/delete: {"user_ids"} (LiteLLM's delete_end_user), proxy admins only, all or none. */
KW_FACE_OP(kw_op_customer_delete, .who = KW_OP_ADMIN, .body = customer_delete_body)

/* Blocks (1) or unblocks (0) the end users of a BlockUsers request; answer: {"blocked_users"}. */
static enum kw_err
set_blocked(struct kw_req *req, DB_TXN *txn, struct kw_op *op, int blocked)
{
	struct kw_store *st = req->store;
	json_object *ids = json_object_object_get(req->body, "user_ids"), *list, *rec, *before;
	enum kw_err rc = KW_OK;

	list = json_object_new_array();
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(ids); i++) {
		const char *id = json_object_get_string(json_object_array_get_idx(ids, i));

		before = NULL;
		rc = kw_rec_get(st, txn, KW_DB_END_USERS, id, KW_RMW, &rec);
		if (rc == KW_ENOTFOUND && !blocked) {
			rc = KW_OK;	/* nothing to unblock */
			continue;
		}
		if (rc == KW_ENOTFOUND)		/* upsert: create {user_id, blocked: true} */
			rec = kw_limits_end_user_new(id);
		else if (rc == KW_OK)
			before = kw_json_copy(rec);
		else
			break;
		json_object_object_add(rec, "blocked", json_object_new_boolean(blocked));
		rc = kw_rec_put(st, txn, KW_DB_END_USERS, id, rec, 0);
		if (rc == KW_OK)
			rc = kw_audit_record(req, txn, before == NULL ? "created" :
			    blocked ? "blocked" : "unblocked", KW_TABLE_END_USERS, id, before, rec);
		if (rc == KW_OK)
			json_object_array_add(list, json_object_get(rec));
		json_object_put(before);
		json_object_put(rec);
	}
	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "blocked_users", list);
	return rc;
}

static enum kw_err
customer_block_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	return set_blocked(req, txn, op, 1);
}

static enum kw_err
customer_unblock_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	return set_blocked(req, txn, op, 0);
}

/*
 * POST /customer/block: LiteLLM's block_user, an upsert: each end user
 * named is blocked, made when unknown.  Their requests are refused
 * (END_USER_BLOCKED) by /key/verify and the authorizer from the next on.
 * The answer is {"blocked_users": [records]}.  Proxy admins only.
 */
KW_FACE_OP(kw_op_customer_block, .who = KW_OP_ADMIN, .body = customer_block_body)

/*
 * POST /customer/unblock: the end users named are let through again
 * (LiteLLM's unblock_user edits its in-memory blocked list; here the
 * record's blocked flag).  Unknown ones are left out.  The answer is
 * {"blocked_users": [records]}, as they are now.
 */
KW_FACE_OP(kw_op_customer_unblock, .who = KW_OP_ADMIN, .body = customer_unblock_body)

/* /customer/info's transaction. */
static enum kw_err
customer_info_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	struct kw_store *st = req->store;
	const char *id = kw_json_str(req->query, "end_user_id");
	json_object *rec;
	enum kw_err rc;

	rc = kw_rec_get(st, txn, KW_DB_END_USERS, id, 0, &rec);
	if (rc == KW_ENOTFOUND)
		kw_error_set(&req->err, KW_ENOTFOUND, "end_user_id",
		    "End User Id=%s does not exist in db", id);
	if (rc != KW_OK)
		return rc;
	rc = customer_view(req, txn, rec, 1, &op->answer);
	json_object_put(rec);
	return rc;
}

/* GET /customer/info?end_user_id=: LiteLLM's end_user_info; 404 for an unknown id. */
KW_FACE_OP(kw_op_customer_info, .who = KW_OP_ADMIN_VIEW, .body = customer_info_body,
    .refusal = NOT_ADMIN_VIEW)

struct customer_listing {
	struct kw_req *req;
	DB_TXN *txn;
	enum kw_err rc;
	json_object *list;	/* borrowed: the answer */
};

static int
list_one(const char *id, json_object *rec, void *baton)
{
	struct customer_listing *l = baton;
	json_object *view;

	(void)id;
	if ((l->rc = customer_view(l->req, l->txn, rec, 0, &view)) != KW_OK)
		return 1;
	json_object_array_add(l->list, view);
	return 0;
}

/* /customer/list's transaction: every end user, as customer_view shows them. */
static enum kw_err
customer_list_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	struct customer_listing l = { .req = req, .txn = txn, .list = json_object_new_array() };
	enum kw_err rc;

	op->answer = l.list;
	rc = kw_rec_each(req->store, txn, KW_DB_END_USERS, list_one, &l);
	return rc != KW_OK ? rc : l.rc;
}

/* GET /customer/list: every end user (LiteLLM's list_end_user): proxy admins and admin viewers. */
KW_FACE_OP(kw_op_customer_list, .who = KW_OP_ADMIN_VIEW, .body = customer_list_body,
    .refusal = NOT_ADMIN_VIEW)
