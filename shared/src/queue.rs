//! The queue port between stages (one adapter instance per queue): batched sends, and
//! visibility changes that turn a returned message into a delayed retry.

use async_trait::async_trait;
use thiserror::Error;

/// The longest delivery delay a queue offers (SQS: 15 minutes).
pub const MAX_DELAY_SECS: u32 = 900;

/// The delivery delay for a wait of `wait_ms`: whole seconds, rounded down (a message
/// arrives at most a second early, never late), at most [`MAX_DELAY_SECS`].
pub fn delay_secs(wait_ms: i64) -> u32 {
    u32::try_from(wait_ms.max(0).div_euclid(1000))
        .unwrap_or(u32::MAX)
        .min(MAX_DELAY_SECS)
}

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

    /// Sends every body to be received no earlier than `delay_secs` from now (at most
    /// [`MAX_DELAY_SECS`]; longer waits are re-sent by the receiver).
    async fn send_delayed(&self, bodies: &[String], delay_secs: u32) -> Result<(), QueueError>;

    /// Sends every `(body, delay_secs)` with its own delay, batched as [`Queue::send_batch`]
    /// (SQS takes a delay per entry, so messages a throttle spreads over time still go
    /// ten to a call).
    async fn send_each_delayed(&self, messages: &[(String, u32)]) -> Result<(), QueueError>;

    /// Makes a received message visible again after `timeout_secs`.
    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout_secs: u32,
    ) -> Result<(), QueueError>;
}
