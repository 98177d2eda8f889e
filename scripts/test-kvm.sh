#!/usr/bin/env bash
# The KVM test suites (tests/vm_*.rs) on a KVM that can boot a Linux guest, one test at a time.
#
# Usage: scripts/test-kvm.sh [--direct | --l1] [SUITE | SUITE::TEST]...
#        scripts/test-kvm.sh [--direct | --l1] --exec SCRIPT
#   SUITE is a tests/vm_*.rs stem (vm_linux); no arguments: every test of every suite.
#   --direct  run on this host's /dev/kvm       --l1  run inside a QEMU/TCG L1 guest
#   --exec    run `bash SCRIPT` (a file in the checkout) there instead of tests, with the
#             same environment (III_TEST_KERNEL, III_VM_INIT); for benchmarks
#   Without either, a probe decides: the vm_linux boot test on this host's /dev/kvm; where it
#   does not pass (a nested paravirtual KVM falls into instruction emulation on a Linux
#   kernel), the tests run inside an emulated q35 machine whose own KVM (kvm_amd with nested
#   paging, under `-cpu max`) boots Linux like hardware does. Slow, but the real code path.
#
# What it does:
#   1. the guest kernel of scripts/build-guest-kernel.sh, built once and cached under
#      ~/.cache/iii/guest-kernel/<sha256 of that script>/ (III_TEST_KERNEL overrides);
#   2. builds the vm_* test binaries and a static iii (the Linux guest's /init, and the iii the
#      tests drive) on this host, and for vm_sandbox a Debian minbase layer
#      (scripts/lib/debian-minbase.sh, cached under ~/.cache/iii/debian-minbase/);
#   3. runs each test as `timeout BIN --exact NAME --test-threads=1`, directly or in L1: a
#      Debian kernel (`apt-get download`, `dpkg-deb -x`, cached under ~/.cache/iii/l1-kernel/),
#      a busybox initramfs that loads virtio/9p/overlay and kvm_amd, mounts this host's root
#      read-only and the checkout read-write at its own path over 9p, chroots and runs them;
#   4. a test that fails (or times out) runs once more at once: passing then makes it FLAKY,
#      counted as passed and listed with its failed run's output (emulation is sometimes at
#      fault); prints per-test times and `N passed, N failed, N skipped`; exits 1 if any failed.
#
# Environment: III_KVM_TEST_TIMEOUT (s per test, default 300), III_KVM_WATCHDOG (s for the
# whole L1 run, default 3600; QEMU is killed past it), III_TEST_KERNEL, III_VM_INIT.
# Needs root (apt-get, the L1 guest's 9p export of /).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/iii
PER_TEST=${III_KVM_TEST_TIMEOUT:-300}
WATCHDOG=${III_KVM_WATCHDOG:-3600}
RUN=$ROOT/target/tmp/kvm-run
MODE=auto
EXEC=""
want=()
mkdir -p "$ROOT/target/tmp"
exec 8>"$ROOT/target/tmp/kvm-run.lock"
flock -n 8 || { echo "test-kvm: another run holds $RUN; waiting for it" >&2; flock 8; }
while [ $# -gt 0 ]; do
    a=$1; shift
    case "$a" in
        --direct) MODE=direct ;;
        --l1) MODE=l1 ;;
        --exec) EXEC=$(realpath "${1:?--exec needs a script}"); shift
            case "$EXEC" in "$ROOT"/*) ;; *) echo "error: --exec $EXEC: not in the checkout (L1 sees only the checkout read-write)" >&2; exit 2 ;; esac ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "error: unknown option $a (see scripts/test-kvm.sh --help)" >&2; exit 2 ;;
        *) want+=("$a") ;;
    esac
done
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { echo "test-kvm: $*"; }
over() { awk -v a="$1" -v b="$(now)" -v w="$2" 'BEGIN { exit !(b - a > w) }'; } # $2 s since $1
timings=()

# --- 1. the guest kernel ---------------------------------------------------------------------
if [ -n "${III_TEST_KERNEL:-}" ]; then
    KERNEL=$III_TEST_KERNEL
    timings+=("kernel build: none (III_TEST_KERNEL=$KERNEL)")
else
    kdir=$CACHE/guest-kernel/$(sha256sum scripts/build-guest-kernel.sh | cut -c1-64)
    KERNEL=$kdir/bzImage
    mkdir -p "$kdir"
    exec 9>"$kdir.lock"
    flock 9 # one build at a time; a second run waits for it and reuses it
    if [ -f "$kdir/.complete" ] && [ -f "$KERNEL" ]; then
        timings+=("kernel build: cached ($KERNEL)")
    else
        say "building the guest kernel into $kdir (log: $kdir.log; ~4 min on 2 cores)"
        t=$(now)
        if ! scripts/build-guest-kernel.sh "$kdir" >"$kdir.log" 2>&1; then
            tail -n 40 "$kdir.log" >&2
            echo "error: scripts/build-guest-kernel.sh failed (log: $kdir.log)" >&2
            exit 1
        fi
        rm -rf "$kdir/src" # the build tree (GBs); the key is the script, so it is never reused
        touch "$kdir/.complete"
        timings+=("kernel build: cold, $(since "$t") s ($KERNEL)")
    fi
    exec 9>&-
fi
say "guest kernel: $KERNEL"

# --- 2. the test binaries and the static iii -------------------------------------------------
suites=()
for f in tests/vm_*.rs; do
    s=$(basename "$f" .rs)
    if [ ${#want[@]} -eq 0 ]; then
        suites+=("$s")
    else
        for w in "${want[@]}"; do
            [ "${w%%::*}" = "$s" ] && { suites+=("$s"); break; }
        done
    fi
done
[ -z "$EXEC" ] || suites=(vm_linux) # only for the probe
[ ${#suites[@]} -gt 0 ] || { echo "error: no tests/vm_*.rs suite matches: ${want[*]}" >&2; exit 2; }
mkdir -p "$RUN"
args=()
for s in "${suites[@]}"; do args+=(--test "$s"); done
t=$(now)
# Human diagnostics on stderr, one JSON message per line on stdout (the executables' paths).
cargo test --no-run "${args[@]}" --message-format=json-render-diagnostics >"$RUN/build.json"
timings+=("test binaries: $(since "$t") s")
if [ -z "${III_VM_INIT:-}" ]; then
    t=$(now)
    if rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl; then
        cargo build --release --target x86_64-unknown-linux-musl
        III_VM_INIT=$ROOT/target/x86_64-unknown-linux-musl/release/iii
    else
        RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu
        III_VM_INIT=$ROOT/target/x86_64-unknown-linux-gnu/release/iii
    fi
    timings+=("static iii (guest /init): $(since "$t") s")
fi
# The tests drive that static iii too (III_TEST_III): the build that ships, and under
# emulation a debug build spends minutes unpacking and imaging a distribution's tree.
export III_TEST_KERNEL=$KERNEL III_VM_INIT III_TEST_III=$III_VM_INIT

# A real distribution image for vm_sandbox's Debian test: a debootstrap'd minbase layer,
# built once (~1.5 min, network to deb.debian.org) and cached; copied into the checkout,
# which L1 sees (it hides this host's /root, and so ~/.cache). Without it that test skips.
if printf '%s\n' "${suites[@]}" | grep -qx vm_sandbox; then
    t=$(now)
    # shellcheck source=lib/debian-minbase.sh
    . scripts/lib/debian-minbase.sh
    if deb=$(debian_minbase); then
        mkdir -p "$RUN/debian"
        for f in layer.tar.gz layer.digest layer.diff_id; do
            cmp -s "$deb/$f" "$RUN/debian/$f" || cp "$deb/$f" "$RUN/debian/$f"
        done
        export III_TEST_DEBIAN_LAYER=$RUN/debian/layer.tar.gz
        timings+=("Debian minbase layer: $(since "$t") s ($deb)")
    else
        say "warning: no Debian minbase layer (debootstrap failed): its test will skip"
    fi
fi

# The tests, one per line: SUITE<TAB>BINARY<TAB>TEST.
: >"$RUN/tests.txt"
for s in "${suites[@]}"; do
    bin=$(grep '"reason":"compiler-artifact"' "$RUN/build.json" | grep '"kind":\["test"\]' \
        | grep "\"name\":\"$s\"" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
    [ -x "$bin" ] || { echo "error: no test executable for $s in cargo's output" >&2; exit 1; }
    "$bin" --list --format terse | sed -n 's/: test$//p' | while read -r name; do
        pick=${#want[@]}
        for w in "${want[@]}"; do
            if [ "$w" = "$s" ] || [ "$w" = "$s::$name" ]; then pick=0; fi
        done
        if [ "$pick" -eq 0 ]; then printf '%s\t%s\t%s\n' "$s" "$bin" "$name" >>"$RUN/tests.txt"; fi
    done
done
# --exec: one entry, the script.
[ -z "$EXEC" ] || printf 'exec\t%s\t%s\n' "$EXEC" "$(basename "$EXEC")" >"$RUN/tests.txt"
[ -s "$RUN/tests.txt" ] || { echo "error: no test matches: ${want[*]}" >&2; exit 2; }
say "$(wc -l <"$RUN/tests.txt") tests in ${#suites[@]} suites"

# The runner, the same on this host and in L1: each test alone, with a kill timeout; a line per
# test on stdout and in results.txt (STATUS SECONDS SUITE::TEST), its output in logs/.
cat >"$RUN/runner.sh" <<'EOF'
#!/bin/bash
# Generated by scripts/test-kvm.sh: runner.sh RUN_DIR PER_TEST_TIMEOUT
# Runs the tests of RUN_DIR/todo.txt, appending to RUN_DIR/results.txt.
run=$1 limit=$2
cd "$(dirname "$(dirname "$(dirname "$run")")")" # the checkout: cargo runs tests from there
mkdir -p "$run/logs"
# run_one: runs the test once into $log; sets st (PASS FAIL TIMEOUT SKIP) and secs.
run_one() {
    t0=$(date +%s.%N)
    rc=0
    if [ "$suite" = exec ]; then
        # A script (--exec), not a test: its output is the point, shown as it comes.
        timeout -k 10 "$limit" bash "$bin" </dev/null 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
    else
        timeout -k 10 "$limit" "$bin" --exact "$name" --test-threads=1 --nocapture >"$log" 2>&1 </dev/null || rc=$?
    fi
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then st=TIMEOUT
    elif [ "$suite" = exec ]; then if [ "$rc" -eq 0 ]; then st=PASS; else st=FAIL; fi
    elif [ "$rc" -ne 0 ]; then st=FAIL
    elif grep -q '^running 1 test' "$log" && grep -q 'SKIP: [a-z0-9_]*::' "$log"; then st=SKIP
    elif grep -q '^running 1 test' "$log"; then st=PASS
    else st=FAIL # the binary ran no test
    fi
}
while IFS=$'\t' read -r suite bin name; do
    log=$run/logs/$suite--$name.log
    printf '%s::%s\n' "$suite" "$name" >"$run/current"
    run_one
    if [ "$suite" != exec ] && { [ "$st" = FAIL ] || [ "$st" = TIMEOUT ]; }; then
        # Once more, in full view: a test that passes only then is FLAKY (counted as passed,
        # listed as such, its failed run kept), because under emulation the machine itself is
        # sometimes at fault; one that fails twice fails.
        mv "$log" "$log.first"
        printf '%-7s %7ss  %s::%s: once more\n' "$st" "$secs" "$suite" "$name"
        tail -n 60 "$log.first" | sed 's/^/          | /'
        first=$st
        run_one
        if [ "$st" = PASS ]; then st=FLAKY; fi
    fi
    printf '%-7s %7ss  %s::%s\n' "$st" "$secs" "$suite" "$name" | tee -a "$run/results.txt"
    if [ "$st" = SKIP ]; then grep -o 'SKIP: [a-z0-9_]*::.*' "$log" | sed 's/^SKIP: /          skip: /'; fi
    if [ "$st" = FLAKY ]; then echo "          flaky: $first on the first run (its output above, and in $log.first), passed on the second"; fi
    if [ "$st" = FAIL ] || [ "$st" = TIMEOUT ]; then
        tail -n 60 "$log" | sed 's/^/          | /'
    fi
    sync
done <"$run/todo.txt"
rm -f "$run/current"
EOF
chmod +x "$RUN/runner.sh"

# --- 3. where to run: this host's /dev/kvm, or L1 --------------------------------------------
if [ "$MODE" = auto ]; then
    # The probe: vm_linux's boot test (a bzImage to init and back, seconds on a real KVM) on
    # this host with a short timeout. It passes only where /dev/kvm boots this kernel.
    MODE=l1
    probe=$(grep '"kind":\["test"\]' "$RUN/build.json" | grep '"name":"vm_linux"' \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1 || true)
    if [ -z "$probe" ]; then
        cargo test --no-run --test vm_linux --message-format=json-render-diagnostics >"$RUN/probe.json"
        probe=$(grep '"kind":\["test"\]' "$RUN/probe.json" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
    fi
    t=$(now)
    if [ -e /dev/kvm ] && timeout -k 5 60 "$probe" --exact linux_boots_to_init_and_reboots \
        --test-threads=1 --nocapture >"$RUN/probe.log" 2>&1 </dev/null \
        && ! grep -q 'SKIP: [a-z0-9_]*::' "$RUN/probe.log"; then
        MODE=direct
        say "probe: /dev/kvm boots the guest kernel ($(since "$t") s): running the tests here"
    else
        why=$(grep -o 'SKIP: [a-z0-9_]*::.*' "$RUN/probe.log" 2>/dev/null | sed 's/^SKIP: [^:]*::[^:]*: //' | head -n 1)
        [ -e /dev/kvm ] || why="no /dev/kvm"
        say "probe: /dev/kvm cannot boot the guest kernel (${why:-the boot test failed, see $RUN/probe.log}): running the tests in a QEMU/TCG L1 guest"
    fi
    timings+=("probe: $(since "$t") s -> $MODE")
fi

l1_boot=""
rm -rf "$RUN/logs" "$RUN/results.txt" "$RUN/current" "$RUN/hung.txt"
: >"$RUN/results.txt"
cp "$RUN/tests.txt" "$RUN/todo.txt"
if [ "$MODE" = direct ]; then
    "$RUN/runner.sh" "$RUN" "$PER_TEST" || true
else
    # --- 4. the L1 guest ---------------------------------------------------------------------
    command -v qemu-system-x86_64 >/dev/null || {
        say "installing qemu-system-x86"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86
    }
    if ! file -L /bin/busybox 2>/dev/null | grep -q 'statically linked'; then
        scripts/install-deps.sh
    fi
    # A Debian kernel: its modules include kvm_amd, which -cpu max (an AMD with svm and npt)
    # serves. Cached per package version; the newest cached one when apt cannot resolve.
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)
    ver=$( [ -n "$pkg" ] && apt-cache policy "$pkg" | sed -n 's/^ *Candidate: //p' )
    l1k=""
    if [ -n "$pkg" ] && [ -n "$ver" ] && [ "$ver" != "(none)" ]; then
        l1k=$CACHE/l1-kernel/${pkg}_$ver
        if [ ! -f "$l1k/.complete" ]; then
            say "fetching $pkg $ver"
            rm -rf "$l1k" && mkdir -p "$l1k/deb"
            (cd "$l1k/deb" && apt-get download -q "$pkg=$ver" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
            dpkg-deb -x "$l1k"/deb/*.deb "$l1k/x"
            rm -rf "$l1k/deb"
            touch "$l1k/.complete"
        fi
    else
        l1k=$(ls -d "$CACHE"/l1-kernel/*/.complete 2>/dev/null | sort -V | tail -n 1 | xargs -r dirname)
    fi
    [ -n "$l1k" ] && [ -f "$l1k/.complete" ] || { echo "error: no Debian linux-image-*-amd64 to boot L1 with" >&2; exit 1; }
    vmlinuz=$(ls "$l1k"/x/boot/vmlinuz-* | head -n 1)
    moddir=$(ls -d "$l1k"/x/lib/modules/* | head -n 1)

    # The initramfs: busybox, the modules in dependency order (from each .ko's .modinfo), /init.
    ird=$RUN/initramfs
    rm -rf "$ird" && mkdir -p "$ird"/{bin,dev,proc,sys,newroot,modules}
    cp /bin/busybox "$ird/bin/busybox"
    declare -A kofile=() done_mod=()
    while IFS= read -r ko; do
        n=$(basename "$ko"); n=${n%%.ko*}; kofile[${n//-/_}]=$ko
    done < <(find "$moddir/kernel" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst')
    order=()
    modinfo_depends() { # the depends= of a module file (decompressed first if need be)
        case "$1" in
            *.xz) xz -dc "$1" >"$RUN/m.ko"; set -- "$RUN/m.ko" ;;
            *.zst) zstd -qdc "$1" >"$RUN/m.ko"; set -- "$RUN/m.ko" ;;
        esac
        objcopy -O binary --only-section=.modinfo "$1" /dev/stdout | tr '\0' '\n' \
            | sed -n 's/^depends=//p' | tr ',' ' '
    }
    add_mod() {
        local m=${1//-/_} d
        [ -n "${done_mod[$m]:-}" ] && return
        done_mod[$m]=1
        [ -n "${kofile[$m]:-}" ] || { grep -q "/${m//_/[-_]}\.ko" "$moddir/modules.builtin" && return; \
            echo "error: module $m not in $moddir" >&2; exit 1; }
        for d in $(modinfo_depends "${kofile[$m]}"); do add_mod "$d"; done
        order+=("$m")
    }
    # tun: a namespace sandbox's egress NIC (sandbox: auto falls back to one) is a TAP device.
    for m in virtio_pci 9pnet_virtio 9p overlay tun irqbypass kvm ccp kvm_amd; do add_mod "$m"; done
    for m in "${order[@]}"; do
        case "${kofile[$m]}" in
            *.xz) xz -dc "${kofile[$m]}" >"$ird/modules/$m.ko" ;;
            *.zst) zstd -qdc "${kofile[$m]}" >"$ird/modules/$m.ko" ;;
            *) cp "${kofile[$m]}" "$ird/modules/$m.ko" ;;
        esac
    done
    printf '%s\n' "${order[@]}" >"$ird/modules/order"
    cat >"$ird/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in \$(cat /modules/order); do insmod /modules/\$m.ko || echo "iii-l1: insmod \$m failed"; done
[ -c /dev/kvm ] || echo "iii-l1: no /dev/kvm after loading kvm_amd"
dmesg | grep -i -m 2 -e 'nested paging' -e 'kvm_amd' | sed 's/^/iii-l1: /'
o=trans=virtio,version=9p2000.L,msize=512000,cache=loose
mount -t 9p -o ro,\$o hostroot /newroot || { echo "iii-l1: cannot mount hostroot"; reboot -f; }
n=/newroot
for d in tmp root run var/tmp; do mount -t tmpfs -o mode=1777 tmpfs \$n/\$d; done
chmod 700 \$n/root
mount -t proc proc \$n/proc; mount -t sysfs sysfs \$n/sys; mount -t devtmpfs devtmpfs \$n/dev
mkdir -p \$n/dev/pts \$n/dev/shm; mount -t devpts devpts \$n/dev/pts; mount -t tmpfs tmpfs \$n/dev/shm
mount -t cgroup2 cgroup2 \$n/sys/fs/cgroup 2>/dev/null
# A checkout under one of those tmpfs (a clone in /tmp) needs its mount point made again.
mkdir -p \$n$ROOT 2>/dev/null
mount -t 9p -o \${o%,cache=loose} checkout \$n$ROOT || { echo "iii-l1: cannot mount the checkout"; reboot -f; }
ip link set lo up
echo "iii-l1: ready (uptime \$(cut -d' ' -f1 /proc/uptime) s), /dev/kvm: \$(ls /dev/kvm 2>&1)"
# A heartbeat, so that a stuck test is told from a stuck machine; it names D-state tasks
# and says how much memory is left.
( while sleep 60; do
    d=\$(grep -l '^State:.D' /proc/[0-9]*/status 2>/dev/null | cut -d/ -f3 | while read p; do
        echo -n " \$p:\$(cat /proc/\$p/comm 2>/dev/null)@\$(cat /proc/\$p/wchan 2>/dev/null)"; done)
    m=\$(awk '/^MemAvailable:/ { print int(\$2 / 1024) }' /proc/meminfo)
    echo "iii-l1: alive at \$(cut -d' ' -f1 /proc/uptime) s, \${m} MiB available\${d:+; in D state:\$d}"
  done ) &
chroot \$n /usr/bin/env -i PATH="$PATH" HOME=/root TERM=dumb \
    III_TEST_KERNEL="$RUN/guest-kernel/bzImage" III_VM_INIT="$III_VM_INIT" III_TEST_III="$III_TEST_III" \
    III_TEST_DEBIAN_LAYER="${III_TEST_DEBIAN_LAYER:-}" \
    /bin/bash $RUN/runner.sh $RUN $PER_TEST
echo "iii-l1: runner exited \$?"
sync; reboot -f
EOF
    chmod +x "$ird/init"
    # L1 hides this host's /root (and so ~/.cache) under a tmpfs: the guest kernel goes along
    # in the checkout.
    mkdir -p "$RUN/guest-kernel" && cp "$KERNEL" "$RUN/guest-kernel/bzImage"
    (cd "$ird" && find . | cpio -o -H newc --quiet) >"$RUN/initramfs.cpio"

    log=$RUN/l1-console.log
    : >"$log"
    t_all=$(now)
    # A test that does not end within its timeout (+2 min), a soft lockup on L1's console
    # with no test ending for 2 min, or a console silent for 3 min past L1's start (its
    # heartbeat prints every minute), means L1 itself is stuck (the emulated machine hangs now
    # and then, in a nested guest): QEMU is killed and a fresh L1 runs the rest, that test
    # first, once more; a test that hangs L1 twice counts HUNG. Up to 4 boots.
    stall=$((PER_TEST + 120))
    silent=180
    : >"$RUN/hung.txt"
    for boot in 1 2 3 4; do
        [ -s "$RUN/todo.txt" ] || break
        say "booting L1 #$boot (kernel $(basename "$vmlinuz"), $(wc -l <"$RUN/todo.txt") tests, console log: $log, watchdog ${WATCHDOG}s)"
        t=$(now)
        rm -f "$RUN/current"
        off=$(stat -c %s "$log")
        qemu-system-x86_64 -accel tcg,thread=multi -machine q35 -cpu max -smp 2 -m 4G -nographic \
            -no-reboot -nic none \
            -kernel "$vmlinuz" -initrd "$RUN/initramfs.cpio" \
            -append "console=ttyS0 panic=-1 rdinit=/init quiet loglevel=4" \
            -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
            -virtfs "local,path=$ROOT,mount_tag=checkout,security_model=none,multidevs=remap" \
            </dev/null >>"$log" 2>&1 &
        qpid=$!
        tail -c +$((off + 1)) --pid="$qpid" -f "$log" | sed -u 's/\r//g' &
        tpid=$!
        boot_s=""
        hung=""
        last=$(now) seen=0
        out_size=$off out_at=$(now)
        while kill -0 "$qpid" 2>/dev/null; do
            size=$(stat -c %s "$log")
            if [ "$size" -ne "$out_size" ]; then out_size=$size out_at=$(now); fi
            if [ -z "$boot_s" ] && tail -c +$((off + 1)) "$log" | grep -q 'iii-l1: ready'; then
                boot_s=$(since "$t")
                [ -n "$l1_boot" ] || l1_boot=$boot_s
            fi
            n=$(wc -l <"$RUN/results.txt")
            if [ "$n" -ne "$seen" ]; then seen=$n last=$(now); fi
            why=""
            if over "$t_all" "$WATCHDOG"; then why="the whole run passed ${WATCHDOG}s"
            elif over "$last" "$stall"; then hung=$(cat "$RUN/current" 2>/dev/null || echo '?')
                why="no test ended for ${stall}s (stuck in $hung)"
            elif [ -n "$boot_s" ] && over "$out_at" "$silent"; then
                hung=$(cat "$RUN/current" 2>/dev/null || echo '?')
                why="L1 printed nothing for ${silent}s, not even its heartbeat (stuck in $hung)"
            elif over "$last" 120 && tail -c +$((off + 1)) "$log" | grep -q 'BUG: soft lockup'; then
                hung=$(cat "$RUN/current" 2>/dev/null || echo '?')
                why="L1 reports a soft lockup and no test ended for 120s (stuck in $hung)"
            fi
            if [ -n "$why" ]; then
                say "watchdog: $why; killing QEMU (pid $qpid)"
                kill "$qpid" 2>/dev/null || true
                sleep 5
                kill -9 "$qpid" 2>/dev/null || true
                break
            fi
            sleep 0.5
        done
        wait "$qpid" 2>/dev/null || true
        wait "$tpid" 2>/dev/null || true
        timings+=("L1 boot #$boot (QEMU start to chroot): ${boot_s:-never} s; this boot ran $(since "$t") s")
        if [ -n "$hung" ] && [ "$hung" != '?' ]; then
            if grep -qxF "$hung" "$RUN/hung.txt"; then
                printf '%-7s %7ss  %s\n' HUNG "$(since "$last")" "$hung" >>"$RUN/results.txt"
            else
                echo "$hung" >>"$RUN/hung.txt"
                say "$hung hung L1: once more in a fresh one"
            fi
        fi
        # What is left: the tests with no result yet.
        awk -F'\t' 'NR == FNR { if ($0 ~ /^[A-Z]+ /) { split($0, f, " +"); done[f[3]] = 1 } next }
            !(($1 "::" $3) in done)' "$RUN/results.txt" "$RUN/tests.txt" >"$RUN/todo.txt"
        over "$t_all" "$WATCHDOG" && break
        [ -n "$hung" ] || break # L1 ended on its own (or died): no reboot
    done
    timings+=("L1 in all: $(since "$t_all") s")
fi

# --- 5. the outcome --------------------------------------------------------------------------
total=$(wc -l <"$RUN/tests.txt")
ran=0 passed=0 failed=0 skipped=0 flaky=0
if [ -f "$RUN/results.txt" ]; then
    ran=$(wc -l <"$RUN/results.txt")
    passed=$(grep -c -e '^PASS ' -e '^FLAKY ' "$RUN/results.txt" || true)
    flaky=$(grep -c '^FLAKY ' "$RUN/results.txt" || true)
    skipped=$(grep -c '^SKIP ' "$RUN/results.txt" || true)
    failed=$((ran - passed - skipped))
fi
echo
echo "Timings:"
for l in "${timings[@]}"; do echo "  $l"; done
if [ -f "$RUN/results.txt" ]; then
    echo "  Linux-guest tests:"
    grep -e ' vm_linux::' -e '::linux_guest' "$RUN/results.txt" | sed 's/^/    /' || true
fi
if [ "$ran" -lt "$total" ]; then
    echo "error: $((total - ran)) of $total tests never reported (L1 died or the watchdog fired; see ${log:-the output above})" >&2
    failed=$((failed + total - ran))
fi
if [ -s "$RUN/hung.txt" ]; then
    echo "Hung L1 (flaky emulation; rerun in a fresh L1, result above): $(tr '\n' ' ' <"$RUN/hung.txt")"
fi
if [ "$skipped" -gt 0 ]; then
    echo "Skipped (and why): see the 'skip:' lines above; logs in $RUN/logs/"
fi
if [ "$flaky" -gt 0 ]; then
    echo "Flaky (failed once, passed when run again): $(grep '^FLAKY ' "$RUN/results.txt" | awk '{ print $3 }' | tr '\n' ' ')"
fi
again=""
[ "$flaky" -eq 0 ] || again=" ($flaky only when run again)"
echo "$passed passed$again, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
