#!/usr/bin/env bash
# The main job, offline: start a local registry, build and push a worker image, add it,
# run it under the engine, read its logs, exec into it, and remove it.
# Everything lives in a temp dir and is cleaned up (processes ended by PID) on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
scripts/install-deps.sh
cargo build --release --quiet
III=$repo/target/release/iii

demo=$(mktemp -d /tmp/iii-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$demo"
}
trap cleanup EXIT
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "starting a local registry (Debian's docker-registry) on 127.0.0.1"
source scripts/lib/registry.sh
start_registry "$demo/registry"
pids+=("$REGISTRY_PID")
registry=$REGISTRY
echo "registry at $registry"

step "building a worker image (static busybox + a tiny worker) and pushing it"
scripts/push-demo-image.sh "$registry" demo/echo-worker 1.0 >/dev/null
echo "pushed $registry/demo/echo-worker:1.0"

export III_HOME=$demo/store
cd "$demo"
step "iii worker add $registry/demo/echo-worker:1.0"
"$III" worker add "$registry/demo/echo-worker:1.0"
step "config.yaml now holds"
cat config.yaml

step "iii (the engine) starts every worker in config.yaml"
"$III" >"$demo/engine.log" 2>&1 &
engine=$!
pids+=($engine)
for _ in $(seq 100); do "$III" worker list 2>/dev/null | grep -q running && break; sleep 0.1; done
"$III" worker list
sleep 1
step "iii worker logs echo-worker"
"$III" worker logs echo-worker
step "iii worker exec echo-worker -- sh -c 'hostname; id; ls /'"
"$III" worker exec echo-worker -- sh -c 'hostname; id; ls /'
step "iii worker remove echo-worker"
"$III" worker remove echo-worker
cat config.yaml
kill -TERM "$engine"
wait "$engine" || true
step "engine stopped; done"
