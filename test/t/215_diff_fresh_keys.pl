# How a content-diff run stores fingerprints.  Keys that had no
# fingerprint when the run began are written with a plain INSERT (a first
# run writes every key that way); a key stored meanwhile makes that
# INSERT fail with a unique violation, and the batch is then stored by
# the upsert, in a subtransaction's stead: the run succeeds and the key
# keeps the fingerprint of what was sent.  Only mirror syncs store the
# identity that deletion events carry.
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
sql($node, "INSERT INTO retl.fingerprints (sync_id, pk, fingerprint) VALUES ($v, '$N', 42)");
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

done_testing();
