# retl_drop_sync of a sync whose run is in flight (issue 14, item 13):
# the sync is dropped at once and the call returns while the run still
# drains; the drain goes on in the background (at most
# retl.drain_timeout) and the run ends 'stopped', with consistent
# counters.  Once its sync is gone, the run (sync_id NULL, sync_name kept)
# is visible to members of retl_admin and superusers, not to the sync's
# former owner.  The way to wait for the drain: retl_stop, wait until the
# run is no longer active, then retl_drop_sync.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $N = 2000;
my $node = retl_node('dropdrain');
my $recv = start_receiver();
create_orders($node, 'orders', $N);
sql($node, q{
CREATE ROLE alice;
GRANT retl_user TO alice;
CREATE ROLE ops;
GRANT retl_admin TO ops;
GRANT SELECT ON orders TO alice;});
my ($rc, $out, $err) = psql_as($node, 'alice', qq{
SELECT retl_create_destination('d', 'webhook',
	'{"url": "@{[ $recv->url('/hook') ]}", "batch_size": 50, "max_in_flight": 2}');
SELECT retl_create_sync('s', 'orders', 'd', 'track',
	'{"userId": "user_id", "event": {"value": "E"}}', 'id');});
is($rc, 0, 'alice creates a destination and a sync') or diag($err);

# ---------------------------------------------------------------------
# A. retl_drop_sync while requests are in flight (each takes 5 s).
# ---------------------------------------------------------------------
$recv->config({ delay_ms => 5000 });
($rc, my $run, $err) = psql_as($node, 'alice', "SELECT retl_sync_now('s')");
$run =~ s/\s+//g;
wait_for(sub { @{ $recv->requests } >= 2 }, 60, 'A: two requests in flight');
($rc, $out, $err) = psql_as($node, 'alice', "SELECT retl_drop_sync('s')");
is($rc, 0, 'A: alice drops the sync') or diag($err);
my $r = run_row($node, $run);
like($r->{status}, qr/^(stopping|draining)$/,
	"A: retl_drop_sync returned while the run drains ($r->{status})");
is(sql($node, "SELECT count(*) FROM retl.syncs WHERE name = 's'"), 0,
	'A: the sync is gone at once');
is($r->{sync_id}, undef, 'A: the run has no sync any more (sync_id NULL) ...');
is($r->{sync_name}, 's', 'A: ... and keeps its sync_name');
($rc, $out, $err) = psql_as($node, 'ops',
	"SELECT status FROM retl.runs WHERE sync_name = 's' AND sync_id IS NULL");
like($out, qr/^(stopping|draining)$/, 'A: a member of retl_admin sees the draining run');
($rc, $out, $err) = psql_as($node, 'alice', "SELECT count(*) FROM retl.runs");
is($out, '0', 'A: the former owner does not see it');

is(wait_run($node, $run, 120), 'stopped', 'A: the run ends stopped once drained');
$r = run_row($node, $run);
ok(defined $r->{finished_at}, 'A: it has finished_at');
is($r->{events_succeeded} + $r->{events_failed}, $r->{events_sent},
	'A: every request it sent has its outcome (drained, not aborted)');
is($r->{events_succeeded}, scalar @{ $recv->events(run_id => $run) },
	'A: events_succeeded = events the receiver acknowledged');
cmp_ok($r->{events_sent}, '<', $N, 'A: it stopped before the end');
my $requests = scalar @{ $recv->requests };
sleep 2;
is(scalar @{ $recv->requests }, $requests, 'A: nothing is sent after the drain');

# ---------------------------------------------------------------------
# B. retl_stop, wait for the drain, then retl_drop_sync.
# ---------------------------------------------------------------------
($rc, $out, $err) = psql_as($node, 'alice', q{
SELECT retl_create_sync('s', 'orders', 'd', 'track',
	'{"userId": "user_id", "event": {"value": "E"}}', 'id');
SELECT retl_sync_now('s');});
my ($run2) = $out =~ /(\d+)\s*$/;
wait_for(sub { @{ $recv->requests } >= $requests + 2 }, 60, 'B: requests in flight');
($rc, $out, $err) = psql_as($node, 'alice', "SELECT retl_stop('s')");
is($out, $run2, 'B: retl_stop returns the run');
wait_for(sub {
		(psql_as($node, 'alice', "SELECT status FROM retl.runs WHERE id = $run2"))[1] eq 'stopped' },
	120, 'B: the owner sees the run stopped');
($rc, $out, $err) = psql_as($node, 'alice', "SELECT retl_drop_sync('s')");
is($rc, 0, 'B: then the sync is dropped, with nothing left to drain') or diag($err);
is(sql($node, "SELECT count(*) FROM retl.runs WHERE status IN ('running', 'stopping', 'draining')"),
	0, 'B: no run is active');
$recv->config({ delay_ms => 0 });

stop_ok($node);

done_testing();
