#!/usr/bin/python3
"""contract_providers.t: the Bifrost face (provider credentials) through lighttpd, as the
README's section "Provider credentials (Bifrost)" describes it.

Covers: the standard providers (Bifrost's StandardProviders: none listed and each 404 until
configured) and custom ones (create, 409 for a taken name, 400 for a standard name or a base
outside SupportedBaseProviders, custom_provider_config required, delete with its keys,
unknown 404, keyless custom providers refusing keys, a custom provider on bedrock following
its base's rules); key create defaults (UUID v4 id, name and weight as sent, enabled, models ["*"], no
blacklist, use_for_batch_api false, no status), every create error (value missing, empty, null,
not a string, redacted-looking, an unset reference; '*' with others or a model twice; negative
weight; unknown fields; bad id;
duplicate name across providers and duplicate id, 409 naming the field, one winner of eight
concurrent creates of a name, long multi-byte names unique as a whole; bad JSON 400, not JSON
415, too large 413; unknown provider 404); each provider's config rules (azure endpoint and
client credentials instead of a value, bedrock region or arn, vertex project_id and region,
vllm/ollama/sgl url); redaction (under 32 characters 8 '*', else first 4 + 24 '*' + last 4,
counted in characters, the answer valid UTF-8) in every read, EnvVar read forms and environment
references ("env.NAME" and the object form, also inside a config; an object-form env_var never
resolves another variable), resolved only by select; PUT (whole replacement, a redacted value
keeps the secret in every field, a redacted-looking value with no matching secret is 400 naming
the field, body id, 404, 409 on rename); config_hash (the same content gives the same hash,
also across ids and providers, and defaults omitted or sent, weight 2 or 2.0; every hashed
field changes it; model order does not; an input hash is ignored); lists (per provider,
/api/keys, key counts); DELETE; select (weights 1:3 over 400 calls, weight 0, disabled,
blacklisted and excluded keys never picked, 404 naming model when none qualifies, 400, every
field's secret resolved); callers (management by proxy admins only, 403 for internal users,
viewers, plain keys and select-only keys, 401 without or with an unknown credential; select by
master, proxy admins and keys with permissions.select_provider_keys); the audit trail (created,
updated, deleted on Bifrost_ProviderKey with redacted values, no entry for a selection;
Bifrost_Provider for custom providers).

Every answer is checked against the spec, none may be a 5xx, every error is in Bifrost's
envelope (is_bifrost_error false, status_code, error.message, error.param,
extra_fields.provider = the path's provider), and no secret this test used may appear in any
answer but select's, in the audit log, the server log or any file of the data directory
(while serving and after shutdown)."""
import base64
import concurrent.futures
import itertools
import json
import os
import re
import sys
import threading
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import contract  # noqa: E402
from kwserver import Server  # noqa: E402

SPEC = contract.load_spec()
OPS = contract.operations(SPEC)
REQ_FIELDS = set(SPEC["components"]["schemas"]["ProviderKeyRequest"]["properties"])
MASTER = object()          # "who" for the master key
# Bifrost's StandardProviders (core/schemas/bifrost.go) and SupportedBaseProviders
BUILTINS = ["anthropic", "azure", "bedrock", "cerebras", "cohere", "elevenlabs", "gemini", "groq",
            "huggingface", "mistral", "nebius", "ollama", "openai", "openrouter", "parasail",
            "perplexity", "replicate", "runway", "sgl", "vertex", "vllm", "xai"]
BASES = ["anthropic", "bedrock", "cohere", "gemini", "openai", "huggingface", "replicate"]
ENV_NAME = "KW_TEST_OPENAI_KEY"
ENV_SECRET = "sk-from-the-environment-123456"
URL_ENV_NAME = "KW_TEST_VLLM_URL"
ENV_URL = "http://vllm-from-the-environment-7f3a9c.internal:8000/v1"
SECRETS = {ENV_SECRET, ENV_URL}   # every secret this test used, and the environment's values
SETUP_FAILURES = []        # setup requests that did not do what the tests below rely on
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
PROVIDER_PATH = re.compile(r"^/api/providers/([^/?]+)")
_serial = itertools.count(1)
_lock = threading.Lock()


# --- helpers ---------------------------------------------------------------------------

def uniq(prefix):
    return "%s-%d" % (prefix, next(_serial))


def secret(label):
    """A long, distinctive secret, remembered so every scan looks for it."""
    s = "sk-%s-%s" % (label, os.urandom(14).hex())
    SECRETS.add(s)
    return s


def distinctive(fmt, label):
    """A distinctive non-sk secret (endpoint, region, credentials...), remembered."""
    s = fmt % (label + os.urandom(10).hex())
    SECRETS.add(s)
    return s


def redact(s):
    # Bifrost's form (first 4, 24 '*', last 4) only from 32 characters on, where those 8 are a
    # quarter at most; anything shorter is 8 stars, which say nothing of its length either
    return "" if not s else "********" if len(s) < 32 else s[:4] + "*" * 24 + s[-4:]


def ev(s):
    """The read form of a plain EnvVar."""
    return {"value": redact(s), "env_var": "", "from_env": False}


ENV_VALUES = {}             # the variables the server is given: a reference reads its value


def ref_form(name):
    """The read form of an environment reference: its resolved value redacted, as Bifrost's
    EnvVar.Redacted shows it (empty when the variable is not set)."""
    return {"value": redact(ENV_VALUES.get(name, "")), "env_var": "env." + name,
            "from_env": True}


def plain(v):
    """A resolved value as select answers it: a string, or an EnvVar object's value."""
    if isinstance(v, dict):
        return v.get("value")
    return v


def J(r):
    return r.json if isinstance(r.json, dict) else {}


def L(r):
    """A list answer's keys: /api/keys' array, or {keys, total} of a provider's keys."""
    if isinstance(r.json, dict) and isinstance(r.json.get("keys"), list):
        return r.json["keys"]
    return r.json if isinstance(r.json, list) else []


def q(s):
    return urllib.parse.quote(str(s), safe="")


def kid(a):
    """A key answer's id, or one that exists nowhere when the answer has none."""
    return a.get("id") if isinstance(a, dict) and isinstance(a.get("id"), str) and a.get("id") \
        else "missing-%d" % next(_serial)


def op_of(method, path):
    path = path.split("?", 1)[0]
    best = None
    for op_id, (m, template, _) in OPS.items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if m == method and re.match(pattern, path):
            # a literal segment (keys/select) beats a parameter ({key_id})
            if best is None or template.count("{") < best[1]:
                best = (op_id, template.count("{"))
    return best[0] if best else None


class Api:
    """One server; every request of the test goes through call()."""

    def __init__(self, srv):
        self.srv = srv
        self.answers = []   # (op, method, path, status, problems, json, text)

    def call(self, method, path, body=None, who=MASTER, headers=None, raw=None):
        hdrs = {}
        cred = self.srv.master_key if who is MASTER else who
        if cred:
            hdrs["Authorization"] = "Bearer " + cred
        hdrs.update(headers or {})
        r = self.srv.request(method, path, body=body, headers=hdrs, raw=raw)
        r.path = path
        op = op_of(method, path)
        problems = contract.check_response(SPEC, OPS[op], r) if op else ["no such operation"]
        with _lock:
            self.answers.append((op, method, path, r.status, problems, r.json,
                                 r.body.decode("utf-8", "replace")))
        return r

    def get(self, path, who=MASTER, **kw):
        return self.call("GET", path, who=who, **kw)

    def post(self, path, body=None, who=MASTER, **kw):
        return self.call("POST", path, body, who=who, **kw)

    def put(self, path, body=None, who=MASTER, **kw):
        return self.call("PUT", path, body, who=who, **kw)

    def delete(self, path, who=MASTER, **kw):
        return self.call("DELETE", path, who=who, **kw)

    # the Bifrost routes
    def create(self, provider, body, who=MASTER):
        return self.post("/api/providers/%s/keys" % q(provider), body, who=who)

    def key(self, provider, key_id, who=MASTER):
        return self.get("/api/providers/%s/keys/%s" % (q(provider), q(key_id)), who=who)

    def update(self, provider, key_id, body, who=MASTER):
        return self.put("/api/providers/%s/keys/%s" % (q(provider), q(key_id)), body, who=who)

    def remove(self, provider, key_id, who=MASTER):
        return self.delete("/api/providers/%s/keys/%s" % (q(provider), q(key_id)), who=who)

    def select(self, provider, model, who=MASTER):
        body = {"model": model} if model is not None else {}
        return self.post("/api/providers/%s/keys/select" % q(provider), body, who=who)

    def keys(self, provider, who=MASTER):
        return self.get("/api/providers/%s/keys" % q(provider), who=who)


def status_is(r, status, name):
    return tap.ok(r.status == status, name + ": %d" % status,
                  "got %d: %s" % (r.status, r.body[:600]))


def bif_error(r, status, name, param=None):
    """Asserts a Bifrost error envelope with this status, param (when given) and, on a route
    with a provider in its path, extra_fields.provider naming it."""
    tap.ok(r.status == status, name + ": %d" % status, "got %d: %s" % (r.status, r.body[:600]))
    a = J(r)
    e = a.get("error")
    tap.ok(a.get("is_bifrost_error") is False and a.get("status_code") == status and
           isinstance(e, dict) and isinstance(e.get("message"), str) and e.get("message"),
           name + ": Bifrost envelope (is_bifrost_error false, status_code %d, error.message)"
           % status, r.body[:600])
    if param is not None:
        tap.eq((e or {}).get("param") if isinstance(e, dict) else None, param,
               name + ": error.param names " + param)
    m = PROVIDER_PATH.match(getattr(r, "path", ""))
    if m:
        want = urllib.parse.unquote(m.group(1))
        tap.eq((a.get("extra_fields") or {}).get("provider"), want,
               name + ": extra_fields.provider is " + want)
    return e if isinstance(e, dict) else {}


def created(api, provider, body, name):
    """Asserts a 200 create; returns the answer."""
    r = api.create(provider, body)
    tap.ok(r.status == 200 and isinstance(r.json, dict) and r.json.get("id"),
           name + ": 200 with the key", "got %d: %s" % (r.status, r.body[:600]))
    return J(r)


def mk(api, provider, body):
    """A key the tests rely on (not an assertion): its answer, or a stand-in."""
    r = api.create(provider, body)
    if r.status != 200 or not J(r).get("id"):
        SETUP_FAILURES.append("POST /api/providers/%s/keys %s -> %r" % (
            provider, json.dumps(body)[:300], r))
        return {"id": "setup-failed-%d" % next(_serial), "name": body.get("name")}
    return J(r)


def gen(api, **fields):
    """A LiteLLM virtual key: its plaintext."""
    r = api.post("/key/generate", fields)
    k = J(r).get("key")
    if r.status != 200 or not str(k or "").startswith("sk-"):
        SETUP_FAILURES.append("POST /key/generate %s -> %r" % (json.dumps(fields), r))
        return "sk-setup-failed-%d" % next(_serial)
    return k


def user_key(api, role):
    uid = uniq("prov-user")
    r = api.post("/user/new", {"user_id": uid, "user_role": role})
    k = J(r).get("key")
    if r.status != 200 or not str(k or "").startswith("sk-"):
        SETUP_FAILURES.append("POST /user/new %s %s -> %r" % (uid, role, r))
        return "sk-setup-failed-%d" % next(_serial)
    return k


def roundtrip(read):
    """A read answer as a PUT body: the request's fields only (drops "provider")."""
    return {k: v for k, v in read.items() if k in REQ_FIELDS}


def audit_entries(api, object_id, **filters):
    query = "&".join(["page_size=100", "object_id=" + q(object_id)] +
                     ["%s=%s" % (k, q(v)) for k, v in filters.items()])
    r = api.get("/audit?" + query)
    return J(r).get("audit_logs") or [], J(r).get("total")


def whole_audit_log(api):
    """Every page of GET /audit as text (a page that is not JSON is still read), and the pages
    that were not valid JSON."""
    pages, bad, page, last = [], [], 1, 1
    while page <= min(last, 100):
        r = api.get("/audit?page_size=100&page=%d" % page)
        pages.append(r.body.decode("utf-8", "replace"))
        if r.status != 200 or not isinstance(r.json, dict):
            bad.append("page %d: %d %s" % (page, r.status, r.body[:120]))
        last = max(last, J(r).get("total_pages") or 0)
        page += 1
    return "".join(pages), bad


def needles():
    """Every secret, and forms of it a careless store might hold: its middle, hex, base64."""
    out = []
    for s in sorted(SECRETS):
        b = s.encode()
        out += [(s, b), (s + " (middle)", b[4:-4]), (s + " (hex)", b.hex().encode()),
                (s + " (base64)", base64.b64encode(b).rstrip(b"="))]
    return out


def found_in(text_bytes):
    return sorted(set(label for label, b in needles() if b and b in text_bytes))


def select_many(api, provider, model, n, threads=8):
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda _: api.select(provider, model), range(n)))


# --- providers --------------------------------------------------------------------------

def builtin_providers(api):
    """On a fresh server (Bifrost's listProviders, getProvider): no provider is configured, so
    none is listed and each standard one is 404 until it is."""
    r = api.get("/api/providers")
    tap.ok(r.status == 200 and J(r).get("providers") == [] and J(r).get("total") == 0,
           "GET /api/providers: none configured on a fresh server", repr(r)[:600])
    for name in BUILTINS:
        bif_error(api.get("/api/providers/" + name), 404,
                  "GET /api/providers/%s: a standard provider never configured" % name,
                  "provider")
    for method, path, body in (
            ("GET", "/api/providers/no-such-provider", None),
            ("DELETE", "/api/providers/no-such-provider", None),
            ("GET", "/api/providers/no-such-provider/keys", None),
            ("POST", "/api/providers/no-such-provider/keys", {"value": secret("unknown-prov")}),
            ("GET", "/api/providers/no-such-provider/keys/some-id", None),
            ("PUT", "/api/providers/no-such-provider/keys/some-id",
             {"value": secret("unknown-prov")}),
            ("DELETE", "/api/providers/no-such-provider/keys/some-id", None),
            ("POST", "/api/providers/no-such-provider/keys/select", {"model": "gpt-4"})):
        bif_error(api.call(method, path, body), 404, "%s %s (unknown provider)" % (method, path))
    tap.eq(J(api.get("/api/providers")).get("total"), 0, "the refused requests configured nothing")
    r = api.get("/api/providers/OpenAI")
    tap.eq(r.status, 404, "provider names are exact: OpenAI is not openai")


def custom_providers(api):
    cfg = {"base_provider_type": "openai", "is_key_less": False,
           "base_url": "https://llm.example.com/v1"}
    r = api.post("/api/providers", {"provider": "acme-llm", "custom_provider_config": cfg})
    a = J(r)
    c = a.get("custom_provider_config") or {}
    tap.ok(r.status == 200 and a.get("name") == "acme-llm" and a.get("custom") is True and
           a.get("keys") == 0 and c.get("base_provider_type") == "openai" and
           (a.get("network_config") or {}).get("base_url") == "https://llm.example.com/v1" and
           not c.get("is_key_less"),
           "POST /api/providers: a custom provider on openai's API, the base_url sent in "
           "custom_provider_config (older versions' place) read as network_config.base_url",
           repr(r))
    r = api.get("/api/providers/acme-llm")
    tap.ok(r.status == 200 and J(r).get("custom") is True and
           (J(r).get("network_config") or {}).get("base_url") == cfg["base_url"],
           "GET /api/providers/acme-llm: the custom provider", repr(r))
    r = api.get("/api/providers")
    listed = [p for p in J(r).get("providers") or [] if isinstance(p, dict) and
              p.get("name") == "acme-llm"]
    tap.ok(len(listed) == 1 and listed[0].get("custom") is True and J(r).get("total") == 1,
           "GET /api/providers lists it once, custom, total 1", repr(r)[:600])

    bif_error(api.post("/api/providers", {"provider": "acme-llm", "custom_provider_config": cfg}),
              409, "a custom provider's name again")
    for b in ("openai", "azure", "sgl"):
        # Bifrost's addProvider: "Custom provider cannot be same as a standard provider"
        bif_error(api.post("/api/providers", {"provider": b, "custom_provider_config": cfg}),
                  400, "a custom provider named like the standard " + b, "custom_provider_config")
    bif_error(api.post("/api/providers", {"provider": "no-config-llm"}), 400,
              "a custom provider without custom_provider_config", "custom_provider_config")
    r = api.get("/api/providers/no-config-llm")
    tap.eq(r.status, 404, "the refused provider was not made")
    bif_error(api.post("/api/providers", {"provider": "bad-base-llm", "custom_provider_config":
                                          {"base_provider_type": "nosuch"}}), 400,
              "base_provider_type outside the standard providers",
              "custom_provider_config.base_provider_type")
    for b in ("azure", "vertex", "vllm", "groq"):
        bif_error(api.post("/api/providers", {"provider": uniq("base-" + b),
                                              "custom_provider_config": {"base_provider_type": b}}),
                  400, "IsSupportedBaseProvider: %s is no base for a custom provider" % b,
                  "custom_provider_config.base_provider_type")
    bif_error(api.post("/api/providers", {"provider": "Bad Name!", "custom_provider_config": cfg}),
              400, "a provider name outside the pattern", "provider")
    bif_error(api.post("/api/providers", {"custom_provider_config": cfg}), 400,
              "no provider name", "provider")
    # Bifrost's handlers decode into Go structs, which drop fields they do not know
    r = api.post("/api/providers", {"provider": "extra-llm", "custom_provider_config": cfg,
                                    "surprise": 1})
    tap.ok(r.status == 200 and "surprise" not in r.body.decode(),
           "an unknown field is ignored, as Bifrost's Go handlers ignore it", repr(r))

    # keys on a custom provider
    s = secret("acme")
    k = created(api, "acme-llm", {"name": "acme-key", "id": "acme-key-id", "value": s},
                "a key on the custom provider")
    tap.eq(k.get("provider"), "acme-llm", "its provider is the custom one")
    tap.eq(J(api.get("/api/providers/acme-llm")).get("keys"), 1, "the custom provider has 1 key")
    r = api.select("acme-llm", "gpt-4")
    tap.ok(r.status == 200 and J(r).get("value") == s and J(r).get("provider") == "acme-llm",
           "select on the custom provider returns its key's secret", repr(r)[:300])
    bif_error(api.create("acme-llm", {"name": uniq("acme-novalue")}), 400,
              "a custom provider on openai: value required", "value")

    # keyless
    r = api.post("/api/providers", {"provider": "free-llm", "custom_provider_config": {
        "base_provider_type": "openai", "is_key_less": True, "base_url": "http://free.local"}})
    tap.ok(r.status == 200 and (J(r).get("custom_provider_config") or {}).get("is_key_less")
           is True, "a keyless custom provider", repr(r))
    bif_error(api.create("free-llm", {"name": uniq("free"), "value": secret("keyless")}), 400,
              "a key on a keyless provider")
    bif_error(api.create("free-llm", {"name": uniq("free")}), 400,
              "a key without value on a keyless provider")
    tap.eq(J(api.get("/api/providers/free-llm")).get("keys"), 0, "the keyless provider has no key")

    # custom providers follow their base's rules
    r = api.post("/api/providers", {"provider": "lab-bedrock", "custom_provider_config":
                                    {"base_provider_type": "bedrock"}})
    status_is(r, 200, "a custom provider on bedrock")
    region = distinctive("us-%s-1", "lab")
    k = created(api, "lab-bedrock", {"name": "lab-bedrock-key", "bedrock_key_config": {
        "region": region, "access_key": distinctive("AKIA%s", "LAB"),
        "secret_key": secret("lab-bedrock")}}, "custom on bedrock: no value, a region")
    tap.eq((k.get("bedrock_key_config") or {}).get("region"), ev(region),
           "custom on bedrock: the region reads redacted")
    bif_error(api.create("lab-bedrock", {"name": uniq("lab"), "value": secret("lab")}), 400,
              "custom on bedrock: no region", "bedrock_key_config.region")

    # delete: the provider as it was, its keys with it
    r = api.delete("/api/providers/acme-llm")
    a = J(r)
    tap.ok(r.status == 200 and a.get("name") == "acme-llm" and a.get("custom") is True and
           a.get("keys") == 1, "DELETE /api/providers/acme-llm: the provider as it was (1 key)",
           repr(r))
    bif_error(api.get("/api/providers/acme-llm"), 404, "the deleted provider")
    bif_error(api.delete("/api/providers/acme-llm"), 404, "the deleted provider again")
    bif_error(api.key("acme-llm", "acme-key-id"), 404, "a key of the deleted provider")
    all_ids = [k.get("id") for k in L(api.get("/api/keys")) if isinstance(k, dict)]
    tap.ok("acme-key-id" not in all_ids, "GET /api/keys: the deleted provider's key is gone")
    again = created(api, "openai", {"name": "acme-key", "id": "acme-key-id",
                                    "value": secret("acme-again")},
                    "the deleted provider's key name and id are free again")
    r = api.post("/api/providers", {"provider": "acme-llm", "custom_provider_config": cfg})
    tap.ok(r.status == 200 and J(r).get("keys") == 0,
           "a custom provider made again under the old name has none of the old keys", repr(r))
    api.delete("/api/providers/acme-llm")
    api.remove("openai", kid(again))
    for b in ("openai", "vllm"):
        bif_error(api.delete("/api/providers/" + b), 404,
                  "DELETE the standard %s, never configured" % b, "provider")

    entries, _ = audit_entries(api, "acme-llm", table_name="Bifrost_Provider")
    actions = sorted(e.get("action") for e in entries)
    tap.ok(actions.count("created") == 2 and actions.count("deleted") == 2,
           "audit: the custom provider's creations and deletions on Bifrost_Provider "
           "(object_id the provider's name)", actions)


# --- keys: create -----------------------------------------------------------------------

def create_keys(api):
    s = secret("openai-main")
    r = api.create("openai", {"name": "openai-main", "value": s})
    a = J(r)
    tap.eq(r.status, 200, "POST /api/providers/openai/keys: 200")
    tap.ok(isinstance(a.get("id"), str) and UUID4.match(a.get("id")),
           "create: an id is generated, a UUID v4", a.get("id"))
    want = {"name": "openai-main", "provider": "openai", "value": ev(s), "models": ["*"],
            "blacklisted_models": [], "weight": 0, "enabled": True, "use_for_batch_api": False}
    tap.eq({f: a.get(f) for f in want}, want, "create (Bifrost's createProviderKey): defaults "
           "(enabled, weight 0 as Go leaves it, models [\"*\"], no blacklist, "
           "use_for_batch_api false) and the value redacted")
    tap.ok("status" not in a and not [c for c in ("azure_key_config", "vertex_key_config",
                                                   "description") if c in a],
           "create: no status until Bifrost would set one, no nil config (omitempty)", a)
    tap.ok(HEX64.match(str(a.get("config_hash"))), "create: config_hash is 64 hex",
           a.get("config_hash"))
    r = api.key("openai", kid(a))
    tap.eq(J(r), a, "GET after POST: the same redacted key")
    tap.ok(s not in r.body.decode(errors="replace") and s[4:-4] not in
           r.body.decode(errors="replace"), "GET: no secret in the answer")

    k = created(api, "openai", {"value": secret("noname")}, "create without a name")
    tap.ok(k.get("name") == "" and k.get("id"), "the name is what was sent: none, \"\"", k)
    bif_error(api.create("anthropic", {"value": secret("noname2")}), 409,
              "a second key without a name: names are unique across providers", "name")
    k = created(api, "openai", {"id": "openai-given.id:1", "name": uniq("given"),
                                "value": secret("given")}, "create with an id")
    tap.eq(k.get("id"), "openai-given.id:1", "the given id is kept")
    tap.eq(J(api.key("openai", "openai-given.id:1")).get("id"), "openai-given.id:1",
           "GET by a given id with '.' and ':'")
    s = secret("objform")
    k = created(api, "openai", {"name": uniq("objform"),
                                "value": {"value": s, "env_var": "", "from_env": False}},
                "create with the EnvVar object form")
    tap.eq(k.get("value"), ev(s), "the object form reads redacted")

    for v, name in (("abcd1234", "8 characters: 8 '*'"), ("xyz12", "5 characters: 8 '*'"),
                    ("abcd12345", "9 characters: 8 '*'"), ("x" * 31, "31 characters: 8 '*'"),
                    ("y" * 32, "32 characters: first 4, 24 '*', last 4"),
                    ("a", "1 character")):
        k = created(api, "openai", {"name": uniq("short"), "value": v}, "a value of " + name)
        tap.eq((k.get("value") or {}).get("value"), redact(v), "redaction of " + name)

    made = []
    for v, name in (("пароль12", "8 two-byte characters: all '*'"),
                    ("密钥密钥密钥密钥密钥", "10 three-byte characters: 8 '*'"),
                    ("密钥" * 16, "32 three-byte characters: first 4, 24 '*', last 4"),
                    ("ключ-секрет-значение", "20 two-byte characters")):
        n = uniq("utf8")
        r = api.create("openai", {"name": n, "value": v, "models": ["utf8-model"]})
        tap.ok(r.status == 200 and isinstance(r.json, dict),
               "a value of %s: 200, valid UTF-8 JSON" % name, repr(r)[:300])
        tap.eq((J(r).get("value") or {}).get("value"), redact(v),
               "redaction counts characters, not bytes: " + name)
        made.append(n)
    r = api.keys("openai")
    tap.ok(r.status == 200 and isinstance(r.json, dict) and isinstance(r.json.get("keys"), list),
           "with non-ASCII secrets stored, GET /api/providers/openai/keys is valid JSON",
           repr(r)[:200])
    # remove them by name (their ids may not be readable), so later lists are not affected
    ids = re.findall(rb'"id":"([^"]+)","provider":"openai","name":"(utf8-[0-9]+)"', r.body)
    for key_id, n in ids:
        if n.decode() in made:
            api.remove("openai", key_id.decode())

    # names up to 256 characters are unique as a whole, whatever their bytes
    long1, long2 = "\U0001F511" * 255 + "a", "\U0001F511" * 255 + "b"
    created(api, "openai", {"name": long1, "value": secret("long-name-1")},
            "a 256-character name of 4-byte characters")
    created(api, "openai", {"name": long2, "value": secret("long-name-2")},
            "another 256-character name, only its last character differs")
    bif_error(api.create("openai", {"name": long1, "value": secret("long-name-3")}), 409,
              "the first long name again", "name")

    # one name, eight concurrent creates on eight providers: exactly one wins
    racers = ["openai", "anthropic", "gemini", "cohere", "mistral", "groq", "openrouter",
              "replicate"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(racers)) as pool:
        answers = list(pool.map(lambda p: api.create(p, {
            "name": "raced-name", "value": secret("race"), "models": ["race-model"]}), racers))
    statuses = sorted(r.status for r in answers)
    tap.eq(statuses, [200] + [409] * (len(racers) - 1),
           "8 concurrent creates of one name on 8 providers: one 200, seven 409")
    for r in answers:
        if r.status == 200:
            api.remove(J(r).get("provider") or "openai", kid(J(r)))

    k = created(api, "openai", {"name": uniq("ignored"), "value": secret("ignored"),
                                "config_hash": "0" * 64, "status": "disabled",
                                "enabled": True}, "create with config_hash and status")
    tap.ok(k.get("config_hash") != "0" * 64 and "status" not in k,
           "an input config_hash and status are ignored", k)
    k = created(api, "openai", {"name": uniq("full"), "value": secret("full"),
                                "models": ["gpt-4", "gpt-4o"], "blacklisted_models": ["o1"],
                                "weight": 2.5, "enabled": False, "use_for_batch_api": True,
                                "description": "the batch key"}, "create with every field")
    tap.ok(sorted(k.get("models") or []) == ["gpt-4", "gpt-4o"] and
           k.get("blacklisted_models") == ["o1"] and k.get("weight") == 2.5 and
           k.get("enabled") is False and
           k.get("use_for_batch_api") is True and k.get("description") == "the batch key",
           "every field kept", k)
    k = created(api, "openai", {"name": uniq("w0"), "value": secret("w0"), "weight": 0},
                "weight 0 is allowed")
    tap.eq(k.get("weight"), 0, "weight 0 kept")

    before = len(L(api.keys("openai")))
    cases = [
        ({"name": uniq("e")}, "value", "no value"),
        ({"name": uniq("e"), "value": ""}, "value", "an empty value"),
        ({"name": uniq("e"), "value": None}, "value", "a null value"),
        ({"name": uniq("e"), "value": {"value": "", "env_var": "", "from_env": False}}, "value",
         "an empty object-form value"),
        ({"name": uniq("e"), "value": 12345}, "value", "a value that is a number"),
        ({"name": uniq("e"), "value": "sk-a" + "*" * 24 + "zzzz"}, "value",
         "a redacted-looking value with nothing stored"),
        ({"name": uniq("e"), "value": "********"}, "value", "an all-'*' value with nothing stored"),
        ({"name": uniq("e"), "value": secret("wild"), "models": ["*", "gpt-4"]}, "models[0]",
         "'*' with another model (WhiteList.Validate)"),
        ({"name": uniq("e"), "value": secret("dupm"), "models": ["gpt-4", "GPT-4"]}, "models[1]",
         "a model twice, case ignored (WhiteList.Validate)"),
        ({"name": uniq("e"), "value": secret("dupb"), "blacklisted_models": ["o1", "o1"]},
         "blacklisted_models[1]", "a blacklisted model twice"),
        ({"name": uniq("e"), "value": "env.KW_NOT_SET_ANYWHERE"}, "value",
         "a reference to an unset variable (Key value must not be empty)"),
        ({"name": uniq("e"), "value": secret("neg"), "weight": -1}, "weight", "weight -1"),
        ({"name": uniq("e"), "value": secret("badid"), "id": "bad id!"}, "id",
         "an id outside the pattern"),
        ({"name": "", "value": secret("emptyname")}, "name", "an empty name"),
        ({"name": uniq("e"), "value": secret("models"), "models": "gpt-4"}, "models",
         "models not a list"),
    ]
    for body, param, name in cases:
        bif_error(api.create("openai", body), 400, "create: " + name, param)
    bif_error(api.post("/api/providers/openai/keys", raw=b'{"value": "sk-', headers={
        "Content-Type": "application/json"}), 400, "create: a body that is not valid JSON")
    bif_error(api.post("/api/providers/openai/keys", raw=b'value=x', headers={
        "Content-Type": "text/plain"}), 415, "create: a body that is not application/json")
    big = json.dumps({"name": uniq("big"), "value": "x" * 20000,
                      "description": "y" * 70000}).encode()
    bif_error(api.post("/api/providers/openai/keys", raw=big, headers={
        "Content-Type": "application/json"}), 413, "create: a body over KEYWARDEN_MAX_BODY")
    tap.eq(len(L(api.keys("openai"))), before, "no refused create made a key")

    # unique names (across providers) and ids
    dup = mk(api, "openai", {"name": "dup-name", "id": "dup-id", "value": secret("dup")})
    for prov in ("openai", "anthropic"):
        bif_error(api.create(prov, {"name": "dup-name", "value": secret("dup2")}), 409,
                  "create on %s: a name another key has (on openai)" % prov, "name")
        bif_error(api.create(prov, {"name": uniq("dup"), "id": "dup-id",
                                    "value": secret("dup3")}), 409,
                  "create on %s: an id another key has (on openai)" % prov, "id")
    tap.eq(len(L(api.keys("anthropic"))), 0, "no duplicate was made on anthropic")
    return dup


# --- provider configs ---------------------------------------------------------------------

def configs(api):
    """Each provider's config rules; returns {provider: (model, key answer, secrets)} for the
    select checks."""
    out = {}
    # azure
    ep = distinctive("https://kw-%s.openai.azure.com/", "azure")
    azs = secret("azure-value")
    k = created(api, "azure", {"name": "azure-main", "value": azs, "models": ["gpt-4"],
                               "azure_key_config": {"endpoint": ep, "api_version": "2024-10-21",
                                                    "deployments": {"gpt-4": "gpt4-prod"}}},
                "azure: value and endpoint")
    c = k.get("azure_key_config") or {}
    tap.ok(c.get("endpoint") == ev(ep) and c.get("api_version") == {
        "value": "2024-10-21", "env_var": "", "from_env": False} and
           c.get("deployments") == {"gpt-4": "gpt4-prod"} and k.get("value") == ev(azs),
           "azure: endpoint redacted, api_version in clear (a setting, not a secret), "
           "deployments as sent", k)
    out["azure-main"] = ("azure", "gpt-4", k, {"value": azs, "endpoint": ep,
                                               "api_version": "2024-10-21"})
    bif_error(api.create("azure", {"name": uniq("az"), "value": secret("az"),
                                   "azure_key_config": {"api_version": "2024-10-21"}}), 400,
              "azure: no endpoint", "azure_key_config.endpoint")
    bif_error(api.create("azure", {"name": uniq("az"), "value": secret("az")}), 400,
              "azure: no azure_key_config", "azure_key_config.endpoint")
    bif_error(api.create("azure", {"name": uniq("az"), "value": secret("az"),
                                   "azure_key_config": {"endpoint": ""}}), 400,
              "azure: an empty endpoint", "azure_key_config.endpoint")
    creds = {"endpoint": distinctive("https://kw-%s.openai.azure.com/", "azcreds"),
             "client_id": distinctive("kw-client-%s", "az"),
             "client_secret": secret("azure-client-secret"),
             "tenant_id": distinctive("kw-tenant-%s", "az"),
             "scopes": ["https://cognitiveservices.azure.com/.default"]}
    k = created(api, "azure", {"name": "azure-creds", "models": ["gpt-4o"],
                               "azure_key_config": creds},
                "azure: no value, client_id + client_secret + tenant_id")
    c = k.get("azure_key_config") or {}
    tap.ok(all(c.get(f) == ev(creds[f]) for f in ("endpoint", "client_id", "client_secret",
                                                  "tenant_id")),
           "azure: every credential reads redacted", c)
    out["azure-creds"] = ("azure", "gpt-4o", k, {f: creds[f] for f in (
        "endpoint", "client_id", "client_secret", "tenant_id")})
    partial = dict(creds)
    del partial["tenant_id"]
    # CanProviderKeyValueBeEmpty(azure): an endpoint is enough
    created(api, "azure", {"name": uniq("az"), "azure_key_config": partial,
                           "models": ["az-partial"]},
            "azure: no value, no tenant_id, an endpoint")
    created(api, "azure", {"name": uniq("az"), "value": "", "azure_key_config": {"endpoint": ep},
                           "models": ["az-partial"]},
            "azure: an empty value, an endpoint")

    # bedrock
    bc = {"access_key": distinctive("AKIA%s", "KW"), "secret_key": secret("bedrock-secret"),
          "session_token": secret("bedrock-session"), "region": "us-east-1",
          "deployments": {"claude-3": "anthropic.claude-3"},
          "batch_s3_config": {"buckets": [{"bucket_name": "kw-batch", "prefix": "in/",
                                           "is_default": True}]}}
    k = created(api, "bedrock", {"name": "bedrock-main", "models": ["claude-3"],
                                 "bedrock_key_config": bc},
                "bedrock: no value, access/secret keys and region")
    c = k.get("bedrock_key_config") or {}
    tap.ok(all(c.get(f) == ev(bc[f]) for f in ("access_key", "secret_key", "session_token",
                                               "region")) and
           c.get("deployments") == bc["deployments"],
           "bedrock: keys, token and region read redacted (us-east-1 is 9 characters)", c)
    out["bedrock-main"] = ("bedrock", "claude-3", k, {f: bc[f] for f in (
        "access_key", "secret_key", "session_token", "region")})
    arn = distinctive("arn:aws:bedrock:us-west-2:123456789012:inference-profile/%s", "kw")
    k = created(api, "bedrock", {"name": "bedrock-arn", "value": secret("bedrock-api-key"),
                                 "models": ["claude-arn"], "bedrock_key_config": {"arn": arn}},
                "bedrock: an arn without a region")
    tap.eq((k.get("bedrock_key_config") or {}).get("arn"), ev(arn), "bedrock: the arn redacted")
    out["bedrock-arn"] = ("bedrock", "claude-arn", k, {"arn": arn})
    e = bif_error(api.create("bedrock", {"name": uniq("br"), "bedrock_key_config": {
        "access_key": "AKIAX", "secret_key": secret("br")}}), 400,
        "bedrock: neither region nor arn")
    tap.ok(e.get("param") in ("bedrock_key_config.region", "bedrock_key_config.arn"),
           "bedrock: error.param names bedrock_key_config.region (or .arn)", e)
    bif_error(api.create("bedrock", {"name": uniq("br"), "value": secret("br")}), 400,
              "bedrock: no bedrock_key_config at all")

    # vertex
    vc = {"project_id": distinctive("kw-project-%s", "vx"), "project_number": "123456789012",
          "region": "us-central1",
          "auth_credentials": distinctive(
              '{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----%s"}', "pk")}
    k = created(api, "vertex", {"name": "vertex-main", "vertex_key_config": vc},
                "vertex: no value, project_id, region and credentials")
    c = k.get("vertex_key_config") or {}
    tap.ok(all(c.get(f) == ev(vc[f]) for f in vc), "vertex: every field reads redacted", c)
    out["vertex-main"] = ("vertex", "gemini-pro", k, dict(vc))
    for missing in ("project_id", "region"):
        body = {f: v for f, v in vc.items() if f != missing}
        created(api, "vertex", {"name": uniq("vx"), "vertex_key_config": body,
                                "models": ["vx-partial"]},
                "vertex: no %s (optional in v1.5)" % missing)

    # vllm, ollama, sgl
    for p in ("vllm", "ollama", "sgl"):
        url = distinctive("http://" + p + "-%s.internal:8000", "u")
        cfg = {"url": url}
        if p == "vllm":
            cfg["model_name"] = "meta-llama/Llama-3-8B"
        k = created(api, p, {"name": p + "-main", "models": ["local-model"],
                             "%s_key_config" % p: cfg}, "%s: no value, a url" % p)
        c = k.get("%s_key_config" % p) or {}
        tap.eq(c.get("url"), ev(url), "%s: the url reads redacted" % p)
        if p == "vllm":
            tap.eq(c.get("model_name"), "meta-llama/Llama-3-8B", "vllm: model_name as sent")
        out[p + "-main"] = (p, "local-model", k, {"url": url})
        for body, name in (({"value": secret(p)}, "no %s_key_config" % p),
                           ({"%s_key_config" % p: {"url": ""}}, "an empty url"),
                           ({"%s_key_config" % p: {"model_name": "m"}}, "a config without url")):
            body["name"] = uniq(p)
            bif_error(api.create(p, body), 400, "%s: %s" % (p, name), "%s_key_config.url" % p)

    # providers that need a value
    for p in ("anthropic", "gemini", "mistral"):
        bif_error(api.create(p, {"name": uniq(p)}), 400, "%s: no value" % p, "value")
    bif_error(api.create("openai", {"name": uniq("oa"), "vllm_key_config": {
        "url": "http://x.internal"}}), 400, "openai: a url is no value", "value")
    return out


# --- environment references -----------------------------------------------------------------

def env_refs(api):
    k = created(api, "groq", {"name": "groq-env", "value": "env." + ENV_NAME},
                "a value \"env.%s\"" % ENV_NAME)
    tap.eq(k.get("value"), ref_form(ENV_NAME), "the reference reads {\"value\": its resolved "
           "value redacted, \"env_var\": \"env.%s\", \"from_env\": true}" % ENV_NAME)
    tap.eq(J(api.key("groq", kid(k))).get("value"), ref_form(ENV_NAME), "GET: the reference")
    r = api.select("groq", "gpt-4")
    tap.ok(r.status == 200 and J(r).get("value") == ENV_SECRET and J(r).get("id") == kid(k),
           "select resolves the reference from keywarden's environment", repr(r)[:300])
    k2 = created(api, "mistral", {"name": "mistral-env", "value": {
        "value": "", "env_var": "env." + ENV_NAME, "from_env": True}},
        "the object form of a reference")
    tap.eq(k2.get("value"), ref_form(ENV_NAME), "the object form reads as the reference")
    r = api.select("mistral", "mistral-large")
    tap.ok(r.status == 200 and J(r).get("value") == ENV_SECRET,
           "select resolves the object-form reference", repr(r)[:300])
    # keywarden's own settings are never a gateway's secret
    bif_error(api.create("openai", {"name": uniq("steal"), "value": "env.KEYWARDEN_MASTER_KEY"}),
              400, "a reference to KEYWARDEN_MASTER_KEY", "value")
    bif_error(api.create("openai", {"name": uniq("empty-ref"), "value": "env."}), 400,
              "a reference without a name", "value")
    # a reference to a variable this environment lacks is never selected
    r = api.create("cohere", {"name": "cohere-unset", "value": "env.KW_NOT_SET_ANYWHERE"})
    bif_error(r, 400, "a reference to an unset variable: Key value must not be empty", "value")
    msg = str((J(r).get("error") or {}).get("message"))
    tap.ok(msg.startswith("Key value must not be empty: env.KW_NOT_SET_ANYWHERE names a "
                          "variable that is unset in keywarden's environment"),
           "the 400 says the reference names an unset variable, by its name", msg)
    created(api, "vllm", {"name": "vllm-unset", "models": ["unset-model"], "value":
                          "env.KW_NOT_SET_ANYWHERE", "vllm_key_config": {"url": "http://x.in"}},
            "where the value may be empty (vllm), a reference to an unset variable is stored")
    r = api.select("vllm", "unset-model")
    bif_error(r, 404, "select skips a key whose variable is unset: none qualifies", "model")
    msg = str((J(r).get("error") or {}).get("message"))
    tap.ok("references env.KW_NOT_SET_ANYWHERE, which keywarden's environment lacks" in msg,
           "select's 404 names the unset variable that kept the key out", msg)

    r = api.update("groq", kid(k), roundtrip(J(api.key("groq", kid(k)))))
    tap.ok(r.status == 200 and J(r).get("value") == ref_form(ENV_NAME) and
           J(r).get("config_hash") == k.get("config_hash"),
           "PUT the read form back: still the reference, same config_hash", repr(r)[:400])
    r = api.select("groq", "gpt-4")
    tap.eq(J(r).get("value"), ENV_SECRET, "select after the PUT: still resolved")

    v = created(api, "vllm", {"name": "vllm-env", "models": ["env-model"],
                              "vllm_key_config": {"url": "env." + URL_ENV_NAME}},
                "a vllm url \"env.%s\"" % URL_ENV_NAME)
    tap.eq((v.get("vllm_key_config") or {}).get("url"), ref_form(URL_ENV_NAME),
           "the config's reference reads as a reference")
    r = api.select("vllm", "env-model")
    tap.ok(r.status == 200 and plain((J(r).get("vllm_key_config") or {}).get("url")) == ENV_URL,
           "select resolves a reference inside a config", repr(r)[:400])

    # the object form names its variable in env_var ("env.NAME"); whatever keywarden makes of
    # an env_var without the prefix, it never resolves some other variable (on openrouter,
    # where no other key allows these models; removed afterwards)
    for env_var, model in ((ENV_NAME, "np-model"), ("xxxx" + ENV_NAME, "shift-model"),
                           ("AB", "ab-model")):
        r = api.create("openrouter", {"name": uniq("or-np"), "models": [model], "value": {
            "value": "", "env_var": env_var, "from_env": True}})
        if r.status == 400:
            bif_error(r, 400, "an object-form env_var %r without the env. prefix" % env_var,
                      "value")
            continue
        sel = api.select("openrouter", model)
        want = ENV_SECRET if env_var == ENV_NAME else None
        tap.ok(r.status == 200 and J(sel).get("id") == kid(J(r)) and
               J(sel).get("value") == want,
               "an object-form env_var %r without the env. prefix: refused (400) or resolved "
               "as the variable it names (select %r)" % (env_var, want),
               {"create": repr(r)[:300], "select": repr(sel)[:300]})
        api.remove("openrouter", kid(J(r)))

    plain_key = created(api, "groq", {"name": "groq-plain", "value": secret("groq-plain"),
                                      "models": ["other"]}, "a plain groq key")
    r = api.update("groq", kid(plain_key), {"name": "groq-plain", "value": "env." + ENV_NAME,
                                             "models": ["other"]})
    tap.ok(r.status == 200 and J(r).get("value") == ref_form(ENV_NAME) and
           J(r).get("config_hash") != plain_key.get("config_hash"),
           "PUT a reference over a plain value: the reference, a new config_hash", repr(r)[:400])
    tap.eq(J(api.select("groq", "other")).get("value"), ENV_SECRET,
           "select: the new reference resolved")


# --- PUT and redaction ------------------------------------------------------------------------

def put_rules(api, cfgs, dup):
    s = secret("put-main")
    k = mk(api, "anthropic", {"name": "put-main", "value": s, "models": ["claude-put"],
                              "weight": 2, "description": "before"})
    kid_ = kid(k)
    path_sel = lambda: J(api.select("anthropic", "claude-put")).get("value")  # noqa: E731
    read = J(api.key("anthropic", kid_))
    r = api.update("anthropic", kid_, roundtrip(read))
    tap.ok(r.status == 200 and J(r).get("value") == ev(s) and
           J(r).get("config_hash") == read.get("config_hash"),
           "PUT the read form back: 200, the same redacted value and config_hash", repr(r)[:400])
    tap.eq(path_sel(), s, "PUT with the redacted value (read form) keeps the secret (select)")
    body = {"name": "put-main", "value": redact(s), "models": ["claude-put"], "weight": 2}
    status_is(api.update("anthropic", kid_, body), 200, "PUT the redacted string")
    tap.eq(path_sel(), s, "PUT with the redacted string keeps the secret (select)")

    s2 = secret("put-new")
    while redact(s2) == redact(s):
        s2 = secret("put-new")
    r = api.update("anthropic", kid_, dict(body, value=s2))
    tap.ok(r.status == 200 and J(r).get("value") == ev(s2) and
           J(r).get("config_hash") != read.get("config_hash"),
           "PUT a new secret: redacted, a new config_hash", repr(r)[:400])
    tap.eq(path_sel(), s2, "select returns the new secret")
    # Bifrost's mergeUpdatedKey: any mask (EnvVar.IsRedacted) keeps the stored secret
    for mask, name in ((redact(s), "the old secret's redaction"),
                       ("sk-x" + "*" * 24 + "yyyy", "a redacted-looking value"),
                       ("*" * len(s2), "an all-'*' value"), ("<redacted>", "\"<redacted>\""),
                       ({"value": "abcd" + "*" * 24 + "wxyz", "env_var": "", "from_env": False},
                        "a redacted-looking object-form value")):
        r = api.update("anthropic", kid_, dict(body, value=mask))
        tap.ok(r.status == 200 and J(r).get("value") == ev(s2) and path_sel() == s2,
               "PUT %s: 200, the stored secret kept" % name, repr(r)[:300])

    # whole replacement
    r = api.update("anthropic", kid_, {"name": "put-main", "value": redact(s2)})
    a = J(r)
    tap.ok(r.status == 200 and a.get("models") == ["*"] and a.get("weight") == 0 and
           a.get("enabled") is True and a.get("description") in (None, ""),
           "PUT replaces the whole key: omitted fields take their defaults", repr(r)[:400])
    status_is(api.update("anthropic", kid_, dict(body, value=redact(s2))), 200,
              "PUT the models back")
    bif_error(api.update("anthropic", kid_, {"name": "put-main", "models": ["claude-put"]}), 400,
              "PUT without a value", "value")
    r = api.update("anthropic", kid_, dict(body, value=redact(s2), id="another-id"))
    tap.ok(r.status == 200 and J(r).get("id") == kid_,
           "PUT with a body id other than the path's: the path's wins", repr(r)[:300])
    bif_error(api.key("anthropic", "another-id"), 404, "... and no key took the body's id")
    r = api.update("anthropic", kid_, {"value": redact(s2), "models": ["claude-put"],
                                       "weight": 2})
    tap.ok(r.status == 200 and J(r).get("name") == "put-main",
           "PUT without a name keeps the key's name", repr(r)[:300])
    r = api.update("anthropic", kid_, dict(body, value=redact(s2), id=kid_))
    status_is(r, 200, "PUT with the path's id in the body")
    tap.eq(J(r).get("id"), kid_, "the id is unchanged")
    bif_error(api.update("anthropic", kid_, dict(body, value=redact(s2), name="dup-name")), 409,
              "PUT renaming to another key's name (on openai)", "name")
    r = api.update("anthropic", kid_, dict(body, value=redact(s2),
                                           blacklisted_models=["claude-put"]))
    tap.ok(r.status == 200, "PUT a model in both lists: accepted", repr(r)[:300])
    bif_error(api.select("anthropic", "claude-put"), 404,
              "... and the blacklist wins: the key serves it no more", "model")
    status_is(api.update("anthropic", kid_, dict(body, value=redact(s2))), 200,
              "PUT the blacklist away again")
    bif_error(api.update("anthropic", kid_, dict(body, value=redact(s2), weight=-2)), 400,
              "PUT weight -2", "weight")
    bif_error(api.update("anthropic", "no-such-key", dict(body, value=secret("nokey"))), 404,
              "PUT an unknown key")
    bif_error(api.update("openai", kid_, dict(body, value=redact(s2))), 404,
              "PUT an anthropic key under openai")
    bif_error(api.key("openai", kid_), 404, "GET an anthropic key under openai")
    bif_error(api.remove("openai", kid_), 404, "DELETE an anthropic key under openai")
    status_is(api.key("anthropic", kid_), 200, "the key is untouched")
    r = api.update("anthropic", kid_, dict(body, value=redact(s2), name="put-renamed"))
    tap.ok(r.status == 200 and J(r).get("name") == "put-renamed", "PUT renaming the key",
           repr(r)[:300])
    k3 = created(api, "anthropic", {"name": "put-main", "value": secret("put-old-name"),
                                    "models": ["claude-other"]},
                 "after a rename the old name is free")
    tap.eq(path_sel(), s2, "after the rename, still the same secret")
    r = api.update("openai", kid(dup), {"name": "dup-name", "value": redact(s2)})
    tap.ok(r.status == 200 and J(r).get("value") != ev(s2),
           "PUT another key's redaction into this key's value: a mask, this key's secret kept",
           repr(r)[:300])

    # a short secret reads as 8 '*' whatever its length, and that form keeps it too
    short = mk(api, "anthropic", {"name": "put-short", "value": "ab3d", "models": ["claude-short"]})
    r = api.update("anthropic", kid(short), {"name": "put-short", "value": "********",
                                              "models": ["claude-short"]})
    tap.ok(r.status == 200 and (J(r).get("value") or {}).get("value") == "********",
           "PUT \"********\" over a 4-character secret: 200", repr(r)[:300])
    tap.eq(J(api.select("anthropic", "claude-short")).get("value"), "ab3d",
           "the 4-character secret is kept (select)")
    r = api.update("anthropic", kid(short), {"name": "put-short", "value": "****",
                                             "models": ["claude-short"]})
    tap.ok(r.status == 200 and J(api.select("anthropic", "claude-short")).get("value") == "ab3d",
           "PUT \"****\" over a 4-character secret: a mask, the secret kept", repr(r)[:300])

    # configs: the read form back keeps every secret; a redaction from another field is 400
    for label, (p, model, key, secrets) in sorted(cfgs.items()):
        read = J(api.key(p, kid(key)))
        r = api.update(p, kid(key), roundtrip(read))
        tap.ok(r.status == 200 and J(r).get("config_hash") == read.get("config_hash"),
               "%s: PUT the read form back, the same config_hash" % label, repr(r)[:400])
    azure = cfgs["azure-main"][2]
    read = roundtrip(J(api.key("azure", kid(azure))))
    if isinstance(read.get("azure_key_config"), dict):
        bad = json.loads(json.dumps(read))
        bad["azure_key_config"]["client_secret"] = "abcd" + "*" * 24 + "wxyz"
        bif_error(api.update("azure", kid(azure), bad), 400,
                  "azure: a redacted client_secret with none stored",
                  "azure_key_config.client_secret")
        bad = json.loads(json.dumps(read))
        bad["azure_key_config"]["endpoint"] = redact(cfgs["azure-main"][3]["value"])
        r = api.update("azure", kid(azure), bad)
        tap.ok(r.status == 200 and (J(r).get("azure_key_config") or {}).get("endpoint") ==
               ev(cfgs["azure-main"][3]["endpoint"]),
               "azure: the value's redaction sent as the endpoint: a mask, the endpoint kept",
               repr(r)[:300])
    else:
        tap.ok(False, "azure-main reads with an azure_key_config", read)
    creds = cfgs["azure-creds"][2]
    read = roundtrip(J(api.key("azure", kid(creds))))
    cs = secret("azure-client-secret-2")
    if isinstance(read.get("azure_key_config"), dict):
        read["azure_key_config"]["client_secret"] = cs
        r = api.update("azure", kid(creds), read)
        tap.ok(r.status == 200 and (J(r).get("azure_key_config") or {}).get("client_secret") ==
               ev(cs), "azure: PUT a new client_secret, the others sent redacted", repr(r)[:400])
        cfgs["azure-creds"][3]["client_secret"] = cs
    return k3


def config_hash(api):
    s, s2 = secret("hash"), secret("hash-other")
    base = {"name": "hash-base", "value": s, "models": ["gpt-4", "gpt-4o", "a-model"],
            "blacklisted_models": ["o1", "o3"], "weight": 2, "enabled": True,
            "use_for_batch_api": False, "description": "one"}
    k = mk(api, "openai", base)
    h0 = k.get("config_hash")
    key_id = kid(k)

    def put(change, name):
        r = api.update("openai", key_id, dict(base, **change))
        if r.status != 200:
            tap.ok(False, "config_hash: PUT %s: 200" % name, repr(r)[:400])
        return J(r).get("config_hash")

    tap.ok(HEX64.match(str(h0)), "config_hash: 64 hex", h0)
    tap.eq(put({}, "the same content"), h0, "config_hash: re-PUT of the same content, same hash")
    tap.eq(put({"value": redact(s)}, "redacted"), h0,
           "config_hash: the redacted value (secret kept), same hash")
    tap.eq(put({"models": ["a-model", "gpt-4o", "gpt-4"], "blacklisted_models": ["o3", "o1"]},
               "reordered"), h0, "config_hash: models and blacklisted_models in another order, "
           "same hash")
    tap.eq(put({"config_hash": "f" * 64, "status": "disabled"}, "with a hash"), h0,
           "config_hash: an input config_hash and status are ignored")
    tap.eq(put({"description": "another description"}, "description"), h0,
           "config_hash: the description is not hashed content")
    tap.eq(J(api.key("openai", key_id)).get("config_hash"), h0, "config_hash: GET reads it")
    seen = {h0: "base"}
    for change, name in (({"name": "hash-renamed"}, "name"), ({"value": s2}, "value"),
                         ({"value": "env." + ENV_NAME}, "value as a reference"),
                         ({"models": ["gpt-4"]}, "models"),
                         ({"models": []}, "models empty"),
                         ({"blacklisted_models": ["o1"]}, "blacklisted_models"),
                         ({"weight": 3}, "weight"), ({"weight": 0}, "weight 0"),
                         ({"enabled": False}, "enabled"),
                         ({"use_for_batch_api": True}, "use_for_batch_api")):
        h = put(change, name)
        tap.ok(isinstance(h, str) and h not in seen,
               "config_hash: changing %s changes it (to one no other content had)" % name,
               {"hash": h, "same as": seen.get(h)})
        seen[h] = name
    tap.eq(put({}, "back"), h0, "config_hash: the base content again, the base hash again")
    tap.eq(put({"weight": 2.0}, "weight 2.0"), h0, "config_hash: weight 2.0 is weight 2")
    tap.eq(put({"value": {"value": s, "env_var": "", "from_env": False}}, "object form"), h0,
           "config_hash: the value in the EnvVar object form, same hash")

    # the defaults are content too: omitted or sent, the same hash
    ds = secret("hash-defaults")
    d = mk(api, "openai", {"name": "hash-defaults", "value": ds})
    r = api.update("openai", kid(d), {"name": "hash-defaults", "value": ds, "weight": 0,
                                      "enabled": True, "use_for_batch_api": False,
                                      "models": ["*"], "blacklisted_models": []})
    tap.ok(r.status == 200 and J(r).get("config_hash") == d.get("config_hash"),
           "config_hash: a key made with the defaults and its re-PUT sending them (weight 0, "
           "enabled true, use_for_batch_api false, models [\"*\"], no blacklist) have the "
           "same hash",
           [d.get("config_hash"), J(r).get("config_hash")])

    # configs hashed too
    url, url2 = distinctive("http://hash-%s.internal", "u"), distinctive("http://hash-%s.in", "v")
    vb = {"name": "hash-vllm", "models": ["hash-model"],
          "vllm_key_config": {"url": url, "model_name": "m1"}}
    v = mk(api, "vllm", vb)
    hv = v.get("config_hash")
    for cfg, name in (({"url": url2, "model_name": "m1"}, "the vllm url"),
                      ({"url": url, "model_name": "m2"}, "the vllm model_name"),
                      ({"url": "env." + URL_ENV_NAME, "model_name": "m1"}, "a url reference")):
        r = api.update("vllm", kid(v), dict(vb, vllm_key_config=cfg))
        tap.ok(r.status == 200 and J(r).get("config_hash") not in (hv, None),
               "config_hash: changing %s changes it" % name, repr(r)[:300])
    r = api.update("vllm", kid(v), vb)
    tap.eq(J(r).get("config_hash"), hv, "config_hash: the vllm base again, its hash again")
    ep, ep2 = (distinctive("https://hash-%s.openai.azure.com/", "a"),
               distinctive("https://hash-%s.openai.azure.com/", "b"))
    ab = {"name": "hash-azure", "value": secret("hash-az"), "models": ["hash-model"],
          "azure_key_config": {"endpoint": ep, "api_version": "2024-10-21"}}
    az = mk(api, "azure", ab)
    for cfg, name in (({"endpoint": ep2, "api_version": "2024-10-21"}, "the azure endpoint"),
                      ({"endpoint": ep, "api_version": "2024-10-22"}, "the azure api_version"),
                      ({"endpoint": ep, "api_version": "2024-10-21",
                        "deployments": {"gpt-4": "d"}}, "the azure deployments")):
        r = api.update("azure", kid(az), dict(ab, azure_key_config=cfg))
        tap.ok(r.status == 200 and J(r).get("config_hash") not in (az.get("config_hash"), None),
               "config_hash: changing %s changes it" % name, repr(r)[:300])

    # the same content under another id and provider: the same hash
    xs = secret("hash-cross")
    xb = {"name": "hash-cross", "value": xs, "models": ["m2", "m1"], "weight": 4}
    x = mk(api, "openai", xb)
    api.remove("openai", kid(x))
    y = created(api, "cohere", dict(xb, id="hash-cross-other-id", models=["m1", "m2"]),
                "the same content on another provider with another id")
    tap.ok(y.get("config_hash") == x.get("config_hash") and x.get("config_hash"),
           "config_hash: the same content gives the same hash across ids and providers",
           [x.get("config_hash"), y.get("config_hash")])
    api.remove("cohere", kid(y))
    return key_id


# --- select ---------------------------------------------------------------------------------

def select(api):
    secrets = {}

    def key(name, **fields):
        s = secret(name)
        k = mk(api, "cohere", dict({"name": name, "value": s}, **fields))
        secrets[kid(k)] = s
        return kid(k)

    w1 = key("sel-w1", weight=1)
    w3 = key("sel-w3", weight=3)
    w0 = key("sel-w0", weight=0)
    off = key("sel-disabled", weight=5, enabled=False)
    black = key("sel-blacklisted", weight=5, blacklisted_models=["gpt-4"])
    other = key("sel-other-model", weight=5, models=["other-model"])
    names = {w1: "weight 1", w3: "weight 3", w0: "weight 0", off: "disabled",
             black: "blacklisting gpt-4", other: "models [other-model]"}

    answers = select_many(api, "cohere", "gpt-4", 400)
    picks = [J(r).get("id") for r in answers]
    tap.ok(all(r.status == 200 for r in answers), "400 selects for gpt-4: all 200",
           sorted(set(repr(r)[:200] for r in answers if r.status != 200))[:5])
    counts = {names.get(i, i): picks.count(i) for i in set(picks)}
    tap.ok(set(picks) <= {w1, w3}, "select never picks a weight-0, disabled, blacklisted or "
           "model-excluded key", counts)
    share = picks.count(w3) / float(max(1, picks.count(w1) + picks.count(w3)))
    tap.ok(0.65 <= share <= 0.85, "weights 1 and 3: the weight-3 key's share %.3f is within "
           "[0.65, 0.85] over 400 selects" % share, counts)
    good = [J(r) for r in answers if J(r).get("id") in (w1, w3)]
    tap.ok(good and all(a.get("value") == secrets[a["id"]] and a.get("provider") == "cohere" and
                        a.get("name") in ("sel-w1", "sel-w3") and
                        a.get("weight") == (1 if a["id"] == w1 else 3) for a in good),
           "each selected answer has its id, name, provider, weight and secret",
           good[:2])
    entries, total = audit_entries(api, w3, action="selected")
    tap.eq(total, 0, "audit: a selection is a read and writes no audit entry")

    picks = [J(r).get("id") for r in select_many(api, "cohere", "other-model", 60)]
    counts = {names.get(i, i): picks.count(i) for i in set(picks)}
    tap.ok(set(picks) <= {w1, w3, black, other} and other in picks and black in picks,
           "select for other-model: the keys allowing it (models empty or containing it, not "
           "blacklisted), never weight 0 or disabled", counts)

    # none qualifies
    for name, fields in (("disabled", {"enabled": False, "weight": 5}),
                         ("blacklisting the model", {"blacklisted_models": ["gpt-4"]}),
                         ("blacklisting every model", {"blacklisted_models": ["*"]}),
                         ("allowing none", {"models": []}),
                         ("for other models", {"models": ["gemini-pro"]})):
        mk(api, "gemini", dict({"name": uniq("none-" + name.split()[-1]),
                                "value": secret("gemini")}, **fields))
    bif_error(api.select("gemini", "gpt-4"), 404,
              "select: every key disabled, blacklisting the model or every model, allowing none "
              "([]) or excluding the model", "model")
    # Bifrost's selectKeyFromProviderForModel: the one key that qualifies, whatever its weight
    only = mk(api, "perplexity", {"name": uniq("only-w0"), "value": secret("pplx-w0"),
                                  "weight": 0, "models": ["only-model"]})
    tap.eq(J(api.select("perplexity", "only-model")).get("id"), kid(only),
           "select: the only key that qualifies is chosen, weight 0 or not")
    r = api.select("gemini", "gemini-pro")
    tap.eq(r.status, 200, "select: the key whose models has the model qualifies")
    bif_error(api.select("replicate", "gpt-4"), 404, "select on a provider with no keys", "model")
    bif_error(api.select("cohere", None), 400, "select without a model", "model")
    bif_error(api.select("cohere", ""), 400, "select with an empty model", "model")
    tap.eq(api.post("/api/providers/cohere/keys/select", {"model": "gpt-4", "n": 1}).status, 200,
           "select with an unknown field: ignored, as Bifrost's handler ignores it")

    # a key made unusable stops being picked at once
    api.update("cohere", w1, {"name": "sel-w1", "value": redact(secrets[w1]), "weight": 1,
                              "enabled": False})
    api.remove("cohere", w3)
    picks = [J(r).get("id") for r in select_many(api, "cohere", "gpt-4", 20)]
    tap.ok(set(picks) == {w0}, "after w1 is disabled by PUT and w3 deleted, only the weight-0 "
           "key qualifies for gpt-4, and is chosen every time", picks[:5])
    api.remove("cohere", w0)
    r = api.select("cohere", "gpt-4")
    tap.eq(r.status, 404, "... and once it is deleted, none qualifies (404)")
    api.update("cohere", w1, {"name": "sel-w1", "value": redact(secrets[w1]), "weight": 1})
    r = api.select("cohere", "gpt-4")
    tap.ok(r.status == 200 and J(r).get("id") == w1 and J(r).get("value") == secrets[w1],
           "re-enabled by PUT with the redacted value: picked, with its secret", repr(r)[:300])


def select_configs(api, cfgs):
    """select resolves every secret of every config."""
    for label, (p, model, key, secrets) in sorted(cfgs.items()):
        r = api.select(p, model)
        a = J(r)
        tap.ok(r.status == 200 and a.get("id") == kid(key),
               "select %s for %s: the key %s" % (p, model, label), repr(r)[:300])
        cfg = a.get("%s_key_config" % p) or {}
        got = {f: (a.get("value") if f == "value" else plain(cfg.get(f))) for f in secrets}
        tap.eq(got, secrets, "select %s: every secret resolved" % label)


# --- callers --------------------------------------------------------------------------------

def callers(api):
    target = mk(api, "openai", {"name": "caller-target", "value": secret("caller"),
                                "models": ["caller-model"]})
    tid = kid(target)
    sel_target = kid(mk(api, "openrouter", {"name": "caller-select", "value": secret("csel"),
                                            "models": ["caller-model"]}))
    r = api.post("/api/providers", {"provider": "keep-llm",
                                    "custom_provider_config": {"base_provider_type": "openai"}})
    if r.status != 200:
        SETUP_FAILURES.append("POST /api/providers keep-llm -> %r" % r)
    ops = [
        ("GET", "/api/providers", None),
        ("POST", "/api/providers", {"provider": "denied-llm",
                                    "custom_provider_config": {"base_provider_type": "openai"}}),
        ("GET", "/api/providers/openai", None),
        ("DELETE", "/api/providers/keep-llm", None),
        ("GET", "/api/providers/openai/keys", None),
        ("POST", "/api/providers/openai/keys", {"name": "denied-key",
                                                "value": secret("denied")}),
        ("GET", "/api/providers/openai/keys/" + q(tid), None),
        ("PUT", "/api/providers/openai/keys/" + q(tid), {"name": "caller-target",
                                                          "value": secret("denied-put")}),
        ("DELETE", "/api/providers/openai/keys/" + q(tid), None),
        ("GET", "/api/keys", None),
    ]
    who = {"an internal_user's key": user_key(api, "internal_user"),
           "a proxy_admin_viewer's key": user_key(api, "proxy_admin_viewer"),
           "a key without a user": gen(api),
           "a key with permissions.select_provider_keys": gen(
               api, permissions={"select_provider_keys": True}),
           "a key with permissions.verify_keys": gen(api, permissions={"verify_keys": True})}
    for label, cred in who.items():
        for method, path, body in ops:
            bif_error(api.call(method, path, body, who=cred), 403,
                      "%s %s by %s" % (method, path, label))
    for label, cred in (("no credential", None), ("an unknown key", "sk-nobody-0001")):
        for method, path, body in ops + [("POST", "/api/providers/openrouter/keys/select",
                                          {"model": "caller-model"})]:
            bif_error(api.call(method, path, body, who=cred), 401,
                      "%s %s with %s" % (method, path, label))
    r = api.key("openai", tid)
    tap.ok(r.status == 200 and J(r).get("config_hash") == target.get("config_hash"),
           "the refused calls changed nothing (the key, its hash)", repr(r)[:300])
    tap.eq(api.get("/api/providers/denied-llm").status, 404, "no refused provider was made")
    tap.eq(api.get("/api/providers/keep-llm").status, 200, "no refused delete happened")
    tap.ok("denied-key" not in [k.get("name") for k in L(api.keys("openai"))
                                if isinstance(k, dict)], "no refused key was made")

    # select callers
    for label, cred, status in (
            ("the master key", MASTER, 200),
            ("a proxy_admin's key", user_key(api, "proxy_admin"), 200),
            ("a key with permissions.select_provider_keys",
             who["a key with permissions.select_provider_keys"], 200),
            ("a key without a user", who["a key without a user"], 403),
            ("an internal_user's key", who["an internal_user's key"], 403),
            ("a proxy_admin_viewer's key", who["a proxy_admin_viewer's key"], 403),
            ("a key with permissions.verify_keys", who["a key with permissions.verify_keys"],
             403)):
        r = api.post("/api/providers/openrouter/keys/select", {"model": "caller-model"},
                     who=cred)
        if status == 200:
            tap.ok(r.status == 200 and J(r).get("id") == sel_target,
                   "select by %s: 200 with the key" % label, repr(r)[:300])
        else:
            bif_error(r, status, "select by " + label)
    sel = who["a key with permissions.select_provider_keys"]
    bif_error(api.select("no-such-provider", "gpt-4", who=sel), 404,
              "select by the select key on an unknown provider")

    # a proxy admin manages everything
    admin = user_key(api, "proxy_admin")
    r = api.get("/api/providers", who=admin)
    status_is(r, 200, "GET /api/providers by a proxy_admin's key")
    k = J(api.create("openai", {"name": "admin-made", "value": secret("admin")}, who=admin))
    tap.ok(k.get("name") == "admin-made", "POST a key by a proxy_admin's key", k)
    r = api.update("openai", kid(k), {"name": "admin-made", "value": secret("admin-2")},
                   who=admin)
    status_is(r, 200, "PUT a key by a proxy_admin's key")
    status_is(api.remove("openai", kid(k), who=admin), 200, "DELETE a key by a proxy_admin's key")
    status_is(api.delete("/api/providers/keep-llm", who=admin), 200,
              "DELETE a custom provider by a proxy_admin's key")


# --- delete, lists, audit -------------------------------------------------------------------

def delete_keys(api):
    s = secret("del-me")
    k = mk(api, "openrouter", {"name": "del-me", "id": "del-me-id", "value": s,
                               "models": ["del-model"]})
    r = api.remove("openrouter", "del-me-id")
    a = J(r)
    tap.ok(r.status == 200 and a.get("id") == "del-me-id" and a.get("value") == ev(s) and
           a.get("name") == "del-me" and a.get("config_hash") == k.get("config_hash"),
           "DELETE: 200, the key as it was, redacted", repr(r)[:400])
    bif_error(api.key("openrouter", "del-me-id"), 404, "GET a deleted key")
    bif_error(api.remove("openrouter", "del-me-id"), 404, "DELETE a deleted key")
    bif_error(api.update("openrouter", "del-me-id", {"name": "del-me", "value": redact(s)}), 404,
              "PUT a deleted key")
    bif_error(api.select("openrouter", "del-model"), 404,
              "select after the only key for the model is deleted", "model")
    tap.ok("del-me-id" not in [x.get("id") for x in L(api.get("/api/keys"))
                               if isinstance(x, dict)], "GET /api/keys: the deleted key is gone")
    k = created(api, "openrouter", {"name": "del-me", "id": "del-me-id",
                                    "value": secret("reborn"), "models": ["del-model"]},
                "a deleted key's name and id are free again")
    api.remove("openrouter", kid(k))


def lists(api):
    everything = L(api.get("/api/keys"))
    r = api.get("/api/providers")
    provs = {p.get("name"): p for p in J(r).get("providers") or [] if isinstance(p, dict)}
    union, ok_counts, ok_shape = [], [], []
    for name in sorted(provs):
        r = api.keys(name)
        items = L(r)
        union += items
        ok_counts.append((name, provs[name].get("keys"), len(items)))
        ok_shape += [x for x in items if not isinstance(x, dict) or x.get("provider") != name]
    tap.ok(all(c == n for _, c, n in ok_counts), "each provider's keys count is the length of "
           "its key list", ok_counts)
    tap.ok(not ok_shape, "every listed key names its provider", ok_shape[:3])
    tap.ok(sorted((x.get("provider"), x.get("id")) for x in everything if isinstance(x, dict)) ==
           sorted((x.get("provider"), x.get("id")) for x in union if isinstance(x, dict)) and
           len(everything) >= 20 and len(set(x.get("provider") for x in everything
                                              if isinstance(x, dict))) >= 8,
           "GET /api/keys: every provider's keys, each with its provider (%d keys)" %
           len(everything))
    tap.ok(all(isinstance(x, dict) and HEX64.match(str(x.get("config_hash"))) and
               x.get("status") in (None, "success", "list_models_failed") and
               x.get("key_id") == x.get("id") and x.get("provider_id") == x.get("provider")
               for x in everything), "every key has a config_hash, no status Bifrost does not "
           "know, and TableKey's key_id and provider_id")


def audit_trail(api):
    s, s2 = secret("audit-v1"), secret("audit-v2")
    k = mk(api, "openrouter", {"name": "audited-key", "value": s, "models": ["aud-model"]})
    key_id = kid(k)
    api.update("openrouter", key_id, {"name": "audited-key", "value": s2,
                                      "models": ["aud-model"]})
    api.select("openrouter", "aud-model")
    api.remove("openrouter", key_id)
    entries, _ = audit_entries(api, key_id)
    actions = sorted(e.get("action") for e in entries)
    tap.eq(actions, ["created", "deleted", "updated"],
           "audit: created, updated, deleted under the key's id; the selection is not a change")
    tap.ok(entries and all(e.get("table_name") == "Bifrost_ProviderKey" for e in entries),
           "audit: table_name Bifrost_ProviderKey", [e.get("table_name") for e in entries])
    by = {e.get("action"): json.dumps(e) for e in entries}
    tap.ok(redact(s) in by.get("created", "") and redact(s) in by.get("updated", "") and
           redact(s2) in by.get("updated", "") and redact(s2) in by.get("deleted", ""),
           "audit: before and after hold the redacted values", by)
    r = api.get("/audit?table_name=Bifrost_ProviderKey&action=created&page_size=1")
    tap.ok(r.status == 200 and (J(r).get("total") or 0) >= 20,
           "audit: filter by table_name Bifrost_ProviderKey and action", repr(r)[:300])


# --- hygiene ----------------------------------------------------------------------------------

def store_scan(srv, when):
    files, blob = [], b""
    for root, _, names in os.walk(srv.data_dir):
        for n in names:
            p = os.path.join(root, n)
            try:
                with open(p, "rb") as f:
                    blob += f.read()
                files.append(os.path.relpath(p, srv.data_dir))
            except OSError:
                pass
    if when == "while serving":
        tap.ok([f for f in files if f.endswith(".db")] and [f for f in files if
                                                            f.startswith("log.")],
               "%s: the data directory has the store's .db and log files" % when, files)
    leaked = found_in(blob)
    tap.ok(not leaked, "%s: no file in the data directory (%d files, %d bytes) holds any of "
           "the %d secrets (plain, middle, hex, base64)" % (when, len(files), len(blob),
                                                            len(SECRETS)), leaked[:10])


def hygiene(api, srv):
    by_op = {}
    for op, method, path, status, problems, _, _ in api.answers:
        by_op.setdefault(op, []).append((method, path, status, problems))
    for op in sorted(by_op, key=str):
        bad = ["%s %s -> %d: %s" % (m, p[:80], s, "; ".join(pr)) for m, p, s, pr in by_op[op]
               if pr]
        tap.ok(not bad, "%s: all %d answers are as the spec documents" % (op, len(by_op[op])),
               "\n".join(bad[:15]))
    fives = ["%s %s -> %d" % (m, p[:80], s) for _, m, p, s, _, _, _ in api.answers if s >= 500]
    tap.ok(not fives, "no answer is a 5xx (%d requests)" % len(api.answers),
           "\n".join(fives[:30]))
    bifrost = [a for a in api.answers if a[2].startswith("/api/")]
    bad = []
    for op, method, path, status, _, j, text in bifrost:
        if status < 400:
            continue
        j = j if isinstance(j, dict) else {}
        e = j.get("error") if isinstance(j.get("error"), dict) else {}
        m = PROVIDER_PATH.match(path)
        if not (j.get("is_bifrost_error") is False and j.get("status_code") == status and
                isinstance(e.get("message"), str) and e.get("message") and
                "param" in e and isinstance(j.get("event_id"), str) and
                isinstance(j.get("type"), str) and isinstance(j.get("extra_fields"), dict) and
                (not m or (j.get("extra_fields") or {}).get("provider") ==
                 urllib.parse.unquote(m.group(1)))):
            bad.append("%s %s -> %d: %s" % (method, path[:60], status, text[:200]))
    tap.ok(not bad, "every Bifrost error (%d) has event_id, type, is_bifrost_error false, "
           "status_code, error.message and error.param, extra_fields.provider"
           % sum(1 for a in bifrost if a[3] >= 400), "\n".join(bad[:10]))
    leaks = []
    for op, method, path, status, _, _, text in api.answers:
        if op == "provider_key_select" and status == 200:
            continue
        hit = found_in(text.encode())
        if hit:
            leaks.append("%s %s -> %d: %s" % (method, path[:60], status, hit[:3]))
    tap.ok(not leaks, "no answer but select's holds a secret (%d answers)" % len(api.answers),
           "\n".join(leaks[:10]))
    text, bad = whole_audit_log(api)
    tap.ok(not bad, "every page of GET /audit is valid JSON", bad[:5])
    tap.ok(not found_in(text.encode()), "the audit log (%d bytes) holds no secret" % len(text),
           found_in(text.encode())[:10])
    log = srv.read_log()
    tap.ok(not found_in(log.encode()), "the server log holds no secret",
           found_in(log.encode())[:10])


def main():
    ENV_VALUES.update({ENV_NAME: ENV_SECRET, URL_ENV_NAME: ENV_URL})
    with Server(workers=3, env={ENV_NAME: ENV_SECRET, URL_ENV_NAME: ENV_URL,
                                # the variables this test references (the default is *_API_KEY)
                                "KEYWARDEN_PROVIDER_ENV": "KW_TEST_*,KW_NOT_SET_*",
                                "KEYWARDEN_LOG_LEVEL": "debug",
                                "KEYWARDEN_MAX_BODY": "65536"}) as srv:
        api = Api(srv)
        r = api.get("/api/providers")
        if r.status == 404 and b"no such route" in r.body:
            tap.bail("GET /api/providers is not routed by this build")
        builtin_providers(api)
        custom_providers(api)
        dup = create_keys(api)
        cfgs = configs(api)
        env_refs(api)
        put_rules(api, cfgs, dup)
        select_configs(api, cfgs)
        config_hash(api)
        select(api)
        callers(api)
        delete_keys(api)
        lists(api)
        audit_trail(api)
        hygiene(api, srv)
        store_scan(srv, "while serving")
        srv.stop()
        store_scan(srv, "after shutdown")
        log = srv.read_log()
        tap.ok(not found_in(log.encode()), "the server log after shutdown holds no secret")
    tap.ok(not SETUP_FAILURES, "every key, user and provider the tests needed was made",
           "\n".join(SETUP_FAILURES[:20]))


tap.run(main)
