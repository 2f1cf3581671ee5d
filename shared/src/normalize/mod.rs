//! Normalizers: every source (manual fire, workflow lifecycle envelope, webhook) becomes
//! one `NormalizedEvent`. Event ids are derived deterministically from the signal, so an
//! at-least-once redelivery of the same signal collides in the dedup ledger.

pub mod canonical_json;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};
use thiserror::Error;
use uuid::Uuid;

use crate::event::{
    EventKind, EventSource, InvalidKindError, NormalizedEvent, OccurredAt, RawPayload,
    SchemaVersion, SourceType,
};
use crate::ids::EventId;
pub use canonical_json::to_canonical_string;

/// Why a signal could not become an event. Callers drop (and log) such signals:
/// redelivering them cannot help.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NormalizeError {
    #[error("required field {0} is missing or empty")]
    MissingField(&'static str),
    #[error("envelope has neither kind nor status")]
    NoKindOrStatus,
    #[error("field {field} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error(transparent)]
    InvalidKind(#[from] InvalidKindError),
}

static EVENT_ID_NAMESPACE: LazyLock<Uuid> =
    LazyLock::new(|| Uuid::new_v5(&Uuid::NAMESPACE_URL, b"custos.trigger/normalized-event-id"));

/// `uuid5(namespace, parts joined by "\0")`, canonical lowercase dashed form.
pub fn derive_event_id(parts: &[&str]) -> EventId {
    let joined = parts.join("\0");
    let id = Uuid::new_v5(&EVENT_ID_NAMESPACE, joined.as_bytes()).to_string();
    // A rendered uuid is never empty.
    EventId::new(id).unwrap_or_else(|_| unreachable!("uuid strings are non-empty"))
}

/// A manual `:fire` of one start subscription.
pub fn manual_fire(
    occurred_at: &str,
    subscription_id: Option<&str>,
    inputs: Map<String, Value>,
    event_id: Option<EventId>,
) -> Result<NormalizedEvent, NormalizeError> {
    let occurred =
        OccurredAt::new(occurred_at).ok_or(NormalizeError::MissingField("occurredAt"))?;
    let body = to_canonical_string(&Value::Object(inputs.clone()));
    let subscription = subscription_id.unwrap_or("");
    let event_id =
        event_id.unwrap_or_else(|| derive_event_id(&["manual", subscription, occurred_at, &body]));
    Ok(NormalizedEvent {
        schema_version: SchemaVersion::V1,
        event_id,
        source: EventSource {
            source_type: SourceType::Manual,
            connector_instance_id: None,
            subscription_id: subscription_id.map(str::to_owned),
            vendor: None,
            occurred_at: occurred,
        },
        kind: EventKind::new("manual.fire")?,
        subject: subscription.to_owned(),
        data: inputs,
        raw: RawPayload {
            headers: BTreeMap::new(),
            body,
        },
        depth: 0,
    })
}

/// Which lifecycle domain a workflow envelope is mapped into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleDomain {
    Workflow,
    Run,
}

impl LifecycleDomain {
    fn as_str(self) -> &'static str {
        match self {
            LifecycleDomain::Workflow => "workflow",
            LifecycleDomain::Run => "run",
        }
    }
}

fn status_suffix(status: &str) -> Option<&'static str> {
    match status {
        "queued" | "running" | "started" => Some("started"),
        "succeeded" | "completed" => Some("completed"),
        "failed" => Some("failed"),
        "cancelled" => Some("cancelled"),
        _ => None,
    }
}

/// Present means: not null and not `""`. Non-string scalars are stringified.
fn text_field(envelope: &Map<String, Value>, name: &str) -> Option<String> {
    match envelope.get(name)? {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn required(envelope: &Map<String, Value>, name: &'static str) -> Result<String, NormalizeError> {
    text_field(envelope, name).ok_or(NormalizeError::MissingField(name))
}

fn lifecycle_kind(
    envelope: &Map<String, Value>,
    domain: LifecycleDomain,
) -> Result<EventKind, NormalizeError> {
    if let Some(kind) = text_field(envelope, "kind") {
        return Ok(EventKind::new(kind)?);
    }
    let status = text_field(envelope, "status").ok_or(NormalizeError::NoKindOrStatus)?;
    // An unmapped status passes through verbatim and fails as a taxonomy error.
    let kind = match status_suffix(&status) {
        Some(suffix) => format!("{}.{suffix}", domain.as_str()),
        None => status,
    };
    Ok(EventKind::new(kind)?)
}

fn trigger_depth(envelope: &Map<String, Value>) -> Result<u32, NormalizeError> {
    match envelope.get("triggerDepth") {
        None | Some(Value::Null) => Ok(0),
        Some(value) => value
            .as_u64()
            .and_then(|d| u32::try_from(d).ok())
            .ok_or_else(|| NormalizeError::InvalidField {
                field: "triggerDepth",
                reason: format!("expected a non-negative integer, got {value}"),
            }),
    }
}

/// A workflow lifecycle envelope from the Workflow Service
/// (`{kind?, workflowVersionId, runId, workspace?, status?, outputs?, stepId?,
/// occurredAt, triggerDepth?}`).
pub fn workflow_lifecycle(
    envelope: &Map<String, Value>,
    domain: LifecycleDomain,
    event_id: Option<EventId>,
) -> Result<NormalizedEvent, NormalizeError> {
    let occurred_at = required(envelope, "occurredAt")?;
    let run_id = required(envelope, "runId")?;
    let workflow_version_id = required(envelope, "workflowVersionId")?;
    let kind = lifecycle_kind(envelope, domain)?;
    let depth = trigger_depth(envelope)?;

    let mut data = Map::new();
    data.insert(
        "workflowVersionId".into(),
        Value::String(workflow_version_id),
    );
    data.insert("runId".into(), Value::String(run_id.clone()));
    for optional in ["workspace", "status", "outputs", "stepId"] {
        match envelope.get(optional) {
            None | Some(Value::Null) => {}
            Some(value) => {
                data.insert(optional.into(), value.clone());
            }
        }
    }
    // Two steps of one run can emit the same kind at the same instant: the step is part
    // of the identity when there is one (run-level ids keep the upstream formula).
    let step_id = envelope.get("stepId").and_then(Value::as_str);
    let event_id = event_id.unwrap_or_else(|| match step_id {
        Some(step) => {
            derive_event_id(&[domain.as_str(), &run_id, step, kind.as_str(), &occurred_at])
        }
        None => derive_event_id(&[domain.as_str(), &run_id, kind.as_str(), &occurred_at]),
    });
    Ok(NormalizedEvent {
        schema_version: SchemaVersion::V1,
        event_id,
        source: EventSource {
            source_type: SourceType::Internal,
            connector_instance_id: None,
            subscription_id: None,
            vendor: None,
            occurred_at: OccurredAt::new(occurred_at)
                .ok_or(NormalizeError::MissingField("occurredAt"))?,
        },
        kind,
        subject: run_id,
        data,
        raw: RawPayload {
            headers: BTreeMap::new(),
            body: to_canonical_string(&Value::Object(envelope.clone())),
        },
        depth,
    })
}

/// One verified webhook delivery to a connector instance.
#[derive(Debug, Clone)]
pub struct WebhookDelivery<'a> {
    pub connector_instance_id: &'a str,
    /// The provider's delivery id (`webhook-id`, `X-GitHub-Delivery`): retries reuse it.
    pub delivery_id: &'a str,
    pub occurred_at: &'a str,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// Mapped kind (e.g. `github.push`); `webhook.received` when the connector has no mapping.
    pub kind: Option<EventKind>,
    pub vendor: Option<String>,
}

/// A generic webhook: raw body and lower-cased headers kept, a JSON object body becomes
/// `data` (any other JSON value is `data.payload`), the delivery id fixes the event id.
pub fn webhook(delivery: WebhookDelivery<'_>) -> Result<NormalizedEvent, NormalizeError> {
    if delivery.connector_instance_id.is_empty() {
        return Err(NormalizeError::MissingField("connectorInstanceId"));
    }
    if delivery.delivery_id.is_empty() {
        return Err(NormalizeError::MissingField("deliveryId"));
    }
    let occurred =
        OccurredAt::new(delivery.occurred_at).ok_or(NormalizeError::MissingField("occurredAt"))?;
    let kind = match delivery.kind {
        Some(kind) => kind,
        None => EventKind::new("webhook.received")?,
    };
    let data = match serde_json::from_str::<Value>(&delivery.body) {
        Ok(Value::Object(map)) => map,
        Ok(other) => Map::from_iter([("payload".to_owned(), other)]),
        Err(_) => Map::new(),
    };
    let headers = delivery
        .headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    Ok(NormalizedEvent {
        schema_version: SchemaVersion::V1,
        event_id: derive_event_id(&[
            "webhook",
            delivery.connector_instance_id,
            delivery.delivery_id,
        ]),
        source: EventSource {
            source_type: SourceType::Webhook,
            connector_instance_id: Some(delivery.connector_instance_id.to_owned()),
            subscription_id: None,
            vendor: delivery.vendor,
            occurred_at: occurred,
        },
        kind,
        subject: delivery.delivery_id.to_owned(),
        data,
        raw: RawPayload {
            headers,
            body: delivery.body,
        },
        depth: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn envelope() -> Map<String, Value> {
        obj(json!({
            "workflowVersionId": "wv1", "runId": "r1", "workspace": "ws1",
            "status": "succeeded", "occurredAt": "2026-01-01T00:00:00Z"
        }))
    }

    #[test]
    fn derived_ids_are_deterministic_and_respect_part_boundaries() {
        assert_eq!(derive_event_id(&["a", "bc"]), derive_event_id(&["a", "bc"]));
        assert_ne!(derive_event_id(&["a", "bc"]), derive_event_id(&["ab", "c"]));
        let id = derive_event_id(&["x"]);
        assert_eq!(id.as_str().len(), 36);
        assert_eq!(Uuid::parse_str(id.as_str()).unwrap().get_version_num(), 5);
    }

    #[test]
    fn manual_fire_builds_the_envelope() {
        let inputs = obj(json!({"b": 2, "a": "x"}));
        let event = manual_fire(
            "2026-01-01T00:00:00.000001+00:00",
            Some("sub1"),
            inputs.clone(),
            None,
        )
        .unwrap();
        assert_eq!(event.kind.as_str(), "manual.fire");
        assert_eq!(event.source.source_type, SourceType::Manual);
        assert_eq!(event.source.subscription_id.as_deref(), Some("sub1"));
        assert_eq!(event.subject, "sub1");
        assert_eq!(event.data, inputs);
        assert_eq!(event.raw.body, r#"{"a": "x", "b": 2}"#);
        assert_eq!(
            serde_json::from_str::<Value>(&event.raw.body).unwrap(),
            Value::Object(inputs.clone())
        );
        let again = manual_fire(
            "2026-01-01T00:00:00.000001+00:00",
            Some("sub1"),
            inputs,
            None,
        )
        .unwrap();
        assert_eq!(event.event_id, again.event_id);
    }

    #[test]
    fn manual_fire_honours_explicit_id_and_rejects_empty_time() {
        let explicit = EventId::new("evt-1").unwrap();
        let event = manual_fire("t", None, Map::new(), Some(explicit.clone())).unwrap();
        assert_eq!(event.event_id, explicit);
        assert_eq!(event.subject, "");
        assert_eq!(
            manual_fire("", None, Map::new(), None).unwrap_err(),
            NormalizeError::MissingField("occurredAt")
        );
    }

    #[test]
    fn status_map_covers_every_upstream_status() {
        for (status, kind) in [
            ("queued", "workflow.started"),
            ("running", "workflow.started"),
            ("started", "workflow.started"),
            ("succeeded", "workflow.completed"),
            ("completed", "workflow.completed"),
            ("failed", "workflow.failed"),
            ("cancelled", "workflow.cancelled"),
        ] {
            let mut env = envelope();
            env.insert("status".into(), json!(status));
            let event = workflow_lifecycle(&env, LifecycleDomain::Workflow, None).unwrap();
            assert_eq!(event.kind.as_str(), kind, "{status}");
        }
        let mut env = envelope();
        env.insert("status".into(), json!("paused"));
        assert!(matches!(
            workflow_lifecycle(&env, LifecycleDomain::Workflow, None),
            Err(NormalizeError::InvalidKind(e)) if e.kind == "paused"
        ));
    }

    #[test]
    fn run_domain_variant_maps_into_run_kinds() {
        let event = workflow_lifecycle(&envelope(), LifecycleDomain::Run, None).unwrap();
        assert_eq!(event.kind.as_str(), "run.completed");
        let mut env = envelope();
        env.insert("status".into(), json!("failed"));
        let event = workflow_lifecycle(&env, LifecycleDomain::Run, None).unwrap();
        assert_eq!(event.kind.as_str(), "run.failed");
    }

    #[test]
    fn explicit_kind_beats_status_and_is_validated() {
        let mut env = envelope();
        env.insert("kind".into(), json!("step.waiting"));
        let event = workflow_lifecycle(&env, LifecycleDomain::Workflow, None).unwrap();
        assert_eq!(event.kind.as_str(), "step.waiting");
        env.insert("kind".into(), json!("step.done"));
        assert!(matches!(
            workflow_lifecycle(&env, LifecycleDomain::Workflow, None),
            Err(NormalizeError::InvalidKind(_))
        ));
    }

    #[test]
    fn required_fields_are_enforced() {
        for field in ["occurredAt", "runId", "workflowVersionId"] {
            for missing in [None, Some(Value::Null), Some(json!(""))] {
                let mut env = envelope();
                match missing {
                    None => {
                        env.remove(field);
                    }
                    Some(v) => {
                        env.insert(field.into(), v);
                    }
                }
                assert_eq!(
                    workflow_lifecycle(&env, LifecycleDomain::Workflow, None).unwrap_err(),
                    NormalizeError::MissingField(field)
                );
            }
        }
        let mut env = envelope();
        env.remove("status");
        assert_eq!(
            workflow_lifecycle(&env, LifecycleDomain::Workflow, None).unwrap_err(),
            NormalizeError::NoKindOrStatus
        );
    }

    #[test]
    fn lifecycle_event_carries_data_raw_body_and_a_redelivery_stable_id() {
        let mut env = envelope();
        env.insert("stepId".into(), json!("s1"));
        env.insert("outputs".into(), json!({"o": 1}));
        env.insert("triggerDepth".into(), json!(3));
        let event = workflow_lifecycle(&env, LifecycleDomain::Workflow, None).unwrap();
        assert_eq!(
            Value::Object(event.data.clone()),
            json!({"workflowVersionId": "wv1", "runId": "r1", "workspace": "ws1",
                   "status": "succeeded", "outputs": {"o": 1}, "stepId": "s1"})
        );
        assert_eq!(event.subject, "r1");
        assert_eq!(event.source.source_type, SourceType::Internal);
        assert_eq!(event.depth, 3);
        assert_eq!(
            serde_json::from_str::<Value>(&event.raw.body).unwrap(),
            Value::Object(env.clone())
        );
        let redelivered = workflow_lifecycle(&env, LifecycleDomain::Workflow, None).unwrap();
        assert_eq!(event.event_id, redelivered.event_id);
        assert_eq!(
            event.event_id,
            derive_event_id(&[
                "workflow",
                "r1",
                "s1",
                "workflow.completed",
                "2026-01-01T00:00:00Z"
            ])
        );
        // Without a step, the run-level formula.
        env.remove("stepId");
        assert_eq!(
            workflow_lifecycle(&env, LifecycleDomain::Workflow, None)
                .unwrap()
                .event_id,
            derive_event_id(&[
                "workflow",
                "r1",
                "workflow.completed",
                "2026-01-01T00:00:00Z"
            ])
        );
    }

    #[test]
    fn two_steps_of_a_run_with_the_same_kind_and_instant_get_different_ids() {
        let ids: Vec<EventId> = ["s1", "s2"]
            .iter()
            .map(|step| {
                let mut env = envelope();
                env.insert("stepId".into(), json!(step));
                workflow_lifecycle(&env, LifecycleDomain::Workflow, None)
                    .unwrap()
                    .event_id
            })
            .collect();
        assert_ne!(ids[0], ids[1]);
    }

    #[test]
    fn non_string_required_values_are_stringified_and_bad_depth_refused() {
        let mut env = envelope();
        env.insert("runId".into(), json!(42));
        assert_eq!(
            workflow_lifecycle(&env, LifecycleDomain::Workflow, None)
                .unwrap()
                .subject,
            "42"
        );
        env.insert("triggerDepth".into(), json!(-1));
        assert!(matches!(
            workflow_lifecycle(&env, LifecycleDomain::Workflow, None),
            Err(NormalizeError::InvalidField {
                field: "triggerDepth",
                ..
            })
        ));
    }

    fn delivery(body: &str) -> WebhookDelivery<'_> {
        WebhookDelivery {
            connector_instance_id: "ci1",
            delivery_id: "msg_1",
            occurred_at: "1700000000",
            headers: BTreeMap::from([("Webhook-Id".to_owned(), "msg_1".to_owned())]),
            body: body.to_owned(),
            kind: None,
            vendor: None,
        }
    }

    #[test]
    fn webhook_keeps_raw_body_lowercases_headers_and_derives_id_from_delivery() {
        let event = webhook(delivery(r#"{"action":"opened"}"#)).unwrap();
        assert_eq!(event.kind.as_str(), "webhook.received");
        assert_eq!(event.source.source_type, SourceType::Webhook);
        assert_eq!(event.source.connector_instance_id.as_deref(), Some("ci1"));
        assert_eq!(
            event.raw.headers.get("webhook-id").map(String::as_str),
            Some("msg_1")
        );
        assert_eq!(event.raw.body, r#"{"action":"opened"}"#);
        assert_eq!(event.data.get("action"), Some(&json!("opened")));
        let again = webhook(delivery("different body")).unwrap();
        assert_eq!(event.event_id, again.event_id);
        assert!(again.data.is_empty());
        assert_eq!(
            webhook(delivery("[1]")).unwrap().data.get("payload"),
            Some(&json!([1]))
        );
    }
}
