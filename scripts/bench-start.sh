#!/bin/sh
# Warm start latency of a `namespace` worker vs `runc run`, on the same busybox rootfs.
# Needs root, busybox-static and runc. Prints medians in milliseconds and the ratio.
# Usage: scripts/bench-start.sh [N]   (default 30 runs each; builds release binaries)
set -eu
N=${1:-30}
cd "$(dirname "$0")/.."
cargo build --quiet --release --bin iii --example sandbox_start
T=$(mktemp -d "${TMPDIR:-/var/tmp}/iii-bench.XXXXXX")
trap 'rm -rf "$T"' EXIT
R=$T/bundle/rootfs
mkdir -p "$R/bin" "$R/etc" "$R/proc" "$R/dev" "$R/sys" "$R/tmp"
cp /bin/busybox "$R/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
echo 'root:x:0:' > "$R/etc/group"

median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# iii: start (entrypoint exec'd) and start-to-exit (exited and torn down).
./target/release/examples/sandbox_start "$R" "$T/worker" 3 >/dev/null   # warm-up
./target/release/examples/sandbox_start "$R" "$T/worker" "$N" > "$T/iii.txt"
iii_start=$(cut -d' ' -f1 < "$T/iii.txt" | median)
iii_exit=$(cut -d' ' -f2 < "$T/iii.txt" | median)

# runc: a bundle from `runc spec`, running /bin/true without a terminal.
(cd "$T/bundle" && runc spec)
sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"\/bin\/true"/' "$T/bundle/config.json"
for i in $(seq 1 "$N"); do
  s=$(date +%s%N)
  runc run -b "$T/bundle" "iii-bench-$$-$i" >/dev/null 2>&1
  e=$(date +%s%N)
  echo $(( (e - s) / 1000 ))
done | awk '{printf "%.3f\n", $1/1000}' > "$T/runc.txt"
runc_exit=$(median < "$T/runc.txt")

echo "iii namespace: start→entrypoint ${iii_start} ms, start→exit ${iii_exit} ms (median of $N)"
echo "runc run:      start→exit ${runc_exit} ms (median of $N)"
awk -v a="$iii_exit" -v b="$runc_exit" 'BEGIN {printf "ratio iii/runc (start→exit): %.2f\n", a/b}'
