//! Connector instances in DynamoDB, keyed by `connectorInstanceId` (the webhook URL
//! carries only that id; the item names the workspace).

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use super::attrs::{doc, s, Item};
use super::documents::{get_item, put_document};
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
        if id.is_empty() {
            return Ok(None);
        }
        let key = Item::from([("connectorInstanceId".to_owned(), s(id))]);
        let item = get_item(&self.client, &self.table, key)
            .await
            .map_err(StoreError::Unavailable)?;
        item.as_ref().map(doc).transpose()
    }

    async fn put(&self, connector: &ConnectorInstance) -> Result<(), StoreError> {
        let attributes = Item::from([
            (
                "connectorInstanceId".to_owned(),
                s(connector.connector_instance_id.as_str()),
            ),
            ("workspaceId".to_owned(), s(connector.workspace_id.as_str())),
        ]);
        put_document(&self.client, &self.table, attributes, connector, None).await
    }
}
