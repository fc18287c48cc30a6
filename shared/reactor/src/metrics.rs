//! The reactor's CloudWatch metrics in Embedded Metric Format (EMF): JSON documents that the
//! Lambda writes to stdout, one line each, and CloudWatch Logs turns into metrics without a
//! `PutMetricData` call (no extra latency, no extra permission, no lost metric when the
//! function times out after logging). Pure: a reconcile's outcome in, documents out.
//!
//! Every document has the dimension `Fleet`; launch failures also have `Reason` (ECS's
//! placement reason, or `error` for a failed call), one document per reason, since an EMF
//! document gives each dimension one value. Format:
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>
//!
//! | metric | unit | what |
//! |---|---|---|
//! | `ReconcileDuration` | Milliseconds | trigger to last action done |
//! | `ReplacementsLaunched` | Count | replacement tasks started |
//! | `NodesLaunched` | Count | tasks started to fill a short fleet |
//! | `LaunchFailures` | Count | launches that started nothing, by `Reason` |
//! | `UnhealthyNodes` | Count | unhealthy plus lost serving nodes seen |
//! | `HealthyNodes` | Count | healthy serving nodes seen |
//! | `StormGuardTrips` | Count | reconciles that withheld replacements (storm or budget) |
//! | `ActionsFailed` | Count | actions that failed and wait for the next reconcile |

use std::collections::BTreeMap;
use std::time::Duration;

use nodefleet_ports::Timestamp;
use serde_json::{Value, json};

use crate::planner::{Action, AlertKind, REPLACEMENT_KEY_PREFIX};
use crate::reconcile::{Outcome, ReconcileOutcome, UNPLACED};

/// The CloudWatch namespace of every nodefleet metric (the snapshot updater's too, which
/// builds its documents with [`document`]).
pub const NAMESPACE: &str = "nodefleet";

/// An EMF unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Milliseconds,
    Seconds,
    Bytes,
    Count,
    /// A ratio or another plain number.
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::Bytes => "Bytes",
            Unit::Count => "Count",
            Unit::None => "None",
        }
    }
}

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub value: f64,
}

impl Metric {
    pub fn new(name: &'static str, unit: Unit, value: f64) -> Metric {
        Metric { name, unit, value }
    }

    pub fn count(name: &'static str, value: usize) -> Metric {
        Metric {
            name,
            unit: Unit::Count,
            value: value as f64,
        }
    }
}

/// One EMF document: the metrics under one set of dimensions, at `at`.
pub fn document(dimensions: &[(&str, &str)], metrics: &[Metric], at: Timestamp) -> Value {
    let names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    let definitions: Vec<Value> = metrics
        .iter()
        .map(|m| json!({"Name": m.name, "Unit": m.unit.as_str()}))
        .collect();
    let mut root = serde_json::Map::new();
    root.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": at.as_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [names],
                "Metrics": definitions,
            }],
        }),
    );
    for (name, value) in dimensions {
        root.insert((*name).to_owned(), Value::String((*value).to_owned()));
    }
    for metric in metrics {
        root.insert(metric.name.to_owned(), json!(metric.value));
    }
    Value::Object(root)
}

/// The documents of one reconcile of `fleet` that took `duration` (see the module doc).
pub fn reconcile_documents(
    fleet: &str,
    outcome: &ReconcileOutcome,
    duration: Duration,
    at: Timestamp,
) -> Vec<Value> {
    let summary = &outcome.plan.summary;
    let mut replacements = 0;
    let mut fills = 0;
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for failure in &outcome.report.launch_failures {
        *failures
            .entry(failure.reason.as_reason().to_owned())
            .or_default() += 1;
    }
    for done in &outcome.report.outcomes {
        let Action::Launch {
            idempotency_key, ..
        } = &done.action
        else {
            continue;
        };
        match &done.outcome {
            Outcome::Done(_) if idempotency_key.starts_with(REPLACEMENT_KEY_PREFIX) => {
                replacements += 1;
            }
            Outcome::Done(_) => fills += 1,
            // Unplaced launches are counted by their placement reasons above.
            Outcome::Failed(detail) if !detail.starts_with(UNPLACED) => {
                *failures.entry("error".to_owned()).or_default() += 1;
            }
            Outcome::Failed(_) | Outcome::Skipped(_) => {}
        }
    }
    let trips = outcome
        .plan
        .alerts()
        .filter(|kind| matches!(kind, AlertKind::Storm | AlertKind::BudgetSpent))
        .count()
        .min(1);
    let millis = duration.as_secs_f64() * 1000.0;
    let mut documents = vec![document(
        &[("Fleet", fleet)],
        &[
            Metric {
                name: "ReconcileDuration",
                unit: Unit::Milliseconds,
                value: millis,
            },
            Metric::count("ReplacementsLaunched", replacements),
            Metric::count("NodesLaunched", fills),
            Metric::count("UnhealthyNodes", summary.unhealthy + summary.lost),
            Metric::count("HealthyNodes", summary.healthy),
            Metric::count("StormGuardTrips", trips),
            Metric::count("ActionsFailed", outcome.report.failed()),
        ],
        at,
    )];
    for (reason, count) in &failures {
        documents.push(document(
            &[("Fleet", fleet), ("Reason", reason)],
            &[Metric::count("LaunchFailures", *count)],
            at,
        ));
    }
    documents
}
