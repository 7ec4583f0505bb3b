/* metrics.c: counters every worker of a pool shares, and GET /metrics in Prometheus's text format. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kw.h"
#include "gen/ops.h"

static const char *const methods[] = {
	"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
};
#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

/* The statuses keywarden answers; anything else is counted as "other" (the 0). */
static const int statuses[] = {
	200, 201, 204, 400, 401, 402, 403, 404, 405, 409, 413, 415, 422, 426, 429, 500, 503, 0,
};
#define NSTATUSES (sizeof(statuses) / sizeof(statuses[0]))

/* Upper bounds of the latency histogram's buckets, in seconds; +Inf follows. */
static const double bounds[] = {
	.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
};
#define NBOUNDS (sizeof(bounds) / sizeof(bounds[0]))

#define NVERDICTS (KW_V_END_USER_BLOCKED + 1)	/* the last verdict code of limits.c */

/*
 * The counters, in one region: anonymous and MAP_SHARED when the pool
 * manager maps it before forking, so each worker's atomic adds land in the
 * same memory without a lock.  Every field is a uint64_t updated only by
 * __atomic builtins.  The request counters follow the fixed part, one per
 * route slot (each generated route, then the authorizer, then requests
 * that matched no route), method and status.
 */
struct counters {
	uint64_t verdicts[NVERDICTS];
	uint64_t buckets[NBOUNDS + 1];	/* per bucket, not cumulative: one add a request */
	uint64_t duration_ns;		/* the histogram's sum */
	uint64_t worker_restarts;
	uint64_t workers;		/* a gauge, set by the manager */
	uint64_t workers_max;		/* the pool's cap, set by the manager */
	uint64_t txn_commits, txn_aborts, deadlock_retries;
	uint64_t provider_key_selections;
	uint64_t requests[];
};

static struct counters *region;
static unsigned (*busy_workers)(void);	/* the pool's count, inherited by its workers */
static size_t region_size;
static int region_shared;

static size_t
route_slots(void)
{
	return kw_gen_nroutes + 2;	/* the routes, "authorizer", "unmatched" */
}

static struct counters *
map_region(int shared)
{
	size_t size = sizeof(struct counters) +
	    route_slots() * NMETHODS * NSTATUSES * sizeof(uint64_t);
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
	    (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	region_size = size;
	return p;
}

/*
 * Maps the shared region; the pool manager calls it before it forks.
 * Counts made before (in process-local memory) are dropped.  KW_ENOMEM
 * when it cannot be mapped: counting then stays per process.
 */
enum kw_err
kw_metrics_init(void)
{
	struct counters *p;

	if (region_shared)
		return KW_OK;
	if ((p = map_region(1)) == NULL)
		return KW_ENOMEM;
	if (region != NULL)
		munmap(region, region_size);
	region = p;
	region_shared = 1;
	return KW_OK;
}

/* The region, mapped privately on first use when no pool shared one. */
static struct counters *
counters(void)
{
	if (region == NULL)
		region = map_region(0);
	return region;
}

static void
add(uint64_t *c, uint64_t n)
{
	__atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static uint64_t
get(const uint64_t *c)
{
	return __atomic_load_n(c, __ATOMIC_RELAXED);
}

static size_t
method_index(const char *method)
{
	size_t i;

	for (i = 0; method != NULL && i < NMETHODS - 1; i++)
		if (strcmp(methods[i], method) == 0)
			break;
	return method != NULL ? i : NMETHODS - 1;
}

/*
 * The method's name when it is one of the common ones, else "OTHER": what
 * the client sent is never copied into a log line or a label.
 */
const char *
kw_metrics_method(const char *method)
{
	return methods[method_index(method)];
}

static size_t
status_index(int status)
{
	size_t i;

	for (i = 0; i < NSTATUSES - 1 && statuses[i] != status; i++)
		;
	return i;
}

/*
 * Counts a request that ended with status after secs: by route (the
 * authorizer's when it asked as one), method and status, and its latency.
 */
void
kw_metrics_request(const struct kw_req *req, int status, double secs)
{
	struct counters *m = counters();
	size_t slot, b;

	if (m == NULL)
		return;
	if (req->authorizer)
		slot = kw_gen_nroutes;
	else if (req->route != NULL && req->route >= kw_gen_routes &&
	    req->route < kw_gen_routes + kw_gen_nroutes)
		slot = (size_t)(req->route - kw_gen_routes);
	else
		slot = kw_gen_nroutes + 1;
	add(&m->requests[(slot * NMETHODS + method_index(req->method)) * NSTATUSES +
	    status_index(status)], 1);
	for (b = 0; b < NBOUNDS && secs > bounds[b]; b++)
		;
	add(&m->buckets[b], 1);
	add(&m->duration_ns, secs > 0 ? (uint64_t)(secs * 1e9) : 0);
}

/* Counts a verdict of /key/verify or the authorizer. */
void
kw_metrics_verdict(enum kw_verdict_code code)
{
	struct counters *m = counters();

	if (m != NULL && (size_t)code < NVERDICTS)
		add(&m->verdicts[code], 1);
}

void
kw_metrics_txn(int committed)
{
	struct counters *m = counters();

	if (m != NULL)
		add(committed ? &m->txn_commits : &m->txn_aborts, 1);
}

void
kw_metrics_deadlock_retry(void)
{
	struct counters *m = counters();

	if (m != NULL)
		add(&m->deadlock_retries, 1);
}

/* Counts a provider key selection: a read, so counted here rather than audited. */
void
kw_metrics_provider_key_selection(void)
{
	struct counters *m = counters();

	if (m != NULL)
		add(&m->provider_key_selections, 1);
}

void
kw_metrics_worker_restart(void)
{
	struct counters *m = counters();

	if (m != NULL)
		add(&m->worker_restarts, 1);
}

void
kw_metrics_workers(unsigned live)
{
	struct counters *m = counters();

	if (m != NULL)
		__atomic_store_n(&m->workers, (uint64_t)live, __ATOMIC_RELAXED);
}

/*
 * The pool's cap, and how to count its busy workers at the moment of a
 * scrape (the pool manager's table, which its workers share); called by
 * the manager before it forks.
 */
void
kw_metrics_pool(unsigned cap, unsigned (*busy)(void))
{
	struct counters *m = counters();

	if (m != NULL)
		__atomic_store_n(&m->workers_max, (uint64_t)cap, __ATOMIC_RELAXED);
	busy_workers = busy;
}

/* Writes a label value with \, " and newline escaped, as the text format asks. */
static void
label_value(FILE *f, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', f);
		if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void
family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The exposition, in the text format 0.0.4: every family with HELP and TYPE lines. */
static void
render(FILE *f, const struct counters *m)
{
	uint64_t cumulative = 0;
	char bound[32];

	family(f, "keywarden_requests_total", "counter",
	    "Requests answered, by route template, method and status.");
	for (size_t slot = 0; slot < route_slots(); slot++)
		for (size_t me = 0; me < NMETHODS; me++)
			for (size_t st = 0; st < NSTATUSES; st++) {
				uint64_t n = get(&m->requests[(slot * NMETHODS + me) *
				    NSTATUSES + st]);

				if (n == 0)
					continue;
				fputs("keywarden_requests_total{route=\"", f);
				label_value(f, slot < kw_gen_nroutes ? kw_gen_routes[slot].path :
				    slot == kw_gen_nroutes ? "authorizer" : "unmatched");
				fprintf(f, "\",method=\"%s\",status=\"", methods[me]);
				if (statuses[st] != 0)
					fprintf(f, "%d", statuses[st]);
				else
					fputs("other", f);
				fprintf(f, "\"} %llu\n", (unsigned long long)n);
			}

	family(f, "keywarden_verify_total", "counter",
	    "Verdicts of /key/verify and the authorizer, by code.");
	for (size_t c = 0; c < NVERDICTS; c++) {
		fputs("keywarden_verify_total{code=\"", f);
		label_value(f, kw_verdict_code_name((enum kw_verdict_code)c));
		fprintf(f, "\"} %llu\n", (unsigned long long)get(&m->verdicts[c]));
	}

	family(f, "keywarden_request_duration_seconds", "histogram",
	    "Time from a request's arrival to its answer, in seconds.");
	for (size_t b = 0; b <= NBOUNDS; b++) {
		cumulative += get(&m->buckets[b]);
		if (b < NBOUNDS)
			snprintf(bound, sizeof(bound), "%g", bounds[b]);
		fprintf(f, "keywarden_request_duration_seconds_bucket{le=\"%s\"} %llu\n",
		    b < NBOUNDS ? bound : "+Inf", (unsigned long long)cumulative);
	}
	fprintf(f, "keywarden_request_duration_seconds_sum %.9f\n",
	    (double)get(&m->duration_ns) / 1e9);
	fprintf(f, "keywarden_request_duration_seconds_count %llu\n",
	    (unsigned long long)cumulative);

	family(f, "keywarden_worker_restarts_total", "counter",
	    "Workers the pool manager started again after one died.");
	fprintf(f, "keywarden_worker_restarts_total %llu\n",
	    (unsigned long long)get(&m->worker_restarts));
	family(f, "keywarden_workers", "gauge", "Workers alive in the pool.");
	fprintf(f, "keywarden_workers %llu\n", (unsigned long long)get(&m->workers));
	if (busy_workers != NULL) {
		family(f, "keywarden_workers_busy", "gauge",
		    "Workers serving a request (this scrape's among them).");
		fprintf(f, "keywarden_workers_busy %u\n", busy_workers());
		family(f, "keywarden_workers_max", "gauge",
		    "What the pool grows to when every worker is busy (KEYWARDEN_MAX_WORKERS).");
		fprintf(f, "keywarden_workers_max %llu\n", (unsigned long long)get(&m->workers_max));
	}

	family(f, "keywarden_store_transactions_total", "counter",
	    "Berkeley DB transactions ended, by outcome.");
	fprintf(f, "keywarden_store_transactions_total{outcome=\"commit\"} %llu\n",
	    (unsigned long long)get(&m->txn_commits));
	fprintf(f, "keywarden_store_transactions_total{outcome=\"abort\"} %llu\n",
	    (unsigned long long)get(&m->txn_aborts));
	family(f, "keywarden_store_deadlock_retries_total", "counter",
	    "Transactions run again after a deadlock.");
	fprintf(f, "keywarden_store_deadlock_retries_total %llu\n",
	    (unsigned long long)get(&m->deadlock_retries));

	family(f, "keywarden_provider_key_selections_total", "counter",
	    "Provider keys selected by POST /api/providers/{provider}/keys/select.");
	fprintf(f, "keywarden_provider_key_selections_total %llu\n",
	    (unsigned long long)get(&m->provider_key_selections));

	family(f, "keywarden_build_info", "gauge", "The running version and store schema.");
	fprintf(f, "keywarden_build_info{version=\"%s\",schema=\"%d\"} 1\n", KW_VERSION,
	    KW_SCHEMA_VERSION);
}

/* Whether the presented bearer is the metrics token (compared in constant time). */
static int
is_metrics_token(const char *presented)
{
	return kw_config.metrics_token[0] != '\0' && presented != NULL &&
	    kw_crypto_same_secret(presented, kw_config.metrics_token);
}

/* Whether req presents the metrics token (KEYWARDEN_METRICS_TOKEN) as its credential. */
int
kw_metrics_token_presented(struct kw_req *req)
{
	return is_metrics_token(kw_auth_credential(req));
}

/*
 * GET /metrics: the counters of this pool.  Readers: the metrics token
 * (KEYWARDEN_METRICS_TOKEN, which needs no store), the master key, and
 * keys of proxy admins and admin viewers; 401 or 403 otherwise.
 */
enum kw_err
kw_op_metrics(struct kw_req *req, struct kw_resp *resp)
{
	const struct counters *m = counters();
	char *text = NULL, *body;
	size_t len = 0;
	FILE *f;
	enum kw_err rc;

	if (!kw_metrics_token_presented(req)) {
		if ((rc = kw_auth_caller(req)) != KW_OK)
			return rc;
		if (!kw_auth_reads_all(req->caller)) {
			kw_error_set(&req->err, KW_EFORBIDDEN, NULL,
			    "only proxy admins, admin viewers and the metrics token read metrics");
			return KW_EFORBIDDEN;
		}
	}
	if (m == NULL || (f = open_memstream(&text, &len)) == NULL)
		return KW_ENOMEM;
	render(f, m);
	if (fclose(f) != 0) {
		free(text);
		return KW_ENOMEM;
	}
	body = kw_arena_strndup(req->arena, text, len);
	free(text);
	if (body == NULL)
		return KW_ENOMEM;
	resp->status = 200;
	resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
	resp->raw = body;
	resp->raw_len = len;
	return KW_OK;
}
