//! The pipeline stages as the Lambda functions run them, independent of AWS: each takes
//! typed messages and talks only to ports.

pub mod batch;
pub mod deadletter;
pub mod dispatcher;
pub mod ingest;
pub mod matcher;
pub mod scheduler;

pub use deadletter::DeadLetterRecorder;
pub use dispatcher::DispatchStage;
pub use ingest::IngestStage;
pub use matcher::MatchStage;
pub use scheduler::SchedulerStage;
