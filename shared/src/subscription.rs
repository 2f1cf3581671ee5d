//! Start subscriptions (a CEL selector that starts a workflow) and the store port that
//! holds them. Every store operation is scoped by workspace.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::SourceType;
use crate::ids::{SubscriptionId, WorkspaceId};
use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionKind {
    Start,
    Resume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionState {
    Active,
    Paused,
    Expired,
}

impl SubscriptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Active => "active",
            SubscriptionState::Paused => "paused",
            SubscriptionState::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub workspace_id: WorkspaceId,
    pub subscription_id: SubscriptionId,
    #[serde(default = "start_kind")]
    pub kind: SubscriptionKind,
    pub source_type: SourceType,
    pub workflow_id: String,
    #[serde(default)]
    pub target_workflow_version_id: Option<String>,
    /// CEL over `event`; `None` matches every event routed to the subscription.
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default)]
    pub input_mapping: InputMapping,
    pub state: SubscriptionState,
    /// Set for webhook / vendor-push subscriptions: the connector instance they listen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_instance_id: Option<String>,
    /// Set for `scheduled` subscriptions: when they fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<crate::schedule::ScheduleSpec>>,
    /// How a burst of matching events becomes runs (none: one run per event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Box<crate::flow::FlowSpec>>,
    /// Epoch ms (RFC 3339 in JSON).
    #[serde(rename = "createdAt", with = "crate::instant::text")]
    pub created_at_ms: i64,
    #[serde(rename = "updatedAt", with = "crate::instant::text")]
    pub updated_at_ms: i64,
    /// Grows by one with every change; PATCH and DELETE are conditional on it (the
    /// `ETag`), so a PATCH racing a DELETE can never bring a deleted subscription back.
    #[serde(default)]
    pub version: u64,
}

fn start_kind() -> SubscriptionKind {
    SubscriptionKind::Start
}

impl Subscription {
    /// Only active start subscriptions ever match.
    pub fn is_matchable(&self) -> bool {
        self.kind == SubscriptionKind::Start && self.state == SubscriptionState::Active
    }
}

/// A subscription's `inputMapping` (input name → template), in key order, as a boxed
/// slice rather than a JSON map: the match function holds every subscription of a
/// workspace in memory, and a map of two entries costs ≈ 640 bytes where this costs ≈ 112.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputMapping(Box<[(String, Value)]>);

/// A borrowing iterator over an [`InputMapping`], like a JSON map's.
pub type Entries<'a> = std::iter::Map<
    std::slice::Iter<'a, (String, Value)>,
    fn(&'a (String, Value)) -> (&'a String, &'a Value),
>;

impl InputMapping {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> Entries<'_> {
        self.0.iter().map(|(key, value)| (key, value))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl From<Map<String, Value>> for InputMapping {
    fn from(map: Map<String, Value>) -> Self {
        Self(map.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a InputMapping {
    type Item = (&'a String, &'a Value);
    type IntoIter = Entries<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Serialize for InputMapping {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for InputMapping {
    /// Through a JSON map: the same key order and duplicate handling as before.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Map::deserialize(deserializer).map(Self::from)
    }
}

/// Which subscriptions an event is offered to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// Active start subscriptions of this source type in the workspace.
    SourceType(SourceType),
    /// Active start subscriptions attached to this connector instance.
    Connector(String),
}

/// One page of a workspace's subscriptions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub state: Option<SubscriptionState>,
    pub source_type: Option<SourceType>,
    pub limit: usize,
    /// Opaque position returned as `next_cursor` by the previous page.
    pub cursor: Option<String>,
}

/// A page of a workspace's subscriptions.
pub type Page = crate::listing::Page<Subscription>;

impl ListQuery {
    pub fn admits(&self, subscription: &Subscription) -> bool {
        self.state.is_none_or(|s| s == subscription.state)
            && self
                .source_type
                .is_none_or(|t| t == subscription.source_type)
    }
}

/// The read side, all the match stage needs. A port of its own so the match function
/// links none of the writing side (item building, schedules and their time zones).
#[async_trait]
pub trait SubscriptionReader: Send + Sync {
    async fn get(
        &self,
        workspace: &WorkspaceId,
        id: &SubscriptionId,
    ) -> Result<Option<Subscription>, StoreError>;

    /// Active start subscriptions of the workspace on one route.
    async fn list_matchable(
        &self,
        workspace: &WorkspaceId,
        route: &Route,
    ) -> Result<Vec<Arc<Subscription>>, StoreError>;
}

#[async_trait]
pub trait SubscriptionStore: SubscriptionReader {
    /// Creates or replaces a subscription.
    async fn put(&self, subscription: &Subscription) -> Result<(), StoreError>;

    /// Replaces a subscription only if the stored one still has `expected_version`
    /// (`StoreError::Conflict` otherwise); the new item carries `subscription.version`.
    async fn replace(
        &self,
        subscription: &Subscription,
        expected_version: u64,
    ) -> Result<(), StoreError>;

    /// The workspace's subscriptions in id order, filtered, one page at a time.
    async fn list(&self, workspace: &WorkspaceId, query: &ListQuery) -> Result<Page, StoreError>;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The compact mapping reads and writes JSON exactly as the map it replaced did:
    /// keys in order, a repeated key's last value, nested templates untouched.
    #[test]
    fn an_input_mapping_round_trips_like_a_json_map() {
        let text = r#"{"title": "${{ event.data.title }}", "repo": "a", "nested": {"z": 1, "a": [true]}, "repo": "${{ event.data.repo }}"}"#;
        let mapping: InputMapping = serde_json::from_str(text).unwrap();
        let map: Map<String, Value> = serde_json::from_str(text).unwrap();
        assert_eq!(
            serde_json::to_string(&mapping).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(mapping.len(), 3);
        assert_eq!(mapping.get("repo"), Some(&json!("${{ event.data.repo }}")));
        assert_eq!(mapping.get("missing"), None);
        let keys: Vec<&String> = mapping.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["nested", "repo", "title"]);
        assert_eq!(InputMapping::from(map), mapping);
        assert!(serde_json::from_str::<InputMapping>("[1]").is_err());
        assert!(InputMapping::default().is_empty());
    }
}
