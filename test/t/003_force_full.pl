# retl_force_full sends every row again, in a full run, with the same
# deterministic messageIds for unchanged rows.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $N = 2000;

my $node = retl_node('force');
my $recv = start_receiver();

create_orders($node, 'orders', $N);
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 100, max_in_flight => 4);
create_track_sync($node, 's', 'orders', 'd');

my $run1 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run1), 'succeeded', 'first (full) run succeeded');
my $ev1 = $recv->events(run_id => $run1);
check_ids(event_ids($ev1), [ 1 .. $N ], 'first run sent every row once');
my %mid1 = map { (dig($_, 'properties', 'id') // '') => $_->{messageId} } @$ev1;

# An incremental run with no change sends nothing.
my $run2 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run2), 'succeeded', 'incremental run succeeded');
is(run_row($node, $run2)->{kind}, 'incremental', 'it is incremental');
is(run_row($node, $run2)->{events_sent}, 0, 'and sends nothing');

# Force a full run.
$recv->reset;
my $run3 = sql($node, "SELECT retl_force_full('s')");
like($run3, qr/^\d+$/, 'retl_force_full returns a run id');
isnt($run3, $run2, 'a new run');
is(wait_run($node, $run3), 'succeeded', 'forced full run succeeded');
my $r3 = run_row($node, $run3);
is($r3->{kind}, 'full', 'the forced run is full');
is($r3->{rows_read}, $N, "rows_read = $N");
is($r3->{events_sent}, $N, "events_sent = $N");
is($r3->{events_succeeded}, $N, "events_succeeded = $N");
my $ev3 = $recv->events(run_id => $run3);
check_ids(event_ids($ev3), [ 1 .. $N ],
	'the forced full run sent every row again, once');
is($recv->stats->{all_events}, $N, 'and nothing else');

# messageId is deterministic: same sync, key and content, same id.
my @changed =
  grep { !defined $_->{messageId} || ($mid1{ dig($_, 'properties', 'id') // '' } // '') ne $_->{messageId} } @$ev3;
ok(!@changed, 'unchanged rows keep their messageId across runs')
  or diag(scalar(@changed) . ' events with another messageId, e.g. id '
	  . (dig($changed[0], 'properties', 'id') // 'undef'));

# A changed row gets another messageId in the next forced run.
sql($node, "UPDATE orders SET amount = 1.5, version = 2 WHERE id = 7");
$recv->reset;
my $run4 = sql($node, "SELECT retl_force_full('s')");
is(wait_run($node, $run4), 'succeeded', 'second forced full run succeeded');
is(run_row($node, $run4)->{kind}, 'full', 'it is full');
my $ev4 = $recv->events(run_id => $run4);
check_ids(event_ids($ev4), [ 1 .. $N ], 'it sent every row again');
my ($e7) = grep { (dig($_, 'properties', 'id') // 0) == 7 } @$ev4;
my ($e8) = grep { (dig($_, 'properties', 'id') // 0) == 8 } @$ev4;
isnt($e7 && $e7->{messageId}, $mid1{7}, 'a changed row has a new messageId');
is($e8 && $e8->{messageId}, $mid1{8}, 'an unchanged row keeps it');

# After the forced full run, runs are incremental again.
$recv->reset;
my $run5 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run5), 'succeeded', 'next run succeeded');
is(run_row($node, $run5)->{kind}, 'incremental', 'next run is incremental');
is($recv->stats->{all_events}, 0, 'it sends nothing');

stop_ok($node);

done_testing();
