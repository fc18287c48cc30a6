#!/usr/bin/env bash
# The moto server the AWS-adapter tests talk to, on a loopback port.
#   scripts/moto.sh install   pinned moto into tools/moto (a Python venv); idempotent
#   scripts/moto.sh start     install if needed, start on a free port, print the URL
#   scripts/moto.sh stop      stop the server started by `start`
# scripts/test.sh uses all three; run them by hand to test one crate with cargo test:
#   export NODEFLEET_MOTO_ENDPOINT=$(scripts/moto.sh start)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=tools/moto
requirements=tests/moto/requirements.txt
state=tools/moto-server
python=${PYTHON:-python3}

install() {
  # The stamp records which requirements the venv was built from, so a changed pin
  # rebuilds it and an unchanged one costs nothing.
  local stamp="$venv/.requirements.sha256"
  local want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [[ -x $venv/bin/moto_server && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    return
  fi
  if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "installing python3-venv (Debian) for moto" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  fi
  echo "installing moto into $venv (pinned in $requirements)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  echo "$want" > "$stamp"
}

free_port() {
  "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  install
  stop_quietly
  mkdir -p "$state"
  local port url
  port=$(free_port)
  url="http://127.0.0.1:$port"
  # tests/moto/serve.py is moto_server with requests serialised (why: in that file).
  MOTO_PORT=$port "$venv/bin/python" tests/moto/serve.py 127.0.0.1 "$port" > "$state/server.log" 2>&1 &
  echo $! > "$state/pid"
  for _ in $(seq 1 100); do
    if "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url/moto-api/" 2>/dev/null; then
      echo "$url" > "$state/url"
      echo "$url"
      return
    fi
    if ! kill -0 "$(cat "$state/pid")" 2>/dev/null; then
      echo "moto exited during start-up; its log:" >&2
      cat "$state/server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "moto did not answer on $url within 10 s; its log is $state/server.log" >&2
  exit 1
}

stop_quietly() {
  if [[ -f $state/pid ]]; then
    local pid
    pid=$(cat "$state/pid")
    kill "$pid" 2>/dev/null || true
    # Wait for it to go (it finishes its open connections first), then make sure.
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$state/pid" "$state/url"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_quietly ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
