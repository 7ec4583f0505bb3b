#!/usr/bin/python3
"""contract_hostile.t: a catalogue of hostile requests against every operation of the spec, through the real lighttpd.

Every operation in spec/openapi.yaml gets, with the master key where auth
matters: broken JSON (truncated, trailing commas, single quotes, NaN,
comments, 100 levels deep), huge numbers and integer overflow, invalid UTF-8
and NULs (raw and escaped, in values and in keys), a body over
KEYWARDEN_MAX_BODY, a 60 KB Authorization header, a value of every wrong JSON
type at every place of its body schema, unknown fields, hostile path and
query parameters, keys of every wrong shape as credentials and as key
references, methods it does not have and bodies that are not JSON; and the
FastCGI AUTHORIZER role, spoken to keywarden's socket, gets hostile headers.

Each answer must be a 4xx in the envelope of the operation's face, never a
dropped connection, and never carry the presented key or a stored secret.
What the validators must refuse (a body, query or header value the schema
does not admit, or cannot be read) must be refused by them: 400/422
(LiteLLM, provisioning) or 400 (Bifrost, Venice), not a 404 or 200 from a
handler it reached; what the schema admits (1e30 as a budget) may get any
answer but a 5xx.  Where lighttpd answers itself (431 for the 60 KB header,
400 for %00 in a URL or a NUL in a header, a GET with a body) any 4xx of its
own is accepted; those requests go to keywarden's socket as well.

Afterwards the lists and the audit trail still read back as UTF-8 JSON, every
worker is the one that started (none died and was replaced), and the log
holds no sanitizer report and no key.

One test point per operation and kind of hostility; a failing one lists each
offending request (method, target, headers, body, answer).  KW_HOSTILE_REPORT=
FILE writes every failure and the counts as JSON."""
import collections
import concurrent.futures
import hashlib
import json
import os
import re
import socket
import sys
import time
import urllib.parse
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
import contract  # noqa: E402
import fcgi  # noqa: E402
from kwserver import Server  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
import jsonschema  # noqa: E402

MAX_BODY = 65536
THREADS = 8
PROVIDER_SECRET = "sk-proj-hostileProviderSecret-7Qx2Zr9w"
PLACEHOLDER = "__kw_hostile_placeholder__"
# what a face answers a request its validators refuse (a body, query or header parameter):
# 400 for what cannot be read (JSON, escapes), 422 or 400 for what the schema refuses.  Any
# other status (404, 401, 200...) means the value got past validation to the handler.
VALIDATION = {"litellm": {400, 422}, "provisioning": {400, 422}, "bifrost": {400},
              "venice": {400}}

SPEC = contract.load_spec()
OPS = contract.operations(SPEC)
FACE_PREFIXES = [(f["prefix"], f["face"]) for f in SPEC.get("x-keywarden-faces", [])]


def resolve(node):
    return contract.resolve(SPEC, node)


def sha(s):
    return hashlib.sha256(s.encode() if isinstance(s, str) else s).hexdigest()


def b(s):
    return s if isinstance(s, bytes) else s.encode("utf-8")


# ---------------------------------------------------------------- the HTTP side

class Answer:
    """What came back: status (None when the connection dropped), headers, body."""

    def __init__(self, status=None, reason="", headers=None, body=b"", raw=b"", error=None):
        self.status, self.reason, self.headers = status, reason, headers or {}
        self.body, self.raw, self.error = body, raw, error
        self.json = None
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            pass

    def short(self):
        if self.status is None:
            return "DROPPED (%s) after %d bytes: %r" % (self.error, len(self.raw), self.raw[:200])
        return "%d %s %s" % (self.status, self.headers.get("content-type", "-"),
                             _show(self.body, 400))


def _show(data, limit=300):
    """A request or answer part for a report: short, with its length when cut."""
    if data is None:
        return None
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if len(data) <= limit:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return repr(data)
    head = data[:limit // 2]
    try:
        head = head.decode("utf-8")
    except UnicodeDecodeError:
        head = repr(head)
    return "%s...<%d bytes in all>" % (head, len(data))


def _dechunk(data):
    out, i = b"", 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            return None
        n = int(data[i:j].split(b";")[0], 16)
        if n == 0:
            return out
        out += data[j + 2:j + 2 + n]
        if len(data) < j + 2 + n:
            return None
        i = j + 2 + n + 2


def http(port, method, target, headers=(), body=None, chunked=False, timeout=30):
    """One HTTP/1.1 request over its own connection, bytes as given."""
    req = bytearray(b(method) + b" " + b(target) + b" HTTP/1.1\r\n")
    req += b"Host: 127.0.0.1:%d\r\nConnection: close\r\n" % port
    for name, value in headers:
        req += b(name) + b": " + b(value) + b"\r\n"
    if body is not None and chunked:
        req += b"Transfer-Encoding: chunked\r\n\r\n"
        for i in range(0, len(body), 8192):
            part = body[i:i + 8192]
            req += b"%x\r\n" % len(part) + part + b"\r\n"
        req += b"0\r\n\r\n"
    elif body is not None:
        req += b"Content-Length: %d\r\n\r\n" % len(body) + body
    else:
        req += b"\r\n"
    raw, err = b"", None
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as e:
        return Answer(error="connect: %s" % e)
    try:
        try:
            s.sendall(bytes(req))
        except OSError as e:
            err = "send: %s" % e
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                raw += chunk
        except OSError as e:
            err = "recv: %s" % e
    finally:
        s.close()
    sep = raw.find(b"\r\n\r\n")
    if sep < 0 or not raw.startswith(b"HTTP/1."):
        return Answer(raw=raw, error=err or "no complete answer")
    head, rest = raw[:sep].decode("latin-1"), raw[sep + 4:]
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    try:
        status = int(parts[1])
    except (IndexError, ValueError):
        return Answer(raw=raw, error="bad status line %r" % lines[0])
    hdrs = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            k = k.strip().lower()
            hdrs[k] = hdrs[k] + ", " + v.strip() if k in hdrs else v.strip()
    body_out = rest
    if "chunked" in hdrs.get("transfer-encoding", "").lower():
        body_out = _dechunk(rest)
        if body_out is None:
            return Answer(raw=raw, error="truncated chunked body")
    elif "content-length" in hdrs:
        n = int(hdrs["content-length"])
        if len(rest) < n and method != "HEAD":
            return Answer(raw=raw, error="body cut at %d of %d bytes (%s)" % (len(rest), n, err))
        body_out = rest[:n]
    return Answer(status, parts[2] if len(parts) > 2 else "", hdrs, body_out, raw)


# ---------------------------------------------------------------- envelopes

def envelope_problem(face, status, j):
    """None when j is face's error envelope for status, else what is wrong."""
    if not isinstance(j, dict):
        return "not a JSON object"
    if face == "litellm":
        e = j.get("error")
        if not (isinstance(e, dict) and isinstance(e.get("message"), str) and
                isinstance(e.get("type"), str) and "param" in e and
                (e["param"] is None or isinstance(e["param"], str)) and
                e.get("code") == str(status)):
            return "not LiteLLM's envelope with code %r" % str(status)
    elif face == "bifrost":
        e = j.get("error")
        if not (isinstance(j.get("is_bifrost_error"), bool) and j.get("status_code") == status and
                isinstance(e, dict) and isinstance(e.get("message"), str)):
            return "not Bifrost's envelope with status_code %d" % status
    elif face == "venice":
        if not isinstance(j.get("error"), str):
            return "not Venice's envelope"
    elif face == "provisioning":
        if not (j.get("code") == status and isinstance(j.get("detail"), str) and
                isinstance(j.get("type"), str)):
            return "not the provisioning envelope with code %d" % status
    return None


def looks_like(j):
    """The face whose envelope j resembles, for reports."""
    if not isinstance(j, dict):
        return "none"
    if "is_bifrost_error" in j:
        return "bifrost"
    if "detail" in j and "code" in j:
        return "provisioning"
    if isinstance(j.get("error"), dict):
        return "litellm"
    if isinstance(j.get("error"), str):
        return "venice"
    return "none"


def face_of_path(path):
    for prefix, face in FACE_PREFIXES:
        if path.startswith(prefix):
            return face
    return "litellm"


def op_face(op_id):
    return OPS[op_id][2].get("x-keywarden-face", "litellm")


def routes_for(path):
    """Methods of the spec's templates that path matches (segments compared raw)."""
    segs = path.split("/")
    methods = set()
    for tpl, item in SPEC["paths"].items():
        t = tpl.split("/")
        if len(t) != len(segs):
            continue
        if all((x.startswith("{") and y != "") or x == y for x, y in zip(t, segs)):
            methods |= {m.upper() for m in item if m in contract.METHODS}
    return methods


# ---------------------------------------------------------------- schemas

def types_of(s):
    t = s.get("type")
    if t is None:
        return []
    return [t] if isinstance(t, str) else list(t)


def minimal_string(s):
    pat = s.get("pattern")
    for cand in ("a1", "sk-hostile-min-0001", "abc", "2026-01-01"):
        if pat and not re.search(pat, cand):
            continue
        if len(cand) < s.get("minLength", 0) or len(cand) > s.get("maxLength", 1 << 30):
            continue
        return cand
    return "a" * max(1, s.get("minLength", 1))


def minimal(node):
    """A small value node's schema admits, with every required member."""
    s = resolve(node)
    t = types_of(s)
    if "enum" in s:
        return next(v for v in s["enum"] if v is not None)
    if "string" in t:
        return minimal_string(s)
    if "integer" in t or "number" in t:
        v = 1
        if "minimum" in s:
            v = max(v, s["minimum"])
        if "maximum" in s:
            v = min(v, s["maximum"])
        return v
    if "boolean" in t:
        return False
    if "object" in t:
        return {r: minimal(s.get("properties", {}).get(r, {})) for r in s.get("required", [])}
    if "array" in t:
        return [minimal(s.get("items", {})) for _ in range(s.get("minItems", 0))]
    return None


def build(node, path, value):
    """A minimal instance of node's schema with value at path (steps: ("prop", name),
    ("addl",) or ("item",))."""
    if not path:
        return value
    s = resolve(node)
    step = path[0]
    if step[0] == "item":
        arr = [build(s.get("items", {}), path[1:], value)]
        while len(arr) < s.get("minItems", 0):
            arr.append(minimal(s.get("items", {})))
        return arr
    obj = {r: minimal(s.get("properties", {}).get(r, {})) for r in s.get("required", [])}
    if step[0] == "addl":
        obj["m"] = build(s.get("additionalProperties", {}), path[1:], value)
    else:
        obj[step[1]] = build(s.get("properties", {}).get(step[1], {}), path[1:], value)
    return obj


def walk(node, path=(), depth=0):
    """(path, raw node, resolved schema) of every place under node."""
    s = resolve(node)
    if depth > 8:
        return
    t = types_of(s)
    if "object" in t or "properties" in s:
        for name, child in s.get("properties", {}).items():
            p = path + (("prop", name),)
            yield p, child, resolve(child)
            yield from walk(child, p, depth + 1)
        ap = s.get("additionalProperties")
        if isinstance(ap, dict):
            p = path + (("addl",),)
            yield p, ap, resolve(ap)
            yield from walk(ap, p, depth + 1)
    if "array" in t or "items" in s:
        it = s.get("items")
        if isinstance(it, dict):
            p = path + (("item",),)
            yield p, it, resolve(it)
            yield from walk(it, p, depth + 1)


def path_name(path):
    out = ""
    for step in path:
        out += "[0]" if step[0] == "item" else (".*" if step[0] == "addl" else "." + step[1])
    return out.lstrip(".") or "(body)"


_validators = {}


def admits(schema_node, value):
    """Whether the spec's schema admits value (jsonschema, draft 2020-12)."""
    key = id(schema_node)
    if key not in _validators:
        resolver = jsonschema.RefResolver(base_uri="", referrer=SPEC)
        _validators[key] = jsonschema.Draft202012Validator(schema_node, resolver=resolver)
    try:
        return _validators[key].is_valid(value)
    except Exception:
        return False


def body_schema(op_id):
    rb = OPS[op_id][2].get("requestBody")
    if not rb:
        return None, False
    rb = resolve(rb)
    return rb["content"]["application/json"]["schema"], bool(rb.get("required"))


# ---------------------------------------------------------------- the catalogue

NEST_LIMIT = 32     # objects and arrays a request body may nest (README, KW_JSON_MAX_DEPTH)

class Case:
    def __init__(self, cat, op, method, target, headers=(), body=None, expect="4xx", face=None,
                 secrets=(), allow=None, lighttpd_ok=False, chunked=False, note=""):
        self.cat, self.op, self.method, self.target = cat, op, method, target
        self.headers, self.body, self.expect, self.face = list(headers), body, expect, face
        self.secrets = [b(s) for s in secrets if s is not None and len(b(s)) >= 8]
        self.allow, self.lighttpd_ok, self.chunked, self.note = allow, lighttpd_ok, chunked, note
        self.answer = None

    def describe(self):
        return {
            "note": self.note,
            "method": self.method,
            "target": _show(b(self.target), 300),
            "headers": [[_show(b(n), 80), _show(b(v), 120)] for n, v in self.headers],
            "body": _show(self.body, 300),
            "chunked": self.chunked or None,
            "expected": self.expect if isinstance(self.expect, str) else sorted(self.expect),
            "face": self.face,
            "answer": self.answer.short() if self.answer else None,
        }


class Catalogue:
    def __init__(self, srv, fx):
        self.srv, self.fx, self.cases = srv, fx, []
        self.master = srv.master_key
        self.auth = [("Authorization", "Bearer " + self.master)]
        self.json_ct = [("Content-Type", "application/json")]

    def add(self, *a, **kw):
        c = Case(*a, **kw)
        if c.face is None:
            c.face = op_face(c.op) if c.op in OPS else face_of_path(b(c.target).decode(
                "utf-8", "replace").split("?")[0])
        if c.expect == "valid":
            c.expect = VALIDATION[c.face]
        self.cases.append(c)
        return c

    def target(self, op_id, values=None, query=None):
        """The op's path with plausible path parameters (values override, inserted as is)."""
        _, tpl, _ = OPS[op_id]
        vals = dict(self.fx["path"])
        vals.update(values or {})
        path = re.sub(r"\{(\w+)\}", lambda m: vals[m.group(1)], tpl)
        q = dict(self.fx["query"].get(op_id, {}))
        if query is not None:
            return path + ("?" + query if query else "")
        return path + ("?" + urllib.parse.urlencode(q) if q else "")

    def base(self, op_id):
        node, _ = body_schema(op_id)
        return minimal(node) if node is not None else None

    def plain_body(self, op_id):
        """The minimal body, b"" for a POST, PUT or PATCH that takes none (lighttpd wants a
        length), None for the others."""
        base = self.base(op_id)
        if base is not None:
            return json.dumps(base).encode()
        return b"" if OPS[op_id][0] in ("POST", "PUT", "PATCH") else None

    # -- bodies
    def body_cases(self, op_id):
        node, _ = body_schema(op_id)
        if node is None:
            return
        method = OPS[op_id][0]
        tgt = self.target(op_id)
        hdrs = self.auth + self.json_ct
        base = self.base(op_id)
        if not admits(node, base):
            tap.diag("note: the minimal body for %s is not valid: %r" % (op_id, base))
        places = list(walk(node))
        strings = [p for p in places if "string" in types_of(p[2]) and "enum" not in p[2] and
                   "pattern" not in p[2]]
        str_place = strings[0][0] if strings else None
        free = [p for p in places if "object" in types_of(p[2]) and
                p[2].get("additionalProperties") is True]
        top_props = list(resolve(node).get("properties", {}))

        def with_raw(path, raw_json):
            """The base body with raw JSON text (bytes) at path."""
            text = json.dumps(build(node, path, PLACEHOLDER)).encode()
            return text.replace(b'"' + PLACEHOLDER.encode() + b'"', raw_json, 1)

        def add(cat, body, expect="valid", note="", **kw):
            self.add(cat, op_id, method, tgt, kw.pop("headers", hdrs), body, expect=expect,
                     note=note, **kw)

        # broken JSON
        text = json.dumps(base).encode()
        for raw, note in [
            (text[:max(1, len(text) // 2)], "truncated JSON"),
            (b'{"', "truncated JSON"), (b'{"a":', "truncated JSON"), (b'[', "truncated JSON"),
            (b'{"a": "unterminated', "truncated JSON"), (b'{"a": 1', "truncated JSON"),
            (b'{"a": 1,}', "trailing comma"), (b'[1, 2,]', "trailing comma"),
            (text[:-1] + b',}' if text.endswith(b"}") and text != b"{}" else b'{,}',
             "trailing comma"),
            (b"{'a': 'b'}", "single quotes"), (b'{"a": \'b\'}', "single quotes"),
            (b'{"a": NaN}', "NaN"), (b'{"a": Infinity}', "Infinity"),
            (b'{"a": -Infinity}', "-Infinity"), (b'NaN', "NaN"),
            (b'{/* comment */}', "comment"), (b'{} // comment', "comment"),
            (b'# comment\n{}', "comment"), (b'{"a": 1 /* c */}', "comment"),
            (b'{"a" 1}', "missing colon"), (b'{"a": 01}', "leading zero"),
            (b'{"a": .5}', "bare fraction"), (b'{"a": +1}', "plus sign"),
            (b'{"a": 0x10}', "hex number"), (b'{"a": 1e}', "bad exponent"),
            (b'{"a": "\\x41"}', "bad escape"), (b'{"a": "\\u12"}', "short \\u escape"),
            (b'{"a": "tab\there"}', "raw control character in a string"),
            (b'{"a": tru}', "bad literal"), (b'{"a": True}', "bad literal"),
            (b'{}{}', "two values"), (b'{} x', "junk after the value"),
            (b'   ', "whitespace only"), (b'\xef\xbb\xbf{}', "byte order mark"),
            (b'{"a":' * 100 + b'1' + b'}' * 100, "100 nested objects"),
            (b'[' * 100 + b']' * 100, "100 nested arrays"),
            (b"[" * 60000, "60000 open arrays"),
            (b'{"a": ' + b'[' * 100 + b']' * 100 + b'}', "100 nested arrays in a member"),
        ]:
            add("json", raw, note=note, expect="any" if note == "byte order mark" else "valid")
        # nesting inside places the schema lets take anything
        for p, _, _ in free[:1] + ([(str_place, None, None)] if str_place else []):
            add("json", with_raw(p, b'{"a":' * 100 + b'1' + b'}' * 100),
                note="100 nested objects at " + path_name(p))
        # exactly at and one past the nesting limit: a body the parser takes is stored and
        # read back (the aftermath reads every list and the audit trail), one deeper is a 4xx
        for p, _, _ in free[:1]:
            room = NEST_LIMIT - len(p)   # the containers around the value at p are len(p)
            add("json", with_raw(p, b'{"a":' * room + b'1' + b'}' * room), expect="any",
                note="nested exactly %d levels deep at %s" % (NEST_LIMIT, path_name(p)))
            add("json", with_raw(p, b'{"a":' * (room + 1) + b'1' + b'}' * (room + 1)),
                expect="4xx", note="nested %d levels deep at %s" % (NEST_LIMIT + 1,
                                                                   path_name(p)))
        # invalid UTF-8, NULs, surrogates, in a string field the schema has
        if str_place is not None:
            where = path_name(str_place)
            for raw, note in [
                (b'"\xff"', "\\xff"), (b'"\xfe\xff"', "\\xfe\\xff"),
                (b'"\xc0\xaf"', "overlong '/' (2 bytes)"),
                (b'"\xe0\x80\xaf"', "overlong '/' (3 bytes)"),
                (b'"\xc0\x80"', "overlong NUL"),
                (b'"\xf0\x80\x80\xaf"', "overlong '/' (4 bytes)"),
                (b'"\xed\xa0\x80"', "UTF-8-encoded surrogate"),
                (b'"\xf4\x90\x80\x80"', "above U+10FFFF"),
                (b'"\xf8\x88\x80\x80\x80"', "5-byte sequence"),
                (b'"\xe2\x82"', "truncated sequence"), (b'"\x80"', "lone continuation byte"),
                (b'"\\ud800"', "escaped lone high surrogate"),
                (b'"\\udc00"', "escaped lone low surrogate"),
                (b'"\\ud800\\u0041"', "high surrogate then a letter"),
                (b'"\\ud800\\ud800"', "two high surrogates"),
                (b'"\\udfff\\ud800"', "reversed surrogate pair"),
                (b'"a\x00b"', "raw NUL in a string"),
                (b'"a\\u0000b"', "\\u0000 in a string"), (b'"\\u0000"', "\\u0000 alone"),
            ]:
                add("encoding", with_raw(str_place, raw), note=note + " at " + where)
        for raw, note in [(b'{"\xff": 1}', "\\xff in a key"),
                          (b'{"\xed\xa0\x80": 1}', "UTF-8 surrogate in a key"),
                          (b'{"\\ud800": 1}', "escaped lone surrogate in a key"),
                          (b'{}\x00', "raw NUL after the value"), (b'\x00{}', "raw NUL first"),
                          (b'{"a\x00b": 1}', "raw NUL in a key"),
                          (b'{"a\\u0000b": 1}', "\\u0000 in a key")]:
            add("encoding", raw, note=note)
        if top_props:
            f = (resolve(node).get("required") or top_props)[0]
            obj = build(node, (("prop", f),), minimal(resolve(node)["properties"][f]))
            t = json.dumps(obj).encode()
            k = json.dumps(f).encode()
            for repl, note in [(k[:-1] + b'\\u0000junk"', "\\u0000 inside a known key"),
                               (k[:-1] + b'\x00junk"', "raw NUL inside a known key"),
                               (k[:-1] + b'\\u0000"', "known key then \\u0000")]:
                add("encoding", t.replace(k + b":", repl + b":", 1), note=note + " " + f)
        for p, _, _ in free[:2]:
            where = path_name(p)
            add("encoding", with_raw(p, b'{"a\\u0000b": 1}'), note="\\u0000 in a key at " + where)
            add("encoding", with_raw(p, b'{"a": "x\\u0000y"}'),
                note="\\u0000 in a string at " + where + ".a")
            add("encoding", with_raw(p, b'{"a": "\\ud800"}'),
                note="escaped lone surrogate at " + where + ".a")
            add("encoding", with_raw(p, b'{"\\udfff": 1}'),
                note="escaped lone surrogate in a key at " + where)

        # huge numbers and integer overflow
        for p, _, s in places:
            t = types_of(s)
            if "integer" not in t and "number" not in t:
                continue
            raws = ["1e400", "-1e400", "1" + "0" * 30, "-1" + "0" * 30, "1e308", "-1e308"]
            if "integer" in t:
                raws += ["9223372036854775807", "9223372036854775808", "-9223372036854775808",
                         "-9223372036854775809", "18446744073709551616", "1" + "0" * 400]
            for raw in raws:
                body = with_raw(p, raw.encode())
                forced = "e400" in raw or len(raw) > 300
                ok = not forced and admits(node, json.loads(body))
                add("numbers", body, expect="any" if ok else "valid",
                    note="%s at %s" % (raw if len(raw) < 40 else raw[:12] + "...", path_name(p)))

        # times past what RFC 3339 writes (the year 9999): a duration or date-time that
        # would format with five digits of year is refused by the validators, never stored
        too_far = {"duration": ["999999999mo", "3000000d", "99999999w"],
                   "date-time": ["10000-01-01T00:00:00Z", "83335360-03-03T09:16:00Z",
                                 "next week"]}
        for p, _, s in places:
            for value in too_far.get(s.get("x-keywarden-format") or s.get("format"), []):
                add("times", json.dumps(build(node, p, value)).encode(), expect="valid",
                    note="%s at %s" % (value, path_name(p)))

        # wrong types at every place, unknown fields
        wrong = [("string", "hostile"), ("integer", 7), ("number", 1.5), ("boolean", True),
                 ("null", None), ("array", []), ("object", {})]
        for p, _, s in [((), node, resolve(node))] + places:
            t = types_of(s)
            if not t:
                continue
            for kind, value in wrong:
                if kind in t or (kind == "integer" and "number" in t):
                    continue
                if kind == "number" and "integer" not in t:
                    continue    # 7 stands for numbers where the place takes none
                body = build(node, p, value)
                add("types", json.dumps(body).encode(),
                    expect="valid" if not admits(node, body) else "any",
                    note="%s at %s" % (json.dumps(value), path_name(p)))
            if ("object" in t and s.get("additionalProperties") is False):
                body = build(node, p + (("prop", "kw_hostile_unknown"),), 1)
                add("unknown", json.dumps(body).encode(),
                    expect="valid" if not admits(node, body) else "any",
                    note="unknown field at " + path_name(p + (("prop", "kw_hostile_unknown"),)))

        # not JSON
        for ct in ["text/plain", "application/x-www-form-urlencoded",
                   "multipart/form-data; boundary=x", "application/xml", "text/json",
                   "application/jsonp", "application/json-seq", "json", "*/*",
                   "application/json\xff".encode("latin-1"), "text/html; charset=utf-8"]:
            add("media", text, expect={415}, headers=self.auth + [("Content-Type", ct)],
                note="Content-Type " + _show(b(ct)))
        add("media", b"a=b&c=d", expect={415},
            headers=self.auth + [("Content-Type", "application/x-www-form-urlencoded")],
            note="a form")

        # at and over the cap
        pad = b'{"kw_hostile_pad": "'
        exact = pad + b"x" * (MAX_BODY - len(pad) - 2) + b'"}'
        # refused by validation unless the operation ignores unknown fields, as LiteLLM's
        # and Bifrost's request models do: then any answer but a 413 or a 5xx
        padded = json.loads(exact)
        add("size", exact, expect="valid" if not admits(node, padded) else "any",
            note="exactly KEYWARDEN_MAX_BODY bytes (no 413)")
        over = pad + b"x" * (MAX_BODY - len(pad) - 1) + b'"}'
        add("size", over, expect={413}, note="KEYWARDEN_MAX_BODY + 1 bytes")
        add("size", over + b" " * 40000, expect={413}, chunked=True,
            note="chunked, over KEYWARDEN_MAX_BODY")

        # header parameters
        for prm in OPS[op_id][2].get("parameters", []):
            prm = resolve(prm)
            if prm["in"] != "header":
                continue
            mx = prm["schema"].get("maxLength", 256)
            for v, note in [("a" * (mx + 1), "over maxLength"), (b"\xff\xfe", "non-UTF-8"),
                            ("\u00e9t\u00e9".encode("utf-8") * (mx // 2 + 1),
                             "non-ASCII over maxLength")]:
                add("headers", text, headers=hdrs + [(prm["name"], v)],
                    note="%s %s" % (prm["name"], note))

    # -- credentials
    def credential_cases(self, op_id):
        method, _, op = OPS[op_id]
        if not op.get("security", SPEC.get("security")):
            return
        tgt = self.target(op_id)
        body = self.plain_body(op_id)
        ct = self.json_ct if body else []
        forged = "sk-kw1_" + "A" * 43
        creds = [
            ("Bearer ", "empty Bearer"), ("Bearer", "Bearer without a key"),
            ("Bearer     ", "Bearer and spaces"), ("Bearer sk-", "sk-"),
            ("Bearer sk-" + "a" * 297, "300 characters"),
            ("Bearer sk-" + "a" * 6000, "6000 characters"),
            ("Bearer sk-\u043a\u043b\u044e\u0447-\u043d\u0435\u0442".encode(), "non-ASCII (UTF-8)"),
            (b"Bearer sk-\xff\xfe\x80latin", "non-UTF-8"),
            ("Bearer sk-with spaces in it", "with spaces"),
            ("Bearer " + sha(self.master), "the master key's SHA-256"),
            ("Bearer " + sha(self.fx["K_path"]), "a stored key's SHA-256"),
            ("Bearer " + sha(self.fx["K_path"]).upper(), "a stored key's SHA-256, upper case"),
            ("Bearer " + self.master[:-1], "the master key less its last character"),
            ("Bearer " + self.master + "x", "the master key and one more character"),
            ("Bearer " + self.master.upper(), "the master key in upper case"),
            ("Bearer " + forged, "a forged signed token"), ("Bearer sk-kw1_", "sk-kw1_"),
            ("Bearer sk-kw1_!!!!####", "sk-kw1_ with junk"),
            ("Bearer sk-kw1_" + "A" * 3000, "a long forged signed token"),
            ("Basic " + self.master, "Basic, not Bearer"),
            ("Token " + self.master, "Token, not Bearer"),
            ("Bearer\t" + self.master, "Bearer and a tab"),
        ]
        for value, note in creds:
            self.add("credentials", op_id, method, tgt, [("Authorization", value)] + ct, body,
                     expect={401}, secrets=[value[7:]],
                     note="Authorization: " + note)
        for name in ("x-api-key", "API-Key", "x-litellm-api-key"):
            for value, note in [("sk-" + "b" * 297, "300 characters"),
                                (sha(self.fx["K_path"]), "a stored key's SHA-256"),
                                (b"sk-\xff\xfe", "non-UTF-8"), ("sk-x y z 123", "with spaces")]:
                self.add("credentials", op_id, method, tgt, [(name, value)] + ct, body,
                         expect={401}, secrets=[value], note="%s: %s" % (name, note))
        self.add("credentials", op_id, method, tgt, [("Authorization", b"Bearer sk-a\x00b")] + ct,
                 body, expect={400, 401}, lighttpd_ok=True, note="Authorization with a raw NUL")
        self.add("credentials", op_id, method, tgt, [("Authorization", "Bearer sk-a\x01b")] + ct,
                 body, expect={400, 401}, lighttpd_ok=True,
                 note="Authorization with a control character")
        # a 60 KB header: lighttpd may refuse it itself
        big = "Bearer sk-" + "A" * (60 * 1024)
        self.add("headers", op_id, method, tgt, [("Authorization", big)] + ct, body,
                 expect="4xx", lighttpd_ok=True, secrets=[big[7:]],
                 note="a 60 KB Authorization header")

    # -- key references of every wrong shape
    def key_shapes(self):
        return [
            ("", "empty"), ("sk-", "sk-"), ("sk-" + "k" * 297, "300 characters"),
            ("sk-\u043a\u043b\u044e\u0447-\u00e9\u00e8\u4e2d", "non-ASCII"),
            ("sk-with spaces inside", "with spaces"), (" sk-leading-space", "leading space"),
            (sha("sk-never-issued-0000"), "an unknown key's SHA-256"),
            (sha("sk-never-issued-0000").upper(), "an unknown SHA-256, upper case"),
            ("0" * 63, "63 hex digits"), ("g" * 64, "64 non-hex characters"),
            ("sk-kw1_" + "A" * 43, "a forged signed token"),
            ("sk-never-issued-0000000000", "a well-formed unknown key"),
            ("../../etc/passwd", "a path"), ("sk-\u202eevil", "a bidi override"),
        ]

    def key_ref_cases(self):
        shapes = self.key_shapes()
        for op_id in OPS:
            node, _ = body_schema(op_id)
            method = OPS[op_id][0]
            if node is not None:
                for p, raw, s in walk(node):
                    is_ref = isinstance(raw, dict) and raw.get("$ref", "").endswith("/KeyRef")
                    is_key = p[-1] in (("prop", "key"), ("prop", "new_key"))
                    if not (is_ref or is_key) or "string" not in types_of(s):
                        continue
                    # a key of the caller's choosing (not a reference): a well-formed one
                    # would make a key (and be answered), so those are left out, but
                    # one shaped like a signed token can never authenticate
                    creates = not is_ref and op_id != "key_verify"
                    for v, note in shapes + ([("sk-kw1_" + "C" * 43, "a signed token's shape")]
                                             if creates else []):
                        body = build(node, p, v)
                        ok = admits(node, body)
                        if creates and ok and note != "a signed token's shape":
                            continue
                        expect = "4xx" if ok else "valid"
                        if op_id == "key_verify" and ok:
                            expect = "verdict"
                        elif op_id == "key_bulk_update" and ok:
                            expect = "any"     # each update fails on its own in a 200
                        self.add("keyrefs", op_id, method, self.target(op_id),
                                 self.auth + self.json_ct, json.dumps(body).encode(),
                                 expect=expect,
                                 secrets=[v] if v.startswith("sk-") and not creates else [],
                                 note="%s as %s" % (note, path_name(p)))
            tpl = OPS[op_id][1]
            if "{key}" in tpl:
                body = self.plain_body(op_id)
                for v, note in shapes:
                    enc = urllib.parse.quote(v, safe="")
                    self.add("keyrefs", op_id, method, self.target(op_id, {"key": enc}),
                             self.auth + self.json_ct, body, expect="4xx",
                             face=face_of_path(tpl.replace("{key}", enc)),
                             secrets=[v] if v.startswith("sk-") else [],
                             note="%s in the path" % note)
            for prm in OPS[op_id][2].get("parameters", []):
                prm = resolve(prm)
                if prm["in"] == "query" and prm["name"] == "key":
                    body = self.plain_body(op_id)
                    for v, note in shapes:
                        q = "key=" + urllib.parse.quote(v, safe="")
                        self.add("keyrefs", op_id, method, self.target(op_id, query=q),
                                 self.auth + (self.json_ct if body else []), body, expect="4xx",
                                 secrets=[v] if v.startswith("sk-") else [],
                                 note="%s as ?key=" % note)

    # -- path parameters
    def path_cases(self, op_id):
        method, tpl, _ = OPS[op_id]
        names = re.findall(r"\{(\w+)\}", tpl)
        if not names:
            return
        body = self.plain_body(op_id)
        values = ["..", "../..", "../x", "../../x", ".", "%2e%2e", "%2e%2e%2f", "%2e%2e%2fhealth",
                  "..%2f..%2fhealth", "..%2F", "%2F", "a%2Fb", "%2f%2e%2e%2f%2e%2e", "%00",
                  "a%00b", "%2500", "%2e", "a%5cb", "..%5c..%5c", "%252e%252e%252f",
                  "%c0%ae%c0%ae", "%ff", "%e2%82", "%ed%a0%80", "a" * 5000, "%20", "a%20b",
                  "%0d%0aX-Injected:%201", "%0a", "%7b%7d", "a;b", "a%3Bb", "~root", "%u002e"]
        for name in names:
            for v in values:
                tgt = self.target(op_id, {name: v})
                path = tgt.split("?")[0]
                # keywarden routes on the raw REQUEST_URI, decoding each segment on its
                # own: a dot or an encoded slash stays inside its parameter, so the
                # request stays with its operation's face and never reaches another
                expect, face = "4xx", face_of_path(path)
                self.add("paths", op_id, method, tgt, self.auth + (self.json_ct if body else []),
                         body, expect=expect, face=face, lighttpd_ok=True,
                         note="{%s} = %s" % (name, v if len(v) < 40 else v[:10] + "..."))

    # -- query parameters
    def query_cases(self, op_id):
        method, _, op = OPS[op_id]
        prms = [resolve(p) for p in op.get("parameters", [])]
        prms = [p for p in prms if p["in"] == "query"]
        if not prms:
            return
        body = self.plain_body(op_id)
        plausible = dict(self.fx["query"].get(op_id, {}))
        for p in prms:
            s = resolve(p["schema"])
            t = types_of(s)
            hostile = []
            if "integer" in t:
                hostile += ["abc", "1.5", "", "1e400", "99999999999999999999999", "-1", "0",
                            "0x10", "%201", "1%20", "NaN", "Infinity", "1e3", "--1", "%2B1a"]
            elif "boolean" in t:
                hostile += ["maybe", "2", "", "yes", "truee", "%00true", "null"]
            elif "enum" in s:
                hostile += ["bogus", "", "CREATED", "created%00"]
            else:
                hostile += ["x" * (s.get("maxLength", 256) + 1)]
                if s.get("minLength"):
                    hostile += [""]
            hostile += ["%00", "a%00b", "%ff", "%c0%af", "%ed%a0%80", "%zz", "%4", "%"]
            if p["name"] == "key":
                hostile = []    # key_ref_cases sends keys of every shape; here only repeated
            for v in hostile:
                # lighttpd re-encodes a malformed escape (%zz becomes %25zz), so keywarden
                # reads the text "%zz": a string parameter may take it (the socket
                # cases send it raw)
                texty = v in ("%zz", "%4", "%") and "string" in t and "enum" not in s
                q = dict(plausible)
                q.pop(p["name"], None)
                qs = urllib.parse.urlencode(q)
                qs = (qs + "&" if qs else "") + p["name"] + "=" + v
                self.add("query", op_id, method, self.target(op_id, query=qs),
                         self.auth + (self.json_ct if body else []), body,
                         expect="any" if texty else "valid", lighttpd_ok=True,
                         note="%s=%s" % (p["name"], v if len(v) < 40 else v[:10] + "..."))
            good = plausible.get(p["name"]) or minimal(s)
            good = str(good).lower() if isinstance(good, bool) else str(good)
            q = dict(plausible)
            q.pop(p["name"], None)
            qs = urllib.parse.urlencode(q)
            rep = "%s=%s&%s=%s" % (p["name"], urllib.parse.quote(good), p["name"],
                                   urllib.parse.quote(good))
            self.add("query", op_id, method,
                     self.target(op_id, query=(qs + "&" if qs else "") + rep),
                     self.auth + (self.json_ct if body else []), body, expect="valid",
                     note="%s repeated" % p["name"])

    # -- every op: the body cap applies before anything is read
    def cap_cases(self, op_id):
        method, _, op = OPS[op_id]
        over = b'{"pad": "' + b"x" * MAX_BODY + b'"}'
        self.add("size", op_id, method, self.target(op_id), self.auth + self.json_ct, over,
                 expect={413}, lighttpd_ok=method in ("GET", "HEAD"),
                 note="a body over KEYWARDEN_MAX_BODY")

    # -- methods
    def method_cases(self):
        seen = set()
        for op_id, (_, tpl, _) in OPS.items():
            if tpl in seen:
                continue
            seen.add(tpl)
            tgt = self.target(op_id).split("?")[0]
            allowed = routes_for(tgt)    # /keys/select is also /keys/{key_id}
            for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
                if m in allowed:
                    continue
                body = None if m in ("GET", "OPTIONS") else b"{}"
                self.add("methods", op_id, m, tgt, self.auth + (self.json_ct if body else []),
                         body, expect={405}, allow=allowed, face=face_of_path(tgt),
                         note="%s on %s" % (m, tpl))


# ---------------------------------------------------------------- judging

def judge(c, global_secrets):
    """The problems of one case's answer (empty when it is as it must be)."""
    a = c.answer
    probs = []
    if a.status is None:
        return ["dropped connection: %s" % a.error]
    if a.status >= 500:
        probs.append("5xx")
    from_lighttpd = "application/json" not in a.headers.get("content-type", "") and \
        a.json is None
    if from_lighttpd:
        if not (c.lighttpd_ok and 400 <= a.status < 500):
            probs.append("an answer that is not keywarden's JSON")
    else:
        want = c.expect
        if want == "4xx" and not 400 <= a.status < 500:
            probs.append("status %d, want a 4xx" % a.status)
        elif want == "verdict":
            j = a.json if isinstance(a.json, dict) else {}
            if not ((a.status == 200 and j.get("valid") is False) or 400 <= a.status < 500):
                probs.append("status %d, want a refused verdict or a 4xx" % a.status)
        elif isinstance(want, set) and a.status not in want:
            probs.append("status %d, want %s" % (a.status, sorted(want)))
        if a.status >= 400:
            p = envelope_problem(c.face, a.status, a.json)
            if p:
                probs.append("wrong envelope: want %s's, got %s (%s)" %
                             (c.face, looks_like(a.json), p))
    if c.allow is not None and a.status == 405 and not from_lighttpd:
        got = {m.strip() for m in a.headers.get("allow", "").split(",") if m.strip()}
        if got != c.allow:
            probs.append("Allow %r, want %s" % (a.headers.get("allow"), sorted(c.allow)))
    # /key/bulk_update names each item by "key" as the caller sent it (LiteLLM's documented
    # answer, to the caller who sent it, like /key/info's "key"): not an echo into an error
    echoes_by_design = c.op == "key_bulk_update" and a.status == 200
    for s in c.secrets + global_secrets:
        esc = json.dumps(s.decode("utf-8", "replace"))[1:-1].encode()
        if not echoes_by_design and (s in a.raw or (esc != s and esc in a.raw)):
            probs.append("echoes a secret (%s)" % _show(s, 40))
    return probs


# ---------------------------------------------------------------- the authorizer

def authorizer_cases(srv, fx):
    """(name, params, expected statuses, secrets) for FastCGI AUTHORIZER requests."""
    out = []
    route = "/v1/chat/completions"

    def add(name, headers, expect, uri=route, secrets=(), extra=None, drop=()):
        params = {
            "GATEWAY_INTERFACE": "CGI/1.1", "SERVER_SOFTWARE": "contract_hostile.t",
            "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "127.0.0.1",
            "SERVER_ADDR": "127.0.0.1", "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "40000", "REQUEST_METHOD": "POST", "REQUEST_URI": uri,
            "SCRIPT_NAME": "", "PATH_INFO": b(uri).split(b"?")[0],
            "QUERY_STRING": b(uri).split(b"?", 1)[1] if b"?" in b(uri) else b"",
        }
        for k in drop:
            params.pop(k, None)
        for name_, value in headers:
            params[b"HTTP_" + b(name_).upper().replace(b"-", b"_")] = value
        params.update(extra or {})
        out.append((name, params, expect, [b(s) for s in secrets if len(b(s)) >= 8]))

    unknown = "sk-never-issued-authz-0000"
    ka, km, ks = fx["K_auth"], fx["K_model"], fx["K_spent"]
    bad_keys = [
        ("Bearer sk-" + "a" * 60000, "a 60 KB key"),
        ("Bearer sk-" + "a" * 200000, "a 200 KB key"),
        (b"Bearer sk-\xff\xfe\x80", "a non-UTF-8 key"),
        (b"Bearer sk-abc\x00def", "a NUL in the key"),
        (b"Bearer \x00" + b(ka), "a NUL before a good key"),
        ("Bearer ", "an empty Bearer"),
        ("Bearer " + sha(ka), "a stored key's SHA-256"),
        ("Bearer sk-kw1_" + "A" * 43, "forged token"),
        ("Bearer sk-kw1_" + "\u00e9" * 3000, "a long non-ASCII token"),
        ("Bearer " + "\u202e" * 100, "bidi overrides"),
        (b"Bearer " + b"\x01\x02\x7f" * 50, "controls"),
    ]
    for value, note in bad_keys:
        add("Authorization: " + note, [("Authorization", value)], {401}, secrets=[value[7:]])
        add("x-api-key: " + note, [("x-api-key", b(value)[7:])], {401}, secrets=[value[7:]])
    for hname in ("api-key", "x-litellm-api-key"):
        add(hname + ": a 60 KB key", [(hname, "sk-" + "z" * 60000)], {401})
        add(hname + ": non-UTF-8", [(hname, b"sk-\xc0\xaf\xed\xa0\x80")], {401})
    add("no credential", [], {401})
    add("no REQUEST_URI, unknown key", [("Authorization", "Bearer " + unknown)], {401},
        drop=("REQUEST_URI", "PATH_INFO"), secrets=[unknown])
    add("500 extra headers", [("Authorization", "Bearer " + unknown)] +
        [("X-Junk-%d" % i, "v" * 100) for i in range(500)], {401}, secrets=[unknown])
    add("a non-UTF-8 header name", [("Authorization", "Bearer " + unknown), (b"\xff\xfe", "x")],
        {401}, secrets=[unknown])
    add("an empty header name", [("Authorization", "Bearer " + unknown)], {401},
        extra={b"": b"x", b"HTTP_": b"y"}, secrets=[unknown])
    # a key limited to gpt-4 on /v1/chat/completions: hostile models are 401 (LiteLLM's answer
    # to a model the key may not use), hostile routes 403
    auth = [("Authorization", "Bearer " + ka)]
    for value, note in [("x" * 60000, "a 60 KB model"), (b"\xff\xfe", "a non-UTF-8 model"),
                        (b"x\x00gpt-4", "a NUL before the model"), ("gpt-4 ", "gpt-4 and a space"),
                        ("GPT-4", "GPT-4"), ("gpt-4/../gpt-3.5", "a model with .."),
                        ("\u202egpt-4", "a bidi override"), ("*", "*")]:
        add("x-model: " + note, auth + [("x-model", value)], {401}, secrets=[ka])
    # a path the server would normalise, or could not decode, is refused (400) before the key
    for uri, note, status in [
            ("/v1/chat/completions/../../admin", "a route with ..", 400),
            (b"/v1/\xff\xfe", "a non-UTF-8 route", 400), ("/v1/x%00", "an encoded NUL", 400),
            ("/v1/" + "a" * 60000, "a 60 KB route", 403), ("", "an empty route", 400),
            ("v1/chat/completions", "a route without /", 400),
            ("/v1/chat/completions%2f..%2f..%2fkey%2fgenerate", "encoded slashes", 400),
            ("/V1/CHAT/COMPLETIONS", "upper case", 403), ("//v1/chat/completions", "//", 403),
            ("/openai/deployments/%ff/chat/completions", "an undecodable deployment", 400),
            ("/openai/deployments/" + "d" * 60000 + "/chat", "a 60 KB deployment", 401)]:
        add("route: " + note, auth + [("x-model", "gpt-4")], {status}, uri=uri, secrets=[ka])
    # a key limited to gpt-4 (no route limit): a model named in the path must be checked, and
    # one outside the key's list is 401 (LiteLLM's _can_object_call_model)
    mauth = [("Authorization", "Bearer " + km)]
    for uri, note, status in [
            ("/openai/deployments/%ff/chat/completions", "an undecodable deployment", 400),
            ("/openai/deployments/gpt-3.5%00/chat/completions", "a deployment with %00", 400),
            ("/openai/deployments/%e2%82/chat/completions", "a truncated UTF-8 deployment", 400),
            ("/openai/deployments/gpt%zz/chat/completions", "a malformed escape", 400),
            ("/openai/deployments/gpt-3.5/chat/completions", "another model", 401)]:
        add("deployment: " + note, mauth, {status}, uri=uri, secrets=[km])
    # a key whose budget is spent: hostile models still get the 400 budget_exceeded envelope
    # (LiteLLM's answer to a spent budget); a request id that /key/usage could not name
    # (RequestId: 1 to 128 characters of UTF-8) is a 400 naming x-request-id before anything
    # else, even on a good key
    sauth = [("Authorization", "Bearer " + ks)]
    for value, note, expect in [
            ("r" * 60000, "a 60 KB request id", {400}),
            (b"\xff\xfe", "a non-UTF-8 request id", {400}),
            (b"id\x00tail", "a NUL in the request id (read as \"id\")", {400}),
            ("", "an empty request id", {400}),
            ("r" * 129, "129 characters", {400}),
            ("\u00e4" * 129, "129 two-byte characters", {400}),
            ("\u00e4" * 128, "128 two-byte characters", {400}),
            ("\r\nX-Injected: 1", "CR LF", {400})]:
        add("x-request-id: " + note, sauth + [("x-request-id", value)], expect, secrets=[ks])
    add("x-request-id: 129 characters on a good key", auth + [("x-model", "gpt-4"),
        ("x-request-id", "r" * 129)], {400}, secrets=[ka])
    add("spent key, a 60 KB model", sauth + [("x-model", "m" * 60000)], {400}, secrets=[ks])
    return out


def run_authorizer(srv, item):
    name, params, expect, secrets = item
    try:
        r = fcgi.request(fcgi.socket_path(srv), params, role=fcgi.AUTHORIZER, timeout=30)
    except (fcgi.FastCGIError, OSError) as e:
        return item, None, str(e)
    return item, r, None


def judge_authorizer(item, r, err, global_secrets):
    name, params, expect, secrets = item
    if r is None:
        return ["dropped: %s" % err]
    probs = []
    if r.status >= 500:
        probs.append("5xx")
    if r.status not in expect:
        probs.append("status %d, want %s" % (r.status, sorted(expect)))
    if r.status != 200:
        try:
            j = json.loads(r.body)
        except ValueError:
            j = None
        p = envelope_problem("litellm", r.status, j)
        if p:
            probs.append("wrong envelope: " + p)
    raw = json.dumps(r.headers).encode() + r.body
    for s in secrets + global_secrets:
        if s in raw or s in r.body:
            probs.append("echoes a secret (%s)" % _show(s, 40))
    return probs


def responder_cases(cat):
    """Hostile CGI parameters for the RESPONDER role, straight to the socket: what lighttpd
    refuses or rewrites itself (a GET with a body, a malformed escape) reaches keywarden
    here as sent."""
    base = fcgi.http_params("GET", "/health")
    out = []
    auth = {"Authorization": "Bearer " + cat.master, "Content-Type": "application/json"}
    over = b'{"pad": "' + b"x" * MAX_BODY + b'"}'
    for op_id, (method, tpl, _) in OPS.items():
        out.append(("%s %s: a body over KEYWARDEN_MAX_BODY" % (method, tpl),
                    fcgi.http_params(method, cat.target(op_id), auth, over), over, {413}))
    for uri in ["/key/list?user_id=%zz", "/key/list?key_alias=%4", "/key/list?team_id=%",
                "/key/aliases?search=%zz", "/audit?object_id=%zz", "/team/list?user_id=%4",
                "/key/list?page=%zz", "/key/info?key=%zz", "/key/list?user_id=%00",
                "/key/list?user_id=%ff", "/team/info?team_id=%c0%af", "/audit?action=%00"]:
        out.append(("GET %s: a malformed escape" % uri, fcgi.http_params("GET", uri, auth),
                    b"", {400}))

    def add(name, over, stdin=b"", expect=(400,), drop=()):
        p = dict(base)
        for k in drop:
            p.pop(k, None)
        p.update(over)
        out.append((name, p, stdin, set(expect)))

    post = {"REQUEST_METHOD": "POST", "REQUEST_URI": "/key/generate", "PATH_INFO": "/key/generate",
            "CONTENT_TYPE": "application/json"}
    for cl in ["abc", "-1", "99999999999999999999999", "1e3", " 12", "12 ", "0x10", "+5",
               "18446744073709551616", ""]:
        add("CONTENT_LENGTH %r" % cl, dict(post, CONTENT_LENGTH=cl), b"{}",
            expect=(400, 401, 413, 422))
    add("CONTENT_LENGTH above the body", dict(post, CONTENT_LENGTH="100"), b"{}",
        expect=(400, 401))
    add("no REQUEST_METHOD", {}, drop=("REQUEST_METHOD",), expect=(200,))
    add("a bogus REQUEST_METHOD", {"REQUEST_METHOD": "BREW"}, expect=(405,))
    add("a 60 KB REQUEST_METHOD", {"REQUEST_METHOD": "G" * 60000}, expect=(405,))
    add("a non-UTF-8 PATH_INFO", {"PATH_INFO": b"/\xff\xfe", "REQUEST_URI": b"/\xff\xfe"})
    add("a raw REQUEST_URI with %00", {"PATH_INFO": "", "REQUEST_URI": "/he%00alth"})
    add("a raw REQUEST_URI with %ff", {"PATH_INFO": "", "REQUEST_URI": "/key/%ff/regenerate"},
        expect=(400,))
    add("a raw REQUEST_URI with a malformed escape", {"PATH_INFO": "", "REQUEST_URI": "/he%zzalth"})
    add("no path at all", {"PATH_INFO": "", "REQUEST_URI": "", "SCRIPT_NAME": ""}, expect=(404,))
    add("a relative path", {"PATH_INFO": "health", "REQUEST_URI": "health"}, expect=(404,))
    add("a 200 KB path", {"PATH_INFO": "/" + "a/" * 100000, "REQUEST_URI": "/" + "a/" * 100000},
        expect=(404,))
    add("100000 query pairs", {"PATH_INFO": "/key/list", "REQUEST_URI": "/key/list",
                               "QUERY_STRING": "&".join(["a=1"] * 100000)}, expect=(401,))
    add("20000 empty query pairs", {"PATH_INFO": "/key/list", "REQUEST_URI": "/key/list",
                                    "QUERY_STRING": "&" * 20000}, expect=(401,))
    return out


def run_responder(srv, item):
    name, params, stdin, expect = item
    try:
        r = fcgi.request(fcgi.socket_path(srv), params, role=fcgi.RESPONDER, stdin=stdin,
                         timeout=30)
    except (fcgi.FastCGIError, OSError) as e:
        return item, None, str(e)
    return item, r, None


# ---------------------------------------------------------------- afterwards

def aftermath(srv, fx, global_secrets):
    """Every list an admin reads back answers 200 with valid UTF-8 JSON and no secret: a
    hostile value that was stored must not poison the answers that show it later."""
    auth = [("Authorization", "Bearer " + srv.master_key)]
    targets = ["/key/list?return_full_object=true&size=100", "/key/aliases?size=100",
               "/team/list", "/organization/list", "/user/info?user_id=hostile-user",
               "/team/info?team_id=hostile-team", "/organization/info?organization_id=hostile-org",
               "/api/providers", "/api/keys", "/api/providers/openai/keys", "/api/v1/api_keys",
               "/api/v1/api_keys/rate_limits/log"]
    first = http(srv.port, "GET", "/audit?page_size=100", auth)
    pages = 1
    try:
        pages = min(int(json.loads(first.body.decode("utf-8"))["total_pages"]), 100)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    targets += ["/audit?page_size=100&page=%d" % n for n in range(1, pages + 1)]
    bad = []
    for tgt in targets:
        a = http(srv.port, "GET", tgt, auth)
        why, near = None, None
        if a.status != 200:
            why = "status %s" % a.status
        else:
            try:
                json.loads(a.body.decode("utf-8"))
            except UnicodeDecodeError as e:
                why = "not UTF-8: %s" % e
                near = repr(a.body[max(0, e.start - 100):e.end + 20])
            except ValueError as e:
                why = "not JSON: %s" % e
        if why is None:
            for sec in global_secrets:
                if sec in a.raw:
                    why = "carries a secret (%s)" % _show(sec, 40)
        if why:
            bad.append({"target": tgt, "problem": why, "answer": a.short()[:300],
                        "near": near})
    tap.ok(not bad, "after the catalogue, %d reads of lists and the audit trail answer 200 "
           "with UTF-8 JSON and no secret" % len(targets), bad[:10] if bad else None)
    return bad


# ---------------------------------------------------------------- main

def setup(srv):
    fx = {}

    def ok(r, what):
        if r.status != 200 or not isinstance(r.json, dict):
            tap.bail("setup: %s answered %r" % (what, r))
        return r.json

    fx["K_path"] = ok(srv.admin("POST", "/key/generate", {"key_alias": "hostile-path"}),
                      "key_generate")["key"]
    fx["K_auth"] = ok(srv.admin("POST", "/key/generate",
                                {"models": ["gpt-4"], "allowed_routes": ["/v1/chat/completions"]}),
                      "key_generate")["key"]
    fx["K_model"] = ok(srv.admin("POST", "/key/generate", {"models": ["gpt-4"]}),
                       "key_generate")["key"]
    fx["K_spent"] = ok(srv.admin("POST", "/key/generate", {"max_budget": 0}),
                       "key_generate")["key"]
    pk = ok(srv.admin("POST", "/api/providers/openai/keys",
                      {"name": "hostile-pk", "value": PROVIDER_SECRET}), "provider_key_create")
    ven = ok(srv.admin("POST", "/api/v1/api_keys",
                       {"apiKeyType": "ADMIN", "description": "hostile"}), "venice_key_create")
    ok(srv.admin("POST", "/organization/new",
                 {"organization_id": "hostile-org", "organization_alias": "hostile"}),
       "organization_new")
    ok(srv.admin("POST", "/team/new", {"team_id": "hostile-team"}), "team_new")
    user = ok(srv.admin("POST", "/user/new", {"user_id": "hostile-user"}), "user_new")
    fx["venice_key"] = ven["data"]["apiKey"]
    fx["user_key"] = user.get("key")
    # {key} is a key that does not exist: a body that wrongly passes validation must not
    # regenerate the one key every other case names (it shows as a 404 instead of a 422)
    fx["path"] = {"key": sha("sk-hostile-no-such-key-000"), "provider": "openai",
                  "key_id": pk["id"], "id": ven["data"]["id"], "org": "hostile-org",
                  "deployment": "gpt-4"}
    fx["query"] = {
        "venice_key_delete": {"id": ven["data"]["id"]},
        "organization_info": {"organization_id": "hostile-org"},
        "team_info": {"team_id": "hostile-team"},
        "user_info": {"user_id": "hostile-user"},
        "budget_settings": {"budget_id": "hostile-budget"},
        "customer_info": {"end_user_id": "hostile-customer"},
    }
    return fx


def main():
    env = {"KEYWARDEN_MAX_BODY": str(MAX_BODY), "KEYWARDEN_PROVISION_RPM": "1000000"}
    t0 = time.time()
    with Server(env=env) as srv:
        fx = setup(srv)
        secrets = [srv.master_key, fx["K_path"], fx["K_auth"], fx["K_model"], fx["K_spent"],
                   PROVIDER_SECRET, fx["venice_key"], fx["user_key"]]
        global_secrets = [b(s) for s in secrets if s]
        workers_before = srv.workers()
        tap.ok(len(workers_before) >= 1, "workers are running", workers_before)

        cat = Catalogue(srv, fx)
        for op_id in OPS:
            cat.body_cases(op_id)
            cat.credential_cases(op_id)
            cat.path_cases(op_id)
            cat.query_cases(op_id)
            cat.cap_cases(op_id)
        cat.key_ref_cases()
        cat.method_cases()
        authz = authorizer_cases(srv, fx)
        resp = responder_cases(cat)
        tap.diag("%d HTTP requests, %d AUTHORIZER and %d RESPONDER requests to the socket" %
                 (len(cat.cases), len(authz), len(resp)))

        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            def one(c):
                c.answer = http(srv.port, c.method, c.target, c.headers, c.body, c.chunked)
                return c
            list(pool.map(one, cat.cases))
            authz_results = list(pool.map(lambda it: run_authorizer(srv, it), authz))
            resp_results = list(pool.map(lambda it: run_responder(srv, it), resp))
        t_run = time.time() - t0

        # judge, one test point per operation and kind
        groups = collections.OrderedDict()
        failures = []
        counts = collections.Counter()
        statuses = collections.Counter()
        lighttpd_answers = collections.Counter()
        for c in cat.cases:
            probs = judge(c, global_secrets)
            key = (c.cat, c.op)
            groups.setdefault(key, [])
            counts["requests"] += 1
            counts["cat:" + c.cat] += 1
            a = c.answer
            statuses[a.status if a.status is not None else "dropped"] += 1
            if a.status is not None and a.json is None and \
                    "application/json" not in a.headers.get("content-type", ""):
                lighttpd_answers["%s %d" % (c.cat, a.status)] += 1
            if probs:
                d = c.describe()
                d["op"], d["category"], d["problems"] = c.op, c.cat, probs
                groups[key].append(d)
                failures.append(d)
                for p in probs:
                    counts["problem:" + p.split(":")[0].split(",")[0].split(" (")[0]] += 1
        for (category, op_id), probs in groups.items():
            n = sum(1 for c in cat.cases if c.cat == category and c.op == op_id)
            tap.ok(not probs, "%s %s: %d hostile requests (%s)" %
                   (OPS[op_id][0], OPS[op_id][1], n, category),
                   {"failed": len(probs), "requests": probs[:25]} if probs else None)

        afail = []
        for item, r, err in authz_results:
            probs = judge_authorizer(item, r, err, global_secrets)
            counts["requests"] += 1
            counts["cat:authorizer"] += 1
            statuses[r.status if r is not None else "dropped"] += 1
            if probs:
                d = {"category": "authorizer", "note": item[0], "problems": probs,
                     "params": {_show(k, 40): _show(b(v), 80) for k, v in item[1].items()
                                if b(k).startswith(b"HTTP_") or k in ("REQUEST_URI",)},
                     "expected": sorted(item[2]),
                     "answer": None if r is None else "%d %s %s" % (
                         r.status, json.dumps(r.headers), _show(r.body, 300))}
                afail.append(d)
                failures.append(d)
                for p in probs:
                    counts["problem:" + p.split(":")[0].split(",")[0].split(" (")[0]] += 1
        tap.ok(not afail, "AUTHORIZER: %d requests with hostile headers get 400/401/403/429" %
               len(authz), {"failed": len(afail), "requests": afail} if afail else None)

        rfail = []
        for (name, params, stdin, expect), r, err in resp_results:
            counts["requests"] += 1
            counts["cat:responder"] += 1
            statuses[r.status if r is not None else "dropped"] += 1
            probs = []
            if r is None:
                probs.append("dropped: %s" % err)
            else:
                if r.status not in expect:
                    probs.append("status %d, want %s" % (r.status, sorted(expect)))
                if r.status >= 400:
                    try:
                        j = json.loads(r.body)
                    except ValueError:
                        j = None
                    face = face_of_path(b(params.get("PATH_INFO") or params.get("REQUEST_URI")
                                          or b"/").decode("utf-8", "replace"))
                    p = envelope_problem(face, r.status, j)
                    if p:
                        probs.append("wrong envelope: " + p)
            if probs:
                d = {"category": "responder", "note": name, "problems": probs,
                     "answer": None if r is None else "%d %s" % (r.status, _show(r.body, 300))}
                rfail.append(d)
                failures.append(d)
                for p in probs:
                    counts["problem:" + p.split(":")[0].split(",")[0].split(" (")[0]] += 1
        tap.ok(not rfail, "RESPONDER: %d requests with hostile CGI parameters get a 4xx envelope"
               % len(resp), {"failed": len(rfail), "requests": rfail} if rfail else None)

        # what the hostile requests left in the store must still read back as JSON
        aftermath(srv, fx, global_secrets)

        # the server afterwards
        alive = srv.request("GET", "/health")
        tap.eq(alive.status, 200, "the server still answers /health")
        workers_after = srv.workers()
        tap.eq(len(workers_after), len(workers_before), "as many workers as before")
        tap.eq(workers_after, workers_before,
               "the same workers as before: none died and was replaced")
        srv.stop()
        log = srv.read_log()
        died = [line for line in log.splitlines() if "killed by signal" in line or
                "exited with status" in line]
        tap.ok(not died, "no worker died", died[:20])
        sanitizer = [m for m in ("ERROR: AddressSanitizer", "runtime error:",
                                 "ERROR: LeakSanitizer") if m in log]
        tap.ok(not sanitizer, "no sanitizer report in the server log",
               log[-4000:] if sanitizer else None)
        presented = {s for c in cat.cases for s in c.secrets}
        leaked = [_show(s, 40) for s in set(global_secrets) | presented
                  if s in log.encode("utf-8", "surrogateescape")]
        tap.ok(not leaked, "no key or secret in the server log", leaked)

        counts["seconds"] = round(time.time() - t0, 1)
        tap.diag("%d requests in %.1f s (%.1f s sending); statuses %s" %
                 (counts["requests"], counts["seconds"], t_run,
                  json.dumps(dict(sorted(statuses.items(), key=str)))))
        tap.diag("per kind: " + json.dumps({k[4:]: v for k, v in counts.items()
                                            if k.startswith("cat:")}))
        tap.diag("answered by lighttpd itself (4xx, not keywarden's JSON): " +
                 json.dumps(dict(lighttpd_answers)))
        tap.diag("problems: " + json.dumps({k[8:]: v for k, v in counts.items()
                                            if k.startswith("problem:")}))
        report = os.environ.get("KW_HOSTILE_REPORT")
        if report:
            with open(report, "w") as f:
                json.dump({"counts": counts, "statuses": {str(k): v for k, v in statuses.items()},
                           "lighttpd": lighttpd_answers, "failures": failures}, f, indent=1)


tap.run(main)
