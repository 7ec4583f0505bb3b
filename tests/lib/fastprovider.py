"""fastprovider.py: build/bench-provider (scripts/bench-provider.c), the fake OpenAI provider
in C, on a free loopback port over plain HTTP: fast enough for a benchmark or for hundreds of
calls at once, where tests/lib/provider.py (HTTPS, Python) is for the relay's behaviour.

    with FastProvider(delay_ms=2000) as fp:     # each call takes 2 s, a stream's events spread
        fp.register(srv)                        # the provider and a key for gpt-4o, in keywarden
        ...POST /v1/chat/completions {"model": "gpt-4o", "stream": true} through srv...

Its answer is fixed: content "token " a chunk (CHUNKS of them, default 8) streamed, or
CONTENT plain, and USAGE either way."""
import os
import subprocess

from kwserver import ROOT

BIN = os.environ.get("BENCH_PROVIDER", os.path.join(ROOT, "build", "bench-provider"))
CONTENT = "a fixed answer from the bench provider"
USAGE = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
MODEL = "gpt-4o"    # a model the relay has a price for


class FastProvider:
    def __init__(self, delay_ms=0, chunks=8):
        if not os.path.exists(BIN):
            raise RuntimeError("%s is missing: make build/bench-provider" % BIN)
        self.argv = [BIN, "-d", str(delay_ms), "-c", str(chunks)]
        self.chunks = chunks
        self.proc = None
        self.port = None

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True)
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError("bench-provider did not start: %r" % line)
        self.port = int(line)
        self.url = "http://127.0.0.1:%d" % self.port
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def pid(self):
        return self.proc.pid

    def register(self, srv, name="fast"):
        """Stores the provider and a provider key serving MODEL through the Bifrost face
        (srv: anything with admin(), as kwserver.Server or smoke.Client)."""
        r = srv.admin("POST", "/api/providers", body={
            "provider": name, "custom_provider_config": {"base_provider_type": "openai"},
            "network_config": {"base_url": self.url}})
        if r.status != 200:
            raise RuntimeError("POST /api/providers: %r" % r)
        r = srv.admin("POST", "/api/providers/%s/keys" % name, body={
            "name": name, "value": "sk-fast-provider-key", "models": [MODEL]})
        if r.status != 200:
            raise RuntimeError("POST /api/providers/%s/keys: %r" % (name, r))
