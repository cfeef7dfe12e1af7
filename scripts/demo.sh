#!/usr/bin/env bash
# The flash-sale demo: a throwaway PostgreSQL cluster (initdb in a temp dir,
# loopback port, flashsale preloaded), one hot coupon, concurrent issuers
# fired at it by pgbench, and a short report. Leaves nothing running.
#   scripts/demo.sh [clients, default 64] [attempts per client, default 500]
source "$(dirname "$0")/lib.sh"

CLIENTS=${1:-64}
PER_CLIENT=${2:-500}
QUANTITY=${QUANTITY:-10000}
MEMBERS=${MEMBERS:-20000}

fs_install_deps
fs_build

dir=$(fs_tmpdir)
port=$(fs_free_port)
fs_log "starting a throwaway PostgreSQL on 127.0.0.1:$port"
fs_pg_start "$dir/data" "$port"

fs_psql "$port" "CREATE EXTENSION flashsale" >/dev/null
coupon=$(fs_psql "$port" "SELECT flashsale.create_coupon('flash sale', $QUANTITY, 1)")
fs_psql "$port" "CREATE UNLOGGED TABLE public.attempt (status text NOT NULL)" >/dev/null

cat > "$dir/issue.sql" <<SQL
\\set m random(1, $MEMBERS)
INSERT INTO public.attempt SELECT flashsale.try_issue_coupon(:m, $coupon);
SQL
chmod 644 "$dir/issue.sql"

fs_log "coupon $coupon: $QUANTITY units, 1 per member; $CLIENTS clients x $PER_CLIENT attempts from $MEMBERS members"
out=$(fs_as_pg pgbench -n -M prepared -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j 2 \
    -t "$PER_CLIENT" -f "$dir/issue.sql" postgres 2>&1)
tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3}')

echo
echo "flash-sale report (coupon $coupon)"
fs_psql "$port" "
SELECT format('  %-24s %s', 'attempts', count(*)) FROM attempt
UNION ALL
SELECT format('  %-24s %s', s, (SELECT count(*) FROM attempt a WHERE a.status = s))
FROM unnest(ARRAY['issued', 'sold_out', 'already_issued', 'not_active', 'not_found']) s
UNION ALL
SELECT format('  %-24s %s of %s', 'units issued (table)', issued, total_quantity)
FROM flashsale.coupon_status WHERE coupon_id = $coupon
UNION ALL
SELECT format('  %-24s %s', 'duplicates found', count(*)) FROM (
    SELECT member_id FROM flashsale.member_coupon WHERE coupon_id = $coupon
    GROUP BY member_id HAVING count(*) > 1) d
UNION ALL
SELECT format('  %-24s %s', 'oversold units', greatest(0, count(*) - $QUANTITY))
FROM flashsale.member_coupon WHERE coupon_id = $coupon"
echo "  tps                      $tps"
