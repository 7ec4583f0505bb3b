#!/usr/bin/python3
"""pool.t: the pool grows when every worker is busy, up to KEYWARDEN_MAX_WORKERS, and shrinks
back to KEYWARDEN_WORKERS when the extra workers have been idle for KEYWARDEN_WORKER_IDLE_SECS;
a request that finds the pool at its cap waits, and is answered, instead of failing; a worker
killed inside a request leaves the counts right.  A slow request is one whose body has not all
arrived: keywarden's worker is in it until the rest comes (tests/lib/fcgi.py, straight to the
socket lighttpd started keywarden on)."""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import fcgi  # noqa: E402
from kwserver import BIN, MASTER_KEY, Server, wait_for  # noqa: E402

WORKERS, CAP, IDLE_SECS = 2, 5, 2


def hold(srv):
    """A POST /key/generate whose body stops after its first byte: a worker is busy with it
    until release()."""
    params = fcgi.http_params("POST", "/key/generate", {
        "Authorization": "Bearer " + MASTER_KEY, "Content-Type": "application/json"}, b"{}")
    return fcgi.begin(fcgi.socket_path(srv), params, stdin=b"{", timeout=60)


def release(held):
    """Sends the rest of each held body; returns the statuses of the answers."""
    statuses = []
    for s in held:
        try:
            statuses.append(fcgi.finish(s, b"}").status)
        except (OSError, fcgi.FastCGIError) as e:
            statuses.append(repr(e))
    return statuses


def metrics(srv):
    """The pool's gauges in GET /metrics, by name."""
    r = srv.admin("GET", "/metrics")
    return {ln.split()[0]: float(ln.split()[1]) for ln in r.body.decode().splitlines()
            if ln.startswith("keywarden_workers")}


def stays(cond, secs):
    """cond() holds throughout secs seconds."""
    deadline = time.time() + secs
    while time.time() < deadline:
        if not cond():
            return False
        time.sleep(0.05)
    return True


def settings():
    env = dict(os.environ, KEYWARDEN_WORKERS="4", KEYWARDEN_MAX_WORKERS="3",
               KEYWARDEN_MASTER_KEY=MASTER_KEY)
    r = subprocess.run([BIN, "serve", "-p", "39123", "-d", "/nonexistent/kw-pool-test"], env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    tap.ok(r.returncode != 0 and "KEYWARDEN_MAX_WORKERS (3) must be at least the workers (4" in r.stderr, "a cap below the workers is refused at start, naming both", r.stderr)
    r = subprocess.run([BIN, "serve", "-p", "39123", "-w", "2", "-d", "/nonexistent/kw-pool-test"],
                       env=dict(env, KEYWARDEN_WORKERS="1", KEYWARDEN_MAX_WORKERS="1"),
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    tap.ok(r.returncode != 0 and "must be at least the workers (2" in r.stderr,
           "and so is one below serve -w", r.stderr)
    env["KEYWARDEN_MAX_WORKERS"] = "257"
    r = subprocess.run([BIN, "serve", "-p", "39123", "-d", "/nonexistent/kw-pool-test"], env=env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    tap.ok(r.returncode != 0 and "KEYWARDEN_MAX_WORKERS" in r.stderr,
           "a cap above 256 is refused at start", r.stderr)


def main():
    settings()
    env = {"KEYWARDEN_WORKER_IDLE_SECS": str(IDLE_SECS)}
    with Server(workers=WORKERS, max_workers=CAP, env=env) as srv:
        base = srv.workers()
        tap.eq(len(base), WORKERS, "the pool starts with KEYWARDEN_WORKERS workers")

        # one request in a pool of two leaves one idle: nothing to grow for
        held = [hold(srv)]
        tap.ok(stays(lambda: len(srv.workers()) == WORKERS, 1.5),
               "one slow request among %d workers: the pool stays at %d" % (WORKERS, WORKERS),
               srv.workers())
        # every worker busy: one more, and again for each request that takes the spare one
        held.append(hold(srv))
        grown = wait_for(lambda: len(srv.workers()) == WORKERS + 1, timeout=10)
        tap.ok(grown, "both workers busy: the pool starts a spare worker", srv.workers())
        m = metrics(srv)
        tap.ok(m.get("keywarden_workers_busy") == 3 and m.get("keywarden_workers_max") == CAP,
               "GET /metrics: 3 workers busy (the two held and the scrape's own), the cap %d"
               % CAP, m)
        for _ in range(CAP - 2):
            held.append(hold(srv))
        grown = wait_for(lambda: len(srv.workers()) == CAP, timeout=10)
        tap.ok(grown, "%d slow requests: the pool grows to its cap of %d" % (CAP, CAP),
               srv.workers())
        tap.ok(set(base) <= set(srv.workers()), "the first workers are still there")

        # at the cap, two more wait in the listen queue, and the pool grows no further
        held += [hold(srv), hold(srv)]
        tap.ok(stays(lambda: len(srv.workers()) == CAP, 2),
               "two more requests at the cap: no worker beyond it", srv.workers())
        statuses = release(held)
        tap.eq(statuses, [200] * (CAP + 2), "every request is answered, the two that waited "
               "at the cap too")
        r = srv.admin("GET", "/key/list?size=1")
        tap.eq((r.json or {}).get("total_count"), CAP + 2, "and each stored its key")

        # idle again: back to KEYWARDEN_WORKERS, the first ones
        shrunk = wait_for(lambda: len(srv.workers()) == WORKERS, timeout=IDLE_SECS + 10)
        tap.ok(shrunk, "idle for %d s: the pool shrinks back to %d workers" %
               (IDLE_SECS, WORKERS), srv.workers())
        tap.eq(srv.workers(), base, "the workers left are the first ones")
        tap.eq(metrics(srv).get("keywarden_workers_busy"), 1,
               "GET /metrics: only the scrape's worker busy")
        log = srv.read_log()
        tap.ok("killed by signal" not in log and "exited with status" not in log,
               "the extra workers left cleanly", log[-2000:])

        # a worker killed inside a request: its slot is counted neither busy nor idle
        held = [hold(srv), hold(srv)]
        tap.ok(wait_for(lambda: len(srv.workers()) == WORKERS + 1, timeout=10),
               "two slow requests again: a spare worker", srv.workers())
        for pid in srv.workers():
            os.kill(pid, signal.SIGKILL)
        statuses = release(held)
        tap.ok(all(s != 200 for s in statuses), "the killed workers' requests fail (their "
               "connections closed)", statuses)
        restored = wait_for(lambda: len(srv.workers()) == WORKERS, timeout=10)
        tap.ok(restored and not set(srv.workers()) & set(base),
               "every worker killed: the pool starts KEYWARDEN_WORKERS new ones", srv.workers())
        held = [hold(srv)]
        tap.ok(stays(lambda: len(srv.workers()) == WORKERS, 1.5),
               "after the kill, one slow request leaves a worker idle: no growth (no slot "
               "left counted busy)", srv.workers())
        held.append(hold(srv))
        tap.ok(wait_for(lambda: len(srv.workers()) == WORKERS + 1, timeout=10),
               "a second one: the pool grows again", srv.workers())
        tap.eq(release(held), [200, 200], "both answered")
        tap.ok(wait_for(lambda: len(srv.workers()) == WORKERS, timeout=IDLE_SECS + 10),
               "and it shrinks back", srv.workers())
        tap.eq(srv.request("GET", "/health").status, 200, "the server answers /health")


tap.run(main)
