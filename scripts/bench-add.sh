#!/bin/bash
# Benchmark: time pulling a real ~50 MB single-layer image (a debootstrap'd Debian minbase)
# from a local docker-registry with iii, beside `skopeo copy` + `umoci unpack` and plain
# `tar -xzf` of the same layer, all in the same run. Prints times and ratios.
#
# Not a test: run by hand (as root; needs network to the Debian mirror the first time).
#   scripts/bench-add.sh            # builds the layer once (scripts/lib/debian-minbase.sh)
# Uses `iii worker add` when it works, else the `pull` example (the same pull code).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

need() { command -v "$1" >/dev/null 2>&1; }
for tool in docker-registry skopeo umoci curl sha256sum; do
    need "$tool" || { echo "missing tool: $tool (apt-get install it)" >&2; exit 1; }
done
# 1. A real root filesystem as one layer, built once (shared with the Linux-guest tests).
. scripts/lib/debian-minbase.sh
DEB=$(debian_minbase)
LAYER=$DEB/layer.tar.gz
LAYER_SIZE=$(stat -c %s "$LAYER")
LAYER_DIGEST=$(cat "$DEB/layer.digest")
DIFF_ID=$(cat "$DEB/layer.diff_id")

# 2. A registry on a free loopback port, removed on exit.
WORK=$(mktemp -d /tmp/iii-bench.XXXXXX)
REG_PID=
cleanup() {
    if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null; wait "$REG_PID" 2>/dev/null || true; fi
    chmod -R u+rwX "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
source scripts/lib/registry.sh
start_registry "$WORK/registry"
REG_PID=$REGISTRY_PID
REG=$REGISTRY
IMAGE=$REG/bench/debian:1

# 3. Push with the plain distribution API.
push_blob() { # file digest
    local loc
    loc=$(curl -fsS -X POST -D - -o /dev/null "http://$REG/v2/bench/debian/blobs/uploads/" |
        tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    case $loc in /*) loc=http://$REG$loc ;; esac
    case $loc in *\?*) loc="$loc&digest=$2" ;; *) loc="$loc?digest=$2" ;; esac
    curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$1" "$loc" >/dev/null
}
ARCH=$(dpkg --print-architecture)
printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["/bin/bash"]},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "$ARCH" "$DIFF_ID" >"$WORK/config.json"
CONFIG_DIGEST=sha256:$(sha256sum "$WORK/config.json" | cut -d' ' -f1)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "$CONFIG_DIGEST" "$(stat -c %s "$WORK/config.json")" "$LAYER_DIGEST" "$LAYER_SIZE" >"$WORK/manifest.json"
push_blob "$LAYER" "$LAYER_DIGEST"
push_blob "$WORK/config.json" "$CONFIG_DIGEST"
curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary @"$WORK/manifest.json" "http://$REG/v2/bench/debian/manifests/1" >/dev/null

# 4. Our binary: `iii worker add` if it exists, else the pull example.
cargo build --release --bin iii --example pull >&2
III=$ROOT/target/release/iii
PULL=$ROOT/target/release/examples/pull
ours() { # fresh III_HOME and project dir per run
    local home=$WORK/home-$1 proj=$WORK/proj-$1
    mkdir -p "$proj"
    if [ "$USE_ADD" = 1 ]; then
        (cd "$proj" && III_HOME=$home "$III" worker add "$IMAGE" >/dev/null 2>&1)
    else
        III_HOME=$home "$PULL" "$IMAGE" >/dev/null 2>&1
    fi
}
USE_ADD=1
if ! ours probe; then USE_ADD=0; ours probe; fi
WHAT=$([ "$USE_ADD" = 1 ] && echo "iii worker add" || echo "examples/pull")
rm -rf "$WORK/home-probe" "$WORK/proj-probe"

source scripts/lib/bench.sh
run_tar() { mkdir -p "$WORK/tar-$1"; tar -xzf "$LAYER" -C "$WORK/tar-$1"; }
run_skopeo() {
    skopeo copy -q --src-tls-verify=false "docker://$IMAGE" "oci:$WORK/oci-$1:1" >/dev/null
    umoci unpack --image "$WORK/oci-$1:1" "$WORK/bundle-$1" >/dev/null 2>&1
}
run_ours() { ours "run$1"; }

sync
T_TAR=$(best run_tar)
T_SKOPEO=$(best run_skopeo)
T_OURS=$(best run_ours)

printf '\nlayer: %s bytes gzip (%s)\n' "$LAYER_SIZE" "$LAYER_DIGEST"
printf '%-34s %8.3f s\n' "tar -xzf (local file)" "$T_TAR"
printf '%-34s %8.3f s\n' "skopeo copy + umoci unpack" "$T_SKOPEO"
printf '%-34s %8.3f s\n' "$WHAT (registry -> store)" "$T_OURS"
printf 'ratio ours / tar -xzf:              %6.2fx  (target <= 1.5x)\n' "$(echo "$T_OURS / $T_TAR" | bc -l)"
printf 'ratio ours / skopeo+umoci:          %6.2fx\n' "$(echo "$T_OURS / $T_SKOPEO" | bc -l)"

# 5. The timed pull must have produced the same tree as tar (names, types, sizes).
listing() { (cd "$1" && find . -printf '%p %y %s\n' | sort); }
OURS_ROOTFS=$(echo "$WORK"/home-run1/images/sha256/*/rootfs)
if diff <(listing "$WORK/tar-1") <(listing "$OURS_ROOTFS") >"$WORK/tree.diff"; then
    echo "trees match: $(listing "$OURS_ROOTFS" | wc -l) entries"
else
    echo "TREES DIFFER (first lines):"; head -20 "$WORK/tree.diff"; exit 1
fi
