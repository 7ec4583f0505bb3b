/* relay.c: OpenAI-compatible model calls relayed to a provider with libcurl, every limit checked before and every cost settled after. */
#include <ctype.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <db.h>
#include <fcgiapp.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/* What a relayed route does: its path at the provider and how its answer reports usage. */
enum relay_kind { R_CHAT = 0, R_COMPLETIONS, R_EMBEDDINGS, R_RESPONSES, R_IMAGES };

static const struct kind {
	const char *path;	/* after the provider's /v1 (or an Azure deployment) */
	const char *mode;	/* the price table's mode for a model of this kind */
	int usage_option;	/* streams take stream_options.include_usage */
} kinds[] = {
	[R_CHAT] = { "/chat/completions", "chat", 1 },
	[R_COMPLETIONS] = { "/completions", "completion", 1 },
	[R_EMBEDDINGS] = { "/embeddings", "embedding", 0 },
	[R_RESPONSES] = { "/responses", "responses", 0 },
	[R_IMAGES] = { "/images/generations", "image_generation", 0 },
};

/* --- prices ------------------------------------------------------------- */

/*
 * The shipped prices, in USD a token (an image for images), taken as facts
 * from LiteLLM's model_prices_and_context_window.json (its
 * input_cost_per_token, output_cost_per_token and output_cost_per_image),
 * compiled in so that a binary prices calls with no file beside it.
 * KEYWARDEN_RELAY_PRICES names a file in that same format whose entries
 * come first.
 */
static const struct price_default {
	const char *model;
	double input, output, image;
	const char *mode;
} default_prices[] = {
	{ "gpt-4", 3e-05, 6e-05, 0, "chat" },
	{ "gpt-4-turbo", 1e-05, 3e-05, 0, "chat" },
	{ "gpt-4o", 2.5e-06, 1e-05, 0, "chat" },
	{ "gpt-4o-mini", 1.5e-07, 6e-07, 0, "chat" },
	{ "gpt-4.1", 2e-06, 8e-06, 0, "chat" },
	{ "gpt-4.1-mini", 4e-07, 1.6e-06, 0, "chat" },
	{ "gpt-4.1-nano", 1e-07, 4e-07, 0, "chat" },
	{ "gpt-3.5-turbo", 1.5e-06, 2e-06, 0, "chat" },
	{ "gpt-3.5-turbo-instruct", 1.5e-06, 2e-06, 0, "completion" },
	{ "o1", 1.5e-05, 6e-05, 0, "chat" },
	{ "o3-mini", 1.1e-06, 4.4e-06, 0, "chat" },
	{ "o4-mini", 1.1e-06, 4.4e-06, 0, "chat" },
	{ "text-embedding-3-small", 2e-08, 0, 0, "embedding" },
	{ "text-embedding-3-large", 1.3e-07, 0, 0, "embedding" },
	{ "text-embedding-ada-002", 1e-07, 0, 0, "embedding" },
	{ "gpt-image-1", 5e-06, 4e-05, 0, "image_generation" },
	{ "dall-e-3", 0, 0, 0.04, "image_generation" },	/* standard/1024-x-1024: 3.81469e-08 a pixel */
};
#define NDEFAULT_PRICES (sizeof(default_prices) / sizeof(default_prices[0]))

struct price {
	double input, output, image;	/* usd a token, a token, an image */
	int found;
};

static json_object *operator_prices;	/* KEYWARDEN_RELAY_PRICES, read once per worker */
static int operator_prices_read;
static int operator_prices_bad;		/* the file could not be read: nothing is priced */

/* Reads KEYWARDEN_RELAY_PRICES the first time it is needed; a bad file is logged and prices nothing. */
static void
load_operator_prices(void)
{
	if (operator_prices_read)
		return;
	operator_prices_read = 1;
	if (kw_config.relay_prices[0] == '\0')
		return;
	operator_prices = json_object_from_file(kw_config.relay_prices);
	if (!json_object_is_type(operator_prices, json_type_object)) {
		kw_log_error("relay: KEYWARDEN_RELAY_PRICES (%s) is not a JSON object of models: "
		    "no model is priced until it is fixed", kw_config.relay_prices);
		json_object_put(operator_prices);
		operator_prices = NULL;
		operator_prices_bad = 1;
	}
}

/* A finite, non-negative number field of entry, or otherwise. */
static double
price_field(json_object *entry, const char *name, double otherwise)
{
	json_object *v = json_object_object_get(entry, name);
	double d;

	if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
		return otherwise;
	d = json_object_get_double(v);
	return isfinite(d) && d >= 0 ? d : otherwise;
}

/* The price of model by its exact name: the operator's table first, then the defaults. */
static int
price_named(const char *model, struct price *p)
{
	json_object *entry;

	if (operator_prices != NULL && json_object_object_get_ex(operator_prices, model, &entry) &&
	    json_object_is_type(entry, json_type_object)) {
		p->input = price_field(entry, "input_cost_per_token", 0);
		p->output = price_field(entry, "output_cost_per_token", 0);
		p->image = price_field(entry, "output_cost_per_image", 0);
		return p->found = 1;
	}
	if (operator_prices_bad)
		return 0;
	for (size_t i = 0; i < NDEFAULT_PRICES; i++)
		if (strcmp(default_prices[i].model, model) == 0) {
			p->input = default_prices[i].input;
			p->output = default_prices[i].output;
			p->image = default_prices[i].image;
			return p->found = 1;
		}
	return 0;
}

/* The price of a call: by the name asked, then provider/model, then the model the provider serves. */
static void
price_of(const char *asked, const char *provider, const char *model, struct price *p)
{
	char both[600];

	memset(p, 0, sizeof(*p));
	load_operator_prices();
	snprintf(both, sizeof(both), "%s/%s", provider, model);
	if (!price_named(asked, p) && !price_named(both, p))
		price_named(model, p);
}

/* --- the provider's API ----------------------------------------------- */

/*
 * The standard providers that speak OpenAI's API, and where it is when
 * network_config.base_url does not say (Bifrost's defaults).  vLLM, Ollama
 * and SGLang servers are the key's own (its *_key_config.url).
 */
static const struct openai_like {
	const char *name;
	const char *base_url;	/* NULL: the key's config names it */
	const char *key_config;	/* the key's config that holds url; NULL none */
} openai_like[] = {
	{ "openai", "https://api.openai.com", NULL },
	{ "azure", NULL, NULL },
	{ "groq", "https://api.groq.com/openai", NULL },
	{ "openrouter", "https://openrouter.ai/api", NULL },
	{ "mistral", "https://api.mistral.ai", NULL },
	{ "xai", "https://api.x.ai", NULL },
	{ "cerebras", "https://api.cerebras.ai", NULL },
	{ "nebius", "https://api.studio.nebius.ai", NULL },
	{ "parasail", "https://api.parasail.io", NULL },
	{ "perplexity", "https://api.perplexity.ai", NULL },
	{ "vllm", NULL, "vllm_key_config" },
	{ "ollama", "http://localhost:11434", "ollama_key_config" },
	{ "sgl", NULL, "sgl_key_config" },
};
#define NOPENAI_LIKE (sizeof(openai_like) / sizeof(openai_like[0]))

static const struct openai_like *
openai_like_of(const char *base)
{
	for (size_t i = 0; base != NULL && i < NOPENAI_LIKE; i++)
		if (strcmp(openai_like[i].name, base) == 0)
			return &openai_like[i];
	return NULL;
}

/* True when name is a provider the Bifrost face knows: a standard one, or a configured custom one. */
static int
is_provider(struct kw_req *req, DB_TXN *txn, const char *name, enum kw_err *rc)
{
	json_object *net = NULL;
	char base[64];

	*rc = kw_provider_network(req, txn, name, &net, base, sizeof(base));
	json_object_put(net);
	if (*rc == KW_ENOTFOUND) {
		*rc = KW_OK;
		return 0;
	}
	return *rc == KW_OK;
}

/* --- one relayed request ------------------------------------------------ */

/* Where one try goes: a provider, its key (secrets resolved) and its network settings. */
struct upstream {
	char provider[256];
	char base[64];			/* the API it speaks: a standard provider's name */
	json_object *key;		/* owned: kw_provider_key_release */
	json_object *network;		/* owned: the provider's network_config, or NULL */
	char url[4096];
};

struct relay {
	struct kw_req *req;
	struct kw_resp *resp;
	enum relay_kind kind;
	const char *azure_deployment;	/* the path's {deployment}; NULL off Azure's path */
	const char *key;		/* the client's credential: never sent on, never logged */
	const char *asked;		/* the model the client asked for */
	char provider[256];		/* named by target's prefix; "" any whose keys list it */
	const char *model;		/* what the provider is asked for (arena) */
	const char *end_user;
	int stream, client_usage;	/* stream: true; the client asked for usage chunks */
	struct price price;
	char request_id[64];
	double expected_cost;
	int64_t expected_tokens;
	json_object *tried;		/* owned: the provider key ids tried */
	struct upstream up;

	/* the answer being read */
	CURL *curl;
	long status;
	char content_type[128];
	char *buf;			/* malloc'd: a non-streamed answer, or SSE not yet whole */
	size_t len, cap;
	int too_large;
	int streaming;			/* passing the provider's SSE on to the client */
	int started;			/* bytes have reached the client: no other key may answer */
	int client_gone;		/* the client went away: read on, write nothing */
	int have_usage;
	int64_t prompt_tokens, completion_tokens, total_tokens, images;
	size_t streamed_chars;		/* content streamed: the estimate when no usage comes */
	char secret[1024];		/* the provider secret of this try, to keep out of answers */
};

/* The secret a provider key authenticates with, "" when it has none (a keyless server). */
static const char *
key_secret(json_object *key)
{
	const char *v = kw_json_str(key, "value");

	if (v == NULL)
		v = kw_json_str(json_object_object_get(key, "value"), "value");
	return v != NULL ? v : "";
}

static void
upstream_release(struct upstream *up)
{
	kw_provider_key_release(up->key);
	json_object_put(up->network);
	up->key = up->network = NULL;
}

/* Everything one try needs, read in one transaction: the key by weight, its provider's settings. */
static enum kw_err
choose_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct relay *r = baton;
	const char *provider;
	enum kw_err rc;

	(void)st;
	upstream_release(&r->up);
	rc = kw_provider_key_select(r->req, txn, r->provider[0] ? r->provider : NULL, r->model,
	    r->tried, &r->up.key);
	if (rc != KW_OK)
		return rc;
	provider = kw_json_str(r->up.key, "provider");
	snprintf(r->up.provider, sizeof(r->up.provider), "%s", provider ? provider : r->provider);
	return kw_provider_network(r->req, txn, r->up.provider, &r->up.network, r->up.base,
	    sizeof(r->up.base));
}

/* Appends the URL-encoded s to out (n bytes); 0 when it does not fit. */
static int
url_append_encoded(char *out, size_t n, const char *s)
{
	size_t len = strlen(out);

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (len + 4 >= n)
			return 0;
		if (isalnum(c) || strchr("-._~", c) != NULL)
			out[len++] = (char)c;
		else
			len += (size_t)snprintf(out + len, n - len, "%%%02X", c);
	}
	out[len] = '\0';
	return 1;
}

/*
 * The URL of this try: network_config.base_url, else the key's server
 * (vLLM, Ollama, SGLang: *_key_config.url; Azure: azure_key_config.endpoint),
 * else the provider's default; then /v1 and the route, or Azure's
 * /openai/deployments/{deployment}/route?api-version=.  KW_EINVAL with
 * r->req->err when the provider does not speak OpenAI's API or names no server.
 */
static enum kw_err
build_url(struct relay *r)
{
	const struct openai_like *o = openai_like_of(r->up.base);
	json_object *key = r->up.key;
	const char *base = kw_json_str(r->up.network, "base_url");
	char *u = r->up.url;
	size_t n = sizeof(r->up.url), len;

	if (o == NULL) {
		kw_error_set(&r->req->err, KW_EINVAL, "model", "provider %s (%s) does not speak "
		    "OpenAI's API, which the relay speaks", r->up.provider, r->up.base);
		return KW_EINVAL;
	}
	if ((base == NULL || *base == '\0') && o->key_config != NULL)
		base = kw_json_str(json_object_object_get(key, o->key_config), "url");
	if ((base == NULL || *base == '\0') && strcmp(o->name, "azure") == 0)
		base = kw_json_str(json_object_object_get(key, "azure_key_config"), "endpoint");
	if (base == NULL || *base == '\0')
		base = o->base_url;
	if (base == NULL || (strncmp(base, "https://", 8) != 0 && strncmp(base, "http://", 7) != 0)) {
		kw_error_set(&r->req->err, KW_EINVAL, "model", "provider %s has no http(s) base URL "
		    "for its API: set its network_config.base_url", r->up.provider);
		return KW_EINVAL;
	}
	snprintf(u, n, "%s", base);
	len = strlen(u);
	while (len > 0 && u[len - 1] == '/')
		u[--len] = '\0';
	if (strcmp(o->name, "azure") == 0) {
		json_object *cfg = json_object_object_get(key, "azure_key_config");
		json_object *deployments = json_object_object_get(cfg, "deployments");
		const char *deployment = kw_json_str(deployments, r->model);
		const char *version = kw_json_str(cfg, "api_version");

		if (version == NULL)
			version = kw_json_str(r->req->query, "api-version");
		if (len >= 7 && strcmp(u + len - 7, "/openai") == 0)
			u[len -= 7] = '\0';
		snprintf(u + len, n - len, "/openai/deployments/");
		if (!url_append_encoded(u, n, deployment ? deployment : r->model))
			return KW_EINVAL;
		len = strlen(u);
		snprintf(u + len, n - len, "%s?api-version=", kinds[r->kind].path);
		if (!url_append_encoded(u, n, version ? version : "2024-10-21"))
			return KW_EINVAL;
		return KW_OK;
	}
	if (len < 3 || strcmp(u + len - 3, "/v1") != 0)
		snprintf(u + len, n - len, "/v1");
	len = strlen(u);
	if ((size_t)snprintf(u + len, n - len, "%s", kinds[r->kind].path) >= n - len)
		return KW_EINVAL;
	return KW_OK;
}

/* --- usage -------------------------------------------------------------- */

static int64_t
count_of(json_object *obj, const char *name)
{
	json_object *v = json_object_object_get(obj, name);
	int64_t n;

	if (!json_object_is_type(v, json_type_int))
		return -1;
	n = json_object_get_int64(v);
	return n >= 0 && n <= (int64_t)1e12 ? n : -1;
}

/*
 * Takes the usage of an answer (or a stream's chunk): OpenAI's
 * prompt_tokens and completion_tokens, the Responses API's input_tokens
 * and output_tokens.  Returns 1 when answer carried usage.
 */
static int
take_usage(struct relay *r, json_object *answer)
{
	json_object *u = json_object_object_get(answer, "usage");
	int64_t in, out, total;

	if (!json_object_is_type(u, json_type_object))
		return 0;
	if ((in = count_of(u, "prompt_tokens")) < 0)
		in = count_of(u, "input_tokens");
	if ((out = count_of(u, "completion_tokens")) < 0)
		out = count_of(u, "output_tokens");
	total = count_of(u, "total_tokens");
	if (in < 0 && out < 0 && total < 0)
		return 0;
	r->prompt_tokens = in > 0 ? in : 0;
	r->completion_tokens = out > 0 ? out : 0;
	r->total_tokens = total >= r->prompt_tokens + r->completion_tokens ? total :
	    r->prompt_tokens + r->completion_tokens;
	if (in < 0 && out < 0)
		r->prompt_tokens = r->total_tokens;	/* an embedding's usage may name the total only */
	r->have_usage = 1;
	return 1;
}

/* Reads the usage of a whole (non-streamed) answer; images without usage count their data. */
static void
usage_of_answer(struct relay *r, const char *body, size_t n)
{
	struct json_tokener *tok = json_tokener_new();
	json_object *answer;

	if (tok == NULL)
		return;
	answer = json_tokener_parse_ex(tok, body, (int)n);
	json_tokener_free(tok);
	if (answer == NULL)
		return;
	if (!take_usage(r, answer) && r->kind == R_IMAGES &&
	    json_object_is_type(json_object_object_get(answer, "data"), json_type_array) &&
	    r->price.image > 0) {
		r->images = (int64_t)json_object_array_length(json_object_object_get(answer, "data"));
		r->have_usage = 1;
	}
	json_object_put(answer);
}

/* What the call cost: priced usage; the reservation when the answer said nothing of it. */
static double
cost_of(const struct relay *r)
{
	if (!r->have_usage)
		return r->expected_cost;
	return (double)r->prompt_tokens * r->price.input +
	    (double)r->completion_tokens * r->price.output + (double)r->images * r->price.image;
}

/*
 * Settles the call, once and durably, to the key, its team, user and
 * organization and the end user, under the request id its check took:
 * priced usage, or for a stream the client left without a usage chunk
 * the content streamed (four characters a token), or else the
 * reservation (logged as unmetered).  Never fails the answer: a store
 * error is logged and the lease lapses.
 */
static void
settle(struct relay *r, int answered)
{
	struct kw_usage u = {
		.key = r->key, .request_id = r->request_id, .model = r->asked,
		.end_user = r->end_user, .flush_after_answer = 1,
	};
	json_object *answer = NULL;
	struct kw_error err = { 0 };
	enum kw_err rc;

	if (answered && !r->have_usage && r->streamed_chars > 0) {
		r->completion_tokens = (int64_t)((r->streamed_chars + 3) / 4);
		r->prompt_tokens = r->expected_tokens;
		r->total_tokens = r->prompt_tokens + r->completion_tokens;
		r->have_usage = 1;
		/* the request's id, not its model: a name the client sent may hold a newline */
		kw_log_warn("relay: provider %s sent no usage for request %s: settled %lld streamed "
		    "tokens as counted", r->up.provider, r->request_id,
		    (long long)r->completion_tokens);
	} else if (answered && !r->have_usage) {
		kw_log_warn("relay: unmetered answer from provider %s for request %s: settled at the "
		    "reservation (%g usd)", r->up.provider, r->request_id, r->expected_cost);
	}
	if (answered) {
		u.tokens = r->have_usage ? r->total_tokens : r->expected_tokens;
		u.cost = cost_of(r);
	}
	rc = kw_limits_record(r->req->store, kw_clock_now(), &u, &answer, &err);
	if (rc != KW_OK)
		kw_log_error("relay: settling request %s failed: %s", r->request_id, kw_err_name(rc));
	json_object_put(answer);
}

/* --- answering ---------------------------------------------------------- */

/* An error in the OpenAI envelope, as the relay answers it itself. */
static void answer_error(struct relay *, int status, enum kw_err, const char *param,
    const char *type, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void
answer_error(struct relay *r, int status, enum kw_err code, const char *param, const char *type,
    const char *fmt, ...)
{
	struct kw_error e;
	char message[KW_MESSAGE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	kw_error_set(&e, code, param, "%s", message);
	e.type = type;
	kw_resp_json(r->resp, status, kw_face_error(KW_FACE_LITELLM, status, &e));
}

/* True when the provider secret appears in the n bytes of s. */
static int
holds_secret(const struct relay *r, const char *s, size_t n)
{
	size_t k = strlen(r->secret);

	return k >= 4 && memmem(s, n, r->secret, k) != NULL;
}

/* The client is gone (a write failed): the stream is read on to its end, written nowhere. */
static void
client_left(struct relay *r)
{
	r->client_gone = 1;
	kw_log_info("relay: the client left request %s mid-stream: reading the provider to its "
	    "end", r->request_id);
}

/* Writes s to the client (sent on by client_flush). */
static void
client_write(struct relay *r, const char *s, size_t n)
{
	FCGX_Stream *out = r->req->fcgi->out;

	if (!r->client_gone && n > 0 &&
	    (FCGX_PutStr(s, (int)n, out) != (int)n || FCGX_GetError(out) != 0))
		client_left(r);
}

/* Sends what was written on now, through the web server, as one FastCGI record. */
static void
client_flush(struct relay *r)
{
	if (!r->client_gone && FCGX_FFlush(r->req->fcgi->out) != 0)
		client_left(r);
}

/* The response head of a stream, written once, before its first event: with the x-ratelimit-* headers. */
static void
start_stream(struct relay *r)
{
	char head[512];
	int n;

	n = snprintf(head, sizeof(head), "Status: 200 OK\r\nContent-Type: text/event-stream\r\n"
	    "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nX-Content-Type-Options: nosniff\r\n"
	    "x-request-id: %s\r\n", r->request_id);
	r->started = 1;
	r->resp->sent = 1;
	r->resp->status = 200;
	client_write(r, head, (size_t)n);
	for (size_t i = 0; i < r->resp->nheaders; i++) {
		client_write(r, r->resp->headers[i], strlen(r->resp->headers[i]));
		client_write(r, "\r\n", 2);
	}
	client_write(r, "\r\n", 2);
}

/* Counts the content a stream chunk carries (chat deltas, completion text, Responses deltas). */
static void
count_streamed(struct relay *r, json_object *chunk)
{
	json_object *choices = json_object_object_get(chunk, "choices");
	const char *type = kw_json_str(chunk, "type");

	for (size_t i = 0; json_object_is_type(choices, json_type_array) &&
	    i < json_object_array_length(choices); i++) {
		json_object *c = json_object_array_get_idx(choices, i);
		const char *s = kw_json_str(json_object_object_get(c, "delta"), "content");

		if (s == NULL)
			s = kw_json_str(c, "text");
		r->streamed_chars += s ? strlen(s) : 0;
	}
	if (type != NULL && strcmp(type, "response.output_text.delta") == 0 &&
	    kw_json_str(chunk, "delta") != NULL)
		r->streamed_chars += strlen(kw_json_str(chunk, "delta"));
}

/*
 * One whole SSE event of the provider's stream (n bytes, its blank line
 * included): its usage taken, then passed on as it came, except the usage
 * keywarden asked for and the client did not: a usage-only chunk is held
 * back, a usage field on a content chunk is taken off.
 */
static void
relay_event(struct relay *r, const char *ev, size_t n)
{
	const char *data = NULL;
	json_object *chunk = NULL, *usage_of;
	struct json_tokener *tok;
	size_t dn = 0;

	for (const char *p = ev; p < ev + n;) {
		const char *end = memchr(p, '\n', (size_t)(ev + n - p));
		size_t ln = end ? (size_t)(end - p) : (size_t)(ev + n - p);

		if (ln >= 5 && memcmp(p, "data:", 5) == 0 && data == NULL) {
			data = p + 5;
			dn = ln - 5;
			if (dn > 0 && *data == ' ')
				data++, dn--;
			if (dn > 0 && data[dn - 1] == '\r')
				dn--;
		}
		p += ln + 1;
	}
	if (data != NULL && !(dn == 6 && memcmp(data, "[DONE]", 6) == 0) &&
	    (tok = json_tokener_new()) != NULL) {
		chunk = json_tokener_parse_ex(tok, data, (int)dn);
		json_tokener_free(tok);
	}
	if (holds_secret(r, ev, n)) {
		json_object_put(chunk);
		return;	/* never pass a provider secret on, even one the provider echoes */
	}
	if (chunk != NULL) {
		count_streamed(r, chunk);
		/* the Responses API's last event carries the response, usage inside */
		usage_of = chunk;
		if (json_object_is_type(json_object_object_get(chunk, "response"), json_type_object))
			usage_of = json_object_object_get(chunk, "response");
		if (take_usage(r, usage_of) && kinds[r->kind].usage_option && !r->client_usage) {
			json_object *choices = json_object_object_get(chunk, "choices");
			const char *text;

			if (!json_object_is_type(choices, json_type_array) ||
			    json_object_array_length(choices) == 0) {
				json_object_put(chunk);
				return;
			}
			json_object_object_del(chunk, "usage");
			text = json_object_to_json_string_ext(chunk, JSON_C_TO_STRING_PLAIN |
			    JSON_C_TO_STRING_NOSLASHESCAPE);
			client_write(r, "data: ", 6);
			client_write(r, text, strlen(text));
			client_write(r, "\n\n", 2);
			client_flush(r);
			json_object_put(chunk);
			return;
		}
		json_object_put(chunk);
	}
	client_write(r, ev, n);
	client_flush(r);
}

/* The end of the next event in buf (after its blank line), or 0 when none is whole yet. */
static size_t
event_end(const char *buf, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if (buf[i] == '\n' && buf[i + 1] == '\n')
			return i + 2;
		if (i + 3 < n && memcmp(buf + i, "\r\n\r\n", 4) == 0)
			return i + 4;
	}
	return 0;
}

/* Keeps n bytes of s in r->buf, within the response cap; 0 when they do not fit. */
static int
buffer_add(struct relay *r, const char *s, size_t n)
{
	if (r->len + n > kw_config.relay_max_response) {
		r->too_large = 1;
		return 0;
	}
	if (r->len + n + 1 > r->cap) {
		size_t cap = r->cap ? r->cap : 16384;
		char *p;

		while (cap < r->len + n + 1)
			cap *= 2;
		if ((p = realloc(r->buf, cap)) == NULL)
			return 0;
		r->buf = p;
		r->cap = cap;
	}
	memcpy(r->buf + r->len, s, n);
	r->len += n;
	r->buf[r->len] = '\0';
	return 1;
}

/* libcurl's header callback: the status and content type of the answer. */
static size_t
on_header(char *line, size_t size, size_t nitems, void *baton)
{
	struct relay *r = baton;
	size_t n = size * nitems;

	if (n > 13 && strncasecmp(line, "content-type:", 13) == 0) {
		const char *v = line + 13;
		size_t vn;

		while (*v == ' ' || *v == '\t')
			v++;
		vn = strcspn(v, "\r\n");
		if (vn >= sizeof(r->content_type))
			vn = sizeof(r->content_type) - 1;
		memcpy(r->content_type, v, vn);
		r->content_type[vn] = '\0';
	} else if (n > 5 && strncmp(line, "HTTP/", 5) == 0) {
		r->content_type[0] = '\0';	/* a new answer (after a 100 Continue) */
	}
	return n;
}

/*
 * libcurl's write callback.  A 2xx stream is passed on event by event as
 * it arrives; anything else is kept whole (up to the cap) to be judged
 * when it ends.
 */
static size_t
on_body(char *data, size_t size, size_t nmemb, void *baton)
{
	struct relay *r = baton;
	size_t n = size * nmemb, end;

	if (r->status == 0)
		curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &r->status);
	if (!r->streaming && r->stream && r->status >= 200 && r->status < 300 &&
	    strncasecmp(r->content_type, "text/event-stream", 17) == 0) {
		r->streaming = 1;
		start_stream(r);
	}
	if (!buffer_add(r, data, n))
		return 0;	/* over the cap: libcurl ends the transfer */
	if (!r->streaming)
		return n;
	while ((end = event_end(r->buf, r->len)) > 0) {
		relay_event(r, r->buf, end);
		memmove(r->buf, r->buf + end, r->len - end);
		r->len -= end;
	}
	return n;
}

/* --- trying the provider ------------------------------------------------ */

/* The body the provider gets (owned string): the client's, its model the provider's, usage asked for. */
static char *
upstream_body(struct relay *r)
{
	json_object *body = kw_json_copy(r->req->body), *opts;
	char *text;

	if (body == NULL)
		body = json_object_new_object();
	json_object_object_add(body, "model", json_object_new_string(r->model));
	if (r->stream && kinds[r->kind].usage_option) {
		opts = json_object_object_get(body, "stream_options");
		if (!json_object_is_type(opts, json_type_object)) {
			opts = json_object_new_object();
			json_object_object_add(body, "stream_options", opts);
		}
		json_object_object_add(opts, "include_usage", json_object_new_boolean(1));
	}
	text = strdup(json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(body);
	return text;
}

/* The header list of a try (owned): the provider's secret as it expects it, then its extra headers. */
static struct curl_slist *
upstream_headers(struct relay *r)
{
	static const char *const ours[] = {
		"authorization", "api-key", "content-type", "content-length", "host", "accept",
		"transfer-encoding", "expect",
	};
	struct curl_slist *h = NULL;
	json_object *extra = json_object_object_get(r->up.network, "extra_headers");
	char line[2048];

	h = curl_slist_append(h, "Content-Type: application/json");
	h = curl_slist_append(h, r->stream ? "Accept: text/event-stream" : "Accept: application/json");
	h = curl_slist_append(h, "Expect:");
	if (r->secret[0] != '\0') {
		snprintf(line, sizeof(line), strcmp(r->up.base, "azure") == 0 ? "api-key: %s" :
		    "Authorization: Bearer %s", r->secret);
		h = curl_slist_append(h, line);
		kw_crypto_wipe(line, sizeof(line));
	}
	if (json_object_is_type(extra, json_type_object)) {
		json_object_object_foreach(extra, name, value) {
			int taken = 0;

			for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
				taken |= strcasecmp(name, ours[i]) == 0;
			if (taken || !json_object_is_type(value, json_type_string) ||
			    strpbrk(name, ":\r\n ") != NULL ||
			    strpbrk(json_object_get_string(value), "\r\n") != NULL)
				continue;
			snprintf(line, sizeof(line), "%s: %s", name, json_object_get_string(value));
			h = curl_slist_append(h, line);
		}
	}
	return h;
}

enum outcome { TRY_ANSWERED = 0, TRY_NEXT, TRY_FAILED };

/* network_config.default_request_timeout_in_seconds (Bifrost's 30 by default), in seconds. */
static long
timeout_of(const struct relay *r)
{
	double t = kw_json_num(r->up.network, "default_request_timeout_in_seconds", 0);

	return t >= 1 && t <= 86400 ? (long)t : 30;
}

/*
 * The worker's one libcurl handle, reset before each try.  A reset keeps
 * the handle's connection cache, DNS cache and TLS sessions, so calls to a
 * provider reuse a kept-alive connection instead of a new TCP and TLS
 * handshake each; the options, verification with them, are set again on
 * every try.  Workers answer one request at a time, so one is enough; the
 * relay and the group's forwarding to its master share it.
 */
void *
kw_http_client(void)
{
	static int ready;
	static CURL *handle;

	if (!ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return NULL;
		ready = 1;
	}
	if (handle == NULL)
		handle = curl_easy_init();
	else
		curl_easy_reset(handle);
	return handle;
}

/* Sends one try to r->up and reads its answer; says whether another key may try. */
static enum outcome
try_once(struct relay *r, int *timed_out)
{
	char *body = upstream_body(r);
	struct curl_slist *headers;
	CURLcode cc;
	enum outcome out;

	snprintf(r->secret, sizeof(r->secret), "%s", key_secret(r->up.key));
	headers = upstream_headers(r);
	r->status = 0;
	r->len = 0;
	r->too_large = 0;
	r->content_type[0] = '\0';
	if (body == NULL || (r->curl = kw_http_client()) == NULL) {
		free(body);
		curl_slist_free_all(headers);
		return TRY_FAILED;
	}
	curl_easy_setopt(r->curl, CURLOPT_URL, r->up.url);
	curl_easy_setopt(r->curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(r->curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(r->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(r->curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(r->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
	curl_easy_setopt(r->curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(r->curl, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(r->curl, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(r->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(r->curl, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(r->curl, CURLOPT_CONNECTTIMEOUT, (long)kw_config.relay_connect_timeout);
	if (r->stream) {
		/* a stream lasts as long as it keeps talking, up to KEYWARDEN_RELAY_TIMEOUT */
		curl_easy_setopt(r->curl, CURLOPT_TIMEOUT, (long)kw_config.relay_timeout);
		curl_easy_setopt(r->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(r->curl, CURLOPT_LOW_SPEED_TIME, timeout_of(r));
	} else {
		curl_easy_setopt(r->curl, CURLOPT_TIMEOUT, timeout_of(r));
	}
	curl_easy_setopt(r->curl, CURLOPT_MAXFILESIZE_LARGE,
	    (curl_off_t)kw_config.relay_max_response);
	curl_easy_setopt(r->curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(r->curl, CURLOPT_SSL_VERIFYHOST, 2L);
	if (kw_config.ca_bundle[0] != '\0')
		curl_easy_setopt(r->curl, CURLOPT_CAINFO, kw_config.ca_bundle);
	curl_easy_setopt(r->curl, CURLOPT_USERAGENT, "keywarden/" KW_VERSION);

	cc = curl_easy_perform(r->curl);
	if (r->status == 0)
		curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &r->status);
	r->curl = NULL;	/* kept, with its connection, for the worker's next try */
	curl_slist_free_all(headers);
	kw_crypto_wipe(body, strlen(body));
	free(body);

	*timed_out = cc == CURLE_OPERATION_TIMEDOUT;
	if (r->started) {
		/* the client has bytes of this answer: it ends here, whatever happened */
		if (r->len > 0)
			relay_event(r, r->buf, r->len);	/* a last event without its blank line */
		if (cc != CURLE_OK) {
			static const char end[] = "data: {\"error\":{\"message\":\"the provider's "
			    "stream broke off\",\"type\":\"upstream_error\",\"param\":null,"
			    "\"code\":\"502\"}}\n\n";

			kw_log_warn("relay: provider %s key %s: the stream broke off: %s",
			    r->up.provider, kw_json_str(r->up.key, "id"), curl_easy_strerror(cc));
			client_write(r, end, sizeof(end) - 1);
			client_flush(r);
		}
		return TRY_ANSWERED;
	}
	if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && r->too_large) &&
	    cc != CURLE_FILESIZE_EXCEEDED) {
		kw_log_warn("relay: provider %s key %s: %s", r->up.provider,
		    kw_json_str(r->up.key, "id"), curl_easy_strerror(cc));
		out = cc == CURLE_COULDNT_CONNECT || cc == CURLE_OPERATION_TIMEDOUT ||
		    cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_GOT_NOTHING ||
		    cc == CURLE_RECV_ERROR || cc == CURLE_SEND_ERROR ||
		    cc == CURLE_SSL_CONNECT_ERROR || cc == CURLE_PEER_FAILED_VERIFICATION ?
		    TRY_NEXT : TRY_FAILED;
		return out;
	}
	if (r->status == 429 || r->status >= 500 || r->status == 401 || r->status == 403 ||
	    r->status == 408) {
		kw_log_warn("relay: provider %s key %s answered %ld: trying the next key",
		    r->up.provider, kw_json_str(r->up.key, "id"), r->status);
		return TRY_NEXT;
	}
	return TRY_ANSWERED;
}

/* Answers what a whole (non-streamed) answer of the provider says, once it is settled. */
static void
answer_whole(struct relay *r)
{
	char *copy;

	if (r->too_large) {
		answer_error(r, 502, KW_EINTERNAL, NULL, "upstream_error",
		    "the provider's answer is larger than KEYWARDEN_RELAY_MAX_RESPONSE");
		return;
	}
	if (holds_secret(r, r->buf ? r->buf : "", r->len)) {
		/* never pass a provider secret on, even one the provider echoes */
		answer_error(r, 502, KW_EINTERNAL, NULL, "upstream_error", "the provider's answer "
		    "was withheld: it held the provider's credential");
		return;
	}
	if ((copy = kw_arena_strndup(r->req->arena, r->buf ? r->buf : "", r->len)) == NULL) {
		answer_error(r, 502, KW_EINTERNAL, NULL, "upstream_error", "out of memory");
		return;
	}
	r->resp->status = (int)r->status;
	r->resp->raw = copy;
	r->resp->raw_len = r->len;
	r->resp->content_type = kw_arena_strndup(r->req->arena, r->content_type[0] ?
	    r->content_type : "application/json", strlen(r->content_type[0] ? r->content_type :
	    "application/json"));
	kw_resp_header(r->req, r->resp, "x-request-id: %s", r->request_id);
}

/* --- the handler --------------------------------------------------------- */

/* True when presented is the master key (as DATA_DIR/master.key holds it now). */
static int
is_master_key(const char *presented)
{
	kw_config_master_key_refresh();
	return kw_config.master_key[0] != '\0' &&
	    kw_crypto_same_secret(presented, kw_config.master_key);
}

struct plan {
	struct relay *r;
	const char *target;	/* borrowed from the records below */
	json_object *key, *team;
};

/* Reads the key and its team, to resolve the aliases the model may be named by. */
static enum kw_err
plan_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct plan *p = baton;
	const char *team_id;
	int team_alias;
	char prefix[256];
	const char *slash;
	enum kw_err rc;

	json_object_put(p->key);
	json_object_put(p->team);
	p->key = p->team = NULL;
	rc = kw_keys_credential(st, txn, p->r->key, p->r->req->now, &p->key);
	if (rc != KW_OK && rc != KW_ENOTFOUND)
		return rc;
	rc = KW_OK;	/* an unknown key is the check's to refuse */
	if ((team_id = kw_json_str(p->key, "team_id")) != NULL &&
	    (rc = kw_rec_get(st, txn, KW_DB_TEAMS, team_id, 0, &p->team)) != KW_OK &&
	    rc != KW_ENOTFOUND)
		return rc;
	p->target = kw_limits_model_resolve(p->key, p->team, p->r->asked, &team_alias);
	p->r->provider[0] = '\0';
	p->r->model = p->target;
	if ((slash = strchr(p->target, '/')) != NULL && (size_t)(slash - p->target) <
	    sizeof(prefix)) {
		memcpy(prefix, p->target, (size_t)(slash - p->target));
		prefix[slash - p->target] = '\0';
		if (is_provider(p->r->req, txn, prefix, &rc)) {
			snprintf(p->r->provider, sizeof(p->r->provider), "%s", prefix);
			p->r->model = slash + 1;
		}
	}
	return rc;
}

/* Tokens a request's body is likely to be: a quarter of its bytes, at least one. */
static int64_t
prompt_estimate(struct kw_req *req)
{
	const char *text = json_object_to_json_string_ext(req->body, JSON_C_TO_STRING_PLAIN);

	return (int64_t)(strlen(text) / 4) + 1;
}

/* The output tokens a request may produce: what it caps them at, else the setting. */
static int64_t
output_estimate(struct relay *r)
{
	static const char *const caps[] = { "max_completion_tokens", "max_tokens",
		"max_output_tokens" };

	if (r->kind == R_EMBEDDINGS)
		return 0;
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		double v = kw_json_num(r->req->body, caps[i], 0);

		if (v >= 1)
			return (int64_t)v;
	}
	return kw_config.relay_expected_output;
}

/*
 * Waits before the nth try of a key already tried, as Bifrost backs off:
 * network_config.retry_backoff_initial milliseconds, doubled each time, at
 * most retry_backoff_max.
 */
static void
backoff(const struct relay *r, unsigned nth)
{
	long ms = (long)kw_json_num(r->up.network, "retry_backoff_initial", 500);
	long most = (long)kw_json_num(r->up.network, "retry_backoff_max", 5000);
	struct timespec ts;

	for (unsigned i = 1; i < nth && ms < most; i++)
		ms *= 2;
	if (ms > most)
		ms = most;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	nanosleep(&ts, NULL);
}

/*
 * Runs the tries: each on an eligible key not tried yet while there is one,
 * until one answers or the provider's tries are spent: 1 +
 * network_config.max_retries when it sets some, else KEYWARDEN_RELAY_TRIES.
 */
static enum kw_err
call_provider(struct relay *r)
{
	unsigned tries = kw_config.relay_tries, done = 0, again = 0;
	double retries;
	const char *id;
	int timed_out = 0, answered;
	enum kw_err rc = KW_OK;
	enum outcome out = TRY_FAILED;

	while (done < tries) {
		if ((rc = kw_store_txn(r->req->store, choose_body, r)) != KW_OK)
			break;
		retries = kw_json_num(r->up.network, "max_retries", 0);
		if (done == 0 && retries >= 1)
			tries = 1 + (retries > 9 ? 9 : (unsigned)retries);
		id = kw_json_str(r->up.key, "id") ? kw_json_str(r->up.key, "id") : "";
		if (kw_json_list_has(r->tried, id))
			backoff(r, ++again);	/* every eligible key failed once: wait, then again */
		else
			json_object_array_add(r->tried, json_object_new_string(id));
		done++;
		if ((rc = build_url(r)) != KW_OK)
			break;
		if ((out = try_once(r, &timed_out)) != TRY_NEXT)
			break;
	}
	if (rc == KW_ENOTFOUND && done > 0)
		rc = KW_OK;	/* the keys tried went away meanwhile: what they answered stands */
	if (rc == KW_OK && out == TRY_ANSWERED) {
		answered = r->started || (r->status >= 200 && r->status < 300);
		if (!r->started && answered)
			usage_of_answer(r, r->buf ? r->buf : "", r->len);
		/*
		 * settled before the answer is sent, so that the next call sees the
		 * spend; the settlement reaches the disk once the answer has gone
		 */
		settle(r, answered);
		if (!r->started)
			answer_whole(r);
	} else {
		settle(r, 0);
		if (rc == KW_OK)
			answer_error(r, timed_out ? 504 : 502, KW_EINTERNAL, NULL, "upstream_error",
			    timed_out ? "the provider did not answer in time (%u tries)" :
			    "no provider key could answer (%u tries)", done);
	}
	upstream_release(&r->up);
	kw_crypto_wipe(r->secret, sizeof(r->secret));
	free(r->buf);
	r->buf = NULL;
	return rc;	/* KW_ENOTFOUND (no key serves the model), KW_EINVAL (its URL), a store error */
}

/*
 * A relayed call: the key from the security headers, the model from the
 * body (or the Azure deployment in the path), every limit checked and the
 * call's expected cost reserved, then the provider, then the settlement.
 */
static enum kw_err
relay(struct kw_req *req, struct kw_resp *resp, enum relay_kind kind)
{
	struct relay r = { .req = req, .resp = resp, .kind = kind };
	struct plan plan = { .r = &r };
	struct kw_check in = { .verdict_only = 1 };
	struct kw_verdict v;
	json_object *opts;
	char uuid[37];
	enum kw_err rc;

	resp->status = 0;
	if (req->store == NULL)
		return KW_EUNAVAIL;
	r.key = kw_auth_credential(req);	/* present: kw_relay_authenticate saw to it */
	if (is_master_key(r.key)) {
		/* nothing would be charged: spend belongs to a key, its team and its user */
		kw_error_set(&req->err, KW_EAUTH, NULL, "the master key administers keys and calls "
		    "no model: generate a key (POST /key/generate) and call with it");
		return KW_EAUTH;
	}
	r.azure_deployment = kw_req_path_param(req, "deployment");
	r.asked = r.azure_deployment ? r.azure_deployment : kw_json_str(req->body, "model");
	if (r.asked == NULL) {
		kw_error_set(&req->err, KW_EVALID, "model", "model is required");
		return KW_EVALID;
	}
	r.stream = kw_json_bool(req->body, "stream");
	opts = json_object_object_get(req->body, "stream_options");
	r.client_usage = kw_json_bool(opts, "include_usage");
	r.end_user = kw_json_str(req->body, "user");
	if ((rc = kw_store_txn(req->store, plan_body, &plan)) != KW_OK)
		goto out;
	if ((r.model = kw_arena_strndup(req->arena, r.model, strlen(r.model))) == NULL) {
		rc = KW_ENOMEM;
		goto out;
	}
	price_of(r.asked, r.provider[0] ? r.provider : "openai", r.model, &r.price);
	r.expected_tokens = prompt_estimate(req);
	r.expected_cost = (double)r.expected_tokens * r.price.input +
	    (double)output_estimate(&r) * r.price.output + r.price.image;
	kw_uuid4(uuid);
	snprintf(r.request_id, sizeof(r.request_id), "relay-%s", uuid);

	/* every limit, before the provider hears of the request */
	in.key = r.key;
	in.model = r.asked;
	in.route = req->path;
	in.request_id = r.request_id;
	in.expected_cost = r.expected_cost;
	in.expected_tokens = r.expected_tokens;
	in.end_user = r.end_user;
	if ((rc = kw_limits_check(req->store, req->now, &in, &v)) != KW_OK)
		goto out;
	kw_metrics_verdict(v.code);
	kw_log_verdict(v.code, v.token);
	if (v.code != KW_V_VALID) {
		kw_authz_refusal(req, resp, &v);
		kw_verdict_clear(&v);
		goto out;
	}
	kw_authz_rate_headers(req, resp, &v);
	kw_verdict_clear(&v);
	if (!r.price.found && !kw_config.relay_allow_unpriced) {
		settle(&r, 0);
		answer_error(&r, 400, KW_EINVAL, "model", "invalid_request_error", "model %s has no "
		    "price: the operator prices it in KEYWARDEN_RELAY_PRICES, or sets "
		    "KEYWARDEN_RELAY_ALLOW_UNPRICED=1", r.asked);
		goto out;
	}
	r.tried = json_object_new_array();
	rc = call_provider(&r);
	json_object_put(r.tried);
out:
	json_object_put(plan.key);
	json_object_put(plan.team);
	return rc;
}

enum kw_err kw_op_v1_chat_completions(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_CHAT); }
enum kw_err kw_op_chat_completions(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_CHAT); }
enum kw_err kw_op_azure_chat_completions(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_CHAT); }
enum kw_err kw_op_v1_completions(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_COMPLETIONS); }
enum kw_err kw_op_completions(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_COMPLETIONS); }
enum kw_err kw_op_azure_completions(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_COMPLETIONS); }
enum kw_err kw_op_v1_embeddings(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_EMBEDDINGS); }
enum kw_err kw_op_embeddings(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_EMBEDDINGS); }
enum kw_err kw_op_azure_embeddings(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_EMBEDDINGS); }
enum kw_err kw_op_v1_responses(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_RESPONSES); }
enum kw_err kw_op_responses(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_RESPONSES); }
enum kw_err kw_op_v1_images_generations(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_IMAGES); }
enum kw_err kw_op_images_generations(struct kw_req *q, struct kw_resp *s) { return relay(q, s, R_IMAGES); }

/* --- the models a key may use ------------------------------------------- */

struct listing {
	struct kw_req *req;
	json_object *names;	/* owned object: model name -> provider (string) */
};

/* Gathers the models every enabled provider key lists, each with its provider. */
static int
gather_listed(const char *id, json_object *rec, void *baton)
{
	struct listing *l = baton;
	json_object *models = json_object_object_get(rec, "models");
	const char *provider = kw_json_str(rec, "provider");

	(void)id;
	if (!kw_json_bool(rec, "enabled") || provider == NULL)
		return 0;
	for (size_t i = 0; json_object_is_type(models, json_type_array) &&
	    i < json_object_array_length(models); i++) {
		const char *m = json_object_get_string(json_object_array_get_idx(models, i));

		if (m != NULL && strchr(m, '*') == NULL && !json_object_object_get_ex(l->names, m, NULL) &&
		    !kw_json_list_has(json_object_object_get(rec, "blacklisted_models"), m))
			json_object_object_add(l->names, m, json_object_new_string(provider));
	}
	return 0;
}

/* Adds the names of an alias map (the key's aliases, the team's model_aliases), served as their target. */
static void
gather_aliases(struct listing *l, json_object *aliases, json_object *served)
{
	if (!json_object_is_type(aliases, json_type_object))
		return;
	json_object_object_foreach(aliases, name, target) {
		json_object *provider;
		const char *t = json_object_get_string(target);

		if (t != NULL && json_object_object_get_ex(served, t, &provider))
			json_object_object_add(l->names, name, json_object_get(provider));
	}
}

static enum kw_err
listing_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct listing *l = baton;
	json_object *key = NULL, *team = NULL, *served;
	const char *team_id;
	enum kw_err rc;

	json_object_put(l->names);
	l->names = json_object_new_object();
	if ((rc = kw_rec_each(st, txn, KW_DB_PROVIDER_KEYS, gather_listed, l)) != KW_OK)
		return rc;
	served = kw_json_copy(l->names);
	if ((rc = kw_keys_credential(st, txn, kw_auth_credential(l->req), l->req->now, &key)) ==
	    KW_OK && (team_id = kw_json_str(key, "team_id")) != NULL &&
	    kw_rec_get(st, txn, KW_DB_TEAMS, team_id, 0, &team) != KW_OK)
		team = NULL;
	gather_aliases(l, json_object_object_get(key, "aliases"), served);
	gather_aliases(l, json_object_object_get(team, "model_aliases"), served);
	json_object_put(served);
	json_object_put(key);
	json_object_put(team);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/*
 * The models the caller's key may use, name -> provider (*out owned):
 * those the enabled provider keys list, and the key's and team's aliases
 * of them, each kept when a dry-run check of the key for it passes (the
 * key's, team's, user's and organization's models).  A key that is not
 * good for any model (unknown, blocked, expired) is refused first.
 */
static enum kw_err
usable_models(struct kw_req *req, struct kw_resp *resp, json_object **out)
{
	struct listing l = { .req = req };
	struct kw_check in = { .dry_run = 1, .verdict_only = 1, .key = kw_auth_credential(req) };
	struct kw_verdict v;
	enum kw_err rc;

	*out = NULL;
	if (req->store == NULL)
		return KW_EUNAVAIL;
	if ((rc = kw_limits_check(req->store, req->now, &in, &v)) != KW_OK)
		return rc;
	if (v.code != KW_V_VALID && v.code != KW_V_RATE_LIMITED && v.code != KW_V_BUDGET_EXCEEDED) {
		kw_authz_refusal(req, resp, &v);
		kw_verdict_clear(&v);
		return KW_OK;
	}
	kw_verdict_clear(&v);
	if ((rc = kw_store_txn(req->store, listing_body, &l)) != KW_OK) {
		json_object_put(l.names);
		return rc;
	}
	*out = json_object_new_object();
	json_object_object_foreach(l.names, name, provider) {
		in.model = name;
		if ((rc = kw_limits_check(req->store, req->now, &in, &v)) != KW_OK)
			break;
		if (v.code != KW_V_MODEL_NOT_ALLOWED)
			json_object_object_add(*out, name, json_object_get(provider));
		kw_verdict_clear(&v);
	}
	json_object_put(l.names);
	if (rc != KW_OK) {
		json_object_put(*out);
		*out = NULL;
	}
	return rc;
}

/* GET /v1/models and /models: OpenAI's list of the models the key may use. */
static enum kw_err
models_list(struct kw_req *req, struct kw_resp *resp)
{
	json_object *names, *answer, *data;
	enum kw_err rc = usable_models(req, resp, &names);

	if (rc != KW_OK || names == NULL)
		return rc;
	answer = json_object_new_object();
	data = json_object_new_array();
	json_object_object_add(answer, "object", json_object_new_string("list"));
	json_object_object_foreach(names, name, provider) {
		json_object *m = json_object_new_object();

		json_object_object_add(m, "id", json_object_new_string(name));
		json_object_object_add(m, "object", json_object_new_string("model"));
		json_object_object_add(m, "created", json_object_new_int64(0));
		json_object_object_add(m, "owned_by", json_object_get(provider));
		json_object_array_add(data, m);
	}
	json_object_object_add(answer, "data", data);
	json_object_put(names);
	kw_resp_json(resp, 200, answer);
	return KW_OK;
}

/* GET /model/info and /v1/model/info: LiteLLM's model info for the models the key may use. */
static enum kw_err
model_info(struct kw_req *req, struct kw_resp *resp)
{
	json_object *names, *answer, *data;
	enum kw_err rc = usable_models(req, resp, &names);

	if (rc != KW_OK || names == NULL)
		return rc;
	answer = json_object_new_object();
	data = json_object_new_array();
	json_object_object_foreach(names, name, provider) {
		json_object *m = json_object_new_object(), *params = json_object_new_object();
		json_object *info = json_object_new_object();
		struct price p;
		const char *mode = "chat";

		price_of(name, json_object_get_string(provider), name, &p);
		for (size_t i = 0; i < NDEFAULT_PRICES; i++)
			if (strcmp(default_prices[i].model, name) == 0)
				mode = default_prices[i].mode;
		json_object_object_add(params, "model", json_object_new_string(name));
		json_object_object_add(params, "custom_llm_provider", json_object_get(provider));
		json_object_object_add(info, "input_cost_per_token",
		    p.found ? json_object_new_double(p.input) : NULL);
		json_object_object_add(info, "output_cost_per_token",
		    p.found ? json_object_new_double(p.output) : NULL);
		json_object_object_add(info, "mode", json_object_new_string(mode));
		json_object_object_add(m, "model_name", json_object_new_string(name));
		json_object_object_add(m, "litellm_params", params);
		json_object_object_add(m, "model_info", info);
		json_object_array_add(data, m);
	}
	json_object_object_add(answer, "data", data);
	json_object_put(names);
	kw_resp_json(resp, 200, answer);
	return KW_OK;
}

enum kw_err kw_op_v1_models(struct kw_req *q, struct kw_resp *s) { return models_list(q, s); }
enum kw_err kw_op_models(struct kw_req *q, struct kw_resp *s) { return models_list(q, s); }
enum kw_err kw_op_model_info(struct kw_req *q, struct kw_resp *s) { return model_info(q, s); }
enum kw_err kw_op_v1_model_info(struct kw_req *q, struct kw_resp *s) { return model_info(q, s); }

/*
 * The relay's credential check, run before the body is read (as every
 * operation's is): 401 for no key, or one the limits engine does not know
 * or finds blocked or expired (it, its team or its user), without counting
 * anything.  The limits the key carries are the handler's to judge.
 */
enum kw_err
kw_relay_authenticate(struct kw_req *req)
{
	struct kw_check in = { .key = kw_auth_credential(req), .dry_run = 1, .verdict_only = 1 };
	struct kw_verdict v;
	enum kw_err rc;

	if (in.key == NULL) {
		kw_error_set(&req->err, KW_EAUTH, NULL, "no API key: send Authorization: Bearer sk-...");
		return KW_EAUTH;
	}
	if (req->store == NULL)
		return KW_EUNAVAIL;
	if (is_master_key(in.key))
		return KW_OK;	/* a good credential: the handler says it calls no model */
	if ((rc = kw_limits_check(req->store, req->now, &in, &v)) != KW_OK)
		return rc;
	switch (v.code) {
	case KW_V_NOT_FOUND:
	case KW_V_BLOCKED:
	case KW_V_EXPIRED:
	case KW_V_TEAM_BLOCKED:
	case KW_V_USER_BLOCKED:
		kw_error_set(&req->err, KW_EAUTH, NULL, "%s: %s", kw_verdict_code_name(v.code),
		    v.message);
		rc = KW_EAUTH;
		break;
	default:
		break;
	}
	kw_verdict_clear(&v);
	return rc;
}

int
kw_relay_route(const struct kw_route *route)
{
	static const kw_handler_fn handlers[] = {
		kw_op_v1_chat_completions, kw_op_chat_completions, kw_op_azure_chat_completions,
		kw_op_v1_completions, kw_op_completions, kw_op_azure_completions,
		kw_op_v1_embeddings, kw_op_embeddings, kw_op_azure_embeddings,
		kw_op_v1_responses, kw_op_responses, kw_op_v1_images_generations,
		kw_op_images_generations, kw_op_v1_models, kw_op_models, kw_op_model_info,
		kw_op_v1_model_info,
	};

	for (size_t i = 0; route != NULL && i < sizeof(handlers) / sizeof(handlers[0]); i++)
		if (route->handler == handlers[i])
			return 1;
	return 0;
}
