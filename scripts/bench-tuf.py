#!/usr/bin/env python3
"""TUF trust roots (issue #19): a cold `trust-root update`, what a cached TUF root costs a
process against the same root from a file and the embedded one, and refreshes under load.

    scripts/bench-tuf.py [--runs N] [--duration SECONDS] [--rounds R] [--write]

Needs python-tuf (scripts/test.sh installs it into ~/.cache/ocigate-tools/venv; or set
OCIGATE_TEST_PYTHON). Writes a TUF repository with scripts/tuf-repo.py whose target is the
corpus' public-good trusted_root.json, serves it with python's http.server on 127.0.0.1, then:
1. cold update: N fresh processes of `ocigate trust-root update --mirror URL --root 1.root.json`,
   each into an empty cache: wall time (median, p90);
2. load: N interleaved processes (alternating order) of `ocigate policy check` on three policies
   that differ only in the trust root their one key authority names: `trustedRoot: FILE` (the
   same trusted_root.json), `tuf:` (read from the verified cache, re-verified offline, no
   network), and `embedded`; wall time, and CPU time (user + system, from wait4: the less noisy
   measure of the work a root adds). `verify` builds the same verifier from each root, so the
   difference a cached TUF root makes to a `verify` is this difference (target: within 1 ms of
   the embedded root);
3. refresh under warm load: `ocigate serve` with the `tuf:` policy and a signed image, wrk (16
   connections, --duration s) with `--trust-root-refresh 24h` (no refresh during the run) and
   with `--trust-root-refresh 1s` (a refresh, and a policy reload if the cache changed, every
   second): requests/s and p99 (target: no p99 change beyond noise).
With --write, the figures replace the section between the bench-tuf markers in BENCHMARKS.md.
The binary is $CARGO_TARGET_DIR/release/ocigate.
"""
import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, file):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", file))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


bv = load("bv", "bench-verify.py")
bn = load("bn", "bench-namespaces.py")
KEY = os.path.join(ROOT, "keys-example", "cosign.key")
PUB = os.path.join(ROOT, "keys-example", "cosign.pub")
CORPUS_ROOT = os.path.join(ROOT, "..", "shared", "corpus", "sigstore-root-signing", "targets",
                           "trusted_root.json")


def timed(cmd, env, cpu=None):
    """Wall ms around one process; its CPU ms (user + system, from wait4) appended to `cpu`."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = (time.perf_counter() - t0) * 1000
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, cmd)
    if cpu is not None:
        cpu.append((usage.ru_utime + usage.ru_stime) * 1000)
    return wall


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def policies(tmp, url, bootstrap):
    key = f"keys: [{{name: release, path: {PUB}}}]\n"
    rule = ("rules:\n  - name: all\n    images: [\"**\"]\n"
            "    authorities: [{key: {name: release, trustRoot: corp}, tlog: skip}]\n")
    forms = {
        "trustedRoot: FILE": f"trustRoots:\n  - name: corp\n    trustedRoot: {CORPUS_ROOT}\n",
        "tuf: (cached)": (f"trustRoots:\n  - name: corp\n    tuf:\n      mirror: {url}\n"
                          f"      root: {bootstrap}\n"),
        "embedded": "trustRoots:\n  - name: corp\n    trustedRoot: embedded\n",
    }
    out = {}
    for name, roots in forms.items():
        path = os.path.join(tmp, f"policy-{len(out)}.yaml")
        with open(path, "w") as f:
            f.write("apiVersion: ocigate.dev/v1alpha1\nkind: Policy\n" + roots + key + rule)
        out[name] = path
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    python = os.environ.get("OCIGATE_TEST_PYTHON") or os.path.expanduser(
        "~/.cache/ocigate-tools/venv/bin/python3")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--locked"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"), "release", "ocigate")
    tmp = tempfile.mkdtemp(prefix="ocigate-bench-tuf-")
    env = dict(os.environ, OCIGATE_PASSWORD="ocigate-example", DOCKER_CONFIG="/nonexistent",
               HOME=tmp)
    procs = []
    try:
        repo = os.path.join(tmp, "tuf")
        subprocess.run([python, os.path.join(ROOT, "scripts", "tuf-repo.py"), repo, "init",
                        CORPUS_ROOT], check=True, capture_output=True)
        port = bv.free_port()
        procs.append(subprocess.Popen([python, "-m", "http.server", "-b", "127.0.0.1", str(port),
                                       "-d", os.path.join(repo, "repo")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{port}"
        bootstrap = os.path.join(repo, "repo", "1.root.json")
        time.sleep(1)

        # 1. cold updates, each into an empty cache
        cold = []
        for i in range(args.runs):
            cache = os.path.join(tmp, f"cold-{i}")
            cold.append(timed([binary, "--tuf-cache-dir", cache, "trust-root", "update",
                               "--mirror", url, "--root", bootstrap, "--name", "corp"], env))
            shutil.rmtree(cache)

        # 2. the root's cost to a process: file, cached TUF, embedded
        cache = os.path.join(tmp, "cache")
        pols = policies(tmp, url, bootstrap)
        subprocess.run([binary, "--tuf-cache-dir", cache, "trust-root", "update", "--policy",
                        pols["tuf: (cached)"]], env=env, check=True, capture_output=True)
        loads = {name: [] for name in pols}
        cpus = {name: [] for name in pols}
        for i in range(args.runs):
            for name in (list(pols) if i % 2 == 0 else list(reversed(pols))):
                cmd = [binary, "--tuf-cache-dir", cache, "policy", "check", pols[name]]
                loads[name].append(timed(cmd, env, cpus[name]))

        # 3. refreshes under warm load
        reg, host = bv.start_registry(tmp)
        procs.append(reg)
        bv.push_example(host, "bench/app")
        image = f"{host}/bench/app:v1"
        subprocess.run([binary, "sign", image, "--key", KEY, "--registry-plain-http", host],
                       env=env, check=True, capture_output=True)
        cert, key = bn.tls_pair(tmp)
        body = os.path.join(tmp, "review.json")
        with open(body, "w") as f:
            f.write(bn.review(image, "bench"))
        warm = {}
        for _ in range(args.rounds):
            for every in ("24h", "1s"):
                port = bv.free_port()
                server = subprocess.Popen(
                    [binary, "--tuf-cache-dir", cache, "serve", "--policy", pols["tuf: (cached)"],
                     "--tls-cert", cert, "--tls-key", key, "--listen", f"127.0.0.1:{port}",
                     "--metrics-listen", "off", "--registry-plain-http", host,
                     "--trust-root-refresh", every],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    time.sleep(1.5)
                    with open(body) as f:
                        bn.warm(port, cert, f.read())
                    warm.setdefault(every, []).append(bn.wrk(port, body, args.duration, latency=True))
                finally:
                    server.terminate()
                    server.wait()
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    emb = statistics.median(loads["embedded"])
    lines = [
        f"A TUF repository written by python-tuf (scripts/tuf-repo.py) whose target is the corpus' "
        f"public-good trusted_root.json, served by python's http.server on 127.0.0.1; release "
        f"build; {args.runs} processes each; {os.cpu_count()} cores.",
        "",
        "| what | median ms | p90 ms | against the embedded root | CPU ms (median) | CPU against the embedded root |",
        "|---|---|---|---|---|---|",
        f"| cold `trust-root update` (empty cache) | {statistics.median(cold):.1f} | "
        f"{pct(cold, 0.9):.1f} | | | |",
    ]
    emb_cpu = statistics.median(cpus["embedded"])
    for name, xs in loads.items():
        m, c = statistics.median(xs), statistics.median(cpus[name])
        lines.append(f"| `policy check`, the key's trust root `{name}` | {m:.1f} | "
                     f"{pct(xs, 0.9):.1f} | {m - emb:+.1f} ms | {c:.2f} | {c - emb_cpu:+.2f} ms |")
    lines += ["", f"`serve` with the `tuf:` policy under wrk (16 connections, {args.duration} s, "
              f"{args.rounds} alternating rounds; median of the rounds):", "",
              "| --trust-root-refresh | requests/s | p99 ms | p99 of each round, ms (the noise) |",
              "|---|---|---|---|"]
    for every, xs in warm.items():
        rounds = ", ".join(f"{p:.2f}" for _, p in xs)
        lines.append(f"| {every} | {statistics.median(r for r, _ in xs):.0f} | "
                     f"{statistics.median(p for _, p in xs):.2f} | {rounds} |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        bv.write_section("bench-tuf", text)


if __name__ == "__main__":
    main()
