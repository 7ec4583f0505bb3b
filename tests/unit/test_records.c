/* test_records.c: JSON records and the key indexes (alias, owner, creation order, retired secrets) in a fresh environment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "tap.h"

static char dir[] = "/tmp/kw-test-records-XXXXXX";

/* Makes a key record for secret with the given alias, user, team and creation time. */
static json_object *
key_record(const char *secret, const char *alias, const char *user, const char *team,
    time_t created)
{
	char token[KW_TOKEN_LEN + 1];
	json_object *rec = json_object_new_object();

	kw_crypto_sha256_hex(secret, strlen(secret), token);
	json_object_object_add(rec, "token", json_object_new_string(token));
	json_object_object_add(rec, "key_alias", alias ? json_object_new_string(alias) : NULL);
	json_object_object_add(rec, "user_id", user ? json_object_new_string(user) : NULL);
	json_object_object_add(rec, "team_id", team ? json_object_new_string(team) : NULL);
	kw_json_set_time(rec, "created_at", created);
	return rec;
}

/* One write: put rec replacing old (may be NULL), or delete del. */
struct write {
	json_object *old, *rec, *del;
	struct kw_error err;
};

static enum kw_err
write_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct write *w = baton;

	if (w->del != NULL)
		return kw_keys_del(st, txn, w->del);
	return kw_keys_put(st, txn, w->old, w->rec, &w->err);
}

static enum kw_err
put_key(struct kw_store *st, json_object *old, json_object *rec, struct kw_error *err)
{
	struct write w = { .old = old, .rec = rec };
	enum kw_err rc = kw_store_txn(st, write_body, &w);

	if (err != NULL)
		*err = w.err;
	return rc;
}

/* Collects visited tokens as a comma-separated list of their first 4 characters. */
struct seen {
	char list[256];
	int stop_after;
	int n;
};

static int
see(const char *token, void *baton)
{
	struct seen *s = baton;
	size_t len = strlen(s->list);

	snprintf(s->list + len, sizeof(s->list) - len, "%s%.4s", len ? "," : "", token);
	return ++s->n == s->stop_after;
}

struct query {
	char kind;
	const char *id;
	int newest_first;
	size_t offset, limit, total;
	struct seen seen;
	const char *secret;
	json_object *found;
};

static enum kw_err
owned_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct query *q = baton;

	memset(&q->seen, 0, sizeof(q->seen));
	return kw_keys_owned_by(st, txn, q->kind, q->id, see, &q->seen);
}

static enum kw_err
page_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct query *q = baton;

	memset(&q->seen, 0, sizeof(q->seen));
	return kw_keys_page_by_created(st, txn, q->newest_first, q->offset, q->limit, see,
	    &q->seen, &q->total);
}

static enum kw_err
credential_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct query *q = baton;

	json_object_put(q->found);
	q->found = NULL;
	return kw_keys_credential(st, txn, q->secret, q->offset, &q->found);
}

struct retire {
	const char *old_token, *new_token;
	time_t until;
};

static enum kw_err
retire_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct retire *r = baton;

	return kw_keys_retire(st, txn, r->old_token, r->new_token, r->until);
}

static const char *
token4(json_object *rec)
{
	static char buf[5];

	snprintf(buf, sizeof(buf), "%.4s", kw_json_str(rec, "token"));
	return buf;
}

static void
test_indexes(struct kw_store *st)
{
	json_object *a = key_record("sk-aaaa", "alpha", "u1", "t1", 1000);
	json_object *b = key_record("sk-bbbb", "beta", "u1", NULL, 2000);
	json_object *c = key_record("sk-cccc", NULL, "u2", "t1", 3000);
	json_object *dup = key_record("sk-dddd", "alpha", NULL, NULL, 4000);
	struct query q = { .kind = 'u', .id = "u1" };
	struct kw_error err;
	char want[64];

	is_int(put_key(st, NULL, a, NULL), KW_OK, "a new key is stored");
	is_int(put_key(st, NULL, b, NULL), KW_OK, "a second");
	is_int(put_key(st, NULL, c, NULL), KW_OK, "a third, without alias");
	is_int(put_key(st, NULL, dup, &err), KW_ECONFLICT, "a taken alias is a conflict");
	is_str(err.field, "key_alias", "naming key_alias");
	is_int(put_key(st, NULL, a, &err), KW_ECONFLICT, "the same token twice is a conflict");
	is_str(err.field, "key", "naming key");

	kw_store_txn(st, owned_body, &q);
	snprintf(want, sizeof(want), "%s", token4(a));
	snprintf(want + strlen(want), sizeof(want) - strlen(want), ",%s", token4(b));
	/* duplicates are sorted by token: compare as a set of two */
	ok(q.seen.n == 2 && strstr(q.seen.list, token4(a)) && strstr(q.seen.list, token4(b)),
	    "user u1 owns a and b (%s)", q.seen.list);
	q.kind = 't';
	q.id = "t1";
	kw_store_txn(st, owned_body, &q);
	ok(q.seen.n == 2 && strstr(q.seen.list, token4(a)) && strstr(q.seen.list, token4(c)),
	    "team t1 owns a and c");
	q.id = "nobody";
	kw_store_txn(st, owned_body, &q);
	is_int(q.seen.n, 0, "an unknown owner owns nothing");

	q.newest_first = 1;
	q.limit = 2;
	kw_store_txn(st, page_body, &q);
	is_int(q.total, 3, "three keys in the creation index");
	snprintf(want, sizeof(want), "%s,", token4(c));
	snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s", token4(b));
	is_str(q.seen.list, want, "newest first: c, b");
	q.offset = 2;
	kw_store_txn(st, page_body, &q);
	is_str(q.seen.list, token4(a), "the second page: a");
	q.offset = 3;
	kw_store_txn(st, page_body, &q);
	is_int(q.seen.n, 0, "a page past the end is empty");
	q.newest_first = 0;
	q.offset = 0;
	q.limit = 1;
	kw_store_txn(st, page_body, &q);
	is_str(q.seen.list, token4(a), "oldest first: a");

	/* move a from u1 to u2 and rename its alias: the old rows go, the new come */
	json_object *a2 = kw_json_copy(a);
	json_object_object_add(a2, "user_id", json_object_new_string("u2"));
	json_object_object_add(a2, "key_alias", json_object_new_string("gamma"));
	is_int(put_key(st, a, a2, NULL), KW_OK, "a changes owner and alias");
	json_object *d2 = key_record("sk-dddd", "alpha", NULL, NULL, 4000);
	is_int(put_key(st, NULL, d2, NULL), KW_OK, "the freed alias can be taken again");
	q.kind = 'u';
	q.id = "u1";
	kw_store_txn(st, owned_body, &q);
	is_str(q.seen.list, token4(b), "u1 now owns b only");
	q.id = "u2";
	kw_store_txn(st, owned_body, &q);
	is_int(q.seen.n, 2, "u2 owns a and c");

	struct write w = { .del = a2 };
	is_int(kw_store_txn(st, write_body, &w), KW_OK, "a is deleted");
	kw_store_txn(st, owned_body, &q);
	is_str(q.seen.list, token4(c), "u2 owns c only");
	q.newest_first = 1;
	q.offset = 0;
	q.limit = 10;
	kw_store_txn(st, page_body, &q);
	is_int(q.total, 3, "three keys again: b, c, d");

	json_object_put(a);
	json_object_put(a2);
	json_object_put(b);
	json_object_put(c);
	json_object_put(dup);
	json_object_put(d2);
}

static void
test_credentials(struct kw_store *st)
{
	json_object *rec = key_record("sk-rotated-new", NULL, NULL, NULL, 5000);
	char old_token[KW_TOKEN_LEN + 1];
	struct query q = { .secret = "sk-rotated-new", .offset = 100 };
	struct retire r = { .old_token = old_token, .new_token = kw_json_str(rec, "token"),
		.until = 200 };

	put_key(st, NULL, rec, NULL);
	kw_crypto_sha256_hex("sk-rotated-old", strlen("sk-rotated-old"), old_token);
	is_int(kw_store_txn(st, credential_body, &q), KW_OK, "the key's secret is a credential");
	is_int(kw_store_txn(st, retire_body, &r), KW_OK, "the old secret is retired until 200");
	q.secret = "sk-rotated-old";
	is_int(kw_store_txn(st, credential_body, &q), KW_OK, "the old secret works at 100");
	ok(q.found != NULL && strcmp(kw_json_str(q.found, "token"), r.new_token) == 0,
	    "and opens the new record");
	q.offset = 200;
	is_int(kw_store_txn(st, credential_body, &q), KW_ENOTFOUND, "not at 200");
	q.secret = kw_json_str(rec, "token");
	q.offset = 100;
	is_int(kw_store_txn(st, credential_body, &q), KW_ENOTFOUND, "a hash is never a credential");
	json_object_put(q.found);
	json_object_put(rec);
}

/* A record whose metadata nests n objects: 1 + n deep. */
static json_object *
nested_record(unsigned n)
{
	json_object *rec = json_object_new_object(), *v = json_object_new_string("leaf");

	for (unsigned i = 0; i < n; i++) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "d", v);
		v = o;
	}
	json_object_object_add(rec, "metadata", v);
	return rec;
}

struct depth_op {
	json_object *rec, *got;
};

static enum kw_err
depth_put_get(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct depth_op *op = baton;
	enum kw_err rc = kw_rec_put(st, txn, KW_DB_ORGS, "deep", op->rec, 0);

	if (rc == KW_OK)
		rc = kw_rec_get(st, txn, KW_DB_ORGS, "deep", 0, &op->got);
	return rc;
}

/* The one depth reckoning: what a request may send is stored, read and copied back. */
static void
test_depth(struct kw_store *st)
{
	struct depth_op op = { nested_record(KW_REC_MAX_DEPTH - 1), NULL };
	json_object *copy, *wrapped = json_object_new_object();
	const char *text;

	is_int(kw_json_depth(op.rec), KW_REC_MAX_DEPTH, "kw_json_depth counts objects");
	is_int(kw_store_txn(st, depth_put_get, &op), KW_OK, "a record at KW_REC_MAX_DEPTH is "
	    "stored and read back");
	ok(op.got != NULL && json_object_equal(op.got, op.rec), "... whole");
	copy = kw_json_copy(op.rec);
	ok(copy != NULL && json_object_equal(copy, op.rec), "kw_json_copy copies it");
	json_object_put(copy);
	/* an audit entry: a record one level down, read by the same reader */
	json_object_object_add(wrapped, "before_value", json_object_get(op.rec));
	text = json_object_to_json_string_ext(wrapped, JSON_C_TO_STRING_PLAIN);
	is_int(kw_rec_parse(text, strlen(text), &copy), KW_OK,
	    "the reader takes KW_STORED_MAX_DEPTH, a record inside an audit entry");
	json_object_put(copy);
	json_object_put(wrapped);
	json_object_put(op.got);
	json_object_put(op.rec);
	op.rec = nested_record(KW_REC_MAX_DEPTH);
	op.got = NULL;
	is_int(kw_store_txn(st, depth_put_get, &op), KW_EINVAL,
	    "kw_rec_put refuses a record deeper than KW_REC_MAX_DEPTH");
	json_object_put(op.rec);
	ok(KW_JSON_MAX_DEPTH < KW_REC_MAX_DEPTH && KW_REC_MAX_DEPTH < KW_STORED_MAX_DEPTH,
	    "a request nests less than a record, a record less than an audit entry");
}

static void
test_helpers(void)
{
	char token[KW_TOKEN_LEN + 1], want[KW_TOKEN_LEN + 1];
	json_object *rec = json_object_new_object();
	time_t t;

	kw_crypto_sha256_hex("sk-x", 4, want);
	kw_keys_token_of("sk-x", token);
	is_str(token, want, "a plaintext key names its hash");
	for (size_t i = 0; i < KW_TOKEN_LEN; i++)
		want[i] = (char)(i % 2 ? 'A' : '0');
	kw_keys_token_of(want, token);
	ok(token[1] == 'a', "a hash names itself, lower-cased");

	is_int(kw_time_parse("2026-11-22T07:36:43Z", &t), KW_OK, "RFC 3339 parses");
	is_int(t, 1795333003, "to the right second");
	is_int(kw_time_parse("2026-11-22T07:36:43.123+00:00", &t), KW_OK, "fractions and +00:00");
	is_int(kw_time_parse("yesterday", &t), KW_EINVAL, "anything else does not");

	json_object_object_add(rec, "spend", json_object_new_double(7));
	json_object_object_add(rec, "budget_duration", json_object_new_string("1d"));
	kw_json_set_time(rec, "budget_reset_at", 1795392000);	/* 2026-11-23T00:00:00Z */
	is_int(kw_budget_settle(rec, 1795391999), 0, "no reset before it is due");
	ok(kw_json_num(rec, "spend", -1) == 7, "spend kept");
	is_int(kw_budget_settle(rec, 1795392000), 1, "a reset when due");
	ok(kw_json_num(rec, "spend", -1) == 0, "spend back to 0");
	is_str(kw_json_str(rec, "budget_reset_at"), "2026-11-24T00:00:00Z", "the next reset is set");
	json_object_put(rec);
}

/* A schema-1 data directory: keys and aliases only; opening it indexes the keys. */
static void
test_migration(void)
{
	char d[] = "/tmp/kw-test-migrate-XXXXXX", cmd[128];
	struct kw_store *st = NULL;
	json_object *rec = key_record("sk-legacy", "old", "u9", NULL, 6000);
	struct query q = { .kind = 'u', .id = "u9" };
	struct write w = { .rec = rec };
	DB *meta;

	if (mkdtemp(d) == NULL)
		exit(1);
	kw_store_open(&st, d, KW_STORE_RECOVER);
	kw_store_txn(st, write_body, &w);
	/* forget the index rows and go back to schema 1, as a 0.1 data directory */
	kw_store_db(st, KW_DB_KEY_OWNERS)->truncate(kw_store_db(st, KW_DB_KEY_OWNERS), NULL, NULL,
	    DB_AUTO_COMMIT);
	kw_store_db(st, KW_DB_KEY_CREATED)->truncate(kw_store_db(st, KW_DB_KEY_CREATED), NULL,
	    NULL, DB_AUTO_COMMIT);
	meta = kw_store_db(st, KW_DB_META);
	DBT k = { .data = "schema_version", .size = 14 }, v = { .data = "1", .size = 1 };
	meta->put(meta, NULL, &k, &v, DB_AUTO_COMMIT);
	kw_store_txn(st, owned_body, &q);
	is_int(q.seen.n, 0, "before: the owner index is empty");
	kw_store_close(st);

	is_int(kw_store_open(&st, d, KW_STORE_RECOVER), KW_OK, "schema 1 opens");
	kw_store_txn(st, owned_body, &q);
	is_int(q.seen.n, 1, "and its keys are indexed by owner");
	q.limit = 5;
	kw_store_txn(st, page_body, &q);
	is_int(q.total, 1, "and by creation time");
	kw_store_close(st);
	json_object_put(rec);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", d);
	(void)!system(cmd);
}

/* What test_fields reads back: a few fields of a record, and whether records are there. */
struct fields_op {
	const char *id;
	const char *const *names;
	size_t n;
	json_object *got;
	enum kw_err exists, absent;
};

static enum kw_err
fields_put_get(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct fields_op *op = baton;

	op->exists = kw_rec_exists(st, txn, KW_DB_BUDGETS, op->id);
	op->absent = kw_rec_exists(st, txn, KW_DB_BUDGETS, "no-such-record");
	return kw_rec_get_fields(st, txn, KW_DB_BUDGETS, op->id, op->names, op->n, &op->got);
}

/* Stores text as record id of budgets.db, as it is (not through kw_rec_put). */
static void
store_text(struct kw_store *st, const char *id, const char *text)
{
	DB *db = kw_store_db(st, KW_DB_BUDGETS);
	DBT k = { .data = (void *)id, .size = (u_int32_t)strlen(id) };
	DBT v = { .data = (void *)text, .size = (u_int32_t)strlen(text) };

	db->put(db, NULL, &k, &v, 0);
}

/*
 * kw_rec_get_fields gives each field it is asked for as the whole parse
 * does, steps over the others whatever they hold, and parses the whole
 * record when a field name is escaped; kw_rec_exists reads no byte.
 */
/* kw_rec_field_spans: each value's own text, absent fields empty, text it cannot follow refused. */
static void
test_spans(const char *text)
{
	static const char *const wanted[] = { "models", "absent", "last" };
	struct kw_span spans[3];
	char plain[64];

	ok(kw_rec_field_spans(text, strlen(text), wanted, 3, spans), "kw_rec_field_spans follows "
	    "a record with nested values and quoted brackets");
	ok(spans[0].text != NULL && spans[0].len == strlen("[\"gpt-4o\",\"a\\/b\"]") &&
	    memcmp(spans[0].text, "[\"gpt-4o\",\"a\\/b\"]", spans[0].len) == 0,
	    "a field's span is its value's stored text");
	plain[kw_rec_text_plain(spans[0].text, spans[0].len, plain)] = '\0';
	is_str(plain, "[\"gpt-4o\",\"a/b\"]", "which kw_rec_text_plain prints as an answer does");
	ok(spans[1].text == NULL && spans[1].len == 0, "a field the record lacks has no span");
	ok(spans[2].text != NULL && spans[2].len == 4 && memcmp(spans[2].text, "-1e3", 4) == 0,
	    "the last field's span ends before the closing brace");
	ok(!kw_rec_field_spans("{\"sp\\u0065nd\":1}", 16, wanted, 3, spans),
	    "an escaped field name: not followed, the caller parses the whole record");
	ok(!kw_rec_field_spans("{\"models\":[1,2}", 15, wanted, 3, spans),
	    "a broken record: not followed");
	ok(kw_rec_field_spans("{}", 2, wanted, 3, spans) && spans[0].text == NULL,
	    "an empty record: no spans");
}

static void
test_fields(struct kw_store *st)
{
	static const char *const names[] = { "spend", "models", "key_alias", "expires", "last" };
	static const char text[] = "{\"skip\":{\"a\":[1,{\"}\":\"]\"}],\"b\":\"x\\\"}\"},"
	    "\"spend\":12.50,\"models\":[\"gpt-4o\",\"a\\/b\"],\"key_alias\":\"k\\u00e9\","
	    "\"expires\":null,\"more\":[[],{}],\"last\":-1e3}";
	struct fields_op op = { "fields", names, sizeof(names) / sizeof(names[0]), NULL, 0, 0 };
	json_object *whole;

	store_text(st, "fields", text);
	is_int(kw_store_txn(st, fields_put_get, &op), KW_OK, "kw_rec_get_fields reads a record");
	is_int(op.exists, KW_OK, "kw_rec_exists finds it");
	is_int(op.absent, KW_ENOTFOUND, "kw_rec_exists: KW_ENOTFOUND for none");
	kw_rec_parse(text, strlen(text), &whole);
	for (size_t i = 0; i < op.n; i++) {
		json_object *a = NULL, *b = NULL;

		json_object_object_get_ex(op.got, names[i], &a);
		json_object_object_get_ex(whole, names[i], &b);
		ok(json_object_object_get_ex(op.got, names[i], NULL) && json_object_equal(a, b),
		    "field %s as the whole parse has it", names[i]);
	}
	is_str(json_object_to_json_string_ext(json_object_object_get(op.got, "spend"),
	    JSON_C_TO_STRING_PLAIN), "12.50", "a number keeps its stored text");
	ok(!json_object_object_get_ex(op.got, "skip", NULL) &&
	    !json_object_object_get_ex(op.got, "more", NULL), "the fields not asked for are not built");
	json_object_put(op.got);
	json_object_put(whole);
	test_spans(text);

	store_text(st, "escaped", "{\"sp\\u0065nd\":1,\"models\":[]}");
	op.id = "escaped";
	op.got = NULL;
	is_int(kw_store_txn(st, fields_put_get, &op), KW_OK, "an escaped field name: read whole");
	ok(json_object_object_get_ex(op.got, "spend", NULL), "... which finds the field it names");
	json_object_put(op.got);
}

struct put_op {
	enum kw_db db;
	const char *id;
	json_object *rec;
};

static enum kw_err
put_one(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct put_op *op = baton;

	return kw_rec_put(st, txn, op->db, op->id, op->rec, 0);
}

struct member_op {
	const char *id, *name;
	json_object *value;	/* owned: the member's new value */
	char *before, *after;	/* the stored text before and after */
	size_t before_len, after_len;
	char *whole;		/* the record printed whole, as kw_rec_put writes it */
};

static enum kw_err
member_put(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct member_op *op = baton;
	json_object *rec, *again;
	enum kw_err rc;

	if ((rc = kw_rec_get_with_text(st, txn, KW_DB_ORGS, op->id, KW_RMW, &rec, &op->before,
	    &op->before_len)) != KW_OK)
		return rc;
	json_object_object_add(rec, op->name, json_object_get(op->value));
	op->whole = strdup(json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PLAIN));
	rc = kw_rec_put_member(st, txn, KW_DB_ORGS, op->id, rec, op->before, op->before_len,
	    op->name);
	json_object_put(rec);
	if (rc == KW_OK && (rc = kw_rec_get_with_text(st, txn, KW_DB_ORGS, op->id, 0, &again,
	    &op->after, &op->after_len)) == KW_OK)
		json_object_put(again);
	return rc;
}

/* kw_rec_put_member writes, byte for byte, what kw_rec_put would, without printing the record. */
static void
test_put_member(struct kw_store *st)
{
	struct member_op op = { .id = "member", .name = "spend",
	    .value = json_object_new_double(0.1 + 0.2) };
	json_object *rec = json_object_new_object();

	json_object_object_add(rec, "models", json_object_new_string("a/b \"c\""));
	json_object_object_add(rec, "spend", json_object_new_double(12.5));
	json_object_object_add(rec, "max_budget", json_object_new_double(100));
	json_object_object_add(rec, "metadata", json_object_new_object());
	is_int(kw_store_txn(st, put_one, &(struct put_op){ KW_DB_ORGS, "member", rec }), KW_OK,
	    "a record is stored whole");
	is_int(kw_store_txn(st, member_put, &op), KW_OK, "kw_rec_put_member writes its new spend");
	ok(op.after != NULL && op.whole != NULL && op.after_len == strlen(op.whole) &&
	    memcmp(op.after, op.whole, op.after_len) == 0,
	    "the stored text is the record printed whole (%.*s)", (int)op.after_len,
	    op.after ? op.after : "");
	ok(op.after_len != op.before_len, "... and not the text before");
	free(op.before), free(op.after), free(op.whole);
	json_object_put(op.value);

	/* a record without the member: written whole */
	op = (struct member_op){ .id = "member", .name = "budget_id",
	    .value = json_object_new_string("b1") };
	is_int(kw_store_txn(st, member_put, &op), KW_OK, "a member the record lacked is added");
	ok(op.after != NULL && op.after_len == strlen(op.whole) &&
	    memcmp(op.after, op.whole, op.after_len) == 0, "the record is written whole with it");
	free(op.before), free(op.after), free(op.whole);
	json_object_put(op.value);
	json_object_put(rec);
}

int
main(void)
{
	struct kw_store *st = NULL;
	char cmd[128];

	kw_crypto_init();
	kw_log_threshold = KW_LOG_ERROR;
	if (mkdtemp(dir) == NULL)
		return 1;
	if (kw_store_open(&st, dir, KW_STORE_RECOVER) != KW_OK)
		return 1;
	test_helpers();
	test_indexes(st);
	test_credentials(st);
	test_depth(st);
	test_fields(st);
	test_put_member(st);
	kw_store_close(st);
	test_migration();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	return tap_done();
}
