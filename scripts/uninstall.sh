#!/usr/bin/env bash
# Removes what scripts/install.sh installed: stops and disables the services, removes
# the binaries, units, docs and sysusers entry, and reloads systemd. Configs
# (/etc/viaduct) and state (/var/lib/viaduct) are kept unless --purge, which also
# removes the viaduct user.
#
#   scripts/uninstall.sh [--purge] [--prefix DIR] [--destdir DIR]
#
#   --prefix DIR    the prefix given to install.sh (default: /usr/local)
#   --destdir DIR   the staging root given to install.sh (no systemctl, no userdel)
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

purge=0
prefix=/usr/local
destdir=
while [ $# -gt 0 ]; do
    case "$1" in
        --purge) purge=1 ;;
        --prefix) prefix=${2:?--prefix needs a directory}; shift ;;
        --prefix=*) prefix=${1#*=} ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift ;;
        --destdir=*) destdir=${1#*=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "uninstall.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$destdir" ] && [ "$(id -u)" != 0 ]; then
    echo "uninstall.sh: needs root (or use --destdir DIR)" >&2
    exit 1
fi
root=$destdir
systemd_up=0
if [ -z "$destdir" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemd_up=1
fi

say() { echo "  $*"; }

if [ "$systemd_up" = 1 ]; then
    # Control first (it drains: this waits for calls to end, up to its TimeoutStopSec).
    systemctl disable --now viaduct-control.service 2>/dev/null || true
    systemctl disable --now viaduct-bridge.service 2>/dev/null || true
    say "stopped and disabled viaduct-control, viaduct-bridge"
fi
for f in \
    "$root$prefix/bin/viaduct-bridge" \
    "$root$prefix/bin/viaduct-control" \
    "$root/etc/systemd/system/viaduct-bridge.service" \
    "$root/etc/systemd/system/viaduct-control.service" \
    "$root$prefix/share/doc/viaduct/operations.md" \
    "$root/usr/lib/sysusers.d/viaduct.conf"; do
    if [ -e "$f" ]; then
        rm -f "$f"
        say "removed $f"
    fi
done
rmdir "$root$prefix/share/doc/viaduct" 2>/dev/null || true
if [ "$systemd_up" = 1 ]; then
    systemctl daemon-reload
    say "systemctl daemon-reload"
fi

if [ "$purge" = 1 ]; then
    for d in "$root/etc/viaduct" "$root/var/lib/viaduct"; do
        if [ -e "$d" ]; then
            rm -rf "$d"
            say "purged $d"
        fi
    done
    if [ -z "$destdir" ] && getent passwd viaduct >/dev/null; then
        userdel viaduct
        say "removed user viaduct"
    fi
else
    say "kept $root/etc/viaduct and $root/var/lib/viaduct (--purge removes them)"
fi
