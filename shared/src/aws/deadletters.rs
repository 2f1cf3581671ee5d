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
use super::documents::{newest_first, query_until};
use super::ledger::{entry_from_item, ledger_id, DynamoLedger};
use super::tables::LEDGER_DEAD_LETTERS;
use crate::deadletters::{
    self, parse_cursor, DeadLetterPage, DeadLetterQuery, DeadLetterStore, Transition,
};
use crate::dedup::{DeadLetterReason, DedupKey, LedgerError, LedgerStatus};
use crate::ids::WorkspaceId;

#[async_trait]
impl DeadLetterStore for DynamoLedger {
    async fn list(
        &self,
        workspace: &WorkspaceId,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterPage, LedgerError> {
        let request = newest_first(
            self.client
                .query()
                .table_name(&self.table)
                .index_name(LEDGER_DEAD_LETTERS),
            ("dlWorkspace", workspace.as_str()),
            "dlSort",
            (query.since_ms, query.until_ms),
            &[
                ("targetId", query.subscription_id.as_deref()),
                ("reason", query.reason.map(DeadLetterReason::as_str)),
            ],
        );
        let cursor =
            match crate::listing::start(query.cursor.as_deref(), query.since_ms, query.until_ms) {
                crate::listing::Start::Nothing => return Ok(DeadLetterPage::default()),
                crate::listing::Start::Top => None,
                crate::listing::Start::After(c) => Some(c),
            };
        let start = cursor
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
        lease_until_ms: i64,
    ) -> Result<Transition, LedgerError> {
        // It stays a dead letter (listed, claimable by the dispatcher, which takes it
        // out of the index): a replay that never sends is forgotten when the lease ends.
        let request = self
            .update(workspace, key)
            .update_expression("SET replayingUntilMs = :lease")
            .expression_attribute_values(":lease", n(lease_until_ms))
            .expression_attribute_values(":nowMs", n(now_ms));
        self.transition(
            request,
            Some("attribute_not_exists(replayingUntilMs) OR replayingUntilMs <= :nowMs"),
        )
        .await
    }

    async fn restore(
        &self,
        workspace: &WorkspaceId,
        key: &DedupKey,
        lease_until_ms: i64,
    ) -> Result<(), LedgerError> {
        let request = self
            .update(workspace, key)
            .update_expression("REMOVE replayingUntilMs")
            .condition_expression("#status = :dead AND replayingUntilMs = :lease")
            .expression_attribute_values(":dead", s(LedgerStatus::DeadLettered.as_str()))
            .expression_attribute_values(":lease", n(lease_until_ms));
        match request.send().await {
            Ok(_) => Ok(()),
            // A worker took it since (the replay is under way after all), or another
            // replay holds it now.
            Err(e) if super::condition_failed(&e) => Ok(()),
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
        self.transition(request, None).await
    }
}

impl DynamoLedger {
    /// Runs `request` on a dead letter only (for which `also` holds, when given);
    /// reports what stood in the way otherwise.
    async fn transition(
        &self,
        request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
        also: Option<&str>,
    ) -> Result<Transition, LedgerError> {
        let condition = match also {
            Some(also) => format!("#status = :dead AND ({also})"),
            None => "#status = :dead".to_owned(),
        };
        let result = request
            .condition_expression(condition)
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
            Err(e) if super::condition_failed(&e) => {
                let old = match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                        c.item().cloned().unwrap_or_default()
                    }
                    _ => Item::new(),
                };
                Ok(match get_s(&old, "status").and_then(LedgerStatus::parse) {
                    None => Transition::NotFound,
                    Some(LedgerStatus::DeadLettered) => Transition::Replaying,
                    Some(status) => Transition::NotDeadLettered(status),
                })
            }
            Err(e) => Err(LedgerError::Unavailable(describe(&e))),
        }
    }
}
