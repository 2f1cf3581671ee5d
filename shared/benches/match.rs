//! Per-event start-match time against one workspace of N subscriptions with realistic
//! selectors: a pinned kind, a pinned repository and a numeric predicate (plus a few
//! unpinned `startsWith` selectors every event has to evaluate).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use custos_trigger::event::NormalizedEvent;
use custos_trigger::matching::StartIndex;
use custos_trigger::selector::{LazyScope, SelectorCache};
use custos_trigger::subscription::Subscription;
use serde_json::json;

const KINDS: [&str; 10] = [
    "pr.opened",
    "pr.merged",
    "pr.closed",
    "registry.push",
    "registry.tag",
    "scan.completed",
    "scan.vulnerable",
    "workflow.completed",
    "workflow.failed",
    "github.push",
];

fn subscription(i: usize, selector: String) -> Subscription {
    serde_json::from_value(json!({
        "workspaceId": "ws-bench", "subscriptionId": format!("sub{i:06}"), "sourceType": "internal",
        "workflowId": "wf", "targetWorkflowVersionId": "wv", "selector": selector, "state": "active",
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"
    }))
    .expect("valid subscription")
}

/// `n` subscriptions: two per (kind, repository) pair, one matching `n > 5`, one `n < 5`;
/// plus five unpinned selectors.
fn subscriptions(n: usize) -> Vec<Subscription> {
    let mut subs: Vec<Subscription> = (0..n.saturating_sub(5))
        .map(|i| {
            let kind = KINDS[i % KINDS.len()];
            let repo = i / (2 * KINDS.len());
            let cmp = if (i / KINDS.len()) % 2 == 0 { ">" } else { "<" };
            subscription(
                i,
                format!(r#"event.kind == "{kind}" && event.data.repo == "acme/repo-{repo}" && event.data.n {cmp} 5"#),
            )
        })
        .collect();
    subs.extend((0..5).map(|j| {
        subscription(
            n + j,
            format!(r#"event.data.branch.startsWith("release/{j}")"#),
        )
    }));
    subs
}

fn event(i: usize, repos: usize) -> NormalizedEvent {
    serde_json::from_value(json!({
        "eventId": format!("evt-{i}"), "kind": KINDS[i % KINDS.len()],
        "source": {"type": "internal", "occurredAt": "2026-11-26T00:00:00Z"},
        "subject": "run-1",
        "data": {"repo": format!("acme/repo-{}", i % repos.max(1)), "n": 7, "branch": "main",
                 "runId": "run-1", "workflowVersionId": "wv", "workspace": "ws-bench",
                 "labels": ["a", "b", "c"], "sha": "0123456789abcdef"}
    }))
    .expect("valid event")
}

fn bench_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    for n in [100usize, 10_000, 100_000] {
        let cache = SelectorCache::default();
        let index = StartIndex::build(subscriptions(n), &cache);
        let repos = n / (2 * KINDS.len());
        let events: Vec<NormalizedEvent> = (0..64).map(|i| event(i, repos)).collect();
        let matched: usize = events
            .iter()
            .map(|e| index.match_event(e, &LazyScope::new(e)).matched.len())
            .sum();
        eprintln!(
            "n={n}: {:.2} matches per event",
            matched as f64 / events.len() as f64
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut i = 0usize;
            b.iter(|| {
                let e = &events[i % events.len()];
                i += 1;
                let scope = LazyScope::new(e);
                black_box(index.match_event(e, &scope).matched.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_match);
criterion_main!(benches);
