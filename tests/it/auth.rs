//! Registry authentication against a real registry that requires HTTP basic auth (htpasswd):
//! credentials from flags, environment sets, Docker's config.json and a credential helper.
//! Missing or wrong credentials are "access denied", never "unsigned"; a hanging helper holds up
//! only its own lookups.

use std::path::Path;

use base64::Engine as _;

use crate::harness::*;

const USER: &str = "ci-bot";
const SECRET: &str = "s3cret-pass";

struct Signed {
    reg: TestRegistry,
    reference: String,
    public: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// An auth registry holding one image signed by ocigate (pushing with credentials too).
fn signed_image() -> Signed {
    let reg = TestRegistry::start_with_basic_auth(USER, SECRET);
    let client = reg.client_with(|s| {
        s.add_credentials_flag(&format!("{}={USER}:{SECRET}", reg.host()))
            .unwrap();
    });
    let r = reg.reference("private/app:v1");
    push_image(&client, &r, "private");
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "k");
    let creds = format!("{}={USER}:{SECRET}", reg.host());
    let s = sign(&reg, &key, &r.to_string(), &["--registry-creds", &creds]);
    assert_eq!(s.code, 0, "{s:?}");
    Signed {
        reference: r.to_string(),
        reg,
        public,
        _dir: dir,
    }
}

fn verify_env(s: &Signed, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let host = s.reg.host();
    let mut args = vec![
        "verify",
        &s.reference,
        "--key",
        s.public.to_str().unwrap(),
        "--registry-plain-http",
        &host,
    ];
    args.extend_from_slice(extra);
    ocigate(&args, env)
}

#[test]
fn missing_or_wrong_credentials_are_access_denied_not_unsigned() {
    let s = signed_image();
    for extra in [
        vec![],
        vec![
            "--registry-creds".to_string(),
            format!("{}={USER}:wrong", s.reg.host()),
        ],
    ] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut args = extra.clone();
        args.extend(["-o", "json"]);
        let v = verify_env(&s, &args, &[]);
        assert_eq!(v.code, 1, "{v:?}");
        let res = &v.json()["results"][0];
        assert_eq!(res["failure"], "auth", "{v:?}");
        let reason = res["reasons"][0].as_str().unwrap();
        assert!(reason.contains("access denied"), "{reason}");
        assert!(!reason.contains("no signatures"), "{reason}");
    }
}

#[test]
fn credentials_from_flag_and_environment() {
    let s = signed_image();
    let creds = format!("{}={USER}:{SECRET}", s.reg.host());
    let v = verify_env(&s, &["--registry-creds", &creds], &[]);
    assert_eq!(v.code, 0, "{v:?}");
    let host = s.reg.host();
    let v = verify_env(
        &s,
        &[],
        &[
            ("OCIGATE_REGISTRY_HOST", &host),
            ("OCIGATE_REGISTRY_USERNAME", USER),
            ("OCIGATE_REGISTRY_PASSWORD", SECRET),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
    // an indexed set, with plain HTTP from the environment instead of the flag
    let reference = s.reference.clone();
    let v = ocigate(
        &["verify", &reference, "--key", s.public.to_str().unwrap()],
        &[
            ("OCIGATE_REGISTRY_2_HOST", &host),
            ("OCIGATE_REGISTRY_2_USERNAME", USER),
            ("OCIGATE_REGISTRY_2_PASSWORD", SECRET),
            ("OCIGATE_REGISTRY_2_PLAIN_HTTP", "true"),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
}

fn write_docker_config(dir: &Path, body: &serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_vec(body).unwrap()).unwrap();
}

#[test]
fn credentials_from_docker_config_and_a_credential_helper() {
    let s = signed_image();
    let host = s.reg.host();
    let dir = tempfile::tempdir().unwrap();

    let auths = dir.path().join("auths");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"));
    write_docker_config(
        &auths,
        &serde_json::json!({"auths": {host.clone(): {"auth": auth}}}),
    );
    let v = verify_env(&s, &[], &[("DOCKER_CONFIG", auths.to_str().unwrap())]);
    assert_eq!(v.code, 0, "{v:?}");

    // credHelpers: docker-credential-<name> on PATH answers `get` with JSON
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-ocigatetest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = \"{host}\" ] || exit 1\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{SECRET}\"}}' \"$server\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let helpers = dir.path().join("helpers");
    write_docker_config(
        &helpers,
        &serde_json::json!({"credHelpers": {host.clone(): "ocigatetest"}}),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let v = verify_env(
        &s,
        &[],
        &[
            ("DOCKER_CONFIG", helpers.to_str().unwrap()),
            ("PATH", &path),
        ],
    );
    assert_eq!(v.code, 0, "{v:?}");
}

#[test]
fn credentials_from_a_mounted_dockerconfigjson() {
    let s = signed_image();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(".dockerconfigjson");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"));
    std::fs::write(
        &file,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, s.reg.host()),
    )
    .unwrap();
    let v = verify_env(&s, &["--registry-config", file.to_str().unwrap()], &[]);
    assert_eq!(v.code, 0, "{v:?}");
    // An optional secret that is not mounted: skipped with a note, not an error.
    let v = verify_env(
        &s,
        &["--registry-config", "/nonexistent/.dockerconfigjson"],
        &[],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stderr.contains("no such file"), "{v:?}");
    // A file that does not parse is an error naming it (exit 2), never anonymous access.
    std::fs::write(&file, "{broken").unwrap();
    let v = verify_env(&s, &["--registry-config", file.to_str().unwrap()], &[]);
    assert_eq!(v.code, 2, "{v:?}");
    assert!(v.stderr.contains(".dockerconfigjson"), "{v:?}");
}

#[test]
fn credentials_from_podman_and_helm_files() {
    let s = signed_image();
    let host = s.reg.host();
    let dir = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"));
    let body = serde_json::json!({"auths": {host.clone(): {"auth": auth}}}).to_string();
    // podman: REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json
    let file = dir.path().join("auth.json");
    std::fs::write(&file, &body).unwrap();
    let v = verify_env(&s, &[], &[("REGISTRY_AUTH_FILE", file.to_str().unwrap())]);
    assert_eq!(v.code, 0, "{v:?}");
    let runtime = dir.path().join("run");
    std::fs::create_dir_all(runtime.join("containers")).unwrap();
    std::fs::write(runtime.join("containers/auth.json"), &body).unwrap();
    let v = verify_env(&s, &[], &[("XDG_RUNTIME_DIR", runtime.to_str().unwrap())]);
    assert_eq!(v.code, 0, "{v:?}");
    // Helm: HELM_REGISTRY_CONFIG, else ~/.config/helm/registry/config.json
    let helm = dir.path().join("helm.json");
    std::fs::write(&helm, &body).unwrap();
    let v = verify_env(&s, &[], &[("HELM_REGISTRY_CONFIG", helm.to_str().unwrap())]);
    assert_eq!(v.code, 0, "{v:?}");
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".config/helm/registry")).unwrap();
    std::fs::write(home.join(".config/helm/registry/config.json"), &body).unwrap();
    let v = verify_env(&s, &[], &[("HOME", home.to_str().unwrap())]);
    assert_eq!(v.code, 0, "{v:?}");
    // Wrong credentials from a file: the denial names the file.
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:wrong"));
    std::fs::write(
        &file,
        serde_json::json!({"auths": {host.clone(): {"auth": wrong}}}).to_string(),
    )
    .unwrap();
    let v = verify_env(
        &s,
        &["-o", "json"],
        &[("REGISTRY_AUTH_FILE", file.to_str().unwrap())],
    );
    assert_eq!(v.code, 1, "{v:?}");
    let reason = v.json()["results"][0]["reasons"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains(&format!(
            "credentials from $REGISTRY_AUTH_FILE ({}) were sent",
            file.display()
        )),
        "{reason}"
    );
}

/// A credential source that exists but cannot be used is its own error, naming it: never a
/// silent fall-back to anonymous access ("access denied") and never "unsigned".
#[test]
fn broken_credential_sources_are_named() {
    let s = signed_image();
    let host = s.reg.host();
    let dir = tempfile::tempdir().unwrap();
    let reason_of = |env: &[(&str, &str)]| {
        let v = verify_env(&s, &["-o", "json"], env);
        assert_eq!(v.code, 1, "{v:?}");
        let res = &v.json()["results"][0];
        assert_eq!(res["failure"], "auth", "{v:?}");
        res["reasons"][0].as_str().unwrap().to_string()
    };
    // A Docker config that does not parse.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("config.json"), "{\"auths\": ").unwrap();
    let r = reason_of(&[("DOCKER_CONFIG", broken.to_str().unwrap())]);
    assert!(
        r.contains("credentials cannot be obtained")
            && r.contains("$DOCKER_CONFIG/config.json")
            && r.contains("not a Docker config file"),
        "{r}"
    );
    // A credsStore whose helper is not installed.
    let store = dir.path().join("store");
    write_docker_config(
        &store,
        &serde_json::json!({"credsStore": "ocigate-missing"}),
    );
    let r = reason_of(&[("DOCKER_CONFIG", store.to_str().unwrap())]);
    assert!(
        r.contains("docker-credential-ocigate-missing") && r.contains("not installed"),
        "{r}"
    );
    assert!(r.contains("credsStore: ocigate-missing"), "{r}");
    // A helper that fails says what it said (escaped), and which file named it.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-ocigatefail");
    std::fs::write(
        &helper,
        "#!/bin/sh\necho 'keychain locked\x1b[2J' >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let failing = dir.path().join("failing");
    write_docker_config(
        &failing,
        &serde_json::json!({"credHelpers": {host.clone(): "ocigatefail"}}),
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = reason_of(&[
        ("DOCKER_CONFIG", failing.to_str().unwrap()),
        ("PATH", &path),
    ]);
    assert!(
        r.contains("docker-credential-ocigatefail") && r.contains("failed: keychain locked"),
        "{r}"
    );
    assert!(
        !r.contains('\x1b'),
        "terminal control characters are escaped: {r:?}"
    );
    // A helper that has no credentials for the host: anonymous, and the denial says so.
    let none = bin.join("docker-credential-ocigatenone");
    std::fs::write(
        &none,
        "#!/bin/sh\necho 'credentials not found in native keychain'\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&none, std::fs::Permissions::from_mode(0o755)).unwrap();
    let empty = dir.path().join("empty");
    write_docker_config(&empty, &serde_json::json!({"credsStore": "ocigatenone"}));
    let r = reason_of(&[("DOCKER_CONFIG", empty.to_str().unwrap()), ("PATH", &path)]);
    assert!(
        r.contains("access denied") && r.contains("no credentials were sent"),
        "{r}"
    );
    // A helper that answers without end: read up to a limit, then refused (not held in memory,
    // not waited for until the helper timeout).
    let endless = bin.join("docker-credential-ocigateendless");
    std::fs::write(
        &endless,
        "#!/bin/sh
exec yes '{\"Secret\":\"x\"}'
",
    )
    .unwrap();
    std::fs::set_permissions(&endless, std::fs::Permissions::from_mode(0o755)).unwrap();
    let chatty = dir.path().join("chatty");
    write_docker_config(
        &chatty,
        &serde_json::json!({"credsStore": "ocigateendless"}),
    );
    let r = reason_of(&[("DOCKER_CONFIG", chatty.to_str().unwrap()), ("PATH", &path)]);
    assert!(
        r.contains("docker-credential-ocigateendless")
            && r.contains("answer is longer than 65536 bytes"),
        "{r}"
    );
}

/// A credential helper that hangs holds up only the lookups of its own (helper, server): the
/// webhook answers a review whose registry has another helper while the hanging one still
/// runs (before, every lookup waited behind one lock for it). The same registry under two
/// names (`127.0.0.1` and `localhost`), each with its own helper.
#[test]
fn a_hanging_credential_helper_holds_up_only_its_own_lookups() {
    let s = signed_image();
    let host = s.reg.host();
    let alt = host.replace("127.0.0.1", "localhost");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let (started, finished) = (d.join("started"), d.join("finished"));
    let answer = format!(
        "printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{SECRET}\"}}' \"$server\""
    );
    use std::os::unix::fs::PermissionsExt as _;
    for (name, body) in [
        ("ocigatefast", format!("#!/bin/sh\nread server\n{answer}\n")),
        (
            "ocigatehang",
            format!(
                "#!/bin/sh\nread server\ntouch {}\nsleep 6\ntouch {}\n{answer}\n",
                started.display(),
                finished.display()
            ),
        ),
    ] {
        let f = bin.join(format!("docker-credential-{name}"));
        std::fs::write(&f, body).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = d.join("docker");
    write_docker_config(
        &config,
        &serde_json::json!({"credHelpers": {host.clone(): "ocigatefast", alt.clone(): "ocigatehang"}}),
    );
    let policy = d.join("policy.yaml");
    write_key_policy(&policy, &s.public, "all", "**");
    let tls = make_tls(d);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config_file = config.join("config.json");
    let server = crate::webhook::start_serve_env(
        &policy,
        &tls,
        &host,
        &[
            "--registry-plain-http",
            &alt,
            "--registry-config",
            config_file.to_str().unwrap(),
        ],
        &[("PATH", &path)],
    );
    let review = |uid: &str, image: &str| {
        let client = crate::webhook::tls_client(&tls);
        let body = crate::webhook::pod_review(uid, image);
        let v: serde_json::Value = client
            .post(server.url("/validate"))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["response"]["allowed"].as_bool()
    };
    let slow = s.reference.replace(&host, &alt);
    std::thread::scope(|scope| {
        let hanging = scope.spawn(|| review("slow", &slow));
        let start = std::time::Instant::now();
        while !started.exists() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "the hanging helper never ran"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let allowed = review("fast", &s.reference);
        assert!(
            !finished.exists(),
            "the review waited for the other registry's helper"
        );
        assert_eq!(
            allowed,
            Some(true),
            "the fast helper's credentials were used"
        );
        assert!(hanging.join().unwrap().is_some());
    });
}
