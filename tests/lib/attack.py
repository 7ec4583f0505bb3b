"""attack.py: what the attack suite (tests/attack/) shares: callers of every role on a live server, and many clients at once."""
import threading


class Caller:
    """Requests made with one key; .key is the plaintext, .user_id its user (None for none)."""

    def __init__(self, srv, key, user_id=None):
        self.srv, self.key, self.user_id = srv, key, user_id

    def __call__(self, method, path, body=None, headers=None):
        hdrs = {"Authorization": "Bearer " + self.key}
        hdrs.update(headers or {})
        return self.srv.request(method, path, body=body, headers=hdrs)


def master(srv):
    return Caller(srv, srv.master_key)


def user(srv, user_id, role="internal_user", **settings):
    """A user of role with a first key (POST /user/new as the master key); its Caller."""
    body = {"user_id": user_id, "user_role": role}
    body.update(settings)
    r = master(srv)("POST", "/user/new", body)
    if r.status != 200:
        raise RuntimeError("user/new %s: %r" % (user_id, r))
    return Caller(srv, r.json["key"], user_id)


def team(srv, team_id, admins=(), members=(), **settings):
    """A team with admins and members (user ids), made by the master key; its record."""
    body = {"team_id": team_id, "members_with_roles":
            [{"user_id": u, "role": "admin"} for u in admins] +
            [{"user_id": u, "role": "user"} for u in members]}
    body.update(settings)
    r = master(srv)("POST", "/team/new", body)
    if r.status != 200:
        raise RuntimeError("team/new %s: %r" % (team_id, r))
    return r.json


def together(fns):
    """Runs every function at once, released by one barrier; their results in order."""
    results = [None] * len(fns)
    start = threading.Barrier(len(fns))

    def run(i):
        start.wait()
        results[i] = fns[i]()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
