#!/usr/bin/python3
"""hosting_relay.t: the relay's end-to-end suite (tests/relay.t: the official OpenAI client,
tests/e2e/relay.mjs, with generated keys, relayed over HTTPS to the fake provider of
tests/lib/provider.py) through the other servers' recipes, as tests/relay.t runs it through
lighttpd: nginx (nginx.conf.in, keywarden on its own Unix socket), Apache with mod_proxy_fcgi
(apache-proxy-fcgi.conf.in, keywarden on its own TCP port) and Apache with mod_fcgid (the
shared-hosting recipe, mod_fcgid starting keywarden).  Among the suite's steps, the first
streamed chunk reaches the client while the provider still holds the rest, 1.5 s before it
finishes, through each recipe: none buffers a stream.  Then lighttpd with keywarden under a
prefix (lighttpd-prefix.conf.in), whose streaming condition names the mount: a streamed call
under /keywarden/v1/ gets its first event long before the provider's last."""
import http.client
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from e2e import npm_ci  # noqa: E402
from fastprovider import MODEL, FastProvider  # noqa: E402
from kwserver import ROOT, Server, read_text  # noqa: E402
from provider import Provider  # noqa: E402
from smoke import (APACHE, MOD_FCGID, NGINX, Client, apache, fcgid_site, free_port,  # noqa: E402
                   keywarden, need, nginx, owned_dir, server_user, tmpdir, wait_healthy)


def relay_suite():
    """tests/relay.t as a module: its setup, run and checks, without its main."""
    path = os.path.join(ROOT, "tests", "relay.t")
    loader = importlib.machinery.SourceFileLoader("relay_suite", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def front(port, log_path):
    """What the suite asks of a server: requests through the web server's port, and
    keywarden's log."""
    c = Client(port)
    c.port = port
    c.read_log = lambda: read_text(log_path)
    if not tap.ok(getattr(wait_healthy(c), "status", None) == 200,
                  "keywarden answers GET /health through the server"):
        tap.bail("the server does not reach keywarden")
    return c


def readable_ca(prov, tmp):
    """The provider's CA where keywarden, as the server's user, may read it."""
    path = os.path.join(tmp, "provider-ca.pem")
    shutil.copy(prov.ca, path)
    os.chmod(path, 0o644)
    return path


def through_nginx(suite, tmp):
    user, group = server_user()
    home = owned_dir(os.path.join(tmp, "kw"), user, group)
    sock = os.path.join(home, "keywarden.sock")
    with Provider() as prov:
        with keywarden(home, sock, workers=2, user=user, group=group,
                       env={"KEYWARDEN_CA_BUNDLE": readable_ca(prov, tmp)}) as kw, \
                nginx(tmp, "nginx.conf", "nginx", SOCKET=sock, MOUNT="") as ng:
            suite.run(front(ng.port, kw.log_path), prov)


def through_proxy_fcgi(suite, tmp):
    kwport = free_port()
    os.makedirs(os.path.join(tmp, "kw"))
    with Provider() as prov:
        with keywarden(os.path.join(tmp, "kw"), kwport, workers=2,
                       env={"KEYWARDEN_CA_BUNDLE": readable_ca(prov, tmp)}) as kw, \
                apache(tmp, "apache-proxy-fcgi.conf", "apache", KW_ADDR="127.0.0.1:%d" % kwport,
                       MOUNT="", MPM="event", PROXY_PARAMS="") as ap:
            suite.run(front(ap.port, kw.log_path), prov)


def through_fcgid(suite, tmp):
    with Provider() as prov:
        site = fcgid_site(tmp, {"KEYWARDEN_CA_BUNDLE": readable_ca(prov, tmp)})
        with site:
            suite.run(front(site.port, site.error_log), prov)


def through_lighttpd_prefix():
    """A streamed call under lighttpd's /keywarden mount to a provider that sends its first
    event at once and its last 1.5 s later: the seconds to the first event and to the end."""
    with FastProvider(delay_ms=1500) as fp, \
            Server(template="recipes/lighttpd-prefix.conf.in",
                   placeholders={"MOUNT": "/keywarden"}) as srv:
        c = Client(srv.port, "/keywarden")
        fp.register(c)
        key = c.admin("POST", "/key/generate", {}).json["key"]
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        t0 = time.monotonic()
        conn.request("POST", "/keywarden/v1/chat/completions", body=json.dumps({
            "model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
            headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
        r = conn.getresponse()
        first = None
        while True:
            line = r.readline()
            if not line:
                break
            if first is None and line.startswith(b"data: "):
                first = time.monotonic() - t0
        end = time.monotonic() - t0
        conn.close()
        tap.ok(r.status == 200 and first is not None and first + 1 < end,
               "lighttpd under /keywarden: the first streamed event arrives before the "
               "provider's last (first %s s, end %.2f s)" % (
                   "%.2f" % first if first is not None else None, end))


def main():
    suite = relay_suite()
    if not npm_ci("openai/package.json"):
        return
    rounds = [("nginx", [NGINX], through_nginx),
              ("Apache mod_proxy_fcgi", [APACHE], through_proxy_fcgi),
              ("Apache mod_fcgid", [APACHE, MOD_FCGID], through_fcgid)]
    for name, programs, through in rounds:
        missing = [p for p in programs if not os.path.exists(p)]
        if missing:
            tap.ok(True, "%s # SKIP %s is not installed" % (name, missing[0]))
            continue
        tap.diag("the relay's suite through %s" % name)
        tmp = tmpdir("kw-relay-host-")
        try:
            through(suite, tmp)
        finally:
            if os.environ.get("KW_KEEP_TMP") is None:
                shutil.rmtree(tmp, ignore_errors=True)
    through_lighttpd_prefix()


tap.run(main)
