
# A client backend killed with SIGKILL mid-sale: the postmaster restarts
# every backend (crash recovery).  Reservations of the transactions that
# died stay in Redis; the sync pass settles them by their real outcome.
# Afterwards, exactly: orders + units left == initial stock.
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

# A transaction that surely dies with a reservation: 5 units, never ended.
my ($held, $held_field, $held_pid) = hold_reservation($node, $HELD);
is(redis_cmd('HGET', reserved_key($node), $held_field),
	$HELD, "open transaction's reservation recorded in Redis ($held_field)");

# ~1000 attempts a second for up to a minute: the crash ends it long before
my $bench = pgbench_start($node, clients => 64, duration => 60, rate => 1000);
ok(wait_mid_sale($bench, $UNITS * 6 / 10), 'sale under way (60 % left)');

# a pgbench backend in a transaction that has an xid (it has decremented
# or is about to)
my $victim = pgbench_victim($node);
ok(defined $victim, 'picked a pgbench backend in a transaction')
  or BAIL_OUT('no pgbench backend to kill');
note "victim: pid $victim";

my $log_offset = -s $node->logfile;
ok(kill('KILL', $victim), "kill -9 $victim");
my $in_redis_after_kill = redis_cmd('HLEN', reserved_key($node));

my $rc = pgbench_finish($bench);
isnt($rc, -1, 'pgbench ended (its clients abort when their backends die)');
note "pgbench exit status $rc (non-zero expected: its connections were lost)";

wait_crash_restart($node, $log_offset, $victim);
ok(poll_sql($node, 'SELECT 1', '1', 60), 'node accepts connections after the crash restart');
note "reservations in Redis right after the kill: $in_redis_after_kill";

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

is(redis_cmd('HEXISTS', reserved_key($node), $held_field),
	0, 'the dead open transaction\'s reservation is settled');

my $pass = sync_pass($node);
is($pass->{errors}, 0, 'pass: no errors');
is($pass->{products}, 1, 'pass: one product');
cmp_ok($w->{reservations_settled} + $pass->{reservations_settled},
	'>=', 1, 'worker start-up pass + manual pass settled reservations');
cmp_ok($w->{units_returned} + $pass->{units_returned},
	'>=', $HELD, "and gave back at least the $HELD units of the open transaction");

check_stock($node, $UNITS, 'after kill -9 and one pass');

# the sale goes on after the crash
my $left = $node->safe_psql('postgres', 'SELECT flashsale.stock_level(1)');
if ($left > 0)
{
	is( $node->safe_psql('postgres',
			"BEGIN; SELECT flashsale.try_decrement_stock(1); COMMIT;"),
		$left - 1, 'a decrement after the crash works');
	$node->safe_psql('postgres', 'INSERT INTO orders (product_id, qty) VALUES (1, 1)');
	sync_pass($node);
	check_stock($node, $UNITS, 'after one more sale');
}

$held->quit;
$node->stop;
done_testing();
