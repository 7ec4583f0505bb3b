/* face_spend.c: LiteLLM's spend history routes (/spend/logs, /global/spend/report, /user/daily/activity) over spend.c's hourly rows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/* What a spend request reads: a range of hours and the rows' filters; strings borrowed. */
struct spend_query {
	struct kw_req *req;
	time_t from, until;		/* hours from .. until (exclusive) */
	int ranged;			/* start_date and end_date were given */
	char token[KW_TOKEN_LEN + 1];	/* "" any key */
	const char *user_id, *team_id, *customer, *model, *request_id;
	int (*shape)(struct spend_query *, json_object *row);	/* adds a row to answer */
	/* when not NULL, builds answer from what shape gathered, in the same transaction */
	enum kw_err (*finish)(struct kw_store *, DB_TXN *, struct spend_query *);
	json_object *answer;		/* owned; rebuilt on every attempt */
	json_object *days;		/* owned; the same */
	const char *group_by;
};

/* A UTC day "YYYY-MM-DD" into its first second; 0 for anything else (a 13th month too). */
static int
parse_day(const char *s, time_t *out)
{
	struct tm tm = { 0 }, back;
	const char *end;

	if (s == NULL || strlen(s) != 10 || (end = strptime(s, "%Y-%m-%d", &tm)) == NULL ||
	    *end != '\0')
		return 0;
	*out = timegm(&tm);
	gmtime_r(out, &back);
	return back.tm_mday == tm.tm_mday && back.tm_mon == tm.tm_mon && *out >= 0;
}

static void
day_of(time_t t, char out[11])
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 11, "%Y-%m-%d", &tm);
}

/*
 * Reads start_date and end_date (both UTC days, inclusive) into q's range:
 * required says LiteLLM refuses a request without them ("Please provide
 * start_date and end_date", 400); without them and not required, all time.
 */
static enum kw_err
spend_range(struct spend_query *q, int required)
{
	struct kw_req *req = q->req;
	const char *start = kw_json_str(req->query, "start_date");
	const char *end = kw_json_str(req->query, "end_date");
	time_t from, to;

	q->from = 0;
	q->until = KW_TIME_MAX;
	if (start == NULL || end == NULL) {
		if (!required)
			return KW_OK;
		kw_error_set(&req->err, KW_EINVAL, start == NULL ? "start_date" : "end_date",
		    "Please provide start_date and end_date");
		return KW_EINVAL;
	}
	if (!parse_day(start, &from)) {
		kw_error_set(&req->err, KW_EINVAL, "start_date", "must be a UTC day, YYYY-MM-DD");
		return KW_EINVAL;
	}
	if (!parse_day(end, &to)) {
		kw_error_set(&req->err, KW_EINVAL, "end_date", "must be a UTC day, YYYY-MM-DD");
		return KW_EINVAL;
	}
	if (to < from) {
		kw_error_set(&req->err, KW_EINVAL, "end_date", "must not be before start_date");
		return KW_EINVAL;
	}
	q->from = from;
	q->until = to + 86400;
	q->ranged = 1;
	return KW_OK;
}

/*
 * The caller and what they may read, as LiteLLM's view_spend_logs: admins
 * and admin viewers everything the filters name; an internal user (or
 * viewer) only their own, user_id overridden whatever it named; a key
 * without a user only itself.
 */
static enum kw_err
spend_scope(struct spend_query *q, const char *user_param, const char *key_param)
{
	struct kw_req *req = q->req;
	const struct kw_caller *c;
	const char *key = kw_json_str(req->query, key_param);
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	c = req->caller;
	q->user_id = kw_json_str(req->query, user_param);
	if (key != NULL)
		kw_keys_token_of(key, q->token);
	if (kw_auth_reads_all(c))
		return KW_OK;
	if (c->user_id[0] != '\0') {
		q->user_id = c->user_id;
	} else {
		if (q->token[0] != '\0' && strcmp(q->token, c->token) != 0) {
			kw_error_set(&req->err, KW_EFORBIDDEN, key_param,
			    "a key without a user reads its own spend only");
			return KW_EFORBIDDEN;
		}
		snprintf(q->token, sizeof(q->token), "%s", c->token);
	}
	return KW_OK;
}

static int
field_is(json_object *row, const char *name, const char *want)
{
	const char *have = kw_json_str(row, name);

	return want == NULL || (have != NULL && strcmp(have, want) == 0);
}

static int
visit_row(json_object *row, void *baton)
{
	struct spend_query *q = baton;

	if ((q->token[0] == '\0' || field_is(row, "api_key", q->token)) &&
	    field_is(row, "user", q->user_id) && field_is(row, "team_id", q->team_id) &&
	    field_is(row, "end_user", q->customer) && field_is(row, "model", q->model) &&
	    field_is(row, "request_id", q->request_id))
		return q->shape(q, row);
	return 0;
}

static enum kw_err
read_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct spend_query *q = baton;
	enum kw_err rc;

	json_object_put(q->answer);
	json_object_put(q->days);
	q->answer = json_object_new_array();
	q->days = json_object_new_object();
	rc = kw_spend_rows(st, txn, q->from, q->until, visit_row, q);
	return rc == KW_OK && q->finish != NULL ? q->finish(st, txn, q) : rc;
}

/* Runs the query: *answer and the days (both in q, owned by q) as its shape left them. */
static enum kw_err
spend_read(struct spend_query *q)
{
	return kw_store_txn(q->req->store, read_body, q);
}

static void
spend_query_free(struct spend_query *q)
{
	json_object_put(q->answer);
	json_object_put(q->days);
}

/* --- small sums ----------------------------------------------------- */

static void
add_num(json_object *obj, const char *name, double v)
{
	json_object_object_add(obj, name, json_object_new_double(kw_json_num(obj, name, 0) + v));
}

static void
add_int(json_object *obj, const char *name, int64_t v)
{
	json_object_object_add(obj, name,
	    json_object_new_int64((int64_t)kw_json_num(obj, name, 0) + v));
}

/* obj[name] (borrowed), made an empty object when missing. */
static json_object *
child(json_object *obj, const char *name)
{
	json_object *c;

	if (!json_object_object_get_ex(obj, name, &c) || c == NULL) {
		c = json_object_new_object();
		json_object_object_add(obj, name, c);
	}
	return c;
}

static const char *
name_or(json_object *row, const char *field, const char *otherwise)
{
	const char *s = kw_json_str(row, field);

	return s != NULL ? s : otherwise;
}

static void
row_day(json_object *row, char day[11])
{
	day_of((time_t)kw_json_num(row, "hour", 0), day);
}

/* --- GET /spend/logs ------------------------------------------------ */

/* An hourly row as LiteLLM_SpendLogs answers one: startTime and endTime its hour. */
static int
shape_log_row(struct spend_query *q, json_object *row)
{
	json_object *out = json_object_new_object();
	time_t hour = (time_t)kw_json_num(row, "hour", 0);
	static const char *const copied[] = { "request_id", "api_key", "user", "team_id",
		"model", "end_user", "spend", "total_tokens", "api_requests" };

	for (size_t i = 0; i < sizeof(copied) / sizeof(*copied); i++)
		json_object_object_add(out, copied[i],
		    json_object_get(json_object_object_get(row, copied[i])));
	kw_json_set_time(out, "startTime", hour);
	kw_json_set_time(out, "endTime", hour + KW_SPEND_HOUR);
	json_object_array_add(q->answer, out);
	return 0;
}

/*
 * A row into its day's summary, as LiteLLM's summarized view_spend_logs:
 * the day's spend, spend under the key's hash, per user and per model.
 */
static int
shape_log_day(struct spend_query *q, json_object *row)
{
	char day[11];
	double spend = kw_json_num(row, "spend", 0);
	json_object *d;

	row_day(row, day);
	d = child(q->days, day);
	add_num(d, "spend", spend);
	add_num(d, kw_json_str(row, "api_key"), spend);
	add_num(child(d, "users"), name_or(row, "user", "null"), spend);
	add_num(child(d, "models"), name_or(row, "model", "null"), spend);
	return 0;
}

/*
 * GET /spend/logs: LiteLLM's view_spend_logs over the hourly rows.  Days
 * with spend in order, then every day after the last to end_date with
 * nothing spent, as LiteLLM fills them.
 */
enum kw_err
kw_op_spend_logs(struct kw_req *req, struct kw_resp *resp)
{
	struct spend_query q = { .req = req };
	json_object *summarize = json_object_object_get(req->query, "summarize");
	int by_day;
	enum kw_err rc;

	if ((rc = spend_scope(&q, "user_id", "api_key")) != KW_OK ||
	    (rc = spend_range(&q, 0)) != KW_OK)
		return rc;
	q.request_id = kw_json_str(req->query, "request_id");
	by_day = q.ranged && (summarize == NULL || json_object_get_boolean(summarize));
	q.shape = by_day ? shape_log_day : shape_log_row;
	if ((rc = spend_read(&q)) != KW_OK) {
		spend_query_free(&q);
		return rc;
	}
	if (by_day) {
		time_t last = -1, t;
		char day[11];

		json_object_object_foreach(q.days, name, d) {
			json_object_object_add(d, "startTime", json_object_new_string(name));
			json_object_array_add(q.answer, json_object_get(d));
			parse_day(name, &last);
		}
		for (t = last + 86400; last >= 0 && t < q.until && t <= req->now; t += 86400) {
			json_object *none = json_object_new_object();

			day_of(t, day);
			json_object_object_add(none, "startTime", json_object_new_string(day));
			json_object_object_add(none, "spend", json_object_new_double(0));
			json_object_object_add(none, "users", json_object_new_object());
			json_object_object_add(none, "models", json_object_new_object());
			json_object_array_add(q.answer, none);
		}
	} else {
		/* newest first, as LiteLLM orders the logs by startTime desc */
		size_t n = json_object_array_length(q.answer);
		json_object *rev = json_object_new_array_ext((int)n);

		for (size_t i = n; i > 0; i--)
			json_object_array_add(rev, json_object_get(json_object_array_get_idx(q.answer,
			    i - 1)));
		json_object_put(q.answer);
		q.answer = rev;
	}
	kw_resp_json(resp, 200, json_object_get(q.answer));
	spend_query_free(&q);
	return KW_OK;
}

/* --- GET /global/spend/report --------------------------------------- */

/* A row into its key's totals and the key's per-model details (group_by api_key). */
static int
shape_report_key(struct spend_query *q, json_object *row)
{
	const char *model = name_or(row, "model", "");
	json_object *k = child(q->days, kw_json_str(row, "api_key"));
	json_object *m = child(child(k, "models"), model);
	double spend = kw_json_num(row, "spend", 0);
	int64_t tokens = (int64_t)kw_json_num(row, "total_tokens", 0);

	add_num(k, "total_cost", spend);
	add_int(k, "total_tokens", tokens);
	if (!kw_json_has(m, "model"))
		json_object_object_add(m, "model",
		    json_object_get(json_object_object_get(row, "model")));
	add_num(m, "total_cost", spend);
	add_int(m, "total_tokens", tokens);
	return 0;
}

/* A row into its day's team or customer, and that one's model and key (group_by team, customer). */
static int
shape_report_group(struct spend_query *q, json_object *row)
{
	int by_team = strcmp(q->group_by, "team") == 0;
	const char *who = kw_json_str(row, by_team ? "team_id" : "end_user");
	char day[11], entry[KW_ID_MAX * 2 + KW_TOKEN_LEN + 8];
	json_object *g, *e;
	double spend = kw_json_num(row, "spend", 0);
	int64_t tokens = (int64_t)kw_json_num(row, "total_tokens", 0);

	row_day(row, day);
	g = child(child(child(q->days, day), "groups"), who != NULL ? who : "");
	if (!kw_json_has(g, "who"))
		json_object_object_add(g, "who", who ? json_object_new_string(who) : NULL);
	add_num(g, "total_spend", spend);
	snprintf(entry, sizeof(entry), "%s|%s", name_or(row, "model", ""),
	    kw_json_str(row, "api_key"));
	e = child(child(g, "entries"), entry);
	if (!kw_json_has(e, "model")) {
		json_object_object_add(e, "model",
		    json_object_get(json_object_object_get(row, "model")));
		json_object_object_add(e, "api_key",
		    json_object_get(json_object_object_get(row, "api_key")));
	}
	add_num(e, "spend", spend);
	add_int(e, "total_tokens", tokens);
	return 0;
}

static int
by_total_cost_desc(const void *a, const void *b)
{
	double x = kw_json_num(*(json_object *const *)a, "total_cost", 0);
	double y = kw_json_num(*(json_object *const *)b, "total_cost", 0);

	return x < y ? 1 : x > y ? -1 : 0;
}

/* The keys' totals as LiteLLM's report per api_key: most spent first, tokens not split in and out. */
static enum kw_err
report_keys(struct kw_store *st, DB_TXN *txn, struct spend_query *q)
{
	(void)st;
	(void)txn;
	json_object_object_foreach(q->days, token, k) {
		json_object *details = json_object_new_array(), *out = json_object_new_object();

		json_object_object_foreach(child(k, "models"), model, m) {
			(void)model;
			json_object_object_add(m, "total_input_tokens", NULL);
			json_object_object_add(m, "total_output_tokens", NULL);
			json_object_array_add(details, json_object_get(m));
		}
		json_object_object_add(out, "api_key", json_object_new_string(token));
		json_object_object_add(out, "total_cost",
		    json_object_get(json_object_object_get(k, "total_cost")));
		json_object_object_add(out, "total_input_tokens", NULL);
		json_object_object_add(out, "total_output_tokens", NULL);
		json_object_object_add(out, "total_tokens",
		    json_object_get(json_object_object_get(k, "total_tokens")));
		json_object_object_add(out, "model_details", details);
		json_object_array_add(q->answer, out);
	}
	json_object_array_sort(q->answer, by_total_cost_desc);
	return KW_OK;
}

/* A team's name in the report (owned): its alias, else its id; LiteLLM's 'Unassigned Team' for none. */
static enum kw_err
team_name(struct kw_store *st, DB_TXN *txn, const char *team_id, json_object **name)
{
	json_object *team;
	const char *alias;
	enum kw_err rc;

	*name = NULL;
	if (team_id == NULL) {
		*name = json_object_new_string("Unassigned Team");
		return KW_OK;
	}
	rc = kw_rec_get(st, txn, KW_DB_TEAMS, team_id, 0, &team);
	if (rc != KW_OK && rc != KW_ENOTFOUND)
		return rc;
	alias = rc == KW_OK ? kw_json_str(team, "team_alias") : NULL;
	*name = json_object_new_string(alias != NULL ? alias : team_id);
	if (rc == KW_OK)
		json_object_put(team);
	return KW_OK;
}

/* The days as LiteLLM's report per team or customer: {group_by_day, teams|customers: [...]}. */
static enum kw_err
report_groups(struct kw_store *st, DB_TXN *txn, struct spend_query *q)
{
	int by_team = strcmp(q->group_by, "team") == 0;

	json_object_object_foreach(q->days, day, d) {
		json_object *out = json_object_new_object(), *groups = json_object_new_array();

		json_object_object_add(out, "group_by_day", json_object_new_string(day));
		json_object_object_add(out, by_team ? "teams" : "customers", groups);
		json_object_array_add(q->answer, out);
		json_object_object_foreach(child(d, "groups"), id, g) {
			json_object *o = json_object_new_object(), *meta = json_object_new_array();
			json_object *who = json_object_object_get(g, "who");

			(void)id;
			if (by_team) {
				json_object *name;
				enum kw_err rc = team_name(st, txn,
				    who != NULL ? json_object_get_string(who) : NULL, &name);

				if (rc != KW_OK) {
					json_object_put(o);
					json_object_put(meta);
					return rc;
				}
				json_object_object_add(o, "team_name", name);
				json_object_object_add(o, "team_id", json_object_get(who));
			} else {
				json_object_object_add(o, "customer", json_object_get(who));
			}
			json_object_object_add(o, "total_spend",
			    json_object_get(json_object_object_get(g, "total_spend")));
			json_object_object_foreach(child(g, "entries"), ename, e) {
				(void)ename;
				json_object_array_add(meta, json_object_get(e));
			}
			json_object_object_add(o, "metadata", meta);
			json_object_array_add(groups, o);
		}
	}
	return KW_OK;
}

/*
 * GET /global/spend/report: LiteLLM's get_global_spend_report.  With
 * api_key or internal_user_id, or group_by api_key, per key; else per day
 * and team or customer.  Admins and admin viewers (LiteLLM keeps it for
 * its admin UI).
 */
enum kw_err
kw_op_global_spend_report(struct kw_req *req, struct kw_resp *resp)
{
	struct spend_query q = { .req = req };
	const char *group_by = kw_json_str(req->query, "group_by");
	enum kw_err rc;

	if ((rc = kw_auth_admin_view(req, "only admins read the spend report, not ")) != KW_OK ||
	    (rc = spend_scope(&q, "internal_user_id", "api_key")) != KW_OK ||
	    (rc = spend_range(&q, 1)) != KW_OK)
		return rc;
	q.team_id = kw_json_str(req->query, "team_id");
	q.customer = kw_json_str(req->query, "customer_id");
	q.group_by = group_by != NULL ? group_by : "team";
	if (q.token[0] != '\0' || q.user_id != NULL || strcmp(q.group_by, "api_key") == 0) {
		q.shape = shape_report_key;
		q.finish = report_keys;
	} else {
		q.shape = shape_report_group;
		q.finish = report_groups;
	}
	if ((rc = spend_read(&q)) == KW_OK)
		kw_resp_json(resp, 200, json_object_get(q.answer));
	spend_query_free(&q);
	return rc;
}

/* --- GET /user/daily/activity --------------------------------------- */

static const char *const metric_ints[] = { "prompt_tokens", "completion_tokens",
	"total_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "api_requests",
	"successful_requests", "failed_requests" };

/* LiteLLM's SpendMetrics, zero. */
static json_object *
metrics_new(void)
{
	json_object *m = json_object_new_object();

	json_object_object_add(m, "spend", json_object_new_double(0));
	for (size_t i = 0; i < sizeof(metric_ints) / sizeof(*metric_ints); i++)
		json_object_object_add(m, metric_ints[i], json_object_new_int64(0));
	return m;
}

/* Adds a row to metrics m: every settled request counts as a successful one. */
static void
metrics_add(json_object *m, json_object *row)
{
	int64_t requests = (int64_t)kw_json_num(row, "api_requests", 0);

	add_num(m, "spend", kw_json_num(row, "spend", 0));
	add_int(m, "total_tokens", (int64_t)kw_json_num(row, "total_tokens", 0));
	add_int(m, "api_requests", requests);
	add_int(m, "successful_requests", requests);
}

/* breakdown[name] as {metrics, metadata} (borrowed), made when missing. */
static json_object *
bucket(json_object *breakdown, const char *name)
{
	json_object *b;

	if (!json_object_object_get_ex(breakdown, name, &b)) {
		b = json_object_new_object();
		json_object_object_add(b, "metrics", metrics_new());
		json_object_object_add(b, "metadata", json_object_new_object());
		json_object_object_add(breakdown, name, b);
	}
	return b;
}

static int
shape_activity(struct spend_query *q, json_object *row)
{
	char day[11];
	json_object *d, *br, *b;
	const char *model = kw_json_str(row, "model");

	row_day(row, day);
	if (!json_object_object_get_ex(q->days, day, &d)) {
		d = json_object_new_object();
		br = json_object_new_object();
		json_object_object_add(d, "date", json_object_new_string(day));
		json_object_object_add(d, "metrics", metrics_new());
		json_object_object_add(br, "models", json_object_new_object());
		json_object_object_add(br, "model_groups", json_object_new_object());
		json_object_object_add(br, "providers", json_object_new_object());
		json_object_object_add(br, "api_keys", json_object_new_object());
		json_object_object_add(br, "entities", json_object_new_object());
		json_object_object_add(d, "breakdown", br);
		json_object_object_add(q->days, day, d);
	}
	br = json_object_object_get(d, "breakdown");
	metrics_add(json_object_object_get(d, "metrics"), row);
	if (model != NULL) {
		metrics_add(json_object_object_get(bucket(child(br, "models"), model), "metrics"), row);
		metrics_add(json_object_object_get(bucket(child(br, "model_groups"), model),
		    "metrics"), row);
	}
	b = bucket(child(br, "api_keys"), kw_json_str(row, "api_key"));
	metrics_add(json_object_object_get(b, "metrics"), row);
	json_object_object_add(json_object_object_get(b, "metadata"), "team_id",
	    json_object_get(json_object_object_get(row, "team_id")));
	metrics_add(json_object_object_get(bucket(child(br, "entities"),
	    name_or(row, "user", "")), "metrics"), row);
	return 0;
}

/*
 * GET /user/daily/activity: LiteLLM's get_user_daily_activity, each day's
 * metrics and its breakdown by model, key and user (entities), a page of
 * days, with totals over the whole range.
 */
enum kw_err
kw_op_user_daily_activity(struct kw_req *req, struct kw_resp *resp)
{
	struct spend_query q = { .req = req, .shape = shape_activity,
		.model = kw_json_str(req->query, "model") };
	int64_t page = (int64_t)kw_json_num(req->query, "page", 1);
	int64_t size = (int64_t)kw_json_num(req->query, "page_size", 50);
	json_object *body, *results, *meta, *total = metrics_new();
	size_t n, first;
	enum kw_err rc;

	if ((rc = spend_scope(&q, "user_id", "api_key")) != KW_OK ||
	    (rc = spend_range(&q, 1)) != KW_OK || (rc = spend_read(&q)) != KW_OK) {
		json_object_put(total);
		spend_query_free(&q);
		return rc;
	}
	results = json_object_new_array();
	json_object_object_foreach(q.days, day, d) {
		(void)day;
		json_object_array_add(results, json_object_get(d));
		json_object_object_foreach(json_object_object_get(d, "metrics"), name, v) {
			if (strcmp(name, "spend") == 0)
				add_num(total, name, json_object_get_double(v));
			else
				add_int(total, name, json_object_get_int64(v));
		}
	}
	n = json_object_array_length(results);
	first = (size_t)((page - 1) * size);
	body = json_object_new_object();
	{
		json_object *slice = json_object_new_array();

		for (size_t i = first; i < n && i < first + (size_t)size; i++)
			json_object_array_add(slice,
			    json_object_get(json_object_array_get_idx(results, i)));
		json_object_object_add(body, "results", slice);
		json_object_put(results);
	}
	meta = json_object_new_object();
	json_object_object_foreach(total, name, v) {
		char tname[64];

		/* total_tokens stays itself: LiteLLM's DailySpendMetadata */
		snprintf(tname, sizeof(tname), "%s%s", strncmp(name, "total_", 6) == 0 ? "" :
		    "total_", name);
		json_object_object_add(meta, tname, json_object_get(v));
	}
	json_object_put(total);
	json_object_object_add(meta, "page", json_object_new_int64(page));
	json_object_object_add(meta, "total_pages",
	    json_object_new_int64((int64_t)((n + (size_t)size - 1) / (size_t)size)));
	json_object_object_add(meta, "has_more", json_object_new_boolean(first + (size_t)size < n));
	json_object_object_add(body, "metadata", meta);
	kw_resp_json(resp, 200, body);
	spend_query_free(&q);
	return KW_OK;
}
