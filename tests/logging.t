#!/usr/bin/python3
"""logging.t: one access line per request on stderr (which lighttpd collects into its log),
with the time, method, route template, status, duration and the key's hash prefix; the
log level setting; and no secret anywhere in the log, though keys travel in headers, the
query, the path and bodies."""
import os
import re
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import fcgi  # noqa: E402
from kwserver import Server, wait_for  # noqa: E402

METRICS_TOKEN = "logging-metrics-token-5c1b2e8f"
ACCESS = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) info \[(?P<pid>\d+)\] \S+:\d+: access "
    r"method=(?P<method>[A-Z]+) route=(?P<route>\S+) status=(?P<status>\d{3}) "
    r"ms=(?P<ms>\d+\.\d{3}) key=(?P<key>master|-|[0-9a-f]{8})"
    r"(?: verdict=(?P<verdict>[A-Z_]+))?(?: subject=(?P<subject>-|[0-9a-f]{8}))?$")


def access_lines(srv):
    return [line for line in srv.read_log().splitlines() if " access " in line]


class Client:
    """Sends requests and remembers the access line each should leave."""

    def __init__(self, srv):
        self.srv = srv
        self.expected = []
        self.secrets = [srv.master_key, METRICS_TOKEN]

    def send(self, method, path, want, body=None, headers=None, raw=None):
        """want: (route, status, key, verdict, subject); verdict and subject may be None."""
        r = self.srv.request(method, path, body=body, headers=headers, raw=raw)
        self.expected.append((method,) + want)
        return r

    def master(self, method, path, want, body=None, headers=None):
        h = {"Authorization": "Bearer " + self.srv.master_key}
        h.update(headers or {})
        return self.send(method, path, want, body=body, headers=h)


def one_line_per_request(srv):
    before = len(access_lines(srv))
    c = Client(srv)
    r = c.master("POST", "/key/generate", ("/key/generate", "200", "master", None, None),
                 body={"key_alias": "log-key"})
    k1, t1 = r.json["key"], r.json["token"]
    c.secrets.append(k1)
    p1 = t1[:8]
    # the key as a credential, in each header a client may use
    for header in ("Authorization", "x-api-key", "api-key", "x-litellm-api-key"):
        value = ("Bearer " if header == "Authorization" else "") + k1
        tap.eq(c.send("GET", "/key/info", ("/key/info", "200", p1, None, None),
                      headers={header: value}).status, 200, "GET /key/info with %s" % header)
    # in the query and in the path
    c.master("GET", "/key/info?key=" + k1, ("/key/info", "200", "master", None, None))
    c.master("GET", "/key/info?key=" + k1 + "&unknown=" + k1,
             ("/key/info", "200", "master", None, None))
    r = c.master("POST", "/key/%s/regenerate" % k1,
                 ("/key/{key}/regenerate", "200", "master", None, None), body={})
    tap.eq(r.status, 200, "POST /key/{key}/regenerate with the key in the path")
    k2, t2 = r.json["key"], r.json["token"]
    c.secrets.append(k2)
    # in bodies: a verdict, an unknown key, broken JSON, an update
    c.master("POST", "/key/verify", ("/key/verify", "200", "master", "VALID", t2[:8]),
             body={"key": k2})
    unknown = "sk-unknown-verify-secret-4711"
    c.secrets.append(unknown)
    c.master("POST", "/key/verify", ("/key/verify", "200", "master", "NOT_FOUND", "-"),
             body={"key": unknown})
    broken = "sk-broken-json-secret-0815"
    c.secrets.append(broken)
    # the credential is checked before the body is read, so the caller is known
    c.send("POST", "/key/verify", ("/key/verify", "400", "master", None, None),
           headers={"Authorization": "Bearer " + c.srv.master_key,
                    "Content-Type": "application/json"},
           raw=('{"key": "%s", ' % broken).encode())
    c.master("POST", "/key/update", ("/key/update", "200", "master", None, None),
             body={"key": k2, "metadata": {"note": "no secret here"}})
    # unknown credentials, a key where a route would be, a key as the method's target
    bogus = "sk-unknown-bearer-secret-1234"
    c.secrets.append(bogus)
    c.send("GET", "/key/info", ("/key/info", "401", "-", None, None),
           headers={"Authorization": "Bearer " + bogus})
    path_secret = "sk-path-secret-98765432"
    c.secrets.append(path_secret)
    c.send("GET", "/" + path_secret, ("-", "404", "-", None, None))
    c.send("DELETE", "/key/info?key=" + path_secret, ("-", "405", "-", None, None))
    # a provider credential, sealed at rest and never logged
    upstream = "sk-proj-upstream-secret-abcdef0123"
    c.secrets.append(upstream)
    r = c.master("POST", "/api/providers/openai/keys",
                 ("/api/providers/{provider}/keys", "200", "master", None, None),
                 body={"name": "log-upstream", "value": upstream, "models": ["gpt-4o"]})
    tap.eq(r.status, 200, "a provider key with a secret value")
    # the metrics token, which identifies no key
    c.send("GET", "/metrics", ("/metrics", "200", "-", None, None),
           headers={"Authorization": "Bearer " + METRICS_TOKEN})
    # a caller that is a key of its own
    c.send("POST", "/key/verify", ("/key/verify", "403", t2[:8], None, None),
           body={"key": k2}, headers={"Authorization": "Bearer " + k2})

    # the authorizer, spoken straight to keywarden's socket: its key is the presented one
    res = fcgi.authorize(srv, "GET", "/v1/models?key=" + k2, {"x-api-key": k2})
    tap.eq(res.status, 200, "the authorizer lets the key through")
    c.expected.append(("GET", "authorizer", "200", t2[:8], "VALID", None))
    res = fcgi.authorize(srv, "GET", "/v1/models", {"x-api-key": bogus})
    c.expected.append(("GET", "authorizer", "401", "-", "NOT_FOUND", None))
    # a method no web server would pass, straight to the socket: named OTHER, never echoed
    odd = "SK-METHOD-SECRET-555"
    c.secrets.append(odd)
    res = fcgi.request(fcgi.socket_path(srv), fcgi.http_params(odd, "/health"))
    c.expected.append(("OTHER", "-", str(res.status), "-", None, None))

    n = len(c.expected)
    wait_for(lambda: len(access_lines(srv)) >= before + n, 20)
    lines = access_lines(srv)[before:]
    tap.eq(len(lines), n, "one access line per request (%d)" % n)
    parsed = [ACCESS.match(line) for line in lines]
    tap.ok(all(parsed), "every access line has the documented fields and nothing else",
           [line for line, m in zip(lines, parsed) if not m][:5])
    got = [(m["method"], m["route"], m["status"], m["key"], m["verdict"], m["subject"])
           if m else None for m in parsed]
    for i, (g, w) in enumerate(zip(got, c.expected)):
        tap.eq(g, w, "line %d: %s %s" % (i + 1, w[0], w[1]))
    tap.ok(all(m and float(m["ms"]) >= 0 for m in parsed), "every line has its duration in ms")

    log = srv.read_log()
    leaked = [s[:16] for s in c.secrets if s in log]
    tap.ok(not leaked, "no secret anywhere in the log (%d checked)" % len(c.secrets), leaked)
    tap.ok(t1 not in log and t2 not in log, "no full key hash in the log either")
    tap.ok(not any(s.lower() in log.lower() for s in (odd, path_secret)),
           "nothing the client sent in a method or path is copied")


def levels():
    """KEYWARDEN_LOG_LEVEL: info (the default) writes access lines, warn does not."""
    srv = Server(workers=1)
    del srv.env["KEYWARDEN_LOG_LEVEL"]
    with srv:
        srv.request("GET", "/health")
        ok = wait_for(lambda: any("route=/health status=200" in line
                                  for line in access_lines(srv)), 20)
        tap.ok(ok, "unset, the level is info: access lines are written")
    with Server(workers=1, env={"KEYWARDEN_LOG_LEVEL": "warn"}) as srv:
        for _ in range(3):
            srv.request("GET", "/health")
        srv.admin("POST", "/key/generate", {})
        victim = srv.workers()[0]
        os.kill(victim, signal.SIGKILL)
        warned = wait_for(lambda: "killed by signal 9" in srv.read_log(), 20)
        tap.ok(warned, "at warn, warnings are still written")
        tap.eq(access_lines(srv), [], "at warn, no access line")
        tap.ok(" info " not in srv.read_log(), "at warn, no info line at all")
    with Server(workers=1, env={"KEYWARDEN_LOG_LEVEL": "debug"}) as srv:
        srv.request("GET", "/health")
        ok = wait_for(lambda: any("route=/health status=200" in line
                                  for line in access_lines(srv)), 20)
        tap.ok(ok, "at debug, access lines are written too")


def main():
    with Server(workers=2, env={"KEYWARDEN_METRICS_TOKEN": METRICS_TOKEN}) as srv:
        one_line_per_request(srv)
    levels()


tap.run(main)
