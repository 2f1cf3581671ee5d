//! The fake Workflow Service honours the contract the dispatcher relies on.

use custos_trigger::workflow::http::HttpWorkflowClient;
use custos_trigger::workflow::{RaiseEventRequest, StartRunRequest, WorkflowClient, WorkflowError};
use integration_tests::FakeWorkflow;
use serde_json::json;

fn start(key: &str) -> StartRunRequest {
    StartRunRequest {
        workspace_id: "ws1".into(),
        workflow_version_id: "wv".into(),
        inputs: Default::default(),
        idempotency_key: key.into(),
        trigger_depth: 1,
        traceparent: None,
    }
}

#[tokio::test]
async fn same_key_same_run_and_every_call_recorded() {
    let fake = FakeWorkflow::start().await;
    let client = HttpWorkflowClient::new(&fake.url).unwrap();
    let a = client.start_run(&start("k1")).await.unwrap();
    let b = client.start_run(&start("k1")).await.unwrap();
    let c = client.start_run(&start("k2")).await.unwrap();
    assert_eq!(a.run_id, b.run_id);
    assert_ne!(a.run_id, c.run_id);
    let calls = fake.calls("start").await;
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        [201, 200, 201]
    );
    assert_eq!(calls[0].body["triggerDepth"], 1);
}

#[tokio::test]
async fn raise_event_records_run_and_step_from_the_path() {
    let fake = FakeWorkflow::start().await;
    let client = HttpWorkflowClient::new(&fake.url).unwrap();
    let request = RaiseEventRequest {
        run_id: "run/1".into(),
        step_id: "step 1".into(),
        workspace_id: "ws1".into(),
        event_name: "step.succeeded".into(),
        payload: json!({"x": 1}).as_object().unwrap().clone(),
        idempotency_key: "k".into(),
        trigger_depth: 1,
        traceparent: None,
    };
    client.raise_event(&request).await.unwrap();
    let calls = fake.calls("raise").await;
    assert_eq!(calls[0].run_id.as_deref(), Some("run/1"));
    assert_eq!(calls[0].step_id.as_deref(), Some("step 1"));
    assert_eq!(calls[0].body["payload"], json!({"x": 1}));
}

#[tokio::test]
async fn injected_faults_are_classified_by_the_client() {
    let fake = FakeWorkflow::start().await;
    let client = HttpWorkflowClient::new(&fake.url).unwrap();
    fake.fault(json!({"status": 503, "count": 2})).await;
    for _ in 0..2 {
        let err = client.start_run(&start("k")).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }
    client.start_run(&start("k")).await.unwrap();
    fake.fault(json!({"status": 404, "count": 1, "route": "raise"}))
        .await;
    let request = RaiseEventRequest {
        run_id: "r".into(),
        step_id: "s".into(),
        workspace_id: "w".into(),
        event_name: "e.x".into(),
        payload: Default::default(),
        idempotency_key: "k".into(),
        trigger_depth: 1,
        traceparent: None,
    };
    let err = client.raise_event(&request).await.unwrap_err();
    assert!(
        matches!(err, WorkflowError::Status { status: 404, .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn requests_without_matching_idempotency_header_are_refused() {
    let fake = FakeWorkflow::start().await;
    let response = reqwest::Client::new()
        .post(format!("{}/internal/runs:start", fake.url))
        .json(&json!({"workspaceId": "w", "workflowVersionId": "v", "idempotencyKey": "k"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn an_unreachable_service_is_a_retryable_transport_error() {
    let client = HttpWorkflowClient::new("http://127.0.0.1:9").unwrap();
    let err = client.start_run(&start("k")).await.unwrap_err();
    assert!(matches!(err, WorkflowError::Transport(_)));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_call_held_by_injected_latency_is_counted_until_it_is_answered() {
    let fake = FakeWorkflow::start().await;
    fake.fault(json!({"latencyMs": 1500, "workspace": "ws1"}))
        .await;
    assert_eq!(fake.held_starts("ws1").await, 0);
    let client = HttpWorkflowClient::new(&fake.url).unwrap();
    let call = tokio::spawn(async move { client.start_run(&start("k-held")).await });
    let mut held = 0;
    for _ in 0..100 {
        held = fake.held_starts("ws1").await;
        if held > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(held, 1, "the call waiting out its latency is held");
    assert_eq!(fake.held_starts("ws2").await, 0, "only its own workspace's");
    call.await.unwrap().unwrap();
    assert_eq!(fake.held_starts("ws1").await, 0);
    assert_eq!(fake.calls("start").await.len(), 1);
}
