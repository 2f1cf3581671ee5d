//! Contract tests of the ports the exactly-once protocol rests on (dedup ledger, parked
//! events, resume waits, the shared outage breaker): each contract is written once over `&dyn Trait` and run against
//! the in-memory adapter and the DynamoDB adapter on DynamoDB Local, so the two cannot
//! drift apart.

use custos_trigger::aws::{DynamoBreakerStore, DynamoLedger, DynamoParkStore, DynamoResumeStore};
use custos_trigger::dedup::{ClaimOutcome, ClaimRequest, DedupKey, Ledger, MatchKind, Release};
use custos_trigger::dispatch::{BreakerState, BreakerStore, LocalBreaker};
use custos_trigger::event::NormalizedEvent;
use custos_trigger::ids::{EventId, WorkspaceId};
use custos_trigger::memory::{MemoryLedger, MemoryParkStore, MemoryResumeStore};
use custos_trigger::resume::{
    finish_hold, Finish, Holder, ParkOutcome, ParkStore, ParkedEvent, ResumeKey, ResumeStore,
    ResumeWait, TakeOutcome, TakeRequest, MAX_PARKED_PER_WAIT,
};
use integration_tests::{dynamodb, tables};
use serde_json::json;

const NOW: i64 = 1_800_000_000_000;

fn ws() -> WorkspaceId {
    WorkspaceId::new("ws1").unwrap()
}

fn claim_request(token: &str, now_ms: i64, expires_at: i64) -> ClaimRequest {
    ClaimRequest {
        workspace_id: ws(),
        key: DedupKey::new("sub1", "evt1"),
        event_id: EventId::new("evt1").unwrap(),
        target_id: "sub1".into(),
        match_kind: MatchKind::Start,
        token: token.into(),
        now_ms,
        lease_until_ms: now_ms + 30_000,
        expires_at,
    }
}

fn claimed(outcome: ClaimOutcome) -> custos_trigger::dedup::Claim {
    match outcome {
        ClaimOutcome::Claimed(claim) => claim,
        other => panic!("expected a claim, got {other:?}"),
    }
}

/// An item past its retention is as good as absent: claimed again, it starts a new
/// retry window and a new attempt count (it used to keep the old window, so a replay
/// days later was dead-lettered as `retries_exhausted` at its first failure).
async fn an_expired_item_starts_a_fresh_retry_window(ledger: &dyn Ledger) {
    for (round, release) in [
        Some(Release::Retry {
            error: "503".into(),
        }),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let base = NOW + i64::try_from(round).unwrap() * 10_000_000;
        let first = claimed(
            ledger
                .claim(&claim_request("t1", base, base / 1000 + 60))
                .await
                .unwrap(),
        );
        match &release {
            Some(release) => ledger.release(&first, release, base).await.unwrap(),
            None => ledger
                .commit(&first, None, base / 1000 + 60, base)
                .await
                .unwrap(),
        }
        let later = base + 120_000;
        let again = claimed(
            ledger
                .claim(&claim_request("t2", later, later / 1000 + 60))
                .await
                .unwrap(),
        );
        assert_eq!(again.first_attempt_ms, later, "{release:?}");
        assert_eq!(again.attempts, 1, "{release:?}");
    }
}

fn event(id: &str, bytes: usize) -> NormalizedEvent {
    serde_json::from_value(json!({
        "eventId": id, "kind": "workflow.completed", "depth": 0,
        "source": {"type": "internal", "occurredAt": "t"},
        "data": {"runId": "r1", "stepId": "s1", "pad": "x".repeat(bytes)}
    }))
    .unwrap()
}

fn parked(id: &str, at_ms: i64, bytes: usize) -> ParkedEvent {
    ParkedEvent {
        event: event(id, bytes),
        parked_at_ms: at_ms,
        until_ms: at_ms + 60_000,
    }
}

fn resume_id() -> custos_trigger::ids::ResumeId {
    ResumeKey {
        run_id: "r1".into(),
        step_id: "s1".into(),
        event_key: "workflow.completed".into(),
    }
    .resume_id()
}

/// Expired rows linger until TTL deletion (up to two days late in DynamoDB): they must
/// neither fill the per-triple cap (counted over every page) nor block a new park of
/// the same event.
async fn expired_parked_rows_count_for_nothing(store: &dyn ParkStore, bytes: usize) {
    let id = resume_id();
    // Each parked after the one before expired (the window is 60 s).
    for i in 0..MAX_PARKED_PER_WAIT + 2 {
        let old = NOW - 3_600_000 + i64::try_from(i).unwrap() * 61_000;
        let outcome = store
            .park(&ws(), &id, &parked(&format!("old-{i:02}"), old, bytes))
            .await
            .unwrap();
        assert_eq!(outcome, ParkOutcome::Parked, "old-{i:02}");
    }
    assert!(store.parked(&ws(), &id, NOW).await.unwrap().is_empty());
    assert_eq!(
        store
            .park(&ws(), &id, &parked("new", NOW, bytes))
            .await
            .unwrap(),
        ParkOutcome::Parked,
        "the cap counts live rows only"
    );
    assert_eq!(
        store
            .park(&ws(), &id, &parked("old-00", NOW, bytes))
            .await
            .unwrap(),
        ParkOutcome::Parked,
        "an expired row of the same event is replaced"
    );
    assert_eq!(
        store
            .park(&ws(), &id, &parked("old-00", NOW + 1, bytes))
            .await
            .unwrap(),
        ParkOutcome::AlreadyParked
    );
    let live: Vec<String> = store
        .parked(&ws(), &id, NOW + 1)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.event.event_id.to_string())
        .collect();
    assert_eq!(live, ["new", "old-00"]);
    // Live rows do fill it.
    for i in 2..MAX_PARKED_PER_WAIT {
        store
            .park(&ws(), &id, &parked(&format!("live-{i:02}"), NOW + 2, bytes))
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .park(&ws(), &id, &parked("one-too-many", NOW + 3, bytes))
            .await
            .unwrap(),
        ParkOutcome::Full
    );
}

fn wait(generation: &str) -> ResumeWait {
    ResumeWait {
        resume_id: resume_id(),
        run_id: "r1".into(),
        step_id: "s1".into(),
        event_key: "workflow.completed".into(),
        selector: None,
        workspace_id: Some(ws()),
        expires_at: NOW / 1000 + 3_600,
        generation: generation.into(),
        taken: None,
        consumed_by: None,
    }
}

async fn take(store: &dyn ResumeStore, generation: &str, event: &str, token: &str) -> TakeOutcome {
    let event = EventId::new(event).unwrap();
    store
        .take(&TakeRequest {
            resume_id: &resume_id(),
            generation,
            event_id: &event,
            token,
            until_ms: NOW + 600_000,
            now_ms: NOW,
        })
        .await
        .unwrap()
}

/// A hold can be finished by whoever finishes for its event (a redelivery after a
/// crash, the dead-letter recorder) without the claim token, on whichever generation
/// the event holds; consuming twice is idempotent; nobody else's event finishes it.
async fn a_hold_is_finished_for_its_event_without_the_token(store: &dyn ResumeStore) {
    let id = resume_id();
    let e1 = EventId::new("e1").unwrap();
    let e2 = EventId::new("e2").unwrap();
    store.put(&wait("g1")).await.unwrap();
    assert_eq!(take(store, "g1", "e1", "tok-1").await, TakeOutcome::Taken);
    assert!(
        !finish_hold(store, &id, &e2, Finish::Consume).await.unwrap(),
        "another event's finish does nothing"
    );
    assert!(!store
        .consume(&id, "g1", Holder::Token("tok-x"))
        .await
        .unwrap());
    // Released for e1 (dead-lettered): the wait is live again for another event.
    assert!(finish_hold(store, &id, &e1, Finish::Release).await.unwrap());
    assert_eq!(take(store, "g1", "e2", "tok-2").await, TakeOutcome::Taken);
    // Consumed for e2 (delivered, then the worker stopped before consuming).
    assert!(finish_hold(store, &id, &e2, Finish::Consume).await.unwrap());
    assert!(
        finish_hold(store, &id, &e2, Finish::Consume).await.unwrap(),
        "idempotent"
    );
    let stored = store.get(&id).await.unwrap().unwrap();
    assert_eq!(stored.consumed_by, Some(e2.clone()));
    assert_eq!(
        take(store, "g1", "e1", "tok-3").await,
        TakeOutcome::Superseded { winner: e2 }
    );
    assert!(
        !finish_hold(store, &id, &e1, Finish::Release).await.unwrap(),
        "a consumed generation is never given back"
    );
}

#[tokio::test]
async fn ledger_contract_on_memory() {
    an_expired_item_starts_a_fresh_retry_window(&MemoryLedger::default()).await;
}

#[tokio::test]
async fn ledger_contract_on_dynamodb() {
    let client = dynamodb();
    let t = tables(&client).await;
    an_expired_item_starts_a_fresh_retry_window(&DynamoLedger::new(client, t.ledger)).await;
}

#[tokio::test]
async fn park_contract_on_memory() {
    expired_parked_rows_count_for_nothing(&MemoryParkStore::default(), 10).await;
}

#[tokio::test]
async fn park_contract_on_dynamodb() {
    let client = dynamodb();
    let t = tables(&client).await;
    // ~60 KB per event: 22 expired rows are more than one 1 MB query page.
    expired_parked_rows_count_for_nothing(&DynamoParkStore::new(client, t.parked), 60_000).await;
}

#[tokio::test]
async fn resume_contract_on_memory() {
    a_hold_is_finished_for_its_event_without_the_token(&MemoryResumeStore::default()).await;
}

#[tokio::test]
async fn resume_contract_on_dynamodb() {
    let client = dynamodb();
    let t = tables(&client).await;
    a_hold_is_finished_for_its_event_without_the_token(&DynamoResumeStore::new(client, t.resumes))
        .await;
}

/// The outage breaker's shared state: opening at the threshold, one probe at a time (a
/// second taker is refused until the first reports or its lease ends), a failed probe
/// frees the slot, a success closes.
async fn one_probe_at_a_time_across_instances(store: &dyn BreakerStore) {
    assert_eq!(store.read().await.unwrap(), BreakerState::default());
    let state = store.record_failure(NOW, 2, NOW + 1_000).await.unwrap();
    assert!(!state.is_open());
    let state = store
        .record_failure(NOW + 10, 2, NOW + 1_010)
        .await
        .unwrap();
    assert!(state.is_open());
    assert_eq!(state.next_probe_at_ms, NOW + 1_010);
    let again = store
        .record_failure(NOW + 20, 2, NOW + 9_999)
        .await
        .unwrap();
    assert_eq!(again.opened_at_ms, state.opened_at_ms, "not re-opened");
    assert!(
        !store
            .take_probe(NOW + 500, NOW + 30_500, NOW + 2_000)
            .await
            .unwrap(),
        "not due"
    );
    assert!(store
        .take_probe(NOW + 1_010, NOW + 31_010, NOW + 3_000)
        .await
        .unwrap());
    assert!(
        !store
            .take_probe(NOW + 3_000, NOW + 33_000, NOW + 5_000)
            .await
            .unwrap(),
        "the first probe still runs"
    );
    store.record_failure(NOW + 3_100, 2, 0).await.unwrap();
    assert!(store
        .take_probe(NOW + 3_200, NOW + 33_200, NOW + 6_000)
        .await
        .unwrap());
    store.close().await.unwrap();
    let closed = store.read().await.unwrap();
    assert!(!closed.is_open());
    assert_eq!(closed.failures, 0);
    assert!(!store
        .take_probe(NOW + 9_000, NOW + 39_000, NOW + 10_000)
        .await
        .unwrap());
}

#[tokio::test]
async fn breaker_contract_in_process() {
    one_probe_at_a_time_across_instances(&LocalBreaker::default()).await;
}

#[tokio::test]
async fn breaker_contract_on_dynamodb() {
    let client = dynamodb();
    let t = tables(&client).await;
    one_probe_at_a_time_across_instances(&DynamoBreakerStore::new(client, t.ledger)).await;
}
