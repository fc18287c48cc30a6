//! Why a snapshot operation failed.
//!
//! # Error policy
//!
//! Failure is loud and specific: a chunk that is missing or does not match its hash names
//! the snapshot, the file and the offset it belongs to; nothing is reported as restored or
//! published after an error. [`SnapshotError::is_retryable`] is true only for a store that
//! was throttled or unreachable (the operation may be re-run; restore resumes, create
//! re-uses the chunks already uploaded). Corruption, a missing snapshot or a bad data dir
//! need a person, or a different snapshot.

use std::path::PathBuf;

use nodefleet_ports::ObjectError;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The object store failed (see [`ObjectError`]'s own policy).
    #[error("object store: {0}")]
    Store(#[from] ObjectError),
    /// Reading or writing the data dir failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The snapshot (or `latest`) does not exist.
    #[error("no snapshot {0} in the store")]
    NotFound(String),
    /// A manifest could not be read: truncated, not zstd, not JSON, or an unknown format.
    #[error("manifest of snapshot {snapshot} is unreadable: {reason}")]
    BadManifest { snapshot: String, reason: String },
    /// A chunk is missing from its pack, or its bytes do not hash to its name.
    #[error("snapshot {snapshot}: chunk {chunk} of {path} at offset {offset} is {problem}")]
    BadChunk {
        snapshot: String,
        path: String,
        offset: u64,
        chunk: String,
        problem: String,
    },
    /// The data dir holds something the format cannot carry (a path that is not UTF-8).
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    /// Verification of a new snapshot failed, so it was not published.
    #[error("snapshot {snapshot} failed verification and was not published: {reason}")]
    NotVerified { snapshot: String, reason: String },
    /// Someone else published a newer `latest` while this one was being published.
    #[error("lost the race to publish generation {generation} of latest")]
    PublishRace { generation: u64 },
}

impl SnapshotError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SnapshotError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            SnapshotError::Store(error) => error.is_retryable(),
            SnapshotError::PublishRace { .. } => true,
            _ => false,
        }
    }
}
