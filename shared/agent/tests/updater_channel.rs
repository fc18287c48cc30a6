//! The updater channel from the updater's side, around the real, pinned anvil: the test
//! writes commands into the store the way the snapshot updater does and reads the agent's
//! report. A round quiesces (the client stops at a chain point), uploads without publishing
//! and resumes; a duplicate delivery runs once; commands that cannot run (no quiesce, an
//! expired command, an unhealthy node) fail and leave the client running; a restarted agent
//! fails what its predecessor was running; a resume abandons an upload in flight; the agent
//! reports while it hydrates and takes commands only afterwards; an updater without a node
//! id does not start.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use nodefleet_agent::client::{ClientKind, ClientLog};
use nodefleet_agent::health::Thresholds;
use nodefleet_agent::probe::RpcClient;
use nodefleet_agent::{AgentConfig, AgentError, Role, RunReport, Shutdown, ShutdownTrigger};
use nodefleet_ports::fakes::MemoryObjectStore;
use nodefleet_ports::{
    ByteRange, CompletedPart, ListPage, MultipartUpload, ObjectError, ObjectMeta, ObjectStore,
};
use nodefleet_snapshot::catalog;
use nodefleet_snapshot::channel::{
    self, Ack, AckState, AgentPhase, Command, CommandAction, Report, ReportedHealth,
};
use serde_json::json;
use support::{TempDir, eventually, free_port, listener, processes_with_arg};
use tokio::task::JoinHandle;

const NODE: &str = "updater-1";
/// Short, so a test waits tens of milliseconds for the agent to see a command.
const POLL: Duration = Duration::from_millis(50);
const HEARTBEAT: Duration = Duration::from_millis(100);
/// How long anvil may take to start and answer on a loaded machine.
const START: Duration = Duration::from_secs(60);
/// How long one command may take (a clean stop of anvil, an upload of its state file).
const STEP: Duration = Duration::from_secs(30);
/// How long a command stays valid.
const TTL_MS: u64 = 120_000;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn updater_config(dir: &TempDir, data: &str) -> AgentConfig {
    let mut config = AgentConfig::new(ClientKind::Anvil, dir.join(data));
    config.launch.binary = nodefleet_testkit::anvil::binary();
    config.launch.rpc_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    config.launch.log = ClientLog::File(dir.join(&format!("{data}.anvil.log")));
    config.thresholds = Thresholds {
        max_head_age: Duration::from_secs(3),
        min_peers: 1,
    };
    config.health_cache_ttl = Duration::from_millis(50);
    config.role = Role::Updater;
    config.node_id = Some(NODE.to_owned());
    config.channel_poll = POLL;
    config.heartbeat = HEARTBEAT;
    config
}

/// A running agent.
struct Agent {
    rpc: SocketAddr,
    trigger: ShutdownTrigger,
    run: JoinHandle<Result<RunReport, AgentError>>,
}

impl Agent {
    async fn start(config: AgentConfig, store: Arc<dyn ObjectStore>) -> Agent {
        let (listener, _) = listener().await;
        let (trigger, shutdown) = Shutdown::new();
        let rpc = config.launch.rpc_addr;
        let run = tokio::spawn(nodefleet_agent::run_with_listener(
            config, listener, store, shutdown,
        ));
        Agent { rpc, trigger, run }
    }

    /// Whether the client answers JSON-RPC now.
    async fn answers(&self) -> bool {
        RpcClient::new(self.rpc, Duration::from_secs(2))
            .call("eth_blockNumber", json!([]))
            .await
            .is_ok()
    }

    /// Whether anything accepts connections on the client's RPC port.
    async fn port_open(&self) -> bool {
        tokio::net::TcpStream::connect(self.rpc).await.is_ok()
    }

    async fn set_interval_mining(&self, seconds: u64) {
        RpcClient::new(self.rpc, Duration::from_secs(2))
            .call("evm_setIntervalMining", json!([seconds]))
            .await
            .unwrap();
    }

    async fn shut_down(self) -> RunReport {
        self.trigger.fire();
        tokio::time::timeout(Duration::from_secs(30), self.run)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
}

async fn read_report(store: &dyn ObjectStore) -> Option<Report> {
    channel::read_report(store, NODE).await.unwrap()
}

/// Writes a command for `round` issued now.
async fn issue(store: &dyn ObjectStore, round: &str, action: CommandAction) -> Command {
    let command = Command::new(round, action, now_ms(), TTL_MS);
    channel::issue(store, NODE, &command).await.unwrap();
    command
}

/// Waits for a report that satisfies `check`.
async fn report_where(
    store: &Arc<dyn ObjectStore>,
    within: Duration,
    what: &str,
    check: impl Fn(&Report) -> bool,
) -> Report {
    let check = &check;
    eventually(within, what, || {
        let store = store.clone();
        async move { read_report(store.as_ref()).await.filter(check) }
    })
    .await
}

/// Waits for the report to carry `command`'s ack in `state`; the report and the ack.
async fn ack_becomes(
    store: &Arc<dyn ObjectStore>,
    command: &Command,
    state: AckState,
) -> (Report, Ack) {
    let report = report_where(
        store,
        STEP,
        &format!("{} acked {state:?}", command.id),
        |report| report.ack_of(&command.id).is_some_and(|a| a.state == state),
    )
    .await;
    let ack = report.ack_of(&command.id).cloned().unwrap();
    (report, ack)
}

/// Waits until the agent reports its client running and healthy at block 2 or later.
async fn healthy_at_block_2(store: &Arc<dyn ObjectStore>) -> Report {
    report_where(store, START, "a healthy running node at block 2", |r| {
        r.phase == AgentPhase::Running && r.health.healthy && r.health.block >= Some(2)
    })
    .await
}

/// Waits for a report written at least `after` after `since_ms`: the agent has polled a
/// few times since.
async fn report_after(store: &Arc<dyn ObjectStore>, since_ms: u64, after: Duration) -> Report {
    let at = since_ms + u64::try_from(after.as_millis()).unwrap();
    report_where(store, STEP, "a later heartbeat", |r| {
        r.heartbeat_at_ms >= at
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_quiesces_uploads_without_publishing_and_resumes() {
    let dir = TempDir::new("round");
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let agent = Agent::start(updater_config(&dir, "data"), store.clone()).await;
    let first = healthy_at_block_2(&store).await;
    assert_eq!(first.node, NODE);
    assert!(first.agent.starts_with("agent-"), "{}", first.agent);
    assert_eq!(first.ack, None);
    assert_eq!(
        first.hydrated_from, None,
        "an empty store: nothing hydrated"
    );

    // Heartbeats go on while nothing changes.
    let later = report_where(&store, STEP, "a second heartbeat", |r| {
        r.heartbeat_at_ms > first.heartbeat_at_ms
    })
    .await;
    assert_eq!(later.agent, first.agent);
    assert_eq!(later.agent_started_at_ms, first.agent_started_at_ms);

    // Quiesce: the client stops at a chain point.
    let quiesce = issue(store.as_ref(), "r-1", CommandAction::Quiesce).await;
    let (report, quiesced) = ack_becomes(&store, &quiesce, AckState::Done).await;
    let chain = quiesced.chain.clone().unwrap();
    assert!(chain.block_height >= 2, "{chain:?}");
    assert_eq!(chain.client, "anvil");
    assert_eq!(chain.chain_id, 31_337);
    assert!(quiesced.finished_at_ms >= Some(quiesced.started_at_ms));
    assert_eq!(report.phase, AgentPhase::Quiesced);
    assert!(!report.health.healthy);
    assert!(!agent.port_open().await, "the client's RPC port is closed");

    // The same command delivered again is not run again: its ack stays as it was.
    channel::issue(store.as_ref(), NODE, &quiesce)
        .await
        .unwrap();
    let again = report_after(&store, now_ms(), POLL * 4).await;
    assert_eq!(again.ack.as_ref(), Some(&quiesced), "run once");
    assert_eq!(again.phase, AgentPhase::Quiesced);

    // Upload: a verified manifest of the stopped data dir, not published.
    let upload = issue(store.as_ref(), "r-1", CommandAction::Upload).await;
    let (report, uploaded) = ack_becomes(&store, &upload, AckState::Done).await;
    let made = uploaded.upload.clone().unwrap();
    assert!(made.bytes_total > 0 && made.bytes_uploaded > 0, "{made:?}");
    assert!(made.files >= 1 && made.chunks_new >= 1, "{made:?}");
    let manifest = catalog::read_manifest(store.as_ref(), &made.snapshot)
        .await
        .unwrap();
    assert_eq!(manifest.chain, chain);
    assert!(
        manifest.entries.iter().any(|e| e.path == "state.json"),
        "{:?}",
        manifest.entries
    );
    assert!(
        catalog::latest(store.as_ref()).await.unwrap().is_none(),
        "an upload never publishes"
    );
    assert_eq!(
        report.phase,
        AgentPhase::Quiesced,
        "the client stays stopped"
    );
    assert!(!agent.port_open().await);

    // Resume: the client answers again.
    let resume = issue(store.as_ref(), "r-1", CommandAction::Resume).await;
    let (_, resumed) = ack_becomes(&store, &resume, AckState::Done).await;
    assert_eq!(resumed.detail, None, "it was stopped, and started");
    eventually(START, "the client to answer again", || async {
        agent.answers().await.then_some(())
    })
    .await;
    healthy_at_block_2(&store).await;

    // The last report says the agent stopped, and keeps the last ack.
    let run = agent.shut_down().await;
    assert!(run.client_exit.unwrap().is_clean());
    let last = read_report(store.as_ref()).await.unwrap();
    assert_eq!(last.phase, AgentPhase::Stopping);
    assert_eq!(last.ack, Some(resumed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_cannot_run_fail_and_leave_the_client_running() {
    let dir = TempDir::new("refused");
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let agent = Agent::start(updater_config(&dir, "data"), store.clone()).await;
    healthy_at_block_2(&store).await;

    // An upload needs a quiesce for its round by this process.
    let upload = issue(store.as_ref(), "r-2", CommandAction::Upload).await;
    let (report, ack) = ack_becomes(&store, &upload, AckState::Failed).await;
    assert_eq!(ack.detail.as_deref(), Some("not quiesced for round r-2"));
    assert!(!ack.retryable);
    assert_eq!(report.phase, AgentPhase::Running);
    assert!(agent.answers().await);

    // A command past its expiry is answered, not run.
    let expired = Command::new("r-3", CommandAction::Quiesce, now_ms() - 2 * TTL_MS, TTL_MS);
    channel::issue(store.as_ref(), NODE, &expired)
        .await
        .unwrap();
    let (report, ack) = ack_becomes(&store, &expired, AckState::Failed).await;
    assert_eq!(
        ack.detail.as_deref(),
        Some("expired before the agent started it")
    );
    assert_eq!(report.phase, AgentPhase::Running);
    assert!(agent.answers().await, "the client was not stopped");

    // A node that is behind is not quiesced: retryable, and the client keeps running.
    agent.set_interval_mining(0).await;
    report_where(&store, STEP, "an unhealthy node", |r| !r.health.healthy).await;
    let quiesce = issue(store.as_ref(), "r-4", CommandAction::Quiesce).await;
    let (report, ack) = ack_becomes(&store, &quiesce, AckState::Failed).await;
    let detail = ack.detail.clone().unwrap();
    assert!(detail.contains("not healthy"), "{detail}");
    assert!(ack.retryable);
    assert_eq!(report.phase, AgentPhase::Running);
    assert!(agent.answers().await);
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_left_quiesced_by_an_expired_round_is_resumed() {
    let dir = TempDir::new("abandoned");
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let agent = Agent::start(updater_config(&dir, "data"), store.clone()).await;
    healthy_at_block_2(&store).await;
    // A quiesce the updater never follows up: it expires two seconds after it was issued.
    let quiesce = Command::new("r-5", CommandAction::Quiesce, now_ms(), 2_000);
    channel::issue(store.as_ref(), NODE, &quiesce)
        .await
        .unwrap();
    let (report, _) = ack_becomes(&store, &quiesce, AckState::Done).await;
    assert_eq!(report.phase, AgentPhase::Quiesced);
    assert!(!agent.answers().await, "stopped by the quiesce");
    // Resumed and answering again (the phase turns running as anvil starts, before it
    // listens; the health in the report is a probe of it).
    let resumed = report_where(&store, STEP, "the client resumed on its own", |r| {
        r.phase == AgentPhase::Running && r.health.healthy
    })
    .await;
    assert!(resumed.heartbeat_at_ms >= quiesce.expires_at_ms);
    assert!(agent.answers().await);
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_fails_the_command_its_predecessor_was_running() {
    let dir = TempDir::new("restarted");
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let config = updater_config(&dir, "data");
    let first = Agent::start(config.clone(), store.clone()).await;
    healthy_at_block_2(&store).await;
    first.shut_down().await;

    // The previous process died while quiescing: its report says so.
    let quiesce = issue(store.as_ref(), "r-6", CommandAction::Quiesce).await;
    let dead = Report {
        node: NODE.to_owned(),
        agent: "agent-dead".to_owned(),
        agent_started_at_ms: quiesce.issued_at_ms - 10_000,
        heartbeat_at_ms: quiesce.issued_at_ms,
        phase: AgentPhase::Running,
        health: ReportedHealth::default(),
        hydrated_from: None,
        ack: Some(Ack {
            command: quiesce.id.clone(),
            state: AckState::Running,
            detail: None,
            retryable: false,
            started_at_ms: quiesce.issued_at_ms,
            finished_at_ms: None,
            chain: None,
            upload: None,
        }),
    };
    channel::write_report(store.as_ref(), &dead).await.unwrap();

    let second = Agent::start(config, store.clone()).await;
    let (report, ack) = ack_becomes(&store, &quiesce, AckState::Failed).await;
    assert_ne!(report.agent, "agent-dead");
    assert_eq!(
        ack.detail.as_deref(),
        Some("the agent restarted while running it")
    );
    assert_eq!(ack.started_at_ms, quiesce.issued_at_ms);
    // Not run: the client keeps running.
    let report = healthy_at_block_2(&store).await;
    assert_eq!(report.ack_of(&quiesce.id), Some(&ack));
    assert!(second.answers().await);

    // A resume of a running client is a no-op, done.
    let resume = issue(store.as_ref(), "r-6", CommandAction::Resume).await;
    let (report, ack) = ack_becomes(&store, &resume, AckState::Done).await;
    assert_eq!(ack.detail.as_deref(), Some("the client was running"));
    assert_eq!(report.phase, AgentPhase::Running);
    second.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_abandons_a_running_upload() {
    let dir = TempDir::new("abandon");
    let memory = MemoryObjectStore::new();
    let gate = Arc::new(Gate::default());
    let store: Arc<dyn ObjectStore> = Arc::new(GatedStore {
        inner: memory.clone(),
        gate: gate.clone(),
    });
    let agent = Agent::start(updater_config(&dir, "data"), store.clone()).await;
    healthy_at_block_2(&store).await;
    let quiesce = issue(store.as_ref(), "r-5", CommandAction::Quiesce).await;
    ack_becomes(&store, &quiesce, AckState::Done).await;

    // The upload hangs in its first listing of the store.
    gate.close("list", "");
    let upload = issue(store.as_ref(), "r-5", CommandAction::Upload).await;
    let (running, _) = ack_becomes(&store, &upload, AckState::Running).await;
    eventually(STEP, "the upload to reach the store", || async {
        (gate.entered() >= 1).then_some(())
    })
    .await;
    // Heartbeats go on meanwhile.
    let beat = report_where(&store, STEP, "a heartbeat during the upload", |r| {
        r.heartbeat_at_ms > running.heartbeat_at_ms && r.ack_of(&upload.id).is_some()
    })
    .await;
    assert_eq!(
        beat.ack_of(&upload.id).map(|a| a.state),
        Some(AckState::Running)
    );
    assert_eq!(beat.phase, AgentPhase::Quiesced);

    // The updater aborts the round: the upload is dropped and the client resumes.
    let resume = issue(store.as_ref(), "r-5", CommandAction::Resume).await;
    ack_becomes(&store, &resume, AckState::Done).await;
    assert_eq!(gate.dropped(), 1, "the upload's call in flight was dropped");
    eventually(START, "the client to answer again", || async {
        agent.answers().await.then_some(())
    })
    .await;
    // Nothing the upload could have made exists, and nothing is published.
    gate.open();
    let made: Vec<String> = memory
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("manifests/") || k.starts_with("packs/"))
        .collect();
    assert!(made.is_empty(), "{made:?}");
    assert!(catalog::latest(store.as_ref()).await.unwrap().is_none());
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_while_hydrating_and_takes_commands_afterwards() {
    let dir = TempDir::new("hydrating");
    let gate = Arc::new(Gate::default());
    let store: Arc<dyn ObjectStore> = Arc::new(GatedStore {
        inner: MemoryObjectStore::new(),
        gate: gate.clone(),
    });
    // Hydration hangs in resolving `latest`.
    gate.close("list", "refs/");
    let agent = Agent::start(updater_config(&dir, "data"), store.clone()).await;
    let hydrating = report_where(&store, STEP, "a report while hydrating", |r| {
        r.phase == AgentPhase::Hydrating
    })
    .await;
    assert!(!hydrating.health.healthy);
    assert!(
        hydrating
            .health
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("hydrating")),
        "{:?}",
        hydrating.health
    );
    // A command waits for the client: not taken while hydrating.
    let resume = issue(store.as_ref(), "r-7", CommandAction::Resume).await;
    let waiting = report_after(&store, now_ms(), POLL * 4).await;
    assert_eq!(waiting.phase, AgentPhase::Hydrating);
    assert_eq!(waiting.ack, None);
    assert!(!agent.port_open().await);

    gate.open();
    let (report, ack) = ack_becomes(&store, &resume, AckState::Done).await;
    assert_eq!(ack.detail.as_deref(), Some("the client was running"));
    assert_eq!(report.agent, hydrating.agent);
    agent.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_updater_without_a_node_id_does_not_start() {
    let dir = TempDir::new("no-node-id");
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryObjectStore::new());
    let mut config = updater_config(&dir, "data");
    config.node_id = None;
    let data_dir = config.launch.data_dir.clone();
    let agent = Agent::start(config, store.clone()).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), agent.run)
        .await
        .unwrap()
        .unwrap();
    let error = ended.unwrap_err();
    assert!(matches!(error, AgentError::NoNodeId), "{error}");
    assert!(error.to_string().contains("NODEFLEET_NODE_ID"), "{error}");
    assert_eq!(error.exit_code(), 1);
    assert!(!data_dir.exists(), "nothing was hydrated or started");
    assert!(processes_with_arg(&data_dir.to_string_lossy()).is_empty());
    assert!(read_report(store.as_ref()).await.is_none());
}

/// Holds calls of one operation on keys under a prefix until opened, and counts the held
/// calls whose caller went away before the gate opened.
#[derive(Debug)]
struct Gate {
    rule: Mutex<Option<(&'static str, String)>>,
    open: tokio::sync::watch::Sender<bool>,
    entered: AtomicUsize,
    dropped: AtomicUsize,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            rule: Mutex::new(None),
            open: tokio::sync::watch::channel(true).0,
            entered: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        }
    }
}

impl Gate {
    fn close(&self, operation: &'static str, prefix: &str) {
        *self.rule.lock().unwrap() = Some((operation, prefix.to_owned()));
        self.open.send_replace(false);
    }

    fn open(&self) {
        self.open.send_replace(true);
        *self.rule.lock().unwrap() = None;
    }

    fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }

    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }

    async fn pass(&self, operation: &str, key: &str) {
        let held = self
            .rule
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|(op, prefix)| *op == operation && key.starts_with(prefix.as_str()));
        if !held {
            return;
        }
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut waiting = Waiting {
            dropped: &self.dropped,
            done: false,
        };
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
        waiting.done = true;
    }
}

/// Counts a held call dropped before the gate opened.
struct Waiting<'a> {
    dropped: &'a AtomicUsize,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A [`MemoryObjectStore`] behind a [`Gate`].
#[derive(Debug)]
struct GatedStore {
    inner: MemoryObjectStore,
    gate: Arc<Gate>,
}

#[async_trait]
impl ObjectStore for GatedStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        self.gate.pass("put", key).await;
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<ObjectMeta, ObjectError> {
        self.gate.pass("put_if_absent", key).await;
        self.inner.put_if_absent(key, body).await
    }
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Bytes, ObjectError> {
        self.gate.pass("get", key).await;
        self.inner.get(key, range).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        self.gate.pass("head", key).await;
        self.inner.head(key).await
    }
    async fn list(
        &self,
        prefix: &str,
        continuation: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage, ObjectError> {
        self.gate.pass("list", prefix).await;
        self.inner.list(prefix, continuation, max_keys).await
    }
    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.gate.pass("delete", key).await;
        self.inner.delete(key).await
    }
    async fn create_multipart(&self, key: &str) -> Result<MultipartUpload, ObjectError> {
        self.inner.create_multipart(key).await
    }
    async fn upload_part(
        &self,
        upload: &MultipartUpload,
        number: u32,
        body: Bytes,
    ) -> Result<CompletedPart, ObjectError> {
        self.inner.upload_part(upload, number, body).await
    }
    async fn complete_multipart(
        &self,
        upload: &MultipartUpload,
        parts: &[CompletedPart],
    ) -> Result<ObjectMeta, ObjectError> {
        self.inner.complete_multipart(upload, parts).await
    }
    async fn abort_multipart(&self, upload: &MultipartUpload) -> Result<(), ObjectError> {
        self.inner.abort_multipart(upload).await
    }
}
