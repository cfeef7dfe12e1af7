#!/usr/bin/env bash
# Lock benchmark (not a test): 16 clients on one hot name, acquire + release
# per transaction, in the same run:
#   pg_advisory_xact_lock(hashtext(name))  vs  flashsale.get_xact_lock(name)
#   a spin lock done the Lettuce way (SET NX PX + 10 ms sleep, from SQL)
#                                          vs  flashsale.redis_lock(name) (FIFO, pub/sub)
# The Redis pair holds the lock for pg_sleep(0.001) of work, with the same
# three statements each (lock, work, unlock). Prints acquisitions per second
# and, from pgbench's per-transaction log, the worst-case wait.
# Usage: test/bench/locks_bench.sh [seconds per run, default 15]
source "$(dirname "$0")/../../scripts/lib.sh"

SECS=${1:-15}
CLIENTS=16
fs_stack_start
fs_psql "$port" "$(cat <<'SQL'
CREATE FUNCTION public.spin_lock(k text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WHILE flashsale.redis_call('SET', k, pg_backend_pid()::text, 'NX', 'PX', '30000') IS NULL LOOP
        PERFORM pg_sleep(0.01);
    END LOOP;
END $$;
SQL
)" >/dev/null

cat > "$dir/advisory.sql" <<'SQL'
BEGIN;
SELECT pg_advisory_xact_lock(hashtext('hot'));
COMMIT;
SQL
cat > "$dir/named.sql" <<'SQL'
BEGIN;
SELECT flashsale.get_xact_lock('hot');
COMMIT;
SQL
cat > "$dir/spin.sql" <<'SQL'
SELECT public.spin_lock('spin-hot');
SELECT pg_sleep(0.001);
SELECT flashsale.redis_call('DEL', 'spin-hot');
SQL
cat > "$dir/redislock.sql" <<'SQL'
SELECT flashsale.redis_lock_session('hot', 30000, 60000);
SELECT pg_sleep(0.001);
SELECT flashsale.redis_unlock('hot');
SQL
chmod 644 "$dir"/*.sql

# tps and the longest transaction (ms) from pgbench's per-transaction log
run() { # script -> "tps max_ms"
    local logdir="$dir/log-$1" tps max
    fs_as_pg mkdir -p "$logdir"
    tps=$(cd "$logdir" && fs_as_pg pgbench -n -M prepared -h 127.0.0.1 -p "$port" -U postgres \
        -c "$CLIENTS" -j 2 -T "$SECS" -l -f "$dir/$1.sql" postgres 2>/dev/null |
        awk '/^tps/ {printf "%.0f", $3}')
    max=$(cat "$logdir"/pgbench_log.* | awk '$3 > m {m = $3} END {printf "%.1f", m / 1000}')
    echo "$tps $max"
}

read -r a amax <<< "$(run advisory)"
read -r n nmax <<< "$(run named)"
read -r s smax <<< "$(run spin)"
read -r r rmax <<< "$(run redislock)"

printf '%-40s %12s %14s\n' "$CLIENTS clients, one hot name" "acquisitions/s" "worst wait ms"
printf '%-40s %12s %14s\n' "pg_advisory_xact_lock(hashtext(name))" "$a" "$amax"
printf '%-40s %12s %14s\n' "flashsale.get_xact_lock(name)" "$n" "$nmax"
printf '%-40s %12s %14s\n' "spin lock (SET NX PX + 10 ms sleep)" "$s" "$smax"
printf '%-40s %12s %14s\n' "flashsale.redis_lock_session(name)" "$r" "$rmax"
awk -v a="$a" -v n="$n" -v s="$s" -v r="$r" -v sm="$smax" -v rm="$rmax" 'BEGIN {
    printf "get_xact_lock / pg_advisory_xact_lock: %.0f%% (target: within 20%%)\n", 100 * n / a
    printf "redis_lock / spin lock: %.2fx acquisitions (target: >= 1.0x), worst wait %.1f ms vs %.1f ms: 1/%.0f (target: <= 1/10)\n",
        r / s, rm, sm, sm / rm }'
