#!/usr/bin/env python3
"""The warm webhook with 50 namespace-scoped rules against one rule (issue #20 point 1).

    scripts/bench-namespaces.py [--rules N] [--duration SECONDS] [--rounds R] [--write]

Starts docker-registry on 127.0.0.1, pushes the shipped example image and signs it with
`ocigate sign` (keys-example's key), then runs `ocigate serve` (release build) with each of two
policies in turn:
  - `one`: one rule for every image of the registry (the key, tlog: skip);
  - `scoped`: the same rule as a cluster-wide floor, plus N rules for the same images, each
    scoped to one namespace (`namespaces: [team-I]`) with the same key: a review from namespace
    `bench` is tried against every scoped rule before the floor applies (the most work matching
    does), and one from `team-I` is matched by its own rule.
Each server is warmed by one review, then wrk (16 connections, 2 threads) posts the same
AdmissionReview for --duration s; the two alternate --rounds times. Reported: the median
requests/s of each and the ratio (target: the scoped policy within 10% of one rule). With
--write, the figures replace the section between the bench-namespaces markers in BENCHMARKS.md.
The binary is $CARGO_TARGET_DIR/release/ocigate.
"""
import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bv", os.path.join(ROOT, "scripts", "bench-verify.py"))
bv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bv)
KEY = os.path.join(ROOT, "keys-example", "cosign.key")
PUB = os.path.join(ROOT, "keys-example", "cosign.pub")


def review(image, namespace):
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "bench", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "p", "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "p", "namespace": namespace},
                       "spec": {"containers": [{"name": "a", "image": image}]}},
        },
    })


def policy(path, host, scoped):
    rule = "    authorities: [{key: {name: release}, tlog: skip}]\n"
    text = ("apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n"
            f"keys: [{{name: release, path: {PUB}}}]\nrules:\n"
            f"  - name: floor\n    images: [\"{host}/**\"]\n{rule}")
    for i in range(scoped):
        text += f"  - name: team-{i}\n    images: [\"{host}/**\"]\n    namespaces: [team-{i}]\n{rule}"
    with open(path, "w") as f:
        f.write(text)


def serve(binary, pol, cert, key, host, env):
    port = bv.free_port()
    proc = subprocess.Popen([binary, "serve", "--policy", pol, "--tls-cert", cert, "--tls-key", key,
                             "--listen", f"127.0.0.1:{port}", "--metrics-listen", "off",
                             "--registry-plain-http", host],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        try:
            import socket
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit("ocigate serve did not listen")


def warm(port, cert, body):
    import ssl
    ctx = ssl.create_default_context(cafile=cert)
    req = urllib.request.Request(f"https://127.0.0.1:{port}/validate", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    answer = json.load(urllib.request.urlopen(req, context=ctx, timeout=30))
    assert answer["response"]["allowed"], answer


def tls_pair(tmp):
    """A self-signed P-256 certificate for 127.0.0.1 and its key, in `tmp`."""
    cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def wrk(port, body_file, duration, latency=False):
    """Requests/s of wrk (2 threads, 16 connections) posting `body_file`; with `latency`, also
    its p99 in ms."""
    lua = body_file + ".lua"
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{duration}s", "-s", lua]
                         + (["--latency"] if latency else [])
                         + [f"https://127.0.0.1:{port}/validate"],
                         check=True, capture_output=True, text=True).stdout
    assert "Non-2xx" not in out, out
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    if not latency:
        return rps
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return rps, v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", type=int, default=50)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--locked"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"), "release", "ocigate")
    env = dict(os.environ, OCIGATE_PASSWORD="ocigate-example", DOCKER_CONFIG="/nonexistent")
    with tempfile.TemporaryDirectory() as tmp:
        reg, host = bv.start_registry(tmp)
        try:
            bv.push_example(host, "bench/app")
            image = f"{host}/bench/app:v1"
            subprocess.run([binary, "sign", image, "--key", KEY, "--registry-plain-http", host],
                           env=env, check=True, capture_output=True)
            cert, key = tls_pair(tmp)
            runs = {"one": [], "scoped, namespace bench (floor)": [],
                    f"scoped, namespace team-{args.rules - 1} (its rule)": []}
            cases = [("one", 0, "bench"), ("scoped, namespace bench (floor)", args.rules, "bench"),
                     (f"scoped, namespace team-{args.rules - 1} (its rule)", args.rules,
                      f"team-{args.rules - 1}")]
            for _ in range(args.rounds):
                for name, scoped, ns in cases:
                    pol = os.path.join(tmp, f"policy-{scoped}.yaml")
                    policy(pol, host, scoped)
                    body = os.path.join(tmp, f"review-{ns}.json")
                    with open(body, "w") as f:
                        f.write(review(image, ns))
                    proc, port = serve(binary, pol, cert, key, host, env)
                    try:
                        with open(body) as f:
                            warm(port, cert, f.read())
                        runs[name].append(wrk(port, body, args.duration))
                    finally:
                        proc.terminate()
                        proc.wait()
        finally:
            reg.kill()
            reg.wait()
    base = statistics.median(runs["one"])
    lines = [
        f"`ocigate serve` (release), one AdmissionReview of a signed image posted by wrk (16 "
        f"connections, 2 threads, {args.duration} s, {args.rounds} alternating rounds; median "
        f"requests/s) with one rule, and with the same rule as a floor plus {args.rules} rules "
        f"scoped to one namespace each; {os.cpu_count()} cores, load generator on the same cores.",
        "",
        "| policy | requests/s | of one rule |",
        "|---|---|---|",
    ]
    for name, xs in runs.items():
        m = statistics.median(xs)
        lines.append(f"| {name} | {m:.0f} | {m / base:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        bv.write_section("bench-namespaces", text)


if __name__ == "__main__":
    main()
