//! The match stage against in-memory ports: routing, mapping, resume arm, index cache.

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::audit::AuditName;
use crate::clock::ManualClock;
use crate::memory::{MemoryQueue, MemoryResumeStore, MemorySubscriptionStore, RecordingAuditSink};
use crate::resume::{ResumeKey, ResumeWait};
use crate::subscription::SubscriptionStore;

struct Harness {
    subs: Arc<MemorySubscriptionStore>,
    resumes: Arc<MemoryResumeStore>,
    queue: Arc<MemoryQueue>,
    audit: Arc<RecordingAuditSink>,
    clock: Arc<ManualClock>,
    stage: MatchStage,
}

fn harness(ttl_secs: u64) -> Harness {
    let subs = Arc::new(MemorySubscriptionStore::default());
    let resumes = Arc::new(MemoryResumeStore::default());
    let queue = Arc::new(MemoryQueue::default());
    let audit = Arc::new(RecordingAuditSink::default());
    let clock = Arc::new(ManualClock::at_ms(1_000_000));
    let stage = MatchStage::new(
        subs.clone(),
        resumes.clone(),
        queue.clone(),
        Arc::new(crate::memory::MemoryLedger::default()),
        audit.clone(),
        clock.clone(),
        ttl_secs,
    );
    Harness {
        subs,
        resumes,
        queue,
        audit,
        clock,
        stage,
    }
}

fn sub(id: &str, ws: &str, source: &str, selector: Option<&str>, mapping: Value) -> Subscription {
    serde_json::from_value(json!({
        "workspaceId": ws, "subscriptionId": id, "sourceType": source, "workflowId": "wf",
        "targetWorkflowVersionId": "wv", "selector": selector, "inputMapping": mapping, "state": "active",
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"
    }))
    .unwrap()
}

fn lifecycle(ws: &str, data: Value) -> QueuedEvent {
    serde_json::from_value(json!({
        "workspaceId": ws,
        "event": {"eventId": "e1", "kind": "workflow.completed", "depth": 1,
                  "source": {"type": "internal", "occurredAt": "t"}, "data": data}
    }))
    .unwrap()
}

/// A live wait of ws1 for `key` (until 2,000 s).
fn wait_of(key: &ResumeKey, generation: &str) -> ResumeWait {
    ResumeWait {
        resume_id: key.resume_id(),
        run_id: key.run_id.clone(),
        step_id: key.step_id.clone(),
        event_key: key.event_key.clone(),
        selector: None,
        workspace_id: Some(WorkspaceId::new("ws1").unwrap()),
        expires_at: 2_000,
        generation: generation.into(),
        taken: None,
        consumed_by: None,
    }
}

fn sent(queue: &MemoryQueue) -> Vec<DispatchMessage> {
    queue
        .sent()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect()
}

#[tokio::test]
async fn one_dispatch_message_per_matching_subscription_with_resolved_inputs() {
    let h = harness(0);
    h.subs
        .put(&sub(
            "a",
            "ws1",
            "internal",
            Some(r#"event.data.repo == "acme""#),
            json!({"repo": "${{ event.data.repo }}", "n": "${{ event.data.n }}"}),
        ))
        .await
        .unwrap();
    h.subs
        .put(&sub(
            "b",
            "ws1",
            "internal",
            Some(r#"event.data.repo == "zzz""#),
            json!({}),
        ))
        .await
        .unwrap();
    h.subs
        .put(&sub("c", "ws2", "internal", None, json!({})))
        .await
        .unwrap();
    h.subs
        .put(&sub("d", "ws1", "manual", None, json!({})))
        .await
        .unwrap();
    let report = h
        .stage
        .handle(&lifecycle("ws1", json!({"repo": "acme", "n": 2})))
        .await
        .unwrap();
    assert_eq!(
        report,
        MatchReport {
            start_matches: 1,
            resume_matches: 0,
            too_large: 0,
            flow_skipped: 0
        }
    );
    let messages = sent(&h.queue);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].workspace_id.as_str(), "ws1");
    assert_eq!(messages[0].event.depth, 1);
    match &messages[0].target {
        DispatchTarget::Start {
            subscription_id,
            inputs,
            mapping_error,
            ..
        } => {
            assert_eq!(subscription_id.as_str(), "a");
            assert_eq!(
                Value::Object(inputs.clone()),
                json!({"repo": "acme", "n": 2})
            );
            assert_eq!(mapping_error, &None);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn mapping_failures_travel_to_the_dispatcher_as_permanent_errors() {
    let h = harness(0);
    h.subs
        .put(&sub(
            "a",
            "ws1",
            "internal",
            None,
            json!({"x": "${{ event.data.nope }}"}),
        ))
        .await
        .unwrap();
    h.stage.handle(&lifecycle("ws1", json!({}))).await.unwrap();
    match &sent(&h.queue)[0].target {
        DispatchTarget::Start {
            mapping_error: Some(e),
            ..
        } => assert!(e.contains("inputMapping.x")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn non_boolean_selectors_are_audited() {
    let h = harness(0);
    h.subs
        .put(&sub("a", "ws1", "internal", Some("event.kind"), json!({})))
        .await
        .unwrap();
    h.stage.handle(&lifecycle("ws1", json!({}))).await.unwrap();
    assert!(h.queue.sent().is_empty());
    let events = h.audit.events();
    assert_eq!(events[0].audit, AuditName::SelectorTypeError);
    assert_eq!(events[0].attrs["subscriptionId"], "a");
    assert_eq!(events[0].attrs["resultType"], "string");
}

#[tokio::test]
async fn lifecycle_event_can_start_and_resume_at_once() {
    let h = harness(0);
    h.subs
        .put(&sub("chain", "ws1", "internal", None, json!({})))
        .await
        .unwrap();
    let key = ResumeKey {
        run_id: "r1".into(),
        step_id: "s1".into(),
        event_key: "workflow.completed".into(),
    };
    h.resumes.put(&wait_of(&key, "g1")).await.unwrap();
    let report = h
        .stage
        .handle(&lifecycle("ws1", json!({"runId": "r1", "stepId": "s1"})))
        .await
        .unwrap();
    assert_eq!(
        report,
        MatchReport {
            start_matches: 1,
            resume_matches: 1,
            too_large: 0,
            flow_skipped: 0
        }
    );
    assert!(
        matches!(sent(&h.queue)[1].target, DispatchTarget::Resume { ref resume_id, .. } if resume_id == &key.resume_id())
    );
    // A lapsed wait is not resumed.
    h.clock.advance_ms(1_000_000);
    h.queue.take_sent();
    let report = h
        .stage
        .handle(&lifecycle("ws1", json!({"runId": "r1", "stepId": "s1"})))
        .await
        .unwrap();
    assert_eq!(report.resume_matches, 0);
    // Nor is a wait of another workspace.
    let report = h
        .stage
        .handle(&lifecycle("ws2", json!({"runId": "r1", "stepId": "s1"})))
        .await
        .unwrap();
    assert_eq!(report.resume_matches, 0);
}

#[tokio::test]
async fn manual_fire_matches_only_the_addressed_subscription_and_never_resumes() {
    let h = harness(0);
    h.subs
        .put(&sub(
            "fire-me",
            "ws1",
            "manual",
            Some("event.data.go == true"),
            json!({}),
        ))
        .await
        .unwrap();
    h.subs
        .put(&sub("other", "ws1", "manual", None, json!({})))
        .await
        .unwrap();
    let event = crate::normalize::manual_fire(
        "t",
        Some("fire-me"),
        json!({"go": true, "runId": "r", "stepId": "s"})
            .as_object()
            .unwrap()
            .clone(),
        None,
    )
    .unwrap();
    let queued = QueuedEvent {
        workspace_id: WorkspaceId::new("ws1").unwrap(),
        event,
        replay: false,
        trace: None,
        received_ms: None,
    };
    let report = h.stage.handle(&queued).await.unwrap();
    assert_eq!(
        report,
        MatchReport {
            start_matches: 1,
            resume_matches: 0,
            too_large: 0,
            flow_skipped: 0
        }
    );
    // The same subscription id in another workspace is not found (tenant isolation).
    let mut foreign = queued.clone();
    foreign.workspace_id = WorkspaceId::new("ws2").unwrap();
    assert_eq!(h.stage.handle(&foreign).await.unwrap().start_matches, 0);
}

#[tokio::test]
async fn connector_events_only_reach_that_connectors_subscriptions() {
    let h = harness(0);
    let mut attached = sub("attached", "ws1", "webhook", None, json!({}));
    attached.connector_instance_id = Some("ci1".into());
    let mut elsewhere = sub("elsewhere", "ws1", "webhook", None, json!({}));
    elsewhere.connector_instance_id = Some("ci2".into());
    h.subs.put(&attached).await.unwrap();
    h.subs.put(&elsewhere).await.unwrap();
    let event = crate::normalize::webhook(crate::normalize::WebhookDelivery {
        connector_instance_id: "ci1",
        delivery_id: "d1",
        occurred_at: "t",
        headers: Default::default(),
        body: "{}".into(),
        kind: None,
        vendor: None,
    })
    .unwrap();
    let report = h
        .stage
        .handle(&QueuedEvent {
            workspace_id: WorkspaceId::new("ws1").unwrap(),
            event,
            replay: false,
            trace: None,
            received_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(report.start_matches, 1);
    assert!(
        matches!(&sent(&h.queue)[0].target, DispatchTarget::Start { subscription_id, .. } if subscription_id.as_str() == "attached")
    );
}

#[tokio::test]
async fn index_is_reused_within_its_ttl_then_reloaded() {
    let h = harness(5);
    h.stage.handle(&lifecycle("ws1", json!({}))).await.unwrap();
    h.subs
        .put(&sub("late", "ws1", "internal", None, json!({})))
        .await
        .unwrap();
    assert_eq!(
        h.stage
            .handle(&lifecycle("ws1", json!({})))
            .await
            .unwrap()
            .start_matches,
        0
    );
    h.clock.advance_ms(5_001);
    assert_eq!(
        h.stage
            .handle(&lifecycle("ws1", json!({})))
            .await
            .unwrap()
            .start_matches,
        1
    );
}

#[tokio::test]
async fn a_replayed_event_meets_the_subscriptions_of_now_not_the_cached_index() {
    let h = harness(300);
    h.stage.handle(&lifecycle("ws1", json!({}))).await.unwrap();
    h.subs
        .put(&sub("late", "ws1", "internal", None, json!({})))
        .await
        .unwrap();
    let mut replayed = lifecycle("ws1", json!({}));
    replayed.replay = true;
    assert_eq!(h.stage.handle(&replayed).await.unwrap().start_matches, 1);
}

#[tokio::test]
async fn queue_failures_surface_so_the_event_is_retried() {
    let h = harness(0);
    h.subs
        .put(&sub("a", "ws1", "internal", None, json!({})))
        .await
        .unwrap();
    h.queue.fail_sends(true);
    assert!(matches!(
        h.stage.handle(&lifecycle("ws1", json!({}))).await,
        Err(MatchError::Queue(_))
    ));
}

/// A park store that lets a whole registration happen just before the park lands:
/// the new generation is written and its look for parked events finds none. This is
/// the worst moment for an early event (after the match stage found no wait).
struct RegisterBeforePark {
    inner: crate::memory::MemoryParkStore,
    resumes: Arc<MemoryResumeStore>,
    wait: std::sync::Mutex<Option<ResumeWait>>,
    found_by_registration: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl ParkStore for RegisterBeforePark {
    async fn park(
        &self,
        workspace: &WorkspaceId,
        resume_id: &ResumeId,
        parked: &ParkedEvent,
    ) -> Result<ParkOutcome, crate::store::StoreError> {
        let registration = self.wait.lock().unwrap().take();
        if let Some(wait) = registration {
            self.resumes.register(&wait, None).await?;
            let seen = self
                .inner
                .parked(workspace, resume_id, parked.parked_at_ms)
                .await?;
            self.found_by_registration
                .fetch_add(seen.len(), std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.park(workspace, resume_id, parked).await
    }

    async fn parked(
        &self,
        workspace: &WorkspaceId,
        resume_id: &ResumeId,
        now_ms: i64,
    ) -> Result<Vec<ParkedEvent>, crate::store::StoreError> {
        self.inner.parked(workspace, resume_id, now_ms).await
    }

    async fn remove(
        &self,
        workspace: &WorkspaceId,
        resume_id: &ResumeId,
        event_id: &EventId,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.remove(workspace, resume_id, event_id).await
    }
}

#[tokio::test]
async fn an_early_event_whose_wait_registers_just_before_the_park_is_still_dispatched() {
    let h = harness(0);
    let key = ResumeKey {
        run_id: "r1".into(),
        step_id: "s1".into(),
        event_key: "workflow.completed".into(),
    };
    let parking = Arc::new(RegisterBeforePark {
        inner: crate::memory::MemoryParkStore::default(),
        resumes: h.resumes.clone(),
        wait: std::sync::Mutex::new(Some(wait_of(&key, "g1"))),
        found_by_registration: 0.into(),
    });
    let stage = MatchStage::new(
        h.subs.clone(),
        h.resumes.clone(),
        h.queue.clone(),
        Arc::new(crate::memory::MemoryLedger::default()),
        h.audit.clone(),
        h.clock.clone(),
        0,
    )
    .with_parking(parking.clone(), 60);
    let report = stage
        .handle(&lifecycle("ws1", json!({"runId": "r1", "stepId": "s1"})))
        .await
        .unwrap();
    assert_eq!(
        parking
            .found_by_registration
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the registration came before the park and saw nothing"
    );
    assert_eq!(report.resume_matches, 1, "so the match stage must see it");
    let messages = sent(&h.queue);
    assert!(
        matches!(&messages[0].target, DispatchTarget::Resume { generation, .. } if generation == "g1"),
        "{messages:?}"
    );
}

/// A subscription of ws1 on internal events with `flow`, and a stage that applies it.
async fn flow_harness(flow: Value) -> (Harness, Arc<crate::memory::MemoryLedger>) {
    let mut h = harness(0);
    let ledger = Arc::new(crate::memory::MemoryLedger::default());
    h.stage.ledger = ledger.clone();
    h.stage = h
        .stage
        .with_flow(Arc::new(crate::memory::MemoryFlowStore::default()));
    let mut subscription = sub("flowing", "ws1", "internal", None, json!({}));
    subscription.flow = Some(Box::new(crate::flow::FlowSpec::parse(&flow).unwrap()));
    h.subs.put(&subscription).await.unwrap();
    (h, ledger)
}

fn numbered(i: usize) -> QueuedEvent {
    let mut queued = lifecycle("ws1", json!({"n": i}));
    queued.event.event_id = EventId::new(format!("e{i}")).unwrap();
    queued
}

async fn fate(ledger: &crate::memory::MemoryLedger, event: &str) -> crate::dedup::LedgerEntry {
    let key = crate::dedup::DedupKey::new("flowing", event);
    ledger
        .get(&WorkspaceId::new("ws1").unwrap(), &key)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_rate_limited_match_is_recorded_not_sent_and_a_redelivery_keeps_each_fate() {
    let (h, ledger) = flow_harness(json!({"rateLimit": {"limit": 1, "period": "PT1M"}})).await;
    for i in 0..3 {
        h.stage.handle(&numbered(i)).await.unwrap();
    }
    assert_eq!(sent(&h.queue).len(), 1);
    assert_eq!(fate(&ledger, "e0").await.status, LedgerStatus::Queued);
    let refused = fate(&ledger, "e1").await;
    assert_eq!(refused.status, LedgerStatus::RateLimited);
    assert!(refused
        .last_error
        .unwrap()
        .contains("more than 1 runs within PT1M"));
    // A minute later the bucket has room again, yet redeliveries keep their first
    // decision: e0 is sent again (the ledger dedups it), e1 stays refused.
    h.clock.advance_ms(61_000);
    let again = h.stage.handle(&numbered(0)).await.unwrap();
    assert_eq!((again.start_matches, again.flow_skipped), (1, 0));
    let again = h.stage.handle(&numbered(1)).await.unwrap();
    assert_eq!((again.start_matches, again.flow_skipped), (0, 1));
    assert_eq!(sent(&h.queue).len(), 2);
    h.stage.handle(&numbered(3)).await.unwrap();
    assert_eq!(sent(&h.queue).len(), 3, "the next minute's event runs");
}

#[tokio::test]
async fn a_throttled_match_is_sent_delayed_to_its_slot_and_keeps_it_when_redelivered() {
    let (h, ledger) = flow_harness(json!({"throttle": {"limit": 1, "period": "PT20M"}})).await;
    for i in 0..3 {
        h.stage.handle(&numbered(i)).await.unwrap();
    }
    let messages = sent(&h.queue);
    let now = h.clock.now_ms();
    let slots: Vec<Option<i64>> = messages.iter().map(|m| m.not_before_ms).collect();
    assert_eq!(slots, [None, Some(now + 1_200_000), Some(now + 2_400_000)]);
    let delays: Vec<u32> = h.queue.delayed().iter().map(|(_, d)| *d).collect();
    assert_eq!(
        delays,
        [900, 900],
        "SQS holds 15 minutes at most; dispatch holds the rest"
    );
    let queued = fate(&ledger, "e2").await;
    assert_eq!(
        (queued.status, queued.lease_until_ms),
        (LedgerStatus::Queued, now + 2_400_000)
    );
    h.stage.handle(&numbered(1)).await.unwrap();
    let redelivered: DispatchMessage =
        serde_json::from_str(h.queue.sent().last().unwrap()).unwrap();
    assert_eq!(
        redelivered.not_before_ms,
        Some(now + 1_200_000),
        "same slot, none taken"
    );
    h.stage.handle(&numbered(3)).await.unwrap();
    let next: DispatchMessage = serde_json::from_str(h.queue.sent().last().unwrap()).unwrap();
    assert_eq!(next.not_before_ms, Some(now + 3_600_000));
}

/// A draft of `subscription`'s match with neither trace nor receipt time.
fn untraced<'a>(workspace: &'a WorkspaceId, subscription: &'a Subscription) -> StartDraft<'a> {
    StartDraft {
        workspace_id: workspace,
        subscription,
        trace: None,
        received_ms: None,
    }
}

#[test]
fn a_start_body_is_the_one_its_message_makes() {
    // Mappings of every shape (escapes, nesting, interpolation, non-strings), with and
    // without a version, trace and receipt time: the body written from the subscription
    // is byte for byte the body of the message; a mapping that fails writes none.
    let event = Arc::new(
        lifecycle(
            "ws1",
            json!({"repo": "o/r", "title": "say \"hi\"\n\\", "n": 7, "tags": ["a", "b\u{1}"],
                   "nested": {"k": [1, null, true]}, "uni": "é\u{FFFE}"}),
        )
        .event,
    );
    let event_json = serde_json::to_string(&event).unwrap();
    let mappings = [
        json!({}),
        json!({"repo": "${{ event.data.repo }}", "title": "${{ event.data.title }}"}),
        json!({"all": "${{ event.data }}", "n": "${{ event.data.n }}", "lit": 3, "off": false,
               "none": null, "text": "plain \"quoted\"", "uni": "${{ event.data.uni }}"}),
        json!({"list": ["${{ event.data.tags }}", {"k\"": "at ${{ event.data.n }} of ${{ event.data.repo }}"}],
               "obj": {"b": {"c": ["${{ event.data.nested.k }}"]}, "a": "x"}}),
    ];
    let trace = crate::trace::TraceParent::generate();
    let cache = SelectorCache::default();
    let scope = EventScope::new(&event);
    for (i, mapping) in mappings.iter().enumerate() {
        for (version, traced, received) in [(Some("wv"), true, Some(12)), (None, false, None)] {
            let mut subscription = sub(
                &format!("s{i}\u{7}"),
                "ws1",
                "internal",
                None,
                mapping.clone(),
            );
            subscription.target_workflow_version_id = version.map(str::to_owned);
            subscription.workflow_id = "wf\"1".into();
            let workspace = WorkspaceId::new("ws\\1").unwrap();
            let memo = mapping::Memo::default();
            let mut message = start_message_with(
                &workspace,
                &event,
                Some(&scope),
                &subscription,
                &cache,
                &memo,
            );
            message.trace = traced.then(|| trace.clone());
            message.received_ms = received;
            let draft = StartDraft {
                workspace_id: &workspace,
                subscription: &subscription,
                trace: message.trace.as_ref(),
                received_ms: received,
            };
            // A fresh memo, and the one the message filled: both write the same.
            for memo in [mapping::Memo::default(), memo] {
                let body = start_body(&draft, Some(&scope), (&cache, &memo), &event_json);
                assert_eq!(body, message.body_with_event(&event_json).ok(), "{mapping}");
            }
            let expected: Value = serde_json::to_value(&message).unwrap();
            assert_eq!(
                serde_json::from_str::<Value>(&message.body_with_event(&event_json).unwrap())
                    .unwrap(),
                expected
            );
        }
    }
    for failing in [
        json!({"a": "ok", "b": ["${{ event.data.missing.x }}"]}),
        json!({"x": "${{ nope( }}"}),
    ] {
        let subscription = sub("s", "ws1", "internal", None, failing);
        let workspace = WorkspaceId::new("ws1").unwrap();
        let draft = untraced(&workspace, &subscription);
        let memo = mapping::Memo::default();
        assert_eq!(
            start_body(&draft, Some(&scope), (&cache, &memo), &event_json),
            None
        );
        // A mapping with no scope to read does not resolve either; an empty one does.
        assert_eq!(start_body(&draft, None, (&cache, &memo), &event_json), None);
    }
    let empty = sub("s", "ws1", "internal", None, json!({}));
    let workspace = WorkspaceId::new("ws1").unwrap();
    let draft = untraced(&workspace, &empty);
    let message = start_message_with(
        &workspace,
        &event,
        None,
        &empty,
        &cache,
        &mapping::Memo::default(),
    );
    assert_eq!(
        start_body(
            &draft,
            None,
            (&cache, &mapping::Memo::default()),
            &event_json
        ),
        message.body_with_event(&event_json).ok()
    );
}

#[test]
fn written_inputs_fail_where_resolving_them_fails_and_say_where() {
    let event = lifecycle("ws1", json!({"repo": "o/r", "n": 1})).event;
    let scope = EventScope::new(&event);
    let cache = SelectorCache::default();
    for mapping in [
        json!({"a": {"b": [1, "${{ event.data.nope.x }}"]}}),
        json!({"z": "${{ event.data.repo }}", "y": ["${{ 1 / 0 }}"]}),
        json!({"q": "${{ ( }}"}),
    ] {
        let mapping = crate::subscription::InputMapping::from(mapping.as_object().unwrap().clone());
        let resolved = mapping::resolve(&mapping, &scope, &cache);
        let mut out = String::new();
        let written = mapping::write_with(
            &mapping,
            &scope,
            &cache,
            &mapping::Memo::default(),
            &mut out,
        );
        assert_eq!(written.unwrap_err(), resolved.unwrap_err());
    }
}
