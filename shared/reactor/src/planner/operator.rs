//! Operator-requested replacements (`nodefleet replace NODE`): the one launch that replaces
//! a node an operator names, planned with the reconcile planner's own rules so the executor
//! dedups it with any reconcile that replaces the same node.
//!
//! [`operator_replacement`] is pure, like [`super::plan`]:
//!
//! - **Which nodes**: the serving nodes the planner manages (see the module doc of
//!   [`super`]); an updater node is the snapshot updater's, a stopped record is history, an
//!   unknown id is a typo: each is a [`ReplaceRefusal`]. A node that already has a
//!   replacement task is refused too ([`ReplaceRefusal::ReplacementPending`]): the reactor
//!   finishes that one (rule 3), and a second would only be stopped as a duplicate.
//! - **Same key as the reactor**: if a reconcile of the same observation would replace the
//!   node itself (it is lost, unhealthy or doomed, and neither the storm guard nor the
//!   budget holds it back), the operator's launch *is* that launch, key and zone included,
//!   so the two claim one idempotency key and exactly one task starts. Otherwise the launch
//!   gets the key shape of rule 1, `replace/<node>/<task being replaced, or none>/<zone>`
//!   (with `/retry-<n>` after dead replacements), in the zone rule 1 would pick with the
//!   node left out of the count: a healthy node's replacement goes where it keeps the spread
//!   even, usually its own zone.
//! - **What the operator overrides**: the storm guard and the replacement budget (rule 2)
//!   are for replacements nobody asked for; an operator's request is not held back by them
//!   and costs no token. Zone backoff still applies: a zone that just failed a placement is
//!   skipped, and with every zone in backoff the request is refused.
//! - **After the launch** nothing here is needed: the replacement is a live task tagged with
//!   the node, so every later reconcile sees a node with a replacement, stops the old task
//!   once the replacement's target is healthy and moves the record (rule 3).

use nodefleet_ports::{NodeId, NodeState, Role, TaskId, Timestamp};

use super::{
    Action, Condition, Desired, Observed, Planner, REPLACEMENT_KEY_PREFIX, ReplacementBudget, plan,
    zone_counts,
};

/// Why an operator's replacement was not planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplaceRefusal {
    /// No record and no live task of the fleet has this id.
    #[error("node {node} is not one of the fleet's nodes")]
    UnknownNode { node: NodeId },
    /// The node is not a serving node (the updater is the snapshot updater's).
    #[error(
        "node {node} is the fleet's {role} node, not a serving node; the reactor does not replace it"
    )]
    NotServing { node: NodeId, role: Role },
    /// The node's record is stopped: it is kept for the audit, not managed.
    #[error("node {node} is stopped (its record is kept for the audit trail)")]
    Stopped { node: NodeId },
    /// A replacement task is running for the node already.
    #[error("node {node} already has a replacement, task {task}; the reactor finishes it")]
    ReplacementPending { node: NodeId, task: TaskId },
    /// No zone can take the launch (none configured, or all in backoff).
    #[error("no zone can take a replacement for node {node}: {reason}")]
    NoZone { node: NodeId, reason: String },
}

/// The launch that replaces `node` at an operator's request, or why there is none. See the
/// module doc; `budget` is the reactor's (its zone backoff decides the zones).
pub fn operator_replacement(
    desired: &Desired,
    observed: &Observed,
    budget: &ReplacementBudget,
    node: &NodeId,
    now: Timestamp,
) -> Result<Action, ReplaceRefusal> {
    if let Some(record) = observed.nodes.iter().find(|n| &n.id == node) {
        if record.role != Role::Serving {
            return Err(ReplaceRefusal::NotServing {
                node: node.clone(),
                role: record.role,
            });
        }
        if record.state == NodeState::Stopped {
            return Err(ReplaceRefusal::Stopped { node: node.clone() });
        }
    }
    let planner = Planner::new(desired, observed, now, budget);
    let views = planner.observe_nodes();
    let Some(view) = views.iter().find(|v| v.id == node) else {
        return Err(ReplaceRefusal::UnknownNode { node: node.clone() });
    };
    if let Some(replacement) = view.replacement {
        return Err(ReplaceRefusal::ReplacementPending {
            node: node.clone(),
            task: replacement.id.clone(),
        });
    }
    let why = match &view.condition {
        Condition::Lost(why) | Condition::Unhealthy(why) | Condition::Doomed(why) => why.clone(),
        Condition::Healthy => "healthy".to_owned(),
        Condition::InGrace => "in its grace window".to_owned(),
        Condition::Unknown(why) => why.clone(),
    };
    let reason = format!("operator request: replace {node} ({why})");

    // The reconcile's own launch for this node, if it would make one: same key, same zone.
    let automatic = plan(desired, observed, now, budget);
    let planned = automatic.actions.into_iter().find(|action| {
        matches!(action, Action::Launch { node: n, idempotency_key, .. }
            if n == node && idempotency_key.starts_with(REPLACEMENT_KEY_PREFIX))
    });
    if let Some(Action::Launch {
        node,
        zone,
        role,
        snapshot,
        idempotency_key,
        ..
    }) = planned
    {
        return Ok(Action::Launch {
            node,
            zone,
            role,
            snapshot,
            idempotency_key,
            reason,
        });
    }

    let counts = zone_counts(&views, Some(node));
    let Some(zone) = planner.pick_zone(&counts) else {
        let reason = if desired.zones.is_empty() {
            "the fleet config names no zones".to_owned()
        } else {
            let backoff: Vec<String> = planner
                .budget
                .zone_backoff
                .zones
                .iter()
                .map(|(zone, f)| format!("{zone} until {} ({})", f.avoid_until, f.last_reason))
                .collect();
            format!("every zone is in backoff: {}", backoff.join(", "))
        };
        return Err(ReplaceRefusal::NoZone {
            node: node.clone(),
            reason,
        });
    };
    Ok(Action::Launch {
        node: node.clone(),
        idempotency_key: planner.replacement_key(view, &zone),
        zone,
        role: Role::Serving,
        snapshot: desired.snapshot.clone(),
        reason,
    })
}
