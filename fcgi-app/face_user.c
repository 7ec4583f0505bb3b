/* face_user.c: LiteLLM's /user/... operations, and the record ids and key clean-up the team operations share. */
#include <stdio.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/* given, or a new UUID v4 written into buf when given is NULL (a record's id). */
const char *
kw_id_or_new(const char *given, char buf[37])
{
	if (given != NULL)
		return given;
	kw_uuid4(buf);
	return buf;
}

/* Appends token to the array baton. */
static int
collect_token(const char *token, void *baton)
{
	json_object_array_add(baton, json_object_new_string(token));
	return 0;
}

/*
 * True when key is one of only_user's: it is theirs, or a service-account
 * key (no user) they made.  A service-account key lasts as long as its
 * maker's place in the team: the team keeps no key that a member who has
 * left it could still be holding.
 */
static int
key_of_user(json_object *key, const char *only_user)
{
	const char *owner = kw_json_str(key, "user_id"), *maker = kw_json_str(key, "created_by");

	if (owner != NULL)
		return strcmp(owner, only_user) == 0;
	return maker != NULL && strcmp(maker, only_user) == 0;
}

/*
 * Deletes the keys of user (kind 'u') or team ('t') id, only only_user's
 * (key_of_user) when it is not NULL, each with its audit entry, and adds
 * their number to *deleted.  The tokens are gathered first: the owner
 * index is not changed under its own cursor.
 */
enum kw_err
kw_keys_delete_owned(struct kw_req *req, DB_TXN *txn, char kind, const char *id,
    const char *only_user, int64_t *deleted)
{
	json_object *tokens = json_object_new_array();
	enum kw_err rc = kw_keys_owned_by(req->store, txn, kind, id, collect_token, tokens);

	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(tokens); i++) {
		const char *token = json_object_get_string(json_object_array_get_idx(tokens, i));
		json_object *key;

		if ((rc = kw_rec_get(req->store, txn, KW_DB_KEYS, token, KW_RMW, &key)) != KW_OK) {
			if (rc == KW_ENOTFOUND)
				rc = KW_OK;	/* an index row without its record: nothing to delete */
			continue;
		}
		if (only_user == NULL || key_of_user(key, only_user)) {
			if ((rc = kw_keys_del(req->store, txn, key)) == KW_OK &&
			    (rc = kw_audit_record(req, txn, "deleted", KW_TABLE_KEYS, token, key, NULL)) == KW_OK)
				(*deleted)++;
		}
		json_object_put(key);
	}
	json_object_put(tokens);
	return rc;
}

/* --- the /user/... operations --------------------------------------------- */

/* The settings of a user that a request may set; the rest are ids, lists and one-shot options. */
static const char *const user_settings[] = {
	"user_email", "user_alias", "user_role", "organization_id", "models", "max_budget",
	"soft_budget", "spend", "budget_duration", "tpm_limit", "rpm_limit",
	"max_parallel_requests", "metadata", "blocked",
};

/*
 * Reads, for writing, the teams a new user joins (each must exist:
 * 400 naming teams[i]) into *teams (owned array of records, duplicates
 * dropped).
 */
static enum kw_err
read_new_user_teams(struct kw_req *req, DB_TXN *txn, json_object *ids, json_object **teams)
{
	enum kw_err rc = KW_OK;

	*teams = json_object_new_array();
	for (size_t i = 0; ids != NULL && i < json_object_array_length(ids) && rc == KW_OK; i++) {
		const char *team_id = json_object_get_string(json_object_array_get_idx(ids, i));
		json_object *team;
		int seen = 0;

		for (size_t j = 0; j < i && !seen; j++)
			seen = strcmp(team_id, json_object_get_string(json_object_array_get_idx(ids, j))) == 0;
		if (seen)
			continue;
		rc = kw_rec_get(req->store, txn, KW_DB_TEAMS, team_id, KW_RMW, &team);
		if (rc == KW_ENOTFOUND) {
			char field[KW_FIELD_MAX];

			snprintf(field, sizeof(field), "teams[%zu]", i);
			kw_error_set(&req->err, KW_EINVAL, field, "no team has this team_id");
			rc = KW_EINVAL;
		} else if (rc == KW_OK) {
			json_object_array_add(*teams, team);
		}
	}
	return rc;
}

/*
 * KW_OK when team_id (NULL: none) names a team; 400 naming team_id when
 * it does not.
 */
static enum kw_err
new_user_team_exists(struct kw_req *req, DB_TXN *txn, const char *team_id)
{
	json_object *team;
	enum kw_err rc;

	if (team_id == NULL)
		return KW_OK;
	if ((rc = kw_rec_get(req->store, txn, KW_DB_TEAMS, team_id, 0, &team)) == KW_ENOTFOUND) {
		kw_error_set(&req->err, KW_EINVAL, "team_id", "no team has this team_id");
		return KW_EINVAL;
	}
	json_object_put(team);
	return rc;
}

/*
 * /user/new's transaction: the user, its teams' member lists, its first
 * key, and their audit entries; answer: the user plus the key's fields.
 * team_id joins the user to that team too and puts the first key in it,
 * as internal_user_endpoints.py new_user does (_add_user_to_team, then
 * generate_key_helper_fn with the request's team_id and aliases).
 */
static enum kw_err
user_new_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	json_object *body = req->body, *user, *teams = NULL, *ids = NULL, *key = NULL, *v;
	const char *team_id = kw_json_str(body, "team_id");
	enum kw_err rc;

	if ((rc = kw_members_absent(req, txn, KW_MEMBERS_USERS, op->id)) != KW_OK ||
	    (rc = kw_members_email_free(req, txn, kw_json_str(body, "user_email"), NULL,
	    "user_email")) != KW_OK || (rc = new_user_team_exists(req, txn, team_id)) != KW_OK)
		return rc;
	json_object_object_get_ex(body, "teams", &ids);
	ids = ids != NULL ? kw_json_copy(ids) : json_object_new_array();
	if (team_id != NULL && !kw_json_list_has(ids, team_id))
		json_object_array_add(ids, json_object_new_string(team_id));
	rc = read_new_user_teams(req, txn, ids, &teams);
	json_object_put(ids);
	if (rc != KW_OK) {
		json_object_put(teams);
		return rc;
	}
	user = kw_members_user_new(req, op->id, NULL);
	kw_members_apply(req, user, body, user_settings,
	    sizeof(user_settings) / sizeof(user_settings[0]), NULL);
	for (size_t i = 0; i < json_object_array_length(teams); i++)
		json_object_array_add(json_object_object_get(user, "teams"), json_object_new_string(
		    kw_json_str(json_object_array_get_idx(teams, i), "team_id")));
	rc = kw_members_write(req, txn, KW_MEMBERS_USERS, op->id, NULL, user);
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(teams); i++) {
		json_object *team = json_object_array_get_idx(teams, i);

		rc = kw_members_join(req, txn, KW_MEMBERS_TEAMS, kw_json_str(team, "team_id"), team, user);
	}
	json_object_put(teams);

	if (rc == KW_OK && (!json_object_object_get_ex(body, "auto_create_key", &v) || v == NULL ||
	    json_object_get_boolean(v))) {
		static const char *const from_body[] = {
			"key_alias", "duration", "models", "aliases", "team_id",
		};
		json_object *settings = json_object_new_object();

		json_object_object_add(settings, "user_id", json_object_new_string(op->id));
		for (size_t i = 0; i < sizeof(from_body) / sizeof(from_body[0]); i++)
			if (json_object_object_get_ex(body, from_body[i], &v))
				json_object_object_add(settings, from_body[i], json_object_get(v));
		rc = kw_litellm_key_create(req, txn, settings, &key);
		json_object_put(settings);
	}
	if (rc == KW_OK) {
		static const char *const from_key[] = { "key", "token", "key_alias", "expires" };

		op->answer = user;
		user = NULL;
		for (size_t i = 0; key != NULL && i < sizeof(from_key) / sizeof(from_key[0]); i++)
			json_object_object_add(op->answer, from_key[i],
			    json_object_get(json_object_object_get(key, from_key[i])));
	}
	json_object_put(user);
	json_object_put(key);
	return rc;
}

/*
 * POST /user/new: a user (proxy admins only), member of the teams it
 * names, and unless auto_create_key is false its first key, whose
 * plaintext is in this answer only.
 */
KW_FACE_OP(kw_op_user_new, .who = KW_OP_ADMIN, .body = user_new_body, .id_field = "user_id",
    .new_id = 1)

/*
 * /user/info's transaction: 400 for a caller without a user who names
 * none, 404, then 403, then the user, its keys (at
 * most KEYWARDEN_INFO_MAX_KEYS; keys_truncated says when there are more)
 * and its teams.
 */
static enum kw_err
user_info_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	json_object *user, *teams, *ids, *memberships;
	enum kw_err rc;

	if (op->id == NULL) {	/* the caller's own */
		if (req->caller->user_id[0] == '\0') {
			kw_error_set(&req->err, KW_EINVAL, "user_id", req->caller->is_master ?
			    "the master key belongs to no user: pass ?user_id=" :
			    "this key belongs to no user: pass ?user_id=");
			return KW_EINVAL;
		}
		op->id = req->caller->user_id;
	}
	if ((rc = kw_members_get(req, txn, KW_MEMBERS_USERS, op->id, 0, "user_id", &user)) != KW_OK)
		return rc;
	if (!kw_auth_reads_all(req->caller) && strcmp(op->id, req->caller->user_id) != 0) {
		json_object_put(user);
		kw_error_set(&req->err, KW_EFORBIDDEN, "user_id", "you may only see yourself");
		return KW_EFORBIDDEN;
	}
	kw_budget_settle(user, req->now);
	rc = kw_litellm_owner_info(req, txn, 'u', op->id, user, &op->answer);
	teams = json_object_new_array();
	json_object_object_add(op->answer, "teams", teams);
	/* each team's membership and its budget, as user_info's team_memberships */
	memberships = json_object_new_array();
	json_object_object_add(op->answer, "team_memberships", memberships);
	ids = json_object_object_get(user, "teams");
	for (size_t i = 0; rc == KW_OK && ids != NULL && i < json_object_array_length(ids); i++) {
		const char *team_id = json_object_get_string(json_object_array_get_idx(ids, i));
		json_object *team, *m;

		rc = kw_rec_get(req->store, txn, KW_DB_TEAMS, team_id, 0, &team);
		if (rc == KW_ENOTFOUND) {
			rc = KW_OK;	/* a team deleted under a stale list: nothing to show */
		} else if (rc == KW_OK) {
			kw_budget_settle(team, req->now);
			json_object_array_add(teams, team);
			if ((rc = kw_members_membership(req, txn, KW_MEMBERS_TEAMS, team, op->id,
			    &m)) == KW_OK && m != NULL)
				json_object_array_add(memberships, m);
		}
	}
	return rc;
}

/*
 * GET /user/info: the user of ?user_id= (the caller's own when absent),
 * their keys and teams.  404 before 403; others than admins and admin
 * viewers see only themselves.
 */
KW_FACE_OP(kw_op_user_info, .who = KW_OP_READER, .body = user_info_body, .id_field = "user_id")

/*
 * /user/update's transaction: 400 for teams or no user named, the user by
 * id (made when unknown, as internal_user_endpoints.py user_update upserts
 * by user_id) or by email (404 when none has it), then the settings sent.
 */
static enum kw_err
user_update_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	const char *user_id = op->id, *email = kw_json_str(req->body, "user_email");
	json_object *user, *before;
	int created = 0;
	enum kw_err rc;

	if (user_id == NULL && email == NULL) {
		kw_error_set(&req->err, KW_EINVAL, "user_id", "send user_id or user_email");
		return KW_EINVAL;
	}
	if (user_id == NULL) {
		rc = kw_members_user_by_email(req, txn, email, &user_id);
		if (rc == KW_ENOTFOUND) {
			kw_error_set(&req->err, KW_ENOTFOUND, "user_email", "no user has this user_email");
			return KW_ENOTFOUND;
		}
		if (rc != KW_OK)
			return rc;
	}
	if (op->id != NULL &&
	    (rc = kw_rec_get(req->store, txn, KW_DB_USERS, user_id, KW_RMW, &user)) == KW_ENOTFOUND) {
		/* an unknown user_id is made, as user_update's upsert does */
		user = kw_members_user_new(req, user_id, NULL);
		created = 1;
	} else if (op->id != NULL && rc != KW_OK) {
		return rc;
	} else if (op->id == NULL && (rc = kw_members_get(req, txn, KW_MEMBERS_USERS, user_id, KW_RMW,
	    "user_id", &user)) != KW_OK) {
		return rc;
	}
	op->answer = user;	/* kw_face_op drops it on an error */
	if (kw_json_has(req->body, "teams") &&
	    !kw_json_field_is(user, "teams", json_object_object_get(req->body, "teams"))) {
		/* sent back as /user/info showed it, it changes nothing and passes */
		kw_error_set(&req->err, KW_EINVAL, "teams",
		    "teams changes through /team/member_add and /team/member_delete");
		return KW_EINVAL;
	}
	if (op->id != NULL &&
	    (rc = kw_members_email_free(req, txn, email, user_id, "user_email")) != KW_OK)
		return rc;
	kw_budget_settle(user, req->now);
	before = created ? NULL : kw_json_copy(user);
	kw_members_apply(req, user, req->body, user_settings,
	    sizeof(user_settings) / sizeof(user_settings[0]), op->id == NULL ? "user_email" : NULL);
	rc = created ? kw_members_write(req, txn, KW_MEMBERS_USERS, user_id, NULL, user) :
	    kw_members_update(req, txn, KW_MEMBERS_USERS, user_id, before, user);
	json_object_put(before);
	return rc;
}

/*
 * POST /user/update: proxy admins change the user named by user_id (a
 * new user when none has it), else by user_email; only the fields sent
 * change.  Team membership changes
 * through /team/member_add and /team/member_delete only.
 */
KW_FACE_OP(kw_op_user_update, .who = KW_OP_ADMIN, .body = user_update_body, .id_field = "user_id")

/* What goes with a user being deleted: its keys, its team memberships with its keys in them, its organization's. */
static enum kw_err
user_drop(struct kw_req *req, DB_TXN *txn, const char *user_id, json_object *user,
    int64_t *keys)
{
	json_object *teams = json_object_object_get(user, "teams");
	enum kw_err rc = kw_keys_delete_owned(req, txn, 'u', user_id, NULL, keys);

	for (size_t j = 0; rc == KW_OK && teams != NULL && j < json_object_array_length(teams); j++) {
		const char *team_id = json_object_get_string(json_object_array_get_idx(teams, j));

		if ((rc = kw_members_leave(req, txn, KW_MEMBERS_TEAMS, team_id, user_id)) == KW_OK)
			rc = kw_keys_delete_owned(req, txn, 't', team_id, user_id, keys);
	}
	return rc != KW_OK ? rc : kw_members_forget_user(req, txn, KW_MEMBERS_ORGS, user_id);
}

/*
 * /user/delete's transaction: every user is read first (all or nothing),
 * then each loses its keys, its team and organization memberships and its
 * record.
 */
static enum kw_err
user_delete_body(struct kw_req *req, DB_TXN *txn, struct kw_op *op)
{
	return kw_members_delete_listed(req, txn, op, KW_MEMBERS_USERS, "user_ids", user_drop);
}

/*
 * POST /user/delete: proxy admins delete users, every key they own and
 * their team memberships, all in one transaction: all or nothing.
 */
KW_FACE_OP(kw_op_user_delete, .who = KW_OP_ADMIN, .body = user_delete_body)
