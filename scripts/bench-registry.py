#!/usr/bin/env python3
"""The registry client on many references at once (issue #8).

    scripts/bench-registry.py [--repos 10] [--tags 10] [--delay-ms 200] [--jobs N] [--write]

Builds the release binary; starts docker-registry on 127.0.0.1 and pushes REPOS x TAGS distinct
images (the shipped example's blobs, each manifest with its own annotation, so each has its own
digest), each signed by `ocigate sign` through the delaying proxy of scripts/bench-roundtrips.py
(so the signatures name the proxy's address). Then the registry is restarted on the same storage
with token authentication: a token server (a thread of this script) hands out RS256 JWTs, signed
with `openssl`, for any scope, anonymously, and counts the requests per scope. Then one
`ocigate verify REF... --key` process verifies all REPOS x TAGS references:

1. with no delay: wall time, HTTP requests per reference (the proxy's log), token fetches per
   scope (the token server's count);
2. with --delay-ms on every request through the proxy: wall time against the sum of the
   requests' delays and against one delay times the depth of the request chain.

With --write, the figures replace the section between the bench-registry markers in
BENCHMARKS.md.
"""
import argparse
import base64
import http.server
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_spec = importlib.util.spec_from_file_location("bench_roundtrips",
                                               os.path.join(ROOT, "scripts", "bench-roundtrips.py"))
rt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rt)
bv = rt.bv  # scripts/bench-verify.py: registry, BENCHMARKS.md sections

BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "ocigate")
KEY = os.path.join(ROOT, "keys-example", "cosign.key")
PUB = os.path.join(ROOT, "keys-example", "cosign.pub")
SERVICE, ISSUER = "bench-registry", "bench-token-issuer"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Anonymous bearer tokens for any scope (RS256, x5c), counted by scope."""

    def __init__(self, tmp):
        self.key, self.cert = os.path.join(tmp, "token.key"), os.path.join(tmp, "token.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key,
                        "-out", self.cert, "-days", "1", "-subj", "/CN=bench-token-issuer"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.by_scope = {}
        self.lock = threading.Lock()
        tokens = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                scopes = q.get("scope", [])
                with tokens.lock:
                    for s in scopes:
                        tokens.by_scope[s] = tokens.by_scope.get(s, 0) + 1
                body = json.dumps({"token": tokens.issue(scopes), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def issue(self, scopes):
        access = []
        for s in scopes:
            parts = s.split(":")
            if len(parts) == 3 and parts[0] == "repository":
                access.append({"type": "repository", "name": parts[1], "actions": parts[2].split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": "", "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                  "jti": f"{now}-{os.urandom(6).hex()}", "access": access}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=signing_input.encode(),
                             check=True, capture_output=True).stdout
        return f"{signing_input}.{b64url(sig)}"


def push_variant(host, repo, tag, n):
    """The example's manifest with an annotation of its own (its blobs are already there)."""
    m = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})).read())
    m["annotations"] = {"bench.ocigate.dev/n": str(n)}
    body = json.dumps(m).encode()
    urllib.request.urlopen(urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{tag}", data=body, method="PUT",
        headers={"Content-Type": m["mediaType"]}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repos", type=int, default=10)
    ap.add_argument("--tags", type=int, default=10)
    ap.add_argument("--delay-ms", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=0, help="verify --jobs (default: all references at once)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    for tool in ["openssl", "/usr/bin/docker-registry"]:
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            sys.exit(f"bench-registry: {tool} is missing (apt-get install openssl docker-registry)")
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    env = dict(os.environ, OCIGATE_PASSWORD="ocigate-example", DOCKER_CONFIG="/nonexistent",
               HOME="/nonexistent")
    delay = args.delay_ms / 1000
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        reg, upstream = bv.start_registry(tmp, data)
        proxy = rt.Proxy(upstream)
        host = proxy.host
        refs = []
        try:
            print(f"pushing and signing {args.repos * args.tags} images ...", file=sys.stderr)
            n = 0
            for r in range(args.repos):
                repo = f"bench/many-{r}"
                bv.push_example(upstream, repo)
                for t in range(args.tags):
                    push_variant(upstream, repo, f"t{t}", n)
                    n += 1
                    ref = f"{host}/{repo}:t{t}"
                    subprocess.run([BIN, "sign", ref, "--key", KEY], env=env, check=True, capture_output=True)
                    refs.append(ref)
        finally:
            reg.kill()
            reg.wait()
        tokens = TokenServer(tmp)
        reg, upstream = bv.start_registry(
            tmp, data,
            f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {tokens.cert}\n")
        proxy.upstream = upstream
        try:
            def run():
                proxy.take_log()
                with tokens.lock:
                    tokens.by_scope = {}
                t = time.perf_counter()
                p = subprocess.run([BIN, "verify", "--key", PUB, "--insecure-ignore-tlog",
                                    "--jobs", str(args.jobs or len(refs)), *refs],
                                   env=env, capture_output=True, text=True)
                wall = time.perf_counter() - t
                if p.returncode != 0:
                    sys.exit(f"verify failed ({p.returncode}): {p.stdout[-2000:]}{p.stderr[-2000:]}")
                with tokens.lock:
                    scopes = dict(tokens.by_scope)
                return wall, proxy.take_log(), scopes

            proxy.delay = 0
            fast, fast_log, fast_scopes = run()
            proxy.delay = delay
            slow, slow_log, slow_scopes = run()
        finally:
            reg.kill()
            reg.wait()

    count = len(refs)
    steps = rt.chain(slow_log, delay)
    lines = [
        f"Release build; docker-registry 2.8 on 127.0.0.1 with token authentication (a token server "
        f"of the script: anonymous RS256 tokens); {args.repos} repositories x {args.tags} tags = "
        f"{count} distinct images, each with one legacy key signature, verified by **one** "
        f"`ocigate verify REF... --key --insecure-ignore-tlog --jobs {args.jobs or count}` process.",
        "",
        "| delay per request | wall s | HTTP requests | per reference | token fetches | per scope (max) |",
        "|---|---|---|---|---|---|",
        f"| none | {fast:.2f} | {len(fast_log)} | {len(fast_log) / count:.2f} | "
        f"{sum(fast_scopes.values())} for {len(fast_scopes)} scopes | {max(fast_scopes.values(), default=0)} |",
        f"| {args.delay_ms} ms | {slow:.2f} | {len(slow_log)} | {len(slow_log) / count:.2f} | "
        f"{sum(slow_scopes.values())} for {len(slow_scopes)} scopes | {max(slow_scopes.values(), default=0)} |",
        "",
        f"With {args.delay_ms} ms on each request the run took {slow:.2f} s: the requests' delays add up to "
        f"{len(slow_log) * delay:.0f} s, one delay times the depth of the request chain is "
        f"{len(steps) * delay:.1f} s ({len(steps)} steps, token fetches included), and the extra over no "
        f"delay is {slow - fast:.2f} s.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        bv.write_section("bench-registry", text)


if __name__ == "__main__":
    main()
