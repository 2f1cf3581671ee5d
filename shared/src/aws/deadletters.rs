//! Dead-letter operations on the ledger table. A dead letter carries `dlWorkspace` and
//! `dlSort` (`{deadLetteredAtMs:013}#{digest}`) only while it is one, so the
//! `deadLetters` index holds nothing else: listing reads one workspace's dead letters,
//! newest first, and never the rest of the ledger. Every transition is conditioned on
//! the item still being a dead letter.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::attrs::{get_s, n, s, Item};
use super::describe;
use super::documents::query_until;
use super::ledger::{entry_from_item, ledger_id, DynamoLedger};
use super::tables::LEDGER_DEAD_LETTERS;
use crate::deadletters::{
    self, parse_cursor, DeadLetterPage, DeadLetterQuery, DeadLetterStore, Transition,
};
use crate::dedup::{DedupKey, LedgerEntry, LedgerError, LedgerStatus};
use crate::ids::WorkspaceId;

/// The largest dead-lettered-at a sort key can hold (13 digits of epoch ms).
const LAST_MS: i64 = 9_999_999_999_999;

#[async_trait]
impl DeadLetterStore for DynamoLedger {
    async fn list(
        &self,
        workspace: &WorkspaceId,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterPage, LedgerError> {
        let since = query.since_ms.unwrap_or(0).clamp(0, LAST_MS);
        let until = query.until_ms.map_or(LAST_MS, |u| u.saturating_sub(1));
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(LEDGER_DEAD_LETTERS)
            .scan_index_forward(false)
            .key_condition_expression("dlWorkspace = :ws AND dlSort BETWEEN :lo AND :hi")
            .expression_attribute_values(":ws", s(workspace.as_str()))
            .expression_attribute_values(":lo", s(format!("{since:013}")))
            .expression_attribute_values(":hi", s(format!("{:013}#~", until.clamp(0, LAST_MS))));
        let mut filters = Vec::new();
        if let Some(subscription) = &query.subscription_id {
            filters.push("targetId = :target");
            request = request.expression_attribute_values(":target", s(subscription.as_str()));
        }
        if let Some(reason) = query.reason {
            filters.push("reason = :reason");
            request = request.expression_attribute_values(":reason", s(reason.as_str()));
        }
        if !filters.is_empty() {
            request = request.filter_expression(filters.join(" AND "));
        }
        let start = query
            .cursor
            .as_deref()
            .and_then(|c| parse_cursor(c).map(|key| (c, key)))
            .map(|(cursor, key)| {
                Item::from([
                    ("dlWorkspace".to_owned(), s(workspace.as_str())),
                    ("dlSort".to_owned(), s(cursor)),
                    ("ledgerId".to_owned(), s(ledger_id(workspace, &key))),
                ])
            });
        let (items, more) = query_until(
            request,
            start,
            query.limit,
            LedgerError::Unavailable,
            |item| {
                // The index is eventually consistent: re-check what it claims.
                Ok(entry_from_item(item)
                    .filter(|e| &e.workspace_id == workspace && query.admits(e)))
            },
        )
        .await?;
        let next_cursor = more
            .then(|| items.last().map(deadletters::sort_key))
            .flatten();
        Ok(DeadLetterPage { items, next_cursor })
    }

    async fn reopen(
        &self,
        workspace: &WorkspaceId,
        key: &DedupKey,
        now_ms: i64,
    ) -> Result<Transition, LedgerError> {
        let request = self
            .update(workspace, key)
            .update_expression(
                "SET #status = :released, updatedAtMs = :nowMs REMOVE firstAttemptMs, dlWorkspace, dlSort",
            )
            .expression_attribute_values(":released", s(LedgerStatus::Released.as_str()))
            .expression_attribute_values(":nowMs", n(now_ms));
        self.transition(request).await
    }

    async fn restore(&self, before: &LedgerEntry) -> Result<(), LedgerError> {
        let mut request = self
            .update(&before.workspace_id, &before.key)
            .update_expression(
                "SET #status = :dead, dlWorkspace = :ws, dlSort = :sort, firstAttemptMs = :first, \
                 updatedAtMs = :at",
            )
            .condition_expression("#status = :released AND attribute_not_exists(claimToken)")
            .expression_attribute_values(":dead", s(LedgerStatus::DeadLettered.as_str()))
            .expression_attribute_values(":released", s(LedgerStatus::Released.as_str()))
            .expression_attribute_values(":ws", s(before.workspace_id.as_str()))
            .expression_attribute_values(":sort", s(deadletters::sort_key(before)))
            .expression_attribute_values(":first", n(before.first_attempt_ms))
            .expression_attribute_values(":at", n(before.updated_at_ms));
        if before.message.is_none() {
            request = request.update_expression(
                "SET #status = :dead, dlWorkspace = :ws, dlSort = :sort, firstAttemptMs = :first, \
                 updatedAtMs = :at REMOVE message",
            );
        }
        match request.send().await {
            Ok(_) => Ok(()),
            // A worker took it since: the replay is under way after all.
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(LedgerError::Unavailable(describe(&e))),
        }
    }

    async fn discard(
        &self,
        workspace: &WorkspaceId,
        key: &DedupKey,
        now_ms: i64,
    ) -> Result<Transition, LedgerError> {
        let request = self
            .update(workspace, key)
            .update_expression(
                "SET #status = :discarded, updatedAtMs = :nowMs REMOVE dlWorkspace, dlSort, message",
            )
            .expression_attribute_values(":discarded", s(LedgerStatus::Discarded.as_str()))
            .expression_attribute_values(":nowMs", n(now_ms));
        self.transition(request).await
    }
}

fn is_condition_failure<R>(error: &aws_sdk_dynamodb::error::SdkError<UpdateItemError, R>) -> bool {
    error
        .as_service_error()
        .is_some_and(UpdateItemError::is_conditional_check_failed_exception)
}

impl DynamoLedger {
    /// Runs `request` on a dead letter only; reports what stood in the way otherwise.
    async fn transition(
        &self,
        request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> Result<Transition, LedgerError> {
        let result = request
            .condition_expression("#status = :dead")
            .expression_attribute_values(":dead", s(LedgerStatus::DeadLettered.as_str()))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => Ok(output
                .attributes()
                .and_then(entry_from_item)
                .map_or(Transition::NotFound, |e| Transition::Done(Box::new(e)))),
            Err(e) if is_condition_failure(&e) => {
                let old = match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                        c.item().cloned().unwrap_or_default()
                    }
                    _ => Item::new(),
                };
                Ok(get_s(&old, "status")
                    .and_then(LedgerStatus::parse)
                    .map_or(Transition::NotFound, Transition::NotDeadLettered))
            }
            Err(e) => Err(LedgerError::Unavailable(describe(&e))),
        }
    }
}
