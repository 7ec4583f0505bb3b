#!/usr/bin/python3
"""contract_verify.t: enforcement through lighttpd: POST /key/verify, POST /key/usage and the
FastCGI AUTHORIZER role, as the README's section "Enforcement: verify, usage and limits" describes them.

Covers: every verdict code (VALID, NOT_FOUND, BLOCKED, EXPIRED, TEAM_BLOCKED, USER_BLOCKED,
MODEL_NOT_ALLOWED, ROUTE_NOT_ALLOWED, BUDGET_EXCEEDED, RATE_LIMITED) and the order they are
checked in; model wildcards, "all-proxy-models", "all-team-models" and team models;
allowed_routes (exact with an optional /v1, prefixes, wildcards, llm_api_routes); budgets of
the key, team, user and model with reservations of requests in flight, soft budgets and
budget_duration resets without a restart; rpm, tpm, per-model and team windows and
max_parallel_requests leases (settled by /key/usage, or back after KEYWARDEN_LEASE_SECS);
dry_run; the callers (master, proxy admins, keys with permissions.verify_keys; 401, 403,
422); /key/usage (spend on key, team and user, idempotent request_id, hash or plaintext,
tokens into tpm, a request_id settling only its own key's lease); races across workers (64 concurrent requests against one budget, 3N
concurrent verifies against rpm_limit N, a block seen by the very next verify).

The AUTHORIZER role is spoken directly to keywarden's socket (tests/lib/fcgi.py), because
lighttpd consumes the Variable-* headers an authorizer answers.

Every /key/verify and /key/usage answer is checked against the spec, none may be a 5xx, and
no plaintext key may appear in any verify, usage or authorizer answer, nor in the server log.
Timed rules (expiry, lease timeout, budget reset) start first and are checked at the end, so
their sleeps overlap; rules on one-minute windows wait for a fresh minute when the current
one has too few seconds left."""
import concurrent.futures
import hashlib
import itertools
import json
import os
import re
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import contract  # noqa: E402
import fcgi  # noqa: E402
from kwserver import Server  # noqa: E402

SPEC = contract.load_spec()
OPS = contract.operations(SPEC)
LEASE_SECS = 2
MASTER = object()          # "who" for the master key
NOBODY = None              # "who" for no credential at all
PLAINTEXTS = set()         # every plaintext key this test made
SETUP_FAILURES = []        # setup requests that did not do what the tests rely on
ANSWERS = []               # (what, status, problems, text) of every verify/usage/authorizer answer
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_serial = itertools.count(1)
_lock = threading.Lock()


# --- helpers ---------------------------------------------------------------------------

def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def uniq(prefix):
    return "%s-%d" % (prefix, next(_serial))


def J(r):
    return r.json if isinstance(r.json, dict) else {}


def q(s):
    return urllib.parse.quote(s, safe="")


def close(a, b, eps=1e-6):
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) < eps


def window_guard(need):
    """Waits for the next UTC minute when fewer than need seconds are left in this one, so a
    sequence that relies on one rate window stays inside one."""
    left = 60 - (time.time() % 60)
    if left < need:
        tap.diag("waiting %.1f s for a fresh one-minute window" % (left + 0.1))
        time.sleep(left + 0.1)


class Api:
    """One server; every management, verify and usage request of the test goes through call()."""

    def __init__(self, srv):
        self.srv = srv
        PLAINTEXTS.add(srv.master_key)

    def call(self, method, path, body=None, who=MASTER, headers=None):
        hdrs = {}
        cred = self.srv.master_key if who is MASTER else who
        if cred:
            hdrs["Authorization"] = "Bearer " + cred
        hdrs.update(headers or {})
        r = self.srv.request(method, path, body=body, headers=hdrs)
        if isinstance(r.json, dict) and str(r.json.get("key", "")).startswith("sk-"):
            with _lock:
                PLAINTEXTS.add(r.json["key"])
        op = {"/key/verify": "key_verify", "/key/usage": "key_usage"}.get(path)
        if op:
            problems = contract.check_response(SPEC, OPS[op], r)
            hdr_text = "\n".join("%s: %s" % kv for kv in r.headers.items())
            with _lock:
                ANSWERS.append(("%s %s" % (method, path), r.status, problems,
                                hdr_text + "\n" + r.body.decode("utf-8", "replace")))
        return r

    def get(self, path, who=MASTER, **kw):
        return self.call("GET", path, who=who, **kw)

    def post(self, path, body=None, who=MASTER, **kw):
        return self.call("POST", path, body, who=who, **kw)

    def verify(self, key, who=MASTER, **fields):
        body = {"key": key}
        body.update(fields)
        return self.post("/key/verify", body, who=who)

    def usage(self, key, who=MASTER, **fields):
        body = {"key": key}
        body.update(fields)
        return self.post("/key/usage", body, who=who)

    def authorize(self, uri, headers=None, method="POST"):
        res = fcgi.authorize(self.srv, method, uri, headers)
        text = "\n".join("%s: %s" % kv for kv in res.headers.items()) + "\n" + \
            res.body.decode("utf-8", "replace")
        with _lock:
            ANSWERS.append(("AUTHORIZER %s %s" % (method, uri), res.status, [], text))
        return res


def setup_ok(r, what):
    if r.status != 200:
        SETUP_FAILURES.append("%s -> %r" % (what, r))
    return J(r)


def gen(api, **fields):
    """A new key: {"key", "token", ...}; a failure is kept in SETUP_FAILURES and a key that
    exists nowhere stands in for it."""
    r = api.post("/key/generate", fields)
    k = J(r)
    if r.status != 200 or not str(k.get("key", "")).startswith("sk-"):
        SETUP_FAILURES.append("POST /key/generate %s -> %r" % (json.dumps(fields), r))
        fake = "sk-setup-failed-%d" % next(_serial)
        k = {"key": fake, "token": sha(fake)}
    return k


def team(api, **fields):
    tid = fields.setdefault("team_id", uniq("team"))
    setup_ok(api.post("/team/new", fields), "POST /team/new %s" % json.dumps(fields))
    return tid


def user(api, role="internal_user", **fields):
    """A new user and the key /user/new answers: (user_id, key)."""
    uid = fields.setdefault("user_id", uniq("user"))
    fields["user_role"] = role
    a = setup_ok(api.post("/user/new", fields), "POST /user/new %s" % json.dumps(fields))
    key = a.get("key")
    if not str(key or "").startswith("sk-"):
        SETUP_FAILURES.append("POST /user/new %s answered no key" % uid)
        key = "sk-setup-failed-%d" % next(_serial)
    return uid, key


def record(api, ref):
    return J(api.get("/key/info?key=" + q(ref))).get("info") or {}


def spend_of(api, ref):
    return record(api, ref).get("spend")


def verdict(r, code, name, limit=None):
    """Asserts a 200 verdict with this code (and limit); returns the answer."""
    a = J(r)
    tap.ok(r.status == 200 and a.get("code") == code and a.get("valid") is (code == "VALID"),
           "%s: %s" % (name, code), "got %d: %s" % (r.status, r.body[:600]))
    if limit is not None:
        tap.eq(a.get("limit"), limit, "%s: limit %s" % (name, limit))
    return a


def error_of(r, status, name, param=None):
    tap.eq(r.status, status, name + ": %d" % status)
    e = J(r).get("error")
    tap.ok(isinstance(e, dict) and e.get("code") == str(status) and
           isinstance(e.get("message"), str) and "type" in e and "param" in e,
           name + ": LiteLLM envelope", r.body[:500])
    if param is not None:
        tap.eq((e or {}).get("param"), param, name + ": names " + param)
    return e or {}


def limit_entry(a, name, model=None):
    for e in a.get("limits") or []:
        if isinstance(e, dict) and e.get("name") == name and (model is None or
                                                               e.get("model") == model):
            return e
    return {}


def retry_to_minute(a, name):
    """retry_after is the seconds to the next UTC minute (give or take the request's time)."""
    left = 60 - (time.time() % 60)
    ra = a.get("retry_after")
    tap.ok(isinstance(ra, int) and 1 <= ra <= 60 and abs(ra - left) <= 2.5,
           name + ": retry_after is the seconds to the next minute",
           "retry_after %r, %.1f s left in the minute" % (ra, left))


def concurrently(n, fn):
    """Runs fn(i) for i in 0..n-1 on n threads released together; returns the results."""
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        return fn(i)

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


# --- timed rules: started first, checked at the end -------------------------------------

def start_expiry(api):
    """EXPIRED (duration 2s), and that BLOCKED comes before EXPIRED and EXPIRED before
    TEAM_BLOCKED."""
    k = gen(api, duration="2s", key_alias=uniq("expiring"))
    kb = gen(api, duration="2s")
    tid = team(api)
    kt = gen(api, duration="2s", team_id=tid)
    verdict(api.verify(k["key"], dry_run=True), "VALID", "a key with duration 2s, at once")
    setup_ok(api.post("/key/block", {"key": kb["key"]}), "block")
    setup_ok(api.post("/team/update", {"team_id": tid, "blocked": True}), "team block")
    t0 = time.time()

    def finish():
        a = verdict(api.verify(k["key"]), "EXPIRED", "2 s later the key")
        tap.ok(isinstance(a.get("message"), str) and a.get("token") == k["token"],
               "EXPIRED: names the key's token, with a message", a)
        verdict(api.verify(kb["key"]), "BLOCKED", "blocked and expired: BLOCKED comes first")
        verdict(api.verify(kt["key"]), "EXPIRED",
                "expired in a blocked team: EXPIRED comes before TEAM_BLOCKED")
    return t0 + 2.6, finish


def start_lease(api):
    """max_parallel_requests 1: a second request waits for the first's lease; a lease never
    settled comes back after KEYWARDEN_LEASE_SECS; /key/usage returns one at once."""
    k = gen(api, max_parallel_requests=1)
    a = verdict(api.verify(k["key"], request_id="lease-1"), "VALID",
                "max_parallel_requests 1: the first request")
    tap.eq(a.get("request_id"), "lease-1", "the verdict names the lease it took")
    a = verdict(api.verify(k["key"], request_id="lease-2"), "RATE_LIMITED",
                "max_parallel_requests 1: a second one in flight", "max_parallel_requests")
    ra = a.get("retry_after")
    tap.ok(isinstance(ra, int) and 1 <= ra <= LEASE_SECS,
           "max_parallel_requests: retry_after is at most the lease timeout (%d s)" % LEASE_SECS,
           a)
    verdict(api.verify(k["key"], dry_run=True), "RATE_LIMITED",
            "a dry run sees the slot taken too", "max_parallel_requests")
    t0 = time.time()

    def finish():
        a = verdict(api.verify(k["key"], request_id="lease-3"), "VALID",
                    "the unsettled lease came back after KEYWARDEN_LEASE_SECS")
        verdict(api.verify(k["key"], request_id="lease-4"), "RATE_LIMITED",
                "and the new request holds the slot", "max_parallel_requests")
        r = api.usage(k["key"], request_id="lease-3", cost=0)
        tap.ok(r.status == 200 and J(r).get("recorded") is True,
               "usage settles the lease", repr(r))
        verdict(api.verify(k["key"], request_id="lease-5"), "VALID",
                "usage with the request_id returned the slot at once")
        api.usage(k["key"], request_id="lease-5")
        r = api.usage(k["key"], request_id="lease-1", cost=0.5)
        tap.ok(r.status == 200, "usage for a timed-out lease is still recorded", repr(r))
        verdict(api.verify(k["key"], request_id="lease-6"), "VALID", "the slot is free")
        verdict(api.verify(k["key"], request_id="lease-7"), "RATE_LIMITED",
                "a late usage for a timed-out lease freed no second slot",
                "max_parallel_requests")
    return t0 + LEASE_SECS + 1.0, finish


def start_budget_reset(api):
    """max_budget 1, budget_duration 3s: spent, refused, and usable again after the reset
    without a restart."""
    k = gen(api, max_budget=1, budget_duration="3s")
    r = api.usage(k["key"], cost=1)
    tap.ok(r.status == 200 and close(J(r).get("spend"), 1.0), "budget reset: usage spends 1",
           repr(r))
    verdict(api.verify(k["key"]), "BUDGET_EXCEEDED", "budget reset: spent", "max_budget")
    t0 = time.time()

    def finish():
        a = verdict(api.verify(k["key"]), "VALID",
                    "budget_duration 3s: the spend reset at the boundary, no restart")
        tap.ok(close(a.get("spend"), 0.0), "budget reset: the verdict's spend is 0", a)
        tap.ok(close(spend_of(api, k["key"]), 0.0), "budget reset: /key/info spend is 0",
               record(api, k["key"]))
    return t0 + 3.8, finish


# --- verdict codes ------------------------------------------------------------------------

def codes(api):
    tid = team(api, models=["gpt-4", "claude-3"], max_budget=100)
    uid, _ = user(api)
    k = gen(api, key_alias=uniq("valid"), user_id=uid, team_id=tid, models=["gpt-4"],
            max_budget=10, metadata={"app": "verify"})
    r = api.verify(k["key"], model="gpt-4", route="/v1/chat/completions")
    a = verdict(r, "VALID", "a good key")
    want = {"token": k["token"], "key_alias": k.get("key_alias"), "user_id": uid,
            "team_id": tid, "models": ["gpt-4"], "max_budget": 10}
    tap.eq({f: a.get(f) for f in want}, want, "VALID: the key's token, alias, owner, models, "
           "max_budget")
    tap.ok(close(a.get("spend"), 0) and close(a.get("reserved"), 0) and
           close(a.get("remaining_budget"), 10) and a.get("soft_budget_exceeded") is False,
           "VALID: spend 0, reserved 0, remaining_budget 10, soft budget not exceeded", a)
    tap.ok(a.get("limit") is None and a.get("retry_after") is None,
           "VALID: no limit, no retry_after", a)
    tap.ok(isinstance(a.get("request_id"), str) and UUID.match(a["request_id"]),
           "VALID without an expected_cost on a key with a budget: the default expected cost "
           "is reserved under a lease named by a generated UUID", a)
    api.usage(k["key"], request_id=a.get("request_id") or "none", cost=0)
    a = verdict(api.verify(k["key"], dry_run=True), "VALID", "after its usage report")
    tap.ok(close(a.get("reserved"), 0), "the usage report returned the reservation", a)
    kfree = gen(api)
    a = verdict(api.verify(kfree["key"]), "VALID", "a key without limits")
    tap.ok(a.get("request_id") is None,
           "VALID without a lease (no budget, tpm, parallel limit, cost or request_id): no "
           "request_id", a)
    a = verdict(api.verify(k["key"], expected_cost=0.5), "VALID", "with an expected_cost")
    tap.ok(isinstance(a.get("request_id"), str) and UUID.match(a["request_id"]),
           "expected_cost takes a lease named by a generated UUID", a)
    api.usage(k["key"], request_id=a.get("request_id") or "none", cost=0)

    # NOT_FOUND: only valid, code, message
    for name, presented in (("an unknown key", "sk-no-such-key-verify-0001"),
                            ("a known key's hash", k["token"]),
                            ("the hash's upper case", k["token"].upper())):
        r = api.verify(presented)
        a = verdict(r, "NOT_FOUND", name)
        tap.eq(sorted(a), ["code", "message", "valid"],
               "%s: the answer has only valid, code and message" % name)
        tap.ok(presented not in r.body.decode("utf-8", "replace"),
               "%s: the answer does not echo what was presented" % name)

    # BLOCKED
    kb = gen(api)
    setup_ok(api.post("/key/block", {"key": kb["key"]}), "block")
    a = verdict(api.verify(kb["key"]), "BLOCKED", "a blocked key")
    tap.eq(a.get("token"), kb["token"], "BLOCKED: names the token")

    # TEAM_BLOCKED, USER_BLOCKED, and their order
    t_blk = team(api)
    kt = gen(api, team_id=t_blk)
    verdict(api.verify(kt["key"]), "VALID", "a team key before its team is blocked")
    r = api.post("/team/update", {"team_id": t_blk, "blocked": True})
    tap.ok(r.status == 200, "POST /team/update blocked true", repr(r))
    verdict(api.verify(kt["key"]), "TEAM_BLOCKED", "its team blocked, the very next verify")
    setup_ok(api.post("/team/update", {"team_id": t_blk, "blocked": False}), "team unblock")
    verdict(api.verify(kt["key"]), "VALID", "its team unblocked")

    u_blk, u_key = user(api)
    ku = gen(api, user_id=u_blk, models=["gpt-4"])
    verdict(api.verify(ku["key"]), "VALID", "a user's key before the user is blocked")
    r = api.post("/user/update", {"user_id": u_blk, "blocked": True})
    tap.ok(r.status == 200, "POST /user/update blocked true", repr(r))
    verdict(api.verify(ku["key"]), "USER_BLOCKED", "its user blocked, the very next verify")
    verdict(api.verify(u_key), "USER_BLOCKED", "the key /user/new made, user blocked")
    verdict(api.verify(ku["key"], model="claude-3"), "USER_BLOCKED",
            "USER_BLOCKED comes before MODEL_NOT_ALLOWED")

    t_both = team(api)
    u_both, _ = user(api)
    kboth = gen(api, team_id=t_both, user_id=u_both)
    setup_ok(api.post("/team/update", {"team_id": t_both, "blocked": True}), "team block")
    setup_ok(api.post("/user/update", {"user_id": u_both, "blocked": True}), "user block")
    verdict(api.verify(kboth["key"]), "TEAM_BLOCKED", "TEAM_BLOCKED comes before USER_BLOCKED")
    kbb = gen(api, team_id=t_both)
    setup_ok(api.post("/key/block", {"key": kbb["key"]}), "block")
    verdict(api.verify(kbb["key"]), "BLOCKED", "BLOCKED comes before TEAM_BLOCKED")


def models(api):
    cases = [
        (["gpt-4"], [("gpt-4", True), ("claude-3", False), ("gpt-4o", False), (None, True)]),
        (["openai/*"], [("openai/gpt-4o", True), ("openai/o1", True), ("anthropic/claude-3", False),
                        ("gpt-4", False)]),
        (["all-proxy-models"], [("gpt-4", True), ("anything/at-all", True)]),
        (["*"], [("gpt-4", True), ("anthropic/claude-3", True)]),
        ([], [("gpt-4", True), ("whatever", True)]),
        (["gpt-4", "claude-*"], [("claude-3-opus", True), ("gpt-4", True), ("gpt-3.5", False)]),
    ]
    for key_models, checks in cases:
        k = gen(api, models=key_models)
        for model, allowed in checks:
            body = {"model": model} if model is not None else {}
            verdict(api.verify(k["key"], **body), "VALID" if allowed else "MODEL_NOT_ALLOWED",
                    "models %s, model %s" % (json.dumps(key_models), model))
    k = gen(api)     # models absent
    verdict(api.verify(k["key"], model="gpt-4"), "VALID", "models absent: every model")

    tid = team(api, models=["gpt-4", "openai/*"])
    k = gen(api, team_id=tid)
    verdict(api.verify(k["key"], model="gpt-4"), "VALID", "team models: a team model")
    verdict(api.verify(k["key"], model="openai/gpt-4o"), "VALID",
            "team models: a team wildcard")
    verdict(api.verify(k["key"], model="claude-3"), "MODEL_NOT_ALLOWED",
            "team models bound a key with no models of its own")
    r = api.post("/key/generate", {"team_id": tid, "models": ["all-team-models"]})
    tap.ok(r.status == 200, "a team key may be generated with models [\"all-team-models\"] "
           "(the team's models)", repr(r))
    # all-team-models enforced: a key made while its team had no models, then the team's
    # models set (so this does not depend on /key/generate accepting it for a bounded team)
    tid2 = team(api, models=[])
    k = gen(api, team_id=tid2, models=["all-team-models"])
    setup_ok(api.post("/team/update", {"team_id": tid2, "models": ["gpt-4", "openai/*"]}),
             "POST /team/update models")
    verdict(api.verify(k["key"], model="gpt-4"), "VALID", "all-team-models: a team model")
    verdict(api.verify(k["key"], model="openai/o1"), "VALID",
            "all-team-models: a team wildcard")
    verdict(api.verify(k["key"], model="claude-3"), "MODEL_NOT_ALLOWED",
            "all-team-models: not a team model")
    k = gen(api, team_id=tid, models=["gpt-4"])
    verdict(api.verify(k["key"], model="openai/gpt-4o"), "MODEL_NOT_ALLOWED",
            "a team key's own models narrow the team's")
    tid = team(api, models=[])
    k = gen(api, team_id=tid, models=["gpt-4"])
    verdict(api.verify(k["key"], model="claude-3"), "MODEL_NOT_ALLOWED",
            "a team with no models: the key's own models still apply")


def routes(api):
    k = gen(api, allowed_routes=["/chat/completions", "/embeddings/", "/keys/*"])
    for route, allowed in (("/chat/completions", True), ("/v1/chat/completions", True),
                           ("/chat/completions/x", False), ("/v2/chat/completions", False),
                           ("/completions", False), ("/embeddings/text-3", True),
                           ("/embeddings/", True), ("/embeddingsX", False),
                           ("/keys/abc", True), ("/keys/a/b", True), ("/keysabc", False),
                           ("/models", False)):
        verdict(api.verify(k["key"], route=route), "VALID" if allowed else "ROUTE_NOT_ALLOWED",
                "allowed_routes exact, prefix/, wildcard: route %s" % route)
    verdict(api.verify(k["key"]), "VALID", "allowed_routes: no route given")
    k = gen(api, allowed_routes=["/v1/chat/completions"])
    verdict(api.verify(k["key"], route="/v1/chat/completions"), "VALID",
            "an exact /v1 entry matches itself")
    k = gen(api, allowed_routes=["llm_api_routes"])
    for route, allowed in (("/v1/chat/completions", True), ("/chat/completions", True),
                           ("/v1/embeddings", True), ("/key/generate", False),
                           ("/key/info", False), ("/team/new", False), ("/user/info", False),
                           ("/audit", False), ("/health", False), ("/openapi.json", False)):
        verdict(api.verify(k["key"], route=route), "VALID" if allowed else "ROUTE_NOT_ALLOWED",
                "llm_api_routes: route %s" % route)
    k = gen(api)
    verdict(api.verify(k["key"], route="/key/generate"), "VALID",
            "no allowed_routes: every route")
    k = gen(api, models=["gpt-4"], allowed_routes=["/chat/completions"], spend=1, max_budget=1)
    verdict(api.verify(k["key"], model="claude-3", route="/audit"), "MODEL_NOT_ALLOWED",
            "MODEL_NOT_ALLOWED comes before ROUTE_NOT_ALLOWED")
    verdict(api.verify(k["key"], model="gpt-4", route="/audit"), "ROUTE_NOT_ALLOWED",
            "ROUTE_NOT_ALLOWED comes before BUDGET_EXCEEDED")
    verdict(api.verify(k["key"], model="gpt-4", route="/chat/completions"), "BUDGET_EXCEEDED",
            "and the budget refuses the allowed model and route", "max_budget")


def budgets(api):
    k = gen(api, max_budget=1)
    r = api.usage(k["key"], cost=0.4)
    verdict(api.verify(k["key"]), "VALID", "max_budget 1, spend 0.4")
    api.usage(k["key"], cost=0.6)
    a = verdict(api.verify(k["key"]), "BUDGET_EXCEEDED", "max_budget 1, spend 1", "max_budget")
    tap.ok(a.get("token") == k["token"] and close(a.get("spend"), 1.0) and
           isinstance(a.get("message"), str), "BUDGET_EXCEEDED: token, spend 1, a message", a)
    k = gen(api, max_budget=1, spend=1.5)
    verdict(api.verify(k["key"]), "BUDGET_EXCEEDED", "spend set above max_budget", "max_budget")
    k = gen(api, max_budget=0)
    verdict(api.verify(k["key"]), "BUDGET_EXCEEDED", "max_budget 0", "max_budget")

    # reservations: spend + reserved >= max_budget refuses
    k = gen(api, max_budget=1)
    a1 = verdict(api.verify(k["key"], expected_cost=0.6, request_id="res-1"), "VALID",
                 "reserve 0.6 of 1")
    a2 = verdict(api.verify(k["key"], expected_cost=0.6, request_id="res-2"), "VALID",
                 "reserve 0.6 more (0.6 reserved < 1)")
    tap.ok(close(a2.get("reserved"), 0.6) or close(a2.get("reserved"), 1.2),
           "the second verdict reports the reservation", a2)
    a3 = verdict(api.verify(k["key"], expected_cost=0.6, request_id="res-3"), "BUDGET_EXCEEDED",
                 "1.2 reserved >= 1: refused before anything is spent", "max_budget")
    tap.ok(close(a3.get("reserved"), 1.2) and close(a3.get("spend"), 0),
           "the refusal shows 1.2 reserved, 0 spent", a3)
    api.usage(k["key"], request_id="res-1", cost=0.1)
    api.usage(k["key"], request_id="res-2", cost=0.1)
    a = verdict(api.verify(k["key"], dry_run=True), "VALID",
                "settled at 0.1 each: the reservations are released")
    tap.ok(close(a.get("reserved"), 0) and close(a.get("spend"), 0.2),
           "after usage: reserved 0, spend 0.2", a)

    # team and user budgets
    tid = team(api, max_budget=1)
    k = gen(api, team_id=tid)
    k2 = gen(api, team_id=tid)
    api.usage(k["key"], cost=0.5)
    verdict(api.verify(k2["key"]), "VALID", "team max_budget 1, team spend 0.5")
    api.usage(k2["key"], cost=0.5)
    verdict(api.verify(k["key"]), "BUDGET_EXCEEDED", "team spend 1 (by two keys)",
            "team_max_budget")
    verdict(api.verify(k2["key"]), "BUDGET_EXCEEDED", "team spend 1, the other key",
            "team_max_budget")
    k3 = gen(api, team_id=team(api, max_budget=1))
    verdict(api.verify(k3["key"], expected_cost=1, request_id="team-res"), "VALID",
            "team reservation of 1")
    verdict(api.verify(k3["key"]), "BUDGET_EXCEEDED", "the team's reservation counts",
            "team_max_budget")

    uid, ukey = user(api, max_budget=1)
    k = gen(api, user_id=uid)
    api.usage(ukey, cost=1)
    verdict(api.verify(k["key"]), "BUDGET_EXCEEDED", "user max_budget 1, spent by the user's "
            "other key", "user_max_budget")
    verdict(api.verify(ukey), "BUDGET_EXCEEDED", "user max_budget: the spending key too",
            "user_max_budget")

    # per-model budget
    k = gen(api, model_max_budget={"gpt-4": {"budget_limit": 0.5, "time_period": "1d"}})
    verdict(api.verify(k["key"], model="gpt-4"), "VALID", "model_max_budget: nothing spent")
    api.usage(k["key"], model="gpt-4", cost=0.3)
    api.usage(k["key"], model="claude-3", cost=5)
    verdict(api.verify(k["key"], model="gpt-4"), "VALID",
            "model_max_budget: 0.3 of 0.5 on gpt-4 (other models' spend does not count)")
    api.usage(k["key"], model="gpt-4", cost=0.2)
    verdict(api.verify(k["key"], model="gpt-4"), "BUDGET_EXCEEDED", "model_max_budget reached",
            "model_max_budget")
    verdict(api.verify(k["key"], model="claude-3"), "VALID",
            "model_max_budget refuses only its model")
    verdict(api.verify(k["key"]), "VALID", "model_max_budget: no model given")

    # soft budget never refuses
    k = gen(api, soft_budget=0.5, max_budget=10)
    a = verdict(api.verify(k["key"]), "VALID", "soft_budget 0.5, nothing spent")
    tap.eq(a.get("soft_budget_exceeded"), False, "soft_budget not yet exceeded")
    api.usage(k["key"], cost=0.5)
    a = verdict(api.verify(k["key"]), "VALID", "soft_budget 0.5, spend 0.5: still VALID")
    tap.eq(a.get("soft_budget_exceeded"), True, "soft_budget_exceeded true at spend >= soft")
    k = gen(api, soft_budget=1, spend=50)
    a = verdict(api.verify(k["key"]), "VALID", "soft_budget far exceeded, no max_budget")
    tap.eq(a.get("soft_budget_exceeded"), True, "soft_budget_exceeded true")


def rates(api):
    window_guard(12)
    k = gen(api, rpm_limit=3)
    for i in range(3):
        verdict(api.verify(k["key"]), "VALID", "rpm_limit 3: request %d" % (i + 1))
    a = verdict(api.verify(k["key"]), "RATE_LIMITED", "rpm_limit 3: request 4", "rpm_limit")
    retry_to_minute(a, "rpm_limit")
    e = limit_entry(a, "rpm_limit")
    tap.ok(e.get("limit") == 3 and e.get("remaining") == 0,
           "rpm_limit: limits names it with limit 3, remaining 0", a.get("limits"))

    # refused verdicts count nothing
    k = gen(api, rpm_limit=1, models=["gpt-4"])
    verdict(api.verify(k["key"], model="claude-3"), "MODEL_NOT_ALLOWED", "refused, not counted")
    verdict(api.verify(k["key"], model="claude-3"), "MODEL_NOT_ALLOWED", "refused again")
    verdict(api.verify(k["key"], model="gpt-4"), "VALID", "rpm_limit 1: refusals did not count")
    verdict(api.verify(k["key"], model="gpt-4"), "RATE_LIMITED", "rpm_limit 1 used", "rpm_limit")

    # BUDGET_EXCEEDED comes before RATE_LIMITED
    k = gen(api, rpm_limit=1, max_budget=1)
    verdict(api.verify(k["key"]), "VALID", "rpm_limit 1 and max_budget 1")
    api.usage(k["key"], cost=1)
    verdict(api.verify(k["key"]), "BUDGET_EXCEEDED", "both exceeded: BUDGET_EXCEEDED first",
            "max_budget")

    # tpm_limit: tokens reported by /key/usage
    k = gen(api, tpm_limit=100)
    verdict(api.verify(k["key"]), "VALID", "tpm_limit 100, no tokens yet")
    api.usage(k["key"], prompt_tokens=30, completion_tokens=20)
    a = verdict(api.verify(k["key"], dry_run=True), "VALID", "tpm_limit 100, 50 used")
    e = limit_entry(a, "tpm_limit")
    tap.ok(e.get("limit") == 100 and e.get("used") == 50 and e.get("remaining") == 50,
           "usage's prompt + completion tokens are in the tpm window (used 50)", a.get("limits"))
    verdict(api.verify(k["key"], expected_tokens=50), "VALID",
            "50 used + 50 expected = 100: not over")
    a = verdict(api.verify(k["key"], expected_tokens=51), "RATE_LIMITED",
                "50 used + 51 expected > 100", "tpm_limit")
    retry_to_minute(a, "tpm_limit")
    api.usage(k["key"], total_tokens=50)
    a = verdict(api.verify(k["key"]), "RATE_LIMITED", "total_tokens 50 more: 100 used >= 100",
                "tpm_limit")
    tap.eq(limit_entry(a, "tpm_limit").get("used"), 100, "total_tokens counted into tpm")

    # per model
    k = gen(api, model_rpm_limit={"gpt-4": 2})
    verdict(api.verify(k["key"], model="gpt-4"), "VALID", "model_rpm_limit gpt-4 2: 1")
    verdict(api.verify(k["key"], model="gpt-4"), "VALID", "model_rpm_limit gpt-4 2: 2")
    a = verdict(api.verify(k["key"], model="gpt-4"), "RATE_LIMITED", "model_rpm_limit gpt-4 2: 3",
                "model_rpm_limit")
    retry_to_minute(a, "model_rpm_limit")
    verdict(api.verify(k["key"], model="claude-3"), "VALID", "model_rpm_limit: another model")
    k = gen(api, model_tpm_limit={"gpt-4": 100})
    api.usage(k["key"], model="gpt-4", total_tokens=100)
    api.usage(k["key"], model="claude-3", total_tokens=1000)
    a = verdict(api.verify(k["key"], model="gpt-4"), "RATE_LIMITED",
                "model_tpm_limit gpt-4 100: 100 used", "model_tpm_limit")
    tap.ok(isinstance(a.get("retry_after"), int), "model_tpm_limit: retry_after", a)
    verdict(api.verify(k["key"], model="claude-3"), "VALID", "model_tpm_limit: another model")

    # the team's windows and slots, shared by its keys
    tid = team(api, rpm_limit=2)
    ka, kb = gen(api, team_id=tid), gen(api, team_id=tid)
    verdict(api.verify(ka["key"]), "VALID", "team rpm_limit 2: key a")
    verdict(api.verify(kb["key"]), "VALID", "team rpm_limit 2: key b")
    verdict(api.verify(ka["key"]), "RATE_LIMITED", "team rpm_limit 2: a third by either key",
            "team_rpm_limit")
    tid = team(api, tpm_limit=100)
    ka, kb = gen(api, team_id=tid), gen(api, team_id=tid)
    api.usage(ka["key"], total_tokens=60)
    api.usage(kb["key"], total_tokens=40)
    verdict(api.verify(kb["key"]), "RATE_LIMITED", "team tpm_limit 100: 60 + 40 by two keys",
            "team_tpm_limit")
    tid = team(api, max_parallel_requests=1)
    ka, kb = gen(api, team_id=tid), gen(api, team_id=tid)
    verdict(api.verify(ka["key"], request_id="tp-1"), "VALID", "team max_parallel 1: key a")
    verdict(api.verify(kb["key"], request_id="tp-2"), "RATE_LIMITED",
            "team max_parallel 1: key b waits", "team_max_parallel_requests")
    api.usage(ka["key"], request_id="tp-1")
    verdict(api.verify(kb["key"], request_id="tp-3"), "VALID", "team slot settled: key b")
    api.usage(kb["key"], request_id="tp-3")


def dry_run(api):
    window_guard(5)
    k = gen(api, rpm_limit=1)
    for i in range(3):
        verdict(api.verify(k["key"], dry_run=True), "VALID", "dry run %d of an rpm_limit 1 key"
                % (i + 1))
    verdict(api.verify(k["key"]), "VALID", "dry runs counted nothing: a real one")
    verdict(api.verify(k["key"]), "RATE_LIMITED", "the real one counted", "rpm_limit")
    verdict(api.verify(k["key"], dry_run=True), "RATE_LIMITED", "a dry run sees the limit",
            "rpm_limit")
    k = gen(api, max_budget=1, max_parallel_requests=1)
    for i in range(2):
        a = verdict(api.verify(k["key"], dry_run=True, expected_cost=5, request_id="dry-%d" % i),
                    "VALID", "dry run %d with expected_cost 5 of max_budget 1" % (i + 1))
        tap.ok(close(a.get("reserved"), 0), "dry run: nothing reserved", a)
    verdict(api.verify(k["key"], request_id="real-1"), "VALID",
            "dry runs took no parallel slot")


def callers(api):
    k = gen(api)
    verdict(api.verify(k["key"]), "VALID", "the master key may verify")
    _, admin_key = user(api, role="proxy_admin")
    verdict(api.verify(k["key"], who=admin_key), "VALID", "a proxy_admin's key may verify")
    gw = gen(api, permissions={"verify_keys": True})
    verdict(api.verify(k["key"], who=gw["key"]), "VALID",
            "a key with permissions.verify_keys may verify")
    r = api.usage(k["key"], who=gw["key"], cost=0)
    tap.eq(r.status, 200, "a key with permissions.verify_keys may report usage")
    r = api.usage(k["key"], who=admin_key, cost=0)
    tap.eq(r.status, 200, "a proxy_admin's key may report usage")
    _, iu_key = user(api, role="internal_user")
    error_of(api.verify(k["key"], who=iu_key), 403, "an internal_user's key verifying")
    error_of(api.usage(k["key"], who=iu_key, cost=1), 403, "an internal_user's key reporting")
    _, viewer = user(api, role="proxy_admin_viewer")
    error_of(api.verify(k["key"], who=viewer), 403, "a proxy_admin_viewer's key verifying")
    plain = gen(api)
    error_of(api.verify(k["key"], who=plain["key"]), 403, "a key without a user verifying")
    error_of(api.verify(plain["key"], who=plain["key"]), 403, "a key verifying itself")
    nope = gen(api, permissions={"verify_keys": False})
    error_of(api.verify(k["key"], who=nope["key"]), 403, "permissions.verify_keys false")
    error_of(api.verify(k["key"], who=NOBODY), 401, "verify with no credential")
    error_of(api.usage(k["key"], who=NOBODY, cost=1), 401, "usage with no credential")
    error_of(api.verify(k["key"], who="sk-no-such-caller-0001"), 401,
             "verify with an unknown credential")
    error_of(api.verify(k["key"], who=gw["token"]), 401, "a gateway key's hash is no credential")
    tap.ok(close(spend_of(api, k["key"]), 0), "refused usage reports spent nothing",
           record(api, k["key"]))

    error_of(api.post("/key/verify", {"model": "gpt-4"}), 422, "verify without key", "key")
    error_of(api.post("/key/verify", {"key": k["key"], "modle": "gpt-4"}), 422,
             "verify with an unknown field", "modle")
    error_of(api.post("/key/verify", {"key": k["key"], "expected_cost": -1}), 422,
             "verify with a negative expected_cost", "expected_cost")
    error_of(api.post("/key/verify", {"key": ""}), 422, "verify with an empty key", "key")
    error_of(api.post("/key/usage", {"cost": 1}), 422, "usage without key", "key")
    error_of(api.post("/key/usage", {"key": k["key"], "costs": 1}), 422,
             "usage with an unknown field", "costs")
    error_of(api.post("/key/usage", {"key": k["key"], "cost": -1}), 422,
             "usage with a negative cost", "cost")


def blocking_race(api):
    """A block is seen by the very next verify, whichever worker answers it."""
    k = gen(api)
    for i in range(6):
        setup_ok(api.post("/key/block", {"key": k["key"]}), "block")
        verdict(api.verify(k["key"]), "BLOCKED", "round %d: blocked, the very next verify" % i)
        setup_ok(api.post("/key/unblock", {"key": k["key"]}), "unblock")
        verdict(api.verify(k["key"]), "VALID", "round %d: unblocked, the very next verify" % i)


def usage(api):
    tid = team(api)
    uid, _ = user(api)
    k = gen(api, team_id=tid, user_id=uid, max_budget=100)
    r = api.usage(k["key"], cost=0.25, request_id="u-1")
    a = J(r)
    tap.ok(r.status == 200 and a.get("recorded") is True and a.get("duplicate") is False and
           a.get("token") == k["token"] and close(a.get("spend"), 0.25) and
           close(a.get("team_spend"), 0.25) and close(a.get("user_spend"), 0.25) and
           a.get("max_budget") == 100,
           "usage: recorded, the key's, team's and user's spend", repr(r))
    r = api.usage(k["key"], cost=0.25, request_id="u-1")
    a = J(r)
    tap.ok(r.status == 200 and a.get("duplicate") is True and a.get("recorded") is False and
           close(a.get("spend"), 0.25), "usage: the same request_id again is counted once",
           repr(r))
    r = api.usage(k["token"], cost=0.5)
    tap.ok(r.status == 200 and close(J(r).get("spend"), 0.75), "usage takes the key's hash",
           repr(r))
    api.usage(k["key"], cost=0.125)
    api.usage(k["key"], cost=0.125)
    tap.ok(close(spend_of(api, k["key"]), 1.0),
           "usage without request_id counts each report; /key/info spend 1.0",
           record(api, k["key"]))
    r = api.get("/team/info?team_id=" + q(tid))
    tap.ok(close((J(r).get("team_info") or {}).get("spend"), 1.0),
           "/team/info: the team's spend is 1.0", repr(r))
    r = api.get("/user/info?user_id=" + q(uid))
    tap.ok(close((J(r).get("user_info") or {}).get("spend"), 1.0),
           "/user/info: the user's spend is 1.0", repr(r))
    r = api.usage(k["key"], request_id="u-none")
    tap.ok(r.status == 200 and J(r).get("recorded") is True and close(J(r).get("spend"), 1.0),
           "usage without cost records nothing more", repr(r))
    e = error_of(api.usage("sk-no-such-key-usage-0001", cost=1), 404, "usage of an unknown key",
                 "key")
    tap.ok("sk-no-such-key-usage-0001" not in json.dumps(e), "the 404 does not echo the key")
    error_of(api.usage(sha("sk-no-such-key-usage-0002"), cost=1), 404,
             "usage of an unknown hash", "key")

    # a request_id names a request of one key: another key's report does not settle it
    k1, k2 = gen(api, max_parallel_requests=1), gen(api)
    verdict(api.verify(k1["key"], request_id="shared-rid-1"), "VALID", "key 1 takes a slot")
    api.usage(k2["key"], request_id="shared-rid-1", cost=0)
    verdict(api.verify(k1["key"], request_id="shared-rid-2"), "RATE_LIMITED",
            "another key's usage with the same request_id does not return key 1's slot",
            "max_parallel_requests")
    k3, k4 = gen(api, max_parallel_requests=1), gen(api, max_parallel_requests=1)
    verdict(api.verify(k3["key"], request_id="shared-rid-3"), "VALID", "key 3 takes a slot")
    verdict(api.verify(k4["key"], request_id="shared-rid-3"), "VALID",
            "key 4 takes a slot under the same request_id")
    api.usage(k3["key"], request_id="shared-rid-3", cost=0)
    verdict(api.verify(k3["key"], request_id="shared-rid-4"), "VALID",
            "key 3's own usage returned key 3's slot")
    verdict(api.verify(k4["key"], request_id="shared-rid-5"), "RATE_LIMITED",
            "and left key 4's slot held", "max_parallel_requests")

    window_guard(5)
    k = gen(api, tpm_limit=1000)
    api.usage(k["key"], prompt_tokens=100, completion_tokens=23, request_id="tok-1")
    api.usage(k["key"], prompt_tokens=100, completion_tokens=23, request_id="tok-1")
    api.usage(k["key"], total_tokens=7)
    a = verdict(api.verify(k["key"], dry_run=True), "VALID", "tpm 130 of 1000")
    tap.eq(limit_entry(a, "tpm_limit").get("used"), 130,
           "usage tokens into tpm: 100 + 23 once (duplicate not counted), then total 7")


def concurrent_budget(api):
    """64 concurrent verify(expected_cost=c) + usage(cost=c) against max_budget B."""
    B, c, n = 1.0, 0.3, 64
    k = gen(api, max_budget=B)

    def one(i):
        rid = "race-%d" % i
        r = api.verify(k["key"], expected_cost=c, request_id=rid)
        code = J(r).get("code")
        if code == "VALID":
            u = api.usage(k["key"], cost=c, request_id=rid)
            return code, u.status
        return code or r.status, None
    results = concurrently(n, one)
    valid = sum(1 for code, _ in results if code == "VALID")
    refused = [code for code, _ in results if code != "VALID"]
    spend = spend_of(api, k["key"])
    tap.ok(isinstance(spend, (int, float)) and B - 1e-9 <= spend <= B + c + 1e-9,
           "64 concurrent verify+usage (c=%g) against max_budget %g: %d VALID, final spend "
           "%r within [B, B + c]" % (c, B, valid, spend),
           {"spend": spend, "valid": valid, "refused": sorted(set(map(str, refused)))})
    tap.ok(all(s == 200 for code, s in results if code == "VALID"),
           "every admitted request's usage was recorded", results)
    tap.ok(set(refused) <= {"BUDGET_EXCEEDED"}, "the others were BUDGET_EXCEEDED",
           sorted(set(map(str, refused))))
    tap.ok(close(spend, valid * c), "the spend is the admitted requests' cost (%d x %g)" %
           (valid, c), spend)


def concurrent_rpm(api):
    """rpm_limit N admits exactly N across every worker."""
    n = 10
    window_guard(10)
    k = gen(api, rpm_limit=n)
    answers = concurrently(3 * n, lambda i: J(api.verify(k["key"])))
    codes = [a.get("code") for a in answers]
    tap.eq(codes.count("VALID"), n, "%d concurrent verifies, rpm_limit %d: exactly %d VALID" %
           (3 * n, n, n))
    limited = [a for a in answers if a.get("code") == "RATE_LIMITED"]
    tap.ok(len(limited) == 2 * n and all(a.get("limit") == "rpm_limit" for a in limited),
           "the other %d are RATE_LIMITED by rpm_limit" % (2 * n),
           sorted(set((a.get("code"), a.get("limit")) for a in answers), key=str))


# --- the AUTHORIZER role --------------------------------------------------------------------

def fcgi_client(api):
    """tests/lib/fcgi.py itself: name-value lengths of 1 and 4 bytes, and a RESPONDER request
    answered as lighttpd would get it."""
    params = {"A": "b", "LONG_" + "N" * 200: "v" * 70000, "EMPTY": ""}
    tap.eq(fcgi.decode_params(fcgi.encode_params(params)), params,
           "fcgi.py: name-value pairs with 1- and 4-byte lengths round-trip")
    res = fcgi.respond(api.srv, "GET", "/health", {"X-Long": "x" * 300})
    tap.ok(res.status == 200 and json.loads(res.body).get("status") == "healthy" and
           res.headers.get("content-type", "").startswith("application/json"),
           "fcgi.py: RESPONDER GET /health straight to keywarden's socket", repr(res))
    k = gen(api)
    res = fcgi.respond(api.srv, "GET", "/key/info", {"x-api-key": k["key"]})
    tap.ok(res.status == 200 and json.loads(res.body).get("info", {}).get("token") == k["token"],
           "fcgi.py: RESPONDER with a credential header", repr(res))


def authorizer(api):
    tid = team(api)
    uid, _ = user(api)
    k = gen(api, team_id=tid, user_id=uid, models=["gpt-4"])
    bearer = {"Authorization": "Bearer " + k["key"]}

    res = api.authorize("/v1/chat/completions?api-version=1", bearer)
    tap.eq(res.status, 200, "AUTHORIZER: a good key: 200")
    h = res.headers
    tap.ok(h.get("variable-kw-key-hash") == k["token"] and h.get("variable-kw-user-id") == uid and
           h.get("variable-kw-team-id") == tid,
           "AUTHORIZER: Variable-KW-Key-Hash (the token), -User-Id, -Team-Id", repr(res))
    for header in ("x-api-key", "api-key", "x-litellm-api-key"):
        res = api.authorize("/v1/chat/completions", {header: k["key"]})
        tap.ok(res.status == 200 and res.headers.get("variable-kw-key-hash") == k["token"],
               "AUTHORIZER: the key from %s" % header, repr(res))
    res = api.authorize("/v1/chat/completions", dict(bearer, **{"x-request-id": "authz-rid-1"}))
    tap.ok(res.status == 200 and res.headers.get("variable-kw-request-id") == "authz-rid-1",
           "AUTHORIZER: x-request-id names the lease (Variable-KW-Request-Id)", repr(res))
    api.usage(k["key"], request_id="authz-rid-1")

    def refused(res, status, name):
        try:
            e = json.loads(res.body).get("error")
        except (ValueError, AttributeError):
            e = None
        tap.ok(res.status == status and isinstance(e, dict) and e.get("code") == str(status) and
               isinstance(e.get("message"), str) and "type" in e and "param" in e,
               "AUTHORIZER: %s: %d in the LiteLLM envelope" % (name, status), repr(res))
        return e or {}

    refused(api.authorize("/v1/chat/completions", {}), 401, "no key")
    e = refused(api.authorize("/v1/chat/completions",
                              {"Authorization": "Bearer sk-authz-unknown-0001"}), 401,
                "an unknown key")
    tap.ok("sk-authz-unknown-0001" not in json.dumps(e), "AUTHORIZER: the 401 does not echo it")
    refused(api.authorize("/v1/chat/completions", {"Authorization": "Bearer " + k["token"]}),
            401, "the key's hash")
    kb = gen(api)
    setup_ok(api.post("/key/block", {"key": kb["key"]}), "block")
    refused(api.authorize("/v1/chat/completions", {"x-api-key": kb["key"]}), 401, "blocked key")

    # models from the path and from x-model; a refusal is 401, as LiteLLM's
    # _can_object_call_model answers it
    for uri, hdrs, status, name in (
            ("/openai/deployments/gpt-4/chat/completions", {}, 200, "deployment gpt-4 allowed"),
            ("/openai/deployments/claude-3/chat/completions", {}, 401,
             "deployment claude-3 not allowed"),
            ("/deployments/claude-3/chat/completions", {}, 401,
             "/deployments/claude-3 not allowed"),
            ("/v1/chat/completions", {"x-model": "gpt-4"}, 200, "x-model gpt-4"),
            ("/v1/chat/completions", {"x-model": "claude-3"}, 401, "x-model claude-3")):
        res = api.authorize(uri, dict(bearer, **hdrs))
        if status == 200:
            tap.ok(res.status == 200, "AUTHORIZER: " + name + ": 200", repr(res))
        else:
            refused(res, status, name)
    # the route is REQUEST_URI's path, without the query
    kroute = gen(api, allowed_routes=["/v1/chat/completions"])
    for uri, status, name in (
            ("/v1/chat/completions?api-version=2024-01-01", 200, "an allowed route with a query"),
            ("/v1/embeddings", 403, "a route outside allowed_routes"),
            ("/v1/embeddings?x=/v1/chat/completions", 403, "the query is not the route")):
        res = api.authorize(uri, {"x-api-key": kroute["key"]})
        if status == 200:
            tap.ok(res.status == 200, "AUTHORIZER: " + name + ": 200", repr(res))
        else:
            refused(res, status, name)

    window_guard(5)
    # each request reserves the default expected tokens (1000) until its usage is reported,
    # and these never are: a tpm_limit well above that leaves rpm_limit the one that refuses
    kr = gen(api, rpm_limit=2, tpm_limit=100000)
    for i in range(2):
        tap.eq(api.authorize("/v1/chat/completions", {"x-api-key": kr["key"]}).status, 200,
               "AUTHORIZER: rpm_limit 2, request %d" % (i + 1))
    res = api.authorize("/v1/chat/completions", {"x-api-key": kr["key"]})
    refused(res, 429, "rpm_limit 2 exceeded (the authorizer counts like a verify)")
    h = res.headers
    ra = h.get("retry-after", "")
    tap.ok(ra.isdigit() and 1 <= int(ra) <= 60, "AUTHORIZER 429: Retry-After in seconds", h)
    tap.ok(h.get("x-ratelimit-limit-requests") == "2" and
           h.get("x-ratelimit-remaining-requests") == "0" and "x-ratelimit-reset-requests" in h,
           "AUTHORIZER 429: x-ratelimit-limit-requests 2, -remaining-requests 0, "
           "-reset-requests", h)
    tap.ok(h.get("x-ratelimit-limit-tokens") == "100000" and
           "x-ratelimit-remaining-tokens" in h and "x-ratelimit-reset-tokens" in h,
           "AUTHORIZER 429: the tokens headers for a key with tpm_limit", h)
    verdict(api.verify(kr["key"], dry_run=True), "RATE_LIMITED",
            "the authorizer's requests are in the window /key/verify sees", "rpm_limit")
    kr = gen(api, rpm_limit=1)
    api.authorize("/v1/chat/completions", {"x-api-key": kr["key"]})
    res = api.authorize("/v1/chat/completions", {"x-api-key": kr["key"]})
    tap.ok(res.status == 429 and "x-ratelimit-limit-requests" in res.headers and
           "x-ratelimit-limit-tokens" not in res.headers,
           "AUTHORIZER 429: only the headers of the limits the key has (no tpm_limit)", repr(res))

    kp = gen(api, max_parallel_requests=1)
    res = api.authorize("/v1/chat/completions", {"x-api-key": kp["key"]})
    rid = res.headers.get("variable-kw-request-id")
    tap.ok(res.status == 200 and rid, "AUTHORIZER: max_parallel_requests 1: a lease is named",
           res)
    refused(api.authorize("/v1/chat/completions", {"x-api-key": kp["key"]}), 429,
            "max_parallel_requests 1, one in flight")
    api.usage(kp["key"], request_id=rid or "none")
    tap.eq(api.authorize("/v1/chat/completions", {"x-api-key": kp["key"]}).status, 200,
           "AUTHORIZER: usage with the lease's request id frees the slot")

    kx = gen(api, max_budget=1, spend=1)
    # 400, as LiteLLM's proxy answers a BudgetExceededError (budget_exceeded)
    refused(api.authorize("/v1/chat/completions", {"x-api-key": kx["key"]}), 400,
            "budget exceeded")
    t_blk = team(api)
    kt = gen(api, team_id=t_blk)
    setup_ok(api.post("/team/update", {"team_id": t_blk, "blocked": True}), "team block")
    refused(api.authorize("/v1/chat/completions", {"x-api-key": kt["key"]}), 401,
            "a blocked team's key")
    ke = gen(api, models=["gpt-4"], spend=1, max_budget=1)
    refused(api.authorize("/openai/deployments/claude-3/chat/completions",
                          {"x-api-key": ke["key"]}), 401,
            "model refused before budget (401, not 400)")


# --- hygiene ----------------------------------------------------------------------------

def hygiene(srv):
    bad = ["%s -> %d: %s" % (w, s, "; ".join(p)) for w, s, p, _ in ANSWERS if p]
    tap.ok(not bad, "all %d verify and usage answers are as the spec documents" %
           sum(1 for w, _, _, _ in ANSWERS if not w.startswith("AUTHORIZER")),
           "\n".join(bad[:20]))
    fives = ["%s -> %d" % (w, s) for w, s, _, _ in ANSWERS if s >= 500]
    tap.ok(not fives, "no verify, usage or authorizer answer is a 5xx (%d answers)" %
           len(ANSWERS), "\n".join(fives[:20]))
    leaked = [(w, k[:12]) for w, _, _, text in ANSWERS for k in PLAINTEXTS if k in text]
    tap.ok(not leaked, "no verify, usage or authorizer answer (body or header) holds a plaintext "
           "key (%d keys)" % len(PLAINTEXTS), leaked[:10])
    probes = [p for p in PLAINTEXTS] + ["sk-authz-unknown-0001", "sk-no-such-key-verify-0001",
                                        "sk-no-such-key-usage-0001", "sk-no-such-caller-0001"]
    log = srv.read_log()
    tap.ok(not [k for k in probes if k in log], "the server log holds no plaintext key",
           [k[:12] for k in probes if k in log][:10])


def main():
    with Server(workers=3, env={"KEYWARDEN_LEASE_SECS": str(LEASE_SECS),
                                "KEYWARDEN_LOG_LEVEL": "debug"}) as srv:
        api = Api(srv)
        r = api.post("/key/verify", {"key": "sk-probe-0001"})
        if r.status == 404 and b"no such route" in r.body:
            tap.bail("POST /key/verify is not routed by this build")
        tap.ok(len(srv.workers()) >= 2, "the pool runs several workers (%d)" % len(srv.workers()))
        timed = [start_expiry(api), start_lease(api), start_budget_reset(api)]
        codes(api)
        models(api)
        routes(api)
        budgets(api)
        callers(api)
        blocking_race(api)
        usage(api)
        fcgi_client(api)
        authorizer(api)
        rates(api)
        dry_run(api)
        concurrent_budget(api)
        concurrent_rpm(api)
        for deadline, finish in sorted(timed, key=lambda t: t[0]):
            wait = deadline - time.time()
            if wait > 0:
                time.sleep(wait)
            finish()
        hygiene(srv)
    tap.ok(not SETUP_FAILURES, "every key, team and user the tests needed was made",
           "\n".join(SETUP_FAILURES[:20]))


tap.run(main)
