//! `inputMapping` objects: validation and resolution against an event must refuse or
//! resolve, never panic.
#![no_main]

use custos_trigger::mapping;
use custos_trigger::selector::{EventScope, SelectorCache};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(data) else {
        return;
    };
    if mapping::validate(&map).is_ok() {
        let event = serde_json::json!({"kind": "manual.fire", "data": {"a": [1, 2], "b": "x"}});
        let scope = EventScope::from_json(event, Some(serde_json::json!({"a": 1})));
        let _ = mapping::resolve(&map, &scope, &SelectorCache::default());
    }
});
