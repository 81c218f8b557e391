#!/usr/bin/env python3
"""Peak memory and wall time of one cold `ocigate verify` against hostile signature manifests.

    scripts/bench-hostile.py [--runs N] [--ocigate BIN] [--scenarios a,b] [--max-memory-mib M] [--write]

Builds the release binary (unless --ocigate names one), starts docker-registry on 127.0.0.1
(free port, temp dir), pushes small images signed with keys-example/cosign.key, and plants
what anyone with push rights can plant, without any signing key:

  clean         a bundle-signed image (cosign v3 layout, referrers tag), nothing planted;
  planted-300   the same, plus a `.sig` manifest of 300 layers all naming one 4 MiB blob
                (1.2 GB per verify before the limits; target: under 32 MiB);
  planted-18k   the same with 18,000 layers (aborted the process before the limits);
  budget        a legacy-signed image whose `.sig` manifest also holds 255 planted layers,
                each naming its own 64 KiB payload and carrying a 14 KiB annotation: the
                largest the per-item limits let through, until the 16 MiB fetch budget ends it.

Each scenario runs N fresh `ocigate verify --key keys-example/cosign.pub` processes under GNU
time (which reports the child's peak RSS, ru_maxrss), each with an address-space cap
(--max-memory-mib, default 4096) so that a binary without the limits cannot take the machine
down; a run the cap stops is reported as such. With --write, the figures replace the section
between the bench-hostile markers in BENCHMARKS.md.
"""
import argparse
import importlib.util
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# scripts/bench-verify.py's helpers (registry, BENCHMARKS.md sections) are shared.
spec = importlib.util.spec_from_file_location("bench_verify", os.path.join(ROOT, "scripts", "bench-verify.py"))
bv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bv)
GNU_TIME = "/usr/bin/time"
KEY = os.path.join(ROOT, "keys-example", "cosign.key")
PUB = os.path.join(ROOT, "keys-example", "cosign.pub")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE = "dev.cosignproject.cosign/signature"
SCENARIOS = ["clean", "planted-300", "planted-18k", "budget"]


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_manifest(host, repo, ref, body):
    urllib.request.urlopen(urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{ref}", data=body, method="PUT",
        headers={"Content-Type": OCI_MANIFEST}))
    return digest_of(body)


def get_manifest(host, repo, ref):
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{ref}",
                                 headers={"Accept": OCI_MANIFEST})
    return json.loads(urllib.request.urlopen(req).read())


def descriptor(media_type, digest, size, annotations=None):
    d = {"mediaType": media_type, "digest": digest, "size": size}
    if annotations:
        d["annotations"] = annotations
    return d


def manifest(host, repo, layers):
    config = b"{}"
    cd = bv.push_blob(host, repo, config)
    # Compact, as registries store them: 18,000 layers must stay under distribution's 4 MiB.
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", cd, len(config)),
        "layers": layers,
    }, separators=(",", ":")).encode()


def push_image(host, repo, seed):
    layer = f"layer of {seed}".encode()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]}}).encode()
    ld, cd = bv.push_blob(host, repo, layer), bv.push_blob(host, repo, config)
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", cd, len(config)),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", ld, len(layer))],
    }).encode()
    return push_manifest(host, repo, "v1", body)


def sign(ocigate, host, ref, fmt, env):
    subprocess.run([ocigate, "sign", ref, "--key", KEY, "--format", fmt,
                    "--registry-plain-http", host], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def hostile_layer(digest, size, extra=None):
    annotations = {SIGNATURE: "MEUCIQDplanted"}
    annotations.update(extra or {})
    return descriptor(SIMPLE_SIGNING, digest, size, annotations)


def prepare(scenario, ocigate, host, env):
    """Push and sign the scenario's image, plant what it plants; its reference."""
    repo = f"bench/{scenario}"
    digest = push_image(host, repo, scenario)
    ref = f"{host}/{repo}:v1"
    sig_tag = digest.replace(":", "-") + ".sig"
    if scenario in ("clean", "planted-300", "planted-18k"):
        sign(ocigate, host, ref, "bundle", env)
    if scenario in ("planted-300", "planted-18k"):
        big = b"x" * (4 << 20)
        bd = bv.push_blob(host, repo, big)
        n = 300 if scenario == "planted-300" else 18_000
        push_manifest(host, repo, sig_tag, manifest(host, repo, [hostile_layer(bd, len(big))] * n))
    if scenario == "budget":
        sign(ocigate, host, ref, "legacy", env)
        layers = get_manifest(host, repo, sig_tag)["layers"]
        i = 0
        while len(layers) < 256:
            payload = f"planted payload {i} ".encode().ljust(64 << 10, b".")
            layers.append(hostile_layer(bv.push_blob(host, repo, payload), len(payload),
                                        {"padding": "p" * (14 << 10)}))
            i += 1
        push_manifest(host, repo, sig_tag, manifest(host, repo, layers))
    return ref


def run(cmd, env, rss_file, cap_mib):
    """One cold process under GNU time: (wall ms, peak RSS MiB, exit code, stdout)."""
    def limit():
        cap = cap_mib << 20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    t0 = time.perf_counter()
    p = subprocess.run([GNU_TIME, "-f", "%M", "-o", rss_file] + cmd, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=limit)
    wall = (time.perf_counter() - t0) * 1000
    with open(rss_file) as f:
        kib = int(f.read().strip().splitlines()[-1])
    return wall, kib / 1024, p.returncode, p.stdout.decode(errors="replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--ocigate", help="the binary to measure (default: build the release binary)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--max-memory-mib", type=int, default=4096)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(GNU_TIME):
        sys.exit("bench-hostile: needs GNU time (apt-get install time)")
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        sys.exit(f"bench-hostile: unknown scenario(s) {unknown}; known: {SCENARIOS}")

    if args.ocigate:
        ocigate = os.path.abspath(args.ocigate)
    else:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--locked"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        ocigate = os.path.join(target, "release", "ocigate")
    version = (subprocess.run([ocigate, "--version"], capture_output=True, text=True).stdout
               .strip().splitlines() or ["?"])[0]
    tmp = tempfile.mkdtemp(prefix="ocigate-bench-hostile-")
    proc, host = bv.start_registry(tmp)
    env = dict(os.environ, OCIGATE_PASSWORD="ocigate-example", DOCKER_CONFIG=os.path.join(tmp, "docker"),
               HOME=tmp)
    for k in list(env):
        if k.startswith("OCIGATE_REGISTRY"):
            del env[k]
    rows = []
    try:
        rss_file = os.path.join(tmp, "rss")
        for scenario in scenarios:
            ref = prepare(scenario, ocigate, host, env)
            cmd = [ocigate, "verify", ref, "--key", PUB, "--insecure-ignore-tlog", "--registry-plain-http", host, "-o", "json"]
            walls, rsss, outcomes = [], [], set()
            for _ in range(args.runs):
                wall, rss, code, out = run(cmd, env, rss_file, args.max_memory_mib)
                walls.append(wall)
                rsss.append(rss)
                try:
                    res = json.loads(out)["results"][0]
                    outcomes.add(f"{res['verdict']}" + (f" ({res['failure']})" if res.get("failure") else ""))
                except (ValueError, KeyError, IndexError):
                    outcomes.add(f"exit {code}, no verdict (stopped by the {args.max_memory_mib} MiB cap?)"
                                 if code != 1 else f"exit {code}, no verdict")
            rows.append((scenario, ", ".join(sorted(outcomes)), statistics.median(walls),
                         max(walls), statistics.median(rsss), max(rsss)))
            print(f"{scenario}: {rows[-1]}", file=sys.stderr)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    lines = [
        f"Binary: `{version}` ({'--ocigate ' + args.ocigate if args.ocigate else 'release build of this tree'}); "
        f"docker-registry 2.8 at 127.0.0.1; {args.runs} cold processes per scenario; "
        f"{os.cpu_count()} cores; address-space cap {args.max_memory_mib} MiB per process.",
        "",
        "| scenario | verdict | wall ms median (max) | peak RSS MiB median (max) |",
        "|---|---|---|---|",
    ]
    for scenario, outcome, wmed, wmax, rmed, rmax in rows:
        lines.append(f"| {scenario} | {outcome} | {wmed:.1f} ({wmax:.1f}) | {rmed:.1f} ({rmax:.1f}) |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        bv.write_section("bench-hostile", text)


if __name__ == "__main__":
    main()
