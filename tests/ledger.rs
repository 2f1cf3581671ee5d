//! The dedup ledger through the real SDK against DynamoDB Local.

use std::sync::Arc;

use custos_trigger::aws::DynamoLedger;
use custos_trigger::dedup::{
    ClaimOutcome, ClaimRequest, DeadLetterReason, DedupKey, Ledger, LedgerEntry, LedgerStatus,
    MatchKind, Release,
};
use custos_trigger::ids::{EventId, WorkspaceId};
use integration_tests::{dynamodb, tables};

const NOW: i64 = 1_800_000_000_000;

async fn ledger() -> DynamoLedger {
    let client = dynamodb();
    let t = tables(&client).await;
    DynamoLedger::new(client, t.ledger)
}

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

#[tokio::test]
async fn claim_commit_then_duplicate_with_run_id() {
    let ledger = ledger().await;
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

#[tokio::test]
async fn live_claim_is_in_flight_and_passed_lease_is_taken_over() {
    let ledger = ledger().await;
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

#[tokio::test]
async fn release_makes_the_key_claimable_and_keeps_the_error() {
    let ledger = ledger().await;
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
    // A dead letter stays claimable, so a replay can dispatch it.
    claimed(ledger.claim(&request("t3", NOW + 4, 30_000)).await.unwrap());
}

#[tokio::test]
async fn expired_commit_is_claimable_again() {
    let ledger = ledger().await;
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

#[tokio::test]
async fn two_concurrent_claims_of_one_key_have_exactly_one_winner() {
    let ledger = Arc::new(ledger().await);
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

#[tokio::test]
async fn unclaimed_outcomes_never_overwrite_a_commit() {
    let ledger = ledger().await;
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
        attempts: 1,
        first_attempt_ms: 0,
        expires_at: NOW / 1000 + 100,
        updated_at_ms: NOW + 1,
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

#[tokio::test]
async fn workspaces_do_not_see_each_others_items() {
    let ledger = ledger().await;
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
