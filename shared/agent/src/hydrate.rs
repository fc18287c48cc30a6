//! Hydration: before the client starts, make its data dir hold the wanted snapshot.
//!
//! A replacement node serves traffic in minutes instead of syncing for a day because of
//! this step. It is also where invariant 3 is kept: **a node is never started on data that
//! failed verification.**
//!
//! 1. Resolve the wanted snapshot (default `latest`) to an id, once, so a `latest` that
//!    moves while this runs cannot mix two snapshots. A store with no `latest` (never
//!    published to) means [`Hydration::EmptyStore`]: the client starts on the data dir as it
//!    is (empty on a new node) and syncs from the network.
//! 2. If the data dir's [`RESTORE_MARKER`] names that id, the dir was restored from it
//!    before (the task was restarted on the same host): [`Hydration::AlreadyRestored`],
//!    nothing is fetched, and the client resumes from its own newer data.
//! 3. Otherwise [`restore`] it. Restore removes the marker before it changes anything and
//!    writes it, naming the snapshot, only after every chunk was verified, so a dir is
//!    marked exactly when it holds verified data. It resumes: a restore of a dir that holds
//!    an older snapshot, or half of this one, fetches only what is missing or wrong.
//! 4. After a restore the marker is read back ([`require_marker`]); only then may the
//!    client start. The lifecycle checks it again just before every start.
//!
//! Any failure other than "no `latest`" is fatal ([`HydrateError`]): a missing snapshot
//! that was asked for by id, a corrupt or missing chunk, an unreadable manifest, an
//! unreachable store. The agent exits non-zero without starting the client, the marker is
//! absent, and the next task (ECS replaces it) tries again, resuming. An unreachable store
//! is fatal too even when the dir holds an earlier restore: the agent cannot tell whether a
//! newer snapshot should replace it, and a restart a minute later costs little.
//!
//! One case starts a client on a dir without a marker: an empty store. Then the data can
//! only be the node's own (a restore needs a published snapshot to start from); a dir
//! left half-restored by a failed run can meet an empty store only if the store was wiped
//! in between, and the client then verifies its own database as it does after any crash.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nodefleet_ports::ObjectStore;
use nodefleet_snapshot::catalog::{self, Selector};
use nodefleet_snapshot::error::SnapshotError;
use nodefleet_snapshot::progress::Progress;
use nodefleet_snapshot::restore::{RESTORE_MARKER, RestoreOptions, RestoreSummary, restore};

/// What hydration did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Hydration {
    /// The data dir already held the wanted snapshot.
    AlreadyRestored { snapshot: String },
    /// The snapshot was restored (or the rest of it, resuming).
    Restored(RestoreSummary),
    /// The store has no published snapshot: the client starts as the dir is and syncs.
    EmptyStore,
}

impl Hydration {
    /// The snapshot the data dir holds, if any.
    pub fn snapshot(&self) -> Option<&str> {
        match self {
            Hydration::AlreadyRestored { snapshot } => Some(snapshot),
            Hydration::Restored(summary) => Some(&summary.snapshot),
            Hydration::EmptyStore => None,
        }
    }
}

/// Why the data dir cannot be started on. See the module doc.
#[derive(Debug, thiserror::Error)]
pub enum HydrateError {
    #[error("cannot find snapshot {wanted}: {source}")]
    Resolve {
        wanted: String,
        source: Box<SnapshotError>,
    },
    #[error(
        "restoring snapshot {snapshot} into {} failed, so the client is not started on it: {source}",
        data_dir.display()
    )]
    Restore {
        snapshot: String,
        data_dir: PathBuf,
        source: Box<SnapshotError>,
    },
    #[error("cannot read the restore marker {}: {source}", path.display())]
    Marker { path: PathBuf, source: io::Error },
    #[error(
        "{} does not hold a verified restore of snapshot {snapshot} (its marker says {found:?}), so the client is not started on it",
        data_dir.display()
    )]
    NotVerified {
        snapshot: String,
        data_dir: PathBuf,
        found: Option<String>,
    },
}

impl HydrateError {
    /// True when a later attempt may succeed without a person (a throttled or unreachable
    /// store); the agent still exits, and the next task retries.
    pub fn is_retryable(&self) -> bool {
        match self {
            HydrateError::Resolve { source, .. } | HydrateError::Restore { source, .. } => {
                source.is_retryable()
            }
            HydrateError::Marker { .. } | HydrateError::NotVerified { .. } => false,
        }
    }
}

/// Brings `data_dir` to the snapshot `wanted` names. See the module doc.
pub async fn hydrate(
    store: Arc<dyn ObjectStore>,
    data_dir: &Path,
    wanted: &Selector,
    options: &RestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<Hydration, HydrateError> {
    let snapshot = match catalog::resolve(store.as_ref(), wanted).await {
        Ok(snapshot) => snapshot,
        Err(SnapshotError::NotFound(_)) if *wanted == Selector::Latest => {
            tracing::info!(data_dir = %data_dir.display(), "the store has no published snapshot; the client starts as the data dir is and syncs");
            return Ok(Hydration::EmptyStore);
        }
        Err(source) => {
            return Err(HydrateError::Resolve {
                wanted: describe(wanted),
                source: Box::new(source),
            });
        }
    };
    if marker(data_dir)?.as_deref() == Some(snapshot.as_str()) {
        tracing::info!(%snapshot, data_dir = %data_dir.display(), "the data dir already holds the snapshot");
        return Ok(Hydration::AlreadyRestored { snapshot });
    }
    tracing::info!(%snapshot, data_dir = %data_dir.display(), "restoring the data dir");
    let summary = restore(
        store,
        &Selector::Id(snapshot.clone()),
        data_dir,
        options,
        progress,
    )
    .await
    .map_err(|source| HydrateError::Restore {
        snapshot: snapshot.clone(),
        data_dir: data_dir.to_path_buf(),
        source: Box::new(source),
    })?;
    require_marker(data_dir, &summary.snapshot)?;
    tracing::info!(
        %snapshot,
        bytes_total = summary.bytes_total,
        bytes_transferred = summary.bytes_transferred,
        seconds = summary.seconds,
        "restored"
    );
    Ok(Hydration::Restored(summary))
}

/// The snapshot id the data dir's marker names, `None` without a marker.
pub fn marker(data_dir: &Path) -> Result<Option<String>, HydrateError> {
    let path = data_dir.join(RESTORE_MARKER);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HydrateError::Marker { path, source }),
    }
}

/// Fails unless the data dir's marker names `snapshot`: the last check before a client
/// starts on restored data.
pub fn require_marker(data_dir: &Path, snapshot: &str) -> Result<(), HydrateError> {
    let found = marker(data_dir)?;
    if found.as_deref() == Some(snapshot) {
        Ok(())
    } else {
        Err(HydrateError::NotVerified {
            snapshot: snapshot.to_owned(),
            data_dir: data_dir.to_path_buf(),
            found,
        })
    }
}

fn describe(selector: &Selector) -> String {
    match selector {
        Selector::Latest => "latest".to_owned(),
        Selector::Id(id) => id.clone(),
    }
}
