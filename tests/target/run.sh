#!/usr/bin/env bash
# The whole target tier in one command: prerequisites, the pristine Debian tree, the targets,
# `pytest -m target tests/target` (test_loop: deploy + tuner, remote sweep, profile fetched and
# applied, stale profile refused; test_multi_host: ws-a + ws-b in one parallel run, ws-b fails
# alone; test_target: deploy twice, kill-and-rerun, testinfra), then stop them.
# Prints the wall time of each stage; exits non-zero on failure, 0 with a reason when the tier
# cannot run here (not root, no debootstrap and no way to install it).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
export RIGFORGE_TARGET_TIMINGS="${RIGFORGE_TARGET_TIMINGS:-$PWD/.target/run/timings.txt}"
mkdir -p .target/run
: >"$RIGFORGE_TARGET_TIMINGS"

stage_start=0
stage() { stage_start=$(date +%s.%N); echo "== target tier: $1"; }
stage_done() {
  local t
  t=$(awk -v a="$stage_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '%-34s %8s s\n' "$1" "$t" | tee -a "$RIGFORGE_TARGET_TIMINGS"
}
tier_start=$(date +%s.%N)

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP target tier: needs root (debootstrap, unshare, mount)"
  exit 0
fi

stage "prerequisites"
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v pgrep >/dev/null || missing+=(procps)
if [ ${#missing[@]} -gt 0 ]; then
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null; then
    echo "SKIP target tier: could not install ${missing[*]} (no network?)"
    exit 0
  fi
fi
stage_done "prerequisites"

cleanup() { "$PY" -m tests.target.harness stop-all || true; }
trap cleanup EXIT INT TERM

stage "pristine tree (cache or debootstrap)"
if ! "$PY" -m tests.target.harness build; then
  echo "FAIL target tier: could not build the Debian target (network to the mirror?)"
  exit 1
fi
stage_done "pristine tree"

stage "pytest -m target tests/target"
rc=0
"$PY" -m pytest -m target tests/target -p no:cacheprovider -q -s "$@" || rc=$?
stage_done "pytest -m target (total)"

echo "== target tier timings"
cat "$RIGFORGE_TARGET_TIMINGS"
awk -v a="$tier_start" -v b="$(date +%s.%N)" 'BEGIN { printf "whole target tier                  %8.1f s\n", b - a }'
exit "$rc"
