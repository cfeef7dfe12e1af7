
# Rate limits across what a rollback cannot see: a backend killed, Redis hung,
# Redis restarted empty.  A limit errs on the side of admitting fewer:
#  - a backend killed with SIGKILL holding refundable admissions and a once()
#    key: no give-back ever runs, so throttle() keeps counting them and the
#    once() key stays taken until its ttl; throttle_local()'s table went with
#    the crash restart's new shared memory, so its key has a full burst again;
#  - Redis hung (SIGSTOP) when a transaction with give-backs rolls back: the
#    rollback ends within the fixed clean-up deadline (500 ms), not the
#    session's 10 s flashsale.redis_timeout, without an error;
#  - Redis restarted without its data: the keys are gone (README "Known
#    limits"): a full burst, and once() is true again.
use strict;
use warnings FATAL => 'all';

use FlashsaleTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

redis_start();
my $node = new_node('throttle_crash');

# 4 + 1 = a burst of 5; one unit per 1000 hours: nothing comes back during the test
my $LIMIT = "4, 1, '1000 hours'";
sub remaining
{
	my ($fn) = @_;
	return $node->safe_psql('postgres',
		"SELECT remaining FROM flashsale.$fn('crash', $LIMIT, 0)");
}

# ---- a backend killed with give-backs pending
my $s = $node->background_psql('postgres', on_error_stop => 0);
$s->query_safe('BEGIN');
is($s->query_safe("SELECT allowed FROM flashsale.throttle('crash', $LIMIT, 2, true)"),
	't', 'throttle admits 2 (refundable) in an open transaction');
is($s->query_safe("SELECT allowed FROM flashsale.throttle_local('crash', $LIMIT, 2, true)"),
	't', 'throttle_local admits 2 (refundable)');
is($s->query_safe("SELECT flashsale.once('crash', '1 hour')"), 't', 'once() takes the key');
my $pid = $s->query_safe('SELECT pg_backend_pid()');
chomp $pid;
is(remaining('throttle'),       '3', 'throttle: 3 remaining while it is open');
is(remaining('throttle_local'), '3', 'throttle_local: 3 remaining while it is open');

my $log_offset = -s $node->logfile;
ok(kill('KILL', $pid), "kill -9 $pid");
wait_crash_restart($node, $log_offset, $pid);
ok(poll_sql($node, 'SELECT 1', '1', 60), 'node accepts connections after the crash restart');
eval { $s->quit };

is(remaining('throttle'), '3', 'throttle: the killed transaction\'s 2 still count (no give-back ran)');
is($node->safe_psql('postgres', "SELECT flashsale.once('crash', '1 hour')"),
	'f', 'once(): the killed transaction\'s key is still taken');
is(remaining('throttle_local'), '5',
	'throttle_local: the crash restart\'s new shared memory forgot the key (a full burst)');

# ---- a rollback while Redis is hung: bounded by the clean-up deadline
$s = $node->background_psql('postgres', on_error_stop => 0);
$s->query_safe("SET flashsale.redis_timeout = '10s'");
$s->query_safe('BEGIN');
is($s->query_safe("SELECT allowed FROM flashsale.throttle('hung', $LIMIT, 1, true)"),
	't', 'an admission to give back');
is($s->query_safe("SELECT flashsale.once('hung', '1 hour')"), 't', 'a once() key to release');
ok(kill('STOP', redis_pid()), 'Redis stopped (SIGSTOP)');
my $t0 = time();
my (undef, $failed) = $s->query('ROLLBACK');
my $ms = int((time() - $t0) * 1000);
ok(kill('CONT', redis_pid()), 'Redis continued (SIGCONT)');
is($failed, 0, 'the rollback raised nothing');
cmp_ok($ms, '<', 3000, "the rollback took $ms ms: the 500 ms clean-up deadline, not the 10 s timeout");
is($s->query_safe('SELECT 1'), '1', 'the session goes on');
$s->quit;

# ---- Redis restarted empty (no persistence): limits are forgotten
redis_restart();
is(remaining('throttle'), '5', 'throttle: Redis lost the key: a full burst again');
is($node->safe_psql('postgres', "SELECT flashsale.once('crash', '1 hour')"),
	't', 'once(): Redis lost the key: true again');

done_testing();
