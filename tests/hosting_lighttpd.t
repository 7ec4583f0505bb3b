#!/usr/bin/python3
"""hosting_lighttpd.t: the lighttpd recipes.  lighttpd starts keywarden (bin-path) at the root
(scripts/lighttpd.conf.in, what make run serves) and under /keywarden
(scripts/recipes/lighttpd-prefix.conf.in), and asks it in the FastCGI AUTHORIZER role about
every /v1/ request before mod_proxy sends it to a model server (scripts/lighttpd-gateway.conf.in).
Each runs the smoke set."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import Server  # noqa: E402
from smoke import Client, console, gateway, need, smoke  # noqa: E402
from upstream import Upstream  # noqa: E402


def main():
    if not need("lighttpd"):
        return
    keys = []
    logs = ""
    with Server() as srv:
        keys.append(smoke(Client(srv.port), "lighttpd /"))
        console(Client(srv.port), "lighttpd /")
        logs += srv.read_log()
    with Server(template="recipes/lighttpd-prefix.conf.in",
                placeholders={"MOUNT": "/keywarden"}) as srv:
        keys.append(smoke(Client(srv.port, "/keywarden"), "lighttpd /keywarden"))
        console(Client(srv.port, "/keywarden"), "lighttpd /keywarden")
        logs += srv.read_log()
    up = Upstream(None, None, 0.001).start()
    try:
        with Server(template="lighttpd-gateway.conf.in",
                    placeholders={"UPSTREAM_HOST": "127.0.0.1",
                                  "UPSTREAM_PORT": str(up.port)}) as srv:
            c = Client(srv.port)
            keys.append(smoke(c, "lighttpd gateway /"))
            console(c, "lighttpd gateway /")
            keys.extend(gateway(c, up, "lighttpd"))
            logs += srv.read_log()
    finally:
        up.stop()
    tap.ok(not any(k in logs for k in keys), "no key in the server logs")


tap.run(main)
