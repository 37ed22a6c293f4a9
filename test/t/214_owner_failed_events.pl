# A sync owned by an ordinary role records its invalid rows in
# retl.failed_events and goes on.  The worker reads the source as the owner,
# but retl's own writes in the same page are the worker's: the owner has no
# INSERT on retl.failed_events.  The build before the fix failed such runs
# with "permission denied for table failed_events" at the first NULL or
# duplicate key of a diff view, or the first event over the destination's
# per-event limit.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;
use RetlRead;

my $node = retl_node('ownerfailed');
my $recv = start_receiver();

sql($node, q{
CREATE ROLE owner_c LOGIN IN ROLE retl_user;
CREATE SCHEMA c AUTHORIZATION owner_c;
});
my $hook = $recv->url('/c');
as_role($node, 'owner_c', qq{
CREATE TABLE c.raw (k int, user_id text, note text);
INSERT INTO c.raw VALUES (1, 'u1', 'x'), (NULL, 'unull', 'x'), (2, 'u2', 'x'),
						 (2, 'u2-dup', 'x'), (3, 'u3', 'x');
CREATE VIEW c.v AS SELECT k AS id, user_id, note FROM c.raw;
CREATE TABLE c.t (id int PRIMARY KEY, user_id text, note text);
INSERT INTO c.t SELECT g, 'u' || g, CASE WHEN g = 7 THEN repeat('y', 3000) ELSE 'x' END
  FROM generate_series(1, 10) g;
SELECT retl_create_destination('dest_c', 'webhook',
  '{"url": "$hook", "batch_size": 10, "max_batch_bytes": 1024}');
SELECT retl_create_sync('c_view', 'c.v', 'dest_c', 'track',
  '{"userId": "user_id", "event": {"value": "C"}, "properties.id": "id"}', 'id');
SELECT retl_create_sync('c_table', 'c.t', 'dest_c', 'track',
  '{"userId": "user_id", "event": {"value": "C"}, "properties.id": "id",
    "properties.note": "note"}', 'id');
}, 'owner_c creates its sources and syncs');

my $rv = as_role($node, 'owner_c', "SELECT retl_sync_now('c_view')", 'queue c_view');
is(wait_run($node, $rv), 'succeeded', 'the diff view run with a NULL and a duplicate key succeeds');
check_ids(event_ids($recv->events(run_id => $rv)), [ 1, 2, 3 ],
	'the rows with valid keys are sent, the first row of key 2 once', exact => 1);
is(sql($node, "SELECT string_agg(coalesce(primary_key, 'NULL') || ': ' || error, '; ' ORDER BY primary_key NULLS FIRST)"
	  . " FROM retl.failed_events WHERE run_id = $rv"),
	'NULL: the primary key is NULL; 2: duplicate primary key',
	'both invalid rows are in retl.failed_events');

my $rt = as_role($node, 'owner_c', "SELECT retl_sync_now('c_table')", 'queue c_table');
is(wait_run($node, $rt), 'succeeded', 'the table run with an oversize event succeeds');
check_ids(event_ids($recv->events(run_id => $rt)), [ 1 .. 6, 8 .. 10 ],
	'every other row is sent', exact => 1);
like(sql($node, "SELECT primary_key || ': ' || error FROM retl.failed_events WHERE run_id = $rt"),
	qr/^7: event is \d+ bytes, over the destination's limit of 1024 bytes$/,
	'the oversize event is in retl.failed_events');
is(sql($node, "SELECT events_sent || ' ' || events_succeeded || ' ' || events_failed"
	  . " FROM retl.runs WHERE id = $rt"), '10 9 1', 'events_sent = succeeded + failed');

done_testing();
