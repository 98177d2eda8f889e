#!/bin/bash
# Start latency of a Linux-guest `vm` worker: `start` → worker running (the guest booted, iii's
# init set the sandbox up and exec'd the entrypoint, and said so) and → exited and torn down,
# beside the `namespace` backend on the same busybox tree in the same machine (the anchor; runc
# too where it runs). Where this host's KVM boots Linux that is the hardware number (target:
# ≤ 150 ms to running); here it runs inside the QEMU/TCG L1 of scripts/test-kvm.sh, nested and
# emulated — a regression signal, not a speed.
#
# Not a test. Usage: scripts/bench-vm-start.sh [N] [--direct | --l1]   (default 10 runs each)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
N=10
mode=()
for a in "$@"; do
    case "$a" in
        --direct | --l1) mode=("$a") ;;
        *) N=$a ;;
    esac
done
B=$ROOT/target/bench-vm-start
mkdir -p "$B"
cargo build --quiet --release --bin iii --example sandbox_start

# The image tree: static busybox and its applets.
R=$B/rootfs
rm -rf "$R" "$R.ext2" && mkdir -p "$R/bin" "$R/etc" "$R/proc" "$R/dev" "$R/sys" "$R/tmp"
cp /bin/busybox "$R/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' >"$R/etc/passwd"
echo 'root:x:0:' >"$R/etc/group"

# What runs where the guest boots (this host, or L1): both backends, N starts each.
cat >"$B/inner.sh" <<INNER
set -eu
ex=$ROOT/target/release/examples/sandbox_start
W=\$(mktemp -d /tmp/iii-vm-start.XXXXXX)
trap 'rm -rf "\$W"' EXIT
cp -a "$R" "\$W/rootfs"
median() { sort -n | awk '{v[NR]=\$1} END {print v[int((NR+1)/2)]}'; }
# Warm-ups: the first vm start images the tree (cached beside it), page cache for both.
"\$ex" --vm "\$III_TEST_KERNEL" "\$III_VM_INIT" "\$W/rootfs" "\$W/vm" 1 >/dev/null
"\$ex" "\$W/rootfs" "\$W/ns" 3 >/dev/null
"\$ex" --vm "\$III_TEST_KERNEL" "\$III_VM_INIT" "\$W/rootfs" "\$W/vm" $N >"\$W/vm.txt"
"\$ex" "\$W/rootfs" "\$W/ns" $N >"\$W/ns.txt"
vs=\$(cut -d' ' -f1 <"\$W/vm.txt" | median); ve=\$(cut -d' ' -f2 <"\$W/vm.txt" | median)
ns=\$(cut -d' ' -f1 <"\$W/ns.txt" | median); ne=\$(cut -d' ' -f2 <"\$W/ns.txt" | median)
nested=\$(cat /sys/module/kvm_amd/parameters/nested 2>/dev/null || true)
echo "bench-vm-start: kernel \$(uname -r), \$(nproc) CPUs, KVM: \${nested:+kvm_amd nested=\$nested}"
# The guest's console is the worker's log: nothing of the kernel's should be in it.
if [ -s "\$W/vm/worker.log" ]; then echo "warning: the vm worker's log is not empty:"; head -n 5 "\$W/vm/worker.log"; fi
echo "vm (Linux guest):  start→running \$vs ms, start→exit \$ve ms (median of $N)"
echo "namespace:         start→running \$ns ms, start→exit \$ne ms (median of $N)"
awk -v a="\$vs" -v b="\$ns" -v c="\$ve" -v d="\$ne" \
    'BEGIN { printf "ratio vm/namespace: start→running %.1f×, start→exit %.1f×\n", a/b, c/d }'
if command -v runc >/dev/null 2>&1; then
    mkdir -p "\$W/bundle" && cp -a "$R" "\$W/bundle/rootfs"
    (cd "\$W/bundle" && runc spec)
    sed -i 's/"terminal": true/"terminal": false/; s/"sh"\$/"\/bin\/true"/' "\$W/bundle/config.json"
    ok=1
    for i in \$(seq 1 $N); do
        s=\$(date +%s%N)
        runc run -b "\$W/bundle" "iii-bench-\$\$-\$i" >/dev/null 2>&1 || { ok=0; break; }
        e=\$(date +%s%N)
        echo \$(( (e - s) / 1000 ))
    done | awk '{printf "%.3f\n", \$1/1000}' >"\$W/runc.txt"
    if [ "\$ok" = 1 ] && [ -s "\$W/runc.txt" ]; then
        echo "runc run:          start→exit \$(median <"\$W/runc.txt") ms (median of $N)"
    else
        echo "runc run:          does not run here"
    fi
fi
INNER
scripts/test-kvm.sh "${mode[@]}" --exec "$B/inner.sh"
