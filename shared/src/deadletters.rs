//! Dead-letter operations: list a workspace's dead letters (a sparse index of the ledger,
//! so listing never scans it), replay one or many with their original dispatch message
//! and idempotency key, or discard one for good. A dead letter is a ledger item in
//! status `dead_lettered`; replay hands it back to the dispatcher through the dispatch
//! queue, so the claim/commit protocol still guarantees at most one run per match.

use async_trait::async_trait;

use crate::dedup::{DeadLetterReason, DedupKey, LedgerEntry, LedgerError, LedgerStatus};
use crate::dispatch::DispatchMessage;
use crate::ids::WorkspaceId;
use crate::limits::{self, MAX_QUEUE_MESSAGE_BYTES};
use crate::queue::{Queue, QueueError};

/// The most dead letters one bulk replay takes.
pub const MAX_BULK_REPLAY: usize = 1000;
/// Dead letters a bulk replay reopens at once.
const REPLAY_CONCURRENCY: usize = 16;
/// Dead letters a bulk replay lists, reopens and sends per step: what it holds in memory
/// at once (messages are up to 256 KiB each).
pub const REPLAY_PAGE: usize = 25;
/// How long a reopened dead letter waits for its message to be sent: a replay stopped
/// before sending (a timeout, a crash) leaves it replayable again after this.
pub const REPLAY_LEASE_MS: i64 = 120_000;

/// Which dead letters to list (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterQuery {
    pub subscription_id: Option<String>,
    pub reason: Option<DeadLetterReason>,
    /// Epoch ms, inclusive.
    pub since_ms: Option<i64>,
    /// Epoch ms, exclusive.
    pub until_ms: Option<i64>,
    pub limit: usize,
    pub cursor: Option<String>,
}

impl DeadLetterQuery {
    /// Whether an item (read back from the index) belongs in the answer.
    pub fn admits(&self, entry: &LedgerEntry) -> bool {
        entry.status == LedgerStatus::DeadLettered
            && self
                .subscription_id
                .as_ref()
                .is_none_or(|s| s == &entry.target_id)
            && self.reason.is_none_or(|r| entry.reason == Some(r))
            && self.since_ms.is_none_or(|s| entry.updated_at_ms >= s)
            && self.until_ms.is_none_or(|u| entry.updated_at_ms < u)
    }
}

/// A page of a workspace's dead letters.
pub type DeadLetterPage = crate::listing::Page<LedgerEntry>;

/// The sort key of a dead letter in its workspace's index: dead-lettered-at, then id;
/// also the (opaque) cursor after that item.
pub fn sort_key(entry: &LedgerEntry) -> String {
    sort_key_at(entry.updated_at_ms, &entry.key)
}

/// The sort key of `key` dead-lettered at `at_ms`.
pub fn sort_key_at(at_ms: i64, key: &DedupKey) -> String {
    crate::listing::key(at_ms, key.digest())
}

/// The key a cursor continues after, when it is one this service handed out.
pub fn parse_cursor(cursor: &str) -> Option<DedupKey> {
    crate::listing::cursor_id(cursor).and_then(DedupKey::from_digest)
}

/// What a conditional transition of one dead letter found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Done; the item as it was before (with its message).
    Done(Box<LedgerEntry>),
    /// The item is not (or no longer) a dead letter.
    NotDeadLettered(LedgerStatus),
    /// A dead letter whose earlier replay's lease still runs.
    Replaying,
    NotFound,
}

#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    async fn list(
        &self,
        workspace: &WorkspaceId,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterPage, LedgerError>;

    /// Marks a dead letter as being replayed until `lease_until_ms` (it stays a dead
    /// letter, listed, until the dispatcher claims it for the replayed message); refused
    /// while an earlier replay's lease runs ([`Transition::Replaying`]).
    async fn reopen(
        &self,
        workspace: &WorkspaceId,
        key: &DedupKey,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Transition, LedgerError>;

    /// Ends the replay lease `lease_until_ms` at once (its message could not be sent).
    async fn restore(
        &self,
        workspace: &WorkspaceId,
        key: &DedupKey,
        lease_until_ms: i64,
    ) -> Result<(), LedgerError>;

    /// `dead_lettered` → `discarded` (final), leaving the index.
    async fn discard(
        &self,
        workspace: &WorkspaceId,
        key: &DedupKey,
        now_ms: i64,
    ) -> Result<Transition, LedgerError>;
}

/// Why a dead letter was not replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("no dead letter with this id")]
    NotFound,
    #[error("the dead letter is {0} now, not dead_lettered")]
    NotDeadLettered(&'static str),
    #[error("the dead letter is being replayed already")]
    Replaying,
    #[error("the dead letter kept no dispatch message ({0}); replay its event instead")]
    NoMessage(&'static str),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Replays dead letters: reopen each in the ledger, then send their original dispatch
/// messages (same target, same event, so the same dedup key and idempotency key).
pub struct Replayer<'a> {
    pub store: &'a dyn DeadLetterStore,
    pub dispatch_queue: &'a dyn Queue,
}

impl Replayer<'_> {
    /// Replays one dead letter.
    pub async fn one(
        &self,
        workspace: &WorkspaceId,
        key: &DedupKey,
        now_ms: i64,
    ) -> Result<(), ReplayError> {
        let lease = now_ms.saturating_add(REPLAY_LEASE_MS);
        let entry = match self.store.reopen(workspace, key, now_ms, lease).await? {
            Transition::Done(entry) => entry,
            Transition::NotDeadLettered(status) => {
                return Err(ReplayError::NotDeadLettered(status.as_str()))
            }
            Transition::Replaying => return Err(ReplayError::Replaying),
            Transition::NotFound => return Err(ReplayError::NotFound),
        };
        let body = match replay_body(&entry) {
            Ok(body) => body,
            Err(e) => {
                self.store.restore(workspace, key, lease).await?;
                return Err(e);
            }
        };
        self.send(workspace, &[(entry.key, body)], lease).await
    }

    /// Replays up to `max` dead letters matching `query`, a page at a time: list a page,
    /// reopen it, send it (batches of 10 within 256 KiB), then the next. Memory holds one
    /// page; a replay stopped anywhere leaves every dead letter either sent or, once its
    /// lease lapses, replayable again. Returns (replayed, matched).
    pub async fn many(
        &self,
        workspace: &WorkspaceId,
        query: &DeadLetterQuery,
        max: usize,
        now_ms: i64,
    ) -> Result<(usize, usize), ReplayError> {
        let lease = now_ms.saturating_add(REPLAY_LEASE_MS);
        let (mut replayed, mut matched) = (0, 0);
        let mut cursor = query.cursor.clone();
        while matched < max {
            let page_query = DeadLetterQuery {
                limit: REPLAY_PAGE.min(max - matched),
                cursor: cursor.take(),
                ..query.clone()
            };
            let page = self.store.list(workspace, &page_query).await?;
            matched += page.items.len();
            replayed += self.page(workspace, page.items, now_ms, lease).await?;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok((replayed, matched))
    }

    /// Reopens and sends one page; whatever was reopened is sent (or its lease ended)
    /// even when another reopen failed, so a failure never strands a dead letter.
    async fn page(
        &self,
        workspace: &WorkspaceId,
        entries: Vec<LedgerEntry>,
        now_ms: i64,
        lease: i64,
    ) -> Result<usize, ReplayError> {
        use futures::stream::{self, StreamExt};
        let keys: Vec<DedupKey> = entries
            .into_iter()
            .filter(|e| e.message.is_some())
            .map(|e| e.key)
            .collect();
        // The reopens are made before they are streamed: a closure in the stream's type
        // would keep the API's future from being `Send` for every lifetime (axum needs it).
        let reopening: Vec<_> = keys
            .iter()
            .map(|key| self.store.reopen(workspace, key, now_ms, lease))
            .collect();
        let reopens: Vec<Result<Transition, LedgerError>> = stream::iter(reopening)
            .buffered(REPLAY_CONCURRENCY)
            .collect()
            .await;
        let mut outgoing = Vec::with_capacity(reopens.len());
        let mut failed = None;
        for reopen in reopens {
            match reopen {
                // The item as it was when reopened, with its message.
                Ok(Transition::Done(entry)) => match replay_body(&entry) {
                    Ok(body) => outgoing.push((entry.key, body)),
                    Err(_) => self.store.restore(workspace, &entry.key, lease).await?,
                },
                // Replayed, being replayed or discarded meanwhile.
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        let sent = outgoing.len();
        self.send(workspace, &outgoing, lease).await?;
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(sent),
        }
    }

    async fn send(
        &self,
        workspace: &WorkspaceId,
        outgoing: &[(DedupKey, String)],
        lease: i64,
    ) -> Result<(), ReplayError> {
        if outgoing.is_empty() {
            return Ok(());
        }
        let bodies: Vec<String> = outgoing.iter().map(|(_, body)| body.clone()).collect();
        if let Err(e) = self.dispatch_queue.send_batch(&bodies).await {
            // Messages that did go out are harmless when their lease ends: the
            // dispatcher claims a dead letter too, and the ledger keeps it to one run.
            for (key, _) in outgoing {
                self.store.restore(workspace, key, lease).await?;
            }
            return Err(e.into());
        }
        Ok(())
    }
}

/// The SQS body that replays a dead letter: its stored dispatch message, re-encoded.
fn replay_body(entry: &LedgerEntry) -> Result<String, ReplayError> {
    let reason = entry.reason.map_or("unknown", DeadLetterReason::as_str);
    let message: DispatchMessage = entry
        .message
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .ok_or(ReplayError::NoMessage(reason))?;
    limits::message_body("dispatch message", &message, MAX_QUEUE_MESSAGE_BYTES)
        .map_err(|_| ReplayError::NoMessage(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::Ledger;
    use crate::memory::{MemoryLedger, MemoryQueue};
    use serde_json::json;

    fn message(subscription: &str) -> DispatchMessage {
        serde_json::from_value(json!({
            "workspaceId": "ws1",
            "event": {"eventId": "evt-1", "kind": "step.succeeded",
                      "source": {"type": "internal", "occurredAt": "t"}, "data": {}},
            "target": {"type": "start", "subscriptionId": subscription, "workflowId": "wf1",
                       "workflowVersionId": "wv1", "inputs": {"a": 1}}
        }))
        .unwrap()
    }

    async fn dead_lettered(ledger: &MemoryLedger, subscription: &str) -> DedupKey {
        let message = message(subscription);
        let entry = message.dead_letter_entry(DeadLetterReason::Rejected, "refused", 1_000);
        ledger.record_unclaimed(&entry).await.unwrap();
        entry.key
    }

    fn ws() -> WorkspaceId {
        WorkspaceId::new("ws1").unwrap()
    }

    #[tokio::test]
    async fn a_replay_sends_the_original_message_once_and_not_twice() {
        let (ledger, queue) = (MemoryLedger::default(), MemoryQueue::default());
        let key = dead_lettered(&ledger, "sub1").await;
        let replayer = Replayer {
            store: &ledger,
            dispatch_queue: &queue,
        };
        replayer.one(&ws(), &key, 2_000).await.unwrap();
        let sent: DispatchMessage = serde_json::from_str(&queue.sent()[0]).unwrap();
        assert_eq!(sent, message("sub1"));
        assert_eq!(
            sent.dedup_key(),
            key,
            "same target and event: same idempotency key"
        );
        // Still a dead letter until the dispatcher claims it, held for this replay.
        let entry = ledger.get(&ws(), &key).await.unwrap().unwrap();
        assert_eq!(
            (entry.status, entry.replaying_until_ms),
            (LedgerStatus::DeadLettered, 2_000 + REPLAY_LEASE_MS)
        );
        assert_eq!(
            replayer.one(&ws(), &key, 3_000).await,
            Err(ReplayError::Replaying)
        );
        assert_eq!(queue.sent().len(), 1);
        // The dispatcher claims it for the replayed message: a fresh retry window.
        let claim = ledger
            .claim(&crate::dedup::ClaimRequest {
                workspace_id: ws(),
                key: key.clone(),
                event_id: sent.event.event_id.clone(),
                target_id: "sub1".into(),
                match_kind: crate::dedup::MatchKind::Start,
                token: "t".into(),
                now_ms: 4_000,
                lease_until_ms: 34_000,
                expires_at: 1_000_000,
            })
            .await
            .unwrap();
        assert!(
            matches!(claim, crate::dedup::ClaimOutcome::Claimed(c) if c.first_attempt_ms == 4_000)
        );
        assert_eq!(
            replayer.one(&ws(), &key, 5_000).await,
            Err(ReplayError::NotDeadLettered("claimed"))
        );
    }

    #[tokio::test]
    async fn a_replay_stopped_before_sending_comes_back_by_itself_when_its_lease_ends() {
        let (ledger, queue) = (MemoryLedger::default(), MemoryQueue::default());
        let key = dead_lettered(&ledger, "sub1").await;
        // A replay reopened it and then the function was stopped (timeout, crash).
        let reopened = ledger
            .reopen(&ws(), &key, 2_000, 2_000 + REPLAY_LEASE_MS)
            .await
            .unwrap();
        assert!(matches!(reopened, Transition::Done(_)));
        let replayer = Replayer {
            store: &ledger,
            dispatch_queue: &queue,
        };
        let query = DeadLetterQuery {
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            ledger.list(&ws(), &query).await.unwrap().items.len(),
            1,
            "never out of sight"
        );
        assert_eq!(
            replayer.one(&ws(), &key, 3_000).await,
            Err(ReplayError::Replaying)
        );
        let later = 2_000 + REPLAY_LEASE_MS;
        replayer.one(&ws(), &key, later).await.unwrap();
        assert_eq!(queue.sent().len(), 1);
    }

    #[tokio::test]
    async fn a_bulk_replay_goes_page_by_page_and_up_to_its_maximum() {
        let (ledger, queue) = (MemoryLedger::default(), MemoryQueue::default());
        for i in 0..(2 * REPLAY_PAGE + 7) {
            dead_lettered(&ledger, &format!("sub{i}")).await;
        }
        let replayer = Replayer {
            store: &ledger,
            dispatch_queue: &queue,
        };
        let query = DeadLetterQuery::default();
        let max = 2 * REPLAY_PAGE + 3;
        assert_eq!(
            replayer.many(&ws(), &query, max, 2_000).await,
            Ok((max, max))
        );
        assert_eq!(queue.sent().len(), max);
        // The rest: the ones being replayed are skipped, not sent twice.
        assert_eq!(
            replayer.many(&ws(), &query, 1_000, 3_000).await,
            Ok((4, 2 * REPLAY_PAGE + 7))
        );
        assert_eq!(queue.sent().len(), 2 * REPLAY_PAGE + 7);
    }

    #[tokio::test]
    async fn a_replay_that_cannot_be_sent_leaves_the_dead_letters_as_they_were() {
        let (ledger, queue) = (MemoryLedger::default(), MemoryQueue::default());
        let keys = [
            dead_lettered(&ledger, "sub1").await,
            dead_lettered(&ledger, "sub2").await,
        ];
        let before = ledger.get(&ws(), &keys[0]).await.unwrap();
        queue.fail_sends(true);
        let replayer = Replayer {
            store: &ledger,
            dispatch_queue: &queue,
        };
        assert!(matches!(
            replayer.one(&ws(), &keys[0], 2_000).await,
            Err(ReplayError::Queue(_))
        ));
        assert_eq!(ledger.get(&ws(), &keys[0]).await.unwrap(), before);
        let query = DeadLetterQuery::default();
        assert!(replayer.many(&ws(), &query, 10, 2_000).await.is_err());
        let still = ledger
            .list(
                &ws(),
                &DeadLetterQuery {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(still.items.len(), 2);
        assert!(
            still.items.iter().all(|e| e.replaying_until_ms == 0),
            "leases ended"
        );
        queue.fail_sends(false);
        assert_eq!(replayer.many(&ws(), &query, 10, 3_000).await, Ok((2, 2)));
    }

    /// A ledger whose reopen fails for one dead letter (a throttled write).
    struct FailingReopen<'a> {
        ledger: &'a MemoryLedger,
        fails: DedupKey,
    }

    #[async_trait]
    impl DeadLetterStore for FailingReopen<'_> {
        async fn list(
            &self,
            workspace: &WorkspaceId,
            query: &DeadLetterQuery,
        ) -> Result<DeadLetterPage, LedgerError> {
            self.ledger.list(workspace, query).await
        }
        async fn reopen(
            &self,
            workspace: &WorkspaceId,
            key: &DedupKey,
            now_ms: i64,
            lease: i64,
        ) -> Result<Transition, LedgerError> {
            if *key == self.fails {
                return Err(LedgerError::Unavailable("throttled".into()));
            }
            self.ledger.reopen(workspace, key, now_ms, lease).await
        }
        async fn restore(
            &self,
            workspace: &WorkspaceId,
            key: &DedupKey,
            lease: i64,
        ) -> Result<(), LedgerError> {
            self.ledger.restore(workspace, key, lease).await
        }
        async fn discard(
            &self,
            workspace: &WorkspaceId,
            key: &DedupKey,
            now_ms: i64,
        ) -> Result<Transition, LedgerError> {
            self.ledger.discard(workspace, key, now_ms).await
        }
    }

    #[tokio::test]
    async fn a_failed_reopen_in_a_bulk_replay_strands_none_of_the_others() {
        let (ledger, queue) = (MemoryLedger::default(), MemoryQueue::default());
        let keys = [
            dead_lettered(&ledger, "sub1").await,
            dead_lettered(&ledger, "sub2").await,
            dead_lettered(&ledger, "sub3").await,
        ];
        let store = FailingReopen {
            ledger: &ledger,
            fails: keys[1].clone(),
        };
        let replayer = Replayer {
            store: &store,
            dispatch_queue: &queue,
        };
        let query = DeadLetterQuery {
            limit: 10,
            ..Default::default()
        };
        assert!(matches!(
            replayer.many(&ws(), &query, 10, 2_000).await,
            Err(ReplayError::Ledger(_))
        ));
        assert_eq!(queue.sent().len(), 2, "the two reopened ones were sent");
        let left = ledger.get(&ws(), &keys[1]).await.unwrap().unwrap();
        assert_eq!(
            (left.status, left.replaying_until_ms),
            (LedgerStatus::DeadLettered, 0),
            "the one that failed is still a dead letter, replayable now"
        );
    }

    #[tokio::test]
    async fn a_too_large_dead_letter_keeps_no_message_and_is_not_replayed() {
        let (ledger, queue) = (MemoryLedger::default(), MemoryQueue::default());
        let entry = message("sub1").dead_letter_entry(DeadLetterReason::TooLarge, "big", 1_000);
        assert_eq!(entry.message, None);
        ledger.record_unclaimed(&entry).await.unwrap();
        let replayer = Replayer {
            store: &ledger,
            dispatch_queue: &queue,
        };
        assert_eq!(
            replayer.one(&ws(), &entry.key, 2_000).await,
            Err(ReplayError::NoMessage("too_large"))
        );
        let entry = ledger.get(&ws(), &entry.key).await.unwrap().unwrap();
        assert_eq!(entry.status, LedgerStatus::DeadLettered, "restored");
        assert!(queue.sent().is_empty());
    }

    #[test]
    fn cursors_are_the_sort_keys_handed_out() {
        let key = DedupKey::new("sub", "evt");
        let cursor = format!("{:013}#{}", 1_700_000_000_000i64, key.digest());
        assert_eq!(parse_cursor(&cursor), Some(key));
        assert_eq!(parse_cursor("12#abc"), None);
        assert_eq!(parse_cursor("not a cursor"), None);
    }
}
