/* face_litellm.c: LiteLLM's key-management API, translated onto the key model in keys.c. */
#include <string.h>

#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

/* Request fields that configure the key but are not part of its stored record. */
static const char *const not_stored[] = { "key", "duration", "send_invite_email" };

static int
is_stored_field(const char *name)
{
	for (size_t i = 0; i < sizeof(not_stored) / sizeof(not_stored[0]); i++)
		if (strcmp(name, not_stored[i]) == 0)
			return 0;
	return 1;
}

static const char *
string_field(json_object *obj, const char *name)
{
	json_object *v;

	if (!json_object_object_get_ex(obj, name, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* Sets name to value unless the record already holds a non-null value. */
static void
default_field(json_object *record, const char *name, json_object *value)
{
	json_object *v;

	if (json_object_object_get_ex(record, name, &v) && v != NULL)
		json_object_put(value);
	else
		json_object_object_add(record, name, value);
}

static json_object *
time_or_null(time_t t)
{
	char buf[KW_TIME_LEN];

	if (t == 0)
		return NULL;
	kw_time_format(t, buf);
	return json_object_new_string(buf);
}

/*
 * POST /key/generate: the validated body becomes the key's record; the
 * plaintext key appears in this answer only, the store keeps its SHA-256.
 */
enum kw_err
kw_op_key_generate(struct kw_req *req, struct kw_resp *resp)
{
	char secret[KW_KEY_GENERATED_LEN + 1], token[KW_SHA256_HEX_LEN + 1], name[32];
	const char *key, *duration, *budget_duration;
	json_object *record;
	time_t expires = 0;
	enum kw_err rc;

	if ((rc = kw_auth_admin(req)) != KW_OK)
		return rc;
	if (req->store == NULL)
		return KW_EUNAVAIL;

	if ((duration = string_field(req->body, "duration")) != NULL &&
	    kw_keys_parse_duration(duration, req->now, &expires) != KW_OK) {
		kw_error_set(&req->err, KW_EVALID, "duration",
		    "duration must be a number and a unit: s, m, h, d, w or mo");
		return KW_EVALID;
	}
	if ((key = string_field(req->body, "key")) == NULL) {
		kw_keys_new_secret(secret);
		key = secret;
	}
	kw_crypto_sha256_hex(key, strlen(key), token);
	kw_keys_key_name(key, name, sizeof(name));

	record = json_object_new_object();
	json_object_object_foreach(req->body, field, value) {
		if (is_stored_field(field))
			json_object_object_add(record, field, json_object_get(value));
	}
	json_object_object_add(record, "token", json_object_new_string(token));
	json_object_object_add(record, "key_name", json_object_new_string(name));
	json_object_object_add(record, "expires", time_or_null(expires));
	default_field(record, "spend", json_object_new_double(0));
	default_field(record, "models", json_object_new_array());
	default_field(record, "metadata", json_object_new_object());
	default_field(record, "blocked", json_object_new_boolean(0));
	if ((budget_duration = string_field(req->body, "budget_duration")) != NULL)
		json_object_object_add(record, "budget_reset_at",
		    time_or_null(kw_keys_budget_reset(budget_duration, req->now)));
	json_object_object_add(record, "created_at", time_or_null(req->now));
	json_object_object_add(record, "updated_at", time_or_null(req->now));
	json_object_object_add(record, "created_by", json_object_new_string("default_user_id"));

	rc = kw_keys_insert(req->store, token, string_field(req->body, "key_alias"), record,
	    &req->err);
	if (rc == KW_OK) {
		/* stored: now the answer may carry what the store must never hold */
		json_object_object_add(record, "key", json_object_new_string(key));
		json_object_object_add(record, "token_id", json_object_new_string(token));
		kw_resp_json(resp, 200, record);
	} else {
		json_object_put(record);
	}
	kw_crypto_wipe(secret, sizeof(secret));
	return rc;
}
