/* flashsale--1.0--1.1.sql: stock in Redis, bound to the calling transaction */

\echo Use "ALTER EXTENSION flashsale UPDATE TO '1.1'" to load this file. \quit

-- The database's copy of each product's stock. Units left according to the
-- database = quantity - the ledger's rows (the worker folds them in).
CREATE TABLE flashsale.stock (
    product_id bigint PRIMARY KEY,
    quantity   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Append-only: one row per product per committed decrement (positive) or
-- restore (negative), written by the decrementing transaction itself, so a
-- sale is durable without an UPDATE of the product's (hot) row. No foreign
-- key on purpose: its FOR KEY SHARE lock would make that row hot again.
CREATE TABLE flashsale.stock_ledger (
    entry_id   bigserial PRIMARY KEY,
    product_id bigint NOT NULL,
    quantity   bigint NOT NULL,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stock_ledger_product_id_idx ON flashsale.stock_ledger (product_id);

CREATE FUNCTION flashsale.set_stock(product_id bigint, quantity bigint)
RETURNS void AS 'MODULE_PATHNAME', 'fs_set_stock' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.decrement_stock(product_id bigint, quantity bigint DEFAULT 1)
RETURNS bigint AS 'MODULE_PATHNAME', 'fs_decrement_stock' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.try_decrement_stock(product_id bigint, quantity bigint DEFAULT 1)
RETURNS bigint AS 'MODULE_PATHNAME', 'fs_try_decrement_stock' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.decrement_stock(product_ids bigint[], quantities bigint[])
RETURNS bigint[] AS 'MODULE_PATHNAME', 'fs_decrement_stock_multi' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.restore_stock(product_id bigint, quantity bigint)
RETURNS bigint AS 'MODULE_PATHNAME', 'fs_restore_stock' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.stock_level(product_id bigint)
RETURNS bigint AS 'MODULE_PATHNAME', 'fs_stock_level' LANGUAGE C VOLATILE;

-- Drops what Redis holds of a product now; its next use reloads it from the
-- database. Safe at any time (the reload waits for transactions in flight).
CREATE FUNCTION flashsale.reload_stock(product_id bigint)
RETURNS boolean AS 'MODULE_PATHNAME', 'fs_reload_stock' LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.stock_redis(product_id bigint,
                                      OUT redis_left bigint, OUT reserved_in_flight bigint)
RETURNS record AS 'MODULE_PATHNAME', 'fs_stock_redis' LANGUAGE C VOLATILE;

-- Per product: the database's figure, Redis' figure and the units reserved by
-- transactions still in flight. When all is well, db_left = redis_left +
-- reserved_in_flight. Asks Redis once per product.
CREATE VIEW flashsale.stock_status AS
SELECT s.product_id,
       (s.quantity - coalesce(l.sold, 0))::bigint AS db_left,
       r.redis_left,
       r.reserved_in_flight,
       s.updated_at
FROM flashsale.stock s
LEFT JOIN (SELECT product_id, sum(quantity) AS sold
           FROM flashsale.stock_ledger GROUP BY product_id) l USING (product_id)
CROSS JOIN LATERAL flashsale.stock_redis(s.product_id) r;

GRANT SELECT ON flashsale.stock TO PUBLIC;
