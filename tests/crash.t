#!/usr/bin/python3
"""crash.t: SIGKILL under a write load, many times over; every line of the durability table holds.

Writers create, update and delete keys, teams, users, organization members,
provider keys and Venice keys and report usage through lighttpd, and record
what each answer acknowledged in a ledger kept outside the data directory.
Checkers ask /key/verify about keys with rate, parallel and budget limits
(rate windows and leases, committed without a flush) and about spent Venice
keys (limit breaches, likewise).  At a random moment the test SIGKILLs a
worker, the whole pool, or the web server and everything under it; the
service then starts again on the same data directory, and the ledger is
checked:

- synchronous writes: every acknowledged create and update is there with its
  settings and every acknowledged delete stays deleted (a write whose answer
  the crash took may or may not be there); spend is at least the
  acknowledged usage, and a usage report sent again counts nothing;
- rate windows: a key's rpm count in a minute is never more than the
  verifies acknowledged in that minute (plus those whose answer was lost);
  it may be less;
- leases: once KEYWARDEN_LEASE_SECS (2 here) has passed, every
  parallel-request slot is back and nothing is reserved, and the reserved
  cost never turned into spend (spend is at most the usage reports sent);
- Venice limit breaches: every entry of the log is well-formed.

Every other round runs with KEYWARDEN_USAGE_COMMIT=async, whose usage reports
are answered once in the log file, before the flush: a crash of keywarden
(not of the machine) must lose none of them either, so the same checks hold.

At the end db5.3_verify checks a quiesced copy.  CRASH_ROUNDS (default 6)
sets how many kills; `make soak` runs many."""
import http.client
import os
import random
import re
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
COST = 0.01             # each usage report
RESERVE = 5.0           # each verify's expected_cost: were it ever spent, it would show
LEASE_SECS = 2
PARALLEL = 4            # max_parallel_requests of the limited keys
DELETED = "deleted"
ENV = {"KEYWARDEN_LEASE_SECS": str(LEASE_SECS)}


class Thing:
    """One record the writers keep: its acknowledged value, and the values of
    writes whose answer was lost (any of them may be what the store holds)."""

    def __init__(self, kind, ident, value):
        self.kind, self.ident, self.acked = kind, ident, value
        self.maybe = set()
        self.busy = False       # one write at a time on a record, so answers come in order


# kind -> how to create, read, update and delete one; n is a fresh serial number
KINDS = {
    "key": dict(
        new=lambda n: ("POST", "/key/generate", {"key_alias": "crash-%d" % n, "max_budget": n}),
        ident=lambda j: j["key"],
        get=lambda i: "/key/info?key=" + i, value=lambda j: j["info"]["max_budget"],
        update=lambda i, n: ("POST", "/key/update", {"key": i, "max_budget": n}),
        delete=lambda i: ("POST", "/key/delete", {"keys": [i]})),
    "team": dict(
        new=lambda n: ("POST", "/team/new", {"team_alias": "crash-team-%d" % n, "max_budget": n}),
        ident=lambda j: j["team_id"],
        get=lambda i: "/team/info?team_id=" + i, value=lambda j: j["team_info"]["max_budget"],
        update=lambda i, n: ("POST", "/team/update", {"team_id": i, "max_budget": n}),
        delete=lambda i: ("POST", "/team/delete", {"team_ids": [i]})),
    "user": dict(
        new=lambda n: ("POST", "/user/new", {"user_id": "crash-user-%d" % n, "max_budget": n}),
        ident=lambda j: j["user_id"],
        get=lambda i: "/user/info?user_id=" + i, value=lambda j: j["user_info"]["max_budget"],
        update=lambda i, n: ("POST", "/user/update", {"user_id": i, "max_budget": n}),
        delete=lambda i: ("POST", "/user/delete", {"user_ids": [i]})),
    # an organization member: there while added, gone once deleted
    "member": dict(
        new=lambda n: ("POST", "/organization/member_add",
                       {"organization_id": "crash-org", "member": {"user_id": "crash-m-%d" % n}}),
        ident=lambda j: None,   # the caller knows it: the user_id it sent
        get=lambda i: "/organization/info?organization_id=crash-org",
        value=None, update=None,
        delete=lambda i: ("POST", "/organization/member_delete",
                          {"organization_id": "crash-org", "user_id": i})),
    "provider key": dict(
        new=lambda n: ("POST", "/api/providers/openai/keys",
                       {"name": "crash-pk-%d" % n, "value": "sk-crash-provider-%08d" % n,
                        "weight": n}),
        ident=lambda j: j["id"],
        get=lambda i: "/api/providers/openai/keys/" + i, value=lambda j: j["weight"],
        update=lambda i, n: ("PUT", "/api/providers/openai/keys/" + i,
                             {"name": "crash-pk-u%d" % n, "value": "sk-crash-provider-%08d" % n,
                              "weight": n}),
        delete=lambda i: ("DELETE", "/api/providers/openai/keys/" + i, None)),
    "Venice key": dict(
        new=lambda n: ("POST", "/api/v1/api_keys",
                       {"apiKeyType": "INFERENCE", "description": "crash-v-%d" % n,
                        "consumptionLimit": {"usd": n}}),
        ident=lambda j: j["data"]["id"],
        get=lambda i: "/api/v1/api_keys/" + i,
        value=lambda j: j["data"]["consumptionLimits"]["usd"],
        update=lambda i, n: ("PATCH", "/api/v1/api_keys",
                             {"id": i, "consumptionLimit": {"usd": n}}),
        delete=lambda i: ("DELETE", "/api/v1/api_keys?id=" + i, None),
        gone=400),     # Venice answers an unknown id with 400 (its api-keys reference)
}


class Ledger:
    """What the service acknowledged; lives in the test, not in the data directory."""

    def __init__(self):
        self.lock = threading.Lock()
        self.things = {kind: {} for kind in KINDS}     # kind -> ident -> Thing
        self.usage = {}         # key -> [request ids acknowledged]
        self.usage_sent = {}    # key -> usage reports sent, acknowledged or not
        self.serial = 0
        # the counted checks: limited key -> {window's reset_at: VALID verdicts}, and
        # verifies whose answer was lost (they may have counted in any window)
        self.limited = []
        self.verified = {}
        self.verify_lost = {}
        self.venice_spent = {}  # Venice key id -> its plaintext, spent: each check is a breach
        self.last_check = 0.0

    def next(self):
        with self.lock:
            self.serial += 1
            return self.serial


def outcome(r):
    """'acked', 'refused' (a 4xx: nothing happened) or 'lost' (the crash took the answer)."""
    if r is None or r.status >= 500:
        return "lost"
    return "acked" if r.status < 300 else "refused"


def call(srv, method, path, body):
    try:
        return srv.admin(method, path, body, timeout=5)
    except (OSError, http.client.HTTPException):
        return None             # killed mid-answer


def write_one(srv, ledger, rng):
    kind = rng.choice(["key", "key", "key", "team", "user", "member", "provider key",
                       "Venice key"])
    spec = KINDS[kind]
    op = rng.random()
    with ledger.lock:
        idle = [t for t in ledger.things[kind].values() if not t.busy and t.acked != DELETED]
        if spec["update"] is None:
            # members: the organization's answers list them all, so keep them few
            action = "new" if op < 0.6 and len(idle) < 20 else "delete"
        else:
            action = "new" if op < 0.35 else "update" if op < 0.85 else "delete"
        if action == "delete" and len(idle) <= 5:
            # keep some of each (Venice keys are created 20 a minute at most)
            action = "new" if spec["update"] is None else "update"
        thing = None
        if idle and action != "new":
            thing = rng.choice(idle)
            thing.busy = True
    n = ledger.next()
    if thing is None:
        method, path, body = spec["new"](n)
        r = call(srv, method, path, body)
        if outcome(r) == "acked":
            ident = spec["ident"](r.json) if kind != "member" else body["member"]["user_id"]
            with ledger.lock:
                ledger.things[kind][ident] = Thing(kind, ident, n if spec["value"] else 1)
        return
    if action == "update":
        method, path, body = spec["update"](thing.ident, n)
        value = n
    else:
        method, path, body = spec["delete"](thing.ident)
        value = DELETED
    r = call(srv, method, path, body)
    with ledger.lock:
        result = outcome(r)
        if result == "acked":
            thing.acked, thing.maybe = value, set()
        elif result == "lost":
            thing.maybe.add(value)
        elif r.status == spec.get("gone", 404) and DELETED in thing.maybe:
            thing.acked, thing.maybe = DELETED, set()   # a delete whose answer was lost had landed
        thing.busy = False


def report_usage(srv, ledger, rng):
    with ledger.lock:
        keys = [t.ident for t in ledger.things["key"].values() if t.acked != DELETED]
    if not keys:
        return
    key, rid = rng.choice(keys), "u-%d" % ledger.next()
    with ledger.lock:
        ledger.usage_sent[key] = ledger.usage_sent.get(key, 0) + 1
    r = call(srv, "POST", "/key/usage", {"key": key, "request_id": rid, "cost": COST})
    if outcome(r) == "acked":
        with ledger.lock:
            ledger.usage.setdefault(key, []).append(rid)


def writer(srv, ledger, stop, rng):
    while not stop.is_set():
        if rng.random() < 0.25:
            report_usage(srv, ledger, rng)
        else:
            write_one(srv, ledger, rng)
        if srv.proc.poll() is not None:
            time.sleep(0.02)    # the service is being killed or is starting again


def rpm_of(answer):
    for lim in (answer or {}).get("limits") or []:
        if lim.get("name") == "rpm_limit":
            return lim
    return None


def checker(srv, ledger, stop, rng):
    """Verifies against the limited keys (rate windows, leases, reservations), half of
    them settled by a usage report, and checks of the spent Venice keys (breaches)."""
    while not stop.is_set():
        if ledger.venice_spent and rng.random() < 0.2:
            key = rng.choice(sorted(ledger.venice_spent.values()))
            call(srv, "POST", "/key/verify", {"key": key, "model": "crash-model"})
            continue
        key, rid = rng.choice(ledger.limited), "v-%d" % ledger.next()
        with ledger.lock:
            ledger.last_check = time.time()
        r = call(srv, "POST", "/key/verify", {"key": key, "request_id": rid,
                                              "expected_cost": RESERVE})
        result = outcome(r)
        with ledger.lock:
            if result == "lost":
                ledger.verify_lost[key] = ledger.verify_lost.get(key, 0) + 1
            elif result == "acked" and r.json.get("code") == "VALID":
                window = rpm_of(r.json)["reset_at"]
                counts = ledger.verified.setdefault(key, {})
                counts[window] = counts.get(window, 0) + 1
        if result == "acked" and r.json.get("code") == "VALID" and rng.random() < 0.5:
            with ledger.lock:
                ledger.usage_sent[key] = ledger.usage_sent.get(key, 0) + 1
            u = call(srv, "POST", "/key/usage", {"key": key, "request_id": rid, "cost": COST})
            if outcome(u) == "acked":
                with ledger.lock:
                    ledger.usage.setdefault(key, []).append(rid)
        if srv.proc.poll() is not None:
            time.sleep(0.02)


def setup(srv, ledger):
    """The organization members join, the keys the checkers use, and spent Venice keys."""
    r = srv.admin("POST", "/organization/new", {"organization_id": "crash-org",
                                                "organization_alias": "Crash"})
    assert r.status == 200, r
    for i in range(3):
        r = srv.admin("POST", "/key/generate", {"key_alias": "crash-limited-%d" % i,
                                                "rpm_limit": 1000000, "max_budget": 1000000,
                                                "max_parallel_requests": PARALLEL})
        assert r.status == 200, r
        ledger.limited.append(r.json["key"])
    for i in range(2):
        r = srv.admin("POST", "/api/v1/api_keys", {"apiKeyType": "INFERENCE",
                                                   "description": "crash-spent-%d" % i,
                                                   "consumptionLimit": {"usd": 100}})
        assert r.status == 200, r
        v = r.json["data"]
        r = srv.admin("POST", "/key/usage", {"key": v["apiKey"], "cost": 0.05})
        assert r.status == 200, r
        # an rpm_limit of 0: every check is a rate-limit breach (RPM) in the log
        r = srv.admin("POST", "/key/update", {"key": v["apiKey"], "rpm_limit": 0})
        assert r.status == 200, r
        ledger.venice_spent[v["id"]] = v["apiKey"]


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


def read_value(srv, spec, thing):
    r = srv.admin("GET", spec["get"](thing.ident))
    if r.status == spec.get("gone", 404):
        return DELETED
    if r.status != 200 or r.json is None:
        return ("status", r.status)
    if spec["value"] is None:               # a member: there or not
        return 1 if thing.ident in [m.get("user_id") for m in r.json.get("members", [])] \
            else DELETED
    return spec["value"](r.json)


def check_things(srv, ledger, name):
    for kind, spec in KINDS.items():
        with ledger.lock:
            things = list(ledger.things[kind].values())
        bad, kept, gone = [], 0, 0
        for t in things:
            got = read_value(srv, spec, t)
            if got != t.acked and got not in t.maybe:
                bad.append((str(t.ident)[-8:], got, t.acked, sorted(map(str, t.maybe))))
            kept += t.acked != DELETED
            gone += t.acked == DELETED
        tap.ok(things and not bad, "%s: %ss: all %d acknowledged are there with their settings, "
               "all %d acknowledged deletes stay deleted" % (name, kind, kept, gone), bad[:5])


def check_spend(srv, ledger, name):
    with ledger.lock:
        keys = [t.ident for t in ledger.things["key"].values() if t.acked != DELETED]
        maybe = {t.ident: set(t.maybe) for t in ledger.things["key"].values()}
        keys += ledger.limited
        usage = {k: list(v) for k, v in ledger.usage.items()}
        sent = dict(ledger.usage_sent)
    low, high = [], []
    for key in keys:
        r = srv.admin("GET", "/key/info?key=" + key)
        if r.status == 404 and DELETED in maybe.get(key, ()):
            continue                        # a delete whose answer was lost had landed
        spend = ((r.json or {}).get("info") or {}).get("spend", 0)
        if spend + 1e-9 < len(usage.get(key, [])) * COST:
            low.append((key[-6:], spend, len(usage.get(key, [])) * COST))
        if spend > sent.get(key, 0) * COST + 1e-9:
            high.append((key[-6:], spend, sent.get(key, 0) * COST))
    tap.ok(not low, "%s: spend is at least the acknowledged usage on every key" % name, low[:5])
    tap.ok(not high, "%s: spend is at most the usage reported: no reserved cost became spend"
           % name, high[:5])
    # one acknowledged report of each key again: counted already, so nothing changes
    live = {k for k in keys if DELETED not in maybe.get(k, ())}
    again = [(k, rids[0]) for k, rids in usage.items() if rids and k in live][:10]
    dup = [srv.admin("POST", "/key/usage", {"key": k, "request_id": rid, "cost": COST}).json
           for k, rid in again]
    tap.ok(all(d and d.get("duplicate") is True for d in dup),
           "%s: acknowledged usage sent again is a duplicate" % name, dup[:3])


def check_counters(srv, ledger, name):
    """Rate windows and leases, committed without a flush: counts never above what was
    acknowledged, slots back after the lease time, nothing reserved."""
    over, used, acked = [], 0, 0
    for key in ledger.limited:
        rpm = rpm_of(srv.admin("POST", "/key/verify", {"key": key, "dry_run": True}).json)
        with ledger.lock:
            n = ledger.verified.get(key, {}).get(rpm and rpm["reset_at"], 0)
            bound = n + ledger.verify_lost.get(key, 0)
        if rpm is None or rpm["used"] > bound:
            over.append((key[-6:], rpm, bound))
        used, acked = used + (rpm or {}).get("used", 0), acked + n
    tap.ok(not over, "%s: no rpm window counts more than the verifies acknowledged in it "
           "(%d counted, %d acknowledged)" % (name, used, acked), over)

    wait = ledger.last_check + LEASE_SECS + 1.2 - time.time()
    if wait > 0:
        time.sleep(wait)                    # every lease taken before the kill has lapsed
    held, refused = [], []
    for key in ledger.limited:
        d = srv.admin("POST", "/key/verify", {"key": key, "dry_run": True}).json or {}
        par = [x for x in d.get("limits", []) if x.get("name") == "max_parallel_requests"]
        if not par or par[0].get("used") != 0 or d.get("reserved") != 0:
            held.append((key[-6:], par, d.get("reserved")))
        # every slot can be taken again, then each is settled
        for i in range(PARALLEL):
            rid = "back-%d" % ledger.next()
            r = srv.admin("POST", "/key/verify", {"key": key, "request_id": rid})
            if not r.json or r.json.get("code") != "VALID":
                refused.append((key[-6:], i, r.json and r.json.get("code")))
                continue
            with ledger.lock:
                counts = ledger.verified.setdefault(key, {})
                window = rpm_of(r.json)["reset_at"]
                counts[window] = counts.get(window, 0) + 1
                ledger.usage_sent[key] = ledger.usage_sent.get(key, 0) + 1
            u = srv.admin("POST", "/key/usage", {"key": key, "request_id": rid, "cost": COST})
            if u.status == 200:
                with ledger.lock:
                    ledger.usage.setdefault(key, []).append(rid)
    tap.ok(not held, "%s: after %d s no lease is held and nothing is reserved" % (name, LEASE_SECS),
           held)
    tap.ok(not refused, "%s: all %d parallel slots of each limited key come back"
           % (name, PARALLEL), refused)


TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


def check_breaches(srv, ledger, name):
    r = srv.admin("GET", "/api/v1/api_keys/rate_limits/log")
    entries = (r.json or {}).get("data")
    bad = [e for e in entries or [] if not (
        isinstance(e, dict) and e.get("apiKeyId") in ledger.venice_spent and
        e.get("modelId") == "crash-model" and e.get("rateLimitType") == "RPM" and
        e.get("rateLimitTier") == "paid" and
        isinstance(e.get("timestamp"), str) and TIMESTAMP.match(e["timestamp"]))]
    tap.ok(r.status == 200 and isinstance(entries, list) and len(entries) <= 50 and not bad,
           "%s: the Venice limit breach log reads, %d entries, each well-formed"
           % (name, len(entries or [])), bad[:5] or r)


def check(srv, ledger, name):
    check_things(srv, ledger, name)
    check_spend(srv, ledger, name)
    check_breaches(srv, ledger, name)
    check_counters(srv, ledger, name)


def main():
    work = tempfile.mkdtemp(prefix="kw-crash-")
    data_dir = os.path.join(work, "data")
    ledger = Ledger()
    rng = random.Random(int(os.environ.get("CRASH_SEED", str(os.getpid()))))
    tap.diag("CRASH_SEED=%d" % rng.getrandbits(16))
    hows = ["worker", "pool", "server"]
    srv = Server(workers=3, data_dir=data_dir, env=ENV)
    srv.start()
    setup(srv, ledger)
    srv.stop()
    shutil.rmtree(srv.tmp, ignore_errors=True)
    for round_ in range(ROUNDS):
        how = hows[round_ % len(hows)]
        # with three ways to crash, each meets both usage commits in six rounds
        usage_commit = "async" if round_ % 2 else "durable"
        srv = Server(workers=3, data_dir=data_dir,
                     env=dict(ENV, KEYWARDEN_USAGE_COMMIT=usage_commit))
        srv.start()
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(srv, ledger, stop,
                                                         random.Random(rng.random())))
                   for _ in range(4)]
        threads += [threading.Thread(target=checker, args=(srv, ledger, stop,
                                                           random.Random(rng.random())))
                    for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.3 + rng.random())
        restarted = crash(srv, how)
        if not restarted:
            time.sleep(0.5)                 # writes go on while the pool replaces the worker
        stop.set()
        for t in threads:
            t.join()
        if not restarted:
            kill_everything(srv)
        shutil.rmtree(srv.tmp, ignore_errors=True)
        srv = Server(workers=3, data_dir=data_dir, env=ENV)
        srv.start()
        check(srv, ledger, "round %d (usage commit %s), after killing the %s"
              % (round_ + 1, usage_commit, how))
        srv.stop()
        # quiesced: the pool manager checkpoints and removes old logs as it leaves
        wait_for(lambda: not srv.processes(), timeout=30)
        shutil.rmtree(srv.tmp, ignore_errors=True)

    # a quiesced copy of the data directory verifies: the database files, checked in an
    # environment of db5.3_verify's own (the copied region files are sized for keywarden's
    # workers, not for a verifier reading every page)
    copy = os.path.join(work, "copy")
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns("__db.*"))
    bad = []
    for db in sorted(f for f in os.listdir(copy) if f.endswith(".db")):
        v = subprocess.run(["db5.3_verify", "-q", "-h", copy, db], capture_output=True, text=True)
        if v.returncode != 0:
            bad.append((db, v.stderr[:200]))
    tap.ok(not bad, "db5.3_verify passes on a quiesced copy after %d crashes" % ROUNDS, bad)
    shutil.rmtree(work, ignore_errors=True)


tap.run(main)
