#!/usr/bin/python3
"""contract_keys.t: the LiteLLM /key/* operations other than /key/generate, and the audit
trail they write, through lighttpd.

Covers: a key named by plaintext or hash everywhere (and a hash never a credential); the four
credential headers; roles (internal_user, internal_user_viewer, proxy_admin_viewer,
proxy_admin, a key without a user) and team rules (membership, team admins, the team's
models and budget); /key/info and /v2/key/info; /key/update (only what is sent, nulls,
duration, budget_duration); /key/bulk_update; all-or-nothing /key/delete; /key/list and
/key/aliases paging, filters and sorting (on a fresh server, so counts are exact);
/key/block and /key/unblock; both regenerate routes with new_key and grace periods;
/key/{key}/reset_spend; /key/health; /key/service-account/generate; unique aliases under
races; durations and negative budgets (400, as LiteLLM's handlers refuse them); the audit trail and litellm-changed-by.

Every answer of the run is checked against what the spec documents for it, none may be a
500, and no plaintext key may appear in the audit log, the store or the server log.

Users and teams come from POST /user/new and POST /team/new: when those do not work, the
setup assertions say so and the role and team assertions fail with them."""
import glob
import hashlib
import itertools
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import contract  # noqa: E402
from kwserver import Server  # noqa: E402

SPEC = contract.load_spec()
OPS = contract.operations(SPEC)
MASTER = object()          # "who" for the master key
PLAINTEXTS = set()         # every plaintext key this test made or saw
SETUP_FAILURES = []        # setup requests that did not do what the tests below rely on
_serial = itertools.count(1)


# --- helpers ---------------------------------------------------------------------------

def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def uniq(prefix):
    """A name no other part of this test uses."""
    return "%s-%d" % (prefix, next(_serial))


def J(r):
    """The answer's JSON object, or {} when it is not one."""
    return r.json if isinstance(r.json, dict) else {}


def q(s):
    return urllib.parse.quote(s, safe="")


def pct_all(s):
    """s with every character percent-encoded, to prove the path is decoded."""
    return "".join("%%%02X" % b for b in s.encode())


def ts(s):
    """Seconds since the epoch of an RFC 3339 time, or None."""
    if not isinstance(s, str):
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def op_of(method, path):
    """The operationId the spec routes method and path to."""
    path = path.split("?", 1)[0]
    for op_id, (m, template, _) in OPS.items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if m == method and re.match(pattern, path):
            return op_id
    return None


def remember(node):
    """Adds every plaintext key in an answer ("key": "sk-...") to PLAINTEXTS."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("key", "new_key") and isinstance(v, str) and v.startswith("sk-"):
                PLAINTEXTS.add(v)
            remember(v)
    elif isinstance(node, list):
        for v in node:
            remember(v)


class Api:
    """One server as a LiteLLM client sees it; every request of the test goes through call()."""

    def __init__(self, srv):
        self.srv = srv
        self.answers = []   # (op_id, method, path, status, problems)
        PLAINTEXTS.add(srv.master_key)

    def credential(self, who):
        if who is MASTER:
            return self.srv.master_key
        if isinstance(who, dict):
            return who.get("key")
        return who

    def call(self, method, path, body=None, who=MASTER, headers=None):
        hdrs = {}
        cred = self.credential(who)
        if cred:
            hdrs["Authorization"] = "Bearer " + cred
        hdrs.update(headers or {})
        if isinstance(body, dict):
            remember(body)
        r = self.srv.request(method, path, body=body, headers=hdrs)
        remember(r.json)
        op = op_of(method, path)
        problems = contract.check_response(SPEC, OPS[op], r) if op else ["no such operation"]
        self.answers.append((op, method, path, r.status, problems))
        return r

    def get(self, path, who=MASTER, **kw):
        return self.call("GET", path, who=who, **kw)

    def post(self, path, body=None, who=MASTER, **kw):
        return self.call("POST", path, body, who=who, **kw)


def error_of(r, status, name, param=None):
    """Asserts a LiteLLM error envelope with this status (and param naming the field)."""
    tap.eq(r.status, status, name + ": %d" % status)
    e = J(r).get("error")
    tap.ok(isinstance(e, dict) and e.get("code") == str(status) and
           isinstance(e.get("message"), str) and "type" in e and "param" in e,
           name + ": LiteLLM envelope", r.body[:500])
    if param is not None:
        tap.eq((e or {}).get("param"), param, name + ": names " + param)
    return e or {}


def status_is(r, status, name):
    return tap.ok(r.status == status, name + ": %d" % status,
                  "got %d: %s" % (r.status, r.body[:500]))


def gen(api, who=MASTER, headers=None, **fields):
    """A new key for the tests to work on: {"key", "token", ...}.  Not an assertion; a
    failure is kept in SETUP_FAILURES and a key that exists nowhere stands in for it."""
    r = api.post("/key/generate", fields, who=who, headers=headers)
    k = J(r)
    if r.status != 200 or not str(k.get("key", "")).startswith("sk-"):
        SETUP_FAILURES.append("POST /key/generate %s as %s -> %r" % (
            json.dumps(fields), "master" if who is MASTER else "a user", r))
        fake = "sk-setup-failed-%d" % next(_serial)
        k = {"key": fake, "token": sha(fake)}
    return k


def record(api, ref):
    """The stored record of a key, read as the master key ({} when it cannot be read)."""
    return J(api.get("/key/info?key=" + q(ref))).get("info") or {}


def list_tokens(api, query, who=MASTER):
    r = api.get("/key/list?" + query, who=who)
    keys = J(r).get("keys") or []
    return r, [k.get("token") if isinstance(k, dict) else k for k in keys]


def is_sorted(values, desc=False):
    return all((a >= b) if desc else (a <= b) for a, b in zip(values, values[1:]))


def next_reset(duration, now):
    """LiteLLM's budget_reset_at for budget_duration set at now (seconds)."""
    t = datetime.fromtimestamp(now, timezone.utc)
    midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if duration == "1d":
        return (midnight + timedelta(days=1)).timestamp()
    if duration in ("7d", "1w"):
        return (midnight + timedelta(days=7 - t.weekday())).timestamp()
    if duration in ("30d", "1mo"):
        first = midnight.replace(day=1)
        return (first.replace(year=first.year + 1, month=1) if first.month == 12 else
                first.replace(month=first.month + 1)).timestamp()
    n, unit = int(duration[:-1]), duration[-1]
    return now + n * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]


# --- the people and teams the role rules need -------------------------------------------

ROLES = {"alice": "internal_user", "bob": "internal_user", "tina": "internal_user",
         "vera": "internal_user_viewer", "pat": "proxy_admin_viewer", "ada": "proxy_admin"}


def setup_people(api):
    """alice, bob and tina are internal users; tina admins team t-red, alice is its member,
    bob is not; vera is an internal_user_viewer, pat a proxy_admin_viewer, ada a proxy_admin."""
    people = {}
    for name, role in ROLES.items():
        r = api.post("/user/new", {"user_id": name, "user_role": role})
        a = J(r)
        tap.ok(r.status == 200 and a.get("user_id") == name and
               str(a.get("key", "")).startswith("sk-"),
               "setup: POST /user/new makes %s, %s, with a key" % (name, role), repr(r))
        people[name] = {"id": name, "key": a.get("key"), "token": a.get("token") or
                        (sha(a["key"]) if a.get("key") else None)}
    r = api.post("/team/new", {
        "team_id": "t-red", "models": ["gpt-4", "claude-3"], "max_budget": 50,
        "members_with_roles": [{"user_id": "tina", "role": "admin"},
                               {"user_id": "alice", "role": "user"}]})
    tap.ok(r.status == 200 and J(r).get("team_id") == "t-red",
           "setup: POST /team/new makes t-red (tina admin, alice member, gpt-4 and claude-3, "
           "max_budget 50)", repr(r))
    return people


# --- key references and credentials -----------------------------------------------------

def references(api):
    k = gen(api, key_alias=uniq("ref"), models=["gpt-4"])
    plain, token = k["key"], k["token"]
    for form, ref in (("plaintext", plain), ("hash", token)):
        r = api.get("/key/info?key=" + q(ref))
        tap.ok(r.status == 200 and J(r).get("key") == ref and
               (J(r).get("info") or {}).get("token") == token,
               "GET /key/info?key= takes the %s and answers it as asked" % form, repr(r))
        r = api.post("/key/update", {"key": ref, "metadata": {"via": form}})
        tap.ok(r.status == 200 and J(r).get("key") == ref and J(r).get("token") == token,
               "POST /key/update takes the %s and echoes it" % form, repr(r))
    tap.eq(record(api, plain).get("metadata"), {"via": "hash"},
           "both updates reached the one record")
    r = api.get("/key/info", who=token)
    error_of(r, 401, "a key's hash is not a credential (Authorization)")
    r = api.post("/key/health", who=None, headers={"x-litellm-api-key": token})
    error_of(r, 401, "a key's hash is not a credential (x-litellm-api-key)")
    r = api.get("/key/info?key=" + q(plain), who=token)
    error_of(r, 401, "a hash as a credential is 401 even when ?key= names a real key")


def credentials(api, people):
    alice = people["alice"]
    for header in ("x-litellm-api-key", "API-Key", "x-api-key"):
        r = api.get("/key/info", who=None, headers={header: alice["key"] or ""})
        tap.ok(r.status == 200 and (J(r).get("info") or {}).get("user_id") == "alice",
               "%s identifies the caller" % header, repr(r))
    r = api.get("/key/info", who=None)
    error_of(r, 401, "no credential")
    r = api.get("/key/info", who="sk-no-such-key-000000")
    error_of(r, 401, "an unknown credential")


# --- /key/info and /v2/key/info -------------------------------------------------------------

def key_info(api, people):
    alice, bob = people["alice"], people["bob"]
    a = gen(api, user_id="alice", key_alias=uniq("info-a"))
    b = gen(api, user_id="bob", key_alias=uniq("info-b"))

    r = api.get("/key/info?key=" + a["token"])
    info = J(r).get("info") or {}
    tap.ok(r.status == 200 and info.get("token") == a["token"] and
           info.get("user_id") == "alice", "GET /key/info?key=: the record", repr(r))
    tap.ok(a["key"] not in r.body.decode(errors="replace"),
           "GET /key/info by hash: the plaintext key appears nowhere in the answer")

    r = api.get("/key/info", who=alice)
    tap.ok(r.status == 200 and (J(r).get("info") or {}).get("token") == alice["token"],
           "GET /key/info without ?key=: the caller's own key", repr(r))
    tap.ok(alice["key"] is None or alice["key"] not in r.body.decode(errors="replace"),
           "... without echoing the credential")

    error_of(api.get("/key/info?key=sk-never-made-0000000"), 404, "an unknown plaintext key")
    error_of(api.get("/key/info?key=" + "0" * 64), 404, "an unknown hash")
    error_of(api.get("/key/info?key=sk-never-made-0000000", who=alice), 404,
             "an internal user asking for an unknown key: 404 before 403")
    error_of(api.get("/key/info?key=" + q(b["key"]), who=alice), 403,
             "an internal user asking for another user's key")
    status_is(api.get("/key/info?key=" + q(a["key"]), who=alice), 200,
              "an internal user asking for their own key")
    status_is(api.get("/key/info?key=" + q(b["key"]), who=people["pat"]), 200,
              "a proxy_admin_viewer reads any key")
    status_is(api.get("/key/info?key=" + q(a["key"]), who=people["vera"]), 403,
              "an internal_user_viewer does not read another user's key")

    r = api.post("/v2/key/info", {"keys": [b["key"], a["token"]]})
    body = J(r)
    tap.ok(r.status == 200 and body.get("key") == [b["key"], a["token"]] and
           [i.get("token") for i in body.get("info") or []] == [b["token"], a["token"]],
           "POST /v2/key/info: the records in the order asked, keys as sent", repr(r))
    tap.ok(all(a["key"] not in json.dumps(i) and b["key"] not in json.dumps(i)
               for i in body.get("info") or []), "POST /v2/key/info: no plaintext in a record")
    error_of(api.post("/v2/key/info", {"keys": [b["token"]]}, who=alice), 403,
             "POST /v2/key/info: an internal user asking for another user's key")
    error_of(api.post("/v2/key/info", {"keys": [a["token"]]}, who=None), 401,
             "POST /v2/key/info without a credential")


# --- /key/update ----------------------------------------------------------------------------

def update(api):
    alias = uniq("upd")
    k = gen(api, key_alias=alias, models=["gpt-4"], max_budget=10, tpm_limit=100,
            metadata={"app": "a"}, tags=["prod"])
    plain, token = k["key"], k["token"]

    r = api.post("/key/update", {"key": plain, "max_budget": 20})
    a = J(r)
    tap.ok(r.status == 200 and a.get("key") == plain and a.get("token") == token and
           a.get("max_budget") == 20, "update: the record with the change, key as sent",
           repr(r))
    rec = record(api, token)
    tap.ok(rec.get("max_budget") == 20 and rec.get("models") == ["gpt-4"] and
           rec.get("tpm_limit") == 100 and rec.get("metadata") == {"app": "a"} and
           rec.get("tags") == ["prod"] and rec.get("key_alias") == alias,
           "update: only the field sent changed", rec)

    r = api.post("/key/update", {"key": plain, "tpm_limit": None, "max_budget": None})
    rec = record(api, token)
    tap.ok(r.status == 200 and rec.get("tpm_limit") is None and
           rec.get("max_budget") is None and rec.get("models") == ["gpt-4"],
           "update: a field sent as null becomes null", [repr(r), rec])

    before = time.time()
    r = api.post("/key/update", {"key": plain, "duration": "1h"})
    exp = ts(J(r).get("expires"))
    tap.ok(r.status == 200 and exp is not None and
           before + 3600 - 2 <= exp <= time.time() + 3600 + 2,
           "update: duration 1h sets expires to about now + 1h", repr(r))
    tap.eq(ts(record(api, token).get("expires")), exp, "update: expires is stored")
    status_is(api.get("/key/info", who=plain), 200, "a key expiring in an hour still works")
    r = api.post("/key/update", {"key": plain, "duration": None})
    tap.ok(r.status == 200 and record(api, token).get("expires") is None,
           "update: duration null: the key never expires", repr(r))

    for duration in ("1d", "7d", "30d", "1mo", "2h"):
        before = time.time()
        r = api.post("/key/update", {"key": token, "budget_duration": duration})
        after = time.time()
        at = ts(J(r).get("budget_reset_at"))
        if duration.endswith("h"):
            good = at is not None and next_reset(duration, before) - 2 <= at <= \
                next_reset(duration, after) + 2
        else:
            good = at in (next_reset(duration, before), next_reset(duration, after))
        tap.ok(r.status == 200 and good and J(r).get("budget_duration") == duration,
               "update: budget_duration %s sets budget_reset_at to LiteLLM's boundary" %
               duration, "%r\nwant %s" % (r, datetime.fromtimestamp(
                   next_reset(duration, before), timezone.utc).isoformat()))

    other = gen(api, key_alias=uniq("upd-other"))
    taken = record(api, other["token"]).get("key_alias") or "missing"
    error_of(api.post("/key/update", {"key": plain, "key_alias": taken}), 400,
             "update to another key's alias", "key_alias")
    tap.eq(record(api, token).get("key_alias"), alias, "... leaves the alias as it was")
    status_is(api.post("/key/update", {"key": plain, "key_alias": alias}), 200,
              "update to the key's own alias")

    error_of(api.post("/key/update", {"key": "sk-never-made-0000001", "max_budget": 1}), 404,
             "update of an unknown plaintext key")
    error_of(api.post("/key/update", {"key": "f" * 64, "max_budget": 1}), 404,
             "update of an unknown hash")
    error_of(api.post("/key/update", {"max_budget": 1}), 422, "update without key", "key")
    r = api.post("/key/update", {"key": plain, "max_budgett": 1})
    tap.ok(r.status == 200 and "max_budgett" not in (J(r) or {}),
           "update with an unknown field: ignored, as LiteLLM's UpdateKeyRequest ignores it",
           repr(r))
    error_of(api.post("/key/update", {"key": plain}, who=None), 401, "update without a credential")


# --- durations and budgets (400: LiteLLM's handlers, not its request models, refuse them) --

def validation(api):
    k = gen(api)
    for field in ("max_budget", "soft_budget", "spend", "temp_budget_increase"):
        error_of(api.post("/key/update", {"key": k["key"], field: -0.01}), 400,
                 "update: negative " + field, field)
    error_of(api.post("/key/update", {"key": k["key"], "model_max_budget": {
        "gpt-4": {"budget_limit": -1}}}), 400, "update: a nested negative budget",
        "model_max_budget.gpt-4.budget_limit")
    for d in ("30s", "15m", "2h", "3d", "2w", "1mo"):
        status_is(api.post("/key/update", {"key": k["key"], "duration": d}), 200,
                  "duration %s is accepted" % d)
    for d in ("1y", "10", "h", "-1h", "1.5h", "1 h", "", "1M", "1mon"):
        error_of(api.post("/key/update", {"key": k["key"], "duration": d}), 400,
                 "duration %r" % d, "duration")
    error_of(api.post("/key/update", {"key": k["key"], "budget_duration": "monthly"}), 400,
             "budget_duration 'monthly'", "budget_duration")
    error_of(api.post("/key/regenerate?key=" + q(k["key"]), {"grace_period": "1 day"}), 400,
             "regenerate: grace_period '1 day'", "grace_period")
    tap.eq(record(api, k["token"]).get("token"), k["token"],
           "a refused regenerate leaves the key as it was")


# --- /key/bulk_update -----------------------------------------------------------------------

def bulk_update(api, people):
    k1_alias = uniq("bulk-1")
    k1 = gen(api, key_alias=k1_alias, max_budget=1)
    k2 = gen(api, key_alias=uniq("bulk-2"))
    k2_alias = record(api, k2["token"]).get("key_alias")
    items = [{"key": k1["key"], "max_budget": 7},
             {"key": "sk-never-made-0000002", "max_budget": 1},
             {"key": k1["token"], "key_alias": k2_alias},
             {"key": k2["token"], "models": ["bulk-model"]}]
    r = api.post("/key/bulk_update", {"keys": items})
    a = J(r)
    ok = a.get("successful_updates") or []
    failed = a.get("failed_updates") or []
    tap.ok(r.status == 200 and a.get("total_requested") == 4,
           "bulk_update: 200 with total_requested", repr(r))
    tap.eq([s.get("key") for s in ok], [k1["key"], k2["token"]],
           "bulk_update: the successes, keys as sent")
    tap.ok(len(ok) == 2 and (ok[0].get("key_info") or {}).get("max_budget") == 7 and
           (ok[1].get("key_info") or {}).get("models") == ["bulk-model"],
           "bulk_update: each success carries the record after it", ok)
    tap.eq([f.get("key") for f in failed], ["sk-never-made-0000002", k1["token"]],
           "bulk_update: the unknown key and the duplicate alias fail")
    tap.ok(len(failed) == 2 and all(isinstance(f.get("failed_reason"), str) and
                                    f["failed_reason"] for f in failed),
           "bulk_update: each failure says why", failed)
    tap.eq(record(api, k2["token"]).get("models"), ["bulk-model"],
           "bulk_update: the item after the failures was applied")
    tap.eq(record(api, k1["token"]).get("key_alias"), k1_alias,
           "bulk_update: the failed item changed nothing")

    r = api.post("/key/bulk_update", {"keys": [{"key": k1["key"], "max_budget": i}
                                               for i in range(500)]})
    tap.ok(r.status == 200 and J(r).get("total_requested") == 500 and
           len(J(r).get("successful_updates") or []) == 500,
           "bulk_update: 500 items are accepted", repr(r)[:300])
    tap.eq(record(api, k1["token"]).get("max_budget"), 499,
           "bulk_update: items are applied in order")
    error_of(api.post("/key/bulk_update", {"keys": [{"key": k1["key"]}] * 501}), 422,
             "bulk_update: 501 items", "keys")
    error_of(api.post("/key/bulk_update", {"keys": []}), 422, "bulk_update: no items", "keys")

    alice, bob = people["alice"], people["bob"]
    mine = gen(api, who=alice)
    r = api.post("/key/bulk_update", {"keys": [{"key": mine["key"], "max_budget": 3},
                                               {"key": bob["token"] or "x", "max_budget": 3}]},
                 who=alice)
    error_of(r, 403, "bulk_update is for proxy admins, as in LiteLLM")
    tap.ok(record(api, bob["token"] or "x").get("max_budget") != 3 and
           record(api, mine["token"]).get("max_budget") != 3,
           "... and changes nothing", [record(api, bob["token"] or "x")])


# --- /key/delete ----------------------------------------------------------------------------

def delete(api, people):
    k1, k2 = gen(api), gen(api)
    status_is(api.get("/key/info", who=k1), 200, "a key works before it is deleted")
    r = api.post("/key/delete", {"keys": [k1["key"], k2["token"]]})
    tap.ok(r.status == 200 and J(r).get("deleted_keys") == [k1["key"], k2["token"]],
           "delete by plaintext and hash: deleted_keys as sent", repr(r))
    error_of(api.get("/key/info", who=k1), 401, "a deleted key is refused at once")
    error_of(api.post("/key/health", who=k1), 401, "a deleted key fails /key/health")
    error_of(api.get("/key/info?key=" + k2["token"]), 404, "a deleted key is gone")
    error_of(api.post("/key/delete", {"keys": [k2["token"]]}), 404, "deleting it again")

    k3 = gen(api)
    error_of(api.post("/key/delete", {"keys": [k3["key"], "sk-never-made-0000003"]}), 404,
             "delete with one unknown key")
    status_is(api.get("/key/info?key=" + k3["token"]), 200,
              "... deletes nothing: the known key is still there")

    alias = uniq("del-alias")
    k4 = gen(api, key_alias=alias)
    r = api.post("/key/delete", {"key_aliases": [alias]})
    tap.ok(r.status == 200 and J(r).get("deleted_keys") == [alias],
           "delete by key_aliases: deleted_keys as sent", repr(r))
    error_of(api.get("/key/info?key=" + k4["token"]), 404, "... the aliased key is gone")
    error_of(api.post("/key/delete", {"key_aliases": [uniq("never-an-alias")]}), 404,
             "delete of an unknown alias")

    alice, bob = people["alice"], people["bob"]
    mine, theirs = gen(api, who=alice), gen(api, user_id="bob")
    error_of(api.post("/key/delete", {"keys": [mine["key"], theirs["key"]]}, who=alice), 403,
             "an internal user deleting their key and another user's")
    tap.ok(api.get("/key/info?key=" + mine["token"]).status == 200 and
           api.get("/key/info?key=" + theirs["token"]).status == 200,
           "... deletes nothing: both keys are still there")
    tap.ok(api.post("/key/delete", {"keys": [mine["key"]]}, who=alice).status == 200 and
           api.get("/key/info?key=" + mine["token"]).status == 404,
           "an internal user deletes their own key")
    error_of(api.post("/key/delete", {"keys": [theirs["key"]]}, who=people["vera"]), 403,
             "an internal_user_viewer deletes nothing")
    error_of(api.post("/key/delete", {"keys": [theirs["key"]]}, who=people["pat"]), 403,
             "a proxy_admin_viewer deletes nothing")
    status_is(api.post("/key/delete", {"keys": [theirs["key"]]}, who=people["ada"]), 200,
              "a proxy_admin deletes anyone's key")


# --- /key/block and /key/unblock ------------------------------------------------------------

def block(api, people):
    k = gen(api, key_alias=uniq("blk"))
    status_is(api.post("/key/health", who=k), 200, "a key works before it is blocked")
    r = api.post("/key/block", {"key": k["key"]})
    tap.ok(r.status == 200 and J(r).get("blocked") is True and J(r).get("token") == k["token"],
           "block: the record with blocked true", repr(r))
    tap.ok(k["key"] not in r.body.decode(errors="replace"), "block: no plaintext in the answer")
    statuses = [api.get("/key/info", who=k).status for _ in range(6)]
    tap.eq(statuses, [401] * 6, "a blocked key is refused on its very next uses, by every worker")
    error_of(api.post("/key/health", who=k), 401, "a blocked key fails /key/health")
    tap.eq(record(api, k["token"]).get("blocked"), True, "the record shows it blocked")

    r = api.post("/key/unblock", {"key": k["token"]})
    tap.ok(r.status == 200 and J(r).get("blocked") is False, "unblock by hash: blocked false",
           repr(r))
    tap.eq([api.get("/key/info", who=k).status for _ in range(4)], [200] * 4,
           "an unblocked key works again at once")

    error_of(api.post("/key/block", {"key": "sk-never-made-0000004"}), 404, "block an unknown key")
    error_of(api.post("/key/unblock", {"key": "e" * 64}), 404, "unblock an unknown hash")
    alice_key = gen(api, who=people["alice"])
    for who in ("alice", "tina", "vera", "pat"):
        error_of(api.post("/key/block", {"key": alice_key["key"]}, who=people[who]), 403,
                 "block by %s (%s)" % (who, ROLES[who]))
        error_of(api.post("/key/unblock", {"key": alice_key["key"]}, who=people[who]), 403,
                 "unblock by %s (%s)" % (who, ROLES[who]))
    error_of(api.post("/key/block", {"key": alice_key["key"]}, who=k), 403,
             "block by a key without a user")
    tap.eq(record(api, alice_key["token"]).get("blocked"), False, "... none of them blocked it")
    tap.ok(api.post("/key/block", {"key": alice_key["key"]}, who=people["ada"]).status == 200 and
           api.post("/key/unblock", {"key": alice_key["key"]}, who=people["ada"]).status == 200,
           "a proxy_admin user blocks and unblocks")
    error_of(api.post("/key/block", {}), 422, "block without key", "key")


# --- regenerate -----------------------------------------------------------------------------

def regenerated(r, old_token, name):
    """Asserts an answer like /key/generate's for a new secret; returns it."""
    a = J(r)
    key = a.get("key") or ""
    tap.ok(r.status == 200 and key.startswith("sk-") and a.get("token") == sha(key) and
           a.get("token_id") == a.get("token") and a.get("key_name") == "sk-..." + key[-4:],
           name + ": key, token, token_id and key_name of the new secret", repr(r))
    tap.ok(r.status == 200 and a.get("token") != old_token, name + ": a new token")
    return {"key": key or "sk-regenerate-failed", "token": a.get("token") or "none"}


def regenerate(api, people):
    alias = uniq("regen")
    k = gen(api, key_alias=alias, models=["gpt-4"], max_budget=10, spend=5,
            metadata={"app": "regen"})
    count0 = record(api, k["token"]).get("rotation_count") or 0

    r = api.post("/key/regenerate?key=" + q(k["key"]))
    n1 = regenerated(r, k["token"], "POST /key/regenerate?key= (no body)")
    error_of(api.get("/key/info", who=k), 401, "the old key is refused at once")
    status_is(api.get("/key/info", who=n1), 200, "the new key works")
    error_of(api.get("/key/info?key=" + q(k["key"])), 404, "the old key names no record")
    rec = record(api, n1["token"])
    tap.ok(rec.get("spend") == 5 and rec.get("max_budget") == 10 and
           rec.get("models") == ["gpt-4"] and rec.get("metadata") == {"app": "regen"} and
           rec.get("key_alias") == alias, "spend, budget, models, metadata and alias kept", rec)
    tap.eq(rec.get("rotation_count"), count0 + 1, "rotation_count increments")
    r, tokens = list_tokens(api, "key_alias=" + q(alias))
    tap.eq(tokens, [n1["token"]], "the alias now lists the new token only")

    chosen = "sk-chosen-secret-%d" % next(_serial)
    r = api.post("/key/%s/regenerate" % n1["token"], {"new_key": chosen, "max_budget": 20})
    n2 = regenerated(r, n1["token"], "POST /key/{hash}/regenerate with new_key")
    tap.eq(n2["key"], chosen, "new_key is the new secret")
    rec = record(api, n2["token"])
    tap.ok(rec.get("max_budget") == 20 and rec.get("spend") == 5 and
           rec.get("rotation_count") == count0 + 2,
           "the body's fields change, the rest stays", rec)
    error_of(api.get("/key/info", who=n1), 401, "the key before it is refused")

    r = api.post("/key/%s/regenerate" % pct_all(n2["key"]))
    n3 = regenerated(r, n2["token"], "POST /key/{plaintext, percent-encoded}/regenerate")

    r = api.post("/key/%s/regenerate" % q(n3["key"]), {"grace_period": "1h"})
    n4 = regenerated(r, n3["token"], "regenerate with grace_period 1h")
    r = api.get("/key/info", who=n3)
    tap.ok(r.status == 200 and (J(r).get("info") or {}).get("token") == n4["token"],
           "during the grace period the old key still works, on the one record", repr(r))
    status_is(api.get("/key/info", who=n4), 200, "... and so does the new one")

    error_of(api.post("/key/regenerate?key=sk-never-made-0000005"), 404,
             "regenerate an unknown key (?key=)")
    error_of(api.post("/key/%s/regenerate" % ("d" * 64)), 404, "regenerate an unknown hash (path)")
    r = api.post("/key/regenerate")
    tap.ok(r.status in (400, 422), "regenerate naming no key: 400 or 422", repr(r))
    error_of(api.post("/key/regenerate?key=" + q(n4["key"]), {"new_key": "pk-not-a-key-123"}),
             400, "new_key without sk- (get_new_token)", "new_key")
    other = gen(api)
    r = api.post("/key/regenerate?key=" + q(n4["key"]), {"new_key": other["key"]})
    tap.ok(r.status == 400 and api.get("/key/info", who=other).status == 200 and
           api.get("/key/info", who=n4).status == 200,
           "new_key that is another key's secret: 400, both keys untouched", repr(r))

    alice, bob, tina, vera = (people[n] for n in ("alice", "bob", "tina", "vera"))
    mine = gen(api, who=alice)
    error_of(api.post("/key/regenerate?key=" + q(mine["key"]), who=bob), 403,
             "an internal user regenerating another user's key")
    status_is(api.get("/key/info", who=mine), 200, "... which still works")
    regenerated(api.post("/key/regenerate?key=" + q(mine["key"]), who=alice), mine["token"],
                "an internal user regenerates their own key")
    team_key = gen(api, user_id="alice", team_id="t-red")
    regenerated(api.post("/key/%s/regenerate" % team_key["token"], who=tina), team_key["token"],
                "a team admin regenerates a member's team key")
    v = gen(api, user_id="vera")
    error_of(api.post("/key/regenerate?key=" + q(v["key"]), who=vera), 403,
             "an internal_user_viewer does not regenerate their own key")
    error_of(api.post("/key/regenerate?key=" + q(v["key"]), who=people["pat"]), 403,
             "a proxy_admin_viewer does not regenerate")


# --- /key/{key}/reset_spend -----------------------------------------------------------------

def reset_spend(api, people):
    k = gen(api, spend=5, max_budget=10)
    r = api.post("/key/%s/reset_spend" % q(k["key"]), {"reset_to": 2})
    tap.ok(r.status == 200 and J(r).get("spend") == 2 and J(r).get("key_hash") == k["token"] and
           J(r).get("previous_spend") == 5 and J(r).get("max_budget") == 10,
           "reset_spend: LiteLLM's answer, key_hash, spend, previous_spend, max_budget", repr(r))
    tap.eq(record(api, k["token"]).get("spend"), 2, "reset_spend: stored")
    error_of(api.post("/key/%s/reset_spend" % k["token"], {"reset_to": 3}), 400,
             "reset_to above the current spend", "reset_to")
    tap.eq(record(api, k["token"]).get("spend"), 2, "... changes nothing")
    over = gen(api, spend=8, max_budget=5)
    error_of(api.post("/key/%s/reset_spend" % over["token"], {"reset_to": 6}), 400,
             "reset_to above the key's max_budget", "reset_to")
    error_of(api.post("/key/%s/reset_spend" % k["token"], {"reset_to": -1}), 422,
             "a negative reset_to", "reset_to")
    error_of(api.post("/key/%s/reset_spend" % k["token"], {}), 422, "no reset_to", "reset_to")
    r = api.post("/key/%s/reset_spend" % k["token"], {"reset_to": 0})
    tap.ok(r.status == 200 and J(r).get("spend") == 0, "reset_spend by hash to 0", repr(r))
    error_of(api.post("/key/sk-never-made-0000006/reset_spend", {"reset_to": 0}), 404,
             "reset_spend of an unknown key")

    team_key = gen(api, user_id="alice", team_id="t-red", spend=4)
    error_of(api.post("/key/%s/reset_spend" % team_key["token"], {"reset_to": 1},
                      who=people["alice"]), 403, "the key's own user, not a team admin")
    error_of(api.post("/key/%s/reset_spend" % team_key["token"], {"reset_to": 1},
                      who=people["pat"]), 403, "a proxy_admin_viewer")
    r = api.post("/key/%s/reset_spend" % team_key["token"], {"reset_to": 1}, who=people["tina"])
    tap.ok(r.status == 200 and J(r).get("spend") == 1, "the key's team admin resets it",
           repr(r))


# --- /key/health ----------------------------------------------------------------------------

def health(api, people):
    want = {"key": "healthy", "logging_callbacks": None}
    r = api.post("/key/health")
    tap.ok(r.status == 200 and r.json == want, "key health with the master key", repr(r))
    k = gen(api)
    r = api.post("/key/health", who=k)
    tap.ok(r.status == 200 and r.json == want, "key health with a virtual key", repr(r))
    r = api.post("/key/health", who=people["alice"])
    tap.ok(r.status == 200 and r.json == want, "key health with a user's key", repr(r))
    error_of(api.post("/key/health", who=None), 401, "key health without a credential")


# --- /key/service-account/generate ----------------------------------------------------------

def service_accounts(api):
    alias = uniq("svc")
    r = api.post("/key/service-account/generate", {"team_id": "t-red", "key_alias": alias,
                                                   "metadata": {"owner": "ci"}})
    a = J(r)
    meta = a.get("metadata") or {}
    tap.ok(r.status == 200 and str(a.get("key", "")).startswith("sk-") and
           a.get("team_id") == "t-red" and a.get("user_id") is None,
           "service account: a team key without a user", repr(r))
    tap.ok(meta.get("service_account_id") == alias and meta.get("owner") == "ci",
           "service account: metadata.service_account_id is the alias, metadata kept", meta)
    svc = {"key": a.get("key") or "sk-svc-failed", "token": a.get("token") or "none"}
    tap.eq(record(api, svc["token"]).get("metadata", {}).get("service_account_id"), alias,
           "service account: stored")
    error_of(api.post("/key/service-account/generate", {"key_alias": uniq("svc")}), 400,
             "service account without team_id", "team_id")
    error_of(api.post("/key/service-account/generate", {"team_id": "t-red", "user_id": "alice"}),
             400, "service account with a user_id", "user_id")
    status_is(api.get("/key/info", who=svc), 200, "a service account key reads itself")
    # 401 as LiteLLM answers a key with no user object on a management route
    # (RouteChecks._raise_admin_only_route_exception, rendered auth_error)
    error_of(api.post("/key/generate", {}, who=svc), 401, "a service account key makes no keys")


# --- roles and teams ------------------------------------------------------------------------

def roles(api, people):
    alice, bob, tina, vera, pat, ada = (people[n] for n in
                                        ("alice", "bob", "tina", "vera", "pat", "ada"))
    r = api.post("/key/generate", {"key_alias": uniq("own")}, who=alice)
    tap.ok(r.status == 200 and J(r).get("user_id") == "alice",
           "internal user: a key without user_id is their own", repr(r))
    status_is(api.post("/key/generate", {"user_id": "alice"}, who=alice), 200,
              "internal user: a key for themselves by user_id")
    error_of(api.post("/key/generate", {"user_id": "bob"}, who=alice), 403,
             "internal user: a key for another user")
    # LiteLLM's TeamMemberPermissionChecks: a member (not admin) has /key/info and /key/health only
    error_of(api.post("/key/generate", {"team_id": "t-red"}, who=alice), 403,
             "team member (not admin): no key for the team", "team_id")
    r = api.post("/key/generate", {"team_id": "t-red", "user_id": "alice"}, who=tina)
    tap.ok(r.status == 200 and J(r).get("team_id") == "t-red" and J(r).get("user_id") == "alice",
           "team admin: a team key for a member, the member's", repr(r))
    alice_team = {"key": J(r).get("key"), "token": J(r).get("token") or "none"}
    error_of(api.post("/key/generate", {"team_id": "t-red"}, who=bob), 403,
             "not a member: no key for the team")

    bobs = gen(api, user_id="bob", max_budget=1)
    error_of(api.post("/key/update", {"key": bobs["key"], "max_budget": 9}, who=alice), 403,
             "internal user: update another user's key")
    tap.eq(record(api, bobs["token"]).get("max_budget"), 1, "... which is unchanged")
    error_of(api.post("/key/update", {"key": bobs["key"], "max_budget": 2}, who=bob), 403,
             "internal user: not their own key's max_budget (README: Who may change what)",
             "max_budget")
    status_is(api.post("/key/update", {"key": bobs["key"], "key_alias": uniq("bobs")}, who=bob),
              200, "internal user: update their own key's alias")

    tinas = gen(api, who=tina, team_id="t-red")
    r = api.get("/key/info?key=" + alice_team["token"], who=tina)
    status_is(r, 200, "team admin: reads a member's team key")
    status_is(api.post("/key/update", {"key": alice_team["token"], "max_budget": 5}, who=tina),
              200, "team admin: updates a member's team key")
    error_of(api.post("/key/update", {"key": tinas["token"], "max_budget": 5}, who=alice), 403,
             "team member (not admin): update another member's team key")
    alice_personal = gen(api, user_id="alice")
    error_of(api.get("/key/info?key=" + alice_personal["token"], who=tina), 403,
             "team admin: not the member's personal key")
    status_is(api.post("/key/delete", {"keys": [alice_team["token"]]}, who=tina), 200,
              "team admin: deletes a member's team key")

    vs = gen(api, user_id="vera")
    status_is(api.get("/key/info?key=" + vs["token"], who=vera), 200,
              "internal_user_viewer: reads their own key")
    error_of(api.post("/key/generate", {}, who=vera), 403, "internal_user_viewer: generate")
    error_of(api.post("/key/update", {"key": vs["key"], "max_budget": 1}, who=vera), 403,
             "internal_user_viewer: update their own key")

    status_is(api.get("/key/info?key=" + bobs["token"], who=pat), 200,
              "proxy_admin_viewer: reads any key")
    r, tokens = list_tokens(api, "user_id=bob&size=100", who=pat)
    tap.ok(r.status == 200 and bobs["token"] in tokens, "proxy_admin_viewer: lists any key",
           repr(r))
    error_of(api.post("/key/generate", {}, who=pat), 403, "proxy_admin_viewer: generate")
    error_of(api.post("/key/update", {"key": bobs["key"], "max_budget": 1}, who=pat), 403,
             "proxy_admin_viewer: update")

    r = api.post("/key/generate", {"user_id": "bob"}, who=ada)
    tap.ok(r.status == 200 and J(r).get("user_id") == "bob",
           "proxy_admin user: a key for another user", repr(r))
    status_is(api.post("/key/update", {"key": bobs["key"], "max_budget": 3}, who=ada), 200,
              "proxy_admin user: update another user's key")

    nobody = gen(api)
    other = gen(api)
    r = api.get("/key/info", who=nobody)
    tap.ok(r.status == 200 and (J(r).get("info") or {}).get("token") == nobody["token"],
           "a key without a user reads itself", repr(r))
    error_of(api.get("/key/info?key=" + other["token"], who=nobody), 403,
             "a key without a user reads no other key")
    error_of(api.get("/key/list", who=nobody), 403, "a key without a user lists nothing")
    error_of(api.post("/key/update", {"key": nobody["key"], "max_budget": 1}, who=nobody), 401,
             "a key without a user does not change itself (LiteLLM's admin-only route 401)")
    error_of(api.get("/audit", who=alice), 403, "an internal user reads no audit log")
    error_of(api.get("/audit", who=vera), 403, "an internal_user_viewer reads no audit log")
    status_is(api.get("/audit?page_size=1", who=pat), 200,
              "a proxy_admin_viewer reads the audit log")


def team_bounds(api, people):
    alice = people["tina"]	# the team's admin: team keys are its admins' to make and change
    status_is(api.post("/key/generate", {"team_id": "t-red", "models": ["gpt-4"],
                                         "max_budget": 50}, who=alice), 200,
              "a team key within the team's models and budget")
    error_of(api.post("/key/generate", {"team_id": "t-red", "models": ["gpt-5"]}, who=alice),
             403, "a team key with a model outside the team's", "models")
    error_of(api.post("/key/generate", {"team_id": "t-red", "max_budget": 51}, who=alice), 400,
             "a team key with a budget above the team's", "max_budget")
    error_of(api.post("/key/generate", {"team_id": "t-red", "models": ["gpt-5"]}), 403,
             "the master key is bound by the team's models too", "models")
    error_of(api.post("/key/generate", {"team_id": "t-red", "max_budget": 51}), 400,
             "the master key is bound by the team's budget too", "max_budget")
    tk = gen(api, who=alice, team_id="t-red", models=["gpt-4"])
    error_of(api.post("/key/update", {"key": tk["key"], "models": ["gpt-4", "gpt-5"]},
                      who=alice), 403, "update a team key to a model outside the team's",
             "models")
    error_of(api.post("/key/update", {"key": tk["key"], "max_budget": 100}, who=alice), 400,
             "update a team key to a budget above the team's", "max_budget")
    tap.eq(record(api, tk["token"]).get("models"), ["gpt-4"], "... neither changed it")


# --- unique aliases under a race ------------------------------------------------------------

def alias_race(api):
    alias = uniq("race")
    keys = [gen(api) for _ in range(6)]
    results = []

    def generate():
        results.append(api.post("/key/generate", {"key_alias": alias}).status)

    def rename(k):
        results.append(api.post("/key/update", {"key": k["key"], "key_alias": alias}).status)
    threads = [threading.Thread(target=generate) for _ in range(6)]
    threads += [threading.Thread(target=rename, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tap.ok(sorted(results) == [200] + [400] * 11,
           "6 generates and 6 updates racing for one alias: exactly one wins", results)
    r = api.get("/key/list?key_alias=" + q(alias))
    tap.eq(J(r).get("total_count"), 1, "... and one key has it")


# --- /key/list scoping (main server) --------------------------------------------------------

def list_scoping(api, people):
    alice, bob, tina = people["alice"], people["bob"], people["tina"]
    team_key = gen(api, user_id="alice", team_id="t-red")
    bobs = gen(api, user_id="bob")

    r = api.get("/key/list?size=100&return_full_object=true", who=alice)
    keys = J(r).get("keys") or []
    tap.ok(r.status == 200 and keys and all(k.get("user_id") == "alice" for k in keys),
           "an internal user lists only their own keys", repr(r))
    tap.ok(team_key["token"] in [k.get("token") for k in keys], "... their team keys too")
    r = api.get("/key/list?user_id=bob&size=100", who=alice)
    tap.ok(r.status == 403 or (r.status == 200 and bobs["token"] not in (J(r).get("keys") or [])),
           "an internal user asking for another user's keys does not get them", repr(r))
    r, tokens = list_tokens(api, "size=100", who=tina)
    tap.ok(r.status == 200 and team_key["token"] not in tokens,
           "a team admin's list leaves out the team's keys by default", repr(r))
    r, tokens = list_tokens(api, "size=100&include_team_keys=true", who=tina)
    tap.ok(r.status == 200 and team_key["token"] in tokens and bobs["token"] not in tokens,
           "include_team_keys=true adds the keys of teams they admin, no others", repr(r))

    r = api.get("/key/list?team_id=t-red&size=100&return_full_object=true")
    keys = J(r).get("keys") or []
    tap.ok(r.status == 200 and team_key["token"] in [k.get("token") for k in keys] and
           all(k.get("team_id") == "t-red" for k in keys), "team_id filter", repr(r))
    r = api.get("/key/list?user_id=bob&size=100&return_full_object=true")
    keys = J(r).get("keys") or []
    tap.ok(r.status == 200 and bobs["token"] in [k.get("token") for k in keys] and
           all(k.get("user_id") == "bob" for k in keys), "user_id filter", repr(r))


# --- time limits: an expiring key and a short grace period, with one sleep ------------------

def time_limits(api):
    k = gen(api)
    r = api.post("/key/regenerate?key=" + q(k["key"]), {"grace_period": "2s"})
    new = regenerated(r, k["token"], "regenerate with grace_period 2s")
    status_is(api.get("/key/info", who=k), 200, "the old key works during its 2 s grace period")
    short = gen(api, duration="2s")
    status_is(api.get("/key/info", who=short), 200, "a key with duration 2s works at first")
    time.sleep(3)
    error_of(api.get("/key/info", who=short), 401, "the key is refused once expired")
    error_of(api.get("/key/info", who=k), 401, "the old key is refused once the grace period ends")
    status_is(api.get("/key/info", who=new), 200, "the new key still works")


# --- the audit trail ------------------------------------------------------------------------

def audit_entries(api, object_id):
    r = api.get("/audit?page_size=100&object_id=" + q(object_id))
    return J(r).get("audit_logs") or []


def audit(api, people):
    by = {"litellm-changed-by": "carol@example.com"}
    k = gen(api, headers=by, key_alias=uniq("audited"))
    api.post("/key/update", {"key": k["key"], "max_budget": 3}, headers=by)
    api.post("/key/block", {"key": k["key"]}, headers=by)
    api.post("/key/unblock", {"key": k["key"]}, headers=by)
    new = regenerated(api.post("/key/regenerate?key=" + q(k["key"]), headers=by), k["token"],
                      "audited regenerate")
    status_is(api.post("/key/delete", {"keys": [new["key"]]}, headers=by), 200, "audited delete")

    old_entries, new_entries = audit_entries(api, k["token"]), audit_entries(api, new["token"])
    old_actions = sorted(e.get("action") for e in old_entries)
    actions = sorted(e.get("action") for e in old_entries + new_entries)
    tap.ok(set(["created", "updated", "blocked"]) <= set(old_actions) and
           old_actions.count("updated") == 2,
           "audit under the old token: created, updated, blocked, updated (unblock)", old_actions)
    tap.eq(actions.count("rotated"), 1, "audit: one rotated entry (old or new token)")
    tap.eq([e.get("action") for e in new_entries if e.get("action") == "deleted"], ["deleted"],
           "audit under the new token: deleted")
    tap.ok(old_entries + new_entries and
           all(e.get("changed_by") == "carol@example.com" for e in old_entries + new_entries),
           "audit: changed_by is the litellm-changed-by header",
           [e.get("changed_by") for e in old_entries + new_entries])
    tap.ok(all(e.get("table_name") == "LiteLLM_VerificationToken"
               for e in old_entries + new_entries), "audit: table_name LiteLLM_VerificationToken")
    r = api.get("/audit?object_id=%s&action=blocked" % k["token"])
    tap.eq(J(r).get("total"), 1, "audit: filters combine (object_id and action)")

    alice = people["alice"]
    mine = gen(api, who=alice)
    api.post("/key/update", {"key": mine["key"], "key_alias": uniq("audited")}, who=alice)
    updates = [e for e in audit_entries(api, mine["token"]) if e.get("action") == "updated"]
    tap.ok(len(updates) == 1 and updates[0].get("changed_by") == "alice" and
           updates[0].get("changed_by_api_key") == alice["token"],
           "audit without the header: changed_by the caller's user, changed_by_api_key "
           "the hash of their key", updates)


def whole_audit_log(api):
    """Every page of GET /audit, as text."""
    pages, page = [], 1
    while page <= 200:
        r = api.get("/audit?page_size=100&page=%d" % page)
        pages.append(r.body.decode(errors="replace"))
        if r.status != 200 or page >= (J(r).get("total_pages") or 0):
            break
        page += 1
    return "".join(pages)


# --- hygiene: the spec, no 500, no plaintext anywhere ---------------------------------------

def hygiene(api, srv, name):
    by_op = {}
    for op, method, path, status, problems in api.answers:
        by_op.setdefault(op, []).append((method, path, status, problems))
    for op in sorted(by_op, key=str):
        bad = ["%s %s -> %d: %s" % (m, p[:80], s, "; ".join(pr)) for m, p, s, pr in by_op[op]
               if pr]
        tap.ok(not bad, "%s: %s: all %d answers are as the spec documents" %
               (name, op, len(by_op[op])), "\n".join(bad[:15]))
    fives = ["%s %s -> %d" % (m, p[:80], s) for _, m, p, s, _ in api.answers if s >= 500]
    tap.ok(not fives, "%s: no answer is a 5xx (%d requests)" % (name, len(api.answers)),
           "\n".join(fives[:30]))
    text = whole_audit_log(api)
    leaked = [k for k in PLAINTEXTS if k in text]
    tap.ok(not leaked, "%s: the audit log holds none of the %d plaintext keys" %
           (name, len(PLAINTEXTS)), leaked[:5])
    log = srv.read_log()
    tap.ok(not [k for k in PLAINTEXTS if k in log], "%s: the server log holds no plaintext key" %
           name)
    raw = b"".join(open(p, "rb").read() for p in
                   glob.glob(srv.data_dir + "/*.db") + glob.glob(srv.data_dir + "/log.*"))
    tap.ok(not [k for k in PLAINTEXTS if k.encode() in raw],
           "%s: no store or log file holds a plaintext key" % name)


# --- /key/list and /key/aliases on a fresh server: exact counts -----------------------------

def paging(api):
    made = []
    # generate_key_fn refuses an organization_id that names none (get_org_object)
    api.post("/organization/new", {"organization_id": "org-paging", "organization_alias": "paging"})
    for i in range(23):
        fields = {"key_alias": "page-%02d" % i, "spend": (i * 7) % 23, "max_budget": 100 - i}
        if i in (3, 4):
            fields["organization_id"] = "org-paging"
        made.append(gen(api, **fields))
    time.sleep(1.1)
    newest = gen(api)                                   # no alias; a second younger
    tokens = set(k["token"] for k in made) | {newest["token"]}
    aliases = ["page-%02d" % i for i in range(23)]

    r = api.get("/key/list")
    a = J(r)
    tap.ok(r.status == 200 and a.get("current_page") == 1 and len(a.get("keys") or []) == 10 and
           a.get("total_count") == 24 and a.get("total_pages") == 3,
           "list: page 1 of 10 keys by default, total_count and total_pages", repr(r))
    tap.ok(all(isinstance(t, str) and re.fullmatch("[0-9a-f]{64}", t)
               for t in a.get("keys") or []), "list: token strings by default")
    tap.eq((a.get("keys") or [None])[0], newest["token"], "list: newest first by default")
    seen = []
    for page in (1, 2, 3):
        seen += list_tokens(api, "page=%d" % page)[1]
    tap.ok(len(seen) == 24 and set(seen) == tokens, "list: pages 1-3 hold every key once",
           [len(seen), len(set(seen))])
    r = api.get("/key/list?page=4")
    a = J(r)
    tap.ok(r.status == 200 and a.get("keys") == [] and a.get("total_count") == 24 and
           a.get("total_pages") == 3 and a.get("current_page") == 4,
           "list: a page past the end is empty, with the right totals", repr(r))
    r = api.get("/key/list?size=7")
    tap.ok(J(r).get("total_pages") == 4 and len(J(r).get("keys") or []) == 7,
           "list: size 7 makes 4 pages", repr(r))
    r, t = list_tokens(api, "size=100&sort_order=asc")
    tap.ok(len(t) == 24 and t[-1] == newest["token"], "list: sort_order=asc puts the newest last")

    r = api.get("/key/list?size=100&return_full_object=true")
    recs = [k for k in J(r).get("keys") or [] if isinstance(k, dict)]
    tap.ok(len(recs) == 24 and set(k.get("token") for k in recs) == tokens,
           "list: return_full_object=true gives the records", repr(r)[:300])
    tap.ok(not [k for k in PLAINTEXTS if k in r.body.decode(errors="replace")],
           "list: no plaintext key in the records")
    for field, order in (("key_alias", "asc"), ("key_alias", "desc"), ("spend", "desc"),
                         ("spend", "asc"), ("max_budget", "asc"), ("token", "asc"),
                         ("token", "desc"), ("created_at", "asc"), ("updated_at", "desc")):
        r = api.get("/key/list?size=100&return_full_object=true&sort_by=%s&sort_order=%s" %
                    (field, order))
        values = [k.get(field) for k in J(r).get("keys") or [] if isinstance(k, dict)]
        present = [v for v in values if v is not None]
        tap.ok(r.status == 200 and len(values) == 24 and is_sorted(present, order == "desc"),
               "list: sort_by=%s sort_order=%s" % (field, order), values)

    r, t = list_tokens(api, "key_alias=page-05")
    tap.eq(t, [made[5]["token"]], "list: key_alias filter")
    r, t = list_tokens(api, "key_hash=" + made[7]["token"])
    tap.eq(t, [made[7]["token"]], "list: key_hash filter")
    r, t = list_tokens(api, "organization_id=org-paging")
    tap.eq(sorted(t), sorted([made[3]["token"], made[4]["token"]]), "list: organization_id filter")
    r = api.get("/key/list?user_id=nobody-at-all")
    tap.ok(J(r).get("keys") == [] and J(r).get("total_count") == 0 and
           J(r).get("total_pages") == 0, "list: a filter matching nothing", repr(r))

    for query, param in (("page=0", "page"), ("size=0", "size"), ("size=101", "size"),
                         ("page=abc", "page"), ("sort_by=owner", "sort_by"),
                         ("sort_order=up", "sort_order"), ("return_full_object=maybe",
                                                           "return_full_object")):
        error_of(api.get("/key/list?" + query), 422, "list: " + query, param)
    status_is(api.get("/key/list?size=100"), 200, "list: size 100")

    r = api.get("/key/aliases")
    a = J(r)
    tap.ok(r.status == 200 and a.get("aliases") == aliases and a.get("size") == 50 and
           a.get("total_count") == 23 and a.get("total_pages") == 1 and
           a.get("current_page") == 1, "aliases: 50 a page by default, sorted, with totals",
           repr(r))
    got = []
    for page in (1, 2, 3):
        got += J(api.get("/key/aliases?size=10&page=%d" % page)).get("aliases") or []
    tap.eq(got, aliases, "aliases: pages 1-3 are every alias in order, no null alias")
    r = api.get("/key/aliases?size=10&page=4")
    tap.ok(r.status == 200 and J(r).get("aliases") == [] and J(r).get("total_count") == 23,
           "aliases: a page past the end is empty", repr(r))
    r = api.get("/key/aliases?size=100&search=page-1")
    tap.eq(J(r).get("aliases"), ["page-%02d" % i for i in range(10, 20)],
           "aliases: search finds the aliases containing the text")
    for query, param in (("page=0", "page"), ("size=101", "size")):
        error_of(api.get("/key/aliases?" + query), 422, "aliases: " + query, param)
    api.post("/key/delete", {"keys": [made[0]["key"]]})
    tap.ok("page-00" not in (J(api.get("/key/aliases?size=100")).get("aliases") or ["page-00"]),
           "aliases: a deleted key's alias is gone")
    tap.eq(J(api.get("/key/list")).get("total_count"), 23, "list: a deleted key is not counted")


def new_user_from_key(api):
    """A key for a user_id nobody created makes no user: LiteLLM's generate_key_helper_fn does
    not auto-create users for /key/generate (table_name "key"), so the key has no role and
    manages nothing (tests/test_keys.py test_key_gen_bad_key)."""
    user_id = "made-by-a-key-%d" % next(_serial)
    k = gen(api, user_id=user_id)
    tap.eq(api.get("/user/info?user_id=" + user_id).status, 404,
           "a key's unknown user_id makes no user (generate_key_helper_fn)")
    tap.eq(api.post("/key/generate", {"user_id": user_id}, who=k["key"]).status, 401,
           "and that key makes no key (test_key_gen_bad_key)")
    tap.eq(J(api.get("/key/info", who=k["key"])).get(
        "info", {}).get("user_id"), user_id, "the key reads itself as that user's")


def main():
    with Server() as srv:
        api = Api(srv)
        people = setup_people(api)
        references(api)
        credentials(api, people)
        key_info(api, people)
        update(api)
        validation(api)
        bulk_update(api, people)
        delete(api, people)
        block(api, people)
        regenerate(api, people)
        reset_spend(api, people)
        health(api, people)
        service_accounts(api)
        roles(api, people)
        team_bounds(api, people)
        alias_race(api)
        list_scoping(api, people)
        time_limits(api)
        audit(api, people)
        new_user_from_key(api)
        hygiene(api, srv, "main server")
    with Server() as srv:
        api = Api(srv)
        paging(api)
        hygiene(api, srv, "paging server")
    tap.ok(not SETUP_FAILURES, "every key the tests needed was generated",
           "\n".join(SETUP_FAILURES[:20]))


tap.run(main)
