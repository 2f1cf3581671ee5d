//! The API Lambda: management routes, manual fire, event status and the internal
//! resume-wait RPCs behind an API Gateway HTTP API.

use aws_lambda_events::event::apigw::ApiGatewayV2httpRequest;
use custos_trigger::runtime::{self, Wiring};
use lambda_runtime::{service_fn, Error, LambdaEvent};

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
    let (api, wiring) = (&api, &wiring);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            Ok::<_, Error>(wiring.invocation(api.handle(event.payload)).await)
        },
    ))
    .await
}
