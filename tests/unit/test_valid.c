/* test_valid.c: strict JSON parsing and schema validation (valid.c). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "kw.h"
#include "tap.h"

/* valid.c compiles patterns by index from the generated table; these stand in for it. */
const char *const kw_gen_patterns[] = {
	"^sk-[A-Za-z0-9_-]+$",
	"(",	/* does not compile: a broken spec must not look like a client error */
};
const size_t kw_gen_npatterns = sizeof(kw_gen_patterns) / sizeof(kw_gen_patterns[0]);

/*
 * Schemas are filled in at run time: every "none" is -1, and overriding
 * designated initializers would trip -Woverride-init.
 */
static struct kw_schema s_any, s_string, s_string_null, s_integer, s_number, s_boolean;
static struct kw_schema s_short, s_long2, s_enum, s_bigenum, s_key, s_badpat, s_nopat;
static struct kw_schema s_min0_400, s_key_400, s_min0, s_xmin0, s_max100, s_xmax100, s_minhalf, s_max2p53;
static struct kw_schema s_tags, s_c_obj, s_b_arr, s_a_obj, s_root, s_reject, s_allow, s_addl;

static const char *const abc[] = { "a", "b", "c" };
static const char *big_enum[40];
static char big_enum_buf[40][16];

static const struct kw_prop c_props[] = { { "c", &s_string, 1 } };
static const struct kw_prop a_props[] = { { "b", &s_b_arr, 0 } };
static const struct kw_prop root_props[] = { { "a", &s_a_obj, 0 }, { "name", &s_short, 1 } };
static const struct kw_prop one_prop[] = { { "name", &s_string, 0 } };

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

static void
setup(void)
{
	size_t i;

	s_any = mk(0);
	s_any.additional = KW_ADDL_ALLOW;	/* free-form: REJECT is the zero value */
	s_string = mk(KW_T_STRING);
	s_string_null = mk(KW_T_STRING | KW_T_NULL);
	s_integer = mk(KW_T_INTEGER);
	s_number = mk(KW_T_NUMBER);
	s_boolean = mk(KW_T_BOOLEAN);
	s_short = mk(KW_T_STRING);
	s_short.max_length = 3;
	s_long2 = mk(KW_T_STRING);
	s_long2.min_length = 2;
	s_enum = mk(KW_T_STRING);
	s_enum.enums = abc;
	s_enum.nenums = 3;
	for (i = 0; i < 40; i++) {
		snprintf(big_enum_buf[i], sizeof(big_enum_buf[i]), "value_%02zu", i);
		big_enum[i] = big_enum_buf[i];
	}
	s_bigenum = mk(KW_T_STRING);
	s_bigenum.enums = big_enum;
	s_bigenum.nenums = 40;
	s_key = mk(KW_T_STRING);
	s_key.pattern = 0;
	s_badpat = mk(KW_T_STRING);
	s_badpat.pattern = 1;
	s_nopat = mk(KW_T_STRING);
	s_nopat.pattern = 7;

	s_min0 = mk(KW_T_NUMBER);
	s_min0.flags = KW_S_MIN;
	s_min0_400 = s_min0;	/* x-keywarden-status: 400 */
	s_min0_400.value_err = KW_EINVAL;
	s_key_400 = s_key;
	s_key_400.min_length = 8;
	s_key_400.value_err = KW_EINVAL;
	s_xmin0 = mk(KW_T_NUMBER);
	s_xmin0.flags = KW_S_MIN | KW_S_EXCL_MIN;
	s_max100 = mk(KW_T_INTEGER);
	s_max100.flags = KW_S_MAX;
	s_max100.maximum = 100;
	s_xmax100 = mk(KW_T_INTEGER);
	s_xmax100.flags = KW_S_MAX | KW_S_EXCL_MAX;
	s_xmax100.maximum = 100;
	s_minhalf = mk(KW_T_NUMBER);
	s_minhalf.flags = KW_S_MIN;
	s_minhalf.minimum = 0.5;
	s_max2p53 = mk(KW_T_INTEGER);
	s_max2p53.flags = KW_S_MAX;
	s_max2p53.maximum = 9007199254740992.0;

	s_tags = mk(KW_T_ARRAY);
	s_tags.items = &s_string;
	s_tags.min_items = 1;
	s_tags.max_items = 2;
	s_c_obj = mk(KW_T_OBJECT);
	s_c_obj.props = c_props;
	s_c_obj.nprops = 1;
	s_b_arr = mk(KW_T_ARRAY);
	s_b_arr.items = &s_c_obj;
	s_a_obj = mk(KW_T_OBJECT);
	s_a_obj.props = a_props;
	s_a_obj.nprops = 1;
	s_root = mk(KW_T_OBJECT);
	s_root.props = root_props;
	s_root.nprops = 2;
	s_reject = mk(KW_T_OBJECT);
	s_reject.props = one_prop;
	s_reject.nprops = 1;
	s_allow = s_reject;
	s_allow.additional = KW_ADDL_ALLOW;
	s_addl = s_reject;
	s_addl.additional = KW_ADDL_SCHEMA;
	s_addl.additional_schema = &s_integer;
}

/* Parses n bytes of text; on success the tree is freed, the code returned. */
static enum kw_err
parse_n(const char *text, size_t n, unsigned depth, struct kw_error *err)
{
	struct json_object *obj = (struct json_object *)1;
	enum kw_err rc;

	memset(err, 0, sizeof(*err));
	rc = kw_json_parse(text, n, depth, &obj, err);
	if (rc != KW_OK && obj != NULL) {
		printf("# out not NULL on failure\n");
		rc = KW_EINTERNAL;
	}
	/* only nesting too deep names a field: the top-level one it sits in */
	if (rc != KW_OK && err->field[0] != '\0' &&
	    strncmp(err->message, "JSON nested deeper", 18) != 0) {
		printf("# field set on a parse error\n");
		rc = KW_EINTERNAL;
	}
	json_object_put(obj);
	return rc;
}

#define parse(text, err) parse_n(text, sizeof(text) - 1, 32, err)

/* Parses text (which must be good JSON) and validates it against schema. */
static enum kw_err
vcheck(const struct kw_schema *schema, const char *text, const char *field, struct kw_error *err)
{
	struct json_object *obj = NULL;
	enum kw_err rc;

	memset(err, 0, sizeof(*err));
	if ((rc = kw_json_parse(text, strlen(text), 32, &obj, err)) != KW_OK) {
		printf("# test JSON did not parse: %s\n", err->message);
		return KW_EINTERNAL;
	}
	rc = kw_valid_check(schema, obj, field, err);
	json_object_put(obj);
	return rc;
}

static void
test_utf8(void)
{
	ok(kw_valid_utf8("", 0), "utf8: empty is valid");
	ok(kw_valid_utf8("plain ascii", 11), "utf8: ascii");
	ok(kw_valid_utf8("a\0b", 3), "utf8: NUL is a valid code point");
	ok(kw_valid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9), "utf8: 2, 3 and 4 byte forms");
	ok(kw_valid_utf8("\xf4\x8f\xbf\xbf", 4), "utf8: U+10FFFF accepted");
	ok(kw_valid_utf8("\xed\x9f\xbf\xee\x80\x80", 6), "utf8: U+D7FF and U+E000 accepted");
	ok(!kw_valid_utf8("\xc0\xaf", 2), "utf8: overlong 2-byte rejected");
	ok(!kw_valid_utf8("\xc1\xbf", 2), "utf8: overlong C1 rejected");
	ok(!kw_valid_utf8("\xe0\x80\xaf", 3), "utf8: overlong 3-byte rejected");
	ok(!kw_valid_utf8("\xf0\x80\x80\xaf", 4), "utf8: overlong 4-byte rejected");
	ok(!kw_valid_utf8("\xed\xa0\x80", 3), "utf8: surrogate U+D800 rejected");
	ok(!kw_valid_utf8("\xed\xbf\xbf", 3), "utf8: surrogate U+DFFF rejected");
	ok(!kw_valid_utf8("\xf4\x90\x80\x80", 4), "utf8: U+110000 rejected");
	ok(!kw_valid_utf8("\xf5\x80\x80\x80", 4), "utf8: F5 lead rejected");
	ok(!kw_valid_utf8("\xe2\x82", 2), "utf8: truncated sequence rejected");
	ok(!kw_valid_utf8("\xe2\x82z", 3), "utf8: bad continuation rejected");
	ok(!kw_valid_utf8("\x80", 1), "utf8: lone continuation rejected");
	ok(!kw_valid_utf8("\xff", 1), "utf8: FF rejected");
}

static void
test_error_set(void)
{
	struct kw_error err;
	char longf[200];

	kw_error_set(&err, KW_EVALID, NULL, "must be %s", "x");
	is_int(err.code, KW_EVALID, "error_set: code");
	is_str(err.field, "", "error_set: NULL field is empty");
	is_str(err.message, "must be x", "error_set: message formatted");
	memset(longf, 'a', sizeof(longf) - 1);
	longf[sizeof(longf) - 1] = '\0';
	kw_error_set(&err, KW_EVALID, longf, "m");
	is_int(strlen(err.field), KW_FIELD_MAX - 1, "error_set: long field truncated");
	memset(longf, 'a', 126);
	memcpy(longf + 126, "\xc3\xa9", 3);
	kw_error_set(&err, KW_EVALID, longf, "m");
	ok(strlen(err.field) == 126 && kw_valid_utf8(err.field, strlen(err.field)),
	    "error_set: truncation never splits a UTF-8 character");
	kw_error_set(NULL, KW_EVALID, "x", "y");
	ok(1, "error_set: NULL err is a no-op");
}

static void
test_parse(void)
{
	struct kw_error err;
	struct json_object *obj;
	char deep[200];
	int i;

	is_int(parse("{\"a\":1}", &err), KW_OK, "parse: object");
	is_int(parse(" \t\r\n[1, 2.5, \"x\", true, false, null, {}] \n", &err), KW_OK,
	    "parse: JSON whitespace around and inside");
	is_int(parse("[1,2,]", &err), KW_EINVAL, "parse: trailing comma in array");
	is_str(err.message, "invalid JSON at byte 5: unexpected character",
	    "parse: message names the byte");
	is_int(parse("{\"a\":1,}", &err), KW_EINVAL, "parse: trailing comma in object");
	is_int(parse("{'a':1}", &err), KW_EINVAL, "parse: single-quoted name (json-c strict takes it)");
	is_int(parse("['a']", &err), KW_EINVAL, "parse: single-quoted string");
	is_int(parse("{a:1}", &err), KW_EINVAL, "parse: bare name");
	is_int(parse("/*c*/1", &err), KW_EINVAL, "parse: block comment");
	is_int(parse("[1]//x", &err), KW_EINVAL, "parse: line comment");
	is_int(parse("NaN", &err), KW_EINVAL, "parse: NaN");
	is_int(parse("[Infinity]", &err), KW_EINVAL, "parse: Infinity");
	is_int(parse("[-Infinity]", &err), KW_EINVAL, "parse: -Infinity");
	is_int(parse("[1] x", &err), KW_EINVAL, "parse: trailing garbage");
	is_str(err.message, "invalid JSON at byte 4: unexpected content after the value",
	    "parse: trailing garbage offset");
	is_int(parse("{}{}", &err), KW_EINVAL, "parse: two values");
	is_int(parse("12 3", &err), KW_EINVAL, "parse: two scalars");
	is_int(parse("", &err), KW_EINVAL, "parse: empty body");
	is_str(err.message, "empty body", "parse: empty body message");
	is_int(parse("  \n", &err), KW_EINVAL, "parse: whitespace-only body");
	is_int(parse("[1,", &err), KW_EINVAL, "parse: truncated body");
	is_int(parse("\"abc", &err), KW_EINVAL, "parse: unterminated string");

	for (i = 0; i < 32; i++) {
		deep[i] = '[';
		deep[32 + i] = ']';
	}
	is_int(parse_n(deep, 64, 32, &err), KW_OK, "parse: depth exactly at the limit");
	for (i = 0; i < 33; i++) {
		deep[i] = '[';
		deep[33 + i] = ']';
	}
	is_int(parse_n(deep, 66, 32, &err), KW_EINVAL, "parse: depth one over the limit");
	is_str(err.message, "JSON nested deeper than 32 levels", "parse: depth message");
	is_int(parse_n("{\"a\":{\"b\":1}}", 13, 2, &err), KW_OK, "parse: objects at the limit");
	is_int(parse_n("{\"a\":{\"b\":[]}}", 14, 2, &err), KW_EINVAL, "parse: objects over the limit");
	is_str(err.field, "a", "parse: too deep names the top-level field it sits in");
	is_int(parse("{\"x\":[1],\"m\\u0065ta\":" "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
	    &err), KW_EINVAL, "parse: a field's value over the limit");
	is_str(err.field, "meta", "parse: the field is named decoded, not as escaped");
	is_int(parse_n(deep, 66, 32, &err), KW_EINVAL, "parse: a top-level array over the limit");
	is_str(err.field, "", "parse: ... names no field");
	is_int(parse_n("7", 1, 0, &err), KW_OK, "parse: depth 0 still takes a scalar");
	is_int(parse_n("[]", 2, 0, &err), KW_EINVAL, "parse: depth 0 refuses a container");

	is_int(parse("\"ab\xff\"", &err), KW_EINVAL, "parse: raw invalid UTF-8");
	is_str(err.message, "invalid UTF-8 at byte 3", "parse: UTF-8 offset");
	is_int(parse("[\"\xc0\xaf\"]", &err), KW_EINVAL, "parse: overlong encoding (json-c takes it)");
	is_int(parse("[\"\xed\xa0\x80\"]", &err), KW_EINVAL, "parse: encoded surrogate");
	is_int(parse("[\"\xe2\x82\"]", &err), KW_EINVAL, "parse: truncated sequence");
	is_int(parse("[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]", &err), KW_OK,
	    "parse: well-formed multi-byte text");
	is_int(parse("\xef\xbb\xbf[1]", &err), KW_EINVAL, "parse: byte order mark");

	is_int(parse("[1]\0", &err), KW_EINVAL, "parse: NUL after the value is not an end");
	is_str(err.message, "invalid JSON at byte 3: NUL byte", "parse: NUL offset");
	is_int(parse("[\"a\0b\"]", &err), KW_EINVAL, "parse: NUL inside a string");
	is_int(parse("[\"\x01\"]", &err), KW_EINVAL, "parse: raw control character in a string");
	is_int(parse("[\"\t\"]", &err), KW_EINVAL, "parse: raw tab in a string");
	is_int(parse("[\"\\u0001\\t\\n\\\"\\\\\\/\\b\\f\\r\"]", &err), KW_OK, "parse: every escape");
	is_int(parse("[\"\\x\"]", &err), KW_EINVAL, "parse: unknown escape");
	is_int(parse("[\"\\u12G4\"]", &err), KW_EINVAL, "parse: bad \\u escape");
	is_int(parse("[\"\\ud800\"]", &err), KW_EINVAL, "parse: unpaired high surrogate escape");
	is_int(parse("[\"\\udc00\"]", &err), KW_EINVAL, "parse: lone low surrogate escape");
	is_int(parse("[\"\\ud83d\\ude00\"]", &err), KW_OK, "parse: surrogate pair escape");
	is_int(parse("{\"a\\u0000b\":1}", &err), KW_EINVAL, "parse: \\u0000 in a field name");
	is_int(parse("{\"a\":\"x\\u0000y\"}", &err), KW_OK,
	    "parse: \\u0000 in a value is left to the validator");

	is_int(parse("[01]", &err), KW_EINVAL, "parse: leading zero");
	is_int(parse("[1.]", &err), KW_EINVAL, "parse: '1.' (json-c takes it)");
	is_int(parse("[.5]", &err), KW_EINVAL, "parse: '.5'");
	is_int(parse("[+1]", &err), KW_EINVAL, "parse: '+1'");
	is_int(parse("[-]", &err), KW_EINVAL, "parse: lone minus");
	is_int(parse("[1e]", &err), KW_EINVAL, "parse: empty exponent");
	is_int(parse("[-0, 0.5, 1e5, 1E+2, -3.25e-7]", &err), KW_OK, "parse: number forms");
	is_int(parse("[1e999]", &err), KW_EINVAL, "parse: 1e999 overflows a double");
	is_str(err.message, "invalid JSON at byte 1: number out of range", "parse: overflow message");
	is_int(parse("[-1e400]", &err), KW_EINVAL, "parse: -1e400 overflows");
	is_int(parse("[1.7976931348623157e308, 1e-999, 0e999, 0.000e400]", &err), KW_OK,
	    "parse: DBL_MAX, underflow and zeros are fine");
	is_int(parse("[1.7976931348623159e308]", &err), KW_EINVAL, "parse: just past DBL_MAX");
	is_int(parse("[1797693134862315807937289714053034150799341327100378269361737789804449682927"
	    "6475094664901797758720709633028641669288791094655554785194040263065748867150"
	    "5820681908902000708383676273854845817711531764475730270069855571366959622842"
	    "914819860834936475292719074168444365510704342711559699508093042880177904174497791]",
	    &err), KW_OK, "parse: one below the overflow threshold");
	is_int(parse("[1797693134862315807937289714053034150799341327100378269361737789804449682927"
	    "6475094664901797758720709633028641669288791094655554785194040263065748867150"
	    "5820681908902000708383676273854845817711531764475730270069855571366959622842"
	    "914819860834936475292719074168444365510704342711559699508093042880177904174497792]",
	    &err), KW_EINVAL, "parse: exactly the overflow threshold");

	is_int(parse("123", &err), KW_OK, "parse: top-level number");
	is_int(parse("true", &err), KW_OK, "parse: top-level literal");
	is_int(parse("tru", &err), KW_EINVAL, "parse: truncated literal");
	is_int(parse("TRUE", &err), KW_EINVAL, "parse: literals are lower case");
	obj = (struct json_object *)1;
	is_int(kw_json_parse("null", 4, 32, &obj, &err), KW_OK, "parse: top-level null");
	ok(obj == NULL, "parse: null body gives a NULL tree");
	is_int(kw_json_parse("[1] junk", 3, 32, &obj, &err), KW_OK, "parse: exactly n bytes are read");
	is_int(json_object_array_length(obj), 1, "parse: tree from the first n bytes");
	json_object_put(obj);
}

static void
test_types(void)
{
	struct kw_error err;

	is_int(vcheck(&s_string, "\"x\"", NULL, &err), KW_OK, "type: string accepted");
	is_int(vcheck(&s_string, "1", NULL, &err), KW_EVALID, "type: number is not a string");
	is_str(err.message, "must be a string", "type: message");
	is_str(err.field, "", "type: top-level field is empty");
	is_int(vcheck(&s_string, "null", "body", &err), KW_EVALID, "type: null is not a string");
	is_str(err.field, "body", "type: the given field is used");
	is_int(vcheck(&s_string_null, "null", NULL, &err), KW_OK, "type: nullable accepts null");
	is_int(vcheck(&s_string_null, "[]", NULL, &err), KW_EVALID, "type: nullable rejects array");
	is_str(err.message, "must be a string or null", "type: two-type message");
	is_int(vcheck(&s_any, "{\"x\":[1]}", NULL, &err), KW_OK, "type: mask 0 accepts an object");
	is_int(vcheck(&s_any, "null", NULL, &err), KW_OK, "type: mask 0 accepts null");
	is_int(vcheck(NULL, "{\"x\":1}", NULL, &err), KW_OK, "type: NULL schema accepts anything");
	is_int(vcheck(&s_boolean, "true", NULL, &err), KW_OK, "type: boolean accepted");
	is_int(vcheck(&s_boolean, "\"true\"", NULL, &err), KW_EVALID, "type: string is not a boolean");
	is_str(err.message, "must be a boolean", "type: boolean message");

	is_int(vcheck(&s_integer, "1", NULL, &err), KW_OK, "integer: 1");
	is_int(vcheck(&s_integer, "1.0", NULL, &err), KW_OK, "integer: 1.0 is integral");
	is_int(vcheck(&s_integer, "-4e3", NULL, &err), KW_OK, "integer: -4e3 is integral");
	is_int(vcheck(&s_integer, "1.5", NULL, &err), KW_EVALID, "integer: 1.5 rejected");
	is_str(err.message, "must be an integer", "integer: message");
	is_int(vcheck(&s_integer, "9007199254740991.0", NULL, &err), KW_OK,
	    "integer: 2^53-1 as a double");
	is_int(vcheck(&s_integer, "9007199254740992.0", NULL, &err), KW_EVALID,
	    "integer: 2^53 as a double rejected");
	is_str(err.message, "number out of range", "integer: big double message");
	is_int(vcheck(&s_integer, "9223372036854775806", NULL, &err), KW_OK,
	    "integer: INT64_MAX-1 accepted");
	is_int(vcheck(&s_integer, "99999999999999999999", NULL, &err), KW_EVALID,
	    "integer: 99999999999999999999 (clamped by json-c) rejected");
	is_str(err.message, "number out of range", "integer: clamped message");
	is_int(vcheck(&s_integer, "-99999999999999999999", NULL, &err), KW_EVALID,
	    "integer: negative clamp rejected");
	is_int(vcheck(&s_integer, "9223372036854775808", NULL, &err), KW_EVALID,
	    "integer: uint64 above INT64_MAX rejected");
	is_int(vcheck(&s_number, "99999999999999999999", NULL, &err), KW_EVALID,
	    "number: clamped integer rejected too");
	is_int(vcheck(&s_number, "1.5", NULL, &err), KW_OK, "number: 1.5");
	is_int(vcheck(&s_number, "7", NULL, &err), KW_OK, "number: integers are numbers");
	is_int(vcheck(&s_number, "\"7\"", NULL, &err), KW_EVALID, "number: string rejected");
	is_str(err.message, "must be a number", "number: message");
}

static void
test_bounds(void)
{
	struct kw_error err;

	is_int(vcheck(&s_min0, "0", NULL, &err), KW_OK, "min: 0 >= 0");
	is_int(vcheck(&s_min0, "-1", NULL, &err), KW_EVALID, "min: -1 rejected");
	is_str(err.message, "must be >= 0", "min: message");
	is_int(vcheck(&s_min0, "-0.001", NULL, &err), KW_EVALID, "min: -0.001 rejected");
	is_int(vcheck(&s_xmin0, "0.001", NULL, &err), KW_OK, "exclusive min: 0.001");
	is_int(vcheck(&s_xmin0, "0", NULL, &err), KW_EVALID, "exclusive min: 0 rejected");
	is_str(err.message, "must be > 0", "exclusive min: message");
	is_int(vcheck(&s_max100, "100", NULL, &err), KW_OK, "max: 100 <= 100");
	is_int(vcheck(&s_max100, "101", NULL, &err), KW_EVALID, "max: 101 rejected");
	is_str(err.message, "must be <= 100", "max: message");
	is_int(vcheck(&s_xmax100, "99", NULL, &err), KW_OK, "exclusive max: 99");
	is_int(vcheck(&s_xmax100, "100", NULL, &err), KW_EVALID, "exclusive max: 100 rejected");
	is_str(err.message, "must be < 100", "exclusive max: message");
	is_int(vcheck(&s_minhalf, "1", NULL, &err), KW_OK, "fractional min: integer 1");
	is_int(vcheck(&s_minhalf, "0", NULL, &err), KW_EVALID, "fractional min: integer 0 rejected");
	is_str(err.message, "must be >= 0.5", "fractional min: message");
	is_int(vcheck(&s_minhalf, "0.4", NULL, &err), KW_EVALID, "fractional min: 0.4 rejected");
	is_int(vcheck(&s_max2p53, "9007199254740992", NULL, &err), KW_OK, "exact max: 2^53");
	is_int(vcheck(&s_max2p53, "9007199254740993", NULL, &err), KW_EVALID,
	    "exact max: 2^53+1 rejected (equal as doubles)");

	/* LiteLLM's handlers refuse these values (400), its request models the types (422) */
	is_int(vcheck(&s_min0_400, "-1", "max_budget", &err), KW_EINVAL,
	    "value_err: a broken bound is the schema's KW_EINVAL (generate_key_fn)");
	is_str(err.field, "max_budget", "value_err: names the field");
	is_str(err.message, "must be >= 0", "value_err: same message");
	is_int(vcheck(&s_min0_400, "\"-1\"", NULL, &err), KW_EVALID,
	    "value_err: a wrong type stays KW_EVALID");
	is_int(vcheck(&s_min0_400, "0", NULL, &err), KW_OK, "value_err: a good value passes");
	is_int(vcheck(&s_key_400, "\"pk-abcdefgh\"", "key", &err), KW_EINVAL,
	    "value_err: a broken pattern is KW_EINVAL (_common_key_generation_helper)");
	is_int(vcheck(&s_key_400, "\"ab\"", "key", &err), KW_EINVAL,
	    "value_err: a broken length is KW_EINVAL");
	is_int(vcheck(&s_key_400, "7", "key", &err), KW_EVALID,
	    "value_err: a number for a string stays KW_EVALID");
}

static void
test_strings(void)
{
	struct kw_error err;
	char msg[KW_MESSAGE_MAX];

	is_int(vcheck(&s_short, "\"\xc3\xa9\xc3\xa0\xc3\xbc\"", NULL, &err), KW_OK,
	    "length: 3 two-byte characters fit maxLength 3");
	is_int(vcheck(&s_short, "\"\xc3\xa9\xc3\xa0\xc3\xbco\"", NULL, &err), KW_EVALID,
	    "length: 4 characters over maxLength 3");
	is_str(err.message, "must be at most 3 characters", "length: max message");
	is_int(vcheck(&s_short, "\"\\ud83d\\ude00ab\"", NULL, &err), KW_OK,
	    "length: an escaped pair is one character");
	is_int(vcheck(&s_long2, "\"ab\"", NULL, &err), KW_OK, "length: minLength 2 met");
	is_int(vcheck(&s_long2, "\"\xc3\xa9\"", NULL, &err), KW_EVALID,
	    "length: one 2-byte character under minLength 2");
	is_str(err.message, "must be at least 2 characters", "length: min message");
	is_int(vcheck(&s_string, "\"x\\u0000y\"", NULL, &err), KW_EVALID, "string: \\u0000 rejected");
	is_str(err.message, "must not contain NUL characters", "string: NUL message");
	is_int(vcheck(&s_any, "\"x\\u0000y\"", NULL, &err), KW_EVALID,
	    "string: \\u0000 rejected under any-type schema too");

	is_int(vcheck(&s_enum, "\"b\"", NULL, &err), KW_OK, "enum: member");
	is_int(vcheck(&s_enum, "\"d\"", NULL, &err), KW_EVALID, "enum: non-member");
	is_str(err.message, "must be one of: a, b, c", "enum: message");
	is_int(vcheck(&s_enum, "\"ab\"", NULL, &err), KW_EVALID, "enum: no prefix matching");
	is_int(vcheck(&s_enum, "\"B\"", NULL, &err), KW_EVALID, "enum: exact case");
	is_int(vcheck(&s_bigenum, "\"value_39\"", NULL, &err), KW_OK, "enum: last of many");
	is_int(vcheck(&s_bigenum, "\"nope\"", NULL, &err), KW_EVALID, "enum: long list rejected");
	strcpy(msg, err.message);
	ok(strlen(msg) < KW_MESSAGE_MAX && strncmp(msg, "must be one of: value_00, ", 26) == 0 &&
	    strcmp(msg + strlen(msg) - 5, ", ...") == 0, "enum: long list cut with \", ...\"");

	is_int(vcheck(&s_key, "\"sk-abc_D-1\"", NULL, &err), KW_OK, "pattern: match");
	is_int(vcheck(&s_key, "\"sk-SECRETVALUE!\"", NULL, &err), KW_EVALID, "pattern: no match");
	is_str(err.message, "must match the pattern ^sk-[A-Za-z0-9_-]+$", "pattern: message");
	ok(strstr(err.message, "SECRETVALUE") == NULL, "pattern: the value is never echoed");
	is_int(vcheck(&s_key, "\"xsk-abc\"", NULL, &err), KW_EVALID, "pattern: anchored");
	is_int(vcheck(&s_key, "\"sk-\"", NULL, &err), KW_EVALID, "pattern: needs one character");
	is_int(vcheck(&s_key, "\"sk-abc\"", NULL, &err), KW_OK, "pattern: cached regex reused");
	is_int(vcheck(&s_badpat, "\"x\"", NULL, &err), KW_EINTERNAL,
	    "pattern: uncompilable pattern is an internal error");
	is_int(vcheck(&s_nopat, "\"x\"", NULL, &err), KW_EINTERNAL,
	    "pattern: out-of-range index is an internal error");
	is_int(vcheck(&s_short, "\"sk-SECRET\"", NULL, &err), KW_EVALID, "secret: too long");
	ok(strstr(err.message, "SECRET") == NULL, "secret: length message does not echo the value");
}

static void
test_containers(void)
{
	struct kw_error err;

	is_int(vcheck(&s_tags, "[\"a\"]", NULL, &err), KW_OK, "array: one item");
	is_int(vcheck(&s_tags, "[]", NULL, &err), KW_EVALID, "array: minItems");
	is_str(err.message, "must have at least 1 item", "array: min message");
	is_int(vcheck(&s_tags, "[\"a\",\"b\",\"c\"]", NULL, &err), KW_EVALID, "array: maxItems");
	is_str(err.message, "must have at most 2 items", "array: max message");
	is_int(vcheck(&s_tags, "[\"a\",3]", "tags", &err), KW_EVALID, "array: bad item");
	is_str(err.field, "tags[1]", "array: item field");

	is_int(vcheck(&s_root, "{\"name\":\"x\",\"a\":{\"b\":[{\"c\":\"1\"},{\"c\":\"2\"}]}}", NULL, &err),
	    KW_OK, "object: nested document accepted");
	is_int(vcheck(&s_root, "{\"name\":\"x\",\"a\":{\"b\":[{\"c\":\"1\"},{\"c\":\"2\"},{}]}}", NULL,
	    &err), KW_EVALID, "object: nested required missing");
	is_str(err.field, "a.b[2].c", "object: dotted path");
	is_str(err.message, "missing required field", "object: required message");
	is_int(vcheck(&s_root, "{\"name\":\"x\",\"a\":{\"b\":[{\"c\":\"1\"},{\"c\":\"2\"},{\"c\":5}]}}",
	    "body", &err), KW_EVALID, "object: nested type error");
	is_str(err.field, "body.a.b[2].c", "object: path under a given field");
	is_str(err.message, "must be a string", "object: nested type message");
	is_int(vcheck(&s_root, "{\"a\":{}}", "", &err), KW_EVALID, "object: top-level required");
	is_str(err.field, "name", "object: top-level field is just the name");
	is_int(vcheck(&s_root, "[]", NULL, &err), KW_EVALID, "object: array is not an object");
	is_str(err.message, "must be an object", "object: type message");

	is_int(vcheck(&s_reject, "{\"name\":\"x\"}", NULL, &err), KW_OK, "reject: known field");
	is_int(vcheck(&s_reject, "{\"name\":\"x\",\"nmae\":\"y\"}", NULL, &err), KW_EVALID,
	    "reject: unknown field");
	is_str(err.field, "nmae", "reject: names the unknown field");
	is_str(err.message, "unknown field", "reject: message");
	is_int(vcheck(&s_root, "{\"nmae\":\"x\"}", NULL, &err), KW_EVALID,
	    "reject: misspelt field beats missing required");
	is_str(err.field, "nmae", "reject: misspelling named");
	is_int(vcheck(&s_root, "{\"name\":\"x\",\"a\":{\"zz\":1}}", NULL, &err), KW_EVALID,
	    "reject: nested unknown field");
	is_str(err.field, "a.zz", "reject: nested unknown path");
	is_int(vcheck(&s_allow, "{\"name\":\"x\",\"extra\":{\"deep\":[1e5]}}", NULL, &err), KW_OK,
	    "allow: unknown field passes");
	is_int(vcheck(&s_allow, "{\"name\":1}", NULL, &err), KW_EVALID, "allow: known fields still checked");
	is_int(vcheck(&s_addl, "{\"name\":\"x\",\"n\":1,\"m\":2}", NULL, &err), KW_OK,
	    "additional schema: matching values");
	is_int(vcheck(&s_addl, "{\"name\":\"x\",\"n\":1,\"m\":\"two\"}", "meta", &err), KW_EVALID,
	    "additional schema: mismatching value");
	is_str(err.field, "meta.m", "additional schema: field");
	is_str(err.message, "must be an integer", "additional schema: message");
}

int
main(void)
{
	setup();
	test_utf8();
	test_error_set();
	test_parse();
	test_types();
	test_bounds();
	test_strings();
	test_containers();
	return tap_done();
}
