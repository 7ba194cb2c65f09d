#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test of the workspace
# (unit, integration against real viaduct-bridge processes on loopback, doc tests).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install the Rust toolchain (rustup) first" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# promtool (Debian package prometheus) checks the control service's /metrics.
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing promtool (Debian package prometheus)" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    else
        echo "promtool missing and cannot install it (need root and apt-get): apt-get install prometheus" >&2
        exit 1
    fi
fi
export VIADUCT_REQUIRE_PROMTOOL=1

# systemd-analyze and systemd-sysusers (Debian package systemd) check the units and the
# install script's user entry; they run offline, no systemd needs to be running.
if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v systemd-sysusers >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing systemd-analyze and systemd-sysusers (Debian package systemd)" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
    else
        echo "systemd-analyze missing and cannot install it (need root and apt-get): apt-get install systemd" >&2
        exit 1
    fi
fi
export VIADUCT_REQUIRE_SYSTEMD=1

# Browser end-to-end tests (control/tests/browser.rs): Debian's headless Chromium driven
# by playwright-core (npm), and an aiortc client (PyPI) in a venv. They run in private
# network namespaces (unshare -n), so they need root (or user namespaces) and iproute2.
if [ ! -x /usr/lib/chromium/chromium ] && ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium (Debian package)" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "chromium missing and cannot install it (need root and apt-get): apt-get install chromium" >&2
        exit 1
    fi
fi
if ! command -v npm >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1 \
    || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing nodejs, npm and python3-venv (Debian packages)" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm python3 python3-venv >/dev/null
    fi
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi
if [ ! -x tests/aiortc/.venv/bin/python ]; then
    python3 -m venv tests/aiortc/.venv
fi
tests/aiortc/.venv/bin/pip install -q --disable-pip-version-check -r tests/aiortc/requirements.txt
export VIADUCT_REQUIRE_BROWSER=1
# --- Janus (benches/tests/janus.rs: Viaduct and Janus through the same load generator) ---
# Needs the Debian package janus (1.1.x), plus ip (iproute2) and unshare (util-linux)
# for the test's private network namespace, and root for that namespace.
if ! command -v janus >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing janus and iproute2 (Debian packages)" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends janus iproute2 util-linux >/dev/null
    else
        echo "janus or ip missing and cannot install them (need root and apt-get): apt-get install janus iproute2" >&2
        exit 1
    fi
fi
export VIADUCT_REQUIRE_JANUS=1
# --- end Janus ---

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --doc
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi

# --- AF_XDP (issue #8) -------------------------------------------------------------------
# The bridge's `xdp` feature compiles an XDP program with clang (libbpf headers). Its tests
# run the bridge on AF_XDP in a network namespace with the peers in another, over a veth
# pair they create and delete: they need root. As root, under CI (or VIADUCT_REQUIRE_XDP=1)
# missing support fails them instead of skipping them.
if [ "${CI:-}" = true ] || [ "$(id -u)" = 0 ]; then
    export VIADUCT_REQUIRE_XDP=1
fi
if ! command -v clang >/dev/null 2>&1 || [ ! -f /usr/include/bpf/bpf_helpers.h ] || ! command -v ip >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing clang, llvm, libbpf-dev, libelf-dev, m4, iproute2 for the xdp feature" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            clang llvm libbpf-dev libelf-dev m4 iproute2 >/dev/null
    elif [ "${VIADUCT_REQUIRE_XDP:-}" = 1 ]; then
        echo "the xdp feature needs clang and libbpf-dev and cannot install them (need root and apt-get)" >&2
        exit 1
    else
        echo "skipping the AF_XDP tests: no clang/libbpf-dev and cannot install them (need root and apt-get)" >&2
        exit 0
    fi
fi
cargo clippy -p viaduct-bridge -p viaduct-benches --all-targets --locked --features viaduct-bridge/xdp,viaduct-benches/xdp -- -D warnings
# The library (frame, neighbour and backend unit tests) and xdp.rs with the feature, then
# the whole call and bad-input suites again with the bridge on AF_XDP, then the load
# generator with both ends on AF_XDP over veth (with its other loadgen tests).
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p viaduct-bridge --locked --features xdp --lib --test xdp --no-fail-fast
    VIADUCT_TEST_XDP=1 cargo nextest run -p viaduct-bridge --locked --features xdp --test call --test bad_input --no-fail-fast
    cargo nextest run -p viaduct-benches --locked --features xdp --test loadgen --no-fail-fast
else
    cargo test -p viaduct-bridge --locked --features xdp --lib --test xdp --no-fail-fast
    VIADUCT_TEST_XDP=1 cargo test -p viaduct-bridge --locked --features xdp --test call --test bad_input --no-fail-fast
    cargo test -p viaduct-benches --locked --features xdp --test loadgen --no-fail-fast
fi
