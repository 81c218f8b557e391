//! `serve --client-ca`: reviews are answered only for a client certificate issued by those CAs
//! (and naming a `--client-name`), as kube-apiserver presents one from its
//! AdmissionConfiguration; the probes stay open; a CA taken out of the file (or a file that no
//! longer loads) stops being trusted at the next reload. Through kube's admission client
//! (`kwhclient -client-cert`) and a plain HTTPS client.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::webhook::{Server, kube_tools_or_skip, kwhclient, pod_review, start_serve};

const ALLOW_ALL: &str = "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: allow\n\
    rules:\n  - name: none\n    images: [\"nothing.invalid/**\"]\n    \
    authorities: [{keyless: {identities: [{issuer: https://x, subject: y}]}}]\n";

/// An HTTPS client trusting the server's CA, with `identity` (cert, key) if given.
fn client(tls: &Tls, identity: Option<&(PathBuf, PathBuf)>) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&tls.ca).unwrap()).unwrap();
    let mut b = reqwest::blocking::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(20));
    if let Some((c, k)) = identity {
        let mut pem = std::fs::read(c).unwrap();
        pem.extend(std::fs::read(k).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// POST a Pod review to /validate with a new client: the status, or the connection error.
fn review(
    server: &Server,
    tls: &Tls,
    identity: Option<&(PathBuf, PathBuf)>,
) -> Result<u16, String> {
    review_with(server, &client(tls, identity))
}

/// [`review`] with `client` (its connection kept alive, its TLS sessions kept).
fn review_with(server: &Server, client: &reqwest::blocking::Client) -> Result<u16, String> {
    client
        .post(server.url("/validate"))
        .json(&pod_review("u1", "docker.io/library/busybox:1"))
        .send()
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

fn pod_file(dir: &Path) -> PathBuf {
    let pod = dir.join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: apps}\n\
         spec:\n  containers:\n  - {name: app, image: \"docker.io/library/busybox:1\"}\n",
    )
    .unwrap();
    pod
}

#[test]
fn reviews_need_a_client_certificate_from_the_client_ca() {
    let Some(k) = kube_tools_or_skip("reviews_need_a_client_certificate_from_the_client_ca") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tls = make_tls(d);
    // The API server's client CA, and a CA nobody configured.
    std::fs::create_dir_all(d.join("clients")).unwrap();
    std::fs::create_dir_all(d.join("strangers")).unwrap();
    let clients = make_tls(&d.join("clients"));
    let strangers = make_tls(&d.join("strangers"));
    let apiserver = issue_client_cert_named(&clients, &d.join("clients"), "kube-apiserver");
    let other_name = {
        std::fs::create_dir_all(d.join("other")).unwrap();
        issue_client_cert_named(&clients, &d.join("other"), "a-tenant")
    };
    let stranger = issue_client_cert_named(&strangers, &d.join("strangers"), "kube-apiserver");
    let policy = d.join("policy.yaml");
    std::fs::write(&policy, ALLOW_ALL).unwrap();
    let ca = clients.ca.to_str().unwrap().to_string();
    let server = start_serve(
        &policy,
        &tls,
        "127.0.0.1:1",
        &["--client-ca", &ca, "--client-name", "kube-apiserver"],
    );
    // kube's own admission client with the API server's certificate: answered.
    let pod = pod_file(d);
    let cert = ["-client-cert", apiserver.0.to_str().unwrap()];
    let key = ["-client-key", apiserver.1.to_str().unwrap()];
    let run = kwhclient(&k, &server, &tls, &pod, &[cert, key].concat());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("ADMITTED"), "{run:?}");
    // Without a certificate: not a review (kube's client reports the webhook's failure).
    let run = kwhclient(&k, &server, &tls, &pod, &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("ADMITTED"), "{run:?}");
    assert_eq!(review(&server, &tls, None), Ok(401));
    // A certificate from the CA with another name: refused.
    assert_eq!(review(&server, &tls, Some(&other_name)), Ok(403));
    // A certificate from another CA: the handshake fails.
    assert!(review(&server, &tls, Some(&stranger)).is_err());
    assert_eq!(review(&server, &tls, Some(&apiserver)), Ok(200));
    // The kubelet's probes have no certificate.
    let probe = client(&tls, None)
        .get(server.url("/readyz"))
        .send()
        .unwrap();
    assert_eq!(probe.status().as_u16(), 200);
}

/// Poll `review` with `identity` until it gives `want` (within 10 s of 200 ms reloads).
fn until(
    server: &Server,
    tls: &Tls,
    identity: &(PathBuf, PathBuf),
    want: bool,
) -> Result<u16, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = review(server, tls, Some(identity));
        if got.as_ref().is_ok_and(|s| *s == 200) == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_client_ca_taken_out_of_its_file_is_no_longer_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tls = make_tls(d);
    for sub in ["old", "new"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let (old, new) = (make_tls(&d.join("old")), make_tls(&d.join("new")));
    let old_client = issue_client_cert(&old, &d.join("old"));
    let new_client = issue_client_cert(&new, &d.join("new"));
    let policy = d.join("policy.yaml");
    std::fs::write(&policy, ALLOW_ALL).unwrap();
    let ca_file = d.join("client-ca.pem");
    std::fs::copy(&old.ca, &ca_file).unwrap();
    let server = start_serve(
        &policy,
        &tls,
        "127.0.0.1:1",
        &["--client-ca", ca_file.to_str().unwrap()],
    );
    assert_eq!(review(&server, &tls, Some(&old_client)), Ok(200));
    // A client that keeps its connection alive, and one that keeps only its TLS sessions.
    let kept_alive = client(&tls, Some(&old_client));
    let resuming = {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&tls.ca).unwrap()).unwrap();
        let mut pem = std::fs::read(&old_client.0).unwrap();
        pem.extend(std::fs::read(&old_client.1).unwrap());
        reqwest::blocking::Client::builder()
            .tls_certs_only([ca])
            .identity(reqwest::Identity::from_pem(&pem).unwrap())
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    assert_eq!(review_with(&server, &kept_alive), Ok(200));
    assert_eq!(review_with(&server, &resuming), Ok(200));
    // The CA is rotated: the old client is refused, the new one answered.
    let replace = |bytes: &[u8]| {
        std::fs::write(d.join("client-ca.tmp"), bytes).unwrap();
        std::fs::rename(d.join("client-ca.tmp"), &ca_file).unwrap();
    };
    replace(&std::fs::read(&new.ca).unwrap());
    assert!(until(&server, &tls, &old_client, false).is_err());
    assert_eq!(until(&server, &tls, &new_client, true), Ok(200));
    // Neither the kept connection nor a resumed session carries the old identity over.
    assert_ne!(review_with(&server, &kept_alive), Ok(200));
    assert_ne!(review_with(&server, &resuming), Ok(200));
    // A file that no longer loads trusts no client (not the last CAs that did)...
    let kept_alive = client(&tls, Some(&new_client));
    assert_eq!(review_with(&server, &kept_alive), Ok(200));
    replace(b"not a certificate\n");
    assert!(until(&server, &tls, &new_client, false).is_err());
    assert_ne!(review_with(&server, &kept_alive), Ok(200));
    replace(&std::fs::read(&new.ca).unwrap());
    assert_eq!(until(&server, &tls, &new_client, true), Ok(200));
    // ...nor does one deleted, or one left empty (beyond a rewrite caught half way).
    std::fs::remove_file(&ca_file).unwrap();
    assert!(until(&server, &tls, &new_client, false).is_err());
    replace(&std::fs::read(&new.ca).unwrap());
    assert_eq!(until(&server, &tls, &new_client, true), Ok(200));
    replace(b"");
    assert!(until(&server, &tls, &new_client, false).is_err());
}
