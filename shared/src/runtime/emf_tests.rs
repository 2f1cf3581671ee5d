//! Each function's handler run on a sample batch over in-memory ports, its telemetry
//! flushed once as at the end of an invocation, and the EMF documents parsed the way
//! CloudWatch reads them: names, units, dimension sets and values.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_lambda_events::event::apigw::ApiGatewayV2httpRequest;
use serde_json::{json, Value};

use super::*;
use crate::clock::ManualClock;
use crate::memory::*;
use crate::metrics::MAX_VALUES_PER_DOCUMENT;
use crate::subscription::SubscriptionStore;
use crate::webhook::tests as signed;

type Telemetry = Arc<JsonLinesAuditSink<SharedBuffer>>;

fn telemetry(function: &str) -> (Telemetry, SharedBuffer) {
    let buffer = SharedBuffer::default();
    let sink = JsonLinesAuditSink::new(buffer.clone(), METRIC_NAMESPACE, function);
    (Arc::new(sink), buffer)
}

/// The EMF documents of one flush, each checked against the specification's rules.
fn flushed(telemetry: &Telemetry, buffer: &SharedBuffer) -> Vec<Value> {
    telemetry.flush_metrics();
    let documents: Vec<Value> = buffer
        .lines()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|value| value.get("_aws").is_some())
        .collect();
    documents.iter().for_each(assert_well_formed);
    documents
}

fn assert_well_formed(document: &Value) {
    let aws = &document["_aws"];
    assert!(
        aws["Timestamp"].as_i64().is_some_and(|t| t > 0),
        "{document}"
    );
    let directives = aws["CloudWatchMetrics"].as_array().unwrap();
    assert_eq!(directives.len(), 1);
    let directive = &directives[0];
    assert_eq!(directive["Namespace"], "Custos/Trigger");
    for set in directive["Dimensions"].as_array().unwrap() {
        for name in set.as_array().unwrap() {
            let name = name.as_str().unwrap();
            assert!(document[name].is_string(), "dimension {name} has a value");
        }
    }
    for metric in directive["Metrics"].as_array().unwrap() {
        let name = metric["Name"].as_str().unwrap();
        let values = match &document[name] {
            Value::Array(values) => values.clone(),
            value => vec![value.clone()],
        };
        assert!(!values.is_empty() && values.len() <= MAX_VALUES_PER_DOCUMENT);
        assert!(
            values.iter().all(Value::is_number),
            "{name} values are numbers"
        );
    }
}

/// `(metric, unit, dimension sets)` of every definition in the documents.
fn definitions(documents: &[Value]) -> BTreeSet<(String, String, String)> {
    let mut found = BTreeSet::new();
    for document in documents {
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        for metric in directive["Metrics"].as_array().unwrap() {
            found.insert((
                metric["Name"].as_str().unwrap().to_owned(),
                metric["Unit"].as_str().unwrap().to_owned(),
                directive["Dimensions"].to_string(),
            ));
        }
    }
    found
}

fn defined(name: &str, unit: &str, dimensions: Value) -> (String, String, String) {
    (name.to_owned(), unit.to_owned(), dimensions.to_string())
}

/// The value of `metric` in the document whose dimensions have these values.
fn value_of(documents: &[Value], metric: &str, dimensions: &[(&str, &str)]) -> Value {
    documents
        .iter()
        .find(|d| d.get(metric).is_some() && dimensions.iter().all(|(k, v)| d[*k] == *v))
        .map(|d| d[metric].clone())
        .unwrap_or_else(|| panic!("no {metric} for {dimensions:?} in {documents:?}"))
}

fn sqs(bodies: &[(&str, String)], receive_count: u32) -> SqsEvent {
    let records: Vec<Value> = bodies
        .iter()
        .map(|(id, body)| {
            json!({"messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
                   "attributes": {"ApproximateReceiveCount": receive_count.to_string(),
                                  "SentTimestamp": "1700000000000"}})
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at_ms(1_700_000_000_000))
}

fn lifecycle(run: &str) -> Value {
    json!({"workflowVersionId": "wv", "runId": run, "workspace": "ws1",
           "status": "completed", "occurredAt": "2026-01-01T00:00:00Z"})
}

fn queued(event_id: &str, data: Value) -> String {
    json!({"workspaceId": "ws1", "receivedMs": 1_699_999_999_000_i64,
           "event": {"eventId": event_id, "kind": "workflow.completed",
                     "source": {"type": "internal", "occurredAt": "t"}, "data": data}})
    .to_string()
}

fn dispatch_message(subscription: &str) -> String {
    json!({"workspaceId": "ws1", "receivedMs": 1_699_999_998_500_i64,
           "event": {"eventId": "evt-1", "kind": "workflow.completed",
                     "source": {"type": "internal", "occurredAt": "t"}, "data": {}},
           "target": {"type": "start", "subscriptionId": subscription, "workflowId": "wf",
                      "workflowVersionId": "wv", "inputs": {}}})
    .to_string()
}

#[tokio::test]
async fn ingest_counts_accepted_events_by_source() {
    let (telemetry, buffer) = telemetry("ingest");
    let stage = IngestStage {
        normalized_queue: Arc::new(MemoryQueue::default()),
        archive: Arc::new(MemoryArchive::default()),
        audit: telemetry.clone(),
        clock: clock(),
        retention: crate::archive::Retention { ttl_secs: 60 },
    };
    let batch = sqs(
        &[
            ("m1", lifecycle("r1").to_string()),
            ("m2", lifecycle("r2").to_string()),
            ("m3", "{\"not\": \"an envelope\"}".to_owned()),
        ],
        1,
    );
    ingest_workflow_events(&stage, batch).await.unwrap();
    let documents = flushed(&telemetry, &buffer);
    assert_eq!(
        definitions(&documents),
        BTreeSet::from([defined(
            "EventsIngested",
            "Count",
            json!([["function", "source"]])
        )])
    );
    let ingested = value_of(
        &documents,
        "EventsIngested",
        &[("function", "ingest"), ("source", "internal")],
    );
    assert_eq!(ingested, 2.0, "the malformed envelope is not counted");
    assert_eq!(documents[0]["workspaceIds"], json!(["ws1"]));
}

#[tokio::test]
async fn match_reports_matches_and_time_per_event_and_selector_errors() {
    let (telemetry, buffer) = telemetry("match");
    let subscriptions = Arc::new(MemorySubscriptionStore::default());
    for (id, selector) in [
        ("all", "event.kind == 'workflow.completed'"),
        ("typed", "event.data.status + 1 > 0"),
    ] {
        let subscription = serde_json::from_value(json!({
            "workspaceId": "ws1", "subscriptionId": id, "sourceType": "internal",
            "workflowId": "wf", "targetWorkflowVersionId": "wv", "selector": selector,
            "state": "active", "createdAt": "2026-01-01T00:00:00Z",
            "updatedAt": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        subscriptions.put(&subscription).await.unwrap();
    }
    let stage = MatchStage::new(
        subscriptions,
        Arc::new(MemoryResumeStore::default()),
        Arc::new(MemoryQueue::default()),
        Arc::new(MemoryLedger::default()),
        telemetry.clone(),
        clock(),
        0,
    );
    let batch = sqs(
        &[
            ("m1", queued("e1", json!({"status": "done"}))),
            ("m2", queued("e2", json!({"status": 1}))),
        ],
        1,
    );
    match_events(&stage, None, batch).await.unwrap();
    let documents = flushed(&telemetry, &buffer);
    let found = definitions(&documents);
    for expected in [
        defined("MatchesPerEvent", "Count", json!([["function"]])),
        defined("MatchTime", "Microseconds", json!([["function"]])),
        defined("SelectorErrors", "Count", json!([["error", "function"]])),
    ] {
        assert!(found.contains(&expected), "{expected:?} in {found:?}");
    }
    let mut per_event: Vec<f64> = value_of(&documents, "MatchesPerEvent", &[])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    per_event.sort_by(f64::total_cmp);
    assert_eq!(per_event, vec![1.0, 2.0], "one value per event, not a sum");
    assert_eq!(
        value_of(&documents, "MatchTime", &[])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        value_of(&documents, "SelectorErrors", &[("error", "execution")]),
        1.0,
        "a string plus an int: no match, counted"
    );
}

#[tokio::test]
async fn dispatch_reports_outcomes_latency_and_rpc_status_classes() {
    let (telemetry, buffer) = telemetry("dispatch");
    let workflow = Arc::new(ScriptedWorkflow::default());
    workflow.script([
        Ok(()),
        Err(crate::workflow::WorkflowError::Status {
            status: 503,
            body: "busy".into(),
        }),
    ]);
    let settings = Arc::new(crate::config::Settings::from_lookup(|_| None).unwrap());
    let clock = clock();
    let mut dispatcher = Dispatcher::new(
        Arc::new(MemoryLedger::default()),
        workflow,
        Arc::new(MemoryResumeStore::default()),
        Arc::new(MemoryParkStore::default()),
        telemetry.clone(),
        clock,
        DispatchSettings::from_settings(settings),
    );
    dispatcher.jitter = || 0.0;
    let stage = DispatchStage {
        dispatcher,
        queue: Arc::new(MemoryQueue::default()),
        flow: None,
        events: None,
    };
    let batch = sqs(
        &[
            ("m1", dispatch_message("s1")),
            ("m2", dispatch_message("s2")),
        ],
        1,
    );
    dispatch_messages(&stage, batch, None).await.unwrap();
    let documents = flushed(&telemetry, &buffer);
    let found = definitions(&documents);
    for expected in [
        defined("EndToEndLatency", "Milliseconds", json!([["function"]])),
        defined(
            "WorkflowRpcLatency",
            "Milliseconds",
            json!([["function", "statusClass"]]),
        ),
        defined("PipelineEvents", "Count", json!([["outcome", "stage"]])),
    ] {
        assert!(found.contains(&expected), "{expected:?} in {found:?}");
    }
    assert_eq!(
        value_of(&documents, "EndToEndLatency", &[("function", "dispatch")]),
        1500.0,
        "received at the door 1.5 s before the confirmed dispatch"
    );
    for class in ["2xx", "5xx"] {
        assert!(value_of(&documents, "WorkflowRpcLatency", &[("statusClass", class)]).is_number());
    }
    for (outcome, count) in [
        ("matched", 2.0),
        ("dispatched", 1.0),
        ("retry_scheduled", 1.0),
    ] {
        let stage = if outcome == "matched" {
            "match"
        } else {
            "dispatch"
        };
        let value = value_of(
            &documents,
            "PipelineEvents",
            &[("stage", stage), ("outcome", outcome)],
        );
        assert_eq!(value, count, "{outcome}");
    }
}

#[tokio::test]
async fn the_recorder_counts_dead_letters_by_reason_and_rolls_the_reason_up() {
    let (telemetry, buffer) = telemetry("deadletter");
    let recorder = DeadLetterRecorder {
        ledger: Arc::new(MemoryLedger::default()),
        resumes: Arc::new(crate::memory::MemoryResumeStore::default()),
        archive: Arc::new(MemoryArchive::default()),
        audit: telemetry.clone(),
        clock: clock(),
        retention: crate::archive::Retention { ttl_secs: 60 },
        flow: None,
    };
    let batch = sqs(
        &[
            ("m1", dispatch_message("s1")),
            ("m2", "not json at all".to_owned()),
        ],
        1,
    );
    record_dead_letters(&recorder, batch).await.unwrap();
    let documents = flushed(&telemetry, &buffer);
    let found = definitions(&documents);
    assert!(
        found.contains(&defined(
            "PipelineEvents",
            "Count",
            json!([["outcome", "reason", "stage"], ["outcome", "stage"]])
        )),
        "{found:?}"
    );
    assert_eq!(
        value_of(
            &documents,
            "PipelineEvents",
            &[("stage", "deadletter"), ("outcome", "recorded")]
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &documents,
            "PipelineEvents",
            &[("stage", "deadletter"), ("outcome", "unidentified")]
        ),
        1.0
    );
}

fn request(method: &str, path: &str, headers: Value, body: &str) -> ApiGatewayV2httpRequest {
    crate::memory::gateway_request(method, path, headers, body).unwrap()
}

fn management(method: &str, path: &str, body: Value) -> ApiGatewayV2httpRequest {
    let caller = json!({"workspace_id": "ws1", "permissions": [
        "trigger:subscriptions:write", "trigger:subscriptions:fire"]});
    let headers = json!({"content-type": "application/json",
                         "x-custos-callctx": caller.to_string()});
    request(method, path, headers, &body.to_string())
}

fn delivery(signature: &str) -> ApiGatewayV2httpRequest {
    let headers: serde_json::Map<String, Value> = signed::headers(signature)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let body = std::str::from_utf8(signed::BODY).unwrap();
    request("POST", "/v1/webhooks/ci1", Value::Object(headers), body)
}

#[tokio::test]
async fn the_api_counts_fired_and_webhook_events_and_rejections_by_reason() {
    let (telemetry, buffer) = telemetry("api");
    let clock = Arc::new(ManualClock::at_ms(1_614_265_330_000));
    let secret = (
        "ssm:/custos/webhooks/ci1".to_owned(),
        signed::SECRET.to_owned(),
    );
    let api = crate::memory::api(telemetry.clone(), clock, [secret]).unwrap();
    api.webhooks
        .connectors
        .put(&signed::standard_connector())
        .await
        .unwrap();
    let created = api
        .handle(management(
            "POST",
            "/v1/workspaces/ws1/triggers",
            json!({"sourceType": "manual", "workflowId": "wf", "targetWorkflowVersionId": "wv"}),
        ))
        .await;
    assert_eq!(created.status_code, 201, "{:?}", created.body);
    let body = match created.body {
        Some(aws_lambda_events::encodings::Body::Text(text)) => text,
        other => panic!("{other:?}"),
    };
    let id = serde_json::from_str::<Value>(&body).unwrap()["subscriptionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let fired = api
        .handle(management(
            "POST",
            &format!("/v1/workspaces/ws1/triggers/{id}:fire"),
            json!({"inputs": {"a": 1}}),
        ))
        .await;
    assert_eq!(fired.status_code, 202);
    assert_eq!(
        api.handle(delivery(signed::SIGNATURE)).await.status_code,
        202
    );
    let forged = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_eq!(api.handle(delivery(forged)).await.status_code, 401);
    let documents = flushed(&telemetry, &buffer);
    let found = definitions(&documents);
    for expected in [
        defined("EventsIngested", "Count", json!([["function", "source"]])),
        defined(
            "WebhookRejections",
            "Count",
            json!([["function", "reason"], ["function"]]),
        ),
    ] {
        assert!(found.contains(&expected), "{expected:?} in {found:?}");
    }
    for source in ["manual", "webhook"] {
        let value = value_of(
            &documents,
            "EventsIngested",
            &[("function", "api"), ("source", source)],
        );
        assert_eq!(value, 1.0, "{source}");
    }
    let rejected = documents
        .iter()
        .find(|d| d.get("WebhookRejections").is_some())
        .unwrap();
    assert_eq!(rejected["WebhookRejections"], 1.0);
    assert!(rejected["reason"].is_string());
}
