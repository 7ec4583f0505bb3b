/* face_venice.c: Venice's API keys (/api/v1/api_keys...), stored as ordinary key records with a "venice" object. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

#define VENICE_TABLE "Venice_ApiKey"	/* the audit entries' table */
#define ALIAS_PREFIX "venice:"		/* key_alias "venice:<id>" finds a key by its id */
/*
 * Owners are "user:<user_id>", or "master" for the master key's keys: the
 * prefix keeps a user whose id is "master" from owning the master's keys.
 */
#define MASTER_OWNER "master"
#define CREATE_RPM 20			/* creations a minute per owner */
#define ACTIVE_CAP 500			/* active (not expired) keys per owner */
#define LOG_ROWS 50			/* rows of the breaches log answered */
#define VENICE_TIME_LEN 25		/* "2026-11-22T07:36:43.000Z" + NUL */
#define SECRET_RANDOM 32		/* random bytes in a key: 43 base64url characters */
#define SECRET_MAX 80			/* "VENICE_INFERENCE_KEY_" + 43 + NUL, with room */

static const char *const currencies[] = { "usd", "diem", "vcu" };
#define NCURRENCIES (sizeof(currencies) / sizeof(currencies[0]))

/* --- times ---------------------------------------------------------------- */

/* Writes t as Venice writes times: "2026-11-22T07:36:43.000Z". */
static void
venice_time_format(time_t t, char out[VENICE_TIME_LEN])
{
	char rfc3339[KW_TIME_LEN];

	kw_time_format(t, rfc3339);	/* never more than four digits of year */
	snprintf(out, VENICE_TIME_LEN, "%.19s.000Z", rfc3339);
}

/* A time as a Venice answer holds it (owned string), or null when t is 0. */
static json_object *
venice_time(time_t t)
{
	char buf[VENICE_TIME_LEN];

	if (t == 0)
		return NULL;
	venice_time_format(t, buf);
	return json_object_new_string(buf);
}

/* A stored RFC 3339 time (a record's field) as a Venice time (owned), or null. */
static json_object *
venice_time_of(json_object *rec, const char *field)
{
	time_t t;

	if (kw_time_parse(kw_json_str(rec, field), &t) != KW_OK)
		return NULL;
	return venice_time(t);
}

/* Reads exactly n decimal digits at *s, advancing it; -1 when they are not there. */
static int
digits(const char **s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++, (*s)++) {
		if (!isdigit((unsigned char)**s))
			return -1;
		v = v * 10 + (**s - '0');
	}
	return v;
}

/* The days of month (1..12) of year, leap years counted. */
static int
days_in_month(int year, int month)
{
	static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

	return month == 2 && leap ? 29 : days[month - 1];
}

/*
 * Parses an expiresAt: "YYYY-MM-DD" (that day, 00:00:00Z) or an ISO time
 * "YYYY-MM-DDTHH:MM[:SS[.fraction]][Z|+00:00]" in UTC (fractions of a
 * second are dropped).  KW_EINVAL for anything else or an impossible date.
 */
static enum kw_err
parse_iso(const char *s, time_t *out)
{
	struct tm tm = { 0 };
	int y, mo, d, h = 0, mi = 0, sec = 0;

	if ((y = digits(&s, 4)) < 0 || *s++ != '-' || (mo = digits(&s, 2)) < 0 || *s++ != '-' ||
	    (d = digits(&s, 2)) < 0)
		return KW_EINVAL;
	if (*s == 'T') {
		s++;
		if ((h = digits(&s, 2)) < 0 || *s++ != ':' || (mi = digits(&s, 2)) < 0)
			return KW_EINVAL;
		if (*s == ':') {
			s++;
			if ((sec = digits(&s, 2)) < 0)
				return KW_EINVAL;
			if (*s == '.') {
				if (!isdigit((unsigned char)s[1]))
					return KW_EINVAL;
				for (s++; isdigit((unsigned char)*s); s++)
					;
			}
		}
		if (*s == 'Z')
			s++;
		else if (strncmp(s, "+00:00", 6) == 0)
			s += 6;
	}
	if (*s != '\0' || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) ||
	    h > 23 || mi > 59 || sec > 59)
		return KW_EINVAL;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	*out = timegm(&tm);
	return *out == (time_t)-1 ? KW_EINVAL : KW_OK;
}

/*
 * Reads body's expiresAt into *at: 0 for never ("", null or absent), else
 * its time, which must be in the future.  KW_EINVAL naming expiresAt
 * otherwise (req->err).
 */
static enum kw_err
expires_of(struct kw_req *req, json_object *body, time_t *at)
{
	const char *s = kw_json_str(body, "expiresAt");

	*at = 0;
	if (s == NULL || *s == '\0')
		return KW_OK;
	if (parse_iso(s, at) != KW_OK) {
		kw_error_set(&req->err, KW_EINVAL, "expiresAt",
		    "expiresAt must be empty, YYYY-MM-DD or an ISO time in UTC");
		return KW_EINVAL;
	}
	if (*at <= req->now) {
		kw_error_set(&req->err, KW_EINVAL, "expiresAt", "expiresAt must be in the future");
		return KW_EINVAL;
	}
	return KW_OK;
}

/* --- the caller -------------------------------------------------------------- */

/* Who is asking, as this face sees it; rebuilt in each transaction attempt. */
struct venice_caller {
	int master;
	const char *type;		/* "ADMIN", "INFERENCE"; NULL: the master or a non-Venice key */
	char owner[KW_ID_MAX + 8];	/* whose keys it manages */
	json_object *rec;		/* owned: the caller's key record; NULL for the master */
};

/* Releases the caller record vc holds and zeroes vc. */
static void
caller_clear(struct venice_caller *vc)
{
	json_object_put(vc->rec);
	memset(vc, 0, sizeof(*vc));
}

/*
 * Reads the caller (already known to kw_auth_caller) into *vc in txn: the
 * master key (owner "master"), or a key whose record holds a "venice"
 * object (owner: "user:" and the key's user_id, else its venice.owner).  A key that
 * is not a Venice key keeps type NULL.
 */
static enum kw_err
caller_read(struct kw_req *req, DB_TXN *txn, struct venice_caller *vc)
{
	const struct kw_caller *c = req->caller;
	json_object *venice;
	const char *owner;
	enum kw_err rc;

	caller_clear(vc);
	if (c->is_master) {
		vc->master = 1;
		snprintf(vc->owner, sizeof(vc->owner), "%s", MASTER_OWNER);
		return KW_OK;
	}
	rc = kw_rec_get(req->store, txn, KW_DB_KEYS, c->token, 0, &vc->rec);
	if (rc == KW_ENOTFOUND) {
		kw_error_set(&req->err, KW_EAUTH, NULL, "invalid API key");
		return KW_EAUTH;
	}
	if (rc != KW_OK)
		return rc;
	venice = json_object_object_get(vc->rec, "venice");
	if (venice == NULL || !json_object_is_type(venice, json_type_object))
		return KW_OK;
	vc->type = kw_json_str(venice, "apiKeyType");
	owner = kw_json_str(venice, "owner");
	if (c->user_id[0] != '\0')
		snprintf(vc->owner, sizeof(vc->owner), "user:%s", c->user_id);
	else
		snprintf(vc->owner, sizeof(vc->owner), "%s", owner ? owner : MASTER_OWNER);
	return KW_OK;
}

/* KW_OK when the caller manages keys: the master key or an ADMIN Venice key; else 401. */
static enum kw_err
caller_admin(struct kw_req *req, const struct venice_caller *vc)
{
	if (vc->master || (vc->type != NULL && strcmp(vc->type, "ADMIN") == 0))
		return KW_OK;
	/* Venice's words for an INFERENCE key on an admin route */
	kw_error_set(&req->err, KW_EAUTH, NULL, vc->type != NULL ? "Admin API key required" :
	    "Admin API key required: this is not a Venice API key");
	return KW_EAUTH;
}

/* --- Venice key records --------------------------------------------------------- */

/* The record's "venice" object (borrowed), or NULL when it is not a Venice key. */
static json_object *
venice_of(json_object *rec)
{
	json_object *v = json_object_object_get(rec, "venice");

	return v != NULL && json_object_is_type(v, json_type_object) ? v : NULL;
}

/* True when rec is a Venice key of owner (NULL: of any owner). */
static int
owned(json_object *rec, const char *owner)
{
	const char *have = kw_json_str(venice_of(rec), "owner");

	if (venice_of(rec) == NULL)
		return 0;
	return owner == NULL || (have != NULL && strcmp(have, owner) == 0);
}

/* The owner whose keys the caller sees: NULL (every owner) for the master key. */
static const char *
scope_of(const struct venice_caller *vc)
{
	return vc->master ? NULL : vc->owner;
}

/* {"usd", "diem", "vcu"} of a consumption limit (borrowed; null or absent: no limits), owned. */
static json_object *
limits_copy(json_object *limit)
{
	json_object *out = json_object_new_object();

	for (size_t i = 0; i < NCURRENCIES; i++)
		json_object_object_add(out, currencies[i],
		    kw_json_copy(json_object_object_get(limit, currencies[i])));
	return out;
}

/* The stored limit of currency ("usd", "diem"), or -1 when the key has none. */
static double
limit_of(json_object *venice, const char *currency)
{
	return kw_json_num(json_object_object_get(venice, "consumptionLimit"), currency, -1);
}

/*
 * Sets expiry at (0: never) on rec: its "expires", which every check
 * reads, and venice.expiresAt.
 */
static void
set_expiry(json_object *rec, time_t at)
{
	kw_json_set_time(rec, "expires", at);
	kw_json_set_time(venice_of(rec), "expiresAt", at);
}

/* Stamps rec as changed now by the caller. */
static void
touch(struct kw_req *req, json_object *rec)
{
	const struct kw_caller *c = req->caller;

	kw_json_set_time(rec, "updated_at", req->now);
	json_object_object_add(rec, "updated_by", json_object_new_string(
	    c->user_id[0] != '\0' ? c->user_id : "default_user_id"));
}

/* An amount as Venice's usage figures write it: a string with four decimals ("10.2424"). */
static json_object *
amount(double v)
{
	char buf[64];

	snprintf(buf, sizeof(buf), "%.4f", v);
	return json_object_new_string(buf);
}

/* The key's modelPrivacy (ALL when it was made before the setting existed). */
static json_object *
privacy_of(json_object *venice)
{
	const char *p = kw_json_str(venice, "modelPrivacy");

	return json_object_new_string(p ? p : "ALL");
}

/*
 * A VeniceKey as read back (owned): id, description, type, last6Chars,
 * times, limits, period, modelPrivacy, and usage from the limits engine:
 * usage.trailingSevenDays always, currentPeriodUsage (spend in the
 * current limitPeriod) when the key has a usd or diem limit, as Venice.
 */
static enum kw_err
key_view(struct kw_req *req, DB_TXN *txn, json_object *rec, json_object **out)
{
	json_object *venice = venice_of(rec), *usage, *week, *period;
	const char *p = kw_json_str(venice, "limitPeriod");
	struct kw_venice_usage u;
	enum kw_err rc;

	*out = NULL;
	if ((rc = kw_limits_venice_usage(req->store, txn, rec, req->now, &u)) != KW_OK)
		return rc;
	*out = json_object_new_object();
	json_object_object_add(*out, "id", kw_json_copy(json_object_object_get(venice, "id")));
	json_object_object_add(*out, "description",
	    kw_json_copy(json_object_object_get(venice, "description")));
	json_object_object_add(*out, "apiKeyType",
	    kw_json_copy(json_object_object_get(venice, "apiKeyType")));
	json_object_object_add(*out, "last6Chars",
	    kw_json_copy(json_object_object_get(venice, "last6Chars")));
	json_object_object_add(*out, "createdAt", venice_time_of(rec, "created_at"));
	/* recorded by the limits on use; a record's own last_used_at from before that */
	json_object_object_add(*out, "lastUsedAt", u.last_used != 0 ? venice_time(u.last_used) :
	    venice_time_of(rec, "last_used_at"));
	json_object_object_add(*out, "expiresAt", venice_time_of(rec, "expires"));
	json_object_object_add(*out, "consumptionLimits",
	    limits_copy(json_object_object_get(venice, "consumptionLimit")));
	json_object_object_add(*out, "limitPeriod", json_object_new_string(p ? p : "EPOCH"));
	json_object_object_add(*out, "modelPrivacy", privacy_of(venice));
	week = json_object_new_object();
	json_object_object_add(week, "usd", amount(u.week_usd));
	json_object_object_add(week, "vcu", amount(0));	/* deprecated: nothing is spent in it */
	json_object_object_add(week, "diem", amount(u.week_diem));
	usage = json_object_new_object();
	json_object_object_add(usage, "trailingSevenDays", week);
	json_object_object_add(*out, "usage", usage);
	if (limit_of(venice, "usd") >= 0 || limit_of(venice, "diem") >= 0) {
		period = json_object_new_object();
		json_object_object_add(period, "usd", amount(u.period_usd));
		json_object_object_add(period, "diem", amount(u.period_diem));
		json_object_object_add(*out, "currentPeriodUsage", period);
	}
	return KW_OK;
}

/*
 * The tokens of every Venice key (an owned array of strings), from the
 * "venice:" rows of the alias index: the Venice keys alone, not all keys.
 */
static enum kw_err
venice_tokens(struct kw_store *st, DB_TXN *txn, json_object **tokens)
{
	DB *aliases = kw_store_db(st, KW_DB_ALIASES);
	size_t plen = strlen(ALIAS_PREFIX);
	DBT k = { .flags = DB_DBT_REALLOC }, v = { .flags = DB_DBT_REALLOC };
	DBC *cur;
	enum kw_err rc;

	*tokens = json_object_new_array();
	if ((k.data = malloc(plen)) == NULL)
		return KW_ENOMEM;
	memcpy(k.data, ALIAS_PREFIX, plen);
	k.size = (u_int32_t)plen;
	if ((rc = kw_store_err(aliases->cursor(aliases, txn, &cur, 0))) != KW_OK) {
		free(k.data);
		return rc;
	}
	for (u_int32_t how = DB_SET_RANGE;
	    (rc = kw_store_err(cur->get(cur, &k, &v, how))) == KW_OK; how = DB_NEXT) {
		if (k.size < plen || memcmp(k.data, ALIAS_PREFIX, plen) != 0)
			break;
		json_object_array_add(*tokens, json_object_new_string_len(v.data, (int)v.size));
	}
	cur->close(cur);
	free(k.data);
	free(v.data);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/* Calls visit with each Venice key record of owner (NULL: any), borrowed, until it fails. */
typedef enum kw_err (*venice_visit)(struct kw_req *, DB_TXN *, json_object *rec, void *baton);

static enum kw_err
each_owned(struct kw_req *req, DB_TXN *txn, const char *owner, venice_visit visit, void *baton)
{
	json_object *tokens, *rec;
	enum kw_err rc = venice_tokens(req->store, txn, &tokens);

	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(tokens); i++) {
		rc = kw_rec_get(req->store, txn, KW_DB_KEYS,
		    json_object_get_string(json_object_array_get_idx(tokens, i)), 0, &rec);
		if (rc == KW_ENOTFOUND) {
			rc = KW_OK;	/* an index row without its record: nothing to see */
			continue;
		}
		if (rc == KW_OK && owned(rec, owner))
			rc = visit(req, txn, rec, baton);
		json_object_put(rec);
	}
	json_object_put(tokens);
	return rc;
}

/* True when the key record rec has expired by now. */
static int
expired(json_object *rec, time_t now)
{
	time_t until;

	return kw_time_parse(kw_json_str(rec, "expires"), &until) == KW_OK && until <= now;
}

/*
 * What find_key refuses with: Venice's 400 and its words, which differ by
 * operation; an expired key is no key to GET and PATCH, and is DELETEd.
 */
struct lookup {
	const char *missing;	/* the message */
	int expired_found;	/* an expired key is found */
};
static const struct lookup for_get = { "API key not found", 0 };
static const struct lookup for_patch = { "API key not found or expired", 0 };
static const struct lookup for_delete = { "API key could not be found", 1 };

/*
 * Reads the Venice key id that the caller may see into *rec (owned);
 * KW_EINVAL (Venice's 400, with how's message) for no such id, another
 * owner's key and, unless how says otherwise, an expired key alike.
 */
static enum kw_err
find_key(struct kw_req *req, DB_TXN *txn, const struct venice_caller *vc, const char *id,
    int flags, const struct lookup *how, json_object **rec)
{
	DB *aliases = kw_store_db(req->store, KW_DB_ALIASES);
	char alias[KW_ID_MAX + sizeof(ALIAS_PREFIX)], token[KW_TOKEN_LEN + 1];
	DBT k = { .data = alias }, v = { .data = token, .ulen = KW_TOKEN_LEN,
	    .flags = DB_DBT_USERMEM };
	const char *have;
	enum kw_err rc;

	*rec = NULL;
	if (id == NULL) {
		kw_error_set(&req->err, KW_EINVAL, NULL, "%s", how->missing);
		return KW_EINVAL;
	}
	snprintf(alias, sizeof(alias), "%s%s", ALIAS_PREFIX, id);
	k.size = (u_int32_t)strlen(alias);
	rc = kw_store_err(aliases->get(aliases, txn, &k, &v, 0));
	if (rc == KW_OK) {
		token[v.size] = '\0';
		rc = kw_rec_get(req->store, txn, KW_DB_KEYS, token, flags, rec);
	}
	if (rc == KW_OK) {
		have = kw_json_str(venice_of(*rec), "id");
		if (have == NULL || strcmp(have, id) != 0 || !owned(*rec, scope_of(vc)) ||
		    (!how->expired_found && expired(*rec, req->now)))
			rc = KW_ENOTFOUND;
	}
	if (rc == KW_ENOMEM)	/* a token longer than one: not a key's row */
		rc = KW_ENOTFOUND;
	if (rc != KW_OK) {
		json_object_put(*rec);
		*rec = NULL;
	}
	if (rc == KW_ENOTFOUND) {
		kw_error_set(&req->err, KW_EINVAL, NULL, "%s", how->missing);
		rc = KW_EINVAL;
	}
	return rc;
}

struct active_count {
	time_t now;
	size_t n;
};

/* Counts rec (borrowed) into baton, a struct active_count, when it has not expired. */
static enum kw_err
count_active(struct kw_req *req, DB_TXN *txn, json_object *rec, void *baton)
{
	struct active_count *a = baton;

	(void)req;
	(void)txn;
	if (!expired(rec, a->now))
		a->n++;
	return KW_OK;
}

/* --- operations -------------------------------------------------------------- */

/* One operation's transaction: its input and its answer, rebuilt on every attempt. */
struct venice_op {
	struct kw_req *req;
	struct venice_caller vc;
	int admin;			/* management: the master key or an ADMIN key */
	enum kw_err (*body)(struct venice_op *, DB_TXN *);
	time_t expires;			/* the parsed expiresAt of create and update */
	char secret[SECRET_MAX];	/* create: the new key; wiped at the end */
	char id[37];			/* create: the new key's id */
	json_object *answer;		/* owned */
};

/*
 * The transaction body of every operation: drops the last attempt's
 * answer, reads the caller afresh, checks it manages keys when the
 * operation needs that, then runs the operation's own body.
 */
static enum kw_err
op_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct venice_op *op = baton;
	enum kw_err rc;

	(void)st;
	json_object_put(op->answer);
	op->answer = NULL;
	if ((rc = caller_read(op->req, txn, &op->vc)) != KW_OK ||
	    (op->admin && (rc = caller_admin(op->req, &op->vc)) != KW_OK))
		return rc;
	return op->body(op, txn);
}

/*
 * Runs op in one transaction once the caller is known (401 otherwise);
 * the answer becomes the response.  Wipes the key a creation made.
 */
static enum kw_err
run(struct kw_req *req, struct kw_resp *resp, struct venice_op *op)
{
	enum kw_err rc = kw_auth_caller(req);

	op->req = req;
	if (rc == KW_OK)
		rc = kw_store_txn(req->store, op_body, op);
	if (rc == KW_OK)
		kw_resp_json(resp, 200, op->answer);
	else
		json_object_put(op->answer);
	caller_clear(&op->vc);
	kw_crypto_wipe(op->secret, sizeof(op->secret));
	return rc;
}

/* The creation answer's data (owned): the key and its settings, as Venice answers them. */
static json_object *
created_answer(struct venice_op *op, json_object *venice)
{
	json_object *data = json_object_new_object(), *answer = json_object_new_object();

	json_object_object_add(data, "apiKey", json_object_new_string(op->secret));
	json_object_object_add(data, "apiKeyType",
	    kw_json_copy(json_object_object_get(venice, "apiKeyType")));
	json_object_object_add(data, "consumptionLimit",
	    limits_copy(json_object_object_get(venice, "consumptionLimit")));
	json_object_object_add(data, "limitPeriod",
	    kw_json_copy(json_object_object_get(venice, "limitPeriod")));
	json_object_object_add(data, "expiresAt", venice_time(op->expires));
	json_object_object_add(data, "id", json_object_new_string(op->id));
	json_object_object_add(data, "description",
	    kw_json_copy(json_object_object_get(venice, "description")));
	json_object_object_add(data, "modelPrivacy", privacy_of(venice));
	json_object_object_add(answer, "data", data);
	json_object_object_add(answer, "success", json_object_new_boolean(1));
	return answer;
}

/*
 * Counts the creation in the owner's minute (429 past 20), checks the
 * owner's active keys (400 at 500), stores the record and its audit entry;
 * op->answer (owned) is the creation answer with the key.
 */
static enum kw_err
create_body(struct venice_op *op, DB_TXN *txn)
{
	struct kw_req *req = op->req;
	struct active_count active = { .now = req->now };
	json_object *body = req->body, *rec, *venice;
	const char *period = kw_json_str(body, "limitPeriod");
	char counter[KW_ID_MAX + 16], token[KW_TOKEN_LEN + 1], name[32], alias[64];
	size_t len = strlen(op->secret);
	int allowed;
	enum kw_err rc;

	snprintf(counter, sizeof(counter), "vcreate|%s", op->vc.owner);
	if ((rc = kw_limits_window_add(req->store, txn, counter, req->now, CREATE_RPM,
	    &allowed)) != KW_OK)
		return rc;
	if (!allowed) {
		kw_error_set(&req->err, KW_ELIMIT, NULL,
		    "API key creation is rate limited to %d requests per minute", CREATE_RPM);
		return KW_ELIMIT;
	}
	/* per owner: the master key sees every owner's keys but counts its own */
	if ((rc = each_owned(req, txn, op->vc.owner, count_active, &active)) != KW_OK)
		return rc;
	if (active.n >= ACTIVE_CAP) {
		kw_error_set(&req->err, KW_EINVAL, NULL,
		    "a maximum of %d active API keys is allowed: delete one first", ACTIVE_CAP);
		return KW_EINVAL;
	}
	/* a user's Venice keys are that user's keys: KEYWARDEN_MAX_KEYS_PER_USER bounds them too */
	if (strncmp(op->vc.owner, "user:", 5) == 0 &&
	    (rc = kw_keys_room(req->store, txn, op->vc.owner + 5, &req->err)) != KW_OK)
		return rc;

	kw_crypto_sha256_hex(op->secret, len, token);
	kw_keys_key_name(op->secret, name, sizeof(name));
	snprintf(alias, sizeof(alias), "%s%s", ALIAS_PREFIX, op->id);
	venice = json_object_new_object();
	json_object_object_add(venice, "id", json_object_new_string(op->id));
	json_object_object_add(venice, "apiKeyType",
	    kw_json_copy(json_object_object_get(body, "apiKeyType")));
	json_object_object_add(venice, "description",
	    kw_json_copy(json_object_object_get(body, "description")));
	json_object_object_add(venice, "consumptionLimit",
	    limits_copy(json_object_object_get(body, "consumptionLimit")));
	json_object_object_add(venice, "limitPeriod", json_object_new_string(period ? period :
	    "EPOCH"));
	json_object_object_add(venice, "modelPrivacy", json_object_new_string(
	    kw_json_str(body, "modelPrivacy") ? kw_json_str(body, "modelPrivacy") : "ALL"));
	json_object_object_add(venice, "owner", json_object_new_string(op->vc.owner));
	json_object_object_add(venice, "last6Chars", json_object_new_string(op->secret + len - 6));

	rec = json_object_new_object();
	json_object_object_add(rec, "token", json_object_new_string(token));
	json_object_object_add(rec, "key_name", json_object_new_string(name));
	json_object_object_add(rec, "key_alias", json_object_new_string(alias));
	/* a user's key belongs to that user: the owner without its "user:" */
	json_object_object_add(rec, "user_id", strncmp(op->vc.owner, "user:", 5) == 0 ?
	    json_object_new_string(op->vc.owner + 5) : NULL);
	/* an INFERENCE key calls models: it changes nothing on the LiteLLM face either */
	if (strcmp(kw_json_str(venice, "apiKeyType"), "INFERENCE") == 0)
		json_object_object_add(rec, "key_type", json_object_new_string("llm_api"));
	json_object_object_add(rec, "spend", json_object_new_double(0));
	json_object_object_add(rec, "models", json_object_new_array());
	json_object_object_add(rec, "metadata", json_object_new_object());
	json_object_object_add(rec, "blocked", json_object_new_boolean(0));
	/* the ADMIN key that made it sets its limits from now on (kw_policy_venice_standing) */
	json_object_object_add(venice, "maker", json_object_new_string(req->caller->token));
	json_object_object_add(rec, "venice", venice);
	set_expiry(rec, op->expires);
	kw_json_set_time(rec, "created_at", req->now);
	touch(req, rec);
	json_object_object_add(rec, "created_by",
	    json_object_get(json_object_object_get(rec, "updated_by")));

	if ((rc = kw_keys_put(req->store, txn, NULL, rec, &req->err)) == KW_OK &&
	    (rc = kw_audit_record(req, txn, "created", VENICE_TABLE, token, NULL, rec)) == KW_OK)
		op->answer = created_answer(op, venice);
	json_object_put(rec);
	return rc;
}

/*
 * Writes a new key of type ("INFERENCE", "ADMIN") into out: Venice's
 * prefix for its type, so that tools that recognise Venice keys know it,
 * then 32 random bytes in base64url.  Keys made before had keywarden's
 * "sk-" form; they are stored by their hash like these, and still verify.
 */
static void
new_secret(const char *type, char out[SECRET_MAX])
{
	unsigned char raw[SECRET_RANDOM];
	int n = snprintf(out, SECRET_MAX, "VENICE_%s_KEY_",
	    type != NULL && strcmp(type, "ADMIN") == 0 ? "ADMIN" : "INFERENCE");

	kw_crypto_random(raw, sizeof(raw));
	kw_crypto_b64url(raw, sizeof(raw), out + n);
	kw_crypto_wipe(raw, sizeof(raw));
}

/*
 * POST /api/v1/api_keys: a new INFERENCE or ADMIN key for the caller's
 * owner; 20 a minute and 500 active per owner.  The answer holds the key,
 * the only place it ever exists: the store keeps its SHA-256 and its last
 * six characters.
 */
enum kw_err
kw_op_venice_key_create(struct kw_req *req, struct kw_resp *resp)
{
	struct venice_op op = { .req = req, .admin = 1, .body = create_body };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	if ((rc = expires_of(req, req->body, &op.expires)) != KW_OK)
		return rc;
	new_secret(kw_json_str(req->body, "apiKeyType"), op.secret);
	kw_uuid4(op.id);
	return run(req, resp, &op);
}

/* Appends rec's view to baton, an array (borrowed), unless it has expired: Venice lists active keys. */
static enum kw_err
list_visit(struct kw_req *req, DB_TXN *txn, json_object *rec, void *baton)
{
	json_object *view;
	enum kw_err rc;

	if (expired(rec, req->now))
		return KW_OK;
	if ((rc = key_view(req, txn, rec, &view)) == KW_OK)
		json_object_array_add(baton, view);
	return rc;
}

/* Newest first, as Venice lists keys; ties (the same second) by id. */
static int
compare_views(const void *a, const void *b)
{
	json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b;
	const char *cx = kw_json_str(x, "createdAt"), *cy = kw_json_str(y, "createdAt");
	const char *ix = kw_json_str(x, "id"), *iy = kw_json_str(y, "id");
	int c = strcmp(cy ? cy : "", cx ? cx : "");

	return c != 0 ? c : strcmp(ix ? ix : "", iy ? iy : "");
}

/* op->answer (owned): {"object": "list", "data": [...]} of the keys the caller sees. */
static enum kw_err
list_body(struct venice_op *op, DB_TXN *txn)
{
	json_object *data = json_object_new_array();
	enum kw_err rc;

	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "object", json_object_new_string("list"));
	json_object_object_add(op->answer, "data", data);
	rc = each_owned(op->req, txn, scope_of(&op->vc), list_visit, data);
	json_object_array_sort(data, compare_views);
	return rc;
}

/* GET /api/v1/api_keys: the owner's active keys (the master key: every owner's), newest first, with usage. */
enum kw_err
kw_op_venice_keys_list(struct kw_req *req, struct kw_resp *resp)
{
	struct venice_op op = { .admin = 1, .body = list_body };

	return run(req, resp, &op);
}

/* op->answer (owned): {"data": VeniceKey} of the path's id; 400 when the caller sees none. */
static enum kw_err
get_body(struct venice_op *op, DB_TXN *txn)
{
	json_object *rec, *view;
	enum kw_err rc;

	if ((rc = find_key(op->req, txn, &op->vc, kw_req_path_param(op->req, "id"), 0,
	    &for_get, &rec)) != KW_OK)
		return rc;
	if ((rc = key_view(op->req, txn, rec, &view)) == KW_OK) {
		op->answer = json_object_new_object();
		json_object_object_add(op->answer, "data", view);
	}
	json_object_put(rec);
	return rc;
}

/* GET /api/v1/api_keys/{id}: one key; 400 for no such id, another owner's or an expired one. */
enum kw_err
kw_op_venice_key_get(struct kw_req *req, struct kw_resp *resp)
{
	struct venice_op op = { .admin = 1, .body = get_body };

	return run(req, resp, &op);
}

/* Applies the sent fields of an update (body, borrowed) to rec, a copy of the stored key. */
static void
apply_update(struct venice_op *op, json_object *body, json_object *rec)
{
	json_object *venice = venice_of(rec), *sent, *limits;

	if (kw_json_str(body, "description") != NULL)
		json_object_object_add(venice, "description",
		    kw_json_copy(json_object_object_get(body, "description")));
	if (kw_json_has(body, "expiresAt"))
		set_expiry(rec, op->expires);
	if (kw_json_has(body, "limitPeriod")) {
		const char *p = kw_json_str(body, "limitPeriod");

		json_object_object_add(venice, "limitPeriod",
		    json_object_new_string(p ? p : "EPOCH"));
	}
	if (kw_json_str(body, "modelPrivacy") != NULL)
		json_object_object_add(venice, "modelPrivacy",
		    kw_json_copy(json_object_object_get(body, "modelPrivacy")));
	if (kw_json_has(body, "consumptionLimit")) {
		/* null clears every limit; an object changes the currencies it names */
		sent = json_object_object_get(body, "consumptionLimit");
		limits = limits_copy(sent != NULL ?
		    json_object_object_get(venice, "consumptionLimit") : NULL);
		for (size_t i = 0; sent != NULL && i < NCURRENCIES; i++)
			if (kw_json_has(sent, currencies[i]))
				json_object_object_add(limits, currencies[i],
				    kw_json_copy(json_object_object_get(sent, currencies[i])));
		json_object_object_add(venice, "consumptionLimit", limits);
	}
	touch(op->req, rec);
}

/*
 * Reads the key for update, applies the fields sent, stores it with its
 * audit entry; op->answer (owned) is {"data": VeniceKey, "success": true}.
 */
static enum kw_err
update_body(struct venice_op *op, DB_TXN *txn)
{
	struct kw_req *req = op->req;
	json_object *old, *rec, *view;
	enum kw_err rc;

	if ((rc = find_key(req, txn, &op->vc, kw_json_str(req->body, "id"), KW_RMW, &for_patch,
	    &old)) != KW_OK)
		return rc;
	if ((rc = kw_policy_check(req, KW_POLICY_VENICE, kw_policy_venice_standing(req, old),
	    venice_of(old), req->body)) != KW_OK) {
		json_object_put(old);
		return rc;
	}
	rec = kw_json_copy(old);
	apply_update(op, req->body, rec);
	if ((rc = kw_keys_put(req->store, txn, old, rec, &req->err)) == KW_OK &&
	    (rc = kw_audit_record(req, txn, "updated", VENICE_TABLE, kw_json_str(rec, "token"),
	    old, rec)) == KW_OK &&
	    (rc = key_view(req, txn, rec, &view)) == KW_OK) {
		op->answer = json_object_new_object();
		json_object_object_add(op->answer, "data", view);
		json_object_object_add(op->answer, "success", json_object_new_boolean(1));
	}
	json_object_put(rec);
	json_object_put(old);
	return rc;
}

/* PATCH /api/v1/api_keys: the key named by id (not expired); only the fields sent change. */
enum kw_err
kw_op_venice_key_update(struct kw_req *req, struct kw_resp *resp)
{
	struct venice_op op = { .admin = 1, .body = update_body };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	if ((rc = expires_of(req, req->body, &op.expires)) != KW_OK)
		return rc;
	return run(req, resp, &op);
}

/* Deletes the key named by ?id= (or the body's id) and its index rows, audited; op->answer {"success": true}. */
static enum kw_err
delete_body(struct venice_op *op, DB_TXN *txn)
{
	struct kw_req *req = op->req;
	const char *id = kw_json_str(req->query, "id");
	json_object *rec;
	enum kw_err rc;

	if (id == NULL)
		id = kw_json_str(req->body, "id");
	rc = find_key(req, txn, &op->vc, id, KW_RMW, &for_delete, &rec);
	if (rc != KW_OK)
		return rc;
	if ((rc = kw_keys_del(req->store, txn, rec)) == KW_OK &&
	    (rc = kw_audit_record(req, txn, "deleted", VENICE_TABLE, kw_json_str(rec, "token"), rec,
	    NULL)) == KW_OK) {
		op->answer = json_object_new_object();
		json_object_object_add(op->answer, "success", json_object_new_boolean(1));
	}
	json_object_put(rec);
	return rc;
}

/*
 * DELETE /api/v1/api_keys?id= or with {"id"} in the body, as Venice
 * takes either: the key stops working at once, on every worker.  400
 * naming id when neither names one.
 */
enum kw_err
kw_op_venice_key_delete(struct kw_req *req, struct kw_resp *resp)
{
	struct venice_op op = { .admin = 1, .body = delete_body };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	if (kw_json_str(req->query, "id") == NULL && kw_json_str(req->body, "id") == NULL) {
		kw_error_set(&req->err, KW_EVALID, "id", "Required: send ?id= or {\"id\"}");
		return KW_EVALID;
	}
	return run(req, resp, &op);
}

/* Adds what is left of limit (spent of it) as balances' currency, never below 0; none without a limit. */
static void
balance(json_object *balances, const char *currency, double limit, double spent)
{
	if (limit >= 0)
		json_object_object_add(balances, currency,
		    json_object_new_double(limit > spent ? limit - spent : 0));
}

/* Adds {"type", "amount"} to list when the record's field (a number) is set. */
static void
rate_entry(json_object *list, const char *type, json_object *limit)
{
	json_object *e;

	if (!json_object_is_type(limit, json_type_int) && !json_object_is_type(limit,
	    json_type_double))
		return;
	e = json_object_new_object();
	json_object_object_add(e, "type", json_object_new_string(type));
	json_object_object_add(e, "amount", json_object_new_double(json_object_get_double(limit)));
	json_object_array_add(list, e);
}

/* Appends {"apiModelId": model, "rateLimits": [...]} to out when rpm or tpm is a number. */
static void
model_rates(json_object *out, const char *model, json_object *rpm, json_object *tpm)
{
	json_object *limits = json_object_new_array(), *e;

	rate_entry(limits, "RPM", rpm);
	rate_entry(limits, "TPM", tpm);
	if (json_object_array_length(limits) == 0) {
		json_object_put(limits);
		return;
	}
	e = json_object_new_object();
	json_object_object_add(e, "apiModelId", json_object_new_string(model));
	json_object_object_add(e, "rateLimits", limits);
	json_object_array_add(out, e);
}

/*
 * The key's rate limits as Venice lists them (owned): one entry per model
 * of its model_rpm_limit and model_tpm_limit, and the key's own rpm_limit
 * and tpm_limit under apiModelId "*" (every model).
 */
static json_object *
rate_limits_of(json_object *rec)
{
	json_object *out = json_object_new_array();
	json_object *rpm = json_object_object_get(rec, "model_rpm_limit");
	json_object *tpm = json_object_object_get(rec, "model_tpm_limit");

	model_rates(out, "*", json_object_object_get(rec, "rpm_limit"),
	    json_object_object_get(rec, "tpm_limit"));
	if (json_object_is_type(rpm, json_type_object)) {
		json_object_object_foreach(rpm, model, limit)
			model_rates(out, model, limit, json_object_object_get(tpm, model));
	}
	if (json_object_is_type(tpm, json_type_object)) {
		json_object_object_foreach(tpm, model, limit)
			if (!json_object_object_get_ex(rpm, model, NULL))
				model_rates(out, model, NULL, limit);
	}
	return out;
}

/* The next UTC midnight after now: when Venice's epoch, and an EPOCH key's limits, reset. */
static time_t
next_epoch(time_t now)
{
	return now - now % 86400 + 86400;
}

/*
 * op->answer (owned): Venice's rate_limits of the calling key:
 * accessPermitted, apiTier, balances (what is left of its usd and diem
 * limits in their period), keyExpiration, nextEpochBegins and rateLimits;
 * 400 for the master key, 401 for a key that is not Venice's.
 */
static enum kw_err
rate_limits_body(struct venice_op *op, DB_TXN *txn)
{
	struct kw_req *req = op->req;
	json_object *rec = op->vc.rec, *venice = venice_of(rec), *data, *balances, *tier;
	double usd = limit_of(venice, "usd"), diem = limit_of(venice, "diem");
	struct kw_venice_usage u;
	enum kw_err rc;

	if (op->vc.master) {
		kw_error_set(&req->err, KW_EINVAL, NULL,
		    "the master key has no rate limits: call with a Venice API key");
		return KW_EINVAL;
	}
	if (op->vc.type == NULL) {
		kw_error_set(&req->err, KW_EAUTH, NULL, "this is not a Venice API key");
		return KW_EAUTH;
	}
	if ((rc = kw_limits_venice_usage(req->store, txn, rec, req->now, &u)) != KW_OK)
		return rc;
	data = json_object_new_object();
	/* a blocked or expired key never gets here: kw_auth_caller refused it */
	json_object_object_add(data, "accessPermitted", json_object_new_boolean(
	    !(usd >= 0 && u.period_usd >= usd) && !(diem >= 0 && u.period_diem >= diem)));
	tier = json_object_new_object();
	json_object_object_add(tier, "id", json_object_new_string(KW_VENICE_TIER));
	json_object_object_add(tier, "isCharged", json_object_new_boolean(1));
	json_object_object_add(data, "apiTier", tier);
	balances = json_object_new_object();
	balance(balances, "USD", usd, u.period_usd);
	balance(balances, "DIEM", diem, u.period_diem);
	json_object_object_add(data, "balances", balances);
	json_object_object_add(data, "keyExpiration", venice_time_of(rec, "expires"));
	json_object_object_add(data, "nextEpochBegins", venice_time(next_epoch(req->now)));
	json_object_object_add(data, "rateLimits", rate_limits_of(rec));
	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "data", data);
	return KW_OK;
}

/*
 * GET /api/v1/api_keys/rate_limits: the calling Venice key's limits and
 * what is left of them in its period (INFERENCE keys too).  The master key
 * has none: 400.
 */
enum kw_err
kw_op_venice_rate_limits(struct kw_req *req, struct kw_resp *resp)
{
	struct venice_op op = { .body = rate_limits_body };

	return run(req, resp, &op);
}

/* --- the breaches log ---------------------------------------------------------- */

/*
 * True when the breaches row key (n bytes) is "<owner>|<16 hex>|<64 hex>"
 * for this owner (NULL: any owner); *at is its time.  Exact lengths, so an
 * owner whose name holds "|" is never taken for another.
 */
static int
row_of(const char *key, size_t n, const char *owner, char at[17])
{
	const char *tail;
	size_t olen, tlen = 16 + 1 + KW_TOKEN_LEN;

	if (n < tlen + 2)
		return 0;
	tail = key + n - tlen;
	if (tail[-1] != '|' || tail[16] != '|' || strspn(tail, "0123456789abcdef") < 16)
		return 0;
	olen = (size_t)(tail - 1 - key);
	if (owner != NULL && (strlen(owner) != olen || memcmp(key, owner, olen) != 0))
		return 0;
	memcpy(at, tail, 16);
	at[16] = '\0';
	return 1;
}

/*
 * A stored breach row as answered (owned): {apiKeyId, modelId,
 * rateLimitTier, rateLimitType, timestamp}; NULL for a damaged row and for
 * a row of a spent consumption limit, which Venice's log does not hold.
 */
static json_object *
row_view(const void *data, size_t n)
{
	json_object *row, *out;
	const char *type;
	time_t t;

	if (kw_rec_parse(data, n, &row) != KW_OK)
		return NULL;
	type = kw_json_str(row, "rateLimitType");
	if (type == NULL || (strcmp(type, "RPM") != 0 && strcmp(type, "TPM") != 0)) {
		/* a spent consumption limit, logged before such refusals stopped being logged */
		json_object_put(row);
		return NULL;
	}
	out = json_object_new_object();
	json_object_object_add(out, "apiKeyId",
	    kw_json_copy(json_object_object_get(row, "apiKeyId")));
	json_object_object_add(out, "modelId", json_object_new_string(kw_json_str(row, "modelId") ?
	    kw_json_str(row, "modelId") : "model:unknown"));	/* rows from before it was named */
	json_object_object_add(out, "rateLimitTier", json_object_new_string(KW_VENICE_TIER));
	json_object_object_add(out, "rateLimitType",
	    kw_json_copy(json_object_object_get(row, "rateLimitType")));
	if (kw_time_parse(kw_json_str(row, "timestamp"), &t) == KW_OK)
		json_object_object_add(out, "timestamp", venice_time(t));
	else
		json_object_object_add(out, "timestamp",
		    kw_json_copy(json_object_object_get(row, "timestamp")));
	json_object_put(row);
	return out;
}

/* Newest first: rows are {"at": "<16 hex time>", "row": {...}}. */
static int
compare_rows(const void *a, const void *b)
{
	json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b;

	return -strcmp(kw_json_str(x, "at"), kw_json_str(y, "at"));
}

/*
 * Keeps the row stored as data (n bytes) at time at in rows (an array of
 * {"at", "row"}, newest first) when it is among the LOG_ROWS newest seen:
 * memory stays bounded however many rows the log holds.
 */
static void
keep_row(json_object *rows, const char *at, const void *data, size_t n)
{
	size_t len = json_object_array_length(rows);
	json_object *row, *item;

	if (len >= LOG_ROWS &&
	    strcmp(at, kw_json_str(json_object_array_get_idx(rows, len - 1), "at")) <= 0)
		return;	/* older than every row kept */
	if ((row = row_view(data, n)) == NULL)
		return;	/* a damaged row (kw_rec_parse logged it), or one of another kind */
	item = json_object_new_object();
	json_object_object_add(item, "at", json_object_new_string(at));
	json_object_object_add(item, "row", row);
	json_object_array_add(rows, item);
	json_object_array_sort(rows, compare_rows);
	if (json_object_array_length(rows) > LOG_ROWS)
		json_object_array_del_idx(rows, LOG_ROWS, 1);
}

/*
 * op->answer (owned): the newest LOG_ROWS breaches of the caller's owner
 * (every owner's for the master key) from breaches.db.  One owner's rows
 * are read backwards from "<owner>|~"; every owner's are merged by time.
 */
static enum kw_err
log_body(struct venice_op *op, DB_TXN *txn)
{
	DB *db = kw_store_db(op->req->store, KW_DB_BREACHES);
	const char *owner = op->vc.master ? NULL : op->vc.owner;
	json_object *rows = json_object_new_array(), *data = json_object_new_array();
	DBT k = { .flags = DB_DBT_REALLOC }, v = { .flags = DB_DBT_REALLOC };
	size_t olen = owner ? strlen(owner) : 0;
	u_int32_t how = DB_LAST;
	char at[17];
	DBC *cur;
	enum kw_err rc;

	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "object", json_object_new_string("list"));
	json_object_object_add(op->answer, "data", data);
	if ((rc = kw_store_err(db->cursor(db, txn, &cur, 0))) != KW_OK) {
		json_object_put(rows);
		return rc;
	}
	if (owner != NULL) {
		/* "<owner>|~" sorts after every "<owner>|<hex time>" row: step back from there */
		if ((k.data = malloc(olen + 2)) == NULL) {
			cur->close(cur);
			json_object_put(rows);
			return KW_ENOMEM;
		}
		memcpy(k.data, owner, olen);
		memcpy((char *)k.data + olen, "|~", 2);
		k.size = (u_int32_t)(olen + 2);
		rc = kw_store_err(cur->get(cur, &k, &v, DB_SET_RANGE));
		how = rc == KW_OK ? DB_PREV : DB_LAST;
		if (rc != KW_OK && rc != KW_ENOTFOUND)
			goto out;
	}
	while ((rc = kw_store_err(cur->get(cur, &k, &v, how))) == KW_OK) {
		how = DB_PREV;
		if (owner != NULL && (k.size < olen + 1 || memcmp(k.data, owner, olen) != 0 ||
		    ((char *)k.data)[olen] != '|'))
			break;	/* before this owner's rows */
		if (!row_of(k.data, k.size, owner, at))
			continue;
		keep_row(rows, at, v.data, v.size);
		if (owner != NULL && json_object_array_length(rows) >= LOG_ROWS)
			break;	/* one owner's rows come newest first: enough */
	}
out:
	cur->close(cur);
	free(k.data);
	free(v.data);
	if (rc == KW_ENOTFOUND)
		rc = KW_OK;
	for (size_t i = 0; rc == KW_OK && i < json_object_array_length(rows); i++)
		json_object_array_add(data, json_object_get(json_object_object_get(
		    json_object_array_get_idx(rows, i), "row")));
	json_object_put(rows);
	return rc;
}

/*
 * GET /api/v1/api_keys/rate_limits/log: the last 50 times the owner's keys
 * were refused by a rate limit (RPM, TPM; the master key: every owner's),
 * newest first.
 */
enum kw_err
kw_op_venice_rate_limit_log(struct kw_req *req, struct kw_resp *resp)
{
	struct venice_op op = { .admin = 1, .body = log_body };

	return run(req, resp, &op);
}
