/* test_select.c: kw_provider_key_select, the one provider key selection the relay and /keys/select share, on keys in a fresh environment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "tap.h"

static char dir[] = "/tmp/kw-test-select-XXXXXX";
static struct kw_req req;

/* Stored provider keys, as the Bifrost face writes them; their secrets reference the environment. */
static const char *const keys[][2] = {
	{ "openai|listed", "{\"id\":\"listed\",\"provider\":\"openai\",\"name\":\"listed\","
	    "\"models\":[\"gpt-4o\"],\"blacklisted_models\":[],\"weight\":1,\"enabled\":true,"
	    "\"value\":{\"env_var\":\"env.SELECT_A_API_KEY\"}}" },
	{ "openai|every", "{\"id\":\"every\",\"provider\":\"openai\",\"name\":\"every\","
	    "\"models\":[\"*\"],\"blacklisted_models\":[],\"weight\":1,\"enabled\":true,"
	    "\"value\":{\"env_var\":\"env.SELECT_B_API_KEY\"}}" },
	{ "openai|off", "{\"id\":\"off\",\"provider\":\"openai\",\"name\":\"off\","
	    "\"models\":[\"gpt-4o\"],\"blacklisted_models\":[],\"weight\":1,\"enabled\":false,"
	    "\"value\":{\"env_var\":\"env.SELECT_A_API_KEY\"}}" },
	{ "openai|banned", "{\"id\":\"banned\",\"provider\":\"openai\",\"name\":\"banned\","
	    "\"models\":[\"*\"],\"blacklisted_models\":[\"gpt-4o\"],\"weight\":1,\"enabled\":true,"
	    "\"value\":{\"env_var\":\"env.SELECT_A_API_KEY\"}}" },
	{ "groq|other", "{\"id\":\"other\",\"provider\":\"groq\",\"name\":\"other\","
	    "\"models\":[\"gpt-4o\",\"llama-3\"],\"blacklisted_models\":[],\"weight\":1,"
	    "\"enabled\":true,\"value\":{\"env_var\":\"env.SELECT_B_API_KEY\"}}" },
};

static enum kw_err
put_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	enum kw_err rc = KW_OK;

	(void)baton;
	for (size_t i = 0; rc == KW_OK && i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_object *rec = json_tokener_parse(keys[i][1]);

		rc = kw_rec_put(st, txn, KW_DB_PROVIDER_KEYS, keys[i][0], rec, 0);
		json_object_put(rec);
	}
	return rc;
}

struct pick {
	const char *provider, *model;
	json_object *tried;
	json_object *key;
};

static enum kw_err
pick_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct pick *p = baton;

	(void)st;
	kw_provider_key_release(p->key);
	return kw_provider_key_select(&req, txn, p->provider, p->model, p->tried, &p->key);
}

/*
 * Selects n times; counts each id chosen into seen (an object id -> count).
 * Returns the last rc.
 */
static enum kw_err
pick_many(struct kw_store *st, struct pick *p, int n, json_object *seen)
{
	enum kw_err rc = KW_OK;

	for (int i = 0; i < n && rc == KW_OK; i++) {
		p->key = NULL;
		if ((rc = kw_store_txn(st, pick_body, p)) == KW_OK) {
			const char *id = kw_json_str(p->key, "id");

			json_object_object_add(seen, id, json_object_new_int(1 +
			    json_object_get_int(json_object_object_get(seen, id))));
		}
		kw_provider_key_release(p->key);
		p->key = NULL;
	}
	return rc;
}

static int
count(json_object *seen, const char *id)
{
	return json_object_get_int(json_object_object_get(seen, id));
}

int
main(void)
{
	struct kw_store *st = NULL;
	struct pick p = { 0 };
	json_object *seen;
	char cmd[128];

	kw_crypto_init();
	kw_log_threshold = KW_LOG_ERROR;
	snprintf(kw_config.provider_env, sizeof(kw_config.provider_env), "%s",
	    KW_PROVIDER_ENV_DEFAULT);
	setenv("SELECT_A_API_KEY", "sk-select-a", 1);
	setenv("SELECT_B_API_KEY", "sk-select-b", 1);
	if (mkdtemp(dir) == NULL || kw_store_open(&st, dir, KW_STORE_RECOVER) != KW_OK)
		return 1;
	req.store = st;
	is_int(kw_store_txn(st, put_body, NULL), KW_OK, "provider keys stored");

	p.provider = "openai";
	p.model = "gpt-4o";
	seen = json_object_new_object();
	is_int(pick_many(st, &p, 200, seen), KW_OK, "openai, gpt-4o: 200 selections");
	ok(count(seen, "listed") > 0 && count(seen, "every") > 0 &&
	    count(seen, "listed") + count(seen, "every") == 200,
	    "... by weight among the enabled keys that allow it (%d listed, %d every)",
	    count(seen, "listed"), count(seen, "every"));
	ok(count(seen, "off") == 0 && count(seen, "banned") == 0,
	    "... never a disabled key nor one that blacklists it");
	json_object_put(seen);

	p.key = NULL;
	is_int(kw_store_txn(st, pick_body, &p), KW_OK, "one selection");
	ok(strcmp(kw_json_str(p.key, "value"), strcmp(kw_json_str(p.key, "id"), "listed") == 0 ?
	    "sk-select-a" : "sk-select-b") == 0, "... its secret resolved from the environment");
	kw_provider_key_release(p.key);
	p.key = NULL;

	p.tried = json_object_new_array();
	json_object_array_add(p.tried, json_object_new_string("listed"));
	seen = json_object_new_object();
	is_int(pick_many(st, &p, 50, seen), KW_OK, "with listed tried");
	is_int(count(seen, "every"), 50, "... the key not tried yet, every time (the relay's failover)");
	json_object_put(seen);
	json_object_array_add(p.tried, json_object_new_string("every"));
	seen = json_object_new_object();
	is_int(pick_many(st, &p, 100, seen), KW_OK, "with every eligible key tried");
	ok(count(seen, "listed") > 0 && count(seen, "every") > 0, "... any of them again");
	json_object_put(seen);
	json_object_put(p.tried);
	p.tried = NULL;

	p.provider = NULL;
	seen = json_object_new_object();
	is_int(pick_many(st, &p, 200, seen), KW_OK, "no provider named: gpt-4o");
	ok(count(seen, "listed") > 0 && count(seen, "other") > 0 &&
	    count(seen, "listed") + count(seen, "other") == 200,
	    "... among every provider's keys whose models list names it (%d openai, %d groq)",
	    count(seen, "listed"), count(seen, "other"));
	is_int(count(seen, "every"), 0, "... not a key that allows every model without naming it");
	json_object_put(seen);

	p.model = "o1";
	p.key = NULL;
	is_int(kw_store_txn(st, pick_body, &p), KW_ENOTFOUND, "a model no key lists: KW_ENOTFOUND");
	is_str(req.err.field, "model", "... naming model");
	p.provider = "openai";
	is_int(kw_store_txn(st, pick_body, &p), KW_OK, "but openai's every-model key serves o1");
	is_str(kw_json_str(p.key, "id"), "every", "... that key");
	kw_provider_key_release(p.key);

	kw_store_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	return tap_done();
}
