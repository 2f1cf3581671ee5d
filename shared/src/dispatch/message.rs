//! The message between match and dispatch: one per match, carrying everything the
//! dispatcher needs (and the full event, for the dead-letter record).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::dedup::{DeadLetterReason, DedupKey, LedgerEntry, LedgerStatus, MatchKind};
use crate::event::NormalizedEvent;
use crate::ids::{ResumeId, SubscriptionId, WorkspaceId};
use crate::json_text::{self, Int, Json};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DispatchMessage {
    /// The tenant the dispatch runs in (the subscription's, or the event's for resumes).
    pub workspace_id: WorkspaceId,
    /// Shared by every message of one event's matches (serialized as the event itself).
    pub event: Arc<NormalizedEvent>,
    pub target: DispatchTarget,
    /// The W3C trace of the event, sent on to the Workflow Service as `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceParent>,
    /// When the event was accepted at its door (epoch ms), for the end-to-end latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_ms: Option<i64>,
    /// A throttle's slot or a debounce window's due time (epoch ms): the dispatcher
    /// holds the message until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    /// The debounce window this event is in: it runs only if still its latest event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_cell: Option<String>,
    /// The concurrency slot this event must take before its run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<crate::flow::Slots>,
    /// The batch (or debounce window delivering all) whose events the run gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<crate::flow::BatchRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum DispatchTarget {
    Start {
        subscription_id: SubscriptionId,
        workflow_id: String,
        #[serde(default)]
        workflow_version_id: Option<String>,
        /// Resolved `inputMapping`, or why it could not be resolved.
        #[serde(default)]
        inputs: Map<String, Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mapping_error: Option<String>,
    },
    Resume {
        resume_id: ResumeId,
        run_id: String,
        step_id: String,
        event_key: String,
        /// The registration this match was made for; empty for waits of older releases.
        #[serde(default)]
        generation: String,
    },
}

impl DispatchMessage {
    /// A message for `target` with no trace, timing or flow fields yet (the match
    /// stage adds what applies).
    pub fn new(
        workspace_id: WorkspaceId,
        event: Arc<NormalizedEvent>,
        target: DispatchTarget,
    ) -> Self {
        Self {
            workspace_id,
            event,
            target,
            trace: None,
            received_ms: None,
            not_before_ms: None,
            debounce_cell: None,
            slots: None,
            batch: None,
        }
    }

    /// The subscription or resume id the dedup key is derived from.
    pub fn target_id(&self) -> &str {
        match &self.target {
            DispatchTarget::Start {
                subscription_id, ..
            } => subscription_id.as_str(),
            DispatchTarget::Resume { resume_id, .. } => resume_id.as_str(),
        }
    }

    pub fn match_kind(&self) -> MatchKind {
        match self.target {
            DispatchTarget::Start { .. } => MatchKind::Start,
            DispatchTarget::Resume { .. } => MatchKind::Resume,
        }
    }

    pub fn dedup_key(&self) -> DedupKey {
        DedupKey::new(self.target_id(), self.event.event_id.as_str())
    }

    /// A ledger item recording an outcome reached without a claim (loop rejected, or
    /// dead-lettered before any RPC could be made).
    pub fn unclaimed_entry(
        &self,
        status: LedgerStatus,
        reason: Option<DeadLetterReason>,
        detail: Option<String>,
        attempts: u32,
        now_ms: i64,
        expires_at: i64,
    ) -> LedgerEntry {
        LedgerEntry {
            workspace_id: self.workspace_id.clone(),
            key: self.dedup_key(),
            event_id: self.event.event_id.clone(),
            target_id: self.target_id().to_owned(),
            match_kind: self.match_kind(),
            status,
            claim_token: None,
            lease_until_ms: 0,
            run_id: None,
            last_error: detail,
            reason,
            superseded_by: None,
            replaying_until_ms: 0,
            attempts,
            first_attempt_ms: 0,
            expires_at,
            updated_at_ms: now_ms,
            message: None,
        }
    }

    /// The queue body of this message around an already serialized `event_json` (the
    /// event's JSON, shared by all of an event's matches: serialized once, not once per
    /// match). The same text `serde_json` makes of the whole message.
    pub fn body_with_event(&self, event_json: &str) -> Result<String, crate::limits::TooLarge> {
        let target = Target(&self.target);
        let envelope = Envelope {
            workspace_id: &self.workspace_id,
            event_json,
            target: &target,
            trace: self.trace.as_ref(),
            received_ms: self.received_ms,
        };
        let not_before = self.not_before_ms.map(Int);
        let flow: [(&str, Option<&dyn Json>); 4] = [
            (
                ",\"notBeforeMs\":",
                not_before.as_ref().map(|v| v as &dyn Json),
            ),
            (
                ",\"debounceCell\":",
                self.debounce_cell.as_ref().map(|v| v as &dyn Json),
            ),
            (",\"slots\":", self.slots.as_ref().map(|v| v as &dyn Json)),
            (",\"batch\":", self.batch.as_ref().map(|v| v as &dyn Json)),
        ];
        envelope.body(&flow)
    }

    /// The message as a dead letter keeps it, for inspection and replay.
    pub fn to_record(&self) -> Option<String> {
        serde_json::to_string(self).ok()
    }

    /// The ledger item of a match dead-lettered before any RPC (`reason`, tenant-safe
    /// `detail`), kept for `DEAD_LETTER_RETENTION_SECS` with the message, unless it is
    /// the message's size that failed (a ledger item could not hold it either).
    pub fn dead_letter_entry(
        &self,
        reason: DeadLetterReason,
        detail: &str,
        now_ms: i64,
    ) -> LedgerEntry {
        let mut entry = self.unclaimed_entry(
            LedgerStatus::DeadLettered,
            Some(reason),
            Some(detail.to_owned()),
            0,
            now_ms,
            now_ms / 1000 + crate::dedup::DEAD_LETTER_RETENTION_SECS,
        );
        if reason != DeadLetterReason::TooLarge {
            entry.message = self.to_record();
        }
        entry
    }

    /// An audit record about this match: workspace, event and the target's attributes.
    pub fn audit(&self, name: crate::audit::AuditName) -> crate::audit::AuditEvent {
        crate::audit::AuditEvent::new(
            name,
            self.workspace_id.as_str(),
            Some(self.event.event_id.as_str()),
        )
        .with_attrs(&self.audit_attrs())
    }

    /// The base audit attributes of upstream: start `{subscriptionId, workflowVersionId}`,
    /// resume `{resumeId, runId, stepId, eventKey}` (`eventId` is a top-level field).
    pub fn audit_attrs(&self) -> Map<String, Value> {
        let mut attrs = Map::new();
        match &self.target {
            DispatchTarget::Start {
                subscription_id,
                workflow_version_id,
                ..
            } => {
                attrs.insert("subscriptionId".into(), subscription_id.as_str().into());
                attrs.insert(
                    "workflowVersionId".into(),
                    workflow_version_id
                        .clone()
                        .map_or(Value::Null, Value::String),
                );
            }
            DispatchTarget::Resume {
                resume_id,
                run_id,
                step_id,
                event_key,
                ..
            } => {
                attrs.insert("resumeId".into(), resume_id.as_str().into());
                attrs.insert("runId".into(), run_id.as_str().into());
                attrs.insert("stepId".into(), step_id.as_str().into());
                attrs.insert("eventKey".into(), event_key.as_str().into());
            }
        }
        attrs
    }
}

/// The size refusal of a body that could not be written (serde refuses nothing a
/// message holds; the limit is what fails in practice).
fn too_large() -> crate::limits::TooLarge {
    crate::limits::TooLarge {
        what: "dispatch message",
        bytes: usize::MAX,
        limit: crate::limits::MAX_QUEUE_MESSAGE_BYTES,
    }
}

/// The fields every dispatch message body has, in the order serde writes them; the
/// flow fields follow in [`Envelope::write`].
struct Envelope<'a> {
    workspace_id: &'a WorkspaceId,
    event_json: &'a str,
    target: &'a dyn Json,
    trace: Option<&'a crate::trace::TraceParent>,
    received_ms: Option<i64>,
}

impl Envelope<'_> {
    /// The body with the `flow` fields that are set, SQS-safe and within its limit.
    fn body(&self, flow: &[(&str, Option<&dyn Json>)]) -> Result<String, crate::limits::TooLarge> {
        let body = self.write(flow).map_err(|_| too_large())?;
        crate::limits::checked_body(
            "dispatch message",
            body,
            crate::limits::MAX_QUEUE_MESSAGE_BYTES,
        )
    }

    /// One buffer per message, written in place as text: the event is copied once, and
    /// only what serde writes (flow fields, non-string inputs) is made apart and checked
    /// as UTF-8, not the whole body (this runs once per match).
    fn write(&self, flow: &[(&str, Option<&dyn Json>)]) -> serde_json::Result<String> {
        let mut body = String::with_capacity(self.event_json.len() + 320);
        body.push_str("{\"workspaceId\":");
        json_text::string(&mut body, self.workspace_id.as_str())?;
        body.push_str(",\"event\":");
        body.push_str(self.event_json);
        body.push_str(",\"target\":");
        self.target.write(&mut body)?;
        if let Some(trace) = self.trace {
            // Validated hex and dashes: nothing in it to escape.
            body.push_str(",\"trace\":\"");
            body.push_str(trace.as_str());
            body.push('"');
        }
        if let Some(ms) = self.received_ms {
            body.push_str(",\"receivedMs\":");
            Int(ms).write(&mut body)?;
        }
        for (name, value) in flow {
            if let Some(value) = value {
                body.push_str(name);
                value.write(&mut body)?;
            }
        }
        body.push('}');
        Ok(body)
    }
}

/// A target as serde writes it, with the field names of a start written as the
/// literals they are: this runs once per match.
struct Target<'a>(&'a DispatchTarget);

impl Json for Target<'_> {
    fn write(&self, out: &mut String) -> serde_json::Result<()> {
        let DispatchTarget::Start {
            subscription_id,
            workflow_id,
            workflow_version_id,
            inputs,
            mapping_error,
        } = self.0
        else {
            return self.0.write(out);
        };
        let fields = StartFields {
            subscription_id,
            workflow_id,
            workflow_version_id: workflow_version_id.as_deref(),
        };
        fields.write(out, |out| json_text::object(out, inputs))?;
        if let Some(error) = mapping_error {
            out.push_str(",\"mappingError\":");
            json_text::string(out, error)?;
        }
        out.push('}');
        Ok(())
    }
}

/// A start target's fields up to its inputs, which `inputs` writes; the caller closes
/// the object (after a `mappingError`, if any).
struct StartFields<'a> {
    subscription_id: &'a SubscriptionId,
    workflow_id: &'a str,
    workflow_version_id: Option<&'a str>,
}

impl StartFields<'_> {
    fn write(
        &self,
        out: &mut String,
        inputs: impl FnOnce(&mut String) -> serde_json::Result<()>,
    ) -> serde_json::Result<()> {
        out.push_str("{\"type\":\"start\",\"subscriptionId\":");
        json_text::string(out, self.subscription_id.as_str())?;
        out.push_str(",\"workflowId\":");
        json_text::string(out, self.workflow_id)?;
        out.push_str(",\"workflowVersionId\":");
        match self.workflow_version_id {
            Some(version) => json_text::string(out, version)?,
            None => out.push_str("null"),
        }
        out.push_str(",\"inputs\":");
        inputs(out)
    }
}

/// What a start match's queue body is written from without making its
/// [`DispatchMessage`]: the subscription's fields are borrowed and its inputs written
/// as they resolve, where the message would copy the ids and build the inputs map
/// (this runs once per match; the match stage makes the message only for a match
/// under flow control or one whose body this cannot write).
pub struct StartDraft<'a> {
    pub workspace_id: &'a WorkspaceId,
    pub subscription: &'a crate::subscription::Subscription,
    pub trace: Option<&'a crate::trace::TraceParent>,
    pub received_ms: Option<i64>,
}

impl StartDraft<'_> {
    /// The body [`DispatchMessage::body_with_event`] makes of this match's message
    /// (resolved by `inputs`), or `None` when `inputs` fails or the body is too large:
    /// the caller then makes the message, which records either.
    pub fn body_with_event(&self, event_json: &str, inputs: &WriteInputs) -> Option<String> {
        let subscription = self.subscription;
        let target = StartTarget {
            fields: StartFields {
                subscription_id: &subscription.subscription_id,
                workflow_id: &subscription.workflow_id,
                workflow_version_id: subscription.target_workflow_version_id.as_deref(),
            },
            inputs,
        };
        let envelope = Envelope {
            workspace_id: self.workspace_id,
            event_json,
            target: &target,
            trace: self.trace,
            received_ms: self.received_ms,
        };
        envelope.body(&[]).ok()
    }
}

/// Writes a start's resolved inputs as a JSON object, or says why they do not resolve.
pub type WriteInputs<'a> = dyn Fn(&mut String) -> Result<(), crate::mapping::MappingError> + 'a;

/// A draft's target: its fields, and inputs written as they resolve.
struct StartTarget<'a> {
    fields: StartFields<'a>,
    inputs: &'a WriteInputs<'a>,
}

impl Json for StartTarget<'_> {
    fn write(&self, out: &mut String) -> serde_json::Result<()> {
        self.fields.write(out, |out| {
            (self.inputs)(out).map_err(|e| serde::ser::Error::custom(e.reason))
        })?;
        out.push('}');
        Ok(())
    }
}
