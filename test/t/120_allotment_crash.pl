
# kill -9 of a backend mid-sale while large allotments are out
# (flashsale.allotment_max = 500, a sale fast enough for the batch to grow
# to it).  The crash restart wipes shared memory: the instance's allotment
# (its available units and the units in flight) is gone, and Redis' pool
# alone is short of the database truth by what was out.  Redis still names
# the old shared memory's epoch, so the next call finds the record stale
# and rebuilds the pool from durable records (quantity minus committed
# ledger), not from guesses: the pool is the truth exactly, the record
# names the new epoch, sequence 1, nothing held.  The sale then runs to the
# last unit: orders == initial, nothing left, no oversell.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $UNITS = 12000;
my $OUT   = 200;    # units out of the pool when we kill: at least this many

redis_start();
# allotments never go back idle: what is out at the kill stays out (a slow victim search must not matter)
my $node = new_node('allotment_crash',
	extra_conf => "flashsale.allotment_max = 500\nflashsale.allotment_idle = '1h'");
sub sq { return $node->safe_psql('postgres', $_[0]); }
sale_setup($node, $UNITS);
ok(poll_sql($node, 'SELECT passes >= 1 FROM flashsale.worker_status', 't', 30),
	'worker ran its start-up pass');
is(sq('SHOW flashsale.allotment_max'), 500, 'allotment_max = 500');

my $bench = pgbench_start($node, clients => 64, duration => 60, rate => 4000);
ok(wait_mid_sale($bench, $UNITS * 8 / 10), 'sale under way (80 % left)');

# a large allotment is out: available + in flight in shared memory
my $a;
ok( wait_until(
		sub {
			$a = allotment($node);
			return $a && $a->{batch} >= 256 && $a->{available} + $a->{in_flight} >= $OUT;
		},
		30),
	"the batch grew and at least $OUT units are out of the pool");
note "allotment: " . join(', ', map { "$_=$a->{$_}" } sort keys %$a) if $a;
my $before = allot_fields($node);
like($before->{e}, qr/^\d+$/, "Redis records this instance's epoch ($before->{e})");
cmp_ok($before->{h}, '>=', $OUT, "and that it holds units ($before->{h} at its last call)");

my $victim = pgbench_victim($node, $bench);
ok(defined $victim, 'picked a busy pgbench backend')
  or BAIL_OUT('no pgbench backend to kill');
my $log_offset = -s $node->logfile;
ok(kill('KILL', $victim), "kill -9 $victim");
my $rc = pgbench_finish($bench);
isnt($rc, -1, 'pgbench ended (its clients abort when their backends die)');
wait_crash_restart($node, $log_offset, $victim);
ok(poll_sql($node, 'SELECT 1', '1', 60), 'node accepts connections after the crash restart');
ok(poll_sql($node, 'SELECT passes >= 1 FROM flashsale.worker_status', 't', 60),
	'the new worker ran its start-up pass');

# ---- before anything rebuilds: the allotment is gone, Redis' pool is short
is(sq('SELECT count(*) FROM flashsale.allotments()'), 0, 'the new shared memory holds no allotment');
my $truth = db_left($node);
my $sold  = sq('SELECT coalesce(sum(qty), 0) FROM orders');
is($sold + $truth, $UNITS, "database: orders + truth == $UNITS (every order has its ledger row)");
my $pool = redis_cmd('GET', stock_key($node));
note "after the crash: truth $truth, Redis' pool $pool";
cmp_ok($truth - $pool, '>=', 1, 'Redis\' pool alone is short of the truth by what was out (' . ($truth - $pool) . ')');
my $stale = allot_fields($node);
is($stale->{e}, $before->{e}, 'Redis still records the old epoch');

# a read (nothing rebuilt) sees the record is not this shared memory's
my $f = stock_figures($node);
is("$f->{pool} $f->{available} $f->{in_flight}", "$pool 0 0",
	'stock_redis: the old pool, nothing available or in flight here');
is(allotment($node)->{stale}, 't', 'the entry is stale');

# ---- the rebuild: pool = truth - what this instance holds (nothing)
is(sq('SELECT flashsale.stock_level(1)'), $truth, 'stock_level == the database truth');
is(redis_cmd('GET', stock_key($node)), $truth, 'Redis\' pool == the database truth');
my $after = allot_fields($node);
isnt($after->{e}, $before->{e}, "the record names the new epoch ($after->{e})");
is("$after->{s} $after->{h}", '1 0', 'sequence 1, nothing held: h rebuilt');
is(allotment($node)->{stale}, 'f', 'the entry is no longer stale');
my $pass = sync_pass($node);
is("$pass->{drift_fixed} $pass->{errors}", '0 0', 'a pass finds no drift, no errors');

# ---- the sale goes on to the last unit, with rollbacks
$bench = pgbench_start($node, clients => 64, transactions => int($truth * 1.3 / 64 / 0.9) + 10);
is(pgbench_finish($bench), 0, 'pgbench sold on to the end');
is(sq('SELECT coalesce(sum(qty), 0) FROM orders'), $UNITS, "orders == $UNITS: sold out exactly");
is(db_left($node), 0, 'the database has nothing left');
is(sq('SELECT flashsale.try_decrement_stock(1) IS NULL'), 't', 'sold out: try_decrement_stock is NULL');
my ($s, $left) = check_stock($node, $UNITS, 'after kill -9 with large allotments out');
is($left, 0, 'nothing left');

$node->stop;
done_testing();
