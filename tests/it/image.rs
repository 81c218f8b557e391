//! ocigate's own image: scripts/build-image.sh (the Containerfile's layout, without a daemon)
//! builds it from this test's binary, pushes it to the test registry, signs and attests it with
//! ocigate; the image's config and files are what was intended; the binary runs from the
//! unpacked rootfs with the image's own loader and libraries (and, as root, chrooted as the
//! image's user); and the shipped policy's rule for ocigate's image verifies it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::*;

/// The image's repository in the shipped policy example, replaced by the test registry's.
const SHIPPED_REPOSITORY: &str = "ghcr.io/ocigate/ocigate";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether the script can run here: umoci and skopeo installed, or apt-get to install them. A
/// loud skip otherwise (a failure in CI, where scripts/test.sh installs them).
fn tools_or_skip(test: &str) -> bool {
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if (have("umoci") && have("skopeo")) || have("apt-get") {
        return true;
    }
    if strict() {
        panic!("{test}: umoci and skopeo are missing and there is no apt-get to install them");
    }
    eprintln!(
        "SKIPPED {test}: umoci/skopeo not installed and no apt-get (scripts/test.sh installs them); the image was NOT built or checked"
    );
    false
}

/// `scripts/build-image.sh ARGS` with an environment of its own (no credentials of the
/// machine's user; the password of the test keys).
fn build_image(args: &[&str]) -> Run {
    let mut cmd = Command::new(repo_root().join("scripts/build-image.sh"));
    cmd.args(args)
        .stdin(Stdio::null())
        .env("OCIGATE_PASSWORD", PASSWORD)
        .env("OCIGATE_IMAGE_SOURCE", "https://github.com/ocigate/ocigate")
        .env("DOCKER_CONFIG", "/nonexistent-ocigate-test")
        .env("REGISTRY_AUTH_FILE", "/nonexistent-ocigate-test/auth.json")
        .env_remove("COSIGN_PASSWORD")
        .env_remove("SOURCE_DATE_EPOCH");
    let out = cmd.output().expect("run scripts/build-image.sh");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(cmd: &mut Command) -> Run {
    let out = cmd.stdin(Stdio::null()).output().expect("run");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The one manifest of `layout` (its digest) and the image config it names.
fn manifest_and_config(layout: &Path) -> (String, serde_json::Value) {
    let index = json_file(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let digest = manifests[0]["digest"].as_str().unwrap().to_string();
    let manifest = json_file(&blob(layout, &digest));
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        1,
        "{manifest}"
    );
    let config = json_file(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    (digest, config)
}

/// The shared libraries ldd says `binary` loads (the loader included).
fn shared_libraries(binary: &Path) -> Vec<String> {
    let out = run(Command::new("ldd").arg(binary).env("LC_ALL", "C"));
    assert_eq!(out.code, 0, "{out:?}");
    let mut libs: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(path.to_string()),
                [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .collect();
    libs.sort();
    libs.dedup();
    assert!(libs.iter().any(|l| l.contains("libc.so")), "{out:?}");
    libs
}

/// Every path under `root` (files, directories, links), relative, without a leading slash.
fn tree(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.insert(rel);
        }
    }
    out
}

/// What the image must hold, and nothing else: the binary, its libraries where ldd found them,
/// the CA bundle, passwd, group, nsswitch.conf, /tmp, and their directories.
fn intended_tree(libs: &[String]) -> BTreeSet<String> {
    let mut want = BTreeSet::new();
    let files = [
        "usr/local/bin/ocigate",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "etc/group",
        "etc/nsswitch.conf",
        "tmp",
    ];
    let all = files
        .iter()
        .map(|f| f.to_string())
        .chain(libs.iter().map(|l| l.trim_start_matches('/').to_string()));
    for f in all {
        let mut p = Path::new(&f);
        want.insert(f.clone());
        while let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            want.insert(parent.display().to_string());
            p = parent;
        }
    }
    want
}

/// The image config: the non-root user, the entrypoint, and the labels naming this build.
fn check_config(config: &serde_json::Value) {
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/ocigate"])
    );
    assert_eq!(c["Env"], serde_json::json!([PATH_ENV]), "{config}");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let labels = &c["Labels"];
    let label = |k: &str| labels[format!("org.opencontainers.image.{k}")].clone();
    assert_eq!(label("source"), "https://github.com/ocigate/ocigate");
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"), "{labels}");
    let head = run(Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo_root()));
    let revision = if head.code == 0 {
        head.stdout.trim().to_string()
    } else {
        "unknown".to_string()
    };
    assert_eq!(label("revision"), revision.as_str(), "{labels}");
    // The Containerfile labels the same keys (its values come from --build-arg).
    let containerfile = std::fs::read_to_string(repo_root().join("Containerfile")).unwrap();
    for key in labels.as_object().unwrap().keys() {
        assert!(containerfile.contains(&format!("{key}=")), "{key}");
    }
}

/// The unpacked files: exactly the intended ones, the CA bundle Debian's, the user non-root.
fn check_rootfs(rootfs: &Path, libs: &[String]) {
    assert_eq!(tree(rootfs), intended_tree(libs));
    let bundle = std::fs::read(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(
        bundle.starts_with(b"-----BEGIN CERTIFICATE-----"),
        "not a PEM bundle"
    );
    assert_eq!(
        bundle,
        std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap(),
        "the CA bundle is not Debian's"
    );
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("nonroot:x:65532:65532:"),
        "no non-root user: {passwd}"
    );
    let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap();
    assert!(group.contains("nonroot:x:65532:"), "{group}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &str| {
        std::fs::metadata(rootfs.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("usr/local/bin/ocigate"), 0o755);
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(mode("etc/passwd"), 0o644);
}

/// `ocigate ARGS` from the rootfs: its own loader, with only its own libraries, no environment.
fn from_rootfs(rootfs: &Path, libs: &[String], args: &[&str]) -> Run {
    let loader = libs
        .iter()
        .find(|l| l.contains("/ld-linux"))
        .expect("a dynamic loader");
    let mut dirs: Vec<String> = libs
        .iter()
        .filter_map(|l| Path::new(l).parent())
        .map(|d| {
            rootfs
                .join(d.strip_prefix("/").unwrap())
                .display()
                .to_string()
        })
        .collect();
    dirs.dedup();
    run(Command::new(rootfs.join(loader.trim_start_matches('/')))
        .arg("--library-path")
        .arg(dirs.join(":"))
        .arg(rootfs.join("usr/local/bin/ocigate"))
        .args(args)
        .env_clear()
        .env("HOME", "/nonexistent"))
}

/// The shipped policy example (`policy-examples/key-based.yaml`) under `dir`, its rule for
/// ocigate's image naming `repository`, beside `keys-example/cosign.pub` = `public`: the key
/// paths stay as shipped.
fn shipped_policy(dir: &Path, repository: &str, public: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("policy-examples/key-based.yaml")).unwrap();
    assert!(
        text.contains(&format!("[\"{SHIPPED_REPOSITORY}\"]")),
        "{text}"
    );
    let policy = dir.join("policy-examples/key-based.yaml");
    std::fs::create_dir_all(policy.parent().unwrap()).unwrap();
    std::fs::create_dir_all(dir.join("keys-example")).unwrap();
    std::fs::copy(public, dir.join("keys-example/cosign.pub")).unwrap();
    std::fs::write(&policy, text.replace(SHIPPED_REPOSITORY, repository)).unwrap();
    policy
}

#[test]
fn the_image_is_built_pushed_signed_attested_run_and_verified() {
    let test = "the_image_is_built_pushed_signed_attested_run_and_verified";
    if !tools_or_skip(test) {
        return;
    }
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = generate_keys(dir.path(), "release");
    let binary = env!("CARGO_BIN_EXE_ocigate");
    let layout = dir.path().join("layout");
    let repository = format!("{}/ocigate/ocigate", reg.host());
    let build = build_image(&[
        "--binary",
        binary,
        "--output",
        layout.to_str().unwrap(),
        "--push",
        &format!("{repository}:v-test"),
        "--insecure",
        "--sign-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(build.code, 0, "{build:?}");
    // stdout is the pushed digest and nothing else; it is the layout's manifest.
    let (digest, config) = manifest_and_config(&layout);
    assert_eq!(
        build.stdout,
        format!("{repository}@{digest}\n"),
        "{build:?}"
    );
    check_config(&config);

    let bundle = dir.path().join("bundle");
    let unpack = run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!(
            "{}:v{}",
            layout.display(),
            env!("CARGO_PKG_VERSION")
        ))
        .arg(&bundle));
    assert_eq!(unpack.code, 0, "{unpack:?}");
    let rootfs = bundle.join("rootfs");
    let libs = shared_libraries(Path::new(binary));
    check_rootfs(&rootfs, &libs);

    let version = from_rootfs(&rootfs, &libs, &["--version"]);
    assert_eq!(version.code, 0, "{version:?}");
    assert!(
        version
            .stdout
            .starts_with(&format!("ocigate {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version:?}"
    );

    // The shipped rule for ocigate's image, with the test registry in place of ghcr.io: the
    // signature by the release key and the provenance attestation with its conditions.
    let pinned = format!("{repository}@{digest}");
    let policy = shipped_policy(&dir.path().join("shipped"), &repository, &public);
    let verify = from_rootfs(
        &rootfs,
        &libs,
        &[
            "verify",
            &pinned,
            "--policy",
            policy.to_str().unwrap(),
            "--allow-insecure-registry",
            "-o",
            "json",
        ],
    );
    assert_eq!(verify.code, 0, "{verify:?}");
    let result = &verify.json()["results"][0];
    assert_eq!(result["verdict"], "allow", "{result}");
    assert_eq!(result["rule"], "ocigate", "{result}");
    let conditions = result["attestations"][0]["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 3, "{result}");
    assert!(conditions.iter().all(|c| c["passed"] == true), "{result}");

    check_denials(&reg, dir.path(), &repository, &pinned);
    run_chrooted(&rootfs, &policy, &public, &pinned);
    run_with_podman(&layout);
}

/// The same rule denies the image under another key (`untrusted`), and when the provenance
/// does not say what the rule's conditions ask (`condition`).
fn check_denials(reg: &TestRegistry, dir: &Path, repository: &str, pinned: &str) {
    let (_, other) = generate_keys(dir, "other");
    let policy = shipped_policy(&dir.join("other-key"), repository, &other);
    let v = verify(
        reg,
        &[pinned, "--policy", policy.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert_eq!(v.json()["results"][0]["failure"], "untrusted", "{v:?}");

    let policy = shipped_policy(
        &dir.join("other-type"),
        repository,
        &dir.join("release.pub"),
    );
    let text = std::fs::read_to_string(&policy).unwrap();
    let changed = text.replace("/buildtypes/build-image/v1", "/buildtypes/elsewhere/v1");
    assert_ne!(text, changed);
    std::fs::write(&policy, changed).unwrap();
    let v = verify(
        reg,
        &[pinned, "--policy", policy.to_str().unwrap(), "-o", "json"],
    );
    assert_eq!(v.code, 1, "{v:?}");
    let result = &v.json()["results"][0];
    assert_eq!(result["failure"], "condition", "{result}");
    assert!(
        result["reasons"]
            .to_string()
            .contains("built by scripts/build-image.sh"),
        "{result}"
    );
}

/// As root: the binary chrooted into the rootfs as the image's user (65532), seeing nothing of
/// this machine's files, verifies the image. Said and skipped when chroot is not permitted.
fn run_chrooted(rootfs: &Path, policy: &Path, public: &Path, pinned: &str) {
    // Found here: the child's environment is empty (no PATH to look it up in).
    let Some(chroot) = ["/usr/sbin/chroot", "/usr/bin/chroot"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        eprintln!("image: not run chrooted: no chroot (coreutils) here");
        return;
    };
    let probe = run(Command::new(chroot)
        .arg("--userspec=65532:65532")
        .arg(rootfs)
        .args(["/usr/local/bin/ocigate", "--version"])
        .env_clear());
    if probe.code != 0 {
        eprintln!("image: not run chrooted (needs root and chroot): {probe:?}");
        return;
    }
    let inside = rootfs.join("tmp/check");
    std::fs::create_dir_all(inside.join("policy-examples")).unwrap();
    std::fs::create_dir_all(inside.join("keys-example")).unwrap();
    std::fs::copy(policy, inside.join("policy-examples/key-based.yaml")).unwrap();
    std::fs::copy(public, inside.join("keys-example/cosign.pub")).unwrap();
    let v = run(Command::new(chroot)
        .arg("--userspec=65532:65532")
        .arg(rootfs)
        .args(["/usr/local/bin/ocigate", "verify", pinned, "--policy"])
        .arg("/tmp/check/policy-examples/key-based.yaml")
        .arg("--allow-insecure-registry")
        .env_clear());
    assert_eq!(v.code, 0, "{v:?}");
    assert!(v.stdout.starts_with("ALLOW "), "{v:?}");
    std::fs::remove_dir_all(inside).unwrap();
}

/// `podman run` of the layout, where podman is installed and may run containers here (its own
/// storage in a temporary directory); said when it cannot.
fn run_with_podman(layout: &Path) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    // podman names the image after the layout's path, which must be lowercase.
    let link = std::env::temp_dir().join(format!("ocigate-image-{}", std::process::id()));
    if std::os::unix::fs::symlink(layout, &link).is_err() {
        return;
    }
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(dir.path().join("root"))
        .arg("--runroot")
        .arg(dir.path().join("run"))
        .args([
            "--storage-driver",
            "vfs",
            "run",
            "--rm",
            "--network",
            "none",
        ])
        .arg(format!(
            "oci:{}:v{}",
            link.display(),
            env!("CARGO_PKG_VERSION")
        ))
        .arg("--version");
    let out = cmd.stdin(Stdio::null()).output();
    let _ = std::fs::remove_file(&link);
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            eprintln!("image: podman run not tried: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        assert!(stdout.starts_with("ocigate "), "{stdout}");
        eprintln!("image: podman run of the image printed {stdout:?}");
    } else {
        eprintln!(
            "image: podman cannot run containers here (the rootfs checks above stand in): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// The Containerfile builds what the script assembles (--rootfs-only) with the script's config,
/// and its default VERSION is Cargo.toml's.
#[test]
fn the_containerfile_builds_the_scripts_layout() {
    let text = std::fs::read_to_string(repo_root().join("Containerfile")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in [
        "FROM scratch",
        "COPY --from=build /rootfs/ /",
        "USER 65532:65532",
        "ENTRYPOINT [\"/usr/local/bin/ocigate\"]",
        &format!("ENV {PATH_ENV}"),
        &format!("ARG VERSION={}", env!("CARGO_PKG_VERSION")),
        "&& scripts/build-image.sh --binary target/release/ocigate --rootfs-only /rootfs",
        "RUN cargo build --release --locked --bin ocigate \\",
    ] {
        assert!(lines.contains(&want), "Containerfile lacks {want:?}");
    }
    let script = std::fs::read_to_string(repo_root().join("scripts/build-image.sh")).unwrap();
    assert!(script.contains(&format!("--config.env {PATH_ENV}")));
    assert!(script.contains("--config.user 65532:65532"));
}
