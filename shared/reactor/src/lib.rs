//! The health reactor's pure core (issue 5, in progress): what wakes a reconcile
//! ([`triggers`]), what a reconcile decides ([`planner`]), and how many nodes fit on which
//! instances ([`capacity`]). No I/O here: decisions take `now` and observed state as input.

pub mod capacity;
pub mod planner;
pub mod triggers;
