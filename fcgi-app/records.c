/* records.c: JSON records in the store's tables, read and written inside the caller's transaction. */
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"

static DBT
dbt_of(const char *s)
{
	DBT d = { .data = (void *)s, .size = (u_int32_t)strlen(s) };

	return d;
}

/*
 * A json-c parser that admits KW_STORED_MAX_DEPTH nested objects and arrays
 * (json-c counts the innermost scalar as a level too), borrowed and reset:
 * one per process, as workers are single-threaded.  NULL when out of memory.
 */
static json_tokener *
stored_parser(void)
{
	static json_tokener *tok;

	if (tok == NULL)
		tok = json_tokener_new_ex(KW_STORED_MAX_DEPTH + 1);
	if (tok != NULL)
		json_tokener_reset(tok);
	return tok;
}

/*
 * Parses a stored record of n bytes into *out (owned).  Anything the store
 * was given parses: records and audit entries are at most
 * KW_STORED_MAX_DEPTH deep (kw_rec_put, kw_audit_record).  A record that
 * does not parse as an object means the store is damaged: KW_EINTERNAL.
 */
enum kw_err
kw_rec_parse(const void *data, size_t n, json_object **out)
{
	json_tokener *tok = stored_parser();
	json_object *obj;

	*out = NULL;
	if (tok == NULL)
		return KW_ENOMEM;
	obj = json_tokener_parse_ex(tok, data, (int)n);
	if (obj == NULL || !json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		kw_log_error("store: a record does not parse as a JSON object");
		return KW_EINTERNAL;
	}
	*out = obj;
	return KW_OK;
}

/* The first byte at or after p (< end) that is not JSON white space. */
static const char *
skip_space(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* The end of the string whose opening quote is at p; NULL when it does not end. */
static const char *
string_end(const char *p, const char *end)
{
	for (p++; p < end && *p != '"'; p++)
		if (*p == '\\')
			p++;
	return p < end ? p + 1 : NULL;
}

/*
 * The end of the JSON value that starts at p, found without building
 * it: strings are skipped whole, objects and arrays by their depth, a
 * scalar up to the byte that ends it.  NULL when the text ends first.
 */
static const char *
value_end(const char *p, const char *end)
{
	int depth = 0;

	while (p < end) {
		if (*p == '"') {
			if ((p = string_end(p, end)) == NULL)
				return NULL;
		} else if (*p == '{' || *p == '[') {
			depth++;
			p++;
		} else if (*p == '}' || *p == ']') {
			if (--depth < 0)
				return NULL;
			p++;
		} else if (depth == 0) {
			while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' &&
			    *p != '\t' && *p != '\n' && *p != '\r')
				p++;
			return p;
		} else {
			p++;
		}
		if (depth == 0)
			return p;
	}
	return NULL;
}

/*
 * Finds the top-level fields names (n of them, at most 32) in a stored record of len
 * bytes without building any value: spans[i] is where names[i]'s value's
 * text is ({NULL, 0} when the record has no such field).  0 when the text
 * is not one this scan follows (an escaped field name, a broken record):
 * the reader then parses it whole.
 */
int
kw_rec_field_spans(const char *data, size_t len, const char *const *names, size_t n,
    struct kw_span *spans)
{
	const char *p = data, *end = data + len, *name, *v, *vend;
	size_t lens[32], nlen;

	if (n > sizeof(lens) / sizeof(lens[0]))
		return 0;
	for (size_t i = 0; i < n; i++) {
		spans[i] = (struct kw_span){ NULL, 0 };
		lens[i] = strlen(names[i]);
	}
	p = skip_space(p, end);
	if (p == end || *p++ != '{')
		return 0;
	p = skip_space(p, end);
	if (p < end && *p == '}')
		return 1;
	for (;;) {
		if (p == end || *p != '"' || (v = string_end(p, end)) == NULL)
			return 0;
		name = p + 1;
		nlen = (size_t)(v - 1 - name);
		if (memchr(name, '\\', nlen) != NULL)
			return 0;
		p = skip_space(v, end);
		if (p == end || *p++ != ':')
			return 0;
		v = skip_space(p, end);
		if ((vend = value_end(v, end)) == NULL || vend == end)
			return 0;
		for (size_t i = 0; i < n; i++)
			if (lens[i] == nlen && memcmp(names[i], name, nlen) == 0) {
				spans[i] = (struct kw_span){ v, (size_t)(vend - v) };
				break;
			}
		p = skip_space(vend, end);
		if (p < end && *p == ',') {
			p = skip_space(p + 1, end);
			continue;
		}
		return p < end && *p == '}';
	}
}

/*
 * Parses only the fields names (n of them, at most 32) of a stored record
 * of len bytes into *out (owned): an object holding those the record has,
 * each as the whole parse would give it, for a reader that needs a few
 * fields of a record of dozens (a key's has some sixty: building them all
 * was most of what a /key/verify cost).  The record's other values are
 * stepped over, never built (kw_rec_field_spans); the wanted ones are
 * copied, as text, into an object of their own that one parse reads
 * (json-c sets up a locale on each parse, which costs as much as a small
 * value).  Text the scan does not follow is parsed whole, so *out then
 * holds every field.
 */
enum kw_err
kw_rec_parse_fields(const char *data, size_t len, const char *const *names, size_t n,
    json_object **out)
{
	struct kw_span spans[32];
	size_t used = 1;
	char *text;
	enum kw_err rc;

	*out = NULL;
	if (!kw_rec_field_spans(data, len, names, n, spans))
		return kw_rec_parse(data, len, out);
	/* "name":value for each, as the record has it (no longer than the record) */
	if ((text = malloc(len + 2)) == NULL)
		return KW_ENOMEM;
	text[0] = '{';
	for (size_t i = 0; i < n; i++) {
		size_t nlen = strlen(names[i]);

		if (spans[i].text == NULL)
			continue;
		if (used > 1)
			text[used++] = ',';
		text[used++] = '"';
		memcpy(text + used, names[i], nlen);
		used += nlen;
		text[used++] = '"';
		text[used++] = ':';
		memcpy(text + used, spans[i].text, spans[i].len);
		used += spans[i].len;
	}
	text[used++] = '}';
	rc = kw_rec_parse(text, used, out);
	free(text);
	return rc;
}

/*
 * Reads the record stored under id as kw_rec_parse_fields does: *out (owned)
 * holds those of names (n of them) the record has, and perhaps more.
 * KW_ENOTFOUND when absent.
 */
enum kw_err
kw_rec_get_fields(struct kw_store *st, DB_TXN *txn, enum kw_db which, const char *id,
    const char *const *names, size_t n, json_object **out)
{
	DB *db = kw_store_db(st, which);
	DBT key = dbt_of(id), val = { .flags = DB_DBT_MALLOC };
	enum kw_err rc;

	*out = NULL;
	if ((rc = kw_store_err(db->get(db, txn, &key, &val, 0))) != KW_OK)
		return rc;
	rc = kw_rec_parse_fields(val.data, val.size, names, n, out);
	free(val.data);
	return rc;
}

/*
 * Reads the text of the record stored under id into *text (owned: free
 * it), *len bytes, not NUL-terminated.  KW_ENOTFOUND when absent.
 */
enum kw_err
kw_rec_get_text(struct kw_store *st, DB_TXN *txn, enum kw_db which, const char *id, char **text,
    size_t *len)
{
	DB *db = kw_store_db(st, which);
	DBT key = dbt_of(id), val = { .flags = DB_DBT_MALLOC };
	enum kw_err rc = kw_store_err(db->get(db, txn, &key, &val, 0));

	*text = rc == KW_OK ? val.data : NULL;
	*len = rc == KW_OK ? val.size : 0;
	return rc;
}

/*
 * Copies a stored record's text (n bytes) into out (room for n) as an
 * answer writes the same record: json-c stores "/" escaped as "\/", which
 * answers leave plain (JSON_C_TO_STRING_NOSLASHESCAPE); every other byte
 * is the same in both, since the parse of a stored record keeps each
 * number's text and prints its fields in their order.  Returns the length.
 */
size_t
kw_rec_text_plain(const char *stored, size_t n, char *out)
{
	size_t i = 0, j = 0;

	while (i < n) {
		if (stored[i] == '\\' && i + 1 < n) {
			if (stored[i + 1] != '/')
				out[j++] = '\\';
			out[j++] = stored[i + 1];
			i += 2;
		} else {
			out[j++] = stored[i++];
		}
	}
	return j;
}

/*
 * Reads the record stored under id into *out (owned by the caller), and
 * the text it was parsed from into *text (owned, free; *len bytes), for
 * kw_rec_put_member.  flags KW_RMW takes the write lock at once, so a
 * read-modify-write in one transaction cannot deadlock against its twin.
 * KW_ENOTFOUND when absent.
 */
enum kw_err
kw_rec_get_with_text(struct kw_store *st, DB_TXN *txn, enum kw_db which, const char *id,
    int flags, json_object **out, char **text, size_t *len)
{
	DB *db = kw_store_db(st, which);
	DBT key = dbt_of(id), val = { .flags = DB_DBT_MALLOC };
	enum kw_err rc;

	*out = NULL;
	*text = NULL;
	*len = 0;
	rc = kw_store_err(db->get(db, txn, &key, &val, (flags & KW_RMW) ? DB_RMW : 0));
	if (rc != KW_OK)
		return rc;
	if ((rc = kw_rec_parse(val.data, val.size, out)) != KW_OK) {
		free(val.data);
		return rc;
	}
	*text = val.data;
	*len = val.size;
	return KW_OK;
}

/* kw_rec_get_with_text without the text. */
enum kw_err
kw_rec_get(struct kw_store *st, DB_TXN *txn, enum kw_db which, const char *id, int flags,
    json_object **out)
{
	char *text;
	size_t len;
	enum kw_err rc = kw_rec_get_with_text(st, txn, which, id, flags, out, &text, &len);

	free(text);
	return rc;
}

/*
 * KW_OK when a record is stored under id, KW_ENOTFOUND when none is: a
 * read of none of its bytes (a partial get of length 0), for a caller
 * that needs to know it is there and nothing it holds.
 */
enum kw_err
kw_rec_exists(struct kw_store *st, DB_TXN *txn, enum kw_db which, const char *id)
{
	DB *db = kw_store_db(st, which);
	DBT key = dbt_of(id), val = { .flags = DB_DBT_PARTIAL | DB_DBT_USERMEM };

	return kw_store_err(db->get(db, txn, &key, &val, 0));
}

/* Keys, teams, users and organizations keep a summary for the limits (limits.c) by their record. */
static int
has_summary(enum kw_db which)
{
	return which == KW_DB_KEYS || which == KW_DB_TEAMS || which == KW_DB_USERS ||
	    which == KW_DB_ORGS;
}

/* The objects and arrays nested in obj: 1 for {} or [1], 0 for a scalar. */
unsigned
kw_json_depth(json_object *obj)
{
	unsigned deepest = 0, d;

	if (json_object_is_type(obj, json_type_object)) {
		json_object_object_foreach(obj, name, v) {
			(void)name;
			if ((d = kw_json_depth(v)) > deepest)
				deepest = d;
		}
		return deepest + 1;
	}
	if (json_object_is_type(obj, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(obj); i++)
			if ((d = kw_json_depth(json_object_array_get_idx(obj, i))) > deepest)
				deepest = d;
		return deepest + 1;
	}
	return 0;
}

/*
 * Stores rec (borrowed) under id; with no_overwrite, KW_ECONFLICT when id
 * exists.  KW_EINVAL for a record deeper than KW_REC_MAX_DEPTH: stored, it
 * or its audit entry could not be read back.  A request the parser took
 * never makes one; this keeps a mistake in that reckoning a refusal.
 */
enum kw_err
kw_rec_put(struct kw_store *st, DB_TXN *txn, enum kw_db which, const char *id, json_object *rec,
    int no_overwrite)
{
	DB *db = kw_store_db(st, which);
	DBT key = dbt_of(id), val;
	enum kw_err rc;

	if (kw_json_depth(rec) > KW_REC_MAX_DEPTH) {
		kw_log_error("store: refused a record nested deeper than %d levels",
		    KW_REC_MAX_DEPTH);
		return KW_EINVAL;
	}
	val = dbt_of(json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PLAIN));
	rc = kw_store_err(db->put(db, txn, &key, &val, no_overwrite ? DB_NOOVERWRITE : 0));
	if (rc == KW_OK && has_summary(which))
		rc = kw_limits_summary_write(st, txn, which, id, rec);
	return rc;
}

/*
 * kw_rec_put of rec (borrowed), read from text (len bytes; NULL for
 * none) by kw_rec_get_with_text, when only its member name has changed
 * since: the member's new value is printed into the old one's place and
 * the rest of the text kept, where kw_rec_put would print the whole
 * record (a key's has some sixty members) to the same bytes, since a
 * parsed record prints each untouched value as its text.  A spend
 * settled at gateway rates changes one number.  Without text, or a text
 * that does not hold name, it is kw_rec_put.
 */
enum kw_err
kw_rec_put_member(struct kw_store *st, DB_TXN *txn, enum kw_db which, const char *id,
    json_object *rec, const char *text, size_t len, const char *name)
{
	DB *db = kw_store_db(st, which);
	DBT key = dbt_of(id), val = { 0 };
	struct kw_span at;
	const char *v;
	size_t vlen, head;
	char *buf;
	enum kw_err rc;

	if (text == NULL || !kw_rec_field_spans(text, len, &name, 1, &at) || at.text == NULL)
		return kw_rec_put(st, txn, which, id, rec, 0);
	v = json_object_to_json_string_length(json_object_object_get(rec, name),
	    JSON_C_TO_STRING_PLAIN, &vlen);
	head = (size_t)(at.text - text);
	if ((buf = malloc(len - at.len + vlen)) == NULL)
		return KW_ENOMEM;
	memcpy(buf, text, head);
	memcpy(buf + head, v, vlen);
	memcpy(buf + head + vlen, at.text + at.len, len - head - at.len);
	val.data = buf;
	val.size = (u_int32_t)(len - at.len + vlen);
	rc = kw_store_err(db->put(db, txn, &key, &val, 0));
	free(buf);
	if (rc == KW_OK && has_summary(which))
		rc = kw_limits_summary_write(st, txn, which, id, rec);
	return rc;
}

/* Deletes the record under id; KW_ENOTFOUND when absent. */
enum kw_err
kw_rec_del(struct kw_store *st, DB_TXN *txn, enum kw_db which, const char *id)
{
	DB *db = kw_store_db(st, which);
	DBT key = dbt_of(id);
	enum kw_err rc = kw_store_err(db->del(db, txn, &key, 0));

	if (rc == KW_OK && has_summary(which))
		rc = kw_limits_summary_write(st, txn, which, id, NULL);
	return rc;
}

/* Visits every record in id order until visit returns non-zero; rec is borrowed for the call. */
enum kw_err
kw_rec_each(struct kw_store *st, DB_TXN *txn, enum kw_db which, kw_rec_visit visit, void *baton)
{
	DB *db = kw_store_db(st, which);
	DBC *cur = NULL;
	DBT key = { .flags = DB_DBT_REALLOC }, val = { .flags = DB_DBT_REALLOC };
	char *id = NULL;
	enum kw_err rc = kw_store_err(db->cursor(db, txn, &cur, 0));
	int stop = 0;

	while (rc == KW_OK && !stop &&
	    (rc = kw_store_err(cur->get(cur, &key, &val, DB_NEXT))) == KW_OK) {
		json_object *rec;

		if ((id = realloc(id, key.size + 1)) == NULL) {
			rc = KW_ENOMEM;
			break;
		}
		memcpy(id, key.data, key.size);
		id[key.size] = '\0';
		if ((rc = kw_rec_parse(val.data, val.size, &rec)) != KW_OK)
			break;
		stop = visit(id, rec, baton);
		json_object_put(rec);
	}
	if (rc == KW_ENOTFOUND)
		rc = KW_OK;
	if (cur != NULL)
		cur->close(cur);
	free(key.data);
	free(val.data);
	free(id);
	return rc;
}

/*
 * Appends v to pb as json-c prints a string with flags (null for NULL),
 * through str, a string object the caller reuses so that no object is
 * made per value.  "" is written by hand: json-c 0.16 loses a reused
 * string object's buffer when it is set to "" (65 bytes a time, which
 * valgrind shows in test_spend).
 */
void
kw_json_append_string(struct printbuf *pb, json_object *str, const char *v, int flags)
{
	const char *json = v == NULL ? "null" : "\"\"";
	size_t len = v == NULL ? 4 : 2;

	if (v != NULL && *v != '\0') {
		json_object_set_string(str, v);
		json = json_object_to_json_string_length(str, flags, &len);
	}
	printbuf_memappend(pb, json, (int)len);
}

/* The string field name of obj, borrowed; NULL when absent, null or not a string. */
const char *
kw_json_str(json_object *obj, const char *name)
{
	json_object *v;

	if (obj == NULL || !json_object_object_get_ex(obj, name, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* True when a and b hold the same string in field name, or neither holds a string there. */
int
kw_json_same_str(json_object *a, json_object *b, const char *name)
{
	const char *x = kw_json_str(a, name), *y = kw_json_str(b, name);

	return x == NULL || y == NULL ? x == y : strcmp(x, y) == 0;
}

/* True when rec's field name holds value (borrowed), compared as JSON text; absent equals null. */
int
kw_json_field_is(json_object *rec, const char *name, json_object *value)
{
	json_object *was = NULL;

	if (rec != NULL)
		json_object_object_get_ex(rec, name, &was);
	if (was == NULL || value == NULL)
		return was == value;
	return strcmp(json_object_to_json_string_ext(was, JSON_C_TO_STRING_PLAIN),
	    json_object_to_json_string_ext(value, JSON_C_TO_STRING_PLAIN)) == 0;
}

/* True when obj has the field name, even when its value is null. */
int
kw_json_has(json_object *obj, const char *name)
{
	return obj != NULL && json_object_object_get_ex(obj, name, NULL);
}

/* The number in field name, or otherwise when absent, null or not a number. */
double
kw_json_num(json_object *obj, const char *name, double otherwise)
{
	json_object *v;

	if (obj == NULL || !json_object_object_get_ex(obj, name, &v) ||
	    !(json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)))
		return otherwise;
	return json_object_get_double(v);
}

/* True only when field name is the JSON value true. */
int
kw_json_bool(json_object *obj, const char *name)
{
	json_object *v;

	return obj != NULL && json_object_object_get_ex(obj, name, &v) &&
	    json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
}

/*
 * A deep copy of obj (owned), member by member.  Not json-c 0.16's
 * json_object_deep_copy, which refuses a number that came from a parser
 * (it keeps the number's text as a serializer of its own): a double is
 * copied here with that same text, so that it prints as it was read.
 * NULL only when out of memory.
 */
json_object *
kw_json_copy(json_object *obj)
{
	json_object *copy = NULL, *member;

	switch (json_object_get_type(obj)) {
	case json_type_null:
		return NULL;
	case json_type_boolean:
		return json_object_new_boolean(json_object_get_boolean(obj));
	case json_type_int:
		return json_object_new_int64(json_object_get_int64(obj));
	case json_type_double:
		return json_object_new_double_s(json_object_get_double(obj),
		    json_object_get_string(obj));
	case json_type_string:
		return json_object_new_string_len(json_object_get_string(obj),
		    json_object_get_string_len(obj));
	case json_type_array:
		if ((copy = json_object_new_array_ext((int)json_object_array_length(obj))) == NULL)
			return NULL;
		for (size_t i = 0; i < json_object_array_length(obj); i++) {
			member = json_object_array_get_idx(obj, i);
			if (json_object_array_add(copy, member != NULL ? kw_json_copy(member) :
			    NULL) != 0 || (member != NULL && json_object_array_get_idx(copy, i) == NULL)) {
				json_object_put(copy);
				return NULL;
			}
		}
		return copy;
	case json_type_object:
		if ((copy = json_object_new_object()) == NULL)
			return NULL;
		json_object_object_foreach(obj, name, value) {
			member = value != NULL ? kw_json_copy(value) : NULL;
			if ((value != NULL && member == NULL) ||
			    json_object_object_add(copy, name, member) != 0) {
				json_object_put(member);
				json_object_put(copy);
				return NULL;
			}
		}
		return copy;
	}
	return NULL;
}

/* True when list is an array holding the string s. */
int
kw_json_list_has(json_object *list, const char *s)
{
	if (list == NULL || !json_object_is_type(list, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(list); i++) {
		json_object *v = json_object_array_get_idx(list, i);

		if (json_object_is_type(v, json_type_string) &&
		    strcmp(json_object_get_string(v), s) == 0)
			return 1;
	}
	return 0;
}

/*
 * Replaces rec's array field with one without the entries that are value:
 * strings equal to it when key is NULL, else objects whose key field is.
 */
void
kw_json_list_drop(json_object *rec, const char *field, const char *key, const char *value)
{
	json_object *list = json_object_object_get(rec, field), *kept = json_object_new_array();

	for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
		json_object *v = json_object_array_get_idx(list, i);
		const char *s = key == NULL ? json_object_get_string(v) : kw_json_str(v, key);

		if (s == NULL || strcmp(s, value) != 0)
			json_object_array_add(kept, json_object_get(v));
	}
	json_object_object_add(rec, field, kept);
}

/* Sets field name to t as RFC 3339 UTC, or to null when t is 0. */
void
kw_json_set_time(json_object *obj, const char *name, time_t t)
{
	char buf[KW_TIME_LEN];

	if (t == 0) {
		json_object_object_add(obj, name, NULL);
		return;
	}
	kw_time_format(t, buf);
	json_object_object_add(obj, name, json_object_new_string(buf));
}
