#!/usr/bin/env bash
# Installs Viaduct on this host (or into a staging root with --destdir): the two
# binaries, the systemd units, default configs in /etc/viaduct (never overwriting an
# existing one), /etc/viaduct/control.env with a random focus secret (if absent), the
# `viaduct` system user, then `systemctl daemon-reload`. Safe to run again (upgrade).
#
#   scripts/install.sh [--no-build] [--prefix DIR] [--destdir DIR] [--bin-dir DIR]
#
#   --no-build      use binaries already built (default: cargo build --release --locked)
#   --bin-dir DIR   where the built binaries are (default: <cargo target dir>/release)
#   --prefix DIR    install prefix for the binaries and docs (default: /usr/local)
#   --destdir DIR   install under DIR as if it were /: creates no user, runs no
#                   systemctl, changes no ownership (for packaging and tests)
set -euo pipefail

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }

repo=$(cd "$(dirname "$0")/.." && pwd)
build=1
prefix=/usr/local
destdir=
bin_dir=
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --prefix) prefix=${2:?--prefix needs a directory}; shift ;;
        --prefix=*) prefix=${1#*=} ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift ;;
        --destdir=*) destdir=${1#*=} ;;
        --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift ;;
        --bin-dir=*) bin_dir=${1#*=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
case "$prefix" in /*) ;; *) echo "install.sh: --prefix must be absolute" >&2; exit 2 ;; esac
if [ -n "$destdir" ]; then
    mkdir -p "$destdir"
    destdir=$(cd "$destdir" && pwd)
fi
if [ -z "$destdir" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: installing on the host needs root (or use --destdir DIR)" >&2
    exit 1
fi

if [ -z "$bin_dir" ]; then
    bin_dir=${CARGO_TARGET_DIR:-$repo/target}/release
fi
if [ "$build" = 1 ]; then
    echo "building release binaries"
    (cd "$repo" && cargo build --release --locked -p viaduct-bridge -p viaduct-control)
fi
for b in viaduct-bridge viaduct-control; do
    if [ ! -x "$bin_dir/$b" ]; then
        echo "install.sh: $bin_dir/$b not found (build it, or drop --no-build)" >&2
        exit 1
    fi
done

root=$destdir
bindir=$root$prefix/bin
docdir=$root$prefix/share/doc/viaduct
unitdir=$root/etc/systemd/system
confdir=$root/etc/viaduct
sysusersdir=$root/usr/lib/sysusers.d

say() { echo "  $*"; }

# The user and group: a sysusers.d entry always (systemd-sysusers reads it, also for a
# staged root), and the account itself on the host.
install -d -m 0755 "$sysusersdir"
cat >"$sysusersdir/viaduct.conf" <<'EOF'
# Viaduct's system user (scripts/install.sh); both services run as it.
u viaduct - "Viaduct media bridge" /var/lib/viaduct /usr/sbin/nologin
EOF
chmod 0644 "$sysusersdir/viaduct.conf"
say "sysusers entry $sysusersdir/viaduct.conf"
if [ -z "$destdir" ]; then
    if getent passwd viaduct >/dev/null; then
        say "user viaduct exists"
    elif command -v systemd-sysusers >/dev/null 2>&1; then
        systemd-sysusers "$sysusersdir/viaduct.conf"
        say "created user viaduct (systemd-sysusers)"
    else
        useradd --system --user-group --home-dir /var/lib/viaduct --no-create-home \
            --shell /usr/sbin/nologin --comment "Viaduct media bridge" viaduct
        say "created user viaduct (useradd)"
    fi
else
    say "under --destdir: user viaduct not created (systemd-sysusers --root=$destdir would)"
fi

# Binaries: copied to a temporary name then renamed, so a running process keeps its
# old file and an interrupted install leaves no half-written binary.
install -d -m 0755 "$bindir"
for b in viaduct-bridge viaduct-control; do
    install -m 0755 "$bin_dir/$b" "$bindir/.$b.new"
    mv -f "$bindir/.$b.new" "$bindir/$b"
    say "$bindir/$b"
done

install -d -m 0755 "$docdir"
install -m 0644 "$repo/docs/operations.md" "$docdir/operations.md"
say "$docdir/operations.md"

# Units: ours, so replaced on every install; ExecStart follows --prefix.
install -d -m 0755 "$unitdir"
for u in viaduct-bridge.service viaduct-control.service; do
    sed "s#/usr/local/bin/#$prefix/bin/#g" "$repo/systemd/$u" >"$unitdir/.$u.new"
    chmod 0644 "$unitdir/.$u.new"
    mv -f "$unitdir/.$u.new" "$unitdir/$u"
    say "$unitdir/$u"
done

# Configs: the operator's, so never overwritten.
install -d -m 0750 "$confdir"
set_group() {
    if [ -z "$destdir" ]; then
        chgrp viaduct "$@"
    fi
}
set_group "$confdir"
for c in bridge.toml control.toml; do
    if [ -e "$confdir/$c" ]; then
        say "$confdir/$c exists: kept (defaults: $repo/deploy/config/$c)"
    else
        install -m 0640 "$repo/deploy/config/$c" "$confdir/$c"
        set_group "$confdir/$c"
        say "$confdir/$c (defaults, all commented)"
    fi
done
if [ -e "$confdir/control.env" ]; then
    say "$confdir/control.env exists: kept"
else
    secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    if [ ${#secret} -ne 64 ]; then
        echo "install.sh: could not read 32 random bytes" >&2
        exit 1
    fi
    (
        umask 077
        cat >"$confdir/.control.env.new" <<EOF
# Environment of viaduct-control (the unit's EnvironmentFile). Mode 0640 root:viaduct.
# The bearer secret the focus presents; comma-separate two while rotating.
VIADUCT_FOCUS_SECRET=$secret
# Log filter (RUST_LOG, if set, wins): e.g. info, or viaduct_control=debug.
#VIADUCT_LOG=info
EOF
    )
    chmod 0640 "$confdir/.control.env.new"
    set_group "$confdir/.control.env.new"
    mv "$confdir/.control.env.new" "$confdir/control.env"
    say "$confdir/control.env (new random focus secret)"
fi

if [ -n "$destdir" ]; then
    say "under --destdir: ownership root:viaduct of $confdir not set; systemctl not run"
elif command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "systemctl daemon-reload"
else
    say "systemd is not running here: skipped systemctl daemon-reload"
fi

cat <<EOF
installed. Next: edit $confdir/bridge.toml (bind, advertise, cores) and
$confdir/control.toml, open UDP ports in the firewall, then
  systemctl enable --now viaduct-bridge viaduct-control
(see $prefix/share/doc/viaduct/operations.md)
EOF
