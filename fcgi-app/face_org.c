/* face_org.c: LiteLLM's /organization/... operations: organizations and their members' roles. */
#include <stdio.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

#define PROVISIONED_ALIAS "prov:"	/* face_provisioning.c: "prov:<org>:<client_id>" */

/* One operation's transaction: its answer, rebuilt on every attempt. */
struct org_op {
	struct kw_req *req;
	const char *org_id;	/* the organization the operation is about; borrowed */
	json_object *answer;	/* owned */
};

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
	json_object_object_add(rec, "spend", json_object_new_double(0));
	json_object_object_add(rec, "metadata",
	    json_object_object_get_ex(body, "metadata", &v) && v != NULL ? kw_json_copy(v) :
	    json_object_new_object());
	kw_json_set_time(rec, "created_at", req->now);
	kw_json_set_time(rec, "updated_at", req->now);
	return rec;
}

/* Reads organization org_id into *org (owned); 404 naming field when there is none. */
static enum kw_err
get_org(struct kw_req *req, DB_TXN *txn, const char *org_id, int flags, const char *field,
    json_object **org)
{
	enum kw_err rc = kw_rec_get(req->store, txn, KW_DB_ORGS, org_id, flags, org);

	if (rc == KW_ENOTFOUND)
		kw_error_set(&req->err, KW_ENOTFOUND, field,
		    "no organization has this organization_id");
	return rc;
}

/* The members array of org (borrowed), added when missing. */
static json_object *
members_of(json_object *org)
{
	json_object *members;

	if (!json_object_object_get_ex(org, "members", &members) ||
	    !json_object_is_type(members, json_type_array)) {
		members = json_object_new_array();
		json_object_object_add(org, "members", members);
	}
	return members;
}

/* KW_OK when the caller may change org's members: a proxy admin or an org_admin; else 403. */
static enum kw_err
may_manage(struct kw_req *req, json_object *org)
{
	const char *role;

	if (kw_auth_is_admin(req->caller))
		return KW_OK;
	role = kw_org_role_of(org, req->caller->user_id);
	if (role != NULL && strcmp(role, "org_admin") == 0)
		return KW_OK;
	kw_error_set(&req->err, KW_EFORBIDDEN, "organization_id",
	    "only a proxy admin or one of the organization's org_admins may do this");
	return KW_EFORBIDDEN;
}

/*
 * Adds member (an OrganizationMember, borrowed) to org (a record being
 * written, not yet stored), creating the user when unknown and setting
 * the user's organization_id when it has none, with the user's audit
 * entry.  400 naming field for a user already a member, or a new user
 * whose user_email another user has.
 */
static enum kw_err
add_member(struct kw_req *req, DB_TXN *txn, json_object *org, json_object *member,
    const char *field)
{
	const char *org_id = kw_json_str(org, "organization_id");
	const char *user_id = kw_json_str(member, "user_id");
	const char *email = kw_json_str(member, "user_email"), *role = kw_json_str(member, "role");
	json_object *user, *before = NULL, *entry;
	enum kw_err rc;

	if (user_id == NULL) {	/* the schema requires it */
		kw_error_set(&req->err, KW_EVALID, field, "each member needs a user_id");
		return KW_EVALID;
	}
	if (email != NULL && *email == '\0')
		email = NULL;
	if (kw_org_role_of(org, user_id) != NULL) {
		kw_error_set(&req->err, KW_ECONFLICT, field,
		    "this user is already a member of the organization");
		return KW_ECONFLICT;
	}
	rc = kw_rec_get(req->store, txn, KW_DB_USERS, user_id, KW_RMW, &user);
	if (rc == KW_ENOTFOUND && email != NULL) {
		const char *other;

		/* a new user may not take an email that names another user */
		if ((rc = kw_user_id_by_email(req, txn, email, &other)) == KW_OK) {
			kw_error_set(&req->err, KW_ECONFLICT, field,
			    "another user has this user_email");
			return KW_ECONFLICT;
		}
		if (rc != KW_ENOTFOUND)
			return rc;
	}
	if (rc == KW_ENOTFOUND) {
		user = kw_user_record_new(req, user_id, email);
		json_object_object_add(user, "organization_id", json_object_new_string(org_id));
	} else if (rc == KW_OK) {
		kw_budget_settle(user, req->now);
		before = kw_json_copy(user);
		if (kw_json_str(user, "organization_id") == NULL) {
			json_object_object_add(user, "organization_id",
			    json_object_new_string(org_id));
			kw_json_set_time(user, "updated_at", req->now);
		}
	} else {
		return rc;
	}
	if ((rc = kw_rec_put(req->store, txn, KW_DB_USERS, user_id, user, before == NULL)) == KW_OK)
		rc = kw_audit_record(req, txn, before == NULL ? "created" : "updated",
		    KW_TABLE_USERS, user_id, before, user);
	if (rc == KW_OK) {
		email = kw_json_str(user, "user_email");	/* the user's own, as stored */
		entry = json_object_new_object();
		json_object_object_add(entry, "user_id", json_object_new_string(user_id));
		json_object_object_add(entry, "user_email",
		    email != NULL ? json_object_new_string(email) : NULL);
		json_object_object_add(entry, "user_role",
		    json_object_new_string(role != NULL ? role : "internal_user"));
		kw_json_set_time(entry, "created_at", req->now);
		json_object_array_add(members_of(org), entry);
	}
	json_object_put(before);
	json_object_put(user);
	return rc;
}

/* /organization/new's transaction: 400 for a taken id, else the record and its audit entry. */
static enum kw_err
org_new_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct org_op *op = baton;
	struct kw_req *req = op->req;
	json_object *org;
	enum kw_err rc;

	kw_answer_reset(&op->answer);
	org = org_record_new(req, op->org_id, req->body);
	rc = kw_rec_put(st, txn, KW_DB_ORGS, op->org_id, org, 1);
	if (rc == KW_ECONFLICT)
		kw_error_set(&req->err, KW_ECONFLICT, "organization_id",
		    "an organization with this organization_id exists");
	if (rc == KW_OK && (rc = kw_audit_record(req, txn, "created", KW_TABLE_ORGS, op->org_id,
	    NULL, org)) == KW_OK) {
		op->answer = org;
		org = NULL;
	}
	json_object_put(org);
	return rc;
}

/*
 * POST /organization/new: an organization (proxy admins only), without
 * members.  organization_id is a new UUID when absent or null; one that
 * exists is 400 naming it.  The answer is the record.
 */
enum kw_err
kw_op_organization_new(struct kw_req *req, struct kw_resp *resp)
{
	struct org_op op = { .req = req, .org_id = kw_json_str(req->body, "organization_id") };
	char uuid[37];
	enum kw_err rc;

	if ((rc = kw_auth_admin(req)) != KW_OK)
		return rc;
	op.org_id = kw_id_or_new(op.org_id, uuid);
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, org_new_body, &op));
}

/* /organization/info's transaction: 404, then 403, then the record. */
static enum kw_err
org_info_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct org_op *op = baton;
	struct kw_req *req = op->req;
	json_object *org;
	enum kw_err rc;

	(void)st;
	kw_answer_reset(&op->answer);
	if ((rc = get_org(req, txn, op->org_id, 0, "organization_id", &org)) != KW_OK)
		return rc;
	if (!kw_auth_reads_all(req->caller) && kw_org_role_of(org, req->caller->user_id) == NULL) {
		json_object_put(org);
		kw_error_set(&req->err, KW_EFORBIDDEN, "organization_id",
		    "only the organization's members and admins may see it");
		return KW_EFORBIDDEN;
	}
	op->answer = org;
	return KW_OK;
}

/*
 * GET /organization/info: an organization.  404 before 403: proxy
 * admins, admin viewers and the organization's members may see it.
 */
enum kw_err
kw_op_organization_info(struct kw_req *req, struct kw_resp *resp)
{
	struct org_op op = { .req = req, .org_id = kw_json_str(req->query, "organization_id") };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, org_info_body, &op));
}

/* /organization/member_add's transaction: 404, 403, then each member; answer: the record. */
static enum kw_err
member_add_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct org_op *op = baton;
	struct kw_req *req = op->req;
	json_object *org, *before, *member = json_object_object_get(req->body, "member");
	size_t added = 0;
	enum kw_err rc;

	kw_answer_reset(&op->answer);
	if ((rc = get_org(req, txn, op->org_id, KW_RMW, "organization_id", &org)) != KW_OK)
		return rc;
	if ((rc = may_manage(req, org)) != KW_OK) {
		json_object_put(org);
		return rc;
	}
	before = kw_json_copy(org);
	if (json_object_is_type(member, json_type_array)) {
		for (size_t i = 0; rc == KW_OK && i < json_object_array_length(member); i++) {
			char field[KW_FIELD_MAX];

			snprintf(field, sizeof(field), "member[%zu]", i);
			if ((rc = add_member(req, txn, org, json_object_array_get_idx(member, i),
			    field)) == KW_OK)
				added++;
		}
	} else if ((rc = add_member(req, txn, org, member, "member")) == KW_OK) {
		added++;
	}
	if (rc == KW_OK && added > 0) {	/* an empty list changes nothing */
		kw_json_set_time(org, "updated_at", req->now);
		if ((rc = kw_rec_put(st, txn, KW_DB_ORGS, op->org_id, org, 0)) == KW_OK)
			rc = kw_audit_record(req, txn, "updated", KW_TABLE_ORGS, op->org_id, before,
			    org);
	}
	if (rc == KW_OK) {
		op->answer = org;
		org = NULL;
	}
	json_object_put(before);
	json_object_put(org);
	return rc;
}

/*
 * POST /organization/member_add: proxy admins and the organization's
 * org_admins add one member or a list of them (user_role internal_user
 * unless role is given), all or none; unknown users are created.  The
 * answer is the organization.
 */
enum kw_err
kw_op_organization_member_add(struct kw_req *req, struct kw_resp *resp)
{
	struct org_op op = { .req = req, .org_id = kw_json_str(req->body, "organization_id") };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK || (rc = kw_auth_can_write(req)) != KW_OK)
		return rc;
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, member_add_body, &op));
}

/* Clears user_id's organization_id when it names org_id, when that user exists. */
static enum kw_err
drop_org_of_user(struct kw_req *req, DB_TXN *txn, const char *user_id, const char *org_id)
{
	json_object *user, *before;
	const char *had;
	enum kw_err rc = kw_rec_get(req->store, txn, KW_DB_USERS, user_id, KW_RMW, &user);

	if (rc != KW_OK)
		return rc == KW_ENOTFOUND ? KW_OK : rc;
	had = kw_json_str(user, "organization_id");
	if (had == NULL || strcmp(had, org_id) != 0) {
		json_object_put(user);
		return KW_OK;
	}
	kw_budget_settle(user, req->now);
	before = kw_json_copy(user);
	json_object_object_add(user, "organization_id", NULL);
	kw_json_set_time(user, "updated_at", req->now);
	if ((rc = kw_rec_put(req->store, txn, KW_DB_USERS, user_id, user, 0)) == KW_OK)
		rc = kw_audit_record(req, txn, "updated", KW_TABLE_USERS, user_id, before, user);
	json_object_put(before);
	json_object_put(user);
	return rc;
}

/* Takes user_id out of org's members (user_id stays valid: it is not org's). */
static void
remove_member(struct kw_req *req, json_object *org, const char *user_id)
{
	kw_json_list_drop(org, "members", "user_id", user_id);
	kw_json_set_time(org, "updated_at", req->now);
}

struct orgs_of {
	const char *user_id;
	json_object *ids;	/* owned array */
};

static int
collect_org_of(const char *id, json_object *org, void *baton)
{
	struct orgs_of *o = baton;

	if (kw_org_role_of(org, o->user_id) != NULL)
		json_object_array_add(o->ids, json_object_new_string(id));
	return 0;
}

/*
 * Takes user_id out of every organization it is a member of, in txn,
 * audited: what deleting a user does to its memberships.
 */
enum kw_err
kw_org_forget_user(struct kw_req *req, DB_TXN *txn, const char *user_id)
{
	struct orgs_of o = { user_id, json_object_new_array() };
	enum kw_err rc = kw_rec_each(req->store, txn, KW_DB_ORGS, collect_org_of, &o);

	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(o.ids); i++) {
		const char *org_id = json_object_get_string(json_object_array_get_idx(o.ids, i));
		json_object *org, *before;

		if ((rc = kw_rec_get(req->store, txn, KW_DB_ORGS, org_id, KW_RMW, &org)) != KW_OK)
			break;
		before = kw_json_copy(org);
		remove_member(req, org, user_id);
		if ((rc = kw_rec_put(req->store, txn, KW_DB_ORGS, org_id, org, 0)) == KW_OK)
			rc = kw_audit_record(req, txn, "updated", KW_TABLE_ORGS, org_id, before, org);
		json_object_put(before);
		json_object_put(org);
	}
	json_object_put(o.ids);
	return rc;
}

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
member_delete_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct org_op *op = baton;
	struct kw_req *req = op->req;
	const char *user_id = kw_json_str(req->body, "user_id");
	json_object *org, *before = NULL;
	enum kw_err rc;

	kw_answer_reset(&op->answer);
	if ((rc = get_org(req, txn, op->org_id, KW_RMW, "organization_id", &org)) != KW_OK)
		return rc;
	if ((rc = may_manage(req, org)) != KW_OK)
		goto done;
	if (kw_org_role_of(org, user_id) == NULL) {
		kw_error_set(&req->err, KW_ENOTFOUND, "user_id",
		    "this user is not a member of the organization");
		rc = KW_ENOTFOUND;
		goto done;
	}
	before = kw_json_copy(org);
	remove_member(req, org, user_id);
	if ((rc = kw_rec_put(st, txn, KW_DB_ORGS, op->org_id, org, 0)) == KW_OK &&
	    (rc = kw_audit_record(req, txn, "updated", KW_TABLE_ORGS, op->org_id, before,
	    org)) == KW_OK &&
	    (rc = drop_org_of_user(req, txn, user_id, op->org_id)) == KW_OK)
		rc = revoke_provisioned(req, txn, op->org_id, user_id);
	if (rc == KW_OK) {
		op->answer = org;
		org = NULL;
	}
done:
	json_object_put(before);
	json_object_put(org);
	return rc;
}

/*
 * POST /organization/member_delete: proxy admins and the organization's
 * org_admins remove a member; the user's organization_id is cleared when
 * it names this one, and the keys provisioned for them in it stop working
 * at once.  The answer is the organization.
 */
enum kw_err
kw_op_organization_member_delete(struct kw_req *req, struct kw_resp *resp)
{
	struct org_op op = { .req = req, .org_id = kw_json_str(req->body, "organization_id") };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK || (rc = kw_auth_can_write(req)) != KW_OK)
		return rc;
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, member_delete_body, &op));
}

/* An organization listing: its filter and the answer being gathered. */
struct org_listing {
	const char *user_id;	/* only organizations this user belongs to; NULL: all */
	json_object *orgs;	/* owned answer */
};

/* Appends rec (borrowed) to the listing when it passes the filter. */
static int
list_one(const char *id, json_object *rec, void *baton)
{
	struct org_listing *l = baton;

	(void)id;
	if (l->user_id == NULL || kw_org_role_of(rec, l->user_id) != NULL)
		json_object_array_add(l->orgs, json_object_get(rec));
	return 0;
}

/* /organization/list's transaction: a scan of the organizations into a fresh l->orgs. */
static enum kw_err
org_list_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct org_listing *l = baton;

	json_object_put(l->orgs);
	l->orgs = json_object_new_array();
	return kw_rec_each(st, txn, KW_DB_ORGS, list_one, l);
}

/*
 * GET /organization/list: proxy admins and admin viewers see every
 * organization; others those they are a member of (none for a key
 * without a user).  In organization_id order.
 */
enum kw_err
kw_op_organization_list(struct kw_req *req, struct kw_resp *resp)
{
	struct org_listing l = { 0 };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	if (!kw_auth_reads_all(req->caller))
		l.user_id = req->caller->user_id;	/* "" matches no member */
	if ((rc = kw_store_txn(req->store, org_list_body, &l)) != KW_OK) {
		json_object_put(l.orgs);
		return rc;
	}
	kw_resp_json(resp, 200, l.orgs);
	return KW_OK;
}
