# Views.  A view over a join uses the content diff detector: inserts,
# updates and deletes in either base table are reflected; rows whose mapped
# content did not change are not sent again.  A view that exposes one base
# table's xmin uses the xmin cursor.  NULL and duplicate primary keys go to
# retl.failed_events without failing the run.  A new mapping makes the
# next run full.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;

my $node = retl_node('diffviews');
my $recv = start_receiver();

# 20 customers, 200 orders: order i belongs to customer (i % 20) + 1.
sql($node, q{
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, tier text);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL,
					 amount numeric(10,2), note text);
INSERT INTO customers SELECT g, 'customer ' || g, 'basic' FROM generate_series(1, 20) g;
INSERT INTO orders SELECT g, (g % 20) + 1, g, 'n' FROM generate_series(1, 200) g;
CREATE VIEW order_view AS
SELECT o.id, 'user-' || c.id AS user_id, c.name AS customer, c.tier, o.amount
  FROM orders o JOIN customers c ON c.id = o.customer_id;
});
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 50, max_in_flight => 2);
create_track_sync($node, 'v', 'order_view', 'd');
my $sync_id = sql($node, "SELECT id FROM retl.syncs WHERE name = 'v'");
is(sync_status($node, 'v')->{detector}, 'diff',
	'a view over a join with a primary key uses the diff detector');

my $fp_count = sub {
	sql($node, "SELECT count(*) FROM retl.fingerprints WHERE sync_id = $sync_id");
};

my ($run1, $r1) = sync_run($node, 'v', 'first run', kind => 'full');
check_ids(event_ids($recv->events(run_id => $run1)), [ 1 .. 200 ],
	'first run sent every row of the view once');
is($fp_count->(), 200, 'a fingerprint per acknowledged key');

$recv->reset;
my ($run2, $r2) = sync_run($node, 'v', 'run with no change');
is($r2->{rows_read}, 200, 'a diff run reads every row');
is($r2->{events_sent}, 0, 'and sends none when nothing changed');
is($recv->stats->{all_events}, 0, 'the receiver got nothing');

# Order of customer c: ids i with i % 20 = c - 1.
my @of3 = grep { $_ % 20 == 2 } 1 .. 200;    # customer 3
my @of5 = grep { $_ % 20 == 4 } 1 .. 200;    # customer 5
sql($node, q{
-- base table orders: update, insert, delete, updates that change nothing mapped
UPDATE orders SET amount = 1000 WHERE id = 7;
INSERT INTO orders VALUES (201, 1, 5, 'new'), (202, 2, 6, 'new');
DELETE FROM orders WHERE id IN (8, 9);
UPDATE orders SET note = 'not in the view' WHERE id BETWEEN 100 AND 120;
UPDATE orders SET amount = amount WHERE id BETWEEN 121 AND 130;
-- base table customers: an update seen through the join, a delete, an
-- insert that joins nothing yet, and a no-op update
UPDATE customers SET tier = 'gold' WHERE id = 3;
DELETE FROM customers WHERE id = 5;
INSERT INTO customers VALUES (21, 'customer 21', 'new');
UPDATE customers SET name = name WHERE id = 4;
});
my @deleted = (8, 9, grep { $_ != 8 && $_ != 9 } @of5);
my @sent = (7, 201, 202, grep { $_ != 7 } @of3);

$recv->reset;
my ($run3, $r3) = sync_run($node, 'v', 'run after changes in both tables');
my $ev3 = $recv->events(run_id => $run3);
check_ids(event_ids($ev3), \@sent,
	'it sent exactly the inserted rows and those whose content changed, once');
my $by3 = by_key($ev3);
is(dig($by3->{7}, 'properties', 'amount'), 1000, 'an update of orders is sent as updated');
is(dig($by3->{ $of3[0] }, 'properties', 'tier'), 'gold',
	'an update of customers is sent for every order it changes');
is($r3->{rows_deleted}, scalar @deleted,
	'rows_deleted counts the keys gone through either table');
is($recv->stats->{all_events}, scalar @sent,
	'an upsert sync sends no event for deleted keys');
is($fp_count->(), 200 + 2 - scalar @deleted, 'the fingerprints of deleted keys are forgotten');
is(sql($node, "SELECT count(*) FROM retl.fingerprints WHERE sync_id = $sync_id AND pk IN ('8','9')"),
	0, 'no fingerprint for orders 8 and 9');

# The new customer gets orders; a deleted key comes back unchanged.
sql($node, q{
INSERT INTO orders VALUES (203, 21, 7, 'new');
INSERT INTO orders VALUES (8, 9, 8, 'n');
INSERT INTO customers VALUES (5, 'customer 5', 'basic');
});
$recv->reset;
my ($run4, $r4) = sync_run($node, 'v', 'run after re-inserts');
check_ids(event_ids($recv->events(run_id => $run4)), [ 203, 8, grep { $_ != 8 && $_ != 9 } @of5 ],
	'keys that were deleted and came back are sent again, new rows of a new customer too');
is($r4->{rows_deleted}, 0, 'no deletion');

$recv->reset;
my ($run5, $r5) = sync_run($node, 'v', 'run with no change again');
is($r5->{events_sent}, 0, 'nothing sent');

# A new mapping makes the next run full: every row is sent again.
sql($node, q{SELECT retl_alter_sync('v', mapping => '{"userId": "user_id", "event": {"value": "Order Seen"}, "properties.total": "amount"}')});
is(sync_status($node, 'v')->{next_run_kind}, 'full', 'after retl_alter_sync(mapping) the next run is full');
is(sync_status($node, 'v')->{next_full_reason}, 'mapping changed', 'because the mapping changed');
$recv->reset;
my ($run6, $r6) = sync_run($node, 'v', 'run after a new mapping', kind => 'full');
is($r6->{full_reason}, 'mapping changed', 'full_reason is "mapping changed"');
my $n_view = sql($node, 'SELECT count(*) FROM order_view');
my $ev6 = $recv->events(run_id => $run6);
check_ids(event_ids($ev6), [ split /\n/, sql($node, 'SELECT id FROM order_view ORDER BY id') ],
	'the full run sent every row once');
is(scalar(grep { ($_->{event} // '') eq 'Order Seen' && defined dig($_, 'properties', 'total') } @$ev6),
	$n_view, 'with the new mapping');
$recv->reset;
my ($run7, $r7) = sync_run($node, 'v', 'run after the full run', kind => 'incremental');
is($r7->{events_sent}, 0, 'the fingerprints of the full run are used by the next run');

# ---------------------------------------------------------------------
# A view that exposes one base table's xmin uses the xmin cursor.
# ---------------------------------------------------------------------
sql($node, q{
CREATE VIEW order_xview AS
SELECT o.xmin AS _retl_xmin, o.id, 'user-' || c.id AS user_id, c.name AS customer, o.amount
  FROM orders o JOIN customers c ON c.id = o.customer_id;
});
create_track_sync($node, 'x', 'order_xview', 'd',
	options => { xmin_column => '_retl_xmin' });
is(sync_status($node, 'x')->{detector}, 'xmin',
	'a view with option xmin_column uses the xmin detector');
$recv->reset;
my ($runx1) = sync_run($node, 'x', 'xmin view: first run', kind => 'full');
my $evx1 = $recv->events(run_id => $runx1);
check_ids(event_ids($evx1), [ split /\n/, sql($node, 'SELECT id FROM order_xview ORDER BY id') ],
	'xmin view: first run sent every row');
ok(!grep({ exists(($_->{properties} // {})->{_retl_xmin}) } @$evx1),
	'xmin view: the xmin column is not sent');
sql($node, "UPDATE orders SET amount = 2 WHERE id IN (11, 12); INSERT INTO orders VALUES (300, 1, 3, 'x')");
$recv->reset;
my ($runx2, $rx2) = sync_run($node, 'x', 'xmin view: second run', kind => 'incremental');
check_ids(event_ids($recv->events(run_id => $runx2)), [ 11, 12, 300 ],
	'xmin view: the incremental run sent exactly the rows changed in the base table');
is($rx2->{full_reason}, undef, 'xmin view: no full_reason');

# ---------------------------------------------------------------------
# NULL and duplicate primary keys.
# ---------------------------------------------------------------------
sql($node, q{
CREATE TABLE raw_events (k int, user_id text, v int);
INSERT INTO raw_events VALUES (1, 'u1', 1), (2, 'u2', 2), (NULL, 'unull', 3),
							  (3, 'u3', 4), (3, 'u3-dup', 5), (4, 'u4', 6);
CREATE VIEW event_view AS SELECT k AS id, user_id, v FROM raw_events;
});
create_track_sync($node, 'k', 'event_view', 'd',
	mapping => { userId => 'user_id', event => { value => 'Raw' }, 'properties.v' => 'v' });
my $kid = sql($node, "SELECT id FROM retl.syncs WHERE name = 'k'");
is(sync_status($node, 'k')->{detector}, 'diff', 'a plain view with a primary key uses diff');
$recv->reset;
my ($runk1, $rk1) = sync_run($node, 'k', 'bad keys: first run');
my $idsk = event_ids($recv->events(run_id => $runk1));
check_ids_at_least($idsk, [ 1, 2, 4 ], 'bad keys: the rows with valid keys are sent');
my $ids_once = grep { defined $_ && $_ == 3 } @$idsk;
is($ids_once, 1, 'bad keys: key 3 is sent once (its first row)');
ok(!grep({ !defined $_ } @$idsk), 'bad keys: the row with a NULL key is not sent');
is(sql($node, "SELECT count(*) FROM retl.failed_events WHERE sync_id = $kid AND error = 'the primary key is NULL' AND primary_key IS NULL"),
	1, 'bad keys: the NULL key is recorded in retl.failed_events');
is(sql($node, "SELECT count(*) FROM retl.failed_events WHERE sync_id = $kid AND error = 'duplicate primary key' AND primary_key = '3'"),
	1, 'bad keys: the duplicate key is recorded in retl.failed_events');
is(sync_status($node, 'k')->{failed_events}, 2, 'bad keys: sync_status counts 2 failed events');
is($rk1->{rows_read}, 6, 'bad keys: every row was read');

# A second run still works, and changes are still detected.
sql($node, "UPDATE raw_events SET v = 40 WHERE k = 4");
$recv->reset;
my ($runk2, $rk2) = sync_run($node, 'k', 'bad keys: second run');
my $idsk2 = event_ids($recv->events(run_id => $runk2));
check_ids_at_least($idsk2, [4], 'bad keys: a changed row is sent by the next run');
only_ids($idsk2, [ 3, 4 ], 'bad keys: no unchanged valid row is sent again');
is(sql($node, "SELECT count(*) FROM retl.failed_events WHERE sync_id = $kid AND error IN ('the primary key is NULL', 'duplicate primary key')"),
	2, 'bad keys: after the next run the invalid rows are still recorded, once each');
my @null_sent = grep { ($_->{userId} // '') eq 'unull' } @{ $recv->all_events(sync => 'k') };
ok(!@null_sent, 'bad keys: the row with a NULL key never reaches the destination')
  or diag('sent ' . scalar(@null_sent) . ' times, by runs '
	  . join(',', map { dig($_, 'context', 'sources', 'job_run_id') // '?' } @null_sent)
	  . " (run $runk1 recorded it as invalid, run $runk2 retried it)");
my @dup_sent = grep { ($_->{userId} // '') eq 'u3-dup' } @{ $recv->all_events(sync => 'k') };
ok(!@dup_sent, 'bad keys: the duplicate row never reaches the destination');

# ---------------------------------------------------------------------
# The other detectors: a view without a primary key is read in full every
# run; option cursor forces the diff on a table; a materialized view uses
# the xmin cursor (REFRESH rewrites it, REFRESH CONCURRENTLY does not).
# ---------------------------------------------------------------------
create_track_sync($node, 'f', 'order_view', 'd', primary_key => undef);
is(sync_status($node, 'f')->{detector}, 'full', 'a view without a primary key uses the full detector');
my $view_ids = [ split /\n/, sql($node, 'SELECT id FROM order_view ORDER BY id') ];
sync_run($node, 'f', 'full detector: first run', kind => 'full');
$recv->reset;
my ($runf2, $rf2) = sync_run($node, 'f', 'full detector: second run', kind => 'full');
like($rf2->{full_reason} // '', qr/view without an xmin column/, 'full detector: full_reason says why');
check_ids(event_ids($recv->events(run_id => $runf2)), $view_ids,
	'full detector: every row is sent again');

create_track_sync($node, 'td', 'orders', 'd',
	mapping => { userId => 'note', event => { value => 'O' }, 'properties.amount' => 'amount' },
	options => { cursor => 'diff' });
is(sync_status($node, 'td')->{detector}, 'diff', 'option cursor "diff" forces the diff detector on a table');
sync_run($node, 'td', 'forced diff: first run', kind => 'full');
sql($node, 'DELETE FROM orders WHERE id = 300; UPDATE orders SET amount = amount WHERE id = 1; UPDATE orders SET amount = 77 WHERE id = 2');
$recv->reset;
my ($runtd, $rtd) = sync_run($node, 'td', 'forced diff: second run', kind => 'incremental');
check_ids(event_ids($recv->events(run_id => $runtd)), [2],
	'forced diff: a rewritten but unchanged row is not sent, a changed one is');
is($rtd->{rows_deleted}, 1, 'forced diff: the deleted row is counted');

sql($node, q{
CREATE MATERIALIZED VIEW order_mv AS SELECT id, user_id, amount FROM order_view;
CREATE UNIQUE INDEX ON order_mv (id);
});
create_track_sync($node, 'mv', 'order_mv', 'd');
is(sync_status($node, 'mv')->{detector}, 'xmin', 'a materialized view uses the xmin detector');
sync_run($node, 'mv', 'matview: first run', kind => 'full');
sql($node, 'UPDATE orders SET amount = 55 WHERE id = 3');
sql($node, 'REFRESH MATERIALIZED VIEW CONCURRENTLY order_mv');
$recv->reset;
my ($runmv2) = sync_run($node, 'mv', 'matview: run after REFRESH CONCURRENTLY', kind => 'incremental');
check_ids(event_ids($recv->events(run_id => $runmv2)), [3],
	'matview: REFRESH CONCURRENTLY: the changed row is sent');
sql($node, 'REFRESH MATERIALIZED VIEW order_mv');
$recv->reset;
my ($runmv3, $rmv3) = sync_run($node, 'mv', 'matview: run after REFRESH', kind => 'full');
like($rmv3->{full_reason} // '', qr/truncated or rewritten/, 'matview: REFRESH makes the run full');
check_ids(event_ids($recv->events(run_id => $runmv3)),
	[ split /\n/, sql($node, 'SELECT id FROM order_mv ORDER BY id') ],
	'matview: every row is sent');

stop_ok($node);

done_testing();
