
# Immediate shutdown mid-sale (no shutdown checkpoint, no transaction gets
# to abort cleanly), then a start with crash recovery: the worker's start-up
# pass and one pass by hand settle what was in flight.  Afterwards, exactly:
# orders + units left == initial stock.
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

my ($held, $held_field) = hold_reservation($node, $HELD);
is(redis_cmd('HGET', reserved_key($node), $held_field),
	$HELD, 'open transaction\'s reservation recorded in Redis');

my $bench = pgbench_start($node, clients => 64, duration => 60, rate => 1000);
ok(wait_mid_sale($bench, $UNITS * 6 / 10), 'sale under way (60 % left)');

$node->stop('immediate');
my $in_redis = redis_cmd('HLEN', reserved_key($node));
note "reservations in Redis after the immediate shutdown: $in_redis";
cmp_ok($in_redis, '>=', 1, 'reservations were left in Redis');

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
is(redis_cmd('HEXISTS', reserved_key($node), $held_field),
	0, 'the open transaction\'s reservation is settled');

my $pass = sync_pass($node);
is($pass->{errors}, 0, 'pass: no errors');
cmp_ok($w->{reservations_settled} + $pass->{reservations_settled},
	'>=', 1, 'worker start-up pass + manual pass settled reservations');
cmp_ok($w->{units_returned} + $pass->{units_returned},
	'>=', $HELD, "and gave back at least the $HELD units of the open transaction");

check_stock($node, $UNITS, 'after the immediate shutdown and one pass');

$node->stop;
done_testing();
