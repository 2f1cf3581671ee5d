//! The ingest Lambda: workflow lifecycle envelopes (SQS) → normalized queue.

use aws_lambda_events::event::sqs::SqsEvent;
use custos_trigger::runtime::{self, Wiring};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_tracing();
    let wiring = Wiring::from_env("ingest").await?;
    let stage = wiring.ingest_stage()?;
    let (stage, wiring) = (&stage, &wiring);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let work = runtime::ingest_workflow_events(stage, event.payload);
        Ok::<_, Error>(wiring.invocation(work).await?)
    }))
    .await
}
