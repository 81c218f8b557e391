//! The upper bound of an evaluation's work, from the checked AST and the actual facts, computed
//! before anything runs; and the compile-time check of `matches` patterns.
//!
//! Each node gets a cost and a [`Size`]: bounds on the length of any list, map or string in its
//! value (`len`, `chars`) and on its whole size (`weight`). A fact is bounded by the facts'
//! largest list or map, longest string and total size; a literal by itself; a concatenation by
//! the sum. A node costs 1 plus its children, plus what it touches: `+` the lengths it copies,
//! comparisons the smaller side's weight, `in` the list's weight, string functions the bytes
//! they scan, `matches` its regex compilation per call. A comprehension costs its range, then
//! the range's length bound times its condition and step, then its result; its iteration
//! variable is bounded as an element of the range. Where the shape of an expression says which
//! fact values it can be (a fact, a field of one, an element of one: its reach), the length of
//! the longest list actually there bounds a comprehension instead (so `packages.all(p,
//! p.refs.all(…))` costs packages × the longest `refs`, not packages × packages); anything else
//! (a concatenation, a function's result, a dynamic field) falls back to the sizes, and so does
//! a reach past [`REACH_BUDGET`] values. cel-core's macros are the only source of
//! comprehensions; those that build a list or a map (`map`, `filter`, `transformList`,
//! `transformMap`) start from a literal `[]`/`{}` and add at most one entry per iteration, which is
//! how their accumulator is bounded (and why cel-core's quadratic copy of it is charged).

use std::collections::HashSet;
use std::rc::Rc;

use cel_core::{BinaryOp, ComprehensionData, Expr, MapKey, SpannedExpr, Value};

use super::CompileErrorKind;
use super::facts::Facts;

/// Most fact values the bound may look at (in all) to know the actual length of the lists a
/// comprehension ranges over; past it, the facts' longest list bounds them.
const REACH_BUDGET: u64 = 1 << 19;

/// The fact values an expression can evaluate to, when known from its shape (a fact, a field
/// of one, an element of a known list).
type Reach<'f> = Rc<Vec<&'f Value>>;

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

/// The bound of evaluating `expr` on `facts`.
pub(super) fn bound(expr: &SpannedExpr, facts: &Facts) -> u64 {
    let stats = facts.stats();
    let fact = Size {
        len: stats.max_len,
        chars: stats.max_str,
        weight: stats.weight,
    };
    let mut walker = Walker {
        fact,
        facts,
        scope: Vec::new(),
        budget: REACH_BUDGET,
    };
    walker.walk(expr).0
}

/// Walks the AST with the bounds of the variables in scope.
struct Walker<'f> {
    fact: Size,
    facts: &'f Facts,
    scope: Vec<(String, Size, Option<Reach<'f>>)>,
    /// What is left of [`REACH_BUDGET`].
    budget: u64,
}

impl<'f> Walker<'f> {
    fn variable(&self, name: &str) -> (Size, Option<Reach<'f>>) {
        if let Some((_, s, r)) = self.scope.iter().rev().find(|(n, ..)| n == name) {
            return (*s, r.clone());
        }
        match self.facts.value(name) {
            Some(v) => (self.fact, Some(Rc::new(vec![v]))),
            None if FACT_VARIABLES.contains(&name) => (self.fact, None),
            None => (Size::SCALAR, None),
        }
    }

    /// The values `pick` finds in each of `from`, within the budget.
    fn step(
        &mut self,
        from: Option<Reach<'f>>,
        pick: impl Fn(&'f Value, &mut Vec<&'f Value>),
    ) -> Option<Reach<'f>> {
        let from = from?;
        let mut out = Vec::new();
        for v in from.iter() {
            pick(v, &mut out);
            let spent = out.len() as u64 + 1;
            if spent > self.budget {
                self.budget = 0;
                return None;
            }
        }
        self.budget -= (out.len() as u64).min(self.budget);
        Some(Rc::new(out))
    }

    /// Cost and size of `e`.
    fn walk(&mut self, e: &SpannedExpr) -> (u64, Size) {
        match &e.node {
            Expr::String(s) => (1, Size::text(s.len())),
            Expr::Bytes(b) => (1, Size::text(b.len())),
            Expr::Ident(name) | Expr::RootIdent(name) => (1, self.variable(name).0),
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
                let r = self.reach_of(init);
                self.scope.push((var_name.clone(), si, r));
                let (cb, sb) = self.walk(body);
                self.scope.pop();
                (ci.saturating_add(cb).saturating_add(1), sb)
            }
            _ => (1, Size::SCALAR),
        }
    }

    /// The fact values `e` can evaluate to, when its shape says (within the budget).
    fn reach_of(&mut self, e: &SpannedExpr) -> Option<Reach<'f>> {
        match &e.node {
            Expr::Ident(name) | Expr::RootIdent(name) => self.variable(name).1,
            Expr::Member { expr, field, .. } => {
                let from = self.reach_of(expr);
                let key = MapKey::from(field.as_str());
                self.step(from, |v, out| out.extend(field_of(v, &key)))
            }
            Expr::Index { expr, index, .. } => {
                let from = self.reach_of(expr);
                self.step(from, |v, out| index_of(v, &index.node, out))
            }
            Expr::Ternary {
                then_expr,
                else_expr,
                ..
            } => {
                let a = self.reach_of(then_expr)?;
                let b = self.reach_of(else_expr)?;
                Some(Rc::new(a.iter().chain(b.iter()).copied().collect()))
            }
            _ => None,
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
        let mut text_chars = 0u64;
        for a in receiver.into_iter().chain(args) {
            let (c, s) = self.walk(a);
            cost = cost.saturating_add(c);
            // Not text (no string to scan, as `size` of a list) when its reach has no string.
            let text = name != "size"
                || !self
                    .reach_of(a)
                    .is_some_and(|r| r.iter().all(|v| !is_text(v)));
            text_chars = text_chars.saturating_add(if text { s.chars } else { 0 });
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
            // Linear in the strings they read; a list's or map's size is known without a scan.
            "size" | "contains" | "int" | "uint" | "double" | "bool" | "timestamp" | "duration" => {
                (text_chars, Size::SCALAR)
            }
            n if n.starts_with("get") => (text_chars, Size::SCALAR),
            _ => {
                let all = sizes.iter().fold(Size::SCALAR, |acc, s| acc.sum(*s));
                (scanned, all)
            }
        };
        (cost.saturating_add(work), result)
    }

    fn comprehension(&mut self, c: &ComprehensionData) -> (u64, Size) {
        let (c_range, range) = self.walk(&c.iter_range);
        let range_reach = self.reach_of(&c.iter_range);
        let (c_init, init) = self.walk(&c.accu_init);
        // The longest list actually in range when known, else the bound from sizes.
        let n = range_reach
            .as_ref()
            .map_or(range.len, |r| range.len.min(longest(r)));
        let over_map = range_reach
            .as_ref()
            .is_some_and(|r| r.iter().any(|v| !matches!(v, Value::List(_))));
        let elements = self.step(range_reach, |v, out| {
            if let Value::List(items) = v {
                out.extend(items.iter());
            }
        });
        // Over a map, the variable is a key (not a fact value); with two, the first is an index.
        let (first, second) = match (&elements, c.iter_var2.is_empty()) {
            (Some(_), true) if !over_map => (elements.clone(), None),
            (Some(_), false) if !over_map => (None, elements.clone()),
            _ => (None, None),
        };
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
        self.scope.push((c.accu_var.clone(), accu, None));
        for (var, r) in [(&c.iter_var, first), (&c.iter_var2, second)] {
            if !var.is_empty() {
                self.scope.push((var.clone(), element, r));
            }
        }
        let (c_cond, _) = self.walk(&c.loop_condition);
        let (c_step, step) = self.walk(&c.loop_step);
        self.scope.truncate(pushed);
        let final_accu = if growing {
            Size {
                len: accu.len.max(step.len),
                chars: accu.chars.max(step.chars),
                weight: init.weight.saturating_add(n.saturating_mul(step.weight)),
            }
        } else {
            accu.max(step)
        };
        self.scope.push((c.accu_var.clone(), final_accu, None));
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

/// The value of field `key` of a map.
fn field_of<'f>(v: &'f Value, key: &MapKey) -> Option<&'f Value> {
    match v {
        Value::Map(m) => m.get(key),
        _ => None,
    }
}

/// What `v[index]` can be: the one entry a literal index names, else any entry.
fn index_of<'f>(v: &'f Value, index: &Expr, out: &mut Vec<&'f Value>) {
    match (v, index) {
        (Value::Map(m), Expr::String(k)) => out.extend(m.get(&MapKey::from(k.as_str()))),
        (Value::List(l), Expr::Int(i)) => {
            out.extend(usize::try_from(*i).ok().and_then(|i| l.get(i)))
        }
        (Value::List(l), _) => out.extend(l.iter()),
        (Value::Map(m), _) => out.extend(m.iter().map(|(_, v)| v)),
        _ => {}
    }
}

/// A string or bytes (what functions scan).
fn is_text(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Bytes(_))
}

/// The longest list or map among `reach`.
fn longest(reach: &[&Value]) -> u64 {
    let len = |v: &&Value| match v {
        Value::List(l) => l.len() as u64,
        Value::Map(m) => m.len() as u64,
        _ => 0,
    };
    reach.iter().map(len).max().unwrap_or(0)
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
