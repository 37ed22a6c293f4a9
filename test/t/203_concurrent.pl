# Writes from other connections while an incremental run is reading and
# sending (made long by a slow receiver): every row they commit is sent by
# this run or the next, none is missing, and the next run sends exactly the
# rows written since this run's snapshot.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;

my $N = 3000;

my $node = retl_node('concurrent');
my $recv = start_receiver();

create_orders($node, 'orders', $N);
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 10, max_in_flight => 1);
create_track_sync($node, 's', 'orders', 'd');

my ($run1) = sync_run($node, 's', 'first run', kind => 'full');
check_ids(event_ids($recv->events(run_id => $run1)), [ 1 .. $N ],
	'first run sent every row once');

# Changes before run 2: every tenth row, spread over the whole table.
my @before = grep { $_ % 10 == 0 } 1 .. $N;
sql($node, "UPDATE orders SET version = 2 WHERE id % 10 = 0");

# A transaction that is open when run 2 starts and commits while it runs.
my $early = $node->background_psql('postgres', on_error_stop => 1);
$early->query_safe(q{
BEGIN;
INSERT INTO orders VALUES (8001, 'user-8001', 1, 'open at start', now(), 1);
UPDATE orders SET version = 7 WHERE id = 2001;
});

$recv->reset;
$recv->config({ delay_ms => 150 });
my $run2 = queue_run($node, 's');
$recv->wait_events(20, 60, 'run 2 to deliver its first batches');
is(run_row($node, $run2)->{status}, 'running', 'run 2 is running');

# While it runs: single-row autocommit inserts, updates of rows run 2 has
# already read and of rows it has not read yet, a multi-row transaction,
# and a row inserted and updated again.
my $bg = $node->background_psql('postgres', on_error_stop => 1);
my @during_ins = (5001 .. 5060);
my @during_upd = (3, 1500, 2999, 10, 2990);
for my $i (0 .. $#during_ins)
{
	my $id = $during_ins[$i];
	$bg->query_safe("INSERT INTO orders VALUES ($id, 'user-$id', 2, 'during', now(), 1)");
	if ($i % 12 == 0)
	{
		my $u = $during_upd[ $i / 12 ];
		$bg->query_safe("UPDATE orders SET version = 3, status = 'during' WHERE id = $u");
	}
}
$bg->query_safe(q{
BEGIN;
INSERT INTO orders SELECT g, 'user-' || g, 3, 'during-batch', now(), 1
  FROM generate_series(5101, 5120) g;
UPDATE orders SET version = 4 WHERE id = 5001;
COMMIT;
});
$early->query_safe('COMMIT');
$early->quit;
my @during = (@during_ins, 5101 .. 5120, @during_upd, 8001, 2001);

my $st = run_row($node, $run2)->{status};
is($st, 'running', 'run 2 was still running when the concurrent writes had committed');
$bg->quit;

$recv->config({ delay_ms => 0 });
is(wait_run($node, $run2), 'succeeded', 'run 2 succeeded');
my $r2 = run_row($node, $run2);
is($r2->{kind}, 'incremental', 'run 2 is incremental');
my $ids2 = event_ids($recv->events(run_id => $run2));
# A row changed before run 2 and updated again while it reads may be read in
# its newer version only, which the next run sends (checked below).
my %again = map { $_ => 1 } @during_upd;
check_ids_at_least($ids2, [ grep { !$again{$_} } @before ],
	'run 2 sent every row changed before it and not updated again during it');
only_ids($ids2, [ @before, @during ],
	'run 2 sent nothing but rows changed before or during it');

my ($run3, $r3) = sync_run($node, 's', 'run 3', kind => 'incremental');
my $ev3 = $recv->events(run_id => $run3);
my $ids3 = event_ids($ev3);
check_ids($ids3, \@during,
	'run 3 sent exactly the rows committed after run 2 started, each once');

my $all = event_ids($recv->events);
check_ids_at_least($all, [ @before, @during ],
	'every row written before or during run 2 was sent by run 2 or run 3');
my %c;
$c{$_}++ for grep { defined } @$all;
my @twice = grep { $c{$_} > 1 } @during;
note(scalar(@twice) . ' of ' . scalar(@during)
	  . ' concurrent rows were sent by both runs (allowed: at least once)');
# Rows inserted while run 2 was running land in blocks past the block count
# run 2 read up to, so they are sent exactly once (by run 3).
my @ins_during = (@during_ins, 5101 .. 5120);
my @ins_twice = grep { ($c{$_} // 0) != 1 } @ins_during;
ok(!@ins_twice, 'rows inserted during run 2 are each sent exactly once across runs 2 and 3')
  or diag('sent ' . join(', ', map { "$_ x" . ($c{$_} // 0) } @ins_twice));
my %dur = map { $_ => 1 } @during;
my @dup_before = grep { $c{$_} > 1 && !$dur{$_} } @before;
ok(!@dup_before, 'rows changed only before run 2 were sent once')
  or diag("sent twice: @dup_before[0 .. ($#dup_before < 9 ? $#dup_before : 9)]");

# The newest versions arrived.
my $by3 = by_key($ev3);
is(dig($by3->{5001}, 'properties', 'version'), 4, 'row 5001 arrives as updated last');
is(dig($by3->{1500}, 'properties', 'status'), 'during', 'row 1500 arrives as updated during run 2');
is(dig($by3->{2001}, 'properties', 'version'), 7, 'row 2001 of the early transaction arrives as updated');

my ($run4, $r4) = sync_run($node, 's', 'run 4', kind => 'incremental');
is($r4->{events_sent}, 0, 'run 4 sends nothing');

stop_ok($node);

done_testing();
