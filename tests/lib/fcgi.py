"""fcgi.py: a minimal FastCGI 1.0 client, to talk to keywarden's socket without a web server.

lighttpd consumes what an AUTHORIZER answers (the Variable-* headers become environment
of the request it passes on), so the tests speak FastCGI themselves to see it:

    status, headers, body = fcgi.authorize(srv, "GET", "/v1/models",
                                           {"Authorization": "Bearer sk-..."})

(fcgi.request() takes any socket path, params and role; fcgi.begin() and fcgi.finish()
split one in two, to hold a worker in a request whose body has not all arrived.)

headers is a dict with lower-cased names (a repeated header's values joined with ", "),
body is bytes.  One request per connection (FCGI_KEEP_CONN is not set), request id 1."""
import glob
import json
import os
import socket
import struct

VERSION = 1
BEGIN_REQUEST, ABORT_REQUEST, END_REQUEST, PARAMS, STDIN, STDOUT, STDERR = 1, 2, 3, 4, 5, 6, 7
RESPONDER, AUTHORIZER, FILTER = 1, 2, 3
ROLE_NAMES = {RESPONDER: "RESPONDER", AUTHORIZER: "AUTHORIZER", FILTER: "FILTER"}
REQUEST_COMPLETE, CANT_MPX_CONN, OVERLOADED, UNKNOWN_ROLE = 0, 1, 2, 3
MAX_CONTENT = 65535


class FastCGIError(Exception):
    pass


def record(rtype, content=b"", request_id=1):
    """One record, padded to a multiple of 8 bytes."""
    if len(content) > MAX_CONTENT:
        raise ValueError("record content too long")
    pad = (8 - len(content) % 8) % 8
    return (struct.pack("!BBHHBx", VERSION, rtype, request_id, len(content), pad) +
            content + b"\0" * pad)


def stream(rtype, data, request_id=1):
    """data as records of rtype, then the empty record that ends the stream."""
    out = b""
    for i in range(0, len(data), MAX_CONTENT):
        out += record(rtype, data[i:i + MAX_CONTENT], request_id)
    return out + record(rtype, b"", request_id)


def _length(n):
    return struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)


def encode_params(params):
    """FastCGI name-value pairs: 1-byte lengths below 128, else 4 bytes with the top bit set."""
    out = b""
    for name, value in params.items():
        n = name.encode() if isinstance(name, str) else name
        v = value.encode() if isinstance(value, str) else value
        out += _length(len(n)) + _length(len(v)) + n + v
    return out


def decode_params(data):
    """The inverse of encode_params (for tests of this module)."""
    out, i = {}, 0

    def length():
        nonlocal i
        if data[i] & 0x80:
            n = struct.unpack("!I", data[i:i + 4])[0] & 0x7FFFFFFF
            i += 4
        else:
            n = data[i]
            i += 1
        return n

    while i < len(data):
        nl = length()
        vl = length()
        out[data[i:i + nl].decode()] = data[i + nl:i + nl + vl].decode()
        i += nl + vl
    return out


def http_params(method, uri, headers=None, body=b"", server_port=80, extra=None):
    """The CGI environment a web server would send for this HTTP request (no body for an
    authorizer; CONTENT_LENGTH only with one)."""
    path = uri.split("?", 1)[0]
    query = uri.split("?", 1)[1] if "?" in uri else ""
    p = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "fcgi.py",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_ADDR": "127.0.0.1",
        "SERVER_PORT": str(server_port),
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "REQUEST_METHOD": method,
        "REQUEST_URI": uri,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
    }
    if body:
        p["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        cgi = name.upper().replace("-", "_")
        if cgi in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            p[cgi] = value
        else:
            p["HTTP_" + cgi] = value
    p.update(extra or {})
    return p


def parse_response(out):
    """CGI output -> (status, headers lower-cased, body).  No Status header means 200."""
    sep = out.find(b"\r\n\r\n")
    if sep >= 0:
        head, body = out[:sep], out[sep + 4:]
        lines = head.split(b"\r\n")
    else:
        sep = out.find(b"\n\n")
        if sep < 0:
            raise FastCGIError("no end of headers in %r" % out[:200])
        head, body = out[:sep], out[sep + 2:]
        lines = head.split(b"\n")
    headers = {}
    for line in lines:
        if not line.strip():
            continue
        if b":" not in line:
            raise FastCGIError("malformed header line %r" % line[:200])
        name, value = line.split(b":", 1)
        name, value = name.decode("latin-1").strip().lower(), value.decode("latin-1").strip()
        headers[name] = headers[name] + ", " + value if name in headers else value
    status = 200
    if "status" in headers:
        try:
            status = int(headers["status"].split()[0])
        except (ValueError, IndexError):
            raise FastCGIError("malformed Status header %r" % headers["status"])
    return status, headers, body


class Result(tuple):
    """(status, headers, body) with the raw streams and the END_REQUEST fields too."""

    def __new__(cls, status, headers, body, stderr=b"", app_status=0, protocol_status=0):
        self = tuple.__new__(cls, (status, headers, body))
        self.stderr, self.app_status, self.protocol_status = stderr, app_status, protocol_status
        return self

    def __repr__(self):
        return "<FastCGI %d %s %r>" % (self[0], json.dumps(self[1], sort_keys=True), self[2][:400])

    @property
    def status(self):
        return self[0]

    @property
    def headers(self):
        return self[1]

    @property
    def body(self):
        return self[2]


def begin(sock_path, params, role=RESPONDER, stdin=b"", timeout=30):
    """Starts a request to the FastCGI application on the unix socket sock_path and sends
    stdin, the start of its body, without ending it: the application's worker stays in the
    request until finish() sends the rest.  Returns the connected socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        msg = record(BEGIN_REQUEST, struct.pack("!HB5x", role, 0))
        msg += stream(PARAMS, encode_params(params))
        for i in range(0, len(stdin), MAX_CONTENT):
            msg += record(STDIN, stdin[i:i + MAX_CONTENT])
        s.sendall(msg)
    except BaseException:
        s.close()
        raise
    return s


def finish(s, stdin=b""):
    """Sends the rest of a begin() request's body, ends it, and reads the answer; returns
    Result(status, headers, body) and closes the socket."""
    try:
        s.sendall(stream(STDIN, stdin))
        out, err = b"", b""
        buf = b""
        while True:
            while len(buf) < 8:
                chunk = s.recv(65536)
                if not chunk:
                    raise FastCGIError("connection closed before END_REQUEST (stdout so far %r)"
                                       % out[:300])
                buf += chunk
            version, rtype, rid, clen, plen = struct.unpack("!BBHHBx", buf[:8])
            if version != VERSION:
                raise FastCGIError("record version %d" % version)
            while len(buf) < 8 + clen + plen:
                chunk = s.recv(65536)
                if not chunk:
                    raise FastCGIError("connection closed inside a record")
                buf += chunk
            content, buf = buf[8:8 + clen], buf[8 + clen + plen:]
            if rid != 1:
                continue    # a management record or another request: not ours
            if rtype == STDOUT:
                out += content
            elif rtype == STDERR:
                err += content
            elif rtype == END_REQUEST:
                app_status, proto = struct.unpack("!IB3x", content[:8])
                if proto != REQUEST_COMPLETE:
                    raise FastCGIError("END_REQUEST protocolStatus %d" % proto)
                status, headers, body = parse_response(out)
                return Result(status, headers, body, err, app_status, proto)
    finally:
        s.close()


def request(sock_path, params, role=RESPONDER, stdin=b"", timeout=30):
    """Sends one request to the FastCGI application listening on the unix socket sock_path
    and returns Result(status, headers, body).  An AUTHORIZER gets an empty STDIN."""
    return finish(begin(sock_path, params, role, timeout=timeout), stdin)


def socket_path(srv):
    """The unix socket lighttpd's bin-path spawn made for keywarden under the Server's
    run_dir: keywarden.sock itself, or keywarden.sock-N (lighttpd numbers the sockets of
    the processes it spawns)."""
    base = os.path.join(srv.run_dir, "keywarden.sock")
    if os.path.exists(base):
        return base
    found = sorted(glob.glob(base + "-*"))
    if found:
        return found[0]
    raise FastCGIError("no keywarden socket under " + srv.run_dir)


def authorize(srv, method, uri, headers=None, timeout=30):
    """An AUTHORIZER request for this HTTP request, straight to keywarden's socket."""
    return request(socket_path(srv), http_params(method, uri, headers), role=AUTHORIZER,
                   timeout=timeout)


def respond(srv, method, uri, headers=None, body=b"", timeout=30):
    """A RESPONDER request, as lighttpd would send it (for checking this client)."""
    if isinstance(body, str):
        body = body.encode()
    return request(socket_path(srv), http_params(method, uri, headers, body), role=RESPONDER,
                   stdin=body, timeout=timeout)
