//! The scheduler stage: once a minute, every scheduled subscription whose next fire
//! instant has come gets one `cron.tick` per due instant (its catch-up policy decides
//! which) on the normalized queue, then its next instant is moved on. Ticks go out before
//! the move, and their ids depend only on (subscription, instant), so a crash, a retried
//! or a doubled run re-emits the same ticks and the dedup ledger starts each run once.

use std::sync::Arc;

use thiserror::Error;

use crate::schedule::{self, Schedule, SHARDS};
use crate::scheduled::{DueSubscription, ScheduleStore};
use crate::stage::ingest::{AcceptError, IngestStage, Oversize};
use crate::store::StoreError;

/// Due subscriptions read per shard and run (the rest wait for the next minute).
pub const DUE_PER_SHARD: usize = 500;
/// Subscriptions whose ticks are emitted at once.
pub const FIRE_CONCURRENCY: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Accept(#[from] AcceptError),
}

/// What one run did (also the invocation's answer).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchedulerReport {
    /// Subscriptions that were due.
    pub due: usize,
    /// Ticks put on the normalized queue.
    pub ticks: usize,
    /// Next instants this run moved on (another run may have moved the rest).
    pub advanced: usize,
}

pub struct SchedulerStage {
    pub schedules: Arc<dyn ScheduleStore>,
    /// Archives and enqueues each tick like any other door's event.
    pub ingest: IngestStage,
}

impl SchedulerStage {
    /// One run with `now_ms` as the time (the scheduled event's `time`, so tests and
    /// replays decide what is due).
    pub async fn run(&self, now_ms: i64) -> Result<SchedulerReport, SchedulerError> {
        use futures::stream::{self, StreamExt, TryStreamExt};
        let mut due = Vec::new();
        for shard in 0..SHARDS {
            due.extend(self.schedules.due(shard, now_ms, DUE_PER_SHARD).await?);
        }
        let mut report = SchedulerReport {
            due: due.len(),
            ..SchedulerReport::default()
        };
        // Subscriptions are independent: their ticks go out side by side, so a busy
        // minute fits the function's timeout.
        let fired: Vec<(usize, bool)> = stream::iter(due.iter())
            .map(|due| self.fire(due, now_ms))
            .buffer_unordered(FIRE_CONCURRENCY)
            .try_collect()
            .await?;
        for (ticks, advanced) in fired {
            report.ticks += ticks;
            report.advanced += usize::from(advanced);
        }
        Ok(report)
    }

    async fn fire(
        &self,
        due: &DueSubscription,
        now_ms: i64,
    ) -> Result<(usize, bool), SchedulerError> {
        let subscription = &due.subscription;
        let compiled = subscription
            .schedule
            .as_ref()
            .map(|spec| (Schedule::compile(spec), spec.catch_up));
        let (schedule, catch_up) = match compiled {
            Some((Ok(schedule), catch_up)) => (schedule, catch_up),
            // Validated when written; one that no longer compiles stops, visibly.
            _ => {
                tracing::error!(
                    workspace_id = %subscription.workspace_id,
                    subscription_id = %subscription.subscription_id,
                    "scheduled subscription without a usable schedule; it stops firing"
                );
                let advanced = self
                    .schedules
                    .advance(subscription, due.next_fire_ms, i64::MAX)
                    .await?;
                return Ok((0, advanced));
            }
        };
        let plan = schedule.due(due.next_fire_ms, now_ms, catch_up);
        if plan.truncated {
            tracing::warn!(
                workspace_id = %subscription.workspace_id,
                subscription_id = %subscription.subscription_id,
                limit = schedule::MAX_CATCH_UP_TICKS,
                "more instants were missed than catch-up emits; the oldest are skipped"
            );
        }
        for instant in &plan.fire {
            let Some(tick) = crate::scheduled::tick(subscription, *instant, now_ms) else {
                continue;
            };
            self.ingest.accept(&tick, Oversize::RecordFate).await?;
            tracing::info!(
                workspace_id = %subscription.workspace_id,
                subscription_id = %subscription.subscription_id,
                event_id = %tick.event.event_id,
                scheduled_time = %crate::instant::rfc3339(*instant),
                "schedule tick emitted"
            );
        }
        let advanced = self
            .schedules
            .advance(subscription, due.next_fire_ms, plan.next_fire_ms)
            .await?;
        Ok((plan.fire.len(), advanced))
    }
}

#[cfg(test)]
mod tests;
