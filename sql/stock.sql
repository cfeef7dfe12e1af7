-- Stock API: decrements from the allotment, bound to the transaction, errors, SQLSTATEs.
\set VERBOSITY terse
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/test/sql/try.sql
-- units left seen three ways: the database, pool + allotment, and what is in flight
-- (how units split between the pool and the allotment depends on timing: not shown)
CREATE FUNCTION pg_temp.levels() RETURNS TABLE (product_id bigint, db_left bigint, "left" bigint,
                                                in_flight bigint, ledger numeric)
LANGUAGE sql AS $$
    SELECT s.product_id, s.db_left, s.left, s.in_flight,
           (SELECT coalesce(sum(quantity), 0) FROM flashsale.stock_ledger l WHERE l.product_id = s.product_id)
    FROM flashsale.stock_status s ORDER BY 1 $$;

-- set_stock creates products; Redis learns them on first use (the pool is rebuilt)
SELECT flashsale.set_stock(1, 10), flashsale.set_stock(2, 5), flashsale.set_stock(3, 1);
SELECT product_id, quantity FROM flashsale.stock ORDER BY 1;
SELECT flashsale.stock_level(1), flashsale.stock_level(2);

-- decrement_stock: units left; try_decrement_stock: NULL when short
SELECT flashsale.decrement_stock(1);
SELECT flashsale.decrement_stock(1, 3);
SELECT flashsale.try_decrement_stock(1, 2);
SELECT flashsale.try_decrement_stock(1, 5) IS NULL AS short;
SELECT * FROM pg_temp.levels();

-- errors: nothing is taken
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(1, 5)$$);
\set VERBOSITY default
SELECT flashsale.decrement_stock(1, 5);
\set VERBOSITY terse
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(99)$$);
SELECT pg_temp.try($$SELECT flashsale.try_decrement_stock(99)$$);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(1, NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(1, 0)$$);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(1, -3)$$);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(1, 9007199254740992)$$);
SELECT pg_temp.try($$SELECT flashsale.set_stock(4, -1)$$);
SELECT pg_temp.try($$SELECT flashsale.set_stock(4, 9007199254740992)$$);
SELECT pg_temp.try($$SELECT flashsale.set_stock(NULL, 1)$$);
SELECT pg_temp.try($$SELECT flashsale.restore_stock(99, 1)$$);
SELECT pg_temp.try($$SELECT flashsale.restore_stock(1, 0)$$);
SELECT pg_temp.try($$SELECT flashsale.stock_level(99)$$);
SELECT * FROM pg_temp.levels();

-- rollback, error and savepoint rollback give the units back
BEGIN;
SELECT flashsale.decrement_stock(1, 2);
SELECT "left", in_flight FROM flashsale.stock_status WHERE product_id = 1;
ROLLBACK;
SELECT flashsale.stock_level(1);
BEGIN;
SELECT flashsale.decrement_stock(1, 1);
SAVEPOINT a;
SELECT flashsale.decrement_stock(1, 2);
ROLLBACK TO SAVEPOINT a;
SELECT flashsale.stock_level(1);
SAVEPOINT b;
SELECT flashsale.decrement_stock(1, 1);
RELEASE SAVEPOINT b;
COMMIT;
SELECT * FROM pg_temp.levels();
BEGIN;
SELECT flashsale.decrement_stock(2, 2);
SELECT 1 / 0;
ROLLBACK;
SELECT * FROM pg_temp.levels();

-- a multi-item order is all or nothing
SELECT flashsale.decrement_stock(ARRAY[1, 2], ARRAY[1, 2]);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(ARRAY[1, 2, 3], ARRAY[1, 1, 2])$$);
SELECT * FROM pg_temp.levels();
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(ARRAY[1, 2], ARRAY[1])$$);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(ARRAY[1, 1], ARRAY[1, 1])$$);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(ARRAY[1, NULL], ARRAY[1, 1])$$);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(ARRAY[]::bigint[], ARRAY[]::bigint[])$$);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(ARRAY[[1, 2]], ARRAY[[1, 1]])$$);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(ARRAY[1, 99], ARRAY[1, 1])$$);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(NULL::bigint[], ARRAY[1])$$);
SELECT * FROM pg_temp.levels();

-- the ledger: one row per product per decrement, written by the decrementing transaction
SELECT product_id, quantity, xid = pg_current_xact_id() AS mine FROM flashsale.stock_ledger ORDER BY entry_id;

-- restore_stock: an order cancelled after commit gives its units back
SELECT flashsale.restore_stock(1, 2);
SELECT flashsale.stock_level(1);
BEGIN;
SELECT flashsale.restore_stock(2, 1);
ROLLBACK;
SELECT * FROM pg_temp.levels();

-- set_stock takes effect when the transaction commits, not before
BEGIN;
SELECT flashsale.set_stock(1, 50);
SELECT flashsale.stock_level(1);
COMMIT;
SELECT flashsale.stock_level(1);
BEGIN;
SELECT flashsale.set_stock(1, 7);
ROLLBACK;
SELECT flashsale.stock_level(1);
SELECT * FROM pg_temp.levels();

-- values stay exact up to 2^53 - 1
SELECT flashsale.set_stock(5, 9007199254740991);
SELECT flashsale.decrement_stock(5, 1), flashsale.decrement_stock(5, 9007199254740000);

-- reload_stock drops Redis' copy now; the next use rebuilds the pool from the truth
SELECT flashsale.reload_stock(2) AS had_it, flashsale.reload_stock(2) AS again;
SELECT flashsale.stock_level(2);
SELECT pg_temp.try($$SELECT flashsale.reload_stock(NULL)$$);

-- PREPARE TRANSACTION after a decrement is refused; nothing is taken
BEGIN;
SELECT flashsale.decrement_stock(3);
PREPARE TRANSACTION 'fs';
SELECT flashsale.stock_level(3);
SELECT count(*) FROM pg_prepared_xacts;

-- a multi-item order whose products Redis all lost: every one is rebuilt (it failed beyond three)
SELECT count(flashsale.set_stock(g, 10)) FROM generate_series(71, 76) g;
SELECT count(flashsale.reload_stock(g)) FROM generate_series(71, 76) g;
SELECT flashsale.decrement_stock(ARRAY[71, 72, 73, 74, 75, 76]::bigint[], ARRAY[1, 2, 3, 4, 5, 6]::bigint[]);

-- restore_stock gives back at most what was sold since set_stock (committed sales)
SELECT flashsale.set_stock(80, 10);
SELECT flashsale.decrement_stock(80, 3);
SELECT pg_temp.try($$SELECT flashsale.restore_stock(80, 4)$$);
SELECT flashsale.restore_stock(80, 2);
SELECT pg_temp.try($$SELECT flashsale.restore_stock(80, 2)$$);
SELECT flashsale.restore_stock(80, 1);
SELECT pg_temp.try($$SELECT flashsale.restore_stock(80, 1)$$);
-- the error says what was sold
\set VERBOSITY default
SELECT flashsale.restore_stock(80, 1);
\set VERBOSITY terse
-- a transaction's own sales count for its restores (and go with its rollback)
BEGIN;
SELECT flashsale.decrement_stock(80, 5);
SELECT flashsale.restore_stock(80, 2);
SELECT pg_temp.try($$SELECT flashsale.restore_stock(80, 4)$$);
ROLLBACK;
SELECT flashsale.stock_level(80), (SELECT sum(quantity) FROM flashsale.stock_ledger WHERE product_id = 80) AS ledger;

-- sold out is answered from shared memory for 100 ms; a restock here is seen at once
SELECT flashsale.set_stock(90, 1);
SELECT flashsale.decrement_stock(90);
SELECT flashsale.try_decrement_stock(90) IS NULL AS sold_out;
SELECT flashsale.restore_stock(90, 1);
SELECT flashsale.try_decrement_stock(90) AS sold_at_once;
SELECT flashsale.try_decrement_stock(90) IS NULL AS sold_out_again;
-- meanwhile the answers do not reach Redis
SELECT substring(flashsale.redis_call('INFO', 'commandstats') FROM 'cmdstat_evalsha:calls=([0-9]+)') AS evalsha \gset
SELECT count(flashsale.try_decrement_stock(90)) AS sold, count(*) AS asked FROM generate_series(1, 100);
-- (without the verdict: 100; a lapse of the 100 ms window on a slow machine asks Redis once more)
SELECT substring(flashsale.redis_call('INFO', 'commandstats') FROM 'cmdstat_evalsha:calls=([0-9]+)')::int - :evalsha
    < 3 AS redis_spared;
BEGIN;
SELECT flashsale.restore_stock(90, 1);
SELECT flashsale.try_decrement_stock(90) IS NULL AS not_before_commit;
COMMIT;
SELECT flashsale.try_decrement_stock(90) AS after_commit;
-- a rolled-back sale gives its unit back, and it sells at once
SELECT flashsale.set_stock(91, 1);
BEGIN;
SELECT flashsale.decrement_stock(91);
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(91)$$);
ROLLBACK;
SELECT flashsale.try_decrement_stock(91) AS after_rollback;

-- a set_stock rolled back after selling from it: nothing is sold from the figure it set
BEGIN;
SELECT flashsale.set_stock(95, 10);
SELECT flashsale.decrement_stock(95);
ROLLBACK;
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(95)$$);
SELECT flashsale.set_stock(96, 2);
BEGIN;
SELECT flashsale.set_stock(96, 100);
SELECT flashsale.decrement_stock(96, 50);
ROLLBACK;
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(96, 3)$$);
SELECT flashsale.stock_level(96);
-- the same in a savepoint rolled back (a product new to this instance: its pool is rebuilt at once)
BEGIN;
SAVEPOINT s;
SELECT flashsale.set_stock(97, 100);
SELECT flashsale.decrement_stock(97, 50);
ROLLBACK TO SAVEPOINT s;
SELECT pg_temp.try($$SELECT flashsale.decrement_stock(97, 3)$$);
SELECT flashsale.decrement_stock(96, 2);
COMMIT;
SELECT flashsale.stock_level(96);
SELECT db_left, "left", in_flight FROM flashsale.stock_status WHERE product_id = 96;
