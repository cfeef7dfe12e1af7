#!/usr/bin/env bash
# Redis down, unreachable and hung, around stock decrements.
#  - Redis stopped: a decrement fails with SQLSTATE class 08 (address in the
#    detail) within flashsale.redis_connect_timeout; so do try_decrement_stock
#    and stock_level (no silent NULL);
#  - a port that never completes a connection: the connect timeout is honoured;
#  - Redis restarted on the same port, fresh and empty: decrements work again,
#    the product reloaded from the database truth;
#  - ONE backend sees Redis go away (error in a subtransaction and at top level)
#    and works again once it is back, also when Redis restarts while the
#    backend is idle with its connection open;
#  - Redis hung (CLIENT PAUSE, and SIGSTOP, which is what DEBUG SLEEP does but
#    Redis 7 refuses DEBUG by default) with flashsale.redis_timeout = 300: the
#    decrement fails with class 08 well before the hang ends, and once Redis
#    answers again the units of the failed transaction are back.
# After every phase: units left == set quantity - successful decrements, read
# as stock_level, db_left and the view's left (pool + allotment), nothing in
# flight.  Allotments of one unit (flashsale.allotment_max = 1), and each
# phase first gives the allotment back (drain: a pass with
# flashsale.allotment_idle = 0), so every decrement meets Redis (with larger
# allotments the units already allotted sell on while Redis is down: TAP 140).
source "$(dirname "$0")/../../scripts/lib.sh"

STOCK=100
fs_stack_start "flashsale.allotment_max = 1" "flashsale.allotment_idle = 0"
# a unit given back by a rollback stays in the allotment: back to the pool with it
drain() { fs_psql "$port" "SELECT flashsale.sync_stock()" >/dev/null; }
# units sold: what the pass folded into stock.quantity, and the ledger rows since
sold() {
    fs_psql "$port" "SELECT set_quantity - quantity + (SELECT coalesce(sum(quantity), 0) FROM flashsale.stock_ledger)
                     FROM flashsale.stock WHERE product_id = 1"
}
fs_psql "$port" "SELECT flashsale.set_stock(1, $STOCK)" >/dev/null

# attempt(step, query): run the query in a subtransaction, record the outcome,
# the SQLSTATE, message, detail, the backend and the milliseconds it took
# (the subtransaction's abort included).
fs_psql "$port" "
CREATE TABLE attempts (
    n        serial PRIMARY KEY,
    step     text NOT NULL,
    pid      int NOT NULL,
    result   bigint,
    sqlstate text,
    message  text,
    detail   text,
    ms       int NOT NULL
);
CREATE FUNCTION attempt(step text, q text) RETURNS text LANGUAGE plpgsql AS \$\$
DECLARE
    t0  timestamptz := clock_timestamp();
    r   bigint;
    st  text;
    msg text;
    det text;
BEGIN
    BEGIN
        EXECUTE q INTO r;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    END;
    INSERT INTO attempts (step, pid, result, sqlstate, message, detail, ms)
    VALUES (step, pg_backend_pid(), r, st, msg, det,
            (extract(epoch FROM clock_timestamp() - t0) * 1000)::int);
    RETURN coalesce(st || ' ' || msg, 'ok ' || r);
END
\$\$;" >/dev/null

expected=$STOCK   # set quantity - successful decrements
check_true() { # name condition-description bash-test...
    local name=$1 desc=$2
    shift 2
    if "$@"; then
        echo "ok: $name ($desc)"
    else
        echo "FAIL: $name ($desc)"
        fail=1
    fi
}

# A decrement that must fail with class 08 naming the address, within max_ms.
expect_08() { # name pgoptions sql address max_ms
    fs_top "$2" "$3"
    echo "   $1: $(grep -m1 '^ERROR' <<< "$OUT" || echo "$OUT") / $DETAIL (${MS} ms)"
    check_true "$1 fails with class 08" "$STATE" eval '[[ $STATE == 08* ]]'
    ADDR=$4
    check_true "$1 names $4" "$DETAIL" eval '[[ $DETAIL == *"$ADDR"* ]]'
    check_true "$1 fails within $5 ms" "${MS} ms" test "$MS" -lt "$5"
}

decrement_ok() { # name [pgoptions]
    fs_top "${2:-}" "SELECT flashsale.decrement_stock(1)"
    if [ "$STATE" = ok ]; then expected=$((expected - 1)); fi
    fs_check "$1: decrement_stock(1)" "$OUT" "$expected"
}

# units left three ways, nothing in flight, ledger == decrements
exact() { # label
    local level db redis inflight
    level=$(fs_psql "$port" "SELECT flashsale.stock_level(1)")
    IFS='|' read -r db redis inflight <<< "$(fs_psql "$port" "
        SELECT db_left, \"left\", in_flight FROM flashsale.stock_status WHERE product_id = 1")"
    fs_check "$1: stock_level(1)" "$level" "$expected"
    fs_check "$1: db_left" "$db" "$expected"
    fs_check "$1: left (pool + allotment)" "$redis" "$expected"
    fs_check "$1: in_flight" "$inflight" 0
    fs_check "$1: units sold (ledger, folded or not)" "$(sold)" \
        "$((STOCK - expected))"
}

CT="-c flashsale.redis_connect_timeout=500"
HT="-c flashsale.redis_timeout=300"

echo "-- Redis up"
decrement_ok "up"
exact "up"

echo "-- Redis stopped"
drain
fs_redis_stop "$dir/redis"
expect_08 "stopped: decrement_stock" "$CT" "SELECT flashsale.decrement_stock(1)" "127.0.0.1:$rport" 2000
expect_08 "stopped: try_decrement_stock" "$CT" "SELECT flashsale.try_decrement_stock(1)" "127.0.0.1:$rport" 2000
expect_08 "stopped: stock_level" "$CT" "SELECT flashsale.stock_level(1)" "127.0.0.1:$rport" 2000
fs_check "stopped: units sold (ledger, folded or not)" "$(sold)" "$((STOCK - expected))"

echo "-- a port that never completes a connection (full accept queue)"
bport=$(fs_free_port)
# listen, never accept, fill the accept queue until a connect hangs; exits by itself
perl -MIO::Socket::INET -e '
    my $l = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0],
                                  Listen => 1, ReuseAddr => 1) or die "listen: $!";
    my @c;
    for (1 .. 64) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $ARGV[0], Timeout => 0.3);
        last unless $s;
        push @c, $s;
    }
    $| = 1; print "ready\n"; sleep 30;' "$bport" > "$dir/blackhole.out" &
blackhole=$!
for _ in $(seq 1 100); do grep -q ready "$dir/blackhole.out" && break; sleep 0.05; done
expect_08 "blackhole: decrement_stock" "$CT -c flashsale.redis_port=$bport" \
    "SELECT flashsale.decrement_stock(1)" "127.0.0.1:$bport" 2000
check_true "blackhole: the connect timeout was waited for" "${MS} ms >= 500" test "$MS" -ge 500
kill "$blackhole" 2>/dev/null || true
wait "$blackhole" 2>/dev/null || true

echo "-- Redis restarted on the same port, empty"
fs_redis_start "$dir/redis" "$rport"
fs_check "restarted: keys in Redis" "$(fs_redis "$rport" DBSIZE)" 0
decrement_ok "restarted"
exact "restarted"

echo "-- one backend: Redis goes away and comes back"
# The session stops at each \! until this script has done the step through
# lib.sh (so that every Redis it starts is stopped at exit).
handshake() { # name: the psql line that waits for it
    echo "\\! touch $dir/want_$1; while [ ! -e $dir/done_$1 ]; do sleep 0.02; done"
}
serve() { # name command...: wait for the session to ask, do it, tell it
    local name=$1
    shift
    for _ in $(seq 1 1500); do
        if [ -e "$dir/want_$name" ]; then
            "$@"
            touch "$dir/done_$name"
            return 0
        fi
        kill -0 "$session" 2>/dev/null || return 1
        sleep 0.02
    done
    return 1
}
restart_redis() { fs_redis_stop "$dir/redis"; fs_redis_start "$dir/redis" "$rport"; }
drain_stop() { drain; fs_redis_stop "$dir/redis"; }
{
    echo "SET flashsale.redis_connect_timeout = 500;"
    echo "SELECT attempt('1 up', 'SELECT flashsale.decrement_stock(1)');"
    handshake stop
    echo "SELECT attempt('2 down', 'SELECT flashsale.decrement_stock(1)');"
    echo "SELECT attempt('3 down, try_', 'SELECT flashsale.try_decrement_stock(1)');"
    echo "\\set ON_ERROR_STOP 0"
    echo "\\set VERBOSITY verbose"
    echo "SELECT flashsale.decrement_stock(1);"
    echo "\\set ON_ERROR_STOP 1"
    handshake start
    echo "SELECT attempt('4 back', 'SELECT flashsale.decrement_stock(1)');"
    echo "SELECT attempt('5 back, again', 'SELECT flashsale.decrement_stock(1)');"
    # Redis restarted while this backend is idle with its connection open:
    # Redis is back, so the next call must work
    handshake restart
    echo "SELECT attempt('6 after a restart while idle', 'SELECT flashsale.decrement_stock(1)');"
    echo "SELECT attempt('7 after a restart while idle, again', 'SELECT flashsale.decrement_stock(1)');"
} > "$dir/session.sql"
chmod 644 "$dir/session.sql"
fs_as_pg psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -f "$dir/session.sql" > "$dir/session.out" 2>&1 &
session=$!
for s in stop start restart; do
    case $s in
        stop) cmd=(drain_stop) ;;
        start) cmd=(fs_redis_start "$dir/redis" "$rport") ;;
        restart) cmd=(restart_redis) ;;
    esac
    serve "$s" "${cmd[@]}" || { echo "FAIL: the session did not get to the Redis $s"; fail=1; }
done
src=0
wait "$session" || src=$?
sed 's/^/   | /' "$dir/session.out"
fs_check "session: psql exit status" "$src" 0
step() { fs_psql "$port" "SELECT $2 FROM attempts WHERE step = '$1'"; }
fs_check "session: one backend throughout" "$(fs_psql "$port" "SELECT count(DISTINCT pid) FROM attempts")" 1
fs_check "session: 1 up" "$(step '1 up' "coalesce(sqlstate, result::text)")" "$((expected - 1))"
for s in '2 down' '3 down, try_'; do
    check_true "session: $s fails with class 08" "$(step "$s" "sqlstate || ' ' || message")" \
        eval "[[ \$(step '$s' sqlstate) == 08* ]]"
    check_true "session: $s names 127.0.0.1:$rport" "$(step "$s" detail)" \
        eval "[[ \$(step '$s' detail) == *127.0.0.1:$rport* ]]"
    check_true "session: $s within 2000 ms" "$(step "$s" ms) ms" test "$(step "$s" ms)" -lt 2000
done
check_true "session: top-level decrement while down fails with class 08" \
    "$(grep -m1 'ERROR' "$dir/session.out")" grep -qE 'ERROR:  08[0-9A-Z]{3}: ' "$dir/session.out"
fs_check "session: 4 back" "$(step '4 back' "coalesce(sqlstate, result::text)")" "$((expected - 2))"
fs_check "session: 5 back" "$(step '5 back, again' "coalesce(sqlstate, result::text)")" "$((expected - 3))"
fs_check "session: 6 after a restart while idle" \
    "$(step '6 after a restart while idle' "coalesce(sqlstate || ' ' || message, result::text)")" "$((expected - 4))"
r7=$(step '7 after a restart while idle, again' "coalesce(sqlstate || ' ' || message, result::text)")
expected=$(( expected - $(fs_psql "$port" "SELECT count(result) FROM attempts") ))
fs_check "session: 7 after a restart while idle, again" "$r7" "$expected"
exact "session"

echo "-- Redis hung (flashsale.redis_timeout = 300)"
redis_pid() { cat "$dir/redis/redis.pid"; }
hang() { # how: pause (CLIENT PAUSE 3000) or stop (SIGSTOP for 3 s); returns at once
    drain
    if [ "$1" = pause ]; then
        fs_redis "$rport" CLIENT PAUSE 3000 >/dev/null
    else
        kill -STOP "$(redis_pid)"
        ( sleep 3; kill -CONT "$(redis_pid)" ) &
    fi
    HANG_END=$(( $(fs_now_ms) + 3000 ))
}
await_unhung() {
    local left=$(( HANG_END - $(fs_now_ms) ))
    [ "$left" -le 0 ] || sleep "$(awk "BEGIN { print $left / 1000 }")"
    # one PING answered means Redis is serving again; then let queued work drain
    fs_redis "$rport" PING >/dev/null
    sleep 0.3
}
hung_top() { # label how
    hang "$2"
    expect_08 "$1: decrement_stock" "$HT" "SELECT flashsale.decrement_stock(1)" "127.0.0.1:$rport" 1500
    await_unhung
    IFS='|' read -r skey akey < <(fs_psql "$port" "SELECT * FROM flashsale.stock_keys(1)")
    echo "   Redis after the hang: pool $(fs_redis "$rport" GET "$skey")," \
        "allotments {$(fs_redis "$rport" HGETALL "$akey" | paste -sd' ')}"
    exact "$1, after the hang"
    decrement_ok "$1, a later decrement"
    exact "$1, after a later decrement"
}
for how in pause stop; do
    # Right after a Redis restart only the scripts used since are loaded: the
    # decrement's, not the give-back's. The abort's give-back then meets
    # NOSCRIPT on a hung Redis.
    restart_redis
    decrement_ok "hung ($how), Redis restarted"
    hung_top "hung ($how), give-back script not loaded yet" "$how"

    # restarted again (so what the case above left behind is gone), and a
    # rollback first: it gives back, and loads the give-back script
    restart_redis
    fs_check "hung ($how): rolled-back decrement" "$(fs_psql "$port" "
        BEGIN; SELECT flashsale.decrement_stock(1) IS NOT NULL; ROLLBACK" | grep -vx -e BEGIN -e ROLLBACK)" t
    exact "hung ($how), after a rollback"
    hung_top "hung ($how), give-back script loaded" "$how"

    # in a subtransaction (savepoint abort path)
    hang "$how"
    fs_top "$HT" "SELECT attempt('hung $how, subtransaction', 'SELECT flashsale.decrement_stock(1)')"
    r=$(step "hung $how, subtransaction" "coalesce(sqlstate, 'ok') || ' ' || ms")
    if [ "$(step "hung $how, subtransaction" "result IS NOT NULL")" = t ]; then expected=$((expected - 1)); fi
    echo "   hung ($how), subtransaction: $r ms"
    check_true "hung ($how), subtransaction: fails with class 08 within 1500 ms" "$r ms" \
        eval '[[ $r == 08* ]] && [ "${r#* }" -lt 1500 ]'
    await_unhung
    exact "hung ($how), subtransaction, after the hang"
done

echo "-- statement_timeout interrupts a call waiting on a hung Redis"
# redis_timeout is long: only the statement_timeout can end the wait; the
# abort's clean-up is bounded by the connect timeout.
hang stop
fs_top "-c flashsale.redis_timeout=10000 -c flashsale.redis_connect_timeout=300 -c statement_timeout=400" \
    "SELECT flashsale.decrement_stock(1)"
echo "   statement_timeout: $(grep -m1 '^ERROR' <<< "$OUT") (${MS} ms)"
fs_check "statement_timeout: SQLSTATE" "$STATE" 57014
check_true "statement_timeout: ends within 1500 ms" "${MS} ms" test "$MS" -lt 1500
await_unhung
exact "statement_timeout, after the hang"
decrement_ok "statement_timeout, a later decrement"
exact "statement_timeout, after a later decrement"

echo "-- ROLLBACK on a hung Redis with the session's timeouts at 1 h: the clean-up has its own short deadline"
# A transaction holding a unit and a Redis lock; Redis is stopped for 6 s
# while it sleeps 2 s; then ROLLBACK.  Its clean-up (the unit back to the
# allotment, the lock released in Redis) must not wait the session's hour,
# nor until Redis wakes: each clean-up phase has a fixed 500 ms and stops at
# its first failure.
drain
( sleep 1; kill -STOP "$(redis_pid)"; sleep 6; kill -CONT "$(redis_pid)" ) &
stopper=$!
fs_top "-c flashsale.redis_timeout=3600000 -c flashsale.redis_connect_timeout=3600000" \
    "BEGIN; SELECT flashsale.decrement_stock(1); SELECT flashsale.redis_lock('rollback-hung', 2000); SELECT pg_sleep(2); ROLLBACK;"
echo "   rollback on a hung Redis: ${MS} ms in all (2,000 of them asleep)"
fs_check "rollback on a hung Redis: SQLSTATE" "$STATE" ok
check_true "rollback on a hung Redis: ends within 3500 ms" "${MS} ms" test "$MS" -lt 3500
wait "$stopper"
fs_redis "$rport" PING >/dev/null
# the unit went back to the allotment (no Redis needed); the lock's release
# was on the wire before the deadline, and its lease ends it anyway
exact "rollback on a hung Redis, after Redis woke"

exit $fail
