#!/usr/bin/python3
"""cli_objects.t: keywarden key|team|user create, list, info, block, unblock, regenerate, delete, --json, on a data directory and over HTTP (README "Keys, teams and users from the command line")."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import BIN, MASTER_KEY, Server  # noqa: E402


def kw(*args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
    e["KEYWARDEN_LOG_LEVEL"] = "warn"
    e.update(env or {})
    return subprocess.run([BIN] + list(args), env=e, capture_output=True, text=True, timeout=60)


def rows(p):
    return [line.split("\t") for line in p.stdout.splitlines()]


def cycle(where, srv, env=None):
    """The same commands against where (["-d", DIR] or ["--url", URL]); srv checks a key."""
    def run(*args):
        return kw(*args[:2], *where, *args[2:], env=env)

    p = run("user", "create", "--role", "proxy_admin", "cli-admin-" + where[0])
    tap.ok(p.returncode == 0, "%s: user create --role proxy_admin" % where[0], p.stderr)
    p = run("key", "create", "--alias", "cli-key" + where[0], "--user-id", "cli-admin-" + where[0])
    key = p.stdout.strip()
    tap.ok(p.returncode == 0 and key.startswith("sk-") and "shown only this once" in p.stderr,
           "%s: key create prints the key once" % where[0], p.stderr)
    tap.eq(srv.request("GET", "/key/info", headers={"Authorization": "Bearer " + key}).status,
           200, "%s: the created key authenticates" % where[0])
    p = run("key", "list", "--user-id", "cli-admin-" + where[0])
    listed = {r[1]: r[0] for r in rows(p)}
    token = listed.get("cli-key" + where[0])
    tap.ok(p.returncode == 0 and token and len(token) == 64, "%s: key list shows its token and "
           "alias" % where[0], p.stdout + p.stderr)
    p = run("key", "info", "--json", token)
    info = json.loads(p.stdout).get("info", {}) if p.returncode == 0 else {}
    tap.eq(info.get("key_alias"), "cli-key" + where[0], "%s: key info --json is the API's answer"
           % where[0])
    p = run("key", "info", token)
    tap.ok(p.returncode == 0 and "key_alias: cli-key" + where[0] in p.stdout and
           key not in p.stdout, "%s: key info prints name: value lines, never the key" % where[0])
    run("key", "block", token)
    tap.eq(srv.request("GET", "/key/info", headers={"Authorization": "Bearer " + key}).status,
           401, "%s: key block refuses the key" % where[0])
    p = run("key", "list", "--user-id", "cli-admin-" + where[0])
    tap.ok(any(r[0] == token and r[-1] == "blocked" for r in rows(p)),
           "%s: key list says blocked" % where[0])
    run("key", "unblock", token)
    tap.eq(srv.request("GET", "/key/info", headers={"Authorization": "Bearer " + key}).status,
           200, "%s: key unblock accepts it again" % where[0])
    p = run("key", "regenerate", token)
    new = p.stdout.strip()
    tap.ok(p.returncode == 0 and new.startswith("sk-") and new != key and
           srv.request("GET", "/key/info", headers={"Authorization": "Bearer " + new}).status ==
           200, "%s: key regenerate prints a new key that works" % where[0], p.stderr)
    p = run("key", "delete", new)
    tap.ok(p.returncode == 0 and srv.request("GET", "/key/info", headers={
        "Authorization": "Bearer " + new}).status == 401, "%s: key delete" % where[0], p.stderr)
    p = run("key", "info", new)
    tap.ok(p.returncode == 1 and "no" in p.stderr.lower(),
           "%s: info on a deleted key fails with the API's message" % where[0], p.stderr)

    p = run("team", "create", "cli-team-" + where[0])
    team = p.stdout.strip()
    tap.ok(p.returncode == 0 and team, "%s: team create prints the team_id" % where[0], p.stderr)
    p = run("team", "list")
    tap.ok([team, "cli-team-" + where[0]] in rows(p), "%s: team list" % where[0], p.stdout)
    run("team", "block", team)
    p = run("team", "info", "--json", team)
    tap.eq(json.loads(p.stdout or "{}").get("team_info", {}).get("blocked"), True,
           "%s: team block" % where[0])
    run("team", "unblock", team)
    p = run("team", "info", team)
    tap.ok("blocked: false" in p.stdout, "%s: team unblock; team info" % where[0], p.stdout)
    p = run("team", "delete", team)
    tap.ok(p.returncode == 0 and run("team", "info", team).returncode == 1,
           "%s: team delete" % where[0], p.stderr)
    run("user", "block", "cli-admin-" + where[0])
    p = run("user", "info", "--json", "cli-admin-" + where[0])
    tap.eq(json.loads(p.stdout or "{}").get("user_info", {}).get("blocked"), True,
           "%s: user block" % where[0])
    run("user", "unblock", "cli-admin-" + where[0])
    p = run("user", "delete", "cli-admin-" + where[0])
    tap.ok(p.returncode == 0 and run("user", "info", "cli-admin-" + where[0]).returncode == 1,
           "%s: user delete" % where[0], p.stderr)


def main():
    tmp = tempfile.mkdtemp(prefix="kw-cli-objects-")
    try:
        d = os.path.join(tmp, "data")
        with Server(data_dir=d) as srv:
            cycle(["-d", d], srv)
            p = kw("user", "list", "-d", d)
            tap.ok(p.returncode == 0 and not any(r[0] == "cli-admin--d" for r in rows(p)),
                   "user list on the data directory", p.stdout)
            url = "http://127.0.0.1:%d/" % srv.port
            cycle(["--url", url], srv, env={"KEYWARDEN_API_KEY": MASTER_KEY})
            p = kw("key", "list", "--url", url)
            tap.ok(p.returncode == 1 and "KEYWARDEN_API_KEY" in p.stderr,
                   "--url without a key in the environment is refused", p.stderr)
            p = kw("key", "list", "--url", url, env={"KEYWARDEN_API_KEY": "sk-wrong-0000"})
            tap.ok(p.returncode == 1 and "HTTP 401" in p.stderr and "sk-wrong" not in p.stderr,
                   "a wrong key over HTTP: the API's 401, the key not repeated", p.stderr)
            p = kw("user", "list", env={"KEYWARDEN_API_KEY": MASTER_KEY, "KEYWARDEN_URL": url})
            tap.ok(p.returncode == 1 and "no list of users" in p.stderr, "user list needs -d")
        p = kw("key", "create", "-d", d, "--url", "http://x/")
        tap.eq(p.returncode, 2, "-d and --url together are a usage error")
        for cmd in (["key", "create"], ["team", "list"], ["user", "delete"]):
            h = kw(*cmd, "--help")
            h2 = kw("help", *cmd)
            tap.ok(h.returncode == 0 and h2.returncode == 0 and h.stdout == h2.stdout and
                   "--json" in h.stdout, "%s --help and help %s exit 0 with the same text"
                   % (" ".join(cmd), " ".join(cmd)))
        p = kw("key")
        tap.ok(p.returncode == 2 and "regenerate" in p.stderr, "bare key names its commands")
        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        p = subprocess.run([BIN], cwd=empty, capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL,
                           env={k: v for k, v in os.environ.items()
                                if not k.startswith("KEYWARDEN_")})
        tap.ok(p.returncode == 2 and os.listdir(empty) == [],
               "a bare keywarden in a shell fails and creates nothing", p.stderr)
        p = kw("--version")
        tap.ok(p.returncode == 0 and p.stdout.startswith("keywarden "), "keywarden --version")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


tap.run(main)
