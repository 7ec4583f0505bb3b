#!/usr/bin/python3
"""hosting_nginx.t: the nginx recipes.  keywarden listens on its own Unix socket; nginx passes
its API with fastcgi_pass at the root and under /keywarden/ (scripts/recipes/nginx.conf.in), and
checks every /v1/ request with auth_request before proxy_pass sends it to a model server
(scripts/recipes/nginx-auth-request.conf.in).  Each runs the smoke set."""
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from smoke import (NGINX, Client, console, gateway, keywarden, need,  # noqa: E402
                   nginx, owned_dir, server_user, smoke, tmpdir)
from upstream import Upstream  # noqa: E402

def main():
    if not need(NGINX):
        return
    tmp = tmpdir("kw-nginx-")
    # keywarden's socket is read-write for its user and group, nginx's workers run as them
    user, group = server_user()
    home = owned_dir(os.path.join(tmp, "kw"), user, group)
    sock = os.path.join(home, "keywarden.sock")
    keys = []
    up = Upstream(None, None, 0.001).start()
    try:
        with keywarden(home, sock, user=user, group=group) as kw:
            for mount in ("", "/keywarden"):
                name = "nginx %s" % (mount or "/")
                with nginx(tmp, "nginx.conf", "root" if not mount else "mount",
                           SOCKET=sock, MOUNT=mount) as ng:
                    keys.append(smoke(Client(ng.port, mount), name))
                    console(Client(ng.port, mount), name)
            with nginx(tmp, "nginx-auth-request.conf", "gateway", SOCKET=sock,
                       UPSTREAM="127.0.0.1:%d" % up.port) as ng:
                c = Client(ng.port)
                keys.append(smoke(c, "nginx auth_request /"))
                keys.extend(gateway(c, up, "nginx auth_request", headers_on_200=True))
            log = kw.read_log()
        tap.ok(not any(k in log for k in keys), "no key in keywarden's log")
        tap.ok(not os.path.exists(sock), "keywarden removed its socket when it stopped")
    finally:
        up.stop()
        if os.environ.get("KW_KEEP_TMP") is None:
            shutil.rmtree(tmp, ignore_errors=True)


tap.run(main)
