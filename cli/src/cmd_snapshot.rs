//! `nodefleet snapshot ...`: create, restore, list, verify and prune chain-data snapshots in
//! an `s3://` or `file://` store, and `snapshot round --stack NAME`: start a deployed
//! stack's snapshot round now (`nodefleet_ops::round`, the updater function's own service
//! with its settings from the stack's outputs). Progress bars on a terminal; `--json` prints a summary
//! object on stdout for scripts and benchmarks. Failures exit non-zero with the file and
//! offset named (the engine's errors).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use nodefleet_ports::Timestamp;
use nodefleet_snapshot::catalog::{self, Selector};
use nodefleet_snapshot::create::{self, CreateOptions};
use nodefleet_snapshot::format::ChainPoint;
use nodefleet_snapshot::progress::Progress;
use nodefleet_snapshot::restore::{self, RestoreOptions};
use nodefleet_snapshot::verify::{self, VerifyScope};
use nodefleet_snapshot::{list, profile, prune};
use serde::Serialize;

use nodefleet_updater::service::UpdaterPorts;

use crate::stack::{Fleet, FleetArg};
use crate::stores::open_store;

/// Default uploads / downloads in flight: enough to keep a 10 Gbps link busy with 16 MiB
/// packs, few enough that memory stays near concurrency x 16 MiB.
const DEFAULT_CONCURRENCY: usize = 8;

/// Default prune grace: an upload in flight (packs written, manifest not yet) younger than
/// this is safe. Creating a 1.2 TB snapshot takes well under a day.
const DEFAULT_PRUNE_GRACE_SECS: u64 = 24 * 60 * 60;

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    action: SnapshotAction,
}

#[derive(Debug, Args)]
struct StoreArg {
    /// Where snapshots live: s3://bucket/prefix or file:///absolute/path
    #[arg(long, env = "NODEFLEET_STORE")]
    store: String,
}

#[derive(Debug, Subcommand)]
enum SnapshotAction {
    /// Upload a data dir as a new snapshot (only chunks the store lacks), verify it, publish it
    /// as `latest`; prints the snapshot id.
    Create {
        /// The data dir (stop the client first, or quiesce it).
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        store: StoreArg,
        /// Client profile: geth, reth, erigon, nethermind, besu, anvil, generic.
        #[arg(long, default_value = "generic")]
        client: String,
        #[arg(long, default_value = "")]
        client_version: String,
        #[arg(long, default_value_t = 0)]
        chain_id: u64,
        #[arg(long, default_value_t = 0)]
        block_height: u64,
        #[arg(long, default_value = "")]
        block_hash: String,
        /// Upload and verify, but do not move `latest`.
        #[arg(long)]
        no_publish: bool,
        #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
        concurrency: usize,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Fill a data dir from a snapshot: streamed, verified, resumable; files the snapshot
    /// does not have are removed.
    Restore {
        #[command(flatten)]
        store: StoreArg,
        /// A snapshot id, or `latest`.
        #[arg(long, default_value = "latest")]
        id: String,
        #[arg(long)]
        to: PathBuf,
        /// Ranged GETs in flight.
        #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
        concurrency: usize,
        #[arg(long)]
        json: bool,
    },
    /// The snapshots in the store, oldest first.
    List {
        #[command(flatten)]
        store: StoreArg,
        #[arg(long)]
        json: bool,
    },
    /// Read every chunk of a snapshot back and check it.
    Verify {
        #[command(flatten)]
        store: StoreArg,
        #[arg(long, default_value = "latest")]
        id: String,
        #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
        concurrency: usize,
        #[arg(long)]
        json: bool,
    },
    /// Start a snapshot round now: of a deployed stack (`--stack`), as the snapshot-updater
    /// function's start-round schedule does (then its one-minute tick carries it on), or of
    /// the local fleet (`--dir`), whose loop carries it on.
    Round {
        #[command(flatten)]
        fleet: FleetArg,
        #[arg(long)]
        json: bool,
    },
    /// Delete all but the newest published snapshots and the packs only they use.
    Prune {
        #[command(flatten)]
        store: StoreArg,
        /// How many published snapshots to keep.
        #[arg(long)]
        keep: usize,
        /// Never delete anything younger than this (seconds): uploads in flight.
        #[arg(long, default_value_t = DEFAULT_PRUNE_GRACE_SECS)]
        grace_secs: u64,
        /// Say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    match args.action {
        SnapshotAction::Create {
            from,
            store,
            client,
            client_version,
            chain_id,
            block_height,
            block_hash,
            no_publish,
            concurrency,
            json,
        } => {
            let profile = profile::by_name(&client).with_context(|| {
                let names: Vec<_> = profile::ALL.iter().map(|p| p.name).collect();
                format!("unknown client {client:?} (known: {})", names.join(", "))
            })?;
            let store = open_store(&store.store).await?;
            let options = CreateOptions {
                profile,
                chain: ChainPoint {
                    client: profile.name.to_owned(),
                    client_version,
                    chain_id,
                    block_height,
                    block_hash,
                },
                concurrency: concurrency.max(1),
                now_ms: Timestamp::now().as_millis(),
                publish: !no_publish,
            };
            let bar = progress_bar("hashing and uploading");
            let summary = create::create(store, &from, &options, bar.clone()).await?;
            bar.finish();
            if json {
                print_json(&summary)?;
            } else {
                print_line(&format!(
                    "{}\n{} files, {} chunks ({} new), {} bytes: {} uploaded, {} already stored; {:.1} s",
                    summary.snapshot,
                    summary.files,
                    summary.chunks,
                    summary.chunks_new,
                    summary.bytes_total,
                    summary.bytes_transferred,
                    summary.bytes_skipped,
                    summary.seconds
                ));
            }
            Ok(())
        }
        SnapshotAction::Restore {
            store,
            id,
            to,
            concurrency,
            json,
        } => {
            let store = open_store(&store.store).await?;
            let options = RestoreOptions {
                concurrency: concurrency.max(1),
                ..RestoreOptions::default()
            };
            let bar = progress_bar("restoring");
            let summary =
                restore::restore(store, &Selector::parse(&id), &to, &options, bar.clone()).await?;
            bar.finish();
            if json {
                print_json(&summary)?;
            } else {
                print_line(&format!(
                    "restored {} into {}: {} files, {} bytes ({} fetched, {} already there); {:.1} s, {:.0} MB/s",
                    summary.snapshot,
                    to.display(),
                    summary.files,
                    summary.bytes_total,
                    summary.bytes_transferred,
                    summary.bytes_skipped,
                    summary.seconds,
                    summary.throughput_bytes_per_sec / 1e6
                ));
            }
            Ok(())
        }
        SnapshotAction::List { store, json } => {
            let store = open_store(&store.store).await?;
            let snapshots = list::list(store.as_ref()).await?;
            if json {
                print_json(&snapshots)?;
            } else {
                for snapshot in &snapshots {
                    print_line(&serde_json::to_string(snapshot)?);
                }
            }
            Ok(())
        }
        SnapshotAction::Verify {
            store,
            id,
            concurrency,
            json,
        } => {
            let store = open_store(&store.store).await?;
            let snapshot = catalog::resolve(store.as_ref(), &Selector::parse(&id)).await?;
            let manifest = catalog::read_manifest(store.as_ref(), &snapshot).await?;
            let report = verify::verify(
                store,
                &manifest,
                &VerifyScope::Everything,
                concurrency.max(1),
            )
            .await?;
            if json {
                print_json(&report)?;
            } else {
                print_line(&format!(
                    "{}: {} chunks in {} packs verified ({} bytes read)",
                    report.snapshot, report.chunks_checked, report.packs, report.bytes_read
                ));
            }
            Ok(())
        }
        SnapshotAction::Round { fleet, json } => {
            let stack = match fleet.fleet() {
                Fleet::Stack(stack) => stack,
                Fleet::Local(dir) => {
                    let answer =
                        crate::local_fleet::call(&dir, http::Method::POST, "/api/snapshot/round")
                            .await?;
                    return crate::local_fleet::print_answer(&answer, json);
                }
            };
            let adapters = crate::stack::open(&stack).await?;
            let settings = adapters
                .settings
                .updater
                .settings(&crate::stack::operator());
            let ports = UpdaterPorts {
                state: &adapters.state,
                scheduler: &adapters.updater_scheduler,
                store: &adapters.store,
            };
            let started = nodefleet_ops::start_round(ports, &settings, Timestamp::now()).await?;
            if json {
                print_json(&started)?;
            } else {
                print_line(&started.render());
            }
            Ok(())
        }
        SnapshotAction::Prune {
            store,
            keep,
            grace_secs,
            dry_run,
            json,
        } => {
            let store = open_store(&store.store).await?;
            let summary = prune::prune(
                store.as_ref(),
                keep,
                Duration::from_secs(grace_secs),
                Timestamp::now().as_millis(),
                dry_run,
            )
            .await?;
            if json {
                print_json(&summary)?;
            } else {
                print_line(&serde_json::to_string(&summary)?);
            }
            Ok(())
        }
    }
}

/// A byte-progress bar on stderr when it is a terminal; silent otherwise.
fn progress_bar(what: &'static str) -> Arc<BarProgress> {
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what);
        Some(bar)
    } else {
        None
    };
    Arc::new(BarProgress { bar })
}

/// Engine progress drawn as an indicatif bar (or nothing).
#[derive(Debug)]
struct BarProgress {
    bar: Option<ProgressBar>,
}

impl BarProgress {
    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for BarProgress {
    fn set_total(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(bytes);
        }
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    print_line(&serde_json::to_string_pretty(value)?);
    Ok(())
}

#[allow(clippy::print_stdout)] // the command's output
fn print_line(line: &str) {
    println!("{line}");
}
