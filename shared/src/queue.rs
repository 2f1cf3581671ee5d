//! The queue port between stages (one adapter instance per queue): batched sends, and
//! visibility changes that turn a returned message into a delayed retry.

use async_trait::async_trait;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueueError {
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// A message can never be sent (too large, invalid characters).
    #[error("message rejected: {0}")]
    Rejected(String),
}

#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends every body; fails only when some could not be sent after retries.
    async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError>;

    /// Makes a received message visible again after `timeout_secs`.
    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout_secs: u32,
    ) -> Result<(), QueueError>;
}
