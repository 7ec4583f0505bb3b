/* test_store.c: the Berkeley DB store against a fresh environment in a temp dir, including dead processes and contention between processes. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <db.h>

#include "kw.h"
#include "tap.h"

static char dir[] = "/tmp/kw-test-store-XXXXXX";

struct put {
	const char *key;
	const char *value;
	enum kw_err result;	/* what the body returns after writing */
	int calls;
};

static enum kw_err
put_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct put *p = baton;
	DB *db = kw_store_db(st, KW_DB_META);
	DBT k = { .data = (void *)p->key, .size = (u_int32_t)strlen(p->key) };
	DBT v = { .data = (void *)p->value, .size = (u_int32_t)strlen(p->value) };
	int rc;

	p->calls++;
	if ((rc = db->put(db, txn, &k, &v, 0)) != 0)
		return kw_store_err(rc);
	return p->result;
}

/* Reads key into buf (NUL-terminated); KW_ENOTFOUND when absent. */
struct get {
	const char *key;
	char buf[64];
};

static enum kw_err
get_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct get *g = baton;
	DB *db = kw_store_db(st, KW_DB_META);
	DBT k = { .data = (void *)g->key, .size = (u_int32_t)strlen(g->key) };
	DBT v = { .data = g->buf, .ulen = sizeof(g->buf) - 1, .flags = DB_DBT_USERMEM };
	int rc = db->get(db, txn, &k, &v, 0);

	if (rc != 0)
		return kw_store_err(rc);
	g->buf[v.size] = '\0';
	return KW_OK;
}

/* Fails with KW_EDEADLOCK on its first two runs: the helper must retry. */
static enum kw_err
flaky_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct put *p = baton;
	enum kw_err rc;

	p->result = p->calls < 2 ? KW_EDEADLOCK : KW_OK;
	rc = put_body(st, txn, baton);
	return rc;
}

/* Increments two counters in the order given: two processes in opposite orders deadlock. */
struct pair {
	const char *first, *second;
};

static enum kw_err
bump(DB *db, DB_TXN *txn, const char *key)
{
	char buf[32];
	DBT k = { .data = (void *)key, .size = (u_int32_t)strlen(key) };
	DBT v = { .data = buf, .ulen = sizeof(buf) - 1, .flags = DB_DBT_USERMEM };
	long n = 0;
	int rc = db->get(db, txn, &k, &v, DB_RMW);

	if (rc == 0) {
		buf[v.size] = '\0';
		n = atol(buf);
	} else if (rc != DB_NOTFOUND) {
		return kw_store_err(rc);
	}
	v.size = (u_int32_t)snprintf(buf, sizeof(buf), "%ld", n + 1);
	v.flags = 0;
	v.data = buf;
	return kw_store_err(db->put(db, txn, &k, &v, 0));
}

static enum kw_err
pair_body(struct kw_store *st, DB_TXN *txn, void *baton)
{
	struct pair *p = baton;
	DB *db = kw_store_db(st, KW_DB_META);
	enum kw_err rc;

	if ((rc = bump(db, txn, p->first)) != KW_OK)
		return rc;
	usleep(200);	/* widen the window in which the other process takes its first lock */
	return bump(db, txn, p->second);
}

static void
test_open_and_schema(void)
{
	struct kw_store *st = NULL;
	struct kw_store_state state;

	is_int(kw_store_open(&st, dir, KW_STORE_JOIN), KW_EUNAVAIL,
	    "a worker does not create a missing environment");
	ok(st == NULL, "no handle on failure");
	is_int(kw_store_open(&st, dir, KW_STORE_RECOVER), KW_OK, "the manager creates it");
	is_int(kw_store_state(st, &state), KW_OK, "state reads");
	is_int(state.schema_version, KW_SCHEMA_VERSION, "schema version recorded");
	kw_store_close(st);
	is_int(kw_store_open(&st, dir, KW_STORE_JOIN), KW_OK, "a worker joins the environment");
	is_int(kw_store_state(st, &state), KW_OK, "a worker reads the state");
	kw_store_close(st);
}

static void
test_txn(void)
{
	struct kw_store *st = NULL;
	struct put p = { .key = "k1", .value = "v1" };
	struct get g = { .key = "k1" };

	kw_store_open(&st, dir, KW_STORE_RECOVER);
	is_int(kw_store_txn(st, put_body, &p), KW_OK, "a write commits");
	is_int(kw_store_txn(st, get_body, &g), KW_OK, "and reads back");
	is_str(g.buf, "v1", "with its value");

	p = (struct put){ .key = "k2", .value = "v2", .result = KW_ECONFLICT };
	is_int(kw_store_txn(st, put_body, &p), KW_ECONFLICT, "a failing body's code is returned");
	g = (struct get){ .key = "k2" };
	is_int(kw_store_txn(st, get_body, &g), KW_ENOTFOUND, "and its write is rolled back");

	p = (struct put){ .key = "k3", .value = "v3" };
	is_int(kw_store_txn(st, flaky_body, &p), KW_OK, "a deadlocked body is retried");
	is_int(p.calls, 3, "three runs: two deadlocks and a commit");
	kw_store_close(st);

	/* what was committed survives a close and a recovery */
	kw_store_open(&st, dir, KW_STORE_RECOVER_FORCE);
	g = (struct get){ .key = "k3" };
	is_int(kw_store_txn(st, get_body, &g), KW_OK, "a committed write survives recovery");
	is_int(kw_store_maintain(st), KW_OK, "checkpoint and log removal");
	kw_store_close(st);
}

/* Whether everything in the log is on disk: the synced end (st_disk_*) is the log's end. */
static int
log_on_disk(struct kw_store *st)
{
	DB *db = kw_store_db(st, KW_DB_META);
	DB_LOG_STAT *ls = NULL;
	int synced;

	if (db->get_env(db)->log_stat(db->get_env(db), &ls, 0) != 0)
		return -1;
	synced = ls->st_disk_file == ls->st_cur_file && ls->st_disk_offset == ls->st_cur_offset;
	free(ls);
	return synced;
}

/*
 * The commit paths (store.c's commit_durable, which reads the commit
 * record's LSN out of Berkeley DB's commit token, __txn_build_token's
 * layout): a durable write is on disk when kw_store_txn returns, an
 * asynchronous one only after kw_store_flush.
 */
static void
test_commit_flush(void)
{
	struct kw_store *st = NULL;
	struct put p = { .key = "flush-1", .value = "v" };
	struct get g = { .key = "flush-1" };

	kw_store_open(&st, dir, KW_STORE_RECOVER);
	is_int(kw_store_txn_flags(st, KW_TXN_ASYNC, put_body, &p), KW_OK,
	    "an asynchronous write commits");
	is_int(log_on_disk(st), 0, "and is not flushed yet");
	is_int(kw_store_flush(st), KW_OK, "a flush");
	is_int(log_on_disk(st), 1, "puts it on disk");
	p = (struct put){ .key = "flush-2", .value = "v" };
	is_int(kw_store_txn_flags(st, KW_TXN_NOSYNC, put_body, &p), KW_OK, "an unflushed write");
	is_int(log_on_disk(st), 0, "stays in the log buffer");
	p = (struct put){ .key = "flush-3", .value = "v" };
	is_int(kw_store_txn(st, put_body, &p), KW_OK, "a durable write commits");
	is_int(log_on_disk(st), 1, "and is on disk when it returns, with the writes before it");
	is_int(kw_store_txn(st, get_body, &g), KW_OK, "a read-only transaction commits");
	is_int(log_on_disk(st), 1, "and flushes nothing it need not");
	kw_store_close(st);
}

/* The number of log files in the environment in home. */
static int
log_files(const char *home)
{
	DIR *d = opendir(home);
	struct dirent *e;
	int n = 0;

	while (d != NULL && (e = readdir(d)) != NULL)
		n += strncmp(e->d_name, "log.", 4) == 0;
	if (d != NULL)
		closedir(d);
	return n;
}

/* While a backup holds the backup lock, maintenance removes no log file. */
static void
test_backup_lock(void)
{
	static char home[] = "/tmp/kw-test-backup-lock-XXXXXX";
	struct kw_store *st = NULL;
	char value[400], path[256];
	int lock, before;
	FILE *f;

	if (mkdtemp(home) == NULL)
		return;
	/* small log files (Berkeley DB reads DB_CONFIG when it creates the environment) */
	snprintf(path, sizeof(path), "%s/DB_CONFIG", home);
	if ((f = fopen(path, "w")) != NULL) {
		fputs("set_lg_max 65536\n", f);
		fclose(f);
	}
	value[sizeof(value) - 1] = '\0';
	kw_store_open(&st, home, KW_STORE_RECOVER);
	/* one record written again and again: the log grows, the tree never splits */
	for (int i = 0; st != NULL && log_files(home) < 3 && i < 10000; i++) {
		struct put p = { .key = "bulk", .value = value };

		memset(value, 'a' + i % 26, sizeof(value) - 1);
		kw_store_txn_flags(st, KW_TXN_NOSYNC, put_body, &p);
	}
	before = log_files(home);
	ok(before >= 2, "the writes filled %d log files", before);
	snprintf(path, sizeof(path), "%s/backup.lock", home);
	lock = open(path, O_RDWR | O_CREAT, 0600);
	ok(lock >= 0 && flock(lock, LOCK_SH) == 0, "a backup's shared lock is taken");
	is_int(kw_store_maintain(st), KW_OK, "maintenance runs during the backup");
	is_int(log_files(home), before, "and leaves every log file in place");
	close(lock);
	is_int(kw_store_maintain(st), KW_OK, "maintenance after the backup");
	ok(log_files(home) < before, "removes the log files no longer needed (%d left of %d)",
	    log_files(home), before);
	kw_store_close(st);
	snprintf(path, sizeof(path), "rm -rf %s", home);
	(void)!system(path);
}

/* A process that dies holding a write lock must not block everyone forever. */
static void
test_dead_process(void)
{
	struct kw_store *st = NULL;
	struct put p = { .key = "locked", .value = "after" };
	struct get g = { .key = "locked" };
	int status;
	pid_t pid;

	kw_store_open(&st, dir, KW_STORE_RECOVER);
	if ((pid = fork()) == 0) {
		struct kw_store *mine = NULL;
		DB_TXN *txn;
		DB *db;
		DBT k = { .data = "locked", .size = 6 }, v = { .data = "dying", .size = 5 };

		if (kw_store_open(&mine, dir, KW_STORE_JOIN) != KW_OK)
			_exit(2);
		db = kw_store_db(mine, KW_DB_META);
		/* reach the environment through the database handle */
		db->dbenv->txn_begin(db->dbenv, NULL, &txn, 0);
		db->put(db, txn, &k, &v, 0);
		_exit(0);	/* dies mid-transaction, holding the lock */
	}
	waitpid(pid, &status, 0);
	is_int(WEXITSTATUS(status), 0, "the child died holding a write lock");
	is_int(kw_store_failchk(st), KW_OK, "failchk cleans up after it");
	is_int(kw_store_txn(st, put_body, &p), KW_OK, "the lock is free again");
	is_int(kw_store_txn(st, get_body, &g), KW_OK, "the dead transaction was aborted");
	is_str(g.buf, "after", "and only the live write remains");
	kw_store_close(st);
}

/* Two processes increment two counters in opposite orders: contention (and any deadlock) retried, no lost update. */
static void
test_deadlocks(void)
{
	enum { ROUNDS = 200 };
	struct kw_store *st = NULL;
	struct kw_store_state state;
	struct get g;
	int status, failures = 0;
	pid_t pids[2];

	kw_store_open(&st, dir, KW_STORE_RECOVER);
	for (int i = 0; i < 2; i++) {
		if ((pids[i] = fork()) == 0) {
			struct kw_store *mine = NULL;
			struct pair p = { i ? "ctr-b" : "ctr-a", i ? "ctr-a" : "ctr-b" };
			int bad = 0;

			srand((unsigned)getpid());
			if (kw_store_open(&mine, dir, KW_STORE_JOIN) != KW_OK)
				_exit(2);
			for (int r = 0; r < ROUNDS; r++)
				bad += kw_store_txn(mine, pair_body, &p) != KW_OK;
			kw_store_close(mine);
			_exit(bad ? 1 : 0);
		}
	}
	for (int i = 0; i < 2; i++) {
		waitpid(pids[i], &status, 0);
		failures += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
	}
	is_int(failures, 0, "every transaction committed under contention");
	g = (struct get){ .key = "ctr-a" };
	kw_store_txn(st, get_body, &g);
	is_int(atol(g.buf), 2 * ROUNDS, "counter a: no lost update");
	g = (struct get){ .key = "ctr-b" };
	kw_store_txn(st, get_body, &g);
	is_int(atol(g.buf), 2 * ROUNDS, "counter b: no lost update");
	kw_store_state(st, &state);
	printf("# deadlocks detected and retried: %llu\n", (unsigned long long)state.deadlocks);
	kw_store_close(st);
}

/* A data directory written by a newer keywarden is refused, not damaged. */
static void
test_newer_schema(void)
{
	struct kw_store *st = NULL;
	struct put p = { .key = "schema_version", .value = "99" };

	kw_store_open(&st, dir, KW_STORE_RECOVER);
	kw_store_txn(st, put_body, &p);
	kw_store_close(st);
	is_int(kw_store_open(&st, dir, KW_STORE_RECOVER), KW_EUNAVAIL, "a newer schema is refused");
	ok(st == NULL, "no handle");
}

int
main(void)
{
	char cmd[128];

	kw_log_threshold = KW_LOG_ERROR;
	if (mkdtemp(dir) == NULL)
		return 1;
	test_open_and_schema();
	test_txn();
	test_commit_flush();
	test_backup_lock();
	test_dead_process();
	test_deadlocks();
	test_newer_schema();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	(void)!system(cmd);
	return tap_done();
}
