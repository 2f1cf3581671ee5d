//! Identifier newtypes: a workspace id, an event id and a dedup key are all strings on
//! the wire, and mixing them up would be a tenant-isolation or dedup bug.

use std::fmt;
use std::sync::Arc;

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// An identifier arrived empty.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0} must not be empty")]
pub struct EmptyIdError(pub &'static str);

/// Reads an id from the text it is given, borrowed or owned, with one copy.
struct IdVisitor(&'static str);

impl Visitor<'_> for IdVisitor {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a non-empty {}", self.0)
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
        if value.is_empty() {
            return Err(E::custom(EmptyIdError(self.0)));
        }
        Ok(Arc::from(value))
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        // Shared, not owned: an id is copied into every message, ledger entry and log
        // line of its event, and an `Arc` clone is a count, not an allocation.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a non-empty string.
            pub fn new(value: impl AsRef<str>) -> Result<Self, EmptyIdError> {
                let value = value.as_ref();
                if value.is_empty() {
                    return Err(EmptyIdError($label));
                }
                Ok(Self(Arc::from(value)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = EmptyIdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                String::from(&*value.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(IdVisitor($label)).map(Self)
            }
        }
    };
}

string_id!(
    /// The tenant: every read and write is scoped by it.
    WorkspaceId,
    "workspaceId"
);
string_id!(
    /// The id of one normalized event; redeliveries of one signal share it.
    EventId,
    "eventId"
);
string_id!(
    /// A start subscription's id (server-minted uuid4 hex).
    SubscriptionId,
    "subscriptionId"
);
string_id!(
    /// A resume wait's id: `res_` + sha256 of its `(runId, stepId, eventKey)`.
    ResumeId,
    "resumeId"
);
