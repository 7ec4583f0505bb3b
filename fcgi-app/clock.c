/* clock.c: the time requests are judged at, which tests may move. */
#include <stdio.h>
#include <stdlib.h>
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
