//! End-to-end tests against the deployed stack: template.yaml on the local emulator
//! (real functions, queues with redrive policies, event source mappings, tables), with
//! the fake Workflow Service behind it. `scripts/test` deploys the stack first and
//! passes its outputs in `CUSTOS_E2E_OUTPUTS`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

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
        self.publish_all(std::slice::from_ref(envelope))
            .await
            .remove(0)
    }

    async fn outcomes(&self, event_id: &str) -> Vec<LedgerEntry> {
        DynamoLedger::new(self.dynamodb.clone(), self.output("LedgerTableName"))
            .for_event(&self.ws(), &EventId::new(event_id).unwrap())
            .await
            .unwrap()
    }

    /// Waits (bounded) until every match of the event reached a final ledger state.
    async fn settled(&self, event_id: &str, matches: usize) -> Vec<LedgerEntry> {
        // Longer when run against a stack with the default 300 s backoff cap.
        let polls = std::env::var("CUSTOS_E2E_SETTLE_SECONDS")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .map_or(180, |secs| secs * 2);
        for _ in 0..polls {
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

    /// Calls the deployed API as this workspace (the development call-context shim).
    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_as(&self.workspace, method, path, body).await
    }

    /// Calls the deployed API as a caller of `workspace`.
    async fn api_as(
        &self,
        workspace: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let ctx = json!({"workspace_id": workspace, "principal_id": "e2e", "permissions": [
            "trigger:subscriptions:read", "trigger:subscriptions:write",
            "trigger:subscriptions:delete", "trigger:subscriptions:fire",
            "trigger:deadletters:read", "trigger:deadletters:replay"]});
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.output("LocalApiUrl")))
            .header("x-custos-callctx", ctx.to_string());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET /v1/workspaces/{ws}/events/{eventId}` until `done` holds (bounded: 90 s).
    async fn event_status_until(&self, event_id: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.event_status_within(event_id, Duration::from_secs(90), done)
            .await
    }

    /// [`Self::event_status_until`] with its own bound.
    async fn event_status_within(
        &self,
        event_id: &str,
        bound: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let path = format!("/v1/workspaces/{}/events/{event_id}", self.workspace);
        let mut last = Value::Null;
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            let (status, body) = self.api(reqwest::Method::GET, &path, None).await;
            if status == 200 && done(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("event {event_id} never reached the expected status: {last}");
    }

    /// `RegisterResumeSubscription` as the Workflow Service calls it (here through the
    /// development shim instead of IAM); returns the answer.
    async fn register(&self, run: &str, step: &str, event_key: &str) -> (u16, Value) {
        self.register_in(&self.workspace, run, step, event_key)
            .await
    }

    async fn register_in(
        &self,
        workspace: &str,
        run: &str,
        step: &str,
        event_key: &str,
    ) -> (u16, Value) {
        self.api(
            reqwest::Method::POST,
            "/RegisterResumeSubscription",
            Some(json!({"runId": run, "stepId": step, "eventKey": event_key, "workspaceId": workspace})),
        )
        .await
    }

    /// A step lifecycle envelope of `run`/`step` (distinct per `instant`).
    fn step_event(&self, run: &str, step: &str, instant: u32, depth: u32) -> Value {
        json!({"workflowVersionId": "wv-parent", "runId": run, "workspace": self.workspace,
               "stepId": step, "status": "succeeded", "triggerDepth": depth,
               "occurredAt": format!("2026-11-27T10:00:00.{instant:06}Z")})
    }

    /// Sends many lifecycle envelopes at once; returns their eventIds.
    async fn publish_all(&self, envelopes: &[Value]) -> Vec<String> {
        let mut sends = tokio::task::JoinSet::new();
        for envelope in envelopes {
            let (sqs, url, body) = (
                self.sqs.clone(),
                self.output("WorkflowEventsQueueUrl").to_owned(),
                envelope.to_string(),
            );
            sends.spawn(async move {
                sqs.send_message()
                    .queue_url(url)
                    .message_body(body)
                    .send()
                    .await
            });
        }
        while let Some(sent) = sends.join_next().await {
            sent.unwrap().unwrap();
        }
        envelopes
            .iter()
            .map(|e| {
                custos_trigger::stage::ingest::lifecycle_envelope(e)
                    .unwrap()
                    .event
                    .event_id
                    .to_string()
            })
            .collect()
    }

    async fn put_subscription(&self, subscription: Value) {
        let mut subscription = subscription;
        if let Some(fields) = subscription.as_object_mut() {
            fields.insert("workspaceId".into(), self.workspace.as_str().into());
            fields.entry("state").or_insert("active".into());
            fields
                .entry("createdAt")
                .or_insert("2026-11-26T00:00:00Z".into());
            fields
                .entry("updatedAt")
                .or_insert("2026-11-26T00:00:00Z".into());
        }
        let subscription: Subscription = serde_json::from_value(subscription).unwrap();
        DynamoSubscriptionStore::new(self.dynamodb.clone(), self.output("SubscriptionsTableName"))
            .put(&subscription)
            .await
            .unwrap();
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

/// The backoff cap the stack was deployed with (scripts/test: 4 s).
fn deployed_backoff_cap_secs() -> u64 {
    std::env::var("CUSTOS_BACKOFF_CAP_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

/// The issue's acceptance run: the Workflow Service answers 503 to everything for a
/// while (shorter than the retry window), 50 events arrive during it; afterwards every
/// one is dispatched exactly once, none is dead-lettered, and the calls made during the
/// outage stay within about one per waiting match per backoff cap.
#[tokio::test]
async fn a_workflow_service_outage_ends_with_every_event_dispatched_exactly_once() {
    const EVENTS: usize = 50;
    let outage_secs: u64 = std::env::var("CUSTOS_E2E_OUTAGE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let cap = deployed_backoff_cap_secs();
    let stack = Stack::new();
    stack.subscribe("sub-outage", "true").await;
    stack
        .fake
        .fault(json!({"status": 503, "workspace": stack.workspace}))
        .await;
    let outage_started = Instant::now();
    let envelopes: Vec<Value> = (0..EVENTS)
        .map(|i| stack.envelope(&format!("run-outage-{i}"), json!({})))
        .collect();
    let event_ids = stack.publish_all(&envelopes).await;
    tokio::time::sleep(Duration::from_secs(outage_secs).saturating_sub(outage_started.elapsed()))
        .await;
    let during = stack.calls("start").await;
    stack.fake.clear_faults(&stack.workspace).await;
    let recovered = Instant::now();
    assert!(
        during.iter().all(|c| c.status == 503),
        "the outage was total"
    );

    for event_id in &event_ids {
        let entries = stack.settled(event_id, 1).await;
        assert_eq!(entries[0].status, LedgerStatus::Committed, "{entries:?}");
    }
    let settled_after = recovered.elapsed();
    let starts = stack.calls("start").await;
    let created: Vec<&Call> = starts.iter().filter(|c| c.status == 201).collect();
    assert_eq!(created.len(), EVENTS, "exactly one run per event");
    let keys: HashSet<_> = created.iter().map(|c| c.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), EVENTS);
    // The shared breaker notices recovery within a probe interval, and held messages
    // come back within a tenth of the outage's age: the backlog drains within a minute.
    assert!(
        settled_after <= Duration::from_secs(60),
        "all dispatched {:.1} s after recovery",
        settled_after.as_secs_f64()
    );
    let bound = EVENTS as u64 * (outage_secs / cap + 3);
    assert!(
        (during.len() as u64) <= bound,
        "{} calls during the outage; at most about one per waiting match per {cap} s cap ({bound})",
        during.len()
    );
    println!(
        "outage figures: {EVENTS} events, {outage_secs} s outage, backoff cap {cap} s: {} calls during the outage \
         (bound {bound}); all dispatched {:.1} s after recovery; {} calls in all",
        during.len(),
        settled_after.as_secs_f64(),
        starts.len()
    );
}

/// A dispatch message redriven into its DLQ (here put there directly, as SQS does once
/// the receive budget is spent) ends as a `dead_lettered` match with a reason, through
/// the deployed dead-letter recorder, as the event status API shows it.
#[tokio::test]
async fn a_dispatch_message_in_the_dlq_is_recorded_and_its_status_says_dead_lettered() {
    let stack = Stack::new();
    let queued = custos_trigger::stage::ingest::lifecycle_envelope(
        &stack.envelope(&unique("run-dlq"), json!({})),
    )
    .unwrap();
    let event_id = queued.event.event_id.to_string();
    let (status, body) = stack
        .api(
            reqwest::Method::GET,
            &format!("/v1/workspaces/{}/events/{event_id}", stack.workspace),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("trigger.event_not_found"))
    );
    let message = json!({"workspaceId": stack.workspace, "event": queued.event,
        "target": {"type": "start", "subscriptionId": "sub-dlq", "workflowId": "wf", "workflowVersionId": "wv"}});
    stack
        .sqs
        .send_message()
        .queue_url(stack.output("DispatchDLQUrl"))
        .message_body(message.to_string())
        .send()
        .await
        .unwrap();
    let status = stack
        .event_status_until(&event_id, |b| b["matches"][0]["status"] == "dead_lettered")
        .await;
    assert_eq!(status["matches"][0]["reason"], "retries_exhausted");
    assert_eq!(status["matches"][0]["subscriptionId"], "sub-dlq");
    assert!(stack.calls("start").await.is_empty());
}

#[tokio::test]
async fn oversized_fires_are_413_and_one_just_under_the_limit_is_dispatched() {
    use custos_trigger::limits::MAX_EVENT_MESSAGE_BYTES;
    let stack = Stack::new();
    stack
        .put_subscription(json!({"subscriptionId": "sub-big", "sourceType": "manual",
            "workflowId": "wf", "targetWorkflowVersionId": "wv-big",
            "inputMapping": {"size": "${{ size(inputs.blob) }}"}}))
        .await;
    stack
        .put_subscription(json!({"subscriptionId": "sub-copy", "sourceType": "manual",
            "workflowId": "wf", "targetWorkflowVersionId": "wv-copy",
            "inputMapping": {"blob": "${{ inputs.blob }}"}}))
        .await;
    let fire = |id: &'static str, bytes: usize| {
        let path = format!("/v1/workspaces/{}/triggers/{id}:fire", stack.workspace);
        let body = json!({"inputs": {"blob": "x".repeat(bytes)}});
        let stack = &stack;
        async move { stack.api(reqwest::Method::POST, &path, Some(body)).await }
    };
    // A manual event carries its inputs twice (as `data`, and as the raw body), so the
    // largest blob is about half the event limit; where exactly, the library says.
    let queued_size = |bytes: usize| {
        let inputs = json!({"blob": "x".repeat(bytes)});
        let event = custos_trigger::normalize::manual_fire(
            "2026-11-27T10:00:00.123456789Z",
            Some("sub-big"),
            inputs.as_object().unwrap().clone(),
            None,
        )
        .unwrap();
        serde_json::to_string(&json!({"workspaceId": stack.workspace, "event": event}))
            .unwrap()
            .len()
    };
    let largest = (MAX_EVENT_MESSAGE_BYTES - queued_size(0)) / 2;
    // Just under the limit: accepted and dispatched.
    let (status, body) = fire("sub-big", largest - 100).await;
    assert_eq!(status, 202, "{body}");
    let event_id = body["eventId"].as_str().unwrap().to_owned();
    let done = stack
        .event_status_until(&event_id, |b| b["matches"][0]["status"] == "dispatched")
        .await;
    assert!(done["matches"][0]["runId"].is_string());
    let starts = stack.calls("start").await;
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].body["inputs"]["size"], largest - 100);

    // Just over: refused at the door.
    let (status, body) = fire("sub-big", largest + 100).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("trigger.event_too_large")),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains("the event"));
    // Small enough as an event, but its dispatch message (event + copied inputs) is not.
    let (status, body) = fire("sub-copy", largest * 4 / 5).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("trigger.event_too_large")),
        "{body}"
    );
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("the dispatch message"));
    stack.drained().await;
    assert_eq!(
        stack.calls("start").await.len(),
        1,
        "nothing more was started"
    );
}

#[tokio::test]
async fn a_lifecycle_event_too_large_to_carry_is_recorded_as_dead_lettered_too_large() {
    let stack = Stack::new();
    stack.subscribe("sub-any", "true").await;
    // Fits the workflow-events queue (256 KiB) but not the pipeline once normalized.
    let envelope = stack.envelope(
        &unique("run-big"),
        json!({"outputs": {"blob": "y".repeat(250 * 1024)}}),
    );
    let event_id = stack.publish(&envelope).await;
    let status = stack
        .event_status_until(&event_id, |b| b["status"] == "dead_lettered")
        .await;
    assert_eq!(status["reason"], "too_large");
    assert_eq!(status["matches"], json!([]));
    stack.drained().await;
    assert!(stack.calls("start").await.is_empty());
}

/// A body no stage can read goes through the redrive policy to the dispatch DLQ, where
/// the dead-letter recorder audits it whole (`trigger.deadletter.unidentified`, with its
/// opening) and takes it out: nothing waits unseen in a DLQ.
#[tokio::test]
async fn an_unparseable_dispatch_message_reaches_the_dlq_and_the_recorder_audits_it() {
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
    let log_path = endpoint("CUSTOS_E2E_FUNCTION_LOG");
    for _ in 0..240 {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let audited = log.lines().any(|line| {
            line.contains("trigger.deadletter.unidentified") && line.contains(&garbage)
        });
        if audited {
            let dlq = stack.output("DispatchDLQUrl");
            let visible = queue_attribute(
                &stack.sqs,
                dlq,
                QueueAttributeName::ApproximateNumberOfMessages,
            )
            .await;
            assert_eq!(visible, "0", "the recorder took it out of the DLQ");
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the unparseable message was never audited by the dead-letter recorder");
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
            generation: "g1".into(),
            taken: None,
            consumed_by: None,
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
    let consumed = resumes.get(&key.resume_id()).await.unwrap().unwrap();
    assert_eq!(
        consumed.consumed_by.map(|e| e.to_string()),
        Some(event_id),
        "the wait is one-shot: consumed by the event that resumed it"
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

/// The issue's acceptance run: 20 registrations, each hit by 10 matching events sent at
/// once (all 200 concurrently) → exactly 20 `raiseEvent` calls, one per registration;
/// every other event is recorded `superseded` by the winner.
#[tokio::test]
async fn each_registration_is_resumed_exactly_once_by_ten_concurrent_events() {
    let stack = Stack::new();
    let runs: Vec<String> = (0..20)
        .map(|i| format!("{}-{i}", unique("run-once")))
        .collect();
    for run in &runs {
        let (status, body) = stack.register(run, "wait", "workflow.completed").await;
        assert_eq!(status, 200, "{body}");
    }
    let envelopes: Vec<Value> = runs
        .iter()
        .flat_map(|run| (0..10).map(move |i| (run.clone(), i)))
        .map(|(run, i)| stack.step_event(&run, "wait", i, 0))
        .collect();
    let event_ids = stack.publish_all(&envelopes).await;
    let mut superseded = 0;
    for event_id in &event_ids {
        let entry = stack.settled(event_id, 1).await.remove(0);
        match entry.status {
            LedgerStatus::Committed => {}
            LedgerStatus::Superseded => superseded += 1,
            other => panic!("event {event_id}: {other:?}"),
        }
    }
    let raises = stack.calls("raise").await;
    assert_eq!(raises.len(), 20, "one raiseEvent per registration");
    let resumed: HashSet<_> = raises.iter().map(|c| c.run_id.clone().unwrap()).collect();
    assert_eq!(resumed.len(), 20);
    assert_eq!(superseded, 180);
}

#[tokio::test]
async fn a_failed_delivery_leaves_the_wait_live_and_a_new_generation_survives_a_stale_cancel() {
    let stack = Stack::new();
    let run = unique("run-gen");
    let (_, first) = stack.register(&run, "wait", "workflow.completed").await;
    let first_generation = first["generation"].as_str().unwrap().to_owned();
    // The first delivery fails for good (404): the wait stays live for the next event.
    stack
        .fake
        .fault(json!({"status": 404, "count": 1, "route": "raise", "workspace": stack.workspace}))
        .await;
    let ids = stack
        .publish_all(&[stack.step_event(&run, "wait", 1, 0)])
        .await;
    assert_eq!(
        stack.settled(&ids[0], 1).await[0].status,
        LedgerStatus::DeadLettered
    );
    let ids = stack
        .publish_all(&[stack.step_event(&run, "wait", 2, 0)])
        .await;
    assert_eq!(
        stack.settled(&ids[0], 1).await[0].status,
        LedgerStatus::Committed
    );
    let statuses: Vec<u16> = stack
        .calls("raise")
        .await
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [404, 202]);

    // Registered again after the delivery: a new generation, which a late cancel of the
    // old one does not remove.
    let (_, second) = stack.register(&run, "wait", "workflow.completed").await;
    let second_generation = second["generation"].as_str().unwrap().to_owned();
    assert_ne!(first_generation, second_generation);
    let (status, _) = stack
        .api(
            reqwest::Method::POST,
            "/CancelResumeSubscription",
            Some(
                json!({"runId": run, "stepId": "wait", "eventKey": "workflow.completed",
                        "generation": first_generation}),
            ),
        )
        .await;
    assert_eq!(status, 204);
    let ids = stack
        .publish_all(&[stack.step_event(&run, "wait", 3, 0)])
        .await;
    assert_eq!(
        stack.settled(&ids[0], 1).await[0].status,
        LedgerStatus::Committed
    );
    assert_eq!(
        stack.calls("raise").await.len(),
        3,
        "the new wait survived and resumed"
    );
}

#[tokio::test]
async fn an_event_before_its_registration_is_delivered_once_and_not_after_the_park_window() {
    let stack = Stack::new();
    let run = unique("run-early");
    let ids = stack
        .publish_all(&[stack.step_event(&run, "wait", 1, 0)])
        .await;
    let parked = stack
        .event_status_until(&ids[0], |b| b["matches"][0]["status"] == "parked")
        .await;
    assert!(parked["matches"][0]["parkedUntilMs"].is_number());
    let (status, body) = stack.register(&run, "wait", "workflow.completed").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deliveredEventId"], ids[0].as_str());
    stack
        .event_status_until(&ids[0], |b| b["matches"][0]["status"] == "dispatched")
        .await;
    assert_eq!(stack.calls("raise").await.len(), 1);

    // Past the window (45 s on the test stack): kept no longer, and the status says so.
    let late = unique("run-late");
    let ids = stack
        .publish_all(&[stack.step_event(&late, "wait", 1, 0)])
        .await;
    stack
        .event_status_until(&ids[0], |b| b["matches"][0]["status"] == "park_expired")
        .await;
    let (_, body) = stack.register(&late, "wait", "workflow.completed").await;
    assert!(body.get("deliveredEventId").is_none(), "{body}");
    stack.drained().await;
    assert_eq!(
        stack.calls("raise").await.len(),
        1,
        "nothing delivered late"
    );
}

/// The early-arrival race from outside: for each of 200 triples the step's event is
/// published first and its wait registered 0–100 ms later, all at once, so parks and
/// registrations interleave at every offset. Each wait is resumed exactly once.
/// (One CI run lost 1 of 200 while the stack's park window was 15 s and the whole suite
/// loaded the emulator: the match stage took the event twice, so it ran late. The window
/// is 45 s now, and a loss reports whether its registration came back after the parked
/// event's window had closed — the documented limit, not a race.)
#[tokio::test]
async fn two_hundred_events_racing_their_registrations_are_each_delivered_exactly_once() {
    let stack = std::sync::Arc::new(Stack::new());
    let runs: Vec<String> = (0..200)
        .map(|i| format!("{}-{i}", unique("run-race")))
        .collect();
    let mut racers = tokio::task::JoinSet::new();
    for (i, run) in runs.iter().enumerate() {
        let (stack, run) = (stack.clone(), run.clone());
        // Spread deterministically over 0–100 ms (uuid-free: the test must be repeatable).
        let delay_ms = u64::try_from((i * 37) % 101).unwrap();
        racers.spawn(async move {
            let ids = stack
                .publish_all(&[stack.step_event(&run, "wait", 1, 0)])
                .await;
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let (status, body) = stack.register(&run, "wait", "workflow.completed").await;
            assert_eq!(status, 200, "{body}");
            (ids[0].clone(), now_ms(), body)
        });
    }
    let mut registered = Vec::new();
    while let Some(joined) = racers.join_next().await {
        registered.push(joined.unwrap());
    }
    let mut undelivered = Vec::new();
    for (event_id, answered_ms, answer) in &registered {
        let path = format!("/v1/workspaces/{}/events/{event_id}", stack.workspace);
        let mut last = Value::Null;
        for _ in 0..240 {
            let (_, body) = stack.api(reqwest::Method::GET, &path, None).await;
            last = body;
            let status = last["matches"][0]["status"].as_str().unwrap_or("");
            if status == "dispatched" || status == "park_expired" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if last["matches"][0]["status"] != "dispatched" {
            let window_closed_first = last["matches"][0]["parkedUntilMs"]
                .as_i64()
                .is_some_and(|until| until < *answered_ms);
            undelivered.push(format!(
                "{event_id}: registration answered at {answered_ms} ({answer}), \
                 park window closed before it: {window_closed_first}; status {last}"
            ));
        }
    }
    assert!(undelivered.is_empty(), "not delivered: {undelivered:#?}");
    stack.drained().await;
    // Per run, the distinct deliveries (an RPC retried with its idempotency key is one).
    let mut per_run: HashMap<String, HashSet<String>> = HashMap::new();
    for call in stack.calls("raise").await {
        per_run
            .entry(call.run_id.clone().unwrap())
            .or_default()
            .insert(call.idempotency_key.clone().unwrap_or_default());
    }
    assert_eq!(per_run.len(), 200, "every wait resumed");
    assert!(
        per_run.values().all(|keys| keys.len() == 1),
        "each exactly once: {per_run:?}"
    );
}

#[tokio::test]
async fn an_event_of_another_workspace_never_resumes_a_wait() {
    const SECRET: &str = "whsec_ZTJlLXdlYmhvb2stc2lnbmluZy1zZWNyZXQ=";
    let owner = Stack::new();
    let intruder = Stack::new();
    let run = unique("run-tenant");
    for key in ["workflow.completed", "manual.fire", "webhook.received"] {
        let (status, body) = owner.register(&run, "wait", key).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = owner
        .api(
            reqwest::Method::POST,
            "/RegisterResumeSubscription",
            Some(json!({"runId": run, "stepId": "x", "eventKey": "workflow.completed"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("resume.workspace_required"))
    );
    let (status, body) = intruder.register(&run, "wait", "workflow.completed").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("workspace_mismatch")),
        "{body}"
    );

    // Lifecycle: the intruder's event with the owner's run and step.
    let lifecycle = intruder
        .publish_all(&[intruder.step_event(&run, "wait", 1, 0)])
        .await;
    // Manual fire: the intruder's subscription fired with the owner's run and step.
    intruder
        .put_subscription(
            json!({"subscriptionId": "sub-manual", "sourceType": "manual",
            "workflowId": "wf", "targetWorkflowVersionId": "wv"}),
        )
        .await;
    let (status, fired) = intruder
        .api(
            reqwest::Method::POST,
            &format!(
                "/v1/workspaces/{}/triggers/sub-manual:fire",
                intruder.workspace
            ),
            Some(json!({"inputs": {"runId": run, "stepId": "wait"}})),
        )
        .await;
    assert_eq!(status, 202, "{fired}");
    // Webhook: an unsigned-scheme connector of the intruder's, carrying the run and step.
    let connector = unique("ci-intruder");
    let instance = serde_json::from_value(json!({
        "connectorInstanceId": connector, "workspaceId": intruder.workspace,
        "scheme": "standard-webhooks", "secretRefs": [integration_tests::put_secret(SECRET).await]
    }))
    .unwrap();
    use custos_trigger::webhook::ConnectorStore;
    custos_trigger::aws::DynamoConnectorStore::new(
        intruder.dynamodb.clone(),
        intruder.output("ConnectorsTableName"),
    )
    .put(&instance)
    .await
    .unwrap();
    let body = json!({"runId": run, "stepId": "wait"}).to_string();
    let now = custos_trigger::clock::Clock::now_secs(&custos_trigger::clock::SystemClock);
    let headers =
        integration_tests::standard_webhook_headers(SECRET, &unique("msg"), now, body.as_bytes());
    let mut request = reqwest::Client::new()
        .post(format!(
            "{}/v1/webhooks/{connector}",
            intruder.output("LocalApiUrl")
        ))
        .body(body);
    for (name, value) in headers.as_object().unwrap() {
        request = request.header(name.as_str(), value.as_str().unwrap());
    }
    let delivered = request.send().await.unwrap();
    assert_eq!(delivered.status(), 202);
    let webhook_event = delivered.json::<Value>().await.unwrap()["eventId"]
        .as_str()
        .unwrap()
        .to_owned();

    // Manual fires never resume anything (they address one start subscription).
    let manual = intruder
        .event_status_until(fired["eventId"].as_str().unwrap(), |b| {
            b["matches"][0]["status"] == "dispatched"
        })
        .await;
    assert_eq!(manual["matches"].as_array().unwrap().len(), 1, "{manual}");
    // Lifecycle and webhook events find no wait of their own workspace: parked there.
    for event_id in [&lifecycle[0], &webhook_event] {
        intruder
            .event_status_until(event_id, |b| b["matches"][0]["status"] == "parked")
            .await;
    }
    intruder.drained().await;
    assert!(owner.calls("raise").await.is_empty());
    assert!(intruder.calls("raise").await.is_empty());
    // The owner's own event still resumes its wait.
    let own = owner
        .publish_all(&[owner.step_event(&run, "wait", 2, 0)])
        .await;
    assert_eq!(
        owner.settled(&own[0], 1).await[0].status,
        LedgerStatus::Committed
    );
    assert_eq!(owner.calls("raise").await.len(), 1);
}

/// A loop that runs through resume waits (each resumed step makes the run emit the next
/// event, carrying the depth the Workflow Service echoes) stops at the workspace's
/// limit (3 for `ws-e2e-loop` on the test stack) with `trigger.loop.detected`.
#[tokio::test]
async fn a_loop_through_resume_waits_stops_at_the_depth_limit() {
    let mut stack = Stack::new();
    stack.workspace = "ws-e2e-loop".to_owned();
    let run = unique("run-loop");
    let mut depth = 0;
    for step in 0..10 {
        let step_id = format!("step-{step}");
        stack.register(&run, &step_id, "workflow.completed").await;
        let ids = stack
            .publish_all(&[stack.step_event(&run, &step_id, step, depth)])
            .await;
        let entry = stack.settled(&ids[0], 1).await.remove(0);
        if entry.status == LedgerStatus::LoopRejected {
            assert_eq!(depth, 4, "rejected once depth > limit (3)");
            let raises: Vec<Call> = stack
                .calls("raise")
                .await
                .into_iter()
                .filter(|c| c.run_id.as_deref() == Some(run.as_str()))
                .collect();
            assert_eq!(raises.len(), 4, "depths 0..=3 were delivered");
            return;
        }
        assert_eq!(entry.status, LedgerStatus::Committed);
        // The Workflow Service echoes the raise's triggerDepth on what the run emits next.
        let raise = stack
            .calls("raise")
            .await
            .into_iter()
            .find(|c| {
                c.step_id.as_deref() == Some(step_id.as_str())
                    && c.run_id.as_deref() == Some(run.as_str())
            })
            .expect("raised");
        depth = u32::try_from(raise.body["triggerDepth"].as_u64().unwrap()).unwrap();
    }
    panic!("the loop was never stopped");
}

/// Settles every event's matches (`per_event` each) and returns their ledger items.
async fn settle_all(stack: &Stack, event_ids: &[String], per_event: usize) -> Vec<LedgerEntry> {
    let mut all = Vec::new();
    for id in event_ids {
        all.extend(stack.settled(id, per_event).await);
    }
    all
}

/// Pages through `GET dead-letters` with `filter` (a query string) in pages of `limit`.
async fn list_dead_letters(stack: &Stack, filter: &str, limit: usize) -> Vec<Value> {
    let (mut items, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let mut path = format!(
            "/v1/workspaces/{}/dead-letters?limit={limit}{filter}",
            stack.workspace
        );
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let (status, body) = stack.api(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 200, "{body}");
        let page = body["items"].as_array().unwrap().clone();
        assert!(page.len() <= limit);
        items.extend(page);
        match body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Waits (bounded) until the ledger item of `key` in this workspace has `status`.
async fn ledger_status_becomes(stack: &Stack, entry: &LedgerEntry, status: LedgerStatus) {
    let ledger = DynamoLedger::new(stack.dynamodb.clone(), stack.output("LedgerTableName"));
    for _ in 0..180 {
        let now = ledger
            .get(&stack.ws(), &entry.key)
            .await
            .unwrap()
            .map(|e| e.status);
        if now == Some(status) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{} never became {status:?}", entry.key);
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_with_their_original_keys_and_a_discard_is_final() {
    let stack = Stack::new();
    stack.subscribe("sub-a", "true").await;
    stack.subscribe("sub-b", "true").await;
    stack
        .fake
        .fault(json!({"status": 400, "count": 6, "workspace": stack.workspace}))
        .await;
    let envelopes: Vec<Value> = (0..3)
        .map(|i| stack.envelope(&format!("run-dl-{i}"), json!({})))
        .collect();
    let event_ids = stack.publish_all(&envelopes).await;
    let entries = settle_all(&stack, &event_ids, 2).await;
    assert!(
        entries
            .iter()
            .all(|e| e.status == LedgerStatus::DeadLettered),
        "{entries:?}"
    );

    // Listed with a cursor, filtered by subscription and reason, and nobody else's.
    let all = list_dead_letters(&stack, "", 4).await;
    assert_eq!(all.len(), 6);
    let ids: HashSet<&str> = all
        .iter()
        .map(|d| d["deadLetterId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 6, "no item twice across pages");
    assert!(
        all.iter()
            .all(|d| d["reason"] == "rejected" && d["replayable"] == true),
        "{all:?}"
    );
    assert!(
        all.iter()
            .all(|d| !d["detail"].as_str().unwrap().contains("http")),
        "no internal URL: {all:?}"
    );
    assert_eq!(
        list_dead_letters(&stack, "&subscriptionId=sub-a", 2)
            .await
            .len(),
        3
    );
    assert!(list_dead_letters(&stack, "&reason=retries_exhausted", 10)
        .await
        .is_empty());
    let base = format!("/v1/workspaces/{}", stack.workspace);
    for path in [format!("{base}/dead-letters"), format!("{base}/events")] {
        let (status, body) = stack
            .api_as("ws-intruder", reqwest::Method::GET, &path, None)
            .await;
        assert_eq!(status, 403, "{body}");
    }
    let first = all[0]["deadLetterId"].as_str().unwrap().to_owned();
    let intruder = format!("/v1/workspaces/ws-intruder/dead-letters/{first}");
    let (status, body) = stack
        .api_as("ws-intruder", reqwest::Method::GET, &intruder, None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("trigger.deadletter_not_found"))
    );
    let (status, _) = stack
        .api_as(
            "ws-intruder",
            reqwest::Method::POST,
            &format!("{intruder}:replay"),
            None,
        )
        .await;
    assert_eq!(
        status, 404,
        "another workspace's dead letter cannot be replayed"
    );

    // Inspect one: the event and the resolved inputs.
    let (status, one) = stack
        .api(
            reqwest::Method::GET,
            &format!("{base}/dead-letters/{first}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{one}");
    assert!(one["event"]["data"]["runId"]
        .as_str()
        .unwrap()
        .starts_with("run-dl-"));
    assert_eq!(
        one["target"]["inputs"]["from"],
        one["event"]["data"]["runId"]
    );

    stack.fake.clear_faults(&stack.workspace).await;
    let by_id = |id: &str| {
        entries
            .iter()
            .find(|e| e.key.digest() == id)
            .unwrap()
            .clone()
    };

    // One replayed, one discarded, the rest in bulk.
    let (status, body) = stack
        .api(
            reqwest::Method::POST,
            &format!("{base}/dead-letters/{first}:replay"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    ledger_status_becomes(&stack, &by_id(&first), LedgerStatus::Committed).await;
    let (status, body) = stack
        .api(
            reqwest::Method::POST,
            &format!("{base}/dead-letters/{first}:replay"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("trigger.deadletter_not_replayable"))
    );

    let second = all[1]["deadLetterId"].as_str().unwrap().to_owned();
    let (status, _) = stack
        .api(
            reqwest::Method::DELETE,
            &format!("{base}/dead-letters/{second}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    for (method, suffix) in [
        (reqwest::Method::DELETE, ""),
        (reqwest::Method::POST, ":replay"),
    ] {
        let (status, body) = stack
            .api(
                method,
                &format!("{base}/dead-letters/{second}{suffix}"),
                None,
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("trigger.deadletter_not_replayable"))
        );
    }

    let (status, body) = stack
        .api(
            reqwest::Method::POST,
            &format!("{base}/dead-letters:replay"),
            Some(json!({"max": 1000})),
        )
        .await;
    assert_eq!(
        (status, body["replayed"].as_u64()),
        (202, Some(4)),
        "{body}"
    );
    for entry in &entries {
        let want = if entry.key.digest() == second {
            LedgerStatus::Discarded
        } else {
            LedgerStatus::Committed
        };
        ledger_status_becomes(&stack, entry, want).await;
    }
    stack.drained().await;

    // Exactly one run per replayed match, each under the match's original key.
    let started: Vec<Call> = stack
        .calls("start")
        .await
        .into_iter()
        .filter(|c| c.status < 300)
        .collect();
    let keys: Vec<&str> = started
        .iter()
        .filter_map(|c| c.idempotency_key.as_deref())
        .collect();
    let mut expected: Vec<&str> = entries
        .iter()
        .filter(|e| e.key.digest() != second)
        .map(|e| e.key.as_str())
        .collect();
    let mut got = keys.clone();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, expected);
    assert!(list_dead_letters(&stack, "", 10).await.is_empty());
    let discarded = by_id(&second);
    let status = stack
        .event_status_until(discarded.event_id.as_str(), |b| {
            b["matches"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x["status"] == "discarded"))
        })
        .await;
    assert_eq!(status["matches"].as_array().unwrap().len(), 2);
}

/// Bulk replay at its worst: 300 dead letters of ~90 KB each, replayed with one
/// `{"max": 1000}`. It works a page at a time, so every dead letter ends dispatched (or,
/// had the replay stopped, still listed): none is left `pending` without a message.
#[tokio::test]
async fn three_hundred_large_dead_letters_replay_in_pages_and_none_is_stranded() {
    let stack = Stack::new();
    let ledger = DynamoLedger::new(stack.dynamodb.clone(), stack.output("LedgerTableName"));
    let pad = "x".repeat(90 * 1024);
    let mut entries = Vec::new();
    for i in 0..300 {
        let message: custos_trigger::dispatch::DispatchMessage = serde_json::from_value(json!({
            "workspaceId": stack.workspace,
            "event": {"eventId": format!("evt-bulk-{i}"), "kind": "workflow.completed",
                      "source": {"type": "internal", "occurredAt": "2026-12-04T00:00:00Z"},
                      "data": {"runId": format!("run-bulk-{i}"), "pad": pad}},
            "target": {"type": "start", "subscriptionId": "sub-bulk", "workflowId": "wf-e2e",
                       "workflowVersionId": "wv-e2e", "inputs": {"i": i}}
        }))
        .unwrap();
        let entry = message.dead_letter_entry(
            custos_trigger::dedup::DeadLetterReason::Rejected,
            "refused",
            1_800_000_000_000 + i64::from(i),
        );
        ledger.record_unclaimed(&entry).await.unwrap();
        entries.push(entry);
    }
    assert_eq!(list_dead_letters(&stack, "", 200).await.len(), 300);
    let base = format!("/v1/workspaces/{}", stack.workspace);
    let (status, body) = stack
        .api(
            reqwest::Method::POST,
            &format!("{base}/dead-letters:replay"),
            Some(json!({"max": 1000})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (body["replayed"].as_u64(), body["matched"].as_u64()),
        (Some(300), Some(300)),
        "{body}"
    );
    for entry in &entries {
        ledger_status_becomes(&stack, entry, LedgerStatus::Committed).await;
    }
    stack.drained().await;
    assert!(list_dead_letters(&stack, "", 200).await.is_empty());
    let starts = stack.calls("start").await;
    let keys: HashSet<_> = starts.iter().map(|c| c.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), 300, "each dead letter started its run once");
}

#[tokio::test]
async fn an_event_replay_dispatches_only_the_subscription_added_since() {
    let stack = Stack::new();
    stack.subscribe("sub-old", "true").await;
    let event_id = stack
        .publish(&stack.envelope("run-replay", json!({})))
        .await;
    stack.settled(&event_id, 1).await;
    stack.subscribe("sub-new", "true").await;
    let path = format!(
        "/v1/workspaces/{}/events/{event_id}:replay",
        stack.workspace
    );
    let (status, body) = stack.api(reqwest::Method::POST, &path, None).await;
    assert_eq!(status, 202, "{body}");
    let entries = stack.settled(&event_id, 2).await;
    assert!(
        entries.iter().all(|e| e.status == LedgerStatus::Committed),
        "{entries:?}"
    );
    stack.drained().await;
    let starts = stack.calls("start").await;
    let per_sub = |sub: &str| {
        starts
            .iter()
            .filter(|c| {
                c.body["inputs"]["from"] == "run-replay"
                    && c.idempotency_key.as_deref() == Some(key_of(sub, &event_id).as_str())
            })
            .count()
    };
    assert_eq!(
        (per_sub("sub-old"), per_sub("sub-new")),
        (1, 1),
        "{starts:?}"
    );
    assert_eq!(starts.len(), 2);

    let (status, body) = stack
        .api_as("ws-intruder", reqwest::Method::POST, &path, None)
        .await;
    assert_eq!(status, 403, "{body}");
    let unknown = format!(
        "/v1/workspaces/{}/events/no-such-event:replay",
        stack.workspace
    );
    let (status, body) = stack.api(reqwest::Method::POST, &unknown, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("trigger.event_not_found"))
    );
}

/// The dedup key (and so the idempotency key) of `target`'s match of `event_id`.
fn key_of(target: &str, event_id: &str) -> custos_trigger::dedup::DedupKey {
    custos_trigger::dedup::DedupKey::new(target, event_id)
}

#[tokio::test]
async fn a_dry_run_over_archived_events_names_exactly_what_the_saved_selector_then_matches() {
    let stack = Stack::new();
    let envelopes: Vec<Value> = (0..6)
        .map(|i| {
            let status = if i % 3 == 0 { "failed" } else { "succeeded" };
            stack.envelope(&format!("run-dry-{i}"), json!({"status": status}))
        })
        .collect();
    let event_ids = stack.publish_all(&envelopes).await;
    stack.drained().await;
    let selector = r#"event.data.status == "failed""#;
    let (status, body) = stack
        .api(
            reqwest::Method::POST,
            &format!("/v1/workspaces/{}/triggers:test", stack.workspace),
            Some(
                json!({"selector": selector, "inputMapping": {"from": "${{ event.data.runId }}"},
                        "recent": {"limit": 500}}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["evaluated"], 6, "{body}");
    let predicted: HashSet<String> = body["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["eventId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(predicted.len(), 2, "{body}");
    assert!(
        stack.calls("start").await.is_empty(),
        "a dry run dispatches nothing"
    );

    // Save it, offer every archived event again, and see what it really matches.
    stack.subscribe("sub-dry", selector).await;
    for id in &event_ids {
        let path = format!("/v1/workspaces/{}/events/{id}:replay", stack.workspace);
        assert_eq!(stack.api(reqwest::Method::POST, &path, None).await.0, 202);
    }
    stack.drained().await;
    for id in &predicted {
        stack.settled(id, 1).await;
    }
    let actual: HashSet<String> = stack
        .calls("start")
        .await
        .iter()
        .filter_map(|c| {
            event_ids
                .iter()
                .find(|id| c.idempotency_key.as_deref() == Some(key_of("sub-dry", id).as_str()))
                .cloned()
        })
        .collect();
    assert_eq!(actual, predicted);

    let (status, listed) = stack
        .api(
            reqwest::Method::GET,
            &format!("/v1/workspaces/{}/events?limit=3", stack.workspace),
            None,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["items"].as_array().unwrap().len(), 3);
    assert!(listed["nextCursor"].is_string());
}

/// The log lines (JSON) of the deployed functions that mention `needle`.
fn function_log_lines(needle: &str) -> Vec<Value> {
    let log = std::fs::read_to_string(endpoint("CUSTOS_E2E_FUNCTION_LOG")).unwrap_or_default();
    json_lines_containing(log.lines(), needle)
}

/// The lines that mention `needle` and are JSON, parsed.
fn json_lines_containing<'a>(lines: impl Iterator<Item = &'a str>, needle: &str) -> Vec<Value> {
    lines
        .filter(|line| line.contains(needle))
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[tokio::test]
async fn one_trace_id_follows_a_fired_event_to_the_workflow_service_and_through_every_function() {
    let stack = Stack::new();
    stack
        .put_subscription(
            json!({"subscriptionId": "sub-traced", "sourceType": "manual",
            "workflowId": "wf", "targetWorkflowVersionId": "wv-traced"}),
        )
        .await;
    let trace_id = format!("{:032x}", rand_trace_seed());
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let ctx = json!({"workspace_id": stack.workspace, "principal_id": "e2e",
                     "permissions": ["trigger:subscriptions:fire", "trigger:subscriptions:read"]});
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/workspaces/{}/triggers/sub-traced:fire",
            stack.output("LocalApiUrl"),
            stack.workspace
        ))
        .header("x-custos-callctx", ctx.to_string())
        .header("traceparent", &traceparent)
        .json(&json!({"inputs": {"x": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.unwrap();
    let event_id = body["eventId"].as_str().unwrap().to_owned();
    stack
        .event_status_until(&event_id, |b| b["matches"][0]["status"] == "dispatched")
        .await;

    let starts = stack.calls("start").await;
    let sent = starts[0]
        .traceparent
        .as_deref()
        .expect("a traceparent header");
    assert_eq!(&sent[3..35], trace_id, "same trace, {sent}");
    assert_ne!(sent, traceparent, "each hop sends its own parent id");

    // Every function the event passed logged it under the trace id: the API function
    // (read back from its CloudWatch log group in the emulator), match and dispatch
    // (the emulator's own log holds the queue-driven functions' output).
    let api_group = format!("/aws/lambda/{}", stack.output("ApiFunctionName"));
    let mut seen = HashSet::new();
    for _ in 0..60 {
        seen = function_log_lines(&trace_id)
            .into_iter()
            .chain(cloudwatch_log_lines(&api_group, &trace_id).await)
            .filter_map(|line| line["message"].as_str().map(str::to_owned))
            .collect();
        if ["fire accepted", "event matched", "dispatch finished"]
            .iter()
            .all(|m| seen.contains(*m))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("log lines with trace id {trace_id}: {seen:?}");
}

/// The JSON log lines of a CloudWatch Logs group (the emulator's) that contain `needle`.
async fn cloudwatch_log_lines(group: &str, needle: &str) -> Vec<Value> {
    let response = reqwest::Client::new()
        .post(endpoint("CUSTOS_E2E_ENDPOINT"))
        .header("x-amz-target", "Logs_20140328.FilterLogEvents")
        .header("content-type", "application/x-amz-json-1.1")
        .body(json!({"logGroupName": group}).to_string())
        .send()
        .await;
    let Ok(response) = response else {
        return Vec::new();
    };
    let body: Value = response.json().await.unwrap_or_default();
    let messages = body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["message"].as_str())
        .flat_map(str::lines);
    json_lines_containing(messages, needle)
}

#[tokio::test]
async fn the_api_match_and_dispatch_functions_write_emf_metrics_for_a_fired_event() {
    let stack = Stack::new();
    stack
        .put_subscription(
            json!({"subscriptionId": "sub-metered", "sourceType": "manual",
            "workflowId": "wf", "targetWorkflowVersionId": "wv-metered"}),
        )
        .await;
    let path = format!(
        "/v1/workspaces/{}/triggers/sub-metered:fire",
        stack.workspace
    );
    let (status, body) = stack
        .api(reqwest::Method::POST, &path, Some(json!({"inputs": {}})))
        .await;
    assert_eq!(status, 202, "{body}");
    let event_id = body["eventId"].as_str().unwrap().to_owned();
    stack
        .event_status_until(&event_id, |b| b["matches"][0]["status"] == "dispatched")
        .await;
    // The documents name the workspace in their `workspaceIds` property; a function
    // flushes them when its invocation ends, just after the work the status shows.
    let wanted = [
        ("api", "EventsIngested", "Count"),
        ("match", "MatchesPerEvent", "Count"),
        ("match", "MatchTime", "Microseconds"),
        ("dispatch", "EndToEndLatency", "Milliseconds"),
        ("dispatch", "WorkflowRpcLatency", "Milliseconds"),
    ];
    let api_group = format!("/aws/lambda/{}", stack.output("ApiFunctionName"));
    let mut found = Vec::new();
    for _ in 0..60 {
        found = function_log_lines(&stack.workspace)
            .into_iter()
            .chain(cloudwatch_log_lines(&api_group, &stack.workspace).await)
            .filter(|line| line.get("_aws").is_some())
            .flat_map(|document| {
                let function = document["function"].as_str().unwrap_or_default().to_owned();
                document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |m| {
                        let name = m["Name"].as_str().unwrap_or_default().to_owned();
                        let unit = m["Unit"].as_str().unwrap_or_default().to_owned();
                        (function.clone(), name, unit)
                    })
            })
            .collect();
        let has = |(f, n, u): &(&str, &str, &str)| {
            found
                .iter()
                .any(|(ff, nn, uu)| ff == f && nn == n && uu == u)
        };
        if wanted.iter().all(has) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("EMF metrics of workspace {}: {found:?}", stack.workspace);
}

/// A trace id unique to this run (the clock's nanoseconds mixed with the process id).
fn rand_trace_seed() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    nanos ^ (u128::from(std::process::id()) << 64) | 1
}

/// Invokes the scheduler function as its schedule rule would, for the minute `time`.
async fn run_scheduler(stack: &Stack, time: &str) -> Value {
    let url = format!(
        "{}/2015-03-31/functions/{}/invocations",
        endpoint("CUSTOS_E2E_ENDPOINT"),
        stack.output("SchedulerFunctionName")
    );
    let mut tick: Value =
        serde_json::from_str(include_str!("../events/scheduler-tick.json")).unwrap();
    tick["time"] = time.into();
    let response = reqwest::Client::new()
        .post(url)
        .json(&tick)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_minutely_schedule_starts_one_run_per_scheduled_minute_however_often_the_scheduler_runs()
{
    let stack = Stack::new();
    // Written "in 2030", so the emulator's own once-a-minute runs (at today's time)
    // find nothing due, and the invocations below decide what time it is.
    for (id, state) in [("sub-cron", "active"), ("sub-cron-paused", "paused")] {
        stack
            .put_subscription(json!({
                "subscriptionId": id, "sourceType": "scheduled", "state": state,
                "workflowId": "wf", "targetWorkflowVersionId": "wv-cron",
                "schedule": {"cron": "* * * * *"},
                "inputMapping": {"scheduled": "${{ event.data.scheduledTime }}"},
                "createdAt": "2030-01-01T00:00:00Z", "updatedAt": "2030-01-01T00:00:00Z"
            }))
            .await;
    }
    // Minute one twice in a row; minute two by two runs at once (both may emit the
    // tick before either moves the schedule on: the ledger keeps it to one run).
    for time in ["2030-01-01T00:01:05Z", "2030-01-01T00:01:40Z"] {
        let report = run_scheduler(&stack, time).await;
        assert!(report["ticks"].is_number(), "{report}");
    }
    let (one, two) = tokio::join!(
        run_scheduler(&stack, "2030-01-01T00:02:02Z"),
        run_scheduler(&stack, "2030-01-01T00:02:03Z")
    );
    assert!(
        one["ticks"].is_number() && two["ticks"].is_number(),
        "{one} {two}"
    );
    let scheduled_inputs = || async {
        stack
            .calls("start")
            .await
            .iter()
            .map(|c| {
                c.body["inputs"]["scheduled"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect::<Vec<String>>()
    };
    let mut scheduled = Vec::new();
    for _ in 0..60 {
        scheduled = scheduled_inputs().await;
        if scheduled.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Whatever else is in flight has had the time the two runs took to arrive too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut scheduled_now = scheduled_inputs().await;
    scheduled_now.sort();
    assert_eq!(
        scheduled_now,
        ["2030-01-01T00:01:00.000Z", "2030-01-01T00:02:00.000Z"],
        "two minutes, two runs, none for the paused schedule (first seen: {scheduled:?})"
    );
}

fn now_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(since_epoch.as_millis()).unwrap()
}

/// Creates a start subscription on this workspace's lifecycle events through the API
/// (as a user would, `flow` included); returns its id.
async fn subscribe_with_flow(stack: &Stack, flow: Value) -> String {
    subscribe_with(stack, "event.kind == \"workflow.completed\"", flow).await
}

/// [`subscribe_with_flow`] with its own selector.
async fn subscribe_with(stack: &Stack, selector: &str, flow: Value) -> String {
    let (status, body) = stack
        .api(
            reqwest::Method::POST,
            &format!("/v1/workspaces/{}/triggers", stack.workspace),
            Some(json!({
                "sourceType": "internal", "workflowId": "wf-flow",
                "targetWorkflowVersionId": "wv-flow",
                "selector": selector,
                "inputMapping": {"run": "${{ event.data.runId }}"},
                "flow": flow
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["subscriptionId"].as_str().unwrap().to_owned()
}

/// Publishes `count` lifecycle events (runs `{prefix}-{i:03}`) at once and waits for
/// each one's single match to reach one of `fates`: their ids, and how many reached each.
async fn burst(
    stack: &Stack,
    prefix: &str,
    count: usize,
    wanted: &[&str],
) -> (Vec<String>, HashMap<String, usize>) {
    let envelopes: Vec<Value> = (0..count)
        .map(|i| stack.envelope(&format!("{prefix}-{i:03}"), json!({})))
        .collect();
    let ids = stack.publish_all(&envelopes).await;
    let mut tally = HashMap::new();
    for fate in fates(stack, &ids, wanted).await {
        *tally.entry(fate).or_insert(0) += 1;
    }
    (ids, tally)
}

/// Waits for each event's single match to reach one of `fates`; returns the fates.
async fn fates(stack: &Stack, event_ids: &[String], fates: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for event_id in event_ids {
        let body = stack
            .event_status_until(event_id, |b| {
                fates.iter().any(|f| b["matches"][0]["status"] == *f)
            })
            .await;
        found.push(body["matches"][0]["status"].as_str().unwrap().to_owned());
    }
    found
}

#[tokio::test]
async fn a_rate_limit_of_one_a_minute_starts_one_run_for_ten_events_and_says_so_for_the_rest() {
    let stack = Stack::new();
    let (status, body) = stack
        .api(
            reqwest::Method::POST,
            &format!("/v1/workspaces/{}/triggers", stack.workspace),
            Some(json!({"sourceType": "internal", "workflowId": "wf",
                        "flow": {"rateLimit": {"limit": 0, "period": "PT1M"}}})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("trigger.flow_invalid")),
        "{body}"
    );
    subscribe_with_flow(&stack, json!({"rateLimit": {"limit": 1, "period": "PT1M"}})).await;
    let (_, tally) = burst(&stack, "run-rl", 10, &["dispatched", "rate_limited"]).await;
    assert_eq!(tally.get("dispatched"), Some(&1), "{tally:?}");
    assert_eq!(tally.get("rate_limited"), Some(&9), "{tally:?}");
    stack.drained().await;
    assert_eq!(stack.calls("start").await.len(), 1);
}

#[tokio::test]
async fn an_idempotency_key_starts_one_run_per_key_and_names_the_event_that_holds_it() {
    let stack = Stack::new();
    subscribe_with_flow(
        &stack,
        json!({"idempotency": {"key": "event.data.workflowVersionId", "period": "PT1H"}}),
    )
    .await;
    let ids = stack
        .publish_all(&[
            stack.envelope("run-id-1", json!({"workflowVersionId": "wv-a"})),
            stack.envelope("run-id-2", json!({"workflowVersionId": "wv-a"})),
            stack.envelope("run-id-3", json!({"workflowVersionId": "wv-a"})),
            stack.envelope("run-id-4", json!({"workflowVersionId": "wv-b"})),
        ])
        .await;
    let found = fates(&stack, &ids, &["dispatched", "idempotency_skipped"]).await;
    assert_eq!(found[3], "dispatched", "its own key");
    assert_eq!(
        found[..3].iter().filter(|f| *f == "dispatched").count(),
        1,
        "{found:?}"
    );
    let holder = ids[..3]
        .iter()
        .zip(&found)
        .find(|(_, f)| *f == "dispatched")
        .map(|(id, _)| id.clone())
        .unwrap();
    for (id, fate) in ids[..3].iter().zip(&found) {
        if fate == "idempotency_skipped" {
            let status = stack.event_status_until(id, |_| true).await;
            assert_eq!(status["matches"][0]["supersededBy"], holder.as_str());
        }
    }
    stack.drained().await;
    assert_eq!(stack.calls("start").await.len(), 2);
}

/// 2 runs per 10 s: twenty events, each sent once the match stage took the one before
/// (so arrival order is known from outside), get slots 5 s apart in arrival order; all
/// twenty run, none before its slot (±1 s), none dropped. (When the stack runs behind —
/// the whole suite at once on two cores — a delayed message can start after a later
/// slot's, so start order is not asserted; the schedule is.)
#[tokio::test]
async fn a_throttle_of_two_per_ten_seconds_spreads_twenty_events_over_a_hundred_seconds_in_order() {
    let stack = Stack::new();
    subscribe_with_flow(&stack, json!({"throttle": {"limit": 2, "period": "PT10S"}})).await;
    let mut ids = Vec::new();
    // run → its slot (epoch ms), for the events that had to wait for one
    let mut slots: Vec<(String, i64)> = Vec::new();
    for i in 0..20 {
        let run = format!("run-th-{i:02}");
        let id = stack.publish(&stack.envelope(&run, json!({}))).await;
        let seen = stack
            .event_status_until(&id, |b| {
                let status = &b["matches"][0]["status"];
                status == "dispatched"
                    || (status == "throttled" && b["matches"][0]["throttledUntilMs"].is_i64())
            })
            .await;
        if let Some(slot) = seen["matches"][0]["throttledUntilMs"].as_i64() {
            slots.push((run, slot));
        }
        ids.push(id);
    }
    assert!(
        slots.len() >= 10,
        "a backlog waited for its slots: {slots:?}"
    );
    let spacing: Vec<i64> = slots.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert!(
        spacing.iter().all(|gap| *gap >= 5_000),
        "slots 5 s apart, in arrival order: {spacing:?}"
    );
    for id in &ids {
        stack
            .event_status_until(id, |b| b["matches"][0]["status"] == "dispatched")
            .await;
    }
    let starts = stack.calls("start").await;
    let mut runs: Vec<&str> = starts
        .iter()
        .map(|c| c.body["inputs"]["run"].as_str().unwrap())
        .collect();
    runs.sort_unstable();
    let expected: Vec<String> = (0..20).map(|i| format!("run-th-{i:02}")).collect();
    assert_eq!(runs, expected, "every event ran, once");
    for (run, slot) in &slots {
        let start = starts
            .iter()
            .find(|c| c.body["inputs"]["run"] == run.as_str())
            .unwrap();
        assert!(
            start.received_at_ms as i64 >= slot - 1_000,
            "{run} started {} ms before its slot",
            slot - start.received_at_ms as i64
        );
    }
    let span = slots.last().unwrap().1 - slots[0].1;
    assert!(span >= (slots.len() as i64 - 1) * 5_000);
}

/// Two hundred events of one key within 20 s, debounced by 5 s: one run, 5 s after the
/// burst, with its last event; every other event ends `debounced`. A second
/// subscription on the same events delivers all: its one run gets all 200 as `events`.
#[tokio::test]
async fn a_debounced_burst_of_two_hundred_events_starts_one_run_with_the_last() {
    let stack = Stack::new();
    let last = subscribe_with_flow(
        &stack,
        json!({"debounce": {"key": "event.data.workflowVersionId", "period": "PT5S"}}),
    )
    .await;
    let all = subscribe_with_flow(
        &stack,
        json!({"debounce": {"period": "PT5S", "deliver": "all"}}),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..200 {
        let envelope = stack.envelope(&format!("run-db-{i:03}"), json!({}));
        ids.push(stack.publish(&envelope).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fate_of = |body: &Value, subscription: &str| -> Option<String> {
        body["matches"]
            .as_array()?
            .iter()
            .find(|m| m["subscriptionId"] == subscription)
            .and_then(|m| m["status"].as_str().map(str::to_owned))
    };
    let mut winners = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let settled = |b: &Value| {
            [&last, &all]
                .iter()
                .all(|s| matches!(fate_of(b, s).as_deref(), Some("dispatched" | "debounced")))
        };
        let body = stack.event_status_until(id, settled).await;
        if fate_of(&body, &last).as_deref() == Some("dispatched") {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "one run: {winners:?}");
    // SQS does not keep order: the winner is the last event the match stage saw, which
    // is among the last few sent 100 ms apart.
    assert!(
        winners[0] >= 190,
        "the burst's last event runs, not #{}",
        winners[0]
    );
    stack.drained().await;
    let starts = stack.calls("start").await;
    assert_eq!(starts.len(), 2, "one run per subscription");
    let of = |subscription: &str| {
        starts
            .iter()
            .find(|c| c.body["inputs"]["events"].is_array() == (subscription == all))
            .unwrap()
    };
    assert_eq!(
        of(&last).body["inputs"]["run"],
        format!("run-db-{:03}", winners[0]).as_str()
    );
    let delivered: HashSet<&str> = of(&all).body["inputs"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["runId"].as_str().unwrap())
        .collect();
    assert_eq!(
        delivered.len(),
        200,
        "deliver: all hands the run every event"
    );
}

/// Batches of at most 50: 120 events at once make three runs of 50, 50 and 20 events
/// (the last when its 10 s timeout passes); every event is in exactly one run.
#[tokio::test]
async fn a_batch_of_fifty_makes_three_runs_of_a_hundred_and_twenty_events() {
    let stack = Stack::new();
    subscribe_with_flow(
        &stack,
        json!({"batch": {"maxSize": 50, "timeout": "PT10S"}}),
    )
    .await;
    let (_, tally) = burst(&stack, "run-bt", 120, &["dispatched", "batched"]).await;
    assert_eq!(tally.get("dispatched"), Some(&3), "{tally:?}");
    stack.drained().await;
    let (sizes, batched) = batches(&stack.calls("start").await);
    assert_eq!(sizes, [20, 50, 50]);
    let expected: Vec<String> = (0..120).map(|i| format!("run-bt-{i:03}")).collect();
    assert_eq!(batched, expected, "each event in exactly one run");
}

/// The runs a batching subscription started, one per idempotency key (a retried
/// StartRun counts once): their sizes and every batched event's runId, both sorted.
fn batches(starts: &[Call]) -> (Vec<usize>, Vec<String>) {
    let runs: HashMap<&str, &Call> = starts
        .iter()
        .map(|c| (c.idempotency_key.as_deref().unwrap(), c))
        .collect();
    let events = |c: &&Call| c.body["inputs"]["events"].as_array().unwrap().clone();
    let mut sizes: Vec<usize> = runs.values().map(|c| events(c).len()).collect();
    sizes.sort_unstable();
    let mut batched: Vec<String> = runs
        .values()
        .flat_map(events)
        .map(|e| e["data"]["runId"].as_str().unwrap().to_owned())
        .collect();
    batched.sort_unstable();
    (sizes, batched)
}

/// Hands `bodies` (normalized-queue messages) straight to the deployed match function,
/// ten records per invocation, every invocation at once (so several match instances run
/// side by side, as when SQS delivers a message twice); returns each invocation's answer.
async fn invoke_match_at_once(stack: &Stack, bodies: &[String]) -> Vec<(u16, Value)> {
    let url = format!(
        "{}/2015-03-31/functions/{}/invocations",
        endpoint("CUSTOS_E2E_ENDPOINT"),
        stack.output("MatchFunctionName")
    );
    let mut invocations = tokio::task::JoinSet::new();
    for chunk in bodies.chunks(10) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|body| {
                json!({"messageId": uuid::Uuid::new_v4().to_string(), "receiptHandle": "direct",
                       "body": body, "eventSource": "aws:sqs", "awsRegion": "us-east-1",
                       "attributes": {"ApproximateReceiveCount": "2",
                                      "SentTimestamp": now_ms().to_string()},
                       "messageAttributes": {}})
            })
            .collect();
        let (url, event) = (url.clone(), json!({"Records": records}));
        invocations.spawn(async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(&event)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        });
    }
    invocations.join_all().await
}

/// The processes of one deployed function (the emulator runs each instance as a local
/// process named by `AWS_LAMBDA_FUNCTION_NAME`).
fn instances_of(function: &str) -> Vec<u32> {
    let wanted = format!("AWS_LAMBDA_FUNCTION_NAME={function}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|b| *b == 0)
                    .any(|var| var == wanted.as_bytes())
            })
        })
        .collect()
}

/// The batch test's 120 events (maxSize 50; a 60 s timeout, so that the slower matching
/// of twice the deliveries cannot time a batch out early) again, now with every event matched twice by
/// match instances running side by side (the stack's own delivery, and the same records
/// handed to the match function directly at once), and every dispatch instance killed
/// (SIGKILL) while a StartRun of this workspace is in flight. The killed dispatch's
/// messages come back after the queue's visibility timeout (180 s) and retry with the
/// same idempotency keys: the same three runs of 50, 50 and 20 as with one delivery each,
/// each event in exactly one of them, one run per idempotency key.
#[tokio::test]
#[ignore = "kills the stack's dispatch processes: scripts/test runs it alone, after the suite"]
async fn a_batch_keeps_its_runs_through_doubled_match_instances_and_a_killed_dispatch() {
    let stack = Stack::new();
    subscribe_with_flow(
        &stack,
        json!({"batch": {"maxSize": 50, "timeout": "PT60S"}}),
    )
    .await;
    stack
        .fake
        .fault(json!({"latencyMs": 3000, "route": "start", "workspace": stack.workspace}))
        .await;
    let envelopes: Vec<Value> = (0..120)
        .map(|i| stack.envelope(&format!("run-kb-{i:03}"), json!({})))
        .collect();
    let bodies: Vec<String> = envelopes
        .iter()
        .map(|e| {
            let queued = custos_trigger::stage::ingest::lifecycle_envelope(e).unwrap();
            custos_trigger::stage::ingest::message_body(&queued).unwrap()
        })
        .collect();
    let (ids, invoked) = tokio::join!(
        stack.publish_all(&envelopes),
        invoke_match_at_once(&stack, &bodies)
    );
    assert!(
        invoked.iter().all(|(status, _)| *status == 200),
        "{invoked:?}"
    );
    assert_eq!(invoked.len(), 12);

    let dispatch = stack.output("DispatchFunctionName").to_owned();
    let mut killed = Vec::new();
    for _ in 0..240 {
        if stack.fake.held_starts(&stack.workspace).await > 0 {
            killed = instances_of(&dispatch);
            for pid in &killed {
                let status = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status()
                    .unwrap();
                assert!(status.success(), "kill -9 {pid}");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        !killed.is_empty(),
        "no dispatch instance to kill while a StartRun was in flight"
    );
    stack.fake.clear_faults(&stack.workspace).await;

    let mut tally: HashMap<String, usize> = HashMap::new();
    for event_id in &ids {
        let body = stack
            .event_status_within(event_id, Duration::from_secs(400), |b| {
                ["dispatched", "batched"]
                    .iter()
                    .any(|f| b["matches"][0]["status"] == *f)
            })
            .await;
        let fate = body["matches"][0]["status"].as_str().unwrap().to_owned();
        *tally.entry(fate).or_default() += 1;
    }
    let starts = stack.calls("start").await;
    let (sizes, batched) = batches(&starts);
    let expected: Vec<String> = (0..120).map(|i| format!("run-kb-{i:03}")).collect();
    assert_eq!(
        batched, expected,
        "each event in exactly one run: {sizes:?}"
    );
    assert_eq!(
        sizes,
        [20, 50, 50],
        "the same batches as with one delivery each"
    );
    assert_eq!(
        tally.get("dispatched"),
        Some(&sizes.len()),
        "one dispatched event per run, the others batched into it: {tally:?}"
    );
    let run_ids: HashSet<&str> = starts.iter().filter_map(|c| c.run_id.as_deref()).collect();
    assert_eq!(
        run_ids.len(),
        sizes.len(),
        "a retried StartRun got its first run back ({} calls)",
        starts.len()
    );
    println!("batches {sizes:?}, {} StartRun calls", starts.len());
}

/// Concurrency 2: ten events; the test plays the Workflow Service's side and reports
/// each run's end 3 s after it started (the lifecycle event the service would send).
/// Never more than 2 runs are running, and all 10 run.
#[tokio::test]
async fn a_concurrency_limit_of_two_runs_ten_events_never_more_than_two_at_a_time() {
    let stack = Stack::new();
    subscribe_with(
        &stack,
        "event.data.runId.startsWith(\"src-cc-\")",
        json!({"concurrency": {"limit": 2}}),
    )
    .await;
    let envelopes: Vec<Value> = (0..10)
        .map(|i| stack.envelope(&format!("src-cc-{i}"), json!({})))
        .collect();
    stack.publish_all(&envelopes).await;
    // run id → when its end was sent (epoch ms)
    let mut ended: HashMap<String, i64> = HashMap::new();
    for _ in 0..600 {
        let starts = stack.calls("start").await;
        for start in &starts {
            let run = start.run_id.clone().unwrap();
            let started = start.received_at_ms as i64;
            if !ended.contains_key(&run) && now_ms() >= started + 3_000 {
                stack
                    .publish(&stack.envelope(&run, json!({"status": "succeeded"})))
                    .await;
                ended.insert(run, now_ms());
            }
        }
        // When each run started, how many runs had started and not yet been ended.
        for start in &starts {
            let at = start.received_at_ms as i64;
            let running = starts
                .iter()
                .filter(|s| (s.received_at_ms as i64) < at)
                .filter(|s| {
                    ended
                        .get(s.run_id.as_ref().unwrap())
                        .is_none_or(|end| *end > at)
                })
                .count();
            assert!(
                running < 2,
                "a third run started while two were running: {starts:?}"
            );
        }
        if ended.len() == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let starts = stack.calls("start").await;
    let mut runs: Vec<&str> = starts
        .iter()
        .map(|c| c.body["inputs"]["run"].as_str().unwrap())
        .collect();
    runs.sort_unstable();
    let expected: Vec<String> = (0..10).map(|i| format!("src-cc-{i}")).collect();
    assert_eq!(runs, expected, "all ten ran, each once");
}

/// Singleton: five events at once start one run and the other four are skipped (naming
/// the event whose run is running once it holds the slot); once that run ends (its lifecycle event), the next
/// event starts a run again.
#[tokio::test]
async fn a_singleton_runs_one_at_a_time_and_skips_events_while_it_runs() {
    let stack = Stack::new();
    subscribe_with(
        &stack,
        "event.data.runId.startsWith(\"run-sg-\")",
        json!({"singleton": {}}),
    )
    .await;
    let (_, tally) = burst(&stack, "run-sg", 5, &["dispatched", "singleton_skipped"]).await;
    assert_eq!(tally.get("dispatched"), Some(&1), "{tally:?}");
    assert_eq!(tally.get("singleton_skipped"), Some(&4), "{tally:?}");
    let run = stack.calls("start").await[0].run_id.clone().unwrap();
    stack
        .publish(&stack.envelope(&run, json!({"status": "succeeded"})))
        .await;
    // The slot is free once the end is matched; a later event runs.
    let mut later = Vec::new();
    for i in 0..60 {
        let id = stack
            .publish(&stack.envelope(&format!("run-sg-late-{i}"), json!({})))
            .await;
        let body = stack
            .event_status_until(&id, |b| {
                matches!(
                    b["matches"][0]["status"].as_str(),
                    Some("dispatched" | "singleton_skipped")
                )
            })
            .await;
        later.push(body["matches"][0]["status"].as_str().unwrap().to_owned());
        if later.last().map(String::as_str) == Some("dispatched") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        later.last().map(String::as_str),
        Some("dispatched"),
        "{later:?}"
    );
    assert_eq!(stack.calls("start").await.len(), 2);
}

/// Overlap on a deployed schedule (`bufferOne`): while a tick's run is running the next
/// tick waits and the one after it is skipped; the run's end lets the waiting tick run.
/// The scheduler is invoked for three days of 2029 at 12:30 (`catchUp: none`, so the
/// other scheduler test's 2030 invocations find these instants late and fire nothing).
#[tokio::test]
async fn an_overlapping_schedule_buffers_one_tick_and_skips_the_next_while_its_run_runs() {
    let stack = Stack::new();
    let subscription = "sub-overlap";
    stack
        .put_subscription(json!({
            "subscriptionId": subscription, "sourceType": "scheduled",
            "workflowId": "wf", "targetWorkflowVersionId": "wv-overlap",
            "schedule": {"cron": "30 12 * * *", "catchUp": "none"},
            "flow": {"overlap": "bufferOne"},
            "createdAt": "2029-06-01T00:00:00Z", "updatedAt": "2029-06-01T00:00:00Z"
        }))
        .await;
    let tick = |day: &str| {
        custos_trigger::normalize::derive_event_id(&[
            "cron.tick",
            &stack.workspace,
            subscription,
            &format!("2029-06-{day}T12:30:00.000Z"),
        ])
        .to_string()
    };
    let status = |body: &Value| body["matches"][0]["status"].as_str().map(str::to_owned);
    run_scheduler(&stack, "2029-06-01T12:30:02Z").await;
    let first = stack
        .event_status_until(&tick("01"), |b| status(b).as_deref() == Some("dispatched"))
        .await;
    assert_eq!(status(&first).as_deref(), Some("dispatched"), "{first}");
    let run = first["matches"][0]["runId"].as_str().unwrap().to_owned();
    // The second tick waits for the slot; the third finds the line full.
    run_scheduler(&stack, "2029-06-02T12:30:02Z").await;
    let second = stack
        .event_status_until(&tick("02"), |b| status(b).is_some())
        .await;
    run_scheduler(&stack, "2029-06-03T12:30:02Z").await;
    let third = stack
        .event_status_until(&tick("03"), |b| {
            status(b).as_deref() == Some("singleton_skipped")
        })
        .await;
    assert_eq!(
        status(&third).as_deref(),
        Some("singleton_skipped"),
        "{third}"
    );
    assert_ne!(status(&second).as_deref(), Some("dispatched"), "{second}");
    assert_eq!(stack.calls("start").await.len(), 1, "one run while it runs");
    stack
        .publish(&stack.envelope(&run, json!({"status": "succeeded"})))
        .await;
    let second = stack
        .event_status_until(&tick("02"), |b| status(b).as_deref() == Some("dispatched"))
        .await;
    assert_eq!(status(&second).as_deref(), Some("dispatched"), "{second}");
    assert_eq!(
        stack.calls("start").await.len(),
        2,
        "the buffered tick, never the skipped one"
    );
}
