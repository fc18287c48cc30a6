//! Progress of a restore or create as log lines: one at every tenth of the work, so a
//! 25-minute hydration shows it is moving without flooding the task's log.

use std::sync::atomic::{AtomicU64, Ordering};

use nodefleet_snapshot::progress::Progress;

/// How many log lines a whole operation gives at most.
const STEPS: u64 = 10;

/// Logs progress of the operation called `what`.
#[derive(Debug)]
pub struct LogProgress {
    what: &'static str,
    total: AtomicU64,
    done: AtomicU64,
    logged_step: AtomicU64,
}

impl LogProgress {
    pub fn new(what: &'static str) -> LogProgress {
        LogProgress {
            what,
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            logged_step: AtomicU64::new(0),
        }
    }
}

impl Progress for LogProgress {
    fn set_total(&self, bytes: u64) {
        self.total.store(bytes, Ordering::Relaxed);
    }

    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return;
        }
        let step = (u128::from(done.min(total)) * u128::from(STEPS) / u128::from(total)) as u64;
        let logged = self.logged_step.fetch_max(step, Ordering::Relaxed);
        if step > logged {
            tracing::info!(
                bytes_done = done,
                bytes_total = total,
                "{} {}%",
                self.what,
                step * 100 / STEPS
            );
        }
    }
}
