#!/usr/bin/env bash
# The demo shows the sale (issue 15): a small demo run prints the live line
# (units left, sales/s, sold-out/s, Redis p99, errors) during both sales, and
# at the end a PNG per sale, non-empty, when gnuplot is installed (the test
# command installs gnuplot-nox; the demo itself does not), and the sparkline
# when it is not (FS_DEMO_GNUPLOT pointing at no command).
source "$(dirname "$0")/../../scripts/lib.sh"

out=$(fs_tmpdir)
run_demo() { # log, clients, attempts, then env assignments
    local log=$1 clients=$2 attempts=$3
    shift 3
    # built and installed by the test command already
    env "$@" QUANTITY=300 MEMBERS=600 STOCK=400 FS_DEMO_OUT="$out" FS_DEMO_BUILT=1 \
        bash "$FS_ROOT/scripts/demo.sh" "$clients" "$attempts" > "$log" 2>&1
}

rc=0
run_demo "$out/demo.log" 8 100 || rc=$?
fs_check "demo exit status" "$rc" 0
fs_check "live lines (t=…s left … sales/s … sold-out/s … redis p99 … errors …) >= 2" \
    "$(( $(grep -cE '^  t=[0-9.]+s  left [0-9-]+  sales/s [0-9]+  sold-out/s [0-9]+  redis p99 ([0-9.]+ ms|-)  errors [0-9]+$' "$out/demo.log") >= 2 ))" 1
if command -v gnuplot >/dev/null; then
    for sale in coupon stock; do
        png="$out/flashsale-demo-$sale.png"
        fs_check "$sale: the picture's path printed" "$(grep -c "picture: $png" "$out/demo.log")" 1
        fs_check "$sale: a non-empty PNG" \
            "$( [ -s "$png" ] && head -c 8 "$png" | od -An -tx1 | tr -d ' \n' )" 89504e470d0a1a0a
    done
else
    echo "   (gnuplot is not installed: no PNG to check)"
fi
rc=0
run_demo "$out/demo-sparkline.log" 4 40 FS_DEMO_GNUPLOT=/nonexistent/gnuplot || rc=$?
fs_check "without gnuplot: demo exit status" "$rc" 0
fs_check "without gnuplot: sparklines of sales/s and units left" \
    "$(grep -cE '^  (sales/s|units left) +[▁▂▃▄▅▆▇█]+' "$out/demo-sparkline.log")" 4
[ $fail = 0 ] || { echo "--- the demo's output:"; cat "$out/demo.log"; }
exit $fail
