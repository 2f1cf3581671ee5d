//! The dispatcher's protocol against in-memory ports: order of audits, dedup, loop guard, retry classification.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::audit::AuditName as A;
use crate::clock::ManualClock;
use crate::dedup::{LedgerStatus, MatchKind};
use crate::ids::{ResumeId, WorkspaceId};
use crate::memory::{
    MemoryLedger, MemoryQueue, MemoryResumeStore, RecordingAuditSink, ScriptedWorkflow,
};
use crate::resume::{ResumeKey, ResumeStore, ResumeWait};

struct Harness {
    ledger: Arc<MemoryLedger>,
    parked: Arc<crate::memory::MemoryParkStore>,
    workflow: Arc<ScriptedWorkflow>,
    resumes: Arc<MemoryResumeStore>,
    audit: Arc<RecordingAuditSink>,
    clock: Arc<ManualClock>,
    dispatcher: Dispatcher,
}

fn harness_with(settings: Settings) -> Harness {
    let ledger = Arc::new(MemoryLedger::default());
    let workflow = Arc::new(ScriptedWorkflow::default());
    let resumes = Arc::new(MemoryResumeStore::default());
    let parked = Arc::new(crate::memory::MemoryParkStore::default());
    let audit = Arc::new(RecordingAuditSink::default());
    let clock = Arc::new(ManualClock::at_ms(1_700_000_000_000));
    let mut dispatcher = Dispatcher::new(
        ledger.clone(),
        workflow.clone(),
        resumes.clone(),
        parked.clone(),
        audit.clone(),
        clock.clone(),
        DispatchSettings::from_settings(Arc::new(settings)),
    );
    dispatcher.jitter = || 0.0;
    Harness {
        ledger,
        parked,
        workflow,
        resumes,
        audit,
        clock,
        dispatcher,
    }
}

fn harness() -> Harness {
    harness_with(Settings::from_lookup(|_| None).unwrap())
}

fn event(depth: u32) -> crate::event::NormalizedEvent {
    serde_json::from_value(json!({
        "eventId": "evt-1", "kind": "step.succeeded", "depth": depth,
        "source": {"type": "internal", "occurredAt": "t"},
        "data": {"runId": "r1", "stepId": "s1", "out": 1}
    }))
    .unwrap()
}

fn start(version: Option<&str>, depth: u32) -> DispatchMessage {
    serde_json::from_value(json!({
        "workspaceId": "ws1",
        "event": event(depth),
        "target": {"type": "start", "subscriptionId": "sub1", "workflowId": "wf1",
                   "workflowVersionId": version, "inputs": {"a": 1}}
    }))
    .unwrap()
}

fn resume() -> DispatchMessage {
    let key = ResumeKey {
        run_id: "r1".into(),
        step_id: "s1".into(),
        event_key: "step.succeeded".into(),
    };
    DispatchMessage::new(
        WorkspaceId::new("ws1").unwrap(),
        event(0).into(),
        DispatchTarget::Resume {
            resume_id: key.resume_id(),
            run_id: "r1".into(),
            step_id: "s1".into(),
            event_key: "step.succeeded".into(),
            generation: "g1".into(),
        },
    )
}

fn attempt(number: u32) -> Attempt {
    Attempt {
        number,
        deadline_ms: None,
        sent_ms: None,
    }
}

fn windowed(window_secs: u32, cap_secs: u32) -> Harness {
    harness_with(
        Settings::from_lookup(|n| match n {
            "TRIGGER_DISPATCH_RETRY_WINDOW_SECONDS" => Some(window_secs.to_string()),
            "TRIGGER_DISPATCH_BACKOFF_CAP_SECONDS" => Some(cap_secs.to_string()),
            _ => None,
        })
        .unwrap(),
    )
}

fn start_for(subscription: &str) -> DispatchMessage {
    let mut msg = start(Some("wv1"), 0);
    if let DispatchTarget::Start {
        subscription_id, ..
    } = &mut msg.target
    {
        *subscription_id = crate::ids::SubscriptionId::new(subscription).unwrap();
    }
    msg
}

fn status(code: u16) -> Result<(), WorkflowError> {
    Err(WorkflowError::Status {
        status: code,
        body: "x".into(),
    })
}

#[tokio::test]
async fn start_success_sends_dedup_key_and_depth_then_commits() {
    let h = harness();
    let msg = start(Some("wv1"), 2);
    let outcome = h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
    let key = msg.dedup_key();
    let starts = h.workflow.starts();
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].idempotency_key, key.as_str());
    assert_eq!(starts[0].workspace_id, "ws1");
    assert_eq!(starts[0].workflow_version_id, "wv1");
    assert_eq!(
        starts[0].inputs,
        json!({"a": 1}).as_object().unwrap().clone()
    );
    assert_eq!(starts[0].trigger_depth, 3);
    let run_id = match outcome {
        DispatchOutcome::Dispatched { run_id: Some(run) } => run,
        other => panic!("{other:?}"),
    };
    assert_eq!(h.audit.names(), [A::Matched, A::Dispatched]);
    let entry = h
        .ledger
        .get(&msg.workspace_id, &key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, LedgerStatus::Committed);
    assert_eq!(entry.run_id.as_deref(), Some(run_id.as_str()));
    assert_eq!(entry.match_kind, MatchKind::Start);
    assert_eq!(entry.expires_at, 1_700_000_000 + 604_800);
    let dispatched = &h.audit.events()[1];
    assert_eq!(dispatched.attrs["subscriptionId"], "sub1");
    assert_eq!(dispatched.attrs["workflowVersionId"], "wv1");
    assert_eq!(dispatched.event_id.as_deref(), Some("evt-1"));
}

#[tokio::test]
async fn duplicate_event_is_not_dispatched_twice() {
    let h = harness();
    let msg = start(Some("wv1"), 0);
    h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
    let second = h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
    assert!(matches!(
        second,
        DispatchOutcome::Duplicate { run_id: Some(_) }
    ));
    assert_eq!(h.workflow.starts().len(), 1);
    assert_eq!(
        h.audit.names(),
        [A::Matched, A::Dispatched, A::Matched, A::Deduped]
    );
}

#[tokio::test]
async fn committed_key_is_claimable_again_after_the_dedup_ttl() {
    let h = harness();
    let msg = start(Some("wv1"), 0);
    h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
    h.clock.advance_ms(604_800 * 1000);
    let again = h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
    assert!(matches!(again, DispatchOutcome::Dispatched { .. }));
    assert_eq!(h.workflow.starts().len(), 2);
}

#[tokio::test]
async fn missing_target_version_dead_letters_without_rpc() {
    let h = harness();
    for version in [None, Some("")] {
        h.audit.clear();
        let msg = start(version, 0);
        let outcome = h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
        assert_eq!(
            outcome,
            DispatchOutcome::DeadLettered {
                reason: DeadLetterReason::NoTargetVersion,
                detail: "start subscription has no target workflow version".into(),
                retryable: false
            }
        );
        assert_eq!(h.audit.names(), [A::Matched, A::DispatchFailed]);
        assert_eq!(h.audit.events()[1].attrs["retryable"], false);
        let entry = h
            .ledger
            .get(&msg.workspace_id, &msg.dedup_key())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entry.status, LedgerStatus::DeadLettered);
    }
    assert!(h.workflow.starts().is_empty());
}

#[tokio::test]
async fn unresolvable_input_mapping_dead_letters_with_the_reason() {
    let h = harness();
    let mut msg = start(Some("wv1"), 0);
    if let DispatchTarget::Start { mapping_error, .. } = &mut msg.target {
        *mapping_error = Some("inputMapping.a: no such key".into());
    }
    let outcome = h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
    assert!(
        matches!(outcome, DispatchOutcome::DeadLettered { reason: DeadLetterReason::MappingFailed, ref detail, retryable: false } if detail.contains("no such key"))
    );
    assert!(h.workflow.starts().is_empty());
}

#[tokio::test]
async fn loop_guard_rejects_above_the_limit_and_dispatches_at_it() {
    let h = harness();
    let over = h
        .dispatcher
        .dispatch(&start(Some("wv1"), 17), attempt(1))
        .await
        .unwrap();
    assert_eq!(
        over,
        DispatchOutcome::LoopRejected {
            depth: 17,
            limit: 16
        }
    );
    assert_eq!(h.audit.names(), [A::Matched, A::LoopDetected]);
    assert_eq!(h.audit.events()[1].attrs["depth"], 17);
    assert_eq!(h.audit.events()[1].attrs["limit"], 16);
    assert!(h.workflow.starts().is_empty());
    let at = h
        .dispatcher
        .dispatch(&start(Some("wv1"), 16), attempt(1))
        .await
        .unwrap();
    assert!(matches!(at, DispatchOutcome::Dispatched { .. }));
    assert_eq!(h.workflow.starts()[0].trigger_depth, 17);
}

#[tokio::test]
async fn loop_guard_uses_the_workspace_override() {
    let h = harness_with(
        Settings::from_lookup(|n| {
            (n == "TRIGGER_FANOUT_MAX_DEPTH_OVERRIDES").then(|| "ws1=2".to_owned())
        })
        .unwrap(),
    );
    let outcome = h
        .dispatcher
        .dispatch(&start(Some("wv1"), 3), attempt(1))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        DispatchOutcome::LoopRejected { depth: 3, limit: 2 }
    );
    let entry = h.ledger.entries().pop().unwrap();
    assert_eq!(entry.status, LedgerStatus::LoopRejected);
}

#[tokio::test]
async fn transient_failure_releases_and_asks_for_a_retry_with_growing_backoff() {
    let h = harness();
    let msg = start(Some("wv1"), 0);
    h.workflow.script([
        status(503),
        Err(WorkflowError::Transport("reset".into())),
        status(429),
        status(408),
    ]);
    let mut delays = Vec::new();
    for n in 1..=4 {
        match h.dispatcher.dispatch(&msg, attempt(n)).await.unwrap() {
            DispatchOutcome::RetryLater { delay_secs, .. } => delays.push(delay_secs),
            other => panic!("{other:?}"),
        }
        let entry = h
            .ledger
            .get(&msg.workspace_id, &msg.dedup_key())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            entry.status,
            LedgerStatus::Released,
            "released so the retry can claim"
        );
    }
    assert_eq!(delays, [1, 2, 4, 8]);
    let last = h.dispatcher.dispatch(&msg, attempt(5)).await.unwrap();
    assert!(matches!(last, DispatchOutcome::Dispatched { .. }));
    assert_eq!(h.workflow.starts().len(), 5);
    assert!(h
        .workflow
        .starts()
        .iter()
        .all(|s| s.idempotency_key == msg.dedup_key().as_str()));
    let entry = h
        .ledger
        .get(&msg.workspace_id, &msg.dedup_key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.attempts, 5);
}

#[tokio::test]
async fn a_transient_failure_past_the_retry_window_dead_letters_as_retries_exhausted() {
    let h = harness();
    let msg = start(Some("wv1"), 0);
    h.workflow.script([status(500), status(500)]);
    let first = h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
    assert!(matches!(first, DispatchOutcome::RetryLater { .. }));
    h.clock.advance_ms(86_400 * 1000);
    h.audit.clear();
    let outcome = h.dispatcher.dispatch(&msg, attempt(2)).await.unwrap();
    assert!(matches!(
        outcome,
        DispatchOutcome::DeadLettered {
            reason: DeadLetterReason::RetriesExhausted,
            retryable: true,
            ..
        }
    ));
    assert_eq!(h.audit.names(), [A::Matched, A::DispatchFailed]);
    assert_eq!(h.audit.events()[1].attrs["retryable"], true);
    assert_eq!(h.audit.events()[1].attrs["reason"], "retries_exhausted");
    let entry = h.ledger.entries().pop().unwrap();
    assert_eq!(entry.reason, Some(DeadLetterReason::RetriesExhausted));
    assert_eq!(entry.attempts, 2);
}

#[tokio::test]
async fn permanent_failure_dead_letters_at_once_and_releases_for_replay() {
    let h = harness();
    let msg = start(Some("wv1"), 0);
    h.workflow.script([status(400)]);
    let outcome = h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
    match outcome {
        DispatchOutcome::DeadLettered {
            reason: DeadLetterReason::Rejected,
            detail,
            retryable: false,
        } => assert!(detail.contains("400")),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.workflow.starts().len(), 1);
    let failed = &h.audit.events()[1];
    assert_eq!(failed.audit, A::DispatchFailed);
    assert_eq!(failed.attrs["reason"], "rejected");
    assert!(failed.attrs["detail"].as_str().unwrap().contains("400"));
    let entry = h
        .ledger
        .get(&msg.workspace_id, &msg.dedup_key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, LedgerStatus::DeadLettered);
    assert!(entry.last_error.unwrap().contains("400"));
    // The key was not committed: a later healthy attempt (a replay) dispatches.
    let replay = h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
    assert!(matches!(replay, DispatchOutcome::Dispatched { .. }));
}

#[tokio::test]
async fn undecodable_start_response_is_permanent() {
    let h = harness();
    h.workflow
        .script([Err(WorkflowError::Decode("not a RunRef".into()))]);
    let outcome = h
        .dispatcher
        .dispatch(&start(Some("wv1"), 0), attempt(1))
        .await
        .unwrap();
    assert!(matches!(
        outcome,
        DispatchOutcome::DeadLettered {
            retryable: false,
            ..
        }
    ));
}

#[tokio::test]
async fn a_live_claim_elsewhere_means_retry_later_without_rpc() {
    let h = harness();
    let msg = start(Some("wv1"), 0);
    let request = h
        .dispatcher
        .claim_request(&msg, &msg.dedup_key(), attempt(1));
    h.ledger.claim(&request).await.unwrap();
    let outcome = h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
    assert!(matches!(outcome, DispatchOutcome::RetryLater { .. }));
    assert!(h.workflow.starts().is_empty());
    // Once the lease has passed (a crashed worker), the claim is taken over.
    h.clock.advance_ms(60_000);
    let outcome = h.dispatcher.dispatch(&msg, attempt(2)).await.unwrap();
    assert!(matches!(outcome, DispatchOutcome::Dispatched { .. }));
}

#[tokio::test]
async fn lease_is_bounded_by_the_deadline() {
    let h = harness();
    let msg = start(Some("wv1"), 0);
    let now = h.clock.now_ms();
    let request = h.dispatcher.claim_request(
        &msg,
        &msg.dedup_key(),
        Attempt {
            number: 1,
            deadline_ms: Some(now + 5_000),
            sent_ms: None,
        },
    );
    assert_eq!(request.lease_until_ms, now + 5_000);
    let request = h
        .dispatcher
        .claim_request(&msg, &msg.dedup_key(), attempt(1));
    assert_eq!(request.lease_until_ms, now + 60_000);
}

fn live_wait(generation: &str) -> ResumeWait {
    let DispatchTarget::Resume { resume_id, .. } = resume().target else {
        unreachable!()
    };
    ResumeWait {
        resume_id,
        run_id: "r1".into(),
        step_id: "s1".into(),
        event_key: "step.succeeded".into(),
        selector: None,
        workspace_id: Some(WorkspaceId::new("ws1").unwrap()),
        expires_at: i64::MAX / 2000,
        generation: generation.into(),
        taken: None,
        consumed_by: None,
    }
}

/// The resume message of another event for the same wait.
fn resume_of(event_id: &str) -> DispatchMessage {
    let mut msg = resume();
    std::sync::Arc::make_mut(&mut msg.event).event_id = crate::ids::EventId::new(event_id).unwrap();
    msg
}

#[tokio::test]
async fn resume_delivers_event_data_with_depth_and_consumes_the_wait() {
    let h = harness();
    let msg = resume();
    let DispatchTarget::Resume { resume_id, .. } = &msg.target else {
        unreachable!()
    };
    h.resumes.put(&live_wait("g1")).await.unwrap();
    let outcome = h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
    assert_eq!(outcome, DispatchOutcome::Dispatched { run_id: None });
    let raises = h.workflow.raises();
    assert_eq!(raises.len(), 1);
    assert_eq!(
        (raises[0].run_id.as_str(), raises[0].step_id.as_str()),
        ("r1", "s1")
    );
    assert_eq!(raises[0].event_name, "step.succeeded");
    assert_eq!(raises[0].workspace_id, "ws1");
    assert_eq!(raises[0].payload, msg.event.data);
    assert_eq!(raises[0].idempotency_key, msg.dedup_key().as_str());
    assert_eq!(raises[0].trigger_depth, 1, "the event's depth + 1");
    assert_eq!(h.audit.names(), [A::Matched, A::ResumeDelivered]);
    assert_eq!(h.audit.events()[1].attrs["resumeId"], resume_id.as_str());
    let wait = h.resumes.get(resume_id).await.unwrap().unwrap();
    assert_eq!(
        wait.consumed_by,
        Some(msg.event.event_id.clone()),
        "one-shot"
    );
    let again = h.dispatcher.dispatch(&msg, attempt(1)).await.unwrap();
    assert!(matches!(again, DispatchOutcome::Duplicate { .. }));
    assert_eq!(h.workflow.raises().len(), 1);
}

#[tokio::test]
async fn concurrent_events_for_one_registration_raise_exactly_once() {
    let h = harness();
    h.resumes.put(&live_wait("g1")).await.unwrap();
    let messages: Vec<DispatchMessage> = (0..10).map(|i| resume_of(&format!("evt-{i}"))).collect();
    let outcomes = futures::future::join_all(
        messages
            .iter()
            .map(|m| h.dispatcher.dispatch(m, attempt(1))),
    )
    .await;
    let outcomes: Vec<DispatchOutcome> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(h.workflow.raises().len(), 1, "{outcomes:?}");
    let winner = &h.workflow.raises()[0].idempotency_key;
    let superseded = outcomes
        .iter()
        .filter(|o| {
            matches!(
                o,
                DispatchOutcome::Parked {
                    superseded_by: Some(_)
                }
            )
        })
        .count();
    assert_eq!(superseded, 9);
    // The losers are recorded with the winner and parked for the next registration.
    let losers: Vec<LedgerEntry> = h
        .ledger
        .entries()
        .into_iter()
        .filter(|e| e.status == LedgerStatus::Superseded)
        .collect();
    assert_eq!(losers.len(), 9);
    let winner_event = h
        .ledger
        .entries()
        .into_iter()
        .find(|e| e.key.as_str() == winner)
        .unwrap()
        .event_id;
    assert!(losers
        .iter()
        .all(|e| e.superseded_by.as_ref() == Some(&winner_event)));
    let DispatchTarget::Resume { resume_id, .. } = resume().target else {
        unreachable!()
    };
    let parked = h
        .dispatcher
        .parked
        .parked(
            &WorkspaceId::new("ws1").unwrap(),
            &resume_id,
            h.clock.now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(parked.len(), 9);
}

#[tokio::test]
async fn a_permanently_failed_delivery_leaves_the_wait_live_for_the_next_event() {
    let h = harness();
    h.resumes.put(&live_wait("g1")).await.unwrap();
    h.workflow.script([status(404)]);
    let first = h
        .dispatcher
        .dispatch(&resume_of("evt-a"), attempt(1))
        .await
        .unwrap();
    assert!(matches!(
        first,
        DispatchOutcome::DeadLettered {
            retryable: false,
            ..
        }
    ));
    assert_eq!(h.audit.names(), [A::Matched, A::DispatchFailed]);
    let second = h
        .dispatcher
        .dispatch(&resume_of("evt-b"), attempt(1))
        .await
        .unwrap();
    assert_eq!(second, DispatchOutcome::Dispatched { run_id: None });
    assert_eq!(h.workflow.raises().len(), 2);
}

#[tokio::test]
async fn a_match_for_an_older_generation_goes_to_the_newer_one_that_takes_it() {
    let h = harness();
    h.resumes.put(&live_wait("g2")).await.unwrap();
    // The dispatch message was made for generation g1, replaced since by g2 (whose
    // registration looked for parked events before this one was parked).
    let outcome = h.dispatcher.dispatch(&resume(), attempt(1)).await.unwrap();
    assert_eq!(outcome, DispatchOutcome::Dispatched { run_id: None });
    assert_eq!(h.workflow.raises().len(), 1);
    let DispatchTarget::Resume { resume_id, .. } = resume().target else {
        unreachable!()
    };
    let wait = h.resumes.get(&resume_id).await.unwrap().unwrap();
    assert_eq!(wait.generation, "g2");
    assert_eq!(wait.consumed_by, Some(resume().event.event_id.clone()));
    assert!(
        !h.resumes.delete(&resume_id, Some("g1")).await.unwrap(),
        "a stale delete is a no-op"
    );
    assert!(h.resumes.get(&resume_id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_match_for_an_older_generation_never_touches_a_newer_one_it_does_not_satisfy() {
    let h = harness();
    let mut g2 = live_wait("g2");
    g2.selector = Some("event.data.out == 2".into());
    h.resumes.put(&g2).await.unwrap();
    let outcome = h.dispatcher.dispatch(&resume(), attempt(1)).await.unwrap();
    assert_eq!(
        outcome,
        DispatchOutcome::Parked {
            superseded_by: None
        }
    );
    assert!(h.workflow.raises().is_empty());
    let wait = h.resumes.get(&g2.resume_id).await.unwrap().unwrap();
    assert_eq!(
        (wait.generation.as_str(), wait.consumed_by, wait.taken),
        ("g2", None, None)
    );
    let parked = h
        .parked
        .parked(&resume().workspace_id, &g2.resume_id, h.clock.now_ms())
        .await
        .unwrap();
    assert_eq!(parked.len(), 1, "kept for the next registration");
}

/// A resume store with faults at the worst moments: its next `take` first lets a new
/// registration land (after the dispatch message was made for the old generation), and
/// its `consume` fails `consume_failures` times (as when the worker is stopped there).
struct Interleaved {
    inner: Arc<MemoryResumeStore>,
    register_before_take: std::sync::Mutex<Option<ResumeWait>>,
    consume_failures: std::sync::atomic::AtomicU32,
}

impl Interleaved {
    fn new(inner: Arc<MemoryResumeStore>) -> Self {
        Self {
            inner,
            register_before_take: std::sync::Mutex::new(None),
            consume_failures: 0.into(),
        }
    }
}

#[async_trait::async_trait]
impl ResumeStore for Interleaved {
    async fn get(&self, id: &ResumeId) -> Result<Option<ResumeWait>, StoreError> {
        self.inner.get(id).await
    }
    async fn put(&self, wait: &ResumeWait) -> Result<(), StoreError> {
        self.inner.put(wait).await
    }
    async fn register(&self, w: &ResumeWait, r: Option<&str>) -> Result<bool, StoreError> {
        self.inner.register(w, r).await
    }
    async fn take(&self, request: &TakeRequest<'_>) -> Result<TakeOutcome, StoreError> {
        let next = self.register_before_take.lock().unwrap().take();
        if let Some(wait) = next {
            self.inner.put(&wait).await?;
        }
        self.inner.take(request).await
    }
    async fn consume(&self, id: &ResumeId, g: &str, h: Holder<'_>) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering;
        let fail = self
            .consume_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if fail.is_ok() {
            return Err(StoreError::Unavailable("injected".into()));
        }
        self.inner.consume(id, g, h).await
    }
    async fn release(&self, id: &ResumeId, g: &str, h: Holder<'_>) -> Result<(), StoreError> {
        self.inner.release(id, g, h).await
    }
    async fn delete(&self, id: &ResumeId, g: Option<&str>) -> Result<bool, StoreError> {
        self.inner.delete(id, g).await
    }
}

#[tokio::test]
async fn an_event_that_finds_a_new_generation_at_take_time_resumes_it() {
    let mut h = harness();
    h.resumes.put(&live_wait("g1")).await.unwrap();
    let store = Interleaved::new(h.resumes.clone());
    *store.register_before_take.lock().unwrap() = Some(live_wait("g2"));
    h.dispatcher.resumes = Arc::new(store);
    let outcome = h.dispatcher.dispatch(&resume(), attempt(1)).await.unwrap();
    assert_eq!(outcome, DispatchOutcome::Dispatched { run_id: None });
    let wait = h
        .resumes
        .get(&live_wait("g2").resume_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (wait.generation.as_str(), wait.consumed_by),
        ("g2", Some(resume().event.event_id.clone()))
    );
}

#[tokio::test]
async fn a_consume_that_fails_after_the_commit_is_finished_by_the_redelivery() {
    let mut h = harness();
    h.resumes.put(&live_wait("g1")).await.unwrap();
    let store = Interleaved::new(h.resumes.clone());
    store
        .consume_failures
        .store(1, std::sync::atomic::Ordering::SeqCst);
    h.dispatcher.resumes = Arc::new(store);
    // The RPC succeeded and the ledger committed, then marking the wait consumed
    // failed (as when the worker is killed there): the message must come back.
    let first = h.dispatcher.dispatch(&resume(), attempt(1)).await;
    assert!(first.is_err(), "{first:?}");
    let wait = h
        .resumes
        .get(&live_wait("g1").resume_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wait.consumed_by, None, "still only held");
    let again = h.dispatcher.dispatch(&resume(), attempt(2)).await.unwrap();
    assert!(matches!(again, DispatchOutcome::Duplicate { .. }));
    let wait = h
        .resumes
        .get(&live_wait("g1").resume_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wait.consumed_by, Some(resume().event.event_id.clone()));
    assert_eq!(h.workflow.raises().len(), 1, "delivered once");
    // The next event finds the generation consumed, not merely held until it lapses.
    let other = h
        .dispatcher
        .dispatch(&resume_of("evt-2"), attempt(1))
        .await
        .unwrap();
    assert_eq!(
        other,
        DispatchOutcome::Parked {
            superseded_by: Some(resume().event.event_id.clone())
        }
    );
}

#[tokio::test]
async fn concurrent_dispatches_of_one_key_start_one_run() {
    let h = harness();
    let msg = start(Some("wv1"), 0);
    let (a, b) = tokio::join!(
        h.dispatcher.dispatch(&msg, attempt(1)),
        h.dispatcher.dispatch(&msg, attempt(1))
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, DispatchOutcome::Dispatched { .. }))
            .count(),
        1
    );
    assert_eq!(h.workflow.starts().len(), 1);
}

/// Drives one message the way SQS would (each return comes back after its delay)
/// until it leaves the queue; returns the final outcome and the elapsed ms.
async fn drive(h: &Harness, msg: &DispatchMessage) -> (DispatchOutcome, i64) {
    let started = h.clock.now_ms();
    for receive in 1..=500 {
        let outcome = h.dispatcher.dispatch(msg, attempt(receive)).await.unwrap();
        match outcome {
            DispatchOutcome::RetryLater { delay_secs, .. } => {
                h.clock.advance_ms(i64::from(delay_secs) * 1000);
            }
            done => return (done, h.clock.now_ms() - started),
        }
    }
    panic!("still retrying after 500 receives");
}

#[tokio::test]
async fn transient_failures_retry_for_the_whole_window_and_no_longer() {
    let h = windowed(60, 4);
    let msg = start(Some("wv1"), 0);
    h.workflow.script((0..999).map(|_| status(503)));
    let (outcome, elapsed_ms) = drive(&h, &msg).await;
    assert!(matches!(
        outcome,
        DispatchOutcome::DeadLettered {
            reason: DeadLetterReason::RetriesExhausted,
            ..
        }
    ));
    assert!(
        (60_000..=65_000).contains(&elapsed_ms),
        "dead-lettered when the window ended: {elapsed_ms} ms"
    );
    // At most one RPC per backoff cap once the backoff has grown.
    let rpcs = h.workflow.starts().len();
    let bound = usize::try_from(crate::config::required_receive_count(60, 4)).unwrap();
    assert!((3..=bound).contains(&rpcs), "{rpcs} RPCs in the window");
}

#[tokio::test]
async fn an_outage_shorter_than_the_window_ends_dispatched() {
    let h = windowed(60, 4);
    let msg = start(Some("wv1"), 0);
    h.workflow
        .script((0..8).map(|_| status(503)).chain([Ok(())]));
    let (outcome, _) = drive(&h, &msg).await;
    assert!(matches!(outcome, DispatchOutcome::Dispatched { .. }));
    assert_eq!(h.workflow.starts().len(), 9);
    assert_eq!(h.ledger.entries()[0].status, LedgerStatus::Committed);
}

#[tokio::test]
async fn receives_without_an_rpc_do_not_spend_the_backoff() {
    let h = harness();
    h.workflow.script([status(503)]);
    // The 40th receive of a message whose earlier receives never reached the service
    // (in-flight claims, ledger errors): its first real failure backs off 1 s.
    let outcome = h
        .dispatcher
        .dispatch(&start(Some("wv1"), 0), attempt(40))
        .await
        .unwrap();
    assert!(matches!(
        outcome,
        DispatchOutcome::RetryLater { delay_secs: 1, .. }
    ));
}

#[tokio::test]
async fn an_outage_engages_the_back_off_and_waiting_messages_make_no_rpc() {
    let h = windowed(3_600, 300);
    h.workflow
        .script((0..OUTAGE_THRESHOLD).map(|_| status(503)));
    for n in 0..OUTAGE_THRESHOLD {
        let outcome = h
            .dispatcher
            .dispatch(&start_for(&format!("s{n}")), attempt(1))
            .await
            .unwrap();
        assert!(matches!(outcome, DispatchOutcome::RetryLater { .. }));
    }
    assert!(h.dispatcher.breaker.is_open());
    h.audit.clear();
    let waiting = start_for("waiting");
    let outcome = h.dispatcher.dispatch(&waiting, attempt(1)).await.unwrap();
    let DispatchOutcome::RetryLater { delay_secs, reason } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(reason.contains("outage"), "{reason}");
    assert_eq!(delay_secs, 5, "the shortest hold");
    assert_eq!(h.workflow.starts().len(), OUTAGE_THRESHOLD as usize);
    assert_eq!(h.audit.names(), [A::Matched, A::OutageBackoff]);
    assert!(h
        .ledger
        .get(&waiting.workspace_id, &waiting.dedup_key())
        .await
        .unwrap()
        .is_none());
    // The service is back: the first probe (2 s on) goes through and closes it.
    h.clock.advance_ms(2_000);
    let probe = h.dispatcher.dispatch(&waiting, attempt(2)).await.unwrap();
    assert!(matches!(probe, DispatchOutcome::Dispatched { .. }));
    assert!(!h.dispatcher.breaker.is_open());
    let next = h
        .dispatcher
        .dispatch(&start_for("s0"), attempt(2))
        .await
        .unwrap();
    assert!(matches!(next, DispatchOutcome::Dispatched { .. }));
}

/// Fails `OUTAGE_THRESHOLD` dispatches (the script must answer them with errors), which
/// opens the breaker.
async fn trip(h: &Harness) {
    for n in 0..OUTAGE_THRESHOLD {
        h.dispatcher
            .dispatch(&start_for(&format!("s{n}")), attempt(1))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_message_past_its_window_gets_a_final_attempt_despite_the_breaker() {
    let h = windowed(60, 4);
    h.workflow
        .script((0..OUTAGE_THRESHOLD + 1).map(|_| status(503)));
    trip(&h).await;
    assert!(h.dispatcher.breaker.is_open());
    let old = Attempt {
        sent_ms: Some(h.clock.now_ms() - 61_000),
        ..attempt(30)
    };
    let outcome = h.dispatcher.dispatch(&start_for("old"), old).await.unwrap();
    assert!(matches!(
        outcome,
        DispatchOutcome::DeadLettered {
            reason: DeadLetterReason::RetriesExhausted,
            ..
        }
    ));
}

#[test]
fn a_body_around_a_shared_event_is_the_body_serde_makes() {
    let mut message = start(Some("wv\"1"), 2);
    std::sync::Arc::make_mut(&mut message.event)
        .data
        .insert("odd".into(), json!("a\u{FFFF}b \" \\ é"));
    message.trace = Some(crate::trace::TraceParent::generate());
    message.received_ms = Some(1_700_000_000_000);
    message.not_before_ms = Some(1_700_000_005_000);
    message.debounce_cell = Some("ws1#sub1#debounce#\"odd\"".into());
    assert_body_is_the_one_serde_makes(&message);
}

/// The body written around the event's text is byte for byte serde's, and reads back.
fn assert_body_is_the_one_serde_makes(message: &DispatchMessage) {
    let event_json = serde_json::to_string(&message.event).unwrap();
    let spliced = message.body_with_event(&event_json).unwrap();
    let whole = crate::limits::message_body("m", message, usize::MAX).unwrap();
    assert_eq!(spliced, whole);
    let back: DispatchMessage = serde_json::from_str(&spliced).unwrap();
    assert_eq!(&back, message);
}

#[test]
fn every_shape_of_target_is_written_as_serde_writes_it() {
    let unversioned = start(None, 1);
    let mut mapped = start(Some("wv-9"), 1);
    let mut failed = start(Some("wv-9"), 1);
    if let DispatchTarget::Start { inputs, .. } = &mut mapped.target {
        inputs.insert("title".into(), json!("\"quoted\" \u{FFFE} é"));
        inputs.insert("n".into(), json!({"nested": [1, null, true]}));
    }
    if let DispatchTarget::Start { mapping_error, .. } = &mut failed.target {
        *mapping_error = Some("inputMapping.title: no such key \"x\"".into());
    }
    let mut resume = unversioned.clone();
    resume.target = DispatchTarget::Resume {
        resume_id: ResumeId::new("res_1").unwrap(),
        run_id: "run-1".into(),
        step_id: "step-1".into(),
        event_key: "approved".into(),
        generation: "g1".into(),
    };
    for message in [unversioned, mapped, failed, resume] {
        assert_body_is_the_one_serde_makes(&message);
    }
}

#[test]
fn strings_needing_any_escape_are_written_as_serde_writes_them() {
    // Every ASCII byte, each alone and inside text, as a key, a value, a workflow id and
    // a version (the body writer copies texts that need no escaping as they are).
    let texts = (0u8..=0x7f)
        .map(|b| char::from(b).to_string())
        .chain((0u8..=0x7f).map(|b| format!("ab{}cd", char::from(b))))
        .chain(["", "plain", "é ü \u{1F600}", "\u{7f}\u{80}\u{FFFF}"].map(str::to_owned));
    for text in texts {
        let mut message = start(Some(&text), 1);
        if let DispatchTarget::Start {
            workflow_id,
            inputs,
            mapping_error,
            ..
        } = &mut message.target
        {
            workflow_id.clone_from(&text);
            inputs.insert(text.clone(), json!(text));
            inputs.insert("list".into(), json!([text.clone(), {"k": text.clone()}]));
            *mapping_error = Some(text.clone());
        }
        assert_body_is_the_one_serde_makes(&message);
    }
}

#[tokio::test]
async fn during_an_outage_every_message_comes_back_within_its_hold_or_at_the_next_probe() {
    // Default cap (300 s): before, a message held or failing late in a 5-minute outage
    // waited up to the cap, so the backlog drained minutes after the service returned.
    let h = windowed(86_400, 300);
    h.workflow.script((0..10_000).map(|_| status(503)));
    trip(&h).await;
    assert!(h.dispatcher.breaker.is_open());
    let opened = h.clock.now_ms();
    let mut worst = 0;
    for step in 1..=300u32 {
        h.clock.advance_ms(1_000);
        let message = start_for(&format!("m{}", step % 40));
        let outcome = h
            .dispatcher
            .dispatch(&message, attempt(step))
            .await
            .unwrap();
        let DispatchOutcome::RetryLater { delay_secs, .. } = outcome else {
            panic!("{outcome:?}");
        };
        let age_secs = (h.clock.now_ms() - opened) / 1_000;
        // The hold, or the wait for the next probe when that is later.
        let bound = u32::try_from((age_secs / 15).max(age_secs.min(30)).max(5)).unwrap() + 1;
        assert!(delay_secs <= bound, "{delay_secs} s at {age_secs} s");
        worst = worst.max(delay_secs);
    }
    assert!(worst <= 31, "{worst}");
    let calls = h.workflow.starts().len();
    assert!(calls <= 43, "{calls} calls during the outage");
}

#[tokio::test]
async fn short_outage_holds_stop_when_the_receive_budget_has_no_room_left() {
    let h = harness_with(
        Settings::from_lookup(|n| match n {
            "TRIGGER_DISPATCH_RETRY_WINDOW_SECONDS" => Some("86400".into()),
            "TRIGGER_DISPATCH_BACKOFF_CAP_SECONDS" => Some("300".into()),
            "TRIGGER_DISPATCH_MAX_RECEIVE_COUNT" => {
                Some(crate::config::queue_receive_budget(86_400, 300).to_string())
            }
            _ => None,
        })
        .unwrap(),
    );
    h.workflow.script((0..100).map(|_| status(503)));
    trip(&h).await;
    let sent = h.clock.now_ms();
    let held = |number: u32| Attempt {
        number,
        deadline_ms: None,
        sent_ms: Some(sent),
    };
    let hold = |outcome: DispatchOutcome| match outcome {
        DispatchOutcome::RetryLater { delay_secs, .. } => delay_secs,
        other => panic!("{other:?}"),
    };
    h.clock.advance_ms(500);
    let early = h
        .dispatcher
        .dispatch(&start_for("w"), held(3))
        .await
        .unwrap();
    assert_eq!(hold(early), 5, "room in the budget: the short hold");
    // A message that already used the outage allowance is back on the backoff schedule.
    let spent = h
        .dispatcher
        .dispatch(&start_for("w"), held(60))
        .await
        .unwrap();
    assert_eq!(hold(spent), 300);
}

fn received(body: DispatchMessage) -> crate::stage::batch::Received<DispatchMessage> {
    crate::stage::batch::Received {
        message_id: "m1".into(),
        receipt_handle: "rh1".into(),
        receive_count: 1,
        sent_ms: None,
        traceparent: None,
        body,
    }
}

#[tokio::test]
async fn a_throttled_message_before_its_slot_is_sent_again_delayed_and_dispatched_at_it() {
    let h = harness();
    let queue = Arc::new(MemoryQueue::default());
    let now = h.clock.now_ms();
    let clock = h.clock.clone();
    let workflow = h.workflow.clone();
    let stage = crate::stage::dispatcher::DispatchStage {
        dispatcher: h.dispatcher,
        queue: queue.clone(),
        flow: None,
        events: None,
    };
    let mut message = start(Some("wv1"), 1);
    message.not_before_ms = Some(now + 2_000_000);
    let outcome = stage.handle(received(message.clone()), None).await.unwrap();
    assert_eq!(
        outcome,
        DispatchOutcome::Held {
            until_ms: now + 2_000_000
        }
    );
    let (body, delay) = queue.delayed().pop().unwrap();
    assert_eq!(
        delay, 900,
        "SQS's longest delay; the rest on the next receipt"
    );
    assert_eq!(
        serde_json::from_str::<DispatchMessage>(&body).unwrap(),
        message
    );
    assert!(workflow.starts().is_empty(), "no run before the slot");

    clock.advance_ms(1_999_500);
    let outcome = stage.handle(received(message), None).await.unwrap();
    assert!(
        matches!(outcome, DispatchOutcome::Dispatched { .. }),
        "within a second of the slot it runs: {outcome:?}"
    );
    assert_eq!(workflow.starts().len(), 1);
}

/// The match and dispatch stages of one subscription with `flow` (and `selector`; the
/// mapping `{"n": event.data.n}`), sharing the ledger, the flow cells and an archive.
struct FlowPipeline {
    clock: Arc<ManualClock>,
    ledger: Arc<MemoryLedger>,
    workflow: Arc<ScriptedWorkflow>,
    archive: Arc<crate::memory::MemoryArchive>,
    dispatch_queue: Arc<MemoryQueue>,
    matcher: crate::stage::matcher::MatchStage,
    stage: crate::stage::dispatcher::DispatchStage,
}

async fn flow_pipeline(flow: serde_json::Value, selector: Option<&str>) -> FlowPipeline {
    use crate::subscription::{Subscription, SubscriptionStore};
    let h = harness();
    let cells = Arc::new(crate::memory::MemoryFlowStore::default());
    let archive = Arc::new(crate::memory::MemoryArchive::default());
    let subscriptions = Arc::new(crate::memory::MemorySubscriptionStore::default());
    let subscription: Subscription = serde_json::from_value(json!({
        "workspaceId": "ws1", "subscriptionId": "sub1", "sourceType": "internal",
        "workflowId": "wf1", "targetWorkflowVersionId": "wv1", "state": "active",
        "selector": selector, "inputMapping": {"n": "${{ event.data.n }}"}, "flow": flow,
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"
    }))
    .unwrap();
    subscriptions.put(&subscription).await.unwrap();
    let dispatch_queue = Arc::new(MemoryQueue::default());
    let matcher = crate::stage::matcher::MatchStage::new(
        subscriptions,
        Arc::new(MemoryResumeStore::default()),
        dispatch_queue.clone(),
        h.ledger.clone(),
        Arc::new(RecordingAuditSink::default()),
        h.clock.clone(),
        0,
    )
    .with_flow(cells.clone());
    FlowPipeline {
        clock: h.clock,
        ledger: h.ledger,
        workflow: h.workflow,
        archive: archive.clone(),
        dispatch_queue,
        matcher,
        stage: crate::stage::dispatcher::DispatchStage {
            dispatcher: h.dispatcher,
            queue: Arc::new(MemoryQueue::default()),
            flow: Some(Arc::new(crate::flow::FlowGate::new(cells))),
            events: Some(archive),
        },
    }
}

impl FlowPipeline {
    /// Matches a lifecycle event of ws1 (archived first, as ingest does).
    async fn event(&self, id: &str, data: serde_json::Value) {
        use crate::archive::EventArchive;
        let queued: crate::event::QueuedEvent = serde_json::from_value(json!({
            "workspaceId": "ws1",
            "event": {"eventId": id, "kind": "workflow.completed", "depth": 0,
                      "source": {"type": "internal", "occurredAt": "t"}, "data": data}
        }))
        .unwrap();
        let ws = WorkspaceId::new("ws1").unwrap();
        self.archive
            .put_new(&ws, &queued.event, self.clock.now_ms(), i64::MAX)
            .await
            .unwrap();
        self.matcher.handle(&queued).await.unwrap();
    }

    fn messages(&self) -> Vec<DispatchMessage> {
        self.dispatch_queue
            .sent()
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect()
    }
}

/// Three events of one debounce window through the match stage and the dispatch stage
/// (sharing the ledger and the flow cells): one run, with the last event; the others
/// end `debounced`, naming the event that came after them.
#[tokio::test]
async fn a_debounced_burst_starts_one_run_with_its_last_event() {
    let p = flow_pipeline(json!({"debounce": {"period": "PT5S"}}), None).await;
    let (clock, ledger, workflow, stage) = (&p.clock, &p.ledger, &p.workflow, &p.stage);
    for n in 0..3 {
        p.event(&format!("e{n}"), json!({"n": n})).await;
        clock.advance_ms(1_000);
    }
    let messages = p.messages();
    assert_eq!(messages.len(), 3);
    let mut outcomes = Vec::new();
    for message in messages {
        let due = message.not_before_ms.unwrap();
        clock.advance_ms((due - clock.now_ms()).max(0));
        outcomes.push(stage.handle(received(message), None).await.unwrap());
    }
    assert_eq!(
        outcomes[..2],
        [
            DispatchOutcome::Debounced {
                latest: Some(EventId::new("e2").unwrap())
            },
            DispatchOutcome::Debounced {
                latest: Some(EventId::new("e2").unwrap())
            },
        ]
    );
    assert!(matches!(outcomes[2], DispatchOutcome::Dispatched { .. }));
    let starts = workflow.starts();
    assert_eq!(starts.len(), 1);
    assert_eq!(
        starts[0].inputs,
        json!({"n": 2}).as_object().unwrap().clone()
    );
    let ws = WorkspaceId::new("ws1").unwrap();
    let e0 = ledger
        .get(&ws, &crate::dedup::DedupKey::new("sub1", "e0"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e0.status, LedgerStatus::Debounced);
    assert_eq!(e0.superseded_by.unwrap().as_str(), "e2");
}

/// Concurrency 1 through the match and dispatch stages: the second event waits in line
/// until the first run's end (its lifecycle event, through the match stage) frees the
/// slot; then it runs.
#[tokio::test]
async fn a_concurrency_slot_is_freed_by_the_runs_lifecycle_end() {
    let p = flow_pipeline(
        json!({"concurrency": {"limit": 1}}),
        Some("has(event.data.n)"),
    )
    .await;
    let (clock, workflow, stage) = (&p.clock, &p.workflow, &p.stage);
    p.event("e0", json!({"n": 0})).await;
    p.event("e1", json!({"n": 1})).await;
    let messages = p.messages();
    let first = stage
        .handle(received(messages[0].clone()), None)
        .await
        .unwrap();
    let DispatchOutcome::Dispatched { run_id: Some(run) } = first else {
        panic!("{first:?}")
    };
    let waiting = stage
        .handle(received(messages[1].clone()), None)
        .await
        .unwrap();
    assert!(
        matches!(waiting, DispatchOutcome::Held { .. }),
        "{waiting:?}"
    );
    assert_eq!(workflow.starts().len(), 1);
    // The first run ends: its lifecycle event frees the slot.
    p.event("end-0", json!({"runId": run, "status": "succeeded"}))
        .await;
    clock.advance_ms(2_000);
    let second = stage
        .handle(received(messages[1].clone()), None)
        .await
        .unwrap();
    assert!(
        matches!(second, DispatchOutcome::Dispatched { .. }),
        "{second:?}"
    );
    assert_eq!(workflow.starts().len(), 2);
}

/// Batches of 2 through the match and dispatch stages: five events make three runs
/// (2, 2 and 1 events, the last on its timeout), each with its events in
/// `inputs.events`; every message of a batch after its first run is a duplicate.
#[tokio::test]
async fn batched_events_start_one_run_per_batch_with_every_event() {
    let p = flow_pipeline(json!({"batch": {"maxSize": 2, "timeout": "PT30S"}}), None).await;
    let (clock, ledger, workflow, stage) = (&p.clock, &p.ledger, &p.workflow, &p.stage);
    let ws = WorkspaceId::new("ws1").unwrap();
    for n in 0..5 {
        p.event(&format!("e{n}"), json!({"n": n})).await;
    }
    let messages = p.messages();
    assert_eq!(
        messages.len(),
        5,
        "each batch's first event and the one filling it send"
    );
    clock.advance_ms(30_000);
    let mut outcomes = Vec::new();
    for message in messages {
        outcomes.push(
            stage
                .handle(received(message), None)
                .await
                .unwrap()
                .as_str(),
        );
    }
    assert_eq!(
        outcomes,
        [
            "dispatched",
            "duplicate",
            "dispatched",
            "duplicate",
            "dispatched"
        ]
    );
    let batches: Vec<Vec<i64>> = workflow
        .starts()
        .iter()
        .map(|s| {
            s.inputs["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["data"]["n"].as_i64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(batches, [vec![0, 1], vec![2, 3], vec![4]]);
    let member = ledger
        .get(&ws, &crate::dedup::DedupKey::new("sub1", "e1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (member.status, member.superseded_by.unwrap().as_str()),
        (LedgerStatus::Batched, "e0")
    );
}
