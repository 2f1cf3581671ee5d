//! Resume waits in DynamoDB, keyed by resume id, with `expiresAt` as the TTL attribute;
//! the one-shot delete is conditional so exactly one delivery removes a wait.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;

use super::attrs::{doc, n, s, Item};
use super::describe;
use super::documents::{get_item, put_document};
use crate::ids::ResumeId;
use crate::resume::{ResumeStore, ResumeWait};
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

#[async_trait]
impl ResumeStore for DynamoResumeStore {
    async fn get(&self, id: &ResumeId) -> Result<Option<ResumeWait>, StoreError> {
        let key = Item::from([("resumeId".to_owned(), s(id.as_str()))]);
        let item = get_item(&self.client, &self.table, key)
            .await
            .map_err(StoreError::Unavailable)?;
        item.as_ref().map(doc).transpose()
    }

    async fn put(&self, wait: &ResumeWait) -> Result<(), StoreError> {
        let attributes = Item::from([
            ("resumeId".to_owned(), s(wait.resume_id.as_str())),
            ("expiresAt".to_owned(), n(wait.expires_at)),
        ]);
        put_document(&self.client, &self.table, attributes, wait, None).await
    }

    async fn delete(&self, id: &ResumeId) -> Result<bool, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("resumeId", s(id.as_str()))
            .condition_expression("attribute_exists(resumeId)")
            .send()
            .await;
        match result {
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
