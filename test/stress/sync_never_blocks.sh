#!/usr/bin/env bash
# The sync pass never stops a sale: a hot product keeps selling while another
# transaction holds one of its units for 10 s and the worker's pass runs every
# second.  (A pass that waited for the product's lock exclusively queued behind
# the long transaction, and every buyer queued behind the pass: 0 tps for
# seconds.)  pgbench reports its rate every second: no second below 20 % of
# the median.  Exact afterwards: orders + units left == initial, nothing in
# flight, and a pass that found the product due a check (idle after the
# buyers stopped) but its lock held by the holder counted it busy and went on.  With allotments the sale
# makes no Redis call; the holder's unit is taken from the allotment too.
source "$(dirname "$0")/../../scripts/lib.sh"

CLIENTS=${CLIENTS:-16}
SECS=${SECS:-12}
STOCK=${STOCK:-1000000}
fs_stack_start "flashsale.sync_interval = 1"
fs_psql "$port" "
SELECT flashsale.set_stock(1, $STOCK);
CREATE TABLE orders (order_id bigserial PRIMARY KEY, product_id bigint NOT NULL, qty bigint NOT NULL);" >/dev/null

cat > "$dir/buy.sql" <<'SQL'
BEGIN;
SELECT flashsale.try_decrement_stock(1) IS NOT NULL AS ok \gset
\if :ok
INSERT INTO orders (product_id, qty) VALUES (1, 1);
\endif
COMMIT;
SQL
chmod 644 "$dir/buy.sql"

busy_before=$(fs_psql "$port" "SELECT products_busy FROM flashsale.worker_status")
passes_before=$(fs_psql "$port" "SELECT passes FROM flashsale.worker_status")
echo "-- $CLIENTS clients buy product 1 for ${SECS}s; a transaction holds one unit from 1 s to 14 s; a pass every second"
fs_as_pg pgbench -n -M prepared -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j 2 -T "$SECS" -P 1 \
    -f "$dir/buy.sql" postgres > "$dir/pgbench.out" 2> "$dir/progress.out" &
bench=$!
sleep 1
# the holder: one unit, committed after 13 s (its order is counted too): it
# outlasts the buyers, so the product is idle and due a check while the
# holder still has a unit of it in flight
fs_psql "$port" "BEGIN;
SELECT flashsale.decrement_stock(1);
INSERT INTO orders (product_id, qty) VALUES (1, 1);
SELECT pg_sleep(13);
COMMIT;" >/dev/null &
holder=$!
rc=0
wait "$bench" || rc=$?
wait "$holder"
fs_check "pgbench exit status" "$rc" 0

# "progress: 3.0 s, 4321.5 tps, lat ..." -> one rate per second
sed -n 's/^progress: \([0-9.]*\) s, \([0-9.]*\) tps.*/\2/p' "$dir/progress.out" > "$dir/rates"
echo "   tps per second: $(paste -sd' ' "$dir/rates" | awk '{ for (i = 1; i <= NF; i++) printf "%d ", $i }')"
read -r median lowest <<< "$(sort -n "$dir/rates" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)], a[1] }')"
# every whole second is reported, however slow (a stalled second prints 0
# tps, it does not go missing); the report due at the very end of -T races
# with pgbench stopping, so it may or may not come (CI: 11 of 12 once)
fs_check "seconds 1 to $((SECS - 1)) reported" "$(( $(wc -l < "$dir/rates") >= SECS - 1 ))" 1
fs_check "slowest second >= 20 % of the median ($lowest vs $median)" \
    "$(awk -v l="$lowest" -v m="$median" 'BEGIN { print (m > 0 && l >= 0.2 * m) ? "yes" : "no" }')" yes

fs_psql "$port" "SELECT flashsale.sync_stock()" >/dev/null
ordered=$(fs_psql "$port" "SELECT coalesce(sum(qty), 0) FROM orders")
level=$(fs_psql "$port" "SELECT flashsale.stock_level(1)")
echo "   initial $STOCK, ordered $ordered, left $level"
fs_check "orders + stock_level" "$((ordered + level))" "$STOCK"
fs_check "db_left, left (pool + allotment), in flight" \
    "$(fs_psql "$port" "SELECT db_left || ',' || \"left\" || ',' || in_flight FROM flashsale.stock_status")" \
    "$level,$level,0"
busy_after=$(fs_psql "$port" "SELECT products_busy FROM flashsale.worker_status")
passes_after=$(fs_psql "$port" "SELECT passes FROM flashsale.worker_status")
echo "   passes meanwhile: $((passes_after - passes_before)), products found busy: $((busy_after - busy_before))"
fs_check "passes meanwhile >= $((SECS - 2))" "$(( passes_after - passes_before >= SECS - 2 ))" 1
fs_check "passes that found the product busy > 0" "$(( busy_after > busy_before ))" 1

exit $fail
