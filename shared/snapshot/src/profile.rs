//! Client profiles: what each execution client keeps in its data dir, what a snapshot must
//! leave out, which files it rewrites in place, and how it is started and stopped.
//!
//! A snapshot is shared by every node that hydrates from it, so files that make a node
//! *this* node (its p2p identity `nodekey`, `discovery-secret`, JWT secrets) and lock files
//! of a running process are never in it. Files rewritten in place page by page (MDBX's
//! `mdbx.dat` in reth and erigon) are cut into small chunks so an incremental snapshot costs
//! about the pages that changed; everything else (pebble SSTs, freezer files, static files)
//! is written once and never changed, so large chunks cost nothing in dedup and keep the
//! manifest small.

use std::time::Duration;

/// Chunk size of files rewritten in place: 32 KiB. A 4 KiB page change costs one chunk, and
/// a 1% scattered change to a 512 MiB MDBX file (1,310 random 4 KiB pages) touches ~8% of
/// its 32 KiB chunks (1 - e^(-1310/16384)), i.e. ~2% of a 2 GiB snapshot.
pub const IN_PLACE_CHUNK_SIZE: u64 = 32 * 1024;

/// Chunk size of files written once: 4 MiB. They never change, so dedup does not care; the
/// larger the chunk, the smaller the manifest (1.2 TB is ~300k entries) and the cheaper the
/// hashing bookkeeping.
pub const IMMUTABLE_CHUNK_SIZE: u64 = 4 * 1024 * 1024;

/// A file-name pattern: an exact relative path, a file name anywhere, or a suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// The whole relative path (`geth/nodekey`).
    Path(&'static str),
    /// The last segment, wherever it is (`LOCK`).
    Name(&'static str),
    /// The end of the last segment (`.lock`).
    Suffix(&'static str),
}

impl Pattern {
    pub fn matches(&self, relative_path: &str) -> bool {
        let name = relative_path.rsplit('/').next().unwrap_or(relative_path);
        match self {
            Pattern::Path(path) => relative_path == *path,
            Pattern::Name(exact) => name == *exact,
            Pattern::Suffix(suffix) => name.ends_with(suffix),
        }
    }
}

/// Files no client may share: lock files of a running process, JWT secrets.
const COMMON_EXCLUDED: &[Pattern] = &[
    Pattern::Name("LOCK"),
    Pattern::Suffix(".lock"),
    Pattern::Name("jwtsecret"),
    Pattern::Name("jwt.hex"),
];

/// How a client is told where its data and RPC are, and how it stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientProfile {
    pub name: &'static str,
    /// Paths a snapshot leaves out, besides [`COMMON_EXCLUDED`].
    pub excluded: &'static [Pattern],
    /// Files rewritten in place (chunked at [`IN_PLACE_CHUNK_SIZE`]).
    pub in_place: &'static [Pattern],
    /// The signal that stops the client cleanly (it flushes its database on it).
    pub stop_signal: i32,
    /// How long a clean stop may take before the client is killed.
    pub stop_timeout: Duration,
}

impl ClientProfile {
    /// True if `relative_path` must not be in a snapshot.
    pub fn is_excluded(&self, relative_path: &str) -> bool {
        COMMON_EXCLUDED
            .iter()
            .chain(self.excluded)
            .any(|p| p.matches(relative_path))
    }

    /// The chunk size for `relative_path`.
    pub fn chunk_size(&self, relative_path: &str) -> u64 {
        if self.in_place.iter().any(|p| p.matches(relative_path)) {
            IN_PLACE_CHUNK_SIZE
        } else {
            IMMUTABLE_CHUNK_SIZE
        }
    }
}

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// geth: pebble SSTs and the freezer are immutable; its p2p key lives in `geth/nodekey`.
/// SIGINT lets it flush caches; a mainnet node can take minutes, hence the long timeout.
pub const GETH: ClientProfile = ClientProfile {
    name: "geth",
    excluded: &[Pattern::Name("nodekey"), Pattern::Path("geth.ipc")],
    in_place: &[],
    stop_signal: SIGINT,
    stop_timeout: Duration::from_secs(300),
};

/// reth: MDBX (`db/mdbx.dat`) is rewritten in place; static files are immutable.
pub const RETH: ClientProfile = ClientProfile {
    name: "reth",
    excluded: &[
        Pattern::Name("discovery-secret"),
        Pattern::Name("reth.ipc"),
        Pattern::Name("mdbx.lck"),
    ],
    in_place: &[Pattern::Name("mdbx.dat")],
    stop_signal: SIGINT,
    stop_timeout: Duration::from_secs(300),
};

/// erigon: MDBX under `chaindata/` (in place); snapshot segments are immutable.
pub const ERIGON: ClientProfile = ClientProfile {
    name: "erigon",
    excluded: &[Pattern::Name("nodekey"), Pattern::Name("mdbx.lck")],
    in_place: &[Pattern::Name("mdbx.dat")],
    stop_signal: SIGINT,
    stop_timeout: Duration::from_secs(300),
};

/// nethermind: RocksDB (immutable SSTs).
pub const NETHERMIND: ClientProfile = ClientProfile {
    name: "nethermind",
    excluded: &[Pattern::Suffix("node.key.plain")],
    in_place: &[],
    stop_signal: SIGTERM,
    stop_timeout: Duration::from_secs(300),
};

/// besu: RocksDB (immutable SSTs); its node key is `key`.
pub const BESU: ClientProfile = ClientProfile {
    name: "besu",
    excluded: &[Pattern::Path("key")],
    in_place: &[],
    stop_signal: SIGTERM,
    stop_timeout: Duration::from_secs(300),
};

/// anvil (local mode): its state dump is one file rewritten whole.
pub const ANVIL: ClientProfile = ClientProfile {
    name: "anvil",
    excluded: &[],
    in_place: &[],
    stop_signal: SIGTERM,
    stop_timeout: Duration::from_secs(10),
};

/// Any other data dir: nothing excluded but lock files; every file chunked as in place,
/// which is never wrong, only a bigger manifest.
pub const GENERIC: ClientProfile = ClientProfile {
    name: "generic",
    excluded: &[],
    in_place: &[Pattern::Suffix("")],
    stop_signal: SIGTERM,
    stop_timeout: Duration::from_secs(60),
};

pub const ALL: &[&ClientProfile] = &[&GETH, &RETH, &ERIGON, &NETHERMIND, &BESU, &ANVIL, &GENERIC];

/// The profile called `name`.
pub fn by_name(name: &str) -> Option<&'static ClientProfile> {
    ALL.iter().copied().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_and_locks_are_excluded() {
        assert!(GETH.is_excluded("geth/nodekey"));
        assert!(GETH.is_excluded("geth/chaindata/LOCK"));
        assert!(!GETH.is_excluded("geth/chaindata/000123.sst"));
        assert!(RETH.is_excluded("discovery-secret"));
        assert!(RETH.is_excluded("db/mdbx.lck"));
        assert!(ERIGON.is_excluded("nodekey"));
        assert!(BESU.is_excluded("key"));
        assert!(!BESU.is_excluded("database/key"));
        assert!(GENERIC.is_excluded("x/y.lock"));
    }

    #[test]
    fn in_place_files_get_small_chunks() {
        assert_eq!(RETH.chunk_size("db/mdbx.dat"), IN_PLACE_CHUNK_SIZE);
        assert_eq!(
            RETH.chunk_size("static_files/headers_0_499999"),
            IMMUTABLE_CHUNK_SIZE
        );
        assert_eq!(
            GETH.chunk_size("geth/chaindata/000123.sst"),
            IMMUTABLE_CHUNK_SIZE
        );
        assert_eq!(GENERIC.chunk_size("anything"), IN_PLACE_CHUNK_SIZE);
    }

    #[test]
    fn profiles_are_found_by_name() {
        for profile in ALL {
            assert_eq!(by_name(profile.name), Some(*profile));
        }
        assert_eq!(by_name("parity"), None);
    }
}
