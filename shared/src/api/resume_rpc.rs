//! Internal resume-wait RPCs (IAM-only): register is idempotent for a live wait of the
//! `(runId, stepId, eventKey)` triple (the original selector wins and a divergent replay
//! is audited); a lapsed or consumed wait is registered afresh as a new generation, and
//! the earliest parked event that satisfies its selector is delivered at once. Waits
//! always belong to a workspace. Cancel is always 204.

use serde::Deserialize;
use serde_json::json;

use super::problem::{Code, Problem};
use super::request::ApiRequest;
use super::{Api, Reply};
use crate::audit::{AuditEvent, AuditName};
use crate::dedup::{DedupKey, LedgerStatus};
use crate::dispatch::{DispatchMessage, DispatchTarget};
use crate::ids::{EventId, WorkspaceId};
use crate::resume::{parse_ttl, ResumeKey, ResumeWait};
use crate::selector::{CompiledExpr, EventScope};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RegisterBody {
    run_id: String,
    step_id: String,
    event_key: String,
    #[serde(default)]
    selector: Option<String>,
    #[serde(default)]
    ttl: Option<String>,
    /// The tenant registering the wait: required; only its events resume the wait.
    #[serde(default)]
    workspace_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CancelBody {
    run_id: String,
    step_id: String,
    event_key: String,
    /// Cancels only this registration (as returned by register), when given.
    #[serde(default)]
    generation: Option<String>,
}

fn key(run_id: String, step_id: String, event_key: String) -> Result<ResumeKey, Problem> {
    for (name, value) in [
        ("runId", &run_id),
        ("stepId", &step_id),
        ("eventKey", &event_key),
    ] {
        if value.is_empty() {
            return Err(Problem::new(
                Code::BadRequest,
                format!("{name}: must not be empty"),
            ));
        }
        if value.bytes().all(|b| b == b'.') {
            return Err(Problem::new(
                Code::BadRequest,
                format!("{name}: {value:?} is not a usable id"),
            ));
        }
    }
    Ok(ResumeKey {
        run_id,
        step_id,
        event_key,
    })
}

/// The longest wait a registration may ask for.
pub const MAX_RESUME_TTL_SECS: u64 = 365 * 86_400;

/// The wait's lifetime: absent, blank or zero → the default; otherwise an ISO-8601
/// duration of weeks, days, hours, minutes and seconds up to a year. Years and months
/// (of no fixed length), anything else, and longer waits are refused rather than
/// silently replaced by the default.
fn ttl_secs(text: Option<&str>, default: u64) -> Result<u64, Problem> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(default);
    };
    match parse_ttl(text) {
        None => Err(Problem::new(
            Code::ResumeTtlInvalid,
            format!("ttl: {text:?} is not an ISO-8601 duration of the form P[nW][nD][T[nH][nM][nS]] (years and months have no fixed length)"),
        )),
        Some(0) => Ok(default),
        Some(secs) if secs > MAX_RESUME_TTL_SECS => Err(Problem::new(
            Code::ResumeTtlInvalid,
            format!("ttl: {text:?} is longer than the maximum of {MAX_RESUME_TTL_SECS} s (365 days)"),
        )),
        Some(secs) => Ok(secs),
    }
}

/// How often register re-reads after losing a race with a concurrent registration.
const REGISTER_ATTEMPTS: usize = 3;

pub async fn register(api: &Api, request: &ApiRequest) -> Result<Reply, Problem> {
    api.authorize_internal(request)?;
    let body: RegisterBody = request.json()?;
    // Compiled on every path, replays included: an invalid selector is always a 422.
    if let Some(expr) = body.selector.as_deref().filter(|s| !s.trim().is_empty()) {
        CompiledExpr::authored_selector(expr)?;
    }
    let key = key(body.run_id, body.step_id, body.event_key)?;
    let workspace = body
        .workspace_id
        .as_deref()
        .filter(|w| !w.is_empty())
        .ok_or_else(|| {
            Problem::new(
                Code::ResumeWorkspaceRequired,
                "workspaceId: required (a wait is resumed only by its own workspace's events)",
            )
        })
        .and_then(|w| {
            WorkspaceId::new(w)
                .map_err(|e| Problem::new(Code::BadRequest, format!("workspaceId: {e}")))
        })?;
    let resume_id = key.resume_id();
    let ttl = ttl_secs(body.ttl.as_deref(), api.settings.resume_default_ttl_secs)?;
    for _ in 0..REGISTER_ATTEMPTS {
        let now = api.clock.now_secs();
        let existing = api.resumes.get(&resume_id).await?;
        if let Some(live) = existing.as_ref().filter(|w| w.is_live(now)) {
            if live.workspace_id.as_ref() != Some(&workspace) {
                return Err(Problem::new(
                    Code::WorkspaceMismatch,
                    "this (runId, stepId, eventKey) is waited on by another workspace",
                ));
            }
            if live.selector != body.selector {
                api.audit.emit(
                    AuditEvent::new(AuditName::ResumeDivergent, workspace.as_str(), None)
                        .with("resumeId", resume_id.as_str())
                        .with("runId", key.run_id.as_str())
                        .with("stepId", key.step_id.as_str())
                        .with("eventKey", key.event_key.as_str())
                        .with("originalSelector", live.selector.clone())
                        .with("replaySelector", body.selector.clone()),
                );
            }
            let mut answer = json!({ "subscriptionId": resume_id, "generation": live.generation });
            // A retry of a registration that failed after writing its generation (or a
            // parked event the first call could not hand over) finishes the delivery.
            let held = live
                .taken
                .as_ref()
                .is_some_and(|t| t.until_ms > api.clock.now_ms());
            if !held {
                let traceparent = request.header("traceparent");
                if let Some(event_id) = deliver_parked(api, live, traceparent).await? {
                    answer["deliveredEventId"] = event_id.as_str().into();
                }
            }
            return Ok(Reply::json(200, answer));
        }
        let wait = ResumeWait {
            resume_id: resume_id.clone(),
            run_id: key.run_id.clone(),
            step_id: key.step_id.clone(),
            event_key: key.event_key.clone(),
            selector: body.selector.clone(),
            workspace_id: Some(workspace.clone()),
            expires_at: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX / 2)),
            generation: ResumeWait::new_generation(),
            taken: None,
            consumed_by: None,
        };
        let replacing = existing.as_ref().map(|w| w.generation.as_str());
        if !api.resumes.register(&wait, replacing).await? {
            continue;
        }
        let mut answer = json!({ "subscriptionId": resume_id, "generation": wait.generation });
        if let Some(event_id) = deliver_parked(api, &wait, request.header("traceparent")).await? {
            answer["deliveredEventId"] = event_id.as_str().into();
        }
        return Ok(Reply::json(200, answer));
    }
    Err(Problem::new(
        Code::Unavailable,
        "the wait kept changing while it was registered; retry",
    ))
}

/// Hands the earliest parked event that satisfies the new wait's selector to the
/// dispatcher (which takes the wait for it like for any other event).
/// `traceparent`: the registering call's trace, which the delivery continues.
async fn deliver_parked(
    api: &Api,
    wait: &ResumeWait,
    traceparent: Option<&str>,
) -> Result<Option<EventId>, Problem> {
    let Some(workspace) = &wait.workspace_id else {
        return Ok(None);
    };
    let selector = match wait.selector.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(expr) => Some(CompiledExpr::selector(expr)?),
        None => None,
    };
    let parked = api
        .parked
        .parked(workspace, &wait.resume_id, api.clock.now_ms())
        .await?;
    for candidate in parked {
        let satisfied = selector
            .as_ref()
            .is_none_or(|s| s.matches(&EventScope::new(&candidate.event)) == Ok(true));
        if !satisfied || !deliverable(api, wait, workspace, &candidate.event.event_id).await? {
            continue;
        }
        let event_id = candidate.event.event_id.clone();
        // Parked events keep no time of receipt: no end-to-end latency for them.
        let mut message = DispatchMessage::new(
            workspace.clone(),
            candidate.event.into(),
            DispatchTarget::Resume {
                resume_id: wait.resume_id.clone(),
                run_id: wait.run_id.clone(),
                step_id: wait.step_id.clone(),
                event_key: wait.event_key.clone(),
                generation: wait.generation.clone(),
            },
        );
        message.trace = Some(crate::trace::TraceParent::continue_or_start(traceparent));
        let body = crate::limits::message_body(
            "dispatch message",
            &message,
            crate::limits::MAX_QUEUE_MESSAGE_BYTES,
        )?;
        api.dispatch_queue.send_batch(&[body]).await?;
        api.parked
            .remove(workspace, &wait.resume_id, &event_id)
            .await?;
        return Ok(Some(event_id));
    }
    Ok(None)
}

/// Whether a parked event can still resume this wait: not the event that consumed it,
/// not one already delivered to the triple (its parked copy is dropped), not one being
/// delivered right now (it takes the wait itself, whichever generation it named).
async fn deliverable(
    api: &Api,
    wait: &ResumeWait,
    workspace: &WorkspaceId,
    event_id: &EventId,
) -> Result<bool, Problem> {
    if wait.consumed_by.as_ref() == Some(event_id) {
        return Ok(false);
    }
    let key = DedupKey::new(wait.resume_id.as_str(), event_id.as_str());
    let Some(entry) = api
        .ledger
        .get(workspace, &key)
        .await
        .map_err(Problem::from)?
    else {
        return Ok(true);
    };
    let now_ms = api.clock.now_ms();
    if entry.expires_at * 1000 <= now_ms {
        return Ok(true);
    }
    match entry.status {
        LedgerStatus::Committed | LedgerStatus::Discarded => {
            api.parked
                .remove(workspace, &wait.resume_id, event_id)
                .await?;
            Ok(false)
        }
        LedgerStatus::Claimed => Ok(entry.lease_until_ms <= now_ms),
        _ => Ok(true),
    }
}

pub async fn cancel(api: &Api, request: &ApiRequest) -> Result<Reply, Problem> {
    api.authorize_internal(request)?;
    let body: CancelBody = request.json()?;
    let key = key(body.run_id, body.step_id, body.event_key)?;
    api.resumes
        .delete(&key.resume_id(), body.generation.as_deref())
        .await?;
    Ok(Reply::empty(204))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_lambda_events::encodings::Body;
    use serde_json::{json, Value};

    use crate::clock::{Clock, ManualClock};
    use crate::dedup::{ClaimOutcome, ClaimRequest, Ledger, MatchKind};
    use crate::dispatch::DispatchMessage;
    use crate::event::NormalizedEvent;
    use crate::ids::{EventId, WorkspaceId};
    use crate::memory::{MemoryLedger, MemoryParkStore, MemoryQueue, RecordingAuditSink};
    use crate::resume::{ParkStore, ParkedEvent, ResumeKey};

    struct Setup {
        api: super::Api,
        queue: Arc<MemoryQueue>,
        parked: Arc<MemoryParkStore>,
        ledger: Arc<MemoryLedger>,
        clock: Arc<ManualClock>,
    }

    fn setup() -> Setup {
        let clock = Arc::new(ManualClock::at_ms(1_800_000_000_000));
        let mut api =
            crate::memory::api(Arc::new(RecordingAuditSink::default()), clock.clone(), []).unwrap();
        let queue = Arc::new(MemoryQueue::default());
        let parked = Arc::new(MemoryParkStore::default());
        let ledger = Arc::new(MemoryLedger::default());
        api.dispatch_queue = queue.clone();
        api.parked = parked.clone();
        api.ledger = ledger.clone();
        Setup {
            api,
            queue,
            parked,
            ledger,
            clock,
        }
    }

    fn key() -> ResumeKey {
        ResumeKey {
            run_id: "r1".into(),
            step_id: "s1".into(),
            event_key: "workflow.completed".into(),
        }
    }

    fn ws() -> WorkspaceId {
        WorkspaceId::new("ws1").unwrap()
    }

    async fn park(s: &Setup, event_id: &str, at_ms: i64) {
        let event: NormalizedEvent = serde_json::from_value(json!({
            "eventId": event_id, "kind": "workflow.completed", "depth": 0,
            "source": {"type": "internal", "occurredAt": "t"},
            "data": {"runId": "r1", "stepId": "s1"}
        }))
        .unwrap();
        let parked = ParkedEvent {
            event,
            parked_at_ms: at_ms,
            until_ms: at_ms + 300_000,
        };
        s.parked
            .park(&ws(), &key().resume_id(), &parked)
            .await
            .unwrap();
    }

    async fn register(s: &Setup) -> (i64, Value) {
        let body = json!({"runId": "r1", "stepId": "s1", "eventKey": "workflow.completed",
                          "workspaceId": "ws1"});
        let headers = json!({"x-custos-callctx": "{}"});
        let request = crate::memory::gateway_request(
            "POST",
            "/RegisterResumeSubscription",
            headers,
            &body.to_string(),
        )
        .unwrap();
        let response = s.api.handle(request).await;
        let body = match response.body {
            Some(Body::Text(text)) => serde_json::from_str(&text).unwrap(),
            _ => Value::Null,
        };
        (response.status_code, body)
    }

    fn delivered(queue: &MemoryQueue) -> Vec<(String, String)> {
        queue
            .sent()
            .iter()
            .map(|b| serde_json::from_str::<DispatchMessage>(b).unwrap())
            .map(|m| match m.target {
                crate::dispatch::DispatchTarget::Resume { generation, .. } => {
                    (m.event.event_id.to_string(), generation)
                }
                crate::dispatch::DispatchTarget::Start { .. } => unreachable!(),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_retried_registration_delivers_what_the_failed_one_could_not() {
        let s = setup();
        park(&s, "early", s.clock.now_ms()).await;
        // The generation is written, then handing the parked event over fails.
        s.queue.fail_sends(true);
        let (status, body) = register(&s).await;
        assert_eq!(status, 503, "{body}");
        s.queue.fail_sends(false);
        let (status, body) = register(&s).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["deliveredEventId"], "early");
        let generation = body["generation"].as_str().unwrap().to_owned();
        assert_eq!(delivered(&s.queue), [("early".to_owned(), generation)]);
    }

    #[tokio::test]
    async fn a_registration_skips_parked_events_already_delivered_or_in_flight() {
        let s = setup();
        let now = s.clock.now_ms();
        park(&s, "delivered", now).await;
        park(&s, "in-flight", now + 1).await;
        park(&s, "waiting", now + 2).await;
        let resume_id = key().resume_id();
        for (event, commit) in [("delivered", true), ("in-flight", false)] {
            let request = ClaimRequest {
                workspace_id: ws(),
                key: crate::dedup::DedupKey::new(resume_id.as_str(), event),
                event_id: EventId::new(event).unwrap(),
                target_id: resume_id.to_string(),
                match_kind: MatchKind::Resume,
                token: format!("t-{event}"),
                now_ms: now,
                lease_until_ms: now + 60_000,
                expires_at: now / 1000 + 86_400,
            };
            let ClaimOutcome::Claimed(claim) = s.ledger.claim(&request).await.unwrap() else {
                panic!("claim");
            };
            if commit {
                s.ledger
                    .commit(&claim, None, now / 1000 + 86_400, now)
                    .await
                    .unwrap();
            }
        }
        let (status, body) = register(&s).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["deliveredEventId"], "waiting");
        let left: Vec<String> = s
            .parked
            .parked(&ws(), &resume_id, now)
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.event.event_id.to_string())
            .collect();
        // The delivered copy is dropped; the handed-over one leaves with its message.
        assert_eq!(left, ["in-flight"]);
    }
}
