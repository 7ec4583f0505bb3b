#!/usr/bin/python3
"""contract_service.t: every operation in the spec against its documented responses, through the real lighttpd.

An example in fixtures/contract/*.json is {operationId, status, request{method,
path, auth, body, headers}, setup?}.  auth "master" sends the master key;
"setup" is a list of requests run first, and "{{N.field}}" anywhere in the
request (path, body, headers, auth) becomes field of setup answer N (a dotted
path reaches into objects: "{{0.data.id}}"), so an
example can name a key, team or user it made."""
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import contract  # noqa: E402
from kwserver import Server  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLACEHOLDER = re.compile(r"\{\{(\d+)\.([\w.]+)\}\}")


def dig(answer, path):
    """answer's field at a dotted path: "data.id" is answer["data"]["id"]."""
    for name in path.split("."):
        answer = answer[name]
    return answer


def substitute(node, answers):
    """node with every {{N.field}} replaced by answers[N][field]."""
    if isinstance(node, str):
        return PLACEHOLDER.sub(lambda m: str(dig(answers[int(m.group(1))], m.group(2))), node)
    if isinstance(node, list):
        return [substitute(v, answers) for v in node]
    if isinstance(node, dict):
        return {k: substitute(v, answers) for k, v in node.items()}
    return node


def send(srv, req, answers):
    req = substitute(req, answers)
    headers = dict(req.get("headers", {}))
    if req.get("auth") == "master":
        headers["Authorization"] = "Bearer " + srv.master_key
    elif req.get("auth"):
        headers["Authorization"] = "Bearer " + req["auth"]
    return req, srv.request(req["method"], req["path"], body=req.get("body"), headers=headers)


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
                answers = []
                for step in ex.get("setup", []):
                    _, a = send(srv, step, answers)
                    answers.append(a.json if isinstance(a.json, dict) else {})
                req, r = send(srv, ex["request"], answers)
                name = "%s: %s %s -> %d" % (op_id, req["method"], req["path"], ex["status"])
                tap.eq(r.status, ex["status"], name)
                problems = contract.check_response(spec, ops[op_id], r)
                tap.ok(not problems, name + " matches its documented response", problems)


tap.run(main)
