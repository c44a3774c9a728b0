#!/usr/bin/env python3
"""Abuse probe: starts `koryphaios serve` on a temporary data dir on 127.0.0.1 and measures what
the hardening pass promises, printing one line per figure:

  methods   20,000 requests with made-up HTTP methods: RSS growth and /metrics size
  logins    200 concurrent logins for unknown users from distinct client IPs (through a trusted
            proxy): peak RSS, RSS 10 s later, and how long a correct login sent during the flood
            waited for its answer (200, or a fast 503)
  guesses   60 concurrent wrong passwords for one user from one address: how many were verified
            (401) and refused (429); then the owner logs in from another address

    scripts/abuse_probe.py [--binary target/release/koryphaios] [methods logins guesses]

Traffic goes to 127.0.0.1 only, bounded in count and time. Standard library only.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

PASSWORD = "correct horse battery staple"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def request(port, method, path, body=None, headers=None, timeout=30):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {"content-type": "application/json"} if payload else {}
        all_headers.update(headers or {})
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def start(binary, extra_env):
    port = free_port()
    data = tempfile.mkdtemp(prefix="kor-probe-")
    env = dict(os.environ)
    env.update(
        {
            "KORYPHAIOS_DATA_DIR": data,
            "KORYPHAIOS_PORT": str(port),
            "KORYPHAIOS_LOG_LEVEL": "error",
            "KORYPHAIOS_TRUSTED_PROXIES": "127.0.0.1/32",
            "KORYPHAIOS_RATE_LIMIT_IP_PER_MINUTE": "10000000",
            "KORYPHAIOS_RATE_LIMIT_AUTH_PER_MINUTE": "10000000",
        }
    )
    env.update(extra_env)
    process = subprocess.Popen([binary, "serve"], env=env, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            if request(port, "GET", "/health")[0] == 200:
                return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("the server did not start")


def probe_methods(binary):
    process, port = start(binary, {})
    try:
        request(port, "GET", "/metrics")
        before = rss_mb(process.pid)

        def one(n):
            method = "M%08X" % random.getrandbits(32)
            try:
                return request(port, method, f"/health/x{n}")[0]
            except OSError:
                return 0

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(one, range(20_000)))
        after = rss_mb(process.pid)
        size = len(request(port, "GET", "/metrics")[1])
        print(f"methods: RSS {before:.1f} -> {after:.1f} MB (+{after - before:.1f}); /metrics {size / 1024:.1f} KB")
    finally:
        process.kill()


def probe_logins(binary):
    process, port = start(binary, {"KORYPHAIOS_ALLOW_REGISTRATION": "true"})
    try:
        status, _ = request(port, "POST", "/api/auth/register", {"username": "ada", "password": PASSWORD})
        assert status == 201, status
        idle = rss_mb(process.pid)
        peak = [idle]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb(process.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()

        def flood(n):
            headers = {"x-forwarded-for": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"}
            body = {"username": f"nobody{n}", "password": "not the password at all"}
            return request(port, "POST", "/api/auth/login", body, headers)[0]

        def legit():
            time.sleep(0.3)
            started = time.monotonic()
            status, _ = request(port, "POST", "/api/auth/login", {"username": "ada", "password": PASSWORD},
                                {"x-forwarded-for": "192.0.2.1"})
            return status, time.monotonic() - started

        with concurrent.futures.ThreadPoolExecutor(201) as pool:
            owner = pool.submit(legit)
            statuses = list(pool.map(flood, range(200)))
            owner_status, owner_wait = owner.result()
        stop.set()
        sampler.join()
        time.sleep(10)
        later = rss_mb(process.pid)
        counts = {s: statuses.count(s) for s in sorted(set(statuses))}
        print(f"logins: RSS idle {idle:.1f} MB, peak {peak[0]:.1f} MB, 10 s later {later:.1f} MB; "
              f"flood answers {counts}; the owner's login: {owner_status} after {owner_wait:.2f} s")
    finally:
        process.kill()


def probe_guesses(binary):
    process, port = start(binary, {"KORYPHAIOS_ALLOW_REGISTRATION": "true"})
    try:
        request(port, "POST", "/api/auth/register", {"username": "ada", "password": PASSWORD})

        def guess(_):
            return request(port, "POST", "/api/auth/login", {"username": "ada", "password": "wrong password here"},
                           {"x-forwarded-for": "203.0.113.7"})[0]

        with concurrent.futures.ThreadPoolExecutor(60) as pool:
            statuses = list(pool.map(guess, range(60)))
        owner, _ = request(port, "POST", "/api/auth/login", {"username": "ada", "password": PASSWORD},
                           {"x-forwarded-for": "198.51.100.1"})
        print(f"guesses: {statuses.count(401)} verified (401), {statuses.count(429)} refused (429), "
              f"other {len(statuses) - statuses.count(401) - statuses.count(429)}; the owner from elsewhere: {owner}")
    finally:
        process.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/koryphaios")
    parser.add_argument("probes", nargs="*", default=["methods", "logins", "guesses"])
    args = parser.parse_args()
    probes = {"methods": probe_methods, "logins": probe_logins, "guesses": probe_guesses}
    for name in args.probes:
        probes[name](args.binary)


if __name__ == "__main__":
    main()
