/* cli.c: the operator's commands: the data directory and its secrets, admin keys, backups, verification, export and import, and keys, teams and users on the data directory or over HTTP. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <db.h>
#include <fcgiapp.h>
#include <json-c/json.h>

#include "kw.h"

#define CLI_USER "keywarden-cli"		/* who the audit trail says changed things from here */
#define DEFAULT_ADMIN_USER "keywarden-admin"
#define MAX_ANSWER (64 << 20)			/* bytes of an HTTP answer read */
#define SHOWN_TOKEN 12				/* hex characters of a token said in a message */

/* The files of a data directory that are not the environment's: the secrets and the settings. */
static const char *const secret_files[] = {
	"data.key", "signing.key", "master.key", "keywarden.conf",
};
#define NSECRETS (sizeof(secret_files) / sizeof(secret_files[0]))

int
kw_cli_setup(const char *data_dir)
{
	if (kw_config_load(data_dir) != KW_OK)
		return 1;
	if (kw_crypto_init() != KW_OK) {
		fprintf(stderr, "keywarden: libgcrypt failed to initialise\n");
		return 1;
	}
	/* money and counts as people write them: 0.7, not 0.69999999999999996 */
	json_c_set_serialization_double_format("%.15g", JSON_C_OPTION_GLOBAL);
	return 0;
}

/* Ends a command: the master key leaves memory; returns rc. */
static int
finish(int rc)
{
	kw_crypto_wipe(kw_config.master_key, sizeof(kw_config.master_key));
	return rc;
}

/* 0 when the data directory has been initialised; quiet. */
static int
need_data_dir_quiet(void)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/data.key", kw_config.data_dir);
	return access(path, F_OK) == 0 ? 0 : 1;
}

/* 0 when the data directory has been initialised (its data.key exists); says so otherwise. */
static int
need_data_dir(void)
{
	if (need_data_dir_quiet() == 0)
		return 0;
	fprintf(stderr, "keywarden: %s is not an initialised data directory (no data.key): "
	    "run keywarden init -d %s first\n", kw_config.data_dir, kw_config.data_dir);
	return 1;
}

/* Opens the store of dir as a tool (recovering, migrating); says why not on stderr. */
static int
open_store(const char *dir, struct kw_store **st)
{
	unsigned newer;

	if (kw_store_open(st, dir, KW_STORE_TOOL) == KW_OK)
		return 0;
	if ((newer = kw_store_refused_schema()) != 0)
		fprintf(stderr, "keywarden: %s has schema version %u, written by a newer keywarden; "
		    "this keywarden %s reads schema %d and older\n", dir, newer, KW_VERSION,
		    KW_SCHEMA_VERSION);
	else
		fprintf(stderr, "keywarden: cannot open the store in %s (see the log above)\n", dir);
	return 1;
}

/*
 * A request as the command line makes one, so key and user changes go
 * through the same code as the API's: no FastCGI parameters, a proxy admin
 * caller named CLI_USER, which the audit trail and created_by record.
 */
struct cli_req {
	struct kw_req req;
	struct kw_caller caller;
	FCGX_Request fcgi;
};

static char *no_params[] = { NULL };

static int
cli_req_init(struct cli_req *c, struct kw_store *st)
{
	memset(c, 0, sizeof(*c));
	c->fcgi.envp = no_params;
	c->req.fcgi = &c->fcgi;
	c->req.store = st;
	c->req.now = kw_clock_now();
	c->req.method = "CLI";
	c->req.path = "";
	c->caller.known = 1;
	c->caller.role = KW_ROLE_PROXY_ADMIN;
	snprintf(c->caller.user_id, sizeof(c->caller.user_id), "%s", CLI_USER);
	snprintf(c->caller.key_type, sizeof(c->caller.key_type), "default");
	c->req.caller = &c->caller;
	if ((c->req.arena = kw_arena_new()) == NULL) {
		fprintf(stderr, "keywarden: out of memory\n");
		return 1;
	}
	return 0;
}

/* Says an operation's error: the field and message when it has them. */
static void
say_error(const char *what, enum kw_err rc, const struct kw_error *err)
{
	if (err != NULL && err->message[0] != '\0')
		fprintf(stderr, "keywarden: %s: %s%s%s\n", what, err->field,
		    err->field[0] != '\0' ? ": " : "", err->message);
	else
		fprintf(stderr, "keywarden: %s: %s\n", what, kw_err_name(rc));
}

/*
 * Reads the user user_id, or creates it with role (audited) when missing.
 * *role_out, when not NULL, gets the role it has (n bytes).
 */
static enum kw_err
ensure_user(struct kw_req *req, DB_TXN *txn, const char *user_id, const char *role,
    char *role_out, size_t n)
{
	json_object *user;
	const char *have;
	enum kw_err rc;

	rc = kw_rec_get(req->store, txn, KW_DB_USERS, user_id, KW_RMW, &user);
	if (rc == KW_OK) {
		have = kw_json_str(user, "user_role");
		if (role_out != NULL)
			snprintf(role_out, n, "%s", have != NULL ? have : "internal_user");
		json_object_put(user);
		return KW_OK;
	}
	if (rc != KW_ENOTFOUND)
		return rc;
	user = kw_members_user_new(req, user_id, NULL);
	json_object_object_add(user, "user_role", json_object_new_string(role));
	if ((rc = kw_rec_put(req->store, txn, KW_DB_USERS, user_id, user, 1)) == KW_OK)
		rc = kw_audit_record(req, txn, "created", KW_TABLE_USERS, user_id, NULL, user);
	json_object_put(user);
	if (role_out != NULL)
		snprintf(role_out, n, "%s", role);
	return rc;
}

/* --- init, version, the secrets ------------------------------------ */

int
kw_cli_init(const struct kw_cli_opts *o)
{
	struct kw_store *st;

	if (kw_cli_setup(o->data_dir) != 0)
		return 1;
	if (kw_config_init_data_dir(1) != KW_OK || open_store(kw_config.data_dir, &st) != 0)
		return finish(1);
	kw_store_close(st);
	printf("keywarden: data directory %s is ready\n", kw_config.data_dir);
	return finish(0);
}

int
kw_cli_version(const struct kw_cli_opts *o)
{
	(void)o;
	printf("keywarden %s (schema %d, spec %.12s)\n", KW_VERSION, KW_SCHEMA_VERSION,
	    kw_gen_spec_sha256);
	return 0;
}

/*
 * What a serving keywarden accepts, when one serves the data directory and
 * takes its master key from a setting this process may not see (its own
 * environment, say): 1 with source and the key's id, else 0.
 */
static int
served_from_setting(char source[32], char id[9], long *pid)
{
	*pid = kw_config_master_key_served(source, id);
	return *pid > 0 && strcmp(source, "master.key") != 0;
}

int
kw_cli_master_key_show(const struct kw_cli_opts *o)
{
	char source[32], id[9], mine[9] = "";
	long pid;

	if (kw_cli_setup(o->data_dir) != 0)
		return 1;
	if (kw_config.master_key[0] != '\0')
		kw_config_master_key_id(kw_config.master_key, mine);
	if (served_from_setting(source, id, &pid) && strcmp(id, mine) != 0) {
		/* master.key, or this shell's variable, is not what the server takes */
		fprintf(stderr, "keywarden: the keywarden serving %s (pid %ld) accepts the master key "
		    "set in its %s (id %s), which this command cannot read%s: not showing another "
		    "key\n", kw_config.data_dir, pid, source, id,
		    kw_config_master_key_setting() == NULL ? "; master.key is ignored" : "");
		return finish(1);
	}
	if (kw_config.master_key[0] == '\0') {
		fprintf(stderr, "keywarden: no master key: KEYWARDEN_MASTER_KEY is unset and "
		    "%s/master.key is missing or empty\n", kw_config.data_dir);
		return finish(1);
	}
	if (pid > 0 && kw_config_master_key_setting() != NULL && strcmp(id, mine) != 0) {
		fprintf(stderr, "keywarden: the keywarden serving %s (pid %ld) accepts master.key "
		    "(id %s), not the KEYWARDEN_MASTER_KEY of this environment\n",
		    kw_config.data_dir, pid, id);
		return finish(1);
	}
	fprintf(stderr, "keywarden: the master key (id %s), from %s%s:\n", mine,
	    kw_config_master_key_setting() ? kw_config_master_key_setting() : "master.key",
	    pid > 0 ? ", as the running keywarden accepts it" : "");
	/* the one deliberate place the master key is shown */
	printf("%s\n", kw_config.master_key);
	return finish(0);
}

int
kw_cli_master_key_rotate(const struct kw_cli_opts *o)
{
	char key[128], source[32], id[9];
	const char *owner;
	long pid;

	if (kw_cli_setup(o->data_dir) != 0)
		return 1;
	if ((owner = kw_config_master_key_setting()) != NULL) {
		fprintf(stderr, "keywarden: the master key is KEYWARDEN_MASTER_KEY, set in %s: "
		    "change it there and restart keywarden; not rotating\n", owner);
		return finish(1);
	}
	if (served_from_setting(source, id, &pid)) {
		/* rotating master.key would report a change the server never sees */
		fprintf(stderr, "keywarden: the keywarden serving %s (pid %ld) takes its master key "
		    "from KEYWARDEN_MASTER_KEY in its %s and ignores master.key: change it there "
		    "and restart keywarden; not rotating\n", kw_config.data_dir, pid, source);
		return finish(1);
	}
	if (need_data_dir() != 0)
		return finish(1);
	if (kw_config_master_key_rotate(key, sizeof(key), o->grace) != KW_OK) {
		fprintf(stderr, "keywarden: cannot write %s/master.key: %s\n", kw_config.data_dir,
		    strerror(errno));
		return finish(1);
	}
	if (o->grace > 0)
		fprintf(stderr, "keywarden: a new master key is in %s/master.key; the old one is "
		    "still accepted for %ld seconds, then refused.  The new one is shown only this "
		    "once:\n", kw_config.data_dir, o->grace);
	else
		fprintf(stderr, "keywarden: a new master key is in %s/master.key; running workers "
		    "refuse the old one from their next request.  It is shown only this once:\n",
		    kw_config.data_dir);
	printf("%s\n", key);
	kw_crypto_wipe(key, sizeof(key));
	return finish(0);
}

/*
 * Lists signing.key's keys by id (the first 4 bytes of each key's SHA-256,
 * as a token names its signer), oldest first; the last one signs.  The
 * file keeps no time per key, so its own change time stands for the last
 * rotation.
 */
int
kw_cli_signing_key_show(const struct kw_cli_opts *o)
{
	char path[4200], line[160], kid[2 * 4 + 1], when[KW_TIME_LEN];
	unsigned char key[32], digest[KW_SHA256_LEN];
	struct stat sb;
	size_t n = 0;
	FILE *f;

	if (kw_cli_setup(o->data_dir) != 0)
		return 1;
	if (need_data_dir() != 0)
		return finish(1);
	snprintf(path, sizeof(path), "%s/signing.key", kw_config.data_dir);
	if ((f = fopen(path, "r")) == NULL || fstat(fileno(f), &sb) != 0) {
		fprintf(stderr, "keywarden: cannot read %s: %s\n", path, strerror(errno));
		if (f != NULL)
			fclose(f);
		return finish(1);
	}
	kw_time_format(sb.st_mtim.tv_sec, when);
	printf("%-8s  %s\n", "kid", "state");
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t len = strcspn(line, " \r\n");	/* a retired key has its time after it */
		int c = getc(f);

		if (c != EOF)
			ungetc(c, f);
		if (len != 2 * sizeof(key) || kw_crypto_unhex(line, len, key) != KW_OK)
			continue;
		kw_crypto_sha256(key, sizeof(key), digest);
		kw_crypto_hex(digest, 4, kid);
		kid[8] = '\0';
		if (c == EOF)
			printf("%-8s  signs (current since %s)\n", kid, when);
		else
			printf("%-8s  verifies\n", kid);
		n++;
	}
	kw_crypto_wipe(line, sizeof(line));
	kw_crypto_wipe(key, sizeof(key));
	fclose(f);
	if (n == 0) {
		fprintf(stderr, "keywarden: %s holds no signing key\n", path);
		return finish(1);
	}
	return finish(0);
}

int
kw_cli_signing_key_rotate(const struct kw_cli_opts *o)
{
	if (kw_cli_setup(o->data_dir) != 0)
		return 1;
	if (need_data_dir() != 0)
		return finish(1);
	/* running workers read the new key set at their next signed token */
	if (kw_tokens_rotate() != KW_OK) {
		fprintf(stderr, "keywarden: cannot rotate the signing key in %s\n",
		    kw_config.data_dir);
		return finish(1);
	}
	printf("keywarden: a new signing key signs from now on; the old ones still verify\n");
	return finish(0);
}

/* --- admin-key create ---------------------------------------------- */

/* 1 when s is an identifier the API would take: 1 to 256 characters of UTF-8, no controls. */
static int
valid_id(const char *s)
{
	size_t n = strlen(s), chars = 0;

	if (n == 0 || n > KW_ID_MAX || !kw_valid_utf8(s, n))
		return 0;
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return 0;
		chars += (*p & 0xc0) != 0x80;
	}
	return chars <= 256;
}

struct admin_op {
	struct kw_req *req;
	const char *user_id, *alias;
	json_object *answer;	/* owned: the stored key and its plaintext */
};

static enum kw_err
admin_key_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct admin_op *op = baton;
	struct kw_req *req = op->req;
	json_object *settings;
	char role[64];
	enum kw_err rc;

	(void)st;
	json_object_put(op->answer);
	op->answer = NULL;
	memset(&req->err, 0, sizeof(req->err));
	if ((rc = ensure_user(req, txn, op->user_id, "proxy_admin", role, sizeof(role))) != KW_OK)
		return rc;
	if (strcmp(role, "proxy_admin") != 0) {
		/* making a user admin is a decision for /user/update, not a side effect */
		kw_error_set(&req->err, KW_EFORBIDDEN, "user_id", "the user has the role %s; an "
		    "admin key needs a proxy_admin user: choose another --user-id", role);
		return KW_EFORBIDDEN;
	}
	settings = json_object_new_object();
	json_object_object_add(settings, "user_id", json_object_new_string(op->user_id));
	if (op->alias != NULL)
		json_object_object_add(settings, "key_alias", json_object_new_string(op->alias));
	rc = kw_litellm_key_create(req, txn, settings, &op->answer);
	json_object_put(settings);
	return rc;
}

int
kw_cli_admin_key_create(const struct kw_cli_opts *o)
{
	struct admin_op op = { .user_id = o->user_id ? o->user_id : DEFAULT_ADMIN_USER,
	    .alias = o->alias };
	struct cli_req c;
	struct kw_store *st;
	enum kw_err rc;

	if (!valid_id(op.user_id) || (op.alias != NULL && !valid_id(op.alias))) {
		fprintf(stderr, "keywarden: %s must be 1 to 256 characters of UTF-8 without "
		    "control characters\n", valid_id(op.user_id) ? "--alias" : "--user-id");
		return 2;
	}
	if (kw_cli_setup(o->data_dir) != 0)
		return 1;
	if (need_data_dir() != 0 || open_store(kw_config.data_dir, &st) != 0)
		return finish(1);
	if (cli_req_init(&c, st) != 0) {
		kw_store_close(st);
		return finish(1);
	}
	op.req = &c.req;
	rc = kw_store_txn(st, admin_key_body, &op);
	if (rc == KW_OK) {
		fprintf(stderr, "keywarden: created a proxy_admin key for user %s (token %.*s...); "
		    "it is shown only this once:\n", op.user_id, SHOWN_TOKEN,
		    kw_json_str(op.answer, "token"));
		printf("%s\n", kw_json_str(op.answer, "key"));
	} else {
		say_error("admin-key create", rc, &c.req.err);
	}
	json_object_put(op.answer);
	kw_arena_free(c.req.arena);
	kw_store_close(st);
	return finish(rc == KW_OK ? 0 : 1);
}

/* --- backup and restore -------------------------------------------- */

/*
 * Makes path a new or empty directory (0700 when new); says why not on
 * stderr.  A directory with anything in it is refused: a restore or a
 * backup never mixes with what is there.
 */
static int
prepare_target(const char *path)
{
	struct dirent *e;
	DIR *d;

	if (mkdir(path, 0700) == 0)
		return 0;
	if (errno != EEXIST) {
		fprintf(stderr, "keywarden: cannot create %s: %s\n", path, strerror(errno));
		return 1;
	}
	if ((d = opendir(path)) == NULL) {
		fprintf(stderr, "keywarden: %s: %s\n", path, strerror(errno));
		return 1;
	}
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
			closedir(d);
			fprintf(stderr, "keywarden: %s is not empty: give a new or empty "
			    "directory\n", path);
			return 1;
		}
	closedir(d);
	return 0;
}

/* Copies the file src to dst, a new file of mode 0600, flushed to disk; -1 with errno. */
static int
copy_file(const char *src, const char *dst)
{
	char buf[65536];
	ssize_t r = 0;
	int in, out, rc = 0, saved;

	if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	if ((out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		saved = errno;
		close(in);
		errno = saved;
		return -1;
	}
	while (rc == 0 && (r = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)r) != r)
			rc = -1;
	if (r < 0 || fsync(out) != 0)
		rc = -1;
	saved = errno;
	close(in);
	if (close(out) != 0)
		rc = -1;
	kw_crypto_wipe(buf, sizeof(buf));	/* it may have held a secret */
	errno = saved;
	return rc;
}

/* Flushes a directory, so the names of the files just written survive a crash. */
static void
sync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

/* Copies the secrets and settings present in from into to (0600); -1 said on stderr. */
static int
copy_secrets(const char *from, const char *to)
{
	char src[4200], dst[4200];

	for (size_t i = 0; i < NSECRETS; i++) {
		snprintf(src, sizeof(src), "%s/%s", from, secret_files[i]);
		snprintf(dst, sizeof(dst), "%s/%s", to, secret_files[i]);
		if (access(src, F_OK) != 0)
			continue;
		if (copy_file(src, dst) != 0) {
			fprintf(stderr, "keywarden: cannot copy %s: %s\n", secret_files[i],
			    strerror(errno));
			return -1;
		}
	}
	return 0;
}

int
kw_cli_backup(const struct kw_cli_opts *o)
{
	const char *target = o->args[0];
	struct kw_store *st;
	enum kw_err rc;

	if (kw_cli_setup(o->data_dir) != 0)
		return 1;
	if (need_data_dir() != 0 || prepare_target(target) != 0 ||
	    open_store(kw_config.data_dir, &st) != 0)
		return finish(1);
	rc = kw_store_backup(st, target);
	kw_store_close(st);
	if (rc == KW_OK && copy_secrets(kw_config.data_dir, target) != 0)
		rc = KW_EUNAVAIL;
	/* a hot copy is consistent once its logs are replayed */
	if (rc == KW_OK)
		rc = kw_store_recover_copy(target);
	if (rc != KW_OK) {
		fprintf(stderr, "keywarden: the backup failed; what is in %s is not a backup: "
		    "remove it\n", target);
		return finish(1);
	}
	sync_dir(target);
	printf("keywarden: backed up %s to %s (databases, log files, secrets)\n",
	    kw_config.data_dir, target);
	return finish(0);
}

int
kw_cli_restore(const struct kw_cli_opts *o)
{
	const char *from = o->args[0], *to = o->args[1];
	char src[4200], dst[4200];
	struct kw_store *st;
	struct dirent *e;
	struct stat sb;
	int rc = 0, n = 0;
	DIR *d;

	if (kw_cli_setup(to) != 0)
		return 1;
	snprintf(src, sizeof(src), "%s/meta.db", from);
	if (access(src, R_OK) != 0) {
		fprintf(stderr, "keywarden: %s is not a keywarden backup (no meta.db)\n", from);
		return finish(1);
	}
	snprintf(src, sizeof(src), "%s/data.key", from);
	if (access(src, R_OK) != 0)
		fprintf(stderr, "keywarden: warning: %s has no data.key: sealed provider secrets "
		    "will not open\n", from);
	if (prepare_target(to) != 0)
		return finish(1);
	if ((d = opendir(from)) == NULL) {
		fprintf(stderr, "keywarden: %s: %s\n", from, strerror(errno));
		return finish(1);
	}
	/* everything but the region files, which belong to the processes of one environment */
	while (rc == 0 && (e = readdir(d)) != NULL) {
		snprintf(src, sizeof(src), "%s/%s", from, e->d_name);
		if (e->d_name[0] == '.' || strncmp(e->d_name, "__db.", 5) == 0 ||
		    stat(src, &sb) != 0 || !S_ISREG(sb.st_mode))
			continue;
		snprintf(dst, sizeof(dst), "%s/%s", to, e->d_name);
		if ((rc = copy_file(src, dst)) != 0)
			fprintf(stderr, "keywarden: cannot copy %s: %s\n", e->d_name, strerror(errno));
		else
			n++;
	}
	closedir(d);
	sync_dir(to);
	if (rc == 0 && kw_store_recover_copy(kw_config.data_dir) != KW_OK)
		rc = 1;
	if (rc == 0 && (rc = open_store(kw_config.data_dir, &st)) == 0)
		kw_store_close(st);
	if (rc != 0) {
		fprintf(stderr, "keywarden: the restore failed; remove %s before trying again\n", to);
		return finish(1);
	}
	printf("keywarden: restored %s into %s (%d files); serve it with -d %s\n", from,
	    kw_config.data_dir, n, kw_config.data_dir);
	return finish(0);
}

/* --- verify -------------------------------------------------------- */

/* Owner index kinds and the key fields they index, as keys.c writes them. */
static const struct {
	char kind;
	const char *field;
} owners[] = { { 'u', "user_id" }, { 't', "team_id" }, { 'o', "organization_id" } };

struct check {
	struct kw_store *st;
	DB_TXN *txn;
	size_t keys, aliases, owner_rows, created_rows;
	json_object *problems;	/* owned: strings, rebuilt on each attempt */
};

static void
problem(struct check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
problem(struct check *c, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	json_object_array_add(c->problems, json_object_new_string(buf));
}

/* 1 when db holds key with exactly the value val (a duplicate among others counts). */
static int
has_pair(DB *db, DB_TXN *txn, const char *key, size_t klen, const char *val)
{
	DBT k = { .data = (void *)key, .size = (u_int32_t)klen };
	DBT v = { .data = (void *)val, .size = (u_int32_t)strlen(val) };

	return db->get(db, txn, &k, &v, DB_GET_BOTH) == 0;
}

/* The creation index key of a key record: created_at then token (keys.c's created_key). */
static void
created_key_of(json_object *rec, char *buf, size_t n)
{
	const char *at = kw_json_str(rec, "created_at");

	snprintf(buf, n, "%s%s", at ? at : "", kw_json_str(rec, "token"));
}

/* From keys.db outwards: each key's own index rows exist. */
static int
check_key(const char *id, json_object *rec, void *baton)
{
	struct check *c = baton;
	const char *token = kw_json_str(rec, "token"), *alias = kw_json_str(rec, "key_alias");
	char buf[KW_ID_MAX + 80];

	c->keys++;
	if (token == NULL || strcmp(token, id) != 0) {
		problem(c, "keys.db: the record under %.*s... names another token", SHOWN_TOKEN, id);
		return 0;
	}
	if (alias != NULL && !has_pair(kw_store_db(c->st, KW_DB_ALIASES), c->txn, alias,
	    strlen(alias), token))
		problem(c, "aliases.db: no row for key %.*s...'s alias \"%s\"", SHOWN_TOKEN, token,
		    alias);
	for (size_t i = 0; i < sizeof(owners) / sizeof(owners[0]); i++) {
		const char *owner = kw_json_str(rec, owners[i].field);

		if (owner == NULL)
			continue;
		snprintf(buf, sizeof(buf), "%c:%s", owners[i].kind, owner);
		if (!has_pair(kw_store_db(c->st, KW_DB_KEY_OWNERS), c->txn, buf, strlen(buf), token))
			problem(c, "key_owners.db: no row for key %.*s...'s %s \"%s\"", SHOWN_TOKEN,
			    token, owners[i].field, owner);
	}
	created_key_of(rec, buf, sizeof(buf));
	if (!has_pair(kw_store_db(c->st, KW_DB_KEY_CREATED), c->txn, buf, strlen(buf), token))
		problem(c, "key_created.db: no row for key %.*s...", SHOWN_TOKEN, token);
	return 0;
}

/* Calls visit for every (key, value) row of which; visit returns non-zero to stop. */
static enum kw_err
each_row(struct check *c, enum kw_db which,
    void (*visit)(struct check *, const char *k, size_t klen, const char *v, size_t vlen))
{
	DB *db = kw_store_db(c->st, which);
	DBT k = { .flags = DB_DBT_REALLOC }, v = { .flags = DB_DBT_REALLOC };
	DBC *cur = NULL;
	enum kw_err rc = kw_store_err(db->cursor(db, c->txn, &cur, 0));

	while (rc == KW_OK && (rc = kw_store_err(cur->get(cur, &k, &v, DB_NEXT))) == KW_OK)
		visit(c, k.data, k.size, v.data, v.size);
	if (cur != NULL)
		cur->close(cur);
	free(k.data);
	free(v.data);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/*
 * The key record an index row points at (owned), or NULL with a problem
 * said; the row is named by label (n bytes of its key that hold no token).
 */
static json_object *
row_key(struct check *c, const char *db, const char *label, size_t n, const char *v, size_t vlen)
{
	char token[KW_TOKEN_LEN + 1];
	json_object *rec = NULL;

	if (vlen != KW_TOKEN_LEN) {
		problem(c, "%s: a row holds no token", db);
		return NULL;
	}
	memcpy(token, v, vlen);
	token[vlen] = '\0';
	if (kw_rec_get(c->st, c->txn, KW_DB_KEYS, token, 0, &rec) != KW_OK) {
		problem(c, "%s: \"%.*s\" points at key %.*s..., which keys.db does not hold", db,
		    (int)n, label, SHOWN_TOKEN, token);
		return NULL;
	}
	return rec;
}

static void
check_alias_row(struct check *c, const char *k, size_t klen, const char *v, size_t vlen)
{
	json_object *rec = row_key(c, "aliases.db", k, klen, v, vlen);
	const char *alias;

	c->aliases++;
	if (rec == NULL)
		return;
	alias = kw_json_str(rec, "key_alias");
	if (alias == NULL || strlen(alias) != klen || memcmp(alias, k, klen) != 0)
		problem(c, "aliases.db: alias \"%.*s\" points at key %.*s..., whose alias differs",
		    (int)klen, k, SHOWN_TOKEN, v);
	json_object_put(rec);
}

static void
check_owner_row(struct check *c, const char *k, size_t klen, const char *v, size_t vlen)
{
	json_object *rec = row_key(c, "key_owners.db", k, klen, v, vlen);
	const char *owner = NULL;

	c->owner_rows++;
	if (rec == NULL)
		return;
	for (size_t i = 0; i < sizeof(owners) / sizeof(owners[0]); i++)
		if (klen >= 2 && k[0] == owners[i].kind && k[1] == ':')
			owner = kw_json_str(rec, owners[i].field);
	if (owner == NULL || strlen(owner) != klen - 2 || memcmp(owner, k + 2, klen - 2) != 0)
		problem(c, "key_owners.db: \"%.*s\" lists key %.*s..., which it does not own",
		    (int)klen, k, SHOWN_TOKEN, v);
	json_object_put(rec);
}

static void
check_created_row(struct check *c, const char *k, size_t klen, const char *v, size_t vlen)
{
	/* the row's key ends in the token: name it by its time alone */
	json_object *rec = row_key(c, "key_created.db", k,
	    klen > KW_TOKEN_LEN ? klen - KW_TOKEN_LEN : 0, v, vlen);
	char want[KW_ID_MAX + 80];

	c->created_rows++;
	if (rec == NULL)
		return;
	created_key_of(rec, want, sizeof(want));
	if (strlen(want) != klen || memcmp(want, k, klen) != 0)
		problem(c, "key_created.db: key %.*s...'s row is not at its created_at",
		    SHOWN_TOKEN, v);
	json_object_put(rec);
}

static enum kw_err
check_indexes(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct check *c = baton;
	enum kw_err rc;

	json_object_put(c->problems);
	c->problems = json_object_new_array();
	c->st = st;
	c->txn = txn;
	c->keys = c->aliases = c->owner_rows = c->created_rows = 0;
	if ((rc = kw_rec_each(st, txn, KW_DB_KEYS, check_key, c)) == KW_OK &&
	    (rc = each_row(c, KW_DB_ALIASES, check_alias_row)) == KW_OK &&
	    (rc = each_row(c, KW_DB_KEY_OWNERS, check_owner_row)) == KW_OK)
		rc = each_row(c, KW_DB_KEY_CREATED, check_created_row);
	return rc;
}

static void
report_file(const char *file, enum kw_err rc, void *baton)
{
	int *bad = baton;

	if (rc == KW_ENOTFOUND) {
		printf("  %-20s absent (created at the next start)\n", file);
		return;
	}
	printf("  %-20s %s\n", file, rc == KW_OK ? "ok" : rc == KW_EINTERNAL ?
	    "FAILED structural verification" : kw_err_name(rc));
	*bad += rc != KW_OK;
}

/* Removes dir and the files in it (a verification copy: no subdirectories). */
static void
remove_copy(const char *dir)
{
	char path[4200 + 260];
	struct dirent *e;
	DIR *d = opendir(dir);

	if (d != NULL) {
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			unlink(path);
		}
		closedir(d);
	}
	rmdir(dir);
}

int
kw_cli_verify(const struct kw_cli_opts *o)
{
	struct check c = { 0 };
	struct kw_store_state state;
	struct kw_store *st, *copy;
	const char *tmpdir = getenv("TMPDIR");
	char dir[4200];
	int bad = 0, rc = 1;
	enum kw_err err;

	if (kw_cli_setup(o->data_dir) != 0)
		return 1;
	if (need_data_dir() != 0 || open_store(kw_config.data_dir, &st) != 0)
		return finish(1);
	/* DB->verify takes no locks: it reads a copy, never the live files */
	snprintf(dir, sizeof(dir), "%s/kw-verify-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
	if (mkdtemp(dir) == NULL) {
		fprintf(stderr, "keywarden: cannot make a directory for the copy: %s\n",
		    strerror(errno));
		kw_store_close(st);
		return finish(1);
	}
	err = kw_store_backup(st, dir);
	kw_store_close(st);
	if (err == KW_OK)
		err = kw_store_recover_copy(dir);
	if (err != KW_OK) {
		fprintf(stderr, "keywarden: cannot take a copy of the store to verify\n");
		goto done;
	}
	printf("keywarden: verifying a hot copy of %s\n", kw_config.data_dir);
	printf("structure (Berkeley DB verification):\n");
	kw_store_verify_copy(dir, report_file, &bad);
	if (open_store(dir, &copy) != 0)
		goto done;
	if ((err = kw_store_state(copy, &state)) == KW_OK)
		err = kw_store_txn(copy, check_indexes, &c);
	kw_store_close(copy);
	if (err != KW_OK) {
		fprintf(stderr, "keywarden: cannot read the copy: %s\n", kw_err_name(err));
		goto done;
	}
	printf("schema version %u\n", state.schema_version);
	printf("key indexes: %zu keys, %zu alias rows, %zu owner rows, %zu creation rows\n",
	    c.keys, c.aliases, c.owner_rows, c.created_rows);
	for (size_t i = 0; i < json_object_array_length(c.problems); i++)
		printf("  problem: %s\n",
		    json_object_get_string(json_object_array_get_idx(c.problems, i)));
	bad += (int)json_object_array_length(c.problems);
	printf("%s: %d problem%s\n", bad == 0 ? "ok" : "FAILED", bad, bad == 1 ? "" : "s");
	rc = bad == 0 ? 0 : 1;
done:
	json_object_put(c.problems);
	remove_copy(dir);
	return finish(rc);
}

/* --- export and import --------------------------------------------- */

/*
 * What export carries and import writes, in the order import writes it:
 * what others point at comes first (an organization before its teams, a
 * user before its keys).  Each line of an export is
 * {"table": NAME, "id": ID, "record": RECORD} (or "value" for a raw
 * index row); the first line is a header naming the format, the schema
 * and the data key that sealed the provider secrets.  A line without
 * "table" is a key record, as exports before this format wrote them.
 */
static const struct table {
	const char *name;
	enum kw_db db;
	int raw;		/* rows of text, not JSON records */
	const char *audit;	/* the audit trail's name of the table; NULL: not audited */
	int sealed;		/* records hold secrets: the audit entry names the id only */
} tables[] = {
	{ "organizations", KW_DB_ORGS, 0, KW_TABLE_ORGS, 0 },
	{ "budgets", KW_DB_BUDGETS, 0, KW_TABLE_BUDGETS, 0 },
	{ "users", KW_DB_USERS, 0, KW_TABLE_USERS, 0 },
	{ "teams", KW_DB_TEAMS, 0, KW_TABLE_TEAMS, 0 },
	{ "end_users", KW_DB_END_USERS, 0, KW_TABLE_END_USERS, 0 },
	{ "providers", KW_DB_PROVIDERS, 0, KW_TABLE_PROVIDERS, 1 },
	{ "provider_keys", KW_DB_PROVIDER_KEYS, 0, KW_TABLE_PROVIDER_KEYS, 1 },
	{ "provider_index", KW_DB_PROVIDER_INDEX, 1, NULL, 0 },
	{ "keys", KW_DB_KEYS, 0, KW_TABLE_KEYS, 0 },
};
#define NTABLES (sizeof(tables) / sizeof(tables[0]))
#define EXPORT_FORMAT "keywarden-export"
#define EXPORT_VERSION 2
#define PROGRESS_EVERY 10000	/* records between two progress lines on a long run */

/* The table named name, or NULL. */
static const struct table *
table_named(const char *name)
{
	for (size_t i = 0; name != NULL && i < NTABLES; i++)
		if (strcmp(tables[i].name, name) == 0)
			return &tables[i];
	return NULL;
}

/*
 * The id of dir's data.key: the first 8 hex characters of its SHA-256, as
 * the export header names it (never the key).  "" when there is none.
 */
static void
data_key_id(const char *dir, char id[9])
{
	unsigned char key[KW_AEAD_KEY_LEN + 1], digest[KW_SHA256_LEN];
	char path[4200], hex[KW_SHA256_HEX_LEN + 1];
	ssize_t n = -1;
	int fd;

	id[0] = '\0';
	snprintf(path, sizeof(path), "%s/data.key", dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		n = read(fd, key, sizeof(key));
		close(fd);
	}
	if (n > 0) {
		kw_crypto_sha256(key, (size_t)n, digest);
		kw_crypto_hex(digest, 4, hex);
		memcpy(id, hex, 8);
		id[8] = '\0';
	}
	kw_crypto_wipe(key, sizeof(key));
}

struct lines {
	char *text;
	size_t len, cap, n;
	const struct table *table;	/* what the records being added are */
	size_t count[NTABLES];
	int oom;
};

/* Appends one line, s and a newline, to l; -1 when out of memory. */
static int
add_text(struct lines *l, const char *s)
{
	size_t n = strlen(s);

	if (l->len + n + 2 > l->cap) {
		size_t cap = (l->cap + n + 2) * 2;
		char *p = realloc(l->text, cap);

		if (p == NULL) {
			l->oom = 1;
			return -1;
		}
		l->text = p;
		l->cap = cap;
	}
	memcpy(l->text + l->len, s, n);
	l->len += n;
	l->text[l->len++] = '\n';
	return 0;
}

/* Appends {"table", "id", field: value} (value borrowed) as a line. */
static int
add_row(struct lines *l, const char *id, const char *field, json_object *value)
{
	json_object *row = json_object_new_object();
	int rc;

	json_object_object_add(row, "table", json_object_new_string(l->table->name));
	json_object_object_add(row, "id", json_object_new_string(id));
	json_object_object_add(row, field, json_object_get(value));
	rc = add_text(l, json_object_to_json_string_ext(row, JSON_C_TO_STRING_PLAIN));
	json_object_put(row);
	if (rc == 0 && ++l->n % PROGRESS_EVERY == 0)
		fprintf(stderr, "keywarden: export: %zu records read\n", l->n);
	l->count[l->table - tables]++;
	return rc;
}

static int
append_record(const char *id, json_object *rec, void *baton)
{
	return add_row(baton, id, "record", rec) != 0;
}

/* Appends the rows of a raw table (keys and values are text). */
static enum kw_err
append_raw(struct kw_store *st, DB_TXN *txn, struct lines *l)
{
	DB *db = kw_store_db(st, l->table->db);
	DBT k = { .flags = DB_DBT_REALLOC }, v = { .flags = DB_DBT_REALLOC };
	DBC *cur = NULL;
	enum kw_err rc = kw_store_err(db->cursor(db, txn, &cur, 0));

	while (rc == KW_OK && (rc = kw_store_err(cur->get(cur, &k, &v, DB_NEXT))) == KW_OK) {
		char *id = strndup(k.data, k.size);
		json_object *value = json_object_new_string_len(v.data, (int)v.size);

		if (id == NULL || add_row(l, id, "value", value) != 0)
			rc = KW_ENOMEM;
		free(id);
		json_object_put(value);
	}
	if (cur != NULL)
		cur->close(cur);
	free(k.data);
	free(v.data);
	return rc == KW_ENOTFOUND ? KW_OK : rc;
}

/* Reads every table, as stored, into baton's lines (rebuilt on each attempt). */
static enum kw_err
export_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct lines *l = baton;
	json_object *header = json_object_new_object();
	char kid[9];
	enum kw_err rc = KW_OK;

	l->len = l->n = 0;
	l->oom = 0;
	memset(l->count, 0, sizeof(l->count));
	data_key_id(kw_config.data_dir, kid);
	json_object_object_add(header, "format", json_object_new_string(EXPORT_FORMAT));
	json_object_object_add(header, "version", json_object_new_int(EXPORT_VERSION));
	json_object_object_add(header, "schema", json_object_new_int(KW_SCHEMA_VERSION));
	json_object_object_add(header, "data_key_id", json_object_new_string(kid));
	if (add_text(l, json_object_to_json_string_ext(header, JSON_C_TO_STRING_PLAIN)) != 0)
		rc = KW_ENOMEM;
	json_object_put(header);
	for (size_t i = 0; rc == KW_OK && i < NTABLES; i++) {
		l->table = &tables[i];
		rc = tables[i].raw ? append_raw(st, txn, l) :
		    kw_rec_each(st, txn, tables[i].db, append_record, l);
	}
	return rc == KW_OK && l->oom ? KW_ENOMEM : rc;
}

/* Says how many records of each table, after what ("exported", "would import"...). */
static void
say_counts(const char *what, const size_t count[NTABLES])
{
	fprintf(stderr, "keywarden: %s:", what);
	for (size_t i = 0; i < NTABLES; i++)
		fprintf(stderr, "%s %zu %s", i == 0 ? "" : ",", count[i], tables[i].name);
	fprintf(stderr, "\n");
}

/* Writes n bytes to path: a file beside it (0600, flushed), renamed over it. */
static int
write_file(const char *path, const char *text, size_t n)
{
	char tmp[4200];
	int fd, rc = 0;

	snprintf(tmp, sizeof(tmp), "%s.new", path);
	unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
		return -1;
	if ((n > 0 && write(fd, text, n) != (ssize_t)n) || fsync(fd) != 0)
		rc = -1;
	if (close(fd) != 0)
		rc = -1;
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -1;
	if (rc != 0)
		unlink(tmp);
	return rc;
}

int
kw_cli_export(const struct kw_cli_opts *o)
{
	struct lines l = { 0 };
	struct kw_store *st;
	enum kw_err rc;
	int failed;

	if (kw_cli_setup(o->data_dir) != 0)
		return 1;
	if (need_data_dir() != 0 || open_store(kw_config.data_dir, &st) != 0)
		return finish(1);
	/* one transaction: the export is one consistent moment of the store */
	rc = kw_store_txn(st, export_body, &l);
	kw_store_close(st);
	if (rc != KW_OK) {
		fprintf(stderr, "keywarden: cannot read the store: %s\n", kw_err_name(rc));
		free(l.text);
		return finish(1);
	}
	if (o->output != NULL)
		failed = write_file(o->output, l.text, l.len) != 0;
	else
		failed = (l.len > 0 && fwrite(l.text, 1, l.len, stdout) != l.len) ||
		    fflush(stdout) != 0;
	if (failed)
		fprintf(stderr, "keywarden: cannot write %s: %s\n",
		    o->output ? o->output : "standard output", strerror(errno));
	else
		say_counts("exported", l.count);
	free(l.text);
	return finish(failed ? 1 : 0);
}

/* Checks an optional field: absent or null, else of the given json type (and then check). */
static int
field_is(json_object *rec, const char *name, json_type type)
{
	json_object *v;

	return !json_object_object_get_ex(rec, name, &v) || v == NULL || json_object_is_type(v,
	    type) || (type == json_type_double && json_object_is_type(v, json_type_int));
}

/*
 * Validates one exported key record, lower-casing its token: the fields
 * the store indexes or limits rely on must have their types, and a
 * plaintext key is refused.  KW_EINVAL with err naming the field.
 */
static enum kw_err
check_record(json_object *rec, time_t now, struct kw_error *err)
{
	static const char *const ids[] = { "key_alias", "user_id", "team_id", "organization_id" };
	static const char *const amounts[] = { "spend", "max_budget", "soft_budget", "tpm_limit",
	    "rpm_limit", "max_parallel_requests" };
	static const char *const times[] = { "created_at", "expires", "budget_reset_at" };
	const char *token, *s;
	char lower[KW_TOKEN_LEN + 1];
	json_object *v;
	time_t t;

	if (!json_object_is_type(rec, json_type_object)) {
		kw_error_set(err, KW_EINVAL, "", "a line must be a JSON object, a key record");
		return KW_EINVAL;
	}
	if (json_object_object_get_ex(rec, "key", NULL)) {
		kw_error_set(err, KW_EINVAL, "key", "a plaintext key is never imported: give the "
		    "record's token (its SHA-256), as export writes it");
		return KW_EINVAL;
	}
	token = kw_json_str(rec, "token");
	if (token == NULL || strlen(token) != KW_TOKEN_LEN ||
	    strspn(token, "0123456789abcdefABCDEF") != KW_TOKEN_LEN) {
		kw_error_set(err, KW_EINVAL, "token", "must be the key's SHA-256 as 64 hex characters");
		return KW_EINVAL;
	}
	kw_keys_token_of(token, lower);
	json_object_object_add(rec, "token", json_object_new_string(lower));
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		if (!field_is(rec, ids[i], json_type_string) ||
		    ((s = kw_json_str(rec, ids[i])) != NULL && !valid_id(s))) {
			kw_error_set(err, KW_EINVAL, ids[i], "must be null or 1 to 256 characters");
			return KW_EINVAL;
		}
	}
	for (size_t i = 0; i < sizeof(amounts) / sizeof(amounts[0]); i++) {
		if (!field_is(rec, amounts[i], json_type_double) ||
		    kw_json_num(rec, amounts[i], 0) < 0) {
			kw_error_set(err, KW_EINVAL, amounts[i], "must be null or a number >= 0");
			return KW_EINVAL;
		}
	}
	for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
		if (!field_is(rec, times[i], json_type_string) ||
		    ((s = kw_json_str(rec, times[i])) != NULL && kw_time_parse(s, &t) != KW_OK)) {
			kw_error_set(err, KW_EINVAL, times[i], "must be null or a time such as "
			    "2026-11-22T07:36:43Z");
			return KW_EINVAL;
		}
	}
	if (!field_is(rec, "blocked", json_type_boolean)) {
		kw_error_set(err, KW_EINVAL, "blocked", "must be true or false");
		return KW_EINVAL;
	}
	if (!field_is(rec, "metadata", json_type_object)) {
		kw_error_set(err, KW_EINVAL, "metadata", "must be an object");
		return KW_EINVAL;
	}
	if (!field_is(rec, "models", json_type_array)) {
		kw_error_set(err, KW_EINVAL, "models", "must be a list of model names");
		return KW_EINVAL;
	}
	if (json_object_object_get_ex(rec, "models", &v) && v != NULL)
		for (size_t i = 0; i < json_object_array_length(v); i++)
			if (!json_object_is_type(json_object_array_get_idx(v, i), json_type_string)) {
				kw_error_set(err, KW_EINVAL, "models", "must be a list of model names");
				return KW_EINVAL;
			}
	if (kw_json_str(rec, "created_at") == NULL)
		kw_json_set_time(rec, "created_at", now);	/* the creation index needs a time */
	return KW_OK;
}

/* One line of an import, checked: its table, its id and its record or raw value (owned). */
struct row {
	const struct table *table;
	char *id;
	json_object *value;
	int line;
};

/*
 * Checks one line (parsed, owned by the caller) into r.  A header line
 * sets *header (borrowed) and leaves r->table NULL.  KW_EINVAL with err
 * naming the field.
 */
static enum kw_err
check_line(json_object *line, time_t now, struct row *r, json_object **header,
    struct kw_error *err)
{
	const char *table = kw_json_str(line, "table"), *id = kw_json_str(line, "id");
	json_object *value = line;

	memset(r, 0, sizeof(*r));
	if (json_object_is_type(line, json_type_object) && kw_json_str(line, "format") != NULL) {
		if (strcmp(kw_json_str(line, "format"), EXPORT_FORMAT) != 0 ||
		    kw_json_num(line, "version", 0) > EXPORT_VERSION) {
			kw_error_set(err, KW_EINVAL, "format", "is not an export this keywarden "
			    "reads (%s version %d or older)", EXPORT_FORMAT, EXPORT_VERSION);
			return KW_EINVAL;
		}
		*header = line;
		return KW_OK;
	}
	if (json_object_is_type(line, json_type_object) && kw_json_has(line, "table")) {
		if ((r->table = table_named(table)) == NULL) {
			kw_error_set(err, KW_EINVAL, "table", "must name one of the tables export "
			    "writes (organizations, budgets, users, teams, end_users, providers, "
			    "provider_keys, provider_index, keys)");
			return KW_EINVAL;
		}
		if (id == NULL || *id == '\0' || strlen(id) > 2 * KW_ID_MAX + 2 ||
		    !kw_valid_utf8(id, strlen(id))) {
			kw_error_set(err, KW_EINVAL, "id", "must be the record's id, a string");
			return KW_EINVAL;
		}
		json_object_object_get_ex(line, r->table->raw ? "value" : "record", &value);
		if (r->table->raw ? !json_object_is_type(value, json_type_string) :
		    !json_object_is_type(value, json_type_object)) {
			kw_error_set(err, KW_EINVAL, r->table->raw ? "value" : "record", "must be %s",
			    r->table->raw ? "the row's value, a string" : "the record, an object");
			return KW_EINVAL;
		}
	} else {
		r->table = table_named("keys");	/* a key record as older exports wrote one */
	}
	if (r->table->db == KW_DB_KEYS) {
		if (check_record(value, now, err) != KW_OK)
			return KW_EINVAL;
		id = kw_json_str(value, "token");
	}
	r->id = strdup(id);
	r->value = json_object_get(value);
	return r->id == NULL ? KW_ENOMEM : KW_OK;
}

enum import_outcome { IMPORTED, SKIPPED };

struct import_op {
	struct kw_req *req;
	const struct row *row;
	int dry_run;		/* look, write nothing */
	enum import_outcome outcome;
};

/* Writes a raw index row unless its id exists. */
static enum kw_err
import_raw(struct kw_store *st, DB_TXN *txn, struct import_op *op)
{
	DB *db = kw_store_db(st, op->row->table->db);
	const char *value = json_object_get_string(op->row->value);
	DBT k = { .data = op->row->id, .size = (u_int32_t)strlen(op->row->id) };
	DBT v = { .data = (void *)value, .size = (u_int32_t)json_object_get_string_len(
	    op->row->value) };
	DBT have = { .flags = DB_DBT_MALLOC };
	enum kw_err rc = kw_store_err(db->get(db, txn, &k, &have, DB_RMW));

	free(have.data);
	if (rc == KW_OK) {
		op->outcome = SKIPPED;
		return KW_OK;
	}
	if (rc != KW_ENOTFOUND || op->dry_run)
		return rc == KW_ENOTFOUND ? KW_OK : rc;
	return kw_store_err(db->put(db, txn, &k, &v, DB_NOOVERWRITE));
}

/*
 * Writes one row unless its id exists: a key with its index rows (and its
 * user when the export carried none), any other record as it was stored;
 * each audited as created by keywarden-cli.
 */
static enum kw_err
import_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct import_op *op = baton;
	struct kw_req *req = op->req;
	const struct table *t = op->row->table;
	const char *user_id;
	json_object *old, *shown;
	enum kw_err rc;

	memset(&req->err, 0, sizeof(req->err));
	op->outcome = IMPORTED;
	if (t->raw)
		return import_raw(st, txn, op);
	rc = kw_rec_get(st, txn, t->db, op->row->id, KW_RMW, &old);
	if (rc == KW_OK) {
		json_object_put(old);
		op->outcome = SKIPPED;
		return KW_OK;
	}
	if (rc != KW_ENOTFOUND || op->dry_run)
		return rc == KW_ENOTFOUND ? KW_OK : rc;
	if (t->db == KW_DB_KEYS) {
		if ((user_id = kw_json_str(op->row->value, "user_id")) != NULL &&
		    (rc = ensure_user(req, txn, user_id, "internal_user", NULL, 0)) != KW_OK)
			return rc;
		rc = kw_keys_put(st, txn, NULL, op->row->value, &req->err);
	} else {
		rc = kw_rec_put(st, txn, t->db, op->row->id, op->row->value, 1);
	}
	if (rc != KW_OK)
		return rc;
	if (!t->sealed)
		return kw_audit_record(req, txn, "created", t->audit, op->row->id, NULL,
		    op->row->value);
	shown = json_object_new_object();	/* the secrets stay out of the audit trail */
	json_object_object_add(shown, "id", json_object_new_string(op->row->id));
	rc = kw_audit_record(req, txn, "created", t->audit, op->row->id, NULL, shown);
	json_object_put(shown);
	return rc;
}

/* 1 when path is missing or an empty directory: a place import may initialise. */
static int
is_new_place(const char *path)
{
	struct dirent *e;
	DIR *d = opendir(path);
	int empty = 1;

	if (d == NULL)
		return errno == ENOENT;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			empty = 0;
	closedir(d);
	return empty;
}

/*
 * Makes the missing or empty data directory an initialised one, with the
 * data key file (0600) when one is given, so sealed provider secrets open
 * there.  0, or 1 said on stderr.
 */
static int
init_for_import(const char *data_key)
{
	char path[4200];

	if (mkdir(kw_config.data_dir, 0700) != 0 && errno != EEXIST) {
		fprintf(stderr, "keywarden: cannot create %s: %s\n", kw_config.data_dir,
		    strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/data.key", kw_config.data_dir);
	if (data_key != NULL && copy_file(data_key, path) != 0) {
		fprintf(stderr, "keywarden: cannot copy %s to %s: %s\n", data_key, path,
		    strerror(errno));
		return 1;
	}
	if (kw_config_init_data_dir(1) != KW_OK)
		return 1;
	fprintf(stderr, "keywarden: initialised the data directory %s\n", kw_config.data_dir);
	return 0;
}

static void
free_rows(struct row *rows, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(rows[i].id);
		json_object_put(rows[i].value);
	}
	free(rows);
}

int
kw_cli_import(const struct kw_cli_opts *o)
{
	const char *name = o->nargs > 0 ? o->args[0] : "standard input";
	size_t cap = 0, nrows = 0, rows_cap = 0, failed = 0, bad = 0, sealed = 0;
	size_t imported[NTABLES] = { 0 }, skipped[NTABLES] = { 0 };
	json_object *header = NULL, *header_line = NULL;
	struct row *rows = NULL;
	struct kw_error err;
	struct cli_req c;
	struct kw_store *st;
	char *line = NULL, kid[9];
	const char *want;
	ssize_t len;
	int n = 0, rc = 1, fresh;
	FILE *in = stdin;

	if (kw_cli_setup(o->data_dir) != 0)
		goto out;
	fresh = access(kw_config.data_dir, F_OK) != 0 || (need_data_dir_quiet() != 0 &&
	    is_new_place(kw_config.data_dir));
	if (!fresh && need_data_dir() != 0)
		goto out;
	if (o->data_key != NULL && !fresh) {
		fprintf(stderr, "keywarden: --data-key is for an import into a new or empty data "
		    "directory; %s has its own data key\n", kw_config.data_dir);
		goto out;
	}
	if (o->nargs > 0 && (in = fopen(o->args[0], "r")) == NULL) {
		fprintf(stderr, "keywarden: cannot read %s: %s\n", o->args[0], strerror(errno));
		goto out;
	}
	/* every line is checked before any is written: a bad file changes nothing */
	while ((len = getline(&line, &cap, in)) >= 0) {
		json_object *parsed = NULL;
		struct row r;

		n++;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			len--;
		if (len == 0)
			continue;
		memset(&err, 0, sizeof(err));
		/* a line holds a record as stored, one level down */
		if (kw_json_parse(line, (size_t)len, KW_STORED_MAX_DEPTH, &parsed, &err) != KW_OK ||
		    check_line(parsed, kw_clock_now(), &r, &header, &err) != KW_OK) {
			fprintf(stderr, "keywarden: %s: line %d: %s%s%s\n", name, n, err.field,
			    err.field[0] != '\0' ? ": " : "", err.message);
			json_object_put(parsed);
			bad++;
			continue;
		}
		if (header == parsed && header_line == NULL) {
			header_line = parsed;	/* kept: header borrows from it */
			continue;
		}
		json_object_put(parsed);
		if (r.table == NULL)
			continue;
		if (nrows == rows_cap) {
			struct row *p = realloc(rows, (rows_cap = rows_cap * 2 + 64) * sizeof(*p));

			if (p == NULL) {
				fprintf(stderr, "keywarden: out of memory\n");
				free(r.id);
				json_object_put(r.value);
				goto out;
			}
			rows = p;
		}
		r.line = n;
		sealed += r.table->db == KW_DB_PROVIDER_KEYS;
		rows[nrows++] = r;
	}
	if (bad > 0) {
		fprintf(stderr, "keywarden: %zu bad line%s in %s: nothing imported\n", bad,
		    bad == 1 ? "" : "s", name);
		goto out;
	}
	if (fresh && !o->dry_run && init_for_import(o->data_key) != 0)
		goto out;
	/* sealed secrets open only under the data key that sealed them */
	want = header != NULL ? kw_json_str(header, "data_key_id") : NULL;
	data_key_id(kw_config.data_dir, kid);
	if (sealed > 0 && want != NULL && *want != '\0' && (!fresh || !o->dry_run) &&
	    strcmp(want, kid) != 0) {
		fprintf(stderr, "keywarden: the %zu provider keys in %s are sealed under data key "
		    "%s, and %s has data key %s: nothing imported.  Import into a new or empty "
		    "directory with --data-key SOURCE_DATA_DIR/data.key\n", sealed, name, want,
		    kw_config.data_dir, kid);
		goto out;
	}
	if (fresh && o->dry_run) {
		for (size_t i = 0; i < nrows; i++)
			imported[rows[i].table - tables]++;
		say_counts("dry run into a new data directory: would import", imported);
		rc = 0;
		goto out;
	}
	if (open_store(kw_config.data_dir, &st) != 0)
		goto out;
	if (cli_req_init(&c, st) != 0) {
		kw_store_close(st);
		goto out;
	}
	for (size_t i = 0; i < nrows; i++) {
		struct import_op op = { .req = &c.req, .row = &rows[i], .dry_run = o->dry_run };
		enum kw_err e = kw_store_txn(st, import_body, &op);
		size_t t = (size_t)(rows[i].table - tables);

		if (e != KW_OK) {
			char what[4300];

			snprintf(what, sizeof(what), "%s: line %d", name, rows[i].line);
			say_error(what, e, &c.req.err);
			failed++;
		} else if (op.outcome == SKIPPED) {
			if (t == NTABLES - 1)
				fprintf(stderr, "keywarden: %s: line %d: key %.*s... exists: skipped\n",
				    name, rows[i].line, SHOWN_TOKEN, rows[i].id);
			skipped[t]++;
		} else {
			imported[t]++;
		}
		if ((i + 1) % PROGRESS_EVERY == 0)
			fprintf(stderr, "keywarden: import: %zu of %zu records done\n", i + 1, nrows);
	}
	kw_arena_free(c.req.arena);
	kw_store_close(st);
	say_counts(o->dry_run ? "dry run: would import" : "imported", imported);
	say_counts(o->dry_run ? "dry run: would skip (they exist)" : "skipped (they exist)",
	    skipped);
	if (failed > 0)
		fprintf(stderr, "keywarden: %zu failed\n", failed);
	rc = failed == 0 ? 0 : 1;
out:
	free(line);
	if (in != stdin && in != NULL)
		fclose(in);
	json_object_put(header_line);
	free_rows(rows, nrows);
	return finish(rc);
}

/* --- keys, teams and users: the API's own operations, here or over HTTP --- */

/*
 * One management command as the API request it is: the LiteLLM route and
 * what it is sent.  A command runs the route's handler on the data
 * directory (validated as the server validates it, by a proxy admin named
 * keywarden-cli) or sends it to a keywarden over HTTP (--url).
 */
struct call {
	const char *method;
	char path[600];
	char query[1200];	/* URL-encoded, without "?"; "" for none */
	json_object *body;	/* owned; NULL for none */
};

/* Appends &name=value to q, value URL-encoded. */
static void
query_add(char *q, size_t n, const char *name, const char *value)
{
	size_t len = strlen(q);

	if (value == NULL)
		return;
	len += (size_t)snprintf(q + len, len < n ? n - len : 0, "%s%s=", len ? "&" : "", name);
	for (const unsigned char *p = (const unsigned char *)value; *p != '\0' && len + 4 < n; p++)
		len += (size_t)snprintf(q + len, n - len, (isalnum(*p) || strchr("-._~", *p)) ?
		    "%c" : "%%%02X", *p);
}

static void
body_str(json_object *body, const char *name, const char *value)
{
	if (value != NULL)
		json_object_object_add(body, name, json_object_new_string(value));
}

/*
 * Fills c for command (such as "key create") with operand arg (NULL when
 * it takes none).  2 with a usage message when an option is missing.
 */
static int
build_call(const struct kw_cli_opts *o, const char *arg, struct call *c)
{
	const char *cmd = o->command;
	json_object *b = json_object_new_object();

	memset(c, 0, sizeof(*c));
	c->method = "POST";
	if (strcmp(cmd, "key create") == 0) {
		snprintf(c->path, sizeof(c->path), "/key/generate");
		body_str(b, "key_alias", o->alias);
		body_str(b, "user_id", o->user_id);
		body_str(b, "team_id", o->team_id);
	} else if (strcmp(cmd, "key list") == 0 || strcmp(cmd, "team list") == 0) {
		c->method = "GET";
		snprintf(c->path, sizeof(c->path), "/%s/list", cmd[0] == 'k' ? "key" : "team");
		query_add(c->query, sizeof(c->query), "user_id", o->user_id);
		if (cmd[0] == 'k') {
			query_add(c->query, sizeof(c->query), "team_id", o->team_id);
			query_add(c->query, sizeof(c->query), "size", "100");
			query_add(c->query, sizeof(c->query), "return_full_object", "true");
		}
	} else if (strcmp(cmd, "key info") == 0) {
		c->method = "GET";
		snprintf(c->path, sizeof(c->path), "/key/info");
		query_add(c->query, sizeof(c->query), "key", arg);
	} else if (strcmp(cmd, "key block") == 0 || strcmp(cmd, "key unblock") == 0) {
		snprintf(c->path, sizeof(c->path), "/key/%s", cmd + 4);
		body_str(b, "key", arg);
	} else if (strcmp(cmd, "key regenerate") == 0) {
		snprintf(c->path, sizeof(c->path), "/key/regenerate");
		body_str(b, "key", arg);
	} else if (strcmp(cmd, "key delete") == 0 || strcmp(cmd, "team delete") == 0 ||
	    strcmp(cmd, "user delete") == 0) {
		json_object *ids = json_object_new_array();

		json_object_array_add(ids, json_object_new_string(arg));
		snprintf(c->path, sizeof(c->path), "/%.*s/delete", (int)strcspn(cmd, " "), cmd);
		json_object_object_add(b, cmd[0] == 'k' ? "keys" : cmd[0] == 't' ? "team_ids" :
		    "user_ids", ids);
	} else if (strcmp(cmd, "team create") == 0) {
		snprintf(c->path, sizeof(c->path), "/team/new");
		body_str(b, "team_alias", arg);
	} else if (strcmp(cmd, "team info") == 0) {
		c->method = "GET";
		snprintf(c->path, sizeof(c->path), "/team/info");
		query_add(c->query, sizeof(c->query), "team_id", arg);
	} else if (strcmp(cmd, "user create") == 0) {
		snprintf(c->path, sizeof(c->path), "/user/new");
		body_str(b, "user_id", arg);
		body_str(b, "user_role", o->role);
	} else if (strcmp(cmd, "user info") == 0) {
		c->method = "GET";
		snprintf(c->path, sizeof(c->path), "/user/info");
		query_add(c->query, sizeof(c->query), "user_id", arg);
	} else if (strcmp(cmd, "team block") == 0 || strcmp(cmd, "team unblock") == 0 ||
	    strcmp(cmd, "user block") == 0 || strcmp(cmd, "user unblock") == 0) {
		snprintf(c->path, sizeof(c->path), "/%.*s/update", (int)strcspn(cmd, " "), cmd);
		body_str(b, cmd[0] == 't' ? "team_id" : "user_id", arg);
		json_object_object_add(b, "blocked", json_object_new_boolean(cmd[5] == 'b'));
	}
	if (strcmp(c->method, "GET") == 0)
		json_object_put(b);
	else
		c->body = b;
	return 0;
}

/* The JSON value in text[0..len), which need not end in a NUL; NULL if it is not one. */
static json_object *
parse_text(const char *text, size_t len)
{
	struct json_tokener *tok = json_tokener_new();
	json_object *v = tok != NULL ? json_tokener_parse_ex(tok, text, (int)len) : NULL;

	json_tokener_free(tok);
	return v;
}

/*
 * Runs c's route on the data directory: matched, its query and body
 * validated, then its handler, as a proxy admin.  *status and *answer
 * (owned) say what the API would answer; on an error *answer is NULL and
 * err says why.
 */
static enum kw_err
call_here(struct cli_req *cr, struct call *c, int *status, json_object **answer)
{
	struct kw_req *req = &cr->req;
	struct kw_resp resp = { 0 };
	enum kw_err rc;

	req->method = c->method;
	req->path = c->path;
	*answer = NULL;
	rc = kw_router_match(req->arena, kw_gen_routes, kw_gen_nroutes, c->method, c->path, 1,
	    &req->match, &req->err);
	if (rc == KW_OK) {
		req->route = req->match.route;
		rc = kw_query_parse(req->arena, req->route, c->query, &req->query, &req->err);
	}
	if (rc == KW_OK && c->body != NULL && req->route->body != NULL) {
		req->body = json_object_get(c->body);
		rc = kw_valid_check(req->route->body, req->body, NULL, &req->err);
	}
	if (rc == KW_OK)
		rc = req->route->handler(req, &resp);
	*status = rc == KW_OK ? resp.status : kw_http_status_for(KW_FACE_LITELLM, rc);
	if (rc == KW_OK && resp.json == NULL && resp.raw != NULL)
		/* a read path that writes the stored record's text into its answer */
		*answer = parse_text(resp.raw, resp.raw_len);
	else if (rc == KW_OK)
		*answer = resp.json;
	else
		json_object_put(resp.json);
	json_object_put(req->query);
	json_object_put(req->body);
	req->query = req->body = NULL;
	return rc;
}

struct grown {
	char *data;
	size_t len;
};

static size_t
grow(char *p, size_t size, size_t n, void *baton)
{
	struct grown *g = baton;
	char *q;

	if (g->len + size * n > MAX_ANSWER || (q = realloc(g->data, g->len + size * n + 1)) ==
	    NULL)
		return 0;
	memcpy(q + g->len, p, size * n);
	g->data = q;
	g->len += size * n;
	g->data[g->len] = '\0';
	return size * n;
}

/*
 * Sends c to the keywarden at url (its base, such as http://127.0.0.1:4000
 * or https://keys.example.com/keywarden), as the key in KEYWARDEN_API_KEY
 * (else KEYWARDEN_MASTER_KEY): never a command-line argument, which every
 * user of the machine can read.  0 with *status and *answer (owned, NULL
 * when the answer is not JSON); 1 said on stderr.
 */
static int
call_over_http(const char *url, struct call *c, int *status, json_object **answer)
{
	const char *key = getenv("KEYWARDEN_API_KEY");
	struct curl_slist *headers = NULL;
	struct grown got = { 0 };
	char full[4200], auth[600];
	const char *sent = NULL;
	long code = 0;
	CURLcode rc;
	CURL *h;

	if (key == NULL || *key == '\0')
		key = getenv("KEYWARDEN_MASTER_KEY");
	if (key == NULL || *key == '\0')
		key = kw_config.master_key;	/* group commands on a data directory: its own */
	if (key == NULL || *key == '\0') {
		fprintf(stderr, "keywarden: --url needs the admin key in KEYWARDEN_API_KEY (or "
		    "KEYWARDEN_MASTER_KEY)\n");
		return 1;
	}
	snprintf(full, sizeof(full), "%.*s%s%s%s", (int)(strlen(url) - (strlen(url) > 0 &&
	    url[strlen(url) - 1] == '/')), url, c->path, c->query[0] ? "?" : "", c->query);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key);
	if ((h = curl_easy_init()) == NULL) {
		fprintf(stderr, "keywarden: libcurl failed to initialise\n");
		return 1;
	}
	headers = curl_slist_append(headers, auth);
	headers = curl_slist_append(headers, "Content-Type: application/json");
	curl_easy_setopt(h, CURLOPT_URL, full);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, grow);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &got);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	if (c->body != NULL) {
		sent = json_object_to_json_string_ext(c->body, JSON_C_TO_STRING_PLAIN);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, sent);
	}
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	curl_slist_free_all(headers);
	curl_easy_cleanup(h);
	kw_crypto_wipe(auth, sizeof(auth));
	if (rc != CURLE_OK) {
		fprintf(stderr, "keywarden: %s%s: %s\n", url, c->path, curl_easy_strerror(rc));
		free(got.data);
		return 1;
	}
	*status = (int)code;
	*answer = got.data != NULL ? json_tokener_parse(got.data) : NULL;
	free(got.data);
	return 0;
}

static int
user_row(const char *id, json_object *rec, void *baton)
{
	(void)id;
	json_object_array_add(baton, json_object_get(rec));
	return 0;
}

/* The users, as the API has no list of them: read from users.db (data directory only). */
static enum kw_err
user_list_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	json_object **answer = baton;
	json_object *users = json_object_new_array();

	json_object_put(*answer);
	*answer = json_object_new_object();
	json_object_object_add(*answer, "users", users);
	return kw_rec_each(st, txn, KW_DB_USERS, user_row, users);
}

/* Prints a scalar JSON value as a person reads it: strings bare, null as "-". */
static void
print_value(json_object *v)
{
	if (v == NULL)
		printf("-");
	else if (json_object_is_type(v, json_type_string))
		printf("%s", json_object_get_string(v));
	else
		printf("%s", json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
}

/* Prints an answer for a person: a created key, the rows of a list, the fields of a record. */
static void
print_answer(const char *cmd, json_object *a)
{
	static const char *const lists[] = { "keys", "users", "teams", "data" };
	static const char *const records[] = { "info", "team_info", "user_info" };
	json_object *v = NULL, *rec = a;

	if (a == NULL)
		return;
	if (strstr(cmd, " create") != NULL || strcmp(cmd, "key regenerate") == 0) {
		if (kw_json_str(a, "key") != NULL) {
			fprintf(stderr, "keywarden: key %s (token %.*s...); it is shown only this "
			    "once:\n", kw_json_str(a, "key_alias") ? kw_json_str(a, "key_alias") :
			    "without an alias", SHOWN_TOKEN, kw_json_str(a, "token") ?
			    kw_json_str(a, "token") : "");
			printf("%s\n", kw_json_str(a, "key"));
		} else {
			printf("%s\n", kw_json_str(a, cmd[0] == 't' ? "team_id" : "user_id"));
		}
		return;
	}
	if (strstr(cmd, " list") != NULL) {
		for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]) && v == NULL; i++)
			json_object_object_get_ex(a, lists[i], &v);
		if (json_object_is_type(a, json_type_array))
			v = a;
		for (size_t i = 0; v != NULL && i < json_object_array_length(v); i++) {
			json_object *row = json_object_array_get_idx(v, i);
			const char *id = kw_json_str(row, cmd[0] == 'k' ? "token" : cmd[0] == 't' ?
			    "team_id" : "user_id");
			const char *name = kw_json_str(row, cmd[0] == 'k' ? "key_alias" : cmd[0] ==
			    't' ? "team_alias" : "user_role");

			if (json_object_is_type(row, json_type_string))
				id = json_object_get_string(row);
			printf("%s\t%s%s\n", id ? id : "-", name ? name : "-",
			    kw_json_bool(row, "blocked") ? "\tblocked" : "");
		}
		return;
	}
	if (strstr(cmd, " info") != NULL) {
		for (size_t i = 0; i < sizeof(records) / sizeof(records[0]); i++)
			if (json_object_object_get_ex(a, records[i], &v) &&
			    json_object_is_type(v, json_type_object))
				rec = v;
		json_object_object_foreach(rec, name, val) {
			if (json_object_is_type(val, json_type_object) ||
			    (json_object_is_type(val, json_type_array) &&
			    json_object_array_length(val) > 8))
				continue;	/* --json shows all of it */
			printf("%s: ", name);
			print_value(val);
			printf("\n");
		}
		return;
	}
	printf("keywarden: %s done\n", cmd);
}

int
kw_cli_manage(const struct kw_cli_opts *o)
{
	const char *arg = o->nargs > 0 ? o->args[0] : NULL;
	const char *url = o->url != NULL ? o->url : getenv("KEYWARDEN_URL");
	json_object *answer = NULL, *e;
	struct call c;
	struct cli_req cr;
	struct kw_store *st = NULL;
	enum kw_err rc = KW_OK;
	int status = 0, failed = 1;

	build_call(o, arg, &c);
	if (url != NULL && *url != '\0') {
		if (strcmp(o->command, "user list") == 0) {
			fprintf(stderr, "keywarden: the API has no list of users: run user list on "
			    "the data directory (-d)\n");
			json_object_put(c.body);
			return 1;
		}
		if (call_over_http(url, &c, &status, &answer) != 0)
			goto done;
	} else {
		if (kw_cli_setup(o->data_dir) != 0)
			goto done;
		if (need_data_dir() != 0 || open_store(kw_config.data_dir, &st) != 0)
			goto done;
		if (cli_req_init(&cr, st) != 0)
			goto done;
		if (strcmp(o->command, "user list") == 0) {
			rc = kw_store_txn(st, user_list_body, &answer);
			status = rc == KW_OK ? 200 : 500;
		} else {
			rc = call_here(&cr, &c, &status, &answer);
		}
		if (rc != KW_OK)
			say_error(o->command, rc, &cr.req.err);
		kw_arena_free(cr.req.arena);
	}
	if (status >= 200 && status < 300) {
		if (o->json)
			printf("%s\n", json_object_to_json_string_ext(answer, JSON_C_TO_STRING_PRETTY |
			    JSON_C_TO_STRING_NOSLASHESCAPE));
		else
			print_answer(o->command, answer);
		failed = 0;
	} else if (answer != NULL) {
		/* the face's envelope, over HTTP */
		json_object_object_get_ex(answer, "error", &e);
		fprintf(stderr, "keywarden: %s: HTTP %d: %s\n", o->command, status,
		    kw_json_str(e, "message") ? kw_json_str(e, "message") :
		    json_object_to_json_string(answer));
	} else if (url != NULL && *url != '\0') {
		fprintf(stderr, "keywarden: %s: HTTP %d\n", o->command, status);
	}
done:
	json_object_put(answer);
	json_object_put(c.body);
	if (st != NULL)
		kw_store_close(st);
	return finish(failed);
}

/* --- a replicated group: status and removal, over the site's API ---- */

/* The log offset an "FILE/OFFSET" is at, counting each file as lg_max bytes; -1 if malformed. */
static double
lsn_bytes(const char *lsn)
{
	unsigned long file, offset;

	if (lsn == NULL || sscanf(lsn, "%lu/%lu", &file, &offset) != 2)
		return -1;
	return (double)file * 10485760.0 + (double)offset;	/* Berkeley DB's default log file size */
}

/* The "group" member of the /health of the site at url; NULL when it does not answer. */
static json_object *
site_health(const char *url)
{
	struct call c = { .method = "GET", .path = "/health" };
	json_object *answer = NULL, *group;
	int status = 0;

	if (call_over_http(url, &c, &status, &answer) != 0 || answer == NULL)
		return NULL;
	group = json_object_get(json_object_object_get(answer, "group"));
	json_object_put(answer);
	return group;
}

/* Prints the group for a person: each site, its role, whether it is reachable and its lag. */
static void
print_group(json_object *status)
{
	json_object *sites = json_object_object_get(status, "sites");
	const char *master = kw_json_str(status, "master");
	double master_at = -1;

	printf("self    %s\nmaster  %s\n", kw_json_str(status, "self"), master ? master : "none");
	for (size_t pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < json_object_array_length(sites); i++) {
			json_object *site = json_object_array_get_idx(sites, i), *h;
			const char *url = kw_json_str(site, "url"), *role;
			int is_master = json_object_get_boolean(json_object_object_get(site, "master"));
			double at;

			if (is_master != (pass == 0))
				continue;	/* the master first: the others' lag is against it */
			h = url != NULL ? site_health(url) : NULL;
			at = lsn_bytes(kw_json_str(h, "lsn"));
			role = h == NULL ? "unreachable" : kw_json_str(h, "role");
			if (is_master)
				master_at = at;
			printf("site    %s  %s  %s", kw_json_str(site, "address"), url ? url : "-",
			    is_master ? "master" : role ? role : "?");
			if (!is_master && at >= 0 && master_at >= 0)
				printf("  lag %.0f bytes", master_at > at ? master_at - at : 0);
			printf("\n");
			json_object_put(h);
		}
	}
}

/*
 * group status and group remove: the site at --url, or the one this
 * data directory's settings make (KEYWARDEN_GROUP_SELF's URL in
 * KEYWARDEN_GROUP_SITES), with the master key.
 */
int
kw_cli_group(const struct kw_cli_opts *o)
{
	int remove = strcmp(o->command, "group remove") == 0, status = 0, failed = 1;
	const char *url = o->url;
	json_object *answer = NULL, *e = NULL;
	struct call c = { .method = "GET" };

	if (kw_cli_setup(o->data_dir) != 0)
		return finish(1);
	if (url == NULL && (url = kw_group_self_url()) == NULL) {
		fprintf(stderr, "keywarden: %s: this site is in no group (KEYWARDEN_GROUP_SITES "
		    "and KEYWARDEN_GROUP_SELF are not set): give --url\n", o->command);
		return finish(1);
	}
	if (remove) {
		c.method = "POST";
		snprintf(c.path, sizeof(c.path), "/group/remove");
		c.body = json_object_new_object();
		json_object_object_add(c.body, "address", json_object_new_string(o->args[0]));
	} else {
		snprintf(c.path, sizeof(c.path), "/group/status");
	}
	if (call_over_http(url, &c, &status, &answer) != 0)
		goto done;
	if (status >= 200 && status < 300) {
		failed = 0;
		if (o->json)
			printf("%s\n", json_object_to_json_string_ext(answer, JSON_C_TO_STRING_PRETTY |
			    JSON_C_TO_STRING_NOSLASHESCAPE));
		else if (remove)
			printf("removed %s\n", kw_json_str(answer, "removed"));
		else
			print_group(answer);
	} else {
		json_object_object_get_ex(answer, "error", &e);
		fprintf(stderr, "keywarden: %s: HTTP %d: %s\n", o->command, status,
		    kw_json_str(e, "message") ? kw_json_str(e, "message") : "no answer");
	}
done:
	json_object_put(answer);
	json_object_put(c.body);
	return finish(failed);
}
