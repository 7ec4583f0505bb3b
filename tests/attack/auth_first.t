#!/usr/bin/python3
"""auth_first.t: the credential is checked before anything the request says. Every operation of
spec/openapi.yaml whose `security` asks for a credential answers 401, in its face's documented
envelope, to a request without a key, with an unknown one, a blocked one or an expired one,
however malformed its body, query and path are: nobody without a key learns the schema from
422s. LiteLLM's user_api_key_auth dependency runs before the request model is parsed (FastAPI
solves an endpoint's dependencies first); Bifrost's and Venice's APIs authenticate first too.
The public operations (an empty `security`) still answer without a key."""
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import tap  # noqa: E402
import attack  # noqa: E402
import contract  # noqa: E402
from kwserver import Server  # noqa: E402

METRICS_TOKEN = "metrics-token-0123456789abcdef"
BAD_QUERY = "?page=zero&size=-5&key=not%20a%20key&no_such_parameter=1"
BAD_BODY = b'{"max_budget": "a lot", "unterminated": [1, 2'


def needs_credential(spec, op):
    sec = op.get("security", spec.get("security", []))
    return len(sec) > 0 and all(len(r) > 0 for r in sec)


def concrete(path):
    """The path with every {parameter} filled by a value no schema allows."""
    return re.sub(r"\{[^}]+\}", "not%20a%20valid%20value!", path)


def send(srv, method, path, op, headers):
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers)
    raw = BAD_BODY if "requestBody" in op else None
    return srv.request(method, concrete(path) + BAD_QUERY, raw=raw, headers=hdrs)


def walk(srv, spec, ops, label, headers):
    for op_id, (method, path, op) in sorted(ops.items()):
        if not needs_credential(spec, op):
            continue
        r = send(srv, method, path, op, headers)
        problems = contract.check_response(spec, (method, path, op), r) if r.status == 401 else []
        tap.ok(r.status == 401 and not problems,
               "%s: %s %s answers 401 in its face's envelope, before its body and query "
               "are read (LiteLLM's user_api_key_auth runs first)" % (label, method, path),
               "%r %s" % (r, problems))


def main():
    spec = contract.load_spec()
    ops = contract.operations(spec)
    with Server(workers=2, env={"KEYWARDEN_METRICS_TOKEN": METRICS_TOKEN}) as srv:
        m = attack.master(srv)
        blocked = m("POST", "/key/generate", {"key_alias": "to-block"}).json
        m("POST", "/key/block", {"key": blocked["key"]})
        expiring = m("POST", "/key/generate", {"duration": "1s"}).json

        walk(srv, spec, ops, "no credential", {})
        walk(srv, spec, ops, "an unknown key", {"Authorization": "Bearer sk-no-such-key-000000"})
        walk(srv, spec, ops, "an unknown x-api-key", {"x-api-key": "sk-no-such-key-000000"})
        walk(srv, spec, ops, "a blocked key", {"Authorization": "Bearer " + blocked["key"]})
        time.sleep(1.5)
        walk(srv, spec, ops, "an expired key", {"Authorization": "Bearer " + expiring["key"]})

        for op_id, (method, path, op) in sorted(ops.items()):
            if needs_credential(spec, op):
                continue
            r = srv.request(method, path)
            tap.ok(r.status == 200, "public: %s %s answers without a key" % (method, path),
                   repr(r))
        r = srv.request("GET", "/metrics", headers={"Authorization": "Bearer " + METRICS_TOKEN})
        tap.ok(r.status == 200, "the metrics token still reads /metrics: it is checked first "
               "as /metrics's own credential", repr(r))
        r = srv.request("POST", "/key/generate", raw=BAD_BODY,
                        headers={"Authorization": "Bearer " + srv.master_key,
                                 "Content-Type": "application/json"})
        tap.ok(r.status == 400, "with a valid key the malformed body is still 400", repr(r))
        r = srv.request("GET", "/key/list?size=-5",
                        headers={"Authorization": "Bearer " + srv.master_key})
        tap.ok(r.status == 422 and r.json["error"]["param"] in ("size", "query.size"),
               "with a valid key the bad query is still 422 naming the field", repr(r))
    tap.done()


tap.run(main)
