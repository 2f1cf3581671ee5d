//! `devctl`: developer commands against a deployed stack (the local emulator through
//! `AWS_ENDPOINT_URL`, or a real account), written on the service's own adapters so the
//! stored formats never drift.
//!
//! ```text
//! devctl put-subscription <table> <subscription-json>
//! devctl resume-wait <table> <workspace> <runId> <stepId> <eventKey> [ttl-seconds]
//! devctl event-status <ledger-table> <workspace> <eventId>
//! devctl send <queue-url> <body-json>
//! devctl event-id <workflow-envelope-json>
//! devctl put-connector <connectors-table> <connector-json>
//! devctl webhook <api-url> <connectorInstanceId> <whsec_secret> <body-json>
//! devctl create-tables <subscriptions> <resumes> <ledger>
//! devctl backfill-subscriptions <table>     # upgrade step: index keys on older items
//! ```

use std::process::ExitCode;

use custos_trigger::aws::{
    self, DynamoConnectorStore, DynamoLedger, DynamoResumeStore, DynamoSubscriptionStore,
};
use custos_trigger::clock::{Clock, SystemClock};
use custos_trigger::dedup::Ledger;
use custos_trigger::ids::{EventId, WorkspaceId};
use custos_trigger::resume::{ResumeKey, ResumeStore, ResumeWait};
use custos_trigger::subscription::{Subscription, SubscriptionStore};
use custos_trigger::webhook::{ConnectorInstance, ConnectorStore};
use serde_json::Value;

type Failure = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devctl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &[String]) -> Result<(), Failure> {
    // A developer's shell: credentials and region may come from a profile, so the full
    // default chain here (the functions read only their Lambda environment).
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(aws::https_client())
        .load()
        .await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["put-subscription", table, json] => {
            let mut value: Value = serde_json::from_str(json)?;
            let now = SystemClock.now_rfc3339();
            for field in ["createdAt", "updatedAt"] {
                if let Some(object) = value.as_object_mut() {
                    object.entry(field).or_insert_with(|| Value::String(now.clone()));
                }
            }
            let subscription: Subscription = serde_json::from_value(value)?;
            DynamoSubscriptionStore::new(dynamodb, *table).put(&subscription).await?;
            println!("{}", serde_json::to_string(&subscription)?);
        }
        ["resume-wait", table, workspace, run_id, step_id, event_key, rest @ ..] => {
            let ttl: i64 = rest.first().map_or(Ok(3600), |t| t.parse())?;
            let key = ResumeKey {
                run_id: (*run_id).to_owned(),
                step_id: (*step_id).to_owned(),
                event_key: (*event_key).to_owned(),
            };
            let wait = ResumeWait {
                resume_id: key.resume_id(),
                run_id: key.run_id,
                step_id: key.step_id,
                event_key: key.event_key,
                selector: None,
                workspace_id: Some(WorkspaceId::new(*workspace)?),
                expires_at: SystemClock.now_secs() + ttl,
                generation: "g1".into(),
                taken: None,
                consumed_by: None,
            };
            DynamoResumeStore::new(dynamodb, *table).put(&wait).await?;
            println!("{}", serde_json::to_string(&wait)?);
        }
        ["event-status", table, workspace, event_id] => {
            let entries = DynamoLedger::new(dynamodb, *table)
                .for_event(&WorkspaceId::new(*workspace)?, &EventId::new(*event_id)?)
                .await?;
            println!("{}", serde_json::to_string_pretty(&entries)?);
        }
        ["send", queue_url, body] => {
            serde_json::from_str::<Value>(body)?;
            let output = aws_sdk_sqs::Client::new(&config)
                .send_message()
                .queue_url(*queue_url)
                .message_body(*body)
                .send()
                .await?;
            println!("{}", output.message_id().unwrap_or_default());
        }
        ["event-id", envelope] => {
            let queued = custos_trigger::stage::ingest::lifecycle_envelope(&serde_json::from_str(envelope)?)?;
            println!("{}", queued.event.event_id);
        }
        ["backfill-subscriptions", table] => {
            let report = DynamoSubscriptionStore::new(dynamodb, *table)
                .backfill_index_keys()
                .await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        ["put-connector", table, json] => {
            let connector: ConnectorInstance = serde_json::from_str(json)?;
            connector.validate()?;
            DynamoConnectorStore::new(dynamodb, *table).put(&connector).await?;
            println!("{}", serde_json::to_string(&connector)?);
        }
        ["webhook", api_url, connector, secret, body] => {
            let (status, answer) = send_webhook(api_url, connector, secret, body).await?;
            println!("{status} {answer}");
        }
        ["create-tables", subscriptions, resumes, ledger] => {
            aws::tables::create_all(&dynamodb, subscriptions, resumes, ledger).await?;
        }
        _ => return Err("usage: see the module documentation (devctl put-subscription|resume-wait|event-status|send|event-id|put-connector|webhook|create-tables|backfill-subscriptions ...)".into()),
    }
    Ok(())
}

/// Signs `body` the Standard Webhooks way and posts it, as a provider would.
async fn send_webhook(
    api_url: &str,
    connector: &str,
    secret: &str,
    body: &str,
) -> Result<(u16, String), Failure> {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let key = custos_trigger::webhook::verify::standard_key(secret)
        .ok_or("the secret is not whsec_<base64>")?;
    let id = format!("msg_{}", SystemClock.now_ms());
    let timestamp = SystemClock.now_secs().to_string();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key)?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/webhooks/{connector}",
            api_url.trim_end_matches('/')
        ))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp)
        .header("webhook-signature", format!("v1,{signature}"))
        .body(body.to_owned())
        .send()
        .await?;
    Ok((response.status().as_u16(), response.text().await?))
}
