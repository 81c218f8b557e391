//! The bearer-token flow, as Docker Hub, GHCR and Harbor use it: the registry (distribution with
//! `auth: token`) answers 401 with a Bearer challenge; the client asks the realm for a token for
//! a scope (anonymously or with basic credentials) and retries with it. The token server here
//! is a small HTTP/1.1 responder issuing ES256 JWTs signed by a certificate the registry trusts.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine as _;

use crate::harness::*;

pub(crate) const USER: &str = "release-bot";
pub(crate) const SECRET: &str = "t0ken-pass";

pub(crate) struct TokenServer {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Tokens issued, and requests refused.
    issued: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    /// Token requests by scope.
    by_scope: Arc<Mutex<BTreeMap<String, usize>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub(crate) cert_pem: String,
}

impl TokenServer {
    pub(crate) fn start() -> Self {
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
        let by_scope = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, i, r, b) = (
            stop.clone(),
            issued.clone(),
            refused.clone(),
            by_scope.clone(),
        );
        let thread = std::thread::spawn(move || {
            // Bounded: at most 10 minutes or until dropped.
            let deadline = std::time::Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).ok();
                        stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
                        handle(stream, &signer, &cert_der, &i, &r, &b);
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
            by_scope,
            thread: Some(thread),
            cert_pem: cert.pem(),
        }
    }

    pub(crate) fn realm(&self) -> String {
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
    by_scope: &Mutex<BTreeMap<String, usize>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = None;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0).min(64 << 10);
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    // GET: the query carries the scope; POST (the OAuth2 refresh-token exchange): the form.
    let mut form = vec![0u8; content_length];
    let _ = std::io::Read::read_exact(&mut reader, &mut form);
    let form = String::from_utf8_lossy(&form).into_owned();
    let query = if request_line.starts_with("POST ") {
        form.as_str()
    } else {
        target.split_once('?').map_or("", |(_, q)| q)
    };
    let decode = |v: &str| {
        v.replace("%3A", ":")
            .replace("%2C", ",")
            .replace("%2F", "/")
    };
    let mut scopes = Vec::new();
    let mut refresh = None;
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("scope=") {
            scopes.push(decode(v));
        } else if let Some(v) = pair.strip_prefix("refresh_token=") {
            refresh = Some(decode(v));
        }
    }
    if let Ok(mut by_scope) = by_scope.lock() {
        for sc in &scopes {
            *by_scope.entry(sc.clone()).or_insert(0) += 1;
        }
    }
    let authenticated = match (
        refresh,
        authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Basic ")),
    ) {
        (Some(r), _) => {
            if r != format!("refresh-{SECRET}") {
                refused.fetch_add(1, Ordering::Relaxed);
                let _ = (&stream).write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return;
            }
            true
        }
        (None, None) => false,
        (None, Some(b)) => {
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
    let hostile = Arc::new(AtomicBool::new(false));
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

/// The token flow with an identity (refresh) token, from an environment set and from a Docker
/// config's `identitytoken`; a bearer token used as is; and concurrent requests for one scope
/// share one token fetch.
#[test]
fn identity_tokens_bearer_tokens_and_one_token_fetch_per_scope() {
    let tokens = TokenServer::start();
    let reg = TestRegistry::start_with_token_auth(&tokens.realm(), &tokens.cert_pem);
    let host = reg.host();
    let with_creds = reg.client_with(|s| {
        s.add_credentials_flag(&format!("{host}={USER}:{SECRET}"))
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let (key, pubkey) = generate_keys(dir.path(), "k");
    let creds = format!("{host}={USER}:{SECRET}");
    let refs: Vec<String> = (0..6)
        .map(|i| {
            let r = reg.reference(&format!("private/many:v{i}"));
            push_image(&with_creds, &r, &format!("many {i}"));
            let s = sign(&reg, &key, &r.to_string(), &["--registry-creds", &creds]);
            assert_eq!(s.code, 0, "{s:?}");
            r.to_string()
        })
        .collect();
    let pk = pubkey.to_str().unwrap();
    let refresh = format!("refresh-{SECRET}");

    // IDENTITY_TOKEN: exchanged at the realm (POST, grant_type=refresh_token).
    let v = ocigate(
        &["verify", &refs[0], "--key", pk],
        &[
            ("OCIGATE_REGISTRY_HOST", &host),
            ("OCIGATE_REGISTRY_IDENTITY_TOKEN", &refresh),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    // A wrong one is refused, and the message names the set.
    let v = ocigate(
        &["verify", &refs[0], "--key", pk, "-o", "json"],
        &[
            ("OCIGATE_REGISTRY_HOST", &host),
            ("OCIGATE_REGISTRY_IDENTITY_TOKEN", "refresh-wrong"),
        ],
    );
    assert_eq!(v.code, 1, "{v:?}");
    let reason = v.json()["results"][0]["reasons"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("OCIGATE_REGISTRY_*"), "{reason}");
    assert!(!v.stdout.contains("refresh-wrong"), "{v:?}");
    // Docker's config.json `identitytoken`.
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        serde_json::json!({"auths": {host.clone(): {"identitytoken": refresh}}}).to_string(),
    )
    .unwrap();
    let v = ocigate(
        &["verify", &refs[0], "--key", pk],
        &[("DOCKER_CONFIG", docker.to_str().unwrap())],
    );
    assert_eq!(v.code, 0, "{v:?}");

    // TOKEN: a registry bearer token, sent as is (here one the realm issued for the scope).
    let scope = "repository:private/many:pull";
    let token: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!(
            "{}?scope={scope}&service={TOKEN_SERVICE}",
            tokens.realm()
        ))
        .basic_auth(USER, Some(SECRET))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let v = ocigate(
        &["verify", &refs[0], "--key", pk],
        &[
            ("OCIGATE_REGISTRY_HOST", &host),
            ("OCIGATE_REGISTRY_TOKEN", &token),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");

    // Six references of one repository verified in one call: one token fetch for its scope.
    let before = tokens
        .by_scope
        .lock()
        .unwrap()
        .get(scope)
        .copied()
        .unwrap_or(0);
    let mut args = vec!["verify", "--key", pk, "--registry-creds", &creds];
    args.extend(refs.iter().map(String::as_str));
    let v = ocigate(&args, &[]);
    assert_eq!(v.code, 0, "{v:?}");
    let after = tokens
        .by_scope
        .lock()
        .unwrap()
        .get(scope)
        .copied()
        .unwrap_or(0);
    assert_eq!(
        after - before,
        1,
        "token fetches for {scope}: {:?}",
        tokens.by_scope
    );
}

/// A proxy in front of a token-auth registry that answers 403 where the registry answers 401
/// to a request that carried a bearer token (a token without the scope): what GHCR, ECR and
/// Harbor answer to a valid token without access (distribution answers 401 and a new
/// challenge). Records every request, with its `Authorization` header.
pub(crate) fn strict_front(registry: String) -> crate::proxy::HttpServer {
    crate::proxy::proxy(registry, |req, resp| {
        let bearer = req
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "));
        if bearer && resp.status == 401 {
            crate::proxy::Response::new(403)
                .header("Content-Type", "application/json")
                .body(r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#)
        } else {
            resp
        }
    })
}

/// The bearer tokens in the requests `front` saw from index `from` on.
pub(crate) fn bearer_tokens(front: &crate::proxy::HttpServer, from: usize) -> Vec<String> {
    front
        .seen()
        .iter()
        .skip(from)
        .filter_map(|r| r.header("authorization")?.strip_prefix("Bearer "))
        .map(str::to_string)
        .collect()
}

/// Issue #15, point 6, in the engine the webhook uses: a token, a resolution and a decision
/// obtained with one request's credentials (a namespace's pull secret) are never served to a
/// request without them, and a token obtained anonymously first does not stand in for a
/// request that has credentials. Requests with the same credential still share them.
#[test]
fn tokens_resolutions_and_decisions_are_kept_per_credential() {
    use ocigate::engine::{Engine, EngineConfig};
    use ocigate::failure::Failure;
    use ocigate::policy::Verdict;
    use ocigate::registry::{Credential, Registry, RegistrySettings, Secret};

    let tokens = TokenServer::start();
    let reg = TestRegistry::start_with_token_auth(&tokens.realm(), &tokens.cert_pem);
    let front = strict_front(reg.host());
    let host = front.host();
    let creds = format!("{host}={USER}:{SECRET}");
    let mut settings = RegistrySettings::default();
    settings.add_plain_http(&host).unwrap();
    settings.add_credentials_flag(&creds).unwrap();
    let pusher = Registry::new(settings);
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let mut digests = Vec::new();
    for repo in ["private/app:v1", "private/other:v1"] {
        let r = ocigate::reference::ImageRef::parse(&format!("{host}/{repo}")).unwrap();
        digests.push(push_image(&pusher, &r, repo));
        let s = ocigate(
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
        assert_eq!(s.code, 0, "{s:?}");
    }
    let victim: ocigate::registry::RequestCredentials = Arc::new(BTreeMap::from([(
        host.clone(),
        Credential::new(
            Secret::Basic {
                username: USER.into(),
                password: SECRET.into(),
            },
            "imagePullSecret victim/regcred",
        ),
    )]));
    // The engine has no credentials of its own, as the webhook in a cluster.
    let mut settings = RegistrySettings::default();
    settings.add_plain_http(&host).unwrap();
    let engine = Engine::new(
        Registry::new(settings),
        crate::engine::key_policy(&public),
        EngineConfig::default(),
    );
    let as_victim = |r: &ocigate::reference::ImageRef| {
        block_on(ocigate::registry::with_request_credentials(
            victim.clone(),
            engine.check(r),
        ))
    };
    let app = ocigate::reference::ImageRef::parse(&format!("{host}/private/app:v1")).unwrap();
    let other = ocigate::reference::ImageRef::parse(&format!("{host}/private/other:v1")).unwrap();

    // (i) The victim's check, then the attacker's (no credentials) for the same private tag.
    let before = front.seen().len();
    let d = as_victim(&app);
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    let victim_tokens = bearer_tokens(&front, before);
    assert!(!victim_tokens.is_empty(), "the victim used no token");
    let before = front.seen().len();
    let d = block_on(engine.check(&app));
    assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
    assert_eq!(d.failure, Some(Failure::Auth), "{d:?}");
    assert!(d.digest.is_none(), "{d:?}");
    let said = format!("{d:?}");
    assert!(!said.contains(digests[0].as_str()), "{said}");
    let attacker_tokens = bearer_tokens(&front, before);
    assert!(
        attacker_tokens.iter().all(|t| !victim_tokens.contains(t)),
        "the attacker's requests carried the victim's token"
    );
    assert!(
        front.seen().len() > before,
        "the attacker was answered from the victim's cache"
    );
    // The victim again: from the cache (no request), as before.
    let before = front.seen().len();
    let d = as_victim(&app);
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert_eq!(
        front.seen().len(),
        before,
        "the victim's own cache was not used"
    );

    // (ii) The attacker first (its anonymous token cached), then the victim.
    let d = block_on(engine.check(&other));
    assert_eq!(d.failure, Some(Failure::Auth), "{d:?}");
    let d = as_victim(&other);
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");

    // Below the engine: the registry client's token cache alone.
    let mut settings = RegistrySettings::default();
    settings.add_plain_http(&host).unwrap();
    let client = Registry::new(settings);
    let m = block_on(ocigate::registry::with_request_credentials(
        victim.clone(),
        client.get_manifest(&app),
    ));
    assert!(matches!(m, Ok(Some(_))), "{m:?}");
    let before = front.seen().len();
    let m = block_on(client.get_manifest(&app));
    assert!(m.is_err(), "{m:?}");
    assert!(
        bearer_tokens(&front, before)
            .iter()
            .all(|t| !victim_tokens.contains(t)),
        "the anonymous request carried a token of the victim's"
    );
}
