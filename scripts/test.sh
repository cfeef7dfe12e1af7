#!/usr/bin/env bash
# Runs every test suite of flashsale against real PostgreSQL (throwaway instances).
#   scripts/test.sh            all suites
#   scripts/test.sh SUITE...   some of: regress isolation stress tap
# Installs what it needs (as root, Debian 12), builds and installs the extension,
# starts and stops its own servers, and prints "N passed, N failed" at the end.
source "$(dirname "$0")/lib.sh"

SUITES=("$@")
[ ${#SUITES[@]} -gt 0 ] || SUITES=(regress isolation stress tap)

fs_install_deps
fs_build

work=$(fs_tmpdir)

# The suites run as the postgres user, who may not be able to read the
# checkout (a clone under /root, say): they read a copy of the test files.
TESTS="$work/tests"
mkdir -p "$TESTS"
cp -r "$FS_ROOT/sql" "$FS_ROOT/expected" "$FS_ROOT/test" "$TESTS/"
chown -R postgres: "$TESTS" 2>/dev/null || true
chmod -R a+rX "$TESTS"

passed=0
failed=0
failures=()

# A Redis for the suite and a temp-config pointing the instance at it.
# (not in a $(...): the Redis must be recorded in this shell to be stopped at exit)
suite_conf() { # name -> sets SUITE_CONF
    local rport
    SUITE_CONF="$work/$1.conf"
    rport=$(fs_free_port)
    fs_redis_start "$work/redis-$1" "$rport"
    { cat "$TESTS/test/regress.conf"; echo "flashsale.redis_port = $rport"; } > "$SUITE_CONF"
    chmod 644 "$SUITE_CONF"
}

show_diffs() { # dir
    if [ -f "$1/regression.diffs" ]; then
        cat "$1/regression.diffs" >&2
    fi
}

suite_regress() {
    local out="$work/regress"
    suite_conf regress
    fs_as_pg mkdir -p "$out"
    fs_as_pg "$PGXS_DIR/src/test/regress/pg_regress" \
        --temp-instance="$out/instance" --temp-config="$SUITE_CONF" \
        --port="$(fs_free_port)" --bindir="$PG_BIN" \
        --inputdir="$TESTS" --outputdir="$out" --dbname=flashsale_regress --encoding=UTF8 \
        install coupon stock redis_conn sync locks redis_locks limits upgrade security || { show_diffs "$out"; return 1; }
}

suite_isolation() {
    local out="$work/isolation" specs
    suite_conf isolation
    specs=$(cd "$TESTS/test/isolation/specs" && ls ./*.spec | sed 's|^\./||; s|\.spec$||' | sort)
    fs_as_pg mkdir -p "$out"
    # shellcheck disable=SC2086
    fs_as_pg "$PGXS_DIR/src/test/isolation/pg_isolation_regress" \
        --temp-instance="$out/instance" --temp-config="$SUITE_CONF" \
        --port="$(fs_free_port)" --bindir="$PG_BIN" \
        --inputdir="$TESTS/test/isolation" --outputdir="$out" --dbname=flashsale_isolation \
        --load-extension=flashsale $specs || { show_diffs "$out"; return 1; }
}

suite_stress() {
    local t
    for t in "$FS_ROOT"/test/stress/*.sh; do
        fs_log "stress: $(basename "$t")"
        bash "$t" || return 1
    done
}

# TAP tests (PostgreSQL::Test::Cluster): crashes, restarts, the worker.
# Each test starts its own Redis (test/t/FlashsaleTest.pm).
suite_tap() {
    local out="$work/tap"
    fs_as_pg mkdir -p "$out"
    (cd "$out" && fs_as_pg env TESTDIR="$out" FS_ROOT="$TESTS" PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress" \
        prove --timer -I "$PGXS_DIR/src/test/perl" -I "$TESTS/test/t" "$TESTS"/test/t/*.pl) \
        || { find "$out" -name 'regress_log_*' -exec tail -n 60 {} \; >&2; return 1; }
}

for s in "${SUITES[@]}"; do
    fs_log "suite: $s"
    if "suite_$s"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$s")
    fi
done

echo
[ $failed -eq 0 ] || echo "failed suites: ${failures[*]}"
echo "suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
