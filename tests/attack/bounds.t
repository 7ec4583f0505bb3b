#!/usr/bin/python3
"""bounds.t: what one low-privilege caller can make is bounded, through lighttpd, as README's
"Limits on what one caller can make" describes it.

Small caps are set for the run (KEYWARDEN_MAX_KEYS_PER_USER=20, KEYWARDEN_INFO_MAX_KEYS=5,
KEYWARDEN_MAX_TEAM_MEMBERS=6, KEYWARDEN_ANON_LEASE_SECS=5) and time is moved with
KEYWARDEN_CLOCK_FILE, so it runs in seconds.  One group of test points per limit:

- keys per user: an internal user's key past the cap is 400 naming user_id (waiting
  does not make room, so not 429); a proxy admin
  is not bound by it; a team admin cannot move a key to a member who is at the cap;
- answers that embed keys: /user/info and /team/info carry at most KEYWARDEN_INFO_MAX_KEYS
  keys and say so (keys_truncated), and /key/list pages give every key;
- audit growth: a provider key selection writes no audit entry, it is counted in /metrics;
- leases without a request id: a request keywarden names itself holds its parallel slot
  for KEYWARDEN_ANON_LEASE_SECS, not KEYWARDEN_LEASE_SECS; a request_id of the caller's
  keeps the slot until its usage is reported;
- provisioning: a member's provisioned keys count toward the cap, and at the cap their
  expired ones make room;
- the rest: a key's metadata is at most 16 KiB; a team admin's team has at most
  KEYWARDEN_MAX_TEAM_MEMBERS members."""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
import tap  # noqa: E402
import attack  # noqa: E402
from kwserver import Server  # noqa: E402

MAX_KEYS = 20
INFO_KEYS = 5
TEAM_MEMBERS = 6
ANON_LEASE = 5


class Clock:
    """The time keywarden reads (KEYWARDEN_CLOCK_FILE); only ever moved forward."""

    def __init__(self, path):
        self.path, self.now = path, int(time.time())
        self.write()

    def write(self):
        with open(self.path + ".tmp", "w") as f:
            f.write("%d\n" % self.now)
        os.rename(self.path + ".tmp", self.path)

    def advance(self, secs):
        self.now += secs
        self.write()


def err_param(r):
    return ((r.json or {}).get("error") or {}).get("param")


def keys_per_user(srv):
    m = attack.master(srv)
    u = attack.user(srv, "bounds-many")          # /user/new made its first key
    made = [200]
    for _ in range(MAX_KEYS + 5):
        r = u("POST", "/key/generate", {})
        made.append(r.status)
        if r.status != 200:
            break
    tap.eq(made.count(200), MAX_KEYS,
           "keys per user: an internal user holds at most KEYWARDEN_MAX_KEYS_PER_USER keys")
    tap.ok(r.status == 400 and err_param(r) == "user_id",
           "keys per user: the key past the cap is 400 in LiteLLM's envelope naming user_id",
           repr(r))
    r = m("POST", "/key/generate", {"user_id": "bounds-many"})
    tap.eq(r.status, 200, "keys per user: a proxy admin is not bound by the cap")

    # a team admin may make a team key for a member: not for one already at the cap
    attack.user(srv, "bounds-tadmin")
    attack.team(srv, "bounds-move", admins=["bounds-tadmin"], members=["bounds-many"])
    ta = attack.Caller(srv, m("POST", "/key/generate", {"user_id": "bounds-tadmin"}).json["key"],
                       "bounds-tadmin")
    r = ta("POST", "/key/generate", {"team_id": "bounds-move", "user_id": "bounds-many"})
    tap.ok(r.status == 400 and err_param(r) == "user_id",
           "keys per user: a team admin cannot make a key for a member at the cap", repr(r))


def info_answers(srv):
    u = attack.Caller(srv, attack.master(srv)("POST", "/key/generate",
                                              {"user_id": "bounds-many"}).json["key"],
                      "bounds-many")
    r = u("GET", "/user/info")
    keys = (r.json or {}).get("keys") or []
    tap.ok(r.status == 200 and len(keys) == INFO_KEYS and r.json.get("keys_truncated") is True,
           "/user/info: at most KEYWARDEN_INFO_MAX_KEYS keys, and keys_truncated says there "
           "are more", "status %d, %d keys, keys_truncated %r" %
           (r.status, len(keys), (r.json or {}).get("keys_truncated")))
    seen, page = set(), 1
    while page < 20:
        r = u("GET", "/key/list?user_id=bounds-many&size=%d&page=%d" % (INFO_KEYS, page))
        if r.status != 200:
            break
        seen.update(r.json["keys"])
        if page >= r.json["total_pages"]:
            break
        page += 1
    tap.eq(len(seen), MAX_KEYS + 2,
           "/user/info: /key/list?user_id=&page= gives every one of the user's keys")

    m = attack.master(srv)
    attack.team(srv, "bounds-info", admins=["bounds-tadmin"])
    for _ in range(INFO_KEYS + 2):
        m("POST", "/key/generate", {"team_id": "bounds-info"})
    r = m("GET", "/team/info?team_id=bounds-info")
    keys = (r.json or {}).get("keys") or []
    tap.ok(r.status == 200 and len(keys) == INFO_KEYS and r.json.get("keys_truncated") is True,
           "/team/info: at most KEYWARDEN_INFO_MAX_KEYS keys, and keys_truncated",
           "status %d, %d keys" % (r.status, len(keys)))
    r = m("GET", "/user/info?user_id=bounds-tadmin")
    tap.ok(r.status == 200 and r.json.get("keys_truncated") is False,
           "/user/info: keys_truncated is false when every key is in the answer", repr(r))


def metric(srv, name):
    r = attack.master(srv)("GET", "/metrics")
    text = r.body.decode() if isinstance(r.body, bytes) else r.body
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def selections(srv):
    m = attack.master(srv)
    r = m("POST", "/api/providers/openai/keys",
          {"name": "bounds-openai", "value": "sk-proj-bounds-0123456789abcdef", "models": ["*"]})
    key_id = (r.json or {}).get("id")
    selector = attack.Caller(srv, m("POST", "/key/generate",
                                    {"permissions": {"select_provider_keys": True}}).json["key"])
    before = metric(srv, "keywarden_provider_key_selections_total")
    statuses = [selector("POST", "/api/providers/openai/keys/select", {"model": "gpt-4o"}).status
                for _ in range(10)]
    r = m("GET", "/audit?page_size=100&action=selected")
    total = (r.json or {}).get("total")
    tap.ok(statuses == [200] * 10 and total == 0,
           "audit: ten provider key selections write no audit entry",
           "statuses %r, audit total %r" % (statuses, total))
    after = metric(srv, "keywarden_provider_key_selections_total")
    tap.ok(after is not None and after - (before or 0) == 10,
           "audit: selections are counted in /metrics instead",
           "before %r after %r" % (before, after))
    r = m("GET", "/audit?page_size=100&object_id=%s" % key_id)
    tap.eq(sorted(e["action"] for e in (r.json or {}).get("audit_logs") or []), ["created"],
           "audit: the provider key's changes are still audited")


def leases(srv, clock):
    m = attack.master(srv)
    attack.user(srv, "bounds-lease")
    attack.team(srv, "bounds-par", members=["bounds-lease"], max_parallel_requests=1)
    key = m("POST", "/key/generate", {"user_id": "bounds-lease", "team_id": "bounds-par"}).json["key"]

    def verify(**extra):
        body = {"key": key, "model": "gpt-4"}
        body.update(extra)
        return (m("POST", "/key/verify", body).json or {}).get("code")

    first, second = verify(), verify()
    clock.advance(ANON_LEASE + 1)
    third = verify()
    tap.ok((first, second, third) == ("VALID", "RATE_LIMITED", "VALID"),
           "leases: a request without a request_id holds the team's slot for "
           "KEYWARDEN_ANON_LEASE_SECS only", "verdicts %r" % ((first, second, third),))

    clock.advance(ANON_LEASE + 1)
    first = verify(request_id="bounds-req-1")
    clock.advance(ANON_LEASE + 1)
    second = verify(request_id="bounds-req-2")
    r = m("POST", "/key/usage", {"key": key, "request_id": "bounds-req-1", "model": "gpt-4",
                                 "prompt_tokens": 1, "completion_tokens": 1, "cost": 0})
    third = verify(request_id="bounds-req-3")
    tap.ok((first, second, r.status, third) == ("VALID", "RATE_LIMITED", 200, "VALID"),
           "leases: a request_id of the caller's keeps the slot until its usage is reported",
           "verdicts %r" % ((first, second, r.status, third),))


def provisioning(srv, clock):
    m = attack.master(srv)
    u = attack.user(srv, "bounds-prov")
    m("POST", "/organization/new", {"organization_id": "bounds-org", "organization_alias": "Bounds"})
    m("POST", "/organization/member_add", {"organization_id": "bounds-org",
                                           "member": {"user_id": "bounds-prov"}})
    statuses = []
    for i in range(MAX_KEYS + 1):
        r = u("POST", "/api/v1/org/bounds-org/inference/keys", {"client_id": "bounds-c%d" % i})
        statuses.append(r.status)
    tap.ok(statuses.count(200) == MAX_KEYS - 1 and statuses[-1] == 400,
           "provisioning: a member's keys for new client ids stop at KEYWARDEN_MAX_KEYS_PER_USER",
           "statuses %r, last %r" % (statuses, r))
    clock.advance(3601)
    r = u("POST", "/api/v1/org/bounds-org/inference/keys", {"client_id": "bounds-later"})
    tap.eq(r.status, 200, "provisioning: at the cap, the member's expired provisioned keys "
           "make room")


def the_rest(srv):
    m = attack.master(srv)
    u = attack.user(srv, "bounds-meta")
    r = u("POST", "/key/generate", {"metadata": {"blob": "x" * (17 * 1024)}})
    tap.ok(r.status == 400 and err_param(r) == "metadata",
           "metadata: a key's metadata over 16 KiB is 400 naming metadata", repr(r))
    r = u("POST", "/key/generate", {"metadata": {"blob": "x" * 1024}})
    tap.eq(r.status, 200, "metadata: a key's metadata of 1 KiB is kept")

    ta = attack.user(srv, "bounds-members-admin")
    attack.team(srv, "bounds-members", admins=["bounds-members-admin"])
    statuses = []
    for i in range(TEAM_MEMBERS + 2):
        r = ta("POST", "/team/member_add", {"team_id": "bounds-members",
                                            "member": {"user_id": "bounds-member-%d" % i}})
        statuses.append(r.status)
    tap.ok(statuses.count(200) == TEAM_MEMBERS - 1 and statuses[-1] == 400 and
           err_param(r) == "member",
           "team members: a team admin's team holds at most KEYWARDEN_MAX_TEAM_MEMBERS members",
           "statuses %r, last %r" % (statuses, r))
    r = m("POST", "/team/member_add", {"team_id": "bounds-members",
                                       "member": {"user_id": "bounds-member-by-admin"}})
    tap.eq(r.status, 200, "team members: a proxy admin is not bound by the cap")


def main():
    tmp = tempfile.mkdtemp(prefix="kw-bounds-")
    clock = Clock(os.path.join(tmp, "clock"))
    env = {"KEYWARDEN_MAX_KEYS_PER_USER": str(MAX_KEYS), "KEYWARDEN_INFO_MAX_KEYS": str(INFO_KEYS),
           "KEYWARDEN_MAX_TEAM_MEMBERS": str(TEAM_MEMBERS),
           "KEYWARDEN_ANON_LEASE_SECS": str(ANON_LEASE), "KEYWARDEN_LEASE_SECS": "600",
           "KEYWARDEN_CLOCK_FILE": clock.path}
    with Server(env=env) as srv:
        for part in (keys_per_user, info_answers, selections, lambda s: leases(s, clock),
                     lambda s: provisioning(s, clock), the_rest):
            try:
                part(srv)
            except Exception as e:  # one part's surprise must not hide the others' results
                tap.ok(False, "%s raised" % getattr(part, "__name__", "part"), repr(e))
    shutil.rmtree(tmp, ignore_errors=True)


tap.run(main)
