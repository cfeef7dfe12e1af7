#!/usr/bin/env bash
# Coupon issuance benchmark (not a test): one hot coupon, 16 and 64 clients,
# three contenders measured in the same run on the same throwaway cluster:
#   naive     PL/pgSQL: pg_advisory_xact_lock(coupon), check, insert (lock held through commit)
#   ceiling   uncapped INSERT ... ON CONFLICT DO NOTHING into a uniquely constrained table
#   flashsale flashsale.try_issue_coupon(member, coupon)
# Prints tps and the ratios flashsale/naive and flashsale/ceiling.
# Each figure is the median of ROUNDS runs; a round runs the three contenders
# one after the other, each after a CHECKPOINT, so that no contender is the
# one that pays for the full-page writes after a checkpoint, and a slow spell
# of the machine hits all three alike.
# Usage: test/bench/coupon_bench.sh [seconds per run, default 10] [rounds, default 3]
source "$(dirname "$0")/../../scripts/lib.sh"

SECS=${1:-10}
ROUNDS=${2:-3}
dir=$(fs_tmpdir)
port=$(fs_free_port)
fs_pg_start "$dir/data" "$port" "synchronous_commit = on"

fs_psql "$port" "CREATE EXTENSION flashsale" >/dev/null
fs_psql "$port" "$(cat <<'SQL'
CREATE SCHEMA bench;
CREATE TABLE bench.naive_coupon (coupon_id bigint PRIMARY KEY, total bigint NOT NULL, issued bigint NOT NULL DEFAULT 0);
CREATE TABLE bench.naive_member_coupon (id bigserial PRIMARY KEY, coupon_id bigint NOT NULL, member_id bigint NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT now(), UNIQUE (coupon_id, member_id));
INSERT INTO bench.naive_coupon VALUES (1, 1000000000);
CREATE FUNCTION bench.naive_issue(m bigint, c bigint) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(c);
    IF EXISTS (SELECT 1 FROM bench.naive_member_coupon WHERE coupon_id = c AND member_id = m) THEN
        RETURN 'already_issued';
    END IF;
    UPDATE bench.naive_coupon SET issued = issued + 1 WHERE coupon_id = c AND issued < total;
    IF NOT FOUND THEN
        RETURN 'sold_out';
    END IF;
    INSERT INTO bench.naive_member_coupon (coupon_id, member_id) VALUES (c, m);
    RETURN 'issued';
END $$;
CREATE TABLE bench.ceiling (id bigserial PRIMARY KEY, coupon_id bigint NOT NULL, member_id bigint NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT now(), UNIQUE (coupon_id, member_id));
SELECT flashsale.create_coupon('bench', 1000000000);
SQL
)" >/dev/null

cat > "$dir/naive.sql" <<'SQL'
\set m random(1, 2000000000)
SELECT bench.naive_issue(:m, 1);
SQL
cat > "$dir/ceiling.sql" <<'SQL'
\set m random(1, 2000000000)
INSERT INTO bench.ceiling (coupon_id, member_id) VALUES (1, :m) ON CONFLICT DO NOTHING;
SQL
cat > "$dir/flashsale.sql" <<'SQL'
\set m random(1, 2000000000)
SELECT flashsale.try_issue_coupon(:m, 1);
SQL
chmod 644 "$dir"/*.sql

run() {
    fs_psql "$port" "CHECKPOINT" >/dev/null
    fs_tps "$port" "$2" "$SECS" "$dir/$1.sql"
}
median() { printf '%s\n' "$@" | fs_median; }

printf '%-8s %10s %10s %10s %16s %18s\n' clients naive ceiling flashsale flashsale/naive flashsale/ceiling
for c in 16 64; do
    ns=(); es=(); fsx=()
    for _ in $(seq 1 "$ROUNDS"); do
        ns+=("$(run naive "$c")"); es+=("$(run ceiling "$c")"); fsx+=("$(run flashsale "$c")")
    done
    n=$(median "${ns[@]}"); e=$(median "${es[@]}"); f=$(median "${fsx[@]}")
    fs_log "$c clients, runs: naive ${ns[*]} / ceiling ${es[*]} / flashsale ${fsx[*]}"
    awk -v c="$c" -v n="$n" -v e="$e" -v f="$f" \
        'BEGIN { printf "%-8s %10d %10d %10d %15.2fx %17.0f%%\n", c, n, e, f, f / n, 100 * f / e }'
done
fs_psql "$port" "SELECT 'flashsale issued ' || issued || ' of ' || total_quantity FROM flashsale.coupon_status"
