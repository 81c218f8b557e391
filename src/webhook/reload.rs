//! Policy reloads in `serve`: the policy is loaded again when any file it was loaded from
//! changes — the policy file, and every key and `trusted_root.json` it names — so that a key
//! replaced in its ConfigMap or Secret (revoked) stops being trusted without touching the
//! policy. Each tick re-hashes exactly the files the last load read (a few, each at most
//! [`MAX_POLICY_FILE_BYTES`](crate::policy::MAX_POLICY_FILE_BYTES)); paths are opened as named,
//! so a mount's `..data` symlink swap is a change of content. The baseline is what the load
//! itself read, never a second read. A load that fails leaves the last good policy in force and
//! is counted; it is tried again when any file it read (or could not read) changes.

use std::path::{Path, PathBuf};
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

/// One tick: load the policy again if any file it was loaded from changed; returns the new
/// baseline (the files of this load as it read them, when it ran).
pub(crate) fn reload_if_changed(engine: &Engine, policy: &Path, baseline: Baseline) -> Baseline {
    if baseline.changed().is_none() || empty_now(policy) {
        return baseline;
    }
    let load = CompiledPolicy::load(policy);
    let next = Baseline(load.sources);
    match load.policy {
        Ok(p) if p.fingerprint() == engine.policy().fingerprint() => {}
        Ok(p) => {
            let files: Vec<String> = next
                .0
                .iter()
                .map(|s| s.path.display().to_string())
                .collect();
            let msg = serde_json::json!({"msg": "policy reloaded", "fingerprint": p.fingerprint(), "files": files});
            tell!("{msg}");
            engine.set_policy(p);
        }
        Err(e) => {
            let msg = serde_json::json!({"msg": "policy reload failed; the last good policy stays", "error": crate::error_chain(&e)});
            tell!("{msg}");
            engine.policy_reload_failed();
        }
    }
    next
}

/// Watch the files the engine's policy was loaded from, every `interval`, until the process
/// ends.
pub(crate) async fn watch_policy(engine: Engine, policy: PathBuf, interval: Duration) {
    // Hashing files blocks (a policy not loaded from files is hashed here): off the workers.
    let (e, p) = (engine.clone(), policy.clone());
    let Ok(mut baseline) = tokio::task::spawn_blocking(move || Baseline::of(&e.policy(), &p)).await
    else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Reading files blocks: off the async workers.
        let (e, p, b) = (engine.clone(), policy.clone(), baseline.clone());
        baseline = match tokio::task::spawn_blocking(move || reload_if_changed(&e, &p, b)).await {
            Ok(b) => b,
            Err(_) => baseline,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    fn public_pem() -> String {
        crate::sign::key::SigningKey::generate()
            .unwrap()
            .public_key()
            .to_pem()
    }

    #[test]
    fn a_changed_key_file_is_a_new_policy() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (a, b) = (public_pem(), public_pem());
        std::fs::write(d.join("cosign.pub"), &a).unwrap();
        let policy = d.join("policy.yaml");
        std::fs::write(
            &policy,
            "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\nnoMatch: deny\n\
             keys: [{name: k, path: cosign.pub}]\n\
             rules:\n  - name: all\n    images: [\"**\"]\n    \
             authorities: [{key: {name: k}, tlog: skip}]\n",
        )
        .unwrap();
        let first = CompiledPolicy::from_file(&policy).unwrap();
        let paths: Vec<_> = first.sources().iter().map(|s| s.path.clone()).collect();
        assert_eq!(paths, [policy.clone(), d.join("cosign.pub")]);
        let engine = Engine::new(
            crate::registry::Registry::new(Default::default()),
            first,
            EngineConfig::default(),
        );
        let baseline = Baseline::of(&engine.policy(), &policy);
        let old = engine.policy().fingerprint().to_string();
        // Nothing changed: no load.
        let same = reload_if_changed(&engine, &policy, baseline.clone());
        assert_eq!(same, baseline);
        assert_eq!(engine.policy().fingerprint(), old);
        // Only the key file changes: a new fingerprint, loaded.
        std::fs::write(d.join("cosign.pub.new"), &b).unwrap();
        std::fs::rename(d.join("cosign.pub.new"), d.join("cosign.pub")).unwrap();
        let next = reload_if_changed(&engine, &policy, baseline);
        assert_ne!(engine.policy().fingerprint(), old);
        assert_eq!(
            engine.policy().fingerprint(),
            CompiledPolicy::from_file(&policy).unwrap().fingerprint()
        );
        assert_eq!(next, Baseline::of(&engine.policy(), &policy));
        // A key file that goes away: the load fails, the last good policy stays, and the
        // missing file is what the next tick watches.
        let kept = engine.policy().fingerprint().to_string();
        std::fs::remove_file(d.join("cosign.pub")).unwrap();
        let failed = reload_if_changed(&engine, &policy, next);
        assert_eq!(engine.policy().fingerprint(), kept);
        assert!(failed.0.iter().any(|s| s.digest.is_none()), "{failed:?}");
        std::fs::write(d.join("cosign.pub"), &a).unwrap();
        reload_if_changed(&engine, &policy, failed);
        assert_eq!(engine.policy().fingerprint(), old);
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
