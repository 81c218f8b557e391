//! `has()` as the CEL specification (and cel-go) define it, on cel-core 0.5.1. cel-core answers
//! `has(e.f)` false when `e` fails to evaluate (a key missing on the way) or is not a map, where
//! the specification makes it an error: `!has(predicate.scan.result.critical)` held for a
//! predicate with no `scan` at all, or a `scan` that is a string. Each `has(e.f)` is rewritten in
//! the source, before the program is built, to
//! `(type(e) == map ? "f" in e : e.f)`: true or false for a map, `e`'s own error when `e` fails,
//! and "field not found" for anything else. The original expression is what the policy's errors,
//! messages and projection (`facts::Projection`, which reads `has()` tests as field selections)
//! go by. Must not evaluate anything.

use cel_core::{Expr, SpannedExpr};

use super::cost::push_children;

/// The source with every `has(e.f)` of `expr` (the checked AST of `expression`) rewritten; None
/// when there is none. Err(offset) for a `has()` inside another's operand, or a span that does
/// not cut the source at character boundaries (neither is rewritten).
pub(super) fn rewrite(expression: &str, expr: &SpannedExpr) -> Result<Option<String>, usize> {
    let mut tests = Vec::new();
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        if let Expr::MemberTestOnly {
            expr: operand,
            field,
        } = &e.node
        {
            tests.push((e.span.clone(), operand.span.clone(), field.as_str()));
        }
        push_children(e, &mut stack);
    }
    if tests.is_empty() {
        return Ok(None);
    }
    // A macro's expansion may hold one node twice: the same test, by its span.
    tests.sort_by_key(|(span, _, _)| (span.start, span.end));
    tests.dedup_by_key(|(span, _, _)| span.clone());
    if let Some(w) = tests.windows(2).find(|w| w[1].0.start < w[0].0.end) {
        return Err(w[1].0.start);
    }
    let mut out = expression.to_string();
    // From the last, so that the earlier spans still cut the text where they did.
    for (span, operand, field) in tests.iter().rev() {
        let e = expression.get(operand.clone()).ok_or(operand.start)?;
        if expression.get(span.clone()).is_none() {
            return Err(span.start);
        }
        let e = format!("({e})");
        let strict = format!("(type({e}) == map ? {field:?} in {e} : {e}.{field})");
        out.replace_range(span.clone(), &strict);
    }
    Ok(Some(out))
}
