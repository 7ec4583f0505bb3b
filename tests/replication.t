#!/usr/bin/python3
"""replication.t: three keywarden sites in one replicated group (KEYWARDEN_GROUP_SITES), each
the real lighttpd with keywarden on its own data directory, on loopback (tests/lib/group.py);
the master is SIGKILLed under a write load, a new one is elected, and nothing acknowledged is
lost.

Site 0 is made with `keywarden init`; sites 1 and 2 start from its backup, restored, and join
it.  The test proves, through the sites' web servers:

- one master: /health and /group/status agree on it at every site, /group/status lists the
  three sites (an admin's only: 401 without a key, 403 for a key that is not an admin's);
- keys made on the master verify on the replicas once they caught up, and a write sent to a
  replica is answered 200 by it (it forwarded it) and is on the master;
- rpm_limit N admits exactly N verifies across the sites, sent in turn and 64 at once (a
  verify that counts is the master's to make);
- failover: writers make keys and report usage (each report with its own request_id)
  against every site in turn, recording in a ledger kept outside the sites what each 2xx
  acknowledged, while verifiers ask both replicas about keys without counters.  After 2 s
  the master is SIGKILLed; a new one must be elected within 10 s; the writers go on against
  the survivors (503 with Retry-After: 1 while there is no master, 500 never).  Then every
  acknowledged key is on the new master, every key's spend is at least its acknowledged
  usage (and at most what was reported), a report sent again counts nothing, and no verify
  on the survivors was refused;
- the old master starts again on its data directory as a replica of the new one and catches
  up: keys made after its death verify on it;
- `keywarden group status` (--url, -d, --json) lists every site and names the master;
- a fourth site made from a hot backup of the master joins (it is in the master's
  /group/status, keys verify on it), and `keywarden group remove` takes it out;
- with nginx installed, scripts/recipes/nginx-group.conf.in in front of the three sites: a
  key made through it verifies through it, and no verify through it fails during the
  failover;
- no secret (a generated sk- key, the master key) is in any site's log, and no sanitizer
  reported anything (tests/lib/group.py checks each site's log as kwserver does).

REPL_ROUNDS (default 1) repeats the kill, election and rejoin, each round killing whichever
site is master then, with the ledger kept across rounds; `make soak` runs many."""
import collections
import http.client
import json
import os
import random
import re
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from group import Group, keywarden  # noqa: E402
from kwserver import Server, read_text, wait_for  # noqa: E402

ROUNDS = int(os.environ.get("REPL_ROUNDS", "1"))
WORKERS = 2             # each site's KEYWARDEN_WORKERS
COST = 0.01             # each usage report
RPM = 5                 # the rate-limited keys' rpm_limit
ELECTION_SECS = 10      # the longest an election may take
BEFORE_KILL = 2.0       # seconds of load before the master is killed
AFTER_ELECTION = 2.0    # and after the new master is elected
WRITERS = 3
LSN = re.compile(r"^\d+/\d+$")

SECRETS = set()         # every plaintext key the test saw (the master key too)
FIVE_HUNDREDS = []      # every 500 answer, from anywhere
_lock = threading.Lock()


def call(where, method, path, body=None, key=None, timeout=10):
    """One request to a site (or the nginx front); the master key unless key is given ("" for
    none).  Returns the Response, or None when the connection failed."""
    cred = where.master_key if key is None else key
    headers = {"Authorization": "Bearer " + cred} if cred else {}
    try:
        r = where.request(method, path, body=body, headers=headers, timeout=timeout)
    except (OSError, http.client.HTTPException):
        return None
    with _lock:
        if r.status == 500:
            FIVE_HUNDREDS.append((getattr(where, "index", "nginx"), method, path, r.body[:300]))
        if isinstance(r.json, dict) and str(r.json.get("key", "")).startswith("sk-"):
            SECRETS.add(r.json["key"])
    return r


def status(r):
    return r.status if r is not None else None


def generate(where, **fields):
    r = call(where, "POST", "/key/generate", fields)
    if r is None or r.status != 200 or not str((r.json or {}).get("key", "")).startswith("sk-"):
        raise RuntimeError("POST /key/generate %r: %r" % (fields, r))
    return r.json["key"]


def verdict(where, key, timeout=10):
    """The code of a verify of key (VALID, RATE_LIMITED, ...), the status when it is not 200
    with a code, or None when the connection failed."""
    r = call(where, "POST", "/key/verify", {"key": key}, timeout=timeout)
    if r is None:
        return None
    if r.status == 200 and isinstance(r.json, dict) and r.json.get("code"):
        return r.json["code"]
    return r.status


def refused_by_rpm(where, key):
    """'VALID', 'RATE_LIMITED' (200 with that code, or a 429) or what else came."""
    r = call(where, "POST", "/key/verify", {"key": key}, timeout=30)
    if r is None:
        return None
    code = (r.json or {}).get("code") if isinstance(r.json, dict) else None
    if r.status == 429 or (r.status == 200 and code == "RATE_LIMITED"):
        return "RATE_LIMITED"
    return code if r.status == 200 else r.status


def verifies_everywhere(g, keys, sites=None, timeout=10):
    """Waits until every key verifies VALID on every site named (every live one by default);
    returns [(site, key tail, verdict)] of those that do not at the timeout."""
    sites = g.live() if sites is None else sites
    pending = [(i, k) for i in sites for k in keys]

    def settle():
        pending[:] = [(i, k) for i, k in pending if verdict(g.site(i), k) != "VALID"]
        return not pending
    wait_for(settle, timeout=timeout, interval=0.2)
    return [(i, k[-6:], verdict(g.site(i), k)) for i, k in pending[:5]]


def window_guard(need):
    """Waits for the next UTC minute when fewer than need seconds are left in this one."""
    left = 60 - (time.time() % 60)
    if left < need:
        tap.diag("waiting %.1f s for a fresh one-minute window" % (left + 0.1))
        time.sleep(left + 0.1)


def status_of(site, key=None):
    r = call(site, "GET", "/group/status", key=key)
    return r, (r.json if r is not None and isinstance(r.json, dict) else {})


# --- the group as it starts ------------------------------------------------------------------

def check_start(g):
    roles = [s.role() for s in g.sites]
    tap.eq(roles, ["master", "replica", "replica"], "three sites: site 0 master, 1 and 2 replicas")
    for name in ("master.key", "data.key", "signing.key"):
        contents = []
        for s in g.sites:
            with open(os.path.join(s.data_dir, name), "rb") as f:
                contents.append(f.read())
        tap.ok(contents[0] and all(c == contents[0] for c in contents),
               "every site has site 0's %s (restored from its backup)" % name)
    SECRETS.add(g.master_key)
    master = g.site(0).address
    addresses = sorted(s.address for s in g.sites)
    for s in g.sites:
        health = s.health() or {}
        grp = health.get("group") or {}
        r, st = status_of(s)
        tap.ok(grp.get("self") == s.address and grp.get("master") == master and
               isinstance(grp.get("lsn"), str) and LSN.match(grp["lsn"]),
               "site %d: /health names itself, site 0 as master, and an LSN" % s.index, health)
        tap.ok(r is not None and r.status == 200 and st.get("self") == s.address and
               st.get("role") == grp.get("role") and st.get("master") == master and
               isinstance(st.get("lsn"), str) and LSN.match(st["lsn"]),
               "site %d: /group/status agrees with its /health" % s.index, r)
        members = st.get("sites") or []
        tap.eq(sorted(m.get("address") for m in members), addresses,
               "site %d: /group/status lists the three sites" % s.index)
        by = {m.get("address"): m for m in members}
        tap.ok(all(by.get(x.address, {}).get("master") is (x.address == master) and
                   by.get(x.address, {}).get("self") is (x is s) and
                   by.get(x.address, {}).get("url") == x.url and
                   isinstance(by.get(x.address, {}).get("connected"), bool) for x in g.sites),
               "site %d: each member's url, and master and self marked on the right ones"
               % s.index, members)

    def connected():
        st = status_of(g.site(0))[1]
        return all(m.get("connected") is True for m in st.get("sites") or []
                   if m.get("address") != master) and st.get("sites")
    tap.ok(wait_for(connected, timeout=10), "the master is connected to both replicas",
           status_of(g.site(0))[1])

    plain = generate(g.site(0), key_alias="not-an-admin")
    # acknowledged by a quorum, so perhaps not on both replicas yet: a key a site does not
    # know is a 401 there, not the 403 asked about
    bad = verifies_everywhere(g, [plain])
    tap.ok(not bad, "a key that is not an admin's, on every site", bad)
    for s in g.sites:
        r = call(s, "GET", "/group/status", key="")
        tap.eq(r and r.status, 401, "site %d: /group/status without a key: 401" % s.index)
        r = call(s, "GET", "/group/status", key=plain)
        tap.eq(r and r.status, 403, "site %d: /group/status with a key that is not an admin's: "
               "403" % s.index)
    r = call(g.site(1), "POST", "/group/remove", {"address": "not an address"})
    tap.eq(r and r.status, 400, "POST /group/remove of a malformed address: 400")
    r = call(g.site(0), "POST", "/group/remove", {"address": "127.0.0.1:9"})
    tap.eq(r and r.status, 404, "POST /group/remove of a site not in the group: 404")
    r = call(g.site(1), "POST", "/group/remove", {"address": g.site(2).address}, key=plain)
    tap.eq(r and r.status, 403, "POST /group/remove with a key that is not an admin's: 403")


def check_replicated(g):
    keys = [generate(g.site(0), key_alias="made-on-master-%d" % i) for i in range(5)]
    bad = verifies_everywhere(g, keys, [1, 2])
    tap.ok(not bad, "5 keys made on the master verify on both replicas", bad)

    def same_lsn():
        lsns = [(s.group() or {}).get("lsn") for s in g.sites]
        return lsns[0] and all(x == lsns[0] for x in lsns)
    tap.ok(wait_for(same_lsn, timeout=10), "the replicas' LSN comes to the master's",
           [(s.group() or {}).get("lsn") for s in g.sites])
    for i in (1, 2):
        r = call(g.site(i), "POST", "/key/generate", {"key_alias": "sent-to-replica-%d" % i})
        ok = r is not None and r.status == 200 and str((r.json or {}).get("key", "")).startswith(
            "sk-")
        tap.ok(ok, "POST /key/generate sent to replica %d: 200 (it forwarded it)" % i, r)
        if not ok:
            continue
        key = r.json["key"]
        info = call(g.site(0), "GET", "/key/info?key=" + key)
        tap.ok(info is not None and info.status == 200 and
               (info.json or {}).get("info", {}).get("key_alias") == "sent-to-replica-%d" % i,
               "the key made through replica %d is on the master at once" % i, info)
        bad = verifies_everywhere(g, [key])
        tap.ok(not bad, "the key made through replica %d verifies on every site" % i, bad)


def check_rpm(g):
    """rpm_limit N: the master counts, whichever site is asked."""
    window_guard(12)
    key = generate(g.site(0), key_alias="rpm-in-turn", rpm_limit=RPM)
    tap.ok(wait_for(lambda: all(status(call(s, "GET", "/key/info?key=" + key)) == 200
                                for s in g.sites), timeout=10),
           "the rpm_limit %d key is on every site" % RPM)
    got = [refused_by_rpm(g.site(i % 3), key) for i in range(2 * RPM)]
    tap.eq(collections.Counter(got), collections.Counter({"VALID": RPM, "RATE_LIMITED": RPM}),
           "rpm_limit %d, %d verifies sent to the three sites in turn: exactly %d VALID, the "
           "others refused by the limit" % (RPM, 2 * RPM, RPM))
    tap.ok(got[:RPM] == ["VALID"] * RPM, "the first %d are the ones admitted" % RPM, got)

    key = generate(g.site(0), key_alias="rpm-at-once", rpm_limit=RPM)
    wait_for(lambda: all(status(call(s, "GET", "/key/info?key=" + key)) == 200
                         for s in g.sites), timeout=10)
    n = 64
    barrier = threading.Barrier(n)
    got = [None] * n

    def one(i):
        barrier.wait()
        got[i] = refused_by_rpm(g.site(i % 3), key)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tap.eq(collections.Counter(got), collections.Counter({"VALID": RPM, "RATE_LIMITED": n - RPM}),
           "rpm_limit %d, %d verifies at once across the three sites: exactly %d VALID, the "
           "other %d refused by the limit" % (RPM, n, RPM, n - RPM))


# --- nginx in front ---------------------------------------------------------------------------

class Front:
    """The nginx load balancer, asked as a site is (kwserver.Server's request and admin)."""
    prism_port = None
    request = Server.request
    admin = Server.admin

    def __init__(self, port, master_key):
        self.port, self.master_key = port, master_key


def start_nginx(g):
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        tap.diag("nginx is not installed: no load balancer in front of the sites")
        return None, None
    from smoke import nginx
    sites = dict(zip(("SITE_A", "SITE_B", "SITE_C"),
                     ("127.0.0.1:%d" % s.port for s in g.sites)))
    ng = nginx(g.tmp, "nginx-group.conf", "nginx-lb", **sites)
    ng.start()
    front = Front(ng.port, g.master_key)
    r = call(front, "GET", "/health", key="")
    tap.ok(r is not None and r.status == 200 and (r.json or {}).get("group"),
           "nginx-group.conf: /health through nginx answers a site's", r)
    key = generate(front, key_alias="through-nginx")
    tap.ok(wait_for(lambda: all(verdict(front, key) == "VALID" for _ in range(6)), timeout=10),
           "a key made through nginx verifies through nginx (every site, in turn)")
    return ng, front


# --- the failover -----------------------------------------------------------------------------

class Ledger:
    """What the sites acknowledged; lives in the test, across rounds."""

    def __init__(self):
        self.lock = threading.Lock()
        self.serial = 0
        self.keys = {}          # key -> (round, monotonic time of the answer)
        self.usage_keys = []    # the keys usage is reported on
        self.plain_keys = []    # keys without counters, for the verifiers
        self.usage = {}         # key -> [acknowledged request ids]
        self.sent = {}          # key -> usage reports sent, acknowledged or not
        self.unreadable = []    # 2xx answers to key/generate without a key

    def next(self):
        with self.lock:
            self.serial += 1
            return self.serial


class Round:
    """One failover round's state and counts, shared by its threads."""

    def __init__(self, n, targets):
        self.n = n
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.targets = list(targets)
        self.elected_at = None
        self.statuses = collections.Counter()       # (site, status) of the writes
        self.lost = 0                               # writes without an answer
        self.bad_503 = []       # 503s without Retry-After: 1 and an error envelope
        self.odd = []           # other answers to writes: not 2xx, not 503
        self.acked_after = collections.Counter()    # site -> writes acknowledged after the election
        self.verified = collections.Counter()       # site -> verifies
        self.refusals = []      # (site, verdict) of every verify not VALID
        self.front_verified = 0
        self.front_failed = []
        self.front_writes = collections.Counter()


def record_write(rnd, i, r, sent_at):
    with rnd.lock:
        if r is None:
            rnd.lost += 1
            return
        rnd.statuses[(i, r.status)] += 1
        if r.status == 503:
            e = (r.json or {}).get("error") if isinstance(r.json, dict) else None
            if r.headers.get("retry-after") != "1" or not isinstance(e, dict) or \
                    e.get("code") != "503":
                rnd.bad_503.append((i, r.headers.get("retry-after"), r.body[:200]))
        elif not 200 <= r.status < 300:
            rnd.odd.append((i, r.status, r.body[:200]))
        elif rnd.elected_at is not None and sent_at > rnd.elected_at:
            rnd.acked_after[i] += 1


def acked_key(ledger, rnd, r):
    """Records the key a 2xx answer to POST /key/generate acknowledged."""
    if r is not None and 200 <= r.status < 300:
        key = (r.json or {}).get("key") if isinstance(r.json, dict) else None
        with ledger.lock:
            if key:
                ledger.keys[key] = (rnd.n, time.monotonic())
            else:
                ledger.unreadable.append(r.body[:200])


def writer(g, ledger, rnd, rng):
    n = rng.randrange(3)
    while not rnd.stop.is_set():
        targets = rnd.targets
        i = targets[n % len(targets)]
        n += 1
        sent_at = time.monotonic()
        if rng.random() < 0.5:
            r = call(g.site(i), "POST", "/key/generate",
                     {"key_alias": "repl-%d-%d" % (rnd.n, ledger.next())})
            acked_key(ledger, rnd, r)
        else:
            key, rid = rng.choice(ledger.usage_keys), "repl-u-%d" % ledger.next()
            with ledger.lock:
                ledger.sent[key] = ledger.sent.get(key, 0) + 1
            r = call(g.site(i), "POST", "/key/usage", {"key": key, "request_id": rid,
                                                       "cost": COST})
            if r is not None and 200 <= r.status < 300:
                with ledger.lock:
                    ledger.usage.setdefault(key, []).append(rid)
        record_write(rnd, i, r, sent_at)


def verifier(g, ledger, rnd, i, rng):
    """Verifies of keys without counters on site i (a survivor), answered by it alone."""
    while not rnd.stop.is_set():
        v = verdict(g.site(i), rng.choice(ledger.plain_keys))
        with rnd.lock:
            rnd.verified[i] += 1
            if v != "VALID":
                rnd.refusals.append((i, v))
        time.sleep(0.002)


def front_load(front, ledger, rnd, rng):
    """Through nginx: verifies (each must succeed) and, now and then, a key made."""
    while not rnd.stop.is_set():
        v = verdict(front, rng.choice(ledger.plain_keys), timeout=20)
        with rnd.lock:
            rnd.front_verified += 1
            if v != "VALID":
                rnd.front_failed.append(v)
        if rng.random() < 0.1:
            sent_at = time.monotonic()
            r = call(front, "POST", "/key/generate",
                     {"key_alias": "repl-nginx-%d-%d" % (rnd.n, ledger.next())}, timeout=20)
            with rnd.lock:
                after = rnd.elected_at is not None and sent_at > rnd.elected_at
                rnd.front_writes[(r.status if r is not None else None, after)] += 1
            acked_key(ledger, rnd, r)
        time.sleep(0.005)


def seed(g, ledger):
    m = g.master()
    ledger.usage_keys = [generate(g.site(m), key_alias="usage-%d" % i) for i in range(6)]
    ledger.plain_keys = [generate(g.site(m), key_alias="plain-%d" % i) for i in range(4)]
    bad = verifies_everywhere(g, ledger.usage_keys + ledger.plain_keys)
    tap.ok(not bad, "the keys of the failover load are on every site", bad)


def failover(g, ledger, front, n, rng):
    old = g.master()
    name = "round %d" % n
    if old is None:
        raise RuntimeError("%s: no master to kill: %r" % (name, [s.group() for s in g.sites]))
    survivors = [i for i in g.live() if i != old]
    rnd = Round(n, g.live())
    threads = [threading.Thread(target=writer, args=(g, ledger, rnd, random.Random(rng.random())))
               for _ in range(WRITERS)]
    threads += [threading.Thread(target=verifier, args=(g, ledger, rnd, i,
                                                        random.Random(rng.random())))
                for i in survivors]
    if front is not None:
        threads.append(threading.Thread(target=front_load, args=(front, ledger, rnd,
                                                                 random.Random(rng.random()))))
    for t in threads:
        t.start()
    time.sleep(BEFORE_KILL)
    killed_at = time.monotonic()
    g.kill(old)
    rnd.targets = survivors
    new, secs = g.wait_master(ELECTION_SECS, exclude=(old,), agreed=False)
    # the time from the kill, the kill's own included
    secs = time.monotonic() - killed_at
    rnd.elected_at = time.monotonic()
    agreed, _ = g.wait_master(ELECTION_SECS, exclude=(old,))
    agreed_secs = time.monotonic() - killed_at
    tap.diag("%s: killed site %d (master); site %s master after %.2f s, both survivors agree "
             "after %.2f s" % (name, old, new, secs, agreed_secs))
    tap.ok(new is not None and secs <= ELECTION_SECS,
           "%s: a new master elected %.2f s after site %d was killed (at most %d s)"
           % (name, secs, old, ELECTION_SECS))
    tap.ok(agreed == new and new is not None, "%s: both survivors name site %s their master"
           % (name, new), [s.group() for s in g.sites if s.alive()])
    time.sleep(AFTER_ELECTION)
    rnd.stop.set()
    for t in threads:
        t.join()
    if new is None:
        raise RuntimeError("%s: no master; the rest cannot be checked" % name)

    tap.diag("%s: writes answered %s, %d without an answer; %d verifies on the survivors"
             % (name, dict(sorted(rnd.statuses.items())), rnd.lost, sum(rnd.verified.values())))
    tap.ok(not any(st == 500 for _, st in rnd.statuses), "%s: no write was answered 500" % name,
           [x for x in rnd.statuses.items() if x[0][1] == 500])
    tap.ok(not rnd.bad_503, "%s: each 503 has Retry-After: 1 and the error envelope" % name,
           rnd.bad_503[:5])
    tap.ok(not rnd.odd, "%s: every write answered was 2xx or 503" % name, rnd.odd[:5])
    tap.ok(all(rnd.acked_after[i] > 0 for i in survivors),
           "%s: writes sent to each survivor were acknowledged after the election (%s)"
           % (name, ", ".join("site %d: %d" % (i, rnd.acked_after[i]) for i in survivors)))
    tap.eq(len(rnd.refusals), 0, "%s: verifies of keys without counters on the survivors "
           "refused during the failover (of %d)" % (name, sum(rnd.verified.values())))
    if rnd.refusals:
        tap.diag("refusals: %r" % collections.Counter(rnd.refusals).most_common(5))
    if front is not None:
        tap.eq(len(rnd.front_failed), 0, "%s: verifies through nginx that failed during the "
               "failover (of %d)" % (name, rnd.front_verified))
        if rnd.front_failed:
            tap.diag("through nginx: %r" % collections.Counter(rnd.front_failed).most_common(5))
        tap.diag("%s: key/generate through nginx, (status, after the election): %r"
                 % (name, dict(rnd.front_writes)))
        tap.ok(any(st == 200 and after for (st, after) in rnd.front_writes) or
               not any(after for (_, after) in rnd.front_writes),
               "%s: keys made through nginx after the election" % name, dict(rnd.front_writes))

    check_ledger(g, ledger, new, survivors, n, rng)

    # the old master comes back, as a replica of the new one, and catches up
    g.restart(old)
    back = g.wait_role(old, "replica", g.site(new).address, timeout=20)
    tap.ok(back, "%s: site %d restarts on its data directory as a replica of site %d"
           % (name, old, new), g.site(old).health())
    with ledger.lock:
        later = [k for k, (_, t) in ledger.keys.items() if t > killed_at]
    bad = verifies_everywhere(g, later, [old], timeout=20)
    tap.ok(later and not bad, "%s: the %d keys made after its death verify on it"
           % (name, len(later)), bad)
    return new


def check_keys(g, keys, m, others, name):
    """Every key of keys is on site m at once, and on each of others once caught up."""
    missing = []
    for k in keys:
        r = call(g.site(m), "GET", "/key/info?key=" + k)
        if r is None or r.status != 200:
            missing.append((k[-6:], status(r)))
    tap.ok(keys and not missing, "%s: all %d of them are on the master (site %d)"
           % (name, len(keys), m), missing[:5])
    bad = []
    for i in others:
        pending = list(keys)

        def caught_up():
            pending[:] = [k for k in pending
                          if status(call(g.site(i), "GET", "/key/info?key=" + k)) != 200]
            return not pending
        wait_for(caught_up, timeout=15, interval=0.2)
        bad += [(i, k[-6:]) for k in pending[:5]]
    tap.ok(not bad, "%s: and on site%s %s" % (name, "s" if len(others) > 1 else "",
                                             ", ".join(map(str, others))), bad)


def check_ledger(g, ledger, m, survivors, rnd, rng):
    name = "round %d" % rnd
    with ledger.lock:
        now = [k for k, (n, _) in ledger.keys.items() if n == rnd]
        before = [k for k, (n, _) in ledger.keys.items() if n != rnd]
        usage = {k: list(v) for k, v in ledger.usage.items()}
        sent = dict(ledger.sent)
        unreadable = list(ledger.unreadable)
    tap.ok(not unreadable, "%s: every 2xx answer to key/generate gave a key" % name,
           unreadable[:3])
    # this round's keys, every one; of the earlier rounds' (all checked in their round,
    # and all again at the end), a sample
    sample = rng.sample(before, min(len(before), 200))
    tap.diag("%s: %d keys acknowledged in this round, %d before" % (name, len(now), len(before)))
    check_keys(g, now + sample, m, [i for i in survivors if i != m],
               "%s: the keys acknowledged in this round and %d of the earlier ones"
               % (name, len(sample)))
    master = g.site(m)

    low, high, spends = [], [], {}
    for k in ledger.usage_keys:
        r = call(master, "GET", "/key/info?key=" + k)
        spend = ((r.json or {}).get("info") or {}).get("spend", 0) if r is not None else None
        spends[k] = spend
        acked, reported = len(usage.get(k, [])) * COST, sent.get(k, 0) * COST
        if spend is None or spend + 1e-9 < acked:
            low.append((k[-6:], spend, acked))
        if spend is not None and spend > reported + 1e-9:
            high.append((k[-6:], spend, reported))
    tap.ok(not low, "%s: each key's spend on the new master is at least its acknowledged usage "
           "(%d reports acknowledged)" % (name, sum(len(v) for v in usage.values())), low)
    tap.ok(not high, "%s: and at most the usage reported" % name, high)
    dup, moved = [], []
    for j, (k, rids) in enumerate(sorted(usage.items())):
        if not rids:
            continue
        # again through each survivor in turn: a replica forwards it, the master knows it
        r = call(g.site(survivors[j % len(survivors)]), "POST", "/key/usage",
                 {"key": k, "request_id": rids[0], "cost": COST})
        if r is None or r.status != 200 or (r.json or {}).get("duplicate") is not True:
            dup.append((k[-6:], r))
        after = call(master, "GET", "/key/info?key=" + k)
        spend = ((after.json or {}).get("info") or {}).get("spend") if after else None
        if spend is None or abs(spend - spends.get(k, 0)) > 1e-9:
            moved.append((k[-6:], spends.get(k), spend))
    tap.ok(usage and not dup, "%s: an acknowledged usage report sent again is a duplicate"
           % name, dup[:3])
    tap.ok(not moved, "%s: and adds nothing to the spend" % name, moved[:3])


# --- the command line -------------------------------------------------------------------------

def lists_group(out, g, master, sites):
    """Whether out names every site of sites and marks the master's line."""
    lines = out.splitlines()
    named = all(any(g.site(i).address in ln for ln in lines) for i in sites)
    marked = any(g.site(master).address in ln and "master" in ln.lower() for ln in lines)
    return named and marked


def check_cli(g, m):
    replica = next(i for i in g.live() if i != m)
    everyone = g.live()
    env = g.site(replica).cli_env()
    p = keywarden(["help"], env)
    tap.ok(p.returncode == 0 and "group status" in p.stdout + p.stderr,
           "keywarden help mentions group status")
    p = keywarden(["group", "status", "--url", g.site(replica).url], env)
    tap.ok(p.returncode == 0 and lists_group(p.stdout, g, m, everyone),
           "keywarden group status --url (a replica's) lists every site and marks the master",
           p.stdout + p.stderr)
    p = keywarden(["group", "status", "--url", g.site(m).url, "--json"], env)
    try:
        st = json.loads(p.stdout)
    except ValueError:
        st = {}
    tap.ok(p.returncode == 0 and st.get("master") == g.site(m).address and
           sorted(x.get("address") for x in st.get("sites") or []) ==
           sorted(g.site(i).address for i in everyone),
           "keywarden group status --json prints /group/status", p.stdout + p.stderr)
    p = keywarden(["group", "status", "-d", g.site(replica).data_dir], g.site(replica).env)
    tap.ok(p.returncode == 0 and lists_group(p.stdout, g, m, everyone),
           "keywarden group status -d (a replica's data directory, its settings in the "
           "environment) lists every site and marks the master", p.stdout + p.stderr)


def check_join(g, m, ledger):
    j = g.join(m)
    s = g.site(j)
    tap.diag("site %d joined from a hot backup of site %d, at %s" % (j, m, s.address))
    # asked again with time to answer: its /health can queue behind its first requests
    seen = g.wait_role(j, "replica", g.site(m).address, timeout=10)
    tap.ok(seen is not None, "the joined site is a replica of the master", repr(s.health()))
    tap.ok(wait_for(lambda: s.address in [x.get("address") for x in
                                          status_of(g.site(m))[1].get("sites") or []],
                    timeout=10),
           "the master's /group/status lists the joined site", status_of(g.site(m))[1])
    with ledger.lock:
        sample = list(ledger.keys)[:100] + ledger.plain_keys
    fresh = generate(g.site(m), key_alias="after-the-join")
    bad = verifies_everywhere(g, sample + [fresh], [j], timeout=15)
    tap.ok(not bad, "keys made before and after the join verify on the joined site", bad)
    r = call(s, "POST", "/key/generate", {"key_alias": "through-the-joined-site"})
    tap.ok(r is not None and r.status == 200, "a write sent to the joined site is forwarded", r)

    # retired as an operator would: stopped, then removed from the group
    g.stop(j)
    p = keywarden(["group", "remove", s.address, "--url", g.site(m).url], g.site(m).cli_env())
    tap.ok(p.returncode == 0, "keywarden group remove %s --url (the master's): exit 0"
           % s.address, p.stdout + p.stderr)

    def gone():
        return all(s.address not in [x.get("address") for x in status_of(g.site(i))[1].get(
            "sites") or [{"address": s.address}]] for i in g.live())
    tap.ok(wait_for(gone, timeout=10), "the removed site is in no site's /group/status",
           [status_of(g.site(i))[1].get("sites") for i in g.live()])


def check_logs(g, ng):
    logs = g.read_logs()
    if ng is not None:
        logs["nginx"] = read_text(ng.error_log) + read_text(ng.log_path)
    with _lock:
        secrets = sorted(SECRETS)
    found = [(where, s[:6] + "...") for where, text in logs.items() for s in secrets if s in text]
    tap.ok(secrets and not found, "none of the %d secrets (generated keys, the master key) is in "
           "any site's log" % len(secrets), found[:5])


def main():
    rng = random.Random(int(os.environ.get("REPL_SEED", str(os.getpid()))))
    t0 = time.monotonic()
    ng = None
    with Group(3, workers=WORKERS) as g:
        tap.diag("sites: %s" % g.site_list)
        try:
            check_start(g)
            check_replicated(g)
            check_rpm(g)
            ng, front = start_nginx(g)
            ledger = Ledger()
            seed(g, ledger)
            m = g.master()
            for n in range(1, ROUNDS + 1):
                m = failover(g, ledger, front, n, rng)
            if ROUNDS > 1:
                with ledger.lock:
                    keys = list(ledger.keys)
                check_keys(g, keys, m, [i for i in g.live() if i != m],
                           "after %d rounds: every key acknowledged in any" % ROUNDS)
            check_cli(g, m)
            check_join(g, m, ledger)
            tap.eq(FIVE_HUNDREDS, [], "no answer anywhere was a 500")
            check_logs(g, ng)
        finally:
            if ng is not None:
                ng.stop()
    tap.diag("%d round(s) in %.1f s" % (ROUNDS, time.monotonic() - t0))


tap.run(main)
