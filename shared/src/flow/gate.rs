//! The flow gate: decides, for one matched event and one subscription's `flow`, whether
//! it runs now, runs later (and when), or is skipped and why. Every decision is a
//! compare-and-set on the bucket's cell, so concurrent match instances share one count.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{
    BatchRef, CellWrite, Debounce, FlowCell, FlowSpec, FlowStore, Gcra, Mode, SlotRule, Slots,
    MAX_BATCH,
};
use crate::ids::{EventId, SubscriptionId, WorkspaceId};
use crate::selector::{EventScope, SelectorCache};
use crate::store::StoreError;

/// How long a decision keeps re-reading a cell other instances keep changing. A hot
/// cell (one batch joined by every match instance at once) takes many rounds; giving up
/// sooner sends the event back to its queue for a visibility timeout, by when its batch
/// may have closed. Well inside the functions' 30 s timeout.
const CONTENTION_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// The tries at one cell: the first at once, each later one after a random pause (up to
/// ~0.3 s) while the budget lasts. Tokio's clock, so tests with paused time stay quick.
struct Tries {
    attempt: u32,
    deadline: tokio::time::Instant,
}

impl Tries {
    fn new() -> Self {
        Self {
            attempt: 0,
            deadline: tokio::time::Instant::now() + CONTENTION_BUDGET,
        }
    }

    async fn next(&mut self) -> bool {
        if self.attempt > 0 && tokio::time::Instant::now() >= self.deadline {
            return false;
        }
        crate::backoff::contention_pause(self.attempt, 5).await;
        self.attempt += 1;
        true
    }
}

/// What flow control makes of one matched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Dispatch it; `not_before_ms` when a throttle delays it, `slots` when it must
    /// take a concurrency slot first.
    Run {
        not_before_ms: Option<i64>,
        slots: Option<Slots>,
    },
    /// Do not dispatch it: which mode refused it, why, and (idempotency) which event
    /// holds the key.
    Skip {
        mode: Mode,
        detail: String,
        owner: Option<EventId>,
    },
}

/// What a debounced event finds when its window is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fire {
    /// It is the window's last event: it runs (the window is closed for it).
    Run,
    /// Its window is due later than it was scheduled for: wait until then.
    Wait { until_ms: i64 },
    /// A later event of the key took the window over: this one does not run.
    Debounced { latest: Option<EventId> },
}

/// How long a debounce cell outlives its due time (for redeliveries of its check).
const DEBOUNCE_KEEP_SECS: i64 = 86_400;

/// The event being decided, and where it is decided.
pub struct Subject<'a> {
    pub workspace: &'a WorkspaceId,
    pub subscription: &'a SubscriptionId,
    pub event_id: &'a EventId,
    pub scope: &'a EventScope,
    pub now_ms: i64,
}

pub struct FlowGate {
    store: Arc<dyn FlowStore>,
    /// Joins of one process to one batch cell take turns (a message batch's records
    /// are matched side by side, and a burst puts them all in one batch): the cell's
    /// compare-and-set then races the other processes only, not ten times as many.
    join_turns: Box<[tokio::sync::Mutex<()>]>,
}

/// Turns are striped by cell: two cells may share one (a pause, never a deadlock: a
/// join holds one turn and takes no other).
const JOIN_TURNS: usize = 64;

impl FlowGate {
    pub fn new(store: Arc<dyn FlowStore>) -> Self {
        Self {
            store,
            join_turns: (0..JOIN_TURNS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    async fn join_turn(&self, cell_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let hash = Sha256::digest(cell_id.as_bytes());
        let stripe = usize::from(hash[0]) % self.join_turns.len();
        self.join_turns[stripe].lock().await
    }

    /// Applies the modes in order: idempotency, rate limit, throttle.
    pub async fn decide(
        &self,
        flow: &FlowSpec,
        subject: &Subject<'_>,
        cache: &SelectorCache,
    ) -> Result<Verdict, StoreError> {
        if let Some(mode) = &flow.idempotency {
            let cell = cell_id(subject, Mode::Idempotency, mode.key.as_deref(), cache);
            if let Some(holder) = self.own_key(&cell, subject, mode.period.ms()).await? {
                return Ok(Verdict::Skip {
                    mode: Mode::Idempotency,
                    detail: format!(
                        "event {holder} already took this key within {}",
                        mode.period.as_str()
                    ),
                    owner: EventId::new(holder).ok(),
                });
            }
        }
        if let Some(mode) = &flow.rate_limit {
            let cell = cell_id(subject, Mode::RateLimit, mode.key.as_deref(), cache);
            let rule = Gcra::rate_limit(mode.limit, mode.period.ms());
            if self
                .take_slot(&cell, rule, subject.now_ms, true)
                .await?
                .is_none()
            {
                return Ok(Verdict::Skip {
                    mode: Mode::RateLimit,
                    detail: format!(
                        "more than {} runs within {} for this key",
                        mode.limit,
                        mode.period.as_str()
                    ),
                    owner: None,
                });
            }
        }
        let mut not_before_ms = None;
        if let Some(mode) = &flow.throttle {
            let cell = cell_id(subject, Mode::Throttle, mode.key.as_deref(), cache);
            let rule = Gcra::new(mode.limit, mode.period.ms(), mode.burst.unwrap_or(1));
            let run_at = self.take_slot(&cell, rule, subject.now_ms, false).await?;
            not_before_ms = run_at.filter(|at| *at > subject.now_ms);
        }
        let mut slots = None;
        if let Some(rule) = flow.slot_rule() {
            let line = slots_for(&rule, subject, cache);
            if let Err(holder) = self.join_line(&line, rule.max_waiting, subject).await? {
                return Ok(Verdict::Skip {
                    mode: Mode::Slots,
                    detail: match &holder {
                        Some(event) => format!("event {event}'s run of this key is still running"),
                        None => "a run of this key is still running".to_owned(),
                    },
                    owner: holder,
                });
            }
            slots = Some(line);
        }
        Ok(Verdict::Run {
            not_before_ms,
            slots,
        })
    }

    /// The slot cell of the event (recomputed for a redelivered event).
    pub fn slots_of(
        &self,
        flow: &FlowSpec,
        subject: &Subject<'_>,
        cache: &SelectorCache,
    ) -> Option<Slots> {
        flow.slot_rule()
            .map(|rule| slots_for(&rule, subject, cache))
    }

    /// Puts the event in its key's line, unless the line is full (`max_waiting` events
    /// already wait, or hold every slot): `Err` with the event holding a slot, if any.
    async fn join_line(
        &self,
        line: &Slots,
        max_waiting: Option<usize>,
        subject: &Subject<'_>,
    ) -> Result<Result<(), Option<EventId>>, StoreError> {
        let cell_id = line.cell.as_str();
        let me = subject.event_id.as_str();
        let mut tries = Tries::new();
        while tries.next().await {
            let current = self.store.load(cell_id).await?;
            let mut cell = current.clone().unwrap_or_default();
            lapse_holders(&mut cell, subject.now_ms);
            if cell.holders.contains_key(me) || cell.waiting.iter().any(|w| w == me) {
                return Ok(Ok(()));
            }
            let busy = cell.holders.len() >= line.limit as usize;
            if let Some(max) = max_waiting {
                if cell.waiting.len() + usize::from(busy) > max {
                    let holder = cell
                        .holders
                        .keys()
                        .next()
                        .and_then(|h| EventId::new(h.as_str()).ok());
                    return Ok(Err(holder));
                }
            }
            if cell.waiting.is_empty() {
                cell.since_ms = subject.now_ms;
            }
            cell.waiting.push(me.to_owned());
            cell.version = current.as_ref().map_or(1, |c| c.version + 1);
            let expires_at = slot_expiry(&cell, line.timeout_ms, subject.now_ms);
            let expected = current.as_ref().map(|c| c.version);
            if self
                .store
                .swap(cell_id, &cell, expected, expires_at)
                .await?
            {
                return Ok(Ok(()));
            }
        }
        Err(contended(cell_id))
    }

    /// At dispatch time: the event takes a slot when it is first in line and one is
    /// free (or already holds one: a redelivery). A head of the line that has not come
    /// for a free slot in [`STALE_HEAD_MS`] is gone (dead-lettered, say) and is dropped.
    pub async fn take(
        &self,
        slots: &Slots,
        event_id: &EventId,
        now_ms: i64,
    ) -> Result<Take, StoreError> {
        let me = event_id.as_str();
        let mut tries = Tries::new();
        while tries.next().await {
            let Some(current) = self.store.load(&slots.cell).await? else {
                // Nothing left to say otherwise (expired long ago): run rather than lose.
                return Ok(Take::Go);
            };
            let mut cell = current.clone();
            lapse_holders(&mut cell, now_ms);
            if cell.holders.contains_key(me) {
                return Ok(Take::Go);
            }
            let free = cell.holders.len() < slots.limit as usize;
            if free
                && cell.waiting.first().is_some_and(|head| head != me)
                && now_ms - cell.since_ms > STALE_HEAD_MS
            {
                cell.waiting.remove(0);
                cell.since_ms = now_ms;
            }
            let position = cell.waiting.iter().position(|w| w == me);
            let go = free && position == Some(0);
            match position {
                Some(0) if go => {
                    cell.waiting.remove(0);
                    cell.since_ms = now_ms;
                    cell.holders
                        .insert(me.to_owned(), now_ms.saturating_add(slots.timeout_ms));
                }
                Some(_) => {}
                // Dropped from the line as gone, yet here: back in line, at its end.
                None => cell.waiting.push(me.to_owned()),
            }
            if cell == current {
                return Ok(Take::Wait {
                    ahead: position.unwrap_or(0),
                });
            }
            cell.version = current.version + 1;
            let expires_at = slot_expiry(&cell, slots.timeout_ms, now_ms);
            if self
                .store
                .swap(&slots.cell, &cell, Some(current.version), expires_at)
                .await?
            {
                return Ok(if go {
                    Take::Go
                } else {
                    Take::Wait {
                        ahead: position.unwrap_or(cell.waiting.len()),
                    }
                });
            }
        }
        Err(contended(&slots.cell))
    }

    /// Gives the event's slot (or its place in line) back.
    pub async fn give_back(
        &self,
        cell_id: &str,
        event_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tries = Tries::new();
        while tries.next().await {
            let Some(current) = self.store.load(cell_id).await? else {
                return Ok(());
            };
            let mut cell = current.clone();
            let held = cell.holders.remove(event_id).is_some();
            cell.waiting.retain(|w| w != event_id);
            if cell == current {
                return Ok(());
            }
            if held {
                cell.since_ms = now_ms;
            }
            cell.version = current.version + 1;
            let expires_at = now_ms / 1000 + DEBOUNCE_KEEP_SECS;
            if self
                .store
                .swap(cell_id, &cell, Some(current.version), expires_at)
                .await?
            {
                return Ok(());
            }
        }
        Err(contended(cell_id))
    }

    /// Remembers which slot a started run holds, so its end (a lifecycle event naming
    /// the run) gives the slot back.
    pub async fn link_run(
        &self,
        workspace: &WorkspaceId,
        run_id: &str,
        slots: &Slots,
        event_id: &EventId,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let run = FlowCell {
            owner: Some(event_id.as_str().to_owned()),
            link: Some(slots.cell.clone()),
            version: 1,
            ..FlowCell::default()
        };
        let expires_at = now_ms.saturating_add(slots.timeout_ms) / 1000 + 1;
        // A second link of the same run (a redelivery) finds the first: same content.
        self.store
            .swap(&run_cell(workspace, run_id), &run, None, expires_at)
            .await
            .map(|_| ())
    }

    /// A run of this workspace ended: if it holds a slot, the slot is free again.
    /// `true` when it held one.
    pub async fn run_ended(
        &self,
        workspace: &WorkspaceId,
        run_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let Some(run) = self.store.load(&run_cell(workspace, run_id)).await? else {
            return Ok(false);
        };
        let (Some(cell), Some(event)) = (&run.link, &run.owner) else {
            return Ok(false);
        };
        self.give_back(cell, event, now_ms).await?;
        Ok(true)
    }

    /// The cell of the event's debounce window (where its check looks).
    pub fn debounce_cell(
        &self,
        mode: &Debounce,
        subject: &Subject<'_>,
        cache: &SelectorCache,
    ) -> String {
        cell_id(subject, Mode::Debounce, mode.key.as_deref(), cache)
    }

    /// Puts the event in its key's debounce window (opening one if none is open) and
    /// makes it the window's latest unless an event that arrived later already is: when
    /// this event's window would be due. Windows count from when events arrived at the
    /// door (`arrived_ms`), not from when they are matched, so a match stage running
    /// behind does not cut a burst in two.
    pub async fn debounce(
        &self,
        mode: &Debounce,
        subject: &Subject<'_>,
        arrived_ms: i64,
        cache: &SelectorCache,
    ) -> Result<i64, StoreError> {
        let cell_id = self.debounce_cell(mode, subject, cache);
        let now_ms = subject.now_ms;
        let arrived_ms = arrived_ms.min(now_ms);
        let me = subject.event_id.as_str();
        let mut tries = Tries::new();
        while tries.next().await {
            let current = self.store.load(&cell_id).await?;
            let open = current.as_ref().filter(|c| c.value_ms > 0);
            if open.is_none() {
                self.seal(&cell_id, current.as_ref()).await?;
            }
            let since_ms = open.map_or(arrived_ms, |c| c.since_ms.min(arrived_ms));
            let mut due_ms = arrived_ms.saturating_add(mode.period.ms());
            if let Some(timeout) = &mode.timeout {
                due_ms = due_ms.min(since_ms.saturating_add(timeout.ms()));
            }
            let mut next = open.cloned().unwrap_or_default();
            if !next.waiting.iter().any(|m| m == me) {
                next.waiting.push(me.to_owned());
            }
            let excess = next.waiting.len().saturating_sub(MAX_BATCH as usize);
            next.waiting.drain(..excess);
            // An event that arrived before the window's latest joins it but does not lead it.
            if open.is_none_or(|c| due_ms >= c.value_ms) {
                next.owner = Some(me.to_owned());
                next.value_ms = due_ms;
            }
            next.since_ms = since_ms;
            next.version = current.as_ref().map_or(1, |c| c.version + 1);
            let expected = current.as_ref().map(|c| c.version);
            let expires_at = next.value_ms / 1000 + DEBOUNCE_KEEP_SECS;
            if self
                .store
                .swap(&cell_id, &next, expected, expires_at)
                .await?
            {
                return Ok(due_ms);
            }
        }
        Err(contended(&cell_id))
    }

    /// The check of a debounced event at its due time: it runs only if no later event
    /// took the window over, and closing the window for it is a compare-and-set, so an
    /// event entering at the same moment either lands before (and wins) or opens the
    /// next window.
    pub async fn fire(
        &self,
        cell_id: &str,
        event_id: &EventId,
        now_ms: i64,
    ) -> Result<Fire, StoreError> {
        let me = event_id.as_str();
        let mut tries = Tries::new();
        while tries.next().await {
            // A cell gone (kept a day past its due time) cannot say otherwise: run.
            let Some(cell) = self.store.load(cell_id).await? else {
                return Ok(Fire::Run);
            };
            if cell.owner.as_deref() != Some(me) {
                let latest = cell.owner.as_deref().and_then(|o| EventId::new(o).ok());
                return Ok(Fire::Debounced { latest });
            }
            if cell.value_ms == 0 {
                return Ok(Fire::Run);
            }
            if cell.value_ms > now_ms.saturating_add(1_000) {
                return Ok(Fire::Wait {
                    until_ms: cell.value_ms,
                });
            }
            let closed = FlowCell {
                value_ms: 0,
                version: cell.version + 1,
                ..cell
            };
            let expires_at = now_ms / 1000 + DEBOUNCE_KEEP_SECS;
            if self
                .store
                .swap(cell_id, &closed, Some(cell.version), expires_at)
                .await?
            {
                return Ok(Fire::Run);
            }
        }
        Err(contended(cell_id))
    }

    /// Before a window or batch is replaced by the next, its events are kept in a cell
    /// of their own (`{cell}#{owner}`), so a late or repeated run of it still finds them.
    async fn seal(&self, cell_id: &str, current: Option<&FlowCell>) -> Result<(), StoreError> {
        let Some(old) = current.filter(|c| !c.waiting.is_empty()) else {
            return Ok(());
        };
        let Some(owner) = &old.owner else {
            return Ok(());
        };
        let sealed = FlowCell {
            version: 1,
            ..old.clone()
        };
        let expires_at = self_expiry(old);
        // Already sealed (a retried replacement): the same content.
        self.store
            .swap(&sealed_id(cell_id, owner), &sealed, None, expires_at)
            .await
            .map(|_| ())
    }

    /// The events of a batch or a debounce window, in arrival order.
    pub async fn members(&self, batch: &BatchRef) -> Result<Vec<String>, StoreError> {
        let current = self.store.load(&batch.cell).await?;
        if let Some(cell) = current.filter(|c| c.owner.as_deref() == Some(batch.batch_id.as_str()))
        {
            return Ok(cell.waiting);
        }
        let sealed = self
            .store
            .load(&sealed_id(&batch.cell, &batch.batch_id))
            .await?;
        Ok(sealed.map_or_else(|| vec![batch.batch_id.clone()], |c| c.waiting))
    }

    /// The cell of the event's key's batches.
    pub fn batch_cell(
        &self,
        mode: &super::Batch,
        subject: &Subject<'_>,
        cache: &SelectorCache,
    ) -> String {
        cell_id(subject, Mode::Batch, mode.key.as_deref(), cache)
    }

    /// Adds the event to its key's open batch, or opens one (with it as the batch's id
    /// and first event) when none is open or the open one is full.
    ///
    /// An event is in at most one batch, however many instances match it at once and
    /// however late a redelivery comes (after its batch was replaced, say): the batch's
    /// cell and the event's membership (`{cell}#in#{event}`, naming its batch, created
    /// only if absent) are written together or not at all.
    pub async fn join_batch(
        &self,
        mode: &super::Batch,
        subject: &Subject<'_>,
        cache: &SelectorCache,
    ) -> Result<Joined, StoreError> {
        let cell_id = self.batch_cell(mode, subject, cache);
        let me = subject.event_id.as_str();
        let max = mode.max_size as usize;
        let member_id = format!("{cell_id}#in#{me}");
        // The wait for the turn counts against the budget: ten records queued behind a
        // contended join must not add up past the function's timeout.
        let mut tries = Tries::new();
        let _turn = self.join_turn(&cell_id).await;
        while tries.next().await {
            let (current, member) =
                tokio::try_join!(self.store.load(&cell_id), self.store.load(&member_id))?;
            if let Some(cell) = current
                .as_ref()
                .filter(|c| c.waiting.iter().any(|m| m == me))
            {
                return Ok(joined(&cell_id, cell, me, max));
            }
            if let Some(member) = member {
                return self.member_of(&cell_id, member, me, max).await;
            }
            let open = current
                .as_ref()
                .filter(|c| c.value_ms > 0 && c.waiting.len() < max);
            let mut next = match open {
                Some(cell) => cell.clone(),
                None => {
                    self.seal(&cell_id, current.as_ref()).await?;
                    FlowCell {
                        owner: Some(me.to_owned()),
                        value_ms: subject.now_ms.saturating_add(mode.timeout.ms()),
                        since_ms: subject.now_ms,
                        ..FlowCell::default()
                    }
                }
            };
            next.waiting.push(me.to_owned());
            next.version = current.as_ref().map_or(1, |c| c.version + 1);
            let member = FlowCell {
                owner: next.owner.clone(),
                since_ms: subject.now_ms,
                version: 1,
                ..FlowCell::default()
            };
            let batch = CellWrite {
                cell_id: &cell_id,
                cell: &next,
                expected: current.as_ref().map(|c| c.version),
                expires_at: self_expiry(&next),
            };
            let membership = CellWrite {
                cell_id: &member_id,
                cell: &member,
                expected: None,
                expires_at: self_expiry(&next),
            };
            if self.store.swap_pair(batch, membership).await? {
                return Ok(joined(&cell_id, &next, me, max));
            }
        }
        Err(contended(&cell_id))
    }

    /// Where an event that already joined a batch is: that batch as it stands (the
    /// key's cell, or its sealed copy once the key moved on).
    async fn member_of(
        &self,
        cell_id: &str,
        member: FlowCell,
        me: &str,
        max: usize,
    ) -> Result<Joined, StoreError> {
        let batch_id = member.owner.unwrap_or_else(|| me.to_owned());
        // Read again: the key's cell read before the membership may predate the join.
        let current = self.store.load(cell_id).await?;
        let batch = match current.filter(|c| c.owner.as_deref() == Some(batch_id.as_str())) {
            Some(cell) => Some(cell),
            None => self.store.load(&sealed_id(cell_id, &batch_id)).await?,
        };
        Ok(match batch {
            Some(cell) => joined(cell_id, &cell, me, max),
            // Gone with its cells' retention: it ran long ago.
            None => Joined {
                first: batch_id == me,
                filled: false,
                due_ms: 0,
                batch: BatchRef {
                    cell: cell_id.to_owned(),
                    batch_id,
                },
            },
        })
    }

    /// The batch's run starts: the batch is closed (no event joins it any more) and
    /// its events are handed over, in arrival order.
    pub async fn close_batch(&self, batch: &BatchRef) -> Result<Vec<String>, StoreError> {
        let mut tries = Tries::new();
        while tries.next().await {
            let Some(current) = self.store.load(&batch.cell).await? else {
                return self.members(batch).await;
            };
            if current.owner.as_deref() != Some(batch.batch_id.as_str()) || current.value_ms == 0 {
                return self.members(batch).await;
            }
            let closed = FlowCell {
                value_ms: 0,
                version: current.version + 1,
                ..current.clone()
            };
            if self
                .store
                .swap(
                    &batch.cell,
                    &closed,
                    Some(current.version),
                    self_expiry(&closed),
                )
                .await?
            {
                return Ok(closed.waiting);
            }
        }
        Err(contended(&batch.cell))
    }

    /// Takes the key for this event unless another event holds it: the holder, if any.
    async fn own_key(
        &self,
        cell_id: &str,
        subject: &Subject<'_>,
        period_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let me = subject.event_id.as_str();
        let mut tries = Tries::new();
        while tries.next().await {
            let current = self.store.load(cell_id).await?;
            if let Some(held) = current
                .as_ref()
                .filter(|c| c.value_ms > subject.now_ms && c.owner.as_deref() != Some(me))
            {
                return Ok(Some(held.owner.clone().unwrap_or_default()));
            }
            if current
                .as_ref()
                .is_some_and(|c| c.owner.as_deref() == Some(me))
            {
                return Ok(None);
            }
            let until_ms = subject.now_ms.saturating_add(period_ms);
            let next = FlowCell {
                value_ms: until_ms,
                owner: Some(me.to_owned()),
                since_ms: 0,
                version: current.as_ref().map_or(1, |c| c.version + 1),
                ..FlowCell::default()
            };
            let expected = current.as_ref().map(|c| c.version);
            if self
                .store
                .swap(cell_id, &next, expected, until_ms / 1000 + 1)
                .await?
            {
                return Ok(None);
            }
        }
        Err(contended(cell_id))
    }

    /// Takes the event's slot in a GCRA bucket: when it may run, or `None` when
    /// `refuse_late` and it may not run now (the bucket is left as it was).
    async fn take_slot(
        &self,
        cell_id: &str,
        rule: Gcra,
        now_ms: i64,
        refuse_late: bool,
    ) -> Result<Option<i64>, StoreError> {
        let mut tries = Tries::new();
        while tries.next().await {
            let current = self.store.load(cell_id).await?;
            let slot = rule.slot(current.as_ref().map(|c| c.value_ms), now_ms);
            if refuse_late && slot.run_at_ms > now_ms {
                return Ok(None);
            }
            let next = FlowCell {
                value_ms: slot.next_tat_ms,
                owner: None,
                since_ms: 0,
                version: current.as_ref().map_or(1, |c| c.version + 1),
                ..FlowCell::default()
            };
            let expires_at = rule.keep_until_ms(slot.next_tat_ms) / 1000 + 1;
            let expected = current.as_ref().map(|c| c.version);
            if self
                .store
                .swap(cell_id, &next, expected, expires_at)
                .await?
            {
                return Ok(Some(slot.run_at_ms));
            }
        }
        Err(contended(cell_id))
    }
}

/// Where an event landed in its key's batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub batch: BatchRef,
    /// When the batch times out (epoch ms).
    pub due_ms: i64,
    /// The event opened the batch: its message is the batch's timer.
    pub first: bool,
    /// The event filled the batch: its message runs the batch at once.
    pub filled: bool,
}

fn joined(cell_id: &str, cell: &FlowCell, me: &str, max: usize) -> Joined {
    let owner = cell.owner.clone().unwrap_or_else(|| me.to_owned());
    Joined {
        first: owner == me,
        filled: cell.waiting.len() >= max && cell.waiting.last().map(String::as_str) == Some(me),
        due_ms: cell.value_ms,
        batch: BatchRef {
            cell: cell_id.to_owned(),
            batch_id: owner,
        },
    }
}

/// A batch's or window's own cell, kept once the key's cell moves on to the next.
fn sealed_id(cell_id: &str, owner: &str) -> String {
    format!("{cell_id}#{owner}")
}

/// Batch and window cells live a day past their due time (for late or repeated runs).
fn self_expiry(cell: &FlowCell) -> i64 {
    cell.value_ms.max(cell.since_ms) / 1000 + DEBOUNCE_KEEP_SECS
}

/// Whether a slot is free for the head of a line: `Go`, or wait (`ahead`: how many
/// events are before this one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    Go,
    Wait { ahead: usize },
}

/// How long the head of a line may leave a free slot untaken before it counts as gone.
pub const STALE_HEAD_MS: i64 = 120_000;

/// Slots whose run never reported an end are free again after their timeout.
fn lapse_holders(cell: &mut FlowCell, now_ms: i64) {
    let lapsed: Vec<i64> = cell
        .holders
        .values()
        .copied()
        .filter(|until| *until <= now_ms)
        .collect();
    if let Some(latest) = lapsed.iter().max() {
        cell.holders.retain(|_, until| *until > now_ms);
        cell.since_ms = cell.since_ms.max(*latest);
    }
}

/// A slot cell lives while anything holds or waits (and a day past, for redeliveries).
fn slot_expiry(cell: &FlowCell, timeout_ms: i64, now_ms: i64) -> i64 {
    let held = cell.holders.values().copied().max().unwrap_or(now_ms);
    held.max(now_ms.saturating_add(timeout_ms)) / 1000 + DEBOUNCE_KEEP_SECS
}

/// The slot line of a rule's key for this event.
fn slots_for(rule: &SlotRule<'_>, subject: &Subject<'_>, cache: &SelectorCache) -> Slots {
    Slots {
        cell: cell_id(subject, Mode::Slots, rule.key, cache),
        limit: rule.limit,
        timeout_ms: rule.timeout_ms,
    }
}

/// The cell linking a started run to its slot.
fn run_cell(workspace: &WorkspaceId, run_id: &str) -> String {
    // A leading `#`: no subscription's cell (which starts with the workspace) can equal it.
    format!("#run#{workspace}#{run_id}")
}

fn contended(cell_id: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "flow cell {cell_id} kept changing for {}s while it was updated; retry",
        CONTENTION_BUDGET.as_secs()
    ))
}

/// The cell of one mode and key value of a subscription: tenant, subscription and mode
/// are part of the id, the key value is hashed (any size, any characters).
fn cell_id(subject: &Subject<'_>, mode: Mode, key: Option<&str>, cache: &SelectorCache) -> String {
    let value = key.map_or_else(
        || "-".to_owned(),
        |expr| key_hash(expr, subject.scope, cache),
    );
    format!(
        "{}#{}#{}#{value}",
        subject.workspace,
        subject.subscription,
        mode.as_str()
    )
}

/// The key's value as a short hash; a key that does not evaluate (a missing field)
/// counts as `null`, so such events share one bucket rather than escaping the limit.
fn key_hash(expr: &str, scope: &EventScope, cache: &SelectorCache) -> String {
    let value = cache
        .mapping(expr)
        .ok()
        .and_then(|compiled| compiled.evaluate(scope).ok())
        .and_then(|value| value.json().ok())
        .unwrap_or(serde_json::Value::Null);
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}
