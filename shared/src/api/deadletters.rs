//! The dead-letter routes: list (filtered, newest first, from the ledger's sparse
//! `deadLetters` index), inspect (with the event and the resolved inputs), replay one or
//! many with the original idempotency key, and discard. A dead letter's id is its dedup
//! key's digest, so it names one match of one event in one workspace.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth;
use super::problem::{Code, Problem};
use super::request::{rfc3339_ms, ApiRequest};
use super::{Api, Params, Reply};
use crate::audit::{AuditEvent, AuditName};
use crate::deadletters::{DeadLetterQuery, ReplayError, Replayer, Transition, MAX_BULK_REPLAY};
use crate::dedup::{DeadLetterReason, DedupKey, LedgerEntry, LedgerStatus};
use crate::dispatch::{DispatchMessage, DispatchTarget};
use crate::ids::WorkspaceId;
use crate::instant::rfc3339;

const DEFAULT_BULK: usize = 100;

/// The list form of a dead letter (tenant-safe: `detail` is the stored safe detail).
fn summary(entry: &LedgerEntry) -> Value {
    let first_attempt_ms = match entry.first_attempt_ms {
        0 => entry.updated_at_ms,
        ms => ms,
    };
    json!({
        "deadLetterId": entry.key.digest(),
        "eventId": entry.event_id,
        "targetId": entry.target_id,
        "matchKind": entry.match_kind,
        "reason": entry.reason.map_or("unknown", DeadLetterReason::as_str),
        "detail": entry.last_error.clone().unwrap_or_default(),
        "attempts": entry.attempts,
        "firstAttemptAt": rfc3339(first_attempt_ms),
        "deadLetteredAt": rfc3339(entry.updated_at_ms),
        "replayable": entry.message.is_some(),
    })
}

/// The path's dead letter: its key, when the id is one this service hands out.
fn addressed(
    api: &Api,
    params: &Params,
    request: &ApiRequest,
    permission: &str,
) -> Result<(WorkspaceId, DedupKey), Problem> {
    let ws = api.authorize(params, request, permission)?;
    let id = params
        .get("deadLetterId")
        .map(String::as_str)
        .unwrap_or_default();
    let key = DedupKey::from_digest(id).ok_or_else(|| not_found(id))?;
    Ok((ws, key))
}

fn not_found(id: &str) -> Problem {
    Problem::new(
        Code::DeadLetterNotFound,
        "no dead letter with this id in this workspace (or it has expired)",
    )
    .with("deadLetterId", id)
}

/// How a ledger status reads to someone who asked to replay or discard a dead letter.
fn not_replayable(id: &str, status: LedgerStatus) -> Problem {
    let now = match status {
        LedgerStatus::Committed => "dispatched",
        LedgerStatus::Discarded => "discarded",
        LedgerStatus::Claimed | LedgerStatus::Released => {
            "being dispatched (a replay is under way)"
        }
        other => other.as_str(),
    };
    Problem::new(
        Code::DeadLetterNotReplayable,
        format!("the dead letter is {now}"),
    )
    .with("deadLetterId", id)
}

pub async fn list(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::DEAD_LETTERS_READ)?;
    let query = DeadLetterQuery {
        subscription_id: request.query_str("subscriptionId").map(str::to_owned),
        reason: request.query_enum("reason")?,
        since_ms: request.query_time_ms("since")?,
        until_ms: request.query_time_ms("until")?,
        limit: request.page_limit()?,
        cursor: request.query_cursor(|c| crate::deadletters::parse_cursor(c).is_some())?,
    };
    let page = api.dead_letters.list(&ws, &query).await?;
    Ok(Reply::json(200, page.to_json(summary)))
}

pub async fn get(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let (ws, key) = addressed(api, params, request, auth::DEAD_LETTERS_READ)?;
    let entry = api
        .ledger
        .get(&ws, &key)
        .await?
        .filter(|e| {
            matches!(
                e.status,
                LedgerStatus::DeadLettered | LedgerStatus::Discarded
            )
        })
        .ok_or_else(|| not_found(key.digest()))?;
    let mut body = summary(&entry);
    body["status"] = entry.status.as_str().into();
    let message: Option<DispatchMessage> = entry
        .message
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok());
    match message {
        Some(message) => {
            body["event"] = message.event.to_json();
            body["target"] = target_json(&message.target);
        }
        // Dead-lettered without its message (too large, unreadable): the archive may
        // still hold the event.
        None => {
            if let Some(event) = api
                .archive
                .get(&ws, &entry.event_id)
                .await?
                .and_then(|a| a.event)
            {
                body["event"] = event.to_json();
            }
        }
    }
    Ok(Reply::json(200, body))
}

/// The target as a tenant sees it: a start's resolved inputs (or why they could not be
/// resolved), or the resume wait it was for.
fn target_json(target: &DispatchTarget) -> Value {
    match target {
        DispatchTarget::Start {
            subscription_id,
            workflow_version_id,
            inputs,
            mapping_error,
            ..
        } => {
            let mut body = json!({
                "subscriptionId": subscription_id,
                "workflowVersionId": workflow_version_id,
            });
            match mapping_error {
                Some(error) => body["mappingError"] = error.as_str().into(),
                None => body["inputs"] = Value::Object(inputs.clone()),
            }
            body
        }
        DispatchTarget::Resume {
            resume_id,
            run_id,
            step_id,
            event_key,
            ..
        } => {
            json!({"resumeId": resume_id, "runId": run_id, "stepId": step_id, "eventKey": event_key})
        }
    }
}

pub async fn replay(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let (ws, key) = addressed(api, params, request, auth::DEAD_LETTERS_REPLAY)?;
    let replayer = Replayer {
        store: api.dead_letters.as_ref(),
        dispatch_queue: api.dispatch_queue.as_ref(),
    };
    let id = key.digest();
    match replayer.one(&ws, &key, api.clock.now_ms()).await {
        Ok(()) => {}
        Err(ReplayError::NotFound) => return Err(not_found(id)),
        Err(ReplayError::Replaying) => {
            return Err(Problem::new(
                Code::DeadLetterNotReplayable,
                "the dead letter is being replayed already",
            )
            .with("deadLetterId", id))
        }
        Err(ReplayError::NotDeadLettered(status)) => {
            let status = LedgerStatus::parse(status).unwrap_or(LedgerStatus::Committed);
            return Err(not_replayable(id, status));
        }
        Err(e @ ReplayError::NoMessage(_)) => {
            return Err(
                Problem::new(Code::DeadLetterNotReplayable, e.to_string()).with("deadLetterId", id)
            )
        }
        Err(ReplayError::Ledger(e)) => return Err(e.into()),
        Err(ReplayError::Queue(e)) => return Err(e.into()),
    }
    api.audit.emit(
        AuditEvent::new(AuditName::DeadLetterReplayed, ws.as_str(), None).with("deadLetterId", id),
    );
    Ok(Reply::json(
        202,
        json!({ "deadLetterId": id, "status": "replaying" }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BulkBody {
    #[serde(default)]
    subscription_id: Option<String>,
    #[serde(default)]
    reason: Option<DeadLetterReason>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default, deserialize_with = "super::request::optional_count")]
    max: Option<usize>,
}

pub async fn replay_many(
    api: &Api,
    params: &Params,
    request: &ApiRequest,
) -> Result<Reply, Problem> {
    let ws = api.authorize(params, request, auth::DEAD_LETTERS_REPLAY)?;
    let body: BulkBody = request.json()?;
    let max = body.max.unwrap_or(DEFAULT_BULK);
    if !(1..=MAX_BULK_REPLAY).contains(&max) {
        return Err(Problem::new(
            Code::BadRequest,
            format!("max: expected 1..={MAX_BULK_REPLAY}, got {max}"),
        ));
    }
    let query = DeadLetterQuery {
        subscription_id: body.subscription_id,
        reason: body.reason,
        since_ms: body
            .since
            .as_deref()
            .map(|s| rfc3339_ms("since", s))
            .transpose()?,
        until_ms: body
            .until
            .as_deref()
            .map(|u| rfc3339_ms("until", u))
            .transpose()?,
        limit: max,
        cursor: None,
    };
    let replayer = Replayer {
        store: api.dead_letters.as_ref(),
        dispatch_queue: api.dispatch_queue.as_ref(),
    };
    let (replayed, matched) = replayer
        .many(&ws, &query, max, api.clock.now_ms())
        .await
        .map_err(|e| match e {
            ReplayError::Queue(e) => Problem::from(e),
            other => Problem::new(Code::Unavailable, other.to_string()),
        })?;
    api.audit.emit(
        AuditEvent::new(AuditName::DeadLetterReplayed, ws.as_str(), None).with("count", replayed),
    );
    let mut answer = Map::new();
    answer.insert("replayed".into(), replayed.into());
    answer.insert("matched".into(), matched.into());
    Ok(Reply::json(202, Value::Object(answer)))
}

pub async fn discard(api: &Api, params: &Params, request: &ApiRequest) -> Result<Reply, Problem> {
    let (ws, key) = addressed(api, params, request, auth::DEAD_LETTERS_REPLAY)?;
    let id = key.digest();
    let entry = match api
        .dead_letters
        .discard(&ws, &key, api.clock.now_ms())
        .await?
    {
        Transition::Done(entry) => entry,
        Transition::NotDeadLettered(status) => return Err(not_replayable(id, status)),
        // (A discard is not held back by a replay: the replayed message then finds
        // the match discarded and starts nothing.)
        Transition::Replaying => return Err(not_replayable(id, LedgerStatus::Released)),
        Transition::NotFound => return Err(not_found(id)),
    };
    api.audit.emit(
        AuditEvent::new(
            AuditName::DeadLetterDiscarded,
            ws.as_str(),
            Some(entry.event_id.as_str()),
        )
        .with("deadLetterId", id)
        .with("targetId", entry.target_id.as_str()),
    );
    Ok(Reply::empty(204))
}
