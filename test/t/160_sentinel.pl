
# Redis Sentinel: a master, a replica and three sentinels (down-after 1 s),
# flashsale logged in as an ACL user on every one of them, finding the master
# through the sentinels (flashsale.redis_sentinels).  A sale with rollbacks
# runs while the master is killed (SIGKILL): the sentinels promote the
# replica, flashsale's next connection asks them again, and sales resume on
# the new master (buyers retry on class 08 errors).  Replication is
# asynchronous, so the new master may lack the last writes of the old one;
# the allotment record's epoch and sequence tell, and the pool is rebuilt
# from the database truth.  Afterwards, after a sync pass: orders + units
# left == initial, nothing oversold, nothing in flight, the pool on the new
# master agrees, and rate limits and once() work there too.  Then a master
# demoted by hand (REPLICAOF) while a backend keeps its connection to it:
# the backend's next write, refused READONLY, goes to the master the
# sentinels name now.
use strict;
use warnings FATAL => 'all';

use Cwd ();
use FlashsaleTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $UNITS = 3000;
my ($USER, $PW) = ('shop', 'shop-secret');
my @login = ('--user', $USER, '--pass', $PW, '--no-auth-warning');

# ---- the servers: FlashsaleTest's Redis is the first master
my $mport = redis_start();
my @acl = ('ACL', 'SETUSER', $USER, 'on', ">$PW", '~*', '&*', '+@all');
is(redis_cmd(@acl), 'OK', "ACL user $USER on the master");

my $base = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir('sentinel'));
my %pids;    # port => pid of the servers this file started

sub cli
{
	my ($port, @args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run [ 'redis-cli', '-h', '127.0.0.1', '-p', $port, @login, @args ],
	  '<', \undef, '>', \$out, '2>', \$err;
	chomp $out;
	return $out;
}

sub start_server
{
	my ($name, $port, @args) = @_;
	my $dir = "$base/$name";
	mkdir $dir;
	my $pidfile = "$dir/pid";
	IPC::Run::run [ 'redis-server', @args, '--bind', '127.0.0.1', '--port', $port,
		'--daemonize', 'yes', '--pidfile', $pidfile, '--dir', $dir,
		'--logfile', "$dir/log" ], '<', \undef
	  or BAIL_OUT("$name did not start");
	wait_until(sub { -s $pidfile && cli($port, 'PING') eq 'PONG' }, 30)
	  or BAIL_OUT("$name on port $port did not answer");
	open my $fh, '<', $pidfile or BAIL_OUT("$pidfile: $!");
	chomp(my $pid = <$fh>);
	$pids{$port} = $pid;
	note "$name: pid $pid, port $port";
	return $pid;
}

END
{
	my $rc = $?;
	kill 'KILL', values %pids;
	$? = $rc;
}

my $rport = PostgreSQL::Test::Cluster::get_free_port();
start_server('replica', $rport, '--save', '', '--appendonly', 'no',
	'--replicaof', '127.0.0.1', $mport);
# ACL users are not replicated: the replica gets its own, as the default user
{
	my $out = '';
	IPC::Run::run [ 'redis-cli', '-h', '127.0.0.1', '-p', $rport, @acl ], '<', \undef, '>', \$out;
	chomp $out;
	is($out, 'OK', "ACL user $USER on the replica");
}
ok(wait_until(sub { cli($rport, 'INFO', 'replication') =~ /master_link_status:up/ }, 30),
	'the replica follows the master');

my @sports;
for my $i (1 .. 3)
{
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $conf = "$base/sentinel$i.conf";
	PostgreSQL::Test::Utils::append_to_file($conf, <<"EOF");
sentinel monitor shop 127.0.0.1 $mport 2
sentinel down-after-milliseconds shop 1000
sentinel failover-timeout shop 10000
sentinel parallel-syncs shop 1
sentinel auth-user shop $USER
sentinel auth-pass shop $PW
user default on nopass ~* &* +\@all
user $USER on >$PW ~* &* +\@all
EOF
	start_server("sentinel$i", $port, $conf, '--sentinel');
	push @sports, $port;
}
ok( wait_until(
		sub {
			my $info = cli($sports[0], 'SENTINEL', 'MASTER', 'shop');
			return $info =~ /num-other-sentinels\n2\b/ && $info =~ /num-slaves\n1\b/;
		},
		60),
	'the sentinels see each other and the replica');

my $sentinels = join(',', map { "127.0.0.1:$_" } @sports);
my $node = new_node(
	'sentinel',
	extra_conf => "flashsale.redis_sentinels = '$sentinels'\n"
	  . "flashsale.redis_sentinel_master = 'shop'\n"
	  . "flashsale.redis_user = '$USER'\n"
	  . "flashsale.redis_password = '$PW'\n"
	  . "flashsale.redis_connect_timeout = 500\n"
	  . "flashsale.allotment_max = 50\n");

sub redis_port_of_node
{
	my ($ok, $out) = psql_raw($node, "SELECT flashsale.redis_call('INFO', 'server')");
	return $ok && $out =~ /tcp_port:(\d+)/ ? $1 : '';
}
is(redis_port_of_node(), $mport, 'flashsale found the master through the sentinels');
is($node->safe_psql('postgres', "SELECT flashsale.redis_call('ACL', 'WHOAMI')"),
	$USER, "logged in as $USER");

# a wrong password is refused at the sentinels: 08001, each sentinel named
my ($ret, $out, $err) = $node->psql('postgres',
	"SET flashsale.redis_user = 'nobody'; SELECT flashsale.redis_call('PING')");
like($err, qr/could not log in to Redis/, 'a wrong user: could not log in');
like($err, qr/127\.0\.0\.1:$sports[0]: .*127\.0\.0\.1:$sports[2]: /s,
	'the detail says what each sentinel answered');

# ---- a sale, the master killed in the middle of it
sale_setup($node, $UNITS);
my $bench = pgbench_start($node, clients => 16, duration => 15, rate => 300,
	scripts => [ buy_retry => 9, rollback_retry => 1 ]);
ok(wait_mid_sale($bench, $UNITS * 7 / 10), 'sale under way (70 % left)');
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM orders');
my $log_offset = -s $node->logfile;
ok(kill('KILL', redis_pid()), "master (port $mport) killed");
ok( wait_until(
		sub { cli($sports[0], 'SENTINEL', 'get-master-addr-by-name', 'shop') =~ /\b$rport$/ },
		60),
	"the sentinels promoted the replica (port $rport)");
ok( wait_until(
		sub {
			$node->safe_psql('postgres', 'SELECT count(*) FROM orders') > $before + 200;
		},
		60),
	'sales resumed: 200 more orders after the failover');
is(redis_port_of_node(), $rport, 'flashsale talks to the new master');
# the first backend that found the new master told the worker, which checks at once
# (flashsale.sync_interval is an hour here)
ok($node->wait_for_log(qr/a Redis failover was noticed; a sync pass follows/, $log_offset),
	'the worker heard of the failover: a sync pass follows at once');

is(pgbench_finish($bench), 0, 'pgbench: every buyer got an answer (retrying on class 08)');
my $errors = $node->safe_psql('postgres', 'SELECT count(*) FROM redis_errors');
note "class 08 errors buyers retried: $errors";

# ---- every unit accounted for, on the new master
$node->safe_psql('postgres', 'SELECT flashsale.sync_stock()');
my $sold = $node->safe_psql('postgres', 'SELECT coalesce(sum(qty), 0) FROM orders');
my $left = $node->safe_psql('postgres', 'SELECT flashsale.stock_level(1)');
note "initial $UNITS, sold $sold, left $left";
is($sold + $left, $UNITS, 'orders + units left == initial');
cmp_ok($sold, '<=', $UNITS, 'no oversell');
is( $node->safe_psql('postgres',
		'SELECT db_left = "left" AND in_flight = 0 FROM flashsale.stock_status WHERE product_id = 1'),
	't', 'stock_status: db_left == left, nothing in flight');
my ($pool, $available) = split /\|/,
  $node->safe_psql('postgres', 'SELECT pool, available FROM flashsale.stock_redis(1)');
is(cli($rport, 'GET', stock_key($node)), $pool, "the new master's pool is what flashsale reads");
is($pool + $available, $left, 'pool + allotment == units left');
$node->safe_psql('postgres', 'SELECT flashsale.sync_now()');
ok(poll_sql($node, 'SELECT redis_ok FROM flashsale.worker_status', 't', 30),
	'the worker reaches the new master');

# ---- rate limits and once() on the new master
is( $node->safe_psql('postgres',
		"SELECT string_agg(allowed::text, ',') FROM generate_series(1, 3) g, "
		  . "LATERAL (SELECT * FROM flashsale.throttle('sentinel', 1, 1, '1 hour', 1 + 0 * g) OFFSET 0) t"),
	'true,true,false', 'throttle on the new master');
is($node->safe_psql('postgres',
		"SELECT flashsale.once('sentinel', '1 hour'), flashsale.once('sentinel', '1 hour')"),
	't|f', 'once on the new master');

# ---- READONLY: a connection kept to a master that was demoted since.
# The sentinels would kill the connections of a master they demote (CLIENT
# KILL TYPE normal); demoted by hand, with REPLICAOF, it keeps them and
# answers writes with READONLY.  So: the sentinels forget the master, the old
# master comes back and is made the master by hand, $rport its replica, and
# the sentinels are told to watch the new master.
my $s = $node->background_psql('postgres', on_error_stop => 0);
is($s->query_safe("SELECT allowed FROM flashsale.throttle('ro0', 1, 1, '1 hour')"), 't',
	"a session whose command connection is open to the master ($rport)");
is($s->query_safe("SELECT flashsale.redis_call('PING')"), 'PONG', '... and its redis_call connection');
is(cli($_, 'SENTINEL', 'REMOVE', 'shop'), 'OK', "sentinel $_ forgets the master") for @sports;
start_server('old master', $mport, '--save', '', '--appendonly', 'no');
{
	my $o = '';
	IPC::Run::run [ 'redis-cli', '-h', '127.0.0.1', '-p', $mport, @acl ], '<', \undef, '>', \$o;
}
is(cli($rport, 'REPLICAOF', '127.0.0.1', $mport), 'OK', "$rport demoted by hand: a replica of $mport");
ok(wait_until(sub { cli($rport, 'INFO', 'replication') =~ /master_link_status:up/ }, 60),
	"$rport follows $mport");
for my $p (@sports)
{
	is(cli($p, 'SENTINEL', 'MONITOR', 'shop', '127.0.0.1', $mport, 2), 'OK',
		"sentinel $p watches $mport");
	cli($p, 'SENTINEL', 'SET', 'shop', 'auth-user', $USER, 'auth-pass', $PW,
		'down-after-milliseconds', 1000);
}
like($s->query_safe("SELECT flashsale.redis_call('INFO', 'replication')"), qr/role:slave/,
	"the session's connections to $rport stay open: it answers as a replica now");
is($s->query_safe("SELECT allowed FROM flashsale.throttle('ro', 1, 1, '1 hour')"), 't',
	'a write on the demoted master went to the master the sentinels name');
like(cli($rport, 'INFO', 'errorstats'), qr/errorstat_READONLY:count=1\b/,
	"$rport refused it once (READONLY), and was not asked again");
is(cli($mport, 'EXISTS', 'throttle:{2:ro}'), '1', "the key is on the new master ($mport)");
$s->quit;

done_testing();
