//! What limits replacements between reconciles: how many (a token bucket) and where (zone
//! backoff). Both are plain data the reactor persists after every plan and hands back to the
//! next one; both advance only with the `now` they are given, never with a clock.
//!
//! - [`TokenBucket`]: `capacity` tokens, one earned back every `period / capacity`. A
//!   replacement launch spends one. A launch planned again under the same idempotency key
//!   (the same replacement seen by a later reconcile before its task shows up) is already
//!   paid for: [`ReplacementBudget`] remembers the keys it paid for during one period.
//! - [`ZoneBackoff`]: a zone whose launch failed for a capacity or placement reason
//!   ([`PlacementFailure::is_zone_capacity`]) is avoided for [`ZONE_BACKOFF_BASE`], doubled
//!   with every further failure up to [`ZONE_BACKOFF_MAX`]. It is used again when the backoff
//!   runs out, and forgiven entirely when a task starts there after the last failure.

use std::collections::BTreeMap;
use std::time::Duration;

use nodefleet_ports::{PlacementFailure, TaskInfo, TaskStatus, Timestamp, Zone};
use serde::{Deserialize, Serialize};

/// Issue 5's default: ten replacements an hour is far more than a healthy fleet of a few
/// hundred nodes needs (a bad hour loses one or two), and far fewer than a broken health
/// check would ask for.
pub const DEFAULT_REPLACEMENTS_PER_HOUR: u32 = 10;

/// The bucket's period: the budget is stated per hour.
pub const BUDGET_PERIOD: Duration = Duration::from_secs(60 * 60);

/// First avoidance of a zone after a capacity failure: two reconciles of the one-minute
/// schedule, long enough not to hammer a zone that has just said no, short enough that a
/// transient ENI or port shortage costs little.
pub const ZONE_BACKOFF_BASE: Duration = Duration::from_secs(2 * 60);

/// Longest avoidance: AWS capacity shortages in one zone usually last minutes to an hour,
/// so a zone is retried at least hourly.
pub const ZONE_BACKOFF_MAX: Duration = Duration::from_secs(60 * 60);

/// Failures older than this are not counted, and a zone's record is dropped this long after
/// its last failure: six hours without a failure is a fresh start.
pub const ZONE_FAILURE_MEMORY: Duration = Duration::from_secs(6 * 60 * 60);

/// A token bucket, in whole tokens, refilled by the time that passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBucket {
    pub capacity: u32,
    /// One token is earned back per this many milliseconds.
    pub refill_interval_ms: u64,
    pub tokens: u32,
    /// The time up to which earned tokens have been added.
    pub refilled_at: Timestamp,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens that refills completely over [`BUDGET_PERIOD`].
    pub fn per_hour(capacity: u32, now: Timestamp) -> TokenBucket {
        let period_ms = u64::try_from(BUDGET_PERIOD.as_millis()).unwrap_or(u64::MAX);
        TokenBucket {
            capacity,
            refill_interval_ms: period_ms / u64::from(capacity.max(1)),
            tokens: capacity,
            refilled_at: now,
        }
    }

    /// Adds the tokens earned since `refilled_at`. A full bucket earns nothing while full; a
    /// `now` before `refilled_at` (a clock that went back) adds nothing.
    pub fn refill(&mut self, now: Timestamp) {
        if self.tokens >= self.capacity || self.refill_interval_ms == 0 {
            self.tokens = self.capacity;
            self.refilled_at = self.refilled_at.max(now);
            return;
        }
        let elapsed = u64::try_from(now.since(self.refilled_at).as_millis()).unwrap_or(u64::MAX);
        let earned = elapsed / self.refill_interval_ms;
        if earned == 0 {
            return;
        }
        let tokens = u64::from(self.tokens).saturating_add(earned);
        if tokens >= u64::from(self.capacity) {
            self.tokens = self.capacity;
            self.refilled_at = now;
        } else {
            self.tokens = u32::try_from(tokens).unwrap_or(self.capacity);
            self.refilled_at = self
                .refilled_at
                .plus(Duration::from_millis(earned * self.refill_interval_ms));
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self) -> bool {
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// What paying for a launch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payment {
    /// A token was spent.
    Paid,
    /// This key was paid for within the last period: no second token.
    AlreadyPaid,
    /// No token left.
    Exhausted,
}

/// The reactor's memory of what limits replacements: tokens, keys already paid for, and
/// zones being avoided. Persist [`crate::planner::Plan::budget`] after every plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacementBudget {
    pub bucket: TokenBucket,
    /// Replacement launch keys paid for, and when; kept for one [`BUDGET_PERIOD`], so at most
    /// as many entries as launches in one period.
    pub paid_keys: BTreeMap<String, Timestamp>,
    pub zone_backoff: ZoneBackoff,
}

impl ReplacementBudget {
    /// The default budget ([`DEFAULT_REPLACEMENTS_PER_HOUR`]), full, with no zone avoided.
    pub fn new(now: Timestamp) -> ReplacementBudget {
        ReplacementBudget::per_hour(DEFAULT_REPLACEMENTS_PER_HOUR, now)
    }

    pub fn per_hour(replacements: u32, now: Timestamp) -> ReplacementBudget {
        ReplacementBudget {
            bucket: TokenBucket::per_hour(replacements, now),
            paid_keys: BTreeMap::new(),
            zone_backoff: ZoneBackoff::default(),
        }
    }

    /// Tokens left right now (after [`ReplacementBudget::advance`]).
    pub fn tokens(&self) -> u32 {
        self.bucket.tokens
    }

    /// Brings the budget up to `now`: earned tokens, forgotten keys.
    pub fn advance(&mut self, now: Timestamp) {
        self.bucket.refill(now);
        self.paid_keys
            .retain(|_, paid_at| now.since(*paid_at) < BUDGET_PERIOD);
    }

    /// Pays for the replacement launch under `key`.
    pub fn pay(&mut self, key: &str, now: Timestamp) -> Payment {
        if self.paid_keys.contains_key(key) {
            return Payment::AlreadyPaid;
        }
        if !self.bucket.try_take() {
            return Payment::Exhausted;
        }
        self.paid_keys.insert(key.to_owned(), now);
        Payment::Paid
    }
}

/// A launch that could not be placed, as the executor recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLaunchFailure {
    pub zone: Zone,
    pub at: Timestamp,
    pub reason: PlacementFailure,
}

/// One zone's run of capacity failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneFailures {
    /// Failures since the zone last started a task; zero once it has recovered.
    pub consecutive: u32,
    /// The newest failure counted: older (re-read) failures are not counted twice.
    pub last_failure_at: Timestamp,
    pub avoid_until: Timestamp,
    /// ECS's reason for the last failure, for the logs.
    pub last_reason: String,
}

/// Zones being avoided after capacity or placement failures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneBackoff {
    pub zones: BTreeMap<Zone, ZoneFailures>,
}

impl ZoneBackoff {
    /// How long a zone is avoided after its `consecutive`-th failure in a row.
    pub fn backoff_after(consecutive: u32) -> Duration {
        let doublings = consecutive.saturating_sub(1).min(16);
        ZONE_BACKOFF_BASE
            .saturating_mul(1 << doublings)
            .min(ZONE_BACKOFF_MAX)
    }

    /// True if launches should not go to `zone` at `now`.
    pub fn is_avoided(&self, zone: &Zone, now: Timestamp) -> bool {
        self.zones
            .get(zone)
            .is_some_and(|failures| failures.consecutive > 0 && now < failures.avoid_until)
    }

    /// Counts the capacity failures newer than those already counted, forgives zones where a
    /// task started after their last failure, and forgets zones quiet for
    /// [`ZONE_FAILURE_MEMORY`].
    pub fn observe(
        &mut self,
        failures: &[ObservedLaunchFailure],
        tasks: &[TaskInfo],
        now: Timestamp,
    ) {
        let mut capacity_failures: Vec<&ObservedLaunchFailure> = failures
            .iter()
            .filter(|f| f.reason.is_zone_capacity() && now.since(f.at) < ZONE_FAILURE_MEMORY)
            .collect();
        capacity_failures.sort_by(|a, b| (a.at, &a.zone).cmp(&(b.at, &b.zone)));
        for failure in capacity_failures {
            let entry = self
                .zones
                .entry(failure.zone.clone())
                .or_insert_with(|| ZoneFailures {
                    consecutive: 0,
                    last_failure_at: Timestamp::EPOCH,
                    avoid_until: Timestamp::EPOCH,
                    last_reason: String::new(),
                });
            if failure.at <= entry.last_failure_at {
                continue;
            }
            entry.consecutive = entry.consecutive.saturating_add(1);
            entry.last_failure_at = failure.at;
            entry.avoid_until = failure.at.plus(Self::backoff_after(entry.consecutive));
            entry.last_reason = failure.reason.as_reason().to_owned();
        }
        for task in tasks {
            let (Some(zone), Some(started_at)) = (&task.zone, task.started_at) else {
                continue;
            };
            let live = matches!(task.last_status, TaskStatus::Pending | TaskStatus::Running);
            if let Some(entry) = self.zones.get_mut(zone)
                && live
                && started_at > entry.last_failure_at
            {
                entry.consecutive = 0;
                entry.avoid_until = Timestamp::EPOCH;
            }
        }
        self.zones
            .retain(|_, failures| now.since(failures.last_failure_at) < ZONE_FAILURE_MEMORY);
    }
}
