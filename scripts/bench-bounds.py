#!/usr/bin/env python3
"""`ocigate serve` against hostile load that must stay bounded (issue #15, points 3 and 4).

    scripts/bench-bounds.py [--ocigate BIN] [--scenarios blackhole,huge,dense] [--write]

Builds the release binary (unless --ocigate names one; the default is
$CARGO_TARGET_DIR/release/ocigate, else target/release/ocigate), makes a TLS certificate with
openssl and a key-based policy, and starts `ocigate serve` with its defaults (per-host cap
`--registry-max-connections` 16, deadline 8 s). Every party is its own process, on 127.0.0.1:

  blackhole  a "registry" that accepts connections and never answers (this script in
             --role hole: it counts the connections open at once); the load generator
             (--role pods) sends 8 AdmissionReviews at once, each a Pod naming 200 distinct
             images on that host. Reported: each review's answer and latency, the most
             connections the host had open at once and in all, the server's peak RSS (VmHWM)
             and its RSS 40 s later (when every verification has ended).
             Targets: RSS < 64 MiB, connections <= the cap.
  huge       two AdmissionReviews of 40,000 distinct images each (3 MB bodies), sent again and
             again by two load processes (--role big) for --duration seconds while a probe
             (--role probe) asks GET /healthz every 10 ms over one keep-alive TLS connection.
             Reported: /healthz p50/p99/max, the big reviews' answers and latency.
             Target: /healthz p99 < 100 ms.
  dense      as huge, with reviews of 30,000 containers (about 90,000 JSON values, the heaviest
             a review may be) from four processes: the peak RSS that sets deploy/'s memory limit.

With --write, the figures replace the section between the bench-bounds markers in BENCHMARKS.md.
"""
import argparse
import concurrent.futures
import http.client
import importlib.util
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def review(uid, images):
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": uid, "namespace": "bench", "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": uid, "namespace": "bench"},
                       "spec": {"containers": [{"name": f"c{i}", "image": im}
                                               for i, im in enumerate(images)]}},
        },
    }).encode()


def post(port, ca, body, timeout=60):
    ctx = ssl.create_default_context(cafile=ca)
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    t = time.perf_counter()
    c.request("POST", "/validate", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    took = time.perf_counter() - t
    c.close()
    if r.status != 200:
        return {"status": r.status, "took": took, "allowed": None, "message": data[:200].decode("latin1")}
    resp = json.loads(data)["response"]
    return {"status": 200, "took": took, "allowed": resp["allowed"],
            "message": resp.get("status", {}).get("message", "")[:300]}


# ---------------------------------------------------------------------------------------------
# roles (each a separate process)

def role_hole(args):
    """Accept, read, never answer; write {open_now, peak, accepted} to --stats every 100 ms."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(4096)
    srv.settimeout(0.1)
    lock = threading.Lock()
    st = {"open": 0, "peak": 0, "accepted": 0}
    until = time.time() + args.limit

    def hold(conn):
        conn.settimeout(0.5)
        while time.time() < until:
            try:
                if not conn.recv(65536):
                    break
            except socket.timeout:
                continue
            except OSError:
                break
        conn.close()
        with lock:
            st["open"] -= 1

    last = 0.0
    while time.time() < until:
        try:
            conn, _ = srv.accept()
            with lock:
                st["open"] += 1
                st["accepted"] += 1
                st["peak"] = max(st["peak"], st["open"])
            threading.Thread(target=hold, args=(conn,), daemon=True).start()
        except socket.timeout:
            pass
        if time.time() - last > 0.1:
            last = time.time()
            with lock:
                snap = dict(st)
            with open(args.stats + ".tmp", "w") as f:
                json.dump(snap, f)
            os.replace(args.stats + ".tmp", args.stats)


def role_pods(args):
    """8 reviews at once, 200 distinct images each on --host; print their outcomes as JSON."""
    bodies = [review(f"pod-{p}", [f"{args.host}/bench/p{p}-{i}:v1" for i in range(200)]) for p in range(args.n)]
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as ex:
        out = list(ex.map(lambda b: post(args.port, args.ca, b), bodies))
    print(json.dumps(out))


def role_big(args):
    """A review of --n images (40,000 by default), posted again and again for --limit seconds."""
    images = [f"{args.host}/bench/{args.tag}-{i}:v1" for i in range(args.n)]
    body = review(f"big-{args.tag}", images)
    out = []
    until = time.time() + args.limit
    while time.time() < until:
        try:
            out.append(post(args.port, args.ca, body))
        except OSError as e:  # answered 503 and closed before the whole body was sent
            out.append({"status": type(e).__name__, "took": 0, "allowed": None, "message": str(e)})
            time.sleep(0.05)
    print(json.dumps({"bytes": len(body), "runs": out}))


def role_probe(args):
    """GET /healthz every 10 ms over one keep-alive TLS connection for --limit seconds."""
    ctx = ssl.create_default_context(cafile=args.ca)
    c = http.client.HTTPSConnection("127.0.0.1", args.port, context=ctx, timeout=30)
    lat = []
    until = time.time() + args.limit
    while time.time() < until:
        t = time.perf_counter()
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        lat.append((time.perf_counter() - t) * 1000)
        time.sleep(0.01)
    print(json.dumps(lat))


# ---------------------------------------------------------------------------------------------
# orchestration

def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def me(*extra):
    return [sys.executable, os.path.abspath(__file__), *extra]


def sibling(name):
    """Another script of scripts/ as a module (its main() does not run)."""
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_server(binary, tmp, host):
    cert, key, policy = sibling("bench-webhook").serve_files(tmp, host)
    port, mport = free_port(), free_port()
    env = dict(os.environ, DOCKER_CONFIG="/nonexistent")
    server = subprocess.Popen([binary, "serve", "--policy", policy, "--tls-cert", cert, "--tls-key", key,
                               "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}",
                               "--registry-plain-http", host],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, port, cert
        except OSError:
            time.sleep(0.02)
    server.kill()
    sys.exit("ocigate serve did not start")


def blackhole(binary, tmp):
    hport = free_port()
    host = f"127.0.0.1:{hport}"
    stats = os.path.join(tmp, "hole.json")
    hole = subprocess.Popen(me("--role", "hole", "--port", str(hport), "--stats", stats, "--limit", "120"))
    server, port, ca = start_server(binary, tmp, host)
    try:
        time.sleep(0.5)
        idle = status(server.pid, "VmRSS")
        t0 = time.time()
        load = subprocess.run(me("--role", "pods", "--port", str(port), "--ca", ca, "--host", host, "--n", "8"),
                              capture_output=True, text=True, timeout=120, check=True)
        answers = json.loads(load.stdout)
        # Until every verification has ended (30 s budget) and a little more.
        peak_rss_during = status(server.pid, "VmHWM")
        while time.time() - t0 < 40:
            time.sleep(0.5)
        with open(stats) as f:
            hs = json.load(f)
        return {
            "idle_kib": idle, "peak_kib": status(server.pid, "VmHWM"), "peak_kib_answered": peak_rss_during,
            "after_kib": status(server.pid, "VmRSS"), "hole": hs,
            "latency_s": [round(a["took"], 2) for a in answers],
            "denied": sum(1 for a in answers if a["allowed"] is False),
            "message": answers[0]["message"][:200],
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
        hole.kill()
        hole.wait()


def huge(binary, tmp, duration, images=40_000, tags=("a", "b")):
    host = f"127.0.0.1:{free_port()}"  # nothing listens: the reviews are denied before any request
    server, port, ca = start_server(binary, tmp, host)
    try:
        time.sleep(0.5)
        probe = subprocess.Popen(me("--role", "probe", "--port", str(port), "--ca", ca, "--limit", str(duration + 2)),
                                 stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        bigs = [subprocess.Popen(me("--role", "big", "--port", str(port), "--ca", ca, "--host", host,
                                    "--tag", t, "--limit", str(duration), "--n", str(images)),
                                 stdout=subprocess.PIPE, text=True)
                for t in tags]
        outs = [json.loads(b.communicate(timeout=duration + 120)[0]) for b in bigs]
        lat = sorted(json.loads(probe.communicate(timeout=duration + 60)[0]))
        runs = [r for o in outs for r in o["runs"]]
        return {
            "probe_n": len(lat), "p50": statistics.median(lat),
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))], "max": lat[-1],
            "big_runs": len(runs), "big_bytes": outs[0]["bytes"],
            "big_latency_median_s": round(statistics.median(r["took"] for r in runs), 3) if runs else None,
            "big_denied": sum(1 for r in runs if r["allowed"] is False),
            "message": runs[0]["message"][:200] if runs else "",
            "statuses": sorted({r.get("status") for r in runs}, key=str),
            "peak_kib": status(server.pid, "VmHWM"),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--role")
    ap.add_argument("--port", type=int)
    ap.add_argument("--stats")
    ap.add_argument("--limit", type=float, default=60)
    ap.add_argument("--ca")
    ap.add_argument("--host")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--tag", default="a")
    ap.add_argument("--ocigate")
    ap.add_argument("--scenarios", default="blackhole,huge,dense")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    roles = {"hole": role_hole, "pods": role_pods, "big": role_big, "probe": role_probe}
    if args.role:
        return roles[args.role](args)
    binary = args.ocigate
    if binary is None:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        binary = os.path.join(target, "release", "ocigate")
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    scenarios = args.scenarios.split(",")
    lines = [f"`scripts/bench-bounds.py` ({time.strftime('%Y-%m-%d')}; 2 cores shared with other work; "
             "server, registry stand-in, load generators and probe are separate processes on 127.0.0.1; "
             "`ocigate serve` with its defaults: `--registry-max-connections 16`, `--deadline 8s`).", ""]
    with tempfile.TemporaryDirectory() as tmp:
        if "blackhole" in scenarios:
            r = blackhole(binary, tmp)
            print(json.dumps(r), file=sys.stderr)
            lines += [
                "8 Pods x 200 distinct images on a host that accepts and never answers (sent at once):", "",
                "| denied | latency s (each) | connections at once (peak) | connections in all | "
                "RSS idle | RSS peak (VmHWM) | RSS 40 s later |",
                "|---|---|---|---|---|---|---|",
                f"| {r['denied']}/8 | {', '.join(str(x) for x in r['latency_s'])} | {r['hole']['peak']} (cap 16) | "
                f"{r['hole']['accepted']} | {r['idle_kib'] >> 10} MiB | {r['peak_kib'] >> 10} MiB | "
                f"{r['after_kib'] >> 10} MiB |", "",
                f"Deny message (start): `{r['message'][:160].strip()}`", "",
            ]
        if "huge" in scenarios:
            r = huge(binary, tmp, args.duration)
            print(json.dumps(r), file=sys.stderr)
            lines += [
                f"Two AdmissionReviews of 40,000 distinct images each ({r['big_bytes'] / 1e6:.1f} MB), posted again "
                f"and again by two processes for {args.duration} s, while a third asks `GET /healthz` every 10 ms:", "",
                "| /healthz answers | p50 ms | p99 ms | max ms | big reviews answered | denied | big review median s | RSS peak |",
                "|---|---|---|---|---|---|---|---|",
                f"| {r['probe_n']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} | {r['big_runs']} | "
                f"{r['big_denied']} | {r['big_latency_median_s']} | {r['peak_kib'] >> 10} MiB |", "",
                f"Deny message (start): `{r['message'][:160].strip()}`", "",
            ]
        if "dense" in scenarios:
            # The heaviest review accepted: 30,000 containers, about 90,000 JSON values (the
            # limit is 100,000), from four processes at once, again and again.
            r = huge(binary, tmp, args.duration, images=30_000, tags=("a", "b", "c", "d"))
            print(json.dumps(r), file=sys.stderr)
            arenas = os.environ.get("MALLOC_ARENA_MAX", "unset (glibc's default: 8 per core)")
            lines += [
                f"Four processes posting AdmissionReviews of 30,000 containers ({r['big_bytes'] / 1e6:.1f} MB, "
                f"about 90,000 JSON values: the heaviest accepted) again and again for {args.duration} s; "
                f"`MALLOC_ARENA_MAX` {arenas}:", "",
                "| /healthz answers | p99 ms | reviews answered | HTTP statuses | RSS peak |",
                "|---|---|---|---|---|",
                f"| {r['probe_n']} | {r['p99']:.2f} | {r['big_runs']} | {', '.join(str(x) for x in r['statuses'])} | "
                f"{r['peak_kib'] >> 10} MiB |", "",
            ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        sibling("bench-verify").write_section("bench-bounds", text)


if __name__ == "__main__":
    main()
