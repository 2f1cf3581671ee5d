//! Real SQS messages through the match and dispatch handlers, against DynamoDB Local,
//! the local SQS and the fake Workflow Service.

use std::sync::Arc;

use custos_trigger::audit::NoopAuditSink;
use custos_trigger::aws::{DynamoLedger, DynamoResumeStore, DynamoSubscriptionStore, SqsQueue};
use custos_trigger::clock::SystemClock;
use custos_trigger::config::Settings;
use custos_trigger::dedup::{DedupKey, Ledger, LedgerStatus};
use custos_trigger::dispatch::{DispatchSettings, Dispatcher};
use custos_trigger::ids::WorkspaceId;
use custos_trigger::runtime;
use custos_trigger::stage::{DispatchStage, MatchStage};
use custos_trigger::subscription::{Subscription, SubscriptionStore};
use custos_trigger::workflow::http::HttpWorkflowClient;
use integration_tests::{
    acknowledge, depth, dynamodb, queue, queue_with_dlq, receive, sqs, tables, FakeWorkflow,
};
use serde_json::{json, Value};

struct Pipeline {
    sqs: aws_sdk_sqs::Client,
    normalized_url: String,
    dispatch_url: String,
    match_stage: MatchStage,
    dispatch_stage: DispatchStage,
    ledger: DynamoLedger,
    subscriptions: DynamoSubscriptionStore,
    fake: FakeWorkflow,
}

async fn pipeline() -> Pipeline {
    let ddb = dynamodb();
    let sqs = sqs();
    let t = tables(&ddb).await;
    let normalized_url = queue(&sqs, Some(6)).await;
    let dispatch_url = queue(&sqs, Some(6)).await;
    let fake = FakeWorkflow::start().await;
    let settings = Arc::new(Settings::from_lookup(|_| None).unwrap());
    let subscriptions = DynamoSubscriptionStore::new(ddb.clone(), t.subscriptions.clone());
    let resumes = Arc::new(DynamoResumeStore::new(ddb.clone(), t.resumes.clone()));
    let ledger = DynamoLedger::new(ddb.clone(), t.ledger.clone());
    let dispatch_queue = Arc::new(SqsQueue::new(sqs.clone(), dispatch_url.clone()));
    let match_stage = MatchStage::new(
        Arc::new(subscriptions.clone()),
        resumes.clone(),
        dispatch_queue.clone(),
        Arc::new(ledger.clone()),
        Arc::new(NoopAuditSink),
        Arc::new(SystemClock),
        0,
    );
    let parked = Arc::new(custos_trigger::aws::DynamoParkStore::new(
        ddb.clone(),
        t.parked.clone(),
    ));
    let mut dispatcher = Dispatcher::new(
        Arc::new(ledger.clone()),
        Arc::new(HttpWorkflowClient::new(&fake.url).unwrap()),
        resumes,
        parked,
        Arc::new(NoopAuditSink),
        Arc::new(SystemClock),
        DispatchSettings::from_settings(settings),
    );
    dispatcher.jitter = || 0.0;
    Pipeline {
        sqs,
        normalized_url,
        dispatch_url,
        match_stage,
        dispatch_stage: DispatchStage {
            dispatcher,
            queue: dispatch_queue,
            flow: None,
            events: None,
        },
        ledger,
        subscriptions,
        fake,
    }
}

fn subscription(id: &str, ws: &str, selector: &str) -> Subscription {
    serde_json::from_value(json!({
        "workspaceId": ws, "subscriptionId": id, "sourceType": "internal", "workflowId": "wf",
        "targetWorkflowVersionId": "wv-1", "selector": selector,
        "inputMapping": {"run": "${{ event.data.runId }}"}, "state": "active",
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"
    }))
    .unwrap()
}

/// A normalized lifecycle event as ingest puts it on the normalized queue.
fn lifecycle(run: &str, depth: u32) -> (String, Value) {
    let envelope = json!({"workflowVersionId": "wv-parent", "runId": run, "workspace": "ws1",
                          "status": "succeeded", "occurredAt": format!("2026-11-26T00:00:00Z/{run}"),
                          "triggerDepth": depth});
    let queued = custos_trigger::stage::ingest::lifecycle_envelope(&envelope).unwrap();
    let event_id = queued.event.event_id.to_string();
    (event_id, serde_json::to_value(queued).unwrap())
}

impl Pipeline {
    async fn send_normalized(&self, body: &Value) {
        self.sqs
            .send_message()
            .queue_url(&self.normalized_url)
            .message_body(body.to_string())
            .send()
            .await
            .unwrap();
    }

    /// One match batch as Lambda would run it.
    async fn run_match(&self) -> usize {
        let event = receive(&self.sqs, &self.normalized_url, 10, 2).await;
        let response = runtime::match_events(&self.match_stage, None, event.clone())
            .await
            .unwrap();
        assert!(response.batch_item_failures.is_empty());
        acknowledge(&self.sqs, &self.normalized_url, &event, &response).await;
        event.records.len()
    }

    /// One dispatch batch; returns how many messages were returned for a retry.
    async fn run_dispatch(&self, wait_secs: i32) -> (usize, usize) {
        let event = receive(&self.sqs, &self.dispatch_url, 10, wait_secs).await;
        let response = runtime::dispatch_messages(&self.dispatch_stage, event.clone(), None)
            .await
            .unwrap();
        acknowledge(&self.sqs, &self.dispatch_url, &event, &response).await;
        (event.records.len(), response.batch_item_failures.len())
    }

    async fn status(
        &self,
        subscription: &str,
        event_id: &str,
    ) -> custos_trigger::dedup::LedgerEntry {
        self.ledger
            .get(
                &WorkspaceId::new("ws1").unwrap(),
                &DedupKey::new(subscription, event_id),
            )
            .await
            .unwrap()
            .expect("ledger entry")
    }
}

async fn seeded() -> Pipeline {
    let p = pipeline().await;
    p.subscriptions
        .put(&subscription(
            "sub-match",
            "ws1",
            r#"event.data.status == "succeeded""#,
        ))
        .await
        .unwrap();
    p.subscriptions
        .put(&subscription(
            "sub-miss",
            "ws1",
            r#"event.data.status == "failed""#,
        ))
        .await
        .unwrap();
    p.subscriptions
        .put(&subscription("sub-other-ws", "ws2", "true"))
        .await
        .unwrap();
    p
}

#[tokio::test]
async fn one_start_run_per_matching_subscription_with_the_dedup_key_and_no_second_on_redelivery() {
    let p = seeded().await;
    let (event_id, body) = lifecycle("run-a", 0);
    p.send_normalized(&body).await;
    assert_eq!(p.run_match().await, 1);
    assert_eq!(p.run_dispatch(2).await, (1, 0));
    let starts = p.fake.calls("start").await;
    assert_eq!(starts.len(), 1);
    let key = DedupKey::new("sub-match", &event_id);
    assert_eq!(starts[0].idempotency_key.as_deref(), Some(key.as_str()));
    assert_eq!(starts[0].body["idempotencyKey"], key.as_str());
    assert_eq!(starts[0].body["workspaceId"], "ws1");
    assert_eq!(starts[0].body["workflowVersionId"], "wv-1");
    assert_eq!(starts[0].body["inputs"], json!({"run": "run-a"}));
    assert_eq!(starts[0].body["triggerDepth"], 1);
    let entry = p.status("sub-match", &event_id).await;
    assert_eq!(entry.status, LedgerStatus::Committed);
    assert_eq!(entry.run_id, starts[0].run_id);

    // The same normalized message delivered again: matched again, deduped at dispatch.
    p.send_normalized(&body).await;
    assert_eq!(p.run_match().await, 1);
    assert_eq!(p.run_dispatch(2).await, (1, 0));
    assert_eq!(p.fake.calls("start").await.len(), 1, "no second StartRun");
}

#[tokio::test]
async fn a_503_then_success_ends_dispatched_after_a_retry() {
    let p = seeded().await;
    p.fake
        .fault(json!({"status": 503, "count": 1, "route": "start"}))
        .await;
    let (event_id, body) = lifecycle("run-b", 0);
    p.send_normalized(&body).await;
    p.run_match().await;
    assert_eq!(p.run_dispatch(2).await, (1, 1), "returned for a retry");
    assert_eq!(
        p.status("sub-match", &event_id).await.status,
        LedgerStatus::Released
    );
    // Backoff for attempt 1 is 1 s; long-poll until the message is back.
    let mut delivered = (0, 0);
    for _ in 0..10 {
        delivered = p.run_dispatch(5).await;
        if delivered.0 > 0 {
            break;
        }
    }
    assert_eq!(delivered, (1, 0));
    let starts = p.fake.calls("start").await;
    assert_eq!(
        starts.iter().map(|c| c.status).collect::<Vec<_>>(),
        [503, 201]
    );
    assert_eq!(starts[0].idempotency_key, starts[1].idempotency_key);
    let entry = p.status("sub-match", &event_id).await;
    assert_eq!(entry.status, LedgerStatus::Committed);
    assert_eq!(entry.attempts, 2);
    assert_eq!(depth(&p.sqs, &p.dispatch_url).await, 0);
}

#[tokio::test]
async fn a_400_is_dead_lettered_with_its_reason_and_not_retried() {
    let p = seeded().await;
    p.fake
        .fault(json!({"status": 400, "count": 1, "route": "start"}))
        .await;
    let (event_id, body) = lifecycle("run-c", 0);
    p.send_normalized(&body).await;
    p.run_match().await;
    assert_eq!(p.run_dispatch(2).await, (1, 0), "acknowledged, not retried");
    let entry = p.status("sub-match", &event_id).await;
    assert_eq!(entry.status, LedgerStatus::DeadLettered);
    assert!(entry.last_error.unwrap_or_default().contains("400"));
    assert_eq!(p.fake.calls("start").await.len(), 1);
    assert_eq!(depth(&p.sqs, &p.dispatch_url).await, 0);
}

#[tokio::test]
async fn depth_seventeen_is_loop_rejected_without_a_call() {
    let p = seeded().await;
    let (event_id, body) = lifecycle("run-d", 17);
    p.send_normalized(&body).await;
    p.run_match().await;
    assert_eq!(p.run_dispatch(2).await, (1, 0));
    assert!(p.fake.calls("start").await.is_empty());
    assert_eq!(
        p.status("sub-match", &event_id).await.status,
        LedgerStatus::LoopRejected
    );
}

#[tokio::test]
async fn unparseable_dispatch_messages_are_reported_failed_for_the_dlq() {
    let p = pipeline().await;
    p.sqs
        .send_message()
        .queue_url(&p.dispatch_url)
        .message_body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(p.run_dispatch(2).await, (1, 1));
}

/// The redrive path end to end on real SQS: a dispatch message that can never be
/// handled (its ledger table is gone) is returned on every receive until the queue's
/// redrive policy moves it to the DLQ; the dead-letter recorder then records the match
/// as `dead_lettered` / `retries_exhausted` in the (working) ledger.
#[tokio::test]
async fn a_message_redriven_to_the_dlq_ends_dead_lettered_with_a_reason() {
    let p = pipeline().await;
    let ddb = dynamodb();
    let (dispatch_url, dlq_url) = queue_with_dlq(&p.sqs, 2).await;
    let broken = Dispatcher::new(
        Arc::new(DynamoLedger::new(ddb.clone(), "no-such-ledger-table")),
        Arc::new(HttpWorkflowClient::new(&p.fake.url).unwrap()),
        Arc::new(DynamoResumeStore::new(ddb.clone(), "no-such-resume-table")),
        Arc::new(custos_trigger::memory::MemoryParkStore::default()),
        Arc::new(NoopAuditSink),
        Arc::new(SystemClock),
        DispatchSettings::from_settings(Arc::new(Settings::from_lookup(|_| None).unwrap())),
    );
    let stage = DispatchStage {
        dispatcher: broken,
        queue: Arc::new(SqsQueue::new(p.sqs.clone(), dispatch_url.clone())),
        flow: None,
        events: None,
    };
    let (event_id, queued) = lifecycle("run-redrive", 0);
    let message = json!({"workspaceId": "ws1", "event": queued["event"],
        "target": {"type": "start", "subscriptionId": "sub-redrive", "workflowId": "wf", "workflowVersionId": "wv-1"}});
    p.sqs
        .send_message()
        .queue_url(&dispatch_url)
        .message_body(message.to_string())
        .send()
        .await
        .unwrap();
    let mut receives = 0;
    let dead = loop {
        let dead = receive(&p.sqs, &dlq_url, 10, 0).await;
        if !dead.records.is_empty() {
            break dead;
        }
        let event = receive(&p.sqs, &dispatch_url, 10, 1).await;
        if !event.records.is_empty() {
            receives += 1;
            let response = runtime::dispatch_messages(&stage, event.clone(), None)
                .await
                .unwrap();
            assert_eq!(
                response.batch_item_failures.len(),
                1,
                "returned, not dropped"
            );
            acknowledge(&p.sqs, &dispatch_url, &event, &response).await;
        }
        assert!(receives <= 10, "never redriven");
    };
    assert_eq!(receives, 2, "the redrive policy's maxReceiveCount");
    let recorder = custos_trigger::stage::DeadLetterRecorder {
        ledger: Arc::new(p.ledger.clone()),
        resumes: Arc::new(custos_trigger::memory::MemoryResumeStore::default()),
        archive: Arc::new(custos_trigger::memory::MemoryArchive::default()),
        audit: Arc::new(NoopAuditSink),
        clock: Arc::new(SystemClock),
        retention: custos_trigger::archive::Retention { ttl_secs: 3_600 },
        flow: None,
    };
    let response = runtime::record_dead_letters(&recorder, dead.clone())
        .await
        .unwrap();
    assert!(response.batch_item_failures.is_empty());
    acknowledge(&p.sqs, &dlq_url, &dead, &response).await;
    let entry = p.status("sub-redrive", &event_id).await;
    assert_eq!(entry.status, LedgerStatus::DeadLettered);
    assert_eq!(
        entry.reason,
        Some(custos_trigger::dedup::DeadLetterReason::RetriesExhausted)
    );
    assert_eq!(depth(&p.sqs, &dlq_url).await, 0);
}
