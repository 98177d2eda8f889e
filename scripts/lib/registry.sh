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

# Push with the plain distribution API (curl): a blob (skipped when the registry has it) and
# a manifest. Sourced by the push-*-image.sh scripts.
push_blob() { # REGISTRY REPO FILE DIGEST
    local registry=$1 repo=$2 file=$3 digest=$4 loc sep='?'
    if curl -fsS -o /dev/null -I "http://$registry/v2/$repo/blobs/$digest" 2>/dev/null; then return; fi
    loc=$(curl -fsS -X POST -D - -o /dev/null "http://$registry/v2/$repo/blobs/uploads/" \
        | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    case $loc in http*) ;; *) loc=http://$registry$loc ;; esac
    case $loc in *\?*) sep='&' ;; esac
    curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$file" \
        "$loc${sep}digest=$digest" -o /dev/null
}
push_manifest() { # REGISTRY REPO TAG FILE — prints the manifest's digest
    curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary "@$4" "http://$1/v2/$2/manifests/$3" -o /dev/null
    echo "sha256:$(sha256sum "$4" | cut -d' ' -f1)"
}
