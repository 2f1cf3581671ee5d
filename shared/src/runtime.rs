//! What the Lambda `main`s call: logging set-up compatible with Lambda's log controls,
//! adapter wiring from settings (done once per cold start), and one handler per
//! function that turns an SQS batch into a partial-batch response.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use serde_json::Value;

use crate::audit::{AuditSink, JsonLinesAuditSink};
use crate::aws::{
    DynamoBreakerStore, DynamoEventArchive, DynamoFlowStore, DynamoLedger, DynamoParkStore,
    DynamoResumeStore, DynamoSubscriptionStore, SqsQueue,
};
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, Settings};
use crate::dispatch::{DispatchMessage, DispatchSettings, Dispatcher};
use crate::event::QueuedEvent;
use crate::queue::Queue;
use crate::stage::batch::{self, MissingMessageId, OnParseError, Received, RetryMessage};
use crate::stage::{DeadLetterRecorder, DispatchStage, IngestStage, MatchStage, SchedulerStage};
use crate::workflow::http::HttpWorkflowClient;

/// Messages of one batch handled at once.
pub const BATCH_CONCURRENCY: usize = 8;
/// How long a resolved webhook secret is reused before it is read again (rotation lag).
pub const SECRET_CACHE_MS: i64 = 300_000;
/// Receives of a DLQ message after which the recorder stops trying to write its record
/// and audits it instead.
pub const RECORDER_MAX_RECEIVES: u32 = 5;
/// CloudWatch metric namespace of the audit counters.
pub const METRIC_NAMESPACE: &str = "Custos/Trigger";

/// JSON logs (text when `AWS_LAMBDA_LOG_FORMAT=Text`) at `AWS_LAMBDA_LOG_LEVEL`,
/// else `LOG_LEVEL`, else info. A level, or `target=level` directives: a plain
/// `Targets` filter, not `EnvFilter`, whose span and field matching would link a regex
/// DFA compiler into every function (≈ 0.1 MB) for a setting that is a level.
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let level = ["AWS_LAMBDA_LOG_LEVEL", "LOG_LEVEL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|l| !l.trim().is_empty()))
        .unwrap_or_else(|| "info".to_owned())
        .to_ascii_lowercase();
    let filter = level
        .parse::<tracing_subscriber::filter::Targets>()
        .unwrap_or_else(|_| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    let text = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text"));
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .without_time();
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if text {
        registry.with(layer).try_init()
    } else {
        registry
            .with(layer.json().flatten_event(true).with_current_span(false))
            .try_init()
    };
}

/// Shared pieces every function builds once.
pub struct Wiring {
    pub settings: Arc<Settings>,
    pub sdk: aws_config::SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub audit: Arc<dyn AuditSink>,
    /// The same sink as `audit`: its metrics are flushed once per invocation.
    pub telemetry: Arc<JsonLinesAuditSink<std::io::Stdout>>,
    pub clock: Arc<dyn Clock>,
}

impl Wiring {
    /// `function` names the Lambda in metrics (`ingest`, `match`, `dispatch`, ...).
    pub async fn from_env(function: &'static str) -> Result<Self, ConfigError> {
        let settings = Arc::new(Settings::from_env()?);
        let config = crate::aws::sdk_config().await;
        let telemetry = Arc::new(JsonLinesAuditSink::stdout(METRIC_NAMESPACE, function));
        Ok(Self {
            settings,
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            sqs: aws_sdk_sqs::Client::new(&config),
            sdk: config,
            audit: Arc::clone(&telemetry) as Arc<dyn AuditSink>,
            telemetry,
            clock: Arc::new(SystemClock),
        })
    }

    /// Runs one invocation and writes its metrics when it ends.
    pub async fn invocation<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let result = work.await;
        self.telemetry.flush_metrics();
        result
    }

    fn queue(
        &self,
        url: &Option<String>,
        variable: &'static str,
    ) -> Result<Arc<SqsQueue>, ConfigError> {
        Ok(Arc::new(SqsQueue::new(
            self.sqs.clone(),
            Settings::require(url, variable)?,
        )))
    }

    fn table(&self, name: &Option<String>, variable: &'static str) -> Result<String, ConfigError> {
        Settings::require(name, variable).map(str::to_owned)
    }

    /// The normalized queue (the match function's source).
    pub fn normalized_queue(&self) -> Result<Arc<SqsQueue>, ConfigError> {
        self.queue(&self.settings.normalized_queue_url, "NORMALIZED_QUEUE_URL")
    }

    fn ledger(&self) -> Result<Arc<DynamoLedger>, ConfigError> {
        Ok(Arc::new(DynamoLedger::new(
            self.dynamodb.clone(),
            self.table(&self.settings.ledger_table, "LEDGER_TABLE")?,
        )))
    }

    fn resumes(&self) -> Result<Arc<DynamoResumeStore>, ConfigError> {
        Ok(Arc::new(DynamoResumeStore::new(
            self.dynamodb.clone(),
            self.table(&self.settings.resume_table, "RESUME_TABLE")?,
        )))
    }

    fn parked(&self) -> Result<Arc<DynamoParkStore>, ConfigError> {
        Ok(Arc::new(DynamoParkStore::new(
            self.dynamodb.clone(),
            self.table(&self.settings.parked_table, "PARKED_TABLE")?,
        )))
    }

    fn dispatch_queue(&self) -> Result<Arc<SqsQueue>, ConfigError> {
        self.queue(&self.settings.dispatch_queue_url, "DISPATCH_QUEUE_URL")
    }

    fn archive(&self) -> Result<Arc<DynamoEventArchive>, ConfigError> {
        Ok(Arc::new(DynamoEventArchive::new(
            self.dynamodb.clone(),
            self.table(&self.settings.events_table, "EVENTS_TABLE")?,
        )))
    }

    pub fn ingest_stage(&self) -> Result<IngestStage, ConfigError> {
        Ok(IngestStage {
            normalized_queue: self.normalized_queue()?,
            archive: self.archive()?,
            audit: Arc::clone(&self.audit),
            clock: Arc::clone(&self.clock),
            retention: self.settings.archive_retention(),
        })
    }

    pub fn scheduler_stage(&self) -> Result<SchedulerStage, ConfigError> {
        Ok(SchedulerStage {
            schedules: Arc::new(DynamoSubscriptionStore::new(
                self.dynamodb.clone(),
                self.table(&self.settings.subscriptions_table, "SUBSCRIPTIONS_TABLE")?,
            )),
            ingest: self.ingest_stage()?,
        })
    }

    pub fn dead_letter_recorder(&self) -> Result<DeadLetterRecorder, ConfigError> {
        Ok(DeadLetterRecorder {
            ledger: self.ledger()?,
            resumes: self.resumes()?,
            archive: self.archive()?,
            audit: Arc::clone(&self.audit),
            clock: Arc::clone(&self.clock),
            retention: self.settings.archive_retention(),
            flow: Some(Arc::new(crate::flow::FlowGate::new(self.flow_store()?))),
        })
    }

    pub fn match_stage(&self) -> Result<MatchStage, ConfigError> {
        let s = &self.settings;
        Ok(MatchStage::new(
            Arc::new(DynamoSubscriptionStore::new(
                self.dynamodb.clone(),
                self.table(&s.subscriptions_table, "SUBSCRIPTIONS_TABLE")?,
            )),
            self.resumes()?,
            self.dispatch_queue()?,
            self.ledger()?,
            Arc::clone(&self.audit),
            Arc::clone(&self.clock),
            s.subscription_cache_secs,
        )
        .with_parking(self.parked()?, s.resume_park_secs)
        .with_flow(self.flow_store()?))
    }

    fn flow_store(&self) -> Result<Arc<DynamoFlowStore>, ConfigError> {
        Ok(Arc::new(DynamoFlowStore::new(
            self.dynamodb.clone(),
            self.table(&self.settings.flow_table, "FLOW_TABLE")?,
        )))
    }

    pub fn api(&self) -> Result<crate::api::Api, ConfigError> {
        let s = &self.settings;
        let intake = Arc::new(self.ingest_stage()?);
        let ledger = self.ledger()?;
        Ok(crate::api::Api {
            subscriptions: Arc::new(DynamoSubscriptionStore::new(
                self.dynamodb.clone(),
                self.table(&s.subscriptions_table, "SUBSCRIPTIONS_TABLE")?,
            )),
            resumes: self.resumes()?,
            ledger: ledger.clone(),
            dead_letters: ledger,
            archive: Arc::clone(&intake.archive),
            parked: self.parked()?,
            intake: Arc::clone(&intake),
            dispatch_queue: self.dispatch_queue()?,
            audit: Arc::clone(&self.audit),
            clock: Arc::clone(&self.clock),
            settings: Arc::clone(s),
            cache: crate::selector::SelectorCache::default(),
            webhooks: crate::webhook::WebhookIntake {
                connectors: Arc::new(crate::aws::DynamoConnectorStore::new(
                    self.dynamodb.clone(),
                    self.table(&s.connectors_table, "CONNECTORS_TABLE")?,
                )),
                secrets: Arc::new(crate::webhook::secrets::CachedSecrets::new(
                    Arc::new(crate::aws::AwsSecrets::new(&self.sdk)),
                    Arc::clone(&self.clock),
                    SECRET_CACHE_MS,
                )),
                intake,
                audit: Arc::clone(&self.audit),
                clock: Arc::clone(&self.clock),
            },
        })
    }

    pub fn dispatch_stage(&self) -> Result<DispatchStage, ConfigError> {
        let s = &self.settings;
        let url = Settings::require(&s.workflow_service_url, "WORKFLOW_SERVICE_URL")?;
        let workflow = HttpWorkflowClient::new(url).map_err(|e| ConfigError {
            variable: "WORKFLOW_SERVICE_URL",
            reason: e.to_string(),
        })?;
        let dispatcher = Dispatcher::new(
            self.ledger()?,
            Arc::new(workflow),
            self.resumes()?,
            self.parked()?,
            Arc::clone(&self.audit),
            Arc::clone(&self.clock),
            DispatchSettings::from_settings(Arc::clone(s)),
        )
        // One breaker for every dispatch instance: an item of the ledger table.
        .with_breaker_store(Box::new(DynamoBreakerStore::new(
            self.dynamodb.clone(),
            self.table(&s.ledger_table, "LEDGER_TABLE")?,
        )));
        Ok(DispatchStage {
            dispatcher,
            queue: self.dispatch_queue()?,
            flow: Some(Arc::new(crate::flow::FlowGate::new(self.flow_store()?))),
            events: Some(self.archive()?),
        })
    }
}

/// Workflow lifecycle envelopes → normalized queue.
pub async fn ingest_workflow_events(
    stage: &IngestStage,
    event: SqsEvent,
) -> Result<SqsBatchResponse, MissingMessageId> {
    batch::run(
        event,
        BATCH_CONCURRENCY,
        OnParseError::Drop,
        |m: Received<Value>| stage.take_envelope(m),
    )
    .await
}

/// Normalized events → dispatch messages. An unparseable event goes to the DLQ
/// (`source` is the normalized queue, to fast-track it there).
pub async fn match_events(
    stage: &MatchStage,
    source: Option<&dyn Queue>,
    event: SqsEvent,
) -> Result<SqsBatchResponse, MissingMessageId> {
    batch::run(
        event,
        BATCH_CONCURRENCY,
        OnParseError::Fail(source),
        |m: Received<QueuedEvent>| async move {
            stage
                .handle(&m.body)
                .await
                .map(|_| ())
                .map_err(|e| RetryMessage(e.to_string()))
        },
    )
    .await
}

/// Dispatch messages → Workflow Service.
pub async fn dispatch_messages(
    stage: &DispatchStage,
    event: SqsEvent,
    deadline_ms: Option<i64>,
) -> Result<SqsBatchResponse, MissingMessageId> {
    let source = Some(stage.queue.as_ref());
    batch::run(event, BATCH_CONCURRENCY, OnParseError::Fail(source), |m: Received<DispatchMessage>| async move {
        stage.handle(m, deadline_ms).await.map(|_| ())
    })
    .await
}

/// Why a scheduler invocation failed (it is retried; the next minute's run catches up).
#[derive(Debug, thiserror::Error)]
pub enum SchedulerRunError {
    #[error("the scheduled event has no usable `time`: {0}")]
    Time(String),
    #[error(transparent)]
    Run(#[from] crate::stage::scheduler::SchedulerError),
}

/// One scheduler run. *Now* is the scheduled event's `time` (EventBridge sets it to the
/// minute the rule fired), so a retried or replayed invocation computes the same ticks;
/// a payload without it runs at the clock's time.
pub async fn run_scheduler(
    stage: &SchedulerStage,
    event: &Value,
    clock: &dyn Clock,
) -> Result<crate::stage::scheduler::SchedulerReport, SchedulerRunError> {
    let now_ms = match event.get("time").and_then(Value::as_str) {
        Some(time) => crate::api::request::rfc3339_ms("time", time)
            .map_err(|p| SchedulerRunError::Time(p.detail))?,
        None => clock.now_ms(),
    };
    let report = stage.run(now_ms).await?;
    tracing::info!(
        now = %crate::instant::rfc3339(now_ms),
        due = report.due,
        ticks = report.ticks,
        advanced = report.advanced,
        "scheduler run finished"
    );
    Ok(report)
}

/// Dead letters of any DLQ → a final ledger / archive record, or an audit line.
pub async fn record_dead_letters(
    recorder: &DeadLetterRecorder,
    event: SqsEvent,
) -> Result<SqsBatchResponse, MissingMessageId> {
    batch::run_raw(event, BATCH_CONCURRENCY, |m: Received<String>| async move {
        match recorder.record(&m.message_id, &m.body).await {
            Ok(recorded) => {
                tracing::warn!(message_id = m.message_id, recorded = ?recorded, "dead letter recorded");
                Ok(())
            }
            // A DLQ has no DLQ of its own: after a few tries the message is audited
            // whole (never looped on forever, never dropped silently).
            Err(e) if m.receive_count >= RECORDER_MAX_RECEIVES => {
                recorder.give_up(&m.message_id, &m.body, &e);
                Ok(())
            }
            // Stays in the DLQ and comes back: recording must not lose the message.
            Err(e) => Err(RetryMessage(e.to_string())),
        }
    })
    .await
}

#[cfg(test)]
mod emf_tests;
