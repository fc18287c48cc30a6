//! The snapshot-updater Lambda: settings from the environment ([`UpdaterEnv`]), the AWS
//! adapters built once per sandbox ([`UpdaterFunction::new`]), and each EventBridge event
//! handed to [`nodefleet_updater::service::run`] ([`handle_event`], generic over the ports so
//! tests run it on fakes). The service logs every step and transition with its reason; this
//! adds one summary line per invocation (the round's id and step, the rounds that finished)
//! and writes the updater's metrics to stdout as EMF documents
//! ([`nodefleet_updater::metrics`]).
//!
//! # Events
//!
//! Two EventBridge rules invoke the function, each with a constant input:
//!
//! | rule | input | what it does |
//! |---|---|---|
//! | `rate(4 hours)` (the round interval) | `{"action":"start-round"}` | starts a round now, unless one runs; then advances it like a tick |
//! | `rate(1 minute)` | `{"action":"tick"}` | advances the running round (a round is also started when `ROUND_INTERVAL_SECS` has passed since the last one started, so a lost schedule event delays a round by a minute, not four hours) |
//!
//! Any other payload (a raw `Scheduled Event`, an empty object) is a tick ([`UpdaterEvent`]).
//! The lease holder is the Lambda request id, so concurrent invocations (EventBridge
//! delivers at least once) find the lease held and answer `busy`.
//!
//! # Settings
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `TABLE_NAME` | the DynamoDB table | required |
//! | `FLEET_NAME` | the fleet (key prefix, task group `nodefleet:<fleet>`, tags) | required |
//! | `CLUSTER`, `TASK_DEFINITION`, `CONTAINER_NAME`, `NETWORK_MODE`, `SUBNETS_BY_ZONE`, `SECURITY_GROUPS`, `CAPACITY_PROVIDER`, `NODE_CLIENT` | how the updater task is launched: read by [`LaunchEnv`], exactly as the health reactor reads them | see [`crate::launch`] |
//! | `SNAPSHOT_BUCKET` | the chain-data bucket (snapshots and the updater channel) | required, unless `SNAPSHOT_STORE` |
//! | `SNAPSHOT_PREFIX` | key prefix in the bucket | none |
//! | `SNAPSHOT_STORE` | instead of the two above: `s3://bucket[/prefix]`, the URL the agents get as `NODEFLEET_STORE` | none |
//! | `UPDATER_ZONE` | where the updater task runs | the fleet config's first zone |
//! | `ROUND_INTERVAL_SECS` | a round starts this long after the last one started | `14400` (4 h, the schedule's rate) |
//! | `LEASE_TTL_SECS` | how long an invocation holds the lease | `960` ([`DEFAULT_LEASE_TTL_SECS`]) |
//! | `VERIFY_SAMPLE_CHUNKS` | chunks read back and hashed before publishing (every pack is checked regardless) | `256` ([`DEFAULT_VERIFY_SAMPLE_CHUNKS`]) |
//! | `VERIFY_CONCURRENCY` | store requests in flight while verifying | `32` ([`DEFAULT_VERIFY_CONCURRENCY`]) |
//! | `KEEP_SNAPSHOTS` | published snapshots retention keeps | `3` |
//! | `PRUNE_GRACE_SECS` | unpublished uploads and packs younger than this are never pruned; must exceed the upload step's timeout | `14400` (4 h, over the 3 h upload timeout) |
//! | `MAX_HEAD_AGE_SECS` | the updater is synced when its head is at most this old | `60` |
//! | `HEARTBEAT_STALE_SECS` | an agent report with an older heartbeat is not believed | `120` |
//! | `STEP_TIMEOUT_<STEP>_SECS` | one step's timeout, `<STEP>` one of `ENSURE_NODE`, `WAIT_SYNCED`, `QUIESCE`, `UPLOAD`, `VERIFY`, `PUBLISH`, `RESUME`, `PRUNE` | [`StepTimeouts::default`] (15 min, 2 h, 10 min, 3 h, 30 min, 10 min, 10 min, 30 min) |
//!
//! Every duration is a whole, positive number of seconds.
//!
//! # Answer
//!
//! `{"outcome":"busy","event":..,"holder":<request id>,"until_ms":..}` when another
//! invocation holds the lease, else `{"outcome":"ran","event":..,"round":{"id","step","node"}
//! | null,"finished":[round summaries],"latest":{"snapshot","block_height"} | null,
//! "transitions":n}` (`round` is the one still running, `null` when idle; `transitions`
//! counts the memory's saved changes, 0 when nothing moved). `event` is `start-round` or
//! `tick`.
//!
//! # Error policy
//!
//! A bad setting fails the function at init with the variable's name. An
//! [`UpdaterError`] (the state store, scheduler or object store could not be read while
//! observing, a save lost to a concurrent writer, an unreadable memory) fails the invocation,
//! so the next minute's tick tries again; the round stays where it was saved. Effects that
//! fail are not errors: the round retries or aborts them within each step's timeout.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use nodefleet_aws::ecs::EcsSchedulerConfig;
use nodefleet_aws::{DynamoStateStore, EcsScheduler, S3ObjectStore};
use nodefleet_ports::{ObjectStore, StoreUrl, Timestamp, Zone};
use nodefleet_updater::metrics::documents;
use nodefleet_updater::round::{RoundOutcome, RoundSettings, Step, StepTimeouts};
use nodefleet_updater::service::{self, UpdaterError, UpdaterPorts, UpdaterRun, UpdaterSettings};
use serde_json::{Value, json};

use crate::env::{Env, EnvError};
use crate::function::{self, Handled, InitError, answer};
use crate::launch::LaunchEnv;
pub use crate::reactor::DEFAULT_MAX_HEAD_AGE_SECS;

/// The event input that asks for a round now (the 4-hour schedule's constant input).
pub const START_ROUND_ACTION: &str = "start-round";
/// The round interval when `ROUND_INTERVAL_SECS` is not set: DESIGN's "every 4 hours".
pub const DEFAULT_ROUND_INTERVAL_SECS: u64 = 4 * 60 * 60;
/// The function timeout infra gives the updater (Lambda's maximum): a tick that verifies a
/// large snapshot needs minutes.
pub const FUNCTION_TIMEOUT_SECS: u64 = 900;
/// The lease TTL when `LEASE_TTL_SECS` is not set: the function timeout plus a minute. The
/// service takes `now` once per invocation, so the lease (renewals included) ends `ttl`
/// after the invocation began; a TTL above the function timeout means it cannot expire while
/// its invocation still runs (Lambda has killed it by then), and the minute covers clock skew
/// between Lambda hosts. A tick that dies costs the next one at most 16 minutes.
pub const DEFAULT_LEASE_TTL_SECS: u64 = FUNCTION_TIMEOUT_SECS + 60;
/// Chunks verification samples when `VERIFY_SAMPLE_CHUNKS` is not set. The agent's upload
/// already read back every pack it wrote, and verification checks that every pack is there
/// and long enough; the sample is an independent check that what the store holds hashes
/// right, aimed at systematic damage (a bad encoder, wrong offsets), which touches many
/// chunks: 256 random chunks miss a 2% share of bad chunks with probability 0.6% (a 1%
/// share: 8%). It reads at most 256 x 4 MiB (the largest chunk of any profile) = 1 GiB,
/// seconds in a Lambda at any snapshot size.
pub const DEFAULT_VERIFY_SAMPLE_CHUNKS: u64 = 256;
/// Requests in flight while verifying when `VERIFY_CONCURRENCY` is not set. Verification is
/// mostly one HEAD per pack (a 1.2 TB snapshot has ~75,000 packs of 16 MiB), latency-bound:
/// 32 in flight do them in about a minute at 25 ms each; the sampled ranged GETs (at most
/// 16 MiB) then hold at most 512 MiB, which the 1 GiB of memory infra gives covers.
pub const DEFAULT_VERIFY_CONCURRENCY: usize = 32;
/// Published snapshots retention keeps when `KEEP_SNAPSHOTS` is not set: the newest and two
/// to fall back to (a node can be hydrated from an older one if the newest proves bad).
pub const DEFAULT_KEEP_SNAPSHOTS: usize = 3;
/// The prune grace when `PRUNE_GRACE_SECS` is not set: an hour more than the upload step's
/// default timeout (3 h), so an upload still in flight is never pruned from under it.
pub const DEFAULT_PRUNE_GRACE_SECS: u64 = 4 * 60 * 60;
/// How old an agent report may be when `HEARTBEAT_STALE_SECS` is not set: the agent writes
/// its report every few seconds, so two minutes without one means it is gone or hung, and is
/// still longer than the one-minute tick that reads it.
pub const DEFAULT_HEARTBEAT_STALE_SECS: u64 = 120;
/// Ticks per invocation (the service's `max_ticks`): a round has eight steps and a tick
/// moves it at most one or two, so this lets a responsive round go as far as it can in one
/// invocation, and bounds the work of one.
pub const MAX_TICKS: usize = 16;

/// Each step's timeout variable.
pub const STEP_TIMEOUT_VARIABLES: [(Step, &str); 8] = [
    (Step::EnsureNode, "STEP_TIMEOUT_ENSURE_NODE_SECS"),
    (Step::WaitSynced, "STEP_TIMEOUT_WAIT_SYNCED_SECS"),
    (Step::Quiesce, "STEP_TIMEOUT_QUIESCE_SECS"),
    (Step::Upload, "STEP_TIMEOUT_UPLOAD_SECS"),
    (Step::Verify, "STEP_TIMEOUT_VERIFY_SECS"),
    (Step::Publish, "STEP_TIMEOUT_PUBLISH_SECS"),
    (Step::Resume, "STEP_TIMEOUT_RESUME_SECS"),
    (Step::Prune, "STEP_TIMEOUT_PRUNE_SECS"),
];

/// What an event asks for. See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdaterEvent {
    /// Start a round now (if none runs), then advance it.
    StartRound,
    /// Advance the running round (or start one that is due).
    Tick,
}

impl UpdaterEvent {
    /// `{"action":"start-round"}` is a start; anything else is a tick.
    pub fn parse(payload: &Value) -> UpdaterEvent {
        match payload.get("action").and_then(Value::as_str) {
            Some(START_ROUND_ACTION) => UpdaterEvent::StartRound,
            _ => UpdaterEvent::Tick,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UpdaterEvent::StartRound => START_ROUND_ACTION,
            UpdaterEvent::Tick => "tick",
        }
    }
}

/// Everything the updater Lambda reads from its environment. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdaterEnv {
    pub table: String,
    pub fleet: String,
    pub scheduler: EcsSchedulerConfig,
    pub client: String,
    /// The chain-data store (always `s3://`).
    pub store: StoreUrl,
    pub zone: Option<Zone>,
    pub round: RoundSettings,
    pub lease_ttl: Duration,
    pub verify_sample_chunks: u64,
    pub verify_concurrency: usize,
    pub keep_snapshots: usize,
    pub prune_grace: Duration,
}

impl UpdaterEnv {
    pub fn from_env(env: Env<'_>) -> Result<UpdaterEnv, EnvError> {
        let table = env.required("TABLE_NAME")?;
        let fleet = env.required("FLEET_NAME")?;
        let LaunchEnv { scheduler, client } = LaunchEnv::from_env(env, &fleet)?;
        let store = store_from(env)?;
        let zone = env.optional("UPDATER_ZONE").map(Zone::new);
        let mut timeouts = StepTimeouts::default();
        for (step, name) in STEP_TIMEOUT_VARIABLES {
            let slot = timeout_of(&mut timeouts, step);
            *slot = seconds(env, name, slot.as_secs())?;
        }
        let round = RoundSettings {
            interval: seconds(env, "ROUND_INTERVAL_SECS", DEFAULT_ROUND_INTERVAL_SECS)?,
            timeouts,
            max_head_age: seconds(env, "MAX_HEAD_AGE_SECS", DEFAULT_MAX_HEAD_AGE_SECS)?,
            heartbeat_stale: seconds(env, "HEARTBEAT_STALE_SECS", DEFAULT_HEARTBEAT_STALE_SECS)?,
        };
        let lease_ttl = seconds(env, "LEASE_TTL_SECS", DEFAULT_LEASE_TTL_SECS)?;
        let verify_sample_chunks = env.parsed(
            "VERIFY_SAMPLE_CHUNKS",
            DEFAULT_VERIFY_SAMPLE_CHUNKS,
            "a whole number of chunks (0: check only that every pack is there)",
        )?;
        let verify_concurrency = at_least_one(
            env,
            "VERIFY_CONCURRENCY",
            DEFAULT_VERIFY_CONCURRENCY,
            "a whole number of requests, at least 1",
        )?;
        let keep_snapshots = at_least_one(
            env,
            "KEEP_SNAPSHOTS",
            DEFAULT_KEEP_SNAPSHOTS,
            "a whole number of snapshots, at least 1 (the published one is always kept)",
        )?;
        let prune_grace = seconds(env, "PRUNE_GRACE_SECS", DEFAULT_PRUNE_GRACE_SECS)?;
        if prune_grace <= round.timeouts.upload {
            return Err(Env::invalid(
                "PRUNE_GRACE_SECS",
                &prune_grace.as_secs().to_string(),
                &format!(
                    "more than the upload step's timeout ({} s), or retention could delete the \
                     packs of an upload still running",
                    round.timeouts.upload.as_secs()
                ),
            ));
        }
        Ok(UpdaterEnv {
            table,
            fleet,
            scheduler,
            client,
            store,
            zone,
            round,
            lease_ttl,
            verify_sample_chunks,
            verify_concurrency,
            keep_snapshots,
            prune_grace,
        })
    }

    /// The service's settings for one invocation by `owner` (the request id).
    pub fn settings(&self, owner: &str) -> UpdaterSettings {
        UpdaterSettings {
            owner: owner.to_owned(),
            round: self.round.clone(),
            lease_ttl: self.lease_ttl,
            zone: self.zone.clone(),
            verify_sample_chunks: self.verify_sample_chunks,
            verify_concurrency: self.verify_concurrency,
            keep_snapshots: self.keep_snapshots,
            prune_grace: self.prune_grace,
            max_ticks: MAX_TICKS,
        }
    }
}

fn timeout_of(timeouts: &mut StepTimeouts, step: Step) -> &mut Duration {
    match step {
        Step::EnsureNode => &mut timeouts.ensure_node,
        Step::WaitSynced => &mut timeouts.wait_synced,
        Step::Quiesce => &mut timeouts.quiesce,
        Step::Upload => &mut timeouts.upload,
        Step::Verify => &mut timeouts.verify,
        Step::Publish => &mut timeouts.publish,
        Step::Resume => &mut timeouts.resume,
        Step::Prune => &mut timeouts.prune,
    }
}

/// A whole, positive number of seconds.
fn seconds(env: Env<'_>, name: &'static str, default: u64) -> Result<Duration, EnvError> {
    const EXPECTED: &str = "a whole, positive number of seconds";
    let secs: u64 = env.parsed(name, default, EXPECTED)?;
    if secs == 0 {
        return Err(Env::invalid(name, "0", EXPECTED));
    }
    Ok(Duration::from_secs(secs))
}

fn at_least_one(
    env: Env<'_>,
    name: &'static str,
    default: usize,
    expected: &str,
) -> Result<usize, EnvError> {
    let value: usize = env.parsed(name, default, expected)?;
    if value == 0 {
        return Err(Env::invalid(name, "0", expected));
    }
    Ok(value)
}

/// `SNAPSHOT_STORE`, or `SNAPSHOT_BUCKET` with `SNAPSHOT_PREFIX`: one s3:// store.
fn store_from(env: Env<'_>) -> Result<StoreUrl, EnvError> {
    let url = match (
        env.optional("SNAPSHOT_STORE"),
        env.optional("SNAPSHOT_BUCKET"),
    ) {
        (Some(url), None) => {
            if let Some(prefix) = env.optional("SNAPSHOT_PREFIX") {
                return Err(Env::invalid(
                    "SNAPSHOT_PREFIX",
                    &prefix,
                    "unset when SNAPSHOT_STORE is set (put the prefix in its URL)",
                ));
            }
            let parsed = StoreUrl::parse(&url)
                .map_err(|e| Env::invalid("SNAPSHOT_STORE", &url, e.reason))?;
            return match parsed {
                StoreUrl::S3 { .. } => Ok(parsed),
                StoreUrl::File { .. } => Err(Env::invalid(
                    "SNAPSHOT_STORE",
                    &url,
                    "an s3://bucket[/prefix] URL (a Lambda has no file store)",
                )),
            };
        }
        (Some(url), Some(_)) => {
            return Err(Env::invalid(
                "SNAPSHOT_STORE",
                &url,
                "unset when SNAPSHOT_BUCKET is set (use one or the other)",
            ));
        }
        (None, Some(bucket)) => match env.optional("SNAPSHOT_PREFIX") {
            Some(prefix) => format!("s3://{bucket}/{}", prefix.trim_matches('/')),
            None => format!("s3://{bucket}"),
        },
        (None, None) => return Err(EnvError::Missing("SNAPSHOT_BUCKET (or SNAPSHOT_STORE)")),
    };
    StoreUrl::parse(&url).map_err(|e| {
        let name = if e.reason.contains("bucket") {
            "SNAPSHOT_BUCKET"
        } else {
            "SNAPSHOT_PREFIX"
        };
        Env::invalid(name, &url, e.reason)
    })
}

/// One event through the service on `ports`: take the lease, move the round as far as it
/// goes, log a summary, and build the answer and the metrics.
pub async fn handle_event(
    ports: UpdaterPorts<'_>,
    settings: &UpdaterSettings,
    fleet: &str,
    payload: &Value,
    now: Timestamp,
) -> Result<Handled, UpdaterError> {
    let event = UpdaterEvent::parse(payload);
    let run = service::run(ports, settings, event == UpdaterEvent::StartRound, now).await?;
    let ran = match run {
        UpdaterRun::Busy { holder, until } => {
            tracing::info!(
                event = event.as_str(),
                holder,
                until_ms = until.as_millis(),
                "another invocation holds the updater's lease; nothing done"
            );
            return Ok(Handled {
                answer: json!({
                    "outcome": "busy",
                    "event": event.as_str(),
                    "holder": holder,
                    "until_ms": until.as_millis(),
                }),
                metrics: Vec::new(),
            });
        }
        UpdaterRun::Ran(ran) => ran,
    };
    let round = ran.memory.round.as_ref().map(|r| {
        json!({
            "id": r.id,
            "step": r.step.as_str(),
            "node": r.node.as_ref().map(|n| n.as_str()),
        })
    });
    let finished: Vec<String> = ran
        .finished
        .iter()
        .map(|summary| match &summary.outcome {
            RoundOutcome::Published { snapshot, .. } => {
                format!("{} published {snapshot}", summary.id)
            }
            RoundOutcome::Aborted(abort) => format!(
                "{} aborted in {} ({})",
                summary.id,
                abort.step.as_str(),
                abort.reason.as_str()
            ),
        })
        .collect();
    let latest = ran.latest.as_ref().map(|l| {
        json!({
            "snapshot": l.snapshot.as_str(),
            "block_height": l.block_height,
        })
    });
    tracing::info!(
        event = event.as_str(),
        round = ran.memory.round.as_ref().map_or("", |r| r.id.as_str()),
        step = ran.memory.round.as_ref().map_or("idle", |r| r.step.as_str()),
        finished = ?finished,
        latest = ran.latest.as_ref().map_or("", |l| l.snapshot.as_str()),
        transitions = ran.transitions,
        "updater invocation"
    );
    let metrics = documents(fleet, ran.latest_created_at, &ran.finished, now);
    Ok(Handled {
        answer: json!({
            "outcome": "ran",
            "event": event.as_str(),
            "round": round,
            "finished": ran
                .finished
                .iter()
                .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
                .collect::<Vec<_>>(),
            "latest": latest,
            "transitions": ran.transitions,
        }),
        metrics,
    })
}

/// The Lambda's adapters, built once per sandbox.
pub struct UpdaterFunction {
    env: UpdaterEnv,
    state: DynamoStateStore,
    scheduler: EcsScheduler,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for UpdaterFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdaterFunction")
            .field("env", &self.env)
            .field("state", &self.state)
            .field("scheduler", &self.scheduler)
            .finish_non_exhaustive()
    }
}

impl UpdaterFunction {
    pub fn new(sdk: &SdkConfig, env: UpdaterEnv) -> Result<UpdaterFunction, InitError> {
        let state = DynamoStateStore::new(sdk, &env.table, &env.fleet)?;
        let scheduler = EcsScheduler::new(aws_sdk_ecs::Client::new(sdk), env.scheduler.clone())?;
        let store: Arc<dyn ObjectStore> = Arc::new(S3ObjectStore::new(sdk, &env.store)?);
        Ok(UpdaterFunction {
            env,
            state,
            scheduler,
            store,
        })
    }

    pub fn env(&self) -> &UpdaterEnv {
        &self.env
    }

    fn ports(&self) -> UpdaterPorts<'_> {
        UpdaterPorts {
            state: &self.state,
            scheduler: &self.scheduler,
            store: &self.store,
        }
    }

    /// One invocation: the event in, the answer out, EMF documents written to stdout.
    pub async fn invoke(&self, payload: &Value, request_id: &str) -> Result<Value, UpdaterError> {
        let settings = self.env.settings(request_id);
        let handled = handle_event(
            self.ports(),
            &settings,
            &self.env.fleet,
            payload,
            Timestamp::now(),
        )
        .await;
        answer(
            handled,
            "updater invocation failed",
            UpdaterError::is_retryable,
        )
    }
}

/// Serves events until the runtime shuts the sandbox down.
pub async fn serve(function: UpdaterFunction) -> Result<(), lambda_runtime::Error> {
    let function = &function;
    function::serve(move |payload, request_id| async move {
        function.invoke(&payload, &request_id).await
    })
    .await
}
