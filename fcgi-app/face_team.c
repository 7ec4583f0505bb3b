/* face_team.c: LiteLLM's /team/... operations: teams, their members (kept on both sides) and their keys. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/* One operation's transaction: its answer, rebuilt on every attempt. */
struct team_op {
	struct kw_req *req;
	const char *team_id;	/* the team the operation is about; borrowed */
	json_object *answer;	/* owned */
};

/* The settings of a team that /team/new and /team/update set; members change apart. */
static const char *const team_settings[] = {
	"team_alias", "organization_id", "models", "max_budget", "soft_budget", "budget_duration",
	"tpm_limit", "rpm_limit", "max_parallel_requests", "blocked", "tags", "guardrails",
	"model_aliases", "metadata",
};

/* The value a setting sent as null takes (owned); NULL when null is its value. */
static json_object *
team_default(const char *field)
{
	if (strcmp(field, "models") == 0)
		return json_object_new_array();
	if (strcmp(field, "blocked") == 0)
		return json_object_new_boolean(0);
	if (strcmp(field, "metadata") == 0)
		return json_object_new_object();
	return NULL;
}

/*
 * Copies the team settings present in body (borrowed) into rec; null
 * becomes the field's default.  budget_duration recomputes budget_reset_at
 * from now.
 */
static void
apply_team_settings(struct kw_req *req, json_object *rec, json_object *body)
{
	const char *d;

	for (size_t i = 0; i < sizeof(team_settings) / sizeof(team_settings[0]); i++) {
		json_object *v;

		if (json_object_object_get_ex(body, team_settings[i], &v))
			json_object_object_add(rec, team_settings[i],
			    v != NULL ? json_object_get(v) : team_default(team_settings[i]));
	}
	if (kw_json_has(body, "budget_duration")) {
		d = kw_json_str(body, "budget_duration");
		kw_json_set_time(rec, "budget_reset_at", d != NULL ? kw_time_budget_reset(d, req->now) : 0);
	}
}

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
	json_object_object_add(rec, "max_budget", NULL);
	json_object_object_add(rec, "soft_budget", NULL);
	json_object_object_add(rec, "spend", json_object_new_double(0));
	json_object_object_add(rec, "budget_duration", NULL);
	json_object_object_add(rec, "budget_reset_at", NULL);
	json_object_object_add(rec, "tpm_limit", NULL);
	json_object_object_add(rec, "rpm_limit", NULL);
	json_object_object_add(rec, "max_parallel_requests", NULL);
	json_object_object_add(rec, "blocked", json_object_new_boolean(0));
	json_object_object_add(rec, "tags", NULL);
	json_object_object_add(rec, "guardrails", NULL);
	json_object_object_add(rec, "model_aliases", NULL);
	json_object_object_add(rec, "metadata", json_object_new_object());
	kw_json_set_time(rec, "created_at", req->now);
	kw_json_set_time(rec, "updated_at", req->now);
	return rec;
}

/* Reads team team_id into *team (owned); 404 naming field when there is none. */
static enum kw_err
get_team(struct kw_req *req, DB_TXN *txn, const char *team_id, int flags, const char *field,
    json_object **team)
{
	enum kw_err rc = kw_rec_get(req->store, txn, KW_DB_TEAMS, team_id, flags, team);

	if (rc == KW_ENOTFOUND)
		kw_error_set(&req->err, KW_ENOTFOUND, field, "no team has this team_id");
	return rc;
}

/* KW_OK when the caller may change team: a proxy admin or one of the team's admins; else 403. */
static enum kw_err
may_manage(struct kw_req *req, json_object *team)
{
	const char *role;

	if (kw_auth_is_admin(req->caller))
		return KW_OK;
	role = kw_team_role_of(team, req->caller->user_id);
	if (role != NULL && strcmp(role, "admin") == 0)
		return KW_OK;
	kw_error_set(&req->err, KW_EFORBIDDEN, NULL,
	    "only a proxy admin or one of the team's admins may do this");
	return KW_EFORBIDDEN;
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

/* The members_with_roles array of team (borrowed), added when missing. */
static json_object *
members_of(json_object *team)
{
	json_object *members;

	if (!json_object_object_get_ex(team, "members_with_roles", &members) ||
	    !json_object_is_type(members, json_type_array)) {
		members = json_object_new_array();
		json_object_object_add(team, "members_with_roles", members);
	}
	return members;
}

/*
 * A team admin's team holds at most KEYWARDEN_MAX_TEAM_MEMBERS members
 * (each one a user record the admin may create); 400 naming member past
 * that.  Proxy admins are not bound, and 0 is no cap.
 */
static enum kw_err
check_team_size(struct kw_req *req, json_object *team)
{
	size_t n = json_object_array_length(members_of(team));

	if (kw_auth_is_admin(req->caller) || kw_config.max_team_members == 0 ||
	    n <= kw_config.max_team_members)
		return KW_OK;
	kw_error_set(&req->err, KW_EINVAL, "member", "the team would have %zu members; a team "
	    "admin may give it at most %u (KEYWARDEN_MAX_TEAM_MEMBERS)", n,
	    kw_config.max_team_members);
	return KW_EINVAL;
}

/*
 * Adds member (a TeamMember object, borrowed) to team (a record being
 * written, not yet stored): finds the user by user_id, else by
 * user_email, creating it when unknown (with a new UUID when only an
 * email names it), and writes the team into the user's teams.  budget,
 * when not NULL, is the member's max_budget_in_team.  The user record as
 * stored is appended to updated_users when that is not NULL.  400 naming
 * field for a member without user_id and user_email, one already in the
 * team, or a new user_id with an email another user has.
 */
static enum kw_err
add_member(struct kw_req *req, DB_TXN *txn, json_object *team, json_object *member,
    const char *field, json_object *budget, json_object *updated_users)
{
	const char *team_id = kw_json_str(team, "team_id");
	const char *user_id = kw_json_str(member, "user_id"), *email = kw_json_str(member, "user_email");
	const char *role = kw_json_str(member, "role");
	json_object *user, *before = NULL, *teams, *entry;
	char *uuid;
	enum kw_err rc;

	if (email != NULL && *email == '\0')
		email = NULL;
	if (user_id == NULL && email == NULL) {
		kw_error_set(&req->err, KW_EINVAL, field, "each member needs a user_id or a user_email");
		return KW_EINVAL;
	}
	if (user_id == NULL) {
		rc = kw_user_id_by_email(req, txn, email, &user_id);
		if (rc == KW_ENOTFOUND) {
			if ((uuid = kw_arena_alloc(req->arena, 37)) == NULL)
				return KW_ENOMEM;
			kw_uuid4(uuid);
			user_id = uuid;
		} else if (rc != KW_OK) {
			return rc;
		}
	}
	if (kw_team_role_of(team, user_id) != NULL) {
		kw_error_set(&req->err, KW_ECONFLICT, field, "this user is already a member of the team");
		return KW_ECONFLICT;
	}

	rc = kw_rec_get(req->store, txn, KW_DB_USERS, user_id, KW_RMW, &user);
	if (rc == KW_ENOTFOUND && email != NULL && kw_json_str(member, "user_id") != NULL) {
		const char *other;

		/* a new user named by id may not take an email that names another user */
		if ((rc = kw_user_id_by_email(req, txn, email, &other)) == KW_OK) {
			kw_error_set(&req->err, KW_ECONFLICT, field, "another user has this user_email");
			return KW_ECONFLICT;
		}
		if (rc != KW_ENOTFOUND)
			return rc;
	}
	if (rc == KW_ENOTFOUND) {
		user = kw_user_record_new(req, user_id, email);
	} else if (rc == KW_OK) {
		kw_budget_settle(user, req->now);
		before = kw_json_copy(user);
	} else {
		return rc;
	}
	if (!json_object_object_get_ex(user, "teams", &teams) ||
	    !json_object_is_type(teams, json_type_array)) {
		teams = json_object_new_array();
		json_object_object_add(user, "teams", teams);
	}
	if (!kw_json_list_has(teams, team_id))
		json_object_array_add(teams, json_object_new_string(team_id));
	kw_json_set_time(user, "updated_at", req->now);
	if ((rc = kw_rec_put(req->store, txn, KW_DB_USERS, user_id, user, before == NULL)) == KW_OK)
		rc = kw_audit_record(req, txn, before == NULL ? "created" : "updated", KW_TABLE_USERS,
		    user_id, before, user);

	if (rc == KW_OK) {
		email = kw_json_str(user, "user_email");	/* the user's own, as stored */
		entry = json_object_new_object();
		json_object_object_add(entry, "user_id", json_object_new_string(user_id));
		json_object_object_add(entry, "user_email", email ? json_object_new_string(email) : NULL);
		json_object_object_add(entry, "role", json_object_new_string(role ? role : "user"));
		if (budget != NULL)
			json_object_object_add(entry, "max_budget_in_team", json_object_get(budget));
		json_object_array_add(members_of(team), entry);
		if (updated_users != NULL)
			json_object_array_add(updated_users, json_object_get(user));
	}
	json_object_put(before);
	json_object_put(user);
	return rc;
}

/* /team/new's transaction: the team, its members' users, their audit entries; answer: the team. */
static enum kw_err
team_new_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct team_op *op = baton;
	struct kw_req *req = op->req;
	json_object *team, *members = NULL;
	enum kw_err rc;

	kw_answer_reset(&op->answer);
	rc = kw_rec_get(st, txn, KW_DB_TEAMS, op->team_id, KW_RMW, &team);
	if (rc == KW_OK) {
		json_object_put(team);
		kw_error_set(&req->err, KW_ECONFLICT, "team_id", "a team with this team_id exists");
		return KW_ECONFLICT;
	}
	if (rc != KW_ENOTFOUND)
		return rc;
	team = team_record_new(req, op->team_id);
	apply_team_settings(req, team, req->body);
	json_object_object_get_ex(req->body, "members_with_roles", &members);
	rc = KW_OK;
	for (size_t i = 0; rc == KW_OK && members != NULL && i < json_object_array_length(members);
	    i++) {
		char field[KW_FIELD_MAX];

		snprintf(field, sizeof(field), "members_with_roles[%zu]", i);
		rc = add_member(req, txn, team, json_object_array_get_idx(members, i), field, NULL, NULL);
	}
	if (rc == KW_OK && (rc = kw_rec_put(st, txn, KW_DB_TEAMS, op->team_id, team, 1)) == KW_OK &&
	    (rc = kw_audit_record(req, txn, "created", KW_TABLE_TEAMS, op->team_id, NULL, team)) == KW_OK) {
		op->answer = team;
		team = NULL;
	}
	json_object_put(team);
	return rc;
}

/*
 * POST /team/new: a team (proxy admins only).  team_id is a new UUID when
 * absent; each member's user gets the team in its teams, and users that
 * do not exist yet are created.
 */
enum kw_err
kw_op_team_new(struct kw_req *req, struct kw_resp *resp)
{
	struct team_op op = { .req = req, .team_id = kw_json_str(req->body, "team_id") };
	char uuid[37];
	enum kw_err rc;

	if ((rc = kw_auth_admin(req)) != KW_OK)
		return rc;
	op.team_id = kw_id_or_new(op.team_id, uuid);
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, team_new_body, &op));
}

/*
 * /team/info's transaction: 404, then 403, then the team and the keys the
 * caller may see (at most KEYWARDEN_INFO_MAX_KEYS; keys_truncated says
 * when there are more).
 */
static enum kw_err
team_info_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct team_op *op = baton;
	struct kw_req *req = op->req;
	json_object *team, *keys;
	int truncated;
	enum kw_err rc;

	(void)st;
	kw_answer_reset(&op->answer);
	if ((rc = get_team(req, txn, op->team_id, 0, "team_id", &team)) != KW_OK)
		return rc;
	if (!kw_auth_reads_all(req->caller) && kw_team_role_of(team, req->caller->user_id) == NULL) {
		json_object_put(team);
		kw_error_set(&req->err, KW_EFORBIDDEN, "team_id",
		    "only the team's members and admins may see it");
		return KW_EFORBIDDEN;
	}
	kw_budget_settle(team, req->now);
	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "team_id", json_object_new_string(op->team_id));
	json_object_object_add(op->answer, "team_info", team);
	keys = json_object_new_array();
	json_object_object_add(op->answer, "keys", keys);
	/* a plain member sees the keys /key/info would show them: their own */
	rc = kw_litellm_owned_views(req, txn, 't', op->team_id, keys, kw_config.info_max_keys,
	    &truncated);
	json_object_object_add(op->answer, "keys_truncated", json_object_new_boolean(truncated));
	return rc;
}

/*
 * GET /team/info: a team and its keys.  404 before 403; proxy admins,
 * admin viewers and the team's members may see it; a plain member sees
 * only the keys they may read.
 */
enum kw_err
kw_op_team_info(struct kw_req *req, struct kw_resp *resp)
{
	struct team_op op = { .req = req, .team_id = kw_json_str(req->query, "team_id") };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, team_info_body, &op));
}

/* /team/update's transaction: 404, 403, then the settings sent; answer: the team. */
static enum kw_err
team_update_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct team_op *op = baton;
	struct kw_req *req = op->req;
	json_object *team, *before;
	enum kw_err rc;

	kw_answer_reset(&op->answer);
	if ((rc = get_team(req, txn, op->team_id, KW_RMW, "team_id", &team)) != KW_OK)
		return rc;
	if (kw_json_has(req->body, "members_with_roles") && !kw_json_field_is(team,
	    "members_with_roles", json_object_object_get(req->body, "members_with_roles"))) {
		/* sent back as /team/info showed them, the members change nothing and pass */
		kw_error_set(&req->err, KW_EINVAL, "members_with_roles",
		    "use /team/member_add and /team/member_delete");
		rc = KW_EINVAL;
	} else {
		rc = may_change_settings(req, txn, team);
	}
	if (rc != KW_OK) {
		json_object_put(team);
		return rc;
	}
	kw_budget_settle(team, req->now);
	before = kw_json_copy(team);
	apply_team_settings(req, team, req->body);
	kw_json_set_time(team, "updated_at", req->now);
	if ((rc = kw_rec_put(st, txn, KW_DB_TEAMS, op->team_id, team, 0)) == KW_OK &&
	    (rc = kw_audit_record(req, txn, "updated", KW_TABLE_TEAMS, op->team_id, before, team)) == KW_OK) {
		op->answer = team;
		team = NULL;
	}
	json_object_put(before);
	json_object_put(team);
	return rc;
}

/*
 * POST /team/update: proxy admins and the team's admins change the
 * settings sent; members change through /team/member_add and
 * /team/member_delete only.
 */
enum kw_err
kw_op_team_update(struct kw_req *req, struct kw_resp *resp)
{
	struct team_op op = { .req = req, .team_id = kw_json_str(req->body, "team_id") };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK || (rc = kw_auth_can_write(req)) != KW_OK)
		return rc;
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, team_update_body, &op));
}

/* Takes team_id out of user_id's teams, when that user exists and lists it. */
static enum kw_err
drop_team_of_user(struct kw_req *req, DB_TXN *txn, const char *user_id, const char *team_id)
{
	json_object *user, *before, *teams;
	enum kw_err rc = kw_rec_get(req->store, txn, KW_DB_USERS, user_id, KW_RMW, &user);

	if (rc != KW_OK)
		return rc == KW_ENOTFOUND ? KW_OK : rc;
	teams = json_object_object_get(user, "teams");
	if (!kw_json_list_has(teams, team_id)) {
		json_object_put(user);
		return KW_OK;
	}
	kw_budget_settle(user, req->now);
	before = kw_json_copy(user);
	kw_json_list_drop(user, "teams", NULL, team_id);
	kw_json_set_time(user, "updated_at", req->now);
	if ((rc = kw_rec_put(req->store, txn, KW_DB_USERS, user_id, user, 0)) == KW_OK)
		rc = kw_audit_record(req, txn, "updated", KW_TABLE_USERS, user_id, before, user);
	json_object_put(before);
	json_object_put(user);
	return rc;
}

/*
 * /team/delete's transaction: every team is read first (all or nothing),
 * then each loses its keys, its members' memberships and its record.
 */
static enum kw_err
team_delete_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct team_op *op = baton;
	struct kw_req *req = op->req;
	json_object *ids = json_object_object_get(req->body, "team_ids"), *teams, *deleted;
	int64_t keys = 0;
	enum kw_err rc = KW_OK;

	kw_answer_reset(&op->answer);
	/* every team first: all or nothing, and 404 names the first one missing */
	teams = json_object_new_array();
	deleted = json_object_new_array();
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(ids); i++) {
		const char *team_id = json_object_get_string(json_object_array_get_idx(ids, i));
		char field[KW_FIELD_MAX];
		json_object *team;

		if (kw_json_list_has(deleted, team_id))
			continue;
		snprintf(field, sizeof(field), "team_ids[%zu]", i);
		if ((rc = get_team(req, txn, team_id, KW_RMW, field, &team)) == KW_OK) {
			json_object_array_add(teams, team);
			json_object_array_add(deleted, json_object_new_string(team_id));
		}
	}
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(teams); i++) {
		json_object *team = json_object_array_get_idx(teams, i), *members;
		const char *team_id = kw_json_str(team, "team_id");

		rc = kw_keys_delete_owned(req, txn, 't', team_id, NULL, &keys);
		members = json_object_object_get(team, "members_with_roles");
		for (size_t j = 0; rc == KW_OK && members != NULL &&
		    j < json_object_array_length(members); j++) {
			const char *user_id = kw_json_str(json_object_array_get_idx(members, j), "user_id");

			if (user_id != NULL)
				rc = drop_team_of_user(req, txn, user_id, team_id);
		}
		if (rc == KW_OK && (rc = kw_rec_del(st, txn, KW_DB_TEAMS, team_id)) == KW_OK)
			rc = kw_audit_record(req, txn, "deleted", KW_TABLE_TEAMS, team_id, team, NULL);
	}
	json_object_put(teams);
	if (rc != KW_OK) {
		json_object_put(deleted);
		return rc;
	}
	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "deleted_teams", deleted);
	json_object_object_add(op->answer, "deleted_keys", json_object_new_int64(keys));
	return KW_OK;
}

/*
 * POST /team/delete: proxy admins delete teams, every key they own and
 * their members' memberships, in one transaction: all or nothing, and
 * the keys stop working at once.
 */
enum kw_err
kw_op_team_delete(struct kw_req *req, struct kw_resp *resp)
{
	struct team_op op = { .req = req };
	enum kw_err rc;

	if ((rc = kw_auth_admin(req)) != KW_OK)
		return rc;
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, team_delete_body, &op));
}

/* /team/member_add's transaction: 404, 403, the members; answer: the team and updated_users. */
static enum kw_err
member_add_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct team_op *op = baton;
	struct kw_req *req = op->req;
	json_object *team, *before, *member = json_object_object_get(req->body, "member");
	json_object *budget = NULL, *users;
	enum kw_err rc;

	kw_answer_reset(&op->answer);
	if ((rc = get_team(req, txn, op->team_id, KW_RMW, "team_id", &team)) != KW_OK)
		return rc;
	if ((rc = may_manage(req, team)) != KW_OK) {
		json_object_put(team);
		return rc;
	}
	json_object_object_get_ex(req->body, "max_budget_in_team", &budget);
	kw_budget_settle(team, req->now);
	before = kw_json_copy(team);
	users = json_object_new_array();
	if (json_object_is_type(member, json_type_array)) {
		for (size_t i = 0; rc == KW_OK && i < json_object_array_length(member); i++) {
			char field[KW_FIELD_MAX];

			snprintf(field, sizeof(field), "member[%zu]", i);
			rc = add_member(req, txn, team, json_object_array_get_idx(member, i), field,
			    budget, users);
		}
	} else {
		rc = add_member(req, txn, team, member, "member", budget, users);
	}
	if (rc == KW_OK)	/* past the cap the transaction aborts: no user it made is kept */
		rc = check_team_size(req, team);
	if (rc == KW_OK && json_object_array_length(users) > 0) {	/* an empty list changes nothing */
		kw_json_set_time(team, "updated_at", req->now);
		if ((rc = kw_rec_put(st, txn, KW_DB_TEAMS, op->team_id, team, 0)) == KW_OK)
			rc = kw_audit_record(req, txn, "updated", KW_TABLE_TEAMS, op->team_id, before, team);
	}
	if (rc == KW_OK) {
		json_object_object_add(team, "updated_users", users);
		op->answer = team;
	} else {
		json_object_put(users);
		json_object_put(team);
	}
	json_object_put(before);
	return rc;
}

/*
 * POST /team/member_add: proxy admins and the team's admins add one
 * member or a list of them (role user unless given); unknown users are
 * created.  The answer is the team and the user records it changed.
 */
enum kw_err
kw_op_team_member_add(struct kw_req *req, struct kw_resp *resp)
{
	struct team_op op = { .req = req, .team_id = kw_json_str(req->body, "team_id") };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK || (rc = kw_auth_can_write(req)) != KW_OK)
		return rc;
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, member_add_body, &op));
}

/*
 * The user_id of the member of team named by user_id, else by user_email
 * (the email on the member entry, else the user who has it); NULL when
 * no member matches.  The result is borrowed from team or request-owned.
 */
static enum kw_err
find_member(struct kw_req *req, DB_TXN *txn, json_object *team, const char *user_id,
    const char *email, const char **found)
{
	json_object *members = members_of(team);
	enum kw_err rc;

	*found = NULL;
	if (user_id == NULL) {
		for (size_t i = 0; i < json_object_array_length(members) && *found == NULL; i++) {
			json_object *m = json_object_array_get_idx(members, i);
			const char *e = kw_json_str(m, "user_email");

			if (e != NULL && strcasecmp(e, email) == 0)
				*found = kw_json_str(m, "user_id");
		}
		if (*found != NULL)
			return KW_OK;
		rc = kw_user_id_by_email(req, txn, email, &user_id);
		if (rc != KW_OK)
			return rc == KW_ENOTFOUND ? KW_OK : rc;
	}
	if (kw_team_role_of(team, user_id) != NULL)
		*found = user_id;
	return KW_OK;
}

/* /team/member_delete's transaction: 404, 403, the member on both sides and their team keys. */
static enum kw_err
member_delete_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct team_op *op = baton;
	struct kw_req *req = op->req;
	const char *by_id = kw_json_str(req->body, "user_id");
	json_object *team, *before = NULL;
	const char *user_id;
	int64_t keys = 0;
	enum kw_err rc;

	kw_answer_reset(&op->answer);
	if ((rc = get_team(req, txn, op->team_id, KW_RMW, "team_id", &team)) != KW_OK)
		return rc;
	if ((rc = may_manage(req, team)) != KW_OK ||
	    (rc = find_member(req, txn, team, by_id, kw_json_str(req->body, "user_email"),
	    &user_id)) != KW_OK)
		goto done;
	if (user_id == NULL) {
		kw_error_set(&req->err, KW_ENOTFOUND, by_id != NULL ? "user_id" : "user_email",
		    "this user is not a member of the team");
		rc = KW_ENOTFOUND;
		goto done;
	}
	/* user_id may point into team's members: keep the string while they change */
	user_id = kw_arena_strndup(req->arena, user_id, strlen(user_id));
	if (user_id == NULL) {
		rc = KW_ENOMEM;
		goto done;
	}
	kw_budget_settle(team, req->now);
	before = kw_json_copy(team);
	kw_json_list_drop(team, "members_with_roles", "user_id", user_id);
	kw_json_set_time(team, "updated_at", req->now);
	if ((rc = kw_rec_put(st, txn, KW_DB_TEAMS, op->team_id, team, 0)) == KW_OK &&
	    (rc = kw_audit_record(req, txn, "updated", KW_TABLE_TEAMS, op->team_id, before, team)) == KW_OK &&
	    (rc = drop_team_of_user(req, txn, user_id, op->team_id)) == KW_OK)
		rc = kw_keys_delete_owned(req, txn, 't', op->team_id, user_id, &keys);
	if (rc == KW_OK) {
		op->answer = team;
		team = NULL;
	}
done:
	json_object_put(before);
	json_object_put(team);
	return rc;
}

/*
 * POST /team/member_delete: proxy admins and the team's admins remove a
 * member, named by user_id or user_email, from both sides, and delete
 * that user's keys in the team.
 */
enum kw_err
kw_op_team_member_delete(struct kw_req *req, struct kw_resp *resp)
{
	struct team_op op = { .req = req, .team_id = kw_json_str(req->body, "team_id") };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK || (rc = kw_auth_can_write(req)) != KW_OK)
		return rc;
	if (kw_json_str(req->body, "user_id") == NULL && kw_json_str(req->body, "user_email") == NULL) {
		kw_error_set(&req->err, KW_EINVAL, "user_id", "send user_id or user_email");
		return KW_EINVAL;
	}
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, member_delete_body, &op));
}

/* A team listing: its filters and the answer being gathered. */
struct team_listing {
	struct kw_req *req;
	const char *user_id, *org_id;	/* filters; NULL: any */
	json_object *teams;		/* owned answer */
};

/* Appends rec (borrowed; settled for display) to the listing when it passes the filters. */
static int
list_one(const char *id, json_object *rec, void *baton)
{
	struct team_listing *l = baton;
	const char *org = kw_json_str(rec, "organization_id");

	(void)id;
	if (l->org_id != NULL && (org == NULL || strcmp(org, l->org_id) != 0))
		return 0;
	if (l->user_id != NULL && kw_team_role_of(rec, l->user_id) == NULL)
		return 0;
	kw_budget_settle(rec, l->req->now);
	json_object_array_add(l->teams, json_object_get(rec));
	return 0;
}

/* /team/list's transaction: a scan of the teams into a fresh l->teams. */
static enum kw_err
team_list_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct team_listing *l = baton;

	json_object_put(l->teams);
	l->teams = json_object_new_array();
	return kw_rec_each(st, txn, KW_DB_TEAMS, list_one, l);
}

/*
 * GET /team/list: proxy admins and admin viewers see every team; others
 * the teams they are a member of, and may not ask for another user's.
 * ?user_id= and ?organization_id= filter.
 */
enum kw_err
kw_op_team_list(struct kw_req *req, struct kw_resp *resp)
{
	struct team_listing l = {
		.req = req,
		.user_id = kw_json_str(req->query, "user_id"),
		.org_id = kw_json_str(req->query, "organization_id"),
	};
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	if (!kw_auth_reads_all(req->caller)) {
		if (l.user_id != NULL && strcmp(l.user_id, req->caller->user_id) != 0) {
			kw_error_set(&req->err, KW_EFORBIDDEN, "user_id",
			    "you may only list your own teams");
			return KW_EFORBIDDEN;
		}
		l.user_id = req->caller->user_id;	/* "" for a key without a user: no team */
	}
	if ((rc = kw_store_txn(req->store, team_list_body, &l)) != KW_OK) {
		json_object_put(l.teams);
		return rc;
	}
	kw_resp_json(resp, 200, l.teams);
	return KW_OK;
}
