#!/usr/bin/python3
"""install.t: `make install` into a DESTDIR, then the installed binary, man page, recipes and
service files run from there; `make static` builds the binary for shared hosts that lack libfcgi,
json-c, libgcrypt and Berkeley DB, which serves through lighttpd with an empty library path
(README "Install")."""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATIC = os.path.join(ROOT, "build", "keywarden-static")
# the Server below runs the shared-host build
os.environ["KEYWARDEN_BIN"] = STATIC
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
import tap  # noqa: E402
from kwserver import Server  # noqa: E402


def run(cmd, env=None, **kw):
    e = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
    e.update(env or {})
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=300, **kw)


def main():
    tmp = tempfile.mkdtemp(prefix="kw-install-")
    try:
        installed(tmp)
        static(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def installed(tmp):
    dest = os.path.join(tmp, "dest")
    r = run(["make", "-s", "-C", ROOT, "install", "DESTDIR=" + dest, "PREFIX=/usr"])
    if not tap.ok(r.returncode == 0, "make install DESTDIR=... PREFIX=/usr", r.stdout + r.stderr):
        return
    usr = os.path.join(dest, "usr")
    share = os.path.join(usr, "share", "keywarden")
    for rel, mode in (("bin/keywarden", 0o755), ("share/man/man8/keywarden.8", 0o644),
                      ("share/keywarden/keywarden.conf.sample", 0o644),
                      ("share/keywarden/keywarden.service", 0o644),
                      ("share/keywarden/keywarden.logrotate", 0o644),
                      ("share/keywarden/recipes/nginx.conf.in", 0o644)):
        p = os.path.join(usr, rel)
        tap.ok(os.path.exists(p) and os.stat(p).st_mode & 0o777 == mode,
               "installed %s (%o)" % (rel, mode))
    kw = os.path.join(usr, "bin", "keywarden")
    r = run([kw, "version"])
    tap.ok(r.returncode == 0 and r.stdout.startswith("keywarden "),
           "the installed binary runs", r.stdout + r.stderr)
    data = os.path.join(tmp, "data")
    r = run([kw, "init", "-d", data])
    tap.ok(r.returncode == 0 and os.stat(data).st_mode & 0o777 == 0o700,
           "the installed binary initialises a data directory (0700)", r.stderr)
    r = run(["man", "keywarden"], env={"MANPATH": os.path.join(usr, "share", "man"),
                                       "MANPAGER": "cat", "PAGER": "cat", "MANWIDTH": "80"})
    tap.ok(r.returncode == 0 and "keywarden" in r.stdout and "export" in r.stdout,
           "man keywarden shows the installed page", r.stderr[-500:])
    recipe = os.path.join(usr, "bin", "keywarden-recipe")
    r = run([recipe])
    tap.ok(r.returncode == 0 and "nginx.conf" in r.stdout and "@SOCKET@" in r.stdout,
           "keywarden-recipe lists the installed recipes and their placeholders", r.stdout)
    r = run([recipe, "nginx.conf", "BIND=127.0.0.1", "PORT=4000", "RUN_DIR=/run/kw",
             "SOCKET=/run/keywarden/keywarden.sock", "USER=www-data", "GROUP=www-data",
             "MOUNT=/"])
    tap.ok(r.returncode == 0 and "unix:/run/keywarden/keywarden.sock" in r.stdout and
           "@" not in "".join(ln for ln in r.stdout.splitlines() if not ln.lstrip().startswith("#")),
           "keywarden-recipe renders a recipe from the installed copy", r.stderr)
    for name in sorted(os.listdir(os.path.join(share, "recipes"))):
        name = name[:-3]
        r = run([recipe, name, "--help"])
        tap.ok(r.returncode == 0 and "usage:" in r.stdout and
               "(see the recipe's header)" not in r.stdout,
               "keywarden-recipe %s --help explains each of its placeholders" % name, r.stdout)
    common = ["BIND=127.0.0.1", "PORT=4000", "RUN_DIR=/run/kw", "SOCKET=/run/kw.sock",
              "USER=www-data", "GROUP=www-data"]
    slash = [run([recipe, "nginx.conf", "MOUNT=" + m] + common).stdout
             for m in ("/keywarden", "/keywarden/", "", "/")]
    tap.ok(slash[0] == slash[1] and slash[2] == slash[3] and slash[0] != slash[2],
           "MOUNT with or without its trailing slash renders the same recipe")
    unit = open(os.path.join(share, "keywarden.service")).read()
    tap.ok("ExecStart=/usr/bin/keywarden serve" in unit and "@" not in unit,
           "the systemd unit names the installed binary")
    if shutil.which("systemd-analyze"):
        shutil.copy(os.path.join(share, "keywarden.service"), os.path.join(tmp, "keywarden.service"))
        r = run(["systemd-analyze", "verify", "--man=no", os.path.join(tmp, "keywarden.service")])
        bad = [ln for ln in (r.stdout + r.stderr).splitlines()
               if "keywarden.service" in ln and ("nknown" in ln or "nvalid" in ln)]
        tap.eq(bad, [], "systemd-analyze verify finds no unknown or invalid setting in the unit")
    else:
        tap.ok(True, "systemd-analyze verify # SKIP systemd-analyze is not installed")
    if shutil.which("logrotate"):
        r = run(["logrotate", "-d", os.path.join(share, "keywarden.logrotate")])
        tap.ok(r.returncode == 0 and "error" not in r.stderr.lower(),
               "logrotate -d reads the snippet without an error", r.stderr[-500:])
    else:
        tap.ok(True, "logrotate -d # SKIP logrotate is not installed (scripts/bootstrap installs it)")


def static(tmp):
    r = run(["make", "-s", "-C", ROOT, "static"])
    if not tap.ok(r.returncode == 0 and os.path.exists(STATIC), "make static",
                  r.stdout + r.stderr):
        return
    r = run(["ldd", STATIC])
    tap.ok(r.returncode == 0 and not any(lib in r.stdout for lib in
                                         ("libfcgi", "libjson-c", "libgcrypt", "libdb")),
           "the shared-host build needs none of libfcgi, json-c, libgcrypt, Berkeley DB",
           r.stdout)
    empty = {"LD_LIBRARY_PATH": os.path.join(tmp, "no-libraries")}
    r = run([STATIC, "version"], env=empty)
    tap.ok(r.returncode == 0, "it runs with an empty library path", r.stderr)
    with Server(workers=1, env=empty) as srv:
        r = srv.request("GET", "/health")
        tap.eq(r.status, 200, "it serves through lighttpd with an empty library path")
        r = srv.admin("POST", "/key/generate", {"key_alias": "static-build"})
        tap.eq(r.status, 200, "and issues a key into its Berkeley DB store")


tap.run(main)
