//! The scheduler Lambda: on its one-minute schedule (an EventBridge scheduled event),
//! a `cron.tick` per due instant of every active scheduled subscription, onto the
//! normalized queue.

use custos_trigger::runtime::{self, Wiring};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    runtime::init_tracing();
    let wiring = Wiring::from_env("scheduler").await?;
    let stage = wiring.scheduler_stage()?;
    let (stage, wiring) = (&stage, &wiring);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let work = runtime::run_scheduler(stage, &event.payload, wiring.clock.as_ref());
        Ok::<_, Error>(wiring.invocation(work).await?)
    }))
    .await
}
