//! The plan of a command, built and validated from its parsed arguments before any work starts:
//! files read, the policy compiled (or built from `--key` / `--certificate-*`), the registry
//! client and engine configured, manifests extracted. It must not contact a registry or print.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::args::{
    AttestArgs, DiscoverArgs, GenerateArgs, KeylessArgs, Output, ServeArgs, SignArgs, SignFormat,
    VerifyArgs, VerifyAttestationArgs, VerifyBundleArgs,
};
use super::output::Reported;
use super::registry::{registry_for, registry_settings, registry_with};
use super::signatures::{cosign_repository, with_signatures};
use super::{CliError, boxed, files};
use crate::condition::Condition;
use crate::engine::{Decision, Engine, EngineConfig};
use crate::error_chain;
use crate::extract::Skipped;
use crate::platform::Platform;
use crate::policy::AttestationRequirement;
use crate::policy::CompiledPolicy;
use crate::policy::{AuthorityKind, Policy, Tlog, TrustRootRef};
use crate::predicate::PredicateType;
use crate::reference::ImageRef;
use crate::registry::Registry;
use crate::sign::key::SigningKey;
use crate::signature_place::SignaturesRepository;
use crate::trust::{
    CertificateAuthorities, GitHubWorkflow, Identity, Matcher, PublicKey, TrustRoot,
};
use crate::verify::ArtifactDigests;
use crate::verify::SignedIdentity;

/// `verify`: what is checked, with which engine, and how results are shown.
pub(crate) struct VerifyPlan {
    /// The engine with the policy and the registry client.
    pub(crate) engine: Engine,
    /// The references given that parse, in order.
    pub(crate) references: Vec<ImageRef>,
    /// `--namespace` (with its labels) the references are checked in.
    pub(crate) namespace: Option<crate::policy::NamespaceContext>,
    /// `--platform`: each reference's manifest for it instead of the index.
    pub(crate) platform: Option<Platform>,
    /// The OCI sources of `--manifests`, each once per namespace that matters.
    pub(crate) found: Vec<super::namespace::NamespacedSource>,
    /// Results known before any check: references that do not parse, then what `--manifests`
    /// names that is not OCI.
    pub(crate) settled: Vec<Reported>,
    /// The objects of `--manifests` in namespaces the webhook is not called for.
    pub(crate) skipped: Vec<Skipped>,
    /// Whether a reference did not parse (exit 2 after every result is shown).
    pub(crate) bad_references: bool,
    /// `--jobs`.
    pub(crate) jobs: usize,
    /// `-o`.
    pub(crate) output: Output,
}

impl VerifyPlan {
    /// In the order the command has always done it: references, policy, registry client,
    /// manifests; the first failure ends the command.
    pub(crate) async fn build(a: VerifyArgs) -> Result<VerifyPlan, CliError> {
        let policy = verify_policy(&a, None)?;
        Self::build_with(a, policy).await
    }

    /// `verify-attestation`: as `verify`, with a policy whose one rule requires the attestation
    /// (and no signature) unless `--policy` gives the rules.
    pub(crate) async fn build_attestation(
        a: VerifyAttestationArgs,
    ) -> Result<VerifyPlan, CliError> {
        let wanted = match a.predicate_type {
            Some(predicate_type) => Some(ad_hoc_attestation(predicate_type, &a.conditions)?),
            None => None,
        };
        let policy = verify_policy(&a.verify, wanted)?;
        Self::build_with(a.verify, policy).await
    }

    async fn build_with(a: VerifyArgs, policy: CompiledPolicy) -> Result<VerifyPlan, CliError> {
        let mut references = Vec::new();
        let mut settled = Vec::new();
        for input in &a.references {
            match ImageRef::parse(input) {
                Ok(r) => references.push(r),
                Err(e) => settled.push(invalid_reference(input, &e).into()),
            }
        }
        let bad_references = !settled.is_empty();
        let config = EngineConfig {
            deadline: Duration::from_secs(a.deadline),
            verification_budget: Duration::from_secs(a.deadline),
            ..EngineConfig::default()
        };
        let hosts = super::signatures::and_policy_places(&references, policy.policy());
        let registry = registry_for(&a.registry, &hosts)?;
        let engine = Engine::new(registry, policy, config);
        let policy = engine.policy();
        let namespace = super::namespace::for_references(&a, &references, policy.policy()).await?;
        let (found, skipped) =
            super::manifests::read_all(&a, policy.policy(), &mut settled).await?;
        Ok(VerifyPlan {
            engine,
            references,
            namespace,
            platform: a.platform,
            found,
            settled,
            skipped,
            bad_references,
            jobs: a.jobs,
            output: a.output,
        })
    }
}

/// Who signs, for `verify` without `--policy`.
enum AdHocSigner {
    /// `--key FILE`.
    Key { key: PublicKey, path: PathBuf },
    /// `--certificate-identity[-regexp]` with the issuer and GitHub constraints.
    Keyless(Identity),
    /// `--ca-roots` (and `--ca-intermediates`) or `--certificate-chain`, with
    /// `--certificate-identity[-regexp]` for the SAN.
    Certificates {
        cas: CertificateAuthorities,
        identity: Matcher,
        flag: &'static str,
    },
}

/// The attestation `verify-attestation --type --condition` requires, its conditions compiled.
fn ad_hoc_attestation(
    predicate_type: PredicateType,
    conditions: &[String],
) -> Result<AttestationRequirement, CliError> {
    let conditions = conditions
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Condition::compile(c, None).map_err(|e| {
                CliError::Usage(format!(
                    "--condition {} ({}:{}): {}",
                    i + 1,
                    e.line,
                    e.column,
                    e.kind
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AttestationRequirement {
        name: predicate_type
            .short_name()
            .unwrap_or("attestation")
            .to_string(),
        predicate_type,
        authorities: vec![0],
        conditions,
    })
}

/// The policy `verify` checks against: `--policy`, or one built from `--key` or the keyless
/// flags; with `attestation`, its one rule requires that attestation and no signature.
fn verify_policy(
    a: &VerifyArgs,
    attestation: Option<AttestationRequirement>,
) -> Result<CompiledPolicy, CliError> {
    let signer = match (&a.policy, &a.key) {
        (Some(p), None) => {
            super::signatures::note_unused_with_policy();
            return CompiledPolicy::from_file(p).map_err(boxed);
        }
        (None, Some(k)) => AdHocSigner::Key {
            key: PublicKey::from_pem(
                &files::read_file(k, "public key")?,
                &k.display().to_string(),
            )
            .map_err(boxed)?,
            path: k.clone(),
        },
        (None, None) if a.ca_roots.is_some() || a.certificate_chain.is_some() => {
            certificates_signer(a)?
        }
        (None, None) if keyless_given(&a.keyless) => AdHocSigner::Keyless(identity(&a.keyless)?),
        _ => {
            return Err(CliError::Usage(
                "verify needs --policy FILE, --key PUB, or --certificate-identity[-regexp] \
                 with --certificate-oidc-issuer[-regexp]"
                    .into(),
            ));
        }
    };
    let mut policy = ad_hoc_policy(a, signer)?;
    let mut fingerprint = "command line".to_string();
    super::signatures::into_ad_hoc(&mut policy)?;
    if let (Some(req), Some(rule)) = (attestation, policy.rules.first_mut()) {
        fingerprint = format!("command line: attestation {} {:?}", req.predicate_type, {
            req.conditions
                .iter()
                .map(|c| c.expression())
                .collect::<Vec<_>>()
        });
        rule.threshold = 0;
        rule.attestations = vec![req];
    }
    Ok(CompiledPolicy::new(policy, fingerprint))
}

/// The one-authority policy of `verify --key` and `verify --certificate-identity*`: the same
/// trusted root (`--trusted-root`, else the embedded one), required annotations and signed
/// repository for both.
fn ad_hoc_policy(a: &VerifyArgs, signer: AdHocSigner) -> Result<Policy, CliError> {
    let (roots, trust_root) = match &a.trusted_root {
        Some(p) => (trusted_root_ref(p)?, Some("--trusted-root".into())),
        // The public-good root from its verified TUF cache, else the embedded one.
        None => super::trust_root::cached_public_good_ref().map_or((Vec::new(), None), |r| {
            (vec![r], Some("public-good".into()))
        }),
    };
    let annotations = parse_annotations(&a.annotations)?;
    let signed_identity = match &a.signed_repository {
        Some(r) => SignedIdentity::ExactRepository(r.clone()),
        None => SignedIdentity::MatchRepository,
    };
    let (flag, authority, kind) = match signer {
        AdHocSigner::Key { key, path } => {
            // As cosign: a Rekor entry is required (checked offline with the given root, else
            // the embedded public-good one) unless --insecure-ignore-tlog says otherwise.
            let tlog = if a.insecure_ignore_tlog {
                Tlog::Skip
            } else {
                Tlog::Required
            };
            let kind = AuthorityKind::Key {
                key,
                tlog,
                trust_root,
            };
            ("--key", format!("key {}", path.display()), kind)
        }
        AdHocSigner::Keyless(identity) => {
            let authority = format!("identity {identity}");
            let kind = AuthorityKind::Keyless {
                trust_root,
                identities: vec![identity],
                tlog: Tlog::Required,
            };
            ("--certificate-identity", authority, kind)
        }
        AdHocSigner::Certificates {
            cas,
            identity,
            flag,
        } => {
            let authority = format!("SAN {identity} from the CAs of {flag}");
            let kind = AuthorityKind::Certificates {
                cas: std::sync::Arc::new(cas),
                identities: vec![identity],
                tlog: if a.insecure_ignore_tlog {
                    Tlog::Skip
                } else {
                    Tlog::Required
                },
                trust_root,
            };
            (flag, authority, kind)
        }
    };
    Ok(Policy::single_authority(
        flag,
        &authority,
        kind,
        roots,
        annotations,
        signed_identity,
    ))
}

/// `--ca-roots`/`--certificate-chain` with the SAN to match. A CA of one's own issues no
/// Fulcio claims, so the OIDC issuer and GitHub flags are refused rather than ignored.
fn certificates_signer(a: &VerifyArgs) -> Result<AdHocSigner, CliError> {
    let k = &a.keyless;
    let g = &k.github;
    if k.certificate_oidc_issuer.is_some()
        || k.certificate_oidc_issuer_regexp.is_some()
        || [&g.trigger, &g.sha, &g.name, &g.repository, &g.git_ref]
            .iter()
            .any(|v| v.is_some())
    {
        return Err(CliError::Usage(
            "--ca-roots and --certificate-chain check the certificate's SAN only: the OIDC \
             issuer and GitHub workflow flags are Fulcio claims a CA of one's own does not make"
                .into(),
        ));
    }
    if !keyless_given(k) {
        return Err(CliError::Usage(
            "--ca-roots and --certificate-chain need --certificate-identity[-regexp]".into(),
        ));
    }
    let identity = matcher(
        &k.certificate_identity,
        &k.certificate_identity_regexp,
        "certificate-identity",
    )?;
    let read = |p: &PathBuf, what| files::read_file(p, what);
    let (cas, flag) = match (&a.ca_roots, &a.certificate_chain) {
        (None, None) => {
            let msg = "--ca-roots or --certificate-chain names the CA".to_string();
            return Err(CliError::Usage(msg));
        }
        (Some(roots), _) => {
            let text = read(roots, "CA roots")?;
            let inter = match &a.ca_intermediates {
                Some(p) => Some((read(p, "CA intermediates")?, p.display().to_string())),
                None => None,
            };
            let origin = roots.display().to_string();
            let inter = inter.as_ref().map(|(t, o)| (t.as_str(), o.as_str()));
            let cas = CertificateAuthorities::from_pem((&text, &origin), inter);
            (cas.map_err(boxed)?, "--ca-roots")
        }
        (None, Some(chain)) => {
            let text = read(chain, "certificate chain")?;
            let origin = chain.display().to_string();
            let cas = CertificateAuthorities::from_chain_pem(&text, &origin);
            (cas.map_err(boxed)?, "--certificate-chain")
        }
    };
    Ok(AdHocSigner::Certificates {
        cas,
        identity,
        flag,
    })
}

fn keyless_given(k: &KeylessArgs) -> bool {
    k.certificate_identity.is_some() || k.certificate_identity_regexp.is_some()
}

/// The keyless identity the flags describe (exact values or regular expressions).
fn identity(k: &KeylessArgs) -> Result<Identity, CliError> {
    let g = &k.github;
    Ok(Identity {
        subject: matcher(
            &k.certificate_identity,
            &k.certificate_identity_regexp,
            "certificate-identity",
        )?,
        issuer: matcher(
            &k.certificate_oidc_issuer,
            &k.certificate_oidc_issuer_regexp,
            "certificate-oidc-issuer",
        )?,
        github: GitHubWorkflow {
            trigger: g.trigger.clone(),
            sha: g.sha.clone(),
            name: g.name.clone(),
            repository: g.repository.clone(),
            git_ref: g.git_ref.clone(),
        },
    })
}

fn matcher(exact: &Option<String>, re: &Option<String>, what: &str) -> Result<Matcher, CliError> {
    match (exact, re) {
        (Some(e), None) => Ok(Matcher::Exact(e.clone())),
        (None, Some(r)) => regex::Regex::new(r)
            .map(Matcher::Regex)
            .map_err(|e| CliError::Usage(format!("--{what}-regexp {r:?}: {e}"))),
        _ => Err(CliError::Usage(format!("give --{what} or --{what}-regexp"))),
    }
}

/// `discover`: the reference and the registry client.
pub(crate) struct DiscoverPlan {
    /// The reference given.
    pub(crate) reference: ImageRef,
    /// For its registry.
    pub(crate) registry: Registry,
    /// `COSIGN_REPOSITORY`: where signatures are looked for instead of beside the image.
    pub(crate) signatures: Option<SignaturesRepository>,
    /// `-o`.
    pub(crate) output: Output,
}

impl DiscoverPlan {
    /// The reference, then the registry client.
    pub(crate) fn build(a: DiscoverArgs) -> Result<DiscoverPlan, CliError> {
        let reference = ImageRef::parse(&a.reference).map_err(boxed)?;
        let signatures = cosign_repository()?;
        let registry = registry_for(&a.registry, &with_signatures(&reference, &signatures))?;
        Ok(DiscoverPlan {
            reference,
            registry,
            signatures,
            output: a.output,
        })
    }
}

/// `serve`: the engine and the webhook's configuration.
pub(crate) struct ServePlan {
    /// The engine with the policy, the caches' settings and the registry client.
    pub(crate) engine: Engine,
    /// Listeners, files, limits.
    pub(crate) config: crate::webhook::ServeConfig,
}

impl ServePlan {
    /// Policy, engine, then the listeners (needs the async runtime: the registry client and the
    /// engine are made on it).
    pub(crate) fn build(a: ServeArgs) -> Result<ServePlan, CliError> {
        let policy = CompiledPolicy::from_file(&a.policy).map_err(boxed)?;
        let config = EngineConfig {
            deadline: a.deadline,
            positive_ttl: a.cache_ttl,
            negative_ttl: a.negative_cache_ttl,
            resolve_ttl: a.resolve_ttl,
            failure_ttl: a.failure_cache_ttl.unwrap_or(Duration::ZERO),
            max_cache_bytes: a.cache_max_mib << 20,
            ..EngineConfig::default()
        };
        let engine = Engine::new(registry_with(&a.registry, true, &[])?, policy, config);
        let config = crate::webhook::ServeConfig {
            listen: a.listen,
            metrics_listen: a.metrics_listen.0,
            tls_cert: a.tls_cert,
            tls_key: a.tls_key,
            client_ca: a.client_ca,
            client_names: a.client_name,
            policy: a.policy,
            reload_interval: a.reload_interval,
            grace: a.grace,
            pin_workloads: a.pin_workloads,
            kubeconfig: a.kubeconfig,
            allow_cross_namespace_refs: a.allow_cross_namespace_refs,
            pod_templates: a.pod_templates.kinds()?,
            limits: crate::webhook::Limits {
                max_connections: a.max_connections as usize,
                request_timeout: a.request_timeout,
                body_memory: (a.max_body_memory_mib as usize) << 20,
            },
            trust_root_refresh: a.trust_root_refresh,
            audit: a
                .audit_interval
                .map(|interval| crate::webhook::AuditConfig {
                    interval,
                    registry_qps: std::num::NonZeroU32::new(a.audit_registry_qps)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                    excluded_namespaces: a
                        .audit_exclude_namespace
                        .iter()
                        .filter(|n| !n.is_empty())
                        .cloned()
                        .collect(),
                    lease_namespace: a.leader_election_namespace.clone(),
                }),
        };
        Ok(ServePlan { engine, config })
    }
}

/// `sign`: the key, the reference and the registry client.
pub(crate) struct SignPlan {
    /// The reference given.
    pub(crate) reference: ImageRef,
    /// `-a KEY=VALUE`.
    pub(crate) annotations: BTreeMap<String, String>,
    /// The decrypted private key.
    pub(crate) key: SigningKey,
    /// For the reference's registry.
    pub(crate) registry: Registry,
    /// `--format`.
    pub(crate) format: SignFormat,
    /// `--recursive`.
    pub(crate) recursive: bool,
    /// `COSIGN_REPOSITORY`: where the signatures are written instead of beside the image.
    pub(crate) signatures: Option<SignaturesRepository>,
}

impl SignPlan {
    /// Reference, annotations, key (the password asked for if need be), registry client.
    pub(crate) fn build(a: SignArgs) -> Result<SignPlan, CliError> {
        let reference = ImageRef::parse(&a.reference).map_err(boxed)?;
        let annotations = parse_annotations(&a.annotations)?;
        let pem = files::read_file(&a.key, "private key")?;
        let pw = files::password(false)?;
        let key = SigningKey::from_encrypted_pem(&pem, pw.as_bytes(), &a.key.display().to_string())
            .map_err(boxed)?;
        let signatures = cosign_repository()?;
        let registry = registry_for(&a.registry, &with_signatures(&reference, &signatures))?;
        Ok(SignPlan {
            reference,
            annotations,
            key,
            registry,
            format: a.format,
            recursive: a.recursive,
            signatures,
        })
    }
}

/// `attest`: the key, the predicate, the reference and the registry client.
pub(crate) struct AttestPlan {
    /// The reference given.
    pub(crate) reference: ImageRef,
    /// The predicate file, read for its `--type`.
    pub(crate) predicate: crate::sign::Predicate,
    /// The decrypted private key.
    pub(crate) key: SigningKey,
    /// For the reference's registry, reading back blobs as large as an attestation.
    pub(crate) registry: Registry,
    /// `--format`.
    pub(crate) format: crate::sign::AttestFormat,
    /// `COSIGN_REPOSITORY`: where the attestation is written instead of beside the image.
    pub(crate) signatures: Option<SignaturesRepository>,
    /// `-o`.
    pub(crate) output: Output,
}

impl AttestPlan {
    /// Reference, predicate, key (the password asked for if need be), registry client.
    pub(crate) fn build(a: AttestArgs) -> Result<AttestPlan, CliError> {
        use crate::sign::{AttestFormat, MAX_PREDICATE_BYTES, Predicate};
        let reference = ImageRef::parse(&a.reference).map_err(boxed)?;
        let file = files::read_bounded(&a.predicate, "predicate", MAX_PREDICATE_BYTES)?;
        let predicate = Predicate::parse(&a.predicate_type, &file).map_err(boxed)?;
        drop(file);
        let pem = files::read_file(&a.key, "private key")?;
        let pw = files::password(false)?;
        let key = SigningKey::from_encrypted_pem(&pem, pw.as_bytes(), &a.key.display().to_string())
            .map_err(boxed)?;
        let signatures = cosign_repository()?;
        let hosts = super::signatures::hosts(&with_signatures(&reference, &signatures));
        let settings = registry_settings(&a.registry, false, &hosts)?;
        Ok(AttestPlan {
            reference,
            predicate,
            key,
            registry: Registry::new(settings),
            format: match a.format {
                SignFormat::Legacy => AttestFormat::Legacy,
                SignFormat::Bundle => AttestFormat::Bundle,
            },
            signatures,
            output: a.output,
        })
    }
}

/// `verify-bundle`: the bundle, the root, who must have signed, and what.
pub(crate) struct BundlePlan {
    /// `--bundle`.
    pub(crate) path: PathBuf,
    /// Its text.
    pub(crate) json: String,
    /// `--trusted-root`, the embedded staging root, or the embedded public-good root.
    pub(crate) root: TrustRoot,
    /// `--key` (with `--insecure-ignore-tlog`), or the keyless identity.
    pub(crate) signer: BundleSigner,
    /// The file's bytes, or its digest.
    pub(crate) artifact: BundleInput,
    /// `--type` with its `--condition`s: the bundle must be this attestation.
    pub(crate) attestation: Option<AttestationRequirement>,
    /// `-o`.
    pub(crate) output: Output,
}

/// Who must have signed a bundle.
pub(crate) enum BundleSigner {
    /// A managed key; `tlog`: its transparency-log entry is required.
    Key { key: PublicKey, tlog: bool },
    /// A certificate for this identity.
    Identity([Identity; 1]),
}

/// What a bundle signs.
pub(crate) enum BundleInput {
    /// A file's content.
    Bytes(Vec<u8>),
    /// A sha256 digest given instead of a file.
    Sha256([u8; 32]),
    /// With `--type`: a sha384 or sha512 digest given instead of a file (the subject of an
    /// attestation may name only those).
    Digest(ArtifactDigests),
}

impl BundlePlan {
    /// Bundle text, root, signer, artifact.
    pub(crate) fn build(a: VerifyBundleArgs) -> Result<BundlePlan, CliError> {
        let json = files::read_file(&a.bundle, "bundle")?;
        let root = match (&a.trusted_root, a.staging) {
            (Some(p), _) => TrustRoot::from_json(
                &files::read_file(p, "trusted root")?,
                &p.display().to_string(),
            )
            .map_err(boxed)?,
            (None, true) => TrustRoot::from_json(
                sigstore_trust_root::SIGSTORE_STAGING_TRUSTED_ROOT,
                "embedded staging",
            )
            .map_err(boxed)?,
            (None, false) => match super::trust_root::cached_public_good() {
                Some(root) => root,
                None => TrustRoot::embedded().map_err(boxed)?,
            },
        };
        let signer = match &a.key {
            Some(k) => BundleSigner::Key {
                key: PublicKey::from_pem(
                    &files::read_file(k, "public key")?,
                    &k.display().to_string(),
                )
                .map_err(boxed)?,
                tlog: !a.insecure_ignore_tlog,
            },
            None => BundleSigner::Identity([identity(&a.keyless)?]),
        };
        let attestation = match a.predicate_type {
            Some(t) => Some(ad_hoc_attestation(t, &a.conditions)?),
            None => None,
        };
        let other_digest = attestation
            .as_ref()
            .and_then(|_| attestation_digest(&a.artifact));
        let artifact = match (bundle_artifact(&a.artifact)?, other_digest) {
            (_, Some(d)) => BundleInput::Digest(d),
            (Some(d), None) => BundleInput::Sha256(d),
            (None, None) => {
                BundleInput::Bytes(std::fs::read(&a.artifact).map_err(|source| CliError::Io {
                    what: format!("artifact {}: cannot read", a.artifact),
                    source,
                })?)
            }
        };
        Ok(BundlePlan {
            path: a.bundle,
            json,
            root,
            signer,
            artifact,
            attestation,
            output: a.output,
        })
    }
}

/// `generate-key-pair`: where the key pair goes, and its password.
pub(crate) struct GeneratePlan {
    /// PREFIX.key.
    pub(crate) key_path: PathBuf,
    /// PREFIX.pub.
    pub(crate) pub_path: PathBuf,
    /// `--force`: replace existing files.
    pub(crate) force: bool,
    /// The password the private key is encrypted with.
    pub(crate) password: zeroize::Zeroizing<String>,
}

impl GeneratePlan {
    /// Refuses existing files (without `--force`) before asking for the password.
    pub(crate) fn build(a: GenerateArgs) -> Result<GeneratePlan, CliError> {
        let key_path = PathBuf::from(format!("{}.key", a.output_key_prefix));
        let pub_path = PathBuf::from(format!("{}.pub", a.output_key_prefix));
        if !a.force {
            for p in [&key_path, &pub_path] {
                // symlink_metadata: a link (even a dangling one) is something that exists.
                if p.symlink_metadata().is_ok() {
                    return Err(CliError::Usage(format!(
                        "{} already exists; pass --force to replace it",
                        p.display()
                    )));
                }
            }
        }
        Ok(GeneratePlan {
            key_path,
            pub_path,
            force: a.force,
            password: files::password(true)?,
        })
    }
}

fn parse_annotations(args: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CliError::Usage(format!(
                "annotation {a:?}: expected KEY=VALUE"
            ))),
        })
        .collect()
}

/// A reference that does not parse, as a result of its own: the others are still verified.
fn invalid_reference(input: &str, e: &crate::reference::ReferenceError) -> Decision {
    Decision::invalid(crate::escape_text(input), error_chain(e))
}

fn trusted_root_ref(p: &Path) -> Result<Vec<TrustRootRef>, CliError> {
    let name = "--trusted-root";
    let root = TrustRoot::from_json(&files::read_file(p, "trusted root")?, name).map_err(boxed)?;
    Ok(vec![TrustRootRef {
        name: name.into(),
        root: std::sync::Arc::new(root),
        file: None,
    }])
}

/// `sha384:<96 hex>` or `sha512:<128 hex>` that is not a file on disk (an attestation's
/// subject may name only those digests).
fn attestation_digest(input: &str) -> Option<ArtifactDigests> {
    let (algorithm, hex) = input.split_once(':')?;
    if !matches!(algorithm, "sha384" | "sha512") || Path::new(input).exists() {
        return None;
    }
    ArtifactDigests::from_hex(algorithm, hex).ok()
}

/// `sha256:<64 hex>` that is not a file on disk is a digest; anything else is a path.
fn bundle_artifact(input: &str) -> Result<Option<[u8; 32]>, CliError> {
    let Some(hex) = input.strip_prefix("sha256:") else {
        return Ok(None);
    };
    if hex.len() != 64 || Path::new(input).exists() {
        return Ok(None);
    }
    let mut out = [0u8; 32];
    match hex::decode_to_slice(hex, &mut out) {
        Ok(()) => Ok(Some(out)),
        Err(_) => Ok(None),
    }
}
