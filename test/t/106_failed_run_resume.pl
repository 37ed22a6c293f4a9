# A destination that is down for a whole run of a large table, then comes
# back (issue 14, item 9):
#  - the run fails after its first batch ran out of attempts and stops
#    reading at once: it does not read the table to its end;
#  - retl.failed_events holds only the events in flight when it failed:
#    at most 2 x max_in_flight x batch_size;
#  - the next run is of the same kind (full stays full, incremental stays
#    incremental), resumes from the failed run's checkpoint, and the
#    destination gets every row once, plus at most that bound of copies.
# The incremental case goes down mid-run, so that its checkpoint is past
# the start and the resume skips what was delivered.
#
# Why: a failed run used to read the whole source and write every
# remaining event to retl.failed_events ("not sent: ..."); the next run
# then re-sent the failed events and the whole table again: every row
# twice.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlSink;

my $N = 1_000_000;             # the issue's size: a 1M-row run
my $B = 100;                   # batch_size
my $M = 4;                     # max_in_flight
my $BOUND = 2 * $M * $B;
my $K = $N / 2;                # rows changed for the incremental case

my $node = retl_node('failresume');
my $sink = start_sink();
create_orders($node, 'orders', $N);
create_webhook($node, 'd', $sink->url('/hook'),
	batch_size => $B, max_in_flight => $M, max_attempts => 2,
	max_backoff_ms => 100, timeout_ms => 10000);
create_track_sync($node, 's', 'orders', 'd');

sub failed_count
{
	return sql($node, "SELECT count(*) FROM retl.failed_events");
}

# Checks a failed run: bounded failed events, reading stopped early.
sub check_failed
{
	my ($run, $kind, $total, $label) = @_;
	is(wait_run($node, $run, 300), 'failed', "$label: the run fails");
	my $r = run_row($node, $run);
	is($r->{kind}, $kind, "$label: it is $kind");
	like($r->{error} // '', qr/request failed after 2 attempt/,
		"$label: its error says the request failed after max_attempts");
	my $fe = failed_count();
	cmp_ok($fe, '<=', $BOUND,
		"$label: retl.failed_events holds at most 2 x max_in_flight x batch_size ($BOUND) events ($fe)");
	cmp_ok($r->{events_failed}, '<=', $BOUND, "$label: events_failed <= $BOUND ($r->{events_failed})");
	cmp_ok($r->{rows_read}, '<', $total / 2,
		"$label: reading stopped at once ($r->{rows_read} of $total rows read)");
	is($r->{events_succeeded} + $r->{events_failed}, $r->{events_sent},
		"$label: events_succeeded + events_failed = events_sent");
	is(sql($node, "SELECT next_run_kind FROM retl.sync_status WHERE sync = 's'"),
		$kind, "$label: the next run is $kind");
	return $r;
}

# Shows the rows whose messageIds were received more than once per row.
sub diag_ids
{
	my $ids = $sink->ids;
	my %by_row;
	for my $run (sort keys %$ids)
	{
		while (my ($mid, $v) = each %{ $ids->{$run} })
		{
			push @{ $by_row{ $v->[1] // '?' } }, "run $run: $mid x $v->[0]";
		}
	}
	my @multi = grep { @{ $by_row{$_} } > 1 } sort { $a <=> $b } grep { /^\d+$/ } keys %by_row;
	diag(scalar(@multi) . " rows with several messageIds, e.g.:\n"
		  . join("\n", map { "$_: " . join('; ', @{ $by_row{$_} }) } @multi[ 0 .. ($#multi < 5 ? $#multi : 5) ]));
	return;
}

# Checks the run after the failed one: same kind, every row once beyond
# the bound, failed events delivered.
sub check_resumed
{
	my ($run, $failed, $kind, $total, $label) = @_;
	is(wait_run($node, $run, 300), 'succeeded', "$label: the next run succeeds");
	my $r = run_row($node, $run);
	is($r->{kind}, $kind, "$label: it is $kind, as the failed run was");
	my $s = $sink->stats;
	is($s->{distinct}, $total, "$label: the sink got each of the $total rows")
	  or diag_ids();
	cmp_ok($s->{duplicates}, '<=', $BOUND,
		"$label: copies beyond one per row <= $BOUND ($s->{duplicates}, of $s->{events} events)");
	is(failed_count(), 0, "$label: retl.failed_events is empty");
	is($r->{events_succeeded} + $r->{events_failed}, $r->{events_sent},
		"$label: events_succeeded + events_failed = events_sent");
	is($r->{events_failed}, 0, "$label: events_failed = 0");
	return $r;
}

# ---------------------------------------------------------------------
# A, B. A full run while the destination is down; then it is back.
# ---------------------------------------------------------------------
$sink->config({ down => 1 });
my $run1 = sql($node, "SELECT retl_sync_now('s')");
check_failed($run1, 'full', $N, 'A');
is(run_row($node, $run1)->{events_succeeded}, 0, 'A: nothing was delivered');

$sink->reset;
my $run2 = sql($node, "SELECT retl_sync_now('s')");
check_resumed($run2, $run1, 'full', $N, 'B');

# ---------------------------------------------------------------------
# C, D. An incremental run whose destination goes down mid-run.
# ---------------------------------------------------------------------
sql($node, "UPDATE orders SET version = 2 WHERE id % 2 = 0");
$sink->reset;
$sink->config({ delays_ms => [20] });
my $run3 = sql($node, "SELECT retl_sync_now('s')");
$sink->wait_events($K / 5, 300, 'C: a fifth of the changed rows delivered', $run3);
$sink->config({ down => 1 });
my $r3 = check_failed($run3, 'incremental', $K, 'C');
cmp_ok($r3->{events_succeeded}, '>=', $K / 5, "C: $r3->{events_succeeded} events delivered before");
my $pos = sql($node, "SELECT (checkpoint->>'pos')::bigint FROM retl.runs WHERE id = $run3");
cmp_ok($pos, '>', 0, 'C: its checkpoint is past the start');

$sink->config({ down => undef, delays_ms => undef });
my $run4 = sql($node, "SELECT retl_sync_now('s')");
my $r4 = check_resumed($run4, $run3, 'incremental', $K, 'D');
cmp_ok($r4->{rows_read}, '<=', $K - $r3->{events_succeeded} + $BOUND,
	"D: it resumed from the checkpoint ($r4->{rows_read} rows read)");

stop_ok($node);

done_testing();
