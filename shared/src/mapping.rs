//! Input mapping: `${{ expr }}` placeholders in a start subscription's `inputMapping`
//! are CEL over `event` (and `inputs` for a manual fire). A value that is exactly one
//! placeholder keeps the expression's JSON type; placeholders inside longer strings are
//! interpolated as text. A mapping that cannot be resolved is a permanent failure.

use std::collections::HashMap;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::json_text;
use crate::selector::{CompiledExpr, EventScope, SelectorCache};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("inputMapping.{path}: {reason}")]
pub struct MappingError {
    /// Dotted location of the failing value inside the mapping.
    pub path: String,
    pub reason: String,
    /// The expression was refused for its cost, not its syntax.
    pub too_expensive: bool,
}

/// Resolves every placeholder of `mapping` against `scope`.
pub fn resolve<'m>(
    mapping: impl IntoIterator<Item = (&'m String, &'m Value)>,
    scope: &EventScope,
    cache: &SelectorCache,
) -> Result<Map<String, Value>, MappingError> {
    resolve_with(mapping, scope, cache, &Memo::default())
}

/// The resolved placeholder texts of one event, shared by all of its matches: the same
/// `${{ event.data.repo }}` in a hundred subscriptions is parsed and evaluated once.
/// Hashed with foldhash (seeded per process), not SipHash: it is looked up once per
/// placeholder per match, and its few keys per event leave nothing to flood.
#[derive(Debug, Default)]
pub struct Memo(std::sync::Mutex<HashMap<String, Outcome, foldhash::fast::RandomState>>);

/// What one text yielded: its value, or why not (and whether it was too costly).
type Outcome = Result<Value, (String, bool)>;

impl Memo {
    /// What `text` yielded (`compute`d the first time), read under the lock by `read`:
    /// one lookup, and nothing copied out that `read` does not copy.
    fn with<R>(
        &self,
        text: &str,
        compute: impl FnOnce() -> Outcome,
        read: impl FnOnce(&Outcome) -> R,
    ) -> R {
        let mut known = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(outcome) = known.get(text) {
            return read(outcome);
        }
        let outcome = compute();
        let result = read(&outcome);
        known.insert(text.to_owned(), outcome);
        result
    }
}

/// [`resolve`] with expression results shared through `memo` (one per event).
pub fn resolve_with<'m>(
    mapping: impl IntoIterator<Item = (&'m String, &'m Value)>,
    scope: &EventScope,
    cache: &SelectorCache,
    memo: &Memo,
) -> Result<Map<String, Value>, MappingError> {
    let resolver = Resolver { scope, cache, memo };
    // Inserted one by one: a mapping's keys come sorted and unique, and collecting
    // would buffer, sort and deduplicate them again for every match.
    let mut inputs = Map::new();
    for (key, value) in mapping {
        inputs.insert(key.clone(), resolver.value(value, key)?);
    }
    Ok(inputs)
}

/// [`resolve_with`] written into `out` as the JSON text of the map it resolves to
/// (byte for byte as serde writes that map), without building the map: a dispatch
/// message's inputs, written once per match.
pub fn write_with<'m>(
    mapping: impl IntoIterator<Item = (&'m String, &'m Value)>,
    scope: &EventScope,
    cache: &SelectorCache,
    memo: &Memo,
    out: &mut String,
) -> Result<(), MappingError> {
    Resolver { scope, cache, memo }.write_members(mapping, out, "")
}

/// A text's failed outcome (why, and whether for its cost) as the error at `path`.
fn failed(path: &str, (reason, too_expensive): &(String, bool)) -> MappingError {
    MappingError {
        path: path.to_owned(),
        reason: reason.clone(),
        too_expensive: *too_expensive,
    }
}

/// Serde refusing to write a JSON value (it refuses none of these).
fn unwritable(e: serde_json::Error) -> MappingError {
    MappingError {
        path: String::new(),
        reason: e.to_string(),
        too_expensive: false,
    }
}

impl MappingError {
    /// This error, found inside `outer` (its path so far is relative: `""`, `[0]`, `.k`).
    fn inside(mut self, outer: &str) -> Self {
        self.path.insert_str(0, outer);
        self
    }
}

/// Checks every placeholder compiles (at authoring time), without evaluating.
pub fn validate(mapping: &Map<String, Value>) -> Result<(), MappingError> {
    fn walk(value: &Value, path: &str) -> Result<(), MappingError> {
        match value {
            Value::String(text) => {
                for segment in parse(text, path)? {
                    if let Segment::Expr(expr) = segment {
                        compile(expr, path)?;
                    }
                }
                Ok(())
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| walk(v, &format!("{path}[{i}]"))),
            Value::Object(map) => map
                .iter()
                .try_for_each(|(k, v)| walk(v, &format!("{path}.{k}"))),
            _ => Ok(()),
        }
    }
    mapping.iter().try_for_each(|(k, v)| walk(v, k))
}

#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Text(&'a str),
    Expr(&'a str),
}

fn parse<'a>(text: &'a str, path: &str) -> Result<Vec<Segment<'a>>, MappingError> {
    let mut segments = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            segments.push(Segment::Text(&rest[..start]));
        }
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| MappingError {
            path: path.to_owned(),
            reason: "placeholder `${{` is not closed by `}}`".to_owned(),
            too_expensive: false,
        })?;
        segments.push(Segment::Expr(after[..end].trim()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Text(rest));
    }
    Ok(segments)
}

fn compile(expr: &str, path: &str) -> Result<CompiledExpr, MappingError> {
    CompiledExpr::mapping(expr).map_err(|e| MappingError {
        path: path.to_owned(),
        reason: e.to_string(),
        too_expensive: matches!(e, crate::selector::SelectorError::TooExpensive(_)),
    })
}

struct Resolver<'a> {
    scope: &'a EventScope,
    cache: &'a SelectorCache,
    memo: &'a Memo,
}

impl Resolver<'_> {
    fn value(&self, value: &Value, path: &str) -> Result<Value, MappingError> {
        match value {
            Value::String(text) => self.string(text, path),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| self.value(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.value(v, &format!("{path}.{k}"))?)))
                .collect::<Result<_, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    fn string(&self, text: &str, path: &str) -> Result<Value, MappingError> {
        if !text.contains("${{") {
            return Ok(Value::String(text.to_owned()));
        }
        self.memo.with(
            text,
            || self.template(text),
            |outcome| match outcome {
                Ok(value) => Ok(value.clone()),
                Err(failure) => Err(failed(path, failure)),
            },
        )
    }

    /// [`Resolver::value`] written into `out` as JSON text; an error's path is relative
    /// to `value`.
    fn write(&self, value: &Value, out: &mut String) -> Result<(), MappingError> {
        match value {
            Value::String(text) if text.contains("${{") => self.memo.with(
                text,
                || self.template(text),
                |outcome| match outcome {
                    Ok(value) => json_text::value(out, value).map_err(unwritable),
                    Err(failure) => Err(failed("", failure)),
                },
            ),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.write(item, out)
                        .map_err(|e| e.inside(&format!("[{i}]")))?;
                }
                out.push(']');
                Ok(())
            }
            Value::Object(map) => self.write_members(map, out, "."),
            other => json_text::value(out, other).map_err(unwritable),
        }
    }

    /// An object's `members` written as [`Resolver::write`] writes values; an error's
    /// path is `prefix` and the member's key, then the path inside it.
    fn write_members<'m>(
        &self,
        members: impl IntoIterator<Item = (&'m String, &'m Value)>,
        out: &mut String,
        prefix: &str,
    ) -> Result<(), MappingError> {
        out.push('{');
        for (i, (key, member)) in members.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_text::string(out, key).map_err(unwritable)?;
            out.push(':');
            self.write(member, out)
                .map_err(|e| e.inside(&format!("{prefix}{key}")))?;
        }
        out.push('}');
        Ok(())
    }

    /// A text with placeholders, resolved (its one expression's value when it is nothing
    /// else).
    fn template(&self, text: &str) -> Outcome {
        let segments = parse(text, "").map_err(|e| (e.reason, e.too_expensive))?;
        if let [Segment::Expr(expr)] = segments.as_slice() {
            return self.compute(expr);
        }
        let mut out = String::with_capacity(text.len());
        for segment in segments {
            match segment {
                Segment::Text(t) => out.push_str(t),
                Segment::Expr(expr) => match self.compute(expr)? {
                    Value::String(s) => out.push_str(&s),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Ok(Value::String(out))
    }

    fn compute(&self, expr: &str) -> Outcome {
        let compiled = self
            .cache
            .mapping(expr)
            .map_err(|e| (e.to_string(), false))?;
        let value = compiled
            .evaluate(self.scope)
            .map_err(|e| (format!("`{expr}`: {e}"), false))?;
        value
            .json()
            .map_err(|e| (format!("`{expr}` has no JSON form: {e}"), false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> EventScope {
        EventScope::from_json(
            json!({"kind": "pr.opened", "data": {"n": 3, "repo": "acme/api", "tags": ["a"], "ok": true}}),
            None,
        )
    }

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn exact_placeholders_keep_their_json_type() {
        let resolved = resolve(
            &map(json!({
                "n": "${{ event.data.n }}", "ok": "${{event.data.ok}}",
                "tags": "${{ event.data.tags }}", "sum": "${{ event.data.n + 1 }}",
                "obj": "${{ event.data }}", "lit": 7
            })),
            &scope(),
            &SelectorCache::default(),
        )
        .unwrap();
        assert_eq!(resolved["n"], json!(3));
        assert_eq!(resolved["ok"], json!(true));
        assert_eq!(resolved["tags"], json!(["a"]));
        assert_eq!(resolved["sum"], json!(4));
        assert_eq!(resolved["obj"]["repo"], json!("acme/api"));
        assert_eq!(resolved["lit"], json!(7));
    }

    #[test]
    fn placeholders_inside_text_are_interpolated() {
        let resolved = resolve(
            &map(json!({"msg": "repo ${{ event.data.repo }} has ${{ event.data.n }} PRs", "plain": "x"})),
            &scope(),
            &SelectorCache::default(),
        )
        .unwrap();
        assert_eq!(resolved["msg"], json!("repo acme/api has 3 PRs"));
        assert_eq!(resolved["plain"], json!("x"));
    }

    #[test]
    fn a_memo_resolves_each_text_once_and_reports_failures_at_each_callers_path() {
        let (scope, cache, memo) = (scope(), SelectorCache::default(), Memo::default());
        let first = map(json!({"repo": "${{ event.data.repo }}", "n": "${{ event.data.n }}"}));
        let resolved = resolve_with(&first, &scope, &cache, &memo).unwrap();
        assert_eq!(resolved["repo"], json!("acme/api"));
        let second = map(json!({"r": "${{ event.data.repo }}", "bad": "${{ event.nope.x }}"}));
        let error = resolve_with(&second, &scope, &cache, &memo).unwrap_err();
        assert_eq!(error.path, "bad");
        let third = map(json!({"again": "${{ event.nope.x }}"}));
        let error = resolve_with(&third, &scope, &cache, &memo).unwrap_err();
        assert_eq!(
            error.path, "again",
            "a remembered failure names where it is used"
        );
        let texts = memo.0.lock().unwrap().len();
        assert_eq!(texts, 3, "one entry per distinct text");
        let plain = map(json!({"literal": "event.data.repo"}));
        let resolved = resolve_with(&plain, &scope, &cache, &memo).unwrap();
        assert_eq!(resolved["literal"], json!("event.data.repo"));
    }

    #[test]
    fn nested_structures_are_resolved() {
        let resolved = resolve(
            &map(json!({"outer": {"list": ["${{ event.kind }}", 1]}})),
            &scope(),
            &SelectorCache::default(),
        )
        .unwrap();
        assert_eq!(resolved["outer"]["list"], json!(["pr.opened", 1]));
    }

    #[test]
    fn failures_name_the_location_and_reason() {
        let cache = SelectorCache::default();
        let err = resolve(
            &map(json!({"a": {"b": "${{ event.data.missing }}"}})),
            &scope(),
            &cache,
        )
        .unwrap_err();
        assert_eq!(err.path, "a.b");
        assert!(err.reason.contains("event.data.missing"));
        let err = resolve(&map(json!({"a": "${{ event.kind"})), &scope(), &cache).unwrap_err();
        assert!(err.reason.contains("not closed"));
        let err = resolve(&map(json!({"a": "${{ nope.x }}"})), &scope(), &cache).unwrap_err();
        assert!(err.reason.contains("nope"));
    }

    #[test]
    fn validate_compiles_without_evaluating() {
        assert!(validate(&map(
            json!({"a": "${{ event.data.missing }}", "b": ["${{ inputs.x }}"]})
        ))
        .is_ok());
        let err = validate(&map(json!({"a": {"b": ["${{ event. }}"]}}))).unwrap_err();
        assert_eq!(err.path, "a.b[0]");
    }
}
