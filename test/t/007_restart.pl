# The server restarts while a run is queued (or running), and the run
# executes afterwards.
#
# 1. Queued: with max_worker_processes = 1 the launcher has no slot for a
#    worker, so the run stays queued.  The server stops in immediate mode
#    (a crash: the queued run must have been WAL-logged), restarts with
#    free slots, and the run succeeds.
# 2. Running and queued: the receiver hangs, so a run stays running; a
#    second retl_sync_now returns its id and retl_force_full queues a full
#    run behind it.  The server stops in fast mode and restarts, the
#    receiver recovers, and both runs succeed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $node = retl_node('restart', conf => qq{
max_worker_processes = 1
max_logical_replication_workers = 0
});
my $recv = start_receiver();

sub restart
{
	my ($mode) = @_;
	if (!$node->stop($mode, fail_ok => 1))
	{
		fail("pg_ctl stop -m $mode");
		$node->stop('immediate');
	}
	$node->start;
	return;
}

# ---------------------------------------------------------------------
# 1. A run queued at an immediate shutdown.
# ---------------------------------------------------------------------
create_orders($node, 'q_orders', 500);
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 50, max_in_flight => 2);
create_track_sync($node, 'sq', 'q_orders', 'd');

my $runQ = sql($node, "SELECT retl_sync_now('sq')");
# Several naptimes (1 s) pass: the launcher rescans, and still nothing
# may have started the run.
sleep(4);
is( sql($node,
		"SELECT status || ' ' || (started_at IS NULL) FROM retl.runs WHERE id = $runQ"),
	'queued true',
	'1: after four naptimes without a free worker slot the run is still queued, never started');
my $stopped_at = sql($node, "SELECT clock_timestamp()");

$node->stop('immediate');
$node->adjust_conf('postgresql.conf', 'max_worker_processes', '16');
$node->start;

is(wait_run($node, $runQ), 'succeeded', '1: the queued run executed after the restart');
my $rQ = run_row($node, $runQ);
is($rQ->{kind}, 'full', '1: it is full');
is(sql($node, "SELECT started_at > '$stopped_at' FROM retl.runs WHERE id = $runQ"),
	't', '1: it started after the restart');
is($rQ->{events_succeeded}, 500, '1: events_succeeded = 500');
check_ids(event_ids($recv->events(run_id => $runQ)), [ 1 .. 500 ],
	'1: every row arrived once');

# ---------------------------------------------------------------------
# 2. A running run and a queued one at a fast shutdown.
# ---------------------------------------------------------------------
my $N = 300;
create_orders($node, 'orders', $N);
create_track_sync($node, 's', 'orders', 'd');
my $run0 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run0), 'succeeded', '2: first (full) run succeeded');

sql($node, "UPDATE orders SET version = 2");
$recv->reset;
$recv->config({ hang => 1 });

my $runA = sql($node, "SELECT retl_sync_now('s')");
$recv->wait_requests(1, 120, 'a delivery of the incremental run');
is(sql($node, "SELECT status FROM retl.runs WHERE id = $runA"), 'running',
	'2: run A is running (its requests hang)');
is(sql($node, "SELECT retl_sync_now('s')"), $runA,
	'2: retl_sync_now while it runs returns its id');
my $runF = sql($node, "SELECT retl_force_full('s')");
isnt($runF, $runA, '2: retl_force_full queues a full run behind it');
is(sql($node, "SELECT status || ' ' || kind FROM retl.runs WHERE id = $runF"),
	'queued full', '2: the full run is queued');

restart('fast');
$recv->config({ hang => 0 });

is(wait_run($node, $runA), 'succeeded', '2: run A resumed after the restart and succeeded');
is(wait_run($node, $runF), 'succeeded', '2: the queued full run executed after the restart');
is(run_row($node, $runA)->{kind}, 'incremental', '2: run A is still incremental');
is(run_row($node, $runF)->{kind}, 'full', '2: run F is still full');
check_ids_at_least(event_ids($recv->events(run_id => $runA)), [ 1 .. $N ],
	'2: run A delivered every updated row');
check_ids(event_ids($recv->events(run_id => $runF)), [ 1 .. $N ],
	'2: run F delivered every row once');
my @old = grep { (dig($_, 'properties', 'version') // 0) != 2 } @{ $recv->events };
ok(!@old, '2: every event carries the updated rows');

stop_ok($node);

done_testing();
