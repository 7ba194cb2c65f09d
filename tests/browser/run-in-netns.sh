#!/bin/sh
# Runs one scenario against a fresh viaduct-bridge + viaduct-control (dev auth) inside
# the current network namespace. Meant to run in a private one with only `lo`, so that
# every ICE candidate is 127.0.0.1 and nothing leaves the machine:
#
#   unshare -n sh tests/browser/run-in-netns.sh BRIDGE_BIN CONTROL_BIN SCENARIO [ARGS...]
#
# SCENARIO is a .js file (run with node) or a .py file (run with $VIADUCT_PYTHON, else
# tests/aiortc/.venv/bin/python, else python3); it gets the control URL as its first
# argument, then ARGS. The scenario's stdout is passed through (its JSON report); its
# exit code is this script's. Everything started here is stopped by PID on exit, and
# the run directory is removed. $VIADUCT_KEEP_LOGS=DIR copies the logs there first.
# $VIADUCT_SCENARIO_TIMEOUT (seconds, default 120) bounds the scenario.
set -eu

if [ $# -lt 3 ]; then
    echo "usage: $0 BRIDGE_BIN CONTROL_BIN SCENARIO [ARGS...]" >&2
    exit 2
fi
bridge_bin=$1
control_bin=$2
scenario=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

ip link set lo up 2>/dev/null || ip link set dev lo up

run=$(mktemp -d "${TMPDIR:-/tmp}/viaduct-browser.XXXXXX")
bridge_pid=
control_pid=
scenario_pid=
cleanup() {
    status=$?
    trap - EXIT INT TERM
    if [ -n "$scenario_pid" ]; then
        kill -TERM "$scenario_pid" 2>/dev/null || true
        wait "$scenario_pid" 2>/dev/null || true
    fi
    for pid in $control_pid $bridge_pid; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $control_pid $bridge_pid; do
        # up to 5 s for a graceful exit, then SIGKILL
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ -n "${VIADUCT_KEEP_LOGS:-}" ]; then
        mkdir -p "$VIADUCT_KEEP_LOGS" && cp "$run"/*.log "$VIADUCT_KEEP_LOGS"/ 2>/dev/null || true
    elif [ "$status" -ne 0 ]; then
        for f in "$run"/bridge.log "$run"/control.log; do
            [ -s "$f" ] || continue
            echo "---- last lines of $(basename "$f")" >&2
            tail -n 30 "$f" >&2
        done
    fi
    rm -rf "$run"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 143' INT TERM

"$bridge_bin" --cores 1 --no-pin --port-base 0 --bind 127.0.0.1 \
    --socket "$run/bridge.sock" --log "${VIADUCT_BRIDGE_LOG:-warn}" \
    </dev/null >"$run/bridge.log" 2>&1 &
bridge_pid=$!

# Wait for the bridge's command socket.
i=0
while [ ! -S "$run/bridge.sock" ]; do
    if ! kill -0 "$bridge_pid" 2>/dev/null; then
        echo "viaduct-bridge exited:" >&2
        cat "$run/bridge.log" >&2
        exit 2
    fi
    i=$((i + 1))
    if [ $i -gt 200 ]; then
        echo "viaduct-bridge made no socket in 20 s" >&2
        exit 2
    fi
    sleep 0.1
done

"$control_bin" --listen 127.0.0.1:0 --bridge-socket "$run/bridge.sock" \
    --focus-secret test-focus-secret --db "$run/records.db" --state-dir "$run" \
    --stats-interval-ms 200 --shutdown-delay 0 --auth dev --log "${VIADUCT_CONTROL_LOG:-warn}" \
    </dev/null >"$run/control.out" 2>"$run/control.log" &
control_pid=$!

# It prints "viaduct-control listening on ADDR" on stdout once bound.
addr=
i=0
while [ -z "$addr" ]; do
    addr=$(sed -n 's/^viaduct-control listening on \([^ ]*\).*$/\1/p' "$run/control.out" 2>/dev/null | head -n 1)
    [ -n "$addr" ] && break
    if ! kill -0 "$control_pid" 2>/dev/null; then
        echo "viaduct-control exited:" >&2
        cat "$run/control.out" "$run/control.log" >&2
        exit 2
    fi
    i=$((i + 1))
    if [ $i -gt 200 ]; then
        echo "viaduct-control did not say where it listens in 20 s" >&2
        exit 2
    fi
    sleep 0.1
done
url="http://$addr"

# Ready = /about/health answers 200 (the bridge link is up).
http_ok() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 2 "$1"
    else
        node -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$1"
    fi
}
i=0
until http_ok "$url/about/health" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 100 ]; then
        echo "viaduct-control at $url never became healthy" >&2
        exit 2
    fi
    sleep 0.2
done
echo "run-in-netns: bridge pid $bridge_pid, control pid $control_pid at $url" >&2

case "$scenario" in
*.js) set -- node "$scenario" "$url" "$@" ;;
*.py)
    py=${VIADUCT_PYTHON:-}
    if [ -z "$py" ]; then
        if [ -x "$repo/tests/aiortc/.venv/bin/python" ]; then py=$repo/tests/aiortc/.venv/bin/python; else py=python3; fi
    fi
    set -- "$py" "$scenario" --url "$url" "$@"
    ;;
*) set -- "$scenario" "$url" "$@" ;;
esac

# The scenario runs in the background so that a TERM to this script reaches the trap.
timeout -k 5 "${VIADUCT_SCENARIO_TIMEOUT:-120}" "$@" &
scenario_pid=$!
set +e
wait "$scenario_pid"
rc=$?
set -e
exit "$rc"
