/* flashsale--1.5--1.6.sql: stock sold from allotments in shared memory */

\echo Use "ALTER EXTENSION flashsale UPDATE TO '1.6'" to load this file. \quit

-- ---- What Redis holds, and what this instance holds --------------------
-- Each instance leases units from the pool in Redis into an allotment in
-- its shared memory and sells from there.  stock_redis() reads both
-- together: the pool, the units Redis records as allotted to instances,
-- and this instance's allotment: available and in flight (taken by
-- transactions in progress).
DROP VIEW flashsale.stock_status;
DROP FUNCTION flashsale.stock_redis(bigint);
CREATE FUNCTION flashsale.stock_redis(
    product_id bigint, OUT pool bigint, OUT allotted bigint, OUT available bigint, OUT in_flight bigint)
RETURNS record AS 'MODULE_PATHNAME', 'fs_stock_redis' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION flashsale.stock_redis(bigint) FROM PUBLIC;

-- left = pool + available: what stock_level() says, units for sale now.
CREATE VIEW flashsale.stock_status AS
SELECT s.product_id,
       (s.quantity - coalesce(l.sold, 0))::bigint AS db_left,
       r.pool + r.available AS left,
       r.pool,
       r.available,
       r.in_flight,
       s.updated_at
FROM flashsale.stock s
LEFT JOIN (SELECT product_id, sum(quantity) AS sold
           FROM flashsale.stock_ledger GROUP BY product_id) l USING (product_id)
CROSS JOIN LATERAL flashsale.stock_redis(s.product_id) r;
REVOKE ALL ON flashsale.stock_status FROM PUBLIC;

-- This instance's allotments of this database's products.
CREATE FUNCTION flashsale.allotments(
    OUT product_id bigint, OUT available bigint, OUT in_flight bigint, OUT batch bigint,
    OUT last_used timestamptz, OUT stale boolean)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'fs_allotments' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION flashsale.allotments() FROM PUBLIC;

GRANT SELECT ON flashsale.stock_status TO pg_monitor;
GRANT EXECUTE ON FUNCTION flashsale.stock_redis(bigint), flashsale.allotments() TO pg_monitor;

-- The reservation hash is gone; the allotment hash is beside the pool.
DROP FUNCTION flashsale.stock_keys(bigint);
CREATE FUNCTION flashsale.stock_keys(product_id bigint, OUT stock_key text, OUT allot_key text)
RETURNS record AS 'MODULE_PATHNAME', 'fs_stock_keys' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION flashsale.stock_keys(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION flashsale.stock_keys(bigint) TO pg_monitor;

-- ---- The sync pass: idle allotments go back; no reservations to settle ----
DROP FUNCTION flashsale.sync_stock();
CREATE FUNCTION flashsale.sync_stock(
    OUT products bigint, OUT reloaded bigint, OUT allotments_returned bigint,
    OUT units_returned bigint, OUT drift_fixed bigint, OUT ledger_rows_folded bigint,
    OUT errors bigint, OUT busy bigint)
RETURNS record AS 'MODULE_PATHNAME', 'fs_sync_stock' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION flashsale.sync_stock() FROM PUBLIC;

DROP VIEW flashsale.worker_status;
DROP FUNCTION flashsale.worker_status_info();
CREATE FUNCTION flashsale.worker_status_info(
    OUT pid int, OUT database text, OUT sync_interval_s int, OUT started_at timestamptz,
    OUT last_pass_start timestamptz, OUT last_pass_end timestamptz, OUT passes bigint,
    OUT products_synced bigint, OUT allotments_returned bigint, OUT units_returned bigint,
    OUT drift_fixed bigint, OUT products_reloaded bigint, OUT ledger_rows_folded bigint,
    OUT product_errors bigint, OUT products_busy bigint, OUT redis_ok boolean, OUT last_error text,
    OUT last_error_at timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'fs_worker_status' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION flashsale.worker_status_info() FROM PUBLIC;
CREATE VIEW flashsale.worker_status AS SELECT * FROM flashsale.worker_status_info();
REVOKE ALL ON flashsale.worker_status FROM PUBLIC;
GRANT SELECT ON flashsale.worker_status TO pg_monitor;
GRANT EXECUTE ON FUNCTION flashsale.worker_status_info() TO pg_monitor;

-- ---- The ledger: no index ---------------------------------------------
-- Nothing asks by (product, xid) any more.  The sync pass folds the whole
-- ledger in one statement (one scan) every pass, so it stays short, and
-- the truth of one product (a rebuild, set_stock, restore_stock) sums what
-- is left; every sale would pay for an index, with a hot product's entries
-- all on one leaf page.
DROP INDEX flashsale.stock_ledger_product_xid_idx;

-- Every sale takes an entry_id: a backend keeps 100 of them at a time
-- instead of locking the sequence's page for each (ids stay unique; their
-- order across backends is not the order of the sales, and nothing needs it).
ALTER SEQUENCE flashsale.stock_ledger_entry_id_seq CACHE 100;
