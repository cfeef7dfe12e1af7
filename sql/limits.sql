-- Limits on locks: the instance's registries, sized at server start, and each
-- session's share, which only a superuser can change.
\set VERBOSITY sqlstate

-- test/regress.conf sets the registries' sizes (the defaults are 1024): read
-- at server start, and only there (55P02)
SHOW flashsale.max_redis_locks;
SHOW flashsale.max_lock_names;
SHOW flashsale.max_redis_locks_per_session;
SHOW flashsale.max_named_locks_per_session;
SET flashsale.max_redis_locks = 16;
SET flashsale.max_lock_names = 16;

-- the instance's Redis-lock registry has 8 slots: the 9th lock is refused (54000),
-- and takes nothing, in Redis or in the registry
SET flashsale.max_redis_locks_per_session = 100;
SELECT count(flashsale.redis_lock_session('fill:' || i)) AS taken FROM generate_series(1, 8) i;
SELECT flashsale.redis_lock_session('fill:9');
SELECT count(*) FROM flashsale.redis_locks();
SELECT flashsale.redis_call('EXISTS', 'lock:{6:fill:9}') AS exists;
\set VERBOSITY default
SELECT flashsale.redis_lock('fill:9');
\set VERBOSITY sqlstate
-- a lock already held is not a new one; one released makes room for one more
SELECT flashsale.redis_lock_session('fill:1') IS NOT NULL AS reentered;
SELECT flashsale.redis_unlock('fill:1'), flashsale.redis_unlock('fill:1');
SELECT flashsale.redis_lock_session('fill:9') IS NOT NULL AS got;
SELECT count(*) FILTER (WHERE flashsale.redis_unlock('fill:' || i)) AS released
FROM generate_series(2, 9) i;
SELECT count(*) FROM flashsale.redis_locks();

-- a session's Redis locks: 3 succeed, the 4th is refused (54000) and takes no slot
SET flashsale.max_redis_locks_per_session = 3;
SELECT count(flashsale.redis_lock_session('own:' || i)) AS taken FROM generate_series(1, 3) i;
SELECT flashsale.redis_lock_session('own:4');
SELECT count(*) FROM flashsale.redis_locks();
SELECT flashsale.redis_call('EXISTS', 'lock:{5:own:4}') AS exists;
-- refused before Redis is asked: with Redis unreachable the answer is the same,
-- where a lock within the limit fails to connect (08001)
SET flashsale.redis_port = 1;
SELECT flashsale.redis_lock_session('own:4');
SET flashsale.max_redis_locks_per_session = 4;
SELECT flashsale.redis_lock_session('own:4');
-- (the same in a subtransaction: it must give back its slot too)
DO $$
BEGIN
    PERFORM flashsale.redis_lock_session('own:4');
EXCEPTION WHEN sqlclient_unable_to_establish_sqlconnection THEN
END $$;
SET flashsale.max_redis_locks_per_session = 3;
RESET flashsale.redis_port;
SELECT count(*) FROM flashsale.redis_locks();
-- transaction-level locks count too
BEGIN;
\set VERBOSITY default
SELECT flashsale.redis_lock('own:4');
\set VERBOSITY sqlstate
ROLLBACK;
-- re-entry still works at the limit; one released, one more taken
SELECT flashsale.redis_lock_session('own:1') IS NOT NULL AS reentered;
SELECT flashsale.redis_unlock('own:1'), flashsale.redis_unlock('own:1');
SELECT flashsale.redis_lock_session('own:4') IS NOT NULL AS got;
SELECT name FROM flashsale.redis_locks() ORDER BY 1;

-- a session's named locks: 3 distinct names, at session and transaction level together
SET flashsale.max_named_locks_per_session = 3;
SELECT flashsale.get_lock('n1'), flashsale.get_lock('n2');
BEGIN;
SELECT flashsale.get_xact_lock('n3');
SAVEPOINT s;
SELECT flashsale.get_lock('n4', 0);
ROLLBACK TO s;
-- names already held are taken again, at either level
SELECT flashsale.get_lock('n1', 0), flashsale.get_xact_lock('n3', 0), flashsale.get_xact_lock('n2');
COMMIT;
-- n3 went with its transaction: room for one
SELECT flashsale.get_lock('n4', 0);
SELECT flashsale.get_lock('n5', 0);
\set VERBOSITY default
SELECT flashsale.get_xact_lock('n5');
\set VERBOSITY sqlstate
-- released: room for one; a lock taken in a subtransaction rolled back goes with it
SELECT flashsale.release_lock('n4');
BEGIN;
SAVEPOINT s;
SELECT flashsale.get_xact_lock('n5');
ROLLBACK TO s;
SELECT flashsale.get_lock('n6', 0);
COMMIT;
SELECT name FROM flashsale.locks WHERE holder_pid = pg_backend_pid() AND kind = 'advisory' ORDER BY 1;
-- pg_advisory_unlock_all() releases them all, and so frees the count
SELECT pg_advisory_unlock_all();
SELECT flashsale.get_lock('m1', 0), flashsale.get_lock('m2', 0), flashsale.get_lock('m3', 0);
SELECT flashsale.get_lock('m4', 0);
SELECT flashsale.release_all_locks();

-- a user cannot raise (or reset) the limits; those a superuser set apply to them
CREATE ROLE fs_limited;
GRANT USAGE ON SCHEMA flashsale TO fs_limited;
GRANT EXECUTE ON FUNCTION flashsale.get_lock(text, bigint), flashsale.release_all_locks(),
    flashsale.redis_lock_session(text, bigint, bigint) TO fs_limited;
SET ROLE fs_limited;
SET flashsale.max_named_locks_per_session = 100;
SET flashsale.max_redis_locks_per_session = 100;
RESET flashsale.max_named_locks_per_session;
SHOW flashsale.max_named_locks_per_session;
SELECT flashsale.get_lock('u1', 0), flashsale.get_lock('u2', 0), flashsale.get_lock('u3', 0);
SELECT flashsale.get_lock('u4', 0);
SELECT flashsale.release_all_locks();
SELECT flashsale.redis_lock_session('own:6');
RESET ROLE;
DROP OWNED BY fs_limited;
DROP ROLE fs_limited;
SELECT count(*) FILTER (WHERE flashsale.redis_unlock('own:' || i)) AS released
FROM generate_series(2, 4) i;
SELECT count(*) FROM flashsale.redis_locks();
