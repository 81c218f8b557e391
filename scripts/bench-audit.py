#!/usr/bin/env python3
"""`ocigate audit` of a cluster of 10,000 Pods naming 1,000 distinct signed images (issue #20).

    scripts/bench-audit.py [--pods N] [--images M] [--namespaces K] [--write]

Starts mini-kube-apiserver (../shared/tools/kube: `K` or ~/.cache/ocigate-kube) and
docker-registry on 127.0.0.1, pushes M distinct images (bench/imgI:v1, one small layer each)
and signs each with `ocigate sign` (keys-example's key), then creates N Pods through the API
(`kubectl create`, in K namespaces; Pod i names image i mod M and is owned by the ReplicaSet of
its image in its namespace, each ReplicaSet by a Deployment; the ReplicaSets exist, so the
audit reads each once to name the Deployment). Then one cold `ocigate audit -o json` with the
policy "keys-example's key, tlog: skip" under GNU time: wall time, peak RSS, and the registry
requests it made (its JSON summary's `registryRequests`) per distinct image. Targets: at most 5
requests per image, peak RSS under 128 MiB. With --write, the figures replace the section
between the bench-audit markers in BENCHMARKS.md. The binary is $CARGO_TARGET_DIR/release/ocigate
(built), or --ocigate PATH.
"""
import argparse
import hashlib
import http.client
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


def push_image(conn, repo, i):
    """One distinct image (a config and a layer of its own) over a kept-alive connection."""
    def blob(data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        conn.request("POST", f"/v2/{repo}/blobs/uploads/")
        r = conn.getresponse()
        r.read()
        loc = r.getheader("Location")
        if loc.startswith("http"):
            loc = "/" + loc.split("/", 3)[3]
        sep = "&" if "?" in loc else "?"
        conn.request("PUT", f"{loc}{sep}digest={d}", body=data,
                     headers={"Content-Type": "application/octet-stream"})
        conn.getresponse().read()
        return d, len(data)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}, "bench": i}).encode()
    layer = f"layer of image {i}\n".encode() * 8
    (cd, cs), (ld, ls) = blob(config), blob(layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}],
    }).encode()
    conn.request("PUT", f"/v2/{repo}/manifests/v1", body=manifest,
                 headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    r = conn.getresponse()
    r.read()
    assert r.status == 201, r.status


def objects(args, host):
    """Namespaces, Deployments' ReplicaSets and their Pods, as YAML documents."""
    owner = ("  ownerReferences: [{{apiVersion: {v}, kind: {k}, name: {n}, "
             "uid: 00000000-0000-0000-0000-000000000001, controller: true}}]\n")
    docs = [f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: team-{k}}}\n"
            for k in range(args.namespaces)]
    seen = set()
    for p in range(args.pods):
        i, ns = p % args.images, f"team-{p % args.namespaces}"
        image = f"{host}/bench/img{i}:v1"
        if (ns, i) not in seen:
            seen.add((ns, i))
            docs.append(
                f"apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: app{i}-5d9\n  namespace: {ns}\n"
                + owner.format(v="apps/v1", k="Deployment", n=f"app{i}")
                + "spec:\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n"
                + f"    spec:\n      containers:\n      - {{name: app, image: \"{image}\"}}\n")
        docs.append(
            f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: app{i}-5d9-{p}\n  namespace: {ns}\n"
            + owner.format(v="apps/v1", k="ReplicaSet", n=f"app{i}-5d9")
            + f"spec:\n  containers:\n  - {{name: app, image: \"{image}\"}}\n")
    return docs


def create(kubectl, kubeconfig, tmp, docs):
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    for start in range(0, len(docs), 1000):
        f = os.path.join(tmp, f"objects-{start}.yaml")
        with open(f, "w") as out:
            out.write("---\n".join(docs[start:start + 1000]))
        subprocess.run([kubectl, "create", "-f", f], env=env, check=True,
                       stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=10_000)
    ap.add_argument("--images", type=int, default=1_000)
    ap.add_argument("--namespaces", type=int, default=20)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--ocigate", help="this binary instead of building the release one")
    args = ap.parse_args()
    ocigate = args.ocigate
    if ocigate is None:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--locked"], cwd=ROOT, check=True)
        target = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR", "target"))
        ocigate = os.path.join(target, "release", "ocigate")
    kube = os.environ.get("K") or os.path.expanduser("~/.cache/ocigate-kube")
    kubectl = os.environ.get("OCIGATE_TEST_KUBECTL") or os.path.expanduser(
        "~/.cache/ocigate-tools/venv/bin/kubectl")
    run_sh = os.path.join(ROOT, "..", "shared", "tools", "kube", "run.sh")
    tmp = tempfile.mkdtemp(prefix="ocigate-bench-audit-")
    env = dict(os.environ, K=kube, RUN=os.path.join(tmp, "kube"))
    os.makedirs(env["RUN"])
    out = subprocess.run([run_sh, "start"], env=env, check=True, capture_output=True, text=True)
    kubeconfig = out.stdout.strip().splitlines()[-1]
    proc, host = bv.start_registry(tmp)
    try:
        t0 = time.time()
        conn = http.client.HTTPConnection(host)
        for i in range(args.images):
            push_image(conn, f"bench/img{i}", i)
        key = os.path.join(ROOT, "keys-example", "cosign.key")
        sign_env = dict(os.environ, OCIGATE_PASSWORD="ocigate-example", HOME=tmp,
                        DOCKER_CONFIG=os.path.join(tmp, "docker"))
        signs = []
        for i in range(args.images):
            signs.append(subprocess.Popen(
                [ocigate, "sign", f"{host}/bench/img{i}:v1", "--key", key,
                 "--registry-plain-http", host], env=sign_env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if len(signs) >= 8:
                assert signs.pop(0).wait() == 0
        for s in signs:
            assert s.wait() == 0
        print(f"bench-audit: {args.images} images pushed and signed in {time.time() - t0:.0f} s",
              file=sys.stderr)
        t0 = time.time()
        create(kubectl, kubeconfig, tmp, objects(args, host))
        print(f"bench-audit: {args.pods} Pods created in {time.time() - t0:.0f} s", file=sys.stderr)
        policy = os.path.join(tmp, "policy.yaml")
        with open(policy, "w") as f:
            f.write("apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n"
                    f"keys: [{{name: release, path: {os.path.join(ROOT, 'keys-example', 'cosign.pub')}}}]\n"
                    f"rules:\n  - name: bench\n    images: [\"{host}/**\"]\n"
                    "    authorities: [{key: {name: release}, tlog: skip}]\n")
        rss_file = os.path.join(tmp, "rss")
        report = os.path.join(tmp, "report.json")
        cmd = [bv.GNU_TIME, "-f", "%M", "-o", rss_file, ocigate, "audit", "--policy", policy,
               "--kubeconfig", kubeconfig, "--registry-plain-http", host,
               "--registry-qps", "100000", "-o", "json"]
        t0 = time.perf_counter()
        with open(report, "w") as f:
            code = subprocess.run(cmd, stdout=f, env=sign_env).returncode
        wall = time.perf_counter() - t0
        with open(rss_file) as f:
            rss = int(f.read().strip().splitlines()[-1]) / 1024
        with open(report) as f:
            summary = json.load(f)["summary"]
    finally:
        proc.kill()
        proc.wait()
        subprocess.run([run_sh, "stop"], env=env, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    per_image = summary["registryRequests"] / args.images
    lines = [
        f"{args.pods} Pods in {args.namespaces} namespaces (each owned by a ReplicaSet of a "
        f"Deployment) naming {args.images} distinct images, each signed by `ocigate sign`, on "
        f"docker-registry 2.8 and mini-kube-apiserver at 127.0.0.1; one cold `ocigate audit -o json` "
        f"(--registry-qps 100000, --jobs 16); {os.cpu_count()} cores.",
        "",
        "| wall s | peak RSS MiB | artifacts checked | allowed | registry requests | per distinct image |",
        "|---|---|---|---|---|---|",
        f"| {wall:.1f} | {rss:.1f} | {summary['artifacts']} | {summary['allowed']} | "
        f"{summary['registryRequests']} | {per_image:.2f} |",
    ]
    text = "\n".join(lines)
    print(text)
    if code != 0 or summary["allowed"] != args.images:
        sys.exit(f"bench-audit: expected every image allowed (exit {code}): {summary}")
    if args.write:
        bv.write_section("bench-audit", text)


if __name__ == "__main__":
    main()
