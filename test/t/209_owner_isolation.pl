# One retl worker serves the syncs of every owner of a database in one
# session: an owner's code (a view's function, a trigger) runs there, in
# the middle of other owners' runs.  It must neither read nor disturb
# them.  Owner B has syncs of a view with a key, the same view without a
# key, a partitioned table, a table and a materialized view, of 5,000 rows
# each, slow enough to span many pages.  While they
# run, owner A's view and table syncs run again and again; its view (and
# its table's row-level security policy, forced on the owner) calls A's
# function, which
# FETCHes from (and MOVEs) every cursor listed in pg_cursors, stores what
# it got in A's table, sets IntervalStyle for the session, and inserts
# into A's table whose deferred constraint trigger changes IntervalStyle,
# DateStyle, search_path, statement_timeout and TimeZone for the session
# (at commit).  Then:
# - B's runs succeed and deliver every row exactly once;
# - B's events are those of a reference run made before A started: same
#   messageIds, same interval and timestamp text;
# - A's table holds none of B's rows;
# - a function of B's view, recording the settings it runs with, saw
#   those of the reference run.
#
# Why: views and partitioned tables used to be read through a holdable
# cursor retl_run_<id> that stayed open between pages, visible in
# pg_cursors to the next owner's code (issue #11); and settings changed
# by code that runs at commit (deferred triggers) must not outlive the
# owner's page.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;
use RetlRead;

my $N = 5000;

my $node = retl_node('isolation');
my $recv = start_receiver();

# Two owners, each with a schema of its own.  B's view calls b.probe,
# which records the settings of the session for one row in a hundred
# (every name qualified: a leaked search_path must not redirect it).  The
# views call their functions in WHERE, not in the select list: a volatile
# function there keeps the planner from pushing the key condition into
# the view, and such a view would be read once (read_method
# 'materialized') instead of page by page between the other owner's.
sql($node, q{
CREATE ROLE owner_a LOGIN IN ROLE retl_user;
CREATE ROLE owner_b LOGIN IN ROLE retl_user;
CREATE SCHEMA a AUTHORIZATION owner_a;
CREATE SCHEMA b AUTHORIZATION owner_b;
});
as_role($node, 'owner_b', qq{
CREATE TABLE b.items (id bigint PRIMARY KEY, user_id text NOT NULL, iv interval NOT NULL,
					  ts timestamptz NOT NULL, lts timestamp NOT NULL);
INSERT INTO b.items
SELECT g, 'b-user-' || g,
	   make_interval(days => g % 40, hours => g % 24, mins => g % 60, secs => g % 60 + 0.25)
		 * CASE WHEN g % 7 = 0 THEN -1 ELSE 1 END,
	   timestamptz '2024-03-01 00:00:00.123+00' + g * interval '37 minutes',
	   timestamp '2024-03-01 00:00:00.456' + g * interval '41 minutes'
  FROM generate_series(1, $N) g;
CREATE TABLE b.seen (at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
					 app text, settings text);
CREATE FUNCTION b.probe(i bigint) RETURNS bigint LANGUAGE plpgsql VOLATILE AS \$f\$
BEGIN
  IF i % 100 = 0 THEN
	INSERT INTO b.seen (app, settings)
	VALUES (pg_catalog.current_setting('application_name'),
			pg_catalog.concat_ws(' | ', pg_catalog.current_setting('IntervalStyle'),
			  pg_catalog.current_setting('DateStyle'), pg_catalog.current_setting('search_path'),
			  pg_catalog.current_setting('statement_timeout'), pg_catalog.current_setting('TimeZone')));
  END IF;
  RETURN i;
END \$f\$;
CREATE VIEW b.items_v AS
  SELECT id, user_id, iv, ts, lts FROM b.items WHERE b.probe(id) IS NOT NULL;
CREATE TABLE b.parts (LIKE b.items INCLUDING ALL) PARTITION BY RANGE (id);
CREATE TABLE b.parts_1 PARTITION OF b.parts FOR VALUES FROM (1) TO (1251);
CREATE TABLE b.parts_2 PARTITION OF b.parts FOR VALUES FROM (1251) TO (2501);
CREATE TABLE b.parts_3 PARTITION OF b.parts FOR VALUES FROM (2501) TO (3751);
CREATE TABLE b.parts_4 PARTITION OF b.parts FOR VALUES FROM (3751) TO (5001);
INSERT INTO b.parts SELECT * FROM b.items;
CREATE MATERIALIZED VIEW b.items_mv AS SELECT * FROM b.items;
CREATE UNIQUE INDEX ON b.items_mv (id);
}, 'owner_b creates its table, view, partitioned table and materialized view');

# A's function: reads and moves every cursor of the session, changes a
# setting, and queues a deferred trigger that changes more at commit.  Errors
# (a cursor that cannot be fetched, a deferred trigger refused) are
# recorded, not raised: A's run goes on.
as_role($node, 'owner_a', q{
CREATE TABLE a.src (id int PRIMARY KEY, user_id text NOT NULL);
INSERT INTO a.src SELECT g, 'a-user-' || g FROM generate_series(1, 200) g;
CREATE TABLE a.calls (at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(), cursors text[]);
CREATE TABLE a.captured (at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
						 cursor_name text, got text, err text);
CREATE TABLE a.fired (at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp());
CREATE TABLE a.sink (id int);
CREATE FUNCTION a.leak() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  INSERT INTO a.fired DEFAULT VALUES;
  PERFORM pg_catalog.set_config('IntervalStyle', 'sql_standard', false);
  PERFORM pg_catalog.set_config('DateStyle', 'SQL, DMY', false);
  PERFORM pg_catalog.set_config('search_path', 'a, pg_catalog', false);
  PERFORM pg_catalog.set_config('statement_timeout', '1h', false);
  PERFORM pg_catalog.set_config('TimeZone', 'Asia/Kathmandu', false);
  RETURN NULL;
END $f$;
CREATE CONSTRAINT TRIGGER leak AFTER INSERT ON a.sink
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION a.leak();
CREATE FUNCTION a.snoop(i int) RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
DECLARE
  names text[] := ARRAY(SELECT name FROM pg_catalog.pg_cursors
						 WHERE name NOT LIKE '<unnamed portal%' ORDER BY name);
  n text;
  r record;
  got int;
BEGIN
  INSERT INTO a.calls (cursors) VALUES (names);
  PERFORM pg_catalog.set_config('IntervalStyle', 'iso_8601', false);
  FOREACH n IN ARRAY names LOOP
	BEGIN
	  EXECUTE pg_catalog.format('FETCH 1 FROM %I', n) INTO r;
	  GET DIAGNOSTICS got = ROW_COUNT;
	  IF got > 0 THEN
		INSERT INTO a.captured (cursor_name, got) VALUES (n, pg_catalog.to_jsonb(r)::text);
	  END IF;
	  EXECUTE pg_catalog.format('MOVE 5 FROM %I', n);
	EXCEPTION WHEN OTHERS THEN
	  INSERT INTO a.captured (cursor_name, err) VALUES (n, SQLERRM);
	END;
  END LOOP;
  BEGIN
	INSERT INTO a.sink VALUES (i);
  EXCEPTION WHEN OTHERS THEN
	INSERT INTO a.captured (cursor_name, err) VALUES ('(deferred trigger)', SQLERRM);
  END;
  RETURN i;
END $f$;
CREATE VIEW a.src_v AS SELECT id, user_id FROM a.src WHERE a.snoop(id) IS NOT NULL;
-- a table whose policy runs the same code, for the owner too: a table is
-- read by blocks, page after page, with no cursor to reset settings after
CREATE TABLE a.tab (id int PRIMARY KEY, user_id text NOT NULL);
INSERT INTO a.tab SELECT g, 'a-user-' || g FROM generate_series(1, 200) g;
ALTER TABLE a.tab ENABLE ROW LEVEL SECURITY;
ALTER TABLE a.tab FORCE ROW LEVEL SECURITY;
CREATE POLICY snoop ON a.tab USING (a.snoop(id) IS NOT NULL);
}, 'owner_a creates its view, its snooping function and its deferred trigger');

my $hook_a = $recv->url('/a');
my $hook_b = $recv->url('/b');
my $mapping_b = q('{"userId": "user_id", "event": {"value": "B Event"},
  "properties.iv": "iv", "properties.ts": "ts", "properties.lts": "lts"}');
as_role($node, 'owner_b', qq{
SELECT retl_create_destination('dest_b', 'webhook',
  '{"url": "$hook_b", "batch_size": 10, "max_in_flight": 2}');
SELECT retl_create_sync('b_view', 'b.items_v', 'dest_b', 'track', $mapping_b, 'id');
SELECT retl_create_sync('b_parts', 'b.parts', 'dest_b', 'track', $mapping_b, 'id');
SELECT retl_create_sync('b_table', 'b.items', 'dest_b', 'track', $mapping_b, 'id');
SELECT retl_create_sync('b_matview', 'b.items_mv', 'dest_b', 'track', $mapping_b, 'id');
SELECT retl_create_sync('b_nokey', 'b.items_v', 'dest_b', 'track', $mapping_b, NULL);
}, "owner_b creates B's syncs");
as_role($node, 'owner_a', qq{
SELECT retl_create_destination('dest_a', 'webhook', '{"url": "$hook_a", "batch_size": 100}');
SELECT retl_create_sync('a_table', 'a.tab', 'dest_a', 'track',
  '{"userId": "user_id", "event": {"value": "A Table Event"}}', 'id');
SELECT retl_create_sync('a_view', 'a.src_v', 'dest_a', 'track',
  '{"userId": "user_id", "event": {"value": "A Event"}}', 'id');
}, "owner_a creates A's sync");

my @B = qw(b_view b_parts b_table b_matview b_nokey);
my @PATHS = qw(properties.id messageId properties.iv properties.ts properties.lts);
my $SEEN = q{SELECT coalesce(string_agg(DISTINCT settings, E'\n'), '') FROM b.seen
  WHERE app = 'retl worker'};

# ---------------------------------------------------------------------
# Reference: B's forced full runs, before A's code ever ran.
# ---------------------------------------------------------------------
my (%ref, %ref_run);
for my $s (@B)
{
	my $run = as_role($node, 'owner_b', "SELECT retl_force_full('$s')", "queue the reference run of $s");
	is(wait_run($node, $run), 'succeeded', "reference run $run of $s succeeded");
	my $rows = event_rows($recv, \@PATHS, run_id => $run);
	check_ids(event_ids_of($rows), [ 1 .. $N ], "reference run of $s: every row once");
	$ref{$s} = { map { $_->[0] => join(' ', map { $_ // 'NULL' } @$_[ 1 .. 4 ]) } @$rows };
}
my $ref_settings = sql($node, $SEEN);
is(scalar(split /\n/, $ref_settings), 1, "B's function saw one set of settings in the reference run")
  or diag($ref_settings);
note("settings in the reference run: $ref_settings");
like($ref_settings, qr/^postgres \| /, '... with IntervalStyle postgres');
sql($node, 'TRUNCATE b.seen');

# ---------------------------------------------------------------------
# B's runs again, slow (about 500 events/s each); while they run, A's
# sync runs again and again.
# ---------------------------------------------------------------------
$recv->config({ delay_ms => 40 });
my %run;
for my $s (@B)
{
	$run{$s} = as_role($node, 'owner_b', "SELECT retl_force_full('$s')", "queue run of $s");
}
for my $s (@B)
{
	wait_for(sub { scalar @{ event_rows($recv, ['messageId'], run_id => $run{$s}) } >= 200 },
		120, "run $run{$s} of $s to deliver 200 events");
}
my $a_runs = 0;
my %a_status;
while ($a_runs < 100)
{
	my $busy = sql($node, 'SELECT count(*) FROM retl.runs WHERE id IN ('
		  . join(',', values %run) . ") AND status IN ('queued', 'running')");
	last if $busy == 0;
	my $ra = as_role($node, 'owner_a', "SELECT retl_sync_now('a_view')", 'queue a run of a_view');
	my $rt = as_role($node, 'owner_a', "SELECT retl_sync_now('a_table')", 'queue a run of a_table');
	$a_status{ wait_run($node, $ra) }++;
	$a_status{ wait_run($node, $rt) }++;
	$a_runs++;
}
note("a_view ran $a_runs times while B's runs ran: "
	  . join(', ', map { "$_ $a_status{$_}" } sort keys %a_status));
note('A captured ' . sql($node, 'SELECT count(got) || \' rows, \' || count(err) || \' errors: \' '
	  . '|| coalesce(string_agg(DISTINCT left(err, 60), \'; \'), \'\') FROM a.captured'));
note('the deferred trigger fired ' . sql($node, 'SELECT count(*) FROM a.fired') . ' times');
$recv->config({ delay_ms => 0 });

for my $s (@B)
{
	my $r = $run{$s};
	is(wait_run($node, $r), 'succeeded', "$s: run $r succeeded");
	# A's code ran during the run (the test means something)
	cmp_ok(sql($node, "SELECT count(*) FROM a.calls c, retl.runs r WHERE r.id = $r "
		  . "AND c.at BETWEEN r.started_at AND r.finished_at"), '>', 0,
		"$s: A's function ran while run $r ran");
	my $rows = event_rows($recv, \@PATHS, run_id => $r);
	check_ids(event_ids_of($rows), [ 1 .. $N ], "$s: run $r delivered every row exactly once");
	my @diff = grep { ($ref{$s}{ $_->[0] // '' } // '')
		  ne join(' ', map { $_ // 'NULL' } @$_[ 1 .. 4 ]) } @$rows;
	ok(!@diff, "$s: every event has the messageId, interval and timestamps of the reference run")
	  or diag(scalar(@diff) . " events differ, e.g. id $diff[0][0]: "
		  . join(' ', map { $_ // 'NULL' } @{ $diff[0] }[ 1 .. 4 ])
		  . "\n  reference: " . ($ref{$s}{ $diff[0][0] // '' } // 'none'));
}

is(sql($node, q{SELECT count(*) FROM a.captured WHERE got LIKE '%b-user-%'}), 0,
	"A's table holds none of B's rows");
my $seen = sql($node, $SEEN);
cmp_ok(sql($node, q{SELECT count(*) FROM b.seen WHERE app = 'retl worker'
  AND at > (SELECT min(at) FROM a.calls)}), '>', 0,
	"B's function ran in the worker after A's code had run there (B read page by page)");
is($seen, $ref_settings, "B's function saw the settings of the reference run (none of A's)");

# (issue #11: how the sources are read; not a condition of the above)
read_method_is($node, 'b_view', 'keys', 'b_view: read_method is keys');
read_method_is($node, 'b_parts', 'blocks', 'b_parts: read_method is blocks');
read_method_is($node, 'b_table', 'blocks', 'b_table: read_method is blocks');
read_method_is($node, 'b_matview', 'blocks', 'b_matview: read_method is blocks');
read_method_is($node, 'b_nokey', 'materialized', 'b_nokey (a view without a key): read_method is materialized');

stop_ok($node);

done_testing();
