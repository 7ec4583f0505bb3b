/* test_keys.c: key material, durations, budget reset boundaries and RFC 3339 times at and past the year 9999. */
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
	is_int(kw_time_parse_duration("30s", 0, &until), KW_OK, "30s");
	is_int(until, 30, "30s is 30 seconds");
	kw_time_parse_duration("2m", 0, &until);
	is_int(until, 120, "2m is minutes, not months");
	kw_time_parse_duration("3h", 0, &until);
	is_int(until, 3 * 3600, "3h");
	kw_time_parse_duration("2d", 0, &until);
	is_int(until, 2 * 86400, "2d");
	kw_time_parse_duration("1w", 0, &until);
	is_int(until, 7 * 86400, "1w");
	kw_time_parse_duration("1mo", SUNDAY, &until);
	kw_time_format(until, buf);
	is_str(buf, "2026-12-22T07:36:43Z", "1mo is a calendar month");
	kw_time_parse_duration("2mo", SUNDAY, &until);
	kw_time_format(until, buf);
	is_str(buf, "2027-01-22T07:36:43Z", "2mo crosses the year");
	is_int(kw_time_parse_duration("30x", 0, &until), KW_EINVAL, "unknown unit");
	is_int(kw_time_parse_duration("d", 0, &until), KW_EINVAL, "no number");
	is_int(kw_time_parse_duration("-1d", 0, &until), KW_EINVAL, "negative");
	is_int(kw_time_parse_duration("1 d", 0, &until), KW_EINVAL, "inner space");
	is_int(kw_time_parse_duration("99999999999d", 0, &until), KW_EINVAL, "overflow");
	is_int(kw_time_parse_duration("", 0, &until), KW_EINVAL, "empty");
}

static void
test_budget_reset(void)
{
	char buf[KW_TIME_LEN];

	kw_time_format(kw_time_budget_reset("1d", SUNDAY), buf);
	is_str(buf, "2026-11-23T00:00:00Z", "1d resets at the next UTC midnight");
	kw_time_format(kw_time_budget_reset("7d", SUNDAY), buf);
	is_str(buf, "2026-11-23T00:00:00Z", "7d resets next Monday");
	kw_time_format(kw_time_budget_reset("7d", SUNDAY + 86400), buf);
	is_str(buf, "2026-11-30T00:00:00Z", "7d from a Monday is the Monday after");
	kw_time_format(kw_time_budget_reset("30d", SUNDAY), buf);
	is_str(buf, "2026-12-01T00:00:00Z", "30d resets on the 1st of next month");
	kw_time_format(kw_time_budget_reset("1mo", SUNDAY + 20 * 86400), buf);
	is_str(buf, "2027-01-01T00:00:00Z", "1mo in December resets on January 1st");
	is_int(kw_time_budget_reset("2h", SUNDAY), SUNDAY + 7200, "other durations: now + N");
	is_int(kw_time_budget_reset("bogus", SUNDAY), 0, "unparsable: 0");
}

/*
 * Every formatter writes whole, terminated text for any time_t, and every
 * parser refuses what would format past the year 9999 (which strftime wrote
 * with five digits and no NUL, into a 21-byte buffer).
 */
static void
test_year_9999(void)
{
	/* the guard bytes after buf must survive: an overrun shows here and under ASan */
	struct { char buf[KW_TIME_LEN]; char guard[8]; } f;
	static const time_t times[] = {
		KW_TIME_MAX, KW_TIME_MAX + 1, (time_t)1 << 40, (time_t)1 << 62, -1,
		-((time_t)1 << 40),
	};
	time_t t;

	for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
		memset(f.guard, 'G', sizeof(f.guard));
		kw_time_format(times[i], f.buf);
		ok(strlen(f.buf) == 20 && memcmp(f.guard, "GGGGGGGG", 8) == 0,
		    "kw_time_format of %lld: 20 characters and a NUL", (long long)times[i]);
	}
	kw_time_format(KW_TIME_MAX, f.buf);
	is_str(f.buf, "9999-12-31T23:59:59Z", "KW_TIME_MAX is the last second of 9999");
	kw_time_format(KW_TIME_MAX + 1, f.buf);
	is_str(f.buf, "9999-12-31T23:59:59Z", "... and a later time is clamped to it");
	kw_time_format(-5, f.buf);
	is_str(f.buf, "1970-01-01T00:00:00Z", "a negative time is clamped to the epoch");

	is_int(kw_time_parse("9999-12-31T23:59:59Z", &t), KW_OK, "parse: 9999-12-31T23:59:59Z");
	is_int(t, KW_TIME_MAX, "... is KW_TIME_MAX");
	is_int(kw_time_parse("10000-01-01T00:00:00Z", &t), KW_EINVAL, "parse: a five-digit year");
	is_int(kw_time_parse("83335360-03-03T09:16:00Z", &t), KW_EINVAL, "parse: year 83335360");
	is_int(kw_time_parse("9999-12-31T23:59:59-01:00", &t), KW_EINVAL,
	    "parse: an offset that moves it into 10000");
	is_int(kw_time_parse("2026-11-22T08:36:43+01:00", &t), KW_OK, "parse: an offset");
	is_int(t, SUNDAY, "... applied");
	is_int(kw_time_parse("2026-11-22T07:36:43.250Z", &t), KW_OK, "parse: fractions");
	is_int(kw_time_parse("2026-11-22T07:36:43", &t), KW_OK, "parse: no offset is UTC");
	is_int(t, SUNDAY, "... as LiteLLM reads a naive datetime");
	is_int(kw_time_parse("next week", &t), KW_EINVAL, "parse: prose");
	is_int(kw_time_parse("2026-04-31T00:00:00Z", &t), KW_EINVAL, "parse: 31 April");
	is_int(kw_time_parse("2026-11-22T24:00:00Z", &t), KW_EINVAL, "parse: hour 24");
	is_int(kw_time_parse("2026-11-22 07:36:43Z", &t), KW_EINVAL, "parse: a space for T");

	is_int(kw_time_parse_duration("999999999mo", SUNDAY, &t), KW_EINVAL,
	    "duration 999999999mo ends past 9999");
	is_int(kw_time_parse_duration("3000000d", SUNDAY, &t), KW_EINVAL,
	    "duration 3000000d ends past 9999");
	is_int(kw_time_parse_duration("1w", KW_TIME_MAX, &t), KW_EINVAL,
	    "a week from the last second is past it");
	is_int(kw_time_parse_duration("95000mo", SUNDAY, &t), KW_OK, "95000mo from 2026: 9942");
	is_int(kw_time_parse_duration("96000mo", SUNDAY, &t), KW_EINVAL, "96000mo: 10026, refused");
	is_int(kw_time_budget_reset("3000000d", SUNDAY), 0, "budget reset of a duration past 9999: 0");
}

int
main(void)
{
	if (kw_crypto_init() != KW_OK)
		return 1;
	test_secret();
	test_durations();
	test_budget_reset();
	test_year_9999();
	return tap_done();
}
