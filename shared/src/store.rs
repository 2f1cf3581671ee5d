//! The error every storage port shares: the caller only needs to know whether to retry.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The backing store failed or was unreachable; retrying may help.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored item could not be decoded; retrying will not help.
    #[error("stored item is corrupt: {0}")]
    Corrupt(String),
    /// A conditional write lost: the item changed since it was read.
    #[error("item changed since it was read: {0}")]
    Conflict(String),
}
