#!/usr/bin/env python3
"""Cold-process `verify` of one key-signed image on a loopback registry: ocigate vs cosign.

    scripts/bench-verify.py [--runs N] [--write] [--schemes]

Starts docker-registry on 127.0.0.1 (free port, temp dir), pushes the shipped example image
(examples/signed-layout), signs it with `ocigate sign` (keys-example/cosign.key), then runs
`ocigate verify --key` and `cosign verify --key --insecure-ignore-tlog` N times each,
interleaved (alternating which goes first), one fresh process per run. Wall time is measured
around each process; peak RSS is the child's ru_maxrss from wait4. With --write, the figures
replace the section between the bench-verify markers in BENCHMARKS.md.

With --schemes, ocigate is run three ways instead (and cosign as before): with
`--registry-plain-http HOST`, with no scheme flag (a loopback host: HTTPS tried first, then plain
HTTP), and with cosign's `--allow-insecure-registry` (unverified HTTPS first, then plain HTTP);
--write then fills the bench-verify-schemes section. The binary is
$CARGO_TARGET_DIR/release/ocigate (default target/).
"""
import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUT = os.path.join(ROOT, "examples", "signed-layout")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(tmp, data=None, extra=""):
    """docker-registry on a free loopback port, storing in `data` (default tmp/data), with
    `extra` appended to its config (e.g. an auth section); waits until it answers."""
    port = free_port()
    cfg = os.path.join(tmp, f"config-{port}.yml")
    with open(cfg, "w") as f:
        f.write(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {data or os.path.join(tmp, 'data')}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n{extra}"
        )
    proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(250):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return proc, f"127.0.0.1:{port}"
        except urllib.error.HTTPError:
            return proc, f"127.0.0.1:{port}"  # it answered (401: with auth)
        except Exception:
            time.sleep(0.02)
    proc.kill()
    sys.exit("docker-registry did not start")


def write_section(name, text):
    """Put `text` between the `<!-- NAME:start -->` and `<!-- NAME:end -->` markers of
    BENCHMARKS.md (the section is appended when the markers are not there yet)."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    with open(path) as f:
        doc = f.read()
    new = f"{start}\n{text}\n{end}"
    if start in doc and end in doc:
        a, b = doc.index(start), doc.index(end) + len(end)
        doc = doc[:a] + new + doc[b:]
    else:
        doc = doc + "\n" + new + "\n"
    with open(path, "w") as f:
        f.write(doc)


def push_blob(host, repo, data):
    """A monolithic blob upload (POST, then PUT ?digest=) over plain HTTP; returns the digest."""
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = urllib.request.urlopen(urllib.request.Request(
        f"http://{host}/v2/{repo}/blobs/uploads/", method="POST"))
    loc = r.headers["Location"]
    if loc.startswith("/"):
        loc = f"http://{host}{loc}"
    sep = "&" if "?" in loc else "?"
    urllib.request.urlopen(urllib.request.Request(
        f"{loc}{sep}digest={d}", data=data, method="PUT",
        headers={"Content-Type": "application/octet-stream"}))
    return d


def push_example(host, repo):
    with open(os.path.join(LAYOUT, "index.json")) as f:
        index = json.load(f)
    entry = next(m for m in index["manifests"]
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "v1")

    def blob(digest):
        with open(os.path.join(LAYOUT, "blobs", "sha256", digest.split(":")[1]), "rb") as f:
            return f.read()

    manifest = blob(entry["digest"])
    m = json.loads(manifest)
    for d in [m["config"]["digest"]] + [l["digest"] for l in m["layers"]]:
        data = blob(d)
        assert "sha256:" + hashlib.sha256(data).hexdigest() == d
        push_blob(host, repo, data)
    urllib.request.urlopen(urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/v1", data=manifest, method="PUT",
        headers={"Content-Type": m["mediaType"]}))
    return entry["digest"]


GNU_TIME = "/usr/bin/time"


def run(cmd, env, rss_file):
    """One cold process: (wall ms, peak RSS MiB, exit code).

    The tool is started by GNU time, which reports its child's ru_maxrss: a child forked
    straight from this Python process would inherit Python's RSS high-water mark at exec and
    report ~14 MiB before doing anything. The wall time includes time's own fork+exec (about
    1 ms, the same for both tools; see the `true` baseline)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([GNU_TIME, "-f", "%M", "-o", rss_file] + cmd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    code = p.wait()
    wall = (time.perf_counter() - t0) * 1000
    with open(rss_file) as f:
        kib = int(f.read().strip().splitlines()[-1])
    return wall, kib / 1024, code


def summary(xs):
    xs = sorted(xs)
    return {"median": statistics.median(xs), "p90": xs[int(0.9 * (len(xs) - 1))], "min": xs[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--schemes", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(GNU_TIME):
        sys.exit("bench-verify: needs GNU time (apt-get install time)")

    subprocess.run(["cargo", "build", "--release", "--quiet", "--locked"], cwd=ROOT, check=True)
    target = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"))
    ocigate = os.path.join(target, "release", "ocigate")
    cosign = subprocess.run([os.path.join(ROOT, "scripts", "fetch-cosign.sh")], check=True,
                            capture_output=True, text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="ocigate-bench-")
    proc, host = start_registry(tmp)
    try:
        digest = push_example(host, "bench/app")
        ref = f"{host}/bench/app:v1"
        env = dict(os.environ, OCIGATE_PASSWORD="ocigate-example", DOCKER_CONFIG=os.path.join(tmp, "docker"),
                   HOME=tmp, TUF_ROOT=os.path.join(tmp, "tuf"))
        subprocess.run([ocigate, "sign", ref, "--key", os.path.join(ROOT, "keys-example", "cosign.key"),
                        "--registry-plain-http", host], check=True, env=env, stdout=subprocess.DEVNULL)
        pub = os.path.join(ROOT, "keys-example", "cosign.pub")
        cmds = {
            "ocigate": [ocigate, "verify", ref, "--key", pub, "--insecure-ignore-tlog", "--registry-plain-http", host],
            "cosign": [cosign, "verify", "--key", pub, "--insecure-ignore-tlog",
                       "--allow-insecure-registry", ref],
        }
        rss_file = os.path.join(tmp, "rss")
        if args.schemes:
            plain = cmds.pop("ocigate")
            cmds = {
                "ocigate --registry-plain-http": plain,
                "ocigate (loopback default)": plain[:-2],
                "ocigate --allow-insecure-registry": plain[:-2] + ["--allow-insecure-registry"],
                "cosign": cmds["cosign"],
            }
        cmds["true (baseline)"] = ["/bin/true"]
        for name, cmd in cmds.items():  # warm the page cache; both must succeed
            for _ in range(3):
                _, _, code = run(cmd, env, rss_file)
                if code != 0:
                    sys.exit(f"{name} verify failed (exit {code}): {' '.join(cmd)}")
        res = {n: {"wall": [], "rss": []} for n in cmds}
        for i in range(args.runs):
            order = list(cmds) if i % 2 == 0 else list(reversed(cmds))
            for name in order:
                wall, rss, code = run(cmds[name], env, rss_file)
                assert code == 0, name
                res[name]["wall"].append(wall)
                res[name]["rss"].append(rss)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    if args.schemes:
        write_schemes(args, digest, res)
        return
    o, c, t = res["ocigate"], res["cosign"], res["true (baseline)"]
    tw = summary(t["wall"])
    ow, cw = summary(o["wall"]), summary(c["wall"])
    orss, crss = summary(o["rss"]), summary(c["rss"])
    cpu = os.cpu_count()
    lines = [
        f"Image: the shipped example (`{digest}`), one legacy signature, on docker-registry 2.8 at 127.0.0.1.",
        f"{args.runs} cold processes each, interleaved; {cpu} cores; median (p90, min).",
        "",
        "| tool | wall ms | peak RSS MiB |",
        "|---|---|---|",
        f"| ocigate verify --key | {ow['median']:.1f} ({ow['p90']:.1f}, {ow['min']:.1f}) | {orss['median']:.1f} ({orss['p90']:.1f}) |",
        f"| cosign 3.1.1 verify --key --insecure-ignore-tlog | {cw['median']:.1f} ({cw['p90']:.1f}, {cw['min']:.1f}) | {crss['median']:.1f} ({crss['p90']:.1f}) |",
        f"| /bin/true (spawn baseline) | {tw['median']:.1f} ({tw['p90']:.1f}, {tw['min']:.1f}) | |",
        "",
        f"Ratio (cosign / ocigate, median wall): **{cw['median'] / ow['median']:.1f}x**; "
        f"peak RSS ratio {crss['median'] / orss['median']:.1f}x.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("bench-verify", text)


def write_schemes(args, digest, res):
    lines = [
        f"Image: the shipped example (`{digest}`) on docker-registry 2.8 (plain HTTP) at 127.0.0.1.",
        f"{args.runs} cold processes each, interleaved; {os.cpu_count()} cores; median (p90, min).",
        "",
        "| command | wall ms | peak RSS MiB |",
        "|---|---|---|",
    ]
    for name, r in res.items():
        w, m = summary(r["wall"]), summary(r["rss"]) if r["rss"][0] is not None else None
        label = {"cosign": "cosign 3.1.1 verify --allow-insecure-registry",
                 "true (baseline)": "/bin/true (spawn baseline)"}.get(name, name.replace("ocigate", "ocigate verify --key", 1))
        lines.append(f"| {label} | {w['median']:.1f} ({w['p90']:.1f}, {w['min']:.1f}) | {m['median']:.1f} ({m['p90']:.1f}) |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("bench-verify-schemes", text)


if __name__ == "__main__":
    main()
