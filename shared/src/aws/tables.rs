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

/// One table's layout: its resource in `template.yaml`, key, indexes (name, hash,
/// range; all projections `ALL`) and TTL attribute. The one statement of each layout:
/// local creation uses it, and a test holds `template.yaml` to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    pub resource: &'static str,
    pub hash: &'static str,
    pub range: Option<&'static str>,
    pub indexes: &'static [(&'static str, &'static str, &'static str)],
    pub ttl: Option<&'static str>,
}

pub const SUBSCRIPTIONS: TableSpec = TableSpec {
    resource: "SubscriptionsTable",
    hash: "workspaceId",
    range: Some("subscriptionId"),
    indexes: &[
        (SUBSCRIPTIONS_BY_ROUTE, "routeKey", "subscriptionId"),
        (SUBSCRIPTIONS_BY_STATE, "stateKey", "subscriptionId"),
        (SUBSCRIPTIONS_BY_SOURCE, "sourceKey", "subscriptionId"),
        (SUBSCRIPTIONS_BY_DUE, "dueShard", "dueKey"),
    ],
    ttl: None,
};

pub const RESUMES: TableSpec = TableSpec {
    resource: "ResumeTable",
    hash: "resumeId",
    range: None,
    indexes: &[],
    ttl: Some("expiresAt"),
};

pub const LEDGER: TableSpec = TableSpec {
    resource: "LedgerTable",
    hash: "ledgerId",
    range: None,
    indexes: &[
        (LEDGER_BY_EVENT, "workspaceEvent", "dedupKey"),
        (LEDGER_DEAD_LETTERS, "dlWorkspace", "dlSort"),
    ],
    ttl: Some("expiresAt"),
};

/// The event archive (`eventKey` = `{workspace}#{eventId}`).
pub const ARCHIVE: TableSpec = TableSpec {
    resource: "EventsTable",
    hash: "eventKey",
    range: None,
    indexes: &[(ARCHIVE_BY_WORKSPACE, "workspaceId", "receivedKey")],
    ttl: Some("expiresAt"),
};

pub const PARKED: TableSpec = TableSpec {
    resource: "ParkedEventsTable",
    hash: "parkKey",
    range: Some("eventId"),
    indexes: &[],
    ttl: Some("expiresAt"),
};

pub const FLOW: TableSpec = TableSpec {
    resource: "FlowTable",
    hash: "cellId",
    range: None,
    indexes: &[],
    ttl: Some("expiresAt"),
};

pub const CONNECTORS: TableSpec = TableSpec {
    resource: "ConnectorsTable",
    hash: "connectorInstanceId",
    range: None,
    indexes: &[(
        CONNECTORS_BY_WORKSPACE,
        "workspaceId",
        "connectorInstanceId",
    )],
    ttl: None,
};

/// Every table the template declares.
pub const ALL: [TableSpec; 7] = [
    SUBSCRIPTIONS,
    RESUMES,
    LEDGER,
    ARCHIVE,
    PARKED,
    FLOW,
    CONNECTORS,
];

/// Creates `table` with `spec`'s layout if it does not exist (and turns on its TTL).
pub async fn create(client: &Client, table: &str, spec: &TableSpec) -> Result<(), String> {
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(spec.hash, KeyType::Hash)?)
        .attribute_definitions(attr(spec.hash)?);
    if let Some(range) = spec.range {
        request = request
            .key_schema(key(range, KeyType::Range)?)
            .attribute_definitions(attr(range)?);
    }
    let mut defined = vec![spec.hash];
    defined.extend(spec.range);
    for &(name, gh, gr) in spec.indexes {
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
    if let Some(attribute) = spec.ttl {
        let ttl = TimeToLiveSpecification::builder()
            .attribute_name(attribute)
            .enabled(true)
            .build()
            .map_err(|e| e.to_string())?;
        // Already enabled is fine.
        let _ = client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(ttl)
            .send()
            .await;
    }
    Ok(())
}

pub async fn create_connectors(client: &Client, connectors: &str) -> Result<(), String> {
    create(client, connectors, &CONNECTORS).await
}

pub async fn create_archive(client: &Client, archive: &str) -> Result<(), String> {
    create(client, archive, &ARCHIVE).await
}

pub async fn create_parked(client: &Client, parked: &str) -> Result<(), String> {
    create(client, parked, &PARKED).await
}

pub async fn create_flow(client: &Client, flow: &str) -> Result<(), String> {
    create(client, flow, &FLOW).await
}

/// Creates the three pipeline tables if they do not exist.
pub async fn create_all(
    client: &Client,
    subscriptions: &str,
    resumes: &str,
    ledger: &str,
) -> Result<(), String> {
    create(client, subscriptions, &SUBSCRIPTIONS).await?;
    create(client, resumes, &RESUMES).await?;
    create(client, ledger, &LEDGER).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{TableSpec, ALL};

    /// A table's keys as `template.yaml` declares them: "" for the table, else the
    /// index name → (hash, range); and the TTL attribute.
    type Declared = (BTreeMap<String, (String, Option<String>)>, Option<String>);

    fn declared(template: &str, resource: &str) -> Declared {
        let start = template
            .find(&format!("\n  {resource}:\n"))
            .unwrap_or_else(|| panic!("{resource} is not in template.yaml"));
        let block = &template[start + 1..];
        // The block ends at the next resource (two-space indentation).
        let end = block
            .lines()
            .skip(1)
            .position(|l| l.starts_with("  ") && !l.starts_with("   "))
            .unwrap_or(usize::MAX);
        let (mut keys, mut ttl) = (BTreeMap::new(), None);
        let mut scope = String::new();
        for line in block.lines().skip(1).take(end) {
            let line = line.trim();
            if let Some(name) = line.strip_prefix("- IndexName: ") {
                scope = name.to_owned();
            } else if let Some(rest) =
                line.strip_prefix("TimeToLiveSpecification: {AttributeName: ")
            {
                ttl = rest.split(',').next().map(str::to_owned);
            } else if let Some(rest) = line.strip_prefix("- {AttributeName: ") {
                let (attribute, kind) = rest.split_once(", KeyType: ").unwrap_or(("", ""));
                let entry: &mut (String, Option<String>) = keys.entry(scope.clone()).or_default();
                match kind.trim_end_matches('}') {
                    "HASH" => entry.0 = attribute.to_owned(),
                    "RANGE" => entry.1 = Some(attribute.to_owned()),
                    _ => {}
                }
            }
        }
        (keys, ttl)
    }

    fn spec_keys(spec: &TableSpec) -> Declared {
        let mut keys = BTreeMap::from([(
            String::new(),
            (spec.hash.to_owned(), spec.range.map(str::to_owned)),
        )]);
        for (name, hash, range) in spec.indexes {
            keys.insert(
                (*name).to_owned(),
                ((*hash).to_owned(), Some((*range).to_owned())),
            );
        }
        (keys, spec.ttl.map(str::to_owned))
    }

    #[test]
    fn every_table_layout_is_the_one_the_template_deploys() {
        let template = include_str!("../../../template.yaml");
        for spec in ALL {
            assert_eq!(
                declared(template, spec.resource),
                spec_keys(&spec),
                "{} in template.yaml and aws/tables.rs",
                spec.resource
            );
        }
        let drifted = TableSpec {
            range: Some("eventId"),
            ..super::FLOW
        };
        assert_ne!(
            declared(template, "FlowTable"),
            spec_keys(&drifted),
            "a layout that differs is caught"
        );
        let tables = template.matches("Type: AWS::DynamoDB::Table").count();
        assert_eq!(
            tables,
            ALL.len(),
            "every table of the template has a layout here"
        );
    }
}
