#!/usr/bin/env python3
"""Attestations (issue #17): cold `verify-attestation` against cosign's, and a 20 MiB SBOM.

    scripts/bench-attestations.py [--runs N] [--sbom-mib M] [--write]

Starts docker-registry on 127.0.0.1 (free port, temp dir), pushes the shipped example image
twice (bench/app and bench/sbom), and attaches with cosign 3.1.1 itself (`cosign attest
--tlog-upload=false`, legacy `.att` layout, keys-example/cosign.key):
  - to bench/app, one SLSA v1 provenance statement (GitHub Actions' shape, ~2 KiB);
  - to bench/sbom, an SPDX 2.3 document of about M MiB (generated packages; default 20).
Then runs, as fresh processes interleaved:
  - `ocigate verify-attestation --type slsaprovenance1 --key … --condition …` and
    `cosign verify-attestation --type slsaprovenance1 --key … --insecure-ignore-tlog` (N each),
    with two baselines in the same interleaving: scripts/bench-floor.rs (built with `rustc -O`:
    the three sequential registry requests of a legacy `.att`, nothing verified: no client can
    take less) and /bin/true (what starting a process through GNU time costs);
  - `ocigate verify-attestation --type spdxjson --condition 'predicate.spdxVersion == "SPDX-2.3"'`
    on the SBOM (N/4 runs; wall time and peak RSS), and cosign's for reference.
Then (3) the warm webhook: `ocigate serve` with one policy of two rules for two images signed
with `ocigate sign` (tlog: skip): `sig` (bench/app-sig, signature only) and `att` (bench/app,
the signature and the provenance attestation with its condition); each warmed by one review,
then wrk at 16 connections for --duration s against each, alternating, --rounds times; the
throughput ratio (target: the attestation rule within 20% of the signature-only rule).
Each process runs twice per round: straight from this script (its wall time, the headline
figures and ratio) and under GNU time (its peak RSS, see bench-verify.py; that wall time, which
adds time's own fork and exec to every row, is shown beside it). With
--write, the figures replace the section between the bench-attestations markers in
BENCHMARKS.md. The binary is $CARGO_TARGET_DIR/release/ocigate (default target/).
"""
import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bv", os.path.join(ROOT, "scripts", "bench-verify.py"))
bv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bv)
spec = importlib.util.spec_from_file_location("bw", os.path.join(ROOT, "scripts", "bench-webhook.py"))
bw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bw)

PROVENANCE = {
    "buildDefinition": {
        "buildType": "https://actions.github.io/buildtypes/workflow/v1",
        "externalParameters": {"workflow": {
            "ref": "refs/tags/v1.2.3", "repository": "https://github.com/acme/app",
            "path": ".github/workflows/release.yml"}},
        "internalParameters": {"github": {"event_name": "push", "repository_id": "1",
                                          "repository_owner_id": "2"}},
        "resolvedDependencies": [{"uri": "git+https://github.com/acme/app@refs/tags/v1.2.3",
                                  "digest": {"gitCommit": "0" * 40}}],
    },
    "runDetails": {
        "builder": {"id": "https://github.com/actions/runner/github-hosted"},
        "metadata": {"invocationId": "https://github.com/acme/app/actions/runs/1/attempts/1"},
    },
}
CONDITION = ('predicate.buildDefinition.externalParameters.workflow.repository == '
             '"https://github.com/acme/app"')


def spdx(mib):
    """An SPDX 2.3 JSON document of about `mib` MiB: packages with names, versions, PURLs."""
    packages, size, i = [], 0, 0
    while size < mib << 20:
        p = {"SPDXID": f"SPDXRef-Package-{i}", "name": f"package-{i}", "versionInfo": f"1.{i}.0",
             "downloadLocation": "NOASSERTION", "licenseConcluded": "Apache-2.0",
             "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                               "referenceLocator": f"pkg:cargo/package-{i}@1.{i}.0"}],
             "checksums": [{"algorithm": "SHA256", "checksumValue": f"{i:064x}"}]}
        size += len(json.dumps(p)) + 2
        packages.append(p)
        i += 1
    return {"spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
            "name": "bench", "documentNamespace": "https://example.com/bench",
            "creationInfo": {"created": "2026-12-01T00:00:00Z", "creators": ["Tool: bench"]},
            "packages": packages}


def attest(cosign, env, key, ref, kind, predicate):
    subprocess.run([cosign, "attest", "--key", key, "--type", kind, "--predicate", predicate,
                    "--tlog-upload=false", "--new-bundle-format=false",
                    "--use-signing-config=false", "--allow-insecure-registry", "--yes", ref],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def direct(cmd, env):
    """One cold process started straight from here, no wrapper: (wall ms, exit code)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    code = p.wait()
    return (time.perf_counter() - t0) * 1000, code


def measure(cmds, runs, env, rss_file):
    """`runs` interleaved rounds (order reversed every other round); in each, every command
    once straight from here (its wall time: the headline figures) and once under GNU time (its
    peak RSS, which a process forked from Python cannot report, and a wall time that includes
    time's own fork and exec, kept as a second measure)."""
    for name, cmd in cmds.items():  # warm the page cache; each must succeed
        _, _, code = bv.run(cmd, env, rss_file)
        if code != 0:
            sys.exit(f"{name} failed (exit {code}): {' '.join(cmd)}")
    res = {n: {"wall": [], "timed": [], "rss": []} for n in cmds}
    for i in range(runs):
        for name in (list(cmds) if i % 2 == 0 else list(reversed(cmds))):
            wall, code = direct(cmds[name], env)
            assert code == 0, name
            timed, rss, code = bv.run(cmds[name], env, rss_file)
            assert code == 0, name
            res[name]["wall"].append(wall)
            res[name]["timed"].append(timed)
            res[name]["rss"].append(rss)
    return res


def row(label, r):
    w, t, m = bv.summary(r["wall"]), bv.summary(r["timed"]), bv.summary(r["rss"])
    return (f"| {label} | {w['median']:.1f} ({w['p90']:.1f}, {w['min']:.1f}) | "
            f"{t['median']:.1f} | {m['median']:.1f} ({m['p90']:.1f}) |")


def webhook(ocigate, env, tmp, host, args):
    """Part 3: warm review throughput, a signature-only rule against an attestation rule."""
    import statistics
    bv.push_example(host, "bench/app-sig")
    key = os.path.join(ROOT, "keys-example", "cosign.key")
    for repo in ("bench/app", "bench/app-sig"):
        subprocess.run([ocigate, "sign", f"{host}/{repo}:v1", "--key", key,
                        "--registry-plain-http", host], env=env, check=True, capture_output=True)
    cert, tls_key, _ = bw.serve_files(tmp, host)
    policy = os.path.join(tmp, "att-policy.yaml")
    with open(policy, "w") as f:
        f.write("apiVersion: ocigate.dev/v1alpha1\nkind: Policy\n"
                f"keys: [{{name: release, path: {bw.PUB}}}]\nrules:\n"
                f"  - name: sig\n    images: [\"{host}/bench/app-sig\"]\n"
                "    authorities: [{key: {name: release}, tlog: skip}]\n"
                f"  - name: att\n    images: [\"{host}/bench/app\"]\n"
                "    authorities: [{key: {name: release}, tlog: skip}]\n"
                "    attestations:\n      - name: provenance\n        predicateType: slsaprovenance1\n"
                f"        conditions: [{{expression: {json.dumps(CONDITION)}}}]\n")
    port, mport = bv.free_port(), bv.free_port()
    server = subprocess.Popen([ocigate, "serve", "--policy", policy, "--tls-cert", cert,
                               "--tls-key", tls_key, "--listen", f"127.0.0.1:{port}",
                               "--metrics-listen", f"127.0.0.1:{mport}",
                               "--registry-plain-http", host],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(500):
            try:
                bw.metrics(mport)
                break
            except OSError:
                import time
                time.sleep(0.02)
        client = bw.Client(port, cert)
        bodies = {}
        for name, repo in (("sig", "bench/app-sig"), ("att", "bench/app")):
            body = bw.review(f"{host}/{repo}:v1")
            resp, _ = client.post(body)
            assert resp["allowed"], (name, resp)
            bodies[name] = os.path.join(tmp, f"review-{name}.json")
            with open(bodies[name], "w") as f:
                f.write(body)
        load = bw.Load(server.pid)
        bw.QUIET_WAIT[0] = 30
        res = {"sig": [], "att": []}
        for i in range(args.rounds):
            for name in (["sig", "att"] if i % 2 == 0 else ["att", "sig"]):
                rps, p50, p99, errors, _, _ = bw.wrk(load, port, bodies[name], 16, args.duration)
                assert errors == 0, name
                res[name].append((rps, p50, p99))
    finally:
        server.kill()
        server.wait()
    pick = lambda rs: tuple(statistics.median(r[i] for r in rs) for i in range(3))
    return pick(res["sig"]), pick(res["att"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--sbom-mib", type=int, default=20)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--locked"], cwd=ROOT, check=True)
    target = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"))
    ocigate = os.path.join(target, "release", "ocigate")
    cosign = os.environ.get("OCIGATE_TEST_COSIGN") or subprocess.run(
        [os.path.join(ROOT, "scripts", "fetch-cosign.sh")], check=True,
        capture_output=True, text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="ocigate-bench-att-")
    proc, host = bv.start_registry(tmp)
    try:
        bv.push_example(host, "bench/app")
        bv.push_example(host, "bench/sbom")
        app, sbom = f"{host}/bench/app:v1", f"{host}/bench/sbom:v1"
        env = dict(os.environ, COSIGN_PASSWORD="ocigate-example", HOME=tmp,
                   DOCKER_CONFIG=os.path.join(tmp, "docker"), TUF_ROOT=os.path.join(tmp, "tuf"),
                   SIGSTORE_NO_CACHE="true")
        key = os.path.join(ROOT, "keys-example", "cosign.key")
        pub = os.path.join(ROOT, "keys-example", "cosign.pub")
        prov = os.path.join(tmp, "provenance.json")
        with open(prov, "w") as f:
            json.dump(PROVENANCE, f)
        attest(cosign, env, key, app, "slsaprovenance1", prov)
        doc = os.path.join(tmp, "spdx.json")
        with open(doc, "w") as f:
            json.dump(spdx(args.sbom_mib), f)
        sbom_mib = os.path.getsize(doc) / (1 << 20)
        attest(cosign, env, key, sbom, "spdxjson", doc)
        plain = ["--registry-plain-http", host]
        rss_file = os.path.join(tmp, "rss")
        floor = os.path.join(tmp, "bench-floor")
        subprocess.run(["rustc", "-O", "--edition", "2021", "-o", floor,
                        os.path.join(ROOT, "scripts", "bench-floor.rs")], check=True)
        small = measure({
            "ocigate": [ocigate, "verify-attestation", app, "--type", "slsaprovenance1", "--key", pub,
                        "--insecure-ignore-tlog", "--condition", CONDITION] + plain,
            "cosign": [cosign, "verify-attestation", "--type", "slsaprovenance1", "--key", pub,
                       "--insecure-ignore-tlog", "--allow-insecure-registry", app],
            "floor": [floor, host, "bench/app", "v1"],
            "true": ["/bin/true"],
        }, args.runs, env, rss_file)
        big = measure({
            "ocigate": [ocigate, "verify-attestation", sbom, "--type", "spdxjson", "--key", pub,
                        "--insecure-ignore-tlog", "--condition",
                        'predicate.spdxVersion == "SPDX-2.3"'] + plain,
            "cosign": [cosign, "verify-attestation", "--type", "spdxjson", "--key", pub,
                       "--insecure-ignore-tlog", "--allow-insecure-registry", sbom],
        }, max(4, args.runs // 4), env, rss_file)
        warm = webhook(ocigate, env, tmp, host, args)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    so, sc = bv.summary(small["ocigate"]["wall"]), bv.summary(small["cosign"]["wall"])
    sf, st = bv.summary(small["floor"]["wall"]), bv.summary(small["true"]["wall"])
    to, tc = bv.summary(small["ocigate"]["timed"]), bv.summary(small["cosign"]["timed"])
    lines = [
        "One SLSA v1 provenance statement (GitHub Actions' shape) attached by `cosign attest "
        "--tlog-upload=false` (legacy `.att`), on docker-registry 2.8 at 127.0.0.1; "
        f"{args.runs} cold processes each, interleaved; {os.cpu_count()} cores; median (p90, min).",
        "",
        "| tool | wall ms | wall ms under GNU time | peak RSS MiB |",
        "|---|---|---|---|",
        row("ocigate verify-attestation --type slsaprovenance1 --key … --condition (repository)", small["ocigate"]),
        row("cosign 3.1.1 verify-attestation --type slsaprovenance1 --key … --insecure-ignore-tlog", small["cosign"]),
        row("floor: the same three registry requests, nothing verified (scripts/bench-floor.rs)", small["floor"]),
        row("/bin/true (spawn baseline)", small["true"]),
        "",
        f"Ratio (cosign / ocigate, median wall): **{sc['median'] / so['median']:.1f}x**; "
        f"cosign / floor: {sc['median'] / sf['median']:.1f}x. 5x needs ocigate at "
        f"{sc['median'] / 5:.1f} ms or less: at most {sc['median'] / 5 - sf['median']:.1f} ms "
        f"over the floor; ocigate is {so['median'] - sf['median']:.1f} ms over it "
        f"(the spawn baseline, in every row, is {st['median']:.1f} ms). Under GNU time, whose "
        f"own fork and exec add to every row: {tc['median'] / to['median']:.1f}x.",
        "",
        f"An SPDX 2.3 SBOM of {sbom_mib:.1f} MiB as the predicate (the `.att` layer is its base64 "
        f"DSSE envelope), {max(4, args.runs // 4)} runs each:",
        "",
        "| tool | wall ms | wall ms under GNU time | peak RSS MiB |",
        "|---|---|---|---|",
        row("ocigate verify-attestation --type spdxjson --condition 'predicate.spdxVersion == \"SPDX-2.3\"'", big["ocigate"]),
        row("cosign 3.1.1 verify-attestation --type spdxjson", big["cosign"]),
    ]
    sig, att = warm
    lines += [
        "",
        f"The warm webhook (wrk, 16 connections, {args.duration} s, {args.rounds} rounds "
        "alternating; one Pod review of one image, cached decision):",
        "",
        "| rule | requests/s (median of rounds) | p50 ms | p99 ms |",
        "|---|---|---|---|",
        f"| signature only | {sig[0]:.0f} | {sig[1]:.2f} | {sig[2]:.2f} |",
        f"| signature and provenance attestation with one condition | {att[0]:.0f} | {att[1]:.2f} | {att[2]:.2f} |",
        "",
        f"Attestation rule / signature-only rule: **{att[0] / sig[0]:.2f}**.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        bv.write_section("bench-attestations", text)


if __name__ == "__main__":
    main()
