//! Cutting a file into chunks: fixed-size spans, read in large blocks and hashed.
//!
//! # Why fixed-size, not content-defined
//!
//! Chain data changes in two ways, and neither moves bytes: databases like MDBX (reth,
//! erigon) rewrite 4 KiB pages **in place**, and everything else (pebble SSTs, freezer and
//! static files) is **written once**, at most appended to. Content-defined chunking (CDC)
//! pays for itself only when bytes are inserted or deleted and the rest of a file shifts.
//! Measured with `cargo run --release -p nodefleet-snapshot --example chunking` (FastCDC
//! 2020 with the same average size, min = avg/4, max = 4 x avg; random data, which is the
//! best case for CDC's boundary detection; one core of this 2-core machine):
//!
//! | scenario | chunking | changed | uploaded |
//! |---|---|---|---|
//! | in place, 1% of 256 MiB in 4 KiB pages | fixed 4 KiB | 2.6 MiB (1.00%) | 2.6 MiB (1.00%) |
//! | | **fixed 32 KiB** | | 19.8 MiB (7.71%) |
//! | | FastCDC avg 32 KiB | | 34.0 MiB (13.27%) |
//! | | fixed 4 MiB | | 256.0 MiB (100%) |
//! | | FastCDC avg 4 MiB | | 255.9 MiB (99.95%) |
//! | immutable, 1 new 16 MiB file of 17 | **fixed 4 MiB** | 16.0 MiB (5.88%) | 16.0 MiB (5.88%) |
//! | | FastCDC avg 4 MiB | | 16.0 MiB (5.88%) |
//! | append 1 MiB to 65.2 MiB | fixed 32 KiB | 1.0 MiB (1.51%) | 1.0 MiB (1.54%) |
//! | | FastCDC avg 32 KiB | | 1.0 MiB (1.55%) |
//! | | **fixed 4 MiB** | | 2.2 MiB (3.29%) |
//! | | FastCDC avg 4 MiB | | 2.1 MiB (3.21%) |
//! | insert 7 bytes at offset 1000 of 64 MiB | fixed 32 KiB | 7 B | 64.0 MiB (100%) |
//! | | FastCDC avg 32 KiB | | 10.7 KiB (0.02%) |
//! | | fixed 4 MiB | | 64.0 MiB (100%) |
//! | | FastCDC avg 4 MiB | | 2.1 MiB (3.23%) |
//!
//! | chunking | chunks of 256 MiB | chunk + BLAKE3 throughput |
//! |---|---|---|
//! | fixed 4 KiB | 65,536 | 2,232 MiB/s |
//! | **fixed 32 KiB** | 8,192 | 4,582 MiB/s |
//! | FastCDC avg 32 KiB | 6,742 | 1,306 MiB/s |
//! | **fixed 4 MiB** | 64 | 4,750 MiB/s |
//! | FastCDC avg 4 MiB | 52 | 1,220 MiB/s |
//!
//! **Decision: fixed-size chunks**, at the profile's size per file
//! ([`crate::profile::ClientProfile::chunk_size`]). For pages rewritten in place, fixed
//! chunks aligned to a multiple of the page size contain each changed page whole, so a
//! change costs exactly the chunks it touches; CDC at the same average uploads 1.7x more
//! (13.3% against 7.7%), because a rewritten page also moves the cut points the gear hash
//! finds in it, merging or splitting its neighbours. For immutable and appended files the
//! two are equal (only the new bytes and the last, partial chunk). CDC wins only for
//! insertions, which chain clients do not do (a compaction writes a new SST, it does not
//! edit one), and it hashes 3.5x slower: a 1 TB data dir would cost ~730 s of CPU to
//! chunk and hash instead of ~210 s, on the small nodes that take snapshots.
//! 32 KiB for in-place files, not 4 KiB: 4 KiB would upload only the changed pages (1.0%
//! instead of 7.7% of the file) but makes 8x more chunks, so an 8x larger manifest (a
//! 500 GB `mdbx.dat` would be 122M chunk entries) and half the hashing throughput; 7.7% of
//! the in-place file is within the benchmark's 3% of the whole data dir (the 512 MiB file
//! is a quarter of it: ~1.9%).
//!
//! # How a file is read
//!
//! Chunks are `chunk_size` spans from offset 0 ([`chunk_spans`]); the last one holds the
//! rest. A file is hashed in [`segments`] (work units of whole chunks, so one large file
//! keeps every core busy), each read with positioned reads in blocks of whole chunks
//! ([`for_each_chunk`]) into one re-used buffer.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::format::ChunkHash;

/// Reads are at least this large: a 32 KiB chunk per `pread` would be ~32k syscalls per GiB;
/// 4 MiB blocks are 256, and 4 MiB is already the largest chunk size of any profile, so a
/// block is a whole number of chunks for every profile.
pub const READ_BLOCK_TARGET: u64 = 4 * 1024 * 1024;

/// A file is hashed in work units (segments) of about this size, so one large file (a
/// 500 GB `mdbx.dat`) is hashed on every core instead of one: 64 MiB is a multiple of every
/// profile's chunk size, large enough that a segment's bookkeeping is noise, and small enough
/// that the segments of one 512 MiB file keep two cores busy to the end.
pub const SEGMENT_TARGET: u64 = 64 * 1024 * 1024;

/// The spans `(offset, len)` of a `size`-byte file cut every `chunk_size` bytes, in order;
/// every span is `chunk_size` long but the last, which holds the rest. An empty file has no
/// spans. A `chunk_size` of 0 is taken as 1 (there is no empty chunk).
pub fn chunk_spans(size: u64, chunk_size: u64) -> impl Iterator<Item = (u64, u64)> {
    let chunk_size = chunk_size.max(1);
    (0..size.div_ceil(chunk_size)).map(move |index| {
        let offset = index * chunk_size;
        (offset, chunk_size.min(size - offset))
    })
}

/// The largest whole multiple of `chunk_size` that is at most `target` (and at least one
/// chunk): the length of the reads and work units that must start on chunk boundaries.
pub fn aligned_len(chunk_size: u64, target: u64) -> u64 {
    let chunk_size = chunk_size.max(1);
    chunk_size * (target / chunk_size).max(1)
}

/// The work units `(offset, len)` a file is hashed in: [`chunk_spans`] of a
/// [`SEGMENT_TARGET`]-sized multiple of `chunk_size`, so every unit starts on a chunk
/// boundary and the units' chunks, in order, are the file's chunks.
pub fn segments(size: u64, chunk_size: u64) -> impl Iterator<Item = (u64, u64)> {
    chunk_spans(size, aligned_len(chunk_size, SEGMENT_TARGET))
}

/// Reads `len` bytes of `file` from `start` (a chunk boundary) in blocks of about
/// [`READ_BLOCK_TARGET`] into `buffer` (re-used, so a segment costs one allocation at
/// most), and calls `visit(offset in the file, chunk bytes)` for each chunk in order.
/// A file shorter than `start + len` is an [`io::ErrorKind::UnexpectedEof`] error: it
/// changed while it was read.
pub fn for_each_chunk(
    file: &File,
    start: u64,
    len: u64,
    chunk_size: u64,
    buffer: &mut Vec<u8>,
    mut visit: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let block_len = aligned_len(chunk_size, READ_BLOCK_TARGET);
    for (block_offset, block_size) in chunk_spans(len, block_len) {
        let block_size = usize::try_from(block_size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "block too large"))?;
        buffer.resize(block_size, 0);
        let block_start = start + block_offset;
        file.read_exact_at(&mut buffer[..block_size], block_start)?;
        for (offset, chunk_len) in chunk_spans(block_size as u64, chunk_size) {
            // Both are within `block_size`, a usize.
            let from = offset as usize;
            let to = from + chunk_len as usize;
            visit(block_start + offset, &buffer[from..to])?;
        }
    }
    Ok(())
}

/// The hashes and lengths of the chunks of `len` bytes of `file` from `start` (a chunk
/// boundary), in order: what a file range holds, for comparing with a manifest.
pub fn hash_chunks(
    file: &File,
    start: u64,
    len: u64,
    chunk_size: u64,
    buffer: &mut Vec<u8>,
) -> io::Result<Vec<(ChunkHash, u64)>> {
    let mut hashes =
        Vec::with_capacity(usize::try_from(len.div_ceil(chunk_size.max(1))).unwrap_or(0));
    for_each_chunk(file, start, len, chunk_size, buffer, |_, bytes| {
        hashes.push((ChunkHash::of(bytes), bytes.len() as u64));
        Ok(())
    })?;
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn spans_cover_the_file_in_order() {
        assert_eq!(chunk_spans(0, 4).count(), 0);
        assert_eq!(chunk_spans(8, 4).collect::<Vec<_>>(), vec![(0, 4), (4, 4)]);
        assert_eq!(
            chunk_spans(9, 4).collect::<Vec<_>>(),
            vec![(0, 4), (4, 4), (8, 1)]
        );
        assert_eq!(chunk_spans(3, 0).count(), 3);
    }

    #[test]
    fn aligned_lengths_are_whole_chunks() {
        assert_eq!(aligned_len(32 * 1024, READ_BLOCK_TARGET), READ_BLOCK_TARGET);
        assert_eq!(aligned_len(3, 10), 9);
        assert_eq!(aligned_len(16, 10), 16);
    }

    proptest! {
        #[test]
        fn segments_are_made_of_whole_chunks(size in 0u64..(1 << 40), shift in 10u32..23) {
            let chunk_size = 1u64 << shift;
            let mut expected = 0;
            for (offset, len) in segments(size, chunk_size) {
                prop_assert_eq!(offset, expected);
                prop_assert_eq!(offset % chunk_size, 0);
                prop_assert!(len > 0);
                expected = offset + len;
            }
            prop_assert_eq!(expected, size);
        }

        #[test]
        fn spans_tile_the_file(size in 0u64..100_000, chunk_size in 1u64..5_000) {
            let spans: Vec<_> = chunk_spans(size, chunk_size).collect();
            let mut expected = 0;
            for &(offset, len) in &spans {
                prop_assert_eq!(offset, expected);
                prop_assert!(len > 0 && len <= chunk_size);
                expected += len;
            }
            prop_assert_eq!(expected, size);
            prop_assert!(spans.iter().rev().skip(1).all(|&(_, len)| len == chunk_size));
        }
    }

    #[test]
    fn chunks_are_read_across_blocks_and_hashed() {
        let dir = std::env::temp_dir().join(format!("nodefleet-chunker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data");
        let bytes: Vec<u8> = (0..(READ_BLOCK_TARGET as usize * 2 + 5000))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        let file = File::open(&path).unwrap();
        let chunk_size = 3 * 1024 * 1024;
        let mut buffer = Vec::new();
        let hashes = hash_chunks(&file, 0, bytes.len() as u64, chunk_size, &mut buffer).unwrap();
        let expected: Vec<_> = chunk_spans(bytes.len() as u64, chunk_size)
            .map(|(o, l)| {
                let slice = &bytes[o as usize..(o + l) as usize];
                (ChunkHash::of(slice), l)
            })
            .collect();
        assert_eq!(hashes, expected);
        // A range from a later chunk boundary sees the same chunks.
        let tail = hash_chunks(
            &file,
            chunk_size,
            bytes.len() as u64 - chunk_size,
            chunk_size,
            &mut buffer,
        )
        .unwrap();
        assert_eq!(tail, expected[1..]);
        // Asking for more than the file holds is an error, not a short chunk.
        let error =
            hash_chunks(&file, 0, bytes.len() as u64 + 1, chunk_size, &mut buffer).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
