#!/usr/bin/env bash
# End-to-end load of eth_blockNumber on loopback, side by side (issue 2):
#   anvil          one anvil node, direct
#   nginx          nginx as a plain reverse proxy in front of it (1 worker, keep-alive
#                  upstream, access_log on, to a file)
#   gateway        `nodefleet gateway` (release build, full filtering), request log (one JSON
#                  line per request on stderr) to a file
#   nginx-nolog    the same nginx worker, a second server block with access_log off
#   gateway-nolog  a second gateway with RUST_LOG=warn (no request log lines)
# The configurations run interleaved, ROUNDS times; each run gets a short warm-up first.
# Target: gateway throughput >= 1.0x nginx's (same logging setting).
#
# Everything listens on 127.0.0.1 only, and every process started here is stopped on exit.
#
# Usage: bench/gateway-e2e.sh            (from anywhere; needs wrk, nginx, curl, cargo)
# Knobs (environment): THREADS=1 CONNECTIONS=16 DURATION=10s WARMUP=2s ROUNDS=2
#                      PORT_BASE=28545 (uses PORT_BASE..PORT_BASE+4)
#                      CONFIGS="anvil nginx gateway nginx-nolog gateway-nolog"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
THREADS="${THREADS:-1}"
CONNECTIONS="${CONNECTIONS:-16}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-2s}"
ROUNDS="${ROUNDS:-2}"
PORT_BASE="${PORT_BASE:-28545}"
CONFIGS="${CONFIGS:-anvil nginx gateway nginx-nolog gateway-nolog}"

ANVIL_PORT=$PORT_BASE
NGINX_PORT=$((PORT_BASE + 1))
NGINX_NOLOG_PORT=$((PORT_BASE + 2))
GATEWAY_PORT=$((PORT_BASE + 3))
GATEWAY_NOLOG_PORT=$((PORT_BASE + 4))
HOST=127.0.0.1
LUA="$ROOT/bench/post-eth-blockNumber.lua"
ANVIL="$ROOT/tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
NODEFLEET="$ROOT/target/release/nodefleet"
BODY='{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'

for tool in wrk nginx curl cargo; do
    command -v "$tool" >/dev/null || {
        echo "missing $tool (Debian: apt-get install -y wrk nginx curl)" >&2
        exit 1
    }
done

WORK="$(mktemp -d /tmp/nodefleet-e2e.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    echo "stopped ${#PIDS[@]} processes; logs kept in $WORK" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
for port in $ANVIL_PORT $NGINX_PORT $NGINX_NOLOG_PORT $GATEWAY_PORT $GATEWAY_NOLOG_PORT; do
    port_free "$port" || {
        echo "port $HOST:$port is in use; set PORT_BASE" >&2
        exit 1
    }
done

# Waits until URL answers eth_blockNumber with a result.
wait_ready() {
    local name=$1 url=$2 i
    for i in $(seq 1 100); do
        if curl -s -m 1 -H 'content-type: application/json' -d "$BODY" "$url" 2>/dev/null |
            grep -q '"result"'; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name at $url did not answer eth_blockNumber" >&2
    exit 1
}

echo "== build" >&2
(cd "$ROOT" && cargo build -q --release -p nodefleet)
if [ ! -x "$ANVIL" ]; then
    (cd "$ROOT" && cargo run -q --release -p nodefleet -- tools install)
fi

echo "== start (logs in $WORK)" >&2
"$ANVIL" --host "$HOST" --port "$ANVIL_PORT" --quiet >"$WORK/anvil.log" 2>&1 &
PIDS+=($!)
ANVIL_PID=$!

mkdir -p "$WORK/nginx/logs"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    client_body_temp_path $WORK/nginx/client_body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    # Do not close client connections after 1000 requests (nginx's default); the gateway
    # and anvil never do.
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream anvil {
        server $HOST:$ANVIL_PORT;
        keepalive 32;
        keepalive_requests 1000000;
    }
    server {
        listen $HOST:$NGINX_PORT;
        access_log $WORK/nginx/logs/access.log;
        location / {
            proxy_pass http://anvil;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen $HOST:$NGINX_NOLOG_PORT;
        access_log off;
        location / {
            proxy_pass http://anvil;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" \
    >"$WORK/nginx/stdout.log" 2>&1 &
PIDS+=($!)
NGINX_PID=$!

"$NODEFLEET" gateway --listen "$HOST:$GATEWAY_PORT" --upstream "http://$HOST:$ANVIL_PORT" \
    >"$WORK/gateway.stdout" 2>"$WORK/gateway.log" &
PIDS+=($!)
GATEWAY_PID=$!
RUST_LOG=warn "$NODEFLEET" gateway --listen "$HOST:$GATEWAY_NOLOG_PORT" \
    --upstream "http://$HOST:$ANVIL_PORT" \
    >"$WORK/gateway-nolog.stdout" 2>"$WORK/gateway-nolog.log" &
PIDS+=($!)
GATEWAY_NOLOG_PID=$!

wait_ready anvil "http://$HOST:$ANVIL_PORT/"
wait_ready nginx "http://$HOST:$NGINX_PORT/"
wait_ready nginx-nolog "http://$HOST:$NGINX_NOLOG_PORT/"
wait_ready gateway "http://$HOST:$GATEWAY_PORT/"
wait_ready gateway-nolog "http://$HOST:$GATEWAY_NOLOG_PORT/"
# The gateway really filters: a denied method never reaches anvil.
curl -s -H 'content-type: application/json' \
    -d '{"jsonrpc":"2.0","id":1,"method":"anvil_mine","params":[]}' \
    "http://$HOST:$GATEWAY_PORT/" | grep -q -- '-32601' || {
    echo "gateway did not deny anvil_mine" >&2
    exit 1
}

port_of() {
    case $1 in
    anvil) echo "$ANVIL_PORT" ;;
    nginx) echo "$NGINX_PORT" ;;
    nginx-nolog) echo "$NGINX_NOLOG_PORT" ;;
    gateway) echo "$GATEWAY_PORT" ;;
    gateway-nolog) echo "$GATEWAY_NOLOG_PORT" ;;
    esac
}
# The proxy's processes (for CPU accounting): nginx's master and worker, or the gateway.
proxy_pids_of() {
    case $1 in
    anvil) echo "" ;;
    nginx | nginx-nolog) echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')" ;;
    gateway) echo "$GATEWAY_PID" ;;
    gateway-nolog) echo "$GATEWAY_NOLOG_PID" ;;
    esac
}
# CPU time (user + system, clock ticks) of the given processes.
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
RESULTS="$WORK/results.txt"
: >"$RESULTS"
echo "== run: wrk -t$THREADS -c$CONNECTIONS -d$DURATION (warm-up $WARMUP), $ROUNDS rounds" >&2
for round in $(seq 1 "$ROUNDS"); do
    for config in $CONFIGS; do
        url="http://$HOST:$(port_of "$config")/"
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$LUA" "$url" >/dev/null
        proxy_pids=$(proxy_pids_of "$config")
        # shellcheck disable=SC2086
        proxy_before=$(cpu_ticks $proxy_pids)
        anvil_before=$(cpu_ticks "$ANVIL_PID")
        out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA" "$url")
        # shellcheck disable=SC2086
        proxy_after=$(cpu_ticks $proxy_pids)
        anvil_after=$(cpu_ticks "$ANVIL_PID")
        echo "$out" >"$WORK/wrk-$config-$round.txt"
        read -r _ requests rps p50 p99 errors non2xx <<<"$(echo "$out" | grep '^RESULT')"
        proxy_us=$(awk -v t=$((proxy_after - proxy_before)) -v r="$requests" -v u="$TICK_US" \
            'BEGIN { printf "%.1f", t * u / r }')
        anvil_us=$(awk -v t=$((anvil_after - anvil_before)) -v r="$requests" -v u="$TICK_US" \
            'BEGIN { printf "%.1f", t * u / r }')
        echo "$round $config $requests $rps $p50 $p99 $errors $non2xx $proxy_us $anvil_us" >>"$RESULTS"
        printf '  round %s %-14s %9.0f req/s  p50 %6d us  p99 %6d us\n' \
            "$round" "$config" "$rps" "$p50" "$p99" >&2
    done
done

COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$ROOT" status --porcelain -- shared cli functions 2>/dev/null)" ]; then
    COMMIT="$COMMIT+local changes"
fi
echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, POST eth_blockNumber, $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ), commit $COMMIT"
echo "load average before the runs: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round | config | requests | req/s | p50 (ms) | p99 (ms) | socket errors | non-2xx | proxy CPU us/req | anvil CPU us/req |"
echo "|---|---|---|---|---|---|---|---|---|---|"
awk '{ printf "| %s | %s | %d | %.0f | %.3f | %.3f | %d | %d | %s | %s |\n",
       $1, $2, $3, $4, $5 / 1000, $6 / 1000, $7, $8, ($2 == "anvil" ? "-" : $9), $10 }' "$RESULTS"
echo
echo "| round | gateway / nginx (req/s) | gateway-nolog / nginx-nolog (req/s) |"
echo "|---|---|---|"
awk '{ rps[$1, $2] = $4; rounds[$1] = 1 }
     END {
       for (r in rounds) {
         a = (rps[r, "nginx"] > 0) ? sprintf("%.2fx", rps[r, "gateway"] / rps[r, "nginx"]) : "-"
         b = (rps[r, "nginx-nolog"] > 0) ? sprintf("%.2fx", rps[r, "gateway-nolog"] / rps[r, "nginx-nolog"]) : "-"
         printf "| %s | %s | %s |\n", r, a, b
       }
     }' "$RESULTS" | sort
awk '{ sum[$2] += $4; n[$2]++ }
     END {
       if (n["nginx"] && n["gateway"])
         printf "\nmean over rounds: gateway/nginx = %.2fx (target >= 1.0x: %s)\n",
           sum["gateway"] / sum["nginx"], (sum["gateway"] >= sum["nginx"]) ? "PASS" : "FAIL"
       if (n["nginx-nolog"] && n["gateway-nolog"])
         printf "mean over rounds: gateway-nolog/nginx-nolog = %.2fx\n",
           sum["gateway-nolog"] / sum["nginx-nolog"]
     }' "$RESULTS"
