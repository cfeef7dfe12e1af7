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
