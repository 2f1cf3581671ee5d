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
    let m = index.match_event(&e, &LazyScope::new(&e));
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
        ids(&index.match_event(&e, &LazyScope::new(&e))),
        ["k1", "k1-repo", "repo-only", "or"]
    );
    let e = event("workflow.failed", json!({"repo": 7}));
    assert_eq!(
        ids(&index.match_event(&e, &LazyScope::new(&e))),
        ["k2", "or"]
    );
}

#[test]
fn selector_errors_are_reported_as_no_match() {
    let cache = SelectorCache::default();
    let index = StartIndex::build(
        [
            subscription("nonbool", Some("event.kind")),
            subscription("missing", Some("size(event.data.absent) > 1")),
            // An indexed comparison on a missing field: not true, as in CEL, and never run.
            subscription("compared-missing", Some("event.data.absent > 1")),
            // Pinned on a field the event lacks: the pre-filter skips it (same no-match).
            subscription("pinned-missing", Some(r#"event.data.absent == "x""#)),
        ],
        &cache,
    );
    let e = event("workflow.completed", json!({}));
    let m = index.match_event(&e, &LazyScope::new(&e));
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
    let scope = LazyScope::new(&e);
    assert_eq!(
        match_single(subscription("a", Some("event.data.x == 1")), &scope, &cache)
            .matched
            .len(),
        1
    );
    assert!(
        match_single(subscription("b", Some("event.data.x == 2")), &scope, &cache)
            .matched
            .is_empty()
    );
    let mut paused = subscription("c", None);
    paused.state = SubscriptionState::Paused;
    assert!(match_single(paused, &scope, &cache).matched.is_empty());
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

/// A small deterministic generator for the property test (xorshift64*).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const KINDS: &[&str] = &["repo.push", "pr.opened", "deploy.done", "issue.new"];
const WORDS: &[&str] = &["a", "b", "acme", "main", "release/1", "rel", "", "x\"y"];
const FIELDS: &[&str] = &["env", "repo", "tags", "n", "flag", "nested", "ref"];

/// One conjunct: an indexable shape or something only CEL decides.
fn conjunct(g: &mut Gen) -> String {
    let w = g.pick(WORDS).replace('"', "\\\"");
    let f = g.pick(FIELDS);
    match g.below(20) {
        16 => format!("!has(event.data.nested.{f})"),
        17 => format!(
            "event.source.type == \"{}\"",
            g.pick(&["internal", "manual"])
        ),
        18 => format!("size(event.data.nested) >= {}", g.below(3)),
        19 => format!("event.data.nested.{f}.startsWith(\"{w}\") || event.data.{f} == 1"),
        0 => format!("event.kind == \"{}\"", g.pick(KINDS)),
        1 => format!(
            "event.kind in [\"{}\", \"{}\"]",
            g.pick(KINDS),
            g.pick(KINDS)
        ),
        2 => format!("event.data.{f} == \"{w}\""),
        3 => format!("\"{w}\" == event.data.{f}"),
        4 => format!("event.data.{f}.startsWith(\"{w}\")"),
        5 => format!("\"{w}\" in event.data.{f}"),
        6 => format!("event.data.{f}.exists(t, t == \"{w}\")"),
        7 => format!("has(event.data.{f})"),
        8 => format!(
            "event.data.{f} {} {}",
            g.pick(&[">", ">=", "<", "<="]),
            g.pick(&["5", "5.5", "-1", "0u", "9223372036854775807"])
        ),
        9 => format!("{} < event.data.{f}", g.pick(&["5", "2.0"])),
        10 => format!("event.data.{f} == {}", g.pick(&["true", "false"])),
        11 => format!("event.data.{f} in [\"{w}\", \"main\"]"),
        12 => format!("has(event.data.nested.{f})"),
        13 => format!("event.data.nested.{f} == \"{w}\""),
        14 => format!("size(event.data.{f}) > 1"),
        _ => format!("!(event.data.{f} == \"{w}\")"),
    }
}

fn selector(g: &mut Gen) -> String {
    let arm = |g: &mut Gen| {
        let n = 1 + g.below(3);
        (0..n).map(|_| conjunct(g)).collect::<Vec<_>>().join(" && ")
    };
    match g.below(5) {
        0 => format!("{} || {}", arm(g), arm(g)),
        1 => format!("({}) && ({} || {})", conjunct(g), conjunct(g), conjunct(g)),
        _ => arm(g),
    }
}

fn value(g: &mut Gen, depth: usize) -> Value {
    match g.below(if depth > 0 { 8 } else { 10 }) {
        0..=2 => json!(g.pick(WORDS)),
        3 => json!(g.below(12) as i64 - 2),
        4 => json!(5.5),
        5 => json!(g.below(2) == 0),
        6 => Value::Null,
        7 => json!([g.pick(WORDS), g.pick(WORDS), 3]),
        8 => json!({ g.pick(WORDS): 1, "main": "x" }),
        _ => {
            let mut nested = serde_json::Map::new();
            for _ in 0..g.below(4) {
                nested.insert(g.pick(FIELDS).to_owned(), value(g, depth + 1));
            }
            Value::Object(nested)
        }
    }
}

fn random_event(g: &mut Gen) -> NormalizedEvent {
    let mut data = serde_json::Map::new();
    for _ in 0..g.below(6) {
        data.insert(g.pick(FIELDS).to_owned(), value(g, 0));
    }
    event(g.pick(KINDS), Value::Object(data))
}

/// The engine decides exactly what plain CEL evaluation of every selector decides.
#[test]
fn the_index_matches_exactly_what_plain_cel_matches() {
    let mut g = Gen(0x5eed_1234_abcd_0001);
    let cache = SelectorCache::default();
    let mut selectors: Vec<String> = (0..400).map(|_| selector(&mut g)).collect();
    selectors.push("true".into());
    let subscriptions: Vec<Subscription> = selectors
        .iter()
        .enumerate()
        .map(|(i, s)| subscription(&format!("s{i:03}"), Some(s)))
        .collect();
    let index = StartIndex::build(subscriptions.clone(), &cache);
    let compiled: Vec<Option<CompiledExpr>> = selectors
        .iter()
        .map(|s| CompiledExpr::selector(s).ok())
        .collect();
    assert_eq!(index.len() + index.skipped().len(), subscriptions.len());
    let mut total = 0usize;
    for _ in 0..600 {
        let e = random_event(&mut g);
        let scope = EventScope::new(&e);
        let expected: Vec<&str> = compiled
            .iter()
            .zip(&subscriptions)
            .filter(|(c, _)| c.as_ref().is_some_and(|c| c.matches(&scope) == Ok(true)))
            .map(|(_, s)| s.subscription_id.as_str())
            .collect();
        let lazy = LazyScope::new(&e);
        let got = index.match_event(&e, &lazy);
        assert_eq!(
            ids(&got),
            expected,
            "event {}",
            serde_json::to_string(&e).unwrap()
        );
        total += expected.len();
    }
    assert!(total > 1000, "the generator must produce matches ({total})");
}

#[test]
fn selectors_made_of_indexed_predicates_match_without_converting_the_event() {
    let cache = SelectorCache::default();
    let index = StartIndex::build(
        [
            subscription(
                "a",
                Some(r#"event.kind == "repo.push" && event.data.repo.startsWith("acme/")"#),
            ),
            subscription(
                "b",
                Some(
                    r#"event.kind in ["repo.push"] && "hot" in event.data.tags && event.data.n >= 3"#,
                ),
            ),
            subscription(
                "c",
                Some(r#"has(event.data.vendor) || event.data.env == "prod""#),
            ),
            subscription(
                "same-as-a",
                Some(r#"event.kind == "repo.push" && event.data.repo.startsWith("acme/")"#),
            ),
            subscription(
                "residual",
                Some(r#"event.kind == "deploy.done" && size(event.data.tags) > 0"#),
            ),
        ],
        &cache,
    );
    assert_eq!(
        index.distinct_selectors(),
        4,
        "identical texts compile once"
    );
    let e = event(
        "repo.push",
        json!({"repo": "acme/app", "tags": ["hot"], "n": 3, "env": "prod"}),
    );
    let scope = LazyScope::new(&e);
    assert_eq!(
        ids(&index.match_event(&e, &scope)),
        ["a", "b", "c", "same-as-a"]
    );
    assert!(!scope.is_built(), "no CEL was needed");
    let e = event("deploy.done", json!({"tags": ["x"]}));
    let scope = LazyScope::new(&e);
    assert_eq!(ids(&index.match_event(&e, &scope)), ["residual"]);
    assert!(scope.is_built(), "the residual ran in CEL");
}

/// What the CEL route makes of a text: its arms when every conjunct is a predicate.
fn cel_arms(text: &str) -> Option<(Vec<Vec<Predicate>>, Cost)> {
    let compiled = CompiledExpr::selector(text).ok()?;
    let arms = predicate::arms(compiled.expression());
    arms.iter()
        .all(|a| a.residual.is_empty())
        .then(|| (arms.into_iter().map(|a| a.exact).collect(), compiled.cost()))
}

fn recognized_arms(text: &str) -> Option<(Vec<Vec<Predicate>>, Cost)> {
    recognize(text).map(|r| (r.arms.into_iter().map(|a| a.exact).collect(), r.cost))
}

/// A recognized text is one CEL compiles to exactly the same arms, predicates and cost
/// (so skipping the CEL parse changes nothing); most generated indexable texts are.
#[test]
fn recognized_selectors_have_exactly_the_arms_cel_gives_them() {
    let mut g = Gen(0x0dd5_eed5_0000_0013);
    let mut recognized = 0;
    for _ in 0..3000 {
        let text = selector(&mut g);
        if let Some(arms) = recognized_arms(&text) {
            assert_eq!(Some(arms), cel_arms(&text), "{text}");
            recognized += 1;
        }
    }
    assert!(recognized > 300, "only {recognized} recognized");
}

#[test]
fn the_recognizer_leaves_everything_outside_its_grammar_to_cel() {
    let deep = format!("{}event.kind == \"a\"{}", "(".repeat(9), ")".repeat(9));
    let long = vec![r#"event.data.n > 1"#; 17].join(" && ");
    // Found by the selector_index fuzz target: CEL counts brackets inside literals too.
    let bracketed = format!("(event.data.env == \"{}\")", "[".repeat(60));
    let refused = [
        r#"event.data.in == "x""#,
        r#"event.data.x == "a\"b""#,
        r#"event.data.x == """a""""#,
        r#"event.data.x == r"a""#,
        r#"event.data.n >= 5u"#,
        r#"event.data.n >= 05"#,
        r#"event.data.n >= 5.0"#,
        r#"event.data.n >= -1"#,
        r#"event.data.n >= 0x10"#,
        r#"event.data.n >= 99999999999999999999"#,
        r#"event.data.tags.exists(event, event == "x")"#,
        r#"event.data.tags.exists(t, u == "x")"#,
        r#"event.data.tags.exists(t, t == "x", 1)"#,
        r#"event.source.type == "internal""#,
        r#"event.data.x == "a" // note"#,
        r#"(event.data.x == "a" || event.kind == "b") && event.data.y == "c""#,
        r#"event.data.x == "a" == true"#,
        r#"event.data.x in []"#,
        r#"event.data.x in ["a",]"#,
        r#"event.data.x in ["a", 1]"#,
        r#"!has(event.data.x)"#,
        r#"has(event)"#,
        r#"event == "a""#,
        r#"event["data"] == "a""#,
        r#"event.data.x.size() == "a""#,
        r#"event.data.é == "a""#,
        "event.data.x == \"a\nb\"",
        &deep,
        &long,
        &bracketed,
    ];
    for text in refused {
        assert!(recognize(text).is_none(), "{text}");
    }
    let accepted = [
        r#"event.kind == 'pr.opened' && event.data.title == "it's""#,
        r#"(event.data.a == "1" && (event.data.b == "2")) || true == event.data.ok"#,
        r#"5 <= event.data.n && event.data.n < 10 && event.depth > 0"#,
        r#"has(event.data.vendor) && "x" in event.data.tags"#,
        "event.data.tags.exists(t,\n\t\"x\" == t) || event.data.repo.startsWith(\"acme/\")",
        r#"event.kind in ["a", "b"] && event.data.env in ["prod"]"#,
        "event.data.title == \"tab\there, ünïcödé, 🚀\" && event.data._x1 == 'x'",
        r#"event.eventId == "e1" || event.subject.startsWith("run-")"#,
    ];
    for text in accepted {
        let arms = recognized_arms(text);
        assert!(arms.is_some(), "{text}");
        assert_eq!(arms, cel_arms(text), "{text}");
    }
}
