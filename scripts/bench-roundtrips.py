#!/usr/bin/env python3
"""Sequential registry round trips of a cold key-based verification, measured through latency.

    scripts/bench-roundtrips.py [--delay-ms MS] [--images N] [--write]

Builds the release binary, starts docker-registry on 127.0.0.1 (free port, temp dir) and, in
front of it, an HTTP proxy (a thread of this script) that holds every request for --delay-ms
before forwarding it and logs when each request came and went. The shipped example image is
pushed into N repositories and each is signed with `ocigate sign` (keys-example/cosign.key)
through the proxy with no delay, so that the signatures name the proxy's address. Then, with
the delay on:

1. `ocigate verify REF --key cosign.pub` as a fresh process for each image (so, cold), and the
   same without delay; (wall with delay - wall without) / delay is the number of round trips
   the verification waited for one after another (its sequential depth); once more for an
   image signed twice (two layers in its `.sig` manifest), and for one signed with
   `--format bundle` (a Sigstore bundle, found through the referrers tag);
2. `ocigate serve`: one AdmissionReview per image, each the first of its image (a cold
   verification in a server that has answered others: what the registry client remembers
   between images, e.g. that the registry has no referrers API, is remembered), by tag and by
   digest, with and without the delay (on different images), compared the same way.

The proxy's log gives the chain: each request with the step it started in (its start time
since the first request, in delays). With --write, the figures replace the section between
the bench-roundtrips markers in BENCHMARKS.md.
"""
import argparse
import http.client
import http.server
import importlib.util
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", file))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bv = load("bench_verify", "bench-verify.py")
bw = load("bench_webhook", "bench-webhook.py")

BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "ocigate")
KEY = os.path.join(ROOT, "keys-example", "cosign.key")
PUB = os.path.join(ROOT, "keys-example", "cosign.pub")
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-connection", "proxy-authenticate", "proxy-authorization"}


class Proxy:
    """A delaying HTTP/1.1 proxy in front of one upstream, with a log of what passed."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.delay = 0.0
        self.log = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One write per response, sent at once: a response written in pieces, Nagle's
            # algorithm and the client's delayed ACK would add 40 ms to some round trips.
            wbufsize = -1

            def setup(self):
                super().setup()
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):
                pass

            def body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length", 0) or 0)
                return self.rfile.read(n) if n else None

            def handle_one(self):
                came = time.perf_counter()
                body = self.body()
                if proxy.delay:
                    time.sleep(proxy.delay)
                up = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                up.request(self.command, self.path, body=body, headers=headers)
                r = up.getresponse()
                data = r.read()
                up.close()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                length = r.getheader("Content-Length")
                if self.command == "HEAD" and length is not None:
                    self.send_header("Content-Length", length)
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                with proxy.lock:
                    proxy.log.append((came, time.perf_counter(), self.command, self.path, r.status))

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_one

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take_log(self):
        with self.lock:
            out, self.log = self.log, []
        return out


def chain(log, delay):
    """The requests of one verification by the step each started in (1 = the first)."""
    if not log:
        return []
    t0 = min(c for c, _, _, _, _ in log)
    steps = {}
    for came, _, method, path, status in sorted(log):
        step = int((came - t0) / delay + 0.5) + 1 if delay else 1
        steps.setdefault(step, []).append(f"{method} {short(path)} {status}")
    return sorted(steps.items())


def short(path):
    path = re.sub(r"sha256([:-])([0-9a-f]{8})[0-9a-f]{56}", r"sha256\1\2…", path)
    return re.sub(r"^/v2/[^?]*?/(manifests|blobs|referrers|tags)/", r"…/\1/", path)


def describe(steps):
    return "; ".join(f"{n}: " + " ∥ ".join(reqs) for n, reqs in steps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=int, default=100)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if not os.path.exists("/usr/bin/docker-registry"):
        sys.exit("bench-roundtrips: docker-registry is missing (apt-get install docker-registry openssl)")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    delay = args.delay_ms / 1000
    env = dict(os.environ, OCIGATE_PASSWORD="ocigate-example", DOCKER_CONFIG="/nonexistent")
    cli, served = [], {"tag": [], "digest": []}
    served_base = {"tag": [], "digest": []}
    with tempfile.TemporaryDirectory() as tmp:
        reg, upstream = bv.start_registry(tmp)
        proxy = Proxy(upstream)
        host = proxy.host
        server = None
        try:
            repos = [f"bench/rt-{i}" for i in range(5 * args.images + 1)]
            digests = {}
            for repo in repos:
                digests[repo] = bv.push_example(upstream, repo)
                subprocess.run([BIN, "sign", f"{host}/{repo}:v1", "--key", KEY, "--registry-plain-http", host],
                               env=env, check=True, capture_output=True)
            two = "bench/rt-two-signatures"
            bv.push_example(upstream, two)
            # Two signatures (two layers, two payloads): signing the same payload again with the
            # same key adds nothing, so the second carries an annotation.
            for extra in ([], ["-a", "second=yes"]):
                subprocess.run([BIN, "sign", f"{host}/{two}:v1", "--key", KEY, "--registry-plain-http", host,
                                *extra], env=env, check=True, capture_output=True)
            bundled = "bench/rt-bundle"
            bv.push_example(upstream, bundled)
            subprocess.run([BIN, "sign", f"{host}/{bundled}:v1", "--key", KEY, "--registry-plain-http", host,
                            "--format", "bundle"], env=env, check=True, capture_output=True)
            proxy.take_log()

            # 1. cold CLI processes
            def verify(repo):
                t = time.perf_counter()
                p = subprocess.run([BIN, "verify", f"{host}/{repo}:v1", "--key", PUB, "--insecure-ignore-tlog",
                                    "--registry-plain-http", host], env=env, capture_output=True, text=True)
                wall = time.perf_counter() - t
                if p.returncode != 0:
                    sys.exit(f"verify {repo} failed: {p.stdout}{p.stderr}")
                return wall

            for repo in repos[1:args.images + 1]:
                proxy.delay = 0
                base = verify(repo)
                proxy.take_log()
                proxy.delay = delay
                wall = verify(repo)
                cli.append((base, wall, chain(proxy.take_log(), delay)))
            def one_run(repo):
                proxy.delay = 0
                base = verify(repo)
                proxy.take_log()
                proxy.delay = delay
                wall = verify(repo)
                return (base, wall, chain(proxy.take_log(), delay))

            cli_two = one_run(two)
            cli_bundle = one_run(bundled)

            # 2. cold reviews in one server
            proxy.delay = 0
            cert, key, policy = bw.serve_files(tmp, host)
            port, mport = bv.free_port(), bv.free_port()
            server = subprocess.Popen([BIN, "serve", "--policy", policy, "--tls-cert", cert, "--tls-key", key,
                                       "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}",
                                       "--registry-plain-http", host],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(500):
                try:
                    bw.metrics(mport)
                    break
                except OSError:
                    time.sleep(0.02)
            client = bw.Client(port, cert)
            client.post(bw.review("registry.invalid/warm-up:v1"))  # TLS and the server's first request
            rest = repos[args.images + 1:]
            for i, repo in enumerate(rest):
                by = "tag" if i % 2 == 0 else "digest"
                delayed = i % 4 >= 2
                image = f"{host}/{repo}:v1" if by == "tag" else f"{host}/{repo}@{digests[repo]}"
                proxy.delay = delay if delayed else 0
                proxy.take_log()
                resp, took = client.post(bw.review(image))
                assert resp["allowed"], resp
                if delayed:
                    served[by].append((took, chain(proxy.take_log(), delay)))
                else:
                    served_base[by].append(took)
        finally:
            if server:
                server.terminate()
                server.wait(timeout=30)
            reg.kill()
            reg.wait()

    def depth(extra):
        return statistics.median(extra) / delay

    cli_extra = [w - b for b, w, _ in cli]
    lines = [
        f"Release build; docker-registry 2.8 on 127.0.0.1 behind a proxy that holds each request for "
        f"{args.delay_ms} ms; the shipped example image (one legacy key signature) in {args.images} "
        "repositories per row and delay, each verified once (cold).",
        "",
        "| what | wall without delay, median ms | wall with delay, median ms | (difference) / delay | steps in the proxy's log | requests |",
        "|---|---|---|---|---|---|",
        f"| `ocigate verify REF:v1 --key` (fresh process; difference per process) | "
        f"{statistics.median(b for b, _, _ in cli) * 1000:.0f} | {statistics.median(w for _, w, _ in cli) * 1000:.0f} | "
        f"**{depth(cli_extra):.2f}** | {max(n for n, _ in cli[0][2])} | {sum(len(r) for _, r in cli[0][2])} |",
        f"| the same, an image with two legacy signatures (one run) | {cli_two[0] * 1000:.0f} | "
        f"{cli_two[1] * 1000:.0f} | **{(cli_two[1] - cli_two[0]) / delay:.2f}** | {max(n for n, _ in cli_two[2])} | "
        f"{sum(len(r) for _, r in cli_two[2])} |",
        f"| the same, an image signed with `--format bundle` (a Sigstore bundle in the referrers tag; one run) | "
        f"{cli_bundle[0] * 1000:.0f} | {cli_bundle[1] * 1000:.0f} | **{(cli_bundle[1] - cli_bundle[0]) / delay:.2f}** | "
        f"{max(n for n, _ in cli_bundle[2])} | {sum(len(r) for _, r in cli_bundle[2])} |",
    ]
    for by, label in (("tag", "by tag"), ("digest", "pinned by digest")):
        walls = [t for t, _ in served[by]]
        extra = [w - statistics.median(served_base[by]) for w in walls]
        lines.append(f"| webhook review, cold image {label} (server already running) | "
                     f"{statistics.median(served_base[by]) * 1000:.0f} | {statistics.median(walls) * 1000:.0f} | "
                     f"**{depth(extra):.2f}** | {max(n for n, _ in served[by][0][1])} | "
                     f"{sum(len(r) for _, r in served[by][0][1])} |")
    lines += [
        "",
        "Request chain (step the request started in; ∥ = concurrently):",
        "",
        f"- `verify` by tag: {describe(cli[0][2])}",
        f"- `verify` by tag, two signatures: {describe(cli_two[2])}",
        f"- `verify` by tag, a bundle: {describe(cli_bundle[2])}",
    ]
    for by in ("tag", "digest"):
        lines.append(f"- webhook, by {by}: {describe(served[by][0][1])}")
    text = "\n".join(lines)
    print(text)
    if args.write:
        bv.write_section("bench-roundtrips", text)


if __name__ == "__main__":
    main()
