#!/usr/bin/python3
"""contract_http.t: the HTTP boundary and the pool through the real lighttpd: 404/405/413/400, decoding, 503, dead workers, shutdown."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import Server, wait_for  # noqa: E402


def litellm_error(r, status, name):
    e = (r.json or {}).get("error") if isinstance(r.json, dict) else None
    tap.eq(r.status, status, name + ": status %d" % status)
    tap.ok(isinstance(e, dict) and e.get("code") == str(status) and
           isinstance(e.get("message"), str) and "type" in e and "param" in e,
           name + ": LiteLLM error envelope", r.body)
    return e or {}


def boundary(srv):
    r = srv.request("GET", "/no/such/route")
    litellm_error(r, 404, "unknown path")

    r = srv.request("GET", "/api/providers/openai/nothing-here")
    tap.eq(r.status, 404, "unknown Bifrost path: 404")
    tap.ok(isinstance(r.json, dict) and r.json.get("is_bifrost_error") is False and
           r.json.get("status_code") == 404 and "message" in r.json.get("error", {}),
           "unknown Bifrost path: Bifrost error envelope", r.body)
    r = srv.request("GET", "/api/v1/api_keys/x/nothing-here")
    tap.ok(r.status == 404 and isinstance(r.json.get("error"), str),
           "unknown Venice path: Venice envelope", r.body)
    r = srv.request("GET", "/api/v1/org/acme/nothing-here")
    tap.ok(r.status == 404 and r.json.get("code") == 404 and "detail" in r.json,
           "unknown provisioning path: canonical envelope", r.body)

    r = srv.request("DELETE", "/health")
    litellm_error(r, 405, "wrong method")
    tap.eq(r.headers.get("allow"), "GET", "405 carries Allow")

    r = srv.request("GET", "/health/")
    litellm_error(r, 404, "trailing slash is another path")

    r = srv.request("GET", "/%68ealth")
    tap.eq(r.status, 200, "percent-encoded path is decoded before routing")
    r = srv.request("GET", "/he%00alth")
    tap.ok(r.status in (400, 404) and r.status != 500, "encoded NUL in the path is refused",
           r.body)

    big = b"x" * (1 << 20 | 1)
    r = srv.request("POST", "/health", raw=big, headers={"Content-Type": "application/json"})
    litellm_error(r, 405, "oversized body on a wrong method still 405 first")
    r = srv.request("GET", "/health?x=%zz")
    tap.ok(r.status in (200, 400), "malformed escape in an unknown query parameter: no 500",
           r.body)


def workers(srv):
    # a worker forked a moment ago still bears the manager's name until it renames itself
    wait_for(lambda: len(srv.workers()) == 2, timeout=5)
    before = srv.workers()
    tap.ok(len(before) == 2, "two workers running", {"workers": before,
                                                     "processes": srv.processes()})
    os.kill(before[0], signal.SIGKILL)
    replaced = wait_for(lambda: len(srv.workers()) == 2 and before[0] not in srv.workers())
    tap.ok(replaced, "the pool replaces a worker killed with SIGKILL",
           {"before": before, "now": srv.workers()})
    ok = all(srv.request("GET", "/health").status == 200 for _ in range(20))
    tap.ok(ok, "the next requests succeed")
    tap.ok("killed by signal 9" in srv.read_log(), "the manager logs the dead worker")


def shutdown(srv):
    procs = srv.processes()
    tap.ok(len(procs) == 3, "a manager and two workers before shutdown", procs)
    rc = srv.stop(signal.SIGTERM)
    tap.ok(rc is not None, "lighttpd exits on SIGTERM", rc)
    gone = wait_for(lambda: not srv.processes(), timeout=15)
    tap.ok(gone, "SIGTERM leaves no keywarden process behind", srv.processes())
    tap.ok("draining" in srv.read_log(), "the manager drained its workers")


def broken_store():
    with Server() as srv:
        meta = os.path.join(srv.data_dir, "meta.db")
        tap.ok(os.path.exists(meta), "the store has its meta database")
    # a data directory whose database is not a database
    srv = Server()
    os.makedirs(srv.data_dir)
    with open(os.path.join(srv.data_dir, "meta.db"), "wb") as f:
        f.write(b"this is not a Berkeley DB file" * 100)
    with srv:
        r = srv.request("GET", "/health")
        tap.eq(r.status, 503, "health answers 503 when the store cannot be read")
        tap.ok(r.json and r.json.get("status") == "unhealthy" and
               r.json["store"]["state"] == "unavailable", "and says why", r.body)
        tap.ok(srv.data_dir not in r.body.decode(), "without naming paths")
        tap.eq(srv.request("GET", "/openapi.json").status, 200,
               "operations that need no store still answer")


def main():
    with Server() as srv:
        boundary(srv)
        workers(srv)
        shutdown(srv)
        log = srv.read_log()
        tap.ok(srv.master_key not in log, "the master key never reaches the log")
    broken_store()


tap.run(main)
