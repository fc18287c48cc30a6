//! Progress reporting: the engine says how many bytes there are and how many are done; the
//! CLI draws bars (when attached to a terminal), tests and the agent ignore or count.

use std::sync::atomic::{AtomicU64, Ordering};

/// Receives progress from a long operation. Called from several tasks at once.
pub trait Progress: Send + Sync {
    /// The operation will process `bytes` in all (may be called again if it learns more).
    fn set_total(&self, bytes: u64);
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
}

/// Ignores progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn set_total(&self, _bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
}

/// Counts progress, for tests.
#[derive(Debug, Default)]
pub struct CountingProgress {
    pub total: AtomicU64,
    pub done: AtomicU64,
}

impl Progress for CountingProgress {
    fn set_total(&self, bytes: u64) {
        self.total.store(bytes, Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
}
