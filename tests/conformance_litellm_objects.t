#!/usr/bin/python3
"""conformance_litellm_objects.t: users, teams and organizations as LiteLLM's proxy answers
them (item 8 of the issue "LiteLLM-exact behaviour where clients notice it"). Each point names
the LiteLLM function it follows (BerriAI/litellm, litellm/proxy/management_endpoints/...).
Through the real lighttpd:
 8a. /user/new honours team_id (the user joins, the first key is the team's) and aliases
     (internal_user_endpoints.py new_user, _add_user_to_team);
 8b. /user/update of an unknown user_id makes it, 200 (internal_user_endpoints.py user_update's
     upsert);
 8c. /team/new makes the calling user a team admin (team_endpoints.py new_team);
 8d. /team/update answers {"team_id", "data"} (team_endpoints.py update_team);
 8e. a team's own key reads /team/info of its team (team_endpoints.py validate_membership);
 8f. /team/member_update changes role and max_budget_in_team, the team's admins may, a member
     may not, an admin not its own budget (team_endpoints.py team_member_update);
 8g. max_budget_in_team is enforced on the member's keys in the team, in LiteLLM's words
     (auth/auth_checks.py _check_team_member_budget);
 8h. /user/info shows team_memberships with litellm_budget_table
     (internal_user_endpoints.py user_info, _types.py LiteLLM_TeamMembership);
 8i. DELETE /organization/delete with organization_ids (organization_endpoints.py
     delete_organization);
 8j. PATCH /organization/member_update (organization_endpoints.py organization_member_update);
 8k. DELETE /organization/member_delete, POST kept (organization_endpoints.py
     organization_member_delete);
 8l. litellm_budget_table in organization answers and lists (organization_endpoints.py
     info_organization, list_organization);
 8m. an organization_id that names no organization on /key/generate and /team/new is 400 in
     get_org_object's words (key_management_endpoints.py generate_key_fn, team_endpoints.py
     new_team, auth/auth_checks.py get_org_object);
 8n. max_budget_in_organization is kept and shown, not enforced: LiteLLM's common_checks has
     no check of an organization membership's budget (auth/auth_checks.py common_checks,
     _organization_max_budget_check reads the organization's own budget)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
import tap  # noqa: E402
import attack  # noqa: E402
from kwserver import Server  # noqa: E402


def user_new(srv, m):
    """8a: /user/new's team_id and aliases."""
    attack.team(srv, "t-8a")
    r = m("POST", "/user/new", {"user_id": "u-8a", "team_id": "t-8a",
                                "aliases": {"fast": "gpt-4o-mini"}})
    tap.ok(r.status == 200 and "t-8a" in r.json.get("teams", []),
           "8a: /user/new with team_id makes the user a member of the team "
           "(internal_user_endpoints.new_user, _add_user_to_team)", repr(r))
    k = m("GET", "/key/info?key=" + r.json.get("key", "none")).json.get("info", {})
    tap.ok(k.get("team_id") == "t-8a" and k.get("aliases") == {"fast": "gpt-4o-mini"},
           "8a: and its first key is the team's, with the aliases sent (new_user: "
           "generate_key_helper_fn)", repr(k))
    t = m("GET", "/team/info?team_id=t-8a").json["team_info"]
    tap.ok([x["user_id"] for x in t["members_with_roles"]] == ["u-8a"],
           "8a: the team lists the new member", repr(t))
    r = m("POST", "/user/new", {"user_id": "u-8a2", "team_id": "no-such-team"})
    tap.ok(r.status == 400 and r.json["error"]["param"] == "team_id",
           "8a: a team_id that names no team is 400 naming team_id", repr(r))


def user_update_upsert(m):
    """8b: /user/update upserts by user_id."""
    r = m("POST", "/user/update", {"user_id": "u-8b", "max_budget": 7})
    tap.ok(r.status == 200 and r.json.get("user_id") == "u-8b" and r.json.get("max_budget") == 7,
           "8b: /user/update of an unknown user_id makes it, 200 "
           "(internal_user_endpoints.user_update upserts)", repr(r))
    r = m("GET", "/user/info?user_id=u-8b")
    tap.ok(r.status == 200 and r.json["user_info"]["max_budget"] == 7
           and r.json["user_info"]["user_role"] == "internal_user",
           "8b: the user is stored, an internal_user", repr(r))
    r = m("POST", "/user/update", {"user_email": "nobody-8b@example.com", "max_budget": 1})
    tap.ok(r.status == 404, "8b: by an email no user has it is still 404 (no id to make)", repr(r))


def team_new_creator(srv):
    """8c: the caller of /team/new joins as admin."""
    pa = attack.user(srv, "pa-8c", role="proxy_admin")
    r = pa("POST", "/team/new", {"team_id": "t-8c", "members_with_roles":
                                 [{"user_id": "u-8c", "role": "user"}]})
    roles = {x["user_id"]: x["role"] for x in r.json.get("members_with_roles", [])}
    tap.ok(r.status == 200 and roles == {"u-8c": "user", "pa-8c": "admin"},
           "8c: /team/new adds the calling user as a team admin (team_endpoints.new_team)",
           repr(r))
    r = attack.master(srv)("POST", "/team/new", {"team_id": "t-8c2"})
    tap.ok(r.status == 200 and r.json["members_with_roles"] == [],
           "8c: the master key, which has no user, joins nothing", repr(r))


def team_update_shape(srv, m):
    """8d: /team/update's answer."""
    attack.team(srv, "t-8d")
    r = m("POST", "/team/update", {"team_id": "t-8d", "team_alias": "eight-d"})
    tap.ok(r.status == 200 and sorted(r.json) == ["data", "team_id"]
           and r.json["team_id"] == "t-8d" and r.json["data"]["team_alias"] == "eight-d",
           "8d: /team/update answers {team_id, data: the team} (team_endpoints.update_team)",
           repr(r))


def team_key_reads_team(srv, m):
    """8e: a team key reads its team."""
    attack.team(srv, "t-8e")
    attack.team(srv, "t-8e-other")
    k = m("POST", "/key/generate", {"team_id": "t-8e"}).json["key"]
    tk = attack.Caller(srv, k)
    r = tk("GET", "/team/info?team_id=t-8e")
    tap.ok(r.status == 200 and r.json["team_id"] == "t-8e",
           "8e: a team's own key reads /team/info of its team "
           "(team_endpoints.validate_membership)", repr(r))
    r = tk("GET", "/team/info?team_id=t-8e-other")
    tap.ok(r.status == 403, "8e: not another team's", repr(r))


def team_member_update(srv, m):
    """8f: /team/member_update."""
    attack.user(srv, "adm-8f")
    mem = attack.user(srv, "mem-8f")
    attack.user(srv, "mem2-8f")
    attack.team(srv, "t-8f", admins=["adm-8f"], members=["mem-8f", "mem2-8f"])
    adm = attack.Caller(srv, m("POST", "/key/generate", {"user_id": "adm-8f"}).json["key"],
                        "adm-8f")
    r = adm("POST", "/team/member_update", {"team_id": "t-8f", "user_id": "mem-8f",
                                            "max_budget_in_team": 5, "role": "user"})
    tap.ok(r.status == 200 and r.json == {"team_id": "t-8f", "user_id": "mem-8f",
                                          "user_email": None, "max_budget_in_team": 5,
                                          "tpm_limit": None, "rpm_limit": None,
                                          "role": "user"},
           "8f: a team admin sets a member's max_budget_in_team: LiteLLM's "
           "TeamMemberUpdateResponse (team_endpoints.team_member_update)", repr(r))
    r = m("POST", "/team/member_update", {"team_id": "t-8f", "user_id": "mem2-8f",
                                          "role": "admin"})
    t = m("GET", "/team/info?team_id=t-8f").json["team_info"]
    roles = {x["user_id"]: x["role"] for x in t["members_with_roles"]}
    tap.ok(r.status == 200 and roles.get("mem2-8f") == "admin",
           "8f: a proxy admin changes a member's role", repr((r, roles)))
    r = mem("POST", "/team/member_update", {"team_id": "t-8f", "user_id": "mem-8f",
                                            "max_budget_in_team": 500})
    tap.ok(r.status == 403, "8f: a plain member may not change its own budget", repr(r))
    r = adm("POST", "/team/member_update", {"team_id": "t-8f", "user_id": "adm-8f",
                                            "max_budget_in_team": 500})
    tap.ok(r.status == 403 and r.json["error"]["param"] == "max_budget_in_team",
           "8f: nor a team admin its own (policy.c: a limit comes from above)", repr(r))
    r = m("POST", "/team/member_update", {"team_id": "t-8f", "user_id": "nobody-8f",
                                          "role": "user"})
    tap.ok(r.status == 404, "8f: a user who is no member is 404", repr(r))


def member_budget(srv, m):
    """8g, 8h: max_budget_in_team enforced; team_memberships in /user/info."""
    attack.user(srv, "u-8g")
    attack.team(srv, "t-8g", members=["u-8g"])
    k = m("POST", "/key/generate", {"team_id": "t-8g", "user_id": "u-8g"}).json["key"]
    r = m("POST", "/team/member_update", {"team_id": "t-8g", "user_id": "u-8g",
                                          "max_budget_in_team": 1})
    tap.ok(r.status == 200, "8g: setup: the member's budget in the team is 1", repr(r))
    r = m("POST", "/key/verify", {"key": k, "model": "gpt-4", "dry_run": True})
    tap.ok(r.status == 200 and r.json["code"] == "VALID", "8g: admitted while unspent", repr(r))
    m("POST", "/key/usage", {"key": k, "model": "gpt-4", "cost": 1.5})
    r = m("POST", "/key/verify", {"key": k, "model": "gpt-4", "dry_run": True})
    tap.ok(r.status == 200 and r.json["code"] == "BUDGET_EXCEEDED" and
           r.json["message"] == "Budget has been exceeded! User=u-8g in Team=t-8g "
           "Current cost: 1.5, Max budget: 1.0",
           "8g: the member's spend in the team past max_budget_in_team refuses, in "
           "LiteLLM's words (auth_checks._check_team_member_budget)", repr(r))
    k2 = m("POST", "/key/generate", {"user_id": "u-8g"}).json["key"]
    r = m("POST", "/key/verify", {"key": k2, "model": "gpt-4", "dry_run": True})
    tap.ok(r.status == 200 and r.json["code"] == "VALID",
           "8g: the user's personal key is not bound by the team's budget for it", repr(r))
    r = m("GET", "/user/info?user_id=u-8g")
    tm = r.json.get("team_memberships")
    tap.ok(r.status == 200 and tm == [{"user_id": "u-8g", "team_id": "t-8g", "budget_id": None,
                                       "spend": 1.5,
                                       "litellm_budget_table": {"max_budget": 1}}],
           "8h: /user/info shows team_memberships with litellm_budget_table "
           "(internal_user_endpoints.user_info, LiteLLM_TeamMembership)", repr(r))


def org_delete(srv, m):
    """8i: DELETE /organization/delete."""
    m("POST", "/organization/new", {"organization_id": "o-8i", "organization_alias": "eight-i"})
    attack.team(srv, "t-8i", organization_id="o-8i")
    k = m("POST", "/key/generate", {"team_id": "t-8i"}).json["key"]
    r = m("DELETE", "/organization/delete", {"organization_ids": ["o-8i"]})
    tap.ok(r.status == 200 and [o["organization_id"] for o in r.json] == ["o-8i"],
           "8i: DELETE /organization/delete with organization_ids answers the organizations "
           "deleted (organization_endpoints.delete_organization)", repr(r))
    tap.ok(m("GET", "/organization/info?organization_id=o-8i").status == 404 and
           m("GET", "/team/info?team_id=t-8i").status == 404 and
           attack.Caller(srv, k)("GET", "/key/info").status == 401,
           "8i: with its teams and their keys", "")
    r = m("DELETE", "/organization/delete", {"organization_ids": ["o-8i"]})
    tap.ok(r.status == 404, "8i: one that does not exist is 404", repr(r))
    u = attack.user(srv, "u-8i")
    r = u("DELETE", "/organization/delete", {"organization_ids": ["x"]})
    tap.ok(r.status in (401, 403), "8i: proxy admins only", repr(r))


def org_members(srv, m):
    """8j, 8k, 8l."""
    m("POST", "/organization/new", {"organization_id": "o-8j", "organization_alias": "eight-j",
                                    "max_budget": 10, "rpm_limit": 5})
    attack.user(srv, "oadm-8j")
    mem = attack.user(srv, "omem-8j")
    m("POST", "/organization/member_add", {"organization_id": "o-8j", "member": [
        {"user_id": "oadm-8j", "role": "org_admin"}, {"user_id": "omem-8j"}]})
    oadm = attack.Caller(srv, m("POST", "/key/generate", {"user_id": "oadm-8j"}).json["key"],
                         "oadm-8j")
    r = oadm("PATCH", "/organization/member_update", {
        "organization_id": "o-8j", "user_id": "omem-8j", "role": "internal_user_viewer",
        "max_budget_in_organization": 3})
    tap.ok(r.status == 200 and r.json.get("user_role") == "internal_user_viewer" and
           r.json.get("litellm_budget_table") == {"max_budget": 3} and
           r.json.get("organization_id") == "o-8j",
           "8j: PATCH /organization/member_update by an org_admin answers the membership "
           "(organization_endpoints.organization_member_update)", repr(r))
    r = mem("PATCH", "/organization/member_update", {"organization_id": "o-8j",
                                                     "user_id": "omem-8j", "role": "org_admin"})
    tap.ok(r.status == 403, "8j: a member may not promote itself", repr(r))
    r = m("DELETE", "/organization/member_delete", {"organization_id": "o-8j",
                                                    "user_id": "omem-8j"})
    tap.ok(r.status == 200 and [x["user_id"] for x in r.json["members"]] == ["oadm-8j"],
           "8k: DELETE /organization/member_delete removes the member, as LiteLLM's method "
           "(organization_endpoints.organization_member_delete)", repr(r))
    r = m("POST", "/organization/member_delete", {"organization_id": "o-8j",
                                                  "user_id": "oadm-8j"})
    tap.ok(r.status == 200, "8k: POST still does", repr(r))
    want = {"budget_id": None, "max_budget": 10, "rpm_limit": 5, "tpm_limit": None}
    r = m("GET", "/organization/info?organization_id=o-8j")
    tap.ok(r.status == 200 and r.json.get("litellm_budget_table") == want,
           "8l: /organization/info holds litellm_budget_table (info_organization)", repr(r))
    r = m("GET", "/organization/list")
    tap.ok(r.status == 200 and all(o.get("litellm_budget_table") is not None for o in r.json)
           and [o["litellm_budget_table"] for o in r.json
                if o["organization_id"] == "o-8j"] == [want],
           "8l: and every organization /organization/list answers (list_organization)", repr(r))


def unknown_org(m):
    """8m: an unknown organization_id."""
    words = ("Organization doesn't exist in db. Organization=o-none-8m. Create organization "
             "via `/organization/new` call.")
    for path in ("/key/generate", "/team/new"):
        r = m("POST", path, {"organization_id": "o-none-8m"})
        err = (r.json or {}).get("error") or {}
        tap.ok(r.status == 400 and err.get("message") == words and
               err.get("param") == "organization_id",
               "8m: %s with an unknown organization_id is 400 in get_org_object's words "
               "(generate_key_fn, new_team)" % path, repr(r))
    m("POST", "/organization/new", {"organization_id": "o-8m", "organization_alias": "8m"})
    r = m("POST", "/team/new", {"organization_id": "o-8m"})
    tap.ok(r.status == 200, "8m: a known one passes", repr(r))


def org_member_budget_kept(srv, m):
    """8n: max_budget_in_organization stored and shown, never a refusal."""
    m("POST", "/organization/new", {"organization_id": "o-8n", "organization_alias": "8n"})
    attack.user(srv, "u-8n")
    m("POST", "/organization/member_add", {"organization_id": "o-8n",
                                           "member": {"user_id": "u-8n"}})
    r = m("PATCH", "/organization/member_update", {"organization_id": "o-8n", "user_id": "u-8n",
                                                   "max_budget_in_organization": 0.01})
    k = m("POST", "/key/generate", {"user_id": "u-8n", "organization_id": "o-8n"}).json["key"]
    m("POST", "/key/usage", {"key": k, "cost": 1})
    v = m("POST", "/key/verify", {"key": k, "dry_run": True})
    tap.ok(r.status == 200 and r.json.get("litellm_budget_table") == {"max_budget": 0.01} and
           v.json.get("code") == "VALID",
           "8n: max_budget_in_organization is kept and shown, and holds nothing, as LiteLLM's "
           "common_checks has no organization membership budget check", repr(v))


def main():
    with Server(workers=2) as srv:
        m = attack.master(srv)
        user_new(srv, m)
        user_update_upsert(m)
        team_new_creator(srv)
        team_update_shape(srv, m)
        team_key_reads_team(srv, m)
        team_member_update(srv, m)
        member_budget(srv, m)
        org_delete(srv, m)
        org_members(srv, m)
        unknown_org(m)
        org_member_budget_kept(srv, m)
    tap.done()


tap.run(main)
