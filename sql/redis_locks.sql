-- Redis locks: savepoints, the commit check, leases, keys, waits, info and force unlock.
\set VERBOSITY terse
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/test/sql/try.sql
CREATE FUNCTION pg_temp.held(name text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN held THEN 'held x' || hold_count ELSE 'free' END
    FROM flashsale.redis_lock_info(name) $$;

-- a savepoint rolled back releases what it took, and only that
BEGIN;
SELECT flashsale.redis_lock('outer') IS NOT NULL AS got;
SAVEPOINT a;
SELECT flashsale.redis_lock('inner') IS NOT NULL, flashsale.redis_lock('outer') IS NOT NULL;
SELECT pg_temp.held('outer') AS outer_lock, pg_temp.held('inner') AS inner_lock;
ROLLBACK TO a;
SELECT pg_temp.held('outer') AS outer_lock, pg_temp.held('inner') AS inner_lock;
SELECT name FROM flashsale.redis_locks() ORDER BY 1;
-- a released savepoint hands its locks to its parent, whose rollback releases them
SAVEPOINT b;
SAVEPOINT c;
SELECT flashsale.redis_lock('inner') IS NOT NULL AS got;
RELEASE c;
SELECT flashsale.redis_lock('inner') IS NOT NULL AS again;
RELEASE b;
SAVEPOINT d;
SELECT flashsale.redis_lock('deep') IS NOT NULL AS got;
ROLLBACK TO d;
SELECT pg_temp.held('outer') AS outer_lock, pg_temp.held('inner') AS inner_lock,
       pg_temp.held('deep') AS deep_lock;
COMMIT;
-- released once the commit is final
SELECT pg_temp.held('outer') AS outer_lock, pg_temp.held('inner') AS inner_lock;
SELECT count(*) FROM flashsale.redis_locks();
-- PL/pgSQL's exception blocks are savepoints too
DO $$
BEGIN
    PERFORM flashsale.redis_lock('plpgsql');
    RAISE division_by_zero;
EXCEPTION WHEN division_by_zero THEN
    RAISE NOTICE 'after the error: %', pg_temp.held('plpgsql');
END $$;
-- session locks are not transactional (as pg_advisory_lock): a rollback keeps them
BEGIN;
SAVEPOINT s;
SELECT flashsale.redis_lock_session('sess') IS NOT NULL AS got;
ROLLBACK TO s;
ROLLBACK;
SELECT pg_temp.held('sess') AS sess, flashsale.redis_unlock('sess');

-- a transaction whose lock was lost cannot commit (40001), and nothing of it commits
CREATE TABLE work (what text);
BEGIN;
SELECT flashsale.redis_lock('lost', 200) IS NOT NULL AS got;    -- a hard lease: 200 ms
INSERT INTO work VALUES ('under the lock');
SELECT pg_sleep(0.4);
SELECT pg_temp.held('lost') AS after_the_lease;
COMMIT;
SELECT count(*) AS committed_rows FROM work;
-- and when someone else took it meanwhile (another backend's identity)
BEGIN;
SELECT flashsale.redis_lock('lost', 200) IS NOT NULL AS got;
INSERT INTO work VALUES ('under the lock');
SELECT pg_sleep(0.3);
SELECT flashsale.redis_call('HSET', (SELECT key FROM flashsale.redis_lock_info('lost')),
                            'owner', 'x:1:2', 'count', '1', 'token', '1');
COMMIT;
SELECT count(*) AS committed_rows FROM work;
SELECT flashsale.redis_force_unlock('lost');
-- a lock kept commits
BEGIN;
SELECT flashsale.redis_lock('kept', 60000) IS NOT NULL AS got;
INSERT INTO work VALUES ('under the lock');
COMMIT;
SELECT count(*) AS committed_rows FROM work;

-- leases: lease_ms given is a hard expiry, never renewed; omitted, a watchdog
-- lease (flashsale.redis_lock_watchdog_lease) the worker renews
SET flashsale.redis_lock_watchdog_lease = 600;
SELECT flashsale.redis_lock_session('hard', 600) IS NOT NULL AS hard,
       flashsale.redis_lock_session('watched') IS NOT NULL AS watched;
SELECT name, lease_ms FROM flashsale.redis_locks() ORDER BY 1;
SELECT pg_sleep(1.2);
SELECT pg_temp.held('hard') AS hard, pg_temp.held('watched') AS watched,
       (SELECT lease_left_ms BETWEEN 1 AND 600 FROM flashsale.redis_lock_info('watched')) AS renewed;
SELECT pg_temp.try($$SELECT flashsale.redis_unlock('hard')$$);
SELECT flashsale.redis_unlock('watched');
RESET flashsale.redis_lock_watchdog_lease;
SELECT flashsale.redis_lock_session('default') IS NOT NULL AS got,
       (SELECT lease_left_ms BETWEEN 29000 AND 30000 FROM flashsale.redis_lock_info('default')) AS lease_30s,
       flashsale.redis_unlock('default');

-- keys: the name's length and a hash tag make every name its own
SELECT key FROM flashsale.redis_lock_info('x');
SELECT key FROM flashsale.redis_lock_info('x:fence');
SELECT flashsale.redis_lock_session('x') IS NOT NULL AS x,
       flashsale.redis_lock_session('x:fence') IS NOT NULL AS x_fence,
       flashsale.redis_lock_session('x:ticket') IS NOT NULL AS x_ticket,
       flashsale.redis_lock_session('x}:queue') IS NOT NULL AS x_brace;
SELECT name, state FROM flashsale.redis_locks() ORDER BY 1;
SELECT flashsale.redis_unlock('x'), flashsale.redis_unlock('x:fence'), flashsale.redis_unlock('x:ticket'),
       flashsale.redis_unlock('x}:queue');
-- the helper keys expire when unused: the fencing counter a day after its last use
SELECT flashsale.redis_call('PTTL', (SELECT key FROM flashsale.redis_lock_info('x')) || ':fence')::bigint
       BETWEEN 86000000 AND 86400000 AS fence_expires;
SELECT count(*) AS left_over FROM unnest(ARRAY['queue', 'waiters', 'ticket']) k
WHERE flashsale.redis_call('EXISTS', (SELECT key FROM flashsale.redis_lock_info('x')) || ':' || k) = '1';
-- a name of 64 characters and a key_prefix of 200 bytes: nothing is cut
SELECT set_config('flashsale.key_prefix', repeat('p', 199) || ':', false) IS NOT NULL AS prefix_set;
SELECT flashsale.redis_lock_session(repeat('n', 64), NULL, 0) IS NOT NULL AS got;
SELECT length(key), held FROM flashsale.redis_lock_info(repeat('n', 64));
SELECT flashsale.redis_unlock(repeat('n', 64));
SELECT held FROM flashsale.redis_lock_info(repeat('n', 64));
SELECT left(pg_temp.try($$SELECT set_config('flashsale.key_prefix', repeat('p', 257), false)$$), 62) AS too_long;
RESET flashsale.key_prefix;

-- a huge wait_ms is clamped (2^31 - 1 ms), and waits until cancelled
SELECT flashsale.redis_call('HSET', (SELECT key FROM flashsale.redis_lock_info('busy')),
                            'owner', 'x:1:2', 'count', '1', 'token', '1');
SET statement_timeout = 300;
SELECT flashsale.redis_lock('busy', NULL, 9223372036854775807);
RESET statement_timeout;
SELECT state FROM flashsale.redis_locks();
SELECT cardinality(waiters) AS waiters FROM flashsale.redis_lock_info('busy');

-- redis_lock_info shows any lock; redis_force_unlock frees it whoever holds it
SELECT lock_name, held, owner, holder_system_identifier, holder_pid, hold_count, token,
       lease_left_ms, waiters
FROM flashsale.redis_lock_info('busy');
SELECT flashsale.redis_force_unlock('busy'), flashsale.redis_force_unlock('busy');
SELECT held, owner, token, lease_left_ms FROM flashsale.redis_lock_info('busy');
SELECT flashsale.redis_lock_session('mine') AS t \gset
SELECT held, holder_system_identifier = (SELECT system_identifier::text FROM pg_control_system()) AS here,
       holder_pid = pg_backend_pid() AS me, hold_count, token = :t AS token
FROM flashsale.redis_lock_info('mine');
SELECT flashsale.redis_force_unlock('mine');
SELECT pg_temp.try($$SELECT flashsale.redis_unlock('mine')$$);

-- privileges: redis_lock_info for pg_monitor, redis_force_unlock for nobody
SELECT p.proname, array_agg(a.grantee::regrole ORDER BY a.grantee::regrole::text) AS grantees
FROM pg_proc p, aclexplode(p.proacl) a
WHERE a.grantee <> p.proowner AND p.proname IN ('redis_lock_info', 'redis_force_unlock', 'redis_lock', 'redis_lock_session')
  AND p.pronamespace = 'flashsale'::regnamespace
GROUP BY 1 ORDER BY 1;
SELECT count(*) FROM flashsale.redis_locks();
