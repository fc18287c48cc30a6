//! The health reactor (issue 5, in progress): what wakes a reconcile ([`triggers`]), what a
//! reconcile decides ([`planner`], pure: `now` and observed state in, actions out), how many
//! nodes fit on which instances ([`capacity`], pure), and the one place with I/O,
//! [`reconcile`]: observe through the ports, plan, and execute each action under an
//! idempotency key claimed before its side effect.

pub mod capacity;
pub mod metrics;
pub mod planner;
pub mod reconcile;
pub mod service;
pub mod triggers;
