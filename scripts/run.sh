#!/usr/bin/env bash
# Builds and starts Viaduct with development defaults: viaduct-bridge (one worker on
# 127.0.0.1:10000, command socket /tmp/viaduct/bridge.sock, not pinned) and
# viaduct-control (HTTP on 127.0.0.1:8080, records in /tmp/viaduct/viaduct.sqlite).
# The focus secret is $VIADUCT_FOCUS_SECRET, or "dev-focus-secret". Participants
# authenticate in dev mode (the demo page at http://127.0.0.1:8080/ mints its own
# tokens; loopback only): set VIADUCT_AUTH=jwt and the jwt settings to try real tokens.
# Ctrl-C stops both.
# Extra arguments go to viaduct-bridge (see `viaduct-bridge --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p viaduct-bridge -p viaduct-control

state="${VIADUCT_STATE_DIR:-/tmp/viaduct}"
mkdir -p "$state"
socket="${VIADUCT_SOCKET:-$state/bridge.sock}"
export VIADUCT_FOCUS_SECRET="${VIADUCT_FOCUS_SECRET:-dev-focus-secret}"
export VIADUCT_AUTH="${VIADUCT_AUTH:-dev}"

target/release/viaduct-bridge --socket "$socket" --bind "${VIADUCT_BIND:-127.0.0.1}" --no-pin "$@" &
bridge=$!
trap 'kill "$bridge" 2>/dev/null || true; wait "$bridge" 2>/dev/null || true' EXIT INT TERM

echo "viaduct: bridge pid $bridge; control on http://127.0.0.1:8080 (focus secret: $VIADUCT_FOCUS_SECRET; demo page: http://127.0.0.1:8080/)" >&2
target/release/viaduct-control \
    --listen "${VIADUCT_LISTEN:-127.0.0.1:8080}" \
    --bridge-socket "$socket" \
    --db "$state/viaduct.sqlite" \
    --state-dir "$state"
