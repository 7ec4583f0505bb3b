/* face_org.c: LiteLLM's /organization/... operations: organizations and their members' roles. */
#include <stdio.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

#define PROVISIONED_ALIAS "prov:"	/* face_provisioning.c: "prov:<org>:<client_id>" */

/*
 * A new organization record (owned) from a NewOrganizationRequest (body,
 * borrowed): no members, no model restriction, spend 0; null settings
 * take their defaults.
 */
static json_object *
org_record_new(struct kw_req *req, const char *org_id, json_object *body)
{
	json_object *rec = json_object_new_object(), *v;

	json_object_object_add(rec, "organization_id", json_object_new_string(org_id));
	json_object_object_add(rec, "organization_alias",
	    json_object_new_string(kw_json_str(body, "organization_alias")));
	json_object_object_add(rec, "members", json_object_new_array());
	json_object_object_add(rec, "models",
	    json_object_object_get_ex(body, "models", &v) && v != NULL ? kw_json_copy(v) :
	    json_object_new_array());
	json_object_object_add(rec, "max_budget",
	    json_object_object_get_ex(body, "max_budget", &v) ? json_object_get(v) : NULL);
	/* LiteLLM keeps these in the organization's budget table; the limits engine reads them here */
	json_object_object_add(rec, "rpm_limit",
	    json_object_object_get_ex(body, "rpm_limit", &v) ? json_object_get(v) : NULL);
	json_object_object_add(rec, "tpm_limit",
	    json_object_object_get_ex(body, "tpm_limit", &v) ? json_object_get(v) : NULL);
	json_object_object_add(rec, "budget_id",
	    json_object_object_get_ex(body, "budget_id", &v) ? json_object_get(v) : NULL);
	json_object_object_add(rec, "spend", json_object_new_double(0));
	json_object_object_add(rec, "metadata",
	    json_object_object_get_ex(body, "metadata", &v) && v != NULL ? kw_json_copy(v) :
	    json_object_new_object());
	kw_json_set_time(rec, "created_at", req->now);
	kw_json_set_time(rec, "updated_at", req->now);
	return rec;
}

/*
 * Adds to org (an answer, not stored) litellm_budget_table, the budget
 * table LiteLLM's organization answers include: the organization's
 * max_budget, rpm_limit and tpm_limit, which keywarden keeps on the record.
 */
static void
with_budget_table(json_object *org)
{
	static const char *const fields[] = { "max_budget", "rpm_limit", "tpm_limit" };
	json_object *table = json_object_new_object();

	json_object_object_add(table, "budget_id", NULL);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		json_object_object_add(table, fields[i],
		    json_object_get(json_object_object_get(org, fields[i])));
	json_object_object_add(org, "litellm_budget_table", table);
}

/* /organization/new's transaction: 400 for a taken id, else the record and its audit entry. */
static enum kw_err
org_new_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	json_object *org;
	enum kw_err rc;

	if ((rc = kw_members_absent(req, txn, KW_MEMBERS_ORGS, op->id)) != KW_OK)
		return rc;
	op->answer = org = org_record_new(req, op->id, req->body);	/* dropped on an error */
	if ((rc = kw_members_write(req, txn, KW_MEMBERS_ORGS, op->id, NULL, org)) == KW_OK)
		with_budget_table(org);
	return rc;
}

/*
 * POST /organization/new: an organization (proxy admins only), without
 * members.  organization_id is a new UUID when absent or null; one that
 * exists is 400 naming it.  The answer is the record.
 */
KW_FACE_OP(kw_op_organization_new, .who = KW_OP_ADMIN, .body = org_new_body,
    .id_field = "organization_id", .new_id = 1)

/* /organization/info's transaction: 404, then 403, then the record. */
static enum kw_err
org_info_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	json_object *org;
	enum kw_err rc;

	rc = kw_members_open(req, txn, KW_MEMBERS_ORGS, op->id, "organization_id", 0, &org);
	if (rc == KW_OK)
		with_budget_table(org);
	op->answer = org;
	return rc;
}

/*
 * GET /organization/info: an organization.  404 before 403: proxy
 * admins, admin viewers and the organization's members may see it.
 */
KW_FACE_OP(kw_op_organization_info, .who = KW_OP_READER, .body = org_info_body,
    .id_field = "organization_id")

/* /organization/member_add's transaction: 404, 403, then each member; answer: the record. */
static enum kw_err
member_add_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	json_object *org, *before;
	size_t added;
	enum kw_err rc;

	if ((rc = kw_members_open(req, txn, KW_MEMBERS_ORGS, op->id, "organization_id", 1,
	    &org)) != KW_OK)
		return rc;
	before = kw_json_copy(org);
	rc = kw_members_add_each(req, txn, KW_MEMBERS_ORGS, org,
	    json_object_object_get(req->body, "member"), "member", NULL, NULL, &added);
	if (rc == KW_OK && added > 0)	/* an empty list changes nothing */
		rc = kw_members_update(req, txn, KW_MEMBERS_ORGS, op->id, before, org);
	if (rc == KW_OK)
		with_budget_table(org);
	op->answer = org;	/* kw_face_op drops it on an error */
	json_object_put(before);
	return rc;
}

/*
 * POST /organization/member_add: proxy admins and the organization's
 * org_admins add one member or a list of them (user_role internal_user
 * unless role is given), all or none; unknown users are created.  The
 * answer is the organization.
 */
KW_FACE_OP(kw_op_organization_member_add, .who = KW_OP_WRITER, .body = member_add_body,
    .id_field = "organization_id")

/* Appends token to the array baton. */
static int
collect_token(const char *token, void *baton)
{
	json_object_array_add(baton, json_object_new_string(token));
	return 0;
}

/*
 * Revokes the keys provisioned in org_id for user_id (alias
 * "prov:<org>:...", that user's), each with its audit entry.  The tokens
 * are gathered first: the owner index is not changed under its own cursor.
 */
static enum kw_err
revoke_provisioned(struct kw_req *req, DB_TXN *txn, const char *org_id, const char *user_id)
{
	json_object *tokens = json_object_new_array();
	char prefix[KW_ID_MAX + 8];
	size_t plen;
	enum kw_err rc = kw_keys_owned_by(req->store, txn, 'o', org_id, collect_token, tokens);

	snprintf(prefix, sizeof(prefix), "%s%s:", PROVISIONED_ALIAS, org_id);
	plen = strlen(prefix);
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(tokens); i++) {
		const char *token = json_object_get_string(json_object_array_get_idx(tokens, i));
		const char *owner, *alias;
		json_object *key;

		if ((rc = kw_rec_get(req->store, txn, KW_DB_KEYS, token, KW_RMW, &key)) != KW_OK) {
			if (rc == KW_ENOTFOUND)
				rc = KW_OK;	/* an index row without its record */
			continue;
		}
		owner = kw_json_str(key, "user_id");
		alias = kw_json_str(key, "key_alias");
		if (owner != NULL && strcmp(owner, user_id) == 0 && alias != NULL &&
		    strncmp(alias, prefix, plen) == 0 &&
		    (rc = kw_keys_del(req->store, txn, key)) == KW_OK)
			rc = kw_audit_record(req, txn, "deleted", KW_TABLE_KEYS, token, key, NULL);
		json_object_put(key);
	}
	json_object_put(tokens);
	return rc;
}

/*
 * /organization/member_delete's transaction: 404, 403, 404 for a user
 * who is no member; then the member on both sides and their provisioned
 * keys in the organization.
 */
static enum kw_err
member_delete_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	const char *user_id;
	json_object *org;
	enum kw_err rc;

	if ((rc = kw_members_open(req, txn, KW_MEMBERS_ORGS, op->id, "organization_id", 1,
	    &org)) != KW_OK)
		return rc;
	if ((rc = kw_members_remove(req, txn, KW_MEMBERS_ORGS, op->id, org,
	    kw_json_str(req->body, "user_id"), NULL, &user_id)) == KW_OK &&
	    (rc = revoke_provisioned(req, txn, op->id, user_id)) == KW_OK)
		with_budget_table(org);
	op->answer = org;	/* kw_face_op drops it on an error */
	return rc;
}

/*
 * POST /organization/member_delete: proxy admins and the organization's
 * org_admins remove a member; the user's organization_id is cleared when
 * it names this one, and the keys provisioned for them in it stop working
 * at once.  The answer is the organization.
 */
KW_FACE_OP(kw_op_organization_member_delete, .who = KW_OP_WRITER, .body = member_delete_body,
    .id_field = "organization_id")

/*
 * DELETE /organization/member_delete: LiteLLM's method for
 * organization_member_delete (organization_endpoints.py); the same
 * operation as POST.
 */
enum kw_err
kw_op_organization_member_remove(struct kw_req *req, struct kw_resp *resp)
{
	return kw_op_organization_member_delete(req, resp);
}

/*
 * /organization/member_update's transaction: 400 without a user, 404 for
 * the organization, 403, 404 for a user who is no member, 403 for a field
 * the caller's standing does not reach, then the member's user_role and
 * max_budget_in_organization; answer: the membership as LiteLLM's
 * LiteLLM_OrganizationMembershipTable.
 */
static enum kw_err
member_update_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	const char *user_id;
	json_object *org;
	enum kw_err rc;

	if ((rc = kw_members_get(req, txn, KW_MEMBERS_ORGS, op->id, KW_RMW, "organization_id",
	    &org)) != KW_OK)
		return rc;
	op->answer = org;	/* kw_face_op drops it on an error */
	if ((rc = kw_face_member_update(req, txn, KW_MEMBERS_ORGS, op->id, org, NULL,
	    &user_id)) != KW_OK)
		return rc;
	rc = kw_members_membership(req, txn, KW_MEMBERS_ORGS, org, user_id, &op->answer);
	json_object_put(org);
	return rc;
}

/*
 * PATCH /organization/member_update: proxy admins and the organization's
 * org_admins change another member's role and max_budget_in_organization
 * (organization_endpoints.py organization_member_update).
 */
KW_FACE_OP(kw_op_organization_member_update, .who = KW_OP_WRITER, .body = member_update_body,
    .id_field = "organization_id")

/* What goes with an organization being deleted: its teams (with their keys and memberships) and its keys. */
static enum kw_err
org_drop(struct kw_req *req, DB_TXN *txn, const char *org_id, json_object *org, int64_t *keys)
{
	json_object *ids = NULL, *teams = NULL;
	enum kw_err rc = kw_members_ids_where(req, txn, KW_MEMBERS_TEAMS, "organization_id", org_id,
	    &ids);

	(void)org;
	if (rc == KW_OK)
		rc = kw_members_delete_all(req, txn, KW_MEMBERS_TEAMS, ids, "organization_id",
		    kw_team_drop, keys, &teams);
	json_object_put(teams);
	json_object_put(ids);
	return rc != KW_OK ? rc : kw_keys_delete_owned(req, txn, 'o', org_id, NULL, keys);
}

/*
 * /organization/delete's transaction: every organization is read first
 * (all or nothing, 404 naming the first one missing), then each loses its
 * teams (with their keys and memberships), its own keys and its members'
 * memberships; answer: the organizations as they were.
 */
static enum kw_err
org_delete_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	int64_t keys = 0;
	enum kw_err rc = kw_members_delete_all(req, txn, KW_MEMBERS_ORGS,
	    json_object_object_get(req->body, "organization_ids"), "organization_ids", org_drop,
	    &keys, &op->answer);

	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(op->answer); i++)
		with_budget_table(json_object_array_get_idx(op->answer, i));
	return rc;
}

/*
 * DELETE /organization/delete: proxy admins delete organizations, their
 * teams and every key of both, in one transaction
 * (organization_endpoints.py delete_organization).
 */
KW_FACE_OP(kw_op_organization_delete, .who = KW_OP_ADMIN, .body = org_delete_body)

/*
 * GET /organization/list: proxy admins and admin viewers see every
 * organization; others those they are a member of (none for a key
 * without a user).  In organization_id order.
 */
enum kw_err
kw_op_organization_list(struct kw_req *req, struct kw_resp *resp)
{
	json_object *orgs;
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	/* others than admins and admin viewers: their own; "" matches no member */
	rc = kw_members_list(req, KW_MEMBERS_ORGS, kw_auth_reads_all(req->caller) ? NULL :
	    req->caller->user_id, NULL, NULL, &orgs);
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(orgs); i++)
		with_budget_table(json_object_array_get_idx(orgs, i));
	if (rc == KW_OK)
		kw_resp_json(resp, 200, orgs);
	return rc;
}
