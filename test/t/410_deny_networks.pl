# retl.deny_networks (issue 12, item 2): a superuser-only list of networks
# (CIDR) that destinations may not reach, checked where
# retl.deny_private_networks is: address literals in the URL when the
# destination is created and before every request, and the addresses a
# host name resolves to.  IPv4-mapped IPv6 addresses are refused as their
# IPv4 address.  A bad CIDR is refused when the setting is set.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $node = retl_node('denynets');
my $recv = start_receiver();
my $port = $recv->{port};
create_orders($node, 'orders', 10);
# retl_user exists since 0.4 (CREATE EXTENSION creates it); created here
# if missing, so that the test also runs, and fails, on older builds
sql($node, q{DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'retl_user')
  THEN CREATE ROLE retl_user; END IF; END $$});
my $HARDENED = '127.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, ::1, fc00::/7';

is(sql($node, 'SHOW retl.deny_networks'), '', 'retl.deny_networks is empty by default');
is(sql($node, q{SELECT context FROM pg_settings WHERE name = 'retl.deny_networks'}),
	'superuser', 'its context is superuser (PGC_SUSET)');
sql($node, 'CREATE ROLE mallory LOGIN IN ROLE retl_user');
fails_as($node, 'mallory', q{SET retl.deny_networks = ''}, '42501',
	'a non-superuser cannot SET retl.deny_networks');

# a bad CIDR is refused with a clear error
for my $bad ('10.0.0.0/33', '10.0.0.1/8', 'localhost', '::1/129', '10.0.0.0/8, fc00::/7x')
{
	my $err = fails_as($node, undef, "SET retl.deny_networks = '$bad'", '22023',
		"SET retl.deny_networks = '$bad'");
	like($err, qr/invalid value for parameter "retl\.deny_networks".*DETAIL:\s+".*" (is not a network in CIDR notation|has bits set to the right of its prefix length)/s,
		'... names the bad network') or diag($err);
}
my ($rc, $out, $err) = psql_as($node, undef,
	"SET retl.deny_networks = '$HARDENED'; SHOW retl.deny_networks");
is($rc, 0, 'the hardened list is a valid setting') or diag($err);

# a destination created before the setting, to the receiver's loopback address
create_webhook($node, 'd_before', "http://127.0.0.1:$port/before");
create_track_sync($node, 's_before', 'orders', 'd_before');
my $run = sql($node, q{SELECT retl_sync_now('s_before')});
is(wait_run($node, $run), 'succeeded', 'before the setting, loopback is reachable');

set_system($node, 'retl.deny_networks', $HARDENED);

# address literals: refused at create time, IPv4-mapped too
for my $u ("http://127.0.0.1:$port/x", "http://10.1.2.3:$port/x",
	"http://[::1]:$port/x", "http://[::ffff:127.0.0.1]:$port/x",
	"http://[fd12::1]:$port/x", "http://2130706433:$port/x")
{
	my $e = fails_as($node, 'mallory',
		qq{SELECT retl_create_destination('d_lit', 'webhook', '{"url": "$u"}')}, '42501',
		"a destination at $u");
	like($e, qr/retl\.deny_networks/, '... names retl.deny_networks') or diag($e);
}
($rc, $out, $err) = psql_as($node, 'mallory',
	qq{SELECT retl_create_destination('d_public', 'webhook', '{"url": "http://192.0.2.1:$port/x"}')});
is($rc, 0, 'an address outside the list is accepted') or diag($err);

# the destination created before: refused before every request now
my $before = scalar @{ $recv->events(path => '/before') };
$run = sql($node, q{SELECT retl_force_full('s_before')});
is(wait_run($node, $run), 'failed', 'the old destination at 127.0.0.1 fails its run');
like(run_row($node, $run)->{error} // '', qr/retl\.deny_networks/,
	'its error names retl.deny_networks');
is(scalar @{ $recv->events(path => '/before') }, $before, 'and nothing was sent');

# a host name that resolves to loopback: refused once resolved
sql($node, 'GRANT SELECT ON orders TO mallory');
($rc, $out, $err) = psql_as($node, 'mallory', qq{
SELECT retl_create_destination('d_name', 'webhook', '{"url": "http://localhost:$port/name"}');
SELECT retl_create_sync('s_name', 'orders', 'd_name', 'track',
  '{"userId": "user_id", "event": {"value": "E"}}', 'id');});
is($rc, 0, 'a host name is accepted at create time (it is checked once resolved)')
  or diag($err);
($rc, $run, $err) = psql_as($node, 'mallory', q{SELECT retl_sync_now('s_name')});
is(wait_run($node, $run), 'failed', 'its run fails');
like(run_row($node, $run)->{error} // '', qr/resolved to .*retl\.deny_networks/,
	'its error says the name resolved into a refused network');
is(scalar @{ $recv->events(path => '/name') }, 0, 'nothing was sent to localhost');

# retl.deny_private_networks keeps its meaning next to it
set_system($node, 'retl.deny_networks', '10.0.0.0/8');
$run = sql($node, q{SELECT retl_force_full('s_before')});
is(wait_run($node, $run), 'succeeded', 'loopback is reachable again once out of the list');
sql($node, 'ALTER SYSTEM SET retl.deny_private_networks = on');
set_system($node, 'retl.deny_networks', undef);
my $e = fails_as($node, undef,
	q{SELECT retl_create_destination('d_md', 'webhook', '{"url": "http://169.254.169.254/x"}')},
	'42501', 'with deny_private_networks, the metadata address');
like($e, qr/retl\.deny_private_networks/, '... is refused by retl.deny_private_networks')
  or diag($e);

done_testing();
