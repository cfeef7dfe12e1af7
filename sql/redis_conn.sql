-- The Redis connections: redis_call cannot redirect or jam the stock connection, and the
-- password and ACL user settings.  (This suite's Redis has no password.)
\set VERBOSITY terse
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/test/sql/try.sql

-- a sale before
SELECT flashsale.set_stock(20, 10);
SELECT flashsale.decrement_stock(20);

-- redis_call refuses the commands that change a connection's state, sending nothing
SELECT flashsale.redis_call('CONFIG', 'RESETSTAT');
\set VERBOSITY default
SELECT flashsale.redis_call('SELECT', '5');
\set VERBOSITY terse
SELECT pg_temp.try($$SELECT flashsale.redis_call('select', '5')$$);
SELECT pg_temp.try($$SELECT flashsale.redis_call('MULTI')$$);
SELECT pg_temp.try($$SELECT flashsale.redis_call('SUBSCRIBE', 'x')$$);
SELECT pg_temp.try($$SELECT flashsale.redis_call('CLIENT', 'REPLY', 'OFF')$$);
SELECT pg_temp.try($$SELECT flashsale.redis_call('Swapdb', '0', '5')$$);
SELECT flashsale.redis_call('INFO', 'commandstats') ~ 'cmdstat_(select|swapdb|multi|subscribe|client)'
       AS any_sent;
-- still answering, and not in a MULTI (a queued SET would answer QUEUED)
SELECT flashsale.redis_call('PING');
SELECT flashsale.redis_call('SET', 'fs_conn_test', 'v'), flashsale.redis_call('DEL', 'fs_conn_test');

-- a sale after; the stock stayed in database 0, database 5 is empty
SELECT flashsale.decrement_stock(20);
SELECT flashsale.stock_level(20);
SELECT pool + available AS "left", in_flight FROM flashsale.stock_redis(20);
SELECT flashsale.redis_call('DBSIZE')::int > 0 AS db0_has_keys,
       flashsale.redis_call('INFO', 'keyspace') ~ 'db[1-9]' AS other_db_used,
       flashsale.redis_call('EVAL', 'redis.call(''SELECT'', 5) return redis.call(''DBSIZE'')', '0')
       AS db5_keys;

-- flashsale.redis_user: a change reconnects, logging in as that ACL user
SET flashsale.redis_user = 'fs_nobody';
SELECT pg_temp.try($$SELECT flashsale.stock_level(20)$$);
SELECT pg_temp.try($$SELECT flashsale.redis_call('PING')$$);
RESET flashsale.redis_user;
SELECT flashsale.stock_level(20), flashsale.redis_call('PING');

-- the Redis password is for superusers only
CREATE ROLE fs_app;
SET ROLE fs_app;
SELECT split_part(pg_temp.try('SHOW flashsale.redis_password'), ':', 1) AS show_password;
SET flashsale.redis_password = 'x';
SET flashsale.key_prefix = 'other:';
RESET ROLE;
SELECT count(*) FROM pg_settings WHERE name = 'flashsale.redis_password';

-- and only set in postgresql.conf or with ALTER SYSTEM: pg_db_role_setting is readable by
-- every role, and every session must log in alike
\set VERBOSITY default
SELECT format('ALTER DATABASE %I SET flashsale.redis_password = %L', current_database(), 'x') \gexec
\set VERBOSITY terse
SELECT pg_temp.try($$ALTER ROLE fs_app SET flashsale.redis_password = 'x'$$);
SELECT pg_temp.try($$ALTER ROLE ALL SET flashsale.redis_password = 'x'$$);
SELECT pg_temp.try($$SET flashsale.redis_password = 'x'$$);
SELECT pg_temp.try($$SELECT set_config('flashsale.redis_password', 'x', true)$$);
SELECT pg_temp.try($$CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql
                     SET flashsale.redis_password = 'x' AS 'SELECT 1'$$);
SELECT count(*) FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') LIKE '%redis_password%';
ALTER SYSTEM SET flashsale.redis_password = 'x';
ALTER SYSTEM RESET flashsale.redis_password;
DROP ROLE fs_app;

-- flashsale.redis_cluster against a Redis that is not a cluster: class 08, the reply in the detail,
-- nothing changed; off again, the same connection settings work
SET flashsale.redis_cluster = on;
DO $$
DECLARE st text; msg text; det text;
BEGIN
    PERFORM flashsale.stock_level(20);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RAISE NOTICE '% % / %', st, msg, regexp_replace(det, ':[0-9]+', ':PORT', 'g');
END $$;
RESET flashsale.redis_cluster;
SELECT flashsale.stock_level(20);
-- more cluster seeds: host:port only
SELECT pg_temp.try($$SET flashsale.redis_cluster_seeds = '10.0.0.2:7000, 10.0.0.3:7000'$$) AS two_seeds;
SELECT pg_temp.try($$SET flashsale.redis_cluster_seeds = '10.0.0.2'$$) AS no_port;
SELECT pg_temp.try($$SET flashsale.redis_cluster_seeds = '10.0.0.2:70000'$$) AS bad_port;
RESET flashsale.redis_cluster_seeds;
-- a brace in key_prefix would be the keys' hash tag: refused
SELECT pg_temp.try($$SET flashsale.key_prefix = 'shop{1}:'$$);
SHOW flashsale.key_prefix;
