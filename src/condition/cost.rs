//! The upper bound of an evaluation's work, from the checked AST and the sizes of the actual
//! facts, computed before anything runs; and the compile-time check of `matches` patterns.
//!
//! Each node gets a cost and a [`Size`]: bounds on the length of any list, map or string in its
//! value (`len`, `chars`) and on its whole size (`weight`). A fact is bounded by the facts'
//! largest list or map, longest string and total size; a literal by itself; a concatenation by
//! the sum. A node costs 1 plus its children, plus what it touches: `+` the lengths it copies,
//! comparisons the smaller side's weight, `in` the list's weight, string functions the bytes
//! they scan, `matches` its regex compilation per call. A comprehension costs its range, then
//! the range's length bound times its condition and step, then its result; its iteration
//! variable is bounded as an element of the range. cel-core's macros are the only source of
//! comprehensions; those that build a list or a map (`map`, `filter`, `transformList`,
//! `transformMap`) start from a literal `[]`/`{}` and add at most one entry per iteration, which is
//! how their accumulator is bounded (and why cel-core's quadratic copy of it is charged).

use std::collections::HashSet;

use cel_core::{BinaryOp, ComprehensionData, Expr, SpannedExpr};

use super::CompileErrorKind;
use super::facts::Stats;

/// Cost units charged per byte of a `matches` pattern (cel-core compiles it at every call).
const REGEX_COST_PER_PATTERN_BYTE: u64 = 100;
/// Largest compiled size of a `matches` pattern accepted (the `regex` crate's size limit).
const REGEX_SIZE_LIMIT: usize = 256 << 10;

/// The variables bound from the facts.
const FACT_VARIABLES: [&str; 6] = [
    "predicateType",
    "predicate",
    "subject",
    "statement",
    "signer",
    "now",
];

/// Bounds on a value's sizes (saturating).
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    /// Longest list or map in it (itself included).
    len: u64,
    /// Longest string or bytes in it.
    chars: u64,
    /// Its whole size: nodes plus string bytes.
    weight: u64,
}

impl Size {
    const SCALAR: Size = Size {
        len: 0,
        chars: 0,
        weight: 1,
    };

    fn max(self, o: Size) -> Size {
        Size {
            len: self.len.max(o.len),
            chars: self.chars.max(o.chars),
            weight: self.weight.max(o.weight),
        }
    }

    fn sum(self, o: Size) -> Size {
        Size {
            len: self.len.saturating_add(o.len),
            chars: self.chars.saturating_add(o.chars),
            weight: self.weight.saturating_add(o.weight),
        }
    }

    fn text(bytes: usize) -> Size {
        let b = bytes as u64;
        Size {
            len: 0,
            chars: b,
            weight: b.saturating_add(1),
        }
    }
}

/// The bound of evaluating `expr` with facts of these sizes.
pub(super) fn bound(expr: &SpannedExpr, stats: &Stats) -> u64 {
    let fact = Size {
        len: stats.max_len,
        chars: stats.max_str,
        weight: stats.weight,
    };
    let mut walker = Walker {
        fact,
        scope: Vec::new(),
    };
    walker.walk(expr).0
}

/// Walks the AST with the bounds of the variables in scope.
struct Walker {
    fact: Size,
    scope: Vec<(String, Size)>,
}

impl Walker {
    fn variable(&self, name: &str) -> Size {
        if let Some((_, s)) = self.scope.iter().rev().find(|(n, _)| n == name) {
            return *s;
        }
        if FACT_VARIABLES.contains(&name) {
            self.fact
        } else {
            Size::SCALAR
        }
    }

    /// Cost and size of `e`.
    fn walk(&mut self, e: &SpannedExpr) -> (u64, Size) {
        match &e.node {
            Expr::String(s) => (1, Size::text(s.len())),
            Expr::Bytes(b) => (1, Size::text(b.len())),
            Expr::Ident(name) | Expr::RootIdent(name) => (1, self.variable(name)),
            Expr::List(items) => self.list(items.iter().map(|i| &i.expr), items.len()),
            Expr::Map(entries) => {
                let pairs = entries.iter().flat_map(|e| [&e.key, &e.value]);
                self.list(pairs, entries.len())
            }
            Expr::Unary { expr, .. } => (self.walk(expr).0.saturating_add(1), Size::SCALAR),
            Expr::Binary { op, left, right } => self.binary(*op, left, right),
            Expr::Ternary {
                cond,
                then_expr,
                else_expr,
            } => {
                let (c0, _) = self.walk(cond);
                let (c1, s1) = self.walk(then_expr);
                let (c2, s2) = self.walk(else_expr);
                (
                    1u64.saturating_add(c0)
                        .saturating_add(c1)
                        .saturating_add(c2),
                    s1.max(s2),
                )
            }
            Expr::Member { expr, .. } => {
                let (c, s) = self.walk(expr);
                (c.saturating_add(1), s)
            }
            Expr::MemberTestOnly { expr, .. } => {
                (self.walk(expr).0.saturating_add(1), Size::SCALAR)
            }
            Expr::Index { expr, index, .. } => {
                let (c, s) = self.walk(expr);
                let (ci, _) = self.walk(index);
                (c.saturating_add(ci).saturating_add(1), s)
            }
            Expr::Call { expr, args } => self.call(expr, args),
            Expr::Struct { fields, .. } => {
                let mut out = (1u64, Size::SCALAR);
                for f in fields {
                    let (c, s) = self.walk(&f.value);
                    out = (out.0.saturating_add(c), out.1.sum(s));
                }
                out
            }
            Expr::Comprehension(data) => self.comprehension(data),
            Expr::Bind {
                var_name,
                init,
                body,
            } => {
                let (ci, si) = self.walk(init);
                self.scope.push((var_name.clone(), si));
                let (cb, sb) = self.walk(body);
                self.scope.pop();
                (ci.saturating_add(cb).saturating_add(1), sb)
            }
            _ => (1, Size::SCALAR),
        }
    }

    /// A list or map literal of `len` entries, from its keys and values.
    fn list<'e>(
        &mut self,
        items: impl Iterator<Item = &'e SpannedExpr>,
        len: usize,
    ) -> (u64, Size) {
        let mut out = (
            1u64,
            Size {
                len: len as u64,
                chars: 0,
                weight: 1,
            },
        );
        for item in items {
            let (c, s) = self.walk(item);
            out = (out.0.saturating_add(c), grow(out.1, s));
        }
        out
    }

    fn binary(&mut self, op: BinaryOp, left: &SpannedExpr, right: &SpannedExpr) -> (u64, Size) {
        let (cl, l) = self.walk(left);
        let (cr, r) = self.walk(right);
        let base = cl.saturating_add(cr).saturating_add(1);
        match op {
            // Strings and lists are copied whole.
            BinaryOp::Add => {
                let copied = l
                    .len
                    .saturating_add(r.len)
                    .saturating_add(l.chars)
                    .saturating_add(r.chars);
                (base.saturating_add(copied), l.sum(r))
            }
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => (base.saturating_add(l.weight.min(r.weight)), Size::SCALAR),
            BinaryOp::In => (base.saturating_add(r.weight), Size::SCALAR),
            _ => (base, Size::SCALAR),
        }
    }

    fn call(&mut self, function: &SpannedExpr, args: &[SpannedExpr]) -> (u64, Size) {
        let (name, receiver) = match &function.node {
            Expr::Ident(n) | Expr::RootIdent(n) => (n.as_str(), None),
            Expr::Member { expr, field, .. } => (field.as_str(), Some(&**expr)),
            _ => ("", Some(function)),
        };
        let mut cost = 1u64;
        let mut sizes = Vec::with_capacity(args.len() + 1);
        for a in receiver.into_iter().chain(args) {
            let (c, s) = self.walk(a);
            cost = cost.saturating_add(c);
            sizes.push(s);
        }
        let scanned = sizes.iter().fold(0u64, |acc, s| {
            acc.saturating_add(s.chars).saturating_add(s.len)
        });
        let (work, result) = match name {
            "startsWith" | "endsWith" => (sizes.last().map_or(0, |s| s.chars), Size::SCALAR),
            "matches" => {
                let subject = sizes.first().map_or(0, |s| s.chars);
                let pattern = sizes.last().map_or(0, |s| s.chars);
                let compile = pattern.saturating_mul(REGEX_COST_PER_PATTERN_BYTE);
                (subject.saturating_add(compile), Size::SCALAR)
            }
            "size" | "contains" | "int" | "uint" | "double" | "bool" | "timestamp" | "duration" => {
                (scanned, Size::SCALAR)
            }
            n if n.starts_with("get") => (scanned, Size::SCALAR),
            _ => {
                let all = sizes.iter().fold(Size::SCALAR, |acc, s| acc.sum(*s));
                (scanned, all)
            }
        };
        (cost.saturating_add(work), result)
    }

    fn comprehension(&mut self, c: &ComprehensionData) -> (u64, Size) {
        let (c_range, range) = self.walk(&c.iter_range);
        let (c_init, init) = self.walk(&c.accu_init);
        let n = range.len;
        let element = Size {
            len: range.len,
            chars: range.chars,
            weight: range.weight,
        };
        let growing = matches!(c.accu_init.node, Expr::List(_) | Expr::Map(_));
        // The accumulator as it can be at any iteration: `n` entries more than it started with.
        let accu = if growing {
            Size {
                len: init.len.saturating_add(n),
                ..init
            }
        } else {
            init
        };
        let pushed = self.scope.len();
        self.scope.push((c.accu_var.clone(), accu));
        for var in [&c.iter_var, &c.iter_var2] {
            if !var.is_empty() {
                self.scope.push((var.clone(), element));
            }
        }
        let (c_cond, _) = self.walk(&c.loop_condition);
        let (c_step, step) = self.walk(&c.loop_step);
        self.scope.truncate(pushed);
        let final_accu = if growing {
            Size {
                len: accu.len,
                chars: accu.chars.max(step.chars),
                weight: init.weight.saturating_add(n.saturating_mul(step.weight)),
            }
        } else {
            accu.max(step)
        };
        self.scope.push((c.accu_var.clone(), final_accu));
        let (c_result, result) = self.walk(&c.result);
        self.scope.truncate(pushed);
        let per_iteration = c_cond.saturating_add(c_step).saturating_add(1);
        let cost = c_range
            .saturating_add(c_init)
            .saturating_add(n.saturating_mul(per_iteration))
            .saturating_add(c_result);
        (cost, result)
    }
}

/// A container's size after holding `item`.
fn grow(container: Size, item: Size) -> Size {
    Size {
        len: container.len.max(item.len),
        chars: container.chars.max(item.chars),
        weight: container.weight.saturating_add(item.weight),
    }
}

/// Every `matches` takes a string literal pattern that compiles within [`REGEX_SIZE_LIMIT`]; the
/// error's byte offset in the expression and kind otherwise.
pub(super) fn check_patterns(expr: &SpannedExpr) -> Result<(), (usize, CompileErrorKind)> {
    let mut seen = HashSet::new();
    let mut stack = vec![expr];
    while let Some(e) = stack.pop() {
        if let Expr::Call {
            expr: function,
            args,
        } = &e.node
        {
            let is_matches = match &function.node {
                Expr::Ident(n) => n == "matches",
                Expr::Member { field, .. } => field == "matches",
                _ => false,
            };
            if is_matches && let Some(pattern) = args.last() {
                let Expr::String(p) = &pattern.node else {
                    return Err((pattern.span.start, CompileErrorKind::PatternNotLiteral));
                };
                if seen.insert(p.as_str()) {
                    regex::RegexBuilder::new(p)
                        .size_limit(REGEX_SIZE_LIMIT)
                        .build()
                        .map_err(|err| {
                            (
                                pattern.span.start,
                                CompileErrorKind::Pattern(err.to_string()),
                            )
                        })?;
                }
            }
        }
        push_children(e, &mut stack);
    }
    Ok(())
}

/// The direct subexpressions of `e`.
pub(super) fn push_children<'a>(e: &'a SpannedExpr, out: &mut Vec<&'a SpannedExpr>) {
    match &e.node {
        Expr::List(items) => out.extend(items.iter().map(|i| &i.expr)),
        Expr::Map(entries) => {
            for entry in entries {
                out.push(&entry.key);
                out.push(&entry.value);
            }
        }
        Expr::Unary { expr, .. }
        | Expr::Member { expr, .. }
        | Expr::MemberTestOnly { expr, .. } => out.push(expr),
        Expr::Binary { left, right, .. } => out.extend([&**left, &**right]),
        Expr::Ternary {
            cond,
            then_expr,
            else_expr,
        } => out.extend([&**cond, &**then_expr, &**else_expr]),
        Expr::Index { expr, index, .. } => out.extend([&**expr, &**index]),
        Expr::Call { expr, args } => {
            out.push(expr);
            out.extend(args);
        }
        Expr::Struct { type_name, fields } => {
            out.push(type_name);
            out.extend(fields.iter().map(|f| &f.value));
        }
        Expr::Comprehension(c) => out.extend([
            &*c.iter_range,
            &*c.accu_init,
            &*c.loop_condition,
            &*c.loop_step,
            &*c.result,
        ]),
        Expr::Bind { init, body, .. } => out.extend([&**init, &**body]),
        _ => {}
    }
}
