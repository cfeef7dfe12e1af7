
# Redis loses what it holds while this instance has a large allotment out
# (flashsale.allotment_max = 500; allotment_idle an hour, so nothing goes
# back to the pool by itself until the end):
#   A. FLUSHALL, quiet: the allotment still sells; the first call that
#      asks Redis finds the record gone and rebuilds the pool from the
#      database truth minus what this instance holds;
#   B. FLUSHALL mid-sale, pgbench running;
#   C. Redis restarted empty (no persistence) mid-sale, pgbench running
#      (buy() retries the decrements that met Redis down, class 08);
#   D. Redis restarted from an older snapshot (SAVE, then leases, then a
#      restart that loads it): the pool and sequence it brings back are
#      older than this instance's; the sequence shows it stale, the pool
#      is rebuilt;
#   E. the same, where the snapshot was taken right after a rebuild and
#      this instance rebuilt again since (after a FLUSHALL): the snapshot's
#      epoch and sequence (1) are the ones this instance uses again, and
#      its older, larger pool must not be taken for the truth;
#   F. the sale runs to the last unit.
# After each: a pass finds no drift, and pool + available + in flight ==
# the database truth, orders + units left == initial exactly, no oversell.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $UNITS = 12000;

my $node = allotment_sale('allotment_redis_loss', $UNITS);
sub sq { return $node->safe_psql('postgres', $_[0]); }

sub orders { return sq('SELECT coalesce(sum(qty), 0) FROM orders'); }

# sell(n): one transaction taking n units one by one (an order row each)
sub sell
{
	my ($n) = @_;
	sq("BEGIN; INSERT INTO orders (product_id, qty) SELECT 1, 1 FROM generate_series(1, $n)"
		  . " WHERE flashsale.decrement_stock(1) IS NOT NULL; COMMIT;");
}

# exact(label): a pass finds no drift, and every figure agrees exactly
sub exact
{
	my ($label) = @_;
	my ($pass, $f);
	# a pool lost to a FLUSHALL just before the sales ended is back once a
	# pass checks the product, which it does once the product is idle: pass
	# until then
	ok( wait_until(
			sub {
				$pass = sync_pass($node);
				$f    = stock_figures($node);
				return defined $f->{pool} && $f->{pool} ne '';
			},
			30),
		"$label: a pass put the pool back in Redis");
	is("$pass->{drift_fixed} $pass->{errors} $pass->{busy}", '0 0 0',
		"$label: a pass finds no drift, no errors, nothing busy");
	my $truth = db_left($node);
	is($f->{in_flight}, 0, "$label: nothing in flight");
	is($f->{pool} + $f->{available}, $truth, "$label: pool + available == the database truth ($truth)");
	is(redis_cmd('GET', stock_key($node)), $f->{pool}, "$label: Redis' pool == stock_redis' pool");
	is(sq('SELECT flashsale.stock_level(1)'), $truth, "$label: stock_level == the database truth");
	is(orders() + $truth, $UNITS, "$label: orders + units left == $UNITS");
	return $f;
}

# burst: 64 clients, no rate limit: leases come fast, the batch doubles up to 500
my $bench = pgbench_start($node, clients => 64, transactions => 40);
is(pgbench_finish($bench), 0, 'a burst of sales');
my $a = allotment($node);
note 'allotment: ' . join(', ', map { "$_=$a->{$_}" } sort keys %$a);
cmp_ok($a->{batch}, '>=', 256, "the batch grew ($a->{batch})");
cmp_ok($a->{available}, '>=', 100, "a large allotment is out ($a->{available} units)");
my $f0 = exact('after the burst');
my $epoch = allot_fields($node)->{e};
my $seq0 = allot_fields($node)->{s};

# ---- A. FLUSHALL, quiet
redis_flushall();
is(redis_cmd('DBSIZE'), 0, 'A: FLUSHALL: Redis is empty');
my $orders = orders();
sell(5);
is(orders(), $orders + 5, 'A: 5 units sold from the allotment, Redis empty');
is(redis_cmd('EXISTS', stock_key($node)), 0, 'A: no pool was made up meanwhile');
my $f = stock_figures($node);
is("[$f->{pool}] $f->{available}", '[] ' . ($f0->{available} - 5),
	'A: stock_redis: no pool, the allotment less the 5');
is(allotment($node)->{stale}, 't', 'A: the record is seen stale');
my $truth = db_left($node);
is(sq('SELECT flashsale.stock_level(1)'), $truth, 'A: stock_level rebuilds: the database truth');
is(redis_cmd('GET', stock_key($node)), $truth - $f->{available},
	'A: Redis\' pool == the truth minus what this instance holds');
my $r = allot_fields($node);
is("$r->{e} $r->{h}", "$epoch $f->{available}",
	'A: the record: same epoch (same shared memory), holding the allotment');
cmp_ok($r->{s}, '>', $seq0, 'A: a sequence above any used before in this epoch');
exact('A. after FLUSHALL');

# ---- B. FLUSHALL mid-sale
$bench = pgbench_start($node, clients => 64, transactions => 40, rate => 2000,
	scripts => [ buy_retry => 9, rollback_retry => 1 ]);
ok(wait_mid_sale($bench, db_left($node) - 600), 'B: sale under way');
redis_flushall();
note 'B: FLUSHALL with ' . (allotment($node)->{available} // '?') . ' units available here';
is(pgbench_finish($bench), 0, 'B: pgbench finished without errors');
like($bench->{out}, qr/actually processed: 2560\/2560/, 'B: every transaction processed');
exact('B. after FLUSHALL mid-sale');

# ---- C. Redis restarted empty mid-sale
$bench = pgbench_start($node, clients => 64, transactions => 40, rate => 2000,
	scripts => [ buy_retry => 9, rollback_retry => 1 ]);
ok(wait_mid_sale($bench, db_left($node) - 600), 'C: sale under way');
my $old_pid = redis_pid();
redis_restart();
isnt(redis_pid(), $old_pid, 'C: Redis restarted (new process, same port, empty)');
is(pgbench_finish($bench), 0, 'C: pgbench finished without errors');
like($bench->{out}, qr/actually processed: 2560\/2560/, 'C: every transaction processed');
exact('C. after a Redis restart mid-sale');

# ---- D. a restart from an older snapshot
is(allotment($node)->{stale}, 'f', 'D: the record is this instance\'s');
my $saved = allot_fields($node);
my $saved_pool = redis_cmd('GET', stock_key($node));
redis_save();
sell(allotment($node)->{available} + 50);    # beyond the allotment: leases
my $now = allot_fields($node);
cmp_ok($now->{s}, '>', $saved->{s}, "D: leases since the snapshot (sequence $saved->{s} -> $now->{s})");
cmp_ok(redis_cmd('GET', stock_key($node)), '<', $saved_pool, 'D: the pool is lower than in the snapshot');
redis_restart();
redis_forget_snapshot();
is(redis_cmd('GET', stock_key($node)), $saved_pool, 'D: Redis came back with the snapshot\'s pool');
is(allot_fields($node)->{s}, $saved->{s}, 'D: and its older sequence');
$f = stock_figures($node);
is($f->{pool}, $saved_pool, 'D: stock_redis (nothing rebuilt) reads the old pool');
is(allotment($node)->{stale}, 't', 'D: the stale sequence is detected: the entry is stale');
$truth = db_left($node);
is(sq('SELECT flashsale.stock_level(1)'), $truth, 'D: stock_level rebuilds: the database truth');
is(redis_cmd('GET', stock_key($node)), $truth - allotment($node)->{available},
	'D: Redis\' pool == the truth minus what this instance holds');
exact('D. after a restart from an older snapshot');

# ---- E. a snapshot taken right after a rebuild, a rebuild since
sq('SELECT flashsale.reload_stock(1)');
sq('SELECT flashsale.stock_level(1)');
$saved = allot_fields($node);
ok($saved->{s} =~ /^\d+$/, "E: just rebuilt: sequence $saved->{s}");
$saved_pool = redis_cmd('GET', stock_key($node));
redis_save();
sell(allotment($node)->{available} + 50);    # beyond the allotment: leases
cmp_ok(redis_cmd('GET', stock_key($node)), '<', $saved_pool, 'E: the pool is lower than in the snapshot');
redis_flushall();
sq('SELECT flashsale.stock_level(1)');       # rebuilt again: a new sequence, never the snapshot's
cmp_ok(allot_fields($node)->{s}, '>', $saved->{s}, 'E: rebuilt after FLUSHALL: a sequence above the snapshot\'s');
redis_restart();
redis_forget_snapshot();
is(redis_cmd('GET', stock_key($node)), $saved_pool, 'E: Redis came back with the snapshot\'s pool');
$truth = db_left($node);
my ($ok, $level) = psql_raw($node, 'SELECT flashsale.stock_level(1)');
is($level, $truth, 'E: stock_level == the database truth (the snapshot\'s larger pool is not taken for it)');
$f = stock_figures($node);
is($f->{pool} + $f->{available}, $truth, 'E: pool + available == the database truth');

# ---- F. the sale runs to the last unit (no pass in between)
$truth = db_left($node);
$bench = pgbench_start($node, clients => 64, transactions => int($truth * 1.3 / 64 / 0.9) + 10);
is(pgbench_finish($bench), 0, 'F: pgbench sold on to the end');
my $sold = orders();
cmp_ok($sold, '<=', $UNITS, "F: no oversell (orders $sold of $UNITS)");
is($sold, $UNITS, "F: sold out exactly: orders == $UNITS");
if ($sold <= $UNITS)
{
	sq("ALTER SYSTEM SET flashsale.allotment_idle = '200ms'; SELECT pg_reload_conf();");
	my (undef, $left) = check_stock($node, $UNITS, 'F. sold out');
	is($left, 0, 'F: nothing left');
}

$node->stop;
done_testing();
