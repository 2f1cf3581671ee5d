//! Start and resume matching. The start side builds an index over a workspace's
//! subscriptions once, keyed on the literal equalities their selectors pin (`event.kind`
//! and one data field), so an event only evaluates the selectors that could be true for
//! it: match cost stays flat as a workspace grows to 100k subscriptions.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::event::NormalizedEvent;
use crate::resume::{ResumeKey, ResumeWait};
use crate::selector::{CompiledExpr, EvalError, EventScope, Pin, PinValue, SelectorCache};
use crate::subscription::Subscription;

/// A subscription ready to be matched: its selector compiled (None = unconditional).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub subscription: Arc<Subscription>,
    selector: Option<Arc<CompiledExpr>>,
}

/// Why a subscription was left out of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub subscription_id: String,
    pub reason: String,
}

/// A selector that ran without producing `true`/`false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorFailure {
    pub owner_id: String,
    pub error: EvalError,
}

/// What matching one event produced.
#[derive(Debug, Default)]
pub struct StartMatches {
    pub matched: Vec<Arc<Subscription>>,
    pub failures: Vec<SelectorFailure>,
}

type LiteralKey = PinValue;

#[derive(Debug, Default)]
struct Bucket {
    /// Candidates without an indexable data pin: always evaluated.
    scan: Vec<usize>,
    /// `path → literal → candidates` for the first data pin of each selector.
    by_field: HashMap<Vec<String>, HashMap<LiteralKey, Vec<usize>>>,
}

impl Bucket {
    fn insert(&mut self, index: usize, field_pin: Option<&Pin>) {
        match field_pin {
            Some(pin) => self
                .by_field
                .entry(pin.path.clone())
                .or_default()
                .entry(pin.value.clone())
                .or_default()
                .push(index),
            None => self.scan.push(index),
        }
    }

    fn candidates<'a>(&'a self, scope: &'a EventScope) -> impl Iterator<Item = usize> + 'a {
        let indexed = self.by_field.iter().flat_map(move |(path, values)| {
            scope
                .field(path)
                .and_then(literal_of)
                .and_then(|key| values.get(&key))
                .into_iter()
                .flatten()
                .copied()
        });
        self.scan.iter().copied().chain(indexed)
    }
}

fn literal_of(value: &Value) -> Option<LiteralKey> {
    match value {
        Value::String(s) => Some(PinValue::String(s.clone())),
        Value::Bool(b) => Some(PinValue::Bool(*b)),
        _ => None,
    }
}

/// The compiled, pre-filtered view of a set of start subscriptions.
#[derive(Debug, Default)]
pub struct StartIndex {
    candidates: Vec<Candidate>,
    by_kind: HashMap<String, Bucket>,
    any_kind: Bucket,
    skipped: Vec<Skipped>,
}

impl StartIndex {
    /// Compiles (through the cache) and indexes the matchable subscriptions; ones whose
    /// stored selector no longer compiles are skipped and reported, not fatal.
    pub fn build(
        subscriptions: impl IntoIterator<Item = Subscription>,
        cache: &SelectorCache,
    ) -> Self {
        let mut index = StartIndex::default();
        for subscription in subscriptions.into_iter().filter(Subscription::is_matchable) {
            let selector = match subscription
                .selector
                .as_deref()
                .filter(|s| !s.trim().is_empty())
            {
                None => None,
                Some(expr) => match cache.selector(subscription.subscription_id.as_str(), expr) {
                    Ok(compiled) => Some(compiled),
                    Err(e) => {
                        index.skipped.push(Skipped {
                            subscription_id: subscription.subscription_id.to_string(),
                            reason: e.to_string(),
                        });
                        continue;
                    }
                },
            };
            index.insert(Candidate {
                subscription: Arc::new(subscription),
                selector,
            });
        }
        index
    }

    fn insert(&mut self, candidate: Candidate) {
        let position = self.candidates.len();
        let pins = candidate
            .selector
            .as_deref()
            .map(CompiledExpr::pins)
            .unwrap_or_default();
        let kind = pins
            .iter()
            .find_map(|pin| match (pin.path.as_slice(), &pin.value) {
                ([field], PinValue::String(kind)) if field == "kind" => Some(kind.clone()),
                _ => None,
            });
        let field_pin = pins
            .iter()
            .find(|pin| pin.path.first().is_some_and(|f| f != "kind"));
        let bucket = match kind {
            Some(kind) => self.by_kind.entry(kind).or_default(),
            None => &mut self.any_kind,
        };
        bucket.insert(position, field_pin);
        self.candidates.push(candidate);
    }

    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Every subscription whose selector is true for the event, in insertion order.
    pub fn match_event(&self, event: &NormalizedEvent, scope: &EventScope) -> StartMatches {
        let mut positions: Vec<usize> = self
            .by_kind
            .get(event.kind.as_str())
            .into_iter()
            .flat_map(|bucket| bucket.candidates(scope))
            .chain(self.any_kind.candidates(scope))
            .collect();
        positions.sort_unstable();
        positions.dedup();
        let mut result = StartMatches::default();
        for position in positions {
            let candidate = &self.candidates[position];
            if evaluate(candidate, scope, &mut result.failures) {
                result.matched.push(Arc::clone(&candidate.subscription));
            }
        }
        result
    }
}

fn evaluate(
    candidate: &Candidate,
    scope: &EventScope,
    failures: &mut Vec<SelectorFailure>,
) -> bool {
    let Some(selector) = &candidate.selector else {
        return true;
    };
    match selector.matches(scope) {
        Ok(matched) => matched,
        Err(error) => {
            failures.push(SelectorFailure {
                owner_id: candidate.subscription.subscription_id.to_string(),
                error,
            });
            false
        }
    }
}

/// Matches the one subscription a manual fire addresses.
pub fn match_single(
    subscription: Subscription,
    scope: &EventScope,
    event: &NormalizedEvent,
    cache: &SelectorCache,
) -> StartMatches {
    let index = StartIndex::build([subscription], cache);
    index.match_event(event, scope)
}

/// `(data.runId, data.stepId, kind)`, when both ids are non-empty strings.
pub fn resume_key(event: &NormalizedEvent) -> Option<ResumeKey> {
    let text = |name: &str| match event.data.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    Some(ResumeKey {
        run_id: text("runId")?,
        step_id: text("stepId")?,
        event_key: event.kind.as_str().to_owned(),
    })
}

/// Why a resume wait did or did not take an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeDecision {
    Matched,
    /// The wait's triple differs from the event's (a hash collision guard).
    KeyMismatch,
    Lapsed,
    /// The wait belongs to another workspace.
    OtherWorkspace,
    SelectorFalse,
    SelectorFailed(EvalError),
    SelectorInvalid(String),
}

/// Decides whether `wait` takes the event (`key` extracted from it, in `workspace`).
pub fn match_resume(
    wait: &ResumeWait,
    key: &ResumeKey,
    workspace: &crate::ids::WorkspaceId,
    scope: &EventScope,
    now_secs: i64,
    cache: &SelectorCache,
) -> ResumeDecision {
    if wait.run_id != key.run_id || wait.step_id != key.step_id || wait.event_key != key.event_key {
        return ResumeDecision::KeyMismatch;
    }
    if !wait.is_live(now_secs) {
        return ResumeDecision::Lapsed;
    }
    // A wait resumes only events of the workspace that registered it (one stored
    // without a workspace, by an older release, resumes nothing).
    if wait.workspace_id.as_ref() != Some(workspace) {
        return ResumeDecision::OtherWorkspace;
    }
    let Some(expr) = wait.selector.as_deref().filter(|s| !s.trim().is_empty()) else {
        return ResumeDecision::Matched;
    };
    match cache.selector(wait.resume_id.as_str(), expr) {
        Err(e) => ResumeDecision::SelectorInvalid(e.to_string()),
        Ok(compiled) => match compiled.matches(scope) {
            Ok(true) => ResumeDecision::Matched,
            Ok(false) => ResumeDecision::SelectorFalse,
            Err(e) => ResumeDecision::SelectorFailed(e),
        },
    }
}

#[cfg(test)]
mod tests;
