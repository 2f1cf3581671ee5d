//! Who is calling. Management routes take the workspace and permissions from the API
//! Gateway authorizer context (a Lambda authorizer's `workspace_id` / `permissions`, or
//! JWT claims of the same names); internal routes require IAM. A development shim reads
//! the context from the `x-custos-callctx` header, and only outside production.

use serde::Deserialize;
use serde_json::Value;

use super::problem::{Code, Problem};
use super::request::ApiRequest;
use crate::ids::WorkspaceId;

pub const READ: &str = "trigger:subscriptions:read";
pub const WRITE: &str = "trigger:subscriptions:write";
pub const DELETE: &str = "trigger:subscriptions:delete";
pub const FIRE: &str = "trigger:subscriptions:fire";
pub const CONNECTORS_READ: &str = "trigger:connectors:read";
pub const CONNECTORS_WRITE: &str = "trigger:connectors:write";
pub const DEAD_LETTERS_READ: &str = "trigger:deadletters:read";
/// Replays (dead letters and archived events) and discards.
pub const DEAD_LETTERS_REPLAY: &str = "trigger:deadletters:replay";

pub const SHIM_HEADER: &str = "x-custos-callctx";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub workspace_id: WorkspaceId,
    pub permissions: Vec<String>,
}

impl Caller {
    /// The caller acts on `workspace` with `permission`, or the request is refused.
    pub fn authorize(&self, workspace: &WorkspaceId, permission: &str) -> Result<(), Problem> {
        if &self.workspace_id != workspace {
            return Err(Problem::new(
                Code::WorkspaceMismatch,
                "the path workspace is not the caller's workspace",
            ));
        }
        if !self.permissions.iter().any(|p| p == permission) {
            return Err(
                Problem::new(Code::PermissionDenied, format!("requires {permission}"))
                    .with("permission", permission),
            );
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShimContext {
    workspace_id: String,
    #[allow(dead_code)] // accepted for compatibility with the upstream shim
    principal_id: Option<String>,
    #[allow(dead_code)]
    tenant_id: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[allow(dead_code)]
    iat: Option<i64>,
    #[allow(dead_code)]
    exp: Option<i64>,
}

fn permissions_of(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(text)) => split_permissions(text),
        _ => Vec::new(),
    }
}

/// JWT claims arrive as strings: `"a b"`, `"a,b"` or `"[a b]"`.
fn split_permissions(text: &str) -> Vec<String> {
    text.trim_matches(|c| c == '[' || c == ']')
        .split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn workspace(raw: Option<&str>) -> Result<WorkspaceId, Problem> {
    raw.and_then(|ws| WorkspaceId::new(ws).ok()).ok_or_else(|| {
        Problem::new(
            Code::CallContextMissing,
            "the caller context has no workspace_id",
        )
    })
}

/// The tenant caller of a management route.
pub fn caller(request: &ApiRequest, allow_shim: bool) -> Result<Caller, Problem> {
    if let Some(authorizer) = &request.authorizer {
        if !authorizer.fields.is_empty() {
            return Ok(Caller {
                workspace_id: workspace(
                    authorizer
                        .fields
                        .get("workspace_id")
                        .and_then(Value::as_str),
                )?,
                permissions: permissions_of(authorizer.fields.get("permissions")),
            });
        }
        if let Some(jwt) = &authorizer.jwt {
            let permissions = jwt
                .claims
                .get("permissions")
                .or_else(|| jwt.claims.get("scope"))
                .map(|p| split_permissions(p))
                .unwrap_or_default();
            return Ok(Caller {
                workspace_id: workspace(jwt.claims.get("workspace_id").map(String::as_str))?,
                permissions,
            });
        }
    }
    match request.header(SHIM_HEADER) {
        Some(raw) if allow_shim => {
            let context: ShimContext = serde_json::from_str(raw).map_err(|e| {
                Problem::new(
                    Code::CallContextMalformed,
                    format!("{SHIM_HEADER} is not a valid call context: {e}"),
                )
            })?;
            tracing::warn!(
                workspace_id = context.workspace_id,
                "development call-context shim used"
            );
            Ok(Caller {
                workspace_id: workspace(Some(&context.workspace_id))?,
                permissions: context.permissions,
            })
        }
        _ => Err(Problem::new(
            Code::CallContextMissing,
            "no caller identity on the request",
        )),
    }
}

/// Internal routes (resume waits): only IAM-signed callers, and when an allow-list is
/// configured (`TRIGGER_INTERNAL_CALLER_ARNS`) only the principals on it; the shim
/// stands in outside production.
pub fn internal(request: &ApiRequest, allow_shim: bool, allowed: &[String]) -> Result<(), Problem> {
    let iam = request.authorizer.as_ref().and_then(|a| a.iam.as_ref());
    if let Some(iam) = iam {
        let arn = iam.user_arn.as_deref().unwrap_or_default();
        if allowed.is_empty() || allowed.iter().any(|entry| arn_allowed(entry, arn)) {
            return Ok(());
        }
        tracing::warn!(
            caller_arn = arn,
            "internal route refused: caller not on TRIGGER_INTERNAL_CALLER_ARNS"
        );
        return Err(Problem::new(
            Code::PermissionDenied,
            "this IAM principal may not call internal routes",
        ));
    }
    if allow_shim && request.header(SHIM_HEADER).is_some() {
        tracing::warn!("internal route called without IAM; allowed by the development shim");
        return Ok(());
    }
    Err(Problem::new(
        Code::CallContextMissing,
        "internal routes require an IAM-signed caller",
    ))
}

/// An allow-list entry is an exact ARN, or a prefix ending in `*`.
fn arn_allowed(entry: &str, arn: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => !arn.is_empty() && arn.starts_with(prefix),
        None => entry == arn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_allow_list_takes_exact_arns_and_star_prefixes() {
        let role = "arn:aws:sts::123456789012:assumed-role/workflow/session-1";
        assert!(arn_allowed(role, role));
        assert!(arn_allowed(
            "arn:aws:sts::123456789012:assumed-role/workflow/*",
            role
        ));
        assert!(!arn_allowed(
            "arn:aws:sts::123456789012:assumed-role/other/*",
            role
        ));
        assert!(!arn_allowed(
            "arn:aws:sts::123456789012:assumed-role/workflow",
            role
        ));
        assert!(!arn_allowed("*", ""), "an unnamed caller never matches");
    }

    #[test]
    fn claim_strings_split_into_permissions() {
        assert_eq!(split_permissions("[a b]"), ["a", "b"]);
        assert_eq!(split_permissions("a,b c"), ["a", "b", "c"]);
        assert!(split_permissions("").is_empty());
    }

    #[test]
    fn authorize_checks_workspace_before_permission() {
        let caller = Caller {
            workspace_id: WorkspaceId::new("ws1").unwrap(),
            permissions: vec![READ.into()],
        };
        let ws1 = WorkspaceId::new("ws1").unwrap();
        assert!(caller.authorize(&ws1, READ).is_ok());
        assert_eq!(
            caller.authorize(&ws1, WRITE).unwrap_err().code,
            Code::PermissionDenied
        );
        let ws2 = WorkspaceId::new("ws2").unwrap();
        assert_eq!(
            caller.authorize(&ws2, WRITE).unwrap_err().code,
            Code::WorkspaceMismatch
        );
    }
}
