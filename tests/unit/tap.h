/* tap.h: a minimal TAP producer for the C unit tests, run under prove. */
#ifndef KW_TAP_H
#define KW_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

static int tap_ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
tap_ok(int cond, const char *fmt, ...)
{
	va_list ap;

	tap_n++;
	if (!cond)
		tap_failed++;
	printf("%sok %d - ", cond ? "" : "not ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	return cond;
}

#define ok(cond, ...) tap_ok((cond) != 0, __VA_ARGS__)
#define is_int(got, want, name) do { \
	long long g_ = (long long)(got), w_ = (long long)(want); \
	if (!tap_ok(g_ == w_, "%s", name)) \
		printf("#   got %lld, want %lld (%s:%d)\n", g_, w_, __FILE__, __LINE__); \
} while (0)
#define is_str(got, want, name) do { \
	const char *g_ = (got), *w_ = (want); \
	if (!tap_ok(g_ != NULL && w_ != NULL && strcmp(g_, w_) == 0, "%s", name)) \
		printf("#   got \"%s\", want \"%s\" (%s:%d)\n", g_ ? g_ : "(null)", \
		    w_ ? w_ : "(null)", __FILE__, __LINE__); \
} while (0)

/* Prints the plan and returns the process exit status. */
static int
tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}

#endif /* KW_TAP_H */
