#!/usr/bin/env bash
# Snapshot rounds of the local fleet (issue 6): starts `nodefleet up` (release build, agent
# nodes on anvil) with a round every INTERVAL seconds, waits for ROUNDS published rounds,
# and prints each round's total time, its steps (from the loop's JSON log, target
# nodefleet::snapshots, in <dir>/reactor.log), and the bytes it uploaded against the data
# dir's size. The first round launches and hydrates the updater and uploads everything; the
# later ones re-use it and upload what changed: the ratio of their uploads to the first's is
# the incremental saving, measured side by side in one run.
#
# Usage: bench/rounds.sh            (from anywhere; needs cargo, python3)
# Knobs (environment): ROUNDS=5 INTERVAL=10 NODES=3 TIMEOUT=300 (seconds for all rounds)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${ROUNDS:-5}"
INTERVAL="${INTERVAL:-10}"
NODES="${NODES:-3}"
TIMEOUT="${TIMEOUT:-300}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
NODEFLEET="$TARGET/release/nodefleet"
ANVIL="$ROOT/tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
DIR="$(mktemp -d /tmp/nf-bench-rounds-XXXXXX)"

echo "== build" >&2
(cd "$ROOT" && cargo build -q --release -p nodefleet)
if [ ! -x "$ANVIL" ]; then
    "$NODEFLEET" tools install --tools "$ROOT/tools"
fi

echo "== nodefleet up --snapshot-interval-secs $INTERVAL in $DIR" >&2
NODEFLEET_ANVIL="$ANVIL" "$NODEFLEET" up --nodes "$NODES" --listen 127.0.0.1:0 --no-install \
    --dir "$DIR" --snapshot-interval-secs "$INTERVAL" >"$DIR/up.out" 2>&1 &
UP=$!
trap 'kill -INT $UP 2>/dev/null; wait $UP 2>/dev/null || true' EXIT

published() {
    if [ -f "$DIR/reactor.log" ]; then
        grep -c '"a snapshot was published"' "$DIR/reactor.log" || true
    else
        echo 0
    fi
}
deadline=$((SECONDS + TIMEOUT))
while [ "$(published)" -lt "$ROUNDS" ]; do
    if [ $SECONDS -ge $deadline ]; then
        echo "fewer than $ROUNDS rounds within ${TIMEOUT}s; see $DIR" >&2
        exit 1
    fi
    sleep 1
done

python3 - "$DIR/reactor.log" "$ROUNDS" <<'PY'
import json, statistics, sys
path, want = sys.argv[1], int(sys.argv[2])
rounds = []
for line in open(path):
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    if entry.get("target") == "nodefleet::snapshots" and entry.get("event") == "round" \
            and "bytes_uploaded" in entry:
        rounds.append(entry)
rounds = rounds[:want]
first = rounds[0]["bytes_uploaded"] or 1
print(f"{'round':>5} {'block':>6} {'total ms':>9} {'uploaded':>9} {'of data':>8} {'vs 1st':>7}  steps (ms)")
for i, r in enumerate(rounds, 1):
    share = r["bytes_uploaded"] / max(r["bytes_total"], 1)
    print(f"{i:>5} {r['block']:>6} {r['took_ms']:>9} {r['bytes_uploaded']:>9} {share:>8.1%} "
          f"{r['bytes_uploaded'] / first:>7.2f}  {r['steps']}")
later = [r["took_ms"] for r in rounds[1:]]
if later:
    print(f"first round {rounds[0]['took_ms']} ms; later rounds median {statistics.median(later)} ms")
PY
echo "(logs in $DIR)" >&2
