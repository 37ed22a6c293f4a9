# Incremental sync: after inserts and updates a run sends exactly those
# rows, and a run with no change sends nothing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $N = 1000;

my $node = retl_node('incr');
my $recv = start_receiver();

create_orders($node, 'orders', $N);
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 50, max_in_flight => 4);
create_track_sync($node, 's', 'orders', 'd');

# 1. The first run is full.
my $run1 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run1), 'succeeded', 'first run succeeded');
is(run_row($node, $run1)->{kind}, 'full', 'first run is full');
check_ids(event_ids($recv->events(run_id => $run1)), [ 1 .. $N ],
	'first run sent every row once');

# 2. No change: an incremental run that sends nothing.
$recv->reset;
my $run2 = sql($node, "SELECT retl_sync_now('s')");
isnt($run2, $run1, 'a new run after the first one finished');
is(wait_run($node, $run2), 'succeeded', 'run with no change succeeded');
my $r2 = run_row($node, $run2);
is($r2->{kind}, 'incremental', 'second run is incremental');
is($r2->{events_sent}, 0, 'no change: events_sent = 0');
is($r2->{events_succeeded}, 0, 'no change: events_succeeded = 0');
is($recv->stats->{all_events}, 0, 'no change: the receiver got no event');

# 3. Inserts and updates, some in subtransactions, one row updated twice,
#    one row inserted and then updated.
my @inserted = ($N + 1 .. $N + 10);
my @updated = (1, 2, 3, 500, 999, $N);
sql($node, qq{
INSERT INTO orders SELECT g, 'user-' || g, 7.5, 'new',
	   timestamptz '2024-06-01 12:00:00+00', 1
  FROM generate_series($inserted[0], $inserted[-1]) g;
UPDATE orders SET amount = 42.5, version = 2 WHERE id IN (1, 2, 3);
BEGIN;
SAVEPOINT a;
UPDATE orders SET amount = 43.5, version = 2 WHERE id = 500;
RELEASE a;
SAVEPOINT b;
UPDATE orders SET amount = 44.5, version = 2 WHERE id = 999;
ROLLBACK TO b;
UPDATE orders SET amount = 45.5, version = 2 WHERE id = 999;
COMMIT;
UPDATE orders SET version = 2 WHERE id = $N;
UPDATE orders SET version = 3, status = 'refunded' WHERE id = $N;
UPDATE orders SET version = 2 WHERE id = $inserted[0];
});
# A statement that changes nothing visible: no row is updated.
sql($node, "UPDATE orders SET version = 9 WHERE id < 0");

$recv->reset;
my $run3 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run3), 'succeeded', 'incremental run succeeded');
my $r3 = run_row($node, $run3);
is($r3->{kind}, 'incremental', 'run after changes is incremental');
my $ev3 = $recv->events(run_id => $run3);
check_ids(event_ids($ev3), [ @inserted, @updated ],
	'the incremental run sent exactly the inserted and updated rows, once');
is($r3->{events_sent}, scalar(@inserted) + scalar(@updated),
	'events_sent counts them');
is($r3->{events_succeeded}, $r3->{events_sent}, 'all of them succeeded');
is($recv->stats->{all_events}, scalar @$ev3,
	'nothing else reached the receiver');

# The events carry the newest version of each row.
my %by_id = map { (dig($_, 'properties', 'id') // 'undef') => $_ } @$ev3;
my %want = (
	1 => [ 42.5, 2 ],
	2 => [ 42.5, 2 ],
	3 => [ 42.5, 2 ],
	500 => [ 43.5, 2 ],
	999 => [ 45.5, 2 ],
	$N => [ ($N % 1000) + 0.25, 3 ],
	$inserted[0] => [ 7.5, 2 ],
	$inserted[1] => [ 7.5, 1 ],);
my @wrong;
for my $id (sort { $a <=> $b } keys %want)
{
	my $p = dig($by_id{$id}, 'properties') // {};
	my ($amount, $version) = @{ $want{$id} };
	push @wrong, "id $id: amount " . ($p->{amount} // 'undef')
	  . " version " . ($p->{version} // 'undef')
	  . ", want $amount / $version"
	  unless defined $p->{amount} && defined $p->{version}
	  && abs($p->{amount} - $amount) < 1e-9 && $p->{version} == $version;
}
ok(!@wrong, 'the events carry the rows as they are now')
  or diag(join("\n", @wrong));
is(dig($by_id{$N}, 'properties', 'status'), 'refunded',
	'a row updated twice is sent once, as it is now');
is(dig($by_id{1}, 'context', 'sources', 'job_run_id'), $run3,
	'events carry the incremental run id');

# 4. Nothing changed since: the next run sends nothing.
$recv->reset;
my $run4 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run4), 'succeeded', 'next run succeeded');
my $r4 = run_row($node, $run4);
is($r4->{kind}, 'incremental', 'next run is incremental');
is($r4->{events_sent}, 0, 'next run sent 0 events');
is($recv->stats->{all_events}, 0, 'the receiver got nothing');

is(sql($node, "SELECT last_run_id || ' ' || next_run_kind FROM retl.sync_status WHERE sync = 's'"),
	"$run4 incremental", 'sync_status follows the runs');

stop_ok($node);

done_testing();
