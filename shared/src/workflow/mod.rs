//! The Workflow Service port: `StartRun` and `RaiseExternalEvent`, both idempotent on
//! the dedup key, and the retry classification of their failures.

pub mod http;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRunRequest {
    pub workspace_id: String,
    pub workflow_version_id: String,
    pub inputs: Map<String, Value>,
    pub idempotency_key: String,
    /// The loop-guard depth of the run being started (event depth + 1).
    pub trigger_depth: u32,
    /// The W3C `traceparent` header to send (not part of the body).
    #[serde(skip)]
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RaiseEventRequest {
    #[serde(skip)]
    pub run_id: String,
    #[serde(skip)]
    pub step_id: String,
    pub workspace_id: String,
    pub event_name: String,
    pub payload: Map<String, Value>,
    pub idempotency_key: String,
    /// The event's depth + 1, echoed on the lifecycle events the resumed run emits, so a
    /// loop through resume waits is caught like a loop of starts.
    pub trigger_depth: u32,
    /// The W3C `traceparent` header to send (not part of the body).
    #[serde(skip)]
    pub traceparent: Option<String>,
}

/// What StartRun answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRef {
    pub run_id: String,
    pub status: String,
    pub workspace_id: String,
    pub workflow_version_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

impl RunRef {
    fn is_complete(&self) -> bool {
        [
            &self.run_id,
            &self.status,
            &self.workspace_id,
            &self.workflow_version_id,
        ]
        .iter()
        .all(|f| !f.is_empty())
    }

    /// Decodes a 2xx StartRun body; anything else is a permanent decode failure.
    pub fn decode(body: &[u8]) -> Result<Self, WorkflowError> {
        let run: RunRef = serde_json::from_slice(body).map_err(|e| {
            WorkflowError::Decode(format!("StartRun response is not a RunRef: {e}"))
        })?;
        if !run.is_complete() {
            return Err(WorkflowError::Decode(
                "StartRun response has an empty required field".to_owned(),
            ));
        }
        Ok(run)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WorkflowError {
    /// No response: connect failure, timeout, broken connection.
    #[error("workflow service unreachable: {0}")]
    Transport(String),
    #[error("workflow service answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("{0}")]
    Decode(String),
    /// The request cannot be made at all (e.g. a path id that would leave its route).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl WorkflowError {
    /// What a tenant may be told: the class of failure and the status, never the
    /// service's URL, SDK text or response body (those go to the logs).
    pub fn safe_detail(&self) -> String {
        match self {
            WorkflowError::Transport(_) => "the Workflow Service could not be reached".into(),
            WorkflowError::Status { status, .. } => {
                format!("the Workflow Service answered {status}")
            }
            WorkflowError::Decode(_) => "the Workflow Service's answer could not be read".into(),
            WorkflowError::Invalid(_) => {
                "the request to the Workflow Service could not be formed (an unusable run or step id)"
                    .into()
            }
        }
    }

    /// Transport errors, 408, 429 and 5xx are worth retrying; everything else is final.
    pub fn is_retryable(&self) -> bool {
        match self {
            WorkflowError::Transport(_) => true,
            WorkflowError::Status { status, .. } => {
                matches!(status, 408 | 429) || (500..=599).contains(status)
            }
            WorkflowError::Decode(_) | WorkflowError::Invalid(_) => false,
        }
    }
}

#[async_trait]
pub trait WorkflowClient: Send + Sync {
    async fn start_run(&self, request: &StartRunRequest) -> Result<RunRef, WorkflowError>;
    async fn raise_event(&self, request: &RaiseEventRequest) -> Result<(), WorkflowError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classification_follows_the_table() {
        assert!(WorkflowError::Transport("refused".into()).is_retryable());
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert!(
                WorkflowError::Status {
                    status,
                    body: String::new()
                }
                .is_retryable(),
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 409, 422, 300] {
            assert!(
                !WorkflowError::Status {
                    status,
                    body: String::new()
                }
                .is_retryable(),
                "{status}"
            );
        }
        assert!(!WorkflowError::Decode("x".into()).is_retryable());
    }

    #[test]
    fn run_ref_decoding_is_strict_about_required_fields() {
        let ok = br#"{"runId":"r1","status":"queued","workspaceId":"w","workflowVersionId":"v"}"#;
        assert_eq!(RunRef::decode(ok).unwrap().run_id, "r1");
        assert!(!RunRef::decode(b"not json").unwrap_err().is_retryable());
        assert!(RunRef::decode(br#"{"runId":"r1"}"#).is_err());
        let empty = br#"{"runId":"","status":"q","workspaceId":"w","workflowVersionId":"v"}"#;
        assert!(RunRef::decode(empty).is_err());
    }

    #[test]
    fn safe_details_keep_the_status_and_drop_bodies_and_urls() {
        let status = WorkflowError::Status {
            status: 400,
            body: "internal detail at http://10.0.0.7/internal".into(),
        };
        assert_eq!(status.safe_detail(), "the Workflow Service answered 400");
        let transport =
            WorkflowError::Transport("error sending request for url (http://10.0.0.7/)".into());
        assert!(!transport.safe_detail().contains("http"));
    }

    #[test]
    fn raise_event_body_leaves_the_path_ids_out() {
        let req = RaiseEventRequest {
            run_id: "r".into(),
            step_id: "s".into(),
            workspace_id: "w".into(),
            event_name: "k".into(),
            payload: Map::new(),
            idempotency_key: "key".into(),
            trigger_depth: 1,
            traceparent: None,
        };
        let body = serde_json::to_value(&req).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"workspaceId": "w", "eventName": "k", "payload": {}, "idempotencyKey": "key", "triggerDepth": 1})
        );
    }
}
