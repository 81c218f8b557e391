//! STUB (lead's branch only, replaced by helper cel's module): the interface of CEL conditions.
//! Must not be merged to main as is.
#![allow(missing_docs, unreachable_pub)]

#[derive(Debug, Clone)]
pub struct Condition {
    expression: String,
    message: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("stub compile error")]
pub struct CompileError {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("stub eval error")]
pub struct EvalError;

#[derive(Debug, thiserror::Error)]
#[error("stub facts error")]
pub struct FactsError;

pub struct Facts;

impl Facts {
    pub fn new(
        _statement: &[u8],
        _signer: &serde_json::Value,
        _now: std::time::SystemTime,
    ) -> Result<Facts, FactsError> {
        Ok(Facts)
    }
}

impl Condition {
    pub fn compile(expression: &str, message: Option<&str>) -> Result<Condition, CompileError> {
        if expression.contains("!!") {
            return Err(CompileError { line: 1, column: 1 });
        }
        Ok(Condition {
            expression: expression.into(),
            message: message.map(Into::into),
        })
    }
    pub fn expression(&self) -> &str {
        &self.expression
    }
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
    pub fn evaluate(&self, _facts: &Facts) -> Result<bool, EvalError> {
        Ok(self.expression == "true")
    }
}
