# A run never wedges on its own bookkeeping (issue 14, item 10):
#  - sync names are at most 255 bytes: a longer one is refused with 22023
#    and a hint;
#  - a sync with a longer name made before 0.4 (here: an 8,000-byte name
#    made on 0.3, then ALTER EXTENSION retl UPDATE) still runs to the end
#    and notifies retl_runs;
#  - any error while a run's end is recorded (here: a trigger on
#    retl.runs refuses the status) ends the run 'failed' with that error,
#    whether it succeeded, was stopped by retl_stop or by retl_drop_sync:
#    nothing is left 'running', 'stopping' or 'draining'.
#
# Why: pg_notify failed ("payload string too long") for a name over about
# 7,960 bytes when the run finished; the run stayed 'running' with
# events_succeeded = 0 although every event was delivered, retl_stop left
# it 'stopping' for good, and retl_drop_sync left an orphan run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $N = 500;
my $node = retl_node('bookkeeping');
my $recv = start_receiver();
create_orders($node, 'orders', $N);
create_webhook($node, 'd', $recv->url('/hook'), batch_size => 50, max_in_flight => 2);

# ---------------------------------------------------------------------
# A. The name limit.
# ---------------------------------------------------------------------
my $long = 'n' x 256;
my $err = fails_as($node, undef,
	"SELECT retl_create_sync('$long', 'orders', 'd', 'track', "
	  . "'{\"userId\": \"user_id\", \"event\": {\"value\": \"E\"}}', 'id')",
	'22023', 'A: a 256-byte sync name');
like($err, qr/sync name is too long \(256 bytes\)/, 'A: the error says the name is too long');
like($err, qr/HINT:\s+A sync name has at most 255 bytes/, 'A: the hint gives the limit');
my $ok = 'é' x 127;    # 254 bytes
create_track_sync($node, $ok, 'orders', 'd');
is(sql($node, "SELECT octet_length(name) FROM retl.syncs WHERE name = '$ok'"), 254,
	'A: a 254-byte name (127 two-byte characters) is taken');
sql($node, "SELECT retl_drop_sync('$ok')");

# ---------------------------------------------------------------------
# B. A longer name made before 0.4 keeps working.
# ---------------------------------------------------------------------
my $huge = 'h' x 8000;
sql($node, "CREATE DATABASE old");
$node->safe_psql('old', qq{
CREATE EXTENSION retl VERSION '0.3';
CREATE TABLE orders AS SELECT g AS id, 'user-' || g AS user_id FROM generate_series(1, $N) g;
ALTER TABLE orders ADD PRIMARY KEY (id);
SELECT retl_create_destination('d', 'webhook', '{"url": "@{[ $recv->url('/old') ]}", "batch_size": 50}');
SELECT retl_create_sync('$huge', 'orders', 'd', 'track',
	'{"userId": "user_id", "event": {"value": "E"}}', 'id');
ALTER EXTENSION retl UPDATE;});
is($node->safe_psql('old', "SELECT extversion FROM pg_extension WHERE extname = 'retl'"),
	'0.5', 'B: the database is on the current version (0.5)');
my $runB = $node->safe_psql('old', "SELECT retl_sync_now('$huge')");
is(wait_run_db($node, 'old', $runB, 60), 'succeeded',
	'B: the run of the 8,000-byte sync name ends succeeded');
is($node->safe_psql('old', "SELECT events_succeeded FROM retl.runs WHERE id = $runB"),
	$N, "B: ... with events_succeeded = $N");
is($node->safe_psql('old', "SELECT count(*) FROM retl.runs WHERE status IN ('running', 'stopping', 'draining')"),
	0, 'B: no run is left active');
sql($node, "DROP DATABASE old");
$recv->reset;

# ---------------------------------------------------------------------
# C. An error while the end of a run is recorded.
# ---------------------------------------------------------------------
sql($node, q{
CREATE TABLE public.refused (status text);
CREATE FUNCTION public.refuse_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM public.refused r WHERE r.status OPERATOR(pg_catalog.=) NEW.status) THEN
		RAISE EXCEPTION 'the test refuses status %', NEW.status;
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse_status BEFORE UPDATE ON retl.runs
	FOR EACH ROW EXECUTE FUNCTION public.refuse_status();});

# Checks that run $run ends failed with the refusal of $status.
sub refused_ok
{
	my ($run, $status, $label) = @_;
	is(wait_run($node, $run, 60), 'failed', "$label: the run ends failed");
	my $r = run_row($node, $run);
	like($r->{error} // '', qr/recording the end of the run failed: the test refuses status $status/,
		"$label: with the error that ended it");
	ok(defined $r->{finished_at}, "$label: it has finished_at");
	is(sql($node, "SELECT count(*) FROM retl.runs WHERE status IN ('running', 'stopping', 'draining')"),
		0, "$label: no run is left active");
	return $r;
}

create_track_sync($node, 's', 'orders', 'd');
sql($node, "INSERT INTO public.refused VALUES ('succeeded')");
my $runC = sql($node, "SELECT retl_sync_now('s')");
my $rC = refused_ok($runC, 'succeeded', 'C1 (a run that succeeded)');
is(scalar @{ $recv->events(run_id => $runC) }, $N, 'C1: every event was delivered');

# retl_stop, then retl_drop_sync, of a run on a slow receiver.
sql($node, "UPDATE public.refused SET status = 'stopped'");
$recv->config({ delay_ms => 300 });
my $runS = sql($node, "SELECT retl_force_full('s')");
$recv->wait_events($N + 50, 60, 'C2: the run to deliver');
is(sql($node, "SELECT retl_stop('s')"), $runS, 'C2: retl_stop stops the run');
refused_ok($runS, 'stopped', 'C2 (retl_stop)');

my $runD = sql($node, "SELECT retl_force_full('s')");
$recv->wait_events($N + 50 + scalar(@{ $recv->events(run_id => $runS) }), 60,
	'C3: the run to deliver');
sql($node, "SELECT retl_drop_sync('s')");
refused_ok($runD, 'stopped', 'C3 (retl_drop_sync)');
$recv->config({ delay_ms => 0 });

# A run whose end is recorded normally still ends as it should.
sql($node, "DELETE FROM public.refused");
create_track_sync($node, 's2', 'orders', 'd');
is(wait_run($node, sql($node, "SELECT retl_sync_now('s2')")), 'succeeded',
	'D: with the trigger allowing it, a run succeeds');

stop_ok($node);

done_testing();
