//! The policy as data: its rules (each with an identity, [`RuleId`]), authorities, trust roots
//! and modes, and matching a repository name to its rule. Must not read files or verify.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::namespace::{NamespaceContext, NamespaceScope, Scoped};
use super::pattern::{Pattern, Patterns, segment_glob};
use super::read;
use super::validate::Validator;
use super::{Issue, PolicyError};
use crate::condition::Condition;
use crate::predicate::PredicateType;
use crate::signature_place::SignaturesRepository;
use crate::trust::{CertificateAuthorities, Identity, Matcher, PublicKey, TrustRoot};
use crate::verify::SignedIdentity;

/// What to do with references no rule matches (decided before any registry call).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoMatch {
    /// `noMatch: deny` (the default): `DENY` with failure `no-match`.
    #[default]
    Deny,
    /// `noMatch: allow`: `ALLOW`, with no registry call.
    Allow,
    /// `noMatch: warn`: `WARN` (admitted with a warning; `verify` exits 0).
    Warn,
}

/// What a failed rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny.
    #[default]
    Enforce,
    /// Allow with a warning.
    Warn,
    /// Allow; the failure is only recorded.
    Audit,
}

/// Whether a Flux source (OCIRepository, HelmChart, a HelmRelease's chart) must also be
/// verified by Flux itself (`spec.verify` with provider cosign). Admission checks the artifact
/// once; Flux's own verification keeps checking each new revision it pulls afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FluxVerification {
    /// Flux's own verification is not required.
    #[default]
    Optional,
    /// A Flux source without `verify: {provider: cosign}` fails the rule.
    Required,
}

/// Transparency-log requirement of an authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tlog {
    /// `tlog: skip`: a key signature counts without its log entry being looked at; a keyless
    /// authority with it accepts nothing.
    Skip,
    /// `tlog: optional`: a key signature without a log entry counts; one with an entry counts
    /// only if the entry verifies. Keyless: as `Required`.
    Optional,
    /// `tlog: required`, the default: only a signature whose log entry verifies (offline,
    /// against the trust root's Rekor keys) counts.
    Required,
}

/// The verdict on one reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Admitted; `verify` exits 0 for it. Also what a failed rule in `mode: audit` gets.
    Allow,
    /// Refused by the webhook; `verify` exits 1 when any reference gets it.
    Deny,
    /// Admitted with an AdmissionResponse warning; `verify` exits 0 for it.
    Warn,
}

/// How an authority is tied to signatures. `trust_root` names one of the policy's
/// `trustRoots`; None is the embedded public-good root.
#[derive(Debug, Clone)]
pub enum AuthorityKind {
    /// An authority's `key: {name, trustRoot}`: signatures made with one public key.
    Key {
        /// The `keys[]` entry it names (its `path` or `pem`), parsed when the policy is read.
        key: PublicKey,
        /// The authority's `tlog` (default `required`).
        tlog: Tlog,
        /// `key.trustRoot`: whose Rekor keys check the log entries (unused with `tlog: skip`).
        trust_root: Option<String>,
    },
    /// An authority's `keyless: {trustRoot, identities}`: Fulcio certificates for identities.
    Keyless {
        /// `keyless.trustRoot`: whose Fulcio, CT logs and Rekor the certificate is checked
        /// against.
        trust_root: Option<String>,
        /// `keyless.identities`: the certificate must match one (not empty in a valid file).
        identities: Vec<Identity>,
        /// The authority's `tlog` (default `required`); `skip` makes it accept nothing.
        tlog: Tlog,
    },
    /// An authority's `certificates: {roots, intermediates, identities, trustRoot}`:
    /// certificates from a CA of one's own, for SANs (email, URI, DNS).
    Certificates {
        /// The roots and intermediates, parsed when the policy is read.
        cas: Arc<CertificateAuthorities>,
        /// The SANs accepted (any one; not empty in a valid file).
        identities: Vec<Matcher>,
        /// The authority's `tlog` (default `required`): `skip` checks the chain at the current
        /// time; otherwise the Rekor entry's time, under `trust_root`'s keys.
        tlog: Tlog,
        /// `certificates.trustRoot`: whose Rekor keys prove the signing time.
        trust_root: Option<String>,
    },
    /// An authority `serve` no longer trusts: a file its key or certificates were read from
    /// changed (or went away) and the policy could not be loaded again, so what the file held
    /// when the policy last loaded is not what the operator keeps there any more (see
    /// [`super::CompiledPolicy::withdrawing`]). It accepts nothing.
    Withdrawn {
        /// What it was (`key`, `certificates`), for reasons.
        was: &'static str,
        /// The files that changed, as the policy names them.
        files: Vec<std::path::PathBuf>,
    },
}

/// One signer a rule accepts: a key or keyless identities, by name.
#[derive(Debug, Clone)]
pub struct Authority {
    /// The name reasons and evidence call it by.
    pub name: String,
    /// How it is tied to signatures.
    pub kind: AuthorityKind,
    /// The files its key or certificates were read from, as the policy names them (none for
    /// an inline PEM, a keyless authority, or one not read from a policy file).
    pub files: Vec<std::path::PathBuf>,
}

/// A rule: the images it applies to, its authorities and threshold, its mode and requirements.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Its name, unique in the policy.
    pub name: String,
    /// Where the rule's name stands in the policy file (line, column).
    pub(super) position: (u64, u64),
    pub(super) patterns: Patterns,
    pub(super) excludes: Patterns,
    /// Where it applies (`namespaces`, `namespaceSelector`); cluster-wide when it names none.
    pub namespaces: NamespaceScope,
    /// What a failure does.
    pub mode: Mode,
    /// How many distinct authorities must verify.
    pub threshold: usize,
    /// The signers it accepts.
    pub authorities: Vec<Authority>,
    /// Which repository name a legacy signature must claim.
    pub signed_identity: SignedIdentity,
    /// `signaturesRepository`: where the signatures and attestations of every image the rule
    /// covers are looked up (None: beside the image, in its own repository).
    pub signatures_repository: Option<SignaturesRepository>,
    /// Payload annotations a signature must carry, with these values.
    pub annotations: BTreeMap<String, String>,
    /// Whether Flux sources must carry Flux's own cosign verification too.
    pub flux_verification: FluxVerification,
    /// The attestations it requires besides the signatures (`attestations:`), each satisfied
    /// by one verified statement whose conditions all hold.
    pub attestations: Vec<AttestationRequirement>,
}

/// One attestation a rule requires: a verified in-toto statement of a predicate type about the
/// digest, by one of some of the rule's authorities, whose conditions all hold.
#[derive(Debug, Clone)]
pub struct AttestationRequirement {
    /// Its name in the rule (`provenance`), as reasons say it.
    pub name: String,
    /// The predicate type a statement must have (short names read as cosign reads them).
    pub predicate_type: PredicateType,
    /// Which of the rule's authorities may sign it: indexes into [`Rule::authorities`] (all
    /// of them when the file names none).
    pub authorities: Vec<usize>,
    /// CEL conditions, compiled and type-checked when the policy was read; all must hold.
    pub conditions: Vec<Condition>,
}

impl Rule {
    /// The specificity of this rule for `name` (longest literal prefix of a matching pattern),
    /// or None when it does not apply.
    pub(super) fn specificity(&self, name: &str) -> Option<usize> {
        if self.excludes.matching(name).next().is_some() {
            return None;
        }
        self.patterns.matching(name).map(|p| p.specificity).max()
    }

    /// Its image patterns, as matched (canonical hosts).
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.patterns.list.iter().map(|p| p.text.as_str())
    }
}

/// A trust root the policy names, parsed (with its verifier) once when the policy is read.
#[derive(Debug, Clone)]
pub struct TrustRootRef {
    /// Its name, as authorities refer to it.
    pub name: String,
    /// The root, with its verifier.
    pub root: Arc<TrustRoot>,
    /// The file it was read from, as the policy names it: a `trusted_root.json`, or a TUF
    /// root's bootstrap root.json (None: the embedded root, a built-in TUF root, or a root not
    /// read from a policy file).
    pub file: Option<std::path::PathBuf>,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// What to do with a reference no rule matches.
    pub no_match: NoMatch,
    /// The trust roots it names, parsed.
    pub trust_roots: Vec<TrustRootRef>,
    /// Its TUF trust roots (and the built-in ones its authorities name): what they trust is
    /// loaded from the verified cache by [`super::CompiledPolicy::load`] into `trust_roots`.
    pub tuf_roots: Vec<crate::trust::TufSource>,
    /// Its rules, in file order (a [`RuleId`] is an index into them).
    pub rules: Vec<Rule>,
}

/// A rule's identity: its index among the rules of the policy that matched it
/// ([`Policy::match_rule`] hands it out). It means something only with that policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(usize);

impl RuleId {
    /// The rule's index among its policy's rules.
    pub fn index(self) -> usize {
        self.0
    }
}

/// The rule a reference falls under.
#[derive(Debug)]
pub enum RuleMatch<'a> {
    /// The rule that applies, and its identity in this policy.
    Rule(RuleId, &'a Rule),
    /// No rule's `images` matches the name (or `exclude` removes every one that does): the
    /// policy's `noMatch` decides.
    NoMatch(NoMatch),
    /// Two rules are equally specific for this reference: a policy error.
    Ambiguous(&'a Rule, &'a Rule),
    /// This rule would win if its `namespaceSelector` holds, and the namespace's labels were
    /// not read ([`Scoped::LabelsNotRead`]): no rule can be chosen, and the check is a deny.
    LabelsNotRead(&'a Rule),
}

impl Policy {
    /// Parse and validate policy text. `read` loads files named by the policy (relative paths
    /// are the reader's to resolve); `file` only names the policy in errors.
    pub fn parse(
        text: &str,
        file: &Path,
        read: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Policy, PolicyError> {
        let invalid = |mut issues: Vec<Issue>| {
            issues.sort_by_key(|i| (i.line, i.column));
            PolicyError::Invalid {
                file: file.to_path_buf(),
                issues,
            }
        };
        let tree = super::tree::tree(text).map_err(|i| invalid(vec![i]))?;
        let mut reader = read::Reader::new(text);
        let raw = reader.policy(&tree);
        let mut v = Validator::new(reader.issues, read);
        match raw.map(|raw| v.policy(raw)) {
            Some(policy) if v.issues.is_empty() => Ok(policy),
            _ => Err(invalid(v.issues)),
        }
    }

    /// A policy of one rule over every reference with one authority: what `verify --key` and
    /// `verify --certificate-identity … --certificate-oidc-issuer …` stand for.
    /// `rule` names the rule (the flag it came from), `authority` the signer as a person knows
    /// it (the key file, the identity).
    pub fn single_authority(
        rule: &str,
        authority: &str,
        kind: AuthorityKind,
        trust_roots: Vec<TrustRootRef>,
        annotations: BTreeMap<String, String>,
        signed_identity: SignedIdentity,
    ) -> Policy {
        let patterns = segment_glob("**")
            .map(|glob| {
                vec![Pattern {
                    text: "**".to_string(),
                    glob,
                    specificity: 0,
                }]
            })
            .unwrap_or_default();
        Policy {
            no_match: NoMatch::Deny,
            trust_roots,
            tuf_roots: Vec::new(),
            rules: vec![Rule {
                name: rule.to_string(),
                position: (0, 0),
                patterns: Patterns::new(patterns),
                excludes: Patterns::default(),
                namespaces: NamespaceScope::default(),
                mode: Mode::Enforce,
                threshold: 1,
                authorities: vec![Authority {
                    name: authority.to_string(),
                    kind,
                    files: Vec::new(),
                }],
                signed_identity,
                signatures_repository: None,
                annotations,
                flux_verification: FluxVerification::Optional,
                attestations: Vec::new(),
            }],
        }
    }

    /// The rule `id` names. `id` must come from this policy's [`Policy::match_rule`] (its rules
    /// unchanged since): an id is an index, and one from another policy may be out of range.
    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.rules[id.0]
    }

    /// The rule for a repository name (`registry/repository` or `oci-layout:PATH`) checked
    /// without a namespace (a cluster-scoped object, `verify REF` without `--namespace`): only
    /// rules that name no namespace apply.
    pub fn match_rule(&self, name: &str) -> RuleMatch<'_> {
        self.match_rule_in(name, None)
    }

    /// The rule for a repository name checked in `namespace` (None: no namespace). A rule
    /// applies when its images match the name and its namespace conditions hold; the most
    /// specific image pattern wins, and among equally specific ones a namespace-scoped rule
    /// wins over a cluster-wide one. Two that remain equal are ambiguous.
    pub fn match_rule_in(&self, name: &str, namespace: Option<&NamespaceContext>) -> RuleMatch<'_> {
        // (specificity, namespace-scoped): the greater wins.
        let mut best: Option<((usize, bool), RuleId, &Rule)> = None;
        let mut tie: Option<&Rule> = None;
        // The highest ranked rule whose selector could not be decided (labels not read).
        let mut undecided: Option<((usize, bool), &Rule)> = None;
        for (index, rule) in self.rules.iter().enumerate() {
            // The namespace first: cheap, and it leaves out most scoped rules.
            let scoped = rule.namespaces.admits(namespace);
            if scoped == Scoped::Fails {
                continue;
            }
            let Some(s) = rule.specificity(name) else {
                continue;
            };
            let rank = (s, !rule.namespaces.is_cluster_wide());
            if scoped == Scoped::LabelsNotRead {
                if undecided.is_none_or(|(u, _)| rank > u) {
                    undecided = Some((rank, rule));
                }
                continue;
            }
            match best {
                Some((b, _, _)) if rank < b => {}
                Some((b, _, _)) if rank == b => tie = Some(rule),
                _ => {
                    best = Some((rank, RuleId(index), rule));
                    tie = None;
                }
            }
        }
        match (best, tie, undecided) {
            // A rule that might apply, ranked as high as the winner or higher, decides nothing.
            (b, _, Some((u, rule))) if b.is_none_or(|(b, _, _)| u >= b) => {
                RuleMatch::LabelsNotRead(rule)
            }
            (Some((_, _, a)), Some(b), _) => RuleMatch::Ambiguous(a, b),
            (Some((_, id, r)), None, _) => RuleMatch::Rule(id, r),
            (None, _, _) => RuleMatch::NoMatch(self.no_match),
        }
    }

    /// Whether some rule selects namespaces by their labels (then a check needs the labels of
    /// its namespace; otherwise its name is enough).
    pub fn needs_namespace_labels(&self) -> bool {
        self.rules.iter().any(|r| r.namespaces.needs_labels())
    }

    /// Whether some rule names a namespace (`namespaces` or `namespaceSelector`).
    pub fn has_namespace_rules(&self) -> bool {
        self.rules.iter().any(|r| !r.namespaces.is_cluster_wide())
    }
}
