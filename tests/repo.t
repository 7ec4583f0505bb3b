#!/usr/bin/python3
"""repo.t: the repository holds no data directory: no Berkeley DB database, log or region
file and no data directory secret is tracked by git (fixtures keep portable dumps)."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what a Berkeley DB environment leaves in its directory
STORE_FILE = re.compile(r"(^|/)(\S+\.db|log\.\d{10}|__db\.\d{3}|__db\.register|DB_CONFIG)$")


def main():
    if not os.path.isdir(os.path.join(ROOT, ".git")):
        tap.skip_all("not a git checkout")
        return
    r = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True, check=True)
    files = r.stdout.decode().split("\0")
    tap.ok(len(files) > 100, "git lists the repository's files (%d)" % len(files))
    tracked = [f for f in files if STORE_FILE.search(f)]
    tap.ok(not tracked, "no Berkeley DB file is tracked", tracked)
    # the fixtures' secrets are test data; anywhere else a data.key would be a data directory
    secrets = [f for f in files if os.path.basename(f) in ("data.key", "signing.key",
                                                            "master.key")
               and not f.startswith("fixtures/upgrade/")]
    tap.ok(not secrets, "no data directory secret is tracked outside the upgrade fixtures",
           secrets)


tap.run(main)
