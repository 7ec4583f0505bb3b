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
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import BIN, MASTER_KEY  # noqa: E402
from smoke import (Client, Process, free_port, kw_processes, need, render,  # noqa: E402
                   server_user, smoke, tmpdir)

APACHE = "/usr/sbin/apache2"
MOD_FCGID = "/usr/lib/apache2/modules/mod_fcgid.so"


def install(home, docroot, data_dir):
    """What the user puts in their document root: the .htaccess and the wrapper, at the root and
    in keywarden/."""
    for d in (docroot, os.path.join(docroot, "keywarden")):
        os.makedirs(d, exist_ok=True)
        render("apache-fcgid.htaccess", os.path.join(d, ".htaccess"))
        w = render("keywarden.fcgi", os.path.join(d, "keywarden.fcgi"), BIN=BIN,
                   DATA_DIR=data_dir)
        os.chmod(w, 0o755)
    # the data directory's settings file: the master key, never in the document root
    os.makedirs(data_dir, mode=0o700)
    with open(os.path.join(data_dir, "keywarden.conf"), "w") as f:
        f.write("KEYWARDEN_MASTER_KEY=%s\nKEYWARDEN_LOG_LEVEL=info\n" % MASTER_KEY)
    os.chmod(os.path.join(data_dir, "keywarden.conf"), 0o600)


def main():
    if not need(APACHE, MOD_FCGID):
        return
    tmp = tmpdir("kw-apache-fcgid-")
    user, group = server_user()
    home = os.path.join(tmp, "home")
    docroot = os.path.join(home, "public_html")
    data_dir = os.path.join(home, "keywarden-data")
    run = os.path.join(tmp, "run")
    os.makedirs(run)
    install(home, docroot, data_dir)
    if os.geteuid() == 0:
        for d, _, files in os.walk(home):
            shutil.chown(d, user, group)
            for f in files:
                shutil.chown(os.path.join(d, f), user, group)
    os.chmod(home, 0o755)
    port = free_port()
    conf = render("apache-fcgid-vhost.conf", os.path.join(run, "apache.conf"), BIND="127.0.0.1",
                  PORT=port, RUN_DIR=run, DOCROOT=docroot, USER=user, GROUP=group)
    keys = []
    try:
        r = subprocess.run([APACHE, "-t", "-f", conf], capture_output=True, text=True)
        tap.ok(r.returncode == 0, "apache2 -t accepts the rendered recipe", r.stdout + r.stderr)
        with Process([APACHE, "-f", conf, "-DFOREGROUND"], os.path.join(run, "apache.out"),
                     ready=port):
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
        log = open(os.path.join(run, "apache-error.log")).read()
        tap.ok(not any(k in log for k in keys + [MASTER_KEY]),
               "no key in Apache's error log (keywarden's stderr)")
    finally:
        if os.environ.get("KW_KEEP_TMP") is None:
            shutil.rmtree(tmp, ignore_errors=True)


tap.run(main)
