/* clock.c: the time requests are judged at (which tests may move), and how times and durations are written and read. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kw.h"

/*
 * The time of a request: time(NULL), or, when the environment names a
 * KEYWARDEN_CLOCK_FILE, the unix seconds written in it (a test hook for
 * limit periods, read on every call so a test can move time).
 */
time_t
kw_clock_now(void)
{
	static const char *path;
	static int looked;
	char buf[32];
	FILE *f;
	time_t t = time(NULL);

	if (!looked) {
		path = getenv("KEYWARDEN_CLOCK_FILE");
		looked = 1;
	}
	if (path == NULL || (f = fopen(path, "r")) == NULL)
		return t;
	if (fgets(buf, sizeof(buf), f) != NULL)
		t = (time_t)strtoll(buf, NULL, 10);
	fclose(f);
	return t;
}

/* --- times: RFC 3339 and durations ------------------------------------ */

/*
 * Writes t as RFC 3339 UTC, "2026-11-22T07:36:43Z": always 20 characters
 * and a NUL, t clamped to 1970-01-01T00:00:00Z .. KW_TIME_MAX, the last
 * second a four-digit year writes.  (strftime wrote five digits and no NUL
 * past the year 9999.)
 */
void
kw_time_format(time_t t, char out[KW_TIME_LEN])
{
	struct tm tm;

	if (t < 0)
		t = 0;
	if (t > KW_TIME_MAX)
		t = KW_TIME_MAX;
	gmtime_r(&t, &tm);
	/* the moduli change nothing in range; they show the compiler each field's width */
	snprintf(out, KW_TIME_LEN, "%04u-%02u-%02uT%02u:%02u:%02uZ",
	    (unsigned)(tm.tm_year + 1900) % 10000u, (unsigned)(tm.tm_mon + 1) % 100u,
	    (unsigned)tm.tm_mday % 100u, (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u,
	    (unsigned)tm.tm_sec % 100u);
}

/*
 * Parses a duration "Ns", "Nm", "Nh", "Nd", "Nw" or "Nmo" and stores in
 * *until the time it ends when counted from `from` (months on the
 * calendar).  KW_EINVAL for anything else, and for a duration that ends
 * after KW_TIME_MAX, which no RFC 3339 time can say.
 */
enum kw_err
kw_time_parse_duration(const char *s, time_t from, time_t *until)
{
	const char *p = s;
	long long n = 0, unit;

	if (s == NULL || !isdigit((unsigned char)*p))
		return KW_EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		n = n * 10 + (*p - '0');
		if (n > 1000000000)
			return KW_EINVAL;
	}
	if (strcmp(p, "mo") == 0) {
		struct tm tm;

		if (n > 12LL * 10000)
			return KW_EINVAL;	/* past any four-digit year from any start */
		gmtime_r(&from, &tm);
		tm.tm_mon += (int)n;
		*until = timegm(&tm);
		return *until == (time_t)-1 || *until > KW_TIME_MAX ? KW_EINVAL : KW_OK;
	}
	if (strcmp(p, "s") == 0)
		unit = 1;
	else if (strcmp(p, "m") == 0)
		unit = 60;
	else if (strcmp(p, "h") == 0)
		unit = 3600;
	else if (strcmp(p, "d") == 0)
		unit = 86400;
	else if (strcmp(p, "w") == 0)
		unit = 7 * 86400;
	else
		return KW_EINVAL;
	if (from > KW_TIME_MAX || n * unit > (long long)(KW_TIME_MAX - from))
		return KW_EINVAL;
	*until = from + (time_t)(n * unit);
	return KW_OK;
}

/*
 * The next budget reset for a budget_duration, on LiteLLM's standardized
 * UTC boundaries: 1d at the next midnight, 7d (or 1w) next Monday, 30d or
 * 1mo the 1st of next month; any other duration now + N.  0 when the
 * duration does not parse.
 */
time_t
kw_time_budget_reset(const char *duration, time_t now)
{
	struct tm tm;
	time_t until;

	if (kw_time_parse_duration(duration, now, &until) != KW_OK)
		return 0;
	gmtime_r(&now, &tm);
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	if (strcmp(duration, "1d") == 0) {
		tm.tm_mday += 1;
	} else if (strcmp(duration, "7d") == 0 || strcmp(duration, "1w") == 0) {
		tm.tm_mday += 7 - (tm.tm_wday + 6) % 7;	/* days to next Monday, 1..7 */
	} else if (strcmp(duration, "30d") == 0 || strcmp(duration, "1mo") == 0) {
		tm.tm_mday = 1;
		tm.tm_mon += 1;
	} else {
		return until;
	}
	return timegm(&tm);
}

/* Reads exactly n digits of s into *v; 0 when they are not there. */
static int
digits(const char *s, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return 0;
		*v = *v * 10 + (s[i] - '0');
	}
	return 1;
}

/*
 * Parses an RFC 3339 date-time, "2026-11-22T07:36:43Z", with optional
 * fractions of a second and an offset Z or +HH:MM / -HH:MM; without an
 * offset it is read as UTC (as LiteLLM reads a naive datetime).  Years
 * have four digits, so every time parsed formats back whole.  KW_EINVAL
 * for anything else, and for an impossible date or time.
 */
enum kw_err
kw_time_parse(const char *s, time_t *out)
{
	int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
	struct tm tm = { 0 };
	time_t t;

	if (s == NULL || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
	    s[7] != '-' || !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
	    !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
	    !digits(s + 17, 2, &sec))
		return KW_EINVAL;
	s += 19;
	if (*s == '.') {
		if (!isdigit((unsigned char)s[1]))
			return KW_EINVAL;
		for (s++; isdigit((unsigned char)*s); s++)
			;
	}
	if (*s == 'Z' || *s == 'z') {
		s++;
	} else if (*s == '+' || *s == '-') {
		sign = *s == '+' ? 1 : -1;
		if (!digits(s + 1, 2, &oh) || s[3] != ':' || !digits(s + 4, 2, &om) || oh > 23 ||
		    om > 59)
			return KW_EINVAL;
		s += 6;
	}
	if (*s != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return KW_EINVAL;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec > 59 ? 59 : sec;	/* a leap second is its minute's last */
	t = timegm(&tm);
	if (tm.tm_mday != d)
		return KW_EINVAL;	/* timegm moved 31 April into May */
	t -= sign * (oh * 3600 + om * 60);
	if (t < 0 || t > KW_TIME_MAX)
		return KW_EINVAL;
	*out = t;
	return KW_OK;
}
