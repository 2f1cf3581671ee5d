//! Resolving secret references (Secrets Manager or SSM SecureString), cached for a short
//! TTL so a warm function does not call the secret store per delivery, while a secret
//! rotated in place is read again as soon as a signature fails with the cached value.
//! Secret values are never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use thiserror::Error;

use crate::clock::Clock;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecretError {
    #[error("secret reference {0:?} is not a Secrets Manager or SSM reference")]
    BadReference(String),
    #[error("secret {reference:?} could not be read: {reason}")]
    Unavailable { reference: String, reason: String },
}

#[async_trait]
pub trait SecretResolver: Send + Sync {
    async fn resolve(&self, reference: &str) -> Result<String, SecretError>;

    /// Reads a reference again after a signature did not verify with what `resolve`
    /// gave: its value may have been rotated in place. `None` when there is nothing newer
    /// to read (nothing cached, or read too recently to read again).
    async fn reread(&self, _reference: &str) -> Option<Result<String, SecretError>> {
        None
    }
}

/// Where a reference points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretLocation<'a> {
    SecretsManager(&'a str),
    Parameter(&'a str),
}

/// `arn:aws:secretsmanager:…`, `secretsmanager:<name>`, `arn:aws:ssm:…:parameter/<name>`,
/// or `ssm:<name>`.
pub fn locate(reference: &str) -> Option<SecretLocation<'_>> {
    if reference.starts_with("arn:") && reference.contains(":secretsmanager:") {
        return Some(SecretLocation::SecretsManager(reference));
    }
    if reference.starts_with("arn:") && reference.contains(":ssm:") {
        let name = reference.split_once(":parameter")?.1;
        return Some(SecretLocation::Parameter(name));
    }
    if let Some(name) = reference
        .strip_prefix("secretsmanager:")
        .filter(|n| !n.is_empty())
    {
        return Some(SecretLocation::SecretsManager(name));
    }
    reference
        .strip_prefix("ssm:")
        .filter(|n| !n.is_empty())
        .map(SecretLocation::Parameter)
}

/// Caches resolved secrets for `ttl_ms`, and failed look-ups for `NEGATIVE_TTL_MS`, so
/// forged deliveries to a connector with a broken reference cannot hammer the store.
pub struct CachedSecrets {
    inner: Arc<dyn SecretResolver>,
    clock: Arc<dyn Clock>,
    ttl_ms: i64,
    entries: Mutex<HashMap<String, Lookup>>,
}

/// When a reference was looked up (epoch ms), and what came back.
type Lookup = (i64, Result<String, SecretError>);

/// How long a failed secret look-up is remembered.
pub const NEGATIVE_TTL_MS: i64 = 30_000;

/// How old a cached value must be before a failed signature reads it again: forged
/// deliveries cost at most one read per reference per this long, per warm instance.
pub const REREAD_AFTER_MS: i64 = 30_000;

impl CachedSecrets {
    pub fn new(inner: Arc<dyn SecretResolver>, clock: Arc<dyn Clock>, ttl_ms: i64) -> Self {
        Self {
            inner,
            clock,
            ttl_ms,
            entries: Mutex::new(HashMap::new()),
        }
    }

    async fn load(&self, reference: &str, now: i64) -> Result<String, SecretError> {
        let result = self.inner.resolve(reference).await;
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(reference.to_owned(), (now, result.clone()));
        result
    }
}

#[async_trait]
impl SecretResolver for CachedSecrets {
    async fn resolve(&self, reference: &str) -> Result<String, SecretError> {
        let now = self.clock.now_ms();
        let cached = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(reference)
            .filter(|(loaded, result)| {
                let ttl = if result.is_ok() {
                    self.ttl_ms
                } else {
                    NEGATIVE_TTL_MS.min(self.ttl_ms)
                };
                now - loaded < ttl
            })
            .map(|(_, result)| result.clone());
        if let Some(result) = cached {
            return result;
        }
        self.load(reference, now).await
    }

    async fn reread(&self, reference: &str) -> Option<Result<String, SecretError>> {
        let now = self.clock.now_ms();
        {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let (loaded, _) = entries.get_mut(reference)?;
            if now - *loaded < REREAD_AFTER_MS {
                return None;
            }
            // Claimed: other failing deliveries meanwhile keep the cached value.
            *loaded = now;
        }
        Some(self.load(reference, now).await)
    }
}

/// Secrets by reference, for unit tests (`set` rotates one in place).
#[derive(Debug, Default)]
pub struct StaticSecrets {
    values: Mutex<HashMap<String, String>>,
    reads: Mutex<usize>,
}

impl StaticSecrets {
    pub fn new(values: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            values: Mutex::new(values.into_iter().collect()),
            reads: Mutex::new(0),
        }
    }

    pub fn set(&self, reference: &str, value: &str) {
        self.values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(reference.to_owned(), value.to_owned());
    }

    pub fn reads(&self) -> usize {
        *self.reads.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl SecretResolver for StaticSecrets {
    async fn resolve(&self, reference: &str) -> Result<String, SecretError> {
        *self.reads.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(reference)
            .cloned()
            .ok_or_else(|| SecretError::Unavailable {
                reference: reference.to_owned(),
                reason: "unknown".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn references_are_located() {
        assert_eq!(
            locate("arn:aws:secretsmanager:us-east-1:1:secret:custos/webhooks/gh-AbCd"),
            Some(SecretLocation::SecretsManager(
                "arn:aws:secretsmanager:us-east-1:1:secret:custos/webhooks/gh-AbCd"
            ))
        );
        assert_eq!(
            locate("arn:aws:ssm:us-east-1:1:parameter/custos/webhooks/gh"),
            Some(SecretLocation::Parameter("/custos/webhooks/gh"))
        );
        assert_eq!(
            locate("secretsmanager:custos/a"),
            Some(SecretLocation::SecretsManager("custos/a"))
        );
        assert_eq!(
            locate("ssm:/custos/a"),
            Some(SecretLocation::Parameter("/custos/a"))
        );
        assert_eq!(locate("plain-secret"), None);
        assert_eq!(locate("ssm:"), None);
    }

    #[tokio::test]
    async fn cache_reuses_values_until_the_ttl_passes() {
        let inner = Arc::new(StaticSecrets::new([(
            "ssm:/a".to_owned(),
            "s3cret".to_owned(),
        )]));
        let clock = Arc::new(ManualClock::at_ms(0));
        let cache = CachedSecrets::new(inner.clone(), clock.clone(), 60_000);
        assert_eq!(cache.resolve("ssm:/a").await.unwrap(), "s3cret");
        assert_eq!(cache.resolve("ssm:/a").await.unwrap(), "s3cret");
        assert_eq!(inner.reads(), 1);
        clock.advance_ms(60_000);
        cache.resolve("ssm:/a").await.unwrap();
        assert_eq!(inner.reads(), 2);
        assert!(cache.resolve("ssm:/missing").await.is_err());
    }

    #[tokio::test]
    async fn failed_look_ups_are_remembered_briefly() {
        let inner = Arc::new(StaticSecrets::new([]));
        let clock = Arc::new(ManualClock::at_ms(0));
        let cache = CachedSecrets::new(inner.clone(), clock.clone(), 300_000);
        for _ in 0..5 {
            assert!(cache.resolve("ssm:/missing").await.is_err());
        }
        assert_eq!(
            inner.reads(),
            1,
            "forged deliveries do not hammer the store"
        );
        clock.advance_ms(NEGATIVE_TTL_MS);
        assert!(cache.resolve("ssm:/missing").await.is_err());
        assert_eq!(
            inner.reads(),
            2,
            "a fixed reference is seen within the negative TTL"
        );
    }
}
