#!/usr/bin/python3
"""conformance_roundtrip.t: on every face, each object a GET answers, sent back unchanged to
its update operation, is accepted and changes nothing (README "Unknown fields"): LiteLLM
keys, teams and users, Bifrost providers and provider keys (config_hash unchanged) and Venice
keys.  The
originals' request models ignore the fields they do not declare (LiteLLM's pydantic models,
Bifrost's Go structs, Venice's request schemas), so a client may edit what it read."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import Server  # noqa: E402
from attack import master, user, team  # noqa: E402

# what an update stamps, and what is computed at read time
STAMPS = {"updated_at", "updated_by", "config_hash_at"}


def same(before, after, name):
    a = {k: v for k, v in (before or {}).items() if k not in STAMPS}
    b = {k: v for k, v in (after or {}).items() if k not in STAMPS}
    diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
    tap.ok(not diff, name, diff)


def main():
    with Server(workers=2) as srv:
        m = master(srv)
        owner = user(srv, "rt-owner", max_budget=50)
        team(srv, "rt-team", admins=["rt-owner"], max_budget=20, models=["gpt-4"])
        k = m("POST", "/key/generate", {"user_id": "rt-owner", "key_alias": "rt", "max_budget": 5,
                                        "models": ["gpt-4"], "duration": "30d",
                                        "budget_duration": "1d", "metadata": {"a": [1, {"b": 2}]},
                                        "tags": ["x"], "rpm_limit": 9}).json["key"]
        for who, caller in (("the master key", m), ("its owner", owner)):
            before = m("GET", "/key/info?key=" + k).json["info"]
            seen = caller("GET", "/key/info?key=" + k).json["info"]
            r = caller("POST", "/key/update", dict(seen, key=k))
            tap.eq(r.status, 200, "LiteLLM: /key/info's info, sent to /key/update by %s" % who)
            same(before, m("GET", "/key/info?key=" + k).json["info"], "... changes nothing")

        t = m("GET", "/team/info?team_id=rt-team").json
        before = t.get("team_info") or t
        r = m("POST", "/team/update", dict(before))
        tap.eq(r.status, 200, "LiteLLM: /team/info's team_info, sent to /team/update")
        after = m("GET", "/team/info?team_id=rt-team").json
        same(before, after.get("team_info") or after, "... changes nothing")
        r = owner("POST", "/team/update", dict(before))
        tap.eq(r.status, 200, "... by the team's admin too: its budget sent unchanged passes")

        u = m("GET", "/user/info?user_id=rt-owner").json
        before = u.get("user_info") or u
        r = m("POST", "/user/update", dict(before))
        tap.eq(r.status, 200, "LiteLLM: /user/info's user_info, sent to /user/update")
        after = m("GET", "/user/info?user_id=rt-owner").json
        same(before, after.get("user_info") or after, "... changes nothing")

        r = m("POST", "/api/providers/openai/keys", {"name": "rt-key", "value": "sk-rt-" + "9" * 40,
                                                    "models": ["gpt-4"], "weight": 2})
        kid = (r.json or {}).get("id")
        got = m("GET", "/api/providers/openai/keys/%s" % kid).json
        r = m("PUT", "/api/providers/openai/keys/%s" % kid, dict(got))
        tap.eq(r.status, 200, "Bifrost: a provider key as GET answers it, sent to its PUT")
        again = m("GET", "/api/providers/openai/keys/%s" % kid).json
        tap.eq(again.get("config_hash"), got.get("config_hash"), "... config_hash unchanged")
        same(got, again, "... and so is everything else")
        sel = m("POST", "/api/providers/openai/keys/select", {"model": "gpt-4"}).json
        tap.eq(sel.get("value"), "sk-rt-" + "9" * 40, "... the secret too (the redacted value "
               "sent back keeps it)")
        r = m("POST", "/api/providers/bedrock/keys", {
            "name": "rt-bedrock", "models": ["claude"], "aliases": {"claude": "profile-1"},
            "bedrock_key_config": {"region": "us-east-1", "role_arn": "arn:aws:iam::1:role/rt",
                                   "external_id": "rt-external-id-0123456789abcdef0123"}})
        path = "/api/providers/bedrock/keys/%s" % (r.json or {}).get("id")
        got = m("GET", path).json
        r = m("PUT", path, dict(got))
        tap.eq(r.status, 200, "Bifrost: a v1.5 key (aliases, Bedrock's role), sent to its PUT")
        same(got, m("GET", path).json, "... changes nothing, config_hash included")

        m("PUT", "/api/providers/openai", {
            "network_config": {"base_url": "http://127.0.0.1:9/v1", "extra_headers": {"X-A": "b"},
                               "retry_backoff_initial": "1s"},
            "proxy_config": {"type": "http", "url": "http://proxy:3128",
                             "password": "rt-proxy-password-0123456789abcdefgh"}})
        m("POST", "/api/providers", {"provider": "rt-custom", "custom_provider_config": {
            "base_provider_type": "anthropic", "base_url": "http://127.0.0.1:9"}})
        for name in ("openai", "rt-custom"):
            got = m("GET", "/api/providers/" + name).json
            r = m("PUT", "/api/providers/" + name, dict(got))
            tap.eq(r.status, 200, "Bifrost: provider %s as GET answers it, sent to its PUT" % name)
            same(got, m("GET", "/api/providers/" + name).json,
                 "... changes nothing (network_config, the proxy password, config_hash)")
            edited = json.loads(json.dumps(got))
            edited["network_config"]["max_retries"] = 4
            edited["send_back_raw_response"] = True
            r = m("PUT", "/api/providers/" + name, edited)
            after = m("GET", "/api/providers/" + name).json or {}
            tap.ok(r.status == 200 and after["network_config"]["max_retries"] == 4 and
                   after["send_back_raw_response"] is True and
                   after.get("proxy_config") == got.get("proxy_config") and
                   after.get("config_hash") != got.get("config_hash"),
                   "... and edited (max_retries, a raw flag): the edit taken, the rest kept, a "
                   "new config_hash", repr(r)[:300])
        got = m("GET", path).json
        r = m("PUT", path, dict(got, weight=5, description="edited"))
        after = m("GET", path).json or {}
        tap.ok(r.status == 200 and after.get("weight") == 5 and
               after.get("bedrock_key_config") == got.get("bedrock_key_config") and
               after.get("config_hash") != got.get("config_hash"),
               "Bifrost: a key as GET answers it, edited (weight) and sent to its PUT: the "
               "edit taken, its sealed fields kept", repr(r)[:300])

        r = m("POST", "/api/v1/api_keys", {"apiKeyType": "INFERENCE", "description": "rt",
                                           "consumptionLimit": {"usd": 3}, "limitPeriod": "MONTH",
                                           "expiresAt": "2031-01-02"})
        vid = (r.json or {}).get("data", {}).get("id")
        got = m("GET", "/api/v1/api_keys/%s" % vid).json["data"]
        r = m("PATCH", "/api/v1/api_keys", dict(got))
        tap.eq(r.status, 200, "Venice: a key as GET answers it, sent to its PATCH")
        same(got, m("GET", "/api/v1/api_keys/%s" % vid).json["data"], "... changes nothing")


tap.run(main)
