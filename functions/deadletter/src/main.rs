//! The dead-letter recorder Lambda: messages of every DLQ → a final `dead_lettered`
//! record (ledger item per match, or the event's fate in the archive), or an audit
//! record for a body it cannot identify.

use aws_lambda_events::event::sqs::SqsEvent;
use custos_trigger::runtime::{self, Wiring};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_tracing();
    let wiring = Wiring::from_env("deadletter").await?;
    let recorder = wiring.dead_letter_recorder()?;
    let (recorder, wiring) = (&recorder, &wiring);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let work = runtime::record_dead_letters(recorder, event.payload);
        Ok::<_, Error>(wiring.invocation(work).await?)
    }))
    .await
}
