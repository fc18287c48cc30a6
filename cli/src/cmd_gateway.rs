//! `nodefleet gateway`: the Lambda's handler served as a plain HTTP server; and
//! `nodefleet policy check`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use nodefleet_gateway::config::load_policy_file;
use nodefleet_gateway::upstream::{DEFAULT_TIMEOUT, MAX_TIMEOUT};
use nodefleet_gateway::{Gateway, HttpUpstream, HttpUpstreamConfig, logging, server};
use nodefleet_gateway_core::{Policy, Verdict};

use crate::signals;

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8545")]
    listen: SocketAddr,
    /// Where allowed calls go (http://host:port of a node or load balancer).
    #[arg(long)]
    upstream: String,
    /// Operator policy file (TOML); the built-in policy when absent.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Upstream timeout in milliseconds (at most 28000, below API Gateway's 29 s).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_millis() as u64)]
    timeout_ms: u64,
    /// Threads serving requests. One event loop proxies about 45k calls/s on loopback
    /// (BENCHMARKS.md) and leaves the other cores to the nodes; raise it on a machine of its own.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
}

/// Loads the policy file, or the built-in policy.
pub fn policy_from(path: Option<&Path>) -> anyhow::Result<Policy> {
    Ok(match path {
        Some(path) => load_policy_file(path)?,
        None => Policy::default(),
    })
}

/// Validates a timeout flag.
pub fn timeout_from(ms: u64) -> anyhow::Result<Duration> {
    let timeout = Duration::from_millis(ms);
    anyhow::ensure!(
        ms > 0 && timeout <= MAX_TIMEOUT,
        "--timeout-ms must be from 1 to 28000"
    );
    Ok(timeout)
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let policy = policy_from(args.policy.as_deref())?;
    let config = HttpUpstreamConfig {
        timeout: timeout_from(args.timeout_ms)?,
        ..Default::default()
    };
    let upstream = HttpUpstream::new(&args.upstream, config)?;
    let listener = server::bind(args.listen).await?;
    let local = listener.local_addr().context("listener address")?;
    let _log = logging::init_json_background("info");
    tracing::info!(listen = %local, "gateway listening");
    #[allow(clippy::print_stdout)] // the command's output: where to send requests
    {
        println!("nodefleet gateway listening on http://{local}");
    }
    let gateway = Arc::new(Gateway::new(policy, upstream));
    server::serve(listener, gateway, signals::shutdown()).await;
    Ok(())
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The policy file to check.
    file: PathBuf,
    /// Methods to decide with it.
    methods: Vec<String>,
}

/// `nodefleet policy check FILE [METHOD...]`.
pub fn check_policy(args: PolicyArgs) -> anyhow::Result<()> {
    let policy = load_policy_file(&args.file)?;
    let limits = policy.limits();
    #[allow(clippy::print_stdout)] // the command's output
    {
        println!(
            "{}: ok (max_body_bytes {}, max_batch_items {}, max_get_logs_blocks {})",
            args.file.display(),
            limits.max_body_bytes,
            limits.max_batch_items,
            limits.max_get_logs_blocks
        );
        for method in &args.methods {
            let verdict = match policy.verdict(method) {
                Verdict::Allow => "allow".to_owned(),
                Verdict::AnswerAccounts => "answered locally".to_owned(),
                Verdict::Deny(reason) => format!("deny ({reason:?})"),
            };
            println!("{method}: {verdict}");
        }
    }
    Ok(())
}
