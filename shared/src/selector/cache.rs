//! Compiled selectors cached per `(owner id, expression hash)`: a warm Lambda compiles
//! each subscription's selector once, and re-authoring a selector yields a new key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{expression_hash, CompiledExpr, SelectorError};

/// Entries kept before the cache starts over (bounds memory on a long-lived container).
pub const DEFAULT_CAPACITY: usize = 250_000;

#[derive(Debug)]
pub struct SelectorCache {
    entries: Mutex<HashMap<(String, String), Arc<CompiledExpr>>>,
    capacity: usize,
}

impl Default for SelectorCache {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl SelectorCache {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
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
        if entries.len() >= self.capacity {
            entries.clear();
        }
        Ok(Arc::clone(entries.entry(key).or_insert(compiled)))
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<CompiledExpr>>> {
        // The map holds no invariant a panicking holder could break.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
