
# The background worker: shows in pg_stat_activity, restarts after
# pg_terminate_backend and after a crash (the crash's new shared memory
# makes Redis' record stale; the next call rebuilds the pool exactly),
# gives idle allotments back to the pool between passes, changes its
# interval on SIGHUP, wakes up on sync_now(), and lives through a Redis
# outage, logging it once.
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
is("$w->{products_reloaded} $w->{drift_fixed}", '0 0',
	'nothing sold from here since set_stock: nothing to check, no Redis call');
is(redis_cmd('EXISTS', stock_key($node)), 0, 'Redis has no pool yet (set_stock dropped the keys)');
is(sq('SELECT flashsale.stock_level(1)'), $UNITS, "stock_level rebuilds it: $UNITS units");
is(redis_cmd('GET', stock_key($node)), $UNITS, "Redis' pool has $UNITS units");
$passes = $w->{passes};

# ---- pg_terminate_backend of a backend idle in transaction after a decrement
my ($s, $spid) = hold_units($node, 3);
my $f = stock_figures($node);
is($f->{in_flight}, 3, '3 units in flight');
is($f->{pool} + $f->{available}, $UNITS - 3, 'pool + available: the rest');
is(sq("SELECT pg_terminate_backend($spid)"), 't', 'terminate the backend idle in transaction');
ok(poll_sql($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $spid", '0', 15),
	'it exited');
$f = stock_figures($node);
is($f->{in_flight}, 0, 'its abort at exit took its units out of flight');
is($f->{pool} + $f->{available}, $UNITS, 'and gave the 3 units back to the allotment');
is(sq('SELECT flashsale.stock_level(1)'), $UNITS, "stock_level: $UNITS");
is(worker_status($node)->{passes}, $passes, 'without a sync pass');
$s->quit;

# ---- between passes, the worker gives the idle allotment back to the pool
my $returned = worker_status($node)->{allotments_returned};
cmp_ok($f->{available}, '>', 0, "an allotment is out ($f->{available} units)");
ok(wait_allotments_back($node), 'it goes back to the pool once idle (flashsale.allotment_idle)');
is(redis_cmd('GET', stock_key($node)), $UNITS, "Redis' pool has all $UNITS units again");
is(allot_fields($node)->{h}, 0, 'Redis records that this instance holds nothing');
$w = worker_status($node);
cmp_ok($w->{allotments_returned}, '>', $returned, 'by the worker (worker_status.allotments_returned)');
is($w->{passes}, $passes, 'without a sync pass');

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

# ---- SIGKILL of a backend holding units: crash restart; the new shared
# memory holds nothing, and the first call rebuilds the pool exactly
($s, $spid) = hold_units($node, 4);
$f = stock_figures($node);
is("$f->{in_flight} " . ($f->{pool} + $f->{available}), '4 ' . ($UNITS - 4), '4 units in flight');
my $epoch = allot_fields($node)->{e};
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
is("$w->{passes} $w->{drift_fixed} $w->{product_errors}", '1 0 0',
	'its start-up pass: no drift, no errors');
is(sq('SELECT count(*) FROM flashsale.allotments()'), 0, 'the new shared memory holds no allotment');
is(sq('SELECT flashsale.stock_level(1)'), $UNITS, "stock_level: all $UNITS units (the 4 are back)");
is(redis_cmd('GET', stock_key($node)), $UNITS, "Redis' pool rebuilt: $UNITS");
my $a = allot_fields($node);
isnt($a->{e}, $epoch, 'with the new epoch');
is("$a->{s} $a->{h}", '1 0', 'sequence 1, this instance holds nothing');
$passes = $w->{passes};

# ---- SIGHUP: sync_interval = 1 s; the worker then runs a pass every
# second (with 3600 s the reload's wake-up would be the only pass), and a
# product sold from between passes is checked by the next one
sq('ALTER SYSTEM SET flashsale.sync_interval = 1');
sq('SELECT pg_reload_conf()');
ok(poll_sql($node, "SELECT passes >= $passes + 4 FROM flashsale.worker_status", 't', 15),
	'the worker now runs a pass every second');
$w = worker_status($node);
is($w->{pid},             $pid, 'same worker process (a reload, not a restart)');
is($w->{sync_interval_s}, 1,    'worker_status.sync_interval_s = 1');
sq('BEGIN; SELECT flashsale.decrement_stock(1, 6); ROLLBACK;');
sq('BEGIN; SELECT flashsale.decrement_stock(1, 2); ROLLBACK;');
$passes = $w->{passes};
ok(poll_sql($node, "SELECT passes >= $passes + 2 FROM flashsale.worker_status", 't', 15),
	'two more passes');
$w = worker_status($node);
is("$w->{drift_fixed} $w->{products_reloaded} $w->{product_errors}",
	'0 0 0', 'totals since it started: no drift, nothing reloaded, no errors');
is(sq('SELECT db_left, "left", in_flight FROM flashsale.stock_status'),
	"$UNITS|$UNITS|0", 'stock_status exact');
ok(wait_allotments_back($node), 'the allotment goes back to the pool once idle');
is(redis_cmd('GET', stock_key($node)), $UNITS, "Redis' pool: $UNITS");

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
			't', 8),
		"retry $retry failed too");
	$err_at = worker_status($node)->{last_error_at};
}
is(join(',', worker_pids($node)), $pid, 'the worker is still running (same pid)');
# (a pass that happens to need no Redis call must not pass for Redis being back)
is(log_count(qr/flashsale worker: Redis is reachable again/, $log_offset),
	0, 'log: no "Redis is reachable again" while Redis is down');
is(worker_status($node)->{redis_ok}, 'f', 'worker_status.redis_ok still false while Redis is down');
is(log_count(qr/flashsale worker: sync pass failed/, $log_offset),
	1, 'log: "sync pass failed" exactly once over the retries');
ok($node->log_contains(qr/HINT:  Retrying with a backoff; this is logged once per outage\./,
		$log_offset),
	'log: with the once-per-outage hint');
# (the allotment went back to the pool above: a sale needs a lease)
my ($ok, $out, $err) =
  psql_raw($node, "\\set VERBOSITY verbose\nSELECT flashsale.try_decrement_stock(1)");
like($err, qr/ERROR:  08001: could not connect to Redis/,
	'a decrement that needs a lease fails with SQLSTATE 08001 meanwhile');

# ---- Redis back (empty): the worker sees it; the next call rebuilds the pool
redis_start();
ok(poll_sql($node, 'SELECT redis_ok FROM flashsale.worker_status', 't', 15),
	'worker_status: redis_ok true again');
$node->wait_for_log(qr/flashsale worker: Redis is reachable again at 127\.0\.0\.1:${\redis_port()}/,
	$log_offset);
pass('log: "Redis is reachable again"');
is(log_count(qr/flashsale worker: sync pass failed/, $log_offset),
	1, 'still logged once for that outage');
is(sq('SELECT flashsale.stock_level(1)'), $UNITS, "stock_level rebuilds the pool: $UNITS");
is(redis_cmd('GET', stock_key($node)), $UNITS, "Redis' pool: $UNITS");
is(sq('SELECT db_left, "left", in_flight FROM flashsale.stock_status'),
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
