#!/usr/bin/python3
"""hosting_apache_fcgid.t: the shared-hosting recipe.  Apache 2.4 with mod_fcgid
(scripts/recipes/apache-fcgid-vhost.conf.in) serves a user's document root; in it, the
.htaccess (apache-fcgid.htaccess.in) routes every path to the wrapper keywarden.fcgi
(keywarden.fcgi.in), which points keywarden at a data directory outside the document root, whose
keywarden.conf holds the master key.  mod_fcgid starts keywarden, as the user Apache runs
programs as, with the listening socket on standard input.  keywarden is served from the document
root and from its keywarden/ directory; each runs the smoke set."""
import os
import pwd
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import MASTER_KEY  # noqa: E402
from smoke import (APACHE, MOD_FCGID, Client, fcgid_site, kw_processes, need,  # noqa: E402
                   server_user, smoke, tmpdir)


def main():
    if not need(APACHE, MOD_FCGID):
        return
    tmp = tmpdir("kw-apache-fcgid-")
    site = fcgid_site(tmp)
    docroot, data_dir, port = site.docroot, site.data_dir, site.port
    user, _ = server_user()
    keys = []
    try:
        with site:
            for mount in ("", "/keywarden"):
                keys.append(smoke(Client(port, mount), "apache fcgid %s" % (mount or "/"),
                                  outside=False))
            c = Client(port)
            r = c.request("GET", "/keywarden.fcgi/health")
            tap.ok(r.status == 200 and b"healthy" in r.body, "the wrapper's own URL with a "
                   "PATH_INFO routes on the PATH_INFO", repr(r))
            r = c.request("GET", "/.htaccess")
            tap.eq(r.status, 403, "the .htaccess is not served")
            pids = kw_processes(data_dir)
            tap.ok(pids, "mod_fcgid started keywarden with the wrapper's data directory")
            uids = set()
            for pid in pids:
                with open("/proc/%d/status" % pid) as f:
                    uids.update(int(ln.split()[1]) for ln in f if ln.startswith("Uid:"))
            tap.eq(uids, {pwd.getpwnam(user).pw_uid}, "keywarden runs as Apache's user")
        tap.ok(os.path.exists(os.path.join(data_dir, "data.key")) and
               not any(n.startswith(("data.key", "master")) or n.endswith(".db")
                       for _, _, fs in os.walk(docroot) for n in fs),
               "the store is in the data directory, nothing of it in the document root")
        deadline = time.time() + 30
        while kw_processes(data_dir) and time.time() < deadline:
            time.sleep(0.1)
        tap.eq(kw_processes(data_dir), [], "stopping Apache stops every keywarden it started")
        log = open(site.error_log).read()
        tap.ok(not any(k in log for k in keys + [MASTER_KEY]),
               "no key in Apache's error log (keywarden's stderr)")
    finally:
        if os.environ.get("KW_KEEP_TMP") is None:
            shutil.rmtree(tmp, ignore_errors=True)


tap.run(main)
