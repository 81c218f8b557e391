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
#[cfg(test)]
mod tests;

use std::sync::Arc;

use cel_core::{CelType, Env, Program, Value};

pub use facts::{Facts, FactsError};
pub use limits::{MAX_EXPRESSION_BYTES, MAX_NESTING, MAX_OPERATORS};

/// The largest cost bound an evaluation may have (in the units of `condition/cost.rs`: about one
/// AST node evaluated, one list element copied or compared, one byte scanned). As Kubernetes'
/// `PerCallLimit`, 1,000,000: a comprehension over 20,000 packages with a simple body is about
/// 200,000; two nested over 20,000 are 4×10⁸ and refused. The worst case at the limit (a
/// 50,000-element comprehension, each step ~20 units) evaluates in ~0.1 s in a release build.
pub const COST_LIMIT: u64 = 1_000_000;

/// Variables an expression sees, with their declared types.
fn environment() -> Env {
    let dyn_map = CelType::map(CelType::String, CelType::Dyn);
    Env::with_standard_library()
        .with_variable("predicateType", CelType::String)
        .with_variable("predicate", CelType::Dyn)
        .with_variable("subject", CelType::list(CelType::Dyn))
        .with_variable("statement", dyn_map.clone())
        .with_variable("signer", dyn_map)
        .with_variable("now", CelType::Timestamp)
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
        let bound = cost::bound(self.program.ast().expr(), facts.stats());
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
        cost::bound(self.program.ast().expr(), facts.stats())
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
