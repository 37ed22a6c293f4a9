# retl_stop while the receiver is slow: the run drains and ends 'stopped';
# the next run is of the same kind, resumes from the stopped run's
# checkpoint (it reads only the rows after it, and the rows both runs
# sent are at most 2 x max_in_flight x batch_size), and every row
# arrives.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $N = 2000;
my $B = 50;                    # batch_size: a span (a block, 90 rows) and a
my $M = 2;                     # batch fit the window of 2 x M x B
my $BOUND = 2 * $M * $B;
# Rows delivered before the stop: several spans, so the checkpoint moves.
my $BEFORE = 400;

my $node = retl_node('stop');
my $recv = start_receiver();

create_orders($node, 'orders', $N);
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => $B, max_in_flight => $M);
create_track_sync($node, 's', 'orders', 'd');

# Checks that run $next resumed from the stopped run $stopped: every row
# of @$rows arrived (in either run), $next sent each at most once, and the
# rows both runs sent (what the resume sent again) are at most $BOUND.
sub resumed_ok
{
	my ($stopped, $next, $rows, $label) = @_;
	my @first = grep { defined } @{ event_ids($recv->events(run_id => $stopped)) };
	my @second = grep { defined } @{ event_ids($recv->events(run_id => $next)) };
	check_ids([ @first, @second ], $rows, "$label: every row arrived, in one run or the other",
		exact => 0);
	my %seen;
	ok(!grep({ $seen{$_}++ } @second), "$label: sent each row at most once");
	my %in_first = map { $_ => 1 } @first;
	my $again = grep { $in_first{$_} } @second;
	cmp_ok($again, '<=', $BOUND,
		"$label: resumed from the checkpoint: rows sent again <= 2 x max_in_flight x batch_size "
		  . "($again of " . scalar(@first) . " the stopped run delivered)");
	cmp_ok(run_row($node, $next)->{rows_read}, '<', scalar @$rows,
		"$label: read less than every row");
	return;
}

# Stops the active run of sync 's'; returns (id returned by retl_stop,
# run status and next_run_kind seen inside the stopping transaction).
sub stop_sync
{
	my $out = sql($node, q{
BEGIN;
SELECT retl_stop('s');
SELECT status FROM retl.runs WHERE id = (SELECT max(id) FROM retl.runs WHERE sync_name = 's');
SELECT next_run_kind FROM retl.sync_status WHERE sync = 's';
COMMIT;});
	return split /\n/, $out;
}

# ---------------------------------------------------------------------
# A. A stopped full run; the next run, requested during the drain, is full.
# ---------------------------------------------------------------------
$recv->config({ delay_ms => 300 });
my $runA = sql($node, "SELECT retl_sync_now('s')");
$recv->wait_events($BEFORE, 120, 'the full run to deliver its first batches');
wait_for(sub { sql($node, "SELECT (checkpoint->>'pos')::bigint > 0 FROM retl.runs WHERE id = $runA") eq 't' },
	60, 'run A to record a checkpoint');
is(run_row($node, $runA)->{status}, 'running', 'run A is running');

my ($stopped, $status_in_tx, $next_kind) = stop_sync();
is($stopped, $runA, 'retl_stop returns the id of the running run');
is($status_in_tx, 'stopping', 'retl_stop sets the run to stopping');
is($next_kind, 'full', 'after a stopped first run the next run is full');

# Requested during the drain: must wait for it.
$recv->config({ delay_ms => 0 });
my $runB = sql($node, "SELECT retl_sync_now('s')");
isnt($runB, $runA, 'retl_sync_now during the drain queues a new run');

is(wait_run($node, $runA), 'stopped', 'run A ends stopped');
note('statuses seen for run A: '
	  . join(' -> ', @{ $RetlTest::SEEN_STATUSES{$runA} }));
my $rA = run_row($node, $runA);
ok(defined $rA->{finished_at}, 'run A has finished_at');
cmp_ok($rA->{events_sent}, '<', $N, 'run A stopped before sending everything');
is($rA->{events_succeeded} + $rA->{events_failed}, $rA->{events_sent},
	'run A: the outcome of every request sent is recorded (drained)');
is($rA->{events_succeeded}, scalar @{ $recv->events(run_id => $runA) },
	'run A: events_succeeded = events the receiver acknowledged');

is(wait_run($node, $runB), 'succeeded', 'run B succeeded');
my $rB = run_row($node, $runB);
note("run A checkpoint: " . sql($node, "SELECT checkpoint FROM retl.runs WHERE id = $runA"));
is($rB->{kind}, 'full', 'run B, after a stopped full run, is full');
is(sql($node, "SELECT b.started_at >= a.finished_at FROM retl.runs a, retl.runs b "
	  . "WHERE a.id = $runA AND b.id = $runB"),
	't', 'run B started only after run A had drained');
# Resumed from run A's checkpoint: only the rows after it.
resumed_ok($runA, $runB, [ 1 .. $N ], 'run B');
check_ids_at_least(event_ids($recv->events), [ 1 .. $N ],
	'every row has been received');

# ---------------------------------------------------------------------
# B. A stopped incremental run; the next run is incremental.
# ---------------------------------------------------------------------
sql($node, "UPDATE orders SET version = 2 WHERE id % 3 = 0");
my @changed = grep { $_ % 3 == 0 } 1 .. $N;

$recv->reset;
$recv->config({ delay_ms => 300 });
my $runC = sql($node, "SELECT retl_sync_now('s')");
is(run_row($node, $runC)->{kind}, 'incremental', 'run C is incremental');
$recv->wait_events($BEFORE / 2, 120, 'the incremental run to deliver its first batches');
wait_for(sub { sql($node, "SELECT (checkpoint->>'pos')::bigint > 0 FROM retl.runs WHERE id = $runC") eq 't' },
	60, 'run C to record a checkpoint');

($stopped, $status_in_tx, $next_kind) = stop_sync();
is($stopped, $runC, 'retl_stop returns run C');
is($status_in_tx, 'stopping', 'run C is stopping');
is(wait_run($node, $runC), 'stopped', 'run C ends stopped');
note('statuses seen for run C: '
	  . join(' -> ', @{ $RetlTest::SEEN_STATUSES{$runC} }));
my $rC = run_row($node, $runC);
cmp_ok($rC->{events_sent}, '<', scalar @changed,
	'run C stopped before sending every changed row');
is($rC->{events_succeeded}, scalar @{ $recv->events(run_id => $runC) },
	'run C: events_succeeded = events the receiver acknowledged');
is(sql($node, "SELECT next_run_kind FROM retl.sync_status WHERE sync = 's'"),
	'incremental', 'after a stopped incremental run the next run is incremental');
is(sql($node, "SELECT retl_stop('s') IS NULL"), 't',
	'retl_stop with no active run returns NULL');

$recv->config({ delay_ms => 0 });
my $runD = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $runD), 'succeeded', 'run D succeeded');
is(run_row($node, $runD)->{kind}, 'incremental', 'run D is incremental');
my $idsD = event_ids($recv->events(run_id => $runD));
my %changed = map { $_ => 1 } @changed;
my @unchanged = grep { !$changed{ $_ // '' } } @$idsD;
ok(!@unchanged, 'run D sent only changed rows')
  or diag('unchanged rows sent: ' . join(', ', @unchanged[ 0 .. ($#unchanged < 9 ? $#unchanged : 9) ]));
resumed_ok($runC, $runD, \@changed, 'run D');
check_ids_at_least(event_ids($recv->events), \@changed,
	'every changed row has been received after run D');

stop_ok($node);

done_testing();
