//! The dedup ledger on DynamoDB. The protocol lives in `dedup`; here are its conditions:
//! a claim is an `UpdateItem` that only succeeds when the item is absent, expired,
//! released / dead-lettered / loop-rejected, or a claim whose lease has passed; on
//! failure `ReturnValuesOnConditionCheckFailure=ALL_OLD` hands back the blocking item,
//! which tells a duplicate from an in-flight claim without a second read. Commit and
//! release are conditioned on the claim token.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use aws_sdk_dynamodb::Client;

use super::attrs::{get_n, get_s, n, s, Item};
use super::describe;
use super::documents::{get_item, query_all};
use super::tables::LEDGER_BY_EVENT;
use crate::deadletters;
use crate::dedup::{
    Claim, ClaimOutcome, ClaimRequest, DeadLetterReason, DedupKey, Ledger, LedgerEntry,
    LedgerError, LedgerStatus, MatchKind, Release,
};
use crate::ids::{EventId, WorkspaceId};

/// The item may be (re)claimed: absent, expired, in one of [`LedgerStatus::OPEN`], or
/// its lease has passed (the condition form of [`crate::dedup::LedgerEntry::is_claimable`]).
static CLAIMABLE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let open: Vec<String> = (0..LedgerStatus::OPEN.len())
        .map(|i| format!(":open{i}"))
        .collect();
    format!(
        "attribute_not_exists(ledgerId) OR expiresAt <= :nowS OR #status IN ({}) \
         OR (#status = :claimed AND leaseUntilMs <= :nowMs)",
        open.join(", ")
    )
});

#[derive(Debug, Clone)]
pub struct DynamoLedger {
    pub(super) client: Client,
    pub(super) table: String,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub(super) fn update(
        &self,
        workspace: &WorkspaceId,
        key: &DedupKey,
    ) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("ledgerId", s(ledger_id(workspace, key)))
            .expression_attribute_names("#status", "status")
    }

    /// One conditional claim in one `window` mode. `Err` carries the blocking item.
    async fn claim_once(
        &self,
        req: &ClaimRequest,
        window: Window,
    ) -> Result<Result<ClaimOutcome, Item>, LedgerError> {
        let live = "(attribute_not_exists(expiresAt) OR expiresAt > :nowS)";
        let claimable = CLAIMABLE.as_str();
        let (attempts, first_attempt, condition) = match window {
            Window::Continue => (
                "if_not_exists(attempts, :zero) + :one",
                "if_not_exists(firstAttemptMs, :nowMs)",
                format!(
                    "({claimable}) AND {live} AND (attribute_not_exists(#status) OR #status <> :dead)"
                ),
            ),
            Window::Replay => (
                "if_not_exists(attempts, :zero) + :one",
                ":nowMs",
                format!("({claimable}) AND {live} AND #status = :dead"),
            ),
            // (CLAIMABLE only so that every value the request names is used.)
            Window::Expired => (
                ":one",
                ":nowMs",
                format!("({claimable}) AND expiresAt <= :nowS"),
            ),
        };
        let request = self
            .update(&req.workspace_id, &req.key)
            .update_expression(format!(
                "SET #status = :claimed, claimToken = :token, leaseUntilMs = :lease, \
                 attempts = {attempts}, firstAttemptMs = {first_attempt}, \
                 workspaceId = :ws, dedupKey = :key, eventId = :event, targetId = :target, \
                 matchKind = :kind, expiresAt = :expires, updatedAtMs = :nowMs, workspaceEvent = :we \
                 REMOVE runId, reason, supersededBy, {DEAD_LETTER_ONLY}"
            ))
            .condition_expression(condition)
            .expression_attribute_values(":token", s(req.token.as_str()))
            .expression_attribute_values(":ws", s(req.workspace_id.as_str()))
            .expression_attribute_values(":key", s(req.key.as_str()))
            .expression_attribute_values(":lease", n(req.lease_until_ms))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":event", s(req.event_id.as_str()))
            .expression_attribute_values(":target", s(req.target_id.as_str()))
            .expression_attribute_values(":kind", s(match_kind_str(req.match_kind)))
            .expression_attribute_values(":expires", n(req.expires_at))
            .expression_attribute_values(":we", s(format!("{}#{}", req.workspace_id, req.event_id)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let request = match window {
            Window::Expired => request,
            _ => request
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":dead", s(LedgerStatus::DeadLettered.as_str())),
        };
        match claimable_values(request, req.now_ms).send().await {
            Ok(output) => Ok(Ok(ClaimOutcome::Claimed(Claim {
                workspace_id: req.workspace_id.clone(),
                key: req.key.clone(),
                token: req.token.clone(),
                attempts: output
                    .attributes()
                    .and_then(|a| get_n(a, "attempts"))
                    .unwrap_or(1),
                first_attempt_ms: output
                    .attributes()
                    .and_then(|a| get_n(a, "firstAttemptMs"))
                    .unwrap_or(req.now_ms),
            }))),
            Err(e) => {
                let blocking = e
                    .as_service_error()
                    .filter(|s| s.is_conditional_check_failed_exception())
                    .map(|s| match s {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                            c.item().cloned().unwrap_or_default()
                        }
                        _ => Item::new(),
                    });
                let Some(old) = blocking else {
                    return Err(LedgerError::Unavailable(describe(&e)));
                };
                Ok(Err(old))
            }
        }
    }

    /// Runs a token-conditioned update; a failed condition means the claim was lost.
    async fn held_update(
        &self,
        claim: &Claim,
        request: UpdateItemFluentBuilder,
    ) -> Result<(), LedgerError> {
        let result = request
            .condition_expression("#status = :claimed AND claimToken = :token")
            .expression_attribute_values(":claimed", s(LedgerStatus::Claimed.as_str()))
            .expression_attribute_values(":token", s(claim.token.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(LedgerError::ClaimLost(claim.key.clone()))
            }
            Err(e) => Err(LedgerError::Unavailable(describe(&e))),
        }
    }
}

/// How a claim treats the retry window an item already carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    /// A live item: keep its first attempt and count on.
    Continue,
    /// A live dead letter replayed: a new window, the count goes on.
    Replay,
    /// An expired item: it starts over as if absent.
    Expired,
}

/// Puts a dead letter in its workspace's index (`dlWorkspace` / `dlSort`), with the
/// message replay needs when there is one.
fn indexed_dead_letter(
    request: UpdateItemFluentBuilder,
    workspace: &WorkspaceId,
    key: &DedupKey,
    message: Option<&str>,
    at_ms: i64,
) -> UpdateItemFluentBuilder {
    let request = request
        .expression_attribute_values(":dlws", s(workspace.as_str()))
        .expression_attribute_values(":dlsort", s(deadletters::sort_key_at(at_ms, key)));
    match message {
        Some(message) => request.expression_attribute_values(":message", s(message)),
        None => request,
    }
}

/// The `SET` clauses of [`indexed_dead_letter`]'s values.
fn dead_letter_set(with_message: bool) -> &'static str {
    if with_message {
        "dlWorkspace = :dlws, dlSort = :dlsort, message = :message"
    } else {
        "dlWorkspace = :dlws, dlSort = :dlsort"
    }
}

/// What a dead letter without a message must not keep from an earlier one.
fn dead_letter_remove(with_message: bool) -> &'static str {
    if with_message {
        ""
    } else {
        ", message"
    }
}

/// What a claim found in its way: a duplicate (committed) or a live claim.
/// A discarded dead letter is final, so it answers like a duplicate: nothing is sent.
fn blocked(old: &Item) -> ClaimOutcome {
    match get_s(old, "status") {
        Some("committed" | "discarded") => ClaimOutcome::Duplicate {
            run_id: get_s(old, "runId").map(str::to_owned),
        },
        _ => ClaimOutcome::InFlight {
            lease_until_ms: get_n(old, "leaseUntilMs").unwrap_or(0),
        },
    }
}

/// Attributes only a dead letter has: the sparse index's keys and the kept message.
const DEAD_LETTER_ONLY: &str = "dlWorkspace, dlSort, message, replayingUntilMs";

/// The partition key of a ledger item.
pub fn ledger_id(workspace: &WorkspaceId, key: &DedupKey) -> String {
    format!("{workspace}#{key}")
}

fn claimable_values(request: UpdateItemFluentBuilder, now_ms: i64) -> UpdateItemFluentBuilder {
    let request = request
        .expression_attribute_values(":nowS", n(now_ms.div_euclid(1000)))
        .expression_attribute_values(":nowMs", n(now_ms))
        .expression_attribute_values(":claimed", s(LedgerStatus::Claimed.as_str()));
    LedgerStatus::OPEN
        .iter()
        .enumerate()
        .fold(request, |request, (i, status)| {
            request.expression_attribute_values(format!(":open{i}"), s(status.as_str()))
        })
}

fn match_kind_str(kind: MatchKind) -> &'static str {
    match kind {
        MatchKind::Start => "start",
        MatchKind::Resume => "resume",
    }
}

/// Decodes a ledger item read back from the table.
pub fn entry_from_item(item: &Item) -> Option<LedgerEntry> {
    Some(LedgerEntry {
        workspace_id: WorkspaceId::new(get_s(item, "workspaceId")?).ok()?,
        key: DedupKey::from_stored(get_s(item, "dedupKey")?.to_owned()),
        event_id: EventId::new(get_s(item, "eventId")?).ok()?,
        target_id: get_s(item, "targetId")?.to_owned(),
        match_kind: match get_s(item, "matchKind")? {
            "resume" => MatchKind::Resume,
            _ => MatchKind::Start,
        },
        status: LedgerStatus::parse(get_s(item, "status")?)?,
        claim_token: get_s(item, "claimToken").map(str::to_owned),
        lease_until_ms: get_n(item, "leaseUntilMs").unwrap_or(0),
        run_id: get_s(item, "runId").map(str::to_owned),
        last_error: get_s(item, "lastError").map(str::to_owned),
        reason: get_s(item, "reason").and_then(DeadLetterReason::parse),
        superseded_by: get_s(item, "supersededBy").and_then(|e| EventId::new(e).ok()),
        replaying_until_ms: get_n(item, "replayingUntilMs").unwrap_or(0),
        attempts: get_n(item, "attempts").unwrap_or(0),
        first_attempt_ms: get_n(item, "firstAttemptMs").unwrap_or(0),
        expires_at: get_n(item, "expiresAt").unwrap_or(0),
        updated_at_ms: get_n(item, "updatedAtMs").unwrap_or(0),
        message: get_s(item, "message").map(str::to_owned),
    })
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn claim(&self, req: &ClaimRequest) -> Result<ClaimOutcome, LedgerError> {
        let old = match self.claim_once(req, Window::Continue).await? {
            Ok(claimed) => return Ok(claimed),
            Err(old) => old,
        };
        // An expired item is as good as absent: a new window and a new attempt count.
        // A dead letter claimed again (its event replayed) starts a new retry window.
        let window =
            if get_n::<i64>(&old, "expiresAt").is_some_and(|e| e <= req.now_ms.div_euclid(1000)) {
                Window::Expired
            } else if get_s(&old, "status") == Some(LedgerStatus::DeadLettered.as_str()) {
                Window::Replay
            } else {
                return Ok(blocked(&old));
            };
        Ok(self
            .claim_once(req, window)
            .await?
            .unwrap_or_else(|old| blocked(&old)))
    }

    async fn commit(
        &self,
        claim: &Claim,
        run_id: Option<&str>,
        expires_at: i64,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let mut request = self
            .update(&claim.workspace_id, &claim.key)
            .expression_attribute_values(":committed", s(LedgerStatus::Committed.as_str()))
            .expression_attribute_values(":expires", n(expires_at))
            .expression_attribute_values(":nowMs", n(now_ms));
        request = match run_id {
            Some(run) => request
                .update_expression(
                    "SET #status = :committed, runId = :run, expiresAt = :expires, updatedAtMs = :nowMs \
                     REMOVE claimToken, leaseUntilMs",
                )
                .expression_attribute_values(":run", s(run)),
            None => request.update_expression(
                "SET #status = :committed, expiresAt = :expires, updatedAtMs = :nowMs REMOVE claimToken, leaseUntilMs",
            ),
        };
        self.held_update(claim, request).await
    }

    async fn release(
        &self,
        claim: &Claim,
        release: &Release,
        now_ms: i64,
    ) -> Result<(), LedgerError> {
        let request = self
            .update(&claim.workspace_id, &claim.key)
            .expression_attribute_values(":nowMs", n(now_ms));
        let request = match release {
            Release::Retry { error } => request
                .update_expression(
                    "SET #status = :released, lastError = :error, updatedAtMs = :nowMs REMOVE claimToken, leaseUntilMs",
                )
                .expression_attribute_values(":released", s(LedgerStatus::Released.as_str()))
                .expression_attribute_values(":error", s(error.as_str())),
            Release::DeadLetter {
                reason,
                detail,
                expires_at,
                message,
            } => indexed_dead_letter(request, &claim.workspace_id, &claim.key, message.as_deref(), now_ms)
                .update_expression(format!(
                    "SET #status = :dead, reason = :reason, lastError = :error, expiresAt = :expires, \
                     updatedAtMs = :nowMs, {} REMOVE claimToken, leaseUntilMs{}",
                    dead_letter_set(message.is_some()), dead_letter_remove(message.is_some())
                ))
                .expression_attribute_values(":dead", s(LedgerStatus::DeadLettered.as_str()))
                .expression_attribute_values(":reason", s(reason.as_str()))
                .expression_attribute_values(":error", s(detail.as_str()))
                .expression_attribute_values(":expires", n(*expires_at)),
            Release::Parked {
                winner: Some(winner),
                until_ms,
            } => request
                .update_expression(
                    "SET #status = :superseded, supersededBy = :winner, leaseUntilMs = :until, \
                     updatedAtMs = :nowMs REMOVE claimToken",
                )
                .expression_attribute_values(":superseded", s(LedgerStatus::Superseded.as_str()))
                .expression_attribute_values(":winner", s(winner.as_str()))
                .expression_attribute_values(":until", n(*until_ms)),
            Release::Parked {
                winner: None,
                until_ms,
            } => request
                .update_expression(
                    "SET #status = :parked, leaseUntilMs = :until, updatedAtMs = :nowMs REMOVE claimToken",
                )
                .expression_attribute_values(":parked", s(LedgerStatus::Parked.as_str()))
                .expression_attribute_values(":until", n(*until_ms)),
        };
        self.held_update(claim, request).await
    }

    async fn record_unclaimed(&self, entry: &LedgerEntry) -> Result<(), LedgerError> {
        let set_error = if entry.last_error.is_some() {
            ", lastError = :error"
        } else {
            ""
        };
        let set_reason = if entry.reason.is_some() {
            ", reason = :reason"
        } else {
            ""
        };
        let (set_winner, remove_winner) = if entry.superseded_by.is_some() {
            (", supersededBy = :winner", "")
        } else {
            ("", ", supersededBy")
        };
        let mut request = self.update(&entry.workspace_id, &entry.key);
        let (set_dead, remove_dead) = if entry.status == LedgerStatus::DeadLettered {
            request = indexed_dead_letter(
                request,
                &entry.workspace_id,
                &entry.key,
                entry.message.as_deref(),
                entry.updated_at_ms,
            );
            (
                format!(", {}", dead_letter_set(entry.message.is_some())),
                dead_letter_remove(entry.message.is_some()).to_owned(),
            )
        } else {
            (String::new(), format!(", {DEAD_LETTER_ONLY}"))
        };
        request = request.update_expression(format!(
                "SET #status = :new, workspaceId = :ws, dedupKey = :key, eventId = :event, targetId = :target, \
                 matchKind = :kind, expiresAt = :expires, updatedAtMs = :nowMs, workspaceEvent = :we{set_error}{set_reason}{set_winner}{set_dead}, \
                 attempts = if_not_exists(attempts, :zero) + :one, leaseUntilMs = :lease REMOVE claimToken, runId{remove_winner}{remove_dead}"
            ));
        let mut request = request
            .condition_expression(CLAIMABLE.as_str())
            .expression_attribute_values(":new", s(entry.status.as_str()))
            .expression_attribute_values(":ws", s(entry.workspace_id.as_str()))
            .expression_attribute_values(":key", s(entry.key.as_str()))
            .expression_attribute_values(":event", s(entry.event_id.as_str()))
            .expression_attribute_values(":target", s(entry.target_id.as_str()))
            .expression_attribute_values(":kind", s(match_kind_str(entry.match_kind)))
            .expression_attribute_values(":expires", n(entry.expires_at))
            .expression_attribute_values(
                ":we",
                s(format!("{}#{}", entry.workspace_id, entry.event_id)),
            )
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":lease", n(entry.lease_until_ms));
        if let Some(error) = &entry.last_error {
            request = request.expression_attribute_values(":error", s(error.as_str()));
        }
        if let Some(reason) = entry.reason {
            request = request.expression_attribute_values(":reason", s(reason.as_str()));
        }
        if let Some(winner) = &entry.superseded_by {
            request = request.expression_attribute_values(":winner", s(winner.as_str()));
        }
        match claimable_values(request, entry.updated_at_ms).send().await {
            Ok(_) => Ok(()),
            // A committed item or a live claim wins over an unclaimed outcome.
            Err(e) if super::condition_failed(&e) => Ok(()),
            Err(e) => Err(LedgerError::Unavailable(describe(&e))),
        }
    }

    async fn get(
        &self,
        workspace: &WorkspaceId,
        key: &DedupKey,
    ) -> Result<Option<LedgerEntry>, LedgerError> {
        let key = Item::from([("ledgerId".to_owned(), s(ledger_id(workspace, key)))]);
        let item = get_item(&self.client, &self.table, key)
            .await
            .map_err(LedgerError::Unavailable)?;
        Ok(item
            .as_ref()
            .and_then(entry_from_item)
            .filter(|e| &e.workspace_id == workspace))
    }

    async fn for_event(
        &self,
        workspace: &WorkspaceId,
        event_id: &EventId,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(LEDGER_BY_EVENT)
            .key_condition_expression("workspaceEvent = :we")
            .expression_attribute_values(":we", s(format!("{workspace}#{event_id}")));
        let items = query_all(query).await.map_err(LedgerError::Unavailable)?;
        Ok(items
            .iter()
            .filter_map(entry_from_item)
            .filter(|e| &e.workspace_id == workspace)
            .collect())
    }
}
