//! Requests per second and their latency over the last minutes, as the gateway saw them: what
//! the local fleet's status page charts (`traffic` in `nodefleet status --json`).
//!
//! A [`TrafficRecorder`] keeps one bucket per wall-clock second for the last [`WINDOW_SECS`]
//! seconds, in a ring: each holds the second it counts, the requests answered in it, how many
//! failed, and a latency histogram. Recording is a lock, a few additions and no allocation;
//! [`TrafficRecorder::window`] turns the ring into one [`TrafficSecond`] per second of the
//! window, oldest first and zero-filled, so a chart needs no gap logic. Time is passed in
//! (milliseconds since the Unix epoch) on both sides, so tests are deterministic.
//!
//! # Latency percentiles
//!
//! The histogram has logarithmic buckets, [`BUCKETS_PER_DOUBLING`] per doubling from
//! [`SMALLEST_BUCKET_US`] up, so a percentile is reported as the upper edge of its bucket: at
//! most 19% (2^(1/4)) above the true value, which a chart of milliseconds cannot show, for a
//! fixed 340 bytes per second of the window. Latencies beyond the last bucket count in it.
//!
//! # What counts as failed
//!
//! A request fails when its answer is a server-side failure: an HTTP status of 500 or more, or
//! an upstream call that erred or answered other than 2xx (the gateway then answers a
//! JSON-RPC error with HTTP 200). A request the policy rejected or denied is the client's
//! problem and is not a failure.
//!
//! # Error policy
//!
//! Nothing here fails: a poisoned lock is taken over (the counters stay consistent: every
//! update is a handful of additions), and a time before the window is dropped.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Seconds of history kept: the status page charts the last five minutes, long enough to see
/// a kill, its replacement and the traffic settle.
pub const WINDOW_SECS: u64 = 300;
/// The histogram's first bucket's upper edge: a loopback answer from anvil takes about 100 µs,
/// so anything faster needs no finer split.
const SMALLEST_BUCKET_US: f64 = 10.0;
/// Buckets per doubling of latency: quarter-octaves (see the module doc for the error).
const BUCKETS_PER_DOUBLING: f64 = 4.0;
/// Buckets in all: the last one's edge, 10 µs times 2^(84/4), is about 21 s, past the
/// gateway's default upstream timeout of 20 s.
const BUCKETS: usize = 85;

/// One second of traffic, as the status JSON carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficSecond {
    /// The second's start, in milliseconds since the Unix epoch.
    pub at: u64,
    pub requests: u64,
    pub errors: u64,
    /// Median latency in milliseconds; `null` in a second without requests.
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency in milliseconds; `null` in a second without requests.
    pub p99_ms: Option<f64>,
}

/// The window, oldest second first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficWindow {
    pub window_secs: u64,
    pub seconds: Vec<TrafficSecond>,
}

impl Default for TrafficWindow {
    fn default() -> Self {
        TrafficWindow {
            window_secs: WINDOW_SECS,
            seconds: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Bucket {
    /// The Unix second this bucket counts; a bucket of an older second is stale.
    second: u64,
    requests: u64,
    errors: u64,
    latencies: [u32; BUCKETS],
}

impl Bucket {
    fn empty(second: u64) -> Bucket {
        Bucket {
            second,
            requests: 0,
            errors: 0,
            latencies: [0; BUCKETS],
        }
    }

    /// The upper edge, in milliseconds, of the bucket holding the `q` quantile.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latencies.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        // The rank of the quantile, 1-based: the smallest latency with at least q of them at
        // or below it.
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (index, &count) in self.latencies.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                return Some(upper_edge_us(index) / 1000.0);
            }
        }
        Some(upper_edge_us(BUCKETS - 1) / 1000.0)
    }
}

/// The upper edge of histogram bucket `index`, in microseconds.
fn upper_edge_us(index: usize) -> f64 {
    SMALLEST_BUCKET_US * (index as f64 / BUCKETS_PER_DOUBLING).exp2()
}

/// The bucket a latency falls in.
fn bucket_of(latency: Duration) -> usize {
    let us = latency.as_secs_f64() * 1e6;
    if us <= SMALLEST_BUCKET_US {
        return 0;
    }
    let mut index = ((us / SMALLEST_BUCKET_US).log2() * BUCKETS_PER_DOUBLING).ceil() as usize;
    // The logarithm's rounding can land one bucket low right at an edge.
    if upper_edge_us(index) < us {
        index += 1;
    }
    index.min(BUCKETS - 1)
}

/// The last [`WINDOW_SECS`] seconds of requests. See the module doc.
#[derive(Debug)]
pub struct TrafficRecorder {
    ring: Mutex<Vec<Bucket>>,
}

impl Default for TrafficRecorder {
    fn default() -> Self {
        TrafficRecorder::new()
    }
}

impl TrafficRecorder {
    pub fn new() -> TrafficRecorder {
        TrafficRecorder {
            ring: Mutex::new((0..WINDOW_SECS).map(|_| Bucket::empty(0)).collect()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Bucket>> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one request answered at `at_ms` after `latency`.
    pub fn record(&self, at_ms: u64, latency: Duration, failed: bool) {
        let second = at_ms / 1000;
        let mut ring = self.lock();
        let slot = &mut ring[(second % WINDOW_SECS) as usize];
        if slot.second != second {
            if slot.second > second {
                return; // older than the window this slot already moved on to
            }
            *slot = Bucket::empty(second);
        }
        slot.requests += 1;
        slot.errors += u64::from(failed);
        slot.latencies[bucket_of(latency)] += 1;
    }

    /// The window ending with the second of `now_ms` (included), oldest first, zero-filled.
    pub fn window(&self, now_ms: u64) -> TrafficWindow {
        let now = now_ms / 1000;
        let first = (now + 1).saturating_sub(WINDOW_SECS);
        let ring = self.lock();
        let seconds = (first..=now)
            .map(|second| {
                let slot = &ring[(second % WINDOW_SECS) as usize];
                let at = second * 1000;
                if slot.second == second {
                    TrafficSecond {
                        at,
                        requests: slot.requests,
                        errors: slot.errors,
                        p50_ms: slot.quantile_ms(0.5),
                        p99_ms: slot.quantile_ms(0.99),
                    }
                } else {
                    TrafficSecond {
                        at,
                        requests: 0,
                        errors: 0,
                        p50_ms: None,
                        p99_ms: None,
                    }
                }
            })
            .collect();
        TrafficWindow {
            window_secs: WINDOW_SECS,
            seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_764_620_000_000;

    #[test]
    fn an_idle_window_is_all_zero_seconds_oldest_first() {
        let window = TrafficRecorder::new().window(T0 + 999);
        assert_eq!(window.window_secs, WINDOW_SECS);
        assert_eq!(window.seconds.len(), WINDOW_SECS as usize);
        assert_eq!(window.seconds.last().unwrap().at, T0);
        assert_eq!(
            window.seconds[0].at,
            T0 - (WINDOW_SECS - 1) * 1000,
            "oldest first"
        );
        assert!(
            window
                .seconds
                .iter()
                .all(|s| s.requests == 0 && s.p50_ms.is_none())
        );
    }

    #[test]
    fn requests_count_in_their_second_with_errors_and_percentiles() {
        let recorder = TrafficRecorder::new();
        for i in 0..99 {
            recorder.record(T0 + i, Duration::from_micros(200), false);
        }
        recorder.record(T0 + 500, Duration::from_millis(50), true);
        recorder.record(T0 + 1_200, Duration::from_millis(1), false);
        let window = recorder.window(T0 + 1_500);
        let [.., first, second] = window.seconds.as_slice() else {
            panic!("two seconds at least")
        };
        assert_eq!((first.at, first.requests, first.errors), (T0, 100, 1));
        let p50 = first.p50_ms.unwrap();
        assert!((0.2..=0.2 * 1.19).contains(&p50), "p50 {p50}");
        let p99 = first.p99_ms.unwrap();
        assert!(
            (0.2..=0.2 * 1.19).contains(&p99),
            "p99 {p99}: 99 of 100 at 0.2 ms"
        );
        assert_eq!(
            (second.at, second.requests, second.errors),
            (T0 + 1000, 1, 0)
        );
    }

    #[test]
    fn a_second_older_than_the_window_is_dropped_and_a_slot_is_reused_when_time_moves_on() {
        let recorder = TrafficRecorder::new();
        recorder.record(T0, Duration::from_millis(1), false);
        let later = T0 + WINDOW_SECS * 1000;
        recorder.record(later, Duration::from_millis(1), false);
        recorder.record(T0, Duration::from_millis(1), false); // stale: its slot moved on
        let window = recorder.window(later);
        assert_eq!(window.seconds.last().unwrap().requests, 1);
        assert_eq!(window.seconds.iter().map(|s| s.requests).sum::<u64>(), 1);
    }

    proptest! {
        /// A percentile's bucket edge is never below the true latency and at most one bucket
        /// (19%) above it, for latencies the histogram spans.
        #[test]
        fn a_percentile_is_within_one_bucket_above_the_true_value(us in 10u64..20_000_000) {
            let recorder = TrafficRecorder::new();
            recorder.record(T0, Duration::from_micros(us), false);
            let p50 = recorder.window(T0).seconds.last().unwrap().p50_ms.unwrap();
            let true_ms = us as f64 / 1000.0;
            prop_assert!(p50 >= true_ms * 0.999_999, "{p50} < {true_ms}");
            prop_assert!(p50 <= true_ms * 1.19 + 1e-9, "{p50} > {true_ms} * 1.19");
        }

        /// Every recorded request in the window is counted exactly once.
        #[test]
        fn the_window_counts_every_request_in_it(offsets in proptest::collection::vec(0u64..WINDOW_SECS * 1000, 0..200)) {
            let recorder = TrafficRecorder::new();
            for offset in &offsets {
                recorder.record(T0 + offset, Duration::from_micros(100), false);
            }
            let now = T0 + WINDOW_SECS * 1000 - 1;
            let total: u64 = recorder.window(now).seconds.iter().map(|s| s.requests).sum();
            prop_assert_eq!(total, offsets.len() as u64);
        }
    }
}
