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
 * Bifrost's standard providers (core/schemas/bifrost.go StandardProviders)
 * and how their keys authenticate: by `value` (an API key), or by fields of
 * their configs (URL, cloud credentials).
 */
static const struct builtin {
	const char *name;
	int value_optional;
	int base;	/* allowed as a custom provider's base_provider_type (SupportedBaseProviders) */
} builtins[] = {
	{ "anthropic", 0, 1 }, { "azure", 1, 0 }, { "bedrock", 1, 1 }, { "cerebras", 0, 0 },
	{ "cohere", 0, 1 }, { "elevenlabs", 0, 0 }, { "gemini", 0, 1 }, { "groq", 0, 0 },
	{ "huggingface", 0, 1 }, { "mistral", 0, 0 }, { "nebius", 0, 0 }, { "ollama", 1, 0 },
	{ "openai", 0, 1 }, { "openrouter", 0, 0 }, { "parasail", 0, 0 }, { "perplexity", 0, 0 },
	{ "replicate", 0, 1 }, { "runway", 0, 0 }, { "sgl", 1, 0 }, { "vertex", 1, 0 },
	{ "vllm", 1, 0 }, { "xai", 0, 0 },
};
#define NBUILTINS (sizeof(builtins) / sizeof(builtins[0]))

/*
 * Every EnvVar in a key: its top-level value, and the fields of the
 * provider configs (core/schemas/account.go).  All are sealed at rest;
 * shown ones are settings, not secrets, and read back in clear.
 */
static const struct envvar_field {
	const char *config;	/* NULL for the key's own value */
	const char *field;
	int shown;
} envvars[] = {
	{ NULL, "value", 0 },
	{ "azure_key_config", "endpoint", 0 }, { "azure_key_config", "api_version", 1 },
	{ "azure_key_config", "client_id", 0 }, { "azure_key_config", "client_secret", 0 },
	{ "azure_key_config", "tenant_id", 0 },
	{ "vertex_key_config", "project_id", 0 }, { "vertex_key_config", "project_number", 0 },
	{ "vertex_key_config", "region", 0 }, { "vertex_key_config", "auth_credentials", 0 },
	{ "bedrock_key_config", "access_key", 0 }, { "bedrock_key_config", "secret_key", 0 },
	{ "bedrock_key_config", "session_token", 0 }, { "bedrock_key_config", "region", 0 },
	{ "bedrock_key_config", "arn", 0 }, { "bedrock_key_config", "role_arn", 0 },
	{ "bedrock_key_config", "external_id", 0 }, { "bedrock_key_config", "session_name", 0 },
	{ "vllm_key_config", "url", 0 }, { "ollama_key_config", "url", 0 },
	{ "sgl_key_config", "url", 0 },
};
#define NENVVARS (sizeof(envvars) / sizeof(envvars[0]))

static const char *const configs[] = {
	"azure_key_config", "vertex_key_config", "bedrock_key_config", "replicate_key_config",
	"vllm_key_config", "ollama_key_config", "sgl_key_config", "openai_key_config",
	"huggingface_key_config",
};
#define NCONFIGS (sizeof(configs) / sizeof(configs[0]))
#define NCONFIGS_BEFORE_V15 7	/* the first seven, which every key's config_hash holds */

/* --- the provider ------------------------------------------------------ */

/* What a request's {provider} is: standard or custom, configured or not. */
struct provider {
	const char *name;
	const char *base;	/* the standard type whose API it speaks */
	int custom, keyless;
	json_object *record;	/* owned: its configuration, NULL when it has none */
};

static const struct builtin *
builtin_of(const char *name)
{
	for (size_t i = 0; name != NULL && i < NBUILTINS; i++)
		if (strcmp(builtins[i].name, name) == 0)
			return &builtins[i];
	return NULL;
}

/*
 * Looks up provider name into *p (p->record owned).  A standard provider
 * is found with or without a configuration; a custom one only with its
 * own: KW_ENOTFOUND naming "provider" otherwise.
 */
static enum kw_err
find_provider(struct kw_req *req, DB_TXN *txn, const char *name, struct provider *p)
{
	json_object *cfg;
	enum kw_err rc;

	memset(p, 0, sizeof(*p));
	p->name = name;
	rc = kw_rec_get(req->store, txn, KW_DB_PROVIDERS, name, 0, &p->record);
	if (rc == KW_ENOTFOUND && builtin_of(name) != NULL)
		rc = KW_OK;
	else if (rc == KW_ENOTFOUND)
		kw_error_set(&req->err, KW_ENOTFOUND, "provider", "no provider is named %s", name);
	if (rc != KW_OK)
		return rc;
	cfg = p->record ? json_object_object_get(p->record, "custom_provider_config") : NULL;
	if (cfg == NULL || builtin_of(name) != NULL) {
		p->base = name;
		return KW_OK;
	}
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

/* The variable a stored reference names, as this service sees it (borrowed), or NULL. */
static const char *
env_value(const char *ref)
{
	/* stored before the setting changed: only what it allows now is read */
	return ref != NULL && valid_reference(ref) ? getenv(ref + 4) : NULL;
}

/*
 * The field's EnvVar as read back (owned), as Bifrost's EnvVar.Redacted
 * shows it: its value, or a reference's resolved value, redacted unless
 * the field is a setting (f->shown), with the reference beside it.
 */
static enum kw_err
view_envvar(const struct envvar_field *f, const char *aad, json_object *stored, json_object **out)
{
	const char *ref = kw_json_str(stored, "env_var"), *env = env_value(ref);
	char shown[64] = "", *plain = NULL;
	enum kw_err rc = KW_OK;

	if (ref == NULL && (rc = unseal(aad, stored, &plain)) != KW_OK)
		return rc;
	if (ref == NULL ? plain != NULL : env != NULL)
		redact(ref == NULL ? plain : env, shown, sizeof(shown));
	*out = json_object_new_object();
	json_object_object_add(*out, "value", json_object_new_string(!f->shown ? shown :
	    ref == NULL ? plain : env ? env : ""));
	free_secret(plain);
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
resolve_envvar(const struct envvar_field *f, const char *aad, json_object *stored,
    json_object **out)
{
	const char *ref = kw_json_str(stored, "env_var"), *env = env_value(ref);
	char *plain;
	enum kw_err rc;

	(void)f;
	*out = NULL;
	if (ref != NULL) {
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
map_envvars(json_object *rec, enum kw_err (*fn)(const struct envvar_field *, const char *,
    json_object *, json_object **), json_object **out)
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
		if ((rc = fn(&envvars[i], aad, stored, &shown)) == KW_OK)
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
 * A key's models as v1.5 reads them (borrowed from rec, or new in *made,
 * owned): Bifrost's WhiteList, where ["*"] allows every model and []
 * none.  A key stored by an earlier version (no models_form) meant every
 * model by [], as Bifrost's own v1.5 migration turned [] into ["*"].
 */
static json_object *
key_models(json_object *rec, json_object **made)
{
	json_object *models = json_object_object_get(rec, "models");

	*made = NULL;
	if (kw_json_str(rec, "models_form") == NULL &&
	    (models == NULL || json_object_array_length(models) == 0)) {
		*made = json_object_new_array();
		json_object_array_add(*made, json_object_new_string("*"));
		return *made;
	}
	return models;
}

/* True when list (a WhiteList) holds model, case ignored (Bifrost's WhiteList.Contains). */
static int
list_contains(json_object *list, const char *model)
{
	for (size_t i = 0; model != NULL && list != NULL && i < json_object_array_length(list); i++)
		if (strcasecmp(json_object_get_string(json_object_array_get_idx(list, i)), model) == 0)
			return 1;
	return 0;
}

/* Bifrost's WhiteList.IsAllowed: ["*"] allows every model, otherwise the ones listed. */
static int
list_allows(json_object *list, const char *model)
{
	return (list != NULL && json_object_array_length(list) == 1 &&
	    strcmp(json_object_get_string(json_object_array_get_idx(list, 0)), "*") == 0) ||
	    list_contains(list, model);
}

/*
 * config_hash: the SHA-256 hex of the key's content (owned by content,
 * with plain values or references in place of the sealed ones): name,
 * value, sorted models and blacklisted_models, weight, the provider
 * configs, enabled, use_for_batch_api and, when set, aliases,
 * use_anthropic_endpoints and v1.5's configs, written canonically.  Every model (["*"]) is
 * hashed as [], the form earlier versions hashed it in, and no model as
 * [""], so that a key keeps its hash across the upgrade.
 */
static void
config_hash(json_object *content, char out[KW_SHA256_HEX_LEN + 1])
{
	static const char *const hashed[] = {
		"name", "value", "models", "blacklisted_models", "weight", "enabled",
		"use_for_batch_api",
	};
	static const char *const when_set[] = { "aliases", "use_anthropic_endpoints" };
	json_object *pick = json_object_new_object(), *canon, *models;
	const char *text;
	char weight[32];

	for (size_t i = 0; i < sizeof(hashed) / sizeof(hashed[0]); i++)
		json_object_object_add(pick, hashed[i],
		    json_object_get(json_object_object_get(content, hashed[i])));
	for (size_t i = 0; i < sizeof(when_set) / sizeof(when_set[0]); i++)
		if (json_object_object_get(content, when_set[i]) != NULL)
			json_object_object_add(pick, when_set[i],
			    json_object_get(json_object_object_get(content, when_set[i])));
	/* the configs earlier versions knew always, v1.5's when set */
	for (size_t i = 0; i < NCONFIGS; i++)
		if (i < NCONFIGS_BEFORE_V15 || json_object_object_get(content, configs[i]) != NULL)
			json_object_object_add(pick, configs[i],
			    json_object_get(json_object_object_get(content, configs[i])));
	models = kw_json_copy(json_object_object_get(content, "models"));
	if (list_allows(models, NULL)) {
		json_object_put(models);
		models = json_object_new_array();
	} else if (json_object_array_length(models) == 0) {
		json_object_array_add(models, json_object_new_string(""));
	}
	json_object_object_add(pick, "models", models);
	sort_list(models);
	sort_list(json_object_object_get(pick, "blacklisted_models"));
	/* 1 and 1.0 are one weight */
	snprintf(weight, sizeof(weight), "%.15g", kw_json_num(content, "weight", 0));
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

/* Bifrost's WhiteList.Validate of list (field): "*" alone, no entry twice (case ignored). */
static enum kw_err
check_list(struct kw_req *req, json_object *list, const char *field)
{
	size_t n = list ? json_object_array_length(list) : 0;
	char path[64];

	for (size_t i = 0; i < n; i++) {
		const char *m = json_object_get_string(json_object_array_get_idx(list, i));

		snprintf(path, sizeof(path), "%s[%zu]", field, i);
		if (strcmp(m, "*") == 0 && n > 1) {
			kw_error_set(&req->err, KW_EINVAL, path,
			    "wildcard '*' cannot be used with other values in %s", field);
			return KW_EINVAL;
		}
		for (size_t j = 0; j < i; j++)
			if (strcasecmp(m, json_object_get_string(json_object_array_get_idx(list, j)))
			    == 0) {
				kw_error_set(&req->err, KW_EINVAL, path, "duplicate value '%s' in %s",
				    m, field);
				return KW_EINVAL;
			}
	}
	return KW_OK;
}

/*
 * The rules a key must meet for its provider (content: plain values or
 * references), Bifrost's createProviderKey and validateProviderKeyURL:
 * keyless providers take none; value may be empty only where
 * CanProviderKeyValueBeEmpty says so (Azure, Bedrock, Vertex, vLLM,
 * Ollama, SGLang), and a reference to a variable that is not set is an
 * empty value; Azure needs its endpoint, Bedrock a region or ARN, vLLM,
 * Ollama and SGLang a URL; both model lists are WhiteLists.  A model both
 * allowed and blacklisted is accepted: the blacklist wins.  KW_EINVAL
 * naming the field.
 */
static enum kw_err
check_key(struct kw_req *req, const struct provider *p, json_object *content)
{
	const struct builtin *b = builtin_of(p->base);
	const char *base = p->base ? p->base : "", *value = kw_json_str(content, "value");
	const char *need = NULL;
	enum kw_err rc;

	if (p->keyless) {
		kw_error_set(&req->err, KW_EINVAL, "provider", "Cannot add keys to a keyless provider");
		return KW_EINVAL;
	}
	if (strcmp(base, "azure") == 0 && !has_field(content, "azure_key_config", "endpoint"))
		need = "azure_key_config.endpoint";
	else if (strcmp(base, "bedrock") == 0 && !has_field(content, "bedrock_key_config", "region") &&
	    !has_field(content, "bedrock_key_config", "arn"))
		need = "bedrock_key_config.region";
	else if (strcmp(base, "vllm") == 0 && !has_field(content, "vllm_key_config", "url"))
		need = "vllm_key_config.url";
	else if (strcmp(base, "ollama") == 0 && !has_field(content, "ollama_key_config", "url"))
		need = "ollama_key_config.url";
	else if (strcmp(base, "sgl") == 0 && !has_field(content, "sgl_key_config", "url"))
		need = "sgl_key_config.url";
	if (need != NULL) {
		kw_error_set(&req->err, KW_EINVAL, need, "%s is required for %s keys", need, base);
		return KW_EINVAL;
	}
	if (!(b != NULL && b->value_optional) && value != NULL && strncmp(value, "env.", 4) == 0 &&
	    (env_value(value) == NULL || env_value(value)[0] == '\0')) {
		/* Bifrost's words, and why: the name is not a secret, its value would be */
		kw_error_set(&req->err, KW_EINVAL, "value", "Key value must not be empty: %s "
		    "names a variable that is %s in keywarden's environment; give keywarden the "
		    "variable where its web server starts it (README \"Provider variables\")",
		    value, env_value(value) == NULL ? "unset" : "empty");
		return KW_EINVAL;
	}
	if (!(b != NULL && b->value_optional) && (value == NULL || value[0] == '\0')) {
		kw_error_set(&req->err, KW_EINVAL, "value", "Key value must not be empty");
		return KW_EINVAL;
	}
	if ((rc = check_list(req, json_object_object_get(content, "models"), "models")) != KW_OK)
		return rc;
	return check_list(req, json_object_object_get(content, "blacklisted_models"),
	    "blacklisted_models");
}

/* Sets obj's field to v (taken), or removes the field when v is NULL. */
static void
set_or_drop(json_object *obj, const char *field, json_object *v)
{
	if (v != NULL)
		json_object_object_add(obj, field, v);
	else
		json_object_object_del(obj, field);
}

/* True when value is a mask Bifrost's EnvVar.IsRedacted recognises, or one keywarden wrote. */
static int
is_redacted(const char *value)
{
	return strcasecmp(value, "<redacted>") == 0 || looks_redacted(value);
}

/*
 * One EnvVar of a request (in, borrowed; NULL when absent) as stored:
 * *sealed (owned) is its reference or its sealed value, *plain (owned) the
 * reference or the plain value for the hash; both NULL when it is empty.
 * A mask sent back (Bifrost's IsRedacted: "<redacted>", stars, or the
 * redacted form) keeps old_stored, the field's stored value: 400 naming
 * path when there is none.  aad binds the seal to its place.
 */
static enum kw_err
store_envvar(struct kw_req *req, const char *aad, const char *path, json_object *in,
    json_object *old_stored, json_object **sealed, json_object **plain)
{
	struct envvar ev;
	char *kept = NULL;
	enum kw_err rc = KW_OK;

	*sealed = *plain = NULL;
	parse_envvar(in, &ev);
	if (ev.ref != NULL && !valid_reference(ev.ref)) {
		kw_error_set(&req->err, KW_EINVAL, path, "%s must reference env.NAME, a "
		    "variable of keywarden's environment that KEYWARDEN_PROVIDER_ENV allows "
		    "(%s; never KEYWARDEN_*)", path, kw_config.provider_env);
		return KW_EINVAL;
	}
	if (ev.ref != NULL) {
		*sealed = json_object_new_object();
		json_object_object_add(*sealed, "env_var", json_object_new_string(ev.ref));
		*plain = json_object_new_string(ev.ref);
	} else if (ev.plain != NULL && ev.plain[0] != '\0' && is_redacted(ev.plain)) {
		/* sent back as read: keep the stored secret it stands for */
		if (old_stored != NULL && kw_json_str(old_stored, "env_var") != NULL) {
			*sealed = kw_json_copy(old_stored);
			*plain = json_object_new_string(kw_json_str(old_stored, "env_var"));
		} else if (old_stored != NULL && kw_json_str(old_stored, "sealed") != NULL &&
		    unseal(aad, old_stored, &kept) == KW_OK) {
			*sealed = kw_json_copy(old_stored);
			*plain = json_object_new_string(kept);
			free_secret(kept);
		} else {
			kw_error_set(&req->err, KW_EINVAL, path,
			    "%s is a redacted value with no stored secret behind it", path);
			rc = KW_EINVAL;
		}
	} else if (ev.plain != NULL && ev.plain[0] != '\0') {
		rc = seal(aad, ev.plain, sealed);
		*plain = json_object_new_string(ev.plain);
	}
	return rc;
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
		"description", "aliases", "use_anthropic_endpoints",
	};
	char aad[512], path[64];
	enum kw_err rc = KW_OK;

	*stored = json_object_new_object();
	*content = json_object_new_object();
	json_object_object_add(*stored, "id", json_object_new_string(id));
	json_object_object_add(*stored, "provider", json_object_new_string(p->name));
	for (size_t i = 0; i < sizeof(plain_fields) / sizeof(plain_fields[0]); i++) {
		json_object *v = json_object_object_get(body, plain_fields[i]);

		if (v != NULL)
			json_object_object_add(*content, plain_fields[i], json_object_get(v));
	}
	/*
	 * What Bifrost's createProviderKey leaves unset stays Go's zero value
	 * (name "", weight 0); enabled defaults to true.  A PUT without a name
	 * keeps the key's name.  models defaults to v1.5's ["*"].
	 */
	if (kw_json_str(*content, "name") == NULL)
		json_object_object_add(*content, "name", json_object_new_string(
		    old && kw_json_str(old, "name") ? kw_json_str(old, "name") : ""));
	if (json_object_object_get(*content, "models") == NULL) {
		json_object *all = json_object_new_array();

		json_object_array_add(all, json_object_new_string("*"));
		json_object_object_add(*content, "models", all);
	}
	if (json_object_object_get(*content, "blacklisted_models") == NULL)
		json_object_object_add(*content, "blacklisted_models", json_object_new_array());
	if (json_object_object_get(*content, "weight") == NULL)
		json_object_object_add(*content, "weight", json_object_new_int(0));
	if (!json_object_is_type(json_object_object_get(*content, "enabled"), json_type_boolean))
		json_object_object_add(*content, "enabled", json_object_new_boolean(1));
	if (!json_object_is_type(json_object_object_get(*content, "use_for_batch_api"),
	    json_type_boolean))
		json_object_object_add(*content, "use_for_batch_api", json_object_new_boolean(0));
	/* the configs' other fields (deployments, scopes, buckets, model_name) as sent */
	for (size_t i = 0; i < NCONFIGS; i++) {
		json_object *cfg = json_object_object_get(body, configs[i]);

		if (cfg != NULL)
			json_object_object_add(*content, configs[i], kw_json_copy(cfg));
	}
	json_object_object_foreach(*content, field, v)
		json_object_object_add(*stored, field, kw_json_copy(v));
	json_object_object_add(*stored, "models_form", json_object_new_string("v1.5"));

	for (size_t i = 0; i < NENVVARS && rc == KW_OK; i++) {
		const struct envvar_field *f = &envvars[i];
		json_object *in_parent = field_parent(body, f), *c_parent = field_parent(*content, f);
		json_object *s_parent = field_parent(*stored, f), *sealed = NULL, *plain = NULL;
		json_object *op = old ? field_parent(old, f) : NULL;

		if (in_parent == NULL)
			continue;
		field_path(f, path, sizeof(path));
		aad_of(aad, sizeof(aad), p->name, id, f);
		rc = store_envvar(req, aad, path, json_object_object_get(in_parent, f->field),
		    op ? json_object_object_get(op, f->field) : NULL, &sealed, &plain);
		set_or_drop(c_parent, f->field, plain);
		if (s_parent != NULL)
			set_or_drop(s_parent, f->field, sealed);
		else
			json_object_put(sealed);
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

/*
 * Stamps rec (a new key) with the next number of provider_index.db's
 * "seq" row: the order keys were configured in, which lists follow.
 */
static enum kw_err
next_seq(struct kw_store *st, DB_TXN *txn, json_object *rec)
{
	DB *db = kw_store_db(st, KW_DB_PROVIDER_INDEX);
	char buf[32] = "0";
	DBT k = { .data = "seq", .size = 3 }, v = { .data = buf, .ulen = sizeof(buf) - 1,
	    .flags = DB_DBT_USERMEM };
	enum kw_err rc = kw_store_err(db->get(db, txn, &k, &v, DB_RMW));
	int64_t seq;

	if (rc != KW_OK && rc != KW_ENOTFOUND)
		return rc;
	buf[rc == KW_OK ? v.size : 1] = '\0';
	seq = strtoll(buf, NULL, 10) + 1;
	snprintf(buf, sizeof(buf), "%lld", (long long)seq);
	v = (DBT){ .data = buf, .size = (u_int32_t)strlen(buf) };
	if ((rc = kw_store_err(db->put(db, txn, &k, &v, 0))) == KW_OK)
		json_object_object_add(rec, "seq", json_object_new_int64(seq));
	return rc;
}

/* --- operations ------------------------------------------------------- */

/* One operation's transaction: what it is about and its answer, rebuilt on every attempt. */
struct bifrost_op {
	struct kw_req *req;
	const char *provider, *id;
	json_object *answer;	/* owned */
	enum kw_err (*body)(struct bifrost_op *, DB_TXN *, struct provider *);
	void *visiting;		/* what an each_key visitor gathers into */
	int configures;		/* the provider is about to be configured: no lookup first */
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
	if (op->provider != NULL && !op->configures &&
	    (rc = find_provider(op->req, txn, op->provider, &p)) != KW_OK)
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
	json_object *made, *models = key_models(rec, &made);
	const char *status = kw_json_str(rec, "status");
	enum kw_err rc = map_envvars(rec, view_envvar, out);

	if (rc != KW_OK) {
		json_object_put(made);
		return rc;
	}
	json_object_object_add(*out, "models", made ? made : kw_json_copy(models));
	/* keywarden's own bookkeeping, and what Bifrost's omitempty leaves out */
	json_object_object_del(*out, "models_form");
	json_object_object_del(*out, "seq");
	json_object_object_foreach(rec, field, v)
		if (v == NULL)
			json_object_object_del(*out, field);
	/* Bifrost's KeyStatusType; earlier versions wrote "active" or "disabled" */
	if (status != NULL && strcmp(status, "success") != 0 &&
	    strcmp(status, "list_models_failed") != 0)
		json_object_object_del(*out, "status");
	return KW_OK;
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
	kw_json_set_time(stored, "created_at", req->now);
	if (old != NULL) {
		json_object_object_add(stored, "created_at",
		    json_object_get(json_object_object_get(old, "created_at")));
		if (json_object_object_get(old, "seq") != NULL)
			json_object_object_add(stored, "seq",
			    json_object_get(json_object_object_get(old, "seq")));
	} else if ((rc = next_seq(st, txn, stored)) != KW_OK) {
		goto out;
	}
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
	json_object *old;
	enum kw_err rc;

	/* the path's id wins over a body's (Bifrost's updateProviderKey) */
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
	if (rc == KW_OK) {
		/* for the sort below; dropped after it */
		json_object_object_add(view, "seq", json_object_get(json_object_object_get(rec, "seq")));
		json_object_array_add(op->answer, view);
	}
	return rc;
}

/* Configured order: by seq, keys of earlier versions (none) first by creation, then id. */
static int
compare_configured(const void *a, const void *b)
{
	json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b;
	double sx = kw_json_num(x, "seq", 0), sy = kw_json_num(y, "seq", 0);
	const char *cx = kw_json_str(x, "created_at"), *cy = kw_json_str(y, "created_at");
	int c;

	if (sx != sy)
		return sx < sy ? -1 : 1;
	if ((c = strcmp(cx ? cx : "", cy ? cy : "")) != 0)
		return c;
	return strcmp(kw_json_str(x, "id"), kw_json_str(y, "id"));
}

/* The keys of provider (every provider's when NULL) as read back, in configured order (owned). */
static enum kw_err
list_keys(struct bifrost_op *op, DB_TXN *txn, const char *provider, json_object **keys)
{
	enum kw_err rc;

	op->answer = json_object_new_array();
	rc = each_key(op, txn, provider, list_visit);
	*keys = op->answer;
	op->answer = NULL;
	json_object_array_sort(*keys, compare_configured);
	for (size_t i = 0; i < json_object_array_length(*keys); i++)
		json_object_object_del(json_object_array_get_idx(*keys, i), "seq");
	return rc;
}

static enum kw_err
list_body(struct bifrost_op *op, DB_TXN *txn, struct provider *p)
{
	json_object *keys;
	enum kw_err rc = list_keys(op, txn, p->name, &keys);

	/* Bifrost's ListProviderKeysResponse */
	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "keys", keys);
	json_object_object_add(op->answer, "total",
	    json_object_new_int64((int64_t)json_object_array_length(keys)));
	return rc;
}

/* GET /api/providers/{provider}/keys */
enum kw_err
kw_op_provider_keys_list(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = list_body };

	return run(req, resp, &op, 1);
}

static enum kw_err
all_keys_body(struct bifrost_op *op, DB_TXN *txn, struct provider *unused)
{
	json_object *keys;
	enum kw_err rc;

	(void)unused;
	rc = list_keys(op, txn, NULL, &keys);
	op->answer = keys;
	/* the columns of Bifrost's TableKey, which its GetAllKeys answers */
	for (size_t i = 0; i < json_object_array_length(op->answer); i++) {
		json_object *k = json_object_array_get_idx(op->answer, i);

		json_object_object_add(k, "key_id", json_object_get(json_object_object_get(k, "id")));
		json_object_object_add(k, "provider_id",
		    json_object_get(json_object_object_get(k, "provider")));
	}
	return rc;
}

/* GET /api/keys: every provider's keys, as Bifrost's table rows. */
enum kw_err
kw_op_provider_keys_all(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = all_keys_body };

	/* no {provider}: op_body skips the lookup */
	return run(req, resp, &op, 1);
}

/* --- a provider's configuration ------------------------------------------ */

/*
 * Bifrost's defaults (core/schemas/provider.go: DefaultNetworkConfig,
 * DefaultConcurrencyAndBufferSize): a field left 0 or absent answers these.
 */
#define DEFAULT_TIMEOUT_SECS 30
#define DEFAULT_BACKOFF_INITIAL_MS 500
#define DEFAULT_BACKOFF_MAX_MS 5000
#define DEFAULT_CONCURRENCY 1000
#define DEFAULT_BUFFER_SIZE 5000
/* the bounds of a retry backoff that is set (Bifrost's validateRetryBackoff) */
#define MIN_BACKOFF_MS 100
#define MAX_BACKOFF_MS 1000000
#define MAX_EXTRA_HEADERS 64

/*
 * Go's time.ParseDuration into milliseconds: "500ms", "1.5s", "1m30s",
 * "0"; units ns, us (µs), ms, s, m, h.  0 when s is not one.
 */
static int
go_duration_ms(const char *s, double *ms)
{
	static const struct {
		const char *unit;
		double ms;
	} units[] = {
		{ "ns", 1e-6 }, { "us", 1e-3 }, { "\xc2\xb5s", 1e-3 }, { "\xce\xbcs", 1e-3 },
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	};
	double total = 0;

	if (strcmp(s, "0") == 0) {
		*ms = 0;
		return 1;
	}
	if (*s == '\0')
		return 0;
	while (*s != '\0') {
		size_t digits = strspn(s, "0123456789"), n = digits, u;
		char number[64];

		if (s[n] == '.')
			n += 1 + strspn(s + n + 1, "0123456789");
		if (n == 0 || (n == 1 && s[0] == '.') || n >= sizeof(number))
			return 0;
		memcpy(number, s, n);
		number[n] = '\0';
		s += n;
		for (u = 0; u < sizeof(units) / sizeof(units[0]); u++)
			if (strncmp(s, units[u].unit, strlen(units[u].unit)) == 0)
				break;
		if (u == sizeof(units) / sizeof(units[0]))
			return 0;
		s += strlen(units[u].unit);
		total += strtod(number, NULL) * units[u].ms;
	}
	*ms = total;
	return 1;
}

/* A header name: an RFC 9110 token. */
static int
header_name_ok(const char *name)
{
	size_t n = strlen(name);

	return n > 0 && n <= 256 && strspn(name, "!#$%&'*+-.^_`|~0123456789"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") == n;
}

/* An absolute http:// or https:// URL with a host and nothing a header or log line could split on. */
static int
base_url_ok(const char *url)
{
	const char *rest = strncmp(url, "https://", 8) == 0 ? url + 8 :
	    strncmp(url, "http://", 7) == 0 ? url + 7 : NULL;

	if (rest == NULL || *rest == '\0' || *rest == '/' || *rest == '?' || *rest == '#')
		return 0;
	for (const unsigned char *c = (const unsigned char *)url; *c != '\0'; c++)
		if (*c <= ' ' || *c == 0x7f)
			return 0;
	return 1;
}

/* The retry backoff field of in, in milliseconds, into *ms (0: unset); KW_EINVAL naming it. */
static enum kw_err
backoff_in(struct kw_req *req, json_object *in, const char *field, int64_t *ms)
{
	json_object *v = json_object_object_get(in, field);
	char path[64];
	double d = 0;

	snprintf(path, sizeof(path), "network_config.%s", field);
	*ms = 0;
	if (v == NULL)
		return KW_OK;
	if (json_object_is_type(v, json_type_int))
		d = (double)json_object_get_int64(v);	/* Bifrost's legacy form: milliseconds */
	else if (!go_duration_ms(json_object_get_string(v), &d)) {
		kw_error_set(&req->err, KW_EINVAL, path,
		    "%s must be milliseconds or a duration like \"500ms\", \"5s\", \"1m\"", path);
		return KW_EINVAL;
	}
	if (d > 0 && (d < MIN_BACKOFF_MS || d > MAX_BACKOFF_MS)) {
		kw_error_set(&req->err, KW_EINVAL, path, "%s must be at least %dms and at most %ds",
		    path, MIN_BACKOFF_MS, MAX_BACKOFF_MS / 1000);
		return KW_EINVAL;
	}
	*ms = (int64_t)d;
	return KW_OK;
}

static void
header_aad(char *buf, size_t n, const char *provider, const char *name)
{
	snprintf(buf, n, "%s||network_config.extra_headers.%s", provider, name);
}

/*
 * True when a header's name says its value is a credential (Authorization,
 * X-Api-Key, a token, a cookie, ...): answers show such a value redacted.
 */
static int
credential_header(const char *name)
{
	static const char *const words[] = {
		"auth", "key", "token", "secret", "password", "cookie", "session", "signature",
		"credential",
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(name, words[i]) != NULL)
			return 1;
	return 0;
}

/*
 * A request's extra_headers (in) as stored (*out owned), each value sealed
 * (it may be a credential), a mask sent back keeping old's (the stored
 * extra_headers) value of that header.  KW_EINVAL naming the header.
 */
static enum kw_err
headers_in(struct kw_req *req, const char *provider, json_object *in, json_object *old,
    json_object **out)
{
	char aad[512], path[KW_FIELD_MAX];
	enum kw_err rc = KW_OK;

	*out = json_object_new_object();
	json_object_object_foreach(in, name, value) {
		const char *v = json_object_get_string(value);
		json_object *kept = json_object_object_get(old, name), *sealed = NULL;

		snprintf(path, sizeof(path), "network_config.extra_headers.%s", name);
		header_aad(aad, sizeof(aad), provider, name);
		if (!header_name_ok(name) || strpbrk(v, "\r\n") != NULL) {
			kw_error_set(&req->err, KW_EINVAL, path, header_name_ok(name) ?
			    "a header value must be one line" : "not a header name");
			rc = KW_EINVAL;
		} else if (is_redacted(v) && kept == NULL) {
			kw_error_set(&req->err, KW_EINVAL, path,
			    "%s is a redacted value with no stored value behind it", path);
			rc = KW_EINVAL;
		} else if (is_redacted(v)) {
			sealed = kw_json_copy(kept);
		} else {
			rc = seal(aad, v, &sealed);
		}
		if (rc != KW_OK)
			break;
		json_object_object_add(*out, name, sealed);
	}
	return rc;
}

/*
 * A request's network_config (in, borrowed; NULL for none) of provider as
 * stored (*out owned; NULL for none) over old (the stored one, or NULL):
 * base_url, extra_headers sealed, the timeout, the retry count and both
 * backoffs in milliseconds.  KW_EINVAL naming the field.
 */
static enum kw_err
network_in(struct kw_req *req, const char *provider, json_object *in, json_object *old,
    json_object **out)
{
	static const char *const counts[] = { "default_request_timeout_in_seconds", "max_retries" };
	json_object *headers = json_object_object_get(in, "extra_headers"), *h = NULL;
	const char *url = kw_json_str(in, "base_url");
	int64_t initial, max;
	enum kw_err rc;

	*out = NULL;
	if (in == NULL)
		return KW_OK;
	if (url != NULL && url[0] != '\0' && !base_url_ok(url)) {
		kw_error_set(&req->err, KW_EINVAL, "network_config.base_url",
		    "network_config.base_url must be an http:// or https:// URL");
		return KW_EINVAL;
	}
	if (headers != NULL && json_object_object_length(headers) > MAX_EXTRA_HEADERS) {
		kw_error_set(&req->err, KW_EINVAL, "network_config.extra_headers",
		    "network_config.extra_headers holds at most %d headers", MAX_EXTRA_HEADERS);
		return KW_EINVAL;
	}
	if ((rc = backoff_in(req, in, "retry_backoff_initial", &initial)) != KW_OK ||
	    (rc = backoff_in(req, in, "retry_backoff_max", &max)) != KW_OK)
		return rc;
	if (headers != NULL && json_object_object_length(headers) > 0 &&
	    (rc = headers_in(req, provider, headers, json_object_object_get(old, "extra_headers"),
	    &h)) != KW_OK) {
		json_object_put(h);
		return rc;
	}
	if (initial > 0 && max > 0 && initial > max) {
		kw_error_set(&req->err, KW_EINVAL, "network_config.retry_backoff_initial",
		    "network_config.retry_backoff_initial must not exceed retry_backoff_max");
		json_object_put(h);
		return KW_EINVAL;
	}
	*out = json_object_new_object();
	if (url != NULL && url[0] != '\0')
		json_object_object_add(*out, "base_url", json_object_new_string(url));
	if (h != NULL)
		json_object_object_add(*out, "extra_headers", h);
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
		if (json_object_object_get(in, counts[i]) != NULL)
			json_object_object_add(*out, counts[i], json_object_new_int64(
			    json_object_get_int64(json_object_object_get(in, counts[i]))));
	json_object_object_add(*out, "retry_backoff_initial", json_object_new_int64(initial));
	json_object_object_add(*out, "retry_backoff_max", json_object_new_int64(max));
	return KW_OK;
}

/* The integer field of obj when above 0, else otherwise. */
static int64_t
positive_or(json_object *obj, const char *field, int64_t otherwise)
{
	int64_t v = (int64_t)kw_json_num(obj, field, 0);

	return v > 0 ? v : otherwise;
}

/*
 * Provider name's stored record rec (NULL: a standard provider with no
 * configuration) network_config as answered (*out owned), every field of
 * Bifrost's NetworkConfig that keywarden keeps, defaults filled, the
 * extra_headers unsealed: in clear for the relay and the hash (clear), else
 * a credential's redacted.  A record of an older version kept a custom
 * provider's URL in custom_provider_config.base_url: that is its base_url.
 */
static enum kw_err
network_view(const char *name, json_object *rec, int clear, json_object **out)
{
	json_object *stored = json_object_object_get(rec, "network_config");
	json_object *headers = json_object_object_get(stored, "extra_headers"), *h;
	const char *url = kw_json_str(stored, "base_url");
	char aad[512], shown[64], *plain;
	enum kw_err rc = KW_OK;

	*out = json_object_new_object();
	if (url == NULL)
		url = kw_json_str(json_object_object_get(rec, "custom_provider_config"), "base_url");
	if (url != NULL && url[0] != '\0')
		json_object_object_add(*out, "base_url", json_object_new_string(url));
	if (headers != NULL) {
		h = json_object_new_object();
		json_object_object_add(*out, "extra_headers", h);
		json_object_object_foreach(headers, header, sealed) {
			header_aad(aad, sizeof(aad), name, header);
			if ((rc = unseal(aad, sealed, &plain)) != KW_OK)
				break;
			if (!clear && credential_header(header))
				redact(plain, shown, sizeof(shown));
			json_object_object_add(h, header, json_object_new_string(
			    !clear && credential_header(header) ? shown : plain));
			free_secret(plain);
		}
	}
	json_object_object_add(*out, "default_request_timeout_in_seconds", json_object_new_int64(
	    positive_or(stored, "default_request_timeout_in_seconds", DEFAULT_TIMEOUT_SECS)));
	json_object_object_add(*out, "max_retries",
	    json_object_new_int64(positive_or(stored, "max_retries", 0)));
	json_object_object_add(*out, "retry_backoff_initial", json_object_new_int64(
	    positive_or(stored, "retry_backoff_initial", DEFAULT_BACKOFF_INITIAL_MS)));
	json_object_object_add(*out, "retry_backoff_max", json_object_new_int64(
	    positive_or(stored, "retry_backoff_max", DEFAULT_BACKOFF_MAX_MS)));
	if (rc != KW_OK) {
		wipe_strings(*out);
		json_object_put(*out);
		*out = NULL;
	}
	return rc;
}

enum kw_err
kw_provider_network(struct kw_req *req, DB_TXN *txn, const char *provider,
    json_object **network_config, char *base_type, size_t n)
{
	struct provider p;
	enum kw_err rc;

	*network_config = NULL;
	if ((rc = find_provider(req, txn, provider, &p)) != KW_OK)
		return rc;
	rc = network_view(provider, p.record, 1, network_config);
	snprintf(base_type, n, "%s", p.base ? p.base : "");
	json_object_put(p.record);
	return rc;
}

/* A stored provider record's concurrency_and_buffer_size as answered (owned), defaults filled. */
static json_object *
concurrency_view(json_object *rec)
{
	json_object *stored = json_object_object_get(rec, "concurrency_and_buffer_size");
	json_object *out = json_object_new_object();

	json_object_object_add(out, "concurrency",
	    json_object_new_int64(positive_or(stored, "concurrency", DEFAULT_CONCURRENCY)));
	json_object_object_add(out, "buffer_size",
	    json_object_new_int64(positive_or(stored, "buffer_size", DEFAULT_BUFFER_SIZE)));
	return out;
}

/* concurrency_and_buffer_size as sent (in), or old's when not sent (*out owned; NULL: none). */
static enum kw_err
concurrency_in(struct kw_req *req, json_object *in, json_object *old, json_object **out)
{
	int64_t concurrency = (int64_t)kw_json_num(in, "concurrency", 0);
	int64_t buffer = (int64_t)kw_json_num(in, "buffer_size", 0);

	*out = NULL;
	if (in == NULL) {
		*out = old ? kw_json_copy(old) : NULL;
		return KW_OK;
	}
	/* Bifrost's addProvider and updateProvider */
	if (concurrency <= 0 || buffer <= 0 || concurrency > buffer) {
		kw_error_set(&req->err, KW_EINVAL, concurrency <= 0 ?
		    "concurrency_and_buffer_size.concurrency" : "concurrency_and_buffer_size.buffer_size",
		    concurrency <= 0 ? "Concurrency must be greater than 0" : buffer <= 0 ?
		    "Buffer size must be greater than 0" :
		    "Concurrency must be less than or equal to buffer size");
		return KW_EINVAL;
	}
	*out = json_object_new_object();
	json_object_object_add(*out, "concurrency", json_object_new_int64(concurrency));
	json_object_object_add(*out, "buffer_size", json_object_new_int64(buffer));
	return KW_OK;
}

/* The EnvVars of a proxy_config; which of them are secrets, shown redacted. */
static const struct proxy_field {
	const char *name;
	int secret;
} proxy_fields[] = {
	{ "url", 0 }, { "username", 0 }, { "password", 1 }, { "ca_cert_pem", 1 },
};
#define NPROXY_FIELDS (sizeof(proxy_fields) / sizeof(proxy_fields[0]))

static void
proxy_aad(char *buf, size_t n, const char *provider, const char *field)
{
	snprintf(buf, n, "%s||proxy_config.%s", provider, field);
}

/*
 * A request's proxy_config (in) as stored (*stored owned, each EnvVar
 * sealed or a reference; NULL when in is), a mask sent back keeping old's
 * (the stored proxy_config) secret.
 */
static enum kw_err
proxy_in(struct kw_req *req, const char *provider, json_object *in, json_object *old,
    json_object **stored)
{
	const char *type = kw_json_str(in, "type");
	char aad[512], path[64];
	enum kw_err rc = KW_OK;

	*stored = NULL;
	if (in == NULL)
		return KW_OK;
	*stored = json_object_new_object();
	json_object_object_add(*stored, "type", json_object_new_string(type ? type : "none"));
	for (size_t i = 0; i < NPROXY_FIELDS && rc == KW_OK; i++) {
		json_object *sealed, *plain;

		snprintf(path, sizeof(path), "proxy_config.%s", proxy_fields[i].name);
		proxy_aad(aad, sizeof(aad), provider, proxy_fields[i].name);
		rc = store_envvar(req, aad, path, json_object_object_get(in, proxy_fields[i].name),
		    json_object_object_get(old, proxy_fields[i].name), &sealed, &plain);
		set_or_drop(*stored, proxy_fields[i].name, sealed);
		if (plain != NULL)
			wipe_strings(plain);
		json_object_put(plain);
	}
	if (rc == KW_OK && strcmp(kw_json_str(*stored, "type"), "none") != 0 &&
	    strcmp(kw_json_str(*stored, "type"), "environment") != 0 &&
	    json_object_object_get(*stored, "url") == NULL) {
		kw_error_set(&req->err, KW_EINVAL, "proxy_config.url", "a %s proxy needs its url",
		    kw_json_str(*stored, "type"));
		rc = KW_EINVAL;
	}
	return rc;
}

/*
 * A stored proxy_config as answered (*out owned, or NULL): url and
 * username in clear, secrets redacted, or in clear too when clear (for
 * the hash: wipe it).
 */
static enum kw_err
proxy_view(const char *provider, json_object *stored, int clear, json_object **out)
{
	char aad[512], shown[64], *plain;
	enum kw_err rc = KW_OK;

	*out = NULL;
	if (stored == NULL)
		return KW_OK;
	*out = json_object_new_object();
	json_object_object_add(*out, "type", json_object_new_string(kw_json_str(stored, "type") ?
	    kw_json_str(stored, "type") : "none"));
	for (size_t i = 0; i < NPROXY_FIELDS && rc == KW_OK; i++) {
		json_object *f = json_object_object_get(stored, proxy_fields[i].name), *v;
		const char *ref = kw_json_str(f, "env_var");

		if (f == NULL) {
			json_object_object_add(*out, proxy_fields[i].name, NULL);
			continue;
		}
		proxy_aad(aad, sizeof(aad), provider, proxy_fields[i].name);
		plain = NULL;
		if (ref == NULL && (rc = unseal(aad, f, &plain)) != KW_OK)
			break;
		if (plain != NULL && proxy_fields[i].secret)
			redact(plain, shown, sizeof(shown));
		v = json_object_new_object();
		json_object_object_add(v, "value", json_object_new_string(plain == NULL ? "" :
		    proxy_fields[i].secret && !clear ? shown : plain));
		json_object_object_add(v, "env_var", json_object_new_string(ref ? ref : ""));
		json_object_object_add(v, "from_env", json_object_new_boolean(ref != NULL));
		json_object_object_add(*out, proxy_fields[i].name, v);
		free_secret(plain);
	}
	if (rc != KW_OK) {
		wipe_strings(*out);
		json_object_put(*out);
		*out = NULL;
	}
	return rc;
}

/* body's boolean field as sent, else old's (false when neither has it), new. */
static json_object *
bool_or_old(json_object *body, json_object *old, const char *field)
{
	json_object *v = json_object_object_get(body, field);

	if (json_object_is_type(v, json_type_boolean))
		return json_object_new_boolean(json_object_get_boolean(v));
	return json_object_new_boolean(kw_json_bool(old, field));
}

static const char *const raw_flags[] = {
	"send_back_raw_request", "send_back_raw_response", "store_raw_request_response",
};
#define NRAW_FLAGS (sizeof(raw_flags) / sizeof(raw_flags[0]))

/* True when base is a type a custom provider may be built on (SupportedBaseProviders). */
static int
base_allowed(const char *base)
{
	const struct builtin *b = builtin_of(base);

	return b != NULL && b->base;
}

/*
 * The custom_provider_config of name as stored (*out owned; NULL for a
 * standard provider), from what was sent (in) and what is stored (old,
 * NULL for a new provider), following Bifrost's addProvider and
 * ValidateCustomProviderUpdate: a standard name takes none; a custom one
 * needs one naming a base type Bifrost allows, kept when not sent, and
 * its base type never changes.  A base_url sent in it (older versions'
 * place) moves to *url_out.
 */
static enum kw_err
custom_in(struct kw_req *req, const char *name, json_object *in, json_object *old,
    json_object **out, const char **url_out)
{
	const char *base = kw_json_str(in, "base_provider_type");
	const char *old_base = kw_json_str(old, "base_provider_type");

	*out = NULL;
	*url_out = kw_json_str(in, "base_url");
	if (builtin_of(name) != NULL) {
		if (in != NULL) {
			kw_error_set(&req->err, KW_EINVAL, "custom_provider_config",
			    "Custom provider cannot be same as a standard provider");
			return KW_EINVAL;
		}
		return KW_OK;
	}
	if (in == NULL && old != NULL) {
		*out = kw_json_copy(old);
		return KW_OK;
	}
	if (in == NULL || base == NULL) {
		kw_error_set(&req->err, KW_EINVAL, in ? "custom_provider_config.base_provider_type" :
		    "custom_provider_config", "a custom provider needs custom_provider_config with "
		    "its base_provider_type");
		return KW_EINVAL;
	}
	if (old_base != NULL ? strcmp(base, old_base) != 0 : !base_allowed(base)) {
		kw_error_set(&req->err, KW_EINVAL, "custom_provider_config.base_provider_type",
		    old_base != NULL ? "base_provider_type cannot be changed (it is %s)" :
		    "BaseProviderType must be one of anthropic, bedrock, cohere, gemini, openai, "
		    "huggingface, replicate", old_base);
		return KW_EINVAL;
	}
	*out = kw_json_copy(in);
	json_object_object_del(*out, "base_url");
	json_object_object_add(*out, "is_key_less", json_object_new_boolean(
	    kw_json_bool(in, "is_key_less")));
	return KW_OK;
}

/*
 * Builds provider name's record (*rec owned) from the request body over
 * old (its stored record, NULL when it has none), as Bifrost's
 * updateProvider merges: network_config and concurrency_and_buffer_size
 * replaced as sent (concurrency kept when not sent), proxy_config and
 * custom_provider_config kept when not sent, the raw flags kept when not
 * sent, a proxy secret sent back masked kept.  config_hash is the SHA-256
 * of that configuration, secrets in plain, written canonically.
 */
static enum kw_err
provider_in(struct kw_req *req, const char *name, json_object *body, json_object *old,
    json_object **rec)
{
	json_object *network = NULL, *concurrency = NULL, *proxy = NULL, *proxy_plain = NULL;
	json_object *custom = NULL, *content, *canon, *sent, *network_plain;
	const char *legacy_url = NULL, *text;
	char hash[KW_SHA256_HEX_LEN + 1];
	enum kw_err rc;

	*rec = NULL;
	if ((rc = network_in(req, name, json_object_object_get(body, "network_config"),
	    json_object_object_get(old, "network_config"), &network)) ||
	    (rc = concurrency_in(req, json_object_object_get(body, "concurrency_and_buffer_size"),
	    json_object_object_get(old, "concurrency_and_buffer_size"), &concurrency)) ||
	    (rc = custom_in(req, name, json_object_object_get(body, "custom_provider_config"),
	    json_object_object_get(old, "custom_provider_config"), &custom, &legacy_url)))
		goto out;
	if (json_object_object_get_ex(body, "proxy_config", &sent))
		rc = proxy_in(req, name, sent, json_object_object_get(old, "proxy_config"), &proxy);
	else
		proxy = kw_json_copy(json_object_object_get(old, "proxy_config"));	/* kept */
	if (rc == KW_OK)
		rc = proxy_view(name, proxy, 1, &proxy_plain);
	if (rc != KW_OK)
		goto out;
	if (legacy_url != NULL && legacy_url[0] != '\0' && kw_json_str(network, "base_url") == NULL) {
		if (!base_url_ok(legacy_url)) {
			kw_error_set(&req->err, KW_EINVAL, "custom_provider_config.base_url",
			    "custom_provider_config.base_url must be an http:// or https:// URL");
			rc = KW_EINVAL;
			goto out;
		}
		if (network == NULL)
			network = json_object_new_object();
		json_object_object_add(network, "base_url", json_object_new_string(legacy_url));
	}
	*rec = json_object_new_object();
	json_object_object_add(*rec, "name", json_object_new_string(name));
	if (network != NULL)
		json_object_object_add(*rec, "network_config", json_object_get(network));
	if (concurrency != NULL)
		json_object_object_add(*rec, "concurrency_and_buffer_size", json_object_get(concurrency));
	if (proxy != NULL)
		json_object_object_add(*rec, "proxy_config", json_object_get(proxy));
	for (size_t i = 0; i < NRAW_FLAGS; i++)
		json_object_object_add(*rec, raw_flags[i], bool_or_old(body, old, raw_flags[i]));
	if (custom != NULL)
		json_object_object_add(*rec, "custom_provider_config", json_object_get(custom));

	content = kw_json_copy(*rec);
	/* hashed as answered (secrets in plain), so that sending back what a GET shows changes nothing */
	if ((rc = network_view(name, *rec, 1, &network_plain)) != KW_OK) {
		json_object_put(content);
		goto out;
	}
	json_object_object_add(content, "network_config", network_plain);
	json_object_object_add(content, "concurrency_and_buffer_size", concurrency_view(*rec));
	json_object_object_add(content, "proxy_config", json_object_get(proxy_plain));
	canon = sorted_copy(content);
	text = json_object_to_json_string_ext(canon, JSON_C_TO_STRING_PLAIN);
	kw_crypto_sha256_hex(text, strlen(text), hash);
	kw_crypto_wipe((char *)text, strlen(text));
	wipe_strings(content);
	json_object_put(canon);
	json_object_put(content);
	json_object_object_add(*rec, "config_hash", json_object_new_string(hash));
	kw_json_set_time(*rec, "created_at", req->now);
	if (old != NULL && json_object_object_get(old, "created_at") != NULL)
		json_object_object_add(*rec, "created_at",
		    json_object_get(json_object_object_get(old, "created_at")));
	kw_json_set_time(*rec, "updated_at", req->now);
out:
	if (proxy_plain != NULL)
		wipe_strings(proxy_plain);
	json_object_put(proxy_plain);
	json_object_put(proxy);
	json_object_put(network);
	json_object_put(concurrency);
	json_object_put(custom);
	return rc;
}

/* --- providers ------------------------------------------------------------ */

static enum kw_err
count_visit(struct bifrost_op *op, DB_TXN *txn, json_object *rec)
{
	(void)txn;
	(void)rec;
	(*(int64_t *)op->visiting)++;
	return KW_OK;
}

/* How many keys provider has, into *n. */
static enum kw_err
count_keys(struct bifrost_op *op, DB_TXN *txn, const char *provider, int64_t *n)
{
	void *visiting = op->visiting;
	enum kw_err rc;

	*n = 0;
	op->visiting = n;
	rc = each_key(op, txn, provider, count_visit);
	op->visiting = visiting;
	return rc;
}

/*
 * The provider as Bifrost's getProviderResponseFromConfig answers it (into
 * op->answer), with keywarden's custom and key count: its configuration,
 * defaults filled, proxy secrets redacted.  KW_ENOTFOUND naming provider
 * when it is not configured: no configuration of its own, and no keys (a
 * standard provider's keys written by older versions configure it).
 */
static enum kw_err
describe_provider(struct bifrost_op *op, DB_TXN *txn, const struct provider *p)
{
	json_object *rec = p->record, *cfg = json_object_object_get(rec, "custom_provider_config");
	json_object *proxy, *network;
	const char *hash = kw_json_str(rec, "config_hash");
	int64_t keys;
	enum kw_err rc;

	if ((rc = count_keys(op, txn, p->name, &keys)) != KW_OK)
		return rc;
	if (rec == NULL && keys == 0) {
		kw_error_set(&op->req->err, KW_ENOTFOUND, "provider",
		    "Provider not found: %s is not configured", p->name);
		return KW_ENOTFOUND;
	}
	if ((rc = proxy_view(p->name, json_object_object_get(rec, "proxy_config"), 0, &proxy)) !=
	    KW_OK)
		return rc;
	if ((rc = network_view(p->name, rec, 0, &network)) != KW_OK) {
		json_object_put(proxy);
		return rc;
	}
	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "name", json_object_new_string(p->name));
	json_object_object_add(op->answer, "custom", json_object_new_boolean(p->custom));
	json_object_object_add(op->answer, "keys", json_object_new_int64(keys));
	json_object_object_add(op->answer, "network_config", network);
	json_object_object_add(op->answer, "concurrency_and_buffer_size", concurrency_view(rec));
	json_object_object_add(op->answer, "proxy_config", proxy);
	for (size_t i = 0; i < NRAW_FLAGS; i++)
		json_object_object_add(op->answer, raw_flags[i],
		    json_object_new_boolean(kw_json_bool(rec, raw_flags[i])));
	cfg = json_object_object_get(rec, "custom_provider_config");
	if (cfg != NULL)
		json_object_object_add(op->answer, "custom_provider_config", kw_json_copy(cfg));
	json_object_object_add(op->answer, "provider_status", json_object_new_string("active"));
	if (hash != NULL)
		json_object_object_add(op->answer, "config_hash", json_object_new_string(hash));
	return KW_OK;
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

static int
stored_name(const char *id, json_object *rec, void *baton)
{
	(void)rec;
	if (builtin_of(id) == NULL)	/* the standard ones are visited anyway */
		json_object_array_add(baton, json_object_new_string(id));
	return 0;
}

static enum kw_err
providers_body(struct bifrost_op *op, DB_TXN *txn, struct provider *unused)
{
	json_object *custom = json_object_new_array(), *list = json_object_new_array();
	enum kw_err rc;

	(void)unused;
	rc = kw_rec_each(op->req->store, txn, KW_DB_PROVIDERS, stored_name, custom);
	for (size_t i = 0; rc == KW_OK && i < NBUILTINS + json_object_array_length(custom); i++) {
		struct provider p;
		const char *name = i < NBUILTINS ? builtins[i].name :
		    json_object_get_string(json_object_array_get_idx(custom, i - NBUILTINS));

		if ((rc = find_provider(op->req, txn, name, &p)) == KW_OK &&
		    (rc = describe_provider(op, txn, &p)) == KW_OK) {
			json_object_array_add(list, op->answer);
			op->answer = NULL;
		}
		if (rc == KW_ENOTFOUND)
			rc = KW_OK;	/* a standard provider that is not configured */
		json_object_put(p.record);
	}
	json_object_put(custom);
	json_object_array_sort(list, compare_provider_names);	/* alphabetical, as Bifrost lists */
	op->answer = json_object_new_object();
	json_object_object_add(op->answer, "providers", list);
	json_object_object_add(op->answer, "total",
	    json_object_new_int64((int64_t)json_object_array_length(list)));
	return rc;
}

/* GET /api/providers: the configured providers, alphabetically (Bifrost's listProviders). */
enum kw_err
kw_op_providers_list(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = providers_body };

	return run(req, resp, &op, 1);
}

/*
 * Stores provider name's configuration from the request body (Bifrost's
 * addProvider when create, else its updateProvider: an upsert), audited;
 * the answer is the provider as read back.
 */
static enum kw_err
configure_provider(struct bifrost_op *op, DB_TXN *txn, const char *name, int create)
{
	struct kw_req *req = op->req;
	json_object *keys = json_object_object_get(req->body, "keys"), *rec = NULL, *before = NULL;
	struct provider p;
	enum kw_err rc;

	if (json_object_is_type(keys, json_type_array) && json_object_array_length(keys) > 0) {
		kw_error_set(&req->err, KW_EINVAL, "keys", "keys are not accepted on this endpoint; "
		    "use POST/PUT /api/providers/{provider}/keys[/{key_id}] to manage keys");
		return KW_EINVAL;
	}
	/* a PUT names a new custom provider in its path: the name POST's schema allows */
	if (builtin_of(name) == NULL && (strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_.-") !=
	    strlen(name) || strchr("_.-", name[0]) != NULL)) {
		kw_error_set(&req->err, KW_EINVAL, "provider", "a custom provider's name is lower-case "
		    "letters, digits, '_', '.' and '-', starting with a letter or digit");
		return KW_EINVAL;
	}
	rc = find_provider(req, txn, name, &p);
	if (rc == KW_ENOTFOUND)
		rc = KW_OK;	/* a custom provider about to be configured */
	if (rc == KW_OK && (rc = describe_provider(op, txn, &p)) == KW_OK) {
		before = op->answer;
		op->answer = NULL;
		if (create) {
			kw_error_set(&req->err, KW_ECONFLICT, "provider",
			    "Provider %s already exists", name);
			rc = KW_ECONFLICT;
		}
	} else if (rc == KW_ENOTFOUND) {
		rc = KW_OK;
	}
	if (rc == KW_OK)
		rc = provider_in(req, name, req->body, p.record, &rec);
	if (rc == KW_OK)
		rc = kw_rec_put(req->store, txn, KW_DB_PROVIDERS, name, rec, 0);
	json_object_put(p.record);
	if (rc == KW_OK && (rc = find_provider(req, txn, name, &p)) == KW_OK) {
		rc = describe_provider(op, txn, &p);
		json_object_put(p.record);
	}
	if (rc == KW_OK)
		rc = kw_audit_record(req, txn, before ? "updated" : "created", KW_TABLE_PROVIDERS,
		    name, before, op->answer);
	json_object_put(before);
	json_object_put(rec);
	return rc;
}

static enum kw_err
provider_create_body(struct bifrost_op *op, DB_TXN *txn, struct provider *unused)
{
	(void)unused;
	return configure_provider(op, txn, kw_json_str(op->req->body, "provider"), 1);
}

/* POST /api/providers: a standard provider's configuration, or a custom provider. */
enum kw_err
kw_op_provider_create(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = provider_create_body };

	return run(req, resp, &op, 1);
}

static enum kw_err
provider_update_body(struct bifrost_op *op, DB_TXN *txn, struct provider *unused)
{
	(void)unused;
	return configure_provider(op, txn, op->provider, 0);
}

/* PUT /api/providers/{provider}: configured, or reconfigured (an upsert). */
enum kw_err
kw_op_provider_update(struct kw_req *req, struct kw_resp *resp)
{
	struct bifrost_op op = { .body = provider_update_body };

	/* the provider may have no configuration yet: op_body must not look it up */
	op.configures = 1;
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

	if ((rc = describe_provider(op, txn, p)) != KW_OK)
		return rc;
	answer = op->answer;	/* deleting keys must not touch the answer */
	op->answer = NULL;
	rc = each_key(op, txn, p->name, delete_visit);
	op->answer = answer;
	if (rc == KW_OK && p->record != NULL)
		rc = kw_rec_del(req->store, txn, KW_DB_PROVIDERS, p->name);
	if (rc == KW_OK)
		rc = kw_audit_record(req, txn, "deleted", KW_TABLE_PROVIDERS, p->name, answer, NULL);
	return rc;
}

/* DELETE /api/providers/{provider}: its configuration and every key it has (Bifrost's deleteProvider). */
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
	char unset[KW_ID_MAX + 8];	/* a reference that kept a key out: its variable is unset */
};

static enum kw_err
candidate_visit(struct bifrost_op *op, DB_TXN *txn, json_object *rec)
{
	struct candidates *c = op->visiting;
	json_object *made, *models = key_models(rec, &made);
	const char *ref = kw_json_str(json_object_object_get(rec, "value"), "env_var");
	int usable;

	(void)txn;
	usable = kw_json_bool(rec, "enabled") && list_allows(models, c->model) &&
	    !list_allows(json_object_object_get(rec, "blacklisted_models"), c->model) &&
	    (!c->listed || kw_json_list_has(models, c->model));
	json_object_put(made);
	if (usable && ref != NULL && env_value(ref) == NULL) {
		/* a reference whose variable is not in this environment: not usable
		 * now, and said in the 404, the fix being the environment, not the key */
		if (c->unset[0] == '\0')
			snprintf(c->unset, sizeof(c->unset), "%s", ref);
		usable = 0;
	}
	if (!usable)
		return KW_OK;
	json_object_array_add(c->keys, json_object_get(rec));
	if (c->tried == NULL || !kw_json_list_has(c->tried, kw_json_str(rec, "id")))
		json_object_array_add(c->fresh, json_object_get(rec));
	return KW_OK;
}

/*
 * A uniform random number in [0, 1): a key's turn is no secret, and this
 * runs on every relayed call, so kw_crypto_nonce's bytes serve.
 */
static double
uniform(void)
{
	uint64_t r;

	kw_crypto_nonce(&r, sizeof(r));
	return (double)(r >> 11) / (double)(1ULL << 53);
}

/*
 * One record of keys (an array, not empty), borrowed from it: as Bifrost's
 * selectKeyFromProviderForModel, the one key there is, else
 * WeightedRandomKeySelector by weight; keys of weight 0 only, alike.
 */
static json_object *
by_weight(json_object *keys)
{
	size_t n = json_object_array_length(keys);
	double total = 0, at, w;

	for (size_t i = 0; i < n; i++)
		if ((w = kw_json_num(json_object_array_get_idx(keys, i), "weight", 0)) > 0)
			total += w;
	at = uniform() * (total > 0 ? total : (double)n);
	for (size_t i = 0; i + 1 < n; i++) {
		w = kw_json_num(json_object_array_get_idx(keys, i), "weight", 0);
		at -= total > 0 ? (w > 0 ? w : 0) : 1;
		if (at < 0)
			return json_object_array_get_idx(keys, i);
	}
	return json_object_array_get_idx(keys, n - 1);
}

/*
 * Among provider's enabled keys (every provider's when NULL, and then only
 * keys whose models list names model) that allow model and do not
 * blacklist it, one chosen by weight, passing over the ids in tried
 * (borrowed; NULL none) while another qualifies.  *out (owned) is what a
 * selection answers: {id, name, provider, value, weight, aliases and
 * use_anthropic_endpoints when set, the configs it has}, secrets resolved.
 */
static enum kw_err
select_key(struct bifrost_op *op, DB_TXN *txn, const char *provider, const char *model,
    json_object *tried, json_object **out)
{
	static const char *const shown[] = { "id", "name", "provider", "value", "weight" };
	static const char *const when_set[] = { "aliases", "use_anthropic_endpoints" };
	struct kw_req *req = op->req;
	struct candidates c = { model, provider == NULL, tried, json_object_new_array(),
		json_object_new_array(), "" };
	json_object *resolved = NULL;
	enum kw_err rc;

	*out = NULL;
	op->visiting = &c;
	rc = each_key(op, txn, provider, candidate_visit);
	if (rc == KW_OK && json_object_array_length(c.keys) == 0) {
		if (c.unset[0] != '\0')
			kw_error_set(&req->err, KW_ENOTFOUND, "model", "no enabled key of %s allows "
			    "model %s: a key that would qualify references %s, which keywarden's environment "
			    "lacks (or KEYWARDEN_PROVIDER_ENV no longer allows); README \"Provider "
			    "variables\"", provider != NULL ? provider : "any provider", model, c.unset);
		else if (provider != NULL)
			kw_error_set(&req->err, KW_ENOTFOUND, "model",
			    "no enabled key of %s allows model %s", provider, model);
		else
			kw_error_set(&req->err, KW_ENOTFOUND, "model",
			    "no enabled provider key lists model %s", model);
		rc = KW_ENOTFOUND;
	}
	if (rc == KW_OK)
		rc = map_envvars(by_weight(json_object_array_length(c.fresh) > 0 ? c.fresh : c.keys),
		    resolve_envvar, &resolved);
	if (rc == KW_OK) {
		/* copies: what is resolved is wiped below, the answer is not */
		*out = json_object_new_object();
		for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
			json_object_object_add(*out, shown[i],
			    kw_json_copy(json_object_object_get(resolved, shown[i])));
		for (size_t i = 0; i < sizeof(when_set) / sizeof(when_set[0]); i++)
			if (json_object_object_get(resolved, when_set[i]) != NULL)
				json_object_object_add(*out, when_set[i],
				    kw_json_copy(json_object_object_get(resolved, when_set[i])));
		for (size_t i = 0; i < NCONFIGS; i++)
			if (json_object_object_get(resolved, configs[i]) != NULL)
				json_object_object_add(*out, configs[i],
				    kw_json_copy(json_object_object_get(resolved, configs[i])));
	}
	if (resolved != NULL)
		wipe_strings(resolved);
	json_object_put(resolved);
	json_object_put(c.keys);
	json_object_put(c.fresh);
	return rc;
}

static enum kw_err
select_body(struct bifrost_op *op, DB_TXN *txn, struct provider *p)
{
	/*
	 * A selection is a read: it writes no audit entry, which would let
	 * every caller with select_provider_keys grow the audit table by one
	 * row a request.  kw_op_provider_key_select counts and logs it once
	 * the transaction is over.
	 */
	return select_key(op, txn, p->name, kw_json_str(op->req->body, "model"), NULL,
	    &op->answer);
}

/* The one selection, for the relay: select_key, a keyless provider answering no key. */
enum kw_err
kw_provider_key_select(struct kw_req *req, DB_TXN *txn, const char *provider, const char *model,
    json_object *tried, json_object **key)
{
	struct bifrost_op op = { .req = req };
	struct provider p;
	enum kw_err rc;

	*key = NULL;
	if (provider != NULL) {
		if ((rc = find_provider(req, txn, provider, &p)) != KW_OK)
			return rc;
		json_object_put(p.record);
		if (p.keyless)
			return KW_OK;	/* called without a credential */
	}
	return select_key(&op, txn, provider, model, tried, key);
}

/* Releases a key kw_provider_key_select answered, its secrets wiped first. */
void
kw_provider_key_release(json_object *key)
{
	if (key != NULL)
		wipe_strings(key);
	json_object_put(key);
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
