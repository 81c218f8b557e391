//! CEL conditions on a verified in-toto statement: compiled and type-checked once, evaluated under
//! a cost bound. A pure core: no I/O, nothing of verification, policy or the engine.
//!
//! The CEL implementation is `cel-core` (crates.io, cel-go's architecture), chosen over `cel`
//! (cel-rust) and `rscel` because it is the only one with a type checker over declared variables
//! (an `Env` as in cel-go): a policy's `predicateType + 1`, an undeclared `foo` or a non-bool
//! result is refused when the policy loads, with the span of the fault. It has the standard macros
//! (`has`, `all`, `exists`, `exists_one`, `map`, `filter`), timestamps and durations, the string
//! functions (`matches` on the linear-time `regex` crate) and a small dependency set (chrono,
//! logos, regex). `cel` 0.15 parses and evaluates but checks no types (its parser pulls in an
//! ANTLR runtime); `rscel` neither checks declared types nor is light (protobuf, a vendored
//! `protoc` at build time). None of the three has a cost limit or an interruption (cel-rust's issue
//! 56 is still open), so the bound is ours ([`COST_LIMIT`], in `condition/cost.rs`): before an
//! evaluation, the checked AST is walked with the sizes of the actual facts (the longest list or
//! map, the longest string, the total size) and an upper bound of the work is computed: a
//! comprehension costs its body times the length bound of its range, concatenation and
//! comparison cost the sizes they touch, a `matches` its regex compilation. An expression whose
//! bound exceeds the limit is refused without being run; the time bound follows from it
//! (measured: see `COST_LIMIT`). The parser and checker recurse, so the expression's length,
//! bracket nesting and operator count are bounded before they run (`condition/limits.rs`).

mod cost;
mod facts;
mod limits;
mod strict_has;

use std::sync::Arc;

use cel_core::{CelType, Env, Program, Value};

pub use facts::{Facts, FactsError};
pub use limits::{MAX_EXPRESSION_BYTES, MAX_NESTING, MAX_OPERATORS};

/// The largest cost bound an evaluation may have (in the units of `condition/cost.rs`: about one
/// AST node evaluated, one list element copied or compared, one byte scanned). As Kubernetes'
/// `PerCallLimit`, 1,000,000: a comprehension over 20,000 packages with a simple body is about
/// 250,000; two nested over 20,000 are over 10⁸ and refused without running. Measured (release
/// build): cel-core's comprehensions are the slowest work per unit (~4 µs an iteration, ~0.35 µs
/// a unit), so an evaluation at the limit takes about 0.35 s; a refusal takes microseconds.
pub const COST_LIMIT: u64 = 1_000_000;

/// Variables an expression sees, with their declared types: the standard library and the six
/// variables, built once per process (a copy of cel-core's whole function table) and shared by
/// every condition a policy, or a reloaded policy, compiles.
fn environment() -> &'static Env {
    static ENV: std::sync::LazyLock<Env> = std::sync::LazyLock::new(|| {
        let dyn_map = CelType::map(CelType::String, CelType::Dyn);
        Env::with_standard_library()
            .with_variable("predicateType", CelType::String)
            .with_variable("predicate", CelType::Dyn)
            .with_variable("subject", CelType::list(CelType::Dyn))
            .with_variable("statement", dyn_map.clone())
            .with_variable("signer", dyn_map)
            .with_variable("now", CelType::Timestamp)
    });
    &ENV
}

/// A compiled, type-checked condition and the message a false outcome reports.
#[derive(Clone)]
pub struct Condition {
    expression: Arc<str>,
    message: Option<Arc<str>>,
    program: Arc<Program>,
    projection: facts::Projection,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition")
            .field("expression", &self.expression)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl Condition {
    /// Compile and type-check `expression`; `message` is what a false outcome says.
    pub fn compile(expression: &str, message: Option<&str>) -> Result<Condition, CompileError> {
        limits::check(expression)?;
        let env = environment();
        let ast = env
            .compile(expression)
            .map_err(|e| CompileError::from_cel(expression, &e))?;
        if let Some(found) = ast.result_type()
            && !matches!(found, CelType::Bool | CelType::Dyn)
        {
            return Err(CompileError::at(
                expression,
                0,
                CompileErrorKind::NotBool {
                    found: found.display_name(),
                },
            ));
        }
        cost::check_patterns(ast.expr())
            .map_err(|(at, kind)| CompileError::at(expression, at, kind))?;
        let projection = facts::Projection::of(ast.expr());
        let strict = strict_has::rewrite(expression, ast.expr())
            .map_err(|at| CompileError::at(expression, at, CompileErrorKind::NestedHas))?;
        let ast = match strict {
            // The rewritten text is checked again: it cannot fail where the original did not.
            Some(text) => env.compile(&text).map_err(|e| {
                CompileError::at(expression, 0, CompileErrorKind::Check(e.to_string()))
            })?,
            None => ast,
        };
        let program = env
            .program(&ast)
            .map_err(|e| CompileError::from_cel(expression, &e))?;
        Ok(Condition {
            expression: expression.into(),
            message: message.map(Into::into),
            program: Arc::new(program),
            projection,
        })
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// What a false outcome says, when the policy gave a message.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// Ok(true)/Ok(false), or Err when refused (cost limit, a runtime error such as a missing key
    /// or a type mismatch at runtime, a non-bool result): an Err never counts as true.
    pub fn evaluate(&self, facts: &Facts) -> Result<bool, EvalError> {
        let bound = cost::bound(self.program.ast().expr(), facts);
        if bound > COST_LIMIT {
            return Err(EvalError::CostLimit {
                bound,
                limit: COST_LIMIT,
            });
        }
        match self.program.eval(facts.activation()) {
            Value::Bool(b) => Ok(b),
            Value::Error(e) => Err(EvalError::Runtime {
                message: e.message.clone(),
            }),
            other => Err(EvalError::NotBool {
                found: other.cel_type().display_name(),
            }),
        }
    }

    /// The upper bound of the work evaluating this condition on `facts` would take (what
    /// [`Condition::evaluate`] compares with [`COST_LIMIT`]).
    pub fn cost_bound(&self, facts: &Facts) -> u64 {
        cost::bound(self.program.ast().expr(), facts)
    }
}

/// Why an expression was refused when the policy loads: where (1-based line and column within
/// the expression text, in characters) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("condition {line}:{column}: {kind}")]
#[non_exhaustive]
pub struct CompileError {
    /// 1-based line within the expression.
    pub line: usize,
    /// 1-based column (in characters) within the line.
    pub column: usize,
    /// What is wrong there.
    pub kind: CompileErrorKind,
}

/// What is wrong with an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileErrorKind {
    /// Longer than [`MAX_EXPRESSION_BYTES`].
    #[error("expression of {len} bytes is longer than the limit of {limit}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Brackets nested deeper than [`MAX_NESTING`].
    #[error("brackets nested deeper than the limit of {limit}")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// More operators than [`MAX_OPERATORS`].
    #[error("more than {limit} operators")]
    TooManyOperators {
        /// The limit.
        limit: usize,
    },
    /// Not CEL syntax.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// An undeclared variable, a type error, an unknown function.
    #[error("{0}")]
    Check(String),
    /// The expression's type is known and is not bool.
    #[error("the expression is of type {found}, not bool")]
    NotBool {
        /// The type it has.
        found: String,
    },
    /// `matches` with a pattern that is not a string literal (its cost could not be bounded).
    #[error("matches() takes a string literal as its pattern")]
    PatternNotLiteral,
    /// A `matches` pattern that is not a valid regular expression or compiles too large.
    #[error("invalid regular expression: {0}")]
    Pattern(String),
    /// A `has()` inside another `has()`'s operand (`condition/strict_has.rs` cannot make it
    /// strict).
    #[error("has() inside the operand of another has() is not supported")]
    NestedHas,
}

impl CompileError {
    /// The error at byte offset `at` of `expression`.
    fn at(expression: &str, at: usize, kind: CompileErrorKind) -> Self {
        let (line, column) = limits::line_column(expression, at);
        CompileError { line, column, kind }
    }

    /// The first error cel-core reported, at its span's start.
    fn from_cel(expression: &str, e: &cel_core::CompileError) -> Self {
        match e {
            cel_core::CompileError::Parse(errors) => match errors.first() {
                Some(p) => Self::at(
                    expression,
                    p.span.start,
                    CompileErrorKind::Syntax(p.message.clone()),
                ),
                None => Self::at(expression, 0, CompileErrorKind::Syntax(e.to_string())),
            },
            cel_core::CompileError::Check(errors) => match errors.first() {
                Some(c) => Self::at(
                    expression,
                    c.span.start,
                    CompileErrorKind::Check(c.kind.to_string()),
                ),
                None => Self::at(expression, 0, CompileErrorKind::Check(e.to_string())),
            },
            _ => Self::at(expression, 0, CompileErrorKind::Check(e.to_string())),
        }
    }
}

/// Why a condition was refused at evaluation: never counts as true.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The upper bound of its work on these facts exceeds [`COST_LIMIT`]; not evaluated.
    #[error(
        "condition refused: cost limit of {limit} exceeded (bound {bound} on this statement; \
         nested comprehensions over large lists cost their product)"
    )]
    CostLimit {
        /// The bound computed for this expression on these facts.
        bound: u64,
        /// The limit.
        limit: u64,
    },
    /// A runtime error: a missing key, a type mismatch, a bad timestamp.
    #[error("condition could not be evaluated: {message}")]
    Runtime {
        /// cel-core's message.
        message: String,
    },
    /// The result was not a bool.
    #[error("condition could not be evaluated: the result is of type {found}, not bool")]
    NotBool {
        /// The type it had.
        found: String,
    },
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use serde_json::{Value as Json, json};

    use super::*;

    /// 2026-12-03T12:00:00Z.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_299_200)
    }

    fn key_signer() -> Json {
        json!({"authority": "release", "kind": "key", "keyFingerprint": "sha256:0123abcd"})
    }

    fn keyless_signer() -> Json {
        json!({
            "authority": "github",
            "kind": "keyless",
            "identity": "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main",
            "issuer": "https://token.actions.githubusercontent.com",
            "github": {"trigger": "push", "sha": "4f2c", "name": "release", "repository": "acme/app",
                       "ref": "refs/heads/main"}
        })
    }

    fn statement(predicate_type: &str, predicate: Json) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "ghcr.io/acme/app", "digest": {"sha256": "ab".repeat(32)}}],
            "predicateType": predicate_type,
            "predicate": predicate,
        }))
        .unwrap()
    }

    /// SLSA v1 provenance as GitHub Actions' generator writes it.
    fn slsa_v1() -> Vec<u8> {
        statement(
            "https://slsa.dev/provenance/v1",
            json!({
                "buildDefinition": {
                    "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                    "externalParameters": {"workflow": {
                        "ref": "refs/heads/main",
                        "repository": "https://github.com/acme/app",
                        "path": ".github/workflows/release.yml"
                    }},
                    "internalParameters": {"github": {"event_name": "push", "repository_id": "123"}},
                    "resolvedDependencies": [{"uri": "git+https://github.com/acme/app@refs/heads/main",
                                              "digest": {"gitCommit": "4f2c"}}]
                },
                "runDetails": {
                    "builder": {"id": "https://github.com/actions/runner/github-hosted"},
                    "metadata": {"invocationId": "https://github.com/acme/app/actions/runs/1/attempts/1"}
                }
            }),
        )
    }

    fn vuln(age_days: u64, severities: &[&str]) -> Vec<u8> {
        let finished = time_string(now() - Duration::from_secs(age_days * 86_400));
        let results: Vec<Json> = severities
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"id": format!("CVE-2026-{i}"), "severity": s}))
            .collect();
        statement(
            "https://cosign.sigstore.dev/attestation/vuln/v1",
            json!({
                "invocation": {"uri": "", "event_id": ""},
                "scanner": {"uri": "pkg:github/aquasecurity/trivy@0.58.0", "version": "0.58.0",
                            "result": {"Results": [{"Vulnerabilities": results}]}},
                "metadata": {"scanStartedOn": finished, "scanFinishedOn": finished}
            }),
        )
    }

    fn time_string(t: SystemTime) -> String {
        let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let dt = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
        dt.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    }

    fn spdx(packages: usize) -> Vec<u8> {
        let packages: Vec<Json> = (0..packages)
            .map(|i| {
                json!({"SPDXID": format!("SPDXRef-Package-{i}"), "name": format!("pkg-{i}"),
                            "versionInfo": "1.0.0", "licenseConcluded": "MIT"})
            })
            .collect();
        statement(
            "https://spdx.dev/Document",
            json!({"spdxVersion": "SPDX-2.3", "name": "app", "dataLicense": "CC0-1.0",
                   "creationInfo": {"created": "2026-12-01T00:00:00Z"}, "packages": packages}),
        )
    }

    fn eval(expr: &str, statement: &[u8], signer: &Json) -> Result<bool, EvalError> {
        let c = Condition::compile(expr, None).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let whole = c.evaluate(&Facts::new(statement, signer, now()).unwrap());
        let projected =
            Facts::for_conditions(statement, signer, now(), std::slice::from_ref(&c)).unwrap();
        assert_eq!(
            whole,
            c.evaluate(&projected),
            "projection changed the outcome of {expr}"
        );
        whole
    }

    #[test]
    fn condition_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + std::fmt::Debug>() {}
        check::<Condition>();
        fn facts<T: Send + Sync>() {}
        facts::<Facts>();
    }

    /// Only UTC and the Etc/ zones are compiled in (Cargo.toml, chrono-tz): a named zone
    /// outside them is an evaluation error, never true.
    #[test]
    fn time_zones_are_utc_and_etc_only() {
        let s = br#"{"predicate":{"t":"2026-12-01T10:00:00Z"}}"#;
        let signer = key_signer();
        let hours = |zone: &str| {
            eval(
                &format!("timestamp(predicate.t).getHours('{zone}') == 10"),
                s,
                &signer,
            )
        };
        assert!(hours("UTC").unwrap());
        let e = eval(
            "timestamp(predicate.t).getHours('Etc/GMT-1') == 11",
            s,
            &signer,
        );
        assert!(e.unwrap());
        assert!(hours("Europe/Berlin").is_err());
    }

    #[test]
    fn slsa_v1_provenance_from_github_actions() {
        let s = slsa_v1();
        let signer = key_signer();
        let wf = "predicate.buildDefinition.externalParameters.workflow";
        let good = format!(
            "{wf}.repository == 'https://github.com/acme/app' && {wf}.ref == 'refs/heads/main' \
             && {wf}.path.startsWith('.github/workflows/') \
             && predicate.runDetails.builder.id == 'https://github.com/actions/runner/github-hosted'"
        );
        assert_eq!(eval(&good, &s, &signer), Ok(true));
        let other = format!("{wf}.repository == 'https://github.com/acme/other'");
        assert_eq!(eval(&other, &s, &signer), Ok(false));
        let tag = format!("{wf}.ref.matches('^refs/tags/v[0-9]+')");
        assert_eq!(eval(&tag, &s, &signer), Ok(false));
        let dep =
            "predicate.buildDefinition.resolvedDependencies.exists(d, d.uri.contains('acme/app'))";
        assert_eq!(eval(dep, &s, &signer), Ok(true));
        assert_eq!(
            eval(
                "predicateType == 'https://slsa.dev/provenance/v1'",
                &s,
                &signer
            ),
            Ok(true)
        );
        assert_eq!(
            eval(
                "subject.exists(x, x.digest.sha256.size() == 64)",
                &s,
                &signer
            ),
            Ok(true)
        );
        assert_eq!(
            eval("statement._type.endsWith('/v1')", &s, &signer),
            Ok(true)
        );
    }

    #[test]
    fn vulnerability_scan_younger_than_seven_days_without_critical() {
        let expr = "now - timestamp(predicate.metadata.scanFinishedOn) < duration('168h') && \
                    !predicate.scanner.result.Results.exists(r, \
                        r.Vulnerabilities.exists(v, v.severity == 'CRITICAL'))";
        let signer = key_signer();
        assert_eq!(eval(expr, &vuln(3, &["LOW", "HIGH"]), &signer), Ok(true));
        assert_eq!(eval(expr, &vuln(10, &["LOW"]), &signer), Ok(false));
        assert_eq!(
            eval(expr, &vuln(1, &["LOW", "CRITICAL"]), &signer),
            Ok(false)
        );
    }

    #[test]
    fn spdx_sbom_exists() {
        let expr = "predicateType == 'https://spdx.dev/Document' && predicate.spdxVersion.startsWith('SPDX-2.') \
                    && size(predicate.packages) > 0";
        assert_eq!(eval(expr, &spdx(3), &key_signer()), Ok(true));
        assert_eq!(eval(expr, &spdx(0), &key_signer()), Ok(false));
        assert_eq!(
            eval("has(predicate.documentNamespace)", &spdx(1), &key_signer()),
            Ok(false)
        );
    }

    #[test]
    fn signer_facts() {
        let s = slsa_v1();
        let keyless = "signer.kind == 'keyless' && signer.github.repository == 'acme/app' \
                       && signer.github.ref == 'refs/heads/main' \
                       && signer.issuer == 'https://token.actions.githubusercontent.com'";
        assert_eq!(eval(keyless, &s, &keyless_signer()), Ok(true));
        assert_eq!(
            eval("signer.kind == 'keyless'", &s, &key_signer()),
            Ok(false)
        );
        assert_eq!(
            eval(
                "signer.authority == 'release' && signer.keyFingerprint.startsWith('sha256:')",
                &s,
                &key_signer()
            ),
            Ok(true)
        );
        // A key-based signer has no `github`: an error, never a true.
        let missing = eval("signer.github.repository == 'acme/app'", &s, &key_signer());
        assert!(
            matches!(missing, Err(EvalError::Runtime { .. })),
            "{missing:?}"
        );
        let text = missing.unwrap_err().to_string();
        assert!(
            text.starts_with("condition could not be evaluated: "),
            "{text}"
        );
        assert!(text.contains("github"), "{text}");
    }

    #[test]
    fn compile_errors_carry_line_and_column() {
        let e = Condition::compile("predicateType == 'x' &&\n  foo == 1", None).unwrap_err();
        assert_eq!((e.line, e.column), (2, 3), "{e}");
        assert!(matches!(e.kind, CompileErrorKind::Check(_)), "{e}");
        assert!(e.to_string().contains("foo"), "{e}");

        let e = Condition::compile("predicateType + 1 == 'a'", None).unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        assert!(matches!(e.kind, CompileErrorKind::Check(_)), "{e}");

        let e = Condition::compile("predicate.a ==\n\n   (1 +", None).unwrap_err();
        assert!(matches!(e.kind, CompileErrorKind::Syntax(_)), "{e}");
        assert_eq!(e.line, 3, "{e}");

        let e = Condition::compile("now < 'yesterday'", None).unwrap_err();
        assert!(matches!(e.kind, CompileErrorKind::Check(_)), "{e}");

        let e = Condition::compile("predicateType.matches(predicate.pattern)", None).unwrap_err();
        assert_eq!(e.kind, CompileErrorKind::PatternNotLiteral);
        assert_eq!((e.line, e.column), (1, 23));
        let e = Condition::compile("predicateType.matches('(')", None).unwrap_err();
        assert!(matches!(e.kind, CompileErrorKind::Pattern(_)), "{e}");
        let e = Condition::compile(r"predicateType.matches('\\w{1000}{1000}')", None).unwrap_err();
        assert!(matches!(e.kind, CompileErrorKind::Pattern(_)), "{e}");
    }

    #[test]
    fn non_bool_expressions_are_refused() {
        let e = Condition::compile("1 + 2", None).unwrap_err();
        assert!(matches!(e.kind, CompileErrorKind::NotBool { .. }), "{e}");
        let e = Condition::compile("predicateType", None).unwrap_err();
        assert!(matches!(e.kind, CompileErrorKind::NotBool { .. }), "{e}");
        // Known only at evaluation: `predicate.spdxVersion` is dyn.
        let r = eval("predicate.spdxVersion", &spdx(1), &key_signer());
        assert!(matches!(r, Err(EvalError::NotBool { .. })), "{r:?}");
    }

    #[test]
    fn message_and_expression_are_kept() {
        let c = Condition::compile("predicateType != ''", Some("has a type")).unwrap();
        assert_eq!(c.expression(), "predicateType != ''");
        assert_eq!(c.message(), Some("has a type"));
        assert_eq!(Condition::compile("true", None).unwrap().message(), None);
    }

    /// Lists a `map` puts into its result keep their lengths in the bound: iterating them after
    /// the map is counted (the bound was 18,060 for 4 million iterations, about 1.2 s, and
    /// 2,071 for 8·10⁹ with one more level).
    #[test]
    fn lists_mapped_into_a_list_keep_their_lengths_in_the_bound() {
        let big: Vec<u32> = (0..2_000).collect();
        let s = statement("https://example.com/t", json!({"big": big}));
        let facts = Facts::new(&s, &key_signer(), now()).unwrap();
        for e in [
            "[1].map(x, predicate.big).all(y, y.all(z, predicate.big.all(w, w >= 0)))",
            "[1].map(x, predicate.big).all(y, y.all(a, y.all(b, y.all(c, true))))",
        ] {
            let c = Condition::compile(e, None).unwrap();
            assert!(
                c.cost_bound(&facts) > COST_LIMIT,
                "{e}: {}",
                c.cost_bound(&facts)
            );
            assert!(
                matches!(c.evaluate(&facts), Err(EvalError::CostLimit { .. })),
                "{e}"
            );
        }
        // The bound is one length for the list and the lists in it (it over-counts here, never
        // under): over 100 it is run.
        let small: Vec<u32> = (0..100).collect();
        let s = statement("https://example.com/t", json!({"small": small}));
        let facts = Facts::new(&s, &key_signer(), now()).unwrap();
        let fine = "[1].map(x, predicate.small).all(y, y.all(z, z >= 0))";
        let fine = Condition::compile(fine, None).unwrap();
        assert_eq!(fine.evaluate(&facts), Ok(true));
    }

    #[test]
    fn nested_comprehension_over_20000_is_refused_quickly() {
        let a: Vec<u32> = (0..20_000).collect();
        let s = statement("https://example.com/t", json!({"a": a}));
        let facts = Facts::new(&s, &key_signer(), now()).unwrap();
        let nested =
            Condition::compile("predicate.a.all(x, predicate.a.all(y, x == y))", None).unwrap();
        let start = Instant::now();
        let r = nested.evaluate(&facts);
        let took = start.elapsed();
        assert!(matches!(r, Err(EvalError::CostLimit { .. })), "{r:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        let text = r.unwrap_err().to_string();
        assert!(
            text.starts_with("condition refused: cost limit of 1000000 exceeded"),
            "{text}"
        );

        // One comprehension over the 20,000 with a simple body is allowed.
        let single = Condition::compile("predicate.a.all(x, x >= 0 && x < 20000)", None).unwrap();
        assert!(
            single.cost_bound(&facts) <= COST_LIMIT,
            "{}",
            single.cost_bound(&facts)
        );
        assert_eq!(single.evaluate(&facts), Ok(true));
        let exists = Condition::compile("predicate.a.exists(x, x == 19999)", None).unwrap();
        assert_eq!(exists.evaluate(&facts), Ok(true));
        // cel-core copies a `map`/`filter` accumulator at every step: quadratic, refused at 20,000.
        let map = Condition::compile("predicate.a.map(x, x + 1).size() == 20000", None).unwrap();
        assert!(matches!(
            map.evaluate(&facts),
            Err(EvalError::CostLimit { .. })
        ));
        // …but not over a short list.
        assert_eq!(
            eval(
                "subject.map(x, x.name).size() == 1",
                &slsa_v1(),
                &key_signer()
            ),
            Ok(true)
        );
    }

    #[test]
    fn nested_comprehension_bounded_by_the_lists_it_actually_ranges_over() {
        // 20,000 packages of one reference each, beside a 20,000-element list: the inner
        // comprehension ranges over one element, not over the longest list in the facts.
        let packages: Vec<Json> = (0..20_000)
            .map(|i| json!({"name": format!("pkg-{i}"), "refs": [{"type": "purl"}]}))
            .collect();
        let s = statement(
            "https://spdx.dev/Document",
            json!({"packages": packages, "big": vec![0; 20_000]}),
        );
        let facts = Facts::new(&s, &key_signer(), now()).unwrap();
        let c = Condition::compile(
            "predicate.packages.all(p, p.refs.all(r, r.type == 'purl'))",
            None,
        )
        .unwrap();
        assert!(
            c.cost_bound(&facts) <= COST_LIMIT,
            "{}",
            c.cost_bound(&facts)
        );
        assert_eq!(c.evaluate(&facts), Ok(true));
        // A dynamic index or a ternary keeps what it can reach.
        let c = Condition::compile(
            "predicate.packages.all(p, (p.name == 'x' ? predicate.big : p.refs).all(r, r != 1))",
            None,
        )
        .unwrap();
        assert!(matches!(
            c.evaluate(&facts),
            Err(EvalError::CostLimit { .. })
        ));
        let c = Condition::compile(
            "predicate.packages.all(p, predicate[p.name].all(r, true))",
            None,
        )
        .unwrap();
        assert!(matches!(
            c.evaluate(&facts),
            Err(EvalError::CostLimit { .. })
        ));
        let c = Condition::compile(
            "predicate.packages.all(p, cel.bind(b, predicate.big, b.all(r, true)))",
            None,
        )
        .unwrap();
        assert!(matches!(
            c.evaluate(&facts),
            Err(EvalError::CostLimit { .. })
        ));
        // Shadowing: an iteration variable named like a fact is the element, not the fact.
        let c = Condition::compile(
            "predicate.packages.all(predicate, predicate.refs.size() == 1)",
            None,
        )
        .unwrap();
        assert_eq!(c.evaluate(&facts), Ok(true));
    }

    #[test]
    fn concatenation_cannot_escape_the_bound() {
        let a: Vec<u32> = (0..1_000).collect();
        let s = statement("https://example.com/t", json!({"a": a}));
        let facts = Facts::new(&s, &key_signer(), now()).unwrap();
        let l = "(predicate.a + predicate.a + predicate.a + predicate.a)";
        let c = Condition::compile(&format!("{l}.all(x, {l}.all(y, x == y))"), None).unwrap();
        assert!(
            c.cost_bound(&facts) >= 16_000_000,
            "{}",
            c.cost_bound(&facts)
        );
        assert!(matches!(
            c.evaluate(&facts),
            Err(EvalError::CostLimit { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_refused_at_compile_time() {
        let parens = format!("{}true{}", "(".repeat(5_000), ")".repeat(5_000));
        let e = Condition::compile(&parens, None).unwrap_err();
        assert_eq!(e.kind, CompileErrorKind::TooDeep { limit: MAX_NESTING });
        assert_eq!((e.line, e.column), (1, MAX_NESTING + 1));
        let nots = format!("{}true", "!".repeat(5_000));
        let e = Condition::compile(&nots, None).unwrap_err();
        assert_eq!(
            e.kind,
            CompileErrorKind::TooManyOperators {
                limit: MAX_OPERATORS
            }
        );
        let chain = format!("1{} == 1", " + 1".repeat(3_000));
        assert!(matches!(
            Condition::compile(&chain, None).unwrap_err().kind,
            CompileErrorKind::TooManyOperators { .. }
        ));
        let long = format!("predicateType == '{}'", "a".repeat(MAX_EXPRESSION_BYTES));
        assert!(matches!(
            Condition::compile(&long, None).unwrap_err().kind,
            CompileErrorKind::TooLong { .. }
        ));
        // Brackets and operators inside strings and comments do not count; a raw string ends at its quote.
        let quoted = format!(
            "predicateType != '{}' // {}\n",
            "((((!".repeat(100),
            ")".repeat(100)
        );
        assert!(Condition::compile(&quoted, None).is_ok());
        let raw = format!("r'\\' != '' && {}true{}", "(".repeat(30), ")".repeat(30));
        assert!(matches!(
            Condition::compile(&raw, None).unwrap_err().kind,
            CompileErrorKind::TooDeep { .. }
        ));
        // At the limits, the parser, checker and evaluator stay within a test thread's stack.
        let edge = format!(
            "{}{}true{}",
            "[1].all(x, ".repeat(MAX_NESTING / 2),
            "!".repeat(MAX_OPERATORS - MAX_NESTING),
            ")".repeat(MAX_NESTING / 2)
        );
        assert_eq!(eval(&edge, &slsa_v1(), &key_signer()), Ok(true));
    }

    #[test]
    fn projection_keeps_what_is_referenced() {
        let c = Condition::compile("predicate.spdxVersion == 'SPDX-2.3'", None).unwrap();
        assert_eq!(
            c.projection,
            facts::Projection::Fields(["spdxVersion".to_owned()].into())
        );
        let c = Condition::compile(
            "statement.predicate.name == 'app' && has(predicate.creationInfo)",
            None,
        )
        .unwrap();
        assert_eq!(
            c.projection,
            facts::Projection::Fields(["creationInfo".to_owned(), "name".to_owned()].into())
        );
        for whole in [
            "size(predicate) > 2",
            "predicate['packages'] != []",
            "statement.predicate != {}",
            "predicate.exists(k, k == 'x')",
            "size(statement) == 4",
        ] {
            let c = Condition::compile(whole, None).unwrap();
            assert_eq!(c.projection, facts::Projection::Whole, "{whole}");
        }
        // Outcomes equal (eval() compares Facts::new with Facts::for_conditions).
        let s = spdx(5);
        assert_eq!(eval("size(predicate) == 5", &s, &key_signer()), Ok(true));
        assert_eq!(
            eval("predicate['spdxVersion'] == 'SPDX-2.3'", &s, &key_signer()),
            Ok(true)
        );
        assert_eq!(
            eval("predicate.spdxVersion == 'SPDX-2.3'", &s, &key_signer()),
            Ok(true)
        );
        assert!(
            eval(
                "predicate.packages.size() == predicate.nothing",
                &s,
                &key_signer()
            )
            .is_err()
        );
        // Several conditions: the union.
        let cs = [
            Condition::compile("predicate.spdxVersion == 'SPDX-2.3'", None).unwrap(),
            Condition::compile("predicate.name == 'app'", None).unwrap(),
        ];
        let f = Facts::for_conditions(&s, &key_signer(), now(), &cs).unwrap();
        assert!(cs.iter().all(|c| c.evaluate(&f) == Ok(true)));
    }

    #[test]
    fn facts_refuse_what_is_not_a_statement() {
        assert!(Facts::new(b"[1]", &key_signer(), now()).is_err());
        assert!(Facts::new(b"{\"a\": 1} x", &key_signer(), now()).is_err());
        assert!(Facts::new(&slsa_v1(), &json!("text"), now()).is_err());
        let deep = format!(
            "{{\"predicate\": {}1{}}}",
            "[".repeat(1_000),
            "]".repeat(1_000)
        );
        assert!(Facts::new(deep.as_bytes(), &key_signer(), now()).is_err());
    }

    /// `has(e.f)` is an error when `e` is: a key missing on the way, or not a map (the CEL
    /// specification, cel-go), never `false`, so `!has(...)` cannot hold for data that is not
    /// there; for a map it is presence, as before.
    #[test]
    fn has_is_strict_about_what_it_selects_from() {
        let t = "https://example.com/scan";
        let never = "!has(predicate.scanner.result.critical)";
        for missing in [
            json!({}),
            json!({"scanner": null}),
            json!({"scanner": "failed"}),
            json!({"scanner": {"result": [1]}}),
        ] {
            let r = eval(never, &statement(t, missing.clone()), &key_signer());
            assert!(
                matches!(r, Err(EvalError::Runtime { .. })),
                "{missing}: {r:?}"
            );
        }
        let clean = json!({"scanner": {"result": {"high": 2}}});
        assert_eq!(eval(never, &statement(t, clean), &key_signer()), Ok(true));
        let found = json!({"scanner": {"result": {"critical": 1}}});
        assert_eq!(eval(never, &statement(t, found), &key_signer()), Ok(false));
        // On the predicate itself, and the guard idiom, as before.
        assert_eq!(
            eval("has(predicate.x)", &statement(t, json!({})), &key_signer()),
            Ok(false)
        );
        let guarded = "has(predicate.scanner) && has(predicate.scanner.result)";
        assert_eq!(
            eval(guarded, &statement(t, json!({})), &key_signer()),
            Ok(false)
        );
        // In a comprehension, after text that is not ASCII (spans are byte offsets).
        let all = "'é' != '' && predicate.packages.all(p, has(p.name))";
        let some = json!({"packages": [{"name": "a"}, {}]});
        assert_eq!(eval(all, &statement(t, some), &key_signer()), Ok(false));
        let odd = json!({"packages": [{"name": "a"}, "b"]});
        let r = eval(all, &statement(t, odd), &key_signer());
        assert!(matches!(r, Err(EvalError::Runtime { .. })), "{r:?}");
        let e = Condition::compile("has(predicate.l.filter(x, has(x.b))[0].c)", None);
        assert!(
            matches!(
                e,
                Err(CompileError {
                    kind: CompileErrorKind::NestedHas,
                    ..
                })
            ),
            "{e:?}"
        );
    }
}
