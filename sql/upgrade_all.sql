-- ALTER EXTENSION flashsale UPDATE from every earlier version (each version
-- pg_available_extension_versions knows, so a new release is covered without
-- touching this file) ends with the same objects as a fresh install: the same
-- members, the same definitions, privileges, initial privileges, comments,
-- and the rows a coupon had before the update are still there.
\set VERBOSITY terse
-- (a version's install or update may warn that the worker syncs another database)
SET client_min_messages = error;
-- one line per fact about the installed extension, free of OIDs
CREATE FUNCTION pg_temp.facts() RETURNS SETOF text LANGUAGE sql AS $$
    WITH ext AS (SELECT oid, extversion, extconfig FROM pg_extension WHERE extname = 'flashsale'),
    member AS (
        SELECT d.classid, d.objid, d.objsubid FROM pg_depend d, ext
        WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e')
    SELECT 'version ' || extversion FROM ext
    UNION ALL
    SELECT 'config table ' || c::regclass::text FROM ext, unnest(extconfig) c
    UNION ALL
    SELECT 'member ' || pg_describe_object(classid, objid, objsubid) FROM member
    UNION ALL
    SELECT 'comment ' || pg_describe_object(m.classid, m.objid, d.objsubid) || ': ' || d.description
    FROM member m JOIN pg_description d ON d.classoid = m.classid AND d.objoid = m.objid
    UNION ALL
    SELECT 'initial privileges ' || pg_describe_object(i.classoid, i.objoid, i.objsubid) || ': '
           || i.initprivs::text
    FROM member m JOIN pg_init_privs i ON i.classoid = m.classid AND i.objoid = m.objid
    UNION ALL
    SELECT 'schema ' || nspname || ' ' || coalesce(nspacl::text, 'default')
    FROM pg_namespace WHERE nspname = 'flashsale'
    UNION ALL
    SELECT format('relation %s %s %s %s', c.oid::regclass, c.relkind,
                  coalesce(c.relacl::text, 'default'), coalesce(c.reloptions::text, ''))
    FROM pg_class c WHERE c.relnamespace = 'flashsale'::regnamespace
    UNION ALL
    -- columns by position among the live ones (SELECT * shows them in this order)
    SELECT format('column %s #%s %s %s %s default %s acl %s', a.attrelid::regclass,
                  row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum), a.attname,
                  format_type(a.atttypid, a.atttypmod), CASE WHEN a.attnotnull THEN 'not null' END,
                  pg_get_expr(ad.adbin, ad.adrelid), a.attacl)
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid AND c.relnamespace = 'flashsale'::regnamespace
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'p')
    UNION ALL
    SELECT format('constraint %s on %s: %s', conname, conrelid::regclass, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace = 'flashsale'::regnamespace
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index
    WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'flashsale'::regnamespace)
    UNION ALL
    SELECT format('view %s: %s', c.oid::regclass, pg_get_viewdef(c.oid))
    FROM pg_class c WHERE c.relnamespace = 'flashsale'::regnamespace AND c.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('sequence %s %s %s %s %s %s', seqrelid::regclass, format_type(seqtypid, NULL),
                  seqstart, seqincrement, seqmax, seqcycle)
    FROM pg_sequence WHERE seqrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'flashsale'::regnamespace)
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t
    JOIN pg_class c ON c.oid = t.tgrelid AND c.relnamespace = 'flashsale'::regnamespace
    WHERE NOT t.tgisinternal
    UNION ALL
    SELECT format('function %s acl %s: %s', p.oid::regprocedure, coalesce(p.proacl::text, 'default'),
                  pg_get_functiondef(p.oid))
    FROM pg_proc p WHERE p.pronamespace = 'flashsale'::regnamespace AND p.prokind <> 'a'
$$;
-- the versions before the default one (a later one may be installed too)
CREATE FUNCTION pg_temp.earlier() RETURNS SETOF text LANGUAGE sql AS $$
    SELECT v.version FROM pg_available_extension_versions v, pg_available_extensions e
    WHERE v.name = 'flashsale' AND e.name = 'flashsale'
      AND string_to_array(v.version, '.')::int[] < string_to_array(e.default_version, '.')::int[]
$$;
CREATE TEMP TABLE fact (version text, fact text);
CREATE TEMP TABLE kept (version text, issued bigint);
-- each earlier version with a coupon in use, updated, described; then a fresh install
DO $$
DECLARE
    v text;
    c bigint;
BEGIN
    FOR v IN SELECT version FROM pg_temp.earlier() version ORDER BY string_to_array(version, '.')::int[]
    LOOP
        -- DROP EXTENSION leaves the schema CREATE EXTENSION made: drop it too,
        -- so that each version starts from nothing
        DROP EXTENSION IF EXISTS flashsale;
        DROP SCHEMA IF EXISTS flashsale;
        EXECUTE format('CREATE EXTENSION flashsale VERSION %L', v);
        COMMIT;
        -- started an hour ago: statement_timestamp() is still the DO's own
        c := flashsale.create_coupon('kept from ' || v, 3, 1, now() - interval '1 hour');
        IF flashsale.try_issue_coupon(1, c) <> 'issued' THEN
            RAISE EXCEPTION 'version %: no unit issued', v;
        END IF;
        COMMIT;
        ALTER EXTENSION flashsale UPDATE;
        COMMIT;
        INSERT INTO kept SELECT v, issued FROM flashsale.coupon_status WHERE coupon_id = c;
        INSERT INTO fact SELECT v, f FROM pg_temp.facts() f;
        COMMIT;
    END LOOP;
    DROP EXTENSION flashsale;
    DROP SCHEMA flashsale;
    CREATE EXTENSION flashsale;
    COMMIT;
    INSERT INTO fact SELECT 'fresh', f FROM pg_temp.facts() f;
END $$;
-- every earlier version was updated
SELECT count(DISTINCT version) = (SELECT count(*) FROM pg_temp.earlier()) AS every_earlier_version,
       count(DISTINCT version) > 0 AS some
FROM fact WHERE version <> 'fresh';
SELECT count(*) > 100 AS facts_described FROM fact WHERE version = 'fresh';
-- what an updated install has that a fresh one has not, and the reverse: no rows
SELECT v.version, 'only after the update' AS side, f.fact
FROM (SELECT DISTINCT version FROM fact WHERE version <> 'fresh') v,
     LATERAL (SELECT fact FROM fact WHERE version = v.version
              EXCEPT ALL SELECT fact FROM fact WHERE version = 'fresh') f
UNION ALL
SELECT v.version, 'only in a fresh install', f.fact
FROM (SELECT DISTINCT version FROM fact WHERE version <> 'fresh') v,
     LATERAL (SELECT fact FROM fact WHERE version = 'fresh'
              EXCEPT ALL SELECT fact FROM fact WHERE version = v.version) f
ORDER BY 1, 2, 3;
-- the coupon made before each update is still there, with its unit issued
SELECT version, issued FROM kept WHERE issued IS DISTINCT FROM 1;
SELECT count(*) = count(DISTINCT version) AS every_version_kept_its_coupon FROM kept;
RESET client_min_messages;
