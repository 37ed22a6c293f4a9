# The end of a run locks its sync's row before its own, in the order of
# the API (retl_drop_sync, retl_stop and retl_sync_now lock the sync, then
# its run).  Recording the end updates the run twice in one transaction,
# and the second UPDATE rechecks the run's foreign key, which locks the
# sync's row: when the run's row was taken first, a retl_drop_sync that
# held the sync and waited for the run deadlocked with the worker (seen in
# the privileges regress test).
#
# Here a session holds the sync's row while the run ends: the worker waits
# for it, holding nothing of the run, so the session can then lock the run
# (NOWAIT, as retl_drop_sync would next) and commit; the run succeeds.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $node = retl_node('finishlock');
my $recv = start_receiver();
create_orders($node, 'orders', 20);
create_webhook($node, 'd', $recv->url('/hook'), batch_size => 50, max_in_flight => 1);
create_track_sync($node, 's', 'orders', 'd');

# one request, answered after 3 s: the run ends once it is answered
$recv->config({ delay_ms => 3000 });
my $run = sql($node, "SELECT retl_sync_now('s')");
$recv->wait_requests(1, 60, 'the run sends its one request');

my $a = $node->background_psql('postgres', on_error_stop => 0);
$a->query_safe('BEGIN');
$a->query_safe("SELECT 1 FROM retl.syncs WHERE name = 's' FOR UPDATE");
ok(wait_for(sub {
			sql($node, q{SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
				WHERE a.backend_type = 'retl worker' AND NOT l.granted}) > 0
		}, 60, 'the worker to wait for the sync row'),
	'the end of the run waits for the session that holds the sync');
my $locked = $a->query("SELECT 'run ' || id FROM retl.runs WHERE id = $run FOR UPDATE NOWAIT");
like($locked, qr/^run $run$/,
	'meanwhile the run row is not locked by the worker: the session locks it at once')
  or diag("stderr: $a->{stderr}");
$a->query_safe('COMMIT');
$a->quit;
is(wait_run($node, $run), 'succeeded', 'then the run ends, succeeded');
is(sql($node, "SELECT cursor_run_id FROM retl.syncs WHERE name = 's'"), $run,
	'and the sync cursor is the run\'s');
unlike(slurp_file($node->logfile), qr/deadlock detected/, 'no deadlock');

done_testing();
