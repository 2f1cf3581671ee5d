//! The management API driven with real API Gateway v2 request events against DynamoDB
//! Local and the local SQS, with the match and dispatch handlers and the fake Workflow
//! Service behind it for the full lifecycle.

use std::sync::Arc;

use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use custos_trigger::api::{match_path, Api, ROUTES};
use custos_trigger::audit::AuditName;
use custos_trigger::audit::NoopAuditSink;
use custos_trigger::aws::{DynamoLedger, DynamoResumeStore, DynamoSubscriptionStore, SqsQueue};
use custos_trigger::clock::{Clock, ManualClock, SystemClock};
use custos_trigger::config::Settings;
use custos_trigger::dispatch::{DispatchSettings, Dispatcher};
use custos_trigger::memory::RecordingAuditSink;
use custos_trigger::resume::{ResumeKey, ResumeStore};
use custos_trigger::runtime;
use custos_trigger::selector::SelectorCache;
use custos_trigger::stage::{DispatchStage, MatchStage};
use custos_trigger::subscription::SubscriptionStore;
use integration_tests::{acknowledge, dynamodb, queue, receive, sqs, tables, FakeWorkflow};
use serde_json::{json, Value};

const ALL: [&str; 4] = [
    "trigger:subscriptions:read",
    "trigger:subscriptions:write",
    "trigger:subscriptions:delete",
    "trigger:subscriptions:fire",
];

struct Harness {
    api: Api,
    clock: Arc<ManualClock>,
    audit: Arc<RecordingAuditSink>,
    resumes: DynamoResumeStore,
    sqs: aws_sdk_sqs::Client,
    normalized_url: String,
    dispatch_url: String,
    match_stage: MatchStage,
    dispatch_stage: DispatchStage,
    fake: FakeWorkflow,
}

async fn harness(environment: &str) -> Harness {
    let ddb = dynamodb();
    let sqs = sqs();
    let t = tables(&ddb).await;
    let normalized_url = queue(&sqs, Some(5)).await;
    let dispatch_url = queue(&sqs, Some(6)).await;
    let env = environment.to_owned();
    let settings =
        Arc::new(Settings::from_lookup(|n| (n == "ENVIRONMENT").then(|| env.clone())).unwrap());
    let clock = Arc::new(ManualClock::at_ms(SystemClock.now_ms()));
    let audit = Arc::new(RecordingAuditSink::default());
    let subscriptions = Arc::new(DynamoSubscriptionStore::new(
        ddb.clone(),
        t.subscriptions.clone(),
    ));
    let resumes = DynamoResumeStore::new(ddb.clone(), t.resumes.clone());
    let ledger = Arc::new(DynamoLedger::new(ddb.clone(), t.ledger.clone()));
    let archive = Arc::new(custos_trigger::aws::DynamoEventArchive::new(
        ddb.clone(),
        t.archive.clone(),
    ));
    let parked = Arc::new(custos_trigger::aws::DynamoParkStore::new(
        ddb.clone(),
        t.parked.clone(),
    ));
    let fake = FakeWorkflow::start().await;
    let dispatch_queue = Arc::new(SqsQueue::new(sqs.clone(), dispatch_url.clone()));
    let connectors_table = integration_tests::unique("connectors");
    custos_trigger::aws::tables::create_connectors(&ddb, &connectors_table)
        .await
        .unwrap();
    let intake = Arc::new(custos_trigger::stage::IngestStage {
        normalized_queue: Arc::new(SqsQueue::new(sqs.clone(), normalized_url.clone())),
        archive: archive.clone(),
        audit: audit.clone(),
        clock: clock.clone(),
        retention: settings.archive_retention(),
    });
    let webhooks = custos_trigger::webhook::WebhookIntake {
        connectors: Arc::new(custos_trigger::aws::DynamoConnectorStore::new(
            ddb.clone(),
            connectors_table,
        )),
        secrets: Arc::new(integration_tests::secrets()),
        intake: intake.clone(),
        audit: audit.clone(),
        clock: clock.clone(),
    };
    let api = Api {
        webhooks,
        subscriptions: subscriptions.clone(),
        resumes: Arc::new(resumes.clone()),
        ledger: ledger.clone(),
        dead_letters: ledger.clone(),
        archive,
        parked: parked.clone(),
        intake,
        dispatch_queue: dispatch_queue.clone(),
        audit: audit.clone(),
        clock: clock.clone(),
        settings: settings.clone(),
        cache: SelectorCache::default(),
    };
    let match_stage = MatchStage::new(
        subscriptions,
        Arc::new(resumes.clone()),
        dispatch_queue.clone(),
        ledger.clone(),
        Arc::new(NoopAuditSink),
        Arc::new(SystemClock),
        0,
    )
    .with_parking(parked.clone(), 300);
    let dispatcher = Dispatcher::new(
        ledger,
        Arc::new(custos_trigger::workflow::http::HttpWorkflowClient::new(&fake.url).unwrap()),
        Arc::new(resumes.clone()),
        parked.clone(),
        Arc::new(NoopAuditSink),
        Arc::new(SystemClock),
        DispatchSettings::from_settings(settings),
    );
    Harness {
        api,
        clock,
        audit,
        resumes,
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
        fake,
    }
}

/// Who calls: a Lambda authorizer context, the dev shim header, IAM, or nobody.
#[derive(Clone)]
enum As<'a> {
    Tenant(&'a str, &'a [&'a str]),
    Jwt(&'a str, &'a str),
    Shim(&'a str, &'a [&'a str]),
    Iam,
    Nobody,
}

fn event(
    method: &str,
    path: &str,
    who: As<'_>,
    body: Option<&str>,
    headers: Value,
) -> ApiGatewayV2httpRequest {
    let (raw_path, query) = path.split_once('?').unwrap_or((path, ""));
    let query_map: serde_json::Map<String, Value> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
        .collect();
    let mut headers = headers;
    let authorizer = match who {
        As::Tenant(ws, perms) => json!({"lambda": {"workspace_id": ws, "permissions": perms}}),
        As::Jwt(ws, scope) => {
            json!({"jwt": {"claims": {"workspace_id": ws, "permissions": scope}, "scopes": null}})
        }
        As::Iam => {
            json!({"iam": {"accessKey": "AKIA", "accountId": "123456789012", "callerId": "AROA:wf",
                                   "principalOrgId": null, "userArn": "arn:aws:sts::123456789012:assumed-role/wf/x",
                                   "userId": "AROA:wf", "cognitoIdentity": null}})
        }
        As::Shim(ws, perms) => {
            headers["x-custos-callctx"] =
                json!({"workspace_id": ws, "principal_id": "dev", "permissions": perms})
                    .to_string()
                    .into();
            Value::Null
        }
        As::Nobody => Value::Null,
    };
    let mut request_context = json!({
        "routeKey": "$default", "accountId": "123456789012", "stage": "$default", "requestId": "req-1",
        "apiId": "api", "domainName": "api.local", "domainPrefix": "api", "time": "26/Nov/2026:00:00:00 +0000",
        "timeEpoch": 1795651200000i64,
        "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "tests"}
    });
    if !authorizer.is_null() {
        request_context["authorizer"] = authorizer;
    }
    let mut event = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": raw_path, "rawQueryString": query,
        "headers": headers, "requestContext": request_context, "isBase64Encoded": false
    });
    if !query_map.is_empty() {
        event["queryStringParameters"] = Value::Object(query_map);
    }
    if let Some(body) = body {
        event["body"] = body.into();
    }
    serde_json::from_value(event).unwrap()
}

struct Answer {
    status: u16,
    content_type: String,
    etag: Option<String>,
    body: Value,
}

impl Harness {
    async fn call_with(
        &self,
        method: &str,
        path: &str,
        who: As<'_>,
        body: Option<&str>,
        headers: Value,
    ) -> Answer {
        let response = self
            .api
            .handle(event(method, path, who, body, headers))
            .await;
        answer(method, path.split('?').next().unwrap_or_default(), response)
    }

    async fn call(&self, method: &str, path: &str, who: As<'_>, body: Option<Value>) -> Answer {
        let text = body.map(|b| b.to_string());
        self.call_with(
            method,
            path,
            who,
            text.as_deref(),
            json!({"content-type": "application/json"}),
        )
        .await
    }

    async fn run_pipeline(&self) {
        let event = receive(&self.sqs, &self.normalized_url, 10, 2).await;
        let response = runtime::match_events(&self.match_stage, None, event.clone())
            .await
            .unwrap();
        acknowledge(&self.sqs, &self.normalized_url, &event, &response).await;
        let event = receive(&self.sqs, &self.dispatch_url, 10, 2).await;
        let response = runtime::dispatch_messages(&self.dispatch_stage, event.clone(), None)
            .await
            .unwrap();
        acknowledge(&self.sqs, &self.dispatch_url, &event, &response).await;
    }
}

/// Decodes a response, checking its status is one its route declares.
fn answer(method: &str, path: &str, response: ApiGatewayV2httpResponse) -> Answer {
    let status = u16::try_from(response.status_code).unwrap();
    if let Some(route) = ROUTES
        .iter()
        .find(|r| r.method == method && match_path(r.path, path).is_some())
    {
        assert!(
            route.statuses.contains(&status),
            "{method} {path} answered {status}, not declared in ROUTES"
        );
    }
    let content_type = response
        .headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let etag = response
        .headers
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = match response.body {
        Some(aws_lambda_events::encodings::Body::Text(text)) => {
            serde_json::from_str(&text).unwrap()
        }
        None => Value::Null,
        Some(other) => panic!("unexpected body {other:?}"),
    };
    Answer {
        status,
        content_type,
        etag,
        body,
    }
}

fn assert_problem(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(answer.body["code"], code, "{}", answer.body);
    assert_eq!(answer.body["status"], status);
    for member in ["type", "title", "detail", "instance"] {
        assert!(
            answer.body.get(member).is_some(),
            "{member} missing in {}",
            answer.body
        );
    }
}

const WS1: As<'static> = As::Tenant("ws1", &ALL);

#[tokio::test]
async fn full_lifecycle_create_get_list_patch_fire_status_delete() {
    let h = harness("development").await;
    let created = h
        .call(
            "POST",
            "/v1/workspaces/ws1/triggers",
            WS1,
            Some(json!({
                "sourceType": "manual", "workflowId": "wf-1", "targetWorkflowVersionId": "wv-1",
                "selector": {"field": "env", "matchType": "eq", "value": "prod"},
                "inputMapping": {"env": "${{ inputs.env }}", "note": "fired for ${{ inputs.env }}"}
            })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["subscriptionId"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(
        created.body["selector"], r#"event.data.env == "prod""#,
        "stored as CEL"
    );
    assert_eq!(created.body["state"], "active");
    assert_eq!(created.body["kind"], "start");

    let got = h
        .call(
            "GET",
            &format!("/v1/workspaces/ws1/triggers/{id}"),
            WS1,
            None,
        )
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, created.body);

    let listed = h
        .call(
            "GET",
            "/v1/workspaces/ws1/triggers?state=active&sourceType=manual",
            WS1,
            None,
        )
        .await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["items"][0]["subscriptionId"], id.as_str());

    let patched = h
        .call(
            "PATCH",
            &format!("/v1/workspaces/ws1/triggers/{id}"),
            WS1,
            Some(json!({"selector": "inputs.env == \"prod\" || event.data.env == \"prod\""})),
        )
        .await;
    assert_eq!(
        patched.status, 422,
        "inputs is not a selector root: {}",
        patched.body
    );
    let patched = h
        .call(
            "PATCH",
            &format!("/v1/workspaces/ws1/triggers/{id}"),
            WS1,
            Some(json!({"selector": "event.data.env in [\"prod\", \"stage\"]"})),
        )
        .await;
    assert_eq!(patched.status, 200);
    assert_eq!(
        patched.body["targetWorkflowVersionId"], "wv-1",
        "omitted fields unchanged"
    );

    let fired = h
        .call(
            "POST",
            &format!("/v1/workspaces/ws1/triggers/{id}:fire"),
            WS1,
            Some(json!({"inputs": {"env": "stage"}})),
        )
        .await;
    assert_eq!(fired.status, 202, "{}", fired.body);
    let event_id = fired.body["eventId"].as_str().unwrap().to_owned();
    h.run_pipeline().await;
    let status = h
        .call(
            "GET",
            &format!("/v1/workspaces/ws1/events/{event_id}"),
            WS1,
            None,
        )
        .await;
    assert_eq!(status.status, 200);
    let starts = h.fake.calls("start").await;
    assert_eq!(starts.len(), 1);
    assert_eq!(
        starts[0].body["inputs"],
        json!({"env": "stage", "note": "fired for stage"})
    );
    assert_eq!(status.body["matches"][0]["status"], "dispatched");
    assert_eq!(status.body["matches"][0]["subscriptionId"], id.as_str());
    assert_eq!(
        status.body["matches"][0]["runId"].as_str(),
        starts[0].run_id.as_deref()
    );

    let deleted = h
        .call(
            "DELETE",
            &format!("/v1/workspaces/ws1/triggers/{id}"),
            WS1,
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        h.call(
            "DELETE",
            &format!("/v1/workspaces/ws1/triggers/{id}"),
            WS1,
            None
        )
        .await
        .status,
        204,
        "idempotent"
    );
    let refused = h
        .call(
            "POST",
            &format!("/v1/workspaces/ws1/triggers/{id}:fire"),
            WS1,
            Some(json!({})),
        )
        .await;
    assert_problem(&refused, 409, "trigger.api.subscription_not_fireable");
    assert_eq!(refused.body["subscriptionId"], id.as_str());
    let expired = h
        .call(
            "GET",
            &format!("/v1/workspaces/ws1/triggers/{id}"),
            WS1,
            None,
        )
        .await;
    assert_eq!(expired.body["state"], "expired");
}

async fn create(h: &Harness, body: Value) -> String {
    let created = h
        .call("POST", "/v1/workspaces/ws1/triggers", WS1, Some(body))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.body["subscriptionId"].as_str().unwrap().to_owned()
}

fn manual() -> Value {
    json!({"sourceType": "manual", "workflowId": "wf", "targetWorkflowVersionId": "wv"})
}

#[tokio::test]
async fn same_idempotency_key_fires_share_an_event_id() {
    let h = harness("development").await;
    let id = create(&h, manual()).await;
    let path = format!("/v1/workspaces/ws1/triggers/{id}:fire");
    let headers = json!({"content-type": "application/json", "idempotency-key": "retry-1"});
    let a = h
        .call_with("POST", &path, WS1, Some("{}"), headers.clone())
        .await;
    h.clock.advance_ms(1_000);
    let b = h.call_with("POST", &path, WS1, Some("{}"), headers).await;
    let c = h.call("POST", &path, WS1, Some(json!({}))).await;
    assert_eq!((a.status, b.status, c.status), (202, 202, 202));
    assert_eq!(a.body["eventId"], b.body["eventId"]);
    assert_ne!(a.body["eventId"], c.body["eventId"]);
}

#[tokio::test]
async fn every_error_code_is_problem_json() {
    let h = harness("development").await;
    let id = create(&h, manual()).await;
    let base = "/v1/workspaces/ws1/triggers";

    let bad = h
        .call_with("POST", base, WS1, Some("{not json"), json!({}))
        .await;
    assert_problem(&bad, 400, "trigger.api.bad_request");
    let unknown = h
        .call(
            "POST",
            base,
            WS1,
            Some(json!({"sourceType": "manual", "workflowId": "w", "colour": "red"})),
        )
        .await;
    assert_problem(&unknown, 400, "trigger.api.bad_request");
    assert!(unknown.body["detail"].as_str().unwrap().contains("colour"));
    let wrong_type = h
        .call(
            "POST",
            base,
            WS1,
            Some(json!({"sourceType": "manual", "workflowId": "w", "inputMapping": [1]})),
        )
        .await;
    assert_problem(&wrong_type, 400, "trigger.api.bad_request");
    assert!(
        wrong_type.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("inputMapping"),
        "{}",
        wrong_type.body
    );
    let bad_source = h
        .call(
            "POST",
            base,
            WS1,
            Some(json!({"sourceType": "carrier-pigeon", "workflowId": "w"})),
        )
        .await;
    assert_problem(&bad_source, 400, "trigger.api.bad_request");
    let webhook_without_connector = h
        .call(
            "POST",
            base,
            WS1,
            Some(json!({"sourceType": "webhook", "workflowId": "w"})),
        )
        .await;
    assert_problem(&webhook_without_connector, 400, "trigger.api.bad_request");

    let huge = json!({"sourceType": "manual", "workflowId": "w", "inputMapping": {"x": "y".repeat(300 * 1024)}});
    assert_problem(
        &h.call("POST", base, WS1, Some(huge)).await,
        413,
        "trigger.api.payload_too_large",
    );

    let invalid = h
        .call(
            "POST",
            base,
            WS1,
            Some(json!({"sourceType": "manual", "workflowId": "w", "selector": "event.kind =="})),
        )
        .await;
    assert_problem(&invalid, 422, "trigger.selector_invalid");
    let jsonpath = h
        .call("POST", base, WS1, Some(json!({"sourceType": "manual", "workflowId": "w", "selector": {"field": "a", "matchType": "jsonpath", "value": "$.a"}})))
        .await;
    assert_problem(&jsonpath, 422, "trigger.selector_invalid");
    let bad_mapping = h.call("POST", base, WS1, Some(json!({"sourceType": "manual", "workflowId": "w", "inputMapping": {"a": "${{ event. }}"}}))).await;
    assert_problem(&bad_mapping, 422, "trigger.selector_invalid");
    let invalid_patch = h
        .call(
            "PATCH",
            &format!("{base}/{id}"),
            WS1,
            Some(json!({"selector": "event.kind && event.subject"})),
        )
        .await;
    assert_problem(&invalid_patch, 422, "trigger.selector_invalid");
    let unknown_patch = h
        .call(
            "PATCH",
            &format!("{base}/{id}"),
            WS1,
            Some(json!({"workflowId": "other"})),
        )
        .await;
    assert_problem(&unknown_patch, 400, "trigger.api.bad_request");

    for (method, suffix) in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", ":fire"),
    ] {
        let missing = h
            .call(
                method,
                &format!("{base}/nope{suffix}"),
                WS1,
                Some(json!({})),
            )
            .await;
        assert_problem(&missing, 404, "trigger.subscription_not_found");
        assert_eq!(missing.body["subscriptionId"], "nope");
    }

    assert_problem(
        &h.call("GET", base, As::Nobody, None).await,
        401,
        "callctx_missing",
    );
    let malformed = h
        .call_with(
            "GET",
            base,
            As::Nobody,
            None,
            json!({"x-custos-callctx": "{nope"}),
        )
        .await;
    assert_problem(&malformed, 400, "callctx_malformed");
    let read_only = As::Tenant("ws1", &["trigger:subscriptions:read"]);
    let denied = h
        .call("POST", base, read_only.clone(), Some(manual()))
        .await;
    assert_problem(&denied, 403, "permission_denied");
    assert_problem(
        &h.call("DELETE", &format!("{base}/{id}"), read_only.clone(), None)
            .await,
        403,
        "permission_denied",
    );
    assert_problem(
        &h.call(
            "POST",
            &format!("{base}/{id}:fire"),
            read_only,
            Some(json!({})),
        )
        .await,
        403,
        "permission_denied",
    );
    assert_problem(
        &h.call("GET", "/v1/workspaces/ws2/triggers", WS1, None)
            .await,
        403,
        "workspace_mismatch",
    );

    assert_problem(
        &h.call("PUT", base, WS1, None).await,
        405,
        "trigger.api.method_not_allowed",
    );
    assert_problem(
        &h.call("GET", "/v2/nothing", WS1, None).await,
        404,
        "trigger.api.route_not_found",
    );

    h.call(
        "PATCH",
        &format!("{base}/{id}"),
        WS1,
        Some(json!({"state": "paused"})),
    )
    .await;
    let paused = h
        .call("POST", &format!("{base}/{id}:fire"), WS1, Some(json!({})))
        .await;
    assert_problem(&paused, 409, "trigger.api.subscription_not_fireable");
    let no_target = create(&h, json!({"sourceType": "manual", "workflowId": "wf"})).await;
    assert_problem(
        &h.call(
            "POST",
            &format!("{base}/{no_target}:fire"),
            WS1,
            Some(json!({})),
        )
        .await,
        409,
        "trigger.api.subscription_not_fireable",
    );
    let gated = create(&h, json!({"sourceType": "manual", "workflowId": "wf", "targetWorkflowVersionId": "wv", "selector": "event.data.go == true"})).await;
    let refused = h
        .call(
            "POST",
            &format!("{base}/{gated}:fire"),
            WS1,
            Some(json!({"inputs": {"go": false}})),
        )
        .await;
    assert_problem(&refused, 409, "trigger.api.subscription_not_fireable");
    assert_eq!(
        h.call(
            "POST",
            &format!("{base}/{gated}:fire"),
            WS1,
            Some(json!({"inputs": {"go": true}}))
        )
        .await
        .status,
        202
    );
}

#[tokio::test]
async fn another_workspace_can_neither_read_change_fire_nor_see_events() {
    let h = harness("development").await;
    let id = create(&h, manual()).await;
    let fired = h
        .call(
            "POST",
            &format!("/v1/workspaces/ws1/triggers/{id}:fire"),
            WS1,
            Some(json!({})),
        )
        .await;
    let event_id = fired.body["eventId"].as_str().unwrap().to_owned();
    h.run_pipeline().await;
    let ws2 = As::Tenant("ws2", &ALL);
    for (method, path) in [
        ("GET", format!("/v1/workspaces/ws1/triggers/{id}")),
        ("PATCH", format!("/v1/workspaces/ws1/triggers/{id}")),
        ("DELETE", format!("/v1/workspaces/ws1/triggers/{id}")),
        ("POST", format!("/v1/workspaces/ws1/triggers/{id}:fire")),
        ("GET", "/v1/workspaces/ws1/triggers".to_owned()),
        ("GET", format!("/v1/workspaces/ws1/events/{event_id}")),
    ] {
        assert_problem(
            &h.call(method, &path, ws2.clone(), Some(json!({}))).await,
            403,
            "workspace_mismatch",
        );
    }
    // Through its own workspace path, ws2 finds nothing of ws1's.
    assert_problem(
        &h.call(
            "GET",
            &format!("/v1/workspaces/ws2/triggers/{id}"),
            ws2.clone(),
            None,
        )
        .await,
        404,
        "trigger.subscription_not_found",
    );
    assert_problem(
        &h.call(
            "GET",
            &format!("/v1/workspaces/ws2/events/{event_id}"),
            ws2.clone(),
            None,
        )
        .await,
        404,
        "trigger.event_not_found",
    );
    let own = h
        .call("GET", "/v1/workspaces/ws2/triggers", ws2, None)
        .await;
    assert_eq!(own.body["items"], json!([]));
    let mine = h
        .call(
            "GET",
            &format!("/v1/workspaces/ws1/events/{event_id}"),
            WS1,
            None,
        )
        .await;
    assert_eq!(mine.body["matches"][0]["status"], "dispatched");
}

#[tokio::test]
async fn list_pages_through_subscriptions_with_filters() {
    let h = harness("development").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create(&h, manual()).await);
    }
    h.call(
        "PATCH",
        &format!("/v1/workspaces/ws1/triggers/{}", ids[0]),
        WS1,
        Some(json!({"state": "paused"})),
    )
    .await;
    ids.sort();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = h
            .call(
                "GET",
                &format!("/v1/workspaces/ws1/triggers?limit=2&cursor={cursor}"),
                WS1,
                None,
            )
            .await;
        assert_eq!(page.status, 200);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|i| i["subscriptionId"].as_str().unwrap().to_owned()),
        );
        match page.body.get("nextCursor").and_then(Value::as_str) {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let paused = h
        .call("GET", "/v1/workspaces/ws1/triggers?state=paused", WS1, None)
        .await;
    assert_eq!(paused.body["items"].as_array().unwrap().len(), 1);
    assert_problem(
        &h.call("GET", "/v1/workspaces/ws1/triggers?limit=0", WS1, None)
            .await,
        400,
        "trigger.api.bad_request",
    );
    assert_problem(
        &h.call("GET", "/v1/workspaces/ws1/triggers?state=gone", WS1, None)
            .await,
        400,
        "trigger.api.bad_request",
    );
}

#[tokio::test]
async fn patch_distinguishes_present_null_and_omitted() {
    let h = harness("development").await;
    let id = create(&h, json!({"sourceType": "manual", "workflowId": "wf", "targetWorkflowVersionId": "wv", "selector": "true", "inputMapping": {"a": 1}})).await;
    let path = format!("/v1/workspaces/ws1/triggers/{id}");
    let p = h
        .call("PATCH", &path, WS1, Some(json!({"state": "paused"})))
        .await;
    assert_eq!(
        (p.body["state"].as_str(), p.body["selector"].as_str()),
        (Some("paused"), Some("true"))
    );
    let p = h
        .call(
            "PATCH",
            &path,
            WS1,
            Some(json!({"selector": null, "inputMapping": null})),
        )
        .await;
    assert_eq!(p.body["selector"], Value::Null, "null clears the selector");
    assert_eq!(
        p.body["inputMapping"],
        json!({"a": 1}),
        "null does not clear the mapping"
    );
    let p = h
        .call(
            "PATCH",
            &path,
            WS1,
            Some(json!({"targetWorkflowVersionId": null})),
        )
        .await;
    assert_eq!(p.body["targetWorkflowVersionId"], Value::Null);
    assert_eq!(p.body["state"], "paused");
}

#[tokio::test]
async fn test_route_evaluates_without_dispatching() {
    let h = harness("development").await;
    let path = "/v1/workspaces/ws1/triggers:test";
    let event = json!({"kind": "pr.opened", "data": {"repo": "acme/api", "n": 2}});
    let yes = h.call("POST", path, WS1, Some(json!({"selector": "event.data.repo.startsWith(\"acme/\")", "inputMapping": {"n": "${{ event.data.n + 1 }}"}, "event": event}))).await;
    assert_eq!(yes.status, 200);
    assert_eq!(yes.body, json!({"matched": true, "inputs": {"n": 3}}));
    let type_error = h
        .call(
            "POST",
            path,
            WS1,
            Some(json!({"selector": "event.kind", "event": event})),
        )
        .await;
    // Checked as at create: a selector that can only be a string is refused up front.
    assert_problem(&type_error, 422, "trigger.selector_type_error");
    assert!(type_error.body["detail"]
        .as_str()
        .unwrap()
        .contains("not bool"));
    assert_problem(
        &h.call(
            "POST",
            path,
            WS1,
            Some(json!({"selector": "(", "event": event})),
        )
        .await,
        422,
        "trigger.selector_invalid",
    );
    assert!(h.fake.calls("start").await.is_empty());
}

#[tokio::test]
async fn jwt_claims_and_the_development_shim_identify_callers() {
    let h = harness("development").await;
    let jwt = h
        .call(
            "GET",
            "/v1/workspaces/ws1/triggers",
            As::Jwt("ws1", "[trigger:subscriptions:read]"),
            None,
        )
        .await;
    assert_eq!(jwt.status, 200);
    let shim = h
        .call(
            "GET",
            "/v1/workspaces/ws1/triggers",
            As::Shim("ws1", &["trigger:subscriptions:read"]),
            None,
        )
        .await;
    assert_eq!(shim.status, 200);
    let production = harness("production").await;
    let refused = production
        .call(
            "GET",
            "/v1/workspaces/ws1/triggers",
            As::Shim("ws1", &ALL),
            None,
        )
        .await;
    assert_problem(&refused, 401, "callctx_missing");
    let internal = production
        .call(
            "POST",
            "/CancelResumeSubscription",
            As::Nobody,
            Some(json!({"runId": "r", "stepId": "s", "eventKey": "k"})),
        )
        .await;
    assert_problem(&internal, 401, "callctx_missing");
}

fn register(run: &str, selector: Value, ttl: Value) -> Value {
    json!({"runId": run, "stepId": "s1", "eventKey": "step.succeeded", "selector": selector, "ttl": ttl,
           "workspaceId": "ws1"})
}

#[tokio::test]
async fn resume_registration_rpc_semantics() {
    let h = harness("production").await;
    let key = ResumeKey {
        run_id: "r1".into(),
        step_id: "s1".into(),
        event_key: "step.succeeded".into(),
    };
    let id = key.resume_id();
    let first = h
        .call(
            "POST",
            "/RegisterResumeSubscription",
            As::Iam,
            Some(register(
                "r1",
                json!("event.data.ok == true"),
                json!("PT1H"),
            )),
        )
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body["subscriptionId"], id.as_str());
    let generation = first.body["generation"].as_str().unwrap().to_owned();
    assert_eq!(
        first.body.as_object().unwrap().len(),
        2,
        "the id and the generation: {}",
        first.body
    );
    assert!(id.as_str().starts_with("res_"));
    let stored = h.resumes.get(&id).await.unwrap().unwrap();
    assert_eq!(stored.expires_at, h.clock.now_secs() + 3600);
    assert_eq!(stored.selector.as_deref(), Some("event.data.ok == true"));

    let same = h
        .call(
            "POST",
            "/RegisterResumeSubscription",
            As::Iam,
            Some(register(
                "r1",
                json!("event.data.ok == true"),
                json!("PT1H"),
            )),
        )
        .await;
    assert_eq!(same.body["subscriptionId"], id.as_str());
    assert_eq!(
        same.body["generation"],
        generation.as_str(),
        "a live wait is kept"
    );
    assert!(h.audit.events().is_empty(), "identical replay is silent");
    let no_workspace = h
        .call(
            "POST",
            "/RegisterResumeSubscription",
            As::Iam,
            Some(json!({"runId": "r1", "stepId": "s1", "eventKey": "step.succeeded"})),
        )
        .await;
    assert_problem(&no_workspace, 422, "resume.workspace_required");

    let divergent = h
        .call(
            "POST",
            "/RegisterResumeSubscription",
            As::Iam,
            Some(register("r1", json!("event.data.ok == false"), Value::Null)),
        )
        .await;
    assert_eq!(divergent.body["subscriptionId"], id.as_str());
    assert_eq!(
        h.resumes
            .get(&id)
            .await
            .unwrap()
            .unwrap()
            .selector
            .as_deref(),
        Some("event.data.ok == true"),
        "original wins"
    );
    let audits = h.audit.events();
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].audit, AuditName::ResumeDivergent);
    assert_eq!(audits[0].attrs["originalSelector"], "event.data.ok == true");
    assert_eq!(audits[0].attrs["replaySelector"], "event.data.ok == false");

    let invalid = h
        .call(
            "POST",
            "/RegisterResumeSubscription",
            As::Iam,
            Some(register("r1", json!("event.kind =="), Value::Null)),
        )
        .await;
    assert_problem(&invalid, 422, "trigger.selector_invalid");

    // Durations that are not usable are refused, never silently replaced.
    for ttl in ["garbage", "P1Y", "P1M", "PT18446744073709551615S", "P53W"] {
        let refused = h
            .call(
                "POST",
                "/RegisterResumeSubscription",
                As::Iam,
                Some(register("r-ttl", json!(null), json!(ttl))),
            )
            .await;
        assert_problem(&refused, 422, "resume.ttl_invalid");
    }
    // Lapsed: registered afresh, new selector and expiry, no audit.
    h.clock.advance_ms(3_600_000);
    h.audit.clear();
    let fresh = h
        .call(
            "POST",
            "/RegisterResumeSubscription",
            As::Iam,
            Some(register("r1", json!(null), Value::Null)),
        )
        .await;
    assert_eq!(fresh.status, 200);
    assert_ne!(
        fresh.body["generation"],
        generation.as_str(),
        "a new generation"
    );
    let stored = h.resumes.get(&id).await.unwrap().unwrap();
    assert_eq!(stored.selector, None);
    assert_eq!(
        stored.expires_at,
        h.clock.now_secs() + 604_800,
        "no ttl: the default"
    );
    assert!(h.audit.events().is_empty());

    let missing = h
        .call(
            "POST",
            "/RegisterResumeSubscription",
            As::Iam,
            Some(json!({"runId": "r1", "stepId": "s1"})),
        )
        .await;
    assert_problem(&missing, 400, "trigger.api.bad_request");
    assert!(missing.body["detail"]
        .as_str()
        .unwrap()
        .contains("eventKey"));
    let empty = h
        .call(
            "POST",
            "/RegisterResumeSubscription",
            As::Iam,
            Some(json!({"runId": "", "stepId": "s1", "eventKey": "k"})),
        )
        .await;
    assert_problem(&empty, 400, "trigger.api.bad_request");

    let cancel = json!({"runId": "r1", "stepId": "s1", "eventKey": "step.succeeded"});
    assert_eq!(
        h.call(
            "POST",
            "/CancelResumeSubscription",
            As::Iam,
            Some(cancel.clone())
        )
        .await
        .status,
        204
    );
    assert!(h.resumes.get(&id).await.unwrap().is_none());
    assert_eq!(
        h.call("POST", "/CancelResumeSubscription", As::Iam, Some(cancel))
            .await
            .status,
        204,
        "unknown is a no-op"
    );
    let after_cancel = h
        .call(
            "POST",
            "/RegisterResumeSubscription",
            As::Iam,
            Some(register("r1", json!("true"), json!("P1D"))),
        )
        .await;
    assert_eq!(after_cancel.status, 200);
    assert_eq!(
        h.resumes
            .get(&id)
            .await
            .unwrap()
            .unwrap()
            .selector
            .as_deref(),
        Some("true")
    );
    assert!(h.audit.events().is_empty(), "cancel then register is fresh");
}

#[tokio::test]
async fn zero_ttl_uses_the_default() {
    let h = harness("production").await;
    h.call(
        "POST",
        "/RegisterResumeSubscription",
        As::Iam,
        Some(register("r9", Value::Null, json!("PT0S"))),
    )
    .await;
    let key = ResumeKey {
        run_id: "r9".into(),
        step_id: "s1".into(),
        event_key: "step.succeeded".into(),
    };
    assert_eq!(
        h.resumes
            .get(&key.resume_id())
            .await
            .unwrap()
            .unwrap()
            .expires_at,
        h.clock.now_secs() + 604_800
    );
}

// ---------------------------------------------------------------- webhooks

const WHSEC: &str = "whsec_c2VjcmV0LWZvci10aGUtd2ViaG9vay10ZXN0cw==";

fn webhook_event(connector: &str, headers: Value, body: &[u8]) -> ApiGatewayV2httpRequest {
    use base64::Engine;
    let path = format!("/v1/webhooks/{connector}");
    serde_json::from_value(json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "", "headers": headers,
        "requestContext": {"routeKey": "$default", "accountId": "123456789012", "stage": "$default", "requestId": "r",
                           "apiId": "api", "domainName": "api.local", "domainPrefix": "api", "time": "t", "timeEpoch": 0,
                           "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9", "userAgent": "provider"}},
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "isBase64Encoded": true
    }))
    .unwrap()
}

impl Harness {
    async fn deliver(&self, connector: &str, headers: Value, body: &[u8]) -> Answer {
        let response = self
            .api
            .handle(webhook_event(connector, headers, body))
            .await;
        answer("POST", &format!("/v1/webhooks/{connector}"), response)
    }

    async fn connector(
        &self,
        id: &str,
        scheme: &str,
        secret_ref: &str,
        kind: Option<(&str, &str)>,
    ) {
        let mut connector = json!({"connectorInstanceId": id, "workspaceId": "ws1", "scheme": scheme, "secretRefs": [secret_ref]});
        if let Some((header, prefix)) = kind {
            connector["kindHeader"] = header.into();
            connector["kindPrefix"] = prefix.into();
        }
        self.api
            .webhooks
            .connectors
            .put(&serde_json::from_value(connector).unwrap())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_signed_webhook_starts_only_the_matching_attached_subscription_and_a_replay_starts_nothing(
) {
    let h = harness("production").await;
    let secret_ref = integration_tests::put_secret(WHSEC).await;
    h.connector("ci-acme", "standard-webhooks", &secret_ref, None)
        .await;
    for (selector, version) in [
        ("event.data.action == \"opened\"", "wv-open"),
        ("event.data.action == \"closed\"", "wv-close"),
    ] {
        create(
            &h,
            json!({"sourceType": "webhook", "connectorInstanceId": "ci-acme", "workflowId": "wf",
                          "targetWorkflowVersionId": version, "selector": selector}),
        )
        .await;
    }
    let body = br#"{"action":"opened","number":7}"#;
    let now = h.clock.now_secs();
    let headers = integration_tests::standard_webhook_headers(WHSEC, "msg_1", now, body);
    let accepted = h.deliver("ci-acme", headers.clone(), body).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    h.run_pipeline().await;
    let starts = h.fake.calls("start").await;
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].body["workflowVersionId"], "wv-open");

    let replay = h.deliver("ci-acme", headers, body).await;
    assert_eq!(
        replay.body["eventId"], accepted.body["eventId"],
        "the delivery id fixes the event id"
    );
    h.run_pipeline().await;
    assert_eq!(
        h.fake.calls("start").await.len(),
        1,
        "the replay starts nothing"
    );
}

/// Secrets Manager rotation puts a new value under the same reference: the function's
/// cache (5 minutes) reads it again when a signature fails with the cached value, once it
/// is `REREAD_AFTER_MS` old, so deliveries signed with the new value pass from then on.
#[tokio::test]
async fn a_secret_rotated_in_place_verifies_with_its_new_value() {
    use custos_trigger::webhook::secrets::{CachedSecrets, REREAD_AFTER_MS};
    const ROTATED: &str = "whsec_cm90YXRlZCBpbiBwbGFjZSwgMzIgYnl0ZXMgbG9uZyE=";
    let mut h = harness("production").await;
    h.api.webhooks.secrets = Arc::new(CachedSecrets::new(
        Arc::new(integration_tests::secrets()),
        h.clock.clone(),
        300_000,
    ));
    let secret_ref = integration_tests::put_secret(WHSEC).await;
    h.connector("ci-rotating", "standard-webhooks", &secret_ref, None)
        .await;
    let body = br#"{"action":"opened"}"#;
    let signed = |secret, id| {
        integration_tests::standard_webhook_headers(secret, id, h.clock.now_secs(), body)
    };
    assert_eq!(
        h.deliver("ci-rotating", signed(WHSEC, "m1"), body)
            .await
            .status,
        202
    );
    integration_tests::rotate_secret(&secret_ref, ROTATED).await;
    h.clock.advance_ms(REREAD_AFTER_MS);
    let answer = h.deliver("ci-rotating", signed(ROTATED, "m2"), body).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_problem(
        &h.deliver("ci-rotating", signed(WHSEC, "m3"), body).await,
        401,
        "trigger.webhook.signature_invalid",
    );
    assert_eq!(
        integration_tests::depth(&h.sqs, &h.normalized_url).await,
        2,
        "the two accepted deliveries, nothing else"
    );
}

#[tokio::test]
async fn refused_webhooks_are_401_with_a_reason_and_enqueue_nothing() {
    let h = harness("production").await;
    let secret_ref = integration_tests::put_secret(WHSEC).await;
    h.connector("ci-strict", "standard-webhooks", &secret_ref, None)
        .await;
    let body = br#"{"action":"opened"}"#;
    let now = h.clock.now_secs();
    let wrong =
        integration_tests::standard_webhook_headers("whsec_d3Jvbmctc2VjcmV0", "m1", now, body);
    let answer = h.deliver("ci-strict", wrong, body).await;
    assert_problem(&answer, 401, "trigger.webhook.signature_invalid");
    assert_eq!(answer.body["reason"], "signature_invalid");
    let stale = integration_tests::standard_webhook_headers(WHSEC, "m2", now - 360, body);
    assert_problem(
        &h.deliver("ci-strict", stale, body).await,
        401,
        "trigger.webhook.timestamp_out_of_tolerance",
    );
    let unsigned = json!({"content-type": "application/json"});
    assert_problem(
        &h.deliver("ci-strict", unsigned, body).await,
        401,
        "trigger.webhook.signature_missing",
    );
    assert_problem(
        &h.deliver("ci-nowhere", json!({}), body).await,
        404,
        "webhook-route-not-found",
    );
    let huge = vec![b'x'; 100 * 1024];
    let signed = integration_tests::standard_webhook_headers(WHSEC, "m3", now, &huge);
    assert_problem(
        &h.deliver("ci-strict", signed, &huge).await,
        413,
        "trigger.api.payload_too_large",
    );
    assert_eq!(
        integration_tests::depth(&h.sqs, &h.normalized_url).await,
        0,
        "nothing enqueued"
    );
    let rejected: Vec<_> = h
        .audit
        .events()
        .into_iter()
        .filter(|e| e.audit == AuditName::WebhookRejected)
        .collect();
    assert_eq!(rejected.len(), 3);
}

#[tokio::test]
async fn github_deliveries_verify_with_an_ssm_secret_and_map_their_kind() {
    use hmac::{KeyInit, Mac};
    let h = harness("production").await;
    let secret_ref = integration_tests::put_parameter("gh-secret-of-enough-bytes").await;
    h.connector(
        "ci-gh",
        "github",
        &secret_ref,
        Some(("x-github-event", "github")),
    )
    .await;
    let id = create(&h, json!({"sourceType": "webhook", "connectorInstanceId": "ci-gh", "workflowId": "wf",
                               "targetWorkflowVersionId": "wv", "selector": "event.kind == \"github.push\""})).await;
    let body = br#"{"ref":"refs/heads/main"}"#;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"gh-secret-of-enough-bytes").unwrap();
    mac.update(body);
    let headers = json!({"x-hub-signature-256": format!("sha256={}", hex_encode(&mac.finalize().into_bytes())),
                         "x-github-delivery": "d-42", "x-github-event": "push"});
    assert_eq!(h.deliver("ci-gh", headers, body).await.status, 202);
    h.run_pipeline().await;
    let starts = h.fake.calls("start").await;
    assert_eq!(starts.len(), 1, "subscription {id} matched github.push");
}

#[tokio::test]
async fn subscriptions_can_only_attach_to_their_workspaces_connectors() {
    let h = harness("production").await;
    let secret_ref = integration_tests::put_secret(WHSEC).await;
    h.api
        .webhooks
        .connectors
        .put(&serde_json::from_value(json!({"connectorInstanceId": "ci-other", "workspaceId": "ws2", "secretRefs": [secret_ref]})).unwrap())
        .await
        .unwrap();
    let answer = h
        .call("POST", "/v1/workspaces/ws1/triggers", WS1, Some(json!({"sourceType": "webhook", "connectorInstanceId": "ci-other", "workflowId": "wf"})))
        .await;
    assert_problem(&answer, 422, "trigger.connector_not_usable");
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn versions_make_changes_conditional_and_a_deleted_subscription_stays_deleted() {
    let h = harness("development").await;
    let id = create(&h, manual()).await;
    let path = format!("/v1/workspaces/ws1/triggers/{id}");
    let read = h.call("GET", &path, WS1, None).await;
    assert_eq!(read.etag.as_deref(), Some("\"1\""));
    assert_eq!(read.body["version"], 1);
    let if_match = |etag: &str| json!({"content-type": "application/json", "if-match": etag});
    let changed = h
        .call_with(
            "PATCH",
            &path,
            WS1,
            Some(r#"{"selector":"true"}"#),
            if_match("\"1\""),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.etag.as_deref(), Some("\"2\""));
    let stale = h
        .call_with(
            "PATCH",
            &path,
            WS1,
            Some(r#"{"selector":"false"}"#),
            if_match("\"1\""),
        )
        .await;
    assert_problem(&stale, 412, "trigger.subscription_conflict");
    let stale_delete = h
        .call_with("DELETE", &path, WS1, None, if_match("\"1\""))
        .await;
    assert_problem(&stale_delete, 412, "trigger.subscription_conflict");
    // RFC 9110 If-Match: strong comparison against a list; tags this API never issued,
    // weak ones and values that are no entity tags at all simply do not match.
    let unmatched = ["W/\"2\"", "\"#-0E\"", "\"v2\", W/\"2\""];
    let malformed = ["yesterday", "2", "\"2", ""];
    for tag in unmatched.into_iter().chain(malformed) {
        let refused = h
            .call_with(
                "PATCH",
                &path,
                WS1,
                Some(r#"{"selector":"false"}"#),
                if_match(tag),
            )
            .await;
        assert_problem(&refused, 412, "trigger.subscription_conflict");
    }
    let listed = h
        .call_with(
            "PATCH",
            &path,
            WS1,
            Some(r#"{"selector":"true || false"}"#),
            if_match("\"7\", \"2\""),
        )
        .await;
    assert_eq!(
        listed.status, 200,
        "a list holding the current tag: {}",
        listed.body
    );
    let now = h.call("GET", &path, WS1, None).await;
    assert_eq!(
        (now.body["selector"].as_str(), now.body["state"].as_str()),
        (Some("true || false"), Some("active")),
        "stale changes changed nothing"
    );
    // Deleting through PATCH needs the delete permission.
    let writer = As::Tenant("ws1", &["trigger:subscriptions:write"]);
    let denied = h
        .call("PATCH", &path, writer, Some(json!({"state": "expired"})))
        .await;
    assert_problem(&denied, 403, "permission_denied");

    // PATCHes racing a DELETE, really concurrent: the subscription always ends deleted.
    for round in 0..8 {
        let id = create(&h, manual()).await;
        let path = format!("/v1/workspaces/ws1/triggers/{id}");
        let (revive, edit, delete) = tokio::join!(
            h.call("PATCH", &path, WS1, Some(json!({"state": "active"}))),
            h.call("PATCH", &path, WS1, Some(json!({"selector": "false"}))),
            h.call("DELETE", &path, WS1, None),
        );
        assert_eq!(delete.status, 204, "round {round}: {}", delete.body);
        for answer in [&revive, &edit] {
            assert!(
                [200, 409, 412].contains(&answer.status),
                "round {round}: {}",
                answer.body
            );
        }
        let end = h.call("GET", &path, WS1, None).await;
        assert_eq!(end.body["state"], "expired", "round {round}");
        let revived = h
            .call("PATCH", &path, WS1, Some(json!({"state": "active"})))
            .await;
        assert_problem(&revived, 409, "trigger.subscription_deleted");
    }
}

/// A store that panics, standing in for any bug below a route.
struct PanickingStore;

#[async_trait::async_trait]
impl custos_trigger::subscription::SubscriptionReader for PanickingStore {
    async fn get(
        &self,
        _: &custos_trigger::ids::WorkspaceId,
        _: &custos_trigger::ids::SubscriptionId,
    ) -> Result<Option<custos_trigger::subscription::Subscription>, custos_trigger::store::StoreError>
    {
        panic!("a bug below the route")
    }
    async fn list_matchable(
        &self,
        _: &custos_trigger::ids::WorkspaceId,
        _: &custos_trigger::subscription::Route,
    ) -> Result<
        Vec<std::sync::Arc<custos_trigger::subscription::Subscription>>,
        custos_trigger::store::StoreError,
    > {
        panic!("a bug below the route")
    }
}

#[async_trait::async_trait]
impl SubscriptionStore for PanickingStore {
    async fn put(
        &self,
        _: &custos_trigger::subscription::Subscription,
    ) -> Result<(), custos_trigger::store::StoreError> {
        panic!("a bug below the route")
    }
    async fn replace(
        &self,
        _: &custos_trigger::subscription::Subscription,
        _: u64,
    ) -> Result<(), custos_trigger::store::StoreError> {
        panic!("a bug below the route")
    }
    async fn list(
        &self,
        _: &custos_trigger::ids::WorkspaceId,
        _: &custos_trigger::subscription::ListQuery,
    ) -> Result<custos_trigger::subscription::Page, custos_trigger::store::StoreError> {
        panic!("a bug below the route")
    }
}

#[tokio::test]
async fn a_panic_below_a_route_is_a_problem_json_500_and_an_audit() {
    let mut h = harness("development").await;
    h.api.subscriptions = Arc::new(PanickingStore);
    let answer = h
        .call("GET", "/v1/workspaces/ws1/triggers/anything", WS1, None)
        .await;
    assert_problem(&answer, 500, "trigger.api.internal_error");
    assert!(h
        .audit
        .events()
        .iter()
        .any(|a| a.audit == AuditName::RequestPanicked));
}

const CONNECTOR_ADMIN: As<'static> = As::Tenant(
    "ws1",
    &["trigger:connectors:read", "trigger:connectors:write"],
);

#[tokio::test]
async fn connectors_are_registered_checked_rotated_and_deleted_through_the_api() {
    let h = harness("production").await;
    let good = integration_tests::put_secret(WHSEC).await;
    let short = integration_tests::put_secret("whsec_c2hvcnQ=").await;
    let base = "/v1/workspaces/ws1/connectors";
    let created = h
        .call(
            "POST",
            base,
            CONNECTOR_ADMIN,
            Some(
                json!({"scheme": "standard-webhooks", "secretRefs": [good], "kindPrefix": "acme"}),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["connectorInstanceId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("con_") && id.len() == 36, "{id}");
    assert_eq!(created.body["webhookPath"], format!("/v1/webhooks/{id}"));
    assert_eq!(created.body["workspaceId"], "ws1");
    let path = format!("{base}/{id}");
    assert_eq!(
        h.call("GET", &path, CONNECTOR_ADMIN, None).await.status,
        200
    );
    let listed = h.call("GET", base, CONNECTOR_ADMIN, None).await;
    assert_eq!(listed.body["items"][0]["connectorInstanceId"], id.as_str());

    // Unusable configurations are refused when set, not at the first delivery.
    for (body, code) in [
        (
            json!({"secretRefs": ["secretsmanager:custos/webhooks/none-such"]}),
            "trigger.connector.secret_invalid",
        ),
        (
            json!({"secretRefs": [short]}),
            "trigger.connector.secret_invalid",
        ),
        (json!({"secretRefs": []}), "trigger.connector_invalid"),
        (
            json!({"scheme": "none", "secretRefs": [good]}),
            "trigger.connector_invalid",
        ),
    ] {
        let refused = h.call("POST", base, CONNECTOR_ADMIN, Some(body)).await;
        assert_problem(&refused, 422, code);
    }
    let three = h
        .call(
            "PATCH",
            &path,
            CONNECTOR_ADMIN,
            Some(json!({"secretRefs": [good, good, good]})),
        )
        .await;
    assert_problem(&three, 422, "trigger.connector_invalid");
    // Rotation: two refs at once are fine.
    let second = integration_tests::put_secret(WHSEC).await;
    let rotated = h
        .call(
            "PATCH",
            &path,
            CONNECTOR_ADMIN,
            Some(json!({"secretRefs": [good, second]})),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(rotated.body["secretRefs"].as_array().unwrap().len(), 2);

    // Tenant-bound and permission-bound.
    let stranger = As::Tenant(
        "ws2",
        &["trigger:connectors:read", "trigger:connectors:write"],
    );
    assert_problem(
        &h.call(
            "GET",
            &format!("/v1/workspaces/ws2/connectors/{id}"),
            stranger.clone(),
            None,
        )
        .await,
        404,
        "trigger.connector_not_found",
    );
    assert_eq!(
        h.call(
            "DELETE",
            &format!("/v1/workspaces/ws2/connectors/{id}"),
            stranger,
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(
        h.call("GET", &path, CONNECTOR_ADMIN, None).await.status,
        200,
        "untouched"
    );
    let reader = As::Tenant("ws1", &["trigger:connectors:read"]);
    assert_problem(
        &h.call("POST", base, reader, Some(json!({"secretRefs": [good]})))
            .await,
        403,
        "permission_denied",
    );

    assert_eq!(
        h.call("DELETE", &path, CONNECTOR_ADMIN, None).await.status,
        204
    );
    assert_problem(
        &h.call("GET", &path, CONNECTOR_ADMIN, None).await,
        404,
        "trigger.connector_not_found",
    );
    assert_eq!(
        h.call("DELETE", &path, CONNECTOR_ADMIN, None).await.status,
        204,
        "idempotent"
    );
}
