//! TUF trust roots (issue #19): repositories written by python-tuf (scripts/tuf-repo.py) and
//! served on loopback by python's http.server, a directory or a .tar.gz; `trust-root update`,
//! `show`, a policy's `tuf:` root used by `verify`, and the attacks TUF refuses.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::corpus::Fixture;
use crate::harness::*;

/// The tools venv's python with python-tuf, or a loud skip (a failure in CI).
pub(crate) fn tuf_python_or_skip(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("OCIGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("ocigate-tools/venv/bin/python"))
        })?;
    let ok = Command::new(&python)
        .args(["-c", "import tuf.api.metadata, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    if strict() {
        panic!(
            "{test}: {} has no python-tuf (scripts/test.sh installs it)",
            python.display()
        );
    }
    eprintln!("SKIPPED {test}: no python-tuf in the tools venv; these TUF checks did NOT run");
    None
}

/// A python-tuf repository under a temporary directory, and the cache ocigate uses.
pub(crate) struct Repo {
    python: PathBuf,
    dir: tempfile::TempDir,
}

impl Repo {
    pub(crate) fn new(python: PathBuf, target: &Path) -> Self {
        let r = Repo {
            python,
            dir: tempfile::tempdir().unwrap(),
        };
        r.step(&["init", target.to_str().unwrap()]);
        r
    }

    pub(crate) fn step(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tuf-repo.py");
        let out = Command::new(&self.python)
            .arg(script)
            .arg(self.dir.path().join("r"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "tuf-repo.py {args:?}: {out:?}");
    }

    /// The repository directory (Sigstore's layout).
    pub(crate) fn repo(&self) -> PathBuf {
        self.dir.path().join("r/repo")
    }

    /// The bootstrap root (version 1), copied out so that the repository may change under it.
    pub(crate) fn bootstrap(&self) -> PathBuf {
        let p = self.dir.path().join("bootstrap-root.json");
        if !p.exists() {
            std::fs::copy(self.repo().join("1.root.json"), &p).unwrap();
        }
        p
    }

    pub(crate) fn cache(&self) -> String {
        self.dir.path().join("cache").to_str().unwrap().to_string()
    }

    /// A copy of the repository as it is now (to serve later: a rollback or freeze).
    fn save(&self, name: &str) -> PathBuf {
        let to = self.dir.path().join(name);
        copy_dir(&self.repo(), &to);
        to
    }

    fn trust_root(&self, verb: &str, mirror: &str, extra: &[&str]) -> Run {
        let boot = self.bootstrap();
        let cache = self.cache();
        let mut args = vec![
            "trust-root",
            verb,
            "--mirror",
            mirror,
            "--root",
            boot.to_str().unwrap(),
            "--name",
            "corp",
            "--tuf-cache-dir",
            &cache,
        ];
        args.extend_from_slice(extra);
        ocigate_exact(&args, &[])
    }

    fn show(&self, mirror: &str) -> serde_json::Value {
        let r = self.trust_root("show", mirror, &["-o", "json"]);
        assert_eq!(r.code, 0, "{r:?}");
        r.json()["trustRoots"][0].clone()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// python's http.server over a directory on a free loopback port; stopped on drop.
pub(crate) struct Served {
    child: Child,
    pub(crate) url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve_dir(python: &Path, dir: &Path) -> Served {
    let port = free_port();
    let child = Command::new(python)
        .args([
            "-m",
            "http.server",
            "-b",
            "127.0.0.1",
            &port.to_string(),
            "-d",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Served {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// The corpus' public-good trusted_root.json, and the same without the Rekor v1 log's key
/// (the log the corpus' key-rekor signature is in): the "old" root a mirror serves first.
pub(crate) fn roots(corpus: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let full = corpus.join("sigstore-root-signing/targets/trusted_root.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&full).unwrap()).unwrap();
    v["tlogs"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["baseUrl"] != "https://rekor.sigstore.dev");
    let without = dir.join("without-rekor-v1.json");
    std::fs::write(&without, v.to_string()).unwrap();
    (full, without)
}

/// A policy whose one rule wants the corpus' cosign2 key with a Rekor entry (its
/// `dir-img-cosign-key-rekor-valid` image) under the TUF root `corp` from `mirror`.
pub(crate) fn key_rekor_policy(
    dir: &Path,
    mirror: &str,
    bootstrap: &Path,
    corpus: &Path,
) -> PathBuf {
    let key = corpus.join("containers-image/signature/fixtures/cosign2.pub");
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "{}keys:\n  - name: k\n    path: {}\nrules:\n  - name: all\n    images: [\"**\"]\n    signedIdentity: {{exactRepository: \"192.168.64.2:5000/cosign-signed/key-1\"}}\n    authorities:\n      - key: {{name: k, trustRoot: corp}}\n        tlog: required\n",
            corp_root(mirror, bootstrap),
            key.display()
        ),
    )
    .unwrap();
    policy
}

/// A policy's header defining the TUF trust root `corp`.
fn corp_root(mirror: &str, bootstrap: &Path) -> String {
    format!(
        "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\ntrustRoots:\n  - name: corp\n    tuf:\n      mirror: {mirror}\n      root: {}\n",
        bootstrap.display()
    )
}

#[test]
fn tuf_bootstrap_root_rotation_and_a_new_target_reach_verify() {
    let test = "tuf_bootstrap_root_rotation_and_a_new_target_reach_verify";
    let (Some(python), Some(corpus)) = (tuf_python_or_skip(test), corpus_or_skip(test)) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (full, without) = roots(&corpus, work.path());
    let repo = Repo::new(python.clone(), &without);
    let served = serve_dir(&python, &repo.repo());

    // Bootstrap.
    let r = repo.trust_root("update", &served.url, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let s = repo.show(&served.url);
    assert_eq!(s["source"], "cache", "{s}");
    assert_eq!(s["metadata"]["root"]["version"], 1, "{s}");

    // Root rotation v1 -> v2 -> v3, each with new root and timestamp keys.
    repo.step(&["rotate-root"]);
    repo.step(&["rotate-root"]);
    let r = repo.trust_root("initialize", &served.url, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(repo.show(&served.url)["metadata"]["root"]["version"], 3);

    // A policy naming the TUF root; the signature's Rekor entry is in the v1 log, whose key
    // the first trusted_root.json lacks.
    let fx = Fixture::new(&corpus);
    let reg = TestRegistry::start();
    let image = fx.push(&reg, "dir-img-cosign-key-rekor-valid", "tuf/key-rekor");
    let policy = key_rekor_policy(work.path(), &served.url, &repo.bootstrap(), &corpus);
    let cache = repo.cache();
    let host = reg.host();
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            image.as_str(),
            "--policy",
            policy.to_str().unwrap(),
            "--tuf-cache-dir",
            &cache,
            "--registry-plain-http",
            &host,
        ];
        args.extend_from_slice(extra);
        ocigate_exact(&args, &[])
    };
    let v = verify(&[]);
    assert_eq!(
        v.code, 1,
        "the old root has no key for the entry's log: {v:?}"
    );

    // The mirror publishes a trusted_root.json with the key: nothing changes until an update.
    repo.step(&["set-target", full.to_str().unwrap()]);
    assert_eq!(verify(&[]).code, 1);
    let r = ocigate_exact(
        &[
            "trust-root",
            "update",
            "--policy",
            policy.to_str().unwrap(),
            "--tuf-cache-dir",
            &cache,
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let v = verify(&[]);
    assert_eq!(v.code, 0, "{v:?}");
    assert!(v.stdout.contains("Rekor log index"), "{v:?}");

    // show --policy reports the cached versions: targets v2 now.
    let r = ocigate_exact(
        &[
            "trust-root",
            "show",
            "--policy",
            policy.to_str().unwrap(),
            "--tuf-cache-dir",
            &cache,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let s = &r.json()["trustRoots"][0];
    assert_eq!(s["metadata"]["targets"]["version"], 2, "{s}");
    assert!(
        s["authorities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["kind"] == "tlog" && w["id"] == "https://rekor.sigstore.dev")
    );

    // --refresh-trust-root: a new cache, updated by the verify itself.
    let fresh = work.path().join("fresh-cache");
    let v = ocigate_exact(
        &[
            "verify",
            &image,
            "--policy",
            policy.to_str().unwrap(),
            "--tuf-cache-dir",
            fresh.to_str().unwrap(),
            "--registry-plain-http",
            &host,
            "--refresh-trust-root",
        ],
        &[],
    );
    assert_eq!(v.code, 0, "{v:?}");

    // No cache at all: the root of one's own is unavailable, a policy failure.
    let v = ocigate_exact(
        &[
            "verify",
            &image,
            "--policy",
            policy.to_str().unwrap(),
            "--tuf-cache-dir",
            work.path().join("none").to_str().unwrap(),
            "--registry-plain-http",
            &host,
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(v.code, 1, "{v:?}");
    assert!(v.stdout.contains("\"policy\""), "{v:?}");
}

#[test]
fn tuf_attacks_are_refused_and_the_last_good_root_kept() {
    let test = "tuf_attacks_are_refused_and_the_last_good_root_kept";
    let (Some(python), Some(corpus)) = (tuf_python_or_skip(test), corpus_or_skip(test)) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (full, _) = roots(&corpus, work.path());
    let repo = Repo::new(python.clone(), &full);
    let served = serve_dir(&python, &repo.repo());
    repo.step(&["set-target", full.to_str().unwrap()]);
    assert_eq!(repo.trust_root("update", &served.url, &[]).code, 0);
    let good = repo.show(&served.url);
    assert_eq!(good["metadata"]["timestamp"]["version"], 2, "{good}");
    let refused = |what: &str, role: &str| {
        let r = repo.trust_root("update", &served.url, &[]);
        assert_eq!(r.code, 2, "{what}: {r:?}");
        assert!(
            r.stderr
                .contains(&format!("{role} from mirror {}", served.url)),
            "{what}: {r:?}"
        );
        let now = repo.show(&served.url);
        assert_eq!(now["source"], "cache", "{what}: {now}");
        assert_eq!(
            now["metadata"], good["metadata"],
            "{what}: the last good root is kept"
        );
    };

    // An expired timestamp.
    let before = repo.save("before-expired");
    repo.step(&["timestamp", "--expires", "-60"]);
    refused("expired timestamp", "timestamp");

    // A timestamp pinning an older snapshot (a rollback).
    repo.step(&["timestamp", "--snapshot-version", "1"]);
    refused("snapshot rollback", "timestamp");
    let r = repo.trust_root("update", &served.url, &[]);
    assert!(r.stderr.contains("rollback"), "{r:?}");

    // An older timestamp served again (a rollback of the timestamp itself).
    repo.step(&["timestamp"]);
    repo.step(&["timestamp"]);
    assert_eq!(repo.trust_root("update", &served.url, &[]).code, 0);
    let good2 = repo.show(&served.url);
    std::fs::copy(
        before.join("timestamp.json"),
        repo.repo().join("timestamp.json"),
    )
    .unwrap();
    let r = repo.trust_root("update", &served.url, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("rollback"), "{r:?}");
    assert_eq!(repo.show(&served.url)["metadata"], good2["metadata"]);

    // A freeze: the mirror keeps serving metadata that has since expired. The update is
    // refused, and the cache is not touched (it expired with it: TUF's freeze protection means
    // it is not used after its expiry either).
    repo.step(&["timestamp", "--expires", "3"]);
    assert_eq!(repo.trust_root("update", &served.url, &[]).code, 0);
    let frozen = repo.show(&served.url)["metadata"].clone();
    let cache_file = |f: &str| {
        std::fs::read_dir(repo.cache())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_dir() && !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
            .map(|d| std::fs::read(d.join(f)).unwrap())
            .unwrap()
    };
    let cached_ts = cache_file("timestamp.json");
    std::thread::sleep(Duration::from_secs(4));
    let r = repo.trust_root("update", &served.url, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("timestamp from mirror") && r.stderr.contains("expired"),
        "{r:?}"
    );
    assert_eq!(
        cache_file("timestamp.json"),
        cached_ts,
        "nothing written that did not verify"
    );
    let s = repo.show(&served.url);
    assert_eq!(s["source"], "unavailable", "{s}");
    assert!(s["reason"].as_str().unwrap().contains("expired"), "{s}");
    assert!(
        frozen["timestamp"]["version"].as_u64()
            > good2["metadata"]["timestamp"]["version"].as_u64()
    );
}

#[test]
fn tuf_mirror_as_a_directory_and_a_tar_gz_without_network() {
    let test = "tuf_mirror_as_a_directory_and_a_tar_gz_without_network";
    let (Some(python), Some(corpus)) = (tuf_python_or_skip(test), corpus_or_skip(test)) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (full, _) = roots(&corpus, work.path());
    let repo = Repo::new(python.clone(), &full);
    repo.step(&["rotate-root"]);
    // No proxy, no server: a local path only.
    let dir = repo.repo();
    let r = repo.trust_root("update", dir.to_str().unwrap(), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        repo.show(dir.to_str().unwrap())["metadata"]["root"]["version"],
        2
    );

    // The same repository as a .tar.gz, in python-tuf's metadata/ + targets/ layout.
    repo.step(&["set-target", full.to_str().unwrap()]);
    let archive = work.path().join("mirror.tar.gz");
    let script = "import os, sys, tarfile\nsrc, out = sys.argv[1], sys.argv[2]\nwith tarfile.open(out, 'w:gz') as t:\n    for n in os.listdir(src):\n        p = os.path.join(src, n)\n        t.add(p, arcname=('targets' if n == 'targets' else 'metadata/' + n))\n";
    let out = Command::new(&python)
        .args([
            "-c",
            script,
            dir.to_str().unwrap(),
            archive.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let a = archive.to_str().unwrap();
    let r = repo.trust_root("update", a, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let s = repo.show(a);
    assert_eq!(s["metadata"]["root"]["version"], 2, "{s}");
    assert_eq!(s["metadata"]["targets"]["version"], 2, "{s}");

    // Garbage for an archive names the mirror.
    std::fs::write(&archive, b"not gzip").unwrap();
    let r = repo.trust_root("update", a, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("mirror archive"), "{r:?}");
}

#[test]
fn tuf_bootstrap_not_signed_by_its_own_keys_is_refused() {
    let test = "tuf_bootstrap_not_signed_by_its_own_keys_is_refused";
    let (Some(python), Some(corpus)) = (tuf_python_or_skip(test), corpus_or_skip(test)) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (full, _) = roots(&corpus, work.path());
    let repo = Repo::new(python, &full);
    // The bootstrap with what it signs changed: still TUF root metadata, no longer signed by
    // its own keys.
    let mut forged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.bootstrap()).unwrap()).unwrap();
    forged["signed"]["expires"] = "2099-01-01T00:00:00Z".into();
    let forged_path = work.path().join("forged-root.json");
    std::fs::write(&forged_path, serde_json::to_vec(&forged).unwrap()).unwrap();
    let policy = work.path().join("policy.yaml");
    let text = format!(
        "{}rules:\n  - name: r\n    images: [\"**\"]\n    authorities:\n      - keyless:\n          trustRoot: corp\n          identities: [{{issuer: https://i, subject: s}}]\n",
        corp_root(&repo.repo().display().to_string(), &forged_path)
    );
    std::fs::write(&policy, text).unwrap();
    let cache = repo.cache();
    let p = policy.to_str().unwrap();
    // No cache: the loader checks the bootstrap's signatures, and says where the policy names it.
    let r = ocigate_exact(&["--tuf-cache-dir", &cache, "policy", "check", p], &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("policy.yaml:7:13:") && r.stderr.contains("bootstrap root.json"),
        "{r:?}"
    );
    // An update from it fails on the bootstrap, and caches nothing.
    let r = ocigate_exact(
        &[
            "--tuf-cache-dir",
            &cache,
            "trust-root",
            "update",
            "--policy",
            p,
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("bootstrap root.json"), "{r:?}");
    let cached = std::fs::read_dir(&cache).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.path().join("timestamp.json").exists())
            .count()
    });
    assert_eq!(cached, 0, "nothing cached from a forged bootstrap");
    // The genuine bootstrap: updated, and the policy loads from the cache.
    std::fs::copy(repo.bootstrap(), &forged_path).unwrap();
    let r = ocigate_exact(
        &[
            "--tuf-cache-dir",
            &cache,
            "trust-root",
            "update",
            "--policy",
            p,
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = ocigate_exact(&["--tuf-cache-dir", &cache, "policy", "check", p], &[]);
    assert_eq!(r.code, 0, "{r:?}");
}

/// A loopback server that answers every request with `answer` (or never, when `None`).
fn hostile(answer: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            match answer {
                Some(a) => {
                    let _ = s.write_all(a.as_bytes());
                }
                None => held.push(s),
            }
        }
    });
    url
}

#[test]
fn tuf_mirror_that_redirects_hangs_or_serves_garbage_fails_in_time() {
    let test = "tuf_mirror_that_redirects_hangs_or_serves_garbage_fails_in_time";
    let (Some(python), Some(corpus)) = (tuf_python_or_skip(test), corpus_or_skip(test)) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (full, _) = roots(&corpus, work.path());
    let repo = Repo::new(python.clone(), &full);

    let redirect = hostile(Some(
        "HTTP/1.1 302 Found\r\nLocation: http://203.0.113.1/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ));
    let r = repo.trust_root("update", &redirect, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains(&format!("root from mirror {redirect}/")) && r.stderr.contains("302"),
        "{r:?}"
    );

    let silent = hostile(None);
    let start = Instant::now();
    let r = repo.trust_root("update", &silent, &["--timeout", "2s"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        r.stderr.contains(&format!("mirror {silent}/")) && r.stderr.contains("root"),
        "{r:?}"
    );

    // An answer larger than sigstore-tuf allows for a root (512 KiB) is refused unread.
    let huge = hostile(Some(
        "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\nConnection: close\r\n\r\n{",
    ));
    let r = repo.trust_root("update", &huge, &["--timeout", "5s"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("larger than"), "{r:?}");

    // Garbage where timestamp.json should be.
    std::fs::write(repo.repo().join("timestamp.json"), b"\x00garbage").unwrap();
    let served = serve_dir(&python, &repo.repo());
    let r = repo.trust_root("update", &served.url, &[]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("timestamp from mirror {}/", served.url)),
        "{r:?}"
    );
    let s = repo.show(&served.url);
    assert_eq!(
        s["source"], "unavailable",
        "nothing cached that did not verify: {s}"
    );
}

/// The real sigstore-root-signing root.json in the corpus (version 15, expired 2026-11-20):
/// its signatures verify as a bootstrap and it chains to the root ocigate embeds (version 16,
/// signed by v15's keys); a refresh then needs the timestamp the corpus does not have.
#[test]
fn tuf_public_good_bootstrap_through_the_corpus_root() {
    let test = "tuf_public_good_bootstrap_through_the_corpus_root";
    let Some(corpus) = corpus_or_skip(test) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let mirror = work.path().join("mirror");
    std::fs::create_dir_all(&mirror).unwrap();
    let v15 = corpus.join("sigstore-root-signing/metadata/root.json");
    let embedded: &[u8] = sigstore_trust_root::SigstoreInstance::PublicGood.tuf_root();
    let v16: serde_json::Value = serde_json::from_slice(embedded).unwrap();
    assert_eq!(v16["signed"]["version"], 16);
    std::fs::write(mirror.join("16.root.json"), embedded).unwrap();
    let cache = work.path().join("cache");
    let r = ocigate_exact(
        &[
            "trust-root",
            "update",
            "--mirror",
            mirror.to_str().unwrap(),
            "--root",
            v15.to_str().unwrap(),
            "--name",
            "public-good-corpus",
            "--tuf-cache-dir",
            cache.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{r:?}");
    // Past the bootstrap (its signatures) and the root chain v15 -> v16 (real signatures):
    // what is missing is the timestamp.
    assert!(r.stderr.contains("timestamp from mirror"), "{r:?}");
    assert!(r.stderr.contains("timestamp.json not found"), "{r:?}");
    // Without v16 the expired v15 itself is refused, naming the root role.
    std::fs::remove_file(mirror.join("16.root.json")).unwrap();
    let r = ocigate_exact(
        &[
            "trust-root",
            "update",
            "--mirror",
            mirror.to_str().unwrap(),
            "--root",
            v15.to_str().unwrap(),
            "--tuf-cache-dir",
            cache.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("root from mirror") && r.stderr.contains("expired"),
        "{r:?}"
    );
}

/// A plain-HTTP GET on loopback (the metrics listener).
pub(crate) fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn serve_picks_up_a_new_trusted_root_without_restart_and_keeps_it_when_the_mirror_fails() {
    let test =
        "serve_picks_up_a_new_trusted_root_without_restart_and_keeps_it_when_the_mirror_fails";
    let (Some(python), Some(corpus)) = (tuf_python_or_skip(test), corpus_or_skip(test)) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (full, without) = roots(&corpus, work.path());
    let repo = Repo::new(python.clone(), &without);
    let served = serve_dir(&python, &repo.repo());
    let fx = Fixture::new(&corpus);
    let reg = TestRegistry::start();
    let image = fx.push(&reg, "dir-img-cosign-key-rekor-valid", "tuf/serve");
    let policy = key_rekor_policy(work.path(), &served.url, &repo.bootstrap(), &corpus);
    let cache = repo.cache();
    let r = ocigate_exact(
        &[
            "trust-root",
            "update",
            "--policy",
            policy.to_str().unwrap(),
            "--tuf-cache-dir",
            &cache,
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{r:?}");

    let tls = make_tls(work.path());
    let server = crate::webhook::start_serve(
        &policy,
        &tls,
        &reg.host(),
        &["--tuf-cache-dir", &cache, "--trust-root-refresh", "1s"],
    );
    let client = crate::webhook::tls_client(&tls);
    let mut n = 0;
    let mut allowed = || {
        n += 1;
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": format!("u{n}"), "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": "p", "namespace": "apps", "operation": "CREATE",
                "userInfo": {"username": "test"},
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "apps"},
                           "spec": {"containers": [{"name": "a", "image": image}]}}
            }
        });
        let v: serde_json::Value = client
            .post(server.url("/validate"))
            .json(&review)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["response"]["allowed"].as_bool().unwrap()
    };
    assert!(!allowed(), "the first root lacks the entry's log key");
    let metrics = scrape(server.metrics);
    assert!(
        metrics.contains("ocigate_trust_root_expiry_timestamp_seconds{root=\"corp\"}"),
        "{metrics}"
    );

    // The mirror publishes the new trusted root: the running server picks it up.
    repo.step(&["set-target", full.to_str().unwrap()]);
    let start = Instant::now();
    while !allowed() {
        assert!(start.elapsed() < Duration::from_secs(60), "never picked up");
        std::thread::sleep(Duration::from_millis(300));
    }

    // The mirror goes away: refreshes fail, are counted, and the last good root stays.
    drop(served);
    let start = Instant::now();
    loop {
        let m = scrape(server.metrics);
        let failures = m
            .lines()
            .find_map(|l| {
                l.strip_prefix("ocigate_trust_root_refresh_failures_total{root=\"corp\"} ")
            })
            .and_then(|v| v.trim().parse::<u64>().ok());
        if failures.is_some_and(|f| f >= 1) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no failure counted: {m}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(allowed(), "the last good root stays in force");

    // Its bootstrap root.json is deleted: the policy no longer loads, and the root it feeds
    // is withdrawn from the last good policy meanwhile (denied); put back, it is trusted again.
    let bootstrap = repo.bootstrap();
    let kept = std::fs::read(&bootstrap).unwrap();
    std::fs::remove_file(&bootstrap).unwrap();
    let start = Instant::now();
    while allowed() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "a deleted bootstrap kept its root"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::fs::write(&bootstrap, kept).unwrap();
    let start = Instant::now();
    while !allowed() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never trusted again"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
