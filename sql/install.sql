-- A fresh install at the default version.
CREATE EXTENSION flashsale;
SELECT extversion FROM pg_extension WHERE extname = 'flashsale';
SELECT * FROM flashsale.version();
SELECT nspname FROM pg_namespace WHERE nspname = 'flashsale';
-- everything the extension owns
SELECT pg_describe_object(classid, objid, 0) AS object
FROM pg_depend
WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
  AND classid <> 'pg_type'::regclass  -- row types: listed as members since 17
  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'flashsale')
ORDER BY 1;
-- the GUCs, with their defaults (test/regress.conf points redis_port at its own Redis
-- and makes the registries small)
SELECT name, CASE WHEN name = 'flashsale.redis_port' THEN '(test)' ELSE setting END AS setting,
       unit, context
FROM pg_settings WHERE name LIKE 'flashsale.%' ORDER BY 1;
-- prefix reserved: a typo is refused
SET flashsale.lock_timout = 10;
DO $$ BEGIN SET flashsale.lock_timeout = -1; EXCEPTION WHEN invalid_parameter_value THEN RAISE NOTICE 'refused: %', SQLSTATE; END $$;
-- dropping leaves only the (empty) schema behind; re-creating works
DROP EXTENSION flashsale;
SELECT count(*) FROM pg_class WHERE relnamespace = 'flashsale'::regnamespace;
SELECT count(*) FROM pg_proc WHERE pronamespace = 'flashsale'::regnamespace;
CREATE EXTENSION flashsale;
