//! The conjuncts of a selector the match index decides without CEL. A selector is
//! split into arms (its top-level `||`), each arm into conjuncts (its top-level `&&`);
//! a conjunct of one of the shapes below is a [`Predicate`], evaluated natively on the
//! event with exactly CEL's truth (it holds if and only if CEL would yield `true`), and
//! everything else stays a residual that CEL evaluates. An arm holds when all of its
//! conjuncts do, a selector when one of its arms does: the same as CEL's `&&` / `||`,
//! whose error absorption only ever turns an error into `false` or `true` the same way.

use cel::common::ast::{Expr, LiteralValue};
use cel::IdedExpr;
use serde_json::Value;

use crate::event::NormalizedEvent;
use crate::selector::analysis::event_path;

/// A literal an equality compares with (numbers are left to CEL).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Literal {
    Str(String),
    Bool(bool),
}

/// A numeric literal of a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Int(i64),
    UInt(u64),
    Float(f64),
}

/// `field <op> threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `event.p == "x"` / `event.p == true`.
    Eq { path: Vec<String>, value: Literal },
    /// `event.p in ["a", "b"]`.
    In {
        path: Vec<String>,
        values: Vec<String>,
    },
    /// `event.p.startsWith("x")`.
    Prefix { path: Vec<String>, prefix: String },
    /// `"x" in event.p` or `event.p.exists(t, t == "x")` (a list element or map key).
    Contains { path: Vec<String>, value: String },
    /// `has(event.p)`.
    Has { path: Vec<String> },
    /// `event.p >= 5` (and `>`, `<`, `<=`, either way round).
    Cmp {
        path: Vec<String>,
        op: CmpOp,
        threshold: Number,
    },
}

/// One arm of a selector: all of `exact` and all of `residual` must hold.
#[derive(Debug, Clone, Default)]
pub struct Arm {
    pub exact: Vec<Predicate>,
    pub residual: Vec<IdedExpr>,
}

/// The arms of a selector (its top-level `||`), each split into its conjuncts.
pub fn arms(expr: &IdedExpr) -> Vec<Arm> {
    let mut disjuncts = Vec::new();
    flatten(expr, "_||_", &mut disjuncts);
    disjuncts
        .into_iter()
        .map(|arm| {
            let mut conjuncts = Vec::new();
            flatten(arm, "_&&_", &mut conjuncts);
            let mut split = Arm {
                exact: Vec::new(),
                residual: Vec::new(),
            };
            for conjunct in conjuncts {
                match classify(conjunct).filter(Predicate::is_native) {
                    Some(predicate) => split.exact.push(predicate),
                    None => split.residual.push(conjunct.clone()),
                }
            }
            split
        })
        .collect()
}

fn flatten<'a>(expr: &'a IdedExpr, operator: &str, out: &mut Vec<&'a IdedExpr>) {
    match &expr.expr {
        Expr::Call(call)
            if call.func_name == operator && call.target.is_none() && call.args.len() == 2 =>
        {
            call.args.iter().for_each(|a| flatten(a, operator, out));
        }
        _ => out.push(expr),
    }
}

fn string_literal(expr: &IdedExpr) -> Option<&str> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

fn literal(expr: &IdedExpr) -> Option<Literal> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(Literal::Str(s.inner().to_owned())),
        Expr::Literal(LiteralValue::Boolean(b)) => Some(Literal::Bool(*b.inner())),
        _ => None,
    }
}

fn number(expr: &IdedExpr) -> Option<Number> {
    match &expr.expr {
        Expr::Literal(LiteralValue::Int(i)) => Some(Number::Int(*i.inner())),
        Expr::Literal(LiteralValue::UInt(u)) => Some(Number::UInt(*u.inner())),
        Expr::Literal(LiteralValue::Double(d)) => Some(Number::Float(*d.inner())),
        _ => None,
    }
}

/// The predicate a conjunct is, when it has one of the indexable shapes.
fn classify(expr: &IdedExpr) -> Option<Predicate> {
    match &expr.expr {
        Expr::Select(select) if select.test => {
            let mut path = event_path(&select.operand)?;
            path.push(select.field.clone());
            Some(Predicate::Has { path })
        }
        Expr::Call(call) => match (call.func_name.as_str(), &call.target, call.args.as_slice()) {
            ("_==_", None, [left, right]) => event_path(left)
                .zip(literal(right))
                .or_else(|| event_path(right).zip(literal(left)))
                .map(|(path, value)| Predicate::Eq { path, value }),
            ("@in", None, [needle, haystack]) => in_predicate(needle, haystack),
            ("startsWith", Some(target), [prefix]) => Some(Predicate::Prefix {
                path: event_path(target)?,
                prefix: string_literal(prefix)?.to_owned(),
            }),
            (op, None, [left, right]) => {
                let op = comparison(op)?;
                match (event_path(left), number(right)) {
                    (Some(path), Some(threshold)) => Some(Predicate::Cmp {
                        path,
                        op,
                        threshold,
                    }),
                    _ => Some(Predicate::Cmp {
                        path: event_path(right)?,
                        op: flipped(op),
                        threshold: number(left)?,
                    }),
                }
            }
            _ => None,
        },
        Expr::Comprehension(_) => exists_equal(expr),
        _ => None,
    }
}

fn in_predicate(needle: &IdedExpr, haystack: &IdedExpr) -> Option<Predicate> {
    if let (Some(path), Expr::List(list)) = (event_path(needle), &haystack.expr) {
        let values = list
            .elements
            .iter()
            .map(|e| string_literal(e).map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        return Some(Predicate::In { path, values });
    }
    Some(Predicate::Contains {
        path: event_path(haystack)?,
        value: string_literal(needle)?.to_owned(),
    })
}

fn comparison(op: &str) -> Option<CmpOp> {
    Some(match op {
        "_>_" => CmpOp::Gt,
        "_>=_" => CmpOp::Ge,
        "_<_" => CmpOp::Lt,
        "_<=_" => CmpOp::Le,
        _ => return None,
    })
}

/// `5 < x` is `x > 5`.
pub(crate) fn flipped(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
    }
}

/// `event.p.exists(t, t == "x")` as the parser expands it: a comprehension over
/// `event.p` starting from `false` whose step is `accu || (t == "x")`.
fn exists_equal(expr: &IdedExpr) -> Option<Predicate> {
    let Expr::Comprehension(comp) = &expr.expr else {
        return None;
    };
    let starts_false = matches!(
        comp.accu_init.expr,
        Expr::Literal(LiteralValue::Boolean(ref b)) if !*b.inner()
    );
    let returns_accu = matches!(&comp.result.expr, Expr::Ident(n) if *n == comp.accu_var);
    if !starts_false || !returns_accu || comp.iter_var2.is_some() {
        return None;
    }
    let Expr::Call(step) = &comp.loop_step.expr else {
        return None;
    };
    let [accu, test] = step.args.as_slice() else {
        return None;
    };
    let is_accu = matches!(&accu.expr, Expr::Ident(n) if *n == comp.accu_var);
    if step.func_name != "_||_" || !is_accu {
        return None;
    }
    let Expr::Call(eq) = &test.expr else {
        return None;
    };
    let is_var = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(n) if *n == comp.iter_var);
    let value = match (eq.func_name.as_str(), eq.args.as_slice()) {
        ("_==_", [l, r]) if is_var(l) => string_literal(r)?,
        ("_==_", [l, r]) if is_var(r) => string_literal(l)?,
        _ => return None,
    };
    Some(Predicate::Contains {
        path: event_path(&comp.iter_range)?,
        value: value.to_owned(),
    })
}

/// A field of the event as a predicate sees it.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    Str(&'a str),
    Json(&'a Value),
    Depth(u32),
}

impl<'a> Field<'a> {
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Field::Str(s) => Some(s),
            Field::Json(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

/// The field at `path` under `event`, read without converting anything; only the
/// paths of [`Predicate::is_native`] (others stay with CEL).
pub fn field<'a>(event: &'a NormalizedEvent, path: &[String]) -> Option<Field<'a>> {
    let (first, rest) = path.split_first()?;
    match first.as_str() {
        "kind" if rest.is_empty() => Some(Field::Str(event.kind.as_str())),
        "eventId" if rest.is_empty() => Some(Field::Str(event.event_id.as_str())),
        "subject" if rest.is_empty() => Some(Field::Str(&event.subject)),
        "depth" if rest.is_empty() => Some(Field::Depth(event.depth)),
        "data" => {
            let (key, deeper) = rest.split_first()?;
            let value = event.data.get(key.as_str())?;
            deeper
                .iter()
                .try_fold(value, |v, seg| v.get(seg.as_str()))
                .map(Field::Json)
        }
        _ => None,
    }
}

impl Predicate {
    pub fn path(&self) -> &[String] {
        match self {
            Predicate::Eq { path, .. }
            | Predicate::In { path, .. }
            | Predicate::Prefix { path, .. }
            | Predicate::Contains { path, .. }
            | Predicate::Has { path }
            | Predicate::Cmp { path, .. } => path,
        }
    }

    /// Whether [`field`] reads this predicate's field: `data.*` and the scalar
    /// envelope fields `kind`, `eventId`, `subject`, `depth`.
    pub fn is_native(&self) -> bool {
        match self.path() {
            [only] => matches!(only.as_str(), "kind" | "eventId" | "subject" | "depth"),
            [first, _, ..] => first == "data",
            [] => false,
        }
    }

    /// How good an entry point into the index the predicate is (lower: fewer events
    /// hit it). Data equalities name one value of many; kinds are few and skewed.
    pub fn rank(&self) -> u8 {
        let on_kind = self.path() == ["kind"];
        match self {
            Predicate::Eq { .. } if !on_kind => 0,
            Predicate::Contains { .. } => 1,
            Predicate::Prefix { .. } => 2,
            Predicate::In { .. } if !on_kind => 3,
            Predicate::Eq { .. } => 4,
            Predicate::In { .. } => 5,
            Predicate::Has { .. } => 6,
            Predicate::Cmp { .. } => 7,
        }
    }

    /// Whether the predicate holds for an event whose field at [`Self::path`] is
    /// `found` ([`field`]): exactly when CEL would say `true`.
    pub fn holds_on(&self, found: Option<Field<'_>>) -> bool {
        match (self, found) {
            (Predicate::Has { .. }, found) => found.is_some(),
            (_, None) => false,
            (Predicate::Eq { value, .. }, Some(f)) => literal_equals(value, f),
            (Predicate::In { values, .. }, Some(f)) => {
                f.as_str().is_some_and(|s| values.iter().any(|v| v == s))
            }
            (Predicate::Prefix { prefix, .. }, Some(f)) => {
                f.as_str().is_some_and(|s| s.starts_with(prefix.as_str()))
            }
            (Predicate::Contains { value, .. }, Some(f)) => contains(f, value),
            (Predicate::Cmp { op, threshold, .. }, Some(f)) => compare(f, *op, *threshold),
        }
    }
}

fn literal_equals(literal: &Literal, found: Field<'_>) -> bool {
    match (literal, found) {
        (Literal::Str(want), f) => f.as_str() == Some(want.as_str()),
        (Literal::Bool(want), Field::Json(Value::Bool(b))) => want == b,
        (Literal::Bool(_), _) => false,
    }
}

/// `value in list` (an element equal to it) or `in map` (a key equal to it).
pub fn contains(found: Field<'_>, value: &str) -> bool {
    match found {
        Field::Json(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(value)),
        Field::Json(Value::Object(map)) => map.contains_key(value),
        _ => false,
    }
}

/// CEL's ordering of a field against a numeric literal (ints, uints and doubles
/// compare across types; anything else never compares true).
pub fn compare(found: Field<'_>, op: CmpOp, threshold: Number) -> bool {
    use std::cmp::Ordering;
    let value = match found {
        Field::Depth(d) => Number::Int(i64::from(d)),
        Field::Json(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Number::Int(i),
            (None, Some(u)) => Number::UInt(u),
            _ => Number::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        _ => return false,
    };
    let ordering: Option<Ordering> = match (value, threshold) {
        (Number::Int(a), Number::Int(b)) => Some(a.cmp(&b)),
        (Number::UInt(a), Number::UInt(b)) => Some(a.cmp(&b)),
        (Number::Int(a), Number::UInt(b)) => {
            Some(u64::try_from(a).map_or(Ordering::Less, |a| a.cmp(&b)))
        }
        (Number::UInt(a), Number::Int(b)) => {
            Some(i64::try_from(a).map_or(Ordering::Greater, |a| a.cmp(&b)))
        }
        (Number::Float(a), Number::Float(b)) => a.partial_cmp(&b),
        (Number::Int(a), Number::Float(b)) => (a as f64).partial_cmp(&b),
        (Number::UInt(a), Number::Float(b)) => (a as f64).partial_cmp(&b),
        (Number::Float(a), Number::Int(b)) => a.partial_cmp(&(b as f64)),
        (Number::Float(a), Number::UInt(b)) => a.partial_cmp(&(b as f64)),
    };
    matches!(
        (op, ordering),
        (CmpOp::Gt, Some(Ordering::Greater))
            | (CmpOp::Ge, Some(Ordering::Greater | Ordering::Equal))
            | (CmpOp::Lt, Some(Ordering::Less))
            | (CmpOp::Le, Some(Ordering::Less | Ordering::Equal))
    )
}

/// Adds the event paths `expr` reads to `out`; false when it uses `event` other than
/// through a field path (then only the whole event will do).
pub fn referenced_paths(expr: &IdedExpr, out: &mut Vec<Vec<String>>) -> bool {
    use cel::common::ast::EntryExpr;
    match &expr.expr {
        Expr::Select(select) => {
            let path = if select.test {
                event_path(&select.operand).map(|mut p| {
                    p.push(select.field.clone());
                    p
                })
            } else {
                event_path(expr)
            };
            match path {
                Some(path) => {
                    out.push(path);
                    true
                }
                None => referenced_paths(&select.operand, out),
            }
        }
        Expr::Ident(name) => name != "event",
        Expr::Unspecified | Expr::Literal(_) => true,
        Expr::Call(call) => {
            call.target
                .as_deref()
                .is_none_or(|t| referenced_paths(t, out))
                && call.args.iter().all(|a| referenced_paths(a, out))
        }
        Expr::List(list) => list.elements.iter().all(|e| referenced_paths(e, out)),
        Expr::Map(map) => map.entries.iter().all(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => {
                referenced_paths(&e.key, out) && referenced_paths(&e.value, out)
            }
            EntryExpr::StructField(f) => referenced_paths(&f.value, out),
        }),
        Expr::Struct(st) => st.entries.iter().all(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => referenced_paths(&e.value, out),
            EntryExpr::StructField(f) => referenced_paths(&f.value, out),
        }),
        Expr::Comprehension(comp) => [
            &comp.iter_range,
            &comp.accu_init,
            &comp.loop_cond,
            &comp.loop_step,
            &comp.result,
        ]
        .into_iter()
        .all(|e| referenced_paths(e, out)),
    }
}
