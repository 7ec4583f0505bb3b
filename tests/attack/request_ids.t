#!/usr/bin/python3
"""request_ids.t: every request the authorizer lets through can be settled, and each request id
is its own receipt and lease.

A request id the service could not take in /key/usage (too long, not UTF-8) must be refused by
the authorizer before the request passes, or the request is served and never charged.  The
limit is one, the spec's: /key/verify's request_id, /key/usage's and the authorizer's
x-request-id.  Receipts and leases are keyed by a digest of the whole id, so ids that share a
long beginning never fold into one.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "lib"))
import tap  # noqa: E402
from attack import master  # noqa: E402
from upstream import gateway  # noqa: E402

PRICE = 0.001
CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "hi there"}]}


def spec_limits(srv):
    """maxLength of request_id in /key/verify's and /key/usage's bodies, from GET /openapi.json."""
    spec = srv.request("GET", "/openapi.json").json
    schemas = spec["components"]["schemas"]

    def resolve(node):
        while "$ref" in node:
            node = schemas[node["$ref"].rsplit("/", 1)[1]]
        return node
    return (resolve(schemas["VerifyKeyRequest"]["properties"]["request_id"]).get("maxLength"),
            resolve(schemas["KeyUsageRequest"]["properties"]["request_id"]).get("maxLength"))


def spend(m, key):
    r = m("GET", "/key/info?key=" + key)
    return (r.json or {}).get("info", {}).get("spend")


def chat(srv, key, request_id):
    return srv.request("POST", "/v1/chat/completions", body=CHAT,
                       headers={"Authorization": "Bearer " + key, "x-model": "gpt-4",
                                "x-request-id": request_id})


def authorizer(srv, up, m, limit):
    key = m("POST", "/key/generate", {"models": ["gpt-4"]}).json["key"]
    served = len(up.requests)
    r = chat(srv, key, "r" * (limit + 1))
    e = (r.json or {}).get("error") or {}
    tap.ok(r.status == 400 and e.get("param") == "x-request-id" and e.get("code") == "400" and
           "type" in e and len(up.requests) == served,
           "authorizer: an x-request-id of %d characters is a 400 in LiteLLM's envelope naming "
           "x-request-id, and the upstream never sees the request" % (limit + 1), r)
    r = chat(srv, key, b"bad-\xff-id")
    e = (r.json or {}).get("error") or {}
    tap.ok(r.status == 400 and e.get("param") == "x-request-id" and len(up.requests) == served,
           "authorizer: an x-request-id that is not UTF-8 (no /key/usage could name it) is a 400",
           r)
    key = m("POST", "/key/generate", {"models": ["gpt-4"]}).json["key"]
    r = chat(srv, key, "r" * limit)
    tap.ok(r.status == 200 and abs((spend(m, key) or 0) - 10 * PRICE) < 1e-9 and
           up.reports and up.reports[-1][1] == 200,
           "authorizer: an x-request-id of exactly %d characters passes and its usage is "
           "counted" % limit, [r, up.reports[-1:]])


def one_limit(m, limit):
    key = m("POST", "/key/generate", {}).json["key"]
    over = "v" * (limit + 1)
    r = m("POST", "/key/verify", {"key": key, "request_id": over})
    tap.ok(r.status == 422 and (r.json or {}).get("error", {}).get("param") == "request_id",
           "/key/verify refuses a request_id one past the limit", r)
    r = m("POST", "/key/usage", {"key": key, "request_id": over, "cost": 1})
    tap.ok(r.status == 422 and (r.json or {}).get("error", {}).get("param") == "request_id",
           "/key/usage refuses it too", r)
    wide = "\u00e4" * limit     # the limit counts characters: 2 bytes each here
    r = m("POST", "/key/verify", {"key": key, "request_id": wide})
    tap.ok(r.status == 200 and (r.json or {}).get("request_id") == wide,
           "/key/verify takes %d two-byte characters and answers the id whole" % limit, r)


def receipts(m, limit):
    key = m("POST", "/key/generate", {}).json["key"]
    common = "\u00e4" * (limit - 8)   # 240 bytes in common, longer than any name cut
    ids = [common + "%08d" % i for i in range(30)]
    answers = [m("POST", "/key/usage", {"key": key, "request_id": rid, "cost": 0.01})
               for rid in ids]
    recorded = sum(1 for r in answers if r.status == 200 and r.json.get("recorded"))
    tap.ok(recorded == 30 and abs((spend(m, key) or 0) - 0.30) < 1e-9,
           "30 usage reports with distinct long ids sharing their beginning are 30 receipts",
           {"recorded": recorded, "spend": spend(m, key)})
    r = m("POST", "/key/usage", {"key": key, "request_id": ids[7], "cost": 0.01})
    tap.ok(r.status == 200 and r.json.get("duplicate") is True and
           abs((spend(m, key) or 0) - 0.30) < 1e-9,
           "a retry of one of them is still counted once", r)


def leases(m, limit):
    key = m("POST", "/key/generate", {"max_parallel_requests": 1}).json["key"]
    common = "\u00e4" * (limit - 8)
    first, second = common + "first---", common + "second--"
    r = m("POST", "/key/verify", {"key": key, "request_id": first})
    tap.ok(r.status == 200 and r.json.get("code") == "VALID" and
           r.json.get("request_id") == first,
           "a long multi-byte request id takes the key's one parallel slot, named whole", r)
    r = m("POST", "/key/verify", {"key": key, "request_id": second})
    tap.ok(r.status == 200 and r.json.get("code") == "RATE_LIMITED",
           "a second id sharing its beginning is another request: no slot left", r)
    r = m("POST", "/key/usage", {"key": key, "request_id": first, "cost": 0})
    tap.ok(r.status == 200 and r.json.get("recorded"), "the first request's usage", r)
    r = m("POST", "/key/verify", {"key": key, "request_id": second})
    tap.ok(r.status == 200 and r.json.get("code") == "VALID",
           "its usage settled its lease: the slot is free again", r)


def main():
    with gateway(PRICE) as (srv, up):
        m = master(srv)
        vl, ul = spec_limits(srv)
        tap.ok(vl is not None and vl == ul,
               "the spec gives /key/verify's and /key/usage's request_id one limit",
               [vl, ul])
        limit = vl or 128
        authorizer(srv, up, m, limit)
        one_limit(m, limit)
        receipts(m, limit)
        leases(m, limit)


tap.run(main)
