//! The realistic matching workload of BENCHMARKS.md: a deterministic generator of one
//! workspace's start subscriptions and a stream of events, the engine's per-event time
//! (event → selector input conversion + matching + the matched list), index build time,
//! peak RSS, and a check against plain CEL evaluation of every selector on a sample of
//! events. It writes the workload for the Python peer (`scripts/bench-match`).
//!
//! `cargo run --release -p custos-trigger --example match_workload -- <subscriptions> <events> <out dir> [<events checked against plain CEL>]`
//!
//! The mix (values drawn Zipf(1.1) from pools, so selector texts repeat the way real
//! workspaces repeat them; 24 kinds, Zipf popular; one repository per 20 subscriptions
//! in 40 organisations; events carry repo, env, branch, 1-3 tags, priority 0-5, a title,
//! and 30% a vendor):
//! 35% `kind == K && data.repo == R`; 8% `kind == K && data.env == E && data.branch == B`;
//! 10% `kind == K && data.repo.startsWith("orgN/")`; 6% `kind == K && "T" in data.tags`;
//! 6% `kind == K && data.tags.exists(t, t == "T")`; 5% `kind in [K1, K2] && data.priority >= 5`;
//! 8% `data.vendor == V` (no kind); 6% `has(data.vendor) && data.repo == R` (no kind);
//! 8% `kind == K && data.title.contains("W")` (16 words) (a residual only CEL decides);
//! 8% `kind == K && data.repo == R || kind == K2 && data.branch == B`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use custos_trigger::event::NormalizedEvent;
use custos_trigger::matching::StartIndex;
use custos_trigger::selector::{CompiledExpr, EventScope, LazyScope, SelectorCache};
use custos_trigger::subscription::Subscription;
use custos_trigger::trace::TraceParent;
use serde_json::{json, Value};

/// xorshift64*: the same workload on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Zipf(s) over `0..n`, sampled through its cumulative distribution.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        Self(
            weights
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect(),
        )
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

struct Pools {
    kinds: Vec<String>,
    repos: Vec<String>,
    envs: Vec<&'static str>,
    branches: Vec<String>,
    tags: Vec<String>,
    vendors: Vec<String>,
    words: Vec<&'static str>,
    kind: Zipf,
    repo: Zipf,
    env: Zipf,
    branch: Zipf,
    tag: Zipf,
    vendor: Zipf,
    word: Zipf,
}

const DOMAINS: [&str; 6] = ["vcs", "pkg", "sec", "ops", "ticket", "build"];
const VERBS: [&str; 4] = ["created", "updated", "completed", "failed"];

impl Pools {
    fn new(subscriptions: usize) -> Self {
        let kinds = DOMAINS
            .iter()
            .flat_map(|d| VERBS.iter().map(move |v| format!("{d}.{v}")))
            .collect::<Vec<_>>();
        // Larger workspaces have more repositories (about one per 20 subscriptions).
        let repos = (0..(subscriptions / 20).max(20))
            .map(|i| format!("org{}/repo-{i}", i % 40))
            .collect::<Vec<_>>();
        Self {
            kind: Zipf::new(kinds.len(), 1.1),
            repo: Zipf::new(repos.len(), 1.1),
            env: Zipf::new(5, 1.1),
            branch: Zipf::new(30, 1.1),
            tag: Zipf::new(60, 1.1),
            vendor: Zipf::new(40, 1.1),
            word: Zipf::new(16, 1.1),
            kinds,
            repos,
            envs: vec!["prod", "staging", "dev", "qa", "perf"],
            branches: (0..30)
                .map(|i| {
                    if i == 0 {
                        "main".into()
                    } else {
                        format!("release/{i}")
                    }
                })
                .collect(),
            tags: (0..60).map(|i| format!("tag-{i}")).collect(),
            vendors: (0..40).map(|i| format!("vendor-{i}")).collect(),
            words: vec![
                "fix", "feat", "chore", "docs", "perf", "refactor", "test", "ci", "build",
                "revert", "style", "deps", "security", "release", "hotfix", "infra",
            ],
        }
    }

    fn pick<'a, T>(items: &'a [T], zipf: &Zipf, rng: &mut Rng) -> &'a T {
        &items[zipf.sample(rng)]
    }
}

/// One selector of the mix, with the kinds it pins (for the peer's kind index).
fn selector(p: &Pools, rng: &mut Rng) -> (String, Option<Vec<String>>) {
    let kind = Pools::pick(&p.kinds, &p.kind, rng).clone();
    let repo = Pools::pick(&p.repos, &p.repo, rng);
    let roll = rng.below(100);
    let one = Some(vec![kind.clone()]);
    match roll {
        0..=34 => (
            format!(r#"event.kind == "{kind}" && event.data.repo == "{repo}""#),
            one,
        ),
        35..=42 => (
            format!(
                r#"event.kind == "{kind}" && event.data.env == "{}" && event.data.branch == "{}""#,
                Pools::pick(&p.envs, &p.env, rng),
                Pools::pick(&p.branches, &p.branch, rng)
            ),
            one,
        ),
        43..=52 => {
            let org = repo.split('/').next().unwrap_or_default();
            (
                format!(r#"event.kind == "{kind}" && event.data.repo.startsWith("{org}/")"#),
                one,
            )
        }
        53..=58 => (
            format!(
                r#"event.kind == "{kind}" && "{}" in event.data.tags"#,
                Pools::pick(&p.tags, &p.tag, rng)
            ),
            one,
        ),
        59..=64 => (
            format!(
                r#"event.kind == "{kind}" && event.data.tags.exists(t, t == "{}")"#,
                Pools::pick(&p.tags, &p.tag, rng)
            ),
            one,
        ),
        65..=69 => {
            let other = Pools::pick(&p.kinds, &p.kind, rng).clone();
            let threshold = 5;
            (
                format!(
                    r#"event.kind in ["{kind}", "{other}"] && event.data.priority >= {threshold}"#
                ),
                Some(vec![kind, other]),
            )
        }
        70..=77 => (
            format!(
                r#"event.data.vendor == "{}""#,
                Pools::pick(&p.vendors, &p.vendor, rng)
            ),
            None,
        ),
        78..=83 => (
            format!(r#"has(event.data.vendor) && event.data.repo == "{repo}""#),
            None,
        ),
        84..=91 => (
            format!(
                r#"event.kind == "{kind}" && event.data.title.contains("{}")"#,
                Pools::pick(&p.words, &p.word, rng)
            ),
            one,
        ),
        _ => {
            let other = Pools::pick(&p.kinds, &p.kind, rng).clone();
            (
                format!(
                    r#"event.kind == "{kind}" && event.data.repo == "{repo}" || event.kind == "{other}" && event.data.branch == "{}""#,
                    Pools::pick(&p.branches, &p.branch, rng)
                ),
                Some(vec![kind, other]),
            )
        }
    }
}

fn event(p: &Pools, rng: &mut Rng, i: usize) -> NormalizedEvent {
    let tags: Vec<&String> = (0..1 + rng.below(3))
        .map(|_| Pools::pick(&p.tags, &p.tag, rng))
        .collect();
    let mut data = json!({
        "repo": Pools::pick(&p.repos, &p.repo, rng),
        "env": Pools::pick(&p.envs, &p.env, rng),
        "branch": Pools::pick(&p.branches, &p.branch, rng),
        "tags": tags,
        "priority": rng.below(6),
        "title": format!("{}: change {i}", Pools::pick(&p.words, &p.word, rng)),
        "sha": format!("{:016x}", rng.next()),
        "runId": format!("run-{i}"),
        "actor": format!("user-{}", rng.below(500)),
    });
    if rng.below(10) < 3 {
        data["vendor"] = json!(Pools::pick(&p.vendors, &p.vendor, rng));
    }
    serde_json::from_value(json!({
        "eventId": format!("evt-{i}"),
        "kind": Pools::pick(&p.kinds, &p.kind, rng),
        "source": {"type": "internal", "occurredAt": "2026-11-27T10:00:00Z"},
        "subject": format!("run-{i}"),
        "data": data,
    }))
    .expect("generated events are valid")
}

fn subscription(i: usize, selector: &str) -> Subscription {
    serde_json::from_value(json!({
        "workspaceId": "ws-bench", "subscriptionId": format!("sub{i:06}"), "sourceType": "internal",
        "workflowId": "wf", "targetWorkflowVersionId": "wv", "selector": selector, "state": "active",
        "inputMapping": {"repo": "${{ event.data.repo }}", "title": "${{ event.data.title }}"},
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"
    }))
    .expect("generated subscriptions are valid")
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Peak resident set of this process (`VmHWM`), in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let event_count: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let out = std::path::PathBuf::from(
        args.get(3)
            .cloned()
            .unwrap_or_else(|| "target/match-workload".into()),
    );
    std::fs::create_dir_all(&out).expect("output directory");

    let pools = Pools::new(n);
    let mut rng = Rng(0x00c0_ffee_0000_0001 ^ n as u64);
    let selectors: Vec<(String, Option<Vec<String>>)> =
        (0..n).map(|_| selector(&pools, &mut rng)).collect();
    let events: Vec<NormalizedEvent> = (0..event_count)
        .map(|i| event(&pools, &mut rng, i))
        .collect();
    // As the store hands them to the match stage: shared with the index, not copied.
    let subscriptions: Vec<Arc<Subscription>> = selectors
        .iter()
        .enumerate()
        .map(|(i, (s, _))| Arc::new(subscription(i, s)))
        .collect();

    let cache = SelectorCache::default();
    let started = Instant::now();
    let index = StartIndex::build(subscriptions, &cache);
    let build_us = started.elapsed().as_secs_f64() * 1e6;
    assert!(
        index.skipped().is_empty(),
        "every generated selector compiles"
    );

    // One pass to warm caches, then the measured pass, one event at a time.
    for e in &events {
        black_box(index.match_event(e, &LazyScope::new(e)).matched.len());
    }
    let mut times = Vec::with_capacity(events.len());
    let mut sets: Vec<Vec<u32>> = Vec::with_capacity(events.len());
    for e in &events {
        let started = Instant::now();
        let scope = LazyScope::new(e);
        let matched = index.match_event(e, &scope).matched;
        times.push(started.elapsed().as_secs_f64() * 1e6);
        sets.push(
            matched
                .iter()
                .map(|s| number_of(s.subscription_id.as_str()))
                .collect(),
        );
    }
    let rss = peak_rss_mb();
    // Fan-out: the dispatch messages of every match (inputs resolved, body serialized
    // as the match stage sends it), with matching, on the first 200 events.
    let workspace = custos_trigger::ids::WorkspaceId::new("ws-bench").expect("workspace id");
    let (mut fanout_us, mut fanout_bytes, mut fanout_messages) = (0.0, 0usize, 0usize);
    for e in events.iter().take(200) {
        let started = Instant::now();
        let scope = LazyScope::new(e);
        let memo = custos_trigger::mapping::Memo::default();
        let event_json = serde_json::to_string(e).expect("serializes");
        let trace = TraceParent::generate();
        for subscription in index.match_event(e, &scope).matched {
            // As the match stage: the CEL form only when a mapping reads it.
            let mapped = (!subscription.input_mapping.is_empty()).then(|| scope.get());
            fanout_bytes += dispatch_body(
                &workspace,
                mapped,
                &subscription,
                (&cache, &memo),
                (&event_json, &trace),
            );
            fanout_messages += 1;
        }
        fanout_us += started.elapsed().as_secs_f64() * 1e6;
    }
    // The messages alone (after matching, the event's CEL form and text made), per
    // message, over every event: what the fan-out target is about.
    let (mut messages_us, mut timed_messages) = (0.0, 0usize);
    for e in &events {
        let scope = LazyScope::new(e);
        let memo = custos_trigger::mapping::Memo::default();
        let event_json = serde_json::to_string(e).expect("serializes");
        let trace = TraceParent::generate();
        let matched = index.match_event(e, &scope).matched;
        if matched.is_empty() {
            continue;
        }
        // The CEL form is made once per event, before the clock starts.
        black_box(scope.get());
        let started = Instant::now();
        for subscription in &matched {
            let mapped = (!subscription.input_mapping.is_empty()).then(|| scope.get());
            dispatch_body(
                &workspace,
                mapped,
                subscription,
                (&cache, &memo),
                (&event_json, &trace),
            );
        }
        messages_us += started.elapsed().as_secs_f64() * 1e6;
        timed_messages += matched.len();
    }
    let fanout_events = events.len().min(200) as f64;
    let distinct = index.distinct_selectors();
    let with_cel = index.compiled_selectors();
    drop(index);
    // A rebuild (the match function refreshes its index every few seconds) finds the
    // compiled selectors in the cache.
    let reloaded: Vec<Arc<Subscription>> = selectors
        .iter()
        .enumerate()
        .map(|(i, (s, _))| Arc::new(subscription(i, s)))
        .collect();
    let started = Instant::now();
    let rebuilt = StartIndex::build(reloaded, &cache);
    let rebuild_us = started.elapsed().as_secs_f64() * 1e6;
    drop(rebuilt);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let matches_per_event = sets.iter().map(Vec::len).sum::<usize>() as f64 / events.len() as f64;

    // Plain CEL: every selector on every sampled event.
    let sample = args
        .get(4)
        .and_then(|a| a.parse().ok())
        .unwrap_or(if n > 20_000 { 50 } else { 300 })
        .min(events.len());
    let compiled: Vec<CompiledExpr> = selectors
        .iter()
        .map(|(s, _)| CompiledExpr::selector(s).expect("compiles"))
        .collect();
    let mut differing = 0usize;
    for (e, got) in events.iter().zip(&sets).take(sample) {
        let scope = EventScope::new(e);
        let expected: BTreeSet<u32> = (0u32..)
            .zip(&compiled)
            .filter(|(_, c)| c.matches(&scope) == Ok(true))
            .map(|(i, _)| i)
            .collect();
        let got: BTreeSet<u32> = got.iter().copied().collect();
        differing += usize::from(expected != got);
    }

    let subs_json: Vec<Value> = selectors
        .iter()
        .enumerate()
        .map(|(i, (s, kinds))| json!({"id": format!("sub{i:06}"), "selector": s, "kinds": kinds}))
        .collect();
    let write = |name: &str, value: &Value| {
        std::fs::write(out.join(name), value.to_string()).expect("write workload file");
    };
    write("subscriptions.json", &Value::Array(subs_json));
    write(
        "events.json",
        &Value::Array(events.iter().map(NormalizedEvent::to_json).collect()),
    );
    let matches: Vec<Vec<String>> = sets
        .iter()
        .map(|s| s.iter().map(|i| format!("sub{i:06}")).collect())
        .collect();
    let report = json!({
        "subscriptions": n,
        "distinctSelectors": distinct,
        "celSelectors": with_cel,
        "events": events.len(),
        "medianUs": percentile(&sorted, 0.5),
        "p99Us": percentile(&sorted, 0.99),
        "matchesPerEvent": matches_per_event,
        "buildUsPerSubscription": build_us / n as f64,
        "rebuildUsPerSubscription": rebuild_us / n as f64,
        "peakRssMb": rss,
        "fanoutUsPerEvent": fanout_us / fanout_events,
        "messageUs": messages_us / timed_messages.max(1) as f64,
        "dispatchBytesPerMessage": fanout_bytes as f64 / fanout_messages.max(1) as f64,
        "celCheckedEvents": sample,
        "celDiffering": differing,
        "matches": matches,
    });
    write("rust.json", &report);
    println!(
        "fan-out n={n:>7}: match + {:.1} dispatch messages per event built in {:.1}µs, {:.0} bytes each",
        fanout_messages as f64 / fanout_events,
        fanout_us / fanout_events,
        fanout_bytes as f64 / fanout_messages.max(1) as f64
    );
    println!(
        "messages n={n:>7}: {:.3}µs per dispatch message alone ({timed_messages} messages, every event)",
        messages_us / timed_messages.max(1) as f64
    );
    println!(
        "rust  n={n:>7} distinct={distinct:>6} (CEL {with_cel:>5}) median={:>8.2}µs p99={:>8.2}µs matches/event={:>7.1} build={:>5.2}µs/sub rebuild={:>5.2}µs/sub rss={:>6.1}MB cel-check: {}/{} events identical",
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        matches_per_event,
        build_us / n as f64,
        rebuild_us / n as f64,
        rss,
        sample - differing,
        sample
    );
}

/// One match's queue body, as the match stage writes it for a subscription without
/// flow control (with its own child of the event's trace); its own function (never
/// inlined) so `valgrind --tool=callgrind --toggle-collect='*dispatch_body*'` counts the
/// per-message cost alone.
#[inline(never)]
fn dispatch_body(
    workspace: &custos_trigger::ids::WorkspaceId,
    scope: Option<&EventScope>,
    subscription: &Subscription,
    (cache, memo): (&SelectorCache, &custos_trigger::mapping::Memo),
    (event_json, trace): (&str, &TraceParent),
) -> usize {
    let trace = trace.child();
    let draft = custos_trigger::dispatch::StartDraft {
        workspace_id: workspace,
        subscription,
        trace: Some(&trace),
        received_ms: Some(1_764_892_800_000),
    };
    let body = custos_trigger::stage::matcher::start_body(&draft, scope, (cache, memo), event_json)
        .expect("fits");
    black_box(body).len()
}

/// `sub000042` → 42.
fn number_of(id: &str) -> u32 {
    id.trim_start_matches("sub").parse().unwrap_or(u32::MAX)
}
