# Mirror mode: deleted keys of an identify sync become deletion events
# (an identify with the mapped traits set to null, or a track event named
# by on_delete; "skip" only counts them), carrying the identity that was
# last sent.  A diff run stopped in the middle loses nothing.  TRUNCATE and
# re-inserting identical rows re-sends them with the same messageIds.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;
use JSON::PP ();

my $node = retl_node('mirror');
my $recv = start_receiver();

sql($node, q{
CREATE TABLE users (id int PRIMARY KEY, user_id text NOT NULL, email text,
					plan text, version int NOT NULL DEFAULT 1);
INSERT INTO users SELECT g, 'u-' || g, 'u' || g || '@example.com', 'free', 1
  FROM generate_series(1, 20) g;
});
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 10, max_in_flight => 2);

my %identify = (
	userId => 'user_id',
	'traits.email' => 'email',
	'traits.plan' => 'plan',
	'traits.id' => 'id',
);

# ---------------------------------------------------------------------
# mirror on a track sync is refused with a hint.
# ---------------------------------------------------------------------
my ($rc, $out, $err) = $node->psql('postgres', q{\set VERBOSITY verbose
SELECT retl_create_sync(name => 't', source => 'users', destination => 'd',
	event_type => 'track', mapping => '{"userId": "user_id", "event": {"value": "X"}}',
	primary_key => 'id', mode => 'mirror')});
isnt($rc, 0, 'mode mirror on a track sync is an error');
like($err, qr/22023/, 'with SQLSTATE invalid_parameter_value');
like($err, qr/mirror.*track|track.*mirror/i, 'the message names mirror and track');
like($err, qr/HINT:\s+\S/, 'and it has a hint');

# ---------------------------------------------------------------------
# Three mirror syncs of the same table: default, on_delete event, skip.
# ---------------------------------------------------------------------
for my $s ([ 'm', {} ], [ 'me', { on_delete => { event => 'User Deleted' } } ],
	[ 'ms', { on_delete => 'skip' } ])
{
	create_sync($node, name => $s->[0], source => 'users', destination => 'd',
		event_type => 'identify', mapping => \%identify, mode => 'mirror',
		options => { unmapped => 'drop', %{ $s->[1] } });
	my $st = sync_status($node, $s->[0]);
	is($st->{detector}, 'diff', "$s->[0]: a mirror sync uses the diff detector");
	is($st->{mode}, 'mirror', "$s->[0]: mode is mirror");
	my ($r) = sync_run($node, $s->[0], "$s->[0]: first run", kind => 'full');
	check_ids(event_ids($recv->events(run_id => $r)), [ 1 .. 20 ],
		"$s->[0]: first run sent every row");
}

# Deletes; an update; a row whose identity changes and is then deleted
# before the next run (the deletion carries the identity last sent).
sql($node, q{
DELETE FROM users WHERE id IN (3, 4);
UPDATE users SET plan = 'pro', version = 2 WHERE id = 5;
UPDATE users SET user_id = 'u-7-renamed' WHERE id = 7;
DELETE FROM users WHERE id = 7;
});
my @gone = (3, 4, 7);

$recv->reset;
my %run;
for my $s ('m', 'me', 'ms')
{
	my $r;
	($run{$s}, $r) = sync_run($node, $s, "$s: run after the deletes", kind => 'incremental');
	is($r->{rows_deleted}, 3, "$s: rows_deleted = 3");
}

# Default: identify, traits set to null, context.retl.deleted.
my $ev = $recv->events(sync => 'm');
my @del = grep { dig($_, 'context', 'retl', 'deleted') } @$ev;
my @upd = grep { !dig($_, 'context', 'retl', 'deleted') } @$ev;
check_ids(event_ids(\@upd), [5], 'm: the updated row is sent');
is(scalar @del, 3, 'm: one deletion event per deleted key');
is_deeply([ sort map { $_->{userId} // 'undef' } @del ], [ 'u-3', 'u-4', 'u-7' ],
	'm: deletion events carry the userId last sent for each key');
my @bad = grep {
	($_->{type} // '') ne 'identify'
	  || ref $_->{traits} ne 'HASH'
	  || join(',', sort keys %{ $_->{traits} }) ne 'email,id,plan'
	  || grep { defined } values %{ $_->{traits} }
} @del;
ok(!@bad, 'm: each is an identify whose mapped traits (email, id, plan) are all null')
  or diag(explain \@bad);
is(scalar(grep { ($_->{messageId} // '') =~ /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/ } @del),
	3, 'm: deletion events have messageIds');
is(dig($del[0], 'context', 'sources', 'job_run_id'), $run{m}, 'm: and the run id');

# on_delete event: a track event with that name.
$ev = $recv->events(sync => 'me');
my @del_e = grep { dig($_, 'context', 'retl', 'deleted') } @$ev;
is(scalar @del_e, 3, 'me: one deletion event per deleted key');
is(scalar(grep { ($_->{type} // '') eq 'track' && ($_->{event} // '') eq 'User Deleted' } @del_e),
	3, 'me: each is a track event "User Deleted"');
is_deeply([ sort map { $_->{userId} // 'undef' } @del_e ], [ 'u-3', 'u-4', 'u-7' ],
	'me: with the userId last sent');
check_ids(event_ids([ grep { !dig($_, 'context', 'retl', 'deleted') } @$ev ]), [5],
	'me: the updated row is sent');

# skip: counted only.
$ev = $recv->events(sync => 'ms');
check_ids(event_ids($ev), [5], 'ms: only the updated row is sent');
ok(!grep({ dig($_, 'context', 'retl', 'deleted') } @$ev), 'ms: no deletion event');

# The deleted keys are forgotten once acknowledged: the next runs send nothing.
$recv->reset;
for my $s ('m', 'me', 'ms')
{
	my ($id, $r) = sync_run($node, $s, "$s: run with no change");
	is($r->{events_sent}, 0, "$s: nothing sent");
	is($r->{rows_deleted}, 0, "$s: nothing deleted again");
}
is(sql($node, q{SELECT count(*) FROM retl.fingerprints f JOIN retl.syncs s ON s.id = f.sync_id
				  WHERE s.name IN ('m', 'me', 'ms') AND f.pk IN ('3', '4', '7')}),
	0, 'no fingerprint is left for the deleted keys');

# A key that comes back is sent as an upsert again.
sql($node, "INSERT INTO users VALUES (3, 'u-3', 'back\@example.com', 'free', 1)");
$recv->reset;
my ($rb) = sync_run($node, 'm', 'm: run after a deleted key came back');
check_ids(event_ids($recv->events(run_id => $rb)), [3], 'm: the key is sent again');
ok(!dig($recv->events(run_id => $rb)->[0], 'context', 'retl', 'deleted'),
	'm: as a normal identify');

# ---------------------------------------------------------------------
# Mirror only deletes what it sent: a key whose event the destination
# rejected, then deleted from the source, gets no deletion event, and the
# destination is not left with a live profile of the deleted key.
# ---------------------------------------------------------------------
sql($node, "INSERT INTO users VALUES (50, 'u-50', 'u50\@example.com', 'free', 1), (51, 'u-51', 'u51\@example.com', 'free', 1)");
$recv->reset;
$recv->config({ reject_match => '"u-50"' });
my $rj = queue_run($node, 'm');
my $rj_status = wait_run($node, $rj);
is($rj_status, 'succeeded',
	'rejected: the run succeeds (the 400 splits the batch down to u-50, a failed event)');
$recv->config({ reject_match => undef });
check_ids(event_ids($recv->events(run_id => $rj)), [51], 'rejected: only u-51 was accepted');
is(sql($node, q{SELECT count(*) FROM retl.failed_events f JOIN retl.syncs s ON s.id = f.sync_id
				  WHERE s.name = 'm' AND f.primary_key = '50'}), 1,
	'rejected: u-50 is in retl.failed_events');
sql($node, 'DELETE FROM users WHERE id IN (50, 51)');
my ($rj2, $rrj2) = sync_run($node, 'm', 'rejected: run after the delete');
my @u50 = grep { ($_->{userId} // '') eq 'u-50' } @{ $recv->events(sync => 'm') };
ok(!grep({ dig($_, 'context', 'retl', 'deleted') } @u50),
	'rejected: no deletion event for a key the destination never accepted');
ok(!@u50 || dig($u50[-1], 'context', 'retl', 'deleted'),
	'rejected: the destination is not left with a live profile of the deleted key')
  or diag('last event received for u-50: ' . JSON::PP->new->canonical->encode($u50[-1]));
my @u51 = grep { ($_->{userId} // '') eq 'u-51' } @{ $recv->events(run_id => $rj2) };
is(scalar(grep { dig($_, 'context', 'retl', 'deleted') } @u51), 1,
	'rejected: the accepted key u-51 gets its deletion event');
sync_run($node, 'm', 'rejected: one more run');
@u50 = grep { ($_->{userId} // '') eq 'u-50' } @{ $recv->events(sync => 'm') };
ok(!@u50 || dig($u50[-1], 'context', 'retl', 'deleted'),
	'rejected: nor after one more run');

# ---------------------------------------------------------------------
# A mirror (diff) run stopped in the middle: nothing is lost next run.
# ---------------------------------------------------------------------
sql($node, q{
CREATE TABLE people (id int PRIMARY KEY, user_id text NOT NULL, email text,
					 plan text, version int NOT NULL DEFAULT 1);
INSERT INTO people SELECT g, 'p-' || g, 'p' || g || '@example.com', 'free', 1
  FROM generate_series(1, 400) g;
CREATE VIEW people_v AS SELECT * FROM people;
});
# Through a view: the diff run reads a holdable cursor.
create_sync($node, name => 'mp', source => 'people_v', destination => 'd',
	event_type => 'identify', mapping => \%identify, mode => 'mirror',
	options => { unmapped => 'drop' });
my ($mp1) = sync_run($node, 'mp', 'mp: first run', kind => 'full');
check_ids(event_ids($recv->events(run_id => $mp1)), [ 1 .. 400 ], 'mp: first run sent every row');

sql($node, "UPDATE people SET plan = 'pro', version = 2 WHERE id > 10");
sql($node, "DELETE FROM people WHERE id <= 10");
my @upd2 = (11 .. 400);
$recv->reset;
$recv->config({ delay_ms => 150 });
my $mp2 = queue_run($node, 'mp');
$recv->wait_events(30, 60, 'the diff run to deliver a few batches');
is(sql($node, "SELECT retl_stop('mp')"), $mp2, 'retl_stop stops the running diff run');
is(wait_run($node, $mp2), 'stopped', 'the diff run ends stopped');
my $r2 = run_row($node, $mp2);
cmp_ok($r2->{events_succeeded}, '<', scalar @upd2, 'it stopped before sending everything');
my @acked = grep { defined } @{ event_ids($recv->events(run_id => $mp2)) };
is($r2->{events_succeeded}, scalar @acked, 'events_succeeded = events acknowledged');

$recv->config({ delay_ms => 0 });
my ($mp3, $r3) = sync_run($node, 'mp', 'mp: run after the stop', kind => 'incremental');
my $ev3 = $recv->events(run_id => $mp3);
my @upd3 = grep { !dig($_, 'context', 'retl', 'deleted') } @$ev3;
my @del3 = grep { dig($_, 'context', 'retl', 'deleted') } @$ev3;
my %acked = map { $_ => 1 } @acked;
check_ids(event_ids(\@upd3), [ grep { !$acked{$_} } @upd2 ],
	'mp: the next run sent exactly the updated rows the stopped run had not delivered');
my $all = $recv->events(sync => 'mp');
check_ids_at_least(event_ids([ grep { !dig($_, 'context', 'retl', 'deleted') } @$all ]),
	\@upd2, 'mp: every updated row was delivered by the two runs');
is_deeply([ sort map { $_->{userId} // 'undef' } grep { dig($_, 'context', 'retl', 'deleted') } @$all ],
	[ sort map { "p-$_" } 1 .. 10 ],
	'mp: every deleted key got exactly one deletion event');
my @stale = grep { (dig($_, 'traits', 'plan') // '') ne 'pro' } @upd3;
ok(!@stale, 'mp: the rows are sent as updated');
my ($mp4, $r4) = sync_run($node, 'mp', 'mp: run with no change');
is($r4->{events_sent}, 0, 'mp: then nothing is left to send');

# ---------------------------------------------------------------------
# TRUNCATE and identical rows again, on an xmin sync: new row versions.
# ---------------------------------------------------------------------
create_orders($node, 'orders', 300);
create_track_sync($node, 'x', 'orders', 'd');
$recv->reset;
my ($x1) = sync_run($node, 'x', 'x: first run', kind => 'full');
my $evx1 = $recv->events(run_id => $x1);
check_ids(event_ids($evx1), [ 1 .. 300 ], 'x: first run sent every row');
my %mid = map { dig($_, 'properties', 'id') => $_->{messageId} } @$evx1;

sql($node, 'TRUNCATE orders');
create_orders($node, 'orders', 300, insert_only => 1);
$recv->reset;
my ($x2, $rx2) = sync_run($node, 'x', 'x: run after TRUNCATE and re-insert', kind => 'full');
like($rx2->{full_reason} // '', qr/truncated/, 'x: the run is full because of the TRUNCATE');
my $evx2 = $recv->events(run_id => $x2);
check_ids(event_ids($evx2), [ 1 .. 300 ], 'x: every re-inserted row is sent again');
# re-inserted rows are new row versions: new ids (issue 14 item 6), so a
# destination that deduplicates takes them as the rows' latest state
my @same = grep { ($mid{ dig($_, 'properties', 'id') // '' } // '') eq ($_->{messageId} // 'none') } @$evx2;
ok(!@same, 'x: re-inserted rows are new versions, with new messageIds')
  or diag(scalar(@same) . ' rows with their old messageId');

stop_ok($node);

done_testing();
