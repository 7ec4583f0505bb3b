#!/usr/bin/python3
"""attack/permissions.t: an ordinary user, a team member and a team admin attack the
capabilities and limits above them, through the real lighttpd (README "Who may change what").

1. Self-granted permissions: an internal user may not write permissions on its own keys,
   so its key neither selects provider secrets nor charges another user's key.
2. Team admin to proxy admin: a team admin names only members of its team, and a key made
   for someone else acts at most as its creator could, even after that user's promotion.
3. Owners lift their own limits: limits, spend, models, expiry, blocking and the team of a
   key are for the level above; a team's limits and blocking are not its admins'.
8. A member makes no service-account key; one a team admin made goes when that admin
   leaves the team or is deleted; read_only and llm_api key types hold for admins' keys.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "lib"))
import tap  # noqa: E402
from kwserver import Server  # noqa: E402
from attack import master, user, team  # noqa: E402

PROVIDER_SECRET = "sk-proj-attackProviderSecret-9Qw3Zr7x"


def refused(r, status, field, name):
    """r is status in the LiteLLM envelope, naming field (None: any)."""
    err = (r.json or {}).get("error", {}) if isinstance(r.json, dict) else {}
    tap.ok(r.status == status and isinstance(err, dict) and
           (field is None or err.get("param") == field), name, repr(r))


def info(srv, key):
    r = master(srv)("GET", "/key/info?key=" + key)
    return (r.json or {}).get("info", {}) if r.status == 200 else {}


def self_granted_permissions(srv, mallory, victim):
    caps = {"select_provider_keys": True, "verify_keys": True}
    r = mallory("POST", "/key/generate", {"permissions": caps})
    refused(r, 403, "permissions", "1: an internal user may not grant itself permissions "
            "on /key/generate")
    r = mallory("POST", "/key/update", {"key": mallory.key, "permissions": caps})
    refused(r, 403, "permissions", "1: ... nor on /key/update of its own key")
    tap.ok(not info(srv, mallory.key).get("permissions"), "1: ... which keeps no permissions")
    r = mallory("POST", "/api/providers/openai/keys/select", {"model": "gpt-4"})
    tap.ok(r.status == 403 and PROVIDER_SECRET.encode() not in r.body,
           "1: its key selects no provider secret", repr(r))
    r = mallory("POST", "/key/usage", {"key": victim.key, "cost": 5000, "request_id": "m-1"})
    tap.ok(r.status == 403 and info(srv, victim.key).get("spend") == 0,
           "1: its key charges no one else's key", repr(r))
    # a proxy admin still grants a gateway's key its capability
    gw = master(srv)("POST", "/key/generate", {"permissions": {"verify_keys": True}}).json["key"]
    r = srv.request("POST", "/key/verify", {"key": victim.key, "dry_run": True},
                    headers={"Authorization": "Bearer " + gw})
    tap.ok(r.status == 200 and r.json.get("code") == "VALID",
           "1: a capability a proxy admin granted works", repr(r))


def team_admin_escalation(srv, tadmin, member_admin):
    r = tadmin("POST", "/key/generate", {"team_id": "T1", "user_id": "root"})
    refused(r, 400, "user_id", "2: a team admin names no user outside its team")
    # a proxy admin who is also a member of the team: the key is theirs, capped at its maker
    r = tadmin("POST", "/key/generate", {"team_id": "T1", "user_id": member_admin.user_id})
    tap.ok(r.status == 200, "2: a team admin makes a key for a member", repr(r))
    k = r.json.get("key", "")
    stolen = master(srv).__class__(srv, k)
    r = stolen("POST", "/user/new", {"user_id": "evil", "user_role": "proxy_admin"})
    refused(r, 403, None, "2: that key creates no proxy_admin (it acts as its maker could)")
    tap.eq(master(srv)("GET", "/user/info?user_id=evil").status, 404, "2: ... no user evil")
    refused(stolen("GET", "/audit"), 403, None, "2: ... reads no audit log")
    r = stolen("POST", "/api/providers/openai/keys/select", {"model": "gpt-4"})
    tap.ok(r.status == 403 and PROVIDER_SECRET.encode() not in r.body,
           "2: ... selects no provider secret", repr(r))
    # the promotion comes later: the key made by the team admin stays capped
    r = tadmin("POST", "/key/generate", {"team_id": "T1", "user_id": "plain"})
    later = master(srv).__class__(srv, r.json.get("key", ""))
    master(srv)("POST", "/user/update", {"user_id": "plain", "user_role": "proxy_admin"})
    refused(later("POST", "/user/new", {"user_id": "evil2"}), 403, None,
            "2: a key a team admin made for a member who is promoted later stays capped")


def owners_lift_limits(srv, owner, tadmin, member):
    m = master(srv)
    k = m("POST", "/key/generate", {"user_id": owner.user_id, "max_budget": 1, "rpm_limit": 1,
                                    "tpm_limit": 100, "max_parallel_requests": 2,
                                    "models": ["gpt-4"], "duration": "1h"}).json["key"]
    m("POST", "/key/usage", {"key": k, "cost": 0.5, "request_id": "own-1"})
    before = info(srv, k)
    for field, value in (("max_budget", 1e9), ("spend", 0), ("rpm_limit", None),
                         ("models", []), ("duration", None), ("tpm_limit", None),
                         ("max_parallel_requests", None), ("budget_duration", "1s")):
        r = owner("POST", "/key/update", {"key": k, field: value})
        refused(r, 403, field, "3: the owner may not change its key's %s" % field)
    after = info(srv, k)
    tap.ok(all(after.get(f) == before.get(f) for f in
               ("max_budget", "spend", "rpm_limit", "models", "expires", "budget_duration")),
           "3: ... and the key is as it was", {"before": before, "after": after})
    r = owner("POST", "/key/update", {"key": k, "key_alias": "mine", "metadata": {"a": 1},
                                      "max_budget": 1})
    tap.eq(r.status, 200, "3: the owner renames and describes it, sending its budget unchanged")
    m("POST", "/key/block", {"key": k})
    refused(owner("POST", "/key/update", {"key": k, "blocked": False}), 403, "blocked",
            "3: the owner does not unblock a key an admin blocked by /key/update")
    refused(owner("POST", "/key/unblock", {"key": k}), 403, None, "3: ... nor by /key/unblock")
    tap.ok(info(srv, k).get("blocked") is True, "3: ... it stays blocked")

    # a team key: a member neither changes nor moves it; its team admin changes it within bounds
    tk = tadmin("POST", "/key/generate", {"team_id": "T1", "user_id": member.user_id,
                                          "max_budget": 5}).json["key"]
    refused(member("POST", "/key/update", {"key": tk, "team_id": None}), 403, None,
            "3: a member does not move its team key out of the team")
    refused(tadmin("POST", "/key/update", {"key": tk, "team_id": None}), 403, "team_id",
            "3: nor does the team admin: a key leaves its team by a proxy admin only")
    tap.eq(info(srv, tk).get("team_id"), "T1", "3: ... the key is still the team's")
    tap.eq(tadmin("POST", "/key/update", {"key": tk, "max_budget": 8}).status, 200,
           "3: the team admin raises a team key's budget within the team's")
    refused(tadmin("POST", "/key/update", {"key": tk, "max_budget": 80}), 400, "max_budget",
            "3: ... but not above the team's")

    # the team itself: its admin names it; its limits and blocking are the level above's
    refused(tadmin("POST", "/team/update", {"team_id": "T1", "max_budget": 1e9}), 403,
            "max_budget", "3: a team admin does not raise its team's budget")
    m("POST", "/team/update", {"team_id": "T1", "blocked": True})
    refused(tadmin("POST", "/team/update", {"team_id": "T1", "blocked": False}), 403, "blocked",
            "3: a team admin does not unblock a team a proxy admin blocked")
    t = m("GET", "/team/info?team_id=T1").json
    tap.ok((t.get("team_info") or t).get("blocked") is True, "3: ... the team stays blocked", t)
    m("POST", "/team/update", {"team_id": "T1", "blocked": False})
    tap.eq(tadmin("POST", "/team/update", {"team_id": "T1", "team_alias": "t-one"}).status, 200,
           "3: a team admin renames its team")


def venice_limits(srv):
    """The Venice face: an ADMIN key sets the limits of the keys it made, not its own, and
    not those the master key set."""
    m = master(srv)

    def create(who, body):
        r = who("POST", "/api/v1/api_keys", body)
        return r.json["data"] if r.status == 200 else {}
    admin = create(m, {"apiKeyType": "ADMIN", "description": "admin",
                       "consumptionLimit": {"usd": 1}})
    a = m.__class__(srv, admin.get("apiKey", ""))
    mine = create(a, {"apiKeyType": "INFERENCE", "description": "made by the admin key",
                      "consumptionLimit": {"usd": 1}})
    theirs = create(m, {"apiKeyType": "INFERENCE", "description": "made by the master",
                        "consumptionLimit": {"usd": 1}})
    r = a("PATCH", "/api/v1/api_keys", {"id": admin.get("id"), "consumptionLimit": None})
    # Venice answers 401 for what a key may not manage (the face declares no 403)
    tap.ok(r.status == 401 and "consumptionLimit" in r.body.decode(),
           "3: a Venice ADMIN key does not lift its own consumption limit", repr(r))
    r = a("PATCH", "/api/v1/api_keys", {"id": theirs.get("id"),
                                        "consumptionLimit": {"usd": 1e6}})
    tap.ok(r.status == 401, "3: ... nor one the master key set", repr(r))
    r = a("PATCH", "/api/v1/api_keys", {"id": mine.get("id"), "consumptionLimit": {"usd": 5}})
    tap.eq(r.status, 200, "3: ... but sets the limits of the keys it made")
    r = a("PATCH", "/api/v1/api_keys", {"id": admin.get("id"), "description": "renamed"})
    tap.eq(r.status, 200, "3: ... and describes itself")


def service_accounts_and_key_types(srv, member):
    m = master(srv)
    r = member("POST", "/key/service-account/generate", {"team_id": "T1", "key_alias": "svc-m"})
    refused(r, 403, "team_id", "8: a team member (not admin) makes no service-account key")
    boss = user(srv, "boss")
    m("POST", "/team/member_add", {"team_id": "T1", "member": {"user_id": "boss",
                                                                "role": "admin"}})
    svc = boss("POST", "/key/service-account/generate", {"team_id": "T1", "key_alias": "svc-b"})
    tap.eq(svc.status, 200, "8: a team admin makes one")
    svc_key = (svc.json or {}).get("key", "")

    def verdict(key):
        return (m("POST", "/key/verify", {"key": key, "dry_run": True}).json or {}).get("code")
    tap.eq(verdict(svc_key), "VALID", "8: ... and it works")
    m("POST", "/team/member_delete", {"team_id": "T1", "user_id": "boss"})
    tap.eq(verdict(svc_key), "NOT_FOUND", "8: removed from the team, its maker's "
           "service-account key goes with it")
    m("POST", "/team/member_add", {"team_id": "T1", "member": {"user_id": "boss",
                                                                "role": "admin"}})
    svc_key = boss("POST", "/key/service-account/generate",
                   {"team_id": "T1", "key_alias": "svc-c"}).json.get("key", "")
    m("POST", "/user/delete", {"user_ids": ["boss"]})
    tap.eq(verdict(svc_key), "NOT_FOUND", "8: ... and when its maker is deleted")

    ro = m("POST", "/key/generate", {"user_id": "root", "key_type": "read_only"}).json["key"]
    ro_caller = m.__class__(srv, ro)
    tap.eq(ro_caller("GET", "/key/list").status, 200, "8: an admin's read_only key reads")
    refused(ro_caller("POST", "/user/new", {"user_id": "ro-made"}), 403, None,
            "8: ... but creates no user")
    r = ro_caller("POST", "/api/providers/openai/keys/select", {"model": "gpt-4"})
    tap.ok(r.status == 403 and PROVIDER_SECRET.encode() not in r.body,
           "8: ... and selects no provider secret", repr(r))
    llm = m("POST", "/key/generate", {"user_id": "root", "key_type": "llm_api"}).json["key"]
    llm_caller = m.__class__(srv, llm)
    for method, path in (("GET", "/key/info"), ("GET", "/key/list"), ("GET", "/user/info"),
                         ("GET", "/team/list"), ("GET", "/audit")):
        refused(llm_caller(method, path), 403, None,
                "8: an admin's llm_api key reads no management route: %s %s" % (method, path))
    tap.eq(verdict(llm), "VALID", "8: ... and still calls models")


def main():
    with Server(workers=2) as srv:
        m = master(srv)
        r = m("POST", "/api/providers/openai/keys", {"name": "main", "value": PROVIDER_SECRET,
                                                    "models": ["gpt-4"]})
        tap.ok(r.status in (200, 201), "setup: a provider key", repr(r))
        user(srv, "root", role="proxy_admin")
        mallory = user(srv, "mallory")
        victim = user(srv, "victim")
        tadmin = user(srv, "tadmin")
        member = user(srv, "member")
        member_admin = user(srv, "member-admin", role="proxy_admin")
        user(srv, "plain")
        team(srv, "T1", admins=["tadmin"], members=["member", "member-admin", "plain"],
             max_budget=10)

        self_granted_permissions(srv, mallory, victim)
        team_admin_escalation(srv, tadmin, member_admin)
        owners_lift_limits(srv, mallory, tadmin, member)
        venice_limits(srv)
        service_accounts_and_key_types(srv, member)


tap.run(main)
