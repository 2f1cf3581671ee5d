//! The Workflow Service over HTTP: one pooled rustls client per cold start, a 10 s
//! per-call timeout, and the dedup key as `Idempotency-Key` header and body field.

use async_trait::async_trait;
use reqwest::Client;
use serde::Serialize;

use super::{RaiseEventRequest, RunRef, StartRunRequest, WorkflowClient, WorkflowError};

pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct HttpWorkflowClient {
    client: Client,
    base_url: String,
}

impl HttpWorkflowClient {
    pub fn new(base_url: &str) -> Result<Self, WorkflowError> {
        // reqwest is built without a crypto provider of its own; ring is the one the SDKs
        // use too. Installing fails only when a provider is already in place, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder()
            .timeout(CALL_TIMEOUT)
            .connect_timeout(std::time::Duration::from_secs(3))
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| WorkflowError::Transport(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    async fn post<B: Serialize + Sync>(
        &self,
        path: &str,
        key: &str,
        traceparent: Option<&str>,
        body: &B,
    ) -> Result<Vec<u8>, WorkflowError> {
        let mut request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .header("Idempotency-Key", key);
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request
            .json(body)
            .send()
            .await
            .map_err(|e| WorkflowError::Transport(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| WorkflowError::Transport(e.to_string()))?;
        if !status.is_success() {
            return Err(WorkflowError::Status {
                status: status.as_u16(),
                body: truncate(&bytes),
            });
        }
        Ok(bytes.to_vec())
    }
}

fn truncate(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars().take(512).collect()
}

/// A run or step id as one URL path segment. `.`/`..` (in any percent-encoding) would be
/// resolved as dot segments and leave `/internal/runs/`, so they are refused.
fn safe_segment(value: &str) -> Result<String, WorkflowError> {
    if value.is_empty() || value.bytes().all(|b| b == b'.') {
        return Err(WorkflowError::Invalid(format!(
            "{value:?} is not a usable path id"
        )));
    }
    Ok(path_segment(value))
}

fn path_segment(value: &str) -> String {
    use std::fmt::Write;
    // Run and step ids are opaque: escape anything outside the unreserved set.
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            other => {
                let _ = write!(out, "%{other:02X}");
            }
        }
    }
    out
}

#[async_trait]
impl WorkflowClient for HttpWorkflowClient {
    async fn start_run(&self, request: &StartRunRequest) -> Result<RunRef, WorkflowError> {
        let body = self
            .post(
                "/internal/runs:start",
                &request.idempotency_key,
                request.traceparent.as_deref(),
                request,
            )
            .await?;
        RunRef::decode(&body)
    }

    async fn raise_event(&self, request: &RaiseEventRequest) -> Result<(), WorkflowError> {
        let path = format!(
            "/internal/runs/{}/steps/{}:raiseEvent",
            safe_segment(&request.run_id)?,
            safe_segment(&request.step_id)?
        );
        self.post(
            &path,
            &request.idempotency_key,
            request.traceparent.as_deref(),
            request,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("run-1_a.b~"), "run-1_a.b~");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn dot_segments_and_empty_ids_are_refused() {
        for id in ["", ".", "..", "..."] {
            assert!(safe_segment(id).is_err(), "{id:?}");
        }
        assert_eq!(safe_segment("..a").unwrap(), "..a");
        assert!(!WorkflowError::Invalid("x".into()).is_retryable());
    }
}
