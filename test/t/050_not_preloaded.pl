
# flashsale not in shared_preload_libraries: CREATE EXTENSION warns that no
# background worker runs, the stock, coupon and lock functions work (the
# library is loaded on first use), sync_now() says false, and sync_stock() does the pass by
# hand, settling a reservation its transaction could not give back.
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

# ---- the stock functions work
sq('SELECT flashsale.set_stock(1, 10)');
is(sq('SELECT flashsale.decrement_stock(1)'),    9, 'decrement_stock(1) -> 9 left');
is(sq('SELECT flashsale.decrement_stock(1, 2)'), 7, 'decrement_stock(1, 2) -> 7 left');
is(sq('SELECT flashsale.try_decrement_stock(1, 8) IS NULL'),
	't', 'try_decrement_stock of more than is left -> NULL');
($rc, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT flashsale.decrement_stock(1, 8)");
like($err, qr/ERROR:  FS010: not enough stock of product 1/,
	'decrement_stock of more than is left -> FS010');
sq('BEGIN; SELECT flashsale.decrement_stock(1, 3); ROLLBACK;');
is(sq('SELECT flashsale.stock_level(1)'), 7, 'a rolled-back decrement gives its units back');
is(redis_cmd('HLEN', reserved_key($node)), 0, 'no reservation left in Redis');

# Redis loses everything: stock_level reloads from the database truth
redis_flushall();
is(redis_cmd('EXISTS', stock_key($node)), 0, 'FLUSHALL dropped the product');
is(sq('SELECT flashsale.stock_level(1)'), 7, 'stock_level reloads it: 7 left');
is(redis_cmd('GET', stock_key($node)), 7, 'Redis has it again');

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

# ---- a reservation its transaction could not give back (Redis unreachable
# from the session when it rolled back) stays until a pass settles it
my $dead_port = PostgreSQL::Test::Cluster::get_free_port();
my ($left, $xid) = split /\n/, sq(qq{
BEGIN;
SELECT flashsale.decrement_stock(1, 4);
SELECT pg_current_xact_id();
SET LOCAL flashsale.redis_port = $dead_port;
ROLLBACK;});
is($left, 3, 'decremented 4 (3 left)');
my $field = system_identifier($node) . ":$xid";
is(redis_cmd('HGET', reserved_key($node), $field), 4, 'the reservation stayed in Redis');
is(sq('SELECT db_left, redis_left, reserved_in_flight FROM flashsale.stock_status'),
	'7|3|0', 'stock_status: the database says 7, Redis 3, nothing in flight');

# ---- sync_stock() by hand
my $pass = sync_pass($node);
is( join(' ', map { $pass->{$_} }
	  qw(products reloaded reservations_settled units_returned drift_fixed ledger_rows_folded errors)),
	'1 0 1 4 0 2 0',
	'sync_stock(): 1 product, 1 reservation settled, 4 units returned, 2 ledger rows folded');
is(redis_cmd('HLEN', reserved_key($node)), 0, 'no reservation left in Redis');
is(sq('SELECT quantity FROM flashsale.stock WHERE product_id = 1'), 7,
	'flashsale.stock.quantity == units left');
is(sq('SELECT count(*) FROM flashsale.stock_ledger'), 0, 'ledger folded');
is(sq('SELECT db_left, redis_left, reserved_in_flight FROM flashsale.stock_status'),
	'7|7|0', 'stock_status exact');
$pass = sync_pass($node);
is( join(' ', map { $pass->{$_} }
	  qw(products reloaded reservations_settled units_returned drift_fixed ledger_rows_folded errors)),
	'1 0 0 0 0 0 0',
	'a second pass has nothing to do');

$node->stop;
done_testing();
