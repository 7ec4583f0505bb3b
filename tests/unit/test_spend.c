/* test_spend.c: the spend history's hourly rows (spend.c) in a fresh Berkeley DB environment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "tap.h"

static char dir[] = "/tmp/kw-test-spend-XXXXXX";
#define T0 ((time_t)1772359200)	/* 2026-03-01T10:00:00Z */

struct report {
	time_t now;
	const char *token;
	json_object *key;
	struct kw_usage in;
};

static enum kw_err
record_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct report *r = baton;

	return kw_spend_record(st, txn, r->now, r->token, r->key, &r->in);
}

static enum kw_err
report(struct kw_store *st, time_t now, const char *token, const char *user, const char *model,
    const char *end_user, double cost, int64_t tokens)
{
	struct report r = { .now = now, .token = token, .key = json_object_new_object(),
		.in = { .model = model, .end_user = end_user, .cost = cost, .tokens = tokens } };
	enum kw_err rc;

	if (user != NULL)
		json_object_object_add(r.key, "user_id", json_object_new_string(user));
	rc = kw_store_txn(st, record_body, &r);
	json_object_put(r.key);
	return rc;
}

struct seen {
	int n;
	double spend;
	int64_t requests, tokens;
	char first_model[32];
	int64_t first_hour;
};

static int
count_row(json_object *row, void *baton)
{
	struct seen *s = baton;
	const char *model = kw_json_str(row, "model");

	if (s->n++ == 0) {
		snprintf(s->first_model, sizeof(s->first_model), "%s", model ? model : "(none)");
		s->first_hour = (int64_t)kw_json_num(row, "hour", -1);
	}
	s->spend += kw_json_num(row, "spend", 0);
	s->requests += (int64_t)kw_json_num(row, "api_requests", 0);
	s->tokens += (int64_t)kw_json_num(row, "total_tokens", 0);
	return 0;
}

struct range {
	time_t from, until;
	struct seen seen;
};

static enum kw_err
rows_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct range *r = baton;

	memset(&r->seen, 0, sizeof(r->seen));
	return kw_spend_rows(st, txn, r->from, r->until, count_row, &r->seen);
}

static struct seen
rows(struct kw_store *st, time_t from, time_t until)
{
	struct range r = { .from = from, .until = until };

	if (kw_store_txn(st, rows_body, &r) != KW_OK)
		r.seen.n = -1;
	return r.seen;
}

int
main(void)
{
	struct kw_store *st;
	struct seen s;
	char cmd[128];
	const char *tok = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
	const char *tok2 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

	kw_log_threshold = KW_LOG_ERROR;
	if (mkdtemp(dir) == NULL || kw_crypto_init() != KW_OK ||
	    kw_store_open(&st, dir, KW_STORE_RECOVER) != KW_OK)
		return 1;

	is_int(report(st, T0 + 60, tok, "u1", "gpt-4o", NULL, 1.0, 10), KW_OK, "a report is recorded");
	is_int(report(st, T0 + 3599, tok, "u1", "gpt-4o", NULL, 0.5, 5), KW_OK, "another in the same hour");
	is_int(report(st, T0 + 3600, tok, "u1", "gpt-4o", NULL, 0.25, 0), KW_OK, "one in the next hour");
	is_int(report(st, T0 + 120, tok, "u1", NULL, NULL, 2.0, 0), KW_OK, "one without a model");
	is_int(report(st, T0 + 120, tok, "u1", "", NULL, 4.0, 0), KW_OK, "one with an empty model");
	is_int(report(st, T0 + 120, tok2, NULL, "gpt-4o", "cust", 8.0, -3), KW_OK,
	    "another key's, for an end user, with negative tokens");

	s = rows(st, T0, T0 + 3600);
	is_int(s.n, 4, "the first hour: a row per key, model and end user; none and \"\" apart");
	ok(s.spend == 15.5, "the first hour's rows add up (%g)", s.spend);
	is_int(s.requests, 5, "each report is one request");
	is_int(s.tokens, 15, "tokens add up; negative ones count nothing");
	is_int(s.first_hour, T0, "a row names its hour");

	s = rows(st, T0 + 3600, T0 + 7200);
	is_int(s.n, 1, "the next hour has its own row");
	is_str(s.first_model, "gpt-4o", "with its model");
	s = rows(st, T0 + 1800, T0 + 3601);
	is_int(s.n, 5, "a range starts at its first hour's start and ends before until");
	s = rows(st, 0, KW_TIME_MAX);
	is_int(s.n, 5, "all time holds every row");
	s = rows(st, T0 + 7200, KW_TIME_MAX);
	is_int(s.n, 0, "a range after the last row is empty");
	s = rows(st, 0, T0);
	is_int(s.n, 0, "a range before the first row is empty");

	/* the row is written as text: what it holds reads back as a tree of it would */
	is_int(report(st, T0 + 7 * 3600, tok, "u\"2", "quo\"te/\n\\", "e/u", 0.1, 1), KW_OK,
	    "a report whose names need escaping");
	is_int(report(st, T0 + 7 * 3600 + 5, tok, "u\"2", "quo\"te/\n\\", "e/u", 0.2, 2), KW_OK,
	    "and another to the same row");
	s = rows(st, T0 + 7 * 3600, T0 + 8 * 3600);
	is_int(s.n, 1, "one row for both");
	is_str(s.first_model, "quo\"te/\n\\", "its model reads back as it was sent");
	ok(s.spend == 0.1 + 0.2, "its spend is the sum as a double adds it (%.17g)", s.spend);
	is_int(s.requests, 2, "two requests");
	is_int(s.tokens, 3, "three tokens");

	kw_store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	return tap_done();
}
