#!/usr/bin/python3
"""conformance_litellm_flows.t: the key, team, user and organization flows a LiteLLM client
walks, as LiteLLM's docs show them, against keywarden with KEYWARDEN_MASTER_KEY=sk-1234, the
docs' master key (the README's own curl session runs in tests/readme.t).  Our own walk of the same steps LiteLLM's end-to-end suites take; the flows that
need a model registry or the relay are not here."""
import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
import tap  # noqa: E402
from kwserver import Server  # noqa: E402
from attack import Caller, together  # noqa: E402


def step(r, status, name):
    tap.ok(r.status == status, name, repr(r))
    return r.json if isinstance(r.json, dict) else {}


def key_flow(m):
    """docs/proxy/virtual_keys.md: generate, info, update, regenerate, block, delete."""
    k = step(m("POST", "/key/generate", {"models": ["gpt-3.5-turbo", "gpt-4"], "duration": "20m",
                                         "metadata": {"user": "ishaan@berri.ai"}}), 200,
             "key: /key/generate with models, duration and metadata")
    key = k.get("key", "")
    tap.ok(key.startswith("sk-") and k.get("expires"), "key: the answer has key and expires", k)
    info = step(m("GET", "/key/info?key=" + key), 200, "key: /key/info?key=")
    tap.eq((info.get("info") or {}).get("metadata"), {"user": "ishaan@berri.ai"},
           "key: its metadata")
    step(m("POST", "/key/update", {"key": key, "models": ["gpt-4"], "max_budget": 10,
                                   "metadata": {"team": "core-infra"}}), 200, "key: /key/update")
    r = step(m("POST", "/key/%s/regenerate" % k.get("token_id"), {}), 200, "key: /key/{key}/regenerate")
    new = r.get("key", "")
    tap.ok(new.startswith("sk-") and new != key, "key: a new secret", r)
    step(m("POST", "/key/block", {"key": new}), 200, "key: /key/block")
    step(Caller(m.srv, new)("GET", "/key/info"), 401, "key: a blocked key is refused")
    step(m("POST", "/key/unblock", {"key": new}), 200, "key: /key/unblock")
    d = step(m("POST", "/key/delete", {"keys": [new]}), 200, "key: /key/delete")
    tap.eq(d.get("deleted_keys"), [new], "key: deleted_keys")


def user_team_org_flow(m):
    """docs/proxy/users.md, team_budgets.md, access_control.md: user, team, org."""
    org = step(m("POST", "/organization/new", {"organization_alias": "marketing-department",
                                               "models": ["gpt-4"], "max_budget": 20}), 200,
               "org: /organization/new")
    oid = org.get("organization_id")
    u = step(m("POST", "/user/new", {"user_email": "krrish@berri.ai", "user_role": "internal_user"}),
             200, "user: /user/new answers the user and a key")
    uid, ukey = u.get("user_id"), u.get("key", "")
    t = step(m("POST", "/team/new", {"team_alias": "my-new-team", "max_budget": 10,
                                     "organization_id": oid,
                                     "members_with_roles": [{"role": "admin", "user_id": uid}]}),
             200, "team: /team/new with an admin member")
    tid = t.get("team_id")
    step(m("POST", "/team/member_add", {"team_id": tid, "member": {"role": "user",
                                                                  "user_email": "new@berri.ai"}}),
         200, "team: /team/member_add by email (the user is made)")
    tk = step(Caller(m.srv, ukey)("POST", "/key/generate", {"team_id": tid}), 200,
              "team: its admin makes a team key")
    tap.eq(tk.get("team_id"), tid, "team: the key is the team's")
    ti = step(m("GET", "/team/info?team_id=" + tid), 200, "team: /team/info")
    tap.ok(len((ti.get("team_info") or ti).get("members_with_roles", [])) == 2,
           "team: two members", ti)
    step(m("POST", "/team/update", {"team_id": tid, "max_budget": 20}), 200, "team: /team/update")
    step(m("GET", "/user/info?user_id=" + uid), 200, "user: /user/info")
    step(m("POST", "/user/update", {"user_id": uid, "max_budget": 5}), 200, "user: /user/update")
    step(m("POST", "/organization/member_add", {"organization_id": oid, "member": {
        "user_id": uid, "role": "org_admin"}}), 200, "org: /organization/member_add")
    step(m("GET", "/organization/info?organization_id=" + oid), 200, "org: /organization/info")
    step(m("POST", "/team/member_delete", {"team_id": tid, "user_email": "new@berri.ai"}), 200,
         "team: /team/member_delete")
    step(m("POST", "/team/delete", {"team_ids": [tid]}), 200, "team: /team/delete")
    step(m("POST", "/user/delete", {"user_ids": [uid]}), 200, "user: /user/delete")


def suite_steps(m):
    """The management steps of LiteLLM's own end-to-end tests (tests/test_keys.py,
    test_team.py, test_users.py, test_organizations.py), each named after its test; their
    model calls need the relay and are left out."""
    srv = m.srv
    rs = together([lambda: m("POST", "/organization/new", {
        "organization_alias": "Organization: same", "models": ["azure-models"],
        "max_budget": None}) for _ in range(19)])
    tap.ok(all(r.status == 200 for r in rs), "test_organization_new: 19 /organization/new "
           "at once with one alias all succeed", sorted(set(r.status for r in rs)))
    uid = str(uuid.uuid4())
    rs = together([lambda: m("POST", "/team/new", {
        "team_alias": "my-new-team", "members_with_roles": [{"role": "user", "user_id": uid}]})
        for _ in range(10)])
    tap.ok(all(r.status == 200 for r in rs), "test_team_new: 10 /team/new at once naming one "
           "new member all succeed", sorted(set(r.status for r in rs)))

    admin = str(uuid.uuid4())
    step(m("POST", "/user/new", {"user_id": admin, "models": ["azure-models"],
                                 "aliases": {"mistral-7b": "gpt-3.5-turbo"}, "duration": None,
                                 "max_budget": None, "budget_duration": None}), 200,
         "test_team_update_sc_2: /user/new with LiteLLM's test fields")
    team = step(m("POST", "/team/new", {"team_alias": "my-new-team", "members_with_roles": [
        {"role": "admin", "user_id": admin}]}), 200, "test_team_update_sc_2: /team/new")
    step(m("POST", "/team/member_add", {"team_id": team.get("team_id"), "member": {
        "role": "user", "user_email": "krrish_%s@berri.ai" % uuid.uuid4()}}), 200,
         "test_team_update_sc_2: /team/member_add of a new user by email")
    data = step(m("POST", "/team/update", {"team_id": team.get("team_id"),
                                           "team_alias": "my-new-team"}), 200,
                "test_team_update_sc_2: /team/update").get("data") or {}
    skip = {"members_with_roles", "created_at", "updated_at", "model_spend", "model_max_budget",
            "model_id", "litellm_organization_table", "litellm_model_table"}
    tap.ok(data and all(k in skip or team.get(k, "<absent>") == v for k, v in data.items()),
           "test_team_update_sc_2: every other field of the update's data is the new team's",
           [k for k, v in data.items() if k not in skip and team.get(k, "<absent>") != v])

    bad = step(m("POST", "/key/generate", {"models": ["azure-models"],
                                            "user_id": "user-%s" % uuid.uuid4()}), 200,
               "test_key_gen_bad_key: the master key makes a key for a user nobody made")
    r = Caller(srv, bad.get("key", ""))("POST", "/key/generate", {"user_id": bad.get("user_id")})
    tap.eq(r.status, 401, "test_key_gen_bad_key: that key makes no key (no user, no role)")
    k = step(m("POST", "/key/generate", {"metadata": {"test": "test"}}), 200,
             "test_key_update: a key with metadata")
    r = step(m("POST", "/key/update", {"key": k.get("key"), "metadata": {}}), 200,
             "test_key_update: metadata {}")
    tap.eq(r.get("metadata"), {}, "test_key_update: the metadata is now {}")
    step(m("POST", "/user/update", {"user_id": "litellm-proxy-budget", "spend": 0}), 200,
         "test_key_update: update_proxy_budget's /user/update")
    r = Caller(srv, k.get("key", ""))("GET", "/key/info?key=sk-%s" % uuid.uuid4())
    tap.eq(r.status, 404, "test_key_info: a key asking for a random key is 404")
    gone = step(m("POST", "/key/generate", {"user_id": "ishaan-smart"}), 200,
                "test_key_delete_ui: a key for another user")
    m("POST", "/team/new", {"team_id": "litellm-dashboard", "models": None})
    ui = step(m("POST", "/user/new", {"user_role": "proxy_admin", "team_id": "litellm-dashboard"}),
              200, "test_key_delete_ui: a proxy_admin user in the dashboard team")
    step(Caller(srv, ui.get("key", ""))("POST", "/key/delete", {"keys": [gone.get("key")]}), 200,
         "test_key_delete_ui: the proxy_admin user's key deletes it")
    me = step(m("POST", "/user/new", {"user_id": "krrish_%s@berri.ai" % uuid.uuid4()}), 200,
              "test_user_info: a user")
    other = step(m("POST", "/user/new", {}), 200, "test_user_info: another user")
    r = Caller(srv, other.get("key", ""))("GET", "/user/info?user_id=" + me.get("user_id", ""))
    tap.eq(r.status, 403, "test_user_info: a random user's key reading the user is 403")


def main():
    with Server(workers=2, master_key="sk-1234") as srv:
        m = Caller(srv, "sk-1234")
        key_flow(m)
        user_team_org_flow(m)
        suite_steps(m)


tap.run(main)
