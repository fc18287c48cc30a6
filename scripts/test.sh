#!/usr/bin/env bash
# The whole test suite, from a clean checkout on a fresh machine: installs what the tests
# need (npm for anvil; anvil into ./tools; a Python venv with moto in tools/moto, started on
# loopback for the AWS adapters' tests; Debian's chromium and playwright-core in tools/browser
# for the status page's browser test; the SAM CLI, cfn-lint, cargo-lambda and checkov in
# tools/infra), then formatting, lints, the deployment's offline checks, every test, and
# `sam build` of the three functions.
# This is the README's test command, and what CI (.ci/run) runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-off build gains nothing from incremental artifacts, which only take disk and time.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step() { printf '\n== %s\n' "$*"; }

if ! command -v npm >/dev/null 2>&1; then
  step "installing npm (Debian) to fetch anvil"
  apt-get update -qq && apt-get install -y -qq npm >/dev/null
fi

step "anvil into ./tools (pinned)"
cargo run --locked --quiet -p nodefleet -- tools install

step "moto server (pinned, in tools/moto) on a loopback port, stopped when this script exits"
trap 'scripts/moto.sh stop' EXIT
NODEFLEET_MOTO_ENDPOINT=$(scripts/moto.sh start)
export NODEFLEET_MOTO_ENDPOINT
echo "moto at $NODEFLEET_MOTO_ENDPOINT"

step "chromium (Debian) and playwright-core (pinned, in tools/browser) for the status page's browser test"
scripts/browser.sh install

step "format"
cargo fmt --all --check

step "lints"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "deployment template: cfn-lint, sam validate --lint, checkov (scripts/infra.sh)"
scripts/infra.sh check

step "fuzz target still builds (run it with cargo-fuzz on nightly: fuzz/README.md)"
cargo check --locked --quiet --manifest-path fuzz/Cargo.toml

step "tests"
cargo test --locked --workspace

step "sam build: the three functions with cargo-lambda, x86_64 (infra/.aws-sam)"
scripts/infra.sh build
