//! The match Lambda: normalized events (SQS) → one dispatch message per match.

use aws_lambda_events::event::sqs::SqsEvent;
use custos_trigger::runtime::{self, Wiring};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_tracing();
    let wiring = Wiring::from_env("match").await?;
    let stage = wiring.match_stage()?;
    let source = wiring.normalized_queue()?;
    let (stage, source, wiring) = (&stage, source.as_ref(), &wiring);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let work = runtime::match_events(stage, Some(source), event.payload);
        Ok::<_, Error>(wiring.invocation(work).await?)
    }))
    .await
}
