#!/usr/bin/env bash
# Snapshot benchmark (issue 4), side by side in one run, against a local S3-compatible server:
#   cp -r             copy of the data dir on this disk: the machine's limit
#   aws sync up/down  `aws s3 sync` (awscli from PyPI) of the data dir to the server and back
#   create / restore  `nodefleet snapshot create` to a fresh prefix, `restore` into an empty dir
#   create/restore file://  the same through a file:// store on this disk: the engine without
#                     the server (context, no target)
#   create incr       after a 1% scattered in-place change of db/mdbx.dat: `create` again
#   restore incr      restore of that snapshot onto the previous restore (fetches what changed)
#   aws sync up incr  `aws s3 sync` again after the same change (re-uploads the whole file)
# Data: a generated reth-like 2 GiB data dir (bench/snapshot-data.py: 24 files of 64 MiB that
# never change, one 512 MiB db/mdbx.dat; deterministic seed). Server: s3s-fs 0.14.1 on
# 127.0.0.1, its root on the same disk. Targets: restore >= 0.8x cp -r and >= 3x aws s3 sync
# download; incremental create uploads <= 3% of the data.
#
# Every timed step starts after `sync` and, when the kernel lets us (root), after dropping the
# page cache (cold cache: every step reads its source from disk); each step is timed to the
# command's exit and again after a `sync` (its writes on disk), the figure the ratios use.
# The CPU seconds of the command and of the s3s-fs server during each step are recorded too:
# client, server and `cp -r` share this machine's cores.
# Every restore and download is compared with the source (outside the timings).
#
# Installs its tools into tools/ (gitignored): s3s-fs via `cargo install`, awscli in a venv.
# Scratch data (~10 GiB) under SCRATCH, deleted at the end unless KEEP=1; the raw timings,
# command outputs and the report are kept under bench/results/ (gitignored).
#
# Usage: bench/snapshot.sh                  (from anywhere; needs cargo, python3 with venv)
# Knobs (environment): ROUNDS=3  KEEP=0  SEED=20261129  PORT=(a free one)
#   SCRATCH=<repo>/.bench-data  CACHE=cold|warm (default: cold if the page cache can be dropped)
#   CONCURRENCY=N (passed to `restore --concurrency`; default: the CLI's)
#   SNAPSHOT=0 (skip the nodefleet steps: for testing the rest before the CLI exists)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ROUNDS="${ROUNDS:-3}"
KEEP="${KEEP:-0}"
SEED="${SEED:-20261129}"
SCRATCH="${SCRATCH:-$ROOT/.bench-data}"
SNAPSHOT="${SNAPSHOT:-1}"
CONCURRENCY="${CONCURRENCY:-}"
S3SFS_VERSION=0.14.1
AWSCLI_VERSION=1.46.2
S3SFS="$ROOT/tools/s3s-fs/bin/s3s-fs"
AWSCLI_VENV="$ROOT/tools/awscli"
NODEFLEET="$ROOT/target/release/nodefleet"
DATAPY="$ROOT/bench/snapshot-data.py"
PY="${PYTHON:-python3}"
HOST=127.0.0.1
AWS_BUCKET=bench-aws
SNAP_BUCKET=bench-snap

DATA="$SCRATCH/data"
S3ROOT="$SCRATCH/s3root"
OUT="$ROOT/bench/results/snapshot-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"

log() { echo "== $*" >&2; }
die() {
    echo "error: $*" >&2
    exit 1
}

# ---- tools ---------------------------------------------------------------------------------

install_s3sfs() {
    if [[ -x $S3SFS ]] && "$S3SFS" --version 2>/dev/null | grep -q " $S3SFS_VERSION\$"; then
        return
    fi
    log "installing s3s-fs $S3SFS_VERSION into tools/s3s-fs (cargo install; a few minutes)"
    # The binary is behind the crate's `binary` feature (tokio, clap, hyper-util).
    cargo install s3s-fs --version "$S3SFS_VERSION" --locked --features binary \
        --root "$ROOT/tools/s3s-fs" --quiet
}

install_awscli() {
    if [[ -x $AWSCLI_VENV/bin/aws ]] &&
        "$AWSCLI_VENV/bin/aws" --version 2>&1 | grep -q "^aws-cli/$AWSCLI_VERSION "; then
        return
    fi
    if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
        log "installing python3-venv (Debian)"
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
    log "installing awscli $AWSCLI_VERSION into tools/awscli (a venv)"
    rm -rf "$AWSCLI_VENV"
    "$PY" -m venv "$AWSCLI_VENV"
    # awscli pins its botocore exactly, so this one pin fixes the client's behaviour.
    "$AWSCLI_VENV/bin/pip" install --quiet --disable-pip-version-check "awscli==$AWSCLI_VERSION"
}

# ---- processes and cleanup -----------------------------------------------------------------

S3SFS_PID=""
cleanup() {
    local rc=$?
    if [[ -n $S3SFS_PID ]]; then
        kill "$S3SFS_PID" 2>/dev/null || true
        wait "$S3SFS_PID" 2>/dev/null || true
        log "stopped s3s-fs (pid $S3SFS_PID)"
    fi
    if [[ $KEEP == 1 ]]; then
        log "kept scratch data in $SCRATCH"
    elif [[ -d $SCRATCH ]]; then
        rm -rf "$SCRATCH"
        log "deleted $SCRATCH"
    fi
    log "outputs and timings in $OUT"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- timing --------------------------------------------------------------------------------

if [[ -z ${CACHE:-} ]]; then
    if sync && echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then CACHE=cold; else CACHE=warm; fi
fi
[[ $CACHE == cold || $CACHE == warm ]] || die "CACHE must be cold or warm"

settle() {
    sync
    if [[ $CACHE == cold ]]; then
        echo 3 >/proc/sys/vm/drop_caches
    fi
}

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

HZ=$(getconf CLK_TCK)
server_ticks() { # utime + stime of s3s-fs so far (fields 14 and 15 of /proc/PID/stat)
    awk '{ print $14 + $15 }' "/proc/$S3SFS_PID/stat"
}

DATA_BYTES=0
# timed ROUND STEP NAME -- COMMAND...: runs COMMAND after settle, output to $OUT/rROUND-NAME.*;
# sets T_CMD and T_SYNC (wall seconds to the command's exit, and after the `sync` that
# follows), CPU_CLIENT (the command's user + system CPU seconds, children included) and
# CPU_SERVER (what s3s-fs spent meanwhile).
timed() {
    local round=$1 step=$2 name=$3
    shift 4
    settle
    local t0 t1 t2 s0 s1 rc=0 TIMEFORMAT='%3U %3S'
    s0=$(server_ticks)
    t0=$(date +%s.%N)
    { time "$@" >"$OUT/r$round-$name.out" 2>"$OUT/r$round-$name.err"; } \
        2>"$OUT/r$round-$name.time" || rc=$?
    t1=$(date +%s.%N)
    s1=$(server_ticks)
    if [[ $rc != 0 ]]; then
        tail -n 20 "$OUT/r$round-$name.err" >&2
        die "round $round: $step failed with exit code $rc (outputs in $OUT/r$round-$name.*)"
    fi
    sync
    t2=$(date +%s.%N)
    T_CMD=$(elapsed "$t0" "$t1")
    T_SYNC=$(elapsed "$t0" "$t2")
    CPU_CLIENT=$(awk '{ printf "%.2f", $1 + $2 }' "$OUT/r$round-$name.time")
    CPU_SERVER=$(awk -v a="$s0" -v b="$s1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }')
}

record() { # ROUND STEP BYTES_MOVED
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$DATA_BYTES" "$T_CMD" "$T_SYNC" \
        "$CPU_CLIENT" "$CPU_SERVER" >>"$RESULTS"
    printf '   round %s  %-17s %6.2f s (+ sync %6.2f s)  cpu %6.2f s + server %6.2f s  moved %s bytes\n' \
        "$1" "$2" "$T_CMD" "$T_SYNC" "$CPU_CLIENT" "$CPU_SERVER" "$3" >&2
}

# Bytes of the files named in `aws s3 sync` output lines "upload: LOCAL to s3://..." or
# "download: s3://... to LOCAL".
aws_bytes() { # FILE upload|download
    local total=0 size path
    while read -r path; do
        size=$(stat -c %s "$path")
        total=$((total + size))
    done < <(if [[ $2 == upload ]]; then
        sed -n 's/^upload: \(.*\) to s3:\/\/.*$/\1/p' "$1"
    else
        sed -n 's/^download: s3:\/\/.* to \(.*\)$/\1/p' "$1"
    fi)
    echo "$total"
}

json_field() { # FILE FIELD: from the JSON summary (one object, perhaps pretty-printed) in FILE
    "$PY" - "$1" "$2" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
if "{" not in text:
    sys.exit(f"no JSON summary in {sys.argv[1]}")
summary, _ = json.JSONDecoder().raw_decode(text[text.index("{"):])
print(summary[sys.argv[2]])
EOF
}

same_tree() { # A B: contents, modes and layout equal (the restore marker aside)
    diff -r -q --exclude=.nodefleet-restored "$1" "$2" >/dev/null ||
        die "$2 differs from $1"
    [[ $(cd "$1" && find . -path ./.nodefleet-restored -prune -o -printf '%p %m %y\n' | sort) == \
        $(cd "$2" && find . -path ./.nodefleet-restored -prune -o -printf '%p %m %y\n' | sort) ]] ||
        die "$2: modes or file types differ from $1"
}

# ---- set up --------------------------------------------------------------------------------

command -v cargo >/dev/null || die "cargo is needed"
install_s3sfs
install_awscli
AWS="$AWSCLI_VENV/bin/aws"

if [[ $SNAPSHOT == 1 ]]; then
    log "build (release)"
    cargo build -q --release -p nodefleet
    "$NODEFLEET" snapshot --help >/dev/null 2>&1 ||
        die "this nodefleet has no 'snapshot' subcommand (SNAPSHOT=0 runs the other steps)"
fi

mkdir -p "$SCRATCH"
log "data dir $DATA (seed $SEED)"
"$PY" "$DATAPY" generate "$DATA" --seed "$SEED" >"$OUT/generate.json"
DATA_BYTES=$(find "$DATA" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }')

PORT="${PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
export AWS_ACCESS_KEY_ID=nodefleet-bench
export AWS_SECRET_ACCESS_KEY=nodefleet-bench-secret
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL="http://$HOST:$PORT"
export AWS_EC2_METADATA_DISABLED=true
# Our own config, so a developer's ~/.aws cannot change the clients; path-style addressing
# (s3s-fs serves virtual-hosted buckets only for the domains it is given).
export AWS_CONFIG_FILE="$SCRATCH/aws-config"
export AWS_SHARED_CREDENTIALS_FILE="$SCRATCH/aws-credentials"
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL_S3
printf '[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n' >"$AWS_CONFIG_FILE"
: >"$AWS_SHARED_CREDENTIALS_FILE"

rm -rf "$S3ROOT"
mkdir -p "$S3ROOT"
log "s3s-fs on $AWS_ENDPOINT_URL, root $S3ROOT"
"$S3SFS" --host "$HOST" --port "$PORT" --access-key "$AWS_ACCESS_KEY_ID" \
    --secret-key "$AWS_SECRET_ACCESS_KEY" "$S3ROOT" >"$OUT/s3s-fs.log" 2>&1 &
S3SFS_PID=$!
for _ in $(seq 1 100); do
    "$AWS" s3api list-buckets >/dev/null 2>&1 && break
    kill -0 "$S3SFS_PID" 2>/dev/null || die "s3s-fs exited: $(cat "$OUT/s3s-fs.log")"
    sleep 0.1
done
"$AWS" s3api list-buckets >/dev/null || die "s3s-fs does not answer on $AWS_ENDPOINT_URL"
"$AWS" s3 mb "s3://$AWS_BUCKET" >/dev/null
"$AWS" s3 mb "s3://$SNAP_BUCKET" >/dev/null

{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- 2>/dev/null || echo ' (work tree has changes)')"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "memory: $(free -h | awk '/^Mem:/ { print $2 }')"
    echo "disk: $(df -h "$SCRATCH" | awk 'NR == 2 { print $1 ", " $2 " total, " $4 " free" }'), $(findmnt -n -o FSTYPE --target "$SCRATCH" 2>/dev/null || echo '?')"
    echo "kernel: $(uname -r)"
    echo "rustc: $(rustc --version)"
    echo "s3s-fs: $("$S3SFS" --version)"
    echo "awscli: $("$AWS" --version 2>&1)"
    echo "cache: $CACHE"
    echo "rounds: $ROUNDS, seed: $SEED, restore concurrency: ${CONCURRENCY:-CLI default}"
    echo "data: $DATA_BYTES bytes, $(find "$DATA" -type f | wc -l) files"
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

printf 'round\tstep\tbytes_moved\tbytes_data\tseconds_cmd\tseconds_sync\tcpu_client\tcpu_server\n' \
    >"$RESULTS"

# ---- rounds --------------------------------------------------------------------------------

CONCURRENCY_ARGS=()
[[ -n $CONCURRENCY ]] && CONCURRENCY_ARGS=(--concurrency "$CONCURRENCY")

for round in $(seq 1 "$ROUNDS"); do
    log "round $round of $ROUNDS"
    "$PY" "$DATAPY" reset "$DATA" --seed "$SEED"
    COPY="$SCRATCH/cp"
    DOWN="$SCRATCH/aws-down"
    RESTORED="$SCRATCH/restore"
    rm -rf "$COPY" "$DOWN" "$RESTORED"

    timed "$round" "cp -r" cp -- cp -r "$DATA" "$COPY"
    record "$round" "cp -r" "$DATA_BYTES"
    same_tree "$DATA" "$COPY"
    rm -rf "$COPY"

    timed "$round" "aws sync up" aws-up -- "$AWS" s3 sync --no-progress "$DATA" "s3://$AWS_BUCKET/r$round"
    record "$round" "aws sync up" "$(aws_bytes "$OUT/r$round-aws-up.out" upload)"

    mkdir -p "$DOWN"
    timed "$round" "aws sync down" aws-down -- "$AWS" s3 sync --no-progress "s3://$AWS_BUCKET/r$round" "$DOWN"
    record "$round" "aws sync down" "$(aws_bytes "$OUT/r$round-aws-down.out" download)"
    diff -r -q "$DATA" "$DOWN" >/dev/null || die "aws s3 sync download differs from the data"
    rm -rf "$DOWN"

    if [[ $SNAPSHOT == 1 ]]; then
        STORE="s3://$SNAP_BUCKET/r$round"
        timed "$round" "create" create -- \
            "$NODEFLEET" snapshot create --from "$DATA" --store "$STORE" --client reth --json
        record "$round" "create" "$(json_field "$OUT/r$round-create.out" bytes_transferred)"

        mkdir -p "$RESTORED"
        timed "$round" "restore" restore -- "$NODEFLEET" snapshot restore --store "$STORE" \
            --id latest --to "$RESTORED" "${CONCURRENCY_ARGS[@]}" --json
        record "$round" "restore" "$(json_field "$OUT/r$round-restore.out" bytes_transferred)"
        same_tree "$DATA" "$RESTORED"

        # The engine without the server: the same data through a file:// store on this disk.
        FSSTORE="$SCRATCH/fsstore"
        FSRESTORED="$SCRATCH/restore-fs"
        rm -rf "$FSSTORE" "$FSRESTORED"
        timed "$round" "create file://" create-file -- "$NODEFLEET" snapshot create \
            --from "$DATA" --store "file://$FSSTORE" --client reth --json
        record "$round" "create file://" "$(json_field "$OUT/r$round-create-file.out" bytes_transferred)"
        mkdir -p "$FSRESTORED"
        timed "$round" "restore file://" restore-file -- "$NODEFLEET" snapshot restore \
            --store "file://$FSSTORE" --id latest --to "$FSRESTORED" "${CONCURRENCY_ARGS[@]}" --json
        record "$round" "restore file://" "$(json_field "$OUT/r$round-restore-file.out" bytes_transferred)"
        same_tree "$DATA" "$FSRESTORED"
        rm -rf "$FSSTORE" "$FSRESTORED"
    fi

    "$PY" "$DATAPY" change "$DATA" --seed "$SEED" >"$OUT/r$round-change.json"

    if [[ $SNAPSHOT == 1 ]]; then
        timed "$round" "create incr" create-incr -- \
            "$NODEFLEET" snapshot create --from "$DATA" --store "$STORE" --client reth --json
        record "$round" "create incr" "$(json_field "$OUT/r$round-create-incr.out" bytes_transferred)"

        timed "$round" "restore incr" restore-incr -- "$NODEFLEET" snapshot restore \
            --store "$STORE" --id latest --to "$RESTORED" "${CONCURRENCY_ARGS[@]}" --json
        record "$round" "restore incr" "$(json_field "$OUT/r$round-restore-incr.out" bytes_transferred)"
        same_tree "$DATA" "$RESTORED"
        rm -rf "$RESTORED"
    fi

    timed "$round" "aws sync up incr" aws-up-incr -- \
        "$AWS" s3 sync --no-progress "$DATA" "s3://$AWS_BUCKET/r$round"
    record "$round" "aws sync up incr" "$(aws_bytes "$OUT/r$round-aws-up-incr.out" upload)"

    # Free the round's objects (straight from the server's root: s3s-fs keeps nothing else).
    rm -rf "${S3ROOT:?}/$AWS_BUCKET/r$round" "${S3ROOT:?}/$SNAP_BUCKET/r$round"
done
"$PY" "$DATAPY" reset "$DATA" --seed "$SEED"
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

log "report"
{
    echo '```'
    cat "$OUT/machine.txt"
    echo '```'
    echo
    "$PY" "$DATAPY" report "$RESULTS"
} | tee "$OUT/report.md"
