//! The dedup ledger protocol. One item per `hash(subscription-or-resume id, eventId)`:
//! *claim* it (with a lease) before the RPC, *commit* it only after the Workflow Service
//! confirmed the dispatch, *release* it when the dispatch failed so a redelivery can try
//! again. A committed item means duplicate; a live claim means another worker is on it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::ids::{EventId, WorkspaceId};

/// `trigger.dedup.v1:` + hex(sha256("<len a>:" a "<len b>:" b)), lengths in UTF-8 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DedupKey(String);

impl DedupKey {
    pub fn new(target_id: &str, event_id: &str) -> Self {
        let mut hasher = Sha256::new();
        for part in [target_id, event_id] {
            hasher.update(part.len().to_string().as_bytes());
            hasher.update(b":");
            hasher.update(part.as_bytes());
        }
        Self(format!("{KEY_PREFIX}{}", hex::encode(hasher.finalize())))
    }

    /// A key read back from storage.
    pub fn from_stored(key: String) -> Self {
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key without its version prefix: the id a dead letter is addressed by.
    pub fn digest(&self) -> &str {
        self.0.strip_prefix(KEY_PREFIX).unwrap_or(&self.0)
    }

    /// The key a dead-letter id names: 64 lowercase hex digits, else `None`.
    pub fn from_digest(digest: &str) -> Option<Self> {
        let valid = digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| Self(format!("{KEY_PREFIX}{digest}")))
    }
}

const KEY_PREFIX: &str = "trigger.dedup.v1:";

impl std::fmt::Display for DedupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a ledger item belongs to a start subscription or a resume wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    Start,
    Resume,
}

/// Where an item is in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerStatus {
    /// A worker holds the key until its lease passes.
    Claimed,
    /// Dispatch confirmed: later deliveries are duplicates until `expiresAt`.
    Committed,
    /// A failed attempt gave the key back; the next delivery may claim it.
    Released,
    /// Dispatch failed for good; replay may claim it again.
    DeadLettered,
    /// The loop guard refused the event; nothing was sent.
    LoopRejected,
    /// A resume event that found no live wait: parked until `leaseUntilMs` for the next
    /// registration of its triple (which may still deliver it).
    Parked,
    /// A resume event that lost the wait to another event (`supersededBy`); parked too.
    Superseded,
    /// A dead letter an operator discarded: final, never dispatched (until `expiresAt`).
    Discarded,
    /// Admitted by the subscription's flow control; its dispatch message is on its way,
    /// not before `leaseUntilMs` (a throttle's slot; at once otherwise).
    Queued,
    /// Refused by the subscription's rate limit: final, never dispatched.
    RateLimited,
    /// Skipped: another event (`supersededBy`) holds the subscription's idempotency key.
    IdempotencySkipped,
    /// In a debounce window due at `leaseUntilMs`: runs then, unless a later event of
    /// the key comes first.
    Debouncing,
    /// A later event of the key (`supersededBy`) took the debounce window: never run.
    Debounced,
    /// Skipped: a run of the key (started by `supersededBy`) was running (singleton,
    /// or a schedule's overlap rule).
    SingletonSkipped,
    /// In a batch whose first event is `supersededBy`: runs with that batch's run.
    Batched,
}

impl LedgerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerStatus::Claimed => "claimed",
            LedgerStatus::Committed => "committed",
            LedgerStatus::Released => "released",
            LedgerStatus::DeadLettered => "dead_lettered",
            LedgerStatus::LoopRejected => "loop_rejected",
            LedgerStatus::Parked => "parked",
            LedgerStatus::Superseded => "superseded",
            LedgerStatus::Discarded => "discarded",
            LedgerStatus::Queued => "queued",
            LedgerStatus::RateLimited => "rate_limited",
            LedgerStatus::IdempotencySkipped => "idempotency_skipped",
            LedgerStatus::Debouncing => "debouncing",
            LedgerStatus::Debounced => "debounced",
            LedgerStatus::SingletonSkipped => "singleton_skipped",
            LedgerStatus::Batched => "batched",
        }
    }

    /// Statuses any claim may take over (besides expired items and lapsed leases):
    /// the one definition behind [`LedgerEntry::is_claimable`] and the DynamoDB condition.
    pub const OPEN: [LedgerStatus; 7] = [
        LedgerStatus::Released,
        LedgerStatus::DeadLettered,
        LedgerStatus::LoopRejected,
        LedgerStatus::Parked,
        LedgerStatus::Superseded,
        LedgerStatus::Queued,
        LedgerStatus::Debouncing,
    ];

    /// Final fates: flow control refused the match, nothing is ever dispatched for it.
    pub fn is_skip(self) -> bool {
        matches!(
            self,
            LedgerStatus::RateLimited | LedgerStatus::IdempotencySkipped | LedgerStatus::Debounced
        )
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            LedgerStatus::Claimed,
            LedgerStatus::Committed,
            LedgerStatus::Released,
            LedgerStatus::DeadLettered,
            LedgerStatus::LoopRejected,
            LedgerStatus::Parked,
            LedgerStatus::Superseded,
            LedgerStatus::Discarded,
            LedgerStatus::Queued,
            LedgerStatus::RateLimited,
            LedgerStatus::IdempotencySkipped,
            LedgerStatus::Debouncing,
            LedgerStatus::Debounced,
            LedgerStatus::SingletonSkipped,
            LedgerStatus::Batched,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// How long dead-lettered items are kept for inspection and replay (epoch-second TTL).
pub const DEAD_LETTER_RETENTION_SECS: i64 = 30 * 86_400;

/// Why a match was dead-lettered: a stable code a tenant may see (the detail text,
/// which may name internals, stays in `lastError` and the logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Transient failures went on past the retry window (or the queue's receive budget).
    RetriesExhausted,
    /// The Workflow Service refused the request for good (a 4xx other than 408/429).
    Rejected,
    /// The start subscription names no workflow version.
    NoTargetVersion,
    /// `inputMapping` could not be resolved against the event.
    MappingFailed,
    /// The message the next stage needs would not fit an SQS message.
    TooLarge,
    /// A message in a dead-letter queue whose body could not be read.
    Unparseable,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 6] = [
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::Rejected,
        DeadLetterReason::NoTargetVersion,
        DeadLetterReason::MappingFailed,
        DeadLetterReason::TooLarge,
        DeadLetterReason::Unparseable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::RetriesExhausted => "retries_exhausted",
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::NoTargetVersion => "no_target_version",
            DeadLetterReason::MappingFailed => "mapping_failed",
            DeadLetterReason::TooLarge => "too_large",
            DeadLetterReason::Unparseable => "unparseable",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

/// What one ledger item records: enough to answer "what happened to event X".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub workspace_id: WorkspaceId,
    pub key: DedupKey,
    pub event_id: EventId,
    /// The subscription id (start) or resume id (resume).
    pub target_id: String,
    pub match_kind: MatchKind,
    pub status: LedgerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_token: Option<String>,
    /// Epoch milliseconds until which a claim is held.
    #[serde(default)]
    pub lease_until_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Set when the item is dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DeadLetterReason>,
    /// The event that took the resume wait instead (status `superseded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<EventId>,
    /// A dead letter being replayed: its message is on its way until then (epoch ms);
    /// past it, a replay that never sent it is forgotten and it can be replayed again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replaying_until_ms: i64,
    #[serde(default)]
    pub attempts: u32,
    /// Epoch ms of the first claim (0: never claimed); the retry window starts here.
    #[serde(default)]
    pub first_attempt_ms: i64,
    /// Epoch seconds after which the item is ignored (and deleted by TTL).
    pub expires_at: i64,
    pub updated_at_ms: i64,
    /// A dead letter's dispatch message (JSON), kept for inspection and replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl LedgerEntry {
    /// Whether a new claim may take this item over at `now_ms`.
    pub fn is_claimable(&self, now_ms: i64) -> bool {
        if self.expires_at * 1000 <= now_ms {
            return true;
        }
        match self.status {
            LedgerStatus::Claimed => self.lease_until_ms <= now_ms,
            status => LedgerStatus::OPEN.contains(&status),
        }
    }
}

/// A request to claim a key before dispatching.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub workspace_id: WorkspaceId,
    pub key: DedupKey,
    pub event_id: EventId,
    pub target_id: String,
    pub match_kind: MatchKind,
    pub token: String,
    pub now_ms: i64,
    pub lease_until_ms: i64,
    /// Retention of the item (epoch seconds), refreshed by commit.
    pub expires_at: i64,
}

/// A held claim: commit or release it with the same token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub workspace_id: WorkspaceId,
    pub key: DedupKey,
    pub token: String,
    /// Claims of this key so far, this one included (the backoff exponent).
    pub attempts: u32,
    /// When the key was first claimed (epoch ms): the start of the retry window.
    pub first_attempt_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(Claim),
    /// Already dispatched: skip the RPC.
    Duplicate {
        run_id: Option<String>,
    },
    /// Another worker holds a live lease.
    InFlight {
        lease_until_ms: i64,
    },
}

/// How a claim is given back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// A retryable failure: the next delivery may claim again.
    Retry { error: String },
    /// Permanent failure or retries exhausted; kept until `expires_at` (epoch seconds)
    /// with the dispatch message (JSON) that replay sends again.
    DeadLetter {
        reason: DeadLetterReason,
        detail: String,
        expires_at: i64,
        message: Option<String>,
    },
    /// A resume event without a live wait (`winner: None`) or that lost it to another
    /// event; parked until `until_ms`.
    Parked {
        winner: Option<EventId>,
        until_ms: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LedgerError {
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// The claim was taken over (its lease passed) before this worker finished.
    #[error("claim on {0} was lost")]
    ClaimLost(DedupKey),
}

#[async_trait]
pub trait Ledger: Send + Sync {
    async fn claim(&self, request: &ClaimRequest) -> Result<ClaimOutcome, LedgerError>;

    /// Marks a confirmed dispatch; conditioned on the claim token.
    async fn commit(
        &self,
        claim: &Claim,
        run_id: Option<&str>,
        expires_at: i64,
        now_ms: i64,
    ) -> Result<(), LedgerError>;

    /// Gives the key back after a failed dispatch; conditioned on the claim token.
    async fn release(
        &self,
        claim: &Claim,
        release: &Release,
        now_ms: i64,
    ) -> Result<(), LedgerError>;

    /// Records an outcome reached without a claim (loop rejected, permanent failure
    /// before any RPC). Never overwrites a committed item or a live claim.
    async fn record_unclaimed(&self, entry: &LedgerEntry) -> Result<(), LedgerError>;

    async fn get(
        &self,
        workspace: &WorkspaceId,
        key: &DedupKey,
    ) -> Result<Option<LedgerEntry>, LedgerError>;

    /// Every item of one event in the workspace: what happened to each of its matches.
    async fn for_event(
        &self,
        workspace: &WorkspaceId,
        event_id: &EventId,
    ) -> Result<Vec<LedgerEntry>, LedgerError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_reproduces_the_upstream_formula() {
        let expected = format!(
            "trigger.dedup.v1:{}",
            hex::encode(Sha256::digest(b"1:a3:b:c"))
        );
        assert_eq!(DedupKey::new("a", "b:c").as_str(), expected);
    }

    #[test]
    fn key_is_deterministic_and_varies_with_either_part() {
        let k = DedupKey::new("sub", "evt");
        assert_eq!(k, DedupKey::new("sub", "evt"));
        assert_ne!(k, DedupKey::new("sub2", "evt"));
        assert_ne!(k, DedupKey::new("sub", "evt2"));
        assert!(k.as_str().starts_with("trigger.dedup.v1:"));
        assert_eq!(k.as_str().len(), "trigger.dedup.v1:".len() + 64);
    }

    #[test]
    fn a_digest_names_its_key_and_nothing_else_parses() {
        let key = DedupKey::new("sub", "evt");
        assert_eq!(DedupKey::from_digest(key.digest()), Some(key.clone()));
        assert_eq!(DedupKey::from_digest(&key.digest().to_uppercase()), None);
        assert_eq!(DedupKey::from_digest("abc"), None);
        assert_eq!(DedupKey::from_digest(key.as_str()), None);
    }

    #[test]
    fn length_prefix_prevents_aliasing() {
        assert_ne!(DedupKey::new("a", "b:c"), DedupKey::new("a:b", "c"));
        assert_ne!(DedupKey::new("ab", "c"), DedupKey::new("a", "bc"));
    }

    #[test]
    fn lengths_are_utf8_bytes() {
        let expected = format!(
            "trigger.dedup.v1:{}",
            hex::encode(Sha256::digest("2:é1:x".as_bytes()))
        );
        assert_eq!(DedupKey::new("é", "x").as_str(), expected);
    }

    fn entry(status: LedgerStatus, lease_until_ms: i64, expires_at: i64) -> LedgerEntry {
        LedgerEntry {
            workspace_id: WorkspaceId::new("ws").unwrap(),
            key: DedupKey::new("s", "e"),
            event_id: EventId::new("e").unwrap(),
            target_id: "s".into(),
            match_kind: MatchKind::Start,
            status,
            claim_token: None,
            lease_until_ms,
            run_id: None,
            last_error: None,
            reason: None,
            superseded_by: None,
            replaying_until_ms: 0,
            attempts: 1,
            first_attempt_ms: 0,
            expires_at,
            updated_at_ms: 0,
            message: None,
        }
    }

    #[test]
    fn dead_letter_reasons_round_trip_their_codes() {
        for reason in DeadLetterReason::ALL {
            assert_eq!(DeadLetterReason::parse(reason.as_str()), Some(reason));
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
        assert_eq!(DeadLetterReason::parse("nope"), None);
    }

    #[test]
    fn claimability_follows_status_lease_and_expiry() {
        let now = 10_000;
        assert!(!entry(LedgerStatus::Committed, 0, 100).is_claimable(now));
        assert!(
            !entry(LedgerStatus::Discarded, 0, 100).is_claimable(now),
            "a discard is final"
        );
        for skipped in [
            LedgerStatus::RateLimited,
            LedgerStatus::IdempotencySkipped,
            LedgerStatus::Debounced,
        ] {
            assert!(
                !entry(skipped, 0, 100).is_claimable(now),
                "{skipped:?} is final"
            );
            assert_eq!(LedgerStatus::parse(skipped.as_str()), Some(skipped));
        }
        assert!(
            entry(LedgerStatus::Committed, 0, 10).is_claimable(now),
            "expired"
        );
        assert!(!entry(LedgerStatus::Claimed, 10_001, 100).is_claimable(now));
        assert!(
            entry(LedgerStatus::Claimed, 10_000, 100).is_claimable(now),
            "lease passed"
        );
        for status in LedgerStatus::OPEN {
            assert!(entry(status, 0, 100).is_claimable(now));
            assert_eq!(LedgerStatus::parse(status.as_str()), Some(status));
        }
    }
}
