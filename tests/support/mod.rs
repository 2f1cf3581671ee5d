//! Shared set-up of the integration tests: SDK clients pointed at the local emulators
//! (started by `scripts/test`), uniquely named tables and queues per test so tests run
//! in parallel, an in-process fake Workflow Service, and an SQS "event source mapping"
//! that feeds received messages to a Lambda handler the way Lambda does.

use std::collections::HashMap;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use serde_json::{json, Value};

pub use fake_workflow::Call;

pub fn endpoint(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run the integration tests through scripts/test, which starts the emulators")
    })
}

pub fn dynamodb() -> aws_sdk_dynamodb::Client {
    dynamodb_at(&endpoint("CUSTOS_TEST_DYNAMODB_ENDPOINT"))
}

pub fn dynamodb_at(url: &str) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version_latest()
        .http_client(custos_trigger::aws::https_client())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(url)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn secrets_manager() -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version_latest()
        .http_client(custos_trigger::aws::https_client())
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(endpoint("CUSTOS_TEST_SQS_ENDPOINT"))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

fn parameter_store() -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version_latest()
        .http_client(custos_trigger::aws::https_client())
        .region(aws_sdk_ssm::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(endpoint("CUSTOS_TEST_SQS_ENDPOINT"))
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

/// Secrets Manager and SSM of the local emulator, behind the service's resolver.
pub fn secrets() -> custos_trigger::aws::AwsSecrets {
    custos_trigger::aws::AwsSecrets::from_clients(secrets_manager(), parameter_store())
}

/// Stores a SecureString parameter in the emulator's SSM; returns its reference.
pub async fn put_parameter(value: &str) -> String {
    let name = format!("/{}", unique("custos/webhooks/param"));
    parameter_store()
        .put_parameter()
        .name(&name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("parameter stored");
    format!("ssm:{name}")
}

/// Stores a secret in the emulator's Secrets Manager; returns its reference.
pub async fn put_secret(value: &str) -> String {
    let name = unique("custos/webhooks/test");
    secrets_manager()
        .create_secret()
        .name(&name)
        .secret_string(value)
        .send()
        .await
        .expect("secret created");
    format!("secretsmanager:{name}")
}

/// A new current value for a secret `put_secret` made (as Secrets Manager rotation does).
pub async fn rotate_secret(reference: &str, value: &str) {
    secrets_manager()
        .put_secret_value()
        .secret_id(reference.trim_start_matches("secretsmanager:"))
        .secret_string(value)
        .send()
        .await
        .expect("secret rotated");
}

/// Standard Webhooks headers signing `body` with a `whsec_` secret.
pub fn standard_webhook_headers(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> serde_json::Value {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("whsec secret");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    json!({
        "content-type": "application/json",
        "webhook-id": id,
        "webhook-timestamp": timestamp.to_string(),
        "webhook-signature": format!("v1,{signature}"),
    })
}

pub fn sqs() -> aws_sdk_sqs::Client {
    sqs_at(&endpoint("CUSTOS_TEST_SQS_ENDPOINT"))
}

pub fn sqs_at(url: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version_latest()
        .http_client(custos_trigger::aws::https_client())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(url)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Table names of one test.
pub struct Tables {
    pub subscriptions: String,
    pub resumes: String,
    pub ledger: String,
    pub archive: String,
    pub parked: String,
    pub flow: String,
    pub connectors: String,
}

pub async fn tables(client: &aws_sdk_dynamodb::Client) -> Tables {
    let tables = Tables {
        subscriptions: unique("subs"),
        resumes: unique("resume"),
        ledger: unique("ledger"),
        archive: unique("events"),
        parked: unique("parked"),
        flow: unique("flow"),
        connectors: unique("connectors"),
    };
    custos_trigger::aws::tables::create_all(
        client,
        &tables.subscriptions,
        &tables.resumes,
        &tables.ledger,
    )
    .await
    .expect("tables created");
    custos_trigger::aws::tables::create_archive(client, &tables.archive)
        .await
        .expect("archive table created");
    custos_trigger::aws::tables::create_parked(client, &tables.parked)
        .await
        .expect("parked table created");
    custos_trigger::aws::tables::create_flow(client, &tables.flow)
        .await
        .expect("flow table created");
    custos_trigger::aws::tables::create_connectors(client, &tables.connectors)
        .await
        .expect("connectors table created");
    tables
}

/// Creates a queue (with a DLQ after `max_receive` receives, when given); returns its URL.
pub async fn queue(client: &aws_sdk_sqs::Client, max_receive: Option<u32>) -> String {
    match max_receive {
        Some(max) => queue_with_dlq(client, max).await.0,
        None => create_queue(client, None).await,
    }
}

/// Creates a queue whose redrive policy moves a message to a fresh DLQ after
/// `max_receive` receives; returns both URLs.
pub async fn queue_with_dlq(client: &aws_sdk_sqs::Client, max_receive: u32) -> (String, String) {
    let dlq = create_queue(client, None).await;
    let arn = queue_attribute(client, &dlq, QueueAttributeName::QueueArn).await;
    let policy = json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receive}).to_string();
    (create_queue(client, Some(policy)).await, dlq)
}

async fn create_queue(client: &aws_sdk_sqs::Client, redrive_policy: Option<String>) -> String {
    let mut request = client
        .create_queue()
        .queue_name(unique("q"))
        .attributes(QueueAttributeName::VisibilityTimeout, "30");
    if let Some(policy) = redrive_policy {
        request = request.attributes(QueueAttributeName::RedrivePolicy, policy);
    }
    request
        .send()
        .await
        .expect("queue created")
        .queue_url()
        .unwrap_or_default()
        .to_owned()
}

pub async fn queue_attribute(
    client: &aws_sdk_sqs::Client,
    url: &str,
    name: QueueAttributeName,
) -> String {
    let output = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .expect("queue attributes");
    output
        .attributes()
        .and_then(|a| a.get(&name))
        .cloned()
        .unwrap_or_default()
}

/// Visible plus in-flight messages of a queue.
pub async fn depth(client: &aws_sdk_sqs::Client, url: &str) -> u32 {
    let mut total = 0;
    for name in [
        QueueAttributeName::ApproximateNumberOfMessages,
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
    ] {
        total += queue_attribute(client, url, name)
            .await
            .parse::<u32>()
            .unwrap_or(0);
    }
    total
}

/// Receives up to `max` messages (long-polling up to `wait_secs`) as a Lambda SQS event.
pub async fn receive(
    client: &aws_sdk_sqs::Client,
    url: &str,
    max: i32,
    wait_secs: i32,
) -> SqsEvent {
    let output = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max)
        .wait_time_seconds(wait_secs)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive");
    let records: Vec<Value> = output
        .messages()
        .iter()
        .map(|m| {
            let attributes: HashMap<String, String> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                "attributes": attributes, "messageAttributes": {}, "eventSource": "aws:sqs"
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("sqs event")
}

/// Acts as Lambda's event source mapping for one batch: delete what the handler
/// acknowledged, leave the reported failures in the queue.
pub async fn acknowledge(
    client: &aws_sdk_sqs::Client,
    url: &str,
    event: &SqsEvent,
    response: &SqsBatchResponse,
) {
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    for record in &event.records {
        let id = record.message_id.as_deref().unwrap_or_default();
        assert!(!id.is_empty());
        if !failed.contains(&id) {
            client
                .delete_message()
                .queue_url(url)
                .receipt_handle(record.receipt_handle.as_deref().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
}

/// An in-process fake Workflow Service on a free loopback port.
pub struct FakeWorkflow {
    pub url: String,
    http: reqwest::Client,
}

impl FakeWorkflow {
    /// A fake that is already running (the one the deployed stack calls).
    pub fn at(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(fake_workflow::serve(listener));
        Self {
            url,
            http: reqwest::Client::new(),
        }
    }

    pub async fn calls(&self, route: &str) -> Vec<Call> {
        self.http
            .get(format!("{}/_fake/calls?route={route}", self.url))
            .send()
            .await
            .expect("calls")
            .json()
            .await
            .expect("calls json")
    }

    /// `StartRun` calls of `workspace` held by an injected delay right now.
    pub async fn held_starts(&self, workspace: &str) -> u64 {
        let held: Value = self
            .http
            .get(format!("{}/_fake/held?workspace={workspace}", self.url))
            .send()
            .await
            .expect("held")
            .json()
            .await
            .expect("held json");
        held["start"].as_u64().expect("held start count")
    }

    /// Ends the faults limited to `workspace` (others' stay).
    pub async fn clear_faults(&self, workspace: &str) {
        let status = self
            .http
            .delete(format!("{}/_fake/faults?workspace={workspace}", self.url))
            .send()
            .await
            .expect("clear faults")
            .status();
        assert_eq!(status, 204);
    }

    pub async fn fault(&self, fault: Value) {
        let status = self
            .http
            .post(format!("{}/_fake/faults", self.url))
            .json(&fault)
            .send()
            .await
            .expect("fault")
            .status();
        assert_eq!(status, 204);
    }
}
