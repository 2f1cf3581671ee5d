//! Optimistic concurrency for the API's versioned resources (subscriptions, connector
//! instances): the version as a strong `ETag`, and what an `If-Match` header accepts.

use super::request::ApiRequest;

/// The version as a strong entity tag.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// The versions an `If-Match` header accepts (`None` when absent or `*`). RFC 9110: a
/// list of entity tags compared strongly, so a weak tag, a tag this API never issued or
/// a value that is no entity tag at all matches nothing: the change is refused (412),
/// never applied on a guess.
pub fn if_match(request: &ApiRequest) -> Option<Vec<u64>> {
    let raw = request.header("if-match")?.trim();
    if raw == "*" {
        return None;
    }
    let mut versions = Vec::new();
    let mut rest = raw;
    while let Some(open) = rest.find('"') {
        let weak = rest[..open].trim_end().ends_with("W/");
        let Some((tag, after)) = rest[open + 1..].split_once('"') else {
            break;
        };
        if let (false, Ok(version)) = (weak, tag.parse::<u64>()) {
            versions.push(version);
        }
        rest = after;
    }
    Some(versions)
}

/// Whether `version` satisfies the `If-Match` of a request (`None`: no condition).
pub fn admits(required: Option<&[u64]>, version: u64) -> bool {
    required.is_none_or(|versions| versions.contains(&version))
}
