//! A world for the updater's service tests: an embedded state store, the fake scheduler and
//! an in-memory object store, each behind a fault-injecting wrapper, and an in-process
//! [`FakeAgent`] that answers the channel's commands the way the real agent does, making
//! real snapshots of a small data dir with the real engine.

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodefleet_local::EmbeddedStateStore;
use nodefleet_ports::fakes::{FakeScheduler, MemoryObjectStore};
use nodefleet_ports::faults::{Faults, FaultyObjectStore, FaultyScheduler, FaultyStateStore};
use nodefleet_ports::{
    FleetConfig, ObjectStore, Scheduler, StateStore, TaskStatus, Timestamp, Version, Zone,
};
use nodefleet_snapshot::catalog;
use nodefleet_snapshot::channel::{
    self, Ack, AckState, AgentPhase, CommandAction, Report, ReportedHealth, UploadResult,
};
use nodefleet_snapshot::create::{CreateOptions, create};
use nodefleet_snapshot::format::ChainPoint;
use nodefleet_snapshot::progress::NoProgress;
use nodefleet_snapshot::verify::{VerifyScope, verify};
use nodefleet_updater::round::{RoundSettings, StepTimeouts};
use nodefleet_updater::service::{self, UpdaterPorts, UpdaterRun, UpdaterSettings};

pub const T0: u64 = 1_800_000_000_000;
pub const STEP_TIMEOUT: Duration = Duration::from_secs(600);

pub fn settings(owner: &str) -> UpdaterSettings {
    UpdaterSettings {
        owner: owner.to_owned(),
        round: RoundSettings {
            interval: Duration::from_secs(3600),
            timeouts: StepTimeouts::all(STEP_TIMEOUT),
            max_head_age: Duration::from_secs(60),
            heartbeat_stale: Duration::from_secs(120),
        },
        lease_ttl: Duration::from_secs(300),
        zone: None,
        verify_sample_chunks: 16,
        verify_concurrency: 4,
        keep_snapshots: 2,
        prune_grace: Duration::from_secs(3600),
        max_ticks: 16,
    }
}

pub struct World {
    pub faults: Faults,
    pub state: FaultyStateStore<EmbeddedStateStore>,
    pub fake_scheduler: FakeScheduler,
    pub scheduler: FaultyScheduler<FakeScheduler>,
    pub memory_store: Arc<MemoryObjectStore>,
    pub store: Arc<dyn ObjectStore>,
    pub agent: FakeAgent,
    pub now: Timestamp,
}

impl World {
    pub async fn new(name: &str) -> World {
        let faults = Faults::new();
        let state = FaultyStateStore::new(
            EmbeddedStateStore::in_memory().expect("in-memory store"),
            faults.clone(),
        );
        state
            .save_config(&FleetConfig {
                name: "test".into(),
                zones: vec![Zone::new("z-a"), Zone::new("z-b")],
                serving_nodes: 3,
                healthy_floor: 2,
                storm_percent: 50,
                max_head_age_secs: 60,
                min_peers: 0,
                version: Version::NEW,
            })
            .await
            .expect("config");
        let fake_scheduler = FakeScheduler::with_zones(["z-a", "z-b"], 4);
        fake_scheduler.set_now(Timestamp::from_millis(T0));
        let scheduler = FaultyScheduler::new(fake_scheduler.clone(), faults.clone());
        let memory_store = Arc::new(MemoryObjectStore::new());
        let store: Arc<dyn ObjectStore> = Arc::new(FaultyObjectStore::new(
            MemoryObjectStore::clone(&memory_store),
            faults.clone(),
        ));
        // The agent talks to the store directly: faults are for the updater's calls.
        let agent = FakeAgent::new(memory_store.clone(), name);
        World {
            faults,
            state,
            fake_scheduler,
            scheduler,
            memory_store,
            store,
            agent,
            now: Timestamp::from_millis(T0),
        }
    }

    pub fn ports(&self) -> UpdaterPorts<'_> {
        UpdaterPorts {
            state: &self.state,
            scheduler: &self.scheduler,
            store: &self.store,
        }
    }

    pub fn advance(&mut self, by: Duration) {
        self.now = self.now.plus(by);
        self.fake_scheduler.set_now(self.now);
        self.agent.now_ms = self.now.as_millis();
    }

    /// One updater invocation at the world's `now`.
    pub async fn tick(&self, start: bool) -> Result<UpdaterRun, service::UpdaterError> {
        service::run(self.ports(), &settings("test-owner"), start, self.now).await
    }

    /// Lets the agent act on its channel (if its node runs), then ticks, `rounds` times,
    /// a second apart. Errors of single ticks are tolerated (a fault was injected).
    pub async fn drive(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.agent_step().await;
            let _ = self.tick(false).await;
            self.advance(Duration::from_secs(1));
        }
    }

    /// The agent acts if the scheduler runs its node.
    pub async fn agent_step(&mut self) {
        let Ok(tasks) = self.fake_scheduler.list_tasks().await else {
            return;
        };
        let node = tasks
            .iter()
            .filter(|t| t.role == Some(nodefleet_ports::Role::Updater))
            .filter(|t| matches!(t.last_status, TaskStatus::Pending | TaskStatus::Running))
            .find_map(|t| t.node.clone());
        if let Some(node) = node {
            self.agent.node = node.to_string();
            let _ = self.agent.step().await;
        }
    }

    pub async fn latest(&self) -> Option<String> {
        catalog::latest(self.memory_store.as_ref())
            .await
            .expect("latest")
            .map(|r| r.snapshot)
    }

    /// Invariant 4: `latest`, if any, names a complete snapshot every chunk of which reads
    /// back and hashes right.
    pub async fn assert_latest_is_complete(&self) {
        let Some(latest) = self.latest().await else {
            return;
        };
        let store: Arc<dyn ObjectStore> = self.memory_store.clone();
        let manifest = catalog::read_manifest(store.as_ref(), &latest)
            .await
            .unwrap_or_else(|e| panic!("latest {latest} has no readable manifest: {e}"));
        verify(store, &manifest, &VerifyScope::Everything, 4)
            .await
            .unwrap_or_else(|e| panic!("latest {latest} does not verify: {e}"));
    }
}

/// The agent side of the channel, in process: what `nodefleet agent` does on an updater,
/// with knobs to make it misbehave.
pub struct FakeAgent {
    pub store: Arc<dyn ObjectStore>,
    pub node: String,
    pub agent: String,
    pub data_dir: PathBuf,
    pub block: u64,
    pub healthy: bool,
    pub now_ms: u64,
    pub quiesced: Option<(String, ChainPoint)>,
    pub handled: HashSet<String>,
    pub fail: HashSet<CommandAction>,
    /// Answer nothing (a hung or dead agent).
    pub silent: bool,
    pub last_ack: Option<Ack>,
    pub quiesces: usize,
}

impl FakeAgent {
    pub fn new(store: Arc<dyn ObjectStore>, name: &str) -> FakeAgent {
        let data_dir = std::env::temp_dir().join(format!(
            "nf-updater-{name}-{}",
            nodefleet_ports::model::unique_suffix()
        ));
        std::fs::create_dir_all(data_dir.join("chaindata")).expect("data dir");
        let agent = FakeAgent {
            store,
            node: String::new(),
            agent: "agent-1".into(),
            data_dir,
            block: 100,
            healthy: true,
            now_ms: T0,
            quiesced: None,
            handled: HashSet::new(),
            fail: HashSet::new(),
            silent: false,
            last_ack: None,
            quiesces: 0,
        };
        agent.write_chain_data();
        agent
    }

    /// The chain "advances": the data dir changes with the block.
    pub fn write_chain_data(&self) {
        // A file that changes with every block, and one that never does: an incremental
        // upload re-sends the first only. Both incompressible, as chain data is.
        std::fs::write(
            self.data_dir.join("chaindata/state.bin"),
            noise(self.block, 64 * 1024),
        )
        .expect("write");
        std::fs::write(
            self.data_dir.join("chaindata/frozen.bin"),
            noise(0, 1024 * 1024),
        )
        .expect("write");
    }

    /// A restarted agent process: a new id, nothing in memory.
    pub fn restart(&mut self) {
        self.agent = format!("{}-restarted", self.agent);
        self.quiesced = None;
        self.handled.clear();
    }

    fn chain(&self) -> ChainPoint {
        ChainPoint {
            client: "anvil".into(),
            client_version: "1.7.1".into(),
            chain_id: 31337,
            block_height: self.block,
            block_hash: format!("0x{:064x}", self.block),
        }
    }

    pub async fn step(&mut self) -> Result<(), nodefleet_snapshot::error::SnapshotError> {
        if self.silent {
            return Ok(());
        }
        let previous = channel::read_report(self.store.as_ref(), &self.node).await?;
        if let Some(command) = channel::read_command(self.store.as_ref(), &self.node).await?
            && !self.handled.contains(&command.id)
        {
            self.handled.insert(command.id.clone());
            let earlier = previous
                .as_ref()
                .and_then(|r| r.ack_of(&command.id).cloned());
            let ack = match earlier {
                Some(ack) if ack.state != AckState::Running => ack,
                Some(_) if previous.as_ref().is_some_and(|r| r.agent != self.agent) => self.ack(
                    &command.id,
                    Err("the agent restarted while running it".into()),
                ),
                // A resume is never refused: a stopped client must not stay stopped.
                _ if command.is_expired(self.now_ms) && command.action != CommandAction::Resume => {
                    self.ack(
                        &command.id,
                        Err("expired before the agent started it".into()),
                    )
                }
                _ => self.run(&command.round, command.action, &command.id).await,
            };
            self.last_ack = Some(ack);
        }
        let report = Report {
            node: self.node.clone(),
            agent: self.agent.clone(),
            agent_started_at_ms: T0,
            heartbeat_at_ms: self.now_ms,
            phase: if self.quiesced.is_some() {
                AgentPhase::Quiesced
            } else {
                AgentPhase::Running
            },
            health: ReportedHealth {
                healthy: self.healthy && self.quiesced.is_none(),
                block: Some(self.block),
                head_age_secs: Some(1),
                reason: None,
            },
            hydrated_from: None,
            ack: self.last_ack.clone(),
        };
        channel::write_report(self.store.as_ref(), &report).await
    }

    async fn run(&mut self, round: &str, action: CommandAction, id: &str) -> Ack {
        if self.fail.contains(&action) {
            return self.ack(id, Err(format!("{} was told to fail", action.as_str())));
        }
        match action {
            CommandAction::Quiesce => {
                self.quiesces += 1;
                let chain = self.chain();
                self.quiesced = Some((round.to_owned(), chain.clone()));
                let mut ack = self.ack(id, Ok(()));
                ack.chain = Some(chain);
                ack
            }
            CommandAction::Upload => {
                let Some((quiesced_round, chain)) = self.quiesced.clone() else {
                    return self.ack(id, Err(format!("not quiesced for round {round}")));
                };
                if quiesced_round != round {
                    return self.ack(id, Err(format!("not quiesced for round {round}")));
                }
                match self.upload(chain).await {
                    Ok(upload) => {
                        let mut ack = self.ack(id, Ok(()));
                        ack.upload = Some(upload);
                        ack
                    }
                    Err(error) => self.ack(id, Err(error.to_string())),
                }
            }
            CommandAction::Resume => {
                self.quiesced = None;
                self.block += 10;
                self.write_chain_data();
                self.ack(id, Ok(()))
            }
        }
    }

    async fn upload(
        &self,
        chain: ChainPoint,
    ) -> Result<UploadResult, nodefleet_snapshot::error::SnapshotError> {
        let summary = create(
            self.store.clone(),
            &self.data_dir,
            &CreateOptions {
                profile: nodefleet_snapshot::profile::by_name("anvil").expect("anvil profile"),
                chain,
                concurrency: 2,
                now_ms: self.now_ms,
                publish: false,
            },
            Arc::new(NoProgress),
        )
        .await?;
        Ok(UploadResult::from(&summary))
    }

    fn ack(&self, id: &str, result: Result<(), String>) -> Ack {
        let failed = result.is_err();
        Ack {
            command: id.to_owned(),
            state: if failed {
                AckState::Failed
            } else {
                AckState::Done
            },
            detail: result.err(),
            retryable: false,
            started_at_ms: self.now_ms,
            finished_at_ms: Some(self.now_ms),
            chain: None,
            upload: None,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// `len` pseudo-random bytes from `seed` (xorshift): incompressible, reproducible.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
