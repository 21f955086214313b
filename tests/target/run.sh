#!/usr/bin/env bash
# The whole target tier in one command: prerequisites, the real llama-server (cached, else
# built from PyPI's llama.cpp sources in the background while the rest runs), the pristine
# Debian trees (minbase, then systemd-booted), the targets booted under systemd-nspawn,
# `pytest -m target` (test_converge, test_dry_plans, test_loop: deploy + tuner, remote sweep,
# profile fetched and applied, stale profile refused; test_multi_host: ws-a + ws-b in one
# parallel run, ws-b fails alone; test_target: the CI inventory's two llama.cpp engines served
# for real, every unit active or exited 0, deploy twice with no restart, reboot, kill-and-rerun,
# testinfra with no serving check skipped; the engine modules: llama.cpp under the rendered unit,
# the tuner sweeping two engines, one engine on an opened address with its API key;
# test_monitoring: exporter + Prometheus units, cap-drift / thermal / serving-down alerts), then
# stop them. Prints the wall time of each stage and, per cache (Debian trees, llama-server
# build), "hit" or "cold: built in N s"; exits non-zero on failure (also when a
# prerequisite cannot be installed: nothing is skipped silently), 0 with a reason when not root.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
export RIGFORGE_TARGET_TIMINGS="${RIGFORGE_TARGET_TIMINGS:-$PWD/.target/run/timings.txt}"
# One line per cache (Debian trees, llama-server build): "cache hit" or "cold: built in N s";
# tests/run.sh prints this file in its summary too.
CACHES=.target/run/caches.txt
mkdir -p .target/run
: >"$RIGFORGE_TARGET_TIMINGS"
: >"$CACHES"

stage_start=0
stage() { stage_start=$(date +%s.%N); echo "== target tier: $1"; }
stage_done() {
  local t
  t=$(awk -v a="$stage_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  printf '%-34s %8s s\n' "$1" "$t" | tee -a "$RIGFORGE_TARGET_TIMINGS"
}
tier_start=$(date +%s.%N)

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP target tier: needs root (debootstrap, systemd-nspawn)"
  exit 0
fi

stage "prerequisites"
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v pgrep >/dev/null || missing+=(procps)
# test_engine_open: the opened address lives in network namespaces of its own (ip netns),
# and its requests come from one of them (curl).
command -v ip >/dev/null || missing+=(iproute2)
command -v curl >/dev/null || missing+=(curl)
if ! "$PY" -c 'import sys; from tests.target import engine; sys.exit(not engine.cached_binary().is_file())'; then
  # No cached llama-server for these inputs: it is built here (tests/target/engine.py).
  command -v cmake >/dev/null || missing+=(cmake)
  command -v c++ >/dev/null || missing+=(g++)
  command -v ninja >/dev/null || missing+=(ninja-build)
fi
if [ ${#missing[@]} -gt 0 ]; then
  # A root machine that cannot install them cannot run the tier: fail loudly, never skip.
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null; then
    echo "FAIL target tier: could not install ${missing[*]} (no network to the Debian mirror?)"
    exit 1
  fi
fi
stage_done "prerequisites"

engine_pid=
cleanup() {
  "$PY" -m tests.target.harness stop-all || true
  if [ -n "$engine_pid" ]; then kill "$engine_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM

# Started first: a cold build takes ~5.5 min on 2 idle cores (326 s measured), ~21 min on busy ones; test_engine (run last) waits for it.
engine_start=$(date +%s.%N)
"$PY" -m tests.target.engine build .target/run/llama-build.log >.target/run/llama-build.out 2>&1 &
engine_pid=$!

stage "pristine trees (cache, or debootstrap + systemd)"
if ! "$PY" -m tests.target.harness build | tee -a "$CACHES"; then
  echo "FAIL target tier: could not build the Debian target (network to the mirror?)"
  exit 1
fi
stage_done "pristine trees"

stage "pytest -m target tests/target"
rc=0
# The modules that serve (test_target: the CI inventory's engines; the engine modules;
# test_monitoring) last: they wait for the llama-server build above, which the others overlap.
serving="tests/target/test_target.py tests/target/test_engine.py tests/target/test_engine_tune.py
  tests/target/test_engine_open.py tests/target/test_monitoring.py"
modules=$(ls tests/target/test_*.py | grep -v -e test_target.py -e test_engine -e test_monitoring.py)
# shellcheck disable=SC2086
"$PY" -m pytest -m target $modules $serving -p no:cacheprovider -q -s "$@" || rc=$?
stage_done "pytest -m target (total)"
if wait "$engine_pid"; then
  awk -v a="$engine_start" -v b="$(date +%s.%N)" \
    'BEGIN { printf "%-34s %8.1f s (ended by then)\n", "llama-server (cache or build)", b - a }' |
    tee -a "$RIGFORGE_TARGET_TIMINGS"
else
  echo "FAIL target tier: building llama-server failed; see .target/run/llama-build.log"
  cat .target/run/llama-build.out
  rc=1
fi
engine_pid=
cat .target/run/llama-build.out
grep '^cache ' .target/run/llama-build.out >>"$CACHES" || true

echo "== target tier timings"
cat "$RIGFORGE_TARGET_TIMINGS"
echo "== caches"
cat "$CACHES"
awk -v a="$tier_start" -v b="$(date +%s.%N)" 'BEGIN { printf "whole target tier                  %8.1f s\n", b - a }'
exit "$rc"
