
# FlashsaleTest: helpers shared by flashsale's TAP tests (test/t/*.pl).
#
#   Redis     redis_start / redis_stop / redis_restart / redis_flushall /
#             redis_cmd / redis_port: one throwaway redis-server per test
#             file, on a free loopback port, in a temp dir under tmp_check,
#             without persistence; always stopped by its pid (END block).
#             redis_auth: redis_cmd logs in as an ACL user from then on.
#   Nodes     new_node(name, %opts): a PostgreSQL::Test::Cluster with
#             flashsale preloaded (unless preload => 0) and pointed at that
#             Redis, started, with the extension created.
#   Polling   psql_raw, wait_until, poll_sql: bounded waits, no bare sleeps.
#   Sales     sale_setup / pgbench_start / pgbench_finish / wait_mid_sale /
#             hold_units / sync_pass / worker_status / check_stock.
#   Stock     stock_key / allot_key (a product's Redis keys), allot_fields
#             (this instance's e:/s:/h: fields of the allotment hash),
#             stock_figures (flashsale.stock_redis), db_left (the database
#             truth, no Redis), allotment (flashsale.allotments()),
#             wait_allotments_back.
package FlashsaleTest;

use strict;
use warnings FATAL => 'all';

use Exporter 'import';
use Cwd ();
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(
  redis_start redis_stop redis_restart redis_flushall redis_cmd redis_port redis_pid
  redis_auth redis_save redis_forget_snapshot
  new_node psql_raw wait_until poll_sql sql_row
  sale_setup allotment_sale pgbench_start pgbench_finish wait_mid_sale hold_units
  system_identifier sync_pass worker_status worker_pids check_stock
  pgbench_victim wait_crash_restart killed_re stock_key allot_key process_gone
  allot_fields stock_figures db_left allotment wait_allotments_back
);

# ---------------------------------------------------------------- Redis

my %redis;           # port, dir, pid (pid only while running)
my @redis_login;     # redis-cli's login options, set by redis_auth
my @harnesses;       # background pgbench runs, killed at exit if still running

sub redis_port { return $redis{port}; }
sub redis_pid  { return $redis{pid}; }

# Start redis-server (on the same port and dir when restarting).
sub redis_start
{
	die "redis-server already running (pid $redis{pid})" if $redis{pid};
	$redis{port} //= PostgreSQL::Test::Cluster::get_free_port();
	# absolute: Redis 8 enters --dir before it opens --logfile
	$redis{dir}  //= Cwd::abs_path(PostgreSQL::Test::Utils::tempdir('redis'));
	my $pidfile = "$redis{dir}/redis.pid";
	unlink $pidfile;

	my ($out, $err) = ('', '');
	IPC::Run::run [
		'redis-server', '--bind', '127.0.0.1', '--port', $redis{port},
		'--daemonize', 'yes', '--pidfile', $pidfile,
		'--dir', $redis{dir}, '--logfile', "$redis{dir}/redis.log",
		'--save', '', '--appendonly', 'no'
	  ],
	  '<', \undef, '>', \$out, '2>', \$err
	  or BAIL_OUT("redis-server did not start: $out $err");

	# daemonized: wait for its pidfile and for PONG
	my $ok = wait_until(
		sub {
			return 0 unless -s $pidfile;
			return (redis_cmd('PING') // '') eq 'PONG';
		},
		30);
	BAIL_OUT("redis-server on port $redis{port} did not answer PING")
	  unless $ok;
	open my $fh, '<', $pidfile or BAIL_OUT("cannot read $pidfile: $!");
	my $pid = <$fh>;
	close $fh;
	chomp $pid;
	BAIL_OUT("bad pid '$pid' in $pidfile") unless $pid =~ /^\d+$/;
	$redis{pid} = $pid;
	note "redis-server pid $pid on 127.0.0.1:$redis{port}";
	return $redis{port};
}

sub process_gone
{
	my ($pid) = @_;
	return 1 unless kill 0, $pid;
	# a zombie nobody has reaped yet is gone too
	if (open my $fh, '<', "/proc/$pid/stat")
	{
		my $stat = <$fh>;
		close $fh;
		return 1 if defined $stat && $stat =~ /^\d+ \(.*\) Z /;
	}
	return 0;
}

# Stop it by its pid: SIGTERM, then SIGKILL if it lingers.
sub redis_stop
{
	my $pid = $redis{pid};
	return unless $pid;
	kill 'TERM', $pid;
	unless (wait_until(sub { process_gone($pid) }, 20))
	{
		diag "redis-server $pid ignored SIGTERM, killing it";
		kill 'KILL', $pid;
		wait_until(sub { process_gone($pid) }, 10);
	}
	unlink "$redis{dir}/redis.pid";
	delete $redis{pid};
	note "redis-server pid $pid stopped";
	return;
}

# Restart it on the same port: empty (no persistence), unless redis_save()
# left a snapshot in its dir, which it then loads.
sub redis_restart
{
	redis_stop();
	return redis_start();
}

# SAVE: a snapshot (dump.rdb in its dir) the next start loads.  Nothing
# saves by itself (--save '', no AOF, no save at shutdown).
sub redis_save
{
	my $r = redis_cmd('SAVE') // '';
	die "SAVE answered '$r'" unless $r eq 'OK';
	die "SAVE left no $redis{dir}/dump.rdb" unless -s "$redis{dir}/dump.rdb";
	return;
}

# Drop the snapshot: the next start is empty again.
sub redis_forget_snapshot
{
	unlink "$redis{dir}/dump.rdb";
	return;
}

sub redis_flushall
{
	my $r = redis_cmd('FLUSHALL') // '';
	die "FLUSHALL answered '$r'" unless $r eq 'OK';
	return;
}

# redis_auth(user, password): redis_cmd logs in as this ACL user from now on.
sub redis_auth
{
	my ($user, $password) = @_;
	@redis_login = ('--user', $user, '--pass', $password, '--no-auth-warning');
	return;
}

# One redis-cli command; its output (chomped), undef if redis-cli failed.
sub redis_cmd
{
	my @args = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run [ 'redis-cli', '-h', '127.0.0.1', '-p', $redis{port}, @redis_login, @args ],
	  '<', \undef, '>', \$out, '2>', \$err;
	return undef unless $ok && $err eq '';
	chomp $out;
	return undef if $out =~ /^Could not connect/;
	return $out;
}

END
{
	my $rc = $?;
	foreach my $h (@harnesses)
	{
		eval { $h->kill_kill if $h->pumpable; };
	}
	redis_stop() if $redis{pid};
	$? = $rc;
}

# ---------------------------------------------------------------- nodes

# new_node(name, %opts): preload (1), sync_interval (3600),
# max_prepared_transactions (0), extra_conf (''), start (1),
# create_extension (= preload).
sub new_node
{
	my ($name, %opts) = @_;
	my $preload = $opts{preload} // 1;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;

	my $conf = '';
	$conf .= "shared_preload_libraries = 'flashsale'\n" if $preload;
	$conf .= "flashsale.redis_port = $redis{port}\n" if $redis{port};
	$conf .= "flashsale.sync_interval = " . ($opts{sync_interval} // 3600) . "\n";
	$conf .= "max_connections = 100\n";
	$conf .= "listen_addresses = '127.0.0.1'\n";
	$conf .= "max_prepared_transactions = " . ($opts{max_prepared_transactions} // 0) . "\n";
	# Cluster.pm turns it off; the crash tests need the postmaster to restart
	$conf .= "restart_after_crash = on\n";
	# pgbench would fill the log
	$conf .= "log_statement = none\n";
	$conf .= $opts{extra_conf} . "\n" if $opts{extra_conf};
	$node->append_conf('postgresql.conf', $conf);

	if ($opts{start} // 1)
	{
		$node->start;
		$node->safe_psql('postgres', 'CREATE EXTENSION flashsale')
		  if $opts{create_extension} // $preload;
	}
	return $node;
}

# stock_key(node [, product = 1]) / allot_key(...): the product's Redis keys
# (the pool, and the allotment hash beside it)
# (they name the installation: flashsale.stock_keys()).  Asked once per node
# and product; a node that crashed and restarted keeps them.
my %keys;

sub product_keys
{
	my ($node, $product) = @_;
	$product //= 1;
	my $k = $node->name . ":$product";
	$keys{$k} //= [ split /\|/,
		$node->safe_psql('postgres', "SELECT * FROM flashsale.stock_keys($product)") ];
	return @{ $keys{$k} };
}
sub stock_key    { return (product_keys(@_))[0]; }
sub allot_key    { return (product_keys(@_))[1]; }

# allot_fields(node [, product]) -> { e => epoch, s => sequence, h => units
# held } of this instance in the product's allotment hash (undef values
# for missing fields).
sub allot_fields
{
	my ($node, $product) = @_;
	my $sysid = system_identifier($node);
	my @kv = split /\n/, (redis_cmd('HGETALL', allot_key($node, $product)) // '');
	my %all = @kv % 2 ? () : @kv;
	return { map { $_ => $all{"$_:$sysid"} } qw(e s h) };
}

# ---------------------------------------------------------------- polling

# psql_raw(node, sql) -> (ok, stdout, stderr), quietly (for polling loops).
sub psql_raw
{
	my ($node, $sql, $db) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run [
		'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-h', $node->host,
		'-p', $node->port, '-d', $db // 'postgres'
	  ],
	  '<', \$sql, '>', \$out, '2>', \$err;
	chomp $out;
	chomp $err;
	return ($ok ? 1 : 0, $out, $err);
}

# wait_until(sub, timeout_s): poll every 20 ms until sub returns true.
sub wait_until
{
	my ($check, $timeout) = @_;
	$timeout //= $PostgreSQL::Test::Utils::timeout_default;
	my $deadline = time() + $timeout;
	while (1)
	{
		return 1 if $check->();
		return 0 if time() > $deadline;
		usleep(20_000);
	}
}

# poll_sql(node, sql, expected, timeout_s): true once sql returns expected.
sub poll_sql
{
	my ($node, $sql, $expected, $timeout) = @_;
	my ($ok, $out, $err) = (0, '', '');
	my $done = wait_until(
		sub {
			($ok, $out, $err) = psql_raw($node, $sql);
			return $ok && $out eq $expected;
		},
		$timeout);
	diag "poll_sql timed out: $sql\n  expected: $expected\n  got: $out\n  stderr: $err"
	  unless $done;
	return $done;
}

# sql_row(node, sql) -> hashref of the one row, by column name.
sub sql_row
{
	my ($node, $sql) = @_;
	my ($ok, $out, $err) =
	  psql_raw($node, "\\pset tuples_only off\n\\pset footer off\n$sql");
	die "query failed: $sql: $err" unless $ok;
	my ($head, $row) = split /\n/, $out;
	die "query returned no row: $sql" unless defined $row;
	my @k = split /\|/, $head, -1;
	my @v = split /\|/, $row, -1;
	my %h;
	@h{@k} = @v;
	return \%h;
}

# ---------------------------------------------------------------- sales

# Product 1 with $units units, an orders table (a row per unit sold in a
# committed transaction) and, if asked, buy(p): a decrement retried on
# Redis connection errors (class 08), so that pgbench clients outlive a
# Redis restart.
# allotment_sale(name, units): Redis and a node whose allotments grow large
# (flashsale.allotment_max = 500) and never go back idle, product 1 set up
# with units, the worker's start-up pass run.  Returns the node.
sub allotment_sale
{
	my ($name, $units) = @_;
	redis_start();
	my $node = new_node($name,
		extra_conf => "flashsale.allotment_max = 500\nflashsale.allotment_idle = '1h'");
	sale_setup($node, $units);
	Test::More::ok(poll_sql($node, 'SELECT passes >= 1 FROM flashsale.worker_status', 't', 30),
		'worker ran its start-up pass');
	return $node;
}

sub sale_setup
{
	my ($node, $units) = @_;
	$node->safe_psql(
		'postgres', qq{
SELECT flashsale.set_stock(1, $units);
CREATE TABLE orders (
    order_id   bigserial PRIMARY KEY,
    product_id bigint NOT NULL,
    qty        bigint NOT NULL,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE TABLE redis_errors (sqlstate text, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION buy(p bigint) RETURNS bigint LANGUAGE plpgsql AS \$\$
DECLARE
    l bigint;
BEGIN
    FOR attempt IN 1..500 LOOP
        BEGIN
            l := flashsale.try_decrement_stock(p);
            IF l IS NOT NULL THEN
                INSERT INTO orders (product_id, qty) VALUES (p, 1);
            END IF;
            RETURN l;
        EXCEPTION WHEN connection_exception THEN
            INSERT INTO redis_errors (sqlstate) VALUES (SQLSTATE);
            PERFORM pg_sleep(0.02);
        END;
    END LOOP;
    RAISE EXCEPTION 'Redis unreachable for too long';
END
\$\$;
});
	return;
}

my %scripts = (
	buy => "BEGIN;\n"
	  . "INSERT INTO orders (product_id, qty) SELECT 1, 1\n"
	  . "  FROM (SELECT flashsale.try_decrement_stock(1) AS l) s WHERE l IS NOT NULL;\n"
	  . "COMMIT;\n",
	rollback => "BEGIN;\n"
	  . "INSERT INTO orders (product_id, qty) SELECT 1, 1\n"
	  . "  FROM (SELECT flashsale.try_decrement_stock(1) AS l) s WHERE l IS NOT NULL;\n"
	  . "ROLLBACK;\n",
	buy_retry => "BEGIN;\nSELECT buy(1);\nCOMMIT;\n",
	coupon => "\\set m random(1, 1000000)\nSELECT flashsale.try_issue_coupon(:m, 1);\n",
	coupon_rollback => "\\set m random(1, 1000000)\nBEGIN;\n"
	  . "SELECT flashsale.try_issue_coupon(:m, 1);\nROLLBACK;\n",
	rollback_retry => "BEGIN;\nSELECT buy(1);\nROLLBACK;\n",);

# pgbench_start(node, clients => 64, transactions => 100 (or duration => s),
#               rate => tps (none), scripts => [buy => 9, rollback => 1],
#               script_texts => { name => text }: scripts of the caller's own,
#               named in scripts beside the ones above)
#   -> run handle
sub pgbench_start
{
	my ($node, %o) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir('pgbench');
	my %text = (%scripts, %{ $o{script_texts} // {} });
	my @files;
	my @s = @{ $o{scripts} // [ buy => 9, rollback => 1 ] };
	while (my ($name, $weight) = splice(@s, 0, 2))
	{
		die "pgbench_start: no script named '$name'" unless defined $text{$name};
		PostgreSQL::Test::Utils::append_to_file("$dir/$name.sql", $text{$name});
		push @files, '-f', "$dir/$name.sql\@$weight";
	}
	my $run = { out => '', err => '', node => $node };
	my @cmd = (
		'pgbench', '-n', '-h', $node->host, '-p', $node->port,
		'-c', $o{clients} // 64, '-j', 2,
		($o{duration} ? ('-T', $o{duration}) : ('-t', $o{transactions} // 100)),
		($o{rate} ? ('-R', $o{rate}) : ()),
		@files, 'postgres');
	note "starting: @cmd";
	$run->{timer} = IPC::Run::timeout($o{timeout} // 180);
	# its backends show as application_name 'pgbench'
	local $ENV{PGAPPNAME} = 'pgbench';
	$run->{h} = IPC::Run::start \@cmd, '<', \undef, '>', \$run->{out}, '2>',
	  \$run->{err}, $run->{timer};
	push @harnesses, $run->{h};
	return $run;
}

sub pgbench_running
{
	my ($run) = @_;
	return $run->{h}->pumpable;
}

# Wait for pgbench to exit; returns its exit status, -1 if it timed out or
# died of a signal (and logs its output).
sub pgbench_finish
{
	my ($run) = @_;
	eval { $run->{h}->finish; };
	if ($@)
	{
		diag "pgbench did not finish: $@";
		eval { $run->{h}->kill_kill };
		return -1;
	}
	my $status = $run->{h}->full_result(0);
	my $rc = $status & 127 ? -1 : $status >> 8;
	my @err = split /\n/, $run->{err};
	splice(@err, 0, @err - 10) if @err > 10;
	note "pgbench exited with $rc\n$run->{out}\n--- stderr (tail):\n"
	  . join("\n", @err);
	return $rc;
}

# Wait until the database has at most $threshold units of product 1 left
# (committed sales; Redis' pool is lower: allotments are out of it),
# pgbench still running.  False if pgbench ended first or on timeout.
sub wait_mid_sale
{
	my ($run, $threshold, $timeout) = @_;
	my $left;
	my $ok = wait_until(
		sub {
			return 1 unless pgbench_running($run);
			$left = db_left($run->{node});
			return defined $left && $left <= $threshold;
		},
		$timeout // 120);
	return 0 unless $ok && pgbench_running($run);
	note "mid-sale: $left units left in the database";
	return $left;
}

# db_left(node [, product]): the database truth, quantity minus ledger
# (committed sales), asked without Redis; undef if the query failed.
sub db_left
{
	my ($node, $product) = @_;
	$product //= 1;
	my ($ok, $out) = psql_raw($node,
		"SELECT s.quantity - coalesce((SELECT sum(l.quantity) FROM flashsale.stock_ledger l"
		  . " WHERE l.product_id = s.product_id), 0) FROM flashsale.stock s WHERE s.product_id = $product");
	return $ok && $out =~ /^-?\d+$/ ? $out : undef;
}

# stock_figures(node [, product]) -> hashref of flashsale.stock_redis():
# pool (empty when Redis lacks it), allotted, available, in_flight.
sub stock_figures
{
	my ($node, $product) = @_;
	$product //= 1;
	return sql_row($node, "SELECT * FROM flashsale.stock_redis($product)");
}

# allotment(node [, product]) -> hashref of its row in flashsale.allotments()
# (product_id, available, in_flight, batch, last_used, stale), undef if none.
sub allotment
{
	my ($node, $product) = @_;
	$product //= 1;
	my $r = eval {
		sql_row($node, "SELECT * FROM flashsale.allotments() WHERE product_id = $product");
	};
	return $r;
}

# wait_allotments_back(node [, product, timeout]): true once this instance
# holds no unit of the product (available and in flight 0, or no entry):
# an idle allotment goes back to the pool after flashsale.allotment_idle.
sub wait_allotments_back
{
	my ($node, $product, $timeout) = @_;
	$product //= 1;
	return poll_sql($node,
		"SELECT coalesce(sum(available + in_flight), 0) FROM flashsale.allotments()"
		  . " WHERE product_id = $product",
		'0', $timeout // 30);
}

my %sysid;

sub system_identifier
{
	my ($node) = @_;
	return $sysid{ $node->name } //= $node->safe_psql('postgres',
		'SELECT system_identifier FROM pg_control_system()');
}

# pgbench_victim(node, run): the pid of a pgbench backend in a transaction
# that has an xid (it has written or is about to) if one shows within 2 s,
# else of one that is busy (within 20 s more); undef if none, and then
# pgbench's output so far is noted.
sub pgbench_victim
{
	my ($node, $run) = @_;
	my $victim;
	# in a transaction (an xid: units in flight) if one shows within 2 s
	# (a sale may be over in seconds), else any busy pgbench backend: the crash
	# restart is what is tested
	for my $cond ('backend_xid IS NOT NULL', "state <> 'idle'")
	{
		wait_until(
			sub {
				my ($ok, $out) = psql_raw($node,
					"SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'"
					  . " AND $cond LIMIT 1");
				$victim = $out if $ok && $out =~ /^\d+$/;
				return defined $victim;
			},
			$cond =~ /xid/ ? 2 : 20);
		last if defined $victim;
	}
	if (!defined $victim && $run)
	{
		$run->{h}->pump_nb if $run->{h}->pumpable;
		Test::More::note("no pgbench backend; pgbench so far:\n$run->{out}$run->{err}");
	}
	return $victim;
}

# killed_re(pid): the postmaster's log line for a backend killed with
# signal 9: "server process" until 17, the process's type from 18.
sub killed_re
{
	my ($pid) = @_;
	return qr/(?:server process|client backend) \(PID $pid\) was terminated by signal 9/;
}

# wait_crash_restart(node, log_offset, pid): after a kill -9 of backend pid,
# wait in the log (from log_offset) for its death, the restart of every
# backend, and the end of crash recovery.
sub wait_crash_restart
{
	my ($node, $log_offset, $pid) = @_;
	$node->wait_for_log(killed_re($pid), $log_offset);
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
	$node->wait_for_log(qr/database system is ready to accept connections/, $log_offset);
	return;
}

# hold_units(node, qty): a session that decremented product 1 by $qty in
# an open transaction (the units are in flight in this instance's
# allotment).  Returns (session, its backend pid).
sub hold_units
{
	my ($node, $qty) = @_;
	my $s = $node->background_psql('postgres', on_error_stop => 0);
	$s->query_safe('BEGIN');
	$s->query_safe("SELECT flashsale.decrement_stock(1, $qty)");
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	chomp $pid;
	return ($s, $pid);
}

# One sync pass by hand: hashref of sync_stock()'s columns.
sub sync_pass
{
	my ($node) = @_;
	my $r = sql_row($node, 'SELECT * FROM flashsale.sync_stock()');
	note 'sync_stock(): ' . join(', ', map { "$_=$r->{$_}" } sort keys %$r);
	return $r;
}

sub worker_status
{
	my ($node) = @_;
	return sql_row($node, 'SELECT * FROM flashsale.worker_status');
}

# pids of 'flashsale worker' processes in pg_stat_activity
sub worker_pids
{
	my ($node) = @_;
	my ($ok, $out) = psql_raw($node,
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'flashsale worker' ORDER BY pid");
	return $ok ? split(/\n/, $out) : ();
}

# check_stock(node, initial, label [, keep_allotment => 1]): one sync pass
# (it rebuilds a stale pool and folds the ledger), then, with nothing in
# flight, the exact equalities of product 1:
#   orders + units left == initial, where left = stock_level() = pool + available;
#   flashsale.stock.quantity == left, ledger folded;
#   stock_status: db_left == left, nothing in flight;
#   Redis' pool == stock_redis' pool == left - available;
# and, unless keep_allotment, once the idle allotment went back to the pool
# (flashsale.allotment_idle): Redis' pool alone == left.
sub check_stock
{
	my ($node, $initial, $label, %o) = @_;
	sync_pass($node);
	my $sold = $node->safe_psql('postgres',
		'SELECT coalesce(sum(qty), 0) FROM orders WHERE product_id = 1');
	my $left = $node->safe_psql('postgres', 'SELECT flashsale.stock_level(1)');
	note "$label: initial $initial, sold $sold, left $left";
	is($sold + $left, $initial, "$label: orders + units left == $initial");
	cmp_ok($sold, '<=', $initial, "$label: no oversell");
	is( $node->safe_psql('postgres',
			'SELECT quantity FROM flashsale.stock WHERE product_id = 1'),
		$left,
		"$label: flashsale.stock.quantity == units left");
	is( $node->safe_psql('postgres',
			'SELECT count(*) FROM flashsale.stock_ledger'),
		0, "$label: ledger folded (empty)");
	is( $node->safe_psql('postgres',
			'SELECT db_left, "left", in_flight FROM flashsale.stock_status WHERE product_id = 1'),
		"$left|$left|0",
		"$label: stock_status db_left == left == units left, nothing in flight");
	my $f = stock_figures($node);
	is($f->{pool} + $f->{available}, $left, "$label: stock_redis pool + available == units left");
	is(redis_cmd('GET', stock_key($node)), $f->{pool}, "$label: Redis' pool == stock_redis' pool");
	unless ($o{keep_allotment})
	{
		ok(wait_allotments_back($node), "$label: the idle allotment went back to the pool");
		is(redis_cmd('GET', stock_key($node)), $left,
			"$label: Redis' pool == units left (nothing allotted)");
		is($node->safe_psql('postgres', 'SELECT flashsale.stock_level(1)'),
			$left, "$label: stock_level unchanged");
	}
	return ($sold, $left);
}

1;
