# A run that fails while a batch is being built never acknowledges that
# batch's events: they were not sent, so the run's checkpoint (where a run
# resumed after a crash starts) must stop before them, and its counters
# keep events_succeeded + events_failed = events_sent.  (The failed run
# used to acknowledge the batch with 0 succeeded and 0 failed, moving the
# checkpoint past rows that no destination ever saw.)  Two ways to fail
# with events in the batch being built:
#   - a view that raises an error at row 2,500, when the first page
#     commits (a holdable cursor computes its whole result then), after
#     that page's 2,000 events were built: two batches of 700, recorded as
#     failed without being sent, and 600 in the batch being built;
#   - a table whose row 2,500 is over the destination's event size, while
#     a trigger makes recording it in retl.failed_events fail: the rows
#     before it in its batch are being built.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $N = 3000;
my $node = retl_node('failckpt');
my $recv = start_receiver();
my %MAPPING = (mapping => { userId => 'user_id', event => { value => 'Order Completed' } });

# Runs sync $sync, which fails with an error matching $error; checks its
# checkpoint and counters against the receiver (path /$sync) and
# retl.failed_events.
sub failed_run_ok
{
	my ($sync, $error) = @_;
	my $run = sql($node, "SELECT retl_sync_now('$sync')");
	is(wait_run($node, $run), 'failed', "$sync: the run fails");
	like(sql($node, "SELECT error FROM retl.runs WHERE id = $run"), $error,
		"$sync: with the source's error");
	my $delivered = scalar grep { defined } @{ event_ids($recv->events(path => "/$sync")) };
	my $recorded = sql($node, "SELECT count(*) FROM retl.failed_events WHERE run_id = $run");
	my $c = sql_json($node, "SELECT checkpoint FROM retl.runs WHERE id = $run");
	my $r = run_row($node, $run);
	diag("$sync: delivered $delivered, recorded $recorded; checkpoint "
		  . join(', ', map { "$_=" . ($c->{$_} // 'null') } sort keys %$c));
	is(($c->{succeeded} // 0) + ($c->{failed} // 0), $c->{sent} // -1,
		"$sync: checkpoint succeeded + failed = sent (no unsent event counted as sent)");
	cmp_ok($c->{rows} // 0, '<=', $delivered + $recorded,
		"$sync: the checkpoint stops before the rows neither delivered nor recorded as failed");
	is("$r->{events_sent}/$r->{events_succeeded}/$r->{events_failed}",
		($delivered + $recorded) . "/$delivered/$recorded",
		"$sync: run counters: the receiver got the succeeded, retl.failed_events holds the failed");
	return;
}

# Runs sync $sync again, now that its source is fixed: every row arrives.
sub fixed_run_ok
{
	my ($sync) = @_;
	$recv->reset;
	my $run = sql($node, "SELECT retl_sync_now('$sync')");
	is(wait_run($node, $run), 'succeeded', "$sync: with the source fixed, the next run succeeds");
	check_ids(event_ids($recv->events(path => "/$sync")), [ 1 .. $N ],
		"$sync: and delivers every row (failed events re-sent first, then every row)",
		exact => 0);
	return;
}

# ----- a view failing at row 2,500 --------------------------------------------------
sql($node, 'CREATE TABLE knob AS SELECT 2500 AS bad');
sql($node, "CREATE VIEW v_fail AS SELECT g AS id, 'user-' || g AS user_id,"
	  . " 1 / (g - (SELECT bad FROM knob)) AS inv FROM generate_series(1, $N) g");
create_webhook($node, 'view', $recv->url('/view'), batch_size => 700);
create_track_sync($node, 'view', 'v_fail', 'view', primary_key => undef, %MAPPING);
failed_run_ok('view', qr/division by zero/);
sql($node, 'UPDATE knob SET bad = -1');
fixed_run_ok('view');

# ----- a table whose oversize row 2,500 cannot be recorded ------------------------
sql($node, qq{CREATE TABLE tab AS SELECT g AS id, 'user-' || g AS user_id,
  CASE WHEN g = 2500 THEN repeat('x', 200000) END AS pad FROM generate_series(1, $N) g;
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
  \$\$BEGIN RAISE EXCEPTION 'recording refused by the test'; END\$\$;
CREATE TRIGGER refuse BEFORE INSERT ON retl.failed_events
  FOR EACH ROW WHEN (length(NEW.payload) > 100000) EXECUTE FUNCTION refuse();});
create_webhook($node, 'table', $recv->url('/table'), batch_size => 300,
	max_batch_bytes => 100000);
create_track_sync($node, 'table', 'tab', 'table', primary_key => undef, %MAPPING);
failed_run_ok('table', qr/recording refused by the test/);
sql($node, 'DROP TRIGGER refuse ON retl.failed_events; UPDATE tab SET pad = NULL');
fixed_run_ok('table');

stop_ok($node);
done_testing();
