#!/usr/bin/python3
"""overshoot.t: 64 clients at once against every budget and limit kind (the key's, its team's,
its user's, its organization's, a budget_id's, an end user's, per model, Venice's), through lighttpd and 8 workers: a budget
lets at most one request past what it allows (every request reserves its expected cost, or the
default, until its usage is reported), and a count limit exactly what it allows."""
import json
import os
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import tap  # noqa: E402
from upstream import gateway  # noqa: E402
from attack import master, user, team, together  # noqa: E402

N = 64            # clients at once
ALLOWED = 8       # requests a budget allows
COST = 0.125      # what one request costs (exact in binary, so sums are exact)
HOLD = 0.05       # seconds a request is "in flight" between its check and its usage report
PRICE = 0.001     # the model server's cost per token


def uniq(p):
    return "%s-%s" % (p, uuid.uuid4().hex[:10])


def race(check, settle=None, hold=HOLD):
    """N clients at once: each checks; an admitted one holds, then settles. Admitted count."""
    def one():
        rid = uuid.uuid4().hex
        ok = check(rid)
        if ok and settle is not None:
            time.sleep(hold)
            settle(rid)
        return ok
    return sum(1 for ok in together([one] * N) if ok)


def verify(m, key, **fields):
    body = {"key": key}
    body.update(fields)
    r = m("POST", "/key/verify", body)
    if r.status != 200:
        raise RuntimeError("verify: %r" % r)
    return r.json


def usage(m, key, **fields):
    body = {"key": key}
    body.update(fields)
    r = m("POST", "/key/usage", body)
    if r.status != 200:
        raise RuntimeError("usage: %r" % r)
    return r.json


def generate(m, **body):
    r = m("POST", "/key/generate", body)
    if r.status != 200:
        raise RuntimeError("generate: %r" % r)
    return r.json["key"]


def budget_point(name, admitted, allowed=ALLOWED):
    tap.ok(admitted <= allowed + 1, "%s: %d clients at once, a budget for %d: %d admitted "
           "(at most %d)" % (name, N, allowed, admitted, allowed + 1))


def count_point(name, admitted, allowed=ALLOWED):
    tap.ok(admitted == allowed, "%s %d: %d clients at once: %d admitted (exactly %d)"
           % (name, allowed, N, admitted, allowed))


def via_verify(m, key, settle_fields, **check_fields):
    """A race of /key/verify (check_fields) then /key/usage (settle_fields) on key."""
    def check(rid):
        return verify(m, key, request_id=rid, **check_fields)["valid"]

    def settle(rid):
        usage(m, key, request_id=rid, **settle_fields)
    return race(check, settle)


def main():
    with gateway(PRICE, workers=8, env={"KEYWARDEN_DEFAULT_EXPECTED_COST": str(COST),
                                        "KEYWARDEN_DEFAULT_EXPECTED_TOKENS": "10"}) as (srv, up):
        run(srv, up)


def run(srv, up):
    m = master(srv)
    budget = ALLOWED * COST

    # the key's max_budget, /key/verify without expected_cost: the default is reserved
    k = generate(m, max_budget=budget)
    n = via_verify(m, k, {"cost": COST})
    budget_point("max_budget, /key/verify without expected_cost", n)
    a = verify(m, k, dry_run=True)
    tap.ok(abs(a["reserved"]) < 1e-9 and a["spend"] <= budget + COST,
           "max_budget: every reservation settled, spend %g of %g" % (a["spend"], budget), a)

    # the key's max_budget, /key/verify with expected_cost
    k = generate(m, max_budget=budget)
    budget_point("max_budget, /key/verify with expected_cost",
                 via_verify(m, k, {"cost": COST}, expected_cost=COST))

    # the key's max_budget through the authorizer: a completion costs what the model server
    # reports, measured first on a key without limits
    free = generate(m)
    msg = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}

    def complete(key, rid=None):
        h = {"Authorization": "Bearer " + key, "x-model": "gpt-4"}
        if rid:
            h["x-request-id"] = rid
        return srv.request("POST", "/v1/chat/completions", body=msg, headers=h)
    r = complete(free, uuid.uuid4().hex)
    tokens = r.json["usage"]["total_tokens"] if r.status == 200 else None
    if not tap.ok(tokens, "a completion through the gateway", repr(r)):
        return
    # from here the model server reports what the default reserves: COST a completion
    up.price = COST / tokens
    for with_id in (True, False):
        k = generate(m, max_budget=budget)
        statuses = together([(lambda: complete(k, uuid.uuid4().hex if with_id else None)
                              .status)] * N)
        n = statuses.count(200)
        budget_point("max_budget, the authorizer%s" % (" (x-request-id)" if with_id else
                                                       " (no x-request-id)"), n)
        # a spent budget is 400 budget_exceeded, as LiteLLM answers it
        tap.ok(set(statuses) <= {200, 400}, "the authorizer: only 200 and 400",
               sorted(set(statuses)))
        if not with_id:
            a = verify(m, k, dry_run=True)
            tap.ok(abs(a["reserved"]) < 1e-9, "usage reports without a request_id return the "
                   "leases the authorizer named: nothing stays reserved", a)

    # the team's max_budget
    tid = uniq("team")
    team(srv, tid, max_budget=budget)
    k = generate(m, team_id=tid)
    budget_point("team max_budget", via_verify(m, k, {"cost": COST}))

    # a budget_id's max_budget (LiteLLM_VerificationTokenView: the budget's limit, the key's spend)
    bid = uniq("budget")
    r = m("POST", "/budget/new", {"budget_id": bid, "max_budget": budget})
    if tap.ok(r.status == 200, "a budget (/budget/new) with a max_budget", repr(r)):
        k = generate(m, budget_id=bid)
        budget_point("budget_id max_budget", via_verify(m, k, {"cost": COST}))

    # an end user's budget (_check_end_user_budget), by two keys naming the end user
    eu = uniq("end-user")
    r = m("POST", "/customer/new", {"user_id": eu, "max_budget": budget})
    if tap.ok(r.status == 200, "an end user (/customer/new) with a max_budget", repr(r)):
        keys = [generate(m), generate(m)]
        n = race(lambda rid: verify(m, keys[hash(rid) % 2], request_id=rid,
                                    end_user=eu)["valid"],
                 lambda rid: None, hold=0)
        budget_point("end user max_budget, /key/verify (reserved, not settled)", n)

    # the organization's max_budget (LiteLLM's _organization_max_budget_check), by keys of a
    # team of it and by a key naming it, through /key/verify and through the authorizer
    oid = uniq("org")
    r = m("POST", "/organization/new", {"organization_id": oid, "organization_alias": oid,
                                        "max_budget": budget})
    if tap.ok(r.status == 200, "an organization with a max_budget", repr(r)):
        tid = uniq("team")
        team(srv, tid, organization_id=oid)
        keys = [generate(m, team_id=tid), generate(m, organization_id=oid)]
        n = race(lambda rid: verify(m, keys[hash(rid) % 2], request_id=rid)["valid"],
                 lambda rid: None, hold=0)
        budget_point("organization max_budget, /key/verify (reserved, not settled)", n)
        oid = uniq("org")
        m("POST", "/organization/new", {"organization_id": oid, "organization_alias": oid,
                                        "max_budget": budget})
        k = generate(m, organization_id=oid)
        statuses = together([(lambda: complete(k, uuid.uuid4().hex).status)] * N)
        budget_point("organization max_budget, the authorizer", statuses.count(200))

    # the user's max_budget (the user's own key)
    u = user(srv, uniq("user"), max_budget=budget)
    budget_point("user max_budget", via_verify(m, u.key, {"cost": COST}))

    # model_max_budget, with expected_cost and without
    for fields, name in (({"expected_cost": COST}, "with expected_cost"),
                         ({}, "without expected_cost")):
        k = generate(m, model_max_budget={"gpt-4": {"budget_limit": budget,
                                                    "time_period": "1d"}})
        budget_point("model_max_budget, %s" % name,
                     via_verify(m, k, {"cost": COST, "model": "gpt-4"}, model="gpt-4",
                                **fields))

    # Venice consumption limits: usd (cost) and diem
    for currency, settle in (("usd", {"cost": COST}), ("diem", {"diem": COST})):
        r = m("POST", "/api/v1/api_keys", {"apiKeyType": "INFERENCE",
                                           "description": uniq("venice"),
                                           "consumptionLimit": {currency: budget}})
        if not tap.ok(r.status == 200, "a Venice key with a %s limit" % currency, repr(r)):
            continue
        k = r.json["data"]["apiKey"]
        budget_point("Venice %s consumption limit" % currency, via_verify(m, k, settle))

    # tpm_limit with expected_tokens: 10 tokens a request, 100 a minute
    k = generate(m, tpm_limit=100)
    n = via_verify(m, k, {"total_tokens": 10}, expected_tokens=10)
    tap.ok(n <= 10, "tpm_limit 100, expected_tokens 10: %d clients at once: %d admitted "
           "(at most 10)" % (N, n))
    a = verify(m, k, dry_run=True)
    used = [e for e in a.get("limits", []) if e.get("name") == "tpm_limit"]
    tap.ok(used and used[0]["used"] <= 100, "tpm_limit: %s tokens counted of 100"
           % (used[0]["used"] if used else "?"), a)

    # count limits: rpm_limit, max_parallel_requests (held: nothing is settled during the race)
    k = generate(m, rpm_limit=ALLOWED)
    count_point("rpm_limit", race(lambda rid: verify(m, k, request_id=rid)["valid"]))
    k = generate(m, max_parallel_requests=ALLOWED)
    count_point("max_parallel_requests",
                race(lambda rid: verify(m, k, request_id=rid)["valid"]))

    log = srv.read_log()
    tap.ok("still deadlocked" not in log, "no transaction gave up on a deadlock")
    tap.diag(json.dumps({"usage reports": len(up.reports)}))


tap.run(main)
