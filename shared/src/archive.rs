//! The event archive: one record per normalized event, written once at the door that
//! accepted it (manual fire, webhook, lifecycle ingest) with a conditional put, so a
//! redelivery writes nothing new. It is what tells "never seen" (404) from "seen, and
//! here is what happened", and where an event's own fate is recorded when it never got
//! as far as a match (too large to carry, or dead-lettered before matching).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::dedup::DeadLetterReason;
use crate::event::{NormalizedEvent, SourceType};
use crate::ids::{EventId, WorkspaceId};
use crate::store::StoreError;

/// Why an event as a whole ended before (or instead of) being matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFate {
    pub reason: DeadLetterReason,
    /// Safe to show the tenant.
    pub detail: String,
    pub at_ms: i64,
}

/// One archived event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedEvent {
    pub workspace_id: WorkspaceId,
    pub event_id: EventId,
    /// Absent when only the fate of an event could be kept (it was too large).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<NormalizedEvent>,
    pub received_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fate: Option<EventFate>,
}

#[async_trait]
pub trait EventArchive: Send + Sync {
    /// Stores the event unless it is already archived; returns whether it was new.
    async fn put_new(
        &self,
        workspace: &WorkspaceId,
        event: &NormalizedEvent,
        received_at_ms: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError>;

    /// Records the event's fate, creating a bare record when the event was never archived.
    async fn record_fate(
        &self,
        workspace: &WorkspaceId,
        event_id: &EventId,
        fate: &EventFate,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    async fn get(
        &self,
        workspace: &WorkspaceId,
        event_id: &EventId,
    ) -> Result<Option<ArchivedEvent>, StoreError>;

    /// Several archived events at once (those found, in any order).
    async fn get_many(
        &self,
        workspace: &WorkspaceId,
        event_ids: &[EventId],
    ) -> Result<Vec<ArchivedEvent>, StoreError> {
        let mut found = Vec::with_capacity(event_ids.len());
        for event_id in event_ids {
            found.extend(self.get(workspace, event_id).await?);
        }
        Ok(found)
    }

    /// A workspace's events, newest first (by the time they were received).
    async fn list(
        &self,
        workspace: &WorkspaceId,
        query: &EventQuery,
    ) -> Result<EventPage, StoreError>;
}

/// Which archived events to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Epoch ms, inclusive.
    pub since_ms: Option<i64>,
    /// Epoch ms, exclusive.
    pub until_ms: Option<i64>,
    pub kind: Option<String>,
    pub source_type: Option<SourceType>,
    pub limit: usize,
    pub cursor: Option<String>,
}

impl EventQuery {
    pub fn admits(&self, archived: &ArchivedEvent) -> bool {
        let event = archived.event.as_ref();
        self.kind
            .as_deref()
            .is_none_or(|k| event.is_some_and(|e| e.kind.as_str() == k))
            && self
                .source_type
                .is_none_or(|t| event.is_some_and(|e| e.source.source_type == t))
            && self.since_ms.is_none_or(|s| archived.received_at_ms >= s)
            && self.until_ms.is_none_or(|u| archived.received_at_ms < u)
    }
}

/// A page of a workspace's archived events.
pub type EventPage = crate::listing::Page<ArchivedEvent>;

/// An event's key in its workspace's listing: received-at, then id; also the cursor.
pub fn listing_key(received_at_ms: i64, event_id: &EventId) -> String {
    crate::listing::key(received_at_ms, event_id.as_str())
}

/// The event a cursor continues after, when it is one this service handed out.
pub fn parse_cursor(cursor: &str) -> Option<EventId> {
    crate::listing::cursor_id(cursor).and_then(|id| EventId::new(id).ok())
}

/// Where archive records live and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub ttl_secs: i64,
}

impl Retention {
    pub fn expires_at(self, now_ms: i64) -> i64 {
        now_ms.div_euclid(1000).saturating_add(self.ttl_secs)
    }
}

/// Records that an event was dead-lettered at `now_ms` with `reason` (its fate, kept
/// for `retention`), whether or not the event itself was archived.
pub async fn record_dead_letter(
    archive: &dyn EventArchive,
    retention: Retention,
    workspace: &WorkspaceId,
    event_id: &EventId,
    reason: DeadLetterReason,
    detail: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let fate = EventFate {
        reason,
        detail: detail.to_owned(),
        at_ms: now_ms,
    };
    archive
        .record_fate(workspace, event_id, &fate, retention.expires_at(now_ms))
        .await
}
