# Crash re-sends at high throughput (issue 14, item 11): max_in_flight 16
# and a fast receiver (test/lib/countsink.py, TCP_NODELAY).  A kill -9 of
# the worker (twice) or of the launcher (once) mid-run makes the run resume from its stored checkpoint: the
# sink gets every row, and at most 2 x max_in_flight x batch_size events
# twice.  events_sent counts the events sent again: it is not below what
# the sink acknowledged by more than the events sent after the last
# checkpoint write (at most the same bound), and
# events_succeeded + events_failed + checkpoint.resent = events_sent.
#
# Why: the checkpoint was written at most every 50 ms, checked once per
# turn of the worker, whose reading could last 200 ms: a crash re-sent the
# batches acknowledged since the last write, more at higher throughput
# (426 at 7.6k events/s, 1,066 at 37k events/s, over the stated bound),
# and events_sent did not count them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlRead;
use RetlSink;
use RetlFaults qw(wait_server_up);

my $N = 300_000;
my $B = 100;
my $M = 16;
my $BOUND = 2 * $M * $B;

my $node = retl_node('crashbound', conf => "restart_after_crash = on\n");
my $sink = start_sink();
create_orders($node, 'orders', $N);
create_webhook($node, 'd', $sink->url('/hook'),
	batch_size => $B, max_in_flight => $M, max_backoff_ms => 200);
create_track_sync($node, 's', 'orders', 'd');

# Kills the launcher with signal 9: the postmaster restarts every process,
# the worker included, as after a crash of the worker itself.
sub kill_launcher
{
	my ($label) = @_;
	my $pid = sql($node, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'retl launcher'");
	ok($pid, "$label: the retl launcher is running (pid $pid)");
	my $offset = -s $node->logfile;
	kill 'KILL', $pid;
	wait_for(sub { $node->log_contains(qr/\(PID $pid\) was terminated by signal 9/, $offset) },
		120, "$label: the postmaster to notice the killed launcher");
	wait_server_up($node, 180, "$label: the server to restart after the crash");
	return;
}

for my $case ([ 'A', $N / 5, 'worker' ], [ 'B', $N / 2, 'worker' ], [ 'C', $N / 3, 'launcher' ])
{
	my ($label, $at, $who) = @$case;
	$sink->reset;
	my $run = sql($node, "SELECT retl_force_full('s')");
	$sink->wait_events($at, 300, "$label: $at events at the sink", $run);
	my $before = $sink->stats($run)->{events};
	if ($who eq 'launcher') { kill_launcher($label); }
	else { kill_worker($node, $label); }
	note("$label: killed after $before events; checkpoint then: "
		  . (sql($node, "SELECT checkpoint FROM retl.runs WHERE id = $run") // ''));
	is(wait_run($node, $run, 300), 'succeeded', "$label: the requeued run succeeded");
	my $s = $sink->stats($run);
	my $r = run_row($node, $run);
	note("$label: sink $s->{events} events, $s->{distinct} distinct; run sent $r->{events_sent}");
	cmp_ok($before, '<', $N, "$label: the worker was killed mid-run");
	is($s->{distinct}, $N, "$label: every row reached the sink");
	cmp_ok($s->{duplicates}, '<=', $BOUND,
		"$label: events sent twice <= 2 x max_in_flight x batch_size ($s->{duplicates} <= $BOUND)");
	cmp_ok($s->{max_copies}, '<=', 2, "$label: no event sent more than twice");
	# requests in flight at the kill count as sent once the checkpoint
	# stored them, though the sink may not have taken them
	cmp_ok($r->{events_sent} - $s->{events}, '<=', $M * $B,
		"$label: events_sent ($r->{events_sent}) exceeds the events the sink acknowledged"
		  . " ($s->{events}) by at most the requests in flight (" . ($M * $B) . ")");
	cmp_ok($s->{events} - $r->{events_sent}, '<=', $BOUND,
		"$label: events_sent counts the events sent again (missing " . ($s->{events} - $r->{events_sent}) . ")");
	my $resent = sql($node, "SELECT coalesce((checkpoint->>'resent')::bigint, 0) FROM retl.runs WHERE id = $run");
	is($r->{events_succeeded} + $r->{events_failed} + $resent, $r->{events_sent},
		"$label: events_succeeded + events_failed + checkpoint.resent ($resent) = events_sent");
	is($r->{events_failed}, 0, "$label: events_failed = 0");
}

stop_ok($node);

done_testing();
