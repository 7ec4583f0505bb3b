"""smoke.py: the contract smoke set that every hosting recipe's test runs through its web
server, and what those tests share: a client for a server's port and keywarden's mount, keywarden
on its own socket, and a web server in the foreground.

    c = Client(port, mount="/keywarden")
    smoke(c, "nginx /keywarden")            # health, generate, info, verify, block, refused
    gateway(c, upstream, "nginx")           # the authorizer in front of tests/lib/upstream.py

and each server started from its recipe: nginx(), apache() (mod_proxy_fcgi and
mod_authnz_fcgi) and fcgid_site() (mod_fcgid in a user's document root).
"""
import grp
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import tap
from kwserver import BIN, MASTER_KEY, ROOT, Response, free_port, read_text

RECIPE = os.path.join(ROOT, "scripts", "recipe")
APACHE = "/usr/sbin/apache2"
MOD_FCGID = "/usr/lib/apache2/modules/mod_fcgid.so"
NGINX = "/usr/sbin/nginx"


def need(*programs):
    """Skips the whole script (TAP skip_all, naming it) when a server's program is not
    installed; returns True otherwise."""
    for p in programs:
        if shutil.which(p) is None and not os.path.exists(p):
            tap.skip_all("%s is not installed" % p)
    return True


def server_user():
    """The user and group a web server's workers run as: nobody when started as root (Apache
    refuses to run as root), else whoever runs the test."""
    if os.geteuid() == 0:
        return "nobody", "nogroup"
    return pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


def render(recipe, out, **placeholders):
    """scripts/recipe NAME with placeholders into the file out."""
    r = subprocess.run([RECIPE, recipe] + ["%s=%s" % kv for kv in sorted(placeholders.items())],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("scripts/recipe %s: %s" % (recipe, r.stderr))
    with open(out, "w") as f:
        f.write(r.stdout)
    return out


def tmpdir(prefix):
    """A temporary directory the web server's user can enter (mkdtemp's is 0700)."""
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


def owned_dir(path, user, group):
    """A directory for a process that runs as user and group (chowned when we are root)."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    if os.geteuid() == 0:
        shutil.chown(path, user, group)
    return path


def can_connect(addr):
    """addr: a port on 127.0.0.1 or a Unix socket's path."""
    fam = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    with socket.socket(fam) as s:
        s.settimeout(2)
        try:
            s.connect(addr if fam == socket.AF_UNIX else ("127.0.0.1", addr))
            return True
        except OSError:
            return False


class Process:
    """A program in the foreground in its own session, output to log; stop() ends it and
    anything it started that is still in its process group."""

    def __init__(self, argv, log, env=None, ready=None, user=None, group=None):
        self.argv, self.log_path, self.env, self.ready = argv, log, env, ready
        self.user, self.group = user, group
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=30):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, user=self.user,
                                         group=self.group)
        deadline = time.time() + timeout
        while self.ready is not None and not can_connect(self.ready):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("%s did not start: %s" % (self.argv[0], self.read_log()))
            time.sleep(0.05)
        return self

    def stop(self, timeout=30):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()

    def read_log(self):
        return read_text(self.log_path)


def keywarden(tmp, listen, workers=2, data_dir=None, user=None, group=None, max_workers=None,
              env=None):
    """keywarden serve on its own socket: listen is a Unix socket's path or a port on
    127.0.0.1; max_workers, the pool's cap (KEYWARDEN_MAX_WORKERS; keywarden's default
    when None); env, more settings.  Not started; use as a context manager."""
    data_dir = data_dir or os.path.join(tmp, "data")
    env = dict(os.environ, KEYWARDEN_MASTER_KEY=MASTER_KEY, KEYWARDEN_LOG_LEVEL="info",
               **(env or {}))
    if max_workers is not None:
        env["KEYWARDEN_MAX_WORKERS"] = str(max_workers)
    arg = ["-s", listen] if isinstance(listen, str) else ["-p", "127.0.0.1:%d" % listen]
    p = Process([BIN, "serve", "-d", data_dir, "-w", str(workers)] + arg,
                os.path.join(tmp, "keywarden.log"), env=env, ready=listen, user=user,
                group=group)
    p.data_dir = data_dir
    return p


def nginx(tmp, recipe, name, **placeholders):
    """nginx with a rendered recipe in the foreground; not started."""
    run = os.path.join(tmp, name)
    for d in ("body", "fastcgi", "proxy", "uwsgi", "scgi"):
        os.makedirs(os.path.join(run, "nginx-tmp", d))
    user, group = server_user()
    port = free_port()
    conf = render(recipe, os.path.join(run, "nginx.conf"), BIND="127.0.0.1", PORT=port,
                  RUN_DIR=run, USER=user, GROUP=group, **placeholders)
    r = subprocess.run([NGINX, "-t", "-p", run, "-c", conf], capture_output=True, text=True)
    tap.ok(r.returncode == 0, "%s: nginx -t accepts the rendered recipe" % name, r.stderr)
    p = Process([NGINX, "-p", run, "-c", conf, "-g", "daemon off;"],
                os.path.join(run, "nginx.out"), ready=port)
    p.port = port
    p.error_log = os.path.join(run, "nginx-error.log")
    return p


def apache(tmp, recipe, name, extra="", **placeholders):
    """Apache with a rendered recipe in the foreground; not started.  extra: lines appended
    to the rendered configuration."""
    run = os.path.join(tmp, name)
    os.makedirs(os.path.join(run, "htdocs"))
    user, group = server_user()
    port = free_port()
    conf = render(recipe, os.path.join(run, "apache.conf"), BIND="127.0.0.1", PORT=port,
                  RUN_DIR=run, USER=user, GROUP=group, **placeholders)
    with open(conf, "a") as f:
        f.write(extra)
    r = subprocess.run([APACHE, "-t", "-f", conf], capture_output=True, text=True)
    tap.ok(r.returncode == 0, "%s: apache2 -t accepts the rendered recipe" % name,
           r.stdout + r.stderr)
    p = Process([APACHE, "-f", conf, "-DFOREGROUND"], os.path.join(run, "apache.out"),
                ready=port)
    p.port = port
    p.error_log = os.path.join(run, "apache-error.log")
    return p


def fcgid_site(tmp, settings=None):
    """The shared-hosting recipe: a user's home in tmp, whose document root holds the
    .htaccess and the wrapper keywarden.fcgi at its root and in keywarden/, the wrapper
    pointing at a data directory outside the document root, whose keywarden.conf holds
    the master key and settings (NAME -> value); and Apache with mod_fcgid serving it, in
    the foreground, not started.  The Process has port, docroot, data_dir and error_log
    (keywarden's stderr goes there)."""
    user, group = server_user()
    home = os.path.join(tmp, "home")
    docroot = os.path.join(home, "public_html")
    data_dir = os.path.join(home, "keywarden-data")
    run = os.path.join(tmp, "run")
    os.makedirs(run)
    for d in (docroot, os.path.join(docroot, "keywarden")):
        os.makedirs(d, exist_ok=True)
        render("apache-fcgid.htaccess", os.path.join(d, ".htaccess"))
        w = render("keywarden.fcgi", os.path.join(d, "keywarden.fcgi"), BIN=BIN,
                   DATA_DIR=data_dir)
        os.chmod(w, 0o755)
    # the data directory's settings file: the master key, never in the document root
    os.makedirs(data_dir, mode=0o700)
    conf_file = os.path.join(data_dir, "keywarden.conf")
    with open(conf_file, "w") as f:
        f.write("KEYWARDEN_MASTER_KEY=%s\nKEYWARDEN_LOG_LEVEL=info\n" % MASTER_KEY)
        f.writelines("%s=%s\n" % kv for kv in sorted((settings or {}).items()))
    os.chmod(conf_file, 0o600)
    if os.geteuid() == 0:
        for d, _, files in os.walk(home):
            shutil.chown(d, user, group)
            for name in files:
                shutil.chown(os.path.join(d, name), user, group)
    os.chmod(home, 0o755)
    port = free_port()
    conf = render("apache-fcgid-vhost.conf", os.path.join(run, "apache.conf"), BIND="127.0.0.1",
                  PORT=port, RUN_DIR=run, DOCROOT=docroot, USER=user, GROUP=group)
    r = subprocess.run([APACHE, "-t", "-f", conf], capture_output=True, text=True)
    tap.ok(r.returncode == 0, "apache2 -t accepts the rendered recipe", r.stdout + r.stderr)
    p = Process([APACHE, "-f", conf, "-DFOREGROUND"], os.path.join(run, "apache.out"),
                ready=port)
    p.port, p.docroot, p.data_dir = port, docroot, data_dir
    p.error_log = os.path.join(run, "apache-error.log")
    return p


def kw_processes(data_dir):
    """pids of keywarden processes (kw-*) serving data_dir, wherever they came from."""
    marker = ("KEYWARDEN_DATA_DIR=" + data_dir).encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/comm" % pid) as f:
                if not f.read().startswith("kw-"):
                    continue
            with open("/proc/%s/environ" % pid, "rb") as f:
                if marker not in f.read().split(b"\0"):
                    continue
            with open("/proc/%s/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(pid))
        except OSError:
            continue
    return found


class Client:
    """HTTP to a web server on 127.0.0.1:port, keywarden's paths under mount ("" or
    "/keywarden")."""

    def __init__(self, port, mount="", master_key=MASTER_KEY):
        self.port, self.mount, self.master_key = port, mount, master_key

    def request(self, method, path, body=None, headers=None, timeout=30, mounted=True):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        hdrs = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, (self.mount if mounted else "") + path, body=data,
                         headers=hdrs)
            r = conn.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            conn.close()

    def admin(self, method, path, body=None, headers=None, **kw):
        hdrs = {"Authorization": "Bearer " + self.master_key}
        hdrs.update(headers or {})
        return self.request(method, path, body=body, headers=hdrs, **kw)


def envelope(r, status):
    """r is LiteLLM's error envelope with status."""
    e = (r.json or {}).get("error") if isinstance(r.json, dict) else None
    return (r.status == status and isinstance(e, dict) and e.get("code") == str(status) and
            "message" in e)


def wait_healthy(c, timeout=30):
    """Waits for GET /health through the server: mod_fcgid starts keywarden on the first
    request, and a server may answer before its backend listens."""
    deadline = time.time() + timeout
    r = None
    while time.time() < deadline:
        try:
            r = c.request("GET", "/health")
            if r.status == 200:
                return r
        except OSError:
            pass
        time.sleep(0.1)
    return r


def smoke(c, label, outside=True):
    """The smoke set through a server: health, generate, info, verify, block, refused; paths
    under c.mount.  outside: also check that a path outside the mount is not keywarden's.
    Returns the (blocked) key."""
    r = wait_healthy(c)
    tap.ok(r is not None and r.status == 200 and (r.json or {}).get("status") == "healthy",
           "%s: GET /health" % label, repr(r))
    alias = "smoke-%s" % secrets.token_hex(4)
    r = c.admin("POST", "/key/generate", {"key_alias": alias, "models": ["gpt-4"]})
    key = (r.json or {}).get("key") or ""
    tap.ok(r.status == 200 and key.startswith("sk-"), "%s: POST /key/generate with the "
           "master key" % label, repr(r))
    r = c.request("POST", "/key/generate", {})
    tap.ok(envelope(r, 401), "%s: POST /key/generate without a key is 401" % label, repr(r))
    r = c.admin("GET", "/key/info?key=" + key)
    info = (r.json or {}).get("info") or {}
    tap.ok(r.status == 200 and info.get("key_alias") == alias, "%s: GET /key/info?key=" % label,
           repr(r))
    r = c.admin("POST", "/key/verify", {"key": key, "model": "gpt-4"})
    tap.ok(r.status == 200 and (r.json or {}).get("code") == "VALID",
           "%s: POST /key/verify is VALID" % label, repr(r))
    r = c.admin("POST", "/key/verify", {"key": key, "model": "gpt-3.5-turbo"})
    tap.ok(r.status == 200 and (r.json or {}).get("code") == "MODEL_NOT_ALLOWED",
           "%s: POST /key/verify for another model is MODEL_NOT_ALLOWED" % label, repr(r))

    # routing: the path after the mount, as the client sent it
    r = c.admin("GET", "/api/providers/..%2f..%2fhealth")
    tap.ok(r.status != 200 and b"healthy" not in r.body, "%s: an encoded slash stays in its "
           "segment (/api/providers/..%%2f..%%2fhealth is not /health)" % label, repr(r))
    r = c.admin("GET", "/key/list?size=1&key_alias=" + alias)
    tap.ok(r.status == 200 and (r.json or {}).get("total_count") == 1,
           "%s: the query string reaches keywarden (GET /key/list?key_alias=)" % label, repr(r))
    r = c.admin("GET", "/no/such/route")
    tap.ok(envelope(r, 404), "%s: an unknown path is keywarden's 404" % label, repr(r))
    if outside and c.mount:
        r = c.admin("GET", "/health", mounted=False)
        tap.ok(b"healthy" not in r.body, "%s: /health outside %s is not keywarden's" %
               (label, c.mount), repr(r))

    r = c.admin("POST", "/key/block", {"key": key})
    tap.ok(r.status == 200 and (r.json or {}).get("blocked") is True,
           "%s: POST /key/block" % label, repr(r))
    r = c.request("GET", "/key/info", headers={"Authorization": "Bearer " + key})
    tap.ok(envelope(r, 401) and key.encode() not in r.body, "%s: the blocked key is refused "
           "(401) and not echoed" % label, repr(r))
    r = c.admin("POST", "/key/verify", {"key": key})
    tap.ok(r.status == 200 and (r.json or {}).get("code") == "BLOCKED",
           "%s: POST /key/verify on it is BLOCKED" % label, repr(r))
    return key


def gateway(c, up, label, headers_on_200=False):
    """The authorizer in front of an upstream (tests/lib/upstream.py) through a server whose
    keywarden API is at c.mount and whose /v1/ goes to the upstream after keywarden's check.
    headers_on_200: the server adds the authorizer's x-ratelimit-* to the upstream's 200."""
    def models(key=None):
        h = {"Authorization": "Bearer " + key} if key else {}
        return c.request("GET", "/v1/models", headers=h, mounted=False)

    def generate(body):
        r = c.admin("POST", "/key/generate", body)
        if r.status != 200:
            tap.bail("%s: POST /key/generate %s: %r" % (label, body, r))
        return r.json["key"]

    seen = len(up.requests)
    r = models()
    tap.ok(envelope(r, 401), "%s gateway: /v1/models without a key is 401" % label, repr(r))
    unknown = "sk-" + secrets.token_urlsafe(16)
    r = models(unknown)
    tap.ok(envelope(r, 401) and unknown.encode() not in r.body,
           "%s gateway: an unknown key is 401, not echoed" % label, repr(r))
    tap.eq(len(up.requests), seen, "%s gateway: refused requests never reach the upstream" %
           label)
    key = generate({"key_alias": "gw-%s" % secrets.token_hex(4)})
    r = models(key)
    ids = [m.get("id") for m in (r.json or {}).get("data", [])] if r.status == 200 else []
    tap.ok(r.status == 200 and "gpt-4" in ids, "%s gateway: a valid key reaches the upstream" %
           label, repr(r))
    tap.eq(len(up.requests), seen + 1, "%s gateway: the upstream saw that one request" % label)
    for _ in range(3):
        # rpm windows are UTC minutes: a pair that straddles one proves nothing, so again
        minute = int(time.time() // 60)
        rpm = generate({"key_alias": "gw-rpm-%s" % secrets.token_hex(4), "rpm_limit": 1})
        before = len(up.requests)
        first, second = models(rpm), models(rpm)
        if int(time.time() // 60) == minute:
            break
    tap.ok(first.status == 200 and envelope(second, 429) and len(up.requests) == before + 1,
           "%s gateway: rpm_limit 1: the second request in the minute is 429 and stays here" %
           label, [repr(first), repr(second), len(up.requests) - before])
    tap.ok(second.headers.get("retry-after", "").isdigit(),
           "%s gateway: the 429 has Retry-After" % label, second.headers)
    msg = ((second.json or {}).get("error") or {}).get("message", "")
    tap.ok("RATE_LIMITED" in msg and "rpm_limit" in msg and
           second.headers.get("x-ratelimit-limit-requests") == "1" and
           second.headers.get("x-ratelimit-remaining-requests") == "0",
           "%s gateway: the 429 keeps keywarden's message and x-ratelimit-* headers" % label,
           [msg, second.headers])
    if headers_on_200:
        tap.ok(first.headers.get("x-ratelimit-limit-requests") == "1" and
               first.headers.get("x-ratelimit-remaining-requests") == "0" and
               "x-ratelimit-reset-requests" in first.headers,
               "%s gateway: the 200 carries x-ratelimit-*, its remaining counting the request "
               "answered" % label, first.headers)
    # a parallel slot: its Retry-After is the expected wait, capped, not the lease's
    # 600 s, which current OpenAI clients obey before each retry
    par = generate({"key_alias": "gw-par-%s" % secrets.token_hex(4),
                    "max_parallel_requests": 1})
    first, second = models(par), models(par)
    ra = second.headers.get("retry-after", "")
    tap.ok(first.status == 200 and envelope(second, 429) and ra.isdigit() and 1 <= int(ra) <= 5,
           "%s gateway: max_parallel_requests 1: the second request in flight is 429 with "
           "Retry-After of at most 5 s" % label, [repr(first), repr(second)])

    # a completion: a body the authorizer does not read, and the usage the upstream reports
    up.service_key = c.master_key
    up.set_keywarden("http://127.0.0.1:%d%s" % (c.port, c.mount))
    reports = len(up.reports)
    r = c.request("POST", "/v1/chat/completions",
                  {"model": "gpt-4", "messages": [{"role": "user", "content": "hi there"}]},
                  headers={"Authorization": "Bearer " + key, "x-model": "gpt-4",
                           "x-request-id": "smoke-" + secrets.token_hex(4)}, mounted=False)
    tap.ok(r.status == 200 and "You said: hi there" in r.body.decode(),
           "%s gateway: POST /v1/chat/completions with a body passes" % label, repr(r))
    info = (c.admin("GET", "/key/info?key=" + key).json or {}).get("info") or {}
    tap.ok(len(up.reports) == reports + 1 and up.reports[-1][1] == 200 and
           info.get("spend", 0) > 0, "%s gateway: the upstream's usage report reached keywarden "
           "through the server" % label, [up.reports[reports:], info.get("spend")])

    r = c.admin("POST", "/key/block", {"key": key})
    tap.ok(r.status == 200, "%s gateway: POST /key/block" % label, repr(r))
    before = len(up.requests)
    r = models(key)
    tap.ok(envelope(r, 401) and len(up.requests) == before,
           "%s gateway: the blocked key is refused (401) and stays here" % label, repr(r))
    return [key, rpm, unknown]


def console(c, label):
    """The console under c.mount/ui/ through a recipe: served by the web server itself with the
    strict Content-Security-Policy, its modules as JavaScript, and the API beside it."""
    r = c.request("GET", "/ui/")
    csp = r.headers.get("content-security-policy", "")
    tap.ok(r.status == 200 and b"js/main.js" in r.body and "script-src 'self'" in csp and
           "unsafe-inline" not in csp, "%s: GET /ui/ is the console, under a strict CSP" % label,
           "%r %s" % (r, csp))
    r = c.request("GET", "/ui/js/api.js")
    tap.ok(r.status == 200 and r.headers.get("content-type", "").startswith("text/javascript"),
           "%s: the console's modules are served as JavaScript" % label, repr(r))
