/* valid.c: strict JSON parsing and validation of request values against the generated schemas. */
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "kw.h"

/*
 * The parser's container stack is a bit per level (1 = object), so it needs no
 * allocation; deeper limits than this are clamped, far beyond any real body.
 */
#define SCAN_MAX_DEPTH 4096

/* 2^53: beyond it a double no longer holds every integer exactly. */
#define EXACT_INT_LIMIT 9007199254740992.0

/*
 * Rounds a finite double down to an integer without libm (the build links
 * only json-c).  Every double of magnitude 2^52 or more is already integral,
 * and anything smaller fits int64.
 */
static double
floor_i64(double d)
{
	int64_t i;

	if (fabs(d) >= 4503599627370496.0)
		return d;
	i = (int64_t)d;
	if ((double)i > d)
		i--;
	return (double)i;
}

static int
is_integral(double d)
{
	return isfinite(d) && floor_i64(d) == d;
}

/*
 * 2^1024 - 2^970, the smallest value strtod rounds to infinity, as its 309
 * decimal digits.  A JSON number whose digits reach it would become inf in
 * json-c, so the scanner rejects it exactly, without calling the
 * locale-dependent strtod.
 */
static const char dbl_overflow[] =
    "1797693134862315807937289714053034150799341327100378269361737789804449682927"
    "6475094664901797758720709633028641669288791094655554785194040263065748867150"
    "5820681908902000708383676273854845817711531764475730270069855571366959622842"
    "914819860834936475292719074168444365510704342711559699508093042880177904174497792";

/*
 * Drops a multi-byte UTF-8 sequence cut short at the end of the len bytes in
 * s, so a truncated field or message is still valid UTF-8 when a face
 * renders it as JSON.
 */
static void
utf8_trim_tail(char *s, size_t len)
{
	size_t i = len, need;
	unsigned char lead;

	while (i > 0 && len - i < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
		i--;
	if (i == 0)
		return;
	lead = (unsigned char)s[i - 1];
	if (lead < 0x80)
		return;
	need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
	if (len - (i - 1) < need)
		s[i - 1] = '\0';
}

/* snprintf into a fixed buffer that never ends in half a character. */
static void
bounded_printf(char *dst, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
bounded_printf(char *dst, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(dst, size, fmt, ap);
	va_end(ap);
	if (n < 0)
		dst[0] = '\0';
	else if ((size_t)n >= size)
		utf8_trim_tail(dst, size - 1);
}

/*
 * Fills *err (which may be NULL, in which case nothing happens): code, field
 * (NULL means none; truncated to fit), no type of its own, and a
 * printf-formatted message.  The
 * caller must not format a secret or a client-sent value into the message.
 */
void
kw_error_set(struct kw_error *err, enum kw_err code, const char *field, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (err == NULL)
		return;
	err->code = code;
	err->type = NULL;
	bounded_printf(err->field, sizeof(err->field), "%s", field != NULL ? field : "");
	va_start(ap, fmt);
	n = vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	if (n < 0)
		err->message[0] = '\0';
	else if ((size_t)n >= sizeof(err->message))
		utf8_trim_tail(err->message, sizeof(err->message) - 1);
}

/*
 * Returns n when s[0..n) is well-formed UTF-8 (RFC 3629: no overlong forms,
 * no surrogates, nothing above U+10FFFF), else the offset of the first byte
 * of the first bad or truncated sequence.
 */
static size_t
utf8_bad_offset(const unsigned char *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		unsigned char lo = 0x80, hi = 0xBF;
		size_t len, k;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			len = 2;
		else if (c >= 0xE0 && c <= 0xEF) {
			len = 3;
			if (c == 0xE0)
				lo = 0xA0;	/* overlong */
			else if (c == 0xED)
				hi = 0x9F;	/* surrogates */
		} else if (c >= 0xF0 && c <= 0xF4) {
			len = 4;
			if (c == 0xF0)
				lo = 0x90;	/* overlong */
			else if (c == 0xF4)
				hi = 0x8F;	/* above U+10FFFF */
		} else
			return i;	/* continuation byte, C0/C1 overlong, F5..FF */
		if (n - i < len)
			return i;
		if (s[i + 1] < lo || s[i + 1] > hi)
			return i;
		for (k = 2; k < len; k++)
			if ((s[i + k] & 0xC0) != 0x80)
				return i;
		i += len;
	}
	return n;
}

/* Returns 1 when s[0..n) is well-formed UTF-8, else 0.  s may hold NULs. */
int
kw_valid_utf8(const char *s, size_t n)
{
	return utf8_bad_offset((const unsigned char *)s, n) == n;
}

/* Counts code points in well-formed UTF-8: every byte that is not a continuation. */
static size_t
utf8_length(const char *s, size_t n)
{
	size_t i, count = 0;

	for (i = 0; i < n; i++)
		if (((unsigned char)s[i] & 0xC0) != 0x80)
			count++;
	return count;
}

/* True when s is a request id the service can settle: see KW_REQUEST_ID_MAX. */
int
kw_valid_request_id(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= KW_REQUEST_ID_BYTES && kw_valid_utf8(s, n) &&
	    utf8_length(s, n) <= KW_REQUEST_ID_MAX;
}

/* --- strict JSON syntax -------------------------------------------- */

/*
 * json-c 0.16's strict mode still accepts single-quoted field names, NaN and
 * Infinity, "1.", raw control characters inside strings, unpaired surrogate
 * escapes (silently turned into U+FFFD) and "\u0000" in field names (which
 * truncates the key, so {"a\u0000x":1} would reach the validator as "a").
 * So every body is first checked against the RFC 8259 grammar here, and
 * json-c only builds the tree of a body already known to be good.
 */
struct scan {
	const unsigned char *s;
	size_t n, i;
	const char *why;	/* static reason, set on failure */
	int too_deep;
	size_t top_at, top_len;	/* the quoted top-level field name last seen; top_len 0: none */
};

static int
scan_fail(struct scan *sc, const char *why)
{
	sc->why = why;
	return 0;
}

static void
scan_ws(struct scan *sc)
{
	while (sc->i < sc->n && (sc->s[sc->i] == ' ' || sc->s[sc->i] == '\t' ||
	    sc->s[sc->i] == '\n' || sc->s[sc->i] == '\r'))
		sc->i++;
}

static int
hex4(const unsigned char *p, unsigned *out)
{
	unsigned v = 0;
	int k;

	for (k = 0; k < 4; k++) {
		unsigned c = p[k];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return 0;
	}
	*out = v;
	return 1;
}

/* One string starting at the opening quote; the bytes are already valid UTF-8. */
static int
scan_string(struct scan *sc, int is_key)
{
	unsigned cp, lo;

	sc->i++;
	for (;;) {
		unsigned char c;

		if (sc->i >= sc->n)
			return scan_fail(sc, "unterminated string");
		c = sc->s[sc->i];
		if (c == '"') {
			sc->i++;
			return 1;
		}
		if (c < 0x20)
			return scan_fail(sc, "control character in string");
		if (c != '\\') {
			sc->i++;
			continue;
		}
		if (sc->i + 1 >= sc->n)
			return scan_fail(sc, "unterminated string");
		switch (sc->s[sc->i + 1]) {
		case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
			sc->i += 2;
			continue;
		case 'u':
			break;
		default:
			return scan_fail(sc, "invalid escape");
		}
		if (sc->n - sc->i < 6 || !hex4(sc->s + sc->i + 2, &cp))
			return scan_fail(sc, "invalid \\u escape");
		if (cp == 0 && is_key)
			return scan_fail(sc, "\\u0000 in a field name");
		if (cp >= 0xDC00 && cp <= 0xDFFF)
			return scan_fail(sc, "unpaired surrogate escape");
		if (cp >= 0xD800 && cp <= 0xDBFF) {
			if (sc->n - sc->i < 12 || sc->s[sc->i + 6] != '\\' ||
			    sc->s[sc->i + 7] != 'u' || !hex4(sc->s + sc->i + 8, &lo) ||
			    lo < 0xDC00 || lo > 0xDFFF)
				return scan_fail(sc, "unpaired surrogate escape");
			sc->i += 6;
		}
		sc->i += 6;
	}
}

/*
 * Reports whether the number whose significant digits are int_digits then
 * frac_digits (either may be empty), with the first nonzero digit at decimal
 * exponent 308, is at least dbl_overflow.
 */
static int
overflows_double(const unsigned char *int_digits, size_t nint, const unsigned char *frac_digits,
    size_t nfrac)
{
	size_t k = 0, i;
	int started = 0;

	for (i = 0; i < nint + nfrac; i++) {
		unsigned char d = i < nint ? int_digits[i] : frac_digits[i - nint];

		if (!started && d == '0')
			continue;
		started = 1;
		if (k == sizeof(dbl_overflow) - 1)
			return 1;	/* all 309 digits equal: value >= threshold */
		if (d != (unsigned char)dbl_overflow[k])
			return d > (unsigned char)dbl_overflow[k];
		k++;
	}
	return k == sizeof(dbl_overflow) - 1;
}

/* One number per RFC 8259, rejecting magnitudes a double cannot hold. */
static int
scan_number(struct scan *sc)
{
	const unsigned char *s = sc->s;
	size_t int_start, int_end, frac_start = 0, frac_end = 0, k;
	long long exp = 0, lead;
	int exp_neg = 0;

	if (s[sc->i] == '-')
		sc->i++;
	int_start = sc->i;
	if (sc->i >= sc->n || s[sc->i] < '0' || s[sc->i] > '9')
		return scan_fail(sc, "invalid number");
	if (s[sc->i] == '0') {
		sc->i++;
		if (sc->i < sc->n && s[sc->i] >= '0' && s[sc->i] <= '9')
			return scan_fail(sc, "leading zero in number");
	} else
		while (sc->i < sc->n && s[sc->i] >= '0' && s[sc->i] <= '9')
			sc->i++;
	int_end = sc->i;
	if (sc->i < sc->n && s[sc->i] == '.') {
		frac_start = ++sc->i;
		while (sc->i < sc->n && s[sc->i] >= '0' && s[sc->i] <= '9')
			sc->i++;
		frac_end = sc->i;
		if (frac_end == frac_start)
			return scan_fail(sc, "invalid number");
	}
	if (sc->i < sc->n && (s[sc->i] == 'e' || s[sc->i] == 'E')) {
		size_t digits;

		sc->i++;
		if (sc->i < sc->n && (s[sc->i] == '+' || s[sc->i] == '-'))
			exp_neg = s[sc->i++] == '-';
		digits = sc->i;
		while (sc->i < sc->n && s[sc->i] >= '0' && s[sc->i] <= '9') {
			/* Saturate: only the order of magnitude matters. */
			if (exp < 1000000000LL)
				exp = exp * 10 + (s[sc->i] - '0');
			sc->i++;
		}
		if (sc->i == digits)
			return scan_fail(sc, "invalid number");
		if (exp_neg)
			exp = -exp;
	}

	/* Decimal exponent of the first nonzero digit; zero never overflows. */
	for (k = int_start; k < int_end && s[k] == '0'; k++)
		;
	if (k < int_end)
		lead = (long long)(int_end - k) - 1 + exp;
	else {
		for (k = frac_start; k < frac_end && s[k] == '0'; k++)
			;
		if (k >= frac_end)
			return 1;
		lead = -(long long)(k - frac_start) - 1 + exp;
	}
	if (lead > 308 || (lead == 308 && overflows_double(s + int_start, int_end - int_start,
	    s + frac_start, frac_end - frac_start))) {
		sc->i = int_start;
		return scan_fail(sc, "number out of range");
	}
	return 1;
}

static int
scan_literal(struct scan *sc, const char *word)
{
	size_t len = strlen(word);

	if (sc->n - sc->i < len || memcmp(sc->s + sc->i, word, len) != 0)
		return scan_fail(sc, "unexpected character");
	sc->i += len;
	return 1;
}

/*
 * Checks s[0..n) against the JSON grammar with at most max_depth nested
 * containers.  Returns 1, or 0 with sc->i at the offending byte and sc->why
 * (or sc->too_deep) set.
 */
static int
scan_json(struct scan *sc, unsigned max_depth)
{
	uint64_t stack[SCAN_MAX_DEPTH / 64];
	unsigned depth = 0;
	enum { VALUE, KEY, AFTER } state = VALUE;

	if (max_depth > SCAN_MAX_DEPTH)
		max_depth = SCAN_MAX_DEPTH;
	for (;;) {
		unsigned char c;
		int in_object;

		scan_ws(sc);
		if (sc->i >= sc->n) {
			if (state == AFTER && depth == 0)
				return 1;
			return scan_fail(sc, "unexpected end of input");
		}
		c = sc->s[sc->i];
		switch (state) {
		case VALUE:
			if (c == '{' || c == '[') {
				if (depth >= max_depth) {
					sc->too_deep = 1;
					return scan_fail(sc, "nested too deeply");
				}
				if (c == '{')
					stack[depth / 64] |= (uint64_t)1 << (depth % 64);
				else
					stack[depth / 64] &= ~((uint64_t)1 << (depth % 64));
				depth++;
				sc->i++;
				scan_ws(sc);
				if (sc->i < sc->n && sc->s[sc->i] == (c == '{' ? '}' : ']')) {
					sc->i++;
					depth--;
					state = AFTER;
				} else
					state = c == '{' ? KEY : VALUE;
				continue;
			}
			if (c == '"') {
				if (!scan_string(sc, 0))
					return 0;
			} else if (c == '-' || (c >= '0' && c <= '9')) {
				if (!scan_number(sc))
					return 0;
			} else if (c == 't') {
				if (!scan_literal(sc, "true"))
					return 0;
			} else if (c == 'f') {
				if (!scan_literal(sc, "false"))
					return 0;
			} else if (c == 'n') {
				if (!scan_literal(sc, "null"))
					return 0;
			} else
				return scan_fail(sc, "unexpected character");
			state = AFTER;
			continue;
		case KEY:
			if (c != '"')
				return scan_fail(sc, "expected a quoted field name");
			if (depth == 1)
				sc->top_at = sc->i;
			if (!scan_string(sc, 1))
				return 0;
			if (depth == 1)
				sc->top_len = sc->i - sc->top_at;
			scan_ws(sc);
			if (sc->i >= sc->n || sc->s[sc->i] != ':')
				return scan_fail(sc, "expected ':'");
			sc->i++;
			state = VALUE;
			continue;
		case AFTER:
			if (depth == 0)
				return scan_fail(sc, "unexpected content after the value");
			in_object = (stack[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1;
			if (c == ',') {
				sc->i++;
				state = in_object ? KEY : VALUE;
			} else if (c == (in_object ? '}' : ']')) {
				sc->i++;
				depth--;
			} else
				return scan_fail(sc, in_object ? "expected ',' or '}'" :
				    "expected ',' or ']'");
			continue;
		}
	}
}

/*
 * Names the top-level field a too-deep value sat in (its name decoded) into
 * err, with the limit; no field when the value is not inside an object.
 */
static void
too_deep(const struct scan *sc, unsigned max_depth, struct kw_error *err)
{
	struct json_tokener *tok = NULL;
	json_object *name = NULL;
	const char *field = NULL;

	/* the scanner checked the quoted name: json-c only has to unescape it */
	if (sc->top_len >= 2 && (tok = json_tokener_new_ex(1)) != NULL &&
	    (name = json_tokener_parse_ex(tok, (const char *)sc->s + sc->top_at,
	    (int)sc->top_len)) != NULL && json_object_is_type(name, json_type_string))
		field = json_object_get_string(name);
	kw_error_set(err, KW_EINVAL, field, "JSON nested deeper than %u levels", max_depth);
	json_object_put(name);
	if (tok != NULL)
		json_tokener_free(tok);
}

/*
 * Parses exactly the n bytes at text as one strict JSON value (RFC 8259,
 * UTF-8, at most max_depth nested containers, only whitespace around it).
 * On KW_OK *out is an owned reference (one json_object_put), or NULL when the
 * body is the JSON literal null.  On failure *out is NULL and *err holds
 * KW_EINVAL with a message naming the problem and its byte offset ("invalid
 * JSON at byte 17: unexpected character", "invalid UTF-8 at byte 5", "JSON
 * nested deeper than 32 levels"); the message never quotes the body.  The
 * field is empty, except for nesting too deep inside an object: then it is
 * the top-level field whose value goes too deep, as the client named it.  Also KW_ENOMEM, and KW_ETOOLARGE past json-c's int length (2 GiB).
 * max_depth 0 admits only a scalar; limits above 4096 are treated as 4096.
 */
enum kw_err
kw_json_parse(const char *text, size_t n, unsigned max_depth, struct json_object **out,
    struct kw_error *err)
{
	struct scan sc = { (const unsigned char *)text, n, 0, NULL, 0, 0, 0 };
	struct json_tokener *tok = NULL;
	struct json_object *obj = NULL;
	enum json_tokener_error jerr;
	const char *nul;
	size_t bad, end;
	enum kw_err rc = KW_EINVAL;

	*out = NULL;
	if (n == 0) {
		kw_error_set(err, KW_EINVAL, NULL, "empty body");
		goto done;
	}
	if ((bad = utf8_bad_offset(sc.s, n)) != n) {
		kw_error_set(err, KW_EINVAL, NULL, "invalid UTF-8 at byte %zu", bad);
		goto done;
	}
	/* json-c stops at a NUL, so without this "[1]\0junk" would parse as [1]. */
	if ((nul = memchr(text, '\0', n)) != NULL) {
		kw_error_set(err, KW_EINVAL, NULL, "invalid JSON at byte %zu: NUL byte",
		    (size_t)(nul - text));
		goto done;
	}
	if (n > INT32_MAX) {
		kw_error_set(err, KW_ETOOLARGE, NULL, "body too large to parse");
		rc = KW_ETOOLARGE;
		goto done;
	}
	if (!scan_json(&sc, max_depth)) {
		if (sc.too_deep)
			too_deep(&sc, max_depth, err);
		else
			kw_error_set(err, KW_EINVAL, NULL, "invalid JSON at byte %zu: %s", sc.i,
			    sc.why);
		goto done;
	}

	/* One level of slack: the scanner already enforced the limit exactly. */
	tok = json_tokener_new_ex(max_depth < SCAN_MAX_DEPTH ? (int)max_depth + 1 :
	    SCAN_MAX_DEPTH + 1);
	if (tok == NULL) {
		kw_error_set(err, KW_ENOMEM, NULL, "out of memory");
		rc = KW_ENOMEM;
		goto done;
	}
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	obj = json_tokener_parse_ex(tok, text, (int)n);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	if (obj == NULL && jerr == json_tokener_continue) {
		/*
		 * A top-level scalar such as 123 or true is only complete once
		 * json-c sees what follows it; a NUL is its end-of-input mark, and
		 * the body holds no NUL of its own.
		 */
		obj = json_tokener_parse_ex(tok, "", 1);
		jerr = json_tokener_get_error(tok);
		end = n;
	}
	if (jerr != json_tokener_success) {
		/* The grammar check passed: json-c ran out of memory, or has a bug. */
		json_object_put(obj);
		obj = NULL;
		if (jerr == json_tokener_error_depth)
			kw_error_set(err, KW_EINVAL, NULL, "JSON nested deeper than %u levels",
			    max_depth);
		else
			kw_error_set(err, KW_EINVAL, NULL, "invalid JSON at byte %zu: %s",
			    end > n ? n : end, json_tokener_error_desc(jerr));
		goto done;
	}
	for (; end < n; end++)
		if (text[end] != ' ' && text[end] != '\t' && text[end] != '\n' && text[end] != '\r') {
			json_object_put(obj);
			obj = NULL;
			kw_error_set(err, KW_EINVAL, NULL,
			    "invalid JSON at byte %zu: unexpected content after the value", end);
			goto done;
		}
	*out = obj;
	rc = KW_OK;
done:
	if (tok != NULL)
		json_tokener_free(tok);
	return rc;
}

/* --- schema validation --------------------------------------------- */

struct pattern_slot {
	int state;	/* 0 not yet compiled, 1 compiled, -1 does not compile */
	regex_t re;
};

/*
 * Compiled once per process on first use; workers forked after that share the
 * parent's copies.  Never freed: the patterns live as long as the program.
 */
static struct pattern_slot *pattern_cache;

/*
 * Returns the compiled pattern number idx, or NULL if it is out of range,
 * does not compile, or memory ran out (the spec is broken or the host is:
 * either way not the client's fault).
 */
static const regex_t *
pattern_get(int idx)
{
	struct pattern_slot *slot;

	if (idx < 0 || (size_t)idx >= kw_gen_npatterns)
		return NULL;
	if (pattern_cache == NULL &&
	    (pattern_cache = calloc(kw_gen_npatterns, sizeof(*pattern_cache))) == NULL)
		return NULL;
	slot = &pattern_cache[idx];
	if (slot->state == 0)
		slot->state = regcomp(&slot->re, kw_gen_patterns[idx], REG_EXTENDED | REG_NOSUB) == 0 ?
		    1 : -1;
	return slot->state == 1 ? &slot->re : NULL;
}

/* "must be a string or null", from a KW_T_* mask. */
static void
type_message(char *dst, size_t size, unsigned types)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {
		{ KW_T_OBJECT, "an object" },
		{ KW_T_ARRAY, "an array" },
		{ KW_T_STRING, "a string" },
		{ KW_T_INTEGER, "an integer" },
		{ KW_T_NUMBER, "a number" },
		{ KW_T_BOOLEAN, "a boolean" },
		{ KW_T_NULL, "null" },
	};
	const char *parts[sizeof(names) / sizeof(names[0])];
	size_t i, np = 0, len;

	if (types & KW_T_NUMBER)
		types &= ~(unsigned)KW_T_INTEGER;	/* integers are numbers too */
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (types & names[i].bit)
			parts[np++] = names[i].name;
	bounded_printf(dst, size, "must be");
	for (i = 0; i < np; i++) {
		len = strlen(dst);
		bounded_printf(dst + len, size - len, "%s%s", i == 0 ? " " :
		    i == np - 1 ? " or " : ", ", parts[i]);
	}
}

/* Shortest text that reads back as the same double, for bounds in messages. */
static void
format_bound(char *dst, size_t size, double b)
{
	if (is_integral(b) && fabs(b) < 1e15)
		bounded_printf(dst, size, "%.0f", b);
	else {
		bounded_printf(dst, size, "%.15g", b);
		if (strtod(dst, NULL) != b)
			bounded_printf(dst, size, "%.17g", b);
	}
}

/* Compares an int64 with a double exactly: <0, 0 or >0 like strcmp. */
static int
cmp_int_double(int64_t v, double b)
{
	double fb;
	int64_t ib;

	if (b >= 9223372036854775808.0)
		return -1;
	if (b < -9223372036854775808.0)
		return 1;
	fb = floor_i64(b);
	ib = (int64_t)fb;
	if (v != ib)
		return v < ib ? -1 : 1;
	return fb == b ? 0 : -1;
}

/*
 * The error of a value that has the schema's type but breaks one of its
 * bounds, lengths, pattern or format: 422 unless the spec says otherwise.
 */
static enum kw_err
value_err(const struct kw_schema *schema)
{
	return schema->value_err != KW_OK ? schema->value_err : KW_EVALID;
}

static enum kw_err
check_number(const struct kw_schema *schema, struct json_object *value, const char *field,
    struct kw_error *err)
{
	int is_int = json_object_is_type(value, json_type_int);
	int64_t iv = is_int ? json_object_get_int64(value) : 0;
	double dv = is_int ? 0 : json_object_get_double(value);
	enum kw_err rc = value_err(schema);
	char bound[40];
	int c;

	if (schema->flags & KW_S_MIN) {
		c = is_int ? cmp_int_double(iv, schema->minimum) :
		    (dv < schema->minimum ? -1 : dv > schema->minimum);
		if (c < 0 || (c == 0 && (schema->flags & KW_S_EXCL_MIN))) {
			format_bound(bound, sizeof(bound), schema->minimum);
			kw_error_set(err, rc, field, "must be %s %s",
			    schema->flags & KW_S_EXCL_MIN ? ">" : ">=", bound);
			return rc;
		}
	}
	if (schema->flags & KW_S_MAX) {
		c = is_int ? cmp_int_double(iv, schema->maximum) :
		    (dv < schema->maximum ? -1 : dv > schema->maximum);
		if (c > 0 || (c == 0 && (schema->flags & KW_S_EXCL_MAX))) {
			format_bound(bound, sizeof(bound), schema->maximum);
			kw_error_set(err, rc, field, "must be %s %s",
			    schema->flags & KW_S_EXCL_MAX ? "<" : "<=", bound);
			return rc;
		}
	}
	return KW_OK;
}

/* "must be one of: a, b, c", cut with ", ..." where the rest would not fit. */
static void
enum_message(char *dst, size_t size, const char *const *enums, size_t nenums)
{
	static const char more[] = ", ...";
	size_t i, len, need;

	bounded_printf(dst, size, "must be one of: ");
	for (i = 0; i < nenums; i++) {
		const char *sep = i == 0 ? "" : ", ";

		/* Room for the suffix is kept while entries remain, so it always fits. */
		need = strlen(sep) + strlen(enums[i]) + (i + 1 < nenums ? sizeof(more) - 1 : 0);
		len = strlen(dst);
		if (len + need >= size) {
			bounded_printf(dst + len, size - len, "%s", i == 0 ? "..." : more);
			return;
		}
		bounded_printf(dst + len, size - len, "%s%s", sep, enums[i]);
	}
}

static int
in_enum(const struct kw_schema *schema, struct json_object *value)
{
	const char *s;
	size_t i, len;

	if (!json_object_is_type(value, json_type_string))
		return 0;
	s = json_object_get_string(value);
	len = (size_t)json_object_get_string_len(value);
	for (i = 0; i < schema->nenums; i++)
		if (strlen(schema->enums[i]) == len && memcmp(schema->enums[i], s, len) == 0)
			return 1;
	return 0;
}

/*
 * The formats the generator lets through (scripts/gen-openapi refuses any
 * other): an RFC 3339 date-time, and a duration that, counted from now,
 * ends by KW_TIME_MAX, so that every time a request sets can be written
 * back in RFC 3339.
 */
static enum kw_err
check_format(const struct kw_schema *schema, const char *s, const char *field,
    struct kw_error *err)
{
	enum kw_err rc = value_err(schema);
	time_t t;

	switch (schema->format) {
	case KW_FMT_DATE_TIME:
		if (kw_time_parse(s, &t) == KW_OK)
			return KW_OK;
		kw_error_set(err, rc, field, "must be an RFC 3339 date-time from 1970 to "
		    "9999, such as 2026-11-22T07:36:43Z");
		return rc;
	case KW_FMT_DURATION:
		if (kw_time_parse_duration(s, kw_clock_now(), &t) == KW_OK)
			return KW_OK;
		kw_error_set(err, rc, field, "must be a duration (30s, 30m, 30h, 30d, 4w, "
		    "1mo) that ends by 9999-12-31T23:59:59Z");
		return rc;
	default:
		return KW_OK;
	}
}

static enum kw_err
check_string(const struct kw_schema *schema, struct json_object *value, const char *field,
    struct kw_error *err)
{
	const char *s = json_object_get_string(value);
	size_t len = (size_t)json_object_get_string_len(value), chars;
	const regex_t *re;

	/* A NUL would cut the string short for every C consumer downstream. */
	if (strlen(s) != len) {
		kw_error_set(err, KW_EVALID, field, "must not contain NUL characters");
		return KW_EVALID;
	}
	if (!kw_valid_utf8(s, len)) {
		kw_error_set(err, KW_EVALID, field, "must be valid UTF-8");
		return KW_EVALID;
	}
	chars = utf8_length(s, len);
	if (schema->min_length >= 0 && chars < (size_t)schema->min_length) {
		kw_error_set(err, value_err(schema), field, "must be at least %ld character%s",
		    schema->min_length, schema->min_length == 1 ? "" : "s");
		return value_err(schema);
	}
	if (schema->max_length >= 0 && chars > (size_t)schema->max_length) {
		kw_error_set(err, value_err(schema), field, "must be at most %ld character%s",
		    schema->max_length, schema->max_length == 1 ? "" : "s");
		return value_err(schema);
	}
	if (schema->pattern >= 0) {
		if ((re = pattern_get(schema->pattern)) == NULL) {
			kw_error_set(err, KW_EINTERNAL, field, "schema pattern %d is unusable",
			    schema->pattern);
			return KW_EINTERNAL;
		}
		if (regexec(re, s, 0, NULL, 0) != 0) {
			kw_error_set(err, value_err(schema), field, "must match the pattern %s",
			    kw_gen_patterns[schema->pattern]);
			return value_err(schema);
		}
	}
	return check_format(schema, s, field, err);
}

static enum kw_err check(const struct kw_schema *, struct json_object *, const char *field,
    struct kw_error *);

static enum kw_err
check_array(const struct kw_schema *schema, struct json_object *value, const char *field,
    struct kw_error *err)
{
	size_t i, n = json_object_array_length(value);
	char child[KW_FIELD_MAX];
	enum kw_err rc;

	if (schema->min_items >= 0 && n < (size_t)schema->min_items) {
		kw_error_set(err, KW_EVALID, field, "must have at least %ld item%s",
		    schema->min_items, schema->min_items == 1 ? "" : "s");
		return KW_EVALID;
	}
	if (schema->max_items >= 0 && n > (size_t)schema->max_items) {
		kw_error_set(err, KW_EVALID, field, "must have at most %ld item%s",
		    schema->max_items, schema->max_items == 1 ? "" : "s");
		return KW_EVALID;
	}
	if (schema->items == NULL)
		return KW_OK;
	for (i = 0; i < n; i++) {
		bounded_printf(child, sizeof(child), "%s[%zu]", field, i);
		if ((rc = check(schema->items, json_object_array_get_idx(value, i), child, err)) !=
		    KW_OK)
			return rc;
	}
	return KW_OK;
}

static const struct kw_prop *
find_prop(const struct kw_schema *schema, const char *name)
{
	size_t i;

	for (i = 0; i < schema->nprops; i++)
		if (strcmp(schema->props[i].name, name) == 0)
			return &schema->props[i];
	return NULL;
}

/*
 * "parent.name" (name alone at the top) into dst, as bounded_printf would
 * write it, without printf: it runs for every field of every body.
 */
static void
child_field(char *dst, size_t size, const char *parent, const char *name)
{
	size_t plen = strlen(parent), nlen = strlen(name), n = 0;

	if (plen > 0) {
		n = plen < size - 1 ? plen : size - 1;
		memcpy(dst, parent, n);
		if (n < size - 1)
			dst[n++] = '.';
	}
	if (nlen > size - 1 - n)
		nlen = size - 1 - n;
	memcpy(dst + n, name, nlen);
	n += nlen;
	dst[n] = '\0';
	if (plen + (plen > 0) + strlen(name) > size - 1)
		utf8_trim_tail(dst, size - 1);
}

/*
 * Free-form values (fields an object lets through unchecked) are still
 * strings that C code will read: none may hold a NUL, at any depth.
 */
static enum kw_err
check_free(struct json_object *value, const char *field, struct kw_error *err)
{
	char child[KW_FIELD_MAX];
	enum kw_err rc;

	if (json_object_is_type(value, json_type_string)) {
		if (strlen(json_object_get_string(value)) !=
		    (size_t)json_object_get_string_len(value)) {
			kw_error_set(err, KW_EVALID, field, "must not contain NUL characters");
			return KW_EVALID;
		}
	} else if (json_object_is_type(value, json_type_object)) {
		json_object_object_foreach(value, key, val) {
			child_field(child, sizeof(child), field, key);
			if ((rc = check_free(val, child, err)) != KW_OK)
				return rc;
		}
	} else if (json_object_is_type(value, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(value); i++) {
			bounded_printf(child, sizeof(child), "%s[%zu]", field, i);
			if ((rc = check_free(json_object_array_get_idx(value, i), child, err)) != KW_OK)
				return rc;
		}
	}
	return KW_OK;
}

/*
 * Deletes value's fields that schema does not name: a request model that
 * ignores unknown fields (LiteLLM's pydantic models, Bifrost's Go structs)
 * hands its handler only the ones it knows, so no handler can store a
 * field no rule was written for.  The names are gathered first (linear,
 * whatever their number); the object is not changed under its iterator.
 */
static void
drop_unknown(const struct kw_schema *schema, struct json_object *value)
{
	struct json_object *unknown = json_object_new_array();

	json_object_object_foreach(value, key, val) {
		(void)val;
		if (find_prop(schema, key) == NULL)
			json_object_array_add(unknown, json_object_new_string(key));
	}
	for (size_t i = 0; i < json_object_array_length(unknown); i++)
		json_object_object_del(value,
		    json_object_get_string(json_object_array_get_idx(unknown, i)));
	json_object_put(unknown);
}

/*
 * Unknown fields are checked before required ones, so a misspelt field is
 * reported as itself rather than as the field it was meant to be.
 */
static enum kw_err
check_object(const struct kw_schema *schema, struct json_object *value, const char *field,
    struct kw_error *err)
{
	char child[KW_FIELD_MAX];
	struct json_object *member;
	enum kw_err rc;
	size_t i;

	json_object_object_foreach(value, key, val) {
		if (find_prop(schema, key) != NULL)
			continue;
		child_field(child, sizeof(child), field, key);
		/* an ignored field is still read well-formed (no NUL, UTF-8), then dropped */
		if (schema->additional == KW_ADDL_ALLOW || schema->additional == KW_ADDL_IGNORE) {
			if ((rc = check_free(val, child, err)) != KW_OK)
				return rc;
			continue;
		}
		if (schema->additional == KW_ADDL_REJECT) {
			kw_error_set(err, KW_EVALID, child, "unknown field");
			return KW_EVALID;
		}
		if (schema->additional_schema != NULL &&
		    (rc = check(schema->additional_schema, val, child, err)) != KW_OK)
			return rc;
	}
	if (schema->additional == KW_ADDL_IGNORE)
		drop_unknown(schema, value);
	for (i = 0; i < schema->nprops; i++) {
		const struct kw_prop *p = &schema->props[i];

		if (!json_object_object_get_ex(value, p->name, &member)) {
			if (p->required) {
				child_field(child, sizeof(child), field, p->name);
				kw_error_set(err, KW_EVALID, child, "missing required field");
				return KW_EVALID;
			}
			continue;
		}
		child_field(child, sizeof(child), field, p->name);
		if (p->schema != NULL && (rc = check(p->schema, member, child, err)) != KW_OK)
			return rc;
	}
	return KW_OK;
}

/* field is never NULL here; "" at the top. */
static enum kw_err
check(const struct kw_schema *schema, struct json_object *value, const char *field,
    struct kw_error *err)
{
	unsigned have;
	int out_of_range = 0, int_too_big = 0;
	char msg[KW_MESSAGE_MAX];
	double d;

	switch (json_object_get_type(value)) {
	case json_type_null:
		have = KW_T_NULL;
		break;
	case json_type_boolean:
		have = KW_T_BOOLEAN;
		break;
	case json_type_int:
		have = KW_T_INTEGER | KW_T_NUMBER;
		/*
		 * json-c 0.16 clamps overflowing integers to INT64_MIN/MAX (and
		 * get_int64 clamps a uint64 above INT64_MAX to INT64_MAX), so
		 * the extremes cannot be trusted to be what the client sent.
		 */
		out_of_range = json_object_get_int64(value) == INT64_MAX ||
		    json_object_get_int64(value) == INT64_MIN;
		break;
	case json_type_double:
		have = KW_T_NUMBER;
		d = json_object_get_double(value);
		if (!isfinite(d))
			out_of_range = 1;
		else if (is_integral(d)) {
			if (fabs(d) < EXACT_INT_LIMIT)
				have |= KW_T_INTEGER;
			else
				int_too_big = 1;
		}
		break;
	case json_type_string:
		have = KW_T_STRING;
		break;
	case json_type_array:
		have = KW_T_ARRAY;
		break;
	case json_type_object:
		have = KW_T_OBJECT;
		break;
	default:
		have = 0;
		break;
	}

	if (schema->types != 0 && (schema->types & have) == 0) {
		if (int_too_big && (schema->types & KW_T_INTEGER))
			kw_error_set(err, KW_EVALID, field, "number out of range");
		else {
			type_message(msg, sizeof(msg), schema->types);
			kw_error_set(err, KW_EVALID, field, "%s", msg);
		}
		return KW_EVALID;
	}
	if (have == KW_T_NULL)
		return KW_OK;	/* the type mask said null is fine; nothing else applies */
	if (out_of_range) {
		kw_error_set(err, KW_EVALID, field, "number out of range");
		return KW_EVALID;
	}
	if (schema->nenums > 0 && !in_enum(schema, value)) {
		enum_message(msg, sizeof(msg), schema->enums, schema->nenums);
		kw_error_set(err, KW_EVALID, field, "%s", msg);
		return KW_EVALID;
	}
	if (have & KW_T_NUMBER)
		return check_number(schema, value, field, err);
	if (have == KW_T_STRING)
		return check_string(schema, value, field, err);
	if (have == KW_T_ARRAY)
		return check_array(schema, value, field, err);
	if (have == KW_T_OBJECT)
		return check_object(schema, value, field, err);
	return KW_OK;
}

/*
 * Checks value (borrowed; NULL is JSON null) against schema.  field is the
 * value's own path ("" or NULL at the top); errors name the full path of the
 * offending member, e.g. "models[2].name".  Returns KW_OK, or KW_EVALID with
 * *err filled for the first failure found (the schema's value_err instead,
 * when it has one, for a broken bound, length, pattern or format);
 * KW_EINTERNAL if the schema itself is unusable (a pattern that does not
 * compile).  A NULL schema accepts
 * anything.  Does no I/O and never puts a client's value into the message.
 */
enum kw_err
kw_valid_check(const struct kw_schema *schema, struct json_object *value, const char *field,
    struct kw_error *err)
{
	if (schema == NULL)
		return KW_OK;
	return check(schema, value, field != NULL ? field : "", err);
}
