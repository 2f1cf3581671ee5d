//! The one way in: every door (workflow lifecycle envelopes from the ingest queue, manual
//! fire, webhooks, schedule ticks, replays) hands its normalized event to [`IngestStage`],
//! which checks its size, archives it, enqueues it and counts it, so the doors differ
//! only in how they normalize. A lifecycle envelope that cannot be normalized is dropped
//! with its reason (redelivery cannot fix it); a valid one is only acknowledged once it
//! is on the normalized queue.

use std::sync::Arc;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::archive::{EventArchive, Retention};
use crate::audit::AuditSink;
use crate::clock::Clock;
use crate::dedup::DeadLetterReason;
use crate::event::QueuedEvent;
use crate::ids::WorkspaceId;
use crate::limits::{self, TooLarge, MAX_EVENT_MESSAGE_BYTES};
use crate::metrics::{Measurement, MetricName};
use crate::normalize::{self, LifecycleDomain, NormalizeError};
use crate::queue::{Queue, QueueError};
use crate::stage::batch::{Received, RetryMessage};
use crate::store::StoreError;
use crate::trace::TraceParent;

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

/// Why an event could not be taken in. `Queue` and `Archive` are worth a retry;
/// `TooLarge` is not (an HTTP door answers it with 413).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AcceptError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Archive(#[from] StoreError),
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
}

/// What a door does with an event the pipeline cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// Someone waits for the answer (fire, webhook, replay): refuse it before anything
    /// is written.
    Refuse,
    /// Nobody does (lifecycle envelopes, schedule ticks): record it as the event's fate,
    /// dead-lettered `too_large`, visible in its status, and do not retry.
    RecordFate,
}

/// What became of an event at the door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    Enqueued,
    /// Too large to carry: recorded as the event's fate, not enqueued.
    TooLarge(String),
}

/// An event archived and not yet enqueued: the first half of [`IngestStage::accept`],
/// for a door that decides between the two halves (a webhook refuses a replayed
/// delivery relabelled with another kind).
#[derive(Debug)]
pub struct Archived<'a> {
    queued: &'a QueuedEvent,
    body: String,
    /// Whether the archive had not seen this event id before.
    pub new: bool,
}

/// The one way in: every door (lifecycle envelopes, manual fire, webhooks, schedule
/// ticks, replays) takes its normalized event through here — size check, archive,
/// enqueue, count — so the doors differ only in what they normalize.
pub struct IngestStage {
    pub normalized_queue: Arc<dyn Queue>,
    pub archive: Arc<dyn EventArchive>,
    pub audit: Arc<dyn AuditSink>,
    pub clock: Arc<dyn Clock>,
    pub retention: Retention,
}

impl IngestStage {
    /// Archives and enqueues one event (a replay is already archived and is not counted
    /// again as ingested).
    pub async fn accept(
        &self,
        queued: &QueuedEvent,
        oversize: Oversize,
    ) -> Result<Accepted, AcceptError> {
        let body = match message_body(queued) {
            Ok(body) => body,
            Err(too_large) if oversize == Oversize::Refuse => return Err(too_large.into()),
            Err(too_large) => return self.record_too_large(queued, too_large).await,
        };
        let archived = self.archive(queued, body).await?;
        self.enqueue(archived).await?;
        Ok(Accepted::Enqueued)
    }

    async fn record_too_large(
        &self,
        queued: &QueuedEvent,
        too_large: TooLarge,
    ) -> Result<Accepted, AcceptError> {
        let detail = too_large.to_string();
        crate::archive::record_dead_letter(
            self.archive.as_ref(),
            self.retention,
            &queued.workspace_id,
            &queued.event.event_id,
            DeadLetterReason::TooLarge,
            &detail,
            self.clock.now_ms(),
        )
        .await?;
        Ok(Accepted::TooLarge(detail))
    }

    /// The first half: into the archive (`body` from [`message_body`]).
    pub async fn archive<'a>(
        &self,
        queued: &'a QueuedEvent,
        body: String,
    ) -> Result<Archived<'a>, AcceptError> {
        let now_ms = self.clock.now_ms();
        let new = queued.replay
            || self
                .archive
                .put_new(
                    &queued.workspace_id,
                    &queued.event,
                    now_ms,
                    self.retention.expires_at(now_ms),
                )
                .await?;
        Ok(Archived { queued, body, new })
    }

    /// The second half: onto the normalized queue, counted by its door.
    pub async fn enqueue(&self, archived: Archived<'_>) -> Result<(), AcceptError> {
        self.normalized_queue.send_batch(&[archived.body]).await?;
        if !archived.queued.replay {
            self.audit.measure(ingested(archived.queued));
        }
        Ok(())
    }

    /// One workflow lifecycle envelope from the ingest queue. A malformed one is dropped
    /// with its reason (redelivery cannot fix it); a valid one is acknowledged only once
    /// it is enqueued.
    pub async fn take_envelope(&self, message: Received<Value>) -> Result<(), RetryMessage> {
        let mut queued = match lifecycle_envelope(&message.body) {
            Ok(queued) => queued,
            Err(error) => {
                tracing::warn!(message_id = message.message_id, %error, "workflow envelope dropped");
                return Ok(());
            }
        };
        let trace = TraceParent::continue_or_start(message.traceparent.as_deref());
        tracing::info!(
            trace_id = trace.trace_id(),
            workspace_id = %queued.workspace_id,
            event_id = %queued.event.event_id,
            "lifecycle event received"
        );
        queued.trace = Some(trace);
        queued.received_ms = Some(self.clock.now_ms());
        match self.accept(&queued, Oversize::RecordFate).await {
            Ok(Accepted::Enqueued) => Ok(()),
            Ok(Accepted::TooLarge(detail)) => {
                tracing::error!(
                    workspace_id = %queued.workspace_id,
                    event_id = %queued.event.event_id,
                    detail,
                    "lifecycle event too large for the pipeline; recorded as dead-lettered"
                );
                Ok(())
            }
            Err(e) => Err(RetryMessage(e.to_string())),
        }
    }
}

/// The event as the normalized queue carries it, or why it cannot be carried.
pub fn message_body(queued: &QueuedEvent) -> Result<String, TooLarge> {
    limits::message_body("event", queued, MAX_EVENT_MESSAGE_BYTES)
}

/// One event accepted at a door, counted by its source type.
fn ingested(queued: &QueuedEvent) -> Measurement {
    Measurement::one(MetricName::EventsIngested)
        .by("source", queued.event.source.source_type.as_str())
        .for_workspace(queued.workspace_id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryArchive, MemoryQueue};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl AuditSink for Counted {
        fn emit(&self, _event: crate::audit::AuditEvent) {}
        fn measure(&self, _measurement: Measurement) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Door {
        stage: IngestStage,
        queue: Arc<MemoryQueue>,
        archive: Arc<MemoryArchive>,
        counted: Arc<Counted>,
    }

    fn door() -> Door {
        let queue = Arc::new(MemoryQueue::default());
        let archive = Arc::new(MemoryArchive::default());
        let counted = Arc::new(Counted::default());
        let stage = IngestStage {
            normalized_queue: queue.clone(),
            archive: archive.clone(),
            audit: counted.clone(),
            clock: Arc::new(crate::clock::ManualClock::at_ms(1_800_000_000_000)),
            retention: Retention { ttl_secs: 60 },
        };
        Door {
            stage,
            queue,
            archive,
            counted,
        }
    }

    fn fired(text_bytes: usize, replay: bool) -> QueuedEvent {
        let mut inputs = Map::new();
        inputs.insert("blob".into(), Value::String("x".repeat(text_bytes)));
        QueuedEvent {
            workspace_id: WorkspaceId::new("ws1").unwrap(),
            event: normalize::manual_fire("2026-12-04T10:00:00Z", Some("s1"), inputs, None)
                .unwrap(),
            replay,
            trace: None,
            received_ms: None,
        }
    }

    async fn archived(door: &Door, queued: &QueuedEvent) -> Option<crate::archive::ArchivedEvent> {
        door.archive
            .get(&queued.workspace_id, &queued.event.event_id)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_new_event_is_archived_enqueued_and_counted_once() {
        let door = door();
        let queued = fired(10, false);
        let accepted = door.stage.accept(&queued, Oversize::Refuse).await.unwrap();
        assert_eq!(accepted, Accepted::Enqueued);
        assert!(archived(&door, &queued).await.unwrap().event.is_some());
        assert_eq!(door.queue.sent().len(), 1);
        assert_eq!(door.counted.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_oversized_event_is_refused_at_an_http_door_before_anything_is_written() {
        let door = door();
        let queued = fired(MAX_EVENT_MESSAGE_BYTES, false);
        let refused = door.stage.accept(&queued, Oversize::Refuse).await;
        assert!(
            matches!(refused, Err(AcceptError::TooLarge(_))),
            "{refused:?}"
        );
        assert!(archived(&door, &queued).await.is_none());
        assert!(door.queue.sent().is_empty());
        assert_eq!(door.counted.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_oversized_event_from_a_queue_door_gets_its_fate_recorded_not_enqueued() {
        let door = door();
        let queued = fired(MAX_EVENT_MESSAGE_BYTES, false);
        let accepted = door
            .stage
            .accept(&queued, Oversize::RecordFate)
            .await
            .unwrap();
        assert!(matches!(accepted, Accepted::TooLarge(_)), "{accepted:?}");
        let fate = archived(&door, &queued).await.unwrap().fate.unwrap();
        assert_eq!(fate.reason, DeadLetterReason::TooLarge);
        assert!(door.queue.sent().is_empty());
    }

    #[tokio::test]
    async fn a_replay_is_enqueued_but_neither_archived_again_nor_counted() {
        let door = door();
        let queued = fired(10, true);
        let body = message_body(&queued).unwrap();
        let archived_once = door.stage.archive(&queued, body).await.unwrap();
        assert!(archived_once.new, "a replay never asks the archive");
        door.stage.enqueue(archived_once).await.unwrap();
        assert!(archived(&door, &queued).await.is_none());
        assert_eq!(door.queue.sent().len(), 1);
        assert_eq!(door.counted.0.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_same_event_again_is_archived_once_and_says_so() {
        let door = door();
        let queued = fired(10, false);
        for expected_new in [true, false] {
            let body = message_body(&queued).unwrap();
            let archived = door.stage.archive(&queued, body).await.unwrap();
            assert_eq!(archived.new, expected_new);
        }
    }

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
