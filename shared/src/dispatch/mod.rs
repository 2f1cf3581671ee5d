//! The dispatcher: per match, in this order: audit `trigger.matched`; refuse what can
//! never be sent (no target version, unresolvable inputs); the loop guard; the dedup
//! claim; the RPC with the dedup key as idempotency key; then commit (success) or
//! release (failure). The outcome tells the Lambda whether to acknowledge the message
//! or to return it for a retry after the computed backoff.

pub mod backoff;
pub mod message;

use std::sync::Arc;

use serde_json::Value;
use thiserror::Error;

use crate::audit::{AuditEvent, AuditName, AuditSink};
use crate::clock::Clock;
use crate::config::Settings;
use crate::dedup::{
    Claim, ClaimOutcome, ClaimRequest, DedupKey, Ledger, LedgerEntry, LedgerError, LedgerStatus,
    Release,
};
use crate::resume::ResumeStore;
use crate::workflow::{RaiseEventRequest, StartRunRequest, WorkflowClient, WorkflowError};
pub use backoff::Backoff;
pub use message::{DispatchMessage, DispatchTarget};

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
        reason: String,
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
}

impl DispatchOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            DispatchOutcome::Dispatched { .. } => "dispatched",
            DispatchOutcome::Duplicate { .. } => "duplicate",
            DispatchOutcome::DeadLettered { .. } => "dead_lettered",
            DispatchOutcome::LoopRejected { .. } => "loop_rejected",
            DispatchOutcome::RetryLater { .. } => "retry_later",
        }
    }
}

/// The dispatcher could not even record what happened; the message must be retried.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DispatchError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Which delivery of the message this is and how long the worker may hold a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based (SQS `ApproximateReceiveCount`).
    pub number: u32,
    /// Epoch ms when the worker will be stopped (the Lambda deadline), if known.
    pub deadline_ms: Option<i64>,
}

impl Attempt {
    pub fn first() -> Self {
        Self {
            number: 1,
            deadline_ms: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub settings: Arc<Settings>,
    pub backoff: Backoff,
    /// The longest a claim is held when the caller has no deadline.
    pub max_lease_ms: i64,
    pub dead_letter_retention_secs: i64,
}

impl DispatchSettings {
    pub fn from_settings(settings: Arc<Settings>) -> Self {
        Self {
            settings,
            backoff: Backoff::default(),
            max_lease_ms: 60_000,
            dead_letter_retention_secs: 30 * 86_400,
        }
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
    pub audit: Arc<dyn AuditSink>,
    pub clock: Arc<dyn Clock>,
    pub settings: DispatchSettings,
    pub jitter: Jitter,
}

impl Dispatcher {
    pub fn new(
        ledger: Arc<dyn Ledger>,
        workflow: Arc<dyn WorkflowClient>,
        resumes: Arc<dyn ResumeStore>,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
        settings: DispatchSettings,
    ) -> Self {
        Self {
            ledger,
            workflow,
            resumes,
            audit,
            clock,
            settings,
            jitter: random_jitter,
        }
    }

    pub async fn dispatch(
        &self,
        message: &DispatchMessage,
        attempt: Attempt,
    ) -> Result<DispatchOutcome, DispatchError> {
        self.emit(AuditName::Matched, message, |e| e);
        if let Some(reason) = unsendable(message) {
            return self.dead_letter_unclaimed(message, reason, attempt).await;
        }
        let limit = self.settings.settings.fanout_limit(&message.workspace_id);
        let depth = message.event.depth;
        if depth > limit {
            return self.reject_loop(message, depth, limit, attempt).await;
        }
        let key = message.dedup_key();
        let claim = match self
            .ledger
            .claim(&self.claim_request(message, &key, attempt))
            .await?
        {
            ClaimOutcome::Claimed(claim) => claim,
            ClaimOutcome::Duplicate { run_id } => {
                self.emit(AuditName::Deduped, message, |e| e);
                return Ok(DispatchOutcome::Duplicate { run_id });
            }
            ClaimOutcome::InFlight { .. } => {
                return Ok(DispatchOutcome::RetryLater {
                    delay_secs: self.delay(attempt),
                    reason: "another worker holds the dedup claim".to_owned(),
                })
            }
        };
        match self.call(message, &key).await {
            Ok(run_id) => self.confirm(message, &claim, run_id).await,
            Err(error) => self.fail(message, &claim, error, attempt).await,
        }
    }

    fn delay(&self, attempt: Attempt) -> u32 {
        self.settings
            .backoff
            .delay_secs(attempt.number, (self.jitter)())
    }

    fn claim_request(
        &self,
        message: &DispatchMessage,
        key: &DedupKey,
        attempt: Attempt,
    ) -> ClaimRequest {
        let now_ms = self.clock.now_ms();
        let cap = now_ms + self.settings.max_lease_ms;
        ClaimRequest {
            workspace_id: message.workspace_id.clone(),
            key: key.clone(),
            event_id: message.event.event_id.clone(),
            target_id: message.target_id().to_owned(),
            match_kind: message.match_kind(),
            token: uuid::Uuid::new_v4().simple().to_string(),
            now_ms,
            lease_until_ms: attempt.deadline_ms.map_or(cap, |d| d.min(cap)),
            expires_at: now_ms / 1000 + self.dedup_ttl(),
        }
    }

    fn dedup_ttl(&self) -> i64 {
        i64::try_from(self.settings.settings.dedup_ttl_secs).unwrap_or(i64::MAX / 2000)
    }

    async fn call(
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
        if let DispatchTarget::Resume { resume_id, .. } = &message.target {
            self.emit(AuditName::ResumeDelivered, message, |e| e);
            if let Err(e) = self.resumes.delete(resume_id).await {
                tracing::warn!(resume_id = %resume_id, error = %e, "resume wait not deleted after delivery; it lapses by TTL");
            }
        } else {
            let run = run_id.clone().map_or(Value::Null, Value::String);
            self.emit(AuditName::Dispatched, message, |e| e.with("runId", run));
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
        let reason = error.to_string();
        let now_ms = self.clock.now_ms();
        // `TRIGGER_DISPATCH_MAX_RETRIES` retries after the first attempt.
        if retryable && attempt.number <= self.settings.settings.dispatch_max_retries {
            tolerate_lost_claim(
                self.ledger
                    .release(
                        claim,
                        &Release::Retry {
                            error: reason.clone(),
                        },
                        now_ms,
                    )
                    .await,
            )?;
            let delay_secs = self.delay(attempt);
            tracing::warn!(
                workspace_id = %message.workspace_id,
                event_id = %message.event.event_id,
                target_id = message.target_id(),
                attempt = attempt.number,
                delay_secs,
                error = %reason,
                "dispatch failed, will retry"
            );
            return Ok(DispatchOutcome::RetryLater { delay_secs, reason });
        }
        let release = Release::DeadLetter {
            reason: reason.clone(),
            expires_at: now_ms / 1000 + self.settings.dead_letter_retention_secs,
        };
        tolerate_lost_claim(self.ledger.release(claim, &release, now_ms).await)?;
        self.emit(AuditName::DispatchFailed, message, |e| {
            e.with("reason", reason.as_str())
                .with("retryable", retryable)
        });
        Ok(DispatchOutcome::DeadLettered { reason, retryable })
    }

    async fn dead_letter_unclaimed(
        &self,
        message: &DispatchMessage,
        reason: String,
        attempt: Attempt,
    ) -> Result<DispatchOutcome, DispatchError> {
        let expires_at = self.clock.now_secs() + self.settings.dead_letter_retention_secs;
        let entry = self.unclaimed_entry(
            message,
            LedgerStatus::DeadLettered,
            Some(reason.clone()),
            attempt,
            expires_at,
        );
        self.ledger.record_unclaimed(&entry).await?;
        self.emit(AuditName::DispatchFailed, message, |e| {
            e.with("reason", reason.as_str()).with("retryable", false)
        });
        Ok(DispatchOutcome::DeadLettered {
            reason,
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
        LedgerEntry {
            workspace_id: message.workspace_id.clone(),
            key: message.dedup_key(),
            event_id: message.event.event_id.clone(),
            target_id: message.target_id().to_owned(),
            match_kind: message.match_kind(),
            status,
            claim_token: None,
            lease_until_ms: 0,
            run_id: None,
            last_error,
            attempts: attempt.number,
            expires_at,
            updated_at_ms: self.clock.now_ms(),
        }
    }

    fn emit(
        &self,
        name: AuditName,
        message: &DispatchMessage,
        extend: impl FnOnce(AuditEvent) -> AuditEvent,
    ) {
        let event = AuditEvent::new(
            name,
            message.workspace_id.as_str(),
            Some(message.event.event_id.as_str()),
        )
        .with_attrs(&message.audit_attrs());
        self.audit.emit(extend(event));
    }
}

/// A permanent reason this message can never be sent, checked before anything else.
fn unsendable(message: &DispatchMessage) -> Option<String> {
    match &message.target {
        DispatchTarget::Start {
            workflow_version_id,
            ..
        } if workflow_version_id.as_deref().is_none_or(str::is_empty) => {
            Some("start subscription has no target workflow version".to_owned())
        }
        DispatchTarget::Start {
            mapping_error: Some(error),
            ..
        } => Some(format!("input mapping failed: {error}")),
        _ => None,
    }
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
