//! Static checks on a parsed selector, done once at compile time: caps on nesting,
//! unbound roots, obvious boolean-operator type mismatches, and the literal equality
//! "pins" (`event.kind == "pr.opened"`) the matcher's pre-filter indexes on.

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::IdedExpr;

/// A literal an indexable top-level conjunct compares a field with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PinValue {
    String(String),
    Bool(bool),
}

/// `path == literal`, a conjunct at the top level of the selector: the selector can
/// only be true for events whose field at `path` equals `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Field path under `event`, e.g. `["data", "repo"]`.
    pub path: Vec<String>,
    pub value: PinValue,
}

/// What the static pass found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnalysisError {
    TooDeep { limit: usize },
    UnboundName(String),
    TypeMismatch(String),
}

/// How much work an expression can do per event: comprehensions (`all`, `exists`,
/// `exists_one`, `map`, `filter`) iterate over lists the event supplies, so the cost is
/// about `comprehensions × (longest list)^nesting`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Comprehensions in the expression.
    pub comprehensions: usize,
    /// The deepest nesting of comprehensions inside one another.
    pub nesting: usize,
    /// A string function (`contains`, `matches`, ...) runs inside a comprehension: each
    /// step may scan the event's longest string.
    pub scans_strings: bool,
}

/// Functions whose work grows with the length of a string operand.
const STRING_FUNCTIONS: &[&str] = &[
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "size",
    "_+_",
    "lowerAscii",
    "upperAscii",
    "replace",
    "split",
    "trim",
    "indexOf",
    "lastIndexOf",
    "substring",
    "charAt",
    "join",
    "format",
    "string",
    "bytes",
];

/// Envelope fields whose type is known to be a string (never a bool).
const STRING_FIELDS: &[&[&str]] = &[
    &["kind"],
    &["subject"],
    &["eventId"],
    &["schemaVersion"],
    &["source", "type"],
    &["source", "occurredAt"],
    &["raw", "body"],
];

pub struct Analysis {
    pub pins: Vec<Pin>,
    pub cost: Cost,
}

/// Walks `expr` once; `roots` are the names a selector may reference.
pub fn analyse(
    expr: &IdedExpr,
    roots: &[&str],
    max_depth: usize,
) -> Result<Analysis, AnalysisError> {
    let mut walker = Walker {
        roots,
        scope: Vec::new(),
        max_depth,
        nesting: 0,
        cost: Cost::default(),
    };
    walker.walk(expr, 1)?;
    let mut pins = Vec::new();
    collect_pins(expr, &mut pins);
    Ok(Analysis {
        pins,
        cost: walker.cost,
    })
}

struct Walker<'a> {
    roots: &'a [&'a str],
    scope: Vec<String>,
    max_depth: usize,
    /// Comprehensions enclosing the node being walked.
    nesting: usize,
    cost: Cost,
}

impl Walker<'_> {
    fn walk(&mut self, expr: &IdedExpr, depth: usize) -> Result<(), AnalysisError> {
        if depth > self.max_depth {
            return Err(AnalysisError::TooDeep {
                limit: self.max_depth,
            });
        }
        let next = depth + 1;
        match &expr.expr {
            Expr::Unspecified | Expr::Literal(_) => Ok(()),
            Expr::Ident(name) => self.check_name(name),
            Expr::Select(select) => self.walk(&select.operand, next),
            Expr::Call(call) => {
                if self.nesting > 0 && STRING_FUNCTIONS.contains(&call.func_name.as_str()) {
                    self.cost.scans_strings = true;
                }
                if is_boolean_operator(&call.func_name) {
                    if let Some(bad) = call.args.iter().find(|a| is_known_non_bool(a)) {
                        return Err(AnalysisError::TypeMismatch(format!(
                            "operator {} needs boolean operands, got {}",
                            display_operator(&call.func_name),
                            describe(bad)
                        )));
                    }
                }
                if let Some(target) = &call.target {
                    self.walk(target, next)?;
                }
                call.args.iter().try_for_each(|a| self.walk(a, next))
            }
            Expr::List(list) => list.elements.iter().try_for_each(|e| self.walk(e, next)),
            Expr::Map(map) => map.entries.iter().try_for_each(|entry| match &entry.expr {
                EntryExpr::MapEntry(e) => {
                    self.walk(&e.key, next)?;
                    self.walk(&e.value, next)
                }
                EntryExpr::StructField(f) => self.walk(&f.value, next),
            }),
            Expr::Struct(st) => st.entries.iter().try_for_each(|entry| match &entry.expr {
                EntryExpr::MapEntry(e) => self.walk(&e.value, next),
                EntryExpr::StructField(f) => self.walk(&f.value, next),
            }),
            Expr::Comprehension(comp) => {
                self.walk(&comp.iter_range, next)?;
                self.cost.comprehensions += 1;
                self.nesting += 1;
                self.cost.nesting = self.cost.nesting.max(self.nesting);
                let before = self.scope.len();
                self.scope.push(comp.iter_var.clone());
                if let Some(second) = &comp.iter_var2 {
                    self.scope.push(second.clone());
                }
                self.scope.push(comp.accu_var.clone());
                let result = [
                    &comp.accu_init,
                    &comp.loop_cond,
                    &comp.loop_step,
                    &comp.result,
                ]
                .into_iter()
                .try_for_each(|e| self.walk(e, next));
                self.scope.truncate(before);
                self.nesting -= 1;
                result
            }
        }
    }

    fn check_name(&self, name: &str) -> Result<(), AnalysisError> {
        let known = name.starts_with('@')
            || self.roots.contains(&name)
            || self.scope.iter().any(|s| s == name);
        if known {
            Ok(())
        } else {
            Err(AnalysisError::UnboundName(name.to_owned()))
        }
    }
}

/// What a selector written by a client must also pass (stored selectors of older
/// releases are not held to it: they are evaluated and audited as before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthoringError {
    /// The expression can only ever produce this non-boolean type.
    NotBoolean(&'static str),
    /// A regular-expression literal that does not compile.
    Regex(String),
}

/// Authoring checks: the result is not statically a non-boolean, and every literal
/// pattern handed to `matches` compiles.
pub fn check_authored_selector(expr: &IdedExpr) -> Result<(), AuthoringError> {
    if let Some(kind) = known_type(expr) {
        return Err(AuthoringError::NotBoolean(kind));
    }
    check_patterns(expr)
}

/// The result type of `expr` when it is certain and not bool.
fn known_type(expr: &IdedExpr) -> Option<&'static str> {
    match &expr.expr {
        Expr::Literal(literal) => match literal {
            LiteralValue::Boolean(_) => None,
            LiteralValue::String(_) => Some("string"),
            LiteralValue::Int(_) => Some("int"),
            LiteralValue::UInt(_) => Some("uint"),
            LiteralValue::Double(_) => Some("double"),
            LiteralValue::Bytes(_) => Some("bytes"),
            LiteralValue::Null => Some("null"),
        },
        Expr::List(_) => Some("list"),
        Expr::Map(_) => Some("map"),
        Expr::Ident(name) if name == "event" => Some("map"),
        Expr::Select(_) => event_path(expr).and_then(|path| envelope_type(&path)),
        Expr::Call(call) => match call.func_name.as_str() {
            // CEL has no arithmetic on bools: whatever the operands, not a bool.
            "_+_" | "_-_" | "_*_" | "_/_" | "_%_" | "-_" => Some("a number, string or list"),
            "size" => Some("int"),
            "string" => Some("string"),
            "int" => Some("int"),
            "uint" => Some("uint"),
            "double" => Some("double"),
            "bytes" => Some("bytes"),
            "timestamp" => Some("timestamp"),
            "duration" => Some("duration"),
            "_?_:_" => match call.args.as_slice() {
                [_, yes, no] => known_type(yes).and(known_type(no)),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// The type of an envelope field, when the envelope fixes it.
fn envelope_type(path: &[String]) -> Option<&'static str> {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    if STRING_FIELDS.contains(&path.as_slice()) {
        return Some("string");
    }
    match path.as_slice() {
        ["depth"] => Some("int"),
        ["data"] | ["source"] | ["raw"] | ["raw", "headers"] => Some("map"),
        _ => None,
    }
}

/// Every `x.matches("literal")` / `matches(x, "literal")` pattern compiles.
fn check_patterns(expr: &IdedExpr) -> Result<(), AuthoringError> {
    let mut pending = vec![expr];
    while let Some(node) = pending.pop() {
        match &node.expr {
            Expr::Call(call) => {
                if call.func_name == "matches" {
                    let pattern = match (&call.target, call.args.as_slice()) {
                        (Some(_), [pattern]) | (None, [_, pattern]) => Some(pattern),
                        _ => None,
                    };
                    if let Some(Expr::Literal(LiteralValue::String(text))) =
                        pattern.map(|p| &p.expr)
                    {
                        regex::Regex::new(text.inner()).map_err(|e| {
                            AuthoringError::Regex(format!(
                                "regex {:?} does not compile: {e}",
                                text.inner()
                            ))
                        })?;
                    }
                }
                pending.extend(call.target.as_deref());
                pending.extend(call.args.iter());
            }
            Expr::Select(select) => pending.push(&select.operand),
            Expr::List(list) => pending.extend(list.elements.iter()),
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        pending.push(&e.key);
                        pending.push(&e.value);
                    }
                }
            }
            Expr::Comprehension(comp) => pending.extend([
                &comp.iter_range,
                &comp.accu_init,
                &comp.loop_cond,
                &comp.loop_step,
                &comp.result,
            ]),
            _ => {}
        }
    }
    Ok(())
}

fn is_boolean_operator(name: &str) -> bool {
    matches!(name, "_&&_" | "_||_" | "!_")
}

fn display_operator(name: &str) -> &str {
    match name {
        "_&&_" => "&&",
        "_||_" => "||",
        _ => "!",
    }
}

fn is_known_non_bool(expr: &IdedExpr) -> bool {
    match &expr.expr {
        Expr::Literal(LiteralValue::Boolean(_)) => false,
        Expr::Literal(_) | Expr::List(_) | Expr::Map(_) => true,
        Expr::Select(_) => event_path(expr).is_some_and(|path| {
            STRING_FIELDS
                .iter()
                .any(|known| known.iter().copied().eq(path.iter().map(String::as_str)))
        }),
        _ => false,
    }
}

fn describe(expr: &IdedExpr) -> String {
    match event_path(expr) {
        Some(path) => format!("string field event.{}", path.join(".")),
        None => "a non-boolean literal".to_owned(),
    }
}

/// `event.a.b` → `["a", "b"]`; anything else (including `has(...)` tests) → None.
pub fn event_path(expr: &IdedExpr) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut cursor = expr;
    loop {
        match &cursor.expr {
            Expr::Select(select) if !select.test => {
                fields.push(select.field.clone());
                cursor = &select.operand;
            }
            Expr::Ident(name) if name == "event" && !fields.is_empty() => {
                fields.reverse();
                return Some(fields);
            }
            _ => return None,
        }
    }
}

fn pin_value(expr: &IdedExpr) -> Option<PinValue> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(PinValue::String(s.inner().to_owned())),
        Expr::Literal(LiteralValue::Boolean(b)) => Some(PinValue::Bool(*b.inner())),
        _ => None,
    }
}

fn collect_pins(expr: &IdedExpr, pins: &mut Vec<Pin>) {
    let Expr::Call(call) = &expr.expr else {
        return;
    };
    match (call.func_name.as_str(), call.args.as_slice()) {
        ("_&&_", args) => args.iter().for_each(|a| collect_pins(a, pins)),
        ("_==_", [left, right]) => {
            let pin = match (event_path(left), pin_value(right)) {
                (Some(path), Some(value)) => Some(Pin { path, value }),
                _ => event_path(right)
                    .zip(pin_value(left))
                    .map(|(path, value)| Pin { path, value }),
            };
            pins.extend(pin);
        }
        _ => {}
    }
}
