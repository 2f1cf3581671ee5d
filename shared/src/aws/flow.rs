//! Flow cells in DynamoDB: partition key `cellId` (`{workspace}#{subscription}#{mode}#
//! {key hash}`), `valueMs`, `owner`, `sinceMs`, `holders` (map), `waiting` (list), `link`, `version` and `expiresAt` (TTL, seconds). Every
//! write is conditional on the version read, so concurrent match instances share one
//! count per bucket.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;

use super::attrs::{get_n, get_s, n, s, Item};
use super::documents::get_item;
use super::{condition_failed, describe};
use crate::flow::{CellWrite, FlowCell, FlowStore};
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct DynamoFlowStore {
    client: Client,
    table: String,
}

impl DynamoFlowStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl FlowStore for DynamoFlowStore {
    async fn load(&self, cell_id: &str) -> Result<Option<FlowCell>, StoreError> {
        let key = Item::from([("cellId".to_owned(), s(cell_id))]);
        let item = get_item(&self.client, &self.table, key)
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(item.map(|item| FlowCell {
            value_ms: get_n(&item, "valueMs").unwrap_or(0),
            owner: get_s(&item, "owner").map(str::to_owned),
            since_ms: get_n(&item, "sinceMs").unwrap_or(0),
            holders: item
                .get("holders")
                .and_then(|h| h.as_m().ok())
                .map(|holders| {
                    holders
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_n().ok()?.parse().ok()?)))
                        .collect()
                })
                .unwrap_or_default(),
            waiting: item
                .get("waiting")
                .and_then(|w| w.as_l().ok())
                .map(|waiting| {
                    waiting
                        .iter()
                        .filter_map(|v| v.as_s().ok().cloned())
                        .collect()
                })
                .unwrap_or_default(),
            link: get_s(&item, "link").map(str::to_owned),
            version: get_n(&item, "version").unwrap_or(0),
        }))
    }

    async fn swap(
        &self,
        cell_id: &str,
        cell: &FlowCell,
        expected: Option<u64>,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let (condition, values) = condition(expected);
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item(cell_id, cell, expires_at)))
            .condition_expression(condition)
            .set_expression_attribute_values(values);
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(StoreError::Unavailable(describe(&e))),
        }
    }

    async fn swap_pair(
        &self,
        first: CellWrite<'_>,
        second: CellWrite<'_>,
    ) -> Result<bool, StoreError> {
        let puts = [first, second].map(|write| {
            let (condition, values) = condition(write.expected);
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item(write.cell_id, write.cell, write.expires_at)))
                .condition_expression(condition)
                .set_expression_attribute_values(values)
                .build()
                .map(|put| TransactWriteItem::builder().put(put).build())
                .map_err(|e| StoreError::Unavailable(e.to_string()))
        });
        let [a, b] = puts;
        let request = self
            .client
            .transact_write_items()
            .transact_items(a?)
            .transact_items(b?);
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if lost_race(&e) => Ok(false),
            Err(e) => Err(StoreError::Unavailable(describe(&e))),
        }
    }
}

/// A transaction cancelled only because a condition was not met or another transaction
/// touched the same cells: the caller re-reads. Cancelled for throttling, validation or
/// size, it is the store failing, and re-reading at once would only repeat it.
fn lost_race(error: &SdkError<TransactWriteItemsError>) -> bool {
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
        error.as_service_error()
    else {
        return false;
    };
    cancelled.cancellation_reasons().iter().all(|reason| {
        matches!(
            reason.code(),
            None | Some("None" | "ConditionalCheckFailed" | "TransactionConflict")
        )
    })
}

/// Only over the version read, or (`None`) only where there is no cell yet.
fn condition(expected: Option<u64>) -> (&'static str, Option<HashMap<String, AttributeValue>>) {
    match expected {
        None => ("attribute_not_exists(cellId)", None),
        Some(version) => (
            "version = :expected",
            Some(HashMap::from([(":expected".to_owned(), n(version))])),
        ),
    }
}

fn item(cell_id: &str, cell: &FlowCell, expires_at: i64) -> Item {
    let mut item = Item::from([
        ("cellId".to_owned(), s(cell_id)),
        ("valueMs".to_owned(), n(cell.value_ms)),
        ("version".to_owned(), n(cell.version)),
        ("sinceMs".to_owned(), n(cell.since_ms)),
        ("expiresAt".to_owned(), n(expires_at)),
    ]);
    if let Some(owner) = &cell.owner {
        item.insert("owner".to_owned(), s(owner));
    }
    if let Some(link) = &cell.link {
        item.insert("link".to_owned(), s(link));
    }
    if !cell.holders.is_empty() {
        let holders = cell
            .holders
            .iter()
            .map(|(k, until)| (k.clone(), n(until)))
            .collect();
        item.insert("holders".to_owned(), AttributeValue::M(holders));
    }
    if !cell.waiting.is_empty() {
        let waiting = cell.waiting.iter().map(s).collect();
        item.insert("waiting".to_owned(), AttributeValue::L(waiting));
    }
    item
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::config::http::HttpResponse;
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use aws_sdk_dynamodb::types::CancellationReason;

    use super::*;

    fn cancelled(codes: &[&str]) -> SdkError<TransactWriteItemsError> {
        let reasons = codes
            .iter()
            .map(|code| CancellationReason::builder().code(*code).build())
            .collect();
        let error = TransactionCanceledException::builder()
            .set_cancellation_reasons(Some(reasons))
            .build();
        SdkError::service_error(
            TransactWriteItemsError::TransactionCanceledException(error),
            HttpResponse::new(400u16.try_into().unwrap(), "".into()),
        )
    }

    /// Only a lost race re-reads; a cancellation for throttling is the store failing
    /// (before, every cancellation re-read at once, and repeated the throttled call).
    #[test]
    fn only_conditions_and_conflicts_are_lost_races() {
        assert!(lost_race(&cancelled(&["None", "ConditionalCheckFailed"])));
        assert!(lost_race(&cancelled(&["TransactionConflict", "None"])));
        assert!(!lost_race(&cancelled(&["ThrottlingError", "None"])));
        assert!(!lost_race(&cancelled(&[
            "ConditionalCheckFailed",
            "ValidationError"
        ])));
    }
}
