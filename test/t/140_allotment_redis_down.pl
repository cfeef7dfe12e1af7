
# Redis down mid-sale, then back, while this instance has an allotment out
# (flashsale.allotment_max = 500, allotment_idle an hour):
#   A. quiet: with Redis stopped, sales go on from the allotment (no Redis
#      call), a rollback gives its units back there; once a sale needs a
#      lease it fails with SQLSTATE 08001 (decrement_stock and
#      try_decrement_stock alike: not "sold out"), and nothing is sold
#      that the database does not count; Redis back (empty): the next sale
#      rebuilds the pool from the truth minus what this instance holds;
#   B. under load (pgbench through buy(), which retries class 08): sales
#      commit after Redis stopped, then stall on 08001 once the allotment
#      is spent, and resume when Redis is back; every transaction ends;
#   C. the sale runs to the last unit: orders == initial, nothing left.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $UNITS = 12000;

my $node = allotment_sale('allotment_redis_down', $UNITS);
sub sq { return $node->safe_psql('postgres', $_[0]); }

sub orders { return sq('SELECT coalesce(sum(qty), 0) FROM orders'); }

# exact(label): with Redis up, a pass finds no drift and the figures agree
sub exact
{
	my ($label) = @_;
	my $pass = sync_pass($node);
	is("$pass->{drift_fixed} $pass->{errors}", '0 0', "$label: a pass finds no drift, no errors");
	my $truth = db_left($node);
	my $f     = stock_figures($node);
	is($f->{in_flight}, 0, "$label: nothing in flight");
	is($f->{pool} + $f->{available}, $truth, "$label: pool + available == the database truth ($truth)");
	is(redis_cmd('GET', stock_key($node)), $f->{pool}, "$label: Redis' pool == stock_redis' pool");
	is(orders() + $truth, $UNITS, "$label: orders + units left == $UNITS");
	return $f;
}

my $bench = pgbench_start($node, clients => 64, transactions => 40);
is(pgbench_finish($bench), 0, 'a burst of sales');
my $a = allotment($node);
cmp_ok($a->{available}, '>=', 100, "an allotment is out ($a->{available} units, batch $a->{batch})");
exact('after the burst');

# ---- A. quiet
my $avail  = $a->{available};
my $orders = orders();
redis_stop();
my $buy = "BEGIN;\nINSERT INTO orders (product_id, qty) SELECT 1, 1"
  . " FROM (SELECT flashsale.decrement_stock(1) AS l) s;\nCOMMIT;\n";
my ($ok, $out, $err) = psql_raw($node, $buy x 20);
is($ok, 1, 'A: 20 sales with Redis down, one transaction each') or diag $err;
is(orders(), $orders + 20, 'A: all 20 committed');
($ok, $out, $err) = psql_raw($node, "BEGIN;\nSELECT flashsale.decrement_stock(1, 7);\nROLLBACK;");
is($ok, 1, 'A: a decrement of 7, rolled back, with Redis down');
$a = allotment($node);
is("$a->{available} $a->{in_flight}", ($avail - 20) . ' 0',
	'A: the allotment: less the 20 sold, the 7 back, nothing in flight');
my $rest = $a->{available};
($ok, $out, $err) = psql_raw($node,
	"BEGIN;\nINSERT INTO orders (product_id, qty) SELECT 1, $rest FROM"
	  . " (SELECT flashsale.decrement_stock(1, $rest) AS l) s;\nCOMMIT;");
is($ok, 1, "A: the last $rest units of the allotment sold in one order") or diag $err;
is(allotment($node)->{available}, 0, 'A: the allotment is spent');
for my $f ('decrement_stock(1)', 'try_decrement_stock(1)', 'decrement_stock(1, 2)')
{
	($ok, $out, $err) = psql_raw($node, "\\set VERBOSITY verbose\nSELECT flashsale.$f");
	like($err, qr/ERROR:  08001: could not connect to Redis/,
		"A: $f needs a lease: fails with SQLSTATE 08001");
}
my $truth = db_left($node);
is(orders() + $truth, $UNITS, 'A: orders + database truth == initial');
is(orders(), $orders + $avail, "A: exactly the $avail units of the allotment were sold while Redis was down");
is(sq('SELECT available, in_flight FROM flashsale.allotments() WHERE product_id = 1'), '0|0',
	'A: nothing available, nothing in flight');

redis_start();
is(redis_cmd('DBSIZE'), 0, 'A: Redis back, empty');
$orders = orders();
($ok, $out, $err) = psql_raw($node, $buy);
is($ok, 1, 'A: a sale works again') or diag $err;
is(orders(), $orders + 1, 'A: committed');
$truth = db_left($node);
is(sq('SELECT flashsale.stock_level(1)'), $truth, 'A: stock_level == the database truth');
is(redis_cmd('GET', stock_key($node)), $truth - allotment($node)->{available},
	'A: Redis\' pool == the truth minus what this instance holds');
exact('A. after Redis down and back');

# ---- B. under load
$bench = pgbench_start($node, clients => 64, duration => 5, rate => 200,
	scripts => [ buy_retry => 9, rollback_retry => 1 ]);
ok(wait_mid_sale($bench, db_left($node) - 200), 'B: sale under way');
# Redis goes away at once (SIGKILL: a shutdown takes 0.3 s) while the
# allotment has units to sell on for a while (150 units at 200 a second):
# stopped just after buyers spent it, nothing would commit while it is down,
# and the buyers' 10 s of retries would run out before it is back (at 1000
# a second that happened 2 times in 3)
ok(wait_until(sub { (allotment($node)->{available} // 0) >= 150 }, 10),
	'B: the allotment has units (at least 150)');
kill 'KILL', redis_pid();
redis_stop();    # returns once the process is gone
my $t_stop  = time();
my $at_stop = orders();
note "B: Redis stopped with $at_stop units sold, " . (allotment($node)->{available} // '?') . ' available here';
ok(wait_until(sub { orders() > $at_stop }, 10), 'B: sales commit after Redis stopped (from the allotment)');
# the allotment runs out: sales stall (buyers retry 08001)
my ($last, $since) = (orders(), time());
ok( wait_until(
		sub {
			my $n = orders();
			($last, $since) = ($n, time()) if $n != $last;
			return time() - $since > 0.5;
		},
		10),
	'B: then sales stall: the allotment is spent and leases fail');
my $down_sold = orders() - $at_stop;
note sprintf('B: %d units sold in %.1f s with Redis down', $down_sold, time() - $t_stop);
is(allotment($node)->{available}, 0, 'B: nothing available here');
ok(FlashsaleTest::pgbench_running($bench), 'B: pgbench still running (buyers retrying)');
redis_start();
ok(wait_until(sub { orders() > $last }, 10), 'B: Redis back: sales resume');
is(pgbench_finish($bench), 0, 'B: pgbench finished without errors');
cmp_ok(db_left($node), '>', 0, 'B: not sold out (the stall above was Redis\', not the end of the stock)');
unlike($bench->{out}, qr/number of failed transactions: [1-9]/, 'B: no failed transaction');
cmp_ok(sq('SELECT count(*) FROM redis_errors'), '>', 0,
	'B: buyers met Redis errors (class 08) and retried');
exact('B. after Redis down and back under load');

# ---- C. the sale runs to the last unit
$truth = db_left($node);
$bench = pgbench_start($node, clients => 64, transactions => int($truth * 1.3 / 64 / 0.9) + 10);
is(pgbench_finish($bench), 0, 'C: pgbench sold on to the end');
is(orders(), $UNITS, "C: orders == $UNITS: sold out exactly");
sq("ALTER SYSTEM SET flashsale.allotment_idle = '200ms'; SELECT pg_reload_conf();");
my (undef, $left) = check_stock($node, $UNITS, 'C. sold out');
is($left, 0, 'C: nothing left');

$node->stop;
done_testing();
