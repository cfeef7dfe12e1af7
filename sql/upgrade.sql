-- The upgrade chain: 1.0 with data, then ALTER EXTENSION ... UPDATE.
DROP EXTENSION flashsale;
CREATE EXTENSION flashsale VERSION '1.0';
SELECT flashsale.create_coupon('kept', 3) AS c \gset
SELECT flashsale.try_issue_coupon(1, :c);
ALTER EXTENSION flashsale UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'flashsale';
SELECT coupon_id, name, total_quantity, issued FROM flashsale.coupon_status WHERE coupon_id = :c;
SELECT flashsale.try_issue_coupon(2, :c);
SELECT flashsale.set_stock(42, 3);
SELECT flashsale.decrement_stock(42);
-- same objects as a fresh install
SELECT pg_describe_object(classid, objid, 0) AS object
FROM pg_depend
WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
  AND classid <> 'pg_type'::regclass  -- row types: listed as members since 17
  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'flashsale')
ORDER BY 1;
-- a backend that has issued keeps working after the extension is recreated:
-- it remembers the tables' OIDs and where its stripe's row was, and must
-- notice both changed (here the remembered row lies beyond the new table's end)
SET flashsale.coupon_stripes = 1;
SELECT count(flashsale.create_coupon('filler', 1)) FROM generate_series(1, 40);
SELECT max(coupon_id) AS b FROM flashsale.coupon \gset
SELECT flashsale.try_issue_coupon(9, :b);
SELECT (ctid::text::point)[0] > 0 AS beyond_first_page FROM flashsale.coupon_stripe WHERE coupon_id = :b;
DROP EXTENSION flashsale;
CREATE EXTENSION flashsale;
SELECT setval('flashsale.coupon_coupon_id_seq', :b - 1) IS NOT NULL AS reset;
SELECT flashsale.create_coupon('same id', 2) = :b AS same_id;
RESET flashsale.coupon_stripes;
SELECT flashsale.try_issue_coupon(9, :b), flashsale.try_issue_coupon(9, :b), flashsale.try_issue_coupon(10, :b);
SELECT issued, remaining FROM flashsale.coupon_status WHERE coupon_id = :b;
