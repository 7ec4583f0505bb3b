/* pool.c: the pool manager: pre-forks single-threaded workers, grows and shrinks the pool with the load, restarts the dead, drains on SIGTERM, keeps the store. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fastcgi.h>
#include <fcgiapp.h>

#include "kw.h"

#define MAX_WORKERS KW_MAX_WORKERS
#define DRAIN_SECS 30		/* after SIGTERM, how long in-flight requests may take */
#define EXIT_RECOVER 3		/* a worker's exit status asking for recovery */
#define GROW_SIGNAL SIGUSR1	/* a worker to the manager: every worker is busy */

/*
 * What each worker slot is doing, in memory the manager maps shared before
 * it forks.  The manager marks a slot IDLE when it forks its worker and
 * EMPTY when it reaps it, so a worker that dies inside a request never
 * leaves the pool counting it busy; the worker itself moves its slot
 * between IDLE and BUSY around each request.  LEAVING is a worker the
 * manager has asked to go: it is counted neither idle nor busy.  Every
 * change of state is a compare-and-swap, so the manager's IDLE -> LEAVING
 * and the worker's IDLE -> BUSY cannot both win.
 */
enum slot_state { SLOT_EMPTY, SLOT_IDLE, SLOT_BUSY, SLOT_LEAVING };

struct slot {
	uint32_t state;		/* enum slot_state, changed only atomically */
	int64_t idle_since;	/* CLOCK_MONOTONIC seconds: when its last request ended */
};

static struct slot *slots;	/* MAX_WORKERS of them, shared by the manager and its workers */
static pid_t manager_pid;	/* whom a worker tells when every worker is busy */
static unsigned pool_cap;	/* the most workers the manager starts (slots beyond stay EMPTY) */

static volatile sig_atomic_t worker_stopping;

static int64_t
monotonic_secs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec;
}

/* Moves slot i from one state to another; 0 when it was not in from. */
static int
slot_move(unsigned i, enum slot_state from, enum slot_state to)
{
	uint32_t expected = from;

	return __atomic_compare_exchange_n(&slots[i].state, &expected, (uint32_t)to, 0,
	    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static unsigned
slots_in(enum slot_state state)
{
	unsigned n = 0;

	for (unsigned i = 0; i < MAX_WORKERS; i++)
		n += __atomic_load_n(&slots[i].state, __ATOMIC_ACQUIRE) == state;
	return n;
}

/* The workers serving a request now, for GET /metrics. */
static unsigned
busy_workers(void)
{
	return slots_in(SLOT_BUSY);
}

/*
 * A worker's request begins: its slot is BUSY, and when no other worker
 * is left idle the manager is told, so that the next request finds a
 * worker waiting (a relayed call holds its worker for the call's length,
 * a durable write for its log flush); not when the pool is at its cap,
 * where the signal would change nothing and cost a system call a request.
 */
static void
slot_busy(unsigned i)
{
	if (slot_move(i, SLOT_IDLE, SLOT_BUSY) && slots_in(SLOT_IDLE) == 0 &&
	    slots_in(SLOT_EMPTY) > MAX_WORKERS - pool_cap)
		kill(manager_pid, GROW_SIGNAL);
}

/* A worker waits on the listening socket again: its slot is IDLE, since now. */
static void
slot_idle(unsigned i)
{
	if (__atomic_load_n(&slots[i].state, __ATOMIC_ACQUIRE) != SLOT_BUSY)
		return;
	__atomic_store_n(&slots[i].idle_since, monotonic_secs(), __ATOMIC_RELEASE);
	(void)slot_move(i, SLOT_BUSY, SLOT_IDLE);
}

static void
on_worker_signal(int sig)
{
	(void)sig;
	worker_stopping = 1;
}

/*
 * Waits until fd is readable or a signal in the waiting mask arrives;
 * returns 0, or -1 with errno set (EINTR for a signal).  The listening
 * socket is watched through listen_ep, an epoll instance holding it with
 * EPOLLEXCLUSIVE, so that a connection wakes one idle worker rather than
 * all of them (with many workers, a durable write load's, waking every
 * idle one for each request costs more CPU than the request).  *bad is
 * set when fd reports an error.
 */
static int
wait_readable(int fd, int listen_fd, int listen_ep, const sigset_t *waiting, int *bad)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct epoll_event ev;
	int n;

	*bad = 0;
	if (fd == listen_fd && listen_ep >= 0) {
		if ((n = epoll_pwait(listen_ep, &ev, 1, -1, waiting)) < 0)
			return -1;
		*bad = n > 0 && (ev.events & EPOLLERR);
		return 0;
	}
	if (ppoll(&pfd, 1, NULL, waiting) < 0)
		return -1;
	*bad = (pfd.revents & (POLLNVAL | POLLERR)) != 0;
	return 0;
}

/* An epoll instance watching listen_fd, one waiter woken a connection; -1 when none. */
static int
listen_epoll(int listen_fd)
{
	struct epoll_event ev = { .events = EPOLLIN | EPOLLEXCLUSIVE };
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (ep >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev) != 0) {
		kw_log_warn("worker: epoll on the listening socket: %s", strerror(errno));
		close(ep);
		ep = -1;
	}
	return ep;
}

/*
 * A worker's life: accept, serve, repeat.  SIGTERM and SIGINT are blocked
 * except while waiting for a connection, so a signal never interrupts a
 * request: the request in flight finishes and the worker leaves before
 * accepting another.  The listening socket is non-blocking, so a
 * connection another worker took first sends us back to waiting instead
 * of blocking in accept.
 */
/*
 * Reads what is left of a request's input on a connection the server keeps:
 * libfcgi leaves unread records in the socket (at least the empty one that
 * ends FCGI_STDIN), and the next request on the connection would start with
 * them.  A body too large to be worth reading closes the connection instead.
 * Authorizers get no FCGI_STDIN at all, so there is nothing to wait for.
 */
static void
finish_input(FCGX_Request *req)
{
	char buf[8192];
	size_t left = kw_config.max_body + sizeof(buf);
	int n;

	if (req->role != FCGI_RESPONDER)
		return;
	while ((n = FCGX_GetStr(buf, sizeof(buf), req->in)) > 0) {
		if ((size_t)n >= left) {
			req->keepConnection = 0;
			return;
		}
		left -= (size_t)n;
	}
}

static int
worker_main(int listen_fd, unsigned slot)
{
	struct sigaction sa = { .sa_handler = on_worker_signal };
	sigset_t blocked, waiting;
	struct kw_store *store = NULL;
	struct kw_arena *arena;
	FCGX_Request req;
	int status = 0, listen_ep, bad;

	sigemptyset(&blocked);
	sigaddset(&blocked, SIGTERM);
	sigaddset(&blocked, SIGINT);
	sigprocmask(SIG_SETMASK, &blocked, NULL);
	sigemptyset(&waiting);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	/* the manager's death ends the worker the same way SIGTERM does */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	prctl(PR_SET_NAME, "kw-worker");

	if (kw_crypto_init() != KW_OK || (arena = kw_arena_new()) == NULL)
		return 1;
	srand((unsigned)getpid() ^ (unsigned)time(NULL));
	(void)kw_store_open(&store, kw_config.data_dir, KW_STORE_JOIN);
	if (FCGX_InitRequest(&req, listen_fd, FCGI_FAIL_ACCEPT_ON_INTR) != 0)
		return 1;
	listen_ep = listen_epoll(listen_fd);

	while (!worker_stopping) {
		/*
		 * A connection the server keeps open (FCGI_KEEP_CONN: nginx's
		 * fastcgi_keep_conn, mod_proxy_fcgi's enablereuse) carries this
		 * worker's next request, and FCGX_Accept_r reads it from there,
		 * not from the listening socket; so it is the one to wait on.
		 */
		int fd = req.ipcFd >= 0 ? req.ipcFd : listen_fd;

		/*
		 * A worker that waits on a kept connection serves no one else:
		 * it stays busy, so the pool grows for the other connections.
		 */
		if (req.ipcFd < 0)
			slot_idle(slot);
		if (wait_readable(fd, listen_fd, listen_ep, &waiting, &bad) < 0) {
			if (errno == EINTR)
				continue;
			kw_log_error("worker: poll: %s", strerror(errno));
			status = 1;
			break;
		}
		if (bad && fd == listen_fd) {
			kw_log_error("worker: the listening socket is gone");
			status = 1;
			break;
		}
		if (FCGX_Accept_r(&req) < 0)
			continue;	/* another worker took it, or the peer left */
		slot_busy(slot);
		if (kw_http_serve(&req, arena, &store) == KW_ERUNRECOVERY)
			worker_stopping = 1, status = EXIT_RECOVER;
		if (req.keepConnection)
			finish_input(&req);
		FCGX_Finish_r(&req);
		kw_store_flush_deferred(store);	/* the answer has gone: now the disk */
		kw_arena_reset(arena);
	}
	if (listen_ep >= 0)
		close(listen_ep);
	kw_store_close(store);
	kw_arena_free(arena);
	return status;
}

/*
 * Slots 0 to nworkers - 1 always have a worker (one that dies is started
 * again); slots from nworkers to cap - 1 get one when every worker is
 * busy, and lose it when it has been idle for kw_config.worker_idle_secs.
 */
struct pool {
	int listen_fd;
	unsigned nworkers;
	unsigned cap;
	pid_t pids[MAX_WORKERS];
	pid_t replicator;		/* a replicated site's replicator process; 0 none */
	struct kw_store *store;
	int stopping;
	time_t restart_window;		/* start of the current one-second window */
	unsigned restarts_in_window;
};

static unsigned
live_workers(const struct pool *p)
{
	unsigned n = 0;

	for (unsigned i = 0; i < p->cap; i++)
		n += p->pids[i] > 0;
	return n;
}

/* Slot i's worker is gone (reaped): nothing of it stays in the counts. */
static void
forget(struct pool *p, unsigned i)
{
	p->pids[i] = 0;
	__atomic_store_n(&slots[i].state, SLOT_EMPTY, __ATOMIC_RELEASE);
}

/* Forks worker slot i; the manager keeps going if fork fails and retries later. */
static void
spawn(struct pool *p, unsigned i)
{
	pid_t pid;

	__atomic_store_n(&slots[i].idle_since, monotonic_secs(), __ATOMIC_RELEASE);
	__atomic_store_n(&slots[i].state, SLOT_IDLE, __ATOMIC_RELEASE);
	if ((pid = fork()) == 0) {
		/* the manager's store handle belongs to the manager: never use it here */
		_exit(worker_main(p->listen_fd, i));
	}
	if (pid < 0) {
		__atomic_store_n(&slots[i].state, SLOT_EMPTY, __ATOMIC_RELEASE);
		kw_log_error("pool: fork: %s", strerror(errno));
		return;
	}
	p->pids[i] = pid;
	kw_metrics_workers(live_workers(p));
}

/*
 * Forks the replicator of a replicated site (group.c), which must start
 * before the workers: the first process of the environment to start the
 * replication manager becomes the site's listener.
 */
static void
spawn_replicator(struct pool *p)
{
	pid_t pid;

	if (!kw_group_enabled() || p->replicator != 0 || p->store == NULL)
		return;
	kw_group_replicator_gone();
	if ((pid = fork()) == 0)
		_exit(kw_group_replicator_main());
	if (pid < 0) {
		kw_log_error("pool: fork: %s", strerror(errno));
		return;
	}
	p->replicator = pid;
}

/* Stops the replicator, once the workers have gone; SIGKILL when it does not leave. */
static void
stop_replicator(struct pool *p)
{
	time_t deadline = time(NULL) + 10;

	if (p->replicator == 0)
		return;
	kill(p->replicator, SIGTERM);
	while (waitpid(p->replicator, NULL, WNOHANG) == 0 && time(NULL) < deadline)
		usleep(20000);
	if (kill(p->replicator, 0) == 0) {
		kill(p->replicator, SIGKILL);
		waitpid(p->replicator, NULL, 0);
	}
	p->replicator = 0;
	kw_group_replicator_gone();
}

/* Sends sig to every live worker. */
static void
signal_workers(struct pool *p, int sig)
{
	for (unsigned i = 0; i < p->cap; i++)
		if (p->pids[i] > 0)
			kill(p->pids[i], sig);
}

/*
 * Waits (at most secs) for every worker to exit; returns the number still
 * alive.  Used when draining and before a full recovery.
 */
static unsigned
wait_workers(struct pool *p, unsigned secs)
{
	time_t deadline = time(NULL) + secs;

	while (live_workers(p) > 0 && time(NULL) < deadline) {
		pid_t pid = waitpid(-1, NULL, WNOHANG);

		if (pid > 0) {
			for (unsigned i = 0; i < p->cap; i++)
				if (p->pids[i] == pid)
					forget(p, i);
		} else {
			usleep(20000);
		}
	}
	return live_workers(p);
}

/*
 * Brings the environment back after a process died inside Berkeley DB:
 * every worker leaves, the manager reopens the environment with recovery,
 * and fresh workers start.
 */
static void
recover(struct pool *p)
{
	kw_log_warn("pool: recovering the store: restarting every worker");
	signal_workers(p, SIGTERM);
	if (wait_workers(p, DRAIN_SECS) > 0) {
		signal_workers(p, SIGKILL);
		wait_workers(p, 5);
	}
	stop_replicator(p);
	kw_store_close(p->store);
	p->store = NULL;
	if (kw_store_open(&p->store, kw_config.data_dir, KW_STORE_RECOVER_FORCE) != KW_OK)
		kw_log_error("pool: store recovery failed; workers answer 503 until it succeeds");
}

/* Reaps dead workers, cleans up after them in the store, and replaces them. */
static void
reap(struct pool *p)
{
	int status, need_recovery = 0;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		unsigned i;

		if (pid == p->replicator) {
			/* only the replicator may listen: everything restarts after it */
			kw_log_warn("pool: the replicator %ld ended (status %d): recovering",
			    (long)pid, status);
			p->replicator = 0;
			kw_group_replicator_gone();
			need_recovery = 1;
			continue;
		}
		for (i = 0; i < p->cap && p->pids[i] != pid; i++)
			;
		if (i == p->cap)
			continue;
		forget(p, i);
		kw_metrics_workers(live_workers(p));
		if (WIFSIGNALED(status))
			kw_log_warn("pool: worker %ld killed by signal %d", (long)pid, WTERMSIG(status));
		else if (WEXITSTATUS(status) != 0)
			kw_log_warn("pool: worker %ld exited with status %d", (long)pid,
			    WEXITSTATUS(status));
		if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_RECOVER)
			need_recovery = 1;
		else if (p->store != NULL && kw_store_failchk(p->store) == KW_ERUNRECOVERY)
			need_recovery = 1;
	}
	if (p->stopping)
		return;
	if (need_recovery || p->store == NULL)
		recover(p);
	spawn_replicator(p);
	for (unsigned i = 0; i < p->nworkers; i++) {
		time_t now = time(NULL);

		if (p->pids[i] != 0)
			continue;
		/* a worker that dies at birth must not turn the manager into a fork loop */
		if (now != p->restart_window) {
			p->restart_window = now;
			p->restarts_in_window = 0;
		}
		if (++p->restarts_in_window > 4 * p->nworkers) {
			sleep(1);
		}
		spawn(p, i);
		if (p->pids[i] != 0)
			kw_metrics_worker_restart();
	}
}

/*
 * Starts more workers when none is idle and the pool is below its cap: a
 * quarter as many as are busy (at least one), so that a burst of slow
 * calls is met in a few rounds rather than one fork at a time, and the
 * pool overshoots the load by a quarter at most (the idle leave again).
 * Those workers, once busy, ask again if the load still finds none idle.
 * A request that finds the pool at its cap waits in the listen queue.
 */
static void
grow(struct pool *p)
{
	unsigned want, started = 0;

	if (p->stopping || slots_in(SLOT_IDLE) > 0)
		return;
	want = slots_in(SLOT_BUSY) / 4;
	if (want == 0)
		want = 1;
	for (unsigned i = p->nworkers; i < p->cap && started < want; i++) {
		if (p->pids[i] != 0)
			continue;
		spawn(p, i);
		started += p->pids[i] != 0;
	}
	if (started > 0)
		kw_log_debug("pool: every worker is busy: %u workers now", live_workers(p));
}

static int64_t
monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * KEYWARDEN_USAGE_COMMIT=async: the workers answer a usage report once its
 * commit is in the log file, and here the manager flushes the log to disk
 * every usage_flush_ms, so a crash of the machine loses at most that long
 * of usage (a crash of keywarden alone loses none).  *flushed is when the
 * last flush was made; returns the milliseconds until the next one is due.
 */
static long
flush_usage(struct pool *p, int64_t *flushed)
{
	int64_t now = monotonic_ms();

	if (now - *flushed >= (int64_t)kw_config.usage_flush_ms) {
		if (p->store != NULL)
			(void)kw_store_flush(p->store);
		*flushed = now = monotonic_ms();
	}
	return (long)(*flushed + kw_config.usage_flush_ms - now);
}

/* Asks the workers above nworkers that have been idle for the idle period to leave. */
static void
shrink(struct pool *p)
{
	int64_t now = monotonic_secs();

	for (unsigned i = p->nworkers; i < p->cap; i++) {
		int64_t since = __atomic_load_n(&slots[i].idle_since, __ATOMIC_ACQUIRE);

		if (p->pids[i] > 0 && now - since >= (int64_t)kw_config.worker_idle_secs &&
		    slot_move(i, SLOT_IDLE, SLOT_LEAVING))
			kill(p->pids[i], SIGTERM);
	}
}

/*
 * Runs the pool until SIGTERM or SIGINT: nworkers workers accepting on
 * listen_fd, replaced when they die; periodic store maintenance in the
 * manager.  Returns KW_OK after every worker has drained and exited.
 */
enum kw_err
kw_pool_run(int listen_fd, unsigned nworkers)
{
	struct pool p = { .listen_fd = listen_fd };
	time_t maintained = time(NULL);
	int64_t flushed = monotonic_ms();
	sigset_t set;
	int flags;

	p.nworkers = nworkers > MAX_WORKERS ? MAX_WORKERS : nworkers;
	/* unset, the cap leaves room for slow calls: four times the workers, at least 64 */
	p.cap = kw_config.max_workers != 0 ? kw_config.max_workers :
	    p.nworkers > 16 ? 4 * p.nworkers : 64;
	if (p.cap < p.nworkers)
		p.cap = p.nworkers;
	if (p.cap > MAX_WORKERS)
		p.cap = MAX_WORKERS;
	pool_cap = p.cap;
	slots = mmap(NULL, MAX_WORKERS * sizeof(*slots), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (slots == MAP_FAILED) {
		kw_log_error("pool: no shared memory for the worker slots: %s", strerror(errno));
		return KW_EINTERNAL;
	}
	manager_pid = getpid();
	if ((flags = fcntl(listen_fd, F_GETFL)) < 0 ||
	    fcntl(listen_fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		kw_log_error("pool: listening socket: %s", strerror(errno));
		return KW_EINTERNAL;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, GROW_SIGNAL);
	sigprocmask(SIG_BLOCK, &set, NULL);
	prctl(PR_SET_NAME, "kw-manager");
	/* before the store (whose transactions it counts) and before any fork */
	if (kw_metrics_init() != KW_OK)
		kw_log_warn("pool: no shared memory for metrics: each process counts its own");
	kw_metrics_pool(p.cap, busy_workers);

	if (kw_group_init_shared() != KW_OK) {
		kw_log_error("pool: no shared memory for the group's replicator: %s", strerror(errno));
		return KW_EINTERNAL;
	}
	/*
	 * A replicated site's regions are made anew, with replication's, by a
	 * recovery: the last start may have run alone, or a tool made them.
	 */
	if (kw_store_open(&p.store, kw_config.data_dir, kw_group_enabled() ?
	    KW_STORE_RECOVER_FORCE : KW_STORE_RECOVER) != KW_OK)
		kw_log_error("pool: the store cannot be opened; workers answer 503 until it can");
	spawn_replicator(&p);
	for (unsigned i = 0; i < p.nworkers; i++)
		spawn(&p, i);
	kw_log_info("pool: %u workers serving, up to %u when busy, keywarden %s", p.nworkers,
	    p.cap, KW_VERSION);

	while (!p.stopping) {
		/* a tick a second: a lost wake-up to grow, and the idle to let go */
		struct timespec timeout = { .tv_sec = 1 };
		int sig;

		if (kw_config.usage_async) {
			long due = flush_usage(&p, &flushed);

			if (due < 1000)
				timeout = (struct timespec){ .tv_nsec = (due > 0 ? due : 1) * 1000000L };
		}
		sig = sigtimedwait(&set, NULL, &timeout);

		switch (sig) {
		case SIGCHLD:
			reap(&p);
			break;
		case SIGTERM:
		case SIGINT:
			p.stopping = 1;
			break;
		case GROW_SIGNAL:
		case SIGHUP:
			break;
		default:
			shrink(&p);
			break;
		}
		grow(&p);
		if (!p.stopping && time(NULL) - maintained >= (time_t)kw_config.maintain_secs) {
			maintained = time(NULL);
			if (p.store != NULL && kw_group_enabled()) {
				spawn_replicator(&p);	/* its upkeep is the master's */
			} else if (p.store != NULL) {
				(void)kw_store_maintain(p.store);
				(void)kw_limits_maintain(p.store, time(NULL));
			} else if (kw_store_open(&p.store, kw_config.data_dir, KW_STORE_RECOVER) == KW_OK)
				kw_log_info("pool: the store is open again");
		}
	}

	kw_log_info("pool: draining %u workers", live_workers(&p));
	signal_workers(&p, SIGTERM);
	if (wait_workers(&p, DRAIN_SECS) > 0) {
		kw_log_warn("pool: workers still busy after %d s: killing them", DRAIN_SECS);
		signal_workers(&p, SIGKILL);
		wait_workers(&p, 5);
	}
	kw_metrics_workers(live_workers(&p));
	stop_replicator(&p);
	if (p.store != NULL) {
		if (!kw_group_enabled())
			(void)kw_store_maintain(p.store);
		kw_store_close(p.store);
	}
	return KW_OK;
}
