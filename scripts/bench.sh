#!/usr/bin/env bash
# scripts/bench.sh — Viaduct's end-to-end benchmark, run by hand (not in CI).
#
# On the standard scenario (10-person conferences; each participant sends audio at
# 50 pps of ~120 B and video at ~1.5 Mbps, 150 pps of ~1200 B; everyone receives
# everyone), with the bridge (or the reflector) pinned to core 0 and the load generator
# pinned to core 1, it measures in one run:
#   (a) the raw loopback limit: `udp-reflector serve` (mmsg, no crypto, same batching as
#       the bridge) + `udp-reflector load`, one more conference per step until loss
#       reaches 0.1% or p99 latency 5 ms (a queue building up: the bounds
#       viaduct-loadgen's capacity search uses) or the forwarded rate stops growing;
#       a failing step is re-run once, as one VM hiccup should not end the search;
#   (b) viaduct-bridge with the mmsg backend, (c) with the io_uring backend, each driven
#       by `viaduct-loadgen --find-capacity`;
#   (d) over a veth pair between two network namespaces (bridge in one, load generator in
#       the other; needs root): viaduct-bridge on mmsg, io_uring and AF_XDP (`--features
#       xdp`), each driven by `viaduct-loadgen --find-capacity --io xdp` (the load
#       generator's media on AF_XDP too, so that the veth's delivery into its sockets,
#       which runs on the sending core, is not charged to the bridge's core), and the
#       raw AF_XDP reference: `udp-reflector serve --io-backend xdp` stepped as in (a);
#   (e) equal load: a few interleaved rounds of (a), (b) and (c) at one fixed load
#       (150 participants), each the CPU per forwarded packet of the core: capacity
#       ratios move by about ±0.1 between runs on a VM, these less;
# prints a table (forwarded pps per bridge core, participants per core at < 0.1% loss,
# p99 added latency, and the ratios (b)/(a), (c)/(a), (c)/(b), xdp vs the best kernel
# backend on veth, and the equal-load costs and their ratios) and appends it, with the
# machine's description, to BENCHMARKS.md.
#
# Usage: scripts/bench.sh [--no-build] [--no-append] [--only raw|viaduct|veth|equal]
# Environment (all optional):
#   BENCH_STEP_SECONDS=5      length of each raw-limit step
#   BENCH_P99_MS=5            p99 bound of a raw-limit step (viaduct-loadgen's default)
#   BENCH_RAW_MAX=40          most conferences tried in (a) (with BENCH_GRO=1 the reflector
#                             passed 30, the old cap, at 73% of its core)
#   BENCH_LOADGEN_DURATION=5  --duration given to viaduct-loadgen
#   BENCH_LOADGEN_TIMEOUT=270 seconds before a viaduct-loadgen run is killed
#   BENCH_EQUAL_CONFERENCES=15  the load of (e), in conferences
#   BENCH_EQUAL_ROUNDS=3      interleaved rounds of (e)
#   BENCH_EQUAL_SECONDS=10    length of each run in (e)
#   BENCH_OUT=BENCHMARKS.md   where results are appended
#   BENCH_FAKE_LOADGEN=FILE   test aid: use FILE as viaduct-loadgen's JSON report for
#                             (b) and (c) instead of running the bridge and loadgen
#   BENCH_XDP_MODE=auto       --xdp-mode of the AF_XDP rows (auto, native, generic)
#   BENCH_LOADGEN_IO=xdp      viaduct-loadgen's --io in (d): xdp, or kernel (its peers'
#                             sockets); kernel when the xdp feature does not build
#   BENCH_GRO=0               1: both load sides take segmented runs whole (UDP_GRO:
#                             `udp-reflector load --gro true`, `viaduct-loadgen --gro`), as
#                             behind a NIC with segmentation offload; 0: the kernel splits
#                             them at delivery, on the sender's core, as it would at the
#                             device without that offload (the conservative figure)
#   BENCH_KEEP_AWAKE=auto     1: keep both cores from idling with a SCHED_IDLE spinner each
#                             (it yields at once to any other task, so it adds no load
#                             and no process is charged for it); auto: 1 on a VM. On a VM
#                             an idle vCPU halts and the hypervisor takes its time to run
#                             it again: measured here, p99 5.2 ms and 17.6% steal at 20
#                             participants without, 0.25 ms and 0.4% with. 0: off
#   (BENCH_P99_MS also bounds the (d) rows' capacity search)
#
# Loopback only. Everything it starts is stopped by PID on exit; every wait is bounded,
# and the whole run takes about 20 minutes (plus the build) on a 2-core VM.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BUILD=1
APPEND=1
LOADGEN_IO=${BENCH_LOADGEN_IO:-xdp}
GRO=${BENCH_GRO:-0}
LG_GRO=()
[ "$GRO" = 1 ] && LG_GRO=(--gro)
ONLY=all
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --no-append) APPEND=0 ;;
        --only) shift; ONLY=${1:-}
            case "$ONLY" in raw|viaduct|veth|equal) ;; *)
                echo "--only takes raw, viaduct, veth or equal" >&2; exit 2 ;; esac ;;
        -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

STEP_SECONDS=${BENCH_STEP_SECONDS:-5}
RAW_MAX=${BENCH_RAW_MAX:-40}
LG_DURATION=${BENCH_LOADGEN_DURATION:-5}
LG_TIMEOUT=${BENCH_LOADGEN_TIMEOUT:-270}
EQUAL_CONFERENCES=${BENCH_EQUAL_CONFERENCES:-15}
EQUAL_ROUNDS=${BENCH_EQUAL_ROUNDS:-3}
EQUAL_SECONDS=${BENCH_EQUAL_SECONDS:-10}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
FAKE=${BENCH_FAKE_LOADGEN:-}
PARTICIPANTS=10
LOSS_LIMIT=0.001                    # the bounds a step must stay within, as
P99_LIMIT_MS=${BENCH_P99_MS:-5}     # viaduct-loadgen's defaults (--loss-bound, --p99-bound-ms)
RAW_DEADLINE=300 # seconds: the raw-limit search stops stepping after this
BRIDGE_CORE=0
LOAD_CORE=1

REL=$ROOT/target/release
REFLECTOR=$REL/udp-reflector
BRIDGE=$REL/viaduct-bridge
LOADGEN=$REL/viaduct-loadgen

DIR=$(mktemp -d "${TMPDIR:-/tmp}/viaduct-bench.XXXXXX")
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
    # Forget it, so that cleanup never signals a PID the system has reused.
    for i in "${STARTED[@]+"${STARTED[@]}"}"; do [ "$i" = "$pid" ] || keep+=("$i"); done
    STARTED=("${keep[@]+"${keep[@]}"}")
}
NETNS=() # network namespaces this script made, for (d)
cleanup() {
    local pid ns
    for pid in "${STARTED[@]+"${STARTED[@]}"}"; do stop_pid "$pid"; done
    for ns in "${NETNS[@]+"${NETNS[@]}"}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

log() { echo "bench: $*" >&2; }
jget() { # jget FILE EXPR: a value from a JSON file (EXPR over d), "" when absent
    python3 - "$1" "$2" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    v = eval(sys.argv[2], {}, {"d": d})
except Exception:
    v = None
print("" if v is None else v)
EOF
}

if [ "$(nproc)" -lt 2 ]; then
    log "needs at least 2 cores (bridge on core $BRIDGE_CORE, load on core $LOAD_CORE)"
    exit 1
fi
LOADAVG=$(cut -d' ' -f1 /proc/loadavg)
if python3 -c "import sys; sys.exit(0 if float('$LOADAVG') > 0.5 else 1)"; then
    log "warning: load average is $LOADAVG: other work on this machine will skew the figures"
fi

if [ "$BUILD" = 1 ]; then
    log "building (release)"
    cargo build --release --locked -p viaduct-bridge -p viaduct-benches >&2
    if [ "$ONLY" = all ] || [ "$ONLY" = veth ]; then
        # The AF_XDP row needs the bridge built with the xdp feature (clang); the other
        # rows do not change with it.
        cargo build --release --locked -p viaduct-bridge -p viaduct-benches --features xdp >&2 || {
            log "could not build the xdp feature: the AF_XDP row will be missing"
            LOADGEN_IO=kernel
        }
    fi
fi

# Keep the vCPUs awake (see BENCH_KEEP_AWAKE above): one spinner per core at SCHED_IDLE,
# the lowest class, which any task preempts at once; stopped by PID at exit.
KEEP_AWAKE=${BENCH_KEEP_AWAKE:-auto}
if [ "$KEEP_AWAKE" = auto ]; then
    if grep -qw hypervisor /proc/cpuinfo; then KEEP_AWAKE=1; else KEEP_AWAKE=0; fi
fi
AWAKE_NOTE="cores left to idle"
if [ "$KEEP_AWAKE" = 1 ] && [ -z "$FAKE" ]; then
    for core in "$BRIDGE_CORE" "$LOAD_CORE"; do
        chrt --idle 0 taskset -c "$core" sh -c 'while :; do :; done' &
        STARTED+=("$!")
    done
    AWAKE_NOTE="vCPUs kept awake by a SCHED_IDLE spinner per core (BENCH_KEEP_AWAKE)"
    log "keeping cores $BRIDGE_CORE and $LOAD_CORE awake with SCHED_IDLE spinners"
fi
if [ "$GRO" = 1 ]; then
    AWAKE_NOTE="$AWAKE_NOTE; load sides take segmented runs whole (UDP_GRO, BENCH_GRO=1)"
else
    AWAKE_NOTE="$AWAKE_NOTE; the kernel splits segmented runs at delivery (no UDP_GRO on the load sides)"
fi
export AWAKE_NOTE

# ---------------------------------------------------------------------------------------
# (a) the raw loopback limit

start_reflector() { # start_reflector BACKEND OUTFILE: sets REFL_PID and REFL_ADDR
    local err=$DIR/reflector.err i
    : >"$err"
    "$REFLECTOR" serve --bind 127.0.0.1:0 --io-backend "$1" --core "$BRIDGE_CORE" \
        --seconds $((STEP_SECONDS + 60)) >"$2" 2>"$err" &
    REFL_PID=$!
    STARTED+=("$REFL_PID")
    REFL_ADDR=
    for i in $(seq 100); do
        REFL_ADDR=$(sed -n 's/^udp-reflector: serving on \([0-9.:]*\) .*/\1/p' "$err")
        [ -n "$REFL_ADDR" ] && return 0
        kill -0 "$REFL_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "the reflector did not start: $(cat "$err")"
    return 1
}

raw_step() { # raw_step CONFERENCES OUTFILE [SECONDS]
    local refl_out=$DIR/reflector-$1.json secs=${3:-$STEP_SECONDS}
    start_reflector mmsg "$refl_out"
    timeout $((secs + 30)) "$REFLECTOR" load --target "$REFL_ADDR" \
        --conferences "$1" --participants "$PARTICIPANTS" \
        --audio-pps 50 --audio-bytes 120 --video-pps 150 --video-bytes 1200 \
        --seconds "$secs" --core "$LOAD_CORE" --reflector-pid "$REFL_PID" \
        --gro "$([ "$GRO" = 1 ] && echo true || echo false)" >"$2" ||
        log "  udp-reflector load failed (exit $?)"
    stop_pid "$REFL_PID"
}

judge() { # judge FILE BEST_PPS: pass (within the bounds and growing), flat (no growth) or fail
    python3 - "$1" "$LOSS_LIMIT" "$2" "$P99_LIMIT_MS" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    limit, best, p99 = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    ok = d["loss_ratio"] < limit and d["latency_ms"]["p99"] < p99 and d["send_failures"] == 0
    print("pass" if ok and d["forwarded_pps"] > best * 1.01 else ("flat" if ok else "fail"))
except Exception:
    print("error")
EOF
}

if [ "$ONLY" = all ] || [ "$ONLY" = raw ]; then
    log "(a) raw loopback limit: udp-reflector (mmsg) on core $BRIDGE_CORE, load on core $LOAD_CORE, $STEP_SECONDS s per step"
    raw_begin=$(date +%s)
    best_pps=0
    for conf in $(seq 1 "$RAW_MAX"); do
        out=$DIR/raw-$conf.json
        raw_step "$conf" "$out"
        verdict=$(judge "$out" "$best_pps")
        # Up to two retries: on a shared VM a stall of 20-400 ms can fail a step at any
        # load (the 19:01 run's raw search ended at 40 participants, 25% busy, on two).
        for attempt in 2 3; do
            [ "$verdict" = pass ] && break
            log "  $conf conference(s): $verdict, attempt $attempt of 3"
            raw_step "$conf" "$out"
            verdict=$(judge "$out" "$best_pps")
        done
        echo "$verdict" >"$DIR/raw-$conf.verdict"
        python3 - "$out" "$verdict" >&2 <<'EOF' || true
import json, sys
d = json.load(open(sys.argv[1]))
print("bench:   %3d participants: forwarded %8.0f pps, loss %.4f%%, p99 %7.2f ms, reflector CPU %3.0f%%, load CPU %3.0f%%  %s" % (
    d["participants"], d["forwarded_pps"], 100 * d["loss_ratio"], d["latency_ms"]["p99"],
    100 * (d["reflector_cpu_share"] or 0), 100 * d["load_cpu_share"], sys.argv[2]))
EOF
        [ "$verdict" = pass ] || break
        best_pps=$(jget "$out" 'd["forwarded_pps"]')
        if [ $(($(date +%s) - raw_begin)) -gt "$RAW_DEADLINE" ]; then
            log "  the raw-limit search reached its time limit"
            break
        fi
    done
fi

# ---------------------------------------------------------------------------------------
# (b), (c) Viaduct

viaduct_run() { # viaduct_run BACKEND OUTFILE [LOADGEN ARGS]: a capacity search unless ARGS
    local backend=$1 out=$2 sock=$DIR/bridge.sock i pid run=(--find-capacity --duration "$LG_DURATION")
    shift 2
    [ $# -gt 0 ] && run=("$@")
    if [ -n "$FAKE" ]; then
        log "($backend) using $FAKE instead of a run (BENCH_FAKE_LOADGEN)"
        cp "$FAKE" "$out"
        return 0
    fi
    [ -x "$LOADGEN" ] || { log "no $LOADGEN: skipping $backend"; return 1; }
    rm -f "$sock"
    "$BRIDGE" --cores "$BRIDGE_CORE-$BRIDGE_CORE" --bind 127.0.0.1 --port-base 0 \
        --io-backend "$backend" --socket "$sock" --log warn \
        >"$DIR/bridge-$backend.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    for i in $(seq 200); do
        [ -S "$sock" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ ! -S "$sock" ]; then
        log "viaduct-bridge ($backend) did not start: $(tail -5 "$DIR/bridge-$backend.log")"
        stop_pid "$pid"
        return 1
    fi
    log "($backend) viaduct-bridge pid $pid on core $BRIDGE_CORE; viaduct-loadgen ${run[*]} on core $LOAD_CORE"
    local rc=0
    timeout "$LG_TIMEOUT" "$LOADGEN" --bridge-socket "$sock" --bridge-pid "$pid" "${LG_GRO[@]}" \
        --cores "$LOAD_CORE" --participants "$PARTICIPANTS" --video-kbps 1500 \
        "${run[@]}" --json "$out" >"$DIR/loadgen-$backend.log" 2>&1 || rc=$?
    stop_pid "$pid"
    if [ "$rc" != 0 ] || [ ! -s "$out" ]; then
        log "viaduct-loadgen ($backend) failed (exit $rc): $(tail -5 "$DIR/loadgen-$backend.log")"
        return 1
    fi
}

if [ "$ONLY" = all ] || [ "$ONLY" = viaduct ]; then
    log "(b) Viaduct, mmsg backend"
    viaduct_run mmsg "$DIR/viaduct-mmsg.json" || rm -f "$DIR/viaduct-mmsg.json"
    log "(c) Viaduct, io_uring backend"
    viaduct_run uring "$DIR/viaduct-uring.json" || rm -f "$DIR/viaduct-uring.json"
fi

# ---------------------------------------------------------------------------------------
# (e) equal load: raw, mmsg and io_uring in turn at one load, a few rounds

if { [ "$ONLY" = all ] || [ "$ONLY" = equal ]; } && [ -z "$FAKE" ]; then
    log "(e) equal load: $((EQUAL_CONFERENCES * PARTICIPANTS)) participants, $EQUAL_ROUNDS rounds of raw, mmsg and io_uring in turn, $EQUAL_SECONDS s each"
    for round in $(seq 1 "$EQUAL_ROUNDS"); do
        raw_step "$EQUAL_CONFERENCES" "$DIR/equal-$round-raw.json" "$EQUAL_SECONDS"
        for backend in mmsg uring; do
            viaduct_run "$backend" "$DIR/equal-$round-$backend.json" \
                --conferences "$EQUAL_CONFERENCES" --duration "$EQUAL_SECONDS" ||
                rm -f "$DIR/equal-$round-$backend.json"
        done
        python3 - "$DIR" "$round" >&2 <<'EOF' || true
import json, os, sys
d, r = sys.argv[1], sys.argv[2]
def cost(kind):
    try:
        j = json.load(open(os.path.join(d, "equal-%s-%s.json" % (r, kind))))
        cpu = j["reflector_cpu_share"] if kind == "raw" else j["bridge_cpu_seconds"] / j["duration_s"]
        return "%.2f us" % (1e6 * cpu / j["forwarded_pps"])
    except Exception:
        return "n/a"
print("bench:   round %s, core per forwarded packet: raw %s, mmsg %s, io_uring %s" % (r, cost("raw"), cost("mmsg"), cost("uring")))
EOF
    done
fi

# ---------------------------------------------------------------------------------------
# (d) over veth: bridge in namespace A (10.77.1.1), load generator in B (10.77.1.2)

NSA=viaduct-bench-a-$$
NSB=viaduct-bench-b-$$
VETH_A=vbencha$$
VETH_B=vbenchb$$

veth_setup() {
    [ "$(id -u)" = 0 ] || { log "(d) needs root (network namespaces): skipped"; return 1; }
    NETNS+=("$NSA" "$NSB")
    ip netns add "$NSA" && ip netns add "$NSB" &&
        ip link add "$VETH_A" netns "$NSA" type veth peer name "$VETH_B" netns "$NSB" &&
        ip -n "$NSA" addr add 10.77.1.1/24 dev "$VETH_A" &&
        ip -n "$NSB" addr add 10.77.1.2/24 dev "$VETH_B" &&
        ip -n "$NSA" link set lo up && ip -n "$NSB" link set lo up &&
        ip -n "$NSA" link set "$VETH_A" up && ip -n "$NSB" link set "$VETH_B" up ||
        { log "(d) could not create the namespaces: skipped"; return 1; }
}

veth_run() { # veth_run BACKEND OUTFILE
    local backend=$1 out=$2 sock=$DIR/bridge-veth.sock i pid extra=() lgio=(--io "$LOADGEN_IO")
    if [ "$backend" = xdp ]; then
        extra=(--xdp-iface "$VETH_A" --xdp-mode "${BENCH_XDP_MODE:-auto}")
    fi
    if [ "$LOADGEN_IO" = xdp ]; then
        lgio+=(--xdp-iface "$VETH_B" --xdp-mode "${BENCH_XDP_MODE:-auto}")
    fi
    rm -f "$sock"
    ip netns exec "$NSA" "$BRIDGE" --cores "$BRIDGE_CORE-$BRIDGE_CORE" --bind 10.77.1.1 \
        --port-base 10000 --io-backend "$backend" "${extra[@]}" --socket "$sock" --log info \
        >"$DIR/bridge-veth-$backend.log" 2>&1 &
    pid=$! # ip netns exec execs the bridge: this is its PID
    STARTED+=("$pid")
    for i in $(seq 200); do
        [ -S "$sock" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ ! -S "$sock" ]; then
        log "viaduct-bridge ($backend, veth) did not start: $(tail -5 "$DIR/bridge-veth-$backend.log")"
        stop_pid "$pid"
        return 1
    fi
    log "($backend, veth) viaduct-bridge pid $pid on core $BRIDGE_CORE in $NSA; viaduct-loadgen (--io $LOADGEN_IO) on core $LOAD_CORE in $NSB"
    local rc=0
    timeout "$LG_TIMEOUT" ip netns exec "$NSB" "$LOADGEN" --bridge-socket "$sock" --bridge-pid "$pid" \
        "${lgio[@]}" --cores "$LOAD_CORE" --participants "$PARTICIPANTS" --video-kbps 1500 \
        --allow-remote --local-ip 10.77.1.2 --p99-bound-ms "$P99_LIMIT_MS" \
        --find-capacity --duration "$LG_DURATION" --json "$out" >"$DIR/loadgen-veth-$backend.log" 2>&1 || rc=$?
    stop_pid "$pid"
    grep -a "AF_XDP socket closed" "$DIR/bridge-veth-$backend.log" | sed 's/^/bench:   /' >&2 || true
    if [ "$rc" != 0 ] || [ ! -s "$out" ]; then
        log "viaduct-loadgen ($backend, veth) failed (exit $rc): $(tail -5 "$DIR/loadgen-veth-$backend.log")"
        return 1
    fi
}

veth_raw_step() { # veth_raw_step CONFERENCES OUTFILE: the reflector on AF_XDP in A, its load in B
    local err=$DIR/reflector-veth.err i addr= pid
    : >"$err"
    ip netns exec "$NSA" "$REFLECTOR" serve --bind 10.77.1.1:0 --io-backend xdp \
        --xdp-iface "$VETH_A" --xdp-mode "${BENCH_XDP_MODE:-auto}" --core "$BRIDGE_CORE" \
        --seconds $((STEP_SECONDS + 60)) >"$DIR/rawveth-reflector-$1.json" 2>"$err" &
    pid=$!
    STARTED+=("$pid")
    for i in $(seq 100); do
        addr=$(sed -n 's/^udp-reflector: serving on \([0-9.:]*\) .*/\1/p' "$err")
        [ -n "$addr" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ -z "$addr" ]; then
        log "the AF_XDP reflector did not start: $(tail -3 "$err")"
        stop_pid "$pid"
        return 1
    fi
    timeout $((STEP_SECONDS + 30)) ip netns exec "$NSB" "$REFLECTOR" load --target "$addr" \
        --local 10.77.1.2 --conferences "$1" --participants "$PARTICIPANTS" \
        --audio-pps 50 --audio-bytes 120 --video-pps 150 --video-bytes 1200 \
        --seconds "$STEP_SECONDS" --core "$LOAD_CORE" --reflector-pid "$pid" >"$2" ||
        log "  udp-reflector load failed (exit $?)"
    stop_pid "$pid"
}

if { [ "$ONLY" = all ] || [ "$ONLY" = veth ]; } && [ -z "$FAKE" ] && veth_setup; then
    for backend in mmsg uring xdp; do
        log "(d) Viaduct over veth, $backend backend"
        veth_run "$backend" "$DIR/veth-$backend.json" || rm -f "$DIR/veth-$backend.json"
    done
    log "(d) raw AF_XDP reference over veth: udp-reflector (xdp) in $NSA, load in $NSB"
    best_pps=0
    raw_begin=$(date +%s)
    for conf in $(seq 1 "$RAW_MAX"); do
        out=$DIR/rawveth-$conf.json
        veth_raw_step "$conf" "$out" || break
        verdict=$(judge "$out" "$best_pps")
        for attempt in 2 3; do
            [ "$verdict" = pass ] && break
            log "  $conf conference(s): $verdict, attempt $attempt of 3"
            veth_raw_step "$conf" "$out" || break 2
            verdict=$(judge "$out" "$best_pps")
        done
        echo "$verdict" >"$DIR/rawveth-$conf.verdict"
        log "  $conf conference(s): $(jget "$out" '"%.0f pps, loss %.4f%%, p99 %.2f ms" % (d["forwarded_pps"], 100 * d["loss_ratio"], d["latency_ms"]["p99"])') $verdict"
        [ "$verdict" = pass ] || break
        best_pps=$(jget "$out" 'd["forwarded_pps"]')
        [ $(($(date +%s) - raw_begin)) -le "$RAW_DEADLINE" ] || { log "  time limit"; break; }
    done
fi

# ---------------------------------------------------------------------------------------
# The table

MACHINE="$(nproc) vCPU, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), Linux $(uname -r)"
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD 2>/dev/null; then COMMIT="$COMMIT+dirty"; fi

BENCH_ONLY=$ONLY python3 - "$DIR" "$PARTICIPANTS" "$P99_LIMIT_MS" "$MACHINE" "$DATE" "$COMMIT" "$LOADAVG" \
    "$STEP_SECONDS" "$LG_DURATION" >"$DIR/report.md" <<'EOF'
import glob, json, os, sys

dirname, per_conf, p99_limit, machine, date, commit, loadavg, step_s, lg_s = sys.argv[1:]
per_conf = int(per_conf)

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

# (a): every step, and the best passing one.
steps = []
for path in glob.glob(os.path.join(dirname, "raw-*.json")):
    d = load(path)
    if d is None:
        continue
    verdict_path = path[:-5] + ".verdict"
    verdict = open(verdict_path).read().strip() if os.path.exists(verdict_path) else "?"
    steps.append((d["conferences"], d, verdict))
steps.sort(key=lambda s: s[0])
raw = None
passing = [d for _, d, v in steps if v in ("pass", "flat")]
if passing:
    best = max(passing, key=lambda d: d["forwarded_pps"])
    raw = {
        "pps": best["forwarded_pps"],
        "participants": best["participants"],
        "p99": best["latency_ms"]["p99"],
        "cpu": best.get("reflector_cpu_share"),
        "note": "%d conferences; load side %.0f%% CPU" % (best["conferences"], 100 * best["load_cpu_share"]),
    }
    raw["pps_per_cpu"] = raw["pps"] / raw["cpu"] if raw["cpu"] else None
    if steps[-1][2] == "pass":
        raw["note"] += "; the search stopped before any loss: a lower bound"

def viaduct(path):
    d = load(path)
    if d is None:
        return None
    cap = d.get("capacity") or {}
    # The bridge runs one worker (--cores 0-0): per-core figures are the totals.
    pps = cap.get("forwarded_pps", d.get("forwarded_pps"))
    parts = cap.get("participants_per_core", cap.get("participants"))
    dur = d.get("duration_s") or 0
    cpu = d.get("bridge_cpu_seconds")
    return {
        "pps": pps,
        "participants": parts,
        "p99": cap.get("p99_ms", (d.get("latency_ms") or {}).get("p99")),
        "cpu": (cpu / dur) if cpu is not None and dur else None,
        "note": "%s auth failures, %s payload mismatches; load generator I/O %s, %s CPU" % (
            d.get("auth_failures", "?"), d.get("payload_mismatches", "?"), d.get("loadgen_io", "kernel"),
            "%.0f%%" % (100 * d["loadgen_cpu_seconds"] / dur) if d.get("loadgen_cpu_seconds") and dur else "n/a"),
        "trials": cap.get("trials") or [],
        "pps_per_cpu": pps / (cpu / dur) if pps and cpu and dur else None,
    }

mmsg = viaduct(os.path.join(dirname, "viaduct-mmsg.json"))
uring = viaduct(os.path.join(dirname, "viaduct-uring.json"))

def num(v, fmt):
    return "n/a" if v is None else fmt % v

def ratio(x, y, key):
    if not x or not y or not x.get(key) or not y.get(key):
        return "n/a"
    return "%.2f" % (x[key] / y[key])

out = []
out.append("## %s — %s" % (date, machine))
out.append("")
out.append("Commit %s; load average before the run %s; raw steps of %s s within < 0.1%% loss and p99 < %s ms; `viaduct-loadgen --find-capacity --duration %s`; %s." % (commit, loadavg, step_s, p99_limit, lg_s, os.environ.get("AWAKE_NOTE", "")))
out.append("")
loopback_rows = os.environ.get("BENCH_ONLY") not in ("veth", "equal")
if loopback_rows:
    out.append("| row | forwarded pps per bridge core | participants per core at < 0.1% loss | p99 added latency (ms) | bridge core busy at that load | notes |")
    out.append("|---|---|---|---|---|---|")
for name, r in [] if not loopback_rows else [("(a) raw loopback limit (udp-reflector, mmsg)", raw),
                ("(b) Viaduct, mmsg", mmsg),
                ("(c) Viaduct, io_uring", uring)]:
    if r is None:
        out.append("| %s | not measured | | | | |" % name)
        continue
    out.append("| %s | %s | %s | %s | %s | %s |" % (
        name, num(r["pps"], "%.0f"), num(r["participants"], "%g"), num(r["p99"], "%.2f"),
        num(None if r["cpu"] is None else 100 * r["cpu"], "%.0f%%"), r["note"]))
if loopback_rows:
    out.append("")
    out.append("| ratio | forwarded pps | participants | forwarded pps per CPU-second of the core |")
    out.append("|---|---|---|---|")
for name, x, y in [] if not loopback_rows else [("(b)/(a) Viaduct mmsg vs raw", mmsg, raw),
                   ("(c)/(a) Viaduct io_uring vs raw", uring, raw),
                   ("(c)/(b) io_uring vs mmsg", uring, mmsg)]:
    out.append("| %s | %s | %s | %s |" % (name, ratio(x, y, "pps"), ratio(x, y, "participants"), ratio(x, y, "pps_per_cpu")))
if loopback_rows:
    out.append("")
    out.append("Forwarded pps per CPU-second of the core (the rate at that load divided by the core's busy share): raw %s, Viaduct mmsg %s, io_uring %s." % (
        num((raw or {}).get("pps_per_cpu"), "%.0f"), num((mmsg or {}).get("pps_per_cpu"), "%.0f"), num((uring or {}).get("pps_per_cpu"), "%.0f")))
    out.append("")
# (e): equal load, interleaved rounds; the core's CPU per forwarded packet.
def equal_cost(path, kind):
    d = load(path)
    try:
        cpu = d["reflector_cpu_share"] if kind == "raw" else d["bridge_cpu_seconds"] / d["duration_s"]
        bounds = d["loss_ratio"] < 0.001 and d["latency_ms"]["p99"] < float(p99_limit)
        return (1e6 * cpu / d["forwarded_pps"], bounds, d["participants"])
    except (TypeError, KeyError, ZeroDivisionError):
        return None
rounds = sorted({int(os.path.basename(p).split("-")[1]) for p in glob.glob(os.path.join(dirname, "equal-*-*.json"))})
if rounds:
    kinds = [("raw", "raw reflector (mmsg)"), ("mmsg", "Viaduct, mmsg"), ("uring", "Viaduct, io_uring")]
    costs = {k: [equal_cost(os.path.join(dirname, "equal-%d-%s.json" % (r, k)), k) for r in rounds] for k, _ in kinds}
    parts = next((c[2] for cs in costs.values() for c in cs if c), "?")
    def median(xs):
        xs = sorted(x for x in xs if x is not None)
        if not xs:
            return None
        m = len(xs) // 2
        return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2
    out.append("| (e) equal load, %s participants: µs of the core per forwarded packet | %s | median |" % (
        parts, " | ".join("round %d" % r for r in rounds)))
    out.append("|---|%s---|" % ("---|" * len(rounds)))
    med = {}
    for k, name in kinds:
        cells = ["n/a" if c is None else ("%.2f" % c[0]) + ("" if c[1] else " (out of bounds)") for c in costs[k]]
        med[k] = median([c[0] for c in costs[k] if c])
        out.append("| %s | %s | %s |" % (name, " | ".join(cells), num(med[k], "%.2f")))
    def per_cpu(a, b):  # forwarded pps per CPU-second of a, against b's: the inverse cost ratio
        return "n/a" if not med.get(a) or not med.get(b) else "%.2f" % (med[b] / med[a])
    def rounds_ratio(a, b):
        rs = ["%.2f" % (y[0] / x[0]) for x, y in zip(costs[a], costs[b]) if x and y]
        return ", ".join(rs) if rs else "n/a"
    out.append("")
    out.append("Equal load, forwarded pps per CPU-second of the core from the medians: Viaduct mmsg vs raw %s, io_uring vs raw %s, io_uring vs mmsg %s (per round: %s; %s; %s). A run out of the bounds was likely stalled; its cost counts all the same." % (
        per_cpu("mmsg", "raw"), per_cpu("uring", "raw"), per_cpu("uring", "mmsg"),
        rounds_ratio("mmsg", "raw"), rounds_ratio("uring", "raw"), rounds_ratio("uring", "mmsg")))
    out.append("")

# (d): over veth between two namespaces.
veth = {b: viaduct(os.path.join(dirname, "veth-%s.json" % b)) for b in ("mmsg", "uring", "xdp")}
if any(veth.values()):
    out.append("| (d) over veth, two namespaces | forwarded pps per bridge core | participants per core at < 0.1% loss | p99 added latency (ms) | bridge core busy at that load | notes |")
    out.append("|---|---|---|---|---|---|")
    for b, r in veth.items():
        if r is None:
            out.append("| Viaduct, %s | not measured | | | | |" % b)
        else:
            out.append("| Viaduct, %s | %s | %s | %s | %s | %s |" % (
                b, num(r["pps"], "%.0f"), num(r["participants"], "%g"), num(r["p99"], "%.2f"),
                num(None if r["cpu"] is None else 100 * r["cpu"], "%.0f%%"), r["note"]))
    rawveth = []
    for path in glob.glob(os.path.join(dirname, "rawveth-[0-9]*.json")):
        d = load(path)
        vp = path[:-5] + ".verdict"
        if d and os.path.exists(vp) and open(vp).read().strip() in ("pass", "flat"):
            rawveth.append(d)
    rv = None
    if rawveth:
        b = max(rawveth, key=lambda d: d["forwarded_pps"])
        rv = {"pps": b["forwarded_pps"], "participants": b["participants"]}
        out.append("| raw AF_XDP reference (udp-reflector, xdp) | %.0f | %s | %.2f | %s | %d conferences; load side %.0f%% CPU |" % (
            b["forwarded_pps"], b["participants"], b["latency_ms"]["p99"],
            num(None if b.get("reflector_cpu_share") is None else 100 * b["reflector_cpu_share"], "%.0f%%"),
            b["conferences"], 100 * b["load_cpu_share"]))
    kernel = [r for r in (veth["mmsg"], veth["uring"]) if r and r.get("pps")]
    best = max(kernel, key=lambda r: r["pps"]) if kernel else None
    out.append("")
    best_eff = max(kernel, key=lambda r: r.get("pps_per_cpu") or 0) if kernel else None
    out.append("xdp vs the best kernel backend on veth: forwarded pps %s, participants %s, forwarded pps per CPU-second of the core %s (xdp %s, best kernel %s); xdp vs the raw AF_XDP reference: forwarded pps %s." % (
        ratio(veth["xdp"], best, "pps"), ratio(veth["xdp"], best, "participants"),
        ratio(veth["xdp"], best_eff, "pps_per_cpu"), num((veth["xdp"] or {}).get("pps_per_cpu"), "%.0f"),
        num((best_eff or {}).get("pps_per_cpu"), "%.0f"), ratio(veth["xdp"], rv, "pps")))
    out.append("")
    for b, r in veth.items():
        if r and r["trials"]:
            out.append("Viaduct %s over veth, trials (participants: forwarded pps, loss, p99 ms):" % b)
            out.append("")
            for t in r["trials"]:
                out.append("- %s: %s pps, %s loss, p99 %s ms (%s)" % (
                    t.get("participants"), num(t.get("forwarded_pps"), "%.0f"),
                    num(None if t.get("loss_ratio") is None else 100 * t["loss_ratio"], "%.3f%%"),
                    num(t.get("p99_ms"), "%.2f"), "pass" if t.get("pass") else "fail"))
            out.append("")
if steps:
    out.append("Raw-limit steps (participants: forwarded pps, loss, p99 ms, reflector CPU, load CPU):")
    out.append("")
    for conf, d, verdict in steps:
        out.append("- %d: %.0f pps, %.3f%% loss, p99 %.2f ms, reflector %.0f%%, load %.0f%% (%s)" % (
            d["participants"], d["forwarded_pps"], 100 * d["loss_ratio"], d["latency_ms"]["p99"],
            100 * (d.get("reflector_cpu_share") or 0), 100 * d["load_cpu_share"], verdict))
    out.append("")
for name, r in [("mmsg", mmsg), ("io_uring", uring)]:
    if r and r["trials"]:
        out.append("Viaduct %s trials (participants: forwarded pps, loss, p99 ms):" % name)
        out.append("")
        for t in r["trials"]:
            out.append("- %s: %s pps, %s loss, p99 %s ms (%s)" % (
                t.get("participants"), num(t.get("forwarded_pps"), "%.0f"),
                num(None if t.get("loss_ratio") is None else 100 * t["loss_ratio"], "%.3f%%"),
                num(t.get("p99_ms"), "%.2f"), "pass" if t.get("pass") else "fail"))
        out.append("")
print("\n".join(out))
EOF

echo
cat "$DIR/report.md"
if [ "$APPEND" = 1 ]; then
    if [ ! -f "$OUT" ]; then
        printf '# Viaduct benchmarks\n\nResults of `scripts/bench.sh`, newest last.\n\n' >"$OUT"
    fi
    { echo; cat "$DIR/report.md"; } >>"$OUT"
    log "appended to $OUT"
fi
