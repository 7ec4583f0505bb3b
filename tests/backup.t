#!/usr/bin/python3
"""backup.t: an online backup under load (db5.3_hotbackup and the data directory's secrets), restored into a new directory and served."""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import Server  # noqa: E402

SECRETS = ("data.key", "signing.key", "master.key")


def backup(data_dir, to):
    """The documented backup: the environment by db5.3_hotbackup, then the secrets, 0600."""
    p = subprocess.run(["db5.3_hotbackup", "-h", data_dir, "-b", to], capture_output=True,
                       text=True)
    for name in SECRETS:
        src = os.path.join(data_dir, name)
        if os.path.exists(src):
            shutil.copy2(src, os.path.join(to, name))
    return p


def main():
    work = tempfile.mkdtemp(prefix="kw-backup-")
    restored = os.path.join(work, "restored")
    before, during, errors = [], [], []
    stop = threading.Event()
    with Server() as srv:
        for i in range(50):
            r = srv.admin("POST", "/key/generate", {"key_alias": "before-%d" % i, "max_budget": i})
            if r.status == 200:
                before.append((r.json["key"], i))
        r = srv.admin("POST", "/api/providers/openai/keys",
                      {"name": "backed-up", "value": "sk-provider-secret-to-back-up-0001"})
        tap.eq(r.status, 200, "a sealed provider key to back up")

        def load():
            n = 0
            while not stop.is_set():
                r = srv.admin("POST", "/key/generate", {"key_alias": "during-%d" % n})
                if r.status == 200:
                    during.append(r.json["key"])
                elif r.status >= 500:
                    errors.append(r)
                n += 1
        writers = [threading.Thread(target=load) for _ in range(3)]
        for t in writers:
            t.start()
        p = backup(srv.data_dir, restored)
        stop.set()
        for t in writers:
            t.join()
        tap.ok(p.returncode == 0, "db5.3_hotbackup copies the environment while keys are written",
               p.stderr)
        tap.ok(len(before) == 50 and during and not errors,
               "the write load went on during the backup (%d keys) with no 5xx" % len(during),
               errors[:3])

    # the copy verifies, before anything opens it
    bad = []
    for db in sorted(glob.glob(os.path.join(restored, "*.db"))):
        v = subprocess.run(["db5.3_verify", "-q", "-h", restored, os.path.basename(db)],
                           capture_output=True, text=True)
        if v.returncode != 0:
            bad.append((os.path.basename(db), v.stderr[:200]))
    tap.ok(not bad, "db5.3_verify passes on every database of the backup", bad)
    tap.ok(all(oct(os.stat(os.path.join(restored, s)).st_mode & 0o777) == "0o600"
               for s in SECRETS if os.path.exists(os.path.join(restored, s))),
           "the secrets stay 0600 in the backup")

    with Server(data_dir=restored) as copy:
        found = [k for k, i in before
                 if (copy.admin("GET", "/key/info?key=" + k).json or {}).get("info", {}).get(
                     "max_budget") == i]
        tap.eq(len(found), len(before), "every key written before the backup is in the copy, "
               "with its settings")
        r = copy.request("GET", "/key/info", headers={"Authorization": "Bearer " + before[0][0]})
        tap.eq(r.status, 200, "a backed-up key authenticates against the restored service")
        r = copy.admin("POST", "/api/providers/openai/keys/select", {"model": "gpt-4"})
        tap.ok(r.status == 200 and (r.json or {}).get("value") ==
               "sk-provider-secret-to-back-up-0001",
               "a sealed provider secret opens in the copy (data.key came along)", r)
        r = copy.admin("POST", "/key/generate", {"key_alias": "after-restore"})
        tap.eq(r.status, 200, "the restored service takes new writes")
        r = copy.admin("POST", "/key/generate", {"key_alias": "before-0"})
        tap.eq(r.status, 400, "its alias index came along too (a taken alias is refused)")
    shutil.rmtree(work, ignore_errors=True)


tap.run(main)
