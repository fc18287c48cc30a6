//! The snapshot updater's CloudWatch metrics in Embedded Metric Format, built with the
//! reactor's [`document`] (same namespace `nodefleet`, dimension `Fleet`). Pure: what an
//! invocation saw and finished in, documents out; the Lambda prints them one per line.
//!
//! | metric | unit | dimensions | when |
//! |---|---|---|---|
//! | `SnapshotAge` | Seconds | Fleet | every invocation with a published snapshot: now minus its creation |
//! | `RoundDuration` | Milliseconds | Fleet | a round ended (published or aborted) |
//! | `StepDuration` | Milliseconds | Fleet, Step | a round ended: one document per step it went through |
//! | `BytesUploaded` | Bytes | Fleet | a round published: what its upload wrote to the store |
//! | `DedupeRatio` | None | Fleet | a round published: share of the data dir the store already had (0 to 1) |
//! | `RoundsPublished` | Count | Fleet | a round published |
//! | `AbortedRounds` | Count | Fleet, Reason | a round aborted; `Reason` is [`AbortReason::as_str`](crate::round::AbortReason::as_str) |
//!
//! An alarm on `SnapshotAge` above two intervals catches every way of not publishing (rounds
//! aborting, or not running at all); `AbortedRounds` by `Reason` says why.

use nodefleet_ports::Timestamp;
use nodefleet_reactor::metrics::{Metric, Unit, document};
use serde_json::Value;

use crate::round::{RoundOutcome, RoundSummary};

/// The documents for one invocation: the snapshot's age (if one is published, created at
/// `published_at`) and every round that ended in it.
pub fn documents(
    fleet: &str,
    published_at: Option<Timestamp>,
    finished: &[RoundSummary],
    now: Timestamp,
) -> Vec<Value> {
    let fleet_dim = [("Fleet", fleet)];
    let mut documents = Vec::new();
    if let Some(created) = published_at {
        documents.push(document(
            &fleet_dim,
            &[Metric::new(
                "SnapshotAge",
                Unit::Seconds,
                now.since(created).as_secs_f64(),
            )],
            now,
        ));
    }
    for round in finished {
        let total = round.finished_at.since(round.started_at).as_secs_f64() * 1000.0;
        let mut metrics = vec![Metric::new("RoundDuration", Unit::Milliseconds, total)];
        match &round.outcome {
            RoundOutcome::Published {
                bytes_total,
                bytes_uploaded,
                bytes_skipped,
                ..
            } => {
                metrics.push(Metric::new(
                    "BytesUploaded",
                    Unit::Bytes,
                    *bytes_uploaded as f64,
                ));
                let ratio = if *bytes_total == 0 {
                    0.0
                } else {
                    *bytes_skipped as f64 / *bytes_total as f64
                };
                metrics.push(Metric::new("DedupeRatio", Unit::None, ratio));
                metrics.push(Metric::count("RoundsPublished", 1));
            }
            RoundOutcome::Aborted(abort) => {
                documents.push(document(
                    &[("Fleet", fleet), ("Reason", abort.reason.as_str())],
                    &[Metric::count("AbortedRounds", 1)],
                    now,
                ));
            }
        }
        documents.push(document(&fleet_dim, &metrics, now));
        for (step, millis) in &round.step_millis {
            documents.push(document(
                &[("Fleet", fleet), ("Step", step.as_str())],
                &[Metric::new(
                    "StepDuration",
                    Unit::Milliseconds,
                    *millis as f64,
                )],
                now,
            ));
        }
    }
    documents
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round::{Abort, AbortReason, Step};
    use nodefleet_ports::SnapshotId;

    fn summary(outcome: RoundOutcome) -> RoundSummary {
        RoundSummary {
            id: "r-1".into(),
            started_at: Timestamp::from_millis(1_000),
            finished_at: Timestamp::from_millis(61_000),
            outcome,
            warnings: vec![],
            step_millis: vec![(Step::EnsureNode, 10), (Step::Upload, 50_000)],
        }
    }

    fn metric<'a>(documents: &'a [Value], name: &str) -> Vec<&'a Value> {
        documents.iter().filter_map(|d| d.get(name)).collect()
    }

    #[test]
    fn a_published_round_reports_bytes_dedupe_and_step_times() {
        let round = summary(RoundOutcome::Published {
            snapshot: SnapshotId::new("s"),
            block_height: 9,
            bytes_total: 1_000,
            bytes_uploaded: 100,
            bytes_skipped: 900,
        });
        let now = Timestamp::from_millis(100_000);
        let docs = documents("main", Some(Timestamp::from_millis(40_000)), &[round], now);
        assert_eq!(metric(&docs, "SnapshotAge"), [&Value::from(60.0)]);
        assert_eq!(metric(&docs, "RoundDuration"), [&Value::from(60_000.0)]);
        assert_eq!(metric(&docs, "BytesUploaded"), [&Value::from(100.0)]);
        assert_eq!(metric(&docs, "DedupeRatio"), [&Value::from(0.9)]);
        assert_eq!(metric(&docs, "StepDuration").len(), 2);
        assert!(metric(&docs, "AbortedRounds").is_empty());
        let step_doc = docs
            .iter()
            .find(|d| d.get("Step") == Some(&Value::from("upload")));
        assert!(step_doc.is_some());
    }

    #[test]
    fn an_aborted_round_is_counted_by_reason() {
        let round = summary(RoundOutcome::Aborted(Abort {
            reason: AbortReason::VerifyFailed,
            step: Step::Verify,
            detail: "bad chunk".into(),
        }));
        let docs = documents("main", None, &[round], Timestamp::from_millis(100_000));
        assert!(metric(&docs, "SnapshotAge").is_empty());
        let aborted = docs
            .iter()
            .find(|d| d.get("AbortedRounds").is_some())
            .and_then(|d| d.get("Reason"));
        assert_eq!(aborted, Some(&Value::from("verify_failed")));
        assert!(metric(&docs, "BytesUploaded").is_empty());
    }
}
