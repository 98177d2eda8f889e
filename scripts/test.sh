#!/usr/bin/env bash
# The whole test suite: installs prerequisites, checks formatting and lints, runs every test.
# Tests start their own registries, sandboxes and VMs on 127.0.0.1 and clean up after
# themselves; some need root (namespaces, cgroups) and /dev/kvm, and skip with a printed
# reason where those are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo fmt --check
cargo clippy --all-targets -- -D warnings
# Two cores here: two test threads keep namespace/VM tests from starving each other.
cargo test --all-targets -- --test-threads="${III_TEST_THREADS:-2}"
