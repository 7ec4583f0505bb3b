/* test_router.c: path matching, percent-decoding and query parameters (router.c). */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "kw.h"
#include "tap.h"

/* router.c links valid.c, which indexes the generated pattern table. */
const char *const kw_gen_patterns[] = { "^[a-z]+$" };
const size_t kw_gen_npatterns = 1;

static struct kw_schema s_page, s_int, s_bool, s_str, s_short, s_num, s_tags, s_ids, s_word;

static struct kw_schema
mk(unsigned types)
{
	struct kw_schema s;

	memset(&s, 0, sizeof(s));
	s.types = types;
	s.min_length = s.max_length = -1;
	s.pattern = -1;
	s.min_items = s.max_items = -1;
	return s;
}

static const struct kw_param list_params[] = {
	{ "page", KW_IN_QUERY, 0, &s_page },
	{ "size", KW_IN_QUERY, 0, &s_int },
	{ "return_full_object", KW_IN_QUERY, 0, &s_bool },
	{ "q", KW_IN_QUERY, 0, &s_short },
	{ "ratio", KW_IN_QUERY, 0, &s_num },
	{ "tags", KW_IN_QUERY, 0, &s_tags },
	{ "ids", KW_IN_QUERY, 0, &s_ids },
	{ "x-api-key", KW_IN_HEADER, 1, &s_str },
};
static const struct kw_param info_params[] = {
	{ "team", KW_IN_QUERY, 1, &s_word },
	{ "key", KW_IN_PATH, 1, &s_str },
};

/*
 * Parameter routes come before the literals they overlap, so the literal
 * winning shows the router prefers it rather than relying on table order.
 */
static const struct kw_route routes[] = {
	{ "GET", "/health", "health", NULL, KW_FACE_LITELLM, NULL, 0, NULL, 0, 0 },
	{ "GET", "/key/{key}", "key_get", NULL, KW_FACE_LITELLM, info_params, 2, NULL, 0, 1 },
	{ "DELETE", "/key/{key}", "key_delete", NULL, KW_FACE_LITELLM, NULL, 0, NULL, 0, 1 },
	{ "GET", "/key/info", "key_info", NULL, KW_FACE_LITELLM, NULL, 0, NULL, 0, 1 },
	{ "GET", "/key/{id}", "key_get_dup", NULL, KW_FACE_LITELLM, NULL, 0, NULL, 0, 1 },
	{ "POST", "/key/generate", "key_generate", NULL, KW_FACE_LITELLM, NULL, 0, NULL, 0, 1 },
	{ "POST", "/key/{key}/regenerate", "key_regen", NULL, KW_FACE_LITELLM, NULL, 0, NULL, 0, 1 },
	{ "GET", "/key/list", "key_list", NULL, KW_FACE_LITELLM, list_params, 8, NULL, 0, 1 },
	{ "GET", "/team/{team_id}/member/{user_id}", "member", NULL, KW_FACE_LITELLM, NULL, 0,
	    NULL, 0, 1 },
	{ "GET", "/", "root", NULL, KW_FACE_LITELLM, NULL, 0, NULL, 0, 1 },
};
static const size_t nroutes = sizeof(routes) / sizeof(routes[0]);

static const struct kw_face_prefix prefixes[] = {
	{ "/bifrost/", KW_FACE_BIFROST },
	{ "/api/v1/provision", KW_FACE_PROVISIONING },
	{ "/api/v1/", KW_FACE_VENICE },
};

static struct kw_arena *arena;

static void
setup(void)
{
	s_page = mk(KW_T_INTEGER);
	s_page.flags = KW_S_MIN;
	s_page.minimum = 1;
	s_int = mk(KW_T_INTEGER);
	s_bool = mk(KW_T_BOOLEAN);
	s_str = mk(KW_T_STRING);
	s_short = mk(KW_T_STRING);
	s_short.max_length = 5;
	s_num = mk(KW_T_NUMBER);
	s_tags = mk(KW_T_ARRAY);
	s_tags.items = &s_str;
	s_ids = mk(KW_T_ARRAY);
	s_ids.items = &s_int;
	s_ids.max_items = 3;
	s_word = mk(KW_T_STRING);
	s_word.pattern = 0;
}

static enum kw_err
match(const char *method, const char *path, int decoded, struct kw_match *m, struct kw_error *err)
{
	memset(err, 0, sizeof(*err));
	return kw_router_match(arena, routes, nroutes, method, path, decoded, m, err);
}

static const char *
op(const struct kw_match *m)
{
	return m->route != NULL ? m->route->operation_id : "(none)";
}

static void
test_decode(void)
{
	const char *s;

	is_str(kw_url_decode(arena, "a%20b+c", 7, 1), "a b c", "decode: query form, '+' is space");
	is_str(kw_url_decode(arena, "a%20b+c", 7, 0), "a b+c", "decode: path form keeps '+'");
	is_str(kw_url_decode(arena, "%c3%A9", 6, 0), "\xc3\xa9", "decode: UTF-8, either hex case");
	is_str(kw_url_decode(arena, "", 0, 0), "", "decode: empty");
	is_str(kw_url_decode(arena, "abc%41", 3, 0), "abc", "decode: stops at n");
	ok(kw_url_decode(arena, "%G1", 3, 0) == NULL, "decode: %%G1 rejected");
	ok(kw_url_decode(arena, "a%4", 3, 0) == NULL, "decode: truncated %%4 rejected");
	ok(kw_url_decode(arena, "a%", 2, 0) == NULL, "decode: lone %% rejected");
	ok(kw_url_decode(arena, "abc%41", 5, 0) == NULL, "decode: escape cut by n rejected");
	ok(kw_url_decode(arena, "a%00b", 5, 0) == NULL, "decode: %%00 rejected");
	ok(kw_url_decode(arena, "a\0b", 3, 0) == NULL, "decode: raw NUL rejected");
	ok(kw_url_decode(arena, "%ff", 3, 0) == NULL, "decode: invalid UTF-8 rejected");
	ok(kw_url_decode(arena, "%c0%af", 6, 0) == NULL, "decode: overlong rejected");
	ok(kw_url_decode(arena, "%c3", 3, 0) == NULL, "decode: truncated UTF-8 rejected");
	s = kw_url_decode(arena, "%2F", 3, 0);
	is_str(s, "/", "decode: %2F");
}

static void
test_match(void)
{
	struct kw_match m;
	struct kw_error err;

	is_int(match("GET", "/health", 0, &m, &err), KW_OK, "match: literal route");
	is_str(op(&m), "health", "match: literal route found");
	is_int(m.nparams, 0, "match: no params");
	is_int(match("GET", "/", 0, &m, &err), KW_OK, "match: root");
	is_str(op(&m), "root", "match: root route");
	is_int(match("POST", "/health", 0, &m, &err), KW_EMETHOD, "match: wrong method");
	is_str(m.allow, "GET", "match: Allow for one method");
	ok(m.route == NULL, "match: no route on 405");
	is_int(match("GET", "/health/", 0, &m, &err), KW_ENOTFOUND, "match: trailing slash is strict");
	is_int(match("GET", "//health", 0, &m, &err), KW_ENOTFOUND, "match: empty first segment");
	is_int(match("GET", "", 0, &m, &err), KW_ENOTFOUND, "match: empty path");
	is_int(match("GET", "health", 0, &m, &err), KW_ENOTFOUND, "match: no leading slash");
	is_int(match("GET", NULL, 0, &m, &err), KW_ENOTFOUND, "match: NULL path");
	is_int(match("GET", "/nope", 0, &m, &err), KW_ENOTFOUND, "match: unknown path");
	is_int(match("get", "/health", 0, &m, &err), KW_EMETHOD, "match: methods are case-sensitive");

	is_int(match("GET", "/key/abc", 0, &m, &err), KW_OK, "match: param route");
	is_str(op(&m), "key_get", "match: first of equal templates wins");
	is_int(m.nparams, 1, "match: one param");
	is_str(m.names[0], "key", "match: param name");
	is_str(m.values[0], "abc", "match: param value");
	is_int(match("GET", "/key/info", 0, &m, &err), KW_OK, "match: literal beside a param");
	is_str(op(&m), "key_info", "match: literal beats an earlier param template");
	is_int(m.nparams, 0, "match: literal has no params");
	is_int(match("GET", "/ke%79/info", 0, &m, &err), KW_OK, "match: literal compared decoded");
	is_str(op(&m), "key_info", "match: decoded literal route");
	is_int(match("GET", "/key/a%2Fb", 0, &m, &err), KW_OK, "match: %2F inside a parameter");
	is_str(m.values[0], "a/b", "match: %2F stays in the parameter");
	is_int(match("POST", "/key/a%2Fb/regenerate", 0, &m, &err), KW_OK,
	    "match: %2F param then a literal");
	is_str(op(&m), "key_regen", "match: regenerate route");
	is_str(m.values[0], "a/b", "match: regenerate param value");
	is_int(match("GET", "/key%2Finfo", 0, &m, &err), KW_ENOTFOUND,
	    "match: %2F never separates literal segments");
	is_int(match("GET", "/key/sk-a+b%20c", 0, &m, &err), KW_OK, "match: '+' in a path");
	is_str(m.values[0], "sk-a+b c", "match: '+' is not a space in a path");
	is_int(match("GET", "/key/%C3%A9", 0, &m, &err), KW_OK, "match: UTF-8 param");
	is_str(m.values[0], "\xc3\xa9", "match: UTF-8 param decoded");
	is_int(match("POST", "/key//regenerate", 0, &m, &err), KW_ENOTFOUND,
	    "match: a parameter needs a non-empty segment");
	is_int(match("GET", "/key/", 0, &m, &err), KW_ENOTFOUND, "match: empty trailing param");
	is_int(match("GET", "/team/t1/member/u%20x", 0, &m, &err), KW_OK, "match: two params");
	ok(m.nparams == 2 && strcmp(m.names[0], "team_id") == 0 && strcmp(m.names[1], "user_id") == 0,
	    "match: two param names in order");
	ok(strcmp(m.values[0], "t1") == 0 && strcmp(m.values[1], "u x") == 0,
	    "match: two param values decoded");

	is_int(match("GET", "/key/a%2Fb", 1, &m, &err), KW_OK, "match: already-decoded path");
	is_str(m.values[0], "a%2Fb", "match: decoded path is not decoded twice");
	is_int(match("GET", "/key/a b", 1, &m, &err), KW_OK, "match: decoded path with a space");
	is_str(m.values[0], "a b", "match: decoded value copied");
	is_int(match("GET", "/key/\xff", 1, &m, &err), KW_EINVAL, "match: decoded path not UTF-8");

	is_int(match("GET", "/key/%G1", 0, &m, &err), KW_EINVAL, "match: %G1 is a bad request");
	is_str(err.field, "path", "match: error names the path");
	is_int(match("GET", "/key/ab%4", 0, &m, &err), KW_EINVAL, "match: truncated escape");
	is_str(err.message, "malformed percent-encoding", "match: escape message");
	is_int(match("GET", "/key/a%00b", 0, &m, &err), KW_EINVAL, "match: NUL escape");
	is_str(err.message, "must not contain NUL", "match: NUL message");
	is_int(match("GET", "/key/%ff", 0, &m, &err), KW_EINVAL, "match: invalid UTF-8 escape");
	is_str(err.message, "must be valid UTF-8", "match: UTF-8 message");
	is_int(match("GET", "/nope/%zz", 0, &m, &err), KW_EINVAL,
	    "match: malformed escape reported before routing");

	is_int(match("PATCH", "/key/abc", 0, &m, &err), KW_EMETHOD, "match: 405 on a param route");
	is_str(m.allow, "GET, DELETE", "match: Allow in table order, GET listed once");
	is_int(match("PATCH", "/key/generate", 0, &m, &err), KW_EMETHOD, "match: 405 on a literal");
	is_str(m.allow, "GET, DELETE, POST", "match: Allow merges every matching template");
	is_int(match("DELETE", "/key/info", 0, &m, &err), KW_OK,
	    "match: a method the literal lacks falls back to the param route");
	is_str(op(&m), "key_delete", "match: DELETE /key/{key} with key=info");
	is_int(match("POST", "/key/generate", 0, &m, &err), KW_OK, "match: POST literal");
	is_str(op(&m), "key_generate", "match: POST literal route");
}

static void
test_face(void)
{
	is_int(kw_router_face(prefixes, 3, "/bifrost/v1/keys"), KW_FACE_BIFROST, "face: bifrost");
	is_int(kw_router_face(prefixes, 3, "/api/v1/provision/x"), KW_FACE_PROVISIONING,
	    "face: first matching prefix wins");
	is_int(kw_router_face(prefixes, 3, "/api/v1/keys"), KW_FACE_VENICE, "face: venice");
	is_int(kw_router_face(prefixes, 3, "/key/info"), KW_FACE_LITELLM, "face: default");
	is_int(kw_router_face(prefixes, 3, "/bifrost"), KW_FACE_LITELLM, "face: prefix must match whole");
	is_int(kw_router_face(prefixes, 0, "/bifrost/x"), KW_FACE_LITELLM, "face: no prefixes");
}

/* Parses query for route; returns the code and leaves *out for the caller to put. */
static enum kw_err
query(const struct kw_route *route, const char *q, struct json_object **out, struct kw_error *err)
{
	enum kw_err rc;

	memset(err, 0, sizeof(*err));
	*out = (struct json_object *)1;
	rc = kw_query_parse(arena, route, q, out, err);
	if (rc != KW_OK && *out != NULL) {
		printf("# out not NULL on failure\n");
		*out = NULL;
		rc = KW_EINTERNAL;
	}
	return rc;
}

/* The query parsed as JSON text, or the error as "code field: message". */
static const char *
qtext(const struct kw_route *route, const char *q)
{
	static char buf[512];
	struct json_object *obj;
	struct kw_error err;
	enum kw_err rc;

	if ((rc = query(route, q, &obj, &err)) != KW_OK) {
		snprintf(buf, sizeof(buf), "%d %s: %s", (int)rc, err.field, err.message);
		return buf;
	}
	snprintf(buf, sizeof(buf), "%s", json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
	json_object_put(obj);
	return buf;
}

#define EVALID "2 "	/* KW_EVALID as qtext prints it */
#define EINVAL "1 "

static void
test_query(void)
{
	const struct kw_route *list = &routes[7], *info = &routes[1];

	is_str(qtext(list, NULL), "{}", "query: NULL is no parameters");
	is_str(qtext(list, ""), "{}", "query: empty is no parameters");
	is_str(qtext(list, "page=2&size=-5&return_full_object=TRUE&q=a+b%20c"),
	    "{\"page\":2,\"size\":-5,\"return_full_object\":true,\"q\":\"a b c\"}",
	    "query: integer, boolean and decoded string");
	is_str(qtext(list, "return_full_object=false&&page=1&"),
	    "{\"page\":1,\"return_full_object\":false}", "query: empty pieces skipped");
	is_str(qtext(list, "_=1699999999&page=3&utm_source=x"), "{\"page\":3}",
	    "query: unknown parameters ignored");
	is_str(qtext(list, "ratio=0.5"), "{\"ratio\":0.5}", "query: number");
	is_str(qtext(list, "ratio=7"), "{\"ratio\":7}", "query: integral number");

	is_str(qtext(list, "page=abc"), EVALID "page: must be an integer", "query: integer rejects text");
	is_str(qtext(list, "page=1.5"), EVALID "page: must be an integer", "query: integer rejects 1.5");
	is_str(qtext(list, "page=+1"), EVALID "page: must be an integer", "query: integer rejects '+'");
	is_str(qtext(list, "page=%201"), EVALID "page: must be an integer",
	    "query: integer rejects a space");
	is_str(qtext(list, "page="), EVALID "page: must be an integer", "query: integer rejects empty");
	is_str(qtext(list, "page=0"), EVALID "page: must be >= 1", "query: schema minimum applied");
	is_str(qtext(list, "size=99999999999999999999"), EVALID "size: number out of range",
	    "query: integer beyond int64");
	is_str(qtext(list, "size=9223372036854775806"), "{\"size\":9223372036854775806}",
	    "query: large int64 accepted");
	is_str(qtext(list, "return_full_object=yes"), EVALID "return_full_object: must be a boolean",
	    "query: boolean rejects yes");
	is_str(qtext(list, "ratio=inf"), EVALID "ratio: must be a number", "query: number rejects inf");
	is_str(qtext(list, "ratio=nan"), EVALID "ratio: must be a number", "query: number rejects nan");
	is_str(qtext(list, "ratio=0x10"), EVALID "ratio: must be a number", "query: number rejects hex");
	is_str(qtext(list, "ratio=1e999"), EVALID "ratio: number out of range",
	    "query: number rejects overflow");
	is_str(qtext(list, "q=abcdef"), EVALID "q: must be at most 5 characters",
	    "query: string schema applied");

	is_str(qtext(list, "tags=a,b&tags=c"), "{\"tags\":[\"a\",\"b\",\"c\"]}",
	    "query: array from repeats and commas");
	is_str(qtext(list, "tags=a%2Cb&tags=c+d"), "{\"tags\":[\"a,b\",\"c d\"]}",
	    "query: %2C stays inside an item");
	is_str(qtext(list, "tags="), "{\"tags\":[]}", "query: empty value adds no items");
	is_str(qtext(list, "ids=1,2&ids=3"), "{\"ids\":[1,2,3]}", "query: integer array");
	is_str(qtext(list, "ids=1,2,x"), EVALID "ids[2]: must be an integer",
	    "query: bad item names its index");
	is_str(qtext(list, "ids=1,2,3,4"), EVALID "ids: must have at most 3 items",
	    "query: array schema applied");

	is_str(qtext(list, "page=1&page=2"), EVALID "page: must not be repeated",
	    "query: repeated scalar rejected");

	is_str(qtext(info, "team=abc"), "{\"team\":\"abc\"}", "query: required present");
	is_str(qtext(info, "other=1"), EVALID "team: missing required query parameter",
	    "query: required missing");
	is_str(qtext(info, NULL), EVALID "team: missing required query parameter",
	    "query: required missing from a NULL query");
	is_str(qtext(info, "team=ABC"), EVALID "team: must match the pattern ^[a-z]+$",
	    "query: pattern applied");
	is_str(qtext(info, "key=x&team=abc"), "{\"team\":\"abc\"}", "query: path params not read");

	is_str(qtext(list, "q=%G1"), EINVAL "q: malformed percent-encoding",
	    "query: malformed value escape");
	is_str(qtext(list, "q=%00"), EINVAL "q: must not contain NUL", "query: NUL escape");
	is_str(qtext(list, "q=%ff"), EINVAL "q: must be valid UTF-8", "query: invalid UTF-8");
	is_str(qtext(list, "%G1=1"), EINVAL "query: malformed percent-encoding",
	    "query: malformed name escape");
	is_str(qtext(list, "zzz=%4"), EINVAL "zzz: malformed percent-encoding",
	    "query: malformed even in an unknown parameter");
	is_str(qtext(list, "p%61ge=4"), "{\"page\":4}", "query: names are decoded");
}

int
main(void)
{
	if ((arena = kw_arena_new()) == NULL)
		return 1;
	setup();
	test_decode();
	test_match();
	test_face();
	test_query();
	kw_arena_free(arena);
	return tap_done();
}
