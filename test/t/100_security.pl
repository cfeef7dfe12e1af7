
# Keyspaces and search_path, where they meet more than one session:
#  - two databases on one Redis, default settings (empty key_prefix), sell
#    the same product id independently, and their sync passes fix no drift;
#  - the background worker (a superuser) runs nothing planted in a schema on
#    the search_path its database gives it, through a pass that reloads,
#    checks drift and folds.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

redis_start();
my $node = new_node('security', sync_interval => 3600);

sub sq { my ($sql, $db) = @_; return $node->safe_psql($db // 'postgres', $sql); }

# ---- two databases on one Redis
sq('CREATE DATABASE shop2');
sq('CREATE EXTENSION flashsale', 'shop2');
sq('SELECT flashsale.set_stock(1, 100)');
sq('SELECT flashsale.set_stock(1, 10)', 'shop2');
my $k1 = sq('SELECT stock_key FROM flashsale.stock_keys(1)');
my $k2 = sq('SELECT stock_key FROM flashsale.stock_keys(1)', 'shop2');
isnt($k1, $k2, 'the two databases name product 1 apart in Redis');

my $sell = 'SELECT count(flashsale.decrement_stock(1)) FROM generate_series(1, %d)';
is(sq(sprintf($sell, 20)),          20, 'postgres: 20 sold');
is(sq(sprintf($sell, 4), 'shop2'),  4,  'shop2: 4 sold');
is(sq(sprintf($sell, 10)),          10, 'postgres: 10 more sold');
is(sq('SELECT flashsale.stock_level(1)'),          70, 'postgres: 70 left');
is(sq('SELECT flashsale.stock_level(1)', 'shop2'), 6,  'shop2: 6 left');

my $fixed = 'SELECT drift_fixed, errors FROM flashsale.sync_stock()';
is(sq($fixed),          '0|0', 'postgres: its sync pass fixes no drift');
is(sq($fixed, 'shop2'), '0|0', 'shop2: its sync pass fixes no drift');
my $fig = 'SELECT pool, pool + available FROM flashsale.stock_redis(1)';
my ($p1, $l1) = split /\|/, sq($fig);
my ($p2, $l2) = split /\|/, sq($fig, 'shop2');
is($l1, 70, 'postgres: pool + allotment == 70 units of product 1');
is($l2, 6,  'shop2: pool + allotment == 6 units of product 1');
is(redis_cmd('GET', $k1), $p1, 'Redis: postgres\' pool is its own');
is(redis_cmd('GET', $k2), $p2, 'Redis: shop2\'s pool is its own');
is(sq('SELECT count(*) FROM flashsale.allotments() WHERE product_id = 1'), 1,
	'postgres: one allotment of product 1 listed (its own database\'s)');
is(sq('SELECT quantity FROM flashsale.stock WHERE product_id = 1'),          70, 'postgres: folded to 70');
is(sq('SELECT quantity FROM flashsale.stock WHERE product_id = 1', 'shop2'), 6,  'shop2: folded to 6');
is(sq('SELECT count(flashsale.decrement_stock(1)) FROM generate_series(1, 6)', 'shop2'),
	6, 'shop2 sells its last 6');
is(sq('SELECT flashsale.try_decrement_stock(1)', 'shop2'), '', 'shop2 is sold out');
is(sq('SELECT flashsale.stock_level(1)'), 70, 'postgres still has 70');

# ---- the worker under a hostile search_path
sq(slurp_file("$ENV{FS_ROOT}/test/sql/plant_search_path.sql"));
sq('ALTER DATABASE postgres SET search_path = public, pg_catalog');

# (from here on, this test's own queries name pg_catalog's count(*) and
# avoid the planted operators)
# the probe works: a new superuser session of this database runs the planted operator
sq('SELECT 5::bigint - 2::numeric');
is(sq('SELECT pg_catalog.count(*) FROM public.hijack'), 1, 'control: an unqualified query ran the planted operator');
is(sq(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'fs_mallory'}), 't',
	'control: and it made fs_mallory a superuser');
sq('ALTER ROLE fs_mallory NOSUPERUSER; TRUNCATE public.hijack');

# a worker started with the database's search_path
my ($old) = worker_pids($node);
sq("SELECT pg_terminate_backend($old)");
ok(wait_until(sub { my @p = worker_pids($node); @p == 1 && $p[0] != $old }, 30),
	'the worker restarted');
ok(poll_sql($node, 'SELECT passes >= 1 FROM flashsale.worker_status', 't', 30),
	'and ran its start-up pass');

# work for a pass: a committed sale to check and fold, and a product sold
# from that Redis then lost (its pool and allotment hash)
my $s = $node->background_psql('postgres');
$s->query_safe('BEGIN');
$s->query_safe('SELECT flashsale.decrement_stock(1, 3)');
$s->query_safe('COMMIT');
sq('SELECT flashsale.set_stock(2, 5)');
sq('SELECT flashsale.decrement_stock(2)');
redis_cmd('DEL', sq('SELECT stock_key FROM flashsale.stock_keys(2)'),
	sq('SELECT allot_key FROM flashsale.stock_keys(2)'));
is(redis_cmd('EXISTS', sq('SELECT stock_key FROM flashsale.stock_keys(2)')), 0,
	'product 2 is gone from Redis');

my $before = worker_status($node);
# (a product is checked once idle for flashsale.allotment_idle, 1 s, after its last sale)
usleep(1_200_000);
is(sq('SELECT flashsale.sync_now()'), 't', 'sync_now() wakes the worker');
my $next = $before->{passes} + 1;
ok(poll_sql($node, "SELECT passes >= $next FROM flashsale.worker_status", 't', 30),
	'the worker ran a pass');
my $after = worker_status($node);
cmp_ok($after->{products_reloaded},    '>', $before->{products_reloaded},    'the pass rebuilt');
cmp_ok($after->{ledger_rows_folded},   '>', $before->{ledger_rows_folded},   'the pass folded');
is($after->{drift_fixed}, $before->{drift_fixed}, 'and fixed no drift');
is(sq('SELECT pool IS NOT NULL FROM flashsale.stock_redis(2)'), 't', 'product 2 is back in Redis');
is(sq('SELECT flashsale.stock_level(2)'), 4, 'with its 4 units');
is(sq('SELECT flashsale.stock_level(1)'), 67, 'product 1: 67 units');
is(sq('SELECT pg_catalog.count(*) FROM public.hijack'), 0, 'nothing planted ran in the worker');
is(sq(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'fs_mallory'}), 'f', 'fs_mallory is no superuser');
$s->quit;

done_testing();
