//! Benchmark: the health-reactor binary reconciling a 300-node, 3-zone fleet on moto, from
//! event to RunTask. Fills the fleet (schedule ticks until 300 tasks run and their targets
//! are registered), then, `ROUNDS` times: stops one task as a crash would and sends its
//! ECS STOPPED event, timing the invocation (event in, answer out) and the reconcile's
//! phases the answer reports (observe, plan, execute: claim, RunTask, record, audit).
//! Also times a steady schedule tick (observe and plan, nothing to do).
//!
//! Run with moto up: `bench/reactor.sh` (it starts moto and builds in release).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{MotoFleet, ReactorProcess, schedule_event};

const NODES: u32 = 300;
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];
/// moto places every task it can on a container instance with room; 40 per zone is more
/// room than 100 small tasks per zone need.
const INSTANCES_PER_ZONE: usize = 40;
const ROUNDS: usize = 5;

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn phase(answer: &Value, name: &str) -> f64 {
    answer["timings_ms"][name].as_f64().unwrap_or(f64::NAN)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let binary = std::env::args()
        .nth(1)
        .expect("usage: reactor_moto PATH_TO_HEALTH_REACTOR_BINARY");
    let setup = Instant::now();
    let fleet = MotoFleet::create(&ZONES, INSTANCES_PER_ZONE).await;
    let mut env = fleet.env(NODES);
    env.push(("RUST_LOG".to_owned(), "warn".to_owned()));
    let reactor = ReactorProcess::start(&binary, env).await;
    let fill = Instant::now();
    let first = reactor.reconcile(&schedule_event()).await;
    let fill_time = fill.elapsed();
    let started = first["started"].as_array().map_or(0, Vec::len);
    println!(
        "fill: {started} RunTask in one reconcile, {:.0} ms",
        ms(fill_time)
    );
    let register = Instant::now();
    reactor.reconcile(&schedule_event()).await;
    println!(
        "register: 300 targets in one reconcile, {:.0} ms",
        ms(register.elapsed())
    );
    let running = fleet.running_tasks().await;
    assert_eq!(running.len(), NODES as usize, "the fleet is full");
    println!("setup done in {:.1} s", setup.elapsed().as_secs_f64());

    let mut steady = Vec::new();
    for _ in 0..ROUNDS {
        let tick = Instant::now();
        let answer = reactor.reconcile(&schedule_event()).await;
        steady.push((
            ms(tick.elapsed()),
            phase(&answer, "observe"),
            phase(&answer, "plan"),
        ));
    }
    let mut totals = Vec::new();
    let mut observes = Vec::new();
    let mut plans = Vec::new();
    let mut executes = Vec::new();
    for round in 0..ROUNDS {
        let victim = fleet.running_tasks().await[round].clone();
        let event = fleet.crash(&victim).await;
        let sent = Instant::now();
        let answer = reactor.reconcile(&event).await;
        let total = ms(sent.elapsed());
        let launched = answer["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"]["action"] == "launch" && a["result"] == "done")
            .count();
        assert_eq!(launched, 1, "one replacement: {answer}");
        totals.push(total);
        observes.push(phase(&answer, "observe"));
        plans.push(phase(&answer, "plan"));
        executes.push(phase(&answer, "execute"));
        // Register the replacement's target so the next round starts from a healthy fleet.
        reactor.reconcile(&schedule_event()).await;
    }
    let mut steady_total: Vec<f64> = steady.iter().map(|s| s.0).collect();
    let mut steady_observe: Vec<f64> = steady.iter().map(|s| s.1).collect();
    let mut steady_plan: Vec<f64> = steady.iter().map(|s| s.2).collect();
    println!(
        "steady tick (300 nodes, nothing to do), median of {ROUNDS}: invocation {:.1} ms, observe {:.1} ms, plan {:.3} ms",
        median(&mut steady_total),
        median(&mut steady_observe),
        median(&mut steady_plan)
    );
    println!(
        "crash event -> replacement RunTask, median of {ROUNDS}: invocation {:.1} ms (min {:.1}, max {:.1}); observe {:.1} ms, plan {:.3} ms, execute {:.1} ms",
        median(&mut totals.clone()),
        totals.iter().copied().fold(f64::INFINITY, f64::min),
        totals.iter().copied().fold(0.0, f64::max),
        median(&mut observes),
        median(&mut plans),
        median(&mut executes)
    );
}
