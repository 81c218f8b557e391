#!/usr/bin/env python3
"""`ocigate serve` under load, on this machine, against a loopback docker-registry.

    scripts/bench-webhook.py [--duration SECONDS] [--images N] [--fill N] [--write]

Builds the release binary, starts docker-registry on 127.0.0.1 (free port, temp dir), pushes the
shipped example image into N repositories and signs each with `ocigate sign`
(keys-example/cosign.key), makes a TLS certificate with openssl, and starts `ocigate serve` with a
key-based policy; its stdout (the decision log) goes to a pipe read by `wc -l`, as a container
runtime would read it. Before each timed part the script waits (up to --quiet-wait s, 10
minutes by default) for the machine to be idle, and it reports how much CPU other processes
took during the warm runs.
Then:

1. warm cache: AdmissionReview throughput and latency over keep-alive TLS, one review for one
   signed image:
   a. closed loop: wrk (Debian package `wrk`, a separate process; 2 threads, or 1 at c=1) at
      concurrency 1, 16 and 64, as fast as the server answers; with the load generator on the
      same 2 cores, the latency at c=64 is mostly queueing (64 requests always outstanding);
   b. open loop: oha (`cargo install oha --root ~/.cache/ocigate-tools/oha`) at a fixed offered
      rate (--rate, 10,000 requests/s) over 64 connections, with latency correction (a
      request's latency counts from when it was due, so a stall is not hidden by requests not
      sent), --open-runs times (3); the first 2 s of each (64 TLS handshakes, connection
      start-up) are left out of the percentiles;
2. cold: one review for each of the N images, one after another, each a first verification:
   latency (p50, p99) and registry requests per image (from ocigate_registry_requests_total);
3. single flight: 1,000 concurrent reviews for one image never seen: verifications run (from
   ocigate_verifications_total) and the slowest answer;
4. RSS: the server's VmRSS idle (after start), after the runs above, and after filling the
   decision cache with 100,000 decisions (reviews for 100,000 distinct pinned digests that do
   not exist, cached because the server runs with --failure-cache-ttl 1h for this; such a
   decision is smaller than an allow with evidence, so the figure is a floor, and the
   bytes per decision of the allow decisions of run 2 are reported beside it).

With --write, the figures replace the section between the bench-webhook markers in BENCHMARKS.md.
"""
import argparse
import concurrent.futures
import csv
import http.client
import importlib.util
import json
import os
import re
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("bench_verify", os.path.join(ROOT, "scripts", "bench-verify.py"))
bv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bv)

BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "ocigate")
KEY = os.path.join(ROOT, "keys-example", "cosign.key")
PUB = os.path.join(ROOT, "keys-example", "cosign.pub")


def review(image, uid="bench"):
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "p", "namespace": "bench", "operation": "CREATE", "userInfo": {"username": "bench"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "bench"},
                       "spec": {"containers": [{"name": "a", "image": image}]}},
        },
    })


def metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def total(m, prefix):
    return sum(v for k, v in m.items() if k.startswith(prefix))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Client:
    def __init__(self, port, ca):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=ca)

    def post(self, body):
        # Bytes, not str: http.client then sends the headers and the body in one write. Sent in
        # two, Nagle's algorithm held the body until the server's delayed ACK, up to 40 ms.
        body = body.encode() if isinstance(body, str) else body
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)
        t = time.perf_counter()
        c.request("POST", "/validate", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        took = time.perf_counter() - t
        c.close()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")
        return json.loads(data)["response"], took


OHA = [os.path.expanduser("~/.cache/ocigate-tools/oha/bin/oha"), "oha"]


def cpu_ticks():
    """(busy, total) clock ticks of the whole machine."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


def proc_ticks(pid):
    """utime + stime of a process (and its waited-for children), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in v[11:15])
    except OSError:
        return 0


QUIET_WAIT = [600]


def wait_quiet():
    """Wait until the machine is idle (under 10% of its CPU busy for 2 s); False if never."""
    start = time.time()
    while time.time() - start < QUIET_WAIT[0]:
        b0, t0 = cpu_ticks()
        time.sleep(2)
        b1, t1 = cpu_ticks()
        if (b1 - b0) < 0.10 * (t1 - t0):
            return True
    print("bench-webhook: the machine never became idle; figures are disturbed", file=sys.stderr)
    return False


class Load:
    """Runs a load generator as a child process and accounts the machine's CPU around it: the
    server's, the load generator's (our children's usage) and everyone else's."""

    def __init__(self, server_pid):
        self.server = server_pid
        self.others = []  # cores other processes kept busy, per run

    def run(self, cmd):
        hz = os.sysconf("SC_CLK_TCK")
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        c0 = ru.ru_utime + ru.ru_stime
        b0, s0, t = cpu_ticks()[0], proc_ticks(self.server), time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        b1, s1 = cpu_ticks()[0], proc_ticks(self.server)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        if p.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {p.stderr[-500:]}")
        server = (s1 - s0) / hz
        generator = ru.ru_utime + ru.ru_stime - c0
        self.others.append(max(0.0, (b1 - b0) / hz - server - generator) / wall)
        return p.stdout, server


def wrk(load, port, body_file, conns, duration):
    lua = body_file + ".lua"
    with open(lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
    threads = 1 if conns == 1 else 2
    wait_quiet()
    out, server_cpu = load.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "-s", lua,
                                f"https://127.0.0.1:{port}/validate"])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    n = int(re.search(r"(\d+) requests in", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, pct(50), pct(99), int(errors.group(1)) if errors else 0, server_cpu / n * 1e6, load.others[-1]


def oha_binary():
    for cand in OHA:
        if subprocess.run(["sh", "-c", f"command -v {cand}"], capture_output=True).returncode == 0:
            return cand
    return None


def oha(load, binary, port, body_file, rate, conns, duration, skip=2.0):
    """Open loop: `rate` requests/s over `conns` connections for `duration` s, latency counted
    from when each request was due; percentiles over the requests due after `skip` s."""
    wait_quiet()
    out, server_cpu = load.run([binary, "-z", f"{duration}s", "-c", str(conns), "-q", str(rate),
                                "--latency-correction", "--no-tui", "--output-format", "csv",
                                "-m", "POST", "-T", "application/json", "-D", body_file, "--insecure",
                                f"https://127.0.0.1:{port}/validate"])
    rows = list(csv.reader(out.splitlines()))[1:]
    kept = [(float(r[0]), float(r[4]), r[6]) for r in rows if float(r[0]) >= skip]
    lat = sorted(d * 1000 for _, d, _ in kept)
    span = max(s for s, _, _ in kept) - skip

    def pct(p):
        return lat[min(len(lat) - 1, int(len(lat) * p))]
    return {"rate": len(kept) / span, "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99),
            "p999": pct(0.999), "max": lat[-1], "non200": sum(1 for *_, st in kept if st != "200"),
            "n": len(kept), "server_us": server_cpu / len(rows) * 1e6, "others": load.others[-1]}


def serve_files(tmp, host):
    """A TLS certificate and key for 127.0.0.1 and a policy that trusts keys-example's key for
    every image of `host` (signed without Rekor: tlog: skip), written into `tmp`."""
    cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    policy = os.path.join(tmp, "policy.yaml")
    with open(policy, "w") as f:
        f.write("apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n"
                f"keys: [{{name: release, path: {PUB}}}]\n"
                f"rules:\n  - name: bench\n    images: [\"{host}/**\"]\n"
                "    authorities: [{key: {name: release}, tlog: skip}]\n")
    return cert, key, policy


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--fill", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=10_000, help="offered rate of the open-loop runs")
    ap.add_argument("--open-runs", type=int, default=3, help="how many open-loop runs")
    ap.add_argument("--quiet-wait", type=int, default=600,
                    help="seconds to wait for an idle machine before each load run")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    QUIET_WAIT[0] = args.quiet_wait
    for tool in ["wrk", "openssl", "/usr/bin/docker-registry"]:
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode != 0:
            sys.exit(f"bench-webhook: {tool} is missing (apt-get install wrk openssl docker-registry)")
    oha_bin = oha_binary()
    if oha_bin is None:
        sys.exit("bench-webhook: oha is missing (cargo install oha --root ~/.cache/ocigate-tools/oha)")
    oha_version = subprocess.run([oha_bin, "--version"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)
    env = dict(os.environ, OCIGATE_PASSWORD="ocigate-example", DOCKER_CONFIG="/nonexistent")
    with tempfile.TemporaryDirectory() as tmp:
        reg, host = bv.start_registry(tmp)
        server = log_reader = None
        try:
            print(f"pushing and signing {args.images + 1} images ...", file=sys.stderr)
            for i in range(args.images + 1):
                repo = f"bench/app-{i}"
                bv.push_example(host, repo)
                subprocess.run([BIN, "sign", f"{host}/{repo}:v1", "--key", KEY, "--registry-plain-http", host],
                               env=env, check=True, capture_output=True)
            cert, key, policy = serve_files(tmp, host)
            port, mport = bv.free_port(), bv.free_port()
            server = subprocess.Popen([BIN, "serve", "--policy", policy, "--tls-cert", cert, "--tls-key", key,
                                       "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}",
                                       "--registry-plain-http", host, "--failure-cache-ttl", "1h",
                                       "--negative-cache-ttl", "1h"],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            log_reader = subprocess.Popen(["wc", "-l"], stdin=server.stdout, stdout=subprocess.PIPE, text=True)
            server.stdout.close()
            load = Load(server.pid)
            for _ in range(500):
                try:
                    metrics(mport)
                    break
                except OSError:
                    time.sleep(0.02)
            time.sleep(0.3)
            idle = rss_kib(server.pid)
            client = Client(port, cert)

            # 2. cold, one image after another
            wait_quiet()
            before = metrics(mport)
            cold = []
            for i in range(1, args.images + 1):
                resp, took = client.post(review(f"{host}/bench/app-{i}:v1"))
                assert resp["allowed"], resp
                cold.append(took * 1000)
            after = metrics(mport)
            reqs = total(after, "ocigate_registry_requests_total") - total(before, "ocigate_registry_requests_total")
            rss_after_cold = rss_kib(server.pid)

            # 1. warm: closed loop (wrk), then open loop at a fixed rate (oha)
            body = os.path.join(tmp, "review.json")
            with open(body, "w") as f:
                f.write(review(f"{host}/bench/app-1:v1"))
            warm = {c: wrk(load, port, body, c, args.duration) for c in (1, 16, 64)}
            open_loop = [oha(load, oha_bin, port, body, args.rate, 64, args.duration + 2)
                         for _ in range(args.open_runs)]

            # 3. single flight: 1,000 concurrent reviews of an image never seen
            wait_quiet()
            before = metrics(mport)
            fresh = review(f"{host}/bench/app-0:v1")
            with concurrent.futures.ThreadPoolExecutor(max_workers=200) as ex:
                results = list(ex.map(lambda _: client.post(fresh), range(1000)))
            after = metrics(mport)
            assert all(r["allowed"] for r, _ in results)
            flights = total(after, "ocigate_verifications_total") - total(before, "ocigate_verifications_total")
            slowest = max(t for _, t in results) * 1000

            # 4. RSS with many cached decisions
            rss_before_fill = rss_kib(server.pid)
            bodies = (review(f"{host}/bench/fill@sha256:{i:064x}") for i in range(1, args.fill + 1))
            with concurrent.futures.ThreadPoolExecutor(max_workers=16) as ex:
                for _ in ex.map(client.post, bodies):
                    pass
            final = metrics(mport)
            cached = total(final, "ocigate_cached_decisions")
            answered = total(final, "ocigate_admission_requests_total")
            rss_full = rss_kib(server.pid)
        finally:
            if server:
                server.terminate()
                server.wait(timeout=30)
            reg.kill()
            reg.wait()
        log_lines = int(log_reader.communicate(timeout=30)[0].strip()) if log_reader else 0

    lines = [
        f"Release build; docker-registry 2.8 on 127.0.0.1; {args.images} images (the shipped example "
        f"pushed into {args.images} repositories, each with one legacy key signature); TLS 1.3, P-256; "
        f"the decision log on a pipe ({log_lines:,} lines for {answered:,.0f} admission requests).",
        "",
        f"Warm cache, one Pod review for one signed image over keep-alive TLS, the load generator on the "
        f"same 2 cores as the server. Closed loop: wrk for {args.duration} s (2 threads; 1 at c=1), "
        "each connection sending its next request when the last is answered:",
        "",
        "| concurrency | requests/s | p50 ms | p99 ms | non-2xx | server CPU per request | other processes' CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, (rps, p50, p99, err, us, others) in warm.items():
        lines.append(f"| {c} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {err} | {us:.0f} µs | {others:.2f} cores |")
    lines += [
        "",
        f"Open loop: {oha_version}, {args.rate:,} requests/s offered over 64 connections for "
        f"{args.duration + 2} s with latency correction (counted from when each request was due); "
        f"percentiles over the requests due after the first 2 s; {args.open_runs} runs:",
        "",
        "| run | offered | achieved | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | non-200 | server CPU per request | other processes' CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, o in enumerate(open_loop, 1):
        lines.append(f"| {i} | {args.rate:,}/s | {o['rate']:,.0f}/s | {o['p50']:.2f} | {o['p90']:.2f} | "
                     f"{o['p99']:.2f} | {o['p999']:.2f} | {o['max']:.1f} | {o['non200']} | "
                     f"{o['server_us']:.0f} µs | {o['others']:.2f} cores |")
    lines += [
        "",
        "Other processes' CPU: the machine's busy time during the run less the server's and the load "
        "generator's, in cores (this machine is shared with other work; the script waits for an idle "
        "machine before each run, but cannot keep it idle).",
    ]
    cold.sort()
    lines += [
        "",
        f"Cold: {args.images} reviews, one after another, each the first verification of its image: "
        f"p50 {statistics.median(cold):.1f} ms, p99 {cold[int(len(cold) * 0.99) - 1]:.1f} ms, "
        f"max {cold[-1]:.1f} ms; **{reqs / args.images:.1f} registry requests per image** "
        "(manifest by tag, `.sig` manifest, referrers API (404 once, then remembered), referrers tag, signature blob).",
        "",
        f"Single flight: 1,000 concurrent reviews (200 client threads, new TLS connection each) for one "
        f"image never seen: **{flights:.0f} verification(s)**; slowest answer {slowest:.0f} ms.",
        "",
        f"RSS (VmRSS): idle {idle / 1024:.1f} MiB; after the cold runs {rss_after_cold / 1024:.1f} MiB; "
        f"with {cached:,.0f} cached decisions **{rss_full / 1024:.1f} MiB** "
        f"(from {rss_before_fill / 1024:.1f} MiB before filling: "
        f"{(rss_full - rss_before_fill) * 1024 / max(cached, 1):.0f} bytes per decision; the fill uses "
        "not-found decisions for random digests, cached with `--failure-cache-ttl 1h`).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        bv.write_section("bench-webhook", text)


if __name__ == "__main__":
    main()
