
# flashsale not in shared_preload_libraries: CREATE EXTENSION warns that no
# background worker runs; stock is sold from allotments in shared memory,
# so the functions that sell or read stock (decrement_stock, both forms,
# try_decrement_stock, stock_level, stock_redis, restore_stock, and the
# view stock_status) fail with SQLSTATE 55000 and change nothing, while
# set_stock, the coupon and lock functions work (the library is loaded on
# first use); sync_now() says false, and sync_stock() does the pass by hand
# (it folds the ledger).
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

redis_start();
my $node = new_node('not_preloaded', preload => 0);

sub sq { return $node->safe_psql('postgres', $_[0]); }

is(sq('SHOW shared_preload_libraries'), '', 'flashsale is not preloaded');

my ($rc, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION flashsale');
is($rc, 0, 'CREATE EXTENSION flashsale succeeds');
like($err, qr/WARNING:  flashsale's background worker is not running/,
	'CREATE EXTENSION warns that the background worker is not running');
like($err, qr/DETAIL:  flashsale is not in shared_preload_libraries/,
	'and says why');
if ($rc != 0)
{
	# nothing else can work without the extension
	diag "CREATE EXTENSION flashsale failed, the rest of this test cannot run:\n$err";
	$node->stop;
	done_testing();
	exit 0;
}
is( sq("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'flashsale worker'"),
	'0', 'no flashsale worker process');
is(sq('SELECT pid IS NULL AND passes IS NULL FROM flashsale.worker_status'),
	't', 'worker_status is empty');

# ---- the stock functions that sell or read need the preload: 55000
is(sq('SELECT flashsale.set_stock(1, 10)'), '', 'set_stock works');
is(sq('SELECT quantity, set_quantity FROM flashsale.stock WHERE product_id = 1'), '10|10',
	'set_stock wrote the product\'s row');
is(redis_cmd('EXISTS', stock_key($node)), 0, 'Redis has no pool of it');

sub not_preloaded
{
	my ($sql, $label) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	isnt($rc, 0, "$label: fails");
	like($err,
		qr/ERROR:  55000: flashsale's stock needs flashsale in shared_preload_libraries/,
		"$label: SQLSTATE 55000, says why");
	return $err;
}
$err = not_preloaded('SELECT flashsale.decrement_stock(1)', 'decrement_stock(1)');
like($err, qr/HINT:  Add flashsale to shared_preload_libraries and restart the server\./,
	'with a hint');
not_preloaded('SELECT flashsale.decrement_stock(1, 2)', 'decrement_stock(1, 2)');
not_preloaded('SELECT flashsale.try_decrement_stock(1)', 'try_decrement_stock(1)');
not_preloaded("SELECT flashsale.decrement_stock('{1}'::bigint[], '{1}'::bigint[])", 'decrement_stock(array, array)');
not_preloaded('SELECT flashsale.stock_level(1)', 'stock_level(1)');
not_preloaded('SELECT * FROM flashsale.stock_redis(1)', 'stock_redis(1)');
not_preloaded('SELECT * FROM flashsale.stock_status', 'view stock_status');
# restore_stock of a unit sold (a ledger row written by a superuser, as if
# sold while preloaded): it reaches the allotment, and stops there
sq('INSERT INTO flashsale.stock_ledger (product_id, quantity) VALUES (1, 1)');
not_preloaded('SELECT flashsale.restore_stock(1, 1)', 'restore_stock(1, 1)');
is(sq('SELECT count(*), sum(quantity) FROM flashsale.stock_ledger'), '1|1',
	'nothing was written: the ledger has the one row');
is(sq('SELECT quantity FROM flashsale.stock WHERE product_id = 1'), 10, 'quantity unchanged');
is(redis_cmd('DBSIZE'), 0, 'Redis untouched: no key');
is(sq('SELECT count(*) FROM flashsale.allotments()'), 0, 'allotments(): none (no shared memory)');

# ---- the coupon functions work loaded on demand, in a fresh backend
is(sq('SELECT flashsale.create_coupon(\'on demand\', 2)'), 1, 'create_coupon');
is( sq("SELECT flashsale.try_issue_coupon(1, 1) || ',' || flashsale.try_issue_coupon(1, 1) || ',' "
	  . "|| flashsale.try_issue_coupon(2, 1) || ',' || flashsale.try_issue_coupon(3, 1)"),
	'issued,already_issued,issued,sold_out', 'try_issue_coupon: every status in turn');
is(sq('SELECT issued, remaining FROM flashsale.coupon_status'), '2|0', 'coupon_status');

# ---- named locks work too (without shared memory the view has no names)
is(sq("SELECT flashsale.get_lock('n', 0), flashsale.is_free_lock('n')"), 't|f',
	'get_lock in a session: held there');
is(sq("SELECT flashsale.is_free_lock('n')"), 't', 'released with the session');

# ---- sync_now(): false, with a NOTICE
($rc, $out, $err) = $node->psql('postgres', 'SELECT flashsale.sync_now()');
is($out, 'f', 'sync_now() returns false');
like($err, qr/NOTICE:  flashsale's background worker is not running/,
	'sync_now() says the worker is not running');
like($err, qr/HINT:  Add flashsale to shared_preload_libraries\./, 'with a hint');

# ---- sync_stock() by hand: folds the ledger, checks nothing (no allotment)
my $pass = sync_pass($node);
is( join(' ', map { $pass->{$_} }
	  qw(products reloaded allotments_returned units_returned drift_fixed ledger_rows_folded errors busy)),
	'1 0 0 0 0 1 0 0',
	'sync_stock(): 1 product, 1 ledger row folded, nothing else');
is(sq('SELECT quantity FROM flashsale.stock WHERE product_id = 1'), 9,
	'flashsale.stock.quantity: 9 (the row folded)');
is(sq('SELECT count(*) FROM flashsale.stock_ledger'), 0, 'ledger folded');
is(redis_cmd('DBSIZE'), 0, 'Redis still untouched');
$pass = sync_pass($node);
is( join(' ', map { $pass->{$_} }
	  qw(products reloaded allotments_returned units_returned drift_fixed ledger_rows_folded errors busy)),
	'1 0 0 0 0 0 0 0',
	'a second pass has nothing to do');

# ---- set_stock again: the stock functions still refuse, nothing sold
sq('SELECT flashsale.set_stock(1, 5)');
not_preloaded('SELECT flashsale.try_decrement_stock(1)', 'after a second set_stock, try_decrement_stock');
is(sq('SELECT quantity FROM flashsale.stock WHERE product_id = 1'), 5, 'set_stock set 5');

$node->stop;
done_testing();
