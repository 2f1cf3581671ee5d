//! Selectors as tenants write them: compile, then evaluate against an event with lists
//! to iterate. Must refuse, match or not match, and always return (the cost bound).
#![no_main]

use std::sync::LazyLock;

use custos_trigger::selector::{CompiledExpr, EventScope};
use libfuzzer_sys::fuzz_target;

static EVENT: LazyLock<serde_json::Value> = LazyLock::new(|| {
    serde_json::json!({
        "eventId": "e1", "kind": "github.push", "subject": "s",
        "source": {"type": "webhook", "occurredAt": "2026-11-27T10:00:00Z"},
        "data": {"xs": [1, 2, 3, 4, 5, 6, 7, 8], "name": "main", "n": 42,
                 "nested": {"tags": ["a", "b"], "ok": true}},
        "raw": {"headers": {}, "body": "{}"}, "depth": 0
    })
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(compiled) = CompiledExpr::selector(text) {
        let scope = EventScope::from_json(EVENT.clone(), None);
        let _ = compiled.matches(&scope);
    }
});
