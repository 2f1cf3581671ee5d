//! One API request as the handlers see it, built from an API Gateway HTTP API (v2)
//! event: decoded body, lower-cased headers, query map, authorizer context. Parsing a
//! JSON body reports the failing field's path (`inputMapping.a: invalid type ...`).

use std::collections::HashMap;

use aws_lambda_events::event::apigw::{ApiGatewayRequestAuthorizer, ApiGatewayV2httpRequest};
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
        let headers = event
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    name.as_str().to_ascii_lowercase(),
                    value.to_str().ok()?.to_owned(),
                ))
            })
            .collect();
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

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// Parses the body as `T`; an empty body parses as `{}`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        let body: &[u8] = if self.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.body
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
