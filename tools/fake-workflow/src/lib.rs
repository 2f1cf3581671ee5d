//! A fake of the Workflow Service (an external system) for tests and local runs. It
//! implements `StartRun` and `RaiseExternalEvent` as DESIGN.md §5 describes them, is
//! idempotent on the key (same key → same run id), records every call (queryable at
//! `GET /_fake/calls`), and injects faults on demand (`POST /_fake/faults`): a fixed
//! status for the next N calls, a random failure rate, added latency, or a hang.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One call the fake received, and what it answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub route: String,
    pub idempotency_key: Option<String>,
    pub run_id: Option<String>,
    pub step_id: Option<String>,
    pub body: Value,
    pub status: u16,
    /// When the call arrived (epoch ms): lets tests check retry spacing.
    pub received_at_ms: u128,
    /// The W3C `traceparent` header the caller sent, if any.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// What to inject; every field optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Faults {
    /// Answer this status ...
    pub status: Option<u16>,
    /// ... for this many calls (absent: until cleared).
    pub count: Option<u32>,
    /// Only calls to this route (`start` or `raise`); absent: both.
    pub route: Option<String>,
    /// Only calls for this workspace (body `workspaceId`); absent: every workspace.
    pub workspace: Option<String>,
    /// Fraction of calls (0–1) answered with `failureStatus` (default 503).
    pub failure_rate: Option<f64>,
    pub failure_status: Option<u16>,
    pub latency_ms: Option<u64>,
    /// Hold the request this long before answering (longer than the client timeout).
    pub hang_ms: Option<u64>,
}

#[derive(Default)]
struct Inner {
    runs: HashMap<String, Value>,
    raised: HashMap<String, Value>,
    calls: Vec<Call>,
    faults: VecDeque<Faults>,
    /// Calls held by an injected delay right now, by (route, workspace): arrived, not
    /// yet answered. Lets a test act while a caller waits on the fake (kill it, say).
    held: HashMap<(String, String), usize>,
}

#[derive(Clone, Default)]
pub struct Fake(Arc<Mutex<Inner>>);

impl Fake {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The injected status for this call, consuming a counted fault.
    fn fault_for(&self, route: &str, workspace: Option<&str>) -> (Option<u16>, Duration) {
        let mut inner = self.lock();
        let Some(fault) = inner.faults.iter_mut().find(|f| {
            f.route.as_deref().is_none_or(|r| r == route)
                && f.workspace.as_deref().is_none_or(|w| Some(w) == workspace)
        }) else {
            return (None, Duration::ZERO);
        };
        let delay =
            Duration::from_millis(fault.latency_ms.unwrap_or(0) + fault.hang_ms.unwrap_or(0));
        let mut status = fault.status;
        if let Some(rate) = fault.failure_rate {
            if rand::random::<f64>() < rate {
                status = Some(fault.failure_status.unwrap_or(503));
            }
        }
        if let Some(count) = fault.count.as_mut() {
            *count = count.saturating_sub(1);
            if *count == 0 {
                let exhausted = fault.clone();
                inner.faults.retain(|f| f != &exhausted);
            }
        }
        (status, delay)
    }

    fn hold(&self, route: &str, workspace: &str, by: isize) {
        let mut inner = self.lock();
        let count = inner
            .held
            .entry((route.to_owned(), workspace.to_owned()))
            .or_default();
        *count = count.saturating_add_signed(by);
    }

    fn record(&self, call: Call) {
        self.lock().calls.push(call);
    }
}

pub fn router() -> Router {
    router_with(Fake::default())
}

pub fn router_with(fake: Fake) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/internal/runs:start", post(start_run))
        .route(
            "/internal/runs/{run_id}/steps/{step_action}",
            post(raise_event),
        )
        .route("/_fake/calls", get(calls))
        .route("/_fake/held", get(held))
        .route("/_fake/faults", post(set_faults).delete(clear_faults))
        .route("/_fake/reset", post(reset))
        .with_state(fake)
}

/// Serves the fake on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router()).await
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn problem(status: StatusCode, detail: &str) -> Response {
    (status, Json(json!({"title": status.canonical_reason(), "status": status.as_u16(), "detail": detail}))).into_response()
}

fn header_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn text<'a>(body: &'a Value, field: &str) -> Option<&'a str> {
    body.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Checks the fields both routes need; returns the idempotency key.
fn validate(headers: &HeaderMap, body: &Value, required: &[&str]) -> Result<String, String> {
    for field in required {
        if text(body, field).is_none() {
            return Err(format!("{field} is required"));
        }
    }
    let key = text(body, "idempotencyKey").ok_or("idempotencyKey is required")?;
    match header_key(headers) {
        Some(header) if header == key => Ok(key.to_owned()),
        Some(_) => Err("Idempotency-Key header differs from body idempotencyKey".to_owned()),
        None => Err("Idempotency-Key header is required".to_owned()),
    }
}

async fn faulted(fake: &Fake, route: &str, body: &Value) -> Option<StatusCode> {
    let workspace = text(body, "workspaceId");
    let (status, delay) = fake.fault_for(route, workspace);
    if !delay.is_zero() {
        let _held = Held::new(fake, route, workspace.unwrap_or_default());
        tokio::time::sleep(delay).await;
    }
    status.and_then(|s| StatusCode::from_u16(s).ok())
}

/// One call counted as held while it waits out its delay (also when the server drops
/// the call because its caller went away).
struct Held(Fake, String, String);

impl Held {
    fn new(fake: &Fake, route: &str, workspace: &str) -> Self {
        fake.hold(route, workspace, 1);
        Self(fake.clone(), route.to_owned(), workspace.to_owned())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.hold(&self.1, &self.2, -1);
    }
}

async fn start_run(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut call = Call {
        route: "start".into(),
        idempotency_key: header_key(&headers),
        run_id: None,
        step_id: None,
        body: body.clone(),
        status: 0,
        received_at_ms: now_ms(),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let response = match (
        faulted(&fake, "start", &body).await,
        validate(&headers, &body, &["workspaceId", "workflowVersionId"]),
    ) {
        (Some(status), _) => problem(status, "injected fault"),
        (None, Err(reason)) => problem(StatusCode::BAD_REQUEST, &reason),
        (None, Ok(key)) => {
            let mut inner = fake.lock();
            let existing = inner.runs.get(&key).cloned();
            let (status, run) = match existing {
                Some(run) => (StatusCode::OK, run),
                None => {
                    let run = json!({
                        "runId": format!("run-{}", uuid::Uuid::new_v4().simple()),
                        "status": "queued",
                        "workspaceId": body["workspaceId"],
                        "workflowVersionId": body["workflowVersionId"],
                        "triggerDepth": body.get("triggerDepth").cloned().unwrap_or(Value::Null),
                    });
                    inner.runs.insert(key, run.clone());
                    (StatusCode::CREATED, run)
                }
            };
            call.run_id = run["runId"].as_str().map(str::to_owned);
            (status, Json(run)).into_response()
        }
    };
    call.status = response.status().as_u16();
    fake.record(call);
    response
}

async fn raise_event(
    State(fake): State<Fake>,
    Path((run_id, step_action)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let Some(step_id) = step_action.strip_suffix(":raiseEvent").map(str::to_owned) else {
        return problem(StatusCode::NOT_FOUND, "unknown route");
    };
    let mut call = Call {
        route: "raise".into(),
        idempotency_key: header_key(&headers),
        run_id: Some(run_id.clone()),
        step_id: Some(step_id.clone()),
        body: body.clone(),
        status: 0,
        received_at_ms: now_ms(),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let response = match (
        faulted(&fake, "raise", &body).await,
        validate(&headers, &body, &["workspaceId", "eventName"]),
    ) {
        (Some(status), _) => problem(status, "injected fault"),
        (None, Err(reason)) => problem(StatusCode::BAD_REQUEST, &reason),
        (None, Ok(key)) => {
            let mut inner = fake.lock();
            let duplicate = inner.raised.contains_key(&key);
            inner
                .raised
                .entry(key)
                .or_insert(json!({"runId": run_id, "stepId": step_id}));
            (
                StatusCode::ACCEPTED,
                Json(json!({"accepted": true, "duplicate": duplicate})),
            )
                .into_response()
        }
    };
    call.status = response.status().as_u16();
    fake.record(call);
    response
}

#[derive(Deserialize)]
struct CallFilter {
    route: Option<String>,
}

async fn calls(State(fake): State<Fake>, Query(filter): Query<CallFilter>) -> Json<Vec<Call>> {
    let inner = fake.lock();
    Json(
        inner
            .calls
            .iter()
            .filter(|c| filter.route.as_deref().is_none_or(|r| r == c.route))
            .cloned()
            .collect(),
    )
}

/// `GET /_fake/held?workspace=ws`: calls held by an injected delay right now, by route.
async fn held(State(fake): State<Fake>, Query(scope): Query<FaultScope>) -> Json<Value> {
    let inner = fake.lock();
    let count = |route: &str| -> usize {
        inner
            .held
            .iter()
            .filter(|((r, w), _)| r == route && scope.workspace.as_deref().is_none_or(|ws| ws == w))
            .map(|(_, n)| n)
            .sum()
    };
    Json(json!({"start": count("start"), "raise": count("raise")}))
}

async fn set_faults(State(fake): State<Fake>, Json(faults): Json<Faults>) -> StatusCode {
    fake.lock().faults.push_back(faults);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct FaultScope {
    workspace: Option<String>,
}

/// Clears every fault, or with `?workspace=` only the faults limited to that workspace
/// (so parallel tests can end their own outage without ending another's).
async fn clear_faults(State(fake): State<Fake>, Query(scope): Query<FaultScope>) -> StatusCode {
    let mut inner = fake.lock();
    match scope.workspace {
        Some(ws) => inner
            .faults
            .retain(|f| f.workspace.as_deref() != Some(ws.as_str())),
        None => inner.faults.clear(),
    }
    StatusCode::NO_CONTENT
}

async fn reset(State(fake): State<Fake>) -> StatusCode {
    *fake.lock() = Inner::default();
    StatusCode::NO_CONTENT
}
