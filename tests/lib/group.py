"""group.py: a replicated group of keywarden sites on loopback, for tests/replication.t and
scripts/bench.  Each site is a kwserver.Server (the real lighttpd starting keywarden) with a
data directory of its own, all of them under one temporary directory (kept with KW_KEEP_TMP).

    with Group(3) as g:                 # site 0 creates the group, 1 and 2 join it
        m, secs = g.wait_master(10)     # the index of the master, and how long it took
        g.site(1).admin("POST", "/key/generate", {})    # a replica forwards the write
        g.kill(m)                       # SIGKILL its lighttpd and every keywarden of it
        g.restart(m)                    # again on its data directory
        j = g.join(g.master())          # a new site from a hot backup of the master's data

The settings each site's keywarden is given (in lighttpd's environment, which it inherits):
KEYWARDEN_GROUP_SITES, "REPHOST:REPPORT=URL" of every site in one order (a site that joins
later has the list of its day, itself last; the others keep theirs), KEYWARDEN_GROUP_SELF,
and KEYWARDEN_GROUP_PRIORITY.  Site 0 is made with `keywarden init`, with no
KEYWARDEN_MASTER_KEY set, so the master key is the master.key it writes; every other site
starts from `keywarden backup` of site 0 and `keywarden restore`, which carry master.key,
data.key and signing.key along, so the sites share their secrets."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import kwserver
from kwserver import Server, free_port, wait_for

HOST = "127.0.0.1"


class GroupUnsupported(RuntimeError):
    """The keywarden binary answers /health without a "group": it has no replication."""


def keywarden(args, env, timeout=120):
    """Runs the keywarden CLI (kwserver.BIN) with args; returns the CompletedProcess."""
    return subprocess.run([kwserver.BIN] + list(args), env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def plain_env(env):
    """env without the group's settings: for init, and the backup and restore of a data
    directory that is no site's yet."""
    return {k: v for k, v in env.items() if not k.startswith("KEYWARDEN_GROUP_")}


class Site(Server):
    """One site of a Group: a kwserver.Server with its replication address."""

    def __init__(self, index, tmp, rep_port, workers, env):
        super().__init__(workers=workers, env=env, master_key=None, tmp=tmp)
        # the master key is the data directory's master.key, never this environment's
        self.env.pop("KEYWARDEN_MASTER_KEY", None)
        self.index = index
        self.address = "%s:%d" % (HOST, rep_port)
        self.url = "http://%s:%d" % (HOST, self.port)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def health(self, timeout=2):
        """GET /health's JSON, or None when the site does not answer it."""
        if not self.alive():
            return None
        try:
            r = self.request("GET", "/health", timeout=timeout)
        except OSError:
            return None
        return r.json if r.status == 200 and isinstance(r.json, dict) else None

    def group(self):
        """/health's "group" member: {"self", "role", "master", "lsn"}, or None."""
        h = self.health()
        g = (h or {}).get("group")
        if h is not None and g is None:
            raise GroupUnsupported("%s answers /health without a \"group\" although "
                                   "KEYWARDEN_GROUP_SITES is set: %r" % (kwserver.BIN, h))
        return g if isinstance(g, dict) else None

    def role(self):
        return (self.group() or {}).get("role")

    def cli_env(self):
        """The site's environment with the master key, for `keywarden ... --url`."""
        return dict(self.env, KEYWARDEN_MASTER_KEY=self.master_key)


class Group:
    """n sites on loopback, each lighttpd + keywarden with KEYWARDEN_WORKERS=workers; started
    by start() or as a context manager.  priorities: each site's KEYWARDEN_GROUP_PRIORITY
    (None: keywarden's default); env: more settings for every site."""

    def __init__(self, n=3, workers=2, env=None, priorities=None, max_workers=None):
        self.tmp = tempfile.mkdtemp(prefix="kw-group-")
        os.chmod(self.tmp, 0o755)    # a web server's workers (nginx's, as nobody) enter it
        self.workers, self.max_workers = workers, max_workers
        self.env = dict(env or {})
        self.master_key = None
        self.sites = []
        self.ports = set()
        self.priorities = list(priorities or [None] * n)
        for i in range(n):
            self.sites.append(self._site(i))
        self.site_list = self._list(self.sites)
        for s in self.sites:
            self._configure(s, self.site_list, self.priorities[s.index])

    # --- making sites ---

    def _port(self):
        """A free loopback port that no site of the group has been given yet."""
        while True:
            p = free_port()
            if p not in self.ports:
                self.ports.add(p)
                return p

    def _site(self, i):
        s = Site(i, os.path.join(self.tmp, "site%d" % i), self._port(), self.workers,
                 dict(self.env))
        while s.port in self.ports:     # lighttpd's port, picked by Server itself
            s.port = self._port()
            s.url = "http://%s:%d" % (HOST, s.port)
            self._render(s)
        self.ports.add(s.port)
        if self.max_workers:
            s.env["KEYWARDEN_MAX_WORKERS"] = str(self.max_workers)
        return s

    @staticmethod
    def _render(s):
        """lighttpd.conf again, for a site whose port changed."""
        conf = subprocess.run(
            [os.path.join(kwserver.ROOT, "scripts", "render-config"),
             os.path.join(kwserver.ROOT, "scripts", "lighttpd.conf.in"),
             "BIND=127.0.0.1", "PORT=%d" % s.port, "RUN_DIR=" + s.run_dir,
             "BIN=" + kwserver.BIN, "DATA_DIR=" + s.data_dir],
            check=True, capture_output=True, text=True).stdout
        with open(s.conf, "w") as f:
            f.write(conf)

    @staticmethod
    def _list(sites):
        return ",".join("%s=%s" % (s.address, s.url) for s in sites)

    @staticmethod
    def _configure(s, site_list, priority):
        s.env["KEYWARDEN_GROUP_SITES"] = site_list
        s.env["KEYWARDEN_GROUP_SELF"] = s.address
        if priority is not None:
            s.env["KEYWARDEN_GROUP_PRIORITY"] = str(priority)

    def _seed(self, dest, src_dir, env, backup_env=None):
        """dest's data directory from `keywarden backup` of src_dir (hot when it serves)
        with backup_env (env by default), then `keywarden restore` with env."""
        out = os.path.join(self.tmp, "backup-%d-%d" % (len(self.sites), time.monotonic_ns()))
        p = keywarden(["backup", "-d", src_dir, out], backup_env or env)
        if p.returncode != 0:
            raise RuntimeError("keywarden backup -d %s %s: %s" % (src_dir, out, p.stderr))
        p = keywarden(["restore", out, dest.data_dir], env)
        if p.returncode != 0:
            raise RuntimeError("keywarden restore %s %s: %s" % (out, dest.data_dir, p.stderr))
        shutil.rmtree(out, ignore_errors=True)

    # --- the group ---

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        """Stops every site; each one's log is then checked for sanitizer reports, as
        kwserver.Server's exit does."""
        self.stop()
        errors = []
        for s in self.sites:
            try:
                s.__exit__(*exc)
            except RuntimeError as e:
                errors.append("site %d: %s" % (s.index, e))
        if os.environ.get("KW_KEEP_TMP") is None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if errors and exc[0] is None:
            raise RuntimeError("\n".join(errors))

    def start(self, timeout=30):
        """Makes site 0's data directory, seeds the others from it, starts site 0 and waits
        for it to be master, then the others, each until it is a replica of site 0."""
        first = self.sites[0]
        env = plain_env(first.env)
        p = keywarden(["init", "-d", first.data_dir], env)
        if p.returncode != 0:
            raise RuntimeError("keywarden init -d %s: %s" % (first.data_dir, p.stderr))
        with open(os.path.join(first.data_dir, "master.key")) as f:
            self.master_key = f.read().strip()
        for s in self.sites:
            s.master_key = self.master_key
        for s in self.sites[1:]:
            self._seed(s, first.data_dir, env)
        first.start()
        if not self.wait_role(0, "master", timeout=timeout):
            raise RuntimeError("site 0 did not become master in %d s: %r\n%s"
                               % (timeout, first.health(), first.read_log()[-3000:]))
        for s in self.sites[1:]:
            s.start()
        for s in self.sites[1:]:
            if not self.wait_role(s.index, "replica", first.address, timeout):
                raise RuntimeError("site %d did not become a replica of %s in %d s: %r\n%s"
                                   % (s.index, first.address, timeout, s.health(),
                                      s.read_log()[-3000:]))
        return self

    def site(self, i):
        return self.sites[i]

    def __len__(self):
        return len(self.sites)

    def live(self):
        """Indexes of the sites whose lighttpd runs."""
        return [s.index for s in self.sites if s.alive()]

    def processes(self):
        """pids of every keywarden process of every site."""
        return sorted(p for s in self.sites for p in s.processes())

    def master(self, exclude=()):
        """The index of a running site whose /health says it is master (not one of
        exclude), or None."""
        for s in self.sites:
            if s.index not in exclude and (s.group() or {}).get("role") == "master":
                return s.index
        return None

    def wait_master(self, timeout=10, exclude=(), agreed=True):
        """Waits for a master (not one of exclude); with agreed, also until every other
        running site, exclude's aside, names it its master.  Returns (index or None, the
        seconds waited)."""
        t0 = time.monotonic()
        while True:
            m = self.master(exclude)
            if m is not None and (not agreed or all(
                    (self.sites[i].group() or {}).get("master") == self.sites[m].address
                    for i in self.live() if i != m and i not in exclude)):
                return m, time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                return None, time.monotonic() - t0
            time.sleep(0.05)

    def wait_role(self, i, role, master=None, timeout=30):
        """Waits until site i's /health says role (and, given, master as its master);
        returns its "group" then, or None at the timeout."""
        s = self.sites[i]

        def there():
            g = s.group()
            return g if g and g.get("role") == role and (
                master is None or g.get("master") == master) else None
        return wait_for(there, timeout=timeout)

    def kill(self, i):
        """SIGKILLs site i: its lighttpd's process group (keywarden's processes are in it)
        and every keywarden process of its data directory, at once."""
        s = self.sites[i]
        if s.proc is not None and s.proc.poll() is None:
            try:
                os.killpg(s.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in s.processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if s.proc is not None:
            s.proc.wait()
        wait_for(lambda: not s.processes(), timeout=10)
        if not s.log.closed:
            s.log.close()

    def restart(self, i, timeout=15):
        """Starts site i again on its data directory, with its settings."""
        s = self.sites[i]
        if s.alive():
            raise RuntimeError("site %d still runs" % i)
        s.start(timeout)
        return s

    def stop(self, i=None, timeout=40):
        """Stops site i (SIGTERM), or all at once, and waits for their keywarden processes
        to leave (the pool manager checkpoints as it goes)."""
        sites = self.sites if i is None else [self.sites[i]]
        for s in sites:
            if s.alive():
                s.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for s in sites:
            if s.proc is None:
                continue
            try:
                s.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(s.proc.pid, signal.SIGKILL)
                s.proc.wait()
            if not s.log.closed:
                s.log.close()
        for s in sites:
            if not wait_for(lambda: not s.processes(), timeout=max(1, deadline - time.monotonic())):
                for pid in s.processes():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def join(self, from_site, priority=0, timeout=30):
        """A new site from a hot backup of from_site's data directory (while it serves),
        given the group's list with itself appended (the others keep theirs) and priority;
        started, and waited for until it is a replica of the master.  Returns its index."""
        src = self.sites[from_site]
        s = self._site(len(self.sites))
        s.master_key = self.master_key
        site_list = self._list(self.sites + [s])
        self._configure(s, site_list, priority)
        # the backup of a serving member joins its regions: with the member's own settings,
        # as its operator would run it; the restore makes a plain data directory
        self._seed(s, src.data_dir, plain_env(src.env), backup_env=src.env)
        self.sites.append(s)
        self.priorities.append(priority)
        s.start()
        m = self.master(exclude=(s.index,))
        master = self.sites[m].address if m is not None else None
        if not self.wait_role(s.index, "replica", master, timeout):
            raise RuntimeError("the joined site did not become a replica of %s in %d s: %r\n%s"
                               % (master, timeout, s.health(), s.read_log()[-3000:]))
        return s.index

    def read_logs(self):
        """{index: the site's server log so far}."""
        return {s.index: s.read_log() for s in self.sites}
