/* face_bifrost.c: Bifrost's provider credentials (/api/providers, /api/keys), every secret sealed at rest. */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <db.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

#define REDACT_STARS 24
/* below this many characters a secret is shown as 8 stars: its first and last 4 would be a quarter or more */
#define REDACT_MIN_SHOWN 32

/*
 * The built-in providers and how their keys authenticate: by `value` (an
 * API key), or by fields of their configs (URL, cloud credentials).
 */
static const struct builtin {
	const char *name;
	int value_optional;
} builtins[] = {
	{ "openai", 0 }, { "anthropic", 0 }, { "azure", 0 }, { "bedrock", 1 }, { "vertex", 1 },
	{ "gemini", 0 }, { "cohere", 0 }, { "mistral", 0 }, { "groq", 0 }, { "openrouter", 0 },
	{ "replicate", 0 }, { "vllm", 1 }, { "ollama", 1 }, { "sgl", 1 },
};
#define NBUILTINS (sizeof(builtins) / sizeof(builtins[0]))

/* Every EnvVar in a key: its top-level value, and the fields of the provider configs. */
static const struct envvar_field {
	const char *config;	/* NULL for the key's own value */
	const char *field;
} envvars[] = {
	{ NULL, "value" },
	{ "azure_key_config", "endpoint" }, { "azure_key_config", "api_version" },
	{ "azure_key_config", "client_id" }, { "azure_key_config", "client_secret" },
	{ "azure_key_config", "tenant_id" },
	{ "vertex_key_config", "project_id" }, { "vertex_key_config", "project_number" },
	{ "vertex_key_config", "region" }, { "vertex_key_config", "auth_credentials" },
	{ "bedrock_key_config", "access_key" }, { "bedrock_key_config", "secret_key" },
	{ "bedrock_key_config", "session_token" }, { "bedrock_key_config", "region" },
	{ "bedrock_key_config", "arn" },
	{ "vllm_key_config", "url" }, { "ollama_key_config", "url" }, { "sgl_key_config", "url" },
};
#define NENVVARS (sizeof(envvars) / sizeof(envvars[0]))

static const char *const configs[] = {
	"azure_key_config", "vertex_key_config", "bedrock_key_config", "replicate_key_config",
	"vllm_key_config", "ollama_key_config", "sgl_key_config",
};
#define NCONFIGS (sizeof(configs) / sizeof(configs[0]))

/* --- the provider ------------------------------------------------------ */

/* What a request's {provider} is: built in, or custom with its base type. */
struct provider {
	const char *name;
	const char *base;	/* the built-in type whose API it speaks */
	int custom, keyless;
	json_object *record;	/* owned: a custom provider's record, else NULL */
};

static const struct builtin *
builtin_of(const char *name)
{
	for (size_t i = 0; name != NULL && i < NBUILTINS; i++)
		if (strcmp(builtins[i].name, name) == 0)
			return &builtins[i];
	return NULL;
}

/* Looks up provider name into *p (p->record owned); KW_ENOTFOUND naming "provider". */
static enum kw_err
find_provider(struct kw_req *req, DB_TXN *txn, const char *name, struct provider *p)
{
	json_object *cfg;
	enum kw_err rc;

	memset(p, 0, sizeof(*p));
	p->name = name;
	if (builtin_of(name) != NULL) {
		p->base = name;
		return KW_OK;
	}
	rc = kw_rec_get(req->store, txn, KW_DB_PROVIDERS, name, 0, &p->record);
	if (rc == KW_ENOTFOUND)
		kw_error_set(&req->err, KW_ENOTFOUND, "provider", "no provider is named %s", name);
	if (rc != KW_OK)
		return rc;
	cfg = json_object_object_get(p->record, "custom_provider_config");
	p->custom = 1;
	p->base = kw_json_str(cfg, "base_provider_type");
	p->keyless = kw_json_bool(cfg, "is_key_less");
	return KW_OK;
}

/* --- sealing ------------------------------------------------------------- */

/* The data key, read from the data directory once per worker; NULL when it cannot be read. */
static const unsigned char *
data_key(void)
{
	static unsigned char key[KW_AEAD_KEY_LEN];
	static int loaded;

	if (!loaded && kw_config_load_secret("data.key", key, sizeof(key)) == KW_OK)
		loaded = 1;
	return loaded ? key : NULL;
}

/*
 * The authenticated data of a sealed field: where it lives, so a sealed
 * value copied to another key or field does not open there.
 */
static void
aad_of(char *buf, size_t n, const char *provider, const char *id, const struct envvar_field *f)
{
	snprintf(buf, n, "%s|%s|%s.%s", provider, id, f->config ? f->config : "", f->field);
}

/* Seals plain into {"sealed": "<hex of nonce, ciphertext, tag>"} (owned). */
static enum kw_err
seal(const char *aad, const char *plain, json_object **out)
{
	const unsigned char *key = data_key();
	size_t n = strlen(plain), sealed_len = n + KW_AEAD_OVERHEAD;
	unsigned char *sealed = malloc(sealed_len);
	char *hex = malloc(2 * sealed_len + 1);
	enum kw_err rc = key == NULL ? KW_EUNAVAIL : KW_ENOMEM;

	*out = NULL;
	if (key != NULL && sealed != NULL && hex != NULL &&
	    (rc = kw_crypto_seal(key, aad, strlen(aad), plain, n, sealed)) == KW_OK) {
		kw_crypto_hex(sealed, sealed_len, hex);
		*out = json_object_new_object();
		json_object_object_add(*out, "sealed", json_object_new_string(hex));
	}
	free(sealed);
	free(hex);
	return rc;
}

/*
 * Opens a stored {"sealed": ...} into *plain (malloc'd, NUL-terminated;
 * the caller wipes and frees it).  A seal that does not open means a
 * damaged store or another data key: KW_EINTERNAL, logged without secrets.
 */
static enum kw_err
unseal(const char *aad, json_object *stored, char **plain)
{
	const unsigned char *key = data_key();
	const char *hex = kw_json_str(stored, "sealed");
	size_t hexlen = hex ? strlen(hex) : 0, n = hexlen / 2;
	unsigned char *sealed;
	enum kw_err rc;

	*plain = NULL;
	if (key == NULL)
		return KW_EUNAVAIL;
	if (hex == NULL || n < KW_AEAD_OVERHEAD)
		return KW_EINTERNAL;
	if ((sealed = malloc(n)) == NULL || (*plain = calloc(1, n - KW_AEAD_OVERHEAD + 1)) == NULL) {
		free(sealed);
		return KW_ENOMEM;
	}
	rc = kw_crypto_unhex(hex, hexlen, sealed);
	if (rc == KW_OK)
		rc = kw_crypto_open(key, aad, strlen(aad), sealed, n, (unsigned char *)*plain);
	free(sealed);
	if (rc != KW_OK) {
		kw_log_error("bifrost: a sealed secret does not open (wrong data.key or damaged store)");
		free(*plain);
		*plain = NULL;
		return KW_EINTERNAL;
	}
	return KW_OK;
}

static void
free_secret(char *s)
{
	if (s != NULL) {
		kw_crypto_wipe(s, strlen(s));
		free(s);
	}
}

/* Overwrites every string in obj before it is released: they may have held secrets. */
static void
wipe_strings(json_object *obj)
{
	if (json_object_is_type(obj, json_type_string)) {
		kw_crypto_wipe((char *)json_object_get_string(obj), (size_t)json_object_get_string_len(obj));
	} else if (json_object_is_type(obj, json_type_object)) {
		json_object_object_foreach(obj, k, v) {
			(void)k;
			wipe_strings(v);
		}
	} else if (json_object_is_type(obj, json_type_array)) {
		for (size_t i = 0; i < json_object_array_length(obj); i++)
			wipe_strings(json_object_array_get_idx(obj, i));
	}
}

/* The byte offset of character (code point) i of UTF-8 s; strlen(s) past its end. */
static size_t
char_offset(const char *s, size_t i)
{
	size_t off = 0;

	for (; s[off] != '\0'; off++)
		if (((unsigned char)s[off] & 0xc0) != 0x80 && i-- == 0)
			return off;
	return off;
}

static size_t
char_count(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		n += ((unsigned char)*s & 0xc0) != 0x80;
	return n;
}

/*
 * Writes value's redacted form (out holds at least 64 bytes), in the shape
 * Bifrost's EnvVar.Redacted gives and its clients recognise: its first 4
 * characters, 24 stars and its last 4, but only for a secret of
 * REDACT_MIN_SHOWN (32) characters or more, of which those 8 are at most
 * a quarter.  Bifrost shows them from 9 characters on, 8 of a 9-character
 * secret; here anything shorter is "********", which says nothing of its
 * length either.  Characters, not bytes, so no character is cut in two.
 */
static void
redact(const char *value, char *out, size_t n)
{
	size_t chars = char_count(value), head, tail;

	if (chars == 0) {
		snprintf(out, n, "%s", "");
		return;
	}
	if (chars < REDACT_MIN_SHOWN) {
		snprintf(out, n, "%s", "********");
		return;
	}
	head = char_offset(value, 4);
	tail = char_offset(value, chars - 4);
	snprintf(out, n, "%.*s%.*s%s", (int)head, value, REDACT_STARS,
	    "************************", value + tail);
}

/* True when value looks like something keywarden redacted. */
static int
looks_redacted(const char *value)
{
	size_t len = strlen(value);

	size_t head = char_offset(value, 4);

	if (len > 0 && strspn(value, "*") == len)
		return 1;
	return char_count(value) == 8 + REDACT_STARS && strspn(value + head, "*") >= REDACT_STARS;
}

/* --- EnvVars ------------------------------------------------------------- */

/* An EnvVar as sent: nothing, a plain value, or a reference "env.NAME". */
struct envvar {
	const char *plain;	/* borrowed from the body */
	const char *ref;	/* "env.NAME", borrowed */
};

/*
 * A reference names a variable of keywarden's environment: "env." and a
 * name that KEYWARDEN_PROVIDER_ENV allows (comma-separated names and
 * shell wildcards, "*_API_KEY" by default), so that a provider key cannot
 * read out HOME, PATH or anything else of the service's environment.
 * keywarden's own settings (KEYWARDEN_*, the master key among them) are
 * never handed to a gateway, whatever the setting says.
 */
static int
valid_reference(const char *ref)
{
	const char *name = ref + 4, *p = kw_config.provider_env;
	size_t n;

	if (strncmp(ref, "env.", 4) != 0)
		return 0;
	n = strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");
	if (n == 0 || name[n] != '\0' || (name[0] >= '0' && name[0] <= '9') ||
	    strncasecmp(name, "KEYWARDEN_", 10) == 0)
		return 0;
	while (*p != '\0') {
		size_t len = strcspn(p, ",");
		char pattern[256];

		snprintf(pattern, sizeof(pattern), "%.*s", (int)len, p);
		if (len > 0 && fnmatch(pattern, name, 0) == 0)
			return 1;
		p += len + (p[len] == ',');
	}
	return 0;
}

/* Reads the input forms: "value", "env.NAME", {value, env_var, from_env}. */
static void
parse_envvar(json_object *in, struct envvar *ev)
{
	const char *s;

	memset(ev, 0, sizeof(*ev));
	if (in == NULL)
		return;
	if (json_object_is_type(in, json_type_string)) {
		s = json_object_get_string(in);
		if (strncmp(s, "env.", 4) == 0)
			ev->ref = s;
		else
			ev->plain = s;
		return;
	}
	if (kw_json_bool(in, "from_env") && kw_json_str(in, "env_var") != NULL)
		ev->ref = kw_json_str(in, "env_var");
	else if ((s = kw_json_str(in, "value")) != NULL && strncmp(s, "env.", 4) == 0)
		ev->ref = s;
	else
		ev->plain = kw_json_str(in, "value");
}

static json_object *
field_parent(json_object *obj, const struct envvar_field *f)
{
	return f->config ? json_object_object_get(obj, f->config) : obj;
}

static void
field_path(const struct envvar_field *f, char *buf, size_t n)
{
	snprintf(buf, n, "%s%s%s", f->config ? f->config : "", f->config ? "." : "", f->field);
}

/* The field's EnvVar as read back: redacted value, or the reference (owned). */
static enum kw_err
view_envvar(const char *aad, json_object *stored, json_object **out)
{
	const char *ref = kw_json_str(stored, "env_var");
	char shown[64] = "", *plain = NULL;
	enum kw_err rc = KW_OK;

	if (ref == NULL) {
		if ((rc = unseal(aad, stored, &plain)) != KW_OK)
			return rc;
		redact(plain, shown, sizeof(shown));
		free_secret(plain);
	}
	*out = json_object_new_object();
	json_object_object_add(*out, "value", json_object_new_string(shown));
	json_object_object_add(*out, "env_var", json_object_new_string(ref ? ref : ""));
	json_object_object_add(*out, "from_env", json_object_new_boolean(ref != NULL));
	return KW_OK;
}

/*
 * The field's secret resolved for a gateway (owned string, or null): the
 * unsealed value, or the environment variable a reference names, as this
 * service sees it.
 */
static enum kw_err
resolve_envvar(const char *aad, json_object *stored, json_object **out)
{
	const char *ref = kw_json_str(stored, "env_var"), *env;
	char *plain;
	enum kw_err rc;

	*out = NULL;
	if (ref != NULL) {
		/* stored before the setting changed: only what it allows now is read */
		env = valid_reference(ref) ? getenv(ref + 4) : NULL;
		*out = env ? json_object_new_string(env) : NULL;
		return KW_OK;
	}
	if ((rc = unseal(aad, stored, &plain)) != KW_OK)
		return rc;
	*out = json_object_new_string(plain);
	free_secret(plain);
	return KW_OK;
}

/*
 * Rewrites every stored EnvVar of rec (a stored key) through fn: into a
 * copy that the caller owns, for reading (view) or for a gateway (resolve).
 */
static enum kw_err
map_envvars(json_object *rec, enum kw_err (*fn)(const char *, json_object *, json_object **),
    json_object **out)
{
	json_object *copy = kw_json_copy(rec), *parent, *stored, *shown;
	const char *provider = kw_json_str(rec, "provider"), *id = kw_json_str(rec, "id");
	char aad[512];
	enum kw_err rc = KW_OK;

	for (size_t i = 0; i < NENVVARS && rc == KW_OK; i++) {
		parent = field_parent(copy, &envvars[i]);
		if (parent == NULL || !json_object_object_get_ex(parent, envvars[i].field, &stored) ||
		    stored == NULL)
			continue;
		aad_of(aad, sizeof(aad), provider, id, &envvars[i]);
		if ((rc = fn(aad, stored, &shown)) == KW_OK)
			json_object_object_add(parent, envvars[i].field, shown);
	}
	if (rc != KW_OK) {
		wipe_strings(copy);
		json_object_put(copy);
		copy = NULL;
	}
	*out = copy;
	return rc;
}

/* --- writing a key ------------------------------------------------------- */

static int
compare_names(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int
compare_strings(const void *a, const void *b)
{
	return strcmp(json_object_get_string(*(json_object *const *)a),
	    json_object_get_string(*(json_object *const *)b));
}

/*
 * A copy of obj (owned) whose objects hold their keys in sorted order:
 * json-c writes keys in insertion order, so its text is canonical.
 */
static json_object *
sorted_copy(json_object *obj)
{
	json_object *out;

	if (json_object_is_type(obj, json_type_array)) {
		out = json_object_new_array();
		for (size_t i = 0; i < json_object_array_length(obj); i++)
			json_object_array_add(out, sorted_copy(json_object_array_get_idx(obj, i)));
		return out;
	}
	if (!json_object_is_type(obj, json_type_object))
		return json_object_get(obj);
	size_t n = (size_t)json_object_object_length(obj), i = 0;
	const char **names = calloc(n + 1, sizeof(*names));

	out = json_object_new_object();
	if (names == NULL)
		return out;
	json_object_object_foreach(obj, k, v) {
		(void)v;
		names[i++] = k;
	}
	qsort(names, n, sizeof(*names), compare_names);
	for (i = 0; i < n; i++)
		json_object_object_add(out, names[i], sorted_copy(json_object_object_get(obj, names[i])));
	free(names);
	return out;
}

/* Sorts the strings of list (an array) in place. */
static void
sort_list(json_object *list)
{
	if (list != NULL && json_object_is_type(list, json_type_array))
		json_object_array_sort(list, compare_strings);
}

/*
 * config_hash: the SHA-256 hex of the key's content (owned by content,
 * with plain values or references in place of the sealed ones): name,
 * value, sorted models and blacklisted_models, weight, the provider
 * configs, enabled, use_for_batch_api, written canonically.
 */
static void
config_hash(json_object *content, char out[KW_SHA256_HEX_LEN + 1])
{
	static const char *const hashed[] = {
		"name", "value", "models", "blacklisted_models", "weight", "enabled",
		"use_for_batch_api",
	};
	json_object *pick = json_object_new_object(), *canon;
	const char *text;
	char weight[32];

	for (size_t i = 0; i < sizeof(hashed) / sizeof(hashed[0]); i++)
		json_object_object_add(pick, hashed[i],
		    json_object_get(json_object_object_get(content, hashed[i])));
	for (size_t i = 0; i < NCONFIGS; i++)
		json_object_object_add(pick, configs[i],
		    json_object_get(json_object_object_get(content, configs[i])));
	sort_list(json_object_object_get(pick, "models"));
	sort_list(json_object_object_get(pick, "blacklisted_models"));
	/* 1, 1.0 and the default weight are one weight */
	snprintf(weight, sizeof(weight), "%.15g", kw_json_num(content, "weight", 1));
	json_object_object_add(pick, "weight", json_object_new_string(weight));
	canon = sorted_copy(pick);
	text = json_object_to_json_string_ext(canon, JSON_C_TO_STRING_PLAIN);
	kw_crypto_sha256_hex(text, strlen(text), out);
	kw_crypto_wipe((char *)text, strlen(text));
	json_object_put(canon);
	json_object_put(pick);
}

/* True when field (an EnvVar location) holds something in rec. */
static int
has_field(json_object *rec, const char *config, const char *field)
{
	json_object *parent = config ? json_object_object_get(rec, config) : rec, *v;

	return parent != NULL && json_object_object_get_ex(parent, field, &v) && v != NULL &&
	    !(json_object_is_type(v, json_type_string) && json_object_get_string_len(v) == 0);
}

/* The rules a key must meet for its provider; KW_EINVAL naming the field. */
static enum kw_err
check_key(struct kw_req *req, const struct provider *p, json_object *content)
{
	const struct builtin *b = builtin_of(p->base);
	json_object *models = json_object_object_get(content, "models");
	json_object *blacklisted = json_object_object_get(content, "blacklisted_models");
	const char *base = p->base ? p->base : "";
	const char *need = NULL;
	int value_optional = b != NULL && b->value_optional;

	if (p->keyless) {
		kw_error_set(&req->err, KW_EINVAL, "provider",
		    "%s is keyless: it takes no keys", p->name);
		return KW_EINVAL;
	}
	if (strcmp(base, "azure") == 0) {
		value_optional = has_field(content, "azure_key_config", "client_id") &&
		    has_field(content, "azure_key_config", "client_secret") &&
		    has_field(content, "azure_key_config", "tenant_id");
		if (!has_field(content, "azure_key_config", "endpoint"))
			need = "azure_key_config.endpoint";
	} else if (strcmp(base, "bedrock") == 0 && !has_field(content, "bedrock_key_config", "region") &&
	    !has_field(content, "bedrock_key_config", "arn")) {
		need = "bedrock_key_config.region";
	} else if (strcmp(base, "vertex") == 0) {
		if (!has_field(content, "vertex_key_config", "project_id"))
			need = "vertex_key_config.project_id";
		else if (!has_field(content, "vertex_key_config", "region"))
			need = "vertex_key_config.region";
	} else if (strcmp(base, "vllm") == 0 && !has_field(content, "vllm_key_config", "url")) {
		need = "vllm_key_config.url";
	} else if (strcmp(base, "ollama") == 0 && !has_field(content, "ollama_key_config", "url")) {
		need = "ollama_key_config.url";
	} else if (strcmp(base, "sgl") == 0 && !has_field(content, "sgl_key_config", "url")) {
		need = "sgl_key_config.url";
	}
	if (need == NULL && !value_optional && !has_field(content, NULL, "value"))
		need = "value";
	if (need != NULL) {
		kw_error_set(&req->err, KW_EINVAL, need, "a %s key needs %s", base, need);
		return KW_EINVAL;
	}
	for (size_t i = 0; blacklisted != NULL && i < json_object_array_length(blacklisted); i++) {
		const char *m = json_object_get_string(json_object_array_get_idx(blacklisted, i));

		if (kw_json_list_has(models, m)) {
			kw_error_set(&req->err, KW_EINVAL, "blacklisted_models",
			    "model %s is both allowed and blacklisted", m);
			return KW_EINVAL;
		}
	}
	return KW_OK;
}

/*
 * Turns the body into the stored key and its content for the hash: each
 * EnvVar sealed (or kept as its reference); a redacted value sent back
 * keeps old's secret.  *stored and *content are owned; content holds plain
 * secrets and must be wiped (wipe_strings) before it is released.
 */
static enum kw_err
build_key(struct kw_req *req, const struct provider *p, const char *id, json_object *body,
    json_object *old, json_object **stored, json_object **content)
{
	static const char *const plain_fields[] = {
		"name", "models", "blacklisted_models", "weight", "enabled", "use_for_batch_api",
		"description",
	};
	char aad[512], path[64];
	enum kw_err rc = KW_OK;

	*stored = json_object_new_object();
	*content = json_object_new_object();
	json_object_object_add(*stored, "id", json_object_new_string(id));
	json_object_object_add(*stored, "provider", json_object_new_string(p->name));
	for (size_t i = 0; i < sizeof(plain_fields) / sizeof(plain_fields[0]); i++) {
		json_object *v = json_object_object_get(body, plain_fields[i]);

		json_object_object_add(*content, plain_fields[i], json_object_get(v));
	}
	if (kw_json_str(*content, "name") == NULL)
		json_object_object_add(*content, "name", json_object_new_string(id));
	if (json_object_object_get(*content, "models") == NULL)
		json_object_object_add(*content, "models", json_object_new_array());
	if (json_object_object_get(*content, "blacklisted_models") == NULL)
		json_object_object_add(*content, "blacklisted_models", json_object_new_array());
	if (json_object_object_get(*content, "weight") == NULL)
		json_object_object_add(*content, "weight", json_object_new_double(1));
	if (!json_object_is_type(json_object_object_get(*content, "enabled"), json_type_boolean))
		json_object_object_add(*content, "enabled", json_object_new_boolean(1));
	if (!json_object_is_type(json_object_object_get(*content, "use_for_batch_api"),
	    json_type_boolean))
		json_object_object_add(*content, "use_for_batch_api", json_object_new_boolean(0));
	/* the configs' other fields (deployments, scopes, buckets, model_name) as sent */
	for (size_t i = 0; i < NCONFIGS; i++) {
		json_object *cfg = json_object_object_get(body, configs[i]);

		json_object_object_add(*content, configs[i], kw_json_copy(cfg));
	}
	for (size_t i = 0; i < sizeof(plain_fields) / sizeof(plain_fields[0]); i++)
		json_object_object_add(*stored, plain_fields[i],
		    json_object_get(json_object_object_get(*content, plain_fields[i])));
	for (size_t i = 0; i < NCONFIGS; i++)
		json_object_object_add(*stored, configs[i],
		    kw_json_copy(json_object_object_get(*content, configs[i])));

	for (size_t i = 0; i < NENVVARS && rc == KW_OK; i++) {
		const struct envvar_field *f = &envvars[i];
		json_object *in_parent = field_parent(body, f), *c_parent = field_parent(*content, f);
		json_object *s_parent = field_parent(*stored, f), *sealed = NULL, *old_stored = NULL;
		struct envvar ev;
		char *kept = NULL;

		if (in_parent == NULL)
			continue;
		parse_envvar(json_object_object_get(in_parent, f->field), &ev);
		field_path(f, path, sizeof(path));
		aad_of(aad, sizeof(aad), p->name, id, f);
		if (ev.ref != NULL && !valid_reference(ev.ref)) {
			kw_error_set(&req->err, KW_EINVAL, path, "%s must reference env.NAME, a "
			    "variable of keywarden's environment that KEYWARDEN_PROVIDER_ENV allows "
			    "(%s; never KEYWARDEN_*)", path, kw_config.provider_env);
			rc = KW_EINVAL;
			break;
		}
		if (ev.ref != NULL) {
			sealed = json_object_new_object();
			json_object_object_add(sealed, "env_var", json_object_new_string(ev.ref));
			json_object_object_add(c_parent, f->field, json_object_new_string(ev.ref));
		} else if (ev.plain != NULL && ev.plain[0] != '\0') {
			if (looks_redacted(ev.plain)) {
				/* sent back as read: keep the stored secret it stands for */
				char shown[64] = "";
				json_object *op = old ? field_parent(old, f) : NULL;

				old_stored = op ? json_object_object_get(op, f->field) : NULL;
				if (old_stored != NULL && kw_json_str(old_stored, "sealed") != NULL &&
				    unseal(aad, old_stored, &kept) == KW_OK)
					redact(kept, shown, sizeof(shown));
				if (kept == NULL || strcmp(shown, ev.plain) != 0) {
					free_secret(kept);
					kw_error_set(&req->err, KW_EINVAL, path,
					    "%s is a redacted value with no stored secret behind it", path);
					rc = KW_EINVAL;
					break;
				}
				sealed = kw_json_copy(old_stored);
				json_object_object_add(c_parent, f->field, json_object_new_string(kept));
				free_secret(kept);
			} else {
				rc = seal(aad, ev.plain, &sealed);
				json_object_object_add(c_parent, f->field,
				    json_object_new_string(ev.plain));
			}
		} else {
			json_object_object_del(c_parent, f->field);
		}
		if (s_parent != NULL) {
			if (sealed != NULL)
				json_object_object_add(s_parent, f->field, sealed);
			else
				json_object_object_del(s_parent, f->field);
		} else {
			json_object_put(sealed);
		}
	}
	if (rc == KW_OK)
		rc = check_key(req, p, *content);
	return rc;
}

/* "<provider>|<id>": the key's row in provider_keys.db. */
static void
key_row(char *buf, size_t n, const char *provider, const char *id)
{
	snprintf(buf, n, "%s|%s", provider, id);
}

/* The index row "n:<name>" or "i:<id>" -> "<provider>|<id>": put (unique) or delete. */
static enum kw_err
index_row(struct kw_store *st, DB_TXN *txn, char kind, const char *what, const char *row, int put)
{
	DB *db = kw_store_db(st, KW_DB_PROVIDER_INDEX);
	char name[KW_ID_MAX + 3];	/* "n:" and a name of up to 256 characters */
	DBT k = { .data = name }, v = { .data = (void *)row, .size = (u_int32_t)strlen(row) };
	enum kw_err rc;

	snprintf(name, sizeof(name), "%c:%s", kind, what);
	k.size = (u_int32_t)strlen(name);
	rc = kw_store_err(put ? db->put(db, txn, &k, &v, DB_NOOVERWRITE) : db->del(db, txn, &k, 0));
	return !put && rc == KW_ENOTFOUND ? KW_OK : rc;
}

/* --- operations ------------------------------------------------------- */

/* One operation's transaction: what it is about and its answer, rebuilt on every attempt. */
struct bifrost_op {
	struct kw_req *req;
	const char *provider, *id;
	json_object *answer;	/* owned */
	enum kw_err (*body)(struct bifrost_op *, DB_TXN *, struct provider *);
	void *visiting;		/* what an each_key visitor gathers into */
};

static enum kw_err
op_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct bifrost_op *op = baton;
	struct provider p = { 0 };
	enum kw_err rc;

	(void)st;
	json_object_put(op->answer);
	op->answer = NULL;
	if (op->provider != NULL && (rc = find_provider(op->req, txn, op->provider, &p)) != KW_OK)
		return rc;
	rc = op->body(op, txn, &p);
	json_object_put(p.record);
	return rc;
}

/* Runs op in one transaction after the admin check; the answer becomes the response. */
static enum kw_err
run(struct kw_req *req, struct kw_resp *resp, struct bifrost_op *op, int admin)
{
	enum kw_err rc = admin ? kw_auth_admin(req) : KW_OK;

	op->req = req;
	if (op->provider == NULL)
		op->provider = kw_req_path_param(req, "provider");
	if (op->id == NULL)
		op->id = kw_req_path_param(req, "key_id");
	if (rc == KW_OK)
		rc = kw_store_txn(req->store, op_body, op);
	if (rc == KW_OK)
		kw_resp_json(resp, 200, op->answer);
	else
		json_object_put(op->answer);
	return rc;
}

/* Reads the stored key id of provider (*rec owned); KW_ENOTFOUND naming key_id. */
static enum kw_err
get_key(struct bifrost_op *op, DB_TXN *txn, const char *provider, const char *id, int flags,
    json_object **rec)
{
	char row[600];
	enum kw_err rc;

	key_row(row, sizeof(row), provider, id);
	rc = kw_rec_get(op->req->store, txn, KW_DB_PROVIDER_KEYS, row, flags, rec);
	if (rc == KW_ENOTFOUND)
		kw_error_set(&op->req->err, KW_ENOTFOUND, "key_id", "%s has no key %s", provider, id);
	return rc;
}

/* The stored key as read back (owned): every secret redacted. */
static enum kw_err
view_key(json_object *rec, json_object **out)
{
	return map_envvars(rec, view_envvar, out);
}

/*
 * Writes key id of provider from the request body, replacing old (NULL
 * for a new key): sealed, checked, indexed by name and id, audited.
 */
static enum kw_err
write_key(struct bifrost_op *op, DB_TXN *txn, struct provider *p, const char *id, json_object *old)
{
	struct kw_req *req = op->req;
	struct kw_store *st = req->store;
	json_object *stored = NULL, *content = NULL, *before = NULL;
	char row[600], hash[KW_SHA256_HEX_LEN + 1];
	const char *name, *old_name = old ? kw_json_str(old, "name") : NULL;
	enum kw_err rc;

	key_row(row, sizeof(row), p->name, id);
	if ((rc = build_key(req, p, id, req->body, old, &stored, &content)) != KW_OK)
		goto out;
	config_hash(content, hash);
	name = kw_json_str(stored, "name");
	json_object_object_add(stored, "config_hash", json_object_new_string(hash));
	json_object_object_add(stored, "status", json_object_new_string(
	    kw_json_bool(stored, "enabled") ? "active" : "disabled"));
	kw_json_set_time(stored, "created_at", req->now);
	if (old != NULL)
		json_object_object_add(stored, "created_at",
		    json_object_get(json_object_object_get(old, "created_at")));
	kw_json_set_time(stored, "updated_at", req->now);

	if (old == NULL && (rc = index_row(st, txn, 'i', id, row, 1)) == KW_ECONFLICT) {
		kw_error_set(&req->err, KW_ECONFLICT, "id", "a key with id %s exists", id);
		goto out;
	}
	if (rc == KW_OK && old_name != NULL && strcmp(old_name, name) != 0)
		rc = index_row(st, txn, 'n', old_name, row, 0);
	if (rc == KW_OK && (old_name == NULL || strcmp(old_name, name) != 0) &&
	    (rc = index_row(st, txn, 'n', name, row, 1)) == KW_ECONFLICT) {
		kw_error_set(&req->err, KW_ECONFLICT, "name", "a key named %s exists", name);
		goto out;
	}
	if (rc == KW_OK)
		rc = kw_rec_put(st, txn, KW_DB_PROVIDER_KEYS, row, stored, 0);
	if (rc == KW_OK && old != NULL)
		rc = view_key(old, &before);
	if (rc == KW_OK)
		rc = view_key(stored, &op->answer);
	if (rc == KW_OK)
		rc = kw_audit_record(req, txn, old ? "updated" : "created", KW_TABLE_PROVIDER_KEYS, id,
		    before, op->answer);
out:
	json_object_put(before);
	json_object_put(stored);
	if (content != NULL)
		wipe_strings(content);
	json_object_put(content);
	return rc;
}

static enum kw_err
create_body(struct bifrost_op *op, DB_TXN *txn, struct provider *p)
{
	char id[129];
	const char *given = kw_json_str(op->req->body, "id");

	if (given != NULL)
		snprintf(id, sizeof(id), "%s", given);
	else
		kw_uuid4(id);
	return write_key(op, txn, p, id, NULL);
}

/* POST /api/providers/{provider}/keys */
enum kw_err
kw_op_provider_key_create(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = create_body };

	return run(req, resp, &op, 1);
}

static enum kw_err
update_body(struct bifrost_op *op, DB_TXN *txn, struct provider *p)
{
	const char *given = kw_json_str(op->req->body, "id");
	json_object *old;
	enum kw_err rc;

	if (given != NULL && strcmp(given, op->id) != 0) {
		kw_error_set(&op->req->err, KW_EINVAL, "id", "the body's id is not the path's");
		return KW_EINVAL;
	}
	if ((rc = get_key(op, txn, p->name, op->id, KW_RMW, &old)) != KW_OK)
		return rc;
	rc = write_key(op, txn, p, op->id, old);
	json_object_put(old);
	return rc;
}

/* PUT /api/providers/{provider}/keys/{key_id}: the whole key replaced. */
enum kw_err
kw_op_provider_key_update(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = update_body };

	return run(req, resp, &op, 1);
}

static enum kw_err
get_body(struct bifrost_op *op, DB_TXN *txn, struct provider *p)
{
	json_object *rec;
	enum kw_err rc;

	if ((rc = get_key(op, txn, p->name, op->id, 0, &rec)) != KW_OK)
		return rc;
	rc = view_key(rec, &op->answer);
	json_object_put(rec);
	return rc;
}

/* GET /api/providers/{provider}/keys/{key_id} */
enum kw_err
kw_op_provider_key_get(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = get_body };

	return run(req, resp, &op, 1);
}

/* Deletes a stored key and its index rows, audited; the answer its last view. */
static enum kw_err
delete_key(struct bifrost_op *op, DB_TXN *txn, json_object *rec, json_object **view)
{
	struct kw_store *st = op->req->store;
	const char *provider = kw_json_str(rec, "provider"), *id = kw_json_str(rec, "id");
	char row[600];
	enum kw_err rc;

	key_row(row, sizeof(row), provider, id);
	if ((rc = view_key(rec, view)) == KW_OK &&
	    (rc = index_row(st, txn, 'i', id, row, 0)) == KW_OK &&
	    (rc = index_row(st, txn, 'n', kw_json_str(rec, "name"), row, 0)) == KW_OK &&
	    (rc = kw_rec_del(st, txn, KW_DB_PROVIDER_KEYS, row)) == KW_OK)
		rc = kw_audit_record(op->req, txn, "deleted", KW_TABLE_PROVIDER_KEYS, id, *view, NULL);
	return rc;
}

static enum kw_err
delete_body(struct bifrost_op *op, DB_TXN *txn, struct provider *p)
{
	json_object *rec;
	enum kw_err rc;

	if ((rc = get_key(op, txn, p->name, op->id, KW_RMW, &rec)) != KW_OK)
		return rc;
	rc = delete_key(op, txn, rec, &op->answer);
	json_object_put(rec);
	return rc;
}

/* DELETE /api/providers/{provider}/keys/{key_id} */
enum kw_err
kw_op_provider_key_delete(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = delete_body };

	return run(req, resp, &op, 1);
}

/* Visits the stored keys of provider (every provider when NULL) until visit says stop. */
typedef enum kw_err (*key_visit)(struct bifrost_op *, DB_TXN *, json_object *rec);

static enum kw_err
each_key(struct bifrost_op *op, DB_TXN *txn, const char *provider, key_visit visit)
{
	DB *db = kw_store_db(op->req->store, KW_DB_PROVIDER_KEYS);
	char prefix[128];
	size_t plen = 0;
	DBT k = { .flags = DB_DBT_REALLOC }, v = { .flags = DB_DBT_REALLOC };
	DBC *cur;
	u_int32_t how = DB_NEXT;
	enum kw_err rc;

	if (provider != NULL) {
		plen = (size_t)snprintf(prefix, sizeof(prefix), "%s|", provider);
		if ((k.data = malloc(plen)) == NULL)
			return KW_ENOMEM;
		memcpy(k.data, prefix, plen);
		k.size = (u_int32_t)plen;
		how = DB_SET_RANGE;
	}
	if ((rc = kw_store_err(db->cursor(db, txn, &cur, 0))) != KW_OK) {
		free(k.data);
		return rc;
	}
	while ((rc = kw_store_err(cur->get(cur, &k, &v, how))) == KW_OK &&
	    (plen == 0 || (k.size >= plen && memcmp(k.data, prefix, plen) == 0))) {
		json_object *rec;

		how = DB_NEXT;
		if ((rc = kw_rec_parse(v.data, v.size, &rec)) == KW_OK) {
			rc = visit(op, txn, rec);
			json_object_put(rec);
		}
		if (rc != KW_OK)
			break;
	}
	cur->close(cur);
	free(k.data);
	free(v.data);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

static enum kw_err
list_visit(struct bifrost_op *op, DB_TXN *txn, json_object *rec)
{
	json_object *view;
	enum kw_err rc = view_key(rec, &view);

	(void)txn;
	if (rc == KW_OK)
		json_object_array_add(op->answer, view);
	return rc;
}

static enum kw_err
list_body(struct bifrost_op *op, DB_TXN *txn, struct provider *p)
{
	op->answer = json_object_new_array();
	return each_key(op, txn, p->name, list_visit);
}

/* GET /api/providers/{provider}/keys */
enum kw_err
kw_op_provider_keys_list(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = list_body };

	return run(req, resp, &op, 1);
}

/* GET /api/keys: every provider's keys. */
enum kw_err
kw_op_provider_keys_all(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = list_body };

	/* no {provider}: op_body skips the lookup and p->name stays NULL */
	return run(req, resp, &op, 1);
}

/* --- providers ------------------------------------------------------------ */

static enum kw_err
count_visit(struct bifrost_op *op, DB_TXN *txn, json_object *rec)
{
	(void)txn;
	(void)rec;
	json_object_object_add(op->answer, "keys",
	    json_object_new_int64(json_object_get_int64(json_object_object_get(op->answer,
	    "keys")) + 1));
	return KW_OK;
}

/* The provider as read back (into op->answer): name, custom, key count, its config. */
static enum kw_err
describe_provider(struct bifrost_op *op, DB_TXN *txn, const struct provider *p)
{
	json_object *cfg = p->record ? json_object_object_get(p->record, "custom_provider_config")
	    : NULL;

	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "name", json_object_new_string(p->name));
	json_object_object_add(op->answer, "custom", json_object_new_boolean(p->custom));
	json_object_object_add(op->answer, "provider_status", json_object_new_string("active"));
	json_object_object_add(op->answer, "keys", json_object_new_int64(0));
	json_object_object_add(op->answer, "custom_provider_config", json_object_get(cfg));
	return each_key(op, txn, p->name, count_visit);
}

static enum kw_err
provider_get_body(struct bifrost_op *op, DB_TXN *txn, struct provider *p)
{
	return describe_provider(op, txn, p);
}

/* GET /api/providers/{provider} */
enum kw_err
kw_op_provider_get(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = provider_get_body };

	return run(req, resp, &op, 1);
}

static int
compare_provider_names(const void *a, const void *b)
{
	return strcmp(kw_json_str(*(json_object *const *)a, "name"),
	    kw_json_str(*(json_object *const *)b, "name"));
}

struct provider_names {
	json_object *names;	/* owned array */
};

static int
custom_name(const char *id, json_object *rec, void *baton)
{
	(void)rec;
	json_object_array_add(((struct provider_names *)baton)->names, json_object_new_string(id));
	return 0;
}

static enum kw_err
providers_body(struct bifrost_op *op, DB_TXN *txn, struct provider *unused)
{
	struct provider_names custom = { json_object_new_array() };
	json_object *list = json_object_new_array();
	enum kw_err rc;

	(void)unused;
	rc = kw_rec_each(op->req->store, txn, KW_DB_PROVIDERS, custom_name, &custom);
	for (size_t i = 0; rc == KW_OK && i < NBUILTINS + json_object_array_length(custom.names);
	    i++) {
		struct provider p;
		const char *name = i < NBUILTINS ? builtins[i].name :
		    json_object_get_string(json_object_array_get_idx(custom.names, i - NBUILTINS));

		if ((rc = find_provider(op->req, txn, name, &p)) == KW_OK &&
		    (rc = describe_provider(op, txn, &p)) == KW_OK) {
			json_object_array_add(list, op->answer);
			op->answer = NULL;
		}
		json_object_put(p.record);
	}
	json_object_put(custom.names);
	json_object_array_sort(list, compare_provider_names);	/* alphabetical, as Bifrost lists */
	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "providers", list);
	json_object_object_add(op->answer, "total",
	    json_object_new_int64((int64_t)json_object_array_length(list)));
	return rc;
}

/* GET /api/providers: the built-in and custom providers, alphabetically. */
enum kw_err
kw_op_providers_list(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = providers_body };

	return run(req, resp, &op, 1);
}

static enum kw_err
provider_create_body(struct bifrost_op *op, DB_TXN *txn, struct provider *unused)
{
	struct kw_req *req = op->req;
	const char *name = kw_json_str(req->body, "provider");
	json_object *cfg = json_object_object_get(req->body, "custom_provider_config");
	json_object *rec;
	struct provider p;
	enum kw_err rc;

	(void)unused;
	if (cfg == NULL) {
		kw_error_set(&req->err, KW_EINVAL, "custom_provider_config",
		    "a custom provider needs custom_provider_config with its base_provider_type");
		return KW_EINVAL;
	}
	if (builtin_of(name) != NULL) {
		kw_error_set(&req->err, KW_ECONFLICT, "provider", "%s is a built-in provider", name);
		return KW_ECONFLICT;
	}
	rec = json_object_new_object();
	json_object_object_add(rec, "name", json_object_new_string(name));
	json_object_object_add(rec, "custom_provider_config", json_object_get(cfg));
	kw_json_set_time(rec, "created_at", req->now);
	rc = kw_rec_put(req->store, txn, KW_DB_PROVIDERS, name, rec, 1);
	if (rc == KW_ECONFLICT)
		kw_error_set(&req->err, KW_ECONFLICT, "provider", "a provider named %s exists", name);
	json_object_put(rec);
	if (rc == KW_OK && (rc = find_provider(req, txn, name, &p)) == KW_OK) {
		rc = describe_provider(op, txn, &p);
		json_object_put(p.record);
	}
	if (rc == KW_OK)
		rc = kw_audit_record(req, txn, "created", KW_TABLE_PROVIDERS, name, NULL, op->answer);
	return rc;
}

/* POST /api/providers: a custom provider on a base provider's API. */
enum kw_err
kw_op_provider_create(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = provider_create_body };

	return run(req, resp, &op, 1);
}

static enum kw_err
delete_visit(struct bifrost_op *op, DB_TXN *txn, json_object *rec)
{
	json_object *view = NULL;
	enum kw_err rc = delete_key(op, txn, rec, &view);

	json_object_put(view);
	return rc;
}

static enum kw_err
provider_delete_body(struct bifrost_op *op, DB_TXN *txn, struct provider *p)
{
	struct kw_req *req = op->req;
	json_object *answer;
	enum kw_err rc;

	if (!p->custom) {
		kw_error_set(&req->err, KW_EINVAL, "provider",
		    "%s is a built-in provider: it cannot be removed", p->name);
		return KW_EINVAL;
	}
	if ((rc = describe_provider(op, txn, p)) != KW_OK)
		return rc;
	answer = op->answer;	/* deleting keys must not touch the answer */
	op->answer = NULL;
	rc = each_key(op, txn, p->name, delete_visit);
	op->answer = answer;
	if (rc == KW_OK)
		rc = kw_rec_del(req->store, txn, KW_DB_PROVIDERS, p->name);
	if (rc == KW_OK)
		rc = kw_audit_record(req, txn, "deleted", KW_TABLE_PROVIDERS, p->name, answer, NULL);
	return rc;
}

/* DELETE /api/providers/{provider}: a custom provider and every key it has. */
enum kw_err
kw_op_provider_delete(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = provider_delete_body };

	return run(req, resp, &op, 1);
}

/* --- selection ------------------------------------------------------------ */

struct candidates {
	const char *model;
	int listed;		/* only keys whose models list names the model */
	json_object *tried;	/* ids to pass over while any other qualifies; borrowed, may be NULL */
	json_object *keys;	/* owned array of records that qualify */
	json_object *fresh;	/* owned array: those not in tried */
};

static enum kw_err
candidate_visit(struct bifrost_op *op, DB_TXN *txn, json_object *rec)
{
	struct candidates *c = op->visiting;
	json_object *models = json_object_object_get(rec, "models");
	double weight = kw_json_num(rec, "weight", 1);
	const char *ref = kw_json_str(json_object_object_get(rec, "value"), "env_var");
	int names = models != NULL && kw_json_list_has(models, c->model);

	(void)txn;
	if (ref != NULL && (!valid_reference(ref) || getenv(ref + 4) == NULL))
		return KW_OK;	/* its secret is not in this environment: not usable now */
	if (!kw_json_bool(rec, "enabled") || weight <= 0 ||
	    kw_json_list_has(json_object_object_get(rec, "blacklisted_models"), c->model) ||
	    (c->listed && !names) ||
	    (models != NULL && json_object_array_length(models) > 0 && !names))
		return KW_OK;
	json_object_array_add(c->keys, json_object_get(rec));
	if (c->tried == NULL || !kw_json_list_has(c->tried, kw_json_str(rec, "id")))
		json_object_array_add(c->fresh, json_object_get(rec));
	return KW_OK;
}

/* A uniform random number in [0, 1), from libgcrypt. */
static double
uniform(void)
{
	uint64_t r;

	kw_crypto_random(&r, sizeof(r));
	return (double)(r >> 11) / (double)(1ULL << 53);
}

/* One record of keys (an array, not empty), chosen by weight; borrowed from keys. */
static json_object *
by_weight(json_object *keys)
{
	size_t n = json_object_array_length(keys);
	double total = 0, at;

	for (size_t i = 0; i < n; i++)
		total += kw_json_num(json_object_array_get_idx(keys, i), "weight", 1);
	at = uniform() * total;
	for (size_t i = 0; i + 1 < n; i++) {
		at -= kw_json_num(json_object_array_get_idx(keys, i), "weight", 1);
		if (at < 0)
			return json_object_array_get_idx(keys, i);
	}
	return json_object_array_get_idx(keys, n - 1);
}

/*
 * The one key selection, for POST /api/providers/{provider}/keys/select
 * and the relay: among provider's enabled keys (every provider's when
 * NULL, and then only keys whose models list names model) that allow
 * model and do not blacklist it, one chosen by weight, passing over the
 * ids in tried (borrowed; NULL none) while another qualifies.  *key
 * (owned; release it with kw_provider_key_release) is the stored key with
 * its secrets resolved.  KW_ENOTFOUND naming model when no key qualifies.
 */
enum kw_err
kw_provider_key_select(struct kw_req *req, DB_TXN *txn, const char *provider, const char *model,
    json_object *tried, json_object **key)
{
	struct candidates c = { model, provider == NULL, tried, json_object_new_array(),
		json_object_new_array() };
	struct bifrost_op op = { .req = req, .visiting = &c };
	enum kw_err rc;

	*key = NULL;
	rc = each_key(&op, txn, provider, candidate_visit);
	if (rc == KW_OK && json_object_array_length(c.keys) == 0) {
		if (provider != NULL)
			kw_error_set(&req->err, KW_ENOTFOUND, "model",
			    "no enabled key of %s allows model %s", provider, model);
		else
			kw_error_set(&req->err, KW_ENOTFOUND, "model",
			    "no enabled provider key lists model %s", model);
		rc = KW_ENOTFOUND;
	}
	if (rc == KW_OK)
		rc = map_envvars(by_weight(json_object_array_length(c.fresh) > 0 ? c.fresh : c.keys),
		    resolve_envvar, key);
	json_object_put(c.keys);
	json_object_put(c.fresh);
	return rc;
}

/* Releases a key kw_provider_key_select resolved, its secrets wiped first. */
void
kw_provider_key_release(json_object *key)
{
	if (key != NULL)
		wipe_strings(key);
	json_object_put(key);
}

static enum kw_err
select_body(struct bifrost_op *op, DB_TXN *txn, struct provider *p)
{
	static const char *const shown[] = { "id", "name", "provider", "value", "weight" };
	json_object *resolved;
	enum kw_err rc;

	if ((rc = kw_provider_key_select(op->req, txn, p->name, kw_json_str(op->req->body, "model"),
	    NULL, &resolved)) != KW_OK)
		return rc;
	/* copies: what is resolved is wiped below, the answer is not */
	op->answer = json_object_new_object();
	for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
		json_object_object_add(op->answer, shown[i],
		    kw_json_copy(json_object_object_get(resolved, shown[i])));
	for (size_t i = 0; i < NCONFIGS; i++)
		json_object_object_add(op->answer, configs[i],
		    kw_json_copy(json_object_object_get(resolved, configs[i])));
	/*
	 * A selection is a read: it writes no audit entry, which would let
	 * every caller with select_provider_keys grow the audit table by one
	 * row a request.  kw_op_provider_key_select counts and logs it once
	 * the transaction is over.
	 */
	kw_provider_key_release(resolved);
	return KW_OK;
}

/*
 * POST /api/providers/{provider}/keys/select: a key for the model, chosen
 * by weight, with its secrets resolved.  The master key, proxy admins, and
 * keys whose permissions has "select_provider_keys": true.
 */
enum kw_err
kw_op_provider_key_select(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = select_body };
	enum kw_err rc;

	if ((rc = kw_auth_caller(req)) != KW_OK)
		return rc;
	if (!kw_auth_is_admin(req->caller) && !req->caller->may_select) {
		kw_error_set(&req->err, KW_EFORBIDDEN, NULL,
		    "only proxy admins and keys with permissions.select_provider_keys select keys");
		return KW_EFORBIDDEN;
	}
	if ((rc = run(req, resp, &op, 0)) == KW_OK) {
		/*
		 * the stored provider and key id only: the answer's secrets stay
		 * out of the log, and so does the caller's model string, which
		 * could hold a newline
		 */
		kw_metrics_provider_key_selection();
		kw_log_info("provider key selected: provider %s, key %s",
		    kw_json_str(resp->json, "provider"), kw_json_str(resp->json, "id"));
	}
	return rc;
}
