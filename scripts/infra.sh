#!/usr/bin/env bash
# The deployment's offline tools and checks (infra/template.yaml), pinned in infra/tools/:
#   scripts/infra.sh install   SAM CLI, cfn-lint and cargo-lambda into tools/infra/sam, checkov
#                              into tools/infra/checkov (two venvs: their pins conflict); idempotent
#   scripts/infra.sh check     cfn-lint (zero errors), sam validate --lint, checkov (zero failed
#                              checks; skips are written next to their resource, with the reason)
#   scripts/infra.sh build     sam build: the three functions with cargo-lambda (x86_64) into
#                              infra/.aws-sam
#   scripts/infra.sh sam ARGS  any other sam command (deploy, delete, logs) with the pinned SAM
# scripts/test.sh runs install, check and build. Nothing here talks to AWS.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
sam_venv=tools/infra/sam
checkov_venv=tools/infra/checkov
# No credentials or network are needed; the SAM CLI and cfn-lint still want a region.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export SAM_CLI_TELEMETRY=0

venv() {
  # The stamp records which requirements the venv was built from, so a changed pin rebuilds
  # it and an unchanged one costs nothing.
  local dir=$1 requirements=$2 probe=$3
  local stamp="$dir/.requirements.sha256" want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [[ -x $dir/bin/$probe && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    return
  fi
  if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "installing python3-venv (Debian)" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  fi
  echo "installing $(basename "$dir") into $dir (pinned in $requirements)" >&2
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  echo "$want" > "$stamp"
}

install() {
  venv "$sam_venv" infra/tools/sam-requirements.txt sam
  venv "$checkov_venv" infra/tools/checkov-requirements.txt checkov
}

check() {
  install
  echo "cfn-lint infra/template.yaml" >&2
  "$sam_venv/bin/cfn-lint" infra/template.yaml
  echo "sam validate --lint" >&2
  (cd infra && "../$sam_venv/bin/sam" validate --lint)
  echo "checkov" >&2
  # --skip-download: checkov would fetch guidelines from Prisma Cloud; the checks are local.
  "$checkov_venv/bin/checkov" --file infra/template.yaml --framework cloudformation \
    --quiet --compact --skip-download
}

build() {
  install
  # sam finds cargo-lambda (and its zig) on PATH.
  (cd infra && PATH="$PWD/../$sam_venv/bin:$PATH" "../$sam_venv/bin/sam" build)
  # Each artifact runs here (its glibc is Lambda's or older) and, with an empty environment,
  # stops at its settings check naming the first missing variable, as a misconfigured
  # deployment would.
  local bootstrap answer
  for bootstrap in infra/.aws-sam/build/*Function/bootstrap; do
    answer=$(env -i "$bootstrap" 2>&1 || true)
    if [[ $answer != *"is not set"* ]]; then
      echo "$bootstrap did not stop at its settings check: $answer" >&2
      exit 1
    fi
    echo "$bootstrap: ${answer##*$'\n'}" >&2
  done
}

sam() {
  install
  (cd infra && PATH="$PWD/../$sam_venv/bin:$PATH" "../$sam_venv/bin/sam" "$@")
}

case "${1:-}" in
  install) install ;;
  check) check ;;
  build) build ;;
  sam) shift; sam "$@" ;;
  *)
    echo "usage: $0 install|check|build|sam ARGS" >&2
    exit 2
    ;;
esac
