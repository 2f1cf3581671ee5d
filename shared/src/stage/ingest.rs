//! The ingest stage: turns incoming signals into queued normalized events. A signal that
//! cannot be normalized is refused with its reason (redelivery cannot fix it); a valid
//! one is only acknowledged once it is on the normalized queue.

use std::sync::Arc;

use serde_json::{Map, Value};
use thiserror::Error;

use crate::event::QueuedEvent;
use crate::ids::WorkspaceId;
use crate::normalize::{self, LifecycleDomain, NormalizeError};
use crate::queue::{Queue, QueueError};

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
    })
}

pub struct IngestStage {
    pub normalized_queue: Arc<dyn Queue>,
}

impl IngestStage {
    pub async fn enqueue(&self, events: &[QueuedEvent]) -> Result<(), QueueError> {
        let bodies = events
            .iter()
            .map(|e| serde_json::to_string(e).map_err(|err| QueueError::Rejected(err.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        self.normalized_queue.send_batch(&bodies).await
    }
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
