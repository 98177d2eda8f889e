#!/bin/bash
# Benchmark: `iii worker sync --frozen` of a project pinning 3 image workers and 1 binary
# worker into an empty store, beside `skopeo copy` of the same 3 images (by digest) in the
# same run; then a warm `sync` (everything installed: what a CI job runs every time; target
# under 50 ms). Images come from a local docker-registry, the binary from an HTTPS server
# with a self-signed certificate, both on 127.0.0.1.
#
# Not a test: run by hand.   scripts/bench-sync.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

need() { command -v "$1" >/dev/null 2>&1; }
for tool in docker-registry skopeo umoci curl openssl python3 cc bc sha256sum; do
    need "$tool" || { echo "missing tool: $tool (apt-get install it)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/iii-bench-sync.XXXXXX)
REG_PID= HTTPS_PID=
cleanup() {
    for p in $REG_PID $HTTPS_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    chmod -R u+rwX "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
source scripts/lib/registry.sh
start_registry "$WORK/registry"
REG_PID=$REGISTRY_PID

# Three distinct images (a busybox root each, ~1 MB gzip).
declare -A DIGEST
for w in alpha beta gamma; do
    DIGEST[$w]=$(DEMO_GREETING=$w scripts/push-demo-image.sh "$REGISTRY" "bench/$w" 1)
done

# One binary worker: a small dynamically linked C program in a .tar.gz, served over HTTPS.
mkdir -p "$WORK/www" "$WORK/src/dist"
printf '#include <stdio.h>\nint main(int c, char **v) { printf("%%s\\n", v[0]); return 0; }\n' >"$WORK/src/w.c"
cc -O2 -o "$WORK/src/dist/delta" "$WORK/src/w.c"
tar -C "$WORK/src" -czf "$WORK/www/delta.tar.gz" dist/delta
BIN_SHA=$(sha256sum "$WORK/www/delta.tar.gz" | cut -d' ' -f1)
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
    -addext extendedKeyUsage=serverAuth -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
python3 - "$WORK" >"$WORK/https.port" 2>"$WORK/https.log" <<'PY' &
import http.server, ssl, sys, functools, os
work = sys.argv[1]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=os.path.join(work, "www"))
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(work, "tls.crt"), os.path.join(work, "tls.key"))
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
PY
HTTPS_PID=$!
for _ in $(seq 100); do [ -s "$WORK/https.port" ] && break; sleep 0.05; done
HTTPS_PORT=$(cat "$WORK/https.port")

# The project: what `add` would have written.
PROJ=$WORK/project
mkdir -p "$PROJ"
{
    echo "workers:"
    for w in alpha beta gamma; do printf '  - name: %s\n    image: %s/bench/%s:1\n' "$w" "$REGISTRY" "$w"; done
    echo "  - name: delta"
} >"$PROJ/config.yaml"
{
    echo "version: 1"
    echo "workers:"
    for w in alpha beta gamma; do
        printf '  %s:\n    version: "1"\n    type: image\n    dependencies: {}\n    source:\n      kind: image\n      image: %s/bench/%s@%s\n' \
            "$w" "$REGISTRY" "$w" "${DIGEST[$w]}"
    done
    printf '  delta:\n    version: 1.0.0\n    type: binary\n    dependencies: {}\n    source:\n      kind: binary\n      artifacts:\n        x86_64-unknown-linux-gnu:\n          url: https://127.0.0.1:%s/delta.tar.gz\n          sha256: %s\n' \
        "$HTTPS_PORT" "$BIN_SHA"
} >"$PROJ/iii.lock"

cargo build --release --bin iii >&2
III=$ROOT/target/release/iii
export SSL_CERT_FILE=$WORK/tls.crt III_ALLOW_PRIVATE_DOWNLOADS=1

source scripts/lib/bench.sh
cold_sync() { III_HOME=$WORK/home-$1 "$III" -c "$PROJ/config.yaml" worker sync --frozen 2>>"$WORK/sync.log"; }
skopeo_copy() {
    for w in alpha beta gamma; do
        skopeo copy -q --src-tls-verify=false "docker://$REGISTRY/bench/$w@${DIGEST[$w]}" \
            "oci:$WORK/oci-$1:$w" >/dev/null
    done
}
skopeo_umoci() {
    skopeo_copy "$1"
    for w in alpha beta gamma; do umoci unpack --image "$WORK/oci-$1:$w" "$WORK/bundle-$1-$w" >/dev/null 2>&1; done
}
warm_sync() { III_HOME=$WORK/home-1 "$III" -c "$PROJ/config.yaml" worker sync --frozen 2>/dev/null; }
warm_sync_plain() { III_HOME=$WORK/home-1 "$III" -c "$PROJ/config.yaml" worker sync 2>/dev/null; }

sync
T_SKOPEO=$(best skopeo_copy)
rm -rf "$WORK"/oci-*
T_UMOCI=$(best skopeo_umoci)
T_COLD=$(best cold_sync)
T_WARM=$(best warm_sync)
T_WARM_PLAIN=$(best warm_sync_plain)

# The timed syncs must have installed everything: 3 image trees and the binary, in each store.
for i in 1 2 3; do
    n=$(ls "$WORK/home-$i/images/sha256" | wc -l)
    [ "$n" = 3 ] && [ -x "$WORK/home-$i/binaries/$BIN_SHA/rootfs/bin/delta" ] ||
        { echo "error: sync into home-$i installed $n images and no binary:" >&2; cat "$WORK/sync.log" >&2; exit 1; }
done
[ -z "$(diff -r "$WORK/home-1/images" "$WORK/home-2/images")" ] || { echo "error: two syncs differ" >&2; exit 1; }
printf '\nproject: 3 image workers (%s), 1 binary worker (%s bytes)\n' \
    "$(du -sh "$WORK/registry/data" | cut -f1) in the registry" "$(stat -c %s "$WORK/www/delta.tar.gz")"
printf '%-46s %8.3f s\n' "skopeo copy of the 3 images (pull only)" "$T_SKOPEO"
printf '%-46s %8.3f s\n' "skopeo copy + umoci unpack of the 3 images" "$T_UMOCI"
printf '%-46s %8.3f s\n' "iii worker sync --frozen, empty store" "$T_COLD"
printf '%-46s %8.1f ms  (target < 50 ms)\n' "iii worker sync --frozen, warm" "$(echo "$T_WARM * 1000" | bc)"
printf '%-46s %8.1f ms\n' "iii worker sync, warm" "$(echo "$T_WARM_PLAIN * 1000" | bc)"
printf 'ratio cold sync / skopeo copy:             %6.2fx  (sync also unpacks, and installs the binary)\n' \
    "$(echo "$T_COLD / $T_SKOPEO" | bc -l)"
printf 'ratio cold sync / skopeo copy + umoci:     %6.2fx\n' "$(echo "$T_COLD / $T_UMOCI" | bc -l)"
