/* store.c: the Berkeley DB transactional environment and the one retry-on-deadlock transaction helper. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <db.h>

#include "kw.h"

#define SCHEMA_KEY "schema_version"
#define TXN_RETRIES 50
/*
 * The shared cache.  Every worker maps it, so what a worker touches of it
 * counts in that worker's resident set: 6 MiB keeps a worker under 16 MB
 * and still holds the pages every request reads (summaries, the upper
 * levels of the indexes); the kernel's page cache holds the rest.
 */
#define CACHE_BYTES (6u << 20)
#define THREAD_SLOTS 512	/* processes tracked for failchk */
/*
 * What a pool at its cap (KW_MAX_WORKERS) asks of the regions, with room
 * for the manager and the command-line tools: every process holds a locker
 * and a registered file name for each database it opens, and may run a
 * transaction, so Berkeley DB's defaults (1000 lockers, a log region of
 * some 100 KiB, 100 transactions) run out before 64 workers.  The regions
 * are sized when the environment is created; only the pages in use count
 * in a worker's resident set.
 */
#define LOCKERS (THREAD_SLOTS * (KW_DB_COUNT + 2))
#define LOCKS 12000
#define TXNS THREAD_SLOTS
#define LOG_REGION_BYTES (2u << 20)
/*
 * The log buffer, in the log region: group commit fills it with the records
 * of every transaction waiting for the next flush (a /key/generate writes
 * some 3 KiB), and one that fills before the flush is written out in the
 * middle (Berkeley DB's default of 32 KiB overflowed with 8 commits a
 * flush).  Like the regions, it is sized when the environment is created.
 */
#define LOG_BUFFER_BYTES (256u << 10)

/* What the last store calls met that a replicated site can remedy (kw_store_trouble). */
static enum kw_store_trouble trouble;

struct kw_store {
	DB_ENV *env;
	DB *dbs[KW_DB_COUNT];
	db_mutex_t handle_mutexes[KW_DB_COUNT];	/* see single_threaded */
	DB_LSN deferred;	/* the last KW_TXN_FLUSH_AFTER_ANSWER commit awaiting its flush; file 0 none */
};

static const struct {
	const char *file;
	DBTYPE type;
	u_int32_t flags;	/* set before open: DB_DUP, DB_RECNUM */
} db_files[KW_DB_COUNT] = {
	[KW_DB_META] = { "meta.db", DB_BTREE, 0 },
	[KW_DB_KEYS] = { "keys.db", DB_BTREE, 0 },
	[KW_DB_ALIASES] = { "aliases.db", DB_BTREE, 0 },
	[KW_DB_KEY_OWNERS] = { "key_owners.db", DB_BTREE, DB_DUP | DB_DUPSORT },
	[KW_DB_KEY_CREATED] = { "key_created.db", DB_BTREE, DB_RECNUM },
	[KW_DB_RETIRED] = { "retired.db", DB_BTREE, 0 },
	[KW_DB_TEAMS] = { "teams.db", DB_BTREE, 0 },
	[KW_DB_USERS] = { "users.db", DB_BTREE, 0 },
	[KW_DB_AUDIT] = { "audit.db", DB_RECNO, 0 },
	[KW_DB_COUNTERS] = { "counters.db", DB_BTREE, 0 },
	[KW_DB_LEASES] = { "leases.db", DB_BTREE, 0 },
	[KW_DB_RECEIPTS] = { "receipts.db", DB_BTREE, 0 },
	[KW_DB_PROVIDERS] = { "providers.db", DB_BTREE, 0 },
	[KW_DB_PROVIDER_KEYS] = { "provider_keys.db", DB_BTREE, 0 },
	[KW_DB_PROVIDER_INDEX] = { "provider_index.db", DB_BTREE, 0 },
	[KW_DB_SUMMARIES] = { "summaries.db", DB_BTREE, 0 },
	[KW_DB_ORGS] = { "organizations.db", DB_BTREE, 0 },
	[KW_DB_BREACHES] = { "breaches.db", DB_BTREE, 0 },
	[KW_DB_BUDGETS] = { "budgets.db", DB_BTREE, 0 },
	[KW_DB_END_USERS] = { "end_users.db", DB_BTREE, 0 },
	[KW_DB_SPEND_HOURS] = { "spend_hours.db", DB_BTREE, 0 },
};

/*
 * Maps a Berkeley DB return code to an internal error.  The one place that
 * knows Berkeley DB's codes; DB_RUNRECOVERY is logged here because the
 * caller's only remedy is to exit so the pool can recover the environment.
 */
enum kw_err
kw_store_err(int db_rc)
{
	switch (db_rc) {
	case 0:
		return KW_OK;
	case DB_LOCK_DEADLOCK:
	case DB_LOCK_NOTGRANTED:
		return KW_EDEADLOCK;
	case DB_NOTFOUND:
	case DB_KEYEMPTY:
		return KW_ENOTFOUND;
	case DB_KEYEXIST:
		return KW_ECONFLICT;
	case ENOMEM:
	case DB_BUFFER_SMALL:
		return KW_ENOMEM;
	case DB_RUNRECOVERY:
		kw_log_error("store: %s", db_strerror(db_rc));
		return KW_ERUNRECOVERY;
	case EACCES:
		/* a replica's databases are read-only: the master takes the write */
		if (kw_group_enabled())
			trouble = KW_TROUBLE_NOT_MASTER;
		return KW_EUNAVAIL;
	case DB_REP_HANDLE_DEAD:
		trouble = KW_TROUBLE_HANDLE_DEAD;
		return KW_EUNAVAIL;
	case DB_REP_LOCKOUT:
		if (trouble == KW_TROUBLE_NONE)
			trouble = KW_TROUBLE_LOCKOUT;
		return KW_EUNAVAIL;
	default:
		return KW_EUNAVAIL;
	}
}

enum kw_store_trouble
kw_store_trouble(void)
{
	return trouble;
}

void
kw_store_trouble_clear(void)
{
	trouble = KW_TROUBLE_NONE;
}

/*
 * failchk's question: is the process that holds a lock or a transaction
 * still alive?  Workers are our children, so a dead one is reaped (and its
 * pid gone) before the manager calls failchk.
 */
static int
is_alive(DB_ENV *env, pid_t pid, db_threadid_t tid, u_int32_t flags)
{
	(void)env;
	(void)tid;
	(void)flags;
	return kill(pid, 0) == 0 || errno == EPERM;
}

/* Berkeley DB's informational messages (failchk's cleanup notes) go to the debug log. */
static void
db_message_log(const DB_ENV *env, const char *msg)
{
	(void)env;
	kw_log_debug("berkeley db: %s", msg);
}

static void
db_error_log(const DB_ENV *env, const char *prefix, const char *msg)
{
	(void)env;
	(void)prefix;
	/*
	 * Routine, not errors: a replica refusing a write (the request goes
	 * to the master) or a commit token (it writes nothing); a master
	 * bringing a new replica up to date, which tries every file of the
	 * data directory as a database (data.key and the others are not);
	 * a tool joining regions made with other flags (open_env tries the
	 * others).
	 */
	if ((kw_group_enabled() && strstr(msg, "read-only") != NULL) ||
	    strstr(msg, "replication client") != NULL || strstr(msg, "fop_read_meta") != NULL ||
	    strstr(msg, "incompatible with existing environment") != NULL)
		kw_log_debug("berkeley db: %s", msg);
	else
		kw_log_error("berkeley db: %s", msg);
}

/* Reads the recorded schema version into *version (0 when none is recorded). */
static enum kw_err
get_schema_version(struct kw_store *st, DB_TXN *txn, unsigned *version)
{
	char buf[16];
	DBT key = { .data = SCHEMA_KEY, .size = sizeof(SCHEMA_KEY) - 1 };
	DBT val = { .data = buf, .ulen = sizeof(buf) - 1, .flags = DB_DBT_USERMEM };
	int rc = st->dbs[KW_DB_META]->get(st->dbs[KW_DB_META], txn, &key, &val, 0);

	if (rc == DB_NOTFOUND) {
		*version = 0;
		return KW_OK;
	}
	if (rc != 0)
		return kw_store_err(rc);
	buf[val.size] = '\0';
	*version = (unsigned)strtoul(buf, NULL, 10);
	return *version > 0 ? KW_OK : KW_EUNAVAIL;
}

/* The newer schema version the last open refused; 0 when none (kw_store_refused_schema). */
static unsigned refused_schema;

/*
 * Records the schema version of a new data directory; refuses one written
 * by a newer keywarden.  Older versions migrate here, inside this same
 * transaction.
 */
static enum kw_err
settle_schema(struct kw_store *st, DB_TXN *txn, void *baton)
{
	char buf[16];
	unsigned version;
	enum kw_err rc;
	DBT key = { .data = SCHEMA_KEY, .size = sizeof(SCHEMA_KEY) - 1 };
	DBT val = { .data = buf };

	(void)baton;
	if ((rc = get_schema_version(st, txn, &version)) != KW_OK)
		return rc;
	if (version > KW_SCHEMA_VERSION) {
		kw_log_error("the data directory has schema version %u, written by a newer "
		    "keywarden; this keywarden %s reads schema %u and older: run the newer "
		    "keywarden, or restore a backup made before the upgrade", version, KW_VERSION,
		    KW_SCHEMA_VERSION);
		refused_schema = version;
		return KW_EUNAVAIL;
	}
	if (version == KW_SCHEMA_VERSION)
		return KW_OK;
	/* schema 1 had keys and aliases only: index its keys by owner and creation time */
	if (version == 1 && (rc = kw_keys_reindex(st, txn)) != KW_OK)
		return rc;
	/* schema 3 honours a capability only when a proxy admin granted it */
	if (version >= 1 && version < 3 && (rc = kw_keys_revoke_self_grants(st, txn)) != KW_OK)
		return rc;
	val.size = (u_int32_t)snprintf(buf, sizeof(buf), "%u", KW_SCHEMA_VERSION);
	return kw_store_err(st->dbs[KW_DB_META]->put(st->dbs[KW_DB_META], txn, &key, &val, 0));
}

/*
 * A replicated site's environment must be opened DB_THREAD (its replication
 * manager runs threads), and every database handle opened in it is then
 * free-threaded, whose reads Berkeley DB refuses unless each DBT asks for
 * memory of its own (DB_DBT_MALLOC and the like).  Our handles are used by
 * the one thread of their process only, and Berkeley DB 5.3 tells a
 * free-threaded handle by its mutex (DB_IS_THREADED): the handle keeps
 * that mutex aside while open, so its reads return data in the handle's
 * own memory, as everywhere else in keywarden.  kw_store_close gives the
 * mutex back before it closes the handle, which frees it.
 */
static void
single_threaded(struct kw_store *st, enum kw_db which)
{
	u_int32_t flags = 0;

	if (st->env->get_open_flags(st->env, &flags) == 0 && (flags & DB_THREAD)) {
		st->handle_mutexes[which] = st->dbs[which]->mutex;
		st->dbs[which]->mutex = 0;	/* MUTEX_INVALID */
	}
}

static enum kw_err
open_db(struct kw_store *st, DB **out, enum kw_db which)
{
	DB *db = NULL;
	int rc = db_create(&db, st->env, 0);

	if (rc == 0 && db_files[which].flags != 0)
		rc = db->set_flags(db, db_files[which].flags);
	if (rc == 0)
		rc = db->open(db, NULL, db_files[which].file, NULL, db_files[which].type,
		    DB_CREATE | DB_AUTO_COMMIT, 0600);
	if (rc != 0) {
		if (db != NULL)
			db->close(db, 0);
		return kw_store_err(rc);
	}
	*out = db;
	return KW_OK;
}

/* Creates and opens the environment handle with flags into a new store. */
static int
open_env_once(const char *dir, u_int32_t flags, struct kw_store **out)
{
	struct kw_store *st = calloc(1, sizeof(*st));
	int rc;

	*out = NULL;
	if (st == NULL)
		return ENOMEM;
	if ((rc = db_env_create(&st->env, 0)) != 0) {
		free(st);
		return rc;
	}
	st->env->set_errcall(st->env, db_error_log);
	st->env->set_msgcall(st->env, db_message_log);
	st->env->set_cachesize(st->env, 0, CACHE_BYTES, 1);
	st->env->set_lk_detect(st->env, DB_LOCK_DEFAULT);
	st->env->set_thread_count(st->env, THREAD_SLOTS);
	st->env->set_isalive(st->env, is_alive);
	st->env->set_lk_max_lockers(st->env, LOCKERS);
	st->env->set_lk_max_locks(st->env, LOCKS);
	st->env->set_lk_max_objects(st->env, LOCKS);
	st->env->set_tx_max(st->env, TXNS);
	st->env->set_lg_regionmax(st->env, LOG_REGION_BYTES);
	st->env->set_lg_bsize(st->env, LOG_BUFFER_BYTES);
	/*
	 * A replicated site's own handles; a tool that joins a site's regions
	 * (a backup) leaves the site's replication settings as they are.
	 */
	if ((flags & DB_INIT_REP) && kw_group_enabled())
		kw_group_prepare_env(st->env);
	/* log files are removed by kw_store_maintain after each checkpoint */
	if ((rc = st->env->open(st->env, dir, flags, 0600)) != 0) {
		kw_store_close(st);
		return rc;
	}
	*out = st;
	return 0;
}

/*
 * Opens the environment in dir with flags, replicated when this site is one
 * of a group.  A tool (as_tool: a backup, a verification) joins the
 * environment as a site of a group made it, whatever its own settings say:
 * a site keeps its replication's files (__db.rep.*) in the data directory.
 */
static enum kw_err
open_env(const char *dir, u_int32_t flags, int as_tool, struct kw_store **out)
{
	const u_int32_t rep = DB_INIT_REP | DB_THREAD;
	char marker[4200];
	int rc;

	snprintf(marker, sizeof(marker), "%s/__db.rep.egen", dir);
	if (kw_group_enabled() || (as_tool && access(marker, F_OK) == 0))
		flags |= rep;
	rc = open_env_once(dir, flags, out);
	if (rc == EINVAL && (!(flags & DB_RECOVER) || (flags & DB_REGISTER)))
		rc = open_env_once(dir, flags ^ rep, out);
	if (rc != 0) {
		kw_log_error("store: cannot open the environment: %s", db_strerror(rc));
		return rc == ENOENT ? KW_EUNAVAIL : kw_store_err(rc);
	}
	return KW_OK;
}

/*
 * An environment keeps the sizes of the regions it was created with, and
 * one created by an earlier keywarden (Berkeley DB's defaults) runs out of
 * lockers and transactions as the pool grows past some 60 workers: say so,
 * and how to resize them.  Recreating the regions here is not safe, since
 * another process (a draining pool, a backup) may still use them.
 */
static void
warn_small_regions(struct kw_store *st)
{
	u_int32_t lockers = 0, txns = 0;

	st->env->get_lk_max_lockers(st->env, &lockers);
	st->env->get_tx_max(st->env, &txns);
	if (lockers < LOCKERS || txns < TXNS)
		kw_log_warn("store: the environment's regions were sized for fewer processes "
		    "than a pool of %d workers may need: stop keywarden and remove the data "
		    "directory's __db.0* files, which the next start makes again", KW_MAX_WORKERS);
}

/*
 * Opens the environment in dir and its databases.  KW_STORE_RECOVER (the
 * pool manager and the command-line tools) registers the process and runs
 * recovery when a registered process died inside the environment;
 * KW_STORE_RECOVER_FORCE always recovers (the manager, once every worker
 * has left); KW_STORE_JOIN (a worker) joins the environment its manager
 * prepared and never creates one.  On success *out is owned by the caller
 * (kw_store_close).
 */
enum kw_err
kw_store_open(struct kw_store **out, const char *dir, enum kw_store_open_mode mode)
{
	u_int32_t flags = DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG | DB_INIT_MPOOL;
	int as_tool = mode == KW_STORE_TOOL;
	struct kw_store *st;
	enum kw_err err;

	*out = NULL;
	if (as_tool)
		mode = KW_STORE_RECOVER;
	if (mode == KW_STORE_RECOVER_FORCE) {
		/* without DB_REGISTER, DB_RECOVER always runs; then register as usual */
		if ((err = open_env(dir, flags | DB_CREATE | DB_RECOVER, 0, &st)) != KW_OK)
			return err;
		kw_store_close(st);
		mode = KW_STORE_RECOVER;
	}
	if (mode == KW_STORE_RECOVER)
		flags |= DB_CREATE | DB_REGISTER | DB_RECOVER;
	if ((err = open_env(dir, flags, as_tool, &st)) != KW_OK)
		return err;
	if (mode == KW_STORE_RECOVER)
		warn_small_regions(st);
	for (int i = 0; i < KW_DB_COUNT && err == KW_OK; i++)
		if ((err = open_db(st, &st->dbs[i], (enum kw_db)i)) == KW_OK)
			single_threaded(st, (enum kw_db)i);
	if (err == KW_OK && mode == KW_STORE_RECOVER)
		err = kw_store_txn(st, settle_schema, NULL);
	if (err != KW_OK) {
		kw_store_close(st);
		return err == KW_ENOTFOUND ? KW_EUNAVAIL : err;
	}
	*out = st;
	return KW_OK;
}

/* Returns the database handle (borrowed; valid until kw_store_close). */
DB *
kw_store_db(struct kw_store *st, enum kw_db which)
{
	assert(which < KW_DB_COUNT);
	return st->dbs[which];
}

/* The environment handle (borrowed), for the group's replication calls. */
DB_ENV *
kw_store_env(struct kw_store *st)
{
	return st->env;
}

/* Closes the databases and the environment; st may be NULL. */
void
kw_store_close(struct kw_store *st)
{
	if (st == NULL)
		return;
	for (int i = 0; i < KW_DB_COUNT; i++)
		if (st->dbs[i] != NULL) {
			if (st->handle_mutexes[i] != 0)
				st->dbs[i]->mutex = st->handle_mutexes[i];
			st->dbs[i]->close(st->dbs[i], 0);
		}
	if (st->env != NULL) {
		kw_group_detach(st->env);
		st->env->close(st->env, 0);
	}
	free(st);
}

/*
 * Takes the environment's backup lock (DIR/backup.lock, flock) as how says:
 * shared while a hot backup copies, exclusive while maintenance removes log
 * files, which a backup still copying may need (Berkeley DB 5.3's
 * DB_HOTBACKUP_IN_PROGRESS does not stop DB_ARCH_REMOVE).  Returns the
 * descriptor to close, or -1 with errno set (EWOULDBLOCK: a backup runs).
 */
static int
backup_lock(struct kw_store *st, int how)
{
	const char *home = NULL;
	char path[4200];
	int fd, saved;

	if (st->env->get_home(st->env, &home) != 0 || home == NULL) {
		errno = ENOENT;
		return -1;
	}
	snprintf(path, sizeof(path), "%s/backup.lock", home);
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
		return -1;
	if (flock(fd, how) != 0) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

/*
 * Runs body inside a transaction and commits it; on a deadlock the
 * transaction is aborted and body runs again, so body must not keep side
 * effects outside the transaction (write them into baton afresh each
 * time).  body returns KW_OK to commit; any other code aborts and is
 * returned, KW_EDEADLOCK retrying first.  A committed write is in the log,
 * flushed to disk, before this returns KW_OK.
 */
enum kw_err
kw_store_txn(struct kw_store *st, kw_txn_body body, void *baton)
{
	return kw_store_txn_flags(st, 0, body, baton);
}

/* The log sequence number a commit token holds (Berkeley DB 5.3's __txn_build_token). */
static DB_LSN
token_lsn(const DB_TXN_TOKEN *token)
{
	/* five 32-bit numbers in network order: version, generation, env id, LSN file, offset */
	const u_int8_t *b = token->buf + 12;
	DB_LSN lsn = {
		.file = (u_int32_t)b[0] << 24 | (u_int32_t)b[1] << 16 | (u_int32_t)b[2] << 8 | b[3],
		.offset = (u_int32_t)b[4] << 24 | (u_int32_t)b[5] << 16 | (u_int32_t)b[6] << 8 | b[7],
	};

	return lsn;
}

/*
 * Commits txn with flags, DB_TXN_NOSYNC (into the log buffer) or
 * DB_TXN_WRITE_NOSYNC (into the log file), and sets *lsn to its commit
 * record's log sequence number: file 0 when it wrote nothing, and so has
 * no commit record.  The handle is gone whatever it returns.
 */
static int
commit_unflushed(DB_TXN *txn, u_int32_t flags, DB_LSN *lsn)
{
	DB_TXN_TOKEN token;
	int rc;

	memset(&token, 0, sizeof(token));
	lsn->file = lsn->offset = 0;
	/* a replica has no commit tokens, and nothing of its own to flush: it only reads */
	if (txn->set_commit_token(txn, &token) != 0)
		return txn->commit(txn, flags);
	if ((rc = txn->commit(txn, flags)) == 0)
		*lsn = token_lsn(&token);
	return rc;
}

/* Flushes the log to disk up to the commit record at lsn (none when its file is 0). */
static int
flush_to(DB_ENV *env, const DB_LSN *lsn)
{
	return lsn->file == 0 ? 0 : env->log_flush(env, lsn);
}

/*
 * Commits txn and returns once its commit record is on disk: group commit.
 * The commit only puts its record in the log buffer (DB_TXN_NOSYNC), which
 * releases the transaction's locks at once, so the next write to the same
 * pages (a key's spend, the audit log's last page) goes ahead while this
 * one's flush is under way and joins the same flush; then
 * DB_ENV->log_flush up to the commit record: one process writes and
 * fdatasyncs the log at a time, those that arrive meanwhile wait for it
 * and are carried by the next flush together, and one whose record a
 * flush has already carried returns at once.  Returns 0 only when the
 * commit is durable, so the caller answers after it; a write another
 * transaction read before the flush may still be lost in a crash, but was
 * never acknowledged, and whatever read it commits after it in the log.
 * A transaction that wrote nothing has no commit record and flushes nothing.
 */
static int
commit_durable(DB_ENV *env, DB_TXN *txn)
{
	DB_LSN lsn;
	int rc = commit_unflushed(txn, DB_TXN_NOSYNC, &lsn);

	return rc == 0 ? flush_to(env, &lsn) : rc;
}

/*
 * kw_store_txn with flags: KW_TXN_NOSYNC commits without waiting for the
 * log to reach the disk, for state that may be lost in a crash without
 * harm (rate windows, leases); such a commit is still atomic and isolated.
 * KW_TXN_FLUSH_AFTER_ANSWER writes the commit to the log file (a crash of
 * keywarden loses nothing) and leaves the flush to the disk to
 * kw_store_flush_deferred, which the worker calls once the answer has
 * gone and before it takes another request: for a relayed call's
 * settlement, whose answer is the provider's, not an acknowledgement of
 * the write, so the client need not wait for the disk.  KW_TXN_ASYNC
 * writes the commit to the log file too and leaves the flush to the pool
 * manager's kw_store_flush: a crash of keywarden loses nothing of it, a
 * crash of the machine what the last flush had not carried yet.
 */
enum kw_err
kw_store_txn_flags(struct kw_store *st, unsigned flags, kw_txn_body body, void *baton)
{
	/* NOSYNC: not even written to the log file at commit; the next durable commit carries it */
	u_int32_t begin = (flags & KW_TXN_NOSYNC) ? DB_TXN_NOSYNC : 0;
	enum kw_err err = KW_EDEADLOCK;

	for (int attempt = 0; attempt < TXN_RETRIES && err == KW_EDEADLOCK; attempt++) {
		DB_TXN *txn = NULL;
		int rc;

		if (attempt > 0) {
			kw_metrics_deadlock_retry();
			/* back off a little, with jitter, so the retries do not collide again */
			usleep((useconds_t)(100 * attempt + (rand() % 500)));
		}
		if ((rc = st->env->txn_begin(st->env, NULL, &txn, begin)) != 0)
			return kw_store_err(rc);
		if ((err = body(st, txn, baton)) == KW_OK) {
			DB_LSN lsn = { 0, 0 };

			kw_group_commit_begin();
			if (flags & KW_TXN_NOSYNC)
				rc = txn->commit(txn, 0);
			else if (flags & (KW_TXN_ASYNC | KW_TXN_FLUSH_AFTER_ANSWER))
				rc = commit_unflushed(txn, DB_TXN_WRITE_NOSYNC, &lsn);
			else
				rc = commit_durable(st->env, txn);
			kw_metrics_txn(rc == 0);
			/* a later commit's record comes later in the log: flushing to it flushes both */
			if (rc == 0 && (flags & KW_TXN_FLUSH_AFTER_ANSWER) && lsn.file != 0)
				st->deferred = lsn;
			/*
			 * A replicated site's 2xx promises the write is on a quorum:
			 * a commit the replicas did not acknowledge in time is on the
			 * master alone, and may be lost in a failover.
			 */
			if (rc == 0 && !(flags & KW_TXN_NOSYNC) && !kw_group_commit_acknowledged()) {
				kw_log_warn("store: a commit was not acknowledged by enough sites of "
				    "the group");
				return KW_EUNAVAIL;
			}
			return kw_store_err(rc);
		}
		kw_metrics_txn(0);
		if ((rc = txn->abort(txn)) != 0 && kw_store_err(rc) == KW_ERUNRECOVERY)
			return KW_ERUNRECOVERY;
	}
	if (err == KW_EDEADLOCK)
		kw_log_warn("store: transaction still deadlocked after %d attempts", TXN_RETRIES);
	return err;
}

/* Flushes the log to the disk when a KW_TXN_FLUSH_AFTER_ANSWER commit awaits it. */
void
kw_store_flush_deferred(struct kw_store *st)
{
	int rc;

	if (st == NULL || st->deferred.file == 0)
		return;
	rc = flush_to(st->env, &st->deferred);
	st->deferred.file = st->deferred.offset = 0;
	if (rc != 0)
		kw_log_error("store: flushing the log: %s", db_strerror(rc));
}

static enum kw_err
read_schema(struct kw_store *st, DB_TXN *txn, void *baton)
{
	return get_schema_version(st, txn, baton);
}

/*
 * Fills *state by reading the store inside a transaction: a successful
 * return means the store answers reads now.  txn_commits and deadlocks
 * are left 0: lock_stat, which counts the deadlocks, visits every lock
 * object, and cost each GET /health, which asks this, some 290,000
 * instructions.
 */
enum kw_err
kw_store_health(struct kw_store *st, struct kw_store_state *state)
{
	DB_LOG_STAT *lg = NULL;
	enum kw_err err;

	memset(state, 0, sizeof(*state));
	if ((err = kw_store_txn(st, read_schema, &state->schema_version)) != KW_OK)
		return err;
	if (state->schema_version == 0)
		return KW_EUNAVAIL;	/* never initialised by a manager */
	if (st->env->log_stat(st->env, &lg, 0) == 0) {
		state->log_file = lg->st_cur_file;
		free(lg);
	}
	return KW_OK;
}

/* kw_store_health with the environment's commits and deadlocks, for tools and tests. */
enum kw_err
kw_store_state(struct kw_store *st, struct kw_store_state *state)
{
	DB_TXN_STAT *ts = NULL;
	DB_LOCK_STAT *ls = NULL;
	enum kw_err err;

	if ((err = kw_store_health(st, state)) != KW_OK)
		return err;
	if (st->env->txn_stat(st->env, &ts, 0) == 0) {
		state->txn_commits = ts->st_ncommits;
		free(ts);
	}
	if (st->env->lock_stat(st->env, &ls, 0) == 0) {
		state->deadlocks = ls->st_ndeadlocks;
		free(ls);
	}
	return KW_OK;
}

/*
 * Periodic upkeep run by the pool manager: checkpoint, then remove the log
 * files no longer needed for recovery, so the data directory stays small
 * without a cron job.
 */
enum kw_err
kw_store_maintain(struct kw_store *st)
{
	int rc = st->env->txn_checkpoint(st->env, 0, 0, 0), lock = -1;

	if (rc == 0 && (lock = backup_lock(st, LOCK_EX | LOCK_NB)) < 0 && errno == EWOULDBLOCK)
		kw_log_info("store: a backup is running: log files stay until it ends");
	else if (rc == 0)
		rc = st->env->log_archive(st->env, NULL, DB_ARCH_REMOVE);
	if (lock >= 0)
		close(lock);
	if (rc != 0)
		kw_log_warn("store: maintenance failed: %s", db_strerror(rc));
	return kw_store_err(rc);
}

/*
 * Flushes the log to disk: every commit made so far is durable when this
 * returns KW_OK.  When nothing was committed since the last flush it does
 * no I/O.  The pool manager calls it for KW_TXN_ASYNC commits.
 */
enum kw_err
kw_store_flush(struct kw_store *st)
{
	int rc = st->env->log_flush(st->env, NULL);

	if (rc != 0)
		kw_log_warn("store: log flush failed: %s", db_strerror(rc));
	return kw_store_err(rc);
}

/*
 * Releases the locks and aborts the transactions of processes that died
 * inside the environment.  KW_ERUNRECOVERY when one died inside the
 * library itself: then every process must leave and the environment be
 * recovered.
 */
enum kw_err
kw_store_failchk(struct kw_store *st)
{
	int rc = st->env->failchk(st->env, 0);

	if (rc != 0)
		kw_log_warn("store: failchk: %s", db_strerror(rc));
	return kw_store_err(rc);
}

/* --- the operator's tools: backups, verification, schema refusals --- */

/* The schema version of a data directory the last kw_store_open refused as newer; 0 when none. */
unsigned
kw_store_refused_schema(void)
{
	return refused_schema;
}

/* The file name of a database in the environment (static). */
const char *
kw_store_db_file(enum kw_db which)
{
	assert(which < KW_DB_COUNT);
	return db_files[which].file;
}

/*
 * Copies the environment's databases, then its log files, into target, an
 * existing empty directory, while other processes go on writing: Berkeley
 * DB's hot backup.  The copy is consistent only once recovered
 * (kw_store_recover_copy).  Files already in target are an error.  The
 * backup lock keeps every log file in place until the copy has them all.
 */
enum kw_err
kw_store_backup(struct kw_store *st, const char *target)
{
	int lock = backup_lock(st, LOCK_SH), rc;

	if (lock < 0) {
		kw_log_error("store: backup: cannot take the backup lock: %s", strerror(errno));
		return KW_EUNAVAIL;
	}
	if ((rc = st->env->backup(st->env, target, DB_EXCL)) != 0)
		kw_log_error("store: backup: %s", db_strerror(rc));
	close(lock);
	return kw_store_err(rc);
}

/*
 * Runs catastrophic recovery on the copy of an environment in dir (a hot
 * backup, or a restored one), replaying every log file it holds, in an
 * environment private to this process that leaves no region files behind.
 * Nothing else may use dir meanwhile.
 */
enum kw_err
kw_store_recover_copy(const char *dir)
{
	DB_ENV *env;
	int rc;

	if ((rc = db_env_create(&env, 0)) != 0)
		return kw_store_err(rc);
	env->set_errcall(env, db_error_log);
	env->set_msgcall(env, db_message_log);
	env->set_cachesize(env, 0, CACHE_BYTES, 1);
	rc = env->open(env, dir, DB_CREATE | DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG |
	    DB_INIT_MPOOL | DB_PRIVATE | DB_RECOVER_FATAL, 0600);
	if (rc != 0)
		kw_log_error("store: recovering %s: %s", dir, db_strerror(rc));
	env->close(env, 0);
	return kw_store_err(rc);
}

/*
 * Berkeley DB's structural verification of every database file in dir, a
 * recovered copy nobody else uses (DB->verify takes no locks, so it must
 * never run on a live environment).  Calls report for each database with
 * KW_OK, KW_ENOTFOUND (no such file: a database an older schema lacked) or
 * the error; returns KW_OK when every present file verifies.
 */
enum kw_err
kw_store_verify_copy(const char *dir, void (*report)(const char *file, enum kw_err, void *),
    void *baton)
{
	char path[4200];
	enum kw_err worst = KW_OK, err;
	DB_ENV *env;
	int rc;

	if ((rc = db_env_create(&env, 0)) != 0)
		return kw_store_err(rc);
	env->set_errcall(env, db_error_log);
	env->set_cachesize(env, 0, CACHE_BYTES, 1);
	if ((rc = env->open(env, dir, DB_CREATE | DB_INIT_MPOOL | DB_PRIVATE, 0600)) != 0) {
		env->close(env, 0);
		return kw_store_err(rc);
	}
	for (int i = 0; i < KW_DB_COUNT; i++) {
		DB *db;

		snprintf(path, sizeof(path), "%s/%s", dir, db_files[i].file);
		if (access(path, F_OK) != 0) {
			report(db_files[i].file, KW_ENOTFOUND, baton);
			continue;
		}
		/* verify consumes the handle, whatever it answers */
		if ((rc = db_create(&db, env, 0)) == 0)
			rc = db->verify(db, db_files[i].file, NULL, NULL, 0);
		err = rc == 0 ? KW_OK : rc == DB_VERIFY_BAD ? KW_EINTERNAL : kw_store_err(rc);
		report(db_files[i].file, err, baton);
		if (err != KW_OK)
			worst = err;
	}
	env->close(env, 0);
	return worst;
}
