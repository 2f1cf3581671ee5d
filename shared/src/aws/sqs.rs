//! An SQS queue as the queue port: `SendMessageBatch` in chunks of at most 10 entries
//! and 256 KiB, entries that failed on the service side retried, and visibility changes
//! for backoff.

use async_trait::async_trait;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;

use crate::queue::{Queue, QueueError};

/// SQS limits per message and per batch request.
pub const MAX_MESSAGE_BYTES: usize = crate::limits::MAX_QUEUE_MESSAGE_BYTES;
pub const MAX_BATCH_ENTRIES: usize = 10;
/// The longest delivery delay SQS offers (15 minutes).
pub const MAX_DELAY_SECS: u32 = crate::queue::MAX_DELAY_SECS;
const SEND_ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `(body, delay_secs)` entries in request-sized chunks, retrying entries that
    /// failed on the service side.
    async fn send_entries(&self, entries: &[(&str, u32)]) -> Result<(), QueueError> {
        for chunk in split(entries, |(body, _)| body.len())? {
            let mut pending = chunk;
            for attempt in 1..=SEND_ATTEMPTS {
                let failed = self.send_chunk(&pending).await?;
                if failed.is_empty() {
                    break;
                }
                if attempt == SEND_ATTEMPTS {
                    return Err(QueueError::Unavailable(format!(
                        "{} messages still failed after {SEND_ATTEMPTS} attempts",
                        failed.len()
                    )));
                }
                pending = failed
                    .into_iter()
                    .filter_map(|i| pending.get(i).copied())
                    .collect();
            }
        }
        Ok(())
    }

    /// Sends one chunk of `(body, delay_secs)`; returns the indexes (into `chunk`) that
    /// still failed.
    async fn send_chunk(&self, chunk: &[&(&str, u32)]) -> Result<Vec<usize>, QueueError> {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, (body, delay_secs))| {
                let delay = i32::try_from((*delay_secs).min(MAX_DELAY_SECS)).unwrap_or(0);
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(*body)
                    .delay_seconds(delay)
                    .build()
                    .map_err(|e| QueueError::Rejected(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| {
                QueueError::Unavailable(format!("{}", aws_sdk_sqs::error::DisplayErrorContext(&e)))
            })?;
        let mut retry = Vec::new();
        for failed in output.failed() {
            if failed.sender_fault() {
                return Err(QueueError::Rejected(format!(
                    "{}: {}",
                    failed.code(),
                    failed.message().unwrap_or_default()
                )));
            }
            retry.extend(failed.id().parse::<usize>().ok());
        }
        Ok(retry)
    }
}

/// Splits bodies into request-sized chunks (≤ 10 entries, ≤ 256 KiB in total).
pub fn chunks(bodies: &[String]) -> Result<Vec<Vec<&String>>, QueueError> {
    split(bodies, String::len)
}

/// Splits items into request-sized chunks by each one's body size (`size`).
fn split<T>(items: &[T], size: impl Fn(&T) -> usize) -> Result<Vec<Vec<&T>>, QueueError> {
    let mut out: Vec<Vec<&T>> = Vec::new();
    let mut total = 0;
    for item in items {
        let bytes = size(item);
        if bytes > MAX_MESSAGE_BYTES {
            return Err(QueueError::Rejected(format!(
                "message of {bytes} bytes exceeds the {MAX_MESSAGE_BYTES}-byte SQS limit"
            )));
        }
        let fits = out
            .last()
            .is_some_and(|c| c.len() < MAX_BATCH_ENTRIES && total + bytes <= MAX_MESSAGE_BYTES);
        if !fits {
            out.push(Vec::new());
            total = 0;
        }
        total += bytes;
        if let Some(current) = out.last_mut() {
            current.push(item);
        }
    }
    Ok(out)
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send_batch(&self, bodies: &[String]) -> Result<(), QueueError> {
        self.send_delayed(bodies, 0).await
    }

    async fn send_delayed(&self, bodies: &[String], delay_secs: u32) -> Result<(), QueueError> {
        let entries: Vec<(&str, u32)> = bodies.iter().map(|b| (b.as_str(), delay_secs)).collect();
        self.send_entries(&entries).await
    }

    async fn send_each_delayed(&self, messages: &[(String, u32)]) -> Result<(), QueueError> {
        let entries: Vec<(&str, u32)> = messages.iter().map(|(b, d)| (b.as_str(), *d)).collect();
        self.send_entries(&entries).await
    }

    async fn change_visibility(
        &self,
        receipt_handle: &str,
        timeout_secs: u32,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(i32::try_from(timeout_secs).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| {
                QueueError::Unavailable(format!("{}", aws_sdk_sqs::error::DisplayErrorContext(&e)))
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_entry_count_and_total_size() {
        let small: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
        let sizes: Vec<usize> = chunks(&small).unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big: Vec<String> = (0..3).map(|_| "x".repeat(100 * 1024)).collect();
        let sizes: Vec<usize> = chunks(&big).unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1]);
        let too_big = vec!["x".repeat(MAX_MESSAGE_BYTES + 1)];
        assert!(matches!(chunks(&too_big), Err(QueueError::Rejected(_))));
        assert!(chunks(&[]).unwrap().is_empty());
    }
}
