//! Resume waits: a waiting `(runId, stepId, eventKey)` that the next matching event
//! resumes exactly once (the wait is deleted after a confirmed delivery).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{ResumeId, WorkspaceId};
use crate::store::StoreError;

/// The triple a wait is registered under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeKey {
    pub run_id: String,
    pub step_id: String,
    pub event_key: String,
}

impl ResumeKey {
    /// `res_` + hex(sha256(runId \0 stepId \0 eventKey)).
    pub fn resume_id(&self) -> ResumeId {
        let mut hasher = Sha256::new();
        hasher.update(self.run_id.as_bytes());
        hasher.update([0]);
        hasher.update(self.step_id.as_bytes());
        hasher.update([0]);
        hasher.update(self.event_key.as_bytes());
        let id = format!("res_{}", hex::encode(hasher.finalize()));
        ResumeId::new(id).unwrap_or_else(|_| unreachable!("prefixed id is non-empty"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeWait {
    pub resume_id: ResumeId,
    pub run_id: String,
    pub step_id: String,
    pub event_key: String,
    #[serde(default)]
    pub selector: Option<String>,
    /// The tenant that registered the wait; events of other workspaces never resume it.
    #[serde(default)]
    pub workspace_id: Option<WorkspaceId>,
    /// Epoch seconds; a wait with `expiresAt <= now` has lapsed.
    pub expires_at: i64,
}

impl ResumeWait {
    pub fn is_live(&self, now_secs: i64) -> bool {
        self.expires_at > now_secs
    }
}

/// Seconds of an ISO-8601 duration in the subset `P[nW][nD][T[nH][nM][n[.f]S]]`
/// (upper-case designators, surrounding whitespace ignored, fractional seconds
/// truncated). `None` for anything else, including years and months.
pub fn parse_ttl(text: &str) -> Option<u64> {
    let rest = text.trim().strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return None,
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    let (days, date_parts) = components(date, &[('W', 604_800), ('D', 86_400)])?;
    let (clock, time_parts) = match time {
        Some(time) => {
            components(time, &[('H', 3_600), ('M', 60), ('S', 1)]).filter(|(_, n)| *n > 0)?
        }
        None => (0, 0),
    };
    (date_parts + time_parts > 0).then_some(days.checked_add(clock)?)
}

/// Sums `<number><designator>` components that appear in `units` order, each at most
/// once; only seconds may carry a fraction. Returns the total and the component count.
fn components(mut part: &str, mut units: &[(char, u64)]) -> Option<(u64, usize)> {
    let (mut total, mut count) = (0u64, 0usize);
    while !part.is_empty() {
        let end = part.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (number, tail) = part.split_at(end);
        let designator = tail.chars().next()?;
        let position = units.iter().position(|(d, _)| *d == designator)?;
        let whole = match number.split_once('.') {
            Some((w, f))
                if designator == 'S' && !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) =>
            {
                w
            }
            Some(_) => return None,
            None => number,
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        total = total.checked_add(whole.parse::<u64>().ok()?.checked_mul(units[position].1)?)?;
        count += 1;
        units = &units[position + 1..];
        part = &tail[designator.len_utf8()..];
    }
    Some((total, count))
}

#[async_trait]
pub trait ResumeStore: Send + Sync {
    async fn get(&self, id: &ResumeId) -> Result<Option<ResumeWait>, StoreError>;
    async fn put(&self, wait: &ResumeWait) -> Result<(), StoreError>;
    /// Deletes the wait; `false` when it was already gone (the one-shot guarantee).
    async fn delete(&self, id: &ResumeId) -> Result<bool, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_grammar_follows_the_upstream_examples() {
        for (text, seconds) in [
            ("PT24H", 86_400),
            ("P7D", 604_800),
            ("PT1H", 3_600),
            ("PT30M", 1_800),
            ("PT45S", 45),
            ("P1W", 604_800),
            ("P1DT2H3M4S", 93_784),
            ("PT1.5S", 1),
            ("P1W2D", 777_600),
            (" PT0S ", 0),
        ] {
            assert_eq!(parse_ttl(text), Some(seconds), "{text}");
        }
        for text in [
            "", "P", "PT", "garbage", "24H", "PT24X", "P1Y", "P1M", "pt1h", "PT1H2H", "PT1M1H",
            "P1.5D",
        ] {
            assert_eq!(parse_ttl(text), None, "{text}");
        }
    }

    #[test]
    fn resume_id_is_prefixed_sha256_of_the_nul_joined_triple() {
        let key = ResumeKey {
            run_id: "r".into(),
            step_id: "s".into(),
            event_key: "k".into(),
        };
        let expected = format!("res_{}", hex::encode(Sha256::digest(b"r\0s\0k")));
        assert_eq!(key.resume_id().as_str(), expected);
    }
}
