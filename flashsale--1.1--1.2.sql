/* flashsale--1.1--1.2.sql: the background worker's sync pass */

\echo Use "ALTER EXTENSION flashsale UPDATE TO '1.2'" to load this file. \quit

-- One pass over every product: reload what Redis lost, settle reservations of
-- ended transactions, check drift (the database wins), fold the ledger into
-- flashsale.stock. The background worker runs the same pass.
CREATE FUNCTION flashsale.sync_stock(
    OUT products bigint, OUT reloaded bigint, OUT reservations_settled bigint,
    OUT units_returned bigint, OUT drift_fixed bigint, OUT ledger_rows_folded bigint,
    OUT errors bigint)
RETURNS record AS 'MODULE_PATHNAME', 'fs_sync_stock' LANGUAGE C VOLATILE;

-- Wakes the background worker for a pass now; false when it is not running.
CREATE FUNCTION flashsale.sync_now()
RETURNS boolean AS 'MODULE_PATHNAME', 'fs_sync_now' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.worker_status_info(
    OUT pid int, OUT database text, OUT sync_interval_s int, OUT started_at timestamptz,
    OUT last_pass_start timestamptz, OUT last_pass_end timestamptz, OUT passes bigint,
    OUT products_synced bigint, OUT reservations_settled bigint, OUT units_returned bigint,
    OUT drift_fixed bigint, OUT products_reloaded bigint, OUT ledger_rows_folded bigint,
    OUT product_errors bigint, OUT redis_ok boolean, OUT last_error text,
    OUT last_error_at timestamptz)
RETURNS record AS 'MODULE_PATHNAME', 'fs_worker_status' LANGUAGE C VOLATILE;

-- The numbers a person on call wants: products_synced is the last pass',
-- the other counts are totals since the worker started.
CREATE VIEW flashsale.worker_status AS SELECT * FROM flashsale.worker_status_info();

CREATE FUNCTION flashsale.check_worker()
RETURNS void AS 'MODULE_PATHNAME', 'fs_check_worker' LANGUAGE C VOLATILE;

SELECT flashsale.check_worker();
