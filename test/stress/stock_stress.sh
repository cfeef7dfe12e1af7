#!/usr/bin/env bash
# Stock stress test: pgbench with many clients and attempts far above the stock
# of one hot product and a second one, with rollbacks, rolled-back and released
# savepoints and all-or-nothing multi-item orders mixed in, and Redis flushed
# (FLUSHALL) twice while units are still being sold.
# Exact invariants afterwards, per product: orders + units left == initial,
# with units left read three ways (stock_level, db_left, the view's left =
# pool + allotment) that must agree; nothing in flight; the ledger equals the
# orders, per transaction; and the stock sold out.  The flushes happen with
# allotments out: the pool is rebuilt from the database minus what the
# instance holds.
source "$(dirname "$0")/../../scripts/lib.sh"

CLIENTS=${CLIENTS:-64}
TXNS=${TXNS:-320}        # per client: 64 x 320 = 20,480 attempts
STOCK1=${STOCK1:-2000}   # the hot product
STOCK2=${STOCK2:-3000}
fs_stack_start
fs_psql "$port" "SELECT flashsale.set_stock(1, $STOCK1), flashsale.set_stock(2, $STOCK2)" >/dev/null

# An order row exists iff its decrement succeeded in a committed transaction;
# xid ties it to the ledger rows the same transaction wrote.
fs_psql "$port" "
CREATE TABLE orders (
    order_id   bigserial PRIMARY KEY,
    product_id bigint NOT NULL,
    qty        bigint NOT NULL,
    kind       text NOT NULL,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id()
);
-- all or nothing; FS010 (not enough of one item) means no order, not an error
-- that would abort the pgbench client. The block is a subtransaction: its
-- commit hands the reservation to the transaction, its abort gives it back.
CREATE FUNCTION order_items(p bigint[], q bigint[]) RETURNS boolean LANGUAGE plpgsql AS \$\$
BEGIN
    BEGIN
        PERFORM flashsale.decrement_stock(p, q);
    EXCEPTION WHEN SQLSTATE 'FS010' THEN
        RETURN false;
    END;
    INSERT INTO orders (product_id, qty, kind) SELECT u.p, u.q, 'multi' FROM unnest(p, q) AS u(p, q);
    RETURN true;
END
\$\$;" >/dev/null

# one unit of product :p, ordered iff the decrement returned a number
order_sql() { # product kind
    echo "INSERT INTO orders (product_id, qty, kind) SELECT $1, 1, '$2'
 FROM (SELECT flashsale.try_decrement_stock($1) AS l) s WHERE s.l IS NOT NULL;"
}
{ echo "BEGIN;"; order_sql 1 plain; echo "COMMIT;"; } > "$dir/order1.sql"
{ echo "BEGIN;"; order_sql 2 plain; echo "COMMIT;"; } > "$dir/order2.sql"
cat > "$dir/rollback.sql" <<'SQL'
\set p random(1, 2)
BEGIN;
SELECT flashsale.try_decrement_stock(:p, 1);
INSERT INTO orders (product_id, qty, kind) VALUES (:p, 1, 'rolled back');
ROLLBACK;
SQL
# product 1 in a savepoint rolled back, product 2 committed, product 1 again
# in a savepoint released (kept)
{
    echo "BEGIN;"
    echo "SAVEPOINT a;"
    order_sql 1 'savepoint rolled back'
    echo "ROLLBACK TO SAVEPOINT a;"
    order_sql 2 savepoint
    echo "SAVEPOINT b;"
    order_sql 1 savepoint
    echo "RELEASE SAVEPOINT b;"
    echo "COMMIT;"
} > "$dir/savepoint.sql"
cat > "$dir/multi.sql" <<'SQL'
\set q random(1, 3)
BEGIN;
SELECT order_items(ARRAY[1, 2]::bigint[], ARRAY[1, :q]::bigint[]);
COMMIT;
SQL
chmod 644 "$dir"/*.sql


total=$((CLIENTS * TXNS))
echo "-- stock: product 1 = $STOCK1, product 2 = $STOCK2; $CLIENTS clients x $TXNS attempts, FLUSHALL twice mid-sale"
start=$EPOCHREALTIME
fs_as_pg pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j 2 -t "$TXNS" \
    -f "$dir/order1.sql@5" -f "$dir/order2.sql@2" -f "$dir/rollback.sql@1" \
    -f "$dir/savepoint.sql@1" -f "$dir/multi.sql@1" postgres > "$dir/pgbench.out" 2>&1 &
bench=$!

# Flush Redis while product 1 is being sold: once when 70 % of it is left,
# once when 35 % is (the pool comes back from the database truth).  Product 1
# sells out in about a second and a half, so the database is watched through
# one open psql session (a new psql per look took a quarter of a second on a
# loaded machine, and both windows were missed between two looks).
flushes=0
coproc WATCH { fs_as_pg psql -X -At -h 127.0.0.1 -p "$port" -U postgres -d postgres 2>&1; }
# (watched in the database: after a flush the pool is back only at the next
# lease, and the allotment may hold a large part of what is left)
units_left() {
    echo "SELECT s.quantity - coalesce((SELECT sum(quantity) FROM flashsale.stock_ledger
          WHERE product_id = 1), 0) FROM flashsale.stock s WHERE product_id = 1;" >&"${WATCH[1]}"
    read -r left <&"${WATCH[0]}"
}
for threshold in $((STOCK1 * 7 / 10)) $((STOCK1 * 35 / 100)); do
    while kill -0 "$bench" 2>/dev/null; do
        units_left
        if [ -n "$left" ] && [ "$left" -le "$threshold" ] && [ "$left" -gt 0 ]; then
            fs_redis "$rport" FLUSHALL >/dev/null
            if kill -0 "$bench" 2>/dev/null; then
                flushes=$((flushes + 1))
                echo "   FLUSHALL with $left units of product 1 left, pgbench running"
            fi
            break
        fi
        sleep 0.005
    done
done
eval "exec ${WATCH[1]}>&-"   # psql ends at end of input
rc=0
wait "$bench" || rc=$?
elapsed=$(awk "BEGIN { print $EPOCHREALTIME - $start }")
grep -E '^(number of transactions actually processed|number of failed|tps)' "$dir/pgbench.out" | sed 's/^/   /'
printf '   pgbench ran %.1f s\n' "$elapsed"
fs_check "pgbench exit status" "$rc" 0
fs_check "pgbench transactions processed" \
    "$(sed -n 's/^number of transactions actually processed: \([0-9/]*\).*/\1/p' "$dir/pgbench.out")" "$total/$total"
fs_check "pgbench failed transactions" \
    "$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$dir/pgbench.out")" 0
fs_check "FLUSHALLs while selling" "$flushes" 2
[ "$rc" = 0 ] || cat "$dir/pgbench.out"

invariants() { # product initial
    local p=$1 initial=$2 ordered level db redis inflight ledger
    ordered=$(fs_psql "$port" "SELECT coalesce(sum(qty), 0) FROM orders WHERE product_id = $p")
    # stock_level first: it rebuilds the pool if Redis lost it; the view does not
    level=$(fs_psql "$port" "SELECT flashsale.stock_level($p)")
    IFS='|' read -r db redis inflight <<< "$(fs_psql "$port" "
        SELECT db_left, \"left\", in_flight FROM flashsale.stock_status WHERE product_id = $p")"
    ledger=$(fs_psql "$port" "SELECT coalesce(sum(quantity), 0) FROM flashsale.stock_ledger WHERE product_id = $p")
    echo "   product $p: initial $initial, ordered $ordered, left $level"
    fs_check "product $p orders + stock_level" "$((ordered + level))" "$initial"
    fs_check "product $p db_left" "$db" "$level"
    fs_check "product $p left (pool + allotment)" "$redis" "$level"
    fs_check "product $p in_flight" "$inflight" 0
    fs_check "product $p ledger sum" "$ledger" "$ordered"
    fs_check "product $p sold out (left)" "$level" 0
}
invariants 1 "$STOCK1"
invariants 2 "$STOCK2"

# Per committed transaction and product, the ledger holds what its orders say.
fs_check "(transaction, product) where ledger <> orders" "$(fs_psql "$port" "
    SELECT count(*) FROM
        (SELECT xid, product_id, sum(quantity) AS n FROM flashsale.stock_ledger GROUP BY 1, 2) l
        FULL JOIN (SELECT xid, product_id, sum(qty) AS n FROM orders GROUP BY 1, 2) o
        USING (xid, product_id)
    WHERE l.n IS DISTINCT FROM o.n")" 0
fs_check "ledger rows with quantity <= 0" \
    "$(fs_psql "$port" "SELECT count(*) FROM flashsale.stock_ledger WHERE quantity <= 0")" 0
echo "   units ordered by kind: $(fs_psql "$port" "
    SELECT string_agg(format('%s %s', kind, n), ', ' ORDER BY kind)
    FROM (SELECT kind, sum(qty) AS n FROM orders GROUP BY kind) k")"
fs_check "orders of the kinds that must not commit" \
    "$(fs_psql "$port" "SELECT count(*) FROM orders WHERE kind IN ('rolled back', 'savepoint rolled back')")" 0
fs_check "kinds of order that committed" \
    "$(fs_psql "$port" "SELECT string_agg(DISTINCT kind, ',' ORDER BY kind) FROM orders")" "multi,plain,savepoint"
fs_check "sold out: try_decrement_stock(1) is NULL" \
    "$(fs_psql "$port" "SELECT flashsale.try_decrement_stock(1) IS NULL")" t

exit $fail
