#!/usr/bin/env bash
# The statistics (issue 15) against exact truths counted by the clients:
#  1. 32 clients buy at random among 200 products of 50 units, 1 in 5
#     transactions rolled back; each client records, outside the sale's
#     transaction, what it was told: per product, stat_stock's units_sold and
#     sales == the committed orders, units_given_back == the rolled-back
#     units, sold_out == the NULL answers; and orders + stock_level == 50;
#  2. coupons: 32 clients issue a 2,000-unit coupon to 3,000 members:
#     issued + already_issued + sold_out == the answers, each kind exactly;
#  3. bounded memory: with flashsale.max_stat_entries = 250, 100 more
#     products sold from: 250 entries in all, the 100 newest all there, the
#     least recently used forgotten;
#  4. Redis stopped: every call that fails is counted as a connect error of
#     its kind (20 redis_call, 10 throttle), and nothing else moves.
source "$(dirname "$0")/../../scripts/lib.sh"

CLIENTS=${CLIENTS:-32}
PRODUCTS=200
EACH=50
fs_stack_start "flashsale.sync_interval = 1" "flashsale.max_stat_entries = 250"
fs_psql "$port" "
CREATE TABLE orders (product_id bigint NOT NULL);
CREATE TABLE given_back (product_id bigint NOT NULL);
CREATE TABLE sold_out (product_id bigint NOT NULL);
CREATE TABLE answers (status text NOT NULL);
SELECT count(flashsale.set_stock(g, $EACH)) FROM generate_series(1, $PRODUCTS) g;
SELECT flashsale.stat_reset();" >/dev/null

echo "-- 1. $CLIENTS clients x 400 attempts on $PRODUCTS products x $EACH units, 1 in 5 rolled back"
cat > "$dir/buy.sql" <<SQL
\\set p random(1, $PRODUCTS)
\\set r random(1, 5)
BEGIN;
SELECT (flashsale.try_decrement_stock(:p) IS NULL)::int AS so \\gset
\\if :so = 0
INSERT INTO orders VALUES (:p);
\\endif
\\if :r = 1
ROLLBACK;
\\if :so = 0
INSERT INTO given_back VALUES (:p);
\\endif
\\else
COMMIT;
\\endif
\\if :so = 1
INSERT INTO sold_out VALUES (:p);
\\endif
SQL
chmod 644 "$dir/buy.sql"
fs_as_pg pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j 2 -t 400 \
    -f "$dir/buy.sql" postgres > "$dir/pgbench.out" 2>&1 || { cat "$dir/pgbench.out"; fail=1; }
fs_psql "$port" "SELECT flashsale.sync_stock()" >/dev/null
echo "   $(fs_psql "$port" "SELECT count(*) || ' orders, ' || (SELECT count(*) FROM given_back) || ' given back, '
                                || (SELECT count(*) FROM sold_out) || ' sold-out answers' FROM orders")"
truth="WITH p AS (SELECT g AS product_id FROM generate_series(1, $PRODUCTS) g),
     o AS (SELECT product_id, count(*) n FROM orders GROUP BY 1),
     b AS (SELECT product_id, count(*) n FROM given_back GROUP BY 1),
     s AS (SELECT product_id, count(*) n FROM sold_out GROUP BY 1)
SELECT p.product_id, coalesce(o.n, 0) AS orders, coalesce(b.n, 0) AS back, coalesce(s.n, 0) AS so
  FROM p LEFT JOIN o USING (product_id) LEFT JOIN b USING (product_id) LEFT JOIN s USING (product_id)"
fs_check "products whose stat_stock units_sold or sales <> orders" "$(fs_psql "$port" "
    SELECT count(*) FROM ($truth) t LEFT JOIN flashsale.stat_stock st USING (product_id)
     WHERE coalesce(st.units_sold, 0) <> t.orders OR coalesce(st.sales, 0) <> t.orders")" 0
fs_check "products whose units_given_back <> rolled-back units" "$(fs_psql "$port" "
    SELECT count(*) FROM ($truth) t LEFT JOIN flashsale.stat_stock st USING (product_id)
     WHERE coalesce(st.units_given_back, 0) <> t.back")" 0
fs_check "products whose sold_out <> NULL answers" "$(fs_psql "$port" "
    SELECT count(*) FROM ($truth) t LEFT JOIN flashsale.stat_stock st USING (product_id)
     WHERE coalesce(st.sold_out, 0) <> t.so")" 0
fs_check "products where orders + stock_level <> $EACH" "$(fs_psql "$port" "
    SELECT count(*) FROM ($truth) t WHERE t.orders + flashsale.stock_level(t.product_id) <> $EACH")" 0
fs_check "total units sold (stat_stock) = orders" "$(fs_psql "$port" "
    SELECT (SELECT sum(units_sold) FROM flashsale.stat_stock) = (SELECT count(*) FROM orders)")" t
fs_check "refills, units refilled > 0, no Redis error" "$(fs_psql "$port" "
    SELECT (SELECT sum(refills) > 0 AND sum(units_refilled) > 0 FROM flashsale.stat_stock)
           AND (SELECT sum(errors_connect + errors_timeout + errors_reply) = 0 FROM flashsale.stat_redis)")" t

echo "-- 2. $CLIENTS clients issue a 2,000-unit coupon (1 per member) to 3,000 members, 3,200 attempts"
coupon=$(fs_psql "$port" "SELECT flashsale.create_coupon('stats', 2000, 1)")
cat > "$dir/issue.sql" <<SQL
\\set m random(1, 3000)
INSERT INTO answers SELECT flashsale.try_issue_coupon(:m, $coupon);
SQL
chmod 644 "$dir/issue.sql"
fs_as_pg pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j 2 -t 100 \
    -f "$dir/issue.sql" postgres > "$dir/pgbench.out" 2>&1 || { cat "$dir/pgbench.out"; fail=1; }
fs_check "stat_coupon (issued, already_issued, sold_out, not_active) = the answers" "$(fs_psql "$port" "
    SELECT (s.issued, s.already_issued, s.sold_out, s.not_active) = (a.i, a.ai, a.so, a.na)
      FROM flashsale.stat_coupon s,
           (SELECT count(*) FILTER (WHERE status = 'issued') AS i,
                   count(*) FILTER (WHERE status = 'already_issued') AS ai,
                   count(*) FILTER (WHERE status = 'sold_out') AS so,
                   count(*) FILTER (WHERE status = 'not_active') AS na FROM answers) a
     WHERE s.coupon_id = $coupon")" t
fs_check "issued = units of the coupon held" "$(fs_psql "$port" "
    SELECT issued = (SELECT count(*) FROM flashsale.member_coupon WHERE coupon_id = $coupon)
      FROM flashsale.stat_coupon WHERE coupon_id = $coupon")" t

echo "-- 3. max_stat_entries = 250: 100 more products sold from, one at a time"
fs_psql "$port" "SELECT count(flashsale.set_stock(g, 1)) FROM generate_series(1001, 1100) g" >/dev/null
for p in $(seq 1001 1100); do echo "SELECT flashsale.decrement_stock($p);"; done |
    fs_as_pg psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres >/dev/null
fs_check "entries (products + coupons), the 100 newest products among them" "$(fs_psql "$port" "
    SELECT (SELECT count(*) FROM flashsale.stat_stock) + (SELECT count(*) FROM flashsale.stat_coupon) || ' '
        || (SELECT count(*) FROM flashsale.stat_stock WHERE product_id > 1000 AND units_sold = 1)")" "250 100"

echo "-- 4. Redis stopped: 20 redis_call and 10 throttle calls fail, each counted once"
before=$(fs_psql "$port" "SELECT string_agg(kind || '=' || errors_connect || '/' || calls, ' ' ORDER BY kind)
                          FROM flashsale.stat_redis")
fs_redis_stop "$dir/redis"
failed=$(fs_psql "$port" "
CREATE FUNCTION pg_temp.fails(q text, n int) RETURNS int LANGUAGE plpgsql AS \$\$
DECLARE k int := 0;
BEGIN
    FOR i IN 1..n LOOP
        BEGIN
            EXECUTE q;
        EXCEPTION WHEN connection_exception THEN
            k := k + 1;
        END;
    END LOOP;
    RETURN k;
END \$\$;
SELECT pg_temp.fails(\$q\$SELECT flashsale.redis_call('PING')\$q\$, 20) || ' '
    || pg_temp.fails(\$q\$SELECT flashsale.throttle('k', 5, 1, '1 s')\$q\$, 10)" | tail -1)
fs_check "calls that failed with class 08 (redis_call, throttle)" "$failed" "20 10"
fs_check "stat_redis connect errors of call and limit since" "$(fs_psql "$port" "
    WITH b AS (SELECT split_part(x, '=', 1) AS kind, split_part(split_part(x, '=', 2), '/', 1)::bigint AS e,
                      split_part(x, '/', 2)::bigint AS c
                 FROM unnest(string_to_array('$before', ' ')) x)
    SELECT string_agg(s.kind || ' ' || (s.errors_connect - b.e) || ' ' || (s.calls - b.c), ', ' ORDER BY s.kind)
      FROM flashsale.stat_redis s JOIN b USING (kind) WHERE s.kind IN ('call', 'limit')")" "call 20 0, limit 10 0"

exit $fail
