#!/usr/bin/python3
"""gateway.t: the gateway recipe end to end: lighttpd with keywarden as its own API and as the
FastCGI authorizer in front of an OpenAI-compatible model server (tests/lib/upstream.py), used
by the official OpenAI client (tests/e2e/gateway.mjs)."""
import json
import math
import os
import secrets
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from e2e import npm_ci  # noqa: E402
from upstream import gateway  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
E2E = os.path.join(ROOT, "tests", "e2e")
PRICE = 0.001          # per token, what the model server reports as cost
BUDGET = 0.015         # a completion of "hi there" is 10 tokens: 0.01 each
CONTENT = "You said: hi there"
USAGE = {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}


def generate(srv, body):
    r = srv.admin("POST", "/key/generate", body=body)
    if r.status != 200:
        tap.bail("POST /key/generate %s: %r" % (body, r))
    return r.json["key"]


def refused(steps, name, status, cls):
    s = steps.get(name, {})
    e = s.get("error") or {}
    tap.ok(not s.get("ok", True) and e.get("status") == status and e.get("class") == cls,
           "%s: the client raises %s (%d)" % (name, cls, status), s)
    body = e.get("body") or {}
    tap.ok(body.get("code") == str(status) and "message" in body and "type" in body,
           "%s: the error is LiteLLM's envelope" % name, body)
    return e


def completed(steps, name):
    s = steps.get(name, {})
    tap.ok(s.get("ok") and s.get("content") == CONTENT and s.get("usage") == USAGE,
           "%s: the completion's content and usage arrive" % name, s)
    return s


def main():
    if not npm_ci("openai/package.json"):
        return
    with gateway(PRICE) as (srv, up):
        run(srv, up)


def run(srv, up):
    r = subprocess.run(["lighttpd", "-tt", "-f", srv.conf], capture_output=True, text=True)
    tap.ok(r.returncode == 0 and not r.stderr.strip(), "the rendered gateway config is accepted "
           "by lighttpd -tt", r.stdout + r.stderr)
    r = srv.request("GET", "/health")
    tap.eq(r.status, 200, "keywarden's own API is served beside the gateway")
    r = srv.request("GET", "/v1/models")
    tap.eq(r.status, 401, "a gateway route without a key is refused by the authorizer")
    tap.eq(len(up.requests), 0, "and never reaches the model server")

    keys = {
        "KW_KEY_VALID": generate(srv, {"key_alias": "gw-valid"}),
        "KW_KEY_BLOCK": generate(srv, {"key_alias": "gw-block"}),
        "KW_KEY_BUDGET": generate(srv, {"key_alias": "gw-budget", "max_budget": BUDGET}),
        "KW_KEY_RPM": generate(srv, {"key_alias": "gw-rpm", "rpm_limit": 2}),
        "KW_KEY_MODELS": generate(srv, {"key_alias": "gw-models", "models": ["gpt-4"]}),
        "KW_KEY_RETRY": generate(srv, {"key_alias": "gw-retry", "max_parallel_requests": 1}),
        "KW_KEY_PARALLEL": generate(srv, {"key_alias": "gw-parallel",
                                          "max_parallel_requests": 1}),
        "KW_KEY_RPM10": generate(srv, {"key_alias": "gw-rpm10", "rpm_limit": 10}),
        "KW_KEY_UNKNOWN": "sk-" + secrets.token_urlsafe(16),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(keys)
    env.update({"GW_BASE": "http://127.0.0.1:%d" % srv.port, "KW_MASTER_KEY": srv.master_key})
    r = subprocess.run(["node", os.path.join(E2E, "gateway.mjs")], env=env, cwd=E2E,
                       capture_output=True, text=True, timeout=120)
    lines = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    steps = {ln["step"]: ln for ln in lines if "step" in ln}
    if not tap.ok(r.returncode == 0 and lines and lines[-1].get("done"),
                  "gateway.mjs runs to its end", r.stdout[-3000:] + r.stderr[-3000:]):
        return
    tap.diag("steps: " + ", ".join("%s %s" % (s["step"], "ok" if s["ok"] else
                                              s["error"]["status"]) for s in steps.values()))

    # a valid key
    s = completed(steps, "valid")
    tap.ok(s.get("request_id"), "the x-request-id the client sent comes back", s)
    tap.ok("gpt-4" in (steps.get("valid models.list") or {}).get("ids", []),
           "GET /v1/models through the gateway", steps.get("valid models.list"))
    completed(steps, "valid stream")
    completed(steps, "valid azure")
    e = (steps.get("no x-model") or {}).get("error") or {}
    tap.ok(e.get("status") == 400 and e.get("class") == "BadRequestError",
           "a /v1/ completion without x-model passes the authorizer and the model server "
           "refuses it (400)", steps.get("no x-model"))

    tap.ok((steps.get("request id: first") or {}).get("ok"), "a completion with x-request-id",
           steps.get("request id: first"))
    e = refused(steps, "request id: again", 400, "BadRequestError")
    tap.ok("DUPLICATE_REQUEST" in json.dumps(e), "the same x-request-id again is refused: "
           "it could not be told apart in the usage reports", e)

    # the gateway traps an OpenAI client falls into
    completed(steps, "retry after upstream failure")
    retry = [b for b, _, _ in up.reports if b["key"] == keys["KW_KEY_RETRY"]]
    tap.ok(len(retry) == 2 and retry[0]["total_tokens"] == 0 and
           retry[0].get("request_id") == retry[1].get("request_id"),
           "the failed attempt released its slot (a report of nothing used) and the client's "
           "retry with the same x-request-id was let through and charged once", retry)
    info = (srv.admin("GET", "/key/info?key=" + keys["KW_KEY_RETRY"]).json or {}).get("info")
    tap.ok(info and abs(info.get("spend", -1) - USAGE["total_tokens"] * PRICE) < 1e-9,
           "the retried request is charged once", info)
    tap.ok((steps.get("parallel: in flight") or {}).get("ok"), "a request holds the one slot",
           steps.get("parallel: in flight"))
    e = refused(steps, "parallel: refused", 429, "RateLimitError")
    ra = (e.get("headers") or {}).get("retry-after", "")
    # PARALLEL_RETRY_MAX in limits.c; the lease itself would say up to 60 s (600 s named)
    tap.ok(ra.isdigit() and 1 <= int(ra) <= 5, "a parallel slot's Retry-After is the "
           "expected wait, capped at 5 s, not the lease's length", e.get("headers"))
    h = (steps.get("rate headers on 200") or {}).get("headers") or {}
    tap.diag("200 headers through lighttpd: %s" % sorted(k for k in h if "ratelimit" in k))

    # keys that are refused
    e = refused(steps, "unknown key", 401, "AuthenticationError")
    tap.ok(keys["KW_KEY_UNKNOWN"] not in json.dumps(e), "the error does not echo the key", e)
    refused(steps, "no key", 401, "AuthenticationError")

    completed(steps, "block: before")
    b = steps.get("block: POST /key/block") or {}
    tap.ok(b.get("status") == 200 and b.get("blocked") is True, "POST /key/block", b)
    refused(steps, "block: after", 401, "AuthenticationError")

    completed(steps, "models: allowed")
    # LiteLLM's _can_object_call_model answers a model outside the key's list 401
    refused(steps, "models: not allowed", 401, "AuthenticationError")
    refused(steps, "models: not allowed, azure", 401, "AuthenticationError")

    # the budget: spent by the model server's reports, then refused
    want = math.ceil(BUDGET / (USAGE["total_tokens"] * PRICE))
    budget = [steps[k] for k in sorted(steps) if k.startswith("budget ")]
    tap.ok(len(budget) == want + 1 and all(s["ok"] for s in budget[:want]),
           "max_budget %g: %d completions pass" % (BUDGET, want), budget)
    # 400 budget_exceeded, as LiteLLM's proxy answers a BudgetExceededError; the openai
    # client raises BadRequestError and, told x-should-retry: false, does not retry
    e = refused({"budget": budget[-1]}, "budget", 400, "BadRequestError")
    body = e.get("body") or {}
    tap.ok(body.get("type") == "budget_exceeded" and
           str(body.get("message", "")).startswith("Budget has been exceeded! Current cost: "),
           "budget: LiteLLM's budget_exceeded error (BudgetExceededError's message)", body)
    info = srv.admin("GET", "/key/info?key=" + keys["KW_KEY_BUDGET"]).json or {}
    spend = (info.get("info") or {}).get("spend")
    tap.ok(spend is not None and abs(spend - want * USAGE["total_tokens"] * PRICE) < 1e-9,
           "the key's spend is what the model server reported", info)
    tap.diag("budget 400 headers: %s" % e.get("headers"))

    # rpm_limit 2
    for i in (1, 2):
        completed(steps, "rpm %d" % i)
    e = refused(steps, "rpm 3", 429, "RateLimitError")
    h = e.get("headers") or {}
    ra = h.get("retry-after", "")
    tap.ok(ra.isdigit() and 1 <= int(ra) <= 60, "the 429 has retry-after, seconds to the "
           "minute's end", h)
    tap.ok(h.get("x-ratelimit-limit-requests") == "2" and
           h.get("x-ratelimit-remaining-requests") == "0" and
           "x-ratelimit-reset-requests" in h, "the 429 has x-ratelimit-*-requests", h)

    # what the model server saw and reported
    passed = [s for s in steps.values() if s.get("ok") and "content" in s]
    posts = [q for q in up.requests if q[0] == "POST"]
    tap.eq(len(posts), len(passed) + 2, "refused requests never reach the model server "
           "(the completions that passed, the one without x-model and the failed attempt did)")
    tap.ok(all(q[2].get("x-request-id") for q in posts if "x-model" in q[2]),
           "x-request-id is forwarded to the model server")
    tap.ok(not any(k.lower().startswith("variable-") or k.startswith("kw-")
                   for q in posts for k in q[2]),
           "the authorizer's Variable-KW-* answers are not sent to the model server",
           [q[2] for q in posts])
    reports = [r for r in up.reports if r[0]["total_tokens"] > 0]
    tap.eq(len(reports), len(passed), "one usage report per completion")
    tap.ok(all(st == 200 and isinstance(a, dict) and a.get("recorded") is True
               for _, st, a in reports),
           "every POST /key/usage is recorded", reports)
    tap.ok(all(b.get("request_id") for b, _, _ in reports), "each report names its request_id",
           [b for b, _, _ in reports])
    valid = (srv.admin("GET", "/key/info?key=" + keys["KW_KEY_VALID"]).json or {}).get("info")
    n = sum(1 for b, _, _ in reports if b["key"] == keys["KW_KEY_VALID"])
    tap.ok(valid and abs(valid.get("spend", -1) - n * USAGE["total_tokens"] * PRICE) < 1e-9,
           "the valid key's spend is its %d completions' cost" % n, valid)
    log = srv.read_log()
    tap.ok(not any(k in log for k in keys.values()), "no key in the server log")


tap.run(main)
