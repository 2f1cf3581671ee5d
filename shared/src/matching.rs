//! Start and resume matching. The start side builds an aggregate index over a
//! workspace's subscriptions once ([`StartIndex`]): an event reaches only the selector
//! arms whose most selective predicate it satisfies, most are decided without CEL, and
//! identical selector texts are evaluated once, so match cost tracks the number of
//! matches rather than the number of subscriptions.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::event::NormalizedEvent;
use crate::resume::{ResumeKey, ResumeWait};
use crate::selector::analysis::Cost;
use crate::selector::{CompiledExpr, EvalError, EventScope, LazyScope, SelectorCache};
use predicate::{field, Arm, Field, Literal, Predicate};
use recognize::{recognize, Recognized};

pub mod predicate;
pub mod recognize;
use crate::subscription::Subscription;

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

/// One distinct selector text of the index and the subscriptions that use it.
#[derive(Debug)]
struct Selector {
    /// The CEL program, kept only when some arm has a residual condition.
    compiled: Option<Arc<CompiledExpr>>,
    /// What the selector's comprehensions (`exists` included) may cost per event.
    cost: Cost,
    /// The arms: their predicates until the index is built (then only in `checks`), and
    /// their residual conditions.
    arms: Vec<Arm>,
    /// Per arm: the predicates left to check once the arm is a candidate (all but the
    /// one it entered the index by), on interned paths.
    checks: Vec<Vec<(PathId, Predicate)>>,
    subscriptions: Vec<u32>,
}

/// An arm of a selector: `(selector, arm)` positions.
type ArmRef = (u32, u32);

/// Arms per string value of one field.
type ByValue = HashMap<String, Vec<ArmRef>>;

/// A field path under `event`.
type Path = Vec<String>;

/// A path interned in the index (each distinct path is read once per event).
type PathId = usize;

/// Where an arm enters the index: the postings of its most selective predicate.
#[derive(Debug, Default)]
struct Postings {
    /// `path == "x"` and `path in [...]`: per path, per string value.
    strings: Vec<(PathId, ByValue)>,
    /// `a == "x" && b == "y"`: per pair of paths, per pair of values ([`pair_key`]).
    pairs: Vec<((PathId, PathId), ByValue)>,
    /// `path == true/false`: per path, `[false, true]`.
    bools: Vec<(PathId, [Vec<ArmRef>; 2])>,
    /// `path.startsWith("x")`: per path, per prefix, with the prefix lengths in use.
    prefixes: Vec<(PathId, ByValue, Vec<usize>)>,
    /// `"x" in path` / `path.exists(t, t == "x")`: per path, per element.
    elements: Vec<(PathId, ByValue)>,
    /// `has(path)`.
    present: Vec<(PathId, Vec<ArmRef>)>,
    /// Numeric comparisons, checked one by one (the least selective entry).
    compared: Vec<(PathId, Predicate, ArmRef)>,
    /// Arms with no predicate the index can decide: candidates for every event.
    scan: Vec<ArmRef>,
}

fn slot<T: Default>(list: &mut Vec<(PathId, T)>, path: PathId) -> &mut T {
    let position = match list.iter().position(|(p, _)| *p == path) {
        Some(position) => position,
        None => {
            list.push((path, T::default()));
            list.len() - 1
        }
    };
    &mut list[position].1
}

/// The event's fields at the index's paths, each read on first need.
struct Fields<'e, 'i> {
    event: &'e NormalizedEvent,
    paths: &'i [Path],
    read: Vec<Option<Option<Field<'e>>>>,
}

impl<'e, 'i> Fields<'e, 'i> {
    fn new(event: &'e NormalizedEvent, paths: &'i [Path]) -> Self {
        Self {
            event,
            paths,
            read: vec![None; paths.len()],
        }
    }

    fn get(&mut self, path: PathId) -> Option<Field<'e>> {
        *self.read[path].get_or_insert_with(|| field(self.event, &self.paths[path]))
    }
}

impl Postings {
    fn insert(&mut self, access: Option<(PathId, &Predicate)>, arm: ArmRef) {
        let Some((path, predicate)) = access else {
            self.scan.push(arm);
            return;
        };
        match predicate {
            Predicate::Eq {
                value: Literal::Str(value),
                ..
            } => push(slot(&mut self.strings, path), value, arm),
            Predicate::In { values, .. } => {
                let postings = slot(&mut self.strings, path);
                let mut distinct: Vec<&String> = values.iter().collect();
                distinct.sort_unstable();
                distinct.dedup();
                for value in distinct {
                    push(postings, value, arm);
                }
            }
            Predicate::Eq {
                value: Literal::Bool(value),
                ..
            } => slot(&mut self.bools, path)[usize::from(*value)].push(arm),
            Predicate::Prefix { prefix, .. } => {
                let position = match self.prefixes.iter().position(|(p, _, _)| *p == path) {
                    Some(position) => position,
                    None => {
                        self.prefixes.push((path, HashMap::new(), Vec::new()));
                        self.prefixes.len() - 1
                    }
                };
                let (_, postings, lengths) = &mut self.prefixes[position];
                push(postings, prefix, arm);
                if let Err(at) = lengths.binary_search(&prefix.len()) {
                    lengths.insert(at, prefix.len());
                }
            }
            Predicate::Contains { value, .. } => push(slot(&mut self.elements, path), value, arm),
            Predicate::Has { .. } => slot(&mut self.present, path).push(arm),
            Predicate::Cmp { .. } => self.compared.push((path, predicate.clone(), arm)),
        }
    }

    fn insert_pair(
        &mut self,
        (a, first): (PathId, &Predicate),
        (b, second): (PathId, &Predicate),
        arm: ArmRef,
    ) {
        let (
            Predicate::Eq {
                value: Literal::Str(x),
                ..
            },
            Predicate::Eq {
                value: Literal::Str(y),
                ..
            },
        ) = (first, second)
        else {
            return;
        };
        let position = match self.pairs.iter().position(|(p, _)| *p == (a, b)) {
            Some(position) => position,
            None => {
                self.pairs.push(((a, b), HashMap::new()));
                self.pairs.len() - 1
            }
        };
        self.pairs[position]
            .1
            .entry(pair_key(x, y))
            .or_default()
            .push(arm);
    }

    /// Every arm whose entry predicate holds for the event (some more than once).
    fn candidates(&self, fields: &mut Fields<'_, '_>, out: &mut Vec<ArmRef>) {
        out.extend_from_slice(&self.scan);
        for ((a, b), postings) in &self.pairs {
            let x = fields.get(*a).and_then(Field::as_str);
            let y = fields.get(*b).and_then(Field::as_str);
            if let Some(arms) = x.zip(y).and_then(|(x, y)| postings.get(&pair_key(x, y))) {
                out.extend_from_slice(arms);
            }
        }
        for (path, postings) in &self.strings {
            if let Some(arms) = fields
                .get(*path)
                .and_then(Field::as_str)
                .and_then(|s| postings.get(s))
            {
                out.extend_from_slice(arms);
            }
        }
        for (path, postings) in &self.bools {
            if let Some(Field::Json(Value::Bool(b))) = fields.get(*path) {
                out.extend_from_slice(&postings[usize::from(*b)]);
            }
        }
        for (path, postings, lengths) in &self.prefixes {
            let Some(text) = fields.get(*path).and_then(Field::as_str) else {
                continue;
            };
            for &length in lengths.iter().take_while(|&&l| l <= text.len()) {
                if let Some(arms) = text.get(..length).and_then(|p| postings.get(p)) {
                    out.extend_from_slice(arms);
                }
            }
        }
        for (path, postings) in &self.elements {
            match fields.get(*path) {
                Some(Field::Json(Value::Array(items))) => {
                    for item in items.iter().filter_map(Value::as_str) {
                        out.extend(postings.get(item).into_iter().flatten());
                    }
                }
                Some(Field::Json(Value::Object(map))) => {
                    for key in map.keys() {
                        out.extend(postings.get(key.as_str()).into_iter().flatten());
                    }
                }
                _ => {}
            }
        }
        for (path, arms) in &self.present {
            if fields.get(*path).is_some() {
                out.extend_from_slice(arms);
            }
        }
        for (path, predicate, arm) in &self.compared {
            if predicate.holds_on(fields.get(*path)) {
                out.push(*arm);
            }
        }
    }
}

/// One key for two values (length-prefixed, so no two pairs share one).
fn pair_key(x: &str, y: &str) -> String {
    format!("{}:{x}{y}", x.len())
}

fn push(postings: &mut ByValue, value: &str, arm: ArmRef) {
    match postings.get_mut(value) {
        Some(arms) => arms.push(arm),
        None => {
            postings.insert(value.to_owned(), vec![arm]);
        }
    }
}

/// The compiled, indexed view of a set of start subscriptions: an aggregate matcher.
/// Identical selector texts are compiled and evaluated once; every arm enters the index
/// through its most selective predicate; an arm whose conjuncts are all predicates
/// matches without CEL; CEL runs only for residual conjuncts, on a scope converted
/// only when one is needed.
#[derive(Debug, Default)]
pub struct StartIndex {
    subscriptions: Vec<Arc<Subscription>>,
    selectors: Vec<Selector>,
    postings: Postings,
    /// Every path a predicate reads, interned.
    paths: Vec<Path>,
    skipped: Vec<Skipped>,
    /// The event paths residual conditions read (`None`: some need the whole event).
    projection: Option<Vec<Path>>,
    /// Some residual reads the event other than through field paths.
    needs_whole_event: bool,
}

impl StartIndex {
    /// Indexes the matchable subscriptions. Each distinct selector text is read once:
    /// recognized as indexable predicates when it is nothing else, otherwise compiled
    /// (through the cache, on every core). Subscriptions whose stored selector no longer
    /// compiles are skipped and reported, not fatal.
    pub fn build(
        subscriptions: impl IntoIterator<Item = impl Into<Arc<Subscription>>>,
        cache: &SelectorCache,
    ) -> Self {
        let subscriptions: Vec<Arc<Subscription>> = subscriptions
            .into_iter()
            .map(Into::into)
            .filter(|s| s.is_matchable())
            .collect();
        let (texts, text_of) = distinct_texts(&subscriptions);
        let mut index = StartIndex::default();
        let selectors = index.add_selectors(&texts, cache);
        for (subscription, text) in subscriptions.into_iter().zip(text_of) {
            match &selectors[text] {
                Ok(selector) => {
                    let position = u32::try_from(index.subscriptions.len()).unwrap_or(u32::MAX);
                    index.selectors[*selector].subscriptions.push(position);
                    index.subscriptions.push(subscription);
                }
                Err(reason) => index.skipped.push(Skipped {
                    subscription_id: subscription.subscription_id.to_string(),
                    reason: reason.clone(),
                }),
            }
        }
        index.post_all();
        index
    }

    /// Enters every arm through its most selective predicate: the lowest rank, and
    /// among equalities the field with the most distinct values in this index.
    fn post_all(&mut self) {
        let mut distinct: HashMap<&[String], std::collections::HashSet<&str>> = HashMap::new();
        for predicate in self
            .selectors
            .iter()
            .flat_map(|s| &s.arms)
            .flat_map(|a| &a.exact)
        {
            if let Predicate::Eq {
                path,
                value: Literal::Str(value),
            } = predicate
            {
                distinct.entry(path).or_default().insert(value);
            }
        }
        let cardinality: HashMap<Path, usize> = distinct
            .into_iter()
            .map(|(path, values)| (path.to_vec(), values.len()))
            .collect();
        let mut postings = Postings::default();
        let mut paths: Vec<Path> = Vec::new();
        let mut intern = |path: &[String]| match paths.iter().position(|p| p == path) {
            Some(id) => id,
            None => {
                paths.push(path.to_vec());
                paths.len() - 1
            }
        };
        for (id, selector) in self.selectors.iter_mut().enumerate() {
            selector.checks = Vec::with_capacity(selector.arms.len());
            for (arm_id, arm) in selector.arms.iter_mut().enumerate() {
                let spread = |p: &Predicate| cardinality.get(p.path()).copied().unwrap_or(0);
                let arm_ref = (
                    u32::try_from(id).unwrap_or(u32::MAX),
                    u32::try_from(arm_id).unwrap_or(u32::MAX),
                );
                // Two string equalities on different fields: enter by both at once.
                let mut equalities: Vec<(usize, &Predicate)> = arm
                    .exact
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        matches!(
                            p,
                            Predicate::Eq {
                                value: Literal::Str(_),
                                ..
                            }
                        )
                    })
                    .collect();
                equalities.sort_by_key(|(_, p)| std::cmp::Reverse(spread(p)));
                equalities.dedup_by(|a, b| a.1.path() == b.1.path());
                let entry: Vec<usize> = match equalities.as_slice() {
                    [(i, first), (j, second), ..] => {
                        let (a, b) = (intern(first.path()), intern(second.path()));
                        postings.insert_pair((a, first), (b, second), arm_ref);
                        vec![*i, *j]
                    }
                    _ => {
                        let access = arm
                            .exact
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, p)| (p.rank(), std::cmp::Reverse(spread(p))));
                        postings.insert(access.map(|(_, p)| (intern(p.path()), p)), arm_ref);
                        access.map(|(position, _)| position).into_iter().collect()
                    }
                };
                // The arm's predicates live on only as its checks.
                selector.checks.push(
                    std::mem::take(&mut arm.exact)
                        .into_iter()
                        .enumerate()
                        .filter(|(position, _)| !entry.contains(position))
                        .map(|(_, p)| (intern(p.path()), p))
                        .collect(),
                );
            }
        }
        self.paths = paths;
        self.postings = postings;
        if let Some(paths) = self.projection.as_mut() {
            paths.sort();
            paths.dedup();
        }
    }

    /// Adds each distinct text once: recognized, or else compiled (all unrecognized
    /// texts first, on every core). Per text: its selector, or why it does not compile.
    fn add_selectors(
        &mut self,
        texts: &[&str],
        cache: &SelectorCache,
    ) -> Vec<Result<usize, String>> {
        let recognized: Vec<Option<Recognized>> = texts.iter().map(|t| recognize(t)).collect();
        let to_compile: Vec<&str> = texts
            .iter()
            .zip(&recognized)
            .filter(|(text, r)| r.is_none() && !text.is_empty())
            .map(|(text, _)| *text)
            .collect();
        precompile(&to_compile, cache);
        texts
            .iter()
            .zip(recognized)
            .map(|(text, recognized)| self.add_selector(text, recognized, cache))
            .collect()
    }

    fn add_selector(
        &mut self,
        text: &str,
        recognized: Option<Recognized>,
        cache: &SelectorCache,
    ) -> Result<usize, String> {
        let (compiled, arms, cost) = match (text, recognized) {
            ("", _) => (None, vec![Arm::default()], Cost::default()),
            (_, Some(recognized)) => (None, recognized.arms, recognized.cost),
            (text, None) => {
                let compiled = cache.shared_selector(text).map_err(|e| e.to_string())?;
                let arms = predicate::arms(compiled.expression());
                let cost = compiled.cost();
                (Some(compiled), arms, cost)
            }
        };
        let id = self.selectors.len();
        for part in arms.iter().flat_map(|a| &a.residual) {
            let mut paths = Vec::new();
            if predicate::referenced_paths(part, &mut paths) {
                self.projection.get_or_insert_with(Vec::new).extend(paths);
            } else {
                self.needs_whole_event = true;
            }
        }
        self.selectors.push(Selector {
            compiled,
            cost,
            arms,
            checks: Vec::new(),
            subscriptions: Vec::new(),
        });
        Ok(id)
    }

    pub fn len(&self) -> usize {
        self.subscriptions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
    }

    /// The fields residual conditions need converted (`None`: the whole event).
    fn projection(&self) -> Option<&[Path]> {
        match self.needs_whole_event {
            true => None,
            false => Some(self.projection.as_deref().unwrap_or_default()),
        }
    }

    /// Distinct selector texts (each compiled and evaluated once per event).
    pub fn distinct_selectors(&self) -> usize {
        self.selectors.len()
    }

    /// Distinct selector texts kept as CEL programs (some arm has a residual condition
    /// or the text is outside what the index recognizes).
    pub fn compiled_selectors(&self) -> usize {
        self.selectors
            .iter()
            .filter(|s| s.compiled.is_some())
            .count()
    }

    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Every subscription whose selector is true for the event, in insertion order.
    pub fn match_event(&self, event: &NormalizedEvent, scope: &LazyScope) -> StartMatches {
        let mut fields = Fields::new(event, &self.paths);
        let mut candidates = Vec::with_capacity(1024);
        self.postings.candidates(&mut fields, &mut candidates);
        // A selector is decided by its first arm that holds; later arms are skipped.
        let mut decided = vec![0u64; self.selectors.len().div_ceil(64)];
        let mut errors: Vec<(u32, EvalError)> = Vec::new();
        // Matched subscriptions as a bitset: read back in insertion order, no sort.
        let mut matched = vec![0u64; self.subscriptions.len().div_ceil(64)];
        let mut matched_count = 0usize;
        for (selector_id, arm_id) in candidates {
            let (word, bit) = (selector_id as usize / 64, 1u64 << (selector_id % 64));
            if decided[word] & bit != 0 {
                continue;
            }
            let selector = &self.selectors[selector_id as usize];
            match self.arm_holds(selector, arm_id as usize, &mut fields, scope) {
                Ok(true) => {
                    decided[word] |= bit;
                    matched_count += selector.subscriptions.len();
                    for &s in &selector.subscriptions {
                        matched[s as usize / 64] |= 1u64 << (s % 64);
                    }
                }
                Ok(false) => {}
                Err(error) => errors.push((selector_id, error)),
            }
        }
        let mut result = StartMatches::default();
        // CEL's `||`: an arm's error only counts when no arm of the selector holds.
        errors.sort_by_key(|(s, _)| *s);
        errors.dedup_by_key(|(s, _)| *s);
        for (selector_id, error) in errors {
            if decided[selector_id as usize / 64] & (1u64 << (selector_id % 64)) != 0 {
                continue;
            }
            let selector = &self.selectors[selector_id as usize];
            result
                .failures
                .extend(selector.subscriptions.iter().map(|&s| SelectorFailure {
                    owner_id: self.subscriptions[s as usize].subscription_id.to_string(),
                    error: error.clone(),
                }));
        }
        result.matched = Vec::with_capacity(matched_count);
        for (word_index, mut word) in matched.into_iter().enumerate() {
            while word != 0 {
                let s = word_index * 64 + word.trailing_zeros() as usize;
                result.matched.push(Arc::clone(&self.subscriptions[s]));
                word &= word - 1;
            }
        }
        result
    }

    /// Whether one arm holds: its remaining predicates natively, then its residual
    /// conditions in CEL (under the whole selector's cost bound).
    fn arm_holds(
        &self,
        selector: &Selector,
        arm_id: usize,
        fields: &mut Fields<'_, '_>,
        scope: &LazyScope,
    ) -> Result<bool, EvalError> {
        if !selector.checks[arm_id]
            .iter()
            .all(|(path, predicate)| predicate.holds_on(fields.get(*path)))
        {
            return Ok(false);
        }
        let residual = &selector.arms[arm_id].residual;
        if residual.is_empty() && selector.cost.comprehensions == 0 {
            return Ok(true);
        }
        selector.cost.check_at(scope.extent())?;
        let Some(compiled) = &selector.compiled else {
            return Ok(true);
        };
        for part in residual {
            if !compiled.part_matches(part, scope.projected(self.projection()))? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The distinct (trimmed) selector texts in order of first use, and each
/// subscription's position among them.
fn distinct_texts(subscriptions: &[Arc<Subscription>]) -> (Vec<&str>, Vec<usize>) {
    let mut texts: Vec<&str> = Vec::new();
    let mut by_text: HashMap<&str, usize> = HashMap::new();
    let text_of = subscriptions
        .iter()
        .map(|s| {
            let text = s.selector.as_deref().map(str::trim).unwrap_or_default();
            *by_text.entry(text).or_insert_with(|| {
                texts.push(text);
                texts.len() - 1
            })
        })
        .collect();
    (texts, text_of)
}

/// Below this many texts to compile an index compiles on one thread.
const PARALLEL_COMPILE_FROM: usize = 64;

/// Compiles the selector texts the index could not recognize into the cache on every
/// core first: parsing dominates a cold build, and the texts are independent.
fn precompile(texts: &[&str], cache: &SelectorCache) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if texts.len() < PARALLEL_COMPILE_FROM || threads < 2 {
        return;
    }
    let chunk = texts.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for part in texts.chunks(chunk) {
            scope.spawn(move || {
                for text in part {
                    // Errors are reported by the indexing pass, which compiles again.
                    let _ = cache.shared_selector(text);
                }
            });
        }
    });
}

/// Matches the one subscription a manual fire addresses.
pub fn match_single(
    subscription: Subscription,
    scope: &LazyScope,
    cache: &SelectorCache,
) -> StartMatches {
    let index = StartIndex::build([subscription], cache);
    index.match_event(scope.event(), scope)
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
