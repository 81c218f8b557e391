//! A policy as the engine uses it: loaded from its file (and every file it names, each read at
//! most [`MAX_POLICY_FILE_BYTES`]), fingerprinted over all of them. Must not verify or match.

use std::sync::Arc;

use super::Policy;
use crate::reference::Digest;

/// The largest file a policy load reads: the policy itself, a key, a `trusted_root.json`
/// (real ones are a few KiB). A larger file is a load error, not read on.
pub const MAX_POLICY_FILE_BYTES: u64 = 4 << 20;

/// One file a policy load read: the path it opened (relative paths joined to the policy's
/// directory; symlinks, such as a ConfigMap mount's `..data`, not resolved) and the SHA-256 of
/// the bytes it read, `None` when it could not be read. `serve` re-hashes exactly these paths to
/// see whether the policy must be loaded again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// The path as opened.
    pub path: std::path::PathBuf,
    /// The SHA-256 of its bytes; `None`: it could not be read (missing, too large, ...).
    pub digest: Option<Digest>,
}

impl PolicySource {
    /// Read `path` now (at most [`MAX_POLICY_FILE_BYTES`]) and record its digest.
    pub fn hash_now(path: &std::path::Path) -> Self {
        PolicySource {
            path: path.to_path_buf(),
            digest: read_policy_file(path).ok().map(|b| Digest::sha256_of(&b)),
        }
    }
}

/// Read a file a policy names, refusing one over [`MAX_POLICY_FILE_BYTES`].
pub fn read_policy_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_POLICY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_POLICY_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_POLICY_FILE_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// A policy load: the compiled policy or why not, and every file the load read (the policy
/// first), from the same read.
pub struct PolicyLoad {
    /// The policy, or why it cannot be used.
    pub policy: Result<CompiledPolicy, PolicyLoadError>,
    /// Every file read, in the order read, each once.
    pub sources: Vec<PolicySource>,
}

/// The fingerprint of a policy load: the policy text's digest, then each file it named (as
/// named) with the digest of its content, separated so that no two loads run together.
fn fingerprint_of(policy: &Digest, named: &[(std::path::PathBuf, PolicySource)]) -> String {
    let mut log = policy.as_str().as_bytes().to_vec();
    for (p, s) in named {
        log.push(0);
        log.extend_from_slice(p.as_os_str().as_encoded_bytes());
        log.push(0);
        log.extend_from_slice(s.digest.as_ref().map_or("-", |d| d.as_str()).as_bytes());
    }
    Digest::sha256_of(&log).to_string()
}

/// A policy with its trust roots parsed (each with its verifier) and a fingerprint of all of it.
pub struct CompiledPolicy {
    policy: Policy,
    /// sha256 over the policy text and every file it read (keys, trust roots).
    fingerprint: Arc<str>,
    /// The files it was loaded from, as read (empty for a policy not loaded from files).
    sources: Arc<[PolicySource]>,
    /// Its TUF trust roots as loaded.
    tuf: Arc<[super::TufRootStatus]>,
}

impl CompiledPolicy {
    /// Compile a parsed policy; its trust roots were parsed by [`Policy::parse`], so a bad
    /// trusted_root.json is a configuration error at start-up (or at reload), not a denial
    /// later. Nothing is fetched. `fingerprint` identifies the policy's content (see
    /// [`CompiledPolicy::from_file`]).
    pub fn new(policy: Policy, fingerprint: String) -> Self {
        CompiledPolicy {
            policy,
            fingerprint: fingerprint.into(),
            sources: Arc::new([]),
            tuf: Arc::new([]),
        }
    }

    /// Read, validate and compile a policy file; the fingerprint covers the file and every file
    /// it names, so a changed key or trust root is a new policy for the cache.
    pub fn from_file(path: &std::path::Path) -> Result<Self, PolicyLoadError> {
        Self::load(path).policy
    }

    /// [`CompiledPolicy::from_file`], with every file the load read (also when it failed: a
    /// file that was missing is then watched for too).
    pub fn load(path: &std::path::Path) -> PolicyLoad {
        let text = match read_policy_file(path) {
            Ok(t) => t,
            Err(source) => {
                return PolicyLoad {
                    policy: Err(PolicyLoadError::Policy(crate::policy::PolicyError::Read {
                        file: path.to_path_buf(),
                        source,
                    })),
                    sources: vec![PolicySource {
                        path: path.to_path_buf(),
                        digest: None,
                    }],
                };
            }
        };
        let policy_digest = Digest::sha256_of(&text);
        // (path as named, path as opened, digest) of every file the policy names, as read.
        let named = std::cell::RefCell::new(Vec::<(std::path::PathBuf, PolicySource)>::new());
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        let policy = match String::from_utf8(text) {
            Err(_) => Err(PolicyLoadError::NotUtf8 {
                file: path.to_path_buf(),
            }),
            Ok(text) => Policy::parse(&text, path, &|p: &std::path::Path| {
                let opened = base.join(p);
                let read = read_policy_file(&opened);
                named.borrow_mut().push((
                    p.to_path_buf(),
                    PolicySource {
                        path: opened,
                        digest: read.as_ref().ok().map(|b| Digest::sha256_of(b)),
                    },
                ));
                String::from_utf8(read?).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")
                })
            })
            .map_err(PolicyLoadError::Policy),
        };
        let mut named = named.into_inner();
        let mut fingerprint = fingerprint_of(&policy_digest, &named);
        let mut tuf = Vec::new();
        let policy = policy.and_then(|mut policy| {
            let (key, statuses) = super::tuf_roots::resolve(&mut policy, path, base, &mut named)
                .map_err(PolicyLoadError::Policy)?;
            if let Some(key) = key {
                fingerprint =
                    Digest::sha256_of(format!("{fingerprint}\0{key}").as_bytes()).to_string();
            }
            tuf = statuses;
            Ok(policy)
        });
        let mut sources = vec![PolicySource {
            path: path.to_path_buf(),
            digest: Some(policy_digest),
        }];
        for (_, s) in named {
            if !sources.contains(&s) {
                sources.push(s);
            }
        }
        PolicyLoad {
            policy: policy.map(|policy| CompiledPolicy {
                policy,
                fingerprint: fingerprint.into(),
                sources: sources.clone().into(),
                tuf: tuf.into(),
            }),
            sources,
        }
    }

    /// This policy without what it read from `changed` files (paths as opened, as in
    /// [`PolicySource`]): each authority whose key or certificates came from one is
    /// [`Withdrawn`](super::AuthorityKind::Withdrawn), each `trusted_root.json` read from one is
    /// dropped (authorities naming it then say the root is unavailable). `serve` uses it when a
    /// file a policy trusts changed and the policy could not be loaded again: keeping the last
    /// good policy whole would keep trusting a key that was deleted or replaced. None when no
    /// authority or root came from those files (the policy file alone changed).
    pub fn withdrawing(&self, changed: &[std::path::PathBuf]) -> Option<CompiledPolicy> {
        let base = self.sources.first()?.path.parent()?;
        let hit = |f: &std::path::Path| changed.iter().any(|c| *c == base.join(f));
        let mut policy = self.policy.clone();
        let mut gone = Vec::new();
        for a in policy
            .rules
            .iter_mut()
            .flat_map(|r| r.authorities.iter_mut())
        {
            let was = match a.kind {
                super::AuthorityKind::Key { .. } => "key",
                super::AuthorityKind::Certificates { .. } => "certificates",
                _ => continue,
            };
            let files: Vec<_> = a.files.iter().filter(|f| hit(f)).cloned().collect();
            if !files.is_empty() {
                gone.extend(files.iter().cloned());
                a.kind = super::AuthorityKind::Withdrawn { was, files };
            }
        }
        policy.trust_roots.retain(|tr| match &tr.file {
            Some(f) if hit(f) => {
                gone.push(f.clone());
                false
            }
            _ => true,
        });
        if gone.is_empty() {
            return None;
        }
        gone.sort();
        gone.dedup();
        let mut log = format!("{}\0withdrawn", self.fingerprint);
        for f in &gone {
            log.push('\0');
            log.push_str(&f.to_string_lossy());
        }
        Some(CompiledPolicy {
            policy,
            fingerprint: Digest::sha256_of(log.as_bytes()).to_string().into(),
            sources: self.sources.clone(),
            tuf: self.tuf.clone(),
        })
    }

    /// What each TUF trust root of the policy trusts now: the verified cache, the embedded
    /// snapshot, or nothing (and why).
    pub fn tuf_roots(&self) -> &[super::TufRootStatus] {
        &self.tuf
    }

    /// The files this policy was loaded from, with their digests as read.
    pub fn sources(&self) -> &[PolicySource] {
        &self.sources
    }

    /// The policy as parsed.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The SHA-256 over the policy text and every file it read (part of every decision key).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// A policy file that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyLoadError {
    /// The policy file cannot be read (or is over [`MAX_POLICY_FILE_BYTES`]), or it is invalid
    /// (a named key or trust root that cannot be read or used included).
    #[error(transparent)]
    Policy(crate::policy::PolicyError),
    /// The policy file's bytes are not UTF-8 (its digest is still recorded in the sources).
    #[error("policy {}: the file is not UTF-8 text", file.display())]
    NotUtf8 {
        /// The policy's path as given to [`CompiledPolicy::load`].
        file: std::path::PathBuf,
    },
}

impl PolicyLoadError {
    /// Every problem as `file:line:column: message` (or the one error), one per line.
    pub fn lines(&self) -> Vec<String> {
        match self {
            PolicyLoadError::Policy(e) => e.lines(),
            PolicyLoadError::NotUtf8 { .. } => vec![crate::error_chain(self)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::AuthorityKind;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn withdrawing_takes_out_only_what_came_from_the_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pem = |name: &str| {
            let key = crate::sign::key::SigningKey::generate().unwrap();
            std::fs::write(d.join(name), key.public_key().to_pem()).unwrap();
            key.public_key().to_pem()
        };
        pem("file.pub");
        let inline = pem("unused.pub").replace('\n', "\\n");
        std::fs::write(d.join("ca.pem"), ca_pem()).unwrap();
        std::fs::write(
            d.join("root.json"),
            sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
        )
        .unwrap();
        let policy = d.join("policy.yaml");
        std::fs::write(
            &policy,
            format!(
                "apiVersion: ocigate.dev/v1alpha1\nkind: Policy\n\
                 trustRoots: [{{name: corp, trustedRoot: root.json}}]\n\
                 keys: [{{name: f, path: file.pub}}, {{name: i, pem: \"{inline}\"}}]\n\
                 rules:\n  - name: all\n    images: [\"**\"]\n    threshold: 1\n    authorities:\n\
                 \x20   - {{key: {{name: f, trustRoot: corp}}}}\n\
                 \x20   - {{key: {{name: i}}, tlog: skip}}\n\
                 \x20   - name: ca\n      certificates: {{roots: ca.pem, identities: [{{subject: a@example.com}}]}}\n      tlog: skip\n"
            ),
        )
        .unwrap();
        let p = CompiledPolicy::from_file(&policy).unwrap();
        let kinds = |p: &CompiledPolicy| -> Vec<String> {
            p.policy().rules[0]
                .authorities
                .iter()
                .map(|a| match &a.kind {
                    AuthorityKind::Withdrawn { was, files } => format!("{was} {files:?}"),
                    _ => "trusted".into(),
                })
                .collect()
        };
        // The policy file alone, or a file it does not name: nothing to withdraw.
        assert!(p.withdrawing(std::slice::from_ref(&policy)).is_none());
        assert!(p.withdrawing(&[d.join("unused.pub")]).is_none());
        // The key file: its authority only; the inline key and the CA stay.
        let w = p.withdrawing(&[d.join("file.pub")]).unwrap();
        assert_eq!(kinds(&w), ["key [\"file.pub\"]", "trusted", "trusted"]);
        assert_ne!(w.fingerprint(), p.fingerprint());
        assert_eq!(w.policy().trust_roots.len(), 1);
        // The CA file and the trusted root: the CA's authority, and the root dropped.
        let w = p
            .withdrawing(&[d.join("ca.pem"), d.join("root.json")])
            .unwrap();
        assert_eq!(
            kinds(&w),
            ["trusted", "trusted", "certificates [\"ca.pem\"]"]
        );
        assert!(w.policy().trust_roots.iter().all(|tr| tr.name != "corp"));
        // The same files give the same policy; withdrawing is from the last good one.
        let again = p
            .withdrawing(&[d.join("root.json"), d.join("ca.pem")])
            .unwrap();
        assert_eq!(again.fingerprint(), w.fingerprint());
    }
}
