//! The closed `kind` taxonomy: platform-owned domains may only carry their registered
//! kinds, every other domain is a vendor domain that only has to be well-shaped.

use std::sync::LazyLock;

use regex::Regex;
use thiserror::Error;

/// Why a kind was refused; the message always names the offending kind.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid event kind {kind:?}: {reason}")]
pub struct InvalidKindError {
    pub kind: String,
    pub reason: String,
}

/// The platform registry: 10 domains, 36 kinds. Read-only by construction.
pub const PLATFORM_REGISTRY: &[(&str, &[&str])] = &[
    ("manual", &["manual.fire"]),
    ("cron", &["cron.tick"]),
    ("webhook", &["webhook.received"]),
    (
        "workflow",
        &[
            "workflow.started",
            "workflow.completed",
            "workflow.failed",
            "workflow.cancelled",
        ],
    ),
    (
        "run",
        &[
            "run.started",
            "run.completed",
            "run.failed",
            "run.cancelled",
        ],
    ),
    (
        "step",
        &[
            "step.started",
            "step.succeeded",
            "step.failed",
            "step.retry_scheduled",
            "step.waiting",
            "step.resumed",
            "step.timed_out",
        ],
    ),
    (
        "activity",
        &[
            "activity.scheduled",
            "activity.started",
            "activity.succeeded",
            "activity.failed",
            "activity.timed_out",
            "activity.cancelled",
        ],
    ),
    (
        "registry",
        &["registry.push", "registry.tag", "registry.delete"],
    ),
    (
        "pr",
        &[
            "pr.opened",
            "pr.merged",
            "pr.closed",
            "pr.review_requested",
            "pr.synchronized",
        ],
    ),
    (
        "scan",
        &[
            "scan.started",
            "scan.completed",
            "scan.failed",
            "scan.vulnerable",
        ],
    ),
];

static KIND_SHAPE: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)] // a literal pattern, checked by the tests
    Regex::new(r"^[a-z][a-z0-9]*(\.[a-z][a-z0-9_]*)+$").unwrap()
});

/// The text before the first `.` (the whole string when there is none).
pub fn kind_domain(kind: &str) -> &str {
    kind.split_once('.').map_or(kind, |(domain, _)| domain)
}

fn platform_kinds(domain: &str) -> Option<&'static [&'static str]> {
    PLATFORM_REGISTRY
        .iter()
        .find(|(d, _)| *d == domain)
        .map(|(_, kinds)| *kinds)
}

/// True when `domain` is owned by the platform (case-sensitive).
pub fn is_platform_domain(domain: &str) -> bool {
    platform_kinds(domain).is_some()
}

/// True when `kind` is one of the 36 registered platform kinds.
pub fn is_canonical_kind(kind: &str) -> bool {
    platform_kinds(kind_domain(kind)).is_some_and(|kinds| kinds.contains(&kind))
}

/// Checks shape first, then platform membership; vendor domains pass on shape alone.
pub fn validate_kind(kind: &str) -> Result<&str, InvalidKindError> {
    let refuse = |reason: String| InvalidKindError {
        kind: kind.to_owned(),
        reason,
    };
    if !KIND_SHAPE.is_match(kind) {
        return Err(refuse(format!(
            "does not match the pattern {}",
            KIND_SHAPE.as_str()
        )));
    }
    let domain = kind_domain(kind);
    match platform_kinds(domain) {
        Some(kinds) if !kinds.contains(&kind) => Err(refuse(format!(
            "domain {domain:?} is platform-owned and has no such kind"
        ))),
        _ => Ok(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn registry_has_ten_domains_and_thirty_six_distinct_kinds() {
        assert_eq!(PLATFORM_REGISTRY.len(), 10);
        let kinds: Vec<&str> = PLATFORM_REGISTRY
            .iter()
            .flat_map(|(_, k)| k.iter().copied())
            .collect();
        assert_eq!(kinds.len(), 36);
        assert_eq!(kinds.iter().collect::<HashSet<_>>().len(), 36);
    }

    #[test]
    fn every_canonical_kind_validates_and_sits_in_its_domain() {
        for (domain, kinds) in PLATFORM_REGISTRY {
            for kind in *kinds {
                assert_eq!(validate_kind(kind), Ok(*kind));
                assert_eq!(kind_domain(kind), *domain);
                assert!(is_canonical_kind(kind));
            }
        }
    }

    #[test]
    fn vendor_kinds_pass_on_shape() {
        for kind in [
            "ghcr.push",
            "github.pr_opened",
            "acr.image_pushed",
            "vendor.some_event",
            "ghcr.image.pushed",
        ] {
            assert_eq!(validate_kind(kind), Ok(kind));
            assert!(!is_canonical_kind(kind));
        }
    }

    #[test]
    fn malformed_kinds_are_refused_naming_the_kind() {
        for kind in [
            "",
            "nodot",
            "Manual.fire",
            "manual.Fire",
            "1abc.x",
            "abc.",
            ".abc",
            "a b.c",
            "a..b",
            "my-vendor.x",
            "vendor.x!",
            "ven_dor.x",
        ] {
            let err = validate_kind(kind).unwrap_err();
            assert!(err.reason.contains("pattern"), "{kind}: {err}");
            assert!(err.to_string().contains(&format!("{kind:?}")));
        }
    }

    #[test]
    fn unknown_kinds_in_platform_domains_are_refused() {
        for kind in [
            "workflow.unknown",
            "registry.deleted",
            "manual.fired",
            "step.done",
            "pr.reopened",
        ] {
            let err = validate_kind(kind).unwrap_err();
            assert!(err.reason.contains("platform-owned"), "{kind}: {err}");
        }
    }

    #[test]
    fn platform_domain_check_is_case_sensitive() {
        assert!(is_platform_domain("manual"));
        assert!(!is_platform_domain("Manual"));
        assert_eq!(kind_domain("nodot"), "nodot");
    }
}
