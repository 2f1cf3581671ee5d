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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterPage {
    pub items: Vec<LedgerEntry>,
    pub next_cursor: Option<String>,
}

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
    NotFound,
}

#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    async fn list(
        &self,
        workspace: &WorkspaceId,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterPage, LedgerError>;

    /// `dead_lettered` → `released` with a fresh retry window, leaving the index.
    async fn reopen(
        &self,
        workspace: &WorkspaceId,
        key: &DedupKey,
        now_ms: i64,
    ) -> Result<Transition, LedgerError>;

    /// Undoes a `reopen` whose message could not be sent (unless a worker took it since).
    async fn restore(&self, entry: &LedgerEntry) -> Result<(), LedgerError>;

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
        let entry = match self.store.reopen(workspace, key, now_ms).await? {
            Transition::Done(entry) => entry,
            Transition::NotDeadLettered(status) => {
                return Err(ReplayError::NotDeadLettered(status.as_str()))
            }
            Transition::NotFound => return Err(ReplayError::NotFound),
        };
        let body = match replay_body(&entry) {
            Ok(body) => body,
            Err(e) => {
                self.store.restore(&entry).await?;
                return Err(e);
            }
        };
        self.send(&[*entry], &[body]).await
    }

    /// Replays every listed dead letter that is still one; returns how many were sent.
    /// Reopens run side by side; whatever was reopened is sent (or restored) even when
    /// another reopen failed, so a failure never strands a reopened dead letter.
    pub async fn many(
        &self,
        workspace: &WorkspaceId,
        entries: &[LedgerEntry],
        now_ms: i64,
    ) -> Result<usize, ReplayError> {
        use futures::stream::{self, StreamExt};
        let reopens: Vec<Result<Transition, LedgerError>> =
            stream::iter(entries.iter().filter(|e| e.message.is_some()))
                .map(|candidate| self.store.reopen(workspace, &candidate.key, now_ms))
                .buffered(REPLAY_CONCURRENCY)
                .collect()
                .await;
        let mut reopened = Vec::with_capacity(reopens.len());
        let mut bodies = Vec::with_capacity(reopens.len());
        let mut failed = None;
        for reopen in reopens {
            let entry = match reopen {
                Ok(Transition::Done(entry)) => entry,
                // Replayed or discarded meanwhile.
                Ok(_) => continue,
                Err(e) => {
                    failed.get_or_insert(e);
                    continue;
                }
            };
            match replay_body(&entry) {
                Ok(body) => {
                    bodies.push(body);
                    reopened.push(*entry);
                }
                Err(_) => self.store.restore(&entry).await?,
            }
        }
        self.send(&reopened, &bodies).await?;
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(bodies.len()),
        }
    }

    async fn send(&self, entries: &[LedgerEntry], bodies: &[String]) -> Result<(), ReplayError> {
        if bodies.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.dispatch_queue.send_batch(bodies).await {
            // Messages that did go out are harmless when restored: the dispatcher can
            // claim a dead letter too, and the ledger keeps it to one run.
            for entry in entries {
                self.store.restore(entry).await?;
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
        let entry = ledger.get(&ws(), &key).await.unwrap().unwrap();
        assert_eq!(
            (entry.status, entry.first_attempt_ms),
            (LedgerStatus::Released, 0)
        );
        assert_eq!(
            replayer.one(&ws(), &key, 3_000).await,
            Err(ReplayError::NotDeadLettered("released"))
        );
        assert_eq!(queue.sent().len(), 1);
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
        let listed = ledger
            .list(
                &ws(),
                &DeadLetterQuery {
                    limit: 10,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(replayer.many(&ws(), &listed.items, 2_000).await.is_err());
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
        queue.fail_sends(false);
        assert_eq!(replayer.many(&ws(), &still.items, 3_000).await, Ok(2));
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
        ) -> Result<Transition, LedgerError> {
            if *key == self.fails {
                return Err(LedgerError::Unavailable("throttled".into()));
            }
            self.ledger.reopen(workspace, key, now_ms).await
        }
        async fn restore(&self, entry: &LedgerEntry) -> Result<(), LedgerError> {
            self.ledger.restore(entry).await
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
        let listed = ledger.list(&ws(), &query).await.unwrap();
        assert!(matches!(
            replayer.many(&ws(), &listed.items, 2_000).await,
            Err(ReplayError::Ledger(_))
        ));
        assert_eq!(queue.sent().len(), 2, "the two reopened ones were sent");
        let left = ledger.list(&ws(), &query).await.unwrap();
        assert_eq!(
            left.items.iter().map(|e| &e.key).collect::<Vec<_>>(),
            [&keys[1]],
            "the one that failed is still a dead letter"
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
