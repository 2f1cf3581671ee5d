//! One API request as the handlers see it, built from an API Gateway HTTP API (v2)
//! event or from the `http::Request` that `lambda_http` makes of one: decoded body,
//! lower-cased headers, query map, authorizer context. Parsing a JSON body reports the
//! failing field's path (`inputMapping.a: invalid type ...`).

use std::collections::HashMap;

use aws_lambda_events::event::apigw::{ApiGatewayRequestAuthorizer, ApiGatewayV2httpRequest};
use aws_lambda_events::http;
use base64::Engine;
use serde::de::DeserializeOwned;

use super::problem::{Code, Problem};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub authorizer: Option<ApiGatewayRequestAuthorizer>,
}

impl ApiRequest {
    pub fn from_event(event: ApiGatewayV2httpRequest) -> Result<Self, (String, Problem)> {
        let path = event.raw_path.clone().unwrap_or_else(|| "/".to_owned());
        let raw = event.body.unwrap_or_default();
        let body = if event.is_base64_encoded {
            base64::engine::general_purpose::STANDARD
                .decode(raw.as_bytes())
                .map_err(|e| {
                    (
                        path.clone(),
                        Problem::new(Code::BadRequest, format!("body is not valid base64: {e}")),
                    )
                })?
        } else {
            raw.into_bytes()
        };
        let headers = lowercase_headers(&event.headers);
        let query = event
            .query_string_parameters
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(Self {
            method: event
                .request_context
                .http
                .method
                .as_str()
                .to_ascii_uppercase(),
            path,
            query,
            headers,
            body,
            authorizer: event.request_context.authorizer,
        })
    }

    /// The same request as `lambda_http` hands it over (through the gateway or
    /// `cargo lambda watch`), or as any HTTP server does: the path as the caller wrote
    /// it, the query as the gateway decoded it (from the URI without a gateway), the
    /// authorizer context when a gateway ran one.
    pub fn from_http(parts: &http::request::Parts, body: Vec<u8>) -> Self {
        use lambda_http::request::RequestContext;
        use lambda_http::RequestExt;
        let path = match parts.raw_http_path() {
            "" => parts.uri.path(),
            raw => raw,
        };
        let query = match parts.query_string_parameters_ref() {
            Some(gateway) => gateway
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            None => axum::extract::Query::try_from_uri(&parts.uri)
                .map(|axum::extract::Query(query)| query)
                .unwrap_or_default(),
        };
        let authorizer = match parts.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context.authorizer.clone(),
            _ => None,
        };
        Self {
            method: parts.method.as_str().to_ascii_uppercase(),
            path: path.to_owned(),
            query,
            headers: lowercase_headers(&parts.headers),
            body,
            authorizer,
        }
    }

    /// A query parameter that names one value of a closed set (`T`'s serde names).
    pub fn query_enum<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Problem> {
        self.query
            .get(name)
            .map(|raw| {
                serde_json::from_value(serde_json::Value::String(raw.clone())).map_err(|_| {
                    Problem::new(Code::BadRequest, format!("{name}: unknown value {raw:?}"))
                })
            })
            .transpose()
    }

    /// `limit`, within `1..=max` (`default` when absent).
    /// A listing's `limit`: the same default and maximum for every listing.
    pub fn page_limit(&self) -> Result<usize, Problem> {
        self.query_count(
            "limit",
            crate::listing::DEFAULT_PAGE,
            crate::listing::MAX_PAGE,
        )
    }

    /// A count in the query, within `1..=max` (`default` when absent).
    pub fn query_count(&self, name: &str, default: usize, max: usize) -> Result<usize, Problem> {
        let Some(raw) = self.query.get(name) else {
            return Ok(default);
        };
        raw.parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| {
                Problem::new(
                    Code::BadRequest,
                    format!("{name}: expected 1..={max}, got {raw:?}"),
                )
            })
    }

    /// The `cursor` of a listing, when `issued` recognizes it as one this service
    /// handed out (anything else is 400, never a guess or a malformed store key).
    pub fn query_cursor(&self, issued: impl Fn(&str) -> bool) -> Result<Option<String>, Problem> {
        match self.query_str("cursor") {
            None => Ok(None),
            Some(cursor) if issued(cursor) => Ok(Some(cursor.to_owned())),
            Some(_) => Err(Problem::new(
                Code::BadRequest,
                "cursor: not a cursor this listing handed out (pass nextCursor as it came)",
            )),
        }
    }

    /// A non-empty query parameter.
    pub fn query_str(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An RFC 3339 instant in the query, as epoch milliseconds (given but empty: 400).
    pub fn query_time_ms(&self, name: &str) -> Result<Option<i64>, Problem> {
        self.query
            .get(name)
            .map(|raw| rfc3339_ms(name, raw))
            .transpose()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Parses the body as `T`; an empty body parses as `{}`. Every request body is a
    /// JSON object: serde would also read a struct from an array of its fields.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        let body: &[u8] = match self.body.iter().find(|b| !b.is_ascii_whitespace()) {
            None => b"{}",
            Some(b'{') => &self.body,
            Some(_) => {
                return Err(Problem::new(
                    Code::BadRequest,
                    "the body must be a JSON object",
                ))
            }
        };
        let mut deserializer = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let detail = if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            };
            Problem::new(Code::BadRequest, detail)
        })
    }
}

/// Header names as the handlers look them up (lower case); values that are not text are
/// left out.
fn lowercase_headers(headers: &http::HeaderMap) -> HashMap<String, String> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                name.as_str().to_ascii_lowercase(),
                value.to_str().ok()?.to_owned(),
            ))
        })
        .collect()
}

/// Parses an RFC 3339 instant (`2026-11-27T10:00:00Z`) as epoch milliseconds.
pub fn rfc3339_ms(name: &str, raw: &str) -> Result<i64, Problem> {
    crate::instant::parse_ms(raw).ok_or_else(|| {
        Problem::new(
            Code::BadRequest,
            format!(
                "{name}: expected an RFC 3339 instant such as 2026-11-27T10:00:00Z, got {raw:?}"
            ),
        )
    })
}

/// A count in a JSON body. JSON Schema (and so openapi.yaml) calls `246.0` an integer,
/// so a whole-valued float is read like `246`; a fraction, a negative or a string is
/// refused.
pub fn count<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    use serde::de::{Deserialize, Error};
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(whole) = number.as_u64() {
        return usize::try_from(whole).map_err(D::Error::custom);
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=usize::MAX as f64).contains(&f) => Ok(f as usize),
        _ => Err(D::Error::custom(format!(
            "expected a whole non-negative number, got {number}"
        ))),
    }
}

/// [`count`] for an optional field (absent or `null`: none).
pub fn optional_count<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    use serde::Deserialize;
    #[derive(Deserialize)]
    struct Count(#[serde(deserialize_with = "count")] usize);
    Ok(Option::<Count>::deserialize(deserializer)?.map(|Count(n)| n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "optional_count")]
        max: Option<usize>,
    }

    #[test]
    fn a_body_is_an_object_never_an_array_of_fields() {
        let request = |body: &str| ApiRequest {
            method: "POST".into(),
            path: "/".into(),
            query: HashMap::new(),
            headers: HashMap::new(),
            body: body.as_bytes().to_vec(),
            authorizer: None,
        };
        assert!(request(" [null, null]").json::<Body>().is_err());
        assert!(request("3").json::<Body>().is_err());
        assert_eq!(request(" \n").json::<Body>().unwrap().max, None);
        assert_eq!(
            request(r#" {"max": 2}"#).json::<Body>().unwrap().max,
            Some(2)
        );
    }

    #[test]
    fn whole_numbers_count_in_any_json_spelling_and_nothing_else_does() {
        let max = |json: &str| serde_json::from_str::<Body>(json).map(|b| b.max);
        assert_eq!(max(r#"{"max": 246}"#).unwrap(), Some(246));
        assert_eq!(max(r#"{"max": 246.0}"#).unwrap(), Some(246));
        assert_eq!(max(r#"{"max": 2.46e2}"#).unwrap(), Some(246));
        assert_eq!(max(r#"{"max": null}"#).unwrap(), None);
        assert_eq!(max("{}").unwrap(), None);
        for bad in ["2.5", "-1", "-1.0", "\"3\"", "1e300", "true"] {
            assert!(max(&format!(r#"{{"max": {bad}}}"#)).is_err(), "{bad}");
        }
    }
}
