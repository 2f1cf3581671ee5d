//! An event cut down to the fields a selector reads: evaluating over the projection
//! gives what evaluating over the whole event gives, for a fraction of the conversion.

use serde_json::Value;

use crate::event::NormalizedEvent;

/// The event's JSON form cut down to the subtrees at `paths`: every object on the way
/// to a path is kept with only the keys some path names, and a path's own value (or the
/// first non-object on its way) whole, so reading any of `paths` in the projection
/// yields what it yields on the whole event (present, absent, or the wrong type).
pub fn project(event: &NormalizedEvent, paths: &[Vec<String>]) -> Value {
    let mut root = serde_json::Map::new();
    let mut whole: Option<Value> = None;
    for path in paths {
        let Some((first, rest)) = path.split_first() else {
            continue;
        };
        match first.as_str() {
            "kind" => {
                root.insert("kind".into(), Value::String(event.kind.as_str().to_owned()));
            }
            "data" if rest.is_empty() => {
                root.insert("data".into(), Value::Object(event.data.clone()));
            }
            "data" => {
                let child = root
                    .entry("data")
                    .or_insert_with(|| Value::Object(serde_json::Map::new()));
                if let (Value::Object(child), Some(next)) = (child, event.data.get(&rest[0])) {
                    graft(child, &rest[0], next, &rest[1..]);
                }
            }
            other => {
                let whole = whole.get_or_insert_with(|| event.to_json());
                if let Some(value) = whole.get(other) {
                    graft(&mut root, other, value, rest);
                }
            }
        }
    }
    Value::Object(root)
}

fn graft(target: &mut serde_json::Map<String, Value>, key: &str, source: &Value, rest: &[String]) {
    let Some((next, deeper)) = rest.split_first().filter(|_| source.is_object()) else {
        target.insert(key.to_owned(), source.clone());
        return;
    };
    let child = target
        .entry(key)
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let (Value::Object(child), Some(value)) = (child, source.get(next.as_str())) {
        graft(child, next, value, deeper);
    }
}
