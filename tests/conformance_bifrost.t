#!/usr/bin/python3
"""conformance_bifrost.t: the Bifrost face point by point against Bifrost v1.5's own code
(maximhq/bifrost: transports/bifrost-http/handlers providers.go and provider keys,
core/schemas provider.go, account.go and envvar.go), each test naming the function it
follows; README "Provider credentials (Bifrost)" and its table of what differs on purpose.

1. models and blacklisted_models as WhiteLists, in writes and in the selection; a mask sent
   back keeps the stored secret; the path's id and the stored name win in a PUT.
2. {"keys", "total"} lists in configured order; /api/keys as TableKey rows.
3. providers configured, upserted and removed, with network_config and the rest round-tripped.
4. v1.5 key fields stored; per-provider value rules; api_version in clear; references shown
   by their resolved value, redacted.
5. status, omitempty, name and weight as Bifrost leaves them; a key stored by an earlier
   version (models [] for every model, status "active", null configs) still reads, serves
   and keeps its config_hash."""
import hashlib
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import Server, wait_for  # noqa: E402
from attack import master  # noqa: E402

ENV = {"KW_CONF_OPENAI_API_KEY": "sk-conf-from-the-environment-0123456789"}
PASSWORD = "proxy-password-conf-0123456789abcdef"
STAMPS = {"updated_at"}


def refused(r, status, param, name):
    e = (r.json or {}).get("error") if isinstance(r.json, dict) else None
    tap.ok(r.status == status and isinstance(e, dict) and e.get("param") == param,
           "%s: %d naming %s" % (name, status, param), repr(r)[:500])


def redact(s):
    return "" if not s else "********" if len(s) < 32 else s[:4] + "*" * 24 + s[-4:]


def same(a, b, name):
    a = {k: v for k, v in (a or {}).items() if k not in STAMPS}
    b = {k: v for k, v in (b or {}).items() if k not in STAMPS}
    tap.ok(a == b, name, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)})


def selected(m, provider, model):
    r = m("POST", "/api/providers/%s/keys/select" % provider, {"model": model})
    return (r.json or {}).get("id") if r.status == 200 else r.status


def providers(m):
    r = m("GET", "/api/providers")
    tap.ok(r.status == 200 and r.json == {"providers": [], "total": 0},
           "listProviders: a fresh server lists no provider (only configured ones)", repr(r))
    r = m("GET", "/api/providers/openai")
    refused(r, 404, "provider", "getProvider: a standard provider never configured")

    nc = {"base_url": "http://127.0.0.1:9/v1", "extra_headers": {"X-Org": "conf"},
          "default_request_timeout_in_seconds": 45, "max_retries": 3,
          "retry_backoff_initial": "750ms", "retry_backoff_max": 8000}
    r = m("POST", "/api/providers", {"provider": "openai", "network_config": nc,
                                     "concurrency_and_buffer_size": {"concurrency": 4,
                                                                     "buffer_size": 16},
                                     "send_back_raw_request": True, "surprise": 1})
    a = r.json or {}
    tap.ok(r.status == 200 and a.get("network_config") == dict(nc, retry_backoff_initial=750) and
           a.get("concurrency_and_buffer_size") == {"concurrency": 4, "buffer_size": 16} and
           a.get("send_back_raw_request") is True and a.get("send_back_raw_response") is False and
           a.get("store_raw_request_response") is False and a.get("proxy_config") is None and
           a.get("provider_status") == "active" and a.get("custom") is False and
           "custom_provider_config" not in a and "surprise" not in a and
           len(a.get("config_hash") or "") == 64,
           "addProvider: a standard provider configured; NetworkConfig.UnmarshalJSON reads "
           "\"750ms\" and 8000 (ms), answered in ms; unknown fields ignored", a)
    refused(m("POST", "/api/providers", {"provider": "openai"}), 409, "provider",
            "addProvider: a configured provider again")
    r = m("GET", "/api/providers")
    tap.ok([p.get("name") for p in r.json.get("providers", [])] == ["openai"] and
           r.json.get("total") == 1, "listProviders: the configured one only", repr(r)[:400])

    r = m("PUT", "/api/providers/anthropic", {})
    a = r.json or {}
    tap.ok(r.status == 200 and a.get("network_config") == {
        "default_request_timeout_in_seconds": 30, "max_retries": 0,
        "retry_backoff_initial": 500, "retry_backoff_max": 5000} and
        a.get("concurrency_and_buffer_size") == {"concurrency": 1000, "buffer_size": 5000},
        "updateProvider: an upsert; DefaultNetworkConfig and DefaultConcurrencyAndBufferSize "
        "filled in", a)

    for body, param, name in (
            ({"network_config": {"retry_backoff_initial": "50ms"}},
             "network_config.retry_backoff_initial", "a backoff under 100ms"),
            ({"network_config": {"retry_backoff_max": "soon"}},
             "network_config.retry_backoff_max", "a backoff that is no duration"),
            ({"network_config": {"retry_backoff_initial": "5s", "retry_backoff_max": "1s"}},
             "network_config.retry_backoff_initial", "initial over max"),
            ({"concurrency_and_buffer_size": {"concurrency": 0, "buffer_size": 5}},
             "concurrency_and_buffer_size.concurrency", "concurrency 0"),
            ({"concurrency_and_buffer_size": {"concurrency": 9, "buffer_size": 5}},
             "concurrency_and_buffer_size.buffer_size", "concurrency over buffer_size"),
            ({"network_config": {"base_url": "ftp://x"}}, "network_config.base_url",
             "a base_url that is not http(s)"),
            ({"network_config": {"extra_headers": {"Bad Name": "x"}}},
             "network_config.extra_headers.Bad Name", "a header name that is no token"),
            ({"network_config": {"extra_headers": {"X-Split": "a\r\nX-Evil: 1"}}},
             "network_config.extra_headers.X-Split", "a header value of two lines"),
            ({"keys": [{"value": "sk-x"}]}, "keys", "keys in the provider's body")):
        refused(m("PUT", "/api/providers/openai", body), 400, param,
                "updateProvider / validateRetryBackoff: " + name)
    tap.eq((m("GET", "/api/providers/openai").json or {}).get("network_config"),
           dict(nc, retry_backoff_initial=750), "... the refused PUTs changed nothing")

    auth = dict(nc, extra_headers={"X-Org": "conf", "Authorization": "Bearer " + PASSWORD})
    r = m("PUT", "/api/providers/openai", {"network_config": auth})
    h = ((r.json or {}).get("network_config") or {}).get("extra_headers") or {}
    tap.ok(r.status == 200 and h == {"X-Org": "conf", "Authorization": redact("Bearer " + PASSWORD)}
           and PASSWORD not in r.body.decode(),
           "extra_headers: sealed at rest; a credential's value (Authorization) answered "
           "redacted, others in clear", repr(r)[:500])
    got = m("GET", "/api/providers/openai").json
    r = m("PUT", "/api/providers/openai", dict(got))
    same(got, r.json, "updateProvider: the redacted header sent back keeps it (config_hash too)")
    refused(m("PUT", "/api/providers/openai", {"network_config": {"extra_headers": {
        "X-Api-Key": "<redacted>"}}}), 400, "network_config.extra_headers.X-Api-Key",
        "extra_headers: a mask with no stored value behind it")
    proxy = {"type": "http", "url": "http://proxy.internal:3128", "username": "conf",
             "password": PASSWORD}
    r = m("PUT", "/api/providers/openai", {"network_config": nc, "proxy_config": proxy})
    p = (r.json or {}).get("proxy_config") or {}
    tap.ok(r.status == 200 and p.get("password") == {"value": redact(PASSWORD), "env_var": "",
                                                      "from_env": False} and
           p.get("url", {}).get("value") == proxy["url"] and PASSWORD not in r.body.decode(),
           "ProxyConfig.Redacted: the password redacted, url and username in clear", repr(r)[:500])
    got = m("GET", "/api/providers/openai").json
    r = m("PUT", "/api/providers/openai", dict(got))
    same(got, r.json, "updateProvider: the GET answer sent back is accepted and changes "
         "nothing (config_hash, the redacted password kept)")
    refused(m("PUT", "/api/providers/Bad%20Name", {"custom_provider_config":
                                                   {"base_provider_type": "openai"}}), 400,
            "provider", "updateProvider: a new custom provider's name as addProvider takes it")
    for b in ("anthropic", "bedrock", "cohere", "gemini", "openai", "huggingface", "replicate"):
        r = m("POST", "/api/providers", {"provider": "conf-" + b,
                                         "custom_provider_config": {"base_provider_type": b}})
        tap.ok(r.status == 200 and r.json.get("custom") is True,
               "IsSupportedBaseProvider: a custom provider on " + b, repr(r)[:300])
    refused(m("POST", "/api/providers", {"provider": "conf-azure", "custom_provider_config":
                                         {"base_provider_type": "azure"}}), 400,
            "custom_provider_config.base_provider_type",
            "IsSupportedBaseProvider: azure is no base")
    refused(m("PUT", "/api/providers/conf-openai", {"custom_provider_config":
                                                    {"base_provider_type": "anthropic"}}), 400,
            "custom_provider_config.base_provider_type",
            "ValidateCustomProviderUpdate: the base type does not change")
    r = m("PUT", "/api/providers/conf-openai", {"network_config": {"base_url": "http://c.in/v1"}})
    tap.ok(r.status == 200 and (r.json.get("custom_provider_config") or {}).get(
        "base_provider_type") == "openai" and r.json["network_config"]["base_url"] == "http://c.in/v1",
        "applyProviderConfigUpdates: a custom_provider_config not sent is kept", repr(r)[:300])
    got = m("GET", "/api/providers/conf-openai").json
    same(got, m("PUT", "/api/providers/conf-openai", dict(got)).json,
         "updateProvider: a custom provider's GET answer sent back changes nothing")

    m("POST", "/api/providers/openai/keys", {"name": "conf-doomed", "value": "sk-doomed-1"})
    r = m("DELETE", "/api/providers/openai")
    tap.ok(r.status == 200 and r.json.get("keys") == 1, "deleteProvider: a standard provider's "
           "configuration and its keys removed", repr(r)[:300])
    refused(m("GET", "/api/providers/openai"), 404, "provider", "... it is not configured")
    tap.eq(m("GET", "/api/providers/openai/keys").json.get("total"), 0, "... its key is gone")


def keys(m):
    mk = lambda p, body: m("POST", "/api/providers/%s/keys" % p, body)  # noqa: E731
    r = mk("groq", {"value": "sk-groq-none-000000000000000000000001", "models": []})
    none = r.json.get("id")
    r = mk("groq", {"name": "conf-all", "value": "sk-groq-all-000000000000000000000001"})
    every = r.json.get("id")
    tap.ok(r.json.get("models") == ["*"] and r.json.get("weight") == 0 and
           r.json.get("name") == "conf-all",
           "createProviderKey: models defaults to [\"*\"], weight to Go's 0", r.json)
    tap.eq(selected(m, "groq", "anything-at-all"), every,
           "WhiteList.IsAllowed: [\"*\"] allows every model, [] none")
    refused(mk("groq", {"name": "w1", "value": "sk-w1", "models": ["gpt-4", "*"]}), 400,
            "models[1]", "WhiteList.Validate: '*' with another model")
    refused(mk("groq", {"name": "w2", "value": "sk-w2", "models": ["gpt-4", "Gpt-4"]}), 400,
            "models[1]", "WhiteList.Validate: a duplicate, case ignored")
    r = m("PUT", "/api/providers/groq/keys/" + every, {"value": "<redacted>",
                                                       "blacklisted_models": ["*"]})
    tap.ok(r.status == 200 and r.json.get("name") == "conf-all",
           "updateProviderKey: a PUT without a name keeps it", repr(r)[:300])
    tap.eq(selected(m, "groq", "anything-at-all"), 404, "a blacklist of [\"*\"] blocks every model")
    r = m("PUT", "/api/providers/groq/keys/" + every, {"value": "<REDACTED>", "id": "another",
                                                       "models": ["GPT-4"],
                                                       "blacklisted_models": []})
    tap.ok(r.status == 200 and r.json.get("id") == every,
           "updateProviderKey: the path's id wins over the body's", repr(r)[:300])
    tap.eq(selected(m, "groq", "gpt-4"), every, "WhiteList.Contains: models match case ignored")
    r = m("PUT", "/api/providers/groq/keys/" + every, {"value": "<redacted>", "models": ["gpt-4"],
                                                       "blacklisted_models": ["gpt-4"]})
    tap.ok(r.status == 200, "createProviderKey: allowed and blacklisted together is accepted",
           repr(r)[:300])
    tap.eq(selected(m, "groq", "gpt-4"), 404, "... and the blacklist wins")
    sel = m("POST", "/api/providers/groq/keys/select", {"model": "x"})
    m("PUT", "/api/providers/groq/keys/" + every, {"value": "*" * 8})
    sel = m("POST", "/api/providers/groq/keys/select", {"model": "x"})
    tap.eq((sel.json or {}).get("value"), "sk-groq-all-000000000000000000000001",
           "EnvVar.IsRedacted: \"<redacted>\", \"<REDACTED>\" and stars sent back keep the secret")
    refused(mk("groq", {"value": "sk-groq-noname-2"}), 409, "name",
            "createProviderKey: a second key without a name (names unique across providers)")
    m("DELETE", "/api/providers/groq/keys/" + none)

    r = mk("azure", {"name": "conf-az", "value": "", "models": ["gpt-4o"],
                     "azure_key_config": {"endpoint": "https://conf.openai.azure.com/",
                                          "api_version": "2024-10-21"},
                     "aliases": {"gpt-4o": "gpt4o-prod"}, "use_anthropic_endpoints": False})
    az = r.json or {}
    tap.ok(r.status == 200 and "value" not in az and
           az["azure_key_config"]["api_version"]["value"] == "2024-10-21" and
           az["azure_key_config"]["endpoint"]["value"] == redact("https://conf.openai.azure.com/")
           and az.get("aliases") == {"gpt-4o": "gpt4o-prod"} and
           az.get("use_anthropic_endpoints") is False,
           "CanProviderKeyValueBeEmpty(azure): an endpoint is enough; api_version in clear; "
           "aliases (v1.5's deployments) and use_anthropic_endpoints stored", az)
    refused(mk("azure", {"name": "conf-az2", "value": "sk-az"}), 400,
            "azure_key_config.endpoint", "validateProviderKeyURL: azure needs its endpoint")
    r = mk("vertex", {"name": "conf-vx", "models": ["gemini-pro"]})
    tap.eq(r.status, 200, "v1.5: a vertex key without project or region")
    refused(mk("openai", {"name": "conf-unset", "value": "env.KW_CONF_UNSET_API_KEY"}), 400,
            "value", "createProviderKey: env.X of an unset variable is an empty value")
    tap.ok("Key value must not be empty" in mk("openai", {"name": "conf-unset2", "value": ""})
           .body.decode(), "... refused with Bifrost's message")
    r = mk("openai", {"name": "conf-env", "value": "env.KW_CONF_OPENAI_API_KEY",
                      "models": ["env-model"], "openai_key_config": {"use_responses_api": True},
                      "deployments": {"ignored": "yes"}})
    k = r.json or {}
    tap.ok(r.status == 200 and k.get("value") == {
        "value": redact(ENV["KW_CONF_OPENAI_API_KEY"]), "env_var": "env.KW_CONF_OPENAI_API_KEY",
        "from_env": True} and k.get("openai_key_config") == {"use_responses_api": True} and
        "deployments" not in k,
        "EnvVar.Redacted: a reference reads its resolved value redacted; openai_key_config "
        "stored; a field Key lacks ignored", k)
    r = mk("bedrock", {"name": "conf-br", "models": ["claude"], "bedrock_key_config": {
        "region": "us-east-1", "role_arn": "arn:aws:iam::123456789012:role/conf-bifrost-role",
        "external_id": "conf-external-id-0123456789abcdef01", "session_name": "conf"}})
    b = (r.json or {}).get("bedrock_key_config") or {}
    tap.ok(r.status == 200 and b.get("role_arn", {}).get("value") == redact(
        "arn:aws:iam::123456789012:role/conf-bifrost-role") and "session_name" in b,
        "BedrockKeyConfig: role_arn, external_id and session_name stored, sealed, redacted", b)
    sel = m("POST", "/api/providers/bedrock/keys/select", {"model": "claude"}).json or {}
    tap.eq((sel.get("bedrock_key_config") or {}).get("role_arn"),
           "arn:aws:iam::123456789012:role/conf-bifrost-role", "... and resolved by select")
    tap.ok(not [c for c in ("vertex_key_config", "vllm_key_config", "description", "status")
                if c in az], "omitempty: nil configs, no description, no status", az)

    # configured order, Bifrost's list shapes
    made = [mk("cohere", {"name": n, "value": "sk-order-%s" % n}).json["id"]
            for n in ("conf-z", "conf-a", "conf-m")]
    r = m("GET", "/api/providers/cohere/keys")
    tap.ok(r.status == 200 and [x["id"] for x in r.json.get("keys", [])] == made and
           r.json.get("total") == 3,
           "ListProviderKeysResponse {keys, total}, in the order configured", repr(r)[:300])
    rows = m("GET", "/api/keys").json
    mine = [x for x in rows if x.get("provider") == "cohere"]
    tap.ok([x.get("key_id") for x in mine] == made and
           all(x.get("provider_id") == "cohere" for x in mine),
           "listKeys: TableKey rows (key_id, provider_id, provider), in the order configured",
           mine[:1])

    # every key read, sent back: accepted, config_hash unchanged
    bad = []
    for x in m("GET", "/api/keys").json:
        path = "/api/providers/%s/keys/%s" % (x["provider"], x["id"])
        got = m("GET", path).json
        r = m("PUT", path, dict(got))
        if r.status != 200 or r.json.get("config_hash") != got.get("config_hash"):
            bad.append((x["provider"], x.get("name"), r.status, repr(r)[:200]))
    tap.ok(not bad, "updateProviderKey / mergeUpdatedKey: every key as GET answers it, sent "
           "back, is accepted and keeps its config_hash", bad)


def old_hash(content):
    """config_hash as earlier versions computed it (face_bifrost.c's config_hash before v1.5)."""
    pick = {f: content.get(f) for f in ("name", "value", "models", "blacklisted_models",
                                         "enabled", "use_for_batch_api")}
    pick.update({c: None for c in ("azure_key_config", "vertex_key_config", "bedrock_key_config",
                                   "replicate_key_config", "vllm_key_config", "ollama_key_config",
                                   "sgl_key_config")})
    pick["weight"] = "%.15g" % content.get("weight", 1)
    pick["models"], pick["blacklisted_models"] = sorted(pick["models"]), sorted(
        pick["blacklisted_models"])
    return hashlib.sha256(json.dumps(pick, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def old_record(srv, m):
    """A key as earlier versions stored it, written into a stopped server's store."""
    secret = "sk-old-shape-0123456789abcdefghijklmnop"
    k = m("POST", "/api/providers/mistral/keys", {"name": "conf-old", "value": secret,
                                                  "models": ["*"], "weight": 1}).json
    srv.stop()
    tap.ok(wait_for(lambda: not srv.processes(), timeout=60), "old shape: the server stopped")
    dump = subprocess.run(["db5.3_dump", "-p", "-h", srv.data_dir, "provider_keys.db"],
                          capture_output=True, text=True, timeout=60).stdout.splitlines()
    row = "mistral|" + k["id"]
    i = [line.strip() for line in dump].index(row)
    rec = json.loads(dump[i + 1].strip().encode().decode("unicode_escape"))
    for f in ("models_form", "seq"):
        rec.pop(f, None)
    rec.update({"models": [], "status": "active", "description": None,
                "azure_key_config": None, "sgl_key_config": None})
    rec["config_hash"] = old_hash({"name": "conf-old", "value": secret, "models": [],
                                   "blacklisted_models": [], "weight": 1, "enabled": True,
                                   "use_for_batch_api": False})
    text = json.dumps(rec, separators=(",", ":")).replace("\\", "\\\\")
    p = subprocess.run(["db5.3_load", "-T", "-t", "btree", "-h", srv.data_dir,
                        "provider_keys.db"], input="%s\n%s\n" % (row, text),
                       capture_output=True, text=True, timeout=60)
    tap.ok(p.returncode == 0, "old shape: a record as 0.1.0 wrote it (models [] for every "
           "model, status active, null configs)", p.stderr)
    srv.start()
    got = m("GET", "/api/providers/mistral/keys/" + k["id"]).json or {}
    tap.ok(got.get("models") == ["*"] and "status" not in got and
           "azure_key_config" not in got and "description" not in got,
           "old shape: it reads as v1.5 (Bifrost's migration of [] to [\"*\"])", got)
    tap.eq(selected(m, "mistral", "mistral-large"), k["id"], "old shape: it serves every model")
    r = m("PUT", "/api/providers/mistral/keys/" + k["id"], dict(got))
    tap.ok(r.status == 200 and r.json.get("config_hash") == rec["config_hash"],
           "old shape: its GET answer sent back keeps the config_hash earlier versions gave it",
           [rec["config_hash"], (r.json or {}).get("config_hash")])


def main():
    with Server(workers=2, env=ENV) as srv:
        m = master(srv)
        providers(m)
        keys(m)
        old_record(srv, m)
        log = srv.read_log()
        tap.ok(PASSWORD not in log and ENV["KW_CONF_OPENAI_API_KEY"] not in log,
               "no proxy password, credential header or resolved reference in the server log")
        srv.stop()
        found = []
        for root, _, files in os.walk(srv.data_dir):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    if PASSWORD.encode() in f.read():
                        found.append(name)
        tap.ok(not found, "no file of the data directory holds the proxy password or the "
               "Authorization header's credential (sealed; the audit keeps answers, redacted)",
               found)


tap.run(main)
