//! The dispatch stage: runs the dispatcher on one received dispatch message and turns
//! the outcome into an SQS decision: acknowledge, or return the message after setting
//! its visibility to the backoff delay. Flow control's waits end here: a throttled
//! message is held until its slot, a debounced one runs only if its window's latest, and
//! one under a concurrency limit waits in line for a free slot.

use std::sync::Arc;

use crate::archive::EventArchive;
use crate::dedup::{LedgerStatus, DEAD_LETTER_RETENTION_SECS};
use crate::dispatch::{Attempt, DispatchMessage, DispatchOutcome, DispatchTarget, Dispatcher};
use crate::flow::{Fire, FlowGate, Take};
use crate::ids::EventId;
use crate::queue::Queue;
use crate::stage::batch::{Received, RetryMessage};

pub struct DispatchStage {
    pub dispatcher: Dispatcher,
    /// The dispatch queue itself (visibility changes of received messages).
    pub queue: Arc<dyn Queue>,
    /// Debounce windows (none: a debounced message runs when it is due).
    pub flow: Option<Arc<FlowGate>>,
    /// Where a batch's events are read from (none: a batch run gets only its ids).
    pub events: Option<Arc<dyn EventArchive>>,
}

impl DispatchStage {
    /// Dispatches one message, its log lines in a span carrying the event's trace id.
    pub async fn handle(
        &self,
        message: Received<DispatchMessage>,
        deadline_ms: Option<i64>,
    ) -> Result<DispatchOutcome, RetryMessage> {
        use tracing::Instrument;
        let body = &message.body;
        let (subscription_id, resume_id) = match &body.target {
            DispatchTarget::Start {
                subscription_id, ..
            } => (Some(subscription_id.as_str()), None),
            DispatchTarget::Resume { resume_id, .. } => (None, Some(resume_id.as_str())),
        };
        let span = tracing::info_span!(
            "dispatch",
            trace_id = body.trace.as_ref().map(crate::trace::TraceParent::trace_id),
            event_id = %body.event.event_id,
            workspace_id = %body.workspace_id,
            subscription_id,
            resume_id,
            dedup_key = %body.dedup_key(),
        );
        self.handle_traced(message, deadline_ms)
            .instrument(span)
            .await
    }

    async fn handle_traced(
        &self,
        message: Received<DispatchMessage>,
        deadline_ms: Option<i64>,
    ) -> Result<DispatchOutcome, RetryMessage> {
        let attempt = Attempt {
            number: message.receive_count.max(1),
            deadline_ms,
            sent_ms: message.sent_ms,
        };
        let body = &message.body;
        if let Some(held) = self.hold(body).await? {
            return Ok(held);
        }
        if let Some(settled) = self.debounce(&message, attempt).await? {
            return Ok(settled);
        }
        if let Some(waiting) = self.take_slot(&message, attempt).await? {
            return Ok(waiting);
        }
        let gathered = self.gather(&message, attempt).await?;
        let body = gathered.as_ref().unwrap_or(body);
        let outcome = match self.dispatcher.dispatch(body, attempt).await {
            Ok(outcome) => outcome,
            // The ledger could not record anything: back off like any other return, so
            // a ledger outage spends receives no faster than a Workflow Service outage.
            Err(e) => return Err(self.back_off(&message, attempt, e).await),
        };
        let run_id = match &outcome {
            DispatchOutcome::Dispatched { run_id } | DispatchOutcome::Duplicate { run_id } => {
                run_id.as_deref()
            }
            _ => None,
        };
        tracing::info!(
            workspace_id = %body.workspace_id,
            event_id = %body.event.event_id,
            target_id = body.target_id(),
            receive_count = attempt.number,
            outcome = outcome.as_str(),
            run_id,
            "dispatch finished"
        );
        if let DispatchOutcome::RetryLater { delay_secs, reason } = &outcome {
            self.return_after(&message, *delay_secs).await;
            return Err(RetryMessage(reason.clone()));
        }
        self.settle_slot(&message, &outcome, attempt).await?;
        Ok(outcome)
    }

    /// A batch (or a debounce window delivering all) runs once, as its first event
    /// (so its dedup key and its fate are the batch's), with every event of it in
    /// `inputs.events`, in arrival order; closing it keeps later events out.
    async fn gather(
        &self,
        message: &Received<DispatchMessage>,
        attempt: Attempt,
    ) -> Result<Option<DispatchMessage>, RetryMessage> {
        let body = &message.body;
        let (Some(batch), Some(gate)) = (&body.batch, &self.flow) else {
            return Ok(None);
        };
        let gathered = async {
            let members = gate.close_batch(batch).await?;
            let ids: Vec<EventId> = members
                .iter()
                .filter_map(|m| EventId::new(m.as_str()).ok())
                .collect();
            let archived = match &self.events {
                Some(archive) => archive.get_many(&body.workspace_id, &ids).await?,
                None => Vec::new(),
            };
            Ok::<_, crate::store::StoreError>((ids, archived))
        };
        let (ids, archived) = match gathered.await {
            Ok(found) => found,
            Err(e) => return Err(self.back_off(message, attempt, e).await),
        };
        let mut by_id: std::collections::HashMap<&str, &crate::event::NormalizedEvent> = archived
            .iter()
            .filter_map(|a| Some((a.event_id.as_str(), a.event.as_ref()?)))
            .collect();
        let mut run = body.clone();
        if let Some(first) = by_id.get(batch.batch_id.as_str()) {
            run.event = std::sync::Arc::new((*first).clone());
        }
        // An event the archive no longer has (expired) is still named.
        let events: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| {
                by_id.remove(id.as_str()).map_or_else(
                    || serde_json::json!({ "eventId": id.as_str() }),
                    crate::event::NormalizedEvent::to_json,
                )
            })
            .collect();
        if let DispatchTarget::Start { inputs, .. } = &mut run.target {
            inputs.insert("events".to_owned(), serde_json::Value::Array(events));
        }
        Ok(Some(run))
    }

    /// A message that must hold a concurrency slot takes it (first in line, a slot
    /// free) or waits in line: it comes back after a short delay that grows with the
    /// number of events ahead of it (2 s each, 30 s at most).
    async fn take_slot(
        &self,
        message: &Received<DispatchMessage>,
        attempt: Attempt,
    ) -> Result<Option<DispatchOutcome>, RetryMessage> {
        let body = &message.body;
        let (Some(slots), Some(gate)) = (&body.slots, &self.flow) else {
            return Ok(None);
        };
        let now_ms = self.dispatcher.clock.now_ms();
        match gate.take(slots, &body.event.event_id, now_ms).await {
            Ok(Take::Go) => Ok(None),
            Ok(Take::Wait { ahead }) => {
                let wait_ms = i64::try_from(ahead.saturating_add(1).min(15)).unwrap_or(15) * 2_000;
                let mut later = body.clone();
                later.not_before_ms = Some(now_ms + wait_ms);
                self.hold(&later).await
            }
            Err(e) => Err(self.back_off(message, attempt, e).await),
        }
    }

    /// After the dispatch: a started run's slot is linked to its run id (its end gives
    /// the slot back); a match that will never run gives its slot back at once; one that
    /// retries keeps it.
    async fn settle_slot(
        &self,
        message: &Received<DispatchMessage>,
        outcome: &DispatchOutcome,
        attempt: Attempt,
    ) -> Result<(), RetryMessage> {
        let body = &message.body;
        let (Some(slots), Some(gate)) = (&body.slots, &self.flow) else {
            return Ok(());
        };
        let now_ms = self.dispatcher.clock.now_ms();
        let event_id = &body.event.event_id;
        let settled = match outcome {
            DispatchOutcome::Dispatched { run_id: Some(run) }
            | DispatchOutcome::Duplicate { run_id: Some(run) } => {
                gate.link_run(&body.workspace_id, run, slots, event_id, now_ms)
                    .await
            }
            DispatchOutcome::DeadLettered { .. } | DispatchOutcome::LoopRejected { .. } => {
                gate.give_back(&slots.cell, event_id.as_str(), now_ms).await
            }
            // No run id to hear its end from: the slot lapses after its timeout.
            _ => Ok(()),
        };
        if let Err(e) = settled {
            // The dispatch is recorded; the redelivery finds it a duplicate and settles.
            return Err(self.back_off(message, attempt, e).await);
        }
        Ok(())
    }

    /// A throttled message that arrived more than a second before its slot goes back
    /// to the queue as a new message delayed up to the slot (SQS delays at most 15
    /// minutes; a fresh message also keeps the receive count for real failures).
    async fn hold(&self, body: &DispatchMessage) -> Result<Option<DispatchOutcome>, RetryMessage> {
        let Some(until_ms) = body.not_before_ms else {
            return Ok(None);
        };
        let wait_ms = until_ms - self.dispatcher.clock.now_ms();
        if wait_ms < 1_000 {
            return Ok(None);
        }
        let delay_secs = crate::queue::delay_secs(wait_ms);
        let encoded = crate::limits::message_body(
            "dispatch message",
            body,
            crate::limits::MAX_QUEUE_MESSAGE_BYTES,
        )
        .map_err(|e| RetryMessage(e.to_string()))?;
        self.queue
            .send_delayed(&[encoded], delay_secs)
            .await
            .map_err(|e| RetryMessage(e.to_string()))?;
        tracing::info!(
            workspace_id = %body.workspace_id,
            event_id = %body.event.event_id,
            not_before_ms = until_ms,
            delay_secs,
            "throttled dispatch held until its slot"
        );
        Ok(Some(DispatchOutcome::Held { until_ms }))
    }

    /// A debounced event at its due time runs only if it is still its window's latest;
    /// otherwise its fate is recorded (`debounced`, with the later event) and it is done.
    async fn debounce(
        &self,
        message: &Received<DispatchMessage>,
        attempt: Attempt,
    ) -> Result<Option<DispatchOutcome>, RetryMessage> {
        let body = &message.body;
        let (Some(cell), Some(gate)) = (&body.debounce_cell, &self.flow) else {
            return Ok(None);
        };
        let now_ms = self.dispatcher.clock.now_ms();
        let fire = match gate.fire(cell, &body.event.event_id, now_ms).await {
            Ok(fire) => fire,
            Err(e) => return Err(self.back_off(message, attempt, e).await),
        };
        match fire {
            Fire::Run => Ok(None),
            Fire::Wait { until_ms } => {
                let mut later = body.clone();
                later.not_before_ms = Some(until_ms);
                self.hold(&later).await
            }
            Fire::Debounced { latest } => {
                let detail = match &latest {
                    Some(event) => format!("event {event} came later in the debounce window"),
                    None => "a later event took the debounce window".to_owned(),
                };
                let mut entry = body.unclaimed_entry(
                    LedgerStatus::Debounced,
                    None,
                    Some(detail),
                    0,
                    now_ms,
                    now_ms / 1000 + DEAD_LETTER_RETENTION_SECS,
                );
                entry.superseded_by = latest.clone();
                if let Err(e) = self.dispatcher.ledger.record_unclaimed(&entry).await {
                    return Err(self.back_off(message, attempt, e).await);
                }
                self.dispatcher.audit.measure(
                    crate::metrics::Measurement::one(crate::metrics::MetricName::FlowDecisions)
                        .by("outcome", "debounced")
                        .for_workspace(body.workspace_id.as_str()),
                );
                Ok(Some(DispatchOutcome::Debounced { latest }))
            }
        }
    }

    /// A store or ledger that could not answer: the message comes back after the
    /// attempt's backoff, so such failures spend receives no faster than RPC failures.
    async fn back_off(
        &self,
        message: &Received<DispatchMessage>,
        attempt: Attempt,
        error: impl std::fmt::Display,
    ) -> RetryMessage {
        self.return_after(message, self.dispatcher.retry_delay(attempt))
            .await;
        RetryMessage(error.to_string())
    }

    async fn return_after(&self, message: &Received<DispatchMessage>, delay_secs: u32) {
        if let Err(e) = self
            .queue
            .change_visibility(&message.receipt_handle, delay_secs)
            .await
        {
            // The message still comes back, after the queue's default visibility timeout.
            tracing::warn!(message_id = message.message_id, error = %e, "backoff not applied");
        }
    }
}
