//! The management API behind API Gateway (HTTP API, payload v2): subscriptions CRUD,
//! manual fire, event status, selector testing, and the internal resume-wait RPCs. One
//! route table drives both the router and the OpenAPI check, and every error leaves as
//! `application/problem+json` with a code from the closed table.

pub mod auth;
pub mod connectors;
pub mod console;
pub mod deadletters;
pub mod events;
pub mod preconditions;
pub mod problem;
pub mod request;
pub mod resume_rpc;
pub mod service;
pub mod triggers;
pub mod webhooks;

#[cfg(test)]
mod openapi_check;

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::encodings::Body;
use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::http;
use serde_json::Value;

use crate::archive::EventArchive;
use crate::audit::AuditSink;
use crate::clock::Clock;
use crate::config::Settings;
use crate::deadletters::DeadLetterStore;
use crate::dedup::Ledger;
use crate::queue::Queue;
use crate::resume::{ParkStore, ResumeStore};
use crate::selector::SelectorCache;
use crate::subscription::SubscriptionStore;
pub use problem::{Code, Problem};
pub use request::ApiRequest;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    CreateTrigger,
    ListTriggers,
    GetTrigger,
    PreviewSchedule,
    PatchTrigger,
    DeleteTrigger,
    FireTrigger,
    TestSelector,
    GetEvent,
    ListEvents,
    ReplayEvent,
    ListDeadLetters,
    GetDeadLetter,
    ReplayDeadLetter,
    ReplayDeadLetters,
    DiscardDeadLetter,
    RegisterResume,
    CancelResume,
    ReceiveWebhook,
    CreateConnector,
    ListConnectors,
    GetConnector,
    PatchConnector,
    DeleteConnector,
    ConsolePage,
    ConsoleFile,
}

/// One route: method, path template, and every status it can answer.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub operation: Operation,
    pub statuses: &'static [u16],
}

pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        method: "GET",
        path: "/console",
        operation: Operation::ConsolePage,
        statuses: &[200],
    },
    RouteSpec {
        method: "GET",
        path: "/console/{asset}",
        operation: Operation::ConsoleFile,
        statuses: &[200, 404],
    },
    RouteSpec {
        method: "POST",
        path: "/v1/workspaces/{ws}/connectors",
        operation: Operation::CreateConnector,
        statuses: &[201, 400, 401, 403, 413, 422, 503, 500],
    },
    RouteSpec {
        method: "GET",
        path: "/v1/workspaces/{ws}/connectors",
        operation: Operation::ListConnectors,
        statuses: &[200, 400, 401, 403, 503, 500],
    },
    RouteSpec {
        method: "GET",
        path: "/v1/workspaces/{ws}/connectors/{connectorId}",
        operation: Operation::GetConnector,
        statuses: &[200, 400, 401, 403, 404, 503, 500],
    },
    RouteSpec {
        method: "PATCH",
        path: "/v1/workspaces/{ws}/connectors/{connectorId}",
        operation: Operation::PatchConnector,
        statuses: &[200, 400, 401, 403, 404, 413, 422, 503, 500],
    },
    RouteSpec {
        method: "DELETE",
        path: "/v1/workspaces/{ws}/connectors/{connectorId}",
        operation: Operation::DeleteConnector,
        statuses: &[204, 400, 401, 403, 404, 503, 500],
    },
    RouteSpec {
        method: "POST",
        path: "/v1/workspaces/{ws}/triggers",
        operation: Operation::CreateTrigger,
        statuses: &[201, 400, 401, 403, 413, 422, 503, 500],
    },
    RouteSpec {
        method: "GET",
        path: "/v1/workspaces/{ws}/triggers",
        operation: Operation::ListTriggers,
        statuses: &[200, 400, 401, 403, 503, 500],
    },
    RouteSpec {
        method: "POST",
        path: "/v1/workspaces/{ws}/triggers:test",
        operation: Operation::TestSelector,
        statuses: &[200, 400, 401, 403, 413, 422, 500],
    },
    RouteSpec {
        method: "GET",
        path: "/v1/workspaces/{ws}/triggers/{id}",
        operation: Operation::GetTrigger,
        statuses: &[200, 400, 401, 403, 404, 503, 500],
    },
    RouteSpec {
        method: "PATCH",
        path: "/v1/workspaces/{ws}/triggers/{id}",
        operation: Operation::PatchTrigger,
        statuses: &[200, 400, 401, 403, 404, 409, 412, 413, 422, 503, 500],
    },
    RouteSpec {
        method: "DELETE",
        path: "/v1/workspaces/{ws}/triggers/{id}",
        operation: Operation::DeleteTrigger,
        statuses: &[204, 400, 401, 403, 404, 412, 503, 500],
    },
    RouteSpec {
        method: "GET",
        path: "/v1/workspaces/{ws}/triggers/{id}/schedule:preview",
        operation: Operation::PreviewSchedule,
        statuses: &[200, 400, 401, 403, 404, 409, 503, 500],
    },
    RouteSpec {
        method: "POST",
        path: "/v1/workspaces/{ws}/triggers/{id}:fire",
        operation: Operation::FireTrigger,
        statuses: &[202, 400, 401, 403, 404, 409, 413, 503, 500],
    },
    RouteSpec {
        method: "GET",
        path: "/v1/workspaces/{ws}/events/{eventId}",
        operation: Operation::GetEvent,
        statuses: &[200, 400, 401, 403, 404, 503, 500],
    },
    RouteSpec {
        method: "GET",
        path: "/v1/workspaces/{ws}/events",
        operation: Operation::ListEvents,
        statuses: &[200, 400, 401, 403, 503, 500],
    },
    RouteSpec {
        method: "POST",
        path: "/v1/workspaces/{ws}/events/{eventId}:replay",
        operation: Operation::ReplayEvent,
        statuses: &[202, 400, 401, 403, 404, 409, 413, 503, 500],
    },
    RouteSpec {
        method: "GET",
        path: "/v1/workspaces/{ws}/dead-letters",
        operation: Operation::ListDeadLetters,
        statuses: &[200, 400, 401, 403, 503, 500],
    },
    RouteSpec {
        method: "POST",
        path: "/v1/workspaces/{ws}/dead-letters:replay",
        operation: Operation::ReplayDeadLetters,
        statuses: &[202, 400, 401, 403, 413, 503, 500],
    },
    RouteSpec {
        method: "GET",
        path: "/v1/workspaces/{ws}/dead-letters/{deadLetterId}",
        operation: Operation::GetDeadLetter,
        statuses: &[200, 400, 401, 403, 404, 503, 500],
    },
    RouteSpec {
        method: "DELETE",
        path: "/v1/workspaces/{ws}/dead-letters/{deadLetterId}",
        operation: Operation::DiscardDeadLetter,
        statuses: &[204, 400, 401, 403, 404, 409, 503, 500],
    },
    RouteSpec {
        method: "POST",
        path: "/v1/workspaces/{ws}/dead-letters/{deadLetterId}:replay",
        operation: Operation::ReplayDeadLetter,
        statuses: &[202, 400, 401, 403, 404, 409, 503, 500],
    },
    RouteSpec {
        method: "POST",
        path: "/v1/webhooks/{connectorInstanceId}",
        operation: Operation::ReceiveWebhook,
        statuses: &[202, 400, 401, 404, 409, 413, 503, 500],
    },
    RouteSpec {
        method: "POST",
        path: "/RegisterResumeSubscription",
        operation: Operation::RegisterResume,
        statuses: &[200, 400, 401, 403, 413, 422, 503, 500],
    },
    RouteSpec {
        method: "POST",
        path: "/CancelResumeSubscription",
        operation: Operation::CancelResume,
        statuses: &[204, 400, 401, 403, 413, 503, 500],
    },
];

/// Ids in paths longer than this cannot name anything (store keys are bounded).
pub const MAX_PATH_ID_BYTES: usize = 256;

/// Path parameters captured by a template.
pub type Params = HashMap<&'static str, String>;

/// Matches `path` against a template whose segments are literals, `{name}`, or
/// `{name}:suffix`. Captured values are never empty.
pub fn match_path(template: &'static str, path: &str) -> Option<Params> {
    let mut params = Params::new();
    let mut given = path.trim_end_matches('/').split('/');
    for segment in template.split('/') {
        let value = given.next()?;
        match segment.strip_prefix('{').and_then(|s| s.split_once('}')) {
            Some((name, suffix)) => {
                let captured = value.strip_suffix(suffix)?;
                if captured.is_empty() || (suffix.is_empty() && captured.contains(':')) {
                    return None;
                }
                params.insert(name, captured.to_owned());
            }
            None if segment == value => {}
            None => return None,
        }
    }
    given.next().is_none().then_some(params)
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    pub headers: Vec<(&'static str, String)>,
    /// A body that is not JSON (the console's files): its media type and text.
    pub text: Option<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
            text: None,
        }
    }

    pub fn text(status: u16, content_type: &'static str, text: String) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
            text: Some((content_type, text)),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
            text: None,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// The API's ports and settings, built once per cold start.
pub struct Api {
    pub subscriptions: Arc<dyn SubscriptionStore>,
    pub resumes: Arc<dyn ResumeStore>,
    pub ledger: Arc<dyn Ledger>,
    pub dead_letters: Arc<dyn DeadLetterStore>,
    pub archive: Arc<dyn EventArchive>,
    pub parked: Arc<dyn ParkStore>,
    /// The one way in for fired and replayed events (webhooks share it).
    pub intake: Arc<crate::stage::IngestStage>,
    /// Where a registration sends the parked event it delivers.
    pub dispatch_queue: Arc<dyn Queue>,
    pub audit: Arc<dyn AuditSink>,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<Settings>,
    pub cache: SelectorCache,
    pub webhooks: crate::webhook::WebhookIntake,
}

impl Api {
    /// Whether the development call-context shim may be used.
    pub fn allow_shim(&self) -> bool {
        self.settings.allows_development_shim()
    }

    /// Internal routes: an IAM caller (on the allow-list when one is configured).
    pub fn authorize_internal(&self, request: &ApiRequest) -> Result<(), Problem> {
        auth::internal(
            request,
            self.allow_shim(),
            &self.settings.internal_caller_arns,
        )
    }

    /// Authenticates the caller, then checks the path workspace is theirs and they hold
    /// `permission`; returns that workspace. Every workspace route starts here.
    pub fn authorize(
        &self,
        params: &Params,
        request: &ApiRequest,
        permission: &str,
    ) -> Result<crate::ids::WorkspaceId, Problem> {
        let caller = auth::caller(request, self.allow_shim())?;
        let ws = params
            .get("ws")
            .filter(|ws| ws.len() <= MAX_PATH_ID_BYTES)
            .and_then(|ws| crate::ids::WorkspaceId::new(ws.as_str()).ok())
            .ok_or_else(|| Problem::new(Code::BadRequest, "workspace must be 1 to 256 bytes"))?;
        caller.authorize(&ws, permission)?;
        Ok(ws)
    }

    /// Answers one API Gateway v2 event as it is (the tests' and fuzz targets' door; the
    /// Lambda goes through [`service::router`], the same routes).
    pub async fn handle(&self, event: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        gateway_response(self.answer(ApiRequest::from_event(event)).await)
    }

    /// Routes a request read by either door, or renders why it could not be read.
    pub async fn answer(
        &self,
        request: Result<ApiRequest, (String, Problem)>,
    ) -> http::Response<String> {
        match request {
            Ok(request) => respond(&request.path, self.route_guarded(&request).await),
            Err((path, problem)) => respond(&path, Err(problem)),
        }
    }

    /// Routes the request; a panic anywhere below becomes a problem+json 500 and an
    /// audit record instead of a dead runtime (a gateway 502).
    async fn route_guarded(&self, request: &ApiRequest) -> Result<Reply, Problem> {
        use futures::FutureExt;
        match std::panic::AssertUnwindSafe(self.route(request))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(
                    path = request.path,
                    method = request.method,
                    panic = message,
                    "request handler panicked"
                );
                self.audit.emit(
                    crate::audit::AuditEvent::new(
                        crate::audit::AuditName::RequestPanicked,
                        "",
                        None,
                    )
                    .with("path", request.path.as_str())
                    .with("method", request.method.as_str()),
                );
                Err(Problem::new(
                    Code::Internal,
                    "the request could not be handled; it was logged",
                ))
            }
        }
    }

    pub async fn route(&self, request: &ApiRequest) -> Result<Reply, Problem> {
        let mut allowed: Vec<&str> = Vec::new();
        for spec in ROUTES {
            let Some(params) = match_path(spec.path, &request.path) else {
                continue;
            };
            if spec.method != request.method {
                allowed.push(spec.method);
                continue;
            }
            if request.body.len() > request::MAX_BODY_BYTES {
                return Err(Problem::new(
                    Code::PayloadTooLarge,
                    format!("bodies are limited to {} bytes", request::MAX_BODY_BYTES),
                ));
            }
            return self.dispatch(spec.operation, &params, request).await;
        }
        Err(if !allowed.is_empty() {
            // RFC 9110: a 405 lists the methods the resource supports.
            allowed.sort_unstable();
            allowed.dedup();
            Problem::new(
                Code::MethodNotAllowed,
                format!("{} is not allowed here", request.method),
            )
            .with_header("allow", allowed.join(", "))
        } else {
            Problem::new(
                Code::RouteNotFound,
                format!("no route for {}", request.path),
            )
        })
    }

    async fn dispatch(
        &self,
        operation: Operation,
        params: &Params,
        request: &ApiRequest,
    ) -> Result<Reply, Problem> {
        match operation {
            Operation::CreateTrigger => triggers::create(self, params, request).await,
            Operation::ListTriggers => triggers::list(self, params, request).await,
            Operation::GetTrigger => triggers::get(self, params, request).await,
            Operation::PreviewSchedule => triggers::preview_schedule(self, params, request).await,
            Operation::PatchTrigger => triggers::patch(self, params, request).await,
            Operation::DeleteTrigger => triggers::delete(self, params, request).await,
            Operation::FireTrigger => triggers::fire(self, params, request).await,
            Operation::TestSelector => triggers::test(self, params, request).await,
            Operation::GetEvent => events::get(self, params, request).await,
            Operation::ListEvents => events::list(self, params, request).await,
            Operation::ReplayEvent => events::replay(self, params, request).await,
            Operation::ListDeadLetters => deadletters::list(self, params, request).await,
            Operation::GetDeadLetter => deadletters::get(self, params, request).await,
            Operation::ReplayDeadLetter => deadletters::replay(self, params, request).await,
            Operation::ReplayDeadLetters => deadletters::replay_many(self, params, request).await,
            Operation::DiscardDeadLetter => deadletters::discard(self, params, request).await,
            Operation::RegisterResume => resume_rpc::register(self, request).await,
            Operation::CancelResume => resume_rpc::cancel(self, request).await,
            Operation::ReceiveWebhook => webhooks::receive(self, params, request).await,
            Operation::CreateConnector => connectors::create(self, params, request).await,
            Operation::ListConnectors => connectors::list(self, params, request).await,
            Operation::GetConnector => connectors::get(self, params, request).await,
            Operation::PatchConnector => connectors::patch(self, params, request).await,
            Operation::DeleteConnector => connectors::delete(self, params, request).await,
            Operation::ConsolePage => Ok(console::page(self)),
            Operation::ConsoleFile => console::file(params),
        }
    }
}

/// The one rendering of an answer, whichever door the request came through: status,
/// headers and the body with its media type (problem+json for every error).
fn respond(path: &str, result: Result<Reply, Problem>) -> http::Response<String> {
    let (status, content_type, body, headers) = match result {
        Ok(Reply {
            status,
            text: Some((content_type, text)),
            headers,
            ..
        }) => (status, content_type, Some(text), headers),
        Ok(Reply {
            status,
            body,
            headers,
            ..
        }) => (
            status,
            "application/json",
            body.map(|b| b.to_string()),
            headers,
        ),
        Err(problem) => (
            problem.code.status(),
            "application/problem+json",
            Some(problem.body(path).to_string()),
            problem.headers.clone(),
        ),
    };
    let mut response = http::Response::new(String::new());
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let Ok(value) = http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    if let Some(body) = body {
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        *response.body_mut() = body;
    }
    response
}

/// [`respond`]'s answer in the gateway's own event shape (what [`Api::handle`] returns).
fn gateway_response(response: http::Response<String>) -> ApiGatewayV2httpResponse {
    let (parts, body) = response.into_parts();
    let mut gateway = ApiGatewayV2httpResponse::default();
    gateway.status_code = i64::from(parts.status.as_u16());
    gateway.headers = parts.headers;
    if gateway.headers.contains_key(http::header::CONTENT_TYPE) {
        gateway.body = Some(Body::Text(body));
    }
    gateway
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_method_the_resource_lacks_is_405_with_the_methods_it_has() {
        let api = crate::memory::api(
            Arc::new(crate::memory::RecordingAuditSink::default()),
            Arc::new(crate::clock::ManualClock::at_ms(0)),
            [],
        )
        .unwrap();
        let request = crate::memory::gateway_request(
            "TRACE",
            "/v1/workspaces/ws1/triggers/t1",
            serde_json::json!({}),
            "",
        )
        .unwrap();
        let response = api.handle(request).await;
        assert_eq!(response.status_code, 405);
        assert_eq!(response.headers["allow"], "DELETE, GET, PATCH");
        assert_eq!(response.headers["content-type"], "application/problem+json");
    }

    #[tokio::test]
    async fn schedules_are_validated_at_create_and_previewed_in_utc_and_their_zone() {
        let clock = crate::clock::ManualClock::at_ms(1_774_699_200_000); // 2026-03-28T12:00:00Z
        let api = crate::memory::api(
            Arc::new(crate::memory::RecordingAuditSink::default()),
            Arc::new(clock),
            [],
        )
        .unwrap();
        let caller = serde_json::json!({"workspace_id": "ws1", "permissions": [
            "trigger:subscriptions:read", "trigger:subscriptions:write"]});
        let headers = serde_json::json!({"x-custos-callctx": caller.to_string()});
        let call = |method: &str, path: &str, body: serde_json::Value| {
            let request =
                crate::memory::gateway_request(method, path, headers.clone(), &body.to_string())
                    .unwrap();
            let api = &api;
            async move {
                let response = api.handle(request).await;
                let body = match response.body {
                    Some(Body::Text(text)) => serde_json::from_str(&text).unwrap(),
                    _ => serde_json::Value::Null,
                };
                (response.status_code, body)
            }
        };
        let create = |schedule: serde_json::Value| serde_json::json!({"sourceType": "scheduled", "workflowId": "wf", "schedule": schedule});
        for (schedule, detail) in [
            (serde_json::json!({"cron": "0 25 * * *"}), "schedule.cron"),
            (
                serde_json::json!({"cron": "0 9 * * *", "timezone": "Europe/Berlinn"}),
                "IANA",
            ),
            (serde_json::json!({"rate": "30 seconds"}), "schedule.rate"),
            (
                serde_json::json!({"cron": "0 0 * * JAN"}),
                "day of week field",
            ),
            (serde_json::json!({"cron": "0 0 * MON *"}), "month field"),
            (
                serde_json::json!({"cron": "0 0 ,1 * *"}),
                "day of month field",
            ),
            (serde_json::json!({"cron": "@reboot"}), "nickname"),
            (
                serde_json::json!({"rate": "1 minute", "cron": "* * * * *"}),
                "exactly one",
            ),
        ] {
            let (status, body) =
                call("POST", "/v1/workspaces/ws1/triggers", create(schedule)).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (422, Some("trigger.schedule_invalid"))
            );
            assert!(body["detail"].as_str().unwrap().contains(detail), "{body}");
        }
        let (status, body) = call(
            "POST",
            "/v1/workspaces/ws1/triggers",
            serde_json::json!({"sourceType": "scheduled", "workflowId": "wf"}),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("trigger.schedule_invalid"))
        );
        let (status, body) = call(
            "POST",
            "/v1/workspaces/ws1/triggers",
            serde_json::json!({"sourceType": "manual", "workflowId": "wf",
                               "schedule": {"rate": "5 minutes"}}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let schedule = serde_json::json!({"cron": "30 2 * * *", "timezone": "Europe/Berlin"});
        let (status, created) = call(
            "POST",
            "/v1/workspaces/ws1/triggers",
            create(schedule.clone()),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["schedule"]["cron"], "30 2 * * *");
        let id = created["subscriptionId"].as_str().unwrap();
        let path = format!("/v1/workspaces/ws1/triggers/{id}/schedule:preview");
        let (status, preview) =
            call("GET", &format!("{path}?count=2"), serde_json::Value::Null).await;
        assert_eq!(status, 200, "{preview}");
        assert_eq!(preview["timezone"], "Europe/Berlin");
        assert_eq!(
            preview["fireTimes"],
            serde_json::json!([
                {"utc": "2026-03-29T01:00:00.000Z", "local": "2026-03-29T03:00:00.000+02:00"},
                {"utc": "2026-03-30T00:30:00.000Z", "local": "2026-03-30T02:30:00.000+02:00"}
            ]),
            "02:30 does not exist on the 29th: the end of the gap"
        );
        let (status, _) = call("GET", &format!("{path}?count=0"), serde_json::Value::Null).await;
        assert_eq!(status, 400);
        // `from`: the autumn change of 2027, seen months before it happens.
        let (status, autumn) = call(
            "GET",
            &format!("{path}?count=2&from=2027-10-30T12:00:00Z"),
            serde_json::Value::Null,
        )
        .await;
        assert_eq!(status, 200, "{autumn}");
        assert_eq!(
            autumn["fireTimes"],
            serde_json::json!([
                {"utc": "2027-10-31T00:30:00.000Z", "local": "2027-10-31T02:30:00.000+02:00"},
                {"utc": "2027-11-01T01:30:00.000Z", "local": "2027-11-01T02:30:00.000+01:00"}
            ]),
            "02:30 happens twice on the 31st: once, at the first"
        );
        for bad in ["yesterday", ""] {
            let (status, body) = call(
                "GET",
                &format!("{path}?from={bad}"),
                serde_json::Value::Null,
            )
            .await;
            assert_eq!(status, 400, "{bad:?}: {body}");
        }

        // A schedule is replaced by PATCH, validated as at create.
        let one = format!("/v1/workspaces/ws1/triggers/{id}");
        let patch = |schedule| serde_json::json!({ "schedule": schedule });
        for bad in [
            serde_json::json!({"cron": "61 * * * *"}),
            serde_json::Value::Null,
        ] {
            let (status, body) = call("PATCH", &one, patch(bad)).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (422, Some("trigger.schedule_invalid")),
                "{body}"
            );
        }
        let (status, patched) =
            call("PATCH", &one, patch(serde_json::json!({"rate": "2 hours"}))).await;
        assert_eq!(status, 200, "{patched}");
        assert_eq!(patched["schedule"]["rate"], "2 hours");
        assert!(patched["schedule"].get("cron").is_none());
        let (_, preview) = call("GET", &format!("{path}?count=1"), serde_json::Value::Null).await;
        assert_eq!(preview["timezone"], "UTC");
        assert_eq!(preview["fireTimes"].as_array().map(Vec::len), Some(1));
        let (status, manual) = call(
            "POST",
            "/v1/workspaces/ws1/triggers",
            serde_json::json!({"sourceType": "manual", "workflowId": "wf"}),
        )
        .await;
        assert_eq!(status, 201);
        let manual = format!(
            "/v1/workspaces/ws1/triggers/{}",
            manual["subscriptionId"].as_str().unwrap()
        );
        let (status, body) = call(
            "PATCH",
            &manual,
            patch(serde_json::json!({"rate": "1 hour"})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
    }

    #[test]
    fn path_templates_capture_segments_and_suffixes() {
        let p = match_path(
            "/v1/workspaces/{ws}/triggers/{id}:fire",
            "/v1/workspaces/w1/triggers/abc:fire",
        )
        .unwrap();
        assert_eq!((p["ws"].as_str(), p["id"].as_str()), ("w1", "abc"));
        assert!(match_path(
            "/v1/workspaces/{ws}/triggers/{id}",
            "/v1/workspaces/w1/triggers/abc:fire"
        )
        .is_none());
        assert!(match_path(
            "/v1/workspaces/{ws}/triggers",
            "/v1/workspaces/w1/triggers:test"
        )
        .is_none());
        assert!(match_path(
            "/v1/workspaces/{ws}/triggers:test",
            "/v1/workspaces/w1/triggers:test"
        )
        .is_some());
        assert!(match_path(
            "/v1/workspaces/{ws}/triggers/{id}",
            "/v1/workspaces//triggers/x"
        )
        .is_none());
        assert!(match_path(
            "/v1/workspaces/{ws}/triggers",
            "/v1/workspaces/w1/triggers/"
        )
        .is_some());
        assert!(match_path(
            "/v1/workspaces/{ws}/triggers",
            "/v1/workspaces/w1/triggers/x"
        )
        .is_none());
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "{} {}",
                    a.method,
                    a.path
                );
            }
        }
    }
}
