//! Differential: the match index against plain CEL. A text the index's recognizer
//! accepts must be one CEL compiles to the very same arms and cost; and for any text
//! that compiles, an index holding it must match exactly the events CEL says `true` to.
#![no_main]

use std::sync::LazyLock;

use custos_trigger::event::NormalizedEvent;
use custos_trigger::matching::{predicate, recognize::recognize, StartIndex};
use custos_trigger::selector::{CompiledExpr, EventScope, LazyScope, SelectorCache};
use custos_trigger::subscription::Subscription;
use libfuzzer_sys::fuzz_target;

static EVENTS: LazyLock<Vec<NormalizedEvent>> = LazyLock::new(|| {
    let data = [
        serde_json::json!({"repo": "acme/app", "env": "prod", "tags": ["a", "hot"], "n": 5, "ok": true,
                           "nested": {"x": "y", "tags": {"k": 1}}}),
        serde_json::json!({"repo": "other", "tags": [], "n": 5.5, "ok": false, "vendor": "gh"}),
        serde_json::json!({"repo": 3, "env": ["prod"], "n": -1, "tags": "a"}),
    ];
    data.into_iter()
        .zip(["repo.push", "pr.opened", "deploy.done"])
        .map(|(data, kind)| {
            serde_json::from_value(serde_json::json!({
                "eventId": "e1", "kind": kind, "subject": "s",
                "source": {"type": "internal", "occurredAt": "2026-11-27T10:00:00Z"},
                "data": data, "depth": 1
            }))
            .expect("fixed events are valid")
        })
        .collect()
});

fn subscription(selector: &str) -> Subscription {
    serde_json::from_value(serde_json::json!({
        "workspaceId": "ws1", "subscriptionId": "s1", "sourceType": "internal",
        "workflowId": "wf", "selector": selector, "state": "active",
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"
    }))
    .expect("valid subscription")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.trim();
    let compiled = CompiledExpr::selector(text);
    if let Some(recognized) = recognize(text) {
        let compiled = compiled
            .as_ref()
            .expect("a recognized selector compiles with CEL");
        let arms = predicate::arms(compiled.expression());
        assert!(arms.iter().all(|a| a.residual.is_empty()), "{text}");
        let exact: Vec<_> = arms.into_iter().map(|a| a.exact).collect();
        let got: Vec<_> = recognized.arms.into_iter().map(|a| a.exact).collect();
        assert_eq!(got, exact, "{text}");
        assert_eq!(recognized.cost, compiled.cost(), "{text}");
    }
    let Ok(compiled) = compiled else {
        return;
    };
    let index = StartIndex::build([subscription(text)], &SelectorCache::with_capacity(4));
    for event in EVENTS.iter() {
        let expected = compiled.matches(&EventScope::new(event)) == Ok(true);
        let got = index.match_event(event, &LazyScope::new(event)).matched.len() == 1;
        assert_eq!(got, expected, "{text} on {}", event.kind.as_str());
    }
});
