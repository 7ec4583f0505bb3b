#!/usr/bin/python3
"""crash.t: SIGKILL under a write load, many times over; every acknowledged write survives.

Writers generate, update and delete keys and report usage through lighttpd,
and record each 2xx in a ledger kept outside the data directory.  At a
random moment the test SIGKILLs a worker, the whole pool, or the web server
and everything under it; the service then starts again on the same data
directory, and the ledger is checked: every acknowledged key exists with its
acknowledged settings, every acknowledged delete stays deleted, spend is at
least the acknowledged usage and a usage report sent again counts nothing.
At the end db5.3_verify checks a quiesced copy.  CRASH_ROUNDS (default 6)
sets how many kills; `make soak` runs many."""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import Server, wait_for  # noqa: E402

ROUNDS = int(os.environ.get("CRASH_ROUNDS", "6"))
COST = 0.01


class Ledger:
    """What the service acknowledged; lives in the test, not in the data directory."""

    def __init__(self):
        self.lock = threading.Lock()
        self.keys = {}          # key -> {"budgets": [acked..., in flight...], "acked": value}
        self.deleted = set()
        self.usage = {}         # key -> [request ids acknowledged]
        self.serial = 0

    def next(self):
        with self.lock:
            self.serial += 1
            return self.serial


def writer(srv, ledger, stop, rng):
    while not stop.is_set():
        try:
            with ledger.lock:
                live = [k for k in ledger.keys if k not in ledger.deleted]
            op = rng.random()
            if op < 0.35 or not live:
                n = ledger.next()
                r = srv.admin("POST", "/key/generate", {"key_alias": "crash-%d" % n,
                                                        "max_budget": n}, timeout=5)
                if r.status == 200:
                    with ledger.lock:
                        ledger.keys[r.json["key"]] = {"acked": n, "tried": {n}}
            elif op < 0.65:
                key, n = rng.choice(live), ledger.next()
                with ledger.lock:
                    ledger.keys[key]["tried"].add(n)      # may land though never acknowledged
                r = srv.admin("POST", "/key/update", {"key": key, "max_budget": n}, timeout=5)
                if r.status == 200:
                    with ledger.lock:
                        ledger.keys[key]["acked"] = n
                        ledger.keys[key]["since"] = n
            elif op < 0.75:
                key = rng.choice(live)
                with ledger.lock:
                    ledger.keys[key]["deleting"] = True
                r = srv.admin("POST", "/key/delete", {"keys": [key]}, timeout=5)
                if r.status == 200:
                    with ledger.lock:
                        ledger.deleted.add(key)
            else:
                key, rid = rng.choice(live), "u-%d" % ledger.next()
                r = srv.admin("POST", "/key/usage", {"key": key, "request_id": rid,
                                                     "cost": COST}, timeout=5)
                if r.status == 200:
                    with ledger.lock:
                        ledger.usage.setdefault(key, []).append(rid)
        except OSError:
            time.sleep(0.02)    # the service is being killed or is starting again


def kill_everything(srv):
    """SIGKILLs lighttpd and every keywarden process of this data directory."""
    for pid in srv.processes():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if srv.proc is not None and srv.proc.poll() is None:
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
    wait_for(lambda: not srv.processes(), timeout=10)
    srv.log.close()


def crash(srv, how):
    if how == "worker":
        workers = srv.workers()
        if workers:
            os.kill(random.choice(workers), signal.SIGKILL)
        return False                        # the pool replaces it; the service goes on
    if how == "pool":
        manager = srv.manager()
        for pid in srv.workers() + ([manager] if manager else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    kill_everything(srv)
    return True


def check(srv, ledger, name):
    bad_keys, bad_deleted, bad_spend = [], [], []
    with ledger.lock:
        keys = dict(ledger.keys)
        deleted = set(ledger.deleted)
        usage = {k: list(v) for k, v in ledger.usage.items()}
    for key, rec in keys.items():
        r = srv.admin("GET", "/key/info?key=" + key)
        if key in deleted:
            if r.status != 404:
                bad_deleted.append((key[-6:], r.status))
            continue
        if rec.get("deleting") and r.status == 404:
            continue                        # a delete in flight may have landed
        info = (r.json or {}).get("info", {})
        budget = info.get("max_budget")
        # the acknowledged value, or one written later whose answer was lost in the crash
        if r.status != 200 or not (budget == rec["acked"] or
                                   (budget in rec["tried"] and budget > rec["acked"])):
            bad_keys.append((key[-6:], r.status, budget, rec["acked"]))
            continue
        paid = len(usage.get(key, [])) * COST
        if info.get("spend", 0) + 1e-9 < paid:
            bad_spend.append((key[-6:], info.get("spend"), paid))
    tap.ok(keys and not bad_keys, "%s: all %d acknowledged keys exist with their settings"
           % (name, len(keys) - len(deleted)), bad_keys[:5])
    tap.ok(not bad_deleted, "%s: all %d acknowledged deletes stay deleted" % (name, len(deleted)),
           bad_deleted[:5])
    tap.ok(not bad_spend, "%s: spend is at least the acknowledged usage on every key" % name,
           bad_spend[:5])
    # one acknowledged report of each key again: counted already, so nothing changes
    again = [(k, rids[0]) for k, rids in usage.items() if rids and k not in deleted][:10]
    dup = [srv.admin("POST", "/key/usage", {"key": k, "request_id": rid, "cost": COST}).json
           for k, rid in again]
    tap.ok(all(d and d.get("duplicate") is True for d in dup),
           "%s: acknowledged usage sent again is a duplicate" % name, dup[:3])


def main():
    work = tempfile.mkdtemp(prefix="kw-crash-")
    data_dir = os.path.join(work, "data")
    ledger = Ledger()
    rng = random.Random(int(os.environ.get("CRASH_SEED", str(os.getpid()))))
    tap.diag("CRASH_SEED=%d" % rng.getrandbits(16))
    hows = ["worker", "pool", "server"]
    for round_ in range(ROUNDS):
        how = hows[round_ % len(hows)]
        srv = Server(workers=3, data_dir=data_dir)
        srv.start()
        stop = threading.Event()
        writers = [threading.Thread(target=writer, args=(srv, ledger, stop,
                                                         random.Random(rng.random())))
                   for _ in range(4)]
        for t in writers:
            t.start()
        time.sleep(0.3 + rng.random())
        restarted = crash(srv, how)
        if not restarted:
            time.sleep(0.5)                 # writes go on while the pool replaces the worker
        stop.set()
        for t in writers:
            t.join()
        if not restarted:
            kill_everything(srv)
        shutil.rmtree(srv.tmp, ignore_errors=True)
        srv = Server(workers=3, data_dir=data_dir)
        srv.start()
        check(srv, ledger, "round %d, after killing the %s" % (round_ + 1, how))
        srv.stop()
        # quiesced: the pool manager checkpoints and removes old logs as it leaves
        wait_for(lambda: not srv.processes(), timeout=30)
        shutil.rmtree(srv.tmp, ignore_errors=True)

    # a quiesced copy of the data directory verifies
    copy = os.path.join(work, "copy")
    shutil.copytree(data_dir, copy)
    bad = []
    for db in sorted(f for f in os.listdir(copy) if f.endswith(".db")):
        v = subprocess.run(["db5.3_verify", "-q", "-h", copy, db], capture_output=True, text=True)
        if v.returncode != 0:
            bad.append((db, v.stderr[:200]))
    tap.ok(not bad, "db5.3_verify passes on a quiesced copy after %d crashes" % ROUNDS, bad)
    shutil.rmtree(work, ignore_errors=True)


tap.run(main)
