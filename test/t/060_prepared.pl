
# Two-phase commit is not supported for stock: PREPARE TRANSACTION after a
# decrement (or a set_stock) is refused with SQLSTATE 0A000, the
# transaction rolls back and its units are back in the allotment at once.
# Counts stay exact.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $UNITS = 100;

redis_start();
my $node = new_node('prepared', max_prepared_transactions => 5);

sub sq { return $node->safe_psql('postgres', $_[0]); }

sub exact
{
	my ($left, $label) = @_;
	is(sq('SELECT flashsale.stock_level(1)'), $left, "$label: $left units left");
	is(sq('SELECT db_left, "left", in_flight FROM flashsale.stock_status'),
		"$left|$left|0", "$label: stock_status exact, nothing in flight");
	my $f = stock_figures($node);
	is(redis_cmd('GET', stock_key($node)), $f->{pool},
		"$label: Redis' pool == stock_redis' pool ($f->{pool}, $f->{available} available here)");
	is(sq('SELECT count(*) FROM pg_prepared_xacts'), 0, "$label: no prepared transaction");
}

is(sq('SHOW max_prepared_transactions'), 5, 'prepared transactions are enabled');
sq("SELECT flashsale.set_stock(1, $UNITS)");
is(sq('SELECT flashsale.stock_level(1)'), $UNITS, "$UNITS units");
ok(poll_sql($node, 'SELECT passes >= 1 FROM flashsale.worker_status', 't', 30),
	'worker ran its start-up pass');
my $passes = worker_status($node)->{passes};

# ---- decrement, then PREPARE TRANSACTION
my ($rc, $out, $err) = $node->psql(
	'postgres', q{\set VERBOSITY verbose
BEGIN;
SELECT flashsale.decrement_stock(1, 7);
PREPARE TRANSACTION 'sale';});
is($out, $UNITS - 7, 'decrement_stock took 7 units');
like($err,
	qr/ERROR:  0A000: cannot prepare a transaction that changed flashsale stock/,
	'PREPARE TRANSACTION refused with SQLSTATE 0A000');
exact($UNITS, 'after the refused PREPARE');
is(sq('SELECT count(*) FROM flashsale.stock_ledger'), 0, 'no ledger row');
is(worker_status($node)->{passes}, $passes, 'units back without a sync pass');

# ---- set_stock, then PREPARE TRANSACTION
($rc, $out, $err) = $node->psql(
	'postgres', q{\set VERBOSITY verbose
BEGIN;
SELECT flashsale.set_stock(1, 5);
PREPARE TRANSACTION 'restock';});
like($err,
	qr/ERROR:  0A000: cannot prepare a transaction that changed flashsale stock/,
	'PREPARE TRANSACTION after set_stock refused too');
is(sq('SELECT quantity FROM flashsale.stock WHERE product_id = 1'),
	$UNITS, 'set_stock rolled back');
exact($UNITS, 'after the refused PREPARE of set_stock');

# ---- a decrement in a savepoint rolled back holds nothing: PREPARE works
is( sq(q{
BEGIN;
SAVEPOINT a;
SELECT flashsale.decrement_stock(1, 3);
ROLLBACK TO SAVEPOINT a;
CREATE TABLE prepared_marker (i int);
PREPARE TRANSACTION 'no_stock';}),
	$UNITS - 3,
	'decrement in a savepoint, rolled back to it');
is(sq('SELECT gid FROM pg_prepared_xacts'), 'no_stock', 'then PREPARE TRANSACTION works');
is(sq('SELECT flashsale.stock_level(1)'), $UNITS, 'units of the savepoint are back');
sq("COMMIT PREPARED 'no_stock'");
exact($UNITS, 'after COMMIT PREPARED');

# ---- Redis loses everything: the truth is in the database
redis_flushall();
is(redis_cmd('EXISTS', stock_key($node)), 0, 'FLUSHALL dropped the product');
exact($UNITS, 'after FLUSHALL (stock_level reloads it)');

# ---- ordinary sales still count exactly
sq('BEGIN; SELECT flashsale.decrement_stock(1, 2); COMMIT;');
sq('BEGIN; SELECT flashsale.decrement_stock(1, 4); ROLLBACK;');
my $pass = sync_pass($node);
is("$pass->{ledger_rows_folded} $pass->{drift_fixed} $pass->{errors}",
	'1 0 0', 'pass: one ledger row folded, no drift, no errors');
exact($UNITS - 2, 'after one sale and one pass');
is(sq('SELECT quantity FROM flashsale.stock WHERE product_id = 1'),
	$UNITS - 2, 'flashsale.stock.quantity == units left');

$node->stop;
done_testing();
