#!/usr/bin/env bash
# bench-worker-port.sh — the engine's worker port under load, measured with clients written
# against the wire protocol (examples/engine_load.rs), beside the floor measured in the same
# run: a plain WebSocket echo round trip over loopback with the same crate.
#
# Prints: forwarded-call throughput (8 callers, 1 callee, 32 calls in flight per caller),
# p50/p99 of one call at a time against the echo floor, HTTP-trigger requests/s and p99 with
# keep-alive load (paced at 1,000 req/s, then as fast as it answers), and engine RSS idle and
# with 1,000 connected idle workers.
#
# ENGINE_URL=ws://HOST:PORT points the call load at another engine that speaks the protocol
# (nothing is started then; the HTTP and RSS rows are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
secs=${SECONDS_PER_RUN:-5}
cargo build --release --quiet --bin iii --example engine_load
III=${III_BIN:-$repo/target/release/iii}
LOAD=$repo/target/release/examples/engine_load

work=$(mktemp -d /tmp/iii-bench-port.XXXXXX)
pids=()
cleanup() {
    set +e
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
get() { sed -n "s/^$1=//p" "$2"; }

echo "== WebSocket echo floor (same crate, loopback)"
"$LOAD" echo-floor 3 | tee "$work/floor"

if [ -n "${ENGINE_URL:-}" ]; then
    echo "== forwarded calls against $ENGINE_URL"
    "$LOAD" calls "$ENGINE_URL" 8 32 "$secs" | tee "$work/calls"
    exit 0
fi

cd "$work"
cat >config.yaml <<'YML'
workers:
  - name: iii-worker-manager
    config: {port: 0}
  - name: iii-http
    config: {port: 0}
YML
"$III" 2>engine.log &
engine=$!
pids+=("$engine")
for _ in $(seq 100); do
    grep -q 'iii engine: ws://' engine.log && grep -q 'iii-http: http://' engine.log && break
    sleep 0.05
done
wport=$(sed -n 's/^iii engine: ws:\/\/127.0.0.1:\([0-9]*\).*/\1/p' engine.log)
hport=$(sed -n 's/^iii-http: http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' engine.log)
url=ws://127.0.0.1:$wport
sleep 0.5
idle_rss=$(rss_kib "$engine")

echo "== forwarded calls (8 callers x 32 in flight, 1 callee)"
"$LOAD" calls "$url/" 8 32 "$secs" | tee calls

echo "== HTTP trigger, keep-alive"
"$LOAD" http-serve "$url/" /bench &
pids+=($!)
for _ in $(seq 100); do
    curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hport/bench" 2>/dev/null | grep -q 200 && break
    sleep 0.05
done
"$LOAD" http "http://127.0.0.1:$hport/bench" 16 1000 "$secs" | tee http-paced
"$LOAD" http "http://127.0.0.1:$hport/bench" 16 0 "$secs" | tee http-max

echo "== 1,000 idle workers"
"$LOAD" idle "$url/" 1000 >idle.out &
pids+=($!)
for _ in $(seq 600); do grep -q idle_connected idle.out 2>/dev/null && break; sleep 0.1; done
sleep 1
busy_rss=$(rss_kib "$engine")

f() { printf '%s' "$1"; }
echo
echo "== summary (targets in brackets)"
printf '%-46s %12s\n' "forwarded calls/s" "$(get calls_per_second calls)  [>= 50000]"
printf '%-46s %12s\n' "forwarded call p50 / p99 (us)" "$(get call_p50_us calls) / $(get call_p99_us calls)"
printf '%-46s %12s\n' "echo floor p50 / p99 (us)" "$(get echo_p50_us "$work/floor") / $(get echo_p99_us "$work/floor")"
ratio=$(awk -v a="$(get call_p50_us calls)" -v b="$(get echo_p50_us "$work/floor")" 'BEGIN {printf "%.2f", a / b}')
printf '%-46s %12s\n' "call p50 / echo p50" "${ratio}x  [<= 2x]"
printf '%-46s %12s\n' "HTTP at 1,000 req/s: p50 / p99 (us)" "$(get http_p50_us http-paced) / $(get http_p99_us http-paced)  [p99 < 5000]"
printf '%-46s %12s\n' "HTTP closed loop (16 conns): req/s, p99 (us)" "$(get http_rps http-max), $(get http_p99_us http-max)"
printf '%-46s %12s\n' "HTTP errors (paced, closed loop)" "$(get http_errors http-paced), $(get http_errors http-max)"
printf '%-46s %12s\n' "engine RSS idle (MiB)" "$(awk -v k="$idle_rss" 'BEGIN {printf "%.1f", k / 1024}')  [< 16]"
printf '%-46s %12s\n' "engine RSS, 1,000 idle workers (MiB)" "$(awk -v k="$busy_rss" 'BEGIN {printf "%.1f", k / 1024}')  [< 64]"
