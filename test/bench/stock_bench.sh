#!/usr/bin/env bash
# Stock benchmark (not a test): one hot product, 16 and 64 clients, a purchase
# transaction (take one unit + INSERT the order), three ways in the same run:
#   hot-row     UPDATE stock SET qty = qty - 1 WHERE id = 1 AND qty >= 1, then INSERT the order
#   no-stock    the INSERT alone (the ceiling: what the order costs without any stock step)
#   flashsale   flashsale.try_decrement_stock(1), then INSERT the order
# Prints tps and the ratios flashsale/hot-row and flashsale/no-stock.
# Usage: test/bench/stock_bench.sh [seconds per run, default 15]
source "$(dirname "$0")/../../scripts/lib.sh"

SECS=${1:-15}
fs_stack_start

fs_psql "$port" "$(cat <<'SQL'
CREATE SCHEMA bench;
CREATE TABLE bench.stock (product_id bigint PRIMARY KEY, qty bigint NOT NULL);
INSERT INTO bench.stock VALUES (1, 1000000000);
CREATE TABLE bench.orders (order_id bigserial PRIMARY KEY, product_id bigint NOT NULL, qty int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
SELECT flashsale.set_stock(1, 1000000000);
SQL
)" >/dev/null

cat > "$dir/hotrow.sql" <<'SQL'
BEGIN;
UPDATE bench.stock SET qty = qty - 1 WHERE product_id = 1 AND qty >= 1;
INSERT INTO bench.orders (product_id, qty) VALUES (1, 1);
COMMIT;
SQL
cat > "$dir/nostock.sql" <<'SQL'
BEGIN;
INSERT INTO bench.orders (product_id, qty) VALUES (1, 1);
COMMIT;
SQL
cat > "$dir/flashsale.sql" <<'SQL'
BEGIN;
SELECT flashsale.try_decrement_stock(1);
INSERT INTO bench.orders (product_id, qty) VALUES (1, 1);
COMMIT;
SQL
chmod 644 "$dir"/*.sql

run() { fs_tps "$port" "$2" "$SECS" "$dir/$1.sql"; }

printf '%-8s %10s %10s %10s %18s %19s\n' clients hot-row no-stock flashsale flashsale/hot-row flashsale/no-stock
for c in 16 64; do
    h=$(run hotrow "$c"); n=$(run nostock "$c"); f=$(run flashsale "$c")
    awk -v c="$c" -v h="$h" -v n="$n" -v f="$f" \
        'BEGIN { printf "%-8s %10d %10d %10d %17.2fx %18.0f%%\n", c, h, n, f, f / h, 100 * f / n }'
done
fs_psql "$port" "SELECT 'flashsale: db_left ' || db_left || ', redis_left ' || redis_left || ', in flight ' || reserved_in_flight FROM flashsale.stock_status"
