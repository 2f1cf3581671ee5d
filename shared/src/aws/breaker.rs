//! The outage breaker's shared state: one item of the ledger table (key
//! `#breaker/workflow-service`, which no `{workspace}#{key}` ledger id can equal; it
//! carries none of the indexes' attributes, so no listing sees it). Every dispatcher
//! instance reads it; opening, taking a probe and closing are conditional writes, so one
//! caller probes at a time across all instances.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use aws_sdk_dynamodb::Client;

use super::attrs::{get_n, n, s, Item};
use super::documents::get_item;
use super::{condition_failed, describe};
use crate::dispatch::{BreakerState, BreakerStore};
use crate::store::StoreError;

const BREAKER_ID: &str = "#breaker/workflow-service";

#[derive(Debug, Clone)]
pub struct DynamoBreakerStore {
    client: Client,
    table: String,
}

impl DynamoBreakerStore {
    /// The breaker item in `table` (the ledger table).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn update(
        &self,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("ledgerId", s(BREAKER_ID))
    }
}

fn state_of(item: &Item) -> BreakerState {
    BreakerState {
        failures: get_n(item, "failures").unwrap_or(0),
        opened_at_ms: get_n(item, "openedAtMs").unwrap_or(0),
        next_probe_at_ms: get_n(item, "nextProbeAtMs").unwrap_or(0),
        probe_until_ms: get_n(item, "probeUntilMs").unwrap_or(0),
    }
}

#[async_trait]
impl BreakerStore for DynamoBreakerStore {
    async fn read(&self) -> Result<BreakerState, StoreError> {
        let key = Item::from([("ledgerId".to_owned(), s(BREAKER_ID))]);
        let item = get_item(&self.client, &self.table, key)
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(item.as_ref().map(state_of).unwrap_or_default())
    }

    async fn record_failure(
        &self,
        now_ms: i64,
        threshold: u32,
        first_probe_at_ms: i64,
    ) -> Result<BreakerState, StoreError> {
        // Count, and free the probe slot (a failed probe's next is already scheduled).
        let counted = self
            .update()
            .update_expression(
                "SET failures = if_not_exists(failures, :zero) + :one, probeUntilMs = :zero",
            )
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(describe(&e)))?;
        let state = counted.attributes().map(state_of).unwrap_or_default();
        if state.is_open() || state.failures < threshold {
            return Ok(state);
        }
        let opened = self
            .update()
            .update_expression("SET openedAtMs = :now, nextProbeAtMs = :probe")
            .condition_expression("attribute_not_exists(openedAtMs) OR openedAtMs = :zero")
            .expression_attribute_values(":now", n(now_ms.max(1)))
            .expression_attribute_values(":probe", n(first_probe_at_ms))
            .expression_attribute_values(":zero", n(0))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match opened {
            Ok(output) => Ok(output.attributes().map(state_of).unwrap_or_default()),
            // Another instance opened it first.
            Err(e) if condition_failed(&e) => self.read().await,
            Err(e) => Err(StoreError::Unavailable(describe(&e))),
        }
    }

    async fn take_probe(
        &self,
        now_ms: i64,
        probe_until_ms: i64,
        next_probe_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let taken = self
            .update()
            .update_expression("SET probeUntilMs = :until, nextProbeAtMs = :next")
            .condition_expression(
                "openedAtMs > :zero AND nextProbeAtMs <= :now \
                 AND (attribute_not_exists(probeUntilMs) OR probeUntilMs <= :now)",
            )
            .expression_attribute_values(":until", n(probe_until_ms))
            .expression_attribute_values(":next", n(next_probe_at_ms))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match taken {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(StoreError::Unavailable(describe(&e))),
        }
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.update()
            .update_expression("SET failures = :zero, openedAtMs = :zero, probeUntilMs = :zero")
            .expression_attribute_values(":zero", n(0))
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(describe(&e)))?;
        Ok(())
    }
}
