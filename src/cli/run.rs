//! Running a plan: the checks, signatures and key files each subcommand makes, on an async
//! runtime only for the commands that talk to registries or serve. Output goes through
//! `output`; it must not parse arguments or read configuration (the plan has done that).

use std::io::IsTerminal as _;
use std::process::ExitCode;

use futures_util::StreamExt as _;

use super::args::{Cli, Command, Output, PolicyCommand, SignFormat};
use super::output::{self, Progress, Reported, say};
use super::plan::{
    AttestPlan, BundleInput, BundlePlan, BundleSigner, DiscoverPlan, GeneratePlan, ServePlan,
    SignPlan, VerifyPlan,
};
use super::{CliError, boxed, files};
use crate::error_chain;
use crate::extract::FoundSource;
use crate::policy::{CompiledPolicy, Verdict};
use crate::sign::key::SigningKey;

/// Builds the subcommand's plan and runs it.
pub(crate) fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Verify(a) => {
            let output = a.output;
            let result = block_on(
                false,
                async move { verify(VerifyPlan::build(*a).await?).await },
            );
            match result {
                // A usage or configuration error is a JSON document too (and still exit 2).
                Err(e) if output == Output::Json => output::json_error(&e),
                other => other,
            }
        }
        Command::VerifyAttestation(a) => {
            let output = a.verify.output;
            let result = block_on(false, async move {
                verify(VerifyPlan::build_attestation(*a).await?).await
            });
            match result {
                Err(e) if output == Output::Json => output::json_error(&e),
                other => other,
            }
        }
        Command::Discover(a) => block_on(false, async { discover(DiscoverPlan::build(a)?).await }),
        Command::Sign(a) => block_on(false, async { sign(SignPlan::build(a)?).await }),
        Command::Attest(a) => {
            let output = a.output;
            match block_on(false, async { attest(AttestPlan::build(a)?).await }) {
                Err(e) if output == Output::Json => output::json_error(&e),
                other => other,
            }
        }
        Command::Audit(a) => {
            let output = a.output;
            let result = block_on(false, async move {
                super::audit::run(super::audit::AuditPlan::build(*a)?).await
            });
            match result {
                Err(e) if output == Output::Json => output::json_error(&e),
                other => other,
            }
        }
        Command::Serve(a) => block_on(true, async { serve(ServePlan::build(*a)?).await }),
        Command::VerifyBundle(a) => verify_bundle(BundlePlan::build(a)?),
        Command::GenerateKeyPair(a) => generate(GeneratePlan::build(a)?),
        Command::Policy(PolicyCommand::Check { files }) => policy_check(&files),
        Command::Completion { shell } => {
            use clap::CommandFactory as _;
            // clap_complete panics when its writer fails: generate into memory, then write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ocigate", &mut script);
            say(String::from_utf8_lossy(&script)).map(|()| ExitCode::SUCCESS)
        }
        Command::Version => say(output::version_text()).map(|()| ExitCode::SUCCESS),
    }
}

/// Runs `command` on a tokio runtime: the webhook serves concurrent requests on every core,
/// the CLI is one short process on the current thread.
fn block_on(
    multi_thread: bool,
    command: impl Future<Output = Result<ExitCode, CliError>>,
) -> Result<ExitCode, CliError> {
    let builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    match { builder }.enable_all().build() {
        Ok(rt) => rt.block_on(command),
        Err(e) => {
            tell!("error: cannot start the async runtime: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// Every check of the plan, in input order, each a future of its decision.
type Check<'e> = std::pin::Pin<Box<dyn Future<Output = Reported> + Send + 'e>>;

/// The plan's checks: each reference (for `--platform`, its platform's manifest), then each
/// source `--manifests` found, with where it was found.
fn checks(plan: &VerifyPlan, found: Vec<FoundSource>) -> Vec<Check<'_>> {
    let engine = &plan.engine;
    let deadline = engine.config().deadline;
    let mut checks: Vec<Check<'_>> = Vec::new();
    for r in &plan.references {
        checks.push(match &plan.platform {
            Some(p) => Box::pin(async move { engine.check_platform(r, p, deadline).await.into() }),
            None => Box::pin(async move { engine.check(r).await.into() }),
        });
    }
    for FoundSource { found_in, source } in found {
        let engine = engine.clone();
        checks.push(Box::pin(async move {
            let d = engine.check_source(&source, deadline).await;
            Reported::found(d, found_in)
        }));
    }
    checks
}

/// Runs the checks (`--jobs` at once); text results stream in input order as they complete,
/// JSON is one document at the end. Exit 2 if a reference did not parse, else 1 if one is
/// denied.
async fn verify(mut plan: VerifyPlan) -> Result<ExitCode, CliError> {
    let text = plan.output == Output::Text;
    let mut decisions = std::mem::take(&mut plan.settled);
    let found = std::mem::take(&mut plan.found);
    let checks = checks(&plan, found);
    let progress = Progress::new(text && std::io::stderr().is_terminal(), checks.len());
    let checks = checks.into_iter().map(|c| {
        let progress = &progress;
        async move {
            let d = c.await;
            progress.one_done();
            d
        }
    });
    if text {
        output::print_decisions(&decisions, &plan.skipped, plan.output)?;
    }
    let mut stream = futures_util::stream::iter(checks).buffered(plan.jobs);
    while let Some(d) = stream.next().await {
        if text {
            progress.clear();
            output::print_decisions(std::slice::from_ref(&d), &[], plan.output)?;
            progress.redraw();
        }
        decisions.push(d);
    }
    progress.clear();
    if !text {
        output::print_decisions(&decisions, &plan.skipped, plan.output)?;
    }
    if plan.bad_references {
        return Ok(ExitCode::from(2));
    }
    let all_allowed = decisions
        .iter()
        .all(|d| d.decision.verdict != Verdict::Deny);
    Ok(if all_allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn bundle_authority(signer: &BundleSigner) -> crate::bundle::BundleAuthority<'_> {
    use crate::bundle::BundleAuthority;
    match signer {
        BundleSigner::Key { key, tlog: true } => BundleAuthority::Key(key),
        BundleSigner::Key { key, tlog: false } => BundleAuthority::KeyWithoutTlog(key),
        BundleSigner::Identity(identities) => BundleAuthority::Identities(identities),
    }
}

fn verify_bundle(plan: BundlePlan) -> Result<ExitCode, CliError> {
    use crate::bundle::{BundleArtifact, ParsedBundle, verify_bundle};
    if let Some(req) = &plan.attestation {
        return verify_attestation_bundle(&plan, req);
    }
    let authority = bundle_authority(&plan.signer);
    let artifact = match &plan.artifact {
        BundleInput::Sha256(d) => BundleArtifact::Sha256(*d),
        BundleInput::Bytes(b) => BundleArtifact::Bytes(b),
        BundleInput::Digest(_) => {
            return Err(CliError::Usage(
                "a sha384 or sha512 digest names only an attestation's subject: give --type".into(),
            ));
        }
    };
    let verified = ParsedBundle::parse(&plan.json)
        .and_then(|parsed| verify_bundle(&parsed, artifact, authority, &plan.root));
    match verified {
        Ok(evidence) => {
            output::print_bundle_verified(&plan.path, &evidence, plan.output)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            tell!("FAILED: {}: {}", plan.path.display(), error_chain(&e));
            Ok(ExitCode::from(1))
        }
    }
}

/// `verify-bundle --type`: the bundle as an attestation of the artifact, then its conditions.
fn verify_attestation_bundle(
    plan: &BundlePlan,
    req: &crate::policy::AttestationRequirement,
) -> Result<ExitCode, CliError> {
    use crate::candidate::{AttestationCandidate, AttestationForm, BundleCandidate};
    use crate::verify::{
        ArtifactDigests, AttestationExpectation, PreparedAttestation, verify_attestation,
    };
    let digests = match &plan.artifact {
        BundleInput::Bytes(b) => ArtifactDigests::of_bytes(b),
        BundleInput::Sha256(d) => ArtifactDigests::from_hex("sha256", &hex::encode(d))
            .map_err(|e| CliError::Usage(error_chain(&e)))?,
        BundleInput::Digest(d) => d.clone(),
    };
    let location = plan.path.display().to_string();
    let candidate = AttestationCandidate {
        location: location.clone(),
        claimed_type: None,
        form: AttestationForm::Bundle(BundleCandidate {
            location,
            json: plan.json.clone(),
        }),
    };
    let prepared = PreparedAttestation::new(&candidate);
    let expect = AttestationExpectation {
        digests: &digests,
        predicate_type: &req.predicate_type,
    };
    let who = bundle_authority(&plan.signer);
    let signer = match &plan.signer {
        BundleSigner::Key { .. } => "--key".to_string(),
        BundleSigner::Identity([i]) => format!("identity {i}"),
    };
    match verify_attestation(&prepared, &signer, who, &plan.root, &expect) {
        Ok(v) => {
            let now = std::time::SystemTime::now();
            let evidence = crate::policy::attestation_evidence(req, &v, now);
            output::print_attestation_verified(&plan.path, &evidence, plan.output)?;
            Ok(if evidence.holds() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(r) => {
            tell!("FAILED: {}", crate::escape_text(&r.reason()));
            Ok(ExitCode::from(1))
        }
    }
}

async fn discover(plan: DiscoverPlan) -> Result<ExitCode, CliError> {
    let r = &plan.reference;
    let manifest = plan
        .registry
        .get_manifest(r)
        .await
        .map_err(boxed)?
        .ok_or_else(|| CliError::Usage(format!("{r} was not found")))?;
    let (found, attestations) = crate::discover::list(&plan.registry, r, &manifest.digest)
        .await
        .map_err(boxed)?;
    let listed = (&found, attestations.as_slice());
    output::print_discovery(r, &manifest.digest, listed, plan.output)?;
    Ok(ExitCode::SUCCESS)
}

async fn sign(plan: SignPlan) -> Result<ExitCode, CliError> {
    let SignPlan {
        reference,
        annotations,
        key,
        registry,
        format,
        recursive,
    } = plan;
    let targets = if recursive {
        crate::sign::recursive_targets(&registry, &reference)
            .await
            .map_err(boxed)?
    } else {
        vec![reference]
    };
    for target in &targets {
        let signed = match format {
            SignFormat::Legacy => crate::sign::sign(&registry, &key, target, &annotations).await,
            SignFormat::Bundle => {
                crate::sign::sign_bundle(&registry, &key, target, &annotations).await
            }
        }
        .map_err(boxed)?;
        output::print_signed(target, &signed)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn attest(plan: AttestPlan) -> Result<ExitCode, CliError> {
    let attested = crate::sign::attest(
        &plan.registry,
        &plan.key,
        &plan.reference,
        &plan.predicate,
        plan.format,
    )
    .await
    .map_err(boxed)?;
    output::print_attested(&plan.reference, &attested, plan.output)?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(plan: ServePlan) -> Result<ExitCode, CliError> {
    crate::webhook::serve(plan.engine, plan.config)
        .await
        .map_err(boxed)?;
    Ok(ExitCode::SUCCESS)
}

fn generate(plan: GeneratePlan) -> Result<ExitCode, CliError> {
    let (key, pem) = SigningKey::generate_encrypted(plan.password.as_bytes()).map_err(boxed)?;
    files::write_new_file(&plan.key_path, pem.as_bytes(), 0o600, plan.force)?;
    files::write_new_file(
        &plan.pub_path,
        key.public_key().to_pem().as_bytes(),
        0o644,
        plan.force,
    )?;
    tell!(
        "Private key written to {}\nPublic key written to {}",
        plan.key_path.display(),
        plan.pub_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn policy_check(files: &[std::path::PathBuf]) -> Result<ExitCode, CliError> {
    let mut ok = true;
    for f in files {
        // As `verify` and `serve` load it: the same size bounds, the same errors.
        match CompiledPolicy::from_file(f) {
            Ok(p) => {
                let n = p.policy().rules.len();
                let noun = if n == 1 { "rule" } else { "rules" };
                say(format_args!("{}: ok ({n} {noun})\n", f.display()))?;
            }
            Err(e) => {
                ok = false;
                for line in e.lines() {
                    tell!("{line}");
                }
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
