# The recursive walks over nested values check the stack (issue 12, item
# 5): the JSON writer over composites and arrays (append_datum and the
# setup of its encoders) and the redaction of configs (redact_container).
# With max_stack_depth lowered, a run of a row nested 700 levels deep
# fails with "stack depth limit exceeded" instead of recursing past the
# limit; at the default it is sent.  (The redaction is checked too, though
# PostgreSQL's own jsonb code after it checks the stack as well.)
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $node = retl_node('stackdepth');
my $recv = start_receiver();
my $url = $recv->url('/deep');

# 700 nested composite types, and a row whose value nests through all of
# them (built from JSON by PostgreSQL, with room on the stack; the
# receiver's JSON parser takes up to 1,000 levels)
my $N = 700;
sql($node, qq{
CREATE TYPE t0 AS (x int);
DO \$\$
BEGIN
	FOR i IN 1..$N LOOP
		EXECUTE format('CREATE TYPE t%s AS (x t%s)', i, i - 1);
	END LOOP;
END \$\$;
CREATE TABLE deep (id int PRIMARY KEY, user_id text, v t$N);
SET max_stack_depth = '7MB';
INSERT INTO deep SELECT 1, 'u1',
  jsonb_populate_record(NULL::t$N, (repeat('{"x":', $N + 1) || '1' || repeat('}', $N + 1))::jsonb);
});
is(sql($node, 'SELECT count(*) FROM deep WHERE v IS NOT NULL'), '1', "a $N-level value");
sql($node, qq{
SELECT retl_create_destination('d', 'webhook', '{"url": "$url"}');
SELECT retl_create_sync('deep', 'deep', 'd', 'track',
  '{"userId": "user_id", "event": {"value": "E"}, "properties.v": "v"}', 'id');});

my ($rc, $out, $err) = psql_as($node, undef,
	qq{SET max_stack_depth = '7MB'; SELECT length(retl_preview('deep', 1)::text) > $N * 6});
is($out, 't', "with room on the stack the preview writes all $N levels") or diag($err);

# the worker writes events as text (nothing of PostgreSQL's recursion
# follows): with max_stack_depth 100kB its JSON writer stops the run
set_system($node, 'max_stack_depth', '100kB');
my $run = sql($node, q{SELECT retl_sync_now('deep')});
is(wait_run($node, $run), 'failed', 'with max_stack_depth 100kB, the run of the deep row fails');
like(run_row($node, $run)->{error} // '', qr/stack depth limit exceeded/,
	'... at the stack limit') or diag(explain(run_row($node, $run)));
is($recv->stats->{events} // 0, 0, 'nothing was sent');
set_system($node, 'max_stack_depth', '7MB');
$run = sql($node, q{SELECT retl_force_full('deep')});
is(wait_run($node, $run), 'succeeded', 'with room on the stack, the worker sends the deep row');
# (counted, not decoded: Perl's JSON parser stops at 512 levels)
is($recv->stats->{events}, 1, 'its event arrives');

# a config nested 5,000 levels, parsed at the default, redacted at 200kB
sql($node, q{
CREATE TABLE configs AS
SELECT (repeat('{"a":', 5000) || '"x"' || repeat('}', 5000))::jsonb AS c;});
($rc, $out, $err) = psql_as($node, undef,
	q{SELECT length(retl._redact(c)::text) FROM configs});
is($rc, 0, 'at the default max_stack_depth a 5000-level config is redacted') or diag($err);
$err = fails_as($node, undef,
	q{SET max_stack_depth = '200kB'; SELECT retl._redact(c) FROM configs}, '54001',
	'with max_stack_depth 200kB, the redaction');
like($err, qr/stack depth limit exceeded/, '... stops at the stack limit') or diag($err);

sql($node, 'ALTER SYSTEM RESET max_stack_depth; SELECT pg_reload_conf()');
is(sql($node, 'SELECT 1'), '1', 'the server is still up');
done_testing();
