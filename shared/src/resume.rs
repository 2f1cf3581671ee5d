//! Resume waits: a waiting `(runId, stepId, eventKey)` that the next matching event
//! resumes exactly once (the wait is deleted after a confirmed delivery).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{ResumeId, WorkspaceId};
use crate::store::StoreError;

/// The triple a wait is registered under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeKey {
    pub run_id: String,
    pub step_id: String,
    pub event_key: String,
}

impl ResumeKey {
    /// `res_` + hex(sha256(runId \0 stepId \0 eventKey)).
    pub fn resume_id(&self) -> ResumeId {
        let mut hasher = Sha256::new();
        hasher.update(self.run_id.as_bytes());
        hasher.update([0]);
        hasher.update(self.step_id.as_bytes());
        hasher.update([0]);
        hasher.update(self.event_key.as_bytes());
        let id = format!("res_{}", hex::encode(hasher.finalize()));
        ResumeId::new(id).unwrap_or_else(|_| unreachable!("prefixed id is non-empty"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeWait {
    pub resume_id: ResumeId,
    pub run_id: String,
    pub step_id: String,
    pub event_key: String,
    #[serde(default)]
    pub selector: Option<String>,
    /// The tenant that registered the wait; events of other workspaces never resume it.
    #[serde(default)]
    pub workspace_id: Option<WorkspaceId>,
    /// Epoch seconds; a wait with `expiresAt <= now` has lapsed.
    pub expires_at: i64,
}

impl ResumeWait {
    pub fn is_live(&self, now_secs: i64) -> bool {
        self.expires_at > now_secs
    }
}

#[async_trait]
pub trait ResumeStore: Send + Sync {
    async fn get(&self, id: &ResumeId) -> Result<Option<ResumeWait>, StoreError>;
    async fn put(&self, wait: &ResumeWait) -> Result<(), StoreError>;
    /// Deletes the wait; `false` when it was already gone (the one-shot guarantee).
    async fn delete(&self, id: &ResumeId) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_id_is_prefixed_sha256_of_the_nul_joined_triple() {
        let key = ResumeKey {
            run_id: "r".into(),
            step_id: "s".into(),
            event_key: "k".into(),
        };
        let expected = format!("res_{}", hex::encode(Sha256::digest(b"r\0s\0k")));
        assert_eq!(key.resume_id().as_str(), expected);
    }
}
