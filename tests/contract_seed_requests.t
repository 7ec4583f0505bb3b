#!/usr/bin/python3
"""contract_seed_requests.t: requests the seed documents show, which the spec and keywarden once
refused, accepted as LiteLLM's documents describe them: /key/generate's `expires` (seed 003's
GenerateKeyRequest lists it) and /key/list's `sort_by=user_id` (seed 002's client names it)."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import Server  # noqa: E402
from attack import master, user  # noqa: E402


def param(r):
    err = (r.json or {}).get("error") if isinstance(r.json, dict) else None
    return err.get("param") if isinstance(err, dict) else None


def main():
    with Server(workers=2) as srv:
        m = master(srv)
        r = m("POST", "/key/generate", {"expires": "2030-01-02T03:04:05+01:00"})
        tap.ok(r.status == 200 and r.json.get("expires") == "2030-01-02T02:04:05Z",
               "/key/generate takes expires as an RFC 3339 time, stored in UTC", repr(r))
        k = r.json.get("key", "")
        info = m("GET", "/key/info?key=" + k).json["info"]
        tap.eq(info.get("expires"), "2030-01-02T02:04:05Z", "... and /key/info shows it")
        past = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
        r = m("POST", "/key/generate", {"expires": past})
        gone = r.json.get("key", "")
        r = srv.request("GET", "/key/info", headers={"Authorization": "Bearer " + gone})
        tap.eq(r.status, 401, "a key whose expires has passed is refused")
        r = m("POST", "/key/generate", {"expires": None})
        tap.ok(r.status == 200 and r.json.get("expires") is None, "expires null: never", repr(r))
        r = m("POST", "/key/generate", {"expires": "2030-01-01T00:00:00Z", "duration": "1h"})
        tap.ok(r.status == 400 and param(r) == "expires", "duration and expires together: 400 "
               "naming expires", repr(r))
        r = m("POST", "/key/generate", {"expires": "next week"})
        tap.ok(r.status == 422 and param(r) == "expires", "expires that is no RFC 3339 time: "
               "422 naming it", repr(r))
        r = m("POST", "/key/update", {"key": k, "expires": "2031-01-01T00:00:00Z"})
        tap.ok(r.status == 200 and r.json.get("expires") == "2031-01-01T00:00:00Z",
               "/key/update takes expires", repr(r))
        owner = user(srv, "seed-owner")
        mine = m("POST", "/key/generate", {"user_id": "seed-owner",
                                           "expires": "2030-01-01T00:00:00Z"}).json["key"]
        r = owner("POST", "/key/update", {"key": mine, "expires": None})
        tap.ok(r.status == 403 and param(r) == "expires", "expires is the level above's, "
               "like duration (README: Who may change what)", repr(r))

        for uid in ("seed-c", "seed-a", "seed-b"):
            m("POST", "/key/generate", {"user_id": uid, "key_alias": "sort-" + uid})
        r = m("GET", "/key/list?sort_by=user_id&sort_order=asc&return_full_object=true&size=100")
        users = [k.get("user_id") for k in (r.json or {}).get("keys", [])
                 if (k.get("key_alias") or "").startswith("sort-")]
        tap.ok(r.status == 200 and users == ["seed-a", "seed-b", "seed-c"],
               "/key/list sort_by=user_id sorts by user", repr(r) if r.status != 200 else users)


tap.run(main)
