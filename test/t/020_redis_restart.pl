
# Redis restarted empty mid-sale, pgbench running: buyers sell on from
# this instance's allotment; the first lease finds the pool gone, and the
# pool is rebuilt from the database truth minus what this instance holds;
# the sale goes on to the end.  The
# pgbench transactions go through buy(p), which retries a decrement that
# failed with a Redis connection error (class 08) while Redis was down, so
# that no client aborts.  Afterwards, exactly: orders + units left ==
# initial stock, and it sold out.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $UNITS   = 3000;
my $CLIENTS = 64;
my $TXNS    = 100;    # 6,400 attempts, ~5,760 of them buys, for 3,000 units

redis_start();
my $node = new_node('redis_restart');
sale_setup($node, $UNITS);
ok(poll_sql($node, 'SELECT passes >= 1 FROM flashsale.worker_status', 't', 30),
	'worker ran its start-up pass');
my $passes = worker_status($node)->{passes};

my $bench = pgbench_start(
	$node,
	clients      => $CLIENTS,
	transactions => $TXNS,
	rate         => 1500,
	scripts      => [ buy_retry => 9, rollback_retry => 1 ]);
my $at = wait_mid_sale($bench, $UNITS * 6 / 10);
ok($at, 'sale under way (60 % left)');

my $old_pid = redis_pid();
redis_restart();
isnt(redis_pid(), $old_pid, 'Redis restarted (new process, same port)');
my $restarted_with = redis_cmd('GET', stock_key($node));
note 'stock key right after the restart: '
  . ($restarted_with // '') . ' (empty: not reloaded yet)';

# a decrementer rebuilds the lost pool (no pass runs: the interval is an
# hour and nobody calls sync_stock()) and the sale goes on
my $reloaded_left;
ok( wait_until(
		sub {
			my $l = redis_cmd('GET', stock_key($node));
			$reloaded_left = $l if defined $l && $l =~ /^\d+$/;
			return defined $reloaded_left;
		},
		60),
	'product reloaded into the new Redis by the sale itself');
ok(FlashsaleTest::pgbench_running($bench), 'pgbench still running after the reload');
note "reloaded with $reloaded_left units left";

my $rc = pgbench_finish($bench);
is($rc, 0, 'pgbench finished without errors');
like($bench->{out}, qr/number of transactions actually processed: ${\($CLIENTS * $TXNS)}\/${\($CLIENTS * $TXNS)}/,
	'pgbench: every transaction processed');
is(worker_status($node)->{passes}, $passes, 'no worker pass ran during the sale');
note 'Redis errors retried by buy(): '
  . $node->safe_psql('postgres', 'SELECT count(*) FROM redis_errors')
  . ' (only those of committed transactions are recorded)';

# before any pass: the ledger is exactly the orders, per transaction
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM
    (SELECT xid, sum(quantity) AS n FROM flashsale.stock_ledger WHERE product_id = 1 GROUP BY 1) l
    FULL JOIN (SELECT xid, sum(qty) AS n FROM orders GROUP BY 1) o USING (xid)
WHERE l.n IS DISTINCT FROM o.n}),
	0,
	'ledger == orders, per transaction');
is( $node->safe_psql('postgres',
		'SELECT db_left, "left", pool, available, in_flight FROM flashsale.stock_status WHERE product_id = 1'),
	'0|0|0|0|0',
	'before the pass: sold out in the database, in Redis\' pool and in the allotment');

my $pass = sync_pass($node);
is($pass->{errors}, 0, 'pass: no errors');
is($pass->{reloaded}, 0, 'pass: nothing to reload');
is($pass->{drift_fixed}, 0, 'pass: no drift');
is($pass->{units_returned}, 0, 'pass: nothing to give back (sold out)');
my ($sold, $left) = check_stock($node, $UNITS, 'after the Redis restart and one pass');
is($left, 0, 'sold out');
is( $node->safe_psql('postgres', 'SELECT flashsale.try_decrement_stock(1) IS NULL'),
	't', 'sold out: try_decrement_stock returns NULL');

$node->stop;
done_testing();
