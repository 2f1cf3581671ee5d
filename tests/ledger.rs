//! The dedup ledger's contract (claim, commit, release, dead letters), written once over
//! the port (`&dyn Port`) and run against both adapters: the DynamoDB ledger through the
//! real SDK on DynamoDB Local, and the in-memory ledger the unit tests rely on — so the
//! two cannot drift apart unnoticed.

use std::sync::Arc;

use custos_trigger::aws::DynamoLedger;
use custos_trigger::deadletters::{DeadLetterPage, DeadLetterQuery, DeadLetterStore, Transition};
use custos_trigger::dedup::{
    ClaimOutcome, ClaimRequest, DeadLetterReason, DedupKey, Ledger, LedgerEntry, LedgerStatus,
    MatchKind, Release,
};
use custos_trigger::ids::{EventId, WorkspaceId};
use integration_tests::{dynamodb, tables};

const NOW: i64 = 1_800_000_000_000;

/// Both ports of the ledger table, as one object.
trait Port: Ledger + DeadLetterStore {}
impl<T: Ledger + DeadLetterStore> Port for T {}

async fn dynamo() -> Arc<dyn Port> {
    let client = dynamodb();
    let t = tables(&client).await;
    Arc::new(DynamoLedger::new(client, t.ledger))
}

fn memory() -> Arc<dyn Port> {
    Arc::new(custos_trigger::memory::MemoryLedger::default())
}

/// Each contract test, once per adapter.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_dynamodb {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::dynamo().await).await
            })*
        }
        mod in_memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::memory()).await
            })*
        }
    };
}

contract!(
    claim_commit_then_duplicate_with_run_id,
    live_claim_is_in_flight_and_passed_lease_is_taken_over,
    release_makes_the_key_claimable_and_keeps_the_error,
    dead_letters_are_listed_newest_first_filtered_paged_and_per_workspace,
    reopen_and_discard_leave_the_index_and_only_take_dead_letters,
    expired_commit_is_claimable_again,
    two_concurrent_claims_of_one_key_have_exactly_one_winner,
    unclaimed_outcomes_never_overwrite_a_commit,
    workspaces_do_not_see_each_others_items,
);

fn request(token: &str, now_ms: i64, lease_ms: i64) -> ClaimRequest {
    ClaimRequest {
        workspace_id: WorkspaceId::new("ws1").unwrap(),
        key: DedupKey::new("sub1", "evt1"),
        event_id: EventId::new("evt1").unwrap(),
        target_id: "sub1".into(),
        match_kind: MatchKind::Start,
        token: token.into(),
        now_ms,
        lease_until_ms: now_ms + lease_ms,
        expires_at: now_ms / 1000 + 86_400,
    }
}

fn claimed(outcome: ClaimOutcome) -> custos_trigger::dedup::Claim {
    match outcome {
        ClaimOutcome::Claimed(claim) => claim,
        other => panic!("expected a claim, got {other:?}"),
    }
}

async fn claim_commit_then_duplicate_with_run_id(ledger: Arc<dyn Port>) {
    let claim = claimed(ledger.claim(&request("t1", NOW, 30_000)).await.unwrap());
    assert_eq!(claim.attempts, 1);
    ledger
        .commit(&claim, Some("run-1"), NOW / 1000 + 86_400, NOW)
        .await
        .unwrap();
    let again = ledger.claim(&request("t2", NOW + 1, 30_000)).await.unwrap();
    assert_eq!(
        again,
        ClaimOutcome::Duplicate {
            run_id: Some("run-1".into())
        }
    );
    let entry = ledger
        .get(&claim.workspace_id, &claim.key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, LedgerStatus::Committed);
    assert_eq!(entry.run_id.as_deref(), Some("run-1"));
    assert_eq!(entry.event_id.as_str(), "evt1");
    assert_eq!(entry.target_id, "sub1");
    assert_eq!(entry.claim_token, None);
}

async fn live_claim_is_in_flight_and_passed_lease_is_taken_over(ledger: Arc<dyn Port>) {
    let first = claimed(ledger.claim(&request("t1", NOW, 30_000)).await.unwrap());
    let blocked = ledger
        .claim(&request("t2", NOW + 10_000, 30_000))
        .await
        .unwrap();
    assert_eq!(
        blocked,
        ClaimOutcome::InFlight {
            lease_until_ms: NOW + 30_000
        }
    );
    let taken = claimed(
        ledger
            .claim(&request("t3", NOW + 30_000, 30_000))
            .await
            .unwrap(),
    );
    assert_eq!(taken.attempts, 2);
    // The crashed worker's late commit is refused: its claim was lost.
    assert!(ledger
        .commit(&first, Some("late"), NOW / 1000, NOW + 31_000)
        .await
        .is_err());
    ledger
        .commit(&taken, Some("run-2"), NOW / 1000 + 86_400, NOW + 31_000)
        .await
        .unwrap();
}

async fn release_makes_the_key_claimable_and_keeps_the_error(ledger: Arc<dyn Port>) {
    let claim = claimed(ledger.claim(&request("t1", NOW, 30_000)).await.unwrap());
    ledger
        .release(
            &claim,
            &Release::Retry {
                error: "503".into(),
            },
            NOW + 1,
        )
        .await
        .unwrap();
    let entry = ledger
        .get(&claim.workspace_id, &claim.key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, LedgerStatus::Released);
    assert_eq!(entry.last_error.as_deref(), Some("503"));
    let retry = claimed(ledger.claim(&request("t2", NOW + 2, 30_000)).await.unwrap());
    assert_eq!(retry.attempts, 2);
    ledger
        .release(
            &retry,
            &Release::DeadLetter {
                reason: DeadLetterReason::Rejected,
                detail: "400 bad".into(),
                expires_at: NOW / 1000 + 999,
                message: Some("{}".into()),
            },
            NOW + 3,
        )
        .await
        .unwrap();
    let entry = ledger
        .get(&claim.workspace_id, &claim.key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, LedgerStatus::DeadLettered);
    assert_eq!(entry.expires_at, NOW / 1000 + 999);
    assert_eq!(entry.message.as_deref(), Some("{}"));
    // A dead letter stays claimable, so a replay can dispatch it, in a new retry window.
    let replayed = claimed(ledger.claim(&request("t3", NOW + 4, 30_000)).await.unwrap());
    assert_eq!(replayed.first_attempt_ms, NOW + 4);
    assert_eq!(replayed.attempts, 3);
    let entry = ledger
        .get(&claim.workspace_id, &claim.key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.message, None, "a claimed item is no dead letter");
}

/// Dead-letters `target` of `evt1` in `ws` at `at_ms` with `reason`.
async fn dead_letter(
    ledger: &dyn Port,
    ws: &str,
    target: &str,
    reason: DeadLetterReason,
    at_ms: i64,
) {
    let mut request = request("t", at_ms, 30_000);
    request.workspace_id = WorkspaceId::new(ws).unwrap();
    request.key = DedupKey::new(target, "evt1");
    request.target_id = target.into();
    let claim = claimed(ledger.claim(&request).await.unwrap());
    let release = Release::DeadLetter {
        reason,
        detail: "refused".into(),
        expires_at: at_ms / 1000 + 999,
        message: Some(format!("{{\"target\":\"{target}\"}}")),
    };
    ledger.release(&claim, &release, at_ms).await.unwrap();
}

async fn dead_letters_are_listed_newest_first_filtered_paged_and_per_workspace(
    ledger: Arc<dyn Port>,
) {
    for i in 0..5 {
        let reason = if i % 2 == 0 {
            DeadLetterReason::Rejected
        } else {
            DeadLetterReason::RetriesExhausted
        };
        dead_letter(ledger.as_ref(), "ws1", &format!("sub{i}"), reason, NOW + i).await;
    }
    dead_letter(
        ledger.as_ref(),
        "ws2",
        "sub0",
        DeadLetterReason::Rejected,
        NOW,
    )
    .await;
    // A committed item is never listed.
    let mut committed = request("t", NOW, 30_000);
    committed.key = DedupKey::new("sub-done", "evt1");
    committed.target_id = "sub-done".into();
    let done = claimed(ledger.claim(&committed).await.unwrap());
    ledger
        .commit(&done, None, NOW / 1000 + 99, NOW)
        .await
        .unwrap();

    let ws1 = WorkspaceId::new("ws1").unwrap();
    let query = |limit| DeadLetterQuery {
        limit,
        ..Default::default()
    };
    let first = ledger.list(&ws1, &query(3)).await.unwrap();
    let targets = |page: &DeadLetterPage| {
        page.items
            .iter()
            .map(|e| e.target_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(targets(&first), ["sub4", "sub3", "sub2"]);
    let second = ledger
        .list(
            &ws1,
            &DeadLetterQuery {
                cursor: first.next_cursor.clone(),
                ..query(3)
            },
        )
        .await
        .unwrap();
    assert_eq!(targets(&second), ["sub1", "sub0"]);
    assert_eq!(second.next_cursor, None);

    let rejected = DeadLetterQuery {
        reason: Some(DeadLetterReason::Rejected),
        ..query(10)
    };
    assert_eq!(
        targets(&ledger.list(&ws1, &rejected).await.unwrap()),
        ["sub4", "sub2", "sub0"]
    );
    let one = DeadLetterQuery {
        subscription_id: Some("sub3".into()),
        ..query(10)
    };
    assert_eq!(targets(&ledger.list(&ws1, &one).await.unwrap()), ["sub3"]);
    let window = DeadLetterQuery {
        since_ms: Some(NOW + 1),
        until_ms: Some(NOW + 3),
        ..query(10)
    };
    assert_eq!(
        targets(&ledger.list(&ws1, &window).await.unwrap()),
        ["sub2", "sub1"]
    );
    let ws2 = WorkspaceId::new("ws2").unwrap();
    assert_eq!(
        targets(&ledger.list(&ws2, &query(10)).await.unwrap()),
        ["sub0"]
    );
}

async fn reopen_and_discard_leave_the_index_and_only_take_dead_letters(ledger: Arc<dyn Port>) {
    dead_letter(
        ledger.as_ref(),
        "ws1",
        "sub1",
        DeadLetterReason::Rejected,
        NOW,
    )
    .await;
    dead_letter(
        ledger.as_ref(),
        "ws1",
        "sub2",
        DeadLetterReason::Rejected,
        NOW,
    )
    .await;
    let ws1 = WorkspaceId::new("ws1").unwrap();
    let (k1, k2) = (DedupKey::new("sub1", "evt1"), DedupKey::new("sub2", "evt1"));
    let other = WorkspaceId::new("ws2").unwrap();
    let lease = NOW + 60_000;
    assert_eq!(
        ledger.reopen(&other, &k1, NOW + 1, lease).await.unwrap(),
        Transition::NotFound,
        "another workspace's"
    );

    let Transition::Done(before) = ledger.reopen(&ws1, &k1, NOW + 1, lease).await.unwrap() else {
        panic!("reopened");
    };
    assert_eq!(before.message.as_deref(), Some("{\"target\":\"sub1\"}"));
    assert_eq!(
        ledger.reopen(&ws1, &k1, NOW + 2, lease + 1).await.unwrap(),
        Transition::Replaying,
        "one replay at a time"
    );
    let listed = ledger
        .list(
            &ws1,
            &DeadLetterQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        listed.items.len(),
        2,
        "a dead letter being replayed stays listed"
    );
    let held = listed.items.iter().find(|e| e.key == k1).unwrap();
    assert_eq!(held.replaying_until_ms, lease);
    // Its lease lapsed (the replay was stopped before sending): replayable again.
    assert!(matches!(
        ledger
            .reopen(&ws1, &k1, lease, lease + 60_000)
            .await
            .unwrap(),
        Transition::Done(_)
    ));
    // A reopened item whose message could not be sent is replayable at once.
    ledger.restore(&ws1, &k1, lease + 60_000).await.unwrap();
    assert!(matches!(
        ledger
            .reopen(&ws1, &k1, lease + 1, lease + 2)
            .await
            .unwrap(),
        Transition::Done(_)
    ));
    // The dispatcher's claim of the replayed message takes it out of the index.
    let mut replayed = request("t8", lease + 3, 30_000);
    replayed.key = k1.clone();
    let claim = ledger.claim(&replayed).await.unwrap();
    assert!(
        matches!(claim, ClaimOutcome::Claimed(ref c) if c.first_attempt_ms == lease + 3),
        "{claim:?}"
    );
    let listed = ledger
        .list(
            &ws1,
            &DeadLetterQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    assert!(matches!(
        ledger.discard(&ws1, &k2, NOW + 3).await.unwrap(),
        Transition::Done(_)
    ));
    assert_eq!(
        ledger.discard(&ws1, &k2, NOW + 4).await.unwrap(),
        Transition::NotDeadLettered(LedgerStatus::Discarded)
    );
    let mut again = request("t9", NOW + 5, 30_000);
    again.key = k2.clone();
    again.target_id = "sub2".into();
    assert_eq!(
        ledger.claim(&again).await.unwrap(),
        ClaimOutcome::Duplicate { run_id: None },
        "a discard is final"
    );
    let listed = ledger
        .list(
            &ws1,
            &DeadLetterQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(listed.items.is_empty());
}

async fn expired_commit_is_claimable_again(ledger: Arc<dyn Port>) {
    let claim = claimed(ledger.claim(&request("t1", NOW, 30_000)).await.unwrap());
    ledger
        .commit(&claim, Some("run-1"), NOW / 1000 + 10, NOW)
        .await
        .unwrap();
    claimed(
        ledger
            .claim(&request("t2", NOW + 10_000, 30_000))
            .await
            .unwrap(),
    );
}

async fn two_concurrent_claims_of_one_key_have_exactly_one_winner(ledger: Arc<dyn Port>) {
    for round in 0..5i64 {
        let now = NOW + round * 1_000_000;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let ledger = Arc::clone(&ledger);
                tokio::spawn(async move {
                    ledger
                        .claim(&request(&format!("r{round}-t{i}"), now, 60_000))
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            if let ClaimOutcome::Claimed(claim) = task.await.unwrap().unwrap() {
                winners += 1;
                ledger
                    .commit(&claim, Some("run"), now / 1000 + 1, now)
                    .await
                    .unwrap();
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

async fn unclaimed_outcomes_never_overwrite_a_commit(ledger: Arc<dyn Port>) {
    let claim = claimed(ledger.claim(&request("t1", NOW, 30_000)).await.unwrap());
    ledger
        .commit(&claim, Some("run-1"), NOW / 1000 + 86_400, NOW)
        .await
        .unwrap();
    let rejected = LedgerEntry {
        workspace_id: claim.workspace_id.clone(),
        key: claim.key.clone(),
        event_id: EventId::new("evt1").unwrap(),
        target_id: "sub1".into(),
        match_kind: MatchKind::Start,
        status: LedgerStatus::LoopRejected,
        claim_token: None,
        lease_until_ms: 0,
        run_id: None,
        last_error: Some("too deep".into()),
        reason: None,
        superseded_by: None,
        replaying_until_ms: 0,
        attempts: 1,
        first_attempt_ms: 0,
        expires_at: NOW / 1000 + 100,
        updated_at_ms: NOW + 1,
        message: None,
    };
    ledger.record_unclaimed(&rejected).await.unwrap();
    let entry = ledger
        .get(&claim.workspace_id, &claim.key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, LedgerStatus::Committed);
    let other_key = LedgerEntry {
        key: DedupKey::new("sub2", "evt1"),
        ..rejected
    };
    ledger.record_unclaimed(&other_key).await.unwrap();
    let entry = ledger
        .get(&other_key.workspace_id, &other_key.key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, LedgerStatus::LoopRejected);
    assert_eq!(entry.last_error.as_deref(), Some("too deep"));
}

async fn workspaces_do_not_see_each_others_items(ledger: Arc<dyn Port>) {
    let claim = claimed(ledger.claim(&request("t1", NOW, 30_000)).await.unwrap());
    ledger
        .commit(&claim, Some("run-1"), NOW / 1000 + 86_400, NOW)
        .await
        .unwrap();
    let mut foreign = request("t2", NOW, 30_000);
    foreign.workspace_id = WorkspaceId::new("ws2").unwrap();
    claimed(ledger.claim(&foreign).await.unwrap());
    assert!(ledger
        .get(&WorkspaceId::new("ws3").unwrap(), &claim.key)
        .await
        .unwrap()
        .is_none());
}
