#!/usr/bin/python3
"""cli.t: the operator's commands end to end on temporary data directories, some beside a serving keywarden (README "Operator's commands"; man/keywarden.8)."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import BIN, ROOT, Server, wait_for  # noqa: E402

MAN = os.path.join(ROOT, "man", "keywarden.8")
SECRETS = ("data.key", "signing.key", "master.key")


def kw(*args, env=None, stdin=None, timeout=120):
    """Runs the keywarden command with a clean environment: no master key or data directory set."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
    e["KEYWARDEN_LOG_LEVEL"] = "warn"
    e.update(env or {})
    return subprocess.run([BIN] + list(args), env=e, input=stdin, capture_output=True,
                          text=True, timeout=timeout)


def mode(path):
    return os.stat(path).st_mode & 0o777


def read(path):
    with open(path) as f:
        return f.read()


def man_commands():
    """The SYNOPSIS of the man page: command name -> the options it lists."""
    text = read(MAN)
    synopsis = text[text.index(".Sh SYNOPSIS"):text.index(".Sh DESCRIPTION")]
    found = {}
    for block in synopsis.split("\n.Nm\n")[1:]:
        words, flags = [], []
        for line in block.splitlines():
            toks = [t.lstrip(".") for t in line.split()]
            for i, t in enumerate(toks):
                if t == "Cm" and i + 1 < len(toks):
                    words += [w for w in toks[i + 1:] if not w[0].isupper()][:2]
                if t == "Fl" and i + 1 < len(toks):
                    flag = toks[i + 1].replace("\\-", "-")
                    flags.append("-" + flag)
        found[" ".join(words) if words else "serve"] = flags
    return found


def test_man_and_help():
    if shutil.which("mandoc") is None:
        tap.ok(True, "mandoc -Tlint on man/keywarden.8 # SKIP mandoc is not installed")
    else:
        p = subprocess.run(["mandoc", "-Tlint", "-Wwarning", MAN], capture_output=True, text=True,
                           timeout=60)
        tap.ok(p.returncode == 0 and not p.stdout and not p.stderr,
               "mandoc -Tlint -Wwarning finds nothing in man/keywarden.8", p.stdout + p.stderr)

    listed = man_commands()
    p = kw("help")
    tap.eq(p.returncode, 0, "keywarden help exits 0")
    helped = {m.group(1).strip() for m in re.finditer(r"^  keywarden ([a-z -]+?)(?: \[| [A-Z]|$)",
                                                      p.stdout, re.M)}
    tap.eq(helped, set(listed) - {"help"}, "keywarden help lists the commands the man page does")
    bad = []
    for cmd, flags in sorted(listed.items()):
        if cmd == "help":
            continue
        h = kw(*cmd.split(), "--help")
        h2 = kw("help", *cmd.split())
        h3 = kw(*cmd.split(), "-h")
        missing = [f for f in flags if not re.search(r"(^|[\s\[,|])%s\b" % re.escape(f), h.stdout)]
        if (h.returncode != 0 or h2.stdout != h.stdout or h3.stdout != h.stdout or missing or
                ("usage: keywarden " + cmd) not in h.stdout or "Exit status" not in h.stdout):
            bad.append((cmd, h.returncode, missing, h.stdout[:200]))
    tap.ok(not bad, "each command's --help (and help CMD, -h) names the options the man page "
           "lists for it, and its exit status", bad)

    # a group of commands (`key`, `master-key`...): help GROUP and GROUP --help
    # list its commands and exit 0; the group alone is a usage error naming them
    groups = sorted({cmd.split()[0] for cmd in listed if " " in cmd})
    bad = []
    for g in groups:
        members = sorted(c for c in listed if c.split()[0] == g and " " in c)
        h, h2, h3, bare = kw("help", g), kw(g, "--help"), kw(g, "-h"), kw(g)
        if (h.returncode != 0 or h2.returncode != 0 or h2.stdout != h.stdout or
                h3.stdout != h.stdout or h.stderr or
                any(("keywarden " + c) not in h.stdout for c in members) or
                bare.returncode != 2 or any(("keywarden " + c) not in bare.stderr for c in members)):
            bad.append((g, h.returncode, h2.returncode, bare.returncode, h.stdout[:200], h.stderr))
    tap.ok(groups and "key" in groups and "master-key" in groups and not bad,
           "help GROUP and GROUP --help list each of the group's commands and exit 0; "
           "the group alone exits 2 naming them (%s)" % " ".join(groups), bad)
    p = kw("help", "no-such-command")
    tap.ok(p.returncode == 2 and "no such command: no-such-command" in p.stderr and not p.stdout,
           "help of an unknown command is a usage error", p.stderr)

    # every setting config.c reads is in the man page's ENVIRONMENT
    config = read(os.path.join(ROOT, "fcgi-app", "config.c"))
    known = set(re.findall(r'"(KEYWARDEN_[A-Z_]+)"',
                           config[config.index("known[] = {"):config.index("};",
                                                                           config.index("known[] = {"))]))
    known |= {"KEYWARDEN_DATA_DIR", "KEYWARDEN_CLOCK_FILE"}
    man = read(MAN)
    env = man[man.index(".Sh ENVIRONMENT"):man.index(".Sh FILES")]
    tap.ok(all(".It Ev " + k in env for k in known), "the man page describes every setting",
           sorted(k for k in known if ".It Ev " + k not in env))


def test_usage_errors(tmp):
    cases = [
        (["no-such-command"], "an unknown command"),
        (["verify", "-x"], "an unknown option"),
        (["verify", "--alias", "a"], "another command's option"),
        (["backup"], "a missing operand"),
        (["verify", "extra"], "an extra operand"),
        (["restore", os.path.join(tmp, "only-one")], "restore with one operand"),
        (["master-key"], "master-key without show or rotate"),
        (["signing-key", "burn"], "an unknown signing-key command"),
        (["serve", "-w", "0"], "serve -w 0"),
        (["export", "-o"], "an option without its value"),
        (["admin-key", "create", "-d", tmp, "--alias", ""], "an empty --alias"),
    ]
    for args, what in cases:
        p = kw(*args)
        tap.ok(p.returncode == 2 and "keywarden:" in p.stderr and not p.stdout,
               "%s is a usage error: exit 2, said on stderr" % what, (p.returncode, p.stderr))


def test_init_and_secrets(tmp):
    d = os.path.join(tmp, "init")
    p = kw("init", "-d", d)
    m = re.search(r"^\s+(sk-\S+)$", p.stdout, re.M)
    tap.ok(p.returncode == 0 and m, "init creates a data directory and prints its new master key",
           p.stdout + p.stderr)
    tap.ok(mode(d) == 0o700 and all(mode(os.path.join(d, s)) == 0o600 for s in SECRETS),
           "the data directory is 0700, its secrets 0600")
    master = m.group(1) if m else None
    p = kw("master-key", "show", "-d", d)
    tap.ok(p.returncode == 0 and p.stdout == master + "\n", "master-key show prints it", p.stderr)
    p = kw("master-key", "show", "-d", d, env={"KEYWARDEN_MASTER_KEY": "sk-from-the-environment"})
    tap.eq(p.stdout, "sk-from-the-environment\n", "master-key show prints KEYWARDEN_MASTER_KEY "
           "when it is set")
    p = kw("init", "-d", d)
    tap.ok(p.returncode == 0 and master not in p.stdout and
           read(os.path.join(d, "master.key")).strip() == master,
           "init again keeps what exists and shows no key")

    p = kw("version")
    v = re.fullmatch(r"keywarden (\S+) \(schema (\d+), spec [0-9a-f]{12}\)\n", p.stdout)
    tap.ok(p.returncode == 0 and v, "version prints the version and the schema version", p.stdout)

    # signing keys: ids only
    secret = read(os.path.join(d, "signing.key")).split()
    p = kw("signing-key", "show", "-d", d)
    rows = p.stdout.splitlines()[1:]
    tap.ok(p.returncode == 0 and len(rows) == 1 and "signs (current since" in rows[0],
           "signing-key show lists the one key, current", p.stdout)
    first = rows[0].split()[0] if rows else None
    p = kw("signing-key", "rotate", "-d", d)
    tap.eq(p.returncode, 0, "signing-key rotate")
    p = kw("signing-key", "show", "-d", d)
    rows = p.stdout.splitlines()[1:]
    tap.ok(len(rows) == 2 and rows[0].split() == [first, "verifies"] and "signs" in rows[1],
           "after a rotation the old key verifies and a new one signs", p.stdout)
    secrets = read(os.path.join(d, "signing.key")).split()
    tap.ok(secrets[0] == secret[0] and not any(s in p.stdout or s[:16] in p.stdout
                                               for s in secrets),
           "signing-key show never shows a signing key")
    p = kw("master-key", "show", "-d", os.path.join(tmp, "nowhere"))
    tap.ok(p.returncode == 1 and "master" in p.stderr, "master-key show without a data "
           "directory fails", p.stderr)
    p = kw("verify", "-d", os.path.join(tmp, "nowhere"))
    tap.ok(p.returncode == 1 and "keywarden init" in p.stderr,
           "a command on a data directory never initialised says to run init", p.stderr)


def test_master_key_rotate(tmp):
    d = os.path.join(tmp, "rotate")
    kw("init", "-d", d)
    before = read(os.path.join(d, "master.key"))
    p = kw("master-key", "rotate", "-d", d, env={"KEYWARDEN_MASTER_KEY": "sk-operator-owned-1"})
    tap.ok(p.returncode == 1 and "KEYWARDEN_MASTER_KEY" in p.stderr and
           "environment" in p.stderr and read(os.path.join(d, "master.key")) == before,
           "master-key rotate is refused when KEYWARDEN_MASTER_KEY is in the environment",
           p.stderr)
    with open(os.path.join(d, "keywarden.conf"), "w") as f:
        f.write("KEYWARDEN_MASTER_KEY=sk-operator-owned-2\n")
    p = kw("master-key", "rotate", "-d", d)
    tap.ok(p.returncode == 1 and "keywarden.conf" in p.stderr and
           read(os.path.join(d, "master.key")) == before,
           "... and when it is in keywarden.conf", p.stderr)
    os.unlink(os.path.join(d, "keywarden.conf"))

    old = before.strip()
    with Server(data_dir=d, master_key=None, workers=2) as srv:
        srv.master_key = old
        r = srv.admin("POST", "/key/generate", {"key_alias": "before-rotation"})
        tap.eq(r.status, 200, "the service takes the master key from master.key")
        p = kw("master-key", "rotate", "-d", d)
        new = p.stdout.strip()
        tap.ok(p.returncode == 0 and re.fullmatch(r"sk-[A-Za-z0-9_-]{22}", new) and new != old and
               read(os.path.join(d, "master.key")).strip() == new and
               mode(os.path.join(d, "master.key")) == 0o600 and old not in p.stderr + p.stdout,
               "master-key rotate writes a new key, 0600, and prints it once", p.stderr)
        refused = [srv.request("GET", "/key/list", headers={"Authorization": "Bearer " + old})
                   .status for _ in range(12)]
        tap.ok(all(s == 401 for s in refused), "the running service refuses the old master key "
               "at once, on every worker, without a restart", refused)
        srv.master_key = new
        r = srv.admin("POST", "/key/generate", {"key_alias": "after-rotation"})
        tap.eq(r.status, 200, "the new master key works")
        log = srv.read_log()
    tap.ok(old not in log and new not in log, "neither master key is in the service's log")
    p = kw("master-key", "show", "-d", d)
    tap.eq(p.stdout.strip(), new, "master-key show prints the new key")

    # a grace period: the old key still works for --grace seconds, then is refused
    with Server(data_dir=d, master_key=None, workers=2) as srv:
        p = kw("master-key", "rotate", "-d", d, "--grace", "3")
        newer = p.stdout.strip()
        codes = [srv.request("GET", "/key/list", headers={"Authorization": "Bearer " + k}).status
                 for k in (new, newer) for _ in range(4)]
        tap.ok(p.returncode == 0 and "3 seconds" in p.stderr and all(c == 200 for c in codes),
               "rotate --grace 3: the old and the new master key are both accepted at first",
               (p.stderr, codes))
        wait_for(lambda: srv.request("GET", "/key/list", headers={
            "Authorization": "Bearer " + new}).status == 401, timeout=10)
        codes = [srv.request("GET", "/key/list", headers={"Authorization": "Bearer " + k}).status
                 for k in (new, newer) for _ in range(4)]
        tap.eq(codes, [401] * 4 + [200] * 4, "after the grace period only the new key is accepted")
    tap.ok(mode(os.path.join(d, "master.key.old")) == 0o600 and
           new not in read(os.path.join(d, "master.key.old")),
           "the old key is kept hashed, 0600, never in plain")


def test_master_key_truth(tmp):
    """The environment owns the master key of a running server: show and rotate say so."""
    d = os.path.join(tmp, "truth")
    kw("init", "-d", d)
    file_key = read(os.path.join(d, "master.key")).strip()
    env_key = "sk-the-servers-own-environment-key-0001"
    with Server(data_dir=d, master_key=env_key, workers=2) as srv:
        wait_for(lambda: "master.key is ignored" in srv.read_log(), timeout=5)
        tap.ok("master.key is ignored" in srv.read_log() and env_key not in srv.read_log(),
               "at start the server says master.key is ignored, naming no key")
        p = kw("master-key", "rotate", "-d", d)
        tap.ok(p.returncode == 1 and "ignores master.key" in p.stderr and not p.stdout and
               read(os.path.join(d, "master.key")).strip() == file_key,
               "rotate from a shell without the server's environment is refused, changing nothing",
               p.stderr)
        p = kw("master-key", "show", "-d", d)
        tap.ok(p.returncode == 1 and file_key not in p.stdout and "cannot read" in p.stderr,
               "show does not print master.key, which the server does not accept", p.stderr)
        p = kw("master-key", "show", "-d", d, env={"KEYWARDEN_MASTER_KEY": env_key})
        tap.ok(p.returncode == 0 and p.stdout.strip() == env_key,
               "show prints the key the server accepts when it has it", p.stderr)
        r = srv.request("GET", "/key/list", headers={"Authorization": "Bearer " + file_key})
        tap.eq(r.status, 401, "the server indeed refuses master.key's key")
    # the pool manager drains its workers after lighttpd has gone
    wait_for(lambda: kw("master-key", "show", "-d", d).returncode == 0, timeout=20)
    p = kw("master-key", "show", "-d", d)
    tap.ok(p.returncode == 0 and p.stdout.strip() == file_key,
           "once the server stopped, show prints master.key again", p.stderr)


def test_admin_key(tmp):
    d = os.path.join(tmp, "admin")
    kw("init", "-d", d)
    with Server(data_dir=d, workers=2) as srv:
        p = kw("admin-key", "create", "-d", d, "--alias", "ops-admin")
        key = p.stdout.strip()
        tap.ok(p.returncode == 0 and key.startswith("sk-") and len(p.stdout.splitlines()) == 1,
               "admin-key create prints one key on stdout", p.stdout + p.stderr)
        auth = {"Authorization": "Bearer " + key}
        r = srv.request("GET", "/key/info", headers=auth)
        info = (r.json or {}).get("info", {})
        tap.ok(r.status == 200 and info.get("key_alias") == "ops-admin" and
               info.get("user_id") == "keywarden-admin" and
               info.get("created_by") == "keywarden-cli",
               "the running service knows the key at once: its alias, user and creator", r)
        r = srv.request("POST", "/key/generate", {"key_alias": "made-by-admin-key"},
                        headers=auth)
        tap.eq(r.status, 200, "the key creates keys for others")
        made = (r.json or {}).get("token")
        r = srv.request("POST", "/key/block", {"key": made}, headers=auth)
        tap.ok(r.status == 200 and r.json.get("blocked") is True,
               "the key does what only a proxy admin may: /key/block", r)
        r = srv.admin("GET", "/user/info?user_id=keywarden-admin")
        tap.ok(r.status == 200 and json.dumps(r.json).count('"proxy_admin"') >= 1,
               "its user exists with the role proxy_admin", r)
        token = info.get("token")
        r = srv.admin("GET", "/audit?object_id=%s" % token)
        logs = (r.json or {}).get("audit_logs", []) if r.status == 200 else []
        tap.ok(any(e.get("action") == "created" and e.get("changed_by") == "keywarden-cli" and
                   e.get("object_id") == token for e in logs) and key not in r.body.decode(),
               "the audit trail says keywarden-cli created it, without the plaintext", r)

        p = kw("admin-key", "create", "-d", d, "--alias", "ops-admin")
        tap.ok(p.returncode == 1 and "key_alias" in p.stderr and not p.stdout,
               "a taken alias is refused, naming key_alias", p.stderr)
        r = srv.admin("POST", "/user/new", {"user_id": "plain-user", "user_role": "internal_user"})
        tap.eq(r.status, 200, "an internal_user")
        p = kw("admin-key", "create", "-d", d, "--user-id", "plain-user")
        tap.ok(p.returncode == 1 and "proxy_admin" in p.stderr and not p.stdout,
               "an admin key for a user of another role is refused", p.stderr)
        p = kw("admin-key", "create", "-d", d, "--user-id", "second-admin")
        r = srv.request("GET", "/key/info", headers={"Authorization": "Bearer " + p.stdout.strip()})
        tap.ok(p.returncode == 0 and r.status == 200 and
               r.json["info"]["user_id"] == "second-admin",
               "--user-id names a new admin user", (p.stderr, r))


def test_backup_restore_verify(tmp):
    d = os.path.join(tmp, "live")
    bk = os.path.join(tmp, "bk")
    kw("init", "-d", d)
    before, during, errors = [], [], []
    stop = threading.Event()
    with Server(data_dir=d, workers=2) as srv:
        for i in range(30):
            r = srv.admin("POST", "/key/generate", {"key_alias": "before-%d" % i, "max_budget": i,
                                                    "user_id": "owner-%d" % (i % 3)})
            if r.status == 200:
                before.append((r.json["key"], r.json["token"], i))
        r = srv.admin("POST", "/api/providers/openai/keys",
                      {"name": "cli-backed-up", "value": "sk-provider-secret-cli-0001"})
        tap.eq(r.status, 200, "a sealed provider key")

        def load():
            n = 0
            while not stop.is_set():
                r = srv.admin("POST", "/key/generate", {"key_alias": "during-%s-%d" % (
                    threading.current_thread().name, n)})
                if r.status == 200:
                    during.append(r.json["key"])
                elif r.status >= 500:
                    errors.append(r)
                n += 1
        writers = [threading.Thread(target=load, name="w%d" % i) for i in range(2)]
        for t in writers:
            t.start()
        try:
            wait_for(lambda: during, timeout=60)  # the load is on before the backup starts
            p = kw("backup", "-d", d, bk)
            v = kw("verify", "-d", d)
        finally:
            stop.set()
            for t in writers:
                t.join()
        tap.ok(p.returncode == 0, "backup copies the data directory while keys are written",
               p.stdout + p.stderr)
        tap.ok(len(before) == 30 and during and not errors,
               "the writes went on during the backup and verify (%d keys), no 5xx" % len(during),
               errors[:3])
        tap.ok(v.returncode == 0 and "ok: 0 problems" in v.stdout and
               "keys.db              ok" in v.stdout and "schema version" in v.stdout,
               "verify passes on the live data directory while it serves", v.stdout + v.stderr)
        master = srv.master_key
        p = kw("backup", "-d", d, bk)
        tap.ok(p.returncode == 1 and "not empty" in p.stderr,
               "backup into a non-empty directory is refused", p.stderr)

    tap.ok(all(mode(os.path.join(bk, s)) == 0o600 for s in SECRETS if
               os.path.exists(os.path.join(d, s))) and mode(bk) == 0o700,
           "the backup's secrets are 0600, the directory 0700")
    tap.ok(not [f for f in os.listdir(bk) if f.startswith("__db.")],
           "the backup holds no region files")
    if shutil.which("db5.3_verify"):
        bad = [f for f in sorted(os.listdir(bk)) if f.endswith(".db") and subprocess.run(
            ["db5.3_verify", "-q", "-h", bk, f], capture_output=True, timeout=120).returncode != 0]
        tap.ok(not bad, "db5.3_verify agrees the backup's databases are sound", bad)

    r1 = os.path.join(tmp, "restored")
    os.makedirs(r1)
    p = kw("restore", bk, r1)
    tap.ok(p.returncode == 0, "restore into an empty directory", p.stdout + p.stderr)
    p = kw("restore", bk, r1)
    tap.ok(p.returncode == 1 and "not empty" in p.stderr, "restore into a non-empty directory is "
           "refused", p.stderr)
    p = kw("restore", os.path.join(tmp, "no-backup-here"), os.path.join(tmp, "r-none"))
    tap.ok(p.returncode == 1 and "not a keywarden backup" in p.stderr,
           "restore of something that is no backup fails", p.stderr)
    v = kw("verify", "-d", r1)
    tap.ok(v.returncode == 0 and "ok: 0 problems" in v.stdout, "the restored directory verifies",
           v.stdout + v.stderr)
    for out in (v.stdout + v.stderr, p.stdout + p.stderr):
        tap.ok(master not in out and "sk-provider-secret-cli-0001" not in out,
               "no secret in what verify and restore say")

    with Server(data_dir=r1, workers=2, master_key=master) as copy:
        found = [k for k, _, i in before
                 if (copy.admin("GET", "/key/info?key=" + k).json or {}).get("info", {}).get(
                     "max_budget") == i]
        tap.eq(len(found), len(before), "every key written before the backup is in the restored "
               "copy with its settings")
        r = copy.request("GET", "/key/info", headers={"Authorization": "Bearer " + before[0][0]})
        tap.eq(r.status, 200, "a key authenticates against the restored service")
        r = copy.admin("GET", "/key/list?user_id=owner-1&size=100")
        want = sorted(t for _, t, i in before if i % 3 == 1)
        tap.ok(r.status == 200 and sorted(r.json["keys"]) == want,
               "the owner index came along", r)
        r = copy.admin("POST", "/api/providers/openai/keys/select", {"model": "gpt-4"})
        tap.ok(r.status == 200 and (r.json or {}).get("value") == "sk-provider-secret-cli-0001",
               "a sealed provider secret opens in the restored copy", r)

    # a logical fault the structure cannot show: an alias row for no key
    broken = os.path.join(tmp, "broken")
    kw("restore", bk, broken)
    p = subprocess.run(["db5.3_load", "-T", "-t", "btree", "-h", broken, "aliases.db"],
                       input="ghost-alias\n" + "ab" * 32 + "\n", capture_output=True, text=True,
                       timeout=120)
    v = kw("verify", "-d", broken)
    tap.ok(p.returncode == 0 and v.returncode == 1 and "ghost-alias" in v.stdout and
           "FAILED: 1 problem" in v.stdout, "verify finds an index row that points at no key",
           p.stderr + v.stdout + v.stderr)
    return before, bk, master


def test_export_import(tmp, before, bk, master):
    src = os.path.join(tmp, "export-src")
    kw("restore", bk, src)
    out = os.path.join(tmp, "keys.jsonl")
    p = kw("export", "-d", src, "-o", out)
    text = read(out) if os.path.exists(out) else ""
    rows = [json.loads(line) for line in text.splitlines()]
    lines = [r["record"] for r in rows if r.get("table") == "keys"]
    tap.ok(p.returncode == 0 and lines and mode(out) == 0o600 and
           rows[0].get("format") == "keywarden-export" and
           (", %d keys" % len(lines)) in p.stderr,
           "export -o writes a header then one record a line, 0600", p.stderr)
    tap.ok(all(re.fullmatch(r"[0-9a-f]{64}", rec.get("token", "")) and "key" not in rec
               for rec in lines), "each key line has the key's token and no plaintext")
    tap.ok(not any(k in text for k, _, _ in before) and master not in text and
           "sk-provider-secret-cli-0001" not in text,
           "no plaintext key, master key or provider secret is in the export")
    p2 = kw("export", "-d", src)
    tap.eq(p2.stdout, text, "export to standard output writes the same lines")

    dst = os.path.join(tmp, "import-dst")
    kw("init", "-d", dst)
    # an export of before this format: bare key records, one a line
    old = os.path.join(tmp, "keys-v1.jsonl")
    with open(old, "w") as f:
        f.write("".join(json.dumps(rec) + "\n" for rec in lines))
    p = kw("import", "-d", dst, old)
    tap.ok(p.returncode == 0 and (", %d keys" % len(lines)) in p.stderr,
           "an older export of bare key records imports into a fresh data directory", p.stderr)
    p = kw("import", "-d", dst, stdin=read(old))
    tap.ok(p.returncode == 0 and ", 0 keys" in p.stderr and
           "skipped (they exist): " in p.stderr and (", %d keys" % len(lines)) in p.stderr and
           "line 1: key " in p.stderr, "importing again from standard input skips every key, "
           "saying which line", p.stderr[-300:])
    v = kw("verify", "-d", dst)
    tap.ok(v.returncode == 0, "the imported directory verifies: its index rows were written",
           v.stdout)

    bad = os.path.join(tmp, "bad.jsonl")
    good = dict(lines[0], token="cd" * 32, key_alias="fresh-alias")
    with open(bad, "w") as f:
        f.write(json.dumps(good) + "\n")
        f.write("{not json\n")
        f.write(json.dumps(dict(good, token="ef" * 32, key="sk-a-plaintext-key-0")) + "\n")
        f.write(json.dumps(dict(good, token="12" * 32, max_budget=-1)) + "\n")
        f.write(json.dumps(dict(good, token="short")) + "\n")
    p = kw("import", "-d", dst, bad)
    tap.ok(p.returncode == 1 and "line 2:" in p.stderr and "line 3: key:" in p.stderr and
           "line 4: max_budget:" in p.stderr and "line 5: token:" in p.stderr and
           "nothing imported" in p.stderr and "sk-a-plaintext-key-0" not in p.stderr,
           "malformed lines are each named by line number and field, and nothing is written",
           p.stderr)
    taken = os.path.join(tmp, "taken.jsonl")
    with open(taken, "w") as f:
        f.write(json.dumps(dict(good, key_alias=lines[0].get("key_alias") or "before-0")) + "\n")
    p = kw("import", "-d", dst, taken)
    tap.ok(p.returncode == 1 and "line 1: key_alias" in p.stderr,
           "a line whose alias another key holds fails, naming the line and key_alias", p.stderr)

    with Server(data_dir=dst, workers=2) as srv:
        hits = 0
        for k, token, i in before:
            r = srv.admin("GET", "/key/info?key=" + token)
            if r.status == 200 and r.json["info"].get("max_budget") == i and \
                    r.json["info"].get("token") == token:
                hits += 1
        tap.eq(hits, len(before), "every imported key is found by its hash with its settings")
        r = srv.request("GET", "/key/info", headers={"Authorization": "Bearer " + before[1][0]})
        tap.eq(r.status, 200, "a key's own plaintext, never exported, authenticates after import")
        r = srv.admin("POST", "/key/generate", {"key_alias": "before-3"})
        tap.eq(r.status, 400, "the imported aliases are indexed (a taken alias is refused)")
        r = srv.admin("GET", "/key/list?user_id=owner-2&size=100")
        tap.ok(r.status == 200 and sorted(r.json["keys"]) ==
               sorted(t for _, t, i in before if i % 3 == 2), "the owner index works", r)
        r = srv.admin("GET", "/user/info?user_id=owner-2")
        tap.eq(r.status, 200, "a key's missing user was created")
        r = srv.admin("GET", "/audit?object_id=" + before[0][1])
        tap.ok(r.status == 200 and "keywarden-cli" in r.body.decode(),
               "the import is in the audit trail, by keywarden-cli", r)


def main():
    tmp = tempfile.mkdtemp(prefix="kw-cli-")
    try:
        test_man_and_help()
        test_usage_errors(tmp)
        test_init_and_secrets(tmp)
        test_master_key_rotate(tmp)
        test_master_key_truth(tmp)
        test_admin_key(tmp)
        before, bk, master = test_backup_restore_verify(tmp)
        test_export_import(tmp, before, bk, master)
    finally:
        if os.environ.get("KW_KEEP_TMP") is None:
            shutil.rmtree(tmp, ignore_errors=True)


tap.run(main)
