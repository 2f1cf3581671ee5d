//! CloudWatch Embedded Metric Format (EMF): the pipeline's measurements are aggregated
//! in memory during an invocation and written as a few EMF documents once, when the
//! invocation ends, so a batch of a hundred matches costs a handful of log lines, not
//! a hundred.
//!
//! Dimensions stay low-cardinality (function, outcome, source, reason, status class);
//! workspaces go in as a property. The writer follows the EMF specification's limits:
//! at most 100 values per metric per document (larger series are split).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Mutex, PoisonError};

use serde_json::{json, Map, Value};

/// Values of one metric in one EMF document (the specification's maximum).
pub const MAX_VALUES_PER_DOCUMENT: usize = 100;
/// Distinct workspace ids kept as the `workspaceIds` property of one flush.
pub const MAX_WORKSPACE_PROPERTY: usize = 25;

/// The closed set of metrics: names and units are defined here only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetricName {
    /// Audited pipeline outcomes (`stage`, `outcome`, dead letters also by `reason`).
    PipelineEvents,
    /// Events accepted at a door, by `source` (workflow, webhook, manual, replay).
    EventsIngested,
    /// Start and resume matches of one event.
    MatchesPerEvent,
    /// Matching one event: conversion, index, selectors, mappings, messages.
    MatchTime,
    /// Selectors that failed on an event, by `error` (not_boolean, too_expensive,
    /// execution: e.g. a field the event lacks); each counts as no match.
    SelectorErrors,
    /// Event received at a door → dispatch confirmed by the Workflow Service.
    EndToEndLatency,
    /// One Workflow Service call, by `statusClass` (2xx, 4xx, 5xx, transport, ...).
    WorkflowRpcLatency,
    /// Webhook deliveries refused, by `reason`.
    WebhookRejections,
    /// Flow-control decisions on matches, by `outcome` (admitted, delayed,
    /// rate_limited, idempotency_skipped).
    FlowDecisions,
}

/// CloudWatch units used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Microseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Microseconds => "Microseconds",
        }
    }
}

impl MetricName {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricName::PipelineEvents => "PipelineEvents",
            MetricName::EventsIngested => "EventsIngested",
            MetricName::MatchesPerEvent => "MatchesPerEvent",
            MetricName::MatchTime => "MatchTime",
            MetricName::SelectorErrors => "SelectorErrors",
            MetricName::EndToEndLatency => "EndToEndLatency",
            MetricName::WorkflowRpcLatency => "WorkflowRpcLatency",
            MetricName::WebhookRejections => "WebhookRejections",
            MetricName::FlowDecisions => "FlowDecisions",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            MetricName::MatchTime => Unit::Microseconds,
            MetricName::EndToEndLatency | MetricName::WorkflowRpcLatency => Unit::Milliseconds,
            _ => Unit::Count,
        }
    }

    /// Pipeline outcomes are keyed by the pipeline step (`stage`), which may run in
    /// more than one function (a dead letter is recorded by dispatch, match and the
    /// recorder), so one alarm sees them all; every other metric is per function.
    fn per_function(self) -> bool {
        self != MetricName::PipelineEvents
    }

    /// Counters are summed over the invocation; the others keep every value, so
    /// CloudWatch can compute percentiles.
    fn is_counter(self) -> bool {
        matches!(
            self,
            MetricName::PipelineEvents
                | MetricName::EventsIngested
                | MetricName::SelectorErrors
                | MetricName::WebhookRejections
                | MetricName::FlowDecisions
        )
    }
}

/// One measurement: a metric, its dimension values, a value and the workspace it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub name: MetricName,
    /// Dimension name → value, besides `function` (which the aggregate adds).
    pub dimensions: Vec<(&'static str, String)>,
    pub value: f64,
    pub workspace_id: Option<String>,
}

impl Measurement {
    pub fn new(name: MetricName, value: f64) -> Self {
        Self {
            name,
            dimensions: Vec::new(),
            value,
            workspace_id: None,
        }
    }

    /// A count of one.
    pub fn one(name: MetricName) -> Self {
        Self::new(name, 1.0)
    }

    pub fn by(mut self, dimension: &'static str, value: impl Into<String>) -> Self {
        self.dimensions.push((dimension, value.into()));
        self
    }

    /// The workspace the measurement is for (none for records without a tenant).
    pub fn for_workspace(mut self, workspace_id: &str) -> Self {
        self.workspace_id = (!workspace_id.is_empty()).then(|| workspace_id.to_owned());
        self
    }

    /// Milliseconds between two epoch-ms instants (never negative: clocks differ).
    pub fn elapsed_ms(name: MetricName, from_ms: i64, to_ms: i64) -> Self {
        Self::new(name, to_ms.saturating_sub(from_ms).max(0) as f64)
    }
}

/// Dimension values of one series (sorted by name).
type SeriesKey = Vec<(&'static str, String)>;

#[derive(Default)]
struct Aggregate {
    series: BTreeMap<SeriesKey, BTreeMap<MetricName, Vec<f64>>>,
    workspaces: BTreeSet<String>,
}

/// The per-instance aggregate of one function's measurements, written once per
/// invocation by [`Metrics::flush`].
pub struct Metrics {
    namespace: String,
    function: String,
    state: Mutex<Aggregate>,
}

impl Metrics {
    pub fn new(namespace: impl Into<String>, function: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            function: function.into(),
            state: Mutex::new(Aggregate::default()),
        }
    }

    pub fn record(&self, measurement: Measurement) {
        let Measurement {
            name,
            mut dimensions,
            value,
            workspace_id,
        } = measurement;
        if name.per_function() {
            dimensions.push(("function", self.function.clone()));
        }
        dimensions.sort_unstable();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(workspace) = workspace_id {
            if state.workspaces.len() < MAX_WORKSPACE_PROPERTY {
                state.workspaces.insert(workspace);
            }
        }
        let values = state
            .series
            .entry(dimensions)
            .or_default()
            .entry(name)
            .or_default();
        match (name.is_counter(), values.first_mut()) {
            (true, Some(total)) => *total += value,
            _ => values.push(value),
        }
    }

    /// The EMF documents of everything recorded since the last flush, and a fresh start.
    pub fn take_documents(&self, timestamp_ms: i64) -> Vec<Value> {
        let aggregate = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut *state)
        };
        let workspaces: Vec<Value> = aggregate
            .workspaces
            .into_iter()
            .map(Value::String)
            .collect();
        let mut documents = Vec::new();
        for (dimensions, metrics) in aggregate.series {
            let chunks = metrics
                .values()
                .map(|v| v.len().div_ceil(MAX_VALUES_PER_DOCUMENT))
                .max()
                .unwrap_or(0);
            for chunk in 0..chunks {
                documents.push(self.document(
                    &dimensions,
                    &metrics,
                    chunk,
                    timestamp_ms,
                    &workspaces,
                ));
            }
        }
        documents
    }

    /// Writes the EMF documents (one JSON line each) and starts over. A failed write
    /// loses only these measurements, never the invocation.
    pub fn flush(&self, out: &mut impl Write, timestamp_ms: i64) {
        for document in self.take_documents(timestamp_ms) {
            let _ = serde_json::to_writer(&mut *out, &document)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"));
        }
        let _ = out.flush();
    }

    fn document(
        &self,
        dimensions: &SeriesKey,
        metrics: &BTreeMap<MetricName, Vec<f64>>,
        chunk: usize,
        timestamp_ms: i64,
        workspaces: &[Value],
    ) -> Value {
        let mut root = Map::new();
        let mut definitions = Vec::new();
        for (name, values) in metrics {
            let start = chunk * MAX_VALUES_PER_DOCUMENT;
            let Some(slice) = values.get(start..values.len().min(start + MAX_VALUES_PER_DOCUMENT))
            else {
                continue;
            };
            if slice.is_empty() {
                continue;
            }
            definitions.push(json!({"Name": name.as_str(), "Unit": name.unit().as_str()}));
            let value = match slice {
                [one] => json!(one),
                many => json!(many),
            };
            root.insert(name.as_str().to_owned(), value);
        }
        let names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
        // A reason is a breakdown: the same values are also published without it, so
        // an alarm on the outcome sees every reason.
        let mut sets = vec![names.clone()];
        if names.contains(&"reason") {
            sets.push(names.iter().copied().filter(|n| *n != "reason").collect());
        }
        for (name, value) in dimensions {
            root.insert((*name).to_owned(), Value::String(value.clone()));
        }
        if !workspaces.is_empty() {
            root.insert("workspaceIds".to_owned(), Value::Array(workspaces.to_vec()));
        }
        root.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": sets,
                    "Metrics": definitions,
                }]
            }),
        );
        Value::Object(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents(metrics: &Metrics) -> Vec<Value> {
        let mut out = Vec::new();
        metrics.flush(&mut out, 1_700_000_000_000);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn counters_are_summed_and_samples_kept_in_one_document_per_series() {
        let metrics = Metrics::new("Custos/Trigger", "match");
        metrics.record(Measurement::new(MetricName::MatchesPerEvent, 3.0).for_workspace("ws1"));
        metrics.record(Measurement::new(MetricName::MatchesPerEvent, 0.0).for_workspace("ws2"));
        metrics.record(Measurement::new(MetricName::MatchTime, 41.0));
        metrics.record(Measurement::one(MetricName::SelectorErrors));
        metrics.record(Measurement::one(MetricName::SelectorErrors));
        let docs = documents(&metrics);
        assert_eq!(docs.len(), 1, "one series (function=match): {docs:?}");
        let doc = &docs[0];
        assert_eq!(doc["function"], "match");
        assert_eq!(doc["MatchesPerEvent"], json!([3.0, 0.0]));
        assert_eq!(doc["MatchTime"], 41.0);
        assert_eq!(doc["SelectorErrors"], 2.0);
        assert_eq!(doc["workspaceIds"], json!(["ws1", "ws2"]));
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Custos/Trigger");
        assert_eq!(directive["Dimensions"], json!([["function"]]));
        assert_eq!(
            directive["Metrics"],
            json!([
                {"Name": "MatchesPerEvent", "Unit": "Count"},
                {"Name": "MatchTime", "Unit": "Microseconds"},
                {"Name": "SelectorErrors", "Unit": "Count"},
            ])
        );
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000_i64);
        assert!(documents(&metrics).is_empty(), "a flush starts over");
    }

    #[test]
    fn every_dimension_value_set_is_its_own_document_and_reasons_roll_up() {
        let metrics = Metrics::new("Custos/Trigger", "api");
        metrics.record(Measurement::one(MetricName::WebhookRejections).by("reason", "signature"));
        metrics.record(Measurement::one(MetricName::WebhookRejections).by("reason", "timestamp"));
        metrics.record(Measurement::one(MetricName::EventsIngested).by("source", "webhook"));
        let docs = documents(&metrics);
        assert_eq!(docs.len(), 3);
        let signature = docs.iter().find(|d| d["reason"] == "signature").unwrap();
        assert_eq!(
            signature["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["function", "reason"], ["function"]])
        );
        let ingested = docs.iter().find(|d| d["source"] == "webhook").unwrap();
        assert_eq!(
            ingested["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["function", "source"]])
        );
        assert_eq!(ingested["EventsIngested"], 1.0);
    }

    #[test]
    fn more_than_a_hundred_values_are_split_across_documents() {
        let metrics = Metrics::new("Custos/Trigger", "dispatch");
        for i in 0..250 {
            metrics.record(Measurement::new(MetricName::EndToEndLatency, f64::from(i)));
        }
        metrics.record(
            Measurement::one(MetricName::PipelineEvents)
                .by("stage", "dispatch")
                .by("outcome", "dispatched"),
        );
        let docs = documents(&metrics);
        let sizes: Vec<usize> = docs
            .iter()
            .filter(|d| d.get("EndToEndLatency").is_some())
            .map(|d| d["EndToEndLatency"].as_array().map_or(1, Vec::len))
            .collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        let with_count = docs
            .iter()
            .filter(|d| d.get("PipelineEvents").is_some())
            .count();
        assert_eq!(with_count, 1, "the counter is written once");
        let outcome = docs
            .iter()
            .find(|d| d.get("PipelineEvents").is_some())
            .unwrap();
        assert_eq!(
            outcome["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["outcome", "stage"]]),
            "pipeline outcomes are keyed by stage, not function"
        );
        for doc in &docs {
            let defined = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap();
            for definition in defined {
                let name = definition["Name"].as_str().unwrap();
                assert!(doc.get(name).is_some(), "{name} defined and present");
            }
        }
    }

    #[test]
    fn elapsed_time_is_never_negative() {
        let m = Measurement::elapsed_ms(MetricName::EndToEndLatency, 2_000, 1_500);
        assert_eq!(m.value, 0.0);
        let m = Measurement::elapsed_ms(MetricName::EndToEndLatency, 1_000, 1_250);
        assert_eq!(m.value, 250.0);
    }
}
