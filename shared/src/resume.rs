//! Resume waits: a waiting `(runId, stepId, eventKey)` that exactly one matching event
//! resumes per registration. Each registration is a *generation* (a nonce): the
//! dispatcher *takes* the wait for one event (a conditional write carrying its claim
//! token) before calling the Workflow Service, marks it *consumed* by that event once
//! delivery is confirmed, and gives it back if delivery fails for good. Every write names
//! the generation, so nothing done for an old registration touches a newer one. Events
//! that find no live wait (they came early, or lost the race) are parked for a while and
//! handed to the next registration of their triple.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::NormalizedEvent;
use crate::ids::{EventId, ResumeId, WorkspaceId};
use crate::store::StoreError;

/// The triple a wait is registered under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeKey {
    pub run_id: String,
    pub step_id: String,
    pub event_key: String,
}

impl ResumeKey {
    /// `res_` + hex(sha256(runId \0 stepId \0 eventKey)).
    pub fn resume_id(&self) -> ResumeId {
        let mut hasher = Sha256::new();
        hasher.update(self.run_id.as_bytes());
        hasher.update([0]);
        hasher.update(self.step_id.as_bytes());
        hasher.update([0]);
        hasher.update(self.event_key.as_bytes());
        let id = format!("res_{}", hex::encode(hasher.finalize()));
        ResumeId::new(id).unwrap_or_else(|_| unreachable!("prefixed id is non-empty"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeWait {
    pub resume_id: ResumeId,
    pub run_id: String,
    pub step_id: String,
    pub event_key: String,
    #[serde(default)]
    pub selector: Option<String>,
    /// The tenant that registered the wait; only its events resume it (a wait stored
    /// without one, by an older release, resumes nothing).
    #[serde(default)]
    pub workspace_id: Option<WorkspaceId>,
    /// Epoch seconds; a wait with `expiresAt <= now` has lapsed.
    pub expires_at: i64,
    /// The registration's nonce.
    #[serde(default)]
    pub generation: String,
    /// Held for one event's delivery (not part of the stored document: kept in
    /// attributes the conditional writes test).
    #[serde(skip)]
    pub taken: Option<Take>,
    /// The event that resumed this generation.
    #[serde(skip)]
    pub consumed_by: Option<EventId>,
}

/// A wait held for one event's delivery, until `until_ms` unless confirmed or released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    pub event_id: EventId,
    pub token: String,
    pub until_ms: i64,
}

impl ResumeWait {
    /// Registered, not lapsed, not consumed.
    pub fn is_live(&self, now_secs: i64) -> bool {
        self.expires_at > now_secs && self.consumed_by.is_none()
    }

    /// A fresh generation nonce.
    pub fn new_generation() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }
}

/// What a take found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOutcome {
    /// Held for this event (again, if it already held it).
    Taken,
    /// Another event holds or consumed this generation.
    Superseded { winner: EventId },
    /// No such generation any more (cancelled, lapsed, replaced).
    Gone,
}

/// Who may finish a hold: the delivery that took it (its claim token), or whoever
/// finishes for the event that holds it (a redelivery after a crash, the dead-letter
/// recorder), which never knew the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder<'a> {
    Token(&'a str),
    Event(&'a EventId),
}

/// One `take` request.
#[derive(Debug, Clone)]
pub struct TakeRequest<'a> {
    pub resume_id: &'a ResumeId,
    pub generation: &'a str,
    pub event_id: &'a EventId,
    pub token: &'a str,
    pub until_ms: i64,
    pub now_ms: i64,
}

/// Seconds of an ISO-8601 duration in the subset `P[nW][nD][T[nH][nM][n[.f]S]]`
/// (upper-case designators, surrounding whitespace ignored, fractional seconds
/// truncated). `None` for anything else, including years and months.
pub fn parse_ttl(text: &str) -> Option<u64> {
    let rest = text.trim().strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return None,
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    let (days, date_parts) = components(date, &[('W', 604_800), ('D', 86_400)])?;
    let (clock, time_parts) = match time {
        Some(time) => {
            components(time, &[('H', 3_600), ('M', 60), ('S', 1)]).filter(|(_, n)| *n > 0)?
        }
        None => (0, 0),
    };
    (date_parts + time_parts > 0).then_some(days.checked_add(clock)?)
}

/// Sums `<number><designator>` components that appear in `units` order, each at most
/// once; only seconds may carry a fraction. Returns the total and the component count.
fn components(mut part: &str, mut units: &[(char, u64)]) -> Option<(u64, usize)> {
    let (mut total, mut count) = (0u64, 0usize);
    while !part.is_empty() {
        let end = part.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (number, tail) = part.split_at(end);
        let designator = tail.chars().next()?;
        let position = units.iter().position(|(d, _)| *d == designator)?;
        let whole = match number.split_once('.') {
            Some((w, f))
                if designator == 'S' && !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) =>
            {
                w
            }
            Some(_) => return None,
            None => number,
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        total = total.checked_add(whole.parse::<u64>().ok()?.checked_mul(units[position].1)?)?;
        count += 1;
        units = &units[position + 1..];
        part = &tail[designator.len_utf8()..];
    }
    Some((total, count))
}

#[async_trait]
pub trait ResumeStore: Send + Sync {
    async fn get(&self, id: &ResumeId) -> Result<Option<ResumeWait>, StoreError>;

    /// Writes a wait unconditionally (seeding and tests; registrations use `register`).
    async fn put(&self, wait: &ResumeWait) -> Result<(), StoreError>;

    /// Writes a new generation if the stored item is still `replacing` (its generation,
    /// or absent when `None`); `false` when another registration got there first.
    async fn register(
        &self,
        wait: &ResumeWait,
        replacing: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// Holds the generation for one event's delivery (conditional: live, not consumed,
    /// not held for another event unless that hold has lapsed).
    async fn take(&self, request: &TakeRequest<'_>) -> Result<TakeOutcome, StoreError>;

    /// Marks the generation consumed by the event that holds it; `false` when `holder`
    /// does not hold it (a lapsed hold, a newer generation). Idempotent for an event:
    /// a generation that event already consumed answers `true`.
    async fn consume(
        &self,
        id: &ResumeId,
        generation: &str,
        holder: Holder<'_>,
    ) -> Result<bool, StoreError>;

    /// Gives a hold back (delivery failed for good): the wait is live again.
    async fn release(
        &self,
        id: &ResumeId,
        generation: &str,
        holder: Holder<'_>,
    ) -> Result<(), StoreError>;

    /// Deletes the wait (of `generation` only, when given); `false` when there was none.
    async fn delete(&self, id: &ResumeId, generation: Option<&str>) -> Result<bool, StoreError>;
}

/// What to do with a hold whose claim token is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The event was delivered (the ledger says committed): mark the wait consumed.
    Consume,
    /// The event will not be delivered (dead-lettered): give the wait back.
    Release,
}

/// Finishes the hold `event` has on whichever generation of the wait it holds (a
/// redelivered or dead-lettered message may name an older generation than the one its
/// event was re-targeted to). `false` when the event holds no generation.
pub async fn finish_hold(
    store: &dyn ResumeStore,
    resume_id: &ResumeId,
    event: &EventId,
    finish: Finish,
) -> Result<bool, StoreError> {
    let Some(wait) = store.get(resume_id).await? else {
        return Ok(false);
    };
    let held = wait.taken.as_ref().is_some_and(|t| &t.event_id == event);
    let consumed = wait.consumed_by.as_ref() == Some(event);
    match finish {
        Finish::Consume if held || consumed => {
            store
                .consume(resume_id, &wait.generation, Holder::Event(event))
                .await
        }
        Finish::Release if held => store
            .release(resume_id, &wait.generation, Holder::Event(event))
            .await
            .map(|()| true),
        _ => Ok(false),
    }
}

/// An event waiting for a registration of its triple.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedEvent {
    pub event: NormalizedEvent,
    pub parked_at_ms: i64,
    pub until_ms: i64,
}

/// Whether an event was parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkOutcome {
    Parked,
    /// Already parked for this triple (a redelivery).
    AlreadyParked,
    /// The triple already holds `MAX_PARKED_PER_WAIT` events; this one is not kept.
    Full,
}

/// Events parked per `(workspace, runId, stepId, kind)` at most.
pub const MAX_PARKED_PER_WAIT: usize = 20;

/// Events that arrived before (or instead of) a live wait, per workspace and triple.
#[async_trait]
pub trait ParkStore: Send + Sync {
    async fn park(
        &self,
        workspace: &WorkspaceId,
        resume_id: &ResumeId,
        parked: &ParkedEvent,
    ) -> Result<ParkOutcome, StoreError>;

    /// The triple's parked events still within their window, earliest first.
    async fn parked(
        &self,
        workspace: &WorkspaceId,
        resume_id: &ResumeId,
        now_ms: i64,
    ) -> Result<Vec<ParkedEvent>, StoreError>;

    async fn remove(
        &self,
        workspace: &WorkspaceId,
        resume_id: &ResumeId,
        event_id: &EventId,
    ) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_grammar_follows_the_upstream_examples() {
        for (text, seconds) in [
            ("PT24H", 86_400),
            ("P7D", 604_800),
            ("PT1H", 3_600),
            ("PT30M", 1_800),
            ("PT45S", 45),
            ("P1W", 604_800),
            ("P1DT2H3M4S", 93_784),
            ("PT1.5S", 1),
            ("P1W2D", 777_600),
            (" PT0S ", 0),
        ] {
            assert_eq!(parse_ttl(text), Some(seconds), "{text}");
        }
        for text in [
            "", "P", "PT", "garbage", "24H", "PT24X", "P1Y", "P1M", "pt1h", "PT1H2H", "PT1M1H",
            "P1.5D",
        ] {
            assert_eq!(parse_ttl(text), None, "{text}");
        }
    }

    #[test]
    fn resume_id_is_prefixed_sha256_of_the_nul_joined_triple() {
        let key = ResumeKey {
            run_id: "r".into(),
            step_id: "s".into(),
            event_key: "k".into(),
        };
        let expected = format!("res_{}", hex::encode(Sha256::digest(b"r\0s\0k")));
        assert_eq!(key.resume_id().as_str(), expected);
    }
}
