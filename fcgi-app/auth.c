/* auth.c: the caller's credential, their role, and what they may do. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"

/*
 * Returns the credential the caller presents, borrowed until the request
 * ends: `Authorization: Bearer ...`, then the x-litellm-api-key, API-Key
 * and x-api-key headers (the ones LiteLLM's clients send); NULL when none.
 */
const char *
kw_auth_credential(struct kw_req *req)
{
	static const char *const headers[] = {
		"HTTP_X_LITELLM_API_KEY", "HTTP_API_KEY", "HTTP_X_API_KEY",
	};
	const char *v = kw_req_header(req, "HTTP_AUTHORIZATION");

	if (v != NULL && strncasecmp(v, "Bearer ", 7) == 0) {
		for (v += 7; *v == ' '; v++)
			;
		if (*v != '\0')
			return v;
	}
	for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++)
		if ((v = kw_req_header(req, headers[i])) != NULL && *v != '\0')
			return v;
	return NULL;
}

/*
 * Compares a presented secret with the master key in constant time: the
 * key DATA_DIR/master.key holds now, so a rotation takes effect without a
 * restart, or the one before it during the rotation's grace period.
 */
static int
is_master_key(const char *presented)
{
	kw_config_master_key_refresh();
	return (kw_config.master_key[0] != '\0' &&
	    kw_crypto_same_secret(presented, kw_config.master_key)) ||
	    kw_config_master_key_retired(presented);
}

/*
 * KW_OK when the caller is a proxy admin (the master key, or a key of a
 * proxy_admin user); KW_EAUTH or KW_EFORBIDDEN with req->err otherwise.
 */
enum kw_err
kw_auth_admin(struct kw_req *req)
{
	enum kw_err rc = kw_auth_caller(req);

	if (rc != KW_OK)
		return rc;
	if (kw_auth_is_admin(req->caller))
		return kw_auth_can_write(req);
	kw_error_set(&req->err, KW_EFORBIDDEN, NULL, "only a proxy admin may do this");
	return KW_EFORBIDDEN;
}

/*
 * KW_OK when the caller reads everything (proxy admins and admin viewers,
 * LiteLLM's _user_has_admin_view); else KW_EAUTH from kw_auth_caller, or
 * KW_EFORBIDDEN with refusal (the face's words) and the caller's role.
 */
enum kw_err
kw_auth_admin_view(struct kw_req *req, const char *refusal)
{
	enum kw_err rc = kw_auth_caller(req);

	if (rc != KW_OK)
		return rc;
	if (kw_auth_reads_all(req->caller))
		return KW_OK;
	kw_error_set(&req->err, KW_EFORBIDDEN, NULL, "%s%s", refusal,
	    kw_auth_role_name(req->caller->role));
	return KW_EFORBIDDEN;
}

static const char *const role_names[] = {
	[KW_ROLE_NONE] = "",
	[KW_ROLE_INTERNAL_USER_VIEWER] = "internal_user_viewer",
	[KW_ROLE_INTERNAL_USER] = "internal_user",
	[KW_ROLE_PROXY_ADMIN_VIEWER] = "proxy_admin_viewer",
	[KW_ROLE_PROXY_ADMIN] = "proxy_admin",
};

const char *
kw_auth_role_name(enum kw_role role)
{
	return role_names[role];
}

/* The role named s; KW_ROLE_INTERNAL_USER for NULL or an unknown name (the schema checks names). */
enum kw_role
kw_auth_role_parse(const char *s)
{
	for (size_t i = 1; s != NULL && i < sizeof(role_names) / sizeof(role_names[0]); i++)
		if (strcmp(s, role_names[i]) == 0)
			return (enum kw_role)i;
	return KW_ROLE_INTERNAL_USER;
}

/*
 * The role a key acts with: its user's, never above the role_ceiling its
 * creator left on it (a team admin's key for a member acts as the team
 * admin could, whatever the member becomes), and a viewer's for a
 * read_only key.
 */
static enum kw_role
capped_role(enum kw_role role, json_object *key)
{
	const char *ceiling = kw_json_str(key, "role_ceiling");
	const char *key_type = kw_json_str(key, "key_type");

	if (ceiling != NULL && kw_auth_role_parse(ceiling) < role)
		role = kw_auth_role_parse(ceiling);
	if (key_type != NULL && strcmp(key_type, "read_only") == 0) {
		if (role == KW_ROLE_PROXY_ADMIN)
			role = KW_ROLE_PROXY_ADMIN_VIEWER;
		else if (role == KW_ROLE_INTERNAL_USER)
			role = KW_ROLE_INTERNAL_USER_VIEWER;
	}
	return role;
}

struct caller_lookup {
	const char *presented;
	const char *path;	/* the request's path as sent, less the mount */
	time_t now;
	struct kw_caller *caller;
	struct kw_error *err;
};

/* Reads the caller's key and user; refuses unknown, blocked and expired keys. */
static enum kw_err
lookup_caller(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct caller_lookup *l = baton;
	struct kw_caller *c = l->caller;
	json_object *key = NULL, *user = NULL, *team = NULL;
	const char *user_id, *team_id, *expires, *key_type;
	time_t until;
	enum kw_err rc;

	/* a signed token is judged by its signature and expiry before any store read */
	switch (kw_tokens_check(l->presented, l->now)) {
	case KW_TOKEN_FORGED:
		kw_error_set(l->err, KW_EAUTH, NULL, "invalid API key: its signature is bad");
		return KW_EAUTH;
	case KW_TOKEN_EXPIRED:
		kw_error_set(l->err, KW_EAUTH, NULL, "this key expired");
		return KW_EAUTH;
	default:
		break;
	}
	rc = kw_keys_credential(st, txn, l->presented, l->now, &key);
	if (rc == KW_ENOTFOUND) {
		kw_error_set(l->err, KW_EAUTH, NULL, "invalid API key");
		return KW_EAUTH;
	}
	if (rc != KW_OK)
		return rc;
	if (kw_json_bool(key, "blocked")) {
		kw_error_set(l->err, KW_EAUTH, NULL, "this key is blocked");
		rc = KW_EAUTH;
	} else if ((expires = kw_json_str(key, "expires")) != NULL &&
	    kw_time_parse(expires, &until) == KW_OK && until <= l->now) {
		kw_error_set(l->err, KW_EAUTH, NULL, "this key expired at %s", expires);
		rc = KW_EAUTH;
	}
	if (rc == KW_OK && (team_id = kw_json_str(key, "team_id")) != NULL) {
		rc = kw_rec_get(st, txn, KW_DB_TEAMS, team_id, 0, &team);
		if (rc == KW_OK && kw_json_bool(team, "blocked")) {
			kw_error_set(l->err, KW_EAUTH, NULL, "this key's team is blocked");
			rc = KW_EAUTH;
		} else if (rc == KW_ENOTFOUND) {
			rc = KW_OK;	/* a team id that names no team record bounds nothing */
		}
	}
	memset(c, 0, sizeof(*c));
	snprintf(c->token, sizeof(c->token), "%s", kw_json_str(key, "token"));
	team_id = kw_json_str(key, "team_id");
	snprintf(c->team_id, sizeof(c->team_id), "%s", team_id != NULL ? team_id : "");
	c->may_verify = kw_json_bool(json_object_object_get(key, "permissions"), "verify_keys");
	c->may_select = kw_json_bool(json_object_object_get(key, "permissions"),
	    "select_provider_keys");
	snprintf(c->venice_type, sizeof(c->venice_type), "%s",
	    kw_json_str(json_object_object_get(key, "venice"), "apiKeyType") ?
	    kw_json_str(json_object_object_get(key, "venice"), "apiKeyType") : "");
	key_type = kw_json_str(key, "key_type");
	snprintf(c->key_type, sizeof(c->key_type), "%s", key_type ? key_type : "default");
	c->role = KW_ROLE_NONE;
	if (rc == KW_OK && (user_id = kw_json_str(key, "user_id")) != NULL) {
		snprintf(c->user_id, sizeof(c->user_id), "%s", user_id);
		rc = kw_rec_get(st, txn, KW_DB_USERS, user_id, 0, &user);
		if (rc == KW_OK && kw_json_bool(user, "blocked")) {
			kw_error_set(l->err, KW_EAUTH, NULL, "this key's user is blocked");
			rc = KW_EAUTH;
		} else if (rc == KW_OK)
			c->role = kw_auth_role_parse(kw_json_str(user, "user_role"));
		else if (rc == KW_ENOTFOUND)
			rc = KW_OK;	/* no record, no role: as LiteLLM's _get_user_role(None) */
	}
	/*
	 * A key's allowed_routes bound every route it calls, keywarden's own
	 * API too, whatever its role: LiteLLM's
	 * RouteChecks.is_virtual_key_allowed_to_call_route (route_checks.py),
	 * which should_call_route runs for every role.
	 */
	if (rc == KW_OK && !kw_limits_routes_allow(json_object_object_get(key, "allowed_routes"),
	    l->path)) {
		kw_error_set(l->err, KW_EFORBIDDEN, NULL,
		    "this key's allowed_routes do not allow this route");
		rc = KW_EFORBIDDEN;
	}
	c->role = capped_role(c->role, key);
	if (c->venice_type[0] != '\0')
		c->role = KW_ROLE_NONE;	/* a Venice key manages on the Venice face only */
	json_object_put(key);
	json_object_put(user);
	json_object_put(team);
	return rc;
}

/*
 * Identifies the caller into req->caller: the master key (proxy admin), or
 * a virtual key with the role of its user.  KW_EAUTH (401) for a missing,
 * unknown, blocked or expired key, or one whose team or user is blocked;
 * KW_EFORBIDDEN (403) for a key whose allowed_routes do not allow this
 * request's path (the one point every authenticated request passes); the
 * error never echoes the credential.  Repeated calls answer from the first.
 */
enum kw_err
kw_auth_caller(struct kw_req *req)
{
	struct caller_lookup l = { .now = req->now, .err = &req->err,
		.path = req->path ? req->path : "" };
	enum kw_err rc;

	if (req->caller != NULL && req->caller->known)
		return KW_OK;
	if (req->store == NULL)
		return KW_EUNAVAIL;	/* every operation that asks who is calling uses the store */
	if ((l.presented = kw_auth_credential(req)) == NULL) {
		kw_error_set(&req->err, KW_EAUTH, NULL,
		    "no API key: send Authorization: Bearer sk-...");
		return KW_EAUTH;
	}
	if (req->caller == NULL &&
	    (req->caller = kw_arena_alloc(req->arena, sizeof(*req->caller))) == NULL)
		return KW_ENOMEM;
	l.caller = req->caller;
	if (is_master_key(l.presented)) {
		memset(req->caller, 0, sizeof(*req->caller));
		req->caller->is_master = 1;
		req->caller->role = KW_ROLE_PROXY_ADMIN;
		snprintf(req->caller->key_type, sizeof(req->caller->key_type), "default");
	} else if ((rc = kw_store_txn(req->store, lookup_caller, &l)) != KW_OK) {
		return rc;
	}
	/* LiteLLM's llm_api keys may call llm_api_routes only; a Venice INFERENCE key's own face judges it */
	if (strcmp(req->caller->key_type, "llm_api") == 0 &&
	    (req->route == NULL || req->route->face != KW_FACE_VENICE)) {
		kw_error_set(&req->err, KW_EFORBIDDEN, NULL,
		    "an llm_api key calls models, not management routes");
		return KW_EFORBIDDEN;
	}
	req->caller->known = 1;
	return KW_OK;
}

int
kw_auth_is_admin(const struct kw_caller *c)
{
	return c->is_master || c->role == KW_ROLE_PROXY_ADMIN;
}

int
kw_auth_reads_all(const struct kw_caller *c)
{
	return kw_auth_is_admin(c) || c->role == KW_ROLE_PROXY_ADMIN_VIEWER;
}

/*
 * KW_OK when the caller may change things at all: not a viewer role, not a
 * read_only or llm_api key, and a key with a user that has a record.  403
 * in req->err otherwise, but 401 for a key with no user record (none named,
 * or one that names no record), with LiteLLM's words: its user_api_key_auth
 * finds no user object, so _get_user_role gives no role and
 * RouteChecks.non_proxy_admin_allowed_routes_check refuses every
 * management route but the info routes (_raise_admin_only_route_exception,
 * rendered 401 auth_error by UserAPIKeyAuthExceptionHandler); the role and
 * user id it names are "unknown", the id masked (_mask_user_id).  The
 * route named is the operation's path template, so a key in the path is
 * never echoed.
 */
enum kw_err
kw_auth_can_write(struct kw_req *req)
{
	const struct kw_caller *c = req->caller;
	const char *why = NULL;

	if (!kw_auth_is_admin(c) && c->role == KW_ROLE_NONE && c->venice_type[0] == '\0' &&
	    strcmp(c->key_type, "llm_api") != 0) {
		kw_error_set(&req->err, KW_EAUTH, NULL, "Authentication Error, Only proxy admin "
		    "can be used to generate, delete, update info for new keys/users/teams. "
		    "Route=%s. Your role=unknown. Your user_id=*******",
		    req->route != NULL ? req->route->path : "");	/* the template: no key */
		return KW_EAUTH;
	}

	if (kw_auth_is_admin(c) && strcmp(c->key_type, "read_only") != 0 &&
	    strcmp(c->key_type, "llm_api") != 0)
		return KW_OK;
	if (c->role == KW_ROLE_PROXY_ADMIN_VIEWER || c->role == KW_ROLE_INTERNAL_USER_VIEWER)
		why = "this user's role only reads";
	else if (strcmp(c->key_type, "read_only") == 0)
		why = "a read_only key only reads";
	else if (strcmp(c->key_type, "llm_api") == 0)
		why = "an llm_api key calls models, not management routes";
	else if (c->role == KW_ROLE_NONE)
		why = "a key without a user manages nothing";
	if (why == NULL)
		return KW_OK;
	kw_error_set(&req->err, KW_EFORBIDDEN, NULL, "%s", why);
	return KW_EFORBIDDEN;
}

/*
 * KW_OK when the caller may read (write=0) or change (write=1) key, a key
 * record read in txn.  Reads: admins and admin viewers everything, a user
 * their own keys and their teams' keys as its admin, any key itself.
 * Changes: a standing of owner or more (kw_policy_key_standing): a proxy
 * admin, a personal key's user, a team key's team admins; what each may
 * change is kw_policy_check's.  KW_EFORBIDDEN with req->err otherwise.
 */
enum kw_err
kw_auth_key_access(struct kw_req *req, DB_TXN *txn, json_object *key, int write)
{
	const struct kw_caller *c = req->caller;
	const char *owner = kw_json_str(key, "user_id"), *team_id = kw_json_str(key, "team_id");
	const char *token = kw_json_str(key, "token");
	enum kw_standing standing;
	enum kw_err rc;

	if (write) {
		if ((rc = kw_auth_can_write(req)) != KW_OK ||
		    (rc = kw_policy_key_standing(req, txn, key, &standing)) != KW_OK)
			return rc;
		if (standing >= KW_STANDING_OWNER)
			return KW_OK;
		kw_error_set(&req->err, KW_EFORBIDDEN, NULL, team_id != NULL ?
		    "only the team's admins or a proxy admin change a team's keys" :
		    "you may only change your own keys");
		return KW_EFORBIDDEN;
	}
	if (kw_auth_reads_all(c))
		return KW_OK;
	if (token != NULL && strcmp(token, c->token) == 0)
		return KW_OK;
	if (c->user_id[0] != '\0' && owner != NULL && strcmp(owner, c->user_id) == 0)
		return KW_OK;
	if (c->user_id[0] != '\0' && team_id != NULL) {
		json_object *team;
		int admin;

		rc = kw_rec_get(req->store, txn, KW_DB_TEAMS, team_id, 0, &team);
		if (rc != KW_OK && rc != KW_ENOTFOUND)
			return rc;
		admin = kw_members_is_admin(KW_MEMBERS_TEAMS, team, c->user_id);
		json_object_put(team);
		if (admin)
			return KW_OK;
	}
	kw_error_set(&req->err, KW_EFORBIDDEN, NULL,
	    "you may only see your own keys, or your team's as its admin");
	return KW_EFORBIDDEN;
}
