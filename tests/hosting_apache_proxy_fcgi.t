#!/usr/bin/python3
"""hosting_apache_proxy_fcgi.t: the Apache recipes for keywarden on its own socket.  Apache 2.4
with mod_proxy_fcgi passes the API at the root and under /keywarden/
(scripts/recipes/apache-proxy-fcgi.conf.in), and mod_authnz_fcgi asks keywarden in the FastCGI
AUTHORIZER role about every /v1/ request before mod_proxy_http sends it to a model server
(scripts/recipes/apache-authnz-fcgi.conf.in); each runs the smoke set.  Then the recipe's
warning: with enablereuse=on, a connection Apache keeps holds a keywarden worker, so a request on
another connection times out unless keywarden's pool may grow to a worker for each."""
import http.client
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from smoke import (APACHE, Client, apache, console, free_port, gateway, keywarden, need,  # noqa: E402
                   smoke, tmpdir)
from upstream import Upstream  # noqa: E402

# ProxyPass timeout= (seconds) where a request must fail, short so that the test does not wait
# long for the failure it shows; and where requests must succeed.
FAIL_TIMEOUT = 1
OK_TIMEOUT = 30


def get(conn):
    """GET /health on an open HTTP/1.1 connection (kept alive); the Response-like tuple."""
    conn.request("GET", "/health")
    r = conn.getresponse()
    return r.status, r.read()


def reuse_round(tmp, name, workers, params, max_workers=None):
    """Two requests of client A, the second on the backend connection Apache kept after the
    first, then client B's on another connection while A's stays open (so prefork gives B
    another Apache process, with a backend connection of its own).  Returns the (status,
    body) of each."""
    kwport = free_port()
    extra = "StartServers 2\nKeepAlive On\nKeepAliveTimeout 120\n"
    kwdir = os.path.join(tmp, name + "-kw")
    os.makedirs(kwdir)
    with keywarden(kwdir, kwport, workers=workers, data_dir=os.path.join(tmp, name + "-data"),
                   max_workers=max_workers), \
            apache(tmp, "apache-proxy-fcgi.conf", name, extra=extra, MOUNT="", MPM="prefork",
                   PROXY_PARAMS=params, KW_ADDR="127.0.0.1:%d" % kwport) as ap:
        a = http.client.HTTPConnection("127.0.0.1", ap.port, timeout=120)
        b = http.client.HTTPConnection("127.0.0.1", ap.port, timeout=120)
        try:
            return get(a), get(a), get(b)
        finally:
            a.close()
            b.close()


def main():
    if not need(APACHE):
        return
    tmp = tmpdir("kw-apache-proxy-")
    keys = []
    logs = ""
    up = Upstream(None, None, 0.001).start()
    try:
        kwport = free_port()
        os.makedirs(os.path.join(tmp, "kw"))
        with keywarden(os.path.join(tmp, "kw"), kwport) as kw:
            addr = "127.0.0.1:%d" % kwport
            for mount in ("", "/keywarden"):
                name = "apache proxy_fcgi %s" % (mount or "/")
                with apache(tmp, "apache-proxy-fcgi.conf", "root" if not mount else "mount",
                            KW_ADDR=addr, MOUNT=mount, MPM="event", PROXY_PARAMS="") as ap:
                    keys.append(smoke(Client(ap.port, mount), name))
                    console(Client(ap.port, mount), name)
                logs += ap.read_log() + open(ap.error_log).read()
            with apache(tmp, "apache-authnz-fcgi.conf", "gateway", KW_ADDR=addr,
                        UPSTREAM="127.0.0.1:%d" % up.port) as ap:
                c = Client(ap.port)
                keys.append(smoke(c, "apache authnz_fcgi /"))
                keys.extend(gateway(c, up, "apache authnz_fcgi"))
            logs += ap.read_log() + open(ap.error_log).read()
        logs += kw.read_log()
        tap.ok(not any(k in logs for k in keys), "no key in keywarden's or Apache's logs")

        # The warning, shown: enablereuse=on with a pool capped below the connections.
        reuse = "enablereuse=on timeout=%d" % FAIL_TIMEOUT
        for attempt in ("reuse-w1", "reuse-w1-again"):
            first, again, second = reuse_round(tmp, attempt, 1, reuse, max_workers=1)
            if first[0] == 200 and again[0] == 200:
                break   # else a machine too busy for the short timeout: once more
        tap.ok(first[0] == 200, "enablereuse=on, 1 worker at most: client A's request is "
               "answered", first)
        tap.ok(again[0] == 200, "enablereuse=on, 1 worker at most: A's second request, on the "
               "kept connection, is answered", again)
        tap.ok(second[0] in (502, 503, 504) and b"healthy" not in second[1],
               "enablereuse=on, 1 worker at most: client B's request on another connection "
               "times out (%d) while A's kept connection holds the only worker" % second[0],
               second)
        answers = reuse_round(tmp, "reuse-w2", 2, "enablereuse=on timeout=%d" % OK_TIMEOUT,
                              max_workers=2)
        tap.ok([a[0] for a in answers] == [200, 200, 200],
               "enablereuse=on, 2 workers for 2 connections: both of A's requests (the second on "
               "the kept connection) and B's are answered", answers)
        answers = reuse_round(tmp, "reuse-grow", 1, "enablereuse=on timeout=%d" % OK_TIMEOUT)
        tap.ok([a[0] for a in answers] == [200, 200, 200],
               "enablereuse=on, 1 worker that may grow (KEYWARDEN_MAX_WORKERS unset): a worker "
               "waiting on a kept connection counts as busy, so the pool grows for B's",
               answers)
        answers = reuse_round(tmp, "noreuse-w1", 1, "timeout=%d" % OK_TIMEOUT, max_workers=1)
        tap.ok([a[0] for a in answers] == [200, 200, 200],
               "without enablereuse, 1 worker: every request is answered (a connection per "
               "request)", answers)
    finally:
        up.stop()
        if os.environ.get("KW_KEEP_TMP") is None:
            shutil.rmtree(tmp, ignore_errors=True)


tap.run(main)
