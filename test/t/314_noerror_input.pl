# Input that must not raise an error, checked first rather than caught
# without a subtransaction, and curl options that are checked:
#   1. a destination option libcurl refuses (a ca_file over libcurl's 8 MB
#      string limit) fails the run with an error naming the option and
#      hiding the destination's secrets; nothing is sent (the build before
#      the fix ignored the setopt result: the request went out with the
#      system's CA bundle instead, and the run succeeded);
#   2. answers that look like JSON but that jsonb_in refuses (a number
#      numeric cannot hold, a \u0000 escape, nesting deeper than the stack
#      allows) are unreadable answers: their batch is sent again, whole,
#      and nothing is lost or counted twice (Kinesis, Kafka v2, Iterable,
#      Braze);
#   3. event times (Amplitude's "time") from a text timestamp column in
#      every form: ISO 8601 with Z, an offset, no zone (the TimeZone
#      setting), a date, free forms that only timestamptz_in reads (read
#      in a subtransaction), and strings that are no time at all (the
#      event's originalTimestamp is used), in one run that succeeds;
#   4. a WIN1252 database: a character without an equivalent in UTF-8
#      makes a failed event naming its bytes (converted with noError), the
#      other rows are sent as UTF-8.
# Items 2 to 4 behaved the same on the build before the fix, which caught
# the errors: the fix releases what a failed call held, which these tests
# cannot see; they check that nothing else changed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $TZ = 'Asia/Kolkata';
my $node = retl_node('noerror', conf => "timezone = '$TZ'");
my $v = start_vendors();
my $recv = start_receiver();
my $url = $v->url;
create_orders($node, 'orders', 20);

# ----- 1. a curl option libcurl refuses ----------------------------------------
my $big_ca = '/tmp/' . ('x' x (9 * 1024 * 1024));
sql($node, "SELECT retl_create_destination('bigca', 'webhook', "
	  . sql_lit(json_encode({ url => $recv->url('/ca'), ca_file => $big_ca,
			headers => { Authorization => 'Bearer planted-ca-secret' } }))
	  . '::jsonb)');
create_track_sync($node, 'bigca', 'orders', 'bigca');
my ($run, $status, $r) = run_sync($node, 'bigca');
is($status, 'failed', '1: a run whose ca_file libcurl refuses fails');
like($r->{error} // '',
	qr/^libcurl refused option CURLOPT_CAINFO of a request to a webhook destination: /,
	'1: its error names the option libcurl refused')
  or diag($r->{error});
ok(length($r->{error} // '') < 1000 && ($r->{error} // '') !~ /xxxxxxxx|planted/,
	'1: and shows neither the option\'s value nor a secret');
is(scalar(grep { $_->{path} eq '/ca' } @{ $recv->requests }), 0,
	'1: no request was sent without the CA bundle it names');
is($r->{events_succeeded}, 0, '1: nothing counted as delivered');
secret_nowhere($node, 'planted-ca-secret', '1: the secret is nowhere in the catalog');

# ----- 2. answers jsonb_in would refuse ------------------------------------------
sql($node, q{CREATE TABLE few AS SELECT * FROM orders WHERE id <= 10;
ALTER TABLE few ADD PRIMARY KEY (id);});
my %KINESIS = (region => 'us-east-1', stream => 'events', access_key_id => 'AKIDTEST',
	secret_access_key => 'kinesis-secret', endpoint => "$url/");
# Each answer would say "all delivered" if it were read; it cannot be.
my $deep = '{"message": "success", "x": ' . ('[' x 60_000) . (']' x 60_000) . '}';
my $kin = '{"FailedRecordCount": 0, "x": 1e1000000, "Records": ['
  . join(', ', map { qq{{"SequenceNumber": "$_", "ShardId": "shardId-0"}} } 1 .. 10) . ']}';
my $kafka = '{"offsets": ['
  . join(', ', map { '{"partition": 0, "offset": ' . ($_ == 5 ? '1e-20000' : $_)
	  . ', "error_code": null}' } 1 .. 10) . ']}';
for my $c (
	[ 'kin_num', 'kinesis', \%KINESIS, 'kinesis', $kin ],
	[ 'kafka_scale', 'kafka_rest', { url => $url, topic => 't' }, 'kafka', $kafka ],
	[ 'it_nul', 'iterable', { url => $url, api_key => 'k' }, 'iterable',
		'{"successCount": 10, "failCount": 0, "msg": "\\u0000"}' ],
	[ 'braze_deep', 'braze', { url => $url, api_key => 'k' }, 'braze', $deep ])
{
	my ($name, $kind, $cfg, $vendor, $answer) = @$c;
	$v->reset;
	$v->config({ raw_answers => [$answer] });
	create_dest($node, $name, $kind, { %$cfg, max_backoff_ms => 50 });
	create_track_sync($node, $name, 'few', $name);
	my ($run, $status, $r) = run_sync($node, $name);
	is($status, 'succeeded', "2 $name: the run succeeds");
	my $reqs = $v->requests(vendor => $vendor);
	ok(@$reqs == 2 && $reqs->[0]{response} eq $answer && $reqs->[1]{body} eq $reqs->[0]{body},
		"2 $name: the batch whose answer jsonb_in refuses was sent again, whole")
	  or diag(scalar(@$reqs) . ' requests: '
		  . join(' | ', map { "$_->{status} " . substr($_->{response} // '', 0, 80) } @$reqs));
	check_ids([ map { order_id_of($_->{user}) } @{ $v->records(vendor => $vendor) } ],
		[ 1 .. 10 ], "2 $name: each record was taken once");
	is("$r->{events_sent}/$r->{events_succeeded}/$r->{events_failed}", '10/10/0',
		"2 $name: 10 sent, 10 succeeded");
}

# ----- 3. event times from a text column ------------------------------------
my @times = (
	'2024-03-05T10:11:12.345Z', '2024-03-05 10:11:12.3456789+02:00', '2024-03-05T10:11:12-0330',
	'2024-03-05T10:11:12', '2024-03-05', '2024-02-29T23:59:59.999Z',
	'March 5, 2024 10:11:12 UTC', '2024-03-05 10:11:12 Europe/Paris', 'epoch',
	'2024-03-05T24:00:00Z', '2024-02-30T00:00:00Z', 'not a time', '2024-03-05T10:11:12Z trailing',
	'2024-03-05T10:11:12+16:00', 'infinity');
sql($node, 'CREATE TABLE times (id int PRIMARY KEY, user_id text, t text)');
sql($node, 'INSERT INTO times VALUES ' . join(', ',
		map { "($_, 'user-$_', " . sql_lit($times[ $_ - 1 ]) . ')' } 1 .. @times));
# what timestamptz_in reads, in milliseconds, or NULL where it raises (or
# the time is not finite): then originalTimestamp is used
sql($node, q{
CREATE FUNCTION ms_of(t text) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
	RETURN CASE WHEN isfinite(t::timestamptz)
				THEN floor(extract(epoch FROM t::timestamptz) * 1000)::bigint END;
EXCEPTION WHEN OTHERS THEN
	RETURN NULL;
END $$;
});
my %want = map { split /\|/ } split /\n/, sql($node,
	"SET timezone = '$TZ'; SELECT 'user-' || id || '|' || coalesce(ms_of(t)::text, 'now') FROM times");
$v->reset;
create_dest($node, 'amp_t', 'amplitude', { url => $url, api_key => 'k' });
create_track_sync($node, 'amp_t', 'times', 'amp_t',
	mapping => { userId => 'user_id', event => { value => 'E' }, timestamp => 't' });
my $before = time() * 1000;
($run, $status) = run_sync($node, 'amp_t');
my $after = time() * 1000;
is($status, 'succeeded', '3: the run with every form of time succeeds');
my %got = map { ($_->{user} => $_->{record}{time}) } @{ $v->records(vendor => 'amplitude') };
is(scalar(keys %got), scalar @times, '3: every event was sent');
my @why;
for my $i (1 .. @times)
{
	my ($u, $t) = ("user-$i", $times[ $i - 1 ]);
	my $ok = $want{$u} eq 'now'
	  ? defined $got{$u} && $got{$u} >= $before - 60_000 && $got{$u} <= $after + 60_000
	  : defined $got{$u} && $got{$u} == $want{$u};
	push @why, "'$t': time " . ($got{$u} // 'none') . ", timestamptz_in reads $want{$u}" unless $ok;
}
ok(!@why, '3: each time is what timestamptz_in reads, or the send time where it reads none')
  or diag(join("\n", @why));
is(scalar(grep { $want{$_} eq 'now' } keys %want), 5,
	'3: (five of the strings are no finite time to timestamptz_in)');

# ----- 4. a WIN1252 database: a character UTF-8 has no equivalent for ------------
sql($node, q{CREATE DATABASE w1252 ENCODING WIN1252 LC_COLLATE 'C' LC_CTYPE 'C'
  TEMPLATE template0});
$node->safe_psql('w1252', qq{
CREATE EXTENSION retl;
CREATE TABLE notes (id bigint PRIMARY KEY, user_id text, note text);
INSERT INTO notes VALUES (1, 'user-1', 'caf' || chr(233)), (2, 'user-2', 'odd ' || chr(129)),
  (3, 'user-3', 'plain');
SELECT retl_create_destination('d', 'webhook', '{"url": "@{[ $recv->url('/w1252') ]}"}');
SELECT retl_create_sync(name => 's', source => 'notes', destination => 'd',
  event_type => 'track', primary_key => 'id',
  mapping => '{"userId": "user_id", "event": {"value": "Note"}}');
});
$run = $node->safe_psql('w1252', "SELECT retl_sync_now('s')");
is(wait_run_db($node, 'w1252', $run), 'succeeded', '4: the run in a WIN1252 database succeeds');
my $events = $recv->events(path => '/w1252');
check_ids(event_ids($events), [ 1, 3 ], '4: the rows that convert are delivered');
my ($cafe) = grep { (dig($_, 'properties', 'id') // 0) == 1 } @$events;
is(dig($cafe, 'properties', 'note'), "caf\x{e9}", '4: ... as UTF-8');
is($node->safe_psql('w1252', q{SELECT primary_key || ': ' || error FROM retl.failed_events}),
	'2: event cannot be converted to UTF-8: character with byte sequence 0x81 in encoding '
	  . '"WIN1252" has no equivalent in encoding "UTF8"',
	'4: the row with 0x81 is a failed event naming the character');
is($node->safe_psql('w1252', "SELECT events_sent || '/' || events_succeeded || '/' || events_failed FROM retl.runs WHERE id = $run"),
	'3/2/1', '4: 3 sent, 2 succeeded, 1 failed');

stop_ok($node);
done_testing();
