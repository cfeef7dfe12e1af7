-- Security: least privilege (README "Roles and privileges"), no search_path
-- hijack of flashsale's internal SQL, stock keys scoped to the installation.
\set VERBOSITY terse
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/test/sql/try.sql
-- every function of flashsale called with typed NULLs, as the current role:
-- how many ended with each SQLSTATE (the privilege check comes first)
CREATE FUNCTION pg_temp.call_all() RETURNS TABLE (sqlstate text, functions bigint) LANGUAGE sql AS $$
    SELECT split_part(pg_temp.try(format('SELECT %s(%s%s)', p.oid::regproc,
               CASE WHEN p.provariadic <> 0 THEN 'VARIADIC ' ELSE '' END,
               (SELECT string_agg(format('NULL::%s', format_type(t, NULL)), ', ' ORDER BY i)
                FROM unnest(p.proargtypes) WITH ORDINALITY a(t, i)))), ':', 1),
           count(*)
    FROM pg_proc p
    WHERE p.pronamespace = 'flashsale'::regnamespace AND p.prorettype <> 'trigger'::regtype
    GROUP BY 1 ORDER BY 1 $$;

-- ---- nothing is granted to PUBLIC
SELECT count(*) AS public_functions
FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
WHERE p.pronamespace = 'flashsale'::regnamespace AND a.grantee = 0;
SELECT count(*) AS public_relations
FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
WHERE c.relnamespace = 'flashsale'::regnamespace AND a.grantee = 0;
SELECT has_schema_privilege('public', 'flashsale', 'USAGE') AS public_schema_usage;

-- ---- roles, granted exactly as the README says
CREATE ROLE fs_nobody;
CREATE ROLE fs_usage;
GRANT USAGE ON SCHEMA flashsale TO fs_usage;
CREATE ROLE fs_buyer;
GRANT USAGE ON SCHEMA flashsale TO fs_buyer;
GRANT EXECUTE ON FUNCTION
    flashsale.decrement_stock(bigint, bigint), flashsale.try_decrement_stock(bigint, bigint),
    flashsale.decrement_stock(bigint[], bigint[]), flashsale.stock_level(bigint),
    flashsale.issue_coupon(bigint, bigint), flashsale.try_issue_coupon(bigint, bigint)
    TO fs_buyer;
GRANT EXECUTE ON FUNCTION
    flashsale.get_lock(text, bigint), flashsale.get_xact_lock(text, bigint),
    flashsale.release_lock(text), flashsale.release_all_locks(),
    flashsale.is_free_lock(text), flashsale.is_used_lock(text),
    flashsale.redis_lock(text, bigint, bigint), flashsale.redis_lock_session(text, bigint, bigint),
    flashsale.redis_unlock(text)
    TO fs_buyer;
CREATE ROLE fs_admin;
GRANT USAGE ON SCHEMA flashsale TO fs_admin;
GRANT EXECUTE ON FUNCTION
    flashsale.set_stock(bigint, bigint), flashsale.restore_stock(bigint, bigint),
    flashsale.reload_stock(bigint), flashsale.sync_stock(), flashsale.sync_now(),
    flashsale.create_coupon(text, bigint, integer, timestamptz, timestamptz),
    flashsale.cancel_coupon(bigint)
    TO fs_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA flashsale TO fs_admin;
GRANT UPDATE (name, starts_at, ends_at) ON flashsale.coupon TO fs_admin;
GRANT pg_monitor TO fs_admin;
CREATE ROLE fs_monitor;
GRANT pg_monitor TO fs_monitor;

-- ---- every function, by a role without grants and by one with USAGE only
SET ROLE fs_nobody;
SELECT * FROM pg_temp.call_all();
SET ROLE fs_usage;
SELECT * FROM pg_temp.call_all();
RESET ROLE;

-- ---- the buyer buys and issues without any table privilege
SELECT flashsale.set_stock(100, 10);
SELECT flashsale.create_coupon('security', 5) AS c \gset
SET ROLE fs_buyer;
SELECT flashsale.decrement_stock(100);
SELECT flashsale.try_decrement_stock(100, 2);
SELECT flashsale.decrement_stock(ARRAY[100]::bigint[], ARRAY[1]::bigint[]);
SELECT flashsale.stock_level(100);
SELECT flashsale.issue_coupon(1, :c) > 0 AS issued;
SELECT flashsale.try_issue_coupon(1, :c);
SELECT flashsale.get_lock('security', 0), flashsale.release_lock('security');
-- and is refused every direct write, and reading members' coupons
SELECT pg_temp.try('INSERT INTO flashsale.stock_ledger (product_id, quantity) VALUES (100, -1000)');
SELECT pg_temp.try('UPDATE flashsale.stock SET quantity = 1000000');
SELECT pg_temp.try('INSERT INTO flashsale.stock (product_id, quantity) VALUES (101, 5)');
SELECT pg_temp.try(format('INSERT INTO flashsale.member_coupon (coupon_id, member_id, seq, per_member_limit) VALUES (%s, 2, 1, 1)', :c));
SELECT pg_temp.try('UPDATE flashsale.coupon_stripe SET issued = 0');
SELECT pg_temp.try('UPDATE flashsale.coupon SET total_quantity = 1000');
SELECT pg_temp.try('DELETE FROM flashsale.coupon');
SELECT pg_temp.try('SELECT * FROM flashsale.member_coupon');
SELECT pg_temp.try('SELECT flashsale.set_stock(100, 1000)');
SELECT pg_temp.try('SELECT flashsale.restore_stock(100, 1000)');
SELECT pg_temp.try('SELECT flashsale.reload_stock(100)');
SELECT pg_temp.try('SELECT flashsale.sync_stock()');
SELECT pg_temp.try('SELECT flashsale.cancel_coupon(1)');
SELECT pg_temp.try('SELECT flashsale.redis_call(''FLUSHALL'')');
RESET ROLE;
-- what the buyer did is all that happened: 4 units in 3 ledger rows, 6 left; one coupon unit
SELECT db_left, "left", in_flight FROM flashsale.stock_status WHERE product_id = 100;
SELECT count(*), sum(quantity) FROM flashsale.stock_ledger WHERE product_id = 100;
SELECT issued FROM flashsale.coupon_status WHERE coupon_id = :c;

-- ---- a failing check never touches Redis first
SET ROLE fs_usage;
SELECT pg_temp.try('SELECT flashsale.decrement_stock(100)');
RESET ROLE;
SELECT pool + available AS "left", in_flight FROM flashsale.stock_redis(100);
BEGIN READ ONLY;
SELECT pg_temp.try('SELECT flashsale.decrement_stock(100)');
SELECT pg_temp.try('SELECT flashsale.decrement_stock(ARRAY[100]::bigint[], ARRAY[1]::bigint[])');
SELECT pg_temp.try('SELECT flashsale.set_stock(100, 1)');
SELECT pg_temp.try('SELECT flashsale.sync_stock()');
SELECT pool + available AS "left", in_flight FROM flashsale.stock_redis(100);
ROLLBACK;

-- ---- the admin manages stock and coupons through the functions
SET ROLE fs_admin;
SELECT flashsale.restore_stock(100, 1);
SELECT flashsale.set_stock(100, 20);
SELECT flashsale.create_coupon('by admin', 3) > :c AS created;
SELECT flashsale.cancel_coupon(member_coupon_id) FROM flashsale.member_coupon WHERE coupon_id = :c;
SELECT products >= 1 AS synced, errors FROM flashsale.sync_stock();
UPDATE flashsale.coupon SET ends_at = now() + interval '1 day' WHERE coupon_id = :c;
SELECT db_left, "left" FROM flashsale.stock_status WHERE product_id = 100;
SELECT pg_temp.try('INSERT INTO flashsale.stock_ledger (product_id, quantity) VALUES (100, -1000)');
SELECT pg_temp.try('UPDATE flashsale.coupon SET total_quantity = 1000');
SELECT pg_temp.try('SELECT flashsale.redis_call(''PING'')');
RESET ROLE;

-- ---- monitoring (pg_monitor) reads the views, changes nothing
SET ROLE fs_monitor;
SELECT db_left, "left", in_flight FROM flashsale.stock_status WHERE product_id = 100;
SELECT issued, remaining FROM flashsale.coupon_status WHERE coupon_id = :c;
SELECT count(*) FROM flashsale.worker_status;
SELECT count(*) FROM flashsale.locks;
SELECT pg_temp.try('SELECT flashsale.decrement_stock(100)');
SELECT pg_temp.try('SELECT * FROM flashsale.stock');
RESET ROLE;

-- ---- search_path: operators and functions planted in public never run
\i :abs_srcdir/test/sql/plant_search_path.sql
-- the probe works: an unqualified query of a superuser with public first runs the planted operator
SET search_path = public, pg_catalog;
SELECT 5::bigint - 2::numeric AS control;
RESET search_path;
SELECT count(*) AS control_ran, bool_or(r.rolsuper) AS mallory_superuser
FROM public.hijack, pg_roles r WHERE r.rolname = 'fs_mallory';
ALTER ROLE fs_mallory NOSUPERUSER;
TRUNCATE public.hijack;
-- every function of flashsale, run by a superuser with public first: nothing planted runs
SET search_path = public, pg_catalog;
SELECT flashsale.create_coupon('probe', 10, 2) AS p \gset
SELECT flashsale.issue_coupon(7, :p) AS u \gset
SELECT flashsale.try_issue_coupon(7, :p);
SELECT flashsale.cancel_coupon(:u);
SELECT flashsale.set_stock(300, 50);
SELECT flashsale.reload_stock(300);
SELECT flashsale.stock_level(300);
SELECT flashsale.decrement_stock(300);
SELECT flashsale.try_decrement_stock(300, 2);
SELECT flashsale.decrement_stock(ARRAY[300, 100]::bigint[], ARRAY[1, 1]::bigint[]);
BEGIN;
SELECT flashsale.decrement_stock(300);
ROLLBACK;
SELECT flashsale.restore_stock(300, 1);
-- a committed sale: the pass checks the product against the database and folds its ledger
SELECT flashsale.decrement_stock(300);
SELECT products >= 2 AS synced, drift_fixed OPERATOR(pg_catalog.=) 0 AS no_drift, ledger_rows_folded >= 1 AS folded, errors
FROM flashsale.sync_stock();
-- (this script's own conditions name pg_catalog's operator)
SELECT db_left, "left", in_flight FROM flashsale.stock_status
WHERE product_id OPERATOR(pg_catalog.=) 300;
SELECT issued FROM flashsale.coupon_status WHERE coupon_id OPERATOR(pg_catalog.=) :p;
DELETE FROM flashsale.stock WHERE product_id OPERATOR(pg_catalog.=) 300;
SELECT pg_temp.try('SELECT flashsale.decrement_stock(300)');
RESET search_path;
SELECT count(h.who) AS planted_ran, bool_or(r.rolsuper) AS mallory_superuser
FROM pg_roles r LEFT JOIN public.hijack h ON true WHERE r.rolname = 'fs_mallory';

-- ---- stock keys belong to this installation
SELECT flashsale.set_stock(200, 5);
SELECT flashsale.decrement_stock(200);
SELECT stock_key = format('stock:%s.%s.%s:{200}', s.system_identifier, d.oid,
                          pg_relation_filenode('flashsale.stock')) AS key_names_installation,
       allot_key = stock_key || ':allot' AS allot_beside
FROM flashsale.stock_keys(200), pg_control_system() s, pg_database d
WHERE d.datname = current_database();
SELECT stock_key AS k200 FROM flashsale.stock_keys(200) \gset
-- a deleted stock row stops the sale, in Redis too
DELETE FROM flashsale.stock WHERE product_id = 200;
SELECT pg_temp.try('SELECT flashsale.decrement_stock(200)');
SELECT flashsale.redis_call('EXISTS', :'k200') AS redis_has_it;
-- TRUNCATE starts a new generation of keys: nothing of the old one sells
SELECT flashsale.set_stock(201, 5);
SELECT flashsale.decrement_stock(201);
SELECT stock_key AS k201 FROM flashsale.stock_keys(201) \gset
TRUNCATE flashsale.stock, flashsale.stock_ledger;
SELECT stock_key <> :'k201' AS new_key FROM flashsale.stock_keys(201);
SELECT pg_temp.try('SELECT flashsale.decrement_stock(201)');
-- a dropped and re-created extension never sells what the old one left in Redis
SELECT flashsale.set_stock(202, 5);
SELECT flashsale.decrement_stock(202);
SELECT stock_key AS k202 FROM flashsale.stock_keys(202) \gset
DROP EXTENSION flashsale;
CREATE EXTENSION flashsale;
SELECT stock_key <> :'k202' AS new_key FROM flashsale.stock_keys(202);
SELECT pg_temp.try('SELECT flashsale.decrement_stock(202)');
SELECT pg_temp.try('SELECT flashsale.try_decrement_stock(202)');
SELECT pg_temp.try('SELECT flashsale.decrement_stock(ARRAY[202]::bigint[], ARRAY[1]::bigint[])');
SELECT pg_temp.try('SELECT flashsale.stock_level(202)');
SELECT pg_temp.try('SELECT flashsale.restore_stock(202, 1)');
SELECT flashsale.redis_call('GET', :'k202') AS old_key_left_inert;
SELECT count(*) AS products FROM flashsale.stock_status;

-- ---- clean up
DROP OWNED BY fs_mallory, fs_buyer, fs_admin, fs_monitor, fs_usage;
DROP TABLE public.hijack;
DROP ROLE fs_nobody, fs_usage, fs_buyer, fs_admin, fs_monitor, fs_mallory;
