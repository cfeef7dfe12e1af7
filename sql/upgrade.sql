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
  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'flashsale')
ORDER BY 1;
