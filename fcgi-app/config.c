/* config.c: settings from the environment and DATA_DIR/keywarden.conf; the data directory's secrets. */
#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kw.h"

struct kw_config kw_config;

#define CONFIG_FILE "keywarden.conf"
#define MASTER_KEY_FILE "master.key"
#define MASTER_KEY_RETIRED "master.key.old"	/* the key before a rotation, hashed, and its end */
#define MASTER_KEY_IN_USE "master-key.in-use"	/* what a serving keywarden accepts: pid, source, id */

/* Secret material created on first start: name and length in bytes. */
static const struct {
	const char *name;
	size_t len;
} secret_files[] = {
	{ "data.key", KW_AEAD_KEY_LEN },	/* seals provider secrets at rest */
	{ "signing.key", 32 },			/* signs expiry tokens */
};

/* Returns the setting: the environment wins over the config file's value. */
static const char *
setting(const char *name, char file_values[][256], const char *const names[], size_t n)
{
	const char *v = getenv(name);

	if (v != NULL && *v != '\0')
		return v;
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0 && file_values[i][0] != '\0')
			return file_values[i];
	return NULL;
}

static const char *const known[] = {
	"KEYWARDEN_MASTER_KEY", "KEYWARDEN_WORKERS", "KEYWARDEN_MAX_BODY",
	"KEYWARDEN_LOG_LEVEL", "KEYWARDEN_MAINTAIN_SECS", "KEYWARDEN_LEASE_SECS", "PORT",
	"KEYWARDEN_PUBLIC_URL", "KEYWARDEN_PROVISION_TTL", "KEYWARDEN_PROVISION_RPM",
	"KEYWARDEN_MIN_CLIENT_VERSION", "KEYWARDEN_METRICS_TOKEN", "KEYWARDEN_ANON_LEASE_SECS",
	"KEYWARDEN_MAX_KEYS_PER_USER", "KEYWARDEN_INFO_MAX_KEYS", "KEYWARDEN_MAX_TEAM_MEMBERS",
	"KEYWARDEN_DEFAULT_EXPECTED_COST", "KEYWARDEN_DEFAULT_EXPECTED_TOKENS",
	"KEYWARDEN_PROVIDER_ENV", "KEYWARDEN_PRIVATE_MODELS", "KEYWARDEN_MEDIA_MODELS",
	"KEYWARDEN_CA_BUNDLE", "KEYWARDEN_RELAY_PRICES", "KEYWARDEN_RELAY_ALLOW_UNPRICED",
	"KEYWARDEN_RELAY_TRIES", "KEYWARDEN_RELAY_CONNECT_TIMEOUT", "KEYWARDEN_RELAY_TIMEOUT",
	"KEYWARDEN_RELAY_MAX_RESPONSE", "KEYWARDEN_RELAY_EXPECTED_OUTPUT",
	"KEYWARDEN_MAX_WORKERS", "KEYWARDEN_WORKER_IDLE_SECS",
	"KEYWARDEN_USAGE_COMMIT", "KEYWARDEN_USAGE_FLUSH_MS",
	"KEYWARDEN_GROUP_SITES", "KEYWARDEN_GROUP_SELF", "KEYWARDEN_GROUP_PRIORITY",
	"KEYWARDEN_GROUP_ACK", "KEYWARDEN_GROUP_ACK_TIMEOUT_MS", "KEYWARDEN_GROUP_LEASES",
};
#define NKNOWN (sizeof(known) / sizeof(known[0]))

/*
 * Reads DATA_DIR/keywarden.conf (KEY=VALUE lines, # comments) into values,
 * indexed like known[].  A missing file is fine; an unknown key or a
 * malformed line is KW_EINVAL, reported on stderr with its line number.
 */
static enum kw_err
read_config_file(const char *path, char values[][256])
{
	char line[1024];
	FILE *f = fopen(path, "r");
	enum kw_err rc = KW_OK;
	int lineno = 0;

	if (f == NULL)
		return errno == ENOENT ? KW_OK : KW_EINVAL;
	while (fgets(line, sizeof(line), f) != NULL) {
		char *p = line, *eq, *end;
		size_t i;

		lineno++;
		p[strcspn(p, "\r\n")] = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0' || *p == '#')
			continue;
		if ((eq = strchr(p, '=')) == NULL) {
			fprintf(stderr, "keywarden: %s:%d: expected KEY=VALUE\n", path, lineno);
			rc = KW_EINVAL;
			continue;
		}
		for (end = eq; end > p && (end[-1] == ' ' || end[-1] == '\t'); end--)
			;
		*end = '\0';
		for (eq++; *eq == ' ' || *eq == '\t'; eq++)
			;
		for (i = 0; i < NKNOWN && strcmp(known[i], p) != 0; i++)
			;
		if (i == NKNOWN) {
			fprintf(stderr, "keywarden: %s:%d: unknown setting %s\n", path, lineno, p);
			rc = KW_EINVAL;
			continue;
		}
		snprintf(values[i], 256, "%s", eq);
	}
	fclose(f);
	kw_crypto_wipe(line, sizeof(line));
	return rc;
}

/*
 * Where the master key comes from: NULL when from DATA_DIR/master.key (the
 * operator may rotate it with `keywarden master-key rotate`), else the name
 * of the place KEYWARDEN_MASTER_KEY was set, which then owns it.  The file's
 * identity when last read lets a running worker notice a rotation.
 */
static const char *master_key_setting;
static struct {
	dev_t dev;
	ino_t ino;
	struct timespec mtime;
} master_key_read;

/* The master key before the last rotation, while its grace period lasts (hashed; until 0: none). */
static struct {
	unsigned char hash[KW_SHA256_LEN];
	time_t until;
} master_key_retired;

/*
 * Parses a version of dotted numbers ("2.10.0", an optional leading "v")
 * into parts, missing ones 0; the last slot is 1 for a release and 0 for
 * a pre-release ("2.1.0-rc.1" comes before 2.1.0, as in SemVer); "+..."
 * build metadata is ignored.  Returns 0 for anything else (empty,
 * letters, a part over 9 digits, more than KW_VERSION_PARTS - 1 parts).
 */
int
kw_version_parse(const char *s, unsigned long parts[KW_VERSION_PARTS])
{
	size_t n = 0;

	memset(parts, 0, KW_VERSION_PARTS * sizeof(parts[0]));
	parts[KW_VERSION_PARTS - 1] = 1;	/* a release */
	if (s == NULL)
		return 0;
	if (*s == 'v' || *s == 'V')
		s++;
	for (;;) {
		size_t digits = 0;
		unsigned long v = 0;

		while (isdigit((unsigned char)*s)) {
			if (++digits > 9)
				return 0;
			v = v * 10 + (unsigned long)(*s++ - '0');
		}
		if (digits == 0 || n == KW_VERSION_PARTS - 1)
			return 0;
		parts[n++] = v;
		if (*s != '.')
			break;
		s++;
	}
	if (*s == '-')
		parts[KW_VERSION_PARTS - 1] = 0;	/* a pre-release */
	return *s == '\0' || *s == '-' || *s == '+';
}

/*
 * Reads DATA_DIR/master.key.old, "<SHA-256 hex of the old key> <until, epoch
 * seconds>", into master_key_retired; none when absent or malformed.  Read
 * whenever master.key is, since a rotation writes it first.
 */
static void
read_retired_file(void)
{
	char path[4200], hex[KW_SHA256_HEX_LEN + 1];
	long long until = 0;
	FILE *f;

	memset(&master_key_retired, 0, sizeof(master_key_retired));
	snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, MASTER_KEY_RETIRED);
	if ((f = fopen(path, "r")) == NULL)
		return;
	if (fscanf(f, "%64s %lld", hex, &until) == 2 && strlen(hex) == KW_SHA256_HEX_LEN &&
	    kw_crypto_unhex(hex, KW_SHA256_HEX_LEN, master_key_retired.hash) == KW_OK)
		master_key_retired.until = (time_t)until;
	fclose(f);
}

/*
 * 1 when presented is the master key of before the last rotation and its
 * grace period (master-key rotate --grace) has not ended.
 */
int
kw_config_master_key_retired(const char *presented)
{
	unsigned char hash[KW_SHA256_LEN];
	int same;

	if (master_key_retired.until == 0 || kw_clock_now() >= master_key_retired.until)
		return 0;
	kw_crypto_sha256(presented, strlen(presented), hash);
	same = kw_crypto_ct_equal(hash, master_key_retired.hash, sizeof(hash));
	kw_crypto_wipe(hash, sizeof(hash));
	return same;
}

/* The id of a master key: the first 8 hex characters of its SHA-256, never the key. */
void
kw_config_master_key_id(const char *key, char id[9])
{
	char hex[KW_SHA256_HEX_LEN + 1];

	kw_crypto_sha256_hex(key, strlen(key), hex);
	memcpy(id, hex, 8);
	id[8] = '\0';
}

/*
 * At the start of serving: says when a setting makes DATA_DIR/master.key
 * ignored, and writes DATA_DIR/master-key.in-use (0600), "<pid> <source>
 * <id>", so that `master-key show` and `rotate`, run from a shell that may
 * not have the server's environment, tell the truth about the key the
 * server accepts.
 */
void
kw_config_master_key_announce(void)
{
	char path[4200], tmp[4300], id[9] = "-", line[128];
	int fd, n;

	snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, MASTER_KEY_FILE);
	if (master_key_setting != NULL && access(path, F_OK) == 0)
		kw_log_warn("KEYWARDEN_MASTER_KEY is set in %s: DATA_DIR/master.key is ignored, and "
		    "`keywarden master-key rotate` will not change the key this server accepts",
		    master_key_setting);
	if (kw_config.master_key[0] != '\0')
		kw_config_master_key_id(kw_config.master_key, id);
	n = snprintf(line, sizeof(line), "%ld %s %s\n", (long)getpid(),
	    master_key_setting == NULL ? "master.key" : strcmp(master_key_setting,
	    "the environment") == 0 ? "environment" : "keywarden.conf", id);
	snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, MASTER_KEY_IN_USE);
	snprintf(tmp, sizeof(tmp), "%s.%ld", path, (long)getpid());
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
		return;
	if (write(fd, line, (size_t)n) != n || close(fd) != 0 || rename(tmp, path) != 0)
		unlink(tmp);
}

/* At the end of serving: removes DATA_DIR/master-key.in-use when this process wrote it. */
void
kw_config_master_key_unannounce(void)
{
	char path[4200], source[32], id[9];

	if (kw_config_master_key_served(source, id) == (long)getpid()) {
		snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, MASTER_KEY_IN_USE);
		unlink(path);
	}
}

/*
 * The pid of the keywarden serving DATA_DIR, with where its master key
 * comes from (source: "master.key", "environment" or "keywarden.conf",
 * 32 bytes) and the key's id; 0 when none is running.
 */
long
kw_config_master_key_served(char source[32], char id[9])
{
	char path[4200];
	long pid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, MASTER_KEY_IN_USE);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	if (fscanf(f, "%ld %31s %8s", &pid, source, id) != 3 || pid <= 0)
		pid = 0;
	fclose(f);
	if (pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH)
		pid = 0;	/* it stopped without saying so */
	return pid;
}

/* Reads DATA_DIR/master.key into kw_config.master_key; KW_ENOTFOUND when absent. */
static enum kw_err
read_master_key_file(void)
{
	char path[4200];
	struct stat sb;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, MASTER_KEY_FILE);
	if ((f = fopen(path, "r")) == NULL)
		return KW_ENOTFOUND;
	kw_crypto_wipe(kw_config.master_key, sizeof(kw_config.master_key));
	if (fgets(kw_config.master_key, sizeof(kw_config.master_key), f) != NULL)
		kw_config.master_key[strcspn(kw_config.master_key, "\r\n")] = '\0';
	if (fstat(fileno(f), &sb) == 0) {
		master_key_read.dev = sb.st_dev;
		master_key_read.ino = sb.st_ino;
		master_key_read.mtime = sb.st_mtim;
	}
	fclose(f);
	read_retired_file();
	return kw_config.master_key[0] != '\0' ? KW_OK : KW_ENOTFOUND;
}

/*
 * Rereads DATA_DIR/master.key when it is no longer the file read last: a
 * `keywarden master-key rotate` replaces it by a rename, so a running
 * worker stops accepting the old key at its next request, for the cost of
 * one stat.  A missing file keeps the key in hand (a rename never leaves
 * the name missing).  Nothing to do when a setting owns the master key.
 */
void
kw_config_master_key_refresh(void)
{
	char path[4200];
	struct stat sb;

	if (master_key_setting != NULL)
		return;
	snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, MASTER_KEY_FILE);
	if (stat(path, &sb) != 0)
		return;
	if (sb.st_dev == master_key_read.dev && sb.st_ino == master_key_read.ino &&
	    sb.st_mtim.tv_sec == master_key_read.mtime.tv_sec &&
	    sb.st_mtim.tv_nsec == master_key_read.mtime.tv_nsec)
		return;
	read_master_key_file();
}

/* NULL when the master key is DATA_DIR/master.key's; else where KEYWARDEN_MASTER_KEY is set. */
const char *
kw_config_master_key_setting(void)
{
	return master_key_setting;
}

/*
 * Writes DATA_DIR/master.key.old for a rotation: the hash of the key in
 * hand and the end of its grace period, grace seconds from now; removes it
 * when grace is 0, so the old key stops at once.  0, or -1 with errno.
 */
static int
write_retired(long grace)
{
	char path[4200], tmp[4300], hex[KW_SHA256_HEX_LEN + 1], line[128];
	int fd, len, rc = 0;

	snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, MASTER_KEY_RETIRED);
	if (grace <= 0 || kw_config.master_key[0] == '\0')
		return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
	kw_crypto_sha256_hex(kw_config.master_key, strlen(kw_config.master_key), hex);
	len = snprintf(line, sizeof(line), "%s %lld\n", hex, (long long)(kw_clock_now() + grace));
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
		return -1;
	if (write(fd, line, (size_t)len) != len || fsync(fd) != 0)
		rc = -1;
	if (close(fd) != 0 || (rc == 0 && rename(tmp, path) != 0))
		rc = -1;
	if (rc != 0)
		unlink(tmp);
	return rc;
}

/*
 * Replaces DATA_DIR/master.key with a new random key: written beside it
 * (0600, flushed), renamed over it, the directory flushed.  The new key is
 * copied into out (n bytes, at least 64) for the one time it is shown, and
 * becomes kw_config.master_key.  KW_EFORBIDDEN when a setting owns the
 * master key; KW_EUNAVAIL when the file cannot be written.  With grace > 0
 * the old key is still accepted for grace seconds (write_retired).
 */
enum kw_err
kw_config_master_key_rotate(char *out, size_t n, long grace)
{
	char path[4200], tmp[4300], key[64];
	unsigned char raw[16];
	enum kw_err rc = KW_OK;
	size_t len;
	int fd, dir;

	if (master_key_setting != NULL)
		return KW_EFORBIDDEN;
	if (n < sizeof(key))
		return KW_EINVAL;
	memcpy(key, "sk-", 3);
	kw_crypto_random(raw, sizeof(raw));
	len = 3 + kw_crypto_b64url(raw, sizeof(raw), key + 3);
	key[len] = '\n';
	if (write_retired(grace) != 0)
		return KW_EUNAVAIL;
	snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, MASTER_KEY_FILE);
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
		rc = KW_EUNAVAIL;
	else if (write(fd, key, len + 1) != (ssize_t)(len + 1) || fsync(fd) != 0)
		rc = KW_EUNAVAIL;
	if (fd >= 0 && close(fd) != 0)
		rc = KW_EUNAVAIL;
	if (rc == KW_OK && rename(tmp, path) != 0)
		rc = KW_EUNAVAIL;
	if (rc != KW_OK) {
		unlink(tmp);
	} else if ((dir = open(kw_config.data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		(void)fsync(dir);	/* the rename itself survives a crash */
		close(dir);
	}
	key[len] = '\0';
	if (rc == KW_OK) {
		snprintf(out, n, "%s", key);
		read_master_key_file();
	}
	kw_crypto_wipe(key, sizeof(key));
	kw_crypto_wipe(raw, sizeof(raw));
	return rc;
}

/* Parses a positive decimal within [lo, hi] into *out; KW_EINVAL otherwise. */
static enum kw_err
parse_uint(const char *name, const char *s, unsigned long lo, unsigned long hi,
    unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || *s == '-' || v < lo || v > hi) {
		fprintf(stderr, "keywarden: %s must be a whole number from %lu to %lu\n",
		    name, lo, hi);
		return KW_EINVAL;
	}
	*out = v;
	return KW_OK;
}

/* Parses a decimal number within [lo, hi] into *out; KW_EINVAL otherwise. */
static enum kw_err
parse_num(const char *name, const char *s, double lo, double hi, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
		fprintf(stderr, "keywarden: %s must be a number from %g to %g\n", name, lo, hi);
		return KW_EINVAL;
	}
	*out = v;
	return KW_OK;
}

/* A replicated group's settings (group.c), defaults first; errors are explained on stderr. */
static enum kw_err
load_group(char values[][256])
{
	static const char *const acks[] = {
		[KW_ACK_QUORUM] = "quorum", [KW_ACK_ALL] = "all", [KW_ACK_ONE] = "one",
		[KW_ACK_NONE] = "none",
	};
	const char *v;
	unsigned long n;

	kw_config.group_priority = 100;
	kw_config.group_ack = KW_ACK_QUORUM;
	kw_config.group_ack_timeout_ms = 2000;
	kw_config.group_leases = 0;
	if ((v = setting("KEYWARDEN_GROUP_PRIORITY", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_GROUP_PRIORITY", v, 0, 1000000, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.group_priority = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_GROUP_ACK", values, known, NKNOWN)) != NULL) {
		size_t i;

		for (i = 0; i < sizeof(acks) / sizeof(acks[0]) && strcmp(acks[i], v) != 0; i++)
			;
		if (i == sizeof(acks) / sizeof(acks[0])) {
			fprintf(stderr, "keywarden: KEYWARDEN_GROUP_ACK must be quorum, all, one "
			    "or none\n");
			return KW_EINVAL;
		}
		kw_config.group_ack = (enum kw_ack)i;
	}
	if ((v = setting("KEYWARDEN_GROUP_ACK_TIMEOUT_MS", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_GROUP_ACK_TIMEOUT_MS", v, 1, 60000, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.group_ack_timeout_ms = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_GROUP_LEASES", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_GROUP_LEASES", v, 0, 1, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.group_leases = (int)n;
	}
	return kw_group_parse(setting("KEYWARDEN_GROUP_SITES", values, known, NKNOWN),
	    setting("KEYWARDEN_GROUP_SELF", values, known, NKNOWN));
}

/* The relay's settings (relay.c), defaults first; errors are explained on stderr. */
static enum kw_err
load_relay(char values[][256])
{
	static const struct {
		const char *name;
		unsigned *out;
		unsigned long lo, hi, otherwise;
	} numbers[] = {
		{ "KEYWARDEN_RELAY_TRIES", &kw_config.relay_tries, 1, 10, 3 },
		{ "KEYWARDEN_RELAY_CONNECT_TIMEOUT", &kw_config.relay_connect_timeout, 1, 300, 10 },
		{ "KEYWARDEN_RELAY_TIMEOUT", &kw_config.relay_timeout, 1, 86400, 600 },
		{ "KEYWARDEN_RELAY_EXPECTED_OUTPUT", &kw_config.relay_expected_output, 0, 10000000,
		    256 },
	};
	static const struct {
		const char *name;
		char *out;
		size_t n;
	} paths[] = {
		{ "KEYWARDEN_CA_BUNDLE", kw_config.ca_bundle, sizeof(kw_config.ca_bundle) },
		{ "KEYWARDEN_RELAY_PRICES", kw_config.relay_prices, sizeof(kw_config.relay_prices) },
	};
	const char *v;
	unsigned long n;

	for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
		*numbers[i].out = (unsigned)numbers[i].otherwise;
		if ((v = setting(numbers[i].name, values, known, NKNOWN)) == NULL)
			continue;
		if (parse_uint(numbers[i].name, v, numbers[i].lo, numbers[i].hi, &n) != KW_OK)
			return KW_EINVAL;
		*numbers[i].out = (unsigned)n;
	}
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		paths[i].out[0] = '\0';
		if ((v = setting(paths[i].name, values, known, NKNOWN)) == NULL)
			continue;
		if (v[0] != '/' || strlen(v) >= paths[i].n) {
			fprintf(stderr, "keywarden: %s must be an absolute path under %zu characters\n",
			    paths[i].name, paths[i].n);
			return KW_EINVAL;
		}
		snprintf(paths[i].out, paths[i].n, "%s", v);
	}
	kw_config.relay_max_response = 32ul << 20;
	if ((v = setting("KEYWARDEN_RELAY_MAX_RESPONSE", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_RELAY_MAX_RESPONSE", v, 1024, 1ul << 30, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.relay_max_response = n;
	}
	kw_config.relay_allow_unpriced = 0;
	if ((v = setting("KEYWARDEN_RELAY_ALLOW_UNPRICED", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_RELAY_ALLOW_UNPRICED", v, 0, 1, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.relay_allow_unpriced = (int)n;
	}
	return KW_OK;
}

/*
 * Fills kw_config from (in rising precedence) defaults, the data
 * directory's keywarden.conf, and the environment.  data_dir_override, when
 * not NULL, replaces KEYWARDEN_DATA_DIR.  Errors are explained on stderr.
 */
/*
 * Copies v, a model table setting (NULL: unset), into out (n bytes):
 * model names and shell wildcards, comma-separated; "none" empties it.
 * KW_EINVAL, said on stderr, for anything else.
 */
static enum kw_err
model_list(const char *name, const char *v, char *out, size_t n)
{
	if (v == NULL)
		return KW_OK;
	if (strcmp(v, "none") == 0) {
		out[0] = '\0';
		return KW_OK;
	}
	if (strlen(v) >= n || strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789._:/@-*?,") != strlen(v)) {
		fprintf(stderr, "keywarden: %s must be model names or patterns (letters, digits, "
		    "._:/@- and the wildcards * and ?), comma-separated, under %zu characters, or "
		    "none\n", name, n);
		return KW_EINVAL;
	}
	snprintf(out, n, "%s", v);
	return KW_OK;
}

int
kw_config_list_match(const char *list, const char *name)
{
	const char *p = list;

	while (*p != '\0') {
		size_t len = strcspn(p, ",");
		char pattern[256];

		if (len > 0 && len < sizeof(pattern)) {
			memcpy(pattern, p, len);
			pattern[len] = '\0';
			if (fnmatch(pattern, name, 0) == 0)
				return 1;
		}
		p += len + (p[len] == ',');
	}
	return 0;
}

enum kw_err
kw_config_load(const char *data_dir_override)
{
	char values[NKNOWN][256], path[4200];
	const char *dir, *v;
	unsigned long n;
	long cores;
	enum kw_err rc;

	memset(values, 0, sizeof(values));
	kw_crypto_wipe(kw_config.master_key, sizeof(kw_config.master_key));
	kw_crypto_wipe(kw_config.metrics_token, sizeof(kw_config.metrics_token));
	dir = data_dir_override ? data_dir_override : getenv("KEYWARDEN_DATA_DIR");
	if (dir == NULL || *dir == '\0')
		dir = "./var";
	if (dir[0] == '/') {
		snprintf(kw_config.data_dir, sizeof(kw_config.data_dir), "%s", dir);
	} else {
		char cwd[2048];

		if (getcwd(cwd, sizeof(cwd)) == NULL)
			return KW_EINVAL;
		snprintf(kw_config.data_dir, sizeof(kw_config.data_dir), "%s/%s", cwd,
		    strncmp(dir, "./", 2) == 0 ? dir + 2 : dir);
	}
	snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, CONFIG_FILE);
	if ((rc = read_config_file(path, values)) != KW_OK)
		return rc;

	cores = sysconf(_SC_NPROCESSORS_ONLN);
	kw_config.workers = cores > 0 ? (unsigned)cores : 1;
	kw_config.max_workers = 0;	/* the default follows the workers, below */
	kw_config.worker_idle_secs = 30;
	kw_config.max_body = 1 << 20;
	kw_config.maintain_secs = 60;
	kw_config.lease_secs = 600;
	kw_config.anon_lease_secs = 60;
	kw_config.max_keys_per_user = 1000;
	kw_config.info_max_keys = 100;
	kw_config.max_team_members = 1000;
	kw_config.default_expected_cost = 0.01;
	kw_config.default_expected_tokens = 1000;
	kw_config.provision_ttl = 3600;
	kw_config.provision_rpm = 30;
	snprintf(kw_config.public_url, sizeof(kw_config.public_url), "http://127.0.0.1:4000");
	kw_config.log_level = KW_LOG_INFO;
	snprintf(kw_config.provider_env, sizeof(kw_config.provider_env), "%s",
	    KW_PROVIDER_ENV_DEFAULT);
	snprintf(kw_config.private_models, sizeof(kw_config.private_models), "%s",
	    KW_PRIVATE_MODELS_DEFAULT);
	kw_config.media_models[0] = '\0';
	kw_config.usage_async = 0;
	kw_config.usage_flush_ms = 200;

	if ((v = setting("KEYWARDEN_WORKERS", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_WORKERS", v, 1, KW_MAX_WORKERS, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.workers = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_MAX_WORKERS", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_MAX_WORKERS", v, 1, KW_MAX_WORKERS, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.max_workers = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_WORKER_IDLE_SECS", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_WORKER_IDLE_SECS", v, 1, 86400, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.worker_idle_secs = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_USAGE_COMMIT", values, known, NKNOWN)) != NULL) {
		if (strcmp(v, "durable") != 0 && strcmp(v, "async") != 0) {
			fprintf(stderr, "keywarden: KEYWARDEN_USAGE_COMMIT must be durable or async\n");
			return KW_EINVAL;
		}
		kw_config.usage_async = strcmp(v, "async") == 0;
	}
	if ((v = setting("KEYWARDEN_USAGE_FLUSH_MS", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_USAGE_FLUSH_MS", v, 1, 10000, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.usage_flush_ms = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_MAX_BODY", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_MAX_BODY", v, 1024, 64ul << 20, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.max_body = n;
	}
	if ((v = setting("KEYWARDEN_MAINTAIN_SECS", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_MAINTAIN_SECS", v, 1, 86400, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.maintain_secs = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_LEASE_SECS", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_LEASE_SECS", v, 1, 86400, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.lease_secs = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_ANON_LEASE_SECS", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_ANON_LEASE_SECS", v, 1, 86400, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.anon_lease_secs = (unsigned)n;
	}
	if (kw_config.anon_lease_secs > kw_config.lease_secs)
		kw_config.anon_lease_secs = kw_config.lease_secs;	/* never longer than a named lease */
	if ((v = setting("KEYWARDEN_MAX_KEYS_PER_USER", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_MAX_KEYS_PER_USER", v, 0, 10000000, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.max_keys_per_user = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_INFO_MAX_KEYS", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_INFO_MAX_KEYS", v, 1, 10000, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.info_max_keys = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_MAX_TEAM_MEMBERS", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_MAX_TEAM_MEMBERS", v, 0, 10000000, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.max_team_members = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_DEFAULT_EXPECTED_COST", values, known, NKNOWN)) != NULL &&
	    parse_num("KEYWARDEN_DEFAULT_EXPECTED_COST", v, 0, 1e6,
	    &kw_config.default_expected_cost) != KW_OK)
		return KW_EINVAL;
	if ((v = setting("KEYWARDEN_DEFAULT_EXPECTED_TOKENS", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_DEFAULT_EXPECTED_TOKENS", v, 0, 1000000000, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.default_expected_tokens = (int64_t)n;
	}
	if ((v = setting("KEYWARDEN_PROVISION_TTL", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_PROVISION_TTL", v, 1, KW_PROVISION_TTL_MAX, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.provision_ttl = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_PROVISION_RPM", values, known, NKNOWN)) != NULL) {
		if (parse_uint("KEYWARDEN_PROVISION_RPM", v, 1, 1000000, &n) != KW_OK)
			return KW_EINVAL;
		kw_config.provision_rpm = (unsigned)n;
	}
	if ((v = setting("KEYWARDEN_PUBLIC_URL", values, known, NKNOWN)) != NULL)
		snprintf(kw_config.public_url, sizeof(kw_config.public_url), "%s", v);
	if ((v = setting("KEYWARDEN_MIN_CLIENT_VERSION", values, known, NKNOWN)) != NULL) {
		unsigned long parts[KW_VERSION_PARTS];

		if (strlen(v) >= sizeof(kw_config.min_client_version) || !kw_version_parse(v, parts)) {
			fprintf(stderr, "keywarden: KEYWARDEN_MIN_CLIENT_VERSION must be a version of "
			    "dotted numbers, such as 2.1.0\n");
			return KW_EINVAL;
		}
		snprintf(kw_config.min_client_version, sizeof(kw_config.min_client_version), "%s", v);
	}
	if ((v = setting("KEYWARDEN_LOG_LEVEL", values, known, NKNOWN)) != NULL &&
	    kw_log_parse_level(v, &kw_config.log_level) != KW_OK) {
		fprintf(stderr, "keywarden: KEYWARDEN_LOG_LEVEL must be error, warn, info or debug\n");
		return KW_EINVAL;
	}
	kw_log_threshold = kw_config.log_level;
	if ((v = setting("KEYWARDEN_METRICS_TOKEN", values, known, NKNOWN)) != NULL) {
		/* a bearer for a scraper that holds no key; guessable, it would open the counters */
		if (strlen(v) < 16 || strlen(v) >= sizeof(kw_config.metrics_token)) {
			fprintf(stderr, "keywarden: KEYWARDEN_METRICS_TOKEN must be 16 to 255 "
			    "characters\n");
			kw_crypto_wipe(values, sizeof(values));
			return KW_EINVAL;
		}
		snprintf(kw_config.metrics_token, sizeof(kw_config.metrics_token), "%s", v);
	}
	if ((v = setting("KEYWARDEN_PROVIDER_ENV", values, known, NKNOWN)) != NULL) {
		/* names and shell wildcards, comma-separated: what a provider key's env.NAME may name */
		if (strlen(v) >= sizeof(kw_config.provider_env) ||
		    strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_*?,") !=
		    strlen(v)) {
			fprintf(stderr, "keywarden: KEYWARDEN_PROVIDER_ENV must be variable names or "
			    "patterns (letters, digits, _, * and ?), comma-separated, under 256 "
			    "characters\n");
			kw_crypto_wipe(values, sizeof(values));
			return KW_EINVAL;
		}
		snprintf(kw_config.provider_env, sizeof(kw_config.provider_env), "%s", v);
	}
	if (model_list("KEYWARDEN_PRIVATE_MODELS", setting("KEYWARDEN_PRIVATE_MODELS", values,
	    known, NKNOWN), kw_config.private_models, sizeof(kw_config.private_models)) != KW_OK ||
	    model_list("KEYWARDEN_MEDIA_MODELS", setting("KEYWARDEN_MEDIA_MODELS", values, known,
	    NKNOWN), kw_config.media_models, sizeof(kw_config.media_models)) != KW_OK) {
		kw_crypto_wipe(values, sizeof(values));
		return KW_EINVAL;
	}
	if ((rc = load_relay(values)) != KW_OK || (rc = load_group(values)) != KW_OK) {
		kw_crypto_wipe(values, sizeof(values));
		return rc;
	}
	master_key_setting = NULL;
	if ((v = setting("KEYWARDEN_MASTER_KEY", values, known, NKNOWN)) != NULL) {
		master_key_setting = v == getenv("KEYWARDEN_MASTER_KEY") ? "the environment" :
		    "DATA_DIR/keywarden.conf";
		/*
		 * What LiteLLM's proxy takes: any key that starts with sk- (its
		 * docs and tests use sk-1234); kw_config_master_key_warn says
		 * at start when it is weak.  The bound is the buffer's.
		 */
		if (strncmp(v, "sk-", 3) != 0 || strlen(v) < 4 ||
		    strlen(v) >= sizeof(kw_config.master_key)) {
			fprintf(stderr, "keywarden: KEYWARDEN_MASTER_KEY must start with sk- "
			    "and be 4 to 255 characters\n");
			kw_crypto_wipe(values, sizeof(values));
			return KW_EINVAL;
		}
		snprintf(kw_config.master_key, sizeof(kw_config.master_key), "%s", v);
	} else {
		read_master_key_file();
	}
	kw_crypto_wipe(values, sizeof(values));
	return KW_OK;
}

/*
 * Why key, a master key, is easy to guess, or NULL when it is not: shorter
 * than KW_MASTER_KEY_STRONG characters, or after its sk- only digits, one
 * character repeated, or a run such as 1234 or abcd.  LiteLLM's
 * master_key_policy.py (INSECURE_MASTER_KEYS, insecure_master_key_warning)
 * names its docs' sk-1234 as the key everyone knows.
 */
static const char *
weak_master_key(const char *key)
{
	const char *rest = key + 3;
	size_t n = strlen(key), digits = strspn(rest, "0123456789"), same = 1, run = 1;

	for (size_t i = 1; rest[i] != '\0'; i++) {
		same += rest[i] == rest[0];
		run += rest[i] == rest[i - 1] + 1;
	}
	if (rest[0] != '\0' && (same == strlen(rest) || run == strlen(rest) ||
	    digits == strlen(rest)))
		return "guessable (digits only, one character repeated, or a run like 1234; "
		    "LiteLLM's docs use one such)";
	if (n < KW_MASTER_KEY_STRONG)
		return "short";
	return NULL;
}

/*
 * Logs one warning, naming neither the key nor any part of it, when the
 * master key is weak (weak_master_key).  The pool manager calls it once,
 * at start.  A key keywarden generated is never weak.
 */
void
kw_config_master_key_warn(void)
{
	const char *why;

	if (kw_config.master_key[0] == '\0' ||
	    (why = weak_master_key(kw_config.master_key)) == NULL)
		return;
	kw_log_warn("the master key (from %s) is %zu characters and %s: anyone who guesses it "
	    "administers every key; set one of %d or more random characters",
	    master_key_setting ? master_key_setting : "DATA_DIR/master.key",
	    strlen(kw_config.master_key), why, KW_MASTER_KEY_STRONG);
}

/*
 * Creates path with mode 0600 holding len bytes of content, unless it
 * exists.  Returns 1 when created, 0 when it already existed, -1 on error.
 */
static int
create_secret_file(const char *path, const char *content, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ssize_t w;

	if (fd < 0)
		return errno == EEXIST ? 0 : -1;
	w = write(fd, content, len);
	if (w != (ssize_t)len || fsync(fd) != 0) {
		close(fd);
		unlink(path);
		return -1;
	}
	return close(fd) == 0 ? 1 : -1;
}

/*
 * Creates the data directory (0700) and its secret material (0600) where
 * missing: the server's data and signing keys and, when no master key is
 * configured, a new random master key.  print_new_master_key prints a newly
 * generated master key on stdout, the one time it is ever shown; otherwise
 * only its file's path is logged.  Safe to run concurrently and repeatedly.
 */
enum kw_err
kw_config_init_data_dir(int print_new_master_key)
{
	char path[4200], hex[2 * 64 + 2];
	unsigned char raw[64];
	int made;

	struct stat sb;

	if (mkdir(kw_config.data_dir, 0700) != 0 && errno != EEXIST) {
		kw_log_error("cannot create the data directory: %s", strerror(errno));
		return KW_EUNAVAIL;
	}
	/*
	 * 0700 whatever the umask, and whoever made the directory: one that a
	 * script created before (mkdir -p under umask 022 makes it 0755) is
	 * closed too, since nobody but its owner has business in it.
	 */
	if (stat(kw_config.data_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		kw_log_error("the data directory %s is not a directory", kw_config.data_dir);
		return KW_EUNAVAIL;
	}
	if ((sb.st_mode & 07777) != 0700 && sb.st_uid == geteuid()) {
		if (chmod(kw_config.data_dir, 0700) != 0) {
			kw_log_error("cannot make the data directory 0700: %s", strerror(errno));
			return KW_EUNAVAIL;
		}
		if ((sb.st_mode & 077) != 0)
			kw_log_info("the data directory was mode %04o; it is 0700 now",
			    (unsigned)(sb.st_mode & 07777));
	}
	for (size_t i = 0; i < sizeof(secret_files) / sizeof(secret_files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, secret_files[i].name);
		kw_crypto_random(raw, secret_files[i].len);
		kw_crypto_hex(raw, secret_files[i].len, hex);
		hex[2 * secret_files[i].len] = '\n';
		made = create_secret_file(path, hex, 2 * secret_files[i].len + 1);
		kw_crypto_wipe(raw, sizeof(raw));
		kw_crypto_wipe(hex, sizeof(hex));
		if (made < 0) {
			kw_log_error("cannot create %s: %s", secret_files[i].name, strerror(errno));
			return KW_EUNAVAIL;
		}
	}
	if (kw_config.master_key[0] == '\0') {
		char key[64];
		size_t n;

		memcpy(key, "sk-", 3);
		kw_crypto_random(raw, 16);
		n = 3 + kw_crypto_b64url(raw, 16, key + 3);
		key[n] = '\n';
		snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, MASTER_KEY_FILE);
		made = create_secret_file(path, key, n + 1);
		key[n] = '\0';
		if (made == 1) {
			snprintf(kw_config.master_key, sizeof(kw_config.master_key), "%s", key);
			if (print_new_master_key)
				printf("keywarden: generated a master key; it is shown only this once "
				    "and stored in %s:\n\n    %s\n\n", path, key);
			else
				kw_log_info("generated a master key, stored in %s", path);
		} else if (made == 0) {
			/* another process created it first: use theirs */
			made = read_master_key_file() == KW_OK ? 0 : -1;
		}
		kw_crypto_wipe(key, sizeof(key));
		kw_crypto_wipe(raw, sizeof(raw));
		if (made < 0) {
			kw_log_error("cannot create %s", MASTER_KEY_FILE);
			return KW_EUNAVAIL;
		}
	}
	return KW_OK;
}

/*
 * Reads the data directory's secret NAME (hex on one line) into out, which
 * must hold exactly n bytes.  KW_EUNAVAIL when missing or malformed.
 */
enum kw_err
kw_config_load_secret(const char *name, unsigned char *out, size_t n)
{
	char path[4200], hex[2 * 64 + 3];
	enum kw_err rc = KW_EUNAVAIL;
	FILE *f;

	if (2 * n + 2 > sizeof(hex))
		return KW_EINVAL;
	snprintf(path, sizeof(path), "%s/%s", kw_config.data_dir, name);
	if ((f = fopen(path, "r")) == NULL)
		return KW_EUNAVAIL;
	if (fgets(hex, sizeof(hex), f) != NULL) {
		size_t len = strcspn(hex, "\r\n");

		if (len == 2 * n && kw_crypto_unhex(hex, len, out) == KW_OK)
			rc = KW_OK;
	}
	fclose(f);
	kw_crypto_wipe(hex, sizeof(hex));
	return rc;
}
