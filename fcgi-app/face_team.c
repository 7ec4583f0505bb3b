/* face_team.c: LiteLLM's /team/... operations: teams, their members (kept on both sides) and their keys. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/* The settings of a team that /team/new and /team/update set; members change apart. */
static const char *const team_settings[] = {
	"team_alias", "organization_id", "models", "max_budget", "soft_budget", "budget_duration",
	"tpm_limit", "rpm_limit", "max_parallel_requests", "blocked", "tags", "guardrails",
	"model_aliases", "metadata",
};

/* A new team record (owned) with every field at its default: no members, no restriction, spend 0. */
static json_object *
team_record_new(struct kw_req *req, const char *team_id)
{
	json_object *rec = json_object_new_object();

	json_object_object_add(rec, "team_id", json_object_new_string(team_id));
	json_object_object_add(rec, "team_alias", NULL);
	json_object_object_add(rec, "organization_id", NULL);
	json_object_object_add(rec, "members_with_roles", json_object_new_array());
	json_object_object_add(rec, "models", json_object_new_array());
	kw_members_limits_new(rec);
	json_object_object_add(rec, "blocked", json_object_new_boolean(0));
	json_object_object_add(rec, "tags", NULL);
	json_object_object_add(rec, "guardrails", NULL);
	json_object_object_add(rec, "model_aliases", NULL);
	json_object_object_add(rec, "metadata", json_object_new_object());
	kw_json_set_time(rec, "created_at", req->now);
	kw_json_set_time(rec, "updated_at", req->now);
	return rec;
}

/*
 * KW_OK when the caller may apply /team/update's body to team: a team
 * admin names and describes the team; its limits and its blocking are for
 * the organization's admins or a proxy admin (kw_policy_check); 403 else.
 */
static enum kw_err
may_change_settings(struct kw_req *req, DB_TXN *txn, json_object *team)
{
	const char *org_id = kw_json_str(team, "organization_id");
	json_object *org = NULL;
	enum kw_standing standing;
	enum kw_err rc = KW_OK;

	if (org_id != NULL && (rc = kw_rec_get(req->store, txn, KW_DB_ORGS, org_id, 0, &org)) != KW_OK &&
	    rc != KW_ENOTFOUND)
		return rc;
	standing = kw_policy_team_standing(req, team, org);
	json_object_put(org);
	if (standing == KW_STANDING_NONE) {
		kw_error_set(&req->err, KW_EFORBIDDEN, NULL,
		    "only a proxy admin or one of the team's admins may do this");
		return KW_EFORBIDDEN;
	}
	return kw_policy_check(req, KW_POLICY_TEAM, standing, team, req->body);
}

/*
 * A team admin's team holds at most KEYWARDEN_MAX_TEAM_MEMBERS members
 * (each one a user record the admin may create); 400 naming member past
 * that.  Proxy admins are not bound, and 0 is no cap.
 */
static enum kw_err
check_team_size(struct kw_req *req, json_object *team)
{
	size_t n = json_object_array_length(kw_members_array(KW_MEMBERS_TEAMS, team));

	if (kw_auth_is_admin(req->caller) || kw_config.max_team_members == 0 ||
	    n <= kw_config.max_team_members)
		return KW_OK;
	kw_error_set(&req->err, KW_EINVAL, "member", "the team would have %zu members; a team "
	    "admin may give it at most %u (KEYWARDEN_MAX_TEAM_MEMBERS)", n,
	    kw_config.max_team_members);
	return KW_EINVAL;
}

/*
 * /team/new's transaction: the team, its members' users, their audit
 * entries; answer: the team.  A caller with a user who is not among the
 * members joins as an admin (team_endpoints.py new_team: "creating user"
 * appended with role admin).
 */
static enum kw_err
team_new_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	json_object *team, *creator;
	size_t added;
	enum kw_err rc;

	if ((rc = kw_members_absent(req, txn, KW_MEMBERS_TEAMS, op->id)) != KW_OK ||
	    (rc = kw_members_org_known(req, txn, kw_json_str(req->body, "organization_id"))) != KW_OK)
		return rc;
	op->answer = team = team_record_new(req, op->id);	/* kw_face_op drops it on an error */
	kw_members_apply(req, team, req->body, team_settings,
	    sizeof(team_settings) / sizeof(team_settings[0]), NULL);
	rc = kw_members_add_each(req, txn, KW_MEMBERS_TEAMS, team,
	    json_object_object_get(req->body, "members_with_roles"), "members_with_roles", NULL, NULL,
	    &added);
	if (rc == KW_OK && req->caller->user_id[0] != '\0' &&
	    kw_members_role(KW_MEMBERS_TEAMS, team, req->caller->user_id) == NULL) {
		creator = json_object_new_object();
		json_object_object_add(creator, "user_id", json_object_new_string(req->caller->user_id));
		json_object_object_add(creator, "role", json_object_new_string("admin"));
		rc = kw_members_add(req, txn, KW_MEMBERS_TEAMS, team, creator, "members_with_roles", NULL,
		    NULL);
		json_object_put(creator);
	}
	return rc != KW_OK ? rc : kw_members_write(req, txn, KW_MEMBERS_TEAMS, op->id, NULL, team);
}

/*
 * POST /team/new: a team (proxy admins only).  team_id is a new UUID when
 * absent; each member's user gets the team in its teams, and users that
 * do not exist yet are created.
 */
KW_FACE_OP(kw_op_team_new, .who = KW_OP_ADMIN, .body = team_new_body, .id_field = "team_id",
    .new_id = 1)

/*
 * /team/info's transaction: 404, then 403, then the team and the keys the
 * caller may see (at most KEYWARDEN_INFO_MAX_KEYS; keys_truncated says
 * when there are more).
 */
static enum kw_err
team_info_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	json_object *team, *members, *memberships;
	enum kw_err rc;

	if ((rc = kw_members_open(req, txn, KW_MEMBERS_TEAMS, op->id, "team_id", 0, &team)) != KW_OK)
		return rc;
	kw_budget_settle(team, req->now);
	/* a plain member sees the keys /key/info would show them: their own */
	if ((rc = kw_litellm_owner_info(req, txn, 't', op->id, team, &op->answer)) != KW_OK)
		return rc;
	/* team_info's team_memberships: each member's spend and budget (LiteLLM_TeamMembership) */
	memberships = json_object_new_array();
	json_object_object_add(op->answer, "team_memberships", memberships);
	members = kw_members_array(KW_MEMBERS_TEAMS, team);
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(members); i++) {
		const char *user_id = kw_json_str(json_object_array_get_idx(members, i), "user_id");
		json_object *m = NULL;

		if (user_id != NULL &&
		    (rc = kw_members_membership(req, txn, KW_MEMBERS_TEAMS, team, user_id, &m)) ==
		    KW_OK && m != NULL)
			json_object_array_add(memberships, m);
	}
	return rc;
}

/*
 * GET /team/info: a team and its keys.  404 before 403; proxy admins,
 * admin viewers and the team's members may see it; a plain member sees
 * only the keys they may read.
 */
KW_FACE_OP(kw_op_team_info, .who = KW_OP_READER, .body = team_info_body, .id_field = "team_id")

/* /team/update's transaction: 400 for members, 404, 403, then the settings sent; answer: the team. */
static enum kw_err
team_update_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	json_object *team, *before;
	enum kw_err rc;

	if ((rc = kw_members_get(req, txn, KW_MEMBERS_TEAMS, op->id, KW_RMW, "team_id",
	    &team)) != KW_OK)
		return rc;
	op->answer = team;	/* kw_face_op drops it on an error */
	if (kw_json_has(req->body, "members_with_roles") && !kw_json_field_is(team,
	    "members_with_roles", json_object_object_get(req->body, "members_with_roles"))) {
		/* sent back as /team/info showed them, the members change nothing and pass */
		kw_error_set(&req->err, KW_EINVAL, "members_with_roles",
		    "use /team/member_add and /team/member_delete");
		return KW_EINVAL;
	}
	if ((rc = may_change_settings(req, txn, team)) != KW_OK)
		return rc;
	kw_budget_settle(team, req->now);
	before = kw_json_copy(team);
	kw_members_apply(req, team, req->body, team_settings,
	    sizeof(team_settings) / sizeof(team_settings[0]), NULL);
	rc = kw_members_update(req, txn, KW_MEMBERS_TEAMS, op->id, before, team);
	json_object_put(before);
	if (rc == KW_OK) {	/* as update_team answers: {"team_id": ..., "data": team_row} */
		op->answer = json_object_new_object();
		json_object_object_add(op->answer, "team_id", json_object_new_string(op->id));
		json_object_object_add(op->answer, "data", team);
	}
	return rc;
}

/*
 * POST /team/update: proxy admins and the team's admins change the
 * settings sent; members change through /team/member_add,
 * /team/member_update and /team/member_delete only.  The answer is
 * {"team_id", "data": the team}.
 */
KW_FACE_OP(kw_op_team_update, .who = KW_OP_WRITER, .body = team_update_body, .id_field = "team_id")

/* The keys of a team being deleted go with it. */
enum kw_err
kw_team_drop(struct kw_req *req, DB_TXN *txn, const char *team_id, json_object *team,
    int64_t *keys)
{
	(void)team;
	return kw_keys_delete_owned(req, txn, 't', team_id, NULL, keys);
}

/*
 * /team/delete's transaction: every team is read first (all or nothing),
 * then each loses its keys, its members' memberships and its record.
 */
static enum kw_err
team_delete_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	return kw_members_delete_listed(req, txn, op, KW_MEMBERS_TEAMS, "team_ids", kw_team_drop);
}

/*
 * POST /team/delete: proxy admins delete teams, every key they own and
 * their members' memberships, in one transaction: all or nothing, and
 * the keys stop working at once.
 */
KW_FACE_OP(kw_op_team_delete, .who = KW_OP_ADMIN, .body = team_delete_body)

/* /team/member_add's transaction: 404, 403, the members; answer: the team and updated_users. */
static enum kw_err
member_add_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	json_object *team, *before, *users;
	size_t added;
	enum kw_err rc;

	if ((rc = kw_members_open(req, txn, KW_MEMBERS_TEAMS, op->id, "team_id", 1, &team)) != KW_OK)
		return rc;
	if ((rc = kw_budget_named(req, txn, req->body)) != KW_OK) {
		json_object_put(team);
		return rc;
	}
	kw_budget_settle(team, req->now);
	before = kw_json_copy(team);
	users = json_object_new_array();
	/* each new member takes max_budget_in_team and budget_id (_add_team_members_to_team) */
	rc = kw_members_add_each(req, txn, KW_MEMBERS_TEAMS, team,
	    json_object_object_get(req->body, "member"), "member", req->body, users, &added);
	if (rc == KW_OK)	/* past the cap the transaction aborts: no user it made is kept */
		rc = check_team_size(req, team);
	if (rc == KW_OK && added > 0)	/* an empty list changes nothing */
		rc = kw_members_update(req, txn, KW_MEMBERS_TEAMS, op->id, before, team);
	json_object_object_add(team, "updated_users", users);
	op->answer = team;	/* kw_face_op drops it on an error */
	json_object_put(before);
	return rc;
}

/*
 * POST /team/member_add: proxy admins and the team's admins add one
 * member or a list of them (role user unless given); unknown users are
 * created.  The answer is the team and the user records it changed.
 */
KW_FACE_OP(kw_op_team_member_add, .who = KW_OP_WRITER, .body = member_add_body,
    .id_field = "team_id")

/* /team/member_delete's transaction: 400 without a user, 404, 403, the member on both sides and their team keys. */
static enum kw_err
member_delete_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	json_object *team;
	const char *user_id;
	int64_t keys = 0;
	enum kw_err rc;

	if (kw_json_str(req->body, "user_id") == NULL && kw_json_str(req->body, "user_email") == NULL) {
		kw_error_set(&req->err, KW_EINVAL, "user_id", "send user_id or user_email");
		return KW_EINVAL;
	}
	if ((rc = kw_members_open(req, txn, KW_MEMBERS_TEAMS, op->id, "team_id", 1, &team)) != KW_OK)
		return rc;
	if ((rc = kw_members_remove(req, txn, KW_MEMBERS_TEAMS, op->id, team,
	    kw_json_str(req->body, "user_id"), kw_json_str(req->body, "user_email"), &user_id)) == KW_OK)
		rc = kw_keys_delete_owned(req, txn, 't', op->id, user_id, &keys);
	op->answer = team;	/* kw_face_op drops it on an error */
	return rc;
}

/*
 * POST /team/member_delete: proxy admins and the team's admins remove a
 * member, named by user_id or user_email, from both sides, and delete
 * that user's keys in the team.
 */
KW_FACE_OP(kw_op_team_member_delete, .who = KW_OP_WRITER, .body = member_delete_body,
    .id_field = "team_id")

/*
 * /team/member_update's transaction: 400 without a user, 404 for the
 * team, 403, 404 for a user who is no member, 403 for a field the
 * caller's standing does not reach (kw_policy_check), then the member's
 * role and max_budget_in_team; answer: LiteLLM's TeamMemberUpdateResponse.
 */
static enum kw_err
member_update_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	const char *user_id, *org_id;
	json_object *team, *org = NULL, *entry;
	enum kw_err rc;

	if ((rc = kw_members_get(req, txn, KW_MEMBERS_TEAMS, op->id, KW_RMW, "team_id",
	    &team)) != KW_OK)
		return rc;
	op->answer = team;	/* kw_face_op drops it on an error */
	org_id = kw_json_str(team, "organization_id");
	if (org_id != NULL && (rc = kw_rec_get(req->store, txn, KW_DB_ORGS, org_id, 0, &org)) != KW_OK &&
	    rc != KW_ENOTFOUND)
		return rc;
	rc = kw_face_member_update(req, txn, KW_MEMBERS_TEAMS, op->id, team, org, &user_id);
	json_object_put(org);
	if (rc != KW_OK)
		return rc;
	entry = kw_members_entry(KW_MEMBERS_TEAMS, team, user_id);
	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "team_id", json_object_new_string(op->id));
	json_object_object_add(op->answer, "user_id", json_object_new_string(user_id));
	json_object_object_add(op->answer, "user_email",
	    json_object_get(json_object_object_get(entry, "user_email")));
	for (size_t i = 0; i < 3; i++) {
		static const char *const limits[] = { "max_budget_in_team", "tpm_limit", "rpm_limit" };

		json_object_object_add(op->answer, limits[i],
		    json_object_get(json_object_object_get(entry, limits[i])));
	}
	json_object_object_add(op->answer, "role",
	    json_object_get(json_object_object_get(entry, "role")));
	json_object_put(team);
	return KW_OK;
}

/*
 * POST /team/member_update: proxy admins, the team's organization admins
 * and the team's admins change a member's role and max_budget_in_team
 * (team_endpoints.py team_member_update); an admin does not change its
 * own (policy.c).  The limits engine holds the member's keys in the team
 * to max_budget_in_team.
 */
KW_FACE_OP(kw_op_team_member_update, .who = KW_OP_WRITER, .body = member_update_body,
    .id_field = "team_id")

/*
 * GET /team/list: proxy admins and admin viewers see every team; others
 * the teams they are a member of, and may not ask for another user's.
 * ?user_id= and ?organization_id= filter.
 */
enum kw_err
kw_op_team_list(struct kw_req *req, struct kw_resp *resp)
{
	const char *user_id = kw_json_str(req->query, "user_id");
	const char *org_id = kw_json_str(req->query, "organization_id");
	json_object *teams;
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	if (!kw_auth_reads_all(req->caller)) {
		if (user_id != NULL && strcmp(user_id, req->caller->user_id) != 0) {
			kw_error_set(&req->err, KW_EFORBIDDEN, "user_id",
			    "you may only list your own teams");
			return KW_EFORBIDDEN;
		}
		user_id = req->caller->user_id;	/* "" for a key without a user: no team */
	}
	rc = kw_members_list(req, KW_MEMBERS_TEAMS, user_id, org_id != NULL ? "organization_id" : NULL,
	    org_id, &teams);
	if (rc == KW_OK)
		kw_resp_json(resp, 200, teams);
	return rc;
}
