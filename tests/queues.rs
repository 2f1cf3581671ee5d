//! The queue port's contract, written once over `Arc<dyn Queue>` and run against the SQS
//! adapter (real SDK, local SQS emulator) and the in-memory queue the unit tests use;
//! then what only SQS has (visibility changes).

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsBatchResponse;
use aws_sdk_sqs::types::QueueAttributeName;
use custos_trigger::aws::SqsQueue;
use custos_trigger::memory::MemoryQueue;
use custos_trigger::queue::{Queue, QueueError, MAX_DELAY_SECS};
use integration_tests::{acknowledge, queue, queue_attribute, receive, sqs};

/// What a consumer of the queue sees: for SQS, what a receiver gets (through the SDK,
/// deleting it) and the delayed count SQS reports; for the memory queue, what it holds.
enum Consumer {
    Sqs(aws_sdk_sqs::Client, String),
    Memory(Arc<MemoryQueue>),
}

impl Consumer {
    /// Every body a receiver can have now, sorted.
    async fn visible(&self) -> Vec<String> {
        let mut bodies = match self {
            Consumer::Sqs(client, url) => {
                let mut bodies = Vec::new();
                let mut empty = 0;
                while empty < 2 {
                    let event = receive(client, url, 10, 1).await;
                    empty = if event.records.is_empty() {
                        empty + 1
                    } else {
                        0
                    };
                    bodies.extend(
                        event
                            .records
                            .iter()
                            .map(|r| r.body.clone().unwrap_or_default()),
                    );
                    acknowledge(client, url, &event, &SqsBatchResponse::default()).await;
                }
                bodies
            }
            Consumer::Memory(queue) => {
                let delayed: Vec<String> = queue
                    .delayed()
                    .into_iter()
                    .filter(|(_, delay)| *delay > 0)
                    .map(|(body, _)| body)
                    .collect();
                queue
                    .sent()
                    .into_iter()
                    .filter(|b| !delayed.contains(b))
                    .collect()
            }
        };
        bodies.sort();
        bodies
    }

    /// How many bodies wait out a delivery delay.
    async fn delayed(&self) -> usize {
        match self {
            Consumer::Sqs(client, url) => queue_attribute(
                client,
                url,
                QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            )
            .await
            .parse()
            .unwrap(),
            Consumer::Memory(queue) => queue.delayed().iter().filter(|(_, d)| *d > 0).count(),
        }
    }
}

/// One contract test per adapter: the SQS queue on the emulator, the memory one.
macro_rules! contract {
    ([$($name:ident),* $(,)?]) => {
        $(mod $name {
            use super::*;
            #[tokio::test]
            async fn on_sqs() {
                let client = sqs();
                let url = queue(&client, None).await;
                let adapter = Arc::new(SqsQueue::new(client.clone(), url.clone()));
                super::$name(adapter, Consumer::Sqs(client, url)).await
            }
            #[tokio::test]
            async fn in_memory() {
                let adapter = Arc::new(MemoryQueue::default());
                super::$name(adapter.clone(), Consumer::Memory(adapter)).await
            }
        })*
    };
}

contract!([
    every_body_arrives_once_across_batches_of_count_and_size,
    delayed_bodies_wait_and_a_delay_past_the_limit_is_taken_at_the_limit,
    a_body_over_the_limit_is_refused_and_nothing_of_its_send_goes_out,
    bodies_with_their_own_delays_go_together_and_each_waits_its_own,
]);

/// 25 small bodies (three batches of at most 10) and four of 100 KiB (batches are also
/// cut at 256 KiB): each arrives exactly once.
async fn every_body_arrives_once_across_batches_of_count_and_size(
    queue: Arc<dyn Queue>,
    consumer: Consumer,
) {
    let mut bodies: Vec<String> = (0..25).map(|i| format!("{{\"n\":{i}}}")).collect();
    bodies.extend((0..4).map(|i| format!("{i}{}", "x".repeat(100 * 1024))));
    queue.send_batch(&bodies).await.unwrap();
    bodies.sort();
    assert_eq!(consumer.visible().await, bodies);
    assert_eq!(consumer.delayed().await, 0);
}

/// Delayed bodies are not received before their delay; a delay past the queue's longest
/// (15 min) is sent at the longest, not refused (the receiver re-sends for the rest).
async fn delayed_bodies_wait_and_a_delay_past_the_limit_is_taken_at_the_limit(
    queue: Arc<dyn Queue>,
    consumer: Consumer,
) {
    queue.send_batch(&["now".to_owned()]).await.unwrap();
    let later = ["later-1".to_owned(), "later-2".to_owned()];
    queue.send_delayed(&later, 60).await.unwrap();
    let much_later = ["much-later".to_owned()];
    queue
        .send_delayed(&much_later, MAX_DELAY_SECS * 4)
        .await
        .unwrap();
    assert_eq!(consumer.visible().await, ["now"]);
    assert_eq!(consumer.delayed().await, 3);
}

/// Bodies sent each with its own delay (as a throttle spreads them), twelve in one call:
/// the undelayed ones arrive at once, each delayed one waits, and a delay past the
/// longest is taken at the longest (SQS would refuse it).
async fn bodies_with_their_own_delays_go_together_and_each_waits_its_own(
    queue: Arc<dyn Queue>,
    consumer: Consumer,
) {
    let messages: Vec<(String, u32)> = (0..12u32)
        .map(|i| {
            let delay = match i % 3 {
                0 => 0,
                1 => 60 + i,
                _ => MAX_DELAY_SECS * 4,
            };
            (format!("m{i:02}"), delay)
        })
        .collect();
    queue.send_each_delayed(&messages).await.unwrap();
    assert_eq!(consumer.visible().await, ["m00", "m03", "m06", "m09"]);
    assert_eq!(consumer.delayed().await, 8);
}

/// A body SQS could never carry is refused before anything of its send goes out, so a
/// caller never has half a batch sent.
async fn a_body_over_the_limit_is_refused_and_nothing_of_its_send_goes_out(
    queue: Arc<dyn Queue>,
    consumer: Consumer,
) {
    let bodies = ["fine".to_owned(), "x".repeat(300 * 1024)];
    let sent = queue.send_batch(&bodies).await;
    assert!(matches!(sent, Err(QueueError::Rejected(_))), "{sent:?}");
    assert!(consumer.visible().await.is_empty());
}

#[tokio::test]
async fn visibility_change_hides_a_message_for_the_backoff_then_redelivers_it() {
    let client = sqs();
    let url = queue(&client, None).await;
    let adapter = SqsQueue::new(client.clone(), url.clone());
    adapter.send_batch(&["retry me".to_owned()]).await.unwrap();
    let first = receive(&client, &url, 1, 1).await;
    let receipt = first.records[0].receipt_handle.clone().unwrap();
    // Back off far into the future: the message is not receivable now.
    adapter.change_visibility(&receipt, 600).await.unwrap();
    assert!(receive(&client, &url, 1, 1).await.records.is_empty());
    assert_eq!(
        queue_attribute(
            &client,
            &url,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible
        )
        .await,
        "1"
    );
    // A zero backoff makes it visible again, one receive later.
    adapter.change_visibility(&receipt, 0).await.unwrap();
    let again = receive(&client, &url, 1, 2).await;
    assert_eq!(again.records.len(), 1);
    assert_eq!(
        again.records[0]
            .attributes
            .get("ApproximateReceiveCount")
            .map(String::as_str),
        Some("2")
    );
}
