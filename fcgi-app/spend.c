/* spend.c: the spend history: settled usage summed per UTC hour, key, model and end user. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"

/*
 * A row's key is its hour, 8 bytes big-endian so rows sort by time and a
 * range of hours is one cursor walk, then the SHA-256 of the key's token,
 * the model and the end user (NUL-separated), so one row per hour holds
 * each combination whatever characters the names hold.  The names
 * themselves are in the row's JSON value.
 */
#define ROW_KEY_LEN (8 + KW_SHA256_LEN)

static void
hour_bytes(time_t hour, unsigned char out[8])
{
	uint64_t h = (uint64_t)hour;

	for (int i = 7; i >= 0; i--, h >>= 8)
		out[i] = (unsigned char)(h & 0xff);
}

static void
row_key(time_t hour, const char *token, const char *model, const char *end_user,
    unsigned char out[ROW_KEY_LEN])
{
	size_t lt = strlen(token), lm = model ? strlen(model) : 0;
	size_t le = end_user ? strlen(end_user) : 0, n = lt + lm + le + 4;
	char *buf = malloc(n), *p = buf;

	hour_bytes(hour, out);
	if (buf == NULL) {	/* no memory for the names: a row per key and hour still adds up */
		kw_crypto_sha256(token, lt, out + 8);
		return;
	}
	/* a marker for "none" keeps a missing model apart from an empty one */
	memcpy(p, token, lt), p += lt, *p++ = '\0';
	*p++ = model ? 'm' : '-';
	memcpy(p, model ? model : "", lm), p += lm, *p++ = '\0';
	memcpy(p, end_user ? end_user : "", le), p += le;
	*p++ = end_user ? 'e' : '-';
	kw_crypto_sha256(buf, (size_t)(p - buf), out + 8);
	free(buf);
}

/*
 * The row is read and written as text: a report at gateway rates should
 * not build and print a tree for nine members.  Its names (hour, key,
 * model, end user) are those its key was made of, so only its sums are
 * read back (kw_rec_field_spans); the members are written in the order a
 * json-c tree of them printed.
 */
enum { ROW_SPEND, ROW_TOKENS, ROW_REQUESTS, ROW_SUMS };
static const char *const row_sums[ROW_SUMS] = { "spend", "total_tokens", "api_requests" };

/* A sum's text in a row as json-c reads it; 0 for none, null or no number. */
static double
span_number(struct kw_span s)
{
	char buf[64];

	if (s.text == NULL || s.len == 0 || s.len >= sizeof(buf))
		return 0;
	memcpy(buf, s.text, s.len);
	buf[s.len] = '\0';
	return strtod(buf, NULL);
}

/* ,"name": (the first member without its comma; names are ours, nothing to escape) */
static void
put_name(struct printbuf *pb, const char *name)
{
	if (pb->bpos > 1)
		printbuf_memappend(pb, ",", 1);
	printbuf_memappend(pb, "\"", 1);
	printbuf_memappend(pb, name, (int)strlen(name));
	printbuf_memappend(pb, "\":", 2);
}

/* "name":"v" as json-c prints a string (str, reused), or null */
static void
put_string(struct printbuf *pb, json_object *str, const char *name, const char *v)
{
	put_name(pb, name);
	kw_json_append_string(pb, str, v, JSON_C_TO_STRING_PLAIN);
}

/*
 * Adds in's cost, tokens and one request to the row of now's UTC hour for
 * the key token (record key, borrowed), its model and end user, creating
 * it; the row takes the key's user and team as they are at settlement.
 * Runs in txn, the caller's (kw_limits_record's, so the history commits
 * with the spend it records).
 */
enum kw_err
kw_spend_record(struct kw_store *st, DB_TXN *txn, time_t now, const char *token,
    json_object *key, const struct kw_usage *in)
{
	DB *db = kw_store_db(st, KW_DB_SPEND_HOURS);
	unsigned char k[ROW_KEY_LEN];
	time_t hour = now - now % KW_SPEND_HOUR;
	DBT dk = { .data = k, .size = sizeof(k) }, dv = { .flags = DB_DBT_MALLOC };
	struct kw_span was[ROW_SUMS] = { { NULL, 0 } };
	struct printbuf *pb = NULL;
	json_object *str = NULL, *num = NULL;
	char *row = NULL;
	enum kw_err rc;

	row_key(hour, token, in->model, in->end_user, k);
	rc = kw_store_err(db->get(db, txn, &dk, &dv, DB_RMW));
	if (rc == KW_OK) {
		row = dv.data;
		if (!kw_rec_field_spans(row, dv.size, row_sums, ROW_SUMS, was)) {
			kw_log_error("store: a spend history row does not read as one");
			rc = KW_EINTERNAL;
			goto out;
		}
	} else if (rc != KW_ENOTFOUND) {
		return rc;
	}
	if ((pb = printbuf_new()) == NULL || (str = json_object_new_string("")) == NULL ||
	    (num = json_object_new_double(0)) == NULL) {
		rc = KW_ENOMEM;
		goto out;
	}
	sprintbuf(pb, "{\"hour\":%lld", (long long)hour);
	put_string(pb, str, "api_key", token);
	put_string(pb, str, "model", in->model);
	put_string(pb, str, "end_user", in->end_user);
	put_string(pb, str, "user", kw_json_str(key, "user_id"));
	put_string(pb, str, "team_id", kw_json_str(key, "team_id"));
	put_name(pb, "spend");
	json_object_set_double(num, span_number(was[ROW_SPEND]) + in->cost);
	json_object_double_to_json_string(num, pb, 0, JSON_C_TO_STRING_PLAIN);
	sprintbuf(pb, ",\"total_tokens\":%lld,\"api_requests\":%lld}",
	    (long long)span_number(was[ROW_TOKENS]) + (long long)(in->tokens > 0 ? in->tokens : 0),
	    (long long)span_number(was[ROW_REQUESTS]) + 1);
	dv = (DBT){ .data = pb->buf, .size = (u_int32_t)pb->bpos };
	rc = kw_store_err(db->put(db, txn, &dk, &dv, 0));
out:
	free(row);
	json_object_put(str);
	json_object_put(num);
	if (pb != NULL)
		printbuf_free(pb);
	return rc;
}

/* Walks the rows of the hours from .. until (exclusive), oldest first; see kw.h. */
enum kw_err
kw_spend_rows(struct kw_store *st, DB_TXN *txn, time_t from, time_t until, kw_spend_visit visit,
    void *baton)
{
	DB *db = kw_store_db(st, KW_DB_SPEND_HOURS);
	unsigned char start[8], stop[8];
	DBT k = { .flags = DB_DBT_REALLOC }, v = { .flags = DB_DBT_REALLOC };
	DBC *cur;
	u_int32_t how = DB_SET_RANGE;
	enum kw_err rc;

	hour_bytes(from - from % KW_SPEND_HOUR, start);
	hour_bytes(until, stop);
	/* read committed: a long walk keeps no read locks behind it to hold up usage being settled */
	if ((rc = kw_store_err(db->cursor(db, txn, &cur, DB_READ_COMMITTED))) != KW_OK)
		return rc;
	if ((k.data = malloc(sizeof(start))) == NULL) {
		cur->close(cur);
		return KW_ENOMEM;
	}
	memcpy(k.data, start, sizeof(start));
	k.size = sizeof(start);
	while ((rc = kw_store_err(cur->get(cur, &k, &v, how))) == KW_OK) {
		json_object *row;
		char hex[2 * ROW_KEY_LEN + 1];
		int stop_here;

		how = DB_NEXT;
		if (k.size != ROW_KEY_LEN || memcmp(k.data, stop, sizeof(stop)) >= 0)
			break;
		if ((rc = kw_rec_parse(v.data, v.size, &row)) != KW_OK)
			break;
		kw_crypto_hex(k.data, k.size, hex);
		json_object_object_add(row, "request_id", json_object_new_string(hex));
		stop_here = visit(row, baton);
		json_object_put(row);
		if (stop_here)
			break;
	}
	cur->close(cur);
	free(k.data);
	free(v.data);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}
