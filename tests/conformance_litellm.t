#!/usr/bin/python3
"""conformance_litellm.t: where a LiteLLM client notices the difference, keywarden answers as
LiteLLM's proxy does. Points are numbered by the items of the issue "LiteLLM-exact behaviour
where clients notice it"; each names the LiteLLM function it follows (BerriAI/litellm,
litellm/proxy/...). Through the real lighttpd:
 2. where LiteLLM's handler, not its request model, refuses a value, the status is its 400;
    422 stays for what pydantic refuses (a wrong type, a missing required field)
    (management_endpoints/key_management_endpoints.py generate_key_fn, update_key_fn,
    _validate_max_budget, _common_key_generation_helper, _enforce_unique_key_alias,
    validate_team_id_used_in_service_account_request, get_new_token;
    litellm_core_utils/duration_parser.py duration_in_seconds; organization_endpoints.py
    new_organization; the team update's budget check), one Budget rule for every face's
    amount of money;
 1. a master key is anything starting with sk-, sk-1234 included, as LiteLLM's docs use it; a
    weak one is warned of once at start, the key itself never logged
    (auth/master_key_policy.py insecure_master_key_warning);
 10. a key whose user_id names no user record manages nothing: 401, LiteLLM's words
    (auth/route_checks.py RouteChecks.non_proxy_admin_allowed_routes_check,
    _raise_admin_only_route_exception; auth/auth_exception_handler.py);
 11. a spent budget is "Budget has been exceeded! Current cost: <spend>, Max budget: <max>", in
    /key/verify's message and in the authorizer's 400 budget_exceeded answer
    (litellm/exceptions.py BudgetExceededError; auth/auth_checks.py
    _virtual_key_max_budget_check, _team_max_budget_check;
    auth/auth_exception_handler.py UserAPIKeyAuthExceptionHandler)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
import tap  # noqa: E402
import attack  # noqa: E402
from kwserver import Server  # noqa: E402
from upstream import gateway  # noqa: E402

ADMIN_ONLY = ("Authentication Error, Only proxy admin can be used to generate, delete, update "
              "info for new keys/users/teams. Route=%s. Your role=unknown. Your user_id=*******")


def master_key_sk_1234():
    """1: KEYWARDEN_MASTER_KEY=sk-1234 serves, and is warned of once without the key."""
    try:
        with Server(workers=2, master_key="sk-1234") as srv:
            r = srv.request("POST", "/key/generate", {"key_alias": "docs-example"},
                            headers={"Authorization": "Bearer sk-1234"})
            tap.ok(r.status == 200 and r.json["key"].startswith("sk-"),
                   "1: sk-1234 is a master key, as LiteLLM's docs use it (/key/generate)", repr(r))
            r = srv.request("GET", "/key/info", headers={"Authorization": "Bearer sk-123"})
            tap.ok(r.status == 401, "1: a prefix of it is not", repr(r))
            log = srv.read_log()
        warnings = [line for line in log.splitlines() if "the master key (from" in line]
        tap.ok(len(warnings) == 1 and "guessable" in warnings[0],
               "1: the weak master key is warned of once at start "
               "(master_key_policy.insecure_master_key_warning)", "\n".join(warnings) or log[-2000:])
        tap.ok("sk-1234" not in log, "1: the log never holds the key", log[-2000:])
    except Exception as e:  # the server refused to start
        tap.ok(False, "1: a server starts with KEYWARDEN_MASTER_KEY=sk-1234", repr(e))
    with Server(workers=1, master_key="sk-Qw3rTy8uIoP9aSdF2gHj4kLz") as srv:
        srv.request("GET", "/health")
        log = srv.read_log()
    tap.ok("the master key (from" not in log, "1: a strong master key is not warned of",
           log[-2000:])


def user_without_record():
    """10: a key whose user_id names no user record."""
    with Server(workers=2) as srv:
        m = attack.master(srv)
        k = m("POST", "/key/generate", {"key_alias": "ghost-key"}).json
        r = m("POST", "/key/update", {"key": k["key"], "user_id": "ghost-user"})
        tap.ok(r.status == 200 and r.json.get("user_id") == "ghost-user",
               "10: setup: an admin points a key at a user id with no record", repr(r))
        ghost = attack.Caller(srv, k["key"], "ghost-user")
        for body in ({}, {"user_id": "ghost-user"}):
            r = ghost("POST", "/key/generate", body)
            tap.ok(r.status == 401 and r.json["error"] == {
                "message": ADMIN_ONLY % "/key/generate", "type": "auth_error", "param": None,
                "code": "401"},
                "10: it may not create keys for that user id %s: 401 as LiteLLM's "
                "RouteChecks.non_proxy_admin_allowed_routes_check answers" % body, repr(r))
        r = m("GET", "/user/info?user_id=ghost-user")
        tap.ok(r.status == 404, "10: nor does trying make the user a record", repr(r))
        r = ghost("POST", "/key/update", {"key": k["key"], "key_alias": "renamed"})
        tap.ok(r.status == 401 and r.json["error"]["message"] == ADMIN_ONLY % "/key/update",
               "10: nor change keys (_raise_admin_only_route_exception)", repr(r))
        r = ghost("POST", "/team/new", {"team_alias": "mine"})
        tap.ok(r.status in (401, 403), "10: nor make teams", repr(r))
        r = ghost("GET", "/key/info")
        tap.ok(r.status == 200, "10: it still reads itself (/key/info is an info route)", repr(r))
        m("POST", "/user/new", {"user_id": "ghost-user", "user_role": "internal_user"})
        r = ghost("POST", "/key/generate", {})
        tap.ok(r.status == 200, "10: once the user has a record, it acts with its role", repr(r))


def budget_message(srv, m):
    """11 via /key/verify: the verdict's message is LiteLLM's, the code stays BUDGET_EXCEEDED."""
    k = m("POST", "/key/generate", {"max_budget": 1}).json
    m("POST", "/key/usage", {"key": k["key"], "model": "gpt-4", "cost": 1.5})
    r = m("POST", "/key/verify", {"key": k["key"], "model": "gpt-4", "dry_run": True})
    tap.ok(r.status == 200 and r.json["code"] == "BUDGET_EXCEEDED" and
           r.json["message"] == "Budget has been exceeded! Current cost: 1.5, Max budget: 1.0",
           "11: /key/verify: a spent key budget in BudgetExceededError's words "
           "(auth_checks._virtual_key_max_budget_check), code BUDGET_EXCEEDED", repr(r))
    t = attack.team(srv, "budget-team", max_budget=2)
    tk = m("POST", "/key/generate", {"team_id": t["team_id"]}).json
    m("POST", "/key/usage", {"key": tk["key"], "model": "gpt-4", "cost": 2.25})
    r = m("POST", "/key/verify", {"key": tk["key"], "model": "gpt-4", "dry_run": True})
    tap.ok(r.status == 200 and r.json["code"] == "BUDGET_EXCEEDED" and
           r.json["message"] == "Budget has been exceeded! Team=budget-team Current cost: 2.25, "
           "Max budget: 2.0",
           "11: /key/verify: a spent team budget names the team "
           "(auth_checks._team_max_budget_check)", repr(r))
    return k


def budget_status():
    """11: spent budgets, by /key/verify and by the authorizer."""
    with gateway(0.001, report=False, workers=2) as (srv, up):
        m = attack.master(srv)
        k = budget_message(srv, m)
        r = attack.Caller(srv, k["key"])("POST", "/v1/chat/completions",
                                         {"model": "gpt-4", "messages": []})
        tap.ok(r.status == 400 and r.json == {"error": {
            "message": "Budget has been exceeded! Current cost: 1.5, Max budget: 1.0",
            "type": "budget_exceeded", "param": None, "code": "400"}},
            "11: the authorizer answers a spent budget 400 budget_exceeded, as "
            "UserAPIKeyAuthExceptionHandler renders BudgetExceededError", repr(r))
        tap.ok(r.headers.get("x-should-retry") == "false",
               "11: and tells clients not to retry", repr(r.headers))


# Item 2: (rule, LiteLLM function followed, method, path, body, status, param).  The
# body's {key} is a key the master made; every row is one test point.
STATUS_RULES = [
    ("a negative max_budget", "key_management_endpoints.generate_key_fn",
     "POST", "/key/generate", {"max_budget": -1}, 400, "max_budget"),
    ("a negative soft_budget", "key_management_endpoints.generate_key_fn",
     "POST", "/key/generate", {"soft_budget": -0.5}, 400, "soft_budget"),
    ("a negative max_budget on update", "key_management_endpoints.update_key_fn",
     "POST", "/key/update", {"key": "{key}", "max_budget": -1}, 400, "max_budget"),
    ("a negative max_budget in a bulk update",
     "key_management_endpoints._validate_max_budget",
     "POST", "/key/bulk_update", {"keys": [{"key": "{key}", "max_budget": -1}]}, 400,
     "keys[0].max_budget"),
    ("a user-supplied key without sk-",
     "key_management_endpoints._common_key_generation_helper",
     "POST", "/key/generate", {"key": "my-own-key-123"}, 400, "key"),
    ("a regeneration's new_key without sk-", "key_management_endpoints.get_new_token",
     "POST", "/key/regenerate", {"key": "{key}", "new_key": "invalid-key-123"}, 400,
     "new_key"),
    ("an unparseable duration (LiteLLM: 500 from the ValueError)",
     "duration_parser.duration_in_seconds",
     "POST", "/key/generate", {"duration": "forever"}, 400, "duration"),
    ("an unparseable budget_duration (LiteLLM: 500 from the ValueError)",
     "duration_parser.duration_in_seconds",
     "POST", "/key/update", {"key": "{key}", "budget_duration": "1y"}, 400,
     "budget_duration"),
    ("a duplicate key_alias", "key_management_endpoints._enforce_unique_key_alias",
     "POST", "/key/generate", {"key_alias": "taken-alias"}, 400, "key_alias"),
    ("a duplicate key_alias on update", "key_management_endpoints._enforce_unique_key_alias",
     "POST", "/key/update", {"key": "{key}", "key_alias": "taken-alias"}, 400, "key_alias"),
    ("a service-account key without team_id",
     "key_management_endpoints.validate_team_id_used_in_service_account_request",
     "POST", "/key/service-account/generate", {}, 400, "team_id"),
    ("a service-account key for an unknown team",
     "key_management_endpoints.validate_team_id_used_in_service_account_request",
     "POST", "/key/service-account/generate", {"team_id": "no-such-team"}, 400, "team_id"),
    ("a negative team max_budget", "Budget rule of generate_key_fn and new_organization",
     "POST", "/team/new", {"max_budget": -1}, 400, "max_budget"),
    ("a negative team max_budget on update", "team update's budget check",
     "POST", "/team/update", {"team_id": "status-team", "max_budget": -1}, 400, "max_budget"),
    ("a negative organization max_budget", "organization_endpoints.new_organization",
     "POST", "/organization/new", {"organization_alias": "o", "max_budget": -1}, 400,
     "max_budget"),
    ("a negative user max_budget", "Budget rule of generate_key_fn and new_organization",
     "POST", "/user/new", {"user_id": "status-user", "max_budget": -1}, 400, "max_budget"),
    # what the request model (pydantic) refuses stays 422
    ("a max_budget that is not a number (pydantic)", "GenerateKeyRequest",
     "POST", "/key/generate", {"max_budget": "lots"}, 422, "max_budget"),
    ("a duration that is not a string (pydantic)", "GenerateKeyRequest",
     "POST", "/key/generate", {"duration": 30}, 422, "duration"),
    ("a missing key on update (pydantic)", "UpdateKeyRequest",
     "POST", "/key/update", {"max_budget": 1}, 422, "key"),
    ("a missing team_id on team update (pydantic)", "UpdateTeamRequest",
     "POST", "/team/update", {}, 422, "team_id"),
]


def fill(body, key):
    """body with every "{key}" string replaced by key."""
    if isinstance(body, dict):
        return {k: fill(v, key) for k, v in body.items()}
    if isinstance(body, list):
        return [fill(v, key) for v in body]
    return key if body == "{key}" else body


def status_codes():
    """2: each rule's status as LiteLLM's own source answers it, the field named."""
    with Server(workers=2) as srv:
        m = attack.master(srv)
        k = m("POST", "/key/generate", {}).json["key"]
        m("POST", "/key/generate", {"key_alias": "taken-alias"})
        m("POST", "/team/new", {"team_id": "status-team"})
        for rule, follows, method, path, body, status, param in STATUS_RULES:
            r = m(method, path, fill(body, k))
            err = (r.json or {}).get("error") if isinstance(r.json, dict) else None
            tap.ok(r.status == status and isinstance(err, dict) and
                   err.get("code") == str(status) and err.get("param") == param,
                   "2: %s: %d naming %s, as LiteLLM's %s" % (rule, status, param, follows),
                   repr(r))


def main():
    status_codes()
    master_key_sk_1234()
    user_without_record()
    budget_status()
    tap.done()


tap.run(main)
