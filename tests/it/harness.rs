//! Test harness: a real CNCF distribution registry on 127.0.0.1 (a free port, a temp dir),
//! the ocigate binary, key pairs, and images pushed through the registry's HTTP API.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ocigate::reference::{Digest, ImageRef};
use ocigate::registry::{
    Descriptor, ImageManifest, OCI_MANIFEST, Registry, RegistrySettings, TlsFile,
};

pub(crate) const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub(crate) const PASSWORD: &str = "test-password";
pub(crate) const TOKEN_SERVICE: &str = "ocigate-test-registry";
pub(crate) const TOKEN_ISSUER: &str = "ocigate-test-issuer";

pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Whether tests must fail rather than skip when a peer is missing (set in CI).
pub(crate) fn strict() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// A child process serving HTTP on a free loopback port; killed on drop.
struct Service {
    child: Child,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start what `command` builds for a free port and wait until it answers HTTP; a few attempts
/// in case another process takes the port between probe and bind.
fn spawn_on_free_port(what: &str, mut command: impl FnMut(u16) -> Command) -> Service {
    for _ in 0..5 {
        let port = free_port();
        let child = command(port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let mut service = Service { child, port };
        if wait_http(&mut service.child, port) {
            return service;
        }
    }
    panic!("{what} did not start");
}

/// A running registry (docker-registry, or ferro-oci-server), stopped on drop.
pub(crate) struct TestRegistry {
    service: Service,
    dir: tempfile::TempDir,
    /// For a TLS registry: the CA to trust, and the client certificate and key it requires.
    tls: Option<(PathBuf, Option<(PathBuf, PathBuf)>)>,
}

impl TestRegistry {
    pub(crate) fn start() -> Self {
        Self::start_with("")
    }

    /// A registry that requires HTTP basic auth (htpasswd) for every request.
    pub(crate) fn start_with_basic_auth(user: &str, password: &str) -> Self {
        let hash = bcrypt::hash(password, 5).expect("bcrypt");
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
        let extra = format!(
            "auth:\n  htpasswd:\n    realm: ocigate-test\n    path: {}\n",
            htpasswd.display()
        );
        Self::start_in(dir, &extra)
    }

    /// A registry using the token (bearer) flow: `realm` issues JWTs signed by the key of the
    /// certificate at `cert_pem`.
    pub(crate) fn start_with_token_auth(realm: &str, cert_pem: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let bundle = dir.path().join("token.crt");
        std::fs::write(&bundle, cert_pem).expect("bundle");
        let extra = format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            bundle.display()
        );
        Self::start_in(dir, &extra)
    }

    /// ferro-oci-server (crates.io), a registry that serves the OCI 1.1 referrers API, which
    /// distribution 2.8 lacks; installed by scripts/test.sh into ~/.cache/ocigate-tools/ferro (OCIGATE_TEST_FERRO). None (a loud skip,
    /// a failure in CI) when it is not installed.
    pub(crate) fn start_ferro_or_skip(test: &str) -> Option<Self> {
        let bin = [
            std::env::var_os("OCIGATE_TEST_FERRO").map(PathBuf::from),
            Some(repo_root().join(".cache/ferro/bin/ferro-oci-server")),
        ]
        .into_iter()
        .flatten()
        .find(|p| p.is_file());
        let Some(bin) = bin else {
            if strict() {
                panic!("{test}: ferro-oci-server not found; scripts/test.sh installs it");
            }
            eprintln!(
                "SKIPPED {test}: ferro-oci-server not installed (scripts/test.sh installs it); these referrers-API checks did NOT run"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = dir.path().join("blobs");
        let service = spawn_on_free_port("ferro-oci-server", |port| {
            let mut c = Command::new(&bin);
            c.env("FERRO_OCI_LISTEN", format!("127.0.0.1:{port}"))
                .env("FERRO_OCI_STORAGE_DIR", &blobs)
                .env("RUST_LOG", "error");
            c
        });
        Some(TestRegistry {
            service,
            dir,
            tls: None,
        })
    }

    fn start_with(extra: &str) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), extra)
    }

    fn start_in(dir: tempfile::TempDir, extra: &str) -> Self {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: install the Debian package docker-registry \
             (apt-get install -y docker-registry), or run the README's test command"
        );
        let config = dir.path().join("config.yml");
        let data = dir.path().join("data");
        let service = spawn_on_free_port("docker-registry", |port| {
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: 127.0.0.1:{port}\n{extra}",
                    data.display()
                ),
            )
            .expect("config");
            let mut c = Command::new(REGISTRY_BIN);
            c.arg("serve").arg(&config);
            c
        });
        TestRegistry {
            service,
            dir,
            tls: None,
        }
    }

    /// A registry serving HTTPS with a certificate from `tls`'s CA; with `mtls`, it requires a
    /// client certificate from that CA (one is issued for the library client); with `basic`,
    /// HTTP basic auth (htpasswd, bcrypt) too.
    pub(crate) fn start_tls(tls: &Tls, mtls: bool, basic: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut extra = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            tls.cert.display(),
            tls.key.display()
        );
        if mtls {
            extra.push_str(&format!("    clientcas:\n      - {}\n", tls.ca.display()));
        }
        if let Some((user, password)) = basic {
            let hash = bcrypt::hash(password, 5).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
            extra.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: ocigate-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let client = mtls.then(|| issue_client_cert(tls, dir.path()));
        let mut reg = Self::start_in(dir, &extra);
        reg.tls = Some((tls.ca.clone(), client));
        reg
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.service.port)
    }

    /// The registry's storage root, for seeding blobs the corpus did not capture.
    pub(crate) fn storage(&self) -> PathBuf {
        self.dir.path().join("data").join("docker/registry/v2")
    }

    /// A library client speaking plain HTTP to this registry.
    pub(crate) fn client(&self) -> Registry {
        self.client_with(|_| {})
    }

    pub(crate) fn client_with(&self, f: impl FnOnce(&mut RegistrySettings)) -> Registry {
        let mut s = RegistrySettings::default();
        let host = self.host();
        match &self.tls {
            None => s.add_plain_http(&host).expect("host"),
            Some((ca, client)) => {
                s.add_tls_file(TlsFile::Ca, &format!("{host}={}", ca.display()))
                    .expect("ca");
                if let Some((cert, key)) = client {
                    s.add_tls_file(TlsFile::Cert, &format!("{host}={}", cert.display()))
                        .expect("cert");
                    s.add_tls_file(TlsFile::Key, &format!("{host}={}", key.display()))
                        .expect("key");
                }
            }
        }
        f(&mut s);
        Registry::new(s)
    }

    pub(crate) fn reference(&self, repo_tag: &str) -> ImageRef {
        ImageRef::parse(&format!("{}/{repo_tag}", self.host())).expect("reference")
    }

    /// Put a placeholder for a blob that a captured manifest references but the corpus did not
    /// capture (large image layers), so the registry accepts the real manifest.
    pub(crate) fn seed_blob_placeholder(&self, repo: &str, digest: &str) {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let blob = self
            .storage()
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex);
        std::fs::create_dir_all(&blob).expect("mkdir");
        if !blob.join("data").exists() {
            std::fs::write(blob.join("data"), b"placeholder: not captured").expect("data");
        }
        let link = self
            .storage()
            .join("repositories")
            .join(repo)
            .join("_layers/sha256")
            .join(hex);
        std::fs::create_dir_all(&link).expect("mkdir");
        std::fs::write(link.join("link"), digest).expect("link");
    }
}

/// Wait (at most 10 s) until something answers HTTP on `port`, or `child` exits.
fn wait_http(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
            let mut buf = [0u8; 12];
            if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Push a small distinct image (config + one layer) to `r` and return its digest.
pub(crate) fn push_image(client: &Registry, r: &ImageRef, seed: &str) -> Digest {
    push_image_with(client, r, seed, BTreeMap::new())
}

pub(crate) fn push_image_with(
    client: &Registry,
    r: &ImageRef,
    seed: &str,
    annotations: BTreeMap<String, String>,
) -> Digest {
    block_on(async {
        let layer = format!("layer of {seed}").into_bytes();
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            Digest::sha256_of(&layer)
        )
        .into_bytes();
        let ld = client.put_blob(r, &layer).await.expect("push layer");
        let cd = client.put_blob(r, &config).await.expect("push config");
        let m = ImageManifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.into()),
            artifact_type: None,
            config: Some(desc(
                "application/vnd.oci.image.config.v1+json",
                &cd,
                config.len(),
            )),
            layers: vec![desc(
                "application/vnd.oci.image.layer.v1.tar",
                &ld,
                layer.len(),
            )],
            manifests: vec![],
            subject: None,
            annotations: if annotations.is_empty() {
                None
            } else {
                Some(annotations)
            },
        };
        let body = serde_json::to_vec(&m).expect("json");
        client
            .put_manifest(r, &body, OCI_MANIFEST)
            .await
            .expect("push manifest")
    })
}

/// Push one image per platform (`os/arch[/variant]`) and an OCI index listing them at `r`;
/// returns the index's digest and each platform's manifest digest, in order.
pub(crate) fn push_index(
    client: &Registry,
    r: &ImageRef,
    platforms: &[&str],
) -> (Digest, Vec<Digest>) {
    let mut entries = Vec::new();
    let mut children = Vec::new();
    for p in platforms {
        let child_ref = r.with_tag(&format!("platform-{}", p.replace('/', "-")));
        let d = push_image(client, &child_ref, &format!("{r} for {p}"));
        let size = block_on(client.get_manifest(&child_ref))
            .expect("fetch child")
            .expect("child exists")
            .bytes
            .len();
        let mut parts = p.split('/');
        let mut platform = serde_json::json!({
            "os": parts.next().expect("os"),
            "architecture": parts.next().expect("arch"),
        });
        if let Some(v) = parts.next() {
            platform["variant"] = v.into();
        }
        entries.push(serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": d.to_string(),
            "size": size,
            "platform": platform,
        }));
        children.push(d);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": ocigate::registry::OCI_INDEX,
        "manifests": entries,
    });
    let body = serde_json::to_vec(&index).expect("json");
    let digest =
        block_on(client.put_manifest(r, &body, ocigate::registry::OCI_INDEX)).expect("push index");
    (digest, children)
}

pub(crate) fn desc(media_type: &str, d: &Digest, size: usize) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: d.to_string(),
        size: size as u64,
        annotations: None,
        artifact_type: None,
    }
}

/// The result of running the ocigate binary.
#[derive(Debug)]
pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Run `ocigate` with an isolated environment (no Docker config, no OCIGATE_* leaking in).
///
/// `verify --key` requires a Rekor entry by default, as cosign does; the signatures these tests
/// make have none, so this runner adds `--insecure-ignore-tlog` to a `verify --key` (as a
/// cosign user would) unless the test gave a `--trusted-root`. [`ocigate_exact`] runs exactly
/// what it is given: the tests of the default use it.
pub(crate) fn ocigate(args: &[&str], env: &[(&str, &str)]) -> Run {
    ocigate_in(None, &with_ignored_tlog(args), env)
}

/// Run `ocigate` with exactly `args` (see [`ocigate`]).
pub(crate) fn ocigate_exact(args: &[&str], env: &[(&str, &str)]) -> Run {
    ocigate_in(None, args, env)
}

pub(crate) fn ocigate_in(cwd: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Run {
    run_ocigate(cwd, args, env, None)
}

/// As [`ocigate`], with `input` on stdin.
pub(crate) fn ocigate_with_stdin(args: &[&str], env: &[(&str, &str)], input: &[u8]) -> Run {
    run_ocigate(None, &with_ignored_tlog(args), env, Some(input))
}

fn run_ocigate(
    cwd: Option<&Path>,
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<&[u8]>,
) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocigate"));
    cmd.args(args).stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("OCIGATE_")
            || k.starts_with("COSIGN_")
            || [
                "DOCKER_CONFIG",
                "REGISTRY_AUTH_FILE",
                "HELM_REGISTRY_CONFIG",
                "XDG_RUNTIME_DIR",
            ]
            .contains(&k.as_str())
        {
            cmd.env_remove(k);
        }
    }
    // No credential file of the machine's user is read: each test names its own.
    cmd.env("DOCKER_CONFIG", "/nonexistent-ocigate-test");
    cmd.env("HOME", "/nonexistent-ocigate-home");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run ocigate");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(input).expect("write stdin");
    }
    let out = child.wait_with_output().expect("run ocigate");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A key pair written by `ocigate generate-key-pair` into `dir` (prefix `name`).
pub(crate) fn generate_keys(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let prefix = dir.join(name);
    let run = ocigate(
        &[
            "generate-key-pair",
            "--output-key-prefix",
            prefix.to_str().expect("utf8 path"),
        ],
        &[("OCIGATE_PASSWORD", PASSWORD)],
    );
    assert_eq!(run.code, 0, "{run:?}");
    (prefix.with_extension("key"), prefix.with_extension("pub"))
}

/// A policy (noMatch: deny) with one rule `rule` over `pattern`, satisfied by the key `public`
/// without a log entry; written to `path`.
pub(crate) fn write_key_policy(path: &Path, public: &Path, rule: &str, pattern: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n\
             keys: [{{name: release, path: {}}}]\n\
             rules:\n  - name: {rule}\n    images: [\"{pattern}\"]\n    \
             authorities: [{{key: {{name: release}}, tlog: skip}}]\n",
            public.display()
        ),
    )
    .expect("write policy");
}

/// `ocigate sign` against a plain-HTTP test registry.
pub(crate) fn sign(reg: &TestRegistry, key: &Path, reference: &str, extra: &[&str]) -> Run {
    let host = reg.host();
    let mut args = vec![
        "sign",
        reference,
        "--key",
        key.to_str().expect("utf8"),
        "--registry-plain-http",
        &host,
    ];
    args.extend_from_slice(extra);
    ocigate(&args, &[("OCIGATE_PASSWORD", PASSWORD)])
}

/// `ocigate verify` against a plain-HTTP test registry.
pub(crate) fn verify(reg: &TestRegistry, args: &[&str]) -> Run {
    let host = reg.host();
    let mut all = vec!["verify", "--registry-plain-http", &host];
    all.extend_from_slice(args);
    ocigate(&all, &[])
}

/// `args` with `--insecure-ignore-tlog` added to a `verify --key` without `--trusted-root`.
pub(crate) fn with_ignored_tlog<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut out = args.to_vec();
    if args.first() == Some(&"verify")
        && args.contains(&"--key")
        && !args.contains(&"--insecure-ignore-tlog")
        && !args.contains(&"--trusted-root")
    {
        out.push("--insecure-ignore-tlog");
    }
    out
}

/// The repository root (for the shipped examples) and the shared corpus, if present.
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn corpus() -> Option<PathBuf> {
    let p = repo_root().join("../shared/corpus");
    if p.is_dir() { Some(p) } else { None }
}

/// The corpus, or a loud skip (a failure in CI, where ../shared must exist).
pub(crate) fn corpus_or_skip(test: &str) -> Option<PathBuf> {
    match corpus() {
        Some(p) => Some(p),
        None if strict() => panic!("{test}: ../shared/corpus is missing in CI"),
        None => {
            eprintln!(
                "SKIPPED {test}: ../shared/corpus not found; these corpus checks did NOT run"
            );
            None
        }
    }
}

pub(crate) const NGINX_BIN: &str = "/usr/sbin/nginx";

/// nginx with HTTP basic auth in front of a registry: how registries without auth of their
/// own (ferro-oci-server) are deployed. Stopped on drop.
pub(crate) struct AuthProxy {
    service: Service,
    _dir: tempfile::TempDir,
}

impl AuthProxy {
    pub(crate) fn start_or_skip(
        test: &str,
        upstream: &TestRegistry,
        user: &str,
        password: &str,
    ) -> Option<Self> {
        if !Path::new(NGINX_BIN).exists() {
            if strict() {
                panic!("{test}: {NGINX_BIN} is missing; scripts/test.sh installs nginx");
            }
            eprintln!("SKIPPED {test}: nginx not installed; this auth-proxy check did NOT run");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let htpasswd = dir.path().join("htpasswd");
        std::fs::write(&htpasswd, format!("{user}:{{PLAIN}}{password}\n")).expect("htpasswd");
        std::fs::set_permissions(&htpasswd, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let conf = dir.path().join("nginx.conf");
        let p = dir.path().display().to_string();
        let service = spawn_on_free_port("nginx", |port| {
            std::fs::write(
                &conf,
                format!(
                    "daemon off;\nmaster_process off;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log error;\n\
                     events {{ worker_connections 64; }}\n\
                     http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
                     fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
                     server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n\
                     location /v2/ {{\n      auth_basic \"registry\";\n      auth_basic_user_file {};\n\
                     proxy_pass http://{};\n      proxy_set_header Host $http_host;\n    }}\n  }}\n}}\n",
                    htpasswd.display(),
                    upstream.host()
                ),
            )
            .expect("nginx.conf");
            let mut c = Command::new(NGINX_BIN);
            c.arg("-c").arg(&conf).arg("-p").arg(dir.path());
            c
        });
        Some(AuthProxy { service, _dir: dir })
    }

    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.service.port)
    }
}

/// A test CA (rcgen) with a server certificate for 127.0.0.1 signed by it, re-issued in place
/// for rotation tests; and client certificates for mTLS.
pub(crate) struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

/// A test CA and a server certificate for 127.0.0.1 signed by it.
pub(crate) fn make_tls(dir: &Path) -> Tls {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ocigate test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_cert.pem()).unwrap();
    let tls = Tls {
        ca,
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        ca_params,
        ca_key,
    };
    issue_server_cert(&tls, "first");
    tls
}

pub(crate) fn issue_server_cert(tls: &Tls, cn: &str) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let issuer = rcgen::Issuer::from_params(&tls.ca_params, &tls.ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(&tls.key, key.serialize_pem()).unwrap();
    std::fs::write(&tls.cert, cert.pem()).unwrap();
}

/// A client certificate signed by the test CA, written to `dir` as client.crt and client.key.
pub(crate) fn issue_client_cert(tls: &Tls, dir: &Path) -> (PathBuf, PathBuf) {
    issue_client_cert_named(tls, dir, "ocigate test client")
}

/// [`issue_client_cert`] with subject CN `cn`.
pub(crate) fn issue_client_cert_named(tls: &Tls, dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let issuer = rcgen::Issuer::from_params(&tls.ca_params, &tls.ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (c, k) = (dir.join("client.crt"), dir.join("client.key"));
    std::fs::write(&k, key.serialize_pem()).unwrap();
    std::fs::write(&c, cert.pem()).unwrap();
    (c, k)
}
