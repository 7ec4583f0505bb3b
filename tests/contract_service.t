#!/usr/bin/python3
"""contract_service.t: every operation in the spec against its documented responses, through the real lighttpd."""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import contract  # noqa: E402
from kwserver import Server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    spec = contract.load_spec()
    examples = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "fixtures", "contract", "*.json"))):
        with open(path) as f:
            for ex in json.load(f):
                examples.setdefault(ex["operationId"], []).append(ex)
    ops = contract.operations(spec)
    for op_id in ops:
        tap.ok(op_id in examples, "fixtures/contract has an example for %s" % op_id)

    with Server() as srv:
        served = srv.request("GET", "/openapi.json")
        tap.eq(served.json, spec, "GET /openapi.json serves spec/openapi.yaml")
        for op_id, exs in examples.items():
            for ex in exs:
                req = ex["request"]
                headers = dict(req.get("headers", {}))
                if req.get("auth") == "master":
                    headers["Authorization"] = "Bearer " + srv.master_key
                r = srv.request(req["method"], req["path"], body=req.get("body"),
                                headers=headers)
                name = "%s: %s %s -> %d" % (op_id, req["method"], req["path"], ex["status"])
                tap.eq(r.status, ex["status"], name)
                problems = contract.check_response(spec, ops[op_id], r)
                tap.ok(not problems, name + " matches its documented response", problems)


tap.run(main)
