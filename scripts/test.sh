#!/usr/bin/env bash
# Runs every test suite of flashsale against real PostgreSQL (throwaway instances).
#   scripts/test.sh            all suites
#   scripts/test.sh SUITE...   some of: regress isolation stress tap
# Installs what it needs (as root, Debian 12), builds and installs the extension,
# starts and stops its own servers, and prints "N passed, N failed" at the end.
source "$(dirname "$0")/lib.sh"

SUITES=("$@")
[ ${#SUITES[@]} -gt 0 ] || SUITES=(regress isolation stress tap)

# the demo draws its PNG with gnuplot when it is there (test/stress/demo_picture.sh
# checks it); the demo does not install it, the test command does
FS_PACKAGES+=" gnuplot-nox"
fs_install_deps
fs_build

work=$(fs_tmpdir)

# The suites run as the postgres user, who may not be able to read the
# checkout (a clone under /root, say): they run `make installcheck` in a copy
# of the Makefile and the test files, against servers of their own.
TESTS="$work/tests"
mkdir -p "$TESTS"
cp -r "$FS_ROOT/Makefile" "$FS_ROOT/sql" "$FS_ROOT/expected" "$FS_ROOT/test" "$TESTS/"
chown -R postgres: "$TESTS" 2>/dev/null || true
chmod -R a+rX "$TESTS"

SUITE_PORT=""
passed=0
failed=0
failures=()

# A Redis and a PostgreSQL set up as README's "Running the tests against your
# server" asks: test/regress.conf's lines and flashsale.redis_port.  Sets
# SUITE_PORT.  (Not in a $(...): the servers must be recorded in this shell
# to be stopped at exit.)
suite_servers() { # name
    local rport conf=()
    rport=$(fs_free_port)
    SUITE_PORT=$(fs_free_port)
    fs_redis_start "$work/redis-$1" "$rport"
    mapfile -t conf < <(grep -v -E '^[[:space:]]*(#|$)' "$TESTS/test/regress.conf")
    fs_pg_start "$work/pg-$1" "$SUITE_PORT" "${conf[@]}" "flashsale.redis_port = $rport"
}

# make TARGET [VAR=value...] in the copy, as the postgres user, against SUITE_PORT
suite_make() {
    fs_as_pg env PGHOST=127.0.0.1 PGPORT="$SUITE_PORT" PGUSER=postgres \
        make -s -C "$TESTS" PG_CONFIG="$PG_BIN/pg_config" "$@"
}

show_diffs() { # dir
    if [ -f "$1/regression.diffs" ]; then
        cat "$1/regression.diffs" >&2
    fi
}

# META.json and CHANGELOG.md speak of flashsale.control's default_version
# (META.json as a semantic version: 1.5 is 1.5.0)
check_packaging() {
    local v
    v=$(sed -n "s/^default_version *= *'\(.*\)'.*/\1/p" "$FS_ROOT/flashsale.control")
    perl -MJSON::PP -e '
        my ($file, $v) = @ARGV;
        open(my $f, "<", $file) or die "$file: $!\n";
        my $m = decode_json(do { local $/; <$f> });
        my $want = $v =~ /^\d+\.\d+$/ ? "$v.0" : $v;
        for (["version", $m->{version}], ["provides.flashsale.version", $m->{provides}{flashsale}{version}]) {
            die "META.json: $_->[0] is $_->[1], flashsale.control says $v ($want)\n" if $_->[1] ne $want;
        }' "$FS_ROOT/META.json" "$v" || return 1
    grep -q -E "^## ${v//./\\.}( |\$)" "$FS_ROOT/CHANGELOG.md" || { echo "CHANGELOG.md: no entry for $v" >&2; return 1; }
}

# pg_regress: the Makefile's REGRESS list (and the packaging files' version)
suite_regress() {
    check_packaging || return 1
    suite_servers regress
    suite_make installcheck ISOLATION= TAP_TESTS= || { show_diffs "$TESTS"; return 1; }
}

# pg_isolation_regress: every spec of test/isolation/specs
suite_isolation() {
    suite_servers isolation
    suite_make installcheck REGRESS= TAP_TESTS= || { show_diffs "$TESTS/output_iso"; return 1; }
}

suite_stress() {
    local t
    for t in "$FS_ROOT"/test/stress/*.sh; do
        fs_log "stress: $(basename "$t")"
        bash "$t" || return 1
    done
}

# TAP tests (PostgreSQL::Test::Cluster): crashes, restarts, the worker.
# Each test starts its own PostgreSQL and Redis (test/t/FlashsaleTest.pm).
# FS_PROVE_TESTS="test/t/160_sentinel.pl ..." runs only those.
suite_tap() {
    suite_make prove_installcheck PROVE_FLAGS=--timer ${FS_PROVE_TESTS:+PROVE_TESTS="$FS_PROVE_TESTS"} \
        || { find "$TESTS/tmp_check" -name 'regress_log_*' -exec tail -n 60 {} \; >&2; return 1; }
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
pg=$("$PG_BIN/postgres" --version | awk '{print $3}')
os=$(. /etc/os-release && echo "${PRETTY_NAME:-unknown system}")
os=${os%% (*}   # "Debian GNU/Linux 12", without "(bookworm)"
server=$(redis-server --version | awk '{ sub(/^v=/, "", $3); print $1, $3 }')   # "Redis 7.0.15", "Valkey 8.1.1"
echo "suites: $passed passed, $failed failed (PostgreSQL $pg, $os, $server)"
[ $failed -eq 0 ]
