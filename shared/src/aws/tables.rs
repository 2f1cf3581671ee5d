//! The table layouts (one table per concern: different access patterns, TTLs and IAM
//! scopes) and their creation, used by local setup and the emulator tests. The SAM
//! template declares the same schema for real deployments.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

/// Subscriptions: `workspaceId` / `subscriptionId`; GSI `byRoute` (`routeKey` =
/// `{workspace}#source:{type}` or `{workspace}#connector:{id}`, present only while the
/// subscription is an active start subscription, so the index is sparse).
pub const SUBSCRIPTIONS_BY_ROUTE: &str = "byRoute";
/// Subscriptions GSI `byState` (`stateKey` = `{workspace}#{state}` / `subscriptionId`):
/// listings filtered by state.
pub const SUBSCRIPTIONS_BY_STATE: &str = "byState";
/// Subscriptions GSI `bySource` (`sourceKey` = `{workspace}#{sourceType}` /
/// `subscriptionId`): listings filtered by source type only.
pub const SUBSCRIPTIONS_BY_SOURCE: &str = "bySource";
/// Subscriptions GSI `byDue` (`dueShard` = `0`..`15` / `dueKey` = `{nextFireMs:013}#{id}`):
/// sparse, active scheduled subscriptions only, sharded so no workspace makes a hot key.
pub const SUBSCRIPTIONS_BY_DUE: &str = "byDue";
/// Connectors: `connectorInstanceId`; GSI `byWorkspace` (`workspaceId` / `connectorInstanceId`).
pub const CONNECTORS_BY_WORKSPACE: &str = "byWorkspace";
/// Ledger: `ledgerId` (`{workspace}#{dedupKey}`); GSI `byEvent` (`workspaceEvent` =
/// `{workspace}#{eventId}` / `dedupKey`).
pub const LEDGER_BY_EVENT: &str = "byEvent";
/// Ledger GSI `deadLetters` (`dlWorkspace` / `dlSort`): sparse, dead letters only.
pub const LEDGER_DEAD_LETTERS: &str = "deadLetters";
/// Archive GSI `byWorkspace` (`workspaceId` / `receivedKey` = `{receivedAtMs:013}#{eventId}`).
pub const ARCHIVE_BY_WORKSPACE: &str = "byWorkspace";

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, String> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| e.to_string())
}

fn attr(name: &str) -> Result<AttributeDefinition, String> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| e.to_string())
}

fn index(name: &str, hash: &str, range: &str) -> Result<GlobalSecondaryIndex, String> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash)?)
        .key_schema(key(range, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(|e| e.to_string())
}

async fn create(
    client: &Client,
    table: &str,
    hash: &str,
    range: Option<&str>,
    gsis: &[(&str, &str, &str)],
    ttl: Option<&str>,
) -> Result<(), String> {
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(hash, KeyType::Hash)?)
        .attribute_definitions(attr(hash)?);
    if let Some(range) = range {
        request = request
            .key_schema(key(range, KeyType::Range)?)
            .attribute_definitions(attr(range)?);
    }
    let mut defined = vec![hash];
    defined.extend(range);
    for &(name, gh, gr) in gsis {
        request = request.global_secondary_indexes(index(name, gh, gr)?);
        for attribute in [gh, gr] {
            if !defined.contains(&attribute) {
                defined.push(attribute);
                request = request.attribute_definitions(attr(attribute)?);
            }
        }
    }
    match request.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(format!("create table {table}: {}", super::describe(&e))),
    }
    if let Some(attribute) = ttl {
        let spec = TimeToLiveSpecification::builder()
            .attribute_name(attribute)
            .enabled(true)
            .build()
            .map_err(|e| e.to_string())?;
        // Already enabled is fine.
        let _ = client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(spec)
            .send()
            .await;
    }
    Ok(())
}

/// Creates the connectors table (`connectorInstanceId`) if it does not exist.
pub async fn create_connectors(client: &Client, connectors: &str) -> Result<(), String> {
    create(
        client,
        connectors,
        "connectorInstanceId",
        None,
        &[(
            CONNECTORS_BY_WORKSPACE,
            "workspaceId",
            "connectorInstanceId",
        )],
        None,
    )
    .await
}

/// Creates the event archive (`eventKey` = `{workspace}#{eventId}`, TTL `expiresAt`).
pub async fn create_archive(client: &Client, archive: &str) -> Result<(), String> {
    create(
        client,
        archive,
        "eventKey",
        None,
        &[(ARCHIVE_BY_WORKSPACE, "workspaceId", "receivedKey")],
        Some("expiresAt"),
    )
    .await
}

/// Creates the parked-events table (`parkKey` / `eventId`, TTL `expiresAt`).
pub async fn create_parked(client: &Client, parked: &str) -> Result<(), String> {
    create(
        client,
        parked,
        "parkKey",
        Some("eventId"),
        &[],
        Some("expiresAt"),
    )
    .await
}

/// Creates the three pipeline tables if they do not exist.
pub async fn create_all(
    client: &Client,
    subscriptions: &str,
    resumes: &str,
    ledger: &str,
) -> Result<(), String> {
    create(
        client,
        subscriptions,
        "workspaceId",
        Some("subscriptionId"),
        &[
            (SUBSCRIPTIONS_BY_ROUTE, "routeKey", "subscriptionId"),
            (SUBSCRIPTIONS_BY_STATE, "stateKey", "subscriptionId"),
            (SUBSCRIPTIONS_BY_SOURCE, "sourceKey", "subscriptionId"),
            (SUBSCRIPTIONS_BY_DUE, "dueShard", "dueKey"),
        ],
        None,
    )
    .await?;
    create(client, resumes, "resumeId", None, &[], Some("expiresAt")).await?;
    create(
        client,
        ledger,
        "ledgerId",
        None,
        &[
            (LEDGER_BY_EVENT, "workspaceEvent", "dedupKey"),
            (LEDGER_DEAD_LETTERS, "dlWorkspace", "dlSort"),
        ],
        Some("expiresAt"),
    )
    .await
}

/// Creates the flow-control table (`cellId`, TTL `expiresAt`).
pub async fn create_flow(client: &Client, flow: &str) -> Result<(), String> {
    create(client, flow, "cellId", None, &[], Some("expiresAt")).await
}
