#!/usr/bin/python3
"""metrics.t: GET /metrics through the real lighttpd: the exposition format, counts that
rise by exactly what was sent, verdicts by code, the latency histogram, worker restarts,
store transactions, and who may read it.

Every scrape is checked by a small parser of the text format 0.0.4: each sample belongs to
a family with one TYPE (and HELP) line before it, names and label names are well-formed,
label values are quoted with only \\\\, \\" and \\n escaped, values are numbers, and no
sample repeats."""
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import fcgi  # noqa: E402
import kwserver  # noqa: E402
from kwserver import Server, wait_for  # noqa: E402

METRICS_TOKEN = "metrics-scraper-token-7f3a9c0d1e"
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def parse_labels(text):
    """'a="x",b="y\\"z"' -> ({a: x, b: y"z}, problems)."""
    labels, problems, i = {}, [], 0
    while i < len(text):
        m = re.match(r"([^=]*)=\"", text[i:])
        if not m:
            return labels, problems + ["malformed labels %r" % text]
        name = m.group(1)
        if not LABEL_NAME.match(name) or name.startswith("__"):
            problems.append("bad label name %r" % name)
        i += m.end()
        value = ""
        while True:
            if i >= len(text):
                return labels, problems + ["unterminated label value in %r" % text]
            c = text[i]
            if c == "\\":
                nxt = text[i + 1:i + 2]
                if nxt not in ("\\", '"', "n"):
                    problems.append("bad escape \\%s in %r" % (nxt, text))
                value += {"n": "\n"}.get(nxt, nxt)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                return labels, problems + ["raw newline in a label value"]
            else:
                value += c
                i += 1
        if name in labels:
            problems.append("label %s twice" % name)
        labels[name] = value
        if i < len(text):
            if text[i] != ",":
                return labels, problems + ["expected , after a label in %r" % text]
            i += 1
    return labels, problems


def parse(text):
    """The exposition -> (samples {(name, ((label, value), ...)): float}, types, problems)."""
    samples, types, helps, problems = {}, {}, set(), []
    order, current = [], None
    if not text.endswith("\n"):
        problems.append("the exposition does not end with a newline")
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d %r" % (n, line)
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.match(name):
                    problems.append(where + ": bad metric name")
                if parts[1] == "HELP":
                    if name in helps:
                        problems.append(where + ": a second HELP")
                    helps.add(name)
                else:
                    if name in types:
                        problems.append(where + ": a second TYPE")
                    if len(parts) != 4 or parts[3] not in TYPES:
                        problems.append(where + ": bad TYPE")
                    types[name] = parts[3] if len(parts) == 4 else None
                    if any(s[0].startswith(name) for s in samples):
                        problems.append(where + ": TYPE after the family's samples")
            continue
        if not line.strip():
            problems.append(where + ": a blank line")
            continue
        m = re.match(r"([^{\s]+)(?:\{(.*)\})? (\S+)$", line)
        if not m:
            problems.append(where + ": not a sample")
            continue
        name, labeltext, value = m.groups()
        if not NAME.match(name):
            problems.append(where + ": bad metric name")
        labels, lp = parse_labels(labeltext or "")
        problems += [where + ": " + p for p in lp]
        try:
            v = float(value)
        except ValueError:
            problems.append(where + ": value %r is not a number" % value)
            continue
        family = name
        if name not in types:
            for base, t in types.items():
                if t in SUFFIXES and name in [base + s for s in SUFFIXES[t]]:
                    family = base
        if family not in types:
            problems.append(where + ": no TYPE for %s" % name)
        elif family not in helps:
            problems.append(where + ": no HELP for %s" % name)
        if family != current:
            if family in order:
                problems.append(where + ": the samples of %s are not together" % family)
            order.append(family)
            current = family
        key = (name, tuple(sorted(labels.items())))
        if key in samples:
            problems.append(where + ": a repeated sample")
        samples[key] = v
    return samples, types, problems


class Scrape:
    def __init__(self, samples):
        self.samples = samples

    def get(self, name, **labels):
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def requests(self):
        """{(route, method, status): count} of keywarden_requests_total."""
        return {(dict(k[1])["route"], dict(k[1])["method"], dict(k[1])["status"]): v
                for k, v in self.samples.items() if k[0] == "keywarden_requests_total"}


def scrape(srv, name="", headers=None):
    """GET /metrics with the master key (or headers); checks its format; returns a Scrape."""
    r = srv.request("GET", "/metrics", headers=headers or
                    {"Authorization": "Bearer " + srv.master_key})
    text = r.body.decode("utf-8", "replace")
    samples, _, problems = parse(text) if r.status == 200 else ({}, {}, ["status %d" % r.status])
    if name:
        tap.ok(r.status == 200 and not problems, "%s: the exposition is valid" % name,
               "\n".join(problems[:20]) + "\n" + text[:2000])
    return Scrape(samples)


def delta(before, after):
    keys = set(before) | set(after)
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys
            if after.get(k, 0) != before.get(k, 0)}


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


def parser_self_test():
    """The parser refuses what the format forbids, so a scrape that passes it means something."""
    good = ('# HELP a_total A.\n# TYPE a_total counter\na_total{x="q\\"\\\\\\n"} 1\n'
            '# HELP h H.\n# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 0.5\nh_count 2\n')
    samples, _, problems = parse(good)
    tap.ok(not problems and samples.get(("a_total", (("x", 'q"\\\n'),))) == 1.0,
           "parser: accepts a valid exposition and unescapes label values", problems)
    for bad, why in (("a_total 1\n", "a sample without TYPE"),
                     ("# HELP a A.\n# TYPE a counter\na{x=\"y\\t\"} 1\n", "a bad escape"),
                     ("# HELP a A.\n# TYPE a counter\na{x=\"y} 1\n", "an unterminated value"),
                     ("# HELP a A.\n# TYPE a counter\na{1x=\"y\"} 1\n", "a bad label name"),
                     ("# HELP a A.\n# TYPE a counter\na 1\na 2\n", "a repeated sample"),
                     ("# HELP a A.\n# TYPE a counter\na one\n", "a value that is no number"),
                     ("# HELP a A.\n# TYPE a countr\na 1\n", "an unknown type"),
                     ("# HELP a A.\n# TYPE a counter\na 1", "no final newline")):
        tap.ok(parse(bad)[2], "parser: refuses " + why)


def counts_by_route(srv):
    """Requests of several routes, methods and statuses raise exactly their own counters."""
    m0 = scrape(srv, "a first scrape")
    sent = {
        ("/health", "GET", "200"): 3,
        ("/key/generate", "POST", "200"): 2,
        ("/key/info", "GET", "401"): 1,
        ("/key/list", "GET", "200"): 1,
        ("unmatched", "GET", "404"): 2,
        ("unmatched", "DELETE", "405"): 1,
        ("/metrics", "GET", "200"): 1,      # the first scrape, counted once it was answered
    }
    statuses = []
    for _ in range(3):
        statuses.append(srv.request("GET", "/health").status)
    for _ in range(2):
        statuses.append(srv.admin("POST", "/key/generate", {}).status)
    statuses.append(srv.request("GET", "/key/info").status)
    statuses.append(srv.admin("GET", "/key/list").status)
    statuses.append(srv.request("GET", "/no/such/route").status)
    statuses.append(srv.request("GET", "/sk-in-the-path-0123456789").status)
    statuses.append(srv.request("DELETE", "/health").status)
    tap.eq(statuses, [200, 200, 200, 200, 200, 401, 200, 404, 404, 405],
           "the requests answered as expected")
    m1 = scrape(srv, "a second scrape")
    tap.eq(delta(m0.requests(), m1.requests()), sent,
           "keywarden_requests_total rose by exactly the requests sent, by route, method, status")
    routes = {k[0] for k in m1.requests()}
    tap.ok(not any("sk-" in r or "no/such" in r for r in routes),
           "route labels are templates, never a raw path", sorted(routes))
    return m1


def histogram(m):
    bounds = sorted(((float(dict(k[1])["le"]), v) for k, v in m.samples.items()
                     if k[0] == "keywarden_request_duration_seconds_bucket"))
    les = [b for b, _ in bounds]
    counts = [v for _, v in bounds]
    tap.eq(les, [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 float("inf")], "the latency histogram has its buckets, up to +Inf")
    tap.ok(all(a <= b for a, b in zip(counts, counts[1:])), "the buckets are cumulative",
           counts)
    total = sum(m.requests().values())
    count = m.get("keywarden_request_duration_seconds_count")
    tap.ok(count == counts[-1] == total and total > 0,
           "_count equals the +Inf bucket and the requests counted",
           {"count": count, "inf": counts[-1], "requests": total})
    tap.ok(m.get("keywarden_request_duration_seconds_sum") > 0, "_sum is positive")


def verdicts(srv):
    """Verdicts of /key/verify and of the authorizer count by their code."""
    k = srv.admin("POST", "/key/generate", {"models": ["gpt-4"], "rpm_limit": 1}).json["key"]
    kb = srv.admin("POST", "/key/generate", {}).json["key"]
    srv.admin("POST", "/key/block", {"key": kb})
    m0 = scrape(srv)
    codes = []
    for body in ({"key": k, "model": "gpt-4"},          # VALID, counts in the rpm window
                 {"key": k, "model": "gpt-4"},          # RATE_LIMITED
                 {"key": k, "model": "gpt-3.5-turbo"},  # MODEL_NOT_ALLOWED
                 {"key": "sk-no-such-key-000000000"},   # NOT_FOUND
                 {"key": kb}):                          # BLOCKED
        r = srv.admin("POST", "/key/verify", body)
        codes.append(r.json.get("code") if r.json else r.status)
    tap.eq(codes, ["VALID", "RATE_LIMITED", "MODEL_NOT_ALLOWED", "NOT_FOUND", "BLOCKED"],
           "/key/verify answered each code")
    ka = srv.admin("POST", "/key/generate", {}).json["key"]
    statuses = [fcgi.authorize(srv, "POST", "/v1/chat/completions",
                               {"Authorization": "Bearer " + ka}).status,
                fcgi.authorize(srv, "POST", "/v1/chat/completions",
                               {"Authorization": "Bearer " + kb}).status,
                fcgi.authorize(srv, "POST", "/v1/chat/completions", {}).status]
    tap.eq(statuses, [200, 401, 401], "the authorizer let one through and refused two")
    m1 = scrape(srv, "a scrape after verdicts")
    got = delta({k2: v for k2, v in m0.samples.items() if k2[0] == "keywarden_verify_total"},
                {k2: v for k2, v in m1.samples.items() if k2[0] == "keywarden_verify_total"})
    got = {dict(k2[1])["code"]: v for k2, v in got.items()}
    # a request without any key reaches no verdict: it is a 401 of the authorizer route
    tap.eq(got, {"VALID": 2, "RATE_LIMITED": 1, "MODEL_NOT_ALLOWED": 1, "NOT_FOUND": 1,
                 "BLOCKED": 2}, "keywarden_verify_total rose by each verdict's code")
    codes_listed = {dict(k2[1])["code"] for k2 in m1.samples
                    if k2[0] == "keywarden_verify_total"}
    tap.ok({"VALID", "NOT_FOUND", "BLOCKED", "EXPIRED", "TEAM_BLOCKED", "USER_BLOCKED",
            "MODEL_NOT_ALLOWED", "ROUTE_NOT_ALLOWED", "BUDGET_EXCEEDED", "RATE_LIMITED",
            "DUPLICATE_REQUEST", "API_KEY_USD_SPEND_LIMIT_EXCEEDED",
            "API_KEY_DIEM_SPEND_LIMIT_EXCEEDED"} <= codes_listed,
           "every verdict code is listed, zero or not", sorted(codes_listed))
    d = delta(m0.requests(), m1.requests())
    tap.eq({key: v for key, v in d.items() if key[0] == "authorizer"},
           {("authorizer", "POST", "200"): 1, ("authorizer", "POST", "401"): 2},
           "the authorizer's requests count under route=\"authorizer\"")
    text = srv.admin("GET", "/metrics").body.decode()
    tap.ok(not any(s in text for s in (k, kb, ka, sha(k), sha(kb))),
           "no key, nor a key's hash, is in the metrics")


def transactions(srv):
    m0 = scrape(srv)
    r1 = srv.admin("POST", "/key/generate", {"key_alias": "metrics-alias"})
    r2 = srv.admin("POST", "/key/generate", {"key_alias": "metrics-alias"})
    tap.eq([r1.status, r2.status], [200, 400], "a key, then its alias again (refused)")
    m1 = scrape(srv, "a scrape after writes")
    commits = m1.get("keywarden_store_transactions_total", outcome="commit") - \
        m0.get("keywarden_store_transactions_total", outcome="commit")
    aborts = m1.get("keywarden_store_transactions_total", outcome="abort") - \
        m0.get("keywarden_store_transactions_total", outcome="abort")
    tap.ok(commits >= 1, "a write commits a transaction (%d more)" % commits)
    tap.ok(aborts >= 1, "a refused write aborts its transaction (%d more)" % aborts)
    tap.ok(("keywarden_store_deadlock_retries_total", ()) in m1.samples,
           "keywarden_store_deadlock_retries_total is exposed")
    version = subprocess.run([kwserver.BIN, "version"], capture_output=True, text=True).stdout
    schema = re.search(r"\(schema (\d+),", version).group(1)
    tap.eq(m1.get("keywarden_build_info", version="0.1.0", schema=schema), 1.0,
           "keywarden_build_info names the version and schema")


def restarts(srv):
    m0 = scrape(srv)
    tap.eq(m0.get("keywarden_workers"), 2.0, "keywarden_workers is the pool's size")
    before = m0.get("keywarden_worker_restarts_total")
    victim = srv.workers()[0]
    os.kill(victim, signal.SIGKILL)
    back = wait_for(lambda: len(srv.workers()) == 2 and victim not in srv.workers(), 30)
    tap.ok(back, "the pool replaced the killed worker")
    m1 = wait_for(lambda: (lambda m: m if m.get("keywarden_worker_restarts_total") ==
                           before + 1 else None)(scrape(srv)), 30)
    tap.ok(m1 is not None, "keywarden_worker_restarts_total rose by one after a SIGKILL")
    tap.eq(m1.get("keywarden_workers") if m1 else None, 2.0, "two workers again")


def access(srv):
    r = srv.request("GET", "/metrics")
    tap.ok(r.status == 401 and r.json and r.json["error"]["code"] == "401",
           "no credential: 401 in the LiteLLM envelope", repr(r))
    r = srv.request("GET", "/metrics", headers={"Authorization": "Bearer sk-wrong-000000"})
    tap.eq(r.status, 401, "an unknown key: 401")
    people = {}
    for name, role in (("mia", "internal_user"), ("pat", "proxy_admin_viewer"),
                       ("ada", "proxy_admin")):
        a = srv.admin("POST", "/user/new", {"user_id": name, "user_role": role})
        people[name] = a.json["key"] if a.json else None
    r = srv.request("GET", "/metrics", headers={"Authorization": "Bearer " + people["mia"]})
    tap.ok(r.status == 403 and r.json and r.json["error"]["code"] == "403",
           "an internal user's key: 403 in the LiteLLM envelope", repr(r))
    plain = srv.admin("POST", "/key/generate", {}).json["key"]
    r = srv.request("GET", "/metrics", headers={"Authorization": "Bearer " + plain})
    tap.eq(r.status, 403, "a key without a user: 403")
    for name in ("pat", "ada"):
        r = srv.request("GET", "/metrics", headers={"x-api-key": people[name]})
        tap.ok(r.status == 200 and r.headers.get("content-type", "").startswith(
            "text/plain; version=0.0.4"), "a %s key reads the metrics" % name, repr(r))
    scrape(srv, "the metrics token reads the metrics",
           headers={"Authorization": "Bearer " + METRICS_TOKEN})
    r = srv.request("GET", "/metrics",
                    headers={"Authorization": "Bearer " + METRICS_TOKEN[:-1] + "X"})
    tap.eq(r.status, 401, "a wrong metrics token: 401")
    r = srv.request("POST", "/metrics", headers={"Authorization": "Bearer " + METRICS_TOKEN})
    tap.eq(r.status, 405, "POST /metrics: 405")


def without_token():
    """Without KEYWARDEN_METRICS_TOKEN, no bearer but a key reads the metrics."""
    with Server(workers=1) as srv:
        r = srv.request("GET", "/metrics", headers={"Authorization": "Bearer " + METRICS_TOKEN})
        tap.eq(r.status, 401, "without the setting, the would-be token is an unknown key")
        tap.eq(srv.admin("GET", "/metrics").status, 200, "the master key reads the metrics")
        m = scrape(srv, "one worker's pool")
        tap.eq(m.get("keywarden_workers"), 1.0, "keywarden_workers is 1")


def short_token():
    with tempfile.TemporaryDirectory(prefix="kw-test-") as d:
        env = dict(os.environ, KEYWARDEN_METRICS_TOKEN="short",
                   KEYWARDEN_MASTER_KEY=kwserver.MASTER_KEY)
        r = subprocess.run([kwserver.BIN, "init", "-d", os.path.join(d, "data")], env=env,
                           capture_output=True, text=True, timeout=60)
        tap.ok(r.returncode != 0 and "KEYWARDEN_METRICS_TOKEN" in r.stderr and
               "short" not in r.stderr, "a metrics token under 16 characters is refused, "
               "without echoing it", r.stderr)


def main():
    parser_self_test()
    with Server(workers=2, env={"KEYWARDEN_METRICS_TOKEN": METRICS_TOKEN}) as srv:
        m = counts_by_route(srv)
        histogram(m)
        verdicts(srv)
        histogram(scrape(srv))
        transactions(srv)
        restarts(srv)
        access(srv)
        log = srv.read_log()
        tap.ok(METRICS_TOKEN not in log, "the metrics token is not in the log")
    without_token()
    short_token()


tap.run(main)
