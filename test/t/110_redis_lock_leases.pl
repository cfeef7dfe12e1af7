
# Redis lock leases with a holder that hangs or dies, a force unlock that
# wakes the waiter, and the worker's memory while it renews short leases.
#
# A lease given (lease_ms) is a hard expiry: a holder stopped with SIGSTOP
# loses the lock when it runs out, another session takes it, and the
# holder's transaction, continued (SIGCONT), cannot commit (40001; nothing of
# it commits).  A watchdog lease (lease_ms omitted) is renewed by the
# background worker while the holding backend exists, stopped or not (as
# Redisson's watchdog renews while the JVM lives): the lock stays held; once
# the holder is killed (SIGKILL) nobody renews it and it frees itself when
# the lease runs out.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

redis_start();
my $node = new_node('leases');
ok(poll_sql($node, 'SELECT passes >= 1 FROM flashsale.worker_status', 't', 30), 'worker running');
$node->safe_psql('postgres', q{
CREATE TABLE work (who text);
CREATE FUNCTION timed_lock(name text, lease_ms bigint, wait_ms bigint,
                           OUT token bigint, OUT at float8)
LANGUAGE plpgsql AS $$
BEGIN
    token := flashsale.redis_lock(name, lease_ms, wait_ms);
    at := extract(epoch FROM clock_timestamp());
END
$$;
});

sub sq { return $node->safe_psql('postgres', $_[0]); }

sub session
{
	my $s = $node->background_psql('postgres', on_error_stop => 0, timeout => 60);
	$s->query_safe('\set VERBOSITY verbose');
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	chomp $pid;
	return ($s, $pid);
}

sub info { return sql_row($node, "SELECT * FROM flashsale.redis_lock_info('$_[0]')"); }

# ================================================================ hard lease, holder stopped
my ($h, $hpid) = session();
$h->query_safe("BEGIN");
$h->query_safe("SELECT flashsale.redis_lock('hard', 1500)");
$h->query_safe("INSERT INTO work VALUES ('stopped holder')");
ok(kill('STOP', $hpid), "hard: holder $hpid stopped (SIGSTOP) holding a 1500 ms lease");
my $t0 = time();
my $r = sql_row($node, "SELECT * FROM timed_lock('hard', 30000, 10000)");
ok($r->{token} ne '', 'hard: another session took the lock');
my $after = $r->{at} - $t0;
ok($after >= 1.0 && $after <= 3.0, sprintf('hard: %.2f s after the stop (the lease ran out, not renewed)', $after));
ok(kill('CONT', $hpid), 'hard: holder continued (SIGCONT)');
$h->query('COMMIT');
like($h->{stderr}, qr/ERROR:  40001: Redis lock "hard" was lost before commit/,
	'hard: the holder\'s COMMIT fails with 40001');
is(sq("SELECT count(*) FROM work"), 0, 'hard: nothing of its transaction committed');
$h->{stderr} = '';
is($h->query_safe('SELECT 1'), 1, 'hard: the holder\'s session goes on');

# ================================================================ force unlock wakes the waiter
$h->query_safe("SELECT flashsale.redis_lock_session('forced')");
my ($w, $wpid) = session();
$w->query_until(qr/^go\n/m,
	"\\echo go\nSELECT token IS NOT NULL, at FROM timed_lock('forced', NULL, 20000);\n\\q\n");
ok( wait_until(sub { (info('forced')->{waiters} // '') =~ /:$wpid:/ }, 20),
	'force: the waiter is queued');
my $t_force = time();
is(sq("SELECT flashsale.redis_force_unlock('forced')"), 't', 'force: redis_force_unlock true');
eval { $w->{run}->finish };
my ($got, $at) = split /\|/, (split /\n/, $w->{stdout})[-1];
is($got, 't', 'force: the waiter got the lock');
ok($at - $t_force < 0.5, sprintf('force: %.1f ms after the force unlock (granted, not polled)', ($at - $t_force) * 1000));
$h->query("SELECT flashsale.redis_unlock('forced')");
like($h->{stderr}, qr/FS020/, 'force: the old holder no longer holds it (FS020)');
$h->{stderr} = '';

# ================================================================ the worker's memory
# 8 watchdog leases of 600 ms: a renewal every 200 ms each, for 10 s (short
# enough for 400 renewals, long enough that a busy 2-core machine delaying
# the worker by a few hundred ms does not lose them).
my $worker = (worker_pids($node))[0];
$h->query_safe('SET flashsale.redis_lock_watchdog_lease = 600');
$h->query_safe("SELECT count(flashsale.redis_lock_session('mem' || i)) FROM generate_series(1, 8) i");

sub worker_total
{
	my $offset = -s $node->logfile;
	sq("SELECT pg_log_backend_memory_contexts($worker)");
	my $total;
	wait_until(
		sub {
			my $log = slurp_file($node->logfile, $offset);
			$total = $1 if $log =~ /Grand total: (\d+) bytes/;
			return defined $total;
		},
		20);
	return $total;
}
sleep 1;
my $before = worker_total();
sleep 10;
my $renewed = info('mem1');
my $after_mem = worker_total();
note "worker $worker memory: $before bytes, then $after_mem bytes 10 s later";
ok(defined $before && defined $after_mem, 'memory: two readings of the worker\'s contexts');
cmp_ok(abs($after_mem - $before), '<', 32 * 1024,
	sprintf('memory: flat over 10 s of renewals (%+d bytes)', $after_mem - $before));
is($renewed->{held}, 't', 'memory: the 600 ms leases were renewed meanwhile');

# ================================================================ watchdog lease, holder stopped, then killed
$h->query_safe('SET flashsale.redis_lock_watchdog_lease = 1000');
$h->query_safe("SELECT flashsale.redis_lock_session('watched')");
ok(kill('STOP', $hpid), 'watchdog: holder stopped (SIGSTOP) holding a 1000 ms watchdog lease');
sleep 3;
is(sq("SELECT flashsale.redis_lock('watched', 30000, 0) IS NULL"), 't',
	'watchdog: 3 s later it is still held (the worker renews while the backend exists)');
my $left = info('watched')->{lease_left_ms};
ok($left > 0 && $left <= 1000, "watchdog: lease renewed (left $left ms)");
my $log_offset = -s $node->logfile;
my $t_kill = time();
ok(kill('KILL', $hpid), 'watchdog: holder killed (SIGKILL)');
kill('CONT', $hpid);
ok( wait_until(sub { (redis_cmd('EXISTS', 'lock:{7:watched}') // '') eq '0' }, 10),
	'watchdog: the lock freed itself');
my $freed = time() - $t_kill;
ok($freed <= 2.5, sprintf('watchdog: %.2f s after the kill (its lease, 1 s, unrenewed)', $freed));
$node->wait_for_log(killed_re($hpid), $log_offset);
ok(poll_sql($node, 'SELECT 1', '1', 60), 'back after the crash restart');
eval { $h->{run}->finish };

$node->stop;
done_testing();
