/* face_budget.c: LiteLLM's /budget/... operations: budgets a key or an end user is held to. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/* LiteLLM's words when a caller who does not read everything asks (its role follows) */
#define NOT_ADMIN_VIEW "Not allowed access, your role="

/* The fields of LiteLLM's BudgetNewRequest a budget record keeps, budget_id aside. */
static const char *const budget_fields[] = {
	"max_budget", "soft_budget", "max_parallel_requests", "tpm_limit", "rpm_limit",
	"model_max_budget", "budget_duration", "budget_reset_at",
};

/* Who made or changed a record, as LiteLLM writes it: the caller's user, else the admin's name. */
static const char *
changed_by(struct kw_req *req)
{
	if (req->caller != NULL && req->caller->user_id[0] != '\0')
		return req->caller->user_id;
	return "default_user_id";	/* litellm_proxy_admin_name */
}

/* True when body names one of LiteLLM's budget fields (BudgetNewRequest's, budget_id aside). */
int
kw_budget_fields_in(json_object *body)
{
	for (size_t i = 0; i < sizeof(budget_fields) / sizeof(budget_fields[0]); i++) {
		json_object *v;

		if (json_object_object_get_ex(body, budget_fields[i], &v) && v != NULL)
			return 1;
	}
	return 0;
}

/*
 * Sets on rec (a budget record) every budget field body (borrowed) holds,
 * null included (LiteLLM's update takes the fields sent, exclude_unset),
 * and with a budget_duration but no budget_reset_at, the first reset
 * (get_budget_reset_time).
 */
static void
budget_apply(struct kw_req *req, json_object *rec, json_object *body)
{
	json_object *v;

	for (size_t i = 0; i < sizeof(budget_fields) / sizeof(budget_fields[0]); i++)
		if (json_object_object_get_ex(body, budget_fields[i], &v))
			json_object_object_add(rec, budget_fields[i], kw_json_copy(v));
	if (kw_json_str(body, "budget_duration") != NULL && kw_json_str(body, "budget_reset_at") == NULL)
		kw_json_set_time(rec, "budget_reset_at",
		    kw_time_budget_reset(kw_json_str(body, "budget_duration"), req->now));
	kw_json_set_time(rec, "updated_at", req->now);
	json_object_object_add(rec, "updated_by", json_object_new_string(changed_by(req)));
}

/*
 * Makes budget id from settings (a BudgetNewRequest-shaped object,
 * borrowed) with its audit entry, in txn: LiteLLM_BudgetTable's row.  *out
 * (owned, may be NULL) is the record.  KW_ECONFLICT naming budget_id when
 * id is taken.  Permission checks are the caller's.
 */
enum kw_err
kw_budget_create(struct kw_req *req, DB_TXN *txn, const char *id, json_object *settings,
    json_object **out)
{
	json_object *rec = json_object_new_object();
	enum kw_err rc;

	json_object_object_add(rec, "budget_id", json_object_new_string(id));
	for (size_t i = 0; i < sizeof(budget_fields) / sizeof(budget_fields[0]); i++)
		json_object_object_add(rec, budget_fields[i], NULL);
	budget_apply(req, rec, settings);
	kw_json_set_time(rec, "created_at", req->now);
	json_object_object_add(rec, "created_by", json_object_new_string(changed_by(req)));
	rc = kw_rec_put(req->store, txn, KW_DB_BUDGETS, id, rec, 1);
	if (rc == KW_ECONFLICT)
		kw_error_set(&req->err, KW_ECONFLICT, "budget_id",
		    "Budget with id '%s' already exists.", id);
	if (rc == KW_OK)
		rc = kw_audit_record(req, txn, "created", KW_TABLE_BUDGETS, id, NULL, rec);
	if (rc == KW_OK && out != NULL) {
		*out = rec;
		rec = NULL;
	}
	json_object_put(rec);
	return rc;
}

enum kw_err
kw_budget_named(struct kw_req *req, DB_TXN *txn, json_object *body)
{
	const char *id = kw_json_str(body, "budget_id");
	json_object *b = NULL;
	enum kw_err rc = id != NULL ? kw_rec_get(req->store, txn, KW_DB_BUDGETS, id, 0, &b) : KW_OK;

	json_object_put(b);
	if (rc == KW_ENOTFOUND) {
		kw_error_set(&req->err, KW_EINVAL, "budget_id", "no budget has this budget_id");
		return KW_EINVAL;
	}
	return rc;
}

/* Changes budget id by settings (borrowed), with its audit entry; 404 naming field when it is gone. */
enum kw_err
kw_budget_change(struct kw_req *req, DB_TXN *txn, const char *id, json_object *settings,
    const char *field, json_object **out)
{
	json_object *rec, *before;
	enum kw_err rc = kw_rec_get(req->store, txn, KW_DB_BUDGETS, id, KW_RMW, &rec);

	if (rc == KW_ENOTFOUND)
		kw_error_set(&req->err, KW_ENOTFOUND, field, "no budget has this budget_id");
	if (rc != KW_OK)
		return rc;
	before = kw_json_copy(rec);
	budget_apply(req, rec, settings);
	if ((rc = kw_rec_put(req->store, txn, KW_DB_BUDGETS, id, rec, 0)) == KW_OK)
		rc = kw_audit_record(req, txn, "updated", KW_TABLE_BUDGETS, id, before, rec);
	json_object_put(before);
	if (rc == KW_OK && out != NULL) {
		*out = rec;
		rec = NULL;
	}
	json_object_put(rec);
	return rc;
}

/* /budget/new's transaction. */
static enum kw_err
budget_new_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	return kw_budget_create(req, txn, op->id, req->body, &op->answer);
}

/*
 * POST /budget/new: a budget (LiteLLM's new_budget), proxy admins only.
 * budget_id is a new UUID when absent; a taken one is 400.  The answer is
 * the record.
 */
KW_FACE_OP(kw_op_budget_new, .who = KW_OP_ADMIN, .body = budget_new_body,
    .id_field = "budget_id", .new_id = 1)

/* /budget/update's transaction: 400 without budget_id, else the change. */
static enum kw_err
budget_update_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	if (op->id == NULL) {
		kw_error_set(&req->err, KW_EINVAL, "budget_id", "budget_id is required");
		return KW_EINVAL;
	}
	return kw_budget_change(req, txn, op->id, req->body, "budget_id", &op->answer);
}

/*
 * POST /budget/update: changes the fields sent (LiteLLM's update_budget),
 * proxy admins only.  400 without budget_id, 404 for one that names no
 * budget.  The answer is the record.
 */
KW_FACE_OP(kw_op_budget_update, .who = KW_OP_ADMIN, .body = budget_update_body,
    .id_field = "budget_id")

/* /budget/delete's transaction: 404, else the record as it was. */
static enum kw_err
budget_delete_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	json_object *rec;
	enum kw_err rc = kw_rec_get(req->store, txn, KW_DB_BUDGETS, op->id, KW_RMW, &rec);

	if (rc == KW_ENOTFOUND)
		kw_error_set(&req->err, KW_ENOTFOUND, "id", "no budget has this id");
	if (rc != KW_OK)
		return rc;
	if ((rc = kw_rec_del(req->store, txn, KW_DB_BUDGETS, op->id)) == KW_OK &&
	    (rc = kw_audit_record(req, txn, "deleted", KW_TABLE_BUDGETS, op->id, rec,
	    NULL)) == KW_OK) {
		op->answer = rec;
		rec = NULL;
	}
	json_object_put(rec);
	return rc;
}

/*
 * POST /budget/delete: {"id"} (LiteLLM's delete_budget), proxy admins
 * only; the answer is the deleted record.  Keys and end users that named
 * it are held to no budget from then on.
 */
KW_FACE_OP(kw_op_budget_delete, .who = KW_OP_ADMIN, .body = budget_delete_body, .id_field = "id")

static int
list_one(const char *id, json_object *rec, void *baton)
{
	(void)id;
	json_object_array_add(baton, json_object_get(rec));
	return 0;
}

/*
 * Into op->answer, the budgets names (an array of ids, borrowed; NULL:
 * every one) names, in the order named, each once, unknown ones left out
 * (LiteLLM's find_many(budget_id in [...])).
 */
static enum kw_err
list_budgets(struct kw_req *req, DB_TXN *txn, struct kw_op *op, json_object *names)
{
	enum kw_err rc = KW_OK;

	op->answer = json_object_new_array();
	if (names == NULL)
		return kw_rec_each(req->store, txn, KW_DB_BUDGETS, list_one, op->answer);
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(names); i++) {
		const char *id = json_object_get_string(json_object_array_get_idx(names, i));
		json_object *rec;

		for (size_t j = 0; j < i; j++)
			if (strcmp(id, json_object_get_string(json_object_array_get_idx(names, j))) == 0)
				id = NULL;
		if (id == NULL)
			continue;
		if ((rc = kw_rec_get(req->store, txn, KW_DB_BUDGETS, id, 0, &rec)) == KW_OK)
			json_object_array_add(op->answer, rec);
		else if (rc == KW_ENOTFOUND)
			rc = KW_OK;
	}
	return rc;
}

/* /budget/info's transaction: 400 for no budgets, else those named. */
static enum kw_err
budget_info_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	json_object *names = json_object_object_get(req->body, "budgets");

	if (names == NULL || json_object_array_length(names) == 0) {
		kw_error_set(&req->err, KW_EINVAL, "budgets",
		    "Specify list of budget id's to query. Passed in=[]");
		return KW_EINVAL;
	}
	return list_budgets(req, txn, op, names);
}

/*
 * POST /budget/info: {"budgets": [ids]} (LiteLLM's info_budget): the
 * budgets named, in the order named; unknown ids are left out.  An empty
 * list is 400.  Proxy admins and admin viewers.
 */
KW_FACE_OP(kw_op_budget_info, .who = KW_OP_ADMIN_VIEW, .body = budget_info_body,
    .refusal = NOT_ADMIN_VIEW)

static enum kw_err
budget_list_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	return list_budgets(req, txn, op, NULL);
}

/* GET /budget/list: every budget, in budget_id order (LiteLLM's list_budget); admins and viewers. */
KW_FACE_OP(kw_op_budget_list, .who = KW_OP_ADMIN_VIEW, .body = budget_list_body,
    .refusal = NOT_ADMIN_VIEW)

/* /budget/settings's transaction: the settings of budget op->id, null when no budget has it. */
static enum kw_err
budget_settings_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	static const struct {
		const char *name, *type, *description;
	} settings[] = {
		{ "soft_budget", "Float", "Requests will NOT fail if this is exceeded. Will fire "
		    "alerting though." },
		{ "max_budget", "Float", "Requests will fail if this budget (in USD) is exceeded." },
		{ "max_parallel_requests", "Integer", "Max concurrent requests allowed for this "
		    "budget id." },
		{ "tpm_limit", "Integer", "Max tokens per minute, allowed for this budget id." },
		{ "rpm_limit", "Integer", "Max requests per minute, allowed for this budget id." },
		{ "budget_duration", "String", "Max duration budget should be set for (e.g. '1hr', "
		    "'1d', '28d')" },
		{ "model_max_budget", "Object", "Max budget for each model (e.g. {'gpt-4o': "
		    "{'max_budget': '0.0000001', 'budget_duration': '1d', 'tpm_limit': 1000, "
		    "'rpm_limit': 1000}})" },
	};
	json_object *rec = NULL;
	enum kw_err rc = kw_rec_get(req->store, txn, KW_DB_BUDGETS, op->id, 0, &rec);

	if (rc != KW_OK && rc != KW_ENOTFOUND)
		return rc;
	op->answer = json_object_new_array();
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
		json_object *e = json_object_new_object();

		json_object_object_add(e, "field_name", json_object_new_string(settings[i].name));
		json_object_object_add(e, "field_type", json_object_new_string(settings[i].type));
		json_object_object_add(e, "field_value",
		    json_object_get(json_object_object_get(rec, settings[i].name)));
		json_object_object_add(e, "field_description",
		    json_object_new_string(settings[i].description));
		json_object_object_add(e, "field_default_value", NULL);
		json_object_object_add(e, "stored_in_db", json_object_new_boolean(1));
		json_object_array_add(op->answer, e);
	}
	json_object_put(rec);
	return KW_OK;
}

/*
 * GET /budget/settings?budget_id=: LiteLLM's budget_settings, for the
 * admin UI: one ConfigList entry per setting a budget stores, with its
 * value (null when unset or when no budget has the id).
 */
KW_FACE_OP(kw_op_budget_settings, .who = KW_OP_ADMIN_VIEW, .body = budget_settings_body,
    .id_field = "budget_id", .refusal = NOT_ADMIN_VIEW)
