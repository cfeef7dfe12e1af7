
# Coupon issuance writes its rows without SQL (src/table.c): a backend killed
# with SIGKILL mid-sale, and the crash restart of every backend that follows,
# must leave the stripes' counters equal to the rows, and the coupon must
# then sell exactly its quantity, no unit lost or issued twice.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $UNITS = 20000;

redis_start();
my $node = new_node('coupon_crash');
is($node->safe_psql('postgres', "SELECT flashsale.create_coupon('crash', $UNITS, 1)"),
	'1', 'coupon 1 created');

my $bench = pgbench_start(
	$node,
	clients  => 32,
	duration => 60,
	rate     => 2000,
	scripts  => [ coupon => 9, coupon_rollback => 1 ]);
ok(poll_sql($node, 'SELECT count(*) >= 3000 FROM flashsale.member_coupon', 't', 60),
	'sale under way (3000 issued)');

my $victim = pgbench_victim($node, $bench);
ok(defined $victim, 'picked a busy pgbench backend')
  or BAIL_OUT('no pgbench backend to kill');

my $log_offset = -s $node->logfile;
ok(kill('KILL', $victim), "kill -9 $victim");
isnt(pgbench_finish($bench), -1, 'pgbench ended (its clients abort when their backends die)');
wait_crash_restart($node, $log_offset, $victim);
ok(poll_sql($node, 'SELECT 1', '1', 60), 'node accepts connections after the crash restart');

my $check = sub {
	my ($when, $expect_rows) = @_;
	my $r = sql_row(
		$node, qq{
SELECT (SELECT count(*) FROM flashsale.member_coupon WHERE coupon_id = 1) AS rows,
       (SELECT sum(issued) FROM flashsale.coupon_stripe WHERE coupon_id = 1) AS issued,
       (SELECT count(*) FROM flashsale.coupon_stripe s
        WHERE coupon_id = 1 AND issued <> (SELECT count(*) FROM flashsale.member_coupon m
                                           WHERE m.coupon_id = 1 AND m.stripe = s.stripe)) AS mismatched,
       (SELECT count(*) - count(DISTINCT member_id) FROM flashsale.member_coupon
        WHERE coupon_id = 1) AS duplicates});
	is($r->{issued}, $r->{rows}, "$when: stripes' issued == rows ($r->{rows})");
	is($r->{mismatched}, '0', "$when: every stripe's counter matches its rows");
	is($r->{duplicates}, '0', "$when: no member twice");
	is($r->{rows}, $expect_rows, "$when: $expect_rows rows") if defined $expect_rows;
	return $r->{rows};
};
my $rows = $check->('after the crash');
cmp_ok($rows, '<', $UNITS, 'the crash came before the sale ended');

# the rest of the units go to new members, exactly (1000 a transaction: each
# issue holds its member's lock to the end of the transaction)
my $issued = 0;
for (my $m = 2000001; $m <= 2000000 + $UNITS; $m += 1000)
{
	$issued += $node->safe_psql('postgres',
		    "SELECT count(*) FROM generate_series($m, $m + 999) m"
		  . " WHERE flashsale.try_issue_coupon(m, 1) = 'issued'");
}
is($issued, $UNITS - $rows, "the fill issued the remaining " . ($UNITS - $rows));
$check->('after the fill', $UNITS);
is($node->safe_psql('postgres', 'SELECT flashsale.try_issue_coupon(3000000, 1)'),
	'sold_out', 'sold out');

$node->stop;
done_testing();
