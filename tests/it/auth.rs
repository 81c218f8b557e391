//! Registry authentication against a real registry that requires HTTP basic auth (htpasswd):
//! credentials from flags, environment sets, Docker's config.json and a credential helper.
//! Missing or wrong credentials are "access denied", never "unsigned".

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
