//! The dispatcher: per match, in this order: audit `trigger.matched`; refuse what can
//! never be sent (no target version, unresolvable inputs); the loop guard; the dedup
//! claim; the RPC with the dedup key as idempotency key; then commit (success) or
//! release (failure). The outcome tells the Lambda whether to acknowledge the message
//! or to return it for a retry after the computed backoff.

pub mod message;
pub mod outage;

use std::sync::Arc;

use serde_json::Value;
use thiserror::Error;

use crate::audit::{AuditEvent, AuditName, AuditSink};
pub use crate::backoff::Backoff;
use crate::clock::Clock;
use crate::config::{Settings, MAX_LEASE_SECS};
use crate::dedup::{
    Claim, ClaimOutcome, ClaimRequest, DeadLetterReason, DedupKey, Ledger, LedgerEntry,
    LedgerError, LedgerStatus, Release,
};
use crate::ids::{EventId, ResumeId};
use crate::metrics::{Measurement, MetricName};
use crate::resume::{
    finish_hold, Finish, Holder, ParkOutcome, ParkStore, ParkedEvent, ResumeStore, TakeOutcome,
    TakeRequest,
};
use crate::selector::SelectorCache;
use crate::store::StoreError;
use crate::workflow::{RaiseEventRequest, StartRunRequest, WorkflowClient, WorkflowError};
pub use message::{DispatchMessage, DispatchTarget, StartDraft, WriteInputs};
pub use outage::{BreakerState, BreakerStore, Gate, LocalBreaker, OutageBreaker};

/// What happened to one dispatch message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchOutcome {
    Dispatched {
        run_id: Option<String>,
    },
    Duplicate {
        run_id: Option<String>,
    },
    DeadLettered {
        reason: DeadLetterReason,
        detail: String,
        retryable: bool,
    },
    LoopRejected {
        depth: u32,
        limit: u32,
    },
    /// Transient failure: return the message and let it come back after `delay_secs`.
    RetryLater {
        delay_secs: u32,
        reason: String,
    },
    /// A resume event that found its wait gone (`superseded_by: None`) or taken by
    /// another event: parked for the next registration of the triple.
    Parked {
        superseded_by: Option<EventId>,
    },
    /// A throttled message that came before its slot: sent again to arrive at it.
    Held {
        until_ms: i64,
    },
    /// A later event took the debounce window: this one never runs.
    Debounced {
        latest: Option<EventId>,
    },
}

impl DispatchOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            DispatchOutcome::Dispatched { .. } => "dispatched",
            DispatchOutcome::Duplicate { .. } => "duplicate",
            DispatchOutcome::DeadLettered { .. } => "dead_lettered",
            DispatchOutcome::LoopRejected { .. } => "loop_rejected",
            DispatchOutcome::RetryLater { .. } => "retry_later",
            DispatchOutcome::Parked {
                superseded_by: None,
            } => "parked",
            DispatchOutcome::Parked {
                superseded_by: Some(_),
            } => "superseded",
            DispatchOutcome::Held { .. } => "held",
            DispatchOutcome::Debounced { .. } => "debounced",
        }
    }
}

/// The dispatcher could not even record what happened; the message must be retried.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DispatchError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which delivery of the message this is and how long the worker may hold a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based (SQS `ApproximateReceiveCount`). Only paces returns that make no RPC;
    /// the retry window and the backoff of RPC failures follow the ledger.
    pub number: u32,
    /// Epoch ms when the worker will be stopped (the Lambda deadline), if known.
    pub deadline_ms: Option<i64>,
    /// Epoch ms when the message was first sent (SQS `SentTimestamp`), if known: the
    /// retry window never starts later than this, so queue retention always covers it.
    pub sent_ms: Option<i64>,
}

impl Attempt {
    pub fn first() -> Self {
        Self {
            number: 1,
            deadline_ms: None,
            sent_ms: None,
        }
    }
}

/// How a resume match got its wait (start matches have none to get).
enum Taken {
    NotResume,
    Held,
    /// Held, but a newer generation than the match named: dispatch this message.
    Retargeted(Box<DispatchMessage>),
    /// Not held: parked, with this outcome.
    Parked(DispatchOutcome),
}

/// How often a resume event that lost its generation tries a newer one.
const RETARGET_ATTEMPTS: usize = 3;

/// Resume selectors compiled by one dispatcher (only re-targeted events need them).
const SELECTOR_CACHE_CAPACITY: usize = 1_024;

/// Consecutive transient failures in one instance that engage the outage back-off.
pub const OUTAGE_THRESHOLD: u32 = 5;

#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub settings: Arc<Settings>,
    pub backoff: Backoff,
    /// The longest a claim is held when the caller has no deadline.
    pub max_lease_ms: i64,
    pub dead_letter_retention_secs: i64,
    /// How long transient failures are retried, from the first attempt.
    pub retry_window_ms: i64,
    /// How long a resume event without a live wait stays parked (0: not parked).
    pub park_ms: i64,
}

impl DispatchSettings {
    pub fn from_settings(settings: Arc<Settings>) -> Self {
        let retry_window_ms = i64::try_from(settings.dispatch_retry_window_secs)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000);
        let park_ms =
            i64::try_from(settings.resume_park_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        Self {
            backoff: Backoff {
                base_secs: 1,
                cap_secs: settings.dispatch_backoff_cap_secs,
            },
            settings,
            max_lease_ms: i64::try_from(MAX_LEASE_SECS * 1000).unwrap_or(60_000),
            dead_letter_retention_secs: crate::dedup::DEAD_LETTER_RETENTION_SECS,
            retry_window_ms,
            park_ms,
        }
    }

    /// The outage breaker these settings call for, its state kept in `store`.
    pub fn breaker(&self, store: Box<dyn BreakerStore>) -> OutageBreaker {
        OutageBreaker::new(OUTAGE_THRESHOLD, self.backoff, store)
    }
}

/// Source of jitter in `[0, 1)`.
pub type Jitter = fn() -> f64;

fn random_jitter() -> f64 {
    rand::random::<f64>()
}

pub struct Dispatcher {
    pub ledger: Arc<dyn Ledger>,
    pub workflow: Arc<dyn WorkflowClient>,
    pub resumes: Arc<dyn ResumeStore>,
    pub parked: Arc<dyn ParkStore>,
    pub audit: Arc<dyn AuditSink>,
    pub clock: Arc<dyn Clock>,
    pub settings: DispatchSettings,
    pub jitter: Jitter,
    /// Shared by every message this instance handles.
    pub breaker: OutageBreaker,
    selectors: SelectorCache,
}

impl Dispatcher {
    pub fn new(
        ledger: Arc<dyn Ledger>,
        workflow: Arc<dyn WorkflowClient>,
        resumes: Arc<dyn ResumeStore>,
        parked: Arc<dyn ParkStore>,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
        settings: DispatchSettings,
    ) -> Self {
        Self {
            ledger,
            workflow,
            resumes,
            parked,
            audit,
            clock,
            breaker: settings.breaker(Box::new(LocalBreaker::default())),
            settings,
            jitter: random_jitter,
            selectors: SelectorCache::with_capacity(SELECTOR_CACHE_CAPACITY),
        }
    }

    /// Shares the outage breaker's state through `store` (every instance the same).
    pub fn with_breaker_store(mut self, store: Box<dyn BreakerStore>) -> Self {
        self.breaker = self.settings.breaker(store);
        self
    }

    pub async fn dispatch(
        &self,
        message: &DispatchMessage,
        attempt: Attempt,
    ) -> Result<DispatchOutcome, DispatchError> {
        self.emit(AuditName::Matched, message, |e| e);
        if let Some((reason, detail)) = unsendable(message) {
            return self
                .dead_letter_unclaimed(message, reason, detail, attempt)
                .await;
        }
        let limit = self.settings.settings.fanout_limit(&message.workspace_id);
        let depth = message.event.depth;
        if depth > limit {
            return self.reject_loop(message, depth, limit, attempt).await;
        }
        // Past the window a message gets its final attempt whatever the breaker says, so
        // a long outage ends in dead letters rather than in messages that wait forever.
        let now_ms = self.clock.now_ms();
        let window_over = attempt
            .sent_ms
            .is_some_and(|sent| now_ms >= sent.saturating_add(self.settings.retry_window_ms));
        let gate = if window_over {
            Gate::Call
        } else {
            self.breaker.admit(now_ms).await
        };
        // Counted until this dispatch is done (the breaker limits calls while suspect).
        let _in_flight = (!window_over && gate == Gate::Call).then(|| self.breaker.admitted());
        if let Gate::Pace { hold_secs } = gate {
            return Ok(DispatchOutcome::RetryLater {
                delay_secs: self.outage_hold(hold_secs, attempt, now_ms),
                reason: "paced: the Workflow Service just failed and another call is trying it"
                    .to_owned(),
            });
        }
        if let Gate::Wait { hold_secs } = gate {
            let delay_secs = self.outage_hold(hold_secs, attempt, now_ms);
            self.emit(AuditName::OutageBackoff, message, |e| {
                e.with("delaySecs", delay_secs)
            });
            return Ok(DispatchOutcome::RetryLater {
                delay_secs,
                reason: "outage back-off: the Workflow Service is failing every call".to_owned(),
            });
        }
        let key = message.dedup_key();
        let claim = match self
            .ledger
            .claim(&self.claim_request(message, &key, attempt))
            .await?
        {
            ClaimOutcome::Claimed(claim) => claim,
            ClaimOutcome::Duplicate { run_id } => {
                // A worker stopped between commit and consume leaves the generation
                // held; this redelivery finishes what it started.
                self.finish_resume(message, None).await?;
                self.emit(AuditName::Deduped, message, |e| e);
                return Ok(DispatchOutcome::Duplicate { run_id });
            }
            ClaimOutcome::InFlight { lease_until_ms } => {
                let lease_left = secs_ceil(lease_until_ms - self.clock.now_ms());
                return Ok(DispatchOutcome::RetryLater {
                    delay_secs: self.delay(attempt.number).max(lease_left),
                    reason: "another worker holds the dedup claim".to_owned(),
                });
            }
        };
        let retargeted;
        let message = match self.take_wait(message, &claim).await? {
            Taken::NotResume | Taken::Held => message,
            Taken::Retargeted(to) => {
                retargeted = *to;
                &retargeted
            }
            Taken::Parked(outcome) => return Ok(outcome),
        };
        match self.call(message, &key).await {
            Ok(run_id) => {
                self.breaker.record_success(self.clock.now_ms()).await;
                self.confirm(message, &claim, run_id).await
            }
            Err(error) => {
                if error.is_retryable() && self.breaker.record_failure(self.clock.now_ms()).await {
                    tracing::warn!(
                        workspace_id = %message.workspace_id,
                        event_id = %message.event.event_id,
                        error = %error,
                        "outage back-off engaged: Workflow Service calls paused"
                    );
                }
                self.fail(message, &claim, error, attempt).await
            }
        }
    }

    /// For a resume match: holds the wait for this event before the RPC (only one event
    /// per registration ever gets past here). An event that does not get it is parked
    /// first and then looks again (a consistent read): a registration that lands after
    /// the park finds the parked event, one that landed before is found here and taken
    /// (the match may have named an older generation). Either way nothing is dropped.
    async fn take_wait(
        &self,
        message: &DispatchMessage,
        claim: &Claim,
    ) -> Result<Taken, DispatchError> {
        let DispatchTarget::Resume {
            resume_id,
            generation,
            ..
        } = &message.target
        else {
            return Ok(Taken::NotResume);
        };
        let mut outcome = self.take(message, resume_id, generation, claim).await?;
        if outcome == TakeOutcome::Taken {
            return Ok(Taken::Held);
        }
        self.park_event(message, resume_id).await?;
        let mut tried = generation.clone();
        for _ in 0..RETARGET_ATTEMPTS {
            let Some(newer) = self.newer_generation(message, resume_id, &tried).await? else {
                break;
            };
            outcome = self.take(message, resume_id, &newer, claim).await?;
            if outcome == TakeOutcome::Taken {
                let mut to = message.clone();
                if let DispatchTarget::Resume { generation, .. } = &mut to.target {
                    generation.clone_from(&newer);
                }
                return Ok(Taken::Retargeted(Box::new(to)));
            }
            tried = newer;
        }
        let parked = self
            .record_parked(message, resume_id, claim, outcome)
            .await?;
        Ok(Taken::Parked(parked))
    }

    /// The live generation of the event's wait other than `tried`, if it would take
    /// this event (same triple and workspace, selector true).
    async fn newer_generation(
        &self,
        message: &DispatchMessage,
        resume_id: &ResumeId,
        tried: &str,
    ) -> Result<Option<String>, DispatchError> {
        let Some(wait) = self.resumes.get(resume_id).await? else {
            return Ok(None);
        };
        if wait.generation == tried {
            return Ok(None);
        }
        let Some(key) = crate::matching::resume_key(&message.event) else {
            return Ok(None);
        };
        let decision = crate::matching::match_resume(
            &wait,
            &key,
            &message.workspace_id,
            &crate::selector::EventScope::new(&message.event),
            self.clock.now_secs(),
            &self.selectors,
        );
        Ok((decision == crate::matching::ResumeDecision::Matched).then_some(wait.generation))
    }

    /// After a confirmed delivery (`claim`) or a duplicate of one (`None`): the wait is
    /// marked consumed by this event and its parked copy removed. A consume that fails
    /// fails the message, so its redelivery (a duplicate) finishes it.
    async fn finish_resume(
        &self,
        message: &DispatchMessage,
        claim: Option<&Claim>,
    ) -> Result<(), DispatchError> {
        let DispatchTarget::Resume {
            resume_id,
            generation,
            ..
        } = &message.target
        else {
            return Ok(());
        };
        let consumed = match claim {
            Some(claim) => {
                self.resumes
                    .consume(resume_id, generation, Holder::Token(&claim.token))
                    .await?
            }
            // A duplicate: most find nothing held (the first delivery finished).
            None => {
                let event = &message.event.event_id;
                finish_hold(self.resumes.as_ref(), resume_id, event, Finish::Consume).await?;
                true
            }
        };
        if !consumed {
            tracing::warn!(resume_id = %resume_id, "resume wait was no longer held by this delivery when consumed");
        }
        if let Err(e) = self
            .parked
            .remove(&message.workspace_id, resume_id, &message.event.event_id)
            .await
        {
            // Harmless: a registration skips parked events the ledger calls delivered.
            tracing::warn!(resume_id = %resume_id, error = %e, "delivered event left parked");
        }
        Ok(())
    }

    /// Holds the resume wait for this event before the RPC: only one event per
    /// registration ever gets past here. The hold outlasts the retry window, so the
    /// event's own retries keep it and a crashed worker's hold lapses.
    async fn take(
        &self,
        message: &DispatchMessage,
        resume_id: &ResumeId,
        generation: &str,
        claim: &Claim,
    ) -> Result<TakeOutcome, DispatchError> {
        let now_ms = self.clock.now_ms();
        let hold_ms =
            self.settings.retry_window_ms + i64::from(self.settings.backoff.cap_secs) * 1000;
        let request = TakeRequest {
            resume_id,
            generation,
            event_id: &message.event.event_id,
            token: &claim.token,
            until_ms: now_ms.saturating_add(hold_ms),
            now_ms,
        };
        Ok(self.resumes.take(&request).await?)
    }

    /// Keeps the event for the next registration of its triple (when parking is on).
    async fn park_event(
        &self,
        message: &DispatchMessage,
        resume_id: &ResumeId,
    ) -> Result<(), DispatchError> {
        if self.settings.park_ms <= 0 {
            return Ok(());
        }
        let now_ms = self.clock.now_ms();
        let parked = ParkedEvent {
            event: (*message.event).clone(),
            parked_at_ms: now_ms,
            until_ms: now_ms.saturating_add(self.settings.park_ms),
        };
        let outcome = self
            .parked
            .park(&message.workspace_id, resume_id, &parked)
            .await?;
        if outcome == ParkOutcome::Full {
            tracing::warn!(workspace_id = %message.workspace_id, event_id = %message.event.event_id, resume_id = %resume_id, "park full; event not kept for a later registration");
        }
        Ok(())
    }

    /// The event did not get the wait: it is recorded (`parked`, or `superseded` with
    /// the winning event) until the park window ends.
    async fn record_parked(
        &self,
        message: &DispatchMessage,
        resume_id: &ResumeId,
        claim: &Claim,
        taken: TakeOutcome,
    ) -> Result<DispatchOutcome, DispatchError> {
        let winner = match taken {
            TakeOutcome::Superseded { winner } => Some(winner),
            _ => None,
        };
        let now_ms = self.clock.now_ms();
        let until_ms = now_ms.saturating_add(self.settings.park_ms);
        let release = Release::Parked {
            winner: winner.clone(),
            until_ms,
        };
        tolerate_lost_claim(self.ledger.release(claim, &release, now_ms).await)?;
        let outcome = DispatchOutcome::Parked {
            superseded_by: winner.clone(),
        };
        // Not an audit record (nothing failed), but on-call wants to see the rate.
        self.audit.measure(
            Measurement::one(MetricName::PipelineEvents)
                .by("stage", "dispatch")
                .by("outcome", outcome.as_str())
                .for_workspace(message.workspace_id.as_str()),
        );
        tracing::info!(
            workspace_id = %message.workspace_id,
            event_id = %message.event.event_id,
            resume_id = %resume_id,
            superseded_by = winner.as_ref().map(EventId::as_str),
            "resume event parked"
        );
        Ok(outcome)
    }

    /// How long a message the breaker holds waits. The hold grows with the outage, not
    /// with this message's receives, so the backlog returns soon after the service does
    /// (`outage`), as long as the queue's receive budget has room beyond what the rest of
    /// the retry window needs on the backoff schedule; then that schedule again.
    fn outage_hold(&self, hold_secs: u32, attempt: Attempt, now_ms: i64) -> u32 {
        let cap = self.settings.backoff.cap_secs;
        let room = match self.settings.settings.dispatch_max_receive_count {
            None => true,
            Some(budget) => {
                let window_end = attempt
                    .sent_ms
                    .unwrap_or(now_ms)
                    .saturating_add(self.settings.retry_window_ms);
                let left_secs = u64::try_from((window_end - now_ms).max(0) / 1000).unwrap_or(0);
                let needed = crate::config::required_receive_count(left_secs, cap);
                budget.saturating_sub(attempt.number) > needed
            }
        };
        let hold = if room {
            hold_secs
        } else {
            hold_secs.max(self.delay(attempt.number))
        };
        hold.min(cap).max(1)
    }

    /// The backoff before attempt `number + 1`, with jitter.
    fn delay(&self, number: u32) -> u32 {
        self.settings.backoff.delay_secs(number, (self.jitter)())
    }

    /// The backoff for a message that could not even be handled (ledger unavailable).
    pub fn retry_delay(&self, attempt: Attempt) -> u32 {
        self.delay(attempt.number)
    }

    fn claim_request(
        &self,
        message: &DispatchMessage,
        key: &DedupKey,
        attempt: Attempt,
    ) -> ClaimRequest {
        let now_ms = self.clock.now_ms();
        let cap = now_ms + self.settings.max_lease_ms;
        // A released item must outlive the retry window: it holds the first attempt.
        let retention = self
            .dedup_ttl()
            .max(self.settings.retry_window_ms / 1000 + i64::from(self.settings.backoff.cap_secs));
        ClaimRequest {
            workspace_id: message.workspace_id.clone(),
            key: key.clone(),
            event_id: message.event.event_id.clone(),
            target_id: message.target_id().to_owned(),
            match_kind: message.match_kind(),
            token: uuid::Uuid::new_v4().simple().to_string(),
            now_ms,
            lease_until_ms: attempt.deadline_ms.map_or(cap, |d| d.min(cap)),
            expires_at: now_ms / 1000 + retention,
        }
    }

    fn dedup_ttl(&self) -> i64 {
        i64::try_from(self.settings.settings.dedup_ttl_secs).unwrap_or(i64::MAX / 2000)
    }

    /// The Workflow Service call, timed by status class.
    async fn call(
        &self,
        message: &DispatchMessage,
        key: &DedupKey,
    ) -> Result<Option<String>, WorkflowError> {
        let started = std::time::Instant::now();
        let result = self.call_untimed(message, key).await;
        if let Some(class) = status_class(&result) {
            self.audit.measure(
                Measurement::new(
                    MetricName::WorkflowRpcLatency,
                    started.elapsed().as_secs_f64() * 1000.0,
                )
                .by("statusClass", class)
                .for_workspace(message.workspace_id.as_str()),
            );
        }
        result
    }

    async fn call_untimed(
        &self,
        message: &DispatchMessage,
        key: &DedupKey,
    ) -> Result<Option<String>, WorkflowError> {
        match &message.target {
            DispatchTarget::Start {
                workflow_version_id,
                inputs,
                ..
            } => {
                let request = StartRunRequest {
                    workspace_id: message.workspace_id.to_string(),
                    workflow_version_id: workflow_version_id.clone().unwrap_or_default(),
                    inputs: inputs.clone(),
                    idempotency_key: key.to_string(),
                    trigger_depth: message.event.depth.saturating_add(1),
                    traceparent: message.trace.as_ref().map(|t| t.child().into()),
                };
                Ok(Some(self.workflow.start_run(&request).await?.run_id))
            }
            DispatchTarget::Resume {
                run_id,
                step_id,
                event_key,
                ..
            } => {
                let request = RaiseEventRequest {
                    run_id: run_id.clone(),
                    step_id: step_id.clone(),
                    workspace_id: message.workspace_id.to_string(),
                    event_name: event_key.clone(),
                    payload: message.event.data.clone(),
                    idempotency_key: key.to_string(),
                    trigger_depth: message.event.depth.saturating_add(1),
                    traceparent: message.trace.as_ref().map(|t| t.child().into()),
                };
                self.workflow.raise_event(&request).await?;
                Ok(None)
            }
        }
    }

    async fn confirm(
        &self,
        message: &DispatchMessage,
        claim: &Claim,
        run_id: Option<String>,
    ) -> Result<DispatchOutcome, DispatchError> {
        let now_ms = self.clock.now_ms();
        let expires_at = now_ms / 1000 + self.dedup_ttl();
        match self
            .ledger
            .commit(claim, run_id.as_deref(), expires_at, now_ms)
            .await
        {
            // Taken over after our lease passed: the run exists (the key is idempotent),
            // and the new holder commits the same run id.
            Ok(()) | Err(LedgerError::ClaimLost(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if let DispatchTarget::Resume { .. } = &message.target {
            self.emit(AuditName::ResumeDelivered, message, |e| e);
            self.finish_resume(message, Some(claim)).await?;
        } else {
            let run = run_id.clone().map_or(Value::Null, Value::String);
            self.emit(AuditName::Dispatched, message, |e| e.with("runId", run));
        }
        if let Some(received_ms) = message.received_ms {
            self.audit.measure(
                Measurement::elapsed_ms(MetricName::EndToEndLatency, received_ms, now_ms)
                    .for_workspace(message.workspace_id.as_str()),
            );
        }
        Ok(DispatchOutcome::Dispatched { run_id })
    }

    async fn fail(
        &self,
        message: &DispatchMessage,
        claim: &Claim,
        error: WorkflowError,
        attempt: Attempt,
    ) -> Result<DispatchOutcome, DispatchError> {
        let retryable = error.is_retryable();
        // The ledger and audits are tenant-visible: the full error goes to the log only.
        let detail = error.safe_detail();
        tracing::warn!(
            workspace_id = %message.workspace_id,
            event_id = %message.event.event_id,
            target_id = message.target_id(),
            error = %error,
            "Workflow Service call failed"
        );
        let now_ms = self.clock.now_ms();
        let window_start = attempt.sent_ms.map_or(claim.first_attempt_ms, |sent| {
            sent.min(claim.first_attempt_ms)
        });
        let window_end = window_start.saturating_add(self.settings.retry_window_ms);
        if retryable && now_ms < window_end {
            let release = Release::Retry {
                error: detail.clone(),
            };
            tolerate_lost_claim(self.ledger.release(claim, &release, now_ms).await)?;
            // The last retry lands on the end of the window, not after it; during an
            // outage no later than the messages the breaker holds.
            let delay_secs = self
                .delay(claim.attempts)
                .min(self.breaker.current_hold_secs(now_ms).unwrap_or(u32::MAX))
                .min(secs_ceil(window_end - now_ms))
                .max(1);
            tracing::info!(
                workspace_id = %message.workspace_id,
                event_id = %message.event.event_id,
                target_id = message.target_id(),
                attempts = claim.attempts,
                delay_secs,
                "dispatch will retry"
            );
            self.emit(AuditName::RetryScheduled, message, |e| {
                e.with("attempts", claim.attempts)
                    .with("delaySecs", delay_secs)
            });
            return Ok(DispatchOutcome::RetryLater {
                delay_secs,
                reason: detail,
            });
        }
        let reason = if retryable {
            DeadLetterReason::RetriesExhausted
        } else {
            DeadLetterReason::Rejected
        };
        let release = Release::DeadLetter {
            reason,
            detail: detail.clone(),
            expires_at: now_ms / 1000 + self.settings.dead_letter_retention_secs,
            message: message.to_record(),
        };
        tolerate_lost_claim(self.ledger.release(claim, &release, now_ms).await)?;
        // Delivery failed for good: the wait is live again for the next matching event.
        if let DispatchTarget::Resume {
            resume_id,
            generation,
            ..
        } = &message.target
        {
            // Not fatal: an unreleased hold lapses by itself at the end of the window.
            if let Err(e) = self
                .resumes
                .release(resume_id, generation, Holder::Token(&claim.token))
                .await
            {
                tracing::warn!(resume_id = %resume_id, error = %e, "resume wait not given back; its hold lapses");
            }
        }
        self.emit(AuditName::DispatchFailed, message, |e| {
            e.with("reason", reason.as_str())
                .with("detail", detail.as_str())
                .with("retryable", retryable)
                .with("attempts", claim.attempts)
        });
        Ok(DispatchOutcome::DeadLettered {
            reason,
            detail,
            retryable,
        })
    }

    async fn dead_letter_unclaimed(
        &self,
        message: &DispatchMessage,
        reason: DeadLetterReason,
        detail: String,
        attempt: Attempt,
    ) -> Result<DispatchOutcome, DispatchError> {
        let expires_at = self.clock.now_secs() + self.settings.dead_letter_retention_secs;
        let mut entry = self.unclaimed_entry(
            message,
            LedgerStatus::DeadLettered,
            Some(detail.clone()),
            attempt,
            expires_at,
        );
        entry.reason = Some(reason);
        entry.message = message.to_record();
        self.ledger.record_unclaimed(&entry).await?;
        self.emit(AuditName::DispatchFailed, message, |e| {
            e.with("reason", reason.as_str())
                .with("detail", detail.as_str())
                .with("retryable", false)
        });
        Ok(DispatchOutcome::DeadLettered {
            reason,
            detail,
            retryable: false,
        })
    }

    async fn reject_loop(
        &self,
        message: &DispatchMessage,
        depth: u32,
        limit: u32,
        attempt: Attempt,
    ) -> Result<DispatchOutcome, DispatchError> {
        let reason = format!("fan-out depth {depth} exceeds the limit {limit}");
        let expires_at = self.clock.now_secs() + self.dedup_ttl();
        let entry = self.unclaimed_entry(
            message,
            LedgerStatus::LoopRejected,
            Some(reason),
            attempt,
            expires_at,
        );
        self.ledger.record_unclaimed(&entry).await?;
        self.emit(AuditName::LoopDetected, message, |e| {
            e.with("depth", depth).with("limit", limit)
        });
        Ok(DispatchOutcome::LoopRejected { depth, limit })
    }

    fn unclaimed_entry(
        &self,
        message: &DispatchMessage,
        status: LedgerStatus,
        last_error: Option<String>,
        attempt: Attempt,
        expires_at: i64,
    ) -> LedgerEntry {
        message.unclaimed_entry(
            status,
            None,
            last_error,
            attempt.number,
            self.clock.now_ms(),
            expires_at,
        )
    }

    fn emit(
        &self,
        name: AuditName,
        message: &DispatchMessage,
        extend: impl FnOnce(AuditEvent) -> AuditEvent,
    ) {
        self.audit.emit(extend(message.audit(name)));
    }
}

/// The class of a Workflow Service answer (`2xx`, `4xx`, `5xx`, `transport`,
/// `undecodable`); none for a request that was never sent.
fn status_class<T>(result: &Result<T, WorkflowError>) -> Option<&'static str> {
    match result {
        Ok(_) => Some("2xx"),
        Err(WorkflowError::Status { status, .. }) => Some(match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        }),
        Err(WorkflowError::Transport(_)) => Some("transport"),
        Err(WorkflowError::Decode(_)) => Some("undecodable"),
        Err(WorkflowError::Invalid(_)) => None,
    }
}

/// A permanent reason this message can never be sent, checked before anything else.
fn unsendable(message: &DispatchMessage) -> Option<(DeadLetterReason, String)> {
    match &message.target {
        DispatchTarget::Start {
            workflow_version_id,
            ..
        } if workflow_version_id.as_deref().is_none_or(str::is_empty) => Some((
            DeadLetterReason::NoTargetVersion,
            "start subscription has no target workflow version".to_owned(),
        )),
        DispatchTarget::Start {
            mapping_error: Some(error),
            ..
        } => Some((
            DeadLetterReason::MappingFailed,
            format!("input mapping failed: {error}"),
        )),
        _ => None,
    }
}

/// Whole seconds, rounded up, never negative.
fn secs_ceil(ms: i64) -> u32 {
    u32::try_from((ms.max(0) + 999) / 1000).unwrap_or(u32::MAX)
}

fn tolerate_lost_claim(result: Result<(), LedgerError>) -> Result<(), DispatchError> {
    match result {
        Ok(()) => Ok(()),
        Err(LedgerError::ClaimLost(key)) => {
            tracing::warn!(dedup_key = %key, "claim was taken over before release");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;
