//! The event archive on DynamoDB. Items are keyed by `eventKey` = `{workspaceId}#{eventId}`
//! (one partition key per event, so a busy workspace never concentrates its writes on
//! one key, and a read can only reach its own workspace's events); the envelope is a
//! JSON `doc`, the fate `fateReason` / `fateDetail` / `fateAtMs`, TTL `expiresAt`.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::KeysAndAttributes;
use aws_sdk_dynamodb::Client;

use super::attrs::{doc, get_n, get_s, n, s, Item};
use super::describe;
use super::documents::{get_item, newest_first, query_until};
use super::tables::ARCHIVE_BY_WORKSPACE;
use crate::archive::{
    listing_key, parse_cursor, ArchivedEvent, EventArchive, EventFate, EventPage, EventQuery,
};
use crate::dedup::DeadLetterReason;
use crate::event::{NormalizedEvent, SourceType};
use crate::ids::{EventId, WorkspaceId};
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct DynamoEventArchive {
    client: Client,
    table: String,
}

fn event_key(workspace: &WorkspaceId, event_id: &EventId) -> String {
    format!("{workspace}#{event_id}")
}

impl DynamoEventArchive {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn decode(item: &Item) -> Result<ArchivedEvent, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("archive item lacks {what}"));
    let workspace_id = get_s(item, "workspaceId")
        .and_then(|w| WorkspaceId::new(w).ok())
        .ok_or_else(|| corrupt("workspaceId"))?;
    let event_id = get_s(item, "eventId")
        .and_then(|e| EventId::new(e).ok())
        .ok_or_else(|| corrupt("eventId"))?;
    let event: Option<NormalizedEvent> = match item.contains_key("doc") {
        true => Some(doc(item)?),
        false => None,
    };
    let fate = get_s(item, "fateReason")
        .and_then(DeadLetterReason::parse)
        .map(|reason| EventFate {
            reason,
            detail: get_s(item, "fateDetail").unwrap_or_default().to_owned(),
            at_ms: get_n(item, "fateAtMs").unwrap_or(0),
        });
    Ok(ArchivedEvent {
        workspace_id,
        event_id,
        event,
        received_at_ms: get_n(item, "receivedAtMs").unwrap_or(0),
        fate,
    })
}

#[async_trait]
impl EventArchive for DynamoEventArchive {
    async fn put_new(
        &self,
        workspace: &WorkspaceId,
        event: &NormalizedEvent,
        received_at_ms: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let document =
            serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let item = Item::from([
            (
                "eventKey".to_owned(),
                s(event_key(workspace, &event.event_id)),
            ),
            ("workspaceId".to_owned(), s(workspace.as_str())),
            ("eventId".to_owned(), s(event.event_id.as_str())),
            ("kind".to_owned(), s(event.kind.as_str())),
            (
                "sourceType".to_owned(),
                s(event.source.source_type.as_str()),
            ),
            (
                "receivedKey".to_owned(),
                s(listing_key(received_at_ms, &event.event_id)),
            ),
            ("receivedAtMs".to_owned(), n(received_at_ms)),
            ("expiresAt".to_owned(), n(expires_at)),
            ("doc".to_owned(), s(document)),
        ]);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(eventKey)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if super::condition_failed(&e) => Ok(false),
            Err(e) => Err(StoreError::Unavailable(describe(&e))),
        }
    }

    async fn record_fate(
        &self,
        workspace: &WorkspaceId,
        event_id: &EventId,
        fate: &EventFate,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("eventKey", s(event_key(workspace, event_id)))
            .update_expression(
                "SET workspaceId = :ws, eventId = :event, fateReason = :reason, fateDetail = :detail, \
                 fateAtMs = :at, receivedAtMs = if_not_exists(receivedAtMs, :at), \
                 receivedKey = if_not_exists(receivedKey, :rk), \
                 expiresAt = if_not_exists(expiresAt, :expires)",
            )
            .expression_attribute_values(":ws", s(workspace.as_str()))
            .expression_attribute_values(":event", s(event_id.as_str()))
            .expression_attribute_values(":reason", s(fate.reason.as_str()))
            .expression_attribute_values(":detail", s(fate.detail.as_str()))
            .expression_attribute_values(":at", n(fate.at_ms))
            .expression_attribute_values(":rk", s(listing_key(fate.at_ms, event_id)))
            .expression_attribute_values(":expires", n(expires_at))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(describe(&e)))?;
        Ok(())
    }

    async fn get(
        &self,
        workspace: &WorkspaceId,
        event_id: &EventId,
    ) -> Result<Option<ArchivedEvent>, StoreError> {
        let key = Item::from([("eventKey".to_owned(), s(event_key(workspace, event_id)))]);
        let item = get_item(&self.client, &self.table, key)
            .await
            .map_err(StoreError::Unavailable)?;
        item.as_ref().map(decode).transpose()
    }

    /// `BatchGetItem`, 100 keys a call (consistent reads), unprocessed keys retried.
    async fn get_many(
        &self,
        workspace: &WorkspaceId,
        event_ids: &[EventId],
    ) -> Result<Vec<ArchivedEvent>, StoreError> {
        let mut found = Vec::with_capacity(event_ids.len());
        for chunk in event_ids.chunks(100) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|id| Item::from([("eventKey".to_owned(), s(event_key(workspace, id)))]))
                .collect();
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?,
            );
            for attempt in 0..5u32 {
                let Some(request) = pending.take() else {
                    break;
                };
                // Unprocessed keys mean throttling: back off before asking again.
                crate::backoff::contention_pause(attempt, 50).await;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| StoreError::Unavailable(describe(&e)))?;
                if let Some(items) = output.responses().and_then(|r| r.get(&self.table)) {
                    for item in items {
                        found.push(decode(item)?);
                    }
                }
                pending = output
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .cloned();
            }
            if pending.is_some() {
                return Err(StoreError::Unavailable(
                    "the event archive left keys unread five times".into(),
                ));
            }
        }
        Ok(found)
    }

    async fn list(
        &self,
        workspace: &WorkspaceId,
        query: &EventQuery,
    ) -> Result<EventPage, StoreError> {
        let request = newest_first(
            self.client
                .query()
                .table_name(&self.table)
                .index_name(ARCHIVE_BY_WORKSPACE),
            ("workspaceId", workspace.as_str()),
            "receivedKey",
            (query.since_ms, query.until_ms),
            &[
                ("kind", query.kind.as_deref()),
                ("sourceType", query.source_type.map(SourceType::as_str)),
            ],
        );
        let cursor =
            match crate::listing::start(query.cursor.as_deref(), query.since_ms, query.until_ms) {
                crate::listing::Start::Nothing => return Ok(EventPage::default()),
                crate::listing::Start::Top => None,
                crate::listing::Start::After(c) => Some(c),
            };
        let start = cursor
            .and_then(|c| parse_cursor(c).map(|id| (c, id)))
            .map(|(cursor, id)| {
                Item::from([
                    ("workspaceId".to_owned(), s(workspace.as_str())),
                    ("receivedKey".to_owned(), s(cursor)),
                    ("eventKey".to_owned(), s(event_key(workspace, &id))),
                ])
            });
        let (items, more) = query_until(
            request,
            start,
            query.limit,
            StoreError::Unavailable,
            |item| {
                let archived = decode(item)?;
                // The index is eventually consistent: re-check what it claims.
                let wanted = &archived.workspace_id == workspace && query.admits(&archived);
                Ok(wanted.then_some(archived))
            },
        )
        .await?;
        let next_cursor = more
            .then(|| {
                items
                    .last()
                    .map(|a| listing_key(a.received_at_ms, &a.event_id))
            })
            .flatten();
        Ok(EventPage { items, next_cursor })
    }
}
