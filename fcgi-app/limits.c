/* limits.c: every limit a key carries, checked and counted in the store so all workers share one view. */
#include <assert.h>
#include <fnmatch.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"

#define WINDOW_SECS 60		/* rate limits count on fixed UTC minutes */
#define RECEIPT_SECS 86400	/* a usage report's request_id is remembered this long */
#define BREACH_SECS (7 * 86400)	/* a Venice key's limit breach is listed this long */

/*
 * A counter in counters.db: the value of the window that starts (rates)
 * or ends (model budgets) at `window`.  A counter whose window has passed
 * reads as zero, so nothing ever has to reset them.
 */
struct counter {
	int64_t window;
	double value;
};

/*
 * A lease row in leases.db: a request in flight, what it reserved and when
 * it lapses.  A row of LEASE_V1_SIZE (cost and until only, as written
 * before tokens were reserved) reads with no tokens.
 */
struct lease {
	double cost;		/* reserved against every budget of the row's owner */
	int64_t until;
	double tokens;		/* reserved against the owner's tpm windows */
	uint32_t flags;		/* LEASE_NAMED */
	uint32_t unused;
};
#define LEASE_V1_SIZE (sizeof(double) + sizeof(int64_t))

/* keywarden named the lease (the request had no id): a report without request_id settles it */
#define LEASE_NAMED 1u

/* The longest owner id of a lease row: a model owner is "<token>|<model>". */
#define LEASE_OWNER_MAX (KW_TOKEN_LEN + 1 + KW_ID_MAX)

/* Reads a lease row's value into *l; 0 when it is neither layout. */
static int
lease_read(const DBT *v, struct lease *l)
{
	memset(l, 0, sizeof(*l));
	if (v->size != sizeof(*l) && v->size != LEASE_V1_SIZE)
		return 0;
	memcpy(l, v->data, v->size);
	return 1;
}

static const char *const code_names[] = {
	[KW_V_VALID] = "VALID",
	[KW_V_NOT_FOUND] = "NOT_FOUND",
	[KW_V_BLOCKED] = "BLOCKED",
	[KW_V_EXPIRED] = "EXPIRED",
	[KW_V_TEAM_BLOCKED] = "TEAM_BLOCKED",
	[KW_V_USER_BLOCKED] = "USER_BLOCKED",
	[KW_V_MODEL_NOT_ALLOWED] = "MODEL_NOT_ALLOWED",
	[KW_V_ROUTE_NOT_ALLOWED] = "ROUTE_NOT_ALLOWED",
	[KW_V_BUDGET_EXCEEDED] = "BUDGET_EXCEEDED",
	[KW_V_RATE_LIMITED] = "RATE_LIMITED",
	[KW_V_DUPLICATE_REQUEST] = "DUPLICATE_REQUEST",
	[KW_V_USD_LIMIT] = "API_KEY_USD_SPEND_LIMIT_EXCEEDED",
	[KW_V_DIEM_LIMIT] = "API_KEY_DIEM_SPEND_LIMIT_EXCEEDED",
	[KW_V_END_USER_BLOCKED] = "END_USER_BLOCKED",
};

const char *
kw_verdict_code_name(enum kw_verdict_code code)
{
	return code_names[code];
}

/* --- counters ------------------------------------------------------ */

/* Reads counter name into *c; a missing counter is zero in no window. */
static enum kw_err
counter_get(struct kw_store *st, DB_TXN *txn, const char *name, int rmw, struct counter *c)
{
	DB *db = kw_store_db(st, KW_DB_COUNTERS);
	DBT k = { .data = (void *)name, .size = (u_int32_t)strlen(name) };
	DBT v = { .data = c, .ulen = sizeof(*c), .flags = DB_DBT_USERMEM };
	enum kw_err rc = kw_store_err(db->get(db, txn, &k, &v, rmw ? DB_RMW : 0));

	if (rc == KW_ENOTFOUND || (rc == KW_OK && v.size != sizeof(*c))) {
		memset(c, 0, sizeof(*c));
		return KW_OK;
	}
	return rc;
}

static enum kw_err
counter_put(struct kw_store *st, DB_TXN *txn, const char *name, const struct counter *c)
{
	DB *db = kw_store_db(st, KW_DB_COUNTERS);
	DBT k = { .data = (void *)name, .size = (u_int32_t)strlen(name) };
	DBT v = { .data = (void *)c, .size = sizeof(*c) };

	return kw_store_err(db->put(db, txn, &k, &v, 0));
}

/*
 * The value of a rate counter in the window starting at window (0 when it
 * is an older one).  rmw takes the write lock at once when the caller will
 * add to it: two checks that both read, then both write, would deadlock.
 */
static enum kw_err
rate_used(struct kw_store *st, DB_TXN *txn, const char *name, int64_t window, int rmw,
    double *used)
{
	struct counter c;
	enum kw_err rc = counter_get(st, txn, name, rmw, &c);

	*used = rc == KW_OK && c.window == window ? c.value : 0;
	return rc;
}

/* Adds n to a rate counter in the window starting at window. */
static enum kw_err
rate_add(struct kw_store *st, DB_TXN *txn, const char *name, int64_t window, double n)
{
	struct counter c;
	enum kw_err rc = counter_get(st, txn, name, 1, &c);

	if (rc != KW_OK)
		return rc;
	if (c.window != window) {
		c.window = window;
		c.value = 0;
	}
	c.value += n;
	return counter_put(st, txn, name, &c);
}

/*
 * Counts one event in the fixed UTC minute of now under counter name,
 * unless limit events are already counted there: then *allowed is 0 and
 * nothing is counted.  For the faces' own rate limits (key creation,
 * provisioning), inside the caller's transaction.
 */
enum kw_err
kw_limits_window_add(struct kw_store *st, DB_TXN *txn, const char *name, time_t now, double limit,
    int *allowed)
{
	int64_t window = now - now % WINDOW_SECS;
	struct counter c;
	enum kw_err rc = counter_get(st, txn, name, 1, &c);

	*allowed = 0;
	if (rc != KW_OK)
		return rc;
	if (c.window != window) {
		c.window = window;
		c.value = 0;
	}
	if (c.value >= limit)
		return KW_OK;
	*allowed = 1;
	c.value += 1;
	return counter_put(st, txn, name, &c);
}

/*
 * A key's spend on one model in the current period of time_period: the
 * counter holds the period's end, and a period that has ended reads as 0.
 */
static enum kw_err
model_spend(struct kw_store *st, DB_TXN *txn, const char *name, const char *period,
    time_t now, int rmw, struct counter *c)
{
	enum kw_err rc = counter_get(st, txn, name, rmw, c);

	if (rc == KW_OK && (c->window == 0 || c->window <= now)) {
		c->window = period ? kw_time_budget_reset(period, now) : 0;
		c->value = 0;
	}
	return rc;
}

/* --- request ids --------------------------------------------------- */

/*
 * A request id's part of a lease or receipt row name: "sha256:" and the
 * hex SHA-256 of the whole id.  Ids differ in any byte, so the names do: a
 * name cut to fit a buffer made distinct ids that shared a long beginning
 * one receipt, and one report settled them all.
 */
#define ID_PART_LEN (7 + KW_SHA256_HEX_LEN)

static void
id_part(const char *request_id, char out[ID_PART_LEN + 1])
{
	memcpy(out, "sha256:", 7);
	kw_crypto_sha256_hex(request_id, strlen(request_id), out + 7);
}

/*
 * Before the digest, rows were named with the id itself ("r|<token>|<id>"
 * in a 224-byte name, so intact for ids of at most 156 bytes).  Such rows
 * are still read: a receipt dedupes a retried report for a day, a lease
 * settles within lease_secs; both then age out, and no row of that form is
 * written any more.  True when id's legacy name was stored whole.
 */
#define LEGACY_NAME_MAX (KW_TOKEN_LEN + 160)

static int
legacy_named(const char *request_id)
{
	return strlen(request_id) + KW_TOKEN_LEN + 3 < LEGACY_NAME_MAX;
}

/* --- leases -------------------------------------------------------- */

/*
 * Lease rows are "<kind>|<length>:<id>|<part>" (part: id_part of the
 * request id): the length makes the prefix of one owner never the prefix
 * of another ("a" and "a|b").
 */
static int
lease_prefix(char kind, const char *id, char *buf, size_t n)
{
	int len = snprintf(buf, n, "%c|%zu:%s|", kind, strlen(id), id);

	return len > 0 && (size_t)len < n;
}

struct in_flight {
	int64_t count;		/* leases not yet lapsed */
	double reserved;	/* their reserved cost */
	double tokens;		/* their reserved tokens */
	int64_t first_until;	/* when the soonest of them lapses */
};

/*
 * Counts the leases of one owner still in flight at now, deleting lapsed
 * ones as it goes (a slot that was never returned comes back this way).
 * rmw takes the write locks at once, for a check that will add a lease:
 * two checks that both read, then both write, would deadlock.
 */
static enum kw_err
leases_of(struct kw_store *st, DB_TXN *txn, char kind, const char *id, time_t now, int rmw,
    struct in_flight *out)
{
	DB *db = kw_store_db(st, KW_DB_LEASES);
	char prefix[LEASE_OWNER_MAX + 32];
	struct lease l;
	/* REALLOC for both: the row after an owner's last lease may be another kind */
	DBT k = { .flags = DB_DBT_REALLOC }, v = { .flags = DB_DBT_REALLOC };
	DBC *cur;
	size_t plen;
	enum kw_err rc;

	memset(out, 0, sizeof(*out));
	if (id == NULL || !lease_prefix(kind, id, prefix, sizeof(prefix)))
		return KW_OK;
	plen = strlen(prefix);
	if ((rc = kw_store_err(db->cursor(db, txn, &cur, 0))) != KW_OK)
		return rc;
	if ((k.data = malloc(plen)) == NULL) {
		cur->close(cur);
		return KW_ENOMEM;
	}
	memcpy(k.data, prefix, plen);
	k.size = (u_int32_t)plen;
	/*
	 * A dry run reads with read locks only.  Deleting a lapsed row upgrades
	 * the lock (a deadlock there is retried by kw_store_txn).
	 */
	rc = kw_store_err(cur->get(cur, &k, &v, DB_SET_RANGE | (rmw ? DB_RMW : 0)));
	while (rc == KW_OK && k.size >= plen && memcmp(k.data, prefix, plen) == 0) {
		if (lease_read(&v, &l) && l.until > now) {
			out->count++;
			out->reserved += l.cost;
			out->tokens += l.tokens;
			if (out->first_until == 0 || l.until < out->first_until)
				out->first_until = l.until;
		} else if ((rc = kw_store_err(cur->del(cur, 0))) != KW_OK) {
			break;
		}
		rc = kw_store_err(cur->get(cur, &k, &v, DB_NEXT | (rmw ? DB_RMW : 0)));
	}
	cur->close(cur);
	free(k.data);
	free(v.data);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/* Puts or deletes owner id's lease row for the request whose name part is part. */
static enum kw_err
lease_row(struct kw_store *st, DB_TXN *txn, char kind, const char *id, const char *part,
    const struct lease *l, int put)
{
	DB *db = kw_store_db(st, KW_DB_LEASES);
	char buf[LEASE_OWNER_MAX + 32 + KW_REQUEST_ID_BYTES];
	DBT k = { .data = buf }, v = { .data = (void *)l, .size = sizeof(*l) };
	size_t plen;
	enum kw_err rc;

	if (id == NULL || !lease_prefix(kind, id, buf, LEASE_OWNER_MAX + 32))
		return KW_OK;
	plen = strlen(buf);
	if (plen + strlen(part) >= sizeof(buf))
		return KW_EINTERNAL;	/* a part is an id_part or a legacy id: it fits */
	strcpy(buf + plen, part);
	k.size = (u_int32_t)strlen(buf);
	rc = kw_store_err(put ? db->put(db, txn, &k, &v, 0) : db->del(db, txn, &k, 0));
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/*
 * The owners a lease is counted against: the key, its team, its user, its
 * organization, and with model the key's limits on that model (the row
 * owner "<token>|<model>").
 */
struct owners {
	const char *token, *team_id, *user_id, *org_id, *model;
	const char *end_user;	/* the request's end user (LiteLLM customer) */
};

/* The owner id of key token's limits on model, in buf (LEASE_OWNER_MAX + 1); 0 when too long. */
static int
model_owner(const char *token, const char *model, char *buf, size_t n)
{
	int len = snprintf(buf, n, "%s|%s", token, model);

	return len > 0 && (size_t)len < n;
}

/* The owners a lease's index row names (borrowed from index). */
static void
owners_of(json_object *index, struct owners *o)
{
	o->token = kw_json_str(index, "token");
	o->team_id = kw_json_str(index, "team_id");
	o->user_id = kw_json_str(index, "user_id");
	o->org_id = kw_json_str(index, "organization_id");	/* absent from older rows */
	o->model = kw_json_str(index, "model");
	o->end_user = kw_json_str(index, "end_user");	/* absent from older rows */
}

/*
 * The index row of a lease, "l|<token>|<part>": a request id names a lease
 * of one key only, so one key's usage never settles another's.  The row's
 * value is JSON holding the whole request_id, the owners and the time it
 * lapses.  The names fit LEASE_NAME_MAX for any part.
 */
#define LEASE_NAME_MAX (KW_TOKEN_LEN + 4 + KW_REQUEST_ID_BYTES)

static void
lease_name(char buf[LEASE_NAME_MAX], const char *token, const char *part)
{
	snprintf(buf, LEASE_NAME_MAX, "l|%s|%s", token, part);
}

/*
 * Takes (put=1) or returns (put=0) the lease request_id for every owner,
 * with its index row; part is the rows' name part (id_part of request_id,
 * or a legacy row's own).
 */
static enum kw_err
lease_write(struct kw_store *st, DB_TXN *txn, const struct owners *o, const char *request_id,
    const char *part, const struct lease *l, int put)
{
	DB *db = kw_store_db(st, KW_DB_LEASES);
	json_object *index = json_object_new_object();
	char name[LEASE_NAME_MAX], model[LEASE_OWNER_MAX + 1];
	DBT k = { .data = name }, v;
	enum kw_err rc;

	lease_name(name, o->token, part);
	k.size = (u_int32_t)strlen(name);
	json_object_object_add(index, "request_id", json_object_new_string(request_id));
	json_object_object_add(index, "token", json_object_new_string(o->token));
	json_object_object_add(index, "team_id", o->team_id ? json_object_new_string(o->team_id) : NULL);
	json_object_object_add(index, "user_id", o->user_id ? json_object_new_string(o->user_id) : NULL);
	if (o->org_id != NULL)
		json_object_object_add(index, "organization_id", json_object_new_string(o->org_id));
	if (o->model != NULL)
		json_object_object_add(index, "model", json_object_new_string(o->model));
	if (o->end_user != NULL)
		json_object_object_add(index, "end_user", json_object_new_string(o->end_user));
	json_object_object_add(index, "until", json_object_new_int64(l->until));
	v = (DBT){ .data = (void *)json_object_to_json_string_ext(index, JSON_C_TO_STRING_PLAIN) };
	v.size = (u_int32_t)strlen(v.data);
	if ((rc = lease_row(st, txn, 'k', o->token, part, l, put)) == KW_OK &&
	    (rc = lease_row(st, txn, 't', o->team_id, part, l, put)) == KW_OK &&
	    (rc = lease_row(st, txn, 'u', o->user_id, part, l, put)) == KW_OK &&
	    (rc = lease_row(st, txn, 'o', o->org_id, part, l, put)) == KW_OK &&
	    (rc = lease_row(st, txn, 'e', o->end_user, part, l, put)) == KW_OK &&
	    (o->model == NULL || !model_owner(o->token, o->model, model, sizeof(model)) ||
	    (rc = lease_row(st, txn, 'm', model, part, l, put)) == KW_OK)) {
		rc = kw_store_err(put ? db->put(db, txn, &k, &v, 0) : db->del(db, txn, &k, 0));
		if (rc == KW_ENOTFOUND)
			rc = KW_OK;
	}
	json_object_put(index);
	return rc;
}

/* Reads the lease index row named by token and part into *index (owned); KW_ENOTFOUND. */
static enum kw_err
lease_index_named(struct kw_store *st, DB_TXN *txn, const char *token, const char *part,
    json_object **index)
{
	DB *db = kw_store_db(st, KW_DB_LEASES);
	char name[LEASE_NAME_MAX];
	DBT k = { .data = name }, v = { .flags = DB_DBT_MALLOC };
	enum kw_err rc;

	lease_name(name, token, part);
	k.size = (u_int32_t)strlen(name);
	if ((rc = kw_store_err(db->get(db, txn, &k, &v, DB_RMW))) != KW_OK)
		return rc;
	rc = kw_rec_parse(v.data, v.size, index);
	free(v.data);
	return rc;
}

/*
 * Reads the index row of key token's lease request_id into *index (owned),
 * and into part the name part its rows carry: the digest, or for a lease
 * taken before it, the id itself.  KW_ENOTFOUND when the key holds no such
 * lease.
 */
static enum kw_err
lease_index(struct kw_store *st, DB_TXN *txn, const char *token, const char *request_id,
    json_object **index, char part[KW_REQUEST_ID_BYTES + 1])
{
	enum kw_err rc;

	id_part(request_id, part);
	rc = lease_index_named(st, txn, token, part, index);
	if (rc == KW_ENOTFOUND && legacy_named(request_id)) {
		snprintf(part, KW_REQUEST_ID_BYTES + 1, "%s", request_id);
		rc = lease_index_named(st, txn, token, part, index);
	}
	return rc;
}

/* Returns the lease of index, its index row (owned; put here) named by part, for every owner. */
static enum kw_err
lease_release(struct kw_store *st, DB_TXN *txn, json_object *index, const char *part)
{
	struct owners o;
	struct lease none = { 0 };
	const char *request_id = kw_json_str(index, "request_id");
	enum kw_err rc;

	owners_of(index, &o);
	rc = o.token && request_id ? lease_write(st, txn, &o, request_id, part, &none, 0) : KW_OK;
	json_object_put(index);
	return rc;
}

/* Returns key token's lease request_id, wherever its owners were, if it is still held. */
static enum kw_err
lease_settle(struct kw_store *st, DB_TXN *txn, const char *token, const char *request_id)
{
	json_object *index;
	char part[KW_REQUEST_ID_BYTES + 1];
	enum kw_err rc = lease_index(st, txn, token, request_id, &index, part);

	if (rc == KW_ENOTFOUND)
		return KW_OK;
	return rc != KW_OK ? rc : lease_release(st, txn, index, part);
}

/*
 * Returns the oldest lease keywarden named for key token (LEASE_NAMED)
 * still held at now: a usage report without request_id is for one of the
 * requests that came without one, and the authorizer's gateway cannot
 * learn the name it was given.
 */
static enum kw_err
lease_settle_oldest(struct kw_store *st, DB_TXN *txn, const char *token, time_t now)
{
	DB *db = kw_store_db(st, KW_DB_LEASES);
	char prefix[KW_TOKEN_LEN + 32], oldest[KW_REQUEST_ID_BYTES + 1] = "";
	DBT k = { .flags = DB_DBT_REALLOC }, v = { .flags = DB_DBT_REALLOC };
	json_object *index;
	int64_t first = 0;
	struct lease l;
	size_t plen;
	DBC *cur;
	enum kw_err rc;

	if (!lease_prefix('k', token, prefix, sizeof(prefix)))
		return KW_OK;
	plen = strlen(prefix);
	if ((rc = kw_store_err(db->cursor(db, txn, &cur, 0))) != KW_OK)
		return rc;
	if ((k.data = strdup(prefix)) == NULL) {
		cur->close(cur);
		return KW_ENOMEM;
	}
	k.size = (u_int32_t)plen;
	rc = kw_store_err(cur->get(cur, &k, &v, DB_SET_RANGE | DB_RMW));
	while (rc == KW_OK && k.size >= plen && memcmp(k.data, prefix, plen) == 0) {
		/* the row's name ends in its part: the id's digest (or a legacy id) */
		if (lease_read(&v, &l) && (l.flags & LEASE_NAMED) && l.until > now &&
		    (first == 0 || l.until < first) && k.size - plen < sizeof(oldest)) {
			first = l.until;
			memcpy(oldest, (char *)k.data + plen, k.size - plen);
			oldest[k.size - plen] = '\0';
		}
		rc = kw_store_err(cur->get(cur, &k, &v, DB_NEXT | DB_RMW));
	}
	cur->close(cur);
	free(k.data);
	free(v.data);
	if (rc != KW_OK && rc != KW_ENOTFOUND)
		return rc;
	if (oldest[0] == '\0')
		return KW_OK;
	if ((rc = lease_index_named(st, txn, token, oldest, &index)) == KW_ENOTFOUND)
		return KW_OK;
	return rc != KW_OK ? rc : lease_release(st, txn, index, oldest);
}

/* The receipt of a usage report: "r|<token>|<part>", the id's digest as its part. */
#define RECEIPT_NAME_MAX (KW_TOKEN_LEN + 4 + ID_PART_LEN)

static void
receipt_name(char buf[RECEIPT_NAME_MAX], const char *token, const char *request_id)
{
	char part[ID_PART_LEN + 1];

	id_part(request_id, part);
	snprintf(buf, RECEIPT_NAME_MAX, "r|%s|%s", token, part);
}

/* True when a receipt of the old form, "r|<token>|<request_id>", holds request_id. */
static enum kw_err
legacy_receipt(struct kw_store *st, DB_TXN *txn, const char *token, const char *request_id,
    int *found)
{
	DB *receipts = kw_store_db(st, KW_DB_RECEIPTS);
	char name[LEGACY_NAME_MAX];
	DBT k = { .data = name }, v = { .flags = DB_DBT_PARTIAL };
	enum kw_err rc;

	*found = 0;
	if (!legacy_named(request_id))
		return KW_OK;
	snprintf(name, sizeof(name), "r|%s|%s", token, request_id);
	k.size = (u_int32_t)strlen(name);
	rc = kw_store_err(receipts->get(receipts, txn, &k, &v, 0));
	*found = rc == KW_OK;
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/*
 * True when key token already has request_id in flight or reported.  A
 * request id comes from the client (x-request-id) or the gateway; reused,
 * it would let two requests share one slot, or one report count for two.
 */
static enum kw_err
request_id_used(struct kw_store *st, DB_TXN *txn, const char *token, const char *request_id,
    int *used)
{
	DB *receipts = kw_store_db(st, KW_DB_RECEIPTS);
	char name[RECEIPT_NAME_MAX], part[KW_REQUEST_ID_BYTES + 1];
	DBT k = { .data = name }, v = { .flags = DB_DBT_PARTIAL };
	json_object *held = NULL;
	enum kw_err rc = lease_index(st, txn, token, request_id, &held, part);

	json_object_put(held);
	*used = rc == KW_OK;
	if (rc != KW_OK && rc != KW_ENOTFOUND)
		return rc;
	if (*used)
		return KW_OK;
	receipt_name(name, token, request_id);
	k.size = (u_int32_t)strlen(name);
	rc = kw_store_err(receipts->get(receipts, txn, &k, &v, 0));
	*used = rc == KW_OK;
	if (rc == KW_ENOTFOUND)
		return legacy_receipt(st, txn, token, request_id, used);
	return rc;
}

/* --- models and routes ------------------------------------------------ */

/*
 * True when the models list allows model: an empty or absent list, "*",
 * "all-proxy-models", an exact name, or a shell wildcard (openai/ and a star).
 * "all-team-models" defers to team_models.
 */
int
kw_limits_models_allow(json_object *models, json_object *team_models, const char *model)
{
	size_t n = models ? json_object_array_length(models) : 0;

	if (n == 0)
		return 1;
	for (size_t i = 0; i < n; i++) {
		const char *m = json_object_get_string(json_object_array_get_idx(models, i));

		if (m == NULL)
			continue;
		if (strcmp(m, "*") == 0 || strcmp(m, "all-proxy-models") == 0 ||
		    strcmp(m, model) == 0 || (strchr(m, '*') != NULL && fnmatch(m, model, 0) == 0))
			return 1;
		if (strcmp(m, "all-team-models") == 0 &&
		    kw_limits_models_allow(team_models, NULL, model))
			return 1;
	}
	return 0;
}

static int
is_management_route(const char *route)
{
	static const char *const roots[] = {
		"/key", "/team", "/user", "/audit", "/health", "/openapi.json", "/v2/key",
	};

	for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++) {
		size_t n = strlen(roots[i]);

		if (strncmp(route, roots[i], n) == 0 && (route[n] == '\0' || route[n] == '/'))
			return 1;
	}
	return 0;
}

static int
hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* True when s[0..n) holds an escape of '.', '/' or '\\' (%2e, %2f, %5c, any case). */
static int
has_escaped_separator(const char *s, size_t n)
{
	for (size_t i = 0; i + 2 < n; i++)
		if (s[i] == '%' && ((s[i + 1] == '2' && strchr("eEfF", s[i + 2]) != NULL) ||
		    (s[i + 1] == '5' && (s[i + 2] == 'c' || s[i + 2] == 'C'))))
			return 1;
	return 0;
}

/*
 * Writes the path a web server hands on for raw, a request's path as the
 * client sent it (n bytes, no query), into out (n + 1 bytes or more):
 * each segment percent-decoded, as lighttpd, Apache and nginx decode it.
 * What servers rewrite or split, and differ on, is refused instead of
 * guessed at: a dot segment ("." or "..", also as %2e), an encoded
 * separator (%2f, %5c) or a backslash, an escape that decodes to one of
 * those (%252e), a malformed escape, a NUL, text that is not UTF-8.
 * KW_OK, or KW_EINVAL with *why (static) saying which.
 */
enum kw_err
kw_limits_route_path(const char *raw, size_t n, char *out, const char **why)
{
	size_t o = 0, seg = 0;

	*why = NULL;
	if (n == 0 || raw[0] != '/') {
		*why = "the path must start with /";
		return KW_EINVAL;
	}
	for (size_t i = 0; i <= n; i++) {
		int hi, lo;

		if (i == n || raw[i] == '/') {
			size_t len = o - seg;

			if ((len == 1 && out[seg] == '.') ||
			    (len == 2 && out[seg] == '.' && out[seg + 1] == '.')) {
				*why = "the path has a dot segment (. or ..)";
				return KW_EINVAL;
			}
			if (i < n)
				out[o++] = '/';
			seg = o;
			continue;
		}
		if (raw[i] == '\\') {
			*why = "the path has a backslash";
			return KW_EINVAL;
		}
		if (raw[i] != '%') {
			out[o++] = raw[i];
			continue;
		}
		if (i + 2 >= n || (hi = hex_digit((unsigned char)raw[i + 1])) < 0 ||
		    (lo = hex_digit((unsigned char)raw[i + 2])) < 0) {
			*why = "the path has a malformed percent escape";
			return KW_EINVAL;
		}
		out[o] = (char)(hi << 4 | lo);
		if (out[o] == '/' || out[o] == '\\') {
			*why = "the path has an encoded separator (%2f or %5c)";
			return KW_EINVAL;
		}
		if (out[o] == '\0') {
			*why = "the path has an encoded NUL";
			return KW_EINVAL;
		}
		o++;
		i += 2;
	}
	out[o] = '\0';
	if (has_escaped_separator(out, o)) {
		*why = "the path has a doubly encoded dot or separator";
		return KW_EINVAL;
	}
	if (!kw_valid_utf8(out, o)) {
		*why = "the path is not UTF-8";
		return KW_EINVAL;
	}
	return KW_OK;
}

/* One allowed_routes entry against a route: wildcard, prefix, exact (with or without /v1). */
static int
route_matches(const char *pattern, const char *route)
{
	size_t n = strlen(pattern);

	if (strcmp(pattern, "llm_api_routes") == 0)
		return !is_management_route(route);
	if (strchr(pattern, '*') != NULL)
		return fnmatch(pattern, route, 0) == 0;
	if (n > 0 && pattern[n - 1] == '/')
		return strncmp(route, pattern, n) == 0;
	if (strcmp(route, pattern) == 0)
		return 1;
	return strncmp(route, "/v1/", 4) == 0 && strcmp(route + 3, pattern) == 0;
}

static int
routes_allow(json_object *routes, const char *route)
{
	size_t n = routes ? json_object_array_length(routes) : 0;

	if (n == 0)
		return 1;
	for (size_t i = 0; i < n; i++) {
		const char *p = json_object_get_string(json_object_array_get_idx(routes, i));

		if (p != NULL && route_matches(p, route))
			return 1;
	}
	return 0;
}

/*
 * True when routes (a key's allowed_routes, borrowed) let a request to
 * raw, its path as sent, through: an empty or absent list allows every
 * path; otherwise the path as the server hands it on (kw_limits_route_path)
 * must match an entry, and a path that cannot be normalised matches none.
 * LiteLLM applies a key's allowed_routes to every route, management ones
 * included (RouteChecks.is_virtual_key_allowed_to_call_route in
 * litellm/proxy/auth/route_checks.py); so do the authorizer, /key/verify
 * and every management request (kw_auth_caller).
 */
int
kw_limits_routes_allow(json_object *routes, const char *raw)
{
	size_t n = strlen(raw);
	const char *why;
	char *path;
	int allowed;

	if (routes == NULL || !json_object_is_type(routes, json_type_array) ||
	    json_object_array_length(routes) == 0)
		return 1;
	if ((path = malloc(n + 1)) == NULL)
		return 0;
	allowed = kw_limits_route_path(raw, n, path, &why) == KW_OK && routes_allow(routes, path);
	free(path);
	return allowed;
}

/* --- summaries ------------------------------------------------------------ */

/*
 * What a check needs of a key, team, user or organization, in a fixed
 * binary form kept beside the JSON record (summaries.db, written by every
 * kw_rec_put of those tables): the authorizer's path reads these and
 * parses no JSON.  A summary with another version, or none, is rebuilt
 * from the record (version 1 carried no organization_id).
 */
#define SUMMARY_VERSION 4	/* 3: S_BUDGET; 4: S_MEMBER_BUDGETS */

enum {
	S_BLOCKED = 1 << 0,
	S_MODELS = 1 << 1,		/* a non-empty models list */
	S_ROUTES = 1 << 2,		/* a non-empty allowed_routes list */
	S_MODEL_LIMITS = 1 << 3,	/* model_max_budget, model_rpm_limit or model_tpm_limit */
	S_VENICE = 1 << 4,		/* a Venice key: its type and consumption limits are in the record */
	S_ALIASES = 1 << 5,		/* a key's aliases or a team's model_aliases */
	S_BUDGET = 1 << 6,		/* a budget_id: a LiteLLM budget's limits fill the key's */
	S_MEMBER_BUDGETS = 1 << 7,	/* a team with a member's max_budget_in_team */
};

struct summary {
	uint32_t version, flags;
	int64_t expires, budget_reset_at;	/* 0 when none */
	double max_budget, soft_budget, spend, rpm_limit, tpm_limit, max_parallel;	/* NAN: none */
	/* the key's team_id, user_id and organization_id follow (a team's: its organization_id) */
	uint16_t team_len, user_len, org_len, unused;
};

/* The ids a summary carries, each "" when none; NULL members are not wanted. */
struct party_ids {
	char *team, *user, *org;	/* KW_ID_MAX + 1 bytes each */
};

static int
non_empty(json_object *rec, const char *name)
{
	json_object *v = json_object_object_get(rec, name);

	return (json_object_is_type(v, json_type_array) && json_object_array_length(v) > 0) ||
	    (json_object_is_type(v, json_type_object) && json_object_object_length(v) > 0);
}

static int64_t
time_of(json_object *rec, const char *name)
{
	time_t t;

	return kw_time_parse(kw_json_str(rec, name), &t) == KW_OK ? (int64_t)t : 0;
}

/* True when a member entry of rec's members_with_roles has limits of its own or a budget_id. */
static int
member_budgets(json_object *rec)
{
	json_object *members = json_object_object_get(rec, "members_with_roles");

	for (size_t i = 0; json_object_is_type(members, json_type_array) &&
	    i < json_object_array_length(members); i++) {
		json_object *m = json_object_array_get_idx(members, i);

		if (!isnan(kw_json_num(m, "max_budget_in_team", NAN)) ||
		    !isnan(kw_json_num(m, "rpm_limit", NAN)) || !isnan(kw_json_num(m, "tpm_limit", NAN)) ||
		    kw_json_str(m, "budget_id") != NULL)
			return 1;
	}
	return 0;
}

static void
summarize(json_object *rec, struct summary *s)
{
	memset(s, 0, sizeof(*s));
	s->version = SUMMARY_VERSION;
	s->flags = (kw_json_bool(rec, "blocked") ? S_BLOCKED : 0) |
	    (non_empty(rec, "models") ? S_MODELS : 0) |
	    (non_empty(rec, "allowed_routes") ? S_ROUTES : 0) |
	    (non_empty(rec, "model_max_budget") || non_empty(rec, "model_rpm_limit") ||
	    non_empty(rec, "model_tpm_limit") ? S_MODEL_LIMITS : 0) |
	    (non_empty(rec, "venice") ? S_VENICE : 0) |
	    (non_empty(rec, "aliases") || non_empty(rec, "model_aliases") ? S_ALIASES : 0) |
	    (kw_json_str(rec, "budget_id") != NULL ? S_BUDGET : 0) |
	    (member_budgets(rec) ? S_MEMBER_BUDGETS : 0);
	s->expires = time_of(rec, "expires");
	s->budget_reset_at = time_of(rec, "budget_reset_at");
	s->max_budget = kw_json_num(rec, "max_budget", NAN);
	s->soft_budget = kw_json_num(rec, "soft_budget", NAN);
	s->spend = kw_json_num(rec, "spend", 0);
	s->rpm_limit = kw_json_num(rec, "rpm_limit", NAN);
	s->tpm_limit = kw_json_num(rec, "tpm_limit", NAN);
	s->max_parallel = kw_json_num(rec, "max_parallel_requests", NAN);
}

static int
summary_name(char *buf, size_t n, enum kw_db db, const char *id)
{
	size_t len = strlen(id);

	/* "k:ID", put together by hand: three of them a verify, where snprintf cost 2000 instructions */
	if (len + 3 > n)
		return 0;
	buf[0] = db == KW_DB_KEYS ? 'k' : db == KW_DB_TEAMS ? 't' : db == KW_DB_ORGS ? 'o' : 'u';
	buf[1] = ':';
	memcpy(buf + 2, id, len + 1);
	return 1;
}

/*
 * Keeps the summary of record id of db (keys, teams, users,
 * organizations) in step with it, inside the caller's transaction: rec
 * NULL deletes it.  Called by kw_rec_put and kw_rec_del, so no writer can
 * forget it.
 */
enum kw_err
kw_limits_summary_write(struct kw_store *st, DB_TXN *txn, enum kw_db db, const char *id,
    json_object *rec)
{
	DB *sums = kw_store_db(st, KW_DB_SUMMARIES);
	char name[KW_ID_MAX + 3];
	unsigned char buf[sizeof(struct summary) + 3 * KW_ID_MAX];
	struct summary s;
	const char *team = kw_json_str(rec, "team_id"), *user = kw_json_str(rec, "user_id");
	const char *org = kw_json_str(rec, "organization_id");
	DBT k = { .data = name }, v = { .data = buf };
	enum kw_err rc;

	if (!summary_name(name, sizeof(name), db, id))
		return KW_EINVAL;
	k.size = (u_int32_t)strlen(name);
	if (rec == NULL) {
		rc = kw_store_err(sums->del(sums, txn, &k, 0));
		return rc == KW_ENOTFOUND ? KW_OK : rc;
	}
	summarize(rec, &s);
	if (db != KW_DB_KEYS)
		team = user = NULL;	/* a team's, user's or organization's own ids are not needed */
	if (db != KW_DB_KEYS && db != KW_DB_TEAMS)
		org = NULL;		/* a key's organization is its own, else its team's */
	s.team_len = team ? (uint16_t)strnlen(team, KW_ID_MAX) : 0;
	s.user_len = user ? (uint16_t)strnlen(user, KW_ID_MAX) : 0;
	s.org_len = org ? (uint16_t)strnlen(org, KW_ID_MAX) : 0;
	memcpy(buf, &s, sizeof(s));
	memcpy(buf + sizeof(s), team ? team : "", s.team_len);
	memcpy(buf + sizeof(s) + s.team_len, user ? user : "", s.user_len);
	memcpy(buf + sizeof(s) + s.team_len + s.user_len, org ? org : "", s.org_len);
	v.size = (u_int32_t)(sizeof(s) + s.team_len + s.user_len + s.org_len);
	return kw_store_err(sums->put(sums, txn, &k, &v, 0));
}

/* --- Venice consumption ---------------------------------------------------- */

/*
 * The period a Venice key's consumption limits count in: EPOCH the UTC day,
 * MONTH the UTC calendar month, LIFETIME forever (start 0, end 0).
 */
static void
venice_period(json_object *venice, time_t now, time_t *start, time_t *end)
{
	const char *period = kw_json_str(venice, "limitPeriod");
	struct tm tm;

	*start = *end = 0;
	if (period != NULL && strcmp(period, "LIFETIME") == 0)
		return;
	gmtime_r(&now, &tm);
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	if (period != NULL && strcmp(period, "MONTH") == 0) {
		tm.tm_mday = 1;
		*start = timegm(&tm);
		tm.tm_mon += 1;
	} else {
		*start = timegm(&tm);
		tm.tm_mday += 1;
	}
	*end = timegm(&tm);
}

/* The counter holding when Venice key token was last used: its window is the time. */
static void
last_used_name(char *buf, size_t n, const char *token)
{
	snprintf(buf, n, "vlast|%s", token);
}

/*
 * Remembers that Venice key token was used at now, for its lastUsedAt:
 * one small counter row, in the caller's transaction (a check's, which
 * commits without waiting for the disk, or a usage report's, which is
 * flushed), never a rewrite of the key's record; at most once a second.
 */
static enum kw_err
venice_touch(struct kw_store *st, DB_TXN *txn, const char *token, time_t now)
{
	char name[KW_TOKEN_LEN + 8];
	struct counter c;
	enum kw_err rc;

	last_used_name(name, sizeof(name), token);
	if ((rc = counter_get(st, txn, name, 1, &c)) != KW_OK || c.window >= (int64_t)now)
		return rc;
	c.window = (int64_t)now;
	c.value = 0;
	return counter_put(st, txn, name, &c);
}

/* The amount of currency ("usd" or "diem") key token spent in the period starting at start. */
static enum kw_err
venice_spent(struct kw_store *st, DB_TXN *txn, const char *currency, const char *token,
    time_t start, double *spent)
{
	char name[KW_TOKEN_LEN + 32];

	snprintf(name, sizeof(name), "v%s|%s", currency, token);
	return rate_used(st, txn, name, (int64_t)start, 0, spent);
}

/* Counts amount of currency spent now by key token, in its period and in today's bucket. */
static enum kw_err
venice_spend(struct kw_store *st, DB_TXN *txn, const char *currency, const char *token,
    json_object *venice, time_t now, double amount)
{
	char name[KW_TOKEN_LEN + 64];
	time_t start, end, day = now - now % 86400;
	enum kw_err rc;

	if (amount <= 0)
		return KW_OK;
	venice_period(venice, now, &start, &end);
	snprintf(name, sizeof(name), "v%s|%s", currency, token);
	if ((rc = rate_add(st, txn, name, (int64_t)start, amount)) != KW_OK)
		return rc;
	/* one bucket a UTC day, for the trailing seven days a list shows */
	snprintf(name, sizeof(name), "v%sday|%s|%lld", currency, token, (long long)day);
	return rate_add(st, txn, name, (int64_t)day, amount);
}

/*
 * A Venice key's consumption (key is its record, borrowed): in its current
 * limitPeriod, and over the seven UTC days ending today; and when it was
 * last used (a VALID verdict or a usage report).
 */
enum kw_err
kw_limits_venice_usage(struct kw_store *st, DB_TXN *txn, json_object *key, time_t now,
    struct kw_venice_usage *out)
{
	json_object *venice = json_object_object_get(key, "venice");
	const char *token = kw_json_str(key, "token");
	char name[KW_TOKEN_LEN + 64];
	time_t day = now - now % 86400;
	double v;
	enum kw_err rc;

	struct counter last;

	memset(out, 0, sizeof(*out));
	if (token == NULL)
		return KW_OK;
	last_used_name(name, sizeof(name), token);
	if ((rc = counter_get(st, txn, name, 0, &last)) != KW_OK)
		return rc;
	out->last_used = (time_t)last.window;
	venice_period(venice, now, &out->period_start, &out->period_end);
	if ((rc = venice_spent(st, txn, "usd", token, out->period_start, &out->period_usd)) != KW_OK ||
	    (rc = venice_spent(st, txn, "diem", token, out->period_start, &out->period_diem)) != KW_OK)
		return rc;
	for (int i = 0; i < 7; i++) {
		time_t d = day - (time_t)i * 86400;

		snprintf(name, sizeof(name), "vusdday|%s|%lld", token, (long long)d);
		if ((rc = rate_used(st, txn, name, (int64_t)d, 0, &v)) != KW_OK)
			return rc;
		out->week_usd += v;
		snprintf(name, sizeof(name), "vdiemday|%s|%lld", token, (long long)d);
		if ((rc = rate_used(st, txn, name, (int64_t)d, 0, &v)) != KW_OK)
			return rc;
		out->week_diem += v;
	}
	return KW_OK;
}

/*
 * Remembers that a Venice key was refused by a rate limit, for
 * /api/v1/api_keys/rate_limits/log: type is Venice's rateLimitType
 * ("RPM", "TPM").
 */
static enum kw_err
venice_breach(struct kw_store *st, DB_TXN *txn, json_object *key, const char *model,
    const char *type, time_t now)
{
	DB *db = kw_store_db(st, KW_DB_BREACHES);
	json_object *venice = json_object_object_get(key, "venice"), *row = json_object_new_object();
	const char *owner = kw_json_str(venice, "owner");
	char name[KW_ID_MAX + 120], at[KW_TIME_LEN];
	DBT k = { .data = name }, v;
	enum kw_err rc;

	snprintf(name, sizeof(name), "%s|%016llx|%s", owner ? owner : "master",
	    (unsigned long long)now, kw_json_str(key, "token"));
	k.size = (u_int32_t)strlen(name);
	kw_time_format(now, at);
	json_object_object_add(row, "apiKeyId", json_object_get(json_object_object_get(venice, "id")));
	/* Venice logs "model:unknown" for a request whose model it cannot name */
	json_object_object_add(row, "modelId", json_object_new_string(model ? model :
	    "model:unknown"));
	json_object_object_add(row, "rateLimitTier", json_object_new_string(KW_VENICE_TIER));
	json_object_object_add(row, "rateLimitType", json_object_new_string(type));
	json_object_object_add(row, "timestamp", json_object_new_string(at));
	v = (DBT){ .data = (void *)json_object_to_json_string_ext(row, JSON_C_TO_STRING_PLAIN) };
	v.size = (u_int32_t)strlen(v.data);
	rc = kw_store_err(db->put(db, txn, &k, &v, 0));
	json_object_put(row);
	return rc;
}

/* --- the check ---------------------------------------------------------- */

/* A key, team or user as the check sees it. */
struct party {
	int present;
	struct summary s;
	json_object *rec;	/* owned; read only when a check needs more than the summary */
};

/*
 * Writes an answer's members as text, "name":value, each followed by a
 * comma that the closing bracket replaces: the /key/verify answer is only
 * ever printed, so no tree is built for it.  Each number and string is
 * printed by json-c, through the one object of each kind reused, exactly
 * as a tree of them would print (JSON_C_TO_STRING_NOSLASHESCAPE).
 */
struct answer_writer {
	json_object *num, *str;	/* owned */
};

#define ANSWER_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* "name": (names are ours: nothing to escape), in one append */
static void
put_name(struct printbuf *pb, const char *name)
{
	char quoted[64];
	size_t n = strlen(name);

	assert(n + 3 <= sizeof(quoted));
	quoted[0] = '"';
	memcpy(quoted + 1, name, n);
	memcpy(quoted + 1 + n, "\":", 2);
	printbuf_memappend(pb, quoted, (int)n + 3);
}

static void
put_text(struct printbuf *pb, const char *name, const char *json, size_t len)
{
	put_name(pb, name);
	printbuf_memappend(pb, json, (int)len);
	printbuf_memappend(pb, ",", 1);
}

static void
put_value(struct printbuf *pb, const char *name, json_object *v)
{
	const char *json = json_object_to_json_string_ext(v, ANSWER_FLAGS);

	put_text(pb, name, json, strlen(json));
}

static void
put_string(struct answer_writer *w, struct printbuf *pb, const char *name, const char *v)
{
	put_name(pb, name);
	kw_json_append_string(pb, w->str, v, ANSWER_FLAGS);
	printbuf_memappend(pb, ",", 1);
}

static void
put_number(struct answer_writer *w, struct printbuf *pb, const char *name, double v)
{
	put_name(pb, name);
	json_object_set_double(w->num, v);
	json_object_double_to_json_string(w->num, pb, 0, ANSWER_FLAGS);
	printbuf_memappend(pb, ",", 1);
}

static void
put_bool(struct printbuf *pb, const char *name, int v)
{
	put_text(pb, name, v ? "true" : "false", v ? 4 : 5);
}

/* A time as RFC 3339 text, null for 0 (kw_json_set_time's way). */
static void
put_time(struct answer_writer *w, struct printbuf *pb, const char *name, time_t t)
{
	char buf[KW_TIME_LEN];

	if (t == 0) {
		put_text(pb, name, "null", 4);
		return;
	}
	kw_time_format(t, buf);
	put_string(w, pb, name, buf);
}

/* Ends an object or array: the last member's comma becomes close (an empty one gets it after). */
static void
put_close(struct printbuf *pb, char close)
{
	if (pb->bpos > 0 && pb->buf[pb->bpos - 1] == ',')
		pb->buf[pb->bpos - 1] = close;
	else
		printbuf_memappend(pb, &close, 1);
}

/* Everything one check reads, held for the length of its transaction attempt. */
struct checking {
	const struct kw_check *in;
	struct kw_verdict *out;
	struct kw_store *st;
	DB_TXN *txn;
	time_t now;
	int64_t window;			/* this minute's start */
	struct party key, team, user, org;
	/*
	 * The request's end user (LiteLLM's customer), its limits those of
	 * its budget; and the key's budget (budget_id), whose limits fill
	 * the key's (kept in key.s).  Both only read as records.
	 */
	struct party end_user, budget;
	/*
	 * The key's user's membership of the key's team, when it has limits
	 * (membership_limits): its summary holds them and the membership's
	 * spend; rec is the membership's budget (budget_id), when it names one.
	 */
	struct party member;
	char org_id[KW_ID_MAX + 1];	/* the key's organization_id, else its team's; "" none */
	/*
	 * The /key/verify answer's description of the key, its limits list
	 * and what prints them; all NULL with verdict_only.
	 */
	struct printbuf *description, *limits;
	struct answer_writer w;
	int soft_exceeded;		/* the key's spend reached its soft_budget */
	struct in_flight key_flight, team_flight, user_flight, org_flight, model_flight;
	struct in_flight end_user_flight;
	const char *limited_model;	/* in->model when the key limits it (budget or tpm); else NULL */
	int reserving;			/* some limit counts what requests in flight reserved */
	double cost, tokens;		/* what an admitted request reserves */
	enum kw_err rc;			/* the first failed store read of record_of */
};

static void
checking_clear(struct checking *c)
{
	json_object_put(c->key.rec);
	json_object_put(c->team.rec);
	json_object_put(c->user.rec);
	json_object_put(c->org.rec);
	json_object_put(c->end_user.rec);
	json_object_put(c->budget.rec);
	json_object_put(c->member.rec);
	if (c->description != NULL)
		printbuf_reset(c->description);
	if (c->limits != NULL)
		printbuf_reset(c->limits);
	c->soft_exceeded = 0;
	memset(&c->key, 0, sizeof(c->key));
	memset(&c->team, 0, sizeof(c->team));
	memset(&c->user, 0, sizeof(c->user));
	memset(&c->org, 0, sizeof(c->org));
	memset(&c->end_user, 0, sizeof(c->end_user));
	memset(&c->budget, 0, sizeof(c->budget));
	memset(&c->member, 0, sizeof(c->member));
	c->org_id[0] = '\0';
	memset(&c->key_flight, 0, sizeof(c->key_flight));
	memset(&c->team_flight, 0, sizeof(c->team_flight));
	memset(&c->user_flight, 0, sizeof(c->user_flight));
	memset(&c->org_flight, 0, sizeof(c->org_flight));
	memset(&c->model_flight, 0, sizeof(c->model_flight));
	memset(&c->end_user_flight, 0, sizeof(c->end_user_flight));
	c->limited_model = NULL;
	c->reserving = 0;
}

/* Reads id's record of db into p->rec (budget settled) and its summary from it. */
static enum kw_err
load_record(struct checking *c, enum kw_db db, const char *id, struct party *p)
{
	enum kw_err rc = kw_rec_get(c->st, c->txn, db, id, 0, &p->rec);

	if (rc == KW_OK) {
		kw_budget_settle(p->rec, c->now);
		summarize(p->rec, &p->s);
		p->present = 1;
	}
	return rc;
}

/* Copies n bytes of id into out (KW_ID_MAX + 1 bytes), when it is wanted. */
static void
id_copy(char *out, const void *id, size_t n)
{
	if (out == NULL)
		return;
	memcpy(out, id, n);
	out[n] = '\0';
}

/* The string field name of rec into out (KW_ID_MAX + 1 bytes), "" when none, when wanted. */
static void
id_of(char *out, json_object *rec, const char *name)
{
	const char *s = kw_json_str(rec, name);

	if (out != NULL)
		snprintf(out, KW_ID_MAX + 1, "%s", s ? s : "");
}

/*
 * Reads party id of db: its summary when the check needs no more, else
 * (or when it has no current summary) its record.  ids, when not NULL,
 * receives the ids its members ask for: a key's team_id, user_id and
 * organization_id, a team's organization_id.
 */
static enum kw_err
load_party(struct checking *c, enum kw_db db, const char *id, struct party *p,
    const struct party_ids *ids)
{
	DB *sums = kw_store_db(c->st, KW_DB_SUMMARIES);
	char name[KW_ID_MAX + 3];
	unsigned char buf[sizeof(struct summary) + 3 * KW_ID_MAX];
	DBT k = { .data = name }, v = { .data = buf, .ulen = sizeof(buf), .flags = DB_DBT_USERMEM };
	enum kw_err rc;

	memset(p, 0, sizeof(*p));
	if (!summary_name(name, sizeof(name), db, id))
		rc = KW_ENOTFOUND;
	else {
		k.size = (u_int32_t)strlen(name);
		rc = kw_store_err(sums->get(sums, c->txn, &k, &v, 0));
	}
	if (rc == KW_OK && v.size >= sizeof(struct summary)) {
		memcpy(&p->s, buf, sizeof(p->s));
		/*
		 * A budget reset that fell due since the record was written is
		 * the record's to make (kw_budget_settle: spend back to 0 when it
		 * has a budget_duration, and the next reset computed): read it.
		 */
		if (p->s.version == SUMMARY_VERSION &&
		    v.size == sizeof(p->s) + p->s.team_len + p->s.user_len + p->s.org_len &&
		    (p->s.budget_reset_at == 0 || p->s.budget_reset_at > c->now)) {
			p->present = 1;
			if (ids != NULL) {
				id_copy(ids->team, buf + sizeof(p->s), p->s.team_len);
				id_copy(ids->user, buf + sizeof(p->s) + p->s.team_len, p->s.user_len);
				id_copy(ids->org, buf + sizeof(p->s) + p->s.team_len + p->s.user_len,
				    p->s.org_len);
			}
			return KW_OK;
		}
	}
	if (rc != KW_OK && rc != KW_ENOTFOUND)
		return rc;
	if ((rc = load_record(c, db, id, p)) != KW_OK)
		return rc;
	if (ids != NULL) {
		id_of(ids->team, p->rec, "team_id");
		id_of(ids->user, p->rec, "user_id");
		id_of(ids->org, p->rec, "organization_id");
	}
	return KW_OK;
}

/*
 * The party's record, read now if the summary sufficed until here; NULL
 * when it is gone or the read failed.  A failed read (a deadlock above
 * all) is kept in c->rc, which check_body returns, so that kw_store_txn
 * runs the check again rather than judge without the record.
 */
static json_object *
record_of(struct checking *c, enum kw_db db, const char *id, struct party *p)
{
	enum kw_err rc;

	if (p->rec == NULL && p->present &&
	    (rc = load_record(c, db, id, p)) != KW_OK && c->rc == KW_OK)
		c->rc = rc;
	return p->rec;
}

static json_object *
key_record(struct checking *c)
{
	return record_of(c, KW_DB_KEYS, c->out->token, &c->key);
}

static json_object *
team_record(struct checking *c)
{
	return c->team.present ? record_of(c, KW_DB_TEAMS, c->out->team_id, &c->team) : NULL;
}

static json_object *
user_record(struct checking *c)
{
	return c->user.present ? record_of(c, KW_DB_USERS, c->out->user_id, &c->user) : NULL;
}

static json_object *
org_record(struct checking *c)
{
	return c->org.present ? record_of(c, KW_DB_ORGS, c->org_id, &c->org) : NULL;
}

/* s when it is printable UTF-8 text, for a message; a stand-in otherwise. */
static const char *
printable(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p < 0x20 || *p == 0x7f)
			return "(not printable)";
	return kw_valid_utf8(s, strlen(s)) ? s : "(not UTF-8)";
}

/* Sets the verdict's code and message; returns 1 so callers can `return refuse(...)`. */
static int
refuse(struct checking *c, enum kw_verdict_code code, const char *limit, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
refuse(struct checking *c, enum kw_verdict_code code, const char *limit, const char *fmt, ...)
{
	va_list ap;

	size_t n;

	c->out->code = code;
	c->out->limit = limit;
	va_start(ap, fmt);
	vsnprintf(c->out->message, sizeof(c->out->message), fmt, ap);
	va_end(ap);
	/* a message cut short (a long model name) must not end inside a character */
	for (n = strlen(c->out->message); n > 0 && !kw_valid_utf8(c->out->message, n); n--)
		c->out->message[n - 1] = '\0';
	return 1;
}

/* Appends one limit to the answer's list. */
static void
report_limit(struct checking *c, const char *name, const char *model, double limit, double used,
    time_t reset)
{
	struct printbuf *pb = c->limits;

	if (pb == NULL)
		return;		/* verdict only */
	printbuf_memappend(pb, "{", 1);
	put_string(&c->w, pb, "name", name);
	if (model != NULL)
		put_string(&c->w, pb, "model", model);
	put_number(&c->w, pb, "limit", limit);
	put_number(&c->w, pb, "used", used);
	put_number(&c->w, pb, "remaining", limit > used ? limit - used : 0);
	put_time(&c->w, pb, "reset_at", reset);
	put_close(pb, '}');
	printbuf_memappend(pb, ",", 1);
}

static double
limit_of(json_object *rec, const char *name)
{
	return kw_json_num(rec, name, NAN);
}

/* The per-model limit in a {"model": n} map of rec, NAN when none. */
static double
model_limit(json_object *rec, const char *map, const char *model)
{
	json_object *m = json_object_object_get(rec, map);

	return model != NULL && m != NULL ? kw_json_num(m, model, NAN) : NAN;
}

/*
 * A budget of any kind: the key's, its team's, its user's, the key's on a
 * model, a Venice key's usd or diem.  spent is what usage reported in its
 * current period; f the requests in flight against its owner, whose
 * reserved cost counts as spent until their usage settles it.
 */
struct budget {
	const char *name;		/* as the answer's limits list and a refusal name it */
	const char *model;		/* model_max_budget's model; NULL for the others */
	double limit, spent;
	const struct in_flight *f;
	time_t reset;			/* when spent returns to 0; 0 never */
	enum kw_verdict_code code;	/* the refusal */
	int strict;			/* spent only once used passes the limit (an end user's) */
};

/*
 * v as Python's str(float) writes it, which LiteLLM's messages hold: the
 * shortest digits that read back as v, and ".0" after an integral one
 * (5.0, 1.25, 1e+16).  buf holds at least 32 bytes.
 */
static const char *
py_float(char *buf, size_t n, double v)
{
	int prec;

	for (prec = 1; prec < 17; prec++) {
		snprintf(buf, n, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	if (prec == 17)
		snprintf(buf, n, "%.17g", v);
	if (isfinite(v) && strpbrk(buf, ".e") == NULL && strlen(buf) + 3 <= n)
		strcat(buf, ".0");
	return buf;
}

/*
 * Refused (1) once spend plus reserved reaches the limit.  A request is
 * admitted while something is left and reserves its cost when admitted,
 * so the requests in flight together pass a budget by one request at most.
 */
static int
budget_refuses(struct checking *c, const struct budget *b)
{
	double used = b->spent + b->f->reserved;
	char cost[32], max[32];

	report_limit(c, b->name, b->model, b->limit, used, b->reset);
	if (used < b->limit || (b->strict && used <= b->limit))
		return 0;
	/* a budget comes back at its reset, if it has one */
	c->out->retry_after = b->reset > c->now ? (int)(b->reset - c->now) : 0;
	if (b->code != KW_V_BUDGET_EXCEEDED)
		return refuse(c, b->code, b->name,
		    "the key's %s consumption limit of %g is spent for this period", b->name,
		    b->limit);
	/*
	 * LiteLLM's words (BudgetExceededError's message, from
	 * _virtual_key_max_budget_check; _team_max_budget_check names the
	 * team, _organization_max_budget_check the organization), its cost
	 * counting what requests in flight reserved
	 */
	if (strcmp(b->name, "team_max_budget") == 0 && c->out->team_id[0] != '\0')
		return refuse(c, b->code, b->name, "Budget has been exceeded! Team=%s Current "
		    "cost: %s, Max budget: %s", printable(c->out->team_id),
		    py_float(cost, sizeof(cost), used), py_float(max, sizeof(max), b->limit));
	if (strcmp(b->name, "end_user_max_budget") == 0 && c->in->end_user != NULL)
		/* _check_end_user_budget's own words */
		return refuse(c, b->code, b->name, "ExceededBudget: End User=%s over budget. "
		    "Spend=%s, Budget=%s", printable(c->in->end_user),
		    py_float(cost, sizeof(cost), used), py_float(max, sizeof(max), b->limit));
	if (strcmp(b->name, "team_member_max_budget") == 0)	/* _check_team_member_budget */
		return refuse(c, b->code, b->name, "Budget has been exceeded! User=%s in Team=%s "
		    "Current cost: %s, Max budget: %s", printable(c->out->user_id),
		    printable(c->out->team_id), py_float(cost, sizeof(cost), used),
		    py_float(max, sizeof(max), b->limit));
	if (strcmp(b->name, "organization_max_budget") == 0 && c->org_id[0] != '\0')
		return refuse(c, b->code, b->name, "Budget has been exceeded! Organization=%s "
		    "Current cost: %s, Max budget: %s", printable(c->org_id),
		    py_float(cost, sizeof(cost), used), py_float(max, sizeof(max), b->limit));
	return refuse(c, b->code, b->name, "Budget has been exceeded! Current cost: %s, "
	    "Max budget: %s", py_float(cost, sizeof(cost), used),
	    py_float(max, sizeof(max), b->limit));
}

/*
 * A rate window of any kind: requests (rpm, counted when a request is
 * admitted) or tokens (tpm, counted when usage is reported, and meanwhile
 * reserved by the requests in flight).
 */
struct rate {
	char counter[KW_ID_MAX + 300];
	const char *name, *model;
	double limit;
	double adding;		/* what this request adds: 1, or its expected_tokens */
	double reserved;	/* tokens reserved by requests in flight */
	int requests;		/* counted at admission */
	struct kw_rate *out;	/* the x-ratelimit-* headers' window */
};

/* A window's check; refusal sets retry_after to the window's end. */
static enum kw_err
over_rate(struct checking *c, const struct rate *r, int *refused)
{
	time_t reset = (time_t)(c->window + WINDOW_SECS);
	double used, left;
	enum kw_err rc;

	if ((rc = rate_used(c->st, c->txn, r->counter, c->window, !c->in->dry_run, &used)) != KW_OK)
		return rc;
	used += r->reserved;
	report_limit(c, r->name, r->model, r->limit, used, reset);
	/*
	 * The headers' remaining is what is left once this request is admitted, as
	 * OpenAI's x-ratelimit-remaining-* count the request answered; a request
	 * this window refuses takes nothing, so it is left as it was.
	 */
	left = r->limit - used - (used + r->adding <= r->limit ? r->adding : 0);
	if (r->out->limit < 0 || left < (double)r->out->remaining) {
		r->out->limit = (int64_t)r->limit;
		r->out->remaining = left > 0 ? (int64_t)left : 0;
		r->out->reset = reset;
	}
	if (!*refused && (used >= r->limit || used + r->adding > r->limit)) {
		c->out->retry_after = (int)(reset - c->now);
		*refused = refuse(c, KW_V_RATE_LIMITED, r->name,
		    "%s reached: %g of %g in this minute", r->name, used, r->limit);
	}
	return KW_OK;
}

#define PARALLEL_RETRY_MAX 5	/* seconds: the longest Retry-After for a parallel slot */

/* Parallel requests: the leases in flight against max_parallel_requests. */
static int
over_parallel(struct checking *c, const struct summary *s, const struct in_flight *f,
    const char *name)
{
	if (isnan(s->max_parallel))
		return 0;
	report_limit(c, name, NULL, s->max_parallel, (double)f->count, (time_t)f->first_until);
	if ((double)f->count < s->max_parallel)
		return 0;
	/*
	 * A slot comes back when a request in flight ends, which is seconds
	 * away, not when its lease would lapse (lease_secs, 600 by default):
	 * the expected wait, capped, since OpenAI's clients wait as long as
	 * Retry-After says before each retry.
	 */
	c->out->retry_after = f->first_until > c->now ? (int)(f->first_until - c->now) : 1;
	if (c->out->retry_after > PARALLEL_RETRY_MAX)
		c->out->retry_after = PARALLEL_RETRY_MAX;
	return refuse(c, KW_V_RATE_LIMITED, name, "%s reached: %lld requests in flight", name,
	    (long long)f->count);
}

static void
counter_name(char *buf, size_t n, const char *kind, const char *scope, const char *model)
{
	snprintf(buf, n, "%s|%s%s%s", kind, scope, model ? "|" : "", model ? model : "");
}

/*
 * A models list as LiteLLM's message quotes it, Python's repr of a list
 * (['gpt-4', 'gpt-4o']), into buf; cut short with ... when it does not fit.
 */
static void
models_repr(json_object *models, char *buf, size_t n)
{
	size_t len = 0, count = models ? json_object_array_length(models) : 0;
	int cut = 0;

	assert(n > 8);
	buf[len++] = '[';
	for (size_t i = 0; i < count && !cut; i++) {
		const char *m = json_object_get_string(json_object_array_get_idx(models, i));
		int w = snprintf(buf + len, n - len, "%s'%s'", i ? ", " : "", printable(m ? m : ""));

		if (w < 0 || (size_t)w >= n - len - 5)
			cut = 1;
		else
			len += (size_t)w;
	}
	snprintf(buf + len, n - len, "%s]", cut ? "..." : "");
}

/*
 * The model a request names and what it resolves to, as LiteLLM's
 * user_api_key_auth builds litellm.model_alias_map from the key's aliases
 * and its team's model_aliases (the team's win), and _can_object_call_model
 * then checks both the name asked for and the model it maps to.
 */
struct model_ask {
	const char *asked;
	const char *resolved;	/* asked when no alias maps it */
	int team_alias;		/* asked is a key of the team's model_aliases */
};

/*
 * True when one object's models list lets the request through, as
 * LiteLLM's _check_model_access_helper decides: an empty list allows every
 * model; a model the team's model_aliases name is allowed to the key and
 * the team (_model_in_team_aliases); else the name asked for or the model
 * it resolves to must be allowed (kw_limits_models_allow: "*",
 * "all-proxy-models", wildcards, "all-team-models" as the team's list).
 */
static int
object_allows(json_object *models, json_object *team_models, const struct model_ask *m,
    int key_or_team)
{
	if (models == NULL || json_object_array_length(models) == 0)
		return 1;
	if (key_or_team && m->team_alias)
		return 1;
	return kw_limits_models_allow(models, team_models, m->asked) ||
	    (m->resolved != m->asked && kw_limits_models_allow(models, team_models, m->resolved));
}

/* Refuses the model as LiteLLM's _can_object_call_model does for object (key, team, user, org). */
static int
refuse_model_of(struct checking *c, const char *object, json_object *models)
{
	char list[160];

	models_repr(models, list, sizeof(list));
	c->out->error_type = strcmp(object, "key") == 0 ? "key_model_access_denied" :
	    strcmp(object, "team") == 0 ? "team_model_access_denied" :
	    strcmp(object, "user") == 0 ? "user_model_access_denied" : "org_model_access_denied";
	return refuse(c, KW_V_MODEL_NOT_ALLOWED, NULL,
	    "%s not allowed to access model. This %s can only access models=%s. Tried to access %s",
	    object, object, list, printable(c->in->model));
}

/* True when the models list holds name exactly. */
static int
models_hold(json_object *models, const char *name)
{
	size_t n = models ? json_object_array_length(models) : 0;

	for (size_t i = 0; i < n; i++) {
		const char *m = json_object_get_string(json_object_array_get_idx(models, i));

		if (m != NULL && strcmp(m, name) == 0)
			return 1;
	}
	return 0;
}

/*
 * The model asked resolves to, as LiteLLM's user_api_key_auth builds
 * litellm.model_alias_map: the team's model_aliases (which win; *team_alias
 * set even when the alias maps to no string), else the key's aliases;
 * asked itself when neither maps it.  key and team may be NULL; the answer
 * is borrowed from them or is asked.
 */
const char *
kw_limits_model_resolve(json_object *key, json_object *team, const char *asked, int *team_alias)
{
	json_object *aliases = team ? json_object_object_get(team, "model_aliases") : NULL;
	json_object *target;

	*team_alias = 0;
	if (json_object_is_type(aliases, json_type_object) &&
	    json_object_object_get_ex(aliases, asked, &target)) {
		*team_alias = 1;
		return json_object_is_type(target, json_type_string) ?
		    json_object_get_string(target) : asked;
	}
	aliases = key ? json_object_object_get(key, "aliases") : NULL;
	if (json_object_is_type(aliases, json_type_object) &&
	    json_object_object_get_ex(aliases, asked, &target) &&
	    json_object_is_type(target, json_type_string))
		return json_object_get_string(target);
	return asked;
}

/* What model resolves to, into *m (kw_limits_model_resolve); key and team borrowed, either NULL. */
static void
model_ask_of(const char *model, json_object *key, json_object *team, struct model_ask *m)
{
	m->asked = model;
	m->resolved = kw_limits_model_resolve(key, team, model, &m->team_alias);
}

/* True when a key of modelPrivacy privacy ("PRIVATE_TEXT", "PRIVATE_ONLY") may call model. */
static int
privacy_allows(const char *privacy, const char *model)
{
	return kw_config_list_match(kw_config.private_models, model) ||
	    (strcmp(privacy, "PRIVATE_TEXT") == 0 &&
	    kw_config_list_match(kw_config.media_models, model));
}

/*
 * A Venice key's modelPrivacy, as Venice enforces it on every inference
 * call: ALL (or none) lets any model through; PRIVATE_ONLY only the
 * models the operator's KEYWARDEN_PRIVATE_MODELS names; PRIVATE_TEXT
 * those and the image, audio and video models KEYWARDEN_MEDIA_MODELS
 * names.  The model asked for and the one an alias maps it to must both
 * pass.  The setting is the key record's, which only the master key or
 * an ADMIN key changes; which models are private is the operator's.
 */
static int
refuse_privacy(struct checking *c)
{
	json_object *key = key_record(c);
	const char *privacy = kw_json_str(json_object_object_get(key, "venice"), "modelPrivacy");
	struct model_ask m;
	const char *bad;

	if (privacy == NULL || strcmp(privacy, "ALL") == 0)
		return 0;
	model_ask_of(c->in->model, key, c->team.present && (c->team.s.flags & S_ALIASES) ?
	    team_record(c) : NULL, &m);
	bad = !privacy_allows(privacy, m.asked) ? m.asked :
	    !privacy_allows(privacy, m.resolved) ? m.resolved : NULL;
	if (bad == NULL)
		return 0;
	c->out->error_type = "key_model_access_denied";
	return refuse(c, KW_V_MODEL_NOT_ALLOWED, "modelPrivacy", "This API key is set to '%s', "
	    "but %s is an anonymous model. Choose a private model, or change the model privacy "
	    "setting of this API key.", privacy, printable(bad));
}

/*
 * The model checks, in LiteLLM's order: the key's models
 * (can_key_call_model), its team's (can_team_access_model in
 * common_checks); for a personal key, its user's (can_user_call_model:
 * "no-default-models" allows none); then its organization's
 * (can_org_access_model).  So a key with models [] is held to its team's
 * models, or for a personal key to its user's.  The key's aliases and the
 * team's model_aliases resolve the name first (struct model_ask).
 */
static int
refuse_model(struct checking *c)
{
	struct model_ask m;
	json_object *key = NULL, *team = NULL, *org, *team_models;
	int personal = !c->team.present;

	if (!((c->key.s.flags | c->team.s.flags | c->user.s.flags | c->org.s.flags) &
	    S_MODELS))
		return 0;	/* nobody restricts models: no record need be read */
	if ((c->key.s.flags & (S_MODELS | S_ALIASES)) != 0)
		key = key_record(c);
	if (c->team.present && (c->team.s.flags & (S_MODELS | S_ALIASES)) != 0)
		team = team_record(c);
	team_models = team ? json_object_object_get(team, "models") : NULL;
	model_ask_of(c->in->model, key, team, &m);
	if ((c->key.s.flags & S_MODELS) &&
	    !object_allows(json_object_object_get(key, "models"), team_models, &m, 1))
		return refuse_model_of(c, "key", json_object_object_get(key, "models"));
	if ((c->team.s.flags & S_MODELS) && !object_allows(team_models, NULL, &m, 1))
		return refuse_model_of(c, "team", team_models);
	if (personal && c->user.present && (c->user.s.flags & S_MODELS)) {
		json_object *models = json_object_object_get(user_record(c), "models");

		if (models_hold(models, "no-default-models")) {
			c->out->error_type = "key_model_access_denied";
			return refuse(c, KW_V_MODEL_NOT_ALLOWED, NULL, "User not allowed to access "
			    "model. No default model access, only team models allowed. Tried to "
			    "access %s", printable(m.asked));
		}
		if (!object_allows(models, NULL, &m, 0))
			return refuse_model_of(c, "user", models);
	}
	if (c->org.present && (c->org.s.flags & S_MODELS) &&
	    !object_allows(json_object_object_get(org = org_record(c), "models"), NULL, &m, 0))
		return refuse_model_of(c, "org", json_object_object_get(org, "models"));
	return 0;
}

/* The identity, standing, models and routes of the key: the checks that read only. */
static int
refuse_standing(struct checking *c)
{
	const struct kw_check *in = c->in;
	char at[KW_TIME_LEN];

	if (c->key.s.flags & S_BLOCKED)
		return refuse(c, KW_V_BLOCKED, NULL, "this key is blocked");
	if (c->key.s.expires != 0 && c->key.s.expires <= c->now) {
		kw_time_format((time_t)c->key.s.expires, at);
		return refuse(c, KW_V_EXPIRED, NULL, "this key expired at %s", at);
	}
	if (c->team.present && (c->team.s.flags & S_BLOCKED))
		return refuse(c, KW_V_TEAM_BLOCKED, NULL, "this key's team is blocked");
	if (c->user.present && (c->user.s.flags & S_BLOCKED))
		return refuse(c, KW_V_USER_BLOCKED, NULL, "this key's user is blocked");
	/* LiteLLM's blocked end-user check: a customer blocked by /customer/block */
	if (c->end_user.present && (c->end_user.s.flags & S_BLOCKED))
		return refuse(c, KW_V_END_USER_BLOCKED, NULL,
		    "User blocked from making LLM API Calls: end user %s is blocked",
		    printable(c->in->end_user));
	if (in->model != NULL && in->model[0] != '\0' &&
	    (refuse_model(c) || ((c->key.s.flags & S_VENICE) && refuse_privacy(c))))
		return 1;
	if (in->route != NULL && (c->key.s.flags & S_ROUTES) &&
	    !kw_limits_routes_allow(json_object_object_get(key_record(c), "allowed_routes"),
	    in->route))
		return refuse(c, KW_V_ROUTE_NOT_ALLOWED, NULL, "this key may not call %s",
		    printable(in->route));
	if (in->route != NULL && (c->key.s.flags & S_VENICE)) {
		const char *type = kw_json_str(json_object_object_get(key_record(c), "venice"),
		    "apiKeyType");
		size_t n = strlen(in->route);
		char *path = NULL;
		const char *why;
		int inference_only = 0;

		/* a Venice INFERENCE key calls models, never the key-management API */
		if (type != NULL && strcmp(type, "INFERENCE") == 0) {
			path = malloc(n + 1);
			inference_only = path == NULL ||
			    kw_limits_route_path(in->route, n, path, &why) != KW_OK ||
			    is_management_route(path) || strncmp(path, "/api/", 5) == 0;
			free(path);
		}
		if (inference_only)
			return refuse(c, KW_V_ROUTE_NOT_ALLOWED, NULL,
			    "an INFERENCE key may only call inference routes");
	}
	return 0;
}

/* The key's model_max_budget entry for the checked model; NULL when none. */
static json_object *
model_budget_of(struct checking *c)
{
	json_object *mmb, *entry;

	if (c->in->model == NULL || !(c->key.s.flags & S_MODEL_LIMITS))
		return NULL;
	mmb = json_object_object_get(key_record(c), "model_max_budget");
	if (mmb == NULL || !json_object_object_get_ex(mmb, c->in->model, &entry) ||
	    isnan(kw_json_num(entry, "budget_limit", NAN)))
		return NULL;
	return entry;
}

/* A budget record's (b) limits into s wherever s has none of its own. */
static void
fill_from_budget(struct summary *s, json_object *b)
{
	if (isnan(s->max_budget))
		s->max_budget = limit_of(b, "max_budget");
	if (isnan(s->soft_budget))
		s->soft_budget = limit_of(b, "soft_budget");
	if (isnan(s->rpm_limit))
		s->rpm_limit = limit_of(b, "rpm_limit");
	if (isnan(s->tpm_limit))
		s->tpm_limit = limit_of(b, "tpm_limit");
}

/*
 * The counter of what user_id's keys in team_id spent, LiteLLM's
 * LiteLLM_TeamMembership.spend, into *c with its name in name (n bytes),
 * its period settled as LiteLLM's reset_budget_for_litellm_team_members
 * resets a membership whose budget's budget_duration fell due: a period
 * that ended reads 0; with duration (NULL: none), a period starts now when
 * none runs.  c->window is the period's end, 0 when none.  rmw reads it
 * for writing.
 */
static enum kw_err
member_spend(struct kw_store *st, DB_TXN *txn, const char *team_id, const char *user_id,
    const char *duration, time_t now, int rmw, char *name, size_t n, struct counter *c)
{
	enum kw_err rc;

	counter_name(name, n, "tmspend", team_id, user_id);
	if ((rc = counter_get(st, txn, name, rmw, c)) != KW_OK)
		return rc;
	if (c->window != 0 && c->window <= now) {
		c->window = 0;
		c->value = 0;
	}
	if (duration != NULL && c->window == 0)
		c->window = kw_time_budget_reset(duration, now);
	return KW_OK;
}

enum kw_err
kw_limits_member_spend(struct kw_store *st, DB_TXN *txn, const char *team_id,
    const char *user_id, time_t now, double *spend)
{
	char name[2 * KW_ID_MAX + 16];
	struct counter c;
	enum kw_err rc = member_spend(st, txn, team_id, user_id, NULL, now, 0, name, sizeof(name),
	    &c);

	*spend = rc == KW_OK ? c.value : 0;
	return rc;
}

/*
 * The limits of user_id's membership of team, as LiteLLM keeps them in
 * the membership's LiteLLM_BudgetTable row (_check_team_member_budget,
 * LiteLLM_TeamMembership.safe_get_team_member_rpm_limit and _tpm_limit):
 * into s, NAN where none, its max_budget_in_team, rpm_limit and
 * tpm_limit (team_member_update's), else its budget_id's.  *budget (owned,
 * NULL when none) is the budget record, whose budget_duration resets the
 * membership's spend.  *member is 0 when user_id is no member.  A budget_id
 * that names no budget adds nothing.
 */
static enum kw_err
membership_limits(struct kw_store *st, DB_TXN *txn, json_object *team, const char *user_id,
    struct summary *s, json_object **budget, int *member)
{
	json_object *entry = kw_members_entry(KW_MEMBERS_TEAMS, team, user_id);
	const char *id = kw_json_str(entry, "budget_id");
	enum kw_err rc;

	memset(s, 0, sizeof(*s));
	s->max_budget = s->soft_budget = s->rpm_limit = s->tpm_limit = s->max_parallel = NAN;
	*budget = NULL;
	if (!(*member = entry != NULL))
		return KW_OK;
	s->max_budget = kw_json_num(entry, "max_budget_in_team", NAN);
	s->rpm_limit = kw_json_num(entry, "rpm_limit", NAN);
	s->tpm_limit = kw_json_num(entry, "tpm_limit", NAN);
	if (id == NULL)
		return KW_OK;
	rc = kw_rec_get(st, txn, KW_DB_BUDGETS, id, 0, budget);
	if (rc != KW_OK)
		return rc == KW_ENOTFOUND ? KW_OK : rc;
	fill_from_budget(s, *budget);
	s->soft_budget = NAN;	/* a membership has no soft budget */
	return KW_OK;
}

/*
 * The key's user's membership of its team, when the team has member
 * limits: c->member's summary holds them, the membership's spend and the
 * end of its budget period (budget_reset_at).
 */
static enum kw_err
load_member(struct checking *c)
{
	char name[2 * KW_ID_MAX + 16];
	json_object *team;
	struct counter spent;
	enum kw_err rc;

	if (!c->team.present || !(c->team.s.flags & S_MEMBER_BUDGETS) ||
	    c->out->user_id[0] == '\0')
		return KW_OK;
	if ((team = team_record(c)) == NULL)
		return c->rc;
	if ((rc = membership_limits(c->st, c->txn, team, c->out->user_id, &c->member.s,
	    &c->member.rec, &c->member.present)) != KW_OK || !c->member.present)
		return rc;
	if ((rc = member_spend(c->st, c->txn, c->out->team_id, c->out->user_id,
	    kw_json_str(c->member.rec, "budget_duration"), c->now, 0, name, sizeof(name),
	    &spent)) != KW_OK)
		return rc;
	c->member.s.spend = spent.value;
	c->member.s.budget_reset_at = spent.window;
	return KW_OK;
}

/*
 * Every budget the key is under, in the order they are checked: the
 * key's max_budget, its team's, its user's, its user's in its team
 * (max_budget_in_team, LiteLLM's _check_team_member_budget: the spend
 * reported for the membership; requests in flight reserve nothing
 * against it, as LiteLLM's), its organization's (LiteLLM's
 * _organization_max_budget_check), a Venice key's usd and diem
 * consumption limits (the cost reserved counts against both: either may
 * pay), and model_max_budget.  The first one spent refuses; a Venice
 * refusal is remembered for the breaches log.
 */
static enum kw_err
check_budgets(struct checking *c, int *refused)
{
	static const struct {
		const char *currency;
		enum kw_verdict_code code;
	} currencies[] = { { "usd", KW_V_USD_LIMIT }, { "diem", KW_V_DIEM_LIMIT } };
	const struct summary *k = &c->key.s;
	const struct party *parties[] = { &c->key, &c->team, &c->user, &c->org, &c->end_user };
	const struct in_flight *flights[] = {
		&c->key_flight, &c->team_flight, &c->user_flight, &c->org_flight,
		&c->end_user_flight,
	};
	static const char *const budget_names[] = {
		"max_budget", "team_max_budget", "user_max_budget", "organization_max_budget",
		"end_user_max_budget",
	};
	static const struct in_flight none;
	struct budget b[12];	/* five parties, a membership, the currencies, a model */
	json_object *entry;
	char name[KW_TOKEN_LEN + 300];
	size_t n = 0;
	enum kw_err rc;

	if (!isnan(k->soft_budget)) {
		report_limit(c, "soft_budget", NULL, k->soft_budget, k->spend,
		    (time_t)k->budget_reset_at);
		c->soft_exceeded = k->spend >= k->soft_budget;
	}
	for (size_t i = 0; i < sizeof(parties) / sizeof(parties[0]); i++) {
		const struct summary *s = &parties[i]->s;

		if (parties[i]->present && !isnan(s->max_budget))
			/* an end user is over only once spend > max_budget (_check_end_user_budget) */
			b[n++] = (struct budget){ budget_names[i], NULL, s->max_budget, s->spend,
				flights[i], (time_t)s->budget_reset_at, KW_V_BUDGET_EXCEEDED,
				parties[i] == &c->end_user };
	}
	if (c->member.present && !isnan(c->member.s.max_budget))
		b[n++] = (struct budget){ "team_member_max_budget", NULL, c->member.s.max_budget,
			c->member.s.spend, &none, (time_t)c->member.s.budget_reset_at,
			KW_V_BUDGET_EXCEEDED, 0 };
	if (k->flags & S_VENICE) {
		json_object *venice = json_object_object_get(key_record(c), "venice");
		json_object *caps = json_object_object_get(venice, "consumptionLimit");
		time_t start, end;

		venice_period(venice, c->now, &start, &end);
		for (size_t i = 0; i < sizeof(currencies) / sizeof(currencies[0]); i++) {
			double cap = kw_json_num(caps, currencies[i].currency, NAN), spent;

			if (isnan(cap))
				continue;
			if ((rc = venice_spent(c->st, c->txn, currencies[i].currency, c->out->token,
			    start, &spent)) != KW_OK)
				return rc;
			b[n++] = (struct budget){ currencies[i].currency, NULL, cap, spent,
				&c->key_flight, end, currencies[i].code, 0 };
		}
	}
	if ((entry = model_budget_of(c)) != NULL) {
		struct counter spent;

		counter_name(name, sizeof(name), "mspend", c->out->token, c->in->model);
		if ((rc = model_spend(c->st, c->txn, name, kw_json_str(entry, "time_period"), c->now,
		    0, &spent)) != KW_OK)
			return rc;
		b[n++] = (struct budget){ "model_max_budget", c->in->model,
			kw_json_num(entry, "budget_limit", NAN), spent.value, &c->model_flight,
			(time_t)spent.window, KW_V_BUDGET_EXCEEDED, 0 };
	}
	assert(n <= sizeof(b) / sizeof(b[0]));
	for (size_t i = 0; i < n; i++) {
		if (!budget_refuses(c, &b[i]))
			continue;
		*refused = 1;
		return KW_OK;
	}
	return KW_OK;
}

/* The key's per-model limit in map, when it has model limits at all. */
static double
key_model_limit(struct checking *c, const char *map)
{
	if (c->in->model == NULL || !(c->key.s.flags & S_MODEL_LIMITS))
		return NAN;
	return model_limit(key_record(c), map, c->in->model);
}

/*
 * The rate windows the key is under, into r (room for RATES_MAX): its rpm
 * and tpm, per model, its team's, its organization's, its end user's and
 * its user's in its team.  Returns how many.
 */
#define RATES_MAX 12

static size_t
rates_of(struct checking *c, struct rate *r)
{
	const char *token = c->out->token, *model = c->in->model, *team_id = c->out->team_id;
	const char *org_id = c->org_id;
	double tokens = (double)c->in->expected_tokens;
	const struct {
		const char *kind, *scope, *model, *name;
		double limit;
		int requests;
		const struct in_flight *f;
	} rows[] = {
		{ "rpm", token, NULL, "rpm_limit", c->key.s.rpm_limit, 1, NULL },
		{ "tpm", token, NULL, "tpm_limit", c->key.s.tpm_limit, 0, &c->key_flight },
		{ "rpm", token, model, "model_rpm_limit", key_model_limit(c, "model_rpm_limit"), 1,
		    NULL },
		{ "tpm", token, model, "model_tpm_limit", key_model_limit(c, "model_tpm_limit"), 0,
		    &c->model_flight },
		{ "rpm|t", team_id, NULL, "team_rpm_limit", c->team.present ? c->team.s.rpm_limit :
		    NAN, 1, NULL },
		{ "tpm|t", team_id, NULL, "team_tpm_limit", c->team.present ? c->team.s.tpm_limit :
		    NAN, 0, &c->team_flight },
		{ "rpm|o", org_id, NULL, "organization_rpm_limit", c->org.present ?
		    c->org.s.rpm_limit : NAN, 1, NULL },
		{ "tpm|o", org_id, NULL, "organization_tpm_limit", c->org.present ?
		    c->org.s.tpm_limit : NAN, 0, &c->org_flight },
		/* UserAPIKeyAuth's end_user_rpm_limit and end_user_tpm_limit: its budget's */
		{ "rpm|e", c->in->end_user, NULL, "end_user_rpm_limit", c->end_user.present ?
		    c->end_user.s.rpm_limit : NAN, 1, NULL },
		{ "tpm|e", c->in->end_user, NULL, "end_user_tpm_limit", c->end_user.present ?
		    c->end_user.s.tpm_limit : NAN, 0, &c->end_user_flight },
		/* the membership's budget's, LiteLLM's team_member_rpm_limit and _tpm_limit */
		{ "rpm|m", team_id, c->out->user_id, "team_member_rpm_limit", c->member.present ?
		    c->member.s.rpm_limit : NAN, 1, NULL },
		{ "tpm|m", team_id, c->out->user_id, "team_member_tpm_limit", c->member.present ?
		    c->member.s.tpm_limit : NAN, 0, NULL },
	};
	size_t n = 0;

	assert(sizeof(rows) / sizeof(rows[0]) <= RATES_MAX);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		if (isnan(rows[i].limit))
			continue;
		counter_name(r[n].counter, sizeof(r[n].counter), rows[i].kind, rows[i].scope,
		    rows[i].model);
		r[n].name = rows[i].name;
		r[n].model = rows[i].model;
		r[n].limit = rows[i].limit;
		r[n].requests = rows[i].requests;
		r[n].adding = rows[i].requests ? 1 : tokens;
		r[n].reserved = rows[i].f ? rows[i].f->tokens : 0;
		r[n].out = rows[i].requests ? &c->out->requests : &c->out->tokens;
		n++;
	}
	return n;
}

/* Rates and parallel requests: the key's, per model, its team's and its organization's. */
static enum kw_err
check_rates(struct checking *c, int *refused)
{
	struct rate r[RATES_MAX];
	size_t n = rates_of(c, r);
	enum kw_err rc;

	for (size_t i = 0; i < n; i++)
		if ((rc = over_rate(c, &r[i], refused)) != KW_OK)
			return rc;
	if (!*refused && over_parallel(c, &c->key.s, &c->key_flight, "max_parallel_requests"))
		*refused = 1;
	if (!*refused && c->team.present &&
	    over_parallel(c, &c->team.s, &c->team_flight, "team_max_parallel_requests"))
		*refused = 1;
	return KW_OK;
}

/* Logs a Venice key's rate refusal under Venice's rateLimitType; in-flight limits have none. */
static enum kw_err
rate_breach(struct checking *c)
{
	const char *limit = c->out->limit ? c->out->limit : "";
	const char *type = strstr(limit, "rpm") ? "RPM" : strstr(limit, "tpm") ? "TPM" : NULL;
	json_object *key;

	if (type == NULL)
		return KW_OK;
	if ((key = key_record(c)) == NULL)
		return c->rc;
	return venice_breach(c->st, c->txn, key, c->in->model, type, c->now);
}

/*
 * Counts an admitted request in its request windows and, when a limit
 * counts requests in flight (or the caller named the request), takes its
 * lease: c->cost against every budget, c->tokens against the tpm windows.
 */
static enum kw_err
admit(struct checking *c)
{
	const char *team_id = c->out->team_id;
	struct owners o = {
		c->out->token, team_id[0] ? team_id : NULL,
		c->out->user_id[0] ? c->out->user_id : NULL,
		c->org.present ? c->org_id : NULL, c->limited_model,
		c->end_user.present ? c->in->end_user : NULL,
	};
	struct lease l = {
		c->cost, c->now + kw_config.lease_secs, c->tokens,
		c->in->request_id == NULL ? LEASE_NAMED : 0, 0,
	};
	struct rate r[RATES_MAX];
	size_t n = rates_of(c, r);
	char part[ID_PART_LEN + 1];
	enum kw_err rc = KW_OK;

	for (size_t i = 0; i < n && rc == KW_OK; i++)
		if (r[i].requests)
			rc = rate_add(c->st, c->txn, r[i].counter, c->window, 1);
	if (rc != KW_OK)
		return rc;
	if (c->in->request_id == NULL && c->in->expected_cost <= 0 && !c->reserving)
		return KW_OK;	/* nothing to hold until usage: no lease */
	/*
	 * A request that came without an id is named here, and nothing that
	 * reports usage knows the name unless it read this answer (the
	 * authorizer's model server never does): its slot and reservation
	 * come back after anon_lease_secs, not the whole lease_secs.
	 */
	if (c->in->request_id != NULL) {
		/* whole: kw_limits_check took only an id that fits (kw_valid_request_id) */
		snprintf(c->out->request_id, sizeof(c->out->request_id), "%s", c->in->request_id);
	} else {
		kw_uuid4(c->out->request_id);
		l.until = c->now + kw_config.anon_lease_secs;
	}
	id_part(c->out->request_id, part);
	return lease_write(c->st, c->txn, &o, c->out->request_id, part, &l, 1);
}

/* The fields of the key's record that its /key/verify answer copies, in their order. */
static const char *const described[] = {
	"token", "key_alias", "user_id", "team_id", "organization_id", "models", "expires",
	"max_budget", "spend", "budget_reset_at",
};

/*
 * Writes one copied field: the budget's max_budget where the key has none
 * of its own (max, NAN when neither has one), else the record's value,
 * null when it has none.
 */
static void
describe_field(struct checking *c, size_t i, const struct kw_span *from_text, json_object *from,
    double max)
{
	struct printbuf *pb = c->description;
	char *plain;

	if (strcmp(described[i], "max_budget") == 0 && !isnan(max)) {
		put_number(&c->w, pb, described[i], max);
	} else if (from != NULL) {
		put_value(pb, described[i], json_object_object_get(from, described[i]));
	} else if (from_text[i].text == NULL) {
		put_text(pb, described[i], "null", 4);
	} else if ((plain = malloc(from_text[i].len)) != NULL) {
		put_text(pb, described[i], plain, kw_rec_text_plain(from_text[i].text,
		    from_text[i].len, plain));
		free(plain);
	} else if (c->rc == KW_OK) {
		c->rc = KW_ENOMEM;
	}
}

/*
 * What the answer tells of an admitted or refused key: fields of its
 * record, copied as their text where only the summary was read, and what
 * the check found.
 */
static void
describe(struct checking *c)
{
	struct printbuf *pb = c->description;
	struct kw_span spans[sizeof(described) / sizeof(described[0])];
	json_object *key = c->key.rec, *whole = NULL;
	char *text = NULL;
	size_t len;
	enum kw_err rc = KW_OK;
	double max = c->key.s.max_budget;
	double left = max - c->key.s.spend - c->key_flight.reserved;

	if (key == NULL && (rc = kw_rec_get_text(c->st, c->txn, KW_DB_KEYS, c->out->token, &text,
	    &len)) == KW_OK && !kw_rec_field_spans(text, len, described,
	    sizeof(described) / sizeof(described[0]), spans))
		rc = kw_rec_parse(text, len, &whole);	/* text the scan does not follow */
	if (rc != KW_OK && c->rc == KW_OK)
		c->rc = rc;	/* run again rather than describe without the record */
	if (rc == KW_OK)
		for (size_t i = 0; i < sizeof(described) / sizeof(described[0]); i++)
			describe_field(c, i, spans, key != NULL ? key : whole, max);
	json_object_put(whole);
	free(text);
	if (c->budget.present)
		put_string(&c->w, pb, "budget_id", kw_json_str(c->budget.rec, "budget_id"));
	if (c->end_user.present) {
		put_string(&c->w, pb, "end_user", c->in->end_user);
		put_number(&c->w, pb, "end_user_spend", c->end_user.s.spend);
	}
	put_number(&c->w, pb, "reserved", c->key_flight.reserved);
	if (isnan(max))
		put_text(pb, "remaining_budget", "null", 4);
	else
		put_number(&c->w, pb, "remaining_budget", left > 0 ? left : 0);
	put_bool(pb, "soft_budget_exceeded", c->soft_exceeded);
	put_name(pb, "limits");
	printbuf_memappend(pb, "[", 1);
	printbuf_memappend(pb, c->limits->buf, c->limits->bpos);
	put_close(pb, ']');
	printbuf_memappend(pb, ",", 1);
}

/*
 * True when a party has a limit that counts requests in flight: a budget
 * (a Venice key's consumption limits too), tpm, or parallel requests.
 */
static int
leased(const struct party *p)
{
	return p->present && (!isnan(p->s.max_budget) || !isnan(p->s.max_parallel) ||
	    !isnan(p->s.tpm_limit) || (p->s.flags & S_VENICE));
}

/* Finds the presented key: by its summary, else by its record (a regenerated key's old secret too). */
static enum kw_err
find_key(struct checking *c)
{
	struct kw_verdict *v = c->out;
	struct party_ids ids = { v->team_id, v->user_id, c->org_id };
	enum kw_err rc;

	kw_crypto_sha256_hex(c->in->key, strlen(c->in->key), v->token);
	rc = load_party(c, KW_DB_KEYS, v->token, &c->key, &ids);
	if (rc != KW_ENOTFOUND)
		return rc;
	if ((rc = kw_keys_credential(c->st, c->txn, c->in->key, c->now, &c->key.rec)) != KW_OK)
		return rc;
	kw_budget_settle(c->key.rec, c->now);
	summarize(c->key.rec, &c->key.s);
	c->key.present = 1;
	snprintf(v->token, sizeof(v->token), "%s", kw_json_str(c->key.rec, "token"));
	id_of(v->team_id, c->key.rec, "team_id");
	id_of(v->user_id, c->key.rec, "user_id");
	id_of(c->org_id, c->key.rec, "organization_id");
	return KW_OK;
}

/*
 * The key's budget (its budget_id, a /budget/new record), as LiteLLM's
 * LiteLLM_VerificationTokenView takes it from the combined view: the
 * budget's max_budget, soft_budget, rpm_limit and tpm_limit are the key's
 * wherever the key has none of its own, and the spend held to them is the
 * key's own.  So every key under one budget has the budget's limits, each
 * on its own spend and its own rate windows: the budget is a tier, not a
 * shared pot.  A budget_id that names no budget adds nothing.
 */
static enum kw_err
load_key_budget(struct checking *c)
{
	struct summary *k = &c->key.s;
	json_object *key;
	const char *id;
	enum kw_err rc;

	if (!(k->flags & S_BUDGET))
		return KW_OK;
	if ((key = key_record(c)) == NULL || (id = kw_json_str(key, "budget_id")) == NULL)
		return c->rc;
	rc = kw_rec_get(c->st, c->txn, KW_DB_BUDGETS, id, 0, &c->budget.rec);
	if (rc != KW_OK)
		return rc == KW_ENOTFOUND ? KW_OK : rc;
	c->budget.present = 1;
	fill_from_budget(k, c->budget.rec);
	return KW_OK;
}

/*
 * An organization's budget_id, as LiteLLM's new_organization keeps an
 * organization's limits in LiteLLM_BudgetTable: the budget's limits are
 * the organization's wherever it has none of its own, on the
 * organization's own spend (see "Organizations" in the README).
 */
static enum kw_err
load_org_budget(struct checking *c)
{
	json_object *org, *b = NULL;
	const char *id;
	enum kw_err rc;

	if (!c->org.present || !(c->org.s.flags & S_BUDGET))
		return KW_OK;
	if ((org = org_record(c)) == NULL || (id = kw_json_str(org, "budget_id")) == NULL)
		return c->rc;
	rc = kw_rec_get(c->st, c->txn, KW_DB_BUDGETS, id, 0, &b);
	if (rc == KW_OK)
		fill_from_budget(&c->org.s, b);
	json_object_put(b);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/*
 * The request's end user, as LiteLLM's get_end_user_object reads it:
 * nothing when it is unknown (an end user is made by /customer/new,
 * /customer/block or its first reported spend, never by a check); its
 * limits are those of its budget (litellm_budget_table: max_budget, and
 * rpm_limit and tpm_limit as UserAPIKeyAuth's end_user_rpm_limit and
 * end_user_tpm_limit), its spend its own.
 */
static enum kw_err
load_end_user(struct checking *c)
{
	struct summary *s = &c->end_user.s;
	json_object *b = NULL;
	const char *id;
	enum kw_err rc;

	if (c->in->end_user == NULL || c->in->end_user[0] == '\0')
		return KW_OK;
	rc = kw_rec_get(c->st, c->txn, KW_DB_END_USERS, c->in->end_user, 0, &c->end_user.rec);
	if (rc != KW_OK)
		return rc == KW_ENOTFOUND ? KW_OK : rc;
	c->end_user.present = 1;
	memset(s, 0, sizeof(*s));
	s->flags = kw_json_bool(c->end_user.rec, "blocked") ? S_BLOCKED : 0;
	s->spend = kw_json_num(c->end_user.rec, "spend", 0);
	s->max_budget = s->soft_budget = s->rpm_limit = s->tpm_limit = s->max_parallel = NAN;
	if ((id = kw_json_str(c->end_user.rec, "budget_id")) == NULL)
		return KW_OK;
	rc = kw_rec_get(c->st, c->txn, KW_DB_BUDGETS, id, 0, &b);
	if (rc != KW_OK)
		return rc == KW_ENOTFOUND ? KW_OK : rc;
	s->max_budget = limit_of(b, "max_budget");
	s->rpm_limit = limit_of(b, "rpm_limit");
	s->tpm_limit = limit_of(b, "tpm_limit");
	/* a reset that fell due counts the spend from 0, on a copy: a check writes no end user */
	if (kw_json_str(b, "budget_duration") != NULL) {
		json_object *settled = kw_json_copy(c->end_user.rec);

		kw_limits_end_user_settle(settled, b, c->now);
		s->spend = kw_json_num(settled, "spend", 0);
		json_object_put(settled);
	}
	json_object_put(b);
	return KW_OK;
}

/* The fields an answer starts with, in their order; kw_limits_check fills them. */
static enum kw_err
check_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct checking *c = baton;
	struct kw_verdict *v = c->out;
	char model[LEASE_OWNER_MAX + 1], team_org[KW_ID_MAX + 1] = "";
	struct party_ids team_ids = { NULL, NULL, team_org };
	int refused = 0, rmw = !c->in->dry_run;
	enum kw_err rc;

	checking_clear(c);
	c->rc = KW_OK;
	memset(v, 0, sizeof(*v));
	v->requests.limit = v->tokens.limit = -1;
	c->st = st;
	c->txn = txn;

	/* a signed token is judged by its signature and expiry before any store read */
	switch (kw_tokens_check(c->in->key, c->now)) {
	case KW_TOKEN_FORGED:
		refuse(c, KW_V_NOT_FOUND, NULL, "no such key: its signature is bad");
		return KW_OK;
	case KW_TOKEN_EXPIRED:
		refuse(c, KW_V_EXPIRED, NULL, "this key expired");
		return KW_OK;
	default:
		break;
	}
	if ((rc = find_key(c)) == KW_ENOTFOUND) {
		v->token[0] = '\0';
		refuse(c, KW_V_NOT_FOUND, NULL, "no such key");
		return KW_OK;
	}
	if (rc != KW_OK)
		return rc;
	if (v->team_id[0] != '\0' &&
	    (rc = load_party(c, KW_DB_TEAMS, v->team_id, &c->team, &team_ids)) != KW_OK &&
	    rc != KW_ENOTFOUND)
		return rc;
	if (v->user_id[0] != '\0' &&
	    (rc = load_party(c, KW_DB_USERS, v->user_id, &c->user, NULL)) != KW_OK &&
	    rc != KW_ENOTFOUND)
		return rc;
	/*
	 * The key's organization: its own organization_id, else its team's
	 * (LiteLLM's _organization_max_budget_check in auth_checks.py).
	 */
	if (c->org_id[0] == '\0' && c->team.present)
		snprintf(c->org_id, sizeof(c->org_id), "%s", team_org);
	if (c->org_id[0] != '\0' &&
	    (rc = load_party(c, KW_DB_ORGS, c->org_id, &c->org, NULL)) != KW_OK &&
	    rc != KW_ENOTFOUND)
		return rc;
	if ((rc = load_key_budget(c)) != KW_OK || (rc = load_org_budget(c)) != KW_OK ||
	    (rc = load_member(c)) != KW_OK || (rc = load_end_user(c)) != KW_OK)
		return rc;
	/* requests in flight matter only to the limits that count what they reserved */
	if (model_budget_of(c) != NULL || !isnan(key_model_limit(c, "model_tpm_limit")))
		c->limited_model = c->in->model;
	c->reserving = leased(&c->key) || leased(&c->team) || leased(&c->user) ||
	    leased(&c->org) || leased(&c->end_user) || c->limited_model != NULL;
	if ((leased(&c->key) && (rc = leases_of(st, txn, 'k', v->token, c->now, rmw,
	    &c->key_flight)) != KW_OK) ||
	    (leased(&c->team) && (rc = leases_of(st, txn, 't', v->team_id, c->now, rmw,
	    &c->team_flight)) != KW_OK) ||
	    (leased(&c->user) && (rc = leases_of(st, txn, 'u', v->user_id, c->now, rmw,
	    &c->user_flight)) != KW_OK) ||
	    (leased(&c->org) && (rc = leases_of(st, txn, 'o', c->org_id, c->now, rmw,
	    &c->org_flight)) != KW_OK) ||
	    (leased(&c->end_user) && (rc = leases_of(st, txn, 'e', c->in->end_user, c->now, rmw,
	    &c->end_user_flight)) != KW_OK))
		return rc;
	if (c->limited_model != NULL &&
	    model_owner(v->token, c->limited_model, model, sizeof(model)) &&
	    (rc = leases_of(st, txn, 'm', model, c->now, rmw, &c->model_flight)) != KW_OK)
		return rc;

	refused = refuse_standing(c);
	if (c->rc != KW_OK)
		return c->rc;	/* a verdict judged without a record it needed: run again */
	if (!refused && c->in->request_id != NULL && !c->in->dry_run) {
		int used;

		if ((rc = request_id_used(st, txn, v->token, c->in->request_id, &used)) != KW_OK)
			return rc;
		if (used)
			refused = refuse(c, KW_V_DUPLICATE_REQUEST, NULL,
			    "this request id was already used with this key: send a new one");
	}
	if (!refused && (rc = check_budgets(c, &refused)) != KW_OK)
		return rc;
	/* rates are read even after a budget refusal: the 429 reports them */
	if ((!refused || v->code == KW_V_BUDGET_EXCEEDED) && (rc = check_rates(c, &refused)) != KW_OK)
		return rc;
	if (refused && v->code == KW_V_RATE_LIMITED && (c->key.s.flags & S_VENICE) &&
	    !c->in->dry_run && (rc = rate_breach(c)) != KW_OK)
		return rc;
	if (c->rc != KW_OK)
		return c->rc;
	if (!refused) {
		v->code = KW_V_VALID;
		memcpy(v->message, "valid", sizeof("valid"));
		if (!c->in->dry_run && (rc = admit(c)) != KW_OK)
			return rc;
		if (!c->in->dry_run && (c->key.s.flags & S_VENICE) &&
		    (rc = venice_touch(st, txn, v->token, c->now)) != KW_OK)
			return rc;
	}
	if (c->description != NULL)
		describe(c);
	return c->rc;
}

/*
 * Checks a presented key against every limit it carries, as of now, and
 * unless in->dry_run counts an admitted request and takes its lease,
 * which reserves in->expected_cost and in->expected_tokens (the
 * configured defaults when 0) until its usage is recorded.
 * out->answer (owned; kw_verdict_clear) is the /key/verify answer; an
 * unknown key's answer says only that.  Runs its own transaction, not
 * flushed at commit: a crash may forget a rate window or a lease, never
 * spend.  KW_EINVAL for a request_id kw_valid_request_id refuses.
 */
enum kw_err
kw_limits_check(struct kw_store *st, time_t now, const struct kw_check *in,
    struct kw_verdict *out)
{
	struct checking c = {
		.in = in, .out = out, .now = now, .window = now - now % WINDOW_SECS,
		/* a request that names no cost or tokens reserves the defaults */
		.cost = in->expected_cost > 0 ? in->expected_cost : kw_config.default_expected_cost,
		.tokens = in->expected_tokens > 0 ? (double)in->expected_tokens :
		    (double)kw_config.default_expected_tokens,
	};
	struct printbuf *pb;
	enum kw_err rc;

	memset(out, 0, sizeof(*out));
	if (in->request_id != NULL && !kw_valid_request_id(in->request_id))
		return KW_EINVAL;	/* the ways in refuse it first, naming their field */
	if (!in->verdict_only && ((c.description = printbuf_new()) == NULL ||
	    (c.limits = printbuf_new()) == NULL || (c.w.num = json_object_new_double(0)) == NULL ||
	    (c.w.str = json_object_new_string("")) == NULL))
		rc = KW_ENOMEM;
	else
		rc = kw_store_txn_flags(st, KW_TXN_NOSYNC, check_body, &c);
	if (rc == KW_OK && !in->verdict_only && (out->answer = printbuf_new()) == NULL)
		rc = KW_ENOMEM;
	/* the verdict first, then what it is about; an unknown key learns nothing more */
	if (rc == KW_OK && (pb = out->answer) != NULL) {
		printbuf_memappend(pb, "{", 1);
		put_bool(pb, "valid", out->code == KW_V_VALID);
		put_string(&c.w, pb, "code", kw_verdict_code_name(out->code));
		put_string(&c.w, pb, "message", out->message);
		if (out->code != KW_V_NOT_FOUND) {
			put_string(&c.w, pb, "limit", out->limit);
			if (out->code == KW_V_RATE_LIMITED || out->retry_after > 0)
				sprintbuf(pb, "\"retry_after\":%d,", out->retry_after);
			else
				put_text(pb, "retry_after", "null", 4);
			put_string(&c.w, pb, "request_id", out->request_id[0] ? out->request_id :
			    NULL);
			printbuf_memappend(pb, c.description->buf, c.description->bpos);
		}
		put_close(pb, '}');
	}
	checking_clear(&c);
	printbuf_free(c.description);
	printbuf_free(c.limits);
	json_object_put(c.w.num);
	json_object_put(c.w.str);
	if (rc != KW_OK)
		kw_verdict_clear(out);
	return rc;
}

void
kw_verdict_clear(struct kw_verdict *v)
{
	if (v->answer != NULL)
		printbuf_free(v->answer);
	v->answer = NULL;
}

/* --- usage ---------------------------------------------------------- */

struct recording {
	const struct kw_usage *in;
	time_t now;
	struct kw_error *err;
	json_object *answer;	/* owned */
};

/*
 * Adds cost to the spend of rec (borrowed, read with KW_RMW in txn from
 * text, len bytes, by kw_rec_get_with_text; text NULL when it was read
 * otherwise: it is changed in place), the record id of db, after any
 * budget reset that fell due, and writes it back; *spend_out (owned) is
 * its new spend.
 */
static enum kw_err
add_spend_to(struct kw_store *st, DB_TXN *txn, enum kw_db db, const char *id, json_object *rec,
    const char *text, size_t len, double cost, time_t now, json_object **spend_out)
{
	enum kw_err rc;
	/* a reset changes its time too: then the record is written whole */
	int reset = kw_budget_settle(rec, now);

	json_object_object_add(rec, "spend",
	    json_object_new_double(kw_json_num(rec, "spend", 0) + cost));
	rc = kw_rec_put_member(st, txn, db, id, rec, reset ? NULL : text, len, "spend");
	*spend_out = json_object_get(json_object_object_get(rec, "spend"));
	return rc;
}

/* Adds cost to the spend of the record id in db, its budget settled first; *spend_out the result. */
static enum kw_err
add_spend(struct kw_store *st, DB_TXN *txn, enum kw_db db, const char *id, double cost,
    time_t now, json_object **spend_out)
{
	json_object *rec;
	char *text;
	size_t len;
	enum kw_err rc;

	*spend_out = NULL;
	if (id == NULL)
		return KW_OK;
	rc = kw_rec_get_with_text(st, txn, db, id, KW_RMW, &rec, &text, &len);
	if (rc == KW_ENOTFOUND)
		return KW_OK;
	if (rc != KW_OK)
		return rc;
	rc = add_spend_to(st, txn, db, id, rec, text, len, cost, now, spend_out);
	json_object_put(rec);
	free(text);
	return rc;
}

/*
 * A new end user's record (owned), LiteLLM_EndUserTable's fields: not
 * blocked, no budget, spend 0.
 */
json_object *
kw_limits_end_user_new(const char *user_id)
{
	json_object *rec = json_object_new_object();

	json_object_object_add(rec, "user_id", json_object_new_string(user_id));
	json_object_object_add(rec, "alias", NULL);
	json_object_object_add(rec, "spend", json_object_new_double(0));
	json_object_object_add(rec, "allowed_model_region", NULL);
	json_object_object_add(rec, "default_model", NULL);
	json_object_object_add(rec, "budget_id", NULL);
	json_object_object_add(rec, "blocked", json_object_new_boolean(0));
	json_object_object_add(rec, "metadata", json_object_new_object());
	return rec;
}

/*
 * Applies a due reset of end user rec's spend by its budget's
 * budget_duration (budget borrowed, NULL for none), as LiteLLM's budget
 * reset job resets LiteLLM_EndUserTable.spend: the first period starts
 * when the end user is first settled under that duration, then on the
 * duration's UTC boundaries (kw_budget_settle).  Returns 1 when rec changed.
 */
int
kw_limits_end_user_settle(json_object *rec, json_object *budget, time_t now)
{
	const char *duration = kw_json_str(budget, "budget_duration");
	int changed = 0;

	if (duration == NULL && !kw_json_has(rec, "budget_duration"))
		return 0;	/* no period, nor was there one */
	if (!kw_json_same_str(rec, budget, "budget_duration")) {
		/* a budget without a duration, or another one: a period starts now */
		json_object_object_add(rec, "budget_duration",
		    duration ? json_object_new_string(duration) : NULL);
		kw_json_set_time(rec, "budget_reset_at",
		    duration ? kw_time_budget_reset(duration, now) : 0);
		changed = 1;
	}
	return kw_budget_settle(rec, now) || changed;
}

/*
 * Adds cost to end user id's spend, making the end user when it is new,
 * as LiteLLM's ProxyUpdateSpend.update_end_user_spend upserts
 * LiteLLM_EndUserTable (create with the spend, blocked false; else
 * increment it); tokens go into its budget's tpm window.  *spend_out
 * (owned) is the new spend.
 */
static enum kw_err
end_user_spend(struct kw_store *st, DB_TXN *txn, const char *id, double cost, double tokens,
    time_t now, int64_t window, json_object **spend_out)
{
	char name[KW_ID_MAX + 300];
	json_object *rec, *b = NULL;
	const char *budget_id;
	enum kw_err rc = kw_rec_get(st, txn, KW_DB_END_USERS, id, KW_RMW, &rec);

	*spend_out = NULL;
	if (rc == KW_ENOTFOUND)
		rec = kw_limits_end_user_new(id);
	else if (rc != KW_OK)
		return rc;
	if ((budget_id = kw_json_str(rec, "budget_id")) != NULL &&
	    (rc = kw_rec_get(st, txn, KW_DB_BUDGETS, budget_id, 0, &b)) != KW_OK &&
	    rc != KW_ENOTFOUND) {
		json_object_put(rec);
		return rc;
	}
	kw_limits_end_user_settle(rec, b, now);
	json_object_object_add(rec, "spend",
	    json_object_new_double(kw_json_num(rec, "spend", 0) + cost));
	if ((rc = kw_rec_put(st, txn, KW_DB_END_USERS, id, rec, 0)) == KW_OK)
		*spend_out = json_object_get(json_object_object_get(rec, "spend"));
	if (rc == KW_OK && tokens > 0 && b != NULL && !isnan(limit_of(b, "tpm_limit"))) {
		counter_name(name, sizeof(name), "tpm|e", id, NULL);
		rc = rate_add(st, txn, name, window, tokens);
	}
	json_object_put(b);
	json_object_put(rec);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/* Counts tokens in the tpm window of organization org_id, when it has a tpm_limit. */
static enum kw_err
org_tokens(struct kw_store *st, DB_TXN *txn, const char *org_id, int64_t window, double tokens)
{
	char name[KW_ID_MAX + 300];
	json_object *org;
	enum kw_err rc = kw_rec_get(st, txn, KW_DB_ORGS, org_id, 0, &org);

	if (rc == KW_ENOTFOUND)
		return KW_OK;
	if (rc == KW_OK && !isnan(limit_of(org, "tpm_limit"))) {
		counter_name(name, sizeof(name), "tpm|o", org_id, NULL);
		rc = rate_add(st, txn, name, window, tokens);
	}
	json_object_put(org);
	return rc;
}

/*
 * A report's cost into the spend of user_id's membership of team (which
 * its limits bound, in the period of its budget's budget_duration), and
 * its tokens into the membership's tpm window when its budget has a
 * tpm_limit; nothing when user_id is no member.
 */
static enum kw_err
member_usage(struct kw_store *st, DB_TXN *txn, json_object *team, const char *user_id,
    double cost, double tokens, time_t now, int64_t window)
{
	const char *team_id = kw_json_str(team, "team_id");
	char name[2 * KW_ID_MAX + 300];
	struct summary limits;
	struct counter c;
	json_object *budget;
	int member;
	enum kw_err rc = membership_limits(st, txn, team, user_id, &limits, &budget, &member);

	if (rc == KW_OK && member)
		rc = member_spend(st, txn, team_id, user_id, kw_json_str(budget, "budget_duration"),
		    now, 1, name, sizeof(name), &c);
	if (rc == KW_OK && member) {
		c.value += cost;
		rc = counter_put(st, txn, name, &c);
	}
	if (rc == KW_OK && member && tokens > 0 && !isnan(limits.tpm_limit)) {
		counter_name(name, sizeof(name), "tpm|m", team_id, user_id);
		rc = rate_add(st, txn, name, window, tokens);
	}
	json_object_put(budget);
	return rc;
}

/* The receipt rows of a counted report: by key and request_id, and by time for the purge. */
static enum kw_err
receipt(struct kw_store *st, DB_TXN *txn, const char *token, const char *request_id,
    time_t now, int *seen)
{
	DB *db = kw_store_db(st, KW_DB_RECEIPTS);
	char name[RECEIPT_NAME_MAX], by_time[RECEIPT_NAME_MAX + 20];
	int64_t at = now;
	DBT k = { .data = name }, v = { .data = &at, .size = sizeof(at) };
	DBT kt = { .data = by_time }, empty = { .data = "", .size = 0 };
	enum kw_err rc;

	if ((rc = legacy_receipt(st, txn, token, request_id, seen)) != KW_OK || *seen)
		return rc;	/* counted before the receipts were digests */
	receipt_name(name, token, request_id);
	k.size = (u_int32_t)strlen(name);
	rc = kw_store_err(db->put(db, txn, &k, &v, DB_NOOVERWRITE));
	if (rc == KW_ECONFLICT) {
		*seen = 1;
		return KW_OK;
	}
	if (rc != KW_OK)
		return rc;
	/* "t|" + fixed-width hex time sorts by time, so the purge walks a prefix */
	snprintf(by_time, sizeof(by_time), "t|%016llx|%s", (unsigned long long)at, name);
	kt.size = (u_int32_t)strlen(by_time);
	return kw_store_err(db->put(db, txn, &kt, &empty, 0));
}

static enum kw_err
record_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct recording *r = baton;
	const struct kw_usage *in = r->in;
	char token[KW_TOKEN_LEN + 1], name[KW_ID_MAX + 300];
	json_object *key, *team = NULL, *spend = NULL, *team_spend = NULL, *user_spend = NULL;
	json_object *org_spend = NULL, *mmb, *entry, *eu_spend = NULL;
	const char *team_id, *user_id, *org_id;
	/* what the key's and team's records were read from, for their spend's write */
	char *key_text = NULL, *team_text = NULL;
	size_t key_len = 0, team_len = 0;
	int64_t window = r->now - r->now % WINDOW_SECS;
	int seen = 0;
	double tokens = (double)in->tokens;
	enum kw_err rc;

	json_object_put(r->answer);
	r->answer = NULL;
	kw_keys_token_of(in->key, token);
	rc = kw_rec_get_with_text(st, txn, KW_DB_KEYS, token, KW_RMW, &key, &key_text, &key_len);
	if (rc == KW_ENOTFOUND && (rc = kw_keys_credential(st, txn, in->key, r->now, &key)) == KW_OK)
		/* a regenerated key's old secret, in its grace period: its usage counts */
		snprintf(token, sizeof(token), "%s", kw_json_str(key, "token"));
	if (rc == KW_ENOTFOUND) {
		kw_error_set(r->err, KW_ENOTFOUND, "key", "no such key");
		return rc;
	}
	if (rc != KW_OK)
		return rc;
	team_id = kw_json_str(key, "team_id");
	user_id = kw_json_str(key, "user_id");
	/* the team's record, read once for its limits and written with its spend */
	if (team_id != NULL && (rc = kw_rec_get_with_text(st, txn, KW_DB_TEAMS, team_id, KW_RMW,
	    &team, &team_text, &team_len)) != KW_OK) {
		if (rc != KW_ENOTFOUND)
			goto out;
		team = NULL;
	}
	/* the key's organization is its own, else its team's, as the check's */
	if ((org_id = kw_json_str(key, "organization_id")) == NULL)
		org_id = kw_json_str(team, "organization_id");
	/*
	 * A report that used nothing (the upstream failed before any token)
	 * returns the request's slot and reservation but keeps no receipt: the
	 * client's retry with the same x-request-id is then a new request, not
	 * a duplicate, and its own report is counted once.
	 */
	if (in->request_id != NULL && (in->tokens > 0 || in->cost > 0 || in->diem > 0) &&
	    (rc = receipt(st, txn, token, in->request_id, r->now, &seen)) != KW_OK)
		goto out;
	if (!seen) {
		/* the key's record, read for its ids and limits, is the one its spend goes into */
		if ((rc = add_spend_to(st, txn, KW_DB_KEYS, token, key, key_text, key_len,
		    in->cost, r->now, &spend)) != KW_OK ||
		    (team != NULL && (rc = add_spend_to(st, txn, KW_DB_TEAMS, team_id, team,
		    team_text, team_len, in->cost, r->now, &team_spend)) != KW_OK) ||
		    (rc = add_spend(st, txn, KW_DB_USERS, user_id, in->cost, r->now,
		    &user_spend)) != KW_OK ||
		    (rc = add_spend(st, txn, KW_DB_ORGS, org_id, in->cost, r->now,
		    &org_spend)) != KW_OK ||
		    (in->end_user != NULL && (rc = end_user_spend(st, txn, in->end_user, in->cost,
		    tokens, r->now, window, &eu_spend)) != KW_OK))
			goto out;
		/* the spend history, in this transaction: it commits with the spend */
		if ((rc = kw_spend_record(st, txn, r->now, token, key, in)) != KW_OK)
			goto out;
		if (team != NULL && user_id != NULL &&
		    (rc = member_usage(st, txn, team, user_id, in->cost, tokens, r->now,
		    window)) != KW_OK)
			goto out;
		mmb = json_object_object_get(key, "model_max_budget");
		if (in->model != NULL && mmb != NULL &&
		    json_object_object_get_ex(mmb, in->model, &entry) && entry != NULL) {
			struct counter c;

			counter_name(name, sizeof(name), "mspend", token, in->model);
			if ((rc = model_spend(st, txn, name, kw_json_str(entry, "time_period"), r->now,
			    1, &c)) != KW_OK)
				goto out;
			c.value += in->cost;
			if ((rc = counter_put(st, txn, name, &c)) != KW_OK)
				goto out;
		}
		if (tokens > 0 && !isnan(limit_of(key, "tpm_limit"))) {
			counter_name(name, sizeof(name), "tpm", token, NULL);
			if ((rc = rate_add(st, txn, name, window, tokens)) != KW_OK)
				goto out;
		}
		if (tokens > 0 && !isnan(model_limit(key, "model_tpm_limit", in->model))) {
			counter_name(name, sizeof(name), "tpm", token, in->model);
			if ((rc = rate_add(st, txn, name, window, tokens)) != KW_OK)
				goto out;
		}
		if (tokens > 0 && team != NULL && !isnan(limit_of(team, "tpm_limit"))) {
			counter_name(name, sizeof(name), "tpm|t", team_id, NULL);
			if ((rc = rate_add(st, txn, name, window, tokens)) != KW_OK)
				goto out;
		}
		if (tokens > 0 && org_id != NULL && (rc = org_tokens(st, txn, org_id, window,
		    tokens)) != KW_OK)
			goto out;
		if ((rc = in->request_id != NULL ? lease_settle(st, txn, token, in->request_id) :
		    lease_settle_oldest(st, txn, token, r->now)) != KW_OK)
			goto out;
		if (json_object_object_get(key, "venice") != NULL &&
		    ((rc = venice_spend(st, txn, "usd", token, json_object_object_get(key, "venice"),
		    r->now, in->cost)) != KW_OK ||
		    (rc = venice_spend(st, txn, "diem", token, json_object_object_get(key, "venice"),
		    r->now, in->diem)) != KW_OK ||
		    (rc = venice_touch(st, txn, token, r->now)) != KW_OK))
			goto out;
	}
	r->answer = json_object_new_object();
	json_object_object_add(r->answer, "recorded", json_object_new_boolean(!seen));
	json_object_object_add(r->answer, "duplicate", json_object_new_boolean(seen));
	json_object_object_add(r->answer, "token", json_object_new_string(token));
	json_object_object_add(r->answer, "spend", spend ? json_object_get(spend) :
	    json_object_new_double(kw_json_num(key, "spend", 0)));
	json_object_object_add(r->answer, "max_budget",
	    json_object_get(json_object_object_get(key, "max_budget")));
	json_object_object_add(r->answer, "team_spend", json_object_get(team_spend));
	json_object_object_add(r->answer, "user_spend", json_object_get(user_spend));
	if (in->end_user != NULL)
		json_object_object_add(r->answer, "end_user_spend", json_object_get(eu_spend));
out:
	json_object_put(eu_spend);
	json_object_put(spend);
	json_object_put(team_spend);
	json_object_put(user_spend);
	json_object_put(org_spend);
	json_object_put(team);
	json_object_put(key);
	free(key_text);
	free(team_text);
	return rc;
}

/*
 * Records what a request used: cost into the spend of the key, its team,
 * its user and its organization (its own, else its team's) and into the
 * key's model spend; tokens into the tpm windows; the request's lease (its reservations and slot) returned:
 * the one named request_id, else the oldest keywarden named for the key.
 * With a request_id, a report sent twice counts once.  *answer (owned) is
 * the /key/usage answer.  KW_EVALID naming request_id for one
 * kw_valid_request_id refuses.
 * Durable: flushed before KW_OK, or, with in->flush_after_answer, written
 * to the log before KW_OK and flushed once the answer has gone; with
 * KEYWARDEN_USAGE_COMMIT=async, either is written to the log before KW_OK
 * and flushed by the pool manager within KEYWARDEN_USAGE_FLUSH_MS.
 */
enum kw_err
kw_limits_record(struct kw_store *st, time_t now, const struct kw_usage *in,
    json_object **answer, struct kw_error *err)
{
	struct recording r = { .in = in, .now = now, .err = err };
	enum kw_err rc;

	*answer = NULL;
	if (in->request_id != NULL && !kw_valid_request_id(in->request_id)) {
		kw_error_set(err, KW_EVALID, "request_id", "must be 1 to %d characters",
		    KW_REQUEST_ID_MAX);
		return KW_EVALID;
	}
	rc = kw_store_txn_flags(st, kw_config.usage_async ? KW_TXN_ASYNC :
	    in->flush_after_answer ? KW_TXN_FLUSH_AFTER_ANSWER : 0, record_body, &r);
	*answer = rc == KW_OK ? r.answer : NULL;
	if (rc != KW_OK)
		json_object_put(r.answer);
	return rc;
}

/* --- upkeep --------------------------------------------------------- */

struct sweep {
	time_t now;
	unsigned removed;
};

/* Forgets the Venice limit breaches older than BREACH_SECS (the log shows the last 50). */
static enum kw_err
sweep_breaches(struct kw_store *st, DB_TXN *txn, struct sweep *s)
{
	DB *db = kw_store_db(st, KW_DB_BREACHES);
	DBT k = { .flags = DB_DBT_REALLOC }, v = { .flags = DB_DBT_PARTIAL };
	DBC *cur;
	enum kw_err rc = kw_store_err(db->cursor(db, txn, &cur, 0));

	while (rc == KW_OK && (rc = kw_store_err(cur->get(cur, &k, &v, DB_NEXT))) == KW_OK) {
		char hex[17];
		time_t at;

		/* the time sits before "|<64 hex token>" at the end; the owner may hold '|' */
		if (k.size < 1 + 16 + 1 + KW_TOKEN_LEN)
			continue;
		memcpy(hex, (char *)k.data + k.size - KW_TOKEN_LEN - 1 - 16, 16);
		hex[16] = '\0';
		at = (time_t)strtoull(hex, NULL, 16);
		if (at + BREACH_SECS < s->now) {
			rc = kw_store_err(cur->del(cur, 0));
			s->removed++;
		}
	}
	cur->close(cur);
	free(k.data);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/* Returns the lapsed leases and forgets receipts older than a day. */
static enum kw_err
sweep_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct sweep *s = baton;
	DB *leases = kw_store_db(st, KW_DB_LEASES), *receipts = kw_store_db(st, KW_DB_RECEIPTS);
	DBT k = { .flags = DB_DBT_REALLOC }, v = { .flags = DB_DBT_REALLOC };
	char cutoff[32];
	DBC *cur;
	enum kw_err rc;

	s->removed = 0;
	/* leases: walk the "l|" index; a lapsed one takes its owner rows with it */
	if ((rc = kw_store_err(leases->cursor(leases, txn, &cur, 0))) != KW_OK)
		return rc;
	k.data = strdup("l|");
	k.size = 2;
	rc = kw_store_err(cur->get(cur, &k, &v, DB_SET_RANGE));
	while (rc == KW_OK && k.size > 2 && memcmp(k.data, "l|", 2) == 0) {
		json_object *index = NULL;
		time_t until;

		if (kw_rec_parse(v.data, v.size, &index) == KW_OK) {
			until = (time_t)kw_json_num(index, "until", 0);
			if (until <= s->now) {
				const char *request_id = kw_json_str(index, "request_id");
				struct owners o;
				struct lease none = { 0 };
				/* the owner rows carry this row's own part, digest or legacy id */
				size_t skip = 2 + KW_TOKEN_LEN + 1;
				char part[KW_REQUEST_ID_BYTES + 1];

				owners_of(index, &o);
				if (k.size > skip && k.size - skip <= KW_REQUEST_ID_BYTES) {
					memcpy(part, (char *)k.data + skip, k.size - skip);
					part[k.size - skip] = '\0';
				} else {
					part[0] = '\0';
				}
				rc = request_id && o.token && part[0] != '\0' ?
				    lease_write(st, txn, &o, request_id, part, &none, 0) : KW_OK;
				s->removed++;
			}
		}
		json_object_put(index);
		if (rc == KW_OK)
			rc = kw_store_err(cur->get(cur, &k, &v, DB_NEXT));
	}
	cur->close(cur);
	if (rc != KW_OK && rc != KW_ENOTFOUND)
		goto out;

	/* breaches: "<owner>|<16 hex time>|<token>" rows older than a week */
	if ((rc = sweep_breaches(st, txn, s)) != KW_OK)
		goto out;

	/* receipts: every "t|<time>" row before the cutoff, and the row it names */
	snprintf(cutoff, sizeof(cutoff), "t|%016llx", (unsigned long long)(s->now - RECEIPT_SECS));
	if ((rc = kw_store_err(receipts->cursor(receipts, txn, &cur, 0))) != KW_OK)
		goto out;
	free(k.data);
	k.data = strdup("t|");
	k.size = 2;
	rc = kw_store_err(cur->get(cur, &k, &v, DB_SET_RANGE));
	while (rc == KW_OK && k.size >= 19 && memcmp(k.data, "t|", 2) == 0 &&
	    memcmp(k.data, cutoff, 18) < 0) {
		DBT named = { .data = (char *)k.data + 19, .size = k.size - 19 };

		/* a deadlock here must abort the sweep for kw_store_txn to run it again */
		if ((rc = kw_store_err(receipts->del(receipts, txn, &named, 0))) == KW_ENOTFOUND)
			rc = KW_OK;
		if (rc == KW_OK && (rc = kw_store_err(cur->del(cur, 0))) == KW_OK)
			rc = kw_store_err(cur->get(cur, &k, &v, DB_NEXT));
		s->removed++;
	}
	cur->close(cur);
out:
	free(k.data);
	free(v.data);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/*
 * The pool manager's upkeep of the shared counters: lapsed leases are
 * returned and old receipts forgotten, so neither grows without bound.
 * (A lapsed lease is also ignored, and removed, by the next check of its
 * key; this sweep catches the keys that are never checked again.)
 */
enum kw_err
kw_limits_maintain(struct kw_store *st, time_t now)
{
	struct sweep s = { .now = now };
	enum kw_err rc = kw_store_txn_flags(st, KW_TXN_NOSYNC, sweep_body, &s);

	if (rc != KW_OK)
		kw_log_warn("limits: upkeep failed: %s", kw_err_name(rc));
	else if (s.removed > 0)
		kw_log_debug("limits: returned or forgot %u leases and receipts", s.removed);
	return rc;
}
