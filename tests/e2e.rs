//! End-to-end tests against the deployed stack: template.yaml on the local emulator
//! (real functions, queues with redrive policies, event source mappings, tables), with
//! the fake Workflow Service behind it. `scripts/test` deploys the stack first and
//! passes its outputs in `CUSTOS_E2E_OUTPUTS`.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use custos_trigger::aws::{DynamoLedger, DynamoResumeStore, DynamoSubscriptionStore};
use custos_trigger::dedup::{Ledger, LedgerEntry, LedgerStatus};
use custos_trigger::ids::{EventId, WorkspaceId};
use custos_trigger::resume::{ResumeKey, ResumeStore, ResumeWait};
use custos_trigger::subscription::{Subscription, SubscriptionStore};
use integration_tests::{
    depth, dynamodb_at, endpoint, queue_attribute, sqs_at, unique, Call, FakeWorkflow,
};
use serde_json::{json, Value};

struct Stack {
    outputs: HashMap<String, String>,
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    fake: FakeWorkflow,
    workspace: String,
}

impl Stack {
    fn new() -> Self {
        let path = endpoint("CUSTOS_E2E_OUTPUTS");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let outputs: HashMap<String, String> = serde_json::from_str(&text).expect("outputs json");
        let emulator = endpoint("CUSTOS_E2E_ENDPOINT");
        Self {
            outputs,
            dynamodb: dynamodb_at(&emulator),
            sqs: sqs_at(&emulator),
            fake: FakeWorkflow::at(&endpoint("CUSTOS_E2E_WORKFLOW_URL")),
            workspace: unique("ws-e2e"),
        }
    }

    fn output(&self, key: &str) -> &str {
        self.outputs
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no output {key}"))
    }

    fn ws(&self) -> WorkspaceId {
        WorkspaceId::new(self.workspace.as_str()).unwrap()
    }

    async fn subscribe(&self, id: &str, selector: &str) {
        let subscription: Subscription = serde_json::from_value(json!({
            "workspaceId": self.workspace, "subscriptionId": id, "sourceType": "internal",
            "workflowId": "wf-e2e", "targetWorkflowVersionId": "wv-e2e", "selector": selector,
            "inputMapping": {"from": "${{ event.data.runId }}"}, "state": "active",
            "createdAt": "2026-11-26T00:00:00Z", "updatedAt": "2026-11-26T00:00:00Z"
        }))
        .unwrap();
        DynamoSubscriptionStore::new(self.dynamodb.clone(), self.output("SubscriptionsTableName"))
            .put(&subscription)
            .await
            .unwrap();
    }

    fn envelope(&self, run: &str, extra: Value) -> Value {
        let mut envelope = json!({"workflowVersionId": "wv-parent", "runId": run, "workspace": self.workspace,
                                  "status": "succeeded", "occurredAt": "2026-11-26T10:00:00Z"});
        if let (Some(target), Some(more)) = (envelope.as_object_mut(), extra.as_object()) {
            target.extend(more.clone());
        }
        envelope
    }

    /// Publishes a lifecycle envelope the way the Workflow Service does; returns its eventId.
    async fn publish(&self, envelope: &Value) -> String {
        self.sqs
            .send_message()
            .queue_url(self.output("WorkflowEventsQueueUrl"))
            .message_body(envelope.to_string())
            .send()
            .await
            .unwrap();
        custos_trigger::stage::ingest::lifecycle_envelope(envelope)
            .unwrap()
            .event
            .event_id
            .to_string()
    }

    async fn outcomes(&self, event_id: &str) -> Vec<LedgerEntry> {
        DynamoLedger::new(self.dynamodb.clone(), self.output("LedgerTableName"))
            .for_event(&self.ws(), &EventId::new(event_id).unwrap())
            .await
            .unwrap()
    }

    /// Waits (bounded) until every match of the event reached a final ledger state.
    async fn settled(&self, event_id: &str, matches: usize) -> Vec<LedgerEntry> {
        for _ in 0..180 {
            let entries = self.outcomes(event_id).await;
            let done = entries.iter().filter(|e| {
                e.status != LedgerStatus::Claimed && e.status != LedgerStatus::Released
            });
            if entries.len() == matches && done.count() == matches {
                return entries;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!(
            "event {event_id} did not settle: {:?}",
            self.outcomes(event_id).await
        );
    }

    /// Waits (bounded) until the pipeline queues hold nothing, in flight or visible.
    async fn drained(&self) {
        for _ in 0..180 {
            let mut total = 0;
            for key in [
                "WorkflowEventsQueueUrl",
                "NormalizedQueueUrl",
                "DispatchQueueUrl",
            ] {
                total += depth(&self.sqs, self.output(key)).await;
            }
            if total == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("pipeline queues did not drain");
    }

    async fn calls(&self, route: &str) -> Vec<Call> {
        self.fake
            .calls(route)
            .await
            .into_iter()
            .filter(|c| c.body["workspaceId"] == self.workspace.as_str())
            .collect()
    }
}

#[tokio::test]
async fn a_fired_event_starts_a_run_with_the_dedup_key_and_a_duplicate_delivery_does_not() {
    let stack = Stack::new();
    stack
        .subscribe("sub-on-success", r#"event.data.status == "succeeded""#)
        .await;
    stack
        .subscribe("sub-on-failure", r#"event.data.status == "failed""#)
        .await;
    let envelope = stack.envelope("run-1", json!({}));
    let event_id = stack.publish(&envelope).await;
    let entries = stack.settled(&event_id, 1).await;
    assert_eq!(entries[0].status, LedgerStatus::Committed);
    let starts = stack.calls("start").await;
    assert_eq!(starts.len(), 1);
    assert_eq!(
        starts[0].idempotency_key.as_deref(),
        Some(entries[0].key.as_str())
    );
    assert_eq!(starts[0].run_id, entries[0].run_id);
    assert_eq!(starts[0].body["inputs"], json!({"from": "run-1"}));

    // The Workflow Service delivers the same envelope again (at-least-once).
    stack.publish(&envelope).await;
    stack.drained().await;
    assert_eq!(stack.calls("start").await.len(), 1, "no second StartRun");
}

#[tokio::test]
async fn a_workflow_service_answering_503_twice_is_dispatched_after_growing_delays() {
    let stack = Stack::new();
    stack.subscribe("sub", "true").await;
    stack
        .fake
        .fault(json!({"status": 503, "count": 2, "workspace": stack.workspace}))
        .await;
    let event_id = stack.publish(&stack.envelope("run-2", json!({}))).await;
    let entries = stack.settled(&event_id, 1).await;
    assert_eq!(entries[0].status, LedgerStatus::Committed);
    assert_eq!(entries[0].attempts, 3);
    let starts = stack.calls("start").await;
    assert_eq!(
        starts.iter().map(|c| c.status).collect::<Vec<_>>(),
        [503, 503, 201]
    );
    // SQS cannot redeliver before the visibility set by the backoff (1 s, then 2 s) passes.
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|w| w[1].received_at_ms - w[0].received_at_ms)
        .collect();
    assert!(gaps[0] >= 1_000, "{gaps:?}");
    assert!(gaps[1] >= 2_000, "{gaps:?}");
}

#[tokio::test]
async fn a_400_is_dead_lettered_and_visible_in_the_ledger() {
    let stack = Stack::new();
    stack.subscribe("sub", "true").await;
    stack
        .fake
        .fault(json!({"status": 400, "count": 1, "workspace": stack.workspace}))
        .await;
    let event_id = stack.publish(&stack.envelope("run-3", json!({}))).await;
    let entries = stack.settled(&event_id, 1).await;
    assert_eq!(entries[0].status, LedgerStatus::DeadLettered);
    assert!(entries[0]
        .last_error
        .as_deref()
        .unwrap_or_default()
        .contains("400"));
    stack.drained().await;
    assert_eq!(
        stack.calls("start").await.len(),
        1,
        "no retry of a permanent failure"
    );
}

#[tokio::test]
async fn an_unparseable_dispatch_message_lands_in_the_dlq() {
    let stack = Stack::new();
    let garbage = format!("not a dispatch message {}", stack.workspace);
    stack
        .sqs
        .send_message()
        .queue_url(stack.output("DispatchQueueUrl"))
        .message_body(&garbage)
        .send()
        .await
        .unwrap();
    let dlq = stack.output("DispatchDLQUrl");
    for _ in 0..180 {
        // The DLQ alarm watches this metric; it rises above its threshold of 0.
        let visible = queue_attribute(
            &stack.sqs,
            dlq,
            QueueAttributeName::ApproximateNumberOfMessages,
        )
        .await;
        if visible.parse::<u32>().unwrap_or(0) >= 1 {
            let output = stack
                .sqs
                .receive_message()
                .queue_url(dlq)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            assert!(output
                .messages()
                .iter()
                .any(|m| m.body() == Some(garbage.as_str())));
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the unparseable message never reached the DLQ");
}

#[tokio::test]
async fn a_lifecycle_event_starts_a_chained_subscription_and_resumes_a_registered_wait() {
    let stack = Stack::new();
    stack
        .subscribe("chained", r#"event.kind == "workflow.completed""#)
        .await;
    let key = ResumeKey {
        run_id: unique("run"),
        step_id: "wait-for-child".into(),
        event_key: "workflow.completed".into(),
    };
    let resumes = DynamoResumeStore::new(stack.dynamodb.clone(), stack.output("ResumeTableName"));
    resumes
        .put(&ResumeWait {
            resume_id: key.resume_id(),
            run_id: key.run_id.clone(),
            step_id: key.step_id.clone(),
            event_key: key.event_key.clone(),
            selector: None,
            workspace_id: Some(stack.ws()),
            expires_at: 4_000_000_000,
        })
        .await
        .unwrap();
    let envelope = stack.envelope(
        &key.run_id,
        json!({"stepId": key.step_id, "outputs": {"ok": true}}),
    );
    let event_id = stack.publish(&envelope).await;
    let entries = stack.settled(&event_id, 2).await;
    assert!(
        entries.iter().all(|e| e.status == LedgerStatus::Committed),
        "{entries:?}"
    );
    assert_eq!(stack.calls("start").await.len(), 1);
    let raises = stack.calls("raise").await;
    assert_eq!(raises.len(), 1);
    assert_eq!(raises[0].run_id.as_deref(), Some(key.run_id.as_str()));
    assert_eq!(raises[0].step_id.as_deref(), Some("wait-for-child"));
    assert_eq!(raises[0].body["eventName"], "workflow.completed");
    assert_eq!(raises[0].body["payload"]["outputs"], json!({"ok": true}));
    assert!(
        resumes.get(&key.resume_id()).await.unwrap().is_none(),
        "the wait is one-shot"
    );
}

#[tokio::test]
async fn a_signed_webhook_starts_exactly_one_of_two_attached_subscriptions_and_a_replay_none() {
    const SECRET: &str = "whsec_ZTJlLXdlYmhvb2stc2lnbmluZy1zZWNyZXQ=";
    let stack = Stack::new();
    let connector = unique("ci-e2e");
    let secret_ref = integration_tests::put_secret(SECRET).await;
    let instance = serde_json::from_value(json!({
        "connectorInstanceId": connector, "workspaceId": stack.workspace, "scheme": "standard-webhooks",
        "secretRefs": [secret_ref]
    }))
    .unwrap();
    use custos_trigger::webhook::ConnectorStore;
    custos_trigger::aws::DynamoConnectorStore::new(
        stack.dynamodb.clone(),
        stack.output("ConnectorsTableName"),
    )
    .put(&instance)
    .await
    .unwrap();
    for (id, action) in [("on-opened", "opened"), ("on-closed", "closed")] {
        let subscription: Subscription = serde_json::from_value(json!({
            "workspaceId": stack.workspace, "subscriptionId": id, "sourceType": "webhook",
            "connectorInstanceId": connector, "workflowId": "wf", "targetWorkflowVersionId": format!("wv-{action}"),
            "selector": format!("event.data.action == \"{action}\""), "state": "active",
            "createdAt": "2026-11-26T00:00:00Z", "updatedAt": "2026-11-26T00:00:00Z"
        }))
        .unwrap();
        DynamoSubscriptionStore::new(
            stack.dynamodb.clone(),
            stack.output("SubscriptionsTableName"),
        )
        .put(&subscription)
        .await
        .unwrap();
    }
    let body = br#"{"action":"opened","pull_request":{"number":7}}"#;
    let now = custos_trigger::clock::Clock::now_secs(&custos_trigger::clock::SystemClock);
    let headers = integration_tests::standard_webhook_headers(SECRET, &unique("msg"), now, body);
    let url = format!("{}/v1/webhooks/{connector}", stack.output("LocalApiUrl"));
    let post = || {
        let mut request = reqwest::Client::new().post(&url).body(body.to_vec());
        for (name, value) in headers.as_object().unwrap() {
            request = request.header(name.as_str(), value.as_str().unwrap());
        }
        request.send()
    };
    let response = post().await.unwrap();
    assert_eq!(response.status(), 202);
    let event_id = response.json::<Value>().await.unwrap()["eventId"]
        .as_str()
        .unwrap()
        .to_owned();
    let entries = stack.settled(&event_id, 1).await;
    assert_eq!(entries[0].target_id, "on-opened");
    let starts = stack.calls("start").await;
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].body["workflowVersionId"], "wv-opened");

    let replay = post().await.unwrap();
    assert_eq!(replay.status(), 202);
    assert_eq!(
        replay.json::<Value>().await.unwrap()["eventId"],
        event_id.as_str()
    );
    stack.drained().await;
    assert_eq!(
        stack.calls("start").await.len(),
        1,
        "the replayed delivery starts nothing"
    );

    let forged = reqwest::Client::new()
        .post(&url)
        .header("webhook-id", "forged")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", "v1,Zm9yZ2Vk")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert_eq!(forged.headers()["content-type"], "application/problem+json");
}
