/* flashsale--1.6--1.7.sql: rate limits and double-submit guards */

\echo Use "ALTER EXTENSION flashsale UPDATE TO '1.7'" to load this file. \quit

-- ---- Rate limits: GCRA with redis-cell's semantics -------------------
-- A burst of max_burst + 1, then count per period.  throttle() keeps its
-- keys in Redis (shared by every instance using the same Redis and key
-- prefix, Redis' clock), throttle_local() in this instance's shared memory.
-- With refund_on_rollback a rolled-back transaction or savepoint gives its
-- quantity back.  Not STRICT: a NULL argument is an error (22004).
CREATE FUNCTION flashsale.throttle(
    key text, max_burst bigint, count bigint, period interval,
    quantity bigint DEFAULT 1, refund_on_rollback boolean DEFAULT false)
RETURNS TABLE (allowed boolean, "limit" bigint, remaining bigint,
               retry_after interval, reset_after interval)
AS 'MODULE_PATHNAME', 'fs_throttle' LANGUAGE C VOLATILE ROWS 1;
REVOKE ALL ON FUNCTION flashsale.throttle(text, bigint, bigint, interval, bigint, boolean) FROM PUBLIC;

CREATE FUNCTION flashsale.throttle_local(
    key text, max_burst bigint, count bigint, period interval,
    quantity bigint DEFAULT 1, refund_on_rollback boolean DEFAULT false)
RETURNS TABLE (allowed boolean, "limit" bigint, remaining bigint,
               retry_after interval, reset_after interval)
AS 'MODULE_PATHNAME', 'fs_throttle_local' LANGUAGE C VOLATILE ROWS 1;
REVOKE ALL ON FUNCTION flashsale.throttle_local(text, bigint, bigint, interval, bigint, boolean) FROM PUBLIC;

-- ---- A double-submit guard ------------------------------------------
-- true for the first call with key within ttl, false for repeats; a
-- rolled-back transaction releases the key so that the retry passes.
CREATE FUNCTION flashsale.once(key text, ttl interval) RETURNS boolean
AS 'MODULE_PATHNAME', 'fs_once' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION flashsale.once(text, interval) FROM PUBLIC;

-- ---- Sale-day statistics (stats.c) -----------------------------------
-- Cumulative since flashsale.stat_reset(), for this instance: per product
-- and coupon of the current database (the least recently used forgotten
-- beyond flashsale.max_stat_entries), Redis calls by kind with errors and
-- latency, locks, rate limits and the worker.  Like pg_stat_statements'
-- view: superusers and pg_monitor read them, superusers reset them.
CREATE FUNCTION flashsale.stat_entries(kind int,
    OUT id bigint, OUT c0 bigint, OUT c1 bigint, OUT c2 bigint, OUT c3 bigint,
    OUT c4 bigint, OUT c5 bigint, OUT c6 bigint, OUT c7 bigint,
    OUT t0 timestamptz, OUT t1 timestamptz)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'fs_stat_entries' LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION flashsale.stat_entries(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flashsale.stat_entries(int) TO pg_monitor;

CREATE VIEW flashsale.stat_stock AS
SELECT s.id AS product_id, s.c0 AS sales, s.c1 AS units_sold, s.c2 AS units_given_back,
       s.c3 AS sold_out, s.c4 AS refills, s.c5 AS units_refilled, s.c6 AS returns,
       s.c7 AS units_returned, s.t0 AS last_sale, s.t1 AS last_refill,
       coalesce(a.available, 0) AS allotment
  FROM flashsale.stat_entries(1) s
  LEFT JOIN flashsale.allotments() a ON a.product_id = s.id;

CREATE VIEW flashsale.stat_coupon AS
SELECT id AS coupon_id, c0 AS issued, c1 AS already_issued, c2 AS sold_out, c3 AS not_active,
       c4 AS lock_waits, c5 AS lock_timeouts, t0 AS last_issue
  FROM flashsale.stat_entries(2);

CREATE FUNCTION flashsale.stat_redis_info(
    OUT kind text, OUT calls bigint, OUT errors_connect bigint, OUT errors_timeout bigint,
    OUT errors_reply bigint, OUT reconnects bigint, OUT p50_ms float8, OUT p99_ms float8,
    OUT max_ms float8)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'fs_stat_redis_info' LANGUAGE C VOLATILE;
CREATE VIEW flashsale.stat_redis AS SELECT * FROM flashsale.stat_redis_info();

CREATE FUNCTION flashsale.stat_locks_info(
    OUT kind text, OUT acquired bigint, OUT waits bigint, OUT timeouts bigint, OUT deadlocks bigint)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'fs_stat_locks_info' LANGUAGE C VOLATILE;
CREATE VIEW flashsale.stat_locks AS SELECT * FROM flashsale.stat_locks_info();

CREATE FUNCTION flashsale.stat_limits_info(OUT kind text, OUT allowed bigint, OUT limited bigint)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'fs_stat_limits_info' LANGUAGE C VOLATILE;
CREATE VIEW flashsale.stat_limits AS SELECT * FROM flashsale.stat_limits_info();

CREATE FUNCTION flashsale.stat_worker_info(
    OUT passes bigint, OUT last_pass_ms float8, OUT max_pass_ms float8, OUT products_synced bigint,
    OUT products_busy bigint, OUT drift_fixed bigint, OUT errors bigint, OUT stats_reset timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'fs_stat_worker_info' LANGUAGE C VOLATILE;
CREATE VIEW flashsale.stat_worker AS SELECT * FROM flashsale.stat_worker_info();

CREATE FUNCTION flashsale.stat_reset() RETURNS void
AS 'MODULE_PATHNAME', 'fs_stat_reset' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION flashsale.stat_reset() FROM PUBLIC;

DO $$
DECLARE f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['stat_redis_info()', 'stat_locks_info()', 'stat_limits_info()',
                             'stat_worker_info()'] LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION flashsale.%s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION flashsale.%s TO pg_monitor', f);
    END LOOP;
    FOREACH f IN ARRAY ARRAY['stat_stock', 'stat_coupon', 'stat_redis', 'stat_locks', 'stat_limits',
                             'stat_worker'] LOOP
        EXECUTE format('REVOKE ALL ON flashsale.%I FROM PUBLIC', f);
        EXECUTE format('GRANT SELECT ON flashsale.%I TO pg_monitor', f);
    END LOOP;
END $$;
