# A partitioned table as a source: the parent uses the xmin cursor and
# every leaf (sub-partitions included) is read; a partition attached
# between two runs brings rows with old xmins, so the next run is full and
# sends them; so does a detached one.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;

my $node = retl_node('partitions');
my $recv = start_receiver();

sql($node, q{
CREATE TABLE ev (
	id bigint NOT NULL,
	user_id text NOT NULL,
	amount numeric,
	region text NOT NULL,
	version int NOT NULL DEFAULT 1,
	PRIMARY KEY (id)
) PARTITION BY RANGE (id);
CREATE TABLE ev_1 PARTITION OF ev FOR VALUES FROM (1) TO (1001);
CREATE TABLE ev_2 PARTITION OF ev FOR VALUES FROM (1001) TO (2001);
CREATE TABLE ev_3 PARTITION OF ev FOR VALUES FROM (2001) TO (3001) PARTITION BY HASH (id);
CREATE TABLE ev_3a PARTITION OF ev_3 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE ev_3b PARTITION OF ev_3 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO ev SELECT g, 'user-' || g, g % 100, 'r' || (g % 3), 1
  FROM generate_series(1, 3000) g;
});
is(sql($node, "SELECT count(DISTINCT tableoid) FROM ev"), 4, 'rows in four leaf partitions');

create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 100, max_in_flight => 4);
create_track_sync($node, 's', 'ev', 'd');
is(sync_status($node, 's')->{detector}, 'xmin',
	'a partitioned table uses the xmin detector');

my ($run1) = sync_run($node, 's', 'first run', kind => 'full');
check_ids(event_ids($recv->events(run_id => $run1)), [ 1 .. 3000 ],
	'first run sent the rows of every partition once');

# A standalone table, filled now (old xmins), attached later.
sql($node, q{
CREATE TABLE ev_4 (LIKE ev INCLUDING DEFAULTS);
INSERT INTO ev_4 SELECT g, 'user-' || g, 4, 'attached', 1
  FROM generate_series(3001, 3100) g;
});

# Changes in every partition, through the parent and directly in leaves.
sql($node, q{
INSERT INTO ev VALUES (999, 'user-999', 1, 'new', 2) ON CONFLICT (id) DO UPDATE SET version = 2;
UPDATE ev SET version = 2 WHERE id IN (10, 1010, 2010, 2011);
UPDATE ev_2 SET version = 3 WHERE id = 1500;
DELETE FROM ev WHERE id = 20;
});
my @changed = (999, 10, 1010, 2010, 2011, 1500);

$recv->reset;
my ($run2, $r2) = sync_run($node, 's', 'second run', kind => 'incremental');
is($r2->{full_reason}, undef, 'no full_reason');
check_ids(event_ids($recv->events(run_id => $run2)), \@changed,
	'the incremental run sent exactly the changed rows of every partition');

# ---------------------------------------------------------------------
# ATTACH PARTITION between runs.
# ---------------------------------------------------------------------
sql($node, 'ALTER TABLE ev ATTACH PARTITION ev_4 FOR VALUES FROM (3001) TO (4001)');
sql($node, 'UPDATE ev SET version = 5 WHERE id = 30');
my $old_xmin = sql($node, "SELECT count(*) FROM ev_4 WHERE xmin::text::bigint < "
	  . "(SELECT split_part(cursor_position, ':', 1)::bigint FROM retl.sync_status WHERE sync = 's')");
is($old_xmin, 100, 'the attached rows are older than the cursor');

$recv->reset;
my ($run3, $r3) = sync_run($node, 's', 'run after ATTACH PARTITION', kind => 'full');
like($r3->{full_reason} // '', qr/set of partitions changed/,
	'the run is full because the set of partitions changed');
my $ids3 = event_ids($recv->events(run_id => $run3));
check_ids_at_least($ids3, [ 3001 .. 3100 ],
	'every row of the attached partition is sent');
check_ids($ids3, [ grep { $_ != 20 } 1 .. 3100 ],
	'the full run sent every row of the parent once');

$recv->reset;
my ($run4, $r4) = sync_run($node, 's', 'run after the full run', kind => 'incremental');
is($r4->{events_sent}, 0, 'it sends nothing');

# Rows inserted into the attached partition are then incremental.
sql($node, "INSERT INTO ev VALUES (3500, 'user-3500', 1, 'attached-new', 1)");
$recv->reset;
my ($run5) = sync_run($node, 's', 'run after an insert into the new partition',
	kind => 'incremental');
check_ids(event_ids($recv->events(run_id => $run5)), [3500],
	'the new row of the attached partition is sent');

# ---------------------------------------------------------------------
# DETACH PARTITION, and a leaf that is truncated.
# ---------------------------------------------------------------------
sql($node, 'ALTER TABLE ev DETACH PARTITION ev_2');
$recv->reset;
my ($run6, $r6) = sync_run($node, 's', 'run after DETACH PARTITION', kind => 'full');
like($r6->{full_reason} // '', qr/set of partitions changed/,
	'DETACH PARTITION makes the run full too');
check_ids(event_ids($recv->events(run_id => $run6)),
	[ grep { $_ != 20 && ($_ < 1001 || $_ > 2000) } 1 .. 3100, 3500 ],
	'it sent the rows of the remaining partitions');

sql($node, "BEGIN; TRUNCATE ev_3a; INSERT INTO ev SELECT g, 'user-' || g, 0, 'again', 1 FROM generate_series(2001::bigint, 3000) g WHERE satisfies_hash_partition('ev_3'::regclass, 2, 0, g); COMMIT;");
$recv->reset;
my ($run7, $r7) = sync_run($node, 's', 'run after a leaf was truncated', kind => 'full');
like($r7->{full_reason} // '', qr/partition/,
	'truncating a leaf makes the run full');
my @in3a = split /\n/, sql($node, 'SELECT id FROM ev_3a ORDER BY id');
check_ids_at_least(event_ids($recv->events(run_id => $run7)), \@in3a,
	'the rows written after the TRUNCATE of the leaf are sent');

stop_ok($node);

done_testing();
