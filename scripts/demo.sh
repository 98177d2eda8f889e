#!/usr/bin/env bash
# The main job: start a local registry, build a worker written with the published Python iii
# SDK into an image and push it, add it, run it under the engine, call its HTTP route and one
# of its functions, exec into it, and remove it. Needs nothing beyond the package registries
# (PyPI for the SDK, once; it is cached under target/).
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

step "building a real iii worker image (Python, PyPI iii-sdk) and pushing it"
echo "the worker: examples/sdk-worker/greeter.py"
scripts/push-sdk-worker-image.sh "$registry" demo/greeter 1.0 >/dev/null
echo "pushed $registry/demo/greeter:1.0"

export III_HOME=$demo/store
cd "$demo"
# The engine's built-in HTTP server on a free port, and the worker port on another.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
cat >config.yaml <<YAML
workers:
  - name: iii-worker-manager
    config: {port: $(free_port)}
  - name: iii-http
    config: {port: $http_port}
YAML
step "iii worker add $registry/demo/greeter:1.0"
"$III" worker add "$registry/demo/greeter:1.0"
step "config.yaml now holds"
cat config.yaml

step "iii (the engine) starts every worker in config.yaml"
"$III" >"$demo/engine.log" 2>&1 &
engine=$!
pids+=($engine)
for _ in $(seq 300); do "$III" trigger engine::functions::list 2>/dev/null | grep -q greeter::add && break; sleep 0.1; done
"$III" worker list
step "curl http://127.0.0.1:$http_port/hello/newcomer (an HTTP route the worker registered)"
curl -fsS -i "http://127.0.0.1:$http_port/hello/newcomer"
echo
step "iii trigger greeter::add a=2 b=40 (a function the worker serves)"
"$III" trigger greeter::add a=2 b=40
step "iii worker logs greeter"
"$III" worker logs greeter
step "iii worker exec greeter -- sh -c 'hostname; id; ls /app'"
"$III" worker exec greeter -- sh -c 'hostname; id; ls /app'
step "iii worker remove greeter"
"$III" worker remove greeter
cat config.yaml
kill -TERM "$engine"
wait "$engine" || true
step "engine stopped; done"
