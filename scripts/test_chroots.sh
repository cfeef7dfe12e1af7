#!/usr/bin/env bash
# Runs the README's test command (scripts/test.sh) in chroots of the other
# Debian releases flashsale supports, as root:
#   trixie   Debian 13, PostgreSQL 17, hiredis 1.2, Redis 8
#   sid      Debian unstable, PostgreSQL 18
#   trixie-valkey   Debian 13 with Valkey 8 instead of Redis (a chroot of its
#            own: FS_REDIS_FLAVOR=valkey in scripts/lib.sh)
# Each chroot is made with debootstrap from the Debian mirror this machine's
# apt already uses (read from its sources; no host name is written here),
# once, under $FS_CHROOT_DIR (default /srv/flashsale-chroots), and reused.
# /proc, /sys, /dev, /dev/pts and /dev/shm are bind-mounted while a suite
# runs and unmounted on exit.  The mirror is a snapshot: unstable's Release
# file may have expired, so apt there does not check Valid-Until.
# Prints one summary line per platform and "N passed, N failed".
#   scripts/test_chroots.sh [RELEASE...] [-- SUITE...]
set -euo pipefail

FS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${FS_CHROOT_DIR:-/srv/flashsale-chroots}
RELEASES=()
SUITES=()
while [ $# -gt 0 ]; do
    if [ "$1" = -- ]; then shift; SUITES=("$@"); break; fi
    RELEASES+=("$1")
    shift
done
[ ${#RELEASES[@]} -gt 0 ] || RELEASES=(trixie sid)

log() { printf '== %s\n' "$*" >&2; }

# the first Debian mirror of the apt sources (deb822 or one-line style)
mirror() {
    local m
    m=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /debian\/?$/) { print $i; exit } }' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
    [ -n "$m" ] || m=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ { print $2; exit }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1)
    [ -n "$m" ] || { echo "no Debian mirror found in the apt sources" >&2; return 1; }
    echo "$m"
}

MOUNTED=()
unmount_all() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" 2>/dev/null || true
    done
    MOUNTED=()
}
trap unmount_all EXIT

mount_into() { # root
    local m
    for m in proc sys dev dev/pts dev/shm; do
        mkdir -p "$1/$m"
        if ! mountpoint -q "$1/$m"; then
            mount --bind "/$m" "$1/$m"
            MOUNTED+=("$1/$m")
        fi
    done
}

make_chroot() { # release root
    local release=$1 root=$2
    # made to the end once (an interrupted debootstrap leaves no mark: redone)
    [ -f "$root/.flashsale-chroot" ] && return 0
    if [ -e "$root" ]; then
        # never remove a tree with something of the host mounted inside
        if awk -v r="$root/" 'index($2 "/", r) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
            echo "$root has mounts inside; not remaking it" >&2
            return 1
        fi
        log "remaking $root (incomplete)"
        rm -rf --one-file-system "$root"
    fi
    command -v debootstrap >/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    log "debootstrap $release into $root"
    mkdir -p "$root"
    debootstrap --variant=minbase --include=ca-certificates "$release" "$root" "$(mirror)" >/dev/null
    echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99flashsale-snapshot"
    touch "$root/.flashsale-chroot"
}

passed=0
failed=0
summary=()
for release in "${RELEASES[@]}"; do
    root="$BASE/$release"
    suite=${release%%-*}                   # trixie-valkey: Debian trixie ...
    flavor=redis
    [ "$suite" = "$release" ] || flavor=${release#*-}   # ... with Valkey
    t0=$SECONDS
    if ! make_chroot "$suite" "$root"; then
        summary+=("$release: could not be bootstrapped")
        failed=$((failed + 1))
        continue
    fi
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    mount_into "$root"
    rm -rf "$root/flashsale" && mkdir -p "$root/flashsale"
    (cd "$FS_ROOT" && git ls-files -co --exclude-standard | tar -cf - -T -) | tar -x -C "$root/flashsale"
    log "$release: scripts/test.sh ${SUITES[*]:-(all suites)}"
    out="$BASE/$release.log"
    if chroot "$root" env FS_REDIS_FLAVOR="$flavor" \
        bash -c 'cd /flashsale && bash scripts/test.sh "$@"' _ "${SUITES[@]}" > "$out" 2>&1; then
        rc=0
    else
        rc=$?
    fi
    unmount_all
    # "suites: N passed, N failed (PostgreSQL x.y, system, server)"
    line=$(grep -E '^suites: [0-9]+ passed, [0-9]+ failed' "$out" | tail -1 || true)
    if [ "$rc" = 0 ]; then
        passed=$((passed + 1))
        summary+=("$release: ${line:-ok} in $((SECONDS - t0)) s")
    else
        failed=$((failed + 1))
        summary+=("$release: FAILED (${line:-exit $rc}) in $((SECONDS - t0)) s; log: $out")
        tail -n 40 "$out" >&2
    fi
done

echo
printf '%s\n' "${summary[@]}"
echo "platforms: $passed passed, $failed failed"
[ "$failed" = 0 ]
