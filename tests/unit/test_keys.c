/* test_keys.c: key material, durations and budget reset boundaries of the key model. */
#include <string.h>
#include <time.h>

#include "kw.h"
#include "tap.h"

/* 2026-11-22T07:36:43Z is a Sunday. */
#define SUNDAY ((time_t)1795333003)

static void
test_secret(void)
{
	char a[KW_KEY_GENERATED_LEN + 1], b[KW_KEY_GENERATED_LEN + 1], name[32];
	size_t i;

	kw_keys_new_secret(a);
	kw_keys_new_secret(b);
	is_int(strlen(a), 25, "sk- and 22 characters");
	ok(strncmp(a, "sk-", 3) == 0, "starts with sk-");
	for (i = 3; i < strlen(a); i++)
		if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", a[i]) == NULL)
			break;
	is_int(i, 25, "only URL-safe base64 characters");
	ok(strcmp(a, b) != 0, "two keys differ");
	kw_keys_key_name("sk-abcdefgh1234", name, sizeof(name));
	is_str(name, "sk-...1234", "key_name shows the last four only");
}

static void
test_durations(void)
{
	time_t until;
	char buf[KW_TIME_LEN];

	kw_time_format(SUNDAY, buf);
	is_str(buf, "2026-11-22T07:36:43Z", "RFC 3339 UTC");
	is_int(kw_keys_parse_duration("30s", 0, &until), KW_OK, "30s");
	is_int(until, 30, "30s is 30 seconds");
	kw_keys_parse_duration("2m", 0, &until);
	is_int(until, 120, "2m is minutes, not months");
	kw_keys_parse_duration("3h", 0, &until);
	is_int(until, 3 * 3600, "3h");
	kw_keys_parse_duration("2d", 0, &until);
	is_int(until, 2 * 86400, "2d");
	kw_keys_parse_duration("1w", 0, &until);
	is_int(until, 7 * 86400, "1w");
	kw_keys_parse_duration("1mo", SUNDAY, &until);
	kw_time_format(until, buf);
	is_str(buf, "2026-12-22T07:36:43Z", "1mo is a calendar month");
	kw_keys_parse_duration("2mo", SUNDAY, &until);
	kw_time_format(until, buf);
	is_str(buf, "2027-01-22T07:36:43Z", "2mo crosses the year");
	is_int(kw_keys_parse_duration("30x", 0, &until), KW_EINVAL, "unknown unit");
	is_int(kw_keys_parse_duration("d", 0, &until), KW_EINVAL, "no number");
	is_int(kw_keys_parse_duration("-1d", 0, &until), KW_EINVAL, "negative");
	is_int(kw_keys_parse_duration("1 d", 0, &until), KW_EINVAL, "inner space");
	is_int(kw_keys_parse_duration("99999999999d", 0, &until), KW_EINVAL, "overflow");
	is_int(kw_keys_parse_duration("", 0, &until), KW_EINVAL, "empty");
}

static void
test_budget_reset(void)
{
	char buf[KW_TIME_LEN];

	kw_time_format(kw_keys_budget_reset("1d", SUNDAY), buf);
	is_str(buf, "2026-11-23T00:00:00Z", "1d resets at the next UTC midnight");
	kw_time_format(kw_keys_budget_reset("7d", SUNDAY), buf);
	is_str(buf, "2026-11-23T00:00:00Z", "7d resets next Monday");
	kw_time_format(kw_keys_budget_reset("7d", SUNDAY + 86400), buf);
	is_str(buf, "2026-11-30T00:00:00Z", "7d from a Monday is the Monday after");
	kw_time_format(kw_keys_budget_reset("30d", SUNDAY), buf);
	is_str(buf, "2026-12-01T00:00:00Z", "30d resets on the 1st of next month");
	kw_time_format(kw_keys_budget_reset("1mo", SUNDAY + 20 * 86400), buf);
	is_str(buf, "2027-01-01T00:00:00Z", "1mo in December resets on January 1st");
	is_int(kw_keys_budget_reset("2h", SUNDAY), SUNDAY + 7200, "other durations: now + N");
	is_int(kw_keys_budget_reset("bogus", SUNDAY), 0, "unparsable: 0");
}

int
main(void)
{
	if (kw_crypto_init() != KW_OK)
		return 1;
	test_secret();
	test_durations();
	test_budget_reset();
	return tap_done();
}
