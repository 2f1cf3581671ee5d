//! Audit events: one structured JSON record per pipeline decision (`trigger.matched`,
//! `trigger.dispatched`, ...), carrying workspace, event and target ids, through a sink
//! port so tests can record them and production writes them to the Lambda log stream.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::metrics::{Measurement, MetricName, Metrics};

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

/// The telemetry port: audit records, and the metric measurements that go with them.
pub trait AuditSink: Send + Sync {
    fn emit(&self, event: AuditEvent);

    /// A measurement that is not an audit record (latencies, matches per event, ...).
    fn measure(&self, _measurement: Measurement) {}
}

/// Discards everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopAuditSink;

impl AuditSink for NoopAuditSink {
    fn emit(&self, _event: AuditEvent) {}
}

/// The measurements an audit record stands for: its pipeline outcome (dead letters and
/// failures also by reason), plus webhook rejections by reason.
pub fn measurements_of(event: &AuditEvent) -> Vec<Measurement> {
    let (stage, outcome) = event.audit.stage_outcome();
    let reason = event.attrs.get("reason").and_then(Value::as_str);
    let mut outcome_count = Measurement::one(MetricName::PipelineEvents)
        .by("stage", stage)
        .by("outcome", outcome)
        .for_workspace(&event.workspace_id);
    // A closed set of codes, so the dimension stays low-cardinality.
    if let (AuditName::DispatchFailed | AuditName::DeadLetterRecorded, Some(reason)) =
        (event.audit, reason)
    {
        outcome_count = outcome_count.by("reason", reason);
    }
    let mut measurements = vec![outcome_count];
    if event.audit == AuditName::WebhookRejected {
        measurements.push(
            Measurement::one(MetricName::WebhookRejections)
                .by("reason", reason.unwrap_or("unknown"))
                .for_workspace(&event.workspace_id),
        );
    }
    measurements
}

/// Writes one JSON line per audit event (stdout in Lambda, where CloudWatch picks it
/// up) and aggregates the measurements, written as CloudWatch Embedded Metric Format
/// documents by [`JsonLinesAuditSink::flush_metrics`] once per invocation.
pub struct JsonLinesAuditSink<W: Write + Send> {
    out: Mutex<W>,
    metrics: Metrics,
}

impl JsonLinesAuditSink<std::io::Stdout> {
    pub fn stdout(namespace: impl Into<String>, function: impl Into<String>) -> Self {
        Self::new(std::io::stdout(), namespace, function)
    }
}

impl<W: Write + Send> JsonLinesAuditSink<W> {
    pub fn new(out: W, namespace: impl Into<String>, function: impl Into<String>) -> Self {
        Self {
            out: Mutex::new(out),
            metrics: Metrics::new(namespace, function),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what was measured since the last flush (call it once per invocation).
    pub fn flush_metrics(&self) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        self.metrics.flush(&mut *out, now_ms);
    }
}

impl<W: Write + Send> AuditSink for JsonLinesAuditSink<W> {
    fn emit(&self, event: AuditEvent) {
        for measurement in measurements_of(&event) {
            self.metrics.record(measurement);
        }
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        // An audit line that cannot be written must not fail the dispatch it describes.
        let _ = serde_json::to_writer(&mut *out, &event)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
    }

    fn measure(&self, measurement: Measurement) {
        self.metrics.record(measurement);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8]) -> Vec<Value> {
        std::str::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn json_sink_writes_records_at_once_and_metrics_only_when_flushed() {
        let sink = JsonLinesAuditSink::new(Vec::new(), "Custos/Trigger", "dispatch");
        for _ in 0..3 {
            sink.emit(
                AuditEvent::new(AuditName::DispatchFailed, "ws1", Some("e1"))
                    .with("subscriptionId", "s1")
                    .with("retryable", false),
            );
        }
        {
            let out = sink.out.lock().unwrap();
            let records = lines(&out);
            assert_eq!(
                records.len(),
                3,
                "records only, no metrics before the flush"
            );
            assert_eq!(records[0]["audit"], "trigger.dispatch.failed");
            assert_eq!(records[0]["workspaceId"], "ws1");
            assert_eq!(records[0]["eventId"], "e1");
            assert_eq!(records[0]["stage"], "dispatch");
            assert_eq!(records[0]["subscriptionId"], "s1");
            assert_eq!(records[0]["retryable"], false);
        }
        sink.flush_metrics();
        let all = lines(&sink.into_inner());
        assert_eq!(all.len(), 4, "one metric document for the three outcomes");
        let metric = &all[3];
        assert_eq!(metric["outcome"], "failed");
        assert_eq!(metric["PipelineEvents"], 3.0);
        assert_eq!(metric["workspaceIds"], serde_json::json!(["ws1"]));
        assert_eq!(
            metric["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["outcome", "stage"]]),
            "no reason given: no reason dimension"
        );
        assert_eq!(
            metric["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "Custos/Trigger"
        );
    }

    #[test]
    fn dead_letters_are_also_counted_per_reason() {
        let event = AuditEvent::new(AuditName::DeadLetterRecorded, "ws1", Some("e1"))
            .with("reason", "retries_exhausted");
        let measured = measurements_of(&event);
        assert_eq!(measured.len(), 1);
        assert_eq!(
            measured[0].dimensions,
            vec![
                ("stage", "deadletter".to_owned()),
                ("outcome", "recorded".to_owned()),
                ("reason", "retries_exhausted".to_owned())
            ]
        );
    }

    #[test]
    fn webhook_rejections_have_their_own_metric() {
        let rejected =
            AuditEvent::new(AuditName::WebhookRejected, "ws", None).with("reason", "signature");
        let measured = measurements_of(&rejected);
        assert_eq!(measured[1].name, MetricName::WebhookRejections);
        assert_eq!(
            measured[1].dimensions,
            vec![("reason", "signature".to_owned())]
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
