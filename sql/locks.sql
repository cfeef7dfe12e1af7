-- Named advisory locks: API, reentrancy, key space, errors.
\set VERBOSITY terse
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/test/sql/try.sql

-- session-level, reentrant; release_lock undoes one acquisition
SELECT flashsale.get_lock('order:42'), flashsale.get_lock('order:42', 0);
SELECT flashsale.is_free_lock('order:42'), flashsale.is_used_lock('order:42') = pg_backend_pid() AS mine;
SELECT name, kind, holder_pid = pg_backend_pid() AS mine, held_since IS NOT NULL AS since, waiting_pids
FROM flashsale.locks;
SELECT flashsale.release_lock('order:42'), flashsale.is_free_lock('order:42');
SELECT flashsale.release_lock('order:42'), flashsale.is_free_lock('order:42');
SELECT flashsale.release_lock('order:42');        -- nobody holds it: NULL, as MySQL's RELEASE_LOCK
SELECT count(*) FROM flashsale.locks;

-- release_all_locks counts every session-level acquisition
SELECT flashsale.get_lock('a'), flashsale.get_lock('b'), flashsale.get_lock('a', 10);
SELECT flashsale.release_all_locks(), flashsale.release_all_locks();
SELECT flashsale.is_free_lock('a'), flashsale.is_free_lock('b');

-- transaction-level: gone at the end of the transaction, not released by release_lock
BEGIN;
SELECT flashsale.get_xact_lock('batch'), flashsale.get_xact_lock('batch');
SELECT flashsale.release_lock('batch'), flashsale.release_all_locks();
SELECT flashsale.is_used_lock('batch') = pg_backend_pid() AS mine;
COMMIT;
SELECT flashsale.is_free_lock('batch');
BEGIN;
SELECT flashsale.get_xact_lock('batch');
ROLLBACK;
SELECT flashsale.is_free_lock('batch');

-- an error rolls back the transaction-level lock with it, and a savepoint's
-- rollback what it took; a session-level lock outlives the failed transaction,
-- counted once
BEGIN;
SELECT flashsale.get_xact_lock('err'), flashsale.get_lock('err:s');
SELECT 1 / 0;
ROLLBACK;
SELECT flashsale.is_free_lock('err'), flashsale.release_lock('err:s'), flashsale.release_lock('err:s');
BEGIN;
SAVEPOINT sp;
SELECT flashsale.get_xact_lock('err:sp');
ROLLBACK TO SAVEPOINT sp;
SELECT flashsale.is_free_lock('err:sp');
COMMIT;

-- flashsale's key space never meets pg_advisory_lock's
SELECT pg_advisory_lock(hashtext('k')), pg_advisory_lock(0), pg_advisory_lock(0, 0);
SELECT flashsale.get_lock('k', 0);
-- (objsubid is int2: named locks, 0xF504, read -2812; -2810, 0xF506, is the
-- witness of this session's session-level named locks)
SELECT objsubid, count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
GROUP BY objsubid ORDER BY objsubid;
-- but they are advisory locks: pg_advisory_unlock_all() (and DISCARD ALL) release them too;
-- release_lock says nobody holds the name (NULL), release_all_locks counts nothing
SELECT pg_advisory_unlock_all();
SELECT flashsale.is_free_lock('k'), flashsale.release_lock('k'), flashsale.release_all_locks();
-- a name taken again afterwards counts from one: release_all_locks releases it once
SELECT flashsale.get_lock('k');
SELECT flashsale.release_all_locks(), flashsale.is_free_lock('k');
-- the same without asking in between: four names, two of them twice, released
-- behind flashsale's back, then two taken again; exactly those two are released
SELECT flashsale.get_lock('u1'), flashsale.get_lock('u1'), flashsale.get_lock('u2'),
       flashsale.get_lock('u2'), flashsale.get_lock('u3'), flashsale.get_lock('u4');
SELECT pg_advisory_unlock_all();
SELECT flashsale.get_lock('u1'), flashsale.get_lock('u3');
SELECT flashsale.release_all_locks(), flashsale.release_all_locks();
SELECT count(*) AS advisory_locks_left FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid();
SELECT flashsale.release_lock('u1');

-- names are case-sensitive (PostgreSQL's text compares exactly): two locks
SELECT flashsale.get_lock('Order:1', 0), flashsale.get_lock('order:1', 0);
SELECT name FROM flashsale.locks WHERE name ILIKE 'order:1' ORDER BY name COLLATE "C";
SELECT flashsale.release_all_locks();

-- names are limited to 64 characters, as in MySQL, not bytes: 64 two-byte
-- characters (128 bytes) are a name; 65 are not (42622)
SELECT flashsale.get_lock(repeat('é', 64), 0), octet_length(repeat('é', 64));
SELECT name = repeat('é', 64) AS remembered FROM flashsale.locks;
SELECT flashsale.release_lock(repeat('é', 64));
SELECT pg_temp.try($$SELECT flashsale.get_lock(repeat('é', 65))$$);
SELECT pg_temp.try($$SELECT flashsale.release_lock(repeat('é', 65))$$);

-- errors, with their SQLSTATEs; nothing is taken
SELECT pg_temp.try($$SELECT flashsale.get_lock('')$$);
SELECT pg_temp.try($$SELECT flashsale.get_lock(repeat('x', 65))$$);
SELECT flashsale.get_lock(repeat('x', 64), 0);
SELECT flashsale.release_lock(repeat('x', 64));
SELECT pg_temp.try($$SELECT flashsale.get_lock(NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.get_lock('a', NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.get_lock('a', -2)$$);
SELECT pg_temp.try($$SELECT flashsale.get_xact_lock('')$$);
SELECT pg_temp.try($$SELECT flashsale.release_lock(NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.is_free_lock('')$$);
SELECT pg_temp.try($$SELECT flashsale.is_used_lock(NULL)$$);
SELECT count(*) FROM flashsale.locks;

-- listing is O(n log n) in time and O(n) in memory: one session holds 4,000
-- names (a superuser raised its share), and listing them raises the backend's
-- peak memory (VmHWM) by far less than 20 MB (the O(n^2) listing took ~250 MB).
-- Every lock is listed; the registry (flashsale.max_lock_names, 100 in
-- test/regress.conf) names the last 100 taken, the others have a NULL name.
SET flashsale.max_named_locks_per_session = 5000;
SELECT count(*) FILTER (WHERE flashsale.get_lock('many:' || i, 0)) AS taken
FROM generate_series(1, 4000) i;
CREATE FUNCTION pg_temp.vmhwm_kb() RETURNS bigint LANGUAGE sql AS $$
    SELECT substring(pg_read_file('/proc/self/status') FROM 'VmHWM:\s*(\d+) kB')::bigint
$$;
SELECT pg_temp.vmhwm_kb() AS hwm_before \gset
SELECT count(*) AS locks, count(*) FILTER (WHERE holder_pid = pg_backend_pid()) AS mine,
       count(name) = current_setting('flashsale.max_lock_names')::int AS named_by_registry,
       count(name) FILTER (WHERE name LIKE 'many:%') AS named_many
FROM flashsale.locks;
SELECT pg_temp.vmhwm_kb() - :hwm_before < 20 * 1024 AS listing_memory_small;
SELECT flashsale.release_all_locks();
RESET flashsale.max_named_locks_per_session;
SELECT count(*) FROM flashsale.locks;

-- Redis locks, seen from one backend (two instances: test/t/070)
BEGIN;
SELECT flashsale.redis_lock('job') AS t1 \gset
SELECT flashsale.redis_lock('job') = :t1 AS reentrant_same_token;
SELECT name, kind, holder_pid = pg_backend_pid() AS mine, waiting_pids FROM flashsale.locks
WHERE kind = 'redis';
SELECT name, state, lease_ms, token = :t1 AS token FROM flashsale.redis_locks();
SELECT flashsale.redis_call('HGET', 'lock:{3:job}', 'count') AS count;
COMMIT;
-- released when the transaction ends
SELECT count(*) FROM flashsale.redis_locks();
SELECT flashsale.redis_call('EXISTS', 'lock:{3:job}') AS exists;
SELECT flashsale.redis_lock('job', 30000, 0) > :t1 AS token_increases;
BEGIN;
SELECT flashsale.redis_lock('job') IS NOT NULL AS got;
ROLLBACK;
SELECT flashsale.redis_call('EXISTS', 'lock:{3:job}') AS exists_after_rollback;
-- session scope: until redis_unlock; only the owner can unlock
SELECT flashsale.redis_lock_session('s', 5000) IS NOT NULL AS got;
SELECT flashsale.redis_call('PTTL', 'lock:{1:s}')::int BETWEEN 1 AND 5000 AS lease;
SELECT flashsale.redis_unlock('s');
SELECT pg_temp.try($$SELECT flashsale.redis_unlock('s')$$);
SELECT pg_temp.try($$SELECT flashsale.redis_unlock('never')$$);
-- the lock is someone else's: the owner is another backend's identity
SELECT flashsale.redis_call('HSET', 'lock:{6:theirs}', 'owner', 'x:1:2', 'count', '1', 'token', '7');
SELECT flashsale.redis_lock('theirs', 30000, 0) IS NULL AS not_acquired;
SELECT pg_temp.try($$SELECT flashsale.redis_unlock('theirs')$$);
SELECT flashsale.redis_call('DEL', 'lock:{6:theirs}');
-- errors
SELECT pg_temp.try($$SELECT flashsale.redis_lock('')$$);
SELECT pg_temp.try($$SELECT flashsale.redis_lock(repeat('x', 65))$$);
SELECT pg_temp.try($$SELECT flashsale.redis_lock(NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.redis_lock('a', 0)$$);
SELECT pg_temp.try($$SELECT flashsale.redis_lock('a', 30000, -1)$$);
SELECT pg_temp.try($$SELECT flashsale.redis_lock_session('a', 1000, NULL)$$);
-- PREPARE TRANSACTION with a Redis lock is refused, and the lock released
BEGIN;
SELECT flashsale.redis_lock('prep') IS NOT NULL AS got;
PREPARE TRANSACTION 'fs_lock';
SELECT flashsale.redis_call('EXISTS', 'lock:{4:prep}') AS exists;
-- redis_call is for superusers
CREATE ROLE fs_app;
SET ROLE fs_app;
SELECT pg_temp.try($$SELECT flashsale.redis_call('PING')$$);
RESET ROLE;
DROP ROLE fs_app;
SELECT count(*) FROM flashsale.locks;
