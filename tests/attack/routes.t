#!/usr/bin/python3
"""routes.t: a key's allowed_routes through the real lighttpd gateway: the authorizer matches the
path lighttpd hands on, not the one sent, and refuses (400, LiteLLM's envelope) paths with dot
segments or encoded separators instead of guessing how a server normalises them; and a key's
allowed_routes bound keywarden's own management API too, as LiteLLM's
RouteChecks.is_virtual_key_allowed_to_call_route (litellm/proxy/auth/route_checks.py) bounds every
route for every role."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
import tap  # noqa: E402
import attack  # noqa: E402
from upstream import gateway  # noqa: E402

CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi there"}]}


def litellm_error(r, status, name):
    e = (r.json or {}).get("error") if isinstance(r.json, dict) else None
    tap.ok(r.status == status and isinstance(e, dict) and e.get("code") == str(status) and
           "message" in e and "type" in e, "%s: %d in LiteLLM's envelope" % (name, status), repr(r))
    return e or {}


def routes_through_gateway(srv, up):
    m = attack.master(srv)
    r = m("POST", "/key/generate", {"key_alias": "chat-only", "allowed_routes": ["/v1/chat/*"]})
    if r.status != 200:
        tap.bail("key/generate: %r" % r)
    chat = attack.Caller(srv, r.json["key"])
    r = m("POST", "/key/generate", {"key_alias": "any-route"})
    anyroute = attack.Caller(srv, r.json["key"])
    hdrs = {"x-model": "gpt-4"}

    r = chat("POST", "/v1/chat/completions", CHAT, hdrs)
    tap.eq(r.status, 200, "a /v1/chat/* key completes at /v1/chat/completions")
    r = chat("POST", "/v1/embeddings", CHAT, hdrs)
    e = litellm_error(r, 403, "the same key at /v1/embeddings")
    tap.ok("ROUTE_NOT_ALLOWED" in e.get("message", ""), "ROUTE_NOT_ALLOWED", e)

    seen = len(up.requests)
    for path, what in (
            ("/v1/chat/../embeddings", "a dot-dot segment"),
            ("/v1/chat/./../embeddings", "dot segments"),
            ("/v1/chat/%2e%2e/embeddings", "a dot-dot segment as %2e%2e"),
            ("/v1/chat/%2E./embeddings", "a dot-dot segment as %2E."),
            ("/v1/chat/.%2e/embeddings", "a dot-dot segment as .%2e"),
            ("/v1/chat/%252e%252e/embeddings", "a doubly encoded dot-dot segment"),
            ("/v1/chat/./completions", "a dot segment"),
            ("/v1/chat/completions/..", "a trailing dot-dot segment"),
            ("/v1/chat/x%2f..%2fembeddings", "encoded slashes"),
            ("/v1/chat/x%2F..%2Fembeddings", "encoded slashes, upper case"),
            ("/v1/chat%5c..%5cembeddings", "encoded backslashes"),
            ("/v1/chat/%zz", "a malformed escape")):
        r = chat("POST", path, CHAT, hdrs)
        e = litellm_error(r, 400, "%s (%s)" % (what, path))
        tap.eq(e.get("param"), "path", "%s: param names the path" % what)
    r = anyroute("POST", "/v1/chat/../embeddings", CHAT, hdrs)
    litellm_error(r, 400, "a key without allowed_routes: a dot-dot path is refused too")
    r = srv.request("POST", "/v1/chat/../embeddings", CHAT)
    litellm_error(r, 400, "a dot-dot path without any key")
    tap.eq(up.requests[seen:], [], "none of them reached the model server")

    # the path lighttpd hands on is the decoded one: that is what allowed_routes is matched against
    r = chat("POST", "/v1/%63hat/completions", CHAT, hdrs)
    tap.eq(r.status, 200, "an encoded letter (/v1/%63hat/completions) is matched as "
           "/v1/chat/completions, the path the model server gets")
    tap.eq(up.requests[-1][1] if up.requests else None, "/v1/chat/completions",
           "and the model server got /v1/chat/completions")
    r = chat("POST", "/v1/%65mbeddings", CHAT, hdrs)
    litellm_error(r, 403, "an encoded letter outside the key's routes (/v1/%65mbeddings)")

    # /key/verify's route is judged the same way
    r = m("POST", "/key/verify", {"key": chat.key, "route": "/v1/chat/../embeddings",
                                  "dry_run": True})
    tap.ok(r.status == 200 and (r.json or {}).get("code") == "ROUTE_NOT_ALLOWED",
           "/key/verify: a route with a dot-dot segment is ROUTE_NOT_ALLOWED", repr(r))
    r = m("POST", "/key/verify", {"key": chat.key, "route": "/v1/chat/completions",
                                  "dry_run": True})
    tap.ok(r.status == 200 and (r.json or {}).get("code") == "VALID",
           "/key/verify: /v1/chat/completions is VALID", repr(r))


def management(srv):
    m = attack.master(srv)
    alice = attack.user(srv, "routes-alice")

    def key(body):
        body = dict(body, user_id="routes-alice")
        r = m("POST", "/key/generate", body)
        if r.status != 200:
            tap.bail("key/generate %s: %r" % (body, r))
        return attack.Caller(srv, r.json["key"], "routes-alice")

    chat = key({"allowed_routes": ["/chat/completions"]})
    r = chat("POST", "/key/generate", {"user_id": "routes-alice"})
    litellm_error(r, 403, "is_virtual_key_allowed_to_call_route: a key limited to "
                  "/chat/completions calls /key/generate")
    r = chat("GET", "/key/info")
    litellm_error(r, 403, "the same key reads /key/info")
    r = chat("GET", "/key/list")
    litellm_error(r, 403, "the same key lists keys")
    r = chat("POST", "/key/update", {"key": chat.key, "allowed_routes": []})
    litellm_error(r, 403, "the same key cannot lift its own allowed_routes")
    r = chat("GET", "/api/v1/api_keys")
    tap.ok(r.status == 401 and isinstance((r.json or {}).get("error"), str),
           "the same key on the Venice face: 401 in Venice's envelope, as Venice answers every "
           "credential that may not manage keys", repr(r))
    r = chat("GET", "/api/providers")
    tap.ok(r.status == 403 and (r.json or {}).get("is_bifrost_error") is False,
           "the same key on the Bifrost face: 403 in Bifrost's envelope", repr(r))
    r = chat("POST", "/api/v1/org/some-org/inference/keys", {"client_id": "c1"})
    tap.ok(r.status == 403, "the same key on the provisioning face: 403", repr(r))

    info = key({"allowed_routes": ["/chat/completions", "/key/info"]})
    r = info("GET", "/key/info")
    tap.eq(r.status, 200, "a key whose allowed_routes name /key/info reads it")
    r = info("POST", "/key/generate", {"user_id": "routes-alice"})
    litellm_error(r, 403, "and still may not call /key/generate")
    r = info("GET", "/key/%69nfo")
    tap.eq(r.status, 200, "/key/%69nfo is /key/info")

    keys = key({"allowed_routes": ["/key/*"]})
    r = keys("POST", "/key/generate", {"user_id": "routes-alice"})
    tap.eq(r.status, 200, "a key allowed /key/* generates keys")
    r = keys("GET", "/team/list")
    litellm_error(r, 403, "and may not call /team/list")

    llm = key({"allowed_routes": ["llm_api_routes"]})
    r = llm("POST", "/key/generate", {"user_id": "routes-alice"})
    litellm_error(r, 403, "a key allowed llm_api_routes calls /key/generate")

    r = alice("POST", "/key/generate", {"user_id": "routes-alice"})
    tap.eq(r.status, 200, "a key without allowed_routes still manages its own keys")

    r = m("POST", "/key/generate", {"allowed_routes": ["/v1/*"],
                                    "permissions": {"verify_keys": True}})
    svc = attack.Caller(srv, r.json["key"])
    r = svc("POST", "/key/verify", {"key": chat.key, "dry_run": True})
    litellm_error(r, 403, "a service key limited to /v1/* calls /key/verify")
    r = m("POST", "/key/generate", {"allowed_routes": ["/v1/*", "/key/verify"],
                                    "permissions": {"verify_keys": True}})
    svc = attack.Caller(srv, r.json["key"])
    r = svc("POST", "/key/verify", {"key": chat.key, "dry_run": True})
    tap.eq(r.status, 200, "a service key allowed /key/verify verifies")


def main():
    with gateway(0.001) as (srv, up):
        routes_through_gateway(srv, up)
        management(srv)


tap.run(main)
