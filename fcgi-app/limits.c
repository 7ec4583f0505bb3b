/* limits.c: every limit a key carries, checked and counted in the store so all workers share one view. */
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

/* A lease row in leases.db: a request in flight, its reserved cost and when it lapses. */
struct lease {
	double cost;
	int64_t until;
};

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
		c->window = period ? kw_keys_budget_reset(period, now) : 0;
		c->value = 0;
	}
	return rc;
}

/* --- leases -------------------------------------------------------- */

/*
 * Lease rows are "<kind>|<length>:<id>|<request_id>": the length makes the
 * prefix of one owner never the prefix of another ("a" and "a|b").
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
	int64_t first_until;	/* when the soonest of them lapses */
};

/*
 * Counts the leases of one owner still in flight at now, deleting lapsed
 * ones as it goes (a slot that was never returned comes back this way).
 */
static enum kw_err
leases_of(struct kw_store *st, DB_TXN *txn, char kind, const char *id, time_t now,
    struct in_flight *out)
{
	DB *db = kw_store_db(st, KW_DB_LEASES);
	char prefix[KW_ID_MAX + 32];
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
	 * Read locks only: most checks find nothing lapsed, and many workers
	 * check one key at once.  Deleting a lapsed row upgrades the lock (a
	 * deadlock there is retried by kw_store_txn).
	 */
	rc = kw_store_err(cur->get(cur, &k, &v, DB_SET_RANGE));
	while (rc == KW_OK && k.size >= plen && memcmp(k.data, prefix, plen) == 0) {
		if (v.size == sizeof(l))
			memcpy(&l, v.data, sizeof(l));
		if (v.size == sizeof(l) && l.until > now) {
			out->count++;
			out->reserved += l.cost;
			if (out->first_until == 0 || l.until < out->first_until)
				out->first_until = l.until;
		} else if ((rc = kw_store_err(cur->del(cur, 0))) != KW_OK) {
			break;
		}
		rc = kw_store_err(cur->get(cur, &k, &v, DB_NEXT));
	}
	cur->close(cur);
	free(k.data);
	free(v.data);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

static enum kw_err
lease_row(struct kw_store *st, DB_TXN *txn, char kind, const char *id, const char *request_id,
    const struct lease *l, int put)
{
	DB *db = kw_store_db(st, KW_DB_LEASES);
	char buf[KW_ID_MAX + 200];
	DBT k = { .data = buf }, v = { .data = (void *)l, .size = sizeof(*l) };
	enum kw_err rc;

	if (id == NULL || !lease_prefix(kind, id, buf, sizeof(buf) - 130))
		return KW_OK;
	strcat(buf, request_id);
	k.size = (u_int32_t)strlen(buf);
	rc = kw_store_err(put ? db->put(db, txn, &k, &v, 0) : db->del(db, txn, &k, 0));
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/* The owners a lease is counted against: the key, its team, its user. */
struct owners {
	const char *token, *team_id, *user_id;
};

/*
 * The index row of a lease, "l|<token>|<request_id>": a request id names a
 * lease of one key only, so one key's usage never settles another's.
 */
static void
lease_name(char *buf, size_t n, const char *token, const char *request_id)
{
	snprintf(buf, n, "l|%s|%s", token, request_id);
}

/* Takes (put=1) or returns (put=0) the lease request_id for every owner, with its index row. */
static enum kw_err
lease_write(struct kw_store *st, DB_TXN *txn, const struct owners *o, const char *request_id,
    const struct lease *l, int put)
{
	DB *db = kw_store_db(st, KW_DB_LEASES);
	json_object *index = json_object_new_object();
	char name[KW_TOKEN_LEN + 160];
	DBT k = { .data = name }, v;
	enum kw_err rc;

	lease_name(name, sizeof(name), o->token, request_id);
	k.size = (u_int32_t)strlen(name);
	json_object_object_add(index, "request_id", json_object_new_string(request_id));
	json_object_object_add(index, "token", json_object_new_string(o->token));
	json_object_object_add(index, "team_id", o->team_id ? json_object_new_string(o->team_id) : NULL);
	json_object_object_add(index, "user_id", o->user_id ? json_object_new_string(o->user_id) : NULL);
	json_object_object_add(index, "until", json_object_new_int64(l->until));
	v = (DBT){ .data = (void *)json_object_to_json_string_ext(index, JSON_C_TO_STRING_PLAIN) };
	v.size = (u_int32_t)strlen(v.data);
	if ((rc = lease_row(st, txn, 'k', o->token, request_id, l, put)) == KW_OK &&
	    (rc = lease_row(st, txn, 't', o->team_id, request_id, l, put)) == KW_OK &&
	    (rc = lease_row(st, txn, 'u', o->user_id, request_id, l, put)) == KW_OK) {
		rc = kw_store_err(put ? db->put(db, txn, &k, &v, 0) : db->del(db, txn, &k, 0));
		if (rc == KW_ENOTFOUND)
			rc = KW_OK;
	}
	json_object_put(index);
	return rc;
}

/*
 * Reads the index row of key token's lease request_id into *index (owned);
 * KW_ENOTFOUND when the key holds no such lease.
 */
static enum kw_err
lease_index(struct kw_store *st, DB_TXN *txn, const char *token, const char *request_id,
    json_object **index)
{
	DB *db = kw_store_db(st, KW_DB_LEASES);
	char name[KW_TOKEN_LEN + 160];
	DBT k = { .data = name }, v = { .flags = DB_DBT_MALLOC };
	enum kw_err rc;

	lease_name(name, sizeof(name), token, request_id);
	k.size = (u_int32_t)strlen(name);
	if ((rc = kw_store_err(db->get(db, txn, &k, &v, DB_RMW))) != KW_OK)
		return rc;
	rc = kw_rec_parse(v.data, v.size, index);
	free(v.data);
	return rc;
}

/* Returns key token's lease request_id, wherever its owners were, if it is still held. */
static enum kw_err
lease_settle(struct kw_store *st, DB_TXN *txn, const char *token, const char *request_id)
{
	json_object *index;
	struct owners o;
	struct lease none = { 0 };
	enum kw_err rc = lease_index(st, txn, token, request_id, &index);

	if (rc == KW_ENOTFOUND)
		return KW_OK;
	if (rc != KW_OK)
		return rc;
	o.token = kw_json_str(index, "token");
	o.team_id = kw_json_str(index, "team_id");
	o.user_id = kw_json_str(index, "user_id");
	rc = o.token ? lease_write(st, txn, &o, request_id, &none, 0) : KW_OK;
	json_object_put(index);
	return rc;
}

/* The receipt of a usage report: "r|<token>|<request_id>". */
static void
receipt_name(char *buf, size_t n, const char *token, const char *request_id)
{
	snprintf(buf, n, "r|%s|%s", token, request_id);
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
	char name[KW_TOKEN_LEN + 160];
	DBT k = { .data = name }, v = { .flags = DB_DBT_PARTIAL };
	json_object *held = NULL;
	enum kw_err rc = lease_index(st, txn, token, request_id, &held);

	json_object_put(held);
	*used = rc == KW_OK;
	if (rc != KW_OK && rc != KW_ENOTFOUND)
		return rc;
	if (*used)
		return KW_OK;
	receipt_name(name, sizeof(name), token, request_id);
	k.size = (u_int32_t)strlen(name);
	rc = kw_store_err(receipts->get(receipts, txn, &k, &v, 0));
	*used = rc == KW_OK;
	return rc == KW_ENOTFOUND ? KW_OK : rc;
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
 * What a check needs of a key, team or user, in a fixed binary form kept
 * beside the JSON record (summaries.db, written by every kw_rec_put of
 * those tables): the authorizer's path reads these and parses no JSON.
 * A summary with another version, or none, is rebuilt from the record.
 */
#define SUMMARY_VERSION 1

enum {
	S_BLOCKED = 1 << 0,
	S_MODELS = 1 << 1,		/* a non-empty models list */
	S_ROUTES = 1 << 2,		/* a non-empty allowed_routes list */
	S_MODEL_LIMITS = 1 << 3,	/* model_max_budget, model_rpm_limit or model_tpm_limit */
	S_VENICE = 1 << 4,		/* a Venice key: its type and consumption limits are in the record */
};

struct summary {
	uint32_t version, flags;
	int64_t expires, budget_reset_at;	/* 0 when none */
	double max_budget, soft_budget, spend, rpm_limit, tpm_limit, max_parallel;	/* NAN: none */
	uint16_t team_len, user_len;		/* the key's team_id and user_id follow */
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
	    (non_empty(rec, "venice") ? S_VENICE : 0);
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
	char kind = db == KW_DB_KEYS ? 'k' : db == KW_DB_TEAMS ? 't' : 'u';
	int len = snprintf(buf, n, "%c:%s", kind, id);

	return len > 0 && (size_t)len < n;
}

/*
 * Keeps the summary of record id of db (keys, teams, users) in step with
 * it, inside the caller's transaction: rec NULL deletes it.  Called by
 * kw_rec_put and kw_rec_del, so no writer can forget it.
 */
enum kw_err
kw_limits_summary_write(struct kw_store *st, DB_TXN *txn, enum kw_db db, const char *id,
    json_object *rec)
{
	DB *sums = kw_store_db(st, KW_DB_SUMMARIES);
	char name[KW_ID_MAX + 3];
	unsigned char buf[sizeof(struct summary) + 2 * KW_ID_MAX];
	struct summary s;
	const char *team = kw_json_str(rec, "team_id"), *user = kw_json_str(rec, "user_id");
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
		team = user = NULL;	/* a team's or user's own ids are not needed */
	s.team_len = team ? (uint16_t)strnlen(team, KW_ID_MAX) : 0;
	s.user_len = user ? (uint16_t)strnlen(user, KW_ID_MAX) : 0;
	memcpy(buf, &s, sizeof(s));
	memcpy(buf + sizeof(s), team ? team : "", s.team_len);
	memcpy(buf + sizeof(s) + s.team_len, user ? user : "", s.user_len);
	v.size = (u_int32_t)(sizeof(s) + s.team_len + s.user_len);
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
 * limitPeriod, and over the seven UTC days ending today.
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

	memset(out, 0, sizeof(*out));
	if (token == NULL)
		return KW_OK;
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

/* Remembers that a Venice key was refused, for /api/v1/api_keys/rate_limits/log. */
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
	json_object_object_add(row, "modelId", model ? json_object_new_string(model) : NULL);
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

/* Everything one check reads, held for the length of its transaction attempt. */
struct checking {
	const struct kw_check *in;
	struct kw_verdict *out;
	struct kw_store *st;
	DB_TXN *txn;
	time_t now;
	int64_t window;			/* this minute's start */
	struct party key, team, user;
	json_object *limits;		/* owned: the answer's limits list */
	struct in_flight key_flight, team_flight, user_flight;
	enum kw_err rc;			/* the first failed store read of record_of */
};

static void
checking_clear(struct checking *c)
{
	json_object_put(c->key.rec);
	json_object_put(c->team.rec);
	json_object_put(c->user.rec);
	json_object_put(c->limits);
	memset(&c->key, 0, sizeof(c->key));
	memset(&c->team, 0, sizeof(c->team));
	memset(&c->user, 0, sizeof(c->user));
	c->limits = NULL;
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

/*
 * Reads party id of db: its summary when the check needs no more, else
 * (or when it has no current summary) its record.  ids, when not NULL,
 * receives a key's team_id and user_id (2 * (KW_ID_MAX + 1) bytes).
 */
static enum kw_err
load_party(struct checking *c, enum kw_db db, const char *id, struct party *p, char *team,
    char *user)
{
	DB *sums = kw_store_db(c->st, KW_DB_SUMMARIES);
	char name[KW_ID_MAX + 3];
	unsigned char buf[sizeof(struct summary) + 2 * KW_ID_MAX];
	DBT k = { .data = name }, v = { .data = buf, .ulen = sizeof(buf), .flags = DB_DBT_USERMEM };
	enum kw_err rc;

	memset(p, 0, sizeof(*p));
	if (!c->in->verdict_only || !summary_name(name, sizeof(name), db, id))
		rc = KW_ENOTFOUND;	/* an answer describes the record: read it */
	else {
		k.size = (u_int32_t)strlen(name);
		rc = kw_store_err(sums->get(sums, c->txn, &k, &v, 0));
	}
	if (rc == KW_OK && v.size >= sizeof(struct summary)) {
		memcpy(&p->s, buf, sizeof(p->s));
		if (p->s.version == SUMMARY_VERSION &&
		    v.size == sizeof(p->s) + p->s.team_len + p->s.user_len) {
			p->present = 1;
			if (team != NULL) {
				memcpy(team, buf + sizeof(p->s), p->s.team_len);
				team[p->s.team_len] = '\0';
				memcpy(user, buf + sizeof(p->s) + p->s.team_len, p->s.user_len);
				user[p->s.user_len] = '\0';
			}
			/* a due budget reset: the spend counted from here starts at 0 */
			if (p->s.budget_reset_at != 0 && p->s.budget_reset_at <= c->now)
				p->s.spend = 0;
			return KW_OK;
		}
	}
	if (rc != KW_OK && rc != KW_ENOTFOUND)
		return rc;
	if ((rc = load_record(c, db, id, p)) != KW_OK)
		return rc;
	if (team != NULL) {
		snprintf(team, KW_ID_MAX + 1, "%s", kw_json_str(p->rec, "team_id") ?
		    kw_json_str(p->rec, "team_id") : "");
		snprintf(user, KW_ID_MAX + 1, "%s", kw_json_str(p->rec, "user_id") ?
		    kw_json_str(p->rec, "user_id") : "");
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

/* Sets the verdict's code and message; returns 1 so callers can `return refuse(...)`. */
static int
refuse(struct checking *c, enum kw_verdict_code code, const char *limit, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
refuse(struct checking *c, enum kw_verdict_code code, const char *limit, const char *fmt, ...)
{
	va_list ap;

	c->out->code = code;
	c->out->limit = limit;
	va_start(ap, fmt);
	vsnprintf(c->out->message, sizeof(c->out->message), fmt, ap);
	va_end(ap);
	return 1;
}

/* Appends one limit to the answer's list. */
static void
report_limit(struct checking *c, const char *name, const char *model, double limit, double used,
    time_t reset)
{
	json_object *l;

	if (c->limits == NULL)
		return;		/* verdict only */
	l = json_object_new_object();
	json_object_object_add(l, "name", json_object_new_string(name));
	if (model != NULL)
		json_object_object_add(l, "model", json_object_new_string(model));
	json_object_object_add(l, "limit", json_object_new_double(limit));
	json_object_object_add(l, "used", json_object_new_double(used));
	json_object_object_add(l, "remaining", json_object_new_double(limit > used ? limit - used : 0));
	kw_json_set_time(l, "reset_at", reset);
	json_object_array_add(c->limits, l);
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

/* A budget: refused when spend plus what requests in flight reserved reaches it. */
static int
over_budget(struct checking *c, const struct summary *s, const struct in_flight *f,
    const char *name)
{
	if (isnan(s->max_budget))
		return 0;
	report_limit(c, name, NULL, s->max_budget, s->spend + f->reserved,
	    (time_t)s->budget_reset_at);
	if (s->spend + f->reserved < s->max_budget)
		return 0;
	/* a budget comes back at its reset, if it has one */
	c->out->retry_after = s->budget_reset_at > c->now ? (int)(s->budget_reset_at - c->now) : 0;
	return refuse(c, KW_V_BUDGET_EXCEEDED, name, "%s reached: spend %g of %g", name,
	    s->spend + f->reserved, s->max_budget);
}

/* A request-rate or token-rate window; refusal sets retry_after to the window's end. */
static enum kw_err
over_rate(struct checking *c, const char *counter, double limit, double adding, const char *name,
    const char *model, struct kw_rate *rate, int *refused)
{
	time_t reset = (time_t)(c->window + WINDOW_SECS);
	double used;
	enum kw_err rc;

	if (isnan(limit))
		return KW_OK;
	if ((rc = rate_used(c->st, c->txn, counter, c->window, !c->in->dry_run, &used)) != KW_OK)
		return rc;
	report_limit(c, name, model, limit, used, reset);
	if (rate != NULL && (rate->limit < 0 || limit - used < (double)rate->remaining)) {
		rate->limit = (int64_t)limit;
		rate->remaining = used < limit ? (int64_t)(limit - used) : 0;
		rate->reset = reset;
	}
	if (!*refused && (used >= limit || used + adding > limit)) {
		c->out->retry_after = (int)(reset - c->now);
		*refused = refuse(c, KW_V_RATE_LIMITED, name, "%s reached: %g of %g in this minute",
		    name, used, limit);
	}
	return KW_OK;
}

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
	c->out->retry_after = f->first_until > c->now ? (int)(f->first_until - c->now) : 1;
	return refuse(c, KW_V_RATE_LIMITED, name, "%s reached: %lld requests in flight", name,
	    (long long)f->count);
}

static void
counter_name(char *buf, size_t n, const char *kind, const char *scope, const char *model)
{
	snprintf(buf, n, "%s|%s%s%s", kind, scope, model ? "|" : "", model ? model : "");
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
	if (in->model != NULL && in->model[0] != '\0' &&
	    ((c->key.s.flags & S_MODELS) || (c->team.s.flags & S_MODELS))) {
		json_object *team = team_record(c);
		json_object *team_models = team ? json_object_object_get(team, "models") : NULL;

		if (!kw_limits_models_allow(json_object_object_get(key_record(c), "models"),
		    team_models, in->model))
			return refuse(c, KW_V_MODEL_NOT_ALLOWED, NULL,
			    "this key may not use model %s", printable(in->model));
		if (!kw_limits_models_allow(team_models, NULL, in->model))
			return refuse(c, KW_V_MODEL_NOT_ALLOWED, NULL,
			    "this key's team may not use model %s", printable(in->model));
	}
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

/*
 * A Venice key's consumption limits: usd then diem spent in the period
 * against consumptionLimit; 402 with Venice's codes when spent.  A refusal
 * is remembered for the breaches log.
 */
static enum kw_err
check_consumption(struct checking *c, int *refused)
{
	static const struct {
		const char *currency;
		enum kw_verdict_code code;
	} currencies[] = { { "usd", KW_V_USD_LIMIT }, { "diem", KW_V_DIEM_LIMIT } };
	json_object *key = key_record(c), *venice = json_object_object_get(key, "venice");
	json_object *limits = json_object_object_get(venice, "consumptionLimit");
	time_t start, end;
	double spent, cap;
	enum kw_err rc;

	venice_period(venice, c->now, &start, &end);
	for (size_t i = 0; i < sizeof(currencies) / sizeof(currencies[0]); i++) {
		cap = kw_json_num(limits, currencies[i].currency, NAN);
		if (isnan(cap))
			continue;
		if ((rc = venice_spent(c->st, c->txn, currencies[i].currency, c->out->token, start,
		    &spent)) != KW_OK)
			return rc;
		report_limit(c, currencies[i].currency, NULL, cap, spent, end);
		if (spent < cap)
			continue;
		c->out->retry_after = end > c->now ? (int)(end - c->now) : 0;
		*refused = refuse(c, currencies[i].code, currencies[i].currency,
		    "the key's %s consumption limit of %g is spent for this period",
		    currencies[i].currency, cap);
		return c->in->dry_run ? KW_OK : venice_breach(c->st, c->txn, key, c->in->model,
		    currencies[i].currency, c->now);
	}
	return KW_OK;
}

/* Budgets: the key's, its team's, its user's, and the model's. */
static enum kw_err
check_budgets(struct checking *c, int *refused)
{
	const char *model = c->in->model, *period;
	const struct summary *k = &c->key.s;
	json_object *mmb, *entry;
	char name[KW_TOKEN_LEN + 300];
	struct counter spent;
	double cap;
	enum kw_err rc;

	if (!isnan(k->soft_budget)) {
		report_limit(c, "soft_budget", NULL, k->soft_budget, k->spend,
		    (time_t)k->budget_reset_at);
		if (c->out->answer != NULL)
			json_object_object_add(c->out->answer, "soft_budget_exceeded",
			    json_object_new_boolean(k->spend >= k->soft_budget));
	}
	if (over_budget(c, k, &c->key_flight, "max_budget") ||
	    (c->team.present && over_budget(c, &c->team.s, &c->team_flight, "team_max_budget")) ||
	    (c->user.present && over_budget(c, &c->user.s, &c->user_flight, "user_max_budget"))) {
		*refused = 1;
		return KW_OK;
	}
	if ((k->flags & S_VENICE) && (rc = check_consumption(c, refused)) != KW_OK)
		return rc;
	if (*refused || model == NULL || !(k->flags & S_MODEL_LIMITS))
		return KW_OK;
	mmb = json_object_object_get(key_record(c), "model_max_budget");
	if (mmb == NULL || !json_object_object_get_ex(mmb, model, &entry) || entry == NULL ||
	    isnan(cap = kw_json_num(entry, "budget_limit", NAN)))
		return KW_OK;
	period = kw_json_str(entry, "time_period");
	counter_name(name, sizeof(name), "mspend", c->out->token, model);
	if ((rc = model_spend(c->st, c->txn, name, period, c->now, 0, &spent)) != KW_OK)
		return rc;
	report_limit(c, "model_max_budget", model, cap, spent.value, (time_t)spent.window);
	if (spent.value >= cap)
		*refused = refuse(c, KW_V_BUDGET_EXCEEDED, "model_max_budget",
		    "model_max_budget for %s reached: spend %g of %g", model, spent.value, cap);
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

/* Rates and parallel requests: the key's, per model, and its team's. */
static enum kw_err
check_rates(struct checking *c, int *refused)
{
	const char *token = c->out->token, *model = c->in->model, *team_id = c->out->team_id;
	double tokens = (double)c->in->expected_tokens;
	char name[KW_ID_MAX + 300];
	struct kw_verdict *v = c->out;
	enum kw_err rc;

	counter_name(name, sizeof(name), "rpm", token, NULL);
	if ((rc = over_rate(c, name, c->key.s.rpm_limit, 1, "rpm_limit", NULL, &v->requests,
	    refused)) != KW_OK)
		return rc;
	counter_name(name, sizeof(name), "tpm", token, NULL);
	if ((rc = over_rate(c, name, c->key.s.tpm_limit, tokens, "tpm_limit", NULL, &v->tokens,
	    refused)) != KW_OK)
		return rc;
	counter_name(name, sizeof(name), "rpm", token, model);
	if ((rc = over_rate(c, name, key_model_limit(c, "model_rpm_limit"), 1, "model_rpm_limit",
	    model, &v->requests, refused)) != KW_OK)
		return rc;
	counter_name(name, sizeof(name), "tpm", token, model);
	if ((rc = over_rate(c, name, key_model_limit(c, "model_tpm_limit"), tokens,
	    "model_tpm_limit", model, &v->tokens, refused)) != KW_OK)
		return rc;
	if (c->team.present) {
		counter_name(name, sizeof(name), "rpm|t", team_id, NULL);
		if ((rc = over_rate(c, name, c->team.s.rpm_limit, 1, "team_rpm_limit", NULL,
		    &v->requests, refused)) != KW_OK)
			return rc;
		counter_name(name, sizeof(name), "tpm|t", team_id, NULL);
		if ((rc = over_rate(c, name, c->team.s.tpm_limit, tokens, "team_tpm_limit", NULL,
		    &v->tokens, refused)) != KW_OK)
			return rc;
	}
	if (!*refused && over_parallel(c, &c->key.s, &c->key_flight, "max_parallel_requests"))
		*refused = 1;
	if (!*refused && c->team.present &&
	    over_parallel(c, &c->team.s, &c->team_flight, "team_max_parallel_requests"))
		*refused = 1;
	return KW_OK;
}

/* Counts an admitted request in its rate windows and takes its lease when one is needed. */
static enum kw_err
admit(struct checking *c)
{
	const char *token = c->out->token, *model = c->in->model, *team_id = c->out->team_id;
	struct owners o = {
		token, team_id[0] ? team_id : NULL, c->out->user_id[0] ? c->out->user_id : NULL,
	};
	struct lease l = { c->in->expected_cost, c->now + kw_config.lease_secs };
	char name[KW_ID_MAX + 300];
	enum kw_err rc = KW_OK;

	if (!isnan(c->key.s.rpm_limit)) {
		counter_name(name, sizeof(name), "rpm", token, NULL);
		rc = rate_add(c->st, c->txn, name, c->window, 1);
	}
	if (rc == KW_OK && !isnan(key_model_limit(c, "model_rpm_limit"))) {
		counter_name(name, sizeof(name), "rpm", token, model);
		rc = rate_add(c->st, c->txn, name, c->window, 1);
	}
	if (rc == KW_OK && c->team.present && !isnan(c->team.s.rpm_limit)) {
		counter_name(name, sizeof(name), "rpm|t", team_id, NULL);
		rc = rate_add(c->st, c->txn, name, c->window, 1);
	}
	if (rc != KW_OK)
		return rc;
	if (c->in->request_id == NULL && c->in->expected_cost <= 0 &&
	    isnan(c->key.s.max_parallel) && (!c->team.present || isnan(c->team.s.max_parallel)))
		return KW_OK;	/* nothing to hold until usage: no lease */
	if (c->in->request_id != NULL)
		snprintf(c->out->request_id, sizeof(c->out->request_id), "%s", c->in->request_id);
	else
		kw_uuid4(c->out->request_id);
	return lease_write(c->st, c->txn, &o, c->out->request_id, &l, 1);
}

/* Builds the answer's description of the key (the answer path reads the record). */
static void
describe(struct checking *c)
{
	static const char *const copied[] = {
		"token", "key_alias", "user_id", "team_id", "organization_id", "models", "expires",
		"max_budget", "spend", "budget_reset_at",
	};
	json_object *a = c->out->answer, *key = key_record(c);
	double max = c->key.s.max_budget;
	double left = max - c->key.s.spend - c->key_flight.reserved;

	for (size_t i = 0; i < sizeof(copied) / sizeof(copied[0]); i++)
		json_object_object_add(a, copied[i],
		    json_object_get(json_object_object_get(key, copied[i])));
	json_object_object_add(a, "reserved", json_object_new_double(c->key_flight.reserved));
	json_object_object_add(a, "remaining_budget", isnan(max) ? NULL :
	    json_object_new_double(left > 0 ? left : 0));
	if (!json_object_object_get_ex(a, "soft_budget_exceeded", NULL))
		json_object_object_add(a, "soft_budget_exceeded", json_object_new_boolean(0));
}

/* True when a party has a limit that counts requests in flight. */
static int
leased(const struct party *p)
{
	return p->present && (!isnan(p->s.max_budget) || !isnan(p->s.max_parallel));
}

/* Finds the presented key: by its summary, else by its record (a regenerated key's old secret too). */
static enum kw_err
find_key(struct checking *c)
{
	struct kw_verdict *v = c->out;
	enum kw_err rc;

	kw_crypto_sha256_hex(c->in->key, strlen(c->in->key), v->token);
	rc = load_party(c, KW_DB_KEYS, v->token, &c->key, v->team_id, v->user_id);
	if (rc != KW_ENOTFOUND)
		return rc;
	if ((rc = kw_keys_credential(c->st, c->txn, c->in->key, c->now, &c->key.rec)) != KW_OK)
		return rc;
	kw_budget_settle(c->key.rec, c->now);
	summarize(c->key.rec, &c->key.s);
	c->key.present = 1;
	snprintf(v->token, sizeof(v->token), "%s", kw_json_str(c->key.rec, "token"));
	snprintf(v->team_id, sizeof(v->team_id), "%s", kw_json_str(c->key.rec, "team_id") ?
	    kw_json_str(c->key.rec, "team_id") : "");
	snprintf(v->user_id, sizeof(v->user_id), "%s", kw_json_str(c->key.rec, "user_id") ?
	    kw_json_str(c->key.rec, "user_id") : "");
	return KW_OK;
}

static enum kw_err
check_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct checking *c = baton;
	struct kw_verdict *v = c->out;
	int refused = 0;
	enum kw_err rc;

	checking_clear(c);
	c->rc = KW_OK;
	json_object_put(v->answer);
	memset(v, 0, sizeof(*v));
	v->requests.limit = v->tokens.limit = -1;
	c->st = st;
	c->txn = txn;
	if (!c->in->verdict_only) {
		v->answer = json_object_new_object();
		c->limits = json_object_new_array();
	}

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
	    (rc = load_party(c, KW_DB_TEAMS, v->team_id, &c->team, NULL, NULL)) != KW_OK &&
	    rc != KW_ENOTFOUND)
		return rc;
	if (v->user_id[0] != '\0' &&
	    (rc = load_party(c, KW_DB_USERS, v->user_id, &c->user, NULL, NULL)) != KW_OK &&
	    rc != KW_ENOTFOUND)
		return rc;
	/* requests in flight matter only to a budget or a parallel limit */
	if ((leased(&c->key) &&
	    (rc = leases_of(st, txn, 'k', v->token, c->now, &c->key_flight)) != KW_OK) ||
	    (leased(&c->team) &&
	    (rc = leases_of(st, txn, 't', v->team_id, c->now, &c->team_flight)) != KW_OK) ||
	    (leased(&c->user) &&
	    (rc = leases_of(st, txn, 'u', v->user_id, c->now, &c->user_flight)) != KW_OK))
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
	if (c->rc != KW_OK)
		return c->rc;
	if (!refused) {
		v->code = KW_V_VALID;
		snprintf(v->message, sizeof(v->message), "valid");
		if (!c->in->dry_run && (rc = admit(c)) != KW_OK)
			return rc;
	}
	if (v->answer != NULL) {
		describe(c);
		json_object_object_add(v->answer, "limits", c->limits);
		c->limits = NULL;
	}
	return c->rc;
}

/*
 * Checks a presented key against every limit it carries, as of now, and
 * unless in->dry_run counts an admitted request and takes its lease.
 * out->answer (owned; kw_verdict_clear) is the /key/verify answer; an
 * unknown key's answer says only that.  Runs its own transaction, not
 * flushed at commit: a crash may forget a rate window or a lease, never
 * spend.
 */
enum kw_err
kw_limits_check(struct kw_store *st, time_t now, const struct kw_check *in,
    struct kw_verdict *out)
{
	struct checking c = { .in = in, .out = out, .now = now, .window = now - now % WINDOW_SECS };
	json_object *details;
	enum kw_err rc;

	memset(out, 0, sizeof(*out));
	rc = kw_store_txn_flags(st, KW_TXN_NOSYNC, check_body, &c);
	checking_clear(&c);
	if (rc != KW_OK) {
		kw_verdict_clear(out);
		return rc;
	}
	if (in->verdict_only)
		return KW_OK;
	/* the verdict first, then what it is about; an unknown key learns nothing more */
	details = out->answer;
	out->answer = json_object_new_object();
	json_object_object_add(out->answer, "valid", json_object_new_boolean(out->code == KW_V_VALID));
	json_object_object_add(out->answer, "code",
	    json_object_new_string(kw_verdict_code_name(out->code)));
	json_object_object_add(out->answer, "message", json_object_new_string(out->message));
	if (out->code != KW_V_NOT_FOUND) {
		json_object_object_add(out->answer, "limit",
		    out->limit ? json_object_new_string(out->limit) : NULL);
		json_object_object_add(out->answer, "retry_after", out->code == KW_V_RATE_LIMITED ||
		    out->retry_after > 0 ? json_object_new_int(out->retry_after) : NULL);
		json_object_object_add(out->answer, "request_id",
		    out->request_id[0] ? json_object_new_string(out->request_id) : NULL);
		json_object_object_foreach(details, field, value)
			json_object_object_add(out->answer, field, json_object_get(value));
	}
	json_object_put(details);
	return KW_OK;
}

void
kw_verdict_clear(struct kw_verdict *v)
{
	json_object_put(v->answer);
	v->answer = NULL;
}

/* --- usage ---------------------------------------------------------- */

struct recording {
	const struct kw_usage *in;
	time_t now;
	struct kw_error *err;
	json_object *answer;	/* owned */
};

/* Adds cost to the spend of the record id in db, its budget settled first; *spend_out the result. */
static enum kw_err
add_spend(struct kw_store *st, DB_TXN *txn, enum kw_db db, const char *id, double cost,
    time_t now, json_object **spend_out)
{
	json_object *rec;
	enum kw_err rc;

	*spend_out = NULL;
	if (id == NULL)
		return KW_OK;
	if ((rc = kw_rec_get(st, txn, db, id, KW_RMW, &rec)) == KW_ENOTFOUND)
		return KW_OK;
	if (rc != KW_OK)
		return rc;
	kw_budget_settle(rec, now);
	json_object_object_add(rec, "spend",
	    json_object_new_double(kw_json_num(rec, "spend", 0) + cost));
	rc = kw_rec_put(st, txn, db, id, rec, 0);
	*spend_out = json_object_get(json_object_object_get(rec, "spend"));
	json_object_put(rec);
	return rc;
}

/* The receipt rows of a counted report: by key and request_id, and by time for the purge. */
static enum kw_err
receipt(struct kw_store *st, DB_TXN *txn, const char *token, const char *request_id,
    time_t now, int *seen)
{
	DB *db = kw_store_db(st, KW_DB_RECEIPTS);
	char name[KW_TOKEN_LEN + 160], by_time[KW_TOKEN_LEN + 200];
	int64_t at = now;
	DBT k = { .data = name }, v = { .data = &at, .size = sizeof(at) };
	DBT kt = { .data = by_time }, empty = { .data = "", .size = 0 };
	enum kw_err rc;

	receipt_name(name, sizeof(name), token, request_id);
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
	json_object *key, *spend = NULL, *team_spend = NULL, *user_spend = NULL, *mmb, *entry;
	const char *team_id, *user_id;
	int64_t window = r->now - r->now % WINDOW_SECS;
	int seen = 0;
	double tokens = (double)in->tokens;
	enum kw_err rc;

	json_object_put(r->answer);
	r->answer = NULL;
	kw_keys_token_of(in->key, token);
	rc = kw_rec_get(st, txn, KW_DB_KEYS, token, KW_RMW, &key);
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
	if (in->request_id != NULL && (rc = receipt(st, txn, token, in->request_id, r->now,
	    &seen)) != KW_OK)
		goto out;
	if (!seen) {
		if ((rc = add_spend(st, txn, KW_DB_KEYS, token, in->cost, r->now, &spend)) != KW_OK ||
		    (rc = add_spend(st, txn, KW_DB_TEAMS, team_id, in->cost, r->now,
		    &team_spend)) != KW_OK ||
		    (rc = add_spend(st, txn, KW_DB_USERS, user_id, in->cost, r->now,
		    &user_spend)) != KW_OK)
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
		if (tokens > 0 && team_id != NULL) {
			json_object *team;

			if ((rc = kw_rec_get(st, txn, KW_DB_TEAMS, team_id, 0, &team)) == KW_OK) {
				if (!isnan(limit_of(team, "tpm_limit"))) {
					counter_name(name, sizeof(name), "tpm|t", team_id, NULL);
					rc = rate_add(st, txn, name, window, tokens);
				}
				json_object_put(team);
			} else if (rc == KW_ENOTFOUND) {
				rc = KW_OK;
			}
			if (rc != KW_OK)
				goto out;
		}
		if (in->request_id != NULL &&
		    (rc = lease_settle(st, txn, token, in->request_id)) != KW_OK)
			goto out;
		if (json_object_object_get(key, "venice") != NULL &&
		    ((rc = venice_spend(st, txn, "usd", token, json_object_object_get(key, "venice"),
		    r->now, in->cost)) != KW_OK ||
		    (rc = venice_spend(st, txn, "diem", token, json_object_object_get(key, "venice"),
		    r->now, in->diem)) != KW_OK))
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
out:
	json_object_put(spend);
	json_object_put(team_spend);
	json_object_put(user_spend);
	json_object_put(key);
	return rc;
}

/*
 * Records what a request used: cost into the spend of the key, its team
 * and its user and into the key's model spend; tokens into the tpm
 * windows; the request's lease returned.  With a request_id, a report
 * sent twice counts once.  *answer (owned) is the /key/usage answer.
 * Durable: flushed before KW_OK.
 */
enum kw_err
kw_limits_record(struct kw_store *st, time_t now, const struct kw_usage *in,
    json_object **answer, struct kw_error *err)
{
	struct recording r = { .in = in, .now = now, .err = err };
	enum kw_err rc = kw_store_txn(st, record_body, &r);

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
				struct owners o = {
					kw_json_str(index, "token"), kw_json_str(index, "team_id"),
					kw_json_str(index, "user_id"),
				};
				struct lease none = { 0 };

				rc = request_id && o.token ?
				    lease_write(st, txn, &o, request_id, &none, 0) : KW_OK;
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
