#!/usr/bin/python3
"""conformance_litellm_limits.t: the limits LiteLLM's proxy applies where a client notices them,
through lighttpd, by /key/verify and by the FastCGI authorizer in front of a model server
(scripts/lighttpd-gateway.conf.in), as the README's section "Enforcement: verify, usage and
limits" describes them.  Each test point names the LiteLLM function it follows
(litellm/proxy/auth/auth_checks.py, user_api_key_auth.py).

Covers: model access (a key with models [] held to its team's models, a personal key to its
user's, an organization's models over its keys; key aliases and team model_aliases resolved
before the check; the refusal's status, message and type); an organization's max_budget over
its keys, whether they name the organization or their team does, and the spend usage adds to
it; a Venice key's lastUsedAt after use; the provisioning rate limit counting failed attempts.
An organization's rpm_limit and tpm_limit are held by the same rows (tests/unit/test_limits.c):
the API cannot set them yet (NewOrganizationRequest has no such fields)."""
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from upstream import gateway  # noqa: E402
from attack import master, user, team  # noqa: E402

PRICE = 0.001
PROVISION_RPM = 3
NEW = {"X-Client-Version": "2.10.0"}


def uniq(p):
    return "%s-%s" % (p, uuid.uuid4().hex[:8])


def J(r):
    return r.json if isinstance(r.json, dict) else {}


def generate(m, **body):
    r = m("POST", "/key/generate", body)
    if r.status != 200:
        tap.bail("POST /key/generate %s: %r" % (body, r))
    return r.json["key"]


def verify(m, key, **fields):
    body = {"key": key}
    body.update(fields)
    r = m("POST", "/key/verify", body)
    return J(r) if r.status == 200 else {"status": r.status, "body": r.body[:400]}


def complete(srv, key, model):
    """A chat completion through the gateway: the authorizer judges key and model (x-model)."""
    h = {"Authorization": "Bearer " + key, "x-model": model, "x-request-id": uuid.uuid4().hex}
    return srv.request("POST", "/v1/chat/completions", headers=h,
                       body={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def model_refused(m, srv, key, model, obj, models, rule):
    """The refusal of _can_object_call_model for obj (key, team, user, org) over models (a Python
    list repr), by /key/verify and by the authorizer: 401, LiteLLM's message, type and param."""
    want = ("%s not allowed to access model. This %s can only access models=%s. Tried to access %s"
            % (obj, obj, models, model))
    a = verify(m, key, model=model, dry_run=True)
    tap.ok(a.get("code") == "MODEL_NOT_ALLOWED" and a.get("valid") is False and
           a.get("message") == want, "%s: /key/verify refuses %s (MODEL_NOT_ALLOWED)"
           % (rule, model), a)
    r = complete(srv, key, model)
    e = J(r).get("error") or {}
    tap.ok(r.status == 401 and e.get("message") == want and
           e.get("type") == "%s_model_access_denied" % obj and e.get("param") == "model" and
           e.get("code") == "401", "%s: the authorizer refuses %s as LiteLLM does (401, %s_"
           "model_access_denied)" % (rule, model, obj), repr(r))


def model_allowed(m, srv, key, model, rule):
    a = verify(m, key, model=model, dry_run=True)
    r = complete(srv, key, model)
    tap.ok(a.get("code") == "VALID" and r.status == 200, "%s: %s passes /key/verify and the "
           "authorizer" % (rule, model), "%s; %r" % (a, r))


def models_rules(srv, m):
    # can_key_call_model -> _can_object_call_model: the refusal's status and message
    k = generate(m, models=["gpt-4"])
    model_refused(m, srv, k, "gpt-3.5-turbo", "key", "['gpt-4']",
                  "can_key_call_model, a key with models ['gpt-4']")
    model_allowed(m, srv, k, "gpt-4", "can_key_call_model")

    # common_checks -> can_team_access_model: a key with models [] is held to its team's
    tid = uniq("team")
    team(srv, tid, models=["gpt-4"])
    k = generate(m, team_id=tid, models=[])
    model_refused(m, srv, k, "gpt-3.5-turbo", "team", "['gpt-4']",
                  "can_team_access_model, a key with models [] in a team with ['gpt-4']")
    model_allowed(m, srv, k, "gpt-4", "can_team_access_model, the team's model")

    # common_checks -> can_user_call_model (personal key): a key with models [] held to its user's
    uid = uniq("user")
    u = user(srv, uid, models=["gpt-4", "claude-3"])
    k = generate(m, user_id=uid, models=[])
    model_refused(m, srv, k, "gpt-3.5-turbo", "user", "['gpt-4', 'claude-3']",
                  "can_user_call_model, a personal key with models [] of a user with "
                  "['gpt-4', 'claude-3']")
    model_allowed(m, srv, k, "claude-3", "can_user_call_model, the user's model")
    # /user/new's first key carries the user's models: the key's own list refuses first
    model_refused(m, srv, u.key, "gpt-3.5-turbo", "key", "['gpt-4', 'claude-3']",
                  "can_key_call_model, the first key /user/new made")
    # ... but a team key of that user is the team's (team_object set: no user check)
    tid = uniq("team")
    team(srv, tid, members=[uid])
    k = generate(m, user_id=uid, team_id=tid)
    model_allowed(m, srv, k, "gpt-3.5-turbo", "can_user_call_model applies to personal keys "
                  "only; a team key of the user")

    # "all-team-models" and "all-proxy-models" stay as they were
    tid = uniq("team")
    team(srv, tid, models=["gpt-4"])
    k = generate(m, team_id=tid, models=["all-team-models"])
    model_allowed(m, srv, k, "gpt-4", "_resolve_key_models_for_auth_check, all-team-models")
    model_refused(m, srv, k, "gpt-3.5-turbo", "key", "['all-team-models']",
                  "_resolve_key_models_for_auth_check, all-team-models outside the team's")
    k = generate(m, models=["all-proxy-models"])
    model_allowed(m, srv, k, "anything-at-all", "_check_model_access_helper, all-proxy-models")

    # user_api_key_auth's model_alias_map: key aliases, then _can_object_call_model checks
    # the name asked for and the model it maps to
    k = generate(m, models=["gpt-4"], aliases={"my-gpt": "gpt-4", "sneaky": "gpt-3.5-turbo"})
    model_allowed(m, srv, k, "my-gpt", "_can_object_call_model, a key alias to an allowed model")
    model_refused(m, srv, k, "sneaky", "key", "['gpt-4']",
                  "_can_object_call_model, a key alias to a model outside the key's")
    # team model_aliases: _model_in_team_aliases lets the alias through the key and the team
    tid = uniq("team")
    team(srv, tid, models=["gpt-4"], model_aliases={"fast": "gpt-4o-mini"})
    k = generate(m, team_id=tid, models=["gpt-4"])
    model_allowed(m, srv, k, "fast", "_model_in_team_aliases, a team model_aliases name")
    model_refused(m, srv, k, "gpt-4o-mini", "key", "['gpt-4']",
                  "_model_in_team_aliases, the alias's target asked for by its own name")

    # can_org_access_model: the organization's models over its keys, theirs or their team's
    oid = uniq("org")
    r = m("POST", "/organization/new", {"organization_id": oid, "organization_alias": oid,
                                        "models": ["gpt-4"]})
    tap.eq(r.status, 200, "an organization with models ['gpt-4']")
    k = generate(m, organization_id=oid)
    model_refused(m, srv, k, "gpt-3.5-turbo", "org", "['gpt-4']",
                  "can_org_access_model, a key of the organization")
    tid = uniq("team")
    team(srv, tid, organization_id=oid)
    k = generate(m, team_id=tid)
    model_refused(m, srv, k, "gpt-3.5-turbo", "org", "['gpt-4']",
                  "can_org_access_model, a key of a team of the organization")
    model_allowed(m, srv, k, "gpt-4", "can_org_access_model, the organization's model")


def org_budget_rules(srv, m):
    # _organization_max_budget_check: valid_token.org_id, else team_object.organization_id
    oid = uniq("org")
    r = m("POST", "/organization/new", {"organization_id": oid, "organization_alias": oid,
                                        "max_budget": 0.5})
    tap.eq(r.status, 200, "an organization with max_budget 0.5")
    tid = uniq("team")
    team(srv, tid, organization_id=oid)
    by_team = generate(m, team_id=tid)
    own = generate(m, organization_id=oid)
    a = verify(m, by_team, dry_run=True)
    tap.eq(a.get("code"), "VALID", "_organization_max_budget_check: under budget, VALID")
    r = m("POST", "/key/usage", {"key": by_team, "cost": 0.3})
    r2 = m("POST", "/key/usage", {"key": own, "cost": 0.2})
    tap.ok(r.status == 200 and r2.status == 200, "usage of 0.3 and 0.2 on two keys of the "
           "organization", "%r %r" % (r, r2))
    r = m("GET", "/organization/info?organization_id=" + oid)
    tap.ok(r.status == 200 and abs((J(r).get("spend") or 0) - 0.5) < 1e-9,
           "usage adds spend to the organization (0.5): its spend is tracked", repr(r))
    for key, how in ((by_team, "its team's organization_id"), (own, "its own organization_id")):
        a = verify(m, key, dry_run=True)
        tap.ok(a.get("code") == "BUDGET_EXCEEDED" and a.get("limit") == "organization_max_budget",
               "_organization_max_budget_check: a key of the organization by %s is refused "
               "by /key/verify" % how, a)
        r = complete(srv, key, "gpt-4")
        err = J(r).get("error") or {}
        tap.ok(r.status == 400 and err.get("type") == "budget_exceeded" and
               (err.get("message") or "").startswith("Budget has been exceeded! Organization=" +
                                                      oid + " Current cost: "),
               "_organization_max_budget_check: and by the authorizer (%s): 400, "
               "BudgetExceededError's message naming the organization" % how, repr(r))
    other = generate(m)
    tap.eq(verify(m, other, dry_run=True).get("code"), "VALID",
           "a key outside the organization is not refused")

    # an organization's rpm_limit, set through /organization/new, holds its keys
    oid = uniq("org")
    r = m("POST", "/organization/new", {"organization_id": oid, "organization_alias": oid,
                                        "rpm_limit": 2, "tpm_limit": 100000})
    tap.ok(r.status == 200 and J(r).get("rpm_limit") == 2, "an organization with rpm_limit 2",
           repr(r))
    k1, k2 = generate(m, organization_id=oid), generate(m, organization_id=oid)
    codes = [verify(m, k).get("code") for k in (k1, k2, k1)]
    tap.eq(codes, ["VALID", "VALID", "RATE_LIMITED"], "the organization's rpm_limit holds across "
           "its keys: the third request in the minute is refused")
    limits = [x.get("name") for x in verify(m, k2, dry_run=True).get("limits", [])]
    tap.ok("organization_rpm_limit" in limits and "organization_tpm_limit" in limits,
           "/key/verify lists the organization's limits", limits)


def venice_rules(srv, m):
    r = m("POST", "/api/v1/api_keys", {"apiKeyType": "INFERENCE", "description": uniq("v")})
    d = J(r).get("data") or {}
    if not tap.ok(r.status == 200 and d.get("apiKey"), "a Venice INFERENCE key", repr(r)):
        return
    kid, vkey = d["id"], d["apiKey"]

    def last_used():
        return (J(m("GET", "/api/v1/api_keys/" + kid)).get("data") or {}).get("lastUsedAt")
    tap.eq(last_used(), None, "Venice lastUsedAt: null before any use")
    before = time.time()
    a = verify(m, vkey, model="llama-3.3-70b")
    at = last_used()
    tap.ok(a.get("code") == "VALID" and isinstance(at, str) and at[:4].isdigit(),
           "Venice lastUsedAt: set by a VALID /key/verify", "%s; %r" % (a.get("code"), at))
    tap.ok(verify(m, vkey, dry_run=True).get("code") == "VALID" and last_used() == at,
           "Venice lastUsedAt: a dry run is no use")
    time.sleep(max(0, 1.1 - (time.time() - before)))
    r = m("POST", "/key/usage", {"key": vkey, "cost": 0.01})
    later = last_used()
    tap.ok(r.status == 200 and isinstance(later, str) and later > at,
           "Venice lastUsedAt: moved on by a usage report", "%r -> %r" % (at, later))


def provisioning_rules(srv, m):
    oid = uniq("org")
    tap.eq(m("POST", "/organization/new", {"organization_id": oid,
                                           "organization_alias": oid}).status, 200,
           "an organization to provision in")
    uid = uniq("member")
    u = user(srv, uid)
    tap.eq(m("POST", "/organization/member_add", {"organization_id": oid,
                                                 "member": {"user_id": uid}}).status, 200,
           "a member of it")
    if 60 - time.time() % 60 < 15:
        time.sleep(60 - time.time() % 60 + 0.5)   # one minute's window for the whole sequence
    statuses = [u("POST", "/api/v1/org/%s/inference/keys" % uniq("no-such-org"),
                  {"client_id": "c"}, headers=NEW).status for _ in range(PROVISION_RPM)]
    tap.eq(statuses, [404] * PROVISION_RPM, "%d failing provisioning attempts (404)"
           % PROVISION_RPM)
    r = u("POST", "/api/v1/org/%s/inference/keys" % oid, {"client_id": "c"}, headers=NEW)
    tap.ok(r.status == 429 and r.headers.get("retry-after", "").isdigit(),
           "KEYWARDEN_PROVISION_RPM=%d counts every attempt: the next one, valid, is 429"
           % PROVISION_RPM, repr(r))


def main():
    with gateway(PRICE, env={"KEYWARDEN_PROVISION_RPM": str(PROVISION_RPM)}) as (srv, up):
        m = master(srv)
        models_rules(srv, m)
        org_budget_rules(srv, m)
        venice_rules(srv, m)
        provisioning_rules(srv, m)


tap.run(main)
