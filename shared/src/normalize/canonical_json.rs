//! Canonical JSON as the upstream service wrote it (sorted keys, `", "` / `": "`
//! separators, non-ASCII escaped as `\uXXXX`), so generated event ids stay
//! byte-compatible with events the original service produced.

use std::fmt::Write;

use serde_json::Value;

/// Renders `value` canonically.
pub fn to_canonical_string(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, key);
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps_sort_keys() {
        let value = json!({"b": [1, true, null], "a": "é😀\n", "c": {"z": 1, "y": 2.5}});
        assert_eq!(
            to_canonical_string(&value),
            r#"{"a": "\u00e9\ud83d\ude00\n", "b": [1, true, null], "c": {"y": 2.5, "z": 1}}"#
        );
    }

    #[test]
    fn round_trips_through_a_json_parser() {
        let value = json!({"k": "v\"q", "n": [{"x": -3}]});
        let text = to_canonical_string(&value);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }
}
