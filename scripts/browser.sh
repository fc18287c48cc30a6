#!/usr/bin/env bash
# The real browser the status page's test drives (cli/tests/status_page.rs runs
# tests/browser/status_page.mjs with it):
#   scripts/browser.sh install   Debian's chromium (apt-get) if /usr/bin/chromium is missing, and
#                                playwright-core, pinned in tests/browser/package-lock.json, into
#                                tools/browser/node_modules (npm ci); idempotent
#   scripts/browser.sh check     exit 0 if both are installed, else say what is missing (exit 1)
# Playwright never downloads a browser here (the machines reach no browser download site): the
# script launches /usr/bin/chromium itself, and the npm install skips every download hook.
# scripts/test.sh runs `install`.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=/usr/bin/chromium
dir=tools/browser
lock=tests/browser/package-lock.json
manifest=tests/browser/package.json

# Which manifest and lock the installed modules came from: a changed pin reinstalls, an
# unchanged one costs nothing.
want_stamp() {
  cat "$manifest" "$lock" | sha256sum | cut -d' ' -f1
}

modules_current() {
  local stamp="$dir/.lock.sha256"
  [[ -f $dir/node_modules/playwright-core/package.json && -f $stamp && $(cat "$stamp") == "$(want_stamp)" ]]
}

install() {
  if [[ ! -x $chromium ]]; then
    echo "installing chromium (Debian) for the status page's browser test" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  if modules_current; then
    return
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing npm (Debian) for playwright-core" >&2
    apt-get update -qq && apt-get install -y -qq npm >/dev/null
  fi
  echo "installing playwright-core into $dir (pinned in $lock)" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$manifest" "$lock" "$dir/"
  # --ignore-scripts and the skip variable: playwright-core has no install hook today, and a
  # later one that fetched a browser would fail here.
  (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  want_stamp > "$dir/.lock.sha256"
}

check() {
  local missing=0
  if [[ ! -x $chromium ]]; then
    echo "$chromium is missing: run scripts/browser.sh install" >&2
    missing=1
  fi
  if ! modules_current; then
    echo "playwright-core is not installed (or not at the pinned version) in $dir: run scripts/browser.sh install" >&2
    missing=1
  fi
  return "$missing"
}

case "${1:-}" in
  install) install ;;
  check) check ;;
  *) echo "usage: $0 install|check" >&2; exit 2 ;;
esac
