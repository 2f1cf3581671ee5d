//! Audit events: one structured JSON record per pipeline decision (`trigger.matched`,
//! `trigger.dispatched`, ...), carrying workspace, event and target ids, through a sink
//! port so tests can record them and production writes them to the Lambda log stream.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde_json::{Map, Value};

/// The closed set of audit event names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum AuditName {
    #[serde(rename = "trigger.matched")]
    Matched,
    #[serde(rename = "trigger.deduped")]
    Deduped,
    #[serde(rename = "trigger.dispatched")]
    Dispatched,
    #[serde(rename = "resume.delivered")]
    ResumeDelivered,
    #[serde(rename = "trigger.dispatch.failed")]
    DispatchFailed,
    #[serde(rename = "trigger.loop.detected")]
    LoopDetected,
    #[serde(rename = "resume.subscription.divergent")]
    ResumeDivergent,
    #[serde(rename = "trigger.selector_type_error")]
    SelectorTypeError,
    #[serde(rename = "trigger.webhook.rejected")]
    WebhookRejected,
    #[serde(rename = "trigger.retry.scheduled")]
    RetryScheduled,
    #[serde(rename = "trigger.outage.backoff")]
    OutageBackoff,
    #[serde(rename = "trigger.deadletter.recorded")]
    DeadLetterRecorded,
    #[serde(rename = "trigger.deadletter.unidentified")]
    DeadLetterUnidentified,
    #[serde(rename = "trigger.deadletter.replayed")]
    DeadLetterReplayed,
    #[serde(rename = "trigger.deadletter.discarded")]
    DeadLetterDiscarded,
    #[serde(rename = "trigger.event.replayed")]
    EventReplayed,
    #[serde(rename = "trigger.api.panicked")]
    RequestPanicked,
}

impl AuditName {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditName::Matched => "trigger.matched",
            AuditName::Deduped => "trigger.deduped",
            AuditName::Dispatched => "trigger.dispatched",
            AuditName::ResumeDelivered => "resume.delivered",
            AuditName::DispatchFailed => "trigger.dispatch.failed",
            AuditName::LoopDetected => "trigger.loop.detected",
            AuditName::ResumeDivergent => "resume.subscription.divergent",
            AuditName::SelectorTypeError => "trigger.selector_type_error",
            AuditName::WebhookRejected => "trigger.webhook.rejected",
            AuditName::RetryScheduled => "trigger.retry.scheduled",
            AuditName::OutageBackoff => "trigger.outage.backoff",
            AuditName::DeadLetterRecorded => "trigger.deadletter.recorded",
            AuditName::DeadLetterUnidentified => "trigger.deadletter.unidentified",
            AuditName::DeadLetterReplayed => "trigger.deadletter.replayed",
            AuditName::DeadLetterDiscarded => "trigger.deadletter.discarded",
            AuditName::EventReplayed => "trigger.event.replayed",
            AuditName::RequestPanicked => "trigger.api.panicked",
        }
    }

    /// The pipeline stage and outcome an audit event stands for (metrics dimensions).
    pub fn stage_outcome(self) -> (&'static str, &'static str) {
        match self {
            AuditName::Matched => ("match", "matched"),
            AuditName::Deduped => ("dedup", "duplicate"),
            AuditName::Dispatched => ("dispatch", "dispatched"),
            AuditName::ResumeDelivered => ("dispatch", "resume_delivered"),
            AuditName::DispatchFailed => ("dispatch", "failed"),
            AuditName::LoopDetected => ("dispatch", "loop_rejected"),
            AuditName::SelectorTypeError => ("match", "selector_type_error"),
            AuditName::WebhookRejected => ("ingest", "webhook_rejected"),
            AuditName::ResumeDivergent => ("other", "resume.subscription.divergent"),
            AuditName::RetryScheduled => ("dispatch", "retry_scheduled"),
            AuditName::OutageBackoff => ("dispatch", "outage_backoff"),
            AuditName::DeadLetterRecorded => ("deadletter", "recorded"),
            AuditName::DeadLetterUnidentified => ("deadletter", "unidentified"),
            AuditName::DeadLetterReplayed => ("deadletter", "replayed"),
            AuditName::DeadLetterDiscarded => ("deadletter", "discarded"),
            AuditName::EventReplayed => ("api", "event_replayed"),
            AuditName::RequestPanicked => ("api", "panicked"),
        }
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub audit: AuditName,
    pub workspace_id: String,
    pub stage: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Target ids and outcome details (`subscriptionId`, `resumeId`, `reason`, ...).
    #[serde(flatten)]
    pub attrs: Map<String, Value>,
}

impl AuditEvent {
    pub fn new(audit: AuditName, workspace_id: &str, event_id: Option<&str>) -> Self {
        Self {
            audit,
            workspace_id: workspace_id.to_owned(),
            stage: audit.stage_outcome().0,
            event_id: event_id.map(str::to_owned),
            attrs: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.attrs.insert(key.to_owned(), value.into());
        self
    }

    pub fn with_attrs(mut self, attrs: &Map<String, Value>) -> Self {
        self.attrs
            .extend(attrs.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }
}

pub trait AuditSink: Send + Sync {
    fn emit(&self, event: AuditEvent);
}

/// Discards everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopAuditSink;

impl AuditSink for NoopAuditSink {
    fn emit(&self, _event: AuditEvent) {}
}

/// Writes one JSON line per audit event (stdout in Lambda, where CloudWatch picks it
/// up), followed by a CloudWatch Embedded Metric Format line counting the
/// `(stage, outcome)` pair.
pub struct JsonLinesAuditSink<W: Write + Send> {
    out: Mutex<W>,
    namespace: String,
}

impl JsonLinesAuditSink<std::io::Stdout> {
    pub fn stdout(namespace: impl Into<String>) -> Self {
        Self::new(std::io::stdout(), namespace)
    }
}

impl<W: Write + Send> JsonLinesAuditSink<W> {
    pub fn new(out: W, namespace: impl Into<String>) -> Self {
        Self {
            out: Mutex::new(out),
            namespace: namespace.into(),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn metric_line(&self, event: &AuditEvent, timestamp_ms: u128) -> Value {
        let (stage, outcome) = event.audit.stage_outcome();
        // Dead letters are also counted per reason: a closed set of codes, so the
        // dimension stays low-cardinality.
        let reason = matches!(
            event.audit,
            AuditName::DispatchFailed | AuditName::DeadLetterRecorded
        )
        .then(|| event.attrs.get("reason").and_then(Value::as_str))
        .flatten();
        let mut dimensions = vec![serde_json::json!(["stage", "outcome"])];
        if reason.is_some() {
            dimensions.push(serde_json::json!(["stage", "outcome", "reason"]));
        }
        let mut line = serde_json::json!({
            "_aws": {
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": dimensions,
                    "Metrics": [{"Name": "PipelineEvents", "Unit": "Count"}]
                }]
            },
            "stage": stage,
            "outcome": outcome,
            "PipelineEvents": 1
        });
        if let Some(reason) = reason {
            line["reason"] = reason.into();
        }
        line
    }
}

impl<W: Write + Send> AuditSink for JsonLinesAuditSink<W> {
    fn emit(&self, event: AuditEvent) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let metric = self.metric_line(&event, now);
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        // An audit line that cannot be written must not fail the dispatch it describes.
        let _ = serde_json::to_writer(&mut *out, &event)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| serde_json::to_writer(&mut *out, &metric).map_err(Into::into))
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_sink_writes_one_record_and_one_metric_per_event() {
        let sink = JsonLinesAuditSink::new(Vec::new(), "Custos/Trigger");
        sink.emit(
            AuditEvent::new(AuditName::DispatchFailed, "ws1", Some("e1"))
                .with("subscriptionId", "s1")
                .with("retryable", false),
        );
        let text = String::from_utf8(sink.into_inner()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["audit"], "trigger.dispatch.failed");
        assert_eq!(lines[0]["workspaceId"], "ws1");
        assert_eq!(lines[0]["eventId"], "e1");
        assert_eq!(lines[0]["stage"], "dispatch");
        assert_eq!(lines[0]["subscriptionId"], "s1");
        assert_eq!(lines[0]["retryable"], false);
        assert_eq!(lines[1]["outcome"], "failed");
        assert_eq!(
            lines[1]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["stage", "outcome"]]),
            "no reason given: no reason dimension"
        );
        assert_eq!(lines[1]["PipelineEvents"], 1);
        assert_eq!(
            lines[1]["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "Custos/Trigger"
        );
    }

    #[test]
    fn dead_letters_are_also_counted_per_reason() {
        let sink = JsonLinesAuditSink::new(Vec::new(), "Custos/Trigger");
        sink.emit(
            AuditEvent::new(AuditName::DeadLetterRecorded, "ws1", Some("e1"))
                .with("reason", "retries_exhausted"),
        );
        let text = String::from_utf8(sink.into_inner()).unwrap();
        let metric: Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(metric["stage"], "deadletter");
        assert_eq!(metric["reason"], "retries_exhausted");
        assert_eq!(
            metric["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["stage", "outcome"], ["stage", "outcome", "reason"]])
        );
    }

    #[test]
    fn every_name_maps_to_a_stage_and_outcome() {
        assert_eq!(AuditName::Matched.stage_outcome(), ("match", "matched"));
        assert_eq!(AuditName::Deduped.stage_outcome(), ("dedup", "duplicate"));
        assert_eq!(
            AuditName::Dispatched.stage_outcome(),
            ("dispatch", "dispatched")
        );
        assert_eq!(
            AuditName::ResumeDelivered.stage_outcome(),
            ("dispatch", "resume_delivered")
        );
        assert_eq!(
            AuditName::DispatchFailed.stage_outcome(),
            ("dispatch", "failed")
        );
        assert_eq!(
            AuditName::LoopDetected.stage_outcome(),
            ("dispatch", "loop_rejected")
        );
        assert_eq!(AuditName::ResumeDivergent.stage_outcome().0, "other");
    }

    #[test]
    fn names_serialize_as_their_wire_strings() {
        for name in [
            AuditName::Matched,
            AuditName::Deduped,
            AuditName::Dispatched,
            AuditName::ResumeDelivered,
            AuditName::DispatchFailed,
            AuditName::LoopDetected,
            AuditName::ResumeDivergent,
            AuditName::SelectorTypeError,
            AuditName::WebhookRejected,
            AuditName::RetryScheduled,
            AuditName::OutageBackoff,
            AuditName::DeadLetterRecorded,
            AuditName::DeadLetterUnidentified,
            AuditName::DeadLetterReplayed,
            AuditName::DeadLetterDiscarded,
            AuditName::EventReplayed,
            AuditName::RequestPanicked,
        ] {
            assert_eq!(serde_json::to_value(name).unwrap(), name.as_str());
        }
    }
}
