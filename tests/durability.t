#!/usr/bin/python3
"""durability.t: the commit of each kind of write, seen in the worker's system calls.

keywarden runs behind lighttpd with one worker, traced by strace.  For one
write of each kind the README's durability table names, the trace between
the previous answer and this one must hold what the table promises:

- synchronous kinds (keys, teams, users, organizations, provider keys, Venice
  keys, /key/usage): an fdatasync or fsync of a Berkeley DB log file
  (log.NNNNNNNNNN) before the answer is written to the FastCGI connection;
- DB_TXN_NOSYNC kinds (/key/verify's rate window and lease, the authorizer's,
  a Venice limit breach): no fdatasync or fsync at all before the answer,
  and yet the write happened (the count, the lease and the breach are there);
- a relayed call's settlement: written to the log file before the answer
  (a crash of keywarden loses nothing), flushed after it and before the
  worker answers anything else.

Then the same service with KEYWARDEN_USAGE_COMMIT=async and a flush window
of FLUSH_MS, its pool manager traced too: a /key/usage answer comes with no
flush by the worker before it, and the manager's flush of the log follows
it within the window (with SLACK_MS for a loaded machine); a key's write
is still flushed before its answer.

What a crash does to each kind is tests/crash.t's part.  strace needs ptrace:
where it is not permitted, the whole test is skipped, and says so."""
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import fcgi  # noqa: E402
import tap  # noqa: E402
from fastprovider import MODEL, FastProvider  # noqa: E402
from kwserver import Server, wait_for  # noqa: E402

SYNC, NOSYNC = "synchronous", "DB_TXN_NOSYNC"
AFTER, FLUSHED = "written, flushed after the answer", "the previous answer's flush"
# pid, time, then the call: name(fd<path>, ...
CALL = re.compile(r"^(?:\[pid\s+)?\d+\]?\s+\d\d:\d\d:\d\d\.\d+ (\w+)\((\d+)<([^>]*)>(.*)$")
LOG_FILE = re.compile(r"/log\.\d{10}$")
# the same with the pid strace prints for each process it traces, and the time
TIMED_CALL = re.compile(r"^(\d+)\s+(\d\d):(\d\d):(\d\d\.\d+) (\w+)\((\d+)<([^>]*)>(.*)$")
FLUSH_MS = 200
SLACK_MS = 300


def tracer_of(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def attach(pids, out):
    """strace on the processes pids, writing to out; returns the process, or a
    reason why ptrace is refused."""
    args = ["strace", "-f", "-tt", "-y", "-s", "256", "-o", out,
            "-e", "trace=fdatasync,fsync,write,writev,pwrite64,sendmsg"]
    for pid in pids:
        args += ["-p", str(pid)]
    st = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    traced = lambda: all(tracer_of(pid) == st.pid for pid in pids)  # noqa: E731
    if wait_for(lambda: traced() or st.poll() is not None, timeout=20) and traced():
        return st, None
    try:
        st.kill()
    except ProcessLookupError:
        pass
    err = st.communicate(timeout=10)[1].decode("utf-8", "replace").strip()
    return None, err or "strace did not attach"


def answers(trace_path):
    """Splits the trace into what happened before each answer: a list, one per
    answer in order, of (syncs, logged, status) where syncs lists the paths
    fdatasync'd or fsync'd since the previous answer, logged the log files written
    since then, and status is the answer's Status line."""
    out, syncs, logged = [], [], []
    with open(trace_path, errors="replace") as f:
        for line in f:
            m = CALL.match(line.rstrip("\n"))
            if not m:
                continue
            call, _, path, rest = m.groups()
            if call in ("fdatasync", "fsync"):
                syncs.append(path)
            elif call in ("write", "pwrite64") and LOG_FILE.search(path):
                logged.append(path)
            elif path.startswith("socket:[") and "Status: " in rest:
                status = re.search(r"Status: (\d{3})", rest)
                out.append((syncs, logged, int(status.group(1)) if status else None))
                syncs, logged = [], []
    return out


def detach(st, pids):
    st.send_signal(signal.SIGINT)           # detaches, and flushes its output
    try:
        st.wait(timeout=20)
    except subprocess.TimeoutExpired:
        st.kill()
        st.wait()
    wait_for(lambda: all(tracer_of(pid) == 0 for pid in pids), timeout=10)


def timed_calls(trace_path):
    """The trace's calls as (pid, seconds since midnight, call, path, rest)."""
    out = []
    with open(trace_path, errors="replace") as f:
        for line in f:
            m = TIMED_CALL.match(line.rstrip("\n"))
            if m:
                pid, h, mi, sec, call, _, path, rest = m.groups()
                out.append((int(pid), int(h) * 3600 + int(mi) * 60 + float(sec), call, path, rest))
    return out


class Skip(Exception):
    pass


def main():
    # no checkpoint by the manager during the test: its flushes are not the worker's;
    # one worker, whose pool does not grow, so that it is the one traced
    env = {"KEYWARDEN_MAINTAIN_SECS": "86400", "KEYWARDEN_MAX_WORKERS": "1"}
    with FastProvider() as fp, Server(workers=1, env=env) as srv:
        fp.register(srv)
        try:
            run(srv)
        except Skip as why:
            skip = str(why)
        else:
            with Server(workers=1, env=dict(env, KEYWARDEN_USAGE_COMMIT="async",
                                            KEYWARDEN_USAGE_FLUSH_MS=str(FLUSH_MS))) as srv2:
                run_async(srv2)
            return
    print("1..0 # SKIP " + skip)
    sys.stdout.flush()
    sys.exit(0)


def run(srv):
    m = srv.admin
    worker = wait_for(lambda: srv.workers(), timeout=10)
    if not worker:
        tap.ok(False, "one worker runs", srv.read_log()[-2000:])
        return
    trace_path = os.path.join(srv.tmp, "strace.out")
    st, why = attach(worker, trace_path)
    if st is None:
        raise Skip("ptrace is not permitted here, so strace cannot watch the worker: " +
                   why.splitlines()[-1][:200])

    # each step: (kind, table line, what), the request's answer checked as it comes
    steps = []

    def step(kind, line, what, r, status=200):
        if getattr(r, "status", None) != status:
            raise RuntimeError("%s: answered %r" % (what, r))
        steps.append((kind, line, what, status))
        return r

    K = "keys, teams, users, organizations, provider keys, Venice keys"
    # a key's life
    k1 = step(SYNC, K, "POST /key/generate",
              m("POST", "/key/generate", {"key_alias": "dur-k1", "max_budget": 5})).json
    step(SYNC, K, "POST /key/update", m("POST", "/key/update", {"key": k1["key"], "max_budget": 6}))
    step(SYNC, K, "POST /key/block", m("POST", "/key/block", {"key": k1["key"]}))
    step(SYNC, K, "POST /key/unblock", m("POST", "/key/unblock", {"key": k1["key"]}))
    k1b = step(SYNC, K, "POST /key/{key}/regenerate",
               m("POST", "/key/%s/regenerate" % k1["token"], {})).json
    step(SYNC, K, "POST /key/delete", m("POST", "/key/delete", {"keys": [k1b["key"]]}))
    # a team's, a user's, an organization's
    team = step(SYNC, K, "POST /team/new",
                m("POST", "/team/new", {"team_alias": "dur-team", "max_budget": 5})).json
    step(SYNC, K, "POST /team/update",
         m("POST", "/team/update", {"team_id": team["team_id"], "max_budget": 6}))
    step(SYNC, K, "POST /team/delete", m("POST", "/team/delete", {"team_ids": [team["team_id"]]}))
    step(SYNC, K, "POST /user/new", m("POST", "/user/new", {"user_id": "dur-user"}))
    step(SYNC, K, "POST /user/update",
         m("POST", "/user/update", {"user_id": "dur-user", "max_budget": 3}))
    step(SYNC, K, "POST /user/delete", m("POST", "/user/delete", {"user_ids": ["dur-user"]}))
    step(SYNC, K, "POST /organization/new",
         m("POST", "/organization/new", {"organization_id": "dur-org",
                                          "organization_alias": "Durable"}))
    step(SYNC, K, "POST /organization/member_add",
         m("POST", "/organization/member_add", {"organization_id": "dur-org",
                                                 "member": {"user_id": "dur-member"}}))
    step(SYNC, K, "POST /organization/member_delete",
         m("POST", "/organization/member_delete", {"organization_id": "dur-org",
                                                    "user_id": "dur-member"}))
    # a provider key's
    pk = step(SYNC, K, "POST /api/providers/openai/keys",
              m("POST", "/api/providers/openai/keys",
                {"name": "dur-pk", "value": "sk-dur-provider-secret-0001", "weight": 2})).json
    step(SYNC, K, "PUT /api/providers/openai/keys/{id}",
         m("PUT", "/api/providers/openai/keys/" + pk["id"],
           {"name": "dur-pk", "value": "sk-dur-provider-secret-0001", "weight": 3}))
    step(SYNC, K, "DELETE /api/providers/openai/keys/{id}",
         m("DELETE", "/api/providers/openai/keys/" + pk["id"]))
    # a Venice key's; the first one is refused by its rate limit below, for a breach
    v1 = step(SYNC, K, "POST /api/v1/api_keys",
              m("POST", "/api/v1/api_keys", {"apiKeyType": "INFERENCE", "description": "dur-v1",
                                              "consumptionLimit": {"usd": 100}})).json["data"]
    step(SYNC, K, "POST /key/update (a Venice key's rpm_limit 0)",
         m("POST", "/key/update", {"key": v1["apiKey"], "rpm_limit": 0}))
    v2 = step(SYNC, K, "POST /api/v1/api_keys (another)",
              m("POST", "/api/v1/api_keys", {"apiKeyType": "INFERENCE",
                                              "description": "dur-v2"})).json["data"]
    step(SYNC, K, "PATCH /api/v1/api_keys",
         m("PATCH", "/api/v1/api_keys", {"id": v2["id"], "description": "dur-v2 renamed"}))
    step(SYNC, K, "DELETE /api/v1/api_keys", m("DELETE", "/api/v1/api_keys?id=" + v2["id"]))

    # the counters: a key with rate and parallel limits, its usage (synchronous), and
    # its checks (rate window and lease, not flushed)
    U = "/key/usage"
    W = "rate windows and leases"
    k2 = step(SYNC, K, "POST /key/generate (limits)",
              m("POST", "/key/generate", {"key_alias": "dur-k2", "rpm_limit": 1000,
                                          "max_parallel_requests": 5,
                                          "max_budget": 100})).json
    v = step(NOSYNC, W, "POST /key/verify (rate window, lease)",
             m("POST", "/key/verify", {"key": k2["key"], "request_id": "dur-r1",
                                       "expected_cost": 2})).json
    if v.get("code") != "VALID":
        raise RuntimeError("verify: %r" % v)
    a = fcgi.authorize(srv, "POST", "/v1/chat/completions",
                       {"Authorization": "Bearer " + k2["key"], "x-request-id": "dur-r2"})
    step(NOSYNC, W, "the AUTHORIZER role (rate window, lease)", a)
    step(SYNC, U, "POST /key/usage", m("POST", "/key/usage", {"key": k2["key"], "request_id":
                                                              "dur-r1", "cost": 0.5}))
    step(SYNC, U, "POST /key/usage (spends a Venice key)",
         m("POST", "/key/usage", {"key": v1["apiKey"], "cost": 0.05}))
    b = step(NOSYNC, "Venice limit breaches", "POST /key/verify (a Venice limit breach)",
             m("POST", "/key/verify", {"key": v1["apiKey"], "model": "dur-model"})).json
    if b.get("code") != "RATE_LIMITED":
        raise RuntimeError("breach: %r" % b)

    # a relayed call's settlement: the client's answer is the provider's, and does not
    # wait for the disk; the flush follows before the worker answers /health
    k3 = step(SYNC, K, "POST /key/generate (for the relay)",
              m("POST", "/key/generate", {"key_alias": "dur-k3"})).json
    step(AFTER, "a relayed call's settlement", "POST /v1/chat/completions",
         srv.request("POST", "/v1/chat/completions",
                     headers={"Authorization": "Bearer " + k3["key"]},
                     body={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
    step(FLUSHED, "a relayed call's settlement", "GET /health after it", srv.request("GET", "/health"))

    detach(st, worker)

    seen = answers(trace_path)
    tap.eq([s for _, _, s in seen], [s[3] for s in steps],
           "the trace holds one answer for each of the %d requests, in order" % len(steps))
    for (kind, line, what, _), (syncs, logged, _) in zip(steps, seen):
        logs = [p for p in syncs if LOG_FILE.search(p)]
        if kind in (SYNC, FLUSHED):
            tap.ok(logs, "%s: the log is flushed before the answer%s" % (
                what, " (the settlement's, after the relayed answer)" if kind == FLUSHED else ""),
                syncs)
        elif kind == AFTER:
            tap.ok(logged and not syncs, "%s: the settlement is in the log file before the "
                   "answer, and not flushed before it" % what, (logged, syncs))
        else:
            tap.ok(not syncs, "%s: nothing is flushed before the answer (%s)" % (what, line),
                   syncs)

    # and the unflushed writes happened: the counts, the lease, the breach
    d = m("POST", "/key/verify", {"key": k2["key"], "dry_run": True}).json or {}
    rpm = [x for x in d.get("limits", []) if x.get("name") == "rpm_limit"]
    tap.ok(rpm and rpm[0].get("used") == 2,
           "the rate window counted the verify and the authorizer's check", d.get("limits"))
    par = [x for x in d.get("limits", []) if x.get("name") == "max_parallel_requests"]
    tap.ok(par and par[0].get("used") == 1,
           "the authorizer's lease is held (the verify's was settled by its usage)",
           d.get("limits"))
    log = m("GET", "/api/v1/api_keys/rate_limits/log").json or {}
    tap.ok([e for e in log.get("data", []) if e.get("apiKeyId") == v1["id"] and
            e.get("rateLimitType") == "RPM" and e.get("rateLimitTier") == "paid" and
            e.get("modelId") == "dur-model"],
           "the Venice limit breach is in the log", log)



def run_async(srv):
    """KEYWARDEN_USAGE_COMMIT=async: the worker answers a usage report
    without a flush, and the manager flushes the log within FLUSH_MS."""
    m = srv.admin
    worker, manager = wait_for(lambda: srv.workers(), timeout=10), srv.manager()
    if not worker or not manager:
        tap.ok(False, "async: one worker and its manager run", srv.read_log()[-2000:])
        return
    trace_path = os.path.join(srv.tmp, "strace-async.out")
    st, why = attach(worker + [manager], trace_path)
    if st is None:
        tap.ok(False, "async: strace attaches to the worker and the manager", why)
        return
    key = m("POST", "/key/generate", {"key_alias": "dur-async"}).json or {}
    usage = [m("POST", "/key/usage", {"key": key.get("key"), "request_id": "dur-a%d" % i,
                                       "cost": 0.25}) for i in range(3)]
    time.sleep((FLUSH_MS + SLACK_MS) / 1000)    # the manager's flush comes after the last answer
    detach(st, worker + [manager])
    tap.ok(key.get("key") and all(r.status == 200 for r in usage),
           "async: the key and its three usage reports are answered 200", usage)

    # the worker's answers, each with the worker's flushes since the one before
    calls, answered, syncs = timed_calls(trace_path), [], []
    for pid, t, call, path, rest in calls:
        if pid != worker[0]:
            continue
        if call in ("fdatasync", "fsync"):
            syncs.append(path)
        elif path.startswith("socket:[") and "Status: " in rest:
            answered.append((t, syncs))
            syncs = []
    tap.eq(len(answered), 4, "async: the trace holds the worker's four answers")
    if len(answered) != 4:
        return
    tap.ok([p for p in answered[0][1] if LOG_FILE.search(p)],
           "async: POST /key/generate is still flushed before its answer", answered[0][1])
    for i, (t, syncs) in enumerate(answered[1:]):
        tap.ok(not syncs, "async: POST /key/usage %d: the worker flushes nothing before the "
               "answer" % (i + 1), syncs)
        flushes = [ft for pid, ft, call, path, _ in calls if pid == manager and
                   call in ("fdatasync", "fsync") and LOG_FILE.search(path) and ft >= t]
        tap.ok(flushes and flushes[0] - t <= (FLUSH_MS + SLACK_MS) / 1000,
               "async: POST /key/usage %d: the manager flushes the log within %d ms of the "
               "answer (+%d ms slack)" % (i + 1, FLUSH_MS, SLACK_MS),
               "first flush after it: %s" % ("%.0f ms" % ((flushes[0] - t) * 1000)
                                             if flushes else "none"))
    spend = (m("GET", "/key/info?key=" + key["key"]).json or {}).get("info", {}).get("spend")
    tap.ok(spend is not None and abs(spend - 0.75) < 1e-9, "async: the three reports are spent",
           spend)


tap.run(main)
