#!/usr/bin/env bash
# push-sdk-worker-image.sh REGISTRY REPO TAG — build a real iii worker image, written with the
# published Python SDK (PyPI iii-sdk, the version scripts/install-sdks.sh pins), and push it
# with the plain distribution API (curl). Prints the manifest digest.
#
# The image: the host's python3 with its standard library and shared libraries, the SDK and
# its dependencies from target/sdk/py (what install-sdks.sh installed from PyPI), static
# busybox for a shell to exec into, and examples/sdk-worker/greeter.py as the entrypoint.
# Built images are cached by content under target/sdk-image/, so a rerun only pushes.
set -euo pipefail
registry=$1 repo=$2 tag=$3
cd "$(dirname "$0")/.."
scripts/install-sdks.sh
venv=target/sdk/py
# The interpreter the venv was made with (Debian's, pyenv's…), so the SDK's compiled modules
# match it; it keeps its host path inside the image, where python finds its library from it.
{ read -r py; read -r stdlib; read -r pyver; } < <("$venv/bin/python" -c 'import os, sys, sysconfig
print(os.path.realpath(sys.executable)); print(sysconfig.get_paths()["stdlib"])
print("%d.%d" % sys.version_info[:2])')
site=$venv/lib/python$pyver/site-packages
[ -d "$site" ] || { echo "error: $venv has no $site" >&2; exit 1; }
sdk=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("iii-sdk"))')

out=target/sdk-image
key=$(cat examples/sdk-worker/greeter.py "$0" | sha256sum | cut -c1-16)-$sdk-$pyver
mkdir -p "$out"
if [ ! -f "$out/$key/manifest.json" ]; then
    work=$(mktemp -d "$out/build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    root=$work/rootfs
    mkdir -p "$root"/{bin,etc,app,tmp,workspace,usr/bin,usr/lib,opt/iii-sdk}
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    mkdir -p "$root$(dirname "$py")" "$root$(dirname "$stdlib")"
    cp "$py" "$root$py"
    ln -s "$py" "$root/usr/bin/python3"
    # The standard library (without what a worker never imports) and the SDK's packages.
    tar -C "$(dirname "$stdlib")" --exclude='__pycache__' --exclude='site-packages' \
        --exclude="python$pyver/test" --exclude="python$pyver/idlelib" \
        --exclude="python$pyver/tkinter" --exclude="python$pyver/ensurepip" --exclude='config-*' \
        -cf - "$(basename "$stdlib")" | tar -C "$root$(dirname "$stdlib")" -xf -
    tar -C "$site" --exclude='pip' --exclude='pip-*' --exclude='setuptools' --exclude='setuptools-*' \
        --exclude='_distutils_hack' --exclude='distutils-precedence.pth' --exclude='pkg_resources' \
        -cf - . | tar -C "$root/opt/iii-sdk" -xf -
    # Shared libraries of the interpreter and of every extension module, with their loader.
    { ldd "$py"; find "$root" -type f -name '*.so*' -exec ldd {} \;; } 2>/dev/null | grep -o '/[^ ]*\.so[^ ]*' | sort -u | while read -r lib; do
        [ -f "$lib" ] || continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    cp examples/sdk-worker/greeter.py "$root/app/greeter.py"
    printf 'root:x:0:0:root:/root:/bin/sh\nworker:x:1000:1000:worker:/workspace:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\nworker:x:1000:\n' >"$root/etc/group"
    chown -R 1000:1000 "$root/workspace"
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$root" -cf "$work/layer.tar" .
    gzip -n -1 -c "$work/layer.tar" >"$work/layer.tar.gz"
    diff_id=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
    rm "$work/layer.tar"
    cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin","PYTHONPATH=/opt/iii-sdk","PYTHONUNBUFFERED=1","PYTHONDONTWRITEBYTECODE=1"],"Entrypoint":["python3","/app/greeter.py"],"User":"worker","WorkingDir":"/workspace","Labels":{"org.opencontainers.image.title":"greeter (iii-sdk $sdk, Python)"}},"rootfs":{"type":"layers","diff_ids":["$diff_id"]}}
JSON
    layer=sha256:$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
    config=sha256:$(sha256sum "$work/config.json" | cut -d' ' -f1)
    cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config","size":$(stat -c %s "$work/config.json")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$layer","size":$(stat -c %s "$work/layer.tar.gz")}]}
JSON
    rm -rf "$root"
    rm -rf "${out:?}"/*-"$sdk"-"$pyver"
    mv "$work" "$out/$key"
    trap - EXIT
fi
img=$out/$key
source scripts/lib/registry.sh
for f in layer.tar.gz config.json; do
    push_blob "$registry" "$repo" "$img/$f" "sha256:$(sha256sum "$img/$f" | cut -d' ' -f1)"
done
push_manifest "$registry" "$repo" "$tag" "$img/manifest.json"
