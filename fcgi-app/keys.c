/* keys.c: the one key model: key material, budget settlement, and storing a key record. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"

/* Writes a new key: "sk-" + 22 URL-safe base64 characters from 16 random bytes. */
void
kw_keys_new_secret(char out[KW_KEY_GENERATED_LEN + 1])
{
	unsigned char raw[16];

	memcpy(out, "sk-", 3);
	kw_crypto_random(raw, sizeof(raw));
	kw_crypto_b64url(raw, sizeof(raw), out + 3);
	kw_crypto_wipe(raw, sizeof(raw));
}

/* Writes the displayable name of a key, "sk-...abcd": never more than its last four characters. */
void
kw_keys_key_name(const char *key, char *out, size_t n)
{
	size_t len = strlen(key);

	snprintf(out, n, "sk-...%s", len > 4 ? key + len - 4 : "");
}

/*
 * Applies a budget reset that fell due: when rec's budget_reset_at is at or
 * before now, spend goes back to 0 and the next reset is computed from now.
 * Works on keys, teams and users alike.  Returns 1 when rec changed.  This
 * is how budgets reset without a cron job: every read and write settles.
 */
int
kw_budget_settle(json_object *rec, time_t now)
{
	const char *at = kw_json_str(rec, "budget_reset_at");
	const char *duration = kw_json_str(rec, "budget_duration");
	time_t due;

	if (at == NULL || duration == NULL || kw_time_parse(at, &due) != KW_OK || due > now)
		return 0;
	json_object_object_add(rec, "spend", json_object_new_double(0));
	kw_json_set_time(rec, "budget_reset_at", kw_time_budget_reset(duration, now));
	return 1;
}

static int
is_token(const char *s)
{
	size_t n = strspn(s, "0123456789abcdefABCDEF");

	return n == KW_TOKEN_LEN && s[n] == '\0';
}

/*
 * Writes the token of a key named by ref: ref itself (lower-cased) when it
 * is 64 hex characters, else the SHA-256 of ref.  Keys start with sk-, so
 * the two never meet.
 */
void
kw_keys_token_of(const char *ref, char token[KW_TOKEN_LEN + 1])
{
	if (is_token(ref)) {
		for (size_t i = 0; i <= KW_TOKEN_LEN; i++)
			token[i] = (char)tolower((unsigned char)ref[i]);
		return;
	}
	kw_crypto_sha256_hex(ref, strlen(ref), token);
}

/*
 * Reads the record of the key a caller presents (*out owned).  The
 * presented value is always hashed, so a hash is never a credential.  A
 * regenerated key's old secret still finds the record until its grace
 * period ends.  KW_ENOTFOUND when neither holds.
 */
enum kw_err
kw_keys_credential(struct kw_store *st, DB_TXN *txn, const char *presented, time_t now,
    json_object **out)
{
	char token[KW_TOKEN_LEN + 1];
	json_object *retired;
	const char *next, *until;
	time_t end;
	enum kw_err rc;

	kw_crypto_sha256_hex(presented, strlen(presented), token);
	rc = kw_rec_get(st, txn, KW_DB_KEYS, token, 0, out);
	if (rc != KW_ENOTFOUND)
		return rc;
	if ((rc = kw_rec_get(st, txn, KW_DB_RETIRED, token, 0, &retired)) != KW_OK)
		return rc;
	next = kw_json_str(retired, "token");
	until = kw_json_str(retired, "until");
	if (next != NULL && until != NULL && kw_time_parse(until, &end) == KW_OK && now < end)
		rc = kw_rec_get(st, txn, KW_DB_KEYS, next, 0, out);
	else
		rc = KW_ENOTFOUND;
	json_object_put(retired);
	return rc;
}

/* Remembers that old_token's secret still opens new_token's record until until. */
enum kw_err
kw_keys_retire(struct kw_store *st, DB_TXN *txn, const char *old_token, const char *new_token,
    time_t until)
{
	json_object *rec = json_object_new_object();
	enum kw_err rc;

	json_object_object_add(rec, "token", json_object_new_string(new_token));
	kw_json_set_time(rec, "until", until);
	rc = kw_rec_put(st, txn, KW_DB_RETIRED, old_token, rec, 0);
	json_object_put(rec);
	return rc;
}

static const struct {
	char kind;
	const char *field;
} owners[] = { { 'u', "user_id" }, { 't', "team_id" }, { 'o', "organization_id" } };

/* Writes the owner index key "<kind>:<id>" into buf; 0 when it does not fit. */
static int
owner_key(char kind, const char *id, char *buf, size_t n)
{
	int len = snprintf(buf, n, "%c:%s", kind, id);

	return len > 0 && (size_t)len < n;
}

/* Writes the creation index key: created_at then token, so it sorts by time. */
static void
created_key(json_object *rec, char *buf, size_t n)
{
	const char *at = kw_json_str(rec, "created_at");

	snprintf(buf, n, "%s%s", at ? at : "", kw_json_str(rec, "token"));
}

/* Adds (put=1) or removes (put=0) the index rows of rec, a key record. */
static enum kw_err
index_rows(struct kw_store *st, DB_TXN *txn, json_object *rec, int put, struct kw_error *err)
{
	const char *token = kw_json_str(rec, "token"), *alias = kw_json_str(rec, "key_alias");
	DB *aliases = kw_store_db(st, KW_DB_ALIASES), *by_owner = kw_store_db(st, KW_DB_KEY_OWNERS);
	DB *created = kw_store_db(st, KW_DB_KEY_CREATED);
	DBT tok = { .data = (void *)token, .size = (u_int32_t)strlen(token) };
	char buf[KW_ID_MAX + 3];	/* "u:" + an id; a creation key is shorter */
	enum kw_err rc = KW_OK;

	if (alias != NULL) {
		DBT a = { .data = (void *)alias, .size = (u_int32_t)strlen(alias) };

		if (put) {
			rc = kw_store_err(aliases->put(aliases, txn, &a, &tok, DB_NOOVERWRITE));
			if (rc == KW_ECONFLICT) {
				/* the row may be this key's already; a deadlock reading it is no conflict */
				enum kw_err got = kw_store_err(aliases->get(aliases, txn, &a, &tok,
				    DB_GET_BOTH));

				if (got != KW_ENOTFOUND)
					rc = got;
			}
			if (rc == KW_ECONFLICT && err != NULL)
				kw_error_set(err, KW_ECONFLICT, "key_alias",
				    "key_alias already exists: each key needs its own alias");
		} else {
			rc = kw_store_err(aliases->del(aliases, txn, &a, 0));
		}
		if (rc != KW_OK && !(rc == KW_ENOTFOUND && !put))
			return rc;
	}
	for (size_t i = 0; i < sizeof(owners) / sizeof(owners[0]); i++) {
		const char *id = kw_json_str(rec, owners[i].field);
		DBT k = { .data = buf };
		DBC *cur;

		if (id == NULL)
			continue;
		if (!owner_key(owners[i].kind, id, buf, sizeof(buf))) {
			kw_error_set(err, KW_EINVAL, owners[i].field, "longer than %d bytes", KW_ID_MAX);
			return KW_EINVAL;
		}
		k.size = (u_int32_t)strlen(buf);
		if (put) {
			rc = kw_store_err(by_owner->put(by_owner, txn, &k, &tok, DB_NODUPDATA));
			if (rc == KW_ECONFLICT)
				rc = KW_OK;
		} else if ((rc = kw_store_err(by_owner->cursor(by_owner, txn, &cur, 0))) == KW_OK) {
			/* delete exactly this (owner, token) pair among the owner's duplicates */
			rc = kw_store_err(cur->get(cur, &k, &tok, DB_GET_BOTH));
			if (rc == KW_OK)
				rc = kw_store_err(cur->del(cur, 0));
			cur->close(cur);
			if (rc == KW_ENOTFOUND)
				rc = KW_OK;
		}
		if (rc != KW_OK)
			return rc;
	}
	created_key(rec, buf, sizeof(buf));
	DBT c = { .data = buf, .size = (u_int32_t)strlen(buf) };
	rc = put ? kw_store_err(created->put(created, txn, &c, &tok, 0))
	    : kw_store_err(created->del(created, txn, &c, 0));
	return rc == KW_ENOTFOUND && !put ? KW_OK : rc;
}

/*
 * Stores rec (borrowed), a key record, under its "token" field, replacing
 * old (the record as read in this transaction; NULL for a new key), and
 * moves its alias, owner and creation index rows along.  KW_ECONFLICT with
 * err naming "key" or "key_alias" when the token or alias is taken: the
 * unique alias row is written in the same transaction, so of two racing
 * writers exactly one wins.
 */
enum kw_err
kw_keys_put(struct kw_store *st, DB_TXN *txn, json_object *old, json_object *rec,
    struct kw_error *err)
{
	const char *token = kw_json_str(rec, "token");
	enum kw_err rc;

	if (token == NULL)
		return KW_EINTERNAL;
	if (old != NULL && (rc = index_rows(st, txn, old, 0, NULL)) != KW_OK)
		return rc;
	if (old != NULL && strcmp(kw_json_str(old, "token"), token) != 0 &&
	    (rc = kw_rec_del(st, txn, KW_DB_KEYS, kw_json_str(old, "token"))) != KW_OK)
		return rc;
	rc = kw_rec_put(st, txn, KW_DB_KEYS, token, rec,
	    old == NULL || strcmp(kw_json_str(old, "token"), token) != 0);
	if (rc == KW_ECONFLICT) {
		kw_error_set(err, KW_ECONFLICT, "key", "this key already exists");
		return rc;
	}
	if (rc != KW_OK)
		return rc;
	return index_rows(st, txn, rec, 1, err);
}

/* Deletes a key record (as read in this transaction) and its index rows. */
enum kw_err
kw_keys_del(struct kw_store *st, DB_TXN *txn, json_object *rec)
{
	enum kw_err rc = index_rows(st, txn, rec, 0, NULL);

	return rc == KW_OK ? kw_rec_del(st, txn, KW_DB_KEYS, kw_json_str(rec, "token")) : rc;
}

/*
 * Visits the tokens of the keys owned by user (kind 'u'), team ('t') or
 * organization ('o') id, in token order, until visit returns non-zero.
 */
enum kw_err
kw_keys_owned_by(struct kw_store *st, DB_TXN *txn, char kind, const char *id,
    kw_token_visit visit, void *baton)
{
	DB *by_owner = kw_store_db(st, KW_DB_KEY_OWNERS);
	char buf[KW_ID_MAX + 3], token[KW_TOKEN_LEN + 1];
	DBT k = { .data = buf }, v = { .data = token, .ulen = KW_TOKEN_LEN, .flags = DB_DBT_USERMEM };
	DBC *cur;
	u_int32_t op = DB_SET;
	enum kw_err rc;

	if (!owner_key(kind, id, buf, sizeof(buf)))
		return KW_OK;
	k.size = (u_int32_t)strlen(buf);
	if ((rc = kw_store_err(by_owner->cursor(by_owner, txn, &cur, 0))) != KW_OK)
		return rc;
	while ((rc = kw_store_err(cur->get(cur, &k, &v, op))) == KW_OK) {
		token[v.size] = '\0';
		if (visit(token, baton))
			break;
		op = DB_NEXT_DUP;
	}
	cur->close(cur);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/*
 * Stores in *n how many keys user (kind 'u'), team ('t') or organization
 * ('o') id owns, from the owner index alone: a cursor on the owner's row
 * and DBC->count over its duplicates, never a walk of keys.db.  The row
 * is read for update, so two writers counting one owner take turns.
 */
enum kw_err
kw_keys_count_owned(struct kw_store *st, DB_TXN *txn, char kind, const char *id, size_t *n)
{
	DB *by_owner = kw_store_db(st, KW_DB_KEY_OWNERS);
	char buf[KW_ID_MAX + 3];
	DBT k = { .data = buf }, v = { .flags = DB_DBT_PARTIAL };	/* the key only, no value */
	DBC *cur;
	db_recno_t count = 0;
	enum kw_err rc;

	*n = 0;
	if (!owner_key(kind, id, buf, sizeof(buf)))
		return KW_OK;
	k.size = (u_int32_t)strlen(buf);
	if ((rc = kw_store_err(by_owner->cursor(by_owner, txn, &cur, 0))) != KW_OK)
		return rc;
	rc = kw_store_err(cur->get(cur, &k, &v, DB_SET | DB_RMW));
	if (rc == KW_OK)
		rc = kw_store_err(cur->count(cur, &count, 0));
	cur->close(cur);
	if (rc == KW_ENOTFOUND)
		return KW_OK;
	*n = count;
	return rc;
}

/*
 * KW_OK when user_id may own one more key under KEYWARDEN_MAX_KEYS_PER_USER;
 * KW_EINVAL with err naming "user_id" when the user owns that many
 * already: a 400, not a 429, since waiting does not make room.  A key of
 * no user (user_id NULL) and a cap of 0 always have room.  Who is exempt
 * (proxy admins) is the caller's decision.
 */
enum kw_err
kw_keys_room(struct kw_store *st, DB_TXN *txn, const char *user_id, struct kw_error *err)
{
	size_t n;
	enum kw_err rc;

	if (user_id == NULL || kw_config.max_keys_per_user == 0)
		return KW_OK;
	if ((rc = kw_keys_count_owned(st, txn, 'u', user_id, &n)) != KW_OK)
		return rc;
	if (n < kw_config.max_keys_per_user)
		return KW_OK;
	kw_error_set(err, KW_EINVAL, "user_id", "this user owns %zu keys, as many as "
	    "KEYWARDEN_MAX_KEYS_PER_USER allows: delete one first", n);
	return KW_EINVAL;
}

/*
 * Visits limit tokens from offset in creation order (newest first or
 * oldest first), positioning by record number: O(log n + limit).  *total
 * is the number of keys.
 */
enum kw_err
kw_keys_page_by_created(struct kw_store *st, DB_TXN *txn, int newest_first, size_t offset,
    size_t limit, kw_token_visit visit, void *baton, size_t *total)
{
	DB *created = kw_store_db(st, KW_DB_KEY_CREATED);
	DB_BTREE_STAT *stat = NULL;
	char token[KW_TOKEN_LEN + 1];
	DBT v = { .data = token, .ulen = KW_TOKEN_LEN, .flags = DB_DBT_USERMEM };
	DBC *cur;
	db_recno_t recno;
	enum kw_err rc;

	*total = 0;
	if ((rc = kw_store_err(created->stat(created, txn, &stat, DB_FAST_STAT))) != KW_OK)
		return rc;
	*total = stat->bt_nkeys;	/* exact: the database keeps record numbers */
	free(stat);
	if (offset >= *total || limit == 0)
		return KW_OK;
	if ((rc = kw_store_err(created->cursor(created, txn, &cur, 0))) != KW_OK)
		return rc;
	recno = (db_recno_t)(newest_first ? *total - offset : offset + 1);
	DBT k = { .data = &recno, .size = sizeof(recno) };
	rc = kw_store_err(cur->get(cur, &k, &v, DB_SET_RECNO));
	for (size_t n = 0; rc == KW_OK && n < limit; n++) {
		token[v.size] = '\0';
		if (visit(token, baton))
			break;
		/* k now holds the index key; only the value is wanted from here on */
		DBT skip = { .flags = DB_DBT_PARTIAL };
		rc = kw_store_err(cur->get(cur, &skip, &v, newest_first ? DB_PREV : DB_NEXT));
	}
	cur->close(cur);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

static int
reindex_one(const char *id, json_object *rec, void *baton)
{
	struct { struct kw_store *st; DB_TXN *txn; enum kw_err rc; } *b = baton;

	(void)id;
	b->rc = index_rows(b->st, b->txn, rec, 1, NULL);
	return b->rc != KW_OK;
}

/* Writes the owner and creation index rows of every key (migration from schema 1). */
enum kw_err
kw_keys_reindex(struct kw_store *st, DB_TXN *txn)
{
	struct { struct kw_store *st; DB_TXN *txn; enum kw_err rc; } b = { st, txn, KW_OK };
	enum kw_err rc = kw_rec_each(st, txn, KW_DB_KEYS, reindex_one, &b);

	return rc != KW_OK ? rc : b.rc;
}

/* The capabilities a key's permissions can grant over other keys. */
static const char *const capabilities[] = { "verify_keys", "select_provider_keys" };

/* True when the key's permissions grant a capability. */
static int
grants_capability(json_object *rec)
{
	json_object *permissions = json_object_object_get(rec, "permissions");

	for (size_t i = 0; i < sizeof(capabilities) / sizeof(capabilities[0]); i++)
		if (kw_json_bool(permissions, capabilities[i]))
			return 1;
	return 0;
}

/* True when user_id ("default_user_id": the master key) is a proxy admin now, read in txn. */
static int
is_proxy_admin(struct kw_store *st, DB_TXN *txn, const char *user_id, enum kw_err *rc)
{
	json_object *user = NULL;
	int admin;

	*rc = KW_OK;
	if (user_id == NULL)
		return 0;
	if (strcmp(user_id, "default_user_id") == 0)
		return 1;
	*rc = kw_rec_get(st, txn, KW_DB_USERS, user_id, 0, &user);
	if (*rc == KW_ENOTFOUND)
		*rc = KW_OK;
	admin = kw_json_str(user, "user_role") != NULL &&
	    strcmp(kw_json_str(user, "user_role"), "proxy_admin") == 0;
	json_object_put(user);
	return admin;
}

struct grant_scan {
	struct kw_store *st;
	DB_TXN *txn;
	json_object *revoke;	/* owned: the tokens to revoke */
	enum kw_err rc;
};

/* Gathers a key whose capability no proxy admin wrote: its creator and last writer were not one. */
static int
scan_grant(const char *id, json_object *rec, void *baton)
{
	struct grant_scan *g = baton;

	if (!grants_capability(rec))
		return 0;
	if (is_proxy_admin(g->st, g->txn, kw_json_str(rec, "created_by"), &g->rc) &&
	    is_proxy_admin(g->st, g->txn, kw_json_str(rec, "updated_by"), &g->rc))
		return 0;
	if (g->rc == KW_OK)
		json_object_array_add(g->revoke, json_object_new_string(id));
	return g->rc != KW_OK;
}

/*
 * Migration to schema 3: before it, any key's owner could write
 * permissions.verify_keys and select_provider_keys on their own keys.
 * Every key that grants one keeps it only when both its creator and its
 * last writer are proxy admins now; the others lose those capabilities,
 * each named (by key_name, never the key) in the log, for an admin to
 * grant again.
 */
enum kw_err
kw_keys_revoke_self_grants(struct kw_store *st, DB_TXN *txn)
{
	struct grant_scan g = { st, txn, json_object_new_array(), KW_OK };
	enum kw_err rc = kw_rec_each(st, txn, KW_DB_KEYS, scan_grant, &g);

	if (rc == KW_OK)
		rc = g.rc;
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(g.revoke); i++) {
		const char *token = json_object_get_string(json_object_array_get_idx(g.revoke, i));
		json_object *rec, *permissions;

		if ((rc = kw_rec_get(st, txn, KW_DB_KEYS, token, KW_RMW, &rec)) != KW_OK)
			break;
		permissions = json_object_object_get(rec, "permissions");
		for (size_t j = 0; j < sizeof(capabilities) / sizeof(capabilities[0]); j++)
			json_object_object_del(permissions, capabilities[j]);
		rc = kw_rec_put(st, txn, KW_DB_KEYS, token, rec, 0);
		kw_log_warn("schema 3: key %s loses verify_keys and select_provider_keys: no proxy "
		    "admin granted them; grant them again with /key/update as a proxy admin",
		    kw_json_str(rec, "key_name") ? kw_json_str(rec, "key_name") : "?");
		json_object_put(rec);
	}
	json_object_put(g.revoke);
	return rc;
}
