
# Redis locks shared by two PostgreSQL instances (two system identifiers)
# pointing at the same Redis: mutual exclusion and ownership (FS020),
# FIFO order of waiters alternating between the instances, waiters that
# give up (wait_ms, statement_timeout) or die without stalling those behind
# them, a holder killed with SIGKILL whose lock frees itself once its lease
# runs out, a live holder kept past its lease by the worker's renewals, and
# fencing tokens that increase by exactly one per acquisition.
#
# Every lock of this file has the same name, so the tokens count every
# acquisition of the whole file: t, t + 1, t + 2, ... (a new fencing counter
# starts at Redis' clock in microseconds).  The parts are numbered as in
# the plan (1-7, 8 the dead waiter) and run as 1, 2, 3, 7, 4, 5, 8, 6: the
# ones that SIGKILL a backend of node B (a crash restart of B) come late.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $NAME = 'orders';
my $LOCK = 'lock:{' . length($NAME) . ":$NAME}";

redis_start();
my $A = new_node('node_a');
my $B = new_node('node_b');

my $sys_a = system_identifier($A);
my $sys_b = system_identifier($B);
isnt($sys_a, $sys_b, "two instances: system identifiers $sys_a and $sys_b");

foreach my $node ($A, $B)
{
	ok(poll_sql($node, 'SELECT passes >= 1 FROM flashsale.worker_status', 't', 30),
		$node->name . ': worker running');
	# timed_lock: a transaction-scoped lock, the time it took (server
	# side) and when it was acquired (epoch)
	$node->safe_psql(
		'postgres', q{
CREATE TABLE lock_log (who text PRIMARY KEY, token bigint NOT NULL,
                       acquired_at float8 NOT NULL, released_at float8);
CREATE FUNCTION timed_lock(name text, lease_ms bigint, wait_ms bigint,
                           OUT token bigint, OUT ms numeric, OUT at float8)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
BEGIN
    token := flashsale.redis_lock(name, lease_ms, wait_ms);
    ms := round(extract(epoch FROM clock_timestamp() - t0) * 1000, 1);
    at := extract(epoch FROM clock_timestamp());
END
$$;
});
}

# ---------------------------------------------------------------- helpers

my @tokens;    # [who, token] of every acquisition of $NAME, in order
my $last_token = 0;

# an acquisition: its token must be the next one
sub acquired
{
	my ($who, $token, $label) = @_;
	push @tokens, [ $who, $token ];
	if ($last_token == 0)
	{
		like($token, qr/^\d{16}$/, "$label: $who got the first fencing token (Redis' clock, us)");
	}
	else
	{
		is($token, $last_token + 1, "$label: $who got fencing token " . ($last_token + 1));
	}
	$last_token = $token if defined $token && $token =~ /^\d+$/;
	return;
}

sub sq { my ($node, $sql) = @_; return $node->safe_psql('postgres', $sql); }

# A connected background session with verbose errors: (session, pid).
sub session
{
	my ($node) = @_;
	my $s = $node->background_psql('postgres', on_error_stop => 1, timeout => 60);
	$s->query_safe('\set VERBOSITY verbose');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	chomp $pid;
	return ($s, $pid);
}

# Send sql to the session and return at once; the session quits after it
# (or at its first error).  Collect it with finish_session.
sub send_async
{
	my ($s, $sql) = @_;
	$s->query_until(qr/^go\n/m, "\\echo go\n$sql\n\\q\n");
	return;
}

# Wait for a session given to send_async: (exited 0, stdout, stderr).
sub finish_session
{
	my ($s) = @_;
	my $ok = eval { $s->{run}->finish };
	diag "session did not finish: $@" if $@;
	my ($out, $err) = ($s->{stdout}, $s->{stderr});
	chomp $out;
	chomp $err;
	return (($ok && !$@) ? 1 : 0, $out, $err);
}

# The owner id a backend has in Redis: system identifier:pid:backend start
# (microseconds since 2000-01-01), from pg_stat_activity.
sub expected_owner
{
	my ($node, $pid) = @_;
	return sq($node,
		    "SELECT (SELECT system_identifier FROM pg_control_system()) || ':' || pid || ':' || "
		  . "(extract(epoch FROM backend_start) * 1000000 - 946684800000000)::bigint "
		  . "FROM pg_stat_activity WHERE pid = $pid");
}

sub queue { return split /\n/, (redis_cmd('ZRANGE', "$LOCK:queue", 0, -1) // ''); }

# poll until the Redis queue is exactly these owners, in this order
sub queue_is
{
	my ($label, @owners) = @_;
	my @q;
	my $ok = wait_until(
		sub {
			@q = queue();
			return "@q" eq "@owners";
		},
		20);
	ok($ok, $label) or diag "queue: [@q]\nexpected: [@owners]";
	return $ok;
}

sub holder { return redis_cmd('HGET', $LOCK, 'owner') // ''; }

sub lock_free
{
	my ($label) = @_;
	is(redis_cmd('EXISTS', $LOCK, "$LOCK:queue", "$LOCK:waiters"),
		0, "$label: lock free in Redis, nobody queued");
	return;
}

# the try of a node: (token or 'NULL', ms it took server side)
sub try_lock
{
	my ($node, $wait_ms) = @_;
	my $r = sq($node,
		"SELECT coalesce(token::text, 'NULL'), ms FROM timed_lock('$NAME', 30000, $wait_ms)");
	return split /\|/, $r;
}

# psql's verbose error of sql on node
sub sql_error
{
	my ($node, $sql) = @_;
	my ($ok, $out, $err) = psql_raw($node, "\\set VERBOSITY verbose\n$sql");
	return $ok ? "no error (returned '$out')" : $err;
}

# the script of a waiter: transaction-scoped lock with a watchdog lease (a
# dead waiter the release handed the lock to holds it 3 s at most), a log
# row on its own node when acquired, held hold_s, released_at logged just
# before COMMIT
sub waiter_sql
{
	my ($who, $wait_ms, $hold_s) = @_;
	return qq{BEGIN;
SELECT flashsale.redis_lock('$NAME', NULL, $wait_ms) AS tok \\gset
INSERT INTO lock_log VALUES ('$who', :tok, extract(epoch FROM clock_timestamp()));
SELECT pg_sleep($hold_s);
UPDATE lock_log SET released_at = extract(epoch FROM clock_timestamp()) WHERE who = '$who';
COMMIT;};
}

sub log_row
{
	my ($node, $who) = @_;
	return sql_row($node, "SELECT * FROM lock_log WHERE who = '$who'");
}

# ================================================================ 1.
# A session lock on node A excludes node B; only its owner unlocks it.
my ($sa, $pid_a) = session($A);
my $owner_a = expected_owner($A, $pid_a);
like($owner_a, qr/^$sys_a:$pid_a:\d+$/, "owner id of A's session: $owner_a");

my $t = $sa->query_safe("SELECT flashsale.redis_lock_session('$NAME')");
acquired('A', $t, '1. session lock on A');
is(holder(), $owner_a, "1. Redis $LOCK owner = A's <system identifier>:<pid>:<backend start>");
is( join(',', map { redis_cmd('HGET', $LOCK, $_) } qw(count token)),
	"1,$t", '1. Redis lock hash: count 1, its token');
is(redis_cmd('GET', "$LOCK:fence"), $t, "1. Redis $LOCK:fence = the token");
my $pttl = redis_cmd('PTTL', $LOCK);
ok($pttl > 0 && $pttl <= 30000, "1. lease 30000 ms by default (PTTL $pttl)");
is( sq($A, 'SELECT name, state, pid, lease_ms, token, owner FROM flashsale.redis_locks()'),
	"$NAME|held|$pid_a|30000|$t|$owner_a",
	'1. A: redis_locks() shows the held lock');
is( sq($A,
		"SELECT name, holder_pid, held_since IS NOT NULL, waiting_pids, waiting_since FROM flashsale.locks WHERE kind = 'redis'"
	),
	"$NAME|$pid_a|t|{}|",
	'1. A: flashsale.locks shows its holder, no waiter');
is(sq($B, 'SELECT count(*) FROM flashsale.redis_locks()'), 0,
	'1. B: redis_locks() has nothing (it lists this instance only)');
is(sq($B, "SELECT count(*) FROM flashsale.locks WHERE kind = 'redis'"),
	0, '1. B: flashsale.locks has no redis row');

is(sq($B, "SELECT flashsale.redis_lock('$NAME', 30000, 0) IS NULL"),
	't', '1. B: redis_lock(wait 0) returns NULL');
my ($tok, $ms) = try_lock($B, 300);
is($tok, 'NULL', '1. B: redis_lock(wait 300) returns NULL');
cmp_ok($ms, '>=', 300, "1. ... after >= 300 ms ($ms ms)");
cmp_ok($ms, '<', 1000, '1. ... and < 1000 ms');
is(redis_cmd('EXISTS', "$LOCK:queue", "$LOCK:waiters"), 0,
	'1. B left the queue when it gave up');
is(sq($B, 'SELECT count(*) FROM flashsale.redis_locks()'), 0,
	'1. B: no waiting row left');

like(
	sql_error($B, "SELECT flashsale.redis_unlock('$NAME')"),
	qr/ERROR:  FS020: Redis lock "$NAME" is not held by this session/,
	'1. B: redis_unlock fails with FS020');
is(holder(), $owner_a, '1. A still holds it');
is(sq($B, "SELECT flashsale.redis_lock('$NAME', 30000, 0) IS NULL"),
	't', '1. B: still NULL');

# reentrant for the same backend
is($sa->query_safe("SELECT flashsale.redis_lock_session('$NAME')"),
	$t, '1. A: reentrant, same token');
is(redis_cmd('HGET', $LOCK, 'count'), 2, '1. Redis count 2');
is(redis_cmd('GET', "$LOCK:fence"), $t, '1. no new token');
is($sa->query_safe("SELECT flashsale.redis_unlock('$NAME')"), 't', '1. A: unlock once');
is(holder(), $owner_a, '1. A still holds it (count 1)');
is(sq($B, "SELECT flashsale.redis_lock('$NAME', 30000, 0) IS NULL"),
	't', '1. B: still NULL');
is($sa->query_safe("SELECT flashsale.redis_unlock('$NAME')"), 't', '1. A: unlock again');
lock_free('1. after A unlocked');
is(sq($A, 'SELECT count(*) FROM flashsale.redis_locks()'), 0, '1. A: redis_locks() empty');
like(
	sql_error($A, "SELECT flashsale.redis_unlock('$NAME')"),
	qr/ERROR:  FS020:/,
	'1. a third unlock (not held) fails with FS020');

($tok) = try_lock($B, 0);
acquired('B', $tok, '1. B after A unlocked');
lock_free('1. B\'s transaction lock released at commit');

# ================================================================ 2.
# FIFO across instances: A holds, B1 (node B), A2 (node A), B3 (node B)
# queue in that order and get it in that order.
$t = $sa->query_safe("SELECT flashsale.redis_lock_session('$NAME')");
acquired('A', $t, '2. A holds');

my @w2 = ([ 'B1', $B ], [ 'A2', $A ], [ 'B3', $B ]);
my @queued;
foreach my $w (@w2)
{
	my ($who, $node) = @$w;
	my ($s, $pid) = session($node);
	my $owner = expected_owner($node, $pid);
	push @$w, $s, $pid, $owner;
	send_async($s, waiter_sql($who, 20000, 0.2));
	push @queued, $owner;
	queue_is("2. $who queued (queue: " . join(', ', map { $_->[0] } @w2[ 0 .. $#queued ]) . ')',
		@queued);
}
like($queued[0], qr/^$sys_b:/, '2. queue head is from node B');
like($queued[1], qr/^$sys_a:/, '2. then node A');
like($queued[2], qr/^$sys_b:/, '2. then node B');
my @scores = map { redis_cmd('ZSCORE', "$LOCK:queue", $_) } @queued;
ok($scores[0] < $scores[1] && $scores[1] < $scores[2], "2. tickets increase (@scores)");
is(holder(), $owner_a, '2. A holds it meanwhile');
is( sq($A,
		"SELECT holder_pid, waiting_pids, waiting_since IS NOT NULL FROM flashsale.locks WHERE kind = 'redis'"),
	"$pid_a|{$w2[1][3]}|t",
	'2. A: flashsale.locks: A holds, A2 waits');
is( sq($B,
		"SELECT holder_pid, waiting_pids, waiting_since IS NOT NULL FROM flashsale.locks WHERE kind = 'redis'"),
	"|{$w2[0][3],$w2[2][3]}|t",
	'2. B: flashsale.locks: no holder here, B1 and B3 wait');
is( sq($B, "SELECT string_agg(state || ':' || pid || ':' || coalesce(token::text, '-') || ':' || owner, ',' ORDER BY pid) FROM flashsale.redis_locks()"),
	join(',', map { "waiting:$_->[3]:-:$_->[4]" } sort { $a->[3] <=> $b->[3] } @w2[ 0, 2 ]),
	'2. B: redis_locks(): B1 and B3 waiting, with their owner ids');

my ($t_rel) = split /\n/,
  $sa->query_safe("SELECT extract(epoch FROM clock_timestamp());\nSELECT flashsale.redis_unlock('$NAME')");
foreach my $w (@w2)
{
	my ($ok, $out, $err) = finish_session($w->[2]);
	ok($ok, "2. $w->[0] committed") or diag $err;
}
my @log = map { log_row($_->[1], $_->[0]) } @w2;
my @who_by_token =
  map { $_->[0] } sort { $a->[1]{token} <=> $b->[1]{token} } map { [ $w2[$_][0], $log[$_] ] } 0 .. 2;
is("@who_by_token", 'B1 A2 B3', '2. acquired in queue order: B1, A2, B3 (by token)');
acquired($w2[$_][0], $log[$_]{token}, '2. FIFO') for 0 .. 2;
my $prev_release = $t_rel;
foreach my $i (0 .. 2)
{
	my $r   = $log[$i];
	my $gap = $r->{acquired_at} - $prev_release;
	ok($gap > 0, sprintf('2. %s acquired after the previous holder released (+%.1f ms)', $w2[$i][0], $gap * 1000));
	cmp_ok($gap, '<', 1.0, "2. $w2[$i][0] woken promptly (< 1 s)");
	cmp_ok($r->{released_at} - $r->{acquired_at}, '>=', 0.2, "2. $w2[$i][0] held it 0.2 s");
	$prev_release = $r->{released_at};
}
lock_free('2. after the three committed');

# ================================================================ 3.
# A waiter that gives up (wait_ms) does not stall the one behind it.
$t = $sa->query_safe("SELECT flashsale.redis_lock_session('$NAME')");
acquired('A', $t, '3. A holds');
my ($s31, $pid31) = session($B);
my ($s32, $pid32) = session($A);
my $owner31 = expected_owner($B, $pid31);
my $owner32 = expected_owner($A, $pid32);
send_async($s31, "SELECT coalesce(token::text, 'NULL'), ms FROM timed_lock('$NAME', 30000, 500);");
queue_is('3. W1 (node B, wait 500 ms) queued', $owner31);
send_async($s32, waiter_sql('S3-W2', 20000, 0));
queue_is('3. W2 (node A, wait 20 s) queued behind W1', $owner31, $owner32);
my ($ok, $out, $err) = finish_session($s31);
ok($ok, '3. W1 finished') or diag $err;
($tok, $ms) = split /\|/, $out;
is($tok, 'NULL', '3. W1 gave up: NULL');
cmp_ok($ms, '>=', 500, "3. W1 waited >= 500 ms ($ms ms)");
queue_is('3. W1 left the queue: W2 is its head', $owner32);
is(holder(), $owner_a, '3. A still holds it');
($t_rel) = split /\n/,
  $sa->query_safe("SELECT extract(epoch FROM clock_timestamp());\nSELECT flashsale.redis_unlock('$NAME')");
($ok, $out, $err) = finish_session($s32);
ok($ok, '3. W2 committed') or diag $err;
my $r3 = log_row($A, 'S3-W2');
acquired('W2', $r3->{token}, '3. W2 after A released');
my $delay3 = $r3->{acquired_at} - $t_rel;
ok($delay3 > 0 && $delay3 < 1.5,
	sprintf('3. W2 got it %.1f ms after the release (< 1.5 s)', $delay3 * 1000));
lock_free('3. at the end');

# ================================================================ 7.
# A waiter interrupted by statement_timeout errors with 57014 and does not
# stall the one behind it.
$t = $sa->query_safe("SELECT flashsale.redis_lock_session('$NAME')");
acquired('A', $t, '7. A holds');
my ($s71, $pid71) = session($B);
my ($s72, $pid72) = session($A);
my $owner71 = expected_owner($B, $pid71);
my $owner72 = expected_owner($A, $pid72);
$s71->query_safe('SET statement_timeout = 300');
# the clock is read before sending: the server's timer may start before this process runs again
my $t71 = time();
send_async($s71, "SELECT flashsale.redis_lock('$NAME', 30000, 10000);");
queue_is('7. W1 (node B, statement_timeout 300 ms, wait 10 s) queued', $owner71);
send_async($s72, waiter_sql('S7-W2', 20000, 0));
queue_is('7. W2 (node A) queued behind it', $owner71, $owner72);
($ok, $out, $err) = finish_session($s71);
my $took71 = time() - $t71;
ok(!$ok, '7. W1 failed');
like($err, qr/ERROR:  57014: canceling statement due to statement timeout/,
	'7. W1: SQLSTATE 57014');
cmp_ok($took71, '>=', 0.3, sprintf('7. W1 failed after %.0f ms (>= 300)', $took71 * 1000));
cmp_ok($took71, '<', 1.0, '7. ... and < 1 s');
queue_is('7. W1 left the queue: W2 is its head', $owner72);
ok(poll_sql($B, 'SELECT count(*) FROM flashsale.redis_locks()', '0', 10),
	'7. B: no waiting row left');
is(holder(), $owner_a, '7. A still holds it');
($t_rel) = split /\n/,
  $sa->query_safe("SELECT extract(epoch FROM clock_timestamp());\nSELECT flashsale.redis_unlock('$NAME')");
($ok, $out, $err) = finish_session($s72);
ok($ok, '7. W2 committed') or diag $err;
my $r7 = log_row($A, 'S7-W2');
acquired('W2', $r7->{token}, '7. W2 after A released');
my $delay7 = $r7->{acquired_at} - $t_rel;
ok($delay7 > 0 && $delay7 < 1.0,
	sprintf('7. W2 got it %.1f ms after the release (< 1 s)', $delay7 * 1000));
lock_free('7. at the end');
$sa->quit;

# ================================================================ 4.
# A holder killed with SIGKILL: its lock frees itself once its lease runs
# out (B crash-restarts; A is unaffected).
my ($s4, $pid4) = session($B);
my $owner4 = expected_owner($B, $pid4);
$t = $s4->query_safe("SELECT flashsale.redis_lock_session('$NAME', 2000)");
acquired('B', $t, '4. B holds with a 2000 ms lease');
is(holder(), $owner4, '4. Redis owner is B\'s backend');
is(sq($B, 'SELECT state, pid, lease_ms FROM flashsale.redis_locks()'),
	"held|$pid4|2000", '4. B: redis_locks() shows it, lease 2000 ms');
my $log_offset = -s $B->logfile;
my $t_read = time();
my $pttl4 = redis_cmd('PTTL', $LOCK);
ok($pttl4 > 0 && $pttl4 <= 2000, "4. lease left before the kill: $pttl4 ms");
my $t_kill = time();
ok(kill('KILL', $pid4), "4. kill -9 $pid4");
my $r4 = sql_row($A, "SELECT token, ms, at FROM timed_lock('$NAME', 30000, 10000)");
acquired('A', $r4->{token}, '4. A (wait 10 s) after the kill');
my $after_kill = $r4->{at} - $t_kill;
# it cannot be had before the lease seen just before the kill ran out
cmp_ok($r4->{at}, '>=', $t_read + $pttl4 / 1000 - 0.005,
	sprintf('4. not before the lease ran out (%d ms after the PTTL read)', ($r4->{at} - $t_read) * 1000));
ok($after_kill >= 1.2 && $after_kill <= 6.0,
	sprintf('4. A acquired %.3f s after the kill (1.2 .. 6 s; A waited %s ms)', $after_kill, $r4->{ms}));
lock_free('4. A\'s transaction lock released');
$B->wait_for_log(killed_re($pid4), $log_offset);
ok(poll_sql($B, 'SELECT 1', '1', 60), '4. B back after its crash restart');
ok( poll_sql(
		$B, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'flashsale worker'",
		'1', 60),
	'4. B\'s worker restarted');
is(sq($B, 'SELECT count(*) FROM flashsale.redis_locks()'), 0,
	'4. B: redis_locks() empty after the restart');
$s4->quit;

# ================================================================ 5.
# A live holder of a watchdog lease (lease_ms omitted; 1000 ms here) keeps
# it for 4 s: the worker renews it.
my ($s5, $pid5) = session($A);
my $owner5 = expected_owner($A, $pid5);
$s5->query_safe('SET flashsale.redis_lock_watchdog_lease = 1000');
my ($tok5, $at5) = split /\|/,
  $s5->query_safe("SELECT flashsale.redis_lock_session('$NAME'), extract(epoch FROM clock_timestamp())");
acquired('A', $tok5, '5. A holds with a 1000 ms watchdog lease');
send_async($s5,
	"SELECT pg_sleep(4);\nSELECT extract(epoch FROM clock_timestamp());\nSELECT flashsale.redis_unlock('$NAME');"
);
foreach my $at (2, 3)
{
	my $wait = $at5 + $at - time();
	usleep($wait * 1e6) if $wait > 0;    # the lease must have run out unrenewed
	my $r = sql_row($B,
		    "SELECT flashsale.redis_lock('$NAME', 30000, 0) IS NULL AS null, "
		  . "round((extract(epoch FROM clock_timestamp()) - $at5)::numeric, 2) AS at");
	is($r->{null}, 't', "5. B's try at t = $r->{at} s returns NULL");
	cmp_ok($r->{at}, '<', 4, "5. ... while A is still in pg_sleep(4)");
	is(holder(), $owner5, "5. Redis owner is still A's backend at t = $r->{at} s");
	my $left = redis_cmd('PTTL', $LOCK);
	ok($left > 0 && $left <= 1000, "5. lease renewed, PTTL $left ms");
}
is(redis_cmd('HGET', $LOCK, 'token'), $tok5, '5. same token all along');
my $r5 = sql_row($B, "SELECT token, ms, at FROM timed_lock('$NAME', 30000, 5000)");
($ok, $out, $err) = finish_session($s5);
ok($ok, '5. A slept 4 s and unlocked') or diag $err;
my (undef, $unlock5, $unlocked) = split /\n/, $out;
is($unlocked, 't', '5. A: redis_unlock true');
acquired('B', $r5->{token}, '5. B (wait 5 s) after A unlocked');
cmp_ok($r5->{at} - $at5, '>=', 4, sprintf('5. B got it %.2f s after A did (>= 4 s)', $r5->{at} - $at5));
my $delay5 = $r5->{at} - $unlock5;
ok($delay5 > 0 && $delay5 < 1.0, sprintf('5. %.1f ms after A unlocked', $delay5 * 1000));
lock_free('5. at the end');

# ================================================================ 8.
# A waiter that dies (SIGKILL: B crash-restarts) drops out of the queue
# once its place is no longer kept (3 s without a renewal), or, when the
# release handed it the lock just before, holds it for the 3 s of a grant's
# watchdog lease: the one behind it is not stalled for longer.
my ($s8, $pid8) = session($A);
$t = $s8->query_safe("SELECT flashsale.redis_lock_session('$NAME')");
acquired('A', $t, '8. A holds');
my ($s81, $pid81) = session($B);
my ($s82, $pid82) = session($A);
my $owner81 = expected_owner($B, $pid81);
my $owner82 = expected_owner($A, $pid82);
send_async($s81, "SELECT flashsale.redis_lock('$NAME', NULL, 20000);");
queue_is('8. W1 (node B, wait 20 s) queued', $owner81);
send_async($s82, waiter_sql('S8-W2', 20000, 0));
queue_is('8. W2 (node A, wait 20 s) queued behind it', $owner81, $owner82);
$log_offset = -s $B->logfile;
# W1's place is kept until this (Redis time, ms); it renews it every second
my $kept = redis_cmd('HGET', "$LOCK:waiters", $owner81);
$t_kill = time();
ok(kill('KILL', $pid81), "8. kill -9 W1 ($pid81)");
($t_rel) = split /\n/,
  $s8->query_safe("SELECT extract(epoch FROM clock_timestamp());\nSELECT flashsale.redis_unlock('$NAME')");
# its place was still kept: the release handed the lock to the dead W1, for
# the 3 s of a grant's watchdog lease
is(holder(), $owner81, '8. the release handed the lock to the dead W1 (its place was still kept)');
my $pttl8 = redis_cmd('PTTL', $LOCK);
ok($pttl8 > 0 && $pttl8 <= 3000, "8. ... with a grant's lease of 3 s at most (PTTL $pttl8 ms)");
acquired('W1', redis_cmd('HGET', $LOCK, 'token'), '8. granted to the dead W1');
($ok, $out, $err) = finish_session($s82);
ok($ok, '8. W2 committed') or diag $err;
my $r8 = log_row($A, 'S8-W2');
acquired('W2', $r8->{token}, '8. W2 after A released');
my $after8 = $r8->{acquired_at} - $t_kill;
($kept) = split / /, $kept;
cmp_ok($r8->{acquired_at} * 1000, '>=', $kept - 2,
	sprintf('8. not before the dead W1\'s place ran out (%d ms after its last renewal + 3 s)',
		$r8->{acquired_at} * 1000 - $kept));
cmp_ok($r8->{acquired_at} - $t_rel, '>=', $pttl8 / 1000 - 0.005, '8. nor before the grant\'s lease ran out');
ok($after8 >= 1.9 && $after8 <= 5.0,
	sprintf('8. W2 got it %.3f s after W1 was killed (1.9 .. 5 s; %.3f s after the release)',
		$after8, $r8->{acquired_at} - $t_rel));
lock_free('8. at the end');
$s8->quit;
$B->wait_for_log(killed_re($pid81), $log_offset);
ok(poll_sql($B, 'SELECT 1', '1', 60), '8. B back after its crash restart');
eval { $s81->{run}->finish };    # its psql ends with the connection lost

# ================================================================ 6.
# Fencing tokens over the whole file.
my @seq = map { $_->[1] } @tokens;
note 'tokens: ' . join(', ', map { "$_->[0]=$_->[1]" } @tokens);
is("@seq", join(' ', $seq[0] .. $seq[0] + $#seq),
	'6. tokens t, t + 1, ... t + ' . $#seq . ': strictly increasing by 1');
is(redis_cmd('GET', "$LOCK:fence"), $seq[-1], "6. Redis $LOCK:fence = the last token");
is( join(' ', sort split /\n/, redis_cmd('KEYS', 'lock:*')),
	"$LOCK:fence", '6. only the fencing counter is left in Redis');
my $fence_ttl = redis_cmd('PTTL', "$LOCK:fence");
ok($fence_ttl > 86_000_000 && $fence_ttl <= 86_400_000,
	"6. ... and it expires a day after its last use (PTTL $fence_ttl ms)");

foreach my $node ($A, $B)
{
	is(sq($node, 'SELECT count(*) FROM flashsale.redis_locks()'),
		0, $node->name . ': redis_locks() empty at the end');
}

$A->stop;
$B->stop;
done_testing();
