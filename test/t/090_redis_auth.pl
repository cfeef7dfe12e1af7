
# Redis with an ACL user and the default user off: flashsale logs in as
# flashsale.redis_user with flashsale.redis_password from postgresql.conf.
# Every connection logs in alike: the stock connection (a sale), the
# worker's (a sync pass reloads what Redis lost), redis_call's and the
# subscriber of Redis lock waiters (a user without the lock channels gets an
# error, not a deaf wait).  A wrong password (ALTER SYSTEM and a
# reload) gives 08001 with a message that says so, in sessions and in the
# worker, and the right one brings both back.  Other roles can read the
# password nowhere.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

redis_start();
is(redis_cmd('ACL', 'SETUSER', 'shop', 'on', '>s3cret', '~*', '&*', '+@all'),
	'OK', 'Redis: ACL user shop');
is(redis_cmd('ACL', 'SETUSER', 'default', 'off'), 'OK', 'Redis: default user off');
redis_auth('shop', 's3cret');
is(redis_cmd('ACL', 'WHOAMI'), 'shop', 'redis-cli logs in as shop');

my $node = new_node('redis_auth',
	extra_conf => "flashsale.redis_user = 'shop'\nflashsale.redis_password = 's3cret'");
ok(poll_sql($node, 'SELECT passes >= 1 AND redis_ok FROM flashsale.worker_status', 't', 30),
	'worker ran its start-up pass');

# a sale, on the stock connection
$node->safe_psql('postgres', 'SELECT flashsale.set_stock(1, 10)');
is($node->safe_psql('postgres', 'SELECT flashsale.decrement_stock(1, 3)'), '7', 'a sale as shop');
is($node->safe_psql('postgres', 'SELECT pool + available, in_flight FROM flashsale.stock_redis(1)'),
	'7|0', 'Redis holds the product\'s pool (pool + this allotment: 7)');

# the worker's connection: a pass rebuilds what Redis lost (a product is
# checked once idle for flashsale.allotment_idle, 1 s, after its last sale)
my $before = worker_status($node);
redis_flushall();
usleep(1_200_000);
is($node->safe_psql('postgres', 'SELECT flashsale.sync_now()'), 't', 'worker woken');
ok(poll_sql($node, "SELECT passes > $before->{passes} FROM flashsale.worker_status", 't', 30),
	'worker ran a pass');
my $after = worker_status($node);
is($after->{redis_ok}, 't', 'worker: Redis ok');
is($after->{products_reloaded} - $before->{products_reloaded}, 1, 'worker reloaded the product');
is($node->safe_psql('postgres', 'SELECT pool + available, in_flight FROM flashsale.stock_redis(1)'),
	'7|0', 'Redis holds it again, rebuilt by the worker');

# redis_call's connection and a Redis lock waiter's subscriber connection
is($node->safe_psql('postgres', q{SELECT flashsale.redis_call('ACL', 'WHOAMI')}),
	'shop', 'redis_call logs in as shop');
# redis_call's connection is one of its own, beside the stock connection
sub redis_clients { return (redis_cmd('INFO', 'clients') =~ /connected_clients:(\d+)/)[0]; }
my $session = $node->background_psql('postgres');
$session->query_safe('SELECT flashsale.stock_level(1)');
my $clients = redis_clients();
$session->query_safe(q{SELECT flashsale.redis_call('PING')});
is(redis_clients() - $clients, 1, 'redis_call opened a second connection');
$session->quit;
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{SELECT flashsale.redis_lock_session('job')});
is($node->safe_psql('postgres', q{SELECT flashsale.redis_lock_session('job', 30000, 300) IS NULL}),
	't', 'a lock waiter listened (SUBSCRIBE) until its wait ran out');
# a user without channels: its waiter is refused SUBSCRIBE, and says so
is(redis_cmd('ACL', 'SETUSER', 'nochan', 'on', '>s3cret', '~*', 'resetchannels', '+@all'),
	'OK', 'Redis: ACL user nochan, no channels');
my ($ok, $out, $err) = psql_raw($node,
	"SET flashsale.redis_user = 'nochan';\nSELECT flashsale.redis_lock_session('job', 30000, 300)");
like($err, qr/ERROR:  Redis refused SUBSCRIBE to "lock:\{3:job\}:released:[^"]+".*NOPERM/s,
	'a waiter refused SUBSCRIBE: an error naming the channel');
$holder->quit;

# without the user, AUTH <password> is for the default user, which is off
($ok, $out, $err) = psql_raw($node,
	"\\set VERBOSITY sqlstate\nSET flashsale.redis_user = '';\nSELECT flashsale.stock_level(1)");
is($ok, 0, 'no redis_user: refused');
like($err, qr/ERROR:  08001/, 'no redis_user: 08001');

# a wrong password, by ALTER SYSTEM and a reload
$node->safe_psql('postgres',
	"ALTER SYSTEM SET flashsale.redis_password = 'n0t-it';\nSELECT pg_reload_conf();");
ok(poll_sql($node, q{SELECT current_setting('flashsale.redis_password')}, 'n0t-it', 30),
	'reloaded: the wrong password');
($ok, $out, $err) = psql_raw($node, 'SELECT flashsale.stock_level(1)');
is($ok, 0, 'wrong password: the sale fails');
like($err, qr/ERROR:  could not log in to Redis/, 'wrong password: the message says so');
like($err, qr/DETAIL:  Redis at 127\.0\.0\.1:\d+: AUTH failed: WRONGPASS/, 'wrong password: Redis\' answer');
like($err, qr/HINT:  Check flashsale\.redis_user and flashsale\.redis_password/,
	'wrong password: the hint names the settings');
unlike($err, qr/n0t-it|s3cret/, 'the error shows no password');
($ok, $out, $err) = psql_raw($node, "\\set VERBOSITY sqlstate\nSELECT flashsale.stock_level(1)");
like($err, qr/ERROR:  08001/, 'wrong password: 08001');
ok( poll_sql(
		$node, 'SELECT flashsale.sync_now() AND NOT redis_ok FROM flashsale.worker_status',
		't', 30),
	'wrong password: the worker reports Redis not ok');
like(worker_status($node)->{last_error}, qr/could not log in to Redis .*WRONGPASS/,
	'wrong password: the worker\'s last error says so');

# the right one again
$node->safe_psql('postgres',
	"ALTER SYSTEM RESET flashsale.redis_password;\nSELECT pg_reload_conf();");
ok(poll_sql($node, 'SELECT flashsale.decrement_stock(1)', '6', 30), 'password back: a sale');
ok( poll_sql(
		$node, 'SELECT flashsale.sync_now() AND redis_ok FROM flashsale.worker_status',
		't', 30),
	'password back: the worker reaches Redis');

# other roles read the password nowhere
$node->safe_psql('postgres', 'CREATE ROLE clerk LOGIN');
my $as_clerk = "\\set VERBOSITY sqlstate\nSET ROLE clerk;\n";
($ok, $out, $err) = psql_raw($node, $as_clerk . 'SHOW flashsale.redis_password');
like($err, qr/ERROR:  42501/, 'clerk: SHOW refused (42501)');
($ok, $out, $err) =
  psql_raw($node, $as_clerk . q{SELECT current_setting('flashsale.redis_password')});
like($err, qr/ERROR:  42501/, 'clerk: current_setting refused (42501)');
($ok, $out, $err) = psql_raw($node, $as_clerk . 'SELECT count(*) FROM pg_file_settings');
like($err, qr/ERROR:  42501/, 'clerk: pg_file_settings refused (42501)');
is( $node->safe_psql(
		'postgres', $as_clerk . q{
SELECT count(*) FROM pg_settings
WHERE name = 'flashsale.redis_password' OR setting LIKE '%s3cret%'}),
	'0',
	'clerk: pg_settings has no row of it');
is( $node->safe_psql(
		'postgres', $as_clerk . q{
SELECT count(*) FROM pg_db_role_setting
WHERE array_to_string(setconfig, ',') ~ '(redis_password|s3cret)'}),
	'0',
	'clerk: pg_db_role_setting holds no password');
($ok, $out, $err) = psql_raw($node,
	"\\set VERBOSITY sqlstate\nALTER DATABASE postgres SET flashsale.redis_password = 'x'");
like($err, qr/ERROR:  55P02/, 'ALTER DATABASE ... SET of the password refused (55P02)');

$node->stop;
done_testing();
