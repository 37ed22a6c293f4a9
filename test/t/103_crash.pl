# Crash recovery: kill -9 of the worker mid-run, and pg_ctl stop -m
# immediate mid-run.  The run is requeued and resumes from its checkpoint:
# every row reaches the receiver, the rows sent twice are at most
# 2 x max_in_flight x batch_size (the whole acknowledged part is not sent
# again), duplicates carry the same messageId, and the counters of the run
# stay consistent (events_succeeded + events_failed + checkpoint.resent =
# events_sent, where resent counts the events sent before the crash past
# the checkpoint: events_sent counts them twice, as the receiver does).
#
# max_in_flight is 16 and the requests are answered after 0.2 s or 3 s,
# so acknowledgements arrive out of order: the fast batches pass the slow
# ones, whose acks hold the checkpoint back.  (Before the checkpoint
# window, the batches acknowledged past a slow one were all sent again
# after a crash: up to 3 s of fast batches, over the bound of 640.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlFaults;
use RetlSink;

my $N = 6000;
my $B = 20;                    # batch_size
my $M = 16;                    # max_in_flight
my $BOUND = 2 * $M * $B;       # duplicates allowed after a crash
# Events acknowledged before the crash: well over $BOUND, so that a run
# that re-sent its whole acknowledged part, or the part acknowledged past
# a slow batch, would exceed the bound.
my $ACKED = 3 * $BOUND;
# Per request in turn: one request in 32 is answered after 3 s, the others
# after 0.2 s, so that about a third of the requests in flight are slow
# ones and the fast ones overtake them all the time.
my @DELAYS = (3000, (200) x 31);

# kill -9 of a backend makes the postmaster restart every process;
# PostgreSQL::Test::Cluster turns that off.
my $node = retl_node('crash', conf => "restart_after_crash = on\n");
my $recv = start_sink();

create_orders($node, 'orders', $N);
note('orders: ' . sql($node, "SELECT pg_relation_size('orders') / 8192")
	  . ' blocks (checkpoints advance by block ranges)');
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => $B, max_in_flight => $M, max_backoff_ms => 200);

# Starts a run of $sync on a slow receiver and waits until it is mid-way:
# more than $ACKED events delivered and a checkpoint recorded.  Returns the
# run id and the number of events delivered by then.
sub start_slow_run
{
	my ($sync, $label) = @_;
	$recv->reset;
	$recv->config({ delays_ms => \@DELAYS });
	my $run = sql($node, "SELECT retl_sync_now('$sync')");
	wait_for(
		sub {
			my $n = $recv->stats($run)->{events};
			my $pos = sql($node,
				"SELECT coalesce((checkpoint->>'pos')::bigint, 0) FROM retl.runs WHERE id = $run");
			return $n >= $ACKED && $pos > 0;
		},
		120,
		"$label: $ACKED events delivered and a checkpoint recorded");
	my $r = run_row($node, $run);
	is($r->{status}, 'running', "$label: the run is running when the server goes down");
	my $delivered = $recv->stats($run)->{events};
	cmp_ok($delivered, '<', $N, "$label: ... mid-way ($delivered of $N events delivered)");
	note("$label: checkpoint before the crash: " . sql($node,
		"SELECT checkpoint FROM retl.runs WHERE id = $run"));
	return ($run, $delivered);
}

# Checks a run after recovery.
sub check_recovered
{
	my ($run, $delivered, $label) = @_;
	is(wait_run($node, $run), 'succeeded', "$label: the requeued run succeeded");
	note("$label: statuses seen: " . join(' -> ', @{ $RetlTest::SEEN_STATUSES{$run} }));

	my $d = $recv->stats($run);
	is($d->{distinct}, $N, "$label: every row reached the receiver");
	note("$label: $d->{events} events, $d->{distinct} distinct, "
		  . "$d->{duplicates} duplicates; $delivered delivered before the crash");
	cmp_ok($d->{duplicates}, '<=', $BOUND,
		"$label: duplicates <= 2 x max_in_flight x batch_size ($BOUND): "
		  . "the run resumed from its checkpoint, out-of-order acknowledgements included");
	my $ids = $recv->ids->{$run} // {};
	my %mids;
	$mids{ $ids->{$_}[1] // '?' }++ for keys %$ids;
	is(scalar(grep { $mids{$_} > 1 } keys %mids), 0,
		"$label: duplicates share the same messageId (one messageId per row)");

	my $r = run_row($node, $run);
	my $resent = sql($node,
		"SELECT coalesce((checkpoint->>'resent')::bigint, 0) FROM retl.runs WHERE id = $run");
	is($r->{events_succeeded} + $r->{events_failed} + $resent, $r->{events_sent},
		"$label: events_succeeded + events_failed + checkpoint.resent = events_sent "
		  . "($r->{events_succeeded} + $r->{events_failed} + $resent = $r->{events_sent})");
	is($r->{events_failed}, 0, "$label: events_failed = 0");
	is($r->{rows_read}, $N, "$label: rows_read = $N across the resume");
	cmp_ok($r->{events_sent}, '>=', $N, "$label: events_sent >= $N");
	# requests in flight at the crash count as sent, answered or not
	cmp_ok($r->{events_sent}, '<=', $d->{events} + $M * $B,
		"$label: events_sent is at most the events the receiver acknowledged ($d->{events}) "
		  . "and those in flight at the crash");
	cmp_ok($r->{events_sent}, '>=', $d->{events} - $BOUND,
		"$label: events_sent counts the events sent again");
	ok(!defined $r->{error}, "$label: no error") or diag("error: $r->{error}");
	is(scalar @{ failed_events($node, $r->{sync_name}) }, 0,
		"$label: retl.failed_events is empty");
	return;
}

# ---------------------------------------------------------------------
# A. kill -9 of the worker process.
# ---------------------------------------------------------------------
create_track_sync($node, 'sa', 'orders', 'd');
my ($runA, $deliveredA) = start_slow_run('sa', 'A');
my @pids = worker_pids($node);
is(scalar @pids, 1, 'A: one retl worker is running');
my $log_offset = -s $node->logfile;
kill 'KILL', $pids[0];
$recv->config({ delays_ms => undef });
wait_for(sub { $node->log_contains(qr/terminated by signal 9/, $log_offset) },
	60, 'the postmaster to notice the killed worker');
ok($node->log_contains(qr/\(PID $pids[0]\) was terminated by signal 9/, $log_offset),
	'A: the worker was killed with signal 9');
wait_server_up($node, 120, 'A: the server to restart after the crash');
check_recovered($runA, $deliveredA, 'A');
my @pids_after = worker_pids($node);
ok(!grep({ $_ == $pids[0] } @pids_after), 'A: the run was finished by a new worker');

# ---------------------------------------------------------------------
# B. pg_ctl stop -m immediate, then start.
# ---------------------------------------------------------------------
create_track_sync($node, 'sb', 'orders', 'd');
my ($runB, $deliveredB) = start_slow_run('sb', 'B');
$node->stop('immediate');
$recv->config({ delays_ms => undef });
$node->start;
check_recovered($runB, $deliveredB, 'B');

stop_ok($node);

done_testing();
