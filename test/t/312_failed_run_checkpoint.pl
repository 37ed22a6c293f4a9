# A run that fails while a batch is being built never acknowledges that
# batch's events: they were not sent, so the run's checkpoint (where a run
# resumed after a crash starts) must stop before them, and its counters
# keep events_succeeded + events_failed = events_sent.  (The failed run
# used to acknowledge the batch with 0 succeeded and 0 failed, moving the
# checkpoint past rows that no destination ever saw.)  The source is a view
# that raises an error at row 2,500, when the first page commits (a
# holdable cursor computes its whole result then), after that page's 2,000
# events were built: two batches of 700, recorded as failed without being
# sent since the run failed, and 600 events in the batch being built.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $N = 3000;
my $node = retl_node('failckpt');
my $recv = start_receiver();
# rows 1 .. N; a division by zero at row knob.bad
sql($node, 'CREATE TABLE knob AS SELECT 2500 AS bad');
sql($node, "CREATE VIEW v_fail AS SELECT g AS id, 'user-' || g AS user_id,"
	  . " 1 / (g - (SELECT bad FROM knob)) AS inv FROM generate_series(1, $N) g");
create_webhook($node, 'hook', $recv->url('/hook'), batch_size => 700);
create_track_sync($node, 's', 'v_fail', 'hook', primary_key => undef,
	mapping => { userId => 'user_id', event => { value => 'Order Completed' } });
my $run = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run), 'failed', 'the run fails with the view\'s error');
like(sql($node, "SELECT error FROM retl.runs WHERE id = $run"), qr/division by zero/,
	'its error is the view\'s');

my $got = event_ids($recv->events(path => '/hook'));
my $delivered = scalar grep { defined } @$got;
my $c = sql_json($node, "SELECT checkpoint FROM retl.runs WHERE id = $run");
my $r = run_row($node, $run);
diag("delivered $delivered; checkpoint " . json_encode_ckpt($c));
is(($c->{succeeded} // 0) + ($c->{failed} // 0), $c->{sent} // -1,
	'checkpoint: succeeded + failed = sent (no unsent event counted as sent)');
my $recorded = sql($node, 'SELECT count(*) FROM retl.failed_events');
cmp_ok($c->{pos} // 0, '<=', $delivered + $recorded,
	'checkpoint: it stops before the rows that were neither delivered nor recorded as failed');
is($r->{events_succeeded} + $r->{events_failed}, $r->{events_sent},
	'run: events_succeeded + events_failed = events_sent');
is("$r->{events_succeeded}/$r->{events_failed}", "$delivered/$recorded",
	'run: the receiver got the events that succeeded, retl.failed_events holds the failed');

# once the view is fixed, the next run delivers every row
sql($node, 'UPDATE knob SET bad = -1');
$recv->reset;
$run = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run), 'succeeded', 'with the view fixed, the next run succeeds');
check_ids(event_ids($recv->events(path => '/hook')), [ 1 .. $N ],
	'and delivers every row (failed events re-sent first, then every row)', exact => 0);

# The checkpoint as one line, keys sorted.
sub json_encode_ckpt
{
	my ($h) = @_;
	return join(', ', map { "$_=" . ($h->{$_} // 'null') } sort keys %{ $h // {} });
}

stop_ok($node);
done_testing();
