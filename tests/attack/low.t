#!/usr/bin/python3
"""low.t: one test point per smaller hole, each through the real lighttpd (or the command that
makes the thing checked):
 a. a deadlock inside the authorizer's check is retried by kw_store_txn, never judged without
    the record (tests/attack/holdlock.c holds a lock on the key's record and expires the waits);
 b. the data directory is 0700 when `make run` (scripts/run-lighttpd) or `keywarden init`
    creates it, whatever the umask;
 c. a provider key's env.NAME may name only what KEYWARDEN_PROVIDER_ENV allows (*_API_KEY by
    default), never HOME or KEYWARDEN_*;
 d. a provisioned key's expiry (duration) cannot be changed, by its owner or an admin, nor the
    key made regenerable by dropping its metadata;
 e. a short provider secret is redacted entirely;
 f. a signing key stays while tokens it signed may be unexpired, through any number of rotations;
 g. the pool manager and its workers cannot dump core."""
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import tap  # noqa: E402
import attack  # noqa: E402
from kwserver import BIN, ROOT, Server, free_port, wait_for  # noqa: E402
from upstream import gateway  # noqa: E402


def cli(srv, *args, env=None):
    e = dict(srv.env)
    e.update(env or {})
    return subprocess.run([BIN] + list(args) + ["-d", srv.data_dir], env=e,
                          capture_output=True, text=True, timeout=60)


def a_deadlock(tmp):
    """a: a deadlocked read of the key's record is retried, not skipped (limits.c record_of)."""
    helper = os.path.join(tmp, "holdlock")
    r = subprocess.run(["cc", "-o", helper, os.path.join(HERE, "holdlock.c"), "-ldb-5.3"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        tap.ok(False, "a: tests/attack/holdlock.c builds", r.stderr)
        return
    with gateway(0.001, report=False, workers=1) as (srv, up):
        m = attack.master(srv)
        k = m("POST", "/key/generate", {"allowed_routes": ["/v1/chat/*"]}).json
        caller = attack.Caller(srv, k["key"])
        hold = subprocess.Popen([helper, srv.data_dir, k["token"], "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        held = hold.stdout.readline().strip() == "held"
        r = caller("POST", "/v1/embeddings", {"model": "gpt-4", "input": "x"},
                   {"x-model": "gpt-4"})
        out, err = hold.communicate(timeout=30)
        expired = int(out.strip() or 0) if out.strip().isdigit() else 0
        tap.ok(held and expired > 0 and r.status == 403 and
               "ROUTE_NOT_ALLOWED" in r.body.decode(),
               "a: a deadlock (%d lock waits expired) on the key's record is retried until "
               "the check can read it: ROUTE_NOT_ALLOWED (403), not a pass or a 503" % expired,
               {"held": held, "expired": expired, "answer": repr(r), "helper": err[-500:],
                "log": srv.read_log()[-1500:]})


def b_data_dir(tmp):
    """b: scripts/run-lighttpd and keywarden init make the data directory 0700."""
    data = os.path.join(tmp, "made-by-run", "var")
    port = free_port()
    env = dict(os.environ, PORT=str(port), KEYWARDEN_DATA_DIR=data, KEYWARDEN_WORKERS="1")
    env.pop("KEYWARDEN_MASTER_KEY", None)
    old = os.umask(0o022)
    try:
        run = subprocess.Popen([os.path.join(ROOT, "scripts", "run-lighttpd"), BIN], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    finally:
        os.umask(old)
    try:
        up = wait_for(lambda: subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             "http://127.0.0.1:%d/health" % port], capture_output=True, text=True).stdout == "200",
            timeout=20)
        mode = stat.S_IMODE(os.stat(data).st_mode) if os.path.isdir(data) else None
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(30)
    pre = os.path.join(tmp, "pre-made")
    os.makedirs(pre, 0o755)
    os.chmod(pre, 0o755)
    old = os.umask(0)
    try:
        p = subprocess.run([BIN, "init", "-d", pre], capture_output=True, text=True,
                           env=dict(os.environ, KEYWARDEN_MASTER_KEY="sk-low-master-0123456789"))
    finally:
        os.umask(old)
    init_mode = stat.S_IMODE(os.stat(pre).st_mode)
    tap.ok(up and mode == 0o700 and p.returncode == 0 and init_mode == 0o700,
           "b: the data directory is 0700 when make run creates it under umask 022 (%s) and "
           "when keywarden init finds it 0755 under umask 0 (%s)"
           % (oct(mode) if mode is not None else None, oct(init_mode)),
           {"served": up, "init": p.stdout + p.stderr})


def c_env(srv):
    """c: env.NAME only for names KEYWARDEN_PROVIDER_ENV allows."""
    m = attack.master(srv)
    answers = {}
    for name in ("HOME", "PATH", "KEYWARDEN_MASTER_KEY", "LOW_SECRET"):
        r = m("POST", "/api/providers/openai/keys", {"name": "low-env-" + name.lower(),
                                                    "value": "env." + name})
        e = (r.json or {}).get("error") or {}
        answers[name] = (r.status, e.get("param"))
    r = m("POST", "/api/providers/openai/keys", {"name": "low-env-ok",
                                                "value": "env.LOW_OPENAI_API_KEY"})
    ok_status = r.status
    sel = m("POST", "/api/providers/openai/keys/select", {"model": "gpt-low"})
    tap.ok(all(v == (400, "value") for v in answers.values()) and ok_status == 200 and
           sel.status == 200 and (sel.json or {}).get("value") == "sk-low-from-env-0123456789",
           "c: env.HOME, env.PATH, env.KEYWARDEN_MASTER_KEY and env.LOW_SECRET are 400 naming "
           "value; env.LOW_OPENAI_API_KEY (*_API_KEY) is stored and resolved by select",
           {"refused": answers, "allowed": ok_status, "select": repr(sel)})


def d_provisioned(srv):
    """d: a provisioned key's expiry is its token's: duration refused, for owner and admin."""
    m = attack.master(srv)
    bob = attack.user(srv, "low-bob")
    m("POST", "/organization/new", {"organization_id": "low-org",
                                        "organization_alias": "Low Org"})
    m("POST", "/organization/member_add", {"organization_id": "low-org",
                                               "member": [{"user_id": "low-bob"}]})
    r = bob("POST", "/api/v1/org/low-org/inference/keys", {"client_id": "laptop"})
    token = (r.json or {}).get("api_key")
    if r.status != 200 or not token:
        tap.ok(False, "d: bob provisions a key", repr(r))
        return None
    answers = {}
    for who, c in (("owner", bob), ("admin", m)):
        for dur in (None, "3650d"):
            r = c("POST", "/key/update", {"key": token, "duration": dur})
            e = (r.json or {}).get("error") or {}
            answers["%s %s" % (who, dur)] = (r.status, e.get("param"))
    r = bob("POST", "/key/update", {"key": token, "metadata": {}})
    meta_status = r.status
    r = bob("POST", "/key/regenerate", {"key": token})
    regen = r.status
    info = m("GET", "/key/info?key=" + token)
    expires = ((info.json or {}).get("info") or {}).get("expires")
    # the owner may change no key's expiry at all (README "Who may change what"): 403
    want = {"owner None": (403, "duration"), "owner 3650d": (403, "duration"),
            "admin None": (400, "duration"), "admin 3650d": (400, "duration")}
    tap.ok(answers == want and meta_status == 200 and regen == 400 and expires is not None,
           "d: duration null or longer on a provisioned key is refused naming duration, for "
           "its owner (403) and for an admin (400); with its metadata emptied it still is not "
           "regenerated",
           {"updates": answers, "metadata update": meta_status, "regenerate": regen,
            "expires": expires})
    return token


def e_redaction(srv):
    """e: secrets under 32 characters are all stars; longer ones show 4 + 24 stars + 4."""
    m = attack.master(srv)
    shown = {}
    long_v = "sk-" + "0123456789abcdef" * 2 + "wxyz"
    for v in ("abcd12345", "a-twenty-char-secret", "x" * 31, long_v):
        r = m("POST", "/api/providers/anthropic/keys",
              {"name": "low-red-%d" % len(v), "value": v})
        shown[v] = ((r.json or {}).get("value") or {}).get("value")
    tap.ok(all(shown[v] == "********" for v in ("abcd12345", "a-twenty-char-secret", "x" * 31))
           and shown[long_v] == long_v[:4] + "*" * 24 + long_v[-4:],
           "e: a 9, 20 or 31-character secret reads as ********; a 39-character one as its "
           "first 4, 24 stars and its last 4", shown)


def f_signing(srv, token):
    """f: twenty rotations later the first key still verifies its unexpired token."""
    m = attack.master(srv)
    fails = [cli(srv, "signing-key", "rotate") for _ in range(20)]
    fails = [p.stderr for p in fails if p.returncode != 0]
    r = m("POST", "/key/verify", {"key": token, "dry_run": True}) if token else None
    code = (r.json or {}).get("code") if r is not None else None
    clock = os.path.join(srv.tmp, "clock-later")
    with open(clock, "w") as f:
        f.write(str(int(time.time()) + 31 * 86400))
    p = cli(srv, "signing-key", "rotate", env={"KEYWARDEN_CLOCK_FILE": clock})
    with open(os.path.join(srv.data_dir, "signing.key")) as f:
        lines = f.read().splitlines()
    tap.ok(not fails and code == "VALID" and p.returncode == 0 and len(lines) == 2,
           "f: after 20 signing-key rotations a token of the first key is VALID; a rotation 31 "
           "days on keeps only the key retired then and the new one (%d lines)" % len(lines),
           {"rotate failures": fails[:2], "verify": repr(r), "late rotate": p.stderr})


def g_core(srv):
    """g: no core file from the manager or a worker: RLIMIT_CORE 0, soft and hard."""
    found = {}
    for pid in [srv.manager()] + srv.workers():
        try:
            with open("/proc/%d/limits" % pid) as f:
                row = [ln for ln in f if ln.startswith("Max core file size")]
            found[pid] = row[0].split()[4:6] if row else None
        except OSError as e:
            found[pid] = str(e)
    tap.ok(len(found) >= 2 and all(v == ["0", "0"] for v in found.values()),
           "g: the pool manager and every worker have a core file size limit of 0 (soft and "
           "hard), though keywarden was started with an unlimited one", found)


def main():
    # core dumps allowed where keywarden starts: it must turn them off itself
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="kw-low-")
    try:
        a_deadlock(tmp)
        b_data_dir(tmp)
        with Server(env={"LOW_OPENAI_API_KEY": "sk-low-from-env-0123456789",
                         "LOW_SECRET": "not-for-gateways"}) as srv:
            c_env(srv)
            token = d_provisioned(srv)
            e_redaction(srv)
            f_signing(srv, token)
            g_core(srv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


tap.run(main)
