//! AWS adapters of the ports: DynamoDB (subscriptions, resume waits, the dedup ledger)
//! and SQS (the queues between stages). Clients are built once per cold start and honour
//! `AWS_ENDPOINT_URL`, which is how the local emulators are reached.

pub mod archive;
pub mod attrs;
pub mod breaker;
pub mod connectors;
pub mod deadletters;
mod documents;
pub mod flow;
pub mod ledger;
pub mod parked;
pub mod resume;
pub mod secrets;
pub mod sqs;
pub mod subscriptions;
pub mod tables;

pub use archive::DynamoEventArchive;
pub use breaker::DynamoBreakerStore;
pub use connectors::DynamoConnectorStore;
pub use flow::DynamoFlowStore;
pub use ledger::DynamoLedger;
pub use parked::DynamoParkStore;
pub use resume::DynamoResumeStore;
pub use secrets::AwsSecrets;
pub use sqs::SqsQueue;
pub use subscriptions::{Backfill, DynamoSubscriptionStore};

/// The shared SDK configuration of a function, from what Lambda puts in its environment:
/// the region (`AWS_REGION`), the role's credentials (`AWS_ACCESS_KEY_ID`, ...) and, for the
/// local emulators, `AWS_ENDPOINT_URL`. `aws_config::defaults` would also look in profile
/// files, ECS, IMDS and STS web identity, none of which a Lambda has; linking that chain
/// cost every function 0.78 MB (BENCHMARKS.md "Binary size and cold start"). Retries,
/// timeouts and the credentials cache are the SDK clients' defaults either way.
pub async fn sdk_config() -> aws_config::SdkConfig {
    use aws_config::environment::{
        EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
    };
    use aws_config::meta::region::ProvideRegion;
    use aws_sdk_dynamodb::config::SharedCredentialsProvider;

    let mut config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .http_client(https_client())
        .region(EnvironmentVariableRegionProvider::new().region().await)
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ));
    if let Some(url) = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|url| !url.is_empty())
    {
        config = config.endpoint_url(url);
    }
    config.build()
}

/// The SDKs' HTTP(S) client: rustls with ring, the crypto the Workflow Service client
/// uses too (the SDK's default brings aws-lc, a second crypto library in every binary).
pub fn https_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Whether a DynamoDB call failed only because its condition did not hold (a lost
/// race or a state that forbids the write), for SDK and service errors alike.
pub(crate) fn condition_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    error: &E,
) -> bool {
    error.code() == Some("ConditionalCheckFailedException")
}

/// Renders an SDK error with its service error code when there is one.
pub(crate) fn describe<E, R>(error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata,
    R: std::fmt::Debug,
{
    match error.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("ServiceError"),
            service.message().unwrap_or_default()
        ),
        None => format!("{error:?}").chars().take(300).collect(),
    }
}
