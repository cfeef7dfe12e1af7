/* flashsale--1.2--1.3.sql: named advisory locks */

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

-- Locks held or awaited through flashsale, by name: what pg_locks cannot tell.
CREATE VIEW flashsale.locks AS
SELECT name, 'advisory'::text AS kind, holder_pid, held_since, waiting_pids, waiting_since
FROM flashsale.named_locks();
