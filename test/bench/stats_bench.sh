#!/usr/bin/env bash
# What the statistics cost (issue 15, target <= 3 %): the hot paths with
# flashsale.track_stats on and off, in one run on one cluster, 64 clients,
# pgbench -M prepared, contenders interleaved within each round (the order
# rotates), medians of the rounds:
#   sale      try_decrement_stock of one hot product (allotments in shared memory)
#   coupon    try_issue_coupon of a coupon with more units than attempts, random members
#   local     throttle_local() on one key
#   throttle  throttle() on one key (a Redis round trip)
# each as NAME-on and NAME-off (track_stats set with ALTER SYSTEM and a reload
# between runs; every run opens new connections).  64 clients on 2 cores vary
# by 10-20 % from run to run, more than the cost looked for, so the cost is
# also measured where it is not drowned: one session calling each path N times
# in one statement, on and off alternating (SET per statement, which goes
# first changing every round), microseconds per call, medians of 7.
# Usage: test/bench/stats_bench.sh [seconds per run, default 4] [rounds, default 5]
source "$(dirname "$0")/../../scripts/lib.sh"

SECS=${1:-4}
ROUNDS=${2:-5}
CLIENTS=64
fs_stack_start
coupon=$(fs_psql "$port" "SELECT flashsale.set_stock(1, 1000000000);
                          SELECT flashsale.create_coupon('bench', 100000000, 1000000)" | tail -1)
LIMIT="1000000000, 1000000, '1 s'"
script() { local name=$1; shift; printf '%s\n' "$@" > "$dir/$name.sql"; }
script sale     "SELECT flashsale.try_decrement_stock(1);"
script coupon   '\set m random(1, 100000000)' "SELECT flashsale.try_issue_coupon(:m, $coupon);"
script local    "SELECT allowed FROM flashsale.throttle_local('bench', $LIMIT);"
script throttle "SELECT allowed FROM flashsale.throttle('bench', $LIMIT);"
chmod 644 "$dir"/*.sql
PATHS=(sale coupon local throttle)
CONTENDERS=()
for p in "${PATHS[@]}"; do CONTENDERS+=("$p-on" "$p-off"); done

stats() { # on|off
    fs_psql "$port" "ALTER SYSTEM SET flashsale.track_stats = $1" >/dev/null
    fs_psql "$port" "SELECT pg_reload_conf()" >/dev/null
    sleep 0.2
}

declare -A runs med
bench_prepare() { stats "${1##*-}"; }
bench_script() { echo "$dir/${1%-*}.sql"; }
fs_bench_rounds
stats on
echo "== cost of the statistics: 1 - on/off (medians; target <= 3 %)"
for p in "${PATHS[@]}"; do
    awk -v p="$p" -v a="${med[$p-on]}" -v b="${med[$p-off]}" 'BEGIN {
        c = (1 - a / b) * 100
        printf " %-9s on %7d, off %7d tps: %+.1f %%  (%s)\n", p, a, b, c, (c <= 3 ? "met" : "NOT MET") }'
done
echo "== one session, microseconds per call (median of 7, on and off alternating)"
fs_psql "$port" "SELECT flashsale.set_stock(2, 1000000000)" >/dev/null
coupon2=$(fs_psql "$port" "SELECT flashsale.create_coupon('bench2', 100000000, 1000000)")
per_call() { # on|off n sql-with-g (g: 1..n, plus an offset per run)
    fs_psql "$port" "SET flashsale.track_stats = $1;
        SELECT round(extract(epoch FROM clock_timestamp() - t0) * 1e6 / $2, 2)
          FROM (SELECT clock_timestamp() AS t0) s,
               LATERAL (SELECT count($3) FROM generate_series(1, $2) g) c" | tail -1
}
declare -A one
off=0
for ((r = 0; r < 7; r++)); do
    # on first in even rounds, off first in odd ones: the tables grow, the order must not matter
    states="on off"
    [ $((r % 2)) = 0 ] || states="off on"
    for state in $states; do
        off=$((off + 5000))
        one[sale-$state]+="$(per_call $state 20000 "flashsale.try_decrement_stock(2)") "
        one[coupon-$state]+="$(per_call $state 2000 "flashsale.try_issue_coupon(g + $off, $coupon2)") "
        # (a subquery that names g runs once a row)
        one[local-$state]+="$(per_call $state 50000 \
            "(SELECT allowed FROM flashsale.throttle_local('one' || g * 0, $LIMIT))") "
        one[throttle-$state]+="$(per_call $state 5000 \
            "(SELECT allowed FROM flashsale.throttle('one' || g * 0, $LIMIT))") "
    done
done
for p in "${PATHS[@]}"; do
    a=$(tr ' ' '\n' <<< "${one[$p-on]}" | grep . | fs_median)
    b=$(tr ' ' '\n' <<< "${one[$p-off]}" | grep . | fs_median)
    awk -v p="$p" -v a="$a" -v b="$b" 'BEGIN {
        printf " %-9s on %8.2f us, off %8.2f us: %+.2f us a call, %+.1f %%\n", p, a, b, a - b, (a / b - 1) * 100 }'
done
echo "== what was counted (stat_redis after the last round)"
fs_psql "$port" "SELECT kind, calls, p50_ms, p99_ms, max_ms FROM flashsale.stat_redis WHERE calls > 0" |
    sed 's/^/ /'
