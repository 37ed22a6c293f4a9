# Rejected events: a 400 on a batch of 100 is split until the one bad
# event is isolated; only it goes to retl.failed_events (status, response
# body truncated to 4 KB, attempts, times, payload, key, messageId), and the
# run succeeds.  Later runs re-send failed events (by default, or with
# retl_retry_failed when option retry_failed is false) as the newest
# version of the row, and drop them from retl.failed_events once
# delivered.  An event over 32 KB is never sent to a Segment destination.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use RetlTest;
use RetlFaults;

my $N = 100;
my $BAD = 57;

my $node = retl_node('rejects');
my $recv = start_receiver();

# Row 57 carries a 5,000-character note; the receiver rejects any request
# that contains it, and its answer echoes the note: a response body over
# 4 KB.
my $note = 'n' x 5000;
create_orders($node, 'orders', $N);
sql($node, "ALTER TABLE orders ADD COLUMN note text");
sql($node, "UPDATE orders SET note = repeat('n', 5000) WHERE id = $BAD");
# the receiver's answer, as Python's json.dumps writes it
my $reject_body = qq({"error": "rejected", "match": "$note"});

create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 100, max_in_flight => 1, max_backoff_ms => 100);
create_track_sync($node, 's', 'orders', 'd');

# ---------------------------------------------------------------------
# A. One batch of 100; the receiver rejects event 57 with 400.
# ---------------------------------------------------------------------
$recv->config({ reject_match => $note });
my $run1 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run1), 'succeeded',
	'A: a run with one rejected event still succeeds');

my $reqs = $recv->requests;
is($reqs->[0]{events}, $N, "A: the first request carried all $N events");
is($reqs->[0]{status}, 400, 'A: ... and was answered 400');
my @isolated = grep { $_->{events} == 1 && $_->{body} =~ /\Q$note\E/ } @$reqs;
ok(@isolated && !grep({ $_->{status} != 400 } @isolated),
	'A: the bad event was isolated in a request of its own, answered 400');
ok(!grep({ $_->{status} == 400 && $_->{body} !~ /\Q$note\E/ } @$reqs),
	'A: no request without the bad event was rejected');
note('A: requests (events/status): '
	  . join(' ', map { "$_->{events}/$_->{status}" } @$reqs));

my @ok_ids = grep { $_ != $BAD } 1 .. $N;
check_ids(event_ids($recv->events(run_id => $run1)), \@ok_ids,
	'A: the 99 other events were delivered, once each');

my $r1 = run_row($node, $run1);
is($r1->{events_sent}, $N, "A: events_sent = $N");
is($r1->{events_succeeded}, $N - 1, 'A: events_succeeded = 99');
is($r1->{events_failed}, 1, 'A: events_failed = 1');
ok(!defined $r1->{error}, 'A: the run has no error') or diag("error: $r1->{error}");

my $fe = failed_events($node, 's');
is(scalar @$fe, 1, 'A: one row in retl.failed_events');
my $f = $fe->[0] // {};
is($f->{primary_key}, $BAD, 'A: it is event 57 (primary_key)');
is($f->{run_id}, $run1, 'A: it names the run');
is($f->{http_status}, 400, 'A: http_status = 400');
is(length($f->{response_body} // ''), 4096,
	'A: the response body is kept, truncated to 4 KB');
ok(($f->{response_body} // '') eq substr($reject_body, 0, 4096),
	'A: the response body is the start of the receiver\'s answer')
  or diag('response_body starts with: ' . substr($f->{response_body} // '', 0, 80));
cmp_ok($f->{attempts} // 0, '>=', 1, 'A: attempts is counted');
ok(defined $f->{first_failed_at} && defined $f->{last_failed_at},
	'A: first_failed_at and last_failed_at are set');
like($f->{error} // '', qr/400/, 'A: the error names the status');
my $payload = eval { decode_json($f->{payload} // '') };
is(dig($payload, 'properties', 'id'), $BAD, 'A: the payload is the event of row 57');
is(dig($payload, 'properties', 'note'), $note, 'A: ... in full');
ok(defined $f->{message_id} && $f->{message_id} eq ($payload->{messageId} // ''),
	'A: message_id is the messageId of the payload');
is(sql($node, "SELECT failed_events FROM retl.sync_status WHERE sync = 's'"),
	1, 'A: retl.sync_status counts 1 failed event');

# ---------------------------------------------------------------------
# B. The receiver accepts again: the next (incremental, nothing changed)
#    run re-sends the failed event by default, and it leaves the table.
# ---------------------------------------------------------------------
$recv->reset;
my $run2 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run2), 'succeeded', 'B: the next run succeeded');
is(run_row($node, $run2)->{kind}, 'incremental', 'B: it is incremental');
my $ev2 = $recv->events(run_id => $run2);
check_ids(event_ids($ev2), [$BAD], 'B: it re-sent the failed event, and only it');
is($ev2->[0]{messageId}, $f->{message_id},
	'B: with the same messageId (the row did not change)');
is(scalar @{ failed_events($node, 's') }, 0,
	'B: the delivered event left retl.failed_events');
my $r2 = run_row($node, $run2);
is($r2->{events_succeeded} . '/' . $r2->{events_failed} . '/' . $r2->{events_sent},
	'1/0/1', 'B: succeeded/failed/sent = 1/0/1');

# ---------------------------------------------------------------------
# C. Option retry_failed = false: normal runs leave failed events alone;
#    retl_retry_failed re-sends them, as the newest version of the row.
# ---------------------------------------------------------------------
sql($node, qq{SELECT retl_alter_sync('s', options => '{"retry_failed": false}')});
$recv->reset;
$recv->config({ reject_match => '"user-58"' });
sql($node, "UPDATE orders SET version = 2 WHERE id IN (58, 59)");
my $run3 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run3), 'succeeded', 'C: run 3 (58 rejected) succeeded');
check_ids(event_ids($recv->events(run_id => $run3)), [59], 'C: run 3 delivered 59');
$fe = failed_events($node, 's');
is(join(',', map { $_->{primary_key} } @$fe), '58', 'C: 58 is in retl.failed_events');

$recv->reset;
my $run4 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run4), 'succeeded', 'C: run 4 succeeded');
# Counted at the receiver, whatever run id the events carry: a stored
# payload re-sent as it was would carry run 3's.
is($recv->stats->{all_events}, 0,
	'C: with retry_failed false, a normal run does not re-send the failed event (the receiver got no event)');
is(scalar @{ failed_events($node, 's') }, 1, 'C: it is still in retl.failed_events');

# The row changes while its event waits in retl.failed_events.
sql($node, "UPDATE orders SET version = 3 WHERE id = 58");
$recv->reset;
my $run5 = sql($node, "SELECT retl_retry_failed('s')");
is(wait_run($node, $run5), 'succeeded', 'C: the retl_retry_failed run succeeded');
my $ev5 = $recv->events(run_id => $run5);
check_ids(event_ids($ev5), [58], 'C: it delivered row 58', exact => 0);
my @old = grep { (dig($_, 'properties', 'version') // 0) != 3 } @$ev5;
ok(@$ev5 && !@old, 'C: as the newest version of the row (version 3)');
is(scalar @{ failed_events($node, 's') }, 0, 'C: retl.failed_events is empty again');

# ---------------------------------------------------------------------
# D. Segment: an event over 32 KB is never sent; it is recorded in
#    retl.failed_events with the reason.  The destination posts to
#    <url>/v1/batch.
# ---------------------------------------------------------------------
sql($node, q{
CREATE TABLE big (id bigint PRIMARY KEY, user_id text NOT NULL, blob text);
INSERT INTO big SELECT g, 'user-' || g, CASE WHEN g = 3 THEN repeat('b', 40000) ELSE 'small' END
  FROM generate_series(1, 5) g;
SELECT retl_create_destination('seg', 'segment',
  jsonb_build_object('url', } . "'" . $recv->url . "'" . q{, 'write_key', 'wk', 'max_backoff_ms', 100));
});
create_track_sync($node, 'sbig', 'big', 'seg',
	mapping => { userId => 'user_id', event => { value => 'Big' } });
$recv->reset;
my $run6 = sql($node, "SELECT retl_sync_now('sbig')");
is(wait_run($node, $run6), 'succeeded', 'D: the run succeeded');
check_ids(event_ids($recv->events(path => '/v1/batch', run_id => $run6)), [ 1, 2, 4, 5 ],
	'D: the four small events were delivered to /v1/batch');
ok(!grep({ (dig($_, 'properties', 'id') // 0) == 3 } @{ $recv->all_events }),
	'D: the oversize event was never sent');
my $big_reqs = $recv->requests;
ok(@$big_reqs && !grep({ length($_->{body}) > 32 * 1024 } @$big_reqs),
	'D: no request carried it');
is($big_reqs->[0]{headers}{authorization}, 'Basic d2s6',
	'D: Basic auth with the write key as user name');
my $fe6 = failed_events($node, 'sbig');
is(scalar @$fe6, 1, 'D: one failed event');
is($fe6->[0]{primary_key}, 3, 'D: it is row 3');
like($fe6->[0]{error} // '', qr/over the destination's limit/,
	'D: the reason says it is over the destination\'s limit');
ok(!defined $fe6->[0]{http_status}, 'D: it has no HTTP status (never sent)');
cmp_ok(length($fe6->[0]{payload} // ''), '>', 32 * 1024, 'D: the payload is kept');
my $r6 = run_row($node, $run6);
is($r6->{events_succeeded} . '/' . $r6->{events_failed} . '/' . $r6->{events_sent},
	'4/1/5', 'D: succeeded/failed/sent = 4/1/5');

stop_ok($node);

done_testing();
