//! Policy reloads in `serve`: the policy is loaded again when any file it was loaded from
//! changes — the policy file, and every key and `trusted_root.json` it names — so that a key
//! replaced in its ConfigMap or Secret (revoked) stops being trusted without touching the
//! policy. Each tick re-hashes exactly the files the last load read (a few, each at most
//! [`MAX_POLICY_FILE_BYTES`](crate::policy::MAX_POLICY_FILE_BYTES)); paths are opened as named,
//! so a mount's `..data` symlink swap is a change of content. The baseline is what the load
//! itself read, never a second read. A load that fails leaves the last good policy in force and
//! is counted; it is tried again when any file it read (or could not read) changes. What that
//! policy read from a key, certificate or trusted-root file that has changed since is withdrawn
//! meanwhile, so deleting a key revokes it even while the policy cannot load.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::Engine;
use crate::policy::{CompiledPolicy, PolicySource};

/// The files of the last load, and whether any of them now differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Baseline(Vec<PolicySource>);

impl Baseline {
    /// The files `policy` was loaded from, with their digests as that load read them.
    pub(crate) fn of(policy: &CompiledPolicy, path: &Path) -> Self {
        let sources = policy.sources();
        if sources.is_empty() {
            // Not loaded from files (a test's policy): watch the policy file itself.
            return Baseline(vec![PolicySource::hash_now(path)]);
        }
        Baseline(sources.to_vec())
    }

    /// The same files hashed now, if any differs from the baseline.
    fn changed(&self) -> Option<Baseline> {
        let now: Vec<PolicySource> = self
            .0
            .iter()
            .map(|s| PolicySource::hash_now(&s.path))
            .collect();
        (now != self.0).then_some(Baseline(now))
    }
}

/// Whether a file reads as empty: a file being rewritten in place, caught half way.
fn empty_now(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() == 0)
}

/// What the watcher keeps from one tick to the next: the files of the last load as it read
/// them, and the last policy that loaded.
#[derive(Clone)]
pub(crate) struct Watch {
    baseline: Baseline,
    last_good: Arc<CompiledPolicy>,
}

impl Watch {
    /// Watching `policy`, the engine's policy, loaded from `path`.
    pub(crate) fn of(policy: Arc<CompiledPolicy>, path: &Path) -> Self {
        Watch {
            baseline: Baseline::of(&policy, path),
            last_good: policy,
        }
    }
}

/// One tick: load the policy again if any file it was loaded from changed. A load that fails
/// leaves the last good policy in force, less what it read from files that have changed
/// since (see [`withdraw_changed`]).
pub(crate) fn reload_if_changed(engine: &Engine, policy: &Path, watch: Watch) -> Watch {
    if watch.baseline.changed().is_none() {
        // Files put back as the baseline has them within one tick: a withdrawn policy is made
        // whole again all the same.
        if engine.policy().fingerprint() != watch.last_good.fingerprint() {
            withdraw_changed(engine, &watch.last_good);
        }
        return watch;
    }
    if empty_now(policy) {
        // Perhaps caught half way through a rewrite: not loaded, but what the last good
        // policy read from files that have changed since is not trusted meanwhile.
        withdraw_changed(engine, &watch.last_good);
        return watch;
    }
    let load = CompiledPolicy::load(policy);
    let baseline = Baseline(load.sources);
    match load.policy {
        Ok(p) => {
            let p = Arc::new(p);
            if p.fingerprint() != engine.policy().fingerprint() {
                let files: Vec<String> = baseline
                    .0
                    .iter()
                    .map(|s| s.path.display().to_string())
                    .collect();
                let msg = serde_json::json!({"msg": "policy reloaded", "fingerprint": p.fingerprint(), "files": files});
                tell!("{msg}");
                engine.set_policy(Arc::clone(&p));
            }
            Watch {
                baseline,
                last_good: p,
            }
        }
        Err(e) => {
            let msg = serde_json::json!({"msg": "policy reload failed; the last good policy stays", "error": crate::error_chain(&e)});
            tell!("{msg}");
            engine.policy_reload_failed();
            let mut baseline = baseline;
            // A policy file that fails to parse names no file: watch the last good one's too.
            for now in withdraw_changed(engine, &watch.last_good) {
                if !baseline.0.iter().any(|s| s.path == now.path) {
                    baseline.0.push(now);
                }
            }
            Watch {
                baseline,
                last_good: watch.last_good,
            }
        }
    }
}

/// After a load that failed: the last good policy goes on, but not what it read from a key,
/// certificate or `trusted_root.json` file that has changed since (deleted, emptied, replaced):
/// a key deleted to revoke it must stop being trusted even while the policy cannot load. Put
/// back whole when those files are as they were. Returns those files as hashed now.
fn withdraw_changed(engine: &Engine, last_good: &Arc<CompiledPolicy>) -> Vec<PolicySource> {
    // Not the policy file: its last good text is what stays.
    let named = last_good.sources().iter().skip(1);
    let now: Vec<PolicySource> = named.map(|s| PolicySource::hash_now(&s.path)).collect();
    let changed: Vec<PathBuf> = now
        .iter()
        .zip(last_good.sources().iter().skip(1))
        .filter(|(now, then)| now != then)
        .map(|(now, _)| now.path.clone())
        .collect();
    let next = match last_good.withdrawing(&changed) {
        Some(p) => Arc::new(p),
        None => Arc::clone(last_good),
    };
    if next.fingerprint() == engine.policy().fingerprint() {
        return now;
    }
    let files: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
    let msg = if Arc::ptr_eq(&next, last_good) {
        serde_json::json!({"msg": "the last good policy is whole again: the files it read are as they were"})
    } else {
        serde_json::json!({"msg": "authorities withdrawn: files the last good policy read keys, certificates or trust roots from have changed", "files": files, "fingerprint": next.fingerprint()})
    };
    tell!("{msg}");
    engine.set_policy(next);
    now
}

/// Watch the files the engine's policy was loaded from, every `interval`, until the process
/// ends.
pub(crate) async fn watch_policy(engine: Engine, policy: PathBuf, interval: Duration) {
    // Hashing files blocks (a policy not loaded from files is hashed here): off the workers.
    let (e, p) = (engine.clone(), policy.clone());
    let Ok(mut watch) = tokio::task::spawn_blocking(move || Watch::of(e.policy(), &p)).await else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Reading files blocks: off the async workers.
        let (e, p, w) = (engine.clone(), policy.clone(), watch.clone());
        watch = match tokio::task::spawn_blocking(move || reload_if_changed(&e, &p, w)).await {
            Ok(w) => w,
            Err(_) => watch,
        };
    }
}

/// Read the registry CA, client certificate and key files (`--registry-ca-file` and the like)
/// again every `interval`, until the process ends: a rotated one is used for new connections.
/// A file that cannot be used is said once (until what is wrong with it changes).
pub(crate) async fn watch_registry_tls(engine: Engine, interval: Duration) {
    if engine.registry().settings().tls_files().is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed_before = Vec::new();
    loop {
        tick.tick().await;
        let e = engine.clone();
        let Ok(r) = tokio::task::spawn_blocking(move || e.registry().reload_tls_files()).await
        else {
            continue;
        };
        if !r.changed.is_empty() {
            let files: Vec<String> = r.changed.iter().map(|p| p.display().to_string()).collect();
            let msg = serde_json::json!({"msg": "registry TLS files reloaded", "files": files});
            tell!("{msg}");
        }
        if r.failed != failed_before && !r.failed.is_empty() {
            let errors: Vec<String> = (r.failed.iter())
                .map(|(p, e)| format!("{}: {e}", p.display()))
                .collect();
            let msg = serde_json::json!({"msg": "registry TLS files cannot be used; what they held before stays", "errors": errors});
            tell!("{msg}");
        }
        failed_before = r.failed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::policy::AuthorityKind;

    fn public_pem() -> String {
        crate::sign::key::SigningKey::generate()
            .unwrap()
            .public_key()
            .to_pem()
    }

    const POLICY: &str = "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n\
        keys: [{name: k, path: cosign.pub}]\n\
        rules:\n  - name: all\n    images: [\"**\"]\n    \
        authorities: [{key: {name: k}, tlog: skip}]\n";

    /// A directory with `POLICY` and the key `pem`, an engine on it, and its watch.
    fn watched(pem: &str) -> (tempfile::TempDir, PathBuf, Engine, Watch) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cosign.pub"), pem).unwrap();
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, POLICY).unwrap();
        let first = CompiledPolicy::from_file(&policy).unwrap();
        let engine = Engine::new(
            crate::registry::Registry::new(Default::default()),
            first,
            EngineConfig::default(),
        );
        let watch = Watch::of(engine.policy(), &policy);
        (dir, policy, engine, watch)
    }

    fn withdrawn(engine: &Engine) -> bool {
        let p = engine.policy();
        let a = &p.policy().rules[0].authorities[0];
        matches!(&a.kind, AuthorityKind::Withdrawn { was: "key", files } if files == &[PathBuf::from("cosign.pub")])
    }

    fn replace(path: &Path, text: &str) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn a_changed_key_file_is_a_new_policy() {
        let (a, b) = (public_pem(), public_pem());
        let (dir, policy, engine, watch) = watched(&a);
        let d = dir.path();
        let first = CompiledPolicy::from_file(&policy).unwrap();
        let paths: Vec<_> = first.sources().iter().map(|s| s.path.clone()).collect();
        assert_eq!(paths, [policy.clone(), d.join("cosign.pub")]);
        let old = engine.policy().fingerprint().to_string();
        // Nothing changed: no load.
        let same = reload_if_changed(&engine, &policy, watch.clone());
        assert_eq!(same.baseline, watch.baseline);
        assert_eq!(engine.policy().fingerprint(), old);
        // Only the key file changes: a new fingerprint, loaded.
        replace(&d.join("cosign.pub"), &b);
        let next = reload_if_changed(&engine, &policy, watch);
        assert_ne!(engine.policy().fingerprint(), old);
        assert_eq!(
            engine.policy().fingerprint(),
            CompiledPolicy::from_file(&policy).unwrap().fingerprint()
        );
        assert_eq!(next.baseline, Baseline::of(&engine.policy(), &policy));
        // A key file that goes away: the load fails, and the last good policy stays without
        // that key (withdrawn: its fingerprint is new, so no cached allow is used); the missing
        // file is what the next tick watches.
        let kept = engine.policy().fingerprint().to_string();
        std::fs::remove_file(d.join("cosign.pub")).unwrap();
        let failed = reload_if_changed(&engine, &policy, next);
        assert_ne!(engine.policy().fingerprint(), kept);
        assert!(withdrawn(&engine));
        assert!(
            failed.baseline.0.iter().any(|s| s.digest.is_none()),
            "{:?}",
            failed.baseline
        );
        // The same failure again changes nothing.
        let withdrawn_print = engine.policy().fingerprint().to_string();
        let again = reload_if_changed(&engine, &policy, failed.clone());
        assert_eq!(engine.policy().fingerprint(), withdrawn_print);
        assert_eq!(again.baseline, failed.baseline);
        std::fs::write(d.join("cosign.pub"), &a).unwrap();
        reload_if_changed(&engine, &policy, failed);
        assert_eq!(engine.policy().fingerprint(), old);
        assert!(!withdrawn(&engine));
    }

    #[test]
    fn a_broken_policy_file_keeps_the_last_good_policy_whole_until_a_key_changes() {
        let (a, b) = (public_pem(), public_pem());
        let (dir, policy, engine, watch) = watched(&a);
        let d = dir.path();
        let good = engine.policy().fingerprint().to_string();
        // The policy file alone breaks: the last good policy stays as it was.
        std::fs::write(&policy, "rules: [").unwrap();
        let w = reload_if_changed(&engine, &policy, watch);
        assert_eq!(engine.policy().fingerprint(), good);
        // Meanwhile its key is replaced by another (valid) key: the old one is withdrawn and
        // the new one is not trusted either (the policy that would name it does not load).
        replace(&d.join("cosign.pub"), &b);
        let w = reload_if_changed(&engine, &policy, w);
        assert!(withdrawn(&engine));
        // The key is put back as it was: the last good policy is whole again.
        replace(&d.join("cosign.pub"), &a);
        let w = reload_if_changed(&engine, &policy, w);
        assert_eq!(engine.policy().fingerprint(), good);
        // An empty policy file (a rewrite caught half way, or a ConfigMap value set to "") is
        // not loaded, and withdraws just the same.
        std::fs::write(&policy, "").unwrap();
        std::fs::remove_file(d.join("cosign.pub")).unwrap();
        let w = reload_if_changed(&engine, &policy, w);
        assert!(withdrawn(&engine));
        replace(&d.join("cosign.pub"), &a);
        let w = reload_if_changed(&engine, &policy, w);
        assert_eq!(engine.policy().fingerprint(), good);
        // Emptied, then put back within one tick (the baseline of the empty policy's tick
        // is what comes back): whole again.
        std::fs::write(&policy, "").unwrap();
        std::fs::remove_file(d.join("cosign.pub")).unwrap();
        let w = reload_if_changed(&engine, &policy, w);
        assert!(withdrawn(&engine));
        std::fs::write(&policy, "rules: [").unwrap();
        replace(&d.join("cosign.pub"), &a);
        let w = reload_if_changed(&engine, &policy, w);
        assert_eq!(engine.policy().fingerprint(), good);
        // A policy file that cannot be read at all is no different.
        std::fs::remove_file(&policy).unwrap();
        std::fs::remove_file(d.join("cosign.pub")).unwrap();
        reload_if_changed(&engine, &policy, w);
        assert!(withdrawn(&engine));
    }

    #[test]
    fn files_are_read_to_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.yaml");
        let big = crate::policy::MAX_POLICY_FILE_BYTES as usize + 1;
        std::fs::write(&policy, vec![b'#'; big]).unwrap();
        let load = CompiledPolicy::load(&policy);
        let e = load.policy.err().unwrap();
        assert!(crate::error_chain(&e).contains("larger than"), "{e}");
        assert_eq!(load.sources[0].digest, None);
    }
}
