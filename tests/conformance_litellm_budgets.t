#!/usr/bin/python3
"""conformance_litellm_budgets.t: LiteLLM's budgets (/budget/*) and end users (/customer/*)
through lighttpd, and the limits they hold by /key/verify, /key/usage and the FastCGI
authorizer (scripts/lighttpd-gateway.conf.in), as the README's sections "Budgets and end
users" and "Enforcement: verify, usage and limits" describe them.  Each test point names the
LiteLLM function it follows (litellm/proxy/management_endpoints/budget_management_endpoints.py,
customer_endpoints.py, team_endpoints.py, litellm/proxy/_types.py,
litellm/proxy/auth/auth_checks.py, auth_utils.py, litellm/proxy/common_utils/reset_budget_job.py)
and a team membership's budget_id (LiteLLM_TeamMembership.budget_id)."""
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from upstream import gateway  # noqa: E402
import attack  # noqa: E402
import contract  # noqa: E402
from attack import master, user  # noqa: E402

SPEC = contract.load_spec()
OPS = contract.operations(SPEC)

PRICE = 0.001


def uniq(p):
    return "%s-%s" % (p, uuid.uuid4().hex[:8])


def J(r):
    return r.json if isinstance(r.json, (dict, list)) else {}


def verify(m, key, **fields):
    body = {"key": key}
    body.update(fields)
    r = m("POST", "/key/verify", body)
    return J(r) if r.status == 200 else {"status": r.status, "body": r.body[:400]}


def through(srv, key, end_user=None, header="x-litellm-end-user-id"):
    h = {"Authorization": "Bearer " + key, "x-model": "gpt-4", "x-request-id": uuid.uuid4().hex}
    if end_user is not None:
        h[header] = end_user
    return srv.request("POST", "/v1/chat/completions", headers=h,
                       body={"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]})


def budget_endpoints(m):
    bid = uniq("tier")
    r = m("POST", "/budget/new", {"budget_id": bid, "max_budget": 5, "rpm_limit": 10,
                                  "budget_duration": "30d"})
    b = J(r)
    tap.ok(r.status == 200 and b.get("budget_id") == bid and b.get("max_budget") == 5 and
           b.get("rpm_limit") == 10 and b.get("budget_reset_at") and "created_by" in b,
           "new_budget: /budget/new answers the LiteLLM_BudgetTable row, budget_reset_at set "
           "from budget_duration (get_budget_reset_time)", repr(r))
    r = m("POST", "/budget/new", {"budget_id": bid})
    tap.ok(r.status == 400 and "already exists" in r.body.decode("utf-8", "replace"),
           "new_budget: a taken budget_id is 400 (UniqueViolationError)", repr(r))
    r = m("POST", "/budget/update", {"budget_id": bid, "tpm_limit": 1000})
    tap.ok(r.status == 200 and J(r).get("tpm_limit") == 1000 and J(r).get("max_budget") == 5,
           "update_budget: /budget/update changes the fields sent only (exclude_unset)",
           repr(r))
    r = m("POST", "/budget/update", {"max_budget": 1})
    tap.ok(r.status == 400, "update_budget: budget_id is required (400)", repr(r))
    r = m("POST", "/budget/info", {"budgets": [bid, "no-such-budget"]})
    tap.ok(r.status == 200 and isinstance(r.json, list) and len(r.json) == 1 and
           r.json[0].get("budget_id") == bid,
           "info_budget: POST /budget/info {budgets: [...]} answers the rows found (find_many)",
           repr(r))
    r = m("POST", "/budget/info", {"budgets": []})
    tap.ok(r.status == 400, "info_budget: an empty budgets list is 400", repr(r))
    r = m("GET", "/budget/list")
    tap.ok(r.status == 200 and isinstance(r.json, list) and
           any(x.get("budget_id") == bid for x in r.json),
           "list_budget: GET /budget/list answers every budget", repr(r))
    r = m("GET", "/budget/settings?budget_id=" + bid)
    s = {e.get("field_name"): e for e in (r.json if isinstance(r.json, list) else [])}
    tap.ok(r.status == 200 and s.get("max_budget", {}).get("field_value") == 5 and
           s.get("max_budget", {}).get("field_type") == "Float" and
           s.get("rpm_limit", {}).get("stored_in_db") is True,
           "budget_settings: GET /budget/settings answers ConfigList entries with the values",
           repr(r))
    gone = uniq("gone")
    m("POST", "/budget/new", {"budget_id": gone})
    r = m("POST", "/budget/delete", {"id": gone})
    tap.ok(r.status == 200 and J(r).get("budget_id") == gone and
           m("POST", "/budget/info", {"budgets": [gone]}).json == [],
           "delete_budget: /budget/delete {id} answers the deleted row", repr(r))
    return bid


def customer_endpoints(m):
    cid = uniq("cust")
    r = m("POST", "/customer/new", {"user_id": cid, "alias": "Acme", "max_budget": 2,
                                    "allowed_model_region": "eu"})
    c = J(r)
    t = c.get("litellm_budget_table") or {}
    tap.ok(r.status == 200 and c.get("user_id") == cid and c.get("alias") == "Acme" and
           c.get("blocked") is False and c.get("spend") == 0 and
           c.get("allowed_model_region") == "eu" and c.get("budget_id") and
           t.get("max_budget") == 2 and t.get("budget_id") == c.get("budget_id"),
           "new_end_user: max_budget makes the customer a budget of its own "
           "(new_budget_request), answered as litellm_budget_table", repr(r))
    r = m("POST", "/customer/new", {"user_id": cid})
    tap.ok(r.status == 400 and "Customer already exists" in r.body.decode("utf-8", "replace"),
           "new_end_user: a taken user_id is 400", repr(r))
    r = m("GET", "/customer/info?end_user_id=" + cid)
    tap.ok(r.status == 200 and J(r).get("user_id") == cid and
           (J(r).get("litellm_budget_table") or {}).get("max_budget") == 2 and
           "default_model" not in J(r),
           "end_user_info: GET /customer/info?end_user_id= answers the row without nulls",
           repr(r))
    r = m("GET", "/customer/info?end_user_id=nobody-" + cid)
    tap.ok(r.status == 404 and "does not exist in db" in r.body.decode("utf-8", "replace"),
           "end_user_info: an unknown end user is 404", repr(r))
    r = m("POST", "/customer/update", {"user_id": cid, "alias": "Acme Ltd", "max_budget": 3,
                                       "default_model": None})
    tap.ok(r.status == 200 and J(r).get("alias") == "Acme Ltd" and
           (J(r).get("litellm_budget_table") or {}).get("max_budget") == 3 and
           J(r).get("budget_id") == c.get("budget_id"),
           "update_end_user: budget fields change the customer's own budget", repr(r))
    r = m("POST", "/customer/update", {"user_id": "nobody-" + cid, "alias": "x"})
    tap.ok(r.status == 404, "update_end_user: an unknown end user is 404", repr(r))
    r = m("POST", "/customer/block", {"user_ids": [cid]})
    tap.ok(r.status == 200 and [u.get("blocked") for u in J(r).get("blocked_users", [])] ==
           [True], "block_user: /customer/block answers {blocked_users: [rows]}", repr(r))
    r = m("POST", "/customer/unblock", {"user_ids": [cid]})
    tap.ok(r.status == 200 and [u.get("blocked") for u in J(r).get("blocked_users", [])] ==
           [False], "unblock_user: /customer/unblock lets the end user through again", repr(r))
    r = m("GET", "/customer/list")
    tap.ok(r.status == 200 and isinstance(r.json, list) and
           any(u.get("user_id") == cid and "litellm_budget_table" in u for u in r.json),
           "list_end_user: GET /customer/list answers every row with its budget", repr(r))
    r = m("POST", "/customer/delete", {"user_ids": [cid, "nobody-" + cid]})
    tap.ok(r.status == 404 and "do not exist in db" in r.body.decode("utf-8", "replace") and
           m("GET", "/customer/info?end_user_id=" + cid).status == 200,
           "delete_end_user: an unknown id is 404 and nothing is deleted", repr(r))
    r = m("POST", "/customer/delete", {"user_ids": [cid]})
    tap.ok(r.status == 200 and J(r).get("deleted_customers") == 1 and
           J(r).get("message") == "Successfully deleted customers with ids: ['%s']" % cid,
           "delete_end_user: /customer/delete answers {deleted_customers, message}", repr(r))


def role_rules(srv, m, bid):
    u = user(srv, uniq("plain"))
    r = u("POST", "/budget/new", {"budget_id": uniq("mine"), "max_budget": 1000})
    tap.ok(r.status in (401, 403), "role rules: an internal_user cannot create budgets "
           "(proxy admin routes)", repr(r))
    r = u("POST", "/customer/new", {"user_id": uniq("c")})
    tap.ok(r.status in (401, 403), "role rules: an internal_user cannot create customers",
           repr(r))
    r = u("GET", "/customer/list")
    tap.ok(r.status in (401, 403), "list_end_user: admin-only for an internal_user", repr(r))
    r = u("GET", "/budget/list")
    tap.ok(r.status in (401, 403), "list_budget: _user_has_admin_view refuses an internal_user",
           repr(r))
    v = user(srv, uniq("viewer"), role="proxy_admin_viewer")
    r = v("GET", "/budget/list")
    tap.ok(r.status == 200, "list_budget: a proxy_admin_viewer reads (_user_has_admin_view)",
           repr(r))
    r = v("POST", "/budget/delete", {"id": bid})
    tap.ok(r.status in (401, 403), "delete_budget: PROXY_ADMIN only", repr(r))


def key_budget_rules(srv, m):
    bid = uniq("kb")
    m("POST", "/budget/new", {"budget_id": bid, "max_budget": 0.05})
    k = m("POST", "/key/generate", {"budget_id": bid}).json["key"]
    a = verify(m, k, dry_run=True)
    tap.ok(a.get("code") == "VALID" and a.get("max_budget") == 0.05 and
           a.get("budget_id") == bid, "LiteLLM_VerificationTokenView: a key with budget_id "
           "and no max_budget of its own has the budget's max_budget", a)
    k2 = m("POST", "/key/generate", {"budget_id": bid}).json["key"]
    m("POST", "/key/usage", {"key": k, "cost": 0.05})
    a = verify(m, k, dry_run=True)
    tap.ok(a.get("code") == "BUDGET_EXCEEDED" and a.get("limit") == "max_budget",
           "_virtual_key_max_budget_check: the key over its budget's max_budget is "
           "BUDGET_EXCEEDED by /key/verify", a)
    r = through(srv, k)
    tap.ok(r.status == 400 and "Budget has been exceeded! Current cost: " in
           r.body.decode("utf-8", "replace"),
           "_virtual_key_max_budget_check: the authorizer refuses it as BudgetExceededError "
           "(400)", repr(r))
    a = verify(m, k2, dry_run=True)
    tap.ok(a.get("code") == "VALID" and a.get("spend") == 0,
           "LiteLLM_VerificationTokenView: the spend held to a budget is each key's own "
           "(another key of the budget still passes)", a)
    own = m("POST", "/key/generate", {"budget_id": bid, "max_budget": 10}).json["key"]
    a = verify(m, own, dry_run=True)
    tap.ok(a.get("max_budget") == 10, "LiteLLM_VerificationTokenView: a key's own "
           "max_budget wins over its budget's", a)

    rid = uniq("rpm")
    m("POST", "/budget/new", {"budget_id": rid, "rpm_limit": 2})
    k = m("POST", "/key/generate", {"budget_id": rid}).json["key"]
    codes = [verify(m, k).get("code") for _ in range(3)]
    tap.ok(codes[:2] == ["VALID", "VALID"] and codes[2] == "RATE_LIMITED",
           "LiteLLM_VerificationTokenView: the budget's rpm_limit 2 holds the key "
           "(the third request in the minute is RATE_LIMITED)", codes)
    r = through(srv, k)
    tap.ok(r.status == 429 and "RATE_LIMITED" in r.body.decode("utf-8", "replace"),
           "the budget's rpm_limit holds at the authorizer too (429)", repr(r))


def org_budget_rules(srv, m):
    """An organization's budget_id: new_organization keeps its limits in the budget table."""
    bid = uniq("ob")
    m("POST", "/budget/new", {"budget_id": bid, "max_budget": 0.05, "rpm_limit": 100})
    oid = uniq("org")
    r = m("POST", "/organization/new", {"organization_id": oid, "organization_alias": oid,
                                        "budget_id": bid})
    tap.ok(r.status == 200 and J(r).get("budget_id") == bid, "new_organization: budget_id kept",
           repr(r))
    k = m("POST", "/key/generate", {"organization_id": oid}).json["key"]
    m("POST", "/key/usage", {"key": k, "cost": 0.06})
    a = verify(m, k, dry_run=True)
    tap.ok(a.get("code") == "BUDGET_EXCEEDED" and a.get("limit") == "organization_max_budget",
           "_organization_max_budget_check: the budget's max_budget holds the organization's "
           "keys", a)
    r = through(srv, k)
    tap.eq(r.status, 400, "... the authorizer refuses them too")


def member_key(srv, m, team_id, **add):
    """A new user made a member of team_id by /team/member_add with add's fields, and a key of
    theirs in the team; (user_id, key, the member_add answer)."""
    uid = uniq("member")
    attack.user(srv, uid)
    body = {"team_id": team_id, "member": {"user_id": uid, "role": "user"}}
    body.update(add)
    r = m("POST", "/team/member_add", body)
    k = m("POST", "/key/generate", {"team_id": team_id, "user_id": uid}).json["key"]
    return uid, k, r


def member_budget_rules(srv, m):
    """A team membership's budget_id: LiteLLM_TeamMembership.budget_id -> LiteLLM_BudgetTable."""
    tid = uniq("team")
    attack.team(srv, tid)
    bid = uniq("mb")
    m("POST", "/budget/new", {"budget_id": bid, "max_budget": 0.05})
    uid, k, r = member_key(srv, m, tid, budget_id=bid)
    entry = [e for e in J(r).get("members_with_roles", []) if e.get("user_id") == uid]
    tap.ok(r.status == 200 and entry and entry[0].get("budget_id") == bid,
           "team_member_add: the membership keeps the budget_id it is given "
           "(_add_team_members_to_team)", repr(r))
    r = m("POST", "/team/member_add", {"team_id": tid, "member": {"user_id": uniq("u")},
                                       "budget_id": "no-such-budget"})
    tap.ok(r.status == 400 and (J(r).get("error") or {}).get("param") == "budget_id",
           "team_member_add: a budget_id that names no budget is 400 naming it", repr(r))
    tap.eq(verify(m, k, dry_run=True).get("code"), "VALID", "... admitted while unspent")
    m("POST", "/key/usage", {"key": k, "cost": 0.06})
    a = verify(m, k, dry_run=True)
    tap.ok(a.get("code") == "BUDGET_EXCEEDED" and a.get("limit") == "team_member_max_budget" and
           a.get("message") == "Budget has been exceeded! User=%s in Team=%s Current cost: "
           "0.06, Max budget: 0.05" % (uid, tid),
           "_check_team_member_budget: the membership's budget's max_budget holds the member's "
           "keys in the team, in LiteLLM's words", a)
    r = through(srv, k)
    tap.ok(r.status == 400 and "budget_exceeded" in r.body.decode("utf-8", "replace"),
           "... the authorizer refuses them too (400 budget_exceeded)", repr(r))
    r = m("GET", "/user/info?user_id=" + uid)
    tm = J(r).get("team_memberships") or [{}]
    bt = tm[0].get("litellm_budget_table") or {}
    tap.ok(r.status == 200 and tm[0].get("budget_id") == bid and tm[0].get("spend") == 0.06 and
           bt.get("budget_id") == bid and bt.get("max_budget") == 0.05,
           "user_info: team_memberships show the budget_id and its LiteLLM_BudgetTable row",
           repr(r))
    r = m("GET", "/team/info?team_id=" + tid)
    tm = [x for x in J(r).get("team_memberships") or [] if x.get("user_id") == uid]
    tap.ok(r.status == 200 and tm and tm[0].get("budget_id") == bid and
           (tm[0].get("litellm_budget_table") or {}).get("max_budget") == 0.05,
           "team_info: team_memberships show each member's budget (TeamInfoResponseObject)",
           repr(r))
    answers = [(op, m(method, path, body)) for op, method, path, body in (
        ("key_verify", "POST", "/key/verify", {"key": k, "dry_run": True}),
        ("team_info", "GET", "/team/info?team_id=" + tid, None),
        ("user_info", "GET", "/user/info?user_id=" + uid, None))]
    problems = [(op, contract.check_response(SPEC, OPS[op], r)) for op, r in answers]
    tap.ok(all(not p for _, p in problems), "the answers that show a membership's budget are "
           "as the spec documents them", problems)
    r = m("POST", "/team/member_update", {"team_id": tid, "user_id": uid,
                                          "max_budget_in_team": 1})
    a = verify(m, k, dry_run=True)
    tap.ok(r.status == 200 and a.get("code") == "VALID",
           "team_member_update: the member's own max_budget_in_team wins over its budget's",
           a)

    rid = uniq("mrpm")
    m("POST", "/budget/new", {"budget_id": rid, "rpm_limit": 2})
    wide_id = uniq("mwide")
    m("POST", "/budget/new", {"budget_id": wide_id, "max_budget": 100})
    uid, k, _ = member_key(srv, m, tid)
    r = m("POST", "/team/member_update", {"team_id": tid, "user_id": uid, "budget_id": rid})
    tap.ok(r.status == 200, "team_member_update: a member is given a budget_id", repr(r))
    codes = [verify(m, k).get("code") for _ in range(2)]
    r = through(srv, k)
    a = verify(m, k, dry_run=True)
    tap.ok(codes == ["VALID", "VALID"] and r.status == 429 and
           a.get("limit") == "team_member_rpm_limit",
           "safe_get_team_member_rpm_limit: the membership's budget's rpm_limit holds its "
           "keys, in /key/verify and at the authorizer (429)", (codes, repr(r), a))
    other = m("POST", "/key/generate", {"user_id": uid}).json["key"]
    tap.eq(verify(m, other, dry_run=True).get("code"), "VALID",
           "... the member's personal key is not bound by it")

    uid, k, _ = member_key(srv, m, tid)
    r = m("POST", "/team/member_update", {"team_id": tid, "user_id": uid, "rpm_limit": 1,
                                          "tpm_limit": 1000})
    codes = [verify(m, k).get("code") for _ in range(2)]
    tm = (J(m("GET", "/user/info?user_id=" + uid)).get("team_memberships") or [{}])[0]
    tap.ok(r.status == 200 and J(r).get("rpm_limit") == 1 and J(r).get("tpm_limit") == 1000 and
           codes == ["VALID", "RATE_LIMITED"] and
           tm.get("litellm_budget_table") == {"rpm_limit": 1, "tpm_limit": 1000},
           "team_member_update: rpm_limit and tpm_limit of the member's own hold its keys "
           "(_upsert_budget_and_membership)", (repr(r), codes, tm))
    admin = uniq("tadmin")
    attack.user(srv, admin)
    m("POST", "/team/member_add", {"team_id": tid, "member": {"user_id": admin, "role": "admin"}})
    ak = attack.Caller(srv, m("POST", "/key/generate", {"user_id": admin}).json["key"])
    r = ak("POST", "/team/member_update", {"team_id": tid, "user_id": admin, "rpm_limit": 1000})
    tap.ok(r.status == 403 and (J(r).get("error") or {}).get("param") == "rpm_limit",
           "... a team admin does not set its own membership's limits", repr(r))
    r = ak("POST", "/team/member_update", {"team_id": tid, "user_id": uid, "budget_id": wide_id})
    tap.eq(r.status, 200, "... and sets another member's budget_id")

    wide = uniq("m64")
    m("POST", "/budget/new", {"budget_id": wide, "rpm_limit": 10})
    uid, k, _ = member_key(srv, m, tid, budget_id=wide)
    keys = [k] + [m("POST", "/key/generate", {"team_id": tid, "user_id": uid}).json["key"]
                  for _ in range(3)]
    codes = attack.together([lambda i=i: verify(m, keys[i % 4]).get("code")
                             for i in range(64)])
    tap.ok(codes.count("VALID") == 10 and codes.count("RATE_LIMITED") == 54,
           "team_member_rpm_limit holds across the member's keys at 64-way concurrency "
           "(10 of 64 admitted)", sorted(set(codes)))

    tpm = uniq("mtpm")
    m("POST", "/budget/new", {"budget_id": tpm, "tpm_limit": 100})
    uid, k, _ = member_key(srv, m, tid, budget_id=tpm)
    m("POST", "/key/usage", {"key": k, "total_tokens": 150, "cost": 0})
    a = verify(m, k, dry_run=True)
    tap.ok(a.get("code") == "RATE_LIMITED" and a.get("limit") == "team_member_tpm_limit",
           "safe_get_team_member_tpm_limit: the tokens reported count against the "
           "membership's budget's tpm_limit", a)

    dur = uniq("mdur")
    m("POST", "/budget/new", {"budget_id": dur, "max_budget": 0.05, "budget_duration": "2s"})
    uid, k, _ = member_key(srv, m, tid, budget_id=dur)
    m("POST", "/key/usage", {"key": k, "cost": 0.06})
    first = verify(m, k, dry_run=True).get("code")
    time.sleep(3)
    a = verify(m, k, dry_run=True)
    spend = (J(m("GET", "/user/info?user_id=" + uid)).get("team_memberships") or [{}])[0]
    tap.ok(first == "BUDGET_EXCEEDED" and a.get("code") == "VALID" and
           spend.get("spend") == 0,
           "reset_budget_for_litellm_team_members: the budget's budget_duration resets the "
           "membership's spend", (first, a, spend))


def end_user_rules(srv, m):
    k = m("POST", "/key/generate", {}).json["key"]
    blocked = uniq("eu-blocked")
    m("POST", "/customer/block", {"user_ids": [blocked]})
    a = verify(m, k, end_user=blocked, dry_run=True)
    tap.ok(a.get("code") == "END_USER_BLOCKED" and a.get("valid") is False,
           "blocked end user (_ENTERPRISE_BlockedUserList): /key/verify refuses it", a)
    r = through(srv, k, blocked)
    tap.ok(r.status == 400 and "END_USER_BLOCKED" in r.body.decode("utf-8", "replace"),
           "blocked end user: the authorizer refuses x-litellm-end-user-id (400)", repr(r))
    r = through(srv, k, blocked, header="x-litellm-customer-id")
    tap.ok(r.status == 400, "STANDARD_CUSTOMER_ID_HEADERS: x-litellm-customer-id is read too",
           repr(r))
    r = through(srv, k)
    tap.ok(r.status == 200, "the same key without the end user passes", repr(r))

    poor = uniq("eu-poor")
    m("POST", "/customer/new", {"user_id": poor, "max_budget": 0.02})
    m("POST", "/key/usage", {"key": k, "end_user": poor, "cost": 0.02})
    a = verify(m, k, end_user=poor, dry_run=True)
    tap.ok(a.get("code") == "VALID",
           "_check_end_user_budget: spend equal to max_budget still passes (spend > budget "
           "refuses)", a)
    m("POST", "/key/usage", {"key": k, "end_user": poor, "cost": 0.01})
    a = verify(m, k, end_user=poor, dry_run=True)
    tap.ok(a.get("code") == "BUDGET_EXCEEDED" and a.get("limit") == "end_user_max_budget",
           "_check_end_user_budget: an end user over its budget is BUDGET_EXCEEDED", a)
    r = through(srv, k, poor)
    tap.ok(r.status == 400 and ("ExceededBudget: End User=%s over budget. Spend=" % poor) in
           r.body.decode("utf-8", "replace"),
           "_check_end_user_budget: the authorizer refuses it in its words (400)", repr(r))

    # the budget's budget_duration resets the end user's spend (LiteLLM's budget reset job,
    # reset_budget_for_litellm_end_users); keywarden settles it when the end user is next used
    short = uniq("eu-reset")
    m("POST", "/customer/new", {"user_id": short, "max_budget": 0.02, "budget_duration": "2s"})
    m("POST", "/key/usage", {"key": k, "end_user": short, "cost": 0.01})
    m("POST", "/key/usage", {"key": k, "end_user": short, "cost": 0.02})
    a = verify(m, k, end_user=short, dry_run=True)
    tap.ok(a.get("code") == "BUDGET_EXCEEDED", "budget_duration: over budget in its period", a)
    time.sleep(2.5)
    a = verify(m, k, end_user=short, dry_run=True)
    tap.ok(a.get("code") == "VALID", "budget_duration: the next period starts from 0 "
           "(reset_budget_for_litellm_end_users)", a)
    m("POST", "/key/usage", {"key": k, "end_user": short, "cost": 0.005})
    info = m("GET", "/customer/info?end_user_id=" + short).json or {}
    tap.ok(abs((info.get("spend") or 0) - 0.005) < 1e-9, "budget_duration: a report after the "
           "reset counts from 0", info)

    fresh = uniq("eu-new")
    a = verify(m, k, end_user=fresh, dry_run=True)
    tap.ok(a.get("code") == "VALID" and
           m("GET", "/customer/info?end_user_id=" + fresh).status == 404,
           "get_end_user_object: an unknown end user is no check and is not made by one", a)
    r = m("POST", "/key/usage", {"key": k, "end_user": fresh, "cost": 0.25})
    info = m("GET", "/customer/info?end_user_id=" + fresh)
    tap.ok(r.status == 200 and J(r).get("end_user_spend") == 0.25 and info.status == 200 and
           J(info).get("spend") == 0.25 and J(info).get("blocked") is False,
           "update_end_user_spend: /key/usage records the end user's spend, making it (upsert)",
           repr(r) + repr(info))

    limited = uniq("eu-rpm")
    m("POST", "/customer/new", {"user_id": limited, "rpm_limit": 1})
    codes = [verify(m, k, end_user=limited).get("code") for _ in range(2)]
    tap.ok(codes == ["VALID", "RATE_LIMITED"], "end_user_rpm_limit: the end user's budget "
           "rpm_limit holds across keys", codes)


def main():
    with gateway(PRICE) as (srv, up):
        m = master(srv)
        bid = budget_endpoints(m)
        customer_endpoints(m)
        role_rules(srv, m, bid)
        key_budget_rules(srv, m)
        org_budget_rules(srv, m)
        member_budget_rules(srv, m)
        end_user_rules(srv, m)


tap.run(main)
