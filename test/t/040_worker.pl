
# The background worker: shows in pg_stat_activity, restarts after
# pg_terminate_backend and after a crash (settling what the crash left in
# its start-up pass), changes its interval on SIGHUP, wakes up on
# sync_now(), and lives through a Redis outage, logging it once.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $UNITS = 100;

redis_start();
my $node = new_node('worker', sync_interval => 3600);

sub sq { return $node->safe_psql('postgres', $_[0]); }

sub log_count
{
	my ($re, $offset) = @_;
	my $log = slurp_file($node->logfile, $offset);
	my @m = $log =~ /$re/g;
	return scalar @m;
}

# ---- the worker is there
ok(poll_sql($node, 'SELECT passes >= 1 FROM flashsale.worker_status', 't', 30),
	'worker ran its start-up pass');
my @pids = worker_pids($node);
is(scalar @pids, 1, 'one flashsale worker in pg_stat_activity');
my $pid = $pids[0];
is( sq("SELECT datname, backend_type FROM pg_stat_activity WHERE pid = $pid"),
	'postgres|flashsale worker',
	'worker: backend_type "flashsale worker", connected to database postgres');
my $w = worker_status($node);
is($w->{pid},             $pid,       'worker_status.pid is the worker');
is($w->{database},        'postgres', 'worker_status.database');
is($w->{sync_interval_s}, 3600,       'worker_status.sync_interval_s');
is($w->{redis_ok},        't',        'worker_status.redis_ok');

# ---- sync_now() wakes it for one pass
sq("SELECT flashsale.set_stock(1, $UNITS)");
my $passes = $w->{passes};
is(sq('SELECT flashsale.sync_now()'), 't', 'sync_now() returns true');
ok(poll_sql($node, "SELECT passes > $passes FROM flashsale.worker_status", 't', 15),
	'sync_now() caused a pass');
$w = worker_status($node);
is($w->{passes}, $passes + 1, 'exactly one pass');
is($w->{products_synced}, 1, 'it synced the product');
cmp_ok($w->{products_reloaded}, '>=', 1, 'and loaded it into Redis (set_stock dropped its keys)');
is(redis_cmd('GET', stock_key($node)), $UNITS, "Redis has $UNITS units");
$passes = $w->{passes};

# ---- pg_terminate_backend of a backend idle in transaction after a decrement
my ($s, $field, $spid) = hold_reservation($node, 3);
is(redis_cmd('HGET', reserved_key($node), $field), 3, 'reservation of 3 units in Redis');
is(sq("SELECT pg_terminate_backend($spid)"), 't', 'terminate the backend idle in transaction');
ok(poll_sql($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $spid", '0', 15),
	'it exited');
is(redis_cmd('HEXISTS', reserved_key($node), $field),
	0, 'its abort at exit dropped the reservation itself');
is(redis_cmd('GET', stock_key($node)), $UNITS, 'and gave the 3 units back');
is(worker_status($node)->{passes}, $passes, 'without a sync pass');
$s->quit;

# ---- pg_terminate_backend of the worker: restarted after 5 s
my $log_offset = -s $node->logfile;
my $t0 = time();
is(sq("SELECT pg_terminate_backend($pid)"), 't', 'terminate the worker');
ok( poll_sql(
		$node,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'flashsale worker' AND pid <> $pid",
		'1', 15),
	'worker came back');
my $took = time() - $t0;
cmp_ok($took, '<=', 15, sprintf('within 15 s (%.1f s)', $took));
my ($pid2) = worker_pids($node);
isnt($pid2, $pid, "new worker pid $pid2");
ok( poll_sql(
		$node,
		"SELECT pid = $pid2 AND last_pass_start >= started_at AND last_pass_end >= last_pass_start"
		  . " FROM flashsale.worker_status",
		't', 15),
	'the new worker ran its start-up pass');
ok( $node->log_contains(
		qr/FATAL:  terminating background worker "flashsale worker" due to administrator command/,
		$log_offset),
	'log: worker terminated by administrator command');
ok( $node->log_contains(
		qr/background worker "flashsale worker" \(PID $pid\) exited with exit code 1/,
		$log_offset),
	'log: postmaster saw it exit');

# ---- SIGKILL of a backend with a reservation: crash restart, and the new
# worker's start-up pass gives the units back
($s, $field, $spid) = hold_reservation($node, 4);
# A commit that wrote WAL flushes it, the dead transaction's ledger row
# included, so recovery knows its xid and the pass sees it aborted.  (A
# transaction whose WAL never reached disk leaves an xid that recovery
# does not know: the pass cannot tell its fate and the drift check puts
# its units back instead; 010 and 030 see that.)
sq('CREATE TABLE wal_flush (i int); INSERT INTO wal_flush VALUES (1)');
is(redis_cmd('GET', stock_key($node)), $UNITS - 4, 'reservation of 4 units taken');
$log_offset = -s $node->logfile;
ok(kill('KILL', $spid), "kill -9 $spid");
$node->wait_for_log(killed_re($spid), $log_offset);
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
ok( poll_sql(
		$node,
		"SELECT pid <> $pid2 AND passes >= 1 FROM flashsale.worker_status",
		't', 60),
	'worker restarted after the crash restart and ran its start-up pass');
$s->quit;
($pid) = worker_pids($node);
$w = worker_status($node);
is($w->{pid}, $pid, 'worker_status shows the new worker');
is(redis_cmd('HLEN', reserved_key($node)), 0, 'the dead transaction\'s reservation is settled');
is(redis_cmd('GET',  stock_key($node)),  $UNITS, 'its 4 units are back');
is("$w->{passes} $w->{reservations_settled} $w->{units_returned} $w->{drift_fixed}",
	'1 1 4 0',
	'by the start-up pass: 1 pass, 1 reservation settled, 4 units returned, no drift');
$passes = $w->{passes};

# ---- an orphan without a crash: the rollback cannot reach Redis (the
# session points at a dead port), so the reservation stays for the worker
my $dead_port = PostgreSQL::Test::Cluster::get_free_port();
my ($left, $xid) = split /\n/, sq(qq{
BEGIN;
SELECT flashsale.decrement_stock(1, 6);
SELECT pg_current_xact_id();
SET LOCAL flashsale.redis_port = $dead_port;
ROLLBACK;});
is($left, $UNITS - 6, 'decremented 6');
is(sq("SELECT pg_xact_status('$xid')"), 'aborted', 'its transaction rolled back');
$field = system_identifier($node) . ":$xid";
is(redis_cmd('HGET', reserved_key($node), $field), 6,
	'the reservation stayed in Redis (the give-back could not reach it)');
is(redis_cmd('GET', stock_key($node)), $UNITS - 6, 'the 6 units are still out');
is(worker_status($node)->{passes}, $passes, 'no pass since (interval 3600 s)');

# ---- SIGHUP: sync_interval = 1 s; the worker settles it by itself and
# then runs a pass every second (with 3600 s the reload's wake-up would
# be the only pass)
sq('ALTER SYSTEM SET flashsale.sync_interval = 1');
sq('SELECT pg_reload_conf()');
ok( wait_until(
		sub {
			return (redis_cmd('HLEN', reserved_key($node)) // '') eq '0'
			  && (redis_cmd('GET', stock_key($node)) // '') eq $UNITS;
		},
		15),
	'the orphaned reservation is settled without a manual pass');
ok(poll_sql($node, "SELECT passes >= $passes + 4 FROM flashsale.worker_status", 't', 15),
	'the worker now runs a pass every second');
$w = worker_status($node);
is($w->{pid},             $pid, 'same worker process (a reload, not a restart)');
is($w->{sync_interval_s}, 1,    'worker_status.sync_interval_s = 1');
is("$w->{reservations_settled} $w->{units_returned} $w->{drift_fixed} $w->{product_errors}",
	'2 10 0 0',
	'totals since it started: 2 reservations settled, 10 units returned, no drift, no errors');
is(sq('SELECT db_left, redis_left, reserved_in_flight FROM flashsale.stock_status'),
	"$UNITS|$UNITS|0", 'stock_status exact');

# ---- Redis down: the worker keeps running, retries, logs once
$log_offset = -s $node->logfile;
redis_stop();
is(sq('SELECT flashsale.sync_now()'), 't', 'sync_now() with Redis down');
ok( poll_sql(
		$node,
		"SELECT NOT redis_ok AND last_error LIKE '%Redis%' FROM flashsale.worker_status",
		't', 15),
	'worker_status: redis_ok false, last_error about Redis');
$w = worker_status($node);
note "last_error: $w->{last_error}";
like($w->{last_error}, qr/could not connect to Redis/, 'last_error says it could not connect');
my $err_at = $w->{last_error_at};
for my $retry (1 .. 3)
{
	ok( poll_sql(
			$node,
			"SELECT last_error_at > '$err_at' FROM flashsale.worker_status",
			't', 15),
		"retry $retry failed too");
	$err_at = worker_status($node)->{last_error_at};
}
is(join(',', worker_pids($node)), $pid, 'the worker is still running (same pid)');
is(log_count(qr/flashsale worker: sync pass failed/, $log_offset),
	1, 'log: "sync pass failed" exactly once over the retries');
ok($node->log_contains(qr/HINT:  Retrying with a backoff; this is logged once per outage\./,
		$log_offset),
	'log: with the once-per-outage hint');
my ($ok, $out, $err) =
  psql_raw($node, "\\set VERBOSITY verbose\nSELECT flashsale.try_decrement_stock(1)");
like($err, qr/ERROR:  08001: could not connect to Redis/,
	'a decrement fails with SQLSTATE 08001 meanwhile');

# ---- Redis back (empty): the worker sees it and reloads the product
redis_start();
ok(poll_sql($node, 'SELECT redis_ok FROM flashsale.worker_status', 't', 15),
	'worker_status: redis_ok true again');
$node->wait_for_log(qr/flashsale worker: Redis is reachable again at 127\.0\.0\.1:${\redis_port()}/,
	$log_offset);
pass('log: "Redis is reachable again"');
ok( wait_until(sub { (redis_cmd('GET', stock_key($node)) // '') eq $UNITS }, 15),
	'the worker reloaded the product into the empty Redis');
is(log_count(qr/flashsale worker: sync pass failed/, $log_offset),
	1, 'still logged once for that outage');
is(sq('SELECT db_left, redis_left, reserved_in_flight FROM flashsale.stock_status'),
	"$UNITS|$UNITS|0", 'stock_status exact');

# ---- a second outage is logged again, once
$log_offset = -s $node->logfile;
redis_stop();
ok(poll_sql($node, 'SELECT redis_ok FROM flashsale.worker_status', 'f', 15),
	'second outage seen');
$err_at = worker_status($node)->{last_error_at};
ok(poll_sql($node, "SELECT last_error_at > '$err_at' FROM flashsale.worker_status", 't', 15),
	'and retried');
is(log_count(qr/flashsale worker: sync pass failed/, $log_offset),
	1, 'the second outage is logged once too');
redis_start();
ok(poll_sql($node, 'SELECT redis_ok FROM flashsale.worker_status', 't', 15),
	'Redis back again');
is(join(',', worker_pids($node)), $pid, 'same worker all along');

$node->stop;
done_testing();
