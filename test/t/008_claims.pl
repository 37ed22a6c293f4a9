# README claims that no other test backs:
#   1. A 413 or a 422 on a batch of several events splits it in halves
#      until the bad event is isolated: only it fails, the run succeeds.
#   2. The receiver's "connection closed mid-response" fault (a status line
#      and headers claiming 100 bytes, a few bytes, then close) is retried:
#      the run succeeds and every row arrives.
#   3. "Nobody can change a sync's cursor": an owner's direct UPDATEs of
#      retl.syncs.cursor_snapshot, retl.runs.snapshot and retl.runs.checkpoint
#      are refused.
#   4. Calls of retl_sync_now that truly overlap -- two sessions, each in an
#      open transaction -- get the same run.
#   5. The system-identifier guard of the xmin cursor.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use RetlTest;

my $node = retl_node('claims');
my $recv = start_receiver();
create_orders($node, 'orders', 40);

# ---------------------------------------------------------------------
# 1. 413 and 422 split the batch down to the bad event.
# ---------------------------------------------------------------------
for my $code (413, 422)
{
	$recv->reset;
	$recv->config({ reject_match => '"user-17"', reject_status => $code });
	create_webhook($node, "d$code", $recv->url("/s$code"), batch_size => 20);
	create_track_sync($node, "s$code", 'orders', "d$code");
	my $run = sql($node, "SELECT retl_sync_now('s$code')");
	is(wait_run($node, $run), 'succeeded', "$code: the run succeeds");
	check_ids(event_ids($recv->events(path => "/s$code")), [ grep { $_ != 17 } 1 .. 40 ],
		"$code: every other row arrived once");
	is(sql($node, qq{SELECT string_agg(f.primary_key || ':' || f.http_status, ',')
	  FROM retl.failed_events f JOIN retl.syncs s ON s.id = f.sync_id
	 WHERE s.name = 's$code'}), "17:$code", "$code: only row 17 failed, with the $code");
	my $answered = $recv->stats->{answered};
	# 20 -> 10 -> 5 -> 3 -> 2 -> 1: five refused requests on the way down
	is($answered->{$code}, 5, "$code: the batch was halved down to the one event")
	  or diag(JSON::PP->new->canonical->encode($answered));
}
$recv->config({ reject_match => undef, reject_status => undef });

# ---------------------------------------------------------------------
# 2. Connections closed mid-response are retried.
# ---------------------------------------------------------------------
$recv->reset;
$recv->config({ close_mid_response => 1 });
# (max_attempts: the retries must outlast the cut answers, however slow
# the machine is between the third and the configuration change)
create_webhook($node, 'dclose', $recv->url('/close'), batch_size => 10,
	max_in_flight => 1, max_attempts => 100, max_backoff_ms => 200);
create_track_sync($node, 'sclose', 'orders', 'dclose');
my $runc = sql($node, "SELECT retl_sync_now('sclose')");
$recv->wait_requests(3, 60, 'three deliveries cut mid-response');
is(sql($node, "SELECT status FROM retl.runs WHERE id = $runc"), 'running',
	'close: the run is still running while every answer is cut');
is($recv->stats->{events}, 0, 'close: no cut answer counted as delivered at the receiver');
$recv->config({ close_mid_response => undef });
is(wait_run($node, $runc), 'succeeded', 'close: the run succeeds once answers are whole');
check_ids(event_ids($recv->events(path => '/close')), [ 1 .. 40 ],
	'close: every row arrived once, counted at the receiver');
cmp_ok($recv->stats->{answered}{close_mid_response}, '>=', 3,
	'close: the cut answers were retried');

# ---------------------------------------------------------------------
# 3. An owner cannot change a cursor or a checkpoint by hand.
# ---------------------------------------------------------------------
sql($node, q{CREATE ROLE alice LOGIN; GRANT SELECT ON orders TO alice; GRANT retl_user TO alice;});
my ($rc, $out, $err) = psql_as($node, 'alice', qq{
SELECT retl_create_destination('da', 'webhook', '{"url": "@{[ $recv->url('/a') ]}"}');
SELECT retl_create_sync('sa', 'orders', 'da', 'track',
  '{"userId": "user_id", "event": {"value": "Order"}}', 'id');});
is($rc, 0, 'alice creates a destination and a sync') or diag($err);
my $runa = sql($node, "SELECT retl_sync_now('sa')");
is(wait_run($node, $runa), 'succeeded', "alice's first run succeeds");
my $before = sql($node, q{SELECT md5(s.cursor_snapshot::text) || ' ' || md5(r.snapshot::text)
  || ' ' || r.checkpoint::text FROM retl.syncs s JOIN retl.runs r ON r.sync_id = s.id
 WHERE s.name = 'sa'});
fails_as($node, 'alice', q{UPDATE retl.syncs SET cursor_snapshot = NULL WHERE name = 'sa'},
	'42501', "alice's direct UPDATE of retl.syncs.cursor_snapshot");
# only retl writes retl.runs (issue 12, item 1): a run's snapshot becomes
# its sync's cursor and its checkpoint where the next run resumes
for my $col ('snapshot = NULL', q{checkpoint = '{"pos": 999999}'})
{
	my ($name) = $col =~ /^(\w+)/;
	my ($urc, $uout, $uerr) = psql_as($node, 'alice',
		"UPDATE retl.runs SET $col WHERE sync_name = 'sa'");
	like($uerr, qr/ERROR:\s+42501:/,
		"alice's direct UPDATE of retl.runs.$name fails with 42501");
}
is(sql($node, q{SELECT md5(s.cursor_snapshot::text) || ' ' || md5(r.snapshot::text)
  || ' ' || r.checkpoint::text FROM retl.syncs s JOIN retl.runs r ON r.sync_id = s.id
 WHERE s.name = 'sa'}), $before, 'the cursor and the checkpoint are unchanged');

# ---------------------------------------------------------------------
# 4. Two sessions call retl_sync_now in open transactions: the same run.
# ---------------------------------------------------------------------
create_webhook($node, 'dnow', $recv->url('/now'));
create_track_sync($node, 'snow', 'orders', 'dnow');
my $a = $node->background_psql('postgres', on_error_stop => 1);
my $b = $node->background_psql('postgres', on_error_stop => 1);
$a->query_safe('BEGIN');
$b->query_safe('BEGIN');
my $id_a = $a->query_safe("SELECT retl_sync_now('snow')");
like($id_a, qr/^\d+$/, "session A's call returns a run id ($id_a), its transaction still open");
# B's call waits for A's transaction: it is sent, and answers after A commits
$b->query_until(qr/sent/, "\\echo sent\nSELECT 'B:' || retl_sync_now('snow');\n");
Time::HiRes::sleep(1.0);
unlike($b->{stdout}, qr/B:\d+/, 'session B does not get an answer while A is open')
  or diag("B: $b->{stdout}");
$a->query_safe('COMMIT');
ok(wait_for(sub { $b->{run}->pump_nb; $b->{stdout} =~ /B:(\d+)/ }, 30,
		"B's answer after A's commit"), "session B's call returns once A has committed");
my ($id_b) = $b->{stdout} =~ /B:(\d+)/;
is($id_b, $id_a, 'both calls got the same run');
$b->query_safe('COMMIT');
$a->quit;
$b->quit;
is(sql($node, q{SELECT count(*) FROM retl.runs WHERE sync_name = 'snow'}), 1,
	'the sync has one run');
is(wait_run($node, $id_a), 'succeeded', 'which succeeds');

# ---------------------------------------------------------------------
# 5. The system-identifier guard: a cursor whose system identifier is not
#    this cluster's (as after restoring a catalog into another cluster) is
#    not trusted: the next run is full and says why.  The superuser
#    rewrites the identifier in the stored cursor (bytes 9-16, after the
#    magic and the flags, src/read/snapshot.c).
# ---------------------------------------------------------------------
my $runs1 = sql($node, "SELECT retl_sync_now('snow')");
is(wait_run($node, $runs1), 'succeeded', 'sysid: a run of snow succeeds');
my $inc = sql($node, "SELECT retl_sync_now('snow')");
is(wait_run($node, $inc), 'succeeded', 'sysid: the next run succeeds');
is(run_row($node, $inc)->{kind}, 'incremental', 'sysid: and is incremental (the cursor is trusted)');
sql($node, q{UPDATE retl.syncs
  SET cursor_snapshot = overlay(cursor_snapshot PLACING '\x0102030405060708'::bytea FROM 9 FOR 8)
 WHERE name = 'snow'});
$recv->reset;
my $runs2 = sql($node, "SELECT retl_sync_now('snow')");
is(wait_run($node, $runs2), 'succeeded', 'sysid: the run after the change succeeds');
my $rs2 = run_row($node, $runs2);
is($rs2->{kind}, 'full', 'sysid: it is full');
like($rs2->{full_reason} // '', qr/system identifier changed/,
	'sysid: full_reason names the system identifier');
check_ids(event_ids($recv->events(run_id => $runs2)), [ 1 .. 40 ], 'sysid: it sent every row');

stop_ok($node);
done_testing();
