//! Selectors are CEL boolean expressions over `event`. They are compiled (and checked)
//! once when authored, cached per `(subscription id, expression hash)`, and evaluated
//! against one per-event scope; an evaluation error or a non-boolean result is a
//! no-match that the caller gets to report, never a panic.

pub mod analysis;
pub mod cache;
pub mod desugar;
mod projection;
pub mod value;

use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program, Value as CelValue};
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::event::{NormalizedEvent, SourceType};
pub use analysis::{Pin, PinValue};
pub use cache::SelectorCache;
pub use desugar::{desugar, MatchType};

/// Longest selector source accepted, in bytes.
pub const MAX_SELECTOR_LEN: usize = 4096;
/// Deepest expression tree accepted.
pub const MAX_SELECTOR_DEPTH: usize = 48;

/// The selector cannot be stored (API: 422 `trigger.selector_invalid`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectorError {
    #[error("selector is invalid: {0}")]
    Invalid(String),
    /// The expression could do too much work per event (see `MAX_COMPREHENSION_*`).
    #[error("selector is too expensive: {0}")]
    TooExpensive(String),
    /// The expression can only produce a non-boolean (refused when authored).
    #[error("selector evaluates to {0}, not bool")]
    NotBoolean(&'static str),
}

/// Comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) an expression may hold.
pub const MAX_COMPREHENSIONS: usize = 8;
/// How deeply comprehensions may nest inside one another.
pub const MAX_COMPREHENSION_NESTING: usize = 2;
/// Per event, an expression whose estimated work (`comprehensions × longest list in the
/// event ^ nesting`) exceeds this is not run: it counts as a failed evaluation (no
/// match) for that event, so it can never stall other subscriptions or tenants.
pub const MAX_EVALUATION_COST: u64 = 1_000_000;
/// Per event, the bytes string functions inside comprehensions may scan at most
/// (`steps × longest string in the event`): about 64 MB, tens of milliseconds.
pub const MAX_STRING_SCAN_BYTES: u64 = 64 * 1024 * 1024;

/// How large an event is where a selector's cost depends on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extent {
    /// Elements of the longest list or map.
    pub items: u64,
    /// Bytes of the longest string.
    pub string_bytes: u64,
}

/// Why evaluating a compiled selector did not produce a boolean.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EvalError {
    /// The expression ran but produced a non-boolean (audited as
    /// `trigger.selector_type_error`).
    #[error("selector evaluated to {result_type}, not bool")]
    NotBoolean { result_type: String },
    /// A runtime error: a missing field, an operator on the wrong types, ...
    #[error("selector evaluation failed: {0}")]
    Execution(String),
    /// Not run: on this event the expression would cost about `estimate` steps.
    #[error("selector not evaluated: about {estimate} steps on this event exceed the limit of {MAX_EVALUATION_COST}")]
    TooExpensive { estimate: u64 },
    /// Not run: its string functions would scan about `bytes` bytes on this event.
    #[error("selector not evaluated: its string functions would scan about {bytes} bytes on this event, over the limit of {MAX_STRING_SCAN_BYTES}")]
    TooMuchScanning { bytes: u64 },
}

/// The shared CEL environment (standard library, macros), built once per process.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// `hex(sha256(expr))`, the cache-key component of an expression.
pub fn expression_hash(expr: &str) -> String {
    hex::encode(Sha256::digest(expr.as_bytes()))
}

/// A checked, compiled expression.
#[derive(Debug)]
pub struct CompiledExpr {
    source: String,
    program: Program,
    pins: Vec<Pin>,
    cost: analysis::Cost,
}

impl CompiledExpr {
    /// Compiles a selector (root `event`).
    pub fn selector(source: &str) -> Result<Self, SelectorError> {
        Self::compile(source, &["event"])
    }

    /// Compiles a selector a client authored: also refused when it can only produce a
    /// non-boolean or holds a regex literal that does not compile.
    pub fn authored_selector(source: &str) -> Result<Self, SelectorError> {
        let compiled = Self::selector(source)?;
        analysis::check_authored_selector(compiled.expression()).map_err(|e| match e {
            analysis::AuthoringError::NotBoolean(kind) => SelectorError::NotBoolean(kind),
            analysis::AuthoringError::Regex(detail) => SelectorError::Invalid(detail),
        })?;
        Ok(compiled)
    }

    /// Compiles an input-mapping expression (roots `event` and `inputs`).
    pub fn mapping(source: &str) -> Result<Self, SelectorError> {
        Self::compile(source, &["event", "inputs"])
    }

    fn compile(source: &str, roots: &[&str]) -> Result<Self, SelectorError> {
        let invalid = |m: String| SelectorError::Invalid(m);
        check_source(source)?;
        let program = ENV
            .compile(source)
            .map_err(|e| invalid(format!("syntax error: {e}")))?;
        let analysis =
            analysis::analyse(program.expression(), roots, MAX_SELECTOR_DEPTH).map_err(|e| {
                invalid(match e {
                    analysis::AnalysisError::TooDeep { limit } => {
                        format!("expression nests deeper than {limit} levels")
                    }
                    analysis::AnalysisError::UnboundName(name) => format!(
                        "unknown name {name:?}: expressions may only use {}",
                        roots.join(", ")
                    ),
                    analysis::AnalysisError::TypeMismatch(m) => format!("type mismatch: {m}"),
                })
            })?;
        let cost = analysis.cost;
        if cost.comprehensions > MAX_COMPREHENSIONS || cost.nesting > MAX_COMPREHENSION_NESTING {
            return Err(SelectorError::TooExpensive(format!(
                "{} comprehensions nested {} deep; at most {MAX_COMPREHENSIONS}, nested at most {MAX_COMPREHENSION_NESTING} deep",
                cost.comprehensions, cost.nesting
            )));
        }
        Ok(Self {
            source: source.to_owned(),
            program,
            pins: analysis.pins,
            cost,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Top-level `event.<path> == literal` conjuncts (used by the pre-filter).
    pub fn pins(&self) -> &[Pin] {
        &self.pins
    }

    /// The parsed expression (the match index splits selectors into their conjuncts).
    pub fn expression(&self) -> &cel::IdedExpr {
        self.program.expression()
    }

    /// Whether the expression iterates (so its cost depends on the event).
    pub fn has_comprehensions(&self) -> bool {
        self.cost.comprehensions > 0
    }

    /// Refuses to run an expression whose estimated work on this event is too large.
    pub fn check_cost(&self, scope: &EventScope) -> Result<(), EvalError> {
        if self.cost.comprehensions == 0 {
            return Ok(());
        }
        self.cost.check_at(scope.extent())
    }

    /// What the expression's comprehensions can cost per event.
    pub fn cost(&self) -> analysis::Cost {
        self.cost
    }

    /// Runs one part of this expression (a conjunct of [`Self::expression`]) as a
    /// predicate; the caller has checked the cost of the whole.
    pub fn part_matches(
        &self,
        part: &cel::IdedExpr,
        scope: &EventScope,
    ) -> Result<bool, EvalError> {
        let value = CelValue::resolve(part, &scope.context)
            .map_err(|e| EvalError::Execution(e.to_string()))?;
        match value {
            CelValue::Bool(b) => Ok(b),
            other => Err(EvalError::NotBoolean {
                result_type: other.type_of().to_string(),
            }),
        }
    }

    /// Runs the expression in `scope`, returning its raw CEL value.
    pub fn evaluate(&self, scope: &EventScope) -> Result<CelValue, EvalError> {
        self.check_cost(scope)?;
        self.program
            .execute(&scope.context)
            .map_err(|e| EvalError::Execution(e.to_string()))
    }

    /// Runs the expression as a predicate.
    pub fn matches(&self, scope: &EventScope) -> Result<bool, EvalError> {
        match self.evaluate(scope)? {
            CelValue::Bool(b) => Ok(b),
            other => Err(EvalError::NotBoolean {
                result_type: other.type_of().to_string(),
            }),
        }
    }
}

impl analysis::Cost {
    /// Refuses an expression whose estimated work on an event of this `extent` is too
    /// large: too many comprehension steps, or string functions in them that would scan
    /// too many bytes (each step may scan the longest string).
    pub fn check_at(&self, extent: Extent) -> Result<(), EvalError> {
        if self.comprehensions == 0 {
            return Ok(());
        }
        let nested = u32::try_from(self.nesting).unwrap_or(u32::MAX);
        let estimate =
            (self.comprehensions as u64).saturating_mul(extent.items.max(1).saturating_pow(nested));
        if estimate > MAX_EVALUATION_COST {
            return Err(EvalError::TooExpensive { estimate });
        }
        let bytes = estimate.saturating_mul(extent.string_bytes);
        if self.scans_strings && bytes > MAX_STRING_SCAN_BYTES {
            return Err(EvalError::TooMuchScanning { bytes });
        }
        Ok(())
    }
}

/// The longest list or map and the longest string in `value`.
fn extent_of(value: &Value) -> Extent {
    let mut extent = Extent::default();
    let mut stack = vec![value];
    while let Some(next) = stack.pop() {
        match next {
            Value::Array(items) => {
                extent.items = extent.items.max(items.len() as u64);
                stack.extend(items);
            }
            Value::Object(fields) => {
                extent.items = extent.items.max(fields.len() as u64);
                for (key, value) in fields {
                    extent.string_bytes = extent.string_bytes.max(key.len() as u64);
                    stack.push(value);
                }
            }
            Value::String(text) => {
                extent.string_bytes = extent.string_bytes.max(text.len() as u64);
            }
            _ => {}
        }
    }
    extent
}

/// The checks on the raw text that come before parsing (the match index's recognizer
/// applies them too, so it never accepts a text compilation refuses).
pub(crate) fn check_source(source: &str) -> Result<(), SelectorError> {
    let invalid = |m: String| Err(SelectorError::Invalid(m));
    if source.trim().is_empty() {
        return invalid("expression is empty".into());
    }
    if source.len() > MAX_SELECTOR_LEN {
        return invalid(format!(
            "expression is {} bytes, the limit is {MAX_SELECTOR_LEN}",
            source.len()
        ));
    }
    // Bound nesting before the parser recurses into it.
    if bracket_depth(source) > MAX_SELECTOR_DEPTH {
        return invalid(format!(
            "expression nests deeper than {MAX_SELECTOR_DEPTH} levels"
        ));
    }
    Ok(())
}

/// The deepest nesting of brackets in `source`, counted on the raw text (string
/// literals included): a bound checked before the parser recurses.
fn bracket_depth(source: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in source.bytes() {
        match c {
            b'(' | b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// An event whose CEL form is built on first need: the match index decides most
/// selectors without CEL, so many events never need it, and the rest often need only
/// the few fields their residual conditions read (a projection).
pub struct LazyScope<'a> {
    event: &'a NormalizedEvent,
    scope: std::sync::OnceLock<EventScope>,
    projected: std::sync::OnceLock<EventScope>,
    longest: std::sync::OnceLock<Extent>,
}

impl<'a> LazyScope<'a> {
    pub fn new(event: &'a NormalizedEvent) -> Self {
        Self {
            event,
            scope: std::sync::OnceLock::new(),
            projected: std::sync::OnceLock::new(),
            longest: std::sync::OnceLock::new(),
        }
    }

    /// A scope holding only the fields under `paths` (each subtree whole), or the full
    /// scope when `paths` is `None`. The first projection asked for is kept.
    pub fn projected(&self, paths: Option<&[Vec<String>]>) -> &EventScope {
        match paths {
            None => self.get(),
            Some(paths) => self.projected.get_or_init(|| {
                EventScope::from_json(projection::project(self.event, paths), None)
            }),
        }
    }

    /// The element count of the event's longest list or map, without converting it
    /// (the same bound [`EventScope::longest_collection`] gives the cost guard; the
    /// envelope's own small maps never reach the guard's limits).
    pub fn extent(&self) -> Extent {
        *self.longest.get_or_init(|| {
            let event = self.event;
            let nested = event.data.values().map(extent_of);
            let headers = event.raw.headers.iter().map(|(k, v)| k.len().max(v.len()));
            let envelope = [
                event.raw.body.len(),
                event.kind.as_str().len(),
                event.subject.len(),
                event.event_id.as_str().len(),
            ];
            Extent {
                items: nested
                    .clone()
                    .map(|e| e.items)
                    .chain([event.data.len() as u64, event.raw.headers.len() as u64, 8])
                    .max()
                    .unwrap_or(0),
                string_bytes: nested
                    .map(|e| e.string_bytes)
                    .chain(event.data.keys().map(|k| k.len() as u64))
                    .chain(headers.chain(envelope).map(|n| n as u64))
                    .max()
                    .unwrap_or(0),
            }
        })
    }

    pub fn event(&self) -> &'a NormalizedEvent {
        self.event
    }

    /// The event's CEL scope, converted now if this is the first need.
    pub fn get(&self) -> &EventScope {
        self.scope.get_or_init(|| EventScope::new(self.event))
    }

    /// Whether a CEL scope (whole or projected) was ever built.
    pub fn is_built(&self) -> bool {
        self.scope.get().is_some() || self.projected.get().is_some()
    }
}

/// One event made ready for evaluation: converted to CEL once, then shared by every
/// candidate selector and mapping expression.
pub struct EventScope {
    context: Context<'static, 'static>,
    json: Value,
    /// The longest list or map anywhere in the scope, computed on first need.
    longest: std::sync::OnceLock<Extent>,
}

impl EventScope {
    /// Binds `event` (and, for a manual fire, `inputs` = the fire's inputs).
    pub fn new(event: &NormalizedEvent) -> Self {
        let json = event.to_json();
        let inputs = (event.source.source_type == SourceType::Manual)
            .then(|| json.get("data").cloned())
            .flatten();
        Self::from_json(json, inputs)
    }

    /// Binds a plain JSON object as `event` (selector tests, the `:test` route).
    pub fn from_json(event: Value, inputs: Option<Value>) -> Self {
        let mut context = Context::with_env(Arc::clone(&ENV));
        context.add_variable_from_value("event", value::to_cel(&event));
        if let Some(inputs) = &inputs {
            context.add_variable_from_value("inputs", value::to_cel(inputs));
        }
        Self {
            context,
            json: event,
            longest: std::sync::OnceLock::new(),
        }
    }

    /// The event as JSON (the pre-filter reads pinned fields from it).
    /// The longest list or map and the longest string in the event (what a
    /// comprehension's and its string functions' cost depend on), computed on first need.
    pub fn extent(&self) -> Extent {
        *self.longest.get_or_init(|| extent_of(&self.json))
    }

    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The value at `path` under `event`, if any.
    pub fn field(&self, path: &[String]) -> Option<&Value> {
        path.iter()
            .try_fold(&self.json, |v, seg| v.get(seg.as_str()))
    }
}

#[cfg(test)]
mod tests;
