//! The ingest stage: turns incoming signals into queued normalized events. A signal that
//! cannot be normalized is refused with its reason (redelivery cannot fix it); a valid
//! one is only acknowledged once it is on the normalized queue.

use std::sync::Arc;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::archive::{EventArchive, EventFate, Retention};
use crate::audit::AuditSink;
use crate::clock::Clock;
use crate::dedup::DeadLetterReason;
use crate::event::QueuedEvent;
use crate::ids::WorkspaceId;
use crate::limits::{self, MAX_EVENT_MESSAGE_BYTES};
use crate::metrics::{Measurement, MetricName};
use crate::normalize::{self, LifecycleDomain, NormalizeError};
use crate::queue::{Queue, QueueError};
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IngestError {
    #[error("envelope is not a JSON object")]
    NotAnObject,
    #[error("envelope has no workspace: nothing can be routed")]
    NoWorkspace,
    #[error(transparent)]
    Normalize(#[from] NormalizeError),
}

/// Normalizes a workflow lifecycle envelope (bare, or as the `data` of a CloudEvent).
pub fn lifecycle_envelope(value: &Value) -> Result<QueuedEvent, IngestError> {
    let object = value.as_object().ok_or(IngestError::NotAnObject)?;
    let envelope: &Map<String, Value> = match object.get("data") {
        Some(Value::Object(data)) if object.contains_key("specversion") => data,
        _ => object,
    };
    let event = normalize::workflow_lifecycle(envelope, LifecycleDomain::Workflow, None)?;
    let workspace = envelope
        .get("workspace")
        .and_then(Value::as_str)
        .and_then(|ws| WorkspaceId::new(ws).ok())
        .ok_or(IngestError::NoWorkspace)?;
    Ok(QueuedEvent {
        workspace_id: workspace,
        event,
        replay: false,
        trace: None,
        received_ms: None,
    })
}

/// Why an accepted envelope could not be passed on; retrying may help.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AcceptError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Archive(#[from] StoreError),
}

/// What became of a normalized lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    Enqueued,
    /// Too large to carry: recorded as the event's fate, not enqueued.
    TooLarge(String),
}

pub struct IngestStage {
    pub normalized_queue: Arc<dyn Queue>,
    pub archive: Arc<dyn EventArchive>,
    pub audit: Arc<dyn AuditSink>,
    pub clock: Arc<dyn Clock>,
    pub retention: Retention,
}

impl IngestStage {
    /// Archives and enqueues one event; one the pipeline cannot carry is recorded as
    /// dead-lettered `too_large` (visible in its status) and not retried.
    pub async fn accept(&self, queued: &QueuedEvent) -> Result<Accepted, AcceptError> {
        let now_ms = self.clock.now_ms();
        let expires_at = self.retention.expires_at(now_ms);
        let body = match limits::message_body("event", queued, MAX_EVENT_MESSAGE_BYTES) {
            Ok(body) => body,
            Err(too_large) => {
                let fate = EventFate {
                    reason: DeadLetterReason::TooLarge,
                    detail: too_large.to_string(),
                    at_ms: now_ms,
                };
                self.archive
                    .record_fate(
                        &queued.workspace_id,
                        &queued.event.event_id,
                        &fate,
                        expires_at,
                    )
                    .await?;
                return Ok(Accepted::TooLarge(fate.detail));
            }
        };
        self.archive
            .put_new(&queued.workspace_id, &queued.event, now_ms, expires_at)
            .await?;
        self.normalized_queue.send_batch(&[body]).await?;
        self.audit.measure(ingested(queued));
        Ok(Accepted::Enqueued)
    }
}

/// One event accepted at a door, counted by its source type.
pub fn ingested(queued: &QueuedEvent) -> Measurement {
    Measurement::one(MetricName::EventsIngested)
        .by("source", queued.event.source.source_type.as_str())
        .for_workspace(queued.workspace_id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bare_and_cloudevent_envelopes_normalize_with_their_workspace() {
        let envelope = json!({"workflowVersionId": "wv", "runId": "r", "workspace": "ws1",
                              "status": "completed", "occurredAt": "t", "triggerDepth": 2});
        let bare = lifecycle_envelope(&envelope).unwrap();
        assert_eq!(bare.workspace_id.as_str(), "ws1");
        assert_eq!(bare.event.depth, 2);
        let wrapped =
            lifecycle_envelope(&json!({"specversion": "1.0", "type": "x", "data": envelope}))
                .unwrap();
        assert_eq!(wrapped, bare);
    }

    #[test]
    fn malformed_envelopes_are_refused_with_a_reason() {
        assert_eq!(
            lifecycle_envelope(&json!([1])).unwrap_err(),
            IngestError::NotAnObject
        );
        let no_ws = json!({"workflowVersionId": "wv", "runId": "r", "status": "completed", "occurredAt": "t"});
        assert_eq!(
            lifecycle_envelope(&no_ws).unwrap_err(),
            IngestError::NoWorkspace
        );
        let no_run = json!({"workflowVersionId": "wv", "workspace": "w", "status": "completed", "occurredAt": "t"});
        assert!(matches!(
            lifecycle_envelope(&no_run).unwrap_err(),
            IngestError::Normalize(_)
        ));
    }
}
