//! `GET /v1/workspaces/{ws}/events/{eventId}`: the archived event and what happened to
//! each of its matches, read from the dedup ledger (one query on its `byEvent` index).
//! An event neither archived nor in the ledger was never seen: 404. Also the archive's
//! listing (newest first) and event replay: the archived event offered again to the
//! workspace's current subscriptions, where the dedup ledger keeps dispatched pairs
//! duplicates and lets new and dead-lettered pairs through.

use serde_json::{json, Value};

use super::auth;
use super::problem::{Code, Problem};
use super::request::ApiRequest;
use super::{Api, Params, Reply};
use crate::archive::{ArchivedEvent, EventQuery};
use crate::audit::{AuditEvent, AuditName};
use crate::dedup::{LedgerEntry, LedgerStatus, MatchKind};
use crate::event::QueuedEvent;
use crate::ids::{EventId, WorkspaceId};
use crate::instant::rfc3339;
use crate::stage::ingest::Oversize;

fn outcome(entry: &LedgerEntry, now_ms: i64) -> Value {
    let status = match entry.status {
        LedgerStatus::Committed => "dispatched",
        LedgerStatus::Claimed | LedgerStatus::Released => "pending",
        LedgerStatus::DeadLettered => "dead_lettered",
        LedgerStatus::LoopRejected => "loop_rejected",
        LedgerStatus::Discarded => "discarded",
        // Still deliverable to a registration of its triple until the window ends.
        LedgerStatus::Parked | LedgerStatus::Superseded if entry.lease_until_ms > now_ms => {
            entry.status.as_str()
        }
        LedgerStatus::Parked | LedgerStatus::Superseded => "park_expired",
        LedgerStatus::Queued if entry.lease_until_ms > now_ms => "throttled",
        LedgerStatus::Debouncing if entry.lease_until_ms > now_ms => "debouncing",
        LedgerStatus::Debouncing | LedgerStatus::Queued => "pending",
        LedgerStatus::RateLimited
        | LedgerStatus::IdempotencySkipped
        | LedgerStatus::Debounced
        | LedgerStatus::SingletonSkipped
        | LedgerStatus::Batched => entry.status.as_str(),
    };
    let target = match entry.match_kind {
        MatchKind::Start => "subscriptionId",
        MatchKind::Resume => "resumeId",
    };
    let mut body = json!({
        "matchKind": entry.match_kind,
        target: entry.target_id,
        "status": status,
        "attempts": entry.attempts,
        "dedupKey": entry.key.as_str(),
        "updatedAtMs": entry.updated_at_ms,
    });
    if let Some(run) = &entry.run_id {
        body["runId"] = run.as_str().into();
    }
    if let Some(reason) = entry.reason {
        body["reason"] = reason.as_str().into();
    }
    if let Some(winner) = &entry.superseded_by {
        body["supersededBy"] = winner.as_str().into();
    }
    if matches!(
        entry.status,
        LedgerStatus::Parked | LedgerStatus::Superseded
    ) {
        body["parkedUntilMs"] = entry.lease_until_ms.into();
    }
    if entry.lease_until_ms > now_ms {
        match entry.status {
            LedgerStatus::Queued => body["throttledUntilMs"] = entry.lease_until_ms.into(),
            LedgerStatus::Debouncing => body["dueAtMs"] = entry.lease_until_ms.into(),
            _ => {}
        }
    }
    if let Some(error) = entry
        .last_error
        .as_ref()
        .filter(|_| entry.status != LedgerStatus::Committed)
    {
        body["detail"] = error.as_str().into();
    }
    body
}

/// The path's event id (ids longer than any stored one name nothing: 404).
fn path_event_id(params: &Params) -> Result<EventId, Problem> {
    let event_id = params
        .get("eventId")
        .and_then(|e| EventId::new(e.as_str()).ok())
        .ok_or_else(|| Problem::new(Code::BadRequest, "eventId must not be empty"))?;
    if event_id.as_str().len() > super::MAX_PATH_ID_BYTES {
        return Err(Problem::new(
            Code::EventNotFound,
            "no event has an id this long",
        ));
    }
    Ok(event_id)
}

fn unknown_event(event_id: &EventId) -> Problem {
    Problem::new(
        Code::EventNotFound,
        "no event with this id was received in this workspace (or it has expired)",
    )
    .with("eventId", event_id.as_str())
}

pub async fn get(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::READ)?;
    let event_id = path_event_id(params)?;
    let archived = api.archive.get(&ws, &event_id).await?;
    let entries = api.ledger.for_event(&ws, &event_id).await?;
    if archived.is_none() && entries.is_empty() {
        return Err(unknown_event(&event_id));
    }
    let now_ms = api.clock.now_ms();
    let matches: Vec<Value> = entries.iter().map(|e| outcome(e, now_ms)).collect();
    let mut body = json!({ "eventId": event_id, "matches": matches });
    if let Some(archived) = archived {
        body["receivedAtMs"] = archived.received_at_ms.into();
        if let Some(event) = &archived.event {
            body["event"] = event.to_json();
        }
        if let Some(fate) = &archived.fate {
            body["status"] = "dead_lettered".into();
            body["reason"] = fate.reason.as_str().into();
            body["detail"] = fate.detail.as_str().into();
        }
    }
    Ok(Reply::json(200, body))
}

/// One listed event: when it arrived, what it is, and the envelope when archived.
fn listed(archived: &ArchivedEvent) -> Value {
    let mut body = json!({
        "eventId": archived.event_id,
        "receivedAt": rfc3339(archived.received_at_ms),
    });
    if let Some(event) = &archived.event {
        body["kind"] = event.kind.as_str().into();
        body["sourceType"] = event.source.source_type.as_str().into();
        body["event"] = event.to_json();
    }
    if let Some(fate) = &archived.fate {
        body["status"] = "dead_lettered".into();
        body["reason"] = fate.reason.as_str().into();
    }
    body
}

/// The archive query of a request's `since`, `until`, `kind`, `sourceType`, `cursor`.
pub fn event_query(request: &ApiRequest, limit: usize) -> Result<EventQuery, Problem> {
    Ok(EventQuery {
        since_ms: request.query_time_ms("since")?,
        until_ms: request.query_time_ms("until")?,
        kind: request.query_str("kind").map(str::to_owned),
        source_type: request.query_enum("sourceType")?,
        limit,
        cursor: request.query_cursor(|c| crate::archive::parse_cursor(c).is_some())?,
    })
}

pub async fn list(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::READ)?;
    let query = event_query(request, request.page_limit()?)?;
    let page = api.archive.list(&ws, &query).await?;
    Ok(Reply::json(200, page.to_json(listed)))
}

/// Offers an archived event to the match stage again, as it was (same id, same depth).
pub async fn replay(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::DEAD_LETTERS_REPLAY)?;
    let event_id = path_event_id(params)?;
    let archived = api
        .archive
        .get(&ws, &event_id)
        .await?
        .ok_or_else(|| unknown_event(&event_id))?;
    let event = archived.event.ok_or_else(|| {
        Problem::new(
            Code::EventNotReplayable,
            "the event was too large to archive; only its fate was kept",
        )
        .with("eventId", event_id.as_str())
    })?;
    let queued = QueuedEvent {
        workspace_id: ws.clone(),
        event,
        replay: true,
        trace: Some(crate::trace::TraceParent::continue_or_start(
            request.header("traceparent"),
        )),
        received_ms: Some(api.clock.now_ms()),
    };
    api.intake.accept(&queued, Oversize::Refuse).await?;
    audit_replay(api, &ws, &event_id);
    Ok(Reply::json(
        202,
        json!({ "eventId": event_id, "status": "replaying" }),
    ))
}

fn audit_replay(api: &Api, ws: &WorkspaceId, event_id: &EventId) {
    api.audit.emit(AuditEvent::new(
        AuditName::EventReplayed,
        ws.as_str(),
        Some(event_id.as_str()),
    ));
}
