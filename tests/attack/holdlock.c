/*
 * holdlock.c: for tests/attack/low.t, holds a write lock on one record of a
 * running keywarden's keys.db while the service works, so that its
 * transactions wait on it; every 200 ms it expires (DB_LOCK_EXPIRE) the
 * lock requests that have waited longer than the lock timeout it sets, as
 * Berkeley DB answers a deadlock victim: DB_LOCK_NOTGRANTED.
 * Usage: holdlock DATA_DIR TOKEN SECONDS.  Prints "held" once the lock is
 * taken, then the number of requests it expired.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <db.h>

int
main(int argc, char **argv)
{
	DB_ENV *env;
	DB *keys;
	DB_TXN *txn;
	DBT k = { 0 }, v = { .flags = DB_DBT_MALLOC };
	int rc, expired = 0, rounds;

	if (argc != 4)
		return 2;
	rounds = atoi(argv[3]) * 5;
	if ((rc = db_env_create(&env, 0)) != 0 ||
	    (rc = env->open(env, argv[1], DB_INIT_TXN | DB_INIT_LOCK | DB_INIT_LOG |
	    DB_INIT_MPOOL, 0600)) != 0) {
		fprintf(stderr, "holdlock: env: %s\n", db_strerror(rc));
		return 1;
	}
	/* for the environment, not this handle alone: the workers' waits time out too */
	env->set_timeout(env, 100000, DB_SET_LOCK_TIMEOUT);
	if ((rc = db_create(&keys, env, 0)) != 0 ||
	    (rc = keys->open(keys, NULL, "keys.db", NULL, DB_BTREE, DB_AUTO_COMMIT, 0600)) != 0 ||
	    (rc = env->txn_begin(env, NULL, &txn, 0)) != 0) {
		fprintf(stderr, "holdlock: keys.db: %s\n", db_strerror(rc));
		return 1;
	}
	k.data = argv[2];
	k.size = (u_int32_t)strlen(argv[2]);
	if ((rc = keys->get(keys, txn, &k, &v, DB_RMW)) != 0) {
		fprintf(stderr, "holdlock: get: %s\n", db_strerror(rc));
		return 1;
	}
	printf("held\n");
	fflush(stdout);
	for (int i = 0; i < rounds; i++) {
		int n = 0;

		usleep(200000);
		if (env->lock_detect(env, 0, DB_LOCK_EXPIRE, &n) == 0)
			expired += n;
	}
	txn->abort(txn);
	env->set_timeout(env, 0, DB_SET_LOCK_TIMEOUT);
	keys->close(keys, 0);
	env->close(env, 0);
	free(v.data);
	printf("%d\n", expired);
	return 0;
}
