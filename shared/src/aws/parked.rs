//! Parked events in DynamoDB: partition `parkKey` = `{workspaceId}#{resumeId}` (one key
//! per workspace and triple, so parking is per workspace by construction), sort key
//! `eventId` (a redelivered event parks once), the event as `doc`, `parkedAtMs`,
//! `untilMs`, and `expiresAt` (TTL, seconds) a little after the window.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::Select;
use aws_sdk_dynamodb::Client;

use super::attrs::{doc, get_n, n, s, Item};
use super::describe;
use super::documents::{put_document, query_all};
use crate::event::NormalizedEvent;
use crate::ids::{EventId, ResumeId, WorkspaceId};
use crate::resume::{ParkOutcome, ParkStore, ParkedEvent, MAX_PARKED_PER_WAIT};
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct DynamoParkStore {
    client: Client,
    table: String,
}

impl DynamoParkStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

impl DynamoParkStore {
    /// The triple's rows still within their window, over every page (expired rows
    /// linger until TTL deletion, up to two days late, and must not fill the cap).
    async fn live_count(&self, key: &str, now_ms: i64) -> Result<usize, StoreError> {
        let mut total = 0usize;
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("parkKey = :pk")
                .filter_expression("untilMs > :now")
                .expression_attribute_values(":pk", s(key))
                .expression_attribute_values(":now", n(now_ms))
                .select(Select::Count)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(describe(&e)))?;
            total += usize::try_from(page.count()).unwrap_or(usize::MAX);
            start = page.last_evaluated_key().cloned();
            if start.is_none() || total >= MAX_PARKED_PER_WAIT {
                return Ok(total);
            }
        }
    }
}

fn park_key(workspace: &WorkspaceId, resume_id: &ResumeId) -> String {
    format!("{workspace}#{resume_id}")
}

#[async_trait]
impl ParkStore for DynamoParkStore {
    async fn park(
        &self,
        workspace: &WorkspaceId,
        resume_id: &ResumeId,
        parked: &ParkedEvent,
    ) -> Result<ParkOutcome, StoreError> {
        let key = park_key(workspace, resume_id);
        let now_ms = parked.parked_at_ms;
        if self.live_count(&key, now_ms).await? >= MAX_PARKED_PER_WAIT {
            return Ok(ParkOutcome::Full);
        }
        let attributes = Item::from([
            ("parkKey".to_owned(), s(key)),
            ("eventId".to_owned(), s(parked.event.event_id.as_str())),
            ("parkedAtMs".to_owned(), n(parked.parked_at_ms)),
            ("untilMs".to_owned(), n(parked.until_ms)),
            ("expiresAt".to_owned(), n(parked.until_ms / 1000 + 60)),
        ]);
        let written = put_document(
            &self.client,
            &self.table,
            attributes,
            &parked.event,
            // An expired row (TTL deletion may come days late) is replaced.
            Some((
                "attribute_not_exists(eventId) OR untilMs <= :expected",
                n(now_ms),
            )),
        )
        .await;
        match written {
            Ok(()) => Ok(ParkOutcome::Parked),
            Err(StoreError::Conflict(_)) => Ok(ParkOutcome::AlreadyParked),
            Err(e) => Err(e),
        }
    }

    async fn parked(
        &self,
        workspace: &WorkspaceId,
        resume_id: &ResumeId,
        now_ms: i64,
    ) -> Result<Vec<ParkedEvent>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("parkKey = :pk")
            .expression_attribute_values(":pk", s(park_key(workspace, resume_id)))
            .consistent_read(true);
        let mut found = Vec::new();
        for item in query_all(query).await.map_err(StoreError::Unavailable)? {
            let until_ms: i64 = get_n(&item, "untilMs").unwrap_or(0);
            if until_ms <= now_ms {
                continue;
            }
            let event: NormalizedEvent = doc(&item)?;
            found.push(ParkedEvent {
                event,
                parked_at_ms: get_n(&item, "parkedAtMs").unwrap_or(0),
                until_ms,
            });
        }
        found.sort_by_key(|p| p.parked_at_ms);
        Ok(found)
    }

    async fn remove(
        &self,
        workspace: &WorkspaceId,
        resume_id: &ResumeId,
        event_id: &EventId,
    ) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("parkKey", s(park_key(workspace, resume_id)))
            .key("eventId", s(event_id.as_str()))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(describe(&e)))?;
        Ok(())
    }
}
