//! Measures a CEL condition on a large SPDX statement: the peak RSS of building the facts and
//! evaluating `predicate.spdxVersion == "SPDX-2.3"`, and the time of conditions near the cost limit.
//!
//!     cargo run --release --example condition_memory -- [whole|project] [PACKAGES]
//!
//! The statement (about 330 bytes a package: 64,000 packages ≈ 20 MiB) is written once to a file
//! in the temporary directory by a child run, so that generating it does not count here.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::time::{Instant, SystemTime};

use ocigate::condition::{COST_LIMIT, Condition, Facts};

fn status(field: &str) -> String {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with(field)).unwrap_or("");
    line.split_whitespace().nth(1).unwrap_or("?").to_owned() + " kB"
}

fn write_statement(path: &std::path::Path, packages: usize) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    write!(
        out,
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"app","digest":{{"sha256":"{}"}}}}],"predicateType":"https://spdx.dev/Document","predicate":{{"spdxVersion":"SPDX-2.3","dataLicense":"CC0-1.0","SPDXID":"SPDXRef-DOCUMENT","name":"app","creationInfo":{{"created":"2026-12-01T00:00:00Z","creators":["Tool: syft"]}},"packages":["#,
        "ab".repeat(32)
    )?;
    for i in 0..packages {
        let sep = if i == 0 { "" } else { "," };
        write!(
            out,
            r#"{sep}{{"SPDXID":"SPDXRef-Package-npm-pkg-{i}-{i:08x}","name":"pkg-{i}","versionInfo":"1.{i}.0","downloadLocation":"NOASSERTION","licenseConcluded":"MIT","licenseDeclared":"MIT","copyrightText":"NOASSERTION","externalRefs":[{{"referenceCategory":"PACKAGE-MANAGER","referenceType":"purl","referenceLocator":"pkg:npm/pkg-{i}@1.{i}.0"}}],"supplier":"NOASSERTION"}}"#
        )?;
    }
    write!(out, "]}}}}")?;
    out.flush()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("project", String::as_str);
    let packages: usize = args.get(2).map_or(Ok(64_000), |s| s.parse())?;
    let path = std::env::temp_dir().join(format!("ocigate-spdx-{packages}.json"));
    if !path.exists() {
        write_statement(&path, packages)?;
        let status = std::process::Command::new(&args[0])
            .args(&args[1..])
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    let signer = serde_json::json!({"authority": "release", "kind": "key"});
    let condition = Condition::compile(r#"predicate.spdxVersion == "SPDX-2.3""#, None)?;
    println!(
        "start: VmRSS {} VmHWM {}",
        status("VmRSS:"),
        status("VmHWM:")
    );
    let statement = std::fs::read(&path)?;
    println!("read {} bytes: VmHWM {}", statement.len(), status("VmHWM:"));
    let start = Instant::now();
    let facts = match mode {
        "whole" => Facts::new(&statement, &signer, SystemTime::now())?,
        _ => Facts::for_conditions(
            &statement,
            &signer,
            SystemTime::now(),
            std::slice::from_ref(&condition),
        )?,
    };
    let outcome = condition.evaluate(&facts);
    println!(
        "{mode}: {outcome:?} in {:?}; VmRSS {} VmHWM {}",
        start.elapsed(),
        status("VmRSS:"),
        status("VmHWM:")
    );
    if mode == "whole" {
        near_the_limit(&facts);
    }
    Ok(())
}

/// Conditions whose cost bound is near the limit, timed.
fn near_the_limit(facts: &Facts) {
    for expr in [
        "predicate.packages.all(p, p.name.startsWith('pkg-'))",
        "predicate.packages.exists(p, p.name == 'none')",
        "predicate.packages.exists_one(p, p.versionInfo == '1.5.0' && p.licenseConcluded == 'MIT')",
        "predicate.packages.all(p, p.externalRefs.all(r, r.referenceType == 'purl'))",
        "predicate.packages.filter(p, p.name == 'pkg-1').size() == 1",
        "predicate.packages.all(p, p.SPDXID.matches('^SPDXRef-'))",
        "predicate.packages.all(x, predicate.packages.all(y, x == y))",
    ] {
        let c = match Condition::compile(expr, None) {
            Ok(c) => c,
            Err(e) => {
                println!("{expr}: {e}");
                continue;
            }
        };
        let start = Instant::now();
        let r = c.evaluate(facts);
        println!(
            "bound {:>12} (limit {COST_LIMIT}) {:>10.3?} {:?}  {expr}",
            c.cost_bound(facts),
            start.elapsed(),
            r.map_err(|e| e.to_string().chars().take(60).collect::<String>())
        );
    }
}
