#!/usr/bin/env bash
# Allotments under load (issue 10), exact invariants:
#  1. a hot product sold out to the last unit in bursts with rollbacks, and
#     idle gaps between the bursts long enough for the allotment to go back
#     to the pool (flashsale.allotment_idle = 300 ms): orders == initial,
#     units left 0 read three ways, nothing in flight, allotments returned;
#  2. 1,000 products chosen at random, with rollbacks: per product,
#     orders + units left == initial, for every one of them;
#  3. a restock after a sell-out is sold at once: 64 clients ask a sold-out
#     product (answered from shared memory); set_stock gives it 5 units and
#     restore_stock 1 more: exactly 6 orders while the buyers run (they run 3 s
#     past the restore: on a loaded 2-core machine two psql start-ups took more
#     than the 1 s margin this had before); how long after each commit the
#     first unit sold is printed.
source "$(dirname "$0")/../../scripts/lib.sh"

CLIENTS=${CLIENTS:-64}
HOT=${HOT:-3000}
PRODUCTS=${PRODUCTS:-1000}
EACH=${EACH:-40}
fs_stack_start "flashsale.sync_interval = 1" "flashsale.allotment_idle = 300"
fs_psql "$port" "
CREATE TABLE orders (order_id bigserial PRIMARY KEY, product_id bigint NOT NULL, qty bigint NOT NULL,
                     at timestamptz NOT NULL DEFAULT clock_timestamp());
SELECT flashsale.set_stock(1, $HOT);
SELECT count(flashsale.set_stock(g, $EACH)) FROM generate_series(1001, 1000 + $PRODUCTS) g;
SELECT flashsale.set_stock(9, 0);" >/dev/null

# one unit of :p, ordered iff the decrement returned a number; 1 in 5 rolled back
cat > "$dir/buy.sql" <<'SQL'
\set r random(1, 5)
BEGIN;
INSERT INTO orders (product_id, qty) SELECT :p, 1
 FROM (SELECT flashsale.try_decrement_stock(:p) AS l) s WHERE s.l IS NOT NULL;
\if :r = 1
ROLLBACK;
\else
COMMIT;
\endif
SQL
{ echo "\\set p random(1001, $((1000 + PRODUCTS)))"; cat "$dir/buy.sql"; } > "$dir/buy_random.sql"
chmod 644 "$dir"/*.sql
buy() { # product ("random": one of the 1,000) clients transactions-per-client
    local f=buy.sql d=(-D "p=$1")
    [ "$1" != random ] || { f=buy_random.sql; d=(); }
    fs_as_pg pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c "$2" -j 2 -t "$3" "${d[@]}" \
        -f "$dir/$f" postgres > "$dir/pgbench.out" 2>&1
}

# ---- 1. the hot product, in bursts with idle gaps
returned_before=$(fs_psql "$port" "SELECT allotments_returned FROM flashsale.worker_status")
echo "-- 1. product 1 = $HOT units: bursts of $CLIENTS clients x 20 attempts (1 in 5 rolled back), 1 s gaps"
bursts=0
while [ "$(fs_psql "$port" "SELECT coalesce(sum(qty), 0) FROM orders WHERE product_id = 1")" -lt "$HOT" ] &&
      [ $bursts -lt 20 ]; do
    buy 1 "$CLIENTS" 20 || { cat "$dir/pgbench.out"; fs_check "pgbench burst" failed ok; break; }
    bursts=$((bursts + 1))
    sleep 1
    # in the gap the allotment went back to the pool
    [ $bursts -ne 1 ] || fs_check "allotment back in the pool after an idle gap" \
        "$(fs_psql "$port" "SELECT count(*) FROM flashsale.allotments() WHERE product_id = 1 AND available > 0")" 0
done
fs_psql "$port" "SELECT flashsale.sync_stock()" >/dev/null
ordered=$(fs_psql "$port" "SELECT coalesce(sum(qty), 0) FROM orders WHERE product_id = 1")
echo "   $bursts bursts, ordered $ordered"
fs_check "product 1 orders" "$ordered" "$HOT"
fs_check "product 1 stock_level, db_left, left, in_flight" \
    "$(fs_psql "$port" "SELECT flashsale.stock_level(1) || ',' || db_left || ',' || \"left\" || ',' || in_flight
                        FROM flashsale.stock_status WHERE product_id = 1")" "0,0,0,0"
fs_check "product 1 sold out: try_decrement_stock is NULL" \
    "$(fs_psql "$port" "SELECT flashsale.try_decrement_stock(1) IS NULL")" t
returned_after=$(fs_psql "$port" "SELECT allotments_returned FROM flashsale.worker_status")
fs_check "idle allotments given back by the worker > 0" "$(( returned_after > returned_before ))" 1

# ---- 2. 1,000 products at random
attempts=$(( PRODUCTS * EACH * 8 / 10 / CLIENTS ))
echo "-- 2. $PRODUCTS products x $EACH units, $CLIENTS clients x $attempts attempts at random (1 in 5 rolled back)"
buy random "$CLIENTS" "$attempts" || { cat "$dir/pgbench.out"; fs_check "pgbench" failed ok; }
fs_psql "$port" "SELECT flashsale.sync_stock()" >/dev/null
fs_psql "$port" "CREATE TABLE levels AS
    SELECT g AS product_id, flashsale.stock_level(g) AS level FROM generate_series(1001, 1000 + $PRODUCTS) g" >/dev/null
echo "   $(fs_psql "$port" "SELECT count(*) || ' orders, ' || count(DISTINCT product_id) || ' products sold from'
                          FROM orders WHERE product_id > 1000")"
fs_check "products where orders + stock_level <> $EACH" "$(fs_psql "$port" "
    SELECT count(*) FROM levels v
    LEFT JOIN (SELECT product_id, sum(qty) AS n FROM orders GROUP BY 1) o USING (product_id)
    WHERE coalesce(o.n, 0) + v.level <> $EACH")" 0
fs_check "products where db_left <> left or in_flight <> 0" "$(fs_psql "$port" "
    SELECT count(*) FROM flashsale.stock_status WHERE product_id > 1000
      AND (db_left IS DISTINCT FROM \"left\" OR in_flight <> 0)")" 0

# ---- 3. a restock after a sell-out, sold at once
echo "-- 3. $CLIENTS clients ask sold-out product 9 for 5 s; at 1 s set_stock(9, 5), at 2 s restore_stock(9, 1)"
fs_as_pg pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j 2 -T 5 -D p=9 \
    -f "$dir/buy.sql" postgres > "$dir/pgbench.out" 2>&1 &
bench=$!
# a statement, then the same session reads the clock: that statement's commit time (or just after)
commit_time() {
    printf '%s\n' "$1" "SELECT clock_timestamp();" |
        fs_as_pg psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres | tail -1
}
sleep 1
restocked=$(commit_time "SELECT flashsale.set_stock(9, 5) IS NULL;")
sleep 1
# restore_stock gives back at most what was sold since set_stock: 5 were
restored=$(commit_time "SELECT flashsale.restore_stock(9, 1);")
rc=0
wait "$bench" || rc=$?
fs_check "pgbench exit status" "$rc" 0
fs_check "orders of product 9" "$(fs_psql "$port" "SELECT count(*) FROM orders WHERE product_id = 9")" 6
read -r first_ms last_ms < <(fs_psql "$port" "
    SELECT round(extract(epoch FROM min(at) - '$restocked'::timestamptz) * 1000) || ' ' ||
           round(extract(epoch FROM max(at) - '$restored'::timestamptz) * 1000)
      FROM orders WHERE product_id = 9")
echo "   first restocked unit sold ${first_ms} ms after set_stock committed, the restored one ${last_ms} ms after restore_stock did"
echo "   (negative: before the clock was read)"
# figures, not assertions: a loaded CI machine took 670 ms for the first (a rebuild of the pool
# under the product's exclusive lock, behind 64 busy buyers); every unit sold before the buyers
# stopped is what is checked
fs_check "product 9 stock_level" "$(fs_psql "$port" "SELECT flashsale.stock_level(9)")" 0

exit $fail
