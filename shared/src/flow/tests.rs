use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::{Notify, Semaphore};

use super::*;
use crate::flow::gate::{Fire, Joined, Take, STALE_HEAD_MS};
use crate::ids::{EventId, SubscriptionId, WorkspaceId};
use crate::memory::MemoryFlowStore;
use crate::selector::{EventScope, SelectorCache};
use crate::store::StoreError;

fn spec(value: serde_json::Value) -> FlowSpec {
    FlowSpec::parse(&value).unwrap()
}

fn scope(repo: &str) -> EventScope {
    EventScope::from_json(json!({"kind": "push", "data": {"repo": repo}}), None)
}

struct Decide<'a> {
    gate: &'a FlowGate,
    flow: &'a FlowSpec,
    cache: SelectorCache,
}

/// Workspace `ws`, subscription `sub` and an event: what a [`Subject`] borrows.
struct Names {
    workspace: WorkspaceId,
    subscription: SubscriptionId,
    event_id: EventId,
}

impl Names {
    fn of(event: &str) -> Self {
        Self {
            workspace: WorkspaceId::new("ws").unwrap(),
            subscription: SubscriptionId::new("sub").unwrap(),
            event_id: EventId::new(event).unwrap(),
        }
    }

    fn at<'a>(&'a self, scope: &'a EventScope, now_ms: i64) -> Subject<'a> {
        Subject {
            workspace: &self.workspace,
            subscription: &self.subscription,
            event_id: &self.event_id,
            scope,
            now_ms,
        }
    }
}

fn decide<'a>(gate: &'a FlowGate, flow: &'a FlowSpec) -> Decide<'a> {
    Decide {
        gate,
        flow,
        cache: SelectorCache::default(),
    }
}

impl Decide<'_> {
    async fn at(&self, event: &str, scope: &EventScope, now_ms: i64) -> Verdict {
        let names = Names::of(event);
        let subject = names.at(scope, now_ms);
        self.gate
            .decide(self.flow, &subject, &self.cache)
            .await
            .unwrap()
    }
}

fn gate() -> FlowGate {
    FlowGate::new(Arc::new(MemoryFlowStore::default()))
}

fn runs(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Run { .. })
}

#[tokio::test]
async fn a_rate_limit_of_one_a_minute_runs_one_of_ten_and_the_next_a_minute_later() {
    let flow = spec(json!({"rateLimit": {"limit": 1, "period": "PT1M"}}));
    let gate = gate();
    let decide = decide(&gate, &flow);
    let mut verdicts = Vec::new();
    for i in 0..10 {
        verdicts.push(
            decide
                .at(&format!("e{i}"), &scope("a"), 1_000 + i * 100)
                .await,
        );
    }
    assert_eq!(verdicts.iter().filter(|v| runs(v)).count(), 1);
    assert!(runs(&verdicts[0]));
    assert!(matches!(
        &verdicts[1],
        Verdict::Skip {
            mode: Mode::RateLimit,
            owner: None,
            ..
        }
    ));
    assert!(runs(&decide.at("later", &scope("a"), 61_000).await));
}

#[tokio::test]
async fn a_throttle_delays_the_excess_in_order_and_drops_nothing() {
    let flow = spec(json!({"throttle": {"limit": 2, "period": "PT10S"}}));
    let gate = gate();
    let decide = decide(&gate, &flow);
    let mut slots = Vec::new();
    for i in 0..20 {
        match decide.at(&format!("e{i}"), &scope("a"), 10_000 + i).await {
            Verdict::Run { not_before_ms, .. } => slots.push(not_before_ms.unwrap_or(10_000 + i)),
            skipped => panic!("a throttle never skips: {skipped:?}"),
        }
    }
    assert_eq!(slots[0], 10_000);
    assert_eq!(slots[19], 10_000 + 19 * 5_000);
    assert!(slots
        .windows(2)
        .all(|w| w[1] - w[0] == 5_000 || w[1] - w[0] == 4_999));
}

#[tokio::test]
async fn an_idempotency_key_runs_once_per_period_and_a_redelivery_keeps_its_run() {
    let flow = spec(json!({"idempotency": {"key": "event.data.repo", "period": "PT1H"}}));
    let gate = gate();
    let decide = decide(&gate, &flow);
    assert!(runs(&decide.at("first", &scope("acme/api"), 0).await));
    assert_eq!(
        decide.at("second", &scope("acme/api"), 1_000).await,
        Verdict::Skip {
            mode: Mode::Idempotency,
            detail: "event first already took this key within PT1H".into(),
            owner: Some(EventId::new("first").unwrap()),
        }
    );
    assert!(
        runs(&decide.at("first", &scope("acme/api"), 2_000).await),
        "redelivery"
    );
    assert!(
        runs(&decide.at("other-repo", &scope("acme/web"), 2_000).await),
        "own key"
    );
    assert!(runs(
        &decide.at("next-hour", &scope("acme/api"), 3_600_000).await
    ));
}

#[tokio::test]
async fn keys_make_buckets_and_a_key_that_does_not_evaluate_shares_the_null_bucket() {
    let flow = spec(json!({"rateLimit": {"key": "event.data.repo", "limit": 1, "period": "PT1M"}}));
    let gate = gate();
    let decide = decide(&gate, &flow);
    assert!(runs(&decide.at("a1", &scope("a"), 0).await));
    assert!(runs(&decide.at("b1", &scope("b"), 0).await));
    assert!(!runs(&decide.at("a2", &scope("a"), 0).await));
    let keyless = EventScope::from_json(json!({"kind": "push", "data": {}}), None);
    assert!(runs(&decide.at("n1", &keyless, 0).await));
    assert!(
        !runs(&decide.at("n2", &keyless, 0).await),
        "missing keys share one bucket"
    );
}

#[tokio::test]
async fn skipped_events_take_no_throttle_slot() {
    let flow = spec(json!({
        "idempotency": {"period": "PT1M"},
        "throttle": {"limit": 1, "period": "PT2M"}
    }));
    let gate = gate();
    let decide = decide(&gate, &flow);
    assert_eq!(
        decide.at("a", &scope("x"), 0).await,
        Verdict::Run {
            not_before_ms: None,
            slots: None
        }
    );
    assert!(!runs(&decide.at("b", &scope("x"), 0).await));
    assert_eq!(
        decide.at("c", &scope("x"), 60_000).await,
        Verdict::Run {
            not_before_ms: Some(120_000),
            slots: None
        },
        "b took no slot: c has the second one, not the third"
    );
}

/// The memory store with handles into a decision: reads that pause until released
/// (`paused` permits: the decision sleeps between its read and its write while another
/// completes), reads that take a while (`read_delay`: decisions side by side overlap, as
/// on a network store), joins other instances win (`losses`), and counts of reads,
/// writes and lost joins.
struct ProbeStore {
    inner: MemoryFlowStore,
    paused: Semaphore,
    reached: Notify,
    release: Notify,
    read_delay: Option<std::time::Duration>,
    losses: AtomicUsize,
    loads: AtomicUsize,
    swaps: AtomicUsize,
    lost: AtomicUsize,
}

impl Default for ProbeStore {
    fn default() -> Self {
        Self {
            inner: MemoryFlowStore::default(),
            paused: Semaphore::new(0),
            reached: Notify::new(),
            release: Notify::new(),
            read_delay: None,
            losses: AtomicUsize::new(0),
            loads: AtomicUsize::new(0),
            swaps: AtomicUsize::new(0),
            lost: AtomicUsize::new(0),
        }
    }
}

impl ProbeStore {
    /// Pauses the first `permits` loads (more can be added later).
    fn with_permits(permits: usize) -> Arc<Self> {
        let store = Self::default();
        store.paused.add_permits(permits);
        Arc::new(store)
    }

    fn count(counter: &AtomicUsize) -> usize {
        counter.load(Relaxed)
    }
}

#[async_trait::async_trait]
impl FlowStore for ProbeStore {
    async fn load(&self, cell_id: &str) -> Result<Option<FlowCell>, StoreError> {
        self.loads.fetch_add(1, Relaxed);
        let loaded = self.inner.load(cell_id).await;
        if let Ok(permit) = self.paused.try_acquire() {
            permit.forget();
            self.reached.notify_one();
            self.release.notified().await;
        }
        if let Some(delay) = self.read_delay {
            tokio::time::sleep(delay).await;
        }
        loaded
    }

    async fn swap(
        &self,
        cell_id: &str,
        cell: &FlowCell,
        expected: Option<u64>,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        self.swaps.fetch_add(1, Relaxed);
        self.inner.swap(cell_id, cell, expected, expires_at).await
    }

    async fn swap_pair(
        &self,
        first: CellWrite<'_>,
        second: CellWrite<'_>,
    ) -> Result<bool, StoreError> {
        self.swaps.fetch_add(1, Relaxed);
        let outrun = self
            .losses
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok();
        let won = !outrun && self.inner.swap_pair(first, second).await?;
        if !won {
            self.lost.fetch_add(1, Relaxed);
        }
        Ok(won)
    }
}

#[tokio::test]
async fn two_instances_racing_for_the_last_slot_start_one_run() {
    let store = ProbeStore::with_permits(1);
    let gate = Arc::new(FlowGate::new(store.clone()));
    let flow = Arc::new(spec(json!({"rateLimit": {"limit": 1, "period": "PT1M"}})));
    let slow = {
        let (gate, flow) = (gate.clone(), flow.clone());
        tokio::spawn(async move {
            let decide = decide(&gate, &flow);
            decide.at("slow", &scope("a"), 0).await
        })
    };
    // The slow instance has read an empty bucket and waits before writing.
    store.reached.notified().await;
    let decide = decide(&gate, &flow);
    let fast = decide.at("fast", &scope("a"), 0).await;
    store.release.notify_one();
    let slow = slow.await.unwrap();
    assert!(runs(&fast));
    assert!(
        matches!(
            slow,
            Verdict::Skip {
                mode: Mode::RateLimit,
                ..
            }
        ),
        "the slow write lost its compare-and-set and re-read a full bucket: {slow:?}"
    );
}

#[test]
fn authored_flows_are_checked() {
    let refused = |value: serde_json::Value| FlowSpec::parse(&value).unwrap_err().to_string();
    assert!(
        refused(json!({"rateLimit": {"limit": 0, "period": "PT1M"}})).contains("rateLimit.limit")
    );
    assert!(refused(json!({"throttle": {"limit": 1, "period": "PT0S"}})).contains("PT0S"));
    assert!(refused(json!({"idempotency": {"period": "P8D"}})).contains("7 days"));
    assert!(refused(json!({"idempotency": {"period": "1m"}})).contains("ISO-8601"));
    assert!(
        refused(json!({"rateLimit": {"key": "event.(", "limit": 1, "period": "PT1M"}}))
            .contains("rateLimit.key")
    );
    assert!(
        refused(json!({"rateLimit": {"key": " ", "limit": 1, "period": "PT1M"}})).contains("blank")
    );
    assert!(refused(json!({"priority": {"run": 5}})).contains("priority"));
    assert!(
        refused(json!({"batch": {"maxSize": 501, "timeout": "PT1M"}})).contains("batch.maxSize")
    );
    assert!(
        refused(json!({"batch": {"maxSize": 5, "timeout": "PT1M"}, "singleton": {}}))
            .contains("combined")
    );
    assert!(
        refused(json!({"throttle": {"limit": 2, "period": "PT1M", "burst": 0}}))
            .contains("throttle.burst")
    );
    let kept = spec(
        json!({"throttle": {"key": "event.data.repo", "limit": 2, "period": "PT10S", "burst": 2}}),
    );
    assert_eq!(
        serde_json::to_value(&kept).unwrap(),
        json!({"throttle": {"key": "event.data.repo", "limit": 2, "period": "PT10S", "burst": 2}}),
        "stored and shown as written"
    );
    assert!(spec(json!({})).is_empty());
}

async fn enter(gate: &FlowGate, flow: &FlowSpec, event: &str, now_ms: i64) -> (String, i64) {
    let (names, scope) = (Names::of(event), scope("a"));
    let subject = names.at(&scope, now_ms);
    let mode = flow.debounce.as_ref().unwrap();
    let cache = SelectorCache::default();
    let due = gate.debounce(mode, &subject, now_ms, &cache).await.unwrap();
    (gate.debounce_cell(mode, &subject, &cache), due)
}

fn id(event: &str) -> EventId {
    EventId::new(event).unwrap()
}

#[tokio::test]
async fn a_debounce_window_runs_its_last_event_once_after_a_quiet_period() {
    let flow = spec(json!({"debounce": {"period": "PT5S"}}));
    let gate = gate();
    let mut dues = Vec::new();
    for i in 0..5 {
        dues.push(enter(&gate, &flow, &format!("e{i}"), i * 1_000).await);
    }
    let cell = dues[0].0.clone();
    assert_eq!(
        dues.iter().map(|(_, due)| *due).collect::<Vec<_>>(),
        [5_000, 6_000, 7_000, 8_000, 9_000]
    );
    assert_eq!(
        gate.fire(&cell, &id("e0"), 5_000).await.unwrap(),
        Fire::Debounced {
            latest: Some(id("e4"))
        }
    );
    assert_eq!(
        gate.fire(&cell, &id("e4"), 5_000).await.unwrap(),
        Fire::Wait { until_ms: 9_000 },
        "too early for the latest: it waits for its due time"
    );
    assert_eq!(gate.fire(&cell, &id("e4"), 9_000).await.unwrap(), Fire::Run);
    assert_eq!(
        gate.fire(&cell, &id("e4"), 9_500).await.unwrap(),
        Fire::Run,
        "a redelivered check of the winner runs again (the ledger makes it a duplicate)"
    );
    assert_eq!(
        gate.fire(&cell, &id("e3"), 9_500).await.unwrap(),
        Fire::Debounced {
            latest: Some(id("e4"))
        }
    );
    let (_, due) = enter(&gate, &flow, "e5", 20_000).await;
    assert_eq!(
        due, 25_000,
        "after the run, the next event opens a new window"
    );
}

#[tokio::test]
async fn a_debounce_timeout_caps_how_long_a_steady_stream_postpones_its_run() {
    let flow = spec(json!({"debounce": {"period": "PT5S", "timeout": "PT10S"}}));
    let gate = gate();
    let mut dues = Vec::new();
    for i in 0..6 {
        dues.push(enter(&gate, &flow, &format!("e{i}"), i * 2_000).await.1);
    }
    assert_eq!(dues, [5_000, 7_000, 9_000, 10_000, 10_000, 10_000]);
    let (cell, _) = enter(&gate, &flow, "e6", 10_500).await;
    assert_eq!(
        gate.fire(&cell, &id("e6"), 10_500).await.unwrap(),
        Fire::Run,
        "past the timeout an event's window is due at once"
    );
}

#[tokio::test]
async fn an_event_entering_while_the_window_closes_either_wins_it_or_opens_the_next() {
    let store = ProbeStore::with_permits(0);
    let gate = Arc::new(FlowGate::new(store.clone()));
    let flow = spec(json!({"debounce": {"period": "PT5S"}}));
    let (cell, _) = enter(&gate, &flow, "e0", 0).await;
    // The check of e0 reads the cell (e0 is latest, due) and pauses before closing it.
    store.paused.add_permits(1);
    let check = {
        let (gate, cell) = (gate.clone(), cell.clone());
        tokio::spawn(async move { gate.fire(&cell, &id("e0"), 5_000).await.unwrap() })
    };
    store.reached.notified().await;
    let (_, due) = enter(&gate, &flow, "e1", 5_000).await;
    assert_eq!(due, 10_000);
    store.release.notify_one();
    assert_eq!(
        check.await.unwrap(),
        Fire::Debounced {
            latest: Some(id("e1"))
        },
        "the close lost its compare-and-set: e1 came first and runs instead"
    );
    assert_eq!(
        gate.fire(&cell, &id("e1"), 10_000).await.unwrap(),
        Fire::Run
    );
}

#[test]
fn debounce_is_not_combined_with_the_counting_modes() {
    let refused = FlowSpec::parse(&json!({
        "debounce": {"period": "PT5S"}, "throttle": {"limit": 1, "period": "PT1M"}
    }))
    .unwrap_err();
    assert_eq!(refused.path, "debounce");
    assert!(FlowSpec::parse(
        &json!({"debounce": {"key": "event.data.repo", "period": "PT5S", "timeout": "PT1M"}})
    )
    .is_ok());
}

/// The flow table calls of 100 uncontended events per mode (the figures in
/// BENCHMARKS.md "Flow control"): one read and one conditional write per counting mode
/// an event passes, a read alone when it is refused.
#[tokio::test]
async fn each_mode_costs_one_read_and_at_most_one_write_per_event() {
    let cases = [
        (
            json!({"rateLimit": {"limit": 10, "period": "PT1M"}}),
            (100, 10),
        ),
        (
            json!({"throttle": {"limit": 10, "period": "PT1M"}}),
            (100, 100),
        ),
        (json!({"idempotency": {"period": "PT1M"}}), (100, 1)),
        (
            json!({"idempotency": {"period": "PT1M"}, "rateLimit": {"limit": 10, "period": "PT1M"}}),
            (101, 2),
        ),
    ];
    for (flow, (loads, swaps)) in cases {
        let store = Arc::new(ProbeStore::default());
        let gate = FlowGate::new(store.clone());
        let spec = spec(flow.clone());
        let decide = decide(&gate, &spec);
        for i in 0..100 {
            decide.at(&format!("e{i}"), &scope("a"), 1_000).await;
        }
        let counted = (
            ProbeStore::count(&store.loads),
            ProbeStore::count(&store.swaps),
        );
        assert_eq!(counted, (loads, swaps), "{flow}");
    }
    // Batch: the key's cell and the event's membership read, both written in one
    // transaction; one seal when the full batch is replaced.
    let store = Arc::new(ProbeStore::default());
    let gate = FlowGate::new(store.clone());
    let batched = spec(json!({"batch": {"maxSize": 50, "timeout": "PT10S"}}));
    for i in 0..100 {
        join(&gate, &batched, &format!("e{i}"), i).await;
    }
    let counted = (
        ProbeStore::count(&store.loads),
        ProbeStore::count(&store.swaps),
    );
    assert_eq!(counted, (200, 101), "batch");

    // Debounce: one read and one write to enter the window, then at each event's due
    // time one read, and one write to close the window for the last.
    let store = Arc::new(ProbeStore::default());
    let gate = FlowGate::new(store.clone());
    let spec = spec(json!({"debounce": {"period": "PT5S"}}));
    let mut entered = Vec::new();
    for i in 0..100 {
        entered.push(enter(&gate, &spec, &format!("e{i}"), i).await);
    }
    for (i, (cell, due)) in entered.iter().enumerate() {
        gate.fire(cell, &id(&format!("e{i}")), *due).await.unwrap();
    }
    let counted = (
        ProbeStore::count(&store.loads),
        ProbeStore::count(&store.swaps),
    );
    assert_eq!(counted, (200, 101));

    // Concurrency with a free slot for each: join the line at match, take the slot at
    // dispatch, link the run, and give the slot back at the run's end.
    let store = Arc::new(ProbeStore::default());
    let gate = FlowGate::new(store.clone());
    let limited = super::FlowSpec::parse(&json!({"concurrency": {"limit": 100}})).unwrap();
    let ws = WorkspaceId::new("ws").unwrap();
    let verdicts: Vec<Verdict> = {
        let names: Vec<String> = (0..100).map(|i| format!("e{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        line_up(&gate, &limited, &names, 0).await
    };
    for (i, verdict) in verdicts.iter().enumerate() {
        let slots = slots_of(verdict);
        let event = id(&format!("e{i}"));
        assert_eq!(gate.take(&slots, &event, 1).await.unwrap(), Take::Go);
        gate.link_run(&ws, &format!("run-{i}"), &slots, &event, 1)
            .await
            .unwrap();
    }
    for i in 0..100 {
        assert!(gate.run_ended(&ws, &format!("run-{i}"), 2).await.unwrap());
    }
    let counted = (
        ProbeStore::count(&store.loads),
        ProbeStore::count(&store.swaps),
    );
    assert_eq!(counted, (400, 400));
}

/// Decides events of one bucket of `flow` at `now_ms`: the slots of those that run.
async fn line_up(gate: &FlowGate, flow: &FlowSpec, events: &[&str], now_ms: i64) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    for event in events {
        let decide = decide(gate, flow);
        verdicts.push(decide.at(event, &scope("a"), now_ms).await);
    }
    verdicts
}

fn slots_of(verdict: &Verdict) -> Slots {
    match verdict {
        Verdict::Run {
            slots: Some(slots), ..
        } => slots.clone(),
        other => panic!("no slot: {other:?}"),
    }
}

#[tokio::test]
async fn a_concurrency_limit_runs_two_at_a_time_and_the_rest_in_arrival_order() {
    let gate = gate();
    let flow = spec(json!({"concurrency": {"limit": 2}}));
    let verdicts = line_up(&gate, &flow, &["e0", "e1", "e2", "e3", "e4"], 0).await;
    let slots = slots_of(&verdicts[0]);
    let take = |event: &'static str, now_ms: i64| {
        let (gate, slots) = (&gate, slots.clone());
        async move { gate.take(&slots, &id(event), now_ms).await.unwrap() }
    };
    // e1's message comes first: it is not first in line, so it waits for e0.
    assert_eq!(take("e1", 10).await, Take::Wait { ahead: 1 });
    assert_eq!(take("e0", 20).await, Take::Go);
    assert_eq!(take("e1", 30).await, Take::Go);
    assert_eq!(take("e3", 40).await, Take::Wait { ahead: 1 });
    assert_eq!(
        take("e2", 50).await,
        Take::Wait { ahead: 0 },
        "both slots held"
    );
    assert_eq!(
        take("e0", 60).await,
        Take::Go,
        "a redelivery keeps its slot"
    );
    gate.give_back(&slots.cell, "e0", 70).await.unwrap();
    assert_eq!(
        take("e3", 80).await,
        Take::Wait { ahead: 1 },
        "no jumping the line"
    );
    assert_eq!(take("e2", 90).await, Take::Go);
    gate.give_back(&slots.cell, "e1", 100).await.unwrap();
    assert_eq!(take("e4", 110).await, Take::Wait { ahead: 1 });
    assert_eq!(take("e3", 120).await, Take::Go);
}

#[tokio::test]
async fn a_run_that_never_reports_its_end_frees_its_slot_after_the_timeout() {
    let gate = gate();
    let flow = spec(json!({"concurrency": {"limit": 1, "timeout": "PT10S"}}));
    let verdicts = line_up(&gate, &flow, &["e0", "e1"], 0).await;
    let slots = slots_of(&verdicts[0]);
    assert_eq!(gate.take(&slots, &id("e0"), 0).await.unwrap(), Take::Go);
    assert_eq!(
        gate.take(&slots, &id("e1"), 9_000).await.unwrap(),
        Take::Wait { ahead: 0 }
    );
    assert_eq!(
        gate.take(&slots, &id("e1"), 10_000).await.unwrap(),
        Take::Go
    );
}

#[tokio::test]
async fn a_started_run_gives_its_slot_back_when_its_end_arrives() {
    let gate = gate();
    let flow = spec(json!({"concurrency": {"limit": 1}}));
    let verdicts = line_up(&gate, &flow, &["e0", "e1"], 0).await;
    let slots = slots_of(&verdicts[0]);
    let ws = WorkspaceId::new("ws").unwrap();
    assert_eq!(gate.take(&slots, &id("e0"), 0).await.unwrap(), Take::Go);
    gate.link_run(&ws, "run-0", &slots, &id("e0"), 0)
        .await
        .unwrap();
    assert!(!gate.run_ended(&ws, "run-unknown", 5).await.unwrap());
    let other = WorkspaceId::new("other").unwrap();
    assert!(
        !gate.run_ended(&other, "run-0", 5).await.unwrap(),
        "another workspace's run of the same id frees nothing"
    );
    assert_eq!(
        gate.take(&slots, &id("e1"), 10).await.unwrap(),
        Take::Wait { ahead: 0 }
    );
    assert!(gate.run_ended(&ws, "run-0", 20).await.unwrap());
    assert_eq!(gate.take(&slots, &id("e1"), 30).await.unwrap(), Take::Go);
}

#[tokio::test]
async fn a_head_of_the_line_that_never_comes_is_dropped_once_a_slot_stays_free() {
    let gate = gate();
    let flow = spec(json!({"concurrency": {"limit": 1}}));
    let verdicts = line_up(&gate, &flow, &["gone", "e1"], 0).await;
    let slots = slots_of(&verdicts[0]);
    assert_eq!(
        gate.take(&slots, &id("e1"), 60_000).await.unwrap(),
        Take::Wait { ahead: 1 }
    );
    assert_eq!(
        gate.take(&slots, &id("e1"), STALE_HEAD_MS + 1)
            .await
            .unwrap(),
        Take::Go
    );
}

#[tokio::test]
async fn a_singleton_skips_events_while_its_run_is_running_and_names_it() {
    let gate = gate();
    let flow = spec(json!({"singleton": {"key": "event.data.repo"}}));
    let verdicts = line_up(&gate, &flow, &["e0", "e1"], 0).await;
    assert!(matches!(
        &verdicts[1],
        Verdict::Skip {
            mode: Mode::Slots,
            owner: None,
            ..
        }
    ));
    let slots = slots_of(&verdicts[0]);
    assert_eq!(gate.take(&slots, &id("e0"), 0).await.unwrap(), Take::Go);
    let verdicts = line_up(&gate, &flow, &["e2"], 10).await;
    assert_eq!(
        verdicts[0],
        Verdict::Skip {
            mode: Mode::Slots,
            detail: "event e0's run of this key is still running".into(),
            owner: Some(id("e0")),
        }
    );
    gate.give_back(&slots.cell, "e0", 20).await.unwrap();
    assert!(runs(&line_up(&gate, &flow, &["e3"], 30).await[0]));
}

#[tokio::test]
async fn overlap_buffer_one_keeps_one_tick_waiting_and_skips_the_next() {
    let gate = gate();
    let flow = spec(json!({"overlap": "bufferOne"}));
    let verdicts = line_up(&gate, &flow, &["t0"], 0).await;
    let slots = slots_of(&verdicts[0]);
    assert_eq!(gate.take(&slots, &id("t0"), 0).await.unwrap(), Take::Go);
    let verdicts = line_up(&gate, &flow, &["t1", "t2"], 60_000).await;
    assert!(runs(&verdicts[0]), "one buffered");
    assert!(!runs(&verdicts[1]), "the next skipped");
    let skipping = FlowGate::new(Arc::new(MemoryFlowStore::default()));
    let skip = spec(json!({"overlap": "skip"}));
    let first = line_up(&skipping, &skip, &["s0", "s1"], 0).await;
    assert!(runs(&first[0]) && !runs(&first[1]), "skip: nothing waits");
    assert_eq!(spec(json!({"overlap": "allowAll"})).slot_rule(), None);
}

#[tokio::test]
async fn joining_the_line_while_the_head_takes_its_slot_loses_no_one() {
    let store = ProbeStore::with_permits(0);
    let gate = Arc::new(FlowGate::new(store.clone()));
    let flow = spec(json!({"concurrency": {"limit": 1}}));
    let verdicts = line_up(&gate, &flow, &["e0"], 0).await;
    let slots = slots_of(&verdicts[0]);
    // e0's take reads the line and pauses before writing.
    store.paused.add_permits(1);
    let taking = {
        let (gate, slots) = (gate.clone(), slots.clone());
        tokio::spawn(async move { gate.take(&slots, &id("e0"), 10).await.unwrap() })
    };
    store.reached.notified().await;
    assert!(runs(&line_up(&gate, &flow, &["e1"], 10).await[0]));
    store.release.notify_one();
    assert_eq!(taking.await.unwrap(), Take::Go, "retried on the fresh line");
    let cell = store.inner.load(&slots.cell).await.unwrap().unwrap();
    assert_eq!(cell.holders.keys().collect::<Vec<_>>(), ["e0"]);
    assert_eq!(cell.waiting, ["e1"], "e1's place in line survived");
}

#[test]
fn slot_modes_are_one_at_a_time_and_not_with_throttle_or_debounce() {
    for refused in [
        json!({"concurrency": {"limit": 2}, "singleton": {}}),
        json!({"concurrency": {"limit": 2}, "throttle": {"limit": 1, "period": "PT1M"}}),
        json!({"singleton": {}, "debounce": {"period": "PT1M"}}),
        json!({"concurrency": {"limit": 0}}),
        json!({"overlap": "sometimes"}),
    ] {
        assert!(FlowSpec::parse(&refused).is_err(), "{refused}");
    }
    assert!(FlowSpec::parse(
        &json!({"concurrency": {"limit": 2}, "rateLimit": {"limit": 5, "period": "PT1M"}})
    )
    .is_ok());
}

async fn join(gate: &FlowGate, flow: &FlowSpec, event: &str, now_ms: i64) -> Joined {
    let (names, scope) = (Names::of(event), scope("a"));
    let subject = names.at(&scope, now_ms);
    gate.join_batch(
        flow.batch.as_ref().unwrap(),
        &subject,
        &SelectorCache::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn batches_fill_up_to_their_size_and_keep_their_events_after_the_next_opens() {
    let gate = gate();
    let flow = spec(json!({"batch": {"maxSize": 3, "timeout": "PT10S"}}));
    let mut joined = Vec::new();
    for i in 0..7 {
        joined.push(join(&gate, &flow, &format!("e{i}"), i * 100).await);
    }
    let firsts: Vec<bool> = joined.iter().map(|j| j.first).collect();
    let filled: Vec<bool> = joined.iter().map(|j| j.filled).collect();
    assert_eq!(firsts, [true, false, false, true, false, false, true]);
    assert_eq!(filled, [false, false, true, false, false, true, false]);
    assert_eq!(joined[0].due_ms, 10_000);
    assert_eq!(
        joined[6].due_ms, 10_600,
        "a batch times out from its first event"
    );
    assert_eq!(
        join(&gate, &flow, "e6", 700).await,
        joined[6],
        "a redelivery joins once"
    );
    let first = &joined[0].batch;
    assert_eq!(
        gate.close_batch(first).await.unwrap(),
        ["e0", "e1", "e2"],
        "sealed"
    );
    let second = &joined[3].batch;
    assert_eq!(gate.close_batch(second).await.unwrap(), ["e3", "e4", "e5"]);
    let third = &joined[6].batch;
    assert_eq!(gate.close_batch(third).await.unwrap(), ["e6"]);
    assert_eq!(
        gate.close_batch(third).await.unwrap(),
        ["e6"],
        "a second run sees the same"
    );
    assert!(
        join(&gate, &flow, "e7", 800).await.first,
        "a closed batch takes no more"
    );
}

/// Outrun 40 times in a row (every instance of a 2x-delivered burst on one batch), a join
/// keeps trying for its time budget rather than a count: before, it gave up after 32
/// tries and its event came back a visibility timeout later, into the next batch.
#[tokio::test(start_paused = true)]
async fn a_join_outrun_many_times_still_joins_within_its_time_budget() {
    let store = Arc::new(ProbeStore::default());
    store.losses.store(40, Relaxed);
    let gate = FlowGate::new(store.clone());
    let flow = spec(json!({"batch": {"maxSize": 3, "timeout": "PT60S"}}));
    let joined = join(&gate, &flow, "e0", 0).await;
    assert!(joined.first);
    assert_eq!(gate.close_batch(&joined.batch).await.unwrap(), ["e0"]);

    store.losses.store(usize::MAX, Relaxed);
    let names = Names::of("e1");
    let scope = scope("a");
    let outrun = gate
        .join_batch(
            flow.batch.as_ref().unwrap(),
            &names.at(&scope, 0),
            &SelectorCache::default(),
        )
        .await;
    assert!(
        matches!(outrun, Err(StoreError::Unavailable(_))),
        "outrun past the budget, it gives up (the queue retries): {outrun:?}"
    );
}

/// The ten records of one message batch joining one batch side by side take turns in
/// their process: none loses a compare-and-set to its siblings (before: 31 to 34 lost
/// ones for the ten; on the stack, a burst from every process at once gave up after
/// its tries and came back a visibility timeout later, into the next batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_of_one_process_to_one_batch_take_turns() {
    let store = Arc::new(ProbeStore {
        read_delay: Some(std::time::Duration::from_millis(20)),
        ..ProbeStore::default()
    });
    let gate = Arc::new(FlowGate::new(store.clone()));
    let flow = Arc::new(spec(json!({"batch": {"maxSize": 50, "timeout": "PT60S"}})));
    let joins: Vec<_> = (0..10)
        .map(|i| {
            let (gate, flow) = (gate.clone(), flow.clone());
            tokio::spawn(async move { join(&gate, &flow, &format!("e{i}"), i).await })
        })
        .collect();
    let mut batches = std::collections::HashSet::new();
    for joined in joins {
        batches.insert(joined.await.unwrap().batch.batch_id);
    }
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(ProbeStore::count(&store.lost), 0, "lost");
}

/// Joins queued for their turn behind one that keeps losing spend one budget between
/// them, not one each: ten records of a message batch must give up (and go back to
/// their queue) inside the function's 30 s timeout, not after ten budgets of 10 s.
#[tokio::test(start_paused = true)]
async fn joins_waiting_for_their_turn_share_the_contention_budget() {
    let store = Arc::new(ProbeStore::default());
    store.losses.store(usize::MAX, Relaxed);
    let gate = Arc::new(FlowGate::new(store.clone()));
    let flow = Arc::new(spec(json!({"batch": {"maxSize": 50, "timeout": "PT60S"}})));
    let started = tokio::time::Instant::now();
    let joins: Vec<_> = (0..10)
        .map(|i| {
            let (gate, flow) = (gate.clone(), flow.clone());
            tokio::spawn(async move {
                let names = Names::of(&format!("e{i}"));
                let scope = scope("a");
                gate.join_batch(
                    flow.batch.as_ref().unwrap(),
                    &names.at(&scope, i),
                    &SelectorCache::default(),
                )
                .await
            })
        })
        .collect();
    for join in joins {
        assert!(matches!(
            join.await.unwrap(),
            Err(StoreError::Unavailable(_))
        ));
    }
    let spent = started.elapsed();
    assert!(
        spent < std::time::Duration::from_secs(15),
        "ten outrun joins gave up after {spent:?} (tokio's paused clock)"
    );
}

#[tokio::test]
async fn an_event_joining_while_its_batch_closes_is_in_that_run_or_the_next() {
    let store = ProbeStore::with_permits(0);
    let gate = Arc::new(FlowGate::new(store.clone()));
    let flow = spec(json!({"batch": {"maxSize": 10, "timeout": "PT10S"}}));
    let opened = join(&gate, &flow, "e0", 0).await;
    join(&gate, &flow, "e1", 1).await;
    store.paused.add_permits(1);
    let closing = {
        let (gate, batch) = (gate.clone(), opened.batch.clone());
        tokio::spawn(async move { gate.close_batch(&batch).await.unwrap() })
    };
    store.reached.notified().await;
    let late = join(&gate, &flow, "e2", 2).await;
    assert!(!late.first, "joined the open batch before it closed");
    store.release.notify_one();
    assert_eq!(
        closing.await.unwrap(),
        ["e0", "e1", "e2"],
        "the close lost its compare-and-set and took the fresh batch"
    );
    assert!(
        join(&gate, &flow, "e3", 3).await.first,
        "the next event opens a new batch"
    );
}

#[tokio::test]
async fn a_redelivery_after_its_batch_was_replaced_joins_no_second_batch() {
    let gate = gate();
    let flow = spec(json!({"batch": {"maxSize": 2, "timeout": "PT10S"}}));
    let e0 = join(&gate, &flow, "e0", 0).await;
    let e1 = join(&gate, &flow, "e1", 1).await;
    assert!(e1.filled);
    let e2 = join(&gate, &flow, "e2", 2).await;
    assert!(e2.first, "the full batch is replaced");
    assert_eq!(
        join(&gate, &flow, "e1", 3).await,
        e1,
        "the redelivery finds its batch"
    );
    assert_eq!(gate.close_batch(&e2.batch).await.unwrap(), ["e2"]);
    assert_eq!(gate.close_batch(&e0.batch).await.unwrap(), ["e0", "e1"]);
}

/// Two instances match the same event at once; one reads the open batch and pauses
/// while the other puts the event in it, fills it and the next event opens a new one.
/// The paused instance finds the event where the other put it, not in the new batch.
#[tokio::test]
async fn two_instances_of_one_event_put_it_in_one_batch() {
    let store = ProbeStore::with_permits(0);
    let gate = Arc::new(FlowGate::new(store.clone()));
    let flow = Arc::new(spec(json!({"batch": {"maxSize": 2, "timeout": "PT10S"}})));
    // Another process: joins in one process take turns per batch cell.
    let other = Arc::new(FlowGate::new(store.clone()));
    let e0 = join(&gate, &flow, "e0", 0).await;
    store.paused.add_permits(1);
    let paused = {
        let (other, flow) = (other.clone(), flow.clone());
        tokio::spawn(async move { join(&other, &flow, "e1", 1).await })
    };
    store.reached.notified().await;
    let e1 = join(&gate, &flow, "e1", 1).await;
    let e2 = join(&gate, &flow, "e2", 2).await;
    store.release.notify_one();
    assert_eq!(paused.await.unwrap(), e1, "one batch for e1");
    assert_eq!(gate.close_batch(&e0.batch).await.unwrap(), ["e0", "e1"]);
    assert_eq!(gate.close_batch(&e2.batch).await.unwrap(), ["e2"]);
}
