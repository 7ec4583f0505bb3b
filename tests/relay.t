#!/usr/bin/python3
"""relay.t: the relay end to end: the official OpenAI client (tests/e2e/relay.mjs) with a
generated key against keywarden's /v1 routes through the real lighttpd, relayed over HTTPS
to a fake provider (tests/lib/provider.py) that trusts only a CA this test makes, every
limit and every cent enforced by keywarden alone."""
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from e2e import npm_ci  # noqa: E402
from kwserver import Server, wait_for  # noqa: E402
from provider import Provider, configure  # noqa: E402
from upstream import count_tokens  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
E2E = os.path.join(ROOT, "tests", "e2e")
# gpt-4o's shipped price (fcgi-app/relay.c default_prices, LiteLLM's table)
IN, OUT = 2.5e-06, 1e-05
CONTENT = "You said: hi there"
USAGE = {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
COST = USAGE["prompt_tokens"] * IN + USAGE["completion_tokens"] * OUT
BUDGET_CALLS = 3
BUDGET = (BUDGET_CALLS - 0.5) * COST
TPM = 40
LONG = " ".join("word%d" % i for i in range(24))


def ok_status(r, status, what):
    if r.status != status:
        tap.bail("%s: %r" % (what, r))
    return r.json


def generate(srv, body):
    return ok_status(srv.admin("POST", "/key/generate", body=body), 200, "key/generate")["key"]


def spend_of(srv, key):
    return ((srv.admin("GET", "/key/info?key=" + key).json or {}).get("info") or {}).get("spend")


def refused(steps, name, status, cls):
    s = steps.get(name, {})
    e = s.get("error") or {}
    tap.ok(not s.get("ok", True) and e.get("status") == status and e.get("class") == cls,
           "%s: the client raises %s (%d)" % (name, cls, status), s)
    body = e.get("body") or {}
    tap.ok(body.get("code") == str(status) and "message" in body and "type" in body,
           "%s: the error is OpenAI's envelope" % name, body)
    return e


def main():
    if not npm_ci("openai/package.json"):
        return
    with Provider() as prov:
        with Server(workers=4, env={"KEYWARDEN_CA_BUNDLE": prov.ca}) as srv:
            run(srv, prov)
        prices_file(prov)


def run(srv, prov):
    provider_secrets = configure(srv, prov)
    keys = {
        "KW_KEY_VALID": generate(srv, {"key_alias": "relay-valid"}),
        "KW_KEY_BUDGET": generate(srv, {"key_alias": "relay-budget", "max_budget": BUDGET}),
        "KW_KEY_RPM": generate(srv, {"key_alias": "relay-rpm", "rpm_limit": 2}),
        "KW_KEY_TPM": generate(srv, {"key_alias": "relay-tpm", "tpm_limit": TPM}),
        "KW_KEY_BLOCK": generate(srv, {"key_alias": "relay-block"}),
        "KW_KEY_MODELS": generate(srv, {"key_alias": "relay-models", "models": ["gpt-4o-mini"]}),
        "KW_KEY_DISCONNECT": generate(srv, {"key_alias": "relay-disconnect"}),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(keys)
    env.update({"RELAY_BASE": "http://127.0.0.1:%d" % srv.port,
                "KW_MASTER_KEY": srv.master_key, "RELAY_LONG_MESSAGE": LONG})
    r = subprocess.run(["node", os.path.join(E2E, "relay.mjs")], env=env, cwd=E2E,
                       capture_output=True, text=True, timeout=240)
    lines = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    steps = {ln["step"]: ln for ln in lines if "step" in ln}
    if not tap.ok(r.returncode == 0 and lines and lines[-1].get("done"),
                  "relay.mjs runs to its end", r.stdout[-3000:] + r.stderr[-3000:]):
        return
    tap.diag("steps: " + ", ".join("%s %s" % (s["step"], "ok" if s["ok"] else
                                              s["error"]["status"]) for s in steps.values()))

    # the client's calls, plain and streamed, each kind of route
    s = steps.get("chat", {})
    tap.ok(s.get("ok") and s.get("content") == CONTENT and s.get("usage") == USAGE,
           "chat.completions.create: the provider's answer and usage arrive", s)
    tap.ok(str(s.get("request_id", "")).startswith("relay-"), "the answer names its request id", s)
    s = steps.get("chat stream", {})
    tap.ok(s.get("ok") and s.get("content") == CONTENT and s.get("chunks", 0) > 3,
           "a streamed chat arrives chunk by chunk", s)
    tap.ok(s.get("usage") is None, "a stream that did not ask for usage gets no usage chunk, "
           "though keywarden asked the provider for one", s)
    s = steps.get("chat stream with usage", {})
    tap.ok(s.get("ok") and s.get("usage") == USAGE,
           "stream_options.include_usage: the usage chunk reaches the client", s)
    s = steps.get("chat without /v1", {})
    tap.ok(s.get("ok") and s.get("content") == CONTENT, "/chat/completions, LiteLLM's path "
           "without /v1", s)
    s = steps.get("embedding", {})
    tap.ok(s.get("ok") and s.get("n") == 1 and s.get("dims") == 3 and
           (s.get("usage") or {}).get("prompt_tokens") == 2, "embeddings.create", s)
    s = steps.get("models", {})
    tap.ok(s.get("ok") and {"gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "gpt-4.1"} <=
           set(s.get("ids", [])), "models.list: the models the provider keys serve", s)
    s = steps.get("completion", {})
    tap.ok(s.get("ok") and s.get("text") == CONTENT, "completions.create", s)
    s = steps.get("responses", {})
    tap.ok(s.get("ok") and s.get("text") == CONTENT and (s.get("usage") or {}).get(
        "input_tokens") == 2, "responses.create", s)
    s = steps.get("responses stream", {})
    tap.ok(s.get("ok") and s.get("text") == CONTENT and (s.get("usage") or {}).get(
        "output_tokens") == 5, "responses.create with stream: the events and the usage on "
           "response.completed", s)
    s = steps.get("azure", {})
    tap.ok(s.get("ok") and s.get("content") == CONTENT, "AzureOpenAI: Azure's deployment path "
           "with api-key", s)

    # failover: the first key answers 500, the next one answers
    s = steps.get("failover", {})
    tap.ok(s.get("ok") and s.get("content") == CONTENT, "a provider key that answers 500 fails "
           "over to the next one", s)
    flaky = [q["headers"].get("authorization") for q in prov.seen("/v1/chat/completions")
             if (q["body"] or {}).get("model") == "gpt-4.1"]
    tap.ok(flaky[:2] == ["Bearer " + provider_secrets["flaky-500"],
                         "Bearer " + provider_secrets["flaky-good"]],
           "the provider saw the failing key, then the good one", flaky)

    # the first chunk reaches the client while the provider still holds the rest
    s = steps.get("first chunk", {})
    tap.ok(s.get("ok") and s.get("first_ms") is not None and
           s["first_ms"] + 1000 < s.get("end_ms", 0),
           "the first streamed chunk reaches the client before the provider finishes "
           "(first %s ms, end %s ms)" % (s.get("first_ms"), s.get("end_ms")), s)

    # the budget runs out after exactly the calls it pays for
    budget = [steps["budget %d" % i] for i in range(1, 9) if "budget %d" % i in steps]
    passed = [b for b in budget if b["ok"]]
    tap.ok(len(passed) == BUDGET_CALLS and all(b["ok"] for b in budget[:BUDGET_CALLS]),
           "max_budget %g: exactly %d completions pass" % (BUDGET, BUDGET_CALLS), budget)
    e = refused({"budget": budget[BUDGET_CALLS] if len(budget) > BUDGET_CALLS else {}},
                "budget", 400, "BadRequestError")
    body = e.get("body") or {}
    tap.ok(body.get("type") == "budget_exceeded" and
           str(body.get("message", "")).startswith("Budget has been exceeded! Current cost: "),
           "budget: LiteLLM's budget_exceeded error", body)
    spend = spend_of(srv, keys["KW_KEY_BUDGET"])
    tap.ok(spend is not None and abs(spend - BUDGET_CALLS * COST) < 1e-12,
           "the key's spend is the sum of its priced usage (%r)" % spend)

    # models: the body's model is judged, whatever a header says
    s = steps.get("models: allowed", {})
    tap.ok(s.get("ok") and s.get("content") == CONTENT, "a model in the key's list passes", s)
    e = refused(steps, "models: not allowed", 401, "AuthenticationError")
    tap.ok("gpt-4o" in str((e.get("body") or {}).get("message")),
           "a model outside the key's list is refused from the body though x-model names an "
           "allowed one", e)
    r = srv.request("GET", "/v1/models", headers={"Authorization": "Bearer " + keys["KW_KEY_MODELS"]})
    tap.eq([m["id"] for m in (r.json or {}).get("data", [])], ["gpt-4o-mini"],
           "GET /v1/models lists only the models the key may use")

    tap.ok((steps.get("block: before") or {}).get("ok"), "block: a call before the block")
    b = steps.get("block: POST /key/block") or {}
    tap.ok(b.get("status") == 200 and b.get("blocked") is True, "POST /key/block", b)
    refused(steps, "block: after", 401, "AuthenticationError")

    # rates: rpm 2, then tpm
    tap.ok(steps.get("rpm 1", {}).get("ok") and steps.get("rpm 2", {}).get("ok"),
           "rpm_limit 2: two completions pass")
    tap.ok([(steps.get(s, {}).get("ratelimit") or {}).get("x-ratelimit-remaining-requests")
            for s in ("rpm 1", "rpm 2")] == ["1", "0"] and
           (steps.get("rpm 1", {}).get("ratelimit") or {}).get("x-ratelimit-limit-requests") == "2"
           and "x-ratelimit-reset-requests" in (steps.get("rpm 1", {}).get("ratelimit") or {}),
           "their 200 answers carry x-ratelimit-limit, -remaining and -reset-requests to the "
           "client", [steps.get(s, {}).get("ratelimit") for s in ("rpm 1", "rpm 2")])
    e = refused(steps, "rpm 3", 429, "RateLimitError")
    h = e.get("headers") or {}
    tap.ok(h.get("retry-after") and h.get("x-ratelimit-limit-requests") == "2",
           "the third carries Retry-After and x-ratelimit-*", h)
    tpm = [steps["tpm %d" % i] for i in range(1, 9) if "tpm %d" % i in steps]
    n = next((i for i, t in enumerate(tpm) if not t["ok"]), len(tpm))
    tap.ok(1 <= n <= TPM // USAGE["total_tokens"] and all(t["ok"] for t in tpm[:n]),
           "tpm_limit %d: %d completions of %d tokens pass" % (TPM, n, USAGE["total_tokens"]), tpm)
    e = refused({"tpm": tpm[n] if n < len(tpm) else {}}, "tpm", 429, "RateLimitError")
    tap.eq((e.get("headers") or {}).get("x-ratelimit-limit-tokens"), str(TPM),
           "the tpm refusal names the tokens window")

    # a client that left mid-stream is charged for what the provider produced
    s = steps.get("disconnect", {})
    tap.ok(s.get("ok") and s.get("content"), "disconnect: the client read a chunk and left", s)
    full = {"prompt": 3 + count_tokens(LONG), "completion": count_tokens("You said: " + LONG)}
    want = full["prompt"] * IN + full["completion"] * OUT
    got = wait_for(lambda: (lambda v: v if v and v > 0 else None)(
        spend_of(srv, keys["KW_KEY_DISCONNECT"])), timeout=20)
    tap.ok(got is not None and abs(got - want) < 1e-12,
           "the client that left is charged for every token the provider streamed "
           "(%r, want %r)" % (got, want))

    python_checks(srv, prov, keys, provider_secrets)


def python_checks(srv, prov, keys, provider_secrets):
    """What the client does not show: the headers the provider saw, refusals, the log."""
    valid = {"Authorization": "Bearer " + keys["KW_KEY_VALID"]}
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi there"}]}

    # the Azure provider: its deployment path, api-version and api-key header
    r = srv.request("POST", "/v1/chat/completions", headers=valid,
                    body=dict(chat, model="azure/gpt-4.1-mini"))
    tap.eq(r.status, 200, "azure/gpt-4.1-mini is relayed to the Azure provider key")
    az = prov.seen("/openai/deployments/")
    tap.ok(az and az[-1]["path"] == "/openai/deployments/gpt41mini-prod/chat/completions"
           "?api-version=2024-10-21" and az[-1]["headers"].get("api-key") ==
           provider_secrets["azure"] and "authorization" not in az[-1]["headers"],
           "Azure gets its deployment, api-version and the api-key header",
           az[-1] if az else None)

    extra = {q["headers"].get("x-relay-test") for q in prov.seen("/v1/")
             if q["headers"].get("authorization") == "Bearer " + provider_secrets["good"]}
    tap.eq(extra, {"fakeai"}, "network_config.extra_headers reach the provider")

    # other headers the client presents its key in
    for header in ("x-api-key", "api-key", "x-litellm-api-key"):
        r = srv.request("POST", "/v1/chat/completions", headers={header: keys["KW_KEY_VALID"]},
                        body=chat)
        tap.eq(r.status, 200, "the key in %s" % header)

    # refusals, each in OpenAI's envelope
    r = srv.request("POST", "/v1/chat/completions", body=chat)
    tap.ok(r.status == 401 and (r.json or {}).get("error", {}).get("code") == "401",
           "no key: 401", r)
    r = srv.admin("POST", "/v1/chat/completions", body=chat)
    tap.ok(r.status == 401 and "master key" in r.body.decode(), "the master key calls no model: "
           "401 saying to generate a key", r)
    unknown = "sk-" + secrets.token_urlsafe(16)
    r = srv.request("POST", "/v1/chat/completions", body=chat,
                    headers={"Authorization": "Bearer " + unknown})
    tap.ok(r.status == 401 and unknown not in r.body.decode(), "an unknown key: 401, not echoed", r)
    r = srv.request("POST", "/v1/chat/completions", headers=valid, body={"model": 7})
    tap.ok(r.status == 422 and (r.json or {}).get("error", {}).get("param") == "model",
           "a model that is not a string: 422 naming model", r)
    r = srv.request("POST", "/v1/chat/completions", headers=valid, body=dict(chat, model="o1"))
    tap.ok(r.status == 404 and "o1" in r.body.decode(),
           "a priced model no provider key serves: 404", r)
    r = srv.request("POST", "/v1/chat/completions", headers=valid,
                    body=dict(chat, model="no-price-model"))
    tap.ok(r.status == 400 and "price" in r.body.decode() and
           (r.json or {}).get("error", {}).get("param") == "model",
           "a model with no price is refused (400) unless the operator allows it", r)
    before = len(prov.seen())
    r = srv.request("POST", "/v1/chat/completions", headers=valid, body=dict(chat, model="o1"))
    tap.eq(len(prov.seen()), before, "a refused call never reaches the provider")

    # images: priced by the image where the answer names no tokens
    key = generate(srv, {"key_alias": "relay-images"})
    r = srv.request("POST", "/v1/images/generations", headers={"Authorization": "Bearer " + key},
                    body={"model": "dall-e-3", "prompt": "a lighthouse", "n": 2})
    got = spend_of(srv, key)
    tap.ok(r.status == 200 and len((r.json or {}).get("data", [])) == 2 and got is not None and
           abs(got - 2 * 0.04) < 1e-12, "images.generate: two dall-e-3 images cost 2 x 0.04 "
           "(%r)" % got, r)

    # no client key ever reaches the provider; the provider's secrets stay out of answers
    leaked = [q["path"] for q in prov.seen() for k in keys.values()
              if k in json.dumps(q["headers"]) or k in json.dumps(q["body"])]
    tap.ok(not leaked, "the provider never sees a client's key", leaked)
    auth = {q["headers"].get("authorization") or q["headers"].get("api-key") for q in prov.seen()}
    tap.ok(auth <= {"Bearer " + provider_secrets[k] for k in ("good", "flaky-500", "flaky-good")} |
           {provider_secrets["azure"]}, "the provider sees only the providers' secrets", auth)
    time.sleep(0.2)
    log = srv.read_log()
    tap.ok(not [k for k in list(keys.values()) + list(provider_secrets.values()) if k in log],
           "no client key or provider secret in the log")

    aliases(srv, prov, chat)
    end_users(srv, keys, chat)
    held_alike(srv, chat)
    provisioned(srv, chat)
    unmetered(srv, keys, chat)
    failures(srv, prov, keys, chat)
    connections(srv, prov, keys, chat)
    concurrency(srv, chat)

    r = srv.request("GET", "/model/info", headers=valid)
    info = {m["model_name"]: m for m in (r.json or {}).get("data", [])}
    tap.ok(r.status == 200 and info.get("gpt-4o", {}).get("model_info", {}).get(
        "input_cost_per_token") == IN and info["gpt-4o"]["litellm_params"].get(
        "custom_llm_provider") == "fakeai", "GET /model/info: provider and price", info.get("gpt-4o"))


def aliases(srv, prov, chat):
    """A key's aliases and its team's model_aliases name the model the provider is asked for."""
    team = ok_status(srv.admin("POST", "/team/new", body={
        "team_alias": "relay-team", "model_aliases": {"team-model": "gpt-4o"}}), 200, "team")
    key = generate(srv, {"key_alias": "relay-aliases", "team_id": team["team_id"],
                         "aliases": {"house-model": "gpt-4o-mini"}})
    auth = {"Authorization": "Bearer " + key}
    for asked, served in (("house-model", "gpt-4o-mini"), ("team-model", "gpt-4o")):
        r = srv.request("POST", "/v1/chat/completions", headers=auth, body=dict(chat, model=asked))
        seen = prov.seen("/v1/chat/completions")[-1]["body"].get("model")
        tap.ok(r.status == 200 and seen == served, "the alias %s is relayed as %s" % (
            asked, served), {"status": r.status, "provider saw": seen})
    want = USAGE["prompt_tokens"] * 1.5e-07 + USAGE["completion_tokens"] * 6e-07 + COST
    got = spend_of(srv, key)
    tap.ok(got is not None and abs(got - want) < 1e-12,
           "each is priced as the model it is served by (%r, want %r)" % (got, want))
    r = srv.request("GET", "/v1/models", headers=auth)
    ids = [m["id"] for m in (r.json or {}).get("data", [])]
    tap.ok({"house-model", "team-model", "gpt-4o"} <= set(ids), "GET /v1/models lists the "
           "aliases", ids)


def end_users(srv, keys, chat):
    """The body's user is the end user (LiteLLM's customer): charged, and held to its budget."""
    ok_status(srv.admin("POST", "/customer/new", body={"user_id": "relay-customer",
                                                       "max_budget": 1.5 * COST}), 200, "customer")
    valid = {"Authorization": "Bearer " + keys["KW_KEY_VALID"]}
    statuses = [srv.request("POST", "/v1/chat/completions", headers=valid,
                            body=dict(chat, user="relay-customer")) for _ in range(3)]
    tap.ok([r.status for r in statuses] == [200, 200, 400] and "End User=relay-customer" in
           statuses[2].body.decode(), "an end user over its budget is refused (LiteLLM's "
           "_check_end_user_budget, over once spend passes max_budget)", statuses[2])
    info = srv.admin("GET", "/customer/info?end_user_id=relay-customer").json or {}
    tap.ok(abs(info.get("spend", -1) - 2 * COST) < 1e-12, "the end user is charged its calls",
           info)


def held_alike(srv, chat):
    """A key under a budget_id, a blocked end user and an organization over its budget are
    refused by the relay as /key/verify and the authorizer refuse them (one limits engine)."""
    def calls(key, n, **extra):
        auth = {"Authorization": "Bearer " + key}
        return [srv.request("POST", "/v1/chat/completions", headers=auth, body=dict(chat, **extra))
                for _ in range(n)]

    ok_status(srv.admin("POST", "/budget/new", body={"budget_id": "relay-budget",
                                                     "max_budget": 1.5 * COST}), 200, "budget")
    rs = calls(generate(srv, {"key_alias": "relay-budget-id", "budget_id": "relay-budget"}), 3)
    tap.ok([r.status for r in rs] == [200, 200, 400] and
           "Budget has been exceeded!" in rs[2].body.decode(), "a key under a /budget/new "
           "budget_id is refused once its spend passes the budget's max_budget", rs[2])

    ok_status(srv.admin("POST", "/customer/block", body={"user_ids": ["relay-blocked"]}), 200,
              "customer/block")
    key = generate(srv, {"key_alias": "relay-blocked-end-user"})
    blocked, = calls(key, 1, user="relay-blocked")
    free, = calls(key, 1)
    tap.ok(blocked.status == 400 and "END_USER_BLOCKED" in blocked.body.decode() and
           free.status == 200, "a blocked end user (_ENTERPRISE_BlockedUserList) is refused; the "
           "same key without it passes", blocked)

    ok_status(srv.admin("POST", "/organization/new", body={
        "organization_id": "relay-org", "organization_alias": "relay-org",
        "max_budget": 1.5 * COST}), 200, "organization")
    rs = calls(generate(srv, {"key_alias": "relay-org-key", "organization_id": "relay-org"}), 3)
    tap.ok([r.status for r in rs] == [200, 200, 400] and
           "Organization=relay-org" in rs[2].body.decode(), "an organization over its max_budget "
           "(_organization_max_budget_check) is refused for its keys", rs[2])


def provisioned(srv, chat):
    """The provisioning seed's answer: {base_url}/chat/completions works with the api_key."""
    ok_status(srv.admin("POST", "/organization/new", body={
        "organization_id": "relay-prov", "organization_alias": "relay-prov"}), 200, "organization")
    user = ok_status(srv.admin("POST", "/user/new", body={"user_id": "relay-prov-user"}), 200,
                     "user/new")["key"]
    ok_status(srv.admin("POST", "/organization/member_add", body={
        "organization_id": "relay-prov", "member": [{"user_id": "relay-prov-user"}]}), 200,
        "organization/member_add")
    r = srv.request("POST", "/api/v1/org/relay-prov/inference/keys", body={"client_id": "relay-cli"},
                    headers={"Authorization": "Bearer " + user, "User-Agent": "relay-cli/9.0.0"})
    a = ok_status(r, 200, "provision_key")
    path = urllib.parse.urlsplit(a["base_url"]).path.rstrip("/") + "/chat/completions"
    r = srv.request("POST", path, headers={"Authorization": "Bearer " + a["api_key"]}, body=chat)
    tap.ok(path == "/v1/chat/completions" and r.status == 200 and
           (r.json or {}).get("choices", [{}])[0].get("message", {}).get("content") == CONTENT,
           "a provisioned key calls {base_url}/chat/completions through the relay", r)


def prices_file(prov):
    """KEYWARDEN_RELAY_PRICES over the shipped table; KEYWARDEN_RELAY_ALLOW_UNPRICED."""
    path = os.path.join(prov.dir, "prices.json")
    with open(path, "w") as f:
        json.dump({"gpt-4o": {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002,
                              "mode": "chat"}}, f)
    env = {"KEYWARDEN_CA_BUNDLE": prov.ca, "KEYWARDEN_RELAY_PRICES": path,
           "KEYWARDEN_RELAY_ALLOW_UNPRICED": "1"}
    with Server(workers=1, env=env) as srv:
        configure(srv, prov)
        key = generate(srv, {"key_alias": "relay-prices"})
        auth = {"Authorization": "Bearer " + key}
        chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi there"}]}
        r = srv.request("POST", "/v1/chat/completions", headers=auth, body=chat)
        got = spend_of(srv, key)
        tap.ok(r.status == 200 and got is not None and abs(got - (5 * 0.001 + 5 * 0.002)) < 1e-12,
               "KEYWARDEN_RELAY_PRICES: the operator's price wins over the shipped one (%r)" % got)
        r = srv.request("POST", "/v1/chat/completions", headers=auth,
                        body=dict(chat, model="no-price-model"))
        tap.ok(r.status == 200 and abs(spend_of(srv, key) - got) < 1e-12,
               "KEYWARDEN_RELAY_ALLOW_UNPRICED=1: a model with no price is relayed, at no cost", r)


def reservation(body, output_tokens):
    """What a call reserves (fcgi-app/relay.c): a token a quarter of the body's bytes, plus one,
    at the input price, and output_tokens (KEYWARDEN_RELAY_EXPECTED_OUTPUT unless the body caps
    them) at the output price."""
    prompt = len(json.dumps(body, separators=(",", ":"))) // 4 + 1
    return prompt, prompt * IN + output_tokens * OUT


def unmetered(srv, keys, chat):
    """Answers without usage: settled at the reservation, or at the content streamed."""
    key = generate(srv, {"key_alias": "relay-unmetered"})
    body = dict(chat, fake_no_usage=True)
    r = srv.request("POST", "/v1/chat/completions", body=body,
                    headers={"Authorization": "Bearer " + key})
    _, want = reservation(body, 256)
    got = spend_of(srv, key)
    tap.ok(r.status == 200 and got is not None and abs(got - want) < 1e-12,
           "an answer without usage is settled at its reservation (%r, want %r)" % (got, want))
    tap.ok("unmetered answer from provider fakeai" in srv.read_log(),
           "and logged as unmetered")
    key = generate(srv, {"key_alias": "relay-unmetered-stream"})
    body = dict(chat, fake_no_usage=True, stream=True)
    r = srv.request("POST", "/v1/chat/completions", body=body,
                    headers={"Authorization": "Bearer " + key})
    prompt, _ = reservation(body, 0)
    want = prompt * IN + (len(CONTENT) + 3) // 4 * OUT
    got = spend_of(srv, key)
    tap.ok(r.status == 200 and got is not None and abs(got - want) < 1e-12,
           "a stream without a usage chunk is settled at the content streamed, four characters "
           "a token (%r, want %r)" % (got, want))


def failures(srv, prov, keys, chat):
    """Every try failing: 502 once each key was tried again; 504 when the provider is too slow."""
    valid = {"Authorization": "Bearer " + keys["KW_KEY_VALID"]}
    ok_status(srv.admin("POST", "/api/providers", body={
        "provider": "broken", "custom_provider_config": {"base_provider_type": "openai"},
        "network_config": {"base_url": prov.url, "retry_backoff_initial": 100,
                           "retry_backoff_max": 200}}), 200, "broken")
    ok_status(srv.admin("POST", "/api/providers/broken/keys", body={
        "name": "broken-fails", "value": "sk-prov-500-" + secrets.token_hex(8),
        "models": ["gpt-4-turbo"]}), 200, "broken key")
    before = len(prov.seen())
    r = srv.request("POST", "/v1/chat/completions", headers=valid,
                    body=dict(chat, model="gpt-4-turbo"))
    tap.ok(r.status == 502 and (r.json or {}).get("error", {}).get("type") == "upstream_error",
           "every try answered 500: 502 in OpenAI's envelope", r)
    tap.eq(len(prov.seen()) - before, 3, "KEYWARDEN_RELAY_TRIES (3) tries, the one key "
           "tried again after a backoff")
    ok_status(srv.admin("POST", "/api/providers", body={
        "provider": "slow", "custom_provider_config": {"base_provider_type": "openai"},
        "network_config": {"base_url": prov.url, "default_request_timeout_in_seconds": 1,
                           "max_retries": 1, "retry_backoff_initial": 100}}), 200, "slow")
    ok_status(srv.admin("POST", "/api/providers/slow/keys", body={
        "name": "slow-answers", "value": "sk-prov-good-" + secrets.token_hex(8),
        "models": ["o3-mini"]}), 200, "slow key")
    before = len(prov.seen())
    t0 = time.time()
    r = srv.request("POST", "/v1/chat/completions", headers=valid,
                    body=dict(chat, model="o3-mini", fake_delay_ms=3000))
    tap.ok(r.status == 504 and time.time() - t0 < 6, "a provider slower than its "
           "default_request_timeout_in_seconds: 504", r)
    tap.eq(len(prov.seen()) - before, 2, "network_config.max_retries 1: two tries")


def connections(srv, prov, keys, chat):
    """A worker keeps its connection to a provider for the next call, and still verifies TLS."""
    valid = {"Authorization": "Bearer " + keys["KW_KEY_VALID"]}
    calls = 16
    before = len(prov.seen())
    statuses = [srv.request("POST", "/v1/chat/completions", headers=valid, body=chat).status
                for _ in range(calls)]
    peers = {q["peer"] for q in prov.seen()[before:]}
    # behind another server keywarden's processes are that server's (mod_fcgid's), not
    # counted here: fewer connections than calls still shows them kept alive
    bound = len(srv.workers()) if hasattr(srv, "workers") else calls - 1
    tap.ok(statuses == [200] * calls and 1 <= len(peers) <= bound,
           "%d calls one after another reach the provider over %d connections, at most %d "
           "(one a worker): kept alive, not a TCP and TLS handshake each" % (
               calls, len(peers), bound), statuses)
    with Provider() as stranger:    # its certificate is from a CA keywarden does not trust
        ok_status(srv.admin("POST", "/api/providers", body={
            "provider": "stranger", "custom_provider_config": {"base_provider_type": "openai"},
            "network_config": {"base_url": stranger.url, "max_retries": 1,
                               "retry_backoff_initial": 100}}), 200, "stranger")
        ok_status(srv.admin("POST", "/api/providers/stranger/keys", body={
            "name": "stranger", "value": "sk-prov-good-" + secrets.token_hex(8),
            "models": ["gpt-4o"]}), 200, "stranger key")
        r = srv.request("POST", "/v1/chat/completions", headers=valid,
                        body=dict(chat, model="stranger/gpt-4o"))
        tap.ok(r.status == 502 and not stranger.seen(), "a provider whose certificate "
               "KEYWARDEN_CA_BUNDLE does not vouch for: 502, nothing sent to it, with the "
               "connections kept", r)


def concurrency(srv, chat):
    """64 calls at once: the rpm limit admits exactly its number, the budget is not overspent."""
    from concurrent.futures import ThreadPoolExecutor
    rpm_key = generate(srv, {"key_alias": "relay-64-rpm", "rpm_limit": 10})
    budget = 5.5 * COST
    budget_key = generate(srv, {"key_alias": "relay-64-budget", "max_budget": budget})

    def call(key):
        return srv.request("POST", "/v1/chat/completions", body=chat, timeout=60,
                           headers={"Authorization": "Bearer " + key}).status

    into = time.gmtime().tm_sec
    if into > 45:
        time.sleep(61 - into)    # one rpm window for all of them
    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(call, [rpm_key] * 64))
    tap.ok(statuses.count(200) == 10 and statuses.count(429) == 54,
           "64 calls at once, rpm_limit 10: exactly 10 pass", sorted(statuses))
    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(call, [budget_key] * 64))
    spend = spend_of(srv, budget_key)
    tap.ok(spend is not None and abs(spend - statuses.count(200) * COST) < 1e-12 and
           spend < budget + COST and statuses.count(200) >= 1 and
           set(statuses) <= {200, 400}, "64 calls at once against max_budget %g: %d pass, "
           "spend %r is theirs and within one call of the budget" % (
               budget, statuses.count(200), spend), sorted(statuses))


if __name__ == "__main__":    # tests/hosting_relay.t runs the suite through other servers
    tap.run(main)
