//! The bearer-token flow, as Docker Hub, GHCR and Harbor use it: the registry (distribution with
//! `auth: token`) answers 401 with a Bearer challenge; the client asks the realm for a token for
//! a scope (anonymously or with basic credentials) and retries with it. The token server here
//! is a small HTTP/1.1 responder issuing ES256 JWTs signed by a certificate the registry trusts.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;

use crate::harness::*;

const USER: &str = "release-bot";
const SECRET: &str = "t0ken-pass";

struct TokenServer {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Tokens issued, and requests refused.
    issued: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
    cert_pem: String,
}

impl TokenServer {
    fn start() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["token-issuer.test".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_der = cert.der().to_vec();
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der())
                .unwrap();

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (s, i, r) = (stop.clone(), issued.clone(), refused.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: at most 10 minutes or until dropped.
            let deadline = std::time::Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).ok();
                        stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
                        handle(stream, &signer, &cert_der, &i, &r);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TokenServer {
            port,
            stop,
            issued,
            refused,
            thread: Some(thread),
            cert_pem: cert.pem(),
        }
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn handle(
    stream: std::net::TcpStream,
    signer: &EcdsaKeyPair,
    cert_der: &[u8],
    issued: &AtomicUsize,
    refused: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(v.trim().to_string());
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut scopes = Vec::new();
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("scope=") {
            scopes.push(
                v.replace("%3A", ":")
                    .replace("%2C", ",")
                    .replace("%2F", "/"),
            );
        }
    }
    let authenticated = match authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
    {
        None => false,
        Some(b) => {
            let want = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"));
            if b != want {
                refused.fetch_add(1, Ordering::Relaxed);
                let _ = (&stream).write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
            true
        }
    };
    // Grants: authenticated users get what they ask; anonymous users may pull public/*.
    let mut access = Vec::new();
    for scope in scopes {
        let parts: Vec<&str> = scope.splitn(3, ':').collect();
        if parts.len() != 3 || parts[0] != "repository" {
            continue;
        }
        let actions: Vec<&str> = parts[2]
            .split(',')
            .filter(|a| authenticated || (*a == "pull" && parts[1].starts_with("public/")))
            .collect();
        access
            .push(serde_json::json!({"type": "repository", "name": parts[1], "actions": actions}));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({
        "typ": "JWT", "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(cert_der)],
    });
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": if authenticated { USER } else { "" }, "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{now}-{}", issued.load(Ordering::Relaxed)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(&header).unwrap()),
        b64url(&serde_json::to_vec(&claims).unwrap())
    );
    let sig = signer
        .sign(&SystemRandom::new(), signing_input.as_bytes())
        .unwrap();
    let token = format!("{signing_input}.{}", b64url(sig.as_ref()));
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    issued.fetch_add(1, Ordering::Relaxed);
    let _ = (&stream).write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

#[test]
fn bearer_token_flow_anonymous_and_with_credentials() {
    let tokens = TokenServer::start();
    let reg = TestRegistry::start_with_token_auth(&tokens.realm(), &tokens.cert_pem);
    let host = reg.host();
    let with_creds = reg.client_with(|s| {
        s.add_credentials_flag(&format!("{host}={USER}:{SECRET}"))
            .unwrap();
    });
    let public = reg.reference("public/app:v1");
    let private = reg.reference("private/app:v1");
    push_image(&with_creds, &public, "public image");
    push_image(&with_creds, &private, "private image");

    let dir = tempfile::tempdir().unwrap();
    let (key, pubkey) = generate_keys(dir.path(), "k");
    let creds = format!("{host}={USER}:{SECRET}");
    for r in [&public, &private] {
        let s = sign(&reg, &key, &r.to_string(), &["--registry-creds", &creds]);
        assert_eq!(s.code, 0, "{s:?}");
    }
    let pk = pubkey.to_str().unwrap();

    // Anonymous pull token for a public repository.
    let v = verify(&reg, &[&public.to_string(), "--key", pk]);
    assert_eq!(v.code, 0, "{v:?}");
    // Anonymous token without pull rights on a private repository: access denied, not unsigned.
    let v = verify(&reg, &[&private.to_string(), "--key", pk, "-o", "json"]);
    assert_eq!(v.code, 1, "{v:?}");
    let res = &v.json()["results"][0];
    assert_eq!(res["failure"], "auth", "{v:?}");
    assert!(
        res["reasons"][0]
            .as_str()
            .unwrap()
            .contains("access denied"),
        "{v:?}"
    );
    // With credentials the token server grants pull.
    let v = verify(
        &reg,
        &[
            &private.to_string(),
            "--key",
            pk,
            "--registry-creds",
            &creds,
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    // Wrong credentials are refused at the token server.
    let before = tokens.refused.load(Ordering::Relaxed);
    let bad = format!("{host}={USER}:nope");
    let v = verify(
        &reg,
        &[&private.to_string(), "--key", pk, "--registry-creds", &bad],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("access denied"), "{v:?}");
    assert!(tokens.refused.load(Ordering::Relaxed) > before);
    assert!(tokens.issued.load(Ordering::Relaxed) >= 4);
}

/// A registry on the token flow redirects a blob to another origin (as registries do to their
/// storage): neither the registry's token nor its credentials go there.
#[test]
fn registry_token_does_not_follow_a_redirect_to_another_origin() {
    use crate::proxy::{HttpServer, Response, proxy};
    let tokens = TokenServer::start();
    let reg = TestRegistry::start_with_token_auth(&tokens.realm(), &tokens.cert_pem);
    let other = HttpServer::start(|_| Response::new(404));
    let target = other.url("");
    let hostile = std::sync::Arc::new(AtomicBool::new(false));
    let h = hostile.clone();
    let front = proxy(reg.host(), move |req, resp| {
        if h.load(Ordering::SeqCst) && req.method == "GET" && req.path.contains("/blobs/sha256:") {
            Response::new(307).header("Location", &format!("{target}{}", req.path))
        } else {
            resp
        }
    });
    let host = front.host();
    let creds = format!("{host}={USER}:{SECRET}");
    let mut settings = ocigate::registry::RegistrySettings::default();
    settings.add_plain_http(&host).unwrap();
    settings.add_credentials_flag(&creds).unwrap();
    let client = ocigate::registry::Registry::new(settings);
    let r = ocigate::reference::ImageRef::parse(&format!("{host}/private/app:v1")).unwrap();
    push_image(&client, &r, "redirected");
    let dir = tempfile::tempdir().unwrap();
    let (key, pubkey) = generate_keys(dir.path(), "k");
    let signed = ocigate(
        &[
            "sign",
            &r.to_string(),
            "--key",
            key.to_str().unwrap(),
            "--registry-plain-http",
            &host,
            "--registry-creds",
            &creds,
        ],
        &[("OCIGATE_PASSWORD", PASSWORD)],
    );
    assert_eq!(signed.code, 0, "{signed:?}");
    hostile.store(true, Ordering::SeqCst);
    let v = ocigate(
        &[
            "verify",
            &r.to_string(),
            "--key",
            pubkey.to_str().unwrap(),
            "--registry-plain-http",
            &host,
            "--registry-creds",
            &creds,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "registry", "{v:?}");
    let seen = other.seen();
    assert!(!seen.is_empty(), "the redirect was not followed");
    for req in seen {
        assert!(
            req.header("authorization").is_none(),
            "credential sent to the redirect target: {req:?}"
        );
    }
}
