#!/usr/bin/env bash
# Rate-limit benchmark (not a test): the cost of a flashsale.throttle() call
# against the Redis round trip it cannot avoid, and of throttle_local()
# against a statement that does nothing.  64 clients, pgbench -M prepared,
# one statement per transaction, contenders interleaved within each round
# (the order rotates), the median of the rounds printed with every run:
#   throttle        SELECT allowed FROM flashsale.throttle('bench', 1000000000, 1000000, '1 s')
#                   (one EVALSHA; the limit never bites)
#   ping            SELECT flashsale.redis_call('PING'): one plain round trip
#   incr            SELECT flashsale.redis_call('INCR', 'benchincr'): a round
#                   trip that writes
#   local           SELECT allowed FROM flashsale.throttle_local('bench', ...)
#   select1         SELECT 1
#   throttle-10k    throttle() on a key chosen at random among 10,000
#   local-10k       throttle_local() likewise (flashsale.max_throttle_keys =
#                   20000 here, so that no eviction is measured)
# Targets (medians): throttle >= 0.9 x ping, throttle_local >= 0.8 x SELECT 1.
# Twice: with every process sharing every CPU (placement 1), then with Redis
# alone on a CPU (placement 2, taskset; the Redis contenders only).  In each,
# where Redis' time went during a run of ping and of throttle: on a CPU, or
# waiting for one (/proc/PID/schedstat).
# Then the Redis commands per call (INFO commandstats over a timed run of
# throttle and of throttle-10k; commands a script runs are counted too, so
# they are listed by name).
# Usage: test/bench/throttle_bench.sh [seconds per run, default 5] [rounds, default 5]
# (pgbench scripts: ':name' is a variable, so no colons in the keys)
source "$(dirname "$0")/../../scripts/lib.sh"

SECS=${1:-5}
ROUNDS=${2:-5}
CLIENTS=64
fs_stack_start "flashsale.max_throttle_keys = 20000"

LIMIT="1000000000, 1000000, '1 s'"
script() { # name lines...
    local name=$1
    shift
    printf '%s\n' "$@" > "$dir/$name.sql"
}
script throttle     "SELECT allowed FROM flashsale.throttle('bench', $LIMIT);"
script ping         "SELECT flashsale.redis_call('PING');"
script incr         "SELECT flashsale.redis_call('INCR', 'benchincr');"
script local        "SELECT allowed FROM flashsale.throttle_local('bench', $LIMIT);"
script select1      "SELECT 1;"
script throttle-10k '\set k random(1, 10000)' "SELECT allowed FROM flashsale.throttle('bench' || :k, $LIMIT);"
script local-10k    '\set k random(1, 10000)' "SELECT allowed FROM flashsale.throttle_local('bench' || :k, $LIMIT);"
chmod 644 "$dir"/*.sql
CONTENDERS=(throttle ping incr local select1 throttle-10k local-10k)

# every script once, so that a failing one shows its error before we time it
for name in "${CONTENDERS[@]}"; do
    if ! out=$(fs_as_pg pgbench -n -M prepared -h 127.0.0.1 -p "$port" -U postgres -c 1 -t 10 \
            -f "$dir/$name.sql" postgres 2>&1); then
        echo "$name does not run:" >&2
        echo "$out" >&2
        exit 1
    fi
done

declare -A runs med
fs_bench_rounds

ratio() { # label numerator denominator [target]
    # the ratio of the medians, and the median of the rounds' own ratios (the
    # runs of a round are less than a round apart: slow drift cancels); the
    # target is judged on the latter
    local per
    per=$(paste <(tr ' ' '\n' <<< "${runs[$2]% }") <(tr ' ' '\n' <<< "${runs[$3]% }") |
        awk '$2 > 0 { printf "%.4f\n", $1 / $2 }' | fs_median)
    awk -v l="$1" -v a="${med[$2]}" -v b="${med[$3]}" -v p="${per:-0}" -v t="${4:-}" 'BEGIN {
        if (b == 0) { printf " %-24s n/a\n", l; exit }
        printf " %-24s %.2fx of medians, %.2fx median of rounds", l, a / b, p
        if (t != "") printf "  (target >= %.1fx: %s)", t, (p >= t ? "met" : "NOT MET")
        printf "\n" }'
}
ratios() {
    echo "== ratios"
    ratio "throttle / ping"         throttle ping 0.9
    ratio "throttle / incr"         throttle incr
    ratio "throttle-10k / ping"     throttle-10k ping 0.9
    ratio "throttle-10k / throttle" throttle-10k throttle
    [ -n "${med[local]:-}" ] || return 0
    ratio "local / select1"         local select1 0.8
    ratio "local-10k / select1"     local-10k select1 0.8
    ratio "local / throttle"        local throttle
}

# Where Redis' time went during one run of each of these: on a CPU, or
# runnable and waiting for one (/proc/PID/schedstat), as a share of the run.
redis_time() {
    local name a b tps
    for name in ping throttle; do
        read -r -a a < "/proc/$rpid/schedstat"
        tps=$(fs_tps "$port" "$CLIENTS" "$SECS" "$dir/$name.sql")
        read -r -a b < "/proc/$rpid/schedstat"
        awk -v n="$name" -v t="$tps" -v r=$(( b[0] - a[0] )) -v w=$(( b[1] - a[1] )) -v s="$SECS" 'BEGIN {
            printf " %-9s %6d tps: Redis on a CPU %4.1f %% of the run (%4.1f us a call), waiting for one %4.1f %%\n",
                n, t, r / s / 1e7, r / 1e3 / (t * s), w / s / 1e7 }'
    done
}
rpid=$(cat "$dir/redis/redis.pid")

echo "== placement 1: Redis, PostgreSQL and pgbench share every CPU"
ratios
redis_time

# The same with Redis on a CPU of its own, as on a host of its own: there a
# call's cost is what it adds to PostgreSQL's work and to its latency, not
# what it takes from a Redis that shares two cores with 64 busy backends.
if fs_bench_place_redis "$dir/redis/redis.pid" "$dir/data"; then
    echo "== placement 2: Redis alone on CPU $(( $(nproc) - 1 )), PostgreSQL and pgbench on CPUs $FS_BENCH_CPUS"
    CONTENDERS=(throttle ping incr throttle-10k)
    runs=()
    med=()
    fs_bench_rounds
    ratios
    redis_time
    fs_bench_place_redis "$dir/redis/redis.pid" "$dir/data" off
else
    echo "== placement 2 skipped: fewer than 2 CPUs or no taskset"
fi

echo "== Redis commands per call (INFO commandstats, $CLIENTS clients, ${SECS}s)"
for name in throttle throttle-10k ping; do
    fs_redis "$rport" CONFIG RESETSTAT >/dev/null
    calls=$(fs_as_pg pgbench -n -M prepared -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j 2 -T "$SECS" \
        -f "$dir/$name.sql" postgres 2>/dev/null |
        sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
    # cmdstat_evalsha:calls=123,usec=...  (the INFO call itself is not yet counted)
    fs_redis "$rport" INFO commandstats | tr -d '\r' | grep '^cmdstat_' |
        sed 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/\1 \2/' |
        awk -v n="$name" -v c="$calls" '
            { by[$1] = $2; total += $2 }
            END {
                printf " %-13s %d calls, %d commands: %.3f per call  (", n, c, total, total / c
                sep = ""
                for (k in by) { printf "%s%s %.3f", sep, k, by[k] / c; sep = ", " }
                printf ")\n" }'
done
echo "   (throttle's EVALSHA runs TIME, GET and SET inside Redis: those three are not round trips)"
