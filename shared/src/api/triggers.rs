//! Subscription routes: create, list, get, patch, soft delete, manual fire, and selector
//! testing. Every route authorizes the caller against the path workspace first, and
//! every store access is keyed by that workspace.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth;
use super::preconditions::{etag, if_match};
use super::problem::{Code, Problem};
use super::request::ApiRequest;
use super::{Api, Params, Reply};
use crate::event::{QueuedEvent, SourceType};
use crate::flow::FlowSpec;
use crate::ids::{EventId, SubscriptionId, WorkspaceId};
use crate::limits::{self, MAX_QUEUE_MESSAGE_BYTES};
use crate::mapping;
use crate::normalize::{self, derive_event_id};
use crate::schedule::{Schedule, ScheduleSpec};
use crate::selector::{desugar, CompiledExpr, EventScope, MatchType};
use crate::stage::matcher::start_message;
use crate::store::StoreError;
use crate::subscription::{ListQuery, Subscription, SubscriptionKind, SubscriptionState};
use crate::trace::TraceParent;

/// A selector as authored: CEL text, or the legacy `{field, matchType, value}` sugar.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SelectorInput {
    Cel(String),
    Legacy(LegacySelector),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LegacySelector {
    pub field: String,
    pub match_type: MatchType,
    pub value: String,
}

/// Lowers an authored selector to checked CEL; blank text means "no selector".
pub fn compile_selector(input: &SelectorInput) -> Result<Option<String>, Problem> {
    let expr = match input {
        SelectorInput::Cel(text) if text.trim().is_empty() => return Ok(None),
        SelectorInput::Cel(text) => text.clone(),
        SelectorInput::Legacy(l) => desugar(&l.field, l.match_type, &l.value)?,
    };
    CompiledExpr::authored_selector(&expr)?;
    Ok(Some(expr))
}

/// Checks what a client authored: the selector compiles (returned as CEL) and every
/// mapping placeholder compiles.
fn check_authored(
    selector: Option<&SelectorInput>,
    mapping: &Map<String, Value>,
) -> Result<Option<String>, Problem> {
    let selector = selector.map(compile_selector).transpose()?.flatten();
    check_mapping(mapping)?;
    Ok(selector)
}

fn check_mapping(mapping: &Map<String, Value>) -> Result<(), Problem> {
    mapping::validate(mapping).map_err(|e| {
        let code = if e.too_expensive {
            Code::SelectorTooExpensive
        } else {
            Code::SelectorInvalid
        };
        Problem::new(code, e.to_string())
    })
}

fn subscription_id(params: &Params) -> Result<SubscriptionId, Problem> {
    let id = params
        .get("id")
        .and_then(|id| SubscriptionId::new(id.as_str()).ok())
        .ok_or_else(|| Problem::new(Code::BadRequest, "subscription id must not be empty"))?;
    // No subscription has such an id (and the store could not even look it up).
    if id.as_str().len() > super::MAX_PATH_ID_BYTES {
        return Err(not_found(&id));
    }
    Ok(id)
}

fn not_found(id: &SubscriptionId) -> Problem {
    Problem::new(
        Code::SubscriptionNotFound,
        format!("subscription {id} does not exist"),
    )
    .with("subscriptionId", id.as_str())
}

async fn load(api: &Api, ws: &WorkspaceId, id: &SubscriptionId) -> Result<Subscription, Problem> {
    api.subscriptions
        .get(ws, id)
        .await?
        .ok_or_else(|| not_found(id))
}

fn to_json(subscription: &Subscription) -> Value {
    serde_json::to_value(subscription).unwrap_or(Value::Null)
}

/// The subscription as JSON with its version as a strong `ETag`.
fn versioned(status: u16, subscription: &Subscription) -> Reply {
    Reply::json(status, to_json(subscription)).with_header("etag", etag(subscription.version))
}

/// How often a change without `If-Match` is re-applied on fresh state after losing a
/// race, before answering 412.
const CHANGE_ATTEMPTS: usize = 3;

/// Loads the subscription, holds it to `If-Match`, lets `change` derive the next state
/// (`None`: nothing to write) and writes it conditionally on the version read. Without
/// `If-Match`, a lost race is retried on fresh state; with it, it is 412.
async fn change_versioned(
    api: &Api,
    ws: &WorkspaceId,
    id: &SubscriptionId,
    request: &ApiRequest,
    change: impl Fn(&Subscription) -> Result<Option<Subscription>, Problem>,
) -> Result<Subscription, Problem> {
    let required = if_match(request);
    for _ in 0..CHANGE_ATTEMPTS {
        let current = load(api, ws, id).await?;
        if required
            .as_ref()
            .is_some_and(|v| !v.contains(&current.version))
        {
            return Err(conflict(&current));
        }
        let Some(mut next) = change(&current)? else {
            return Ok(current);
        };
        next.version = current.version + 1;
        next.updated_at_ms = api.clock.now_ms();
        match api.subscriptions.replace(&next, current.version).await {
            Ok(()) => return Ok(next),
            Err(StoreError::Conflict(_)) if required.is_none() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Problem::new(
        Code::SubscriptionConflict,
        "the subscription kept changing while this request applied; retry",
    ))
}

fn conflict(current: &Subscription) -> Problem {
    Problem::new(
        Code::SubscriptionConflict,
        format!(
            "If-Match does not hold: the subscription is at version {}",
            current.version
        ),
    )
    .with("etag", etag(current.version))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    source_type: SourceType,
    workflow_id: String,
    #[serde(default)]
    target_workflow_version_id: Option<String>,
    #[serde(default)]
    selector: Option<SelectorInput>,
    #[serde(default)]
    input_mapping: Map<String, Value>,
    #[serde(default)]
    connector_instance_id: Option<String>,
    #[serde(default)]
    schedule: Option<ScheduleSpec>,
    #[serde(default)]
    flow: Option<Value>,
}

/// An authored `flow` object, checked (`null` or `{}`: none); `overlap` is for
/// scheduled subscriptions only.
fn check_flow(value: Option<&Value>, source: SourceType) -> Result<Option<Box<FlowSpec>>, Problem> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let spec =
        FlowSpec::parse(value).map_err(|e| Problem::new(Code::FlowInvalid, e.to_string()))?;
    if spec.overlap.is_some() && source != SourceType::Scheduled {
        return Err(Problem::new(
            Code::FlowInvalid,
            format!(
                "flow.overlap: only for sourceType scheduled, not {}",
                source.as_str()
            ),
        ));
    }
    Ok((!spec.is_empty()).then(|| Box::new(spec)))
}

/// A `scheduled` subscription needs a usable schedule; no other source may carry one.
fn check_schedule(
    source: SourceType,
    schedule: Option<ScheduleSpec>,
) -> Result<Option<ScheduleSpec>, Problem> {
    match (source, schedule) {
        (SourceType::Scheduled, None) => Err(Problem::new(
            Code::ScheduleInvalid,
            "schedule: required for sourceType scheduled",
        )),
        (SourceType::Scheduled, Some(spec)) => match Schedule::compile(&spec) {
            Ok(_) => Ok(Some(spec)),
            Err(e) => Err(Problem::new(Code::ScheduleInvalid, e.to_string())),
        },
        (_, None) => Ok(None),
        (other, Some(_)) => Err(Problem::new(
            Code::BadRequest,
            format!(
                "schedule: only for sourceType scheduled, not {}",
                other.as_str()
            ),
        )),
    }
}

fn needs_connector(source: SourceType) -> bool {
    matches!(
        source,
        SourceType::Webhook | SourceType::VendorPush | SourceType::Pull
    )
}

pub async fn create(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::WRITE)?;
    let body: CreateBody = request.json()?;
    if body.workflow_id.is_empty() {
        return Err(Problem::new(
            Code::BadRequest,
            "workflowId: must not be empty",
        ));
    }
    match (
        &body.connector_instance_id,
        needs_connector(body.source_type),
    ) {
        (None, true) => {
            return Err(Problem::new(
                Code::BadRequest,
                format!(
                    "connectorInstanceId: required for sourceType {}",
                    body.source_type.as_str()
                ),
            ))
        }
        (Some(_), false) => {
            return Err(Problem::new(
                Code::BadRequest,
                format!(
                    "connectorInstanceId: not allowed for sourceType {}",
                    body.source_type.as_str()
                ),
            ))
        }
        _ => {}
    }
    if let Some(connector) = &body.connector_instance_id {
        let owned = api
            .webhooks
            .connectors
            .get(connector)
            .await?
            .is_some_and(|c| c.workspace_id == ws);
        if !owned {
            return Err(Problem::new(
                Code::ConnectorNotUsable,
                format!(
                    "connectorInstanceId: no connector instance {connector:?} in this workspace"
                ),
            ));
        }
    }
    let schedule = check_schedule(body.source_type, body.schedule)?;
    let flow = check_flow(body.flow.as_ref(), body.source_type)?;
    let selector = check_authored(body.selector.as_ref(), &body.input_mapping)?;
    let created = api.clock.now_ms();
    let subscription = Subscription {
        workspace_id: ws,
        subscription_id: SubscriptionId::new(uuid::Uuid::new_v4().simple().to_string())
            .map_err(|e| Problem::new(Code::BadRequest, e.to_string()))?,
        kind: SubscriptionKind::Start,
        source_type: body.source_type,
        workflow_id: body.workflow_id,
        target_workflow_version_id: body.target_workflow_version_id.filter(|v| !v.is_empty()),
        selector,
        input_mapping: body.input_mapping.into(),
        state: SubscriptionState::Active,
        connector_instance_id: body.connector_instance_id,
        schedule: schedule.map(Box::new),
        flow,
        created_at_ms: created,
        updated_at_ms: created,
        version: 1,
    };
    api.subscriptions.put(&subscription).await?;
    Ok(versioned(201, &subscription))
}

pub async fn get(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::READ)?;
    let subscription = load(api, &ws, &subscription_id(params)?).await?;
    Ok(versioned(200, &subscription))
}

/// Fire times `schedule:preview` shows at most.
pub const MAX_PREVIEW: usize = 100;

/// The next fire times of a scheduled subscription, in UTC and in its zone.
pub async fn preview_schedule(
    api: &Api,
    params: &Params,
    request: &ApiRequest,
) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::READ)?;
    let count = request.query_count("count", 10, MAX_PREVIEW)?;
    let subscription = load(api, &ws, &subscription_id(params)?).await?;
    let Some(spec) = &subscription.schedule else {
        return Err(Problem::new(
            Code::SubscriptionNotFireable,
            "the subscription has no schedule",
        ));
    };
    let schedule =
        Schedule::compile(spec).map_err(|e| Problem::new(Code::ScheduleInvalid, e.to_string()))?;
    // `from`: see a schedule across a given date (a daylight-saving change) beforehand.
    let from_ms = request.query_time_ms("from")?.unwrap_or(api.clock.now_ms());
    let mut body = crate::schedule::preview(&schedule, from_ms, count);
    body["subscriptionId"] = subscription.subscription_id.as_str().into();
    body["state"] = subscription.state.as_str().into();
    Ok(Reply::json(200, body))
}

/// The longest subscription cursor (an id) accepted: 256 characters are at most 1,024
/// bytes, DynamoDB's limit for a sort key.
const MAX_CURSOR_CHARS: usize = 256;

pub async fn list(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::READ)?;
    let limit = request.page_limit()?;
    let query = ListQuery {
        state: request.query_enum("state")?,
        source_type: request.query_enum("sourceType")?,
        limit,
        // The cursor is the last subscription id of the page before.
        cursor: request.query_cursor(|c| c.chars().count() <= MAX_CURSOR_CHARS)?,
    };
    let page = api.subscriptions.list(&ws, &query).await?;
    Ok(Reply::json(200, page.to_json(to_json)))
}

const PATCHABLE: &[&str] = &[
    "state",
    "selector",
    "inputMapping",
    "targetWorkflowVersionId",
    "schedule",
    "flow",
];

fn field<T: serde::de::DeserializeOwned>(name: &str, value: &Value) -> Result<T, Problem> {
    serde_json::from_value(value.clone())
        .map_err(|e| Problem::new(Code::BadRequest, format!("{name}: {e}")))
}

/// Applies a patch: a present key changes its field, an omitted key leaves it alone;
/// `null` clears `selector` and `targetWorkflowVersionId` and is ignored for
/// `inputMapping` (which cannot be cleared that way) and `state`; `schedule` replaces a
/// scheduled subscription's schedule (never `null`: it needs one) and is refused for
/// other sources, as at create; `flow` replaces the flow control (`null`: none).
fn apply_patch(
    subscription: &mut Subscription,
    patch: &Map<String, Value>,
) -> Result<bool, Problem> {
    if let Some(unknown) = patch.keys().find(|k| !PATCHABLE.contains(&k.as_str())) {
        return Err(Problem::new(
            Code::BadRequest,
            format!("{unknown}: unknown field"),
        ));
    }
    let before = subscription.clone();
    if let Some(value) = patch.get("selector") {
        subscription.selector = match value {
            Value::Null => None,
            other => compile_selector(&field::<SelectorInput>("selector", other)?)?,
        };
    }
    if let Some(value) = patch.get("targetWorkflowVersionId") {
        subscription.target_workflow_version_id =
            field::<Option<String>>("targetWorkflowVersionId", value)?.filter(|v| !v.is_empty());
    }
    if let Some(value) = patch.get("inputMapping").filter(|v| !v.is_null()) {
        let mapping: Map<String, Value> = field("inputMapping", value)?;
        check_mapping(&mapping)?;
        subscription.input_mapping = mapping.into();
    }
    if let Some(value) = patch.get("state").filter(|v| !v.is_null()) {
        subscription.state = field("state", value)?;
    }
    if let Some(value) = patch.get("schedule") {
        // Replaced whole; the next fire time counts from the change (`updatedAt`).
        let spec = field::<Option<ScheduleSpec>>("schedule", value)?;
        subscription.schedule = check_schedule(subscription.source_type, spec)?.map(Box::new);
    }
    if let Some(value) = patch.get("flow") {
        // Replaced whole (`null` removes it); buckets already counted keep counting.
        subscription.flow = check_flow(Some(value), subscription.source_type)?;
    }
    Ok(*subscription != before)
}

pub async fn patch(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::WRITE)?;
    let id = subscription_id(params)?;
    let patch: Map<String, Value> = request.json()?;
    // Setting state to expired is a delete, and needs the delete permission.
    if patch.get("state") == Some(&Value::String("expired".into())) {
        api.authorize(params, request, auth::DELETE)?;
    }
    let subscription = change_versioned(api, &ws, &id, request, |current| {
        if current.state == SubscriptionState::Expired {
            return Err(Problem::new(
                Code::SubscriptionDeleted,
                "the subscription is deleted; deleted subscriptions cannot be changed or revived",
            )
            .with("subscriptionId", id.as_str()));
        }
        let mut next = current.clone();
        Ok(apply_patch(&mut next, &patch)?.then_some(next))
    })
    .await?;
    Ok(versioned(200, &subscription))
}

pub async fn delete(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::DELETE)?;
    let id = subscription_id(params)?;
    change_versioned(api, &ws, &id, request, |current| {
        if current.state == SubscriptionState::Expired {
            return Ok(None);
        }
        let mut next = current.clone();
        next.state = SubscriptionState::Expired;
        Ok(Some(next))
    })
    .await?;
    Ok(Reply::empty(204))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FireBody {
    #[serde(default)]
    inputs: Map<String, Value>,
}

fn not_fireable(id: &SubscriptionId, detail: String) -> Problem {
    Problem::new(Code::SubscriptionNotFireable, detail).with("subscriptionId", id.as_str())
}

/// Queues a manual event for one start subscription and answers `202 {eventId}` once it
/// is on the normalized queue. The same `Idempotency-Key` always yields the same eventId.
pub async fn fire(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::FIRE)?;
    let id = subscription_id(params)?;
    let body: FireBody = request.json()?;
    let subscription = load(api, &ws, &id).await?;
    if !subscription.is_matchable() {
        return Err(not_fireable(
            &id,
            format!(
                "subscription is {} (a {:?} subscription); only active start subscriptions fire",
                subscription.state.as_str(),
                subscription.kind
            ),
        ));
    }
    if subscription.target_workflow_version_id.is_none() {
        return Err(not_fireable(
            &id,
            "subscription has no targetWorkflowVersionId".to_owned(),
        ));
    }
    let event_id: Option<EventId> = request
        .header("idempotency-key")
        .filter(|k| !k.is_empty())
        .map(|key| derive_event_id(&["manual-fire", ws.as_str(), id.as_str(), key]));
    let event = normalize::manual_fire(
        &api.clock.now_rfc3339(),
        Some(id.as_str()),
        body.inputs,
        event_id,
    )
    .map_err(|e| Problem::new(Code::BadRequest, e.to_string()))?;
    if let Some(expr) = subscription.selector.as_deref() {
        let compiled = api.cache.selector(id.as_str(), expr)?;
        if compiled.matches(&EventScope::new(&event)) != Ok(true) {
            return Err(not_fireable(
                &id,
                "the subscription's selector does not match these inputs".to_owned(),
            ));
        }
    }
    let event_id = event.event_id.clone();
    // Refuse now what could only fail later: the queued event, and the dispatch message
    // this subscription will make of it (event plus resolved inputs), must both fit SQS.
    let queued = QueuedEvent {
        workspace_id: ws,
        event,
        replay: false,
        trace: Some(TraceParent::continue_or_start(
            request.header("traceparent"),
        )),
        received_ms: Some(api.clock.now_ms()),
    };
    let body = crate::stage::ingest::message_body(&queued)?;
    let scope = EventScope::new(&queued.event);
    let dispatch = start_message(
        &queued.workspace_id,
        &std::sync::Arc::new(queued.event.clone()),
        &scope,
        &subscription,
        &api.cache,
    );
    limits::message_body("dispatch message", &dispatch, MAX_QUEUE_MESSAGE_BYTES)?;
    let archived = api.intake.archive(&queued, body).await?;
    api.intake.enqueue(archived).await?;
    tracing::info!(
        trace_id = queued.trace.as_ref().map(TraceParent::trace_id),
        workspace_id = %queued.workspace_id,
        event_id = %event_id,
        subscription_id = %id,
        "fire accepted"
    );
    Ok(Reply::json(202, json!({ "eventId": event_id })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestBody {
    #[serde(default)]
    selector: Option<SelectorInput>,
    #[serde(default)]
    input_mapping: Map<String, Value>,
    #[serde(default)]
    event: Option<Map<String, Value>>,
    #[serde(default)]
    recent: Option<RecentEvents>,
}

/// `recent`: test against the workspace's archived events instead of one given event.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecentEvents {
    #[serde(default = "default_recent", deserialize_with = "super::request::count")]
    limit: usize,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    since: Option<String>,
}

fn default_recent() -> usize {
    100
}

/// The most archived events one dry run evaluates.
pub const MAX_RECENT: usize = 500;

/// Evaluates a selector (and mapping) against a supplied event, or against the
/// workspace's recent archived events; nothing is dispatched.
pub async fn test(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::READ)?;
    let body: TestBody = request.json()?;
    let selector = check_authored(body.selector.as_ref(), &body.input_mapping)?;
    let compiled = selector
        .as_deref()
        .map(CompiledExpr::selector)
        .transpose()?;
    let (event, recent) = match (body.event, body.recent) {
        (Some(event), None) => (event, None),
        (None, Some(recent)) => (Map::new(), Some(recent)),
        _ => {
            return Err(Problem::new(
                Code::BadRequest,
                "give exactly one of event (one event to test) and recent (archived events)",
            ))
        }
    };
    if let Some(recent) = recent {
        return test_recent(api, &ws, compiled.as_ref(), &body.input_mapping, recent).await;
    }
    let manual =
        event.get("source").and_then(|s| s.get("type")) == Some(&Value::String("manual".into()));
    let inputs = manual.then(|| event.get("data").cloned()).flatten();
    let scope = EventScope::from_json(Value::Object(event), inputs);
    Ok(Reply::json(
        200,
        Value::Object(evaluate(
            api,
            compiled.as_ref(),
            &body.input_mapping,
            &scope,
            false,
        )),
    ))
}

/// What the selector and mapping make of one event: `matched`, `inputs`, `error`
/// (the mapping is resolved for every event, or only for matching ones).
fn evaluate(
    api: &Api,
    compiled: Option<&CompiledExpr>,
    input_mapping: &Map<String, Value>,
    scope: &EventScope,
    only_matched: bool,
) -> Map<String, Value> {
    let mut answer = Map::new();
    let matched = compiled.map_or(Ok(true), |c| c.matches(scope));
    match matched {
        Ok(m) => answer.insert("matched".into(), m.into()),
        Err(e) => {
            answer.insert("error".into(), e.to_string().into());
            answer.insert("matched".into(), false.into())
        }
    };
    let wanted = !only_matched || answer.get("matched") == Some(&Value::Bool(true));
    if !input_mapping.is_empty() && wanted {
        match mapping::resolve(input_mapping, scope, &api.cache) {
            Ok(inputs) => answer.insert("inputs".into(), Value::Object(inputs)),
            Err(e) => answer.insert("error".into(), e.to_string().into()),
        };
    }
    answer
}

/// The dry run over archived events: which would match, their inputs, which errored.
async fn test_recent(
    api: &Api,
    ws: &crate::ids::WorkspaceId,
    compiled: Option<&CompiledExpr>,
    input_mapping: &Map<String, Value>,
    recent: RecentEvents,
) -> Result<Reply, Problem> {
    if !(1..=MAX_RECENT).contains(&recent.limit) {
        return Err(Problem::new(
            Code::BadRequest,
            format!(
                "recent.limit: expected 1..={MAX_RECENT}, got {}",
                recent.limit
            ),
        ));
    }
    let query = crate::archive::EventQuery {
        since_ms: recent
            .since
            .as_deref()
            .map(|s| super::request::rfc3339_ms("recent.since", s))
            .transpose()?,
        kind: recent.kind,
        limit: recent.limit,
        ..Default::default()
    };
    let page = api.archive.list(ws, &query).await?;
    let (mut matched, mut errors, mut evaluated) = (Vec::new(), Vec::new(), 0usize);
    for archived in &page.items {
        let Some(event) = &archived.event else {
            continue;
        };
        evaluated += 1;
        let mut answer = evaluate(api, compiled, input_mapping, &EventScope::new(event), true);
        answer.insert("eventId".into(), event.event_id.as_str().into());
        answer.insert("kind".into(), event.kind.as_str().into());
        if answer.contains_key("error") {
            errors.push(Value::Object(answer));
        } else if answer.remove("matched") == Some(Value::Bool(true)) {
            matched.push(Value::Object(answer));
        }
    }
    Ok(Reply::json(
        200,
        json!({"evaluated": evaluated, "matched": matched, "errors": errors}),
    ))
}
