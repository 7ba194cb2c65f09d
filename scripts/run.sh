#!/usr/bin/env bash
# Builds and starts viaduct-bridge with development defaults: one worker on
# 127.0.0.1:10000, the command socket under /tmp/viaduct, not pinned. Any extra
# arguments are passed to viaduct-bridge (see `viaduct-bridge --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p viaduct-bridge
exec target/release/viaduct-bridge \
    --socket "${VIADUCT_SOCKET:-/tmp/viaduct/bridge.sock}" \
    --bind "${VIADUCT_BIND:-127.0.0.1}" \
    --no-pin \
    "$@"
