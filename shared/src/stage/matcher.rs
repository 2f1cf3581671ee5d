//! The match stage: classify a queued event, find the start subscriptions whose
//! selector is true and the resume wait its `(runId, stepId, kind)` names, resolve input
//! mappings, and send one dispatch message per match.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use thiserror::Error;

use crate::audit::{AuditEvent, AuditName, AuditSink};
use crate::classify::classify;
use crate::clock::Clock;
use crate::dedup::{
    DeadLetterReason, Ledger, LedgerError, LedgerStatus, DEAD_LETTER_RETENTION_SECS,
};
use crate::dispatch::{DispatchMessage, DispatchTarget, StartDraft};
use crate::event::{NormalizedEvent, QueuedEvent};
use crate::flow::{
    BatchRef, Deliver, FlowGate, FlowSpec, FlowStore, Joined, Mode, Subject, Verdict,
};
use crate::ids::{EventId, ResumeId};
use crate::ids::{SubscriptionId, WorkspaceId};
use crate::limits::{self, MAX_QUEUE_MESSAGE_BYTES};
use crate::mapping;
use crate::matching::{self, ResumeDecision, SelectorFailure, StartIndex};
use crate::metrics::{Measurement, MetricName};
use crate::queue::{Queue, QueueError};
use crate::resume::{ParkOutcome, ParkStore, ParkedEvent, ResumeStore};
use crate::selector::{EvalError, EventScope, LazyScope, SelectorCache};
use crate::store::StoreError;
use crate::subscription::{Route, Subscription, SubscriptionReader};
use crate::trace::TraceParent;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

type IndexKey = (WorkspaceId, Route);
/// When an index was loaded (epoch ms), and the index.
type LoadedIndex = (i64, Arc<StartIndex>);

/// Compiled start indexes of recently seen `(workspace, route)` pairs.
#[derive(Default)]
struct IndexCache {
    entries: Mutex<HashMap<IndexKey, LoadedIndex>>,
}

impl IndexCache {
    fn get(&self, key: &IndexKey, fresh_after_ms: i64) -> Option<Arc<StartIndex>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(loaded, _)| *loaded > fresh_after_ms)
            .map(|(_, index)| Arc::clone(index))
    }

    fn put(&self, key: IndexKey, loaded_ms: i64, index: Arc<StartIndex>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, (loaded, _)| *loaded + 600_000 > loaded_ms);
        entries.insert(key, (loaded_ms, index));
    }
}

pub struct MatchStage {
    pub subscriptions: Arc<dyn SubscriptionReader>,
    pub resumes: Arc<dyn ResumeStore>,
    pub dispatch_queue: Arc<dyn Queue>,
    /// Where a match that cannot be carried is dead-lettered.
    pub ledger: Arc<dyn Ledger>,
    pub audit: Arc<dyn AuditSink>,
    pub clock: Arc<dyn Clock>,
    pub cache: SelectorCache,
    /// How long a workspace's compiled index is reused (0 = reload per event).
    pub index_ttl_ms: i64,
    indexes: IndexCache,
    /// Where resume events without a live wait wait for a registration, and how long
    /// (none: not parked).
    parking: Option<(Arc<dyn ParkStore>, i64)>,
    /// Flow control of subscriptions that have a `flow` (none: every match runs).
    flow: Option<FlowGate>,
}

/// What one event produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MatchReport {
    pub start_matches: usize,
    pub resume_matches: usize,
    /// Matches dead-lettered because their dispatch message would not fit SQS.
    pub too_large: usize,
    /// Matches flow control skipped (rate limited, idempotency key taken).
    pub flow_skipped: usize,
}

impl MatchStage {
    pub fn new(
        subscriptions: Arc<dyn SubscriptionReader>,
        resumes: Arc<dyn ResumeStore>,
        dispatch_queue: Arc<dyn Queue>,
        ledger: Arc<dyn Ledger>,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
        index_ttl_secs: u64,
    ) -> Self {
        Self {
            subscriptions,
            resumes,
            dispatch_queue,
            ledger,
            audit,
            clock,
            cache: SelectorCache::default(),
            index_ttl_ms: i64::try_from(index_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            indexes: IndexCache::default(),
            parking: None,
            flow: None,
        }
    }

    /// Applies subscriptions' flow control with cells kept in `store`.
    pub fn with_flow(mut self, store: Arc<dyn FlowStore>) -> Self {
        self.flow = Some(FlowGate::new(store));
        self
    }

    /// Parks resume events that find no live wait for `park_secs` (0: never).
    pub fn with_parking(mut self, parked: Arc<dyn ParkStore>, park_secs: u64) -> Self {
        let park_ms = i64::try_from(park_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        self.parking = (park_ms > 0).then_some((parked, park_ms));
        self
    }

    /// Matches one event, its log lines in a span carrying the event's trace id (a new
    /// trace for events queued without one).
    pub async fn handle(&self, queued: &QueuedEvent) -> Result<MatchReport, MatchError> {
        use tracing::Instrument;
        let trace = queued.trace.clone().unwrap_or_else(TraceParent::generate);
        let span = tracing::info_span!(
            "event",
            trace_id = trace.trace_id(),
            event_id = %queued.event.event_id,
            workspace_id = %queued.workspace_id,
        );
        let started = std::time::Instant::now();
        let report = self.handle_traced(queued, &trace).instrument(span).await?;
        let workspace = queued.workspace_id.as_str();
        let matches = report.start_matches + report.resume_matches;
        self.audit.measure(
            Measurement::new(MetricName::MatchesPerEvent, matches as f64).for_workspace(workspace),
        );
        self.audit.measure(
            Measurement::new(MetricName::MatchTime, started.elapsed().as_micros() as f64)
                .for_workspace(workspace),
        );
        Ok(report)
    }

    async fn handle_traced(
        &self,
        queued: &QueuedEvent,
        trace: &TraceParent,
    ) -> Result<MatchReport, MatchError> {
        let QueuedEvent {
            workspace_id,
            event,
            replay,
            ..
        } = queued;
        self.free_slot_of_ended_run(workspace_id, event).await?;
        // Built on first need: most events match without converting them to CEL.
        let scope = LazyScope::new(event);
        let arms = classify(event);
        let mut outgoing = Vec::new();
        let mut flow_skipped = 0;
        // One mapping evaluation per distinct expression for all the matches, and one
        // copy of the event that all their messages share.
        let memo = mapping::Memo::default();
        let mut shared = None;
        let mut message_of = |subscription: &Subscription| {
            let shared = shared.get_or_insert_with(|| Arc::new(event.clone()));
            // The event's CEL form is built only when a mapping reads it.
            let mapped = (!subscription.input_mapping.is_empty()).then(|| scope.get());
            start_message_with(
                workspace_id,
                shared,
                mapped,
                subscription,
                &self.cache,
                &memo,
            )
        };
        if arms.to_start {
            let matched = self
                .start_matches(workspace_id, event, &scope, *replay)
                .await?;
            for subscription in matched {
                let Some(flow) = subscription.flow.as_deref() else {
                    // Its body is written from the subscription (below): no message.
                    outgoing.push(Outgoing::Start(subscription));
                    continue;
                };
                let mut message = message_of(&subscription);
                message.received_ms = queued.received_ms;
                if !self.admit(&mut message, flow, &scope).await? {
                    flow_skipped += 1;
                    continue;
                }
                outgoing.push(Outgoing::Message(Box::new(message)));
            }
        }
        let start_matches = outgoing.len();
        if arms.to_resume {
            let resumed = self.resume_message(workspace_id, event, &scope).await?;
            outgoing.extend(
                resumed
                    .into_iter()
                    .map(|message| Outgoing::Message(Box::new(message))),
            );
        }
        let mut report = MatchReport {
            start_matches,
            resume_matches: outgoing.len() - start_matches,
            too_large: 0,
            flow_skipped,
        };
        let mut bodies = Vec::with_capacity(outgoing.len());
        let mut delayed = Vec::new();
        // The event is serialized once and shared by every match's message.
        let event_json = serde_json::to_string(event);
        for outgoing in outgoing {
            let trace = trace.child();
            let mut message = match outgoing {
                Outgoing::Message(message) => *message,
                Outgoing::Start(subscription) => {
                    let draft = StartDraft {
                        workspace_id,
                        subscription: &subscription,
                        trace: Some(&trace),
                        received_ms: queued.received_ms,
                    };
                    let mapped = (!subscription.input_mapping.is_empty()).then(|| scope.get());
                    let written = event_json
                        .as_deref()
                        .ok()
                        .and_then(|json| start_body(&draft, mapped, (&self.cache, &memo), json));
                    if let Some(body) = written {
                        bodies.push(body);
                        continue;
                    }
                    // A mapping that fails or a body too large: the message records it.
                    message_of(&subscription)
                }
            };
            message.trace = Some(trace);
            message.received_ms = queued.received_ms;
            let body = match &event_json {
                Ok(json) => message.body_with_event(json),
                Err(_) => {
                    limits::message_body("dispatch message", &message, MAX_QUEUE_MESSAGE_BYTES)
                }
            };
            match body {
                Ok(body) => match self.delay_secs(&message) {
                    Some(delay) => delayed.push((body, delay)),
                    None => bodies.push(body),
                },
                Err(too_large) => {
                    self.dead_letter_too_large(&message, &too_large.to_string())
                        .await?;
                    report.too_large += 1;
                }
            }
        }
        if !bodies.is_empty() {
            self.dispatch_queue.send_batch(&bodies).await?;
        }
        if !delayed.is_empty() {
            self.dispatch_queue.send_each_delayed(&delayed).await?;
        }
        tracing::info!(
            workspace_id = %workspace_id,
            event_id = %event.event_id,
            kind = event.kind.as_str(),
            start_matches = report.start_matches,
            resume_matches = report.resume_matches,
            "event matched"
        );
        Ok(report)
    }

    async fn start_matches(
        &self,
        workspace: &WorkspaceId,
        event: &NormalizedEvent,
        scope: &LazyScope<'_>,
        fresh_index: bool,
    ) -> Result<Vec<Arc<Subscription>>, MatchError> {
        let result = if crate::classify::addressed(event.source.source_type) {
            let Some(subscription) = self.addressed(workspace, event).await? else {
                return Ok(Vec::new());
            };
            matching::match_single(subscription, scope, &self.cache)
        } else {
            self.index(workspace, route_of(event), fresh_index)
                .await?
                .match_event(event, scope)
        };
        for failure in &result.failures {
            self.report_selector_failure(workspace, event, failure);
        }
        Ok(result.matched)
    }

    async fn addressed(
        &self,
        workspace: &WorkspaceId,
        event: &NormalizedEvent,
    ) -> Result<Option<Subscription>, MatchError> {
        let Some(id) = event
            .source
            .subscription_id
            .as_deref()
            .and_then(|id| SubscriptionId::new(id).ok())
        else {
            tracing::warn!(event_id = %event.event_id, "manual event without source.subscriptionId");
            return Ok(None);
        };
        Ok(self.subscriptions.get(workspace, &id).await?)
    }

    async fn index(
        &self,
        workspace: &WorkspaceId,
        route: Route,
        fresh: bool,
    ) -> Result<Arc<StartIndex>, MatchError> {
        let key = (workspace.clone(), route);
        let now = self.clock.now_ms();
        if let Some(index) = self
            .indexes
            .get(&key, now - self.index_ttl_ms)
            .filter(|_| !fresh)
        {
            return Ok(index);
        }
        let subscriptions = self.subscriptions.list_matchable(&key.0, &key.1).await?;
        let index = Arc::new(StartIndex::build(subscriptions, &self.cache));
        for skipped in index.skipped() {
            tracing::error!(
                workspace_id = %workspace,
                subscription_id = skipped.subscription_id,
                reason = skipped.reason,
                "stored selector does not compile; subscription skipped"
            );
        }
        if self.index_ttl_ms > 0 {
            self.indexes.put(key, now, Arc::clone(&index));
        }
        Ok(index)
    }

    fn report_selector_failure(
        &self,
        workspace: &WorkspaceId,
        event: &NormalizedEvent,
        failure: &SelectorFailure,
    ) {
        let kind = match &failure.error {
            EvalError::NotBoolean { .. } => "not_boolean",
            EvalError::TooExpensive { .. } | EvalError::TooMuchScanning { .. } => "too_expensive",
            EvalError::Execution(_) => "execution",
        };
        self.audit.measure(
            Measurement::one(MetricName::SelectorErrors)
                .by("error", kind)
                .for_workspace(workspace.as_str()),
        );
        match &failure.error {
            EvalError::NotBoolean { result_type } => self.audit.emit(
                AuditEvent::new(
                    AuditName::SelectorTypeError,
                    workspace.as_str(),
                    Some(event.event_id.as_str()),
                )
                .with("subscriptionId", failure.owner_id.as_str())
                .with("resultType", result_type.as_str()),
            ),
            EvalError::TooExpensive { .. } | EvalError::TooMuchScanning { .. } => tracing::warn!(
                workspace_id = %workspace,
                event_id = %event.event_id,
                subscription_id = failure.owner_id,
                error = %failure.error,
                "selector too expensive for this event; not evaluated, treated as no match"
            ),
            EvalError::Execution(reason) => tracing::debug!(
                workspace_id = %workspace,
                event_id = %event.event_id,
                subscription_id = failure.owner_id,
                reason,
                "selector evaluation failed; treated as no match"
            ),
        }
    }

    /// Records a match whose dispatch message SQS cannot take: final, and visible in
    /// the event's status, instead of a batch that fails until it reaches the DLQ.
    async fn dead_letter_too_large(
        &self,
        message: &DispatchMessage,
        detail: &str,
    ) -> Result<(), MatchError> {
        let reason = DeadLetterReason::TooLarge;
        let entry = message.dead_letter_entry(reason, detail, self.clock.now_ms());
        self.ledger.record_unclaimed(&entry).await?;
        self.audit.emit(
            message
                .audit(AuditName::DispatchFailed)
                .with("reason", reason.as_str())
                .with("detail", detail)
                .with("retryable", false),
        );
        Ok(())
    }

    /// A run's end (its lifecycle event) gives back the concurrency slot it held, if
    /// any: one read per ended run, a write only for runs that hold a slot.
    async fn free_slot_of_ended_run(
        &self,
        workspace: &WorkspaceId,
        event: &NormalizedEvent,
    ) -> Result<(), MatchError> {
        const ENDS: [&str; 6] = [
            "workflow.completed",
            "workflow.failed",
            "workflow.cancelled",
            "run.completed",
            "run.failed",
            "run.cancelled",
        ];
        let Some(gate) = &self.flow else {
            return Ok(());
        };
        if !ENDS.contains(&event.kind.as_str()) || event.data.contains_key("stepId") {
            return Ok(());
        }
        let Some(run_id) = event.data.get("runId").and_then(|r| r.as_str()) else {
            return Ok(());
        };
        if gate
            .run_ended(workspace, run_id, self.clock.now_ms())
            .await?
        {
            tracing::info!(workspace_id = %workspace, run_id, "run ended; its concurrency slot is free");
        }
        Ok(())
    }

    /// Records where a batched event landed and sends what its batch needs from it: the
    /// batch's first event is its timer (due at the timeout), the event that fills it
    /// runs it at once; the others wait in the batch (`batched`, naming its first event).
    async fn batched(
        &self,
        message: &mut DispatchMessage,
        joined: Joined,
        now_ms: i64,
    ) -> Result<bool, MatchError> {
        let mut entry = if joined.first {
            let mut entry = message.unclaimed_entry(
                LedgerStatus::Queued,
                None,
                None,
                0,
                now_ms,
                joined.due_ms / 1000 + DEAD_LETTER_RETENTION_SECS,
            );
            entry.lease_until_ms = joined.due_ms;
            entry
        } else {
            message.unclaimed_entry(
                LedgerStatus::Batched,
                None,
                None,
                0,
                now_ms,
                now_ms / 1000 + DEAD_LETTER_RETENTION_SECS,
            )
        };
        if !joined.first {
            entry.superseded_by = EventId::new(joined.batch.batch_id.as_str()).ok();
        }
        self.ledger.record_unclaimed(&entry).await?;
        self.audit.measure(
            Measurement::one(MetricName::FlowDecisions)
                .by("outcome", "batched")
                .for_workspace(message.workspace_id.as_str()),
        );
        let sends = joined.first || joined.filled;
        message.not_before_ms = (joined.first && !joined.filled).then_some(joined.due_ms);
        message.batch = Some(joined.batch);
        Ok(sends)
    }

    /// Whole seconds a throttled message waits in the queue (SQS's limit at most; the
    /// dispatcher holds it for the rest), `None` for a message due now.
    fn delay_secs(&self, message: &DispatchMessage) -> Option<u32> {
        let wait_ms = message.not_before_ms? - self.clock.now_ms();
        (wait_ms > 0).then(|| crate::queue::delay_secs(wait_ms))
    }

    /// Puts a match through its subscription's flow control: `false` when skipped (its
    /// fate recorded), `true` to dispatch (with `not_before_ms` set when throttled). A
    /// redelivered event finds its first decision in the ledger and keeps it, so it
    /// never takes a second slot or changes its fate.
    async fn admit(
        &self,
        message: &mut DispatchMessage,
        flow: &FlowSpec,
        scope: &LazyScope<'_>,
    ) -> Result<bool, MatchError> {
        let Some(gate) = &self.flow else {
            return Ok(true);
        };
        let now_ms = self.clock.now_ms();
        let DispatchTarget::Start {
            subscription_id, ..
        } = &message.target
        else {
            return Ok(true);
        };
        let subject = Subject {
            workspace: &message.workspace_id,
            subscription: subscription_id,
            event_id: &message.event.event_id,
            scope: scope.get(),
            now_ms,
        };
        let debounce_cell = flow
            .debounce
            .as_ref()
            .map(|mode| gate.debounce_cell(mode, &subject, &self.cache));
        let slots = gate.slots_of(flow, &subject, &self.cache);
        let me = message.event.event_id.as_str().to_owned();
        // The events a run gets: a debounce window's (deliver: all) or its batch's.
        let gathered = match (&flow.debounce, &debounce_cell, &flow.batch) {
            (Some(mode), Some(cell), _) if mode.deliver == Some(Deliver::All) => Some(BatchRef {
                cell: cell.clone(),
                batch_id: me.clone(),
            }),
            (_, _, Some(mode)) => Some(BatchRef {
                cell: gate.batch_cell(mode, &subject, &self.cache),
                batch_id: me.clone(),
            }),
            _ => None,
        };
        let known = known_decision(self, message, now_ms).await?;
        if let (Some(mode), None) = (&flow.batch, &known) {
            let joined = gate.join_batch(mode, &subject, &self.cache).await?;
            return self.batched(message, joined, now_ms).await;
        }
        if let Some(entry) = known {
            let waiting = matches!(
                entry.status,
                LedgerStatus::Queued | LedgerStatus::Debouncing
            );
            if waiting && entry.lease_until_ms > now_ms {
                message.not_before_ms = Some(entry.lease_until_ms);
            }
            message.debounce_cell = debounce_cell;
            message.slots = slots;
            message.batch = gathered;
            return Ok(!entry.status.is_skip() && entry.status != LedgerStatus::Batched);
        }
        let verdict = match &flow.debounce {
            Some(mode) => {
                let arrived_ms = message.received_ms.unwrap_or(now_ms);
                let due_ms = gate
                    .debounce(mode, &subject, arrived_ms, &self.cache)
                    .await?;
                Verdict::Run {
                    // A grace after the due time lets events that arrived before it but
                    // are matched a little later still join the window.
                    not_before_ms: Some(due_ms.max(now_ms) + DEBOUNCE_GRACE_MS),
                    slots: None,
                }
            }
            None => gate.decide(flow, &subject, &self.cache).await?,
        };
        let workspace = message.workspace_id.as_str();
        let (entry, admitted) = match verdict {
            Verdict::Run {
                not_before_ms,
                slots,
            } => {
                message.not_before_ms = not_before_ms;
                message.slots = slots;
                message.batch = gathered;
                let waiting = match debounce_cell {
                    Some(_) => LedgerStatus::Debouncing,
                    None => LedgerStatus::Queued,
                };
                message.debounce_cell = debounce_cell;
                let until_ms = not_before_ms.unwrap_or(now_ms);
                let mut entry = message.unclaimed_entry(
                    waiting,
                    None,
                    None,
                    0,
                    now_ms,
                    until_ms / 1000 + DEAD_LETTER_RETENTION_SECS,
                );
                entry.lease_until_ms = until_ms;
                let outcome = if not_before_ms.is_some() {
                    "delayed"
                } else {
                    "admitted"
                };
                self.audit.measure(
                    Measurement::one(MetricName::FlowDecisions)
                        .by("outcome", outcome)
                        .for_workspace(workspace),
                );
                (entry, true)
            }
            Verdict::Skip {
                mode,
                detail,
                owner,
            } => {
                let status = match mode {
                    Mode::RateLimit | Mode::Throttle => LedgerStatus::RateLimited,
                    Mode::Idempotency => LedgerStatus::IdempotencySkipped,
                    Mode::Debounce => LedgerStatus::Debounced,
                    Mode::Slots => LedgerStatus::SingletonSkipped,
                    Mode::Batch => LedgerStatus::Batched,
                };
                let mut entry = message.unclaimed_entry(
                    status,
                    None,
                    Some(detail),
                    0,
                    now_ms,
                    now_ms / 1000 + DEAD_LETTER_RETENTION_SECS,
                );
                entry.superseded_by = owner;
                self.audit.measure(
                    Measurement::one(MetricName::FlowDecisions)
                        .by("outcome", status.as_str())
                        .for_workspace(workspace),
                );
                tracing::info!(
                    workspace_id = workspace,
                    event_id = %message.event.event_id,
                    subscription_id = %subscription_id,
                    fate = status.as_str(),
                    "flow control skipped the match"
                );
                (entry, false)
            }
        };
        self.ledger.record_unclaimed(&entry).await?;
        Ok(admitted)
    }

    async fn resume_message(
        &self,
        workspace: &WorkspaceId,
        event: &NormalizedEvent,
        scope: &LazyScope<'_>,
    ) -> Result<Option<DispatchMessage>, MatchError> {
        let Some(key) = matching::resume_key(event) else {
            return Ok(None);
        };
        let resume_id = key.resume_id();
        // Built at most once, on the path that sends or parks the event.
        let message = |generation: String| {
            DispatchMessage::new(
                workspace.clone(),
                Arc::new(event.clone()),
                DispatchTarget::Resume {
                    resume_id: resume_id.clone(),
                    run_id: key.run_id.clone(),
                    step_id: key.step_id.clone(),
                    event_key: key.event_key.clone(),
                    generation,
                },
            )
        };
        let first = self.resumes.get(&resume_id).await?;
        match self.decide(first.as_ref(), &key, workspace, scope) {
            Decided::Live(generation) => return Ok(Some(message(generation))),
            Decided::Refused(decision) => {
                self.refused(workspace, event, &resume_id, &decision);
                return Ok(None);
            }
            // A redelivery of the event that resumed it: nothing left to do.
            Decided::Consumed(winner) if winner == event.event_id => return Ok(None),
            Decided::Early | Decided::Consumed(_) => {}
        }
        let Some(receipt) = self.park(workspace, event, &resume_id).await? else {
            return Ok(None);
        };
        // Parked before this second look (a consistent read), so a registration either
        // landed before it and is seen here, or lands after the park and finds the
        // parked event itself: an early event never falls between the two.
        let again = self.resumes.get(&resume_id).await?;
        let winner = match self.decide(again.as_ref(), &key, workspace, scope) {
            Decided::Live(generation) => return Ok(Some(message(generation))),
            Decided::Consumed(winner) if winner == event.event_id => return Ok(None),
            Decided::Consumed(winner) => Some(winner),
            Decided::Early | Decided::Refused(_) => None,
        };
        self.record_park(&message(String::new()), receipt, winner)
            .await?;
        Ok(None)
    }

    /// What the stored wait (if any) means for this event.
    fn decide(
        &self,
        wait: Option<&crate::resume::ResumeWait>,
        key: &crate::resume::ResumeKey,
        workspace: &WorkspaceId,
        scope: &LazyScope<'_>,
    ) -> Decided {
        let Some(wait) = wait else {
            return Decided::Early;
        };
        // Another event of this workspace already resumed this registration: this one
        // lost the race; recorded with the winner, and kept for a re-registration.
        if let Some(winner) = wait.consumed_by.clone().filter(|_| {
            wait.workspace_id.as_ref() == Some(workspace) && wait.expires_at > self.clock.now_secs()
        }) {
            return Decided::Consumed(winner);
        }
        let decision = matching::match_resume(
            wait,
            key,
            workspace,
            scope.get(),
            self.clock.now_secs(),
            &self.cache,
        );
        match decision {
            ResumeDecision::Matched => Decided::Live(wait.generation.clone()),
            // No live wait of this workspace: the event may have come early.
            ResumeDecision::Lapsed | ResumeDecision::OtherWorkspace => Decided::Early,
            other => Decided::Refused(other),
        }
    }

    fn refused(
        &self,
        workspace: &WorkspaceId,
        event: &NormalizedEvent,
        resume_id: &ResumeId,
        decision: &ResumeDecision,
    ) {
        if let ResumeDecision::SelectorFailed(EvalError::NotBoolean { result_type }) = decision {
            self.audit.emit(
                AuditEvent::new(
                    AuditName::SelectorTypeError,
                    workspace.as_str(),
                    Some(event.event_id.as_str()),
                )
                .with("resumeId", resume_id.as_str())
                .with("resultType", result_type.as_str()),
            );
        }
        tracing::info!(
            workspace_id = %workspace,
            event_id = %event.event_id,
            resume_id = %resume_id,
            decision = ?decision,
            "resume wait not taken"
        );
    }

    /// Keeps a resume event that found no live wait for the next registration of its
    /// triple; `None` when parking is off.
    async fn park(
        &self,
        workspace: &WorkspaceId,
        event: &NormalizedEvent,
        resume_id: &ResumeId,
    ) -> Result<Option<ParkReceipt>, MatchError> {
        let Some((parked, park_ms)) = &self.parking else {
            return Ok(None);
        };
        let now_ms = self.clock.now_ms();
        let until_ms = now_ms.saturating_add(*park_ms);
        let entry = ParkedEvent {
            event: event.clone(),
            parked_at_ms: now_ms,
            until_ms,
        };
        let outcome = parked.park(workspace, resume_id, &entry).await?;
        Ok(Some(ParkReceipt {
            now_ms,
            until_ms,
            kept: outcome != ParkOutcome::Full,
        }))
    }

    /// Records a parked event (`parked` until the window ends, or `superseded` by the
    /// event that consumed the wait) so its status says so.
    async fn record_park(
        &self,
        message: &DispatchMessage,
        receipt: ParkReceipt,
        winner: Option<EventId>,
    ) -> Result<(), MatchError> {
        let status = match winner {
            Some(_) => LedgerStatus::Superseded,
            None => LedgerStatus::Parked,
        };
        let ParkReceipt {
            now_ms,
            until_ms,
            kept,
        } = receipt;
        let mut entry = message.unclaimed_entry(
            status,
            None,
            (!kept).then(|| "the triple already holds the most parked events; not kept".to_owned()),
            0,
            now_ms,
            until_ms / 1000 + DEAD_LETTER_RETENTION_SECS,
        );
        entry.superseded_by = winner;
        entry.lease_until_ms = if kept { until_ms } else { now_ms };
        self.ledger.record_unclaimed(&entry).await?;
        Ok(())
    }
}

/// How long a debounced event's check waits past its window's due time.
const DEBOUNCE_GRACE_MS: i64 = 2_000;

/// The flow decision an earlier delivery of this match recorded, if any.
async fn known_decision(
    stage: &MatchStage,
    message: &DispatchMessage,
    now_ms: i64,
) -> Result<Option<crate::dedup::LedgerEntry>, MatchError> {
    Ok(stage
        .ledger
        .get(&message.workspace_id, &message.dedup_key())
        .await?
        .filter(|entry| entry.expires_at * 1000 > now_ms))
}

/// What parking an event did.
#[derive(Debug, Clone, Copy)]
struct ParkReceipt {
    now_ms: i64,
    until_ms: i64,
    /// `false`: the triple was full and the event was not kept.
    kept: bool,
}

/// What a stored wait means for a resume event.
enum Decided {
    /// A live wait of this workspace that takes the event: this generation.
    Live(String),
    /// The registration was already resumed by this event of the workspace.
    Consumed(EventId),
    /// No live wait of this workspace (yet).
    Early,
    /// A live wait that does not take the event (selector false or failing).
    Refused(ResumeDecision),
}

/// The dispatch message of one start match, with its `inputMapping` resolved (or why
/// it could not be).
pub fn start_message(
    workspace: &WorkspaceId,
    event: &Arc<NormalizedEvent>,
    scope: &EventScope,
    subscription: &Subscription,
    cache: &SelectorCache,
) -> DispatchMessage {
    start_message_with(
        workspace,
        event,
        Some(scope),
        subscription,
        cache,
        &mapping::Memo::default(),
    )
}

/// [`start_message`] sharing mapping results with the event's other matches (`memo`);
/// `scope` may be `None` for a subscription without a mapping (nothing reads it).
pub fn start_message_with(
    workspace: &WorkspaceId,
    event: &Arc<NormalizedEvent>,
    scope: Option<&EventScope>,
    subscription: &Subscription,
    cache: &SelectorCache,
    memo: &mapping::Memo,
) -> DispatchMessage {
    let resolved = match scope {
        Some(scope) => mapping::resolve_with(&subscription.input_mapping, scope, cache, memo),
        None if subscription.input_mapping.is_empty() => Ok(Default::default()),
        None => Err(no_scope()),
    };
    let (inputs, mapping_error) = match resolved {
        Ok(inputs) => (inputs, None),
        Err(e) => (Default::default(), Some(e.to_string())),
    };
    DispatchMessage::new(
        workspace.clone(),
        Arc::clone(event),
        DispatchTarget::Start {
            subscription_id: subscription.subscription_id.clone(),
            workflow_id: subscription.workflow_id.clone(),
            workflow_version_id: subscription.target_workflow_version_id.clone(),
            inputs,
            mapping_error,
        },
    )
}

/// The queue body of a start match without flow control, written straight from its
/// subscription (see [`StartDraft`]): the text [`start_message_with`] and
/// [`DispatchMessage::body_with_event`] make, or `None` when only the message can say
/// what happens (a mapping that fails, a body too large). `scope` as there.
pub fn start_body(
    draft: &StartDraft<'_>,
    scope: Option<&EventScope>,
    (cache, memo): (&SelectorCache, &mapping::Memo),
    event_json: &str,
) -> Option<String> {
    let mapping = &draft.subscription.input_mapping;
    let inputs = |out: &mut String| match scope {
        Some(scope) => mapping::write_with(mapping, scope, cache, memo, out),
        None if mapping.is_empty() => {
            out.push_str("{}");
            Ok(())
        }
        None => Err(no_scope()),
    };
    draft.body_with_event(event_json, &inputs)
}

fn no_scope() -> mapping::MappingError {
    mapping::MappingError {
        path: String::new(),
        reason: "no event scope to resolve the mapping over".to_owned(),
        too_expensive: false,
    }
}

/// A match on its way to the queue: a start match without flow control is written
/// from its subscription, every other match from its message.
enum Outgoing {
    Start(Arc<Subscription>),
    Message(Box<DispatchMessage>),
}

/// Connector-sourced events go to that connector's subscriptions; others by source type.
fn route_of(event: &NormalizedEvent) -> Route {
    match &event.source.connector_instance_id {
        Some(connector) => Route::Connector(connector.clone()),
        None => Route::SourceType(event.source.source_type),
    }
}

#[cfg(test)]
mod tests;
