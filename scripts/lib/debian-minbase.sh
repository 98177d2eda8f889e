# Sourced by scripts that need a real distribution image: a debootstrap'd Debian bookworm
# minbase (~50 MB gzip, ~150 MB unpacked, glibc, dpkg, apt, bash, coreutils) as one OCI layer.
#
# debian_minbase [DIR] builds it once into DIR (default: ~/.cache/iii/debian-minbase/<sha256
# of this file>) and prints DIR; later calls reuse it. DIR holds
#   layer.tar.gz   the layer (apt's package cache and lists left out, as Debian's own images do)
#   layer.digest   sha256:… of layer.tar.gz      layer.diff_id   sha256:… of the tar inside
# Needs root and the Debian mirror (http://deb.debian.org) the first time; progress on stderr.
debian_minbase() {
    local here dir
    here=$(dirname "${BASH_SOURCE[0]:-$0}")
    dir=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/iii/debian-minbase/$(sha256sum "$here/debian-minbase.sh" | cut -c1-64)}
    if [ ! -f "$dir/.complete" ]; then
        command -v debootstrap >/dev/null 2>&1 || {
            echo "installing debootstrap" >&2
            apt-get install -y -qq --no-install-recommends debootstrap >&2
        }
        rm -rf "$dir" && mkdir -p "$dir"
        echo "debootstrap --variant=minbase bookworm (once; cached in $dir)" >&2
        debootstrap --variant=minbase bookworm "$dir/rootfs" http://deb.debian.org/debian >&2 \
            || { echo "error: debootstrap failed (see above)" >&2; rm -rf "$dir"; return 1; }
        tar -C "$dir/rootfs" --numeric-owner \
            --exclude='./var/cache/apt/*' --exclude='./var/lib/apt/lists/*' \
            -czf "$dir/layer.tar.gz" .
        rm -rf "$dir/rootfs"
        echo "sha256:$(sha256sum "$dir/layer.tar.gz" | cut -d' ' -f1)" >"$dir/layer.digest"
        echo "sha256:$(gzip -dc "$dir/layer.tar.gz" | sha256sum | cut -d' ' -f1)" >"$dir/layer.diff_id"
        touch "$dir/.complete"
    fi
    echo "$dir"
}
