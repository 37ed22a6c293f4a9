# Upgrades: a database still on extension version 0.1 (the library is
# newer) keeps its queued runs and says why in the log; after
# ALTER EXTENSION retl UPDATE the worker runs them, with the secrets the
# update moved to retl.destination_secrets.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $node = retl_node('upgrade', no_extension => 1);
my $recv = start_receiver();
my $url = $recv->url('/up');

sql($node, "CREATE EXTENSION retl VERSION '0.1'");
is(sql($node, "SELECT extversion FROM pg_extension WHERE extname = 'retl'"), '0.1',
	'the old version is installed');
create_orders($node, 'orders', 25);
sql($node, qq{SELECT retl_create_destination('hook', 'webhook',
  '{"url": "$url", "batch_size": 10, "secret": "hmac-secret-for-upgrade"}')});
create_track_sync($node, 'orders', 'orders', 'hook');
my $log_from = -s $node->logfile;
my $run = sql($node, "SELECT retl_sync_now('orders')");

ok(wait_for(sub {
			substr(slurp_file($node->logfile), $log_from) =~
			  /WARNING:  retl worker idle: extension retl is version 0\.1 in database "postgres", the library is version 0\.5/
		}, 60, 'the version WARNING'),
	'a worker says the extension must be updated');
like(substr(slurp_file($node->logfile), $log_from),
	qr/HINT:  Run ALTER EXTENSION retl UPDATE in that database/, '... with a hint');
is(sql($node, "SELECT status FROM retl.runs WHERE id = $run"), 'queued',
	'the run waits, queued');
is(scalar @{ $recv->all_events(path => '/up') }, 0, 'nothing was sent');

sql($node, 'ALTER EXTENSION retl UPDATE');
is(sql($node, "SELECT extversion FROM pg_extension WHERE extname = 'retl'"), '0.5',
	'ALTER EXTENSION retl UPDATE reaches 0.5');
is(wait_run($node, $run), 'succeeded', 'then the queued run runs and succeeds');
check_ids(event_ids($recv->events(path => '/up')), [ 1 .. 25 ], 'every row once',
	exact => 1);
my $req = $recv->requests->[0];
like($req->{headers}{'x-retl-signature'} // '', qr/^t=\d+,v1=[0-9a-f]{64}$/,
	'requests are signed with the secret the update moved');
is(sql($node, "SELECT config->>'secret' FROM retl.destinations"), '***',
	'which retl.destinations shows as "***"');

done_testing();
