# Freezing keeps the raw xmin: rows committed after a run and frozen by
# VACUUM (FREEZE) or COPY ... FREEZE before the next run are still sent by
# it.  (Code that read xmin through HeapTupleHeaderGetXmin would see 2, the
# frozen xid, and skip them.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;

my $N = 300;

my $node = retl_node('freeze');
my $recv = start_receiver();

create_orders($node, 'orders', $N);
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 50, max_in_flight => 2);
create_track_sync($node, 's', 'orders', 'd');
is(sync_status($node, 's')->{detector}, 'xmin', 'a table uses the xmin detector');

my ($run1) = sync_run($node, 's', 'first run', kind => 'full');
check_ids(event_ids($recv->events(run_id => $run1)), [ 1 .. $N ],
	'first run sent every row once');

# ---------------------------------------------------------------------
# A. VACUUM (FREEZE) between two runs.
# ---------------------------------------------------------------------
my @new = ($N + 1 .. $N + 50);
sql($node, qq{
INSERT INTO orders SELECT g, 'user-' || g, 3.5, 'frozen', now(), 1
  FROM generate_series($new[0], $new[-1]) g;
UPDATE orders SET version = 2, amount = 99.5 WHERE id IN (5, 150);
});
my @changed = (@new, 5, 150);

# A row written by a transaction that is open during a run, committed after
# it and frozen before the next run.
my $bg = $node->background_psql('postgres', on_error_stop => 1);
$bg->query_safe(q{
BEGIN;
INSERT INTO orders VALUES (900, 'user-900', 9, 'open-then-frozen', now(), 1);
});
my ($run2) = sync_run($node, 's', 'A: run while a transaction is open',
	kind => 'incremental');
check_ids(event_ids($recv->events(run_id => $run2)), \@changed,
	'A: it sent exactly the rows committed since run 1');
$bg->query_safe('COMMIT');
$bg->quit;

my $raw_before = sql($node,
	"SELECT string_agg(xmin::text, ',' ORDER BY id) FROM orders WHERE id IN (5, 900, $new[0])");

# Nothing else runs: VACUUM (FREEZE) freezes every tuple.  Repeat it until
# it has (a concurrent snapshot could hold it back).
my @watch = (@new, 5, 150, 900);
my $in = join(',', @watch);
my $frozen = wait_for(
	sub {
		sql($node, 'VACUUM (FREEZE) orders');
		my $c = frozen_count($node, 'orders', "t.id IN ($in)");
		return $c == @watch ? $c : 0;
	},
	60, 'VACUUM (FREEZE) to freeze the new rows');
is($frozen, scalar @watch, 'A: the new rows are frozen on disk (HEAP_XMIN_FROZEN)');
is(sql($node,
	"SELECT string_agg(xmin::text, ',' ORDER BY id) FROM orders WHERE id IN (5, 900, $new[0])"),
	$raw_before, 'A: the xmin column still shows the raw xmin after freezing');

$recv->reset;
my ($run3, $r3) = sync_run($node, 's', 'A: run after VACUUM (FREEZE)',
	kind => 'incremental');
is($r3->{full_reason}, undef, 'A: VACUUM (FREEZE) does not make the run full');
my $ev3 = $recv->events(run_id => $run3);
check_ids(event_ids($ev3), [900],
	'A: the frozen row of the late transaction is sent, and nothing else');
my $e900 = by_key($ev3)->{900};
is(dig($e900, 'properties', 'status'), 'open-then-frozen', 'A: with its content');

# New rows, frozen before the next run: the common case.
my @new2 = (1001 .. 1040);
sql($node, qq{
INSERT INTO orders SELECT g, 'user-' || g, 4.5, 'frozen2', now(), 1
  FROM generate_series($new2[0], $new2[-1]) g;
UPDATE orders SET version = 3 WHERE id = 7;
});
$frozen = wait_for(
	sub {
		sql($node, 'VACUUM (FREEZE) orders');
		my $c = frozen_count($node, 'orders', "t.id >= $new2[0] OR t.id = 7");
		return $c == @new2 + 1 ? $c : 0;
	},
	60, 'VACUUM (FREEZE) to freeze the second batch');
is($frozen, @new2 + 1, 'A: the second batch is frozen on disk');
$recv->reset;
my ($run4) = sync_run($node, 's', 'A: second run after VACUUM (FREEZE)',
	kind => 'incremental');
check_ids(event_ids($recv->events(run_id => $run4)), [ @new2, 7 ],
	'A: rows inserted and updated, then frozen, are sent exactly once');

# ---------------------------------------------------------------------
# B. COPY ... FREEZE (needs the table truncated in the same transaction:
#    the TRUNCATE rightly makes the next run full).
# ---------------------------------------------------------------------
my @copy = (2001 .. 2100);
my $data = join('', map { "$_\tuser-$_\t5.25\tcopied\t2024-03-01 00:00:00+00\t1\n" } @copy);
sql($node, "BEGIN;\nTRUNCATE orders;\nCOPY orders FROM STDIN (FREEZE);\n${data}\\.\nCOMMIT;");
is(sql($node, 'SELECT count(*) FROM orders'), scalar @copy, 'B: COPY FREEZE loaded the rows');
is(frozen_count($node, 'orders'), scalar @copy,
	'B: COPY FREEZE wrote them frozen (HEAP_XMIN_FROZEN)');

$recv->reset;
my ($run5, $r5) = sync_run($node, 's', 'B: run after TRUNCATE + COPY FREEZE', kind => 'full');
like($r5->{full_reason} // '', qr/truncated or rewritten/,
	'B: the run is full because of the TRUNCATE');
check_ids(event_ids($recv->events(run_id => $run5)), \@copy,
	'B: every row written by COPY FREEZE is sent once');

# After that, freezing again changes nothing: the next run sends nothing.
sql($node, 'VACUUM (FREEZE) orders');
$recv->reset;
my ($run6, $r6) = sync_run($node, 's', 'B: next run', kind => 'incremental');
is($r6->{events_sent}, 0, 'B: a run with no change after freezing sends nothing');
is($recv->stats->{all_events}, 0, 'B: the receiver got nothing');

stop_ok($node);

done_testing();
