-- pg_temp.try(q): runs q and shows 'ok' or 'SQLSTATE: message' instead of
-- aborting the script.  Each pg_regress file is a session of its own and
-- includes this (\i :abs_srcdir/test/sql/try.sql).
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
