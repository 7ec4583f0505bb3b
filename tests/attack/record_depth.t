#!/usr/bin/python3
"""record_depth.t: whatever nesting a request may send is stored, read back and exported;
deeper is refused with a 4xx naming the field, in the face's envelope, on every write path.

A request body may nest 32 containers (README, "Requests").  A record holds what was sent at
the depth it was sent, and an audit entry holds records one level deeper still: a body at the
limit must leave every read of the key, its owner, the lists, the audit trail and the
operator's export and verify working, or a key becomes one nobody can revoke.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "lib"))
import tap  # noqa: E402
from attack import master, user  # noqa: E402
from kwserver import BIN, Server  # noqa: E402

LIMIT = 32      # containers a request body may nest


def nest(n, leaf="deep"):
    """A value of n nested objects around a string: n containers deep."""
    v = leaf
    for _ in range(n):
        v = {"d": v}
    return v


def body_with(field, depth, **fields):
    """A body whose field makes it exactly depth containers deep (the body is one)."""
    b = dict(fields)
    b[field] = nest(depth - 1)
    return b


def error_of(r):
    """(status, the field an error names) in any face's envelope."""
    j = r.json if isinstance(r.json, dict) else {}
    e = j.get("error")
    if isinstance(e, dict):                    # LiteLLM, Bifrost
        return r.status, e.get("param") or e.get("field")
    if isinstance(j.get("errors"), list) and j["errors"]:     # provisioning
        return r.status, j["errors"][0].get("field") or j["errors"][0].get("param")
    if isinstance(j.get("issues"), list) and j["issues"]:   # Venice's DetailedError
        return r.status, (j["issues"][0].get("path") or [None])[0]
    return r.status, j.get("param") or j.get("field")


def refused_naming(r, field, what, envelope):
    status, named = error_of(r)
    tap.ok(400 <= r.status < 500 and named == field and envelope(r.json or {}),
           "%s: a body deeper than %d is a 4xx naming %s in the face's envelope"
           % (what, LIMIT, field), r)


def litellm(j):
    e = j.get("error")
    return isinstance(e, dict) and "message" in e and "type" in e and "code" in e


def bifrost(j):
    return isinstance(j.get("error"), dict) and "message" in j["error"]


def venice(j):
    return isinstance(j.get("error"), str)


def kw(*args, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
    env["KEYWARDEN_LOG_LEVEL"] = "warn"
    return subprocess.run([BIN] + list(args), env=env, input=stdin, capture_output=True,
                          text=True, timeout=120)


def keys(srv, m):
    alice = user(srv, "depth-alice")
    deep = nest(LIMIT - 1)

    # /key/generate at the limit, by an internal user
    r = alice("POST", "/key/generate", body_with("metadata", LIMIT, key_alias="depth-key"))
    tap.eq(r.status, 200, "key/generate: metadata making the body %d deep is taken" % LIMIT)
    k = r.json or {}
    key, token = k.get("key"), k.get("token")
    r = alice("GET", "/key/info?key=" + key)
    tap.ok(r.status == 200 and (r.json or {}).get("info", {}).get("metadata") == deep,
           "key/info reads the key back, its metadata whole", r)
    r = m("GET", "/key/list?user_id=depth-alice&return_full_object=true")
    tap.ok(r.status == 200 and any(
        (x.get("token") if isinstance(x, dict) else x) == token for x in (r.json or {}).get(
            "keys", [])), "key/list with a filter lists it", r)
    r = m("POST", "/key/verify", {"key": key})
    tap.ok(r.status == 200 and (r.json or {}).get("code") == "VALID", "key/verify: valid", r)
    r = m("POST", "/key/block", {"key": key})
    tap.eq(r.status, 200, "key/block blocks it")
    r = m("POST", "/key/verify", {"key": key})
    tap.ok(r.status == 200 and (r.json or {}).get("code") == "BLOCKED",
           "key/verify: blocked, the very next request", r)
    r = m("POST", "/key/unblock", {"key": key})
    tap.eq(r.status, 200, "key/unblock")
    r = m("POST", "/key/regenerate", {"key": key})
    tap.eq(r.status, 200, "key/regenerate")
    key = (r.json or {}).get("key", key)
    r = m("POST", "/key/delete", {"keys": [key]})
    tap.eq(r.status, 200, "key/delete deletes it")

    # the owner of a deep key can be deleted, and its keys with it
    bob = user(srv, "depth-bob")
    r = bob("POST", "/key/generate", body_with("metadata", LIMIT))
    tap.eq(r.status, 200, "a second user's key at the limit")
    r = m("POST", "/user/delete", {"user_ids": ["depth-bob"]})
    tap.eq(r.status, 200, "user/delete of the owner of a key at the limit")

    r = alice("POST", "/key/generate", body_with("metadata", LIMIT + 1))
    refused_naming(r, "metadata", "key/generate", litellm)
    for field in ("config", "permissions"):
        r = m("POST", "/key/generate", body_with(field, LIMIT + 1))
        refused_naming(r, field, "key/generate " + field, litellm)

    # /key/update
    r = m("POST", "/key/generate", {"key_alias": "depth-upd"})
    key = (r.json or {}).get("key")
    r = m("POST", "/key/update", body_with("metadata", LIMIT, key=key))
    tap.eq(r.status, 200, "key/update: metadata at the limit")
    r = m("GET", "/key/info?key=" + key)
    tap.ok(r.status == 200 and (r.json or {}).get("info", {}).get("metadata") == deep,
           "key/info reads the updated key", r)
    r = m("POST", "/key/update", body_with("metadata", LIMIT + 1, key=key))
    refused_naming(r, "metadata", "key/update", litellm)
    r = m("POST", "/key/bulk_update", {"keys": [{"key": key, "metadata": nest(LIMIT - 3)}]})
    tap.eq(r.status, 200, "key/bulk_update at the limit")
    r = m("POST", "/key/bulk_update", {"keys": [{"key": key, "metadata": nest(LIMIT - 2)}]})
    refused_naming(r, "keys", "key/bulk_update", litellm)


def owners(srv, m):
    deep = nest(LIMIT - 1)
    r = m("POST", "/team/new", body_with("metadata", LIMIT, team_id="depth-team"))
    tap.eq(r.status, 200, "team/new: metadata at the limit")
    r = m("POST", "/team/update", body_with("metadata", LIMIT, team_id="depth-team"))
    tap.eq(r.status, 200, "team/update: metadata at the limit")
    r = m("GET", "/team/info?team_id=depth-team")
    tap.ok(r.status == 200 and (r.json or {}).get("team_info", {}).get("metadata") == deep,
           "team/info reads the team back", r)
    r = m("POST", "/key/generate", {"team_id": "depth-team"})
    r = m("POST", "/key/verify", {"key": (r.json or {}).get("key")})
    tap.ok(r.status == 200 and (r.json or {}).get("code") == "VALID",
           "a key of the deep team verifies", r)
    r = m("GET", "/team/list")
    tap.eq(r.status, 200, "team/list")
    r = m("POST", "/team/new", body_with("metadata", LIMIT + 1, team_id="depth-team2"))
    refused_naming(r, "metadata", "team/new", litellm)
    r = m("POST", "/team/update", body_with("model_aliases", LIMIT + 1, team_id="depth-team"))
    refused_naming(r, "model_aliases", "team/update", litellm)

    r = m("POST", "/user/new", body_with("metadata", LIMIT, user_id="depth-carol"))
    tap.eq(r.status, 200, "user/new: metadata at the limit")
    r = m("POST", "/user/update", body_with("metadata", LIMIT, user_id="depth-carol"))
    tap.eq(r.status, 200, "user/update: metadata at the limit")
    r = m("GET", "/user/info?user_id=depth-carol")
    tap.eq(r.status, 200, "user/info reads the user back")
    r = m("POST", "/user/update", body_with("metadata", LIMIT + 1, user_id="depth-carol"))
    refused_naming(r, "metadata", "user/update", litellm)

    r = m("POST", "/organization/new", body_with("metadata", LIMIT, organization_id="depth-org",
                                                organization_alias="depth"))
    tap.eq(r.status, 200, "organization/new: metadata at the limit")
    r = m("GET", "/organization/info?organization_id=depth-org")
    tap.eq(r.status, 200, "organization/info reads it back")
    r = m("POST", "/organization/new", body_with("metadata", LIMIT + 1,
                                                organization_id="depth-org2",
                                                organization_alias="depth2"))
    refused_naming(r, "metadata", "organization/new", litellm)


def other_faces(srv, m):
    r = m("POST", "/api/v1/api_keys", body_with("consumptionLimit", LIMIT + 1,
                                                 apiKeyType="INFERENCE", description="deep"))
    refused_naming(r, "consumptionLimit", "Venice api_keys", venice)
    r = m("POST", "/api/v1/api_keys", {"apiKeyType": "INFERENCE", "description": "flat"})
    tap.eq(r.status, 200 if r.status != 201 else 201, "Venice: a flat key still works")
    r = m("POST", "/api/providers/openai/keys",
          body_with("azure_key_config", LIMIT + 1, name="deep-pk", value="sk-deep-provider-1"))
    refused_naming(r, "azure_key_config", "Bifrost provider keys", bifrost)
    r = m("POST", "/api/providers/openai/keys", {"name": "flat-pk", "value": "sk-flat-prov-1"})
    tap.ok(r.status in (200, 201), "Bifrost: a flat provider key still works", r)


def audit(srv, m):
    r = m("GET", "/audit?page_size=100")
    logs = (r.json or {}).get("audit_logs", [])
    tap.ok(r.status == 200 and logs, "GET /audit answers with the entries of deep records", r)
    r = m("GET", "/audit?object_id=depth-team")
    tap.ok(r.status == 200 and any(
        ((e.get("updated_values") or {}).get("metadata") == nest(LIMIT - 1))
        for e in (r.json or {}).get("audit_logs", [])),
        "an audit entry holds the team at the limit, whole", r)


def tokens(lines):
    """The key tokens among an export's records (other records carry no token)."""
    rows = [json.loads(x) for x in lines if x]
    rows = [r.get("record", r) if isinstance(r.get("record", r), dict) else r for r in rows]
    return sorted(r["token"] for r in rows if "token" in r)


def operator(srv):
    r = kw("export", "-d", srv.data_dir)
    lines = [line for line in r.stdout.splitlines() if line]
    tap.ok(r.returncode == 0 and any('"depth-upd"' in line for line in lines),
           "keywarden export writes the deep keys", r.stderr)
    v = kw("verify", "-d", srv.data_dir)
    tap.ok(v.returncode == 0, "keywarden verify passes", v.stdout + v.stderr)
    with tempfile.TemporaryDirectory(prefix="kw-depth-") as tmp:
        dst = os.path.join(tmp, "data")
        p = kw("import", "-d", dst, "--data-key", os.path.join(srv.data_dir, "data.key"), stdin=r.stdout)
        tap.ok(lines and p.returncode == 0 and "imported:" in p.stderr,
               "keywarden import takes back what export wrote", p.stderr)
        e2 = kw("export", "-d", dst)
        tap.ok(lines and e2.returncode == 0 and tokens(e2.stdout.splitlines()) == tokens(lines) and
               tokens(lines),
               "and exports it again", e2.stderr)
        too_deep = {"token": "ab" * 32, "metadata": nest(LIMIT + 2)}
        p = kw("import", "-d", dst, stdin=json.dumps(too_deep) + "\n")
        tap.ok(p.returncode != 0 and "metadata" in p.stderr and "nothing imported" in p.stderr,
               "import refuses a line deeper than a record may be, naming the field", p.stderr)


def main():
    with Server() as srv:
        m = master(srv)
        keys(srv, m)
        owners(srv, m)
        other_faces(srv, m)
        audit(srv, m)
        operator(srv)
        log = srv.read_log()
        tap.ok("does not parse as a JSON object" not in log,
               "the store never met a record it could not read", log[-2000:])


tap.run(main)
