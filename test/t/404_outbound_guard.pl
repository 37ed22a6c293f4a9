# retl.deny_private_networks (default off, superuser only): with it on,
# destinations at link-local and cloud metadata addresses (169.254.0.0/16,
# fe80::/10, fd00:ec2::254, also written as IPv4-mapped IPv6) are refused:
# an address literal at create time and before every request, with an
# error that names it; a host name once resolved, and on a connection kept
# alive from before the setting was turned on.  Loopback still works.
# With it off, the same destinations are delivered to.
#
# Requests that the guard lets through must never leave the machine, so
# the test re-executes itself in new user, network and mount namespaces
# (unshare from util-linux, unprivileged): lo is the only interface and
# carries 169.254.169.254 and fd00:ec2::254, /etc/hosts (bind-mounted)
# names them metadata.test and metadata6.test, and a receiver listens on
# every local address.  Where namespaces are not available the test fails,
# unless RETL_404_NETNS=0 says to run only the checks that send nothing
# (the others are then skipped, and test/check reports them as skipped).
use strict;
use warnings;

my @NS_SETUP;

BEGIN
{
	@NS_SETUP = (
		[qw(ip link set lo up)],
		[qw(ip addr add 169.254.169.254/32 dev lo)],
		[qw(ip -6 addr add fd00:ec2::254/128 dev lo)],
	);
	my @unshare = qw(unshare --map-current-user --keep-caps --net --mount --);
	if (!defined $ENV{RETL_404_NETNS})
	{
		# probe: the same setup in a throw-away namespace
		my $probe = join(' && ', map { join(' ', @$_) } @NS_SETUP,
			[qw(mount --bind /etc/hosts /etc/hosts)]);
		if (system(@unshare, 'sh', '-c', "$probe >/dev/null 2>&1") == 0)
		{
			$ENV{RETL_404_NETNS} = 1;
			exec(@unshare, $^X, (map { "-I$_" } grep { !ref } @INC), $0, @ARGV);
		}
		$ENV{RETL_404_NETNS} = 0;
		$ENV{RETL_404_NO_NETNS_FOUND} = 1;
	}
}

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $NETNS = $ENV{RETL_404_NETNS};
my $metadata_recv;

if ($NETNS)
{
	for my $cmd (@NS_SETUP)
	{
		system(@$cmd) == 0 or die "in the network namespace: @$cmd failed";
	}
	my $hosts = PostgreSQL::Test::Utils::tempdir() . '/hosts';
	open my $fh, '>', $hosts or die "$hosts: $!";
	print $fh "127.0.0.1 localhost\n169.254.169.254 metadata.test\n"
	  . "fd00:ec2::254 metadata6.test\n";
	close $fh;
	system('mount', '--bind', $hosts, '/etc/hosts') == 0
	  or die "in the mount namespace: mount --bind $hosts /etc/hosts failed";
	note('in new network and mount namespaces: lo carries 169.254.169.254 '
		  . 'and fd00:ec2::254');
	$metadata_recv = start_receiver(any_address => 1);
}
else
{
	diag('no user/network namespaces (unshare): the checks that would send '
		  . 'requests to link-local or metadata addresses are skipped');
}
# Only an explicit RETL_404_NETNS=0 may skip them: a machine that cannot
# make the namespaces fails here.
ok( $NETNS || !$ENV{RETL_404_NO_NETNS_FOUND},
	'user/network namespaces are available (or RETL_404_NETNS=0 opts out)')
  or diag('unshare --map-current-user --net --mount failed; set RETL_404_NETNS=0 '
	  . 'to run only the checks that send nothing');

my $node = retl_node('guard');
my $recv = start_receiver();

sub create_dest_sql
{
	my ($name, $url) = @_;
	return "SELECT retl_create_destination('$name', 'webhook', "
	  . qq{'{"url": "$url", "batch_size": 10, "timeout_ms": 10000, "max_attempts": 2}'::jsonb)};
}

# Deliveries (any answer) that reached a path of a receiver.
sub deliveries
{
	my ($r, $path) = @_;
	return scalar grep { $_->{path} eq $path } @{ $r->requests };
}

create_orders($node, 'orders', 5);

# ---------------------------------------------------------------------
# 1. The GUC: off by default, superuser only.
# ---------------------------------------------------------------------
is(sql($node, 'SHOW retl.deny_private_networks'), 'off',
	'retl.deny_private_networks is off by default');
is(sql($node, "SELECT context FROM pg_settings "
	  . "WHERE name = 'retl.deny_private_networks'"),
	'superuser', 'its context is superuser (PGC_SUSET)');

sql($node, 'CREATE ROLE mallory LOGIN');
for my $v ('on', 'off')
{
	my ($rc, $out, $err) = psql_as($node, 'mallory',
		"SET retl.deny_private_networks = $v");
	isnt($rc, 0, "a non-superuser cannot SET retl.deny_private_networks = $v");
	like($err, qr/42501/, '... SQLSTATE 42501') or diag($err);
	like($err, qr/permission denied to set parameter "retl\.deny_private_networks"/,
		'... permission denied to set the parameter') or diag($err);
}
my ($rc, $out, $err) = psql_as($node, 'mallory',
	'ALTER ROLE mallory SET retl.deny_private_networks = off');
isnt($rc, 0, 'a non-superuser cannot ALTER ROLE ... SET it either');
like($err, qr/42501/, '... SQLSTATE 42501') or diag($err);
($rc, $out, $err) = psql_as($node, undef,
	"SET retl.deny_private_networks = on; SHOW retl.deny_private_networks");
is($rc, 0, 'a superuser can SET it') or diag($err);

# ---------------------------------------------------------------------
# 2. Off: destinations at these addresses are created and delivered to.
#    (Only inside the namespaces, where they are local.)
# ---------------------------------------------------------------------
my %url;
if ($NETNS)
{
	my $p = $metadata_recv->{port};
	%url = (
		v4 => "http://169.254.169.254:$p/v4",
		v6 => "http://[fd00:ec2::254]:$p/v6",
		mapped => "http://[::ffff:169.254.169.254]:$p/mapped",
		name => "http://metadata.test:$p/name",
	);
}

SKIP:
{
	skip 'needs user/network namespaces', 12 unless $NETNS;
	for my $k (qw(v4 v6 mapped name))
	{
		sql($node, create_dest_sql("d_$k", $url{$k}));
		create_track_sync($node, "s_$k", 'orders', "d_$k");
		my $run = sql($node, "SELECT retl_sync_now('s_$k')");
		is(wait_run($node, $run, 60), 'succeeded',
			"off: a run to $url{$k} succeeds");
		is(scalar @{ $metadata_recv->events(path => "/$k") }, 5,
			'... and its 5 events arrived');
		is(run_row($node, $run)->{error}, undef, '... with no error');
	}
}

# ---------------------------------------------------------------------
# 3. On: address literals are refused at create time, naming the address.
# ---------------------------------------------------------------------
ok(set_system($node, 'retl.deny_private_networks', 'on'),
	'retl.deny_private_networks turned on (ALTER SYSTEM, reload)');

my $port = $NETNS ? $metadata_recv->{port} : $recv->{port};
my @refused = (
	[ "http://169.254.169.254:$port/x", '169.254.169.254' ],
	[ "http://169.254.0.1:$port/x", '169.254.0.1' ],
	[ "https://169.254.169.254/latest/meta-data/", '169.254.169.254' ],
	[ "http://[fd00:ec2::254]:$port/x", '[fd00:ec2::254]' ],
	[ "http://[FD00:EC2:0:0:0:0:0:254]:$port/x", '[fd00:ec2::254]' ],
	[ "http://[::ffff:169.254.169.254]:$port/x", '[::ffff:169.254.169.254]' ],
	[ "http://[::ffff:a9fe:a9fe]:$port/x", '[::ffff:a9fe:a9fe]' ],
	[ "http://[::169.254.169.254]:$port/x", '[::169.254.169.254]' ],
	[ "http://[64:ff9b::169.254.169.254]:$port/x", '[64:ff9b::a9fe:a9fe]' ],
	[ "http://[fe80::1%25lo]:$port/x", '[fe80::1]' ],
	[ "http://2852039166:$port/x", '169.254.169.254' ],
	[ "http://0xa9fea9fe:$port/x", '169.254.169.254' ],
);
my $i = 0;
for my $case (@refused)
{
	my ($u, $shown) = @$case;
	$i++;
	($rc, $out, $err) = psql_as($node, undef, create_dest_sql("d_bad$i", $u));
	isnt($rc, 0, "on: creating a destination at $u fails");
	like($err, qr/42501/, '... SQLSTATE 42501') or diag($err);
	like($err, qr/destination address "\Q$shown\E".*retl\.deny_private_networks/,
		"... naming the address $shown and the setting") or diag($err);
}
is(sql($node, "SELECT count(*) FROM retl.destinations WHERE name LIKE 'd_bad%'"),
	'0', '... and none was created');

# A host name is only known once resolved: it is created, then refused
# when a request would connect.
($rc, $out, $err) = psql_as($node, undef,
	create_dest_sql('d_name6', "http://metadata6.test:$port/name6"));
is($rc, 0, 'on: a destination at a host name is created (resolved at send time)')
  or diag($err);
create_track_sync($node, 's_name6', 'orders', 'd_name6');

# Loopback still works.
sql($node, create_dest_sql('d_lo', $recv->url('/lo')));
create_track_sync($node, 's_lo', 'orders', 'd_lo');
my $run = sql($node, "SELECT retl_sync_now('s_lo')");
is(wait_run($node, $run, 60), 'succeeded', 'on: a run to 127.0.0.1 succeeds');
check_ids(event_ids($recv->events(path => '/lo'), 'amount'),
	[ map { ($_ % 1000) + 0.25 } 1 .. 5 ], '... and delivers every row once');

# ---------------------------------------------------------------------
# 4. On: requests are refused at send time, before anything is sent.
# ---------------------------------------------------------------------
SKIP:
{
	skip 'needs user/network namespaces', 19 unless $NETNS;

	# destinations created while it was off: the address literals
	for my $k (qw(v4 v6 mapped))
	{
		my $before = deliveries($metadata_recv, "/$k");
		$run = sql($node, "SELECT retl_force_full('s_$k')");
		is(wait_run($node, $run, 60), 'failed',
			"on: the next run to $url{$k} fails");
		my $error = run_row($node, $run)->{error} // '';
		my ($host) = $url{$k} =~ m{^http://([^/]+):\d+/};
		like($error, qr/"\Q$host\E".*retl\.deny_private_networks/,
			"... with an error naming $host and retl.deny_private_networks");
		is(deliveries($metadata_recv, "/$k"), $before,
			'... and no request reached the address');
	}

	# a host name whose connection from the run while off may still be
	# alive in the worker: the pre-request check refuses it
	my $before = deliveries($metadata_recv, '/name');
	$run = sql($node, "SELECT retl_force_full('s_name')");
	is(wait_run($node, $run, 60), 'failed',
		"on: the next run to $url{name} (-> 169.254.169.254) fails");
	like(run_row($node, $run)->{error} // '', qr/retl\.deny_private_networks/,
		'... with an error naming retl.deny_private_networks');
	is(deliveries($metadata_recv, '/name'), $before,
		'... and no request reached the address (no kept-alive connection used)');

	# a host name never connected to: refused when the socket would open
	$run = sql($node, "SELECT retl_sync_now('s_name6')");
	is(wait_run($node, $run, 60), 'failed',
		'on: a run to metadata6.test (-> fd00:ec2::254) fails');
	like(run_row($node, $run)->{error} // '', qr/retl\.deny_private_networks/,
		'... with an error naming retl.deny_private_networks');
	is(deliveries($metadata_recv, '/name6'), 0, '... and sent nothing');

	# off again: delivered to again
	ok(set_system($node, 'retl.deny_private_networks', undef),
		'retl.deny_private_networks reset to off');
	$run = sql($node, "SELECT retl_force_full('s_v4')");
	is(wait_run($node, $run, 60), 'succeeded',
		"off again: a run to $url{v4} succeeds");
	$run = sql($node, "SELECT retl_force_full('s_name6')");
	is(wait_run($node, $run, 60), 'succeeded',
		'off again: a run to metadata6.test succeeds');
	# the failed run's events are sent again first: duplicates are expected
	check_ids(event_ids($metadata_recv->events(path => '/name6'), 'amount'),
		[ map { ($_ % 1000) + 0.25 } 1 .. 5 ],
		'... and its events arrived', exact => 0);
}

stop_ok($node);

done_testing();
