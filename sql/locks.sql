-- Named advisory locks: API, reentrancy, key space, errors.
\set VERBOSITY terse
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- session-level, reentrant; release_lock undoes one acquisition
SELECT flashsale.get_lock('order:42'), flashsale.get_lock('order:42', 0);
SELECT flashsale.is_free_lock('order:42'), flashsale.is_used_lock('order:42') = pg_backend_pid() AS mine;
SELECT name, kind, holder_pid = pg_backend_pid() AS mine, held_since IS NOT NULL AS since, waiting_pids
FROM flashsale.locks;
SELECT flashsale.release_lock('order:42'), flashsale.is_free_lock('order:42');
SELECT flashsale.release_lock('order:42'), flashsale.is_free_lock('order:42');
SELECT flashsale.release_lock('order:42');        -- not held: false
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

-- flashsale's key space never meets pg_advisory_lock's
SELECT pg_advisory_lock(hashtext('k')), pg_advisory_lock(0), pg_advisory_lock(0, 0);
SELECT flashsale.get_lock('k', 0);
SELECT count(*) AS advisory_locks, count(DISTINCT objsubid) AS key_spaces
FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
-- but they are advisory locks: pg_advisory_unlock_all() (and DISCARD ALL) release them too
SELECT pg_advisory_unlock_all();
SELECT flashsale.is_free_lock('k'), flashsale.release_lock('k'), flashsale.release_all_locks();

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
