
# Immediate shutdown mid-sale (no shutdown checkpoint, no transaction gets
# to abort cleanly), then a start with crash recovery: the new shared
# memory has a new epoch and holds nothing, so the first call finds
# Redis' record stale and rebuilds the pool from the database truth: the
# allotment that was out (available and in flight, an open transaction's
# units among them) is back exactly.  Afterwards: orders + units left ==
# initial stock.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $UNITS = 3000;
my $HELD  = 7;

redis_start();
my $node = new_node('immediate_shutdown');
sale_setup($node, $UNITS);
ok(poll_sql($node, 'SELECT passes >= 1 FROM flashsale.worker_status', 't', 30),
	'worker ran its start-up pass');
my ($worker_before) = worker_pids($node);

my ($held) = hold_units($node, $HELD);
is(stock_figures($node)->{in_flight}, $HELD, "the open transaction holds $HELD units in flight");
my $epoch_before = allot_fields($node)->{e};
like($epoch_before, qr/^\d+$/, "Redis records this instance's epoch ($epoch_before)");

my $bench = pgbench_start($node, clients => 64, duration => 60, rate => 1000);
ok(wait_mid_sale($bench, $UNITS * 6 / 10), 'sale under way (60 % left)');

$node->stop('immediate');
my $pool_after = redis_cmd('GET', stock_key($node));
note "Redis' pool after the immediate shutdown: $pool_after";
my $h_after = allot_fields($node)->{h};
cmp_ok($h_after, '>=', $HELD, "Redis records units held by this instance ($h_after)");

my $rc = pgbench_finish($bench);
isnt($rc, -1, 'pgbench ended (its clients abort when the server goes away)');
note "pgbench exit status $rc (non-zero expected)";
$held->quit;

my $log_offset = -s $node->logfile;
$node->start;
$node->wait_for_log(qr/database system was not properly shut down; automatic recovery in progress/,
	$log_offset);
ok( poll_sql(
		$node,
		"SELECT pid <> $worker_before AND passes >= 1 FROM flashsale.worker_status",
		't', 60),
	'worker started again and ran its start-up pass');
my $w = worker_status($node);
note 'worker after start: ' . join(', ', map { "$_=$w->{$_}" } sort keys %$w);
is( $node->safe_psql('postgres',
		"SELECT datname FROM pg_stat_activity WHERE backend_type = 'flashsale worker'"),
	'postgres',
	'worker connected to database postgres');
is($w->{product_errors}, 0, 'its pass had no errors');

my $truth = db_left($node);
my $sold = $node->safe_psql('postgres', 'SELECT coalesce(sum(qty), 0) FROM orders');
is($sold + $truth, $UNITS, 'database: orders + truth == initial');
cmp_ok($pool_after, '<', $truth, 'Redis\' pool alone is short of the truth (the allotment was out)');
is(allot_fields($node)->{e}, $epoch_before, 'Redis still records the old epoch');

my $pass = sync_pass($node);
is($pass->{errors}, 0, 'pass: no errors');
is($node->safe_psql('postgres', 'SELECT flashsale.stock_level(1)'), $truth,
	'stock_level == the database truth: the lost allotment is back in the pool');
my $a = allot_fields($node);
isnt($a->{e}, $epoch_before, 'the rebuild recorded the new epoch');
is("$a->{s} $a->{h}", '1 0', 'sequence 1, this instance holds nothing');
is(redis_cmd('GET', stock_key($node)), $truth, 'Redis\' pool == the database truth');

check_stock($node, $UNITS, 'after the immediate shutdown and one pass');

$node->stop;
done_testing();
