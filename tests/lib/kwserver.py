"""kwserver.py: starts the real lighttpd with keywarden on a free loopback port, for the contract tests.

With KW_PRISM=1 in the environment, Server.request goes through Prism's
validating proxy (scripts/prism, `prism proxy spec/openapi.yaml`) in front of
lighttpd, and the server fails the test on what Prism reports in each
answer's sl-violations header: any response violation, and a request
violation that keywarden answered 2xx (it accepted what the spec forbids;
refusing it is the point of many tests)."""
import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("KEYWARDEN_BIN", os.path.join(ROOT, "build", "keywarden"))
MASTER_KEY = "sk-test-master-key-0123456789"
PRISM = os.path.join(ROOT, "scripts", "prism", "node_modules", ".bin", "prism")
SPEC = os.path.join(ROOT, "spec", "openapi.yaml")


def prism_wanted():
    return os.environ.get("KW_PRISM") == "1"


def prism_passes(data, headers):
    """Whether Prism forwards the request as it is: it never answers a request
    whose body does not parse as JSON, and it gives a body without a
    Content-Type one of its own, so such requests go to lighttpd directly."""
    if not data:
        return True
    if not any(k.lower() == "content-type" for k in headers):
        return False
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


def read_text(path):
    """A log file's text so far ("" when there is none yet), undecodable bytes replaced."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "<%d %s>" % (self.status, self.body[:300])


class Server:
    """lighttpd + keywarden in a temporary directory; use as a context manager."""

    def __init__(self, workers=2, env=None, data_dir=None, master_key=MASTER_KEY,
                 template="lighttpd.conf.in", placeholders=None, max_workers=None, tmp=None):
        """template: a config template in scripts/; placeholders: NAME -> value for
        the template's placeholders beyond BIND, PORT, RUN_DIR, BIN and DATA_DIR.
        max_workers: what the pool may grow to when every worker is busy; by
        default the pool stays at workers, so a test can count its workers.
        tmp: the server's own directory (made; removed on exit like a temporary
        one), for a caller that keeps several servers under one (tests/lib/group.py)."""
        if tmp is not None:
            os.makedirs(tmp)
        self.tmp = tmp or tempfile.mkdtemp(prefix="kw-test-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.run_dir = os.path.join(self.tmp, "run")
        self.port = free_port()
        self.master_key = master_key
        os.makedirs(os.path.join(self.run_dir, "htdocs"))
        conf = subprocess.run(
            [os.path.join(ROOT, "scripts", "render-config"),
             os.path.join(ROOT, "scripts", template),
             "BIND=127.0.0.1", "PORT=%d" % self.port, "RUN_DIR=" + self.run_dir,
             "BIN=" + BIN, "DATA_DIR=" + self.data_dir] +
            ["%s=%s" % kv for kv in sorted((placeholders or {}).items())],
            check=True, capture_output=True, text=True).stdout
        self.conf = os.path.join(self.run_dir, "lighttpd.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.env = dict(os.environ)
        self.env.update({"KEYWARDEN_WORKERS": str(workers),
                         "KEYWARDEN_MAX_WORKERS": str(max_workers or workers),
                         "KEYWARDEN_LOG_LEVEL": "info"})
        if master_key:
            self.env["KEYWARDEN_MASTER_KEY"] = master_key
        self.env.update(env or {})
        self.log_path = os.path.join(self.tmp, "server.log")
        self.proc = None
        self.prism = None
        self.prism_port = None
        self.prism_log_path = os.path.join(self.tmp, "prism.log")
        self.violations = []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        self.stop_prism()
        log = self.read_log()
        if os.environ.get("KW_KEEP_TMP") is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        # a worker that trips a sanitizer is replaced by the pool, so its
        # report in the log is the only trace: make it fail the test
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            if marker in log and exc[0] is None:
                raise RuntimeError("sanitizer report in the server log:\n" + log[-4000:])
        if self.violations and exc[0] is None:
            raise RuntimeError("Prism found %d answer(s) that disagree with spec/openapi.yaml:\n"
                               % len(self.violations) + "\n".join(self.violations[:50]))

    def start(self, timeout=15):
        self.log = open(self.log_path, "ab")
        if prism_wanted() and self.prism is None:
            self.start_prism()
        self.proc = subprocess.Popen(["lighttpd", "-D", "-f", self.conf], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("lighttpd exited: " + self.read_log())
            try:
                self.request("GET", "/health")
                if len(self.workers()) > 0:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not answer in %ds: %s" % (timeout, self.read_log()))

    def stop(self, sig=signal.SIGTERM, timeout=40):
        """Stops lighttpd with sig; returns its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()
        finally:
            self.log.close()

    def read_log(self):
        return read_text(self.log_path)

    def start_prism(self):
        """Prism's validating proxy on a free port in front of lighttpd's; it
        stays up across restarts of lighttpd, whose port does not change."""
        if not os.path.exists(PRISM):
            raise RuntimeError("KW_PRISM=1 needs %s: run npm ci in scripts/prism" % PRISM)
        self.prism_port = free_port()
        with open(self.prism_log_path, "ab") as log:
            self.prism = subprocess.Popen(
                [PRISM, "proxy", "--cors=false", "--host", "127.0.0.1",
                 "--port", str(self.prism_port), "-v", "warn", SPEC,
                 "http://127.0.0.1:%d" % self.port],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop_prism)    # should the test die before __exit__
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.prism.poll() is not None:
                raise RuntimeError("prism exited: " + read_text(self.prism_log_path))
            try:
                with socket.create_connection(("127.0.0.1", self.prism_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("prism did not listen in 60s: " + read_text(self.prism_log_path))

    def stop_prism(self):
        if self.prism is None or self.prism.poll() is not None:
            return
        os.killpg(self.prism.pid, signal.SIGTERM)
        try:
            self.prism.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.prism.pid, signal.SIGKILL)
            self.prism.wait()

    def judge(self, method, path, response):
        """Takes Prism's sl-violations header off response and keeps what fails."""
        raw = response.headers.pop("sl-violations", None)
        if raw is None:
            return
        for v in json.loads(raw):
            where = v.get("location") or ["?"]
            if where[0] == "response" or 200 <= response.status < 300:
                self.violations.append("%s %s -> %d: %s %s: %s" % (
                    method, path, response.status, v.get("severity"),
                    ".".join(map(str, where)), v.get("message")))

    def processes(self, comm=None):
        """pids of keywarden processes serving this data directory, optionally by name."""
        marker = ("KEYWARDEN_DATA_DIR=" + self.data_dir).encode()
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/comm" % pid) as f:
                    name = f.read().strip()
                if not name.startswith("kw-") or (comm and name != comm):
                    continue
                with open("/proc/%s/environ" % pid, "rb") as f:
                    if marker not in f.read().split(b"\0"):
                        continue
                with open("/proc/%s/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
                found.append(int(pid))
            except OSError:
                continue
        return sorted(found)

    def workers(self):
        return self.processes("kw-worker")

    def manager(self):
        m = self.processes("kw-manager")
        return m[0] if m else None

    def request(self, method, path, body=None, headers=None, raw=None, timeout=30):
        """Sends one request; body is JSON-encoded unless raw bytes are given."""
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        via_prism = self.prism_port is not None and prism_passes(data, hdrs)
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.prism_port if via_prism else self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            response = Response(r.status, r.getheaders(), r.read())
        finally:
            conn.close()
        if via_prism:
            self.judge(method, path, response)
        return response

    def admin(self, method, path, body=None, headers=None, timeout=30):
        hdrs = {"Authorization": "Bearer " + self.master_key}
        hdrs.update(headers or {})
        return self.request(method, path, body=body, headers=hdrs, timeout=timeout)


def wait_for(cond, timeout=10, interval=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    return cond()
