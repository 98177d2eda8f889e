#!/usr/bin/env bash
# Installs the published iii SDKs that the engine's SDK tests (tests/engine_sdk_*.rs) run real
# workers with, at pinned versions, under target/sdk/:
#   target/sdk/node  npm iii-sdk (node_modules beside the test workers' scripts)
#   target/sdk/py    a Python venv with PyPI iii-sdk
#   target/sdk/py011 a Python venv with PyPI iii-sdk 0.11 (the release of the user guide's era)
# Cached and idempotent: a version already installed is not fetched again. Quiet on success.
# Needs node+npm and python3 with venv; installs Debian's nodejs/npm/python3-venv when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
NODE_SDK=0.22.1
PY_SDK=0.25.0
PY_LEGACY_SDK=0.11.6
root=target/sdk
log=$(mktemp)
trap 'rm -f "$log"' EXIT
fail() {
    echo "error: $1" >&2
    cat "$log" >&2
    exit 1
}
apt_missing=()
command -v npm >/dev/null 2>&1 || apt_missing+=(nodejs npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_missing+=(python3 python3-venv)
if [ ${#apt_missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${apt_missing[@]}"; } \
        >"$log" 2>&1 || fail "installing ${apt_missing[*]}"
fi

node_dir=$root/node
have=$(node -p "require('./$node_dir/node_modules/iii-sdk/package.json').version" 2>/dev/null || true)
if [ "$have" != "$NODE_SDK" ]; then
    mkdir -p "$node_dir"
    [ -f "$node_dir/package.json" ] || echo '{"private": true}' >"$node_dir/package.json"
    (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error "iii-sdk@$NODE_SDK") \
        >"$log" 2>&1 || fail "npm install iii-sdk@$NODE_SDK"
fi

version_of() { # VENV
    "$1/bin/python" -c 'import importlib.metadata as m; print(m.version("iii-sdk"))' 2>/dev/null || true
}
python_sdk() { # VENV VERSION
    local py_dir=$1 want=$2
    if [ "$(version_of "$py_dir")" != "$want" ]; then
        [ -x "$py_dir/bin/python" ] || python3 -m venv "$py_dir" >"$log" 2>&1 || fail "python3 -m venv $py_dir"
        "$py_dir/bin/python" -m pip install --quiet "iii-sdk==$want" >"$log" 2>&1 \
            || fail "pip install iii-sdk==$want"
        [ "$(version_of "$py_dir")" = "$want" ] || fail "iii-sdk $want is not what $py_dir holds after pip install"
    fi
}
python_sdk "$root/py" "$PY_SDK"
python_sdk "$root/py011" "$PY_LEGACY_SDK"
