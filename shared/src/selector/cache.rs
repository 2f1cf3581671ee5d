//! Compiled selectors cached per `(owner id, expression hash)`: a warm Lambda compiles
//! each subscription's selector once, and re-authoring a selector yields a new key. The
//! cache is a bounded LRU, so a long-lived container's memory stays bounded and the
//! selectors in use stay compiled when old ones are evicted.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use lru::LruCache;

use super::{expression_hash, CompiledExpr, SelectorError};

/// Entries kept; the least recently used goes first beyond this.
pub const DEFAULT_CAPACITY: usize = 250_000;

type Entries = LruCache<(String, String), Arc<CompiledExpr>>;

#[derive(Debug)]
pub struct SelectorCache {
    entries: Mutex<Entries>,
}

impl Default for SelectorCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl SelectorCache {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The compiled selector of `owner` (a subscription or resume id) for `expr`.
    pub fn selector(&self, owner: &str, expr: &str) -> Result<Arc<CompiledExpr>, SelectorError> {
        self.get_or_compile(owner, expr, CompiledExpr::selector)
    }

    /// A compiled selector shared by every subscription whose selector is this text.
    pub fn shared_selector(&self, expr: &str) -> Result<Arc<CompiledExpr>, SelectorError> {
        self.get_or_compile("\0selector", expr, CompiledExpr::selector)
    }

    /// A compiled input-mapping expression (shared by every subscription using it).
    pub fn mapping(&self, expr: &str) -> Result<Arc<CompiledExpr>, SelectorError> {
        self.get_or_compile("\0mapping", expr, CompiledExpr::mapping)
    }

    fn get_or_compile(
        &self,
        owner: &str,
        expr: &str,
        compile: fn(&str) -> Result<CompiledExpr, SelectorError>,
    ) -> Result<Arc<CompiledExpr>, SelectorError> {
        let key = (owner.to_owned(), expression_hash(expr));
        if let Some(hit) = self.lock().get(&key) {
            return Ok(Arc::clone(hit));
        }
        // Compile outside the lock: compiling takes tens of microseconds.
        let compiled = Arc::new(compile(expr)?);
        let mut entries = self.lock();
        // Another thread may have compiled it meanwhile: keep the first.
        Ok(Arc::clone(entries.get_or_insert(key, || compiled)))
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // The map holds no invariant a panicking holder could break.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
