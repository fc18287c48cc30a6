//! The snapshot format: what a snapshot looks like in an object store.
//!
//! # Layout under the store's root
//!
//! | key | what | written |
//! |---|---|---|
//! | `packs/<hh>/<pack id>` | a pack: chunk blobs back to back; id = BLAKE3 of its bytes (hex), `<hh>` its first two hex digits | first; immutable, never overwritten |
//! | `manifests/<snapshot id>` | the [`Manifest`], JSON compressed with zstd | after all its packs |
//! | `refs/latest/<generation>` | a [`RefRecord`] naming a snapshot; `<generation>` is 20 digits | last, with a conditional create, after verification |
//!
//! **Chunks** are the unit of identity: a file is cut into chunks, each named by the BLAKE3
//! hash of its raw bytes, and a chunk is stored once per store however many files and
//! snapshots hold it. **Packs** are the unit of storage: new chunks are appended to a pack of
//! about [`PACK_TARGET_SIZE`] before it is uploaded, so a snapshot is thousands of objects,
//! not millions, and a restore reads packs with large ranged GETs (DESIGN: 8-16 MB) however
//! small the chunks are. A blob in a pack is the chunk's raw bytes, or its zstd frame when
//! that is smaller by at least [`ZSTD_MIN_SAVING_PERCENT`] (chain data is mostly hashes and
//! does not compress; headers and indexes do).
//!
//! **Refs.** `latest` is a log of generations: publishing creates
//! `refs/latest/<generation + 1>` with `put_if_absent`, so of two concurrent publishers
//! exactly one wins, and nothing is ever overwritten. The current `latest` is the highest
//! generation. A crash before that create leaves the previous `latest` in place; a manifest
//! without a ref is simply not published.
//!
//! **Snapshot ids** are `<created at, 13-digit Unix millis>-<first 16 hex digits of the
//! manifest body's BLAKE3>`: they sort by time and name their content.

use serde::{Deserialize, Serialize};

/// The manifest format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A pack is uploaded once it holds this much: inside the 8-16 MB range where S3 ranged GETs
/// reach full per-connection throughput, and large enough that a 1 TB snapshot is ~64k
/// objects, small enough that a pack in flight costs little memory.
pub const PACK_TARGET_SIZE: u64 = 16 * 1024 * 1024;

/// A chunk is stored compressed only if zstd saves at least this share of its bytes:
/// smaller savings do not pay for the CPU of decompressing on every restore.
pub const ZSTD_MIN_SAVING_PERCENT: u64 = 10;

pub const PACKS_PREFIX: &str = "packs/";
pub const MANIFESTS_PREFIX: &str = "manifests/";
pub const LATEST_REF_PREFIX: &str = "refs/latest/";

/// A chunk's name: the BLAKE3 hash of its raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkHash(pub [u8; 32]);

impl ChunkHash {
    pub fn of(bytes: &[u8]) -> ChunkHash {
        ChunkHash(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    pub fn from_hex(hex: &str) -> Option<ChunkHash> {
        blake3::Hash::from_hex(hex)
            .ok()
            .map(|h| ChunkHash(*h.as_bytes()))
    }
}

impl std::fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for ChunkHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(deserializer)?;
        ChunkHash::from_hex(&hex)
            .ok_or_else(|| serde::de::Error::custom(format!("not a BLAKE3 hash: {hex:?}")))
    }
}

/// Where a chunk's bytes are: a byte range of a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLocation {
    pub hash: ChunkHash,
    /// Length of the raw chunk.
    pub len: u64,
    /// The pack's id (its key is [`pack_key`]).
    pub pack: String,
    /// Where the blob starts in the pack, and how long it is there.
    pub offset: u64,
    pub stored_len: u64,
    /// The blob is a zstd frame of the chunk.
    pub zstd: bool,
}

/// What a path in the data dir is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryKind {
    File {
        mode: u32,
        size: u64,
        /// Indexes into [`Manifest::chunks`], in file order; their lengths add up to `size`.
        chunks: Vec<u32>,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: String,
    },
}

/// One path of the data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated, no `.` or `..` segments.
    pub path: String,
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// What the snapshot was taken of.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChainPoint {
    pub client: String,
    pub client_version: String,
    pub chain_id: u64,
    pub block_height: u64,
    pub block_hash: String,
}

/// One snapshot: every path, and where every chunk is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub created_at_ms: u64,
    #[serde(flatten)]
    pub chain: ChainPoint,
    /// Entries sorted by path; a directory comes before what it holds.
    pub entries: Vec<Entry>,
    /// Every distinct chunk the files use, each once.
    pub chunks: Vec<ChunkLocation>,
}

/// The body of a `refs/latest/<generation>` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefRecord {
    pub snapshot: String,
    pub generation: u64,
    pub published_at_ms: u64,
}

pub fn pack_key(pack: &str) -> String {
    let shard = pack.get(..2).unwrap_or("00");
    format!("{PACKS_PREFIX}{shard}/{pack}")
}

pub fn manifest_key(snapshot: &str) -> String {
    format!("{MANIFESTS_PREFIX}{snapshot}")
}

/// Generations are zero-padded so that key order is generation order.
pub fn latest_ref_key(generation: u64) -> String {
    format!("{LATEST_REF_PREFIX}{generation:020}")
}

/// The generation a `refs/latest/...` key names.
pub fn generation_of(key: &str) -> Option<u64> {
    key.strip_prefix(LATEST_REF_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_through_hex_and_json() {
        let hash = ChunkHash::of(b"chain data");
        assert_eq!(ChunkHash::from_hex(&hash.to_hex()), Some(hash));
        let json = serde_json::to_string(&hash).unwrap_or_default();
        assert_eq!(json, format!("\"{}\"", hash.to_hex()));
        assert_eq!(ChunkHash::from_hex("zz"), None);
    }

    #[test]
    fn keys() {
        assert_eq!(pack_key("abcdef"), "packs/ab/abcdef");
        assert_eq!(latest_ref_key(7), "refs/latest/00000000000000000007");
        assert_eq!(generation_of(&latest_ref_key(7)), Some(7));
        assert_eq!(generation_of("refs/latest/x"), None);
        assert!(latest_ref_key(10) > latest_ref_key(9));
    }
}
