//! Command line: clap arguments → typed configuration → library calls → output. The only place
//! that prints. Exit codes: 0 every reference allowed, 1 at least one denied, 2 usage,
//! configuration or policy-file error.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use zeroize::Zeroizing;

use crate::gate::{Decision, Gate, error_chain};
use crate::policy::{Policy, Verdict};
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistrySettings};
use crate::sign::key::SigningKey;
use crate::trust::PublicKey;
use crate::verify::SignedIdentity;

#[derive(Parser, Debug)]
#[command(
    name = "ocigate",
    version,
    about = "Sign and verify OCI artifacts (cosign-compatible)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Verify references against a policy file or a public key.
    Verify(VerifyArgs),
    /// List every signature found for a reference, and where else was looked.
    Discover(DiscoverArgs),
    /// Sign a reference's digest and attach a cosign signature.
    Sign(SignArgs),
    /// Write an encrypted cosign key pair (cosign.key, cosign.pub).
    GenerateKeyPair(GenerateArgs),
    /// Policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Validate policy files; problems are printed as file:line:column: message.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(clap::Args, Debug, Default)]
struct RegistryArgs {
    /// Credentials for a registry: HOST=USER:PASS (repeatable).
    #[arg(long = "registry-creds", value_name = "HOST=USER:PASS")]
    creds: Vec<String>,
    /// Speak plain HTTP to this registry host (repeatable).
    #[arg(long = "registry-plain-http", value_name = "HOST")]
    plain_http: Vec<String>,
    /// Deadline for each registry operation, in seconds.
    #[arg(
        long = "registry-timeout",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    timeout: u64,
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    #[arg(required = true, value_name = "REF")]
    references: Vec<String>,
    /// Policy file (DESIGN.md section 3).
    #[arg(long, conflicts_with = "key")]
    policy: Option<PathBuf>,
    /// Public key (PEM); every reference must carry a signature by it.
    #[arg(long)]
    key: Option<PathBuf>,
    /// With --key: required payload annotation KEY=VALUE (repeatable).
    #[arg(
        short = 'a',
        long = "annotations",
        value_name = "KEY=VALUE",
        requires = "key"
    )]
    annotations: Vec<String>,
    /// With --key: accept signatures made for another repository name (mirrors, copies).
    #[arg(long, value_name = "REPOSITORY", requires = "key")]
    signed_repository: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(clap::Args, Debug)]
struct DiscoverArgs {
    #[arg(value_name = "REF")]
    reference: String,
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(clap::Args, Debug)]
struct SignArgs {
    #[arg(value_name = "REF")]
    reference: String,
    /// Encrypted cosign private key; password from OCIGATE_PASSWORD or COSIGN_PASSWORD, else a prompt.
    #[arg(long)]
    key: PathBuf,
    /// Payload annotation KEY=VALUE (repeatable).
    #[arg(short = 'a', long = "annotations", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(clap::Args, Debug)]
struct GenerateArgs {
    /// Write PREFIX.key and PREFIX.pub.
    #[arg(long, default_value = "cosign")]
    output_key_prefix: String,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

/// A failure that ends the command with exit code 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> CliError {
    CliError::Other(Box::new(e))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Verify(a) => verify(a).await,
        Command::Discover(a) => discover(a).await,
        Command::Sign(a) => sign(a).await,
        Command::GenerateKeyPair(a) => generate(a),
        Command::Policy(PolicyCommand::Check { files }) => Ok(policy_check(&files)),
    }
}

fn registry_from(args: &RegistryArgs) -> Result<Registry, CliError> {
    let mut s = RegistrySettings::default();
    s.apply_env(std::env::vars()).map_err(boxed)?;
    for c in &args.creds {
        s.add_credentials_flag(c).map_err(boxed)?;
    }
    s.plain_http.extend(args.plain_http.iter().cloned());
    if args.timeout == 0 {
        return Err(CliError::Usage(
            "--registry-timeout must be at least 1 second".into(),
        ));
    }
    s.timeout = Duration::from_secs(args.timeout);
    Ok(Registry::new(s))
}

fn parse_refs(inputs: &[String]) -> Result<Vec<ImageRef>, CliError> {
    inputs
        .iter()
        .map(|r| ImageRef::parse(r).map_err(boxed))
        .collect()
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

fn read_file(path: &Path, what: &str) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Io {
        what: format!("{what} {}: cannot read", path.display()),
        source,
    })
}

async fn verify(a: VerifyArgs) -> Result<ExitCode, CliError> {
    let refs = parse_refs(&a.references)?;
    let policy = match (&a.policy, &a.key) {
        (Some(p), None) => Policy::from_file(p).map_err(boxed)?,
        (None, Some(k)) => {
            let key = PublicKey::from_pem(&read_file(k, "public key")?, &k.display().to_string())
                .map_err(boxed)?;
            let identity = match &a.signed_repository {
                Some(r) => SignedIdentity::ExactRepository(r.clone()),
                None => SignedIdentity::MatchRepository,
            };
            Policy::for_key(key, parse_annotations(&a.annotations)?, identity)
        }
        _ => {
            return Err(CliError::Usage(
                "verify needs --policy FILE or --key PUB".into(),
            ));
        }
    };
    let gate = Gate::new(registry_from(&a.registry)?, policy);
    let decisions = futures_util::future::join_all(refs.iter().map(|r| gate.check(r))).await;
    print_decisions(&decisions, a.output)?;
    let all_allowed = decisions.iter().all(|d| d.verdict != Verdict::Deny);
    Ok(if all_allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_decisions(decisions: &[Decision], output: Output) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let io = |source| CliError::Io {
        what: "writing the result".into(),
        source,
    };
    match output {
        Output::Json => {
            #[derive(serde::Serialize)]
            struct Results<'a> {
                results: &'a [Decision],
            }
            serde_json::to_writer_pretty(&mut out, &Results { results: decisions })
                .map_err(|e| io(std::io::Error::other(e)))?;
            writeln!(out).map_err(io)?;
        }
        Output::Text => {
            for d in decisions {
                let word = match d.verdict {
                    Verdict::Allow => "ALLOW",
                    Verdict::Deny => "DENY",
                    Verdict::Warn => "WARN",
                };
                let target = match &d.digest {
                    Some(dg) if !d.reference.contains('@') => format!("{}@{dg}", d.reference),
                    _ => d.reference.clone(),
                };
                let rule = d
                    .rule
                    .as_deref()
                    .map(|r| format!(" [rule {r}]"))
                    .unwrap_or_default();
                let trace = match (&d.source, &d.revision) {
                    (Some(s), Some(r)) => format!(" (source {s} @ {r})"),
                    (Some(s), None) => format!(" (source {s})"),
                    _ => String::new(),
                };
                writeln!(
                    out,
                    "{word} {target}{rule}: {}{trace}",
                    d.reasons.join("; ")
                )
                .map_err(io)?;
            }
        }
    }
    Ok(())
}

async fn discover(a: DiscoverArgs) -> Result<ExitCode, CliError> {
    let r = ImageRef::parse(&a.reference).map_err(boxed)?;
    let registry = registry_from(&a.registry)?;
    let manifest = registry
        .get_manifest(&r)
        .await
        .map_err(boxed)?
        .ok_or_else(|| CliError::Usage(format!("{r} was not found")))?;
    let found = crate::discover::discover(&registry, &r, &manifest.digest)
        .await
        .map_err(boxed)?;
    let mut out = std::io::stdout().lock();
    let io = |source| CliError::Io {
        what: "writing the result".into(),
        source,
    };
    match a.output {
        Output::Json => {
            let sigs: Vec<_> = found
                .candidates
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "location": c.location,
                        "kind": "cosign-legacy",
                        "payload": String::from_utf8_lossy(&c.payload),
                        "annotations": c.annotations,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "reference": r.to_string(),
                "digest": manifest.digest.to_string(),
                "signatures": sigs,
                "paths": found.paths,
            });
            serde_json::to_writer_pretty(&mut out, &doc)
                .map_err(|e| io(std::io::Error::other(e)))?;
            writeln!(out).map_err(io)?;
        }
        Output::Text => {
            writeln!(out, "{r} resolves to {}", manifest.digest).map_err(io)?;
            for p in &found.paths {
                let notes = if p.notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", p.notes.join("; "))
                };
                writeln!(out, "  {}: {} signature(s){notes}", p.path, p.found).map_err(io)?;
            }
            for c in &found.candidates {
                writeln!(out, "  signature at {}", c.location).map_err(io)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The key password: OCIGATE_PASSWORD, then COSIGN_PASSWORD, else asked on the terminal.
fn password(confirm: bool) -> Result<Zeroizing<String>, CliError> {
    for var in ["OCIGATE_PASSWORD", "COSIGN_PASSWORD"] {
        if let Ok(p) = std::env::var(var) {
            return Ok(Zeroizing::new(p));
        }
    }
    let no_tty = |source| CliError::Io {
        what: "no password: set OCIGATE_PASSWORD (or COSIGN_PASSWORD), or run on a terminal".into(),
        source,
    };
    let p = Zeroizing::new(
        rpassword::prompt_password("Enter password for private key: ").map_err(no_tty)?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("Enter password for private key again: ").map_err(no_tty)?,
        );
        if *again != *p {
            return Err(CliError::Usage("passwords do not match".into()));
        }
    }
    Ok(p)
}

async fn sign(a: SignArgs) -> Result<ExitCode, CliError> {
    let r = ImageRef::parse(&a.reference).map_err(boxed)?;
    let annotations = parse_annotations(&a.annotations)?;
    let pem = read_file(&a.key, "private key")?;
    let pw = password(false)?;
    let key = SigningKey::from_encrypted_pem(&pem, pw.as_bytes(), &a.key.display().to_string())
        .map_err(boxed)?;
    let registry = registry_from(&a.registry)?;
    let signed = crate::sign::sign(&registry, &key, &r, &annotations)
        .await
        .map_err(boxed)?;
    println!(
        "signed {}@{} -> {} ({} signature(s))",
        r.name(),
        signed.digest,
        signed.signature_tag,
        signed.signatures
    );
    Ok(ExitCode::SUCCESS)
}

fn generate(a: GenerateArgs) -> Result<ExitCode, CliError> {
    let key_path = PathBuf::from(format!("{}.key", a.output_key_prefix));
    let pub_path = PathBuf::from(format!("{}.pub", a.output_key_prefix));
    if !a.force {
        for p in [&key_path, &pub_path] {
            if p.exists() {
                return Err(CliError::Usage(format!(
                    "{} already exists; pass --force to replace it",
                    p.display()
                )));
            }
        }
    }
    let pw = password(true)?;
    let (key, pem) = SigningKey::generate_encrypted(pw.as_bytes()).map_err(boxed)?;
    write_private(&key_path, pem.as_bytes())?;
    std::fs::write(&pub_path, key.public_key().to_pem()).map_err(|source| CliError::Io {
        what: format!("cannot write {}", pub_path.display()),
        source,
    })?;
    eprintln!(
        "Private key written to {}\nPublic key written to {}",
        key_path.display(),
        pub_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| CliError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(data).map_err(io)
}

fn policy_check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for f in files {
        match Policy::from_file(f) {
            Ok(p) => println!("{}: ok ({} rules)", f.display(), p.rules.len()),
            Err(e) => {
                ok = false;
                for line in e.lines() {
                    eprintln!("{line}");
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
