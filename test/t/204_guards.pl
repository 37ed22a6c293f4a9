# Guards checked before every incremental run: when the cursor cannot be
# trusted the run becomes full, retl.runs.full_reason says why and
# retl.sync_status shows it.  Covered: a cursor older than 2^31 xids (the
# xid epoch bumped with pg_resetwal -e), TRUNCATE, VACUUM FULL, CLUSTER and
# a rewriting ALTER TABLE, and the next xid going backwards (epoch lowered
# with pg_resetwal -e); plain VACUUM, ANALYZE and a non-rewriting ALTER
# TABLE keep runs incremental.  Also: the 32-bit xid counter wrapping
# between two runs (moved near 2^32 with pg_resetwal -x) loses no row.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;

my $N = 200;

my $node = retl_node('guards');
my $recv = start_receiver();

create_orders($node, 'orders', $N);
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 50, max_in_flight => 2);
create_track_sync($node, 's', 'orders', 'd');

my ($run1) = sync_run($node, 's', 'first run', kind => 'full');
check_ids(event_ids($recv->events(run_id => $run1)), [ 1 .. $N ],
	'first run sent every row once');

# Checks that the next run is full for $reason_re, sends every row, and
# that the reason is shown by retl.sync_status; then that the run after
# it is incremental again and sends nothing.
sub expect_full
{
	my ($what, $reason_re, @ids) = @_;
	is(sync_status($node, 's')->{next_run_kind}, 'incremental',
		"$what: before the run, the sync expects an incremental run");
	$recv->reset;
	my ($run, $row) = sync_run($node, 's', $what, kind => 'full');
	like($row->{full_reason} // '', $reason_re,
		"$what: retl.runs.full_reason says why");
	status_shows($node, 's', $row->{full_reason},
		"$what: retl.sync_status shows the reason of the last run");
	check_ids(event_ids($recv->events(run_id => $run)), \@ids,
		"$what: every row is sent once");
	$recv->reset;
	my ($next, $nrow) = sync_run($node, 's', "$what, next run", kind => 'incremental');
	is($nrow->{events_sent}, 0, "$what: the run after it sends nothing");
	is($nrow->{full_reason}, undef, "$what: and has no full_reason");
	return $run;
}

# Non-rewriting maintenance keeps runs incremental.
sql($node, 'VACUUM orders; ANALYZE orders; ALTER TABLE orders ADD COLUMN note text');
sql($node, "UPDATE orders SET version = 2 WHERE id = 5");
$recv->reset;
my ($run2, $r2) = sync_run($node, 's', 'after VACUUM, ANALYZE, ADD COLUMN',
	kind => 'incremental');
is($r2->{full_reason}, undef, 'no full_reason');
check_ids(event_ids($recv->events(run_id => $run2)), [5],
	'only the updated row is sent');

# ---------------------------------------------------------------------
# A. The cursor is older than 2^31 transactions.
# ---------------------------------------------------------------------
my $epoch0 = xid_epoch($node);
my $cursor0 = sync_status($node, 's')->{cursor_position};
my $epoch1 = bump_xid_epoch($node);
is($epoch1, $epoch0 + 1, "A: pg_resetwal -e moved the xid epoch from $epoch0 to $epoch1");
my $next = sql($node, 'SELECT pg_snapshot_xmax(pg_current_snapshot())::text::numeric');
my ($cxmin) = split /:/, $cursor0;
cmp_ok($next - $cxmin, '>=', 2**31, 'A: the cursor is now more than 2^31 xids old');
# A row committed after the bump: a full run sends it like every other row.
sql($node, "INSERT INTO orders (id, user_id, amount, status, created_at) VALUES (9001, 'user-9001', 1, 'after bump', now())");
expect_full('A: xid epoch bumped', qr/^cursor is older than 2\^31 transactions$/,
	1 .. $N, 9001);

# After the guard, incremental runs work in the new epoch.
sql($node, "UPDATE orders SET version = 3 WHERE id = 7");
$recv->reset;
my ($runA3) = sync_run($node, 's', 'A: incremental in the new epoch', kind => 'incremental');
check_ids(event_ids($recv->events(run_id => $runA3)), [7],
	'A: in the new epoch an incremental run sends just the changed row');

my @all = (1 .. $N, 9001);

# ---------------------------------------------------------------------
# B. TRUNCATE (then the same rows again).
# ---------------------------------------------------------------------
sql($node, q{
BEGIN;
CREATE TEMP TABLE keep ON COMMIT DROP AS SELECT * FROM orders;
TRUNCATE orders;
INSERT INTO orders SELECT * FROM keep;
COMMIT;});
expect_full('B: TRUNCATE', qr/truncated or rewritten \(relfilenode changed\)/, @all);

# ---------------------------------------------------------------------
# C. VACUUM FULL.
# ---------------------------------------------------------------------
sql($node, 'VACUUM FULL orders');
expect_full('C: VACUUM FULL', qr/truncated or rewritten \(relfilenode changed\)/, @all);

# ---------------------------------------------------------------------
# D. CLUSTER.
# ---------------------------------------------------------------------
sql($node, 'CLUSTER orders USING orders_pkey');
expect_full('D: CLUSTER', qr/truncated or rewritten \(relfilenode changed\)/, @all);

# ---------------------------------------------------------------------
# E. A rewriting ALTER TABLE (ALTER COLUMN TYPE).
# ---------------------------------------------------------------------
my $rfn = sql($node, "SELECT relfilenode FROM pg_class WHERE relname = 'orders'");
sql($node, 'ALTER TABLE orders ALTER COLUMN version TYPE bigint');
isnt(sql($node, "SELECT relfilenode FROM pg_class WHERE relname = 'orders'"), $rfn,
	'E: ALTER COLUMN TYPE rewrote the table');
expect_full('E: ALTER COLUMN TYPE', qr/truncated or rewritten \(relfilenode changed\)/, @all);

# ---------------------------------------------------------------------
# F. TRUNCATE followed by other rows: the full run sends what is there
#    now, nothing of the old content.
# ---------------------------------------------------------------------
sql($node, 'BEGIN; TRUNCATE orders; INSERT INTO orders SELECT g, \'user-\' || g, 1, \'again\', now(), 1 FROM generate_series(1, 20) g; COMMIT;');
expect_full('F: TRUNCATE with new content', qr/truncated or rewritten/, 1 .. 20);

# ---------------------------------------------------------------------
# G. The 32-bit xid counter wraps between two runs (2^32 -> 0, epoch +1):
#    rows whose raw xmin is small again are still new.  The xid counter is
#    moved close to the wrap with pg_resetwal -x (which keeps oldestXID),
#    in jumps of less than vacuum_failsafe_age, with every database frozen
#    before each jump, so that no tuple ever looks as if it were in the
#    future and the server never reaches its xid stop limit.
# ---------------------------------------------------------------------
sub freeze_all
{
	my ($what) = @_;
	sql($node, 'ALTER DATABASE template0 ALLOW_CONNECTIONS true');
	$node->safe_psql($_, 'VACUUM (FREEZE)') for ('template0', 'template1', 'postgres');
	sql($node, 'ALTER DATABASE template0 ALLOW_CONNECTIONS false');
	cmp_ok(sql($node, 'SELECT max(age(datfrozenxid)) FROM pg_database'), '<', 1_000_000,
		"G: every database is frozen $what");
}

sub move_xid
{
	my ($xid) = @_;
	$node->stop('fast');
	PostgreSQL::Test::Utils::system_or_bail('pg_resetwal', '-x', $xid, $node->data_dir);
	$node->start;
}

# All targets are multiples of 32768 xids: the first xid of a clog page,
# which the server creates instead of reading.
for my $target (0x58000000, 0xB0000000, 0xFFFF8000)
{
	freeze_all(sprintf('before moving the xid counter to 0x%X', $target));
	move_xid($target);
}
my $g_epoch = xid_epoch($node);
sql($node, q{
CREATE PROCEDURE burn_xids(n int) LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1..n LOOP
		PERFORM pg_current_xact_id();
		COMMIT;
	END LOOP;
END $$;
});
create_orders($node, 'wrap', 100);
create_track_sync($node, 'w', 'wrap', 'd');
$recv->reset;
my ($w1, $rw1) = sync_run($node, 'w', 'G: first run, before the wrap', kind => 'full');
check_ids(event_ids($recv->events(run_id => $w1)), [ 1 .. 100 ], 'G: first run sent every row');
my ($wxmin) = split /:/, sync_status($node, 'w')->{cursor_position};
cmp_ok($wxmin % 2**32, '>', 0xFFFF0000, 'G: the cursor is just below the wrap');

# Committed after the cursor, before the wrap; open across the wrap;
# committed after the wrap.
sql($node, "INSERT INTO wrap (id, user_id) VALUES (201, 'user-201'); UPDATE wrap SET version = 2 WHERE id = 1");
my $gbg = $node->background_psql('postgres', on_error_stop => 1);
$gbg->query_safe("BEGIN; INSERT INTO wrap (id, user_id) VALUES (202, 'user-202');");
my $before_wrap = sql($node, 'SELECT pg_snapshot_xmax(pg_current_snapshot())::text::numeric');
sql($node, 'CALL burn_xids(' . (2**32 - ($before_wrap % 2**32) + 500) . ')');
sql($node, "INSERT INTO wrap (id, user_id) VALUES (203, 'user-203'); UPDATE wrap SET version = 3 WHERE id = 2");
$gbg->query_safe('COMMIT');
$gbg->quit;
is(xid_epoch($node), $g_epoch + 1, 'G: the xid counter wrapped (epoch + 1)');
my $x203 = sql($node, 'SELECT xmin FROM wrap WHERE id = 203');
cmp_ok($x203, '<', $wxmin % 2**32, "G: row 203 has a small raw xmin ($x203) again");

$recv->reset;
my ($w2, $rw2) = sync_run($node, 'w', 'G: run after the wrap', kind => 'incremental');
is($rw2->{full_reason}, undef, 'G: the cursor is still trusted (less than 2^31 old)');
check_ids(event_ids($recv->events(run_id => $w2)), [ 201, 1, 202, 203, 2 ],
	'G: rows written before, across and after the wrap are each sent once, nothing else');
$recv->reset;
my ($w3, $rw3) = sync_run($node, 'w', 'G: next run', kind => 'incremental');
is($rw3->{events_sent}, 0, 'G: the next run sends nothing');

# ---------------------------------------------------------------------
# H. The next xid goes backwards (as after restoring an older backup): the
#    xid epoch is lowered by one with pg_resetwal -e.
# ---------------------------------------------------------------------
my $h_epoch = xid_epoch($node);
$node->stop('fast');
PostgreSQL::Test::Utils::system_or_bail('pg_resetwal', '-e', $h_epoch - 1, $node->data_dir);
$node->start;
is(xid_epoch($node), $h_epoch - 1, 'H: the xid epoch went back by one');
sql($node, "INSERT INTO wrap (id, user_id) VALUES (301, 'user-301')");
$recv->reset;
my ($h1, $rh1) = sync_run($node, 'w', 'H: run after the xid went backwards', kind => 'full');
like($rh1->{full_reason} // '', qr/^next transaction id went backwards/,
	'H: retl.runs.full_reason says the next xid went backwards');
status_shows($node, 'w', $rh1->{full_reason},
	'H: retl.sync_status shows the reason of the last run');
check_ids(event_ids($recv->events(run_id => $h1)), [ 1 .. 100, 201, 202, 203, 301 ],
	'H: every row is sent once');
$recv->reset;
my ($h2, $rh2) = sync_run($node, 'w', 'H: next run', kind => 'incremental');
is($rh2->{events_sent}, 0, 'H: the next run sends nothing');

stop_ok($node);

done_testing();
