#!/usr/bin/env bash
# Coupon stress test: pgbench with many clients and thousands of attempts from a
# small member pool against a small coupon, with rollbacks and cancels mixed in.
# Exact invariants afterwards: issued == cap, nobody above the limit, the
# stripes' counters equal the rows, no (coupon, member, seq) twice.
source "$(dirname "$0")/../../scripts/lib.sh"

CLIENTS=${CLIENTS:-48}
TXNS=${TXNS:-250}        # per client
dir=$(fs_tmpdir)
port=$(fs_free_port)
fs_pg_start "$dir/data" "$port"
fs_psql "$port" "CREATE EXTENSION flashsale" >/dev/null
fs_psql "$port" "SELECT flashsale.create_coupon('limit one', 100, 1)" >/dev/null    # coupon 1
fs_psql "$port" "SELECT flashsale.create_coupon('limit three', 250, 3)" >/dev/null  # coupon 2
fs_psql "$port" "SET flashsale.coupon_stripes = 2;
                 SELECT flashsale.create_coupon('two stripes', 400, 2)" >/dev/null     # coupon 3

cat > "$dir/issue.sql" <<'SQL'
\set m random(1, :pool)
SELECT flashsale.try_issue_coupon(:m, :coupon);
SQL
cat > "$dir/issue_rollback.sql" <<'SQL'
\set m random(1, :pool)
BEGIN;
SELECT flashsale.try_issue_coupon(:m, :coupon);
ROLLBACK;
SQL
cat > "$dir/issue_strict.sql" <<'SQL'
\set m random(1, :pool)
BEGIN;
SAVEPOINT a;
SELECT flashsale.try_issue_coupon(:m, :coupon);
ROLLBACK TO SAVEPOINT a;
SELECT flashsale.try_issue_coupon(:m, :coupon);
COMMIT;
SQL
cat > "$dir/cancel.sql" <<'SQL'
\set m random(1, :pool)
SELECT flashsale.cancel_coupon(member_coupon_id) FROM flashsale.member_coupon
 WHERE coupon_id = :coupon AND member_id = :m ORDER BY seq LIMIT 1;
SQL
# an admin adding a unit to a stripe by hand, without flashsale's stripe lock
cat > "$dir/topup.sql" <<'SQL'
\set s random(0, 1)
UPDATE flashsale.coupon_stripe SET quantity = quantity + 1 WHERE coupon_id = :coupon AND stripe = :s;
SQL
chmod 644 "$dir"/*.sql

bench() { # coupon pool extra-scripts...
    local coupon=$1 pool=$2 out
    shift 2
    out=$(fs_as_pg pgbench -n -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j 2 -t "$TXNS" \
        -D coupon="$coupon" -D pool="$pool" "$@" postgres 2>&1) || { echo "$out"; return 1; }
    echo "$out" | grep -E 'number of transactions actually processed|^tps' | sed 's/^/   /'
    if echo "$out" | grep -q 'number of failed transactions: [1-9]'; then echo "$out"; return 1; fi
}


invariants() { # coupon cap limit
    local c=$1
    fs_check "coupon $c rows" "$(fs_psql "$port" "SELECT count(*) FROM flashsale.member_coupon WHERE coupon_id = $c")" "$2"
    fs_check "coupon $c stripes' issued" "$(fs_psql "$port" "SELECT sum(issued) FROM flashsale.coupon_stripe WHERE coupon_id = $c")" "$2"
    fs_check "coupon $c rows per stripe match its counter" "$(fs_psql "$port" "
        SELECT count(*) FROM flashsale.coupon_stripe s
        WHERE coupon_id = $c AND issued <> (SELECT count(*) FROM flashsale.member_coupon m
                                            WHERE m.coupon_id = s.coupon_id AND m.stripe = s.stripe)")" 0
    fs_check "coupon $c members above the limit $3" "$(fs_psql "$port" "
        SELECT count(*) FROM (SELECT member_id FROM flashsale.member_coupon WHERE coupon_id = $c
                              GROUP BY member_id HAVING count(*) > $3) x")" 0
    fs_check "coupon $c duplicate (member, seq)" "$(fs_psql "$port" "
        SELECT count(*) - count(DISTINCT (member_id, seq)) FROM flashsale.member_coupon WHERE coupon_id = $c")" 0
}

echo "-- coupon 1: cap 100, limit 1, 300 members, $CLIENTS clients x $TXNS attempts (some rolled back)"
bench 1 300 -f "$dir/issue.sql@8" -f "$dir/issue_rollback.sql@1" -f "$dir/issue_strict.sql@1" || fail=1
invariants 1 100 1

echo "-- coupon 2: cap 250, limit 3, 100 members, with cancels mixed in"
bench 2 100 -f "$dir/issue.sql@8" -f "$dir/issue_rollback.sql@1" -f "$dir/cancel.sql@1" || fail=1
# cancels may have left units free: one pass issuing to everyone fills the pool exactly
fs_psql "$port" "SELECT count(*) FROM generate_series(1, 100) m, generate_series(1, 3) k
                 WHERE flashsale.try_issue_coupon(m, 2) = 'issued'" >/dev/null
invariants 2 250 3
fs_check "coupon 2 status after filling" "$(fs_psql "$port" "SELECT flashsale.try_issue_coupon(1000, 2)")" sold_out

echo "-- coupon 3: cap 400 in 2 stripes, limit 2, 1000 members; issuers queue on the stripes while"
echo "   direct UPDATEs add units to them (no flashsale lock); then a pass issuing to everyone"
bench 3 1000 -f "$dir/issue.sql@16" -f "$dir/issue_rollback.sql@2" -f "$dir/topup.sql@1" || fail=1
fs_psql "$port" "SELECT count(*) FROM generate_series(1, 1000) m, generate_series(1, 2) k
                 WHERE flashsale.try_issue_coupon(m, 3) = 'issued'" >/dev/null
cap3=$(fs_psql "$port" "SELECT sum(quantity) FROM flashsale.coupon_stripe WHERE coupon_id = 3")
echo "   quantity after the top-ups: $cap3"
invariants 3 "$cap3" 2
fs_check "coupon 3 stripes above their quantity" "$(fs_psql "$port" "
    SELECT count(*) FROM flashsale.coupon_stripe WHERE coupon_id = 3 AND issued > quantity")" 0
fs_check "coupon 3 status after filling" "$(fs_psql "$port" "SELECT flashsale.try_issue_coupon(5000, 3)")" sold_out

exit $fail
