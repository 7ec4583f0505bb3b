/* group.c: a replicated group of sites on Berkeley DB's replication manager: its settings, the replicator process, each site's role, and writes forwarded to the master. */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <db.h>
#include <fcgiapp.h>
#include <json-c/json.h>

#include "kw.h"
#include "gen/ops.h"

#define MAX_SITES 32
#define GROUP_MARKER "group_created"	/* meta.db: written by the group's first master */
#define FORWARDED_HEADER "X-Keywarden-Forwarded"

/* One site of KEYWARDEN_GROUP_SITES: its replication address and the base URL of its API. */
struct site {
	char host[256];
	unsigned port;
	char url[512];
};

static struct site sites[MAX_SITES];
static unsigned nsites;
static int self = -1;		/* this site's index in sites */

/*
 * What the replicator shares with the workers, mapped before the pool
 * forks: a worker starts its own replication manager threads (as a
 * subordinate process) only once the replicator has become the site's
 * listener, since the first process to start them takes that role.
 */
struct shared {
	uint32_t listening;
	uint32_t membership;	/* changes each time a site joins or leaves the group */
};
static struct shared *shared;

/* Set by Berkeley DB, in the committing thread, when a commit missed its acknowledgements. */
static volatile int perm_failed;

/*
 * The sites this process has a connection to, by environment ID, kept from
 * Berkeley DB's events (which come in its own threads): each process of a
 * site sends its own commits over connections of its own.
 */
static uint64_t connected;

static void
note_connection(int eid, int up)
{
	if (eid < 0 || eid >= 64)
		return;
	if (up)
		__atomic_or_fetch(&connected, (uint64_t)1 << eid, __ATOMIC_ACQ_REL);
	else
		__atomic_and_fetch(&connected, ~((uint64_t)1 << eid), __ATOMIC_ACQ_REL);
}

int
kw_group_enabled(void)
{
	return nsites > 0;
}

/* Parses "HOST:PORT" (the port 1 to 65535) into host and *port; 0 on success. */
static int
parse_address(const char *s, size_t n, char *host, size_t host_size, unsigned *port)
{
	const char *colon = memrchr(s, ':', n);
	char digits[8], *end;
	unsigned long v;
	size_t hn;

	if (colon == NULL || (hn = (size_t)(colon - s)) == 0 || hn >= host_size ||
	    n - hn - 1 == 0 || n - hn - 1 >= sizeof(digits))
		return -1;
	memcpy(digits, colon + 1, n - hn - 1);
	digits[n - hn - 1] = '\0';
	errno = 0;
	v = strtoul(digits, &end, 10);
	if (errno != 0 || *end != '\0' || digits[0] == '-' || v == 0 || v > 65535)
		return -1;
	memcpy(host, s, hn);
	host[hn] = '\0';
	*port = (unsigned)v;
	return 0;
}

/*
 * Reads KEYWARDEN_GROUP_SITES ("HOST:PORT=URL,...", every site, this one
 * included, in the same order everywhere) and KEYWARDEN_GROUP_SELF
 * ("HOST:PORT", one of them).  Errors are explained on stderr.
 */
enum kw_err
kw_group_parse(const char *list, const char *self_address)
{
	char host[256];
	unsigned port;
	const char *p = list;

	nsites = 0;
	self = -1;
	if (list == NULL || *list == '\0')
		return KW_OK;
	while (*p != '\0') {
		size_t n = strcspn(p, ","), an;
		const char *eq = memchr(p, '=', n);
		struct site *s = &sites[nsites];

		if (nsites == MAX_SITES) {
			fprintf(stderr, "keywarden: KEYWARDEN_GROUP_SITES names more than %d sites\n",
			    MAX_SITES);
			return KW_EINVAL;
		}
		an = eq != NULL ? (size_t)(eq - p) : n;
		if (eq == NULL || parse_address(p, an, s->host, sizeof(s->host), &s->port) != 0 ||
		    n - an - 1 >= sizeof(s->url) ||
		    (strncmp(eq + 1, "http://", 7) != 0 && strncmp(eq + 1, "https://", 8) != 0)) {
			fprintf(stderr, "keywarden: KEYWARDEN_GROUP_SITES: expected HOST:PORT=URL "
			    "(an http:// or https:// URL) for each site, separated by commas, "
			    "at \"%.*s\"\n", (int)n, p);
			return KW_EINVAL;
		}
		memcpy(s->url, eq + 1, n - an - 1);
		s->url[n - an - 1] = '\0';
		/* the API's paths are appended to it */
		while (s->url[0] != '\0' && s->url[strlen(s->url) - 1] == '/')
			s->url[strlen(s->url) - 1] = '\0';
		for (unsigned i = 0; i < nsites; i++)
			if (sites[i].port == s->port && strcmp(sites[i].host, s->host) == 0) {
				fprintf(stderr, "keywarden: KEYWARDEN_GROUP_SITES names %s:%u twice\n",
				    s->host, s->port);
				return KW_EINVAL;
			}
		nsites++;
		p += n;
		if (*p == ',')
			p++;
	}
	if (self_address == NULL || *self_address == '\0' ||
	    parse_address(self_address, strlen(self_address), host, sizeof(host), &port) != 0) {
		fprintf(stderr, "keywarden: KEYWARDEN_GROUP_SELF must be this site's HOST:PORT, "
		    "as KEYWARDEN_GROUP_SITES names it\n");
		return KW_EINVAL;
	}
	for (unsigned i = 0; i < nsites; i++)
		if (sites[i].port == port && strcmp(sites[i].host, host) == 0)
			self = (int)i;
	if (self < 0) {
		fprintf(stderr, "keywarden: KEYWARDEN_GROUP_SELF %s is not one of "
		    "KEYWARDEN_GROUP_SITES\n", self_address);
		return KW_EINVAL;
	}
	return KW_OK;
}

const char *
kw_group_self_url(void)
{
	return self >= 0 ? sites[self].url : NULL;
}

/* The base URL of the site at host:port; NULL when KEYWARDEN_GROUP_SITES does not name it. */
static const char *
site_url(const char *host, unsigned port)
{
	for (unsigned i = 0; i < nsites; i++)
		if (sites[i].port == port && strcmp(sites[i].host, host) == 0)
			return sites[i].url;
	return NULL;
}

static void
on_event(DB_ENV *env, u_int32_t event, void *info)
{
	(void)env;
	(void)info;
	switch (event) {
	case DB_EVENT_REP_PERM_FAILED:
		perm_failed = 1;
		break;
	case DB_EVENT_REP_MASTER:
		kw_log_info("group: this site is the master");
		break;
	case DB_EVENT_REP_CLIENT:
		kw_log_info("group: this site is a replica");
		break;
	case DB_EVENT_REP_NEWMASTER:
		kw_log_info("group: a master is known (site %d)", info ? *(int *)info : -1);
		break;
	case DB_EVENT_REP_STARTUPDONE:
		kw_log_info("group: this replica has caught up with the master");
		break;
	case DB_EVENT_REP_DUPMASTER:
		kw_log_warn("group: another site is master too: this one steps down");
		break;
	case DB_EVENT_REP_ELECTION_FAILED:
		kw_log_warn("group: an election found no winner; trying again");
		break;
	case DB_EVENT_REP_LOCAL_SITE_REMOVED:
		kw_log_warn("group: this site was removed from the group");
		break;
	case DB_EVENT_REP_CONNECT_ESTD:
		if (info != NULL)
			note_connection(*(int *)info, 1);
		break;
	case DB_EVENT_REP_CONNECT_BROKEN:
		if (info != NULL)
			note_connection(((DB_REPMGR_CONN_ERR *)info)->eid, 0);
		break;
	case DB_EVENT_REP_SITE_ADDED:
	case DB_EVENT_REP_SITE_REMOVED:
		kw_log_info("group: a site %s the group",
		    event == DB_EVENT_REP_SITE_ADDED ? "joined" : "left");
		if (shared != NULL)
			__atomic_add_fetch(&shared->membership, 1, __ATOMIC_ACQ_REL);
		break;
	default:
		break;
	}
}

/*
 * The environment settings of a site of the group, made on every handle
 * before it is opened (the manager's, the replicator's, each worker's):
 * events, election priority, the acknowledgement policy, the timeouts that
 * decide how soon a lost master is noticed, and master leases.
 */
void
kw_group_prepare_env(DB_ENV *env)
{
	static const u_int32_t acks[] = {
		[KW_ACK_QUORUM] = DB_REPMGR_ACKS_QUORUM, [KW_ACK_ALL] = DB_REPMGR_ACKS_ALL_AVAILABLE,
		[KW_ACK_ONE] = DB_REPMGR_ACKS_ONE, [KW_ACK_NONE] = DB_REPMGR_ACKS_NONE,
	};

	env->set_event_notify(env, on_event);
	env->rep_set_priority(env, kw_config.group_priority);
	env->repmgr_set_ack_policy(env, acks[kw_config.group_ack]);
	env->rep_set_timeout(env, DB_REP_ACK_TIMEOUT, kw_config.group_ack_timeout_ms * 1000u);
	/* a lost master is noticed within two seconds, an election retried each second */
	env->rep_set_timeout(env, DB_REP_HEARTBEAT_SEND, 500000);
	env->rep_set_timeout(env, DB_REP_HEARTBEAT_MONITOR, 2000000);
	env->rep_set_timeout(env, DB_REP_CONNECTION_RETRY, 1000000);
	env->rep_set_timeout(env, DB_REP_ELECTION_RETRY, 1000000);
	env->rep_set_timeout(env, DB_REP_ELECTION_TIMEOUT, 2000000);
	/*
	 * A transaction's log records go to the replicas in one message at
	 * its commit, not one each: fewer small writes on the connection,
	 * which TCP would otherwise hold back waiting for the replica's ACK.
	 */
	env->rep_set_config(env, DB_REP_CONF_BULK, 1);
	/*
	 * A replica that finds a gap in the log it receives (a message a worker
	 * could not send yet, or two workers' messages crossing) asks the master
	 * again after 2 ms, then less often up to 100 ms, not 40 ms to 1.28 s as
	 * by default: a commit waiting for its acknowledgement waits that long.
	 */
	env->rep_set_request(env, 2000, 100000);
	/*
	 * What a replica receives it writes to its log file and acknowledges
	 * without waiting for its disk: an acknowledged write is then on the
	 * master's disk (keywarden's own commits flush, whatever this says)
	 * and in the log files of a quorum, which survives the loss of any
	 * machine, or of every keywarden process at once.
	 */
	env->set_flags(env, DB_TXN_WRITE_NOSYNC, 1);
	if (kw_config.group_leases) {
		env->rep_set_config(env, DB_REP_CONF_LEASE, 1);
		env->rep_set_timeout(env, DB_REP_LEASE_TIMEOUT, 3000000);
		env->rep_set_clockskew(env, 102, 100);
	}
}

static int
group_created(struct kw_store *st)
{
	DB *meta = kw_store_db(st, KW_DB_META);
	DBT key = { .data = GROUP_MARKER, .size = sizeof(GROUP_MARKER) - 1 };
	DBT val = { .flags = DB_DBT_PARTIAL };

	return meta->get(meta, NULL, &key, &val, 0) == 0;
}

static enum kw_err
mark_group_created(struct kw_store *st, struct __db_txn *txn, void *baton)
{
	DB *meta = kw_store_db(st, KW_DB_META);
	DBT key = { .data = GROUP_MARKER, .size = sizeof(GROUP_MARKER) - 1 };
	DBT val = { .data = "1", .size = 1 };

	(void)baton;
	return kw_store_err(meta->put(meta, txn, &key, &val, 0));
}

/*
 * Names the sites to the replication manager: this one as the local site,
 * the others as helpers for joining and peers for catching up.  The first
 * listed creates the group, unless its data already records that a group
 * was created (a site restored from a member's backup must join, never
 * found a second group).
 */
static int
configure_sites(struct kw_store *st)
{
	DB_ENV *env = kw_store_env(st);
	int creator = self == 0 && !group_created(st);

	for (unsigned i = 0; i < nsites; i++) {
		DB_SITE *site;
		int rc = env->repmgr_site(env, sites[i].host, sites[i].port, &site, 0);

		if (rc != 0) {
			kw_log_error("group: site %s:%u: %s", sites[i].host, sites[i].port,
			    db_strerror(rc));
			return rc;
		}
		if ((int)i == self) {
			site->set_config(site, DB_LOCAL_SITE, 1);
			if (creator)
				site->set_config(site, DB_GROUP_CREATOR, 1);
		} else {
			site->set_config(site, DB_BOOTSTRAP_HELPER, 1);
			site->set_config(site, DB_REPMGR_PEER, 1);
		}
		site->close(site);
	}
	return 0;
}

/* Maps the shared page the replicator and the workers read; the pool manager calls it before it forks. */
enum kw_err
kw_group_init_shared(void)
{
	if (!kw_group_enabled())
		return KW_OK;
	shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	    -1, 0);
	if (shared == MAP_FAILED) {
		shared = NULL;
		return KW_ENOMEM;
	}
	return KW_OK;
}

static int
listening(void)
{
	return shared != NULL && __atomic_load_n(&shared->listening, __ATOMIC_ACQUIRE);
}

/* Whether this process's environment handle is the master's. */
static int
is_master(DB_ENV *env)
{
	DB_REP_STAT *sp = NULL;
	int master;

	if (env->rep_stat(env, &sp, 0) != 0)
		return 0;
	master = sp->st_status == DB_REP_MASTER;
	free(sp);
	return master;
}

/*
 * Turns Nagle's algorithm off on this process's TCP connections, those of
 * the replication manager among them, which Berkeley DB 5.3 leaves on: a
 * message it writes in two pieces then waits for the peer's delayed ACK,
 * some 40 ms, and a commit waits that long for its acknowledgement.  The
 * library opens its connections in its own threads and names none of
 * them, so the process's descriptors are looked over; a connection that is
 * not TCP, or already set, is left as it is.
 */
static void
no_delay(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		int fd = atoi(e->d_name), type = 0, on = 1;
		socklen_t n = sizeof(type);
		struct sockaddr_storage sa;
		socklen_t sn = sizeof(sa);

		if (e->d_name[0] == '.' || fd == dirfd(d) ||
		    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &n) != 0 || type != SOCK_STREAM ||
		    getsockname(fd, (struct sockaddr *)&sa, &sn) != 0 ||
		    (sa.ss_family != AF_INET && sa.ss_family != AF_INET6))
			continue;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	}
	closedir(d);
}

static volatile sig_atomic_t replicator_stopping;

static void
on_replicator_signal(int sig)
{
	(void)sig;
	replicator_stopping = 1;
}

/*
 * Upkeep, on the master only: a checkpoint and the log files it frees, the
 * expired leases and windows.  A replica removes the log files it no longer
 * needs; its checkpoints come from the master's log.
 */
static void
maintain(struct kw_store *st)
{
	DB_ENV *env = kw_store_env(st);

	if (!is_master(env)) {
		(void)env->log_archive(env, NULL, DB_ARCH_REMOVE);
		return;
	}
	if (!group_created(st) && kw_store_txn(st, mark_group_created, NULL) == KW_OK)
		kw_log_info("group: recorded that this group was created");
	(void)kw_store_maintain(st);
	(void)kw_limits_maintain(st, time(NULL));
}

/*
 * The replicator's life, in a process of its own (Berkeley DB forbids a
 * process that runs the replication manager to fork, so the pool manager
 * cannot be it): join the environment the manager recovered, become the
 * site's listener, take part in elections, and do the upkeep while this
 * site is master.  Returns the exit status.
 */
int
kw_group_replicator_main(void)
{
	struct sigaction sa = { .sa_handler = on_replicator_signal };
	struct kw_store *st = NULL;
	time_t maintained = time(NULL);
	sigset_t none;
	int rc;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGHUP, SIG_IGN);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	prctl(PR_SET_NAME, "kw-repl");

	while (!replicator_stopping && kw_store_open(&st, kw_config.data_dir, KW_STORE_JOIN) != KW_OK)
		sleep(1);
	if (st == NULL)
		return 0;
	if (configure_sites(st) != 0) {
		kw_store_close(st);
		return 1;
	}
	kw_log_info("group: this site is %s:%u, one of %u", sites[self].host, sites[self].port,
	    nsites);
	/* a site that joins needs a master to let it in: until one answers, try each second */
	while (!replicator_stopping &&
	    (rc = kw_store_env(st)->repmgr_start(kw_store_env(st), 3, DB_REP_ELECTION)) != 0) {
		if (rc == DB_REP_IGNORE) {
			kw_log_error("group: another process listens for this site already");
			break;
		}
		if (rc != DB_REP_UNAVAIL) {
			kw_log_error("group: cannot start replication: %s", db_strerror(rc));
			kw_store_close(st);
			return 1;
		}
		kw_log_info("group: waiting for a master to admit this site");
		sleep(1);
	}
	if (!replicator_stopping)
		__atomic_store_n(&shared->listening, 1, __ATOMIC_RELEASE);
	while (!replicator_stopping) {
		usleep(100000);
		no_delay();	/* the connections the other sites' processes opened to this one */
		if (time(NULL) - maintained >= (time_t)kw_config.maintain_secs) {
			maintained = time(NULL);
			maintain(st);
		}
	}
	__atomic_store_n(&shared->listening, 0, __ATOMIC_RELEASE);
	kw_store_close(st);
	return 0;
}

/* The replicator is gone: the workers must wait for the next one before they start theirs. */
void
kw_group_replicator_gone(void)
{
	if (shared != NULL)
		__atomic_store_n(&shared->listening, 0, __ATOMIC_RELEASE);
}

/*
 * A worker's part: once the replicator listens, start this process's
 * replication manager threads, which send the log records of its own
 * commits to the replicas and wait for their acknowledgements.  Done once
 * for each environment handle; until then the worker answers reads, and
 * its writes fail as a replica's do.
 */
static DB_ENV *attached;		/* the handle whose threads are started */
static uint32_t attached_membership;	/* the membership they were started with */

void
kw_group_attach(struct kw_store *st)
{
	DB_ENV *env;
	int rc;

	if (!kw_group_enabled() || st == NULL || (env = kw_store_env(st)) == attached ||
	    !listening())
		return;
	attached_membership = __atomic_load_n(&shared->membership, __ATOMIC_ACQUIRE);
	if (configure_sites(st) != 0)
		return;
	rc = env->repmgr_start(env, 1, DB_REP_ELECTION);
	if (rc == 0)
		kw_log_warn("group: a worker became the site's listener: the replicator is gone");
	else if (rc != DB_REP_IGNORE) {
		kw_log_error("group: a worker cannot start replication: %s", db_strerror(rc));
		return;
	}
	attached = env;
	/*
	 * The threads connect in the background.  A commit sent before they
	 * have reaches no one, and waits for the replicas to ask for it again
	 * on the master's next heartbeat: half a second.  So a new worker
	 * gives them a moment to reach the other sites, and stops waiting for
	 * a site that does not answer.
	 */
	for (int i = 0; i < 50 && __builtin_popcountll(__atomic_load_n(&connected,
	    __ATOMIC_ACQUIRE)) < (int)nsites - 1; i++)
		usleep(2000);
}

/*
 * The handle env is closing: its threads stop with it.  Forgotten here, so
 * that the next handle, which the allocator may well put at the same
 * address, is attached in its turn.
 */
void
kw_group_detach(DB_ENV *env)
{
	if (env == attached) {
		attached = NULL;
		__atomic_store_n(&connected, 0, __ATOMIC_RELEASE);
	}
}

/*
 * Whether this worker's store handle must be made anew: a process's
 * replication manager threads connect to the members it knew when they
 * started, and never to a site that joined later, so the worker's commits
 * would wait for acknowledgements from fewer sites than the group has.
 */
int
kw_group_worker_stale(void)
{
	return attached != NULL &&
	    __atomic_load_n(&shared->membership, __ATOMIC_ACQUIRE) != attached_membership;
}

void
kw_group_commit_begin(void)
{
	perm_failed = 0;
	if (attached != NULL)
		no_delay();	/* this worker's connections, which may be new since the last */
}

/* Whether the commits since kw_group_commit_begin all reached their acknowledgements. */
int
kw_group_commit_acknowledged(void)
{
	return !perm_failed;
}

/*
 * This site's view of the group: whether it is the master, the master's
 * address ("" when none is known) and the end of the local log.
 */
struct view {
	int master;
	char master_host[256];
	unsigned master_port;
	DB_LSN lsn;
};

static void
view_of(struct kw_store *st, struct view *v)
{
	DB_ENV *env = kw_store_env(st);
	DB_REP_STAT *sp = NULL;
	DB_LOG_STAT *lg = NULL;
	int eid = DB_EID_INVALID;

	memset(v, 0, sizeof(*v));
	if (env->rep_stat(env, &sp, 0) == 0) {
		v->master = sp->st_status == DB_REP_MASTER;
		eid = sp->st_master;
		free(sp);
	}
	if (v->master) {
		snprintf(v->master_host, sizeof(v->master_host), "%s", sites[self].host);
		v->master_port = sites[self].port;
	} else if (eid != DB_EID_INVALID) {
		DB_SITE *site;
		const char *host;
		u_int port;

		if (env->repmgr_site_by_eid(env, eid, &site) == 0) {
			if (site->get_address(site, &host, &port) == 0) {
				snprintf(v->master_host, sizeof(v->master_host), "%s", host);
				v->master_port = port;
			}
			site->close(site);
		}
	}
	if (env->log_stat(env, &lg, 0) == 0) {
		v->lsn.file = lg->st_cur_file;
		v->lsn.offset = lg->st_cur_offset;
		free(lg);
	}
}

/* "HOST:PORT" as a JSON string; null when host is "" (no such site known). */
static json_object *
address_json(const char *host, unsigned port)
{
	char buf[280];

	if (host[0] == '\0')
		return NULL;
	snprintf(buf, sizeof(buf), "%s:%u", host, port);
	return json_object_new_string(buf);
}

/* Whether the replication manager counts host:port among the other members. */
static int
is_member(DB_ENV *env, const char *host, unsigned port)
{
	DB_REPMGR_SITE *list = NULL;
	u_int count = 0;
	int found = 0;

	if (env->repmgr_site_list(env, &count, &list) != 0)
		return 0;
	for (u_int i = 0; i < count; i++)
		found |= list[i].port == port && strcmp(list[i].host, host) == 0;
	free(list);
	return found;
}

/* The "group" member of GET /health: this site, its role, the master, the end of its log. */
json_object *
kw_group_health(struct kw_store *st)
{
	json_object *g;
	struct view v;
	char lsn[32];

	if (!kw_group_enabled() || st == NULL)
		return NULL;
	view_of(st, &v);
	g = json_object_new_object();
	json_object_object_add(g, "self", address_json(sites[self].host, sites[self].port));
	json_object_object_add(g, "role", json_object_new_string(v.master ? "master" : "replica"));
	json_object_object_add(g, "master", address_json(v.master_host, v.master_port));
	snprintf(lsn, sizeof(lsn), "%u/%u", v.lsn.file, v.lsn.offset);
	json_object_object_add(g, "lsn", json_object_new_string(lsn));
	return g;
}

/* GET /group/status: every member this site knows, the master among them, and this site's log. */
enum kw_err
kw_op_group_status(struct kw_req *req, struct kw_resp *resp)
{
	DB_REPMGR_SITE *list = NULL;
	json_object *body, *arr;
	DB_ENV *env;
	u_int count = 0;
	enum kw_err rc;
	struct view v;

	if ((rc = kw_auth_admin(req)) != KW_OK)
		return rc;
	if (!kw_group_enabled()) {
		kw_error_set(&req->err, KW_ENOTFOUND, NULL,
		    "this site runs alone: KEYWARDEN_GROUP_SITES is not set");
		return KW_ENOTFOUND;
	}
	if (req->store == NULL)
		return KW_EUNAVAIL;
	body = kw_group_health(req->store);
	env = kw_store_env(req->store);
	view_of(req->store, &v);
	arr = json_object_new_array();
	json_object_array_add(arr, json_object_new_object());
	{
		json_object *me = json_object_array_get_idx(arr, 0);

		json_object_object_add(me, "address",
		    address_json(sites[self].host, sites[self].port));
		json_object_object_add(me, "url", json_object_new_string(sites[self].url));
		json_object_object_add(me, "master", json_object_new_boolean(v.master));
		json_object_object_add(me, "connected", json_object_new_boolean(1));
		json_object_object_add(me, "self", json_object_new_boolean(1));
	}
	if (env->repmgr_site_list(env, &count, &list) == 0) {
		for (u_int i = 0; i < count; i++) {
			json_object *s = json_object_new_object();
			const char *url = site_url(list[i].host, list[i].port);

			json_object_object_add(s, "address", address_json(list[i].host, list[i].port));
			json_object_object_add(s, "url", url ? json_object_new_string(url) : NULL);
			json_object_object_add(s, "master", json_object_new_boolean(
			    v.master_port == list[i].port && strcmp(v.master_host, list[i].host) == 0));
			json_object_object_add(s, "connected",
			    json_object_new_boolean(list[i].status == DB_REPMGR_CONNECTED));
			json_object_object_add(s, "self", json_object_new_boolean(0));
			json_object_array_add(arr, s);
		}
		free(list);
	}
	json_object_object_add(body, "sites", arr);
	kw_resp_json(resp, 200, body);
	return KW_OK;
}

/* POST /group/remove {"address"}: takes a site out of the group (the master does it). */
enum kw_err
kw_op_group_remove(struct kw_req *req, struct kw_resp *resp)
{
	const char *address = json_object_get_string(json_object_object_get(req->body, "address"));
	char host[256];
	unsigned port;
	DB_SITE *site;
	DB_ENV *env;
	int rc;
	enum kw_err err;

	if ((err = kw_auth_admin(req)) != KW_OK)
		return err;
	if (!kw_group_enabled()) {
		kw_error_set(&req->err, KW_ENOTFOUND, NULL,
		    "this site runs alone: KEYWARDEN_GROUP_SITES is not set");
		return KW_ENOTFOUND;
	}
	if (address == NULL || parse_address(address, strlen(address), host, sizeof(host), &port) != 0) {
		kw_error_set(&req->err, KW_EINVAL, "address", "address must be HOST:PORT");
		return KW_EINVAL;
	}
	if (req->store == NULL)
		return KW_EUNAVAIL;
	env = kw_store_env(req->store);
	if (!is_master(env))
		return kw_store_err(EACCES);	/* the master's to do: forwarded */
	if (port == sites[self].port && strcmp(host, sites[self].host) == 0) {
		kw_error_set(&req->err, KW_EINVAL, "address",
		    "%s is the master: stop it, let the group elect another, then remove it there",
		    address);
		return KW_EINVAL;
	}
	if (!is_member(env, host, port)) {
		kw_error_set(&req->err, KW_ENOTFOUND, "address", "%s is not a member of the group",
		    address);
		return KW_ENOTFOUND;
	}
	if ((rc = env->repmgr_site(env, host, port, &site, 0)) == 0)
		rc = site->remove(site);	/* the handle is gone whatever it answers */
	if (rc != 0) {
		kw_log_warn("group: removing %s: %s", address, db_strerror(rc));
		kw_error_set(&req->err, KW_EUNAVAIL, NULL,
		    "the group did not acknowledge the removal of %s: try again", address);
		return KW_EUNAVAIL;
	}
	kw_log_info("group: removed %s from the group", address);
	kw_resp_json(resp, 200, json_object_new_object());
	json_object_object_add(resp->json, "removed", json_object_new_string(address));
	return KW_OK;
}

/* --- writes forwarded to the master --------------------------------- */

struct forward {
	struct kw_req *req;
	struct kw_resp *resp;
	FCGX_Stream *out;
	int head_done;		/* the blank line after the headers is written */
	int status;
};

/* Headers of one hop that the next one makes for itself. */
static int
hop_header(const char *name, size_t n)
{
	static const char *const hop[] = {
		"connection", "keep-alive", "transfer-encoding", "content-length", "date",
		"server", "proxy-connection", "te", "trailer", "upgrade",
	};

	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (strlen(hop[i]) == n && strncasecmp(hop[i], name, n) == 0)
			return 1;
	return 0;
}

/* The master's status line and headers, passed on as FastCGI's: "Status: ..." and the rest. */
static size_t
on_forward_header(char *data, size_t size, size_t nmemb, void *baton)
{
	struct forward *f = baton;
	size_t n = size * nmemb, name;

	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		const char *sp = memchr(data, ' ', n);
		char line[128];
		size_t len;

		/* an interim 100 Continue is followed by the real status line */
		if (sp == NULL || (f->status = atoi(sp + 1)) < 200)
			return n;
		len = n - (size_t)(sp + 1 - data);
		while (len > 0 && (sp[len] == '\r' || sp[len] == '\n'))
			len--;
		snprintf(line, sizeof(line), "Status: %.*s\r\n", (int)len, sp + 1);
		FCGX_PutS(line, f->out);
		f->resp->status = f->status;
		f->resp->sent = 1;
		return n;
	}
	if (f->status < 200)
		return n;
	if (n <= 2 && (data[0] == '\r' || data[0] == '\n')) {
		FCGX_PutS("\r\n", f->out);
		f->head_done = 1;
		return n;
	}
	name = strcspn(data, ":");
	if (name < n && !hop_header(data, name))
		FCGX_PutStr(data, (int)n, f->out);
	return n;
}

/* The master's body, passed on as it comes: a relayed stream stays a stream. */
static size_t
on_forward_body(char *data, size_t size, size_t nmemb, void *baton)
{
	struct forward *f = baton;
	size_t n = size * nmemb;

	if (!f->head_done)
		return 0;
	if (FCGX_PutStr(data, (int)n, f->out) < 0)
		return 0;	/* the client left */
	FCGX_FFlush(f->out);
	return n;
}

/* The client's headers, from the HTTP_* parameters, as the master must see them. */
static struct curl_slist *
forward_headers(struct kw_req *req)
{
	struct curl_slist *list = NULL;
	const char *ct = kw_req_header(req, "CONTENT_TYPE");
	char line[8192];

	for (char **e = req->fcgi->envp; *e != NULL; e++) {
		const char *eq = strchr(*e, '='), *name = *e + 5;
		size_t n, i;

		if (strncmp(*e, "HTTP_", 5) != 0 || eq == NULL || (n = (size_t)(eq - name)) == 0 ||
		    n >= 200 || strlen(eq + 1) + n + 3 > sizeof(line))
			continue;
		/* HTTP_X_REQUEST_ID -> X-Request-Id; the name's case does not matter to HTTP */
		for (i = 0; i < n; i++)
			line[i] = name[i] == '_' ? '-' : name[i];
		line[i] = '\0';
		if (hop_header(line, n) || strcasecmp(line, "host") == 0 ||
		    strcasecmp(line, "expect") == 0 || strcasecmp(line, FORWARDED_HEADER) == 0 ||
		    strcasecmp(line, "proxy") == 0)
			continue;
		snprintf(line + n, sizeof(line) - n, ": %s", eq + 1);
		list = curl_slist_append(list, line);
	}
	if (ct != NULL && *ct != '\0') {
		snprintf(line, sizeof(line), "Content-Type: %s", ct);
		list = curl_slist_append(list, line);
	}
	list = curl_slist_append(list, "Expect:");
	list = curl_slist_append(list, FORWARDED_HEADER ": 1");
	return list;
}

/* 503 with Retry-After: the group has no master this site can reach, for now. */
static enum kw_err
no_master(struct kw_req *req, const char *why)
{
	kw_error_set(&req->err, KW_EUNAVAIL, NULL, "%s: try again shortly", why);
	return KW_EUNAVAIL;
}

/*
 * Says that the master cannot be reached, at most once every five seconds
 * in a worker: during a failover every forwarded write fails alike, and a
 * line for each would bury the rest of the log.
 */
static void
unreachable_master(const struct view *v, CURLcode cc)
{
	static time_t said;
	static unsigned untold;
	time_t now = time(NULL);

	if (now - said < 5) {
		untold++;
		return;
	}
	kw_log_warn("group: cannot reach the master at %s:%u: %s (%u more times since the last such line)",
	    v->master_host, v->master_port, curl_easy_strerror(cc), untold);
	said = now;
	untold = 0;
}

/*
 * Sends the request, as the client sent it, to the master and passes its
 * answer back, chunk by chunk.  Called when this site's store refused a
 * write because it is a replica: writes are forwarded, not redirected, so
 * every client (and the web server's auth_request, which cannot follow a
 * redirect) gets the master's answer from whichever site it asked.
 */
enum kw_err
kw_group_forward(struct kw_req *req, struct kw_resp *resp)
{
	struct forward f = { .req = req, .resp = resp, .out = req->fcgi->out };
	const char *query = kw_req_header(req, "QUERY_STRING");
	struct curl_slist *headers;
	const char *url;
	struct view v;
	char *target;
	size_t n;
	CURLcode cc;
	CURL *curl;

	if (req->store == NULL)
		return KW_EUNAVAIL;
	if (kw_req_header(req, "HTTP_X_KEYWARDEN_FORWARDED") != NULL)
		return no_master(req, "this site was asked as the master, but is a replica now");
	view_of(req->store, &v);
	if (v.master || v.master_host[0] == '\0')
		return no_master(req, "the group has no master now (an election is under way)");
	if ((url = site_url(v.master_host, v.master_port)) == NULL)
		return no_master(req, "the master is not in this site's KEYWARDEN_GROUP_SITES");
	if ((curl = kw_http_client()) == NULL)
		return KW_EINTERNAL;
	if (query == NULL)
		query = "";
	n = strlen(url) + strlen(req->path) + strlen(query) + 2;
	if ((target = kw_arena_alloc(req->arena, n)) == NULL)
		return KW_ENOMEM;
	snprintf(target, n, "%s%s%s%s", url, req->path, *query != '\0' ? "?" : "", query);
	headers = forward_headers(req);
	curl_easy_setopt(curl, CURLOPT_URL, target);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method);
	if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
	else if (strcmp(req->method, "GET") != 0) {
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, req->raw_body ? req->raw_body : "");
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->raw_body_len);
	}
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_forward_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, &f);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_forward_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &f);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 2L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)kw_config.relay_timeout);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
	if (kw_config.ca_bundle[0] != '\0')
		curl_easy_setopt(curl, CURLOPT_CAINFO, kw_config.ca_bundle);
	cc = curl_easy_perform(curl);
	curl_slist_free_all(headers);
	if (resp->sent) {
		if (!f.head_done)
			FCGX_PutS("\r\n", f.out);
		if (cc != CURLE_OK)
			kw_log_warn("group: the master's answer broke off: %s", curl_easy_strerror(cc));
		return KW_OK;
	}
	unreachable_master(&v, cc);
	return no_master(req, "the master cannot be reached");
}
