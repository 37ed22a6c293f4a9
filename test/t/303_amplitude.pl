# Destination kind amplitude against test/vendors.py's Amplitude /batch
# and /2/httpapi: api_key in the body, insert_id from the messageId, time
# in ms, identify as "$identify" with user_properties.$set, the batch
# limits, and a 400 that rejects the whole request and lists the bad
# events: those go to retl.failed_events, the others are sent again and
# delivered once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $N = 2500;
my $KEY = 'amplitude-api-key-0c7d3e';
my @REJECT = (3, 1999, 2400);
my %REJECT = map { $_ => 1 } @REJECT;

my $node = retl_node('amplitude');
my $v = start_vendors();
$v->config({ api_key => $KEY, reject_users => [ map { "user-$_" } @REJECT ] });
create_orders($node, 'orders', $N);
my $url = $v->url;

# ----- create-time validation ------------------------------------------------
sql_fails($node, qq{SELECT retl_create_destination('x', 'amplitude', '{"url": "$url"}')},
	'22023', qr/needs "api_key"/, 'an amplitude destination without api_key is refused');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'amplitude', '{"url": "file:///tmp/x", "api_key": "k"}')},
	'22023', qr/http or https/, 'a non-http url is refused');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'amplitude', '{"api_key": "k", "endpoint": "track"}')},
	'22023', qr/invalid Amplitude endpoint/, 'an unknown endpoint is refused');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'amplitude', '{"api_key": "k", "batch_size": 2001}')},
	'22023', qr/between 1 and 2000/, 'batch_size above Amplitude\'s 2,000 events is refused');

# ----- track through /batch ----------------------------------------------------
create_dest($node, 'amp', 'amplitude', { url => $url, api_key => $KEY, batch_size => 2000 });
create_track_sync($node, 's', 'orders', 'amp', mapping => {
	userId => 'user_id',
	event => { value => 'Order Completed' },
	'properties.amount' => 'amount',
	timestamp => 'created_at',
});
my ($run, $status, $r) = run_sync($node, 's');
is($status, 'succeeded', 'the run succeeded despite the 400s');
is($r->{events_succeeded}, $N - @REJECT, 'events_succeeded = N - rejected');
is($r->{events_failed}, scalar @REJECT, 'events_failed = the events listed as invalid');
is($r->{events_sent}, $N, 'events_sent counts each event once');

my $reqs = $v->requests(vendor => 'amplitude');
my @bad = grep {
	     $_->{method} ne 'POST'
	  || $_->{path} ne '/batch'
	  || ($_->{headers}{'content-type'} // '') !~ m{^application/json}
	  || exists $_->{headers}{authorization}
} @$reqs;
ok(@$reqs && !@bad, 'every request is a JSON POST to /batch, without an Authorization header');
my (@sizes, $keys_ok);
$keys_ok = 1;
for my $q (@$reqs)
{
	my $doc = json_decode($q->{body});
	$keys_ok = 0 unless ($doc->{api_key} // '') eq $KEY
	  && join(',', sort keys %$doc) eq 'api_key,events';
	push @sizes, scalar @{ $doc->{events} // [] };
}
ok($keys_ok, 'every body is {"api_key": <key>, "events": [...]}');
is(max_of(@sizes), 2000, 'at most 2,000 events per request (and batches fill up)')
  or diag("sizes: @sizes");
my @rejected_answers = grep { $_->{status} == 400 } @$reqs;
ok(@rejected_answers >= 1, 'Amplitude answered 400 with events_with_invalid_fields');

my $recs = $v->records(vendor => 'amplitude');
check_ids([ map { order_id_of($_->{user}) } @$recs ], [ grep { !$REJECT{$_} } 1 .. $N ],
	'Amplitude ingested every row exactly once (the rest of a 400 resent), no rejected one');
my (@why, %ins);
for my $rec (map { $_->{record} } @$recs)
{
	my $id = order_id_of($rec->{user_id}) // 0;
	my $x = expected_order($id);
	my @w;
	push @w, 'event_type' unless ($rec->{event_type} // '') eq 'Order Completed';
	push @w, 'time (ms)' unless ($rec->{time} // 0) == (1704067200 + $id) * 1000 + 123;
	push @w, 'insert_id' unless ($rec->{insert_id} // '') =~ /^[0-9a-f-]{36}$/;
	push @w, 'event_properties.amount'
	  unless defined dig($rec, qw(event_properties amount))
	  && abs($rec->{event_properties}{amount} - $x->{amount}) < 1e-9;
	push @w, 'event_properties.id' unless (dig($rec, qw(event_properties id)) // '') eq $id;
	push @w, 'device_id with a user_id' if exists $rec->{device_id};
	$ins{ $rec->{insert_id} // '' }++;
	push @why, "user $id: @w" if @w;
}
ok(!@why, 'events have user_id, event_type, time in ms, insert_id and event_properties')
  or diag(join("\n", @why[ 0 .. ($#why < 4 ? $#why : 4) ]) . "\n" . json_encode($recs->[0]{record}));
is(scalar(keys %ins), scalar @$recs, 'insert_ids are distinct');

my $preview = sql_json($node, "SELECT jsonb_agg(e) FROM retl_preview('s', 5, format => 'standard') e");
my %want = map { ($_->{userId} => $_->{messageId}) }
  grep { !$REJECT{ order_id_of($_->{userId}) // 0 } } @$preview;
my %have = map { ($_->{record}{user_id} => $_->{record}{insert_id}) } @$recs;
ok(%want && !grep({ ($have{$_} // '') ne $want{$_} } keys %want),
	'insert_id is the event\'s messageId');

# Each rejected event was sent in exactly one request (the one answered 400).
my %sent;
for my $q (@$reqs)
{
	$sent{ $_->{user_id} }++ for @{ json_decode($q->{body})->{events} };
}
is(join(',', map { $sent{"user-$_"} // 0 } @REJECT), join(',', map { 1 } @REJECT),
	'events listed as invalid are not sent again');

my $fe = failed_rows($node, 's');
is(join(',', sort { $a <=> $b } map { $_->{primary_key} } @$fe), join(',', @REJECT),
	'retl.failed_events holds exactly the events listed as invalid');
ok(@$fe && !grep({ ($_->{error} // '') !~ /Amplitude: invalid field "user_id"/
			  || ($_->{http_status} // 0) != 400 } @$fe),
	'their reason names the invalid field, with HTTP status 400')
  or diag(json_encode([ map { [ $_->{error}, $_->{http_status} ] } @$fe ]));
ok(@$fe && !grep({ ($_->{message_id} // '') ne (eval { json_decode($_->{payload})->{insert_id} } // '-') } @$fe),
	'failed_events.message_id is the event\'s messageId (the insert_id)')
  or diag('message_id: ' . join(', ', map { $_->{message_id} // 'NULL' } @$fe));

# ----- identify through /2/httpapi ---------------------------------------------
$v->reset;
$v->config({ api_key => $KEY });
create_dest($node, 'amp2', 'amplitude',
	{ url => $url, api_key => $KEY, endpoint => 'httpapi' });
sql($node, q{CREATE TABLE people AS SELECT id, user_id, status FROM orders WHERE id <= 300;
ALTER TABLE people ADD PRIMARY KEY (id);});
create_track_sync($node, 'ident', 'people', 'amp2', event_type => 'identify',
	mapping => { userId => 'user_id', 'traits.plan' => 'status' });
($run, $status) = run_sync($node, 'ident');
is($status, 'succeeded', 'the identify run succeeded');
$reqs = $v->requests(vendor => 'amplitude');
ok(@$reqs && !grep({ $_->{path} ne '/2/httpapi' } @$reqs),
	'"endpoint": "httpapi" posts to /2/httpapi');
ok(!grep({ length($_->{body}) > 1024 * 1024 } @$reqs), 'HTTP V2 requests stay under 1 MB');
$recs = $v->records(vendor => 'amplitude');
check_ids([ map { order_id_of($_->{user}) } @$recs ], [ 1 .. 300 ],
	'every identify arrived exactly once');
@why = grep {
	my $x = expected_order(order_id_of($_->{user_id}) // 0);
	!(($_->{event_type} // '') eq '$identify'
		&& (dig($_, 'user_properties', '$set', 'plan') // '') eq $x->{status}
		&& ($_->{insert_id} // '') =~ /^[0-9a-f-]{36}$/)
} map { $_->{record} } @$recs;
ok(!@why, 'identify is an "$identify" event with user_properties.$set = traits and an insert_id')
  or diag(json_encode($why[0]));

is(sql($node, "SELECT retl._redact(config)->>'api_key' FROM retl.destinations WHERE name = 'amp'"),
	'***', 'retl._redact hides api_key');
secret_nowhere($node, $KEY, 'the Amplitude key appears in no run error or failed event');

stop_ok($node);
done_testing();
