//! `ocigate serve` over real TLS (a CA and server certificate made with rcgen), against the real
//! registry, called by Kubernetes' own admission code: `kwhclient` runs k8s.io/apiserver's
//! validating admission webhook plugin, the code kube-apiserver runs (../shared/tools/kube;
//! scripts/test.sh builds it once into ~/.cache/ocigate-kube). Corpus AdmissionReviews
//! (Connaisseur's) are posted over the same TLS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// The kube tools, or a loud skip (a failure in CI).
pub(crate) fn kube_tools_or_skip(test: &str) -> Option<PathBuf> {
    let k = std::env::var_os("OCIGATE_TEST_KUBE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ocigate-kube"))
        })?;
    if k.join("bin/kwhclient").is_file() {
        return Some(k);
    }
    if strict() {
        panic!(
            "{test}: kwhclient not found in {}; scripts/test.sh builds it",
            k.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: kwhclient not built (../shared/tools/kube/setup.sh); these webhook checks did NOT run"
    );
    None
}

pub(crate) struct Server {
    child: Child,
    port: u16,
    pub(crate) metrics: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// SIGTERM, wait for the exit (the decision log is flushed on the way out), and return
    /// everything it wrote to stdout: one JSON line per decision.
    pub(crate) fn stop_and_read_log(mut self) -> String {
        use std::io::Read as _;
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let mut out = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            let _ = stdout.read_to_string(&mut out);
        }
        out
    }
}

pub(crate) fn start_serve(policy: &Path, tls: &Tls, registry_host: &str, extra: &[&str]) -> Server {
    start_serve_env(policy, tls, registry_host, extra, &[])
}

/// [`start_serve`] with `env` set for the server (after its own `DOCKER_CONFIG`).
pub(crate) fn start_serve_env(
    policy: &Path,
    tls: &Tls,
    registry_host: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Server {
    let port = free_port();
    let metrics = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocigate"));
    cmd.args([
        "serve",
        "--policy",
        policy.to_str().unwrap(),
        "--tls-cert",
        tls.cert.to_str().unwrap(),
        "--tls-key",
        tls.key.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics}"),
        "--registry-plain-http",
        registry_host,
        "--reload-interval",
        "200ms",
    ])
    .args(extra)
    .env("DOCKER_CONFIG", "/nonexistent-ocigate-test")
    .envs(env.iter().copied())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let child = cmd.spawn().expect("start ocigate serve");
    let server = Server {
        child,
        port,
        metrics,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("ocigate serve did not listen on {port}");
}

pub(crate) fn kwhclient(
    k: &Path,
    server: &Server,
    tls: &Tls,
    object: &Path,
    extra: &[&str],
) -> Run {
    kwhclient_at(k, server, "/validate", tls, object, extra)
}

pub(crate) fn kwhclient_at(
    k: &Path,
    server: &Server,
    path: &str,
    tls: &Tls,
    object: &Path,
    extra: &[&str],
) -> Run {
    let out = Command::new(k.join("bin/kwhclient"))
        .args([
            "-url",
            &server.url(path),
            "-ca-bundle",
            tls.ca.to_str().unwrap(),
        ])
        .args(extra)
        .arg(object)
        .stdin(Stdio::null())
        .output()
        .expect("run kwhclient");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn pod(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  containers:\n  - name: app\n    image: {image}\n"
    )
}

fn deployment(name: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: app\n        image: {image}\n"
    )
}

pub(crate) struct Cluster {
    pub(crate) reg: TestRegistry,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) tls: Tls,
    pub(crate) policy: PathBuf,
    pub(crate) signed: String,
    pub(crate) unsigned: String,
}

pub(crate) fn cluster() -> Cluster {
    let reg = TestRegistry::start();
    let client = reg.client();
    let signed = reg.reference("apps/web:v1");
    let unsigned = reg.reference("apps/old:v1");
    push_image(&client, &signed, "webhook signed");
    push_image(&client, &unsigned, "webhook unsigned");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let s = sign(&reg, &key, &signed.to_string(), &[]);
    assert_eq!(s.code, 0, "{s:?}");
    let policy = dir.path().join("policy.yaml");
    write_key_policy(&policy, &public, "apps", &format!("{}/apps/**", reg.host()));
    let tls = make_tls(dir.path());
    Cluster {
        signed: signed.to_string(),
        unsigned: unsigned.to_string(),
        reg,
        tls,
        policy,
        dir,
    }
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn admission_through_kubernetes_admission_code() {
    let Some(k) = kube_tools_or_skip("admission_through_kubernetes_admission_code") else {
        return;
    };
    let c = cluster();
    let server = start_serve(&c.policy, &c.tls, &c.reg.host(), &[]);
    let d = c.dir.path();

    let ok = write(d, "ok.yaml", &pod("ok", &c.signed));
    let run = kwhclient(&k, &server, &c.tls, &ok, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("ADMITTED"), "{run:?}");

    let bad = write(d, "bad.yaml", &pod("bad", &c.unsigned));
    let run = kwhclient(&k, &server, &c.tls, &bad, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("DENIED"), "{run:?}");
    assert!(run.stdout.contains("[unsigned]"), "{run:?}");
    assert!(
        run.stdout.contains(&c.unsigned),
        "the reason names the image: {run:?}"
    );

    // Dry runs get the same verdict as real requests.
    let run = kwhclient(&k, &server, &c.tls, &bad, &["-dry-run"]);
    assert_eq!(run.code, 1, "{run:?}");

    // A workload's pod template is checked like a Pod.
    let dep = write(d, "dep.yaml", &deployment("old", &c.unsigned, 3));
    let run = kwhclient(&k, &server, &c.tls, &dep, &["-resource", "deployments"]);
    assert_eq!(run.code, 1, "{run:?}");

    // Scaling an old, unsigned workload down passes (its images are already in oldObject);
    // deleting it passes.
    let scaled = write(d, "scaled.yaml", &deployment("old", &c.unsigned, 1));
    let run = kwhclient(
        &k,
        &server,
        &c.tls,
        &scaled,
        &[
            "-operation",
            "UPDATE",
            "-old",
            dep.to_str().unwrap(),
            "-resource",
            "deployments",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let run = kwhclient(
        &k,
        &server,
        &c.tls,
        &dep,
        &["-operation", "DELETE", "-resource", "deployments"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    // An UPDATE that brings in a new unsigned image is checked.
    let swapped = write(d, "swapped.yaml", &deployment("web", &c.unsigned, 1));
    let before = write(d, "before.yaml", &deployment("web", &c.signed, 1));
    let run = kwhclient(
        &k,
        &server,
        &c.tls,
        &swapped,
        &[
            "-operation",
            "UPDATE",
            "-old",
            before.to_str().unwrap(),
            "-resource",
            "deployments",
        ],
    );
    assert_eq!(run.code, 1, "{run:?}");

    // Mutating: a verified tag on a Pod is pinned to its digest (the patch is applied by the
    // API server's own mutating plugin); what is already pinned is left alone; a deny is left to
    // the validating webhook (a later mutating webhook may still rewrite the image); workload
    // templates are not pinned unless --pin-workloads.
    let run = kwhclient_at(&k, &server, "/mutate", &c.tls, &ok, &["-mode", "mutating"]);
    assert_eq!(run.code, 0, "{run:?}");
    let digest = {
        let line = run
            .stdout
            .lines()
            .find(|l| l.contains("image:"))
            .unwrap_or_else(|| panic!("{run:?}"));
        assert!(line.contains(&format!("{}@sha256:", c.signed)), "{run:?}");
        line.rsplit_once('@').unwrap().1.trim().to_string()
    };
    let pinned = write(
        d,
        "pinned.yaml",
        &pod("pinned", &format!("{}@{digest}", c.signed)),
    );
    let run = kwhclient_at(
        &k,
        &server,
        "/mutate",
        &c.tls,
        &pinned,
        &["-mode", "mutating"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.matches("@sha256:").count(),
        1,
        "re-pinned: {run:?}"
    );
    let run = kwhclient_at(&k, &server, "/mutate", &c.tls, &bad, &["-mode", "mutating"]);
    assert_eq!(run.code, 0, "a deny is /validate's: {run:?}");
    assert!(!run.stdout.contains("@sha256:"), "{run:?}");
    let signed_dep = write(d, "signed-dep.yaml", &deployment("web", &c.signed, 2));
    let run = kwhclient_at(
        &k,
        &server,
        "/mutate",
        &c.tls,
        &signed_dep,
        &["-mode", "mutating", "-resource", "deployments"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("@sha256:"), "{run:?}");
    let pinning = start_serve(&c.policy, &c.tls, &c.reg.host(), &["--pin-workloads"]);
    let run = kwhclient_at(
        &k,
        &pinning,
        "/mutate",
        &c.tls,
        &signed_dep,
        &["-mode", "mutating", "-resource", "deployments"],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!("{}@{digest}", c.signed)),
        "{run:?}"
    );
    drop(pinning);

    // Metrics count the decisions by failure class, rule and kind.
    let metrics = http_get(server.metrics, "/metrics");
    assert!(
        metrics.contains(
            "ocigate_decisions_total{verdict=\"deny\",failure=\"unsigned\",rule=\"apps\",kind=\"Pod\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "ocigate_decisions_total{verdict=\"deny\",failure=\"unsigned\",rule=\"apps\",kind=\"Deployment\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("ocigate_cache_hits_total"), "{metrics}");
    assert!(
        metrics.contains(&format!(
            "ocigate_registry_requests_total{{host=\"{}\",class=\"2xx\"}}",
            c.reg.host()
        )),
        "{metrics}"
    );
}

/// An AdmissionReview v1 for creating a Pod `p` in namespace `apps` that runs `image`.
pub(crate) fn pod_review(uid: &str, image: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "p", "namespace": "apps", "operation": "CREATE",
            "userInfo": {"username": "test"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "apps"},
                       "spec": {"containers": [{"name": "a", "image": image}]}}
        }
    })
}

/// A plain-HTTP GET on loopback, for the metrics listener.
pub(crate) fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub(crate) fn tls_client(tls: &Tls) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&tls.ca).unwrap()).unwrap();
    reqwest::blocking::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[test]
fn corpus_reviews_garbage_and_certificate_rotation_over_tls() {
    let Some(corpus) = corpus_or_skip("corpus_reviews_garbage_and_certificate_rotation_over_tls")
    else {
        return;
    };
    let c = cluster();
    let server = start_serve(&c.policy, &c.tls, &c.reg.host(), &[]);
    let client = tls_client(&c.tls);
    // Connaisseur's reviews name Docker Hub images: no rule matches them and noMatch is deny,
    // so they are denied without a registry call; their UIDs are echoed.
    let dir = corpus.join("connaisseur/test/testdata/admission_requests");
    for name in [
        "01_deployment.json",
        "02_pod.json",
        "19_pod_initcontainer.json",
    ] {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
        // Connaisseur recorded v1beta1 reviews; the API server sends v1 to a webhook that
        // asks for v1 only (deploy/), with the same request inside.
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": v["request"],
        });
        let resp = client
            .post(server.url("/validate"))
            .json(&review)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{name}");
        let out: serde_json::Value = resp.json().unwrap();
        assert_eq!(out["response"]["uid"], v["request"]["uid"], "{name}");
        assert_eq!(out["response"]["allowed"], false, "{name}: {out}");
        let msg = out["response"]["status"]["message"].as_str().unwrap();
        assert!(msg.contains("[no-match]"), "{name}: {msg}");
    }
    // Garbage is a 400 with a message, and the server lives on.
    for body in [
        &b"{not json"[..],
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#,
    ] {
        let resp = client
            .post(server.url("/validate"))
            .body(body.to_vec())
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        assert!(!resp.text().unwrap().is_empty());
    }
    let big = vec![b'x'; 7 << 20];
    let resp = client.post(server.url("/validate")).body(big).send();
    if let Ok(r) = resp {
        assert_eq!(r.status().as_u16(), 413);
    }
    assert_eq!(
        client
            .get(server.url("/healthz"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        client
            .get(server.url("/readyz"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    // Certificate rotation: a new certificate is served without a restart.
    let first = peer_cn(&server, &c.tls);
    assert_eq!(first, "first");
    issue_server_cert(&c.tls, "second");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut now = first;
    while now != "second" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        now = peer_cn(&server, &c.tls);
    }
    assert_eq!(now, "second", "the rotated certificate was not picked up");
}

/// The common name of the certificate the server presents now (openssl s_client is not
/// needed: rustls tells us through reqwest's TLS info).
fn peer_cn(server: &Server, tls: &Tls) -> String {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&tls.ca).unwrap()).unwrap();
    let client = reqwest::blocking::Client::builder()
        .tls_certs_only([ca])
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let resp = client.get(server.url("/healthz")).send().unwrap();
    let der = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate().map(<[u8]>::to_vec))
        .expect("peer certificate");
    let text = String::from_utf8_lossy(&der).into_owned();
    if text.contains("second") {
        "second".into()
    } else if text.contains("first") {
        "first".into()
    } else {
        "unknown".into()
    }
}

#[test]
fn policy_reload_good_and_bad_and_sigterm_drains() {
    let c = cluster();
    // As deploy/ runs it: the optional registry secret is not mounted.
    let server = start_serve(
        &c.policy,
        &c.tls,
        &c.reg.host(),
        &["--registry-config", "/nonexistent/.dockerconfigjson"],
    );
    let client = tls_client(&c.tls);
    let allowed = |image: &str| -> bool {
        let out: serde_json::Value = client
            .post(server.url("/validate"))
            .json(&pod_review("u-1", image))
            .send()
            .unwrap()
            .json()
            .unwrap();
        out["response"]["allowed"].as_bool().unwrap()
    };
    assert!(!allowed(&c.unsigned));
    // A broken policy is refused: the last good one stays.
    let good = std::fs::read_to_string(&c.policy).unwrap();
    std::fs::write(
        &c.policy,
        "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nrules: [oops\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(allowed(&c.signed), "the last good policy must stay");
    assert!(!allowed(&c.unsigned));
    // A good new policy (audit mode) is taken: the unsigned image is now allowed.
    std::fs::write(
        &c.policy,
        good.replace("authorities:", "mode: audit\n    authorities:"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !allowed(&c.unsigned) {
        assert!(Instant::now() < deadline, "the new policy was not loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = http_get(server.metrics, "/metrics");
    assert!(
        metrics.contains("ocigate_policy_reload_failures_total 1"),
        "{metrics}"
    );

    // SIGTERM: the process exits 0 (after draining).
    let mut server = server;
    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            assert!(st.success(), "{st:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM while admission requests are in flight (the registry behind the tests' proxy answers
/// slowly, so each verification takes about a second): every request gets its answer, new
/// connections are refused, and the process exits 0.
#[test]
fn sigterm_under_load_loses_no_in_flight_response() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let c = cluster();
    let delay = Arc::new(AtomicU64::new(0));
    let proxied = Arc::new(AtomicU64::new(0));
    let (d, p) = (delay.clone(), proxied.clone());
    let front = crate::proxy::proxy(c.reg.host(), move |_, resp| {
        p.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(d.load(Ordering::SeqCst)));
        resp
    });
    // The same images, through the slow front: a rule for the front's host, and the signatures
    // name the registry's own host, so the signed identity is not compared here.
    let policy = c.dir.path().join("front-policy.yaml");
    std::fs::write(
        &policy,
        std::fs::read_to_string(&c.policy)
            .unwrap()
            .replace(&c.reg.host(), &front.host())
            .replace(
                "    authorities:",
                "    signedIdentity: ignore\n    authorities:",
            ),
    )
    .unwrap();
    let mut server = start_serve(&policy, &c.tls, &front.host(), &["--grace", "20s"]);
    delay.store(300, Ordering::SeqCst);
    let signed = c.signed.replace(&c.reg.host(), &front.host());
    let url = server.url("/validate");
    let ca = std::fs::read(&c.tls.ca).unwrap();
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let (url, ca, image) = (url.clone(), ca.clone(), signed.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                // Eight requests (distinct uids) for one image: they share one verification.
                let review = pod_review(&format!("u-{i}"), &image);
                let resp = client.post(&url).json(&review).send();
                resp.map(|r| {
                    let status = r.status().as_u16();
                    (status, r.json::<serde_json::Value>().ok(), Instant::now())
                })
            })
        })
        .collect();
    // Let the requests arrive, then ask the server to stop while they are verifying: once the
    // registry has been asked (bounded wait; a loaded machine may take a while to get there).
    let asked = Instant::now() + Duration::from_secs(20);
    while proxied.load(Ordering::SeqCst) == 0 && Instant::now() < asked {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let terminated = Instant::now();
    let mut answered_after = 0;
    for w in workers {
        // A request that had not connected by SIGTERM is refused, as it should be: not in
        // flight. One that had connected must be answered.
        let (status, body, at) = match w.join().unwrap() {
            Err(e) if e.is_connect() => continue,
            answer => answer.expect("an in-flight request lost its answer"),
        };
        assert_eq!(status, 200);
        if at > terminated {
            answered_after += 1;
        }
        let body = body.expect("JSON answer");
        assert_eq!(body["response"]["allowed"], true, "{body}");
    }
    assert!(
        answered_after > 0,
        "no request was still in flight at SIGTERM: the test proved nothing"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            assert!(st.success(), "{st:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // No longer accepting.
    assert!(std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err());
}

/// The Kubernetes API hangs while the webhook reads a HelmRelease's HelmRepository: the answer
/// is a deny at the request's deadline (1 s here), not a hang until the API client gives up.
#[test]
fn a_hanging_kubernetes_api_is_bounded_by_the_deadline() {
    let c = cluster();
    // Accepts connections and never answers (stops by itself after 60 s).
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        hung.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok((s, _)) = hung.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let kubeconfig = c.dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://127.0.0.1:{hung_port}\"}}\n\
             users:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let server = start_serve(
        &c.policy,
        &c.tls,
        &c.reg.host(),
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--deadline",
            "1s",
        ],
    );
    let release = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "hr-1", "kind": {"group": "helm.toolkit.fluxcd.io", "version": "v2", "kind": "HelmRelease"},
            "resource": {"group": "helm.toolkit.fluxcd.io", "version": "v2", "resource": "helmreleases"},
            "name": "r", "namespace": "flux", "operation": "CREATE", "userInfo": {"username": "flux"},
            "object": {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                       "metadata": {"name": "r", "namespace": "flux"},
                       "spec": {"interval": "5m", "chart": {"spec": {"chart": "c",
                                "sourceRef": {"kind": "HelmRepository", "name": "charts"}}}}}
        }
    });
    let t = Instant::now();
    let out: serde_json::Value = tls_client(&c.tls)
        .post(server.url("/validate"))
        .json(&release)
        .send()
        .unwrap()
        .json()
        .unwrap();
    // The API client alone would wait 5 s: the bound is well above 1 s and below that.
    assert!(
        t.elapsed() < Duration::from_millis(4500),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(out["response"]["allowed"], false, "{out}");
    let msg = out["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("timed out reading"), "{msg}");
}

#[test]
fn a_pod_pinned_to_an_unsigned_platform_manifest_of_a_signed_index_is_told_why() {
    let Some(k) = kube_tools_or_skip(
        "a_pod_pinned_to_an_unsigned_platform_manifest_of_a_signed_index_is_told_why",
    ) else {
        return;
    };
    let c = cluster();
    let multi = c.reg.reference("apps/multi:v2");
    let (index, children) = push_index(&c.reg.client(), &multi, &["linux/amd64", "linux/arm64"]);
    let key = c.dir.path().join("k.key");
    assert_eq!(sign(&c.reg, &key, &multi.to_string(), &[]).code, 0);
    let server = start_serve(&c.policy, &c.tls, &c.reg.host(), &[]);

    // By tag: the index's signature is the one checked, as cosign does.
    let by_tag = write(c.dir.path(), "tag.yaml", &pod("tag", &multi.to_string()));
    let run = kwhclient(&k, &server, &c.tls, &by_tag, &[]);
    assert_eq!(run.code, 0, "{run:?}");

    // Pinned to the arm64 manifest under the tag: denied, and told that the index is signed.
    let pinned = multi.with_digest(children[1].clone()).to_string();
    let obj = write(c.dir.path(), "pinned.yaml", &pod("pinned", &pinned));
    let run = kwhclient(&k, &server, &c.tls, &obj, &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("[unsigned]"), "{run:?}");
    assert!(
        run.stdout.contains(&format!("names the index {index}"))
            && run.stdout.contains("(for linux/arm64)")
            && run.stdout.contains("sign --recursive"),
        "{run:?}"
    );
}
