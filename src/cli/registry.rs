//! The registry client a command uses, from its flags (`RegistryArgs`), the environment and
//! the user's credential files, with cosign's `--allow-insecure-registry` and
//! `--allow-http-registry` for the hosts a command names. Part of the plan: it must not contact
//! a registry.

use std::time::Duration;

use super::args::RegistryArgs;
use super::{CliError, boxed, files};
use crate::reference::ImageRef;
use crate::registry::{Registry, RegistrySettings, TlsFile};

/// The registry client of a one-shot command, with cosign's `--allow-insecure-registry` and
/// `--allow-http-registry` applied to the registries of `refs`.
pub(super) fn registry_for(args: &RegistryArgs, refs: &[&ImageRef]) -> Result<Registry, CliError> {
    registry_with(args, false, &super::signatures::hosts(refs))
}

/// The registry client from flags, the environment and the user's credential files; `watch`
/// (for `serve`) re-reads credential files when they change.
pub(super) fn registry_with(
    args: &RegistryArgs,
    watch: bool,
    ref_hosts: &[String],
) -> Result<Registry, CliError> {
    let attestation_limit = usize::try_from(args.max_attestation_bytes).unwrap_or(usize::MAX);
    Ok(Registry::new(registry_settings(args, watch, ref_hosts)?)
        .with_max_attestation_bytes(attestation_limit))
}

/// The settings of [`registry_with`]'s client.
pub(super) fn registry_settings(
    args: &RegistryArgs,
    watch: bool,
    ref_hosts: &[String],
) -> Result<RegistrySettings, CliError> {
    let mut s = RegistrySettings::default();
    for c in &args.creds {
        s.add_credentials_flag(c).map_err(boxed)?;
    }
    for f in &args.creds_files {
        let (text, origin) = files::read_creds_file(f)?;
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
            tell!("note: {label}: no such file; no credentials from it");
        }
        // A file named on the command line that does not parse is a configuration error now,
        // not a denial later.
        if let Err(e) = s.add_auth_file(f.clone(), label, watch).config() {
            return Err(boxed(e));
        }
    }
    s.timeout = Duration::from_secs(args.timeout);
    s.max_connections_per_host = usize::from(args.registry_max_connections);
    Ok(s)
}
