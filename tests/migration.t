#!/usr/bin/python3
"""migration.t: keywarden export then import into an empty directory reproduces every record (users with their roles, teams, organizations, budgets, customers, provider keys sealed, Venice keys), compared field by field (README "Moving a data directory")."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import BIN, Server  # noqa: E402

SECRET = "sk-provider-secret-migration-0001"


def kw(*args, stdin=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARDEN_")}
    e["KEYWARDEN_LOG_LEVEL"] = "warn"
    return subprocess.run([BIN] + list(args), env=e, input=stdin, capture_output=True,
                          text=True, timeout=120)


def ok(r, what):
    tap.ok(r.status == 200, what, r)
    return r.json or {}


def populate(srv):
    """Records of every kind through the API; returns the plaintext keys made."""
    ok(srv.admin("POST", "/user/new", {"user_id": "mig-admin", "user_role": "proxy_admin"}),
       "a proxy_admin user")
    ok(srv.admin("POST", "/user/new", {"user_id": "mig-viewer",
                                       "user_role": "proxy_admin_viewer", "max_budget": 7}),
       "a proxy_admin_viewer user with a budget")
    org = ok(srv.admin("POST", "/organization/new", {"organization_alias": "mig-org",
                                                     "max_budget": 100}), "an organization")
    ok(srv.admin("POST", "/budget/new", {"budget_id": "mig-budget", "max_budget": 5,
                                         "rpm_limit": 60}), "a budget")
    team = ok(srv.admin("POST", "/team/new", {"team_alias": "mig-team", "max_budget": 50,
                                              "organization_id": org.get("organization_id")}),
              "a team in the organization")
    ok(srv.admin("POST", "/customer/new", {"user_id": "mig-customer", "max_budget": 3}),
       "a customer")
    ok(srv.admin("POST", "/api/providers/openai/keys", {"name": "mig-openai", "value": SECRET}),
       "a provider key")
    keys = []
    for i, body in enumerate([{"key_alias": "mig-admin-key", "user_id": "mig-admin"},
                              {"key_alias": "mig-team-key", "team_id": team.get("team_id"),
                               "max_budget": 9.5, "rpm_limit": 10}]):
        keys.append(ok(srv.admin("POST", "/key/generate", body), "key %d" % i).get("key"))
    v = ok(srv.admin("POST", "/api/v1/api_keys", {"apiKeyType": "INFERENCE",
                                                  "description": "mig-venice"}), "a Venice key")
    keys.append((v.get("data") or {}).get("apiKey"))
    return keys, team.get("team_id")


def records(path):
    """An export's rows by (table, id), the header left out."""
    rows = {}
    for line in open(path).read().splitlines():
        row = json.loads(line)
        if "table" in row:
            rows[(row["table"], row["id"])] = row.get("record", row.get("value"))
    return rows


def main():
    tmp = tempfile.mkdtemp(prefix="kw-migration-")
    try:
        src = os.path.join(tmp, "src")
        with Server(data_dir=src) as srv:
            keys, team_id = populate(srv)
        out = os.path.join(tmp, "export.jsonl")
        p = kw("export", "-d", src, "-o", out)
        text = open(out).read() if os.path.exists(out) else ""
        tap.ok(p.returncode == 0 and "1 organizations" in p.stderr and
               "1 provider_keys" in p.stderr, "export counts each table", p.stderr)
        tap.ok(SECRET not in text and not any(k in text for k in keys if k),
               "the export holds no provider secret and no plaintext key")
        before = records(out)
        tables = {t for t, _ in before}
        tap.ok({"organizations", "budgets", "users", "teams", "end_users", "provider_keys",
                "provider_index", "keys"} <= tables, "every kind of record is exported",
               sorted(tables))

        dst = os.path.join(tmp, "dst")
        p = kw("import", "-d", dst, "--dry-run", "--data-key", os.path.join(src, "data.key"), out)
        tap.ok(p.returncode == 0 and "would import" in p.stderr and not os.path.exists(dst),
               "--dry-run counts and creates nothing", p.stderr)
        p = kw("import", "-d", dst, out)
        tap.ok(p.returncode == 1 and "sealed under data key" in p.stderr,
               "sealed provider keys are refused without the data key that sealed them",
               p.stderr)
        shutil.rmtree(dst, ignore_errors=True)
        p = kw("import", "-d", dst, "--data-key", os.path.join(src, "data.key"), out)
        tap.ok(p.returncode == 0 and "initialised the data directory" in p.stderr,
               "import into a missing directory initialises it", p.stderr)
        tap.eq(os.stat(dst).st_mode & 0o777, 0o700, "the new data directory is 0700")
        again = os.path.join(tmp, "again.jsonl")
        kw("export", "-d", dst, "-o", again)
        after = records(again)
        tap.eq(sorted(after), sorted(before), "the same records, by table and id")
        differ = [k for k in before if before[k] != after.get(k)]
        tap.eq(differ, [], "every record is the same, field by field")
        roles = {i: r.get("user_role") for (t, i), r in after.items() if t == "users"}
        tap.eq((roles.get("mig-admin"), roles.get("mig-viewer")),
               ("proxy_admin", "proxy_admin_viewer"), "roles survive")
        p = kw("import", "-d", dst, out)
        tap.ok(p.returncode == 0 and "imported: 0 organizations" in p.stderr,
               "importing again skips what exists", p.stderr)
        tap.eq(kw("verify", "-d", dst).returncode, 0, "the imported directory verifies")

        with Server(data_dir=dst) as srv:
            r = srv.request("GET", "/key/info", headers={"Authorization": "Bearer " + keys[0]})
            tap.eq(r.status, 200, "the admin's key authenticates after import")
            r = srv.request("GET", "/user/info?user_id=mig-viewer", headers={"Authorization": "Bearer " + keys[0]})
            tap.eq(r.status, 200, "and still acts as proxy_admin")
            r = srv.admin("GET", "/team/info?team_id=" + team_id)
            tap.ok(r.status == 200 and "mig-team-key" in r.body.decode(),
                   "the team lists its key", r)
            r = srv.admin("POST", "/api/providers/openai/keys/select", {"model": "gpt-4"})
            tap.ok(r.status == 200 and (r.json or {}).get("value") == SECRET,
                   "the sealed provider secret opens in the new directory", r)
            r = srv.request("GET", "/api/v1/api_keys/rate_limits",
                            headers={"Authorization": "Bearer " + keys[2]})
            tap.eq(r.status, 200, "the Venice key works after import")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


tap.run(main)
