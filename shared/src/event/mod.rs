//! The `NormalizedEvent` envelope every source is turned into. Deserializing one
//! validates it completely (schema version, kind taxonomy, required fields, no unknown
//! keys), so a value of this type is always a well-formed event.

pub mod taxonomy;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::EventId;
pub use taxonomy::{validate_kind, InvalidKindError};

/// The only envelope schema version there is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchemaVersion {
    #[default]
    #[serde(rename = "1")]
    V1,
}

/// Where a signal came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceType {
    Manual,
    Scheduled,
    Webhook,
    VendorPush,
    Pull,
    Internal,
}

impl SourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Manual => "manual",
            SourceType::Scheduled => "scheduled",
            SourceType::Webhook => "webhook",
            SourceType::VendorPush => "vendor-push",
            SourceType::Pull => "pull",
            SourceType::Internal => "internal",
        }
    }
}

/// A kind that passed [`validate_kind`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventKind(String);

impl EventKind {
    pub fn new(kind: impl Into<String>) -> Result<Self, InvalidKindError> {
        let kind = kind.into();
        validate_kind(&kind)?;
        Ok(Self(kind))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EventKind {
    type Error = InvalidKindError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<EventKind> for String {
    fn from(value: EventKind) -> String {
        value.0
    }
}

/// `source.occurredAt`: an opaque, non-empty string (never parsed as a date).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OccurredAt(String);

impl OccurredAt {
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        (!value.is_empty()).then_some(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OccurredAt {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value).ok_or("occurredAt must not be empty")
    }
}

impl From<OccurredAt> for String {
    fn from(value: OccurredAt) -> String {
        value.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSource {
    #[serde(rename = "type")]
    pub source_type: SourceType,
    #[serde(default)]
    pub connector_instance_id: Option<String>,
    #[serde(default)]
    pub subscription_id: Option<String>,
    #[serde(default)]
    pub vendor: Option<String>,
    pub occurred_at: OccurredAt,
}

/// The signal as it arrived: lower-cased header names and the raw body text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPayload {
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NormalizedEvent {
    #[serde(default)]
    pub schema_version: SchemaVersion,
    pub event_id: EventId,
    pub source: EventSource,
    pub kind: EventKind,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(default)]
    pub raw: RawPayload,
    /// Loop-guard counter: how many trigger hops led to this event (0 for external signals).
    #[serde(default)]
    pub depth: u32,
}

/// A normalized event on its way to the match stage, with the tenant it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueuedEvent {
    pub workspace_id: crate::ids::WorkspaceId,
    pub event: NormalizedEvent,
    /// Offered again by an operator (event replay): matched against the subscriptions
    /// as stored now, not a cached index that may predate a new subscription.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// The W3C trace the event belongs to (from the door that accepted it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<crate::trace::TraceParent>,
    /// When the event was accepted at its door (epoch ms), for the end-to-end latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_ms: Option<i64>,
}

impl NormalizedEvent {
    /// The JSON form selectors and input mappings see as `event`.
    pub fn to_json(&self) -> Value {
        // Serializing plain data (strings, maps, numbers) cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "eventId": "e1",
            "source": {"type": "manual", "occurredAt": "2026-01-01T00:00:00Z"},
            "kind": "manual.fire"
        })
    }

    #[test]
    fn minimal_envelope_gets_defaults() {
        let event: NormalizedEvent = serde_json::from_value(minimal()).unwrap();
        assert_eq!(event.schema_version, SchemaVersion::V1);
        assert_eq!(event.subject, "");
        assert!(event.data.is_empty());
        assert_eq!(event.raw, RawPayload::default());
        assert_eq!(event.depth, 0);
        assert_eq!(event.source.connector_instance_id, None);
        let back = event.to_json();
        assert_eq!(back["schemaVersion"], "1");
        assert_eq!(back["source"]["type"], "manual");
    }

    #[test]
    fn other_schema_versions_are_rejected() {
        let mut value = minimal();
        value["schemaVersion"] = json!("2");
        assert!(serde_json::from_value::<NormalizedEvent>(value).is_err());
    }

    #[test]
    fn unknown_keys_are_rejected_at_every_level() {
        for pointer in ["", "/source", "/raw"] {
            let mut value = minimal();
            value["raw"] = json!({});
            value
                .pointer_mut(pointer)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert("surprise".into(), json!(1));
            let err = serde_json::from_value::<NormalizedEvent>(value).unwrap_err();
            assert!(err.to_string().contains("surprise"), "{pointer}: {err}");
        }
    }

    #[test]
    fn invalid_kind_and_empty_fields_are_rejected() {
        let mut value = minimal();
        value["kind"] = json!("workflow.unknown");
        let err = serde_json::from_value::<NormalizedEvent>(value).unwrap_err();
        assert!(err.to_string().contains("workflow.unknown"));
        let mut value = minimal();
        value["eventId"] = json!("");
        assert!(serde_json::from_value::<NormalizedEvent>(value).is_err());
        let mut value = minimal();
        value["source"]["occurredAt"] = json!("");
        assert!(serde_json::from_value::<NormalizedEvent>(value).is_err());
    }

    #[test]
    fn source_types_use_their_wire_names() {
        let parsed: SourceType = serde_json::from_value(json!("vendor-push")).unwrap();
        assert_eq!(parsed, SourceType::VendorPush);
        assert_eq!(parsed.as_str(), "vendor-push");
    }
}
