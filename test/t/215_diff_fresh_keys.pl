# How a content-diff run stores fingerprints: a chunk for each
# acknowledged batch (retl.fingerprint_chunks), a key's last entry
# winning.  A key stored meanwhile, in a chunk the run did not load, gets
# the fingerprint of what the run sent: the run succeeds, and
# retl.fingerprints shows one fingerprint a key.  Only mirror syncs store
# the identity that deletion events carry; chunks of forgotten keys and
# stale entries are rewritten away.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;

my $N = 2000;
my $node = retl_node('difffresh');
my $recv = start_receiver();

sql($node, qq{
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 10) g;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, amount numeric);
INSERT INTO orders SELECT g, (g % 10) + 1, g FROM generate_series(1, $N) g;
CREATE VIEW order_view AS
SELECT o.id, 'user-' || c.id AS user_id, c.name, o.amount
  FROM orders o JOIN customers c ON c.id = o.customer_id;
CREATE TABLE members (id int PRIMARY KEY, user_id text NOT NULL, plan text);
INSERT INTO members SELECT g, 'm-' || g, 'free' FROM generate_series(1, 100) g;
});
create_webhook($node, 'd', $recv->url('/hook'), batch_size => 100, max_in_flight => 1);
create_track_sync($node, 'v', 'order_view', 'd');
create_sync($node, name => 'm', source => 'members', destination => 'd',
	event_type => 'identify', mode => 'mirror',
	mapping => { 'userId' => 'user_id', 'traits.plan' => 'plan' });
my $v = sql($node, "SELECT id FROM retl.syncs WHERE name = 'v'");
my $m = sql($node, "SELECT id FROM retl.syncs WHERE name = 'm'");

# The first run of v, slowed down (20 batches, one at a time, 300 ms
# each): while it runs, the last key gets a fingerprint that the run did
# not load, as if it had been stored twice.
$recv->config({ delay_ms => 300 });
my $run = queue_run($node, 'v');
$recv->wait_requests(1, 60, 'the first run of v sends');
sql($node, qq{INSERT INTO retl.fingerprint_chunks (sync_id, chunk, pks, fingerprints, previous)
  SELECT $v, coalesce(max(chunk), 0) + 1, ARRAY['$N'], ARRAY[42], ARRAY[0]
    FROM retl.fingerprint_chunks WHERE sync_id = $v});
is(wait_run($node, $run), 'succeeded', 'a fresh key stored meanwhile: the run succeeds');
$recv->config({ delay_ms => 0 });
my $row = run_row($node, $run);
is($row->{events_succeeded}, $N, 'every event succeeded');
check_ids(event_ids($recv->events(path => '/hook')), [ 1 .. $N ], 'each row once', exact => 1);
is(sql($node, "SELECT count(*) FROM retl.fingerprints WHERE sync_id = $v"), $N,
	'one fingerprint a key');
isnt(sql($node, "SELECT fingerprint FROM retl.fingerprints WHERE sync_id = $v AND pk = '$N'"),
	'42', 'the key stored meanwhile has the fingerprint of what was sent');
is(sql($node, "SELECT count(*) FROM retl.failed_events"), 0, 'nothing failed');

$recv->reset;
my (undef, $r2) = sync_run($node, 'v', 'unchanged run', kind => 'incremental');
is($r2->{events_sent}, 0, 'the unchanged run sends nothing (every fingerprint matches)');

is(sql($node, "SELECT count(identity) FROM retl.fingerprints WHERE sync_id = $v"), 0,
	'an upsert sync stores no identity');
sync_run($node, 'm', 'mirror first run', kind => 'full');
is(sql($node, "SELECT count(identity) FROM retl.fingerprints WHERE sync_id = $m"), 100,
	'a mirror sync stores the identity of every key');
sql($node, "DELETE FROM members WHERE id <= 3");
$recv->reset;
sync_run($node, 'm', 'mirror run after deletes', kind => 'incremental');
my @del = sort map { $_->{userId} // '' } @{ $recv->events(path => '/hook') };
is_deeply(\@del, [ 'm-1', 'm-2', 'm-3' ], 'the deletions carry the stored identities');

# Fingerprints of column values (0.4) against those of the event's content
# (kept by syncs made before 0.4): both detect exactly the changed rows.
is(sql($node, "SELECT fingerprints FROM retl.syncs WHERE name = 'v'"), 'values',
	'a new sync fingerprints column values');
create_track_sync($node, 'v_event', 'order_view', 'd');
sql($node, "UPDATE retl.syncs SET fingerprints = 'event' WHERE name = 'v_event'");
for my $s ('v', 'v_event')
{
	sync_run($node, $s, "$s: a run", kind => undef) if $s eq 'v_event';
	$recv->reset;
	my (undef, $u) = sync_run($node, $s, "$s: unchanged", kind => 'incremental');
	is($u->{events_sent}, 0, "$s: an unchanged run sends nothing");
}
sql($node, "UPDATE orders SET amount = amount + 1 WHERE id IN (7, 1500)");
sql($node, "UPDATE customers SET name = 'renamed' WHERE id = 3");    # orders with id % 10 = 2
for my $s ('v', 'v_event')
{
	$recv->reset;
	my ($run) = sync_run($node, $s, "$s: after changes", kind => 'incremental');
	my @ids = sort { $a <=> $b } map { $_->{properties}{id} } @{ $recv->events(run_id => $run) };
	my @want = sort { $a <=> $b } (7, 1500, grep { $_ % 10 == 2 && $_ != 1500 } 1 .. $N);
	is_deeply(\@ids, \@want, "$s: exactly the changed rows are sent (" . scalar(@want) . ")");
}

# Stale entries.  Each forced full run stores every key again (a chunk a
# batch of 100).  A run that loads more stale entries than live keys
# rewrites the chunks it loaded once it has read the source, keeping the
# entries that are still their key's last, in rows of up to about 8 kB
# (hundreds of keys); no fingerprint changes.
my $state = qq{SELECT md5(string_agg(pk || ' ' || fingerprint || ' ' || previous, ',' ORDER BY pk))
  FROM retl.fingerprints WHERE sync_id = $v};
my $entries = qq{SELECT sum(cardinality(pks)) FROM retl.fingerprint_chunks WHERE sync_id = $v};
my $rows = qq{SELECT count(*) FROM retl.fingerprint_chunks WHERE sync_id = $v};
my $before = sql($node, $state);
my $e0 = sql($node, $entries);
cmp_ok($e0 - $N, '>', 0, "some stale entries so far ($e0 entries)");
cmp_ok($e0 - $N, '<', $N, '... fewer than keys');
sync_run($node, 'v', 'forced full run 1', kind => 'full', full => 1);
is(sql($node, $entries), $e0 + $N, 'a forced full run stores every key again, and rewrites nothing');
sync_run($node, 'v', 'forced full run 2', kind => 'full', full => 1);
# (the batches still in flight when it rewrote, two of 100 at the most,
# left their loaded entries to the rewrite)
my $e2 = sql($node, $entries);
ok($e2 >= $N && $e2 <= $N + 200,
	"the next one loaded more stale entries than keys, and its own entries replaced them ($e2 entries)");
is(sql($node, $state), $before, 'no fingerprint changed');

# two runs that change 1,100 rows each: then 2,200 stale entries
for my $i (1, 2)
{
	sql($node, "UPDATE orders SET amount = amount + 1 WHERE id <= 1100");
	my (undef, $c) = sync_run($node, 'v', "change $i", kind => 'incremental');
	is($c->{events_sent}, 1100, "change $i: the changed rows are sent");
}
my $changed = sql($node, $state);
cmp_ok(sql($node, $rows), '>=', 40, '40 chunks or more before the rewrite');
$recv->reset;
my (undef, $r3) = sync_run($node, 'v', 'the run after them', kind => 'incremental');
is($r3->{events_sent}, 0, 'it sends nothing');
is(sql($node, $entries), $N, 'and rewrote the chunks: an entry a key');
my $after = sql($node, $rows);
ok($after >= 5 && $after <= 10, "... in $after rows of hundreds of keys");
is(sql($node, "SELECT count(*) FROM retl.fingerprint_chunks WHERE sync_id = $v"
	  . " AND cardinality(pks) < 200"), 1, '... all but one of them with 200 keys or more');
is(sql($node, q{SELECT pg_relation_size(reltoastrelid) FROM pg_class
  WHERE oid = 'retl.fingerprint_chunks'::regclass}), 0, 'no chunk was ever toasted: each fits its heap page');
is(sql($node, $state), $changed, 'no fingerprint changed');
$recv->reset;
my (undef, $r4) = sync_run($node, 'v', 'a run after the rewrite', kind => 'incremental');
is($r4->{events_sent}, 0, 'it finds every key unchanged');

done_testing();
