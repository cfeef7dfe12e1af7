#!/usr/bin/env bash
# The flash-sale demo: a throwaway PostgreSQL cluster (initdb in a temp dir,
# loopback port, flashsale preloaded) and a throwaway Redis; one hot coupon and
# one hot product, concurrent buyers fired at them by pgbench (some abandon
# their order, and Redis is wiped mid-sale), a short report of each, and the
# background worker's figures after a sync pass. Leaves nothing running.
#   scripts/demo.sh [clients, default 64] [attempts per client, default 500]
#
# While each sale runs, a line a second from the flashsale.stat_* views (units
# left, sales/s, sold-out answers/s, Redis p99, errors); after it, a picture of
# the sale: sales/s and units left over time, a PNG when gnuplot is installed
# (its path printed), a terminal sparkline otherwise.
#   FS_DEMO_OUT=DIR      where the PNGs go (flashsale-demo-coupon.png,
#                        flashsale-demo-stock.png; made if missing): default
#                        the current directory
#   FS_DEMO_GNUPLOT=CMD  the gnuplot to run (default gnuplot); a command that
#                        is not there, or empty, draws the sparkline instead
#
# gnuplot is not installed by the demo: the picture is an extra ("a PNG when
# gnuplot is installed"), and gnuplot-nox is not cheap on the minimal Debian
# the demo starts from: next to what the demo installs it pulls in cairo,
# pango, libgd with its image codecs, X11 client libraries and fonts (on
# Debian 13: 55 packages, 18 MB to download, 53 MB installed), to draw two
# lines the sparkline shows too. `apt-get install gnuplot-nox` gets the PNG.

# FS_DEMO_OUT is relative to where the demo was started (lib.sh goes to /)
FS_DEMO_CALLER_DIR=$PWD
source "$(dirname "$0")/lib.sh"

CLIENTS=${1:-64}
PER_CLIENT=${2:-500}
QUANTITY=${QUANTITY:-10000}
MEMBERS=${MEMBERS:-20000}
DEMO_OUT=${FS_DEMO_OUT:-$FS_DEMO_CALLER_DIR}
[ "${DEMO_OUT#/}" != "$DEMO_OUT" ] || DEMO_OUT=$FS_DEMO_CALLER_DIR/$DEMO_OUT
DEMO_GNUPLOT=${FS_DEMO_GNUPLOT-gnuplot}

# (the test suite, which has just built and installed it, runs the demo with FS_DEMO_BUILT=1)
if [ -z "${FS_DEMO_BUILT:-}" ]; then
    fs_install_deps
    fs_build
fi

STOCK=${STOCK:-20000}

dir=$(fs_tmpdir)
port=$(fs_free_port)
rport=$(fs_free_port)
fs_log "starting a throwaway Redis on 127.0.0.1:$rport and PostgreSQL on 127.0.0.1:$port"
fs_redis_start "$dir/redis" "$rport"
fs_pg_start "$dir/data" "$port" "flashsale.redis_port = $rport"

fs_psql "$port" "CREATE EXTENSION flashsale" >/dev/null

# ---- the live line: one psql session samples the statistics once a second ----
# (one session for the whole sale: a psql start-up takes seconds on a machine
# busy with 64 buyers)
#
# The sample query of each sale prints one row: the clock (ms), units left,
# sales, sold-out answers (cumulative, since the stat_reset() before the sale),
# the worst Redis p99 of the kinds called (ms, '-' before any call), errors
# (Redis' and the worker's).
SAMPLE_COMMON="coalesce((SELECT to_char(max(p99_ms), 'FM999990.00') FROM flashsale.stat_redis
                 WHERE calls > 0), '-'),
       (SELECT coalesce(sum(errors_connect + errors_timeout + errors_reply), 0) FROM flashsale.stat_redis)
       + (SELECT errors FROM flashsale.stat_worker)"
# units left of a product without asking for a rebuild: stock_level() rebuilds
# the pool when Redis lost it, waiting for every buyer with a unit in flight,
# and after the FLUSHALL it would do so for the demo; stock_status only reads
# (left = pool + allotment; without the pool, the database's truth less the
# units in flight, which is the same figure)
sample_stock_sql() { # product
    echo "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
       (SELECT coalesce(\"left\", db_left - in_flight) FROM flashsale.stock_status WHERE product_id = $1),
       coalesce(s.sales, 0), coalesce(s.sold_out, 0),
       $SAMPLE_COMMON
FROM (SELECT) one LEFT JOIN flashsale.stat_stock s ON s.product_id = $1;"
}
sample_coupon_sql() { # coupon
    echo "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
       (SELECT remaining FROM flashsale.coupon_status WHERE coupon_id = $1),
       coalesce(s.issued, 0), coalesce(s.sold_out, 0),
       $SAMPLE_COMMON
FROM (SELECT) one LEFT JOIN flashsale.stat_coupon s ON s.coupon_id = $1;"
}

# sampler NAME T0_MS SQL: until $dir/NAME.stop exists, then once more, prints
# a line a second and records it in $dir/NAME.samples (t_s, units left,
# sales/s, sold-out/s, Redis p99 ms, errors; rates over the time between two
# samples as the database's clock measured it). Run in the background: it
# never fails the demo, a failed sample is a line that says so.
sampler() {
    local name=$1 t0=$2 sql=$3
    local samples="$dir/$name.samples" stop="$dir/$name.stop" err="$dir/$name.sampler.err"
    local k=0 last=0 prev_ms=$2 prev_sales=0 prev_so=0 row ms left sales so p99 errors
    local dt rate so_rate wait_ms line ended to from t_s t_d
    echo "# t_s left sales_per_s sold_out_per_s redis_p99_ms errors" > "$samples"
    coproc SAMPLER { fs_as_pg psql -X -q -At -F '|' -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -c "SET application_name = 'flashsale demo sampler'" -f - 2>"$err"; }
    # our own copies of the pipes (bash closes the coproc's when psql ends), and
    # a write to a psql that is gone fails instead of killing us
    exec {to}>&"${SAMPLER[1]}" {from}<&"${SAMPLER[0]}"
    exec {SAMPLER[1]}>&-
    trap '' PIPE
    while :; do
        # a sample at once (t=0), then at every whole second of the sale, and
        # the last one as soon as the sale has ended
        if [ $k -gt 0 ]; then
            while [ ! -e "$stop" ]; do
                wait_ms=$((t0 + k * 1000 - $(fs_now_ms)))
                [ $wait_ms -gt 0 ] || break
                [ $wait_ms -lt 100 ] || wait_ms=100
                sleep "0.$(printf '%03d' "$wait_ms")"
            done
        fi
        k=$((k + 1))
        [ -e "$stop" ] && last=1
        row="" ended=0
        # (psql gone: the pipe is closed and the write fails, not kills us)
        printf '%s\n\\echo __sample_end__\n' "$sql" >&"$to" 2>/dev/null || ended=2
        while [ $ended = 0 ] && IFS= read -r -t 10 line <&"$from"; do
            if [ "$line" = __sample_end__ ]; then ended=1; else row=$line; fi
        done
        if [ $ended != 1 ]; then
            printf '  (live line stopped: psql %s)\n' "$(tail -n 1 "$err" 2>/dev/null || true)"
            break
        fi
        if [ -z "$row" ]; then
            printf '  t=%ss  (no sample: %s)\n' "$(( ($(fs_now_ms) - t0) / 1000 ))" \
                "$(grep -m1 -E 'ERROR|FATAL' "$err" 2>/dev/null | sed 's/^[^:]*: *//' || true)"
            : > "$err"
        else
            IFS='|' read -r ms left sales so p99 errors <<< "$row"
            if [ $k = 1 ] && [ $last = 0 ]; then
                # the first look, as the sale opens: its rates would be over a
                # few milliseconds; the next sample's cover the time since t0
                rate=0 so_rate=0
            else
                dt=$((ms - prev_ms))
                [ $dt -gt 0 ] || dt=1
                rate=$(( (sales - prev_sales) * 1000 / dt ))
                so_rate=$(( (so - prev_so) * 1000 / dt ))
                prev_ms=$ms prev_sales=$sales prev_so=$so
            fi
            t_s=$(( (ms - t0) / 1000 )) t_d=$(( (ms - t0) % 1000 / 100 ))
            # (the last sample, as the sale ends, says when to a tenth of a second)
            printf '  t=%ss  left %s  sales/s %s  sold-out/s %s  redis p99 %s  errors %s\n' \
                "$t_s$([ $last = 1 ] && echo ".$t_d")" "$left" "$rate" "$so_rate" \
                "$([ "$p99" = - ] && echo - || echo "$p99 ms")" "$errors"
            printf '%s.%s\t%s\t%s\t%s\t%s\t%s\n' "$t_s" "$t_d" "$left" "$rate" "$so_rate" \
                "$([ "$p99" = - ] && echo NaN || echo "$p99")" "$errors" >> "$samples"
        fi
        [ $last = 1 ] && break
        # a sample that came late (a busy machine) skips the seconds it missed
        [ $(( ($(fs_now_ms) - t0) / 1000 )) -lt $k ] || k=$(( ($(fs_now_ms) - t0) / 1000 + 1 ))
    done
    exec {to}>&- {from}<&-
    wait "$SAMPLER_PID" 2>/dev/null || true
}

# sale_start NAME SQL PGBENCH-ARGS..., sale_wait NAME: pgbench in the
# background, the sampler beside it (statistics reset first, so they are this
# sale's); pgbench's output in $dir/NAME.out. The FLUSHALL of the stock sale
# goes between the two. A failing pgbench ends the demo with its status, as
# before (and its output, which the demo used to swallow, on stderr).
sale_start() { # name sql pgbench-args...
    local name=$1 sql=$2
    shift 2
    fs_psql "$port" "SELECT flashsale.stat_reset()" >/dev/null
    rm -f "$dir/$name.stop"
    sale_t0=$(fs_now_ms)
    fs_as_pg pgbench -n -M prepared -h 127.0.0.1 -p "$port" -U postgres -c "$CLIENTS" -j 2 \
        -t "$PER_CLIENT" "$@" postgres > "$dir/$name.out" 2>&1 &
    bench=$!
    sampler "$name" "$sale_t0" "$sql" &
    sampler_pid=$!
}
sale_wait() { # name
    local rc=0
    wait "$bench" || rc=$?
    touch "$dir/$1.stop"
    wait "$sampler_pid" || true
    if [ $rc != 0 ]; then
        cat "$dir/$1.out" >&2
        exit $rc
    fi
}

# picture NAME TITLE [T_S LABEL]: the samples as a PNG (sales/s on the left
# axis, units left on the right; an event marked at T_S) when gnuplot is
# there, else as sparklines
picture() {
    local name=$1 title=$2 mark_t=${3:-} mark_label=${4:-}
    local samples="$dir/$name.samples" png="$DEMO_OUT/flashsale-demo-$name.png" term
    rm -f "$png"
    if [ "$(grep -vc '^#' "$samples")" = 0 ]; then
        echo "  (no samples: no picture)"
        return 0
    fi
    if [ -n "$DEMO_GNUPLOT" ] && command -v "$DEMO_GNUPLOT" >/dev/null 2>&1; then
        # pngcairo draws antialiased text; the libgd png terminal where it is missing
        term="png size 900,450"
        "$DEMO_GNUPLOT" -e 'set terminal' 2>/dev/null | grep -qw pngcairo \
            && term="pngcairo size 900,450 font ',10'"
        if mkdir -p "$DEMO_OUT" && "$DEMO_GNUPLOT" > "$dir/$name.gnuplot.err" 2>&1 <<GP && [ -s "$png" ]
set terminal $term
set output '$png'
set title "$title"
set xlabel 'seconds since the sale opened'
set ylabel 'per second'
set y2label 'units left'
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set grid
set key outside below center horizontal
set xrange [0:*]
set datafile missing 'NaN'
$( [ -z "$mark_t" ] || printf '%s\n%s\n' \
    "set arrow from $mark_t, graph 0 to $mark_t, graph 1 nohead dashtype 2 lc rgb 'gray40'" \
    "set label '$mark_label' at $mark_t, graph 0.6 offset 0.5,0 textcolor rgb 'gray40'" )
# (a rate is over the time since the sample before: fsteps draws it there)
plot '$samples' using 1:3 axes x1y1 with fsteps lw 2 lc rgb '#1f77b4' title 'sales/s', \
     '' using 1:4 axes x1y1 with fsteps lw 1 dashtype 3 lc rgb '#ff7f0e' title 'sold-out answers/s', \
     '' using 1:2 axes x1y2 with linespoints lw 2 pt 7 ps 0.4 lc rgb '#d62728' title 'units left'
GP
        then
            echo "  picture: $png"
            return 0
        fi
        echo "  (gnuplot failed, see below; sparklines instead)"
        sed 's/^/    /' "$dir/$name.gnuplot.err"
    fi
    sparklines "$samples"
}

# two sparklines (▁▂▃▄▅▆▇█) of a samples file, at most 60 columns: sales/s
# (the mean of the samples a column holds) and units left (the last)
sparklines() {
    awk -F '\t' '
    !/^#/ { n++; t[n] = $1; left[n] = $2; rate[n] = $3 }
    END {
        split("▁ ▂ ▃ ▄ ▅ ▆ ▇ █", bar, " ")
        per = int((n + 59) / 60)
        for (i = 1; i <= n; i += per) {
            c++; s = 0; m = 0
            for (j = i; j < i + per && j <= n; j++) { s += rate[j]; m++ }
            r[c] = s / m; l[c] = left[j - 1]
        }
        for (i = 1; i <= c; i++) { if (r[i] > rmax) rmax = r[i]; if (l[i] > lmax) lmax = l[i] }
        for (i = 1; i <= n; i++) if (rate[i] > peak) { peak = rate[i]; peak_t = t[i] }
        for (i = 1; i <= n; i++) if (left[i] == 0) { out_t = t[i]; break }
        line = ""
        for (i = 1; i <= c; i++) line = line bar[(rmax > 0) ? int(r[i] / rmax * 7 + 0.5) + 1 : 1]
        printf "  sales/s     %s   peak %d/s at t=%ss\n", line, peak, peak_t
        line = ""
        for (i = 1; i <= c; i++) line = line bar[(lmax > 0) ? int(l[i] / lmax * 7 + 0.5) + 1 : 1]
        printf "  units left  %s", line
        printf "   %d to %d%s\n", left[1], left[n], out_t != "" ? ", first 0 at t=" out_t "s" : ""
        printf "  (%d samples over %ss, %d per column)\n", n, t[n], per
    }' "$1"
}

# ---- coupon: one hot coupon, one unit per member ----
coupon=$(fs_psql "$port" "SELECT flashsale.create_coupon('flash sale', $QUANTITY, 1)")
fs_psql "$port" "CREATE UNLOGGED TABLE public.attempt (status text NOT NULL)" >/dev/null

cat > "$dir/issue.sql" <<SQL
\\set m random(1, $MEMBERS)
INSERT INTO public.attempt SELECT flashsale.try_issue_coupon(:m, $coupon);
SQL
chmod 644 "$dir/issue.sql"

fs_log "coupon $coupon: $QUANTITY units, 1 per member; $CLIENTS clients x $PER_CLIENT attempts from $MEMBERS members"
sale_start coupon "$(sample_coupon_sql "$coupon")" -f "$dir/issue.sql"
sale_wait coupon
tps=$(awk '/^tps/ {printf "%.0f", $3}' "$dir/coupon.out")

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
echo
echo "statistics (flashsale.stat_coupon, since the flashsale.stat_reset() before the sale)"
fs_psql "$port" "
SELECT format('  %-24s %s', k, v) FROM flashsale.stat_coupon s,
    LATERAL (VALUES ('issued', s.issued), ('already_issued', s.already_issued), ('sold_out', s.sold_out),
                    ('not_active', s.not_active), ('lock waits', s.lock_waits),
                    ('lock timeouts', s.lock_timeouts)) x(k, v)
WHERE s.coupon_id = $coupon"
echo
echo "the sale over time (coupon $coupon)"
picture coupon "flash sale: coupon $coupon, $QUANTITY units, $CLIENTS clients" || echo "  (no picture)"

# ---- stock: one hot product, orders bound to their transactions ----
fs_psql "$port" "SELECT flashsale.set_stock(1, $STOCK)" >/dev/null
fs_psql "$port" "CREATE TABLE public.orders (order_id bigserial PRIMARY KEY, product_id bigint NOT NULL,
                 qty int NOT NULL, created_at timestamptz NOT NULL DEFAULT now())" >/dev/null
fs_psql "$port" "CREATE UNLOGGED TABLE public.buy (outcome text NOT NULL)" >/dev/null
cat > "$dir/order.sql" <<'SQL'
BEGIN;
WITH d AS (SELECT flashsale.try_decrement_stock(1) AS l),
     o AS (INSERT INTO public.orders (product_id, qty) SELECT 1, 1 FROM d WHERE l IS NOT NULL RETURNING 1)
INSERT INTO public.buy SELECT CASE WHEN l IS NULL THEN 'sold_out' ELSE 'ordered' END FROM d;
COMMIT;
SQL
cat > "$dir/abandon.sql" <<'SQL'
BEGIN;
SELECT flashsale.try_decrement_stock(1);
INSERT INTO public.buy VALUES ('abandoned');
ROLLBACK;
SQL
chmod 644 "$dir"/*.sql

fs_log "product 1: $STOCK units; $CLIENTS clients x $PER_CLIENT orders (1 in 10 abandoned); Redis wiped mid-sale"
sale_start stock "$(sample_stock_sql 1)" -f "$dir/order.sql@9" -f "$dir/abandon.sql@1"
# Redis wiped once selling has begun (the first sample that shows a unit gone),
# so allotments are out: 64 pgbench connections alone can take seconds on a
# busy machine, and a FLUSHALL a fixed second after the start came before the
# first sale there
for _ in $(seq 1 300); do
    awk -F '\t' -v s="$STOCK" '!/^#/ && $2 < s { f = 1 } END { exit !f }' "$dir/stock.samples" && break
    kill -0 "$bench" 2>/dev/null || break
    sleep 0.1
done
fs_redis "$rport" FLUSHALL >/dev/null
flush_ms=$(( $(fs_now_ms) - sale_t0 ))
flush_t=$((flush_ms / 1000)).$((flush_ms % 1000 / 100))
echo "  t=${flush_t}s  -- Redis wiped (FLUSHALL)"
sale_wait stock
tps=$(awk '/^tps/ {printf "%.0f", $3}' "$dir/stock.out")

echo
echo "flash-sale report (product 1)"
# (stock_level first: it rebuilds the pool if Redis lost it, the view only reads)
fs_psql "$port" "SELECT flashsale.stock_level(1)" >/dev/null
fs_psql "$port" "
SELECT format('  %-24s %s', 'orders attempted', count(*)) FROM public.buy
UNION ALL SELECT format('  %-24s %s', 'orders placed', count(*)) FROM public.orders
UNION ALL SELECT format('  %-24s %s', 'sold_out answers', count(*)) FROM public.buy WHERE outcome = 'sold_out'
UNION ALL SELECT format('  %-24s %s', 'abandoned (rolled back)', $CLIENTS * $PER_CLIENT - count(*))
          FROM public.buy
UNION ALL SELECT format('  %-24s %s (pool in Redis %s + allotment %s; db %s, in flight %s)', 'units left',
                        \"left\", pool, available, db_left, in_flight)
          FROM flashsale.stock_status WHERE product_id = 1
UNION ALL SELECT format('  %-24s %s', 'orders + left - initial',
                        (SELECT count(*) FROM public.orders) + flashsale.stock_level(1) - $STOCK)
UNION ALL SELECT format('  %-24s %s', 'ledger units = orders',
                        (SELECT sum(quantity) FROM flashsale.stock_ledger) = (SELECT count(*) FROM public.orders))"
echo "  tps                      $tps"
echo
echo "statistics (flashsale.stat_stock and stat_redis, since the flashsale.stat_reset() before the sale)"
fs_psql "$port" "
SELECT format('  %-24s %s', k, v) FROM flashsale.stat_stock s,
    LATERAL (VALUES ('sales', format('%s (%s units)', s.sales, s.units_sold)),
                    ('units given back', s.units_given_back || ' (rollbacks that held a unit)'),
                    ('sold_out answers', s.sold_out || ' (orders and abandoned carts)'),
                    ('leases from the pool', format('%s (%s units)', s.refills, s.units_refilled)),
                    ('returns to the pool', format('%s (%s units)', s.returns, s.units_returned))) x(k, v)
WHERE s.product_id = 1
UNION ALL
SELECT format('  %-24s %s calls, %s errors, p50 %s ms, p99 %s ms, max %s ms', 'redis ' || kind, calls,
              errors_connect + errors_timeout + errors_reply, round(p50_ms::numeric, 2),
              round(p99_ms::numeric, 2), round(max_ms::numeric, 2))
FROM flashsale.stat_redis WHERE calls > 0"
echo
echo "the sale over time (product 1)"
picture stock "flash sale: product 1, $STOCK units, $CLIENTS clients (1 in 10 abandon)" "$flush_t" "Redis FLUSHALL" \
    || echo "  (no picture)"

# ---- the background worker's figures after the sale ----
passes=$(fs_psql "$port" "SELECT passes FROM flashsale.worker_status")
fs_psql "$port" "SELECT flashsale.sync_now()" >/dev/null
for _ in $(seq 1 100); do
    [ "$(fs_psql "$port" "SELECT passes > $passes FROM flashsale.worker_status")" = t ] && break
    sleep 0.1
done
echo
echo "background worker (after a pass woken by flashsale.sync_now())"
fs_psql "$port" "
SELECT format('  %-24s %s', 'passes', passes) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s', 'allotments returned', allotments_returned) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s', 'units returned', units_returned) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s', 'products reloaded', products_reloaded) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s', 'drift fixed', drift_fixed) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s', 'ledger rows folded', ledger_rows_folded) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s', 'last error', coalesce(last_error, '-')) FROM flashsale.worker_status
UNION ALL SELECT format('  %-24s %s (units left %s)', 'stock.quantity', quantity, flashsale.stock_level(1))
          FROM flashsale.stock WHERE product_id = 1"
