//! The operator console: one static page and its script, served by the API function
//! itself so it works offline and behind the same gateway. The page holds no data; every
//! figure on it comes from the JSON API with the operator's own credentials (a bearer
//! token, or the development shim where the environment allows it), so the console can
//! do nothing its user could not do with curl.

use super::problem::{Code, Problem};
use super::{Api, Params, Reply};

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// What the page is allowed to load and call: only this origin, no inline script, no
/// framing (the console has buttons that replay and discard).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; \
     frame-ancestors 'none'; base-uri 'none'";

/// Where the page tells the script whether the development shim may stand in for a
/// token (the script then offers to sign in with a workspace alone).
const SHIM_MARK: &str = "data-shim=\"\"";

pub fn page(api: &Api) -> Reply {
    let shim = if api.allow_shim() {
        "data-shim=\"allowed\""
    } else {
        "data-shim=\"refused\""
    };
    asset(
        "text/html; charset=utf-8",
        PAGE.replacen(SHIM_MARK, shim, 1),
    )
}

pub fn file(params: &Params) -> Result<Reply, Problem> {
    match params.get("asset").map(String::as_str) {
        Some("app.js") => Ok(asset("text/javascript; charset=utf-8", SCRIPT.to_owned())),
        Some("app.css") => Ok(asset("text/css; charset=utf-8", STYLE.to_owned())),
        _ => Err(Problem::new(
            Code::RouteNotFound,
            "the console has no such file",
        )),
    }
}

fn asset(content_type: &'static str, text: String) -> Reply {
    Reply::text(200, content_type, text)
        .with_header("content-security-policy", POLICY.to_owned())
        .with_header("x-content-type-options", "nosniff".to_owned())
        .with_header("referrer-policy", "no-referrer".to_owned())
        .with_header("cache-control", "no-cache".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_the_shim_mark_once_and_loads_only_its_own_files() {
        assert_eq!(PAGE.matches(SHIM_MARK).count(), 1);
        assert!(
            PAGE.contains("src=\"console/app.js\""),
            "relative to the API base"
        );
        assert!(PAGE.contains("href=\"console/app.css\""));
        assert!(
            !PAGE.contains("http://") && !PAGE.contains("https://"),
            "no CDN"
        );
        assert!(
            !PAGE.contains("<script>"),
            "no inline script under the policy"
        );
    }

    #[test]
    fn the_script_never_writes_html_from_data() {
        // Payloads and selectors are user-controlled; the script builds nodes and sets
        // text, never markup.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "app.js uses {sink}");
        }
    }

    #[test]
    fn unknown_files_are_404() {
        let mut params = Params::new();
        params.insert("asset", "../../etc/passwd".to_owned());
        let problem = file(&params).err().map(|p| p.code);
        assert_eq!(problem, Some(Code::RouteNotFound));
    }
}
