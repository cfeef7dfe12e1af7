/* flashsale--1.3--1.4.sql: the coupon guard that lets issuance skip the hot-row foreign-key lock */

\echo Use "ALTER EXTENSION flashsale UPDATE TO '1.4'" to load this file. \quit

-- Issuers hold the coupon's guard lock (shared) to the end of their
-- transaction instead of share-locking the coupon row through member_coupon's
-- foreign key, which serialises every issuer of a hot coupon on one row.
-- Deleting a coupon, or changing the columns member_coupon references, takes
-- the guard exclusively: it waits for the issuers in flight, and the
-- foreign key's own checks then see their rows.
CREATE FUNCTION flashsale.coupon_guard()
RETURNS trigger AS 'MODULE_PATHNAME', 'fs_coupon_guard' LANGUAGE C;

CREATE TRIGGER coupon_guard
    BEFORE DELETE OR UPDATE OF coupon_id, per_member_limit ON flashsale.coupon
    FOR EACH ROW EXECUTE FUNCTION flashsale.coupon_guard();
