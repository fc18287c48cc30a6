#!/usr/bin/env bash
# Recovery time of the local self-healing fleet (issue 5): starts `nodefleet up` (release
# build, anvil nodes), kills one node with SIGKILL KILLS times (a different node each time,
# waiting for the fleet to be whole again in between), and splits each recovery, kill to
# healthy replacement, into its parts from the loop's JSON log (<dir>/reactor.log, target
# nodefleet::fleet) and the balancer's (<dir>/gateway.log):
#   detect    kill -> the reconcile that sees the node lost and plans its replacement (the
#             loop wakes when a task exits, else at its 1 s tick; of which "exit seen":
#             kill -> the scheduler's reaper records the exit)
#   launch    -> the replacement task's process is started
#   hydrate   0 for bare anvil: nothing to restore (a real node hydrates from a snapshot here)
#   ready     -> its target registered, healthy, and in the gateway's routes
#   total     kill -> ready
# plus "rotation": ready -> the balancer's probe marks the new node up (it is tried before
# that too, when another node fails).
#
# Everything listens on 127.0.0.1 only; the fleet is stopped on exit (logs kept).
#
# Usage: bench/recovery.sh          (from anywhere; needs cargo, python3)
# Knobs (environment): KILLS=5 NODES=3 SETTLE=2 (seconds of calm after each recovery)
#                      TIMEOUT=60 (seconds a start or a recovery may take)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KILLS="${KILLS:-5}"
NODES="${NODES:-3}"
SETTLE="${SETTLE:-2}"
TIMEOUT="${TIMEOUT:-60}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
NODEFLEET="$TARGET/release/nodefleet"
ANVIL="$ROOT/tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"

for tool in cargo python3; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool" >&2
        exit 1
    }
done
# The replacement budget is ten an hour (the reactor's default); more kills would wait.
if [ "$KILLS" -gt 10 ]; then
    echo "KILLS must be at most 10 (the reactor replaces at most 10 nodes an hour)" >&2
    exit 1
fi

echo "== build" >&2
(cd "$ROOT" && cargo build -q --release -p nodefleet)
if [ ! -x "$ANVIL" ]; then
    "$NODEFLEET" tools install --tools "$ROOT/tools"
fi

WORK="$(mktemp -d /tmp/nodefleet-recovery.XXXXXX)"
FLEET="$WORK/fleet"
UP_PID=""
cleanup() {
    if [ -n "$UP_PID" ]; then
        kill -INT "$UP_PID" 2>/dev/null || true
        wait "$UP_PID" 2>/dev/null || true
    fi
    echo "stopped the fleet; logs kept in $WORK" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }

# `status --json` of the fleet, or nothing while it is not up.
status_json() { "$NODEFLEET" status --dir "$FLEET" --json 2>/dev/null || true; }

# Exits 0 when the status on stdin has NODES healthy nodes (and, given a node id and a task,
# that node on another task).
check_status() {
    python3 -c '
import json, sys
want, node, old = int(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    s = json.load(sys.stdin)
except ValueError:
    sys.exit(1)
nodes = s["nodes"]
ok = len(nodes) == want and all(n["healthy"] for n in nodes)
if node:
    ok = ok and any(n["id"] == node and n["task"] != old for n in nodes)
sys.exit(0 if ok else 1)
' "$NODES" "${1:-}" "${2:-}"
}

# Waits until check_status passes; fails after TIMEOUT.
wait_fleet() {
    local deadline=$(($(now_ms) + TIMEOUT * 1000))
    while [ "$(now_ms)" -lt "$deadline" ]; do
        if status_json | check_status "$@"; then
            return 0
        fi
        sleep 0.05
    done
    echo "the fleet did not recover within ${TIMEOUT}s; status: $(status_json)" >&2
    exit 1
}

echo "== start $NODES nodes (logs in $WORK)" >&2
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
"$NODEFLEET" up --nodes "$NODES" --listen 127.0.0.1:0 --console 127.0.0.1:0 --dir "$FLEET" --no-install --tools "$ROOT/tools" \
    >"$WORK/up.out" 2>&1 &
UP_PID=$!
wait_fleet
sleep "$SETTLE"

KILLED="$WORK/kills.tsv"
: >"$KILLED"
for i in $(seq 1 "$KILLS"); do
    index=$(((i - 1) % NODES))
    read -r node task pid <<<"$(status_json | python3 -c '
import json, sys
n = json.load(sys.stdin)["nodes"][int(sys.argv[1])]
print(n["id"], n["task"], n["pid"])
' "$index")"
    killed=$(now_ms)
    kill -9 "$pid"
    wait_fleet "$node" "$task"
    seen=$(now_ms)
    echo "$i $node $task $pid $killed $seen" >>"$KILLED"
    printf '  kill %s: %s (pid %s) back in %s ms (as status --json saw it)\n' \
        "$i" "$node" "$pid" $((seen - killed)) >&2
    sleep "$SETTLE"
done

kill -INT "$UP_PID"
wait "$UP_PID" || true
UP_PID=""
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$ROOT" status --porcelain -- shared cli 2>/dev/null)" ]; then
    COMMIT="$COMMIT+local changes"
fi
echo
echo "$KILLS kills of 1 of $NODES anvil nodes (SIGKILL), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ), commit $COMMIT"
echo "load average before: $LOAD_BEFORE; after: $LOAD_AFTER"
echo
python3 - "$KILLED" "$FLEET/reactor.log" "$FLEET/gateway.log" <<'EOF'
import json, statistics, sys
from datetime import datetime

kills_path, reactor_path, gateway_path = sys.argv[1:4]

def lines(path):
    with open(path) as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                pass

fleet = [e for e in lines(reactor_path) if e.get("target") == "nodefleet::fleet"]
balancer = [e for e in lines(gateway_path) if e.get("target") == "nodefleet_gateway::balancer"]

def millis(timestamp):
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000

rows = []
for line in open(kills_path):
    i, node, task, pid, killed, seen = line.split()
    killed = int(killed)
    exit_ = next(e for e in fleet if e["event"] == "task_exit" and e["task"] == task)
    launch = next(
        e for e in fleet
        if e["event"] == "action" and e["action"] == "launch" and e["outcome"] == "done"
        and e.get("key", "").startswith(f"replace/{node}/{task}/")
    )
    ready = next(e for e in fleet if e["event"] == "node_ready" and e["task"] == launch["task"])
    up = next(
        (millis(e["timestamp"]) for e in balancer
         if e.get("node") == node and e.get("up") is True
         and millis(e["timestamp"]) >= ready["at_ms"] - 1),
        None,
    )
    rows.append({
        "kill": int(i), "node": node,
        "exit seen": exit_["stopped_at_ms"] - killed,
        "detect": launch["planned_at_ms"] - killed,
        "launch": launch["task_started_ms"] - launch["planned_at_ms"],
        "hydrate": 0,
        "ready": ready["at_ms"] - launch["task_started_ms"],
        "total": ready["at_ms"] - killed,
        "rotation": None if up is None else round(up - ready["at_ms"]),
    })

parts = ["exit seen", "detect", "launch", "hydrate", "ready", "total", "rotation"]
print("| kill | node | " + " | ".join(f"{p} (ms)" for p in parts) + " |")
print("|---|---|" + "---|" * len(parts))
for r in rows:
    cells = ["-" if r[p] is None else str(r[p]) for p in parts]
    print(f"| {r['kill']} | {r['node']} | " + " | ".join(cells) + " |")
print()
print("| part | median (ms) | min (ms) | max (ms) |")
print("|---|---|---|---|")
for p in parts:
    values = [r[p] for r in rows if r[p] is not None]
    if values:
        print(f"| {p} | {statistics.median(values):.0f} | {min(values)} | {max(values)} |")
EOF
