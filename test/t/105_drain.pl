# Drain timeout: the receiver hangs, retl_stop is called, and with
# retl.drain_timeout = 2s (ALTER SYSTEM + reload) the run ends 'stopped'
# after the timeout, far sooner than the 30 s default: the requests in
# flight are aborted and counted as not delivered.  With the receiver
# answering again, the next run delivers every row.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlFaults;

my $N = 300;
my $M = 2;

my $node = retl_node('drain');
my $recv = start_receiver();

is(sql($node, 'SHOW retl.drain_timeout'), '30s', 'retl.drain_timeout defaults to 30s');
sql($node, "ALTER SYSTEM SET retl.drain_timeout = '2s'");
sql($node, 'SELECT pg_reload_conf()');
wait_for(sub { sql($node, 'SHOW retl.drain_timeout') eq '2s' }, 60,
	'the new retl.drain_timeout to be loaded');
is(sql($node, 'SHOW retl.drain_timeout'), '2s', 'retl.drain_timeout is 2s after a reload');

create_orders($node, 'orders', $N);
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 10, max_in_flight => $M);
create_track_sync($node, 's', 'orders', 'd');

# ---------------------------------------------------------------------
# A. The receiver hangs; retl_stop; the drain times out.
# ---------------------------------------------------------------------
$recv->config({ hang => 1 });
my $run1 = sql($node, "SELECT retl_sync_now('s')");
$recv->wait_requests($M, 60, "$M requests in flight at the hanging receiver");
is(run_row($node, $run1)->{status}, 'running', 'A: the run is running');

my $log_offset = -s $node->logfile;
my ($stopped, $stop_at) = split /\|/,
  sql($node, "SELECT retl_stop('s'), clock_timestamp()");
is($stopped, $run1, 'A: retl_stop returns the running run');

# wait_run's own timeout is generous; the bound asserted is below.
is(wait_run($node, $run1), 'stopped', 'A: the run ends stopped although its requests hang');
note('A: statuses seen: ' . join(' -> ', @{ $RetlTest::SEEN_STATUSES{$run1} }));
my $elapsed = sql($node,
	"SELECT extract(epoch FROM finished_at - '$stop_at'::timestamptz) FROM retl.runs WHERE id = $run1");
note("A: the run ended ${elapsed}s after retl_stop");
cmp_ok($elapsed, '>=', 2,
	'A: the stopped run waited for its requests at least retl.drain_timeout (2 s)');
cmp_ok($elapsed, '<', 20,
	'A: ... and ended long before the 30 s default: the new drain timeout applies');
ok($node->log_contains(qr/drain timeout, aborting \d+ request/, $log_offset),
	'A: the server log says the drain timed out and requests were aborted');

my $r1 = run_row($node, $run1);
is($r1->{events_succeeded}, 0, 'A: nothing was delivered');
is($r1->{events_succeeded} + $r1->{events_failed}, $r1->{events_sent},
	'A: events_succeeded + events_failed = events_sent (aborted requests are not counted as sent)');
is(scalar @{ failed_events($node, 's') }, 0,
	'A: the aborted events are not in retl.failed_events (the next run sends them)');

# The aborted requests were really dropped: the receiver saw the client go.
wait_for(sub { ($recv->stats->{answered}{hang} // 0) >= $M }, 60,
	'the receiver to see the aborted requests go');
is($recv->stats->{answered}{hang}, $M,
	"A: the $M hanging requests were aborted by the worker");

# ---------------------------------------------------------------------
# B. The receiver answers again: the next run delivers every row.
# ---------------------------------------------------------------------
$recv->reset;
my $run2 = sql($node, "SELECT retl_sync_now('s')");
isnt($run2, $run1, 'B: a new run is queued');
is(wait_run($node, $run2), 'succeeded', 'B: the next run succeeded');
my $r2 = run_row($node, $run2);
is($r2->{kind}, 'full', 'B: it is full, like the stopped run');
check_ids(event_ids($recv->events(run_id => $run2)), [ 1 .. $N ],
	'B: every row was delivered, once');
is($r2->{events_succeeded} + $r2->{events_failed}, $r2->{events_sent},
	'B: events_succeeded + events_failed = events_sent');
is($r2->{events_failed}, 0, 'B: events_failed = 0');

stop_ok($node);

done_testing();
