/* face_litellm.c: the LiteLLM key operations (/key/...), translated onto the key model in keys.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/*
 * Request fields that steer an operation but are not stored in the record:
 * the secret itself, durations turned into times, and one-shot options.
 */
static const char *const not_stored[] = {
	"key", "duration", "send_invite_email", "new_key", "grace_period",
};

static int
is_stored_field(const char *name)
{
	for (size_t i = 0; i < sizeof(not_stored) / sizeof(not_stored[0]); i++)
		if (strcmp(name, not_stored[i]) == 0)
			return 0;
	return 1;
}

/* Sets name to value (owned) unless rec already holds a non-null value. */
static void
default_field(json_object *rec, const char *name, json_object *value)
{
	json_object *v;

	if (json_object_object_get_ex(rec, name, &v) && v != NULL)
		json_object_put(value);
	else
		json_object_object_add(rec, name, value);
}

/* The record as callers see it (owned): a copy with any due budget reset applied. */
json_object *
kw_litellm_key_view(struct kw_req *req, json_object *rec)
{
	json_object *view = kw_json_copy(rec);

	if (view != NULL)
		kw_budget_settle(view, req->now);
	return view;
}

/*
 * The view of rec for a caller done with rec itself: rec, settled in
 * place, with one more reference for the answer that takes it (no copy).
 */
static json_object *
key_view_of_own(struct kw_req *req, json_object *rec)
{
	kw_budget_settle(rec, req->now);
	return json_object_get(rec);
}

/* The key views being gathered from an owner index, and the first store error. */
struct owned_views {
	struct kw_req *req;
	DB_TXN *txn;
	json_object *views;	/* borrowed: the caller's array */
	size_t max;		/* views to gather at most */
	int truncated;		/* a key the caller may read was left out */
	enum kw_err rc;
};

/*
 * Appends the view of key token when the caller may read it; stops on a
 * store error, and at the first readable key past max.
 */
static int
add_owned_view(const char *token, void *baton)
{
	struct owned_views *o = baton;
	json_object *key;

	o->rc = kw_rec_get(o->req->store, o->txn, KW_DB_KEYS, token, 0, &key);
	if (o->rc == KW_ENOTFOUND) {
		o->rc = KW_OK;	/* an index row without its record: nothing to show */
		return 0;
	}
	if (o->rc != KW_OK)
		return 1;
	o->rc = kw_auth_key_access(o->req, o->txn, key, 0);
	if (o->rc == KW_OK && json_object_array_length(o->views) >= o->max)
		o->truncated = 1;
	else if (o->rc == KW_OK)
		json_object_array_add(o->views, key_view_of_own(o->req, key));
	else if (o->rc == KW_EFORBIDDEN)
		o->rc = KW_OK;	/* shown only what /key/info would show this caller */
	json_object_put(key);
	return o->rc != KW_OK || o->truncated;
}

/*
 * The /user/info (kind 'u') or /team/info ('t') answer for owner id,
 * into *answer (owned, even on error): {"user_id" or "team_id": id,
 * "user_info" or "team_info": rec (taken), "keys": the views of the keys
 * it owns that the caller may read, as /key/info would show them, at most
 * KEYWARDEN_INFO_MAX_KEYS in token order, "keys_truncated": whether the
 * caller may read more (they are for /key/list's pages)}.
 */
enum kw_err
kw_litellm_owner_info(struct kw_req *req, DB_TXN *txn, char kind, const char *id,
    json_object *rec, json_object **answer)
{
	struct owned_views o = { .req = req, .txn = txn, .views = json_object_new_array(),
		.max = kw_config.info_max_keys };
	enum kw_err rc;

	*answer = json_object_new_object();
	json_object_object_add(*answer, kind == 't' ? "team_id" : "user_id", json_object_new_string(id));
	json_object_object_add(*answer, kind == 't' ? "team_info" : "user_info", rec);
	json_object_object_add(*answer, "keys", o.views);
	rc = kw_keys_owned_by(req->store, txn, kind, id, add_owned_view, &o);
	json_object_object_add(*answer, "keys_truncated", json_object_new_boolean(o.truncated));
	return rc != KW_OK ? rc : o.rc;
}

/*
 * Copies the stored settings of body (borrowed) into rec and recomputes
 * the times they drive: duration sets expires from now (null: never),
 * budget_duration the next budget reset, rotation_interval the next
 * rotation.  Only the fields present in body change.
 */
static void
apply_settings(struct kw_req *req, json_object *rec, json_object *body)
{
	const char *s;
	time_t t;

	json_object_object_foreach(body, field, value) {
		if (is_stored_field(field))
			json_object_object_add(rec, field, json_object_get(value));
	}
	if (kw_json_has(body, "duration") || kw_json_has(body, "expires")) {
		/* the schema checked both; check_settings refused both at once */
		t = 0;
		if ((s = kw_json_str(body, "duration")) != NULL)
			kw_time_parse_duration(s, req->now, &t);
		else if ((s = kw_json_str(body, "expires")) != NULL)
			kw_time_parse(s, &t);	/* stored as written: RFC 3339 UTC */
		kw_json_set_time(rec, "expires", t);
	}
	if (kw_json_has(body, "budget_duration")) {
		s = kw_json_str(body, "budget_duration");
		kw_json_set_time(rec, "budget_reset_at", s ? kw_time_budget_reset(s, req->now) : 0);
	}
	if (kw_json_has(body, "rotation_interval") || kw_json_has(body, "auto_rotate")) {
		s = kw_json_str(rec, "rotation_interval");
		t = 0;
		if (s != NULL && kw_json_bool(rec, "auto_rotate"))
			kw_time_parse_duration(s, req->now, &t);
		kw_json_set_time(rec, "key_rotation_at", t);
	}
}

/* Stamps rec as changed now by the caller (LiteLLM's updated_at and updated_by). */
static void
touch(struct kw_req *req, json_object *rec)
{
	const struct kw_caller *c = req->caller;

	kw_json_set_time(rec, "updated_at", req->now);
	json_object_object_add(rec, "updated_by", json_object_new_string(
	    c != NULL && c->user_id[0] != '\0' ? c->user_id : "default_user_id"));
}

/*
 * A team bounds its keys: the key's models must be among the team's and
 * its max_budget no higher than the team's.  An unknown team_id is 400.
 */
static enum kw_err
check_team_bounds(struct kw_req *req, DB_TXN *txn, json_object *rec)
{
	const char *team_id = kw_json_str(rec, "team_id");
	json_object *team, *models;
	double team_budget, budget;
	enum kw_err rc;

	if (team_id == NULL)
		return KW_OK;
	rc = kw_rec_get(req->store, txn, KW_DB_TEAMS, team_id, 0, &team);
	if (rc == KW_ENOTFOUND) {
		kw_error_set(&req->err, KW_EINVAL, "team_id", "no team has this team_id");
		return KW_EINVAL;
	}
	if (rc != KW_OK)
		return rc;
	if (json_object_object_get_ex(rec, "models", &models) && models != NULL) {
		for (size_t i = 0; i < json_object_array_length(models) && rc == KW_OK; i++) {
			const char *m = json_object_get_string(json_object_array_get_idx(models, i));

			if (strcmp(m, "all-team-models") != 0 && !kw_limits_models_allow(
			    json_object_object_get(team, "models"), NULL, m)) {
				kw_error_set(&req->err, KW_EFORBIDDEN, "models",
				    "model %s is not among the team's models", m);
				rc = KW_EFORBIDDEN;
			}
		}
	}
	team_budget = kw_json_num(team, "max_budget", NAN);
	budget = kw_json_num(rec, "max_budget", NAN);
	if (rc == KW_OK && !isnan(team_budget) && !isnan(budget) && budget > team_budget) {
		kw_error_set(&req->err, KW_EINVAL, "max_budget",
		    "max_budget %g is higher than the team's max_budget %g", budget, team_budget);
		rc = KW_EINVAL;
	}
	json_object_put(team);
	return rc;
}

/*
 * Who may own a key the caller creates or changes (rec; old its stored
 * record, NULL for a new key), as LiteLLM decides in
 * _is_allowed_to_make_key_request, _team_key_operation_team_member_check
 * and validate_key_team_change: admins anyone; others a personal key for
 * themselves only, and a team's key only as that team's admin, for a
 * member of the team.  A key leaves its team by a proxy admin only, so no
 * one slips a key out from under its team's limits.
 */
static enum kw_err
check_ownership(struct kw_req *req, DB_TXN *txn, json_object *rec, json_object *old)
{
	const struct kw_caller *c = req->caller;
	const char *user_id = kw_json_str(rec, "user_id"), *team_id = kw_json_str(rec, "team_id");
	const char *role;
	json_object *team = NULL;
	enum kw_err rc = KW_OK;

	if (kw_auth_is_admin(c))
		return KW_OK;
	if (old != NULL && !kw_json_same_str(old, rec, "user_id")) {
		/* update_key_fn: only a proxy admin gives a key to another user */
		kw_error_set(&req->err, KW_EFORBIDDEN, "user_id",
		    "only a proxy admin gives a key to another user");
		return KW_EFORBIDDEN;
	}
	if (team_id == NULL && kw_json_str(old, "team_id") != NULL) {
		kw_error_set(&req->err, KW_EFORBIDDEN, "team_id",
		    "only a proxy admin takes a key out of its team");
		return KW_EFORBIDDEN;
	}
	if (team_id == NULL) {
		if (user_id != NULL && strcmp(user_id, c->user_id) == 0)
			return KW_OK;
		kw_error_set(&req->err, KW_EFORBIDDEN, "user_id", "you may only make keys for yourself");
		return KW_EFORBIDDEN;
	}
	rc = kw_rec_get(req->store, txn, KW_DB_TEAMS, team_id, 0, &team);
	if (rc != KW_OK && rc != KW_ENOTFOUND)
		return rc;
	rc = KW_OK;
	role = kw_members_role(KW_MEMBERS_TEAMS, team, c->user_id);
	if (role == NULL || strcmp(role, "admin") != 0) {
		/* TeamMemberPermissionChecks: a member's default is /key/info and /key/health only */
		kw_error_set(&req->err, KW_EFORBIDDEN, "team_id",
		    "only the team's admins or a proxy admin manage the team's keys");
		rc = KW_EFORBIDDEN;
	} else if (user_id != NULL && strcmp(user_id, c->user_id) != 0 &&
	    kw_members_role(KW_MEMBERS_TEAMS, team, user_id) == NULL) {
		kw_error_set(&req->err, KW_EINVAL, "user_id", "this user is not a member of the team");
		rc = KW_EINVAL;
	}
	json_object_put(team);
	return rc;
}

/*
 * KW_OK when the caller may apply settings (a request body, borrowed) to
 * old (the stored key, NULL for a new one): each field by the policy
 * table at the caller's standing toward the key.  A new key's creator
 * stands above it (the bounds of its user and its team still hold on
 * it), but grants no capability and writes no spend.
 */
static enum kw_err
check_settings(struct kw_req *req, DB_TXN *txn, json_object *old, json_object *settings)
{
	enum kw_standing standing = KW_STANDING_ABOVE;
	enum kw_err rc;

	if (kw_json_has(settings, "duration") && kw_json_has(settings, "expires")) {
		kw_error_set(&req->err, KW_EINVAL, "expires",
		    "send duration or expires, not both: each sets when the key stops working");
		return KW_EINVAL;
	}
	if (kw_auth_is_admin(req->caller))
		standing = KW_STANDING_ADMIN;
	else if (old != NULL && (rc = kw_policy_key_standing(req, txn, old, &standing)) != KW_OK)
		return rc;
	return kw_policy_check(req, KW_POLICY_KEY, standing, old, settings);
}

/*
 * Aliases "prov:" and "venice:" name provisioned and Venice keys: no
 * LiteLLM request may take one (a key already holding it may keep it).
 */
static enum kw_err
check_alias(struct kw_req *req, json_object *rec, json_object *old)
{
	const char *alias = kw_json_str(rec, "key_alias"), *was = kw_json_str(old, "key_alias");

	if (alias == NULL || (was != NULL && strcmp(alias, was) == 0))
		return KW_OK;
	if (strncmp(alias, "prov:", 5) != 0 && strncmp(alias, "venice:", 7) != 0)
		return KW_OK;
	kw_error_set(&req->err, KW_EINVAL, "key_alias",
	    "aliases starting prov: and venice: are kept for provisioned and Venice keys");
	return KW_EINVAL;
}

/*
 * A key's metadata is free-form, so only its size is bounded: the
 * metadata of obj (a record or a request) is at most KW_METADATA_MAX
 * bytes as stored, 400 naming metadata past that.
 */
static enum kw_err
check_metadata(struct kw_req *req, json_object *obj)
{
	json_object *metadata = json_object_object_get(obj, "metadata");
	size_t n;

	if (metadata == NULL)
		return KW_OK;
	n = strlen(json_object_to_json_string_ext(metadata, JSON_C_TO_STRING_PLAIN));
	if (n <= KW_METADATA_MAX)
		return KW_OK;
	kw_error_set(&req->err, KW_EINVAL, "metadata", "%zu bytes as JSON; at most %d", n,
	    KW_METADATA_MAX);
	return KW_EINVAL;
}

/*
 * The user who would own rec, a new key, must have room for one more,
 * unless a proxy admin asks (LiteLLM has no such cap: an admin's keys are
 * the admin's decision).  Only a proxy admin gives an existing key to
 * another user (check_ownership), so a move needs no check here.
 */
static enum kw_err
check_room(struct kw_req *req, DB_TXN *txn, json_object *rec)
{
	if (kw_auth_is_admin(req->caller))
		return KW_OK;
	return kw_keys_room(req->store, txn, kw_json_str(rec, "user_id"), &req->err);
}

/* Writes the error for a key that is not there, naming field. */
static enum kw_err
key_not_found(struct kw_req *req, const char *field)
{
	kw_error_set(&req->err, KW_ENOTFOUND, field, "no such key");
	return KW_ENOTFOUND;
}

/* Reads the record of the key named by ref (plaintext or hash) into *rec (owned). */
static enum kw_err
find_key(struct kw_req *req, DB_TXN *txn, const char *ref, int flags, const char *field,
    json_object **rec)
{
	char token[KW_TOKEN_LEN + 1];
	enum kw_err rc;

	kw_keys_token_of(ref, token);
	rc = kw_rec_get(req->store, txn, KW_DB_KEYS, token, flags, rec);
	return rc == KW_ENOTFOUND ? key_not_found(req, field) : rc;
}

enum kw_err
kw_litellm_key_create(struct kw_req *req, DB_TXN *txn, json_object *settings,
    json_object **answer)
{
	char secret[KW_KEY_GENERATED_LEN + 1], token[KW_TOKEN_LEN + 1], name[32];
	const char *key = kw_json_str(settings, "key");
	json_object *rec = json_object_new_object();
	enum kw_err rc;

	*answer = NULL;
	if (key != NULL && strncmp(key, KW_TOKEN_PREFIX, strlen(KW_TOKEN_PREFIX)) == 0) {
		/* it would be judged a forged signed token and never authenticate */
		kw_error_set(&req->err, KW_EINVAL, "key", "keys starting %s are signed tokens, "
		    "issued by provisioning only", KW_TOKEN_PREFIX);
		return KW_EINVAL;
	}
	if (key == NULL) {
		kw_keys_new_secret(secret);
		key = secret;
	}
	kw_crypto_sha256_hex(key, strlen(key), token);
	kw_keys_key_name(key, name, sizeof(name));
	json_object_object_add(rec, "token", json_object_new_string(token));
	json_object_object_add(rec, "key_name", json_object_new_string(name));
	json_object_object_add(rec, "expires", NULL);
	apply_settings(req, rec, settings);
	touch(req, rec);
	default_field(rec, "spend", json_object_new_double(0));
	default_field(rec, "models", json_object_new_array());
	default_field(rec, "metadata", json_object_new_object());
	default_field(rec, "blocked", json_object_new_boolean(0));
	json_object_object_add(rec, "rotation_count", json_object_new_int(0));
	kw_json_set_time(rec, "created_at", req->now);
	json_object_object_add(rec, "created_by",
	    json_object_get(json_object_object_get(rec, "updated_by")));
	if (req->caller != NULL && !kw_auth_is_admin(req->caller) &&
	    kw_json_str(rec, "user_id") != NULL &&
	    strcmp(kw_json_str(rec, "user_id"), req->caller->user_id) != 0)
		/* a key made for someone else acts at most as its creator could */
		json_object_object_add(rec, "role_ceiling",
		    json_object_new_string(kw_auth_role_name(req->caller->role)));

	if ((rc = check_alias(req, rec, NULL)) == KW_OK &&
	    (rc = check_metadata(req, rec)) == KW_OK &&
	    (rc = check_team_bounds(req, txn, rec)) == KW_OK &&
	    (rc = kw_members_org_known(req, txn, kw_json_str(rec, "organization_id"))) == KW_OK &&
	    (rc = check_room(req, txn, rec)) == KW_OK &&
	    (rc = kw_keys_put(req->store, txn, NULL, rec, &req->err)) == KW_OK &&
	    (rc = kw_audit_record(req, txn, "created", KW_TABLE_KEYS, token, NULL, rec)) == KW_OK) {
		/* stored: now the answer may carry what the store must never hold */
		json_object_object_add(rec, "key", json_object_new_string(key));
		json_object_object_add(rec, "token_id", json_object_new_string(token));
		*answer = rec;
	} else {
		json_object_put(rec);
	}
	kw_crypto_wipe(secret, sizeof(secret));
	return rc;
}

/* One operation's transaction: its input and its answer, rebuilt on every attempt. */
struct key_op {
	struct kw_req *req;
	json_object *body;	/* borrowed */
	const char *ref;	/* the key as the caller named it */
	json_object *answer;	/* owned */
	const char *text;	/* the answer as text instead (arena-owned), when set */
	size_t text_len;
};

static enum kw_err
generate_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct key_op *op = baton;
	enum kw_err rc;

	(void)st;
	kw_answer_reset(&op->answer);
	/*
	 * A user_id with no user record makes none: generate_key_fn calls
	 * generate_key_helper_fn with table_name "key", which does not
	 * auto-create users, so such a key has no role (test_key_gen_bad_key).
	 */
	if ((rc = check_settings(op->req, txn, NULL, op->body)) != KW_OK ||
	    (rc = check_ownership(op->req, txn, op->body, NULL)) != KW_OK)
		return rc;
	return kw_litellm_key_create(op->req, txn, op->body, &op->answer);
}

/* Identifies the caller and refuses callers that may change nothing. */
static enum kw_err
writer(struct kw_req *req)
{
	enum kw_err rc = kw_auth_caller(req);

	return rc == KW_OK ? kw_auth_can_write(req) : rc;
}

/*
 * POST /key/generate: a new key from the validated body.  A non-admin's
 * key is theirs: user_id absent becomes the caller's own.
 */
enum kw_err
kw_op_key_generate(struct kw_req *req, struct kw_resp *resp)
{
	struct key_op op = { .req = req, .body = req->body };
	enum kw_err rc;

	if ((rc = writer(req)) != KW_OK)
		return rc;
	if (!kw_auth_is_admin(req->caller) && kw_json_str(req->body, "user_id") == NULL)
		json_object_object_add(req->body, "user_id",
		    json_object_new_string(req->caller->user_id));
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, generate_body, &op));
}

/*
 * POST /key/service-account/generate: a team's key that belongs to no
 * user; the alias is recorded as metadata.service_account_id.
 */
enum kw_err
kw_op_key_service_account_generate(struct kw_req *req, struct kw_resp *resp)
{
	struct key_op op = { .req = req, .body = req->body };
	json_object *metadata;
	enum kw_err rc;

	if ((rc = writer(req)) != KW_OK)
		return rc;
	if (kw_json_str(req->body, "team_id") == NULL) {
		kw_error_set(&req->err, KW_EINVAL, "team_id", "a service account key needs a team_id");
		return KW_EINVAL;
	}
	if (kw_json_str(req->body, "user_id") != NULL) {
		kw_error_set(&req->err, KW_EINVAL, "user_id",
		    "a service account key belongs to no user");
		return KW_EINVAL;
	}
	if (!json_object_object_get_ex(req->body, "metadata", &metadata) || metadata == NULL) {
		metadata = json_object_new_object();
		json_object_object_add(req->body, "metadata", metadata);
	}
	json_object_object_add(metadata, "service_account_id",
	    json_object_get(json_object_object_get(req->body, "key_alias")));
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, generate_body, &op));
}

/* True when key (a record) is a provisioned key: its secret is a signed expiry token. */
static int
is_provisioned(json_object *key)
{
	const char *alias = kw_json_str(key, "key_alias");

	return kw_json_bool(json_object_object_get(key, "metadata"), "provisioned") ||
	    (alias != NULL && strncmp(alias, "prov:", 5) == 0);
}

/*
 * A provisioned key's expiry is the one its signed token carries, which no
 * update can change: a duration sent for one is refused (400 naming it),
 * whoever sends it, since a record that said otherwise would only mislead.
 * Its metadata keeps "provisioned", so that no update makes it look like a
 * key that may be regenerated into a plain, lasting secret.
 */
static enum kw_err
check_provisioned(struct kw_req *req, json_object *old, json_object *body, json_object *rec)
{
	json_object *meta;

	if (!is_provisioned(old))
		return KW_OK;
	if (kw_json_has(body, "duration") || kw_json_has(body, "expires")) {
		const char *field = kw_json_has(body, "duration") ? "duration" : "expires";

		kw_error_set(&req->err, KW_EINVAL, field, "a provisioned key expires when its "
		    "signed token does: its %s cannot change (provision a new key)", field);
		return KW_EINVAL;
	}
	if (!json_object_object_get_ex(rec, "metadata", &meta) ||
	    !json_object_is_type(meta, json_type_object)) {
		meta = json_object_new_object();
		json_object_object_add(rec, "metadata", meta);
	}
	json_object_object_add(meta, "provisioned", json_object_new_boolean(1));
	return KW_OK;
}

/*
 * Applies an UpdateKeyRequest (op->body) to the key op->ref: access,
 * ownership and team bounds checked, indexes moved, audited.  The answer
 * is the new record with "key" echoing op->ref.
 */
static enum kw_err
update_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct key_op *op = baton;
	struct kw_req *req = op->req;
	json_object *old, *rec;
	enum kw_err rc;

	kw_answer_reset(&op->answer);
	if ((rc = find_key(req, txn, op->ref, KW_RMW, "key", &old)) != KW_OK)
		return rc;
	rec = kw_json_copy(old);
	kw_budget_settle(rec, req->now);
	apply_settings(req, rec, op->body);
	touch(req, rec);
	if ((rc = kw_auth_key_access(req, txn, old, 1)) == KW_OK &&
	    (rc = check_settings(req, txn, old, op->body)) == KW_OK &&
	    (rc = check_provisioned(req, old, op->body, rec)) == KW_OK &&
	    (rc = check_alias(req, rec, old)) == KW_OK &&
	    (rc = check_metadata(req, op->body)) == KW_OK &&	/* what is stored stays */
	    (rc = check_ownership(req, txn, rec, old)) == KW_OK &&
	    (rc = check_team_bounds(req, txn, rec)) == KW_OK &&
	    (rc = kw_keys_put(st, txn, old, rec, &req->err)) == KW_OK &&
	    (rc = kw_audit_record(req, txn, "updated", KW_TABLE_KEYS, kw_json_str(rec, "token"),
	    old, rec)) == KW_OK) {
		json_object_object_add(rec, "key", json_object_new_string(op->ref));
		op->answer = rec;
	} else {
		json_object_put(rec);
	}
	json_object_put(old);
	return rc;
}

/* POST /key/update: only the fields sent change. */
enum kw_err
kw_op_key_update(struct kw_req *req, struct kw_resp *resp)
{
	struct key_op op = { .req = req, .body = req->body, .ref = kw_json_str(req->body, "key") };
	enum kw_err rc;

	if ((rc = writer(req)) != KW_OK)
		return rc;
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, update_body, &op));
}

/*
 * POST /key/bulk_update: proxy admins only, as in LiteLLM.  Each item in
 * its own transaction, so one failure leaves the others applied; the
 * answer reports each.
 */
enum kw_err
kw_op_key_bulk_update(struct kw_req *req, struct kw_resp *resp)
{
	json_object *items = json_object_object_get(req->body, "keys");
	json_object *ok = json_object_new_array(), *failed = json_object_new_array();
	json_object *answer = json_object_new_object();
	size_t n = json_object_array_length(items);
	enum kw_err rc;

	if ((rc = kw_auth_admin(req)) != KW_OK) {
		json_object_put(ok);
		json_object_put(failed);
		json_object_put(answer);
		return rc;
	}
	for (size_t i = 0; i < n; i++) {
		json_object *item = json_object_array_get_idx(items, i);
		struct key_op op = { .req = req, .body = item, .ref = kw_json_str(item, "key") };
		json_object *entry = json_object_new_object();

		memset(&req->err, 0, sizeof(req->err));
		rc = kw_store_txn(req->store, update_body, &op);
		json_object_object_add(entry, "key", json_object_new_string(op.ref));
		if (rc == KW_OK) {
			json_object_object_del(op.answer, "key");
			json_object_object_add(entry, "key_info", op.answer);
			json_object_array_add(ok, entry);
			continue;
		}
		/* the store failing (still deadlocked after kw_store_txn's retries) is no item's fault */
		if (rc == KW_ERUNRECOVERY || rc == KW_EUNAVAIL || rc == KW_EDEADLOCK ||
		    rc == KW_ENOMEM) {
			json_object_put(entry);
			json_object_put(ok);
			json_object_put(failed);
			json_object_put(answer);
			return rc;
		}
		json_object_object_add(entry, "key_info", NULL);
		json_object_object_add(entry, "failed_reason", json_object_new_string(
		    req->err.message[0] != '\0' ? req->err.message : kw_err_name(rc)));
		json_object_array_add(failed, entry);
	}
	memset(&req->err, 0, sizeof(req->err));
	json_object_object_add(answer, "total_requested", json_object_new_int64((int64_t)n));
	json_object_object_add(answer, "successful_updates", ok);
	json_object_object_add(answer, "failed_updates", failed);
	kw_resp_json(resp, 200, answer);
	return KW_OK;
}

/* The token an alias names, into token; KW_ENOTFOUND naming field when none. */
static enum kw_err
token_of_alias(struct kw_req *req, DB_TXN *txn, const char *alias, const char *field,
    char token[KW_TOKEN_LEN + 1])
{
	DB *aliases = kw_store_db(req->store, KW_DB_ALIASES);
	DBT k = { .data = (void *)alias, .size = (u_int32_t)strlen(alias) };
	DBT v = { .data = token, .ulen = KW_TOKEN_LEN, .flags = DB_DBT_USERMEM };
	enum kw_err rc = kw_store_err(aliases->get(aliases, txn, &k, &v, 0));

	if (rc == KW_OK)
		token[v.size] = '\0';
	else if (rc == KW_ENOTFOUND || rc == KW_ENOMEM)
		return key_not_found(req, field);
	return rc;
}

/* Deletes one key named by ref (a key, or an alias when by_alias), with its audit entry. */
static enum kw_err
delete_one(struct kw_req *req, DB_TXN *txn, const char *ref, int by_alias, const char *field)
{
	char token[KW_TOKEN_LEN + 1];
	json_object *rec;
	enum kw_err rc;

	if (by_alias) {
		if ((rc = token_of_alias(req, txn, ref, field, token)) != KW_OK)
			return rc;
		ref = token;
	}
	if ((rc = find_key(req, txn, ref, KW_RMW, field, &rec)) != KW_OK)
		return rc;
	if ((rc = kw_auth_key_access(req, txn, rec, 1)) == KW_OK &&
	    (rc = kw_keys_del(req->store, txn, rec)) == KW_OK)
		rc = kw_audit_record(req, txn, "deleted", KW_TABLE_KEYS, kw_json_str(rec, "token"),
		    rec, NULL);
	json_object_put(rec);
	return rc;
}

static enum kw_err
delete_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct key_op *op = baton;
	static const char *const lists[] = { "keys", "key_aliases" };
	enum kw_err rc = KW_OK;

	(void)st;
	kw_answer_reset(&op->answer);
	op->answer = json_object_new_object();
	json_object *deleted = json_object_new_array();
	json_object_object_add(op->answer, "deleted_keys", deleted);
	for (int l = 0; l < 2 && rc == KW_OK; l++) {
		json_object *refs = json_object_object_get(op->body, lists[l]);

		for (size_t i = 0; refs != NULL && i < json_object_array_length(refs) &&
		    rc == KW_OK; i++) {
			json_object *ref = json_object_array_get_idx(refs, i);
			char field[KW_FIELD_MAX];

			snprintf(field, sizeof(field), "%s[%zu]", lists[l], i);
			rc = delete_one(op->req, txn, json_object_get_string(ref), l == 1, field);
			if (rc == KW_OK)
				json_object_array_add(deleted, json_object_get(ref));
		}
	}
	return rc;
}

/* POST /key/delete: by keys (plaintext or hash) or key_aliases; all or none. */
enum kw_err
kw_op_key_delete(struct kw_req *req, struct kw_resp *resp)
{
	struct key_op op = { .req = req, .body = req->body };
	enum kw_err rc;

	if ((rc = writer(req)) != KW_OK)
		return rc;
	if (json_object_object_get(req->body, "keys") == NULL &&
	    json_object_object_get(req->body, "key_aliases") == NULL) {
		kw_error_set(&req->err, KW_EINVAL, "keys", "send keys or key_aliases");
		return KW_EINVAL;
	}
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, delete_body, &op));
}

/* Reads the key ref for reading by the caller: 404 before 403. */
static enum kw_err
read_key(struct kw_req *req, DB_TXN *txn, const char *ref, const char *field, json_object **view)
{
	json_object *rec;
	enum kw_err rc;

	*view = NULL;
	if ((rc = find_key(req, txn, ref, 0, field, &rec)) != KW_OK)
		return rc;
	if ((rc = kw_auth_key_access(req, txn, rec, 0)) == KW_OK)
		*view = key_view_of_own(req, rec);
	json_object_put(rec);
	return rc;
}

/*
 * The /key/info answer written from the stored record's text, which is
 * what the record's view prints as (kw_rec_text_plain) when no budget
 * reset falls due: {"key": ref, "info": the record}.  Only the fields
 * the caller's access and the reset depend on are parsed.  *text is NULL
 * when a reset is due: the view must then be built (read_key).
 */
static enum kw_err
info_text(struct kw_req *req, DB_TXN *txn, const char *ref, const char **text, size_t *len)
{
	static const char *const fields[] = {
		"token", "user_id", "team_id", "budget_reset_at", "budget_duration",
	};
	char token[KW_TOKEN_LEN + 1], *stored, *out;
	json_object *key = NULL, *name;
	const char *quoted;
	size_t n, qlen;
	enum kw_err rc;

	*text = NULL;
	kw_keys_token_of(ref, token);
	if ((rc = kw_rec_get_text(req->store, txn, KW_DB_KEYS, token, &stored, &n)) != KW_OK)
		return rc == KW_ENOTFOUND ? key_not_found(req, "key") : rc;
	if ((rc = kw_rec_parse_fields(stored, n, fields, sizeof(fields) / sizeof(fields[0]),
	    &key)) == KW_OK && (rc = kw_auth_key_access(req, txn, key, 0)) == KW_OK &&
	    !kw_budget_settle(key, req->now)) {
		name = json_object_new_string(ref);
		quoted = json_object_to_json_string_ext(name,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
		qlen = strlen(quoted);
		if ((out = kw_arena_alloc(req->arena, qlen + n + 20)) == NULL) {
			rc = KW_ENOMEM;
		} else {
			memcpy(out, "{\"key\":", 7);
			memcpy(out + 7, quoted, qlen);
			memcpy(out + 7 + qlen, ",\"info\":", 8);
			*len = 15 + qlen + kw_rec_text_plain(stored, n, out + 15 + qlen);
			out[(*len)++] = '}';
			*text = out;
		}
		json_object_put(name);
	}
	json_object_put(key);
	free(stored);
	return rc;
}

static enum kw_err
info_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct key_op *op = baton;
	json_object *view;
	enum kw_err rc;

	(void)st;
	kw_answer_reset(&op->answer);
	if ((rc = info_text(op->req, txn, op->ref, &op->text, &op->text_len)) != KW_OK ||
	    op->text != NULL)
		return rc;
	if ((rc = read_key(op->req, txn, op->ref, "key", &view)) != KW_OK)
		return rc;
	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "key", json_object_new_string(op->ref));
	json_object_object_add(op->answer, "info", view);
	return KW_OK;
}

/* GET /key/info: ?key= (plaintext or hash), or the caller's own key. */
enum kw_err
kw_op_key_info(struct kw_req *req, struct kw_resp *resp)
{
	struct key_op op = { .req = req, .ref = kw_json_str(req->query, "key") };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	if (op.ref == NULL) {
		if (req->caller->is_master) {
			kw_error_set(&req->err, KW_EINVAL, "key",
			    "the master key is not a virtual key: pass ?key=");
			return KW_EINVAL;
		}
		op.ref = req->caller->token;
	}
	if ((rc = kw_store_txn(req->store, info_body, &op)) == KW_OK && op.text != NULL) {
		resp->status = 200;
		resp->raw = op.text;
		resp->raw_len = op.text_len;
		return KW_OK;
	}
	return kw_answer_respond(resp, &op.answer, rc);
}

static enum kw_err
info_v2_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct key_op *op = baton;
	json_object *refs = json_object_object_get(op->body, "keys"), *infos;
	enum kw_err rc = KW_OK;

	(void)st;
	kw_answer_reset(&op->answer);
	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "key", json_object_get(refs));
	infos = json_object_new_array();
	json_object_object_add(op->answer, "info", infos);
	for (size_t i = 0; i < json_object_array_length(refs) && rc == KW_OK; i++) {
		char field[KW_FIELD_MAX];
		json_object *view;

		snprintf(field, sizeof(field), "keys[%zu]", i);
		rc = read_key(op->req, txn, json_object_get_string(json_object_array_get_idx(refs, i)),
		    field, &view);
		if (rc == KW_OK)
			json_object_array_add(infos, view);
	}
	return rc;
}

/* POST /v2/key/info: several keys' records, in the order asked. */
enum kw_err
kw_op_key_info_v2(struct kw_req *req, struct kw_resp *resp)
{
	struct key_op op = { .req = req, .body = req->body };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	if (json_object_object_get(req->body, "keys") == NULL) {
		kw_error_set(&req->err, KW_EINVAL, "keys", "send keys");
		return KW_EINVAL;
	}
	return kw_answer_respond(resp, &op.answer, kw_store_txn(req->store, info_v2_body, &op));
}

/* --- listing ---------------------------------------------------------- */

struct listing {
	struct kw_req *req;
	const char *user_id, *team_id, *org_id, *alias, *hash, *sort_by;
	int desc, full, team_keys;
	size_t page, size;
	json_object *admin_teams;	/* owned: teams the caller administers (include_team_keys) */
	json_object **recs;		/* owned records gathered */
	size_t n, cap;
	size_t total;
	json_object *keys;		/* owned answer list */
	enum kw_err rc;
	DB_TXN *txn;
};

static void
listing_clear(struct listing *l)
{
	for (size_t i = 0; i < l->n; i++)
		json_object_put(l->recs[i]);
	free(l->recs);
	l->recs = NULL;
	l->n = l->cap = 0;
	json_object_put(l->keys);
	l->keys = NULL;
	json_object_put(l->admin_teams);
	l->admin_teams = NULL;
}

static int
field_is(json_object *rec, const char *field, const char *want)
{
	const char *have = kw_json_str(rec, field);

	return want == NULL || (have != NULL && strcmp(have, want) == 0);
}

/* True when the caller may list rec: readers of everything, its user, or its team's admin. */
static int
listable(struct listing *l, json_object *rec)
{
	const struct kw_caller *c = l->req->caller;
	const char *team_id = kw_json_str(rec, "team_id");

	if (kw_auth_reads_all(c))
		return 1;
	if (c->user_id[0] != '\0' && field_is(rec, "user_id", c->user_id))
		return 1;
	return l->admin_teams != NULL && team_id != NULL && kw_json_list_has(l->admin_teams, team_id);
}

/* Keeps rec (takes the reference) when it passes every filter. */
static int
gather(struct listing *l, json_object *rec)
{
	if (!field_is(rec, "user_id", l->user_id) || !field_is(rec, "team_id", l->team_id) ||
	    !field_is(rec, "organization_id", l->org_id) || !field_is(rec, "key_alias", l->alias) ||
	    !field_is(rec, "token", l->hash) || !listable(l, rec)) {
		json_object_put(rec);
		return 0;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		json_object **more = realloc(l->recs, cap * sizeof(*more));

		if (more == NULL) {
			json_object_put(rec);
			l->rc = KW_ENOMEM;
			return 1;
		}
		l->recs = more;
		l->cap = cap;
	}
	l->recs[l->n++] = rec;
	return 0;
}

static int
gather_each(const char *id, json_object *rec, void *baton)
{
	(void)id;
	return gather(baton, json_object_get(rec));
}

static int
gather_token(const char *token, void *baton)
{
	struct listing *l = baton;
	json_object *rec;
	enum kw_err rc = kw_rec_get(l->req->store, l->txn, KW_DB_KEYS, token, 0, &rec);

	if (rc == KW_ENOTFOUND)
		return 0;
	if (rc != KW_OK) {
		l->rc = rc;
		return 1;
	}
	return gather(l, rec);
}

/* Compares two records on the listing's sort field; ties broken by token. */
static int
compare_records(const void *a, const void *b, void *baton)
{
	const struct listing *l = baton;
	json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b;
	int c;

	if (strcmp(l->sort_by, "spend") == 0 || strcmp(l->sort_by, "max_budget") == 0) {
		double dx = kw_json_num(x, l->sort_by, -INFINITY);
		double dy = kw_json_num(y, l->sort_by, -INFINITY);

		c = dx < dy ? -1 : dx > dy;
	} else {
		const char *sx = kw_json_str(x, l->sort_by), *sy = kw_json_str(y, l->sort_by);

		c = strcmp(sx ? sx : "", sy ? sy : "");
	}
	if (c == 0)
		c = strcmp(kw_json_str(x, "token"), kw_json_str(y, "token"));
	return l->desc ? -c : c;
}

/* Adds rec (a record gathered, which nothing reads after this but its token) to the page. */
static void
emit(struct listing *l, json_object *rec)
{
	if (l->full) {
		json_object_array_add(l->keys, key_view_of_own(l->req, rec));
	} else {
		json_object_array_add(l->keys, json_object_new_string(kw_json_str(rec, "token")));
	}
}

/*
 * Adds the key token to the page, as emit does: a page of tokens (the
 * default) needs only to know that the record is there, not to read it.
 */
static int
emit_token(const char *token, void *baton)
{
	struct listing *l = baton;
	json_object *rec = NULL;
	enum kw_err rc = l->full ? kw_rec_get(l->req->store, l->txn, KW_DB_KEYS, token, 0, &rec) :
	    kw_rec_exists(l->req->store, l->txn, KW_DB_KEYS, token);

	if (rc == KW_OK && rec != NULL) {
		emit(l, rec);
		json_object_put(rec);
	} else if (rc == KW_OK) {
		json_object_array_add(l->keys, json_object_new_string(token));
	} else if (rc != KW_ENOTFOUND) {
		l->rc = rc;
		return 1;
	}
	return 0;
}

/* The teams the caller administers, from their user record (include_team_keys). */
static enum kw_err
load_admin_teams(struct listing *l)
{
	const struct kw_caller *c = l->req->caller;
	json_object *user, *teams;
	enum kw_err rc;

	l->admin_teams = json_object_new_array();
	if (c->user_id[0] == '\0')
		return KW_OK;
	rc = kw_rec_get(l->req->store, l->txn, KW_DB_USERS, c->user_id, 0, &user);
	if (rc == KW_ENOTFOUND)
		return KW_OK;
	if (rc != KW_OK)
		return rc;
	teams = json_object_object_get(user, "teams");
	for (size_t i = 0; teams != NULL && i < json_object_array_length(teams) && rc == KW_OK; i++) {
		const char *team_id = json_object_get_string(json_object_array_get_idx(teams, i));
		const char *role;
		json_object *team;

		rc = kw_rec_get(l->req->store, l->txn, KW_DB_TEAMS, team_id, 0, &team);
		if (rc == KW_ENOTFOUND) {
			rc = KW_OK;
			continue;
		}
		role = kw_members_role(KW_MEMBERS_TEAMS, team, c->user_id);
		if (rc == KW_OK && role != NULL && strcmp(role, "admin") == 0)
			json_object_array_add(l->admin_teams, json_object_new_string(team_id));
		json_object_put(team);
	}
	json_object_put(user);
	return rc;
}

/*
 * Gathers the candidate keys from the narrowest index the filters allow:
 * one hash, one alias, an owner's keys; a non-admin's own keys (and their
 * teams'); every key only for an unfiltered admin listing.
 */
static enum kw_err
gather_candidates(struct listing *l)
{
	struct kw_store *st = l->req->store;
	const struct kw_caller *c = l->req->caller;
	char token[KW_TOKEN_LEN + 1];
	enum kw_err rc = KW_OK;

	if (l->hash != NULL) {
		kw_keys_token_of(l->hash, token);
		l->hash = kw_arena_strndup(l->req->arena, token, KW_TOKEN_LEN);
		gather_token(token, l);
	} else if (l->alias != NULL) {
		rc = token_of_alias(l->req, l->txn, l->alias, "key_alias", token);
		if (rc == KW_OK)
			gather_token(token, l);
		else if (rc == KW_ENOTFOUND)
			rc = KW_OK;
	} else if (l->user_id != NULL) {
		rc = kw_keys_owned_by(st, l->txn, 'u', l->user_id, gather_token, l);
	} else if (l->team_id != NULL) {
		rc = kw_keys_owned_by(st, l->txn, 't', l->team_id, gather_token, l);
	} else if (l->org_id != NULL) {
		rc = kw_keys_owned_by(st, l->txn, 'o', l->org_id, gather_token, l);
	} else if (kw_auth_reads_all(c)) {
		rc = kw_rec_each(st, l->txn, KW_DB_KEYS, gather_each, l);
	} else {
		if (c->user_id[0] != '\0')
			rc = kw_keys_owned_by(st, l->txn, 'u', c->user_id, gather_token, l);
		for (size_t i = 0; rc == KW_OK && l->admin_teams != NULL &&
		    i < json_object_array_length(l->admin_teams); i++)
			rc = kw_keys_owned_by(st, l->txn, 't', json_object_get_string(
			    json_object_array_get_idx(l->admin_teams, i)), gather_token, l);
	}
	return rc != KW_OK ? rc : l->rc;
}

static enum kw_err
list_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct listing *l = baton;
	size_t from = (l->page - 1) * l->size;
	enum kw_err rc;

	listing_clear(l);
	l->rc = KW_OK;
	l->txn = txn;
	l->keys = json_object_new_array();
	if (l->team_keys && (rc = load_admin_teams(l)) != KW_OK)
		return rc;
	if (kw_auth_reads_all(l->req->caller) && !l->user_id && !l->team_id && !l->org_id &&
	    !l->alias && !l->hash && strcmp(l->sort_by, "created_at") == 0) {
		/* the common listing: straight from the creation index, O(log n + page) */
		rc = kw_keys_page_by_created(st, txn, l->desc, from, l->size, emit_token, l,
		    &l->total);
		return rc != KW_OK ? rc : l->rc;
	}
	if ((rc = gather_candidates(l)) != KW_OK)
		return rc;
	if (l->n > 1)
		qsort_r(l->recs, l->n, sizeof(*l->recs), compare_records, l);
	l->total = 0;
	for (size_t i = 0; i < l->n; i++) {
		/* a key can be gathered twice (one's own, in a team one administers) */
		if (i > 0 && strcmp(kw_json_str(l->recs[i], "token"),
		    kw_json_str(l->recs[i - 1], "token")) == 0)
			continue;
		if (l->total >= from && l->total < from + l->size)
			emit(l, l->recs[i]);
		l->total++;
	}
	return KW_OK;
}

static int
query_bool(json_object *query, const char *name)
{
	return kw_json_bool(query, name);
}

static size_t
query_size(json_object *query, const char *name, size_t otherwise)
{
	return kw_json_has(query, name) ? (size_t)kw_json_num(query, name, (double)otherwise)
	    : otherwise;
}

/* GET /key/list: a page of keys, filtered and sorted. */
enum kw_err
kw_op_key_list(struct kw_req *req, struct kw_resp *resp)
{
	struct listing l = { .req = req };
	const char *order = kw_json_str(req->query, "sort_order");
	json_object *answer;
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	if (!kw_auth_reads_all(req->caller) && req->caller->user_id[0] == '\0') {
		kw_error_set(&req->err, KW_EFORBIDDEN, NULL, "a key without a user lists nothing");
		return KW_EFORBIDDEN;
	}
	l.user_id = kw_json_str(req->query, "user_id");
	l.team_id = kw_json_str(req->query, "team_id");
	l.org_id = kw_json_str(req->query, "organization_id");
	l.alias = kw_json_str(req->query, "key_alias");
	l.hash = kw_json_str(req->query, "key_hash");
	l.sort_by = kw_json_str(req->query, "sort_by");
	if (l.sort_by == NULL)
		l.sort_by = "created_at";
	l.desc = order == NULL || strcmp(order, "desc") == 0;
	l.full = query_bool(req->query, "return_full_object");
	l.team_keys = query_bool(req->query, "include_team_keys");
	l.page = query_size(req->query, "page", 1);
	l.size = query_size(req->query, "size", 10);
	rc = kw_store_txn(req->store, list_body, &l);
	if (rc == KW_OK) {
		answer = json_object_new_object();
		json_object_object_add(answer, "keys", l.keys);
		l.keys = NULL;
		json_object_object_add(answer, "total_count", json_object_new_int64((int64_t)l.total));
		json_object_object_add(answer, "current_page", json_object_new_int64((int64_t)l.page));
		json_object_object_add(answer, "total_pages",
		    json_object_new_int64((int64_t)((l.total + l.size - 1) / l.size)));
		kw_resp_json(resp, 200, answer);
	}
	listing_clear(&l);
	return rc;
}

/* --- aliases ---------------------------------------------------------- */

struct alias_page {
	struct kw_req *req;
	const char *search;
	size_t from, size, total;
	json_object *aliases;	/* owned */
	struct listing mine;	/* a non-admin's own keys */
};

static void
alias_visit(struct alias_page *p, const char *alias)
{
	if (p->search != NULL && strstr(alias, p->search) == NULL)
		return;
	if (p->total >= p->from && p->total < p->from + p->size)
		json_object_array_add(p->aliases, json_object_new_string(alias));
	p->total++;
}

static int
compare_aliases(const void *a, const void *b, void *baton)
{
	const char *x = kw_json_str(*(json_object *const *)a, "key_alias");
	const char *y = kw_json_str(*(json_object *const *)b, "key_alias");

	(void)baton;
	return strcmp(x ? x : "", y ? y : "");
}

static enum kw_err
aliases_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct alias_page *p = baton;
	DB *aliases = kw_store_db(st, KW_DB_ALIASES);
	DBT k = { .flags = DB_DBT_REALLOC }, v = { .flags = DB_DBT_REALLOC };
	char *alias = NULL;
	DBC *cur;
	enum kw_err rc;

	json_object_put(p->aliases);
	p->aliases = json_object_new_array();
	p->total = 0;
	if (!kw_auth_reads_all(p->req->caller)) {
		/* the caller's own keys that have an alias, in alias order */
		listing_clear(&p->mine);
		p->mine.req = p->req;
		p->mine.txn = txn;
		p->mine.sort_by = "key_alias";
		if ((rc = gather_candidates(&p->mine)) != KW_OK)
			return rc;
		if (p->mine.n > 1)
			qsort_r(p->mine.recs, p->mine.n, sizeof(*p->mine.recs), compare_aliases, NULL);
		for (size_t i = 0; i < p->mine.n; i++)
			if (kw_json_str(p->mine.recs[i], "key_alias") != NULL)
				alias_visit(p, kw_json_str(p->mine.recs[i], "key_alias"));
		return KW_OK;
	}
	if ((rc = kw_store_err(aliases->cursor(aliases, txn, &cur, 0))) != KW_OK)
		return rc;
	while ((rc = kw_store_err(cur->get(cur, &k, &v, DB_NEXT))) == KW_OK) {
		char *more = realloc(alias, k.size + 1);

		if (more == NULL) {
			rc = KW_ENOMEM;
			break;
		}
		alias = more;
		memcpy(alias, k.data, k.size);
		alias[k.size] = '\0';
		alias_visit(p, alias);
	}
	cur->close(cur);
	free(k.data);
	free(v.data);
	free(alias);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/* GET /key/aliases: the aliases of the keys the caller may see, sorted, a page at a time. */
enum kw_err
kw_op_key_aliases(struct kw_req *req, struct kw_resp *resp)
{
	struct alias_page p = { .req = req };
	size_t page = query_size(req->query, "page", 1);
	json_object *answer;
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	p.search = kw_json_str(req->query, "search");
	p.size = query_size(req->query, "size", 50);
	p.from = (page - 1) * p.size;
	if (!kw_auth_reads_all(req->caller) && req->caller->user_id[0] == '\0') {
		kw_error_set(&req->err, KW_EFORBIDDEN, NULL, "a key without a user lists nothing");
		return KW_EFORBIDDEN;
	}
	rc = kw_store_txn(req->store, aliases_body, &p);
	if (rc == KW_OK) {
		answer = json_object_new_object();
		json_object_object_add(answer, "aliases", p.aliases);
		p.aliases = NULL;
		json_object_object_add(answer, "total_count", json_object_new_int64((int64_t)p.total));
		json_object_object_add(answer, "current_page", json_object_new_int64((int64_t)page));
		json_object_object_add(answer, "size", json_object_new_int64((int64_t)p.size));
		json_object_object_add(answer, "total_pages",
		    json_object_new_int64((int64_t)((p.total + p.size - 1) / p.size)));
		kw_resp_json(resp, 200, answer);
	}
	json_object_put(p.aliases);
	listing_clear(&p.mine);
	return rc;
}

/* --- block, regenerate, reset_spend, health -------------------------------- */

struct key_change {
	struct key_op op;
	const char *action;	/* the audit action */
	enum kw_err (*change)(struct key_change *, DB_TXN *, json_object *old, json_object *rec);
	int blocked;
	double reset_to, previous_spend;
	char secret[KW_KEY_GENERATED_LEN + 1];
};

/*
 * The frame of every single-key change: read the key for update, check
 * the caller may change it, let change() edit a copy, store it with its
 * indexes, audit it.  The answer is the key's new view.
 */
static enum kw_err
change_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct key_change *kc = baton;
	struct kw_req *req = kc->op.req;
	json_object *old, *rec;
	enum kw_err rc;

	kw_answer_reset(&kc->op.answer);
	if ((rc = find_key(req, txn, kc->op.ref, KW_RMW, "key", &old)) != KW_OK)
		return rc;
	rec = kw_json_copy(old);
	kw_budget_settle(rec, req->now);
	touch(req, rec);
	if ((rc = kw_auth_key_access(req, txn, old, 1)) == KW_OK &&
	    (rc = kc->change(kc, txn, old, rec)) == KW_OK &&
	    (rc = kw_keys_put(st, txn, old, rec, &req->err)) == KW_OK &&
	    (rc = kw_audit_record(req, txn, kc->action, KW_TABLE_KEYS, kw_json_str(rec, "token"),
	    old, rec)) == KW_OK) {
		kc->op.answer = kw_litellm_key_view(req, rec);
	}
	json_object_put(rec);
	json_object_put(old);
	return rc;
}

static enum kw_err
set_blocked(struct key_change *kc, DB_TXN *txn, json_object *old, json_object *rec)
{
	(void)txn;
	(void)old;
	json_object_object_add(rec, "blocked", json_object_new_boolean(kc->blocked));
	return KW_OK;
}

static enum kw_err
block(struct kw_req *req, struct kw_resp *resp, int blocked)
{
	struct key_change kc = {
		.op = { .req = req, .ref = kw_json_str(req->body, "key") },
		.action = blocked ? "blocked" : "updated", .change = set_blocked,
		.blocked = blocked,
	};
	enum kw_err rc;

	if ((rc = kw_auth_admin(req)) != KW_OK)
		return rc;
	return kw_answer_respond(resp, &kc.op.answer, kw_store_txn(req->store, change_body, &kc));
}

/* POST /key/block: refused from the very next request on, by every worker. Admins only. */
enum kw_err
kw_op_key_block(struct kw_req *req, struct kw_resp *resp)
{
	return block(req, resp, 1);
}

/* POST /key/unblock. Admins only. */
enum kw_err
kw_op_key_unblock(struct kw_req *req, struct kw_resp *resp)
{
	return block(req, resp, 0);
}

/*
 * A new secret for the same record: the token changes, everything else is
 * kept unless the body changes it; the old secret keeps working until the
 * grace period ends, or stops at once.
 */
static enum kw_err
rotate(struct key_change *kc, DB_TXN *txn, json_object *old, json_object *rec)
{
	struct kw_req *req = kc->op.req;
	json_object *body = kc->op.body;
	const char *new_key = kw_json_str(body, "new_key"), *grace = kw_json_str(body, "grace_period");
	char token[KW_TOKEN_LEN + 1], name[32];
	time_t until;
	enum kw_err rc;

	if (is_provisioned(old)) {
		/* its secret is a signed token: a plain one would outlive what it signs */
		kw_error_set(&req->err, KW_EINVAL, "key",
		    "a provisioned key is not regenerated: provision again");
		return KW_EINVAL;
	}
	if (new_key != NULL && strncmp(new_key, KW_TOKEN_PREFIX, strlen(KW_TOKEN_PREFIX)) == 0) {
		kw_error_set(&req->err, KW_EINVAL, "new_key", "keys starting %s are signed tokens, "
		    "issued by provisioning only", KW_TOKEN_PREFIX);
		return KW_EINVAL;
	}
	if (new_key == NULL) {
		kw_keys_new_secret(kc->secret);
		new_key = kc->secret;
	}
	kw_crypto_sha256_hex(new_key, strlen(new_key), token);
	kw_keys_key_name(new_key, name, sizeof(name));
	if (body != NULL && (rc = check_settings(req, txn, old, body)) != KW_OK)
		return rc;
	if (body != NULL)
		apply_settings(req, rec, body);
	json_object_object_add(rec, "token", json_object_new_string(token));
	json_object_object_add(rec, "key_name", json_object_new_string(name));
	json_object_object_add(rec, "rotation_count", json_object_new_int64(
	    (int64_t)kw_json_num(old, "rotation_count", 0) + 1));
	kw_json_set_time(rec, "last_rotation_at", req->now);
	if ((rc = check_ownership(req, txn, rec, old)) != KW_OK ||
	    (rc = check_team_bounds(req, txn, rec)) != KW_OK)
		return rc;
	if (grace != NULL && kw_time_parse_duration(grace, req->now, &until) == KW_OK &&
	    until > req->now)
		return kw_keys_retire(req->store, txn, kw_json_str(old, "token"), token, until);
	return KW_OK;
}

static enum kw_err
regenerate(struct kw_req *req, struct kw_resp *resp, const char *ref)
{
	struct key_change kc = {
		.op = { .req = req, .ref = ref, .body = req->body },
		.action = "rotated", .change = rotate,
	};
	const char *secret;
	enum kw_err rc;

	if ((rc = writer(req)) != KW_OK)
		return rc;
	if (kc.op.ref == NULL)
		kc.op.ref = kw_json_str(req->body, "key");
	if (kc.op.ref == NULL) {
		kw_error_set(&req->err, KW_EINVAL, "key", "name the key to regenerate");
		return KW_EINVAL;
	}
	rc = kw_store_txn(req->store, change_body, &kc);
	if (rc == KW_OK) {
		secret = kw_json_str(req->body, "new_key");
		json_object_object_add(kc.op.answer, "key",
		    json_object_new_string(secret ? secret : kc.secret));
		json_object_object_add(kc.op.answer, "token_id",
		    json_object_get(json_object_object_get(kc.op.answer, "token")));
	}
	kw_crypto_wipe(kc.secret, sizeof(kc.secret));
	return kw_answer_respond(resp, &kc.op.answer, rc);
}

/* POST /key/regenerate?key=: the key in the query (or the body). */
enum kw_err
kw_op_key_regenerate(struct kw_req *req, struct kw_resp *resp)
{
	return regenerate(req, resp, kw_json_str(req->query, "key"));
}

/* POST /key/{key}/regenerate */
enum kw_err
kw_op_key_regenerate_path(struct kw_req *req, struct kw_resp *resp)
{
	return regenerate(req, resp, kw_req_path_param(req, "key"));
}

static enum kw_err
reset_spend(struct key_change *kc, DB_TXN *txn, json_object *old, json_object *rec)
{
	struct kw_req *req = kc->op.req;
	double spend = kw_json_num(rec, "spend", 0);
	enum kw_err rc;

	(void)old;
	if (!kw_auth_is_admin(req->caller)) {
		if (kw_json_str(rec, "team_id") == NULL) {
			kw_error_set(&req->err, KW_EFORBIDDEN, NULL,
			    "only proxy admins and the key's team admins reset spend");
			return KW_EFORBIDDEN;
		}
		if ((rc = check_ownership(req, txn, rec, old)) != KW_OK)
			return rc;
	}
	if (kc->reset_to > spend) {
		kw_error_set(&req->err, KW_EINVAL, "reset_to",
		    "reset_to %g is more than the current spend %g", kc->reset_to, spend);
		return KW_EINVAL;
	}
	if (kc->reset_to > kw_json_num(rec, "max_budget", INFINITY)) {
		kw_error_set(&req->err, KW_EINVAL, "reset_to",
		    "reset_to %g is more than the key's max_budget", kc->reset_to);
		return KW_EINVAL;
	}
	kc->previous_spend = spend;
	json_object_object_add(rec, "spend", json_object_new_double(kc->reset_to));
	return KW_OK;
}

/*
 * POST /key/{key}/reset_spend: proxy admins and the key's team admins;
 * reset_to at most the current spend and the key's max_budget.
 */
enum kw_err
kw_op_key_reset_spend(struct kw_req *req, struct kw_resp *resp)
{
	struct key_change kc = {
		.op = { .req = req, .ref = kw_req_path_param(req, "key") },
		.action = "updated", .change = reset_spend,
		.reset_to = kw_json_num(req->body, "reset_to", 0),
	};

	json_object *answer;
	enum kw_err rc;

	if ((rc = writer(req)) != KW_OK)
		return rc;
	if ((rc = kw_store_txn(req->store, change_body, &kc)) != KW_OK)
		return kw_answer_respond(resp, &kc.op.answer, rc);
	/* LiteLLM's answer: the spend before and after, not the whole record */
	answer = json_object_new_object();
	json_object_object_add(answer, "key_hash",
	    json_object_get(json_object_object_get(kc.op.answer, "token")));
	json_object_object_add(answer, "spend", json_object_new_double(kc.reset_to));
	json_object_object_add(answer, "previous_spend", json_object_new_double(kc.previous_spend));
	json_object_object_add(answer, "max_budget",
	    json_object_get(json_object_object_get(kc.op.answer, "max_budget")));
	json_object_object_add(answer, "budget_reset_at",
	    json_object_get(json_object_object_get(kc.op.answer, "budget_reset_at")));
	json_object_put(kc.op.answer);
	kw_resp_json(resp, 200, answer);
	return KW_OK;
}

/* POST /key/health: the caller's key is usable; keywarden has no logging callbacks. */
enum kw_err
kw_op_key_health(struct kw_req *req, struct kw_resp *resp)
{
	json_object *answer;
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	answer = json_object_new_object();
	json_object_object_add(answer, "key", json_object_new_string("healthy"));
	json_object_object_add(answer, "logging_callbacks", NULL);
	kw_resp_json(resp, 200, answer);
	return KW_OK;
}
