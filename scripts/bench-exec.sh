#!/usr/bin/env bash
# Benchmark `iii worker exec` beside `runc exec` on the same root filesystem, in the same run:
#   - round trip of `exec w -- true` (median and p90 of 100),
#   - stdout throughput: `cat` of a 1 GiB file in the worker's /tmp (tmpfs), read through a pipe,
#   - stdin→stdout throughput: 1 GiB piped through `cat` in the worker.
# Targets (issue): round trip < 5 ms and below runc exec; throughput ≥ 1 GB/s.
#
# Not a test: run by hand, as root:   scripts/bench-exec.sh
# It starts a local registry, pushes the busybox demo image, `iii worker add` + `start`s it
# (detached, no engine), and runs runc on the very tree iii extracted into its store
# (read-only). Everything lives in a temp dir; every process is ended by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
N=${N:-100}
GIB=1073741824

need() { command -v "$1" >/dev/null 2>&1 || { echo "missing tool: $1 (apt-get install it)" >&2; exit 1; }; }
for t in docker-registry runc curl python3; do need "$t"; done
cargo build --release --quiet
III=$repo/target/release/iii

work=$(mktemp -d /tmp/iii-bench-exec.XXXXXX)
pids=()
runc_id=iii-bench-exec-$$
cleanup() {
    set +e
    [ -n "${III_STARTED:-}" ] && (cd "$work/project" && "$III" worker stop bench >/dev/null 2>&1)
    runc --root "$work/runc-state" kill "$runc_id" KILL >/dev/null 2>&1
    runc --root "$work/runc-state" delete -f "$runc_id" >/dev/null 2>&1
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT

# 1. Registry, image, worker.
source scripts/lib/registry.sh
start_registry "$work/registry"
pids+=("$REGISTRY_PID")
port=${REGISTRY##*:}
scripts/push-demo-image.sh "127.0.0.1:$port" bench/busybox 1.0 >/dev/null
export III_HOME=$work/store
mkdir -p "$work/project"
cd "$work/project"
"$III" worker add --name bench "127.0.0.1:$port/bench/busybox:1.0" >/dev/null
# No resource limits (the demo image asks for 64 MiB and 1 CPU): the 1 GiB file below lives
# in the worker's tmpfs, and runc runs unlimited too.
printf 'workers:\n  - name: bench\n    image: 127.0.0.1:%s/bench/busybox:1.0\n' "$port" >config.yaml
"$III" worker start bench >/dev/null 2>&1
III_STARTED=1
for _ in $(seq 100); do
    "$III" worker exec bench -- true </dev/null >/dev/null 2>&1 && break
    sleep 0.1
done
if ! "$III" worker exec bench -- true </dev/null; then
    echo "iii worker exec does not work here yet; no numbers" >&2
    exit 1
fi

# 2. runc on the same tree: the extracted image in iii's store, read-only.
rootfs=$(dirname "$(dirname "$(find "$III_HOME" -path '*/bin/busybox' -print -quit)")")
[ -d "$rootfs/bin" ] || { echo "cannot find the extracted image under $III_HOME" >&2; exit 1; }
mkdir -p "$work/bundle" "$work/runc-state"
(cd "$work/bundle" && runc spec)
python3 - "$work/bundle/config.json" "$rootfs" <<'PY'
import json, sys
path, rootfs = sys.argv[1], sys.argv[2]
c = json.load(open(path))
c["root"] = {"path": rootfs, "readonly": True}
c["process"]["terminal"] = False
c["process"]["args"] = ["sleep", "1000000"]
c["process"]["env"] = ["PATH=/bin"]
c["process"]["cwd"] = "/"
c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", "mode=1777"]})
json.dump(c, open(path, "w"))
PY
runc --root "$work/runc-state" run -d -b "$work/bundle" "$runc_id" </dev/null >/dev/null 2>&1
# The 1 GiB file to cat, in each one's /tmp (tmpfs, so the disk is out of the picture).
"$III" worker exec bench -- dd if=/dev/zero of=/tmp/big bs=1M count=1024 2>/dev/null </dev/null
runc --root "$work/runc-state" exec "$runc_id" dd if=/dev/zero of=/tmp/big bs=1M count=1024 2>/dev/null </dev/null

# 3. Measure.
python3 - "$III" "$work/runc-state" "$runc_id" "$N" "$GIB" <<'PY'
import statistics, subprocess, sys, time
iii, runc_root, runc_id, n, gib = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
IIIX = [iii, "worker", "exec", "--no-tty", "bench", "--"]
RUNC = ["runc", "--root", runc_root, "exec", runc_id]

BUF = memoryview(bytearray(1 << 20))

def drain(f):
    # readinto one reused buffer: a plain read() loop allocates per chunk and caps near 1 GB/s.
    got = 0
    while True:
        k = f.readinto(BUF)
        if not k:
            return got
        got += k

def round_trip(prefix, runs=n):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(prefix + ["true"], stdin=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1]

def stdout_rate(prefix):
    # Read the command's stdout through a pipe, as a consumer would.
    t = time.perf_counter()
    p = subprocess.Popen(prefix + ["cat", "/tmp/big"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0)
    got = drain(p.stdout)
    p.wait()
    dt = time.perf_counter() - t
    assert got == gib and p.returncode == 0, (got, p.returncode)
    return gib / dt / 1e9

def cat_rate(prefix):
    t = time.perf_counter()
    src = subprocess.Popen(["head", "-c", str(gib), "/dev/zero"], stdout=subprocess.PIPE)
    # (GNU head on the host feeds stdin; the worker's busybox cat passes it through.)
    p = subprocess.Popen(prefix + ["cat"], stdin=src.stdout, stdout=subprocess.PIPE, bufsize=0)
    src.stdout.close()
    got = drain(p.stdout)
    p.wait(); src.wait()
    dt = time.perf_counter() - t
    assert got == gib and p.returncode == 0, (got, p.returncode)
    return gib / dt / 1e9

for prefix in (RUNC, IIIX):
    round_trip(prefix, 5)  # warm caches
r = {}
for name, prefix in (("runc exec", RUNC), ("iii worker exec", IIIX)):
    med, p90 = round_trip(prefix)
    out = stdout_rate(prefix)
    cat = cat_rate(prefix)
    r[name] = (med, p90, out, cat)
    print(f"{name:16s} round trip median {med:7.2f} ms  p90 {p90:7.2f} ms   "
          f"cat 1 GiB stdout {out:5.2f} GB/s   stdin→cat→stdout {cat:5.2f} GB/s")
(im, _, io, ic), (rm, _, ro, rc) = r["iii worker exec"], r["runc exec"]
print(f"iii/runc: round trip {im / rm:.2f}x, stdout {io / ro:.2f}x, cat {ic / rc:.2f}x")
print(f"targets: round trip < 5 ms and below runc: {'met' if im < 5 and im < rm else 'NOT met'}; "
      f"≥ 1 GB/s stdout: {'met' if io >= 1 else 'NOT met'}")
PY
