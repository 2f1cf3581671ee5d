//! Resume waits in DynamoDB, keyed by resume id, with `expiresAt` as the TTL attribute.
//! The registration is the JSON `doc` (with its `generation` also as an attribute); the
//! delivery state lives in attributes the conditional writes test: `takenEventId`,
//! `takenToken`, `takenUntilMs` while one event holds the wait, `consumedBy` once it
//! resumed the step. Every write is conditioned on the generation.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use aws_sdk_dynamodb::Client;

use super::attrs::{doc, get_n, get_s, n, s, Item};
use super::describe;
use super::documents::{get_item, put_document};
use crate::ids::{EventId, ResumeId};
use crate::resume::{Holder, ResumeStore, ResumeWait, Take, TakeOutcome, TakeRequest};
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct DynamoResumeStore {
    client: Client,
    table: String,
}

impl DynamoResumeStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

impl DynamoResumeStore {
    /// Applies `update` only while `holder` holds this generation (`also` widens the
    /// condition); `false` when it no longer does (a lapsed hold, a newer generation).
    async fn held_update(
        &self,
        id: &ResumeId,
        generation: &str,
        holder: Holder<'_>,
        update: &str,
        also: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (held, value) = match holder {
            Holder::Token(token) => ("takenToken = :holder", token),
            Holder::Event(event) => ("takenEventId = :holder", event.as_str()),
        };
        let condition = match also {
            Some(also) => format!("generation = :gen AND ({held} OR {also})"),
            None => format!("generation = :gen AND {held} AND attribute_not_exists(consumedBy)"),
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("resumeId", s(id.as_str()))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_values(":gen", s(generation))
            .expression_attribute_values(":holder", s(value))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if super::condition_failed(&e) => Ok(false),
            Err(e) => Err(StoreError::Unavailable(describe(&e))),
        }
    }
}

fn decode(item: &Item) -> Result<ResumeWait, StoreError> {
    let mut wait: ResumeWait = doc(item)?;
    if let Some(generation) = get_s(item, "generation") {
        wait.generation = generation.to_owned();
    }
    wait.taken = match (get_s(item, "takenEventId"), get_s(item, "takenToken")) {
        (Some(event), Some(token)) => Some(Take {
            event_id: EventId::new(event).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            token: token.to_owned(),
            until_ms: get_n(item, "takenUntilMs").unwrap_or(0),
        }),
        _ => None,
    };
    wait.consumed_by = get_s(item, "consumedBy").and_then(|e| EventId::new(e).ok());
    Ok(wait)
}

/// The key, TTL and generation stored beside the registration document.
fn attributes(wait: &ResumeWait) -> Item {
    Item::from([
        ("resumeId".to_owned(), s(wait.resume_id.as_str())),
        ("expiresAt".to_owned(), n(wait.expires_at)),
        ("generation".to_owned(), s(wait.generation.as_str())),
    ])
}

/// The item a failed condition handed back (`ALL_OLD`), if any.
fn blocking_item(error: &UpdateItemError) -> Option<Item> {
    match error {
        UpdateItemError::ConditionalCheckFailedException(c) => c.item().cloned(),
        _ => None,
    }
}

#[async_trait]
impl ResumeStore for DynamoResumeStore {
    async fn get(&self, id: &ResumeId) -> Result<Option<ResumeWait>, StoreError> {
        let key = Item::from([("resumeId".to_owned(), s(id.as_str()))]);
        let item = get_item(&self.client, &self.table, key)
            .await
            .map_err(StoreError::Unavailable)?;
        item.as_ref().map(decode).transpose()
    }

    async fn put(&self, wait: &ResumeWait) -> Result<(), StoreError> {
        put_document(&self.client, &self.table, attributes(wait), wait, None).await
    }

    async fn register(
        &self,
        wait: &ResumeWait,
        replacing: Option<&str>,
    ) -> Result<bool, StoreError> {
        // Items of older releases have no generation: they count as generation "". (The
        // first form compares the key with itself only to use `:expected`.)
        let condition = match replacing {
            None => "attribute_not_exists(resumeId) OR resumeId <> :expected",
            Some("") => "attribute_not_exists(generation) OR generation = :expected",
            Some(_) => "generation = :expected",
        };
        let expected = replacing.unwrap_or(wait.resume_id.as_str());
        let written = put_document(
            &self.client,
            &self.table,
            attributes(wait),
            wait,
            Some((condition, s(expected))),
        )
        .await;
        match written {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn take(&self, request: &TakeRequest<'_>) -> Result<TakeOutcome, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("resumeId", s(request.resume_id.as_str()))
            .update_expression(
                "SET takenEventId = :event, takenToken = :token, takenUntilMs = :until",
            )
            .condition_expression(
                "generation = :gen AND expiresAt > :nowS AND attribute_not_exists(consumedBy) \
                 AND (attribute_not_exists(takenToken) OR takenUntilMs <= :nowMs OR takenEventId = :event)",
            )
            .expression_attribute_values(":event", s(request.event_id.as_str()))
            .expression_attribute_values(":token", s(request.token))
            .expression_attribute_values(":until", n(request.until_ms))
            .expression_attribute_values(":gen", s(request.generation))
            .expression_attribute_values(":nowS", n(request.now_ms.div_euclid(1000)))
            .expression_attribute_values(":nowMs", n(request.now_ms))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let error = match result {
            Ok(_) => return Ok(TakeOutcome::Taken),
            Err(e) => e,
        };
        let Some(service) = error
            .as_service_error()
            .filter(|e| super::condition_failed(*e))
        else {
            return Err(StoreError::Unavailable(describe(&error)));
        };
        let old = blocking_item(service).unwrap_or_default();
        let same_generation = get_s(&old, "generation") == Some(request.generation);
        let live = get_n::<i64>(&old, "expiresAt").is_some_and(|e| e > request.now_ms / 1000);
        let winner = get_s(&old, "consumedBy").or_else(|| get_s(&old, "takenEventId"));
        Ok(match winner.and_then(|w| EventId::new(w).ok()) {
            Some(winner) if same_generation && live => TakeOutcome::Superseded { winner },
            _ => TakeOutcome::Gone,
        })
    }

    async fn consume(
        &self,
        id: &ResumeId,
        generation: &str,
        holder: Holder<'_>,
    ) -> Result<bool, StoreError> {
        // For an event, a second consume (a redelivery finishing it) succeeds too.
        let also = matches!(holder, Holder::Event(_)).then_some("consumedBy = :holder");
        self.held_update(
            id,
            generation,
            holder,
            "SET consumedBy = takenEventId REMOVE takenToken, takenUntilMs",
            also,
        )
        .await
    }

    async fn release(
        &self,
        id: &ResumeId,
        generation: &str,
        holder: Holder<'_>,
    ) -> Result<(), StoreError> {
        self.held_update(
            id,
            generation,
            holder,
            "REMOVE takenEventId, takenToken, takenUntilMs",
            None,
        )
        .await
        .map(|_| ())
    }

    async fn delete(&self, id: &ResumeId, generation: Option<&str>) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("resumeId", s(id.as_str()));
        request = match generation {
            Some(generation) => request
                .condition_expression("generation = :gen")
                .expression_attribute_values(":gen", s(generation)),
            None => request.condition_expression("attribute_exists(resumeId)"),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(StoreError::Unavailable(describe(&e))),
        }
    }
}
