//! Connector instances: one webhook URL each, shared by every subscription attached to
//! it. The instance says which workspace its events belong to, how deliveries are signed,
//! where the signing secrets live (references, never the secrets), and how to derive the
//! event kind.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::WorkspaceId;
use crate::store::StoreError;

/// How deliveries to an instance are signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    #[default]
    StandardWebhooks,
    Github,
    /// Unsigned: only when explicitly configured.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectorInstance {
    pub connector_instance_id: String,
    pub workspace_id: WorkspaceId,
    #[serde(default)]
    pub scheme: SignatureScheme,
    /// Secrets Manager ARNs / `secretsmanager:<name>`, or SSM SecureString ARNs /
    /// `ssm:<name>`; at most two (rotation).
    #[serde(default)]
    pub secret_refs: Vec<String>,
    /// A header naming the event (e.g. `x-github-event`) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind_header: Option<String>,
    /// ... mapped to `<prefix>.<header value>` (e.g. `github.push`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Bumped by every change; changes and deletes can be conditioned on it (`ETag`).
    #[serde(default)]
    pub version: u64,
}

/// Most secrets active at once.
pub const MAX_ACTIVE_SECRETS: usize = 2;

impl ConnectorInstance {
    /// Refuses configurations that could not verify anything.
    pub fn validate(&self) -> Result<(), String> {
        if self.connector_instance_id.is_empty() {
            return Err("connectorInstanceId must not be empty".into());
        }
        match (self.scheme, self.secret_refs.len()) {
            (SignatureScheme::None, 0) => Ok(()),
            (SignatureScheme::None, _) => Err("scheme none takes no secrets".into()),
            (_, 0) => Err("a signed scheme needs at least one secret reference".into()),
            (_, n) if n > MAX_ACTIVE_SECRETS => Err(format!(
                "at most {MAX_ACTIVE_SECRETS} secrets may be active"
            )),
            _ => Ok(()),
        }
    }
}

#[async_trait]
pub trait ConnectorStore: Send + Sync {
    async fn get(
        &self,
        connector_instance_id: &str,
    ) -> Result<Option<ConnectorInstance>, StoreError>;
    /// Writes unconditionally (creation with a fresh id, seeding).
    async fn put(&self, connector: &ConnectorInstance) -> Result<(), StoreError>;
    /// Writes `connector` only while the stored one is at `expected` (its version);
    /// `Conflict` when it changed or is gone, so a stale change never resurrects it.
    async fn replace(&self, connector: &ConnectorInstance, expected: u64)
        -> Result<(), StoreError>;
    /// The workspace's connector instances, in id order.
    async fn list(&self, workspace: &WorkspaceId) -> Result<Vec<ConnectorInstance>, StoreError>;
    /// Deletes (only at version `expected`, when given: else `Conflict`); deleting what
    /// is not there is not an error.
    async fn delete(
        &self,
        connector_instance_id: &str,
        expected: Option<u64>,
    ) -> Result<(), StoreError>;
}
