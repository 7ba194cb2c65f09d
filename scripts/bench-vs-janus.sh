#!/usr/bin/env bash
# scripts/bench-vs-janus.sh — Viaduct side by side with Janus (VideoRoom), same load.
#
# Runs the standard scenario (10-person conferences; each participant sends audio at
# 50 pps of ~120 B and video at ~1.5 Mbps, 150 pps of ~1250 B; everyone receives
# everyone) with the same tool, `viaduct-loadgen`, against:
#   (j) Janus 1.x (Debian package `janus`), VideoRoom plugin + HTTP transport only,
#       configured from benches/janus/*.jcfg.in, `--target janus`;
#   (m) viaduct-bridge, mmsg backend;  (u) viaduct-bridge, io_uring backend;
# each SFU pinned to core 0 (taskset for Janus, --cores 0-0 for the bridge), the load
# generator on core 1. For each: a capacity search (participants at < 0.1% loss and
# p99 < BENCH_P99_MS, at most 10 trials), forwarded pps per core, CPU per forwarded
# packet (from /proc/<pid>/stat of Janus or the bridge), loss and p99 at capacity;
# then both Viaduct backends once more at Janus's capacity (the same load), and the
# ratios Viaduct/Janus. With perf installed, one profile of each SFU at Janus's
# capacity names what limits it. The table is appended, with the machine, to
# BENCHMARKS.md.
#
# Everything runs in a private network namespace (`unshare -n`; it and its veth go
# away with the script): Janus skips loopback interfaces, so a veth `jv0` carries
# 127.0.0.2, and since libnice on 127.0.0.2 cannot send to 127.0.0.1 the peers bind
# 127.0.0.2 too (the bridge stays on 127.0.0.1, as in scripts/bench.sh).
#
# Usage: scripts/bench-vs-janus.sh [--no-build] [--no-append] [--only janus|viaduct]
#        scripts/bench-vs-janus.sh --smoke OUTDIR   (1 conference x 3 peers, 3 s, through
#            Janus and Viaduct; JSON reports OUTDIR/janus.json and OUTDIR/viaduct.json;
#            no build, no pinning, no append: what benches/tests/janus.rs runs)
# Environment (all optional):
#   BENCH_BIN_DIR=target/release  where viaduct-bridge and viaduct-loadgen are
#   BENCH_LOADGEN_DURATION=5      --duration of each trial
#   BENCH_LOADGEN_TIMEOUT=420     seconds before a viaduct-loadgen run is killed
#   BENCH_P99_MS=250              p99 bound of the capacity search (loss bound: 0.1%): loose,
#                                 only to reject a queue building up without loss yet
#   BENCH_MAX_PARTICIPANTS=300    largest load tried
#   BENCH_PERF=1                  profile each SFU at Janus's capacity (0: no)
#   BENCH_OUT=BENCHMARKS.md       where results are appended
#
# Needs root (for the namespace), `janus`, iproute2, util-linux (unshare, taskset),
# python3. Everything it starts is stopped by PID; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BUILD=1
APPEND=1
ONLY=all
SMOKE=
ARGS=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --no-append) APPEND=0 ;;
        --only) shift; ONLY=${1:-}; [ "$ONLY" = janus ] || [ "$ONLY" = viaduct ] || {
            echo "--only takes janus or viaduct" >&2; exit 2; } ;;
        --smoke) shift; SMOKE=${1:-}; [ -n "$SMOKE" ] || { echo "--smoke takes a directory" >&2; exit 2; }
            BUILD=0; APPEND=0 ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "bench-vs-janus: $*" >&2; }

JANUS=$(command -v janus || true)
if [ -z "$JANUS" ]; then
    log "janus not found: apt-get install janus (Debian 12: 1.1.2)"
    exit 3
fi
JANUS_LIB=$(dirname "$(dpkg -L janus 2>/dev/null | grep '/plugins/libjanus_videoroom.so$' | head -1)" 2>/dev/null || true)
JANUS_LIB=${JANUS_LIB%/plugins}
[ -n "$JANUS_LIB" ] && [ -e "$JANUS_LIB/plugins/libjanus_videoroom.so" ] ||
    JANUS_LIB=/usr/lib/x86_64-linux-gnu/janus

# Build (outside the namespace), then re-run inside a private one.
if [ -z "${VIADUCT_BENCH_NETNS:-}" ]; then
    if [ "$BUILD" = 1 ]; then
        log "building (release)"
        cargo build --release --locked -p viaduct-bridge -p viaduct-benches >&2
    fi
    exec env VIADUCT_BENCH_NETNS=1 unshare -n -- "$0" "${ARGS[@]+"${ARGS[@]}"}"
fi

BIN=${BENCH_BIN_DIR:-$ROOT/target/release}
BRIDGE=$BIN/viaduct-bridge
LOADGEN=$BIN/viaduct-loadgen
LG_DURATION=${BENCH_LOADGEN_DURATION:-5}
LG_TIMEOUT=${BENCH_LOADGEN_TIMEOUT:-420}
P99_MS=${BENCH_P99_MS:-250}
MAX_PARTICIPANTS=${BENCH_MAX_PARTICIPANTS:-300}
PERF=${BENCH_PERF:-1}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
PARTICIPANTS=10
SFU_CORE=0
LOAD_CORE=1
JANUS_URL=http://127.0.0.2:8088/janus
for b in "$BRIDGE" "$LOADGEN"; do
    [ -x "$b" ] || { log "no $b (build first, or set BENCH_BIN_DIR)"; exit 1; }
done

DIR=$(mktemp -d "${TMPDIR:-/tmp}/viaduct-vs-janus.XXXXXX")
STARTED=() # PIDs of what this script started

stop_pid() { # stop_pid PID: SIGTERM, then SIGKILL after 5 s; only our own children
    local pid=$1 i keep=()
    if kill -TERM "$pid" 2>/dev/null; then
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    for i in "${STARTED[@]+"${STARTED[@]}"}"; do [ "$i" = "$pid" ] || keep+=("$i"); done
    STARTED=("${keep[@]+"${keep[@]}"}")
}
cleanup() {
    local pid
    for pid in "${STARTED[@]+"${STARTED[@]}"}"; do stop_pid "$pid"; done
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# The namespace: lo, and a veth carrying 127.0.0.2 for Janus (which skips loopback).
ip link set lo up
ip link add jv0 type veth peer name jv1
ip addr add 127.0.0.2/32 dev jv0
ip link set jv0 up
ip link set jv1 up

if [ -n "$SMOKE" ]; then
    mkdir -p "$SMOKE"
    PIN=0
    LG_DURATION=3
    LG_TIMEOUT=60
else
    PIN=1
    if [ "$(nproc)" -lt 2 ]; then
        log "needs at least 2 cores (SFU on core $SFU_CORE, load on core $LOAD_CORE)"
        exit 1
    fi
fi
LOADAVG=$(cut -d' ' -f1 /proc/loadavg)
if [ -z "$SMOKE" ] && python3 -c "import sys; sys.exit(0 if float('$LOADAVG') > 0.5 else 1)"; then
    log "warning: load average is $LOADAVG: other work on this machine will skew the figures"
fi

# thread_cpu PID OUT: the process's threads by CPU seconds (name, seconds), busiest first.
thread_cpu() {
    local pid=$1 t
    for t in /proc/"$pid"/task/*; do
        [ -r "$t/stat" ] || continue
        python3 - "$t/stat" <<'EOF' || true
import sys
s = open(sys.argv[1]).read()
name = s[s.index("(") + 1:s.rindex(")")]
f = s[s.rindex(")") + 2:].split()
print("%s %.2f" % (name.replace(" ", "_"), (int(f[11]) + int(f[12])) / 100.0))
EOF
    done | sort -k2 -n -r | head -6 >"$2"
}

# profile PID OUT SECONDS: perf's top symbols of PID over SECONDS (best effort).
profile() {
    [ "$PERF" = 1 ] && command -v perf >/dev/null 2>&1 || return 0
    timeout $(($3 + 20)) perf record -q -F 499 -p "$1" -o "$DIR/perf.data" -- sleep "$3" \
        >/dev/null 2>&1 || true
    timeout 60 perf report -q -i "$DIR/perf.data" --stdio --no-children --sort dso,sym \
        --percent-limit 2 2>/dev/null | grep -v '^$' | sed 's/^ *//' | head -12 >"$2" || true
    rm -f "$DIR/perf.data"
}

# Janus runs under taskset (which execs it: $! is Janus's PID) unless --smoke.
PIN_CMD=()
[ "$PIN" = 1 ] && PIN_CMD=(taskset -c "$SFU_CORE")

loadgen() { # loadgen NAME ARGS...: runs viaduct-loadgen, report in $DIR/NAME.json
    local name=$1 rc=0
    shift
    local pin_args=()
    [ "$PIN" = 1 ] && pin_args=(--cores "$LOAD_CORE")
    timeout "$LG_TIMEOUT" "$LOADGEN" "$@" "${pin_args[@]+"${pin_args[@]}"}" \
        --participants "$PARTICIPANTS_RUN" --video-kbps 1500 --duration "${RUN_SECONDS:-$LG_DURATION}" \
        --p99-bound-ms "$P99_MS" --max-participants "$MAX_PARTICIPANTS" \
        --quiet --json "$DIR/$name.json" >"$DIR/$name.log" 2>&1 || rc=$?
    if [ "$rc" != 0 ] || [ ! -s "$DIR/$name.json" ]; then
        log "viaduct-loadgen ($name) failed (exit $rc): $(tail -5 "$DIR/$name.log")"
        rm -f "$DIR/$name.json"
        return 1
    fi
}

start_janus() { # sets JANUS_PID
    local run=$DIR/janus f i
    rm -rf "$run"
    mkdir -p "$run/conf" "$run/plugins" "$run/transports" "$run/empty"
    for f in janus janus.transport.http janus.plugin.videoroom; do
        sed "s|@RUN_DIR@|$run|g" "$ROOT/benches/janus/$f.jcfg.in" >"$run/conf/$f.jcfg"
    done
    ln -s "$JANUS_LIB/plugins/libjanus_videoroom.so" "$run/plugins/"
    ln -s "$JANUS_LIB/transports/libjanus_http.so" "$run/transports/"
    "${PIN_CMD[@]+"${PIN_CMD[@]}"}" "$JANUS" -F "$run/conf" -C "$run/conf/janus.jcfg" >"$run/stdout" 2>&1 &
    JANUS_PID=$!
    STARTED+=("$JANUS_PID")
    for i in $(seq 100); do
        if (exec 3<>/dev/tcp/127.0.0.2/8088) 2>/dev/null; then return 0; fi
        kill -0 "$JANUS_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "Janus did not start: $(tail -5 "$run/stdout") $(tail -5 "$run/janus.log" 2>/dev/null)"
    stop_pid "$JANUS_PID"
    return 1
}

start_bridge() { # start_bridge BACKEND: sets BRIDGE_PID
    local sock=$DIR/bridge.sock i cores=(--cores "$SFU_CORE-$SFU_CORE")
    [ "$PIN" = 1 ] || cores=(--cores 1 --no-pin)
    rm -f "$sock"
    "$BRIDGE" "${cores[@]}" --bind 127.0.0.1 --port-base 0 --io-backend "$1" \
        --socket "$sock" --log warn >"$DIR/bridge-$1.log" 2>&1 &
    BRIDGE_PID=$!
    STARTED+=("$BRIDGE_PID")
    for i in $(seq 200); do
        [ -S "$sock" ] && return 0
        kill -0 "$BRIDGE_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "viaduct-bridge ($1) did not start: $(tail -5 "$DIR/bridge-$1.log")"
    stop_pid "$BRIDGE_PID"
    return 1
}

# ---------------------------------------------------------------------------------------
if [ -n "$SMOKE" ]; then
    PARTICIPANTS_RUN=3
    start_janus
    log "smoke: Janus pid $JANUS_PID, 1 conference x 3 peers"
    rc=0
    loadgen janus --target janus --janus-url "$JANUS_URL" --bridge-pid "$JANUS_PID" || rc=1
    stop_pid "$JANUS_PID"
    start_bridge auto
    log "smoke: viaduct-bridge pid $BRIDGE_PID, 1 conference x 3 peers"
    loadgen viaduct --bridge-socket "$DIR/bridge.sock" --bridge-pid "$BRIDGE_PID" || rc=1
    stop_pid "$BRIDGE_PID"
    for n in janus viaduct; do
        [ -f "$DIR/$n.json" ] && cp "$DIR/$n.json" "$SMOKE/$n.json"
        cat "$DIR/$n.log" >&2 || true
    done
    exit "$rc"
fi

PARTICIPANTS_RUN=$PARTICIPANTS
JANUS_CAP=0
AT_SECONDS=15 # the same-load runs: long enough for a profile after joining
if [ "$ONLY" != viaduct ]; then
    start_janus
    log "(j) Janus pid $JANUS_PID on core $SFU_CORE; viaduct-loadgen --find-capacity on core $LOAD_CORE"
    loadgen janus-cap --target janus --janus-url "$JANUS_URL" --bridge-pid "$JANUS_PID" --find-capacity || true
    JANUS_CAP=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['capacity']['participants'])" \
        "$DIR/janus-cap.json" 2>/dev/null || echo 0)
    log "(j) capacity $JANUS_CAP participants"
    if [ "$JANUS_CAP" -gt 0 ]; then
        # One more run at capacity, profiled, with the threads' CPU time.
        RUN_SECONDS=$AT_SECONDS loadgen janus-at --target janus --janus-url "$JANUS_URL" --bridge-pid "$JANUS_PID" \
            --conferences $((JANUS_CAP / PARTICIPANTS)) &
        lg=$!
        sleep $((3 + JANUS_CAP / 3)) # joining: two PeerConnections of ~0.12 s per participant
        profile "$JANUS_PID" "$DIR/janus.perf" 5
        wait "$lg" || true
    fi
    thread_cpu "$JANUS_PID" "$DIR/janus.threads"
    grep -m1 -o "SRTP profiles.*" "$DIR/janus-cap.log" >"$DIR/janus.profile" 2>/dev/null || true
    stop_pid "$JANUS_PID"
fi

if [ "$ONLY" != janus ]; then
    for backend in mmsg uring; do
        start_bridge "$backend" || continue
        log "($backend) viaduct-bridge pid $BRIDGE_PID on core $SFU_CORE; capacity search"
        loadgen "$backend-cap" --bridge-socket "$DIR/bridge.sock" --bridge-pid "$BRIDGE_PID" --find-capacity || true
        if [ "$JANUS_CAP" -gt 0 ]; then
            log "($backend) at Janus's capacity, $JANUS_CAP participants"
            RUN_SECONDS=$AT_SECONDS loadgen "$backend-at" --bridge-socket "$DIR/bridge.sock" --bridge-pid "$BRIDGE_PID" \
                --conferences $((JANUS_CAP / PARTICIPANTS)) &
            lg=$!
            sleep $((3 + JANUS_CAP / 10))
            profile "$BRIDGE_PID" "$DIR/$backend.perf" 5
            wait "$lg" || true
        fi
        thread_cpu "$BRIDGE_PID" "$DIR/$backend.threads"
        stop_pid "$BRIDGE_PID"
    done
fi

# ---------------------------------------------------------------------------------------
MACHINE="$(nproc) vCPU, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), Linux $(uname -r)"
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD 2>/dev/null; then COMMIT="$COMMIT+dirty"; fi
JANUS_VERSION=$(dpkg-query -W -f '${Version}' janus 2>/dev/null || echo unknown)

python3 - "$DIR" "$MACHINE" "$DATE" "$COMMIT" "$LOADAVG" "$LG_DURATION" "$P99_MS" \
    "$JANUS_VERSION" "$JANUS_CAP" >"$DIR/report.md" <<'EOF'
import json, os, sys

d, machine, date, commit, loadavg, lg_s, p99, jver, jcap = sys.argv[1:]

def load(name):
    try:
        with open(os.path.join(d, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def text(name):
    try:
        return open(os.path.join(d, name)).read().strip()
    except OSError:
        return ""

def figures(r):
    if r is None:
        return None
    cap = r.get("capacity") or {}
    dur = r.get("duration_s") or 0
    pps = r.get("forwarded_pps") or 0
    cpu = r.get("bridge_cpu_seconds")
    own = r.get("loadgen_cpu_seconds")
    return {
        "lg_share": own / dur if own is not None and dur else None,
        "cap": cap.get("participants"),
        "pps": pps,
        "cpu_share": cpu / dur if cpu is not None and dur else None,
        "us_per_pkt": 1e6 * cpu / (pps * dur) if cpu is not None and pps and dur else None,
        "loss": r.get("loss_ratio"),
        "p99": (r.get("latency_ms") or {}).get("p99"),
        "participants": r.get("participants"),
        "profiles": ", ".join(r.get("srtp_profiles") or []) or "?",
        "trials": cap.get("trials") or [],
        "clean": r.get("auth_failures") == 0 and r.get("payload_mismatches") == 0,
    }

def num(v, fmt):
    return "n/a" if v is None else fmt % v

rows = [("(j) Janus %s VideoRoom" % jver, "janus"), ("(m) Viaduct, mmsg", "mmsg"), ("(u) Viaduct, io_uring", "uring")]
cap = {k: figures(load(k + "-cap")) for _, k in rows}
at = {k: figures(load(k + "-at")) for _, k in rows}

out = ["## %s — Viaduct vs Janus — %s" % (date, machine), ""]
out.append("Commit %s; load average before the run %s; `scripts/bench-vs-janus.sh`: 10-person conferences, "
           "audio 50 pps + video 150 pps (1.5 Mbps) each, all-to-all; each SFU pinned to core 0, "
           "`viaduct-loadgen` on core 1; capacity = most participants at < 0.1%% loss and p99 < %s ms "
           "(`--find-capacity --duration %s`, at most 10 trials). Janus: one static event loop, "
           "a publisher and a multistream subscriber PeerConnection per participant; its forwarded "
           "packets are all decrypted by the load generator (Janus strips the send-time extension)." % (commit, loadavg, p99, lg_s))
out.append("")
out.append("| row | capacity (participants, one core) | forwarded pps per core at capacity | CPU per forwarded packet (µs) | SFU core busy | load generator core busy | loss | p99 (ms) | SRTP profile |")
out.append("|---|---|---|---|---|---|---|---|---|")
for name, k in rows:
    r = cap[k]
    if r is None:
        out.append("| %s | not measured | | | | | | | |" % name)
        continue
    out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        name, num(r["cap"], "%d"), num(r["pps"], "%.0f"), num(r["us_per_pkt"], "%.2f"),
        num(None if r["cpu_share"] is None else 100 * r["cpu_share"], "%.0f%%"),
        num(None if r["lg_share"] is None else 100 * r["lg_share"], "%.0f%%"),
        num(None if r["loss"] is None else 100 * r["loss"], "%.3f%%"), num(r["p99"], "%.2f"), r["profiles"]))
out.append("")
if any(at[k] for k in ("mmsg", "uring")) and cap["janus"]:
    out.append("At the same load (Janus's capacity, %s participants; runs of 15 s, each profiled by perf for 5 s):" % jcap)
    out.append("")
    out.append("| row | forwarded pps | CPU per forwarded packet (µs) | SFU core busy | load generator core busy | loss | p99 (ms) |")
    out.append("|---|---|---|---|---|---|---|")
    for name, k in rows:
        r = at[k] or (cap[k] if k == "janus" else None)
        if r is None:
            continue
        out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            name, num(r["pps"], "%.0f"), num(r["us_per_pkt"], "%.2f"),
            num(None if r["cpu_share"] is None else 100 * r["cpu_share"], "%.0f%%"),
            num(None if r["lg_share"] is None else 100 * r["lg_share"], "%.0f%%"),
            num(None if r["loss"] is None else 100 * r["loss"], "%.3f%%"), num(r["p99"], "%.2f")))
    out.append("")

def ratio(a, b, key, inverse=False):
    if not a or not b or not a.get(key) or not b.get(key):
        return "n/a"
    return "%.2f" % ((b[key] / a[key]) if inverse else (a[key] / b[key]))

out.append("| ratio Viaduct/Janus | capacity | forwarded pps per core | CPU per packet, Janus/Viaduct (at capacity) | CPU per packet, Janus/Viaduct (same load) |")
out.append("|---|---|---|---|---|")
for name, k in [("mmsg / Janus", "mmsg"), ("io_uring / Janus", "uring")]:
    jat = at["janus"] or cap["janus"]
    out.append("| %s | %s | %s | %s | %s |" % (
        name, ratio(cap[k], cap["janus"], "cap"), ratio(cap[k], cap["janus"], "pps"),
        ratio(cap[k], cap["janus"], "us_per_pkt", inverse=True),
        ratio(at[k], jat, "us_per_pkt", inverse=True)))
out.append("")
for name, k in rows:
    r = cap[k]
    if r and r["trials"]:
        out.append("%s trials: " % name + "; ".join(
            "%s: %s pps, %s loss, p99 %s ms (%s)" % (
                t.get("participants"), num(t.get("forwarded_pps"), "%.0f"),
                num(None if t.get("loss_ratio") is None else 100 * t["loss_ratio"], "%.3f%%"),
                num(t.get("p99_ms"), "%.2f"), "pass" if t.get("pass") else "fail")
            for t in r["trials"]))
        out.append("")
for name, k in rows:
    threads = text(k + ".threads")
    perf = text(k + ".perf")
    if threads or perf:
        out.append("%s — busiest threads (CPU s over the whole run): %s" % (
            name, ", ".join(threads.splitlines()) or "n/a"))
        if perf:
            out.append("")
            out.append("perf, top symbols at Janus's capacity:")
            out.append("")
            out.append("```")
            out.extend(perf.splitlines())
            out.append("```")
        out.append("")
print("\n".join(out))
EOF

echo
cat "$DIR/report.md"
if [ "$APPEND" = 1 ]; then
    { echo; cat "$DIR/report.md"; } >>"$OUT"
    log "appended to $OUT"
fi
