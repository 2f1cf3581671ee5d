//! Legacy selector sugar (`{field, matchType, value}`) lowered to CEL, so what is stored
//! and evaluated is always one CEL expression.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::SelectorError;

/// The legacy match types; `cel` is the canonical persisted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    Cel,
    Eq,
    Prefix,
    Regex,
    Jsonpath,
}

static SEGMENT: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)] // a literal pattern, covered by tests
    Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").unwrap()
});

fn field_path(field: &str) -> Result<String, SelectorError> {
    if field.is_empty() || !field.split('.').all(|segment| SEGMENT.is_match(segment)) {
        return Err(SelectorError::Invalid(format!(
            "field path {field:?} must be dot-separated identifiers"
        )));
    }
    Ok(format!("event.data.{field}"))
}

fn literal(value: &str) -> String {
    // A JSON string literal is also a valid CEL string literal.
    serde_json::Value::String(value.to_owned()).to_string()
}

/// Lowers `field: matchType value` to a CEL expression (`==`, `startsWith`, `matches`).
/// `jsonpath` has no CEL counterpart and is refused; `cel` is not sugar.
pub fn desugar(field: &str, match_type: MatchType, value: &str) -> Result<String, SelectorError> {
    let op = match match_type {
        MatchType::Eq => "==",
        MatchType::Prefix => "startsWith",
        MatchType::Regex => "matches",
        MatchType::Jsonpath => {
            return Err(SelectorError::Invalid(
                "matchType jsonpath is not supported: write the condition in CEL, e.g. \
                 has(event.data.a) && event.data.a.b == \"x\""
                    .to_owned(),
            ))
        }
        MatchType::Cel => {
            return Err(SelectorError::Invalid(
                "matchType cel is not legacy sugar: send the expression as the selector string"
                    .to_owned(),
            ))
        }
    };
    let path = field_path(field)?;
    if match_type == MatchType::Regex {
        Regex::new(value).map_err(|e| {
            SelectorError::Invalid(format!("regex {value:?} does not compile: {e}"))
        })?;
    }
    let lit = literal(value);
    Ok(match match_type {
        MatchType::Eq => format!("{path} {op} {lit}"),
        _ => format!("{path}.{op}({lit})"),
    })
}
