# scripts/lib.sh: shared by the demo, the test runner, stress tests and benchmarks.
# Source it; it sets FS_ROOT and defines:
#   fs_install_deps   apt-get what is missing (Debian 12, as root)
#   fs_build          build and install the extension (warnings are errors: COPT=-Werror)
#   fs_as_pg CMD...   run CMD as the unprivileged "postgres" user when we are root
#   fs_tmpdir         a temp dir the postgres user can write; removed at exit
#   fs_free_port      a free loopback TCP port
#   fs_pg_start DIR PORT [conf lines...]   throwaway cluster: initdb, loopback only, preload set
#   fs_pg_stop DIR    stop it by the pid in its postmaster.pid
#   fs_psql PORT SQL  psql -X -At against a throwaway cluster
#   fs_redis_start DIR PORT   a throwaway redis-server on 127.0.0.1:PORT (no persistence)
#   fs_redis_stop DIR         stop it by the pid in DIR/redis.pid
#   fs_redis PORT ARGS...     redis-cli against it
#   fs_tps PORT CLIENTS SECONDS SCRIPT   pgbench (prepared, -j 2) for SECONDS: prints tps
#                     (on CPUs $FS_BENCH_CPUS when set)
#   fs_bench_rounds   interleaved rounds of benchmark contenders, medians
#   fs_bench_place_redis REDIS_PID_FILE DATADIR [off]   Redis on a CPU of its own (benchmarks)
#   fs_stack_start [conf lines...]  a Redis and a PostgreSQL pointed at it, flashsale created:
#                     sets dir, port (PostgreSQL) and rport (Redis)
#   fs_check NAME ACTUAL EXPECTED   prints ok:/FAIL:, a FAIL sets fail=1
#   fs_now_ms         the wall clock in milliseconds
#   fs_top PGOPTIONS SQL   SQL in a new backend against $port, at top level: sets OUT
#                     (output and errors, verbose), STATE (SQLSTATE or "ok"), DETAIL, MS
# Everything started through these is stopped by fs_cleanup (an EXIT trap).

set -euo pipefail

FS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Commands run as the postgres user, who may not be able to enter the
# checkout (a clone under /root): work from / and use absolute paths.
cd /
# The PostgreSQL of this Debian release (FS_PG_MAJOR overrides): 12 has 15,
# 13 has 17, unstable 18.
fs_debian_pg_major() {
    local id=""
    [ -r /etc/os-release ] && id=$(. /etc/os-release && echo "${VERSION_ID:-}")
    case "$id" in
        12) echo 15 ;;
        13) echo 17 ;;
        *) echo 18 ;;
    esac
}
PG_MAJOR=${FS_PG_MAJOR:-$(fs_debian_pg_major)}
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PGXS_DIR=/usr/lib/postgresql/$PG_MAJOR/lib/pgxs
# The server the suites run against: Redis, or Valkey (FS_REDIS_FLAVOR=valkey,
# Debian 13 and later), which the scripts and tests then call by Redis' names
# (redis-server, redis-cli: links in /usr/local/bin made by fs_install_deps).
FS_REDIS_FLAVOR=${FS_REDIS_FLAVOR:-redis}
case "$FS_REDIS_FLAVOR" in
    valkey) FS_REDIS_PACKAGES="valkey-server valkey-tools" ;;
    *) FS_REDIS_PACKAGES=redis-server ;;
esac
FS_PACKAGES="make gcc libc6-dev postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libhiredis-dev $FS_REDIS_PACKAGES libipc-run-perl openssl"

FS_CLUSTERS=()
# every temp dir of this script lives below one root, removed at exit
FS_TMP_ROOT=$(mktemp -d /tmp/flashsale.XXXXXX)
chmod 755 "$FS_TMP_ROOT"

fs_log() { printf '== %s\n' "$*" >&2; }

fs_install_deps() {
    local missing=()
    for p in $FS_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        fs_log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # the Debian package may start a "main" cluster and a redis service; we use our own
    # servers on our own ports and leave those alone.
    if [ "$FS_REDIS_FLAVOR" = valkey ]; then
        local tool
        for tool in server cli benchmark; do
            if ! command -v "redis-$tool" >/dev/null; then
                ln -sf "/usr/bin/valkey-$tool" "/usr/local/bin/redis-$tool"
            fi
        done
    fi
}

fs_build() {
    fs_log "building flashsale"
    make -C "$FS_ROOT" -s clean >/dev/null
    # the Makefile asks for -Wall -Wextra; -Werror is ours, not the users'
    make -C "$FS_ROOT" -s PG_CONFIG="$PG_BIN/pg_config" COPT=-Werror 2>&1 | { grep -E 'warning|error' && exit 1 || true; }
    make -C "$FS_ROOT" -s PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
}

fs_as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- env PATH="$PG_BIN:$PATH" "$@"
    else
        env PATH="$PG_BIN:$PATH" "$@"
    fi
}

# Run a command that leaves a daemon behind without the caller's open files
# beyond stdin, stdout and stderr: a daemon that outlives a killed run must
# not keep, say, a lock file the caller held with flock.
fs_no_inherit() {
    (
        local fd
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
        done
        "$@"
    )
}

fs_tmpdir() {
    local d
    d=$(mktemp -d "$FS_TMP_ROOT/XXXXXX")
    chmod 755 "$d"
    [ "$(id -u)" = 0 ] && chown postgres: "$d"
    echo "$d"
}

fs_free_port() {
    local p
    while :; do
        # below the kernel's ephemeral range (32768-60999), so no client's
        # outgoing connection holds it
        p=$(( 10000 + RANDOM % 22000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}

fs_pg_start() {
    local dir=$1 port=$2
    shift 2
    fs_as_pg initdb -D "$dir" -U postgres -A trust --no-sync >/dev/null
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$dir'"
        echo "shared_preload_libraries = 'flashsale'"
        echo "max_connections = 200"
        echo "shared_buffers = 512MB"
        echo "max_locks_per_transaction = 128"
        echo "log_min_messages = warning"
        for line in "$@"; do echo "$line"; done
    } | fs_as_pg tee -a "$dir/postgresql.conf" >/dev/null
    FS_CLUSTERS+=("$dir")
    fs_no_inherit fs_as_pg pg_ctl -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null
}

fs_pg_stop() {
    local dir=$1 pid
    [ -f "$dir/postmaster.pid" ] || return 0
    pid=$(head -1 "$dir/postmaster.pid")
    kill -INT "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -QUIT "$pid" 2>/dev/null || true
}

fs_psql() {
    local port=$1
    shift
    fs_as_pg psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$*"
}

FS_REDISES=()

fs_redis_start() {
    local dir=$1 port=$2
    mkdir -p "$dir"
    fs_no_inherit redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --dir "$dir" \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        --save '' --appendonly no >/dev/null
    FS_REDISES+=("$dir")
    for _ in $(seq 1 100); do
        redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    echo "redis-server did not start on port $port" >&2
    return 1
}

fs_redis_stop() {
    local dir=$1 pid
    [ -f "$dir/redis.pid" ] || return 0
    pid=$(cat "$dir/redis.pid")
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        # gone, or a zombie waiting for init to reap it
        if ! kill -0 "$pid" 2>/dev/null || [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
            rm -f "$dir/redis.pid"
            return 0
        fi
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/redis.pid"
}

fs_redis() {
    local port=$1
    shift
    redis-cli -h 127.0.0.1 -p "$port" "$@"
}

fs_tps() {
    fs_as_pg ${FS_BENCH_CPUS:+taskset -c "$FS_BENCH_CPUS"} pgbench -n -M prepared -h 127.0.0.1 -p "$1" -U postgres -c "$2" -j 2 -T "$3" \
        -f "$4" postgres 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}'
}

fs_stack_start() {
    dir=$(fs_tmpdir)
    port=$(fs_free_port)
    rport=$(fs_free_port)
    fs_redis_start "$dir/redis" "$rport"
    fs_pg_start "$dir/data" "$port" "flashsale.redis_port = $rport" "$@"
    fs_psql "$port" "CREATE EXTENSION flashsale" >/dev/null
}

fail=0
fs_check() {
    if [ "$2" = "$3" ]; then
        echo "ok: $1 = $2"
    else
        echo "FAIL: $1 = $2, expected $3"
        fail=1
    fi
}

fs_cleanup() {
    local d
    for d in "${FS_CLUSTERS[@]}"; do fs_pg_stop "$d"; done
    for d in "${FS_REDISES[@]}"; do fs_redis_stop "$d"; done
    if [ -z "${FS_KEEP_TMP:-}" ]; then
        rm -rf "$FS_TMP_ROOT"
    fi
}
trap fs_cleanup EXIT

fs_now_ms() { echo $(( ${EPOCHREALTIME/./} / 1000 )); }

# Benchmarks: ROUNDS rounds of every contender of CONTENDERS (CLIENTS clients,
# SECS seconds each, pgbench on $port), the order rotating from round to round;
# prints each round's tps and each contender's median, and fills the caller's
# associative arrays runs (the tps of every run) and med (the medians).  The
# caller may define bench_prepare NAME (run before each run) and bench_script
# NAME (the pgbench script's path; default "$dir/NAME.sql").
fs_bench_rounds() {
    local r k n=${#CONTENDERS[@]} name line t script
    echo "== $CLIENTS clients: tps per run and median of $ROUNDS rounds x ${SECS}s, contenders interleaved"
    for ((r = 0; r < ROUNDS; r++)); do
        line="round $((r + 1)):"
        for ((k = 0; k < n; k++)); do
            name=${CONTENDERS[$(( (k + r) % n ))]}
            ! declare -F bench_prepare >/dev/null || bench_prepare "$name"
            script="$dir/$name.sql"
            ! declare -F bench_script >/dev/null || script=$(bench_script "$name")
            t=$(fs_tps "$port" "$CLIENTS" "$SECS" "$script")
            runs[$name]+="$t "
            line+=" $name $t,"
        done
        echo "${line%,}"
    done
    for name in "${CONTENDERS[@]}"; do
        med[$name]=$(tr ' ' '\n' <<< "${runs[$name]}" | grep . | fs_median)
        printf ' %-13s median %7d tps  (runs: %s)\n' "$name" "${med[$name]}" "${runs[$name]% }"
    done
}

# Benchmarks: give Redis (pid file $1) the last CPU and PostgreSQL (data
# directory $2: the postmaster, every process it has, every backend it will
# fork) and fs_tps' pgbench the others, as when Redis runs on a host of its
# own; "off" undoes it.  False when there are fewer than 2 CPUs or no taskset.
fs_bench_place_redis() { # redis.pid datadir [off]
    local n pm p redis_cpus pg_cpus
    n=$(nproc)
    [ "$n" -ge 2 ] && command -v taskset >/dev/null || return 1
    pm=$(head -1 "$2/postmaster.pid")
    if [ "${3:-}" = off ]; then
        redis_cpus="0-$((n - 1))"
        pg_cpus=$redis_cpus
        unset FS_BENCH_CPUS
    else
        redis_cpus=$((n - 1))
        pg_cpus=0
        [ "$n" -eq 2 ] || pg_cpus="0-$((n - 2))"
        FS_BENCH_CPUS=$pg_cpus
    fi
    taskset -p -c "$redis_cpus" "$(cat "$1")" >/dev/null
    for p in "$pm" $(pgrep -P "$pm"); do taskset -p -c "$pg_cpus" "$p" >/dev/null 2>&1 || true; done
}

# the median of the numbers on stdin, one a line (benchmarks): of an even count, the
# mean of the middle two (an integer when the numbers are)
fs_median() {
    sort -g | awk '{ a[NR] = $1 } END {
        if (NR % 2) { print a[(NR + 1) / 2]; exit }
        m = (a[NR / 2] + a[NR / 2 + 1]) / 2
        print (a[NR / 2] ~ /^-?[0-9]+$/) ? int(m) : m }'
}

# SQL in a new backend (against $port), at top level: its failure aborts the
# transaction.  Sets OUT (psql's output and errors, verbose), STATE (the
# SQLSTATE, or "ok"), DETAIL (the first one) and MS (wall clock).
fs_top() { # pgoptions sql
    local t0
    t0=$(fs_now_ms)
    OUT=$(fs_as_pg env PGOPTIONS="$1" psql -X -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose \
        -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$2" 2>&1) || true
    MS=$(( $(fs_now_ms) - t0 ))
    STATE=$(sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): .*/\1/p' <<< "$OUT" | head -1)
    DETAIL=$(sed -n 's/^DETAIL:  //p' <<< "$OUT" | head -1)
    [ -n "$STATE" ] || STATE=ok
}
