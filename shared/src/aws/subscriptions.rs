//! Subscriptions in DynamoDB: the subscription document plus the key attributes its
//! queries need. Every operation is keyed by workspace, so one tenant can never read
//! another's subscriptions.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use super::attrs::{doc, n, require_s, s, Item};
use super::describe;
use super::documents::{get_item, put_document, query_each};
use super::tables::{
    SUBSCRIPTIONS_BY_DUE, SUBSCRIPTIONS_BY_ROUTE, SUBSCRIPTIONS_BY_SOURCE, SUBSCRIPTIONS_BY_STATE,
};
use crate::event::SourceType;
use crate::ids::{SubscriptionId, WorkspaceId};
use crate::store::StoreError;
use crate::subscription::{
    ListQuery, Page, Route, Subscription, SubscriptionReader, SubscriptionState, SubscriptionStore,
};

#[derive(Debug, Clone)]
pub struct DynamoSubscriptionStore {
    client: Client,
    table: String,
}

impl DynamoSubscriptionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// The upgrade step for items stored before the listing and schedule indexes
    /// existed: rewrites every item lacking `stateKey` or `sourceKey` with all of its
    /// derived attributes, so filtered listings (and the scheduler) see it. Idempotent;
    /// each rewrite is conditional on the document being unchanged since the scan read
    /// it, so a concurrent writer always wins (it writes the attributes itself).
    pub async fn backfill_index_keys(&self) -> Result<Backfill, StoreError> {
        let mut report = Backfill::default();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(
                    "attribute_not_exists(stateKey) OR attribute_not_exists(sourceKey)",
                )
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable(&e))?;
            report.scanned += usize::try_from(page.scanned_count()).unwrap_or(0);
            for item in page.items() {
                let written = require_s(item, "doc")?.to_owned();
                let subscription: Subscription = doc(item)?;
                let unchanged = ("doc = :expected", s(written));
                match put_document(
                    &self.client,
                    &self.table,
                    attributes(&subscription),
                    &subscription,
                    Some(unchanged),
                )
                .await
                {
                    Ok(()) => report.rewritten += 1,
                    Err(StoreError::Conflict(_)) => report.changed_meanwhile += 1,
                    Err(other) => return Err(other),
                }
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(report);
            }
        }
    }
}

/// What [`DynamoSubscriptionStore::backfill_index_keys`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backfill {
    /// Items the scan read (the whole table).
    pub scanned: usize,
    /// Items rewritten with their index attributes.
    pub rewritten: usize,
    /// Items a writer changed between the scan and the rewrite (they have the keys).
    pub changed_meanwhile: usize,
}

/// The sparse index key of an active start subscription.
pub fn route_key(workspace: &WorkspaceId, route: &Route) -> String {
    match route {
        Route::SourceType(t) => format!("{workspace}#source:{}", t.as_str()),
        Route::Connector(c) => format!("{workspace}#connector:{c}"),
    }
}

fn route_of(subscription: &Subscription) -> Route {
    match &subscription.connector_instance_id {
        Some(c) => Route::Connector(c.clone()),
        None => Route::SourceType(subscription.source_type),
    }
}

/// The due index's sort key: the next fire instant, then the id.
fn due_key(next_fire_ms: i64, subscription_id: &str) -> String {
    crate::listing::key(next_fire_ms, subscription_id)
}

/// Pages one filtered listing call reads at most (each up to 1 MB).
pub const MAX_FILTERED_PAGES: usize = 8;

/// The index and partition (`attribute`, value) a listing reads.
fn list_partition(
    workspace: &WorkspaceId,
    query: &ListQuery,
) -> (Option<&'static str>, (&'static str, String)) {
    match (query.state, query.source_type) {
        (Some(state), _) => (
            Some(SUBSCRIPTIONS_BY_STATE),
            ("stateKey", state_key(workspace, state)),
        ),
        (None, Some(source)) => (
            Some(SUBSCRIPTIONS_BY_SOURCE),
            ("sourceKey", source_key(workspace, source)),
        ),
        (None, None) => (None, ("workspaceId", workspace.to_string())),
    }
}

fn state_key(workspace: &WorkspaceId, state: SubscriptionState) -> String {
    format!("{workspace}#{}", state.as_str())
}

fn source_key(workspace: &WorkspaceId, source: SourceType) -> String {
    format!("{workspace}#{}", source.as_str())
}

/// The key and index attributes stored beside the subscription document.
fn attributes(subscription: &Subscription) -> Item {
    let mut item = Item::from([
        (
            "workspaceId".to_owned(),
            s(subscription.workspace_id.as_str()),
        ),
        (
            "subscriptionId".to_owned(),
            s(subscription.subscription_id.as_str()),
        ),
        ("state".to_owned(), s(subscription.state.as_str())),
        (
            "sourceType".to_owned(),
            s(subscription.source_type.as_str()),
        ),
        (
            "createdAt".to_owned(),
            n(subscription.created_at_ms.div_euclid(1000)),
        ),
        ("version".to_owned(), n(subscription.version)),
        (
            "stateKey".to_owned(),
            s(state_key(&subscription.workspace_id, subscription.state)),
        ),
        (
            "sourceKey".to_owned(),
            s(source_key(
                &subscription.workspace_id,
                subscription.source_type,
            )),
        ),
    ]);
    if let Some(next_fire_ms) = crate::scheduled::first_fire_ms(subscription) {
        let id = subscription.subscription_id.as_str();
        item.insert(
            "dueShard".to_owned(),
            s(crate::schedule::shard_of(id).to_string()),
        );
        item.insert("dueKey".to_owned(), s(due_key(next_fire_ms, id)));
    }
    if subscription.is_matchable() {
        item.insert(
            "routeKey".to_owned(),
            s(route_key(
                &subscription.workspace_id,
                &route_of(subscription),
            )),
        );
    }
    item
}

fn unavailable<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> StoreError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(describe(error))
}

#[async_trait]
impl SubscriptionReader for DynamoSubscriptionStore {
    async fn get(
        &self,
        workspace: &WorkspaceId,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, StoreError> {
        let key = Item::from([
            ("workspaceId".to_owned(), s(workspace.as_str())),
            ("subscriptionId".to_owned(), s(id.as_str())),
        ]);
        let item = get_item(&self.client, &self.table, key)
            .await
            .map_err(StoreError::Unavailable)?;
        item.as_ref().map(doc).transpose()
    }

    async fn list_matchable(
        &self,
        workspace: &WorkspaceId,
        route: &Route,
    ) -> Result<Vec<Arc<Subscription>>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(SUBSCRIPTIONS_BY_ROUTE)
            .key_condition_expression("routeKey = :rk")
            .expression_attribute_values(":rk", s(route_key(workspace, route)));
        let mut found = Vec::new();
        // Decoded page by page: a large workspace's raw items are never all in memory.
        query_each(query, StoreError::Unavailable, |item| {
            let subscription: Subscription = doc(item)?;
            // The index is eventually consistent: re-check what it claims.
            if &subscription.workspace_id == workspace && subscription.is_matchable() {
                // Shared as they are with the match index (no copy while it is built).
                found.push(Arc::new(subscription));
            }
            Ok(())
        })
        .await?;
        Ok(found)
    }
}

#[async_trait]
impl SubscriptionStore for DynamoSubscriptionStore {
    /// One workspace's subscriptions in id order. A state filter is served by the
    /// `byState` index, a source filter alone by `bySource`, so a filter never reads
    /// what it does not return; with both, the source is a `FilterExpression` on the
    /// state's index and a call reads at most [`MAX_FILTERED_PAGES`] pages (the answer
    /// may then hold fewer than `limit` items, with a cursor to go on).
    async fn list(&self, workspace: &WorkspaceId, query: &ListQuery) -> Result<Page, StoreError> {
        let (index, partition) = list_partition(workspace, query);
        let (partition_attr, partition_value) = partition;
        let start_key = |id: &str| {
            let mut key = Item::from([
                ("workspaceId".to_owned(), s(workspace.as_str())),
                ("subscriptionId".to_owned(), s(id)),
            ]);
            key.insert(partition_attr.to_owned(), s(&partition_value));
            key
        };
        let mut start = query.cursor.as_deref().map(start_key);
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(index.map(str::to_owned))
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", partition_attr)
            .expression_attribute_values(":pk", s(&partition_value));
        let residual = query.state.and(query.source_type);
        if let Some(source) = residual {
            request = request
                .filter_expression("sourceType = :source")
                .expression_attribute_values(":source", s(source.as_str()));
        }
        let mut items = Vec::new();
        for _ in 0..MAX_FILTERED_PAGES {
            let mut page = request.clone().set_exclusive_start_key(start);
            if residual.is_none() {
                let remaining = query.limit.saturating_sub(items.len());
                page = page.limit(i32::try_from(remaining).unwrap_or(i32::MAX));
            }
            let output = page.send().await.map_err(|e| unavailable(&e))?;
            for item in output.items() {
                let subscription: Subscription = doc(item)?;
                // The index is eventually consistent: re-check what it claims.
                if &subscription.workspace_id == workspace && query.admits(&subscription) {
                    items.push(subscription);
                }
            }
            start = output.last_evaluated_key().cloned();
            if items.len() >= query.limit {
                // More may follow (the rest of this page, or further pages): the next
                // page starts after the last item returned.
                let more = items.len() > query.limit || start.is_some();
                items.truncate(query.limit);
                let next_cursor = more
                    .then(|| items.last().map(|s| s.subscription_id.to_string()))
                    .flatten();
                return Ok(Page { items, next_cursor });
            }
            if start.is_none() {
                return Ok(Page {
                    items,
                    next_cursor: None,
                });
            }
        }
        // The read budget is spent: go on after the last subscription read.
        let next_cursor = start
            .as_ref()
            .and_then(|key| key.get("subscriptionId"))
            .and_then(|v| v.as_s().ok())
            .cloned();
        Ok(Page { items, next_cursor })
    }

    async fn put(&self, subscription: &Subscription) -> Result<(), StoreError> {
        put_document(
            &self.client,
            &self.table,
            attributes(subscription),
            subscription,
            None,
        )
        .await
    }

    async fn replace(
        &self,
        subscription: &Subscription,
        expected_version: u64,
    ) -> Result<(), StoreError> {
        // Items written before versions existed have none: they count as version 0.
        let condition = if expected_version == 0 {
            "attribute_exists(subscriptionId) AND (attribute_not_exists(version) OR version = :expected)"
        } else {
            "version = :expected"
        };
        put_document(
            &self.client,
            &self.table,
            attributes(subscription),
            subscription,
            Some((condition, n(expected_version))),
        )
        .await
    }
}

#[async_trait]
impl crate::scheduled::ScheduleStore for DynamoSubscriptionStore {
    async fn due(
        &self,
        shard: u32,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<crate::scheduled::DueSubscription>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(SUBSCRIPTIONS_BY_DUE)
            .key_condition_expression("dueShard = :shard AND dueKey <= :now")
            .expression_attribute_values(":shard", s(shard.to_string()))
            .expression_attribute_values(":now", s(due_key(now_ms, "~")))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        let mut due = Vec::new();
        for item in output.items() {
            let subscription: Subscription = doc(item)?;
            let next_fire_ms = item
                .get("dueKey")
                .and_then(|v| v.as_s().ok())
                .and_then(|key| key.split_once('#'))
                .and_then(|(at, _)| at.parse::<i64>().ok());
            // The index is eventually consistent: re-check what it claims.
            if let (Some(next_fire_ms), true) = (next_fire_ms, subscription.is_matchable()) {
                due.push(crate::scheduled::DueSubscription {
                    subscription,
                    next_fire_ms,
                });
            }
        }
        Ok(due)
    }

    async fn advance(
        &self,
        subscription: &Subscription,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<bool, StoreError> {
        let id = subscription.subscription_id.as_str();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("workspaceId", s(subscription.workspace_id.as_str()))
            .key("subscriptionId", s(id))
            .condition_expression("dueKey = :from")
            .expression_attribute_values(":from", s(due_key(from_ms, id)));
        request = if to_ms == i64::MAX {
            request.update_expression("REMOVE dueKey, dueShard")
        } else {
            request
                .update_expression("SET dueKey = :to")
                .expression_attribute_values(":to", s(due_key(to_ms, id)))
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error().is_some_and(
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::is_conditional_check_failed_exception,
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable(&e)),
        }
    }
}
