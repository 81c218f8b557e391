//! Revocation takes effect in `ocigate serve`: replacing only the key file the policy names (a
//! ConfigMap or Secret update that changes `cosign.pub`, by a rename over it or by the
//! `..data` symlink swap of a Kubernetes volume mount) reloads the policy, and an image signed
//! with the old key is denied within a few reload intervals, though the policy file's bytes
//! never changed. A key file deleted, or replaced by something that is not a key, makes the
//! policy fail to load again: the last good policy stays, but the authority that key file
//! fed is withdrawn, so the image is denied as well (`[policy]`, the authority named).
//! Called through kube's own admission client (`kwhclient`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::webhook::{kube_tools_or_skip, kwhclient, start_serve};

/// A key-based policy naming its key by a path relative to the policy's directory, as a
/// policy mounted from a ConfigMap next to its key does.
fn policy_text(pattern: &str) -> String {
    format!(
        "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n\
         keys: [{{name: release, path: cosign.pub}}]\n\
         rules:\n  - name: apps\n    images: [\"{pattern}\"]\n    \
         authorities: [{{key: {{name: release}}, tlog: skip}}]\n"
    )
}

struct Setup {
    reg: TestRegistry,
    dir: tempfile::TempDir,
    image: String,
    /// The key the image is signed with, and another one.
    key_a: std::path::PathBuf,
    key_b: std::path::PathBuf,
}

fn setup() -> Setup {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let image = reg.reference("apps/web:v1");
    push_image(&reg.client(), &image, "revocation");
    let (private_a, key_a) = generate_keys(dir.path(), "a");
    let (_, key_b) = generate_keys(dir.path(), "b");
    let s = sign(&reg, &private_a, &image.to_string(), &[]);
    assert_eq!(s.code, 0, "{s:?}");
    Setup {
        image: image.to_string(),
        reg,
        dir,
        key_a,
        key_b,
    }
}

/// Admit a Pod running `s.image` through `serve` with the policy at `policy`, then `revoke` (it
/// must replace the key file only); within 10 s (50 reload intervals of 200 ms) the same Pod
/// is denied with failure class `class` (`untrusted`: another key; `policy`: no key), the
/// deny saying `says`.
fn revoked_after(
    s: &Setup,
    k: &Path,
    policy: &Path,
    (class, says): (&str, &str),
    revoke: impl FnOnce(),
) {
    let tls = make_tls(s.dir.path());
    let server = start_serve(policy, &tls, &s.reg.host(), &[]);
    let pod = s.dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: apps}}\n\
             spec:\n  containers:\n  - {{name: app, image: \"{}\"}}\n",
            s.image
        ),
    )
    .unwrap();
    let run = kwhclient(k, &server, &tls, &pod, &[]);
    assert_eq!(run.code, 0, "signed with the trusted key: {run:?}");
    // The allow is cached now: a revocation must not be answered from that cache.
    let run = kwhclient(k, &server, &tls, &pod, &[]);
    assert!(run.stdout.contains("ADMITTED"), "{run:?}");
    let policy_bytes = std::fs::read(policy).unwrap();
    revoke();
    assert_eq!(
        std::fs::read(policy).unwrap(),
        policy_bytes,
        "policy untouched"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let run = loop {
        let run = kwhclient(k, &server, &tls, &pod, &[]);
        if run.code != 0 || Instant::now() > deadline {
            break run;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        run.code, 1,
        "still admitted after the key was replaced: {run:?}"
    );
    assert!(run.stdout.contains("DENIED"), "{run:?}");
    assert!(run.stdout.contains(&format!("[{class}]")), "{run:?}");
    assert!(run.stdout.contains(says), "{run:?}");
}

/// A policy and its key in a `mount` directory of `s.dir`, the key the image is signed with.
fn mounted(s: &Setup) -> (std::path::PathBuf, std::path::PathBuf) {
    let mount = s.dir.path().join("mount");
    std::fs::create_dir(&mount).unwrap();
    std::fs::copy(&s.key_a, mount.join("cosign.pub")).unwrap();
    let policy = mount.join("policy.yaml");
    std::fs::write(&policy, policy_text(&format!("{}/apps/**", s.reg.host()))).unwrap();
    (mount, policy)
}

#[test]
fn a_key_file_replaced_by_rename_revokes_the_old_key() {
    let Some(k) = kube_tools_or_skip("a_key_file_replaced_by_rename_revokes_the_old_key") else {
        return;
    };
    let s = setup();
    let (mount, policy) = mounted(&s);
    revoked_after(&s, &k, &policy, ("untrusted", "DENIED"), || {
        // As a Secret or ConfigMap projected without symlinks is rewritten: a new file, renamed
        // over the old one.
        std::fs::copy(&s.key_b, mount.join(".cosign.pub.new")).unwrap();
        std::fs::rename(mount.join(".cosign.pub.new"), mount.join("cosign.pub")).unwrap();
    });
}

#[test]
fn a_key_file_deleted_revokes_the_key_while_the_policy_cannot_load() {
    let Some(k) = kube_tools_or_skip("a_key_file_deleted_revokes_the_key") else {
        return;
    };
    let s = setup();
    let (mount, policy) = mounted(&s);
    let says = "authority \"release\" is withdrawn: cosign.pub changed";
    revoked_after(&s, &k, &policy, ("policy", says), || {
        std::fs::remove_file(mount.join("cosign.pub")).unwrap();
    });
}

#[test]
fn a_key_file_replaced_by_one_that_is_no_key_revokes_the_key() {
    let Some(k) = kube_tools_or_skip("a_key_file_replaced_by_one_that_is_no_key") else {
        return;
    };
    let s = setup();
    let (mount, policy) = mounted(&s);
    let says = "authority \"release\" is withdrawn";
    revoked_after(&s, &k, &policy, ("policy", says), || {
        std::fs::write(mount.join(".cosign.pub.new"), "revoked\n").unwrap();
        std::fs::rename(mount.join(".cosign.pub.new"), mount.join("cosign.pub")).unwrap();
    });
}

#[test]
fn a_configmap_data_symlink_swap_of_the_key_revokes_the_old_key() {
    let Some(k) =
        kube_tools_or_skip("a_configmap_data_symlink_swap_of_the_key_revokes_the_old_key")
    else {
        return;
    };
    let s = setup();
    // The layout the kubelet writes for a ConfigMap volume: the files live in a timestamped
    // directory, `..data` points at it, and each name is a symlink through `..data`.
    let mount = s.dir.path().join("mount");
    let text = policy_text(&format!("{}/apps/**", s.reg.host()));
    let version = |name: &str, key: &Path| {
        let d = mount.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(key, d.join("cosign.pub")).unwrap();
        std::fs::write(d.join("policy.yaml"), &text).unwrap();
    };
    version("..2025_01_01_00_00_00.1", &s.key_a);
    std::os::unix::fs::symlink("..2025_01_01_00_00_00.1", mount.join("..data")).unwrap();
    for f in ["policy.yaml", "cosign.pub"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), mount.join(f)).unwrap();
    }
    let policy = mount.join("policy.yaml");
    revoked_after(&s, &k, &policy, ("untrusted", "DENIED"), || {
        // The kubelet's atomic update: a new timestamped directory, a new `..data_tmp` link to
        // it renamed over `..data`; `policy.yaml` and `cosign.pub` stay the same symlinks.
        version("..2025_01_01_00_01_00.2", &s.key_b);
        std::os::unix::fs::symlink("..2025_01_01_00_01_00.2", mount.join("..data_tmp")).unwrap();
        std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
        std::fs::remove_dir_all(mount.join("..2025_01_01_00_00_00.1")).unwrap();
    });
}
