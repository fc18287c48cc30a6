//! Fixed-size or content-defined chunking? The measurement behind `src/chunker.rs`.
//!
//! Generates the changes chain data really sees, and for each chunking reports the share of
//! bytes an incremental snapshot would upload (the new version's distinct chunks the old
//! version does not have) and the chunking + BLAKE3 throughput:
//!
//! - **in place**: a 256 MiB file (MDBX's `mdbx.dat`) with 1% of its bytes rewritten as
//!   random page-aligned 4 KiB pages (MDBX's page size);
//! - **immutable**: 16 files of 16 MiB (pebble SSTs, static files) plus one new file;
//! - **append**: a 64 MiB file that grows by 1 MiB (the head of a freezer table);
//! - **insertion**: 7 bytes inserted 1000 bytes into a 64 MiB file, the case
//!   content-defined chunking (CDC) exists for, although no chain client writes that way.
//!
//! FastCDC (2020, normalization level 1) runs with the same average as the fixed size it is
//! compared with, minimum a quarter and maximum four times the average.
//!
//! Run: `cargo run --release -p nodefleet-snapshot --example chunking`

#![allow(clippy::print_stdout)] // a report: the table is the output

use std::collections::HashSet;
use std::time::Instant;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// MDBX's page size: the unit an in-place database rewrites.
const PAGE: usize = 4 * KIB;

/// A chunking under test.
#[derive(Debug, Clone, Copy)]
enum Chunking {
    Fixed(usize),
    Cdc(usize),
}

impl Chunking {
    fn name(self) -> String {
        match self {
            Chunking::Fixed(size) => format!("fixed {}", human(size)),
            Chunking::Cdc(avg) => format!("FastCDC avg {}", human(avg)),
        }
    }

    /// The chunks of `data`: (BLAKE3 hash, length).
    fn chunks(self, data: &[u8]) -> Vec<([u8; 32], usize)> {
        match self {
            Chunking::Fixed(size) => data
                .chunks(size)
                .map(|chunk| (*blake3::hash(chunk).as_bytes(), chunk.len()))
                .collect(),
            Chunking::Cdc(avg) => {
                let min = (avg / 4).min(fastcdc::v2020::MINIMUM_MAX);
                let max = (avg * 4).min(fastcdc::v2020::MAXIMUM_MAX);
                fastcdc::v2020::FastCDC::new(data, min, avg, max)
                    .map(|chunk| {
                        let bytes = &data[chunk.offset..chunk.offset + chunk.length];
                        (*blake3::hash(bytes).as_bytes(), chunk.length)
                    })
                    .collect()
            }
        }
    }
}

fn human(bytes: usize) -> String {
    if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / KIB)
    }
}

/// A byte count for the table: bytes, KiB or MiB with one decimal.
fn amount(bytes: usize) -> String {
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= KIB {
        format!("{:.1} KiB", bytes as f64 / KIB as f64)
    } else {
        format!("{bytes} B")
    }
}

/// splitmix64: a fast, seeded, dependency-free generator for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for word in bytes.chunks_mut(8) {
            let value = self.next().to_le_bytes();
            word.copy_from_slice(&value[..word.len()]);
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.fill(&mut bytes);
        bytes
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Bytes of the distinct chunks of `new` (a list of files) that `old` does not have, and
/// the total size of `new`.
fn uploaded(chunking: Chunking, old: &[&[u8]], new: &[&[u8]]) -> (usize, usize) {
    let have: HashSet<[u8; 32]> = old
        .iter()
        .flat_map(|file| chunking.chunks(file))
        .map(|(hash, _)| hash)
        .collect();
    let mut sent = HashSet::new();
    let mut bytes = 0;
    for file in new {
        for (hash, len) in chunking.chunks(file) {
            if !have.contains(&hash) && sent.insert(hash) {
                bytes += len;
            }
        }
    }
    (bytes, new.iter().map(|file| file.len()).sum())
}

fn report(scenario: &str, changed: usize, chunkings: &[Chunking], old: &[&[u8]], new: &[&[u8]]) {
    for &chunking in chunkings {
        let (bytes, total) = uploaded(chunking, old, new);
        println!(
            "| {scenario} | {} | {} ({:.2}%) | {} ({:.2}%) |",
            chunking.name(),
            amount(changed),
            100.0 * changed as f64 / total as f64,
            amount(bytes),
            100.0 * bytes as f64 / total as f64,
        );
    }
}

fn main() {
    let mut rng = Rng(0x6e6f_6465_666c_6565);
    let small = [Chunking::Fixed(32 * KIB), Chunking::Cdc(32 * KIB)];
    let large = [Chunking::Fixed(4 * MIB), Chunking::Cdc(4 * MIB)];
    let all = [
        Chunking::Fixed(4 * KIB),
        Chunking::Fixed(32 * KIB),
        Chunking::Cdc(32 * KIB),
        Chunking::Fixed(4 * MIB),
        Chunking::Cdc(4 * MIB),
    ];

    println!("| scenario | chunking | changed | uploaded |");
    println!("|---|---|---|---|");

    // In place: 1% of a 256 MiB file as random distinct 4 KiB pages.
    let mdbx = rng.bytes(256 * MIB);
    let mut mdbx_new = mdbx.clone();
    let pages = mdbx.len() / PAGE;
    let mut touched = HashSet::new();
    while touched.len() < mdbx.len() / 100 / PAGE {
        touched.insert(rng.below(pages));
    }
    for &page in &touched {
        rng.fill(&mut mdbx_new[page * PAGE..(page + 1) * PAGE]);
    }
    report(
        "in place, 1% in 4 KiB pages",
        touched.len() * PAGE,
        &all,
        &[&mdbx],
        &[&mdbx_new],
    );

    // Immutable: one new file beside 16 old ones.
    let files: Vec<Vec<u8>> = (0..16).map(|_| rng.bytes(16 * MIB)).collect();
    let added = rng.bytes(16 * MIB);
    let old: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let mut new = old.clone();
    new.push(&added);
    report(
        "immutable, 1 new file of 17",
        added.len(),
        &large,
        &old,
        &new,
    );

    // Append: 1 MiB more at the end of a 64 MiB file that is not a whole number of chunks.
    let table = rng.bytes(64 * MIB + 1_234_567);
    let mut grown = table.clone();
    grown.extend(rng.bytes(MIB));
    report("append 1 MiB", MIB, &all, &[&table], &[&grown]);

    // Insertion: 7 bytes near the start shift everything after them.
    let sst = &table[..64 * MIB];
    let mut shifted = sst[..1000].to_vec();
    shifted.extend(rng.bytes(7));
    shifted.extend(&sst[1000..]);
    for chunkings in [small, large] {
        report("insert 7 bytes at 1000", 7, &chunkings, &[sst], &[&shifted]);
    }

    println!();
    println!("| chunking | chunks of 256 MiB | chunk + BLAKE3 throughput (best of 3) |");
    println!("|---|---|---|");
    for chunking in all {
        let mut best = f64::MAX;
        let mut count = 0;
        for _ in 0..3 {
            let started = Instant::now();
            count = chunking.chunks(&mdbx).len();
            best = best.min(started.elapsed().as_secs_f64());
        }
        println!(
            "| {} | {count} | {:.0} MiB/s |",
            chunking.name(),
            mdbx.len() as f64 / MIB as f64 / best
        );
    }
}
