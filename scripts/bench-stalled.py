#!/usr/bin/env python3
"""`ocigate serve` while clients stall request bodies (issue #15, point 2), on 127.0.0.1 only.

    scripts/bench-stalled.py [--bin PATH] [--connections 64] [--duration 20] [--pause 1] [--write]

Starts `ocigate serve` (default: $CARGO_TARGET_DIR/release/ocigate, else target/release/ocigate;
build it first with `cargo build --release`) with its default limits, a TLS certificate made
with openssl and a policy with one rule (keys-example's key). Then, for --duration seconds:

- a load generator, a separate process (this script with --attack), keeps --connections TLS
  connections each sending a POST /validate of Content-Length 6 MiB, writing 6 MiB - 64 KiB of
  it and stalling; when the server closes one (408 at the request timeout, 503 when the body
  budget is spent), it opens another after --pause seconds (1 by default; 0 is a reconnect
  storm, which measures TLS handshakes and 6 MiB uploads on the shared CPUs more than the
  limits);
- this process probes `GET /healthz` 10 times a second, each on a new TLS connection (as the
  kubelet does), and posts 5 real AdmissionReviews a second (a Pod CREATE that the policy
  denies, decided without a registry; and a DELETE, allowed), each on a new connection;
- it samples the server's VmRSS every 100 ms.

Reports: peak and final RSS, /healthz latency (p50, p99, max) and failures, reviews answered
and their latency. Targets (issue #15): RSS < 128 MiB, /healthz p99 < 50 ms, reviews answered.
With --write the figures replace the bench-stalled section of BENCHMARKS.md.
"""
import argparse
import importlib.util
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY_LENGTH = 6 << 20
SENT = BODY_LENGTH - (64 << 10)


def default_bin():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "ocigate")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tls_context(ca):
    ctx = ssl.create_default_context(cafile=ca)
    return ctx


def attack(port, ca, connections, duration, pause):
    """The load generator: `connections` stalled bodies, renewed when closed."""
    ctx = tls_context(ca)
    until = time.monotonic() + duration
    chunk = b" " * (64 << 10)
    opened = [0]
    lock = threading.Lock()

    def one():
        while time.monotonic() < until:
            s = None
            try:
                raw = socket.create_connection(("127.0.0.1", port), timeout=5)
                s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                with lock:
                    opened[0] += 1
                s.sendall(("POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {BODY_LENGTH}\r\n\r\n").encode())
                left = SENT
                while left > 0:
                    n = min(left, len(chunk))
                    s.sendall(chunk[:n])
                    left -= n
                # Stalled: wait for the server to answer or close.
                s.settimeout(max(0.1, until - time.monotonic()))
                while s.recv(4096):
                    pass
            except (OSError, ssl.SSLError):
                pass
            finally:
                if s is not None:
                    s.close()
            time.sleep(pause)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 10)
    print(json.dumps({"connections_opened": opened[0]}))


def request(port, ctx, method, path, body=None):
    """One request on a new TLS connection: (status, seconds) or (None, seconds)."""
    t = time.monotonic()
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        s.settimeout(10)
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        s.sendall(head.encode() + b"\r\n" + (body or b""))
        data = b""
        while True:
            got = s.recv(65536)
            if not got:
                break
            data += got
        s.close()
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
        return status, time.monotonic() - t
    except (OSError, ssl.SSLError, ValueError, IndexError):
        return None, time.monotonic() - t


def review(operation, uid):
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "bench"},
           "spec": {"containers": [{"name": "a", "image": "unmatched.example/app:v1"}]}}
    req = {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
           "resource": {"group": "", "version": "v1", "resource": "pods"},
           "name": "p", "namespace": "bench", "operation": operation, "userInfo": {"username": "bench"}}
    req["object" if operation == "CREATE" else "oldObject"] = obj
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req}).encode()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def write_section(text):
    path = os.path.join(ROOT, "BENCHMARKS.md")
    start, end = "<!-- bench-stalled:start -->", "<!-- bench-stalled:end -->"
    with open(path) as f:
        doc = f.read()
    new = f"{start}\n{text}\n{end}"
    if start in doc and end in doc:
        doc = doc[:doc.index(start)] + new + doc[doc.index(end) + len(end):]
    else:
        doc = doc + "\n" + new + "\n"
    with open(path, "w") as f:
        f.write(doc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=default_bin())
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--pause", type=float, default=1.0)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--attack", nargs=2, metavar=("PORT", "CA"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.attack:
        return attack(int(a.attack[0]), a.attack[1], a.connections, a.duration, a.pause)
    if not os.path.exists(a.bin):
        sys.exit(f"bench-stalled: {a.bin} is missing; run cargo build --release")
    with tempfile.TemporaryDirectory() as tmp:
        # The certificate and policy bench-webhook.py writes (keys-example's key, every image
        # of 127.0.0.1).
        spec = importlib.util.spec_from_file_location(
            "bench_webhook", os.path.join(ROOT, "scripts", "bench-webhook.py"))
        bench_webhook = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench_webhook)
        cert, key, policy = bench_webhook.serve_files(tmp, "127.0.0.1")
        port = free_port()
        server = subprocess.Popen([a.bin, "serve", "--policy", policy, "--tls-cert", cert, "--tls-key", key,
                                   "--listen", f"127.0.0.1:{port}", "--metrics-listen", "off"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ctx = tls_context(cert)
            for _ in range(200):
                if request(port, ctx, "GET", "/healthz")[0] == 200:
                    break
                time.sleep(0.05)
            idle = rss_kib(server.pid)
            loader = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--attack", str(port), cert,
                                       "--connections", str(a.connections), "--duration", str(a.duration),
                                       "--pause", str(a.pause)],
                                      stdout=subprocess.PIPE, text=True)
            results = measure(server.pid, port, ctx, a.duration)
            out, _ = loader.communicate(timeout=a.duration + 30)
            results["opened"] = json.loads(out.strip().splitlines()[-1])["connections_opened"]
            results["idle"] = idle
            time.sleep(1)
            results["after"] = rss_kib(server.pid)
        finally:
            server.kill()
            server.wait()
    report(a, results)


def measure(pid, port, ctx, duration):
    rss, health, reviews = [], [], []
    stop = time.monotonic() + duration
    start = time.monotonic()

    def sample():
        while time.monotonic() < stop:
            rss.append(rss_kib(pid))
            time.sleep(0.1)

    def probe():
        while time.monotonic() < stop:
            health.append(request(port, ctx, "GET", "/healthz"))
            time.sleep(0.1)

    def post():
        i = 0
        while time.monotonic() < stop:
            i += 1
            op = "CREATE" if i % 2 else "DELETE"
            reviews.append(request(port, ctx, "POST", "/validate", review(op, f"u-{i}")))
            time.sleep(0.2)

    threads = [threading.Thread(target=f) for f in (sample, probe, post)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The first second is the attack's start-up; percentiles are over the rest too.
    return {"rss": rss, "health": health, "reviews": reviews, "elapsed": time.monotonic() - start}


def report(a, r):
    ok_h = [t * 1000 for s, t in r["health"] if s == 200]
    ok_r = [t * 1000 for s, t in r["reviews"] if s == 200]
    lines = [
        f"Command: `scripts/bench-stalled.py --connections {a.connections} --duration {a.duration:g} --pause {a.pause:g}` "
        f"(binary `{os.path.relpath(a.bin, ROOT)}`, default limits), {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPUs shared with the load generator.",
        "",
        "| | figure |",
        "|---|---|",
        f"| stalled connections opened by the load generator | {r['opened']} |",
        f"| RSS idle / peak / 1 s after | {r['idle'] / 1024:.1f} / {max(r['rss']) / 1024:.1f} / "
        f"{r['after'] / 1024:.1f} MiB |",
        f"| /healthz answered | {len(ok_h)} of {len(r['health'])} |",
        f"| /healthz latency p50 / p99 / max | {pct(ok_h, 50):.1f} / {pct(ok_h, 99):.1f} / "
        f"{max(ok_h, default=float('nan')):.1f} ms |",
        f"| reviews answered (200) | {len(ok_r)} of {len(r['reviews'])} |",
        f"| review latency p50 / p99 | {pct(ok_r, 50):.1f} / {pct(ok_r, 99):.1f} ms |",
    ]
    text = "\n".join(lines)
    print(text)
    if a.write:
        write_section(text)


if __name__ == "__main__":
    main()
