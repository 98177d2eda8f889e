#!/usr/bin/env bash
# Installs what iii's build, tests, demo and benchmarks need on Debian 12, idempotently.
# Needs root (apt-get). Packages:
#   docker-registry  the real CNCF distribution registry the tests and the demo push to
#   busybox-static   a static /bin/busybox: the content of the test and demo worker images
#   apache2-utils    htpasswd (bcrypt) for the Basic-auth registry tests
#   openssl          keys and certificates for the bearer-token and TLS registry tests
#   musl-tools       musl-gcc, for the static x86_64-unknown-linux-musl release binary
#   gcc              builds the freestanding guest programs the VMM tests boot under KVM
#   zstd             compresses the zstd-layer test images
#   e2fsprogs        mke2fs -d: the ext2 disk images the virtio-blk tests read
#   umoci, tar       anchors the unpack tests compare our extraction with (and util-linux setpriv)
#   cpio             cross-checks the initramfs iii writes for VM guests
set -euo pipefail
pkgs=(docker-registry busybox-static apache2-utils openssl musl-tools gcc zstd e2fsprogs umoci tar util-linux cpio)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -q x86_64-unknown-linux-musl \
        || rustup target add x86_64-unknown-linux-musl || echo "note: musl target unavailable; release builds fall back to glibc +crt-static" >&2
fi
