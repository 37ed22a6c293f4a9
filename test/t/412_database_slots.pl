# Database slots are freed (issue 12, item 4): retl has 64 shared-memory
# slots, one per database with a worker or asking for one.  A slot is
# freed when the database's worker exits with no work or the database is
# gone, so databases beyond the 64th get a worker: here 66 databases, one
# after the other, each created, synced and dropped.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $node = retl_node('dbslots');
my $recv = start_receiver();
my $url = $recv->url('/db');
my $N = 66;

my $ok = 0;
for my $i (1 .. $N)
{
	my $db = "slot_$i";
	sql($node, "CREATE DATABASE $db");
	my $run = $node->safe_psql($db, qq{
CREATE EXTENSION retl;
CREATE TABLE t (id int PRIMARY KEY, user_id text);
INSERT INTO t VALUES (1, 'u$i');
SELECT retl_create_destination('d', 'webhook', '{"url": "$url"}');
SELECT retl_create_sync('s', 't', 'd', 'track',
  '{"userId": "user_id", "event": {"value": "E"}}', 'id');
SELECT retl_sync_now('s');});
	$run = (split /\n/, $run)[-1];
	my $status = wait_run_db($node, $db, $run, 60);
	# DROP DATABASE waits (up to 5 s) for the worker, which leaves at once
	sql($node, "DROP DATABASE $db");
	if ($status ne 'succeeded')
	{
		fail("the run of database $i (of $N) succeeded (status '$status')");
		last;
	}
	$ok++;
}
is($ok, $N, "every one of $N databases, one after the other, got a worker");
is(scalar @{ $recv->events(path => '/db') }, $ok, 'and sent its event');

# no slot is left to dropped databases
wait_for(sub { sql($node, 'SELECT count(*) FROM retl.workers WHERE database IS NULL') eq '0' },
	60, 'the slots of dropped databases to be freed');
cmp_ok(sql($node, 'SELECT count(*) FROM retl.workers'), '<=', 2,
	'retl.workers lists at most the live databases');
done_testing();
