# TLS and redirects: certificates are verified (a self-signed one fails the
# run), ca_file adds a trusted CA, insecure_skip_verify works but logs a
# WARNING once per run; a redirect is never followed, and the run says why.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

# a self-signed certificate for 127.0.0.1, which is its own CA
my $dir = PostgreSQL::Test::Utils::tempdir();
my ($cert, $key) = ("$dir/cert.pem", "$dir/key.pem");
my ($out, $err);
($out, $err) = run_command([ 'openssl', 'req', '-x509', '-newkey', 'rsa:2048',
	'-nodes', '-keyout', $key, '-out', $cert, '-days', '2',
	'-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1' ]);
ok(-s $cert && -s $key, 'openssl made a certificate for 127.0.0.1') or diag($err);
chmod 0644, $cert, $key;

my $node = retl_node('tls');
my $recv = start_receiver(tls => [ $cert, $key ]);
like($recv->{tls_url}, qr{^https://127\.0\.0\.1:\d+$}, 'the receiver serves HTTPS');
create_orders($node, 'orders', 30);

# Creates a webhook destination and a sync named $name on orders, runs it
# in full, and returns (status, error, run id).
sub run_with
{
	my ($name, $url, %cfg) = @_;
	create_webhook($node, $name, $url, batch_size => 10, max_attempts => 2, %cfg);
	create_track_sync($node, $name, 'orders', $name);
	my $run = sql($node, "SELECT retl_sync_now('$name')");
	my $status = wait_run($node, $run, 60);
	return ($status, sql($node, "SELECT coalesce(error, '') FROM retl.runs WHERE id = $run"),
		$run);
}

# 1. verification on, unknown CA: the run fails with curl's reason
my ($status, $error) = run_with('plain_tls', $recv->{tls_url} . '/v');
is($status, 'failed', 'a self-signed certificate fails the run');
like($error, qr/certificate/i, '... with a certificate error') or diag($error);
is(scalar @{ $recv->events(path => '/v') }, 0, '... and nothing was delivered');

# 2. ca_file trusts it
($status, $error) = run_with('ca_tls', $recv->{tls_url} . '/ca', ca_file => $cert);
is($status, 'succeeded', 'with ca_file the run succeeds') or diag($error);
check_ids(event_ids($recv->events(path => '/ca')), [ 1 .. 30 ], 'every row over TLS',
	exact => 1);

# 3. insecure_skip_verify: works, and warns once per run
my $log_from = -s $node->logfile;
my $run;
($status, $error, $run) = run_with('skip_tls', $recv->{tls_url} . '/skip',
	insecure_skip_verify => JSON::PP::true);
is($status, 'succeeded', 'insecure_skip_verify lets the run through') or diag($error);
my $log = substr(slurp_file($node->logfile), $log_from);
my @warnings = $log =~ /WARNING:  retl run $run of sync "skip_tls": TLS verification is off/g;
is(scalar @warnings, 1, 'one WARNING for the run');
# "each run": the next run of the same sync warns again, once
$log_from = -s $node->logfile;
my $run2 = sql($node, "SELECT retl_force_full('skip_tls')");
is(wait_run($node, $run2, 60), 'succeeded', 'a second insecure_skip_verify run succeeds');
$log = substr(slurp_file($node->logfile), $log_from);
@warnings = $log =~ /WARNING:  retl run $run2 of sync "skip_tls": TLS verification is off/g;
is(scalar @warnings, 1, 'one WARNING for the second run too');

# 4. redirects are not followed, whatever the target
$recv->config({ redirect_to => $recv->url('/elsewhere') });
($status, $error) = run_with('moved', $recv->url('/moved'));
is($status, 'failed', 'a 307 fails the run');
like($error, qr/HTTP 307, a redirect to ".*\/elsewhere", which retl does not follow/,
	'... saying where it pointed and that retl does not follow') or diag($error);
is(scalar @{ $recv->all_events(path => '/elsewhere') }, 0,
	'nothing was sent to the redirect target');
$recv->config({ redirect_to => undef });

done_testing();
