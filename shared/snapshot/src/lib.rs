//! The snapshot engine: chain data between a node's data dir and an object store, verified,
//! incremental and resumable. The format is in [`format`]; the operations are [`create`],
//! [`restore`], [`verify`], [`list`] and [`prune`]; client profiles (what a client's data dir
//! holds, what it must not share) are in [`profile`]. [`channel`] is how the snapshot
//! updater commands the agent of an updater node (quiesce, upload, resume) through the store.

pub mod catalog;
pub mod channel;
pub mod chunker;
pub mod create;
pub mod error;
pub mod format;
pub mod list;
pub mod profile;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod verify;
