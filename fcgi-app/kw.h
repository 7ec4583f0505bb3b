/* kw.h: keywarden's internal interfaces, shared by every module and by fcgi-app/gen/. */
#ifndef KW_H
#define KW_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct json_object;
struct printbuf;
struct FCGX_Request;

#define KW_VERSION "0.1.0"
#define KW_SCHEMA_VERSION 3	/* data-directory layout; bump with a migration */

/*
 * Internal error codes.  Functions return one of these; only the HTTP
 * boundary (http.c) turns one into a status and a face's envelope.
 */
enum kw_err {
	KW_OK = 0,
	KW_EINVAL,		/* malformed request: bad JSON, bad parameter */
	KW_EVALID,		/* well-formed body that fails the schema */
	KW_EAUTH,		/* missing or unknown credential */
	KW_EFORBIDDEN,		/* credential known, action not allowed */
	KW_ENOTFOUND,		/* no such route or record */
	KW_EMETHOD,		/* route exists, method does not */
	KW_ECONFLICT,		/* duplicate or conflicting record */
	KW_ETOOLARGE,		/* body over the configured cap */
	KW_EMEDIA,		/* body is not application/json */
	KW_ELIMIT,		/* rate or budget limit reached */
	KW_EUPGRADE,		/* the client is older than the service accepts (426) */
	KW_EPAYMENT,		/* a consumption limit is spent (402) */
	KW_EDEADLOCK,		/* store deadlock; retried by kw_store_txn */
	KW_EUNAVAIL,		/* store cannot be read or written right now */
	KW_ENOMEM,
	KW_EINTERNAL,
	KW_ERUNRECOVERY		/* store is corrupt: the worker must exit */
};

const char *kw_err_name(enum kw_err err);

/* The API dialects; each renders errors in its own envelope (face.c). */
enum kw_face {
	KW_FACE_LITELLM = 0,	/* the default: /health, /openapi.json, /key/... */
	KW_FACE_BIFROST,
	KW_FACE_VENICE,
	KW_FACE_PROVISIONING
};

/* --- log.c --------------------------------------------------------- */

enum kw_log_level { KW_LOG_ERROR = 0, KW_LOG_WARN, KW_LOG_INFO, KW_LOG_DEBUG };
extern enum kw_log_level kw_log_threshold;
int kw_log_parse_level(const char *name, enum kw_log_level *out);
void kw_log_write(enum kw_log_level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Never pass a key, a secret or a full token to these. */
#define kw_log_error(...) kw_log_write(KW_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)
#define kw_log_warn(...) kw_log_write(KW_LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define kw_log_info(...) kw_log_write(KW_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define kw_log_debug(...) kw_log_write(KW_LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)

/* --- arena.c: per-request memory, released in one call ---------------- */

struct kw_arena;
struct kw_arena *kw_arena_new(void);
void *kw_arena_alloc(struct kw_arena *, size_t n);	/* zeroed, 16-aligned; NULL on OOM */
char *kw_arena_strndup(struct kw_arena *, const char *s, size_t n);
void kw_arena_reset(struct kw_arena *);	/* frees all but the first block */
void kw_arena_free(struct kw_arena *);

/* --- crypto.c: libgcrypt ------------------------------------------- */

#define KW_SHA256_LEN 32
#define KW_SHA256_HEX_LEN 64
#define KW_AEAD_KEY_LEN 32
#define KW_AEAD_NONCE_LEN 12
#define KW_AEAD_TAG_LEN 16
#define KW_AEAD_OVERHEAD (KW_AEAD_NONCE_LEN + KW_AEAD_TAG_LEN)

enum kw_err kw_crypto_init(void);
void kw_crypto_random(void *buf, size_t n);
void kw_crypto_nonce(void *buf, size_t n);	/* unpredictable, not secret: ids */
void kw_uuid4(char out[37]);	/* a random UUID v4, lower-case: an id made for a record */
void kw_crypto_sha256(const void *data, size_t n, unsigned char out[KW_SHA256_LEN]);
void kw_crypto_sha256_hex(const void *data, size_t n, char out[KW_SHA256_HEX_LEN + 1]);
void kw_crypto_hex(const unsigned char *data, size_t n, char *out);
enum kw_err kw_crypto_unhex(const char *hex, size_t hexlen, unsigned char *out);
enum kw_err kw_crypto_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t n,
    unsigned char out[KW_SHA256_LEN]);
int kw_crypto_hmac_verify(const void *key, size_t keylen, const void *msg, size_t n,
    const unsigned char mac[KW_SHA256_LEN]);
enum kw_err kw_crypto_seal(const unsigned char key[KW_AEAD_KEY_LEN], const void *aad,
    size_t aadlen, const void *plain, size_t n, unsigned char *out);
enum kw_err kw_crypto_open(const unsigned char key[KW_AEAD_KEY_LEN], const void *aad,
    size_t aadlen, const unsigned char *sealed, size_t n, unsigned char *plain);
int kw_crypto_ct_equal(const void *a, const void *b, size_t n);
int kw_crypto_same_secret(const char *presented, const char *secret);
void kw_crypto_wipe(void *buf, size_t n);
size_t kw_crypto_b64url(const void *data, size_t n, char *out);

/* --- config.c: settings from the environment and DATA_DIR/keywarden.conf */

/* The longest KEYWARDEN_PROVISION_TTL: no signed token outlives its signing key's retirement by more. */
#define KW_PROVISION_TTL_MAX (30 * 86400)
/* KEYWARDEN_PROVIDER_ENV's default: comma-separated names and shell wildcards. */
#define KW_PROVIDER_ENV_DEFAULT "*_API_KEY"
/*
 * KEYWARDEN_PRIVATE_MODELS' default: the model families Venice serves
 * privately (open-weight models on its own hosts, TEE and E2EE ones), as
 * names and shell wildcards.  A model no pattern names is anonymous.
 */
#define KW_PRIVATE_MODELS_DEFAULT "venice-*,llama-*,qwen*,mistral-*,deepseek-*,zai-org-*," \
	"hermes-*,google-gemma-*,openai-gpt-oss-*,e2ee-*,tee-*"
#define KW_MAX_WORKERS 256	/* the most workers a pool may grow to */
struct kw_config {
	char data_dir[4096];
	unsigned workers;		/* the pool's size when idle */
	unsigned max_workers;		/* what it may grow to when every worker is busy; 0 default */
	unsigned worker_idle_secs;	/* a worker above workers leaves after this idle */
	size_t max_body;		/* bytes */
	unsigned maintain_secs;		/* checkpoint and log-archive interval */
	unsigned lease_secs;		/* an unsettled request's slot and reservation return after this */
	unsigned anon_lease_secs;	/* the same for a request whose id keywarden named (<= lease_secs) */
	unsigned max_keys_per_user;	/* keys a user may hold unless a proxy admin makes more; 0 none */
	unsigned info_max_keys;		/* keys embedded in a /user/info or /team/info answer */
	unsigned max_team_members;	/* members a team admin may give a team; 0 none */
	double default_expected_cost;	/* reserved by a check that names no expected_cost */
	int64_t default_expected_tokens;	/* reserved against tpm by one that names none */
	char public_url[1024];		/* the gateway's base URL, answered by provisioning */
	unsigned provision_ttl;		/* a provisioned key's lifetime, seconds */
	unsigned provision_rpm;		/* provisioning requests a minute per caller */
	char min_client_version[64];	/* provisioning refuses older X-Client-Version (426); "" none */
	char metrics_token[256];	/* a bearer that may read GET /metrics; "" none */
	char provider_env[256];		/* the variables a provider key's env.NAME may name */
	char private_models[1024];	/* the models a Venice key's modelPrivacy counts as private */
	char media_models[1024];	/* image, audio and video models (PRIVATE_TEXT lets them be anonymous) */
	/* the relay (relay.c) */
	char ca_bundle[1024];		/* KEYWARDEN_CA_BUNDLE: CA certificates for providers; "" the system's */
	char relay_prices[1024];	/* KEYWARDEN_RELAY_PRICES: a JSON price table over the defaults; "" none */
	int relay_allow_unpriced;	/* KEYWARDEN_RELAY_ALLOW_UNPRICED: relay models with no price, at 0 */
	unsigned relay_tries;		/* KEYWARDEN_RELAY_TRIES: provider keys tried for one request */
	unsigned relay_connect_timeout;	/* KEYWARDEN_RELAY_CONNECT_TIMEOUT: seconds */
	unsigned relay_timeout;		/* KEYWARDEN_RELAY_TIMEOUT: seconds for a whole call, unless the provider says */
	size_t relay_max_response;	/* KEYWARDEN_RELAY_MAX_RESPONSE: bytes of a provider's answer */
	unsigned relay_expected_output;	/* KEYWARDEN_RELAY_EXPECTED_OUTPUT: tokens reserved when max_tokens is unset */
	enum kw_log_level log_level;
	char master_key[256];		/* from the environment or file; wiped at exit */
	/* usage reports and the relay's settlement (kw_limits_record) */
	int usage_async;		/* KEYWARDEN_USAGE_COMMIT=async: acknowledged before the flush */
	unsigned usage_flush_ms;	/* KEYWARDEN_USAGE_FLUSH_MS: the pool manager flushes that often */
	/* a replicated group (group.c); KEYWARDEN_GROUP_SITES unset: this site runs alone */
	unsigned group_priority;	/* KEYWARDEN_GROUP_PRIORITY: election priority, 0 never master */
	enum kw_ack { KW_ACK_QUORUM, KW_ACK_ALL, KW_ACK_ONE, KW_ACK_NONE } group_ack;
	unsigned group_ack_timeout_ms;	/* KEYWARDEN_GROUP_ACK_TIMEOUT_MS: a commit waits this long */
	int group_leases;		/* KEYWARDEN_GROUP_LEASES: master leases */
};
extern struct kw_config kw_config;
enum kw_err kw_config_load(const char *data_dir_override);
enum kw_err kw_config_init_data_dir(int print_new_master_key);
enum kw_err kw_config_load_secret(const char *name, unsigned char *out, size_t n);
/* True when name matches one of list's comma-separated names and shell wildcards. */
int kw_config_list_match(const char *list, const char *name);

/* --- store.c: the Berkeley DB environment --------------------------- */

struct kw_store;
struct __db_txn;
enum kw_store_open_mode {
	KW_STORE_JOIN = 0,	/* a worker: join the running environment */
	KW_STORE_RECOVER,	/* the pool manager or a tool: register, recover if needed */
	KW_STORE_RECOVER_FORCE,	/* the pool manager, alone in the environment: always recover */
	KW_STORE_TOOL		/* a command-line tool: KW_STORE_RECOVER, replicated or not as the site is */
};
struct kw_store_state {
	unsigned schema_version;
	uint64_t log_file;		/* current log file number */
	uint64_t txn_commits;		/* since the environment was created */
	uint64_t deadlocks;
};
struct __db;
/* The databases of the environment. */
enum kw_db {
	KW_DB_META = 0,		/* meta.db: schema version and service-wide settings */
	KW_DB_KEYS,		/* keys.db: token (SHA-256 hex of the key) -> record (JSON) */
	KW_DB_ALIASES,		/* aliases.db: key_alias -> token; makes aliases unique */
	KW_DB_KEY_OWNERS,	/* key_owners.db: "u:<user>", "t:<team>", "o:<org>" -> tokens (sorted duplicates) */
	KW_DB_KEY_CREATED,	/* key_created.db: created_at + token -> token, with record numbers */
	KW_DB_RETIRED,		/* retired.db: a regenerated key's old token -> {"token", "until"} */
	KW_DB_TEAMS,		/* teams.db: team_id -> record (JSON) */
	KW_DB_USERS,		/* users.db: user_id -> record (JSON) */
	KW_DB_AUDIT,		/* audit.db: record number -> audit entry (JSON), in order */
	KW_DB_COUNTERS,		/* counters.db: "<limit>:<scope>" -> struct kw_counter (rate windows, model spend) */
	KW_DB_LEASES,		/* leases.db: requests in flight: parallel slots and reserved cost */
	KW_DB_RECEIPTS,		/* receipts.db: usage reports already counted, by request_id */
	KW_DB_PROVIDERS,	/* providers.db: custom provider name -> record (JSON) */
	KW_DB_PROVIDER_KEYS,	/* provider_keys.db: "<provider>|<id>" -> key, secrets sealed (JSON) */
	KW_DB_PROVIDER_INDEX,	/* provider_index.db: "n:<name>" and "i:<id>" -> "<provider>|<id>" */
	KW_DB_SUMMARIES,	/* summaries.db: "k:", "t:", "u:", "o:" + id -> what a check needs, binary */
	KW_DB_ORGS,		/* organizations.db: organization_id -> record (JSON) */
	KW_DB_BREACHES,		/* breaches.db: "<owner>|<time>|<token>" -> a Venice key's limit breach (JSON) */
	KW_DB_BUDGETS,		/* budgets.db: budget_id -> LiteLLM budget record (JSON) */
	KW_DB_END_USERS,	/* end_users.db: end user (customer) user_id -> record (JSON) */
	KW_DB_SPEND_HOURS,	/* spend_hours.db: UTC hour (8 bytes, big-endian) + SHA-256 of key, model, end user -> usage (JSON) */
	KW_DB_COUNT
};
typedef enum kw_err (*kw_txn_body)(struct kw_store *, struct __db_txn *, void *baton);

enum kw_err kw_store_open(struct kw_store **out, const char *dir, enum kw_store_open_mode);
void kw_store_close(struct kw_store *);
enum kw_err kw_store_txn(struct kw_store *, kw_txn_body body, void *baton);
#define KW_TXN_NOSYNC 1	/* commit without flushing the log: for state a crash may lose */
#define KW_TXN_FLUSH_AFTER_ANSWER 2	/* written at commit, flushed once the answer is sent */
#define KW_TXN_ASYNC 4	/* commit written to the log file, flushed later (kw_store_flush) */
enum kw_err kw_store_txn_flags(struct kw_store *, unsigned flags, kw_txn_body body, void *baton);
void kw_store_flush_deferred(struct kw_store *);
enum kw_err kw_store_state(struct kw_store *, struct kw_store_state *);
/* kw_store_state without txn_commits and deadlocks (0), which walk regions: for GET /health. */
enum kw_err kw_store_health(struct kw_store *, struct kw_store_state *);
enum kw_err kw_store_maintain(struct kw_store *);
enum kw_err kw_store_flush(struct kw_store *);
struct __db *kw_store_db(struct kw_store *, enum kw_db);
struct __db_env *kw_store_env(struct kw_store *);
/*
 * What the last store calls met that a replicated site can remedy: a write
 * refused because this site is a replica (the request goes to the master),
 * a handle made stale by a replica's synchronisation (reopen the store and
 * serve the request again), or a synchronisation in progress (wait, then
 * serve it again).  kw_store_err records it; kw_http_serve reads it.
 */
enum kw_store_trouble {
	KW_TROUBLE_NONE = 0, KW_TROUBLE_NOT_MASTER, KW_TROUBLE_HANDLE_DEAD, KW_TROUBLE_LOCKOUT
};
enum kw_store_trouble kw_store_trouble(void);
void kw_store_trouble_clear(void);
enum kw_err kw_store_failchk(struct kw_store *);
enum kw_err kw_store_err(int db_rc);

/* --- generated route and schema tables (fcgi-app/gen/) --------------- */

enum kw_type {
	KW_T_NULL = 1 << 0,
	KW_T_BOOLEAN = 1 << 1,
	KW_T_INTEGER = 1 << 2,
	KW_T_NUMBER = 1 << 3,	/* integers are numbers too */
	KW_T_STRING = 1 << 4,
	KW_T_ARRAY = 1 << 5,
	KW_T_OBJECT = 1 << 6
};

enum kw_schema_flag {
	KW_S_MIN = 1 << 0,
	KW_S_MAX = 1 << 1,
	KW_S_EXCL_MIN = 1 << 2,
	KW_S_EXCL_MAX = 1 << 3
};

/* String formats the C validator enforces; the generator refuses any other. */
enum kw_format {
	KW_FMT_NONE = 0,
	KW_FMT_DATE_TIME,	/* format: date-time (RFC 3339, years 1970 to 9999) */
	KW_FMT_DURATION		/* x-keywarden-format: duration ("30d"; ends by 9999) */
};

enum kw_additional {
	KW_ADDL_REJECT = 0,	/* unknown fields are a validation error */
	KW_ADDL_ALLOW,		/* unknown fields pass through unchecked */
	KW_ADDL_SCHEMA,		/* unknown fields must match additional_schema */
	KW_ADDL_IGNORE		/* unknown fields are dropped from the value, unread */
};

struct kw_schema;
struct kw_prop {
	const char *name;
	const struct kw_schema *schema;
	int required;
};

struct kw_schema {
	unsigned types;			/* KW_T_* mask; 0 accepts any type */
	unsigned flags;			/* KW_S_* */
	double minimum, maximum;
	long min_length, max_length;	/* strings, in code points; -1 = none */
	int pattern;			/* index into kw_gen_patterns; -1 = none */
	enum kw_format format;
	/*
	 * What a value of the right type that breaks the bounds, length, pattern
	 * or format above answers: KW_EVALID (422) when KW_OK, else this, from
	 * the spec's x-keywarden-status (KW_EINVAL: 400, where the original
	 * refuses the value in its handler, not its request model).
	 */
	enum kw_err value_err;
	const char *const *enums;	/* string enum values */
	size_t nenums;
	const struct kw_schema *items;
	long min_items, max_items;	/* -1 = none */
	const struct kw_prop *props;
	size_t nprops;
	enum kw_additional additional;
	const struct kw_schema *additional_schema;
};

enum kw_param_in { KW_IN_PATH, KW_IN_QUERY, KW_IN_HEADER };
struct kw_param {
	const char *name;
	enum kw_param_in in;
	int required;
	const struct kw_schema *schema;
};

struct kw_req;
struct kw_resp;
typedef enum kw_err (*kw_handler_fn)(struct kw_req *, struct kw_resp *);

struct kw_route {
	const char *method;
	const char *path;		/* template: /key/{key}/regenerate */
	const char *operation_id;
	kw_handler_fn handler;
	enum kw_face face;
	const struct kw_param *params;
	size_t nparams;
	const struct kw_schema *body;	/* NULL when the operation takes no body */
	int body_required;
	int credential;			/* the spec's security asks for one: checked first */
};

struct kw_face_prefix {
	const char *prefix;
	enum kw_face face;
};

extern const struct kw_route kw_gen_routes[];
extern const size_t kw_gen_nroutes;
extern const struct kw_face_prefix kw_gen_face_prefixes[];
extern const size_t kw_gen_nface_prefixes;
extern const char *const kw_gen_patterns[];
extern const size_t kw_gen_npatterns;
extern const char kw_gen_openapi_json[];
extern const size_t kw_gen_openapi_json_len;
extern const char kw_gen_spec_sha256[];

/* --- valid.c: validation against the generated schemas --------------- */

#define KW_FIELD_MAX 128
#define KW_MESSAGE_MAX 256

/* One internal error, rendered by a face at the boundary. */
struct kw_error {
	enum kw_err code;
	char field[KW_FIELD_MAX];	/* "models[2]", "query.page"; empty if none */
	char message[KW_MESSAGE_MAX];	/* never holds a key or secret */
	const char *type;		/* static; the face's own type for code when NULL */
};

void kw_error_set(struct kw_error *, enum kw_err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
enum kw_err kw_valid_check(const struct kw_schema *, struct json_object *value,
    const char *field, struct kw_error *err);
int kw_valid_utf8(const char *s, size_t n);
/*
 * A request id, wherever it comes from (/key/verify's and /key/usage's
 * request_id, the authorizer's x-request-id): 1 to KW_REQUEST_ID_MAX
 * characters of UTF-8, the spec's RequestId, so an id one way in takes is
 * one the others take.  Receipts and leases are keyed by its SHA-256.
 */
#define KW_REQUEST_ID_MAX 128
#define KW_REQUEST_ID_BYTES (4 * KW_REQUEST_ID_MAX)
int kw_valid_request_id(const char *s);
enum kw_err kw_json_parse(const char *text, size_t n, unsigned max_depth,
    struct json_object **out, struct kw_error *err);

/* --- router.c ------------------------------------------------------- */

#define KW_MAX_PATH_PARAMS 8

struct kw_match {
	const struct kw_route *route;
	size_t nparams;
	const char *names[KW_MAX_PATH_PARAMS];
	const char *values[KW_MAX_PATH_PARAMS];	/* decoded, arena-owned */
	char allow[64];				/* for 405: "GET, POST" */
};

enum kw_err kw_router_match(struct kw_arena *, const struct kw_route *routes, size_t nroutes,
    const char *method, const char *path, int path_is_decoded, struct kw_match *out,
    struct kw_error *err);
enum kw_face kw_router_face(const struct kw_face_prefix *, size_t n, const char *path);
char *kw_url_decode(struct kw_arena *, const char *s, size_t n, int plus_is_space);
enum kw_err kw_query_parse(struct kw_arena *, const struct kw_route *, const char *query,
    struct json_object **out, struct kw_error *err);

/* --- http.c: one request from FastCGI to a response ------------------ */

#define KW_MAX_HEADERS 8

struct kw_req {
	struct FCGX_Request *fcgi;
	struct kw_arena *arena;
	struct kw_store *store;		/* NULL when the store is unavailable */
	const char *method;
	const char *path;
	const struct kw_route *route;
	struct kw_match match;
	struct json_object *query;	/* validated query parameters; owned */
	struct json_object *body;	/* validated JSON body or NULL; owned */
	struct kw_error err;
	time_t now;
	struct kw_caller *caller;	/* set by kw_auth_caller; arena-owned */
	int authorizer;			/* the server asks as an authorizer (is_authorizer) */
	int no_body;			/* the server said the request has none (http.c) */
	const char *raw_body;		/* the body as read, for forwarding to the master; arena-owned */
	size_t raw_body_len;
};

struct kw_resp {
	int status;
	struct json_object *json;	/* owned; rendered as the body */
	const char *raw;		/* borrowed static body, used when json is NULL */
	size_t raw_len;
	const char *content_type;
	size_t nheaders;
	const char *headers[KW_MAX_HEADERS];	/* "Name: value", arena-owned */
	int sent;			/* the handler wrote the whole response itself (a stream) */
};

const char *kw_req_header(struct kw_req *, const char *cgi_name);
const char *kw_req_path_param(struct kw_req *, const char *name);
void kw_resp_json(struct kw_resp *, int status, struct json_object *owned);
void kw_answer_reset(struct json_object **answer);
enum kw_err kw_answer_respond(struct kw_resp *, struct json_object **answer, enum kw_err rc);
void kw_resp_header(struct kw_req *, struct kw_resp *, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int kw_http_status_for(enum kw_face, enum kw_err);
struct json_object *kw_face_error(enum kw_face, int status, const struct kw_error *);
enum kw_err kw_http_serve(struct FCGX_Request *, struct kw_arena *, struct kw_store **store);

/* --- records.c: JSON records in the store's tables, inside a transaction --- */

/*
 * Every function here runs inside the caller's transaction (kw_store_txn's
 * body).  Records are JSON objects stored as their plain text.
 */
#define KW_RMW 1	/* read for update: take the write lock now, not at the put */

/*
 * JSON nesting, counted in objects and arrays, in one place: whatever a
 * request may send must always be readable once stored.  A request body
 * (kw_json_parse in http.c) nests at most KW_JSON_MAX_DEPTH.  A record keeps
 * a sent value as deep as it came, or one level deeper (Bifrost seals a
 * secret string into an object): KW_REC_MAX_DEPTH, which kw_rec_put
 * enforces and import and export use.  An audit entry holds records one
 * level down: KW_STORED_MAX_DEPTH, which kw_audit_record enforces and
 * kw_rec_parse, the reader of every stored JSON value, admits.
 */
#define KW_JSON_MAX_DEPTH 32
#define KW_REC_MAX_DEPTH (KW_JSON_MAX_DEPTH + 1)
#define KW_STORED_MAX_DEPTH (KW_REC_MAX_DEPTH + 1)

/* kw_rec_get with the text the record was parsed from, *text owned (free), *len bytes. */
enum kw_err kw_rec_get_with_text(struct kw_store *, struct __db_txn *, enum kw_db, const char *id,
    int flags, struct json_object **out, char **text, size_t *len);
enum kw_err kw_rec_get(struct kw_store *, struct __db_txn *, enum kw_db, const char *id,
    int flags, struct json_object **out);	/* *out owned; KW_ENOTFOUND when absent */
enum kw_err kw_rec_put(struct kw_store *, struct __db_txn *, enum kw_db, const char *id,
    struct json_object *rec, int no_overwrite);	/* rec borrowed; KW_ECONFLICT */
/* kw_rec_put of rec, read from text by kw_rec_get_with_text, when only its member name changed. */
enum kw_err kw_rec_put_member(struct kw_store *, struct __db_txn *, enum kw_db, const char *id,
    struct json_object *rec, const char *text, size_t len, const char *name);
enum kw_err kw_rec_del(struct kw_store *, struct __db_txn *, enum kw_db, const char *id);
enum kw_err kw_rec_exists(struct kw_store *, struct __db_txn *, enum kw_db, const char *id);
/* Of the record under id, the fields names (n) only, in *out (owned; it may hold more); KW_ENOTFOUND. */
enum kw_err kw_rec_get_fields(struct kw_store *, struct __db_txn *, enum kw_db, const char *id,
    const char *const *names, size_t n, struct json_object **out);
enum kw_err kw_rec_parse(const void *data, size_t n, struct json_object **out);
/* Where a value's text is inside a record's text. */
struct kw_span {
	const char *text;	/* NULL: no such field */
	size_t len;
};
/* Where each of the fields names (n) is in a record's text; 0 when the text must be parsed whole. */
int kw_rec_field_spans(const char *data, size_t len, const char *const *names, size_t n,
    struct kw_span *spans);
/* The fields names (n) of a record's text, parsed alone into *out (owned; it may hold more). */
enum kw_err kw_rec_parse_fields(const char *data, size_t n, const char *const *names, size_t nnames,
    struct json_object **out);
/* The record's text, *text owned (free), *len bytes; KW_ENOTFOUND. */
enum kw_err kw_rec_get_text(struct kw_store *, struct __db_txn *, enum kw_db, const char *id,
    char **text, size_t *len);
/* A stored record's text as an answer writes it ("\/" as "/"), into out (room for n); its length. */
size_t kw_rec_text_plain(const char *stored, size_t n, char *out);
unsigned kw_json_depth(struct json_object *);	/* objects and arrays nested; 0 for a scalar */
/* Calls visit for each record in id order until it returns non-zero; rec borrowed. */
typedef int (*kw_rec_visit)(const char *id, struct json_object *rec, void *baton);
enum kw_err kw_rec_each(struct kw_store *, struct __db_txn *, enum kw_db, kw_rec_visit,
    void *baton);

/* Field access on records and bodies; the returned strings are borrowed from obj. */
/* Appends v as json-c prints a string (null for NULL) through str, a string object reused. */
void kw_json_append_string(struct printbuf *, struct json_object *str, const char *v, int flags);
const char *kw_json_str(struct json_object *obj, const char *name);	/* NULL unless a string */
int kw_json_has(struct json_object *obj, const char *name);	/* present, even as null */
int kw_json_same_str(struct json_object *a, struct json_object *b, const char *name);
int kw_json_field_is(struct json_object *rec, const char *name, struct json_object *value);
double kw_json_num(struct json_object *obj, const char *name, double otherwise);
int kw_json_bool(struct json_object *obj, const char *name);	/* true only if true */
struct json_object *kw_json_copy(struct json_object *);	/* owned deep copy via text */
int kw_json_list_has(struct json_object *list, const char *s);	/* array of strings holds s */
void kw_json_list_drop(struct json_object *rec, const char *field, const char *key,
    const char *value);
void kw_json_set_time(struct json_object *obj, const char *name, time_t t);	/* 0: null */

/* --- keys.c: the one key model every face reads and writes ----------- */

#define KW_KEY_GENERATED_LEN 25		/* "sk-" + 22 base64url characters */
#define KW_TIME_LEN 21			/* "2026-11-22T07:36:43Z" + NUL */
#define KW_TOKEN_LEN KW_SHA256_HEX_LEN
#define KW_ID_MAX 1024			/* bytes: the spec's 256 code points of UTF-8 */
#define KW_METADATA_MAX 16384		/* bytes: a key's metadata as stored JSON */

void kw_keys_new_secret(char out[KW_KEY_GENERATED_LEN + 1]);
void kw_keys_key_name(const char *key, char *out, size_t n);
int kw_budget_settle(struct json_object *rec, time_t now);

/* The token of a key named by its plaintext or its 64-hex hash (never a credential). */
void kw_keys_token_of(const char *ref, char token[KW_TOKEN_LEN + 1]);
/* Reads the key record of a presented credential; follows a regenerated key's grace period. */
enum kw_err kw_keys_credential(struct kw_store *, struct __db_txn *, const char *presented,
    time_t now, struct json_object **out);
/* Writes rec under its "token", replacing old (NULL for a new key), keeping every index right. */
enum kw_err kw_keys_put(struct kw_store *, struct __db_txn *, struct json_object *old,
    struct json_object *rec, struct kw_error *err);
enum kw_err kw_keys_del(struct kw_store *, struct __db_txn *, struct json_object *rec);
enum kw_err kw_keys_retire(struct kw_store *, struct __db_txn *, const char *old_token,
    const char *new_token, time_t until);
/* Calls visit with the tokens of kind 'u' (user), 't' (team) or 'o' (organization) id. */
typedef int (*kw_token_visit)(const char *token, void *baton);
enum kw_err kw_keys_owned_by(struct kw_store *, struct __db_txn *, char kind, const char *id,
    kw_token_visit, void *baton);
enum kw_err kw_keys_reindex(struct kw_store *, struct __db_txn *);
enum kw_err kw_keys_revoke_self_grants(struct kw_store *, struct __db_txn *);
/* How many keys an owner has, from the owner index; no scan of the keys. */
enum kw_err kw_keys_count_owned(struct kw_store *, struct __db_txn *, char kind, const char *id,
    size_t *n);
/* KW_EINVAL naming user_id when user_id owns KEYWARDEN_MAX_KEYS_PER_USER keys already. */
enum kw_err kw_keys_room(struct kw_store *, struct __db_txn *, const char *user_id,
    struct kw_error *err);

/* A page of tokens, newest first or oldest first, straight from the creation index. */
enum kw_err kw_keys_page_by_created(struct kw_store *, struct __db_txn *, int newest_first,
    size_t offset, size_t limit, kw_token_visit, void *baton, size_t *total);

/* --- auth.c: who is calling and what they may do -------------------- */

enum kw_role {
	KW_ROLE_NONE = 0,		/* a key without a user: reads itself only */
	KW_ROLE_INTERNAL_USER_VIEWER,
	KW_ROLE_INTERNAL_USER,
	KW_ROLE_PROXY_ADMIN_VIEWER,
	KW_ROLE_PROXY_ADMIN
};

struct kw_caller {
	int known;			/* kw_auth_caller succeeded */
	int is_master;
	enum kw_role role;
	char token[KW_TOKEN_LEN + 1];	/* the caller's key hash; empty for the master key */
	char user_id[KW_ID_MAX + 1];	/* empty when the key has no user */
	char team_id[KW_ID_MAX + 1];	/* the key's team_id; empty when none */
	char key_type[16];		/* llm_api, management, read_only, default */
	int may_verify;			/* its permissions has "verify_keys": true */
	int may_select;			/* its permissions has "select_provider_keys": true */
	char venice_type[16];		/* a Venice key's apiKeyType (INFERENCE, ADMIN); "" otherwise */
};

const char *kw_auth_credential(struct kw_req *);
enum kw_err kw_auth_admin(struct kw_req *);
enum kw_err kw_auth_caller(struct kw_req *);
/* KW_OK for a caller who reads everything; 403 with refusal followed by its role otherwise. */
enum kw_err kw_auth_admin_view(struct kw_req *, const char *refusal);
int kw_auth_is_admin(const struct kw_caller *);		/* master or proxy_admin */
int kw_auth_reads_all(const struct kw_caller *);	/* admins and admin viewers */
enum kw_err kw_auth_can_write(struct kw_req *);	/* 403 for viewers and read_only keys */
const char *kw_auth_role_name(enum kw_role);
enum kw_role kw_auth_role_parse(const char *);
/* KW_OK when the caller may read (write=0) or change (write=1) the key; else 403 in req->err. */
enum kw_err kw_auth_key_access(struct kw_req *, struct __db_txn *, struct json_object *key,
    int write);

/* --- policy.c: who may change which field of a key or a team ------- */

/* A caller's standing toward one record; each allows what the ones below it allow. */
enum kw_standing {
	KW_STANDING_NONE = 0,	/* changes nothing */
	KW_STANDING_OWNER,	/* a personal key's user; a team's admins */
	KW_STANDING_ABOVE,	/* the level above: a team key's team admins; a team's organization admins */
	KW_STANDING_ADMIN	/* a proxy admin */
};
enum kw_policy_kind { KW_POLICY_KEY = 0, KW_POLICY_TEAM, KW_POLICY_VENICE, KW_POLICY_MEMBER };

/* The least standing that may set or change field (KW_STANDING_ADMIN for a field not listed). */
enum kw_standing kw_policy_need(enum kw_policy_kind, const char *field);
/*
 * KW_OK when standing may set every field of body (a request, borrowed)
 * on old (the stored record, borrowed; NULL for a new one): a field whose
 * value is what old holds changes nothing and passes.  KW_EFORBIDDEN with
 * req->err naming the first field it may not set.
 */
enum kw_err kw_policy_check(struct kw_req *, enum kw_policy_kind, enum kw_standing,
    struct json_object *old, struct json_object *body);
/* The caller's standing toward key (a record read in txn) into *out; a store error otherwise. */
enum kw_err kw_policy_key_standing(struct kw_req *, struct __db_txn *, struct json_object *key,
    enum kw_standing *out);
/* The caller's standing toward team, in org (its organization's record, or NULL). */
enum kw_standing kw_policy_team_standing(struct kw_req *, struct json_object *team,
    struct json_object *org);
/* The caller's standing toward a Venice key it may see: the master, the ADMIN key that made it, or its owner's. */
enum kw_standing kw_policy_venice_standing(struct kw_req *, struct json_object *key);
/*
 * The caller's standing toward user_id's membership of rec (a team, whose
 * organization is org, or an organization; org NULL): a proxy admin; above
 * it, the organization's org_admins and the record's admins toward another
 * member; the member itself (an admin toward its own membership) as owner.
 */
enum kw_standing kw_policy_member_standing(struct kw_req *, int is_team, struct json_object *rec,
    struct json_object *org, const char *user_id);

/* --- face.c: what the faces' handlers share ----------------------- */

/* One operation on one record: its id and its answer, rebuilt on every attempt of its transaction. */
struct kw_op;
/* An operation's transaction: op->answer is NULL on entry (reset on every attempt). */
typedef enum kw_err (*kw_op_body)(struct kw_req *, struct __db_txn *, struct kw_op *);
struct kw_op {
	struct kw_req *req;
	const char *id;			/* the record the operation is about; borrowed */
	struct json_object *answer;	/* owned */
	kw_op_body body;
};
/*
 * Who may call an operation: any known caller, one who may change things,
 * a proxy admin, one who reads everything (admins and admin viewers).
 */
enum kw_op_caller { KW_OP_READER = 0, KW_OP_WRITER, KW_OP_ADMIN, KW_OP_ADMIN_VIEW };
/* An operation that kw_face_op runs. */
struct kw_op_def {
	enum kw_op_caller who;
	kw_op_body body;
	const char *id_field;	/* the field naming op->id: the query's for GET, else the body's; NULL none */
	int new_id;		/* op->id is a new UUID when id_field is absent */
	const char *refusal;	/* KW_OP_ADMIN_VIEW's words to another caller, before its role */
};
/*
 * Checks the caller (401, 403), then runs def's body in one transaction
 * with an op about the record def names and answers its answer with 200;
 * on an error the answer is dropped and the error returned for the face's
 * envelope.
 */
enum kw_err kw_face_op(struct kw_req *, struct kw_resp *, const struct kw_op_def *);
/* Defines handler name as kw_face_op of the kw_op_def its other arguments initialize. */
#define KW_FACE_OP(name, ...) \
	enum kw_err name(struct kw_req *req, struct kw_resp *resp) \
	{ \
		static const struct kw_op_def def = { __VA_ARGS__ }; \
		return kw_face_op(req, resp, &def); \
	}

/* --- members.c: who belongs to what, kept on both sides --------------- */

/*
 * The tables whose records members.c reads and writes.  Teams and
 * organizations hold members (a team's members_with_roles with role admin
 * or user; an organization's members with a user_role); each member's
 * user record names them back (its teams; its organization_id).  Every
 * function runs in the caller's transaction unless it says otherwise, and
 * writes each record it changes with its audit entry.  Records and
 * strings passed in are borrowed.
 */
enum kw_members_table { KW_MEMBERS_TEAMS = 0, KW_MEMBERS_ORGS, KW_MEMBERS_USERS };

/* (face.c) */
/*
 * /team/member_update's and /organization/member_update's change to rec
 * (record id of the table, read for writing; org a team's organization or
 * NULL): the member the body names, the caller's standing toward it
 * (400, 403, 404, 403 by field), a budget_id that names no budget (400),
 * then its role and limits (kw_members_change).  *user_id
 * (request-owned) is the member's.
 */
enum kw_err kw_face_member_update(struct kw_req *, struct __db_txn *, enum kw_members_table,
    const char *id, struct json_object *rec, struct json_object *org, const char **user_id);

/* user_id's role in rec (NULL: none): a team's "admin" or "user", an org's user_role; NULL when no member. */
const char *kw_members_role(enum kw_members_table, struct json_object *rec, const char *user_id);
/* True when user_id is one of rec's admins: a team's admin, an organization's org_admin. */
int kw_members_is_admin(enum kw_members_table, struct json_object *rec, const char *user_id);
/* rec's members array (borrowed from rec), added when missing. */
struct json_object *kw_members_array(enum kw_members_table, struct json_object *rec);
/* KW_OK when the caller may see rec (admins, admin viewers, its members); 403 naming its id else. */
enum kw_err kw_members_may_see(struct kw_req *, enum kw_members_table, struct json_object *rec);
/* KW_OK when the caller may change rec's members (a proxy admin, one of its admins); 403 else. */
enum kw_err kw_members_may_manage(struct kw_req *, enum kw_members_table, struct json_object *rec);

/* Reads record id into *rec (owned); KW_ENOTFOUND (404 naming field) when there is none. */
enum kw_err kw_members_get(struct kw_req *, struct __db_txn *, enum kw_members_table,
    const char *id, int flags, const char *field, struct json_object **rec);
/*
 * Reads record id into *rec (owned) when the caller may see it, or with
 * manage for writing when they may manage its members: 404 naming field,
 * then 403 (kw_members_may_see, kw_members_may_manage).
 */
enum kw_err kw_members_open(struct kw_req *, struct __db_txn *, enum kw_members_table,
    const char *id, const char *field, int manage, struct json_object **rec);
/* KW_OK when org_id (NULL: none) names an organization; 400 naming organization_id, LiteLLM's words, else. */
enum kw_err kw_members_org_known(struct kw_req *, struct __db_txn *, const char *org_id);
/* KW_OK when no record has id; KW_ECONFLICT (400 naming the id field) when one has. */
enum kw_err kw_members_absent(struct kw_req *, struct __db_txn *, enum kw_members_table,
    const char *id);
/* Stores rec as record id with its audit entry: created when before is NULL (KW_ECONFLICT if id exists), else updated. */
enum kw_err kw_members_write(struct kw_req *, struct __db_txn *, enum kw_members_table,
    const char *id, struct json_object *before, struct json_object *rec);
/* kw_members_write of a change from before, with updated_at set to now. */
enum kw_err kw_members_update(struct kw_req *, struct __db_txn *, enum kw_members_table,
    const char *id, struct json_object *before, struct json_object *rec);
/* What goes with record id (rec) of a table when it is deleted; counts the keys it deletes into *keys. */
typedef enum kw_err (*kw_members_drop)(struct kw_req *, struct __db_txn *, const char *id,
    struct json_object *rec, int64_t *keys);
/*
 * Deletes every record of the table that ids (an array of strings) names,
 * all or nothing: each is read for writing first (404 naming field[i] for
 * the first one missing), then drop takes away what hangs on it and the
 * record goes, a team's or an organization's members' users first
 * leaving it, with its audit entry.  *recs (owned; NULL on error) are the
 * records as they were, each once.
 */
enum kw_err kw_members_delete_all(struct kw_req *, struct __db_txn *, enum kw_members_table,
    struct json_object *ids, const char *field, kw_members_drop drop, int64_t *keys,
    struct json_object **recs);
/*
 * The transaction of /team/delete and /user/delete: kw_members_delete_all
 * of the ids the body's field lists; op->answer is {"deleted_teams" (or
 * "deleted_users"): their ids, "deleted_keys": how many keys went}, as
 * LiteLLM answers.
 */
enum kw_err kw_members_delete_listed(struct kw_req *, struct __db_txn *, struct kw_op *,
    enum kw_members_table, const char *field, kw_members_drop drop);

/*
 * Adds member (a TeamMember or OrganizationMember) to rec, a record being
 * written and not yet stored: the user by user_id, else by user_email,
 * created when unknown, is stored naming rec on its side.  The entry
 * takes the membership limits settings (a request; NULL: none) sends: a
 * team's max_budget_in_team and budget_id.  The stored user is appended
 * to updated_users unless NULL.  KW_EINVAL or KW_ECONFLICT naming field.
 */
enum kw_err kw_members_add(struct kw_req *, struct __db_txn *, enum kw_members_table,
    struct json_object *rec, struct json_object *member, const char *field,
    struct json_object *settings, struct json_object *updated_users);
/* kw_members_add of one member (field), an array (field[i]) or NULL (none); *added counts them. */
enum kw_err kw_members_add_each(struct kw_req *, struct __db_txn *, enum kw_members_table,
    struct json_object *rec, struct json_object *members, const char *field,
    struct json_object *settings, struct json_object *updated_users, size_t *added);
/* Adds user (a record the caller stores naming rec) to rec (record id, read for writing) and stores rec. */
enum kw_err kw_members_join(struct kw_req *, struct __db_txn *, enum kw_members_table,
    const char *id, struct json_object *rec, struct json_object *user);
/* The member of rec named by user_id, else by email, into *found (arena), NULL when none. */
enum kw_err kw_members_find(struct kw_req *, struct __db_txn *, enum kw_members_table,
    struct json_object *rec, const char *user_id, const char *email, const char **found);
/*
 * Removes the member of rec (record id, read for writing) named by
 * user_id, else email, from both sides; *removed (arena) is its user_id.
 * KW_ENOTFOUND naming user_id (or user_email) when no member matches.
 */
enum kw_err kw_members_remove(struct kw_req *, struct __db_txn *, enum kw_members_table,
    const char *id, struct json_object *rec, const char *user_id, const char *email,
    const char **removed);
/*
 * Changes the member entry of user_id in rec (a record of t read for
 * writing) to what settings (a request) sends, null or absent leaving a
 * field as it is: its role, its max budget (a team's max_budget_in_team,
 * an organization's max_budget_in_organization) and a team's budget_id;
 * stores rec with its audit entry.  Nothing is written when nothing
 * changes, or user_id is no member.
 */
enum kw_err kw_members_change(struct kw_req *, struct __db_txn *, enum kw_members_table,
    const char *id, struct json_object *rec, const char *user_id, struct json_object *settings);
/* The member entry of user_id in rec (borrowed from rec), or NULL. */
struct json_object *kw_members_entry(enum kw_members_table, struct json_object *rec,
    const char *user_id);
/* Into *ids (owned array), the ids of the records of the table whose field is value, in txn. */
enum kw_err kw_members_ids_where(struct kw_req *, struct __db_txn *, enum kw_members_table,
    const char *field, const char *value, struct json_object **ids);
/*
 * The entry of user_id in rec as LiteLLM answers a membership, read in
 * txn, into *out (owned; NULL when not a member): user_id, the record's
 * id, budget_id, spend (a team membership's, kw_limits_member_spend; an
 * organization's 0) and litellm_budget_table: the budget budget_id names
 * (its LiteLLM_BudgetTable row) with the entry's own max budget as its
 * max_budget, {"max_budget"} of the own one alone, null when neither; an
 * organization's also user_role, created_at and updated_at.
 */
enum kw_err kw_members_membership(struct kw_req *, struct __db_txn *, enum kw_members_table,
    struct json_object *rec, const char *user_id, struct json_object **out);
enum kw_err kw_members_leave(struct kw_req *, struct __db_txn *, enum kw_members_table,
    const char *id, const char *user_id);
/* kw_members_leave of every record of the table that user_id is a member of (a scan). */
enum kw_err kw_members_forget_user(struct kw_req *, struct __db_txn *, enum kw_members_table,
    const char *user_id);
/*
 * Into *out (owned array; NULL on error), in id order and in a transaction
 * of its own, the records user_id (NULL: anyone; "": no one) is a member
 * of whose field (NULL: any) is value, budgets settled for display.
 */
enum kw_err kw_members_list(struct kw_req *, enum kw_members_table, const char *user_id,
    const char *field, const char *value, struct json_object **out);

/*
 * Copies into rec the settings of fields (n of them) that body sends,
 * except skip (NULL: none); null becomes the field's default (models [],
 * metadata {}, blocked false, user_role internal_user, spend 0; else
 * null).  budget_duration recomputes budget_reset_at from now.
 */
void kw_members_apply(struct kw_req *, struct json_object *rec, struct json_object *body,
    const char *const *fields, size_t n, const char *skip);
/* Adds a new team's or user's budget and rate fields to rec: unset, spend 0. */
void kw_members_limits_new(struct json_object *rec);
/* A new user record (owned), every field at its default; the caller stores it. */
struct json_object *kw_members_user_new(struct kw_req *, const char *user_id,
    const char *user_email);
/* The first user, in user_id order, whose user_email is email (case ignored); *user_id in the arena; KW_ENOTFOUND. */
enum kw_err kw_members_user_by_email(struct kw_req *, struct __db_txn *, const char *email,
    const char **user_id);
/* KW_OK when no user but self (NULL: any) has email (NULL passes); KW_ECONFLICT naming field. */
enum kw_err kw_members_email_free(struct kw_req *, struct __db_txn *, const char *email,
    const char *self, const char *field);

/* --- audit.c: who changed what ------------------------------------ */

/* The table names of audit entries, LiteLLM's. */
#define KW_TABLE_KEYS "LiteLLM_VerificationToken"
#define KW_TABLE_TEAMS "LiteLLM_TeamTable"
#define KW_TABLE_USERS "LiteLLM_UserTable"
#define KW_TABLE_ORGS "LiteLLM_OrganizationTable"
#define KW_TABLE_BUDGETS "LiteLLM_BudgetTable"
#define KW_TABLE_END_USERS "LiteLLM_EndUserTable"
#define KW_TABLE_VENICE "Venice_ApiKey"
#define KW_TABLE_PROVIDERS "Bifrost_Provider"
#define KW_TABLE_PROVIDER_KEYS "Bifrost_ProviderKey"

enum kw_err kw_audit_record(struct kw_req *, struct __db_txn *, const char *action,
    const char *table, const char *object_id, struct json_object *before,
    struct json_object *after);

/* --- face_litellm.c: what the team and user operations share with the key operations */

/*
 * Builds a key from settings (a GenerateKeyRequest-shaped object,
 * borrowed), checks it against its team's models and budget, stores it
 * and its audit entry in txn.  *answer (owned) is the record plus the
 * plaintext "key" and "token_id": the one place a plaintext key exists.
 * Permission checks are the caller's.  KW_ECONFLICT, KW_EINVAL with
 * req->err naming the field.
 */
enum kw_err kw_litellm_key_create(struct kw_req *, struct __db_txn *, struct json_object *settings,
    struct json_object **answer);
/* The key record as shown to callers (owned): budget resets applied, no plaintext. */
struct json_object *kw_litellm_key_view(struct kw_req *, struct json_object *rec);
/* The /user/info ('u') or /team/info ('t') answer (owned): the owner rec (taken) and the keys the caller may read. */
enum kw_err kw_litellm_owner_info(struct kw_req *, struct __db_txn *, char kind, const char *id,
    struct json_object *rec, struct json_object **answer);

/* face_bifrost.c: what the relay reads of a provider's configuration */
/*
 * In txn, provider's network_config as Bifrost's NetworkConfig names it,
 * every field filled (owned object, *network_config): base_url (absent
 * when none is configured: the base type's own API), extra_headers
 * (absent when none; name -> value, unsealed: the caller wipes what may be
 * a credential before it releases it), default_request_timeout_in_seconds
 * (30 by default), max_retries (0), retry_backoff_initial and
 * retry_backoff_max (milliseconds; 500 and 5000).  base_type (n bytes)
 * gets the API it speaks: a standard provider's own name, a custom one's
 * base_provider_type.  A standard provider with no configuration answers
 * the defaults.  KW_ENOTFOUND (req->err naming "provider") when provider
 * is neither standard nor a configured custom one; a store error else.
 */
enum kw_err kw_provider_network(struct kw_req *, struct __db_txn *, const char *provider,
    struct json_object **network_config, char *base_type, size_t n);
/*
 * In txn, the key of provider that POST /api/providers/{provider}/keys/select
 * would choose for model (*key owned, secrets resolved in clear: release it
 * with kw_provider_key_release, which wipes them): {id, name, provider,
 * value, weight, aliases and use_anthropic_endpoints when set, the configs
 * it has}.  The one selection: by weight among the enabled keys that allow
 * model and do not blacklist it.  provider NULL: every provider's keys
 * whose models list names model.  Keys whose ids tried (borrowed array;
 * NULL none) holds are passed over while another qualifies (the relay's
 * failover).  A keyless custom provider answers KW_OK with *key NULL (it
 * is called without a credential).  KW_ENOTFOUND (req->err naming
 * "provider", or "model" when no key qualifies); a store error else.  It
 * counts and logs nothing: the caller does.
 */
enum kw_err kw_provider_key_select(struct kw_req *, struct __db_txn *, const char *provider,
    const char *model, struct json_object *tried, struct json_object **key);
void kw_provider_key_release(struct json_object *key);	/* wipes its secrets, then puts it */

/* face_budget.c: what the customer operations share with the budget operations */
int kw_budget_fields_in(struct json_object *body);	/* names a BudgetNewRequest field */
enum kw_err kw_budget_create(struct kw_req *, struct __db_txn *, const char *id,
    struct json_object *settings, struct json_object **out);
enum kw_err kw_budget_change(struct kw_req *, struct __db_txn *, const char *id,
    struct json_object *settings, const char *field, struct json_object **out);
/* KW_OK when body's budget_id (NULL or null: none) names a budget; 400 naming budget_id else. */
enum kw_err kw_budget_named(struct kw_req *, struct __db_txn *, struct json_object *body);

/* face_team.c: what the organization operations share with the team operations */
enum kw_err kw_team_drop(struct kw_req *, struct __db_txn *, const char *team_id,
    struct json_object *team, int64_t *keys);	/* a kw_members_drop: the team's keys */

/* face_user.c: what the team and organization operations share with the user operations */
const char *kw_id_or_new(const char *given, char buf[37]);	/* given, or a new UUID in buf */
enum kw_err kw_keys_delete_owned(struct kw_req *, struct __db_txn *, char kind, const char *id,
    const char *only_user, int64_t *deleted);

/* --- limits.c: every limit a key carries, on counters shared by all workers --- */

enum kw_verdict_code {
	KW_V_VALID = 0,
	KW_V_NOT_FOUND,
	KW_V_BLOCKED,
	KW_V_EXPIRED,
	KW_V_TEAM_BLOCKED,
	KW_V_USER_BLOCKED,
	KW_V_MODEL_NOT_ALLOWED,
	KW_V_ROUTE_NOT_ALLOWED,
	KW_V_BUDGET_EXCEEDED,
	KW_V_RATE_LIMITED,
	KW_V_DUPLICATE_REQUEST,		/* a request_id already in flight or reported for this key */
	KW_V_USD_LIMIT,			/* a Venice key's usd consumption limit is spent (402) */
	KW_V_DIEM_LIMIT,		/* a Venice key's diem consumption limit is spent (402) */
	KW_V_END_USER_BLOCKED		/* the request's end user (LiteLLM customer) is blocked */
};

/* A request about to be made with a presented key. */
struct kw_check {
	const char *key;		/* the plaintext presented; hashed, never read as a hash */
	const char *model;		/* NULL when unknown */
	const char *route;		/* NULL when unknown */
	const char *request_id;		/* the gateway's; generated for a lease when NULL */
	double expected_cost;		/* reserved against every budget until settled */
	int64_t expected_tokens;	/* checked against tpm windows */
	int dry_run;			/* count and reserve nothing */
	int verdict_only;		/* build no answer: the authorizer needs the verdict alone */
	const char *end_user;		/* the request's end user (LiteLLM's customer); NULL none */
};

/* One rate window for the x-ratelimit-* headers; limit < 0 when the key has none. */
struct kw_rate {
	int64_t limit, remaining;
	time_t reset;
};

struct kw_verdict {
	enum kw_verdict_code code;
	const char *limit;		/* the limit that refused; static; NULL when none */
	const char *error_type;		/* LiteLLM's error type for the refusal; static; NULL: none */
	char message[KW_MESSAGE_MAX];	/* never holds a key */
	int retry_after;		/* seconds, with KW_V_RATE_LIMITED */
	char token[KW_TOKEN_LEN + 1];	/* "" when not found */
	char user_id[KW_ID_MAX + 1], team_id[KW_ID_MAX + 1];
	char request_id[KW_REQUEST_ID_BYTES + 1];	/* the lease taken; "" when none */
	struct kw_rate requests, tokens;
	struct printbuf *answer;	/* owned: the /key/verify answer's text; NULL with verdict_only */
};

/* What a request used, reported after it. */
struct kw_usage {
	const char *key;		/* plaintext or hash */
	const char *request_id, *model;	/* NULL when not given */
	int64_t tokens;			/* prompt + completion (or total) */
	double cost;			/* usd */
	double diem;			/* Venice's second currency */
	const char *end_user;		/* the request's end user; NULL none */
	int flush_after_answer;		/* the relay's settlement: KW_TXN_FLUSH_AFTER_ANSWER */
};

/* The API tier a Venice answer names (apiTier.id, rateLimitTier): one tier, charged per use. */
#define KW_VENICE_TIER "paid"

/* A Venice key's consumption: in its current limitPeriod, and over the trailing seven days. */
struct kw_venice_usage {
	double period_usd, period_diem;
	double week_usd, week_diem;
	time_t period_start, period_end;	/* end 0 for LIFETIME */
	time_t last_used;			/* the last VALID verdict or usage report; 0 never */
};

const char *kw_verdict_code_name(enum kw_verdict_code);
/* True when models (a key's or team's list) allow model; "all-team-models" defers to team_models. */
int kw_limits_models_allow(struct json_object *models, struct json_object *team_models,
    const char *model);
/*
 * The model asked resolves to, as LiteLLM's model_alias_map: the team's
 * model_aliases first (*team_alias set), then the key's aliases; asked
 * itself when neither maps it.  Borrowed from the records or asked.
 */
const char *kw_limits_model_resolve(struct json_object *key, struct json_object *team,
    const char *asked, int *team_alias);
/* The path a server hands on for a request path as sent; dot segments and encoded separators refused. */
enum kw_err kw_limits_route_path(const char *raw, size_t n, char *out, const char **why);
/* True when a key's allowed_routes (empty: all) let a request to raw, its path as sent, through. */
int kw_limits_routes_allow(struct json_object *routes, const char *raw);
enum kw_err kw_limits_check(struct kw_store *, time_t now, const struct kw_check *,
    struct kw_verdict *out);
void kw_verdict_clear(struct kw_verdict *);
enum kw_err kw_limits_record(struct kw_store *, time_t now, const struct kw_usage *,
    struct json_object **answer, struct kw_error *err);
enum kw_err kw_limits_maintain(struct kw_store *, time_t now);
/* A new end user's record (owned): LiteLLM_EndUserTable's fields, spend 0, not blocked. */
struct json_object *kw_limits_end_user_new(const char *user_id);
/* Resets end user rec's spend when its budget's budget_duration fell due (budget may be NULL). */
int kw_limits_end_user_settle(struct json_object *rec, struct json_object *budget, time_t now);
/*
 * What user_id's keys in team_id spent in the membership's budget period
 * as of now, into *spend, in txn (LiteLLM's LiteLLM_TeamMembership.spend).
 */
enum kw_err kw_limits_member_spend(struct kw_store *, struct __db_txn *, const char *team_id,
    const char *user_id, time_t now, double *spend);
/* Counts one event in the fixed UTC minute of now under name unless limit are counted (*allowed 0). */
enum kw_err kw_limits_window_add(struct kw_store *, struct __db_txn *, const char *name, time_t now,
    double limit, int *allowed);
enum kw_err kw_limits_venice_usage(struct kw_store *, struct __db_txn *, struct json_object *key,
    time_t now, struct kw_venice_usage *out);
enum kw_err kw_limits_summary_write(struct kw_store *, struct __db_txn *, enum kw_db,
    const char *id, struct json_object *rec);

/* --- spend.c: settled usage per UTC hour, key, model and end user ---- */

#define KW_SPEND_HOUR 3600
/* Adds in's cost, tokens and one request to its hour's row for key (the record, borrowed), in txn. */
enum kw_err kw_spend_record(struct kw_store *, struct __db_txn *, time_t now, const char *token,
    struct json_object *key, const struct kw_usage *in);
/*
 * Calls visit with each hourly row (borrowed: hour, api_key, user,
 * team_id, model, end_user, spend, total_tokens, api_requests,
 * request_id) of the hours from .. until (exclusive), oldest first, in
 * txn, until it returns non-zero.
 */
typedef int (*kw_spend_visit)(struct json_object *row, void *baton);
enum kw_err kw_spend_rows(struct kw_store *, struct __db_txn *, time_t from, time_t until,
    kw_spend_visit, void *baton);

/* --- tokens.c: signed expiry tokens -------------------------------- */

/*
 * A provisioned key is "sk-kw1_" and base64url of kid(4) || id(16) ||
 * expiry(8, big-endian) || HMAC-SHA256(signing key, "kw1" || those)[0..16).
 * Anyone holding the signing keys checks it without the store.
 */
#define KW_TOKEN_PREFIX "sk-kw1_"
enum kw_token_check {
	KW_TOKEN_NOT_SIGNED = 0,	/* not a signed token: an ordinary key */
	KW_TOKEN_GOOD,			/* signature good, not expired: check revocation in the store */
	KW_TOKEN_FORGED,		/* malformed, unknown signing key, or a bad signature */
	KW_TOKEN_EXPIRED
};
enum kw_err kw_tokens_issue(time_t expires, char *out, size_t n);
enum kw_token_check kw_tokens_check(const char *presented, time_t now);
enum kw_err kw_tokens_rotate(void);	/* a new current signing key; the old ones stay for checking */

/* --- clock --------------------------------------------------------- */

time_t kw_clock_now(void);	/* time(NULL), or KEYWARDEN_CLOCK_FILE's for tests */
#define KW_TIME_MAX ((time_t)253402300799)	/* 9999-12-31T23:59:59Z: the last RFC 3339 second */
void kw_time_format(time_t t, char out[KW_TIME_LEN]);	/* clamped to 1970 .. KW_TIME_MAX */
enum kw_err kw_time_parse(const char *s, time_t *out);
enum kw_err kw_time_parse_duration(const char *s, time_t from, time_t *until);
time_t kw_time_budget_reset(const char *duration, time_t now);

/* --- authz.c: the FastCGI AUTHORIZER role -------------------------- */

enum kw_err kw_authorize(struct kw_req *, struct kw_resp *);
/* Sets resp to the LiteLLM refusal of a verdict that is not VALID: status, envelope, headers. */
void kw_authz_refusal(struct kw_req *, struct kw_resp *, const struct kw_verdict *);
/* The OpenAI-style x-ratelimit-* headers of the verdict's windows, on any answer. */
void kw_authz_rate_headers(struct kw_req *, struct kw_resp *, const struct kw_verdict *);

/* --- relay.c: OpenAI-compatible model calls relayed to the providers --- */

/* True for the relay's routes, whose handlers judge the key through the limits engine. */
int kw_relay_route(const struct kw_route *);
/* 401 (req->err) for a relay route's missing, unknown, blocked or expired key; nothing counted. */
enum kw_err kw_relay_authenticate(struct kw_req *);
/* The worker's HTTP client handle (libcurl, initialised once), reset for a new request; NULL on failure. */
void *kw_http_client(void);

/* --- group.c: a replicated group of sites (Berkeley DB's replication manager) --- */

struct json_object;
enum kw_err kw_group_parse(const char *sites, const char *self);	/* config.c's */
int kw_group_enabled(void);
const char *kw_group_self_url(void);		/* this site's API URL; NULL alone */
void kw_group_prepare_env(struct __db_env *);	/* every handle, before it opens */
enum kw_err kw_group_init_shared(void);		/* the pool manager, before it forks */
int kw_group_replicator_main(void);		/* the replicator process; its exit status */
void kw_group_replicator_gone(void);
void kw_group_attach(struct kw_store *);	/* a worker, once the replicator listens */
int kw_group_worker_stale(void);		/* the membership changed since: reopen */
void kw_group_detach(struct __db_env *);	/* kw_store_close's, before the handle goes */
void kw_group_commit_begin(void);
int kw_group_commit_acknowledged(void);
struct json_object *kw_group_health(struct kw_store *);	/* NULL when alone */
/* Answers the request with the master's answer to it; KW_EUNAVAIL (req->err) when there is none. */
enum kw_err kw_group_forward(struct kw_req *, struct kw_resp *);

/* --- metrics.c and the access log: what the requests did ------------ */

/*
 * Counters for GET /metrics, updated with atomic adds and no locks.  The
 * pool manager calls kw_metrics_init before it forks, so every worker (and
 * the manager) counts into one shared region; without a pool (unit tests,
 * fuzz targets) they count into this process's memory.
 */
enum kw_err kw_metrics_init(void);
/* authorizer: the request asked as an authorizer (counted as route "authorizer") */
void kw_metrics_request(const struct kw_req *, int status, double secs);
void kw_metrics_verdict(enum kw_verdict_code);
int kw_metrics_token_presented(struct kw_req *);	/* the metrics token is the credential */
void kw_metrics_txn(int committed);		/* a transaction ended: committed or aborted */
void kw_metrics_deadlock_retry(void);
void kw_metrics_provider_key_selection(void);
void kw_metrics_worker_restart(void);
void kw_metrics_workers(unsigned live);
void kw_metrics_pool(unsigned cap, unsigned (*busy)(void));	/* the manager, before it forks */
const char *kw_metrics_method(const char *method);	/* a known method's name, or "OTHER" */
/* The verdict a request reached and the key it was about, for its access line. */
void kw_log_verdict(enum kw_verdict_code, const char *token);
void kw_log_access(const struct kw_req *, int status, double secs);

/* --- cli.c: the operator's commands; main.c parses and dispatches ---- */

/* A command line, parsed; a command reads only the fields it takes. */
struct kw_cli_opts {
	const char *data_dir;		/* -d; NULL: KEYWARDEN_DATA_DIR, then ./var */
	const char *output;		/* export -o FILE */
	const char *data_key;		/* import --data-key FILE: the source's data.key */
	int dry_run;			/* import --dry-run: check and count, write nothing */
	long grace;			/* master-key rotate --grace SECONDS: the old key's */
	const char *command;		/* the command's name: "key create" */
	const char *url;		/* --url: a keywarden over HTTP instead of DATA_DIR */
	const char *team_id, *role;	/* --team-id, --role */
	int json;			/* --json: the API's answer as it is */
	const char *alias, *user_id;	/* admin-key create --alias, --user-id */
	const char *socket_path, *port;	/* serve -s, -p */
	unsigned workers;		/* serve -w; 0: the setting */
	char **args;			/* the operands */
	int nargs;
};
/* Each returns the exit status: 0 done, 1 failed (said on stderr). */
int kw_cli_init(const struct kw_cli_opts *);
int kw_cli_version(const struct kw_cli_opts *);
int kw_cli_master_key_show(const struct kw_cli_opts *);
int kw_cli_manage(const struct kw_cli_opts *);	/* key, team, user ... */
int kw_cli_master_key_rotate(const struct kw_cli_opts *);
int kw_cli_signing_key_show(const struct kw_cli_opts *);
int kw_cli_signing_key_rotate(const struct kw_cli_opts *);
int kw_cli_admin_key_create(const struct kw_cli_opts *);
int kw_cli_backup(const struct kw_cli_opts *);
int kw_cli_restore(const struct kw_cli_opts *);
int kw_cli_verify(const struct kw_cli_opts *);
int kw_cli_export(const struct kw_cli_opts *);
int kw_cli_import(const struct kw_cli_opts *);
int kw_cli_group(const struct kw_cli_opts *);	/* group status, group remove */
/* Loads the settings and libgcrypt for a command; 0, or 1 said on stderr. */
int kw_cli_setup(const char *data_dir);

/* config.c: the master key's source, rotation, and its rereading by running workers */
const char *kw_config_master_key_setting(void);	/* NULL: DATA_DIR/master.key */
enum kw_err kw_config_master_key_rotate(char *out, size_t n, long grace_secs);
int kw_config_master_key_retired(const char *presented);	/* the old key, in its grace */
void kw_config_master_key_id(const char *key, char id[9]);	/* 8 hex of its SHA-256 */
void kw_config_master_key_announce(void);	/* at start: master-key.in-use, master.key ignored */
void kw_config_master_key_unannounce(void);
long kw_config_master_key_served(char source[32], char id[9]);	/* a serving pid, or 0 */
void kw_config_master_key_refresh(void);
#define KW_MASTER_KEY_STRONG 20	/* below this many characters a master key is warned of */
void kw_config_master_key_warn(void);	/* once at start: a weak master key, never the key */
#define KW_VERSION_PARTS 8	/* up to seven numbers and the release/pre-release slot */
int kw_version_parse(const char *s, unsigned long parts[KW_VERSION_PARTS]);

/* store.c: what the operator's tools need of the environment */
unsigned kw_store_refused_schema(void);	/* a newer schema the last open refused; 0 none */
const char *kw_store_db_file(enum kw_db);
enum kw_err kw_store_backup(struct kw_store *, const char *target);
enum kw_err kw_store_recover_copy(const char *dir);
enum kw_err kw_store_verify_copy(const char *dir,
    void (*report)(const char *file, enum kw_err, void *), void *baton);

/* --- pool.c --------------------------------------------------------- */

enum kw_err kw_pool_run(int listen_fd, unsigned workers);

#endif /* KW_H */
