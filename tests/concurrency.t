#!/usr/bin/python3
"""concurrency.t: many clients at once against one key, through lighttpd: no lost update, no lost spend, no deadlock leaking out."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import Server  # noqa: E402
from attack import together  # noqa: E402

FIELDS = {
    "max_budget": 40, "soft_budget": 30, "tpm_limit": 5000, "rpm_limit": 70,
    "max_parallel_requests": 9, "budget_duration": "30d", "tags": ["a", "b"],
    "models": ["gpt-4", "openai/*"],
}


def main():
    with Server(workers=4) as srv:
        k = srv.admin("POST", "/key/generate", {"key_alias": "contended"}).json
        token = k["token"]

        # one update per field, all at once, five rounds: each is a read-modify-write of the
        # same record, so a lost update would leave some field unset
        statuses = []
        for round_ in range(5):
            fns = [(lambda f=f, v=v: srv.admin("POST", "/key/update", {"key": token, f: v}).status)
                   for f, v in FIELDS.items()]
            statuses += together(fns)
        tap.ok(all(s == 200 for s in statuses),
               "40 concurrent updates of one key all succeed (a deadlock is retried inside)",
               sorted(set(statuses)))
        info = srv.admin("GET", "/key/info?key=" + token).json["info"]
        tap.ok(all(info.get(f) == v for f, v in FIELDS.items()),
               "no lost update: every field holds what its update wrote",
               {f: info.get(f) for f in FIELDS})

        # 100 usage reports at once, each 0.01: the spend is their exact sum
        fns = [(lambda i=i: srv.admin("POST", "/key/usage", {
            "key": token, "request_id": "r-%d" % i, "cost": 0.01, "total_tokens": 10}).status)
            for i in range(100)]
        statuses = together(fns)
        tap.ok(all(s == 200 for s in statuses), "100 concurrent usage reports all succeed",
               sorted(set(statuses)))
        spend = srv.admin("GET", "/key/info?key=" + token).json["info"]["spend"]
        tap.ok(abs(spend - 1.0) < 1e-9, "no lost spend: 100 x 0.01 = %r" % spend)

        # the same reports again, at once: each request_id counts once
        again = together(fns)
        spend = srv.admin("GET", "/key/info?key=" + token).json["info"]["spend"]
        tap.ok(all(s == 200 for s in again) and abs(spend - 1.0) < 1e-9,
               "the 100 reports sent again at once count nothing: spend %r" % spend)

        # generates racing updates and deletes of other keys: nothing but 2xx and 4xx
        others = [srv.admin("POST", "/key/generate", {}).json["key"] for _ in range(20)]
        fns = []
        for i, o in enumerate(others):
            fns.append(lambda o=o: srv.admin("POST", "/key/delete", {"keys": [o]}).status)
            fns.append(lambda i=i: srv.admin("POST", "/key/generate",
                                             {"key_alias": "racer-%d" % i}).status)
            fns.append(lambda o=o: srv.admin("POST", "/key/update",
                                             {"key": o, "max_budget": 1}).status)
        statuses = together(fns)
        tap.ok(all(s in (200, 404) for s in statuses),
               "60 mixed writes at once: only 200s, and 404 for an update after its delete",
               sorted(set(statuses)))
        tap.ok("still deadlocked" not in srv.read_log(),
               "no transaction gave up on a deadlock")


tap.run(main)
