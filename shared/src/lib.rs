//! custos-trigger: the event-trigger service of the workflow platform. This crate holds
//! the whole pipeline (Normalize → Classify → Match → Dedup → Dispatch) behind small
//! ports, with in-memory adapters for unit tests and AWS adapters for the Lambdas.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod archive;
pub mod audit;
pub mod aws;
pub mod backoff;
pub mod classify;
pub mod clock;
pub mod config;
pub mod deadletters;
pub mod dedup;
pub mod dispatch;
pub mod event;
pub mod flow;
pub mod ids;
pub mod instant;
pub(crate) mod json_text;
pub mod limits;
pub mod listing;
pub mod mapping;
pub mod matching;
/// In-memory adapters: for tests only (`--features testing` for other crates' tests).
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod metrics;
pub mod normalize;
pub mod queue;
pub mod resume;
pub mod runtime;
pub mod schedule;
pub mod scheduled;
pub mod selector;
pub mod stage;
pub mod store;
pub mod subscription;
pub mod trace;
pub mod webhook;
pub mod workflow;
pub mod zone;
