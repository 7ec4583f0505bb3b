#!/usr/bin/python3
"""upgrade.t: data directories written by older keywardens (fixtures/upgrade/schema-N, made by scripts/make-upgrade-fixture) migrate on start and serve; a newer schema is refused (README "Upgrades")."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import BIN, ROOT, Server, wait_for  # noqa: E402

FIXTURES = sorted(glob.glob(os.path.join(ROOT, "fixtures", "upgrade", "schema-*")))


def kw(*args, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
    env["KEYWARDEN_LOG_LEVEL"] = "warn"
    return subprocess.run([BIN] + list(args), env=env, capture_output=True, text=True,
                          timeout=timeout)


def copy_fixture(fixture, to):
    """The fixture's data directory as keywarden keeps one (0700, files 0600): its secrets,
    and each database loaded from its portable dump, with its log sequence numbers reset
    so that a fresh environment takes it."""
    os.makedirs(to, mode=0o700)
    for name in os.listdir(os.path.join(fixture, "secrets")):
        shutil.copyfile(os.path.join(fixture, "secrets", name), os.path.join(to, name))
    for dump in glob.glob(os.path.join(fixture, "dump", "*.dump")):
        db = os.path.basename(dump)[:-len(".dump")] + ".db"
        for args in (["-f", dump, db], ["-r", "lsn", db]):
            subprocess.run(["db5.3_load"] + args, cwd=to, check=True, timeout=60)
    for name in os.listdir(to):
        os.chmod(os.path.join(to, name), 0o600)


def recorded_schema(data_dir):
    """The schema version in meta.db, read from the file alone (no environment)."""
    p = subprocess.run(["db5.3_dump", "-p", "meta.db"], cwd=data_dir, capture_output=True,
                       text=True, timeout=60)
    lines = [line.strip() for line in p.stdout.splitlines()]
    i = lines.index("schema_version") if "schema_version" in lines else -1
    return int(lines[i + 1]) if i >= 0 else None


def current_schema():
    p = kw("version")
    m = re.fullmatch(r"keywarden \S+ \(schema (\d+), spec [0-9a-f]{12}\)\n", p.stdout)
    return int(m.group(1)) if m else None


CAPABILITIES = ("verify_keys", "select_provider_keys")


def check_grants(srv, name, grants):
    """Schema 3 honours a capability only when a proxy admin granted it: the migration
    takes verify_keys and select_provider_keys from keys whose own user wrote them."""
    for g in (g for g in grants if "permissions" in g):
        info = (srv.admin("GET", "/key/info?key=" + g["key"]).json or {}).get("info", {})
        want = g["permissions"] if g["kept"] else {
            f: v for f, v in g["permissions"].items() if f not in CAPABILITIES}
        tap.eq(info.get("permissions"), want, "%s: a capability %s keeps %r" % (
            name, "a proxy admin granted" if g["kept"] else "its own user wrote", want))
        r = srv.request("POST", "/key/verify", {"key": g["key"], "dry_run": True},
                        headers={"Authorization": "Bearer " + g["key"]})
        tap.eq(r.status, 200 if g["kept"] else 403, "%s: ... so it %s verify keys" % (
            name, "may" if g["kept"] else "may no longer"))


def check_fixture(fixture, work, schema):
    with open(os.path.join(fixture, "fixture.json")) as f:
        made = json.load(f)
    name = os.path.basename(fixture)
    data = os.path.join(work, name)
    copy_fixture(fixture, data)
    tap.eq(recorded_schema(data), made["schema_version"],
           "%s: the fixture records schema %d (made by %s)" % (name, made["schema_version"],
                                                                made["version"]))
    master = kw("master-key", "show", "-d", data).stdout.strip()
    tap.ok(master.startswith("sk-"), "%s: its master key is in its master.key" % name)

    srv = Server(data_dir=data, master_key=None, workers=2)
    with srv:
        srv.master_key = master
        r = srv.request("GET", "/health")
        tap.ok(r.status == 200 and r.json["store"]["schema_version"] == schema,
               "%s: the current keywarden migrated it to schema %d on start" % (name, schema), r)
        keys = made["keys"]
        bad = []
        for k in keys:
            r = srv.admin("GET", "/key/info?key=" + k["key"])
            info = (r.json or {}).get("info", {})
            wrong = {f: (info.get(f), v) for f, v in k.items()
                     if f != "key" and info.get(f) != v}
            if r.status != 200 or wrong:
                bad.append((k["key_alias"] if "key_alias" in k else "?", r.status, wrong))
        tap.ok(not bad, "%s: every key is there with every setting it was made with" % name, bad)

        verdicts = {}
        for k in keys:
            body = {"key": k["key"], "dry_run": True}
            if k.get("models"):
                body["model"] = k["models"][0]
            r = srv.admin("POST", "/key/verify", body)
            verdicts[k["key"]] = (r.json or {}).get("code")
        want = {k["key"]: "BLOCKED" if k.get("blocked") else "VALID" for k in keys}
        tap.eq(verdicts, want, "%s: /key/verify judges each key, the blocked one BLOCKED" % name)
        r = srv.request("GET", "/key/info", headers={"Authorization": "Bearer " + keys[0]["key"]})
        tap.eq(r.status, 200, "%s: a key authenticates as itself" % name)

        # the indexes schema 2 added, built by the migration
        for user in sorted({k["user_id"] for k in keys if k.get("user_id")}):
            r = srv.admin("GET", "/key/list?size=100&user_id=" + user)
            want = sorted(srv.admin("GET", "/key/info?key=" + k["key"]).json["info"]["token"]
                          for k in keys if k.get("user_id") == user)
            tap.ok(r.status == 200 and sorted(r.json["keys"]) == want,
                   "%s: /key/list by user_id %s finds its keys (the owner index)" % (name, user),
                   r)
        check_grants(srv, name, made.get("grants", []))
        r = srv.admin("GET", "/key/list?size=100&sort_by=created_at&sort_order=asc")
        tap.ok(r.status == 200 and r.json["total_count"] == len(keys) + len(made.get("grants", [])),
               "%s: /key/list by creation time counts every key (the creation index)" % name, r)
        aliases = sorted(k["key_alias"] for k in keys if k.get("key_alias"))
        r = srv.admin("POST", "/key/generate", {"key_alias": aliases[0]})
        tap.eq(r.status, 400, "%s: an old alias is still taken" % name)
        r = srv.admin("POST", "/key/generate", {"key_alias": "after-upgrade",
                                                "user_id": keys[0]["user_id"]})
        tap.eq(r.status, 200, "%s: the migrated store takes new keys" % name)
        v = kw("verify", "-d", data)
        tap.ok(v.returncode == 0 and "schema version %d" % schema in v.stdout,
               "%s: verify passes on the migrated directory while it serves" % name,
               v.stdout + v.stderr)
    # lighttpd is gone; the pool manager checkpoints and leaves after it
    tap.ok(wait_for(lambda: not srv.processes(), timeout=60), "%s: keywarden stopped" % name)
    tap.eq(recorded_schema(data), schema, "%s: meta.db now records schema %d" % (name, schema))
    return data


def check_newer_refused(migrated, work, schema):
    # a copy made the supported way, so db5.3_load joins an environment of its own
    newer = os.path.join(work, "newer")
    b = kw("backup", "-d", migrated, os.path.join(work, "newer-backup"))
    r = kw("restore", os.path.join(work, "newer-backup"), newer)
    tap.ok(b.returncode == 0 and r.returncode == 0, "the migrated directory backs up and "
           "restores", b.stderr + r.stderr)
    p = subprocess.run(["db5.3_load", "-T", "-t", "btree", "-h", newer, "meta.db"],
                       input="schema_version\n%d\n" % (schema + 1), capture_output=True,
                       text=True, timeout=120)
    tap.ok(p.returncode == 0, "a data directory claiming schema %d" % (schema + 1), p.stderr)
    sock = os.path.join(work, "newer.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
    s = subprocess.run([BIN, "serve", "-d", newer, "-s", sock, "-w", "1"], env=env,
                       capture_output=True, text=True, timeout=60)
    tap.ok(s.returncode != 0 and "schema version %d" % (schema + 1) in s.stderr and
           "reads schema %d" % schema in s.stderr and "newer" in s.stderr and not s.stdout,
           "keywarden serve refuses it at start, naming both versions on stderr",
           (s.returncode, s.stderr))
    tap.ok(not os.path.exists(sock), "... before it listens")
    p = kw("verify", "-d", newer)
    tap.ok(p.returncode == 1 and "schema version %d" % (schema + 1) in p.stderr,
           "the commands refuse it too", p.stderr)
    tap.eq(recorded_schema(newer), schema + 1, "and leave its schema as it was")


def main():
    schema = current_schema()
    tap.ok(schema is not None, "keywarden version says the schema version")
    tap.ok(FIXTURES and all(int(f.rsplit("-", 1)[1]) < schema for f in FIXTURES),
           "a fixture for every older schema since the first change (%s)" %
           ", ".join(os.path.basename(f) for f in FIXTURES))
    tap.ok(set(int(f.rsplit("-", 1)[1]) for f in FIXTURES) == set(range(1, schema)),
           "one fixture per older schema")
    work = tempfile.mkdtemp(prefix="kw-upgrade-")
    try:
        migrated = None
        for fixture in FIXTURES:
            migrated = check_fixture(fixture, work, schema)
        if migrated:
            check_newer_refused(migrated, work, schema)
    finally:
        if os.environ.get("KW_KEEP_TMP") is None:
            shutil.rmtree(work, ignore_errors=True)


tap.run(main)
