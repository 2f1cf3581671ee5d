//! The message between match and dispatch: one per match, carrying everything the
//! dispatcher needs (and the full event, for the dead-letter record).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::dedup::{DeadLetterReason, DedupKey, LedgerEntry, LedgerStatus, MatchKind};
use crate::event::NormalizedEvent;
use crate::ids::{ResumeId, SubscriptionId, WorkspaceId};

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
        let too_large = || crate::limits::TooLarge {
            what: "dispatch message",
            bytes: usize::MAX,
            limit: crate::limits::MAX_QUEUE_MESSAGE_BYTES,
        };
        // One buffer per message, written in place as text: the event is copied once,
        // and only what serde writes (flow fields, non-string inputs) is made apart and
        // checked as UTF-8, not the whole body (this runs once per match).
        let mut body = String::with_capacity(event_json.len() + 320);
        let mut field =
            |name: &str, value: &dyn erased::Json| -> Result<(), crate::limits::TooLarge> {
                body.push_str(name);
                value.write(&mut body).map_err(|_| too_large())
            };
        field(
            "{\"workspaceId\":",
            &erased::Str(self.workspace_id.as_str()),
        )?;
        field(",\"event\":", &erased::Raw(event_json))?;
        field(",\"target\":", &erased::Target(&self.target))?;
        if let Some(trace) = &self.trace {
            field(",\"trace\":", &erased::Str(trace.as_str()))?;
        }
        if let Some(ms) = self.received_ms {
            field(",\"receivedMs\":", &erased::Int(ms))?;
        }
        if let Some(ms) = self.not_before_ms {
            field(",\"notBeforeMs\":", &erased::Int(ms))?;
        }
        if let Some(cell) = &self.debounce_cell {
            field(",\"debounceCell\":", cell)?;
        }
        if let Some(slots) = &self.slots {
            field(",\"slots\":", slots)?;
        }
        if let Some(batch) = &self.batch {
            field(",\"batch\":", batch)?;
        }
        body.push('}');
        crate::limits::checked_body(
            "dispatch message",
            body,
            crate::limits::MAX_QUEUE_MESSAGE_BYTES,
        )
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

/// Writing one field's value into a message body being built.
mod erased {
    use serde_json::{Map, Value};

    /// Any serializable value, or a text that already is JSON.
    pub trait Json {
        fn write(&self, out: &mut String) -> serde_json::Result<()>;
    }

    impl<T: serde::Serialize> Json for T {
        fn write(&self, out: &mut String) -> serde_json::Result<()> {
            out.push_str(&serde_json::to_string(self)?);
            Ok(())
        }
    }

    /// A target as serde writes it, with the field names of a start written as the
    /// literals they are: this runs once per match, and serde escapes every name as if it
    /// could need it (a third of a message's serializing).
    pub struct Target<'a>(pub &'a super::DispatchTarget);

    impl Json for Target<'_> {
        fn write(&self, out: &mut String) -> serde_json::Result<()> {
            let super::DispatchTarget::Start {
                subscription_id,
                workflow_id,
                workflow_version_id,
                inputs,
                mapping_error,
            } = self.0
            else {
                return self.0.write(out);
            };
            out.push_str("{\"type\":\"start\",\"subscriptionId\":");
            write_str(out, subscription_id.as_str())?;
            out.push_str(",\"workflowId\":");
            write_str(out, workflow_id)?;
            out.push_str(",\"workflowVersionId\":");
            match workflow_version_id {
                Some(version) => write_str(out, version)?,
                None => out.push_str("null"),
            }
            out.push_str(",\"inputs\":");
            write_object(out, inputs)?;
            if let Some(error) = mapping_error {
                out.push_str(",\"mappingError\":");
                write_str(out, error)?;
            }
            out.push('}');
            Ok(())
        }
    }

    /// A text as a JSON string.
    pub struct Str<'a>(pub &'a str);

    impl Json for Str<'_> {
        fn write(&self, out: &mut String) -> serde_json::Result<()> {
            write_str(out, self.0)
        }
    }

    /// An integer, written in place (every message carries `receivedMs`).
    pub struct Int(pub i64);

    impl Json for Int {
        fn write(&self, out: &mut String) -> serde_json::Result<()> {
            use std::fmt::Write;
            write!(out, "{}", self.0).map_err(serde::ser::Error::custom)
        }
    }

    /// A JSON string exactly as serde writes it. A text with nothing to escape (the
    /// usual id, name or mapped value) is copied as it is: serde walks an escape table
    /// byte by byte, and a message's strings are most of its serializing.
    fn write_str(out: &mut String, text: &str) -> serde_json::Result<()> {
        if needs_escape(text.as_bytes()) {
            return text.write(out);
        }
        out.reserve(text.len() + 2);
        out.push('"');
        out.push_str(text);
        out.push('"');
        Ok(())
    }

    /// Whether serde would escape a byte of `text`: a control character, `"` or `\`.
    /// Checked 16 bytes at a time (the last few padded with spaces), with no early exit
    /// inside a block, so the compiler turns each block into a few vector compares:
    /// most texts here are ids and short values, which a byte loop would walk one by one.
    fn needs_escape(text: &[u8]) -> bool {
        fn escapes(block: &[u8; 16]) -> bool {
            block.iter().fold(false, |any, &b| {
                any | (b < 0x20) | (b == b'"') | (b == b'\\')
            })
        }
        let mut blocks = text.chunks_exact(16);
        let any_block = blocks
            .by_ref()
            .any(|block| <&[u8; 16]>::try_from(block).is_ok_and(escapes));
        let rest = blocks.remainder();
        let mut last = [b' '; 16];
        last[..rest.len()].copy_from_slice(rest);
        any_block || escapes(&last)
    }

    /// An object as serde writes it (members in the map's order), its keys and string
    /// values through [`write_str`].
    fn write_object(out: &mut String, object: &Map<String, Value>) -> serde_json::Result<()> {
        out.push('{');
        for (i, (key, value)) in object.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(out, key)?;
            out.push(':');
            match value {
                Value::String(text) => write_str(out, text)?,
                other => other.write(out)?,
            }
        }
        out.push('}');
        Ok(())
    }

    /// JSON text written as it is (the event, serialized once per event).
    pub struct Raw<'a>(pub &'a str);

    impl Json for Raw<'_> {
        fn write(&self, out: &mut String) -> serde_json::Result<()> {
            out.push_str(self.0);
            Ok(())
        }
    }
}
