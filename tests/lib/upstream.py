#!/usr/bin/python3
"""upstream.py: a small OpenAI-compatible model server for the gateway recipe's tests.

It answers POST /v1/chat/completions, POST /openai/deployments/{model}/chat/completions
(Azure's path, the model named in the path) and GET /v1/models with OpenAI's shapes,
usage included, and reports each completion's usage to keywarden's POST /key/usage:
the caller's key (read from the forwarded Authorization, x-api-key or api-key header),
the model, the tokens, cost = total_tokens * price_per_token, and the x-request-id
header's value as request_id when there is one.  It authenticates to keywarden with
the service credential it is given (the master key in the tests, or a key whose
record has "permissions": {"verify_keys": true}).

The authorizer in front of it sees no request body, so it checks the model named in
the path or in the x-model header: this server refuses (400) a completion whose body
names another model, and a /v1/ completion without x-model, so that a key's models
list cannot be bypassed by leaving the header out (strict_model=False lifts the latter).

By default the usage is reported before the answer is sent (report_first=True), so a
client that has its answer knows its spend is recorded; report_first=False answers
first and reports afterwards, as a server that does not make its client wait would.

    python3 tests/lib/upstream.py --port 8001 --keywarden http://127.0.0.1:4000 \\
        --service-key "$MASTER_KEY" [--price 0.001] [--bind 127.0.0.1]
"""
import argparse
import contextlib
import http.client
import json
import re
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODELS = ["gpt-4", "gpt-4o-mini", "gpt-3.5-turbo", "claude-3"]
AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")


def count_tokens(text):
    """A stand-in tokenizer: one token per word or punctuation mark."""
    return len(re.findall(r"\w+|[^\w\s]", text or ""))


def caller_key(headers):
    """The key the client presented, as the gateway forwarded it."""
    auth = headers.get("Authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for name in ("x-api-key", "api-key", "x-litellm-api-key"):
        if headers.get(name):
            return headers.get(name).strip()
    return None


class Upstream:
    """The server; start() binds a free port (or the one given) and serves in a thread."""

    def __init__(self, keywarden_url, service_key, price_per_token=0.001, port=0,
                 bind="127.0.0.1", report_first=True, strict_model=True, log=None):
        self.set_keywarden(keywarden_url)
        self.service_key = service_key
        self.price = float(price_per_token)
        self.report_first = report_first
        self.strict_model = strict_model
        self.log = log or sys.stderr
        self.lock = threading.Lock()
        self.requests = []    # (method, path, headers as a dict with lower-case names)
        self.reports = []     # (request body sent to /key/usage, status, answer body)
        self.failed = set()   # the x-upstream-fail-once tags already failed
        handler = type("Handler", (_Handler,), {"upstream": self})
        self.httpd = ThreadingHTTPServer((bind, port), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = None

    def set_keywarden(self, url):
        """Where /key/usage is: keywarden's base URL (the gateway's, through lighttpd)."""
        u = urllib.parse.urlsplit(url or "http://127.0.0.1:4000")
        self.kw_host, self.kw_port = u.hostname, u.port or 80
        self.kw_prefix = u.path.rstrip("/")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def report_usage(self, key, model, usage, request_id):
        """POST /key/usage to keywarden; returns (status, parsed answer or text)."""
        body = {"key": key, "model": model,
                "prompt_tokens": usage["prompt_tokens"],
                "completion_tokens": usage["completion_tokens"],
                "total_tokens": usage["total_tokens"],
                "cost": round(usage["total_tokens"] * self.price, 10)}
        if request_id:
            body["request_id"] = request_id
        status, answer = None, None
        conn = http.client.HTTPConnection(self.kw_host, self.kw_port, timeout=30)
        try:
            conn.request("POST", self.kw_prefix + "/key/usage", body=json.dumps(body),
                         headers={"Authorization": "Bearer " + self.service_key,
                                  "Content-Type": "application/json"})
            r = conn.getresponse()
            status, raw = r.status, r.read()
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = raw.decode("utf-8", "replace")
        except OSError as e:
            answer = "keywarden unreachable: %s" % e
        finally:
            conn.close()
        with self.lock:
            self.reports.append((body, status, answer))
        if status != 200:
            # never the key in a log: its last four characters only
            print("upstream: usage report for sk-...%s answered %s: %s"
                  % ((key or "")[-4:], status, str(answer)[:300]), file=self.log, flush=True)
        return status, answer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "keywarden-test-upstream/1"
    upstream = None  # set by Upstream

    def log_message(self, fmt, *args):  # quiet; the tests read Upstream.requests
        pass

    def _record(self):
        with self.upstream.lock:
            self.upstream.requests.append(
                (self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))

    def _send(self, status, obj, extra=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _error(self, status, message, param=None, code=None):
        self._send(status, {"error": {"message": message, "type": "invalid_request_error",
                                      "param": param, "code": code}})

    def do_GET(self):
        self._record()
        path = urllib.parse.urlsplit(self.path).path
        if path == "/v1/models":
            now = int(time.time())
            return self._send(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": now, "owned_by": "keywarden-test"}
                for m in MODELS]})
        return self._error(404, "no such route: GET " + path)

    def do_POST(self):
        self._record()
        path = urllib.parse.urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        azure = AZURE_PATH.match(path)
        if path != "/v1/chat/completions" and not azure:
            return self._error(404, "no such route: POST " + path)
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._error(400, "the body is not a JSON object")
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(400, "messages must be a non-empty array", "messages")

        # the model the authorizer checked: the path's, else x-model's
        checked = urllib.parse.unquote(azure.group(1)) if azure else self.headers.get("x-model")
        model = req.get("model") or checked
        if azure and req.get("model") not in (None, checked):
            return self._error(400, "the body's model is not the deployment in the path",
                               "model")
        if not azure and checked is not None and model != checked:
            return self._error(400, "the body's model is not the one named in x-model", "model")
        if not azure and checked is None and self.upstream.strict_model:
            return self._error(400, "name the model in the x-model header: the gateway "
                               "checks the key's models against it", "model")
        if not isinstance(model, str) or not model:
            return self._error(400, "model is required", "model")

        last = ""
        prompt_tokens = 0
        for m in messages:
            c = m.get("content") if isinstance(m, dict) else None
            if isinstance(c, list):  # content parts
                c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
            prompt_tokens += 3 + count_tokens(c if isinstance(c, str) else "")
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(c, str):
                last = c
        content = "You said: " + last
        completion_tokens = count_tokens(content)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        request_id = self.headers.get("x-request-id")
        key = caller_key(self.headers)
        # x-upstream-fail-once: TAG makes the first request with that tag fail with 500,
        # as a provider's outage does; the failure is reported as nothing used, which
        # returns the request's slot and lets the client's retry reuse its x-request-id
        tag = self.headers.get("x-upstream-fail-once")
        if tag:
            with self.upstream.lock:
                first = tag not in self.upstream.failed
                self.upstream.failed.add(tag)
            if first:
                if key:
                    self.upstream.report_usage(key, model, {"prompt_tokens": 0,
                                                            "completion_tokens": 0,
                                                            "total_tokens": 0}, request_id)
                return self._send(500, {"error": {"message": "the provider failed",
                                                  "type": "server_error", "param": None,
                                                  "code": None}})
        answer_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        extra = {"x-request-id": request_id or "req_" + uuid.uuid4().hex}

        def report():
            if key:
                self.upstream.report_usage(key, model, usage, request_id)

        if self.upstream.report_first:
            report()
        if req.get("stream"):
            self._stream(answer_id, created, model, content, usage, extra,
                         bool((req.get("stream_options") or {}).get("include_usage")))
        else:
            self._send(200, {
                "id": answer_id, "object": "chat.completion", "created": created,
                "model": model, "system_fingerprint": "fp_keywarden_test",
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": content,
                                         "refusal": None}}],
                "usage": usage}, extra)
        if not self.upstream.report_first:
            report()

    def _stream(self, answer_id, created, model, content, usage, extra, include_usage):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.close_connection = True

        def chunk(delta, finish=None, use=None):
            c = {"id": answer_id, "object": "chat.completion.chunk", "created": created,
                 "model": model, "choices": [] if use else
                 [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
            if include_usage:
                c["usage"] = use
            self.wfile.write(b"data: " + json.dumps(c).encode() + b"\n\n")
            self.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        for word in re.findall(r"\S+\s*", content):
            chunk({"content": word})
        chunk({}, "stop")
        if include_usage:
            chunk(None, use=usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--keywarden", default="http://127.0.0.1:4000",
                    help="keywarden's base URL, where /key/usage is")
    ap.add_argument("--service-key", required=True,
                    help="the credential the reports are sent with")
    ap.add_argument("--price", type=float, default=0.001, help="cost of one token")
    ap.add_argument("--report-after", action="store_true",
                    help="answer first, then report the usage")
    ap.add_argument("--lax-model", action="store_true",
                    help="accept /v1/ completions without an x-model header")
    a = ap.parse_args()
    up = Upstream(a.keywarden, a.service_key, a.price, a.port, a.bind,
                  report_first=not a.report_after, strict_model=not a.lax_model)
    print("upstream: serving on http://%s:%d" % (a.bind, up.port), flush=True)
    try:
        up.httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()


@contextlib.contextmanager
def gateway(price, report=True, **server):
    """A model server on loopback at price a token, and the real lighttpd with keywarden as the
    FastCGI authorizer in front of it (scripts/lighttpd-gateway.conf.in; server: Server's
    other arguments).  With report, the model server reports each request's usage to
    keywarden's /key/usage with the master key.  Yields (srv, up)."""
    from kwserver import Server
    up = Upstream(None, None, price).start()
    try:
        with Server(template="lighttpd-gateway.conf.in",
                    placeholders={"UPSTREAM_HOST": "127.0.0.1", "UPSTREAM_PORT": str(up.port)},
                    **server) as srv:
            if report:
                up.service_key = srv.master_key
                up.set_keywarden("http://127.0.0.1:%d" % srv.port)
            yield srv, up
    finally:
        up.stop()
