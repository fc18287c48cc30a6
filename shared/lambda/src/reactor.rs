//! The health-reactor Lambda: settings from the environment ([`ReactorEnv`]), the AWS
//! adapters built once per sandbox ([`ReactorFunction::new`]), and each EventBridge event
//! handed to [`nodefleet_reactor::service::run`] ([`handle_event`], generic over the ports so
//! tests run it on fakes). Every decision and action is one JSON log line with its reason;
//! the reconcile's metrics go to stdout as EMF documents ([`nodefleet_reactor::metrics`]).
//!
//! # Settings
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `TABLE_NAME` | the DynamoDB table | required |
//! | `FLEET_NAME` | the fleet (key prefix, task group `nodefleet:<fleet>`, tags) | required |
//! | `CLUSTER` | ECS cluster name or ARN | required |
//! | `TASK_DEFINITION` | node task definition (family, `family:rev` or ARN) | required |
//! | `CONTAINER_NAME` | the node container in it | `node` |
//! | `TARGET_GROUP_ARN` | the NLB target group | required |
//! | `NETWORK_MODE` | `bridge` or `awsvpc` | `bridge` |
//! | `SUBNETS_BY_ZONE` | awsvpc only: `zone=subnet[+subnet...]`, comma-separated | required for awsvpc |
//! | `SECURITY_GROUPS` | awsvpc only: comma-separated | none |
//! | `CAPACITY_PROVIDER` | capacity provider for RunTask (else launch type EC2) | none |
//! | `NODE_CLIENT` | the execution client: the RunTask CPU/memory and the grace window come from its capacity profile (as in `nodefleet plan`) | `geth` |
//! | `CONTAINER_PORT` | the port the target group routes to | `8545` |
//! | `GRACE_SECS` | override of the client's grace window | from the profile |
//! | `REPLACEMENTS_PER_HOUR` | the replacement budget | `10` |
//! | `ZONES`, `SERVING_NODES` | seed of the fleet config, stored on the first run when none is | none (then a config must be stored) |
//! | `HEALTHY_FLOOR`, `STORM_PERCENT` | seed: healthy floor, storm share | two thirds of `SERVING_NODES`; `34` (just over one third) |
//! | `MAX_HEAD_AGE_SECS`, `MIN_PEERS` | seed: the agent's health thresholds | `60`, `1` |
//!
//! The ECS rows (`CLUSTER` to `NODE_CLIENT`, but `TARGET_GROUP_ARN`) are read by
//! [`LaunchEnv`], the same parser the snapshot updater uses.
//!
//! # Error policy
//!
//! A bad setting fails the function at init with the variable's name. An event that cannot
//! be read still reconciles (see the service). An invocation fails (so EventBridge's retry or
//! the next minute's schedule runs it again) only when the reconcile could not observe the
//! fleet; actions that fail are in the answer and are retried by the next reconcile.

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use nodefleet_aws::ecs::EcsSchedulerConfig;
use nodefleet_aws::{DynamoStateStore, EcsScheduler, ElbTargetRegistry};
use nodefleet_ports::{FleetConfig, NODE_RPC_PORT, Timestamp, Version, Zone};
use nodefleet_reactor::metrics::reconcile_documents;
use nodefleet_reactor::planner::DEFAULT_REPLACEMENTS_PER_HOUR;
use nodefleet_reactor::reconcile::{Outcome, Ports};
use nodefleet_reactor::service::{self, ReactorError, ReactorRun, ReactorSettings, default_grace};
use nodefleet_reactor::triggers::{FleetScope, parse_trigger};
use serde_json::{Value, json};

use crate::env::{Env, EnvError};
use crate::function::{self, answer};
pub use crate::function::{Handled, InitError, write_metrics};
pub use crate::launch::{DEFAULT_CLIENT, DEFAULT_CONTAINER_NAME, LaunchEnv};

/// Default storm share in percent: "more than one third" of the fleet, and 34% is the
/// smallest whole percent at which exactly one third (2 of 6, 3 of 9) is not a storm.
pub const DEFAULT_STORM_PERCENT: u8 = 34;
/// The agent's default `max_head_age` (DESIGN: 60 s for 12-second slots).
pub const DEFAULT_MAX_HEAD_AGE_SECS: u64 = 60;
/// The agent's default `min_peers`.
pub const DEFAULT_MIN_PEERS: u32 = 1;

/// Everything the reactor Lambda reads from its environment. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorEnv {
    pub table: String,
    pub fleet: String,
    pub target_group_arn: String,
    pub scheduler: EcsSchedulerConfig,
    pub client: String,
    pub grace: Duration,
    pub container_port: u16,
    pub replacements_per_hour: u32,
    pub seed: Option<FleetConfig>,
}

impl ReactorEnv {
    pub fn from_env(env: Env<'_>) -> Result<ReactorEnv, EnvError> {
        let table = env.required("TABLE_NAME")?;
        let fleet = env.required("FLEET_NAME")?;
        let LaunchEnv { scheduler, client } = LaunchEnv::from_env(env, &fleet)?;
        let target_group_arn = env.required("TARGET_GROUP_ARN")?;
        // LaunchEnv accepts only clients with a capacity profile, which all have a grace.
        let profile_grace = default_grace(&client).ok_or_else(|| {
            Env::invalid(
                "NODE_CLIENT",
                &client,
                "one of geth, reth, erigon, nethermind, besu",
            )
        })?;
        let grace_secs = env.parsed(
            "GRACE_SECS",
            profile_grace.as_secs(),
            "a whole number of seconds",
        )?;
        let container_port = env.parsed("CONTAINER_PORT", NODE_RPC_PORT, "a TCP port")?;
        let replacements_per_hour = env.parsed(
            "REPLACEMENTS_PER_HOUR",
            DEFAULT_REPLACEMENTS_PER_HOUR,
            "a whole number of replacements",
        )?;
        if replacements_per_hour == 0 {
            return Err(Env::invalid(
                "REPLACEMENTS_PER_HOUR",
                "0",
                "at least 1 (a budget of zero never heals)",
            ));
        }
        let seed = seed_from(env, &fleet)?;
        Ok(ReactorEnv {
            table,
            fleet,
            target_group_arn,
            scheduler,
            client,
            grace: Duration::from_secs(grace_secs),
            container_port,
            replacements_per_hour,
            seed,
        })
    }

    /// The service's settings for one invocation by `owner` (the request id).
    pub fn settings(&self, owner: &str) -> ReactorSettings {
        ReactorSettings {
            owner: owner.to_owned(),
            seed_config: self.seed.clone(),
            grace: self.grace,
            network_mode: self.scheduler.network.mode(),
            container_port: self.container_port,
            replacements_per_hour: self.replacements_per_hour,
            scope: Some(FleetScope::new(
                self.scheduler.cluster.clone(),
                self.fleet.clone(),
            )),
        }
    }
}

fn seed_from(env: Env<'_>, fleet: &str) -> Result<Option<FleetConfig>, EnvError> {
    let zones = env.list("ZONES");
    let Some(serving) = env.optional("SERVING_NODES") else {
        return Ok(None);
    };
    if zones.is_empty() {
        return Err(EnvError::Missing("ZONES"));
    }
    let serving_nodes: u32 = serving
        .parse()
        .map_err(|_| Env::invalid("SERVING_NODES", &serving, "a whole number of nodes"))?;
    let healthy_floor = env.parsed(
        "HEALTHY_FLOOR",
        serving_nodes - serving_nodes / 3,
        "a whole number of nodes",
    )?;
    let storm_percent = env.parsed(
        "STORM_PERCENT",
        DEFAULT_STORM_PERCENT,
        "a percentage from 1 to 100",
    )?;
    if !(1..=100).contains(&storm_percent) {
        return Err(Env::invalid(
            "STORM_PERCENT",
            &storm_percent.to_string(),
            "a percentage from 1 to 100",
        ));
    }
    Ok(Some(FleetConfig {
        name: fleet.to_owned(),
        zones: zones.into_iter().map(Zone::new).collect(),
        serving_nodes,
        healthy_floor,
        storm_percent,
        max_head_age_secs: env.parsed(
            "MAX_HEAD_AGE_SECS",
            DEFAULT_MAX_HEAD_AGE_SECS,
            "a whole number of seconds",
        )?,
        min_peers: env.parsed("MIN_PEERS", DEFAULT_MIN_PEERS, "a whole number of peers")?,
        version: Version::NEW,
    }))
}

/// One event through the service on `ports`: parse, reconcile, log every decision, and
/// build the answer and the metrics. `started` is when the invocation began (for the
/// duration metric).
pub async fn handle_event(
    ports: Ports<'_>,
    settings: &ReactorSettings,
    fleet: &str,
    payload: &Value,
    now: Timestamp,
    started: Instant,
) -> Result<Handled, ReactorError> {
    let trigger = parse_trigger(payload);
    let run = service::run(ports, settings, &trigger, now).await?;
    let reconciled = match run {
        ReactorRun::NotOurs { trigger } => {
            return Ok(Handled {
                answer: json!({"trigger": trigger, "reconciled": false}),
                metrics: Vec::new(),
            });
        }
        ReactorRun::Reconciled(reconciled) => reconciled,
    };
    let outcome = &reconciled.outcome;
    for decision in &outcome.plan.decisions {
        tracing::info!(
            subject = decision.subject,
            verdict = ?decision.verdict,
            reason = decision.reason,
            "reactor decision"
        );
    }
    let mut actions = Vec::new();
    for done in &outcome.report.outcomes {
        let (result, detail) = match &done.outcome {
            Outcome::Done(detail) => ("done", detail),
            Outcome::Skipped(detail) => ("skipped", detail),
            Outcome::Failed(detail) => ("failed", detail),
        };
        let action = serde_json::to_value(&done.action).unwrap_or(Value::Null);
        tracing::info!(
            action = %action,
            key = done.claimed_key.as_deref().unwrap_or(""),
            result,
            detail,
            "reactor action"
        );
        actions.push(json!({"action": action, "result": result, "detail": detail}));
    }
    for warning in outcome.report.warnings.iter().chain(&reconciled.warnings) {
        tracing::warn!(warning, "reactor bookkeeping");
    }
    let summary = serde_json::to_value(&outcome.plan.summary).unwrap_or(Value::Null);
    let metrics = reconcile_documents(fleet, outcome, started.elapsed(), now);
    Ok(Handled {
        answer: json!({
            "trigger": reconciled.trigger,
            "reconciled": true,
            "summary": summary,
            "actions": actions,
            "started": outcome.report.started.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "tokens_left": outcome.memory.budget.tokens(),
            "timings_ms": {
                "observe": millis(outcome.timings.observe),
                "plan": millis(outcome.timings.plan),
                "execute": millis(outcome.timings.execute),
            },
        }),
        metrics,
    })
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The Lambda's adapters, built once per sandbox.
#[derive(Debug)]
pub struct ReactorFunction {
    env: ReactorEnv,
    state: DynamoStateStore,
    scheduler: EcsScheduler,
    registry: ElbTargetRegistry,
}

impl ReactorFunction {
    pub fn new(sdk: &SdkConfig, env: ReactorEnv) -> Result<ReactorFunction, InitError> {
        let state = DynamoStateStore::new(sdk, &env.table, &env.fleet)?;
        let scheduler = EcsScheduler::new(aws_sdk_ecs::Client::new(sdk), env.scheduler.clone())?;
        let registry = ElbTargetRegistry::new(
            aws_sdk_elasticloadbalancingv2::Client::new(sdk),
            &env.target_group_arn,
            env.scheduler.network.mode(),
        );
        Ok(ReactorFunction {
            env,
            state,
            scheduler,
            registry,
        })
    }

    fn ports(&self) -> Ports<'_> {
        Ports {
            state: &self.state,
            scheduler: &self.scheduler,
            registry: &self.registry,
        }
    }

    /// One invocation: the event in, the answer out, EMF documents written to stdout.
    pub async fn invoke(&self, payload: &Value, request_id: &str) -> Result<Value, ReactorError> {
        let started = Instant::now();
        let settings = self.env.settings(request_id);
        let handled = handle_event(
            self.ports(),
            &settings,
            &self.env.fleet,
            payload,
            Timestamp::now(),
            started,
        )
        .await;
        answer(handled, "reconcile failed", ReactorError::is_retryable)
    }
}

/// Serves events until the runtime shuts the sandbox down.
pub async fn serve(function: ReactorFunction) -> Result<(), lambda_runtime::Error> {
    let function = &function;
    function::serve(move |payload, request_id| async move {
        function.invoke(&payload, &request_id).await
    })
    .await
}
