#!/usr/bin/python3
"""contract_provisioning.t: LiteLLM organizations (/organization/*) and short-lived key provisioning
(POST /api/v1/org/{org}/inference/keys) through lighttpd: shapes, roles, every error status, the
signed tokens (expiry, forgery, signing-key rotation), revocation, audit, and no plaintext key in
the audit log or the server log.

Three servers: A (public URL, TTL and minimum client version set) for the rules; B with
KEYWARDEN_CLOCK_FILE and KEYWARDEN_PROVISION_RPM=5 for the rate limit and expiry, time in the
test's hands; C with a minimum client version that is not a version (the 500)."""
import base64
import calendar
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import contract  # noqa: E402
import fcgi  # noqa: E402
from kwserver import BIN, Server  # noqa: E402

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
SPEC = contract.load_spec()
OPS = contract.operations(SPEC)
PUBLIC_URL = "https://gateway.example.test/litellm"
TTL = 900
MIN_VERSION = "2.1.0"
NEW = {"X-Client-Version": "2.10.0"}     # 2.10.0 > 2.1.0 as numbers, < as strings
PLAINTEXTS = set()                      # every key any answer showed
# the statuses the provisioning seed documents, and nothing else is ever answered
SEED_STATUSES = {200, 400, 401, 403, 404, 409, 422, 426, 429, 500, 502, 504}


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def parse_time(s):
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


class Client:
    """Requests with one bearer credential (None: no credential)."""

    def __init__(self, srv, key):
        self.srv, self.key = srv, key

    def __call__(self, method, path, body=None, headers=None, raw=None):
        hdrs = {"Authorization": "Bearer " + self.key} if self.key else {}
        hdrs.update(headers or {})
        if raw is not None:
            hdrs.setdefault("Content-Type", "application/json")
        r = self.srv.request(method, path, body=body, headers=hdrs, raw=raw)
        if isinstance(r.json, dict):
            for f in ("key", "api_key"):
                if isinstance(r.json.get(f), str) and r.json[f].startswith("sk-"):
                    PLAINTEXTS.add(r.json[f])
        return r


def error_of(r, status, name, param=None):
    """Asserts a LiteLLM error envelope with status (and param when given)."""
    tap.eq(r.status, status, name + ": %d" % status)
    e = r.json.get("error") if isinstance(r.json, dict) else None
    tap.ok(isinstance(e, dict) and e.get("code") == str(status) and
           isinstance(e.get("message"), str) and "type" in e and "param" in e,
           name + ": LiteLLM envelope", r.body)
    if param is not None:
        tap.eq((e or {}).get("param"), param, name + ": names the field")
    return e or {}


def success(r, op_id, name):
    """Asserts 200 and that the body matches the operation's documented response."""
    tap.eq(r.status, 200, name + ": 200")
    problems = contract.check_response(SPEC, OPS[op_id], r)
    tap.ok(not problems, name + ": matches its documented response", problems or r.body)
    return r.json if r.status == 200 else {}


def prov_error(r, status, name, loc=None):
    """Asserts the provisioning API's canonical envelope {code, detail, type, errors} with status,
    documented for provision_key, and errors[0].loc when loc is given."""
    tap.eq(r.status, status, name + ": %d" % status)
    j = r.json if isinstance(r.json, dict) else {}
    tap.ok(j.get("code") == status and isinstance(j.get("detail"), str) and
           isinstance(j.get("type"), str) and "error" not in j and status in SEED_STATUSES,
           name + ": canonical envelope {code, detail, type}, a status the seed documents",
           r.body)
    if status == 401:
        tap.eq(j.get("type"), "authentication_error", name + ": type authentication_error, as "
               "the seed's 401 example")
    problems = contract.check_response(SPEC, OPS["provision_key"], r)
    tap.ok(not problems, name + ": matches its documented response", problems)
    if loc is not None:
        errs = j.get("errors") or [{}]
        tap.eq(errs[0].get("loc"), loc, name + ": errors[0].loc")
        tap.ok(isinstance(errs[0].get("msg"), str) and isinstance(errs[0].get("type"), str),
               name + ": errors[0] has msg and type", errs)
    return j


def raw_post(srv, path, key, version, body=None, version_header=True):
    """A POST straight to lighttpd on a socket of its own (http.client always sends a
    Content-Length, and Prism a User-Agent): without a body, no Content-Length either;
    (status, head, body)."""
    req = ("POST %s HTTP/%s\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
           "%sConnection: close\r\n" % (path, version, key,
                                         "X-Client-Version: 9.0.0\r\n" if version_header else ""))
    if body is not None:
        req += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(req.encode() + b"\r\n" + (body or b""))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, head.decode("latin-1"), body.decode("utf-8", "replace")


def audit(master, **filters):
    q = "&".join("%s=%s" % kv for kv in filters.items())
    r = master("GET", "/audit?page_size=100&" + q)
    return r.json.get("audit_logs", []) if r.status == 200 else []


def prov_path(org):
    return "/api/v1/org/%s/inference/keys" % org


def kid_of(api_key):
    """The 4-byte signing key id at the start of a signed token's base64url part."""
    part = api_key[len("sk-kw1_"):]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))[:4]


def flip_byte(api_key, index):
    """The token with one byte of its decoded base64url part flipped, re-encoded."""
    part = api_key[len("sk-kw1_"):]
    raw = bytearray(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    raw[index] ^= 0x01
    return "sk-kw1_" + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def verdict(master, key):
    r = master("POST", "/key/verify", {"key": key})
    return r.json if r.status == 200 and isinstance(r.json, dict) else {"status": r.status}


def authz(srv, key):
    """The AUTHORIZER role straight to keywarden's socket: (status, error message or '')."""
    res = fcgi.authorize(srv, "POST", "/v1/chat/completions",
                         {"Authorization": "Bearer " + key} if key else {})
    try:
        msg = json.loads(res.body).get("error", {}).get("message", "") if res.body else ""
    except ValueError:
        msg = ""
    return res, msg


def make_users(srv, master):
    """Users of every role the script needs; returns user_id -> Client of their key."""
    k = {}
    for uid, role in (("orgadmin", "internal_user"), ("alice", "internal_user"),
                      ("bob", "internal_user"), ("carol", "internal_user"),
                      ("oview", "internal_user"), ("viewer", "proxy_admin_viewer"),
                      ("padmin", "proxy_admin")):
        r = master("POST", "/user/new", {"user_id": uid, "user_role": role,
                                         "user_email": uid + "@example.com"})
        if not tap.ok(r.status == 200 and r.json.get("key"), "user/new %s (%s)" % (uid, role), r):
            tap.bail("cannot create the script's users")
        k[uid] = Client(srv, r.json["key"])
    return k


def organizations(srv, master, k):
    """/organization/new, /info, /member_add, /member_delete, /list and their role rules."""
    nobody = Client(srv, None)
    body = {"organization_id": "acme", "organization_alias": "Acme Corp",
            "models": ["gpt-4", "claude-3"], "max_budget": 100, "metadata": {"tier": "gold"}}
    org = success(master("POST", "/organization/new", body), "organization_new",
                  "organization/new by the master key")
    tap.ok(org.get("organization_id") == "acme" and org.get("organization_alias") == "Acme Corp" and
           org.get("members") == [] and org.get("models") == ["gpt-4", "claude-3"] and
           org.get("max_budget") == 100 and org.get("spend") == 0 and
           org.get("metadata") == {"tier": "gold"}, "every field of the new organization", org)
    tap.ok(org.get("created_at") and org.get("created_at") == org.get("updated_at"),
           "created_at and updated_at are set", org)
    r = success(master("POST", "/organization/new", {"organization_alias": "No Id"}),
                "organization_new", "organization/new without an id")
    tap.ok(UUID4.fullmatch(r.get("organization_id", "")), "organization_id is a generated UUID v4",
           r.get("organization_id"))
    generated = r.get("organization_id")
    r = success(master("POST", "/organization/new", {"organization_id": None,
                                                     "organization_alias": "Null Id",
                                                     "models": None, "metadata": None}),
                "organization_new", "organization/new with null id, models and metadata")
    tap.ok(UUID4.fullmatch(r.get("organization_id", "")) and r.get("models") == [] and
           r.get("metadata") == {}, "null takes the defaults", r)
    nullid = r.get("organization_id")
    success(k["padmin"]("POST", "/organization/new", {"organization_id": "beta",
                                                      "organization_alias": "Beta"}),
            "organization_new", "a proxy_admin user creates an organization")

    error_of(master("POST", "/organization/new", {"organization_id": "acme",
                                                  "organization_alias": "again"}),
             400, "an existing organization_id", "organization_id")
    error_of(nobody("POST", "/organization/new", body), 401, "organization/new without a credential")
    error_of(k["alice"]("POST", "/organization/new", {"organization_alias": "x"}), 403,
             "an internal_user cannot create organizations")
    error_of(k["viewer"]("POST", "/organization/new", {"organization_alias": "x"}), 403,
             "an admin viewer cannot create organizations")
    error_of(master("POST", "/organization/new", {"organization_id": "x"}), 422,
             "organization_alias is required", "organization_alias")
    error_of(master("POST", "/organization/new", {"organization_id": "a b",
                                                  "organization_alias": "x"}), 422,
             "an organization_id outside its pattern", "organization_id")
    error_of(master("POST", "/organization/new", {"organization_alias": "x", "max_budget": -1}),
             400, "a negative max_budget (new_organization)", "max_budget")
    error_of(master("POST", "/organization/new", {"organization_alias": "x", "models": "gpt-4"}),
             422, "models that is not a list", "models")
    # LiteLLM's NewOrganizationRequest ignores what it does not declare: sent with a
    # budget no request may have, the unknown field is dropped and the budget refused
    error_of(master("POST", "/organization/new", {"organization_alias": "x", "color": "red",
                                                 "max_budget": -2}),
             400, "an unknown field is ignored: the refusal names the known one", "max_budget")

    # member_add: the master key, a list, role default internal_user
    r = success(master("POST", "/organization/member_add",
                       {"organization_id": "acme",
                        "member": [{"user_id": "orgadmin", "role": "org_admin"},
                                   {"user_id": "alice"}]}),
                "organization_member_add", "member_add of a list by the master key")
    roles = {m.get("user_id"): m.get("user_role") for m in r.get("members", [])}
    tap.eq(roles, {"orgadmin": "org_admin", "alice": "internal_user"},
           "members with their roles; internal_user by default")
    tap.ok(all(m.get("user_email") == m.get("user_id") + "@example.com" for m in r.get("members", [])),
           "each member carries the user's email", r.get("members"))
    tap.ok(r.get("updated_at") is not None, "member_add stamps updated_at", r)
    # an org_admin adds one member (an object), and a user that does not exist yet
    r = success(k["orgadmin"]("POST", "/organization/member_add",
                              {"organization_id": "acme",
                               "member": {"user_id": "bob", "role": "internal_user"}}),
                "organization_member_add", "an org_admin adds a member")
    tap.ok("bob" in {m["user_id"] for m in r.get("members", [])}, "bob is a member", r)
    r = success(k["orgadmin"]("POST", "/organization/member_add",
                              {"organization_id": "acme",
                               "member": [{"user_id": "newbie", "user_email": "newbie@example.com"},
                                          {"user_id": "oview", "role": "internal_user_viewer",
                                           "user_email": None}]}),
                "organization_member_add", "member_add creates an unknown user")
    u = master("GET", "/user/info?user_id=newbie")
    tap.ok(u.status == 200 and u.json["user_info"].get("organization_id") == "acme" and
           u.json["user_info"].get("user_email") == "newbie@example.com" and
           u.json["user_info"].get("user_role") == "internal_user",
           "the new user exists, with the organization and the email", u)
    u = master("GET", "/user/info?user_id=alice")
    tap.ok(u.status == 200 and u.json["user_info"].get("organization_id") == "acme",
           "an existing user without an organization gets this one", u)
    success(master("POST", "/organization/member_add",
                   {"organization_id": "beta", "member": {"user_id": "alice"}}),
            "organization_member_add", "alice joins a second organization")
    u = master("GET", "/user/info?user_id=alice")
    tap.ok(u.status == 200 and u.json["user_info"].get("organization_id") == "acme",
           "a user's organization_id is set only when it had none", u)

    before = master("GET", "/organization/info?organization_id=acme").json
    error_of(master("POST", "/organization/member_add",
                    {"organization_id": "acme", "member": {"user_id": "alice"}}),
             400, "a user already a member", "member")
    error_of(master("POST", "/organization/member_add",
                    {"organization_id": "acme",
                     "member": [{"user_id": "ghost1"}, {"user_id": "bob"}]}),
             400, "a list naming a member", "member[1]")
    error_of(master("GET", "/user/info?user_id=ghost1"), 404,
             "all or nothing: the list's new user was not created", "user_id")
    error_of(master("POST", "/organization/member_add",
                    {"organization_id": "acme",
                     "member": {"user_id": "ghost2", "user_email": "ALICE@example.com"}}),
             400, "a new user with another user's email", "member")
    error_of(master("POST", "/organization/member_add",
                    {"organization_id": "acme", "member": [{"user_id": "x"}, {"user_id": "x"}]}),
             400, "the same user twice in one list", "member[1]")
    tap.eq(master("GET", "/organization/info?organization_id=acme").json, before,
           "refused member_adds change nothing")
    error_of(k["alice"]("POST", "/organization/member_add",
                        {"organization_id": "acme", "member": {"user_id": "carol"}}),
             403, "a plain member cannot add members")
    error_of(k["carol"]("POST", "/organization/member_add",
                        {"organization_id": "acme", "member": {"user_id": "carol"}}),
             403, "a non-member cannot add members")
    error_of(k["viewer"]("POST", "/organization/member_add",
                         {"organization_id": "acme", "member": {"user_id": "carol"}}),
             403, "an admin viewer cannot add members")
    error_of(master("POST", "/organization/member_add",
                    {"organization_id": "no-such-org", "member": {"user_id": "carol"}}),
             404, "member_add to an unknown organization", "organization_id")
    error_of(k["carol"]("POST", "/organization/member_add",
                        {"organization_id": "no-such-org", "member": {"user_id": "carol"}}),
             404, "member_add: 404 before 403")
    error_of(nobody("POST", "/organization/member_add",
                    {"organization_id": "acme", "member": {"user_id": "carol"}}),
             401, "member_add without a credential")
    e = error_of(master("POST", "/organization/member_add",
                        {"organization_id": "acme", "member": {"user_id": "carol", "role": "boss"}}),
                 422, "a role outside the enum")
    tap.ok("role" in str(e.get("param")), "the 422 names the role", e)
    error_of(master("POST", "/organization/member_add", {"organization_id": "acme"}), 422,
             "member is required", "member")
    error_of(master("POST", "/organization/member_add", {"member": {"user_id": "carol"}}), 422,
             "organization_id is required", "organization_id")

    # info: 404 before 403; admins, admin viewers and members read it
    info = success(master("GET", "/organization/info?organization_id=acme"), "organization_info",
                   "organization/info by the master key")
    tap.ok({m["user_id"] for m in info.get("members", [])} ==
           {"orgadmin", "alice", "bob", "newbie", "oview"} and info.get("models") == ["gpt-4", "claude-3"],
           "the organization with its members", info)
    success(k["viewer"]("GET", "/organization/info?organization_id=acme"), "organization_info",
            "an admin viewer reads it")
    success(k["alice"]("GET", "/organization/info?organization_id=acme"), "organization_info",
            "a member reads it")
    success(k["oview"]("GET", "/organization/info?organization_id=acme"), "organization_info",
            "an internal_user_viewer member reads it")
    error_of(k["carol"]("GET", "/organization/info?organization_id=acme"), 403,
             "a non-member may not read it", "organization_id")
    error_of(master("GET", "/organization/info?organization_id=no-such-org"), 404,
             "an unknown organization", "organization_id")
    error_of(k["carol"]("GET", "/organization/info?organization_id=no-such-org"), 404,
             "info: 404 before 403", "organization_id")
    error_of(nobody("GET", "/organization/info?organization_id=acme"), 401,
             "info without a credential")
    error_of(master("GET", "/organization/info"), 422, "organization_id is required",
             "organization_id")

    # list
    everything = sorted(["acme", "beta", generated, nullid])
    r = success(master("GET", "/organization/list"), "organization_list", "list by the master key")
    tap.eq(sorted(o["organization_id"] for o in r if isinstance(o, dict)) if isinstance(r, list) else r,
           everything, "the master key lists every organization")
    r = success(k["viewer"]("GET", "/organization/list"), "organization_list", "list by an admin viewer")
    tap.eq(sorted(o["organization_id"] for o in r) if isinstance(r, list) else r, everything,
           "an admin viewer lists every organization")
    r = success(k["alice"]("GET", "/organization/list"), "organization_list", "list by a member")
    tap.eq([o["organization_id"] for o in r] if isinstance(r, list) else r, ["acme", "beta"],
           "a member lists their organizations, in id order")
    r = success(k["carol"]("GET", "/organization/list"), "organization_list", "list by a non-member")
    tap.eq(r, [], "a user in no organization lists none")
    error_of(nobody("GET", "/organization/list"), 401, "list without a credential")

    # member_delete
    error_of(k["alice"]("POST", "/organization/member_delete",
                        {"organization_id": "acme", "user_id": "bob"}),
             403, "a plain member cannot remove members")
    error_of(k["carol"]("POST", "/organization/member_delete",
                        {"organization_id": "no-such-org", "user_id": "bob"}),
             404, "member_delete: 404 before 403", "organization_id")
    r = success(k["orgadmin"]("POST", "/organization/member_delete",
                              {"organization_id": "acme", "user_id": "newbie"}),
                "organization_member_delete", "an org_admin removes a member")
    tap.ok("newbie" not in {m["user_id"] for m in r.get("members", [])}, "newbie is no member", r)
    u = master("GET", "/user/info?user_id=newbie")
    tap.ok(u.status == 200 and u.json["user_info"].get("organization_id") is None,
           "the user's organization_id is cleared", u)
    error_of(master("POST", "/organization/member_delete",
                    {"organization_id": "acme", "user_id": "newbie"}),
             404, "a user who is no member", "user_id")
    error_of(nobody("POST", "/organization/member_delete",
                    {"organization_id": "acme", "user_id": "bob"}), 401,
             "member_delete without a credential")
    error_of(master("POST", "/organization/member_delete", {"organization_id": "acme"}), 422,
             "user_id is required", "user_id")

    # audit entries of organization changes
    r = master("GET", "/audit?page_size=100&object_id=acme")
    success(r, "audit_list", "the organization's audit entries")
    entries = [e for e in (r.json or {}).get("audit_logs", [])
               if e.get("table_name") == "LiteLLM_OrganizationTable"]
    tap.eq(len(audit(master, object_id="acme", table_name="LiteLLM_OrganizationTable")),
           len(entries), "/audit filters by table_name=LiteLLM_OrganizationTable")
    actions = sorted(set(e.get("action") for e in entries))
    tap.eq(actions, ["created", "updated"], "organization changes are audited (created, updated)")
    created = [e for e in entries if e.get("action") == "created"]
    tap.ok(created and created[0].get("updated_values", {}).get("organization_id") == "acme" and
           created[0].get("before_value") is None and
           created[0].get("changed_by") == "default_user_id",
           "the created entry holds the record, by the master key", created)
    by_admin = [e for e in entries if e.get("changed_by") == "orgadmin"]
    tap.ok(len(by_admin) == 3, "the org_admin's changes are audited under their user", by_admin)
    removed = [e for e in entries if e.get("action") == "updated" and
               "newbie" in json.dumps(e.get("before_value")) and
               "newbie" not in json.dumps(e.get("updated_values"))]
    tap.ok(removed, "member_delete's entry has the member before and not after")
    tap.ok(audit(master, object_id="newbie", table_name="LiteLLM_UserTable", action="created"),
           "the user member_add created is audited")


def provisioning(srv, master, k):
    """POST /api/v1/org/{org}/inference/keys: answer, revocation, conflicts, every status."""
    path = prov_path("acme")
    t0 = int(time.time())
    r = k["alice"]("POST", path, {"client_id": "cli-1"}, headers=NEW)
    t1 = int(time.time())
    a1 = success(r, "provision_key", "alice provisions a key for cli-1")
    key1 = a1.get("api_key", "")
    tap.ok(key1.startswith("sk-") and key1.startswith("sk-kw1_"), "api_key starts with sk- (sk-kw1_)",
           key1[:8])
    tap.eq(sorted(a1), ["api_key", "base_url", "expires_at"], "the answer is api_key, base_url, expires_at")
    tap.eq(a1.get("base_url"), PUBLIC_URL + "/v1", "base_url is the relay's OpenAI base, "
           "KEYWARDEN_PUBLIC_URL and /v1 (the seed: the public LiteLLM base URL)")
    try:
        exp = parse_time(a1.get("expires_at", ""))
    except ValueError:
        exp = None
    tap.ok(exp is not None and t0 + TTL <= exp <= t1 + TTL,
           "expires_at is now + KEYWARDEN_PROVISION_TTL (%d s)" % TTL, a1.get("expires_at"))

    v = verdict(master, key1)
    tap.eq(v.get("code"), "VALID", "the provisioned key verifies VALID")
    tap.ok(v.get("token") == hashlib.sha256(key1.encode()).hexdigest() and
           v.get("expires") == a1.get("expires_at"), "key/verify: its token and expiry", v)
    r = master("GET", "/key/info?key=" + hashlib.sha256(key1.encode()).hexdigest())
    v = r.json.get("info", {}) if r.status == 200 else {}
    tap.ok(v.get("user_id") == "alice" and v.get("organization_id") == "acme" and
           v.get("key_alias") == "prov:acme:cli-1" and v.get("models") == ["gpt-4", "claude-3"] and
           v.get("expires") == a1.get("expires_at") and v.get("key_type") == "llm_api" and
           v.get("metadata") == {"client_id": "cli-1", "provisioned": True} and
           v.get("team_id") is None and v.get("spend") == 0 and v.get("blocked") is False,
           "its record: alice's, in acme, its alias, the organization's models, llm_api, expiry", r)
    tap.ok(key1 not in r.body.decode(), "key/info does not show the plaintext")
    res, msg = authz(srv, key1)
    tap.ok(res.status == 200 and res.headers.get("variable-kw-user-id") == "alice",
           "AUTHORIZER: the provisioned key passes, as alice", repr(res))
    mine = Client(srv, key1)
    error_of(mine("POST", "/key/generate", {}), 403, "a provisioned key manages nothing (llm_api)")
    prov_error(mine("POST", path, {"client_id": "cli-x"}, headers=NEW), 403,
               "a provisioned key provisions nothing")

    # re-provisioning the same client_id revokes the previous key
    a2 = success(k["alice"]("POST", path, {"client_id": "cli-1"}, headers=NEW), "provision_key",
                 "alice provisions cli-1 again")
    key2 = a2.get("api_key", "")
    tap.ok(key2 and key2 != key1, "a new key")
    tap.eq(verdict(master, key1).get("code"), "NOT_FOUND", "the previous key is revoked: NOT_FOUND")
    tap.eq(verdict(master, key2).get("code"), "VALID", "the new key is VALID")
    res, _ = authz(srv, key1)
    tap.eq(res.status, 401, "AUTHORIZER: the revoked key is refused")
    error_of(Client(srv, key1)("GET", "/key/info"), 401, "the revoked key is no credential")
    old_token = hashlib.sha256(key1.encode()).hexdigest()
    new_token = hashlib.sha256(key2.encode()).hexdigest()
    tap.ok(audit(master, object_id=old_token, table_name="LiteLLM_VerificationToken", action="deleted"),
           "the revocation is audited (deleted)")
    created = audit(master, object_id=new_token, table_name="LiteLLM_VerificationToken",
                    action="created")
    tap.ok(created and created[0].get("changed_by") == "alice" and
           created[0].get("updated_values", {}).get("key_alias") == "prov:acme:cli-1",
           "the provisioned key is audited (created, by alice)", created)

    # a client_id bound to another member: 409
    prov_error(k["orgadmin"]("POST", path, {"client_id": "cli-1"}, headers=NEW), 409,
               "cli-1 is bound to alice", ["body", "client_id"])
    tap.eq(verdict(master, key2).get("code"), "VALID", "the 409 leaves alice's key alone")
    r = master("POST", "/key/generate", {"key_alias": "prov:acme:squat", "user_id": "bob"})
    tap.ok(r.status == 400 and (r.json or {}).get("error", {}).get("param") == "key_alias",
           "an ordinary key may not take a provisioning alias (400 naming key_alias)", r)
    success(k["bob"]("POST", path, {"client_id": "squat"}, headers=NEW), "provision_key",
            "so no ordinary key can lock a client out")
    # the same client_id in another organization is another alias
    success(k["alice"]("POST", prov_path("beta"), {"client_id": "cli-1"}, headers=NEW),
            "provision_key", "cli-1 in another organization")
    tap.eq(verdict(master, key2).get("code"), "VALID", "which leaves acme's cli-1 alone")

    a3 = success(k["orgadmin"]("POST", path, {"client_id": "cli-2"}, headers=NEW), "provision_key",
                 "the org_admin provisions cli-2")
    success(k["bob"]("POST", path, {"client_id": "bob-1"}, headers=NEW), "provision_key",
            "a member (internal_user) provisions")
    ap = success(k["padmin"]("POST", path, {"client_id": "padmin-1"}, headers=NEW), "provision_key",
                 "a proxy_admin who is no member provisions")
    tap.eq(verdict(master, ap.get("api_key", "-")).get("user_id"), "padmin", "for the proxy_admin user")
    am = success(master("POST", path, {"client_id": "master-1"}, headers=NEW), "provision_key",
                 "the master key provisions")
    vm = verdict(master, am.get("api_key", "-"))
    tap.ok(vm.get("code") == "VALID" and vm.get("user_id") is None, "for no user", vm)
    am2 = success(master("POST", path, {"client_id": "master-1"}, headers=NEW), "provision_key",
                  "the master key provisions master-1 again")
    tap.eq(verdict(master, am.get("api_key", "-")).get("code"), "NOT_FOUND",
           "the master key's previous key is revoked")
    tap.eq(verdict(master, am2.get("api_key", "-")).get("code"), "VALID", "its new key is VALID")

    # every refusal, in the canonical envelope
    prov_error(k["carol"]("POST", path, {"client_id": "c"}, headers=NEW), 403,
               "a non-member")
    prov_error(k["oview"]("POST", path, {"client_id": "c"}, headers=NEW), 403,
               "an internal_user_viewer member")
    prov_error(k["viewer"]("POST", path, {"client_id": "c"}, headers=NEW), 403,
               "an admin viewer")
    prov_error(master("POST", prov_path("no-such-org"), {"client_id": "c"}, headers=NEW), 404,
               "an unknown organization", ["path", "org"])
    prov_error(k["carol"]("POST", prov_path("no-such-org"), {"client_id": "c"}, headers=NEW), 404,
               "404 before 403")
    prov_error(Client(srv, None)("POST", path, {"client_id": "c"}, headers=NEW), 401,
               "no credential")
    j = prov_error(Client(srv, "sk-unknown-credential-0001")("POST", path, {"client_id": "c"},
                                                               headers=NEW), 401, "an unknown key")
    tap.ok("sk-unknown-credential-0001" not in json.dumps(j), "the 401 does not echo the key")
    prov_error(k["alice"]("POST", path, {}, headers=NEW), 422, "client_id missing",
               ["body", "client_id"])
    # the seed's client_id is any string (a TUI process identifier): no pattern
    for cid in ("has space", "tui/pid:4242 é", "a" * 128):
        r = k["alice"]("POST", path, {"client_id": cid}, headers=NEW)
        tap.ok(r.status == 200 and str((r.json or {}).get("api_key")).startswith("sk-kw1_"),
               "client_id %r (the seed sets no pattern): 200" % cid[:20], repr(r))
    prov_error(k["alice"]("POST", path, {"client_id": ""}, headers=NEW), 422,
               "client_id empty", ["body", "client_id"])
    prov_error(k["alice"]("POST", path, {"client_id": "x" * 129}, headers=NEW), 422,
               "client_id over 128 characters", ["body", "client_id"])
    prov_error(k["alice"]("POST", path, {"client_id": 7}, headers=NEW), 422,
               "client_id not a string", ["body", "client_id"])
    prov_error(k["alice"]("POST", path, {"client_id": "c", "ttl": 5}, headers=NEW), 422,
               "an unknown field", ["body", "ttl"])
    prov_error(k["alice"]("POST", prov_path("o" * 129), {"client_id": "c"}, headers=NEW), 422,
               "an org over 128 characters", ["path", "org"])
    prov_error(k["alice"]("POST", path, headers=NEW, raw=b'{"client_id": '), 400,
               "a body that is not JSON")
    prov_error(k["alice"]("POST", path, headers=dict(NEW, **{"Content-Type": "text/plain"}),
                          raw=b"client_id=c"), 400,
               "a body that is not application/json (the seed has no 415: invalid request)")
    prov_error(k["alice"]("POST", path, headers=NEW, raw=b'{"client_id": "' +
                          b"x" * (2 << 20) + b'"}'), 400,
               "a body over KEYWARDEN_MAX_BODY (the seed has no 413: invalid request)")
    r = k["alice"]("GET", path, headers=NEW)
    prov_error(r, 400, "GET, a method the path does not take (the seed has no 405)")
    tap.eq(r.headers.get("allow"), "POST", "... Allow: POST")
    # a POST without a Content-Length: lighttpd's own 411 page would answer it; keywarden does
    for version in ("1.1", "1.0"):
        status, head, body = raw_post(srv, path, k["alice"].key, version)
        try:
            j = json.loads(body)
        except ValueError:
            j = {}
        tap.ok(status == 422 and "application/json" in head.lower() and j.get("code") == 422 and
               j.get("type") and isinstance(j.get("detail"), str),
               "HTTP/%s POST with no body and no Content-Length through lighttpd: the canonical "
               "422, not lighttpd's HTML 411" % version, "%d %s" % (status, body[:300]))

    # the client's version against KEYWARDEN_MIN_CLIENT_VERSION (2.1.0), compared as numbers:
    # X-Client-Version when sent, else what the real client sends, User-Agent: <name>/<version>
    # no version at all, straight to lighttpd: a proxy in between (Prism) sends a User-Agent
    status, head, body = raw_post(srv, path, k["alice"].key, "1.1", b'{"client_id": "v-cli"}',
                                  version_header=False)
    j = json.loads(body) if body.startswith("{") else {}
    tap.ok(status == 426 and j.get("code") == 426 and MIN_VERSION in j.get("detail", "") and
           (j.get("errors") or [{}])[0].get("loc") == ["header", "User-Agent"],
           "426 for no version at all (no User-Agent, no X-Client-Version), naming User-Agent",
           "%d %s" % (status, body[:300]))
    for hdrs, what, loc in (
            ({"X-Client-Version": "2.0.9"}, "2.0.9", "X-Client-Version"),
            ({"X-Client-Version": "1.99.99"}, "1.99.99", "X-Client-Version"),
            ({"X-Client-Version": "2.1.0-rc.1"}, "a pre-release of 2.1.0", "X-Client-Version"),
            ({"X-Client-Version": "latest"}, "a version that is not dotted numbers",
             "X-Client-Version"),
            ({"User-Agent": "dn/2.0.9 (linux; x86_64)"}, "User-Agent dn/2.0.9", "User-Agent"),
            ({"User-Agent": "dn/latest"}, "User-Agent dn/latest", "User-Agent"),
            ({"User-Agent": "Mozilla"}, "a User-Agent without a version", "User-Agent"),
            ({"User-Agent": "dn/2.5.0", "X-Client-Version": "2.0.0"},
             "X-Client-Version 2.0.0 before User-Agent dn/2.5.0", "X-Client-Version")):
        j = prov_error(k["alice"]("POST", path, {"client_id": "v-cli"}, headers=hdrs), 426,
                       "426 for " + what, ["header", loc])
        tap.ok(MIN_VERSION in j.get("detail", ""), "426 for %s: names the version needed" % what, j)
    for v in ("2.1.0", "2.1", "2.10.0", "10.0.0", "v2.1.1", "2.1.1-rc.1", "2.1.0+build.7"):
        r = k["alice"]("POST", path, {"client_id": "v-cli"}, headers={"X-Client-Version": v})
        tap.eq(r.status, 200, "X-Client-Version %s passes" % v)
    for ua in ("dn/2.1.0", "dn/2.10.0 (darwin; arm64) python/3.12", "dn-tui/3.0"):
        r = k["alice"]("POST", path, {"client_id": "v-cli"}, headers={"User-Agent": ua})
        tap.eq(r.status, 200, "User-Agent %s passes" % ua)
    r = k["alice"]("POST", path, {"client_id": "v-cli"},
                   headers={"User-Agent": "dn/1.0.0", "X-Client-Version": "2.2.0"})
    tap.eq(r.status, 200, "X-Client-Version 2.2.0 is read before User-Agent dn/1.0.0")

    races(srv, master, k)
    return {"alice": key2, "orgadmin": a3.get("api_key", "")}


def races(srv, master, k):
    """Concurrent provisionings: of one client_id by six members exactly one wins and the rest
    are 409; six of one member's all succeed, each revoking the one before, leaving one key."""
    members = ["racer%d" % i for i in range(6)]
    clients = {}
    for uid in members:
        r = master("POST", "/user/new", {"user_id": uid})
        clients[uid] = Client(srv, r.json.get("key", "-") if r.status == 200 else "-")
    master("POST", "/organization/member_add",
           {"organization_id": "acme", "member": [{"user_id": u} for u in members]})
    path = prov_path("acme")
    results = [None] * len(members)

    def one(i, who, client_id="race-client"):
        results[i] = clients[who]("POST", path, {"client_id": client_id}, headers=NEW)
    threads = [threading.Thread(target=one, args=(i, u)) for i, u in enumerate(members)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status for r in results)
    tap.eq(statuses, [200] + [409] * 5, "six members race for one client_id: one 200, five 409")
    results = [None] * 6
    threads = [threading.Thread(target=one, args=(i, "racer0", "solo-client")) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winner = [r for r in results if r.status == 200]
    valid = [r for r in winner if verdict(master, r.json["api_key"]).get("code") == "VALID"]
    tap.ok(all(r.status == 200 for r in results) and len(valid) == 1,
           "one member provisioning one client_id six times at once: exactly one key stays VALID",
           [r.status for r in results])


def signed_tokens(srv, master, k, keys):
    """A forged token, signing-key rotation, and member_delete revoking provisioned keys."""
    key = keys["alice"]
    for index, part in ((8, "the id"), (22, "the expiry"), (40, "the signature")):
        forged = flip_byte(key, index)
        res, msg = authz(srv, forged)
        tap.ok(res.status == 401 and "signature" in msg.lower(),
               "AUTHORIZER: one flipped byte in %s: 401, the signature is bad" % part, repr(res))
        tap.ok(forged not in res.body.decode("utf-8", "replace"), "the 401 does not echo the token")
        e = error_of(Client(srv, forged)("GET", "/key/info"), 401, "the forged token as a credential")
        tap.ok("signature" in e.get("message", "").lower(), "the forged credential: the signature",
               e)
        v = verdict(master, forged)
        tap.ok(v.get("valid") is False, "key/verify: a forged token is not valid", v)

    old_kid = kid_of(key)
    p = subprocess.run([BIN, "signing-key", "rotate", "-d", srv.data_dir], env=srv.env,
                       capture_output=True, text=True, timeout=30)
    tap.eq(p.returncode, 0, "keywarden signing-key rotate -d DATA_DIR", )
    if p.returncode != 0:
        tap.diag(p.stdout + p.stderr)
    tap.eq(verdict(master, key).get("code"), "VALID", "after rotation the old token still verifies")
    res, _ = authz(srv, key)
    tap.eq(res.status, 200, "AUTHORIZER: the old token still passes")
    a = success(k["alice"]("POST", prov_path("acme"), {"client_id": "after-rotate"}, headers=NEW),
                "provision_key", "provisioning after rotation")
    new = a.get("api_key", "")
    tap.ok(new and kid_of(new) != old_kid, "a new token carries the new signing key's id",
           (old_kid.hex(), new and kid_of(new).hex()))
    tap.eq(verdict(master, new).get("code"), "VALID", "and verifies")
    res, _ = authz(srv, new)
    tap.eq(res.status, 200, "AUTHORIZER: the new token passes")

    # removing a member revokes their provisioned keys in the organization, and only theirs
    success(master("POST", "/organization/member_delete", {"organization_id": "acme",
                                                           "user_id": "orgadmin"}),
            "organization_member_delete", "the master key removes the org_admin")
    tap.eq(verdict(master, keys["orgadmin"]).get("code"), "NOT_FOUND",
           "the removed member's provisioned key is revoked")
    tap.ok(audit(master, object_id=hashlib.sha256(keys["orgadmin"].encode()).hexdigest(),
                 action="deleted"), "and the revocation is audited")
    tap.eq(verdict(master, key).get("code"), "VALID", "other members' keys stay")
    prov_error(k["orgadmin"]("POST", prov_path("acme"), {"client_id": "cli-2"}, headers=NEW), 403,
               "the removed member may no longer provision")


def no_plaintext(srv, master):
    """No plaintext key in the audit log or the server log."""
    text, page = "", 1
    while True:
        r = master("GET", "/audit?page_size=100&page=%d" % page)
        if r.status != 200:
            break
        text += r.body.decode("utf-8", "replace")
        if page >= r.json.get("total_pages", 1):
            break
        page += 1
    keys = sorted(k for k in PLAINTEXTS if k != srv.master_key)
    tap.ok(len(keys) > 10 and "prov:acme:cli-1" in text, "the audit log was read (%d keys shown)" %
           len(keys))
    tap.ok(not [k for k in keys if k in text], "no plaintext key in /audit")
    log = srv.read_log()
    tap.ok(not [k for k in keys if k in log], "no plaintext key in the server log")


def rate_and_clock():
    """Server B: the clock in the test's hands, KEYWARDEN_PROVISION_RPM=5, TTL 120 s."""
    fd, clock = tempfile.mkstemp(prefix="kw-clock-")
    os.close(fd)
    t0 = int(time.time()) // 60 * 60 + 5

    def at(t):
        with open(clock + ".tmp", "w") as f:
            f.write("%d\n" % t)
        os.replace(clock + ".tmp", clock)
    at(t0)
    env = {"KEYWARDEN_CLOCK_FILE": clock, "KEYWARDEN_PROVISION_RPM": "5",
           "KEYWARDEN_PROVISION_TTL": "120", "KEYWARDEN_PUBLIC_URL": "http://127.0.0.1:9/b"}
    try:
        with Server(env=env) as srv:
            master = Client(srv, srv.master_key)
            r = master("POST", "/user/new", {"user_id": "dana"})
            dana = Client(srv, r.json.get("key", "-") if r.status == 200 else "-")
            master("POST", "/organization/new", {"organization_id": "clk", "organization_alias": "C"})
            r = master("POST", "/organization/member_add",
                       {"organization_id": "clk", "member": {"user_id": "dana"}})
            tap.eq(r.status, 200, "B: dana is a member of clk")
            path = prov_path("clk")
            answers = [dana("POST", path, {"client_id": "c%d" % i}) for i in range(5)]
            tap.eq([a.status for a in answers], [200] * 5,
                   "B: 5 provisionings in a minute (KEYWARDEN_PROVISION_RPM=5), without X-Client-Version")
            first = answers[0].json or {}
            tap.eq(first.get("expires_at"), rfc3339(t0 + 120),
                   "B: expires_at is the clock's now + KEYWARDEN_PROVISION_TTL, to the second")
            tap.eq(first.get("base_url"), "http://127.0.0.1:9/b/v1",
                   "B: base_url is KEYWARDEN_PUBLIC_URL (its trailing / dropped) and /v1")
            r = dana("POST", path, {"client_id": "c5"})
            prov_error(r, 429, "B: the 6th provisioning in the minute")
            tap.ok(r.headers.get("retry-after", "").isdigit(), "B: 429 says Retry-After", r.headers)
            tap.eq(dana("POST", path, {"client_id": "c0"}).status, 429,
                   "B: re-provisioning counts too")
            tap.eq(verdict(master, first.get("api_key", "-")).get("code"), "VALID",
                   "B: a refused re-provisioning revokes nothing")
            success(master("POST", path, {"client_id": "m"}), "provision_key",
                    "B: the limit is per caller: the master key still provisions")
            at(t0 + 60)
            later = success(dana("POST", path, {"client_id": "c6"}), "provision_key",
                            "B: the next minute admits dana again")
            tap.eq(later.get("expires_at"), rfc3339(t0 + 180), "B: expires_at follows the clock")

            at(t0 + 121)
            key = first.get("api_key", "-")
            v = verdict(master, key)
            tap.ok(v.get("valid") is False and v.get("code") in ("EXPIRED", "NOT_FOUND"),
                   "B: a token past its expiry is refused by key/verify", v)
            res, msg = authz(srv, key)
            tap.ok(res.status == 401 and "expir" in msg.lower(),
                   "B: AUTHORIZER: a token past its expiry is 401, expired", repr(res))
            error_of(Client(srv, key)("GET", "/key/info"), 401, "B: an expired token is no credential")
            tap.eq(verdict(master, later.get("api_key", "-")).get("code"), "VALID",
                   "B: a token not yet expired still verifies")
            res, _ = authz(srv, later.get("api_key", "-"))
            tap.eq(res.status, 200, "B: AUTHORIZER: and passes")
    finally:
        for p in (clock, clock + ".tmp"):
            if os.path.exists(p):
                os.unlink(p)


def misconfigured():
    """A KEYWARDEN_MIN_CLIENT_VERSION that is not a version stops keywarden at start, naming
    the setting, rather than failing every provisioning request."""
    with tempfile.TemporaryDirectory(prefix="kw-prov-conf-") as tmp:
        env = dict(os.environ, KEYWARDEN_MIN_CLIENT_VERSION="banana")
        p = subprocess.run([BIN, "serve", "-s", os.path.join(tmp, "kw.sock"), "-d",
                            os.path.join(tmp, "data")], env=env, capture_output=True,
                           text=True, timeout=30)
        tap.eq(p.returncode, 1, "a misconfigured minimum client version: keywarden does not start")
        tap.ok("KEYWARDEN_MIN_CLIENT_VERSION" in p.stderr and "banana" not in p.stderr,
               "and says which setting, without echoing it", p.stderr)


def deleted_users_leave(master):
    """Deleting a user takes it out of every organization it belongs to."""
    r = master("POST", "/organization/new", {"organization_id": "leavers",
                                             "organization_alias": "Leavers"})
    tap.eq(r.status, 200, "an organization for the leaving user")
    r = master("POST", "/organization/member_add", {"organization_id": "leavers",
                                                    "member": {"user_id": "short-stay"}})
    tap.eq(r.status, 200, "a member who will be deleted")
    r = master("POST", "/user/delete", {"user_ids": ["short-stay"]})
    tap.eq(r.status, 200, "POST /user/delete")
    members = [m.get("user_id") for m in
               (master("GET", "/organization/info?organization_id=leavers").json or {}).get(
                   "members", [])]
    tap.ok("short-stay" not in members, "the deleted user is no member any more", members)


def main():
    env = {"KEYWARDEN_PUBLIC_URL": PUBLIC_URL, "KEYWARDEN_PROVISION_TTL": str(TTL),
           "KEYWARDEN_MIN_CLIENT_VERSION": MIN_VERSION}
    with Server(env=env) as srv:
        master = Client(srv, srv.master_key)
        k = make_users(srv, master)
        organizations(srv, master, k)
        keys = provisioning(srv, master, k)
        signed_tokens(srv, master, k, keys)
        deleted_users_leave(master)
        no_plaintext(srv, master)
    rate_and_clock()
    misconfigured()


tap.run(main)
