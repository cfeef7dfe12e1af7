/* flashsale--1.2--1.3.sql: named advisory locks and Redis locks */

\echo Use "ALTER EXTENSION flashsale UPDATE TO '1.3'" to load this file. \quit

-- Session-level: held until release_lock / release_all_locks / disconnect.
-- timeout_ms: -1 waits until cancelled, 0 tries once, > 0 waits that long.
CREATE FUNCTION flashsale.get_lock(name text, timeout_ms bigint DEFAULT -1)
RETURNS boolean AS 'MODULE_PATHNAME', 'fs_get_lock' LANGUAGE C VOLATILE;

-- Transaction-level: released when the transaction ends.
CREATE FUNCTION flashsale.get_xact_lock(name text, timeout_ms bigint DEFAULT -1)
RETURNS boolean AS 'MODULE_PATHNAME', 'fs_get_xact_lock' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.release_lock(name text)
RETURNS boolean AS 'MODULE_PATHNAME', 'fs_release_lock' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.release_all_locks()
RETURNS integer AS 'MODULE_PATHNAME', 'fs_release_all_locks' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.is_free_lock(name text)
RETURNS boolean AS 'MODULE_PATHNAME', 'fs_is_free_lock' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.is_used_lock(name text)
RETURNS integer AS 'MODULE_PATHNAME', 'fs_is_used_lock' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.named_locks(
    OUT name text, OUT holder_pid int, OUT held_since timestamptz,
    OUT waiting_pids int[], OUT waiting_since timestamptz)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'fs_named_locks' LANGUAGE C VOLATILE;


-- Redis locks, for locks shared by several PostgreSQL instances. They return
-- a fencing token (strictly increasing per name) when acquired, NULL when
-- wait_ms passed. redis_lock is released when the transaction ends;
-- redis_lock_session by redis_unlock or at disconnect.
CREATE FUNCTION flashsale.redis_lock(name text, lease_ms bigint DEFAULT 30000, wait_ms bigint DEFAULT 0)
RETURNS bigint AS 'MODULE_PATHNAME', 'fs_redis_lock' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.redis_lock_session(name text, lease_ms bigint DEFAULT 30000,
                                             wait_ms bigint DEFAULT 0)
RETURNS bigint AS 'MODULE_PATHNAME', 'fs_redis_lock_session' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.redis_unlock(name text)
RETURNS boolean AS 'MODULE_PATHNAME', 'fs_redis_unlock' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.redis_locks(
    OUT name text, OUT state text, OUT pid int, OUT since timestamptz,
    OUT lease_ms bigint, OUT token bigint, OUT owner text)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'fs_redis_locks' LANGUAGE C VOLATILE;

-- One Redis command, for operators (and the benchmark's spin-lock baseline).
CREATE FUNCTION flashsale.redis_call(VARIADIC args text[])
RETURNS text AS 'MODULE_PATHNAME', 'fs_redis_call' LANGUAGE C VOLATILE;
REVOKE EXECUTE ON FUNCTION flashsale.redis_call(text[]) FROM PUBLIC;

-- Locks held or awaited through flashsale, by name: what pg_locks cannot tell.
-- Redis locks: those of this instance's backends.
CREATE VIEW flashsale.locks AS
SELECT name, 'advisory'::text AS kind, holder_pid, held_since, waiting_pids, waiting_since
FROM flashsale.named_locks()
UNION ALL
SELECT name, 'redis'::text,
       max(pid) FILTER (WHERE state = 'held'),
       max(since) FILTER (WHERE state = 'held'),
       coalesce(array_agg(pid ORDER BY since) FILTER (WHERE state = 'waiting'), '{}'),
       min(since) FILTER (WHERE state = 'waiting')
FROM flashsale.redis_locks()
GROUP BY name;
