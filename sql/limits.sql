-- Limits on locks: the instance's registries, sized at server start.
\set VERBOSITY sqlstate

-- test/regress.conf sets both (the defaults are 1024): read at server start,
-- and only there (55P02)
SHOW flashsale.max_redis_locks;
SHOW flashsale.max_lock_names;
SET flashsale.max_redis_locks = 16;
SET flashsale.max_lock_names = 16;

-- the instance's Redis-lock registry has 8 slots: the 9th lock is refused (54000),
-- and takes nothing, in Redis or in the registry
SELECT count(flashsale.redis_lock_session('fill:' || i)) AS taken FROM generate_series(1, 8) i;
SELECT flashsale.redis_lock_session('fill:9');
SELECT count(*) FROM flashsale.redis_locks();
SELECT flashsale.redis_call('EXISTS', 'lock:fill:9') AS exists;
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
