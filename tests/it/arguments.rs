//! Range checks are clap's: a value out of range ends the command when the arguments are parsed
//! (exit 2, clap's message), before any policy, key or credential file is read.

use crate::harness::*;

const MISSING_POLICY: &str = "/nonexistent-ocigate-test/policy.yaml";

/// `args` fail at parse time with `message`, and the policy file they name (which does not
/// exist) was never read.
fn refused_at_parse_time(args: &[&str], message: &str) {
    let run = ocigate_exact(args, &[]);
    assert_eq!(run.code, 2, "{args:?}: {run:?}");
    assert!(run.stderr.contains(message), "{args:?}: {run:?}");
    assert!(!run.stderr.contains(MISSING_POLICY), "{args:?}: {run:?}");
    // Not even `-o json`'s error document: the arguments never became a command.
    assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
}

#[test]
fn a_zero_deadline_fails_at_parse_time_before_the_policy_is_read() {
    // The control: an accepted deadline gets as far as reading the (missing) policy.
    let run = ocigate_exact(
        &[
            "verify",
            "localhost:5000/app:v1",
            "--deadline",
            "1",
            "--policy",
            MISSING_POLICY,
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains(MISSING_POLICY), "{run:?}");

    refused_at_parse_time(
        &[
            "verify",
            "localhost:5000/app:v1",
            "--deadline",
            "0",
            "--policy",
            MISSING_POLICY,
        ],
        "invalid value '0' for '--deadline <SECONDS>': 0 is not in 1..=3600",
    );
    refused_at_parse_time(
        &[
            "verify",
            "localhost:5000/app:v1",
            "--deadline",
            "0",
            "--policy",
            MISSING_POLICY,
            "-o",
            "json",
        ],
        "invalid value '0' for '--deadline <SECONDS>': 0 is not in 1..=3600",
    );
}

#[test]
fn every_range_is_checked_at_parse_time() {
    let verify = |flag: &'static str, value: &'static str| {
        vec![
            "verify",
            "localhost:5000/app:v1",
            "--policy",
            MISSING_POLICY,
            flag,
            value,
        ]
    };
    for (args, message) in [
        (
            verify("--deadline", "3601"),
            "invalid value '3601' for '--deadline <SECONDS>': 3601 is not in 1..=3600",
        ),
        (
            verify("--jobs", "0"),
            "invalid value '0' for '--jobs <N>': 0 is not in 1..=256",
        ),
        (
            verify("--jobs", "257"),
            "invalid value '257' for '--jobs <N>': 257 is not in 1..=256",
        ),
        (
            verify("--registry-timeout", "0"),
            "invalid value '0' for '--registry-timeout <SECONDS>': 0 is not in 1..=3600",
        ),
        (
            vec![
                "serve",
                "--policy",
                MISSING_POLICY,
                "--tls-cert",
                "/nonexistent-ocigate-test/tls.crt",
                "--tls-key",
                "/nonexistent-ocigate-test/tls.key",
                "--cache-max-mib",
                "0",
            ],
            "invalid value '0' for '--cache-max-mib <MIB>': 0 is not in 1..=4096",
        ),
    ] {
        refused_at_parse_time(&args, message);
    }
}
