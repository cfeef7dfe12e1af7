# Redis Cluster (flashsale.redis_cluster): three masters and three replicas
# started here on loopback (cluster-node-timeout 1 s), flashsale given one
# of them as its seed.  Every flashsale key of one product, one lock or one
# rate-limit key shares a hash tag, so each script goes to one slot's
# master; calls about several products or locks are split per slot.
#
#   1. A sale of 200 products x 50 units (hot products sell out, cold ones
#      hardly sell; 1 order in 5 rolled back), pgbench buyers retrying on
#      class 08 errors.  Meanwhile the slot of the hottest product is moved
#      by hand, a key at a time, each state held 1.5 s (longer than
#      flashsale.redis_timeout: TRYAGAIN while its keys are split, ASK once
#      both moved), then redis-cli moves 2000 slots from one master to
#      another.  After the idle allotments went back and two sync passes,
#      for every product: orders + units left == 50, the table,
#      stock_status and the pool on the master that owns the product's
#      slot all agree, nothing in flight.
#   2. A second sale of 200 more products; a master (not the seed) killed
#      with SIGKILL in the middle of it, its replica promoted.  The sale
#      resumes; afterwards every product of both sales is exact again
#      (a pool the replica had not received is rebuilt from the database).
#   3. A multi-product order over three masters: committed, rolled back, and
#      refused whole when one item is short.
#   4. Redis locks from two sessions: several locks of one transaction on
#      three masters, a waiter that gets the lock when the holder commits,
#      session locks handed over by redis_unlock.
#   5. throttle() and once() on keys spread over the masters, exact figures.
#   6. A slot left mid-migration: throttle() and once() follow ASK to the
#      target; redis_lock, whose script names keys that exist nowhere yet,
#      cannot run until the migration ends and fails with class 08 after
#      flashsale.redis_timeout; it works once the slot has moved.
#
# The buyers stop when told (sale_ctl.stop): their next order raises 'sale
# over', which ends each pgbench client; pgbench then exits with 2 and every
# client's abort must be that one error.  So the sales last as long as the
# slot moves and the failover take, whatever the machine's speed.
#
# The test talks to the nodes itself (a small RESP client, rcall()): a
# redis-cli process per poll is too slow on a busy machine.  redis-cli does
# what an operator would: --cluster create and --cluster reshard.
use strict;
use warnings FATAL => 'all';

use Cwd ();
use FlashsaleTest;
use IO::Socket::INET;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Socket;
use Test::More;
use Time::HiRes qw(time usleep);

my $PRODUCTS = 200;     # per sale
my $UNITS    = 50;      # per product
my $CLIENTS  = 16;
my $RATE     = 400;     # orders a second, all clients together
my $MOVE     = 2000;    # slots redis-cli moves mid-sale (Valkey 8 takes ~10 ms a slot)
my $HOLD     = 1.5;     # s a slot migrated by hand stays in each state (> flashsale.redis_timeout)
my $NODES    = 6;       # 3 masters, 3 replicas
my $T0       = time();

# ---------------------------------------------------------------- the cluster

my $base = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir('cluster'));
my %pid_of;    # port => pid of every redis-server this file started and has not killed
my @ports;     # the nodes' ports, in creation order; $ports[0] is flashsale's seed

END
{
	my $rc = $?;
	foreach my $port (sort keys %pid_of)
	{
		kill 'KILL', $pid_of{$port};
	}
	foreach my $pid (values %pid_of)
	{
		wait_until(sub { process_gone($pid) }, 10);
	}
	$? = $rc;
}


# A small Redis client (RESP over a kept connection per port): polling the
# cluster with a redis-cli process per command costs a fork and an exec each,
# too slow on a busy machine.  rcall(port, args...) -> the reply: a string
# (nil: ''), an array ref, or { err => text }; undef when the node cannot be
# reached (the connection is dropped, the next call reconnects).
my %conn;

sub read_reply
{
	my ($s) = @_;
	my $line = <$s>;
	die "connection lost\n" unless defined $line && $line =~ s/\r\n\z//;
	my ($type, $rest) = (substr($line, 0, 1), substr($line, 1));
	return $rest if $type eq '+' || $type eq ':';
	return { err => $rest } if $type eq '-';
	if ($type eq '$')
	{
		return '' if $rest < 0;
		my $buf = '';
		while (length($buf) < $rest + 2)
		{
			my $n = read($s, $buf, $rest + 2 - length($buf), length($buf));
			die "connection lost\n" unless $n;
		}
		return substr($buf, 0, $rest);
	}
	if ($type eq '*')
	{
		return [] if $rest < 0;
		return [ map { read_reply($s) } 1 .. $rest ];
	}
	die "unexpected reply '$line'\n";
}

sub rcall
{
	my ($port, @args) = @_;
	# a node killed under a kept connection: EPIPE, not a SIGPIPE that ends the test
	local $SIG{PIPE} = 'IGNORE';
	for my $attempt (1, 2)
	{
		my $s = $conn{$port};
		unless ($s)
		{
			$s = IO::Socket::INET->new(
				PeerAddr => '127.0.0.1',
				PeerPort => $port,
				Proto    => 'tcp',
				Timeout  => 5) or return undef;
			# a node that hangs fails the call after 10 s
			setsockopt($s, SOL_SOCKET, SO_RCVTIMEO, pack('l!l!', 10, 0));
			binmode $s;
			$conn{$port} = $s;
		}
		my $req = '*' . scalar(@args) . "\r\n"
		  . join('', map { '$' . length($_) . "\r\n$_\r\n" } @args);
		my $reply = eval {
			print $s $req or die "connection lost\n";
			$s->flush;
			read_reply($s);
		};
		return $reply unless $@;
		close $s;
		delete $conn{$port};
	}
	return undef;
}

# cli(port, args...): one command; its reply as text (an array's elements
# on lines, CRLF as LF), undef on an error reply or when unreachable
sub cli
{
	my $r = rcall(@_);
	return undef if !defined $r || ref $r eq 'HASH';
	$r = join("\n", map { ref $_ ? '' : $_ } @$r) if ref $r eq 'ARRAY';
	$r =~ s/\r\n/\n/g;
	$r =~ s/\n\z//;
	return $r;
}

sub can_bind
{
	my ($port) = @_;
	socket(my $sock, PF_INET, SOCK_STREAM, getprotobyname('tcp')) or die "socket: $!";
	setsockopt($sock, SOL_SOCKET, SO_REUSEADDR, pack('l', 1));
	my $ok = bind($sock, sockaddr_in($port, inet_aton('127.0.0.1'))) && listen($sock, 1);
	close $sock;
	return $ok;
}

# A free port whose cluster bus port (+10000) is free too (and exists)
sub node_port
{
	for (1 .. 1000)
	{
		my $port = PostgreSQL::Test::Cluster::get_free_port();
		return $port if $port <= 55535 && can_bind($port + 10000);
	}
	BAIL_OUT('no free port P <= 55535 with P + 10000 free');
}

# Start cluster node i on a new port; a port whose bus port was taken in the
# meantime (a client's ephemeral port) is given up for another
sub start_node
{
	my ($i) = @_;
	my $dir = "$base/node$i";
	mkdir $dir;
	for my $attempt (1 .. 5)
	{
		my $port    = node_port();
		my $pidfile = "$dir/redis.pid";
		my $log     = "$dir/redis-$port.log";
		unlink $pidfile, "$dir/nodes.conf";
		my ($out, $err) = ('', '');
		IPC::Run::run [
			'redis-server', '--cluster-enabled', 'yes',
			'--cluster-config-file', "$dir/nodes.conf",
			'--cluster-node-timeout', '1000',
			'--port', $port, '--bind', '127.0.0.1',
			'--daemonize', 'yes', '--pidfile', $pidfile,
			'--dir', $dir, '--logfile', $log,
			'--save', '', '--appendonly', 'no'
		  ],
		  '<', \undef, '>', \$out, '2>', \$err
		  or BAIL_OUT("redis-server did not start: $out $err");
		my $up = 0;
		my $failed = 0;
		wait_until(
			sub {
				if (-s $pidfile && (cli($port, 'PING') // '') eq 'PONG')
				{
					$up = 1;
					return 1;
				}
				my $text = -e $log ? PostgreSQL::Test::Utils::slurp_file($log) : '';
				$failed = 1 if $text =~ /aborting|Could not create server TCP listening socket/i;
				return $failed;
			},
			30);
		if ($up)
		{
			my $pid = PostgreSQL::Test::Utils::slurp_file($pidfile);
			chomp $pid;
			BAIL_OUT("bad pid '$pid' in $pidfile") unless $pid =~ /^\d+$/;
			$pid_of{$port} = $pid;
			note "cluster node $i: pid $pid, port $port (bus " . ($port + 10000) . ")";
			return $port;
		}
		# it wrote its pid before it failed: make sure it is gone
		if (-s $pidfile)
		{
			my $pid = PostgreSQL::Test::Utils::slurp_file($pidfile);
			chomp $pid;
			if ($pid =~ /^\d+$/ && !process_gone($pid))
			{
				kill 'KILL', $pid;
				wait_until(sub { process_gone($pid) }, 10);
			}
		}
		BAIL_OUT("cluster node $i did not start on port $port; see $log") unless $failed;
		note "cluster node $i could not listen on port $port or its bus port; another port"
		  . " (attempt $attempt)";
	}
	BAIL_OUT("cluster node $i did not start");
}

# CLUSTER NODES as seen from one node: { id => { id, port, flags, master
# (its master's id, '-' for a master), link, slots (how many), ranges } },
# undef if the node does not answer
sub topology
{
	my ($port) = @_;
	my $out = cli($port, 'CLUSTER', 'NODES');
	return undef unless defined $out && $out =~ /\S/;
	my %n;
	foreach my $line (split /\n/, $out)
	{
		my ($id, $addr, $flags, $master, undef, undef, undef, $link, @slots) = split / /, $line;
		my ($p) = $addr =~ /:(\d+)@/;
		return undef unless defined $p;
		my @ranges;
		my $count = 0;
		foreach (@slots)
		{
			next if /^\[/;    # an open slot ([slot->-id], [slot-<-id])
			my ($first, $last) = split /-/;
			$last //= $first;
			push @ranges, "$first-$last";
			$count += $last - $first + 1;
		}
		$n{$id} = {
			id     => $id,
			port   => $p,
			flags  => $flags,
			master => $master,
			link   => $link,
			slots  => $count,
			ranges => join(',', @ranges),
		};
	}
	return \%n;
}

# Live masters (not failed) with their slots and their replicas' ports,
# from the seed's view (or any live node's)
sub masters
{
	my $t;
	foreach my $port ($ports[0], grep { $pid_of{$_} } @ports)
	{
		$t = topology($port) and last;
	}
	die 'no cluster node answers' unless $t;
	my @m;
	foreach my $n (sort { $a->{port} <=> $b->{port} } values %$t)
	{
		next unless $n->{flags} =~ /master/ && $n->{flags} !~ /fail/ && $n->{slots} > 0;
		$n->{replicas} = [ map { $_->{port} }
			  grep { $_->{master} eq $n->{id} && $_->{flags} !~ /fail/ } values %$t ];
		push @m, $n;
	}
	return @m;
}

# The cluster is settled when every live node says cluster_state:ok with all
# 16384 slots ok, all of them see the same masters with the same slots and
# the same replicas (failed nodes aside), and every replica's link to its
# master is up.  Returns that common view ('' if not settled).
my $last_view = '';

sub settled
{
	my $view;
	foreach my $port (grep { $pid_of{$_} } @ports)
	{
		my $info = cli($port, 'CLUSTER', 'INFO') // return '';
		return '' unless $info =~ /cluster_state:ok/ && $info =~ /cluster_slots_ok:16384\b/;
		my $t = topology($port) or return '';
		my @parts;
		foreach my $n (sort { $a->{port} <=> $b->{port} } values %$t)
		{
			next if $n->{flags} =~ /fail/ && $n->{flags} !~ /fail\?/;
			return '' if $n->{flags} =~ /fail\?|handshake|noaddr/;
			if ($n->{flags} =~ /master/)
			{
				push @parts, "M$n->{port}:$n->{ranges}" if $n->{slots} > 0;
			}
			else
			{
				my $m = $t->{ $n->{master} } or return '';
				push @parts, "R$n->{port}>$m->{port}";
				if ($n->{flags} =~ /myself/)
				{
					my $repl = cli($port, 'INFO', 'replication') // return '';
					return '' unless $repl =~ /master_link_status:up/;
				}
			}
		}
		my $v = join(' ', @parts);
		$view //= $v;
		return '' unless $v eq $view;
	}
	$last_view = $view // '';
	return $last_view;
}

sub wait_settled
{
	my ($label, $timeout) = @_;
	my $ok = wait_until(sub { settled() ne '' }, $timeout // 60);
	ok($ok, "$label: every node says cluster_state:ok and all agree");
	diag("cluster not settled; views:\n"
		  . join("\n", map { "$_: " . (cli($_, 'CLUSTER', 'NODES') // 'no answer') } grep { $pid_of{$_} } @ports))
	  unless $ok;
	return $ok;
}

# CRC16 (XMODEM) of a key's hash tag, as Redis Cluster's keyHashSlot()
sub key_slot
{
	my ($key) = @_;
	my $s = index($key, '{');
	if ($s >= 0)
	{
		my $e = index($key, '}', $s + 1);
		$key = substr($key, $s + 1, $e - $s - 1) if $e > $s + 1;
	}
	my $crc = 0;
	foreach my $c (unpack('C*', $key))
	{
		$crc ^= $c << 8;
		for (1 .. 8)
		{
			$crc = ($crc & 0x8000) ? (($crc << 1) ^ 0x1021) & 0xffff : ($crc << 1) & 0xffff;
		}
	}
	return $crc & 16383;
}

# slot => port of the master serving it (the settled view)
sub slot_owners
{
	my @owner;
	foreach my $m (masters())
	{
		foreach my $r (split /,/, $m->{ranges})
		{
			my ($first, $last) = split /-/, $r;
			$owner[$_] = $m->{port} for $first .. $last;
		}
	}
	return \@owner;
}

sub owner_of
{
	my ($key) = @_;
	return slot_owners()->[ key_slot($key) ];
}

# redis_gets(keys...) -> { key => value ('' when missing) }, each asked of
# the master that owns its slot, without following redirections: a key
# found elsewhere than its slot's master is a failure
sub redis_gets
{
	my (@keys) = @_;
	my $owner = slot_owners();
	my %by;
	push @{ $by{ $owner->[ key_slot($_) ] } }, $_ foreach @keys;
	my %v;
	foreach my $port (keys %by)
	{
		foreach my $k (@{ $by{$port} })
		{
			my $r = rcall($port, 'GET', $k);
			die "GET $k on $port: " . (ref $r ? $r->{err} : 'no answer')
			  if !defined $r || ref $r;
			$v{$k} = $r;
		}
	}
	return \%v;
}

# reshard(n, from, to): redis-cli moves n slots; (ok, slots it moved, seconds)
sub reshard
{
	my ($n, $from, $to) = @_;
	my ($out, $err) = ('', '');
	my $t = time();
	my $ok = IPC::Run::run [
		'redis-cli', '--cluster', 'reshard', "127.0.0.1:$ports[0]",
		'--cluster-from', $from->{id}, '--cluster-to', $to->{id},
		'--cluster-slots', $n, '--cluster-yes'
	  ],
	  '<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(180);
	my $secs = time() - $t;
	my %moved;
	$moved{$1} = 1 while $out =~ /^Moving slot (\d+) from /mg;
	unless ($ok)
	{
		my @l = split /\n/, $out;
		splice(@l, 0, @l - 20) if @l > 20;
		diag "redis-cli --cluster reshard failed:\n" . join("\n", @l) . "\n$err";
	}
	return ($ok, scalar(keys %moved), $secs);
}

# migrate_slot(slot, src, dst, hold): move one slot by hand as redis-cli
# does, a key at a time, holding each state for hold seconds: while some
# keys of a script are moved the source answers TRYAGAIN, once all are moved
# ASK (ASKING, then the script on the target), at the end MOVED.  Returns
# the keys moved.
sub migrate_slot
{
	my ($slot, $src, $dst, $hold) = @_;
	my $ok = sub {
		my ($port, @cmd) = @_;
		my $r = rcall($port, @cmd);
		die "@cmd on $port: " . (ref $r ? $r->{err} : $r // 'no answer')
		  unless defined $r && !ref $r && $r eq 'OK';
	};
	$ok->($dst->{port}, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $src->{id});
	$ok->($src->{port}, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $dst->{id});
	my @moved;
	while (1)
	{
		my $keys = rcall($src->{port}, 'CLUSTER', 'GETKEYSINSLOT', $slot, 10);
		die 'GETKEYSINSLOT failed' unless ref $keys eq 'ARRAY';
		last unless @$keys;
		foreach my $k (@$keys)
		{
			usleep($hold * 1e6);
			my $r = rcall($src->{port}, 'MIGRATE', '127.0.0.1', $dst->{port}, $k, 0, 5000);
			die "MIGRATE $k: " . (ref $r ? $r->{err} : $r // 'no answer')
			  unless defined $r && !ref $r && $r =~ /^(OK|NOKEY)$/;
			push @moved, $k if $r eq 'OK';
		}
	}
	usleep($hold * 1e6);
	# the target first, then the source, then the others
	$ok->($_->{port}, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $dst->{id})
	  foreach ($dst, $src, grep { $_->{id} ne $dst->{id} && $_->{id} ne $src->{id} } masters());
	return @moved;
}

# Per master, the error replies it counted (INFO errorstats): MOVED, ASK, ...
sub error_stats
{
	my %e;
	foreach my $port (grep { $pid_of{$_} } @ports)
	{
		my $info = cli($port, 'INFO', 'errorstats') // next;
		$e{$1} += $2 while $info =~ /^errorstat_(\w+):count=(\d+)/mg;
	}
	return \%e;
}

push @ports, start_node($_) for 1 .. $NODES;
{
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run [
		'redis-cli', '--cluster', 'create', (map { "127.0.0.1:$_" } @ports),
		'--cluster-replicas', '1', '--cluster-yes'
	  ],
	  '<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(120);
	ok($ok, 'redis-cli --cluster create: 3 masters, 3 replicas') or diag "$out\n$err";
}
wait_settled('cluster created') or BAIL_OUT('the cluster did not come up');
{
	my @m = masters();
	is(join(',', sort { $a <=> $b } map { $_->{slots} } @m), '5461,5461,5462',
		'three masters: 5461, 5461 and 5462 slots');
	is(join(',', map { scalar @{ $_->{replicas} } } @m), '1,1,1', 'each with one replica');
	note 'cluster: ' . settled();
}
is(key_slot('{user1000}.following'), cli($ports[0], 'CLUSTER', 'KEYSLOT', '{user1000}.following'),
	"this file's key_slot() agrees with CLUSTER KEYSLOT");
note sprintf('cluster up after %.1f s', time() - $T0);
# flashsale logs in as an ACL user on every node (replicas too: ACLs are not replicated, and a
# replica may become a master); this file's own client stays the default user
my ($USER, $PW) = ('shop', 'shop-secret');
is( join(',',
		map { rcall($_, 'ACL', 'SETUSER', $USER, 'on', ">$PW", '~*', '&*', '+@all') } @ports),
	join(',', ('OK') x @ports),
	"ACL user $USER on all six nodes");

# ---------------------------------------------------------------- PostgreSQL

my $node = new_node(
	'cluster',
	extra_conf => "flashsale.redis_cluster = on\n"
	  . "flashsale.redis_host = '127.0.0.1'\n"
	  . "flashsale.redis_port = $ports[0]\n"
	  . "flashsale.redis_user = '$USER'\n"
	  . "flashsale.redis_password = '$PW'\n"
	  # many leases: the sale talks to the cluster all the time
	  . "flashsale.allotment_max = 5\n");
is($node->safe_psql('postgres', 'SHOW flashsale.redis_cluster'), 'on', 'flashsale.redis_cluster is on');
is($node->safe_psql('postgres', "SELECT flashsale.redis_call('ACL', 'WHOAMI')"),
	$USER, "logged in to the cluster as $USER");

sale_setup($node, $UNITS);    # product 1, orders, redis_errors, buy(p)
$node->safe_psql(
	'postgres', qq{
CREATE TABLE sale_ctl (stop boolean NOT NULL, base bigint NOT NULL);
INSERT INTO sale_ctl VALUES (false, 0);
-- one order of product base + r; 'sale over' once the test says so (it ends
-- the pgbench client)
CREATE FUNCTION sale_buy(r bigint) RETURNS bigint LANGUAGE plpgsql AS \$\$
DECLARE
    c sale_ctl;
BEGIN
    SELECT * INTO c FROM sale_ctl;
    IF c.stop THEN
        RAISE EXCEPTION 'sale over';
    END IF;
    RETURN buy(c.base + r);
END
\$\$;
-- the products of a sale, in one transaction (keys on every master)
SELECT count(flashsale.set_stock(p, $UNITS)) FROM generate_series(2, $PRODUCTS) p;
});
is( $node->safe_psql('postgres',
		"SELECT count(*), sum(flashsale.stock_level(product_id)) FROM flashsale.stock"),
	"$PRODUCTS|" . $PRODUCTS * $UNITS,
	"$PRODUCTS products of $UNITS units, read through the cluster");

# products lo..hi's stock keys: { product => key }
sub stock_keys
{
	my ($lo, $hi) = @_;
	my %k;
	foreach (split /\n/, $node->safe_psql('postgres',
		"SELECT p, (flashsale.stock_keys(p)).stock_key FROM generate_series($lo, $hi) p"))
	{
		my ($p, $key) = split /\|/;
		$k{$p} = $key;
	}
	return \%k;
}

{
	my $keys = stock_keys(1, $PRODUCTS);
	my %masters = map { owner_of($_) => 1 } values %$keys;
	is(scalar(keys %masters), 3, "the $PRODUCTS products' keys hash to all three masters");
	my $v = redis_gets(values %$keys);
	is(scalar(grep { $v->{ $keys->{$_} } ne $UNITS } keys %$keys),
		0, "every product's pool ($UNITS) is on the master that owns its slot");
}

my %script_texts = (
	sale_buy => "\\set r random_exponential(1, $PRODUCTS, 5.0)\n"
	  . "BEGIN;\nSELECT sale_buy(:r);\nCOMMIT;\n",
	sale_rollback => "\\set r random_exponential(1, $PRODUCTS, 5.0)\n"
	  . "BEGIN;\nSELECT sale_buy(:r);\nROLLBACK;\n",);

sub orders_in
{
	my ($lo, $hi) = @_;
	my ($ok, $out) = psql_raw($node,
		"SELECT count(*) FROM orders WHERE product_id BETWEEN $lo AND $hi");
	return $ok && $out =~ /^\d+$/ ? $out : undef;
}

# A sale of products base + 1 .. base + PRODUCTS: 1 order in 5 rolled back,
# buyers retrying on class 08
sub sale_start
{
	my ($base) = @_;
	$node->safe_psql('postgres', "UPDATE sale_ctl SET stop = false, base = $base");
	return pgbench_start(
		$node,
		clients      => $CLIENTS,
		duration     => 600,
		rate         => $RATE,
		timeout      => 900,
		scripts      => [ sale_buy => 4, sale_rollback => 1 ],
		script_texts => \%script_texts);
}

# wait_orders(run, lo, hi, n, label): true once n orders of lo..hi are in,
# pgbench running
sub wait_orders
{
	my ($run, $lo, $hi, $n, $label) = @_;
	my $count;
	my $ok = wait_until(
		sub {
			return 1 unless buyers_alive($run);
			$count = orders_in($lo, $hi);
			return defined $count && $count >= $n;
		},
		120);
	$ok &&= buyers_alive($run);
	ok($ok, "$label ($n orders)")
	  or diag "orders: " . ($count // 'unknown') . "; pgbench:\n$run->{out}\n$run->{err}";
	return $ok;
}

# pgbench runs and none of its clients ended on an error
sub buyers_alive
{
	my ($run) = @_;
	eval { $run->{h}->pump_nb if $run->{h}->pumpable; };
	return $run->{h}->pumpable && $run->{err} !~ /aborted in command/;
}

# Stop the buyers: each client's next order raises 'sale over' and ends it.
# pgbench exits with 2 (its clients were aborted); no client may have ended
# on any other error.
sub sale_stop
{
	my ($run, $label) = @_;
	$node->safe_psql('postgres', 'UPDATE sale_ctl SET stop = true');
	my $rc = pgbench_finish($run);
	my @aborted = $run->{err} =~ /^.*aborted in command.*$/mg;
	my @over  = grep { /ERROR:\s+sale over/ } @aborted;
	my @other = grep { /ERROR/ && !/sale over|Run was aborted/ } split /\n/, $run->{err};
	is($rc, 2, "$label: pgbench ended as told (its clients stopped by 'sale over')");
	is(scalar(@over), $CLIENTS, "$label: every client ran until 'sale over'");
	is(scalar(@other), 0, "$label: no buyer got any other error (class 08 retried)")
	  or diag join("\n", @other[ 0 .. ($#other < 9 ? $#other : 9) ]);
	my ($tps) = $run->{out} =~ /tps = ([\d.]+)/;
	note "$label: pgbench " . ($tps // '?') . ' tps';
	return;
}

# check_products(label, lo, hi): after a sale, once every allotment went
# back to the pool (the worker gives idle ones back) and two sync passes,
# every product of lo..hi exact: orders + units left == UNITS, the table's
# quantity == left, stock_status agrees and has nothing in flight, and the
# pool on the master that owns the product's slot == left
sub check_products
{
	my ($label, $lo, $hi) = @_;
	my $n = $hi - $lo + 1;
	ok( poll_sql(
			$node,
			'SELECT coalesce(sum(available + in_flight), 0) FROM flashsale.allotments()',
			'0', 30),
		"$label: every idle allotment went back to the pool (the worker, through the cluster)");
	my $s1 = sync_pass($node);
	my $s2 = sync_pass($node);
	is("$s1->{errors}|$s2->{errors}|$s2->{busy}", '0|0|0',
		"$label: two sync passes, no error, nothing busy");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM flashsale.stock_ledger'),
		0, "$label: ledger folded");
	my $r = sql_row(
		$node, qq{
WITH s AS (
    SELECT p,
           (SELECT coalesce(sum(qty), 0) FROM orders o WHERE o.product_id = p) AS sold,
           flashsale.stock_level(p) AS lvl,
           (SELECT quantity FROM flashsale.stock t WHERE t.product_id = p) AS quantity
    FROM generate_series($lo, $hi) p)
SELECT count(*) AS products, sum(sold) AS sold, sum(lvl) AS left,
       count(*) FILTER (WHERE sold + lvl <> $UNITS) AS wrong,
       count(*) FILTER (WHERE sold > $UNITS OR lvl < 0) AS oversold,
       count(*) FILTER (WHERE quantity IS DISTINCT FROM lvl) AS table_differs,
       count(*) FILTER (WHERE lvl = 0) AS sold_out,
       count(*) FILTER (WHERE sold = 0) AS unsold
FROM s});
	note "$label: products $lo-$hi: sold $r->{sold}, left $r->{left}, "
	  . "$r->{sold_out} sold out, $r->{unsold} unsold";
	is($r->{products}, $n, "$label: $n products");
	is($r->{sold} + $r->{left}, $n * $UNITS, "$label: orders + units left == " . $n * $UNITS);
	is($r->{wrong}, 0, "$label: for every product, orders + units left == $UNITS");
	is($r->{oversold}, 0, "$label: no product oversold");
	is($r->{table_differs}, 0, "$label: flashsale.stock.quantity == units left for every product");
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*) FILTER (WHERE in_flight <> 0),
       count(*) FILTER (WHERE db_left IS DISTINCT FROM "left"),
       count(*) FILTER (WHERE pool IS DISTINCT FROM "left" OR available <> 0)
FROM flashsale.stock_status WHERE product_id BETWEEN $lo AND $hi}),
		'0|0|0',
		"$label: stock_status: nothing in flight, db_left == left == pool for every product");
	my %lvl = map { split /\|/ } split /\n/,
	  $node->safe_psql('postgres',
		"SELECT p, flashsale.stock_level(p) FROM generate_series($lo, $hi) p");
	my $keys = stock_keys($lo, $hi);
	my $v = redis_gets(values %$keys);
	my @bad = grep { $v->{ $keys->{$_} } ne $lvl{$_} } sort { $a <=> $b } keys %$keys;
	is(scalar(@bad), 0, "$label: the pool on each product's master == units left")
	  or diag join("\n",
		map { "product $_: pool '$v->{ $keys->{$_} }', left $lvl{$_}" } @bad[ 0 .. ($#bad < 9 ? $#bad : 9) ]);
	return $r;
}

# ---------------------------------------------------------------- 1. slots move mid-sale

my $stats0 = error_stats();
my $run = sale_start(0);
wait_orders($run, 1, $PRODUCTS, 300, 'sale 1 under way');
{
	# the slot of product 1 (the hottest) moved by hand, each state held a while
	my $slot = key_slot('{1}');
	my ($src) = grep { $_->{port} == slot_owners()->[$slot] } masters();
	my ($dst) = grep { $_->{port} != $src->{port} } masters();
	my $e0 = error_stats();
	my $before = orders_in(1, 1);
	my @keys = migrate_slot($slot, $src, $dst, $HOLD);
	is_deeply([ sort @keys ], [ sort(stock_key($node, 1), allot_key($node, 1)) ],
		"product 1's slot $slot moved by hand mid-sale, key by key: its pool and allotment hash");
	is(cli($dst->{port}, 'CLUSTER', 'COUNTKEYSINSLOT', $slot), 2, "... both now on $dst->{port}");
	my $e = error_stats();
	note "slot $slot migrated $src->{port} -> $dst->{port} by hand; error replies meanwhile: "
	  . join(', ', map { "$_ " . ($e->{$_} - ($e0->{$_} // 0)) } sort keys %$e)
	  . '; orders of product 1 meanwhile: ' . (orders_in(1, 1) - $before);
	wait_settled('after the slot moved by hand');
}
{
	my %before = map { $_->{id} => $_->{slots} } masters();
	my ($from, $to) = masters();
	my $before = orders_in(1, $PRODUCTS);
	my ($ok, $moved, $secs) = reshard($MOVE, $from, $to);
	ok($ok, "reshard: $MOVE slots from $from->{port} to $to->{port} mid-sale");
	is($moved, $MOVE, "redis-cli moved $MOVE slots");
	note sprintf('%d slots moved %d -> %d in %.1f s', $moved, $from->{port}, $to->{port}, $secs);
	wait_settled('after the reshard');
	my %want = %before;
	$want{ $from->{id} } -= $MOVE;
	$want{ $to->{id} } += $MOVE;
	is_deeply({ map { $_->{id} => $_->{slots} } masters() },
		\%want, "$from->{port} serves $want{$from->{id}} slots, $to->{port} $want{$to->{id}}");
	my $during = orders_in(1, $PRODUCTS) - $before;
	cmp_ok($during, '>', 0, "orders were placed while slots moved ($during)");
}
wait_orders($run, 1, $PRODUCTS, orders_in(1, $PRODUCTS) + 200, 'sales go on after the moves');
sale_stop($run, 'sale 1');
{
	my $s = error_stats();
	note 'error replies of the nodes during sale 1: '
	  . join(', ', map { "$_ " . ($s->{$_} - ($stats0->{$_} // 0)) } sort keys %$s);
	note 'class 08 errors buyers retried: '
	  . $node->safe_psql('postgres', 'SELECT count(*) FROM redis_errors');
}
my $sale1 = check_products('sale 1', 1, $PRODUCTS);
cmp_ok($sale1->{sold_out}, '>', 0, 'sale 1: some products sold out');

# ---------------------------------------------------------------- 2. failover mid-sale

my ($LO2, $HI2) = ($PRODUCTS + 1, 2 * $PRODUCTS);
$node->safe_psql('postgres',
	"SELECT count(flashsale.set_stock(p, $UNITS)) FROM generate_series($LO2, $HI2) p");
$node->safe_psql('postgres', 'TRUNCATE redis_errors');
$run = sale_start($PRODUCTS);
wait_orders($run, $LO2, $HI2, 300, 'sale 2 under way');
{
	# a master other than the seed, with a replica
	my ($victim) = grep { $_->{port} != $ports[0] && @{ $_->{replicas} } } masters();
	BAIL_OUT('no master to kill') unless $victim;
	my $replica = $victim->{replicas}[0];
	my $slots   = $victim->{slots};
	my $keys    = stock_keys($LO2, $HI2);
	my $held    = grep { owner_of($_) == $victim->{port} } values %$keys;
	my $before  = orders_in($LO2, $HI2);
	my $t       = time();
	ok(kill('KILL', $pid_of{ $victim->{port} }), "master $victim->{port} killed (SIGKILL) mid-sale");
	delete $pid_of{ $victim->{port} };
	note "the killed master served $slots slots, $held of sale 2's products";
	ok( wait_until(
			sub {
				my $t2 = topology($replica) or return 0;
				my ($me) = grep { $_->{flags} =~ /myself/ } values %$t2;
				return $me->{flags} =~ /master/ && $me->{slots} == $slots;
			},
			60),
		"its replica ($replica) took over its $slots slots");
	wait_settled('after the failover');
	my $secs = time() - $t;
	note sprintf('failover: cluster ok again %.1f s after the kill', $secs);
	is(scalar(grep { $_->{port} == $replica } masters()), 1, "$replica is a master");
	note 'class 08 errors buyers retried so far: '
	  . $node->safe_psql('postgres', 'SELECT count(*) FROM redis_errors');
	note 'orders placed between the kill and cluster ok: ' . (orders_in($LO2, $HI2) - $before);
}
wait_orders($run, $LO2, $HI2, orders_in($LO2, $HI2) + 200, 'sale 2 resumed after the failover');
sale_stop($run, 'sale 2');
note 'class 08 errors buyers retried in sale 2: '
  . $node->safe_psql('postgres', 'SELECT count(*) FROM redis_errors');
check_products('sale 2', $LO2, $HI2);
check_products('sale 1 after the failover', 1, $PRODUCTS);
note 'units sold: ' . $node->safe_psql('postgres', 'SELECT sum(qty) FROM orders');

# ---------------------------------------------------------------- 3. a multi-product order

# three products whose slots are on three masters
my @multi;
{
	my %seen;
	for my $p (1001 .. 1100)
	{
		my $o = owner_of("{$p}");
		next if $seen{$o}++;
		push @multi, $p;
		last if @multi == 3;
	}
	is(scalar(@multi), 3, 'three products on three masters: ' . join(', ', @multi));
}
my ($m1, $m2, $m3) = @multi;
my $arr = "ARRAY[$m1, $m2, $m3]::bigint[]";
sub levels
{
	return $node->safe_psql('postgres',
		"SELECT string_agg(flashsale.stock_level(p)::text, ',' ORDER BY o) "
		  . "FROM unnest($arr) WITH ORDINALITY AS u(p, o)");
}
$node->safe_psql('postgres',
	"SELECT flashsale.set_stock($m1, 10), flashsale.set_stock($m2, 10), flashsale.set_stock($m3, 1)");
is(levels(), '10,10,1', 'multi: 10, 10 and 1 units');
{
	my $k = stock_keys($m1, $m1)->{$m1};
	is(owner_of($k), owner_of("{$m1}"), "the stock key's hash tag is the product id");
}
$node->safe_psql(
	'postgres', qq{
BEGIN;
SELECT flashsale.decrement_stock($arr, ARRAY[2, 3, 1]);
INSERT INTO orders (product_id, qty) VALUES ($m1, 2), ($m2, 3), ($m3, 1);
COMMIT;
});
is(levels(), '8,7,0', 'multi: an order of 2, 3 and 1 on three masters, committed');
$node->safe_psql(
	'postgres', qq{
BEGIN;
SELECT flashsale.decrement_stock(ARRAY[$m1, $m2], ARRAY[4, 4]);
ROLLBACK;
});
is(levels(), '8,7,0', 'multi: an order rolled back gives every unit back');
{
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT flashsale.decrement_stock($arr, ARRAY[1, 1, 1])");
	like($err, qr/FS010/, 'multi: one item short (0 left): refused, FS010');
	is(levels(), '8,7,0', 'multi: ... and nothing taken from the other two');
	($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT flashsale.decrement_stock(ARRAY[$m1, $m2], ARRAY[1, 8])");
	like($err, qr/FS010/, 'multi: the last item short: refused, FS010');
	is(levels(), '8,7,0', 'multi: ... and nothing taken from the first');
}
is( $node->safe_psql(
		'postgres', qq{
BEGIN;
SELECT string_agg(x::text, ',' ORDER BY o)
FROM unnest(flashsale.decrement_stock(ARRAY[$m1, $m2], ARRAY[1, 1])) WITH ORDINALITY AS u(x, o);
INSERT INTO orders (product_id, qty) VALUES ($m1, 1), ($m2, 1);
COMMIT;
}),
	'7,6',
	'multi: another order, of 1 and 1: decrement_stock says 7 and 6 left');
sync_pass($node);
is( $node->safe_psql(
		'postgres', qq{
SELECT string_agg(concat_ws(':', s.db_left, s."left", s.in_flight,
                            (SELECT sum(qty) FROM orders o WHERE o.product_id = s.product_id)), ' '
                  ORDER BY s.product_id)
FROM flashsale.stock_status s WHERE s.product_id IN ($m1, $m2, $m3)}),
	'7:7:0:3 6:6:0:4 0:0:0:1',
	'multi: stock_status (db_left:left:in_flight:orders) exact on all three');

# ---------------------------------------------------------------- 4. Redis locks

# lock names whose keys are on three masters
my @names;
{
	my %seen;
	for my $i (1 .. 100)
	{
		my $name = "promo:$i";
		my $o = owner_of('lock:{' . length($name) . ":$name}");
		next if $seen{$o}++;
		push @names, $name;
		last if @names == 3;
	}
	is(scalar(@names), 3, 'three lock names on three masters: ' . join(', ', @names));
}
my ($la, $lb, $lc) = @names;
my $A = $node->background_psql('postgres', on_error_stop => 0);
my $B = $node->background_psql('postgres', on_error_stop => 0);
$A->query_safe('BEGIN');
my $ta = $A->query_safe("SELECT flashsale.redis_lock('$la')");
my $tb = $A->query_safe("SELECT flashsale.redis_lock('$lb')");
my $tc = $A->query_safe("SELECT flashsale.redis_lock('$lc')");
like("$ta $tb $tc", qr/^\d{16} \d{16} \d{16}$/, 'A holds three locks (on three masters) in a transaction');
{
	my $key = $node->safe_psql('postgres', "SELECT key FROM flashsale.redis_lock_info('$lb')");
	is($key, 'lock:{' . length($lb) . ":$lb}", "the key of lock $lb");
	is(cli(owner_of($key), 'EXISTS', $key), '1', "... held on the master of its slot");
}
is($B->query_safe("SELECT flashsale.redis_lock('$la') IS NULL"), 't', 'B: the first one is taken (wait 0)');
$B->query_safe('BEGIN');
$B->query_until(qr/waiting\r?\n/,
	"\\echo waiting\nSELECT 'token:' || flashsale.redis_lock('$lb', NULL, 30000);\n");
ok( wait_until(
		sub {
			$node->safe_psql('postgres',
				"SELECT cardinality(waiters) FROM flashsale.redis_lock_info('$lb')") eq '1';
		},
		30),
	"B waits for $lb");
is($node->safe_psql('postgres', "SELECT held FROM flashsale.redis_lock_info('$lb')"),
	't', "... which A still holds");
$A->query_safe('COMMIT');
my $got = $B->query_safe("SELECT 'after'");
like($got, qr/token:(\d+)\s+after/, 'B got the lock once A committed');
my ($tb2) = $got =~ /token:(\d+)/;
is($tb2, $tb + 1, "B's fencing token is A's + 1");
is( $node->safe_psql('postgres',
		"SELECT string_agg(held::text, ',' ORDER BY n) FROM unnest(ARRAY['$la', '$lb', '$lc']) n, "
		  . 'LATERAL flashsale.redis_lock_info(n)'),
	'false,true,false',
	"A's commit released all three locks (B holds $lb now)");
$B->query_safe('COMMIT');
is($node->safe_psql('postgres', "SELECT held FROM flashsale.redis_lock_info('$lb')"),
	'f', "B's commit released $lb");

# session locks: not released by a rollback, handed over by redis_unlock
my $ts = $A->query_safe("SELECT flashsale.redis_lock_session('$lc')");
$A->query_safe("BEGIN");
is($A->query_safe("SELECT flashsale.redis_lock_session('$la') IS NOT NULL"), 't', 'A: a session lock in a transaction');
$A->query_safe("ROLLBACK");
is( $node->safe_psql('postgres',
		"SELECT string_agg(held::text, ',' ORDER BY n) FROM unnest(ARRAY['$la', '$lc']) n, "
		  . 'LATERAL flashsale.redis_lock_info(n)'),
	'true,true', 'A holds two session locks; the rollback released neither');
is($B->query_safe("SELECT flashsale.redis_lock_session('$lc') IS NULL"), 't', 'B: taken (wait 0)');
$B->query_until(qr/waiting\r?\n/,
	"\\echo waiting\nSELECT 'token:' || flashsale.redis_lock_session('$lc', NULL, 30000);\n");
ok( wait_until(
		sub {
			$node->safe_psql('postgres',
				"SELECT cardinality(waiters) FROM flashsale.redis_lock_info('$lc')") eq '1';
		},
		30),
	"B waits for session lock $lc");
is($A->query_safe("SELECT flashsale.redis_unlock('$lc')"), 't', 'A unlocks it');
$got = $B->query_safe("SELECT 'after'");
like($got, qr/token:(\d+)\s+after/, 'B got it');
($tb2) = $got =~ /token:(\d+)/;
is($tb2, $ts + 1, "B's fencing token is A's + 1");
is($A->query_safe("SELECT flashsale.redis_unlock('$la')"), 't', 'A unlocks its other one');
is($B->query_safe("SELECT flashsale.redis_unlock('$lc')"), 't', 'B unlocks');
is( $node->safe_psql('postgres',
		"SELECT string_agg(held::text, ',' ORDER BY n) FROM unnest(ARRAY['$la', '$lb', '$lc']) n, "
		  . 'LATERAL flashsale.redis_lock_info(n)'),
	'false,false,false', 'no lock held');
$A->quit;
$B->quit;

# ---------------------------------------------------------------- 5. rate limits

# keys on every master
my @tkeys = map { "member:$_" } 1 .. 9;
{
	my %m = map { owner_of('throttle:{' . length($_) . ":$_}") => 1 } @tkeys;
	is(scalar(keys %m), 3, 'nine throttle keys, on all three masters');
}
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION t(k text) RETURNS text LANGUAGE sql AS $$
    SELECT allowed || '/' || remaining FROM flashsale.throttle(k, 2, 1, '1000 hours') $$;
});
# four rounds over the nine keys, a statement per call: a burst of 3 each, the 4th refused
my @calls = split /\n/,
  $node->safe_psql('postgres', join('', map { "SELECT t('$_');\n" } (@tkeys) x 4));
my @rounds = map { join(' ', @calls[ 9 * $_ .. 9 * $_ + 8 ]) } 0 .. 3;
is_deeply(
	\@rounds,
	[ join(' ', ('true/2') x 9), join(' ', ('true/1') x 9),
	  join(' ', ('true/0') x 9), join(' ', ('false/0') x 9) ],
	'throttle: nine keys, burst of 3 each, the 4th call refused on every key');
# EXISTS of each rate-limit key of a kind, asked of its slot's master
sub on_masters
{
	my ($kind, @keys) = @_;
	return join(',',
		map { my $k = "$kind:{" . length($_) . ":$_}"; cli(owner_of($k), 'EXISTS', $k) } @keys);
}
is(on_masters('throttle', @tkeys), join(',', ('1') x 9), "each throttle key is on its slot's master");
is( $node->safe_psql(
		'postgres', q{
BEGIN;
SELECT allowed FROM flashsale.throttle('member:refund', 0, 1, '1000 hours', 1, true);
ROLLBACK;
SELECT allowed, remaining FROM flashsale.throttle('member:refund', 0, 1, '1000 hours', 0);
SELECT allowed, remaining FROM flashsale.throttle('member:refund', 0, 1, '1000 hours');
SELECT allowed, remaining FROM flashsale.throttle('member:refund', 0, 1, '1000 hours');
}),
	"t\nt|1\nt|0\nf|0",
	'throttle: a rolled-back admission given back, then 1 allowed, the 2nd refused');

my @okeys = map { "order:$_" } 1 .. 9;
{
	my @r = split /\n/, $node->safe_psql('postgres',
		join('', map { "SELECT flashsale.once('$_', '1 hour');\n" } (@okeys) x 2));
	is(join(' ', @r[ 0 .. 8 ]), join(' ', ('t') x 9), 'once: the first call of nine keys passes');
	is(join(' ', @r[ 9 .. 17 ]), join(' ', ('f') x 9), 'once: the repeats are refused');
}
is(on_masters('once', @okeys), join(',', ('1') x 9), "each once key is on its slot's master");
is( $node->safe_psql(
		'postgres', q{
BEGIN;
SELECT flashsale.once('order:rb', '1 hour');
ROLLBACK;
SELECT flashsale.once('order:rb', '1 hour');
SELECT flashsale.once('order:rb', '1 hour');
}),
	"t\nt\nf",
	'once: a rollback releases the key');

# ---------------------------------------------------------------- 6. a slot stuck mid-migration

# A slot left migrating (IMPORTING on one master, MIGRATING on another), no
# key moved yet.  A script naming one key that does not exist is sent on
# (ASK) and runs on the target (ASKING); a script naming several keys of
# which some do not exist can run nowhere until the migration ends (the
# source says ASK, the target TRYAGAIN): flashsale gives up after
# flashsale.redis_timeout with a class 08 error, as for any call that
# timed out, and callers retry.
{
	my $lname = 'stuck';
	my $lkey  = 'lock:{' . length($lname) . ":$lname}";
	my $slot  = key_slot($lkey);
	# a throttle key and a once key of the same slot
	my ($tk, $ok_);
	for (my $i = 1; !defined $tk || !defined $ok_; $i++)
	{
		$tk  //= "t$i" if key_slot('throttle:{' . length("t$i") . ":t$i}") == $slot;
		$ok_ //= "o$i" if key_slot('once:{' . length("o$i") . ":o$i}") == $slot;
	}
	my ($src) = grep { $_->{port} == slot_owners()->[$slot] } masters();
	my ($dst) = grep { $_->{port} != $src->{port} } masters();
	is(rcall($dst->{port}, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $src->{id}), 'OK',
		"slot $slot importing on $dst->{port}");
	is(rcall($src->{port}, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $dst->{id}), 'OK',
		"... migrating on $src->{port}: lock $lname, throttle key $tk and once key $ok_ are in it");

	is( $node->safe_psql(
			'postgres',
			"SELECT t('$tk');\nSELECT t('$tk');\n"
			  . "SELECT flashsale.once('$ok_', '1 hour');\nSELECT flashsale.once('$ok_', '1 hour');"),
		"true/2\ntrue/1\nt\nf",
		'throttle() and once() on keys of the slot mid-migration (ASK, then the target)');
	is(rcall($src->{port}, 'CLUSTER', 'COUNTKEYSINSLOT', $slot), 0, '... no key of the slot on the source');
	is(rcall($dst->{port}, 'CLUSTER', 'COUNTKEYSINSLOT', $slot), 2, '... both on the target');

	my $t = time();
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT flashsale.redis_lock('$lname')");
	my $ms = int((time() - $t) * 1000);
	like($err, qr/ERROR:\s+08\d\d\d:/,
		"redis_lock on the slot mid-migration (4 keys, none there yet): a class 08 error");
	note "redis_lock answered after $ms ms: $err";

	# the migration ends
	foreach my $m ($dst, $src, grep { $_->{id} ne $dst->{id} && $_->{id} ne $src->{id} } masters())
	{
		rcall($m->{port}, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $dst->{id});
	}
	wait_settled('the slot migrated');
	like($node->safe_psql('postgres', "SELECT flashsale.redis_lock_session('$lname')"),
		qr/^\d{16}$/, 'redis_lock works once the migration ended');
	is(rcall($dst->{port}, 'EXISTS', "$lkey:fence"), 1, "... its fencing counter is on $dst->{port}");
	is($node->safe_psql('postgres', "SELECT t('$tk');\nSELECT t('$tk');"),
		"true/0\nfalse/0", 'the throttle key kept what it counted on the target');
}

# ---------------------------------------------------------------- 7. the seed node dies

# flashsale.redis_host names one node; with only it, a backend that has no
# slot map yet (a new session, a restarted worker) cannot read one while it
# is down.  flashsale.redis_cluster_seeds names more.
{
	my ($seed) = grep { $_->{port} == $ports[0] } masters();
	BAIL_OUT('the seed is not a master with a replica')
	  unless $seed && @{ $seed->{replicas} };
	my $others = join(',', map { "127.0.0.1:$_" } grep { $_ != $ports[0] && $pid_of{$_} } @ports);
	$node->safe_psql('postgres', "ALTER SYSTEM SET flashsale.redis_cluster_seeds = '$others'");
	$node->reload;
	ok(poll_sql($node, 'SHOW flashsale.redis_cluster_seeds', $others, 10), "redis_cluster_seeds = $others");
	ok(kill('KILL', $pid_of{ $ports[0] }), "the seed master $ports[0] killed");
	delete $pid_of{ $ports[0] };
	ok( wait_until(
			sub {
				my $t2 = topology($seed->{replicas}[0]) or return 0;
				my ($me) = grep { $_->{flags} =~ /myself/ } values %$t2;
				return $me->{flags} =~ /master/;
			},
			60),
		"its replica $seed->{replicas}[0] took over");
	wait_settled('after the seed died');
	is( $node->safe_psql('postgres',
			"SELECT flashsale.stock_level(1) >= 0, flashsale.redis_call('PING')"),
		"t|PONG", 'a new session reads the slot map from another seed (redis_cluster_seeds)');
	$node->safe_psql('postgres', 'ALTER SYSTEM RESET flashsale.redis_cluster_seeds');
	$node->reload;
	ok(poll_sql($node, 'SHOW flashsale.redis_cluster_seeds', '', 10), 'redis_cluster_seeds reset');
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT flashsale.redis_call('PING')");
	like($err, qr/ERROR:\s+08001:.*\n.*cluster seed node/,
		'without it, a new session cannot: 08001, the seed named in the detail');
	($ret, $out, $err) = $node->psql('postgres', "SET flashsale.redis_cluster_seeds = 'nowhere'");
	like($err, qr/invalid value for parameter "flashsale.redis_cluster_seeds"/,
		'a seed that is not host:port is refused');
}

note sprintf('run time %.1f s', time() - $T0);
done_testing();
