/* flashsale--1.0.sql: coupons issued under striped advisory locks */

\echo Use "CREATE EXTENSION flashsale" to load this file. \quit

-- A coupon: a capped pool of units with a per-member limit and an active window.
-- UNIQUE (coupon_id, per_member_limit) is the target of member_coupon's composite
-- foreign key, which is how "seq <= the coupon's limit" holds for any INSERT.
CREATE TABLE flashsale.coupon (
    coupon_id        bigserial PRIMARY KEY,
    name             text NOT NULL,
    total_quantity   bigint NOT NULL CHECK (total_quantity >= 1),
    per_member_limit int NOT NULL DEFAULT 1 CHECK (per_member_limit >= 1),
    starts_at        timestamptz NOT NULL DEFAULT now(),
    ends_at          timestamptz CHECK (ends_at IS NULL OR ends_at > starts_at),
    created_at       timestamptz NOT NULL DEFAULT now(),
    stripes          int NOT NULL DEFAULT 1 CHECK (stripes >= 1),
    UNIQUE (coupon_id, per_member_limit)
);

-- The quantity split into stripes; each stripe is guarded by its own advisory
-- lock, so issuers of one hot coupon commit in parallel. The CHECK is a second
-- backstop against oversell: issued never leaves [0, quantity]. A low
-- fillfactor spreads the stripes of one coupon over several pages.
CREATE TABLE flashsale.coupon_stripe (
    coupon_id bigint NOT NULL REFERENCES flashsale.coupon ON DELETE CASCADE,
    stripe    int    NOT NULL,
    quantity  bigint NOT NULL,
    issued    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (coupon_id, stripe),
    CHECK (stripe >= 0 AND issued BETWEEN 0 AND quantity)
) WITH (fillfactor = 10);

-- One row per unit a member holds. seq runs from 1 to the coupon's limit, so
-- UNIQUE (coupon_id, member_id, seq) means "at most per_member_limit each",
-- even for a direct INSERT that bypasses flashsale's functions.
-- The composite foreign key is member_coupon's reference to coupon: it also
-- carries the limit the CHECK compares seq with.
-- stripe records where the unit came from (NULL for such direct inserts).
CREATE TABLE flashsale.member_coupon (
    member_coupon_id bigserial PRIMARY KEY,
    coupon_id        bigint NOT NULL,
    member_id        bigint NOT NULL,
    seq              int NOT NULL,
    issued_at        timestamptz NOT NULL DEFAULT now(),
    per_member_limit int NOT NULL,
    stripe           int,
    UNIQUE (coupon_id, member_id, seq),
    CHECK (seq BETWEEN 1 AND per_member_limit),
    FOREIGN KEY (coupon_id, per_member_limit)
        REFERENCES flashsale.coupon (coupon_id, per_member_limit)
        MATCH FULL ON UPDATE CASCADE
);

CREATE FUNCTION flashsale.create_coupon(
    name text,
    total_quantity bigint,
    per_member_limit int DEFAULT 1,
    starts_at timestamptz DEFAULT now(),
    ends_at timestamptz DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'fs_create_coupon'
LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.issue_coupon(member_id bigint, coupon_id bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'fs_issue_coupon'
LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.try_issue_coupon(member_id bigint, coupon_id bigint)
RETURNS text
AS 'MODULE_PATHNAME', 'fs_try_issue_coupon'
LANGUAGE C VOLATILE;

CREATE FUNCTION flashsale.cancel_coupon(member_coupon_id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'fs_cancel_coupon'
LANGUAGE C VOLATILE;

-- Per coupon: total, issued (units taken through the functions, committed),
-- remaining, and whether it is active now.
CREATE VIEW flashsale.coupon_status AS
SELECT c.coupon_id,
       c.name,
       c.total_quantity,
       s.issued,
       c.total_quantity - s.issued AS remaining,
       c.per_member_limit,
       c.starts_at,
       c.ends_at,
       (c.starts_at <= statement_timestamp()
        AND (c.ends_at IS NULL OR c.ends_at > statement_timestamp())) AS active,
       c.stripes
FROM flashsale.coupon c
CROSS JOIN LATERAL (
    SELECT coalesce(sum(cs.issued), 0)::bigint AS issued
    FROM flashsale.coupon_stripe cs
    WHERE cs.coupon_id = c.coupon_id) s;

GRANT USAGE ON SCHEMA flashsale TO PUBLIC;
GRANT SELECT ON flashsale.coupon, flashsale.coupon_status TO PUBLIC;
