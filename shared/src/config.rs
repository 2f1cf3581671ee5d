//! Settings from the environment, with the defaults of the design. An invalid value
//! fails at cold start with an error naming the variable, never later mid-dispatch.

use std::collections::HashMap;

use thiserror::Error;

use crate::ids::WorkspaceId;

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
    pub dispatch_max_retries: u32,
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
        Ok(Self {
            dedup_ttl_secs: number(&lookup, "TRIGGER_DEDUP_TTL_SECONDS", 86_400)?,
            resume_default_ttl_secs: number(
                &lookup,
                "TRIGGER_RESUME_DEFAULT_TTL_SECONDS",
                604_800,
            )?,
            dispatch_max_retries: number(&lookup, "TRIGGER_DISPATCH_MAX_RETRIES", 5)?,
            fanout_max_depth: number(&lookup, "TRIGGER_FANOUT_MAX_DEPTH", 16)?,
            fanout_overrides: overrides(text("TRIGGER_FANOUT_MAX_DEPTH_OVERRIDES"))?,
            subscription_cache_secs: number(&lookup, "TRIGGER_SUBSCRIPTION_CACHE_SECONDS", 5)?,
            workflow_service_url: url(text("WORKFLOW_SERVICE_URL"))?,
            subscriptions_table: text("SUBSCRIPTIONS_TABLE"),
            resume_table: text("RESUME_TABLE"),
            ledger_table: text("LEDGER_TABLE"),
            connectors_table: text("CONNECTORS_TABLE"),
            normalized_queue_url: text("NORMALIZED_QUEUE_URL"),
            dispatch_queue_url: text("DISPATCH_QUEUE_URL"),
            environment: text("ENVIRONMENT").unwrap_or_else(|| "development".to_owned()),
        })
    }

    /// The loop-guard limit for a workspace (override, else the global default).
    pub fn fanout_limit(&self, workspace: &WorkspaceId) -> u32 {
        self.fanout_overrides
            .get(workspace)
            .copied()
            .unwrap_or(self.fanout_max_depth)
    }

    pub fn is_production(&self) -> bool {
        self.environment.eq_ignore_ascii_case("production")
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
        .map(|entry| {
            let (ws, depth) = entry.split_once('=').ok_or_else(|| bad(entry))?;
            let ws = WorkspaceId::new(ws.trim()).map_err(|_| bad(entry))?;
            let depth = depth.trim().parse().map_err(|_| bad(entry))?;
            Ok((ws, depth))
        })
        .collect()
}

fn url(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    match raw {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => Err(ConfigError {
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
        assert_eq!(s.dedup_ttl_secs, 86_400);
        assert_eq!(s.resume_default_ttl_secs, 604_800);
        assert_eq!(s.dispatch_max_retries, 5);
        assert_eq!(s.fanout_max_depth, 16);
        assert_eq!(s.workflow_service_url, None);
        assert_eq!(s.environment, "development");
        assert!(!s.is_production());
    }

    #[test]
    fn values_are_trimmed_and_blank_means_default() {
        let s = settings(&[
            ("TRIGGER_DISPATCH_MAX_RETRIES", " 3 "),
            ("TRIGGER_FANOUT_MAX_DEPTH", ""),
            ("WORKFLOW_SERVICE_URL", "http://127.0.0.1:8787/"),
            ("ENVIRONMENT", "Production"),
        ])
        .unwrap();
        assert_eq!(s.dispatch_max_retries, 3);
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
            ("TRIGGER_DISPATCH_MAX_RETRIES", "five"),
            ("TRIGGER_FANOUT_MAX_DEPTH", "1.5"),
            ("TRIGGER_FANOUT_MAX_DEPTH_OVERRIDES", "ws1:3"),
            ("WORKFLOW_SERVICE_URL", "ftp://x"),
        ] {
            let err = settings(&[(var, value)]).unwrap_err();
            assert_eq!(err.variable, var);
            assert!(err.to_string().contains(var));
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
