#!/usr/bin/env bash
# Rate limits and once() under pgbench concurrency, rollbacks and Redis down.
#  - one hot key, 32 clients for RATE_SECS s, throttle() then throttle_local()
#    (max_burst 50, 200 a second: the limit, not the clients, is the
#    bottleneck): the admissions, timestamped around each call, satisfy
#    admitted <= max_burst + 1 + floor(count x elapsed / period), elapsed
#    taken generously (the first admitted call's start to the last one's
#    end: Redis' clock is read somewhere inside that), and admitted >= 95 %
#    of the bound computed over the narrow span (the latest admitted call's
#    start minus the earliest one's end): GCRA gives the capacity out, not
#    far below it;
#  - refund_on_rollback: 16 clients, quantities 1 to 3, at top level and
#    under savepoints (an inner savepoint released into an outer one that is
#    rolled back, or released), a third of the transactions rolled back, for
#    throttle() and throttle_local() in the same transactions, on a key whose
#    limit (6000) runs out midway and one whose limit (100,000) does not,
#    count 1 per hour (no refill within the test): each key's remaining,
#    read by a quantity-0 probe, is exactly the limit minus the units
#    admitted in committed work (logged in the same transactions); the
#    first key's limit did run out; one more call is allowed iff remaining
#    > 0 and then leaves one less;
#  - once() under rollbacks: 16 clients on 500 keys (whole transactions
#    rolled back, savepoints rolled back, and 20 keys only ever called in
#    transactions that roll back): no key got true in two committed
#    transactions; the once keys in Redis are exactly the keys some
#    committed transaction got true for, each with a ttl of at most an hour;
#    once() on those answers false, on every other key true (released);
#  - a refund comes after its admission's debt was paid by time (the
#    savepoint rolled back 1.3 s after admitting 1 s worth): nothing is
#    given back, so a later admission's debt is intact;
#  - Redis stopped: throttle() and once() fail with SQLSTATE 08001 naming
#    the address, within flashsale.redis_connect_timeout (500 ms) + margin;
#    with flashsale.throttle_fail_open on they answer allowed (remaining
#    NULL) and true; throttle_local() works on; a transaction holding a
#    refundable admission and a once() key made before Redis went away rolls
#    back (and a savepoint of one rolls back) without an error, quickly;
#    Redis restarted: both work again.
# Every pgbench run must end with all its transactions processed, none failed.
source "$(dirname "$0")/../../scripts/lib.sh"

RATE_SECS=${RATE_SECS:-5}
RATE_CLIENTS=32
BURST=50           # max_burst: a burst of 51
COUNT=200          # per second
REFUND_TXNS=${REFUND_TXNS:-200}   # per client, 16 clients
# two keys: a limit of 6000 that runs out (about 9,000 units would be committed
# without it), and one of 100,000 that does not
REFUND_TIGHT=5999
REFUND_LOOSE=99999
ONCE_TXNS=${ONCE_TXNS:-150}       # per client, 16 clients
ONCE_KEYS=500

fs_stack_start
check_true() { # name shown bash-test...
    local name=$1 shown=$2
    shift 2
    if "$@"; then
        echo "ok: $name ($shown)"
    else
        echo "FAIL: $name ($shown)"
        fail=1
    fi
}

# pgbench: run, print its summary, check every transaction went through
bench() { # label transactions(-t, or "" for -T) seconds clients scripts...
    local label=$1 txns=$2 secs=$3 clients=$4 rc=0 out
    shift 4
    out="$dir/pgbench-$label.out"
    local args=(-n -h 127.0.0.1 -p "$port" -U postgres -c "$clients" -j 2)
    if [ -n "$txns" ]; then args+=(-t "$txns"); else args+=(-T "$secs"); fi
    for f in "$@"; do args+=(-f "$dir/$f"); done
    fs_as_pg pgbench "${args[@]}" postgres > "$out" 2>&1 || rc=$?
    grep -E '^(number of transactions actually processed|number of failed|tps)' "$out" | sed 's/^/   /'
    fs_check "$label: pgbench exit status" "$rc" 0
    fs_check "$label: pgbench failed transactions" \
        "$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")" 0
    if [ -n "$txns" ]; then
        fs_check "$label: pgbench transactions processed" \
            "$(sed -n 's/^number of transactions actually processed: \([0-9/]*\).*/\1/p' "$out")" \
            "$((txns * clients))/$((txns * clients))"
    fi
    [ "$rc" = 0 ] || tail -n 20 "$out"
}

fs_psql "$port" "
CREATE TABLE admitted (fn text NOT NULL, t0 timestamptz NOT NULL, t1 timestamptz NOT NULL);
-- one call; an admission is recorded with the clock read just before and just after it
CREATE FUNCTION try_admit(fn text) RETURNS boolean LANGUAGE plpgsql AS \$\$
DECLARE
    t0 timestamptz := clock_timestamp();
    ok boolean;
BEGIN
    IF fn = 'throttle' THEN
        SELECT allowed INTO ok FROM flashsale.throttle('hot', $BURST, $COUNT, '1 s');
    ELSE
        SELECT allowed INTO ok FROM flashsale.throttle_local('hot', $BURST, $COUNT, '1 s');
    END IF;
    IF ok THEN
        INSERT INTO admitted VALUES (fn, t0, clock_timestamp());
    END IF;
    RETURN ok;
END
\$\$;
CREATE TABLE refund_log (fn text NOT NULL, key text NOT NULL, kind text NOT NULL, q bigint NOT NULL);
-- every admission of the refund phase, rolled back or not (sequences are not transactional)
CREATE SEQUENCE admissions_throttle_tight;
CREATE SEQUENCE admissions_throttle_loose;
CREATE SEQUENCE admissions_throttle_local_tight;
CREATE SEQUENCE admissions_throttle_local_loose;
CREATE TABLE once_log (k text NOT NULL, got boolean NOT NULL, kind text NOT NULL, n bigint);
CREATE SEQUENCE once_true_rolled_back;" >/dev/null

#### 1. the rate under contention
echo "-- one key, $RATE_CLIENTS clients, ${RATE_SECS} s each: max_burst $BURST, $COUNT per second"
for fn in throttle throttle_local; do
    echo "SELECT try_admit('$fn');" > "$dir/rate_$fn.sql"
    chmod 644 "$dir/rate_$fn.sql"
    bench "rate $fn" "" "$RATE_SECS" "$RATE_CLIENTS" "rate_$fn.sql"
    attempts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$dir/pgbench-rate $fn.out")
    # generous: the first admitted call's start to the last one's end (the upper
    # bound); narrow: the latest start to the earliest end (the lower bound, so
    # that a call held up between its admission and its end cannot lower it)
    IFS='|' read -r admitted elapsed narrow < <(fs_psql "$port" "
        SELECT count(*), to_char(extract(epoch FROM max(t1) - min(t0)), 'FM990.000000'),
               to_char(extract(epoch FROM max(t0) - min(t1)), 'FM990.000000')
        FROM admitted WHERE fn = '$fn'")
    IFS='|' read -r bound floor95 < <(awk -v b="$BURST" -v c="$COUNT" -v e="$elapsed" -v n="$narrow" 'BEGIN {
        printf "%d|%d\n", b + 1 + int(c * e), int((b + 1 + int(c * n)) * 0.95 + 0.999999) }')
    echo "   $fn: $attempts calls, $admitted admitted over ${elapsed} s (${narrow} s narrow);" \
        "bound $((BURST + 1)) + floor($COUNT x $elapsed) = $bound; 95 % of the narrow bound = $floor95"
    check_true "$fn: admitted <= bound" "$admitted <= $bound" test "$admitted" -le "$bound"
    check_true "$fn: admitted >= 95 % of the narrow bound" "$admitted >= $floor95" test "$admitted" -ge "$floor95"
    check_true "$fn: the limit was the bottleneck (calls >= 3 x admitted)" \
        "$attempts calls" test "$attempts" -ge $((3 * admitted))
done

#### 2. refund_on_rollback
burst() { if [ "$1" = tight ]; then echo "$REFUND_TIGHT"; else echo "$REFUND_LOOSE"; fi; }
echo "-- refund_on_rollback: 16 clients x $REFUND_TXNS transactions, limits $((REFUND_TIGHT + 1)) and $((REFUND_LOOSE + 1)), 1 per hour"
# one admission of each function (quantity :q), logged when allowed, in the same (sub)transaction
admit_sql() { # kind quantity
    local fn key
    for fn in throttle throttle_local; do
        for key in tight loose; do
            echo "INSERT INTO refund_log (fn, key, kind, q) SELECT '$fn', '$key', '$1', $2 + 0 * nextval('admissions_${fn}_$key')
 FROM flashsale.$fn('$key', $(burst $key), 1, '1 hour', $2, true) WHERE allowed;"
        done
    done
}
{
    echo '\set q random(1, 3)'
    echo '\set s random(1, 4)'
    echo '\set r random(1, 3)'
    echo 'BEGIN;'
    admit_sql top :q
    echo 'SAVEPOINT a;'
    admit_sql 'savepoint a' 1
    echo 'SAVEPOINT b;'
    admit_sql 'savepoint b' 2
    echo 'RELEASE SAVEPOINT b;'
    # a quarter of the outer savepoints (with b released into them) roll back
    echo '\if :s = 1'
    echo 'ROLLBACK TO SAVEPOINT a;'
    echo '\else'
    echo 'RELEASE SAVEPOINT a;'
    echo '\endif'
    # a savepoint that always rolls back
    echo 'SAVEPOINT c;'
    admit_sql 'savepoint c (rolled back)' :q
    echo 'ROLLBACK TO SAVEPOINT c;'
    echo '\if :r = 1'
    admit_sql 'top (rolled back)' 1
    echo 'ROLLBACK;'
    echo '\else'
    echo 'COMMIT;'
    echo '\endif'
} > "$dir/refund.sql"
chmod 644 "$dir/refund.sql"
bench refund "$REFUND_TXNS" "" 16 refund.sql
fs_check "refund: committed rows of rolled-back kinds" \
    "$(fs_psql "$port" "SELECT count(*) FROM refund_log WHERE kind LIKE '%rolled back%'")" 0
for fn in throttle throttle_local; do
    for key in tight loose; do
        b=$(burst $key)
        IFS='|' read -r committed rows < <(fs_psql "$port" "
            SELECT coalesce(sum(q), 0), count(*) FROM refund_log WHERE fn = '$fn' AND key = '$key'")
        all=$(fs_psql "$port" "SELECT last_value FROM admissions_${fn}_$key")
        IFS='|' read -r remaining limit < <(fs_psql "$port" "
            SELECT remaining, \"limit\" FROM flashsale.$fn('$key', $b, 1, '1 hour', 0)")
        echo "   $fn '$key': $all admissions, $rows committed ($committed units), $((all - rows)) given back;" \
            "probe: limit $limit, remaining $remaining"
        fs_check "$fn '$key': remaining = limit - committed units" "$remaining" "$((limit - committed))"
        check_true "$fn '$key': some admissions were given back" "$((all - rows))" test $((all - rows)) -gt 0
        if [ "$key" = tight ]; then
            # what the last transactions gave back may be left unclaimed
            check_true "$fn '$key': the limit ran out" \
                "committed $committed of $limit" test "$committed" -ge $((limit - 200))
        fi
        # one more unit admitted iff remaining > 0, and then one less remaining
        if [ "$remaining" -gt 0 ]; then want="t|$((remaining - 1))"; else want="f|0"; fi
        fs_check "$fn '$key': one more unit" "$(fs_psql "$port" "
            SELECT allowed, remaining FROM flashsale.$fn('$key', $b, 1, '1 hour')")" "$want"
    done
done

#### 3. once() under rollbacks
echo "-- once(): 16 clients x $ONCE_TXNS transactions on $ONCE_KEYS keys, rollbacks"
# one call, logged; a true answer in work that will roll back is also counted
# in a sequence (not transactional), as the log row goes with the rollback
once_sql() { # key kind rolls-back(SQL boolean)
    echo "INSERT INTO once_log (k, got, kind, n)
 SELECT $1, g, CASE WHEN $3 THEN '$2 (rolled back)' ELSE '$2' END,
        CASE WHEN g AND $3 THEN nextval('once_true_rolled_back') END
 FROM flashsale.once($1, '1 hour') AS g;"
}
# a third of the transactions roll back
cat > "$dir/once_tx.sql" <<SQL
\\set k random(1, $ONCE_KEYS)
\\set r random(1, 3)
BEGIN;
$(once_sql "'o' || :k" top ":r = 1")
\\if :r = 1
ROLLBACK;
\\else
COMMIT;
\\endif
SQL
# a savepoint rolled back, then another one released (maybe the same key)
cat > "$dir/once_sp.sql" <<SQL
\\set k1 random(1, $ONCE_KEYS)
\\set k2 random(1, $ONCE_KEYS)
BEGIN;
SAVEPOINT a;
$(once_sql "'o' || :k1" savepoint true)
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
$(once_sql "'o' || :k2" savepoint false)
RELEASE SAVEPOINT b;
COMMIT;
SQL
# keys only ever called in transactions that roll back
cat > "$dir/once_rb.sql" <<SQL
\\set j random(1, 20)
BEGIN;
$(once_sql "'rb' || :j" 'rollback-only key' true)
ROLLBACK;
SQL
chmod 644 "$dir"/once_*.sql
bench once "$ONCE_TXNS" "" 16 once_tx.sql@3 once_sp.sql@2 once_rb.sql@1
IFS='|' read -r calls trues keys < <(fs_psql "$port" "
    SELECT count(*), count(*) FILTER (WHERE got), count(DISTINCT k) FILTER (WHERE got) FROM once_log")
rolled=$(fs_psql "$port" "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM once_true_rolled_back")
echo "   committed: $calls calls, $trues true on $keys keys; $rolled true calls rolled back"
fs_check "once: committed rows of rolled-back kinds" \
    "$(fs_psql "$port" "SELECT count(*) FROM once_log WHERE kind LIKE '%rolled back%'")" 0
fs_check "once: keys true in more than one committed transaction" "$(fs_psql "$port" "
    SELECT count(*) FROM (SELECT k FROM once_log WHERE got GROUP BY k HAVING count(*) > 1) d")" 0
check_true "once: some true calls were rolled back" "$rolled" test "$rolled" -gt 0
# the once keys in Redis == the keys some committed transaction got true for
fs_psql "$port" "SELECT DISTINCT format('once:{%s:%s}', length(k), k) FROM once_log WHERE got ORDER BY 1" \
    > "$dir/once_expected"
fs_redis "$rport" --scan --pattern 'once:*' > "$dir/once_redis"
LC_ALL=C sort -o "$dir/once_expected" "$dir/once_expected"
LC_ALL=C sort -o "$dir/once_redis" "$dir/once_redis"
fs_check "once: keys in Redis" "$(wc -l < "$dir/once_redis")" "$keys"
fs_check "once: keys in Redis but not committed true, and the reverse" \
    "$(LC_ALL=C comm -3 "$dir/once_expected" "$dir/once_redis" | wc -l)" 0
bad_ttl=$(sed 's/^/PTTL /' "$dir/once_redis" | fs_redis "$rport" | awk '!($1 > 0 && $1 <= 3600000)' | wc -l)
fs_check "once: keys whose ttl is not within (0, 1 hour]" "$bad_ttl" 0
# once() now: false on the committed keys, true (free) on every other
IFS='|' read -r wrong_taken wrong_free free < <(fs_psql "$port" "
    WITH keys AS (
        SELECT 'o' || g AS k FROM generate_series(1, $ONCE_KEYS) g
        UNION ALL SELECT 'rb' || g FROM generate_series(1, 20) g),
    probe AS MATERIALIZED (
        SELECT k, EXISTS (SELECT 1 FROM once_log l WHERE l.k = keys.k AND got) AS taken,
               flashsale.once(k, '1 hour') AS now_true
        FROM keys)
    SELECT count(*) FILTER (WHERE taken AND now_true), count(*) FILTER (WHERE NOT taken AND NOT now_true),
           count(*) FILTER (WHERE NOT taken)
    FROM probe")
echo "   probe: $free keys free (never committed true)"
fs_check "once: committed keys that answer true again" "$wrong_taken" 0
fs_check "once: other keys that do not answer true (not released)" "$wrong_free" 0
check_true "once: keys left free, the rolled-back-only ones among them" "$free" test "$free" -ge 20

#### 4. Redis down
echo "-- a refund after the admission's debt was paid by time"
# A savepoint admits 10 (a burst of 10, 10 a second: 1 s of debt), 1.3 s pass,
# another 10 are admitted (the first debt is paid), then the savepoint rolls
# back: nothing of the first admission is ahead of now, so nothing is given
# back, and the second one's debt (0.7 s or more) leaves 0 remaining, where a
# whole refund would leave 10.
for fn in throttle throttle_local; do
    fs_check "late refund: $fn" "$(fs_psql "$port" "
        BEGIN;
        SAVEPOINT a;
        SELECT allowed FROM flashsale.$fn('late', 9, 10, '1 s', 10, true);
        SELECT pg_sleep(1.3);
        SELECT allowed FROM flashsale.$fn('late', 9, 10, '1 s', 10);
        ROLLBACK TO a;
        SELECT allowed, remaining FROM flashsale.$fn('late', 9, 10, '1 s', 0);
        COMMIT" | tr '\n' ' ')" "BEGIN SAVEPOINT t  t ROLLBACK t|0 COMMIT "
done

echo "-- Redis stopped"
fs_psql "$port" "SELECT allowed FROM flashsale.throttle('up', 10, 1, '1 s')" >/dev/null
# A statement in a new backend. Sets OUT, STATE (SQLSTATE or ok), DETAIL, MS.
CT="-c flashsale.redis_connect_timeout=500"
ADDR="127.0.0.1:$rport"

# the session of the rollbacks: a refundable admission and a once() key while
# Redis is up, then (at the \! handshake) Redis is stopped, then rollbacks
handshake() { # name
    echo "\\! touch $dir/want_$1; while [ ! -e $dir/done_$1 ]; do sleep 0.02; done"
}
{
    echo "SET flashsale.redis_connect_timeout = 500;"
    echo "BEGIN;"
    echo "SELECT allowed FROM flashsale.throttle('down-refund', 10, 1, '1 hour', 1, true);"
    echo "SELECT flashsale.once('down-once-top', '1 hour');"
    echo "SAVEPOINT a;"
    echo "SELECT allowed FROM flashsale.throttle('down-refund-sp', 10, 1, '1 hour', 1, true);"
    echo "SELECT flashsale.once('down-once-sp', '1 hour');"
    handshake stop
    echo "\\set t0 \`date +%s%3N\`"
    echo "ROLLBACK TO SAVEPOINT a;"
    echo "\\set t1 \`date +%s%3N\`"
    echo "SELECT 'savepoint rollback ms ' || (:t1 - :t0);"
    echo "SELECT allowed FROM flashsale.throttle_local('down-local', 10, 1, '1 hour', 1, true);"
    echo "\\set t0 \`date +%s%3N\`"
    echo "ROLLBACK;"
    echo "\\set t1 \`date +%s%3N\`"
    echo "SELECT 'rollback ms ' || (:t1 - :t0);"
    echo "SELECT 'after', allowed, remaining FROM flashsale.throttle_local('down-local', 10, 1, '1 hour', 0);"
} > "$dir/session.sql"
chmod 644 "$dir/session.sql"
fs_as_pg psql -X -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -f "$dir/session.sql" > "$dir/session.out" 2>&1 &
session=$!
served=0
for _ in $(seq 1 1500); do
    if [ -e "$dir/want_stop" ]; then
        fs_redis_stop "$dir/redis"
        touch "$dir/done_stop"
        served=1
        break
    fi
    kill -0 "$session" 2>/dev/null || break
    sleep 0.02
done
fs_check "the session got to the Redis stop" "$served" 1
src=0
wait "$session" || src=$?
sed 's/^/   | /' "$dir/session.out"
fs_check "rollbacks while down: psql exit status" "$src" 0
check_true "rollbacks while down: no error or warning" "$(grep -c -E '^(ERROR|WARNING)' "$dir/session.out" || true)" \
    eval '! grep -q -E "^(ERROR|WARNING)" "$dir/session.out"'
for what in 'savepoint rollback' rollback; do
    ms=$(sed -n "s/^$what ms //p" "$dir/session.out")
    check_true "$what while down: within 1500 ms" "${ms:-?} ms" test "${ms:-99999}" -lt 1500
done
fs_check "rollbacks while down: throttle_local given back" \
    "$(grep '^after|' "$dir/session.out")" "after|t|11"

for q in "SELECT allowed FROM flashsale.throttle('down', 10, 1, '1 s')" \
         "SELECT flashsale.once('down-once', '1 hour')"; do
    fs_top "$CT" "$q"
    echo "   $q: $(grep -m1 '^ERROR' <<< "$OUT" || echo "$OUT") / $DETAIL (${MS} ms)"
    fs_check "down: $q: SQLSTATE" "$STATE" 08001
    check_true "down: $q: names $ADDR" "$DETAIL" eval '[[ "$OUT" == *"$ADDR"* ]]'
    check_true "down: $q: within 500 + 1000 ms" "${MS} ms" test "$MS" -lt 1500
done
fs_top "$CT -c flashsale.throttle_fail_open=on" \
    "SELECT allowed, \"limit\", remaining IS NULL, reset_after IS NULL FROM flashsale.throttle('down', 10, 1, '1 s')"
fs_check "down, fail open: throttle (allowed, limit, remaining NULL, reset_after NULL)" "$OUT" "t|11|t|t"
fs_top "$CT -c flashsale.throttle_fail_open=on" "SELECT flashsale.once('down-once', '1 hour')"
fs_check "down, fail open: once" "$OUT" t
fs_top "$CT -c flashsale.throttle_fail_open=on" "
    BEGIN; SELECT allowed FROM flashsale.throttle('down', 10, 1, '1 s', 1, true); SELECT flashsale.once('down-once', '1 hour');
    ROLLBACK"
fs_check "down, fail open: a refundable admission and a once() rolled back" "$STATE $(tr '\n' ' ' <<< "$OUT")" \
    "ok BEGIN t t ROLLBACK "
fs_top "$CT" "SELECT string_agg(allowed::text || '/' || remaining, ',')
           FROM generate_series(1, 3) g, LATERAL flashsale.throttle_local('down-local-2', 1, 1, '1 hour', 1 + 0 * g)"
fs_check "down: throttle_local works" "$OUT" "true/1,true/0,false/0"

echo "-- Redis restarted"
fs_redis_start "$dir/redis" "$rport"
fs_top "$CT" "SELECT allowed, remaining FROM flashsale.throttle('down', 10, 1, '1 s')"
fs_check "back: throttle" "$OUT" "t|10"
fs_top "$CT" "SELECT flashsale.once('down-once', '1 hour'), flashsale.once('down-once', '1 hour')"
fs_check "back: once, twice" "$OUT" "t|f"

exit $fail
