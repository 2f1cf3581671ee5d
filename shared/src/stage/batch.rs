//! The one SQS batch runner every function uses: parse each record into its typed
//! body, run the handler on up to `concurrency` records at once, and report only the
//! failed message ids, so one bad message never re-runs or blocks its neighbours.

use std::future::Future;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::stream::{self, StreamExt};
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::queue::Queue;

/// One received message with its typed body.
#[derive(Debug, Clone)]
pub struct Received<T> {
    pub message_id: String,
    pub receipt_handle: String,
    /// 1-based delivery count (`ApproximateReceiveCount`).
    pub receive_count: u32,
    /// When the message was first sent (`SentTimestamp`, epoch ms), if SQS said.
    pub sent_ms: Option<i64>,
    /// The sender's W3C trace (a `traceparent` string message attribute), if any.
    pub traceparent: Option<String>,
    pub body: T,
}

/// What to do with a record whose body does not parse.
#[derive(Clone, Copy)]
pub enum OnParseError<'a> {
    /// Report it failed so the redrive policy moves it to the DLQ. With the source queue
    /// given, the message is made visible again at once: it can never parse, so it should
    /// reach `maxReceiveCount` (and the DLQ) without waiting out visibility timeouts.
    Fail(Option<&'a dyn Queue>),
    /// Acknowledge it with a logged reason (redelivery cannot help and nothing is lost).
    Drop,
}

/// The handler wants the message back (it is retried, or moved to the DLQ).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct RetryMessage(pub String);

/// A record SQS delivered without a message id: the batch cannot be partially failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("SQS record without a messageId; failing the whole batch")]
pub struct MissingMessageId;

/// Runs `handler` over the batch and collects the batch-item failures.
pub async fn run<T, H, Fut>(
    event: SqsEvent,
    concurrency: usize,
    on_parse_error: OnParseError<'_>,
    handler: H,
) -> Result<SqsBatchResponse, MissingMessageId>
where
    T: DeserializeOwned,
    H: Fn(Received<T>) -> Fut,
    Fut: Future<Output = Result<(), RetryMessage>>,
{
    run_parsed(
        event,
        concurrency,
        on_parse_error,
        |body: &str| serde_json::from_str::<T>(body),
        handler,
    )
    .await
}

/// Runs `handler` over the raw bodies (for the dead-letter recorder, which must take
/// whatever landed in a DLQ, JSON or not).
pub async fn run_raw<H, Fut>(
    event: SqsEvent,
    concurrency: usize,
    handler: H,
) -> Result<SqsBatchResponse, MissingMessageId>
where
    H: Fn(Received<String>) -> Fut,
    Fut: Future<Output = Result<(), RetryMessage>>,
{
    run_parsed(
        event,
        concurrency,
        OnParseError::Drop,
        |body: &str| Ok::<_, serde_json::Error>(body.to_owned()),
        handler,
    )
    .await
}

async fn run_parsed<T, P, H, Fut>(
    event: SqsEvent,
    concurrency: usize,
    on_parse_error: OnParseError<'_>,
    parse: P,
    handler: H,
) -> Result<SqsBatchResponse, MissingMessageId>
where
    P: Fn(&str) -> Result<T, serde_json::Error>,
    H: Fn(Received<T>) -> Fut,
    Fut: Future<Output = Result<(), RetryMessage>>,
{
    if event
        .records
        .iter()
        .any(|r| r.message_id.as_deref().is_none_or(str::is_empty))
    {
        return Err(MissingMessageId);
    }
    let (handler, parse) = (&handler, &parse);
    let failures: Vec<String> = stream::iter(event.records)
        .map(|record| async move { process(record, on_parse_error, parse, handler).await })
        .buffer_unordered(concurrency.max(1))
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    for id in failures {
        response.add_failure(id);
    }
    Ok(response)
}

/// Returns the message id when the record failed.
async fn process<T, P, H, Fut>(
    record: SqsMessage,
    on_parse_error: OnParseError<'_>,
    parse: &P,
    handler: &H,
) -> Option<String>
where
    P: Fn(&str) -> Result<T, serde_json::Error>,
    H: Fn(Received<T>) -> Fut,
    Fut: Future<Output = Result<(), RetryMessage>>,
{
    let message_id = record.message_id.clone().unwrap_or_default();
    let receive_count = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let sent_ms = record
        .attributes
        .get("SentTimestamp")
        .and_then(|t| t.parse().ok());
    let body = match parse(record.body.as_deref().unwrap_or_default()) {
        Ok(body) => body,
        Err(error) => {
            return match on_parse_error {
                OnParseError::Fail(source) => {
                    tracing::error!(message_id, %error, "unparseable message; leaving it to the DLQ");
                    if let (Some(queue), Some(receipt)) = (source, record.receipt_handle.as_deref())
                    {
                        if let Err(e) = queue.change_visibility(receipt, 0).await {
                            tracing::warn!(message_id, error = %e, "could not fast-track to the DLQ");
                        }
                    }
                    Some(message_id)
                }
                OnParseError::Drop => {
                    tracing::warn!(message_id, %error, "malformed message dropped");
                    None
                }
            };
        }
    };
    let traceparent = record
        .message_attributes
        .get("traceparent")
        .and_then(|a| a.string_value.clone());
    let received = Received {
        message_id: message_id.clone(),
        receipt_handle: record.receipt_handle.unwrap_or_default(),
        receive_count,
        sent_ms,
        traceparent,
        body,
    };
    match handler(received).await {
        Ok(()) => None,
        Err(RetryMessage(reason)) => {
            tracing::warn!(message_id, reason, "message returned to the queue");
            Some(message_id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn batch(bodies: &[(&str, &str)]) -> SqsEvent {
        let records: Vec<_> = bodies
            .iter()
            .map(|(id, body)| {
                json!({"messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
                       "attributes": {"ApproximateReceiveCount": "3"}})
            })
            .collect();
        serde_json::from_value(json!({ "Records": records })).unwrap()
    }

    #[tokio::test]
    async fn only_failed_and_unparseable_messages_are_reported() {
        let event = batch(&[("a", "1"), ("b", "2"), ("c", "not json"), ("d", "4")]);
        let queue = crate::memory::MemoryQueue::default();
        let response = run(
            event,
            4,
            OnParseError::Fail(Some(&queue)),
            |m: Received<u32>| async move {
                assert_eq!(m.receive_count, 3);
                assert_eq!(m.receipt_handle, format!("rh-{}", m.message_id));
                if m.body == 2 {
                    Err(RetryMessage("two".into()))
                } else {
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
        let mut failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        failed.sort_unstable();
        assert_eq!(failed, ["b", "c"]);
        assert_eq!(
            queue.visibility_changes(),
            [("rh-c".to_owned(), 0)],
            "unparseable: visible again at once"
        );
    }

    #[tokio::test]
    async fn drop_policy_acknowledges_unparseable_messages() {
        let response = run(
            batch(&[("a", "{")]),
            1,
            OnParseError::Drop,
            |_: Received<u32>| async { Ok(()) },
        )
        .await
        .unwrap();
        assert!(response.batch_item_failures.is_empty());
    }

    #[tokio::test]
    async fn a_record_without_id_fails_the_batch_instead_of_reporting_an_empty_id() {
        let event: SqsEvent = serde_json::from_value(json!({"Records": [{"body": "1"}]})).unwrap();
        let result = run(
            event,
            1,
            OnParseError::Fail(None),
            |_: Received<u32>| async { Ok(()) },
        )
        .await;
        assert_eq!(result.unwrap_err(), MissingMessageId);
    }
}
