-- The sync pass by hand: flashsale.sync_stock(), and the worker's status.
\set VERBOSITY terse
SELECT flashsale.set_stock(10, 100), flashsale.set_stock(11, 20);
SELECT flashsale.decrement_stock(10, 7), flashsale.decrement_stock(11, 2);
BEGIN;
SELECT flashsale.decrement_stock(10, 1);
ROLLBACK;
-- before: the ledger holds the sales; after: they are folded into stock.quantity
SELECT product_id, quantity FROM flashsale.stock WHERE product_id IN (10, 11) ORDER BY 1;
SELECT count(*) AS ledger_rows FROM flashsale.stock_ledger WHERE product_id IN (10, 11);
SELECT products >= 2 AS all_products, reloaded, drift_fixed, errors FROM flashsale.sync_stock();
SELECT product_id, quantity FROM flashsale.stock WHERE product_id IN (10, 11) ORDER BY 1;
SELECT count(*) AS ledger_rows FROM flashsale.stock_ledger WHERE product_id IN (10, 11);
SELECT product_id, db_left, "left", in_flight FROM flashsale.stock_status
WHERE product_id IN (10, 11) ORDER BY 1;
-- a product Redis lost is rebuilt by the pass
SELECT flashsale.reload_stock(11);
SELECT reloaded, drift_fixed, errors FROM flashsale.sync_stock();
SELECT pool + available AS "left" FROM flashsale.stock_redis(11);
-- a second pass finds nothing to do
SELECT reloaded, drift_fixed, ledger_rows_folded, errors
FROM flashsale.sync_stock();
-- not in a transaction that holds units: the pass would fold its own sales
BEGIN;
SELECT flashsale.decrement_stock(10);
SELECT * FROM flashsale.sync_stock();
ROLLBACK;
-- the worker runs (in database "postgres", where flashsale is not installed: its passes do nothing)
SELECT pid IS NOT NULL AS running, database, sync_interval_s FROM flashsale.worker_status;
SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'flashsale worker';
SELECT flashsale.sync_now();
