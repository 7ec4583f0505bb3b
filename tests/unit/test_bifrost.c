/* test_bifrost.c: kw_provider_network, what the relay reads of a provider, on records in a fresh environment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "tap.h"

static char dir[] = "/tmp/kw-test-bifrost-XXXXXX";

struct lookup {
	struct kw_req *req;
	const char *provider;
	json_object *network;
	char base[64];
};

static enum kw_err
lookup_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct lookup *l = baton;

	(void)st;
	json_object_put(l->network);
	l->network = NULL;
	return kw_provider_network(l->req, txn, l->provider, &l->network, l->base, sizeof(l->base));
}

struct put {
	const char *name, *json;
};

static enum kw_err
put_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct put *p = baton;
	json_object *rec = json_tokener_parse(p->json);
	enum kw_err rc = kw_rec_put(st, txn, KW_DB_PROVIDERS, p->name, rec, 0);

	json_object_put(rec);
	return rc;
}

/* provider's network_config as kw_provider_network answers it, in a transaction of its own. */
static enum kw_err
lookup(struct kw_store *st, const char *provider, struct lookup *l)
{
	static struct kw_req req;

	memset(&req, 0, sizeof(req));
	req.store = st;
	memset(l, 0, sizeof(*l));
	l->req = &req;
	l->provider = provider;
	return kw_store_txn(st, lookup_body, l);
}

static int64_t
field(json_object *obj, const char *name)
{
	return json_object_get_int64(json_object_object_get(obj, name));
}

int
main(void)
{
	struct kw_store *st = NULL;
	struct lookup l;
	char cmd[128];
	struct put openai = { "openai", "{\"name\":\"openai\",\"network_config\":{\"base_url\":"
	    "\"http://127.0.0.1:9/v1\",\"default_request_timeout_in_seconds\":45,\"max_retries\":2,"
	    "\"retry_backoff_initial\":750,\"retry_backoff_max\":0}}" };
	/* a custom provider as earlier versions stored it: its URL in custom_provider_config */
	struct put legacy = { "lab-llm", "{\"name\":\"lab-llm\",\"custom_provider_config\":"
	    "{\"base_provider_type\":\"anthropic\",\"base_url\":\"http://10.0.0.7:8000\"}}" };

	kw_crypto_init();
	kw_log_threshold = KW_LOG_ERROR;
	if (mkdtemp(dir) == NULL || kw_store_open(&st, dir, KW_STORE_RECOVER) != KW_OK)
		return 1;

	is_int(lookup(st, "anthropic", &l), KW_OK, "a standard provider with no configuration");
	is_str(l.base, "anthropic", "... its base type is its own name");
	ok(json_object_object_get(l.network, "base_url") == NULL, "... no base_url: its own API");
	is_int(field(l.network, "default_request_timeout_in_seconds"), 30,
	    "... Bifrost's DefaultRequestTimeoutInSeconds");
	is_int(field(l.network, "max_retries"), 0, "... DefaultMaxRetries");
	is_int(field(l.network, "retry_backoff_initial"), 500, "... DefaultRetryBackoffInitial (ms)");
	is_int(field(l.network, "retry_backoff_max"), 5000, "... DefaultRetryBackoffMax (ms)");
	json_object_put(l.network);

	is_int(kw_store_txn(st, put_body, &openai), KW_OK, "openai configured");
	is_int(lookup(st, "openai", &l), KW_OK, "a configured standard provider");
	is_str(json_object_get_string(json_object_object_get(l.network, "base_url")),
	    "http://127.0.0.1:9/v1", "... its base_url");
	is_int(field(l.network, "default_request_timeout_in_seconds"), 45, "... its timeout");
	is_int(field(l.network, "max_retries"), 2, "... its retries");
	is_int(field(l.network, "retry_backoff_initial"), 750, "... its initial backoff");
	is_int(field(l.network, "retry_backoff_max"), 5000, "... an unset max backoff: the default");
	json_object_put(l.network);

	is_int(kw_store_txn(st, put_body, &legacy), KW_OK, "a custom provider in the older shape");
	is_int(lookup(st, "lab-llm", &l), KW_OK, "a custom provider");
	is_str(l.base, "anthropic", "... its base type is its base_provider_type");
	is_str(json_object_get_string(json_object_object_get(l.network, "base_url")),
	    "http://10.0.0.7:8000", "... custom_provider_config.base_url read as its base_url");
	json_object_put(l.network);

	is_int(lookup(st, "no-such-provider", &l), KW_ENOTFOUND, "an unknown provider: KW_ENOTFOUND");
	ok(l.network == NULL, "... and no network_config");
	is_str(l.req->err.field, "provider", "... req->err names provider");

	kw_store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	return tap_done();
}
