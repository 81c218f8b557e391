//! Command line: clap arguments → typed configuration → library calls → output. The only place
//! that prints. Exit codes: 0 every reference allowed, 1 at least one denied, 2 usage,
//! configuration or policy-file error.

use futures_util::StreamExt as _;
use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use zeroize::Zeroizing;

use crate::engine::{Decision, Engine, EngineConfig};
use crate::error_chain;
use crate::policy::CompiledPolicy;
use crate::policy::{AuthorityKind, Policy, Tlog, TrustRootRef, Verdict};
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistrySettings, TlsFile};
use crate::sign::key::SigningKey;
use crate::trust::PublicKey;
use crate::trust::{GitHubWorkflow, Identity, Matcher, TrustRoot};
use crate::verify::SignedIdentity;

#[derive(Parser, Debug)]
#[command(
    name = "ocigate",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("OCIGATE_COMMIT"), ")"),
    about = "Sign and verify OCI artifacts (cosign-compatible)",
    after_long_help = LONG_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const LONG_HELP: &str = "\
Exit codes:
  0  every reference allowed (or warned)
  1  at least one reference denied
  2  a usage, configuration or policy-file error (with -o json, also a JSON document)

Examples:
  ocigate verify ghcr.io/acme/app:v1 --policy policy.yaml
  ocigate verify ghcr.io/acme/app:v1 --key cosign.pub            # a Rekor entry is required
  ocigate verify localhost:5000/app:v1 --key cosign.pub --insecure-ignore-tlog
  ocigate verify ghcr.io/acme/app:v1 --certificate-identity-regexp '^https://github.com/acme/' \\
      --certificate-oidc-issuer https://token.actions.githubusercontent.com
  ocigate verify ghcr.io/acme/app:v1 --platform linux/arm64 --policy policy.yaml
  kustomize build overlays/prod | ocigate verify --manifests - --policy policy.yaml
  ocigate sign localhost:5000/app:v1 --key cosign.key -a env=prod
  ocigate sign localhost:5000/app:v1 --key cosign.key --recursive  # the index and each platform
  ocigate discover ghcr.io/acme/app:v1 -o json
  ocigate policy check policy.yaml

The policy format: docs/policy.md. Registry credentials and TLS: the README's Registry settings.";

// `defer`: a subcommand's arguments are built only when that subcommand is parsed (or for
// help and completion, which build them all), not the whole tree on every start.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
enum Command {
    /// Verify references against a policy file or a public key.
    Verify(Box<VerifyArgs>),
    /// Verify a Sigstore bundle over a file or a sha256 digest (sigstore-conformance protocol).
    VerifyBundle(VerifyBundleArgs),
    /// List every signature found for a reference, and where else was looked.
    Discover(DiscoverArgs),
    /// Sign a reference's digest and attach a cosign signature.
    Sign(SignArgs),
    /// Write an encrypted cosign key pair (cosign.key, cosign.pub).
    GenerateKeyPair(GenerateArgs),
    /// Policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run the Kubernetes validating admission webhook (HTTPS /validate, /healthz, /readyz;
    /// Prometheus /metrics on a separate plain listener).
    Serve(ServeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completion {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// The version, the commit it was built from, and the embedded trust root's validity.
    Version,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Policy file; re-read when it changes (a mounted ConfigMap's swap is seen).
    #[arg(long)]
    policy: PathBuf,
    /// TLS certificate chain (PEM); re-read when it changes.
    #[arg(long)]
    tls_cert: PathBuf,
    /// TLS private key (PEM).
    #[arg(long)]
    tls_key: PathBuf,
    /// Address of the HTTPS listener (/validate, /mutate, /healthz, /readyz).
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: std::net::SocketAddr,
    /// Plain-HTTP listener for /metrics ("off" for none).
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics_listen: String,
    /// Deadline for each admission request, e.g. 8s or 500ms (keep it under the webhook's
    /// timeoutSeconds).
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    deadline: Duration,
    /// How long an allow is remembered.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    cache_ttl: Duration,
    /// How long a deny on the artifact itself is remembered.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    negative_cache_ttl: Duration,
    /// How long a tag's digest is believed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    resolve_ttl: Duration,
    /// How long a decision the registry prevented (unreachable, denied, not found, timed out)
    /// is remembered; default: not at all.
    #[arg(long, value_parser = parse_duration)]
    failure_cache_ttl: Option<Duration>,
    /// Most memory each cache (decisions, resolved tags, tag lists) holds, in MiB; what a
    /// registry controls is cut to a few hundred bytes before it is kept.
    #[arg(long, value_name = "MIB", default_value_t = crate::engine::DEFAULT_CACHE_BYTES >> 20)]
    cache_max_mib: u64,
    /// How often mounted files are looked at for changes.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    reload_interval: Duration,
    /// How long in-flight requests may take after SIGTERM.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    grace: Duration,
    /// TLS connections served at once; one more is closed as soon as it is accepted.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_connections: u32,
    /// The TLS handshake, the headers and the whole body of a request must arrive within this
    /// (a late body is answered 408 and its connection closed; an idle connection is closed
    /// after it).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// MiB that the bodies of all requests being received or checked may hold together (a body
    /// that would pass it is answered 503 with Retry-After); at least one largest body (6 MiB).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(6..=4096))]
    max_body_memory_mib: u32,
    /// /mutate pins workload templates too, not only Pods (GitOps tools then report drift).
    #[arg(long)]
    pin_workloads: bool,
    /// Read referenced objects (a HelmRelease's HelmRepository) through this kubeconfig's
    /// current context; default: the in-cluster service account.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Follow a Flux reference (a HelmRelease's `sourceRef.namespace` or `chartRef.namespace`)
    /// into another namespace than the object's. By default such an object is denied and
    /// nothing is read from the other namespace, as Flux's `--no-cross-namespace-refs` does.
    #[arg(long)]
    allow_cross_namespace_refs: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// `8s`, `500ms`, `2m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 8s, 500ms or 2m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    if d.is_zero() || d > Duration::from_secs(24 * 3600) {
        return Err(format!("{s:?} must be more than zero and at most a day"));
    }
    Ok(d)
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Validate policy files; problems are printed as file:line:column: message.
    Check {
        /// Policy files (YAML; the format: docs/policy.md).
        #[arg(required = true, value_name = "FILE")]
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
    /// Credentials for a registry: HOST=USER:PASS (repeatable). Visible to `ps`: prefer
    /// --registry-creds-file for passwords.
    #[arg(long = "registry-creds", value_name = "HOST=USER:PASS")]
    creds: Vec<String>,
    /// A file of HOST=USER:PASS lines (# comments allowed), or - to read them from stdin.
    #[arg(long = "registry-creds-file", value_name = "FILE")]
    creds_files: Vec<PathBuf>,
    /// Speak plain HTTP to this registry host (repeatable). Loopback hosts (localhost,
    /// 127.0.0.0/8, [::1]) without TLS settings are tried over HTTPS, then plain HTTP.
    #[arg(long = "registry-plain-http", value_name = "HOST")]
    plain_http: Vec<String>,
    /// Accept any TLS certificate from this registry host (repeatable).
    #[arg(long = "registry-insecure-skip-tls-verify", value_name = "HOST")]
    insecure_skip_tls_verify: Vec<String>,
    /// Extra CA certificates (PEM) to trust for a registry host: HOST=FILE (repeatable).
    #[arg(long = "registry-ca-file", value_name = "HOST=FILE")]
    ca_files: Vec<String>,
    /// Client certificate (PEM) for a registry host that asks for one: HOST=FILE.
    #[arg(long = "registry-cert-file", value_name = "HOST=FILE")]
    cert_files: Vec<String>,
    /// The client certificate's private key (PEM): HOST=FILE.
    #[arg(long = "registry-key-file", value_name = "HOST=FILE")]
    key_files: Vec<String>,
    /// A Docker config file with `auths` (e.g. a mounted kubernetes.io/dockerconfigjson
    /// secret; repeatable), used after the user's Docker, podman and Helm files. A file that
    /// is absent gives no credentials (`serve` reads it again when it appears or changes).
    #[arg(long = "registry-config", value_name = "FILE")]
    config_files: Vec<PathBuf>,
    /// cosign's spelling: reach the registries of the references given over HTTPS without
    /// verifying their certificates, or over plain HTTP when they do not speak TLS.
    #[arg(long)]
    allow_insecure_registry: bool,
    /// cosign's spelling: speak plain HTTP to the registries of the references given.
    #[arg(long)]
    allow_http_registry: bool,
    /// Deadline for each registry operation, in seconds.
    #[arg(
        long = "registry-timeout",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    timeout: u64,
    /// Requests in flight to one registry host at most, across the whole process (work that
    /// outlives its admission request included); each holds one connection. Waiting requests
    /// are served in turn, one admission request (or one `verify` run) after another.
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::registry::gate::DEFAULT_MAX_CONNECTIONS_PER_HOST,
        value_parser = clap::value_parser!(u16).range(1..=1024),
    )]
    registry_max_connections: u16,
}

// cosign's `--certificate-github-workflow-*` constraints (exact values). A plain comment: a doc
// comment on a flattened `Args` struct becomes the `about` of the subcommands it is flattened
// into when they are built (deferred, see `Command`).
#[derive(clap::Args, Debug, Default)]
struct GitHubArgs {
    /// Keyless: the GitHub workflow trigger (e.g. push, release).
    #[arg(long = "certificate-github-workflow-trigger")]
    trigger: Option<String>,
    /// Keyless: the commit SHA the workflow ran on.
    #[arg(long = "certificate-github-workflow-sha")]
    sha: Option<String>,
    /// Keyless: the workflow name.
    #[arg(long = "certificate-github-workflow-name")]
    name: Option<String>,
    /// Keyless: the repository, owner/name.
    #[arg(long = "certificate-github-workflow-repository")]
    repository: Option<String>,
    /// Keyless: the git ref (e.g. refs/tags/v1.2.3).
    #[arg(long = "certificate-github-workflow-ref")]
    git_ref: Option<String>,
}

impl GitHubArgs {
    fn workflow(&self) -> GitHubWorkflow {
        GitHubWorkflow {
            trigger: self.trigger.clone(),
            sha: self.sha.clone(),
            name: self.name.clone(),
            repository: self.repository.clone(),
            git_ref: self.git_ref.clone(),
        }
    }
}

// The keyless identity flags of `verify` and `verify-bundle`, as cosign spells them (a plain
// comment, as for `GitHubArgs`).
#[derive(clap::Args, Debug, Default)]
struct KeylessArgs {
    /// Keyless: the certificate identity (SAN), exactly.
    #[arg(long, conflicts_with = "certificate_identity_regexp")]
    certificate_identity: Option<String>,
    /// Keyless: the certificate identity as a regular expression.
    #[arg(long)]
    certificate_identity_regexp: Option<String>,
    /// Keyless: the OIDC issuer, exactly.
    #[arg(long, conflicts_with = "certificate_oidc_issuer_regexp")]
    certificate_oidc_issuer: Option<String>,
    /// Keyless: the OIDC issuer as a regular expression.
    #[arg(long)]
    certificate_oidc_issuer_regexp: Option<String>,
    #[command(flatten)]
    github: GitHubArgs,
}

impl KeylessArgs {
    fn given(&self) -> bool {
        self.certificate_identity.is_some() || self.certificate_identity_regexp.is_some()
    }

    fn identity(&self) -> Result<Identity, CliError> {
        Ok(Identity {
            subject: matcher(
                &self.certificate_identity,
                &self.certificate_identity_regexp,
                "certificate-identity",
            )?,
            issuer: matcher(
                &self.certificate_oidc_issuer,
                &self.certificate_oidc_issuer_regexp,
                "certificate-oidc-issuer",
            )?,
            github: self.github.workflow(),
        })
    }
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// An image reference: `registry/repository[:tag][@digest]` (Docker Hub short forms such as
    /// `nginx` work), `oci://registry/repository[:tag]` as Flux and Helm write it, or
    /// `oci-layout:PATH[:tag|@digest]` for an OCI image layout directory on disk.
    #[arg(required_unless_present = "manifests", value_name = "REF")]
    references: Vec<String>,
    /// Rendered Kubernetes YAML or JSON (`kustomize build`, `helm template`, `flux build`) and
    /// Kluctl project files (deployment.yaml, helm-chart.yaml): a file, a directory (walked), or
    /// `-` for standard input (repeatable). Every OCI source in them is checked, as the webhook
    /// would: Pods and workload templates, Flux OCIRepository/HelmChart/HelmRelease (references
    /// followed within the documents given), KluctlDeployment.
    #[arg(long, value_name = "FILE|DIR|-")]
    manifests: Vec<PathBuf>,
    /// With --manifests: follow a Flux reference (`sourceRef.namespace`, `chartRef.namespace`)
    /// into another namespace than the object's, as `serve --allow-cross-namespace-refs` does.
    /// By default such an object is denied, as in the webhook.
    #[arg(long, requires = "manifests")]
    allow_cross_namespace_refs: bool,
    /// How many references are verified at once; results still come in input order.
    #[arg(long, default_value_t = 16, value_name = "N")]
    jobs: usize,
    /// Verify the manifest each REF's index lists for this platform (`os/arch[/variant]`,
    /// e.g. linux/arm64), instead of the index itself: its own signatures must satisfy the
    /// policy. Without it, a multi-platform REF is verified by the index's digest, as cosign does.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = crate::platform::Platform::parse, conflicts_with = "manifests")]
    platform: Option<crate::platform::Platform>,
    /// Policy file (the format: docs/policy.md).
    #[arg(long, conflicts_with_all = ["key", "certificate_identity", "certificate_identity_regexp"])]
    policy: Option<PathBuf>,
    /// Public key (PEM); every reference must carry a signature by it.
    #[arg(long, conflicts_with_all = ["certificate_identity", "certificate_identity_regexp"])]
    key: Option<PathBuf>,
    #[command(flatten)]
    keyless: KeylessArgs,
    /// A trusted_root.json instead of the embedded public-good root (its Rekor keys check
    /// `--key` signatures' log entries; its Fulcio CAs, keyless certificates).
    #[arg(long, conflicts_with = "policy")]
    trusted_root: Option<PathBuf>,
    /// With --key: accept a signature without a transparency-log entry (as cosign's flag
    /// does). By default a Rekor entry is required, verified offline against the trust root.
    #[arg(long, conflicts_with = "policy")]
    insecure_ignore_tlog: bool,
    /// Required payload annotation KEY=VALUE (repeatable; not with --policy).
    #[arg(
        short = 'a',
        long = "annotations",
        value_name = "KEY=VALUE",
        conflicts_with = "policy"
    )]
    annotations: Vec<String>,
    /// Accept signatures made for another repository name (mirrors, copies; not with --policy).
    #[arg(long, value_name = "REPOSITORY", conflicts_with = "policy")]
    signed_repository: Option<String>,
    /// text for people (a headline per reference, reasons indented), or json for programs
    /// (a document with a schemaVersion; errors are JSON documents too).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Deadline for each reference's whole verification (every registry request), in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    deadline: u64,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("signer").required(true).args(["key", "certificate_identity", "certificate_identity_regexp"])))]
struct VerifyBundleArgs {
    /// The Sigstore bundle (JSON).
    #[arg(long)]
    bundle: PathBuf,
    /// Public key (PEM) of a managed-key bundle.
    #[arg(long, conflicts_with_all = ["certificate_identity", "certificate_identity_regexp"])]
    key: Option<PathBuf>,
    #[command(flatten)]
    keyless: KeylessArgs,
    /// A trusted_root.json; default: the embedded Sigstore public-good root.
    #[arg(long)]
    trusted_root: Option<PathBuf>,
    /// Use the embedded Sigstore staging root instead of public-good.
    #[arg(long, conflicts_with = "trusted_root")]
    staging: bool,
    /// With --key: accept a bundle without a transparency-log entry or timestamp (by default
    /// one is required, as cosign does).
    #[arg(long)]
    insecure_ignore_tlog: bool,
    /// text for people (a headline per reference, reasons indented), or json for programs
    /// (a document with a schemaVersion; errors are JSON documents too).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
    /// The signed file, or its digest as sha256:<64 hex> (when no such file exists).
    #[arg(value_name = "FILE_OR_DIGEST")]
    artifact: String,
}

#[derive(clap::Args, Debug)]
struct DiscoverArgs {
    /// An image reference: `registry/repository[:tag][@digest]` (Docker Hub short forms such as
    /// `nginx` work), `oci://registry/repository[:tag]` as Flux and Helm write it, or
    /// `oci-layout:PATH[:tag|@digest]` for an OCI image layout directory on disk.
    #[arg(value_name = "REF")]
    reference: String,
    /// text for people (a headline per reference, reasons indented), or json for programs
    /// (a document with a schemaVersion; errors are JSON documents too).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(clap::Args, Debug)]
struct SignArgs {
    /// An image reference: `registry/repository[:tag][@digest]` (Docker Hub short forms such as
    /// `nginx` work), `oci://registry/repository[:tag]` as Flux and Helm write it, or
    /// `oci-layout:PATH[:tag|@digest]` for an OCI image layout directory on disk.
    #[arg(value_name = "REF")]
    reference: String,
    /// Encrypted cosign private key; password from OCIGATE_PASSWORD or COSIGN_PASSWORD, else a prompt.
    #[arg(long)]
    key: PathBuf,
    /// Payload annotation KEY=VALUE (repeatable).
    #[arg(short = 'a', long = "annotations", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// legacy: cosign v2's `.sig` tag; bundle: cosign v3's Sigstore bundle as an OCI referrer.
    #[arg(long, value_enum, default_value_t = SignFormat::Legacy)]
    format: SignFormat,
    /// For a multi-platform REF: sign each platform manifest its index lists, then the index
    /// (as cosign's --recursive). Without it only the digest REF names is signed.
    #[arg(long)]
    recursive: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SignFormat {
    Legacy,
    Bundle,
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

impl CliError {
    /// What kind of error, for `-o json`'s error document.
    fn kind(&self) -> &'static str {
        match self {
            CliError::Usage(_) => "usage",
            CliError::Io { .. } => "io",
            CliError::Other(_) => "configuration",
        }
    }
}

fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> CliError {
    CliError::Other(Box::new(e))
}

/// Write `text` to standard output; a closed pipe (`ocigate … | head -0`) or a full disk is an
/// error (exit 2), never a panic as `print!` would make it.
fn say(text: impl std::fmt::Display) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|source| CliError::Io {
            what: "writing to standard output".into(),
            source,
        })
}

pub fn main() -> ExitCode {
    // `--version` says what `version` says (clap's own flag would print the short form).
    let mut args = std::env::args_os().skip(1);
    if let (Some(a), None) = (args.next(), args.next())
        && (a == "--version" || a == "-V")
    {
        return match say(version_text()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", error_chain(&e));
                ExitCode::from(2)
            }
        };
    }
    // Only the commands that talk to registries or serve start an async runtime.
    let result = match Cli::parse().command {
        Command::Verify(a) => block_on(false, verify(*a)),
        Command::Discover(a) => block_on(false, discover(a)),
        Command::Sign(a) => block_on(false, sign(a)),
        Command::Serve(a) => block_on(true, serve(a)),
        Command::VerifyBundle(a) => verify_bundle(a),
        Command::GenerateKeyPair(a) => generate(a),
        Command::Policy(PolicyCommand::Check { files }) => policy_check(&files),
        Command::Completion { shell } => {
            use clap::CommandFactory as _;
            // clap_complete panics when its writer fails: generate into memory, then write.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ocigate", &mut script);
            say(String::from_utf8_lossy(&script)).map(|()| ExitCode::SUCCESS)
        }
        Command::Version => say(version_text()).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
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
            eprintln!("error: cannot start the async runtime: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `ocigate VERSION (commit C)` and the validity windows of the embedded trust root, by kind
/// (what an air-gapped cluster relies on until it is given a newer root).
fn version_text() -> String {
    let mut out = format!(
        "ocigate {} (commit {})\n",
        env!("CARGO_PKG_VERSION"),
        env!("OCIGATE_COMMIT")
    );
    let root = match serde_json::from_str::<RootWindows>(
        sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
    ) {
        Ok(r) => r,
        Err(e) => {
            out.push_str(&format!("embedded trust root: unreadable ({e})\n"));
            return out;
        }
    };
    let window = |ranges: &[Window]| {
        let ranges: Vec<_> = ranges.iter().map(|w| w.valid_for.as_ref()).collect();
        let starts = ranges.iter().flatten().map(|r| r.start.to_string());
        let from = starts.min().unwrap_or_else(|| "?".into());
        let until = if ranges.iter().any(|r| r.is_none_or(|r| r.end.is_none())) {
            "the newest without an end date".to_string()
        } else {
            let last = ranges
                .iter()
                .flatten()
                .filter_map(|r| r.end.map(|e| e.to_string()))
                .max()
                .unwrap_or_else(|| "?".into());
            format!("until {last}")
        };
        format!("{} (valid from {from}; {until})", ranges.len())
    };
    let keys = |logs: &[KeyWindow]| logs.iter().map(|l| l.public_key).collect::<Vec<_>>();
    out.push_str("embedded trust root (Sigstore public-good):\n");
    out.push_str(&format!(
        "  Fulcio certificate authorities: {}\n",
        window(&root.certificate_authorities)
    ));
    out.push_str(&format!(
        "  Rekor transparency logs: {}\n",
        window(&keys(&root.tlogs))
    ));
    out.push_str(&format!(
        "  certificate transparency logs: {}\n",
        window(&keys(&root.ctlogs))
    ));
    out.push_str(&format!(
        "  timestamp authorities: {}\n",
        window(&root.timestamp_authorities)
    ));
    out
}

/// The validity windows of a trusted_root.json and nothing else, as
/// `sigstore_trust_root::TrustedRoot` reads them: `version` runs on every start of a CI job's
/// gate, and need not decode every certificate and key of the root to print them.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootWindows {
    #[serde(default)]
    tlogs: Vec<KeyWindow>,
    #[serde(default)]
    certificate_authorities: Vec<Window>,
    #[serde(default)]
    ctlogs: Vec<KeyWindow>,
    #[serde(default)]
    timestamp_authorities: Vec<Window>,
}

/// A transparency log's key, whose `validFor` is the log's window.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyWindow {
    public_key: Window,
}

#[derive(serde::Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct Window {
    #[serde(default)]
    valid_for: Option<sigstore_types::TimeRange>,
}

async fn serve(a: ServeArgs) -> Result<ExitCode, CliError> {
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
    if a.cache_max_mib == 0 || a.cache_max_mib > 4096 {
        return Err(CliError::Usage(
            "--cache-max-mib must be between 1 and 4096".into(),
        ));
    }
    let engine = Engine::new(registry_with(&a.registry, true, &[])?, policy, config);
    let metrics_listen = match a.metrics_listen.as_str() {
        "off" | "" => None,
        addr => Some(
            addr.parse()
                .map_err(|e| CliError::Usage(format!("--metrics-listen {addr:?}: {e}")))?,
        ),
    };
    let cfg = crate::webhook::ServeConfig {
        listen: a.listen,
        metrics_listen,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        policy: a.policy,
        reload_interval: a.reload_interval,
        grace: a.grace,
        pin_workloads: a.pin_workloads,
        kubeconfig: a.kubeconfig,
        allow_cross_namespace_refs: a.allow_cross_namespace_refs,
        limits: crate::webhook::Limits {
            max_connections: a.max_connections as usize,
            request_timeout: a.request_timeout,
            body_memory: (a.max_body_memory_mib as usize) << 20,
        },
    };
    crate::webhook::serve(engine, cfg).await.map_err(boxed)?;
    Ok(ExitCode::SUCCESS)
}

/// The registry client of a one-shot command, with cosign's `--allow-insecure-registry` and
/// `--allow-http-registry` applied to the registries of `refs`.
fn registry_for(args: &RegistryArgs, refs: &[&ImageRef]) -> Result<Registry, CliError> {
    let hosts: Vec<String> = refs
        .iter()
        .filter_map(|r| r.registry().map(str::to_string))
        .collect();
    registry_with(args, false, &hosts)
}

/// The registry client from flags, the environment and the user's credential files; `watch`
/// (for `serve`) re-reads credential files when they change.
fn registry_with(
    args: &RegistryArgs,
    watch: bool,
    ref_hosts: &[String],
) -> Result<Registry, CliError> {
    let mut s = RegistrySettings::default();
    for c in &args.creds {
        s.add_credentials_flag(c).map_err(boxed)?;
    }
    for f in &args.creds_files {
        let (text, origin) = if f.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text).map_err(
                |source| CliError::Io {
                    what: "--registry-creds-file -: cannot read stdin".into(),
                    source,
                },
            )?;
            (text, "--registry-creds-file - (stdin)".to_string())
        } else {
            let origin = format!("--registry-creds-file {}", f.display());
            let text = std::fs::read_to_string(f).map_err(|source| CliError::Io {
                what: format!("{origin}: cannot read"),
                source,
            })?;
            (text, origin)
        };
        s.add_credentials_text(&text, &origin).map_err(boxed)?;
    }
    s.apply_env(std::env::vars()).map_err(boxed)?;
    for h in &args.plain_http {
        s.add_plain_http(h).map_err(boxed)?;
    }
    for h in &args.insecure_skip_tls_verify {
        s.add_insecure_skip_tls_verify(h).map_err(boxed)?;
    }
    for h in ref_hosts {
        if args.allow_http_registry {
            s.add_plain_http(h).map_err(boxed)?;
        } else if args.allow_insecure_registry {
            s.add_allow_insecure(h).map_err(boxed)?;
        }
    }
    for (which, values) in [
        (TlsFile::Ca, &args.ca_files),
        (TlsFile::Cert, &args.cert_files),
        (TlsFile::Key, &args.key_files),
    ] {
        for v in values {
            s.add_tls_file(which, v).map_err(boxed)?;
        }
    }
    s.validate().map_err(boxed)?;
    s.add_user_auth_files(&|k| std::env::var(k).ok(), watch);
    for f in &args.config_files {
        let label = format!("--registry-config {}", f.display());
        if !watch && !f.exists() {
            // An optional secret that is not mounted: no credentials from it, said once.
            eprintln!("note: {label}: no such file; no credentials from it");
        }
        // A file named on the command line that does not parse is a configuration error now,
        // not a denial later.
        if let Err(e) = s.add_auth_file(f.clone(), label, watch).config() {
            return Err(boxed(e));
        }
    }
    if args.timeout == 0 || args.timeout > 3600 {
        return Err(CliError::Usage(
            "--registry-timeout must be between 1 and 3600 seconds".into(),
        ));
    }
    s.timeout = Duration::from_secs(args.timeout);
    s.max_connections_per_host = usize::from(args.registry_max_connections);
    Ok(Registry::new(s))
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
    let output = a.output;
    match verify_inner(a).await {
        Err(e) if output == Output::Json => {
            // A usage or configuration error is a JSON document too (and still exit 2).
            let doc = serde_json::json!({
                "schemaVersion": JSON_SCHEMA_VERSION,
                "error": {"kind": e.kind(), "message": error_chain(&e)},
                "results": [],
            });
            let written = say(format_args!(
                "{}\n",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            ));
            match written {
                Ok(()) => Ok(ExitCode::from(2)),
                // Said on stderr then, as a text run says it.
                Err(w) => {
                    eprintln!("error: {}", error_chain(&e));
                    Err(w)
                }
            }
        }
        other => other,
    }
}

/// A reference that does not parse, as a result of its own: the others are still verified.
fn invalid_reference(input: &str, e: &crate::reference::ReferenceError) -> Decision {
    Decision::without_signatures(
        crate::escape_text(input),
        None,
        Verdict::Deny,
        None,
        error_chain(e),
        Some(crate::failure::Failure::Invalid),
    )
}

async fn verify_inner(a: VerifyArgs) -> Result<ExitCode, CliError> {
    let mut refs = Vec::new();
    let mut invalid = Vec::new();
    for input in &a.references {
        match ImageRef::parse(input) {
            Ok(r) => refs.push(r),
            Err(e) => invalid.push(invalid_reference(input, &e)),
        }
    }
    let keyless = a.keyless.given();
    let signed_identity = match &a.signed_repository {
        Some(r) => SignedIdentity::ExactRepository(r.clone()),
        None => SignedIdentity::MatchRepository,
    };
    let policy = match (&a.policy, &a.key) {
        (Some(p), None) => CompiledPolicy::from_file(p).map_err(boxed)?,
        (None, Some(k)) => {
            let key = PublicKey::from_pem(&read_file(k, "public key")?, &k.display().to_string())
                .map_err(boxed)?;
            // As cosign: a Rekor entry is required (checked offline with the given root, else
            // the embedded public-good one) unless --insecure-ignore-tlog says otherwise.
            let tlog = if a.insecure_ignore_tlog {
                Tlog::Skip
            } else {
                Tlog::Required
            };
            let (roots, root) = match &a.trusted_root {
                Some(p) => (trusted_root_ref(p)?, Some("--trusted-root".into())),
                None => (Vec::new(), None),
            };
            let kind = AuthorityKind::Key {
                key,
                tlog,
                trust_root: root,
            };
            let ann = parse_annotations(&a.annotations)?;
            let authority = format!("key {}", k.display());
            let policy =
                Policy::single_authority("--key", &authority, kind, roots, ann, signed_identity);
            CompiledPolicy::new(policy, "command line".into())
        }
        (None, None) if keyless => {
            let identity = a.keyless.identity()?;
            let authority = format!("identity {identity}");
            let (roots, root) = match &a.trusted_root {
                Some(p) => (trusted_root_ref(p)?, Some("--trusted-root".into())),
                None => (Vec::new(), None),
            };
            let kind = AuthorityKind::Keyless {
                trust_root: root,
                identities: vec![identity],
                tlog: Tlog::Required,
            };
            let ann = parse_annotations(&a.annotations)?;
            let policy = Policy::single_authority(
                "--certificate-identity",
                &authority,
                kind,
                roots,
                ann,
                signed_identity,
            );
            CompiledPolicy::new(policy, "command line".into())
        }
        _ => {
            return Err(CliError::Usage(
                "verify needs --policy FILE, --key PUB, or --certificate-identity[-regexp] \
                 with --certificate-oidc-issuer[-regexp]"
                    .into(),
            ));
        }
    };
    if a.deadline == 0 || a.deadline > 3600 {
        return Err(CliError::Usage(
            "--deadline must be between 1 and 3600 seconds".into(),
        ));
    }
    let config = EngineConfig {
        deadline: Duration::from_secs(a.deadline),
        verification_budget: Duration::from_secs(a.deadline),
        ..EngineConfig::default()
    };
    if a.jobs == 0 || a.jobs > 256 {
        return Err(CliError::Usage("--jobs must be between 1 and 256".into()));
    }
    let engine = Engine::new(
        registry_for(&a.registry, &refs.iter().collect::<Vec<_>>())?,
        policy,
        config,
    );
    let (found, unverified) = if a.manifests.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let files = read_manifests(&a.manifests)?;
        manifest_sources(&files, a.allow_cross_namespace_refs).await?
    };
    let bad_references = !invalid.is_empty();
    // Every check, in input order; at most --jobs run at once.
    type Check<'e> = std::pin::Pin<Box<dyn std::future::Future<Output = Decision> + Send + 'e>>;
    let mut checks: Vec<Check<'_>> = Vec::new();
    let deadline = engine.config().deadline;
    for r in &refs {
        checks.push(match &a.platform {
            Some(p) => Box::pin(engine.check_platform(r, p, deadline)),
            None => Box::pin(engine.check(r)),
        });
    }
    for (origin, source) in found {
        let engine = engine.clone();
        checks.push(Box::pin(async move {
            let mut d = engine.check_source(&source, deadline).await;
            d.reasons.push(format!("found in {}", origin.join(", ")));
            d
        }));
    }
    let text = a.output == Output::Text;
    let progress = Progress::new(text && std::io::stderr().is_terminal(), checks.len());
    let checks = checks.into_iter().map(|c| {
        let progress = &progress;
        async move {
            let d = c.await;
            progress.one_done();
            d
        }
    });
    let mut decisions = invalid;
    decisions.extend(unverified);
    if text {
        // Results stream in input order as they complete.
        for d in &decisions {
            print_decisions(std::slice::from_ref(d), a.output)?;
        }
    }
    let mut stream = futures_util::stream::iter(checks).buffered(a.jobs);
    while let Some(d) = stream.next().await {
        if text {
            progress.clear();
            print_decisions(std::slice::from_ref(&d), a.output)?;
            progress.redraw();
        }
        decisions.push(d);
    }
    progress.clear();
    if !text {
        print_decisions(&decisions, a.output)?;
    }
    if bad_references {
        return Ok(ExitCode::from(2));
    }
    let all_allowed = decisions.iter().all(|d| d.verdict != Verdict::Deny);
    Ok(if all_allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Most bytes and files read by `--manifests`.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;
const MAX_MANIFEST_FILES: usize = 10_000;

/// (label, text) of every manifest file given: files, directories walked for *.yaml, *.yml and
/// *.json (hidden entries skipped, symbolic links to directories not followed), `-` for stdin.
fn read_manifests(paths: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, CliError> {
    let mut files = Vec::new();
    let mut total = 0u64;
    let too_much = || {
        CliError::Usage(format!(
            "--manifests: more than {MAX_MANIFEST_FILES} files or {MAX_MANIFEST_BYTES} bytes"
        ))
    };
    let mut add = |label: PathBuf, text: String| -> Result<(), CliError> {
        total += text.len() as u64;
        if total > MAX_MANIFEST_BYTES || files.len() >= MAX_MANIFEST_FILES {
            return Err(too_much());
        }
        files.push((label, text));
        Ok(())
    };
    for p in paths {
        if p.as_os_str() == "-" {
            use std::io::Read as _;
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_MANIFEST_BYTES + 1)
                .read_to_string(&mut text)
                .map_err(|source| CliError::Io {
                    what: "--manifests -: cannot read standard input".into(),
                    source,
                })?;
            add(PathBuf::from("<stdin>"), text)?;
            continue;
        }
        let meta = std::fs::metadata(p).map_err(|source| CliError::Io {
            what: format!("--manifests {}: cannot read", p.display()),
            source,
        })?;
        if meta.is_file() {
            add(p.clone(), read_file(p, "--manifests")?)?;
            continue;
        }
        let mut stack = vec![(p.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .map_err(|source| CliError::Io {
                    what: format!("--manifests {}: cannot read the directory", dir.display()),
                    source,
                })?
                .filter_map(Result::ok)
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') {
                    continue;
                }
                let path = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    if depth < 32 {
                        stack.push((path, depth + 1));
                    }
                } else if (ft.is_file() || ft.is_symlink())
                    && [".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x))
                {
                    add(path.clone(), read_file(&path, "--manifests")?)?;
                }
            }
        }
    }
    Ok(files)
}

/// What `--manifests` found: each OCI source once, with every place it was found.
type ManifestSources = Vec<(Vec<String>, crate::extract::Source)>;

/// The OCI sources of the manifests, each once, with every place it was found; and a warn
/// decision for each source the cluster would fetch that is not OCI (nothing verifies it).
async fn manifest_sources(
    files: &[(PathBuf, String)],
    cross_namespace_refs: bool,
) -> Result<(ManifestSources, Vec<Decision>), CliError> {
    use crate::extract::{self, Artifact, DocumentSet, Source};
    let mut objects = Vec::new();
    let mut kluctl = Vec::new();
    for (file, text) in files {
        let docs = extract::parse_documents(text).map_err(|e| {
            CliError::Usage(format!(
                "--manifests {}: {}",
                file.display(),
                error_chain(&e)
            ))
        })?;
        for d in docs {
            if d.get("apiVersion").is_some() && d.get("kind").is_some() {
                objects.push((file.clone(), d));
            } else {
                kluctl.push((file.clone(), d));
            }
        }
    }
    let set = DocumentSet::new(objects.iter().map(|(_, d)| d.clone()).collect())
        .allow_cross_namespace_refs(cross_namespace_refs);
    let mut unverified = Vec::new();
    let mut found: Vec<(Vec<String>, Source)> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    // Every place an artifact is found: its first path and the other paths of the same object.
    let mut record = |what: &str, source: Source| {
        let origins = std::iter::once(&source.path)
            .chain(&source.other_paths)
            .map(|p| {
                if p.is_empty() {
                    what.to_string()
                } else {
                    format!("{what} {p}")
                }
            });
        match index.get(&source.key()) {
            Some(&i) => found[i].0.extend(origins),
            None => {
                let origins = origins.collect();
                index.insert(source.key(), found.len());
                found.push((origins, source));
            }
        }
    };
    let invalid = |input: String, problem: String| Source {
        path: String::new(),
        other_paths: Vec::new(),
        artifact: Artifact::Invalid { input, problem },
        flux_verify: None,
        flux: false,
        via: Vec::new(),
    };
    for (file, d) in &objects {
        let kind = d.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
        let name = d
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or("?");
        let what = format!("{} {kind} {name}", file.display());
        match extract::extract(d, &set).await {
            Ok(x) => match too_many_artifacts(&x) {
                Some(problem) => record(&what, invalid(what.clone(), problem)),
                None => {
                    for s in x.sources {
                        record(&what, s);
                    }
                    let found_in = |u: &extract::Unverified| format!("{what} {}", u.path);
                    unverified.extend(
                        x.unverified
                            .into_iter()
                            .map(|u| unverified_decision(found_in(&u), u)),
                    );
                }
            },
            Err(e) => record(&what, invalid(what.clone(), error_chain(&e))),
        }
    }
    for (file, d) in &kluctl {
        let base = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !matches!(
            base.as_str(),
            "deployment.yaml" | "deployment.yml" | "helm-chart.yaml" | "helm-chart.yml"
        ) {
            continue; // values files, kustomization fragments: no OCI sources
        }
        let what = file.display().to_string();
        match extract::extract_kluctl_file(&base, d) {
            Ok(x) => match too_many_artifacts(&x) {
                Some(problem) => record(&what, invalid(what.clone(), problem)),
                None => {
                    for s in x.sources {
                        record(&what, s);
                    }
                }
            },
            Err(e) => record(&what, invalid(what.clone(), error_chain(&e))),
        }
    }
    Ok((found, unverified))
}

/// A warn result for a source the cluster would fetch that is not OCI: nothing verifies it.
fn unverified_decision(found_in: String, u: crate::extract::Unverified) -> Decision {
    let mut d = Decision::without_signatures(u.what, None, Verdict::Warn, None, u.reason, None);
    d.reasons.push(format!("found in {found_in}"));
    d
}

/// Why an object's sources are not checked, when it names more distinct artifacts than the
/// webhook accepts of one object (the same limit, the same words).
fn too_many_artifacts(x: &crate::extract::Extraction) -> Option<String> {
    let max = crate::webhook::MAX_ARTIFACTS_PER_OBJECT;
    let count = x
        .sources
        .iter()
        .map(crate::extract::Source::key)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let fields = crate::extract::MAX_IMAGE_FIELDS;
    (count > max).then(|| crate::webhook::ObjectError::TooManyArtifacts { max, fields }.to_string())
}

/// A progress line on stderr while references are checked (only when it is a terminal and the
/// output is text): `[3/10] checked`, rewritten in place and cleared before each result.
struct Progress {
    on: bool,
    total: usize,
    done: std::sync::atomic::AtomicUsize,
}

impl Progress {
    fn new(on: bool, total: usize) -> Self {
        Progress {
            on: on && total > 1,
            total,
            done: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn one_done(&self) {
        self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.redraw();
    }

    fn redraw(&self) {
        if self.on {
            let done = self.done.load(std::sync::atomic::Ordering::Relaxed);
            eprint!("\r\x1b[K[{done}/{}] checked", self.total);
        }
    }

    fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

/// The version of `verify -o json`'s document; fields may be added, never renamed.
const JSON_SCHEMA_VERSION: u32 = 1;

fn print_decisions(decisions: &[Decision], output: Output) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let io = |source| CliError::Io {
        what: "writing the result".into(),
        source,
    };
    match output {
        Output::Json => {
            #[derive(serde::Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Results<'a> {
                schema_version: u32,
                results: &'a [Decision],
            }
            let doc = Results {
                schema_version: JSON_SCHEMA_VERSION,
                results: decisions,
            };
            serde_json::to_writer_pretty(&mut out, &doc)
                .map_err(|e| io(std::io::Error::other(e)))?;
            writeln!(out).map_err(io)?;
        }
        Output::Text => {
            for d in decisions {
                write!(out, "{}", text_decision(d)).map_err(io)?;
            }
        }
    }
    Ok(())
}

/// One decision for a person: a headline (`ALLOW`/`DENY`/`WARN`, the reference with its
/// digest, the rule, the failure class), then each reason on its own indented line, said once.
/// Everything that came from a registry or a file is escaped.
fn text_decision(d: &Decision) -> String {
    let word = match d.verdict {
        Verdict::Allow => "ALLOW",
        Verdict::Deny => "DENY",
        Verdict::Warn => "WARN",
    };
    let target = match &d.digest {
        Some(dg) if !d.reference.contains('@') => format!("{}@{dg}", d.reference),
        _ => d.reference.clone(),
    };
    let mut s = format!("{word} {}", crate::escape_text(&target));
    if let Some(r) = &d.rule {
        s.push_str(&format!(" [rule {}]", crate::escape_text(r)));
    }
    if let Some(f) = d.failure.filter(|_| d.verdict != Verdict::Allow) {
        s.push_str(&format!(" ({f})"));
    }
    s.push('\n');
    let mut said = std::collections::HashSet::new();
    for r in &d.reasons {
        if said.insert(r.as_str()) {
            s.push_str(&format!("  {}\n", crate::escape_text(r)));
        }
    }
    for sig in &d.signatures {
        let by = match sig.evidence() {
            crate::verify::Evidence::Key {
                key_fingerprint,
                log_index,
            } => {
                let log = log_index.map_or_else(
                    || " (no transparency-log entry checked)".to_string(),
                    |i| format!(", Rekor log index {i}"),
                );
                format!("key {key_fingerprint}{log}")
            }
            crate::verify::Evidence::Keyless {
                identity,
                issuer,
                log_index,
                ..
            } => {
                let log = log_index.map_or_else(String::new, |i| format!(", Rekor log index {i}"));
                format!("certificate for {identity} from {issuer}{log}")
            }
        };
        s.push_str(&format!(
            "  signed: authority {} by {} at {}\n",
            crate::escape_text(sig.authority()),
            crate::escape_text(&by),
            crate::escape_text(sig.location())
        ));
    }
    match (&d.source, &d.revision) {
        (Some(src), Some(rev)) => s.push_str(&format!(
            "  source {} @ {}\n",
            crate::escape_text(src),
            crate::escape_text(rev)
        )),
        (Some(src), None) => s.push_str(&format!("  source {}\n", crate::escape_text(src))),
        _ => {}
    }
    s
}

fn trusted_root_ref(p: &Path) -> Result<Vec<TrustRootRef>, CliError> {
    let name = "--trusted-root";
    let root = TrustRoot::from_json(&read_file(p, "trusted root")?, name).map_err(boxed)?;
    Ok(vec![TrustRootRef {
        name: name.into(),
        root: std::sync::Arc::new(root),
    }])
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

fn verify_bundle(a: VerifyBundleArgs) -> Result<ExitCode, CliError> {
    use crate::bundle::{BundleArtifact, BundleAuthority, ParsedBundle, verify_bundle};
    let json = read_file(&a.bundle, "bundle")?;
    let root = match (&a.trusted_root, a.staging) {
        (Some(p), _) => {
            TrustRoot::from_json(&read_file(p, "trusted root")?, &p.display().to_string())
                .map_err(boxed)?
        }
        (None, true) => TrustRoot::from_json(
            sigstore_trust_root::SIGSTORE_STAGING_TRUSTED_ROOT,
            "embedded staging",
        )
        .map_err(boxed)?,
        (None, false) => TrustRoot::embedded().map_err(boxed)?,
    };
    let key;
    let identities;
    let authority = match &a.key {
        Some(k) => {
            key = PublicKey::from_pem(&read_file(k, "public key")?, &k.display().to_string())
                .map_err(boxed)?;
            if a.insecure_ignore_tlog {
                BundleAuthority::KeyWithoutTlog(&key)
            } else {
                BundleAuthority::Key(&key)
            }
        }
        None => {
            identities = [a.keyless.identity()?];
            BundleAuthority::Identities(&identities)
        }
    };
    let bytes;
    let artifact = match bundle_artifact(&a.artifact)? {
        Some(d) => BundleArtifact::Sha256(d),
        None => {
            bytes = std::fs::read(&a.artifact).map_err(|source| CliError::Io {
                what: format!("artifact {}: cannot read", a.artifact),
                source,
            })?;
            BundleArtifact::Bytes(&bytes)
        }
    };
    let verified = ParsedBundle::parse(&json)
        .and_then(|parsed| verify_bundle(&parsed, artifact, authority, &root));
    match verified {
        Ok(evidence) => {
            match a.output {
                Output::Json => say(format_args!(
                    "{}\n",
                    serde_json::to_string_pretty(&evidence).unwrap_or_default()
                ))?,
                Output::Text => {
                    let who = match (&evidence.identity, &evidence.issuer) {
                        (Some(i), Some(iss)) => format!("identity {i} (issuer {iss})"),
                        _ => "the given key".to_string(),
                    };
                    let log = evidence
                        .log_index
                        .map(|i| format!(", transparency log index {i}"))
                        .unwrap_or_default();
                    say(format_args!(
                        "OK: {} signed by {who}{log}\n",
                        a.bundle.display()
                    ))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("FAILED: {}: {}", a.bundle.display(), error_chain(&e));
            Ok(ExitCode::from(1))
        }
    }
}

async fn discover(a: DiscoverArgs) -> Result<ExitCode, CliError> {
    let r = ImageRef::parse(&a.reference).map_err(boxed)?;
    let registry = registry_for(&a.registry, &[&r])?;
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
            let legacy = found.candidates.iter().map(|c| {
                serde_json::json!({
                    "location": c.location,
                    "kind": "cosign-legacy",
                    "mediaType": crate::payload::SIMPLE_SIGNING_MEDIA_TYPE,
                    "claimedSigner": c.claimed_signer(),
                    "payload": String::from_utf8_lossy(&c.payload),
                    "annotations": c.annotations,
                })
            });
            let bundles = found.bundles.iter().map(|b| {
                serde_json::json!({
                    "location": b.location,
                    "kind": "sigstore-bundle",
                    "mediaType": b.media_type(),
                    "claimedSigner": b.claimed_signer(),
                })
            });
            let sigs: Vec<_> = legacy.chain(bundles).collect();
            let unexamined: Vec<_> = found
                .unexamined
                .iter()
                .map(|u| {
                    serde_json::json!({
                        "location": u.location,
                        "reason": error_chain(&u.reason),
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "reference": r.to_string(),
                "digest": manifest.digest.to_string(),
                "signatures": sigs,
                "unexamined": unexamined,
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
                writeln!(
                    out,
                    "  cosign legacy signature at {}: by {}",
                    crate::escape_text(&c.location),
                    c.claimed_signer()
                )
                .map_err(io)?;
            }
            for b in &found.bundles {
                writeln!(
                    out,
                    "  Sigstore bundle ({}) at {}: by {}",
                    crate::escape_text(b.media_type().as_deref().unwrap_or("no media type")),
                    crate::escape_text(&b.location),
                    b.claimed_signer()
                )
                .map_err(io)?;
            }
            for u in &found.unexamined {
                writeln!(
                    out,
                    "  not examined: {}: {}",
                    u.location,
                    error_chain(&u.reason)
                )
                .map_err(io)?;
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
    let registry = registry_for(&a.registry, &[&r])?;
    let targets = if a.recursive {
        crate::sign::recursive_targets(&registry, &r)
            .await
            .map_err(boxed)?
    } else {
        vec![r]
    };
    for target in &targets {
        let signed = match a.format {
            SignFormat::Legacy => crate::sign::sign(&registry, &key, target, &annotations).await,
            SignFormat::Bundle => {
                crate::sign::sign_bundle(&registry, &key, target, &annotations).await
            }
        }
        .map_err(boxed)?;
        if signed.added {
            say(format_args!(
                "signed {}@{} -> {} ({} signature(s))\n",
                target.name(),
                signed.digest,
                signed.stored_at,
                signed.signatures
            ))?;
        } else {
            say(format_args!(
                "already signed: {}@{} has this key's signature of this payload in {} ({} signature(s)); nothing added\n",
                target.name(),
                signed.digest,
                signed.stored_at,
                signed.signatures
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn generate(a: GenerateArgs) -> Result<ExitCode, CliError> {
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
    let pw = password(true)?;
    let (key, pem) = SigningKey::generate_encrypted(pw.as_bytes()).map_err(boxed)?;
    write_new_file(&key_path, pem.as_bytes(), 0o600, a.force)?;
    write_new_file(
        &pub_path,
        key.public_key().to_pem().as_bytes(),
        0o644,
        a.force,
    )?;
    eprintln!(
        "Private key written to {}\nPublic key written to {}",
        key_path.display(),
        pub_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Write `data` to `path` as a new file with `mode`: written to a fresh temporary file in the
/// same directory (created exclusively, so no symlink is followed and no one else's file is
/// opened), then linked into place — refusing an existing path, or with `replace` renaming
/// over it (a symlink there is replaced, never followed, and the old file's mode is not kept).
fn write_new_file(path: &Path, data: &[u8], mode: u32, replace: bool) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| CliError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = None;
    for attempt in 0..16u32 {
        let mut rnd = [0u8; 8];
        aws_lc_rs::rand::fill(&mut rnd).map_err(|_| CliError::Io {
            what: "no randomness for a temporary file name".into(),
            source: std::io::Error::other("aws-lc-rs rand"),
        })?;
        let candidate = dir.join(format!(".{name}.{}.tmp", hex::encode(rnd)));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&candidate)
        {
            Ok(f) => {
                tmp = Some((candidate, f));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 15 => {}
            Err(e) => return Err(io(e)),
        }
    }
    let Some((tmp_path, mut f)) = tmp else {
        return Err(io(std::io::Error::other("no free temporary file name")));
    };
    let written = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .and_then(|()| {
            if replace {
                std::fs::rename(&tmp_path, path)
            } else {
                std::fs::hard_link(&tmp_path, path).and_then(|()| std::fs::remove_file(&tmp_path))
            }
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(io(e));
    }
    Ok(())
}

fn policy_check(files: &[PathBuf]) -> Result<ExitCode, CliError> {
    let mut ok = true;
    for f in files {
        match Policy::from_file(f) {
            Ok(p) => say(format_args!(
                "{}: ok ({} rules)\n",
                f.display(),
                p.rules.len()
            ))?,
            Err(e) => {
                ok = false;
                for line in e.lines() {
                    eprintln!("{line}");
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// Every argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if ["help", "version"].contains(&id) {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        // The subcommands' arguments are deferred until the command is built; building them
        // keeps each subcommand's description (a flattened struct's doc comment would replace it).
        let mut cli = super::Cli::command();
        let about = |c: &clap::Command| -> Vec<String> {
            c.get_subcommands()
                .filter(|s| s.get_name() != "help")
                .map(|s| format!("{:?}", (s.get_about(), s.get_long_about())))
                .collect()
        };
        let eager = about(&cli);
        cli.build();
        assert_eq!(eager, about(&cli));
        walk(&cli, "ocigate", &mut missing);
        assert!(
            missing.is_empty()
                && cli
                    .find_subcommand("verify")
                    .is_some_and(|v| v.get_arguments().any(|a| a.get_id() == "key")),
            "no help text: {missing:?}"
        );
        let long = super::Cli::command().render_long_help().to_string();
        assert!(
            long.contains("Exit codes:") && long.contains("Examples:"),
            "{long}"
        );
    }

    /// `version`'s reading of the embedded roots has the windows the verifier's reading has.
    #[test]
    fn root_windows_match_the_trusted_root() {
        for json in [
            sigstore_trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT,
            sigstore_trust_root::SIGSTORE_STAGING_TRUSTED_ROOT,
        ] {
            let full = sigstore_trust_root::TrustedRoot::from_json(json).unwrap();
            let windows: super::RootWindows = serde_json::from_str(json).unwrap();
            let w = |ws: &[super::Window]| ws.iter().map(|w| w.valid_for).collect::<Vec<_>>();
            let k = |ks: &[super::KeyWindow]| {
                ks.iter()
                    .map(|k| k.public_key.valid_for)
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                w(&windows.certificate_authorities),
                full.certificate_authorities
                    .iter()
                    .map(|c| c.valid_for)
                    .collect::<Vec<_>>()
            );
            assert_eq!(
                k(&windows.tlogs),
                full.tlogs
                    .iter()
                    .map(|t| t.public_key.valid_for)
                    .collect::<Vec<_>>()
            );
            assert_eq!(
                k(&windows.ctlogs),
                full.ctlogs
                    .iter()
                    .map(|t| t.public_key.valid_for)
                    .collect::<Vec<_>>()
            );
            assert_eq!(
                w(&windows.timestamp_authorities),
                full.timestamp_authorities
                    .iter()
                    .map(|t| t.valid_for)
                    .collect::<Vec<_>>()
            );
            assert!(!windows.tlogs.is_empty() && !windows.certificate_authorities.is_empty());
        }
    }
}
