
# A client backend killed with SIGKILL mid-sale: the postmaster restarts
# every backend and reinitialises shared memory, so this instance's
# allotment (available units and those in flight, an open transaction's
# among them) is gone with it.  Redis still records the old shared
# memory's epoch: the next call finds the record stale and rebuilds the
# pool from the database truth (quantity minus committed ledger), exactly.
# Afterwards: orders + units left == initial stock.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $UNITS = 3000;
my $HELD  = 5;

redis_start();
my $node = new_node('crash_backend');
sale_setup($node, $UNITS);

ok(poll_sql($node, 'SELECT passes >= 1 FROM flashsale.worker_status', 't', 30),
	'worker ran its start-up pass');
my ($worker_before) = worker_pids($node);
ok($worker_before, "worker running (pid $worker_before)");

# A transaction that surely dies holding units: 5, never ended.
my ($held, $held_pid) = hold_units($node, $HELD);
my $f = stock_figures($node);
is($f->{in_flight}, $HELD, "the open transaction holds $HELD units in flight");
is($f->{pool} + $f->{available} + $f->{in_flight}, $UNITS,
	'pool + available + in flight == the database truth');
my $epoch_before = allot_fields($node)->{e};
like($epoch_before, qr/^\d+$/, "Redis records this instance's epoch ($epoch_before)");

# ~1000 attempts a second for up to a minute: the crash ends it long before
my $bench = pgbench_start($node, clients => 64, duration => 60, rate => 1000);
ok(wait_mid_sale($bench, $UNITS * 6 / 10), 'sale under way (60 % left)');

# a pgbench backend in a transaction that has an xid (it has decremented
# or is about to)
my $victim = pgbench_victim($node, $bench);
ok(defined $victim, 'picked a busy pgbench backend')
  or BAIL_OUT('no pgbench backend to kill');
note "victim: pid $victim";

my $log_offset = -s $node->logfile;
ok(kill('KILL', $victim), "kill -9 $victim");

my $rc = pgbench_finish($bench);
isnt($rc, -1, 'pgbench ended (its clients abort when their backends die)');
note "pgbench exit status $rc (non-zero expected: its connections were lost)";

wait_crash_restart($node, $log_offset, $victim);
ok(poll_sql($node, 'SELECT 1', '1', 60), 'node accepts connections after the crash restart');

# the worker is back (a new process) and has run its start-up pass
ok( poll_sql(
		$node,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'flashsale worker'"
		  . " AND pid <> $worker_before AND datname = 'postgres'",
		'1', 60),
	'worker restarted after the crash restart');
ok( poll_sql(
		$node,
		"SELECT pid <> $worker_before AND passes >= 1 FROM flashsale.worker_status",
		't', 60),
	"the new worker ran its start-up pass");
my $w = worker_status($node);
note 'worker after restart: ' . join(', ', map { "$_=$w->{$_}" } sort keys %$w);
is($w->{product_errors}, 0, 'its pass had no errors');

# the dead transactions (the open one among them) hold nothing any more
my $truth = db_left($node);
my $sold = $node->safe_psql('postgres', 'SELECT coalesce(sum(qty), 0) FROM orders');
is($sold + $truth, $UNITS, 'database: orders + truth == initial (each order has its ledger row)');
is($node->safe_psql('postgres', 'SELECT count(*) FROM flashsale.allotments()'),
	0, 'the new shared memory holds no allotment');
is(allot_fields($node)->{e}, $epoch_before, 'Redis still records the old epoch');

my $pass = sync_pass($node);
is($pass->{errors}, 0, 'pass: no errors');
is($pass->{products}, 1, 'pass: one product');
is($node->safe_psql('postgres', 'SELECT flashsale.stock_level(1)'), $truth,
	'stock_level == the database truth: the lost allotment is back in the pool');
my $a = allot_fields($node);
isnt($a->{e}, $epoch_before, "the rebuild recorded the new epoch ($a->{e})");
is($a->{h}, 0, 'and that this instance holds nothing');
is(redis_cmd('GET', stock_key($node)), $truth, 'Redis\' pool == the database truth');

check_stock($node, $UNITS, 'after kill -9 and one pass');

# the sale goes on after the crash
my $left = $node->safe_psql('postgres', 'SELECT flashsale.stock_level(1)');
if ($left > 0)
{
	is( $node->safe_psql('postgres',
			"BEGIN; SELECT flashsale.try_decrement_stock(1); INSERT INTO orders (product_id, qty) VALUES (1, 1); COMMIT;"),
		$left - 1, 'a decrement after the crash works');
	check_stock($node, $UNITS, 'after one more sale');
}

$held->quit;
$node->stop;
done_testing();
