//! The dead-letter recorder: whatever reaches a DLQ (workflow-events, normalized,
//! dispatch) gets a final, visible record, so no event's fate is unknown. A dispatch
//! message becomes a `dead_lettered` ledger item for its match; a queued event or a
//! lifecycle envelope becomes the event's fate in the archive; a body that is none of
//! these is audited (`trigger.deadletter.unidentified`) with its size, hash and opening.

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::archive::{EventArchive, Retention};
use crate::audit::{AuditEvent, AuditName, AuditSink};
use crate::clock::Clock;
use crate::dedup::{DeadLetterReason, Ledger, LedgerError, LedgerStatus};
use crate::dispatch::{DispatchMessage, DispatchTarget};
use crate::event::QueuedEvent;
use crate::ids::{EventId, WorkspaceId};
use crate::resume::{finish_hold, Finish, ResumeStore};
use crate::stage::ingest;
use crate::store::StoreError;

/// How much of an unidentifiable body the audit record quotes.
const EXCERPT_CHARS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Archive(#[from] StoreError),
    #[error("flow table: {0}")]
    Flow(StoreError),
}

/// What the recorder could identify in a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Match {
        workspace_id: WorkspaceId,
        event_id: EventId,
    },
    Event {
        workspace_id: WorkspaceId,
        event_id: EventId,
    },
    Unidentified,
}

pub struct DeadLetterRecorder {
    pub ledger: Arc<dyn Ledger>,
    pub resumes: Arc<dyn ResumeStore>,
    pub archive: Arc<dyn EventArchive>,
    pub audit: Arc<dyn AuditSink>,
    pub clock: Arc<dyn Clock>,
    pub retention: Retention,
    /// Gives back the concurrency slot a dead-lettered match held (none: no flow table).
    pub flow: Option<Arc<crate::flow::FlowGate>>,
}

impl DeadLetterRecorder {
    pub async fn record(&self, message_id: &str, body: &str) -> Result<Recorded, RecordError> {
        if let Ok(message) = serde_json::from_str::<DispatchMessage>(body) {
            return self.record_match(&message).await;
        }
        if let Ok(queued) = serde_json::from_str::<QueuedEvent>(body) {
            let detail = "the event could not be matched before the normalized queue gave up on it";
            return self.record_event(&queued, detail).await;
        }
        let lifecycle = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| ingest::lifecycle_envelope(&v).ok());
        if let Some(queued) = lifecycle {
            let detail = "the lifecycle event could not be ingested before its queue gave up on it";
            return self.record_event(&queued, detail).await;
        }
        self.audit_whole(message_id, body, DeadLetterReason::Unparseable, None);
        Ok(Recorded::Unidentified)
    }

    /// The record could not be written however often it was tried (the store refuses
    /// it): the message is audited instead, so it is neither looped on nor lost.
    pub fn give_up(&self, message_id: &str, body: &str, error: &RecordError) {
        tracing::error!(message_id, %error, "dead letter could not be recorded; audited instead");
        self.audit_whole(
            message_id,
            body,
            DeadLetterReason::RetriesExhausted,
            Some(error),
        );
    }

    fn audit_whole(
        &self,
        message_id: &str,
        body: &str,
        reason: DeadLetterReason,
        error: Option<&RecordError>,
    ) {
        let mut audit = AuditEvent::new(AuditName::DeadLetterUnidentified, "", None)
            .with("reason", reason.as_str())
            .with("messageId", message_id)
            .with("bytes", body.len())
            .with("sha256", hex::encode(Sha256::digest(body.as_bytes())))
            .with(
                "excerpt",
                body.chars().take(EXCERPT_CHARS).collect::<String>(),
            );
        if let Some(error) = error {
            audit = audit.with("recordError", error.to_string());
        }
        self.audit.emit(audit);
    }

    async fn record_match(&self, message: &DispatchMessage) -> Result<Recorded, RecordError> {
        let reason = DeadLetterReason::RetriesExhausted;
        let detail = "the dispatch queue gave up on the match before it could be dispatched";
        let entry = message.dead_letter_entry(reason, detail, self.clock.now_ms());
        // A committed item (the dispatch did happen) or a live claim wins.
        self.ledger.record_unclaimed(&entry).await?;
        // What the ledger holds now decides what the match still holds; read only for
        // a match that holds something (a wait, a slot).
        let holds = matches!(message.target, DispatchTarget::Resume { .. })
            || (message.slots.is_some() && self.flow.is_some());
        let status = if holds {
            self.ledger
                .get(&message.workspace_id, &message.dedup_key())
                .await?
                .map(|e| e.status)
        } else {
            None
        };
        self.finish_resume_hold(message, status).await?;
        self.give_back_slot(message, status).await?;
        self.audit.emit(
            message
                .audit(AuditName::DeadLetterRecorded)
                .with("reason", reason.as_str()),
        );
        Ok(Recorded::Match {
            workspace_id: message.workspace_id.clone(),
            event_id: message.event.event_id.clone(),
        })
    }

    /// A resume match the queue gave up on may still hold its wait (its worker was
    /// stopped mid-delivery): given back when it was dead-lettered, so the next event
    /// can resume the step; marked consumed when the ledger says it was delivered.
    async fn finish_resume_hold(
        &self,
        message: &DispatchMessage,
        status: Option<LedgerStatus>,
    ) -> Result<(), RecordError> {
        let DispatchTarget::Resume { resume_id, .. } = &message.target else {
            return Ok(());
        };
        let finish = match status {
            Some(LedgerStatus::Committed) => Finish::Consume,
            Some(LedgerStatus::DeadLettered) => Finish::Release,
            _ => return Ok(()),
        };
        finish_hold(
            self.resumes.as_ref(),
            resume_id,
            &message.event.event_id,
            finish,
        )
        .await?;
        Ok(())
    }

    /// A dead-lettered match waiting for (or holding) a concurrency slot will never
    /// run: its slot goes back at once instead of after the slot timeout. One that was
    /// dispatched after all keeps it (its run's end frees it).
    async fn give_back_slot(
        &self,
        message: &DispatchMessage,
        status: Option<LedgerStatus>,
    ) -> Result<(), RecordError> {
        let (Some(slots), Some(gate)) = (&message.slots, &self.flow) else {
            return Ok(());
        };
        if status != Some(LedgerStatus::DeadLettered) {
            return Ok(());
        }
        gate.give_back(
            &slots.cell,
            message.event.event_id.as_str(),
            self.clock.now_ms(),
        )
        .await
        .map_err(RecordError::Flow)
    }

    async fn record_event(
        &self,
        queued: &QueuedEvent,
        detail: &str,
    ) -> Result<Recorded, RecordError> {
        let reason = DeadLetterReason::RetriesExhausted;
        let (workspace_id, event_id) = (&queued.workspace_id, &queued.event.event_id);
        crate::archive::record_dead_letter(
            self.archive.as_ref(),
            self.retention,
            workspace_id,
            event_id,
            reason,
            detail,
            self.clock.now_ms(),
        )
        .await?;
        self.audit.emit(
            AuditEvent::new(
                AuditName::DeadLetterRecorded,
                workspace_id.as_str(),
                Some(event_id.as_str()),
            )
            .with("reason", reason.as_str()),
        );
        Ok(Recorded::Event {
            workspace_id: workspace_id.clone(),
            event_id: event_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::EventArchive;
    use crate::dedup::LedgerStatus;
    use crate::memory::{MemoryArchive, MemoryLedger, RecordingAuditSink};
    use serde_json::json;

    fn recorder() -> (
        DeadLetterRecorder,
        Arc<MemoryLedger>,
        Arc<MemoryArchive>,
        Arc<RecordingAuditSink>,
    ) {
        let ledger = Arc::new(MemoryLedger::default());
        let archive = Arc::new(MemoryArchive::default());
        let audit = Arc::new(RecordingAuditSink::default());
        let recorder = DeadLetterRecorder {
            ledger: ledger.clone(),
            resumes: Arc::new(crate::memory::MemoryResumeStore::default()),
            archive: archive.clone(),
            audit: audit.clone(),
            clock: Arc::new(crate::clock::ManualClock::at_ms(1_800_000_000_000)),
            retention: Retention { ttl_secs: 60 },
            flow: None,
        };
        (recorder, ledger, archive, audit)
    }

    fn envelope() -> Value {
        json!({"workflowVersionId": "wv", "runId": "r1", "workspace": "ws1",
               "status": "completed", "occurredAt": "2026-11-27T10:00:00Z"})
    }

    #[tokio::test]
    async fn a_dead_dispatch_message_dead_letters_its_match() {
        let (recorder, ledger, _, audit) = recorder();
        let queued = ingest::lifecycle_envelope(&envelope()).unwrap();
        let message = json!({"workspaceId": "ws1", "event": queued.event,
            "target": {"type": "start", "subscriptionId": "s1", "workflowId": "wf",
                       "workflowVersionId": "wv"}});
        let recorded = recorder.record("m1", &message.to_string()).await.unwrap();
        assert!(matches!(recorded, Recorded::Match { .. }));
        let entries = ledger.entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].status, LedgerStatus::DeadLettered);
        assert_eq!(entries[0].reason, Some(DeadLetterReason::RetriesExhausted));
        assert_eq!(entries[0].target_id, "s1");
        assert_eq!(audit.names(), [AuditName::DeadLetterRecorded]);
    }

    #[tokio::test]
    async fn a_dead_resume_match_gives_back_the_wait_its_event_still_holds() {
        use crate::resume::{ResumeKey, ResumeStore, ResumeWait, TakeOutcome, TakeRequest};
        let (mut recorder, ledger, _, _) = recorder();
        let resumes = Arc::new(crate::memory::MemoryResumeStore::default());
        recorder.resumes = resumes.clone();
        let queued = ingest::lifecycle_envelope(&envelope()).unwrap();
        let key = ResumeKey {
            run_id: "r1".into(),
            step_id: "s1".into(),
            event_key: "workflow.completed".into(),
        };
        let wait = ResumeWait {
            resume_id: key.resume_id(),
            run_id: key.run_id.clone(),
            step_id: key.step_id.clone(),
            event_key: key.event_key.clone(),
            selector: None,
            workspace_id: Some(WorkspaceId::new("ws1").unwrap()),
            expires_at: i64::MAX / 2000,
            generation: "g1".into(),
            taken: None,
            consumed_by: None,
        };
        resumes.put(&wait).await.unwrap();
        // The worker took the wait for this event, then was stopped every time.
        let taken = resumes
            .take(&TakeRequest {
                resume_id: &wait.resume_id,
                generation: "g1",
                event_id: &queued.event.event_id,
                token: "tok",
                until_ms: i64::MAX / 2,
                now_ms: 0,
            })
            .await
            .unwrap();
        assert_eq!(taken, TakeOutcome::Taken);
        let message = json!({"workspaceId": "ws1", "event": queued.event,
            "target": {"type": "resume", "resumeId": wait.resume_id, "runId": "r1",
                       "stepId": "s1", "eventKey": "workflow.completed", "generation": "g1"}});
        recorder.record("m1", &message.to_string()).await.unwrap();
        assert_eq!(ledger.entries()[0].status, LedgerStatus::DeadLettered);
        let stored = resumes.get(&wait.resume_id).await.unwrap().unwrap();
        assert_eq!(
            (stored.taken, stored.consumed_by),
            (None, None),
            "live again for the next event"
        );
    }

    /// A recorder with a flow gate, the slot cell `ws1#s1#slots` as `holders` (the dead
    /// event's id stands for "me") and `waiting` left it, and the dead event's message.
    async fn slot_case(
        holders: &[&str],
        waiting: &[&str],
    ) -> (
        DeadLetterRecorder,
        Arc<MemoryLedger>,
        Arc<crate::memory::MemoryFlowStore>,
        DispatchMessage,
    ) {
        use crate::flow::{FlowCell, FlowGate, FlowStore};
        let (mut recorder, ledger, _, _) = recorder();
        let store = Arc::new(crate::memory::MemoryFlowStore::default());
        recorder.flow = Some(Arc::new(FlowGate::new(store.clone())));
        let queued = ingest::lifecycle_envelope(&envelope()).unwrap();
        let me = queued.event.event_id.to_string();
        let name = |h: &&str| {
            if *h == "me" {
                me.clone()
            } else {
                (*h).to_owned()
            }
        };
        let cell = FlowCell {
            holders: holders.iter().map(|h| (name(h), i64::MAX / 2)).collect(),
            waiting: waiting.iter().map(name).collect(),
            version: 1,
            ..FlowCell::default()
        };
        assert!(store
            .swap("ws1#s1#slots", &cell, None, i64::MAX / 2000)
            .await
            .unwrap());
        let message = serde_json::from_value(json!({"workspaceId": "ws1",
            "event": queued.event,
            "target": {"type": "start", "subscriptionId": "s1", "workflowId": "wf",
                       "workflowVersionId": "wv"},
            "slots": {"cell": "ws1#s1#slots", "limit": 2, "timeoutMs": 3_600_000}}))
        .unwrap();
        (recorder, ledger, store, message)
    }

    #[tokio::test]
    async fn a_dead_match_gives_back_its_concurrency_slot_and_its_place_in_line() {
        use crate::flow::FlowStore;
        let (recorder, ledger, store, message) = slot_case(&["me", "other"], &["next"]).await;
        let body = serde_json::to_string(&message).unwrap();
        recorder.record("m1", &body).await.unwrap();
        assert_eq!(ledger.entries()[0].status, LedgerStatus::DeadLettered);
        let after = store.load("ws1#s1#slots").await.unwrap().unwrap();
        assert_eq!(
            after.holders.keys().collect::<Vec<_>>(),
            ["other"],
            "its slot is free now"
        );
        assert_eq!(after.waiting, ["next"]);
    }

    #[tokio::test]
    async fn a_dispatched_match_the_queue_gave_up_on_keeps_its_slot_for_its_run() {
        use crate::flow::FlowStore;
        let (recorder, ledger, store, message) = slot_case(&["me"], &[]).await;
        // The run started (committed) but the message was not acknowledged.
        let mut committed = message.dead_letter_entry(DeadLetterReason::RetriesExhausted, "", 0);
        committed.status = LedgerStatus::Committed;
        committed.reason = None;
        committed.expires_at = i64::MAX / 2000;
        ledger.insert(committed);
        let body = serde_json::to_string(&message).unwrap();
        recorder.record("m1", &body).await.unwrap();
        let after = store.load("ws1#s1#slots").await.unwrap().unwrap();
        assert_eq!(
            after.holders.len(),
            1,
            "the run's end frees it, not the recorder"
        );
    }

    #[tokio::test]
    async fn queued_events_and_lifecycle_envelopes_get_an_event_fate() {
        let (recorder, ledger, archive, _) = recorder();
        let queued = ingest::lifecycle_envelope(&envelope()).unwrap();
        for body in [
            serde_json::to_string(&queued).unwrap(),
            envelope().to_string(),
        ] {
            let recorded = recorder.record("m", &body).await.unwrap();
            assert!(matches!(recorded, Recorded::Event { .. }), "{body}");
        }
        let stored = archive
            .get(&queued.workspace_id, &queued.event.event_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.fate.map(|f| f.reason),
            Some(DeadLetterReason::RetriesExhausted)
        );
        assert!(ledger.entries().is_empty());
    }

    #[tokio::test]
    async fn an_unreadable_body_is_audited_with_its_hash_and_opening() {
        let (recorder, ledger, _, audit) = recorder();
        let body = format!("garbage {}", "x".repeat(1000));
        assert_eq!(
            recorder.record("m9", &body).await.unwrap(),
            Recorded::Unidentified
        );
        assert!(ledger.entries().is_empty());
        let events = audit.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].audit, AuditName::DeadLetterUnidentified);
        assert_eq!(events[0].attrs["messageId"], "m9");
        assert_eq!(events[0].attrs["bytes"], body.len());
        assert_eq!(
            events[0].attrs["excerpt"].as_str().unwrap().len(),
            EXCERPT_CHARS
        );
    }
}
