//! Settings from the environment, with the defaults of the design. An invalid value
//! fails at cold start with an error naming the variable, never later mid-dispatch.

use std::collections::HashMap;

use thiserror::Error;

use crate::ids::WorkspaceId;

/// The longest a dispatcher holds a dedup claim (it is also bounded by the Lambda deadline).
pub const MAX_LEASE_SECS: u64 = 60;
/// SQS visibility timeouts go up to 12 hours.
pub const MAX_BACKOFF_CAP_SECS: u32 = 43_200;

/// How many receives the dispatch queue must allow so that SQS never moves a message to
/// its DLQ while the retry window is still open. Every return of a dispatch message
/// sets its visibility to at least the exponential backoff of its attempt (ledger
/// attempts for RPC failures, receive count for returns without an RPC), so at most
/// `ceil(log2 cap)` returns of each kind are shorter than the cap and the rest are at
/// least `cap` apart: `ceil(window / cap) + 2 * ceil(log2 cap) + 2` (+1 for the first
/// receive, +1 for a crash or timeout).
pub fn required_receive_count(window_secs: u64, cap_secs: u32) -> u32 {
    let cap = u64::from(cap_secs.max(1));
    let short_returns = u64::from(u32::BITS - (cap_secs.max(1) - 1).leading_zeros());
    let total = window_secs.div_ceil(cap) + 2 * short_returns + 2;
    u32::try_from(total).unwrap_or(u32::MAX)
}

/// Receives the dispatch queue allows beyond [`required_receive_count`] when the cap is
/// longer than the shortest outage hold (5 s): held messages may then come back sooner
/// than the backoff schedule during an outage (`dispatch::outage`) until these are spent.
pub const OUTAGE_HOLD_RECEIVES: u32 = 50;

/// The dispatch queue's `maxReceiveCount` (the template's `DispatchReceiveBudget`):
/// what the retry window needs plus the outage allowance, at most SQS's 1000.
pub fn queue_receive_budget(window_secs: u64, cap_secs: u32) -> u32 {
    let allowance = if cap_secs > 5 {
        OUTAGE_HOLD_RECEIVES
    } else {
        0
    };
    required_receive_count(window_secs, cap_secs)
        .saturating_add(allowance)
        .min(1000)
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("configuration variable {variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

/// Everything the functions read from their environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub dedup_ttl_secs: u64,
    pub resume_default_ttl_secs: u64,
    /// `TRIGGER_RESUME_PARK_SECONDS`: how long a resume event without a live wait is
    /// kept for a later registration (0: not at all).
    pub resume_park_secs: u64,
    /// `TRIGGER_INTERNAL_CALLER_ARNS`: IAM principals allowed on the internal routes
    /// (exact ARNs, or prefixes ending in `*`); empty: any IAM-signed caller.
    pub internal_caller_arns: Vec<String>,
    /// `TRIGGER_DISPATCH_RETRY_WINDOW_SECONDS`: how long transient failures keep retrying
    /// (from the first attempt) before a match is dead-lettered `retries_exhausted`.
    pub dispatch_retry_window_secs: u64,
    /// `TRIGGER_DISPATCH_BACKOFF_CAP_SECONDS`: the longest delay between two attempts.
    pub dispatch_backoff_cap_secs: u32,
    /// `TRIGGER_DISPATCH_MAX_RECEIVE_COUNT`: the dispatch queue's `maxReceiveCount`, when
    /// known; checked at cold start against what the retry window needs.
    pub dispatch_max_receive_count: Option<u32>,
    pub fanout_max_depth: u32,
    /// `TRIGGER_FANOUT_MAX_DEPTH_OVERRIDES`: `ws1=4,ws2=32`.
    pub fanout_overrides: HashMap<WorkspaceId, u32>,
    /// How long a warm match function reuses a workspace's compiled subscription index.
    pub subscription_cache_secs: u64,
    pub workflow_service_url: Option<String>,
    pub subscriptions_table: Option<String>,
    pub resume_table: Option<String>,
    pub ledger_table: Option<String>,
    pub connectors_table: Option<String>,
    pub events_table: Option<String>,
    pub parked_table: Option<String>,
    pub flow_table: Option<String>,
    /// `TRIGGER_ARCHIVE_TTL_SECONDS`: how long archived events are kept.
    pub archive_ttl_secs: u64,
    pub normalized_queue_url: Option<String>,
    pub dispatch_queue_url: Option<String>,
    pub environment: String,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let text = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let settings = Self {
            dedup_ttl_secs: number(&lookup, "TRIGGER_DEDUP_TTL_SECONDS", 604_800)?,
            resume_default_ttl_secs: number(
                &lookup,
                "TRIGGER_RESUME_DEFAULT_TTL_SECONDS",
                604_800,
            )?,
            resume_park_secs: number(&lookup, "TRIGGER_RESUME_PARK_SECONDS", 300)?,
            internal_caller_arns: text("TRIGGER_INTERNAL_CALLER_ARNS")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            dispatch_retry_window_secs: number(
                &lookup,
                "TRIGGER_DISPATCH_RETRY_WINDOW_SECONDS",
                86_400,
            )?,
            dispatch_backoff_cap_secs: number(
                &lookup,
                "TRIGGER_DISPATCH_BACKOFF_CAP_SECONDS",
                300,
            )?,
            dispatch_max_receive_count: text("TRIGGER_DISPATCH_MAX_RECEIVE_COUNT")
                .map(|_| number(&lookup, "TRIGGER_DISPATCH_MAX_RECEIVE_COUNT", 0))
                .transpose()?,
            fanout_max_depth: number(&lookup, "TRIGGER_FANOUT_MAX_DEPTH", 16)?,
            fanout_overrides: overrides(text("TRIGGER_FANOUT_MAX_DEPTH_OVERRIDES"))?,
            subscription_cache_secs: number(&lookup, "TRIGGER_SUBSCRIPTION_CACHE_SECONDS", 5)?,
            workflow_service_url: url(text("WORKFLOW_SERVICE_URL"))?,
            subscriptions_table: text("SUBSCRIPTIONS_TABLE"),
            resume_table: text("RESUME_TABLE"),
            ledger_table: text("LEDGER_TABLE"),
            connectors_table: text("CONNECTORS_TABLE"),
            events_table: text("EVENTS_TABLE"),
            parked_table: text("PARKED_TABLE"),
            flow_table: text("FLOW_TABLE"),
            archive_ttl_secs: number(&lookup, "TRIGGER_ARCHIVE_TTL_SECONDS", 604_800)?,
            normalized_queue_url: text("NORMALIZED_QUEUE_URL"),
            dispatch_queue_url: text("DISPATCH_QUEUE_URL"),
            environment: environment(text("ENVIRONMENT"))?,
        };
        settings.check_retry_budget()?;
        settings.check_dedup_horizon()?;
        if settings.resume_default_ttl_secs == 0 {
            return Err(ConfigError {
                variable: "TRIGGER_RESUME_DEFAULT_TTL_SECONDS",
                reason: "must be at least 1 (a wait that lapses at once is never resumed)"
                    .to_owned(),
            });
        }
        Ok(settings)
    }

    /// The rules between settings: a live claim must never look expired (dedup TTL vs
    /// the longest lease), the backoff cap must fit an SQS visibility timeout, and the
    /// dispatch queue must not give up on a message before the retry window has passed.
    fn check_retry_budget(&self) -> Result<(), ConfigError> {
        if self.dedup_ttl_secs < MAX_LEASE_SECS {
            return Err(ConfigError {
                variable: "TRIGGER_DEDUP_TTL_SECONDS",
                reason: format!(
                    "{} s is shorter than the longest dedup lease ({MAX_LEASE_SECS} s): a live claim could be taken over as expired",
                    self.dedup_ttl_secs
                ),
            });
        }
        if !(1..=MAX_BACKOFF_CAP_SECS).contains(&self.dispatch_backoff_cap_secs) {
            return Err(ConfigError {
                variable: "TRIGGER_DISPATCH_BACKOFF_CAP_SECONDS",
                reason: format!(
                    "expected 1..={MAX_BACKOFF_CAP_SECS}, got {}",
                    self.dispatch_backoff_cap_secs
                ),
            });
        }
        if self.dispatch_retry_window_secs == 0 {
            return Err(ConfigError {
                variable: "TRIGGER_DISPATCH_RETRY_WINDOW_SECONDS",
                reason: "must be at least 1".to_owned(),
            });
        }
        let needed = required_receive_count(
            self.dispatch_retry_window_secs,
            self.dispatch_backoff_cap_secs,
        );
        match self.dispatch_max_receive_count {
            Some(count) if count < needed => Err(ConfigError {
                variable: "TRIGGER_DISPATCH_MAX_RECEIVE_COUNT",
                reason: format!(
                    "{count} receives end before the retry window of {} s at a backoff cap of {} s, which needs {needed}",
                    self.dispatch_retry_window_secs, self.dispatch_backoff_cap_secs
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The dedup ledger must remember a dispatch for as long as anything can bring its
    /// event back: an event replay or a re-posted webhook (both as long as the archive
    /// keeps the event), a redelivery within the retry window, a parked event's
    /// registration. Otherwise a pair the README calls a duplicate would run twice.
    fn check_dedup_horizon(&self) -> Result<(), ConfigError> {
        let horizons = [
            ("TRIGGER_ARCHIVE_TTL_SECONDS", self.archive_ttl_secs),
            (
                "TRIGGER_DISPATCH_RETRY_WINDOW_SECONDS (+ the backoff cap)",
                self.dispatch_retry_window_secs
                    .saturating_add(u64::from(self.dispatch_backoff_cap_secs)),
            ),
            ("TRIGGER_RESUME_PARK_SECONDS", self.resume_park_secs),
        ];
        match horizons
            .into_iter()
            .find(|(_, horizon)| *horizon > self.dedup_ttl_secs)
        {
            Some((name, horizon)) => Err(ConfigError {
                variable: "TRIGGER_DEDUP_TTL_SECONDS",
                reason: format!(
                    "{} s is shorter than {name} ({horizon} s): an event brought back after the ledger forgot it would be dispatched twice",
                    self.dedup_ttl_secs
                ),
            }),
            None => Ok(()),
        }
    }

    /// The loop-guard limit for a workspace (override, else the global default).
    pub fn fanout_limit(&self, workspace: &WorkspaceId) -> u32 {
        self.fanout_overrides
            .get(workspace)
            .copied()
            .unwrap_or(self.fanout_max_depth)
    }

    pub fn archive_retention(&self) -> crate::archive::Retention {
        crate::archive::Retention {
            ttl_secs: i64::try_from(self.archive_ttl_secs).unwrap_or(i64::MAX / 2000),
        }
    }

    pub fn is_production(&self) -> bool {
        self.environment == "production"
    }

    /// The development call-context shim (and shim-signed internal calls) are allowed
    /// only where the environment says so explicitly.
    pub fn allows_development_shim(&self) -> bool {
        DEVELOPMENT_ENVIRONMENTS.contains(&self.environment.as_str())
    }

    /// A setting this function cannot run without.
    pub fn require<'a>(
        value: &'a Option<String>,
        variable: &'static str,
    ) -> Result<&'a str, ConfigError> {
        value.as_deref().ok_or(ConfigError {
            variable,
            reason: "is required".to_owned(),
        })
    }
}

fn number<T: std::str::FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match lookup(variable).map(|v| v.trim().to_owned()) {
        None => Ok(default),
        Some(v) if v.is_empty() => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError {
            variable,
            reason: format!("expected a non-negative integer, got {v:?}"),
        }),
    }
}

fn overrides(raw: Option<String>) -> Result<HashMap<WorkspaceId, u32>, ConfigError> {
    let variable = "TRIGGER_FANOUT_MAX_DEPTH_OVERRIDES";
    let bad = |entry: &str| ConfigError {
        variable,
        reason: format!("expected workspace=depth entries separated by commas, got {entry:?}"),
    };
    let Some(raw) = raw else {
        return Ok(HashMap::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .try_fold(HashMap::new(), |mut all, entry| {
            let (ws, depth) = entry.split_once('=').ok_or_else(|| bad(entry))?;
            let ws = WorkspaceId::new(ws.trim()).map_err(|_| bad(entry))?;
            let depth = depth.trim().parse().map_err(|_| bad(entry))?;
            if all.insert(ws.clone(), depth).is_some() {
                return Err(ConfigError {
                    variable,
                    reason: format!("workspace {ws} is listed more than once"),
                });
            }
            Ok(all)
        })
}

/// Environments where local-only conveniences (the call-context shim) are on.
const DEVELOPMENT_ENVIRONMENTS: &[&str] = &["development", "local"];
const ENVIRONMENTS: &[&str] = &["production", "staging", "development", "local"];

/// `ENVIRONMENT`: production unless set; an unknown name fails closed at cold start.
fn environment(raw: Option<String>) -> Result<String, ConfigError> {
    let Some(raw) = raw else {
        return Ok("production".to_owned());
    };
    let name = raw.to_ascii_lowercase();
    if ENVIRONMENTS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(ConfigError {
            variable: "ENVIRONMENT",
            reason: format!("expected one of {}, got {raw:?}", ENVIRONMENTS.join(", ")),
        })
    }
}

/// `http(s)://` followed by a host (not `http://` alone, nor `http:///path`).
fn has_host(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.and_then(|r| r.split(['/', '?', '#']).next())
        .is_some_and(|authority| !authority.is_empty() && !authority.starts_with(':'))
}

fn url(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    match raw {
        Some(u) if !has_host(&u) => Err(ConfigError {
            variable: "WORKFLOW_SERVICE_URL",
            reason: format!("expected an http(s) URL, got {u:?}"),
        }),
        other => Ok(other.map(|u| u.trim_end_matches('/').to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_design() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.dedup_ttl_secs, 604_800);
        assert!(s.dedup_ttl_secs >= s.archive_ttl_secs);
        assert_eq!(s.resume_default_ttl_secs, 604_800);
        assert_eq!(s.dispatch_retry_window_secs, 86_400);
        assert_eq!(s.dispatch_backoff_cap_secs, 300);
        assert_eq!(s.fanout_max_depth, 16);
        assert_eq!(s.workflow_service_url, None);
        assert_eq!(
            s.environment, "production",
            "fail closed: production unless set"
        );
        assert!(s.is_production());
        assert!(!s.allows_development_shim());
    }

    #[test]
    fn values_are_trimmed_and_blank_means_default() {
        let s = settings(&[
            ("TRIGGER_DISPATCH_BACKOFF_CAP_SECONDS", " 3 "),
            ("TRIGGER_FANOUT_MAX_DEPTH", ""),
            ("WORKFLOW_SERVICE_URL", "http://127.0.0.1:8787/"),
            ("ENVIRONMENT", "Production"),
        ])
        .unwrap();
        assert_eq!(s.dispatch_backoff_cap_secs, 3);
        assert_eq!(s.fanout_max_depth, 16);
        assert_eq!(
            s.workflow_service_url.as_deref(),
            Some("http://127.0.0.1:8787")
        );
        assert!(s.is_production());
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (var, value) in [
            ("TRIGGER_DEDUP_TTL_SECONDS", "-1"),
            ("TRIGGER_DISPATCH_RETRY_WINDOW_SECONDS", "five"),
            ("TRIGGER_DISPATCH_RETRY_WINDOW_SECONDS", "0"),
            ("TRIGGER_DISPATCH_BACKOFF_CAP_SECONDS", "0"),
            ("TRIGGER_DISPATCH_BACKOFF_CAP_SECONDS", "86400"),
            ("TRIGGER_DEDUP_TTL_SECONDS", "59"),
            ("TRIGGER_DEDUP_TTL_SECONDS", "86400"),
            ("TRIGGER_RESUME_DEFAULT_TTL_SECONDS", "0"),
            ("TRIGGER_FANOUT_MAX_DEPTH_OVERRIDES", "ws1=4,ws1=100"),
            ("WORKFLOW_SERVICE_URL", "http://"),
            ("WORKFLOW_SERVICE_URL", "https:///path"),
            ("TRIGGER_FANOUT_MAX_DEPTH", "1.5"),
            ("TRIGGER_FANOUT_MAX_DEPTH_OVERRIDES", "ws1:3"),
            ("WORKFLOW_SERVICE_URL", "ftp://x"),
            ("ENVIRONMENT", "dev"),
            ("ENVIRONMENT", "prod"),
        ] {
            let err = settings(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var);
            assert!(err.to_string().contains(var));
        }
    }

    #[test]
    fn the_receive_budget_covers_the_retry_window() {
        // 24 h at a 300 s cap: 288 cap-spaced returns + 2 x 9 short ones + 2.
        assert_eq!(required_receive_count(86_400, 300), 308);
        assert_eq!(required_receive_count(60, 4), 15 + 4 + 2);
        assert_eq!(required_receive_count(1, 1), 1 + 2);
        let ok = settings(&[
            ("TRIGGER_DISPATCH_RETRY_WINDOW_SECONDS", "86400"),
            ("TRIGGER_DISPATCH_MAX_RECEIVE_COUNT", "308"),
        ]);
        assert!(ok.is_ok());
        let err = settings(&[("TRIGGER_DISPATCH_MAX_RECEIVE_COUNT", "307")]).unwrap_err();
        assert_eq!(err.variable, "TRIGGER_DISPATCH_MAX_RECEIVE_COUNT");
        assert!(err.reason.contains("308"), "{err}");
    }

    /// The template's `DispatchReceiveBudget` table is this formula, capped at SQS's 1000.
    #[test]
    fn the_template_receive_budget_table_follows_the_formula() {
        let template = include_str!("../../template.yaml");
        let table = template
            .split("  DispatchReceiveBudget:\n")
            .nth(1)
            .expect("mapping present");
        let mut checked = 0;
        for line in table.lines().take_while(|l| l.starts_with("    \"")) {
            let (cap, windows) = line.trim().split_once(": {").expect("cap row");
            let cap: u32 = cap.trim_matches('"').parse().expect("cap");
            for pair in windows.trim_end_matches('}').split(", ") {
                let (window, count) = pair.split_once(": ").expect("window pair");
                let window: u64 = window.trim_matches('"').parse().expect("window");
                let count: u32 = count.parse().expect("count");
                assert_eq!(
                    count,
                    queue_receive_budget(window, cap),
                    "cap {cap}, window {window}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 24);
    }

    #[test]
    fn only_development_and_local_allow_the_shim() {
        for (name, shim) in [
            ("development", true),
            ("local", true),
            ("Development", true),
            ("staging", false),
            ("production", false),
        ] {
            let s = settings(&[("ENVIRONMENT", name)]).unwrap();
            assert_eq!(s.allows_development_shim(), shim, "{name}");
        }
    }

    #[test]
    fn per_workspace_fanout_override() {
        let s = settings(&[("TRIGGER_FANOUT_MAX_DEPTH_OVERRIDES", "ws1=4, ws2=32")]).unwrap();
        assert_eq!(s.fanout_limit(&WorkspaceId::new("ws1").unwrap()), 4);
        assert_eq!(s.fanout_limit(&WorkspaceId::new("ws2").unwrap()), 32);
        assert_eq!(s.fanout_limit(&WorkspaceId::new("ws3").unwrap()), 16);
    }

    #[test]
    fn required_settings_name_their_variable() {
        let s = settings(&[]).unwrap();
        let err = Settings::require(&s.workflow_service_url, "WORKFLOW_SERVICE_URL").unwrap_err();
        assert_eq!(err.variable, "WORKFLOW_SERVICE_URL");
    }
}
