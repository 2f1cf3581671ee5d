//! Every API error is `application/problem+json` with a stable `code` from one closed
//! table, so clients can branch on it; nothing outside the table can be emitted.

use serde_json::{Map, Value};

/// The closed table of problem codes: `(code, status, title)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    SubscriptionNotFound,
    SubscriptionConflict,
    SubscriptionDeleted,
    ResumeWorkspaceRequired,
    ResumeTtlInvalid,
    SelectorInvalid,
    SelectorTooExpensive,
    SelectorTypeError,
    DispatchFailed,
    DedupDuplicate,
    LoopDetected,
    BadRequest,
    SubscriptionNotFireable,
    SubscriptionReadUnsupported,
    ResumeReadUnsupported,
    PayloadTooLarge,
    EventTooLarge,
    EventNotFound,
    EventNotReplayable,
    DeadLetterNotFound,
    DeadLetterNotReplayable,
    RouteNotFound,
    MethodNotAllowed,
    CallContextMissing,
    CallContextMalformed,
    PermissionDenied,
    WorkspaceMismatch,
    WebhookRouteNotFound,
    WebhookSignatureMissing,
    WebhookSignatureInvalid,
    WebhookTimestampOutOfTolerance,
    WebhookReplayed,
    ConnectorNotFound,
    ConnectorConflict,
    ConnectorInvalid,
    ConnectorNotUsable,
    ConnectorSecretInvalid,
    ScheduleInvalid,
    FlowInvalid,
    Internal,
    Unavailable,
}

pub const ALL_CODES: &[Code] = &[
    Code::SubscriptionNotFound,
    Code::SubscriptionConflict,
    Code::SubscriptionDeleted,
    Code::ResumeWorkspaceRequired,
    Code::ResumeTtlInvalid,
    Code::SelectorInvalid,
    Code::SelectorTooExpensive,
    Code::SelectorTypeError,
    Code::DispatchFailed,
    Code::DedupDuplicate,
    Code::LoopDetected,
    Code::BadRequest,
    Code::SubscriptionNotFireable,
    Code::SubscriptionReadUnsupported,
    Code::ResumeReadUnsupported,
    Code::PayloadTooLarge,
    Code::EventTooLarge,
    Code::EventNotFound,
    Code::EventNotReplayable,
    Code::DeadLetterNotFound,
    Code::DeadLetterNotReplayable,
    Code::RouteNotFound,
    Code::MethodNotAllowed,
    Code::CallContextMissing,
    Code::CallContextMalformed,
    Code::PermissionDenied,
    Code::WorkspaceMismatch,
    Code::WebhookRouteNotFound,
    Code::WebhookSignatureMissing,
    Code::WebhookSignatureInvalid,
    Code::WebhookTimestampOutOfTolerance,
    Code::WebhookReplayed,
    Code::ConnectorNotFound,
    Code::ConnectorConflict,
    Code::ConnectorInvalid,
    Code::ConnectorNotUsable,
    Code::ConnectorSecretInvalid,
    Code::ScheduleInvalid,
    Code::FlowInvalid,
    Code::Internal,
    Code::Unavailable,
];

impl Code {
    pub fn as_str(self) -> &'static str {
        self.row().0
    }

    pub fn status(self) -> u16 {
        self.row().1
    }

    pub fn title(self) -> &'static str {
        self.row().2
    }

    fn row(self) -> (&'static str, u16, &'static str) {
        match self {
            Code::SubscriptionNotFound => (
                "trigger.subscription_not_found",
                404,
                "Subscription not found",
            ),
            Code::SubscriptionConflict => (
                "trigger.subscription_conflict",
                412,
                "Subscription changed since it was read",
            ),
            Code::SubscriptionDeleted => (
                "trigger.subscription_deleted",
                409,
                "Subscription is deleted",
            ),
            Code::ResumeWorkspaceRequired => (
                "resume.workspace_required",
                422,
                "A resume wait needs the workspace it belongs to",
            ),
            Code::ResumeTtlInvalid => (
                "resume.ttl_invalid",
                422,
                "The wait's ttl is not a usable duration",
            ),
            Code::SelectorInvalid => (
                "trigger.selector_invalid",
                422,
                "Selector failed to compile",
            ),
            Code::SelectorTooExpensive => (
                "trigger.selector_too_expensive",
                422,
                "Selector could do too much work per event",
            ),
            Code::SelectorTypeError => (
                "trigger.selector_type_error",
                422,
                "Selector did not evaluate to a boolean",
            ),
            Code::DispatchFailed => (
                "trigger.dispatch_failed",
                502,
                "Dispatch to the Workflow Service failed",
            ),
            Code::DedupDuplicate => ("trigger.dedup_duplicate", 409, "Duplicate request"),
            Code::LoopDetected => ("trigger.loop_detected", 409, "Fan-out loop detected"),
            Code::BadRequest => ("trigger.api.bad_request", 400, "Bad request"),
            Code::SubscriptionNotFireable => (
                "trigger.api.subscription_not_fireable",
                409,
                "Subscription is not fireable",
            ),
            Code::SubscriptionReadUnsupported => (
                "trigger.api.subscription_read_unsupported",
                501,
                "Subscription read is not supported by this backend",
            ),
            Code::ResumeReadUnsupported => (
                "trigger.api.resume_read_unsupported",
                501,
                "Resume read is not supported by this backend",
            ),
            Code::PayloadTooLarge => (
                "trigger.api.payload_too_large",
                413,
                "Request body too large",
            ),
            Code::EventTooLarge => (
                "trigger.event_too_large",
                413,
                "Event too large for the pipeline",
            ),
            Code::EventNotFound => ("trigger.event_not_found", 404, "Event not found"),
            Code::EventNotReplayable => (
                "trigger.event_not_replayable",
                409,
                "Only the event's fate was archived, not the event",
            ),
            Code::DeadLetterNotFound => {
                ("trigger.deadletter_not_found", 404, "Dead letter not found")
            }
            Code::DeadLetterNotReplayable => (
                "trigger.deadletter_not_replayable",
                409,
                "Dead letter is not (or no longer) replayable",
            ),
            Code::RouteNotFound => ("trigger.api.route_not_found", 404, "No such route"),
            Code::MethodNotAllowed => ("trigger.api.method_not_allowed", 405, "Method not allowed"),
            Code::CallContextMissing => ("callctx_missing", 401, "Caller identity missing"),
            Code::CallContextMalformed => ("callctx_malformed", 400, "Caller identity malformed"),
            Code::PermissionDenied => ("permission_denied", 403, "Permission denied"),
            Code::WorkspaceMismatch => ("workspace_mismatch", 403, "Workspace mismatch"),
            Code::WebhookRouteNotFound => {
                ("webhook-route-not-found", 404, "Unknown connector instance")
            }
            Code::WebhookSignatureMissing => (
                "trigger.webhook.signature_missing",
                401,
                "Webhook signature missing",
            ),
            Code::WebhookSignatureInvalid => (
                "trigger.webhook.signature_invalid",
                401,
                "Webhook signature invalid",
            ),
            Code::WebhookTimestampOutOfTolerance => (
                "trigger.webhook.timestamp_out_of_tolerance",
                401,
                "Webhook timestamp outside the tolerance",
            ),
            Code::WebhookReplayed => (
                "trigger.webhook.replayed",
                409,
                "Webhook delivery replayed under another kind",
            ),
            Code::ConnectorNotFound => (
                "trigger.connector_not_found",
                404,
                "Connector instance not found",
            ),
            Code::ConnectorConflict => (
                "trigger.connector_conflict",
                412,
                "Connector instance changed since it was read",
            ),
            Code::ConnectorInvalid => (
                "trigger.connector_invalid",
                422,
                "Connector instance could not verify deliveries",
            ),
            Code::ConnectorNotUsable => (
                "trigger.connector_not_usable",
                422,
                "Connector instance is not one of this workspace's",
            ),
            Code::ConnectorSecretInvalid => (
                "trigger.connector.secret_invalid",
                422,
                "Connector secret reference is not usable",
            ),
            Code::ScheduleInvalid => ("trigger.schedule_invalid", 422, "Schedule is not usable"),
            Code::FlowInvalid => ("trigger.flow_invalid", 422, "Flow control is not usable"),
            Code::Internal => ("trigger.api.internal_error", 500, "Internal error"),
            Code::Unavailable => (
                "trigger.api.unavailable",
                503,
                "Service temporarily unavailable",
            ),
        }
    }

    /// `https://errors.custos.dev/` + the code with `.` turned into `/`.
    pub fn type_uri(self) -> String {
        format!(
            "https://errors.custos.dev/{}",
            self.as_str().replace('.', "/")
        )
    }
}

/// One problem response.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub code: Code,
    pub detail: String,
    pub extensions: Map<String, Value>,
    /// Response headers the answer needs (`Allow` on a 405).
    pub headers: Vec<(&'static str, String)>,
}

impl Problem {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            extensions: Map::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    /// The JSON body; `instance` is the request path.
    pub fn body(&self, instance: &str) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), self.code.type_uri().into());
        body.insert("title".into(), self.code.title().into());
        body.insert("status".into(), self.code.status().into());
        body.insert("detail".into(), self.detail.clone().into());
        body.insert("instance".into(), instance.into());
        body.insert("code".into(), self.code.as_str().into());
        for (key, value) in &self.extensions {
            if !value.is_null() {
                body.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        Value::Object(body)
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(error: crate::store::StoreError) -> Self {
        if let crate::store::StoreError::Conflict(_) = error {
            return Problem::new(
                Code::SubscriptionConflict,
                "the subscription changed since its ETag was read; read it again",
            );
        }
        tracing::error!(%error, "store failure behind an API call");
        Problem::new(
            Code::Unavailable,
            "a backing store is unavailable; retry later",
        )
    }
}

impl From<crate::dedup::LedgerError> for Problem {
    fn from(error: crate::dedup::LedgerError) -> Self {
        tracing::error!(%error, "ledger failure behind an API call");
        Problem::new(
            Code::Unavailable,
            "the dedup ledger is unavailable; retry later",
        )
    }
}

impl From<crate::queue::QueueError> for Problem {
    fn from(error: crate::queue::QueueError) -> Self {
        tracing::error!(%error, "queue failure behind an API call");
        Problem::new(
            Code::Unavailable,
            "the event could not be queued; retry later",
        )
    }
}

impl From<crate::limits::TooLarge> for Problem {
    fn from(error: crate::limits::TooLarge) -> Self {
        Problem::new(Code::EventTooLarge, error.to_string()).with("limitBytes", error.limit)
    }
}

impl From<crate::stage::ingest::AcceptError> for Problem {
    fn from(error: crate::stage::ingest::AcceptError) -> Self {
        use crate::stage::ingest::AcceptError;
        match error {
            AcceptError::Queue(e) => e.into(),
            AcceptError::Archive(e) => e.into(),
            AcceptError::TooLarge(e) => e.into(),
        }
    }
}

impl From<crate::selector::SelectorError> for Problem {
    fn from(error: crate::selector::SelectorError) -> Self {
        let code = match error {
            crate::selector::SelectorError::Invalid(_) => Code::SelectorInvalid,
            crate::selector::SelectorError::TooExpensive(_) => Code::SelectorTooExpensive,
            crate::selector::SelectorError::NotBoolean(_) => Code::SelectorTypeError,
        };
        Problem::new(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_every_member_and_skips_null_extensions() {
        let body = Problem::new(Code::SelectorInvalid, "bad")
            .with("subscriptionId", "s1")
            .with("nothing", Value::Null)
            .body("/v1/x");
        assert_eq!(
            body["type"],
            "https://errors.custos.dev/trigger/selector_invalid"
        );
        assert_eq!(body["title"], "Selector failed to compile");
        assert_eq!(body["status"], 422);
        assert_eq!(body["detail"], "bad");
        assert_eq!(body["instance"], "/v1/x");
        assert_eq!(body["code"], "trigger.selector_invalid");
        assert_eq!(body["subscriptionId"], "s1");
        assert!(body.get("nothing").is_none());
    }

    #[test]
    fn codes_are_unique() {
        let mut codes: Vec<&str> = ALL_CODES.iter().map(|c| c.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ALL_CODES.len());
    }
}
