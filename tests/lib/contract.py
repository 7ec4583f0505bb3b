"""contract.py: checks a response against what spec/openapi.yaml documents for it."""
import os

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
METHODS = ("get", "put", "post", "delete", "patch")


def load_spec():
    with open(os.path.join(ROOT, "spec", "openapi.yaml")) as f:
        return yaml.safe_load(f)


def operations(spec):
    """operationId -> (method, path, operation object)."""
    ops = {}
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                ops[item[method]["operationId"]] = (method.upper(), path, item[method])
    return ops


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def check_response(spec, op, response):
    """Returns a list of problems (empty when the response is as documented)."""
    _, _, operation = op
    documented = operation.get("responses", {})
    doc = documented.get(str(response.status)) or documented.get(str(response.status)[0] + "XX")
    if doc is None:
        return ["status %d is not documented for %s" % (response.status, operation["operationId"])]
    doc = resolve(spec, doc)
    content = doc.get("content")
    if not content:
        return []
    ctype = response.headers.get("content-type", "").split(";")[0].strip()
    if ctype not in content:
        return ["content-type %r not documented (%s)" % (ctype, ", ".join(content))]
    schema = content[ctype].get("schema")
    if schema is None:
        return []
    if response.json is None:
        return ["body is not JSON: %r" % response.body[:200]]
    resolver = jsonschema.RefResolver(base_uri="", referrer=spec)
    validator = jsonschema.Draft202012Validator(schema, resolver=resolver)
    return ["%s: %s" % ("/".join(map(str, e.absolute_path)) or "(body)", e.message)
            for e in validator.iter_errors(response.json)]
