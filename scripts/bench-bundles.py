#!/usr/bin/env python3
"""`ocigate verify-bundle` against sigstore-python 4.5.x on the same Sigstore bundles.

    scripts/bench-bundles.py [--runs N] [--write]

For each passing sigstore-conformance case that sigstore-python's CLI can verify (keyless; it has
no --key), both tools verify the bundle over the artifact file, N times each, interleaved, one
fresh process per run, offline: ocigate with the case's trusted_root.json or its embedded
public-good root, sigstore-python with `--trust-config` built from the same root (no TUF fetch).
Reports the median wall time per case and the ratio. sigstore-python is installed from PyPI into
.cache/sigstore-python on first use. With --write, replaces the bench-bundles section of
BENCHMARKS.md.
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# scripts/bench-verify.py's helpers (registry, BENCHMARKS.md sections) are shared.
spec = importlib.util.spec_from_file_location("bench_verify", os.path.join(ROOT, "scripts", "bench-verify.py"))
bv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bv)
CORPUS = os.path.join(ROOT, "..", "shared", "corpus")
CASES = os.path.join(CORPUS, "sigstore-conformance", "test", "assets", "bundle-verify")
PROD_ROOT = os.path.join(CORPUS, "sigstore-root-signing", "targets", "trusted_root.json")
SIGNING_CONFIG = os.path.join(CORPUS, "sigstore-root-signing", "targets", "signing_config.v0.2.json")
IDENTITY = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
            ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")
ISSUER = "https://token.actions.githubusercontent.com"
VENV = os.path.join(ROOT, ".cache", "sigstore-python")


def sigstore_python():
    exe = os.path.join(VENV, "bin", "sigstore")
    if not os.path.exists(exe):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "sigstore==4.5.*"], check=True)
    return exe


def read(path, default):
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return default


def timed(cmd):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000, p.returncode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if not os.path.isdir(CASES):
        sys.exit(f"bench-bundles: {CASES} not found")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--locked"], cwd=ROOT, check=True)
    ocigate = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "ocigate")
    sp = sigstore_python()
    tmp = tempfile.mkdtemp(prefix="ocigate-bench-bundles-")
    with open(SIGNING_CONFIG) as f:
        signing_config = json.load(f)

    rows = []
    for name in sorted(os.listdir(CASES)):
        case = os.path.join(CASES, name)
        bundle = os.path.join(case, "bundle.sigstore.json")
        if name.endswith("_fail") or not os.path.isfile(bundle) or os.path.exists(os.path.join(case, "key.pub")):
            continue
        artifact = os.path.join(case, "artifact")
        if not os.path.exists(artifact):
            artifact = os.path.join(CASES, "a.txt")
        identity = read(os.path.join(case, "identity"), IDENTITY)
        issuer = read(os.path.join(case, "issuer"), ISSUER)
        root = os.path.join(case, "trusted_root.json")
        has_root = os.path.exists(root)
        with open(root if has_root else PROD_ROOT) as f:
            trusted_root = json.load(f)
        trust_config = os.path.join(tmp, f"{name}.trust.json")
        with open(trust_config, "w") as f:
            json.dump({"mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
                       "trustedRoot": trusted_root, "signingConfig": signing_config}, f)
        og = [ocigate, "verify-bundle", "--bundle", bundle, "--certificate-identity", identity,
              "--certificate-oidc-issuer", issuer] + (["--trusted-root", root] if has_root else []) + [artifact]
        py = [sp, "--trust-config", trust_config, "verify", "identity", "--bundle", bundle,
              "--cert-identity", identity, "--cert-oidc-issuer", issuer, artifact]
        _, oc = timed(og)
        _, pc = timed(py)
        if oc != 0 or pc != 0:
            print(f"skip {name}: ocigate rc={oc}, sigstore-python rc={pc}", file=sys.stderr)
            continue
        ow, pw = [], []
        for i in range(args.runs):
            pair = [(og, ow), (py, pw)] if i % 2 == 0 else [(py, pw), (og, ow)]
            for cmd, out in pair:
                wall, rc = timed(cmd)
                assert rc == 0, cmd
                out.append(wall)
        rows.append((name, statistics.median(ow), statistics.median(pw)))

    if not rows:
        sys.exit("bench-bundles: no case verified with both tools")
    lines = [
        f"{len(rows)} passing keyless conformance cases, {args.runs} cold processes per tool per case, "
        f"interleaved, offline; median wall ms.",
        "",
        "| case | ocigate verify-bundle | sigstore-python 4.5 | ratio |",
        "|---|---|---|---|",
    ]
    for name, o, p in rows:
        lines.append(f"| {name} | {o:.1f} | {p:.1f} | {p / o:.0f}x |")
    om = statistics.median([o for _, o, _ in rows])
    pm = statistics.median([p for _, _, p in rows])
    lines += ["", f"Median over cases: ocigate {om:.1f} ms, sigstore-python {pm:.1f} ms: **{pm / om:.0f}x**."]
    text = "\n".join(lines)
    print(text)
    if args.write:
        bv.write_section("bench-bundles", text)


if __name__ == "__main__":
    main()
