//! The hostile-input suite: over a hundred bad inputs, as an attacker or a careless client
//! would send them, against the deployed local stack (API, webhooks, internal routes),
//! the three queues, and the configuration. Every HTTP case must get its documented
//! status and problem `code` as `application/problem+json`; nothing a case sends may
//! start a run or stay stuck in a queue.

use std::collections::HashMap;
use std::time::Duration;

use custos_trigger::aws::{DynamoConnectorStore, DynamoSubscriptionStore};
use custos_trigger::config::Settings;
use custos_trigger::subscription::{Subscription, SubscriptionStore};
use custos_trigger::webhook::ConnectorStore;
use integration_tests::{depth, dynamodb_at, endpoint, sqs_at, unique, FakeWorkflow};
use serde_json::{json, Value};

const SECRET: &str = "whsec_ZTJlLXdlYmhvb2stc2lnbmluZy1zZWNyZXQ=";
const GITHUB_SECRET: &str = "a-github-secret-long-enough";
const ALL: &[&str] = &[
    "trigger:subscriptions:read",
    "trigger:subscriptions:write",
    "trigger:subscriptions:delete",
    "trigger:subscriptions:fire",
];

struct Stack {
    outputs: HashMap<String, String>,
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    fake: FakeWorkflow,
    ws: String,
    http: reqwest::Client,
}

/// Who calls an HTTP route.
#[derive(Clone, Copy)]
enum Who {
    /// The workspace of the suite with every permission (development shim).
    Owner,
    /// The suite's workspace with only these permissions.
    With(&'static [&'static str]),
    /// Another workspace.
    Stranger,
    /// No identity at all.
    Nobody,
    /// A shim header that is not JSON.
    Garbled,
}

/// One bad HTTP input and its documented answer.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    who: Who,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: &'static str,
    path: impl Into<String>,
    body: Value,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        who: Who::Owner,
        headers: vec![("content-type", "application/json".to_owned())],
        body: if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        },
        status,
        code,
    }
}

impl Case {
    fn by(mut self, who: Who) -> Self {
        self.who = who;
        self
    }

    fn raw(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl Stack {
    fn new() -> Self {
        let path = endpoint("CUSTOS_E2E_OUTPUTS");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let emulator = endpoint("CUSTOS_E2E_ENDPOINT");
        Self {
            outputs: serde_json::from_str(&text).expect("outputs json"),
            dynamodb: dynamodb_at(&emulator),
            sqs: sqs_at(&emulator),
            fake: FakeWorkflow::at(&endpoint("CUSTOS_E2E_WORKFLOW_URL")),
            ws: unique("ws-bad"),
            http: reqwest::Client::new(),
        }
    }

    /// Connector ids are global: this run's carry its workspace.
    fn std_connector(&self) -> String {
        format!("{}-std", self.ws)
    }

    fn short_connector(&self) -> String {
        format!("{}-short", self.ws)
    }

    fn gh_connector(&self) -> String {
        format!("{}-gh", self.ws)
    }

    fn output(&self, key: &str) -> &str {
        self.outputs
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no output {key}"))
    }

    async fn call(&self, case: &Case) -> (u16, String, Value) {
        let url = format!("{}{}", self.output("LocalApiUrl"), case.path);
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut request = self.http.request(method, url).body(case.body.clone());
        let shim = |ws: &str, permissions: &[&str]| {
            json!({"workspace_id": ws, "principal_id": "bad-inputs", "permissions": permissions})
                .to_string()
        };
        let context = match case.who {
            Who::Owner => Some(shim(&self.ws, ALL)),
            Who::With(permissions) => Some(shim(&self.ws, permissions)),
            Who::Stranger => Some(shim("ws-stranger", ALL)),
            Who::Nobody => None,
            Who::Garbled => Some("{not json".to_owned()),
        };
        if let Some(context) = context {
            request = request.header("x-custos-callctx", context);
        }
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let body = response.text().await.unwrap_or_default();
        (
            status,
            content_type,
            serde_json::from_str(&body).unwrap_or(Value::Null),
        )
    }

    async fn subscription(&self, id: &str, state: &str, selector: Option<&str>) {
        let subscription: Subscription = serde_json::from_value(json!({
            "workspaceId": self.ws, "subscriptionId": id, "sourceType": "manual",
            "workflowId": "wf", "targetWorkflowVersionId": "wv", "selector": selector,
            "state": state, "version": 1,
            "createdAt": "2026-11-27T00:00:00Z", "updatedAt": "2026-11-27T00:00:00Z"
        }))
        .unwrap();
        DynamoSubscriptionStore::new(self.dynamodb.clone(), self.output("SubscriptionsTableName"))
            .put(&subscription)
            .await
            .unwrap();
    }

    async fn connector(&self, id: &str, scheme: &str, secret_ref: &str) {
        let connector = serde_json::from_value(json!({
            "connectorInstanceId": id, "workspaceId": self.ws, "scheme": scheme,
            "secretRefs": [secret_ref], "kindHeader": "x-github-event", "kindPrefix": "github"
        }))
        .unwrap();
        DynamoConnectorStore::new(self.dynamodb.clone(), self.output("ConnectorsTableName"))
            .put(&connector)
            .await
            .unwrap();
    }

    /// Waits (bounded) until the pipeline queues hold nothing.
    async fn drained(&self) {
        for _ in 0..240 {
            let mut total = 0;
            for key in [
                "WorkflowEventsQueueUrl",
                "NormalizedQueueUrl",
                "DispatchQueueUrl",
                "WorkflowEventsDLQUrl",
                "NormalizedDLQUrl",
                "DispatchDLQUrl",
            ] {
                total += depth(&self.sqs, self.output(key)).await;
            }
            if total == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("queues did not drain");
    }
}

fn github_signature(body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(GITHUB_SECRET.as_bytes()).unwrap();
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn now_secs() -> i64 {
    custos_trigger::clock::Clock::now_secs(&custos_trigger::clock::SystemClock)
}

/// A Standard Webhooks delivery to `connector`, signed, with `edit` applied to its headers.
fn signed(
    name: &'static str,
    connector: &str,
    body: &[u8],
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
    status: u16,
    code: &'static str,
) -> Case {
    let mut headers =
        integration_tests::standard_webhook_headers(SECRET, &unique("msg"), now_secs(), body)
            .as_object()
            .unwrap()
            .clone();
    edit(&mut headers);
    let mut case = case(
        name,
        "POST",
        format!("/v1/webhooks/{connector}"),
        Value::Null,
        status,
        code,
    )
    .by(Who::Nobody)
    .raw(body.to_vec());
    case.headers = headers
        .into_iter()
        .map(|(k, v)| {
            let k: &'static str = Box::leak(k.into_boxed_str());
            (k, v.as_str().unwrap_or_default().to_owned())
        })
        .collect();
    case
}

fn http_cases(stack: &Stack) -> Vec<Case> {
    let ws = &stack.ws;
    let triggers = format!("/v1/workspaces/{ws}/triggers");
    let trigger = |id: &str| format!("/v1/workspaces/{ws}/triggers/{id}");
    let fire = |id: &str| format!("/v1/workspaces/{ws}/triggers/{id}:fire");
    let test = format!("/v1/workspaces/{ws}/triggers:test");
    let manual = |extra: Value| {
        let mut body =
            json!({"sourceType": "manual", "workflowId": "wf", "targetWorkflowVersionId": "wv"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let mut bomb = "true".to_owned();
    for i in 0..10 {
        bomb = format!("event.data.xs.all(x{i}, {bomb})");
    }
    let nine = (0..9)
        .map(|i| format!("event.data.xs.exists(x{i}, x{i} == {i})"))
        .collect::<Vec<_>>()
        .join(" || ");
    let deep = format!("{}true{}", "(".repeat(100), ")".repeat(100));
    let long_id = "x".repeat(300);
    let register = |body: Value| case("", "POST", "/RegisterResumeSubscription", body, 0, "");
    let wait = |extra: Value| {
        let mut body = json!({"runId": "run-bad", "stepId": "s1", "eventKey": "workflow.completed", "workspaceId": ws});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let escaped = format!(r#"{{"a":"{}"}}"#, r#"\""#.repeat(47 * 1024));
    let gh = |event: &str, signature: String, body: &[u8]| {
        case(
            "",
            "POST",
            format!("/v1/webhooks/{}", stack.gh_connector()),
            Value::Null,
            0,
            "",
        )
        .by(Who::Nobody)
        .raw(body.to_vec())
        .header("x-hub-signature-256", signature)
        .header("x-github-delivery", unique("d"))
        .header("x-github-event", event)
    };
    let gh_body = br#"{"ref":"refs/heads/main"}"#;
    let named = |mut c: Case, name: &'static str, status: u16, code: &'static str| {
        c.name = name;
        c.status = status;
        c.code = code;
        c
    };
    let bad = "trigger.api.bad_request";
    let invalid = "trigger.selector_invalid";
    let expensive = "trigger.selector_too_expensive";
    vec![
        // ---- subscriptions: create
        case("create: not JSON", "POST", &triggers, Value::Null, 400, bad).raw("{nope"),
        case(
            "create: a JSON array",
            "POST",
            &triggers,
            json!([1]),
            400,
            bad,
        ),
        case(
            "create: unknown field",
            "POST",
            &triggers,
            manual(json!({"bogus": 1})),
            400,
            bad,
        ),
        case(
            "create: no workflowId",
            "POST",
            &triggers,
            json!({"sourceType": "manual"}),
            400,
            bad,
        ),
        case(
            "create: empty workflowId",
            "POST",
            &triggers,
            manual(json!({"workflowId": ""})),
            400,
            bad,
        ),
        case(
            "create: unknown sourceType",
            "POST",
            &triggers,
            manual(json!({"sourceType": "carrier-pigeon"})),
            400,
            bad,
        ),
        case(
            "create: webhook without connector",
            "POST",
            &triggers,
            manual(json!({"sourceType": "webhook"})),
            400,
            bad,
        ),
        case(
            "create: manual with a connector",
            "POST",
            &triggers,
            manual(json!({"connectorInstanceId": stack.std_connector()})),
            400,
            bad,
        ),
        case(
            "create: a connector of nobody",
            "POST",
            &triggers,
            manual(json!({"sourceType": "webhook", "connectorInstanceId": "no-such-connector"})),
            422,
            "trigger.connector_not_usable",
        ),
        case(
            "create: selector syntax error",
            "POST",
            &triggers,
            manual(json!({"selector": "event.kind =="})),
            422,
            invalid,
        ),
        case(
            "create: selector unbound name",
            "POST",
            &triggers,
            manual(json!({"selector": "evnt.kind == 'x'"})),
            422,
            invalid,
        ),
        case(
            "create: selector of ten nested all()",
            "POST",
            &triggers,
            manual(json!({"selector": bomb})),
            422,
            expensive,
        ),
        case(
            "create: selector of nine comprehensions",
            "POST",
            &triggers,
            manual(json!({"selector": nine})),
            422,
            expensive,
        ),
        case(
            "create: selector over 4096 bytes",
            "POST",
            &triggers,
            manual(json!({"selector": format!("event.kind == '{}'", "k".repeat(4100))})),
            422,
            invalid,
        ),
        case(
            "create: selector nested 100 deep",
            "POST",
            &triggers,
            manual(json!({"selector": deep})),
            422,
            invalid,
        ),
        case(
            "create: selector boolean on a string",
            "POST",
            &triggers,
            manual(json!({"selector": "event.kind && true"})),
            422,
            invalid,
        ),
        case(
            "create: selector that is not boolean",
            "POST",
            &triggers,
            manual(json!({"selector": "event.kind"})),
            422,
            "trigger.selector_type_error",
        ),
        case(
            "create: selector of arithmetic",
            "POST",
            &triggers,
            manual(json!({"selector": "event.data.n + 1"})),
            422,
            "trigger.selector_type_error",
        ),
        case(
            "create: regex literal that does not compile",
            "POST",
            &triggers,
            manual(json!({"selector": "event.data.x.matches('(')"})),
            422,
            invalid,
        ),
        case(
            "list: a cursor the service never issued",
            "GET",
            format!("{triggers}?cursor={}", "c".repeat(2_000)),
            Value::Null,
            400,
            bad,
        ),
        case(
            "events: a cursor the service never issued",
            "GET",
            format!("/v1/workspaces/{ws}/events?cursor=not-a-cursor"),
            Value::Null,
            400,
            bad,
        ),
        case(
            "dead letters: a cursor the service never issued",
            "GET",
            format!("/v1/workspaces/{ws}/dead-letters?cursor=12%23abc"),
            Value::Null,
            400,
            bad,
        )
        .by(Who::With(&["trigger:deadletters:read"])),
        case(
            "create: legacy jsonpath",
            "POST",
            &triggers,
            manual(json!({"selector": {"field": "kind", "matchType": "jsonpath", "value": "$.a"}})),
            422,
            invalid,
        ),
        case(
            "create: legacy regex that does not compile",
            "POST",
            &triggers,
            manual(json!({"selector": {"field": "kind", "matchType": "regex", "value": "("}})),
            422,
            invalid,
        ),
        case(
            "create: inputMapping that does not compile",
            "POST",
            &triggers,
            manual(json!({"inputMapping": {"a": "${{ event. }}"}})),
            422,
            invalid,
        ),
        case(
            "create: inputMapping bomb",
            "POST",
            &triggers,
            manual(json!({"inputMapping": {"a": format!("${{{{ {bomb} }}}}")}})),
            422,
            expensive,
        ),
        case(
            "create: body over 256 KiB",
            "POST",
            &triggers,
            manual(json!({"workflowId": "w".repeat(270_000)})),
            413,
            "trigger.api.payload_too_large",
        ),
        case(
            "create: without write permission",
            "POST",
            &triggers,
            manual(json!({})),
            403,
            "permission_denied",
        )
        .by(Who::With(&["trigger:subscriptions:read"])),
        case(
            "create: in another workspace",
            "POST",
            &triggers,
            manual(json!({})),
            403,
            "workspace_mismatch",
        )
        .by(Who::Stranger),
        case(
            "create: no identity",
            "POST",
            &triggers,
            manual(json!({})),
            401,
            "callctx_missing",
        )
        .by(Who::Nobody),
        case(
            "create: garbled call context",
            "POST",
            &triggers,
            manual(json!({})),
            400,
            "callctx_malformed",
        )
        .by(Who::Garbled),
        // ---- subscriptions: list, read
        case(
            "list: limit 0",
            "GET",
            format!("{triggers}?limit=0"),
            Value::Null,
            400,
            bad,
        ),
        case(
            "list: limit 201",
            "GET",
            format!("{triggers}?limit=201"),
            Value::Null,
            400,
            bad,
        ),
        case(
            "list: limit not a number",
            "GET",
            format!("{triggers}?limit=ten"),
            Value::Null,
            400,
            bad,
        ),
        case(
            "list: unknown state",
            "GET",
            format!("{triggers}?state=gone"),
            Value::Null,
            400,
            bad,
        ),
        case(
            "list: unknown sourceType",
            "GET",
            format!("{triggers}?sourceType=fax"),
            Value::Null,
            400,
            bad,
        ),
        case(
            "list: without read permission",
            "GET",
            &triggers,
            Value::Null,
            403,
            "permission_denied",
        )
        .by(Who::With(&["trigger:subscriptions:fire"])),
        case(
            "read: unknown id",
            "GET",
            trigger("no-such-sub"),
            Value::Null,
            404,
            "trigger.subscription_not_found",
        ),
        case(
            "read: a 300-byte id",
            "GET",
            trigger(&long_id),
            Value::Null,
            404,
            "trigger.subscription_not_found",
        ),
        case(
            "read: another workspace's path",
            "GET",
            trigger("sub-active"),
            Value::Null,
            403,
            "workspace_mismatch",
        )
        .by(Who::Stranger),
        case(
            "read: a 300-byte workspace",
            "GET",
            format!("/v1/workspaces/{long_id}/triggers"),
            Value::Null,
            400,
            bad,
        ),
        case(
            "read: unknown route",
            "GET",
            format!("/v1/workspaces/{ws}/nothing"),
            Value::Null,
            404,
            "trigger.api.route_not_found",
        ),
        case(
            "read: PUT is not a method here",
            "PUT",
            &triggers,
            json!({}),
            405,
            "trigger.api.method_not_allowed",
        ),
        // ---- subscriptions: patch, delete
        case(
            "patch: unknown field",
            "PATCH",
            trigger("sub-active"),
            json!({"workflowId": "x"}),
            400,
            bad,
        ),
        case(
            "patch: unknown state",
            "PATCH",
            trigger("sub-active"),
            json!({"state": "zombie"}),
            400,
            bad,
        ),
        case(
            "patch: selector that does not compile",
            "PATCH",
            trigger("sub-active"),
            json!({"selector": "1 +"}),
            422,
            invalid,
        ),
        case(
            "patch: selector bomb",
            "PATCH",
            trigger("sub-active"),
            json!({"selector": bomb}),
            422,
            expensive,
        ),
        case(
            "patch: mapping that is not an object",
            "PATCH",
            trigger("sub-active"),
            json!({"inputMapping": [1]}),
            400,
            bad,
        ),
        case(
            "patch: If-Match that is no ETag",
            "PATCH",
            trigger("sub-active"),
            json!({"selector": "true"}),
            412,
            "trigger.subscription_conflict",
        )
        .header("if-match", "yesterday"),
        case(
            "patch: stale If-Match",
            "PATCH",
            trigger("sub-active"),
            json!({"selector": "true"}),
            412,
            "trigger.subscription_conflict",
        )
        .header("if-match", "\"99\""),
        case(
            "patch: delete through PATCH without delete permission",
            "PATCH",
            trigger("sub-active"),
            json!({"state": "expired"}),
            403,
            "permission_denied",
        )
        .by(Who::With(&["trigger:subscriptions:write"])),
        case(
            "patch: revive a deleted subscription",
            "PATCH",
            trigger("sub-deleted"),
            json!({"state": "active"}),
            409,
            "trigger.subscription_deleted",
        ),
        case(
            "patch: unknown id",
            "PATCH",
            trigger("no-such-sub"),
            json!({"state": "paused"}),
            404,
            "trigger.subscription_not_found",
        ),
        case(
            "patch: not JSON",
            "PATCH",
            trigger("sub-active"),
            Value::Null,
            400,
            bad,
        )
        .raw("nope"),
        case(
            "delete: without delete permission",
            "DELETE",
            trigger("sub-active"),
            Value::Null,
            403,
            "permission_denied",
        )
        .by(Who::With(&["trigger:subscriptions:write"])),
        case(
            "delete: stale If-Match",
            "DELETE",
            trigger("sub-active"),
            Value::Null,
            412,
            "trigger.subscription_conflict",
        )
        .header("if-match", "\"7\""),
        case(
            "delete: unknown id",
            "DELETE",
            trigger("no-such-sub"),
            Value::Null,
            404,
            "trigger.subscription_not_found",
        ),
        // ---- fire
        case(
            "fire: without fire permission",
            "POST",
            fire("sub-active"),
            json!({"inputs": {"ok": true}}),
            403,
            "permission_denied",
        )
        .by(Who::With(&["trigger:subscriptions:write"])),
        case(
            "fire: unknown subscription",
            "POST",
            fire("no-such-sub"),
            json!({}),
            404,
            "trigger.subscription_not_found",
        ),
        case(
            "fire: a paused subscription",
            "POST",
            fire("sub-paused"),
            json!({}),
            409,
            "trigger.api.subscription_not_fireable",
        ),
        case(
            "fire: a deleted subscription",
            "POST",
            fire("sub-deleted"),
            json!({}),
            409,
            "trigger.api.subscription_not_fireable",
        ),
        case(
            "fire: inputs its selector refuses",
            "POST",
            fire("sub-active"),
            json!({"inputs": {"ok": false}}),
            409,
            "trigger.api.subscription_not_fireable",
        ),
        case(
            "fire: inputs not an object",
            "POST",
            fire("sub-active"),
            json!({"inputs": [1, 2]}),
            400,
            bad,
        ),
        case(
            "fire: unknown field",
            "POST",
            fire("sub-active"),
            json!({"input": {}}),
            400,
            bad,
        ),
        case(
            "fire: not JSON",
            "POST",
            fire("sub-active"),
            Value::Null,
            400,
            bad,
        )
        .raw("{"),
        case(
            "fire: inputs too large to carry",
            "POST",
            fire("sub-active"),
            json!({"inputs": {"ok": true, "blob": "x".repeat(200_000)}}),
            413,
            "trigger.event_too_large",
        ),
        case(
            "fire: in another workspace",
            "POST",
            fire("sub-active"),
            json!({}),
            403,
            "workspace_mismatch",
        )
        .by(Who::Stranger),
        // ---- events, selector test
        case(
            "event: unknown id",
            "GET",
            format!("/v1/workspaces/{ws}/events/no-such-event"),
            Value::Null,
            404,
            "trigger.event_not_found",
        ),
        case(
            "event: a 300-byte id",
            "GET",
            format!("/v1/workspaces/{ws}/events/{long_id}"),
            Value::Null,
            404,
            "trigger.event_not_found",
        ),
        case(
            "event: another workspace's path",
            "GET",
            format!("/v1/workspaces/{ws}/events/x"),
            Value::Null,
            403,
            "workspace_mismatch",
        )
        .by(Who::Stranger),
        case(
            "test: selector that does not compile",
            "POST",
            &test,
            json!({"selector": "(", "event": {}}),
            422,
            invalid,
        ),
        case(
            "test: selector bomb",
            "POST",
            &test,
            json!({"selector": bomb, "event": {"data": {"xs": [1, 2, 3]}}}),
            422,
            expensive,
        ),
        case(
            "test: no event",
            "POST",
            &test,
            json!({"selector": "true"}),
            400,
            bad,
        ),
        case(
            "test: event not an object",
            "POST",
            &test,
            json!({"selector": "true", "event": "x"}),
            400,
            bad,
        ),
        // ---- webhooks
        signed(
            "webhook: unknown connector",
            "no-such-connector",
            b"{}",
            |_| {},
            404,
            "webhook-route-not-found",
        ),
        signed(
            "webhook: a 2,100-byte connector id",
            &"c".repeat(2_100),
            b"{}",
            |_| {},
            404,
            "webhook-route-not-found",
        ),
        signed(
            "webhook: empty webhook-timestamp",
            &stack.std_connector(),
            b"{}",
            |h| {
                h.insert("webhook-timestamp".into(), "".into());
            },
            401,
            "trigger.webhook.signature_missing",
        ),
        signed(
            "webhook: body over 96 KiB",
            &stack.std_connector(),
            &vec![b'x'; 100 * 1024],
            |_| {},
            413,
            "trigger.api.payload_too_large",
        ),
        signed(
            "webhook: no signature headers",
            &stack.std_connector(),
            b"{}",
            |h| h.clear(),
            401,
            "trigger.webhook.signature_missing",
        ),
        signed(
            "webhook: no webhook-id",
            &stack.std_connector(),
            b"{}",
            |h| {
                h.remove("webhook-id");
            },
            401,
            "trigger.webhook.signature_missing",
        ),
        signed(
            "webhook: forged signature",
            &stack.std_connector(),
            b"{}",
            |h| {
                h.insert("webhook-signature".into(), "v1,Zm9yZ2Vk".into());
            },
            401,
            "trigger.webhook.signature_invalid",
        ),
        signed(
            "webhook: signature of another body",
            &stack.std_connector(),
            b"{\"a\":1}",
            |h| {
                h.insert("webhook-id".into(), "other-id".into());
            },
            401,
            "trigger.webhook.signature_invalid",
        ),
        signed(
            "webhook: signature not v1",
            &stack.std_connector(),
            b"{}",
            |h| {
                h.insert("webhook-signature".into(), "v2,AAAA".into());
            },
            401,
            "trigger.webhook.signature_invalid",
        ),
        signed(
            "webhook: signature not base64",
            &stack.std_connector(),
            b"{}",
            |h| {
                h.insert("webhook-signature".into(), "v1,!!!".into());
            },
            401,
            "trigger.webhook.signature_invalid",
        ),
        signed(
            "webhook: timestamp an hour old",
            &stack.std_connector(),
            b"{}",
            |h| {
                h.insert(
                    "webhook-timestamp".into(),
                    (now_secs() - 3600).to_string().into(),
                );
            },
            401,
            "trigger.webhook.timestamp_out_of_tolerance",
        ),
        signed(
            "webhook: timestamp i64::MIN",
            &stack.std_connector(),
            b"{}",
            |h| {
                h.insert("webhook-timestamp".into(), i64::MIN.to_string().into());
            },
            401,
            "trigger.webhook.timestamp_out_of_tolerance",
        ),
        signed(
            "webhook: timestamp i64::MAX",
            &stack.std_connector(),
            b"{}",
            |h| {
                h.insert("webhook-timestamp".into(), i64::MAX.to_string().into());
            },
            401,
            "trigger.webhook.timestamp_out_of_tolerance",
        ),
        signed(
            "webhook: timestamp not a number",
            &stack.std_connector(),
            b"{}",
            |h| {
                h.insert("webhook-timestamp".into(), "soon".into());
            },
            401,
            "trigger.webhook.timestamp_out_of_tolerance",
        ),
        signed(
            "webhook: a body whose event cannot be carried",
            &stack.std_connector(),
            escaped.as_bytes(),
            |_| {},
            413,
            "trigger.event_too_large",
        ),
        signed(
            "webhook: a connector whose secret is too short",
            &stack.short_connector(),
            b"{}",
            |_| {},
            401,
            "trigger.webhook.signature_invalid",
        ),
        named(
            gh("push", "sha256=zz".into(), gh_body),
            "github: signature not hex",
            401,
            "trigger.webhook.signature_invalid",
        ),
        named(
            gh("push", "sha1=abcd".into(), gh_body),
            "github: sha1 signature",
            401,
            "trigger.webhook.signature_invalid",
        ),
        named(
            gh("push", github_signature(b"other"), gh_body),
            "github: signature of another body",
            401,
            "trigger.webhook.signature_invalid",
        ),
        named(
            gh("release", github_signature(gh_body), gh_body),
            "github: replay under another event",
            409,
            "trigger.webhook.replayed",
        ),
        // ---- internal routes
        named(
            register(wait(json!({}))).by(Who::Nobody),
            "register: no identity",
            401,
            "callctx_missing",
        ),
        named(
            register(json!({"runId": "r", "stepId": "s", "eventKey": "k"})),
            "register: no workspaceId",
            422,
            "resume.workspace_required",
        ),
        named(
            register(wait(json!({"runId": ""}))),
            "register: empty runId",
            400,
            bad,
        ),
        named(
            register(wait(json!({"runId": ".."}))),
            "register: runId ..",
            400,
            bad,
        ),
        named(
            register(wait(json!({"stepId": "."}))),
            "register: stepId .",
            400,
            bad,
        ),
        named(
            register(wait(json!({"ttl": "P1Y"}))),
            "register: ttl of a year (no fixed length)",
            422,
            "resume.ttl_invalid",
        ),
        named(
            register(wait(json!({"ttl": "PT18446744073709551615S"}))),
            "register: ttl of 2^64 seconds",
            422,
            "resume.ttl_invalid",
        ),
        named(
            register(wait(json!({"ttl": "soon"}))),
            "register: ttl not a duration",
            422,
            "resume.ttl_invalid",
        ),
        named(
            register(wait(json!({"selector": "event.kind =="}))),
            "register: selector that does not compile",
            422,
            invalid,
        ),
        named(
            register(wait(json!({"selector": bomb}))),
            "register: selector bomb",
            422,
            expensive,
        ),
        named(
            register(wait(json!({"extra": 1}))),
            "register: unknown field",
            400,
            bad,
        ),
        named(
            register(wait(json!({"runId": "run-claimed"}))),
            "register: a triple another workspace waits on",
            403,
            "workspace_mismatch",
        ),
        named(
            register(Value::Null).raw("[]"),
            "register: a JSON array",
            400,
            bad,
        ),
        named(
            case(
                "",
                "POST",
                "/CancelResumeSubscription",
                json!({"runId": "r", "stepId": "s", "eventKey": "k"}),
                0,
                "",
            )
            .by(Who::Nobody),
            "cancel: no identity",
            401,
            "callctx_missing",
        ),
        named(
            case(
                "",
                "POST",
                "/CancelResumeSubscription",
                json!({"runId": "r"}),
                0,
                "",
            ),
            "cancel: missing fields",
            400,
            bad,
        ),
    ]
}

#[tokio::test]
async fn every_bad_http_input_gets_its_documented_answer_and_starts_nothing() {
    let stack = Stack::new();
    stack
        .subscription("sub-active", "active", Some("event.data.ok == true"))
        .await;
    stack.subscription("sub-paused", "paused", None).await;
    stack.subscription("sub-deleted", "expired", None).await;
    stack
        .connector(
            &stack.std_connector(),
            "standard-webhooks",
            &integration_tests::put_secret(SECRET).await,
        )
        .await;
    stack
        .connector(
            &stack.short_connector(),
            "standard-webhooks",
            &integration_tests::put_secret("whsec_c2hvcnQ=").await,
        )
        .await;
    stack
        .connector(
            &stack.gh_connector(),
            "github",
            &integration_tests::put_parameter(GITHUB_SECRET).await,
        )
        .await;
    // A first GitHub delivery, so the relabelled replay has an original.
    let gh_body = br#"{"ref":"refs/heads/main"}"#;
    let first = stack
        .http
        .post(format!(
            "{}/v1/webhooks/{}",
            stack.output("LocalApiUrl"),
            stack.gh_connector()
        ))
        .header("x-hub-signature-256", github_signature(gh_body))
        .header("x-github-delivery", "first")
        .header("x-github-event", "push")
        .body(gh_body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    // A wait of another workspace on `run-claimed`.
    let claimed = stack
        .http
        .post(format!(
            "{}/RegisterResumeSubscription",
            stack.output("LocalApiUrl")
        ))
        .header(
            "x-custos-callctx",
            json!({"workspace_id": "ws-other", "permissions": []}).to_string(),
        )
        .json(&json!({"runId": "run-claimed", "stepId": "s1", "eventKey": "workflow.completed", "workspaceId": "ws-other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(claimed.status(), 200);

    let cases = http_cases(&stack);
    let mut wrong = Vec::new();
    for case in &cases {
        let (status, content_type, body) = stack.call(case).await;
        let right = status == case.status
            && content_type == "application/problem+json"
            && body["code"] == case.code
            && body["status"] == case.status;
        if !right {
            wrong.push(format!(
                "{}: expected {} {}, got {status} {content_type} {body}",
                case.name, case.status, case.code
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases answered otherwise:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    assert!(cases.len() >= 90, "{} HTTP cases", cases.len());
    stack.drained().await;
    let started: Vec<_> = stack
        .fake
        .calls("start")
        .await
        .into_iter()
        .filter(|c| c.body["workspaceId"] == stack.ws.as_str())
        .filter(|c| c.body["workflowVersionId"] == "wv")
        .collect();
    assert!(started.is_empty(), "a refused input started {started:?}");
}

/// Bodies no stage can use, on each of the three queues: dropped with a logged reason
/// (lifecycle envelopes) or moved through the DLQ to the recorder; none is retried
/// forever, none starts anything.
#[tokio::test]
async fn bad_queue_bodies_never_loop_and_start_nothing() {
    let stack = Stack::new();
    let bodies: Vec<(&str, String)> = vec![
        ("WorkflowEventsQueueUrl", "not json".into()),
        ("WorkflowEventsQueueUrl", "[1, 2]".into()),
        ("WorkflowEventsQueueUrl", json!({"workspace": stack.ws, "status": "succeeded"}).to_string()),
        ("WorkflowEventsQueueUrl", json!({"workflowVersionId": "wv", "runId": "r", "status": "succeeded", "occurredAt": "t"}).to_string()),
        ("WorkflowEventsQueueUrl", json!({"workflowVersionId": "wv", "runId": "r", "workspace": stack.ws, "status": "succeeded", "occurredAt": "t", "triggerDepth": -1}).to_string()),
        ("WorkflowEventsQueueUrl", json!({"workflowVersionId": "wv", "runId": "r", "workspace": stack.ws, "status": "exploded", "occurredAt": "t"}).to_string()),
        ("NormalizedQueueUrl", format!("garbage for {}", stack.ws)),
        ("NormalizedQueueUrl", json!({"workspaceId": stack.ws, "event": {"eventId": "e"}, "extra": 1}).to_string()),
        ("DispatchQueueUrl", format!("garbage for {}", stack.ws)),
        ("DispatchQueueUrl", json!({"workspaceId": stack.ws, "event": {}, "target": {"type": "teleport"}}).to_string()),
    ];
    for (queue, body) in &bodies {
        stack
            .sqs
            .send_message()
            .queue_url(stack.output(queue))
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    stack.drained().await;
    let started = stack
        .fake
        .calls("start")
        .await
        .into_iter()
        .filter(|c| c.body["workspaceId"] == stack.ws.as_str())
        .count();
    assert_eq!(started, 0);
}

/// Configuration the functions refuse at cold start, each naming its variable.
#[test]
fn bad_configuration_fails_at_cold_start_naming_the_variable() {
    let cases: &[(&str, &str)] = &[
        ("TRIGGER_DEDUP_TTL_SECONDS", "-1"),
        ("TRIGGER_DEDUP_TTL_SECONDS", "59"),
        // Shorter than the archive (7 days): a replayed event would run twice.
        ("TRIGGER_DEDUP_TTL_SECONDS", "86400"),
        ("TRIGGER_RESUME_DEFAULT_TTL_SECONDS", "0"),
        ("TRIGGER_FANOUT_MAX_DEPTH_OVERRIDES", "ws1=4,ws1=100"),
        ("WORKFLOW_SERVICE_URL", "http://"),
        ("TRIGGER_DISPATCH_RETRY_WINDOW_SECONDS", "0"),
        ("TRIGGER_DISPATCH_RETRY_WINDOW_SECONDS", "a day"),
        ("TRIGGER_DISPATCH_BACKOFF_CAP_SECONDS", "0"),
        ("TRIGGER_DISPATCH_BACKOFF_CAP_SECONDS", "86400"),
        ("TRIGGER_DISPATCH_MAX_RECEIVE_COUNT", "5"),
        ("TRIGGER_FANOUT_MAX_DEPTH", "1.5"),
        ("TRIGGER_FANOUT_MAX_DEPTH_OVERRIDES", "ws1:3"),
        ("TRIGGER_RESUME_PARK_SECONDS", "five minutes"),
        ("TRIGGER_ARCHIVE_TTL_SECONDS", "-5"),
        ("WORKFLOW_SERVICE_URL", "ftp://example.com"),
        ("ENVIRONMENT", "prod"),
    ];
    for (variable, value) in cases {
        let error = Settings::from_lookup(|name| (name == *variable).then(|| (*value).to_owned()))
            .expect_err(variable);
        assert_eq!(error.variable, *variable, "{value}");
    }
}

/// Mid-rotation, one of a connector's two secret references is already gone: a delivery
/// signed with the other is accepted (it used to be 503 for every delivery).
#[tokio::test]
async fn a_connector_with_one_of_two_secrets_gone_verifies_with_the_other() {
    let stack = Stack::new();
    let id = format!("{}-rotating", stack.ws);
    let existing = integration_tests::put_secret(SECRET).await;
    let connector = serde_json::from_value(json!({
        "connectorInstanceId": id, "workspaceId": stack.ws, "scheme": "standard-webhooks",
        "secretRefs": [existing, "secretsmanager:custos/webhooks/deleted-during-rotation"]
    }))
    .unwrap();
    DynamoConnectorStore::new(stack.dynamodb.clone(), stack.output("ConnectorsTableName"))
        .put(&connector)
        .await
        .unwrap();
    let body = br#"{"type":"invoice.paid"}"#;
    let headers =
        integration_tests::standard_webhook_headers(SECRET, &unique("msg"), now_secs(), body);
    let mut request = stack
        .http
        .post(format!("{}/v1/webhooks/{id}", stack.output("LocalApiUrl")))
        .body(body.to_vec());
    for (name, value) in headers.as_object().unwrap() {
        request = request.header(name.as_str(), value.as_str().unwrap());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 202, "{answer}");
    assert!(answer["eventId"].is_string(), "{answer}");
    stack.drained().await;
}
