/* fuzz_router.c: libFuzzer target: path routing, percent-decoding and query parameters, as requests arrive. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "kw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const methods[] = { "GET", "POST", "PUT", "PATCH", "DELETE", "BREW" };
	struct kw_arena *arena = kw_arena_new();
	struct kw_match m;
	struct kw_error err;
	struct json_object *query = NULL;
	char *text, *q;

	kw_log_threshold = KW_LOG_ERROR;
	if (arena == NULL || size == 0 || (text = malloc(size)) == NULL) {
		kw_arena_free(arena);
		return 0;
	}
	/* the first byte picks the method; the rest is the request target, NUL-ended */
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	if ((q = strchr(text, '?')) != NULL)
		*q++ = '\0';
	if (kw_router_match(arena, kw_gen_routes, kw_gen_nroutes,
	    methods[data[0] % (sizeof(methods) / sizeof(methods[0]))], text, data[0] & 0x80 ? 1 : 0,
	    &m, &err) == KW_OK) {
		(void)kw_query_parse(arena, m.route, q, &query, &err);
		json_object_put(query);
	}
	(void)kw_router_face(kw_gen_face_prefixes, kw_gen_nface_prefixes, text);
	free(text);
	kw_arena_free(arena);
	return 0;
}
