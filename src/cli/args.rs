//! The command line as clap parses it: every subcommand's arguments, with their help text and
//! every range check. Parsing only: no file is read here and nothing is built from the values.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

mod cluster;

pub(crate) use cluster::{AuditArgs, PodTemplateArgs, ServeArgs};

#[derive(Parser, Debug)]
#[command(
    name = "ocigate",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("OCIGATE_COMMIT"), ")"),
    about = "Sign and verify OCI artifacts (cosign-compatible)",
    after_long_help = LONG_HELP
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Where verified TUF metadata is cached (default: $XDG_CACHE_HOME/ocigate/tuf, else
    /// ~/.cache/ocigate/tuf). Without a writable one, TUF roots work from what is cached or
    /// embedded, and `trust-root update` fails.
    #[arg(long, global = true, value_name = "DIR", env = "OCIGATE_TUF_CACHE_DIR")]
    pub(crate) tuf_cache_dir: Option<PathBuf>,
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
  ocigate attest localhost:5000/app:v1 --key cosign.key --type slsaprovenance1 --predicate prov.json
  ocigate discover ghcr.io/acme/app:v1 -o json
  ocigate policy check policy.yaml

The policy format: docs/policy.md. Registry credentials and TLS: the README's Registry settings.";

// `defer`: a subcommand's arguments are built only when that subcommand is parsed (or for
// help and completion, which build them all), not the whole tree on every start.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub(crate) enum Command {
    /// Verify references against a policy file or a public key.
    Verify(Box<VerifyArgs>),
    /// Verify references' in-toto attestations (cosign's `verify-attestation`): a statement of
    /// the predicate type about the digest, signed by the key or identity, whose conditions
    /// (CEL) all hold; or a policy file's `attestations:` with --policy.
    VerifyAttestation(Box<VerifyAttestationArgs>),
    /// Verify a Sigstore bundle over a file or a sha256 digest (sigstore-conformance protocol).
    VerifyBundle(VerifyBundleArgs),
    /// List every signature found for a reference, and where else was looked.
    Discover(DiscoverArgs),
    /// Sign a reference's digest and attach a cosign signature.
    Sign(SignArgs),
    /// Attach a signed in-toto attestation (SLSA provenance, SBOM, scan…) to a reference's
    /// digest, as `cosign attest --key` does.
    ///
    /// The statement and its DSSE envelope are the bytes cosign 3.1.1 writes for the same
    /// predicate and type. When this key's attestation of the same statement is already there
    /// (written by ocigate or cosign), nothing is written.
    Attest(AttestArgs),
    /// Write an encrypted cosign key pair (cosign.key, cosign.pub).
    GenerateKeyPair(GenerateArgs),
    /// Policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check what a cluster runs now: its Pods and the Flux and Kluctl sources the webhook
    /// checks, each distinct artifact once with the current policy, reported per namespace and
    /// owning workload (exit 1 when one fails the policy, as `verify`).
    Audit(Box<AuditArgs>),
    /// TUF-updated trusted roots (Sigstore public-good, GitHub, mirrors of one's own): update
    /// the verified cache, show what is in force.
    #[command(subcommand)]
    TrustRoot(TrustRootCommand),
    /// Run the Kubernetes validating admission webhook (HTTPS /validate, /healthz, /readyz;
    /// Prometheus /metrics on a separate plain listener).
    Serve(Box<ServeArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completion {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// The version, the commit it was built from, and the embedded trust root's validity.
    Version,
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

/// The namespaces deploy/'s webhook configurations exclude (`namespaceSelector`, `NotIn`):
/// `verify --manifests` skips them too unless told otherwise.
pub(crate) const WEBHOOK_EXCLUDED_NAMESPACES: [&str; 2] = ["ocigate-system", "kube-system"];

/// A namespace name (a DNS-1123 label).
fn namespace(s: &str) -> Result<String, String> {
    if crate::extract::names::is_dns1123_label(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a namespace name (a DNS-1123 label)"))
    }
}

/// `KEY=VALUE`: a Kubernetes label key and value.
fn namespace_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    crate::policy::check_label_key(k).map_err(|e| format!("label key {k:?}: {e}"))?;
    crate::policy::check_label_value(v).map_err(|e| format!("label value {v:?}: {e}"))?;
    Ok((k.to_string(), v.to_string()))
}

/// A namespace name, or `` (no namespace is excluded).
fn excluded_namespace(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Ok(String::new());
    }
    namespace(s)
}

/// A `--type` as given (cosign embeds a predicate by its spelling), if it names a type.
fn predicate_type(s: &str) -> Result<String, String> {
    crate::predicate::PredicateType::parse(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCommand {
    /// Validate policy files; problems are printed as file:line:column: message.
    Check {
        /// Policy files (YAML; the format: docs/policy.md).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TrustRootCommand {
    /// Fetch, verify and cache trusted roots through TUF (default: public-good). The cache is
    /// replaced only when everything verified; a failure keeps the last good root.
    #[command(alias = "initialize")]
    Update(TrustRootUpdateArgs),
    /// The trusted root in force for each name: source, TUF metadata versions and expiry, the
    /// validity windows of its CAs, logs and timestamp authorities (default: public-good and
    /// github).
    Show(TrustRootShowArgs),
}

/// Which TUF roots a `trust-root` command is about.
#[derive(clap::Args, Debug)]
pub(crate) struct TrustRootSelect {
    /// A TUF repository of one's own: an http(s) URL, a directory or a .tar.gz (with --root).
    #[arg(
        long,
        value_name = "URL|PATH",
        requires = "root",
        conflicts_with = "policy"
    )]
    pub(crate) mirror: Option<String>,
    /// With --mirror: the bootstrap root.json trust begins with.
    #[arg(long, value_name = "FILE", requires = "mirror")]
    pub(crate) root: Option<PathBuf>,
    /// With --mirror: the name it goes by (as a policy's trustRoots name it).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "custom",
        requires = "mirror"
    )]
    pub(crate) name: String,
    /// Every TUF trust root this policy names (the built-in ones its authorities name too).
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct TrustRootUpdateArgs {
    #[command(flatten)]
    pub(crate) select: TrustRootSelect,
    /// How long one root's update may take, every fetch included, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) timeout: Duration,
    /// text, or json (the state of each root updated).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

#[derive(clap::Args, Debug)]
pub(crate) struct TrustRootShowArgs {
    #[command(flatten)]
    pub(crate) select: TrustRootSelect,
    /// text for people, or json for programs.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(clap::Args, Debug, Default)]
pub(crate) struct RegistryArgs {
    /// Credentials for a registry: HOST=USER:PASS (repeatable). Visible to `ps`: prefer
    /// --registry-creds-file for passwords.
    #[arg(long = "registry-creds", value_name = "HOST=USER:PASS")]
    pub(crate) creds: Vec<String>,
    /// A file of HOST=USER:PASS lines (# comments allowed), or - to read them from stdin.
    #[arg(long = "registry-creds-file", value_name = "FILE")]
    pub(crate) creds_files: Vec<PathBuf>,
    /// Speak plain HTTP to this registry host (repeatable). Loopback hosts (localhost,
    /// 127.0.0.0/8, [::1]) without TLS settings are tried over HTTPS, then plain HTTP.
    #[arg(long = "registry-plain-http", value_name = "HOST")]
    pub(crate) plain_http: Vec<String>,
    /// Accept any TLS certificate from this registry host (repeatable).
    #[arg(long = "registry-insecure-skip-tls-verify", value_name = "HOST")]
    pub(crate) insecure_skip_tls_verify: Vec<String>,
    /// Extra CA certificates (PEM) to trust for a registry host: HOST=FILE (repeatable).
    #[arg(long = "registry-ca-file", value_name = "HOST=FILE")]
    pub(crate) ca_files: Vec<String>,
    /// Client certificate (PEM) for a registry host that asks for one: HOST=FILE.
    #[arg(long = "registry-cert-file", value_name = "HOST=FILE")]
    pub(crate) cert_files: Vec<String>,
    /// The client certificate's private key (PEM): HOST=FILE.
    #[arg(long = "registry-key-file", value_name = "HOST=FILE")]
    pub(crate) key_files: Vec<String>,
    /// A Docker config file with `auths` (e.g. a mounted kubernetes.io/dockerconfigjson
    /// secret; repeatable), used after the user's Docker, podman and Helm files. A file that
    /// is absent gives no credentials (`serve` reads it again when it appears or changes).
    #[arg(long = "registry-config", value_name = "FILE")]
    pub(crate) config_files: Vec<PathBuf>,
    /// cosign's spelling: reach the registries of the references given over HTTPS without
    /// verifying their certificates, or over plain HTTP when they do not speak TLS.
    #[arg(long)]
    pub(crate) allow_insecure_registry: bool,
    /// cosign's spelling: speak plain HTTP to the registries of the references given.
    #[arg(long)]
    pub(crate) allow_http_registry: bool,
    /// Deadline for each registry operation, in seconds.
    #[arg(
        long = "registry-timeout",
        value_name = "SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600),
    )]
    pub(crate) timeout: u64,
    /// Requests in flight to one registry host at most, across the whole process (work that
    /// outlives its admission request included); each holds one connection. Waiting requests
    /// are served in turn, one admission request (or one `verify` run) after another.
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::registry::gate::DEFAULT_MAX_CONNECTIONS_PER_HOST,
        value_parser = clap::value_parser!(u16).range(1..=1024),
    )]
    pub(crate) registry_max_connections: u16,
    /// Largest attestation blob fetched (a DSSE envelope layer, or a Sigstore bundle carrying
    /// one), in bytes; a larger one is not examined. SBOMs of large images run to tens of MiB.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = crate::registry::MAX_ATTESTATION_BYTES as u64,
        value_parser = clap::value_parser!(u64).range(1..=(1 << 30)),
    )]
    pub(crate) max_attestation_bytes: u64,
}

// cosign's `--certificate-github-workflow-*` constraints (exact values). A plain comment: a doc
// comment on a flattened `Args` struct becomes the `about` of the subcommands it is flattened
// into when they are built (deferred, see `Command`).
#[derive(clap::Args, Debug, Default)]
pub(crate) struct GitHubArgs {
    /// Keyless: the GitHub workflow trigger (e.g. push, release).
    #[arg(long = "certificate-github-workflow-trigger")]
    pub(crate) trigger: Option<String>,
    /// Keyless: the commit SHA the workflow ran on.
    #[arg(long = "certificate-github-workflow-sha")]
    pub(crate) sha: Option<String>,
    /// Keyless: the workflow name.
    #[arg(long = "certificate-github-workflow-name")]
    pub(crate) name: Option<String>,
    /// Keyless: the repository, owner/name.
    #[arg(long = "certificate-github-workflow-repository")]
    pub(crate) repository: Option<String>,
    /// Keyless: the git ref (e.g. refs/tags/v1.2.3).
    #[arg(long = "certificate-github-workflow-ref")]
    pub(crate) git_ref: Option<String>,
}

// The keyless identity flags of `verify` and `verify-bundle`, as cosign spells them (a plain
// comment, as for `GitHubArgs`).
#[derive(clap::Args, Debug, Default)]
pub(crate) struct KeylessArgs {
    /// Keyless: the certificate identity (SAN), exactly.
    #[arg(long, conflicts_with = "certificate_identity_regexp")]
    pub(crate) certificate_identity: Option<String>,
    /// Keyless: the certificate identity as a regular expression.
    #[arg(long)]
    pub(crate) certificate_identity_regexp: Option<String>,
    /// Keyless: the OIDC issuer, exactly.
    #[arg(long, conflicts_with = "certificate_oidc_issuer_regexp")]
    pub(crate) certificate_oidc_issuer: Option<String>,
    /// Keyless: the OIDC issuer as a regular expression.
    #[arg(long)]
    pub(crate) certificate_oidc_issuer_regexp: Option<String>,
    #[command(flatten)]
    pub(crate) github: GitHubArgs,
}

#[derive(clap::Args, Debug)]
// The custom kinds are read from manifests only (`PodTemplateArgs` is shared with `serve`, so
// the requirement is said here).
#[command(group(clap::ArgGroup::new("pod_templates").args(["kinds", "presets"]).multiple(true).requires("manifests")))]
pub(crate) struct VerifyArgs {
    /// An image reference: `registry/repository[:tag][@digest]` (Docker Hub short forms such as
    /// `nginx` work), `oci://registry/repository[:tag]` as Flux and Helm write it, or
    /// `oci-layout:PATH[:tag|@digest]` for an OCI image layout directory on disk.
    #[arg(required_unless_present = "manifests", value_name = "REF")]
    pub(crate) references: Vec<String>,
    /// Rendered Kubernetes YAML or JSON (`kustomize build`, `helm template`, `flux build`) and
    /// Kluctl project files (deployment.yaml, helm-chart.yaml): a file, a directory (walked), or
    /// `-` for standard input (repeatable). Every OCI source in them is checked, as the webhook
    /// would: Pods and workload templates, Flux OCIRepository/HelmChart/HelmRelease (references
    /// followed within the documents given), KluctlDeployment.
    #[arg(long, value_name = "FILE|DIR|-")]
    pub(crate) manifests: Vec<PathBuf>,
    /// With --manifests: follow a Flux reference (`sourceRef.namespace`, `chartRef.namespace`)
    /// into another namespace than the object's, as `serve --allow-cross-namespace-refs` does.
    /// By default such an object is denied, as in the webhook.
    #[arg(long, requires = "manifests")]
    pub(crate) allow_cross_namespace_refs: bool,
    /// With --manifests: a namespace the webhook is not called for (its configuration's
    /// namespaceSelector); objects in it are skipped, each said, never denied. Repeatable; the
    /// names given replace the default (deploy/'s list); `--exclude-namespace ''` excludes none.
    #[arg(
        long,
        value_name = "NS",
        requires = "manifests",
        default_values_t = WEBHOOK_EXCLUDED_NAMESPACES.map(String::from),
        value_parser = excluded_namespace,
    )]
    pub(crate) exclude_namespace: Vec<String>,
    /// With REF: evaluate as for an object in this namespace (its namespace-scoped rules
    /// apply; without --namespace only rules that name no namespace do). With --manifests: the
    /// namespace objects that name none are applied to (as `kubectl apply -n NS`), for the
    /// exclusions, the rules, the output and their references. Default: with --kubeconfig its
    /// context's namespace (else `default`), without it none.
    #[arg(long, value_name = "NS", value_parser = namespace)]
    pub(crate) namespace: Option<String>,
    /// A label of the --namespace namespace, for rules with a namespaceSelector (repeatable;
    /// `kubernetes.io/metadata.name` is always there, as the API server sets it). With
    /// --manifests a Namespace document among them says its labels instead.
    #[arg(long, value_name = "KEY=VALUE", requires = "namespace", value_parser = namespace_label)]
    pub(crate) namespace_label: Vec<(String, String)>,
    /// Read from the cluster of this kubeconfig's current context, with `get` by name as the
    /// webhook does: with --manifests a referenced object that is not among the documents (a
    /// HelmRelease's HelmRepository; without it such a reference is denied), and the labels of
    /// a namespace a rule's namespaceSelector needs (with REF: --namespace's).
    #[arg(long, value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) pod_templates: PodTemplateArgs,
    /// How many references are verified at once; results still come in input order.
    #[arg(
        long,
        default_value_t = 16,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256),
    )]
    pub(crate) jobs: usize,
    /// Verify the manifest each REF's index lists for this platform (`os/arch[/variant]`,
    /// e.g. linux/arm64), instead of the index itself: its own signatures must satisfy the
    /// policy. Without it, a multi-platform REF is verified by the index's digest, as cosign does.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = crate::platform::Platform::parse, conflicts_with = "manifests")]
    pub(crate) platform: Option<crate::platform::Platform>,
    /// Policy file (the format: docs/policy.md).
    #[arg(long, conflicts_with_all = ["key", "certificate_identity", "certificate_identity_regexp"])]
    pub(crate) policy: Option<PathBuf>,
    /// Public key (PEM); every reference must carry a signature by it.
    #[arg(long, conflicts_with_all = ["certificate_identity", "certificate_identity_regexp"])]
    pub(crate) key: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) keyless: KeylessArgs,
    /// A CA of one's own (as cosign's flag): PEM root certificates the signature's certificate
    /// must chain to; its SAN is matched by --certificate-identity[-regexp].
    #[arg(long, value_name = "FILE", conflicts_with_all = ["policy", "key", "certificate_chain"])]
    pub(crate) ca_roots: Option<PathBuf>,
    /// With --ca-roots: PEM intermediate certificates the chain may go through.
    #[arg(long, value_name = "FILE", requires = "ca_roots")]
    pub(crate) ca_intermediates: Option<PathBuf>,
    /// A CA of one's own as one PEM chain (as cosign reads it): intermediates, then the root.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["policy", "key"])]
    pub(crate) certificate_chain: Option<PathBuf>,
    /// A trusted_root.json instead of the embedded public-good root (its Rekor keys check
    /// `--key` signatures' log entries; its Fulcio CAs, keyless certificates).
    #[arg(long, conflicts_with = "policy")]
    pub(crate) trusted_root: Option<PathBuf>,
    /// With --key: accept a signature without a transparency-log entry (as cosign's flag
    /// does). By default a Rekor entry is required, verified offline against the trust root.
    #[arg(long, conflicts_with = "policy")]
    pub(crate) insecure_ignore_tlog: bool,
    /// Required payload annotation KEY=VALUE (repeatable; not with --policy).
    #[arg(
        short = 'a',
        long = "annotations",
        value_name = "KEY=VALUE",
        conflicts_with = "policy"
    )]
    pub(crate) annotations: Vec<String>,
    /// Accept signatures made for another repository name (mirrors, copies; not with --policy).
    #[arg(long, value_name = "REPOSITORY", conflicts_with = "policy")]
    pub(crate) signed_repository: Option<String>,
    /// text for people (a headline per reference, reasons indented), or json for programs
    /// (a document with a schemaVersion; errors are JSON documents too).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
    /// Deadline for each reference's whole verification (every registry request), in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600),
    )]
    pub(crate) deadline: u64,
    /// Update the TUF trusted roots used (the policy's, else public-good) before verifying.
    /// Without it the verified cache (or the embedded root) is used and nothing is fetched.
    #[arg(long)]
    pub(crate) refresh_trust_root: bool,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct VerifyAttestationArgs {
    /// The predicate type: a URI, or one of cosign's names (slsaprovenance = SLSA v0.2,
    /// slsaprovenance02, slsaprovenance1, spdx, spdxjson, cyclonedx, vuln, openvex, link,
    /// custom).
    #[arg(
        long = "type",
        value_name = "TYPE",
        required_unless_present = "policy",
        conflicts_with = "policy",
        value_parser = crate::predicate::PredicateType::parse,
    )]
    pub(crate) predicate_type: Option<crate::predicate::PredicateType>,
    /// A CEL expression the statement must satisfy (repeatable; all must hold). It sees
    /// `predicateType`, `predicate`, `subject`, `statement`, `signer` and `now`.
    #[arg(long = "condition", value_name = "EXPR", conflicts_with = "policy")]
    pub(crate) conditions: Vec<String>,
    #[command(flatten)]
    pub(crate) verify: VerifyArgs,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("signer").required(true).args(["key", "certificate_identity", "certificate_identity_regexp"])))]
pub(crate) struct VerifyBundleArgs {
    /// The Sigstore bundle (JSON).
    #[arg(long)]
    pub(crate) bundle: PathBuf,
    /// Public key (PEM) of a managed-key bundle.
    #[arg(long, conflicts_with_all = ["certificate_identity", "certificate_identity_regexp"])]
    pub(crate) key: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) keyless: KeylessArgs,
    /// A trusted_root.json; default: the embedded Sigstore public-good root.
    #[arg(long)]
    pub(crate) trusted_root: Option<PathBuf>,
    /// Use the embedded Sigstore staging root instead of public-good.
    #[arg(long, conflicts_with = "trusted_root")]
    pub(crate) staging: bool,
    /// Update the public-good TUF root before verifying (without --trusted-root or --staging).
    #[arg(long, conflicts_with_all = ["trusted_root", "staging"])]
    pub(crate) refresh_trust_root: bool,
    /// With --key: accept a bundle without a transparency-log entry or timestamp (by default
    /// one is required, as cosign does).
    #[arg(long)]
    pub(crate) insecure_ignore_tlog: bool,
    /// text for people (a headline per reference, reasons indented), or json for programs
    /// (a document with a schemaVersion; errors are JSON documents too).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
    /// The bundle is an attestation: its in-toto statement must have this predicate type (a
    /// URI or one of cosign's names) and name the artifact in a subject (sha256, sha384 or
    /// sha512: give a digest as `sha512:<hex>` for npm provenance).
    #[arg(long = "type", value_name = "TYPE", value_parser = crate::predicate::PredicateType::parse)]
    pub(crate) predicate_type: Option<crate::predicate::PredicateType>,
    /// With --type: a CEL expression the statement must satisfy (repeatable; all must hold).
    #[arg(long = "condition", value_name = "EXPR", requires = "predicate_type")]
    pub(crate) conditions: Vec<String>,
    /// The signed file, or its digest as sha256:<64 hex> (when no such file exists); with
    /// --type also sha384:<96 hex> or sha512:<128 hex>.
    #[arg(value_name = "FILE_OR_DIGEST")]
    pub(crate) artifact: String,
}

#[derive(clap::Args, Debug)]
pub(crate) struct DiscoverArgs {
    /// An image reference: `registry/repository[:tag][@digest]` (Docker Hub short forms such as
    /// `nginx` work), `oci://registry/repository[:tag]` as Flux and Helm write it, or
    /// `oci-layout:PATH[:tag|@digest]` for an OCI image layout directory on disk.
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    /// text for people (a headline per reference, reasons indented), or json for programs
    /// (a document with a schemaVersion; errors are JSON documents too).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct SignArgs {
    /// An image reference: `registry/repository[:tag][@digest]` (Docker Hub short forms such as
    /// `nginx` work), `oci://registry/repository[:tag]` as Flux and Helm write it, or
    /// `oci-layout:PATH[:tag|@digest]` for an OCI image layout directory on disk.
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    /// Encrypted cosign private key; password from OCIGATE_PASSWORD or COSIGN_PASSWORD, else a prompt.
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// Payload annotation KEY=VALUE (repeatable).
    #[arg(short = 'a', long = "annotations", value_name = "KEY=VALUE")]
    pub(crate) annotations: Vec<String>,
    /// legacy: cosign v2's `.sig` tag; bundle: cosign v3's Sigstore bundle as an OCI referrer.
    #[arg(long, value_enum, default_value_t = SignFormat::Legacy)]
    pub(crate) format: SignFormat,
    /// For a multi-platform REF: sign each platform manifest its index lists, then the index
    /// (as cosign's --recursive). Without it only the digest REF names is signed.
    #[arg(long)]
    pub(crate) recursive: bool,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct AttestArgs {
    /// An image reference: `registry/repository[:tag][@digest]` (Docker Hub short forms such as
    /// `nginx` work), `oci://registry/repository[:tag]` as Flux and Helm write it, or
    /// `oci-layout:PATH[:tag|@digest]` for an OCI image layout directory on disk.
    #[arg(value_name = "REF")]
    pub(crate) reference: String,
    /// The predicate: a JSON file (at most 32 MiB), or - for standard input. For `custom` and
    /// `spdx` any text, embedded as cosign embeds it.
    #[arg(long, value_name = "FILE|-")]
    pub(crate) predicate: PathBuf,
    /// The predicate type: a URI, or one of cosign's names (slsaprovenance = SLSA v0.2,
    /// slsaprovenance02, slsaprovenance1, spdx, spdxjson, cyclonedx, vuln, openvex, link,
    /// custom).
    #[arg(long = "type", value_name = "TYPE", default_value = "custom", value_parser = predicate_type)]
    pub(crate) predicate_type: String,
    /// Encrypted cosign private key; password from OCIGATE_PASSWORD or COSIGN_PASSWORD, else a prompt.
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// bundle: cosign 3's default, a Sigstore bundle as an OCI referrer; legacy: a layer of the
    /// `sha256-<hex>.att` tag (cosign's --new-bundle-format=false). Nothing is uploaded to a
    /// transparency log: verify with `cosign verify-attestation --insecure-ignore-tlog`.
    #[arg(long, value_enum, default_value_t = SignFormat::Bundle)]
    pub(crate) format: SignFormat,
    /// text for people (one line), or json for programs (a document with a schemaVersion).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SignFormat {
    Legacy,
    Bundle,
}

#[derive(clap::Args, Debug)]
pub(crate) struct GenerateArgs {
    /// Write PREFIX.key and PREFIX.pub.
    #[arg(long, default_value = "cosign")]
    pub(crate) output_key_prefix: String,
    /// Replace existing files.
    #[arg(long)]
    pub(crate) force: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// The default `--exclude-namespace` list is what deploy/'s webhook configurations exclude.
    #[test]
    fn default_exclusions_are_deploys() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base");
        for file in ["validatingwebhook.yaml", "mutatingwebhook.yaml"] {
            let text = std::fs::read_to_string(base.join(file)).unwrap();
            let config: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
            for hook in config["webhooks"].as_array().unwrap() {
                let selector = &hook["namespaceSelector"]["matchExpressions"];
                let not_in: Vec<_> = selector
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| {
                        e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn"
                    })
                    .flat_map(|e| e["values"].as_array().unwrap().iter())
                    .map(|v| v.as_str().unwrap())
                    .collect();
                assert_eq!(not_in, super::WEBHOOK_EXCLUDED_NAMESPACES, "{file}");
            }
        }
        assert_eq!(super::excluded_namespace(""), Ok(String::new()));
        assert!(super::namespace("").is_err() && super::namespace("a/b").is_err());
    }

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
}
