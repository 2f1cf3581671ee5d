//! The API Lambda: management routes, manual fire, event status, webhooks, the console
//! and the internal resume-wait RPCs, served with `lambda_http` behind an API Gateway
//! HTTP API (or over plain HTTP by `cargo lambda watch`).

use std::sync::Arc;

use custos_trigger::api::service;
use custos_trigger::runtime::{self, Wiring};
use lambda_http::tower::ServiceExt;
use lambda_http::{service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_tracing();
    let wiring = Wiring::from_env("api").await?;
    let api = wiring.api()?;
    if api.allow_shim() {
        tracing::warn!(
            "ENVIRONMENT is not production: the x-custos-callctx development shim is enabled"
        );
    }
    let router = service::router(Arc::new(api));
    let wiring = &wiring;
    lambda_http::run(service_fn(move |request: Request| {
        let router = router.clone();
        async move {
            let answer = wiring.invocation(router.oneshot(request)).await;
            Ok::<_, Error>(answer.unwrap_or_else(|never| match never {}))
        }
    }))
    .await
}
