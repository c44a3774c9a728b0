#!/usr/bin/env python3
"""Memory per open streaming connection through the credential proxy.

Starts a local SSE upstream (one event a second per connection, as a slow completion) and the
given koryphaios binary with `openai` pointed at it, opens N streams through
/api/v1/proxy/openai/stream with a `proxy:openai` key, waits until each has its first event, and
prints the server's resident set before and with the N streams open, and the difference per stream.

    scripts/proxy_memory.py [BINARY] [N]     # default: $CARGO_TARGET_DIR/release/koryphaios, 500
"""
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.environ.get("CARGO_TARGET_DIR", "target"), "release", "koryphaios")
count = int(sys.argv[2]) if len(sys.argv) > 2 else 500


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Events(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            for i in range(120):
                data = f"data: {{\"n\":{i}}}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(1)
        except OSError:
            pass

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer.daemon_threads = True
upstream = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Events)
upstream.request_queue_size = 1024
threading.Thread(target=upstream.serve_forever, daemon=True).start()

port = free_port()
base = f"http://127.0.0.1:{port}"
work = tempfile.mkdtemp()
env = dict(os.environ, KORYPHAIOS_DATA_DIR=f"{work}/data", KORYPHAIOS_PORT=str(port),
           KORYPHAIOS_LOG_LEVEL="warn", KORYPHAIOS_RATE_LIMIT_ENABLED="false",
           KORYPHAIOS_HTTP_MAX_CONNECTIONS=str(count + 100),
           KORYPHAIOS_PROVIDER_OPENAI_BASE_URL=f"http://127.0.0.1:{upstream.server_address[1]}")
server = subprocess.Popen([binary, "serve"], env=env, stderr=subprocess.DEVNULL)


def call(method, path, body=None, headers=None):
    request = urllib.request.Request(base + path, method=method, headers=headers or {},
                                     data=json.dumps(body).encode() if body is not None else None)
    if body is not None:
        request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def rss_kb():
    with open(f"/proc/{server.pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))


try:
    for _ in range(200):
        try:
            urllib.request.urlopen(base + "/health").read()
            break
        except OSError:
            time.sleep(0.05)
    user = {"username": "streams", "password": "load test passphrase 1"}
    call("POST", "/api/auth/register", user)
    token = call("POST", "/api/auth/login", user)["accessToken"]
    auth = {"authorization": f"Bearer {token}"}
    call("POST", "/api/v1/credentials", {"provider": "openai", "credential": "sk-memory-0123456789"}, auth)
    key = call("POST", "/api/v1/keys", {"name": "memory", "scopes": ["proxy:openai"]}, auth)["key"]

    def open_stream():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"GET /api/v1/proxy/openai/stream HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\r\n".encode())
        seen = b""
        while b"data:" not in seen:
            seen += s.recv(4096)
        return s

    for s in [open_stream() for _ in range(20)]:  # warm up pools and allocator
        s.close()
    time.sleep(2)
    before = rss_kb()
    streams = [open_stream() for _ in range(count)]
    time.sleep(3)
    during = rss_kb()
    print(f"streams={count} rss_before={before / 1024:.1f}MB rss_open={during / 1024:.1f}MB "
          f"per_stream={(during - before) / count:.1f}KB")
    for s in streams:
        s.close()
finally:
    server.terminate()
    server.wait()
    upstream.shutdown()
