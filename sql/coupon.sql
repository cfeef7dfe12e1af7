-- Coupon API: every status, every error with its SQLSTATE, cancel, backstops.
\set VERBOSITY terse
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/test/sql/try.sql
CREATE FUNCTION pg_temp.counts() RETURNS text LANGUAGE sql AS $$
    SELECT format('coupons=%s stripes=%s member_coupons=%s issued=%s',
        (SELECT count(*) FROM flashsale.coupon),
        (SELECT count(*) FROM flashsale.coupon_stripe),
        (SELECT count(*) FROM flashsale.member_coupon),
        (SELECT coalesce(sum(issued), 0) FROM flashsale.coupon_stripe)) $$;

-- create_coupon
SELECT flashsale.create_coupon('welcome', 5) AS c1;
SELECT flashsale.create_coupon('triple', 100, 3) AS c2;
SELECT flashsale.create_coupon('future', 10, 1, now() + interval '1 day') AS c3;
SELECT flashsale.create_coupon('expired', 10, 1, now() - interval '2 days', now() - interval '1 day') AS c4;
SELECT coupon_id, name, total_quantity, issued, remaining, per_member_limit, active, stripes
FROM flashsale.coupon_status ORDER BY coupon_id;
-- stripes: capped at the quantity, set by flashsale.coupon_stripes
SET flashsale.coupon_stripes = 4;
SELECT flashsale.create_coupon('four stripes', 10) AS c5;
RESET flashsale.coupon_stripes;
SELECT stripe, quantity, issued FROM flashsale.coupon_stripe WHERE coupon_id = 5 ORDER BY stripe;

-- create_coupon errors change nothing
SELECT pg_temp.counts();
SELECT pg_temp.try($$SELECT flashsale.create_coupon(NULL, 10)$$);
SELECT pg_temp.try($$SELECT flashsale.create_coupon('x', NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.create_coupon('x', 10, NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.create_coupon('x', 10, 1, NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.create_coupon('x', 0)$$);
SELECT pg_temp.try($$SELECT flashsale.create_coupon('x', -5)$$);
SELECT pg_temp.try($$SELECT flashsale.create_coupon('x', 10, 0)$$);
SELECT pg_temp.try($$SELECT flashsale.create_coupon('x', 10, 1, now(), now() - interval '1 hour')$$);
SELECT pg_temp.counts();

-- issue: every status of try_issue_coupon
SELECT flashsale.try_issue_coupon(1001, 1);   -- issued
SELECT flashsale.try_issue_coupon(1001, 1);   -- already_issued (limit 1)
SELECT flashsale.try_issue_coupon(1001, 3);   -- not_active (starts tomorrow)
SELECT flashsale.try_issue_coupon(1001, 4);   -- not_active (ended yesterday)
SELECT flashsale.try_issue_coupon(1001, 999); -- not_found
SELECT flashsale.try_issue_coupon(m, 1) AS status, count(*)
FROM generate_series(1002, 1010) m GROUP BY 1 ORDER BY 1;   -- 4 issued, 5 sold_out
SELECT total_quantity, issued, remaining FROM flashsale.coupon_status WHERE coupon_id = 1;

-- issue_coupon: returns the new member_coupon_id, raises the same outcomes
SELECT flashsale.issue_coupon(2001, 2) AS id \gset
SELECT member_id, coupon_id, seq FROM flashsale.member_coupon WHERE member_coupon_id = :id;
SELECT pg_temp.counts();
SELECT pg_temp.try($$SELECT flashsale.issue_coupon(1001, 1)$$);  -- at the limit
SELECT pg_temp.try($$SELECT flashsale.issue_coupon(1011, 1)$$);  -- sold out
SELECT pg_temp.try($$SELECT flashsale.issue_coupon(1001, 3)$$);  -- not active
SELECT pg_temp.try($$SELECT flashsale.issue_coupon(1001, 999)$$);  -- not found
SELECT pg_temp.try($$SELECT flashsale.issue_coupon(NULL, 1)$$);
SELECT pg_temp.try($$SELECT flashsale.issue_coupon(1001, NULL)$$);
SELECT pg_temp.try($$SELECT flashsale.try_issue_coupon(NULL, 1)$$);
SELECT pg_temp.try($$SELECT flashsale.try_issue_coupon(1, NULL)$$);
SELECT pg_temp.counts();
-- the error's detail and hint
\set VERBOSITY default
SELECT flashsale.issue_coupon(1011, 1);
\set VERBOSITY terse

-- per-member limit 3
SELECT flashsale.try_issue_coupon(2001, 2), flashsale.try_issue_coupon(2001, 2),
       flashsale.try_issue_coupon(2001, 2);
SELECT seq FROM flashsale.member_coupon WHERE coupon_id = 2 AND member_id = 2001 ORDER BY seq;

-- cancel: the unit returns to the pool, the member's seq is free again
SELECT flashsale.cancel_coupon(member_coupon_id) FROM flashsale.member_coupon
WHERE coupon_id = 2 AND member_id = 2001 AND seq = 2;
SELECT seq FROM flashsale.member_coupon WHERE coupon_id = 2 AND member_id = 2001 ORDER BY seq;
SELECT issued, remaining FROM flashsale.coupon_status WHERE coupon_id = 2;
SELECT flashsale.try_issue_coupon(2001, 2);
SELECT seq FROM flashsale.member_coupon WHERE coupon_id = 2 AND member_id = 2001 ORDER BY seq;
-- a sold-out coupon is issued again after a cancel
SELECT flashsale.cancel_coupon(member_coupon_id) FROM flashsale.member_coupon
WHERE coupon_id = 1 AND member_id = 1001;
SELECT flashsale.try_issue_coupon(1011, 1), flashsale.try_issue_coupon(1012, 1);
SELECT issued, remaining FROM flashsale.coupon_status WHERE coupon_id = 1;
-- cancelling twice, or an unknown id: false; NULL: error
SELECT flashsale.cancel_coupon(1);
SELECT flashsale.cancel_coupon(-1);
SELECT pg_temp.try($$SELECT flashsale.cancel_coupon(NULL)$$);

-- rollback of the calling transaction undoes the issue and the cancel
SELECT pg_temp.counts();
BEGIN;
SELECT flashsale.try_issue_coupon(3001, 2);
SELECT flashsale.cancel_coupon((SELECT min(member_coupon_id) FROM flashsale.member_coupon));
ROLLBACK;
SELECT pg_temp.counts();
-- a savepoint rolled back undoes its part only
BEGIN;
SELECT flashsale.try_issue_coupon(3002, 2);
SAVEPOINT s;
SELECT flashsale.try_issue_coupon(3003, 2);
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT member_id FROM flashsale.member_coupon WHERE member_id IN (3002, 3003);
-- REPEATABLE READ behaves the same
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT flashsale.try_issue_coupon(3004, 2), flashsale.try_issue_coupon(3004, 2);
COMMIT;

-- the unique constraint is the backstop for INSERTs that bypass the functions
SELECT pg_temp.try($$INSERT INTO flashsale.member_coupon (coupon_id, member_id, seq, per_member_limit)
                     VALUES (2, 2001, 1, 3)$$);  -- seq taken
SELECT pg_temp.try($$INSERT INTO flashsale.member_coupon (coupon_id, member_id, seq, per_member_limit)
                     VALUES (2, 2001, 4, 3)$$);  -- seq above the limit
SELECT pg_temp.try($$INSERT INTO flashsale.member_coupon (coupon_id, member_id, seq, per_member_limit)
                     VALUES (2, 2001, 4, 4)$$);  -- lying about the limit
SELECT pg_temp.try($$INSERT INTO flashsale.member_coupon (coupon_id, member_id, seq)
                     VALUES (2, 2001, 4)$$);     -- no limit given
SELECT pg_temp.try($$INSERT INTO flashsale.member_coupon (coupon_id, member_id, seq, per_member_limit)
                     VALUES (999, 1, 1, 1)$$);   -- no such coupon
SELECT pg_temp.try($$UPDATE flashsale.coupon_stripe SET issued = quantity + 1 WHERE coupon_id = 1$$);
-- a direct insert of a free seq is allowed; the function then treats that member as holding it
INSERT INTO flashsale.member_coupon (coupon_id, member_id, seq, per_member_limit) VALUES (2, 4001, 1, 3);
SELECT flashsale.try_issue_coupon(4001, 2);
SELECT seq, stripe IS NOT NULL AS via_function FROM flashsale.member_coupon
WHERE coupon_id = 2 AND member_id = 4001 ORDER BY seq;

-- issuance writes the tables directly (not through SQL): what it must still honour
-- a read-only transaction: 25006, nothing written
BEGIN READ ONLY;
SELECT pg_temp.try($$SELECT flashsale.try_issue_coupon(5001, 2)$$);
ROLLBACK;
-- a role without grants (EXECUTE is the capability): 42501, nothing written
CREATE ROLE fs_coupon_nobody;
SET ROLE fs_coupon_nobody;
SELECT pg_temp.try($$SELECT flashsale.try_issue_coupon(5002, 2)$$);
RESET ROLE;
DROP ROLE fs_coupon_nobody;
SELECT count(*) FROM flashsale.member_coupon WHERE member_id IN (5001, 5002);
-- a CHECK constraint added to member_coupon applies to issued rows (23514)
ALTER TABLE flashsale.member_coupon ADD CONSTRAINT positive_member CHECK (member_id > 0);
SELECT pg_temp.try($$SELECT flashsale.try_issue_coupon(-5003, 2)$$);
ALTER TABLE flashsale.member_coupon DROP CONSTRAINT positive_member;
SELECT flashsale.try_issue_coupon(-5003, 2);
-- a trigger of the user's on member_coupon fires for issued rows
CREATE TABLE pg_temp.issued_log (member_id bigint, seq int);
CREATE FUNCTION pg_temp.log_issue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.issued_log VALUES (NEW.member_id, NEW.seq);
    RETURN NEW;
END $$;
CREATE TRIGGER log_issue AFTER INSERT ON flashsale.member_coupon
    FOR EACH ROW EXECUTE FUNCTION pg_temp.log_issue();
SELECT flashsale.try_issue_coupon(5004, 2), flashsale.try_issue_coupon(5004, 2);
DROP TRIGGER log_issue ON flashsale.member_coupon;
SELECT * FROM pg_temp.issued_log;
-- the coupon guard: member_coupon's foreign key still holds for issued rows
SELECT flashsale.create_coupon('guarded', 10, 1) AS c6 \gset
SELECT flashsale.try_issue_coupon(6001, :c6);
SELECT pg_temp.try($$DELETE FROM flashsale.coupon WHERE coupon_id = $$ || :c6);  -- 23503
UPDATE flashsale.coupon SET per_member_limit = 2 WHERE coupon_id = :c6;     -- cascades
SELECT member_id, seq, per_member_limit FROM flashsale.member_coupon WHERE coupon_id = :c6;
SELECT flashsale.try_issue_coupon(6001, :c6), flashsale.try_issue_coupon(6001, :c6);

-- flashsale.lock_timeout
SHOW flashsale.lock_timeout;
SET flashsale.lock_timeout = '250ms';
SHOW flashsale.lock_timeout;
RESET flashsale.lock_timeout;

-- final accounting: the view agrees with the rows issued through the functions
SELECT c.coupon_id, s.issued, (SELECT count(*) FROM flashsale.member_coupon m
                               WHERE m.coupon_id = c.coupon_id AND m.stripe IS NOT NULL) AS rows
FROM flashsale.coupon c JOIN flashsale.coupon_status s USING (coupon_id) ORDER BY 1;
