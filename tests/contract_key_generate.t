#!/usr/bin/python3
"""contract_key_generate.t: POST /key/generate through lighttpd, and the body rules every operation shares (413/415/400/422)."""
import glob
import hashlib
import os
import re
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import Server  # noqa: E402


def error_of(r, status, name, param=None):
    tap.eq(r.status, status, name + ": %d" % status)
    e = r.json.get("error") if isinstance(r.json, dict) else None
    tap.ok(isinstance(e, dict) and e.get("code") == str(status), name + ": LiteLLM envelope",
           r.body)
    if param is not None:
        tap.eq((e or {}).get("param"), param, name + ": names the field")
    return e or {}


def generate(srv, body, **kw):
    return srv.admin("POST", "/key/generate", body=body, **kw)


def main():
    with Server() as srv:
        r = generate(srv, {"key_alias": "first", "models": ["gpt-4"], "max_budget": 10})
        tap.eq(r.status, 200, "generate answers 200")
        k = r.json or {}
        tap.ok(re.fullmatch(r"sk-[A-Za-z0-9_-]{22}", k.get("key", "")),
               "key is sk- and 22 URL-safe base64 characters", k.get("key_name"))
        digest = hashlib.sha256(k.get("key", "").encode()).hexdigest()
        tap.eq(k.get("token"), digest, "token is the key's SHA-256")
        tap.eq(k.get("token_id"), digest, "token_id too")
        tap.eq(k.get("key_name"), "sk-..." + k.get("key", "")[-4:], "key_name shows the last 4")
        tap.ok(k.get("models") == ["gpt-4"] and k.get("max_budget") == 10 and
               k.get("spend") == 0, "the stored fields come back", k)

        raw = b"".join(open(p, "rb").read() for p in glob.glob(srv.data_dir + "/*.db"))
        raw += b"".join(open(p, "rb").read() for p in glob.glob(srv.data_dir + "/log.*"))
        tap.ok(k["key"].encode() not in raw, "the plaintext key is in no store or log file")
        tap.ok(digest.encode() in raw, "its hash is")

        r = generate(srv, {"key": "sk-my-own-key-1234", "duration": "1h"})
        tap.ok(r.status == 200 and r.json["key"] == "sk-my-own-key-1234" and r.json["expires"],
               "a key of the caller's choosing, with duration setting expires", r.body)
        error_of(generate(srv, {"key": "sk-my-own-key-1234"}), 400, "the same key twice", "key")
        error_of(generate(srv, {"key": "pk-not-ours-12345"}), 400,
                 "a key without sk- (_common_key_generation_helper)", "key")
        error_of(generate(srv, {"key_alias": "first"}), 400, "a duplicate key_alias", "key_alias")
        error_of(generate(srv, {"duration": "30x"}), 400, "a bad duration", "duration")
        error_of(generate(srv, {"duration": "soon"}), 400, "a duration without a number",
                 "duration")
        error_of(generate(srv, {"max_budget": -5}), 400,
                 "a negative budget (generate_key_fn)", "max_budget")
        error_of(generate(srv, {"soft_budget": "ten"}), 422, "a budget of the wrong type",
                 "soft_budget")
        error_of(generate(srv, {"models": ["a", 3]}), 422, "an array item of the wrong type",
                 "models[1]")
        # LiteLLM's request models (pydantic, extra ignored) drop what they do not declare
        r = generate(srv, {"key_aliass": "typo"})
        tap.ok(r.status == 200 and "key_aliass" not in (r.json or {}),
               "an unknown field is ignored, as LiteLLM's GenerateKeyRequest ignores it", repr(r))
        error_of(generate(srv, {"rpm_limit": 10 ** 30}), 422, "a number past int64",
                 "rpm_limit")
        error_of(generate(srv, {"key_type": "superuser"}), 422, "a value outside the enum",
                 "key_type")
        error_of(generate(srv, {"model_max_budget": {"gpt-4": {"budget_limit": -1}}}), 400,
                 "a nested negative budget", "model_max_budget.gpt-4.budget_limit")

        # the credential
        e = error_of(srv.request("POST", "/key/generate", body={}), 401, "no credential")
        e = error_of(srv.request("POST", "/key/generate", body={},
                                 headers={"Authorization": "Bearer sk-wrong-key-123"}),
                     401, "a wrong credential")
        tap.ok("sk-wrong-key-123" not in str(e), "the error does not echo the credential", e)
        r = srv.request("POST", "/key/generate", body={},
                        headers={"x-litellm-api-key": srv.master_key})
        tap.eq(r.status, 200, "x-litellm-api-key is read")
        r = srv.request("POST", "/key/generate", body={}, headers={"API-Key": srv.master_key})
        tap.eq(r.status, 200, "API-Key is read")
        r = srv.request("POST", "/key/generate", body={},
                        headers={"Authorization": "Bearer " + digest})
        tap.eq(r.status, 401, "a key's hash is not a credential")

        # the body rules of every operation
        auth = {"Authorization": "Bearer " + srv.master_key}
        e = error_of(srv.request("POST", "/key/generate", raw=b'{"key_alias": "x",}',
                                 headers=dict(auth, **{"Content-Type": "application/json"})),
                     400, "malformed JSON")
        tap.ok("byte" in e.get("message", ""), "malformed JSON: the message names the byte", e)
        error_of(srv.request("POST", "/key/generate", raw=b'{"a": "\xff"}',
                             headers=dict(auth, **{"Content-Type": "application/json"})),
                 400, "invalid UTF-8")
        error_of(srv.request("POST", "/key/generate", raw=b'[' * 100 + b']' * 100,
                             headers=dict(auth, **{"Content-Type": "application/json"})),
                 400, "nesting deeper than the cap")
        error_of(srv.request("POST", "/key/generate", raw=b'key_alias=x',
                             headers=dict(auth, **{"Content-Type": "text/plain"})),
                 415, "a body that is not JSON")
        r = srv.request("POST", "/key/generate", raw=b'{}',
                        headers=dict(auth, **{"Content-Type": "application/json; charset=utf-8"}))
        tap.eq(r.status, 200, "application/json with a charset parameter is JSON")
        r = srv.request("POST", "/key/generate", raw=b'{"key_alias": "no-content-type"}',
                        headers=dict(auth))
        tap.eq(r.status, 200, "a body without Content-Type is read as JSON, as FastAPI does")
        error_of(srv.request("POST", "/key/generate", raw=b'',
                             headers=dict(auth, **{"Content-Type": "application/json"})),
                 422, "a missing body")
        big = b'{"metadata": {"pad": "' + b"x" * (1 << 20) + b'"}}'
        e = error_of(srv.request("POST", "/key/generate", raw=big,
                                 headers=dict(auth, **{"Content-Type": "application/json"})),
                     413, "a body over the cap")
        tap.ok("1048576" in e.get("message", ""), "413 names the cap", e)

        # generates racing for one alias: exactly one wins each alias
        results = []

        def racer(alias):
            results.append(generate(srv, {"key_alias": alias}).status)
        threads = [threading.Thread(target=racer, args=("race-%d" % (i % 2),)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        tap.ok(sorted(results) == [200, 200] + [400] * 14,
               "16 concurrent generates over 2 aliases: exactly 2 succeed", results)
        tap.ok(srv.master_key not in srv.read_log(), "no key in the log")


tap.run(main)
