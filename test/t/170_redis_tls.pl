
# TLS towards Redis (flashsale.redis_tls), with a throwaway CA made with
# openssl: a Redis that speaks TLS only and asks for client certificates.
#  - built with hiredis 0.14 (Debian 12), which has no TLS: turning it on is
#    refused (0A000) and nothing else is tested;
#  - built with hiredis 1.x and hiredis_ssl (Debian 13 and later): commands,
#    stock, rate limits and once() work over TLS; the server's certificate is
#    verified against the CA file and the host name (an IP address in its
#    subjectAltName, or flashsale.redis_tls_server_name): another CA, a name
#    the certificate does not carry, no client certificate, or plain TCP to
#    the TLS port are each refused with class 08, saying why.
use strict;
use warnings FATAL => 'all';

use Cwd ();
use FlashsaleTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('tls', create_extension => 1);

my ($ret, $out, $err) = $node->psql('postgres', 'SET flashsale.redis_tls = on',
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
if ($err =~ /flashsale was built without TLS/)
{
	like($err, qr/0A000/, 'built without TLS: turning it on is refused (0A000)');
	like($err, qr/hiredis 0\.\d+, which has no TLS/, '... naming the hiredis it was built with');
	is($node->safe_psql('postgres', 'SHOW flashsale.redis_tls'), 'off', '... and it stays off');
	done_testing();
	exit 0;
}
is($ret, 0, 'built with TLS: flashsale.redis_tls can be turned on');

# ---- a throwaway CA, a server certificate for IP 127.0.0.1 and redis.test, a client certificate
my $dir = Cwd::abs_path(PostgreSQL::Test::Utils::tempdir('tls'));
sub openssl
{
	my @cmd = ('openssl', @_);
	my ($o, $e) = ('', '');
	IPC::Run::run \@cmd, '<', \undef, '>', \$o, '2>', \$e
	  or BAIL_OUT("@cmd: $e");
	return;
}
for my $ca (qw(ca other))
{
	openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
		'-keyout', "$dir/$ca.key", '-out', "$dir/$ca.crt", '-subj', "/CN=flashsale test $ca");
}
PostgreSQL::Test::Utils::append_to_file("$dir/server.ext",
	"subjectAltName=DNS:redis.test,IP:127.0.0.1\n");
for my $who (qw(server client))
{
	openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', "$dir/$who.key",
		'-out', "$dir/$who.csr", '-subj', "/CN=$who");
	openssl('x509', '-req', '-in', "$dir/$who.csr", '-CA', "$dir/ca.crt", '-CAkey', "$dir/ca.key",
		'-CAcreateserial', '-days', '2', '-out', "$dir/$who.crt",
		($who eq 'server' ? ('-extfile', "$dir/server.ext") : ()));
}
ok(-s "$dir/server.crt" && -s "$dir/client.crt", 'a CA, a server and a client certificate');

# ---- Redis on TLS only, client certificates required
my $port = PostgreSQL::Test::Cluster::get_free_port();
my @tlscli = ('--tls', '--cacert', "$dir/ca.crt", '--cert', "$dir/client.crt", '--key', "$dir/client.key");
my $pid;
{
	my ($o, $e) = ('', '');
	IPC::Run::run [ 'redis-server', '--bind', '127.0.0.1', '--port', 0, '--tls-port', $port,
		'--tls-cert-file', "$dir/server.crt", '--tls-key-file', "$dir/server.key",
		'--tls-ca-cert-file', "$dir/ca.crt", '--tls-auth-clients', 'yes',
		'--daemonize', 'yes', '--pidfile', "$dir/redis.pid", '--dir', $dir,
		'--logfile', "$dir/redis.log", '--save', '', '--appendonly', 'no' ], '<', \undef,
	  '>', \$o, '2>', \$e
	  or BAIL_OUT("redis-server with TLS did not start: $e");
	ok( wait_until(
			sub {
				my ($o, $e) = ('', '');
				IPC::Run::run [ 'redis-cli', '-h', '127.0.0.1', '-p', $port, @tlscli, 'PING' ],
				  '<', \undef, '>', \$o, '2>', \$e;
				return $o =~ /PONG/;
			},
			30),
		"Redis answers over TLS on port $port");
	open my $fh, '<', "$dir/redis.pid" or BAIL_OUT("redis.pid: $!");
	chomp($pid = <$fh>);
}
END { kill 'KILL', $pid if $pid; }

$node->append_conf('postgresql.conf', <<"EOF");
flashsale.redis_host = '127.0.0.1'
flashsale.redis_port = $port
flashsale.redis_tls = on
flashsale.redis_tls_ca_file = '$dir/ca.crt'
flashsale.redis_tls_cert_file = '$dir/client.crt'
flashsale.redis_tls_key_file = '$dir/client.key'
flashsale.redis_connect_timeout = 2000
EOF
$node->restart;

is($node->safe_psql('postgres', "SELECT flashsale.redis_call('PING')"), 'PONG', 'PING over TLS');
is($node->safe_psql('postgres', 'SELECT flashsale.set_stock(1, 10); SELECT flashsale.decrement_stock(1)'),
	"\n9", 'stock over TLS: 10 set, one sold, 9 left');
is( $node->safe_psql('postgres',
		"SELECT string_agg(allowed::text, ',') FROM generate_series(1, 3) g, "
		  . "LATERAL (SELECT * FROM flashsale.throttle('tls', 1, 1, '1 hour', 1 + 0 * g) OFFSET 0) t"),
	'true,true,false', 'throttle over TLS');
is($node->safe_psql('postgres',
		"SELECT flashsale.once('tls', '1 hour'), flashsale.once('tls', '1 hour')"),
	't|f', 'once over TLS');

# ---- what is refused, and why
sub refused
{
	my ($settings, $why, $label) = @_;
	my ($r, $o, $e) = $node->psql('postgres', "$settings; SELECT flashsale.redis_call('PING')",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($e, qr/ERROR:  08\d\d\d/, "$label: class 08");
	like($e, $why, "$label: the detail says why");
	return;
}
refused("SET flashsale.redis_tls_ca_file = '$dir/other.crt'",
	qr/certificate was refused: .*(unable to get local issuer|self.signed)/i,
	'a server certificate from another CA');
refused("SET flashsale.redis_tls_server_name = 'wrong.test'",
	qr/certificate was refused: .*hostname mismatch/i, 'a name the certificate does not carry');
is( $node->safe_psql('postgres',
		"SET flashsale.redis_tls_server_name = 'redis.test'; SELECT flashsale.redis_call('PING')"),
	'PONG', 'the DNS name of its subjectAltName, by flashsale.redis_tls_server_name');
refused("SET flashsale.redis_tls_cert_file = ''; SET flashsale.redis_tls_key_file = ''",
	qr/TLS|connection|closed|reset/i, 'no client certificate (tls-auth-clients yes)');
refused("SET flashsale.redis_tls = off", qr/Redis at 127\.0\.0\.1:$port/,
	'plain TCP to the TLS port');

done_testing();
