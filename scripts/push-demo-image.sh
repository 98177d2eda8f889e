#!/usr/bin/env bash
# push-demo-image.sh REGISTRY REPO TAG — build a one-layer OCI worker image from Debian's
# static busybox and push it with the plain distribution API (curl), no other tools needed.
# Prints the manifest digest. DEMO_GREETING (default hello) sets the image's GREETING, and is
# also written into the layer, so different greetings give different layers.
set -euo pipefail
registry=$1 repo=$2 tag=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,etc,iii,workspace,tmp}
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nworker:x:1000:1000:worker:/workspace:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nworker:x:1000:\n' >"$root/etc/group"
cat >"$root/bin/echo-worker" <<'SH'
#!/bin/sh
# A stand-in worker: says where the engine is, then ticks.
echo "echo-worker up: III_URL=$III_URL GREETING=$GREETING"
i=0
while true; do i=$((i+1)); echo "tick $i"; sleep 2; done
SH
chmod 755 "$root/bin/echo-worker"
printf 'resources:\n  cpus: 1\n  memory: 64Mi\n' >"$root/iii/worker.yaml"
printf '%s\n' "${DEMO_GREETING:-hello}" >"$root/iii/greeting"
tar --sort=name --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/layer.tar" .
gzip -n -c "$work/layer.tar" >"$work/layer.tar.gz"
diff_id=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
layer=sha256:$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/layer.tar.gz")
cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","GREETING=${DEMO_GREETING:-hello}","III_URL=ws://localhost:49134"],"Entrypoint":["/bin/echo-worker"],"WorkingDir":"/workspace"},"rootfs":{"type":"layers","diff_ids":["$diff_id"]}}
JSON
config=sha256:$(sha256sum "$work/config.json" | cut -d' ' -f1)
config_size=$(stat -c %s "$work/config.json")
source "$(dirname "$0")/lib/registry.sh"
push_blob "$registry" "$repo" "$work/layer.tar.gz" "$layer"
push_blob "$registry" "$repo" "$work/config.json" "$config"
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$layer","size":$layer_size}]}
JSON
push_manifest "$registry" "$repo" "$tag" "$work/manifest.json"
