"""provider.py: a fake model provider over HTTPS on loopback, for the relay's tests.

It speaks OpenAI's API as a provider does, with a test CA it makes itself
(openssl): POST /v1/chat/completions (plain and Server-Sent Events),
/v1/completions, /v1/embeddings, /v1/responses, /v1/images/generations, Azure's
/openai/deployments/{deployment}/chat/completions, and GET /v1/models.  It
records every request it sees (method, path, headers, body) so a test can tell
which credential reached it.

How it answers is chosen by the secret it is called with (Authorization:
Bearer, or Azure's api-key): one that starts with "sk-prov-500" answers 500,
"sk-prov-429" answers 429, anything else answers.  And by fields of the
request body that the relay passes through untouched: fake_delay_ms (a pause
before each streamed chunk, or before a whole answer), fake_hold_ms (a pause after the first chunk),
fake_no_usage (answers without usage, and streams without a usage chunk).

Usage is counted with upstream.count_tokens: prompt tokens 3 a message plus
the words of its content; completion tokens the words of the answer, which is
"You said: " and the last user message.
"""
import base64
import json
import os
import re
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from upstream import count_tokens

AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)(/chat/completions|/completions|/embeddings)$")


def make_ca(directory):
    """A throwaway CA and a certificate for 127.0.0.1 signed by it, in directory.
    Returns (ca.pem, server.pem, server.key)."""
    ca_key, ca = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.pem")
    key, csr = os.path.join(directory, "server.key"), os.path.join(directory, "server.csr")
    cert, ext = os.path.join(directory, "server.pem"), os.path.join(directory, "san.cnf")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
        "-subj", "/CN=keywarden relay test CA")
    run("openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext)
    return ca, cert, key


def secret_of(headers):
    auth = headers.get("authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return (headers.get("api-key") or "").strip()


class Provider:
    """The fake provider; start() serves HTTPS on a free loopback port in a thread."""

    def __init__(self, models=("gpt-4o", "gpt-4o-mini", "text-embedding-3-small")):
        self.dir = tempfile.mkdtemp(prefix="kw-provider-")
        self.ca, cert, key = make_ca(self.dir)
        self.models = list(models)
        self.lock = threading.Lock()
        # {"method", "path", "headers" (lower-case names), "body", "peer" (the client's port:
        # one a connection)}
        self.requests = []
        self.finished = []      # time.time() when each answer's last byte was written
        handler = type("Handler", (_Handler,), {"provider": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = "https://127.0.0.1:%d" % self.port

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def seen(self, path=None):
        with self.lock:
            return [r for r in self.requests if path is None or r["path"].startswith(path)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    provider = None

    def log_message(self, fmt, *args):
        pass

    def _send(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            pass    # the relay gave up waiting (a timeout test)
        with self.provider.lock:
            self.provider.finished.append(time.time())

    def _error(self, status, message, etype="invalid_request_error"):
        self._send(status, {"error": {"message": message, "type": etype, "param": None,
                                      "code": None}})

    def do_GET(self):
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.provider.lock:
            self.provider.requests.append({"method": "GET", "path": self.path,
                                           "headers": headers, "body": None,
                                           "peer": self.client_address[1]})
        if urllib.parse.urlsplit(self.path).path != "/v1/models":
            return self._error(404, "no such route")
        self._send(200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
            for m in self.provider.models]})

    def do_POST(self):
        headers = {k.lower(): v for k, v in self.headers.items()}
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self.provider.lock:
            self.provider.requests.append({"method": "POST", "path": self.path,
                                           "headers": headers, "body": body,
                                           "peer": self.client_address[1]})
        secret = secret_of(headers)
        if secret.startswith("sk-prov-500"):
            return self._error(500, "the fake provider fails this key", "server_error")
        if secret.startswith("sk-prov-429"):
            return self._error(429, "the fake provider rate-limits this key", "rate_limit")
        if not isinstance(body, dict):
            return self._error(400, "the body is not a JSON object")
        path = urllib.parse.urlsplit(self.path).path
        azure = AZURE_PATH.match(path)
        route = azure.group(2) if azure else path[3:] if path.startswith("/v1/") else path
        model = urllib.parse.unquote(azure.group(1)) if azure else body.get("model")
        if route == "/chat/completions":
            return self._chat(body, model)
        if route == "/completions":
            return self._chat(body, model, legacy=True)
        if route == "/embeddings":
            inputs = body.get("input")
            inputs = inputs if isinstance(inputs, list) else [inputs]
            tokens = sum(count_tokens(str(i)) for i in inputs)
            vector = [0.1, 0.2, 0.3]
            if body.get("encoding_format") == "base64":    # the official clients ask so
                vector = base64.b64encode(struct.pack("<3f", *vector)).decode()
            return self._send(200, {"object": "list", "model": model, "data": [
                {"object": "embedding", "index": i, "embedding": vector}
                for i in range(len(inputs))],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
        if route == "/responses":
            return self._responses(body, model)
        if route == "/images/generations":
            return self._send(200, {"created": int(time.time()), "data": [
                {"url": "https://example.invalid/image.png"}] * int(body.get("n") or 1)})
        return self._error(404, "no such route: " + path)

    def _responses(self, body, model):
        text = "You said: " + str(body.get("input"))
        usage = {"input_tokens": count_tokens(str(body.get("input"))),
                 "output_tokens": count_tokens(text)}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        answer = {"id": "resp_" + uuid.uuid4().hex, "object": "response", "created_at": 0,
                  "model": model, "status": "completed", "output": [
                      {"type": "message", "id": "msg_1", "status": "completed",
                       "role": "assistant", "content": [
                           {"type": "output_text", "text": text, "annotations": []}]}],
                  "usage": usage}
        if not body.get("stream"):
            return self._send(200, answer)
        # the Responses API's events; usage rides on the last, response.completed
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        events = [("response.created", {"response": dict(answer, status="in_progress",
                                                          output=[], usage=None)})]
        events += [("response.output_text.delta", {"item_id": "msg_1", "output_index": 0,
                                                   "content_index": 0, "delta": word})
                   for word in re.findall(r"\S+\s*", text)]
        events.append(("response.completed", {"response": answer}))
        for n, (kind, data) in enumerate(events):
            data = dict(data, type=kind, sequence_number=n)
            self.wfile.write(("event: %s\ndata: %s\n\n" % (kind, json.dumps(data))).encode())
            self.wfile.flush()
        with self.provider.lock:
            self.provider.finished.append(time.time())

    def _chat(self, body, model, legacy=False):
        if legacy:
            prompt = str(body.get("prompt") or "")
            prompt_tokens, last = count_tokens(prompt), prompt
        else:
            messages = body.get("messages") or []
            prompt_tokens, last = 0, ""
            for m in messages:
                c = m.get("content") if isinstance(m, dict) else None
                prompt_tokens += 3 + count_tokens(c if isinstance(c, str) else "")
                if isinstance(m, dict) and m.get("role") == "user" and isinstance(c, str):
                    last = c
        content = "You said: " + last
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": count_tokens(content),
                 "total_tokens": prompt_tokens + count_tokens(content)}
        no_usage = bool(body.get("fake_no_usage"))
        answer_id = ("cmpl-" if legacy else "chatcmpl-") + uuid.uuid4().hex[:24]
        if body.get("stream"):
            return self._stream(body, answer_id, model, content, usage, legacy, no_usage)
        time.sleep(float(body.get("fake_delay_ms") or 0) / 1000)
        choice = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if legacy:
            choice["text"] = content
        else:
            choice["message"] = {"role": "assistant", "content": content, "refusal": None}
        answer = {"id": answer_id, "object": "text_completion" if legacy else "chat.completion",
                  "created": int(time.time()), "model": model, "choices": [choice]}
        if not no_usage:
            answer["usage"] = usage
        self._send(200, answer)

    def _stream(self, body, answer_id, model, content, usage, legacy, no_usage):
        delay = float(body.get("fake_delay_ms") or 0) / 1000
        hold = float(body.get("fake_hold_ms") or 0) / 1000
        include = bool((body.get("stream_options") or {}).get("include_usage")) and not no_usage
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta, finish=None, use=None):
            if legacy:
                choices = [] if use else [{"index": 0, "text": delta.get("content", ""),
                                           "finish_reason": finish, "logprobs": None}]
            else:
                choices = [] if use else [{"index": 0, "delta": delta,
                                           "finish_reason": finish, "logprobs": None}]
            c = {"id": answer_id, "object": "text_completion" if legacy else
                 "chat.completion.chunk", "created": int(time.time()), "model": model,
                 "choices": choices}
            if include:
                c["usage"] = use
            try:
                self.wfile.write(b"data: " + json.dumps(c).encode() + b"\n\n")
                self.wfile.flush()
            except OSError:
                pass

        chunk({"role": "assistant", "content": ""})
        for i, word in enumerate(re.findall(r"\S+\s*", content)):
            time.sleep(delay)
            chunk({"content": word})
            if i == 0:
                time.sleep(hold)
        chunk({}, "stop")
        if include:
            chunk(None, use=usage)
        try:
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:
            pass
        with self.provider.lock:
            self.provider.finished.append(time.time())


def configure(srv, prov):
    """Stores, through keywarden's Bifrost face (srv: a kwserver.Server), the providers the
    relay's tests call prov through: "fakeai" (gpt-4o, gpt-4o-mini, text-embedding-3-small,
    gpt-3.5-turbo-instruct, dall-e-3 and the unpriced no-price-model), "flaky" (gpt-4.1: a key
    that answers 500, weighted to come first, and one that answers) and an "azure" key
    (gpt-4.1-mini, deployment gpt41mini-prod).  Returns their secrets by name."""
    import secrets as random

    def admin(path, body):
        r = srv.admin("POST", path, body=body)
        if r.status != 200:
            raise RuntimeError("POST %s: %r" % (path, r))

    secrets = {
        "good": "sk-prov-good-" + random.token_hex(8),
        "flaky-500": "sk-prov-500-" + random.token_hex(8),
        "flaky-good": "sk-prov-good-" + random.token_hex(8),
        "azure": "sk-prov-azure-" + random.token_hex(8),
    }
    for name in ("fakeai", "flaky"):
        admin("/api/providers", {
            "provider": name, "custom_provider_config": {"base_provider_type": "openai"},
            "network_config": {"base_url": prov.url, "extra_headers": {"x-relay-test": name}}})
    admin("/api/providers/fakeai/keys", {
        "name": "good", "value": secrets["good"],
        "models": ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "gpt-3.5-turbo-instruct",
                   "no-price-model", "dall-e-3"]})
    # the failing key nearly always comes first; the relay moves on to the good one
    admin("/api/providers/flaky/keys", {"name": "fails", "value": secrets["flaky-500"],
                                        "models": ["gpt-4.1"], "weight": 1000000})
    admin("/api/providers/flaky/keys", {"name": "answers", "value": secrets["flaky-good"],
                                        "models": ["gpt-4.1"], "weight": 0.000001})
    admin("/api/providers/azure/keys", {
        "name": "azure", "value": secrets["azure"], "models": ["gpt-4.1-mini"],
        "azure_key_config": {"endpoint": prov.url, "api_version": "2024-10-21",
                             "deployments": {"gpt-4.1-mini": "gpt41mini-prod"}}})
    return secrets
