//! Start and resume matching, including that the pre-filter never changes results.

use serde_json::json;

use super::*;
use crate::ids::WorkspaceId;
use crate::subscription::{SubscriptionKind, SubscriptionState};

pub(crate) fn subscription(id: &str, selector: Option<&str>) -> Subscription {
    serde_json::from_value(json!({
        "workspaceId": "ws1", "subscriptionId": id, "sourceType": "internal",
        "workflowId": "wf", "targetWorkflowVersionId": "wv1", "selector": selector,
        "state": "active", "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"
    }))
    .unwrap()
}

fn event(kind: &str, data: Value) -> NormalizedEvent {
    serde_json::from_value(json!({
        "eventId": "e1", "kind": kind, "source": {"type": "internal", "occurredAt": "t"}, "data": data
    }))
    .unwrap()
}

fn ids(matches: &StartMatches) -> Vec<&str> {
    matches
        .matched
        .iter()
        .map(|s| s.subscription_id.as_str())
        .collect()
}

#[test]
fn no_selector_is_unconditional_and_selectors_gate() {
    let cache = SelectorCache::default();
    let index = StartIndex::build(
        [
            subscription("all", None),
            subscription("blank", Some("  ")),
            subscription("repo", Some(r#"event.data.repo == "acme""#)),
            subscription("other", Some(r#"event.data.repo == "other""#)),
        ],
        &cache,
    );
    let e = event("workflow.completed", json!({"repo": "acme"}));
    let m = index.match_event(&e, &EventScope::new(&e));
    assert_eq!(ids(&m), ["all", "blank", "repo"]);
    assert!(m.failures.is_empty());
}

#[test]
fn paused_expired_and_resume_kind_subscriptions_never_match() {
    let cache = SelectorCache::default();
    let mut paused = subscription("paused", None);
    paused.state = SubscriptionState::Paused;
    let mut expired = subscription("expired", None);
    expired.state = SubscriptionState::Expired;
    let mut resume = subscription("resume", None);
    resume.kind = SubscriptionKind::Resume;
    let index = StartIndex::build([paused, expired, resume], &cache);
    assert!(index.is_empty());
}

#[test]
fn kind_and_field_pins_prefilter_without_changing_results() {
    let cache = SelectorCache::default();
    let index = StartIndex::build(
        [
            subscription("k1", Some(r#"event.kind == "workflow.completed""#)),
            subscription("k2", Some(r#"event.kind == "workflow.failed""#)),
            subscription(
                "k1-repo",
                Some(
                    r#"event.kind == "workflow.completed" && event.data.repo == "acme" && event.data.n > 1"#,
                ),
            ),
            subscription("repo-only", Some(r#""acme" == event.data.repo"#)),
            subscription("repo-other", Some(r#"event.data.repo == "zzz""#)),
            subscription(
                "or",
                Some(r#"event.kind == "workflow.failed" || event.data.n == 5"#),
            ),
        ],
        &cache,
    );
    assert_eq!(index.len(), 6);
    let e = event("workflow.completed", json!({"repo": "acme", "n": 5}));
    assert_eq!(
        ids(&index.match_event(&e, &EventScope::new(&e))),
        ["k1", "k1-repo", "repo-only", "or"]
    );
    let e = event("workflow.failed", json!({"repo": 7}));
    assert_eq!(
        ids(&index.match_event(&e, &EventScope::new(&e))),
        ["k2", "or"]
    );
}

#[test]
fn selector_errors_are_reported_as_no_match() {
    let cache = SelectorCache::default();
    let index = StartIndex::build(
        [
            subscription("nonbool", Some("event.kind")),
            subscription("missing", Some("event.data.absent > 1")),
            // Pinned on a field the event lacks: the pre-filter skips it (same no-match).
            subscription("pinned-missing", Some(r#"event.data.absent == "x""#)),
        ],
        &cache,
    );
    let e = event("workflow.completed", json!({}));
    let m = index.match_event(&e, &EventScope::new(&e));
    assert!(m.matched.is_empty());
    assert_eq!(m.failures.len(), 2);
    assert_eq!(
        m.failures[0].error,
        EvalError::NotBoolean {
            result_type: "string".into()
        }
    );
    assert!(matches!(m.failures[1].error, EvalError::Execution(_)));
}

#[test]
fn stored_selectors_that_no_longer_compile_are_skipped() {
    let cache = SelectorCache::default();
    let index = StartIndex::build(
        [
            subscription("bad", Some("event.kind ==")),
            subscription("ok", None),
        ],
        &cache,
    );
    assert_eq!(index.len(), 1);
    assert_eq!(index.skipped()[0].subscription_id, "bad");
}

#[test]
fn match_single_applies_state_and_selector() {
    let cache = SelectorCache::default();
    let e = event("workflow.completed", json!({"x": 1}));
    let scope = EventScope::new(&e);
    assert_eq!(
        match_single(
            subscription("a", Some("event.data.x == 1")),
            &scope,
            &e,
            &cache
        )
        .matched
        .len(),
        1
    );
    assert!(match_single(
        subscription("b", Some("event.data.x == 2")),
        &scope,
        &e,
        &cache
    )
    .matched
    .is_empty());
    let mut paused = subscription("c", None);
    paused.state = SubscriptionState::Paused;
    assert!(match_single(paused, &scope, &e, &cache).matched.is_empty());
}

#[test]
fn resume_key_needs_non_empty_string_run_and_step() {
    let key = resume_key(&event(
        "step.succeeded",
        json!({"runId": "r", "stepId": "s"}),
    ))
    .unwrap();
    assert_eq!(
        (
            key.run_id.as_str(),
            key.step_id.as_str(),
            key.event_key.as_str()
        ),
        ("r", "s", "step.succeeded")
    );
    for data in [
        json!({"stepId": "s"}),
        json!({"runId": "r"}),
        json!({"runId": 1, "stepId": "s"}),
        json!({"runId": "r", "stepId": ""}),
    ] {
        assert_eq!(
            resume_key(&event("step.succeeded", data.clone())),
            None,
            "{data}"
        );
    }
}

fn wait(selector: Option<&str>, expires_at: i64) -> ResumeWait {
    let key = ResumeKey {
        run_id: "r".into(),
        step_id: "s".into(),
        event_key: "step.succeeded".into(),
    };
    ResumeWait {
        resume_id: key.resume_id(),
        run_id: "r".into(),
        step_id: "s".into(),
        event_key: "step.succeeded".into(),
        selector: selector.map(str::to_owned),
        workspace_id: Some(WorkspaceId::new("ws1").unwrap()),
        expires_at,
        generation: "g1".into(),
        taken: None,
        consumed_by: None,
    }
}

#[test]
fn resume_requires_exact_triple_live_wait_same_workspace_and_selector() {
    let cache = SelectorCache::default();
    let ws = WorkspaceId::new("ws1").unwrap();
    let e = event(
        "step.succeeded",
        json!({"runId": "r", "stepId": "s", "ok": true}),
    );
    let scope = EventScope::new(&e);
    let key = resume_key(&e).unwrap();
    let decide = |w: &ResumeWait, ws: &WorkspaceId| match_resume(w, &key, ws, &scope, 100, &cache);
    assert_eq!(decide(&wait(None, 200), &ws), ResumeDecision::Matched);
    assert_eq!(
        decide(&wait(Some("event.data.ok"), 200), &ws),
        ResumeDecision::Matched
    );
    assert_eq!(
        decide(&wait(Some("!event.data.ok"), 200), &ws),
        ResumeDecision::SelectorFalse
    );
    assert!(matches!(
        decide(&wait(Some("event.kind"), 200), &ws),
        ResumeDecision::SelectorFailed(EvalError::NotBoolean { .. })
    ));
    assert_eq!(decide(&wait(None, 100), &ws), ResumeDecision::Lapsed);
    assert_eq!(
        decide(&wait(None, 200), &WorkspaceId::new("ws2").unwrap()),
        ResumeDecision::OtherWorkspace
    );
    let mut other_step = wait(None, 200);
    other_step.step_id = "s2".into();
    assert_eq!(decide(&other_step, &ws), ResumeDecision::KeyMismatch);
}
