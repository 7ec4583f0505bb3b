/* fuzz_time.c: libFuzzer target: durations, budget reset boundaries and RFC 3339 times. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	time_t t;

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	(void)kw_keys_parse_duration(s, 1795334400, &t);
	(void)kw_keys_budget_reset(s, 1795334400);
	(void)kw_time_parse(s, &t);
	free(s);
	return 0;
}
