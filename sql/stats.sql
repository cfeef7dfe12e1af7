-- Sale-day statistics: the flashsale.stat_* views count exactly what was done, reset
-- clears them, and only superusers and pg_monitor read them.
\set VERBOSITY terse
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/test/sql/try.sql

SELECT flashsale.stat_reset();
SELECT count(*) FROM flashsale.stat_stock;
SELECT kind, calls FROM flashsale.stat_redis ORDER BY kind;
SELECT passes, stats_reset > now() - interval '1 minute' AS reset_now FROM flashsale.stat_worker;

-- stock: 3 units; 2 sales committed (one after its savepoint's unit went back), a
-- transaction rolled back (its unit back), 2 asked when 1 is left (a sold-out answer), the last
-- one sold, then another sold-out answer: 3 sales, 3 units, 2 given back, 2 sold out
SELECT flashsale.set_stock(700, 3);
SELECT flashsale.decrement_stock(700);
BEGIN;
SELECT flashsale.decrement_stock(700);
SAVEPOINT s;
SELECT flashsale.decrement_stock(700);
ROLLBACK TO SAVEPOINT s;
COMMIT;
BEGIN;
SELECT flashsale.decrement_stock(700);
ROLLBACK;
SELECT flashsale.decrement_stock(700, 2) IS NOT NULL AS two_more;
SELECT flashsale.try_decrement_stock(700) IS NULL AS sold_out_1;
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(700)$$) AS sold_out_2;
SELECT product_id, sales, units_sold, units_given_back, sold_out, refills >= 1 AS refilled,
       units_refilled >= 3 AS units_refilled, last_sale IS NOT NULL AS last_sale,
       last_refill IS NOT NULL AS last_refill, allotment
  FROM flashsale.stat_stock WHERE product_id = 700;
-- Redis: the stock calls, none failed
SELECT kind, calls > 0 AS called, errors_connect + errors_timeout + errors_reply AS errors,
       p50_ms > 0 AND p50_ms <= p99_ms AND p99_ms <= max_ms * 1.25 AS ordered
  FROM flashsale.stat_redis WHERE kind = 'stock';
-- a reply error through redis_call counts as one
SELECT pg_temp.try($$SELECT flashsale.redis_call('INCR', 'fs_stats_not_a_number_' || 'x', 'y')$$) <> 'ok' AS refused;
SELECT kind, calls, errors_reply FROM flashsale.stat_redis WHERE kind = 'call';

-- coupons: 2 units, 1 per member: issued twice, already issued once, sold out once
SELECT flashsale.create_coupon('stats', 2, 1) AS coupon \gset
SELECT flashsale.try_issue_coupon(m, :coupon) FROM generate_series(1, 3) m;
SELECT flashsale.try_issue_coupon(1, :coupon);
SELECT issued, already_issued, sold_out, not_active, lock_waits, lock_timeouts,
       last_issue IS NOT NULL AS last_issue
  FROM flashsale.stat_coupon WHERE coupon_id = :coupon;

-- limits: throttle_local admits 2 (burst 1 + 1), limits the third; once: first, then repeat
SELECT (flashsale.throttle_local('stats', 1, 1, '1 hour')).allowed FROM generate_series(1, 3);
SELECT flashsale.once('stats-once', '1 minute'), flashsale.once('stats-once', '1 minute');
SELECT * FROM flashsale.stat_limits ORDER BY kind;

-- locks: free ones are acquired without a wait (waits, timeouts and deadlocks need two
-- sessions: the isolation spec stats.spec); a Redis lock taken and released
SELECT flashsale.get_lock('stats-lock', 0), flashsale.get_lock('stats-lock-2', 1000),
       flashsale.release_all_locks();
SELECT flashsale.redis_lock_session('stats-lock') > 0 AS redis_lock, flashsale.redis_unlock('stats-lock');
SELECT * FROM flashsale.stat_locks ORDER BY kind;

-- the sync pass counts in stat_worker; its Redis calls are "sync"
SELECT passes AS before FROM flashsale.stat_worker \gset
SELECT (flashsale.sync_stock()).products >= 1 AS synced;
SELECT passes - :before AS passes, last_pass_ms > 0 AS timed, max_pass_ms >= last_pass_ms AS max_ok
  FROM flashsale.stat_worker;
SELECT calls > 0 AS sync_calls FROM flashsale.stat_redis WHERE kind = 'sync';

-- track_stats off: nothing counted
SET flashsale.track_stats = off;
SELECT flashsale.try_decrement_stock(700) IS NULL AS sold_out;
RESET flashsale.track_stats;
SELECT sold_out FROM flashsale.stat_stock WHERE product_id = 700;

-- privileges: not PUBLIC's; pg_monitor reads, only superusers reset
CREATE ROLE fs_stats_app;
CREATE ROLE fs_stats_monitor IN ROLE pg_monitor;
SET ROLE fs_stats_app;
SELECT pg_temp.try($$SELECT count(*) FROM flashsale.stat_stock$$) AS app_reads;
SELECT pg_temp.try($$SELECT flashsale.stat_reset()$$) AS app_resets;
SET ROLE fs_stats_monitor;
SELECT pg_temp.try($$SELECT count(*) FROM flashsale.stat_stock$$) AS monitor_reads,
       pg_temp.try($$SELECT count(*) FROM flashsale.stat_redis$$) AS monitor_reads_redis,
       pg_temp.try($$SELECT count(*) FROM flashsale.stat_worker$$) AS monitor_reads_worker;
SELECT pg_temp.try($$SELECT flashsale.stat_reset()$$) AS monitor_resets;
RESET ROLE;
DROP ROLE fs_stats_app, fs_stats_monitor;

-- reset: everything back to zero, the keyed entries forgotten
SELECT flashsale.stat_reset();
SELECT (SELECT count(*) FROM flashsale.stat_stock) AS products,
       (SELECT count(*) FROM flashsale.stat_coupon) AS coupons,
       (SELECT sum(calls + errors_reply) FROM flashsale.stat_redis) AS redis,
       (SELECT sum(allowed + limited) FROM flashsale.stat_limits) AS limits,
       (SELECT sum(acquired) FROM flashsale.stat_locks) AS locks,
       (SELECT passes FROM flashsale.stat_worker) AS passes;
-- the settings
SELECT name, setting, context FROM pg_settings
 WHERE name IN ('flashsale.track_stats', 'flashsale.max_stat_entries') ORDER BY 1;
