# Config values that were accepted but wrong are refused with 22023 and a
# hint (issue 12, item 7): counts must be integers, headers that libcurl
# or retl set cannot be configured, and constant values nest at most as
# deep as keys (100 levels).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $node = retl_node('configchecks');
my $recv = start_receiver();
create_orders($node, 'orders', 10);
my $url = $recv->url('/hook');

sub dest_sql
{
	my ($name, $extra) = @_;
	return qq{SELECT retl_create_destination('$name', 'webhook', '{"url": "$url", $extra}')};
}

# counts are integers: 1.5 is refused, not rounded
for my $case (['batch_size', '1.5'], ['max_in_flight', '2.5'], ['timeout_ms', '1000.1'],
	['max_backoff_ms', '10.5'], ['batch_size', '1e30'])
{
	my ($key, $v) = @$case;
	my $err = fails_as($node, undef, dest_sql("d_$key", qq{"$key": $v}), '22023',
		"$key: $v");
	like($err, qr/"$key" must be an integer/, "... $key must be an integer") or diag($err);
	like($err, qr/HINT:\s+Write a whole number/, '... with a hint') or diag($err);
}
for my $v ('2', '2.0', '1e1')
{
	my ($rc, $out, $err) = psql_as($node, undef, dest_sql("ok_$v" =~ s/\W/_/gr, qq{"batch_size": $v}));
	is($rc, 0, "batch_size $v is a whole number") or diag($err);
}
is(sql($node, q{SELECT count(*) FROM retl.destinations}), '3', 'three destinations made it');

# headers that libcurl or retl own
for my $h ('Host', 'content-length', 'Transfer-Encoding', 'Connection', 'Expect',
	'Content-Type', 'X-Retl-Signature', 'Host ')
{
	my $err = fails_as($node, undef, dest_sql('d_h', qq{"headers": {"$h": "x"}}), '22023',
		"header '$h'");
	like($err, qr/HINT:/, '... with a hint') or diag($err);
}
my ($rc, $out, $err) = psql_as($node, undef,
	dest_sql('d_hdr', q{"headers": {"X-Custom": "1", "Authorization": "Bearer t"}}));
is($rc, 0, 'other headers are accepted') or diag($err);

# constants nest at most 100 levels, as keys do
sub nested
{
	my ($n) = @_;
	return ('[' x $n) . '1' . (']' x $n);
}
my $deep_ok = nested(100);
my $deep_bad = nested(101);
my $deep_5000 = nested(5000);
($rc, $out, $err) = psql_as($node, undef, qq{SELECT retl_create_sync('s100', 'orders', 'ok_2',
  'track', '{"userId": "user_id", "event": {"value": "E"}, "properties.x": {"value": $deep_ok}}', 'id')});
is($rc, 0, 'a constant of 100 levels is accepted') or diag($err);
for my $c ([101, $deep_bad], [5000, $deep_5000])
{
	my ($n, $v) = @$c;
	$err = fails_as($node, undef, qq{SELECT retl_create_sync('s$n', 'orders', 'ok_2',
  'track', '{"userId": "user_id", "event": {"value": "E"}, "properties.x": {"value": $v}}', 'id')},
		'22023', "a constant of $n levels");
	like($err, qr/nests over the limit of 100 levels/, '... over the limit of 100 levels')
	  or diag($err);
	like($err, qr/HINT:/, '... with a hint') or diag($err);
}
my $obj = ('{"a":' x 101) . '1' . ('}' x 101);
fails_as($node, undef, qq{SELECT retl_alter_sync('s100', mapping =>
  '{"userId": "user_id", "event": {"value": $obj}}')}, '22023',
	'retl_alter_sync: a constant object of 101 levels');

# the accepted sync runs
my $run = sql($node, q{SELECT retl_sync_now('s100')});
is(wait_run($node, $run), 'succeeded', 'the sync with a 100-level constant runs');
my $ev = $recv->events(run_id => $run);
is(scalar @$ev, 10, 'its events arrive');

done_testing();
