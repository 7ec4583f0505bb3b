/* fuzz_json.c: libFuzzer target: strict JSON parsing and validation against every request body schema of the spec. */
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "kw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_object *obj = NULL;
	struct kw_error err;

	kw_log_threshold = KW_LOG_ERROR;
	if (kw_json_parse((const char *)data, size, KW_JSON_MAX_DEPTH, &obj, &err) != KW_OK)
		return 0;
	for (size_t i = 0; i < kw_gen_nroutes; i++)
		if (kw_gen_routes[i].body != NULL)
			(void)kw_valid_check(kw_gen_routes[i].body, obj, NULL, &err);
	json_object_put(obj);
	return 0;
}
