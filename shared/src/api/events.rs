//! `GET /v1/workspaces/{ws}/events/{eventId}`: the archived event and what happened to
//! each of its matches, read from the dedup ledger (one query on its `byEvent` index).
//! An event neither archived nor in the ledger was never seen: 404.

use serde_json::{json, Value};

use super::auth;
use super::problem::{Code, Problem};
use super::request::ApiRequest;
use super::{Api, Params, Reply};
use crate::dedup::{LedgerEntry, LedgerStatus, MatchKind};
use crate::ids::EventId;

fn outcome(entry: &LedgerEntry, now_ms: i64) -> Value {
    let status = match entry.status {
        LedgerStatus::Committed => "dispatched",
        LedgerStatus::Claimed | LedgerStatus::Released => "pending",
        LedgerStatus::DeadLettered => "dead_lettered",
        LedgerStatus::LoopRejected => "loop_rejected",
        // Still deliverable to a registration of its triple until the window ends.
        LedgerStatus::Parked | LedgerStatus::Superseded if entry.lease_until_ms > now_ms => {
            entry.status.as_str()
        }
        LedgerStatus::Parked | LedgerStatus::Superseded => "park_expired",
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
    if let Some(error) = entry
        .last_error
        .as_ref()
        .filter(|_| entry.status != LedgerStatus::Committed)
    {
        body["detail"] = error.as_str().into();
    }
    body
}

pub async fn get(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::READ)?;
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
    let archived = api.archive.get(&ws, &event_id).await?;
    let entries = api.ledger.for_event(&ws, &event_id).await?;
    if archived.is_none() && entries.is_empty() {
        return Err(Problem::new(
            Code::EventNotFound,
            "no event with this id was received in this workspace (or it has expired)",
        )
        .with("eventId", event_id.as_str()));
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
