# Idle workers make room (issue 12, item 6): with every background worker
# slot taken, a database with a queued run waits; the launcher asks idle
# workers to exit at once instead of their minute of idleness, logs the
# wait at a limited rate, and retl.workers shows the waiting database.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

# the launcher and three workers; no parallel or logical replication
# workers to take slots
my $node = retl_node('idleworkers', conf => qq{
max_worker_processes = 4
max_logical_replication_workers = 0
max_parallel_workers_per_gather = 0
max_parallel_maintenance_workers = 0
});
my $recv = start_receiver();
my @dbs = map { "busy_$_" } 1 .. 4;
for my $db (@dbs)
{
	my $url = $recv->url("/$db");
	sql($node, "CREATE DATABASE $db");
	$node->safe_psql($db, qq{
CREATE EXTENSION retl;
CREATE TABLE t (id int PRIMARY KEY, user_id text);
INSERT INTO t SELECT g, 'u' || g FROM generate_series(1, 5) g;
SELECT retl_create_destination('d', 'webhook', '{"url": "$url", "timeout_ms": 600000}');
SELECT retl_create_sync('s', 't', 'd', 'track',
  '{"userId": "user_id", "event": {"value": "E"}}', 'id');});
}

# a query of retl.workers; '' when it fails (before 0.4 there is no view)
sub workers
{
	my ($query) = @_;
	my ($rc, $out) = $node->psql('postgres', $query);
	return $rc == 0 ? $out // '' : '';
}

sub queue
{
	my ($db, $call) = @_;
	my $out = $node->safe_psql($db, "SELECT $call('s')");
	return (split /\n/, $out)[-1];
}

# three databases' runs hang at the receiver: every worker slot is busy
$recv->config({ hang => JSON::PP::true });
my %run;
for my $db (@dbs[0 .. 2])
{
	$run{$db} = queue($db, 'retl_sync_now');
	wait_for(
		sub {
			$node->safe_psql($db, "SELECT status FROM retl.runs WHERE id = $run{$db}")
			  eq 'running';
		},
		60, "the run of $db to be running");
}

# the fourth waits for a slot, and shows so
$run{ $dbs[3] } = queue($dbs[3], 'retl_sync_now');
wait_for(
	sub {
		workers("SELECT state || ' ' || (waiting_since IS NOT NULL) FROM retl.workers"
			  . " WHERE database = '$dbs[3]'") eq 'waiting true';
	},
	60, "retl.workers to show $dbs[3] waiting")
  or diag(workers('SELECT * FROM retl.workers'));
is(workers("SELECT count(*) FROM retl.workers WHERE state = 'running'"), '3',
	'three workers are running');
wait_for(sub { slurp_file($node->logfile) =~ /could not start a worker for database \d+: no free background worker slot/ },
	60, 'the launcher to log the wait');

# the runs end; their idle workers leave at once for the waiting database
$recv->config({ hang => undef });
for my $db (@dbs[0 .. 2])
{
	is(wait_run_db($node, $db, $run{$db}, 60), 'succeeded', "the run of $db succeeds");
}
is(wait_run_db($node, $dbs[3], $run{ $dbs[3] }, 40), 'succeeded',
	"the waiting database's run succeeds well before idle workers would time out (60 s)");
ok(slurp_file($node->logfile) =~ /retl worker exiting while idle: another database waits/,
	'an idle worker left to make room');
is(workers("SELECT count(*) FROM retl.workers WHERE state = 'waiting'"), '0',
	'no database waits any more');

# the wait is logged at a limited rate: once here
my @lines = (slurp_file($node->logfile) =~ /no free background worker slot/g);
cmp_ok(scalar @lines, '<=', 2, 'the launcher logged the wait at a limited rate');
done_testing();
