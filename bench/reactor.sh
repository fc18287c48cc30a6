#!/usr/bin/env bash
# Health reactor benchmarks (issue 5), in one run:
#   planner   the pure planner on a 300-node, 3-zone fleet with 15 nodes to replace
#             (CPU time per plan; target under 1 ms)
#   moto      the release health-reactor binary on a fake Lambda Runtime API against moto:
#             a 300-node fleet is filled and registered, then a crash's ECS STOPPED event is
#             timed to the replacement's RunTask (invocation, and the reconcile's observe,
#             plan and execute phases), next to a steady schedule tick
# moto runs on loopback (scripts/moto.sh) and is stopped on exit.
#
# Usage: bench/reactor.sh   (from anywhere; needs cargo and python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

echo "== planner: 300 nodes, 3 zones, 15 to replace (release)"
cargo run --locked --quiet --release -p nodefleet-reactor --example plan_300

echo
echo "== moto: event to RunTask on a 300-node fleet (release binary)"
cargo build --locked --quiet --release -p health-reactor --bin health-reactor --example reactor_moto
trap 'scripts/moto.sh stop' EXIT
NODEFLEET_MOTO_ENDPOINT=$(scripts/moto.sh start)
export NODEFLEET_MOTO_ENDPOINT
"$ROOT/target/release/examples/reactor_moto" "$ROOT/target/release/health-reactor"
