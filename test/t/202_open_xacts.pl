# Transactions open while a run reads: a row they wrote is sent by the
# next run after they commit, whether it was written at top level, after a
# SAVEPOINT (the subtransaction's xid is only in the snapshot's subxip),
# in more than 64 subtransactions (subxip overflow) or in a prepared
# transaction committed later with COMMIT PREPARED.  Rows of aborted
# transactions, rolled-back savepoints and rolled-back prepared
# transactions are never sent.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;

my $N = 50;

my $node = retl_node('openxacts', conf => "max_prepared_transactions = 5\n");
my $recv = start_receiver();

create_orders($node, 'orders', $N);
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 25, max_in_flight => 2);
create_track_sync($node, 's', 'orders', 'd');

my ($run) = sync_run($node, 's', 'first run', kind => 'full');
check_ids(event_ids($recv->events(run_id => $run)), [ 1 .. $N ],
	'first run sent every row once');

# Every id of a row that was inserted and then rolled back: must never be
# sent by any run.
my @never;

sub ins
{
	my ($id, $status) = @_;
	$status //= 'late';
	return "INSERT INTO orders VALUES ($id, 'user-$id', 1, '$status', now(), 1);";
}

# ---------------------------------------------------------------------
# A. A top-level insert in a transaction open during the run.
# ---------------------------------------------------------------------
my $bg = $node->background_psql('postgres', on_error_stop => 1);
$bg->query_safe("BEGIN;\n" . ins(1001));
# An aborted transaction, before and during the run.
sql($node, "BEGIN;\n" . ins(1090, 'aborted') . "\nROLLBACK;");
push @never, 1090;

my ($runA1) = sync_run($node, 's', 'A: run during the open transaction',
	kind => 'incremental');
is(run_row($node, $runA1)->{events_sent}, 0, 'A: it sent nothing (nothing committed)');
$bg->query_safe('COMMIT');

my ($runA2) = sync_run($node, 's', 'A: run after the commit', kind => 'incremental');
check_ids(event_ids($recv->events(run_id => $runA2)), [1001],
	'A: the row of the late transaction is sent, once, and nothing else');

# ---------------------------------------------------------------------
# B. Inserts after SAVEPOINTs (subtransaction xids in subxip, fewer than
#    64), one savepoint still open, one rolled back.
# ---------------------------------------------------------------------
$bg->query_safe(q{
BEGIN;
SELECT pg_current_xact_id();
SAVEPOINT a;
} . ins(1101) . q{
RELEASE a;
SAVEPOINT b;
} . ins(1102) . q{
SAVEPOINT c;
} . ins(1103, 'rolled back') . q{
ROLLBACK TO c;
SAVEPOINT d;
} . ins(1104));
push @never, 1103;
my $subxid = $bg->query_safe('SELECT xmin FROM orders WHERE id = 1101');
$subxid =~ s/\s+//g;
my $topxid = $bg->query_safe('SELECT pg_current_xact_id()');
$topxid =~ s/\s+//g;
isnt($subxid, $topxid, 'B: row 1101 was written by a subtransaction');

my ($runB1) = sync_run($node, 's', 'B: run during the open transaction',
	kind => 'incremental');
is(run_row($node, $runB1)->{events_sent}, 0, 'B: it sent nothing');
my %inrun = map { $_ => 1 } @{ run_snapshot_xids($node, $runB1) };
ok($inrun{$topxid} && $inrun{$subxid},
	"B: the run's snapshot lists the transaction ($topxid) and its subtransaction ($subxid)")
  or diag('snapshot xids: ' . join(',', sort keys %inrun));
$bg->query_safe('COMMIT');

my ($runB2) = sync_run($node, 's', 'B: run after the commit', kind => 'incremental');
check_ids(event_ids($recv->events(run_id => $runB2)), [ 1101, 1102, 1104 ],
	'B: rows written after SAVEPOINTs are sent once; the rolled-back one is not');

# ---------------------------------------------------------------------
# C. More than 64 subtransactions: PL/pgSQL EXCEPTION blocks (every tenth
#    rolled back), then rows in a last, still open SAVEPOINT.
# ---------------------------------------------------------------------
my @loop = map { 1200 + $_ } grep { $_ % 10 != 0 } 1 .. 80;
push @never, map { 1200 + $_ } grep { $_ % 10 == 0 } 1 .. 80;
$bg->query_safe(q{
BEGIN;
SELECT pg_current_xact_id();
DO $$
BEGIN
	FOR i IN 1..80 LOOP
		BEGIN
			INSERT INTO orders VALUES (1200 + i, 'user-' || (1200 + i), i, 'loop', now(), 1);
			IF i % 10 = 0 THEN
				RAISE EXCEPTION 'roll back %', i;
			END IF;
		EXCEPTION WHEN raise_exception THEN
			NULL;
		END;
	END LOOP;
END $$;
SAVEPOINT last;
} . ins(1301) . ins(1302));
my $nsub = $bg->query_safe(
	"SELECT count(DISTINCT xmin::text) FROM orders WHERE id > 1200 AND id < 1300");
$nsub =~ s/\s+//g;
is($nsub, 72, 'C: 72 committed subtransactions wrote the loop rows');

my ($runC1) = sync_run($node, 's', 'C: run during the open transaction',
	kind => 'incremental');
is(run_row($node, $runC1)->{events_sent}, 0, 'C: it sent nothing');
cmp_ok(scalar @{ run_snapshot_xids($node, $runC1) }, '<', 64,
	"C: the run's snapshot could not list the 73 subtransactions (subxip overflowed)");
$bg->query_safe('COMMIT');

my ($runC2) = sync_run($node, 's', 'C: run after the commit', kind => 'incremental');
my $idsC = event_ids($recv->events(run_id => $runC2));
check_ids_at_least($idsC, [ @loop, 1301, 1302 ],
	'C: every row of the 72 subtransactions and of the last savepoint is sent');
only_ids($idsC, [ @loop, 1301, 1302 ], 'C: and no other row');
no_dups($idsC, 'C: each once');

# ---------------------------------------------------------------------
# D. PREPARE TRANSACTION before the run, COMMIT PREPARED after it; a
#    second prepared transaction is rolled back.
# ---------------------------------------------------------------------
sql($node, "BEGIN;\n" . ins(1401) . "\nSAVEPOINT s1;\n" . ins(1402)
	  . "\nRELEASE s1;\nSAVEPOINT s2;\n" . ins(1403) . "\nPREPARE TRANSACTION 'p1';");
sql($node, "BEGIN;\n" . ins(1490, 'prepared, rolled back') . "\nPREPARE TRANSACTION 'p2';");
push @never, 1490;
is(sql($node, 'SELECT string_agg(gid, \',\' ORDER BY gid) FROM pg_prepared_xacts'),
	'p1,p2', 'D: two prepared transactions');

my ($runD1) = sync_run($node, 's', 'D: run while prepared', kind => 'incremental');
is(run_row($node, $runD1)->{events_sent}, 0, 'D: it sent nothing');
sql($node, "COMMIT PREPARED 'p1'");
sql($node, "ROLLBACK PREPARED 'p2'");

my ($runD2) = sync_run($node, 's', 'D: run after COMMIT PREPARED', kind => 'incremental');
check_ids(event_ids($recv->events(run_id => $runD2)), [ 1401, 1402, 1403 ],
	'D: the rows of the prepared transaction are sent once, subtransactions included');

# ---------------------------------------------------------------------
# E. A transaction that is open during a run and then rolls back.
# ---------------------------------------------------------------------
$bg->query_safe("BEGIN;\n" . ins(1501, 'rolled back') . "\nSAVEPOINT x;\n" . ins(1502, 'rolled back'));
push @never, 1501, 1502;
my ($runE1) = sync_run($node, 's', 'E: run during the doomed transaction',
	kind => 'incremental');
$bg->query_safe('ROLLBACK');
$bg->quit;
my ($runE2, $rE2) = sync_run($node, 's', 'E: run after the rollback', kind => 'incremental');
is($rE2->{events_sent}, 0, 'E: rows of a rolled-back transaction are not sent');

# Over all runs: no aborted row ever reached the receiver, every committed
# row did.
my $all = event_ids($recv->all_events);
my %never = map { $_ => 1 } @never;
my @leaked = grep { $never{ $_ // '' } } @$all;
ok(!@leaked, 'no row of an aborted transaction or savepoint was ever sent')
  or diag("sent: @leaked");
check_ids_at_least($all,
	[ map { split /\n/ } sql($node, 'SELECT id FROM orders ORDER BY id') ],
	'every committed row was sent');

stop_ok($node);

done_testing();
