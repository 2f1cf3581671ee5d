//! The dispatch Lambda: dispatch messages (SQS) → Workflow Service, with the dedup
//! ledger, backoff through message visibility, and dead letters.

use aws_lambda_events::event::sqs::SqsEvent;
use custos_trigger::runtime::{self, Wiring};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_tracing();
    let wiring = Wiring::from_env("dispatch").await?;
    let stage = wiring.dispatch_stage()?;
    let (stage, wiring) = (&stage, &wiring);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline_ms = i64::try_from(event.context.deadline).ok();
        let work = runtime::dispatch_messages(stage, event.payload, deadline_ms);
        Ok::<_, Error>(wiring.invocation(work).await?)
    }))
    .await
}
