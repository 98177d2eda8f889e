#!/usr/bin/env bash
# bench-engine.sh — what one running worker costs on the host, and how fast workers start.
#
# Prints:
#   - idle RSS of a running worker's monitor (the one host process per worker; target < 4 MiB)
#   - worker start latency: `iii worker start` (detached, to "running") and `iii worker
#     restart`, against `runc run` of the same busybox rootfs as the anchor measured here.
# Offline: a local docker-registry, the demo busybox image, a temp project and store, all
# removed (processes ended by PID) on exit. Needs root (namespaces), like the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
runs=${RUNS:-10}
# III_BIN: measure that binary (e.g. the static musl release build) instead of building one.
if [ -n "${III_BIN:-}" ]; then
    III=$III_BIN
else
    cargo build --release --quiet
    III=${CARGO_TARGET_DIR:-$repo/target}/release/iii
fi

work=$(mktemp -d /tmp/iii-bench-engine.XXXXXX)
pids=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    # Detached monitors started below are ended by their recorded PID.
    for s in "$work"/proj/.iii/workers/*/state.json; do
        [ -f "$s" ] || continue
        m=$(grep -o '"monitor_pid":[0-9]*' "$s" | cut -d: -f2)
        [ -n "$m" ] && kill -KILL "$m" 2>/dev/null
    done
    runc delete -f "iii-bench-$$" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

source scripts/lib/registry.sh
start_registry "$work/registry"
pids+=("$REGISTRY_PID")
port=${REGISTRY##*:}
scripts/push-demo-image.sh "127.0.0.1:$port" bench/echo 1 >/dev/null

export III_HOME=$work/store
mkdir -p "$work/proj"
cd "$work/proj"
printf 'engine: {port: 0}\n' >config.yaml
"$III" worker add --name w "127.0.0.1:$port/bench/echo:1" >/dev/null 2>&1

ms() { date +%s%N; }
elapsed() { echo $(( ($2 - $1) / 1000000 )); }

# --- idle RSS of the monitor -----------------------------------------------------------
"$III" worker start w >/dev/null 2>&1
sleep 2
monitor=$(grep -o '"monitor_pid":[0-9]*' .iii/workers/w/state.json | cut -d: -f2)
rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$monitor/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$monitor/status")
# RSS counts the binary's and libc's text pages, shared with the engine and every other
# monitor; PSS and the private pages are what one more worker really costs.
pss_kib=$(awk '/^Pss:/ {print $2}' "/proc/$monitor/smaps_rollup")
priv_kib=$(awk '/^Private_(Clean|Dirty):/ {s += $2} END {print s}' "/proc/$monitor/smaps_rollup")
echo "monitor idle RSS: ${rss_kib} KiB (target < 4096 KiB), PSS ${pss_kib} KiB, private ${priv_kib} KiB, ${threads} threads"
"$III" worker stop -t 1 w >/dev/null 2>&1

# --- start latency ---------------------------------------------------------------------
total=0
for _ in $(seq "$runs"); do
    t0=$(ms); "$III" worker start w >/dev/null 2>&1; t1=$(ms)
    total=$(( total + $(elapsed "$t0" "$t1") ))
    "$III" worker stop -t 1 w >/dev/null 2>&1
done
iii_start=$(( total / runs ))
echo "iii worker start (to running, detached): ${iii_start} ms (mean of $runs)"

# Anchor: runc run of the same rootfs, start to exit of `true`.
rootfs=$(find "$III_HOME/images" -mindepth 3 -maxdepth 3 -type d -name rootfs | head -1)
if command -v runc >/dev/null && [ -n "$rootfs" ]; then
    bundle=$work/bundle
    mkdir -p "$bundle"
    (cd "$bundle" && runc spec)
    sed -i -e "s#\"path\": \"rootfs\"#\"path\": \"$rootfs\"#" \
        -e 's#"terminal": true#"terminal": false#' \
        -e 's#"sh"#"/bin/true"#' "$bundle/config.json"
    total=0
    for _ in $(seq "$runs"); do
        t0=$(ms); runc run --bundle "$bundle" "iii-bench-$$" >/dev/null 2>&1 || true; t1=$(ms)
        total=$(( total + $(elapsed "$t0" "$t1") ))
    done
    runc_ms=$(( total / runs ))
    echo "runc run (start to exit of /bin/true): ${runc_ms} ms (mean of $runs)"
    [ "$runc_ms" -gt 0 ] && echo "ratio iii start / runc run: $(awk "BEGIN {printf \"%.2f\", $iii_start / $runc_ms}")"
else
    echo "runc anchor skipped (runc or the extracted rootfs not found)"
fi
