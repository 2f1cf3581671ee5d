//! The item shapes the DynamoDB adapters share: each stored value is a JSON `doc`
//! attribute beside the key and index attributes its queries need; reads are consistent
//! point reads or queries drained across all their pages.

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::attrs::{s, Item};
use super::describe;
use crate::store::StoreError;

/// Writes `value` as the `doc` of an item made of `attributes` (keys and index fields),
/// optionally only when `condition` (with its `:expected` value) holds.
pub(crate) async fn put_document<T: serde::Serialize>(
    client: &Client,
    table: &str,
    mut attributes: Item,
    value: &T,
    condition: Option<(&str, AttributeValue)>,
) -> Result<(), StoreError> {
    let document = serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    attributes.insert("doc".to_owned(), s(document));
    let mut request = client
        .put_item()
        .table_name(table)
        .set_item(Some(attributes));
    if let Some((expression, expected)) = condition {
        request = request
            .condition_expression(expression)
            .expression_attribute_values(":expected", expected);
    }
    match request.send().await {
        Ok(_) => Ok(()),
        Err(e) if super::condition_failed(&e) => {
            Err(StoreError::Conflict(format!("{table}: condition failed")))
        }
        Err(e) => Err(StoreError::Unavailable(describe(&e))),
    }
}

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
    query_each(
        query,
        |e| e,
        |item| {
            items.push(item.clone());
            Ok(())
        },
    )
    .await?;
    Ok(items)
}

/// Runs `visit` on every item of every page of `query`, holding one page (≤ 1 MB) at a
/// time: a reader that keeps less than whole items (a decoded document) never holds
/// all the raw items at once.
pub(crate) async fn query_each<E>(
    query: QueryFluentBuilder,
    unavailable: impl Fn(String) -> E,
    mut visit: impl FnMut(&Item) -> Result<(), E>,
) -> Result<(), E> {
    let mut start = None;
    loop {
        let output = query
            .clone()
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| unavailable(describe(&e)))?;
        output.items().iter().try_for_each(&mut visit)?;
        start = output.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(());
        }
    }
}

/// One page of a newest-first listing: pages through `request` from `start` until
/// `limit` items passed `keep` (or the end), and says whether more may follow.
pub async fn query_until<T, E>(
    request: QueryFluentBuilder,
    mut start: Option<Item>,
    limit: usize,
    unavailable: impl Fn(String) -> E,
    mut keep: impl FnMut(&Item) -> Result<Option<T>, E>,
) -> Result<(Vec<T>, bool), E> {
    let mut items = Vec::new();
    loop {
        let output = request
            .clone()
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| unavailable(describe(&e)))?;
        for item in output.items() {
            items.extend(keep(item)?);
        }
        start = output.last_evaluated_key().cloned();
        if items.len() >= limit || start.is_none() {
            let more = items.len() > limit || start.is_some();
            items.truncate(limit);
            return Ok((items, more));
        }
    }
}

/// `request` (a Query on an index whose sort keys come from [`crate::listing`]) for one
/// partition, newest first, within a time window, keeping only items whose attributes
/// equal the given values (a `FilterExpression` over the window, not a scan).
pub fn newest_first(
    request: QueryFluentBuilder,
    partition: (&str, &str),
    sort_attribute: &str,
    (since_ms, until_ms): (Option<i64>, Option<i64>),
    equal: &[(&str, Option<&str>)],
) -> QueryFluentBuilder {
    let (lo, hi) = crate::listing::range(since_ms, until_ms);
    let mut request = request
        .scan_index_forward(false)
        .key_condition_expression(format!(
            "{} = :partition AND {sort_attribute} BETWEEN :lo AND :hi",
            partition.0
        ))
        .expression_attribute_values(":partition", s(partition.1))
        .expression_attribute_values(":lo", s(lo))
        .expression_attribute_values(":hi", s(hi));
    let mut filters = Vec::new();
    for (attribute, value) in equal {
        if let Some(value) = value {
            filters.push(format!("{attribute} = :{attribute}"));
            request = request.expression_attribute_values(format!(":{attribute}"), s(*value));
        }
    }
    if filters.is_empty() {
        request
    } else {
        request.filter_expression(filters.join(" AND "))
    }
}
