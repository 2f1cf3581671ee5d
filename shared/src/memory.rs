//! In-memory adapters of every port, for unit tests of the pipeline logic. The AWS
//! adapters are tested against real emulators; these never stand in for them there.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use crate::audit::{AuditEvent, AuditName, AuditSink};
use crate::deadletters::{self, DeadLetterPage, DeadLetterQuery, DeadLetterStore, Transition};
use crate::dedup::{
    Claim, ClaimOutcome, ClaimRequest, DedupKey, Ledger, LedgerEntry, LedgerError, LedgerStatus,
    Release,
};
use crate::ids::{EventId, ResumeId, SubscriptionId, WorkspaceId};
use crate::queue::{Queue, QueueError};
use crate::resume::{
    Holder, ParkOutcome, ParkStore, ParkedEvent, ResumeStore, ResumeWait, Take, TakeOutcome,
    TakeRequest, MAX_PARKED_PER_WAIT,
};
use crate::store::StoreError;
use crate::subscription::{
    ListQuery, Page, Route, Subscription, SubscriptionReader, SubscriptionStore,
};
use crate::workflow::{RaiseEventRequest, RunRef, StartRunRequest, WorkflowClient, WorkflowError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Subscriptions, and the due index of the scheduled ones (a write resets a
/// subscription's next fire instant, as the DynamoDB item's attributes are rebuilt).
#[derive(Debug, Default)]
pub struct MemorySubscriptionStore {
    all: Mutex<Vec<Subscription>>,
    next_fire: Mutex<HashMap<(WorkspaceId, SubscriptionId), i64>>,
}

#[async_trait]
impl SubscriptionReader for MemorySubscriptionStore {
    async fn get(
        &self,
        ws: &WorkspaceId,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, StoreError> {
        Ok(lock(&self.all)
            .iter()
            .find(|s| &s.workspace_id == ws && &s.subscription_id == id)
            .cloned())
    }

    async fn list_matchable(
        &self,
        ws: &WorkspaceId,
        route: &Route,
    ) -> Result<Vec<Arc<Subscription>>, StoreError> {
        Ok(lock(&self.all)
            .iter()
            .filter(|s| &s.workspace_id == ws && s.is_matchable())
            .filter(|s| match route {
                Route::SourceType(t) => s.source_type == *t && s.connector_instance_id.is_none(),
                Route::Connector(c) => s.connector_instance_id.as_deref() == Some(c.as_str()),
            })
            .map(|s| Arc::new(s.clone()))
            .collect())
    }
}

#[async_trait]
impl SubscriptionStore for MemorySubscriptionStore {
    async fn list(&self, ws: &WorkspaceId, query: &ListQuery) -> Result<Page, StoreError> {
        let mut items: Vec<Subscription> = lock(&self.all)
            .iter()
            .filter(|s| &s.workspace_id == ws && query.admits(s))
            .filter(|s| {
                query
                    .cursor
                    .as_deref()
                    .is_none_or(|c| s.subscription_id.as_str() > c)
            })
            .cloned()
            .collect();
        items.sort_by(|a, b| a.subscription_id.cmp(&b.subscription_id));
        let more = items.len() > query.limit;
        items.truncate(query.limit);
        let next_cursor = more
            .then(|| items.last().map(|s| s.subscription_id.to_string()))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    async fn put(&self, subscription: &Subscription) -> Result<(), StoreError> {
        let mut all = lock(&self.all);
        all.retain(|s| {
            !(s.workspace_id == subscription.workspace_id
                && s.subscription_id == subscription.subscription_id)
        });
        all.push(subscription.clone());
        drop(all);
        self.reset_next_fire(subscription);
        Ok(())
    }

    async fn replace(
        &self,
        subscription: &Subscription,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        let mut all = lock(&self.all);
        let Some(stored) = all.iter_mut().find(|s| {
            s.workspace_id == subscription.workspace_id
                && s.subscription_id == subscription.subscription_id
        }) else {
            return Err(StoreError::Conflict("no such subscription".into()));
        };
        if stored.version != expected_version {
            return Err(StoreError::Conflict(format!(
                "version {} is not {expected_version}",
                stored.version
            )));
        }
        *stored = subscription.clone();
        drop(all);
        self.reset_next_fire(subscription);
        Ok(())
    }
}

#[async_trait]
impl crate::scheduled::ScheduleStore for MemorySubscriptionStore {
    async fn due(
        &self,
        shard: u32,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<crate::scheduled::DueSubscription>, StoreError> {
        let next_fire = lock(&self.next_fire).clone();
        let mut due: Vec<crate::scheduled::DueSubscription> = lock(&self.all)
            .iter()
            .filter(|s| crate::schedule::shard_of(s.subscription_id.as_str()) == shard)
            .filter_map(|s| {
                let at = *next_fire.get(&(s.workspace_id.clone(), s.subscription_id.clone()))?;
                (at <= now_ms).then(|| crate::scheduled::DueSubscription {
                    subscription: s.clone(),
                    next_fire_ms: at,
                })
            })
            .collect();
        due.sort_by_key(|d| d.next_fire_ms);
        due.truncate(limit);
        Ok(due)
    }

    async fn advance(
        &self,
        subscription: &Subscription,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<bool, StoreError> {
        let key = (
            subscription.workspace_id.clone(),
            subscription.subscription_id.clone(),
        );
        let mut next_fire = lock(&self.next_fire);
        if next_fire.get(&key) != Some(&from_ms) {
            return Ok(false);
        }
        if to_ms == i64::MAX {
            next_fire.remove(&key);
        } else {
            next_fire.insert(key, to_ms);
        }
        Ok(true)
    }
}

impl MemorySubscriptionStore {
    fn reset_next_fire(&self, subscription: &Subscription) {
        let key = (
            subscription.workspace_id.clone(),
            subscription.subscription_id.clone(),
        );
        match crate::scheduled::first_fire_ms(subscription) {
            Some(at) => lock(&self.next_fire).insert(key, at),
            None => lock(&self.next_fire).remove(&key),
        };
    }
}

#[derive(Debug, Default)]
pub struct MemoryResumeStore(Mutex<HashMap<ResumeId, ResumeWait>>);

#[async_trait]
impl ResumeStore for MemoryResumeStore {
    async fn get(&self, id: &ResumeId) -> Result<Option<ResumeWait>, StoreError> {
        Ok(lock(&self.0).get(id).cloned())
    }

    async fn put(&self, wait: &ResumeWait) -> Result<(), StoreError> {
        lock(&self.0).insert(wait.resume_id.clone(), wait.clone());
        Ok(())
    }

    async fn register(
        &self,
        wait: &ResumeWait,
        replacing: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut waits = lock(&self.0);
        let current = waits.get(&wait.resume_id).map(|w| w.generation.as_str());
        if current != replacing {
            return Ok(false);
        }
        waits.insert(wait.resume_id.clone(), wait.clone());
        Ok(true)
    }

    async fn take(&self, request: &TakeRequest<'_>) -> Result<TakeOutcome, StoreError> {
        let mut waits = lock(&self.0);
        let Some(wait) = waits.get_mut(request.resume_id) else {
            return Ok(TakeOutcome::Gone);
        };
        if wait.generation != request.generation || wait.expires_at <= request.now_ms / 1000 {
            return Ok(TakeOutcome::Gone);
        }
        if let Some(winner) = &wait.consumed_by {
            return Ok(TakeOutcome::Superseded {
                winner: winner.clone(),
            });
        }
        if let Some(take) = wait
            .taken
            .as_ref()
            .filter(|t| t.until_ms > request.now_ms && &t.event_id != request.event_id)
        {
            return Ok(TakeOutcome::Superseded {
                winner: take.event_id.clone(),
            });
        }
        wait.taken = Some(Take {
            event_id: request.event_id.clone(),
            token: request.token.to_owned(),
            until_ms: request.until_ms,
        });
        Ok(TakeOutcome::Taken)
    }

    async fn consume(
        &self,
        id: &ResumeId,
        generation: &str,
        holder: Holder<'_>,
    ) -> Result<bool, StoreError> {
        let mut waits = lock(&self.0);
        let Some(wait) = waits.get_mut(id).filter(|w| w.generation == generation) else {
            return Ok(false);
        };
        if let Holder::Event(event) = holder {
            if wait.consumed_by.as_ref() == Some(event) {
                return Ok(true);
            }
        }
        if wait.consumed_by.is_some() || !holds(wait.taken.as_ref(), holder) {
            return Ok(false);
        }
        wait.consumed_by = wait.taken.take().map(|t| t.event_id);
        Ok(true)
    }

    async fn release(
        &self,
        id: &ResumeId,
        generation: &str,
        holder: Holder<'_>,
    ) -> Result<(), StoreError> {
        let mut waits = lock(&self.0);
        if let Some(wait) = waits
            .get_mut(id)
            .filter(|w| w.generation == generation && w.consumed_by.is_none())
            .filter(|w| holds(w.taken.as_ref(), holder))
        {
            wait.taken = None;
        }
        Ok(())
    }

    async fn delete(&self, id: &ResumeId, generation: Option<&str>) -> Result<bool, StoreError> {
        let mut waits = lock(&self.0);
        let matches = waits
            .get(id)
            .is_some_and(|w| generation.is_none_or(|g| w.generation == g));
        Ok(matches && waits.remove(id).is_some())
    }
}

fn holds(taken: Option<&Take>, holder: Holder<'_>) -> bool {
    taken.is_some_and(|t| match holder {
        Holder::Token(token) => t.token == token,
        Holder::Event(event) => &t.event_id == event,
    })
}

/// Parked events over a map.
#[derive(Debug, Default)]
pub struct MemoryParkStore(Mutex<HashMap<(WorkspaceId, ResumeId), Vec<ParkedEvent>>>);

#[async_trait]
impl ParkStore for MemoryParkStore {
    async fn park(
        &self,
        workspace: &WorkspaceId,
        resume_id: &ResumeId,
        parked: &ParkedEvent,
    ) -> Result<ParkOutcome, StoreError> {
        let mut all = lock(&self.0);
        let slot = all
            .entry((workspace.clone(), resume_id.clone()))
            .or_default();
        // Expired rows count for nothing (TTL deletion may come days late): they are
        // neither "already parked" nor part of the cap, and a new park replaces them.
        let now_ms = parked.parked_at_ms;
        let same = |p: &ParkedEvent| p.event.event_id == parked.event.event_id;
        if slot.iter().any(|p| same(p) && p.until_ms > now_ms) {
            return Ok(ParkOutcome::AlreadyParked);
        }
        if slot.iter().filter(|p| p.until_ms > now_ms).count() >= MAX_PARKED_PER_WAIT {
            return Ok(ParkOutcome::Full);
        }
        slot.retain(|p| !same(p));
        slot.push(parked.clone());
        Ok(ParkOutcome::Parked)
    }

    async fn parked(
        &self,
        workspace: &WorkspaceId,
        resume_id: &ResumeId,
        now_ms: i64,
    ) -> Result<Vec<ParkedEvent>, StoreError> {
        let all = lock(&self.0);
        let mut found: Vec<ParkedEvent> = all
            .get(&(workspace.clone(), resume_id.clone()))
            .map(|v| v.iter().filter(|p| p.until_ms > now_ms).cloned().collect())
            .unwrap_or_default();
        found.sort_by_key(|p| p.parked_at_ms);
        Ok(found)
    }

    async fn remove(
        &self,
        workspace: &WorkspaceId,
        resume_id: &ResumeId,
        event_id: &EventId,
    ) -> Result<(), StoreError> {
        if let Some(slot) = lock(&self.0).get_mut(&(workspace.clone(), resume_id.clone())) {
            slot.retain(|p| &p.event.event_id != event_id);
        }
        Ok(())
    }
}

/// The ledger protocol over a map; the same rules the DynamoDB conditions express.
#[derive(Debug, Default)]
pub struct MemoryLedger(Mutex<HashMap<(WorkspaceId, DedupKey), LedgerEntry>>);

impl MemoryLedger {
    pub fn entries(&self) -> Vec<LedgerEntry> {
        lock(&self.0).values().cloned().collect()
    }

    /// Puts an entry as it is (a state a test starts from).
    pub fn insert(&self, entry: LedgerEntry) {
        lock(&self.0).insert((entry.workspace_id.clone(), entry.key.clone()), entry);
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn claim(&self, req: &ClaimRequest) -> Result<ClaimOutcome, LedgerError> {
        let mut items = lock(&self.0);
        let slot = (req.workspace_id.clone(), req.key.clone());
        let previous = items.get(&slot).cloned();
        if let Some(existing) = previous.as_ref().filter(|e| !e.is_claimable(req.now_ms)) {
            return Ok(match existing.status {
                // A discarded dead letter is final: nothing is sent, like a duplicate.
                LedgerStatus::Committed | LedgerStatus::Discarded => ClaimOutcome::Duplicate {
                    run_id: existing.run_id.clone(),
                },
                _ => ClaimOutcome::InFlight {
                    lease_until_ms: existing.lease_until_ms,
                },
            });
        }
        // An expired item is as good as absent: a new window and a new attempt count.
        let previous = previous.filter(|e| e.expires_at * 1000 > req.now_ms);
        let attempts = previous.as_ref().map_or(0, |e| e.attempts) + 1;
        // A dead letter claimed again (its event replayed) starts a new retry window.
        let first_attempt_ms = previous
            .as_ref()
            .filter(|e| e.status != LedgerStatus::DeadLettered)
            .map(|e| e.first_attempt_ms)
            .filter(|&ms| ms > 0)
            .unwrap_or(req.now_ms);
        items.insert(
            slot,
            LedgerEntry {
                workspace_id: req.workspace_id.clone(),
                key: req.key.clone(),
                event_id: req.event_id.clone(),
                target_id: req.target_id.clone(),
                match_kind: req.match_kind,
                status: LedgerStatus::Claimed,
                claim_token: Some(req.token.clone()),
                lease_until_ms: req.lease_until_ms,
                run_id: None,
                last_error: previous.and_then(|e| e.last_error),
                reason: None,
                superseded_by: None,
                replaying_until_ms: 0,
                attempts,
                first_attempt_ms,
                expires_at: req.expires_at,
                updated_at_ms: req.now_ms,
                message: None,
            },
        );
        Ok(ClaimOutcome::Claimed(Claim {
            workspace_id: req.workspace_id.clone(),
            key: req.key.clone(),
            token: req.token.clone(),
            attempts,
            first_attempt_ms,
        }))
    }

    async fn commit(
        &self,
        claim: &Claim,
        run_id: Option<&str>,
        expires_at: i64,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let mut items = lock(&self.0);
        let entry = held(&mut items, claim)?;
        entry.status = LedgerStatus::Committed;
        entry.claim_token = None;
        entry.run_id = run_id.map(str::to_owned);
        entry.expires_at = expires_at;
        entry.updated_at_ms = now_ms;
        Ok(())
    }

    async fn release(
        &self,
        claim: &Claim,
        release: &Release,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let mut items = lock(&self.0);
        let entry = held(&mut items, claim)?;
        entry.claim_token = None;
        entry.updated_at_ms = now_ms;
        match release {
            Release::Retry { error } => {
                entry.status = LedgerStatus::Released;
                entry.last_error = Some(error.clone());
            }
            Release::DeadLetter {
                reason,
                detail,
                expires_at,
                message,
            } => {
                entry.status = LedgerStatus::DeadLettered;
                entry.message = message.clone();
                entry.reason = Some(*reason);
                entry.last_error = Some(detail.clone());
                entry.expires_at = *expires_at;
            }
            Release::Parked { winner, until_ms } => {
                entry.status = if winner.is_some() {
                    LedgerStatus::Superseded
                } else {
                    LedgerStatus::Parked
                };
                entry.superseded_by = winner.clone();
                entry.lease_until_ms = *until_ms;
            }
        }
        Ok(())
    }

    async fn record_unclaimed(&self, entry: &LedgerEntry) -> Result<(), LedgerError> {
        let mut items = lock(&self.0);
        let slot = (entry.workspace_id.clone(), entry.key.clone());
        let previous = items.get(&slot);
        if previous.is_some_and(|e| !e.is_claimable(entry.updated_at_ms)) {
            return Ok(());
        }
        let mut recorded = entry.clone();
        if let Some(previous) = previous {
            recorded.attempts = previous.attempts + 1;
            recorded.first_attempt_ms = previous.first_attempt_ms;
        }
        items.insert(slot, recorded);
        Ok(())
    }

    async fn get(
        &self,
        ws: &WorkspaceId,
        key: &DedupKey,
    ) -> Result<Option<LedgerEntry>, LedgerError> {
        Ok(lock(&self.0).get(&(ws.clone(), key.clone())).cloned())
    }

    async fn for_event(
        &self,
        ws: &WorkspaceId,
        event_id: &EventId,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        let mut entries: Vec<LedgerEntry> = lock(&self.0)
            .values()
            .filter(|e| &e.workspace_id == ws && &e.event_id == event_id)
            .cloned()
            .collect();
        entries.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
        Ok(entries)
    }
}

#[async_trait]
impl DeadLetterStore for MemoryLedger {
    async fn list(
        &self,
        ws: &WorkspaceId,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterPage, LedgerError> {
        let mut items: Vec<LedgerEntry> = lock(&self.0)
            .values()
            .filter(|e| &e.workspace_id == ws && query.admits(e))
            .cloned()
            .collect();
        items.sort_by_key(|e| std::cmp::Reverse(deadletters::sort_key(e)));
        if let Some(cursor) = &query.cursor {
            items.retain(|e| deadletters::sort_key(e).as_str() < cursor.as_str());
        }
        let more = items.len() > query.limit;
        items.truncate(query.limit);
        let next_cursor = more
            .then(|| items.last().map(deadletters::sort_key))
            .flatten();
        Ok(DeadLetterPage { items, next_cursor })
    }

    async fn reopen(
        &self,
        ws: &WorkspaceId,
        key: &DedupKey,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Transition, LedgerError> {
        let mut items = lock(&self.0);
        match items.get_mut(&(ws.clone(), key.clone())) {
            Some(entry) if entry.status == LedgerStatus::DeadLettered => {
                if entry.replaying_until_ms > now_ms {
                    return Ok(Transition::Replaying);
                }
                let before = entry.clone();
                entry.replaying_until_ms = lease_until_ms;
                Ok(Transition::Done(Box::new(before)))
            }
            Some(entry) => Ok(Transition::NotDeadLettered(entry.status)),
            None => Ok(Transition::NotFound),
        }
    }

    async fn restore(
        &self,
        ws: &WorkspaceId,
        key: &DedupKey,
        lease_until_ms: i64,
    ) -> Result<(), LedgerError> {
        if let Some(entry) = lock(&self.0)
            .get_mut(&(ws.clone(), key.clone()))
            .filter(|e| {
                e.status == LedgerStatus::DeadLettered && e.replaying_until_ms == lease_until_ms
            })
        {
            entry.replaying_until_ms = 0;
        }
        Ok(())
    }

    async fn discard(
        &self,
        ws: &WorkspaceId,
        key: &DedupKey,
        now_ms: i64,
    ) -> Result<Transition, LedgerError> {
        transition(&self.0, ws, key, |entry| {
            entry.status = LedgerStatus::Discarded;
            entry.message = None;
            entry.updated_at_ms = now_ms;
        })
    }
}

/// Applies `change` to a dead letter; reports what it found otherwise.
fn transition(
    items: &Mutex<HashMap<(WorkspaceId, DedupKey), LedgerEntry>>,
    ws: &WorkspaceId,
    key: &DedupKey,
    change: impl FnOnce(&mut LedgerEntry),
) -> Result<Transition, LedgerError> {
    let mut items = lock(items);
    let Some(entry) = items.get_mut(&(ws.clone(), key.clone())) else {
        return Ok(Transition::NotFound);
    };
    if entry.status != LedgerStatus::DeadLettered {
        return Ok(Transition::NotDeadLettered(entry.status));
    }
    let before = entry.clone();
    change(entry);
    Ok(Transition::Done(Box::new(before)))
}

fn held<'a>(
    items: &'a mut HashMap<(WorkspaceId, DedupKey), LedgerEntry>,
    claim: &Claim,
) -> Result<&'a mut LedgerEntry, LedgerError> {
    items
        .get_mut(&(claim.workspace_id.clone(), claim.key.clone()))
        .filter(|e| {
            e.status == LedgerStatus::Claimed && e.claim_token.as_deref() == Some(&claim.token)
        })
        .ok_or_else(|| LedgerError::ClaimLost(claim.key.clone()))
}

/// Records sent bodies and visibility changes.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    sent: Mutex<Vec<String>>,
    visibility: Mutex<Vec<(String, u32)>>,
    /// Bodies sent with a delay, and the delay (they are in `sent` too).
    delayed: Mutex<Vec<(String, u32)>>,
    fail_sends: Mutex<bool>,
}

impl MemoryQueue {
    pub fn delayed(&self) -> Vec<(String, u32)> {
        lock(&self.delayed).clone()
    }

    pub fn sent(&self) -> Vec<String> {
        lock(&self.sent).clone()
    }

    pub fn take_sent(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.sent))
    }

    pub fn visibility_changes(&self) -> Vec<(String, u32)> {
        lock(&self.visibility).clone()
    }

    pub fn fail_sends(&self, fail: bool) {
        *lock(&self.fail_sends) = fail;
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError> {
        if *lock(&self.fail_sends) {
            return Err(QueueError::Unavailable("injected".into()));
        }
        // What SQS could never carry is refused before anything is sent, as there.
        crate::aws::sqs::chunks(bodies)?;
        lock(&self.sent).extend(bodies.iter().cloned());
        Ok(())
    }

    async fn send_delayed(&self, bodies: &[String], delay_secs: u32) -> Result<(), QueueError> {
        let messages: Vec<(String, u32)> = bodies.iter().map(|b| (b.clone(), delay_secs)).collect();
        self.send_each_delayed(&messages).await
    }

    async fn send_each_delayed(&self, messages: &[(String, u32)]) -> Result<(), QueueError> {
        let bodies: Vec<String> = messages.iter().map(|(b, _)| b.clone()).collect();
        self.send_batch(&bodies).await?;
        lock(&self.delayed).extend(
            messages
                .iter()
                .map(|(b, d)| (b.clone(), (*d).min(crate::queue::MAX_DELAY_SECS))),
        );
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout_secs: u32,
    ) -> Result<(), QueueError> {
        lock(&self.visibility).push((receipt_handle.to_owned(), timeout_secs));
        Ok(())
    }
}

/// Keeps every audit event, in order.
#[derive(Debug, Default)]
pub struct RecordingAuditSink(Mutex<Vec<AuditEvent>>);

impl RecordingAuditSink {
    pub fn events(&self) -> Vec<AuditEvent> {
        lock(&self.0).clone()
    }

    pub fn names(&self) -> Vec<AuditName> {
        lock(&self.0).iter().map(|e| e.audit).collect()
    }

    pub fn clear(&self) {
        lock(&self.0).clear();
    }
}

impl AuditSink for RecordingAuditSink {
    fn emit(&self, event: AuditEvent) {
        lock(&self.0).push(event);
    }
}

/// A byte buffer several writers share (an audit sink's output, read back by a test).
#[derive(Debug, Default, Clone)]
pub struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// What was written, as lines of text.
    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&lock(&self.0))
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A scripted Workflow Service: answers from a queue of results (success when empty),
/// records every call. Same idempotency key → same run id, like the real one.
#[derive(Debug, Default)]
pub struct ScriptedWorkflow {
    script: Mutex<VecDeque<Result<(), WorkflowError>>>,
    starts: Mutex<Vec<StartRunRequest>>,
    raises: Mutex<Vec<RaiseEventRequest>>,
}

impl ScriptedWorkflow {
    /// Queues the results of the next calls.
    pub fn script(&self, results: impl IntoIterator<Item = Result<(), WorkflowError>>) {
        lock(&self.script).extend(results);
    }

    pub fn starts(&self) -> Vec<StartRunRequest> {
        lock(&self.starts).clone()
    }

    pub fn raises(&self) -> Vec<RaiseEventRequest> {
        lock(&self.raises).clone()
    }

    fn next(&self) -> Result<(), WorkflowError> {
        lock(&self.script).pop_front().unwrap_or(Ok(()))
    }
}

#[async_trait]
impl WorkflowClient for ScriptedWorkflow {
    async fn start_run(&self, request: &StartRunRequest) -> Result<RunRef, WorkflowError> {
        lock(&self.starts).push(request.clone());
        self.next()?;
        let suffix: String = request.idempotency_key.chars().rev().take(12).collect();
        Ok(RunRef {
            run_id: format!("run-{suffix}"),
            status: "queued".into(),
            workspace_id: request.workspace_id.clone(),
            workflow_version_id: request.workflow_version_id.clone(),
            started_at: None,
        })
    }

    async fn raise_event(&self, request: &RaiseEventRequest) -> Result<(), WorkflowError> {
        lock(&self.raises).push(request.clone());
        self.next()
    }
}

/// Connector instances by id.
#[derive(Debug, Default)]
pub struct MemoryConnectorStore(Mutex<HashMap<String, crate::webhook::ConnectorInstance>>);

#[async_trait]
impl crate::webhook::ConnectorStore for MemoryConnectorStore {
    async fn get(&self, id: &str) -> Result<Option<crate::webhook::ConnectorInstance>, StoreError> {
        Ok(lock(&self.0).get(id).cloned())
    }

    async fn put(&self, connector: &crate::webhook::ConnectorInstance) -> Result<(), StoreError> {
        lock(&self.0).insert(connector.connector_instance_id.clone(), connector.clone());
        Ok(())
    }

    async fn list(
        &self,
        workspace: &WorkspaceId,
    ) -> Result<Vec<crate::webhook::ConnectorInstance>, StoreError> {
        let mut found: Vec<_> = lock(&self.0)
            .values()
            .filter(|c| &c.workspace_id == workspace)
            .cloned()
            .collect();
        found.sort_by(|a, b| a.connector_instance_id.cmp(&b.connector_instance_id));
        Ok(found)
    }

    async fn replace(
        &self,
        connector: &crate::webhook::ConnectorInstance,
        expected: u64,
    ) -> Result<(), StoreError> {
        let mut all = lock(&self.0);
        match all.get(&connector.connector_instance_id) {
            Some(current) if current.version == expected => {
                all.insert(connector.connector_instance_id.clone(), connector.clone());
                Ok(())
            }
            _ => Err(StoreError::Conflict("connector changed or gone".into())),
        }
    }

    async fn delete(&self, id: &str, expected: Option<u64>) -> Result<(), StoreError> {
        let mut all = lock(&self.0);
        match (all.get(id), expected) {
            (Some(current), Some(version)) if current.version != version => {
                Err(StoreError::Conflict("connector changed".into()))
            }
            _ => {
                all.remove(id);
                Ok(())
            }
        }
    }
}

/// The event archive over a map.
#[derive(Debug, Default)]
pub struct MemoryArchive(Mutex<HashMap<(WorkspaceId, EventId), crate::archive::ArchivedEvent>>);

#[async_trait]
impl crate::archive::EventArchive for MemoryArchive {
    async fn put_new(
        &self,
        workspace: &WorkspaceId,
        event: &crate::event::NormalizedEvent,
        received_at_ms: i64,
        _expires_at: i64,
    ) -> Result<bool, StoreError> {
        let mut items = lock(&self.0);
        let slot = (workspace.clone(), event.event_id.clone());
        if items.contains_key(&slot) {
            return Ok(false);
        }
        items.insert(
            slot,
            crate::archive::ArchivedEvent {
                workspace_id: workspace.clone(),
                event_id: event.event_id.clone(),
                event: Some(event.clone()),
                received_at_ms,
                fate: None,
            },
        );
        Ok(true)
    }

    async fn record_fate(
        &self,
        workspace: &WorkspaceId,
        event_id: &EventId,
        fate: &crate::archive::EventFate,
        _expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut items = lock(&self.0);
        let record = items
            .entry((workspace.clone(), event_id.clone()))
            .or_insert_with(|| crate::archive::ArchivedEvent {
                workspace_id: workspace.clone(),
                event_id: event_id.clone(),
                event: None,
                received_at_ms: fate.at_ms,
                fate: None,
            });
        record.fate = Some(fate.clone());
        Ok(())
    }

    async fn get(
        &self,
        workspace: &WorkspaceId,
        event_id: &EventId,
    ) -> Result<Option<crate::archive::ArchivedEvent>, StoreError> {
        Ok(lock(&self.0)
            .get(&(workspace.clone(), event_id.clone()))
            .cloned())
    }

    async fn list(
        &self,
        workspace: &WorkspaceId,
        query: &crate::archive::EventQuery,
    ) -> Result<crate::archive::EventPage, StoreError> {
        use crate::archive::listing_key;
        let key = |a: &crate::archive::ArchivedEvent| listing_key(a.received_at_ms, &a.event_id);
        let mut items: Vec<_> = lock(&self.0)
            .values()
            .filter(|a| &a.workspace_id == workspace && query.admits(a))
            .filter(|a| query.cursor.as_ref().is_none_or(|c| key(a) < *c))
            .cloned()
            .collect();
        items.sort_by_key(|a| std::cmp::Reverse(key(a)));
        let more = items.len() > query.limit;
        items.truncate(query.limit);
        let next_cursor = more.then(|| items.last().map(key)).flatten();
        Ok(crate::archive::EventPage { items, next_cursor })
    }
}

/// The whole API on fresh in-memory ports, with the development shim enabled and no
/// webhook secrets but `secrets`: for unit tests and fuzzing, never for a deployment.
pub fn api(
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn crate::clock::Clock>,
    secrets: impl IntoIterator<Item = (String, String)>,
) -> Result<crate::api::Api, crate::config::ConfigError> {
    let queue = Arc::new(MemoryQueue::default());
    let archive = Arc::new(MemoryArchive::default());
    let ledger = Arc::new(MemoryLedger::default());
    let settings = crate::config::Settings::from_lookup(|name| {
        (name == "ENVIRONMENT").then(|| "development".to_owned())
    })?;
    let intake = Arc::new(crate::stage::IngestStage {
        normalized_queue: queue.clone(),
        archive: archive.clone(),
        audit: Arc::clone(&audit),
        clock: Arc::clone(&clock),
        retention: crate::archive::Retention { ttl_secs: 60 },
    });
    Ok(crate::api::Api {
        subscriptions: Arc::new(MemorySubscriptionStore::default()),
        resumes: Arc::new(MemoryResumeStore::default()),
        ledger: ledger.clone(),
        dead_letters: ledger,
        archive: archive.clone(),
        parked: Arc::new(MemoryParkStore::default()),
        intake: Arc::clone(&intake),
        dispatch_queue: queue,
        audit: Arc::clone(&audit),
        clock: Arc::clone(&clock),
        settings: Arc::new(settings),
        cache: Default::default(),
        webhooks: crate::webhook::WebhookIntake {
            connectors: Arc::new(MemoryConnectorStore::default()),
            secrets: Arc::new(crate::webhook::secrets::StaticSecrets::new(secrets)),
            intake,
            audit,
            clock,
        },
    })
}

/// An API Gateway HTTP API (payload 2.0) request, as the API function receives it
/// (`path` may carry a `?query`, without percent-encoding).
pub fn gateway_request(
    method: &str,
    path: &str,
    headers: serde_json::Value,
    body: &str,
) -> Result<aws_lambda_events::event::apigw::ApiGatewayV2httpRequest, serde_json::Error> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let parameters: serde_json::Map<String, serde_json::Value> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
        .collect();
    serde_json::from_value(serde_json::json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "queryStringParameters": parameters,
        "headers": headers,
        "requestContext": {"routeKey": "$default", "accountId": "1", "stage": "$default",
                           "requestId": "r", "apiId": "a", "domainName": "d", "domainPrefix": "d",
                           "time": "t", "timeEpoch": 0,
                           "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                                    "sourceIp": "127.0.0.1", "userAgent": "test"}},
        "body": body, "isBase64Encoded": false
    }))
}

/// Flow cells in memory (expiry ignored: tests drive the clock past the values instead).
#[derive(Debug, Default)]
pub struct MemoryFlowStore(Mutex<HashMap<String, crate::flow::FlowCell>>);

#[async_trait]
impl crate::flow::FlowStore for MemoryFlowStore {
    async fn load(&self, cell_id: &str) -> Result<Option<crate::flow::FlowCell>, StoreError> {
        Ok(lock(&self.0).get(cell_id).cloned())
    }

    async fn swap(
        &self,
        cell_id: &str,
        cell: &crate::flow::FlowCell,
        expected: Option<u64>,
        _expires_at: i64,
    ) -> Result<bool, StoreError> {
        let mut cells = lock(&self.0);
        if cells.get(cell_id).map(|c| c.version) != expected {
            return Ok(false);
        }
        cells.insert(cell_id.to_owned(), cell.clone());
        Ok(true)
    }

    async fn swap_pair(
        &self,
        first: crate::flow::CellWrite<'_>,
        second: crate::flow::CellWrite<'_>,
    ) -> Result<bool, StoreError> {
        let mut cells = lock(&self.0);
        let as_read =
            |w: &crate::flow::CellWrite<'_>| cells.get(w.cell_id).map(|c| c.version) == w.expected;
        if !as_read(&first) || !as_read(&second) {
            return Ok(false);
        }
        for write in [first, second] {
            cells.insert(write.cell_id.to_owned(), write.cell.clone());
        }
        Ok(true)
    }
}
