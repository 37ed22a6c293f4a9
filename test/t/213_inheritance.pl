# A table with legacy inheritance children (CREATE TABLE ... INHERITS) as a
# source: "SELECT * FROM parent" reads the children too, and so must a
# sync.  The build before the fix read "FROM ONLY parent" and silently
# skipped every child's rows (issue #14, item 8).  Checked: a first run
# sends the rows of the parent and of both children once, read by blocks;
# an incremental run sends exactly the rows changed in any of them; a
# child added between two runs makes the next run full (the set of
# children is guarded like a partitioned table's).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;
use RetlRead;

my $node = retl_node('inheritance');
my $recv = start_receiver();

sql($node, q{
CREATE TABLE ev (id bigint PRIMARY KEY, user_id text NOT NULL, amount numeric,
				 version int NOT NULL DEFAULT 1);
CREATE TABLE ev_c1 (extra text) INHERITS (ev);
CREATE TABLE ev_c2 () INHERITS (ev);
INSERT INTO ev SELECT g, 'user-' || g, g, 1 FROM generate_series(1, 1000) g;
INSERT INTO ev_c1 SELECT g, 'user-' || g, g, 1, 'x' FROM generate_series(1001, 2000) g;
INSERT INTO ev_c2 SELECT g, 'user-' || g, g, 1 FROM generate_series(2001, 3000) g;
});
is(sql($node, 'SELECT count(*) FROM ev'), 3000, 'SELECT * FROM ev reads 3,000 rows');
is(sql($node, 'SELECT count(*) FROM ONLY ev'), 1000, '... of which 1,000 are the parent\'s');

create_webhook($node, 'd', $recv->url('/hook'), batch_size => 100, max_in_flight => 4);
create_track_sync($node, 's', 'ev', 'd',
	mapping => { userId => 'user_id', event => { value => 'E' },
		'properties.id' => 'id', 'properties.version' => 'version' });

my ($run1) = sync_run($node, 's', 'first run', kind => 'full');
check_ids(event_ids($recv->events(run_id => $run1)), [ 1 .. 3000 ],
	'the first run sent the rows of the parent and of both children, once', exact => 1);
read_method_is($node, 's', 'blocks', 'the tree is read by blocks, leaf by leaf');

# a standalone table, filled now (old xmins), made a child after the next run
sql($node, q{
CREATE TABLE ev_c3 (LIKE ev INCLUDING DEFAULTS);
INSERT INTO ev_c3 SELECT g, 'user-' || g, g, 1 FROM generate_series(3001, 3100) g;
});

sql($node, q{
UPDATE ev SET version = 2 WHERE id IN (10, 1010, 2010);
UPDATE ev_c2 SET version = 3 WHERE id = 2500;
INSERT INTO ev_c1 VALUES (1999999, 'user-new', 1, 1, 'y');
DELETE FROM ev WHERE id = 20;
});
$recv->reset;
my ($run2) = sync_run($node, 's', 'second run', kind => 'incremental');
check_ids(event_ids($recv->events(run_id => $run2)), [ 10, 1010, 2010, 2500, 1999999 ],
	'the incremental run sent exactly the rows changed in the parent and the children',
	exact => 1);

# a child attached later brings rows with old xmins: the next run is full
sql($node, 'ALTER TABLE ev_c3 INHERIT ev');
is(sql($node, "SELECT count(*) FROM ev_c3 WHERE xmin::text::bigint < "
	  . "(SELECT split_part(cursor_position, ':', 1)::bigint FROM retl.sync_status WHERE sync = 's')"),
	100, 'the new child\'s rows are older than the cursor');
$recv->reset;
my ($run3, $r3) = sync_run($node, 's', 'run after a new child', kind => 'full');
like($r3->{full_reason} // '', qr/set of partitions changed/,
	'the run is full because the set of children changed');
check_ids(event_ids($recv->events(run_id => $run3)),
	[ grep { $_ != 20 } 1 .. 3100, 1999999 ],
	'it sent every row of the tree, the new child\'s included, once', exact => 1);

done_testing();
