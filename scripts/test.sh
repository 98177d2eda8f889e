#!/usr/bin/env bash
# The whole test suite: installs prerequisites, checks formatting and lints, runs every test.
# Tests start their own registries, sandboxes and VMs on 127.0.0.1 and clean up after
# themselves; some need root (namespaces, cgroups) and /dev/kvm, and skip with a printed
# reason where those are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-sdks.sh  # the published iii SDKs the engine_sdk_* tests run workers with
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# The module docs are the map of the code: a stale link or broken markup fails the build.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
# Two cores here: two test threads keep namespace/VM tests from starving each other.
skipped=target/tmp/skipped.txt
rm -f "$skipped"
cargo test --all-targets -- --test-threads="${III_TEST_THREADS:-2}"
# Cargo hides what passing tests print; tests that could not run here say why in this list.
if [ -s "$skipped" ]; then
    echo "Tests skipped on this host (and why):"
    sed 's/^/  SKIP /' "$skipped"
fi
# iii ships as one static binary: the musl release build must keep working (glibc +crt-static
# is the fallback where the musl target cannot be installed).
if rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl; then
    cargo build --release --target x86_64-unknown-linux-musl
    bin=target/x86_64-unknown-linux-musl/release/iii
else
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target x86_64-unknown-linux-gnu
    bin=target/x86_64-unknown-linux-gnu/release/iii
fi
file "$bin" | grep -Eq 'static(-pie)? linked' || { echo "error: $bin is not statically linked" >&2; exit 1; }
"$bin" --help >/dev/null
echo "static binary: $bin ($(du -h "$bin" | cut -f1))"
# The shipped binary's VMM threads run under seccomp allow-lists written against two libcs:
# drive a vm worker (start, logs, stop; every VMM thread confined) with the static build too.
III_TEST_III=$PWD/$bin cargo test --test vm_sandbox cli_start_logs_stop_of_a_vm_worker -- --test-threads=1
# The Linux-guest tests skip above wherever /dev/kvm cannot boot a stock kernel (these
# machines' nested paravirtual KVM): scripts/test-kvm.sh runs them where Linux boots — this
# host's KVM, else a QEMU/TCG L1 guest with a real KVM of its own — building the guest kernel
# once (~4 min on 2 cores, cached in ~/.cache/iii). The other KVM tests ran directly above.
# III_SKIP_LINUX_GUEST=1 skips this, and says so.
if [ "${III_SKIP_LINUX_GUEST:-}" = 1 ]; then
    echo "  SKIP scripts/test-kvm.sh (the Linux-guest tests): III_SKIP_LINUX_GUEST=1"
else
    scripts/test-kvm.sh vm_linux \
        vm_sandbox::auto_picks_vm_only_where_the_kernel_boots \
        vm_sandbox::linux_guest_runs_a_worker_with_logs_exec_and_stop \
        vm_sandbox::linux_guest_worker_reaches_the_host_through_its_nic_and_is_held_to_its_policy \
        vm_sandbox::linux_guest_out_of_memory_is_reported_as_such \
        vm_sandbox::linux_guest_kernel_panic_is_reported_and_the_worker_restarted \
        vm_sandbox::linux_guest_runs_a_debian_minbase_image
fi
