//! The snapshot updater: keeps a fresh, verified chain-data snapshot published, and never
//! publishes a bad one. The same code runs in the `snapshot-updater` Lambda (an EventBridge
//! schedule starts a round, a one-minute tick advances it) and in `nodefleet up` (a timer).
//!
//! # The round
//!
//! A Lambda runs at most 15 minutes and an upload of a mainnet data dir takes longer, so a
//! round is a state machine kept in the state store (control state `snapshot-updater`) and
//! advanced by ticks. Each tick takes the lease, observes, and moves the round as far as it
//! can without waiting ([`service`]); the decisions are a pure function ([`round`]).
//!
//! ```text
//!                 start-round event, or `interval` since the last start
//!   idle ──────────────────────────────────────────────▶ ensure_node
//!    ▲                                                      │ a live updater task (adopted),
//!    │                                                      │ or one launched (role updater,
//!    │                                                      ▼ hydrated from `latest`)
//!    │                                                  wait_synced
//!    │                                                      │ agent reports healthy, head
//!    │                                                      ▼ age <= max, fresh heartbeat
//!    │                                                   quiesce ──── command: quiesce
//!    │                                                      │ ack done: chain point
//!    │                                                      ▼
//!    │                                                   upload ───── command: upload
//!    │                                                      │ ack done: snapshot id, bytes
//!    │                                                      ▼
//!    │                                                   verify ───── manifest, every pack,
//!    │                                                      │          sampled chunk hashes
//!    │                                                      ▼
//!    │                                                   publish ──── block newer than
//!    │                                                      │          `latest`'s? swap
//!    │                                                      │          `latest`, catalog
//!    │                                                      ▼
//!    │                                                   resume ───── command: resume
//!    │                                                      │ ack done
//!    │                                                      ▼
//!    └──────────────────────────────────────────────────  prune  (retention)
//!
//!   any step: fails or passes its timeout ──▶ abort (reason recorded, metric)
//!     ├─ from quiesce, upload, verify, publish ──▶ resume ──▶ idle
//!     └─ from ensure_node, wait_synced, or the task is gone ──▶ idle
//!   `latest` is untouched by an abort: the previous snapshot stays published.
//! ```
//!
//! # Safety
//!
//! - **One round at a time.** Every tick holds the lease `snapshot-updater` (TTL
//!   [`service::UpdaterSettings::lease_ttl`], renewed before each long step); a concurrent
//!   tick finds it held and does nothing. A tick that dies leaves the lease to expire, and
//!   the round in the state store at the step it reached; the next tick after expiry resumes
//!   it. The memory is also saved versioned, so a stale holder cannot overwrite it.
//! - **The agent does the data work.** The updater never moves chain data: it commands the
//!   updater node's agent through the channel in the chain-data store
//!   ([`nodefleet_snapshot::channel`], which says how duplicates and agent restarts are
//!   handled), and itself only reads the manifest and samples chunks.
//! - **Publishing** is a conditional create of the next `latest` generation, after
//!   verification, and only for a block newer than the published one (invariant 4).
//! - **The updater node never serves**: it is launched with role `updater`, which the
//!   reactor never registers as a target.

pub mod metrics;
pub mod round;
pub mod service;
