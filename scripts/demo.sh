#!/usr/bin/env bash
# The flash-sale demo: a throwaway PostgreSQL cluster (initdb in a temp dir,
# loopback port, flashsale preloaded) and a throwaway Redis; one hot coupon and
# one hot product, concurrent buyers fired at them by pgbench (some abandon
# their order, and Redis is wiped mid-sale), a short report of each, and the
# background worker's figures after a sync pass. Leaves nothing running.
#   scripts/demo.sh [clients, default 64] [attempts per client, default 500]
source "$(dirname "$0")/lib.sh"

CLIENTS=${1:-64}
PER_CLIENT=${2:-500}
QUANTITY=${QUANTITY:-10000}
MEMBERS=${MEMBERS:-20000}

fs_install_deps
fs_build

STOCK=${STOCK:-20000}

dir=$(fs_tmpdir)
port=$(fs_free_port)
rport=$(fs_free_port)
fs_log "starting a throwaway Redis on 127.0.0.1:$rport and PostgreSQL on 127.0.0.1:$port"
fs_redis_start "$dir/redis" "$rport"
fs_pg_start "$dir/data" "$port" "flashsale.redis_port = $rport"

fs_psql "$port" "CREATE EXTENSION flashsale" >/dev/null
coupon=$(fs_psql "$port" "SELECT flashsale.create_coupon('flash sale', $QUANTITY, 1)")
fs_psql "$port" "CREATE UNLOGGED TABLE public.attempt (status text NOT NULL)" >/dev/null

cat > "$dir/issue.sql" <<SQL
\\set m random(1, $MEMBERS)
INSERT INTO public.attempt SELECT flashsale.try_issue_coupon(:m, $coupon);
SQL
chmod 644 "$dir/issue.sql"

fs_log "coupon $coupon: $QUANTITY units, 1 per member; $CLIENTS clients x $PER_CLIENT attempts from $MEMBERS members"
out=$(fs_as_pg pgbench -n -M prepared -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j 2 \
    -t "$PER_CLIENT" -f "$dir/issue.sql" postgres 2>&1)
tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3}')

echo
echo "flash-sale report (coupon $coupon)"
fs_psql "$port" "
SELECT format('  %-24s %s', 'attempts', count(*)) FROM attempt
UNION ALL
SELECT format('  %-24s %s', s, (SELECT count(*) FROM attempt a WHERE a.status = s))
FROM unnest(ARRAY['issued', 'sold_out', 'already_issued', 'not_active', 'not_found']) s
UNION ALL
SELECT format('  %-24s %s of %s', 'units issued (table)', issued, total_quantity)
FROM flashsale.coupon_status WHERE coupon_id = $coupon
UNION ALL
SELECT format('  %-24s %s', 'duplicates found', count(*)) FROM (
    SELECT member_id FROM flashsale.member_coupon WHERE coupon_id = $coupon
    GROUP BY member_id HAVING count(*) > 1) d
UNION ALL
SELECT format('  %-24s %s', 'oversold units', greatest(0, count(*) - $QUANTITY))
FROM flashsale.member_coupon WHERE coupon_id = $coupon"
echo "  tps                      $tps"

# ---- stock: one hot product, orders bound to their transactions ----
fs_psql "$port" "SELECT flashsale.set_stock(1, $STOCK)" >/dev/null
fs_psql "$port" "CREATE TABLE public.orders (order_id bigserial PRIMARY KEY, product_id bigint NOT NULL,
                 qty int NOT NULL, created_at timestamptz NOT NULL DEFAULT now())" >/dev/null
fs_psql "$port" "CREATE UNLOGGED TABLE public.buy (outcome text NOT NULL)" >/dev/null
cat > "$dir/order.sql" <<'SQL'
BEGIN;
WITH d AS (SELECT flashsale.try_decrement_stock(1) AS l),
     o AS (INSERT INTO public.orders (product_id, qty) SELECT 1, 1 FROM d WHERE l IS NOT NULL RETURNING 1)
INSERT INTO public.buy SELECT CASE WHEN l IS NULL THEN 'sold_out' ELSE 'ordered' END FROM d;
COMMIT;
SQL
cat > "$dir/abandon.sql" <<'SQL'
BEGIN;
SELECT flashsale.try_decrement_stock(1);
INSERT INTO public.buy VALUES ('abandoned');
ROLLBACK;
SQL
chmod 644 "$dir"/*.sql

fs_log "product 1: $STOCK units; $CLIENTS clients x $PER_CLIENT orders (1 in 10 abandoned); Redis wiped mid-sale"
fs_as_pg pgbench -n -M prepared -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j 2 \
    -t "$PER_CLIENT" -f "$dir/order.sql@9" -f "$dir/abandon.sql@1" postgres > "$dir/stock.out" 2>&1 &
bench=$!
sleep 1
fs_redis "$rport" FLUSHALL >/dev/null
wait "$bench"
tps=$(awk '/^tps/ {printf "%.0f", $3}' "$dir/stock.out")

echo
echo "flash-sale report (product 1)"
# (stock_level first: it rebuilds the pool if Redis lost it, the view only reads)
fs_psql "$port" "SELECT flashsale.stock_level(1)" >/dev/null
fs_psql "$port" "
SELECT format('  %-24s %s', 'orders attempted', count(*)) FROM public.buy
UNION ALL SELECT format('  %-24s %s', 'orders placed', count(*)) FROM public.orders
UNION ALL SELECT format('  %-24s %s', 'sold_out answers', count(*)) FROM public.buy WHERE outcome = 'sold_out'
UNION ALL SELECT format('  %-24s %s', 'abandoned (rolled back)', $CLIENTS * $PER_CLIENT - count(*))
          FROM public.buy
UNION ALL SELECT format('  %-24s %s (pool in Redis %s + allotment %s; db %s, in flight %s)', 'units left',
                        \"left\", pool, available, db_left, in_flight)
          FROM flashsale.stock_status WHERE product_id = 1
UNION ALL SELECT format('  %-24s %s', 'orders + left - initial',
                        (SELECT count(*) FROM public.orders) + flashsale.stock_level(1) - $STOCK)
UNION ALL SELECT format('  %-24s %s', 'ledger units = orders',
                        (SELECT sum(quantity) FROM flashsale.stock_ledger) = (SELECT count(*) FROM public.orders))"
echo "  tps                      $tps"

# ---- the background worker's figures after the sale ----
passes=$(fs_psql "$port" "SELECT passes FROM flashsale.worker_status")
fs_psql "$port" "SELECT flashsale.sync_now()" >/dev/null
for _ in $(seq 1 100); do
    [ "$(fs_psql "$port" "SELECT passes > $passes FROM flashsale.worker_status")" = t ] && break
    sleep 0.1
done
echo
echo "background worker (after a pass woken by flashsale.sync_now())"
fs_psql "$port" "
SELECT format('  %-24s %s', 'passes', passes) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s', 'allotments returned', allotments_returned) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s', 'units returned', units_returned) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s', 'products reloaded', products_reloaded) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s', 'drift fixed', drift_fixed) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s', 'ledger rows folded', ledger_rows_folded) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s', 'last error', coalesce(last_error, '-')) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s (units left %s)', 'stock.quantity', quantity, flashsale.stock_level(1))
          FROM flashsale.stock WHERE product_id = 1"
