//! Identifier newtypes: a workspace id, an event id and a dedup key are all strings on
//! the wire, and mixing them up would be a tenant-isolation or dedup bug.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An identifier arrived empty.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0} must not be empty")]
pub struct EmptyIdError(pub &'static str);

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Wraps a non-empty string.
            pub fn new(value: impl Into<String>) -> Result<Self, EmptyIdError> {
                let value = value.into();
                if value.is_empty() {
                    return Err(EmptyIdError($label));
                }
                Ok(Self(value))
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
                value.0
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
