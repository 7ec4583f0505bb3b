/* face_provisioning.c: short-lived signed keys for an organization's members, one per client_id. */
#include <stdio.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

#define ALIAS_PREFIX "prov:"		/* a provisioned key's alias: prov:<org>:<client_id> */
#define TOKEN_MAX 128			/* a signed token is 66 characters */

/* One provisioning's transaction: its inputs and its answer, rebuilt on every attempt. */
struct prov_op {
	struct kw_req *req;
	const char *org_id;	/* the path's {org}; request-owned */
	const char *client_id;	/* borrowed from the body */
	int allowed;		/* the attempt fits in this minute's provision_rpm */
	int retry_after;	/* seconds, with KW_ELIMIT */
	json_object *answer;	/* owned: the only place the plaintext key lives */
};

/* <0, 0, >0 as version a is below, equal to or above b (part by part, as numbers). */
static int
compare_versions(const unsigned long a[KW_VERSION_PARTS], const unsigned long b[KW_VERSION_PARTS])
{
	for (size_t i = 0; i < KW_VERSION_PARTS; i++)
		if (a[i] != b[i])
			return a[i] < b[i] ? -1 : 1;
	return 0;
}

/*
 * The version the client says it is: X-Client-Version when it sends one,
 * else the version of its User-Agent's first product ("dn/1.4.2 (linux)"
 * is 1.4.2), which is what the real client sends; copied into buf (n
 * bytes) when it comes from there.  *from is the header, for the error's
 * loc.  NULL when neither header says.
 */
static const char *
client_version(struct kw_req *req, char *buf, size_t n, const char **from)
{
	const char *v = kw_req_header(req, "HTTP_X_CLIENT_VERSION");
	const char *ua = kw_req_header(req, "HTTP_USER_AGENT"), *slash;
	size_t len;

	if (v != NULL && *v != '\0') {
		*from = "header.X-Client-Version";
		return v;
	}
	*from = "header.User-Agent";
	if (ua == NULL || (slash = strchr(ua, '/')) == NULL ||
	    (size_t)(slash - ua) > strcspn(ua, " \t"))
		return NULL;	/* no product/version before the first space */
	len = strcspn(slash + 1, " \t(");
	if (len == 0 || len >= n)
		return NULL;
	memcpy(buf, slash + 1, len);
	buf[len] = '\0';
	return buf;
}

/*
 * KW_OK when no minimum client version is configured or the client's
 * version (client_version) is at least it; KW_EUPGRADE (426) when it
 * says none, one that is not dotted numbers, or a lower one.
 */
static enum kw_err
check_client_version(struct kw_req *req)
{
	unsigned long have[KW_VERSION_PARTS], need[KW_VERSION_PARTS];
	char buf[65];
	const char *from, *v = client_version(req, buf, sizeof(buf), &from);

	if (kw_config.min_client_version[0] == '\0')
		return KW_OK;
	(void)kw_version_parse(kw_config.min_client_version, need);	/* checked at start */
	if (v == NULL) {
		kw_error_set(&req->err, KW_EUPGRADE, from,
		    "send User-Agent: <client>/<version> (or X-Client-Version): this service "
		    "needs version %s or later", kw_config.min_client_version);
		return KW_EUPGRADE;
	}
	if (strlen(v) > 64 || !kw_version_parse(v, have)) {
		kw_error_set(&req->err, KW_EUPGRADE, from,
		    "the client version must be dotted numbers; this service needs %s or later",
		    kw_config.min_client_version);
		return KW_EUPGRADE;
	}
	if (compare_versions(have, need) < 0) {
		kw_error_set(&req->err, KW_EUPGRADE, from,
		    "client version %s is too old: upgrade to %s or later", v,
		    kw_config.min_client_version);
		return KW_EUPGRADE;
	}
	return KW_OK;
}

/*
 * The relay's OpenAI base URL (owned): KEYWARDEN_PUBLIC_URL and "/v1",
 * so that {base_url}/chat/completions is a relayed call with the key.
 */
static json_object *
base_url(void)
{
	char url[sizeof(kw_config.public_url) + 4];
	size_t n = strlen(kw_config.public_url);

	while (n > 0 && kw_config.public_url[n - 1] == '/')
		n--;
	snprintf(url, sizeof(url), "%.*s/v1", (int)n, kw_config.public_url);
	return json_object_new_string(url);
}

/*
 * KW_OK when the caller may provision in org: a proxy admin (the master
 * key too) in any organization, else a member whose role is not
 * internal_user_viewer; and a credential that may change things (not a
 * viewer, read_only or llm_api key: a provisioned key provisions nothing).
 * 403 in req->err otherwise.
 */
static enum kw_err
may_provision(struct kw_req *req, json_object *org)
{
	const char *role;
	enum kw_err rc;

	if (!kw_auth_is_admin(req->caller)) {
		role = kw_members_role(KW_MEMBERS_ORGS, org, req->caller->user_id);
		if (role == NULL) {
			kw_error_set(&req->err, KW_EFORBIDDEN, NULL,
			    "only the organization's members may provision keys in it");
			return KW_EFORBIDDEN;
		}
		if (strcmp(role, "internal_user_viewer") == 0) {
			kw_error_set(&req->err, KW_EFORBIDDEN, NULL,
			    "an internal_user_viewer of the organization provisions no keys");
			return KW_EFORBIDDEN;
		}
	}
	if ((rc = kw_auth_can_write(req)) != KW_OK)
		return rc;
	return KW_OK;
}

/*
 * Frees the alias for this caller: when a key holds it and it is a key
 * provisioned in this organization for the same caller (the same user, or
 * the master key for both), that key is revoked with its audit entry;
 * any other holder is 409 naming client_id.
 */
static enum kw_err
release_alias(struct prov_op *op, DB_TXN *txn, const char *alias)
{
	struct kw_req *req = op->req;
	DB *aliases = kw_store_db(req->store, KW_DB_ALIASES);
	char token[KW_TOKEN_LEN + 1];
	DBT k = { .data = (void *)alias, .size = (u_int32_t)strlen(alias) };
	DBT v = { .data = token, .ulen = KW_TOKEN_LEN, .flags = DB_DBT_USERMEM };
	json_object *old;
	const char *owner, *org;
	int same_owner;
	enum kw_err rc = kw_store_err(aliases->get(aliases, txn, &k, &v, DB_RMW));

	if (rc == KW_ENOTFOUND)
		return KW_OK;
	if (rc == KW_ENOMEM) {	/* a value longer than a token: not a row any key wrote */
		kw_error_set(&req->err, KW_ECONFLICT, "client_id", "this client_id is taken");
		return KW_ECONFLICT;
	}
	if (rc != KW_OK)
		return rc;
	token[v.size] = '\0';
	rc = kw_rec_get(req->store, txn, KW_DB_KEYS, token, KW_RMW, &old);
	if (rc == KW_ENOTFOUND)	/* an alias row without its key: drop it */
		return kw_store_err(aliases->del(aliases, txn, &k, 0));
	if (rc != KW_OK)
		return rc;
	owner = kw_json_str(old, "user_id");
	org = kw_json_str(old, "organization_id");
	same_owner = req->caller->user_id[0] != '\0' ?
	    owner != NULL && strcmp(owner, req->caller->user_id) == 0 :
	    owner == NULL && req->caller->is_master;
	if (!same_owner || org == NULL || strcmp(org, op->org_id) != 0 ||
	    !kw_json_bool(json_object_object_get(old, "metadata"), "provisioned")) {
		json_object_put(old);
		kw_error_set(&req->err, KW_ECONFLICT, "client_id",
		    "this client_id is bound to another member of the organization");
		return KW_ECONFLICT;
	}
	if ((rc = kw_keys_del(req->store, txn, old)) == KW_OK)
		rc = kw_audit_record(req, txn, "deleted", KW_TABLE_KEYS, token, old, NULL);
	json_object_put(old);
	return rc;
}

/* Appends each token of an owner index walk to baton, a JSON array. */
static int
collect_token(const char *token, void *baton)
{
	json_object_array_add(baton, json_object_new_string(token));
	return 0;
}

/*
 * Deletes, audited, the caller's provisioned keys that have expired: a
 * caller at KEYWARDEN_MAX_KEYS_PER_USER who provisions for many client
 * ids makes room from keys nobody can use any more.  Runs only at the
 * cap, so it reads at most the cap's worth of keys.
 */
static enum kw_err
drop_expired(struct kw_req *req, DB_TXN *txn)
{
	json_object *tokens = json_object_new_array(), *key;
	const char *token, *expires;
	time_t until;
	enum kw_err rc = kw_keys_owned_by(req->store, txn, 'u', req->caller->user_id,
	    collect_token, tokens);

	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(tokens); i++) {
		token = json_object_get_string(json_object_array_get_idx(tokens, i));
		rc = kw_rec_get(req->store, txn, KW_DB_KEYS, token, KW_RMW, &key);
		if (rc == KW_ENOTFOUND) {
			rc = KW_OK;	/* an index row without its record */
			continue;
		}
		expires = rc == KW_OK ? kw_json_str(key, "expires") : NULL;
		if (expires != NULL && kw_time_parse(expires, &until) == KW_OK &&
		    until <= req->now &&
		    kw_json_bool(json_object_object_get(key, "metadata"), "provisioned") &&
		    (rc = kw_keys_del(req->store, txn, key)) == KW_OK)
			rc = kw_audit_record(req, txn, "deleted", KW_TABLE_KEYS, token, key, NULL);
		json_object_put(key);
	}
	json_object_put(tokens);
	return rc;
}

/*
 * The caller's room for one more key (kw_keys_room), after dropping
 * their expired provisioned keys when they are at the cap.  Proxy admins
 * and the master key are not bound.
 */
static enum kw_err
check_room(struct kw_req *req, DB_TXN *txn)
{
	const char *user_id = req->caller->user_id[0] != '\0' ? req->caller->user_id : NULL;
	enum kw_err rc = KW_OK;

	if (kw_auth_is_admin(req->caller))
		return KW_OK;
	if ((rc = kw_keys_room(req->store, txn, user_id, &req->err)) != KW_EINVAL)
		return rc;
	memset(&req->err, 0, sizeof(req->err));
	if ((rc = drop_expired(req, txn)) != KW_OK)
		return rc;
	return kw_keys_room(req->store, txn, user_id, &req->err);
}

/*
 * The record of a provisioned key (owned): the standard key fields, its
 * alias, expiry, owner and organization; models bounded by the
 * organization's (an empty list: every model); key_type llm_api so it
 * calls models and manages nothing.  Never the plaintext.
 */
static json_object *
key_record(struct kw_req *req, json_object *org, const char *token, const char *name,
    const char *alias, const char *client_id, time_t expires)
{
	const struct kw_caller *c = req->caller;
	const char *by = c->user_id[0] != '\0' ? c->user_id : "default_user_id";
	json_object *rec = json_object_new_object(), *meta = json_object_new_object(), *models;

	json_object_object_add(rec, "token", json_object_new_string(token));
	json_object_object_add(rec, "key_name", json_object_new_string(name));
	json_object_object_add(rec, "key_alias", json_object_new_string(alias));
	kw_json_set_time(rec, "expires", expires);
	json_object_object_add(rec, "user_id",
	    c->user_id[0] != '\0' ? json_object_new_string(c->user_id) : NULL);
	json_object_object_add(rec, "team_id", NULL);
	json_object_object_add(rec, "organization_id",
	    json_object_new_string(kw_json_str(org, "organization_id")));
	models = json_object_object_get(org, "models");
	json_object_object_add(rec, "models", json_object_is_type(models, json_type_array) ?
	    kw_json_copy(models) : json_object_new_array());
	json_object_object_add(rec, "key_type", json_object_new_string("llm_api"));
	json_object_object_add(rec, "spend", json_object_new_double(0));
	json_object_object_add(rec, "max_budget", NULL);
	json_object_object_add(meta, "client_id", json_object_new_string(client_id));
	json_object_object_add(meta, "provisioned", json_object_new_boolean(1));
	json_object_object_add(rec, "metadata", meta);
	json_object_object_add(rec, "blocked", json_object_new_boolean(0));
	json_object_object_add(rec, "rotation_count", json_object_new_int(0));
	kw_json_set_time(rec, "created_at", req->now);
	kw_json_set_time(rec, "updated_at", req->now);
	json_object_object_add(rec, "created_by", json_object_new_string(by));
	json_object_object_add(rec, "updated_by", json_object_new_string(by));
	return rec;
}

/*
 * Counts one provisioning attempt of the caller in this minute's window,
 * unless provision_rpm are counted already (op->allowed 0).  Its own
 * transaction, committed whatever the attempt then comes to: a failing
 * attempt (an unknown organization, a caller who is no member, a
 * client_id bound to another) counts as much as a successful one, so the
 * limit also bounds probing.  Not flushed at commit, as rate windows are not.
 */
static enum kw_err
attempt_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct prov_op *op = baton;
	struct kw_req *req = op->req;
	char counter[KW_ID_MAX + 16];

	snprintf(counter, sizeof(counter), "prov|%s%s", req->caller->user_id[0] ? "u:" : "master",
	    req->caller->user_id);
	return kw_limits_window_add(st, txn, counter, req->now, kw_config.provision_rpm,
	    &op->allowed);
}

/*
 * The provisioning transaction: 404 for an unknown organization, 403,
 * 409 for a client_id bound to someone else; then
 * the previous key for this caller and client_id revoked, a new signed
 * token issued, its record and audit entries stored, and the answer built.
 */
static enum kw_err
provision_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct prov_op *op = baton;
	struct kw_req *req = op->req;
	char alias[KW_ID_MAX + 8], secret[TOKEN_MAX];
	char token[KW_TOKEN_LEN + 1], name[32], at[KW_TIME_LEN];
	time_t expires = req->now + (time_t)kw_config.provision_ttl;
	json_object *org, *rec = NULL;
	enum kw_err rc;

	json_object_put(op->answer);
	op->answer = NULL;
	rc = kw_rec_get(st, txn, KW_DB_ORGS, op->org_id, 0, &org);
	if (rc == KW_ENOTFOUND)
		kw_error_set(&req->err, KW_ENOTFOUND, "path.org", "no organization has this id");
	if (rc != KW_OK)
		return rc;
	if ((rc = may_provision(req, org)) != KW_OK)
		goto done;

	snprintf(alias, sizeof(alias), "%s%s:%s", ALIAS_PREFIX, op->org_id, op->client_id);
	if ((rc = release_alias(op, txn, alias)) != KW_OK || (rc = check_room(req, txn)) != KW_OK)
		goto done;
	if ((rc = kw_tokens_issue(expires, secret, sizeof(secret))) != KW_OK) {
		kw_log_error("provisioning: no signing key to issue a token with (%s)",
		    kw_err_name(rc));
		kw_error_set(&req->err, rc, NULL, "keys cannot be issued right now");
		goto done;
	}
	kw_crypto_sha256_hex(secret, strlen(secret), token);
	kw_keys_key_name(secret, name, sizeof(name));
	rec = key_record(req, org, token, name, alias, op->client_id, expires);
	if ((rc = kw_keys_put(st, txn, NULL, rec, &req->err)) == KW_OK &&
	    (rc = kw_audit_record(req, txn, "created", KW_TABLE_KEYS, token, NULL, rec)) == KW_OK) {
		/* stored: now the answer may carry what the store must never hold */
		kw_time_format(expires, at);
		op->answer = json_object_new_object();
		json_object_object_add(op->answer, "api_key", json_object_new_string(secret));
		json_object_object_add(op->answer, "base_url", base_url());
		json_object_object_add(op->answer, "expires_at", json_object_new_string(at));
	} else if (rc == KW_ECONFLICT) {
		/* the alias was freed above and the token is new: the store disagrees */
		kw_error_set(&req->err, KW_EINTERNAL, NULL, "the new key could not be stored");
		rc = KW_EINTERNAL;
	}
done:
	kw_crypto_wipe(secret, sizeof(secret));
	json_object_put(rec);
	json_object_put(org);
	return rc;
}

/*
 * POST /api/v1/org/{org}/inference/keys: a short-lived key for the
 * caller, a member of org (proxy admins and the master key: any org),
 * named by the body's client_id.  401 without a credential; 429 past
 * KEYWARDEN_PROVISION_RPM attempts this minute, failed ones counted too;
 * 426 for a client version (User-Agent, X-Client-Version) below
 * KEYWARDEN_MIN_CLIENT_VERSION, then
 * 404, 403 and 409 as provision_body says.  The answer {api_key, base_url,
 * expires_at} is the one place the key exists in plaintext.
 */
enum kw_err
kw_op_provision_key(struct kw_req *req, struct kw_resp *resp)
{
	struct prov_op op = {
		.req = req,
		.org_id = kw_req_path_param(req, "org"),
		.client_id = kw_json_str(req->body, "client_id"),
	};
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	if ((rc = kw_store_txn_flags(req->store, KW_TXN_NOSYNC, attempt_body, &op)) != KW_OK)
		return rc;
	if (!op.allowed) {
		op.retry_after = (int)(60 - req->now % 60);
		kw_error_set(&req->err, KW_ELIMIT, NULL,
		    "more than %u provisioning requests this minute: retry in %d s",
		    kw_config.provision_rpm, op.retry_after);
		kw_resp_header(req, resp, "Retry-After: %d", op.retry_after);
		return KW_ELIMIT;
	}
	if ((rc = check_client_version(req)) != KW_OK)
		return rc;
	/* the route and the schema say both are there */
	if (op.org_id == NULL || op.client_id == NULL) {
		kw_error_set(&req->err, KW_EVALID, "client_id", "client_id is required");
		return KW_EVALID;
	}
	rc = kw_store_txn(req->store, provision_body, &op);
	if (rc == KW_OK)
		kw_resp_json(resp, 200, op.answer);
	else
		json_object_put(op.answer);
	return rc;
}
