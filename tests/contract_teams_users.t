#!/usr/bin/python3
"""contract_teams_users.t: the /team/* and /user/* operations through lighttpd: shapes, errors, roles, membership on both sides, key clean-up, audit."""
import glob
import hashlib
import os
import re
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import contract  # noqa: E402
from kwserver import Server  # noqa: E402

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
SPEC = contract.load_spec()
OPS = contract.operations(SPEC)


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


class Client:
    """Requests with one bearer credential."""

    def __init__(self, srv, key):
        self.srv, self.key = srv, key

    def __call__(self, method, path, body=None, headers=None):
        hdrs = {"Authorization": "Bearer " + self.key}
        hdrs.update(headers or {})
        return self.srv.request(method, path, body=body, headers=hdrs)


def members(team):
    return {m["user_id"]: m for m in team.get("members_with_roles", [])}


def audit(master, object_id, **filters):
    q = "&".join(["object_id=" + object_id] + ["%s=%s" % kv for kv in filters.items()])
    r = master("GET", "/audit?page_size=100&" + q)
    return r.json.get("audit_logs", []) if r.status == 200 else []


def users_and_roles(srv, master):
    """POST /user/new, and callers of every role for the rest of the script."""
    r = master("POST", "/user/new", {"user_email": "alice@example.com", "user_role": "internal_user",
                                     "key_alias": "alice-key", "models": ["gpt-4"], "max_budget": 10,
                                     "budget_duration": "1d", "duration": "1h",
                                     "metadata": {"dept": "r&d"}})
    alice = success(r, "user_new", "user/new with settings and a first key")
    tap.ok(UUID4.fullmatch(alice.get("user_id", "")), "user_id is a generated UUID v4",
           alice.get("user_id"))
    tap.ok(re.fullmatch(r"sk-[A-Za-z0-9_-]{22}", alice.get("key", "")), "the answer has the key")
    tap.eq(alice.get("token"), hashlib.sha256(alice.get("key", "").encode()).hexdigest(),
           "token is the key's SHA-256")
    tap.ok(alice.get("key_alias") == "alice-key" and alice.get("expires"),
           "key_alias and expires (duration) come from the key", alice)
    tap.ok(alice.get("user_role") == "internal_user" and alice.get("teams") == [] and
           alice.get("models") == ["gpt-4"] and alice.get("max_budget") == 10 and
           alice.get("spend") == 0 and alice.get("metadata") == {"dept": "r&d"},
           "the user's fields come back", alice)
    tap.ok(re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00Z", alice.get("budget_reset_at") or ""),
           "budget_duration 1d resets at the next UTC midnight", alice.get("budget_reset_at"))
    me = Client(srv, alice["key"])
    info = me("GET", "/key/info")
    tap.ok(info.status == 200 and info.json["info"].get("user_id") == alice["user_id"] and
           info.json["info"].get("models") == ["gpt-4"],
           "the first key is the user's, with the user's models", info)

    r = master("POST", "/user/new", {"user_id": "bob", "user_email": "bob@example.com"})
    bob = success(r, "user_new", "user/new with a user_id")
    tap.ok(bob.get("user_id") == "bob" and bob.get("user_role") == "internal_user" and
           bob.get("key"), "role defaults to internal_user", bob)
    r = master("POST", "/user/new", {"user_id": "nokey", "auto_create_key": False})
    r = success(r, "user_new", "user/new with auto_create_key false")
    tap.ok("key" not in r and "token" not in r, "no key is made", r)

    error_of(master("POST", "/user/new", {"user_id": "bob"}), 400, "an existing user_id", "user_id")
    error_of(master("POST", "/user/new", {"user_email": "ALICE@example.com"}), 400,
             "an email another user has", "user_email")
    error_of(master("POST", "/user/new", {"user_id": "ghost", "teams": ["no-such-team"]}), 400,
             "a team that does not exist", "teams[0]")
    error_of(master("GET", "/user/info?user_id=ghost"), 404,
             "a refused user/new stores nothing", "user_id")
    error_of(master("POST", "/user/new", {"user_role": "root"}), 422, "a role outside the enum",
             "user_role")
    error_of(master("POST", "/user/new", {"max_budget": -1}), 400, "a negative budget",
             "max_budget")
    r = master("POST", "/user/new", {"user_id": "ignores-extras", "user_idd": "x"})
    tap.ok(r.status == 200 and "user_idd" not in (r.json or {}),
           "an unknown field is ignored, as LiteLLM's NewUserRequest ignores it", repr(r))
    master("POST", "/user/delete", {"user_ids": ["ignores-extras"]})
    error_of(srv.request("POST", "/user/new", body={}), 401, "user/new without a credential")
    error_of(me("POST", "/user/new", {}), 403, "an internal_user cannot create users")

    keys = {}
    for uid, role in (("dave", "internal_user"), ("viewer", "proxy_admin_viewer"),
                      ("uviewer", "internal_user_viewer"), ("padmin", "proxy_admin")):
        r = master("POST", "/user/new", {"user_id": uid, "user_role": role,
                                         "user_email": uid + "@example.com"})
        tap.ok(r.status == 200 and r.json.get("key"), "user/new %s (%s)" % (uid, role), r)
        keys[uid] = Client(srv, r.json.get("key", "-"))
    error_of(keys["viewer"]("POST", "/user/new", {}), 403, "an admin viewer cannot create users")
    r = keys["padmin"]("POST", "/user/new", {"user_id": "made-by-padmin", "auto_create_key": False})
    tap.eq(r.status, 200, "a proxy_admin user's key creates users")
    keys["alice"], keys["bob"] = me, Client(srv, bob["key"])
    return alice, keys


def teams(srv, master, alice, k):
    """/team/new, /team/info, /team/update, /team/list."""
    body = {"team_alias": "research", "organization_id": "org-1",
            "members_with_roles": [{"user_id": alice["user_id"], "role": "admin"},
                                   {"user_email": "BOB@example.com"},
                                   {"user_email": "carol@example.com"}],
            "models": ["gpt-4", "claude-3"], "max_budget": 100, "budget_duration": "30d",
            "tpm_limit": 1000, "rpm_limit": 10, "metadata": {"cost_center": 7}, "tags": ["prod"]}
    # the organization first: new_team refuses one that names none (get_org_object)
    success(master("POST", "/organization/new", {"organization_id": "org-1",
                                                 "organization_alias": "org one"}),
            "organization_new", "the team's organization")
    team = success(master("POST", "/team/new", body), "team_new", "team/new with members")
    tid = team.get("team_id", "")
    tap.ok(UUID4.fullmatch(tid), "team_id is a generated UUID v4", tid)
    m = members(team)
    tap.ok(m.get(alice["user_id"], {}).get("role") == "admin" and
           m.get("bob", {}).get("role") == "user" and
           m.get(alice["user_id"], {}).get("user_email") == "alice@example.com",
           "roles are kept; an existing user named by email (any case) is found", team)
    tap.eq(m.get("bob", {}).get("user_email"), "bob@example.com",
           "the member entry shows the user's email as stored")
    carol = [u for u in m if u not in (alice["user_id"], "bob")]
    tap.ok(len(carol) == 1 and UUID4.fullmatch(carol[0]) and
           m[carol[0]].get("user_email") == "carol@example.com",
           "an unknown email becomes a new user with a UUID", team)
    tap.ok(team.get("spend") == 0 and team.get("blocked") is False and
           team.get("models") == ["gpt-4", "claude-3"] and team.get("max_budget") == 100 and
           team.get("metadata") == {"cost_center": 7} and team.get("tags") == ["prod"] and
           re.fullmatch(r"\d{4}-\d\d-01T00:00:00Z", team.get("budget_reset_at") or ""),
           "the team's fields come back; 30d resets on the 1st", team)
    for uid, who in ((alice["user_id"], "alice"), ("bob", "bob"), (carol[0], "carol")):
        r = master("GET", "/user/info?user_id=" + uid)
        tap.ok(r.status == 200 and tid in r.json["user_info"]["teams"],
               "%s's user record lists the team" % who, r)
    r = master("GET", "/user/info?user_id=" + carol[0])
    tap.ok(r.json["user_info"].get("user_role") == "internal_user", "a created member is an internal_user")

    r = master("POST", "/team/new", {"team_id": "team-fixed", "team_alias": "ops",
                                     "members_with_roles": [{"user_id": "dave", "role": "admin"}]})
    tap.ok(success(r, "team_new", "team/new with a team_id").get("team_id") == "team-fixed",
           "the team_id sent is kept")
    error_of(master("POST", "/team/new", {"team_id": "team-fixed"}), 400, "an existing team_id",
             "team_id")
    error_of(master("POST", "/team/new", {"team_id": "t-bad", "members_with_roles": [
        {"user_id": "zed"}, {"role": "admin"}]}), 400, "a member without user_id or user_email",
        "members_with_roles[1]")
    error_of(master("GET", "/user/info?user_id=zed"), 404, "a refused team/new creates no user",
             "user_id")
    error_of(master("POST", "/team/new", {"members_with_roles": [
        {"user_id": "bob"}, {"user_email": "BOB@example.com"}]}), 400, "the same member twice",
        "members_with_roles[1]")
    error_of(master("POST", "/team/new", {"members_with_roles": [{"user_id": "x", "role": "boss"}]}),
             422, "a role outside the enum", "members_with_roles[0].role")
    error_of(master("POST", "/team/new", {"max_budget": "lots"}), 422, "a budget of the wrong type",
             "max_budget")
    error_of(srv.request("POST", "/team/new", body={}), 401, "team/new without a credential")
    error_of(k["alice"]("POST", "/team/new", {}), 403, "an internal_user cannot create teams")
    error_of(k["viewer"]("POST", "/team/new", {}), 403, "an admin viewer cannot create teams")
    tap.eq(k["padmin"]("POST", "/team/new", {"team_alias": "by-padmin"}).status, 200,
           "a proxy_admin user's key creates teams")

    # /team/info
    r = master("POST", "/key/generate", {"team_id": tid, "user_id": "bob", "key_alias": "bob-team"})
    tap.eq(r.status, 200, "a team key for bob")
    bob_team_key = r.json.get("key", "-")
    r = master("POST", "/key/generate", {"team_id": tid, "key_alias": "team-service"})
    tap.eq(r.status, 200, "a team key without a user")
    info = success(master("GET", "/team/info?team_id=" + tid), "team_info", "team/info as master")
    tap.ok(info.get("team_id") == tid and info.get("team_info", {}).get("team_alias") == "research"
           and sorted(x.get("key_alias") for x in info.get("keys", [])) == ["bob-team", "team-service"],
           "team/info: the record and the team's keys", info)
    tap.ok(all("key" not in x and "token" in x for x in info.get("keys", [])),
           "team/info shows keys by their hash, never the plaintext", info.get("keys"))
    r = success(k["alice"]("GET", "/team/info?team_id=" + tid), "team_info", "a team admin reads it")
    tap.eq(len(r.get("keys", [])), 2, "a team admin sees every team key")
    r = success(k["bob"]("GET", "/team/info?team_id=" + tid), "team_info", "a plain member reads it")
    tap.eq([x.get("key_alias") for x in r.get("keys", [])], ["bob-team"],
           "a plain member sees only their own keys")
    success(k["viewer"]("GET", "/team/info?team_id=" + tid), "team_info", "an admin viewer reads it")
    error_of(k["dave"]("GET", "/team/info?team_id=" + tid), 403, "a non-member", "team_id")
    error_of(k["dave"]("GET", "/team/info?team_id=nope"), 404,
             "an unknown team is 404 before 403", "team_id")
    error_of(master("GET", "/team/info"), 422, "team/info without team_id", "team_id")
    error_of(srv.request("GET", "/team/info?team_id=" + tid), 401, "team/info without a credential")

    # /team/update
    # a team admin names the team; its limits are for the level above (README: Who may change what)
    error_of(k["alice"]("POST", "/team/update", {"team_id": tid, "max_budget": 200}), 403,
             "a team admin does not raise the team's budget", "max_budget")
    r = k["alice"]("POST", "/team/update", {"team_id": tid, "team_alias": "research-2"},
                   headers={"litellm-changed-by": "alice-on-behalf"})
    success(r, "team_update", "a team admin updates the team")
    r = master("POST", "/team/update", {"team_id": tid, "max_budget": 200, "budget_duration": "1d"})
    # update_team answers {"team_id", "data": the team}
    up = success(r, "team_update", "a proxy admin sets the team's limits").get("data", {})
    tap.ok(up.get("team_alias") == "research-2" and up.get("max_budget") == 200 and
           up.get("models") == ["gpt-4", "claude-3"] and up.get("rpm_limit") == 10 and
           len(up.get("members_with_roles", [])) == 3,
           "only the fields sent change", up)
    tap.ok(re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00Z", up.get("budget_reset_at") or "") and
           up.get("budget_reset_at") != team.get("budget_reset_at"),
           "budget_duration recomputes budget_reset_at", up)
    up = success(master("POST", "/team/update", {"team_id": tid, "team_alias": None, "tags": None}),
                 "team_update", "a field sent as null").get("data", {})
    tap.ok(up.get("team_alias") is None and up.get("tags") is None and up.get("max_budget") == 200,
           "null sets null; others stay", up)
    error_of(k["bob"]("POST", "/team/update", {"team_id": tid, "max_budget": 1e9}), 403,
             "a plain member cannot update the team")
    error_of(k["viewer"]("POST", "/team/update", {"team_id": tid}), 403,
             "an admin viewer cannot update")
    error_of(k["dave"]("POST", "/team/update", {"team_id": tid}), 403, "a non-member cannot update")
    error_of(master("POST", "/team/update", {"team_id": "nope"}), 404, "update an unknown team",
             "team_id")
    error_of(master("POST", "/team/update", {"team_id": tid, "members_with_roles": []}), 400,
             "members change through member_add/member_delete", "members_with_roles")
    error_of(master("POST", "/team/update", {"team_alias": "x"}), 422, "update without team_id",
             "team_id")
    error_of(master("POST", "/team/update", {"team_id": tid, "rpm_limit": -1}), 422,
             "a negative rpm_limit", "rpm_limit")
    return tid, carol[0], bob_team_key


def team_lists(srv, master, tid, k):
    everything = success(master("GET", "/team/list"), "team_list", "team/list as master")
    ids = [t["team_id"] for t in everything]
    tap.ok(tid in ids and "team-fixed" in ids and len(ids) == 3, "admins see every team", ids)
    r = success(k["viewer"]("GET", "/team/list"), "team_list", "team/list as a viewer")
    tap.eq(len(r), 3, "admin viewers see every team")
    r = success(master("GET", "/team/list?organization_id=org-1"), "team_list", "filtered by org")
    tap.eq([t["team_id"] for t in r], [tid], "organization_id filters")
    r = success(master("GET", "/team/list?user_id=dave"), "team_list", "filtered by user")
    tap.eq([t["team_id"] for t in r], ["team-fixed"], "user_id filters")
    r = success(k["bob"]("GET", "/team/list"), "team_list", "team/list as a member")
    tap.eq([t["team_id"] for t in r], [tid], "a member sees their own teams only")
    r = k["bob"]("GET", "/team/list?user_id=bob")
    tap.eq(len(r.json or []), 1, "a member may name themselves")
    error_of(k["bob"]("GET", "/team/list?user_id=dave"), 403, "a member asking for another user",
             "user_id")
    r = success(k["uviewer"]("GET", "/team/list"), "team_list", "a user with no team")
    tap.eq(r, [], "no team: an empty list")
    error_of(srv.request("GET", "/team/list"), 401, "team/list without a credential")


def member_changes(srv, master, tid, k):
    """/team/member_add and /team/member_delete."""
    r = k["alice"]("POST", "/team/member_add", {"team_id": tid,
                                               "member": {"user_email": "erin@example.com"}})
    added = success(r, "team_member_add", "a team admin adds a member by email")
    erin = [u for u in added.get("updated_users", []) if u.get("user_email") == "erin@example.com"]
    tap.ok(len(erin) == 1 and tid in erin[0].get("teams", []) and
           members(added).get(erin[0]["user_id"], {}).get("role") == "user",
           "a new user, role user, the team in their teams", added)
    r = master("POST", "/team/member_add", {"team_id": tid, "max_budget_in_team": 5,
                                           "member": [{"user_id": "dave", "role": "admin"},
                                                      {"user_id": "frank"}]})
    added = success(r, "team_member_add", "add a list of members")
    m = members(added)
    tap.ok(m.get("dave", {}).get("role") == "admin" and m.get("frank", {}).get("role") == "user" and
           m["dave"].get("max_budget_in_team") == 5 and m["frank"].get("max_budget_in_team") == 5,
           "roles and max_budget_in_team on each entry", added.get("members_with_roles"))
    tap.eq(sorted(u["user_id"] for u in added.get("updated_users", [])), ["dave", "frank"],
           "updated_users lists the users changed")
    r = master("GET", "/user/info?user_id=dave")
    tap.ok(r.status == 200 and sorted(r.json["user_info"]["teams"]) == sorted(["team-fixed", tid]),
           "an existing user's teams gain the team", r)

    error_of(k["alice"]("POST", "/team/member_add", {"team_id": tid, "member": {"user_id": "bob"}}),
             400, "a user already a member", "member")
    error_of(master("POST", "/team/member_add", {"team_id": tid, "member": [
        {"user_id": "gina"}, {"user_email": "DAVE@example.com"}]}), 400,
        "a listed user already a member, named by email", "member[1]")
    error_of(master("GET", "/user/info?user_id=gina"), 404, "all or nothing: gina was not created")
    error_of(master("POST", "/team/member_add", {"team_id": tid, "member": {
        "user_id": "hank", "user_email": "bob@example.com"}}), 400,
        "a new user_id with another user's email", "member")
    r = master("POST", "/team/member_add", {"team_id": tid, "member": []})
    tap.ok(r.status == 200 and r.json.get("updated_users") == [] and
           len(r.json.get("members_with_roles", [])) == len(added.get("members_with_roles", [])),
           "an empty member list changes nothing", r)
    error_of(master("POST", "/team/member_add", {"team_id": tid, "member": {"role": "admin"}}), 400,
             "a member without user_id or user_email", "member")
    error_of(k["bob"]("POST", "/team/member_add", {"team_id": tid, "member": {"user_id": "x"}}),
             403, "a plain member cannot add members")
    error_of(k["viewer"]("POST", "/team/member_add", {"team_id": tid, "member": {"user_id": "x"}}),
             403, "an admin viewer cannot add members")
    error_of(master("POST", "/team/member_add", {"team_id": "nope", "member": {"user_id": "x"}}),
             404, "member_add to an unknown team", "team_id")
    error_of(master("POST", "/team/member_add", {"team_id": tid, "member": "bob"}), 422,
             "a member that is a string", "member")

    # concurrent adds to one team: every one lands (no lost update)
    statuses = []

    def adder(i):
        statuses.append(master("POST", "/team/member_add",
                               {"team_id": "team-fixed", "member": {"user_id": "racer-%d" % i}}).status)
    threads = [threading.Thread(target=adder, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r = master("GET", "/team/info?team_id=team-fixed")
    tap.ok(statuses == [200] * 8 and
           len([u for u in members(r.json["team_info"]) if u.startswith("racer-")]) == 8,
           "8 concurrent member_adds: all 8 members are there", (statuses, r.body[:400]))

    # member_delete: both sides, and the user's keys in the team
    r = master("POST", "/key/generate", {"user_id": "frank", "team_id": tid})
    frank_team_key = Client(srv, r.json.get("key", "-"))
    r = master("POST", "/key/generate", {"user_id": "frank"})
    frank_own_key = Client(srv, r.json.get("key", "-"))
    tap.eq(frank_team_key("GET", "/key/info").status, 200, "frank's team key works")
    r = k["alice"]("POST", "/team/member_delete", {"team_id": tid, "user_id": "frank"})
    left = success(r, "team_member_delete", "a team admin removes a member")
    tap.ok("frank" not in members(left), "the member entry is gone", left)
    r = master("GET", "/user/info?user_id=frank")
    tap.ok(r.status == 200 and tid not in r.json["user_info"]["teams"],
           "the team is gone from the user's teams", r)
    error_of(frank_team_key("GET", "/key/info"), 401, "the user's key in that team stops at once")
    tap.eq(frank_own_key("GET", "/key/info").status, 200, "the user's other keys stay")
    r = master("POST", "/team/member_delete", {"team_id": tid, "user_email": "ERIN@example.com"})
    tap.ok(r.status == 200 and all(x.get("user_email") != "erin@example.com"
                                   for x in r.json.get("members_with_roles", [])),
           "member_delete by user_email", r)
    error_of(master("POST", "/team/member_delete", {"team_id": tid, "user_id": "frank"}), 404,
             "a user who is not a member", "user_id")
    error_of(master("POST", "/team/member_delete", {"team_id": tid, "user_email": "no@x.io"}), 404,
             "an email of no member", "user_email")
    error_of(master("POST", "/team/member_delete", {"team_id": tid}), 400,
             "neither user_id nor user_email", "user_id")
    error_of(master("POST", "/team/member_delete", {"team_id": "nope", "user_id": "bob"}), 404,
             "member_delete from an unknown team", "team_id")
    error_of(k["bob"]("POST", "/team/member_delete", {"team_id": tid, "user_id": "dave"}), 403,
             "a plain member cannot remove members")
    error_of(master("POST", "/team/member_delete", {"user_id": "bob"}), 422,
             "member_delete without team_id", "team_id")


def team_deletion(srv, master, k):
    r = master("POST", "/team/new", {"team_id": "doomed", "members_with_roles": [
        {"user_id": "bob"}, {"user_id": "dave", "role": "admin"}]})
    tap.eq(r.status, 200, "a team to delete")
    r = master("POST", "/team/new", {"team_id": "survivor"})
    team_keys = []
    for body in ({"team_id": "doomed"}, {"team_id": "doomed", "user_id": "bob"}):
        r = master("POST", "/key/generate", body)
        team_keys.append(Client(srv, r.json.get("key", "-")))
    tap.ok(all(c("GET", "/key/info").status == 200 for c in team_keys), "the team's keys work")

    error_of(k["dave"]("POST", "/team/delete", {"team_ids": ["doomed"]}), 403,
             "a team admin cannot delete the team (proxy admins only)")
    error_of(srv.request("POST", "/team/delete", body={"team_ids": ["doomed"]}), 401,
             "team/delete without a credential")
    error_of(master("POST", "/team/delete", {"team_ids": ["survivor", "nope"]}), 404,
             "one unknown team", "team_ids[1]")
    tap.eq(master("GET", "/team/info?team_id=survivor").status, 200,
           "all or nothing: the known team was not deleted")
    error_of(master("POST", "/team/delete", {"team_ids": []}), 422, "an empty list", "team_ids")

    r = master("POST", "/team/delete", {"team_ids": ["doomed", "survivor", "doomed"]})
    gone = success(r, "team_delete", "team/delete")
    tap.ok(gone.get("deleted_teams") == ["doomed", "survivor"] and gone.get("deleted_keys") == 2,
           "deleted_teams and deleted_keys", gone)
    for i, c in enumerate(team_keys):
        error_of(c("GET", "/key/info"), 401, "team key %d is refused on the very next request" % i)
    error_of(master("GET", "/team/info?team_id=doomed"), 404, "the team is gone")
    for uid in ("bob", "dave"):
        r = master("GET", "/user/info?user_id=" + uid)
        tap.ok(r.status == 200 and "doomed" not in r.json["user_info"]["teams"],
               "%s's teams no longer list it" % uid, r)
    entries = audit(master, "doomed")
    tap.eq([e["action"] for e in entries], ["deleted", "created"],
           "the team's audit trail: created, deleted (newest first)")
    tap.ok(entries and entries[0]["table_name"] == "LiteLLM_TeamTable" and
           entries[0]["before_value"]["team_id"] == "doomed" and entries[0]["updated_values"] is None,
           "the deletion keeps the record as it was", entries[:1])
    r = master("GET", "/audit?table_name=LiteLLM_VerificationToken&action=deleted&page_size=100")
    tap.ok(r.status == 200 and
           len([e for e in r.json["audit_logs"] if (e.get("before_value") or {}).get("team_id") == "doomed"]) == 2,
           "each deleted key has its audit entry", r.body[:300])


def user_changes(srv, master, k, alice, tid):
    """/user/info, /user/update, /user/delete."""
    info = success(k["alice"]("GET", "/user/info"), "user_info", "user/info of the caller")
    tap.ok(info.get("user_id") == alice["user_id"] and
           [x.get("key_alias") for x in info.get("keys", [])] == ["alice-key"] and
           [t.get("team_id") for t in info.get("teams", [])] == [tid],
           "the caller's record, keys and teams", info)
    tap.ok(all("key" not in x for x in info.get("keys", [])), "no plaintext key in user/info")
    success(master("GET", "/user/info?user_id=bob"), "user_info", "user/info as master")
    success(k["viewer"]("GET", "/user/info?user_id=bob"), "user_info", "an admin viewer reads others")
    error_of(master("GET", "/user/info"), 400, "the master key without user_id", "user_id")
    error_of(k["alice"]("GET", "/user/info?user_id=bob"), 403, "a user reading another", "user_id")
    error_of(k["alice"]("GET", "/user/info?user_id=nobody"), 404,
             "an unknown user is 404 before 403", "user_id")
    error_of(srv.request("GET", "/user/info"), 401, "user/info without a credential")

    r = master("POST", "/user/update", {"user_id": alice["user_id"], "max_budget": 50,
                                        "user_alias": "Alice"})
    up = success(r, "user_update", "user/update by user_id")
    tap.ok(up.get("max_budget") == 50 and up.get("user_alias") == "Alice" and
           up.get("models") == ["gpt-4"] and up.get("user_email") == "alice@example.com",
           "only the fields sent change", up)
    r = master("POST", "/user/update", {"user_email": "Bob@Example.com", "tpm_limit": 7})
    tap.ok(r.status == 200 and r.json.get("user_id") == "bob" and r.json.get("tpm_limit") == 7 and
           r.json.get("user_email") == "bob@example.com", "user/update by user_email", r)
    r = master("POST", "/user/update", {"user_id": "bob", "metadata": None, "spend": None})
    tap.ok(r.status == 200 and r.json.get("metadata") == {} and r.json.get("spend") == 0,
           "null metadata and spend take their defaults", r)
    error_of(master("POST", "/user/update", {"max_budget": 1}), 400, "neither user_id nor email",
             "user_id")
    error_of(master("POST", "/user/update", {"user_id": "bob", "teams": ["x"]}), 400,
             "teams change through member_add", "teams")
    # an unknown user_id is made, as LiteLLM's user_update upserts
    r = master("POST", "/user/update", {"user_id": "upserted", "max_budget": 3})
    success(r, "user_update", "an unknown user_id is made")
    tap.ok(r.json.get("user_id") == "upserted" and r.json.get("max_budget") == 3,
           "an unknown user_id: the answer is the new user", r)
    success(master("POST", "/user/delete", {"user_ids": ["upserted"]}), "user_delete",
            "the upserted user is deleted again")
    error_of(master("POST", "/user/update", {"user_email": "nobody@example.com"}), 404,
             "an unknown user_email", "user_email")
    error_of(master("POST", "/user/update", {"user_id": "bob", "user_email": "alice@example.com"}),
             400, "an email another user has", "user_email")
    error_of(k["alice"]("POST", "/user/update", {"user_id": alice["user_id"], "max_budget": 1e6}),
             403, "a user cannot update themselves")
    error_of(k["viewer"]("POST", "/user/update", {"user_id": "bob"}), 403,
             "an admin viewer cannot update users")

    # user_role changes what the user's keys may do
    r = master("POST", "/team/new", {"team_id": "roles", "members_with_roles": [
        {"user_id": "dave", "role": "admin"}]})
    tap.eq(k["dave"]("POST", "/team/update", {"team_id": "roles", "team_alias": "r"}).status, 200,
           "dave, a team admin, updates the team")
    master("POST", "/user/update", {"user_id": "dave", "user_role": "internal_user_viewer"})
    error_of(k["dave"]("POST", "/team/update", {"team_id": "roles", "max_budget": 2}), 403,
             "as internal_user_viewer his key no longer writes")
    tap.eq(k["dave"]("GET", "/team/info?team_id=roles").status, 200, "but still reads")
    master("POST", "/user/update", {"user_id": "bob", "user_role": "proxy_admin"})
    tap.eq(k["bob"]("POST", "/team/new", {"team_alias": "bob-admin"}).status, 200,
           "promoted to proxy_admin, bob's key creates teams")
    master("POST", "/user/update", {"user_id": "bob", "user_role": "internal_user"})

    # /user/delete
    r = master("POST", "/user/new", {"user_id": "leaver", "teams": ["roles", "roles"]})
    tap.ok(r.status == 200 and r.json.get("teams") == ["roles"], "user/new joins its teams once", r)
    leaver = Client(srv, r.json.get("key", "-"))
    r = master("GET", "/team/info?team_id=roles")
    tap.eq(members(r.json["team_info"]).get("leaver", {}).get("role"), "user",
           "user/new's teams list the user as a member")
    r = master("POST", "/key/generate", {"user_id": "leaver", "team_id": "roles"})
    leaver_team = Client(srv, r.json.get("key", "-"))
    tap.eq(leaver("GET", "/key/info").status, 200, "the leaver's key works")

    error_of(k["alice"]("POST", "/user/delete", {"user_ids": ["leaver"]}), 403,
             "an internal_user cannot delete users")
    error_of(master("POST", "/user/delete", {"user_ids": ["leaver", "nobody"]}), 404,
             "one unknown user", "user_ids[1]")
    tap.eq(leaver("GET", "/key/info").status, 200, "all or nothing: nothing was deleted")
    error_of(master("POST", "/user/delete", {"user_ids": []}), 422, "an empty list", "user_ids")
    gone = success(master("POST", "/user/delete", {"user_ids": ["leaver"]}), "user_delete",
                   "user/delete")
    tap.ok(gone.get("deleted_users") == ["leaver"] and gone.get("deleted_keys") == 2,
           "deleted_users and deleted_keys", gone)
    error_of(leaver("GET", "/key/info"), 401, "the user's key stops at once")
    error_of(leaver_team("GET", "/key/info"), 401, "and their team key")
    error_of(master("GET", "/user/info?user_id=leaver"), 404, "the user is gone", "user_id")
    r = master("GET", "/team/info?team_id=roles")
    tap.ok("leaver" not in members(r.json["team_info"]), "the team no longer lists them", r)
    tap.eq([e["action"] for e in audit(master, "leaver")], ["deleted", "created"],
           "the user's audit trail: created, deleted")


def audit_trail(srv, master, tid, alice):
    r = master("POST", "/team/update", {"team_id": tid, "metadata": {"audited": True}},
               headers={"litellm-changed-by": "ops-for-alice"})
    tap.eq(r.status, 200, "an admin updates the team on someone's behalf")
    entries = audit(master, tid, table_name="LiteLLM_TeamTable")
    actions = [e["action"] for e in entries]
    tap.ok(actions and actions[-1] == "created" and actions.count("updated") >= 4,
           "the team's changes are audited, oldest created", actions)
    tap.ok(any(e["changed_by"] == "ops-for-alice" for e in entries),
           "an admin's litellm-changed-by is recorded", [e["changed_by"] for e in entries])
    tap.ok(not any(e["changed_by"] == "alice-on-behalf" for e in entries),
           "a team admin's litellm-changed-by is not: only admins act for others")
    tap.ok(any(e["changed_by"] == alice["user_id"] and e["changed_by_api_key"] == alice["token"]
               for e in entries), "a team admin's change names their user and key hash",
           [(e["changed_by"], e["changed_by_api_key"]) for e in entries])
    r = master("GET", "/audit?object_id=%s&table_name=LiteLLM_UserTable" % alice["user_id"])
    tap.ok(r.status == 200 and [e["action"] for e in r.json["audit_logs"]][-1] == "created",
           "the user's creation is audited", r.body[:300])
    raw = b"".join(open(p, "rb").read() for p in glob.glob(srv.data_dir + "/*.db"))
    raw += b"".join(open(p, "rb").read() for p in glob.glob(srv.data_dir + "/log.*"))
    tap.ok(alice["key"].encode() not in raw, "user/new's plaintext key is in no store or log file")
    tap.ok(alice["key"] not in srv.read_log(), "nor in the server log")


def main():
    with Server() as srv:
        master = Client(srv, srv.master_key)
        alice, k = users_and_roles(srv, master)
        tid, _, _ = teams(srv, master, alice, k)
        team_lists(srv, master, tid, k)
        member_changes(srv, master, tid, k)
        team_deletion(srv, master, k)
        user_changes(srv, master, k, alice, tid)
        audit_trail(srv, master, tid, alice)


tap.run(main)
