/* keys.c: the one key model: key material, durations, budget reset times, and storing a key record. */
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

/* Writes t as RFC 3339 UTC, "2026-11-22T07:36:43Z". */
void
kw_time_format(time_t t, char out[KW_TIME_LEN])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, KW_TIME_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/*
 * Parses a duration "Ns", "Nm", "Nh", "Nd", "Nw" or "Nmo" and stores in
 * *until the time it ends when counted from `from` (months on the calendar).
 * KW_EINVAL for anything else, including overflow.
 */
enum kw_err
kw_keys_parse_duration(const char *s, time_t from, time_t *until)
{
	const char *p = s;
	long long n = 0, unit;

	if (s == NULL || !isdigit((unsigned char)*p))
		return KW_EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		n = n * 10 + (*p - '0');
		if (n > 1000000000)
			return KW_EINVAL;
	}
	if (strcmp(p, "mo") == 0) {
		struct tm tm;

		gmtime_r(&from, &tm);
		tm.tm_mon += (int)n;
		*until = timegm(&tm);
		return *until == (time_t)-1 ? KW_EINVAL : KW_OK;
	}
	if (strcmp(p, "s") == 0)
		unit = 1;
	else if (strcmp(p, "m") == 0)
		unit = 60;
	else if (strcmp(p, "h") == 0)
		unit = 3600;
	else if (strcmp(p, "d") == 0)
		unit = 86400;
	else if (strcmp(p, "w") == 0)
		unit = 7 * 86400;
	else
		return KW_EINVAL;
	*until = from + (time_t)(n * unit);
	return KW_OK;
}

/*
 * The next budget reset for a budget_duration, on LiteLLM's standardized
 * UTC boundaries: 1d at the next midnight, 7d (or 1w) next Monday, 30d or
 * 1mo the 1st of next month; any other duration now + N.  0 when the
 * duration does not parse.
 */
time_t
kw_keys_budget_reset(const char *duration, time_t now)
{
	struct tm tm;
	time_t until;

	if (kw_keys_parse_duration(duration, now, &until) != KW_OK)
		return 0;
	gmtime_r(&now, &tm);
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	if (strcmp(duration, "1d") == 0) {
		tm.tm_mday += 1;
	} else if (strcmp(duration, "7d") == 0 || strcmp(duration, "1w") == 0) {
		tm.tm_mday += 7 - (tm.tm_wday + 6) % 7;	/* days to next Monday, 1..7 */
	} else if (strcmp(duration, "30d") == 0 || strcmp(duration, "1mo") == 0) {
		tm.tm_mday = 1;
		tm.tm_mon += 1;
	} else {
		return until;
	}
	return timegm(&tm);
}

struct insert {
	const char *token;
	const char *alias;
	const char *json;
	struct kw_error *err;
};

static enum kw_err
insert_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct insert *in = baton;
	DB *keys = kw_store_db(st, KW_DB_KEYS), *aliases = kw_store_db(st, KW_DB_ALIASES);
	DBT k = { .data = (void *)in->token, .size = (u_int32_t)strlen(in->token) };
	DBT v = { .data = (void *)in->json, .size = (u_int32_t)strlen(in->json) };
	enum kw_err rc = kw_store_err(keys->put(keys, txn, &k, &v, DB_NOOVERWRITE));

	if (rc == KW_ECONFLICT) {
		kw_error_set(in->err, KW_ECONFLICT, "key", "this key already exists");
		return rc;
	}
	if (rc != KW_OK || in->alias == NULL)
		return rc;
	/* the alias row is written in the same transaction: two racing generates, one wins */
	DBT a = { .data = (void *)in->alias, .size = (u_int32_t)strlen(in->alias) };
	rc = kw_store_err(aliases->put(aliases, txn, &a, &k, DB_NOOVERWRITE));
	if (rc == KW_ECONFLICT)
		kw_error_set(in->err, KW_ECONFLICT, "key_alias",
		    "key_alias already exists: each key needs its own alias");
	return rc;
}

/*
 * Stores a new key record under token, and its alias when not NULL, in
 * one durable transaction.  KW_ECONFLICT (err naming "key" or "key_alias")
 * when either exists.  The record is borrowed.
 */
enum kw_err
kw_keys_insert(struct kw_store *st, const char *token, const char *alias,
    json_object *record, struct kw_error *err)
{
	struct insert in = {
		.token = token, .alias = alias, .err = err,
		.json = json_object_to_json_string_ext(record, JSON_C_TO_STRING_PLAIN),
	};

	return kw_store_txn(st, insert_body, &in);
}
