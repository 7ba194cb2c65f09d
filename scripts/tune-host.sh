#!/usr/bin/env bash
# Checks (and with --apply, tunes) a host for viaduct-bridge: UDP buffer and backlog
# sysctls, which cores to give the bridge and where the NIC interrupts go, whether
# io_uring is usable, and RLIMIT_MEMLOCK; with --xdp-iface, whether AF_XDP can run on
# that interface. Read-only and runnable without root unless --apply, which writes
# /etc/sysctl.d/90-viaduct.conf and loads it (root only).
#
#   scripts/tune-host.sh [--apply] [--workers N] [--xdp-iface IFACE]
#
#   --workers N         bridge workers planned (default: cores - 1, at least 1)
#   --xdp-iface IFACE   check AF_XDP (io-backend = "xdp") on IFACE: kernel, driver, queues, MTU
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

apply=0
workers=
xdp_iface=
while [ $# -gt 0 ]; do
    case "$1" in
        --apply) apply=1 ;;
        --workers) workers=${2:?--workers needs a number}; shift ;;
        --workers=*) workers=${1#*=} ;;
        --xdp-iface) xdp_iface=${2:?--xdp-iface needs an interface}; shift ;;
        --xdp-iface=*) xdp_iface=${1#*=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "tune-host.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$apply" = 1 ] && [ "$(id -u)" != 0 ]; then
    echo "tune-host.sh: --apply needs root" >&2
    exit 1
fi

conf=/etc/sysctl.d/90-viaduct.conf
ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
if [ -z "$workers" ]; then
    workers=$((ncpu > 1 ? ncpu - 1 : 1))
fi
case "$workers" in ''|*[!0-9]*) echo "tune-host.sh: --workers must be a number" >&2; exit 2 ;; esac

# Recommended values: 16 MiB socket buffers match the bridge's default socket-buffer
# (without CAP_NET_ADMIN the kernel caps SO_RCVBUF at rmem_max); a deep backlog for
# bursts; udp_mem in pages (min pressure max), about 1/2/4 GiB with 4 KiB pages.
want_names=(net.core.rmem_max net.core.wmem_max net.core.rmem_default net.core.wmem_default
    net.core.netdev_max_backlog net.ipv4.udp_mem net.ipv4.udp_rmem_min net.ipv4.udp_wmem_min)
want_values=(16777216 16777216 1048576 1048576 30000 "262144 524288 1048576" 16384 16384)

read_sysctl() {
    local f=/proc/sys/${1//.//}
    if [ -r "$f" ]; then tr -s ' \t' ' ' <"$f"; else echo "unavailable"; fi
}

# True when the current value is at least the wanted one (each field, for udp_mem).
at_least() {
    local cur=($1) want=($2) i
    [ ${#cur[@]} -eq ${#want[@]} ] || return 1
    for i in "${!want[@]}"; do
        case "${cur[$i]}" in ''|*[!0-9]*) return 1 ;; esac
        [ "${cur[$i]}" -ge "${want[$i]}" ] || return 1
    done
}

# Field by field, the larger of the current and the wanted value: --apply never lowers
# a setting the host already has higher (udp_mem scales with the host's memory).
max_fields() {
    local cur=($1) want=($2) out=() i
    for i in "${!want[@]}"; do
        case "${cur[$i]:-}" in
            ''|*[!0-9]*) out+=("${want[$i]}") ;;
            *) out+=("$(( cur[i] > want[i] ? cur[i] : want[i] ))") ;;
        esac
    done
    echo "${out[*]}"
}

echo "== sysctls for a UDP media server"
printf '  %-28s %-26s %-26s %s\n' name current recommended ""
short=0
for i in "${!want_names[@]}"; do
    n=${want_names[$i]}; w=${want_values[$i]}
    c=$(read_sysctl "$n")
    if at_least "$c" "$w"; then mark=ok; else mark=LOW; short=$((short + 1)); fi
    printf '  %-28s %-26s %-26s %s\n' "$n" "$c" "$w" "$mark"
done

if [ "$apply" = 1 ]; then
    {
        echo "# Written by Viaduct's scripts/tune-host.sh --apply: UDP buffers and backlog"
        echo "# for viaduct-bridge. Remove this file and run 'sysctl --system' to undo."
        for i in "${!want_names[@]}"; do
            n=${want_names[$i]}
            echo "$n = $(max_fields "$(read_sysctl "$n")" "${want_values[$i]}")"
        done
    } >"$conf.new"
    chmod 0644 "$conf.new"
    mv "$conf.new" "$conf"
    echo "  wrote $conf"
    if sysctl -p "$conf" >/dev/null; then
        echo "  loaded $conf"
    else
        echo "  could not load every value (in a container some are read-only)" >&2
    fi
elif [ "$short" -gt 0 ]; then
    echo "  $short below the recommendation: run with --apply (root) to write $conf"
fi

echo
echo "== cores for the bridge ($ncpu online, $workers worker(s) planned)"
if [ "$workers" -ge "$ncpu" ]; then
    echo "  $workers workers on $ncpu cores leaves none for the kernel, the control"
    echo "  service and NIC interrupts: plan at most $((ncpu > 1 ? ncpu - 1 : 1))."
fi
first=$((ncpu - workers))
[ "$first" -lt 1 ] && first=$((ncpu > 1 ? 1 : 0))
last=$((first + workers - 1))
[ "$last" -ge "$ncpu" ] && last=$((ncpu - 1))
span() { if [ "$1" = "$2" ]; then echo "$1"; else echo "$1-$2"; fi; }
housekeeping=$(span 0 $((first > 0 ? first - 1 : 0)))
bridge_cores=$(span "$first" "$last")
# A bare number in bridge.toml is a worker count, so a single core id is a list.
if [ "$first" = "$last" ]; then toml="[$first]"; else toml="\"$first-$last\""; fi
echo "  give the bridge cores $bridge_cores: bridge.toml  cores = $toml"
echo "  keep core(s) $housekeeping for the kernel, interrupts and viaduct-control"
echo "  kernel command line (then reboot), to keep other tasks and IRQs off them:"
echo "    isolcpus=$bridge_cores nohz_full=$bridge_cores irqaffinity=$housekeeping"
cmdline=$(cat /proc/cmdline 2>/dev/null || true)
for p in isolcpus nohz_full irqaffinity; do
    v=$(printf '%s\n' "$cmdline" | tr ' ' '\n' | sed -n "s/^$p=//p" | head -1)
    echo "    now: $p=${v:-(not set)}"
done
echo "  with isolcpus, the bridge must still be told its cores (bridge.toml cores);"
echo "  systemd's CPUAffinity= is not needed: each worker pins itself."

echo
echo "== Idle cores (a halted core wakes late: that is added latency)"
idle=/sys/devices/system/cpu/cpuidle
driver=$(cat "$idle/current_driver" 2>/dev/null || echo "?")
governor=$(cat "$idle/current_governor" 2>/dev/null || cat "$idle/current_governor_ro" 2>/dev/null || echo "?")
echo "  cpuidle driver $driver, governor $governor"
if grep -qw hypervisor /proc/cpuinfo 2>/dev/null; then
    echo "  a virtual machine: an idle vCPU halts and the hypervisor may take milliseconds to"
    echo "  run it again (measured here: p99 5.2 ms vs 0.25 ms with the cores kept busy)."
    if [ "$driver" = haltpoll ]; then
        echo "  haltpoll polls before halting: raise guest_halt_poll_ns"
        echo "  (/sys/module/haltpoll/parameters) if p99 stays high"
    else
        echo "  the haltpoll driver (cpuidle_haltpoll; needs the host's KVM poll control) or"
        echo "  idle=poll on the kernel command line keeps the bridge's cores from halting"
    fi
else
    echo "  bare metal: limit deep C-states on the bridge's cores (processor.max_cstate=1 or the BIOS)"
fi

echo
echo "== NIC interrupts (/proc/interrupts; keep them off the bridge's cores)"
if [ -r /proc/interrupts ]; then
    # Lines for network queues: names with eth/ens/enp/eno/mlx/ixgbe/i40e/ice/virtio…input/output.
    nic=$(grep -E 'eth|ens|enp|eno|mlx|ixgbe|i40e|ice-|bnxt|virtio[0-9]+-(input|output)' /proc/interrupts || true)
    if [ -z "$nic" ]; then
        echo "  no NIC queue interrupts recognised"
    else
        printf '%s\n' "$nic" | while read -r line; do
            irq=${line%%:*}
            irq=${irq// /}
            name=$(printf '%s\n' "$line" | awk '{print $NF}')
            aff=$(cat "/proc/irq/$irq/smp_affinity_list" 2>/dev/null || echo "?")
            echo "  irq $irq ($name) on cores $aff"
        done
        echo "  move them, e.g. for each irq: echo $housekeeping > /proc/irq/IRQ/smp_affinity_list"
        echo "  (and stop irqbalance from moving them back: IRQBALANCE_BANNED_CPULIST=$bridge_cores"
        echo "  in /etc/default/irqbalance)"
    fi
else
    echo "  /proc/interrupts unreadable"
fi

echo
echo "== io_uring (for io-backend = \"uring\"; the default, auto, uses recvmmsg/sendmmsg)"
if [ -r /proc/sys/kernel/io_uring_disabled ]; then
    d=$(cat /proc/sys/kernel/io_uring_disabled)
    case "$d" in
        0) echo "  kernel.io_uring_disabled = 0: enabled for all" ;;
        1) echo "  kernel.io_uring_disabled = 1: only for kernel.io_uring_group members and root;"
           echo "  io-backend = \"uring\" will not start unless user viaduct is in that group" ;;
        *) echo "  kernel.io_uring_disabled = $d: disabled; io-backend = \"uring\" will not start" ;;
    esac
else
    echo "  kernel.io_uring_disabled absent (kernel before 6.6): io_uring on if built in"
fi
echo "  kernel $(uname -r)"
seccomp=$(sed -n 's/^Seccomp:[[:space:]]*//p' /proc/self/status 2>/dev/null || true)
case "$seccomp" in
    0) echo "  this shell: no seccomp filter" ;;
    2) echo "  this shell runs under a seccomp filter (a container?): io_uring may be filtered" ;;
    *) echo "  this shell: seccomp mode ${seccomp:-unknown}" ;;
esac
echo "  the systemd unit allows io_uring (SystemCallFilter); the bridge logs its backend"
echo "  at start (\"worker started ... backend=uring|mmsg\") and /metrics has"
echo "  viaduct_io_backend_info{backend=...}"

echo
echo "== locked memory (io_uring rings and receive buffers, about 2.2 MiB per worker)"
memlock=$(ulimit -l)
echo "  RLIMIT_MEMLOCK of this shell: $memlock (KiB)"
echo "  the unit sets LimitMEMLOCK=256M; kernels from 5.12 charge io_uring to the cgroup"
echo "  instead, where this limit does not matter"
if [ "$memlock" != unlimited ] && [ "$memlock" -lt $((workers * 2300)) ] 2>/dev/null; then
    echo "  outside systemd, raise it before running $workers worker(s): ulimit -l $((workers * 4096))"
fi

# --- AF_XDP (io-backend = "xdp") ---------------------------------------------------------
if [ -n "$xdp_iface" ]; then
    echo
    echo "== AF_XDP on $xdp_iface (io-backend = \"xdp\", xdp-iface = \"$xdp_iface\")"
    sys=/sys/class/net/$xdp_iface
    if [ ! -d "$sys" ]; then
        echo "  no interface $xdp_iface here: the bridge would refuse (xdp) or fall back (auto)"
    else
        if grep -q ' xsk_bind$' /proc/kallsyms 2>/dev/null || grep -q ' xsk_create$' /proc/kallsyms 2>/dev/null; then
            echo "  kernel: AF_XDP sockets present (xsk_* in /proc/kallsyms)"
        else
            echo "  kernel: no xsk_* symbols found: AF_XDP (CONFIG_XDP_SOCKETS) is likely missing"
        fi
        echo "  kernel.unprivileged_bpf_disabled = $(cat /proc/sys/kernel/unprivileged_bpf_disabled 2>/dev/null || echo '?')" \
            "(the bridge needs CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW: systemd/viaduct-bridge.service.d/xdp.conf.example)"
        driver=
        if [ -e "$sys/device/driver" ]; then
            driver=$(basename "$(readlink -f "$sys/device/driver")")
        elif command -v ethtool >/dev/null 2>&1; then
            driver=$(ethtool -i "$xdp_iface" 2>/dev/null | sed -n 's/^driver: //p')
        fi
        case "$driver" in
            mlx5_core|ice|i40e|ixgbe|igc|igb|stmmac|gve|idpf)
                echo "  driver $driver: native XDP with zero-copy AF_XDP (the bridge reports io_backend xdp-zc)" ;;
            mlx4_en|ixgbevf|bnxt_en|virtio_net|ena|veth|tun|nfp|qede|sfc|thunder_nicvf|hv_netvsc|enetc|mvneta|mvpp2)
                echo "  driver $driver: native XDP, copy mode (io_backend xdp)" ;;
            '') echo "  driver unknown: generic XDP works on any interface (copy mode, smaller gain)" ;;
            *) echo "  driver $driver: not known to this script; xdp-mode = \"auto\" tries native, then generic" ;;
        esac
        rxq=$(find "$sys/queues" -maxdepth 1 -name 'rx-*' 2>/dev/null | wc -l)
        echo "  receive queues: $rxq; workers planned: $workers (worker i uses queue xdp-queue + i)"
        if [ "$rxq" -lt "$workers" ] 2>/dev/null; then
            echo "  too few queues: ethtool -L $xdp_iface combined $workers (or fewer --workers/cores)"
        fi
        mtu=$(cat "$sys/mtu" 2>/dev/null || echo 0)
        if [ "$mtu" -gt 1778 ] 2>/dev/null; then
            echo "  MTU $mtu: frames above 1792 bytes do not fit a 2 KiB UMEM frame and take the kernel path"
        else
            echo "  MTU $mtu: fits the 2 KiB UMEM frames"
        fi
        if ip -d link show dev "$xdp_iface" 2>/dev/null | grep -q 'prog/xdp'; then
            echo "  an XDP program is attached already: the bridge's attach will fail (EBUSY) until it is removed"
        fi
        if command -v ethtool >/dev/null 2>&1; then
            nt=$(ethtool -k "$xdp_iface" 2>/dev/null | sed -n 's/^ntuple-filters: //p')
            echo "  ntuple-filters: ${nt:-unknown}. Steer each worker's port to its queue, e.g."
        else
            echo "  (ethtool missing: apt-get install ethtool) Steer each worker's port to its queue, e.g."
        fi
        echo "    ethtool -K $xdp_iface ntuple on"
        echo "    ethtool -N $xdp_iface flow-type udp4 dst-ip <bind> dst-port <port-base + i> action <xdp-queue + i>"
        echo "  (unsteered datagrams still arrive: the XDP program passes them to the worker's kernel socket)"
        echo "  locked memory: $workers worker(s) x 8 MiB UMEM (default xdp-frames 4096); the drop-in grants CAP_IPC_LOCK"
    fi
fi
