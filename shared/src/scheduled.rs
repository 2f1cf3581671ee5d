//! Scheduled subscriptions: the `cron.tick` event of one (subscription, scheduled
//! instant), whose id is derived from both so every duplicate tick dedups to one run,
//! when a subscription first fires, and the port of the due index the scheduler reads.

use std::collections::BTreeMap;

use serde_json::{json, Map};

use crate::event::{
    EventKind, EventSource, NormalizedEvent, OccurredAt, QueuedEvent, RawPayload, SchemaVersion,
    SourceType,
};
use crate::instant::rfc3339;
use crate::normalize::derive_event_id;
use crate::schedule::Schedule;
use crate::subscription::Subscription;

/// The `cron.tick` of `subscription` for the instant `scheduled_ms`, emitted at
/// `actual_ms`. Its id depends on the subscription and the instant only.
pub fn tick(subscription: &Subscription, scheduled_ms: i64, actual_ms: i64) -> Option<QueuedEvent> {
    let scheduled = rfc3339(scheduled_ms);
    let zone = subscription
        .schedule
        .as_ref()
        .and_then(|s| s.timezone.clone())
        .unwrap_or_else(|| "UTC".to_owned());
    let id = subscription.subscription_id.as_str();
    let mut data = Map::new();
    data.insert("scheduledTime".into(), json!(scheduled));
    data.insert("actualTime".into(), json!(rfc3339(actual_ms)));
    data.insert("subscriptionId".into(), json!(id));
    data.insert("timezone".into(), json!(zone));
    let event = NormalizedEvent {
        schema_version: SchemaVersion::V1,
        event_id: derive_event_id(&[
            "cron.tick",
            subscription.workspace_id.as_str(),
            id,
            &scheduled,
        ]),
        source: EventSource {
            source_type: SourceType::Scheduled,
            connector_instance_id: None,
            subscription_id: Some(id.to_owned()),
            vendor: Some("cron".to_owned()),
            occurred_at: OccurredAt::new(&scheduled)?,
        },
        kind: EventKind::new("cron.tick").ok()?,
        subject: id.to_owned(),
        data,
        raw: RawPayload {
            headers: BTreeMap::new(),
            body: String::new(),
        },
        depth: 0,
    };
    Some(QueuedEvent {
        workspace_id: subscription.workspace_id.clone(),
        event,
        replay: false,
        trace: Some(crate::trace::TraceParent::generate()),
        received_ms: Some(actual_ms),
    })
}

/// The first instant an active scheduled subscription fires at after its last write
/// (creation, a change, a resume: nothing before it is back-filled), if any.
pub fn first_fire_ms(subscription: &Subscription) -> Option<i64> {
    let spec = subscription.schedule.as_ref()?;
    if !subscription.is_matchable() || subscription.source_type != SourceType::Scheduled {
        return None;
    }
    Schedule::compile(spec)
        .ok()?
        .next_after(subscription.updated_at_ms)
}

/// A scheduled subscription whose next fire instant has come.
#[derive(Debug, Clone, PartialEq)]
pub struct DueSubscription {
    pub subscription: Subscription,
    pub next_fire_ms: i64,
}

/// The due index of scheduled subscriptions.
#[async_trait::async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Active scheduled subscriptions of `shard` whose next fire instant is at or before
    /// `now_ms`, oldest first, at most `limit`.
    async fn due(
        &self,
        shard: u32,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueSubscription>, crate::store::StoreError>;

    /// Moves the next fire instant from `from_ms` to `to_ms` (`i64::MAX`: never again),
    /// unless a concurrent run already did (`false`).
    async fn advance(
        &self,
        subscription: &Subscription,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<bool, crate::store::StoreError>;
}
