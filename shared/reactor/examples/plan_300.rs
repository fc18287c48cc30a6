//! Measures the planner's CPU time for issue 5's benchmark case: 300 serving nodes over 3
//! zones, 15 of them failing (5 unhealthy, 5 stopped, 5 with spot warnings), so every rule
//! runs. Run in release: `cargo run --release -p nodefleet-reactor --example plan_300`.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use nodefleet_ports::{TargetState, Timestamp};
use nodefleet_reactor::planner::sample::SampleFleet;
use nodefleet_reactor::planner::{ReplacementBudget, plan};

const ITERATIONS: u32 = 2_000;

fn main() {
    let now = Timestamp::from_millis(1_700_000_000_000);
    let mut fleet = SampleFleet::healthy(300, 3, now);
    for index in 0..5 {
        fleet.set_target_state(index * 7, TargetState::Unhealthy);
        fleet.stop_task(index * 11 + 1, "exit 137");
        fleet.warn_spot(index * 13 + 3);
    }
    let budget = ReplacementBudget::per_hour(20, now);
    let mut launches = 0;
    let mut fastest = Duration::MAX;
    let started = Instant::now();
    for _ in 0..ITERATIONS {
        let one = Instant::now();
        let planned = plan(&fleet.desired, &fleet.observed, now, &budget);
        fastest = fastest.min(one.elapsed());
        launches = planned.launches().count();
    }
    let mean = started.elapsed() / ITERATIONS;
    println!(
        "300 nodes, 3 zones, {launches} launches: mean {mean:?}, fastest {fastest:?} per plan"
    );
}
