#!/usr/bin/env bash
# Stock benchmark (not a test): a purchase transaction (take one unit, INSERT
# the order), pgbench -M prepared, contenders interleaved within each round,
# the median of the rounds printed with every run:
#   ceiling     BEGIN; SELECT 1; INSERT order; COMMIT (no stock step at all)
#   hot-row     UPDATE stock SET qty = qty - 1 WHERE id = 1 AND qty >= 1
#   slot        PostgreSQL alone, striped by backend: 64 slot rows, each backend
#               updates its own (slot = pg_backend_pid() % 64; no fallback when
#               it is empty, so an upper bound for striping)
#   skip-locked PostgreSQL alone, Shopify's design: 64 slot rows, UPDATE the
#               first one FOR UPDATE SKIP LOCKED finds with units
#   flashsale   flashsale.try_decrement_stock(1)
# at 16 and 64 clients; then, at 64 clients:
#   random      flashsale on 1,000 products chosen at random
#   sold-out    64 clients asking a sold-out product, against SELECT 1
# then Redis commands reaching Redis per sale on the hot product (MONITOR over
# a timed run; commands run inside scripts excluded), and the tail
# latency at 20 clients (pgbench per-transaction log): p50 / p99 / p99.9 of
# the ceiling and of flashsale, with the sync pass running every second.
# Usage: test/bench/stock_bench.sh [seconds per run, default 10] [rounds, default 3]
source "$(dirname "$0")/../../scripts/lib.sh"

SECS=${1:-10}
ROUNDS=${2:-3}
fs_stack_start "flashsale.sync_interval = 1"

fs_psql "$port" "$(cat <<'SQL'
CREATE SCHEMA bench;
CREATE TABLE bench.stock (product_id bigint PRIMARY KEY, qty bigint NOT NULL);
INSERT INTO bench.stock VALUES (1, 1000000000);
CREATE TABLE bench.slot_pid (product_id bigint, slot int, qty bigint NOT NULL, PRIMARY KEY (product_id, slot));
INSERT INTO bench.slot_pid SELECT 1, g, 1000000000 FROM generate_series(0, 63) g;
CREATE TABLE bench.slot_skip (product_id bigint, slot int, qty bigint NOT NULL, PRIMARY KEY (product_id, slot));
INSERT INTO bench.slot_skip SELECT 1, g, 1000000000 FROM generate_series(0, 63) g;
CREATE TABLE bench.orders (order_id bigserial PRIMARY KEY, product_id bigint NOT NULL, qty int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
SELECT flashsale.set_stock(1, 1000000000);
SELECT flashsale.set_stock(2, 0);
SELECT count(flashsale.set_stock(g, 1000000000)) FROM generate_series(1001, 2000) g;
SQL
)" >/dev/null

order='INSERT INTO bench.orders (product_id, qty) VALUES (1, 1);'
script() { # name body...
    local name=$1
    shift
    printf '%s\n' "$@" > "$dir/$name.sql"
}
script ceiling     'BEGIN;' 'SELECT 1;' "$order" 'COMMIT;'
script hotrow      'BEGIN;' 'UPDATE bench.stock SET qty = qty - 1 WHERE product_id = 1 AND qty >= 1;' "$order" 'COMMIT;'
script slot        'BEGIN;' 'UPDATE bench.slot_pid SET qty = qty - 1 WHERE product_id = 1 AND slot = pg_backend_pid() % 64 AND qty >= 1;' "$order" 'COMMIT;'
script skiplocked  'BEGIN;' 'UPDATE bench.slot_skip SET qty = qty - 1 WHERE (product_id, slot) = (SELECT product_id, slot FROM bench.slot_skip WHERE product_id = 1 AND qty >= 1 LIMIT 1 FOR UPDATE SKIP LOCKED);' "$order" 'COMMIT;'
script flashsale   'BEGIN;' 'SELECT flashsale.try_decrement_stock(1);' "$order" 'COMMIT;'
script random      '\set p random(1001, 2000)' 'BEGIN;' 'SELECT flashsale.try_decrement_stock(:p);' 'INSERT INTO bench.orders (product_id, qty) VALUES (:p, 1);' 'COMMIT;'
script soldout     'SELECT flashsale.try_decrement_stock(2);'
script select1     'SELECT 1;'
chmod 644 "$dir"/*.sql


# run every contender once per round, in a rotating order; prints "name clients tps" lines
declare -A runs
bench_round() { # round clients contenders...
    local r=$1 c=$2
    shift 2
    local names=("$@") n=${#names[@]} k i t
    for ((k = 0; k < n; k++)); do
        i=$(( (k + r) % n ))
        fs_psql "$port" "CHECKPOINT" >/dev/null
        t=$(fs_tps "$port" "$c" "$SECS" "$dir/${names[$i]}.sql")
        runs["${names[$i]}/$c"]+="$t "
    done
}

echo "== one hot product: tps per run and median of $ROUNDS rounds x ${SECS}s, contenders interleaved"
CONTENDERS=(ceiling hotrow slot skiplocked flashsale)
for c in 16 64; do
    for ((r = 0; r < ROUNDS; r++)); do bench_round "$r" "$c" "${CONTENDERS[@]}"; done
done
declare -A med
for c in 16 64; do
    for name in "${CONTENDERS[@]}"; do
        med["$name/$c"]=$(tr ' ' '\n' <<< "${runs[$name/$c]}" | grep . | fs_median)
        printf '%3s clients %-11s median %6d tps  (runs: %s)\n' "$c" "$name" "${med[$name/$c]}" "${runs[$name/$c]}"
    done
    awk -v c="$c" -v f="${med[flashsale/$c]}" -v n="${med[ceiling/$c]}" -v h="${med[hotrow/$c]}" \
        -v s="${med[slot/$c]}" -v k="${med[skiplocked/$c]}" 'BEGIN {
        printf "%3s clients flashsale = %.2fx ceiling, %.2fx slot, %.2fx skip-locked, %.2fx hot-row\n",
               c, f / n, f / s, f / k, f / h }'
done

echo "== 64 clients: 1,000 products at random; a sold-out product against SELECT 1"
for ((r = 0; r < ROUNDS; r++)); do bench_round "$r" 64 random soldout select1; done
for name in random soldout select1; do
    med["$name/64"]=$(tr ' ' '\n' <<< "${runs[$name/64]}" | grep . | fs_median)
    printf ' 64 clients %-11s median %6d tps  (runs: %s)\n' "$name" "${med[$name/64]}" "${runs[$name/64]}"
done
awk -v r="${med[random/64]}" -v n="${med[ceiling/64]}" -v s="${med[soldout/64]}" -v o="${med[select1/64]}" 'BEGIN {
    printf " 64 clients random = %.2fx ceiling; sold-out answers = %.2fx SELECT 1\n", r / n, s / o }'

echo "== Redis commands reaching Redis per sale (hot product, 64 clients, ${SECS}s)"
# first let the random products' allotments go back (their returns are not this product's)
sleep 3
fs_psql "$port" "SELECT flashsale.sync_stock()" >/dev/null
sales_before=$(fs_psql "$port" "SELECT count(*) FROM bench.orders")
fs_redis "$rport" MONITOR > "$dir/monitor.log" 2>/dev/null &
mon=$!
sleep 0.5
fs_tps "$port" 64 "$SECS" "$dir/flashsale.sql" >/dev/null
sleep 0.5
kill "$mon" 2>/dev/null || true
wait "$mon" 2>/dev/null || true
sales=$(( $(fs_psql "$port" "SELECT count(*) FROM bench.orders") - sales_before ))
# lines from a client ("[db 127.0.0.1:port]"), not from a script ("[db lua]")
cmds=$(grep -c '\[[0-9]* 127\.0\.0\.1:' "$dir/monitor.log" || true)
awk -v c="$cmds" -v s="$sales" 'BEGIN { printf " %d commands for %d sales: %.4f per sale (the worker'"'"'s passes included)\n", c, s, c / s }'
echo "   by command: $(grep '\[[0-9]* 127\.0\.0\.1:' "$dir/monitor.log" | awk '{ print $4 }' | sort | uniq -c |
    awk '{ printf "%s %s  ", $2, $1 }')"

echo "== latency at 20 clients, ${SECS}s each, the sync pass every second (ms)"
latency() { # name
    local d="$dir/lat-$1"
    mkdir -p "$d"
    chown postgres: "$d" 2>/dev/null || true
    (cd "$d" && fs_as_pg pgbench -n -M prepared -h 127.0.0.1 -p "$port" -U postgres -c 20 -j 2 -T "$SECS" \
        -l --log-prefix="$d/log" -f "$dir/$1.sql" postgres >/dev/null 2>&1)
    cat "$d"/log* | awk '{ print $3 }' | sort -n | awk -v name="$1" '{ a[NR] = $1 } END {
        printf " %-10s p50 %7.2f  p99 %7.2f  p99.9 %7.2f  max %7.2f  (%d transactions)\n", name,
               a[int(NR * 0.5)] / 1000, a[int(NR * 0.99)] / 1000, a[int(NR * 0.999)] / 1000, a[NR] / 1000, NR }'
}
latency ceiling
latency flashsale

fs_psql "$port" "SELECT 'flashsale product 1: db_left ' || db_left || ', left ' || \"left\" || ' (pool ' || pool || ', allotment ' || available || '), in flight ' || in_flight FROM flashsale.stock_status WHERE product_id = 1"
