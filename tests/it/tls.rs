//! Registries over TLS (issue #8, point 3): the real docker-registry serving HTTPS with a
//! certificate from a test CA (rcgen), with htpasswd (bcrypt) basic auth, and an mTLS instance
//! that requires a client certificate. Also: a plain-HTTP registry behind an https URL, and an
//! HTTP proxy from the environment.

use std::path::{Path, PathBuf};

use crate::harness::*;
use crate::proxy::{HttpServer, Response, forward};

const USER: &str = "tls-bot";
const SECRET: &str = "tls-s3cret";

struct Signed {
    reg: TestRegistry,
    reference: String,
    public: PathBuf,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

/// A TLS registry (optionally mTLS, optionally basic auth) holding one image signed by
/// `ocigate sign` over TLS.
fn signed_tls(tls_dir: &Path, mtls: bool, basic: bool) -> (Signed, Tls) {
    let tls = make_tls(tls_dir);
    let reg = TestRegistry::start_tls(&tls, mtls, basic.then_some((USER, SECRET)));
    let host = reg.host();
    let client = reg.client_with(|s| {
        if basic {
            s.add_credentials_flag(&format!("{host}={USER}:{SECRET}"))
                .unwrap();
        }
    });
    let r = reg.reference("acme/app:v1");
    push_image(&client, &r, "tls");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let ca = format!("{host}={}", tls.ca.display());
    let mut args = vec![
        "sign".to_string(),
        r.to_string(),
        "--key".into(),
        key.display().to_string(),
        "--registry-ca-file".into(),
        ca,
    ];
    if basic {
        args.extend(["--registry-creds".into(), format!("{host}={USER}:{SECRET}")]);
    }
    if mtls {
        let (cert, key) = issue_client_cert(&tls, dir.path());
        args.extend([
            "--registry-cert-file".into(),
            format!("{host}={}", cert.display()),
            "--registry-key-file".into(),
            format!("{host}={}", key.display()),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = ocigate(&args, &[("OCIGATE_PASSWORD", PASSWORD)]);
    assert_eq!(s.code, 0, "{s:?}");
    let ca = tls.ca.clone();
    (
        Signed {
            reference: r.to_string(),
            reg,
            public,
            ca,
            _dir: dir,
        },
        tls,
    )
}

fn verify_tls(s: &Signed, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = vec![
        "verify",
        &s.reference,
        "--key",
        s.public.to_str().unwrap(),
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    ocigate(&args, env)
}

fn reason(v: &Run) -> String {
    v.json()["results"][0]["reasons"][0]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_tls_registry_needs_its_ca_or_an_explicit_skip() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _tls) = signed_tls(tmp.path(), false, false);
    let host = s.reg.host();
    // A loopback host is tried over HTTPS (verified) first: against a TLS registry whose CA
    // is not given that fails, as a registry failure (not "unsigned"), and the reason names
    // the real problem, the unknown certificate authority (not the "HTTP 400" its plain-HTTP
    // port would answer), and the flags that fix it.
    let v = verify_tls(&s, &[], &[]);
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "registry", "{v:?}");
    let r = reason(&v);
    assert!(
        r.contains(&format!("the TLS certificate of {host}"))
            && r.contains("unknown certificate authority")
            && r.contains("--registry-ca-file")
            && !r.contains("HTTP 400"),
        "{r}"
    );
    // TLS without the CA: the certificate is not trusted.
    let https = format!("https://{host}");
    let v = verify_tls(&s, &["--registry-ca-file", "x=/nonexistent"], &[]);
    assert_eq!(
        v.code, 2,
        "a CA file that cannot be read is a usage error: {v:?}"
    );
    assert!(
        v.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent"),
        "{v:?}"
    );
    let v = ocigate(
        &[
            "verify",
            &s.reference,
            "--key",
            s.public.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[("OCIGATE_REGISTRY_HOST", &https)],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "registry", "{v:?}");
    let r = reason(&v);
    assert!(
        r.contains(&host) && r.to_lowercase().contains("certificate"),
        "{r}"
    );
    // A CA the platform trusts (here through SSL_CERT_FILE, which the platform verifier
    // reads on Linux) needs no flag: the loopback host is found to speak TLS and verified.
    let v = verify_tls(&s, &[], &[("SSL_CERT_FILE", s.ca.to_str().unwrap())]);
    assert_eq!(v.code, 0, "{v:?}");
    // With the CA (flag, or environment set): verified.
    let ca = format!("{host}={}", s.ca.display());
    let v = verify_tls(&s, &["--registry-ca-file", &ca], &[]);
    assert_eq!(v.code, 0, "{v:?}");
    let v = verify_tls(
        &s,
        &[],
        &[
            ("OCIGATE_REGISTRY_1_HOST", &host),
            ("OCIGATE_REGISTRY_1_CA_FILE", s.ca.to_str().unwrap()),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    // Or with verification skipped, by flag (ours, or cosign's spelling for the references'
    // registries) or environment set.
    let v = verify_tls(&s, &["--registry-insecure-skip-tls-verify", &host], &[]);
    assert_eq!(v.code, 0, "{v:?}");
    let v = verify_tls(&s, &["--allow-insecure-registry"], &[]);
    assert_eq!(v.code, 0, "{v:?}");
    let v = verify_tls(
        &s,
        &[],
        &[
            ("OCIGATE_REGISTRY_HOST", &host),
            ("OCIGATE_REGISTRY_INSECURE_SKIP_TLS_VERIFY", "true"),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
}

#[test]
fn basic_auth_over_tls_names_the_credential_that_was_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _tls) = signed_tls(tmp.path(), false, true);
    let host = s.reg.host();
    let ca = format!("{host}={}", s.ca.display());
    // No credentials: denied, and it says none were sent.
    let v = verify_tls(&s, &["--registry-ca-file", &ca], &[]);
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "auth", "{v:?}");
    let r = reason(&v);
    assert!(r.contains("no credentials were sent"), "{r}");
    // Wrong credentials from an environment set: it names the set, never the password.
    let v = verify_tls(
        &s,
        &["--registry-ca-file", &ca],
        &[
            ("OCIGATE_REGISTRY_3_HOST", &host),
            ("OCIGATE_REGISTRY_3_USERNAME", USER),
            ("OCIGATE_REGISTRY_3_PASSWORD", "wrong-password"),
        ],
    );
    assert_eq!(v.code, 1, "{v:?}");
    let r = reason(&v);
    assert!(
        r.contains("credentials from OCIGATE_REGISTRY_3_* were sent"),
        "{r}"
    );
    assert!(!v.stdout.contains("wrong-password") && !v.stderr.contains("wrong-password"));
    // Right credentials from a file (not on the command line) and from stdin.
    let file = tmp.path().join("creds.txt");
    std::fs::write(&file, format!("# CI robot\n{host}={USER}:{SECRET}\n")).unwrap();
    let v = verify_tls(
        &s,
        &[
            "--registry-ca-file",
            &ca,
            "--registry-creds-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{v:?}");
    let v = ocigate_with_stdin(
        &[
            "verify",
            &s.reference,
            "--key",
            s.public.to_str().unwrap(),
            "--registry-ca-file",
            &ca,
            "--registry-creds-file",
            "-",
        ],
        &[],
        format!("{host}={USER}:{SECRET}\n").as_bytes(),
    );
    assert_eq!(v.code, 0, "{v:?}");
    // Two sets on one host, by repository: the repository's set is used, not the other.
    let v = verify_tls(
        &s,
        &["--registry-ca-file", &ca],
        &[
            ("OCIGATE_REGISTRY_1_HOST", &host),
            ("OCIGATE_REGISTRY_1_USERNAME", USER),
            ("OCIGATE_REGISTRY_1_PASSWORD", "wrong-for-everything-else"),
            ("OCIGATE_REGISTRY_2_HOST", &host),
            ("OCIGATE_REGISTRY_2_REPOSITORY", "acme/*"),
            ("OCIGATE_REGISTRY_2_USERNAME", USER),
            ("OCIGATE_REGISTRY_2_PASSWORD", SECRET),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    let v = verify_tls(
        &s,
        &["--registry-ca-file", &ca],
        &[
            ("OCIGATE_REGISTRY_1_HOST", &host),
            ("OCIGATE_REGISTRY_1_USERNAME", USER),
            ("OCIGATE_REGISTRY_1_PASSWORD", SECRET),
            ("OCIGATE_REGISTRY_2_HOST", &host),
            ("OCIGATE_REGISTRY_2_REPOSITORY", "other-org/*"),
            ("OCIGATE_REGISTRY_2_USERNAME", USER),
            ("OCIGATE_REGISTRY_2_PASSWORD", "wrong"),
        ],
    );
    assert_eq!(v.code, 0, "the other org's set must not be used: {v:?}");
}

#[test]
fn an_mtls_registry_needs_a_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, tls) = signed_tls(tmp.path(), true, false);
    let host = s.reg.host();
    let ca = format!("{host}={}", s.ca.display());
    let v = verify_tls(&s, &["--registry-ca-file", &ca], &[]);
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "registry", "{v:?}");
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = issue_client_cert(&tls, certs.path());
    let cert_arg = format!("{host}={}", cert.display());
    let key_arg = format!("{host}={}", key.display());
    // A certificate without its key is a usage error, said at start.
    let v = verify_tls(
        &s,
        &["--registry-ca-file", &ca, "--registry-cert-file", &cert_arg],
        &[],
    );
    assert_eq!(v.code, 2, "{v:?}");
    assert!(
        v.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no key"),
        "{v:?}"
    );
    let v = verify_tls(
        &s,
        &[
            "--registry-ca-file",
            &ca,
            "--registry-cert-file",
            &cert_arg,
            "--registry-key-file",
            &key_arg,
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{v:?}");
    let v = verify_tls(
        &s,
        &[],
        &[
            ("OCIGATE_REGISTRY_HOST", &host),
            ("OCIGATE_REGISTRY_CA_FILE", s.ca.to_str().unwrap()),
            ("OCIGATE_REGISTRY_CERT_FILE", cert.to_str().unwrap()),
            ("OCIGATE_REGISTRY_KEY_FILE", key.to_str().unwrap()),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
}

#[test]
fn a_plain_http_registry_behind_an_https_url_is_named() {
    let reg = TestRegistry::start();
    let r = reg.reference("acme/app:v1");
    push_image(&reg.client(), &r, "plain");
    let host = reg.host();
    let https = format!("https://{host}");
    let keys = tempfile::tempdir().unwrap();
    let (_, public) = generate_keys(keys.path(), "k");
    let v = ocigate(
        &[
            "verify",
            &r.to_string(),
            "--key",
            public.to_str().unwrap(),
            "--registry-insecure-skip-tls-verify",
            &https,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "registry", "{v:?}");
    let r = reason(&v);
    assert!(
        r.contains("answered a TLS handshake in plain HTTP")
            && r.contains(&format!("--registry-plain-http {host}")),
        "{r}"
    );
}

/// cosign's `--allow-insecure-registry` against a plain-HTTP registry: HTTPS (unverified) is
/// tried first and the registry's plain-HTTP answer to the handshake falls back to plain HTTP,
/// as cosign and Docker do; with `OCIGATE_REGISTRY_PLAIN_HTTP=true` (or
/// `--registry-plain-http`) for the same host the flags agree, no usage error.
#[test]
fn allow_insecure_registry_reaches_a_plain_http_registry() {
    let reg = TestRegistry::start();
    let r = reg.reference("acme/app:v1").to_string();
    push_image(
        &reg.client(),
        &reg.reference("acme/app:v1"),
        "insecure plain",
    );
    let host = reg.host();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(keys.path(), "k");
    let pk = public.to_str().unwrap();
    // Signed without any scheme flag: the loopback default finds plain HTTP by itself.
    let s = ocigate(
        &["sign", &r, "--key", key.to_str().unwrap()],
        &[("OCIGATE_PASSWORD", PASSWORD)],
    );
    assert_eq!(s.code, 0, "{s:?}");
    let v = ocigate(
        &["verify", &r, "--key", pk, "--allow-insecure-registry"],
        &[],
    );
    assert_eq!(v.code, 0, "{v:?}");
    let v = ocigate(
        &["verify", &r, "--key", pk, "--allow-insecure-registry"],
        &[
            ("OCIGATE_REGISTRY_HOST", &host),
            ("OCIGATE_REGISTRY_PLAIN_HTTP", "true"),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    let v = ocigate(
        &[
            "verify",
            &r,
            "--key",
            pk,
            "--allow-insecure-registry",
            "--registry-plain-http",
            &host,
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{v:?}");
    // Unsigned stays unsigned over the fallback (the registry really was read).
    let u = reg.reference("acme/unsigned:v1");
    push_image(&reg.client(), &u, "insecure unsigned");
    let v = ocigate(
        &[
            "verify",
            &u.to_string(),
            "--key",
            pk,
            "--allow-insecure-registry",
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(v.json()["results"][0]["failure"], "unsigned", "{v:?}");
}

#[test]
fn an_http_proxy_from_the_environment_is_used() {
    // A forward proxy on loopback: it receives absolute-form requests for a host name that
    // does not resolve, and sends them to the real registry.
    let reg = TestRegistry::start();
    let upstream = reg.host();
    let r = reg.reference("acme/app:v1");
    push_image(&reg.client(), &r, "proxied");
    let fwd = HttpServer::start(move |req| {
        let mut req = req.clone();
        match req.path.strip_prefix("http://registry.ocigate.test:5000") {
            Some(path) => {
                req.path = path.to_string();
                forward(&upstream, &req)
            }
            None => Response::new(400).body("not a proxy request"),
        }
    });
    let reference = "registry.ocigate.test:5000/acme/app:v1";
    let proxy_url = format!("http://{}", fwd.host());
    let keys = tempfile::tempdir().unwrap();
    let (_, public) = generate_keys(keys.path(), "k");
    let v = ocigate(
        &[
            "verify",
            reference,
            "--key",
            public.to_str().unwrap(),
            "--registry-plain-http",
            "registry.ocigate.test:5000",
            "-o",
            "json",
        ],
        &[("HTTP_PROXY", &proxy_url), ("NO_PROXY", "")],
    );
    // The image is unsigned by that key: what matters is that the registry was reached.
    assert_eq!(v.json()["results"][0]["failure"], "unsigned", "{v:?}");
    assert!(
        fwd.seen()
            .iter()
            .any(|q| q.path.contains("/v2/acme/app/manifests/v1")),
        "the proxy saw: {:?}",
        fwd.seen()
            .iter()
            .map(|q| q.path.clone())
            .collect::<Vec<_>>()
    );
}

/// `serve` reads `--registry-cert-file` and `--registry-key-file` again when they change: a
/// client certificate the mTLS registry refuses (issued by another CA) fails the check as a
/// registry failure; the files rotated to one it accepts (renamed over, as a Secret update
/// does), the same Pod is admitted without a restart.
#[test]
fn serve_picks_up_a_rotated_registry_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, tls) = signed_tls(tmp.path(), true, false);
    let host = s.reg.host();
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("stranger")).unwrap();
    let stranger = make_tls(&d.path().join("stranger"));
    let (bad_cert, bad_key) = issue_client_cert(&stranger, &d.path().join("stranger"));
    let (cert, key) = (d.path().join("registry.crt"), d.path().join("registry.key"));
    std::fs::copy(&bad_cert, &cert).unwrap();
    std::fs::copy(&bad_key, &key).unwrap();
    let policy = d.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n\
             keys: [{{name: k, path: {}}}]\n\
             rules:\n  - name: all\n    images: [\"{host}/**\"]\n    \
             authorities: [{{key: {{name: k}}, tlog: skip}}]\n",
            s.public.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.path().join("webhook")).unwrap();
    let server_tls = make_tls(&d.path().join("webhook"));
    let (ca, cert_arg, key_arg) = (
        format!("{host}={}", s.ca.display()),
        format!("{host}={}", cert.display()),
        format!("{host}={}", key.display()),
    );
    let server = crate::webhook::start_serve(
        &policy,
        &server_tls,
        "127.0.0.1:1",
        &[
            "--registry-ca-file",
            &ca,
            "--registry-cert-file",
            &cert_arg,
            "--registry-key-file",
            &key_arg,
        ],
    );
    let client = crate::webhook::tls_client(&server_tls);
    let mut n = 0;
    let mut answer = || {
        n += 1;
        let review = crate::webhook::pod_review(&format!("u{n}"), &s.reference);
        let v: serde_json::Value = client
            .post(server.url("/validate"))
            .json(&review)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["response"].clone()
    };
    let first = answer();
    assert_eq!(first["allowed"], false, "{first}");
    assert!(first.to_string().contains("registry"), "{first}");
    // The Secret is renewed with a certificate the registry's CA issued.
    let (good_cert, good_key) = issue_client_cert(&tls, d.path());
    for (from, to) in [(&good_key, &key), (&good_cert, &cert)] {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    let start = std::time::Instant::now();
    loop {
        let a = answer();
        if a["allowed"] == true {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the rotated certificate was never used: {a}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
