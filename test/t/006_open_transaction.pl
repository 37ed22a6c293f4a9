# A row written by a transaction that is still open when a run starts, and
# commits after it, is delivered by the next run.  Covered for a run that
# is incremental and for a first, full run, and for rows written in a
# subtransaction (SAVEPOINT) of the open transaction.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $N = 100;

my $node = retl_node('openxact');
my $recv = start_receiver();

create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 20, max_in_flight => 2);

# ---------------------------------------------------------------------
# A. Open while an incremental run runs.
# ---------------------------------------------------------------------
create_orders($node, 'orders', $N);
create_track_sync($node, 's', 'orders', 'd');

my $run1 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run1), 'succeeded', 'A: first (full) run succeeded');
check_ids(event_ids($recv->events(run_id => $run1)), [ 1 .. $N ],
	'A: first run sent every row');

my $bg = $node->background_psql('postgres', on_error_stop => 1);
$bg->query_safe(q{
BEGIN;
INSERT INTO orders VALUES (1001, 'user-1001', 1, 'late', now(), 1);
SAVEPOINT sp;
INSERT INTO orders VALUES (1002, 'user-1002', 2, 'late-sub', now(), 1);
RELEASE sp;
SAVEPOINT sp2;
UPDATE orders SET version = 5 WHERE id = 10;
RELEASE sp2;
});
# Committed while the transaction above is open, before the run: sent now.
sql($node, "INSERT INTO orders VALUES (1003, 'user-1003', 3, 'early', now(), 1)");

my $run2 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run2), 'succeeded', 'A: run during the open transaction succeeded');
is(run_row($node, $run2)->{kind}, 'incremental', 'A: it is incremental');
my $ids2 = event_ids($recv->events(run_id => $run2));
check_ids($ids2, [1003], 'A: it sent the committed row only');

$bg->query_safe('COMMIT');
$bg->quit;

my $run3 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run3), 'succeeded', 'A: run after the commit succeeded');
my $ids3 = event_ids($recv->events(run_id => $run3));
check_ids_at_least($ids3, [ 1001, 1002, 10 ],
	'A: the rows of the late transaction, subtransactions included, arrive in the next run');
my %allowed = map { $_ => 1 } (1001, 1002, 10, 1003);
my @extra = grep { !$allowed{ $_ // '' } } @$ids3;
ok(!@extra, 'A: and no unrelated row') or diag("extra: @extra[0 .. ($#extra < 9 ? $#extra : 9)]");
my ($e10) = grep { (dig($_, 'properties', 'id') // 0) == 10 } @{ $recv->events(run_id => $run3) };
is(dig($e10, 'properties', 'version'), 5, 'A: the row updated in a subtransaction is sent as updated');

# ---------------------------------------------------------------------
# B. Open while the first, full run runs.
# ---------------------------------------------------------------------
create_orders($node, 'orders2', $N);
create_track_sync($node, 's2', 'orders2', 'd');

$bg = $node->background_psql('postgres', on_error_stop => 1);
$bg->query_safe(q{
BEGIN;
SAVEPOINT sp;
INSERT INTO orders2 VALUES (2001, 'user-2001', 1, 'late', now(), 1);
RELEASE sp;
UPDATE orders2 SET version = 7 WHERE id = 20;
});

my $run4 = sql($node, "SELECT retl_sync_now('s2')");
is(wait_run($node, $run4), 'succeeded', 'B: full run during the open transaction succeeded');
is(run_row($node, $run4)->{kind}, 'full', 'B: it is full');
check_ids(event_ids($recv->events(run_id => $run4)), [ 1 .. $N ],
	'B: it sent the committed rows');
my ($e20) = grep { (dig($_, 'properties', 'id') // 0) == 20 } @{ $recv->events(run_id => $run4) };
is(dig($e20, 'properties', 'version'), 1, 'B: it sent row 20 as committed then');

$bg->query_safe('COMMIT');
$bg->quit;

my $run5 = sql($node, "SELECT retl_sync_now('s2')");
is(wait_run($node, $run5), 'succeeded', 'B: next run succeeded');
is(run_row($node, $run5)->{kind}, 'incremental', 'B: it is incremental');
my $ev5 = $recv->events(run_id => $run5);
check_ids(event_ids($ev5), [ 2001, 20 ],
	'B: the next run sent exactly the rows of the late transaction');
($e20) = grep { (dig($_, 'properties', 'id') // 0) == 20 } @$ev5;
is(dig($e20, 'properties', 'version'), 7, 'B: row 20 as updated');

stop_ok($node);

done_testing();
