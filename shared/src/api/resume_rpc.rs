//! Internal resume-wait RPCs (IAM-only): register is idempotent on the
//! `(runId, stepId, eventKey)` triple (the original selector wins and a divergent replay
//! is audited), a lapsed wait is registered afresh, and cancel is always 204.

use serde::Deserialize;
use serde_json::json;

use super::auth;
use super::problem::{Code, Problem};
use super::request::ApiRequest;
use super::{Api, Reply};
use crate::audit::{AuditEvent, AuditName};
use crate::ids::WorkspaceId;
use crate::resume::{parse_ttl, ResumeKey, ResumeWait};
use crate::selector::CompiledExpr;

/// The partition name upstream used for waits; audits without a tenant use it.
const RESUME_PARTITION: &str = "_resume";

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
    /// The tenant registering the wait; events of other workspaces never resume it.
    #[serde(default)]
    workspace_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CancelBody {
    run_id: String,
    step_id: String,
    event_key: String,
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
    }
    Ok(ResumeKey {
        run_id,
        step_id,
        event_key,
    })
}

pub async fn register(api: &Api, request: &ApiRequest) -> Result<Reply, Problem> {
    auth::internal(request, api.allow_shim())?;
    let body: RegisterBody = request.json()?;
    // Compiled on every path, replays included: an invalid selector is always a 422.
    if let Some(expr) = body.selector.as_deref().filter(|s| !s.trim().is_empty()) {
        CompiledExpr::selector(expr)?;
    }
    let workspace = body
        .workspace_id
        .as_deref()
        .map(WorkspaceId::new)
        .transpose()
        .map_err(|e| Problem::new(Code::BadRequest, format!("workspaceId: {e}")))?;
    let key = key(body.run_id, body.step_id, body.event_key)?;
    let resume_id = key.resume_id();
    let now = api.clock.now_secs();
    if let Some(existing) = api.resumes.get(&resume_id).await? {
        if existing.is_live(now) {
            if existing.selector != body.selector {
                let audit_ws = existing
                    .workspace_id
                    .as_ref()
                    .map_or(RESUME_PARTITION, |w| w.as_str());
                api.audit.emit(
                    AuditEvent::new(AuditName::ResumeDivergent, audit_ws, None)
                        .with("resumeId", resume_id.as_str())
                        .with("runId", key.run_id.as_str())
                        .with("stepId", key.step_id.as_str())
                        .with("eventKey", key.event_key.as_str())
                        .with("originalSelector", existing.selector.clone())
                        .with("replaySelector", body.selector.clone()),
                );
            }
            return Ok(Reply::json(200, json!({ "subscriptionId": resume_id })));
        }
        api.resumes.delete(&resume_id).await?;
    }
    let ttl = body
        .ttl
        .as_deref()
        .and_then(parse_ttl)
        .filter(|t| *t > 0)
        .unwrap_or(api.settings.resume_default_ttl_secs);
    let wait = ResumeWait {
        resume_id: resume_id.clone(),
        run_id: key.run_id,
        step_id: key.step_id,
        event_key: key.event_key,
        selector: body.selector,
        workspace_id: workspace,
        expires_at: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX / 2)),
    };
    api.resumes.put(&wait).await?;
    Ok(Reply::json(200, json!({ "subscriptionId": resume_id })))
}

pub async fn cancel(api: &Api, request: &ApiRequest) -> Result<Reply, Problem> {
    auth::internal(request, api.allow_shim())?;
    let body: CancelBody = request.json()?;
    let key = key(body.run_id, body.step_id, body.event_key)?;
    api.resumes.delete(&key.resume_id()).await?;
    Ok(Reply::empty(204))
}
