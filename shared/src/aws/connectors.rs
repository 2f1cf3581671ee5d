//! Connector instances in DynamoDB, keyed by `connectorInstanceId` (the webhook URL
//! carries only that id; the item names the workspace), with a `byWorkspace` index
//! (`workspaceId` / `connectorInstanceId`) for listing a workspace's instances.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use super::attrs::{doc, n, s, Item};
use super::describe;
use super::documents::{get_item, put_document, query_all};
use super::tables::CONNECTORS_BY_WORKSPACE;
use crate::ids::WorkspaceId;
use crate::store::StoreError;
use crate::webhook::{ConnectorInstance, ConnectorStore};

#[derive(Debug, Clone)]
pub struct DynamoConnectorStore {
    client: Client,
    table: String,
}

impl DynamoConnectorStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl ConnectorStore for DynamoConnectorStore {
    async fn get(&self, id: &str) -> Result<Option<ConnectorInstance>, StoreError> {
        // DynamoDB refuses keys over 2,048 bytes; no connector has such an id.
        if id.is_empty() || id.len() > 2_048 {
            return Ok(None);
        }
        let key = Item::from([("connectorInstanceId".to_owned(), s(id))]);
        let item = get_item(&self.client, &self.table, key)
            .await
            .map_err(StoreError::Unavailable)?;
        item.as_ref().map(doc).transpose()
    }

    async fn put(&self, connector: &ConnectorInstance) -> Result<(), StoreError> {
        put_document(
            &self.client,
            &self.table,
            attributes(connector),
            connector,
            None,
        )
        .await
    }

    async fn replace(
        &self,
        connector: &ConnectorInstance,
        expected: u64,
    ) -> Result<(), StoreError> {
        // Items of older releases carry no version: they count as version 0.
        let condition = if expected == 0 {
            "attribute_exists(connectorInstanceId) AND (attribute_not_exists(version) OR version = :expected)"
        } else {
            "version = :expected"
        };
        put_document(
            &self.client,
            &self.table,
            attributes(connector),
            connector,
            Some((condition, n(expected))),
        )
        .await
    }

    async fn list(&self, workspace: &WorkspaceId) -> Result<Vec<ConnectorInstance>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(CONNECTORS_BY_WORKSPACE)
            .key_condition_expression("workspaceId = :ws")
            .expression_attribute_values(":ws", s(workspace.as_str()));
        let items = query_all(query).await.map_err(StoreError::Unavailable)?;
        let connectors: Vec<ConnectorInstance> = items.iter().map(doc).collect::<Result<_, _>>()?;
        // The index is eventually consistent: re-check what it claims.
        Ok(connectors
            .into_iter()
            .filter(|c| &c.workspace_id == workspace)
            .collect())
    }

    async fn delete(&self, id: &str, expected: Option<u64>) -> Result<(), StoreError> {
        let mut request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("connectorInstanceId", s(id));
        if let Some(version) = expected {
            let condition = if version == 0 {
                "attribute_not_exists(connectorInstanceId) OR attribute_not_exists(version) OR version = :expected"
            } else {
                "attribute_not_exists(connectorInstanceId) OR version = :expected"
            };
            request = request
                .condition_expression(condition)
                .expression_attribute_values(":expected", n(version));
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict(format!(
                    "{id}: changed since it was read"
                )))
            }
            Err(e) => Err(StoreError::Unavailable(describe(&e))),
        }
    }
}

/// The key, the listing index's partition and the version beside the document.
fn attributes(connector: &ConnectorInstance) -> Item {
    Item::from([
        (
            "connectorInstanceId".to_owned(),
            s(connector.connector_instance_id.as_str()),
        ),
        ("workspaceId".to_owned(), s(connector.workspace_id.as_str())),
        ("version".to_owned(), n(connector.version)),
    ])
}
