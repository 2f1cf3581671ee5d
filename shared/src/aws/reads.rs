//! The two read shapes the DynamoDB adapters share: a consistent point read, and a
//! query drained across all its pages. Errors come back described, for the caller to
//! wrap in its own error type.

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::Client;

use super::attrs::Item;
use super::describe;

/// Consistent `GetItem` of `key` in `table`.
pub(crate) async fn get_item(
    client: &Client,
    table: &str,
    key: Item,
) -> Result<Option<Item>, String> {
    let output = client
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    Ok(output.item().cloned())
}

/// Every item `query` returns, following `LastEvaluatedKey` to the end.
pub(crate) async fn query_all(query: QueryFluentBuilder) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let output = query
            .clone()
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        items.extend(output.items().iter().cloned());
        start = output.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(items);
        }
    }
}
