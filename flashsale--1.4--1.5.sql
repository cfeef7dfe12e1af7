/* flashsale--1.4--1.5.sql: least privilege; stock keys scoped to this installation; Redis lock leases */

\echo Use "ALTER EXTENSION flashsale UPDATE TO '1.5'" to load this file. \quit

-- ---- The sync pass never waits for a sale -----------------------------
-- It only tries each product's lock; a busy product is settled and folded
-- and counted in the new column products_busy / busy.
DROP FUNCTION flashsale.sync_stock();
CREATE FUNCTION flashsale.sync_stock(
    OUT products bigint, OUT reloaded bigint, OUT reservations_settled bigint,
    OUT units_returned bigint, OUT drift_fixed bigint, OUT ledger_rows_folded bigint,
    OUT errors bigint, OUT busy bigint)
RETURNS record AS 'MODULE_PATHNAME', 'fs_sync_stock' LANGUAGE C VOLATILE;

DROP VIEW flashsale.worker_status;
DROP FUNCTION flashsale.worker_status_info();
CREATE FUNCTION flashsale.worker_status_info(
    OUT pid int, OUT database text, OUT sync_interval_s int, OUT started_at timestamptz,
    OUT last_pass_start timestamptz, OUT last_pass_end timestamptz, OUT passes bigint,
    OUT products_synced bigint, OUT reservations_settled bigint, OUT units_returned bigint,
    OUT drift_fixed bigint, OUT products_reloaded bigint, OUT ledger_rows_folded bigint,
    OUT product_errors bigint, OUT products_busy bigint, OUT redis_ok boolean, OUT last_error text,
    OUT last_error_at timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'fs_worker_status' LANGUAGE C VOLATILE;
CREATE VIEW flashsale.worker_status AS SELECT * FROM flashsale.worker_status_info();

-- ---- restore_stock gives back at most what was sold ---------------------
-- The level set_stock last set: restores never raise the stock above it.
-- NULL for rows set before 1.5 (unbounded until their next set_stock).
ALTER TABLE flashsale.stock ADD COLUMN set_quantity bigint;

-- ---- The ledger: one index, the one its queries use -------------------
-- Every sale inserts a row; the hot path needs no primary key (nothing
-- looks a row up by entry_id), and the sync pass asks by (product, xid).
ALTER TABLE flashsale.stock_ledger DROP CONSTRAINT stock_ledger_pkey;
DROP INDEX flashsale.stock_ledger_product_id_idx;
CREATE INDEX stock_ledger_product_xid_idx ON flashsale.stock_ledger (product_id, xid);

-- ---- Privileges --------------------------------------------------------
-- EXECUTE on a function is the capability (README "Roles and privileges"):
-- the functions read and write flashsale's tables as the extension's owner,
-- so a buyer granted EXECUTE on decrement_stock needs, and gets, no
-- privilege on any table.  Nothing here is granted to PUBLIC: every
-- function changes shared state (stock, coupons, locks, Redis) or asks
-- Redis (a cost every caller would impose on the sale), and the tables are
-- written only through the functions.  Later upgrade scripts revoke what
-- they add in the same way.
REVOKE ALL ON SCHEMA flashsale FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA flashsale FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA flashsale FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA flashsale FROM PUBLIC;

-- Where is a product's stock in Redis?  Key names scope the installation:
-- system identifier, database, and the relfilenode of flashsale.stock (new
-- at CREATE EXTENSION and at TRUNCATE: Redis then reloads from the table).
CREATE FUNCTION flashsale.stock_keys(product_id bigint, OUT stock_key text, OUT reserved_key text)
RETURNS record AS 'MODULE_PATHNAME', 'fs_stock_keys' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION flashsale.stock_keys(bigint) FROM PUBLIC;

-- A product whose stock row is deleted stops being sellable: its Redis keys
-- are dropped at commit.
CREATE FUNCTION flashsale.stock_forget()
RETURNS trigger AS 'MODULE_PATHNAME', 'fs_stock_forget' LANGUAGE C;
REVOKE ALL ON FUNCTION flashsale.stock_forget() FROM PUBLIC;
CREATE TRIGGER stock_forget AFTER DELETE ON flashsale.stock
    FOR EACH ROW EXECUTE FUNCTION flashsale.stock_forget();

-- Monitoring, as contrib does it: the members of pg_monitor read the status
-- views, and may call the functions behind them (a view runs its functions
-- with the reader's privileges).
GRANT USAGE ON SCHEMA flashsale TO pg_monitor;
GRANT SELECT ON flashsale.stock_status, flashsale.coupon_status,
                flashsale.worker_status, flashsale.locks TO pg_monitor;
GRANT EXECUTE ON FUNCTION flashsale.stock_redis(bigint), flashsale.worker_status_info(),
                          flashsale.named_locks(), flashsale.redis_locks(),
                          flashsale.stock_keys(bigint) TO pg_monitor;

-- ---- Redis locks: watchdog or hard leases; any lock by name; force unlock ----
-- lease_ms omitted (NULL) takes a watchdog lease (flashsale.redis_lock_watchdog_lease,
-- 30 s) that the background worker renews while the holder lives; a lease_ms
-- given is a hard expiry, never renewed.  A new default needs the functions
-- re-created (the view flashsale.locks depends on redis_locks() only).
DROP FUNCTION flashsale.redis_lock(text, bigint, bigint);
DROP FUNCTION flashsale.redis_lock_session(text, bigint, bigint);
CREATE FUNCTION flashsale.redis_lock(name text, lease_ms bigint DEFAULT NULL, wait_ms bigint DEFAULT 0)
RETURNS bigint AS 'MODULE_PATHNAME', 'fs_redis_lock' LANGUAGE C VOLATILE;
CREATE FUNCTION flashsale.redis_lock_session(name text, lease_ms bigint DEFAULT NULL,
                                             wait_ms bigint DEFAULT 0)
RETURNS bigint AS 'MODULE_PATHNAME', 'fs_redis_lock_session' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION flashsale.redis_lock(text, bigint, bigint),
                       flashsale.redis_lock_session(text, bigint, bigint) FROM PUBLIC;

-- What Redis knows of one lock, whichever instance holds or awaits it.
CREATE FUNCTION flashsale.redis_lock_info(
    name text, OUT lock_name text, OUT key text, OUT held boolean, OUT owner text,
    OUT holder_system_identifier text, OUT holder_pid int, OUT hold_count int,
    OUT token bigint, OUT lease_left_ms bigint, OUT waiters text[])
RETURNS record AS 'MODULE_PATHNAME', 'fs_redis_lock_info' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION flashsale.redis_lock_info(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flashsale.redis_lock_info(text) TO pg_monitor;

-- Free a lock whoever holds it and grant it to its first waiter: for admins,
-- granted to nobody here.
CREATE FUNCTION flashsale.redis_force_unlock(name text)
RETURNS boolean AS 'MODULE_PATHNAME', 'fs_redis_force_unlock' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION flashsale.redis_force_unlock(text) FROM PUBLIC;

-- ---- Which version is this? -------------------------------------------
-- The loaded library's version and the SQL objects' version here; a WARNING
-- when they differ (a new library, the database not updated yet).
CREATE FUNCTION flashsale.version(OUT library text, OUT installed text)
RETURNS record AS 'MODULE_PATHNAME', 'fs_version' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION flashsale.version() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flashsale.version() TO pg_monitor;
