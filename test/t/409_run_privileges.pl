# Using retl takes a grant, and only retl writes runs (issue 12, items 1
# and 2).  A role without retl_user is refused with a hint naming the
# grant; a member manages its syncs through the API while the worker runs
# them, but cannot write a run itself: not a queued run's snapshot (its
# sync's next cursor), its checkpoint (the sync's counters) or its status.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $node = retl_node('runprivs');
my $recv = start_receiver();
create_orders($node, 'orders', 30);
# retl_user exists since 0.4 (CREATE EXTENSION creates it); created here
# if missing, so that the test also runs, and fails, on older builds
sql($node, q{DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'retl_user')
  THEN CREATE ROLE retl_user; END IF; END $$});
sql($node, q{
CREATE ROLE nobody LOGIN;
CREATE ROLE member LOGIN IN ROLE retl_user;
GRANT SELECT ON orders TO member, nobody;
});
my $url = $recv->url('/member');

# ---------------------------------------------------------------------
# Without the grant: 42501 and a hint naming it
# ---------------------------------------------------------------------
for my $call (qq{SELECT retl_create_destination('d', 'webhook', '{"url": "$url"}')},
	q{SELECT retl_sync_now('s')}, q{SELECT retl_preview('s')})
{
	my $err = fails_as($node, 'nobody', $call, '42501', "without retl_user: $call");
	like($err, qr/HINT:\s+.*GRANT retl_user TO/, '... with a hint to GRANT retl_user')
	  or diag($err);
}
fails_as($node, 'nobody', q{SELECT * FROM retl.runs}, '42501',
	'without retl_user: reading the catalog');

# ---------------------------------------------------------------------
# A member uses the API; the worker runs its syncs
# ---------------------------------------------------------------------
my ($rc, $out, $err) = psql_as($node, 'member', qq{
SELECT retl_create_destination('d', 'webhook', '{"url": "$url", "batch_size": 10}');
SELECT retl_create_sync('s', 'orders', 'd', 'track',
  '{"userId": "user_id", "event": {"value": "Order"}}', 'id');});
is($rc, 0, 'a member of retl_user creates a destination and a sync') or diag($err);
($rc, my $run, $err) = psql_as($node, 'member', q{SELECT retl_sync_now('s')});
is($rc, 0, 'and queues a run') or diag($err);
is(wait_run($node, $run), 'succeeded', 'which the worker runs');
is(scalar @{ $recv->events(path => '/member') }, 30, 'its 30 rows arrive');
my $cursor = sql($node, q{SELECT cursor_position FROM retl.sync_status WHERE sync = 's'});
isnt($cursor, '', 'the sync has a cursor');

# ---------------------------------------------------------------------
# ... but writes no run: a forged run would move the cursor and counters
# ---------------------------------------------------------------------
my $forge = q{
INSERT INTO retl.runs (sync_id, sync_name, kind, snapshot, checkpoint)
SELECT r.sync_id, r.sync_name, 'incremental', r.snapshot,
       '{"pos": 0, "rows": 1000000, "sent": 1000000, "succeeded": 1000000}'
  FROM retl.runs r WHERE r.id = } . $run;
fails_as($node, 'member', $forge, '42501', 'a forged run with a snapshot and counters');
fails_as($node, 'member', "UPDATE retl.runs SET snapshot = NULL, checkpoint = '{}' WHERE id = $run",
	'42501', "rewriting a finished run's snapshot and checkpoint");
fails_as($node, 'member', "UPDATE retl.runs SET status = 'queued' WHERE id = $run",
	'42501', "requeueing a finished run");
fails_as($node, 'member', "DELETE FROM retl.runs WHERE id = $run",
	'42501', 'deleting a run');
fails_as($node, 'member', "SELECT retl._enqueue_run(1, false, false)",
	'42501', "calling the catalog owner's enqueue");
fails_as($node, 'member', "SELECT retl._wake()", '42501', 'calling retl._wake');
is(sql($node, 'SELECT count(*) FROM retl.runs'), '1', 'no run was added');
is(sql($node, q{SELECT cursor_position FROM retl.sync_status WHERE sync = 's'}), $cursor,
	'the cursor did not move');

# the API still queues, stops and forces runs for the member
sql($node, 'UPDATE orders SET version = version + 1 WHERE id <= 5');
($rc, my $run2, $err) = psql_as($node, 'member', q{SELECT retl_sync_now('s')});
is($rc, 0, 'the member queues an incremental run') or diag($err);
is(wait_run($node, $run2), 'succeeded', 'it succeeds');
is(sql($node, "SELECT kind || ' ' || rows_read FROM retl.runs WHERE id = $run2"),
	'incremental 5', 'and reads the 5 changed rows');
$recv->config({ hang => JSON::PP::true });
($rc, my $run3, $err) = psql_as($node, 'member', q{SELECT retl_force_full('s')});
is($rc, 0, 'the member forces a full run') or diag($err);
wait_for(sub { sql($node, "SELECT status FROM retl.runs WHERE id = $run3") eq 'running' },
	60, 'the full run to start');
($rc, $out, $err) = psql_as($node, 'member', q{SELECT retl_stop('s')});
is($out, $run3, 'and stops it') or diag($err);
$recv->config({ hang => undef });
is(wait_run($node, $run3), 'stopped', 'the run stops');

# another member cannot reach the sync through the gate either
sql($node, 'CREATE ROLE other LOGIN IN ROLE retl_user');
my $sync_id = sql($node, q{SELECT id FROM retl.syncs WHERE name = 's'});
fails_as($node, 'other', "SELECT retl._run_control('enqueue', $sync_id)", '42501',
	"another role's sync through retl._run_control");
fails_as($node, 'other', "SELECT retl._run_control('stop', $sync_id)", '42501',
	"stopping another role's sync through retl._run_control");

done_testing();
