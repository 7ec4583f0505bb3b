/* fuzz_time.c: libFuzzer target: durations, budget reset boundaries and RFC 3339 times, formatted back whole. */
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
	char out[KW_TIME_LEN];
	time_t back;

	/* whatever parses formats whole and reads back: nothing is written past out */
	if (kw_time_parse_duration(s, 1795334400, &t) == KW_OK) {
		kw_time_format(t, out);
		if (strlen(out) != KW_TIME_LEN - 1 || kw_time_parse(out, &back) != KW_OK || back != t)
			abort();
	}
	kw_time_format(kw_time_budget_reset(s, 1795334400), out);
	if (kw_time_parse(s, &t) == KW_OK) {
		kw_time_format(t, out);
		if (kw_time_parse(out, &back) != KW_OK || back != t)
			abort();
	}
	if (size == sizeof(time_t)) {
		memcpy(&t, data, sizeof(t));
		kw_time_format(t, out);
		if (strlen(out) != KW_TIME_LEN - 1)
			abort();
	}
	free(s);
	return 0;
}
