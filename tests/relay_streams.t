#!/usr/bin/python3
"""relay_streams.t: 256 streamed chat completions at once through lighttpd and the relay, each
taking 2 s at the provider (build/bench-provider, tests/lib/fastprovider.py): the pool grows
from 2 workers to its cap (64, KEYWARDEN_MAX_WORKERS' default), the calls past the cap wait in
the listen queue, and every call is answered in full, none refused or cut, every call's cost
settled, each worker's memory bounded while they stream."""
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from attack import together  # noqa: E402
from fastprovider import MODEL, USAGE, FastProvider  # noqa: E402
from kwserver import Server, wait_for  # noqa: E402

CALLS = 256
CAP = 64        # keywarden's default KEYWARDEN_MAX_WORKERS
DELAY_MS = 2000
# gpt-4o's shipped price (fcgi-app/relay.c default_prices)
COST = USAGE["prompt_tokens"] * 2.5e-06 + USAGE["completion_tokens"] * 1e-05
# a worker's peak resident set (most of it the store's cache, shared by every worker) and its
# private memory (libcurl and its TLS library take most of it), in KiB
MAX_HWM_KIB = 16 * 1024
MAX_ANON_KIB = 4 * 1024


def stream_call(port, key):
    """One streamed chat; returns (status, events, whether it ended with [DONE], seconds)."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps({
            "model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
            headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        r = conn.getresponse()
        body = r.read().decode("utf-8", "replace")
    except OSError as e:
        return repr(e), 0, False, time.monotonic() - t0
    finally:
        conn.close()
    events = [ln[6:] for ln in body.split("\n") if ln.startswith("data: ")]
    return r.status, len(events), bool(events) and events[-1] == "[DONE]", time.monotonic() - t0


def memory(pids):
    """{pid: (VmHWM, RssAnon)} in KiB, for the pids still alive."""
    out = {}
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                st = dict(ln.split(":", 1) for ln in f if ":" in ln)
            out[pid] = (int(st["VmHWM"].split()[0]), int(st["RssAnon"].split()[0]))
        except (OSError, KeyError, ValueError):
            continue
    return out


def main():
    with FastProvider(delay_ms=DELAY_MS) as fp, \
            Server(workers=2, max_workers=CAP, env={"KEYWARDEN_WORKER_IDLE_SECS": "2"}) as srv:
        fp.register(srv)
        key = srv.admin("POST", "/key/generate", {"key_alias": "streams"}).json["key"]
        status, events, done, _ = stream_call(srv.port, key)
        tap.ok(status == 200 and done and events == fp.chunks + 2,
               "one streamed call: every event and [DONE]", (status, events, done))

        peak, seen = {}, set()
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                pids = srv.workers()
                seen.update(pids)
                for pid, m in memory(pids).items():
                    peak[pid] = m
                time.sleep(0.2)

        sampler = threading.Thread(target=sample)
        sampler.start()
        t0 = time.monotonic()
        try:
            results = together([lambda: stream_call(srv.port, key)] * CALLS)
        finally:
            stop.set()
            sampler.join()
        secs = time.monotonic() - t0
        statuses = sorted({r[0] for r in results}, key=str)
        tap.ok(statuses == [200], "%d streamed calls at once: every one 200 (%.1f s in all)"
               % (CALLS, secs), statuses)
        full = [r for r in results if r[2] and r[1] == fp.chunks + 2]
        tap.eq(len(full), CALLS, "every stream arrives whole, to its [DONE]")
        took = sorted(r[3] for r in results)
        tap.diag("calls took %.1f s (median) to %.1f s (longest) for a %.0f s call"
                 % (took[len(took) // 2], took[-1], DELAY_MS / 1000))
        tap.ok(len(seen) == CAP, "the pool grew to its cap of %d workers and no further (%d "
               "seen)" % (CAP, len(seen)))
        tap.ok(took[-1] >= 2 * DELAY_MS / 1000, "the calls past the cap waited for a worker "
               "(the longest took %.1f s), and were answered" % took[-1])
        hwm = max((m[0] for m in peak.values()), default=0)
        anon = max((m[1] for m in peak.values()), default=0)
        tap.ok(0 < hwm < MAX_HWM_KIB and anon < MAX_ANON_KIB,
               "each worker's memory stays bounded: peak resident %.1f MiB (under %d), private "
               "%.1f MiB (under %d)" % (hwm / 1024, MAX_HWM_KIB // 1024, anon / 1024,
                                        MAX_ANON_KIB // 1024))
        spend = wait_for(lambda: (lambda s: s if s and abs(s - (CALLS + 1) * COST) < 1e-9
                                  else None)(
            srv.admin("GET", "/key/info?key=" + key).json["info"].get("spend")), timeout=20)
        tap.ok(spend is not None, "every call's cost is settled: spend %r for %d calls of %g"
               % (srv.admin("GET", "/key/info?key=" + key).json["info"].get("spend"),
                  CALLS + 1, COST))
        shrunk = wait_for(lambda: len(srv.workers()) == 2, timeout=30)
        tap.ok(shrunk, "idle again, the pool shrinks back to 2 workers", len(srv.workers()))
        log = srv.read_log()
        tap.ok(key not in log, "the key is not in the log")


tap.run(main)
