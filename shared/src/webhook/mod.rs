//! Signed webhooks: `POST /v1/webhooks/{connectorInstanceId}` is anonymous at the
//! gateway, so every delivery is proven genuine here before anything is enqueued. A
//! verified delivery becomes a normalized event (raw body, lower-cased headers) of the
//! connector's workspace; the provider's delivery id fixes the eventId, so its retries
//! collide in the dedup ledger.

pub mod connector;
pub mod secrets;
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::audit::{AuditEvent, AuditName, AuditSink};
use crate::clock::Clock;
use crate::event::{EventKind, QueuedEvent};
use crate::ids::EventId;
use crate::limits::TooLarge;
use crate::normalize::{self, WebhookDelivery};
use crate::queue::QueueError;
use crate::stage::ingest::{self, AcceptError, IngestStage};
use crate::store::StoreError;
pub use connector::{ConnectorInstance, ConnectorStore, SignatureScheme};
pub use secrets::{SecretError, SecretResolver};
pub use verify::Rejection;

/// Largest accepted webhook body: the normalized event carries the raw body and its
/// parsed `data`, and must stay under the SQS message limit.
pub const MAX_BODY_BYTES: usize = 96 * 1024;

/// The longest connector id looked up (issued ids are `con_` + 32 hex digits; ids seeded
/// by hand stay well under this).
pub const MAX_CONNECTOR_ID_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IntakeError {
    #[error("unknown connector instance {0:?}")]
    UnknownConnector(String),
    #[error("delivery refused: {}", .0.as_str())]
    Rejected(Rejection),
    #[error("body of {0} bytes exceeds the {MAX_BODY_BYTES}-byte limit")]
    TooLarge(usize),
    /// The normalized event (raw body, parsed data, headers) would not fit the pipeline.
    #[error(transparent)]
    EventTooLarge(#[from] TooLarge),
    #[error("connector instance is misconfigured: {0}")]
    Misconfigured(String),
    /// The same signed delivery again, relabelled with another kind.
    #[error("this delivery was already received as {original}; a replay cannot change its kind")]
    Replayed { original: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl From<AcceptError> for IntakeError {
    fn from(error: AcceptError) -> Self {
        match error {
            AcceptError::Queue(e) => Self::Queue(e),
            AcceptError::Archive(e) => Self::Store(e),
            AcceptError::TooLarge(e) => Self::EventTooLarge(e),
        }
    }
}

pub struct WebhookIntake {
    pub connectors: Arc<dyn ConnectorStore>,
    pub secrets: Arc<dyn SecretResolver>,
    /// The one way in: archive, enqueue, count.
    pub intake: Arc<IngestStage>,
    pub audit: Arc<dyn AuditSink>,
    pub clock: Arc<dyn Clock>,
}

impl WebhookIntake {
    /// Verifies and enqueues one delivery; `headers` have lower-cased names.
    pub async fn receive(
        &self,
        connector_id: &str,
        headers: &HashMap<String, String>,
        body: &[u8],
    ) -> Result<EventId, IntakeError> {
        // Size first: an oversized anonymous request costs no I/O.
        if body.len() > MAX_BODY_BYTES {
            return Err(IntakeError::TooLarge(body.len()));
        }
        // An id longer than any issued one names nothing (and is no valid store key).
        if connector_id.len() > MAX_CONNECTOR_ID_BYTES {
            return Err(IntakeError::UnknownConnector(connector_id.to_owned()));
        }
        let connector = self
            .connectors
            .get(connector_id)
            .await?
            .ok_or_else(|| IntakeError::UnknownConnector(connector_id.to_owned()))?;
        let verified = match self.verify(&connector, headers, body).await {
            Ok(verified) => verified,
            Err(IntakeError::Rejected(reason)) => {
                self.audit.emit(
                    AuditEvent::new(
                        AuditName::WebhookRejected,
                        connector.workspace_id.as_str(),
                        None,
                    )
                    .with("connectorInstanceId", connector_id)
                    .with("reason", reason.as_str()),
                );
                return Err(IntakeError::Rejected(reason));
            }
            Err(other) => return Err(other),
        };
        // Unsigned timestamps (GitHub) fall back to the time of receipt.
        let received_at = self.clock.now_rfc3339();
        let occurred_at = verified.timestamp.as_deref().unwrap_or(&received_at);
        let queued = QueuedEvent {
            workspace_id: connector.workspace_id.clone(),
            event: normalize::webhook(self.delivery(
                &connector,
                &verified,
                headers,
                body,
                occurred_at,
            ))
            .map_err(|e| IntakeError::Misconfigured(e.to_string()))?,
            replay: false,
            trace: Some(crate::trace::TraceParent::continue_or_start(
                headers.get("traceparent").map(String::as_str),
            )),
            received_ms: Some(self.clock.now_ms()),
        };
        let event_id = queued.event.event_id.clone();
        let body = ingest::message_body(&queued)?;
        let archived = self.intake.archive(&queued, body).await?;
        if !archived.new {
            self.refuse_relabelled_replay(&queued).await?;
        }
        // A provider's retry is enqueued again (our earlier answer may have been lost);
        // the dedup ledger makes it start nothing new.
        self.intake.enqueue(archived).await?;
        tracing::info!(
            trace_id = queued.trace.as_ref().map(crate::trace::TraceParent::trace_id),
            workspace_id = %connector.workspace_id,
            connector_instance_id = connector_id,
            event_id = %event_id,
            "webhook accepted"
        );
        Ok(event_id)
    }

    /// A delivery seen before (same signed material) must also be the same event: a
    /// replay under another kind would fire other subscriptions.
    async fn refuse_relabelled_replay(&self, queued: &QueuedEvent) -> Result<(), IntakeError> {
        let original = self
            .intake
            .archive
            .get(&queued.workspace_id, &queued.event.event_id)
            .await?
            .and_then(|archived| archived.event)
            .map(|event| event.kind);
        match original {
            Some(kind) if kind != queued.event.kind => {
                self.audit.emit(
                    AuditEvent::new(
                        AuditName::WebhookRejected,
                        queued.workspace_id.as_str(),
                        Some(queued.event.event_id.as_str()),
                    )
                    .with("reason", "replayed")
                    .with("originalKind", kind.as_str())
                    .with("replayKind", queued.event.kind.as_str()),
                );
                Err(IntakeError::Replayed {
                    original: kind.as_str().to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    async fn verify(
        &self,
        connector: &ConnectorInstance,
        headers: &HashMap<String, String>,
        body: &[u8],
    ) -> Result<verify::Verified, IntakeError> {
        connector.validate().map_err(IntakeError::Misconfigured)?;
        let secrets = self.signing_secrets(connector).await?;
        let verified = self.check(connector, headers, body, &secrets);
        if !matches!(verified, Err(verify::Rejection::SignatureInvalid)) {
            return verified.map_err(IntakeError::Rejected);
        }
        let Some(rotated) = self.rotated_secrets(connector, &secrets).await else {
            return Err(IntakeError::Rejected(verify::Rejection::SignatureInvalid));
        };
        let verified = self.check(connector, headers, body, &rotated);
        if verified.is_ok() {
            tracing::info!(
                connector_instance_id = connector.connector_instance_id,
                "a signing secret was rotated in its store; verified with the new value"
            );
        }
        verified.map_err(IntakeError::Rejected)
    }

    /// The connector's signing secrets, as cached.
    async fn signing_secrets(
        &self,
        connector: &ConnectorInstance,
    ) -> Result<Vec<String>, IntakeError> {
        // During a rotation one of two references may already be gone: the other still
        // verifies. Only when none can be read is the delivery refused for now (503).
        let mut secrets = Vec::with_capacity(connector.secret_refs.len());
        let mut unreadable = None;
        for reference in &connector.secret_refs {
            match self.secrets.resolve(reference).await {
                Ok(secret) => secrets.push(secret),
                Err(error) => {
                    tracing::warn!(connector_instance_id = connector.connector_instance_id, %error, "a signing secret could not be read; verifying with the others");
                    unreadable = Some(error);
                }
            }
        }
        if let (true, Some(error)) = (secrets.is_empty(), unreadable) {
            return Err(error.into());
        }
        let usable = match connector.scheme {
            SignatureScheme::StandardWebhooks => {
                secrets.iter().any(|s| verify::standard_key(s).is_some())
            }
            SignatureScheme::Github => secrets.iter().any(|s| verify::github_key(s).is_some()),
            SignatureScheme::None => true,
        };
        if !usable {
            // Logged for the operator, never told to the caller.
            tracing::error!(
                connector_instance_id = connector.connector_instance_id,
                min_bytes = verify::MIN_SECRET_BYTES,
                "no usable signing secret (too short or malformed); every delivery is refused"
            );
        }
        Ok(secrets)
    }

    /// After a signature failed with `cached`: the secrets read again from their store,
    /// when one of them has a value `cached` does not hold (rotated in place), else `None`.
    async fn rotated_secrets(
        &self,
        connector: &ConnectorInstance,
        cached: &[String],
    ) -> Option<Vec<String>> {
        let mut rotated = false;
        let mut secrets = Vec::with_capacity(connector.secret_refs.len());
        for reference in &connector.secret_refs {
            let secret = match self.secrets.reread(reference).await {
                Some(Ok(secret)) => {
                    rotated |= !cached.contains(&secret);
                    Ok(secret)
                }
                _ => self.secrets.resolve(reference).await,
            };
            secrets.extend(secret.ok());
        }
        rotated.then_some(secrets)
    }

    fn check(
        &self,
        connector: &ConnectorInstance,
        headers: &HashMap<String, String>,
        body: &[u8],
        secrets: &[String],
    ) -> Result<verify::Verified, verify::Rejection> {
        match connector.scheme {
            SignatureScheme::StandardWebhooks => {
                verify::standard_webhooks(headers, body, secrets, self.clock.now_secs())
            }
            SignatureScheme::Github => verify::github(headers, body, secrets),
            SignatureScheme::None => Ok(unsigned_delivery(headers, body)),
        }
    }

    fn delivery<'a>(
        &self,
        connector: &'a ConnectorInstance,
        verified: &'a verify::Verified,
        headers: &HashMap<String, String>,
        body: &[u8],
        occurred_at: &'a str,
    ) -> WebhookDelivery<'a> {
        let mut raw_headers: BTreeMap<String, String> = headers.clone().into_iter().collect();
        let body = match std::str::from_utf8(body) {
            Ok(text) => text.to_owned(),
            Err(_) => {
                raw_headers.insert("x-custos-body-encoding".into(), "base64".into());
                base64::engine::general_purpose::STANDARD.encode(body)
            }
        };
        WebhookDelivery {
            connector_instance_id: &connector.connector_instance_id,
            delivery_id: &verified.delivery_id,
            occurred_at,
            kind: mapped_kind(connector, headers, body.as_bytes()),
            vendor: connector.vendor.clone(),
            headers: raw_headers,
            body,
        }
    }
}

/// `<prefix>.<name>` when the connector maps kinds and the result is a valid vendor
/// kind; `webhook.received` otherwise. The name comes from signed material where the
/// scheme signs it: for Standard Webhooks the JSON body's `type` (never an unsigned
/// header, which a replay could change); for GitHub (which signs only the body) the
/// `kindHeader`, whose replays under another kind are refused by the archive check.
fn mapped_kind(
    connector: &ConnectorInstance,
    headers: &HashMap<String, String>,
    body: &[u8],
) -> Option<EventKind> {
    let prefix = connector.kind_prefix.as_deref()?;
    let name = match connector.scheme {
        SignatureScheme::StandardWebhooks => serde_json::from_slice::<serde_json::Value>(body)
            .ok()?
            .get("type")?
            .as_str()?
            .to_owned(),
        SignatureScheme::Github | SignatureScheme::None => headers
            .get(&connector.kind_header.as_deref()?.to_ascii_lowercase())?
            .clone(),
    };
    match EventKind::new(format!("{prefix}.{}", name.to_ascii_lowercase())) {
        Ok(kind) => Some(kind),
        Err(e) => {
            tracing::warn!(connector_instance_id = connector.connector_instance_id, error = %e, "kind mapping failed; using webhook.received");
            None
        }
    }
}

/// An unsigned delivery's id: `webhook-id` when sent, else a hash of the body, so a
/// replayed body still collides.
fn unsigned_delivery(headers: &HashMap<String, String>, body: &[u8]) -> verify::Verified {
    let delivery_id = headers
        .get("webhook-id")
        .or_else(|| headers.get("x-github-delivery"))
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(body))));
    verify::Verified {
        delivery_id,
        timestamp: headers.get("webhook-timestamp").cloned(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
