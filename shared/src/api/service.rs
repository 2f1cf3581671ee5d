//! The API as an HTTP service: `lambda_http` turns the gateway's event into an
//! `http::Request` and back, an axum router serves it, so the same function answers
//! behind API Gateway, under `cargo lambda watch` (plain HTTP on localhost) and in any
//! tower host. Routing itself stays on [`super::ROUTES`], the table the OpenAPI check
//! reads: its Google-style custom methods (`…/triggers/{id}:fire`) are a suffix inside a
//! path segment, which axum 0.8's matcher does not express.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;

use super::problem::{Code, Problem};
use super::{Api, ApiRequest};

/// The most a body is read before it is refused: API Gateway's own payload limit. The
/// routes' limit ([`super::request::MAX_BODY_BYTES`]) is checked after routing, as
/// through the gateway event.
const READ_LIMIT_BYTES: usize = 10 * 1024 * 1024;

/// Every request to [`Api::answer`], whatever its path: 404 and 405 are the API's own
/// problem+json answers.
pub fn router(api: Arc<Api>) -> Router {
    Router::new().fallback(serve).with_state(api)
}

async fn serve(State(api): State<Arc<Api>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let request = match axum::body::to_bytes(body, READ_LIMIT_BYTES).await {
        Ok(body) => Ok(ApiRequest::from_http(&parts, Vec::from(body))),
        Err(_) => Err((
            parts.uri.path().to_owned(),
            Problem::new(
                Code::PayloadTooLarge,
                format!("bodies are limited to {READ_LIMIT_BYTES} bytes"),
            ),
        )),
    };
    api.answer(request).await.map(axum::body::Body::from)
}

#[cfg(test)]
mod tests {
    use lambda_http::request::LambdaRequest;
    use lambda_http::tower::ServiceExt;
    use serde_json::{json, Value};

    use super::*;
    use crate::api::http;

    fn api() -> Arc<Api> {
        let api = crate::memory::api(
            Arc::new(crate::memory::RecordingAuditSink::default()),
            Arc::new(crate::clock::ManualClock::at_ms(1_780_000_000_000)),
            [],
        );
        Arc::new(api.unwrap())
    }

    /// What a caller sees of an answer: status, media type, `allow`, body.
    async fn seen(response: Response) -> (u16, String, String, Value) {
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (status, media, allow) = (
            response.status().as_u16(),
            header(http::header::CONTENT_TYPE),
            header(http::header::ALLOW),
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, media, allow, body)
    }

    /// A gateway event with a JWT authorizer context for `ws1`.
    fn event(
        method: &str,
        path: &str,
        body: &str,
    ) -> aws_lambda_events::event::apigw::ApiGatewayV2httpRequest {
        let mut event = crate::memory::gateway_request(method, path, json!({}), body).unwrap();
        event.request_context.authorizer = serde_json::from_value(json!({"jwt": {
            "claims": {"workspace_id": "ws1",
                       "permissions": "trigger:subscriptions:read trigger:subscriptions:write"},
            "scopes": null}}))
        .unwrap();
        event
    }

    #[tokio::test]
    async fn the_router_answers_a_gateway_event_as_the_event_door_does() {
        let (by_event, by_router) = (api(), api());
        let router = router(Arc::clone(&by_router));
        let create = r#"{"sourceType": "manual", "workflowId": "deploys",
                         "targetWorkflowVersionId": "wv-1", "selector": "event.kind == 'a'"}"#;
        let requests = [
            ("POST", "/v1/workspaces/ws1/triggers", create),
            ("GET", "/v1/workspaces/ws1/triggers?limit=1", ""),
            ("GET", "/v1/workspaces/ws2/triggers", ""),
            ("GET", "/v1/workspaces/ws1/triggers/nope", ""),
            ("TRACE", "/v1/workspaces/ws1/triggers/nope", ""),
            ("POST", "/v1/workspaces/ws1/triggers", "[1]"),
            ("GET", "/v1/nowhere", ""),
        ];
        let mut statuses = Vec::new();
        for (method, path, body) in requests {
            let expected = by_event.handle(event(method, path, body)).await;
            let request =
                http::Request::from(LambdaRequest::ApiGatewayV2(event(method, path, body)));
            let (status, media, allow, json) =
                seen(router.clone().oneshot(request).await.unwrap()).await;
            let what = format!("{method} {path}");
            statuses.push(status);
            assert_eq!(i64::from(status), expected.status_code, "{what}: {json}");
            let header = |name| expected.headers.get(name).map(|v| v.to_str().unwrap());
            assert_eq!(Some(media.as_str()), header("content-type"), "{what}");
            assert_eq!(
                allow.as_str(),
                header("allow").unwrap_or_default(),
                "{what}"
            );
            if media == "application/problem+json" {
                let expected: Value = match &expected.body {
                    Some(aws_lambda_events::encodings::Body::Text(text)) => {
                        serde_json::from_str(text).unwrap()
                    }
                    other => panic!("{what}: {other:?}"),
                };
                assert_eq!(json["code"], expected["code"], "{what}");
            }
        }
        assert_eq!(statuses, [201, 200, 403, 404, 405, 400, 404]);
        // The JWT's workspace reached the handlers: the listing holds the one created.
        let list = event("GET", "/v1/workspaces/ws1/triggers", "");
        let request = http::Request::from(LambdaRequest::ApiGatewayV2(list));
        let (status, _, _, json) = seen(router.oneshot(request).await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(json["items"][0]["workflowId"], "deploys", "{json}");
    }

    #[tokio::test]
    async fn plain_http_reads_the_query_from_the_uri_and_takes_the_development_shim() {
        let router = router(api());
        let context = json!({"workspace_id": "ws1", "principal_id": "dev",
                             "permissions": ["trigger:subscriptions:read"]});
        let request = |uri: &str| {
            http::Request::builder()
                .uri(uri)
                .header("X-Custos-CallCtx", context.to_string())
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let listed = router
            .clone()
            .oneshot(request("/v1/workspaces/ws1/triggers?limit=2"))
            .await
            .unwrap();
        assert_eq!(seen(listed).await.0, 200);
        let refused = router
            .clone()
            .oneshot(request("/v1/workspaces/ws1/triggers?limit=0"))
            .await
            .unwrap();
        let (status, media, _, json) = seen(refused).await;
        assert_eq!((status, media.as_str()), (400, "application/problem+json"));
        assert!(
            json["detail"].as_str().unwrap().starts_with("limit:"),
            "{json}"
        );
        let page = router.oneshot(request("/console")).await.unwrap();
        let (status, media, _, _) = seen(page).await;
        assert_eq!(status, 200);
        assert!(media.starts_with("text/html"), "{media}");
    }

    #[tokio::test]
    async fn a_body_beyond_the_gateway_limit_is_413_problem_json() {
        let request = http::Request::builder()
            .method("POST")
            .uri("/v1/workspaces/ws1/triggers")
            .body(axum::body::Body::from(vec![b' '; READ_LIMIT_BYTES + 1]))
            .unwrap();
        let (status, media, _, json) = seen(router(api()).oneshot(request).await.unwrap()).await;
        assert_eq!((status, media.as_str()), (413, "application/problem+json"));
        assert_eq!(json["code"], "trigger.api.payload_too_large");
    }
}
