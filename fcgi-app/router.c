/* router.c: maps method and path onto a generated route, and a query string onto typed values. */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "kw.h"

/* One path segment, percent-decoded into the arena and NUL-terminated. */
struct seg {
	const char *s;
	size_t len;
};

/* One name=value pair of a query string. */
struct qpair {
	const char *name;	/* decoded */
	const char *raw;	/* the value as sent, for splitting arrays on ',' before decoding */
	size_t rawlen;
	const char *value;	/* decoded */
};

static int
hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Percent-decodes s[0..n) into a new arena string at *out.  Returns KW_EINVAL
 * for a malformed escape, a NUL (escaped or raw) or a result that is not
 * UTF-8, KW_ENOMEM when the arena is exhausted; *why is a static message
 * for either.
 */
static enum kw_err
decode(struct kw_arena *arena, const char *s, size_t n, int plus_is_space, char **out,
    const char **why)
{
	char *d;
	size_t i, j = 0;

	*out = NULL;
	*why = "malformed percent-encoding";
	if ((d = kw_arena_alloc(arena, n + 1)) == NULL) {
		*why = "out of memory";
		return KW_ENOMEM;
	}
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		int hi, lo;

		if (c == '%') {
			if (n - i < 3 || (hi = hexval((unsigned char)s[i + 1])) < 0 ||
			    (lo = hexval((unsigned char)s[i + 2])) < 0)
				return KW_EINVAL;
			c = (unsigned char)(hi << 4 | lo);
			i += 2;
		} else if (c == '+' && plus_is_space)
			c = ' ';
		if (c == '\0') {
			*why = "must not contain NUL";
			return KW_EINVAL;
		}
		d[j++] = (char)c;
	}
	d[j] = '\0';
	if (!kw_valid_utf8(d, j)) {
		*why = "must be valid UTF-8";
		return KW_EINVAL;
	}
	*out = d;
	return KW_OK;
}

/*
 * Returns the percent-decoded s[0..n) as a NUL-terminated string owned by the
 * arena; '+' becomes a space only when plus_is_space (query strings, not
 * paths).  Returns NULL for a malformed escape (%G1, a truncated %4), a NUL
 * byte in the result, a result that is not UTF-8, or exhausted memory.
 */
char *
kw_url_decode(struct kw_arena *arena, const char *s, size_t n, int plus_is_space)
{
	const char *why;
	char *out;

	return decode(arena, s, n, plus_is_space, &out, &why) == KW_OK ? out : NULL;
}

static int
is_param(const char *t, size_t len)
{
	return len >= 3 && t[0] == '{' && t[len - 1] == '}';
}

/* Length of the template segment starting at t, up to the next '/' or the end. */
static size_t
seglen(const char *t)
{
	size_t len = 0;

	while (t[len] != '\0' && t[len] != '/')
		len++;
	return len;
}

/*
 * Reports whether template tpl ("/key/{key}/info") matches the path's
 * segments: same count, literals equal byte for byte, each {name} a non-empty
 * segment.  Allocates nothing: it runs for every route.
 */
static int
template_match(const char *tpl, const struct seg *segs, size_t nseg)
{
	size_t i = 0, len;

	if (tpl[0] != '/')
		return 0;
	for (;;) {
		tpl++;
		if (i == nseg)
			return 0;
		/* Most routes differ from the path in a literal's first byte:
		 * refuse those before measuring the segment. */
		if (*tpl != '{' && (*tpl == '/' ? '\0' : *tpl) !=
		    (segs[i].len ? segs[i].s[0] : '\0'))
			return 0;
		len = seglen(tpl);
		if (is_param(tpl, len)) {
			if (segs[i].len == 0)
				return 0;
		} else if (len != segs[i].len || memcmp(tpl, segs[i].s, len) != 0)
			return 0;
		i++;
		tpl += len;
		if (*tpl == '\0')
			return i == nseg;
	}
}

/*
 * The segments of each route's template (its '/'s), counted once per
 * table: most routes differ from a path in that, which spares them
 * template_match.  NULL when out of memory (every route is then tried).
 */
static const unsigned char *
segment_counts(const struct kw_route *routes, size_t nroutes)
{
	static const struct kw_route *table;
	static size_t counted;
	static unsigned char *counts;
	unsigned char *c;

	if (table == routes && counted == nroutes)
		return counts;
	if ((c = realloc(counts, nroutes > 0 ? nroutes : 1)) == NULL)
		return NULL;
	for (size_t i = 0; i < nroutes; i++) {
		size_t n = 0;

		for (const char *p = routes[i].path; *p != '\0'; p++)
			n += *p == '/';
		c[i] = n > UCHAR_MAX ? UCHAR_MAX : (unsigned char)n;
	}
	counts = c;
	table = routes;
	counted = nroutes;
	return counts;
}

/* Whether route i of routes may match a path of nseg segments: template_match, counted first. */
static int
route_matches(const struct kw_route *routes, const unsigned char *counts, size_t i,
    const struct seg *segs, size_t nseg)
{
	if (counts != NULL && counts[i] != (nseg > UCHAR_MAX ? UCHAR_MAX : nseg))
		return 0;
	return template_match(routes[i].path, segs, nseg);
}

/*
 * Reports whether template a is more specific than b, both matching the same
 * path: at the first segment where one has a literal and the other a
 * parameter, the literal wins, so /key/info beats /key/{key} whatever the
 * table order.
 */
static int
more_specific(const char *a, const char *b)
{
	size_t la, lb;
	int pa, pb;

	while (*a == '/' && *b == '/') {
		a++;
		b++;
		la = seglen(a);
		lb = seglen(b);
		pa = is_param(a, la);
		pb = is_param(b, lb);
		if (pa != pb)
			return pb;
		a += la;
		b += lb;
	}
	return 0;
}

/* Appends method to the comma-separated allow list unless it is there already. */
static void
allow_add(char *allow, size_t size, const char *method)
{
	size_t mlen = strlen(method), len = strlen(allow);
	const char *p = allow;

	while (*p != '\0') {
		size_t l = strcspn(p, ",");

		if (l == mlen && memcmp(p, method, mlen) == 0)
			return;
		p += l;
		while (*p == ',' || *p == ' ')
			p++;
	}
	/* A method that does not fit is left out rather than cut in half. */
	if (len + (len ? 2 : 0) + mlen >= size)
		return;
	snprintf(allow + len, size - len, "%s%s", len ? ", " : "", method);
}

/*
 * Finds the route for method and path (both borrowed; the path without its
 * query string).  When path_is_decoded is 0 each segment is percent-decoded after the
 * split, so "%2F" inside a parameter stays in that parameter and never
 * separates segments.  Returns:
 *   KW_OK        *out holds the route and its path parameters (names and
 *                values arena-owned, values decoded);
 *   KW_EMETHOD   the path matches but no route has this method; out->allow
 *                lists those that do ("GET, POST", table order);
 *   KW_ENOTFOUND no template matches (also for an empty path, one not
 *                starting with '/', or a trailing slash the template lacks);
 *   KW_EINVAL    a malformed escape, NUL or non-UTF-8 in the path (field
 *                "path");
 *   KW_ENOMEM, KW_EINTERNAL (a template with too many parameters).
 * *err is filled for every result but KW_OK.  When two templates match, the
 * one with a literal where the other has a parameter wins; otherwise the
 * first in table order.
 */
enum kw_err
kw_router_match(struct kw_arena *arena, const struct kw_route *routes, size_t nroutes,
    const char *method, const char *path, int path_is_decoded, struct kw_match *out,
    struct kw_error *err)
{
	const struct kw_route *best = NULL;
	const unsigned char *counts;
	struct seg *segs;
	const char *p, *tpl;
	size_t nseg, i, len;
	int path_found = 0;
	enum kw_err rc;

	assert(method != NULL);
	memset(out, 0, sizeof(*out));
	if (path == NULL || path[0] != '/') {
		kw_error_set(err, KW_ENOTFOUND, NULL, "no such route");
		return KW_ENOTFOUND;
	}
	if (path_is_decoded && !kw_valid_utf8(path, strlen(path))) {
		kw_error_set(err, KW_EINVAL, "path", "must be valid UTF-8");
		return KW_EINVAL;
	}

	/* Split once and decode every segment before trying any route. */
	nseg = 1;
	for (p = path + 1; *p != '\0'; p++)
		if (*p == '/')
			nseg++;
	if ((segs = kw_arena_alloc(arena, nseg * sizeof(*segs))) == NULL) {
		kw_error_set(err, KW_ENOMEM, NULL, "out of memory");
		return KW_ENOMEM;
	}
	for (p = path + 1, i = 0; i < nseg; i++) {
		const char *why;
		char *d;

		len = strcspn(p, "/");
		if (path_is_decoded) {
			/* Borrowed; copied into the arena only if it becomes a value. */
			segs[i].s = p;
			segs[i].len = len;
		} else {
			if ((rc = decode(arena, p, len, 0, &d, &why)) != KW_OK) {
				kw_error_set(err, rc, rc == KW_ENOMEM ? NULL : "path", "%s", why);
				return rc;
			}
			segs[i].s = d;
			segs[i].len = strlen(d);
		}
		p += len + (p[len] == '/');
	}

	counts = segment_counts(routes, nroutes);
	for (i = 0; i < nroutes; i++) {
		if (!route_matches(routes, counts, i, segs, nseg))
			continue;
		path_found = 1;
		if (strcmp(routes[i].method, method) != 0)
			continue;
		if (best == NULL || more_specific(routes[i].path, best->path))
			best = &routes[i];
	}
	if (best == NULL) {
		if (!path_found) {
			kw_error_set(err, KW_ENOTFOUND, NULL, "no such route");
			return KW_ENOTFOUND;
		}
		for (i = 0; i < nroutes; i++)
			if (route_matches(routes, counts, i, segs, nseg))
				allow_add(out->allow, sizeof(out->allow), routes[i].method);
		kw_error_set(err, KW_EMETHOD, NULL, "method not allowed");
		return KW_EMETHOD;
	}

	out->route = best;
	for (tpl = best->path, i = 0; *tpl == '/'; i++) {
		tpl++;
		len = seglen(tpl);
		if (is_param(tpl, len)) {
			if (out->nparams == KW_MAX_PATH_PARAMS) {
				memset(out, 0, sizeof(*out));
				kw_error_set(err, KW_EINTERNAL, NULL,
				    "route has too many path parameters");
				return KW_EINTERNAL;
			}
			out->names[out->nparams] = kw_arena_strndup(arena, tpl + 1, len - 2);
			out->values[out->nparams] = path_is_decoded ?
			    kw_arena_strndup(arena, segs[i].s, segs[i].len) : segs[i].s;
			if (out->names[out->nparams] == NULL || out->values[out->nparams] == NULL) {
				memset(out, 0, sizeof(*out));
				kw_error_set(err, KW_ENOMEM, NULL, "out of memory");
				return KW_ENOMEM;
			}
			out->nparams++;
		}
		tpl += len;
	}
	return KW_OK;
}

/* Returns the face of the first prefix that path (borrowed) starts with, else LiteLLM's. */
enum kw_face
kw_router_face(const struct kw_face_prefix *prefixes, size_t n, const char *path)
{
	size_t i;

	if (path == NULL)
		return KW_FACE_LITELLM;
	for (i = 0; i < n; i++)
		if (strncmp(path, prefixes[i].prefix, strlen(prefixes[i].prefix)) == 0)
			return prefixes[i].face;
	return KW_FACE_LITELLM;
}

/* Strict decimal: optional '-', digits only, within int64. */
static int
parse_int(const char *s, int64_t *out)
{
	const char *p = s + (*s == '-');
	char *end;
	long long v;

	if (*p == '\0')
		return 0;
	for (; *p != '\0'; p++)
		if (*p < '0' || *p > '9')
			return 0;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno == ERANGE || *end != '\0')
		return -1;
	*out = v;
	return 1;
}

/*
 * A JSON-like number: strtod must consume it all and give a finite value.
 * The character check keeps out what strtod also takes: spaces, hex,
 * "inf" and "nan".
 */
static int
parse_number(const char *s, double *out)
{
	char *end;
	double d;

	if (*s == '\0' || strspn(s, "0123456789+-.eE") != strlen(s))
		return 0;
	d = strtod(s, &end);
	if (*end != '\0')
		return 0;
	if (!isfinite(d))
		return -1;
	*out = d;
	return 1;
}

/*
 * Turns one query value into the JSON value its schema expects: an integer,
 * a number, a boolean, else the string itself.  Returns KW_OK with an owned
 * *out, KW_EVALID with *err set (naming field), or KW_ENOMEM.
 */
static enum kw_err
convert(const struct kw_schema *schema, const char *s, const char *field, struct json_object **out,
    struct kw_error *err)
{
	unsigned types = schema != NULL ? schema->types : 0;
	int64_t iv;
	double dv;
	int r, range = 0;

	*out = NULL;
	if (types & (KW_T_INTEGER | KW_T_NUMBER)) {
		if ((r = parse_int(s, &iv)) > 0) {
			if ((*out = json_object_new_int64(iv)) == NULL)
				goto nomem;
			return KW_OK;
		}
		range |= r < 0;
	}
	if (types & KW_T_NUMBER) {
		if ((r = parse_number(s, &dv)) > 0) {
			if ((*out = json_object_new_double(dv)) == NULL)
				goto nomem;
			return KW_OK;
		}
		range |= r < 0;
	}
	if (types & KW_T_BOOLEAN) {
		if (strcasecmp(s, "true") == 0 || strcasecmp(s, "false") == 0) {
			if ((*out = json_object_new_boolean(strcasecmp(s, "true") == 0)) == NULL)
				goto nomem;
			return KW_OK;
		}
	}
	if (types == 0 || (types & KW_T_STRING)) {
		if ((*out = json_object_new_string(s)) == NULL)
			goto nomem;
		return KW_OK;
	}
	if (range)
		kw_error_set(err, KW_EVALID, field, "number out of range");
	else if ((types & KW_T_INTEGER) && !(types & KW_T_NUMBER))
		kw_error_set(err, KW_EVALID, field, "must be an integer");
	else if (types & KW_T_NUMBER)
		kw_error_set(err, KW_EVALID, field, "must be a number");
	else if (types & KW_T_BOOLEAN)
		kw_error_set(err, KW_EVALID, field, "must be a boolean");
	else
		kw_error_set(err, KW_EVALID, field, "cannot be given in the query string");
	return KW_EVALID;
nomem:
	kw_error_set(err, KW_ENOMEM, NULL, "out of memory");
	return KW_ENOMEM;
}

/*
 * An array parameter: every occurrence of the name, each split on ',' before
 * decoding (so "%2C" stays inside an item), each item converted with the
 * items schema.  An empty value adds no items.
 */
static enum kw_err
convert_array(struct kw_arena *arena, const struct kw_param *param, const struct qpair *pairs,
    size_t npairs, struct json_object **out, struct kw_error *err)
{
	const struct kw_schema *items = param->schema->items;
	struct json_object *arr, *item;
	char field[KW_FIELD_MAX], *piece;
	const char *why;
	size_t i, len;
	enum kw_err rc;

	if ((*out = arr = json_object_new_array()) == NULL) {
		kw_error_set(err, KW_ENOMEM, NULL, "out of memory");
		return KW_ENOMEM;
	}
	for (i = 0; i < npairs; i++) {
		const char *p = pairs[i].raw, *end = pairs[i].raw + pairs[i].rawlen;

		if (strcmp(pairs[i].name, param->name) != 0 || pairs[i].rawlen == 0)
			continue;
		for (;;) {
			len = strcspn(p, ",&");
			if (p + len > end)
				len = (size_t)(end - p);
			snprintf(field, sizeof(field), "%s[%zu]", param->name,
			    json_object_array_length(arr));
			if ((rc = decode(arena, p, len, 1, &piece, &why)) != KW_OK) {
				/* The whole value decoded, so only memory can fail here. */
				kw_error_set(err, rc, rc == KW_ENOMEM ? NULL : field, "%s", why);
				return rc;
			}
			if ((rc = convert(items, piece, field, &item, err)) != KW_OK)
				return rc;
			if (json_object_array_add(arr, item) != 0) {
				json_object_put(item);
				kw_error_set(err, KW_ENOMEM, NULL, "out of memory");
				return KW_ENOMEM;
			}
			p += len;
			if (p >= end)
				break;
			p++;	/* the ',' */
		}
	}
	return KW_OK;
}

/*
 * Parses query (borrowed QUERY_STRING; NULL or "" is no parameters) for
 * route's KW_IN_QUERY parameters.  On KW_OK *out is a new object owned by
 * the caller (one json_object_put) holding each parameter present, converted
 * to its schema's type and validated, keyed by name.  Unknown parameters are
 * ignored, but every pair must be well-formed.  Returns KW_EINVAL for a
 * malformed escape (field: the parameter, or "query" if the name itself is
 * malformed), KW_EVALID for a missing required, repeated non-array,
 * unconvertible or invalid parameter (field: its name), KW_ENOMEM; on
 * failure *out is NULL and *err filled.
 */
enum kw_err
kw_query_parse(struct kw_arena *arena, const struct kw_route *route, const char *query,
    struct json_object **out, struct kw_error *err)
{
	struct json_object *obj, *value = NULL;
	struct qpair *pairs = NULL;
	size_t npairs = 0, i, k, len, count;
	const char *p, *why;
	char *name;
	enum kw_err rc;

	*out = NULL;
	if ((obj = json_object_new_object()) == NULL) {
		kw_error_set(err, KW_ENOMEM, NULL, "out of memory");
		return KW_ENOMEM;
	}
	if (query == NULL)
		query = "";

	count = 1;
	for (p = query; *p != '\0'; p++)
		if (*p == '&')
			count++;
	if ((pairs = kw_arena_alloc(arena, count * sizeof(*pairs))) == NULL) {
		rc = KW_ENOMEM;
		kw_error_set(err, rc, NULL, "out of memory");
		goto fail;
	}
	for (p = query; ; p += len + 1) {
		size_t nlen;
		char *v;

		len = strcspn(p, "&");
		if (len > 0) {	/* "a=1&&b=2": empty pieces carry nothing */
			nlen = strcspn(p, "=&");
			if ((rc = decode(arena, p, nlen, 1, &name, &why)) != KW_OK) {
				kw_error_set(err, rc, rc == KW_ENOMEM ? NULL : "query", "%s", why);
				goto fail;
			}
			pairs[npairs].name = name;
			pairs[npairs].raw = nlen < len ? p + nlen + 1 : p + len;
			pairs[npairs].rawlen = nlen < len ? len - nlen - 1 : 0;
			if ((rc = decode(arena, pairs[npairs].raw, pairs[npairs].rawlen, 1, &v,
			    &why)) != KW_OK) {
				kw_error_set(err, rc, rc == KW_ENOMEM ? NULL : name, "%s", why);
				goto fail;
			}
			pairs[npairs++].value = v;
		}
		if (p[len] == '\0')
			break;
	}

	for (i = 0; route != NULL && i < route->nparams; i++) {
		const struct kw_param *param = &route->params[i];
		const struct qpair *only = NULL;

		if (param->in != KW_IN_QUERY)
			continue;
		for (count = 0, k = 0; k < npairs; k++)
			if (strcmp(pairs[k].name, param->name) == 0) {
				only = &pairs[k];
				count++;
			}
		if (count == 0) {
			if (param->required) {
				rc = KW_EVALID;
				kw_error_set(err, rc, param->name, "missing required query parameter");
				goto fail;
			}
			continue;
		}
		if (param->schema != NULL && (param->schema->types & KW_T_ARRAY))
			rc = convert_array(arena, param, pairs, npairs, &value, err);
		else if (count > 1) {
			rc = KW_EVALID;
			kw_error_set(err, rc, param->name, "must not be repeated");
		} else
			rc = convert(param->schema, only->value, param->name, &value, err);
		if (rc == KW_OK && param->schema != NULL)
			rc = kw_valid_check(param->schema, value, param->name, err);
		if (rc != KW_OK)
			goto fail;
		if (json_object_object_add(obj, param->name, value) != 0) {
			rc = KW_ENOMEM;
			kw_error_set(err, rc, NULL, "out of memory");
			goto fail;
		}
		value = NULL;
	}
	*out = obj;
	return KW_OK;
fail:
	json_object_put(value);
	json_object_put(obj);
	return rc;
}
