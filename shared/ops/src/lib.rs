//! Operating a fleet: what `nodefleet status`, `events`, `replace` and `snapshot round` do,
//! over any ports. The same functions run over a deployed stack's AWS adapters
//! (`--stack NAME`, built by `nodefleet_lambda::stack` from the stack's outputs) and over
//! the local fleet's adapters (`nodefleet up`'s console), so this crate depends on the ports
//! and the services only, never on an adapter.
//!
//! | module | command | what |
//! |---|---|---|
//! | [`report`] | `status` | the pure report: nodes by zone, updater, latest snapshot and its age, events; text and JSON |
//! | [`probe`] | `status` | the seam that asks each node for its head block |
//! | [`status`](mod@status) | `status` | reading the report's sources through the ports |
//! | [`events`] | `events` | the audit trail, newest first, filtered |
//! | [`replace`](mod@replace) | `replace NODE` | an operator's replacement through the reactor's planner and executor |
//! | [`round`] | `snapshot round` | a snapshot round started through the updater's service |
//!
//! Each module states its error policy; `now` is always passed in.

pub mod events;
pub mod probe;
pub mod replace;
pub mod report;
pub mod round;
pub mod status;

pub use events::{EventFilter, recent_events};
pub use probe::{HeadProbe, RpcHeadProbe};
pub use replace::{ReplaceError, Replaced, replace};
pub use report::{FleetReport, ReportInputs};
pub use round::{RoundStart, start_round};
pub use status::{StatusError, StatusOptions, status};
