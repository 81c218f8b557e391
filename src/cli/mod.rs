//! Command line, in two phases as ripgrep does: clap parses the arguments (`args`), a validated
//! plan is built from them (`plan`: files read, policy compiled, registry client configured),
//! then `run` does the work and `output` formats every result. The only module that prints.
//! Exit codes: 0 every reference allowed, 1 at least one denied, 2 usage, configuration or
//! policy-file error. It must not verify, fetch or decide itself: the library does.

mod args;
mod audit;
mod files;
mod manifests;
mod namespace;
mod output;
mod plan;
mod registry;
mod run;
mod signatures;
mod trust_root;

use std::process::ExitCode;

use clap::Parser as _;

use crate::error_chain;

/// A failure that ends the command with exit code 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CliError {
    /// The arguments do not make sense together, or a value is not what its flag takes.
    #[error("{0}")]
    Usage(String),
    /// Reading or writing a file or a standard stream failed; `what` says which.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A policy, key, trusted root or registry setting was refused by the library.
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

/// The `ocigate` command: parse the arguments, run the subcommand, and turn a failure into
/// `error: …` on standard error and exit code 2.
pub fn main() -> ExitCode {
    // `--version` says what `version` says (clap's own flag would print the short form).
    let mut argv = std::env::args_os().skip(1);
    if let (Some(a), None) = (argv.next(), argv.next())
        && (a == "--version" || a == "-V")
    {
        return match output::say(output::version_text()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tell!("error: {}", error_chain(&e));
                ExitCode::from(2)
            }
        };
    }
    let cli = args::Cli::parse();
    if let Some(dir) = cli.tuf_cache_dir {
        crate::trust::set_cache_root(dir);
    }
    match run::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            tell!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}
