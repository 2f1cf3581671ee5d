//! Secret references resolved against AWS Secrets Manager and SSM Parameter Store
//! (SecureString, decrypted).

use async_trait::async_trait;

use crate::webhook::secrets::{locate, SecretError, SecretLocation, SecretResolver};

#[derive(Debug, Clone)]
pub struct AwsSecrets {
    secrets_manager: aws_sdk_secretsmanager::Client,
    ssm: aws_sdk_ssm::Client,
}

impl AwsSecrets {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self::from_clients(
            aws_sdk_secretsmanager::Client::new(config),
            aws_sdk_ssm::Client::new(config),
        )
    }

    pub fn from_clients(
        secrets_manager: aws_sdk_secretsmanager::Client,
        ssm: aws_sdk_ssm::Client,
    ) -> Self {
        Self {
            secrets_manager,
            ssm,
        }
    }
}

fn unavailable(reference: &str, reason: String) -> SecretError {
    SecretError::Unavailable {
        reference: reference.to_owned(),
        reason,
    }
}

#[async_trait]
impl SecretResolver for AwsSecrets {
    async fn resolve(&self, reference: &str) -> Result<String, SecretError> {
        match locate(reference).ok_or_else(|| SecretError::BadReference(reference.to_owned()))? {
            SecretLocation::SecretsManager(id) => self
                .secrets_manager
                .get_secret_value()
                .secret_id(id)
                .send()
                .await
                .map_err(|e| {
                    unavailable(
                        reference,
                        aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
                    )
                })?
                .secret_string()
                .map(str::to_owned)
                .ok_or_else(|| unavailable(reference, "secret has no string value".into())),
            SecretLocation::Parameter(name) => self
                .ssm
                .get_parameter()
                .name(name)
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| {
                    unavailable(
                        reference,
                        aws_sdk_ssm::error::DisplayErrorContext(&e).to_string(),
                    )
                })?
                .parameter()
                .and_then(|p| p.value())
                .map(str::to_owned)
                .ok_or_else(|| unavailable(reference, "parameter has no value".into())),
        }
    }
}
