/* test_limits.c: the limits engine against a fresh store, with the clock in the test's hands. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "tap.h"

static char dir[] = "/tmp/kw-test-limits-XXXXXX";
static struct kw_store *st;

/* 2026-11-22T08:00:00Z, the start of a minute. */
#define T0 ((time_t)1795334400)

struct put {
	enum kw_db db;
	const char *id;
	json_object *rec;
};

static enum kw_err
put_body(struct kw_store *s, DB_TXN *txn, void *baton)
{
	struct put *p = baton;

	return kw_rec_put(s, txn, p->db, p->id, p->rec, 0);
}

/* Stores a key for secret with the settings in json; returns its token (static). */
static const char *
make_key(const char *secret, const char *json)
{
	static char token[KW_TOKEN_LEN + 1];
	json_object *rec = json_tokener_parse(json);
	struct put p = { KW_DB_KEYS, token, rec };

	kw_crypto_sha256_hex(secret, strlen(secret), token);
	json_object_object_add(rec, "token", json_object_new_string(token));
	kw_store_txn(st, put_body, &p);
	json_object_put(rec);
	return token;
}

static void
make_record(enum kw_db db, const char *id, const char *json)
{
	json_object *rec = json_tokener_parse(json);
	struct put p = { db, id, rec };

	kw_store_txn(st, put_body, &p);
	json_object_put(rec);
}

static int checks, disagreements;

/*
 * The /key/verify answer of v parsed back, owned by a list freed at exit;
 * NULL when it is not JSON (a test then fails on it).
 */
static json_object *
answer_of(const struct kw_verdict *v)
{
	static json_object *kept;
	json_object *a = v->answer != NULL ? json_tokener_parse(v->answer->buf) : NULL;

	if (a == NULL)
		fprintf(stderr, "# not JSON: %s\n", v->answer != NULL ? v->answer->buf : "(none)");

	if (kept == NULL)
		kept = json_object_new_array();
	json_object_array_add(kept, a);
	return a;
}

static void
diag_disagreement(const char *secret, enum kw_verdict_code quiet, enum kw_verdict_code full)
{
	printf("# %s: verdict only %s, with the answer %s\n", secret,
	    kw_verdict_code_name(quiet), kw_verdict_code_name(full));
}

/* Checks secret at now with the given model, cost and request id; returns the code. */
static enum kw_verdict_code
check(const char *secret, time_t now, const char *model, double cost, const char *request_id,
    struct kw_verdict *v)
{
	struct kw_check in = {
		.key = secret, .model = model, .expected_cost = cost, .request_id = request_id,
	};
	struct kw_check quiet = in;
	struct kw_verdict mine, q;
	enum kw_verdict_code code;

	/* the authorizer's path (summaries, no answer) must agree with the answer's (records) */
	quiet.verdict_only = quiet.dry_run = 1;
	if (kw_limits_check(st, now, &quiet, &q) != KW_OK)
		q.code = (enum kw_verdict_code)-1;
	if (v == NULL)
		v = &mine;
	if (kw_limits_check(st, now, &in, v) != KW_OK)
		return (enum kw_verdict_code)-1;
	code = v->code;
	checks++;
	if (q.code != code && code != KW_V_DUPLICATE_REQUEST) {	/* dry runs skip that one */
		disagreements++;
		diag_disagreement(secret, q.code, code);
	}
	if (v == &mine)
		kw_verdict_clear(v);
	return code;
}

static double
usage(const char *key, time_t now, const char *request_id, const char *model, int64_t tokens,
    double cost, int *duplicate)
{
	struct kw_usage in = { .key = key, .request_id = request_id, .model = model, .tokens = tokens,
	    .cost = cost };
	struct kw_error err;
	json_object *answer = NULL;
	double spend = -1;

	if (kw_limits_record(st, now, &in, &answer, &err) == KW_OK) {
		spend = kw_json_num(answer, "spend", -1);
		if (duplicate != NULL)
			*duplicate = kw_json_bool(answer, "duplicate");
	}
	json_object_put(answer);
	return spend;
}

static void
test_standing(void)
{
	struct kw_verdict v;

	make_key("sk-plain", "{}");
	is_int(check("sk-plain", T0, NULL, 0, NULL, &v), KW_V_VALID, "a key without limits is valid");
	ok(json_object_object_length(answer_of(&v)) > 5, "and the answer describes it");
	kw_verdict_clear(&v);
	is_int(check("sk-nobody", T0, NULL, 0, NULL, &v), KW_V_NOT_FOUND, "an unknown key");
	is_int(json_object_object_length(answer_of(&v)), 3, "is told valid, code and message only");
	kw_verdict_clear(&v);
	is_int(check(make_key("sk-plain", "{}"), T0, NULL, 0, NULL, NULL), KW_V_NOT_FOUND,
	    "a hash is not a credential");
	make_key("sk-blocked", "{\"blocked\": true}");
	is_int(check("sk-blocked", T0, NULL, 0, NULL, NULL), KW_V_BLOCKED, "blocked");
	make_key("sk-expired", "{\"expires\": \"2026-11-22T07:59:59Z\"}");
	is_int(check("sk-expired", T0, NULL, 0, NULL, NULL), KW_V_EXPIRED, "expired");
	make_record(KW_DB_TEAMS, "frozen", "{\"blocked\": true}");
	make_key("sk-frozen-team", "{\"team_id\": \"frozen\"}");
	is_int(check("sk-frozen-team", T0, NULL, 0, NULL, NULL), KW_V_TEAM_BLOCKED, "team blocked");
	make_record(KW_DB_USERS, "gone", "{\"blocked\": true}");
	make_key("sk-gone-user", "{\"user_id\": \"gone\"}");
	is_int(check("sk-gone-user", T0, NULL, 0, NULL, NULL), KW_V_USER_BLOCKED, "user blocked");
}

static void
test_models_and_routes(void)
{
	struct kw_check in = { .key = "sk-routes" };
	struct kw_verdict v;
	static const struct {
		const char *route;
		enum kw_verdict_code want;
	} routes[] = {
		{ "/chat/completions", KW_V_VALID }, { "/v1/chat/completions", KW_V_VALID },
		{ "/embeddings", KW_V_ROUTE_NOT_ALLOWED }, { "/files/abc", KW_V_VALID },
		{ "/keys/x/y", KW_V_VALID }, { "/v2/chat/completions", KW_V_ROUTE_NOT_ALLOWED },
	};

	make_key("sk-models", "{\"models\": [\"gpt-4\", \"openai/*\"]}");
	is_int(check("sk-models", T0, "gpt-4", 0, NULL, NULL), KW_V_VALID, "an exact model");
	is_int(check("sk-models", T0, "openai/gpt-4o", 0, NULL, NULL), KW_V_VALID, "a wildcard");
	is_int(check("sk-models", T0, "claude-3", 0, NULL, NULL), KW_V_MODEL_NOT_ALLOWED,
	    "a model outside the list");
	make_key("sk-all", "{\"models\": [\"all-proxy-models\"]}");
	is_int(check("sk-all", T0, "anything", 0, NULL, NULL), KW_V_VALID, "all-proxy-models");
	make_record(KW_DB_TEAMS, "narrow", "{\"models\": [\"gpt-4\"]}");
	make_key("sk-team-models", "{\"team_id\": \"narrow\", \"models\": [\"all-team-models\"]}");
	is_int(check("sk-team-models", T0, "gpt-4", 0, NULL, NULL), KW_V_VALID, "all-team-models");
	is_int(check("sk-team-models", T0, "gpt-3.5", 0, NULL, NULL), KW_V_MODEL_NOT_ALLOWED,
	    "all-team-models is the team's list");
	make_key("sk-team-any", "{\"team_id\": \"narrow\"}");
	is_int(check("sk-team-any", T0, "gpt-3.5", 0, NULL, NULL), KW_V_MODEL_NOT_ALLOWED,
	    "a team's models bound a key with none");

	make_key("sk-routes", "{\"allowed_routes\": [\"/chat/completions\", \"/files/\", \"/keys/*\"]}");
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		in.route = routes[i].route;
		kw_limits_check(st, T0, &in, &v);
		ok(v.code == routes[i].want, "route %s", routes[i].route);
		kw_verdict_clear(&v);
	}
	make_key("sk-llm", "{\"allowed_routes\": [\"llm_api_routes\"]}");
	in.key = "sk-llm";
	in.route = "/key/generate";
	kw_limits_check(st, T0, &in, &v);
	is_int(v.code, KW_V_ROUTE_NOT_ALLOWED, "llm_api_routes excludes management routes");
	kw_verdict_clear(&v);
}

/* kw_limits_route_path: the path a server hands on, or a refusal for what it would rewrite. */
static void
test_route_path(void)
{
	static const struct {
		const char *raw, *want;	/* want NULL: refused */
	} cases[] = {
		{ "/v1/chat/completions", "/v1/chat/completions" },
		{ "/v1/%63hat/completions", "/v1/chat/completions" },
		{ "/v1//chat/", "/v1//chat/" },
		{ "/v1/a.b/..c", "/v1/a.b/..c" },
		{ "/v1/chat/../embeddings", NULL }, { "/v1/./x", NULL }, { "/v1/..", NULL },
		{ "/v1/%2e%2e/x", NULL }, { "/v1/%2E./x", NULL }, { "/v1/.%2e", NULL },
		{ "/v1/a%2fb", NULL }, { "/v1/a%5Cb", NULL }, { "/v1/a\\b", NULL },
		{ "/v1/%252e%252e/x", NULL }, { "/v1/%252F", NULL }, { "/v1/%zz", NULL },
		{ "/v1/%4", NULL }, { "/v1/a%00b", NULL }, { "/v1/%ff", NULL }, { "v1/x", NULL },
		{ "", NULL },
	};
	char out[64];
	const char *why;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum kw_err rc = kw_limits_route_path(cases[i].raw, strlen(cases[i].raw), out, &why);

		if (cases[i].want == NULL)
			ok(rc == KW_EINVAL && why != NULL, "route path %s refused (%s)", cases[i].raw,
			    why ? why : "no reason");
		else
			ok(rc == KW_OK && strcmp(out, cases[i].want) == 0, "route path %s is %s",
			    cases[i].raw, cases[i].want);
	}
}

static void
test_budgets(void)
{
	int admitted = 0, dup = 0;
	struct kw_verdict v;

	make_key("sk-budget", "{\"max_budget\": 1, \"spend\": 0}");
	/* five requests of 0.3 in flight at once: four fit before the reservations reach 1 */
	for (int i = 0; i < 5; i++)
		admitted += check("sk-budget", T0, NULL, 0.3, NULL, NULL) == KW_V_VALID;
	is_int(admitted, 4, "reservations stop admission at the budget: 4 of 5 at 0.3");
	is_int(check("sk-budget", T0 + 1, NULL, 0, NULL, &v), KW_V_BUDGET_EXCEEDED,
	    "the next one is refused");
	is_str(v.limit, "max_budget", "naming max_budget");
	kw_verdict_clear(&v);
	is_int(check("sk-budget", T0 + kw_config.lease_secs, NULL, 0, NULL, NULL), KW_V_VALID,
	    "reservations lapse with their leases");

	make_key("sk-spent", "{\"max_budget\": 1, \"spend\": 0, \"budget_duration\": \"1d\", "
	    "\"budget_reset_at\": \"2026-11-23T00:00:00Z\"}");
	ok(usage("sk-spent", T0, "req-1", NULL, 0, 0.6, &dup) == 0.6, "usage adds spend");
	ok(usage("sk-spent", T0, "req-1", NULL, 0, 0.6, &dup) == 0.6 && dup,
	    "the same request_id counts once");
	ok(usage("sk-spent", T0, "req-2", NULL, 0, 0.6, NULL) == 1.2, "another adds again");
	is_int(check("sk-spent", T0, NULL, 0, NULL, NULL), KW_V_BUDGET_EXCEEDED, "spent");
	is_int(check("sk-spent", (time_t)1795392000, NULL, 0, NULL, NULL), KW_V_VALID,
	    "the budget resets at midnight, with no one resetting it");

	make_key("sk-soft", "{\"soft_budget\": 1, \"spend\": 5}");
	is_int(check("sk-soft", T0, NULL, 0, NULL, &v), KW_V_VALID, "a soft budget never refuses");
	ok(kw_json_bool(answer_of(&v), "soft_budget_exceeded"), "but says it is exceeded");
	kw_verdict_clear(&v);

	make_record(KW_DB_TEAMS, "thrifty", "{\"max_budget\": 2, \"spend\": 2}");
	make_key("sk-thrifty", "{\"team_id\": \"thrifty\"}");
	is_int(check("sk-thrifty", T0, NULL, 0, NULL, &v), KW_V_BUDGET_EXCEEDED, "a team budget");
	is_str(v.limit, "team_max_budget", "naming team_max_budget");
	kw_verdict_clear(&v);

	make_key("sk-per-model", "{\"model_max_budget\": {\"gpt-4\": {\"budget_limit\": 0.5, "
	    "\"time_period\": \"1d\"}}}");
	usage("sk-per-model", T0, NULL, "gpt-4", 0, 0.5, NULL);
	is_int(check("sk-per-model", T0, "gpt-4", 0, NULL, &v), KW_V_BUDGET_EXCEEDED,
	    "model_max_budget spent");
	is_str(v.limit, "model_max_budget", "naming model_max_budget");
	kw_verdict_clear(&v);
	is_int(check("sk-per-model", T0, "gpt-3.5", 0, NULL, NULL), KW_V_VALID,
	    "other models are not bound by it");
	is_int(check("sk-per-model", (time_t)1795392000, "gpt-4", 0, NULL, NULL), KW_V_VALID,
	    "the model's period ends at midnight");
}

static void
test_rates(void)
{
	int admitted = 0;
	struct kw_verdict v;
	struct kw_check dry = { .key = "sk-rpm", .dry_run = 1 };

	make_key("sk-rpm", "{\"rpm_limit\": 3}");
	for (int i = 0; i < 3; i++) {
		kw_limits_check(st, T0 + 5, &dry, &v);
		kw_verdict_clear(&v);
	}
	for (int i = 0; i < 5; i++)
		admitted += check("sk-rpm", T0 + 10 + i, NULL, 0, NULL, NULL) == KW_V_VALID;
	is_int(admitted, 3, "rpm_limit 3 admits 3 in a minute (dry runs count nothing)");
	is_int(check("sk-rpm", T0 + 30, NULL, 0, NULL, &v), KW_V_RATE_LIMITED, "the 4th is limited");
	is_int(v.retry_after, 30, "retry after the minute's end");
	is_int(v.requests.limit, 3, "x-ratelimit limit");
	is_int(v.requests.remaining, 0, "x-ratelimit remaining");
	kw_verdict_clear(&v);
	is_int(check("sk-rpm", T0 + 60, NULL, 0, NULL, NULL), KW_V_VALID, "the next minute admits");

	make_key("sk-tpm", "{\"tpm_limit\": 100, \"model_rpm_limit\": {\"gpt-4\": 1}}");
	usage("sk-tpm", T0, NULL, NULL, 100, 0, NULL);
	is_int(check("sk-tpm", T0 + 1, NULL, 0, NULL, &v), KW_V_RATE_LIMITED, "tpm spent by usage");
	is_str(v.limit, "tpm_limit", "naming tpm_limit");
	kw_verdict_clear(&v);
	is_int(check("sk-tpm", T0 + 61, "gpt-4", 0, NULL, NULL), KW_V_VALID, "a new minute");
	is_int(check("sk-tpm", T0 + 62, "gpt-4", 0, NULL, &v), KW_V_RATE_LIMITED, "model_rpm_limit");
	is_str(v.limit, "model_rpm_limit", "naming model_rpm_limit");
	kw_verdict_clear(&v);
	is_int(check("sk-tpm", T0 + 62, "gpt-3.5", 0, NULL, NULL), KW_V_VALID, "other models pass");

	make_record(KW_DB_TEAMS, "busy", "{\"rpm_limit\": 2}");
	make_key("sk-busy-1", "{\"team_id\": \"busy\"}");
	make_key("sk-busy-2", "{\"team_id\": \"busy\"}");
	check("sk-busy-1", T0, NULL, 0, NULL, NULL);
	check("sk-busy-2", T0, NULL, 0, NULL, NULL);
	is_int(check("sk-busy-1", T0, NULL, 0, NULL, &v), KW_V_RATE_LIMITED,
	    "a team's rpm_limit counts all its keys");
	is_str(v.limit, "team_rpm_limit", "naming team_rpm_limit");
	kw_verdict_clear(&v);
}

/*
 * An organization's limits are rows of the same tables as a team's
 * (LiteLLM's _organization_max_budget_check, can_org_access_model): the
 * key's organization is its own organization_id, else its team's.
 */
static void
test_orgs(void)
{
	struct kw_verdict v;
	int admitted = 0;

	make_record(KW_DB_ORGS, "org-rpm", "{\"rpm_limit\": 2, \"tpm_limit\": 50}");
	make_record(KW_DB_TEAMS, "org-rpm-team", "{\"organization_id\": \"org-rpm\"}");
	make_key("sk-org-own", "{\"organization_id\": \"org-rpm\"}");
	make_key("sk-org-team", "{\"team_id\": \"org-rpm-team\"}");
	admitted += check("sk-org-own", T0 + 120, NULL, 0, NULL, NULL) == KW_V_VALID;
	admitted += check("sk-org-team", T0 + 121, NULL, 0, NULL, NULL) == KW_V_VALID;
	is_int(admitted, 2, "an organization's rpm_limit 2 admits its keys' first two");
	is_int(check("sk-org-team", T0 + 122, NULL, 0, NULL, &v), KW_V_RATE_LIMITED,
	    "the third, by another key of the organization, is limited");
	is_str(v.limit, "organization_rpm_limit", "naming organization_rpm_limit");
	kw_verdict_clear(&v);
	usage("sk-org-own", T0 + 180, NULL, NULL, 50, 0, NULL);
	is_int(check("sk-org-team", T0 + 181, NULL, 0, NULL, &v), KW_V_RATE_LIMITED,
	    "tokens reported by one key fill the organization's tpm_limit for all");
	is_str(v.limit, "organization_tpm_limit", "naming organization_tpm_limit");
	kw_verdict_clear(&v);
	is_int(check("sk-org-team", T0 + 240, NULL, 0, NULL, NULL), KW_V_VALID,
	    "the next minute admits");

	make_record(KW_DB_ORGS, "org-budget", "{\"max_budget\": 1, \"spend\": 0}");
	make_key("sk-org-budget", "{\"organization_id\": \"org-budget\"}");
	is_int(check("sk-org-budget", T0, NULL, 0.6, "ob-1", NULL), KW_V_VALID,
	    "under the organization's max_budget");
	is_int(check("sk-org-budget", T0, NULL, 0.6, "ob-2", NULL), KW_V_VALID,
	    "the last request admitted: 0.6 reserved of 1");
	is_int(check("sk-org-budget", T0, NULL, 0.6, "ob-3", &v), KW_V_BUDGET_EXCEEDED,
	    "what requests in flight reserved counts against the organization's budget");
	is_str(v.limit, "organization_max_budget", "naming organization_max_budget");
	kw_verdict_clear(&v);
	usage("sk-org-budget", T0 + 1, "ob-1", NULL, 0, 0.1, NULL);
	usage("sk-org-budget", T0 + 1, "ob-2", NULL, 0, 0.1, NULL);
	is_int(check("sk-org-budget", T0 + 2, NULL, 0.6, "ob-4", NULL), KW_V_VALID,
	    "settled, the organization's spend is what was reported (0.2)");

	make_record(KW_DB_ORGS, "org-models", "{\"models\": [\"gpt-4\"]}");
	make_key("sk-org-models", "{\"organization_id\": \"org-models\"}");
	is_int(check("sk-org-models", T0, "gpt-3.5", 0, NULL, &v), KW_V_MODEL_NOT_ALLOWED,
	    "an organization's models bound its keys");
	is_str(v.error_type, "org_model_access_denied", "org_model_access_denied");
	is_str(v.message, "org not allowed to access model. This org can only access "
	    "models=['gpt-4']. Tried to access gpt-3.5", "LiteLLM's message");
	kw_verdict_clear(&v);
	is_int(check("sk-org-models", T0, "gpt-4", 0, NULL, NULL), KW_V_VALID,
	    "its models pass");
}

/* Rows as keywarden wrote them before request ids were digests: named with the id itself. */
struct legacy_rows {
	const char *token, *request_id;
	int64_t until;		/* a lease's lapse; 0 for a receipt */
};

static enum kw_err
legacy_body(struct kw_store *s, DB_TXN *txn, void *baton)
{
	struct legacy_rows *l = baton;
	char name[512], index[512];
	struct { double cost; int64_t until; } lease = { 0, l->until };
	int64_t at = T0;
	DBT k = { .data = name }, v;
	DB *db;
	int rc;

	if (l->until == 0) {
		db = kw_store_db(s, KW_DB_RECEIPTS);
		snprintf(name, sizeof(name), "r|%s|%s", l->token, l->request_id);
		k.size = (u_int32_t)strlen(name);
		v = (DBT){ .data = &at, .size = sizeof(at) };
		return kw_store_err(db->put(db, txn, &k, &v, 0));
	}
	db = kw_store_db(s, KW_DB_LEASES);
	snprintf(name, sizeof(name), "k|%zu:%s|%s", strlen(l->token), l->token, l->request_id);
	k.size = (u_int32_t)strlen(name);
	v = (DBT){ .data = &lease, .size = sizeof(lease) };
	if ((rc = db->put(db, txn, &k, &v, 0)) != 0)
		return kw_store_err(rc);
	snprintf(name, sizeof(name), "l|%s|%s", l->token, l->request_id);
	k.size = (u_int32_t)strlen(name);
	snprintf(index, sizeof(index), "{\"request_id\":\"%s\",\"token\":\"%s\",\"team_id\":null,"
	    "\"user_id\":null,\"until\":%lld}", l->request_id, l->token, (long long)l->until);
	v = (DBT){ .data = index, .size = (u_int32_t)strlen(index) };
	return kw_store_err(db->put(db, txn, &k, &v, 0));
}

/* A data directory's receipts and leases from before the digests are still honoured. */
static void
test_legacy_rows(void)
{
	struct kw_verdict v;
	struct legacy_rows r = { make_key("sk-legacy", "{\"max_parallel_requests\": 1}"),
	    "gw-before-upgrade", 0 };
	int dup = 0;

	is_int(kw_store_txn(st, legacy_body, &r), KW_OK, "a receipt of the old form");
	ok(usage("sk-legacy", T0 + 1, "gw-before-upgrade", NULL, 0, 1, &dup) == 0 && dup,
	    "a retried report it names is still a duplicate: counted once");
	is_int(check("sk-legacy", T0 + 2, NULL, 0, "gw-before-upgrade", &v), KW_V_DUPLICATE_REQUEST,
	    "and the id is still used for this key");
	kw_verdict_clear(&v);
	r.request_id = "gw-in-flight";
	r.until = T0 + 600;
	is_int(kw_store_txn(st, legacy_body, &r), KW_OK, "a lease of the old form, in flight");
	is_int(check("sk-legacy", T0 + 3, NULL, 0, "gw-other", &v), KW_V_RATE_LIMITED,
	    "it holds the key's one parallel slot");
	kw_verdict_clear(&v);
	usage("sk-legacy", T0 + 4, "gw-in-flight", NULL, 0, 0, &dup);
	is_int(check("sk-legacy", T0 + 5, NULL, 0, "gw-other", &v), KW_V_VALID,
	    "its usage settles it, as before");
	kw_verdict_clear(&v);
}

static void
test_parallel(void)
{
	struct kw_verdict v;
	char first[sizeof(v.request_id)];
	int dup;

	make_key("sk-parallel", "{\"max_parallel_requests\": 1}");
	is_int(check("sk-parallel", T0, NULL, 0, NULL, &v), KW_V_VALID, "one request in flight");
	ok(v.request_id[0] != '\0', "holds a lease");
	snprintf(first, sizeof(first), "%s", v.request_id);
	kw_verdict_clear(&v);
	is_int(check("sk-parallel", T0 + 1, NULL, 0, NULL, &v), KW_V_RATE_LIMITED, "a second waits");
	is_str(v.limit, "max_parallel_requests", "naming max_parallel_requests");
	kw_verdict_clear(&v);
	usage("sk-parallel", T0 + 2, first, NULL, 0, 0, &dup);
	is_int(check("sk-parallel", T0 + 2, NULL, 0, "gw-7", &v), KW_V_VALID,
	    "usage returns the slot at once");
	is_str(v.request_id, "gw-7", "the gateway's request id names the lease");
	kw_verdict_clear(&v);
	is_int(check("sk-parallel", T0 + 3, NULL, 0, NULL, NULL), KW_V_RATE_LIMITED, "held again");
	make_key("sk-two-slots", "{\"max_parallel_requests\": 2}");
	is_int(check("sk-two-slots", T0, NULL, 0, "same", NULL), KW_V_VALID, "a request id");
	is_int(check("sk-two-slots", T0, NULL, 0, "same", NULL), KW_V_DUPLICATE_REQUEST,
	    "the same id while it is in flight is refused: it would share a slot");
	usage("sk-two-slots", T0, "same", NULL, 0, 0.1, &dup);
	is_int(check("sk-two-slots", T0, NULL, 0, "same", NULL), KW_V_DUPLICATE_REQUEST,
	    "and once reported: its next report would not count");
	is_int(check("sk-plain", T0, NULL, 0, "same", NULL), KW_V_VALID,
	    "another key's request ids are its own");
	is_int(check("sk-parallel", T0 + 2 + kw_config.lease_secs, NULL, 0, NULL, NULL), KW_V_VALID,
	    "a slot never returned comes back after the lease time");
	make_key("sk-nameless", "{\"max_parallel_requests\": 1}");
	is_int(check("sk-nameless", T0, NULL, 0, NULL, NULL), KW_V_VALID, "a request without an id");
	is_int(check("sk-nameless", T0 + kw_config.anon_lease_secs - 1, NULL, 0, NULL, NULL),
	    KW_V_RATE_LIMITED, "holds its slot for anon_lease_secs");
	is_int(check("sk-nameless", T0 + kw_config.anon_lease_secs + 1, NULL, 0, "gw-8", NULL),
	    KW_V_VALID, "and no longer: nothing could report its usage");
	is_int(check("sk-nameless", T0 + 2 * kw_config.anon_lease_secs + 2, NULL, 0, NULL, NULL),
	    KW_V_RATE_LIMITED, "a request with an id holds its slot for lease_secs");
	is_int(kw_limits_maintain(st, T0 + 100000), KW_OK, "the upkeep sweeps leases and receipts");
}

static void
test_venice(void)
{
	struct kw_usage diem = { .key = "sk-venice", .diem = 3 };
	struct kw_check route = { .key = "sk-venice-inference", .route = "/api/v1/api_keys" };
	struct kw_verdict v;
	struct kw_error err;
	json_object *answer = NULL;

	make_key("sk-venice", "{\"venice\": {\"id\": \"v1\", \"apiKeyType\": \"ADMIN\", "
	    "\"owner\": \"master\", \"limitPeriod\": \"EPOCH\", "
	    "\"consumptionLimit\": {\"usd\": 1, \"diem\": 3}}}");
	is_int(check("sk-venice", T0, NULL, 0, NULL, NULL), KW_V_VALID, "a Venice key with limits");
	usage("sk-venice", T0, NULL, NULL, 0, 1, NULL);
	is_int(check("sk-venice", T0 + 10, NULL, 0, NULL, &v), KW_V_USD_LIMIT,
	    "its usd spent for the day: API_KEY_USD_SPEND_LIMIT_EXCEEDED");
	is_int(v.retry_after, 1795392000 - (T0 + 10), "until the next UTC midnight");
	kw_verdict_clear(&v);
	is_int(check("sk-venice", 1795391999, NULL, 0, NULL, NULL), KW_V_USD_LIMIT,
	    "still spent a second before midnight");
	is_int(check("sk-venice", 1795392000, NULL, 0, NULL, NULL), KW_V_VALID,
	    "an EPOCH limit resets at UTC midnight");
	kw_limits_record(st, 1795392000, &diem, &answer, &err);
	json_object_put(answer);
	is_int(check("sk-venice", 1795392001, NULL, 0, NULL, NULL), KW_V_DIEM_LIMIT,
	    "diem spent: API_KEY_DIEM_SPEND_LIMIT_EXCEEDED");
	make_key("sk-venice-inference", "{\"venice\": {\"id\": \"v2\", "
	    "\"apiKeyType\": \"INFERENCE\", \"owner\": \"master\"}}");
	kw_limits_check(st, T0, &route, &v);
	is_int(v.code, KW_V_ROUTE_NOT_ALLOWED, "an INFERENCE key may not call the key API");
	kw_verdict_clear(&v);
	route.route = "/v1/chat/completions";
	kw_limits_check(st, T0, &route, &v);
	is_int(v.code, KW_V_VALID, "it may call inference routes");
	kw_verdict_clear(&v);
}

/*
 * modelPrivacy, as Venice's api-keys reference has it, in the one model
 * check every caller of kw_limits_check shares: the operator's tables say
 * which models are private (and which are media), the key record which
 * setting holds.
 */
static void
test_model_privacy(void)
{
	struct kw_verdict v;

	snprintf(kw_config.private_models, sizeof(kw_config.private_models), "llama-*,venice-*");
	snprintf(kw_config.media_models, sizeof(kw_config.media_models), "flux-*");
	make_key("sk-priv-all", "{\"venice\": {\"id\": \"p1\", \"apiKeyType\": \"INFERENCE\", "
	    "\"owner\": \"master\", \"modelPrivacy\": \"ALL\"}}");
	make_key("sk-priv-text", "{\"venice\": {\"id\": \"p2\", \"apiKeyType\": \"INFERENCE\", "
	    "\"owner\": \"master\", \"modelPrivacy\": \"PRIVATE_TEXT\"}}");
	make_key("sk-priv-only", "{\"venice\": {\"id\": \"p3\", \"apiKeyType\": \"INFERENCE\", "
	    "\"owner\": \"master\", \"modelPrivacy\": \"PRIVATE_ONLY\"}, "
	    "\"aliases\": {\"llama-alias\": \"gpt-4o\"}}");
	make_key("sk-priv-none", "{\"venice\": {\"id\": \"p4\", \"apiKeyType\": \"INFERENCE\", "
	    "\"owner\": \"master\"}}");
	is_int(check("sk-priv-all", T0, "gpt-4o", 0, NULL, NULL), KW_V_VALID, "ALL: an anonymous model");
	is_int(check("sk-priv-none", T0, "gpt-4o", 0, NULL, NULL), KW_V_VALID,
	    "a key made before modelPrivacy: ALL");
	is_int(check("sk-priv-only", T0, "llama-3.3-70b", 0, NULL, NULL), KW_V_VALID,
	    "PRIVATE_ONLY: a private model");
	is_int(check("sk-priv-only", T0, "gpt-4o", 0, NULL, &v), KW_V_MODEL_NOT_ALLOWED,
	    "PRIVATE_ONLY: an anonymous model");
	is_str(v.limit, "modelPrivacy", "the refusal names modelPrivacy");
	kw_verdict_clear(&v);
	is_int(check("sk-priv-only", T0, "flux-dev", 0, NULL, NULL), KW_V_MODEL_NOT_ALLOWED,
	    "PRIVATE_ONLY: an anonymous media model");
	is_int(check("sk-priv-only", T0, "llama-alias", 0, NULL, NULL), KW_V_MODEL_NOT_ALLOWED,
	    "PRIVATE_ONLY: a private-looking alias of an anonymous model");
	is_int(check("sk-priv-text", T0, "flux-dev", 0, NULL, NULL), KW_V_VALID,
	    "PRIVATE_TEXT: a media model");
	is_int(check("sk-priv-text", T0, "venice-uncensored", 0, NULL, NULL), KW_V_VALID,
	    "PRIVATE_TEXT: a private text model");
	is_int(check("sk-priv-text", T0, "claude-sonnet", 0, NULL, NULL), KW_V_MODEL_NOT_ALLOWED,
	    "PRIVATE_TEXT: an anonymous text model");
	kw_config.private_models[0] = '\0';
	is_int(check("sk-priv-text", T0, "venice-uncensored", 0, NULL, NULL), KW_V_MODEL_NOT_ALLOWED,
	    "an empty table: no model is private");
	kw_config.media_models[0] = '\0';
}

/* Counts how many of n checks at now (no cost named, model when not NULL) are VALID. */
static int
admitted(const char *secret, time_t now, const char *model, int n)
{
	int valid = 0;

	for (int i = 0; i < n; i++)
		valid += check(secret, now, model, 0, NULL, NULL) == KW_V_VALID;
	return valid;
}

static void
test_reservations(void)
{
	struct kw_check tpm = { .key = "sk-res-tpm", .expected_tokens = 30 };
	struct kw_verdict v;

	/* a check that names no cost reserves the default, against every kind of budget */
	kw_config.default_expected_cost = 0.25;
	kw_config.default_expected_tokens = 40;
	make_key("sk-res-key", "{\"max_budget\": 1}");
	is_int(admitted("sk-res-key", T0, NULL, 6), 4,
	    "max_budget 1, default cost 0.25: 4 of 6 in flight (the last takes reserved to 1)");
	ok(usage("sk-res-key", T0, NULL, NULL, 0, 0.25, NULL) == 0.25,
	    "a report without request_id");
	is_int(check("sk-res-key", T0, NULL, 0, NULL, &v), KW_V_BUDGET_EXCEEDED,
	    "it settled the oldest lease keywarden named: 0.25 spent + 0.75 reserved");
	ok(kw_json_num(answer_of(&v), "reserved", -1) == 0.75, "reserved 0.75");
	kw_verdict_clear(&v);

	make_record(KW_DB_TEAMS, "res-team", "{\"max_budget\": 0.5}");
	make_key("sk-res-team", "{\"team_id\": \"res-team\"}");
	is_int(admitted("sk-res-team", T0, NULL, 4), 2, "team max_budget 0.5: 2 of 4");
	make_record(KW_DB_USERS, "res-user", "{\"max_budget\": 0.5}");
	make_key("sk-res-user", "{\"user_id\": \"res-user\"}");
	is_int(admitted("sk-res-user", T0, NULL, 4), 2, "user max_budget 0.5: 2 of 4");
	make_key("sk-res-model", "{\"model_max_budget\": {\"gpt-4\": {\"budget_limit\": 0.5, "
	    "\"time_period\": \"1d\"}}}");
	is_int(admitted("sk-res-model", T0, "gpt-4", 4), 2, "model_max_budget 0.5: 2 of 4");
	is_int(admitted("sk-res-model", T0, "gpt-3.5", 4), 4, "another model reserves nothing there");
	make_key("sk-res-usd", "{\"venice\": {\"id\": \"r1\", \"apiKeyType\": \"INFERENCE\", "
	    "\"owner\": \"master\", \"consumptionLimit\": {\"usd\": 0.5}}}");
	is_int(admitted("sk-res-usd", T0, NULL, 4), 2, "Venice usd 0.5: 2 of 4");
	make_key("sk-res-diem", "{\"venice\": {\"id\": \"r2\", \"apiKeyType\": \"INFERENCE\", "
	    "\"owner\": \"master\", \"consumptionLimit\": {\"diem\": 0.5}}}");
	is_int(admitted("sk-res-diem", T0, NULL, 4), 2, "Venice diem 0.5: 2 of 4");
	is_int(admitted("sk-res-key", T0 + kw_config.lease_secs, NULL, 1), 1,
	    "unsettled reservations lapse with their leases");

	/* tpm: the default tokens, or expected_tokens, reserved until usage */
	make_key("sk-res-tpm", "{\"tpm_limit\": 100}");
	is_int(admitted("sk-res-tpm", T0, NULL, 4), 3, "tpm_limit 100, default 40 tokens: 3 of 4");
	ok(usage("sk-res-tpm", T0, NULL, NULL, 40, 0, NULL) == 0, "a report of 40 tokens");
	kw_limits_check(st, T0, &tpm, &v);
	is_int(v.code, KW_V_RATE_LIMITED, "40 counted + 80 reserved: 30 more expected is refused");
	kw_verdict_clear(&v);
	kw_config.default_expected_cost = 0;
	kw_config.default_expected_tokens = 0;
}

int
main(void)
{
	char cmd[128];

	kw_crypto_init();
	kw_log_threshold = KW_LOG_ERROR;
	kw_config.lease_secs = 600;
	kw_config.anon_lease_secs = 60;
	if (mkdtemp(dir) == NULL || kw_store_open(&st, dir, KW_STORE_RECOVER) != KW_OK)
		return 1;
	test_standing();
	test_models_and_routes();
	test_route_path();
	test_budgets();
	test_rates();
	test_orgs();
	test_parallel();
	test_legacy_rows();
	test_venice();
	test_model_privacy();
	test_reservations();
	ok(checks > 50 && disagreements == 0,
	    "the authorizer's summaries and the records agree on all %d verdicts", checks);
	kw_store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	return tap_done();
}
