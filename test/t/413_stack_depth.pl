# The recursive walks over nested values check the stack (issue 12, item
# 5): the JSON writer over composites and arrays (append_datum) and the
# redaction of configs (redact_container).  With max_stack_depth lowered,
# deep values raise "stack depth limit exceeded" (54001) instead of
# recursing past the limit; at the default they work.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $node = retl_node('stackdepth');

# 2,000 nested composite types, and a row whose value nests through all
# of them (built from JSON by PostgreSQL, with room on the stack)
my $N = 2000;
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
sql($node, q{
SELECT retl_create_destination('d', 'webhook', '{"url": "http://127.0.0.1:9/hook"}');
SELECT retl_create_sync('deep', 'deep', 'd', 'track',
  '{"userId": "user_id", "event": {"value": "E"}, "properties.v": "v"}', 'id');});

my ($rc, $out, $err) = psql_as($node, undef,
	qq{SET max_stack_depth = '7MB'; SELECT length(retl_preview('deep', 1)::text) > $N * 6});
is($out, 't', "with room on the stack the preview writes all $N levels") or diag($err);
$err = fails_as($node, undef,
	q{SET max_stack_depth = '200kB'; SELECT retl_preview('deep', 1)}, '54001',
	'with max_stack_depth 200kB, the JSON writer');
like($err, qr/stack depth limit exceeded/, '... stops at the stack limit') or diag($err);

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

is(sql($node, 'SELECT 1'), '1', 'the server is still up');
done_testing();
