//! The SQS adapter through the real SDK against the local SQS emulator.

use aws_sdk_sqs::types::QueueAttributeName;
use custos_trigger::aws::SqsQueue;
use custos_trigger::queue::{Queue, QueueError};
use integration_tests::{depth, queue, queue_attribute, receive, sqs};

#[tokio::test]
async fn twenty_five_messages_are_sent_in_batches_and_all_arrive() {
    let client = sqs();
    let url = queue(&client, None).await;
    let adapter = SqsQueue::new(client.clone(), url.clone());
    let bodies: Vec<String> = (0..25).map(|i| format!("{{\"n\":{i}}}")).collect();
    adapter.send_batch(&bodies).await.unwrap();
    let mut received = Vec::new();
    for _ in 0..10 {
        let event = receive(&client, &url, 10, 1).await;
        for record in &event.records {
            received.push(record.body.clone().unwrap_or_default());
            client
                .delete_message()
                .queue_url(&url)
                .receipt_handle(record.receipt_handle.clone().unwrap_or_default())
                .send()
                .await
                .unwrap();
        }
        if received.len() == 25 {
            break;
        }
    }
    received.sort();
    let mut expected = bodies.clone();
    expected.sort();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn oversized_messages_are_rejected_before_sending() {
    let client = sqs();
    let url = queue(&client, None).await;
    let adapter = SqsQueue::new(client.clone(), url.clone());
    let result = adapter.send_batch(&["x".repeat(300 * 1024)]).await;
    assert!(matches!(result, Err(QueueError::Rejected(_))));
    assert_eq!(depth(&client, &url).await, 0);
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
