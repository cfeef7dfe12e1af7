-- Rate limits and double-submit guards: throttle(), throttle_local(), once(): the API,
-- burst and retry figures, refunds on rollback, keys, errors and their SQLSTATEs, fail-open.
\set VERBOSITY terse
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/test/sql/try.sql
-- Redis' TIME cannot be frozen: the limits here are one per 1000 hours (or slower), so
-- that the test's own run time changes no printed figure.  Intervals that depend on the
-- time are shown in hours, rounded to 0.1 (a margin of 3 minutes).
CREATE FUNCTION pg_temp.h(i interval) RETURNS numeric LANGUAGE sql AS $$
    SELECT round(extract(epoch FROM i) / 3600, 1) $$;
-- the Redis key of a throttle() or once() key under the current key_prefix
CREATE FUNCTION pg_temp.rkey(kind text, k text) RETURNS text LANGUAGE sql AS $$
    SELECT current_setting('flashsale.key_prefix') || kind || ':{' || octet_length(k) || ':' || k || '}' $$;
CREATE FUNCTION pg_temp.in_redis(kind text, k text) RETURNS boolean LANGUAGE sql AS $$
    SELECT flashsale.redis_call('EXISTS', pg_temp.rkey(kind, k)) = '1' $$;
-- throttle() and throttle_local() at a burst of max_burst + 1, then 1 per 1000 hours
CREATE FUNCTION pg_temp.t(k text, max_burst bigint, q bigint DEFAULT 1, refund boolean DEFAULT false)
RETURNS TABLE (allowed boolean, "limit" bigint, remaining bigint, retry_h numeric, reset_h numeric)
LANGUAGE sql AS $$
    SELECT allowed, "limit", remaining, pg_temp.h(retry_after), pg_temp.h(reset_after)
    FROM flashsale.throttle(k, max_burst, 1, '1000 hours', q, refund) $$;
CREATE FUNCTION pg_temp.tl(k text, max_burst bigint, q bigint DEFAULT 1, refund boolean DEFAULT false)
RETURNS TABLE (allowed boolean, "limit" bigint, remaining bigint, retry_h numeric, reset_h numeric)
LANGUAGE sql AS $$
    SELECT allowed, "limit", remaining, pg_temp.h(retry_after), pg_temp.h(reset_after)
    FROM flashsale.throttle_local(k, max_burst, 1, '1000 hours', q, refund) $$;
-- this file's keys all have "th:" after their length: left-overs of an earlier run go
-- (throttle_local's keys belong to the database, which pg_regress creates afresh)
SELECT flashsale.redis_call('EVAL', $$local n = 0
    for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('DEL', k) end
    return 0$$, '0', '*{*:th:*') AS cleaned;

-- the functions, granted to no one; fail-open is a superuser's setting, the table's
-- size is read at server start
SELECT p.oid::regprocedure AS function, has_function_privilege('public', p.oid, 'EXECUTE') AS public_may
FROM pg_proc p WHERE p.pronamespace = 'flashsale'::regnamespace
  AND p.proname IN ('throttle', 'throttle_local', 'once') ORDER BY 1::text;
SELECT name, setting, context FROM pg_settings
WHERE name IN ('flashsale.throttle_fail_open', 'flashsale.max_throttle_keys') ORDER BY 1;

-- a burst of max_burst + 1, then count per period: the first call of a new key is exact
SELECT * FROM flashsale.throttle('th:a', 2, 1, '1000 hours');
-- then 2 more, and the 4th is limited: it may retry in a period, all is back in 3
SELECT * FROM pg_temp.t('th:a', 2);
SELECT * FROM pg_temp.t('th:a', 2);
SELECT * FROM pg_temp.t('th:a', 2);
SELECT * FROM pg_temp.t('th:a', 2);
-- the key in Redis: "throttle:{<byte length>:<key>}", expiring when back at full burst
-- (at the end of that second)
SELECT flashsale.redis_call('EXISTS', 'throttle:{4:th:a}') AS "throttle:{4:th:a}";
SELECT flashsale.redis_call('PTTL', 'throttle:{4:th:a}')::bigint
       BETWEEN (3000 - 0.1) * 3600000 AND 3000 * 3600000::bigint + 1000 AS expires_in_3000_hours;
-- two keys are independent
SELECT * FROM pg_temp.t('th:b', 2);
SELECT * FROM pg_temp.t('th:a', 2);
-- the period is divided by count: 10 per 10000 hours is 1 per 1000 hours; a month is 30 days
SELECT * FROM flashsale.throttle('th:rate', 0, 10, '10000 hours');
SELECT allowed, remaining, pg_temp.h(retry_after) AS retry_h FROM flashsale.throttle('th:rate', 0, 10, '10000 hours');
SELECT * FROM flashsale.throttle('th:month', 0, 1, '1 month');
SELECT * FROM flashsale.throttle('th:month2', 1, 2, '1 mon 2 days');

-- quantity > 1: a burst of 5 taken 3, then 3 more is limited (retry in one period:
-- 2 are left), 2 pass, then nothing is left
SELECT * FROM pg_temp.t('th:q', 4, 3);
SELECT * FROM pg_temp.t('th:q', 4, 3);
SELECT * FROM pg_temp.t('th:q', 4, 2);
SELECT * FROM pg_temp.t('th:q', 4, 1);
-- quantity 0 probes without consuming: a new key is at full burst and stays unwritten
SELECT * FROM flashsale.throttle('th:probe', 2, 1, '1000 hours', 0);
SELECT pg_temp.in_redis('throttle', 'th:probe') AS written;
SELECT * FROM pg_temp.t('th:probe', 2);
SELECT * FROM pg_temp.t('th:probe', 2, 0);
SELECT * FROM pg_temp.t('th:probe', 2, 0);
SELECT * FROM pg_temp.t('th:probe', 2);
-- (a probe of a key with nothing left is allowed: it takes nothing)
SELECT * FROM pg_temp.t('th:q', 4, 0);
-- a quantity above the burst can never be allowed: no retry_after, nothing taken
SELECT * FROM pg_temp.t('th:probe', 2, 4);
SELECT * FROM pg_temp.t('th:big', 2, 4);
SELECT * FROM pg_temp.t('th:big', 2, 9223372036854775807);
SELECT pg_temp.in_redis('throttle', 'th:big') AS written;
-- exactly the burst passes at once
SELECT * FROM pg_temp.t('th:big', 2, 3);

-- key_prefix changes the Redis key: another limit
SET flashsale.key_prefix = 'app1:';
SELECT * FROM pg_temp.t('th:a', 2);
SELECT flashsale.redis_call('EXISTS', 'app1:throttle:{4:th:a}') AS "app1:throttle:{4:th:a}";
RESET flashsale.key_prefix;
SELECT * FROM pg_temp.t('th:a', 2, 0);
-- keys are byte strings: the length is in bytes, nothing is cut
SELECT allowed, remaining FROM pg_temp.t('th:é', 0);
SELECT flashsale.redis_call('EXISTS', 'throttle:{5:th:é}') AS "throttle:{5:th:é}";
SELECT allowed, remaining FROM pg_temp.t('th:' || repeat('k', 253), 0);
SELECT pg_temp.in_redis('throttle', 'th:' || repeat('k', 253)) AS key_256_bytes;
SELECT allowed, remaining FROM pg_temp.t('th:' || repeat('é', 126) || 'k', 0);
SELECT pg_temp.in_redis('throttle', 'th:' || repeat('é', 126) || 'k') AS key_256_bytes;

-- throttle_local: the same figures, step by step, in this instance's shared memory
-- (one statement per step: a join could memoize a call)
CREATE FUNCTION pg_temp.both(k text, max_burst bigint, q bigint)
RETURNS TABLE (allowed boolean, "limit" bigint, remaining bigint, retry_h numeric, reset_h numeric,
               local_same boolean)
LANGUAGE plpgsql AS $$
DECLARE r record; l record;
BEGIN
    SELECT * INTO r FROM pg_temp.t(k, max_burst, q);
    SELECT * INTO l FROM pg_temp.tl(k, max_burst, q);
    RETURN QUERY SELECT r.allowed, r."limit", r.remaining, r.retry_h, r.reset_h, r IS NOT DISTINCT FROM l;
END $$;
SELECT * FROM pg_temp.both('th:same', 2, 1);
SELECT * FROM pg_temp.both('th:same', 2, 0);
SELECT * FROM pg_temp.both('th:same', 2, 2);
SELECT * FROM pg_temp.both('th:same', 2, 1);
SELECT * FROM pg_temp.both('th:same', 2, 0);
SELECT * FROM pg_temp.both('th:same', 2, 4);
SELECT * FROM pg_temp.both('th:same', 2, 0);
SELECT * FROM pg_temp.both('th:same2', 4, 3);
SELECT * FROM pg_temp.both('th:same2', 4, 3);
SELECT * FROM pg_temp.both('th:same2', 4, 2);
SELECT * FROM flashsale.throttle_local('th:local', 2, 1, '1000 hours');
SELECT * FROM flashsale.throttle_local('th:month', 0, 1, '1 month');
SELECT * FROM pg_temp.tl('th:big', 2, 4);
SELECT * FROM pg_temp.tl('th:big', 2, 3);
SELECT * FROM pg_temp.tl('th:big', 2);
-- Redis is not asked
SELECT pg_temp.in_redis('throttle', 'th:local') AS in_redis;

-- a key expires at the end of the second its TAT falls in; a write whose TAT stays in
-- the stored one's second keeps the expiry (SET KEEPTTL), one that leaves it sets it anew
CREATE FUNCTION pg_temp.expiry(k text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN e % 1000 <> 0 THEN 'not at a whole second: ' || e
                WHEN e * 1000 < tat THEN 'before the TAT'
                WHEN e * 1000 - tat >= 1000000 THEN 'a second or more after the TAT'
                ELSE 'the end of the TAT''s second' END
    FROM (SELECT flashsale.redis_call('PEXPIRETIME', pg_temp.rkey('throttle', k))::bigint AS e,
                 flashsale.redis_call('GET', pg_temp.rkey('throttle', k))::bigint AS tat) x $$;
SELECT allowed FROM flashsale.throttle('th:exp', 1000, 1, '1 s', 5);
SELECT pg_temp.expiry('th:exp');
-- a TAT 10.5 s ahead with a far expiry of our own: 1 us more stays in its second
SELECT flashsale.redis_call('EVAL', $$
    local t = redis.call('TIME')
    local tat = (tonumber(t[1]) + 10) * 1000000 + 500000
    return redis.call('SET', KEYS[1], tat, 'PXAT', 4000000000000)$$, '1',
    pg_temp.rkey('throttle', 'th:exp')) AS far_expiry_set;
SELECT allowed FROM flashsale.throttle('th:exp', 100000000, 1000000, '1 s');
SELECT flashsale.redis_call('PEXPIRETIME', pg_temp.rkey('throttle', 'th:exp')) AS expiry_kept;
-- 2 s more leaves it: the expiry follows the TAT again
SELECT allowed FROM flashsale.throttle('th:exp', 100000000, 1000000, '1 s', 2000000);
SELECT pg_temp.expiry('th:exp');
-- a refund writes the same expiry
BEGIN;
SELECT allowed FROM flashsale.throttle('th:exp', 100000000, 1000000, '1 s', 3000000, true);
ROLLBACK;
SELECT pg_temp.expiry('th:exp');

-- refund_on_rollback: a rolled-back transaction gives back what it was admitted
BEGIN;
SELECT * FROM pg_temp.t('th:rb', 2, 1, true);
SELECT * FROM pg_temp.t('th:rb', 2, 1, true);
ROLLBACK;
SELECT * FROM pg_temp.t('th:rb', 2, 0);
SELECT pg_temp.in_redis('throttle', 'th:rb') AS in_redis;
-- only what it took: a committed admission stays
SELECT * FROM pg_temp.t('th:rb', 2);
BEGIN;
SELECT * FROM pg_temp.t('th:rb', 2, 1, true);
ROLLBACK;
SELECT * FROM pg_temp.t('th:rb', 2, 0);
-- a committed one is kept
BEGIN;
SELECT * FROM pg_temp.t('th:rb', 2, 1, true);
COMMIT;
SELECT * FROM pg_temp.t('th:rb', 2, 0);
-- a limited call took nothing and gives nothing back (only the one admitted is refunded)
BEGIN;
SELECT * FROM pg_temp.t('th:rb', 2, 2, true);
SELECT * FROM pg_temp.t('th:rb', 2, 1, true);
SELECT * FROM pg_temp.t('th:rb', 2, 1, true);
ROLLBACK;
SELECT * FROM pg_temp.t('th:rb', 2, 0);
-- without refund_on_rollback the attempt counts
SELECT * FROM pg_temp.t('th:norb', 2, 0);
BEGIN;
SELECT * FROM pg_temp.t('th:norb', 2);
SELECT * FROM pg_temp.t('th:norb', 2, 1, false);
ROLLBACK;
SELECT * FROM pg_temp.t('th:norb', 2, 0);
-- savepoints: the inner one rolled back is refunded, the outer admission kept
BEGIN;
SELECT * FROM pg_temp.t('th:sp', 2, 1, true);
SAVEPOINT s;
SELECT * FROM pg_temp.t('th:sp', 2, 1, true);
SELECT * FROM pg_temp.t('th:sp', 2, 1, true);
ROLLBACK TO s;
SELECT * FROM pg_temp.t('th:sp', 2, 0);
COMMIT;
SELECT * FROM pg_temp.t('th:sp', 2, 0);
-- a released savepoint hands its admissions to its parent: their rollback refunds them
BEGIN;
SAVEPOINT a;
SAVEPOINT b;
SELECT * FROM pg_temp.t('th:rel', 2, 2, true);
RELEASE b;
SELECT * FROM pg_temp.t('th:rel', 2, 0);
ROLLBACK TO a;
SELECT * FROM pg_temp.t('th:rel', 2, 0);
SAVEPOINT c;
SELECT * FROM pg_temp.t('th:rel', 2, 1, true);
RELEASE c;
ROLLBACK;
SELECT * FROM pg_temp.t('th:rel', 2, 0);
SELECT pg_temp.in_redis('throttle', 'th:rel') AS in_redis;
-- an error rolls back too, and PL/pgSQL's exception blocks are savepoints
BEGIN;
SELECT * FROM pg_temp.t('th:err_rb', 2, 1, true);
SELECT 1 / 0;
ROLLBACK;
SELECT * FROM pg_temp.t('th:err_rb', 2, 0);
DO $$
DECLARE r record;
BEGIN
    BEGIN
        PERFORM flashsale.throttle('th:plpgsql', 2, 1, '1000 hours', 3, true);
        SELECT * INTO r FROM pg_temp.t('th:plpgsql', 2, 0);
        RAISE NOTICE 'in the block: remaining %', r.remaining;
        RAISE division_by_zero;
    EXCEPTION WHEN division_by_zero THEN
        SELECT * INTO r FROM pg_temp.t('th:plpgsql', 2, 0);
        RAISE NOTICE 'after the error: remaining %', r.remaining;
    END;
END $$;
-- throttle_local's admissions are refunded the same way
BEGIN;
SELECT * FROM pg_temp.tl('th:lrb', 2, 1, true);
SAVEPOINT s;
SELECT * FROM pg_temp.tl('th:lrb', 2, 2, true);
ROLLBACK TO s;
SELECT * FROM pg_temp.tl('th:lrb', 2, 0);
SAVEPOINT t;
SELECT * FROM pg_temp.tl('th:lrb', 2, 1, true);
RELEASE t;
ROLLBACK;
SELECT * FROM pg_temp.tl('th:lrb', 2, 0);
BEGIN;
SELECT * FROM pg_temp.tl('th:lrb', 2, 1, true);
SELECT * FROM pg_temp.tl('th:lrb', 2, 1, false);
COMMIT;
BEGIN;
SELECT * FROM pg_temp.tl('th:lrb', 2, 1, false);
ROLLBACK;
SELECT * FROM pg_temp.tl('th:lrb', 2, 0);

-- once(): true the first time within ttl, false for repeats
SELECT flashsale.once('th:o1', '1 hour') AS first, flashsale.once('th:o1', '1 hour') AS again;
SELECT flashsale.once('th:o1', '1 hour') AS later;
-- its key: "once:{<byte length>:<key>}", expiring after ttl (PX, rounded up to a millisecond)
SELECT flashsale.redis_call('EXISTS', 'once:{5:th:o1}') AS "once:{5:th:o1}";
SELECT flashsale.redis_call('PTTL', 'once:{5:th:o1}')::bigint BETWEEN 3590000 AND 3600000 AS pttl_1_hour;
SELECT flashsale.once('th:omonth', '1 month 1.5 ms') AS first,
       flashsale.redis_call('PTTL', pg_temp.rkey('once', 'th:omonth'))::bigint
       BETWEEN 2592000002 - 10000 AND 2592000002 AS pttl_30_days_2_ms;
SELECT flashsale.once('th:oshort', '100 ms') AS first;
SELECT pg_sleep(0.3);
SELECT flashsale.once('th:oshort', '100 ms') AS after_ttl;
-- a throttle key and a once key of one name are not the same key
SELECT allowed FROM pg_temp.t('th:o1', 0);
-- a rolled-back transaction releases the key, so that the retry passes
BEGIN;
SELECT flashsale.once('th:o2', '1 hour') AS first, flashsale.once('th:o2', '1 hour') AS again;
ROLLBACK;
SELECT pg_temp.in_redis('once', 'th:o2') AS in_redis;
SELECT flashsale.once('th:o2', '1 hour') AS after_rollback;
-- a repeat that got false releases nothing
BEGIN;
SELECT flashsale.once('th:o2', '1 hour') AS repeat;
ROLLBACK;
SELECT flashsale.once('th:o2', '1 hour') AS repeat;
-- a savepoint rolled back releases its key, the commit keeps the one taken after
BEGIN;
SAVEPOINT s;
SELECT flashsale.once('th:o3', '1 hour') AS in_savepoint;
ROLLBACK TO s;
SELECT flashsale.once('th:o3', '1 hour') AS after_rollback_to;
COMMIT;
SELECT flashsale.once('th:o3', '1 hour') AS after_commit;
-- a released savepoint, then a rollback: released
BEGIN;
SAVEPOINT s;
SELECT flashsale.once('th:o4', '1 hour') AS in_savepoint;
RELEASE s;
ROLLBACK;
SELECT flashsale.once('th:o4', '1 hour') AS after_rollback;
-- only released if still its own: overwritten meanwhile, the rollback leaves it
BEGIN;
SELECT flashsale.once('th:o5', '1 hour') AS first;
SELECT flashsale.redis_call('SET', pg_temp.rkey('once', 'th:o5'), 'someone else') AS overwritten;
ROLLBACK;
SELECT flashsale.redis_call('GET', pg_temp.rkey('once', 'th:o5')) AS value;
SELECT flashsale.once('th:o5', '1 hour') AS after_rollback;

-- refunds and releases go to the keys taken, whatever key_prefix says at the rollback
BEGIN;
SELECT * FROM pg_temp.t('th:pfx', 2, 1, true);
SET LOCAL flashsale.key_prefix = 'app2:';
SELECT flashsale.once('th:opfx', '1 hour') AS first;
ROLLBACK;
SELECT * FROM pg_temp.t('th:pfx', 2, 0);
SELECT pg_temp.in_redis('throttle', 'th:pfx') AS throttle_key,
       flashsale.redis_call('EXISTS', 'app2:once:{7:th:opfx}') AS "app2:once:{7:th:opfx}";

-- PREPARE TRANSACTION is refused with a refund or a once() key pending (0A000); the
-- transaction is rolled back and gives them back
\set VERBOSITY sqlstate
BEGIN;
SELECT * FROM pg_temp.t('th:prep', 2, 2, true);
SELECT flashsale.once('th:oprep', '1 hour') AS first;
PREPARE TRANSACTION 'th_refused';
\set VERBOSITY terse
SELECT count(*) AS prepared FROM pg_prepared_xacts;
SELECT * FROM pg_temp.t('th:prep', 2, 0);
SELECT pg_temp.in_redis('throttle', 'th:prep') AS throttle_key, pg_temp.in_redis('once', 'th:oprep') AS once_key;
\set VERBOSITY sqlstate
BEGIN;
SELECT * FROM pg_temp.tl('th:lprep', 2, 2, true);
PREPARE TRANSACTION 'th_refused';
BEGIN;
SELECT flashsale.once('th:oprep', '1 hour') AS first;
PREPARE TRANSACTION 'th_refused';
\set VERBOSITY terse
SELECT * FROM pg_temp.tl('th:lprep', 2, 0);
SELECT flashsale.once('th:oprep', '1 hour') AS after_refusal;
-- with nothing to give back it can be prepared: no refund asked, a limited call, a
-- probe, a savepoint rolled back, a once() that answered false
BEGIN;
SELECT allowed FROM pg_temp.t('th:prep', 2, 1, false);
SELECT allowed FROM pg_temp.t('th:a', 2, 1, true);
SELECT allowed FROM pg_temp.t('th:prep', 2, 0, true);
SAVEPOINT s;
SELECT allowed FROM pg_temp.t('th:prep', 2, 1, true);
SELECT allowed FROM pg_temp.tl('th:lprep', 2, 1, true);
SELECT flashsale.once('th:oprep2', '1 hour') AS first;
ROLLBACK TO s;
SELECT flashsale.once('th:oprep', '1 hour') AS repeat;
PREPARE TRANSACTION 'th_ok';
SELECT gid FROM pg_prepared_xacts;
COMMIT PREPARED 'th_ok';
SELECT * FROM pg_temp.t('th:prep', 2, 0);
SELECT * FROM pg_temp.tl('th:lprep', 2, 0);
SELECT flashsale.once('th:oprep2', '1 hour') AS released;

-- errors: each with its SQLSTATE, checked before Redis is asked: nothing is written
SELECT pg_temp.try($$SELECT flashsale.throttle(NULL, 2, 1, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', NULL, 1, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, NULL, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, 1, NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, 1, '1 hour', NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, 1, '1 hour', 1, NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', -1, 1, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, 0, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, -5, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, 1, '0')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, 1, '-1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, 1, '1 day -25 hours')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, 1, '1 hour', -1)$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('', 2, 1, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:' || repeat('k', 254), 2, 1, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:' || repeat('é', 127), 2, 1, '1 hour')$$);
-- at most one per microsecond (a million a second passes, probed)
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, 1000001, '1 second')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, 9223372036854775807, '1000 years')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 2, 1000000, '1 second', 0)$$);
-- T x (max_burst + 1) at most 2^50 us: 2^50 one-microsecond cells pass (probed), one more not
SELECT * FROM flashsale.throttle('th:err', 1125899906842623, 1000000, '1 second', 0);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 1125899906842624, 1000000, '1 second', 0)$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 9223372036854775807, 1, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:err', 0, 1, '40 years')$$);
-- throttle_local checks the same
SELECT pg_temp.try($$SELECT flashsale.throttle_local(NULL, 2, 1, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle_local('th:err', 2, 1, '1 hour', 1, NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.throttle_local('th:err', -1, 1, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle_local('th:err', 2, 0, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle_local('th:err', 2, 1, '0')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle_local('th:err', 2, 1, '1 hour', -1)$$);
SELECT pg_temp.try($$SELECT flashsale.throttle_local('', 2, 1, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle_local('th:' || repeat('k', 254), 2, 1, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle_local('th:err', 2, 1000001, '1 second')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle_local('th:err', 0, 1, '40 years')$$);
-- once()
SELECT pg_temp.try($$SELECT flashsale.once(NULL, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.once('th:err', NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.once('th:err', '0')$$);
SELECT pg_temp.try($$SELECT flashsale.once('th:err', '-1 ms')$$);
SELECT pg_temp.try($$SELECT flashsale.once('th:err', '40 years')$$);
SELECT pg_temp.try($$SELECT flashsale.once('', '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.once('th:' || repeat('k', 254), '1 hour')$$);
-- nothing of them is in Redis or in the local table
SELECT pg_temp.in_redis('throttle', 'th:err') AS throttle_key, pg_temp.in_redis('once', 'th:err') AS once_key,
       pg_temp.in_redis('throttle', 'th:' || repeat('k', 254)) AS long_key;
SELECT * FROM flashsale.throttle_local('th:err', 2, 1, '1000 hours', 0);
-- one error in full
\set VERBOSITY default
SELECT * FROM flashsale.throttle('th:err', 2, 1000001, '1 second');
SELECT * FROM flashsale.throttle('th:' || repeat('k', 254), 2, 1, '1 hour');
\set VERBOSITY terse

-- Redis unreachable: class 08 (08001, could not connect), and throttle_local does not mind
SELECT * FROM pg_temp.t('th:down', 2);
SET flashsale.redis_port = 1;
SELECT pg_temp.try($$SELECT flashsale.throttle('th:down', 2, 1, '1000 hours')$$);
SELECT pg_temp.try($$SELECT flashsale.throttle('th:down', 2, 1, '1000 hours', 0)$$);
SELECT pg_temp.try($$SELECT flashsale.once('th:odown', '1 hour')$$);
SELECT * FROM pg_temp.tl('th:local', 2);
-- flashsale.throttle_fail_open: throttle() allows (limit shown, the rest NULL), once() is true
SET flashsale.throttle_fail_open = on;
SELECT * FROM flashsale.throttle('th:down', 2, 1, '1000 hours');
SELECT * FROM flashsale.throttle('th:down', 2, 1, '1000 hours', 4);
SELECT flashsale.once('th:odown', '1 hour') AS first, flashsale.once('th:odown', '1 hour') AS again;
-- in a transaction, with a refund asked: nothing pending, it can even be prepared
BEGIN;
SELECT * FROM flashsale.throttle('th:down', 2, 1, '1000 hours', 1, true);
PREPARE TRANSACTION 'th_open';
COMMIT PREPARED 'th_open';
-- arguments are still checked
SELECT pg_temp.try($$SELECT flashsale.throttle('th:down', 2, 0, '1 hour')$$);
SELECT pg_temp.try($$SELECT flashsale.once('', '1 hour')$$);
SELECT * FROM pg_temp.tl('th:local', 2);
RESET flashsale.redis_port;
-- Redis reachable, fail-open changes nothing: figures, refunds
BEGIN;
SELECT * FROM pg_temp.t('th:down', 2, 1, true);
SAVEPOINT s;
SELECT * FROM pg_temp.t('th:down', 2, 1, true);
ROLLBACK TO s;
SELECT * FROM pg_temp.t('th:down', 2, 0);
ROLLBACK;
SELECT * FROM pg_temp.t('th:down', 2, 0);
SELECT pg_temp.in_redis('once', 'th:odown') AS once_key;
RESET flashsale.throttle_fail_open;
-- a rollback that cannot reach Redis to give back: no error, the admission keeps counting
BEGIN;
SELECT * FROM pg_temp.t('th:lost', 2, 1, true);
SELECT flashsale.once('th:olost', '1 hour') AS first;
SET LOCAL flashsale.redis_port = 1;
ROLLBACK;
SELECT * FROM pg_temp.t('th:lost', 2, 0);
SELECT flashsale.once('th:olost', '1 hour') AS repeat;

-- throttle_local's table (flashsale.max_throttle_keys, 10000 here) full: keys back at
-- full burst go first, and only they when they make room enough
SELECT * FROM pg_temp.tl('th:full', 2);
DO $$
BEGIN
    FOR i IN 1 .. 10000 LOOP
        PERFORM flashsale.throttle_local('th:ms:' || i, 0, 1, '1 ms');
    END LOOP;
END $$;
SELECT pg_sleep(0.05);
SELECT * FROM pg_temp.tl('th:full', 2, 0);
-- then the least recently used, a twentieth of the table at once: they lose their debt
DO $$
BEGIN
    FOR i IN 1 .. 10000 LOOP
        PERFORM flashsale.throttle_local('th:lru:' || i, 0, 1, '1000 hours');
    END LOOP;
END $$;
SELECT count(*) FILTER (WHERE remaining = 1) BETWEEN 1 AND 500 AS evicted_one_batch,
       count(*) FILTER (WHERE remaining = 1 AND i > 1000) AS evicted_late,
       bool_and(remaining = 1) FILTER (WHERE i = 1) AS first_evicted,
       bool_and(remaining = 0) FILTER (WHERE i = 10000) AS last_kept
FROM generate_series(1, 10000) i, LATERAL flashsale.throttle_local('th:lru:' || i, 0, 1, '1000 hours', 0);
SELECT * FROM pg_temp.tl('th:full', 2, 0);
