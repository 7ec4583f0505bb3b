#!/usr/bin/python3
"""contract_venice.t: the Venice face (/api/v1/api_keys...) through lighttpd, as the README's
section "Venice API keys" describes it.

Covers: creation of INFERENCE and ADMIN keys with every field (consumptionLimit usd, diem and
vcu null or 0..9999999999, limitPeriod EPOCH by default, MONTH, LIFETIME; expiresAt "", null,
absent, YYYY-MM-DD, ISO times with and without seconds, fractions, Z or +00:00; a past or
impossible date 400 naming expiresAt; description 1..64 characters; unknown fields; bad JSON
400, not JSON 415, too large 413); the key shown once (never in list, get, patch, audit or
logs; last6Chars); the list's shape with usage; get; PATCH (only the fields sent change,
consumptionLimit by currency, null clears); DELETE (the key stops working at once:
/key/verify answers NOT_FOUND); GET /rate_limits for the calling key (INFERENCE keys too;
balances, nextEpochBegins per period; 400 for the master key); the breaches log (newest first,
the last 50, per owner); the callers (the master key and ADMIN keys manage; INFERENCE keys,
LiteLLM keys, unknown, expired or missing credentials are 401); owner scoping (an ADMIN key
sees and changes only its owner's keys, others' are 404); 20 creations a minute per owner
(the 21st is 429; refused requests do not count; another owner is not affected); 500 active
keys per owner (expired and deleted keys do not count); the audit trail (Venice_ApiKey
created, updated, deleted, by the key's token); enforcement through /key/verify and the
FastCGI AUTHORIZER (402 with API_KEY_USD_SPEND_LIMIT_EXCEEDED and
API_KEY_DIEM_SPEND_LIMIT_EXCEEDED; EPOCH resets at UTC midnight, MONTH on the 1st, LIFETIME
never; INFERENCE keys only on inference routes; expiry).

Time is pinned with KEYWARDEN_CLOCK_FILE and moved by the test.  Every answer of the Venice
face is checked against the spec, none may be a 5xx, every error is {"error": "..."} with
details naming fields, and no Venice key appears anywhere but its own creation answer: not in
another answer, the audit log, the server log or the data directory's files."""
import calendar
import concurrent.futures
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import contract  # noqa: E402
import fcgi  # noqa: E402
from kwserver import BIN, Server  # noqa: E402

SPEC = contract.load_spec()
OPS = contract.operations(SPEC)
MASTER = object()          # "who" for the master key
NOBODY = None              # "who" for no credential at all
VENICE_KEYS = {}           # plaintext of every Venice key made -> its id
SETUP_FAILURES = []        # setup requests that did not do what the tests rely on
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# Venice's secret form (its api-keys reference): the type's prefix, then 43 base64url characters
KEY_RE = re.compile(r"^VENICE_(INFERENCE|ADMIN)_KEY_[A-Za-z0-9_-]{43}$")
VTIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.000Z$")
T0 = calendar.timegm((2031, 1, 14, 0, 0, 5))     # a Tuesday, just after midnight UTC
_serial = itertools.count(1)
_lock = threading.Lock()


# --- helpers ---------------------------------------------------------------------------

def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def uniq(prefix):
    return "%s-%d" % (prefix, next(_serial))


def J(r):
    return r.json if isinstance(r.json, dict) else {}


def D(r):
    d = J(r).get("data")
    return d if isinstance(d, dict) else {}


def q(s):
    return urllib.parse.quote(str(s), safe="")


def ts(y, mo, d, h=0, mi=0, s=0):
    return calendar.timegm((y, mo, d, h, mi, s))


def vtime(t):
    """t as Venice answers times."""
    return "%04d-%02d-%02dT%02d:%02d:%02d.000Z" % tuple(time.gmtime(t)[:6])


def num(v):
    """A usage amount as Venice writes it (a 4-decimal string) as a number; None if not one."""
    if not isinstance(v, str) or not re.match(r"^[0-9]+\.[0-9]{4}$", v):
        return None
    return float(v)


def close(a, b, eps=1e-6):
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) < eps


class Clock:
    """The time keywarden reads (KEYWARDEN_CLOCK_FILE); only ever moved forward."""

    def __init__(self, path, t):
        self.path = path
        self.set(t)

    def set(self, t):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % t)
        os.replace(tmp, self.path)
        self.now = t

    def advance(self, secs):
        self.set(self.now + secs)

    def next_minute(self):
        """The start of the next minute, plus 5 s: a fresh creation window."""
        self.set(self.now - self.now % 60 + 65)


def op_of(method, path):
    path = path.split("?", 1)[0]
    best = None
    for op_id, (m, template, _) in OPS.items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if m == method and re.match(pattern, path):
            if best is None or template.count("{") < best[1]:
                best = (op_id, template.count("{"))
    return best[0] if best else None


class Api:
    """One server; every request of the test goes through call()."""

    def __init__(self, srv, clock):
        self.srv = srv
        self.clock = clock
        self.answers = []   # (op, method, path, status, problems, json, text)
        self.created = {}   # owner -> (minute, creations this minute)

    def call(self, method, path, body=None, who=MASTER, headers=None, raw=None):
        hdrs = {}
        cred = self.srv.master_key if who is MASTER else who
        if cred:
            hdrs["Authorization"] = "Bearer " + cred
        hdrs.update(headers or {})
        r = self.srv.request(method, path, body=body, headers=hdrs, raw=raw)
        r.path = path
        op = op_of(method, path)
        problems = contract.check_response(SPEC, OPS[op], r) if op else ["no such operation"]
        if op == "venice_key_create" and r.status == 200 and KEY_RE.match(
                str(D(r).get("apiKey"))):
            with _lock:
                VENICE_KEYS[D(r)["apiKey"]] = D(r).get("id")
        with _lock:
            self.answers.append((op, method, path, r.status, problems, r.json,
                                 r.body.decode("utf-8", "replace")))
        return r

    def get(self, path, who=MASTER, **kw):
        return self.call("GET", path, who=who, **kw)

    def post(self, path, body=None, who=MASTER, **kw):
        return self.call("POST", path, body, who=who, **kw)

    def patch(self, body, who=MASTER, **kw):
        return self.call("PATCH", "/api/v1/api_keys", body, who=who, **kw)

    def delete(self, key_id, who=MASTER):
        return self.call("DELETE", "/api/v1/api_keys?id=" + q(key_id), who=who)

    def key(self, key_id, who=MASTER):
        return self.get("/api/v1/api_keys/" + q(key_id), who=who)

    def keys(self, who=MASTER):
        return self.get("/api/v1/api_keys", who=who)

    def limits(self, who):
        return self.get("/api/v1/api_keys/rate_limits", who=who)

    def log(self, who=MASTER):
        return self.get("/api/v1/api_keys/rate_limits/log", who=who)

    def create(self, body, who=MASTER, owner="master", counted=True):
        """POST /api/v1/api_keys.  Moves the clock to a fresh minute first when owner's 20
        creations of this minute are spent (the rate limit is tested on its own)."""
        minute = self.clock.now // 60
        with _lock:
            m, n = self.created.get(owner, (minute, 0))
            if m != minute:
                n = 0
            if counted and n >= 20:
                self.clock.next_minute()
                self.created = {}
                minute, n = self.clock.now // 60, 0
        r = self.post("/api/v1/api_keys", body, who=who)
        if r.status == 200:
            with _lock:
                m, n = self.created.get(owner, (minute, 0))
                self.created[owner] = (minute, (n if m == minute else 0) + 1)
        return r

    def verify(self, key, **fields):
        body = {"key": key}
        body.update(fields)
        return self.post("/key/verify", body)

    def usage(self, key, **fields):
        body = {"key": key}
        body.update(fields)
        return self.post("/key/usage", body)

    def authorize(self, uri, key, method="POST"):
        res = fcgi.authorize(self.srv, method, uri, {"Authorization": "Bearer " + key} if key
                             else {})
        text = "\n".join("%s: %s" % kv for kv in res.headers.items()) + "\n" + \
            res.body.decode("utf-8", "replace")
        with _lock:
            self.answers.append(("AUTHORIZER", method, uri, res.status, [], None, text))
        return res


def status_is(r, status, name):
    return tap.ok(r.status == status, name + ": %d" % status,
                  "got %d: %s" % (r.status, r.body[:600]))


def details_node(details, field):
    """The node of a DetailedError's details tree named field, at any depth; None if none."""
    if not isinstance(details, dict):
        return None
    for k, v in details.items():
        if k == "_errors":
            continue
        if k == field:
            return v
        found = details_node(v, field)
        if found is not None:
            return found
    return None


def venice_error(r, status, name, field=None):
    """Asserts a Venice error: this status, {"error": "..."}; with field, Venice's
    DetailedError (docs.venice.ai "Error Codes": "Invalid request parameters", details a
    tree of _errors keyed by field, issues with each path)."""
    tap.ok(r.status == status and isinstance(J(r).get("error"), str) and J(r)["error"],
           "%s: %d {\"error\": ...}" % (name, status), "got %d: %s" % (r.status, r.body[:600]))
    if field is not None:
        j = J(r)
        node = details_node(j.get("details"), field)
        issues = j.get("issues")
        tap.ok(j.get("error") == "Invalid request parameters" and
               (j.get("details") or {}).get("_errors") == [] and isinstance(node, dict) and
               node.get("_errors") and isinstance(issues, list) and issues and
               issues[0].get("path", [None])[-1] == field and issues[0].get("message"),
               "%s: DetailedError names %s (details._errors, issues path)" % (name, field),
               r.body[:600])
    return J(r)


def made(api, body, who=MASTER, owner="master", name=None):
    """A key the tests rely on: the creation answer's data (a stand-in when it failed)."""
    r = api.create(body, who=who, owner=owner)
    d = D(r)
    if r.status != 200 or not KEY_RE.match(str(d.get("apiKey"))):
        SETUP_FAILURES.append("%s: POST /api/v1/api_keys %s -> %r" % (
            name or "setup", json.dumps(body)[:200], r))
        fake = "VENICE_INFERENCE_KEY_setup-failed-%028d" % next(_serial)
        return {"apiKey": fake, "id": "setup-failed-%d" % next(_serial)}
    return d


def inference(api, who=MASTER, owner="master", **fields):
    body = {"apiKeyType": "INFERENCE", "description": uniq("inference")}
    body.update(fields)
    return made(api, body, who, owner)


def admin_key(api, who=MASTER, owner="master", **fields):
    body = {"apiKeyType": "ADMIN", "description": uniq("admin")}
    body.update(fields)
    return made(api, body, who, owner)


def owned_admin(api, user_id):
    """An ADMIN key whose owner is user_id: made by the master key, then given the user with
    the LiteLLM face's /key/update (the owner is the key's user_id when it has one)."""
    a = admin_key(api)
    r = api.post("/key/update", {"key": sha(a["apiKey"]), "user_id": user_id})
    if r.status != 200:
        SETUP_FAILURES.append("POST /key/update user_id %s -> %r" % (user_id, r))
    return a


def litellm_key(api, **fields):
    r = api.post("/key/generate", fields)
    k = J(r).get("key")
    if r.status != 200 or not str(k or "").startswith("sk-"):
        SETUP_FAILURES.append("POST /key/generate -> %r" % r)
        return "sk-setup-failed-%d" % next(_serial)
    return k


def listed(api, who=MASTER):
    """id -> VeniceKey of GET /api/v1/api_keys."""
    return {k.get("id"): k for k in J(api.keys(who)).get("data") or [] if isinstance(k, dict)}


def verdict(r, code, name):
    a = J(r)
    tap.ok(r.status == 200 and a.get("code") == code and a.get("valid") is (code == "VALID"),
           "%s: /key/verify %s" % (name, code), "got %d: %s" % (r.status, r.body[:600]))
    return a


def refused(res, status, code, name):
    """An AUTHORIZER refusal: status, the LiteLLM envelope, the verdict code in the message."""
    try:
        e = json.loads(res.body).get("error")
    except (ValueError, AttributeError):
        e = None
    tap.ok(res.status == status and isinstance(e, dict) and e.get("code") == str(status) and
           (code is None or code in str(e.get("message"))),
           "AUTHORIZER: %s: %d%s" % (name, status, " " + code if code else ""), repr(res))


# --- creation ------------------------------------------------------------------------

def creation(api):
    clock = api.clock
    clock.next_minute()
    created_at = vtime(clock.now)
    r = api.create({"apiKeyType": "INFERENCE", "description": "an inference key"})
    d = D(r)
    tap.ok(r.status == 200 and J(r).get("success") is True, "create INFERENCE: 200, success true",
           repr(r))
    tap.ok(KEY_RE.match(str(d.get("apiKey"))) and d["apiKey"].startswith("VENICE_INFERENCE_KEY_"),
           "create: an INFERENCE apiKey is VENICE_INFERENCE_KEY_ and 43 base64url characters "
           "(Venice's api-keys reference)", d.get("apiKey") and "malformed")
    tap.eq(d.get("modelPrivacy"), "ALL", "create: modelPrivacy defaults to ALL")
    tap.ok(UUID4.match(str(d.get("id"))), "create: id is a UUID v4", d.get("id"))
    tap.eq((d.get("apiKeyType"), d.get("description")), ("INFERENCE", "an inference key"),
           "create: apiKeyType and description as sent")
    tap.eq(d.get("consumptionLimit"), {"usd": None, "diem": None, "vcu": None},
           "create: no consumptionLimit: usd, diem and vcu null")
    tap.eq(d.get("limitPeriod"), "EPOCH", "create: limitPeriod defaults to EPOCH")
    tap.ok("expiresAt" in d and d["expiresAt"] is None, "create: no expiresAt: null", d)
    inf_id = d.get("id")

    body = {"apiKeyType": "ADMIN", "description": "Example API Key",
            "consumptionLimit": {"usd": 50, "diem": 10, "vcu": 30}, "limitPeriod": "MONTH",
            "expiresAt": "2031-10-01T12:00:00.000Z"}
    r = api.create(body)
    d = D(r)
    tap.ok(r.status == 200 and d.get("apiKeyType") == "ADMIN" and
           d.get("consumptionLimit") == {"usd": 50, "diem": 10, "vcu": 30} and
           d.get("limitPeriod") == "MONTH" and d.get("expiresAt") == "2031-10-01T12:00:00.000Z"
           and d.get("description") == "Example API Key",
           "create ADMIN with every field (the seed's example): each as sent", repr(r))
    tap.ok(str(d.get("apiKey")).startswith("VENICE_ADMIN_KEY_"),
           "create: an ADMIN apiKey is VENICE_ADMIN_KEY_...", d.get("apiKey") and "malformed")
    tap.ok(d.get("id") != inf_id and d.get("apiKey") not in (None, ""),
           "create: each key its own id")
    full_id = d.get("id")

    # consumption limits
    for limit, want, name in (
            (None, {"usd": None, "diem": None, "vcu": None}, "consumptionLimit null"),
            ({}, {"usd": None, "diem": None, "vcu": None}, "consumptionLimit {}"),
            ({"usd": 0}, {"usd": 0, "diem": None, "vcu": None}, "usd 0"),
            ({"diem": 0, "usd": None}, {"usd": None, "diem": 0, "vcu": None}, "diem 0, usd null"),
            ({"usd": 9999999999, "diem": 9999999999, "vcu": 9999999999},
             {"usd": 9999999999, "diem": 9999999999, "vcu": 9999999999}, "each 9999999999"),
            ({"usd": 2.5, "diem": 0.125}, {"usd": 2.5, "diem": 0.125, "vcu": None},
             "fractions"),
            ({"vcu": 30}, {"usd": None, "diem": None, "vcu": 30}, "vcu alone (deprecated, kept)")):
        r = api.create({"apiKeyType": "INFERENCE", "description": uniq("limits"),
                        "consumptionLimit": limit})
        tap.ok(r.status == 200 and D(r).get("consumptionLimit") == want,
               "create with %s: consumptionLimit %s" % (name, json.dumps(want)), repr(r))
        if r.status == 200:
            got = listed_one(api, D(r).get("id"))
            tap.eq(got.get("consumptionLimits"), want,
                   "read back: %s stored as consumptionLimits" % name)
    for limit, field, name in (
            ({"usd": -1}, "usd", "usd -1"),
            ({"usd": 10000000000}, "usd", "usd 10000000000"),
            ({"diem": 1e10 + 1}, "diem", "diem above 9999999999"),
            ({"vcu": -0.5}, "vcu", "vcu -0.5"),
            ({"usd": "5"}, "usd", "usd a string"),
            ({"eur": 5}, "eur", "an unknown currency"),
            ([5], "consumptionLimit", "consumptionLimit a list")):
        venice_error(api.create({"apiKeyType": "INFERENCE", "description": uniq("bad"),
                                 "consumptionLimit": limit}), 400,
                     "create with " + name, field)

    # limit periods
    for period, want in ((None, "EPOCH"), ("EPOCH", "EPOCH"), ("MONTH", "MONTH"),
                         ("LIFETIME", "LIFETIME")):
        r = api.create({"apiKeyType": "INFERENCE", "description": uniq("period"),
                        "limitPeriod": period})
        tap.ok(r.status == 200 and D(r).get("limitPeriod") == want,
               "create with limitPeriod %s: %s" % (json.dumps(period), want), repr(r))
    for period in ("WEEK", "epoch", 1):
        venice_error(api.create({"apiKeyType": "INFERENCE", "description": uniq("period"),
                                 "limitPeriod": period}), 400,
                     "create with limitPeriod %s" % json.dumps(period), "limitPeriod")

    # expiresAt: never, a date, an ISO time (in a fresh minute: the clock stays put)
    clock.next_minute()
    api.created = {}
    for given, want, name in (
            ("", None, "\"\" (never)"),
            (None, None, "null (never)"),
            ("2031-06-01", "2031-06-01T00:00:00.000Z", "a date: that day 00:00:00Z"),
            ("2031-06-01T08:30", "2031-06-01T08:30:00.000Z", "an ISO time without seconds"),
            ("2031-06-01T08:30:15", "2031-06-01T08:30:15.000Z", "an ISO time without a zone"),
            ("2031-06-01T08:30:15Z", "2031-06-01T08:30:15.000Z", "an ISO time with Z"),
            ("2031-06-01T08:30:15+00:00", "2031-06-01T08:30:15.000Z", "an ISO time +00:00"),
            ("2031-06-01T08:30:15.123456789Z", "2031-06-01T08:30:15.000Z",
             "an ISO time with a fraction (dropped)"),
            ("2032-02-29", "2032-02-29T00:00:00.000Z", "a leap day"),
            (vtime(clock.now + 1), vtime(clock.now + 1), "one second from now")):
        r = api.create({"apiKeyType": "INFERENCE", "description": uniq("expiry"),
                        "expiresAt": given})
        tap.ok(r.status == 200 and D(r).get("expiresAt") == want and "expiresAt" in D(r),
               "create with expiresAt %s: %s" % (name, json.dumps(want)), repr(r))
        if r.status == 200:
            tap.eq(listed_one(api, D(r).get("id")).get("expiresAt"), want,
                   "read back: expiresAt %s" % name)
    for given, name in (
            ("2020-01-01", "a date in the past"),
            (vtime(clock.now - 1), "one second ago"),
            (vtime(clock.now), "now"),
            ("2031-01-14", "today (its 00:00:00Z has passed)"),
            ("2031-02-30", "February 30"),
            ("2031-13-01", "month 13"),
            ("2031-06-01T24:00", "hour 24"),
            ("2031-06-01T08:60", "minute 60"),
            ("2031-06-01T08:30:15+02:00", "another zone"),
            ("tomorrow", "a word"),
            ("2031-6-1", "unpadded"),
            ("1969-12-31", "before 1970")):
        venice_error(api.create({"apiKeyType": "INFERENCE", "description": uniq("expiry"),
                                 "expiresAt": given}), 400,
                     "create with expiresAt %s (%s)" % (json.dumps(given), name), "expiresAt")
    venice_error(api.create({"apiKeyType": "INFERENCE", "description": uniq("expiry"),
                             "expiresAt": 1893456000}), 400, "create with expiresAt a number",
                 "expiresAt")

    # description and apiKeyType
    r = api.create({"apiKeyType": "INFERENCE", "description": "d" * 64})
    tap.ok(r.status == 200 and D(r).get("description") == "d" * 64,
           "create: a 64-character description", repr(r))
    r = api.create({"apiKeyType": "INFERENCE", "description": "é" * 64})
    tap.ok(r.status == 200 and D(r).get("description") == "é" * 64,
           "create: 64 characters of 2 bytes each (counted in characters)", repr(r))
    venice_error(api.create({"apiKeyType": "INFERENCE", "description": "d" * 65}), 400,
                 "create: a 65-character description", "description")
    venice_error(api.create({"apiKeyType": "INFERENCE", "description": ""}), 400,
                 "create: an empty description", "description")
    venice_error(api.create({"apiKeyType": "INFERENCE"}), 400, "create: no description",
                 "description")
    venice_error(api.create({"apiKeyType": "INFERENCE", "description": None}), 400,
                 "create: description null", "description")
    venice_error(api.create({"description": "no type"}), 400, "create: no apiKeyType",
                 "apiKeyType")
    venice_error(api.create({"apiKeyType": "USER", "description": "x"}), 400,
                 "create: apiKeyType USER", "apiKeyType")
    venice_error(api.create({"apiKeyType": "admin", "description": "x"}), 400,
                 "create: apiKeyType admin (case matters)", "apiKeyType")
    # Venice's request schemas strip keys they do not declare (zod's default): ignored,
    # never honoured
    r = api.create({"apiKeyType": "INFERENCE", "description": "x", "surprise": 1})
    tap.ok(r.status == 200 and "surprise" not in r.body.decode(),
           "create: an unknown field is ignored", repr(r))
    r = api.create({"apiKeyType": "INFERENCE", "description": "x", "apiKey": "sk-mine-0000"})
    tap.ok(r.status == 200 and (r.json or {}).get("data", {}).get("apiKey") != "sk-mine-0000",
           "create: a key of one's own choosing (apiKey) is ignored: keywarden makes the key",
           repr(r))
    venice_error(api.post("/api/v1/api_keys", raw=b'{"apiKeyType": "INFERENCE",',
                          headers={"Content-Type": "application/json"}), 400,
                 "create: malformed JSON")
    venice_error(api.post("/api/v1/api_keys", raw=b"[]",
                          headers={"Content-Type": "application/json"}), 400,
                 "create: a JSON array")
    venice_error(api.post("/api/v1/api_keys"), 400, "create: no body")
    venice_error(api.post("/api/v1/api_keys", raw=b'apiKeyType=ADMIN',
                          headers={"Content-Type": "application/x-www-form-urlencoded"}), 415,
                 "create: a form body")
    venice_error(api.post("/api/v1/api_keys", {"apiKeyType": "INFERENCE",
                                               "description": "x" * 70000}), 413,
                 "create: a body over KEYWARDEN_MAX_BODY")
    tap.eq(listed_one(api, inf_id).get("createdAt"), created_at,
           "createdAt is the creation time, as YYYY-MM-DDTHH:MM:SS.000Z")
    return inf_id, full_id


def listed_one(api, key_id):
    return D(api.key(key_id))


# --- the key shown once; list and get --------------------------------------------------

def shown_once(api):
    d = inference(api, consumptionLimit={"usd": 3})
    k, kid = d["apiKey"], d["id"]
    tap.eq(D(api.key(kid)).get("last6Chars"), k[-6:], "last6Chars are the key's last 6")
    texts = [api.key(kid).body, api.keys().body,
             api.patch({"id": kid, "description": "renamed"}).body, api.limits(k).body]
    tap.ok(all(k.encode() not in t and k[-43:-27].encode() not in t for t in texts),
           "the key is in no answer but its creation's: get, list, patch, its own rate_limits")
    got = D(api.key(kid))
    tap.ok("apiKey" not in got and "key" not in got and "token" not in got,
           "a VeniceKey has no apiKey, key or token field", sorted(got))


def list_and_get(api, inf_id, full_id):
    r = api.keys()
    a = J(r)
    tap.ok(r.status == 200 and a.get("object") == "list" and isinstance(a.get("data"), list),
           "GET /api/v1/api_keys: {\"object\": \"list\", \"data\": [...]}", repr(r))
    keys = {k.get("id"): k for k in a.get("data") or [] if isinstance(k, dict)}
    tap.ok(inf_id in keys and full_id in keys, "the list holds the keys made")
    ids = [k.get("id") for k in a.get("data") or [] if isinstance(k, dict)]
    tap.eq(len(ids), len(set(ids)), "the list names each key once")
    k = keys.get(full_id) or {}
    want_fields = {"id", "description", "apiKeyType", "last6Chars", "createdAt", "lastUsedAt",
                   "expiresAt", "consumptionLimits", "limitPeriod", "modelPrivacy", "usage"}
    tap.eq(set(k), want_fields | {"currentPeriodUsage"},
           "a listed key with limits has exactly the VeniceKey fields, currentPeriodUsage too "
           "(docs.venice.ai api_keys list, Venice's api-keys reference)")
    tap.eq(set(keys.get(inf_id) or {}), want_fields,
           "a key without usd or diem limits has no currentPeriodUsage")
    tap.ok(k.get("apiKeyType") == "ADMIN" and k.get("description") == "Example API Key" and
           k.get("consumptionLimits") == {"usd": 50, "diem": 10, "vcu": 30} and
           k.get("limitPeriod") == "MONTH" and k.get("expiresAt") == "2031-10-01T12:00:00.000Z"
           and k.get("lastUsedAt") is None and VTIME.match(str(k.get("createdAt"))),
           "the full key as listed: type, description, limits, period, expiry, lastUsedAt null, "
           "createdAt", k)
    tap.eq(k.get("usage"), {"trailingSevenDays": {"usd": "0.0000", "vcu": "0.0000",
                                                  "diem": "0.0000"}},
           "a new key's usage.trailingSevenDays: usd, vcu, diem as 4-decimal strings")
    tap.eq(k.get("currentPeriodUsage"), {"usd": "0.0000", "diem": "0.0000"},
           "a new key's currentPeriodUsage: usd and diem as 4-decimal strings")
    tap.ok(all(len(str(v.get("last6Chars"))) == 6 for v in keys.values()),
           "every listed key has last6Chars of 6 characters")
    r = api.key(full_id)
    tap.ok(r.status == 200 and J(r).get("data") == k, "GET /api/v1/api_keys/{id}: {\"data\": "
           "the key as listed}", repr(r))
    r = api.key("0f0f0f0f-0000-4000-8000-000000000000")
    venice_error(r, 400, "GET an unknown id (Venice: 400)")
    tap.eq(J(r).get("error"), "API key not found", "GET an unknown id: Venice's message")
    venice_error(api.key("x" * 65), 400, "GET an id over 64 characters", "id")
    venice_error(api.key("rate_limits-not"), 400, "GET an id that is no key")


# --- patch and delete ----------------------------------------------------------------

def patching(api):
    clock = api.clock
    d = inference(api, consumptionLimit={"usd": 5, "diem": 2, "vcu": 1}, limitPeriod="MONTH",
                  expiresAt="2031-12-01", description="before")
    kid = d["id"]
    before = D(api.key(kid))

    def patched(body, name, **changes):
        r = api.patch(dict(body, id=kid))
        want = dict(before)
        want.update(changes)
        # currentPeriodUsage is there while the key has a usd or diem limit (nothing spent)
        limits = want.get("consumptionLimits") or {}
        if limits.get("usd") is None and limits.get("diem") is None:
            want.pop("currentPeriodUsage", None)
        else:
            want.setdefault("currentPeriodUsage", {"usd": "0.0000", "diem": "0.0000"})
        got = D(r)
        tap.ok(r.status == 200 and J(r).get("success") is True and got == want,
               "PATCH %s: only that changes (answer)" % name,
               "got %d %s\nwant %s" % (r.status, r.body[:600], json.dumps(want)))
        tap.eq(D(api.key(kid)), want, "PATCH %s: read back" % name)
        before.clear()
        before.update(want)

    patched({"description": "after"}, "description", description="after")
    patched({"modelPrivacy": "PRIVATE_TEXT"}, "modelPrivacy", modelPrivacy="PRIVATE_TEXT")
    patched({"modelPrivacy": "PRIVATE_ONLY"}, "modelPrivacy again", modelPrivacy="PRIVATE_ONLY")
    patched({"limitPeriod": "LIFETIME"}, "limitPeriod", limitPeriod="LIFETIME")
    patched({"limitPeriod": None}, "limitPeriod null (EPOCH)", limitPeriod="EPOCH")
    patched({"consumptionLimit": {"usd": 7}}, "consumptionLimit {usd} (the other currencies "
            "kept)", consumptionLimits={"usd": 7, "diem": 2, "vcu": 1})
    patched({"consumptionLimit": {"diem": None}}, "consumptionLimit {diem: null} (diem cleared)",
            consumptionLimits={"usd": 7, "diem": None, "vcu": 1})
    patched({"consumptionLimit": None}, "consumptionLimit null (every limit cleared)",
            consumptionLimits={"usd": None, "diem": None, "vcu": None})
    patched({"expiresAt": "2031-11-05T10:00:00Z"}, "expiresAt an ISO time",
            expiresAt="2031-11-05T10:00:00.000Z")
    patched({"expiresAt": ""}, "expiresAt \"\" (never)", expiresAt=None)
    patched({"expiresAt": "2031-07-04"}, "expiresAt a date", expiresAt="2031-07-04T00:00:00.000Z")
    patched({"expiresAt": None}, "expiresAt null (never)", expiresAt=None)
    patched({}, "nothing but the id (nothing changes)")
    patched({"description": "both", "consumptionLimit": {"usd": 1, "diem": 1}},
            "description and consumptionLimit together", description="both",
            consumptionLimits={"usd": 1, "diem": 1, "vcu": None})

    r = api.patch({"id": "0f0f0f0f-0000-4000-8000-000000000000", "description": "x"})
    venice_error(r, 400, "PATCH an unknown id (Venice: 400)")
    tap.eq(J(r).get("error"), "API key not found or expired", "PATCH an unknown id: Venice's "
           "message")
    venice_error(api.patch({"description": "x"}), 400, "PATCH without id", "id")
    venice_error(api.patch({"id": kid, "expiresAt": "2020-01-01"}), 400,
                 "PATCH expiresAt in the past", "expiresAt")
    venice_error(api.patch({"id": kid, "expiresAt": vtime(clock.now)}), 400,
                 "PATCH expiresAt now", "expiresAt")
    venice_error(api.patch({"id": kid, "description": "d" * 65}), 400,
                 "PATCH a 65-character description", "description")
    r = api.patch({"id": kid, "apiKeyType": "ADMIN"})
    tap.ok(r.status == 200 and (r.json or {}).get("data", {}).get("apiKeyType") == "INFERENCE",
           "PATCH apiKeyType is ignored: a key's type never changes", repr(r))
    venice_error(api.patch({"id": kid, "consumptionLimit": {"usd": -1}}), 400,
                 "PATCH a negative usd limit", "usd")
    venice_error(api.patch({"id": kid, "limitPeriod": "DAY"}), 400, "PATCH limitPeriod DAY",
                 "limitPeriod")
    venice_error(api.patch({"id": kid, "modelPrivacy": "PRIVATE"}), 400,
                 "PATCH modelPrivacy PRIVATE (not Venice's)", "modelPrivacy")
    tap.eq(D(api.key(kid)), before, "the refused PATCHes changed nothing")

    # an expiry set by PATCH is enforced
    d = inference(api)
    api.patch({"id": d["id"], "expiresAt": vtime(clock.now + 30)})
    verdict(api.verify(d["apiKey"]), "VALID", "a key PATCHed to expire in 30 s, before")
    clock.advance(31)
    verdict(api.verify(d["apiKey"]), "EXPIRED", "the same key 31 s later")
    venice_error(api.limits(d["apiKey"]), 401, "an expired key's own rate_limits")
    r = api.patch({"id": d["id"], "expiresAt": ""})
    venice_error(r, 400, "PATCH expiresAt \"\" on an expired key (Venice: not found or "
                 "expired)")
    verdict(api.verify(d["apiKey"]), "EXPIRED", "the expired key stays expired")


def deleting(api):
    d = inference(api)
    k, kid = d["apiKey"], d["id"]
    verdict(api.verify(k), "VALID", "a key before DELETE")
    tap.eq(api.limits(k).status, 200, "the key reads its rate_limits before DELETE")
    r = api.delete(kid)
    tap.ok(r.status == 200 and J(r) == {"success": True}, "DELETE ?id=: {\"success\": true}",
           repr(r))
    a = J(api.verify(k))
    tap.ok(a.get("valid") is False and a.get("code") == "NOT_FOUND",
           "the deleted key: POST /key/verify with the master key answers NOT_FOUND", a)
    res = api.authorize("/v1/chat/completions", k)
    refused(res, 401, None, "the deleted key")
    venice_error(api.limits(k), 401, "the deleted key cannot read its rate_limits")
    venice_error(api.key(kid), 400, "GET the deleted id")
    tap.ok(kid not in listed(api), "the deleted key is not listed")
    r = api.delete(kid)
    venice_error(r, 400, "DELETE it again (Venice: 400)")
    tap.eq(J(r).get("error"), "API key could not be found", "DELETE an unknown id: Venice's "
           "message")
    venice_error(api.patch({"id": kid, "description": "x"}), 400, "PATCH the deleted id")
    venice_error(api.call("DELETE", "/api/v1/api_keys"), 400, "DELETE without ?id=", "id")
    venice_error(api.delete("0f0f0f0f-0000-4000-8000-000000000000"), 400, "DELETE an unknown id")
    # Venice's DELETE takes the id in a JSON body too (its api-keys reference)
    d = inference(api)
    r = api.call("DELETE", "/api/v1/api_keys", {"id": d["id"]})
    tap.ok(r.status == 200 and J(r) == {"success": True}, "DELETE with {\"id\"} in the body",
           repr(r))
    verdict(api.verify(d["apiKey"]), "NOT_FOUND", "the key deleted by a body's id")
    venice_error(api.call("DELETE", "/api/v1/api_keys", {"id": d["id"]}), 400,
                 "DELETE it again by body")
    venice_error(api.call("DELETE", "/api/v1/api_keys", {}), 400,
                 "DELETE with an empty body and no ?id=", "id")
    # an ADMIN key deleted while in use: its next request is refused
    a = admin_key(api)
    tap.eq(api.keys(a["apiKey"]).status, 200, "an ADMIN key lists")
    api.delete(a["id"])
    venice_error(api.keys(a["apiKey"]), 401, "the deleted ADMIN key's next request")


# --- callers and owners --------------------------------------------------------------

def callers(api):
    inf = inference(api)
    adm = admin_key(api)
    lite = litellm_key(api)
    boss_uid = uniq("venice-proxy-admin")
    r = api.post("/user/new", {"user_id": boss_uid, "user_role": "proxy_admin"})
    boss = J(r).get("key") or "sk-setup-failed-boss"
    target = inference(api)
    for who, label in ((inf["apiKey"], "an INFERENCE key"), (lite, "a LiteLLM key"),
                       (boss, "a LiteLLM proxy_admin's key"), (NOBODY, "no credential"),
                       ("sk-venice-unknown-000000", "an unknown key"),
                       (sha(adm["apiKey"]), "an ADMIN key's hash")):
        venice_error(api.create({"apiKeyType": "INFERENCE", "description": "x"}, who=who,
                                counted=False), 401, "create by " + label)
        venice_error(api.keys(who), 401, "list by " + label)
        venice_error(api.key(target["id"], who), 401, "get by " + label)
        venice_error(api.patch({"id": target["id"], "description": "x"}, who=who), 401,
                     "patch by " + label)
        venice_error(api.delete(target["id"], who), 401, "delete by " + label)
        venice_error(api.log(who), 401, "the log by " + label)
    tap.ok(target["id"] in listed(api), "the refused callers deleted nothing")
    r = api.get("/api/v1/api_keys", headers={"x-api-key": adm["apiKey"]}, who=NOBODY)
    tap.eq(r.status, 200, "an ADMIN key in x-api-key lists")
    d = admin_key(api, who=adm["apiKey"])
    tap.ok(KEY_RE.match(str(d.get("apiKey"))), "an ADMIN key creates keys")
    r = api.patch({"id": d["id"], "description": "by admin"}, who=adm["apiKey"])
    tap.eq(r.status, 200, "an ADMIN key patches")
    tap.eq(api.key(d["id"], adm["apiKey"]).status, 200, "an ADMIN key gets")
    tap.eq(api.log(adm["apiKey"]).status, 200, "an ADMIN key reads the log")
    tap.eq(api.delete(d["id"], adm["apiKey"]).status, 200, "an ADMIN key deletes")
    r = api.limits(inf["apiKey"])
    tap.ok(r.status == 200 and D(r).get("accessPermitted") is True,
           "an INFERENCE key reads its own rate_limits", repr(r))
    r = api.limits(adm["apiKey"])
    tap.ok(r.status == 200 and D(r).get("accessPermitted") is True,
           "an ADMIN key reads its own rate_limits", repr(r))
    venice_error(api.limits(MASTER), 400, "rate_limits with the master key")
    venice_error(api.limits(lite), 401, "rate_limits with a LiteLLM key")
    venice_error(api.limits(NOBODY), 401, "rate_limits without a credential")
    venice_error(api.limits("sk-venice-unknown-000000"), 401, "rate_limits with an unknown key")
    # a Venice key on the LiteLLM face: an INFERENCE key changes nothing there
    r = api.post("/key/generate", {}, who=inf["apiKey"])
    tap.ok(r.status in (401, 403), "an INFERENCE key cannot make LiteLLM keys", repr(r))
    tap.eq(api.post("/key/block", {"key": sha(inf["apiKey"])}).status, 200,
           "LiteLLM's /key/block blocks a Venice key")
    venice_error(api.limits(inf["apiKey"]), 401, "a blocked INFERENCE key reads no rate_limits")
    verdict(api.verify(inf["apiKey"]), "BLOCKED", "a blocked Venice key")


def scoping(api):
    alice = owned_admin(api, uniq("alice"))
    bob = owned_admin(api, uniq("bob"))
    other_master_admin = admin_key(api)
    ka = inference(api, who=alice["apiKey"], owner="alice")
    ka2 = admin_key(api, who=alice["apiKey"], owner="alice")
    kb = inference(api, who=bob["apiKey"], owner="bob")
    km = inference(api)
    seen = listed(api, alice["apiKey"])
    tap.ok(ka["id"] in seen and ka2["id"] in seen,
           "an ADMIN key lists the keys of its owner", sorted(seen))
    tap.ok(kb["id"] not in seen and km["id"] not in seen and alice["id"] not in seen,
           "... and no other owner's (not bob's, not the master key's, not itself: the master "
           "made it)", sorted(seen))
    tap.eq(set(listed(api, ka2["apiKey"])), set(seen),
           "an ADMIN key made by alice's ADMIN key sees the same keys (the same owner)")
    seen_b = listed(api, bob["apiKey"])
    tap.ok(set(seen_b) == {kb["id"]}, "bob's ADMIN key lists bob's key alone", sorted(seen_b))
    seen_m = listed(api)
    tap.ok(all(i in seen_m for i in (ka["id"], ka2["id"], kb["id"], km["id"], alice["id"])),
           "the master key lists every owner's keys")
    seen_o = listed(api, other_master_admin["apiKey"])
    tap.ok(km["id"] in seen_o and alice["id"] in seen_o and ka["id"] not in seen_o and
           kb["id"] not in seen_o,
           "an ADMIN key the master made sees the master's keys, not alice's or bob's")
    for name, call in (("GET", lambda w, i: api.key(i, w)),
                       ("PATCH", lambda w, i: api.patch({"id": i, "description": "x"}, who=w)),
                       ("DELETE", lambda w, i: api.delete(i, w))):
        venice_error(call(alice["apiKey"], kb["id"]), 400, "%s bob's key by alice's ADMIN key"
                     % name)
        venice_error(call(alice["apiKey"], km["id"]), 400, "%s the master's key by alice's "
                     "ADMIN key" % name)
    tap.ok(kb["id"] in listed(api) and km["id"] in listed(api),
           "the refused cross-owner deletes deleted nothing")
    r = api.patch({"id": ka["id"], "description": "alice's"}, who=alice["apiKey"])
    tap.eq(r.status, 200, "alice's ADMIN key patches alice's key")
    r = api.patch({"id": ka["id"], "description": "by master"})
    tap.eq(r.status, 200, "the master key patches alice's key")
    # the owner's keys carry the owner's user_id (LiteLLM's view of the record)
    info = J(api.get("/key/info?key=" + sha(ka["apiKey"]))).get("info") or {}
    alice_uid = info.get("user_id")
    tap.ok(alice_uid and alice_uid.startswith("alice-") and
           (info.get("venice") or {}).get("owner") == "user:" + alice_uid,
           "alice's keys hold user_id alice and venice.owner user:alice (no user is 'master')",
           info)
    info = J(api.get("/key/info?key=" + sha(km["apiKey"]))).get("info") or {}
    tap.ok(info.get("user_id") is None and (info.get("venice") or {}).get("owner") == "master",
           "the master key's keys: user_id null, venice.owner master", info)
    tap.ok((info.get("venice") or {}).get("id") == km["id"] and
           info.get("key_alias") == "venice:" + km["id"],
           "the record's venice.id and key_alias venice:<id>", info)
    return alice, bob, ka, kb


# --- the creation rate limit and the active-key cap --------------------------------------

def creation_rate(api):
    clock = api.clock
    carl = owned_admin(api, uniq("carl"))
    clock.next_minute()
    api.created = {}
    for i in range(3):
        venice_error(api.create({"apiKeyType": "INFERENCE", "description": "d" * 65},
                                who=carl["apiKey"], owner="carl", counted=False), 400,
                     "a refused creation %d in a fresh minute" % (i + 1))
    venice_error(api.create({"apiKeyType": "INFERENCE", "description": "x",
                             "expiresAt": "2020-01-01"}, who=carl["apiKey"], owner="carl",
                            counted=False), 400, "a creation with a past expiry")
    before = len(listed(api, carl["apiKey"]))
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        rs = list(pool.map(lambda i: api.create(
            {"apiKeyType": "INFERENCE", "description": "burst %d" % i}, who=carl["apiKey"],
            owner="carl", counted=False), range(20)))
    tap.eq(sorted(r.status for r in rs), [200] * 20,
           "20 creations in one minute (8 at a time, refused ones before them not counted)")
    r = api.create({"apiKeyType": "INFERENCE", "description": "the 21st"}, who=carl["apiKey"],
                   owner="carl", counted=False)
    venice_error(r, 429, "the 21st creation in the minute")
    tap.ok("20" in str(J(r).get("error")), "the 429 says 20 a minute", J(r))
    tap.eq(len(listed(api, carl["apiKey"])), before + 20, "the 429 made no key")
    r = api.create({"apiKeyType": "INFERENCE", "description": "another owner"},
                   counted=False)
    tap.eq(r.status, 200, "another owner (the master key) creates in the same minute")
    clock.advance(54)
    venice_error(api.create({"apiKeyType": "INFERENCE", "description": "x"}, who=carl["apiKey"],
                            owner="carl", counted=False), 429, "59 s into the minute: still 429")
    clock.next_minute()
    api.created = {}
    r = api.create({"apiKeyType": "INFERENCE", "description": "next minute"},
                   who=carl["apiKey"], owner="carl")
    tap.eq(r.status, 200, "the next minute: creation allowed again")
    # a concurrent burst of 30: exactly 20 succeed
    clock.next_minute()
    api.created = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        rs = list(pool.map(lambda i: api.create(
            {"apiKeyType": "INFERENCE", "description": "race %d" % i}, who=carl["apiKey"],
            owner="carl", counted=False), range(30)))
    tap.eq((sum(r.status == 200 for r in rs), sum(r.status == 429 for r in rs)), (20, 10),
           "30 concurrent creations in one minute: 20 made, 10 refused with 429")
    clock.next_minute()
    api.created = {}


def active_cap(api):
    clock = api.clock
    dana = owned_admin(api, uniq("dana"))
    who = dana["apiKey"]
    have = len(listed(api, who))
    exp_at = clock.now + 3600 * 2
    first = made(api, {"apiKeyType": "INFERENCE", "description": "expiring",
                       "expiresAt": vtime(exp_at)}, who=who, owner="dana")
    have += 1
    doomed = None
    failures = []
    while have < 500:
        clock.next_minute()
        api.created = {}
        n = min(20, 500 - have)
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            rs = list(pool.map(lambda i: api.create(
                {"apiKeyType": "INFERENCE", "description": "cap"}, who=who, owner="dana",
                counted=False), range(n)))
        failures += [r for r in rs if r.status != 200]
        have += sum(r.status == 200 for r in rs)
        if doomed is None and rs and rs[0].status == 200:
            doomed = D(rs[0])
        if failures:
            break
    tap.ok(not failures and have == 500, "500 keys for one owner (20 a minute)",
           "made %d; %s" % (have, failures[:3]))
    clock.next_minute()
    api.created = {}
    r = api.create({"apiKeyType": "INFERENCE", "description": "the 501st"}, who=who,
                   owner="dana", counted=False)
    venice_error(r, 400, "the 501st active key")
    tap.ok("500" in str(J(r).get("error")), "the refusal names the cap of 500", J(r))
    r = api.create({"apiKeyType": "ADMIN", "description": "another owner"}, counted=False)
    tap.eq(r.status, 200, "another owner is not capped by dana's 500")
    clock.set(exp_at)
    r = api.create({"apiKeyType": "INFERENCE", "description": "after expiry"}, who=who,
                   owner="dana", counted=False)
    tap.eq(r.status, 200, "once one of the 500 expired, a new key may be made")
    venice_error(api.create({"apiKeyType": "INFERENCE", "description": "x"}, who=who,
                            owner="dana", counted=False), 400,
                 "and then the cap again")
    tap.ok(first["id"] not in listed(api, who), "the expired key is not listed (Venice lists "
           "active keys)")
    if doomed:
        tap.eq(api.delete(doomed["id"], who).status, 200, "delete one of dana's keys")
    r = api.create({"apiKeyType": "INFERENCE", "description": "after delete"}, who=who,
                   owner="dana", counted=False)
    tap.eq(r.status, 200, "a deleted key frees its place")
    clock.next_minute()
    api.created = {}


# --- the audit trail ------------------------------------------------------------------

def audit_trail(api):
    d = inference(api, consumptionLimit={"usd": 4})
    token = sha(d["apiKey"])
    api.patch({"id": d["id"], "description": "audited"})
    api.delete(d["id"])
    r = api.get("/audit?page_size=100&object_id=" + token)
    entries = J(r).get("audit_logs") or []
    tap.eq([e.get("action") for e in entries], ["deleted", "updated", "created"],
           "GET /audit?object_id=<token>: deleted, updated, created (newest first)")
    tap.ok(entries and all(e.get("table_name") == "Venice_ApiKey" for e in entries),
           "each on table Venice_ApiKey", [e.get("table_name") for e in entries])
    tap.ok(len(entries) == 3 and entries[2].get("before_value") is None and
           ((entries[2].get("updated_values") or {}).get("venice") or {}).get("id") == d["id"] and
           ((entries[1].get("before_value") or {}).get("venice") or {}).get("description") !=
           "audited" and
           ((entries[1].get("updated_values") or {}).get("venice") or {}).get("description") ==
           "audited" and entries[0].get("updated_values") is None and
           (entries[0].get("before_value") or {}).get("token") == token,
           "created: after the record; updated: before and after; deleted: before",
           json.dumps(entries)[:1500])
    tap.ok(all(e.get("changed_by") == "default_user_id" and e.get("changed_by_api_key") is None
               for e in entries), "changed_by: the master key's default_user_id",
           [(e.get("changed_by"), e.get("changed_by_api_key")) for e in entries])
    # by an ADMIN key with an owner
    erin_uid = uniq("erin")
    erin = owned_admin(api, erin_uid)
    d = inference(api, who=erin["apiKey"], owner="erin")
    entries = J(api.get("/audit?page_size=10&object_id=" + sha(d["apiKey"]))).get(
        "audit_logs") or []
    tap.ok(len(entries) == 1 and entries[0].get("changed_by") == erin_uid and
           entries[0].get("changed_by_api_key") == sha(erin["apiKey"]),
           "a creation by an owned ADMIN key: changed_by the owner, changed_by_api_key its "
           "hash", entries)
    r = api.get("/audit?page_size=1&table_name=Venice_ApiKey")
    tap.ok(r.status == 200 and (J(r).get("audit_logs") or [{}])[0].get("table_name") ==
           "Venice_ApiKey", "GET /audit?table_name=Venice_ApiKey filters the Venice entries",
           repr(r))


# --- enforcement ------------------------------------------------------------------------

def enforcement(api):
    """usd and diem limits through /key/verify, the authorizer and rate_limits; periods on
    the pinned clock.  Runs from 2031-01-14 to 2031-02-01."""
    clock = api.clock
    fresh_day = ts(2031, 1, 14, 12, 0, 5)
    if clock.now < fresh_day:
        clock.set(fresh_day)
    api.created = {}
    usd = inference(api, consumptionLimit={"usd": 1})
    diem = inference(api, consumptionLimit={"diem": 2})
    both = inference(api, consumptionLimit={"usd": 10, "diem": 10})
    month = inference(api, consumptionLimit={"usd": 1}, limitPeriod="MONTH")
    life = inference(api, consumptionLimit={"usd": 1}, limitPeriod="LIFETIME")
    free = inference(api)
    adm = admin_key(api, consumptionLimit={"usd": 100})
    week = inference(api)
    expiring = inference(api, expiresAt="2031-01-20")

    # rate_limits before any use (docs.venice.ai api_keys/rate_limits)
    r = api.limits(usd["apiKey"])
    a = D(r)
    tap.eq(sorted(a), ["accessPermitted", "apiTier", "balances", "keyExpiration",
                       "nextEpochBegins", "rateLimits"],
           "rate_limits: exactly Venice's fields")
    tap.ok(r.status == 200 and a.get("accessPermitted") is True and
           a.get("apiTier") == {"id": "paid", "isCharged": True} and
           "keyExpiration" in a and a["keyExpiration"] is None and a.get("rateLimits") == [],
           "rate_limits: permitted, apiTier paid and charged, no expiration, no rate limits",
           repr(r))
    tap.eq(a.get("balances"), {"USD": 1}, "rate_limits: balances USD 1 (the limit) as a "
           "number, DIEM left out (no limit)")
    tap.eq(a.get("nextEpochBegins"), "2031-01-15T00:00:00.000Z",
           "EPOCH: nextEpochBegins is the next UTC midnight")
    for k, name in ((month, "MONTH"), (life, "LIFETIME")):
        tap.eq(D(api.limits(k["apiKey"])).get("nextEpochBegins"), "2031-01-15T00:00:00.000Z",
               "%s: nextEpochBegins is still a time, the next epoch (UTC midnight)" % name)
    tap.eq(D(api.limits(expiring["apiKey"])).get("keyExpiration"),
           "2031-01-20T00:00:00.000Z", "rate_limits: keyExpiration")
    tap.eq(D(api.limits(free["apiKey"])).get("balances"), {},
           "a key without limits: no balance is known")
    # the key's rate limits, set on the LiteLLM face, as Venice lists them
    api.post("/key/update", {"key": sha(week["apiKey"]), "rpm_limit": 100, "tpm_limit": 5000,
                             "model_rpm_limit": {"llama-3.3-70b": 7}})
    tap.eq(D(api.limits(week["apiKey"])).get("rateLimits"), [
        {"apiModelId": "*", "rateLimits": [{"type": "RPM", "amount": 100},
                                           {"type": "TPM", "amount": 5000}]},
        {"apiModelId": "llama-3.3-70b", "rateLimits": [{"type": "RPM", "amount": 7}]}],
        "rateLimits: the key's rpm and tpm under \"*\", per-model ones by apiModelId")
    api.post("/key/update", {"key": sha(week["apiKey"]), "rpm_limit": None, "tpm_limit": None,
                             "model_rpm_limit": {}})

    # usd
    verdict(api.verify(usd["apiKey"], model="llama-3.3-70b"), "VALID", "usd 1, nothing spent")
    tap.eq(api.authorize("/v1/chat/completions", usd["apiKey"]).status, 200,
           "AUTHORIZER: usd 1, nothing spent: 200")
    api.usage(usd["apiKey"], cost=0.6)
    verdict(api.verify(usd["apiKey"]), "VALID", "usd 1, 0.6 spent")
    r = api.limits(usd["apiKey"])
    tap.ok(close((D(r).get("balances") or {}).get("USD"), 0.4) and
           D(r).get("accessPermitted") is True, "rate_limits after 0.6: USD balance 0.4",
           D(r))
    api.usage(usd["apiKey"], cost=0.6)
    verdict(api.verify(usd["apiKey"], model="llama-3.3-70b"),
            "API_KEY_USD_SPEND_LIMIT_EXCEEDED", "usd 1, 1.2 spent")
    refused(api.authorize("/v1/chat/completions", usd["apiKey"]), 402,
            "API_KEY_USD_SPEND_LIMIT_EXCEEDED", "usd limit spent")
    r = api.limits(usd["apiKey"])
    tap.ok(D(r).get("accessPermitted") is False and
           close((D(r).get("balances") or {}).get("USD"), 0),
           "rate_limits: accessPermitted false, USD balance 0 (never below)", D(r))
    got = listed(api).get(usd["id"]) or {}
    tap.ok(close(num((got.get("currentPeriodUsage") or {}).get("usd")), 1.2) and
           close(num(((got.get("usage") or {}).get("trailingSevenDays") or {}).get("usd")), 1.2),
           "the list's usage: 1.2 usd in the period (currentPeriodUsage) and over seven days",
           got)
    # raising the limit lifts the refusal at once
    api.patch({"id": usd["id"], "consumptionLimit": {"usd": 5}})
    verdict(api.verify(usd["apiKey"]), "VALID", "the usd limit PATCHed to 5")
    api.patch({"id": usd["id"], "consumptionLimit": {"usd": 1}})
    verdict(api.verify(usd["apiKey"]), "API_KEY_USD_SPEND_LIMIT_EXCEEDED",
            "the usd limit PATCHed back to 1")

    # diem
    api.usage(diem["apiKey"], diem=1.5)
    verdict(api.verify(diem["apiKey"]), "VALID", "diem 2, 1.5 spent")
    tap.ok(close((D(api.limits(diem["apiKey"])).get("balances") or {}).get("DIEM"), 0.5),
           "rate_limits: DIEM balance 0.5")
    api.usage(diem["apiKey"], diem=0.5, cost=3)
    verdict(api.verify(diem["apiKey"]), "API_KEY_DIEM_SPEND_LIMIT_EXCEEDED",
            "diem 2, 2 spent (usd unlimited)")
    refused(api.authorize("/v1/chat/completions", diem["apiKey"]), 402,
            "API_KEY_DIEM_SPEND_LIMIT_EXCEEDED", "diem limit spent")
    api.usage(both["apiKey"], cost=10, diem=10)
    verdict(api.verify(both["apiKey"]), "API_KEY_USD_SPEND_LIMIT_EXCEEDED",
            "both limits spent: usd is checked first")
    verdict(api.verify(free["apiKey"]), "VALID", "a key without limits")
    api.usage(free["apiKey"], cost=1000, diem=1000)
    verdict(api.verify(free["apiKey"]), "VALID", "a key without limits after 1000 of each")

    # routes: INFERENCE keys call models only; ADMIN keys manage
    tap.eq(api.authorize("/v1/chat/completions", free["apiKey"]).status, 200,
           "AUTHORIZER: an INFERENCE key on /v1/chat/completions")
    refused(api.authorize("/api/v1/api_keys", free["apiKey"], "GET"), 403, "ROUTE_NOT_ALLOWED",
            "an INFERENCE key on /api/v1/api_keys")
    refused(api.authorize("/key/info", free["apiKey"], "GET"), 403, "ROUTE_NOT_ALLOWED",
            "an INFERENCE key on /key/info")
    verdict(api.verify(free["apiKey"], route="/api/v1/api_keys"), "ROUTE_NOT_ALLOWED",
            "/key/verify: an INFERENCE key's route /api/v1/api_keys")
    tap.eq(api.authorize("/api/v1/api_keys", adm["apiKey"], "GET").status, 200,
           "AUTHORIZER: an ADMIN key on /api/v1/api_keys")
    tap.eq(api.authorize("/v1/chat/completions", adm["apiKey"]).status, 200,
           "AUTHORIZER: an ADMIN key on /v1/chat/completions")

    # EPOCH: resets at UTC midnight; MONTH and LIFETIME do not
    api.usage(month["apiKey"], cost=1)
    api.usage(life["apiKey"], cost=1)
    api.usage(week["apiKey"], cost=2, diem=3)
    clock.set(ts(2031, 1, 14, 23, 59, 59))
    verdict(api.verify(usd["apiKey"]), "API_KEY_USD_SPEND_LIMIT_EXCEEDED",
            "EPOCH at 23:59:59: still spent")
    clock.set(ts(2031, 1, 15, 0, 0, 0))
    verdict(api.verify(usd["apiKey"]), "VALID", "EPOCH at 00:00:00 UTC the next day: reset")
    verdict(api.verify(diem["apiKey"]), "VALID", "EPOCH diem: reset at midnight too")
    tap.eq(api.authorize("/v1/chat/completions", usd["apiKey"]).status, 200,
           "AUTHORIZER: the reset usd key passes")
    a = D(api.limits(usd["apiKey"]))
    tap.ok(a.get("accessPermitted") is True and close((a.get("balances") or {}).get("USD"), 1)
           and a.get("nextEpochBegins") == "2031-01-16T00:00:00.000Z",
           "rate_limits after the reset: USD balance 1, next epoch the 16th", a)
    got = listed(api).get(usd["id"]) or {}
    tap.ok(close(num((got.get("currentPeriodUsage") or {}).get("usd")), 0) and
           close(num(((got.get("usage") or {}).get("trailingSevenDays") or {}).get("usd")), 1.2),
           "usage after the reset: 0 in the period, 1.2 over seven days", got)
    verdict(api.verify(expiring["apiKey"]), "VALID", "expiresAt 2031-01-20, on the 15th")
    verdict(api.verify(month["apiKey"]), "API_KEY_USD_SPEND_LIMIT_EXCEEDED",
            "MONTH the next day: still spent")
    verdict(api.verify(life["apiKey"]), "API_KEY_USD_SPEND_LIMIT_EXCEEDED",
            "LIFETIME the next day: still spent")
    api.usage(week["apiKey"], cost=1, diem=1)
    clock.set(ts(2031, 1, 20, 12, 0, 0))
    w = listed(api).get(week["id"]) or {}
    g = w.get("usage") or {}
    tap.ok(close(num((g.get("trailingSevenDays") or {}).get("usd")), 3) and
           close(num((g.get("trailingSevenDays") or {}).get("diem")), 4) and
           "currentPeriodUsage" not in w,
           "the 20th: seven days hold the 14th's and 15th's use (3 usd, 4 diem); no limit, no "
           "currentPeriodUsage", w)
    clock.set(ts(2031, 1, 21, 0, 0, 1))
    g = (listed(api).get(week["id"]) or {}).get("usage") or {}
    tap.ok(close(num((g.get("trailingSevenDays") or {}).get("usd")), 1) and
           close(num((g.get("trailingSevenDays") or {}).get("diem")), 1),
           "the 21st: the 14th has left the seven days (1 usd, 1 diem)", g)
    clock.set(ts(2031, 1, 22, 0, 0, 1))
    g = (listed(api).get(week["id"]) or {}).get("usage") or {}
    tap.ok(close(num((g.get("trailingSevenDays") or {}).get("usd")), 0),
           "the 22nd: the 15th has left too", g)
    clock.set(ts(2031, 1, 31, 23, 59, 59))
    verdict(api.verify(month["apiKey"]), "API_KEY_USD_SPEND_LIMIT_EXCEEDED",
            "MONTH on the 31st at 23:59:59: still spent")
    clock.set(ts(2031, 2, 1, 0, 0, 0))
    verdict(api.verify(month["apiKey"]), "VALID", "MONTH on the 1st: reset")
    verdict(api.verify(life["apiKey"]), "API_KEY_USD_SPEND_LIMIT_EXCEEDED",
            "LIFETIME a month on: never resets")
    return expiring


def expiry_enforced(api, expiring):
    """expiring (expiresAt 2031-01-20) checked after the enforcement moved time past it."""
    verdict(api.verify(expiring["apiKey"]), "EXPIRED", "a key past its expiresAt")
    refused(api.authorize("/v1/chat/completions", expiring["apiKey"]), 401, None,
            "a key past its expiresAt")
    venice_error(api.limits(expiring["apiKey"]), 401, "an expired key's rate_limits")
    tap.ok(expiring["id"] not in listed(api), "an expired key is not listed")
    venice_error(api.key(expiring["id"]), 400, "GET an expired key (Venice: not found)")
    venice_error(api.patch({"id": expiring["id"], "description": "x"}), 400,
                 "PATCH an expired key (Venice: not found or expired)")


def breaches_log(api, alice, bob):
    """Rate-limit refusals (docs.venice.ai api_keys/rate_limits/log: apiKeyId, modelId,
    rateLimitTier, rateLimitType RPM or TPM, timestamp), by owner; the last 50, newest first.
    A spent consumption limit is a 402, no rate limit: it is not logged, as Venice."""
    clock = api.clock
    ka = inference(api, who=alice["apiKey"], owner="alice", consumptionLimit={"usd": 0})
    kb = inference(api, who=bob["apiKey"], owner="bob")
    verdict(api.verify(ka["apiKey"], model="venice-uncensored"),
            "API_KEY_USD_SPEND_LIMIT_EXCEEDED", "a usd limit of 0 refuses at once")
    tap.eq(J(api.log(alice["apiKey"])).get("data"), [], "a spent usd limit is no rate-limit "
           "breach: the log stays empty")
    api.patch({"id": ka["id"], "consumptionLimit": None})
    api.post("/key/update", {"key": sha(ka["apiKey"]), "rpm_limit": 0})
    api.post("/key/update", {"key": sha(kb["apiKey"]), "tpm_limit": 10})
    clock.advance(1)
    t_a = clock.now
    verdict(api.verify(ka["apiKey"], model="venice-uncensored"), "RATE_LIMITED",
            "an rpm_limit of 0 refuses at once")
    clock.advance(1)
    refused(api.authorize("/openai/deployments/qwen3-4b/chat/completions", ka["apiKey"]), 429,
            "RATE_LIMITED", "an rpm_limit of 0")
    tap.eq((J(api.log(alice["apiKey"])).get("data") or [{}])[0].get("modelId"), "qwen3-4b",
           "the authorizer's refusal is logged with the path's model")
    clock.advance(1)
    t_b = clock.now
    verdict(api.verify(kb["apiKey"], model="qwen3-4b", expected_tokens=100), "RATE_LIMITED",
            "a tpm_limit of 10 refuses a request expecting 100 tokens")
    r = api.log(alice["apiKey"])
    rows = J(r).get("data") or []
    tap.ok(r.status == 200 and J(r).get("object") == "list" and rows and
           rows[1] == {"apiKeyId": ka["id"], "modelId": "venice-uncensored",
                       "rateLimitTier": "paid", "rateLimitType": "RPM",
                       "timestamp": vtime(t_a)},
           "alice's log: the RPM refusal (apiKeyId, modelId, rateLimitTier, rateLimitType, "
           "timestamp)", repr(r))
    tap.ok(all(x.get("apiKeyId") != kb["id"] for x in rows), "alice's log has no bob's rows")
    rows_b = J(api.log(bob["apiKey"])).get("data") or []
    tap.ok(rows_b and rows_b[0].get("apiKeyId") == kb["id"] and
           rows_b[0].get("modelId") == "qwen3-4b" and rows_b[0].get("rateLimitType") == "TPM"
           and rows_b[0].get("timestamp") == vtime(t_b),
           "bob's log: the TPM refusal", rows_b[:2])
    tap.ok(all(x.get("apiKeyId") != ka["id"] for x in rows_b), "bob's log has no alice's rows")
    rows_m = J(api.log()).get("data") or []
    ids = [x.get("apiKeyId") for x in rows_m]
    tap.ok(kb["id"] in ids and ka["id"] in ids and ids.index(kb["id"]) < ids.index(ka["id"]),
           "the master key's log: every owner's rows, newest first", rows_m[:3])
    verdict(api.verify(ka["apiKey"], dry_run=True), "RATE_LIMITED", "a dry run is refused too")
    tap.eq(len(J(api.log(alice["apiKey"])).get("data") or []), len(rows),
           "a dry run writes no log row")
    clock.advance(1)
    api.verify(ka["apiKey"])
    tap.eq((J(api.log(alice["apiKey"])).get("data") or [{}])[0].get("modelId"), "model:unknown",
           "a refusal without a model: modelId model:unknown, as Venice logs it")
    # the last 50, newest first
    for i in range(55):
        clock.advance(1)
        api.verify(ka["apiKey"], model="m-%d" % i)
    rows = J(api.log(alice["apiKey"])).get("data") or []
    tap.eq(len(rows), 50, "the log answers the last 50 rows")
    tap.eq([x.get("modelId") for x in rows[:3]], ["m-54", "m-53", "m-52"],
           "newest first")
    tap.ok(all(VTIME.match(str(x.get("timestamp"))) for x in rows),
           "timestamps as YYYY-MM-DDTHH:MM:SS.000Z")
    stamps = [x.get("timestamp") for x in rows]
    tap.eq(stamps, sorted(stamps, reverse=True), "timestamps descend")
    clock.advance(1)
    api.verify(kb["apiKey"], model="bob-last", expected_tokens=100)
    rows_m = J(api.log()).get("data") or []
    tap.eq(len(rows_m), 50, "the master key's log: 50 rows too")
    tap.eq([x.get("modelId") for x in rows_m[:3]], ["bob-last", "m-54", "m-53"],
           "the master key's log merges the owners' rows by time, newest first")
    stamps = [x.get("timestamp") for x in rows_m]
    tap.eq(stamps, sorted(stamps, reverse=True), "the master key's log: timestamps descend")
    tap.eq([x.get("modelId") for x in (J(api.log(alice["apiKey"])).get("data") or [])[:1]],
           ["m-54"], "alice's log still starts with her newest row")


# --- model privacy, last use, list order ---------------------------------------------------

def model_privacy(api):
    """modelPrivacy (Venice's api-keys reference): ALL any model; PRIVATE_ONLY the models
    KEYWARDEN_PRIVATE_MODELS names (its default: Venice's private families); PRIVATE_TEXT
    those and KEYWARDEN_MEDIA_MODELS' (flux-* in this server).  Enforced in the one model
    check: /key/verify and the authorizer (403)."""
    keys = {p: inference(api, modelPrivacy=p) for p in ("ALL", "PRIVATE_TEXT", "PRIVATE_ONLY")}
    unset = inference(api)
    for p, d in keys.items():
        tap.eq(D(api.key(d["id"])).get("modelPrivacy"), p, "GET shows modelPrivacy %s" % p)
    tap.eq(D(api.key(unset["id"])).get("modelPrivacy"), "ALL", "modelPrivacy unset: ALL")
    for model, want in (("gpt-4o", {"ALL": "VALID", "PRIVATE_TEXT": "MODEL_NOT_ALLOWED",
                                    "PRIVATE_ONLY": "MODEL_NOT_ALLOWED"}),
                        ("llama-3.3-70b", {"ALL": "VALID", "PRIVATE_TEXT": "VALID",
                                           "PRIVATE_ONLY": "VALID"}),
                        ("venice-uncensored", {"ALL": "VALID", "PRIVATE_TEXT": "VALID",
                                               "PRIVATE_ONLY": "VALID"}),
                        ("flux-dev", {"ALL": "VALID", "PRIVATE_TEXT": "VALID",
                                      "PRIVATE_ONLY": "MODEL_NOT_ALLOWED"})):
        for p, code in want.items():
            a = verdict(api.verify(keys[p]["apiKey"], model=model), code,
                        "modelPrivacy %s, model %s" % (p, model))
            if code != "VALID":
                tap.ok(a.get("limit") == "modelPrivacy" and p in str(a.get("message")) and
                       model in str(a.get("message")),
                       "... the refusal names modelPrivacy, the setting and the model", a)
    refused(api.authorize("/openai/deployments/gpt-4o/chat/completions",
                          keys["PRIVATE_ONLY"]["apiKey"]), 403, "PRIVATE_ONLY",
            "a PRIVATE_ONLY key on an anonymous model (Venice: 403)")
    tap.eq(api.authorize("/openai/deployments/qwen3-4b/chat/completions",
                         keys["PRIVATE_ONLY"]["apiKey"]).status, 200,
           "AUTHORIZER: a PRIVATE_ONLY key on a private model")
    # an alias that maps a private-looking name to an anonymous model is refused
    only = keys["PRIVATE_ONLY"]
    api.post("/key/update", {"key": sha(only["apiKey"]), "aliases": {"llama-alias": "gpt-4o"}})
    verdict(api.verify(only["apiKey"], model="llama-alias"), "MODEL_NOT_ALLOWED",
            "PRIVATE_ONLY: a name whose alias is an anonymous model")
    # the holder writes no capability: an ADMIN key cannot lift its own restriction
    adm = admin_key(api, modelPrivacy="PRIVATE_ONLY")
    venice_error(api.patch({"id": adm["id"], "modelPrivacy": "ALL"}, who=adm["apiKey"]), 401,
                 "an ADMIN key PATCHing its own modelPrivacy to ALL")
    venice_error(api.patch({"id": only["id"], "modelPrivacy": "ALL"}, who=only["apiKey"]), 401,
                 "an INFERENCE key PATCHing its own modelPrivacy")
    api.post("/key/update", {"key": sha(only["apiKey"]), "metadata": {"modelPrivacy": "ALL"},
                             "venice": {"modelPrivacy": "ALL"}})
    tap.eq(D(api.key(only["id"])).get("modelPrivacy"), "PRIVATE_ONLY",
           "the LiteLLM face's /key/update leaves modelPrivacy as it was")
    verdict(api.verify(only["apiKey"], model="gpt-4o"), "MODEL_NOT_ALLOWED",
            "... and it is still enforced")
    r = api.patch({"id": only["id"], "modelPrivacy": "ALL"})
    tap.ok(r.status == 200 and D(r).get("modelPrivacy") == "ALL", "the master key PATCHes "
           "modelPrivacy to ALL", repr(r))
    verdict(api.verify(only["apiKey"], model="gpt-4o"), "VALID", "... and gpt-4o passes at once")
    venice_error(api.create({"apiKeyType": "INFERENCE", "description": "x",
                             "modelPrivacy": "private_only"}), 400,
                 "create with modelPrivacy private_only (case matters)", "modelPrivacy")


def last_use_and_order(api):
    """lastUsedAt is recorded on use; lists are newest first (Venice's api-keys reference)."""
    clock = api.clock
    made_keys = []
    for i in range(3):
        clock.advance(2)
        made_keys.append(inference(api, description="order %d" % i))
    tap.eq(D(api.key(made_keys[0]["id"])).get("lastUsedAt"), None, "an unused key: lastUsedAt "
           "null")
    clock.advance(3)
    verdict(api.verify(made_keys[0]["apiKey"]), "VALID", "a key used")
    tap.eq(D(api.key(made_keys[0]["id"])).get("lastUsedAt"), vtime(clock.now),
           "lastUsedAt is the time of the use")
    ids = [k.get("id") for k in J(api.keys()).get("data") or []]
    pos = [ids.index(k["id"]) if k["id"] in ids else -1 for k in made_keys]
    tap.ok(-1 not in pos and pos[2] < pos[1] < pos[0], "the list is newest first", pos)
    stamps = [k.get("createdAt") for k in J(api.keys()).get("data") or []]
    tap.eq(stamps, sorted(stamps, reverse=True), "createdAt descends through the whole list")


# --- keys stored before -----------------------------------------------------------------

def stored_before(api, srv):
    """A Venice key as keywardens before stored it, loaded with `keywarden import` (its
    export's form): an sk- secret of 22 characters, no modelPrivacy.  It verifies, reads
    back with modelPrivacy ALL and Venice's usage, lists, and takes a modelPrivacy."""
    secret = "sk-" + "OldVeniceKey0123456789"[:22]
    kid = "0ld0ld00-0000-4000-8000-000000000001"
    rec = {"token": sha(secret), "key_name": "sk-...6789", "key_alias": "venice:" + kid,
           "user_id": None, "key_type": "llm_api", "spend": 0.0, "models": [], "metadata": {},
           "blocked": False,
           "venice": {"id": kid, "apiKeyType": "INFERENCE", "description": "stored before",
                      "consumptionLimit": {"usd": 5, "diem": None, "vcu": None},
                      "limitPeriod": "EPOCH", "owner": "master", "last6Chars": secret[-6:],
                      "expiresAt": None},
           "expires": None, "created_at": "2030-06-01T00:00:00Z",
           "updated_at": "2030-06-01T00:00:00Z", "updated_by": "default_user_id",
           "created_by": "default_user_id"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
    p = subprocess.run([BIN, "import", "-d", srv.data_dir], input=json.dumps(rec) + "\n",
                       env=env, capture_output=True, text=True, timeout=120)
    tap.eq(p.returncode, 0, "keywarden import takes a Venice key as stored before: " +
           p.stderr.strip()[:200])
    VENICE_KEYS[secret] = kid
    verdict(api.verify(secret, model="gpt-4o"), "VALID", "the old sk- secret still verifies")
    d = D(api.key(kid))
    tap.ok(d.get("modelPrivacy") == "ALL" and d.get("usage") == {
        "trailingSevenDays": {"usd": "0.0000", "vcu": "0.0000", "diem": "0.0000"}} and
        d.get("currentPeriodUsage") == {"usd": "0.0000", "diem": "0.0000"} and
        d.get("last6Chars") == secret[-6:],
        "it reads back with modelPrivacy ALL, Venice's usage and currentPeriodUsage", d)
    tap.ok(kid in listed(api), "it is listed")
    tap.eq(D(api.limits(secret)).get("balances"), {"USD": 5}, "its rate_limits read")
    r = api.patch({"id": kid, "modelPrivacy": "PRIVATE_ONLY"})
    tap.ok(r.status == 200 and D(r).get("modelPrivacy") == "PRIVATE_ONLY",
           "it takes a modelPrivacy", repr(r))
    verdict(api.verify(secret, model="gpt-4o"), "MODEL_NOT_ALLOWED", "... which holds it")


# --- hygiene ----------------------------------------------------------------------------

def needles():
    out = []
    for k in sorted(VENICE_KEYS):
        part = k[-43:-27] if KEY_RE.match(k) else k[3:19]    # an sk- key made before
        out += [(k, k.encode()), (k + " (16 of its random part)", part.encode())]
    return out


def found_in(data, allowed=()):
    return sorted(set(label for label, b in needles()
                      if b in data and not any(label.startswith(a) for a in allowed)))


def hygiene(api, srv):
    by_op = {}
    for op, method, path, status, problems, _, _ in api.answers:
        if op is None or op == "AUTHORIZER":
            continue
        by_op.setdefault(op, []).append((method, path, status, problems))
    for op in sorted(by_op, key=str):
        bad = ["%s %s -> %d: %s" % (m, p[:80], s, "; ".join(pr)) for m, p, s, pr in by_op[op]
               if pr]
        tap.ok(not bad, "%s: all %d answers are as the spec documents" % (op, len(by_op[op])),
               "\n".join(bad[:12]))
    fives = ["%s %s -> %d" % (m, p[:80], s) for _, m, p, s, _, _, _ in api.answers if s >= 500]
    tap.ok(not fives, "no answer is a 5xx (%d requests)" % len(api.answers),
           "\n".join(fives[:30]))
    venice = [a for a in api.answers
              if a[2].startswith("/api/v1/api_keys") and a[0] != "AUTHORIZER"]
    bad = []
    for op, method, path, status, _, j, text in venice:
        if status < 400:
            continue
        j = j if isinstance(j, dict) else {}
        details = j.get("details")
        # StandardError, or DetailedError: details a tree of _errors, issues the flat list
        if not (isinstance(j.get("error"), str) and j["error"] and
                (set(j) == {"error"} or
                 (set(j) == {"error", "details", "issues"} and
                  j["error"] == "Invalid request parameters" and isinstance(details, dict) and
                  details.get("_errors") == [] and isinstance(j["issues"], list) and
                  j["issues"]))):
            bad.append("%s %s -> %d: %s" % (method, path[:60], status, text[:200]))
    tap.ok(not bad, "every Venice error (%d) is its StandardError or DetailedError" %
           sum(1 for a in venice if a[3] >= 400), "\n".join(bad[:10]))
    leaks = []
    for op, method, path, status, _, j, text in api.answers:
        own = ()
        if op == "venice_key_create" and status == 200 and isinstance(j, dict):
            own = (str((j.get("data") or {}).get("apiKey")),)
        hit = found_in(text.encode(), own)
        if hit:
            leaks.append("%s %s -> %d: %s" % (method, path[:60], status, hit[:2]))
    tap.ok(not leaks, "no Venice key appears in any answer but its own creation's (%d answers, "
           "%d keys)" % (len(api.answers), len(VENICE_KEYS)), "\n".join(leaks[:10]))
    pages, page, last = [], 1, 1
    while page <= min(last, 200):
        r = api.get("/audit?page_size=100&page=%d" % page)
        pages.append(r.body)
        last = max(last, J(r).get("total_pages") or 0)
        page += 1
    text = b"".join(pages)
    tap.ok(not found_in(text), "the audit log (%d bytes) holds no Venice key" % len(text),
           found_in(text)[:5])
    log = srv.read_log().encode()
    tap.ok(not found_in(log), "the server log holds no Venice key", found_in(log)[:5])


def store_scan(srv, when):
    hits = []
    for root, _, files in os.walk(srv.data_dir):
        for name in files:
            try:
                with open(os.path.join(root, name), "rb") as f:
                    data = f.read()
            except OSError:
                continue
            hit = found_in(data)
            if hit:
                hits.append("%s: %s" % (name, hit[:2]))
    tap.ok(not hits, "no file of the data directory holds a Venice key (%s)" % when,
           "\n".join(hits[:10]))


def no_litellm_role(api):
    """A Venice key is no LiteLLM admin, even a proxy_admin user's ADMIN key."""
    uid = uniq("padmin")
    r = api.post("/user/new", {"user_id": uid, "user_role": "proxy_admin",
                               "auto_create_key": False})
    tap.eq(r.status, 200, "a proxy_admin user")
    a = owned_admin(api, uid)
    r = api.get("/key/list", who=a["apiKey"])
    tap.ok(r.status == 200 and J(r).get("total_count") == 1,
           "its Venice ADMIN key lists its user's own key alone, not every key", repr(r)[:300])
    r = api.get("/audit", who=a["apiKey"])
    tap.eq(r.status, 403, "nor read the audit log")


def main():
    clock_dir = tempfile.mkdtemp(prefix="kw-venice-clock-")
    clock_path = os.path.join(clock_dir, "now")
    clock = Clock(clock_path, T0)
    with Server(workers=3, env={"KEYWARDEN_CLOCK_FILE": clock_path,
                                "KEYWARDEN_LOG_LEVEL": "debug",
                                "KEYWARDEN_MAX_BODY": "65536",
                                "KEYWARDEN_MEDIA_MODELS": "flux-*"}) as srv:
        api = Api(srv, clock)
        r = api.keys()
        if r.status == 404 and b"no such route" in r.body:
            tap.bail("GET /api/v1/api_keys is not routed by this build")
        inf_id, full_id = creation(api)
        shown_once(api)
        list_and_get(api, inf_id, full_id)
        patching(api)
        deleting(api)
        callers(api)
        alice, bob, _, _ = scoping(api)
        audit_trail(api)
        creation_rate(api)
        active_cap(api)
        expiring = enforcement(api)
        expiry_enforced(api, expiring)
        breaches_log(api, alice, bob)
        model_privacy(api)
        last_use_and_order(api)
        stored_before(api, srv)
        no_litellm_role(api)
        hygiene(api, srv)
        store_scan(srv, "while serving")
        srv.stop()
        store_scan(srv, "after shutdown")
        tap.ok(not found_in(srv.read_log().encode()),
               "the server log after shutdown holds no Venice key")
    tap.ok(not SETUP_FAILURES, "every key and user the tests needed was made",
           "\n".join(SETUP_FAILURES[:20]))
    try:
        os.remove(clock_path)
        os.rmdir(clock_dir)
    except OSError:
        pass


tap.run(main)
