#!/usr/bin/env python3
"""Start-up cost: `ocigate --version`, `ocigate version` and one `ocigate verify-bundle` against
a Rust hello-world.

    scripts/bench-startup.py [--runs N] [--ocigate PATH] [--write]

Builds the release binary (or takes --ocigate) and a hello-world with the same toolchain and
the same [profile.release] (copied from Cargo.toml; its source is generated here), then starts
each command N times as a fresh process, interleaved (the order rotates every round). Both
binaries are run from copies in a temporary directory, as an installed binary would be: run
straight from the linker's output, the same file took about 15 more page faults per start
(its page cache is laid out differently). Wall time is measured around spawn and wait
(time.perf_counter; nothing is subtracted); page faults are the child's minor faults
(ru_minflt from wait4). Also reports what the dynamic loader has to do before main: relative
relocations (readelf -d: RELACOUNT, plus the entries of a packed .relr.dyn if there is one),
and the size of .data.rel.ro, every page of which is written (copied) at start-up. With
--write, replaces the bench-startup section of BENCHMARKS.md.
"""
import argparse
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# scripts/bench-verify.py's helpers (BENCHMARKS.md sections) are shared.
spec = importlib.util.spec_from_file_location("bench_verify", os.path.join(ROOT, "scripts", "bench-verify.py"))
bv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bv)
CASES = os.path.join(ROOT, "..", "shared", "corpus", "sigstore-conformance", "test", "assets", "bundle-verify")
CASE = "happy-path-v0.3"
IDENTITY = ("https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
            ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main")
ISSUER = "https://token.actions.githubusercontent.com"


def target_dir():
    return os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def release_profile():
    """The [profile.release] table of Cargo.toml, verbatim."""
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        m = re.search(r"^\[profile\.release\]\n(?:[^\[\n].*\n|\n)*", f.read(), re.M)
    return m.group(0) if m else ""


def build_hello():
    """A hello-world crate under the target directory, built like ocigate's release binary."""
    d = os.path.join(target_dir(), "bench-startup", "hello")
    os.makedirs(os.path.join(d, "src"), exist_ok=True)
    files = {
        "Cargo.toml": '[package]\nname = "hello"\nversion = "0.1.0"\nedition = "2024"\n\n'
                      f"[workspace]\n\n{release_profile()}",
        os.path.join("src", "main.rs"): 'fn main() {\n    println!("hello");\n}\n',
    }
    for name, text in files.items():
        path = os.path.join(d, name)
        if not os.path.exists(path) or open(path).read() != text:
            with open(path, "w") as f:
                f.write(text)
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(d, "target"))
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=d, env=env, check=True)
    return os.path.join(d, "target", "release", "hello")


def elf_facts(path):
    """Relative relocations, .data.rel.ro and .rela.dyn sizes, and whether it is a PIE."""
    dyn = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    secs = subprocess.run(["readelf", "-SW", path], capture_output=True, text=True, check=True).stdout
    hdr = subprocess.run(["readelf", "-h", path], capture_output=True, text=True, check=True).stdout

    def section(name):
        m = re.search(rf"\s{re.escape(name)}\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", secs)
        return (int(m.group(2), 16), int(m.group(3), 16)) if m else (0, 0)

    m = re.search(r"\(RELACOUNT\)\s+(\d+)", dyn)
    relative = int(m.group(1)) if m else 0
    relr_off, relr_size = section(".relr.dyn")
    if relr_size:
        # RELR: an address entry relocates one word, a bitmap entry (low bit set) up to 63.
        with open(path, "rb") as f:
            f.seek(relr_off)
            data = f.read(relr_size)
        for i in range(0, len(data), 8):
            word = int.from_bytes(data[i:i + 8], "little")
            relative += bin(word >> 1).count("1") if word & 1 else 1
    pie = "DYN" in (re.search(r"Type:\s+(.*)", hdr) or [None, ""])[1] and re.search(r"FLAGS_1\).*\bPIE\b", dyn)
    return {
        "relative": relative,
        "data_rel_ro": section(".data.rel.ro")[1],
        "rela_dyn": section(".rela.dyn")[1] + relr_size,
        "pie": bool(pie),
        "size": os.path.getsize(path),
    }


def spawn(cmd, cwd):
    """One fresh process: (wall ms, minor page faults, exit code)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = (time.perf_counter() - t0) * 1000
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_minflt, p.returncode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--ocigate", help="the binary to measure (default: build the release binary)")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if args.ocigate:
        ocigate = os.path.abspath(args.ocigate)
    else:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--locked"], cwd=ROOT, check=True)
        ocigate = os.path.join(target_dir(), "release", "ocigate")
    tmp = tempfile.mkdtemp(prefix="ocigate-bench-startup-")
    ocigate = shutil.copy(ocigate, os.path.join(tmp, "ocigate"))
    hello = shutil.copy(build_hello(), os.path.join(tmp, "hello"))

    cmds = [
        ("hello-world (println!)", [hello]),
        ("ocigate --version", [ocigate, "--version"]),
        ("ocigate version", [ocigate, "version"]),
    ]
    if os.path.isdir(os.path.join(CASES, CASE)):
        cmds.append((f"ocigate verify-bundle ({CASE})",
                     [ocigate, "verify-bundle", "--bundle", os.path.join(CASE, "bundle.sigstore.json"),
                      "--certificate-identity", IDENTITY, "--certificate-oidc-issuer", ISSUER, "a.txt"]))
    else:
        print(f"bench-startup: {CASES} not found, no verify-bundle row", file=sys.stderr)
    for name, cmd in cmds:
        _, _, code = spawn(cmd, CASES if "verify-bundle" in name else ROOT)
        if code != 0:
            sys.exit(f"bench-startup: {name} exited {code}")

    walls = {name: [] for name, _ in cmds}
    faults = {name: [] for name, _ in cmds}
    for i in range(args.runs):
        k = i % len(cmds)
        for name, cmd in cmds[k:] + cmds[:k]:
            wall, flt, code = spawn(cmd, CASES if "verify-bundle" in name else ROOT)
            assert code == 0, cmd
            walls[name].append(wall)
            faults[name].append(flt)

    base = statistics.median(walls[cmds[0][0]])
    lines = [
        f"{args.runs} fresh processes per command, interleaved; wall ms around spawn+wait "
        "(nothing subtracted), median and p90; minor page faults (ru_minflt), median.",
        "",
        "| command | median ms | p90 ms | median over hello-world | page faults |",
        "|---|---|---|---|---|",
    ]
    for name, _ in cmds:
        s = bv.summary(walls[name])
        over = "" if name == cmds[0][0] else f"+{s['median'] - base:.2f} ms"
        lines.append(f"| {name} | {s['median']:.2f} | {s['p90']:.2f} | {over} | "
                     f"{statistics.median(faults[name]):.0f} |")
    lines += ["", "| binary | relative relocations | .data.rel.ro KiB | .rela.dyn+.relr.dyn KiB | PIE | size MiB |",
              "|---|---|---|---|---|---|"]
    for name, path in (("ocigate", ocigate), ("hello-world", hello)):
        e = elf_facts(path)
        lines.append(f"| {name} | {e['relative']} | {e['data_rel_ro'] / 1024:.0f} | {e['rela_dyn'] / 1024:.0f} | "
                     f"{'yes' if e['pie'] else 'NO'} | {e['size'] / 2**20:.1f} |")
    shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    if args.write:
        bv.write_section("bench-startup", text)


if __name__ == "__main__":
    main()
