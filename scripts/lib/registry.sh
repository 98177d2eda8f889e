# Sourced by the demo and the benchmarks: start Debian's docker-registry on a free port of
# 127.0.0.1 with its storage under DIR. Sets REGISTRY_PID and REGISTRY (host:port); the caller
# ends the registry by that PID in its cleanup.
start_registry() { # DIR
    local dir=$1 port=
    mkdir -p "$dir"
    cat >"$dir/registry.yml" <<YML
version: 0.1
log: {level: info, formatter: text}
storage: {filesystem: {rootdirectory: $dir/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:0}
YML
    docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
    REGISTRY_PID=$!
    for _ in $(seq 200); do
        port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$dir/registry.log" | head -1 | cut -d: -f2 || true)
        [ -n "$port" ] && break
        sleep 0.05
    done
    if [ -z "$port" ]; then
        echo "error: docker-registry did not start:" >&2
        cat "$dir/registry.log" >&2
        return 1
    fi
    REGISTRY=127.0.0.1:$port
}
