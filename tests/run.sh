#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this file):
#   1. a virtualenv with rigforge and its test dependencies,
#   2. ruff and mypy, then the default tier (unit, facts, operations, templates, rules: no GPU, root or
#      network; as root it first takes promtool and prometheus out of Debian's prometheus package),
#   3. the target tier (a Debian target booted with systemd, over SSH on loopback) when root,
#   4. the gpu tier (read-only NVML checks) when an NVIDIA driver answers.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage's wall time is printed when the next one starts, and all of them at the end.
run_start=$SECONDS
stage_name=
stage_start=$SECONDS
times=()
stage_end() {
    if [ -n "$stage_name" ]; then
        times+=("$(printf '%-28s %6d s' "$stage_name" $((SECONDS - stage_start)))")
        printf '=== %s: %d s\n' "$stage_name" $((SECONDS - stage_start))
    fi
}
stage() {
    stage_end
    stage_name="$*"
    stage_start=$SECONDS
    printf '\n=== %s ===\n' "$*"
}
# The target tier writes one line per cache it used (Debian trees, llama-server build):
# "hit" or "cold: built in N s". Removed first so a summary never shows an earlier run's.
caches=.target/run/caches.txt
rm -f "$caches"
summary() {
    stage_end
    stage_name=
    printf '\n=== stage times\n'
    printf '%s\n' "${times[@]}"
    printf '%-28s %6d s\n' "whole run" $((SECONDS - run_start))
    if [ -s "$caches" ]; then
        printf '\n=== caches\n'
        cat "$caches"
    fi
}
trap summary EXIT

stage "virtualenv"
if ! python3 -m venv .venv 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv .venv
    else
        echo "python3 -m venv failed: install python3-venv (sudo apt-get install python3-venv)" >&2
        exit 1
    fi
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'

stage "ruff and mypy"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy tuning inventory deploys

if { ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; } \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # The rule tests run Prometheus's own promtool and prometheus (they skip without them).
    # Only the two binaries are taken out of Debian's prometheus package: installing the
    # package would also start a Prometheus server on every interface of the CI machine.
    stage "promtool and prometheus (binaries from Debian's prometheus package)"
    apt-get update -qq
    prometheus_tmp=$(mktemp -d)
    (cd "$prometheus_tmp" && apt-get download -qq prometheus >/dev/null)
    dpkg-deb -x "$prometheus_tmp"/prometheus_*.deb "$prometheus_tmp/root"
    install -m 755 "$prometheus_tmp/root/usr/bin/promtool" "$prometheus_tmp/root/usr/bin/prometheus" \
        /usr/local/bin/
    rm -rf "$prometheus_tmp"
fi

stage "default tier"
.venv/bin/pytest -q

if [ "$(id -u)" = 0 ] && [ -f tests/target/run.sh ]; then
    stage "target tier"
    bash tests/target/run.sh
else
    echo "target tier skipped: it builds a Debian target with debootstrap and needs root"
fi

if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    stage "gpu tier (read-only)"
    .venv/bin/pytest -q -m gpu tests/gpu
fi
