# Destination kind mixpanel against test/vendors.py's Mixpanel API:
# /import?strict=1 with a service account (Basic auth, project_id), event
# shape ($insert_id = messageId, time in ms, distinct_id), the strict-mode
# 400 partial success whose failed_records go to retl.failed_events (never
# resent), the request size cap, /engage profile updates ($token,
# $distinct_id, $set) whose rejection is read from the body of a 200, and
# create-time validation.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $N = 1200;
my ($USER, $SECRET, $PROJECT, $TOKEN) =
  ('svc.retl', 'mixpanel-svc-secret-61f0', '12345', 'mp-project-token-1');
my @REJECT = (8, 1111);
my %REJECT = map { $_ => 1 } @REJECT;

my $node = retl_node('mixpanel');
my $v = start_vendors();
$v->config({ basic => "$USER:$SECRET", reject_users => [ map { "user-$_" } @REJECT ] });
create_orders($node, 'orders', $N);
my $url = $v->url;

# ----- create-time validation ------------------------------------------------
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'mixpanel', '{"url": "$url", "api_secret": "s"}')},
	'22023', qr/needs "project_token"/, 'a mixpanel destination without project_token is refused');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'mixpanel', '{"url": "$url", "project_token": "t"}')},
	'22023', qr/service account or "api_secret"/, 'credentials for /import are required');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'mixpanel', '{"project_token": "t", "username": "u", "secret": "s"}')},
	'22023', qr/"username", "secret" and "project_id"/, 'a service account needs project_id');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'mixpanel', '{"url": "api.mixpanel.com", "project_token": "t", "api_secret": "s"}')},
	'22023', qr/http or https/, 'a non-http url is refused');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'mixpanel', '{"project_token": "t", "api_secret": "s", "batch_size": 2001}')},
	'22023', qr/between 1 and 2000/, 'batch_size above Mixpanel\'s 2,000 events is refused');

# ----- track: /import ------------------------------------------------------------
create_dest($node, 'mp', 'mixpanel', { url => $url, project_token => $TOKEN,
	username => $USER, secret => $SECRET, project_id => $PROJECT });
create_track_sync($node, 's', 'orders', 'mp', mapping => {
	userId => 'user_id',
	event => { value => 'Order Completed' },
	'properties.amount' => 'amount',
	timestamp => 'created_at',
});
my ($run, $status, $r) = run_sync($node, 's');
is($status, 'succeeded', 'the run succeeded despite the strict-mode 400');
is($r->{events_succeeded}, $N - @REJECT, 'events_succeeded = N - failed_records');
is($r->{events_failed}, scalar @REJECT, 'events_failed = the failed_records');

my $reqs = $v->requests(vendor => 'mixpanel');
my $basic = 'Basic ' . MIME::Base64::encode_base64("$USER:$SECRET", '');
my @bad = grep {
	     $_->{method} ne 'POST'
	  || $_->{path} ne '/import'
	  || $_->{query} ne "strict=1&project_id=$PROJECT"
	  || ($_->{headers}{authorization} // '') ne $basic
	  || ($_->{headers}{'content-type'} // '') !~ m{^application/json}
} @$reqs;
ok(@$reqs && !@bad, 'every request is POST /import?strict=1&project_id=... with the service account')
  or diag(json_encode({ path => $bad[0]{path}, query => $bad[0]{query}, headers => $bad[0]{headers} }));
my @sizes = map { scalar @{ json_decode($_->{body}) } } @$reqs;
ok(max_of(@sizes) <= 2000, 'at most 2,000 events per request') or diag("sizes: @sizes");

my $recs = $v->records(vendor => 'mixpanel', kind => 'import');
check_ids([ map { order_id_of($_->{user}) } @$recs ], [ grep { !$REJECT{$_} } 1 .. $N ],
	'Mixpanel imported every row exactly once, no failed record');
my (@why, %ins);
for my $rec (map { $_->{record} } @$recs)
{
	my $p = $rec->{properties} // {};
	my $id = order_id_of($p->{distinct_id}) // 0;
	my $x = expected_order($id);
	my @w;
	push @w, 'event' unless ($rec->{event} // '') eq 'Order Completed';
	push @w, 'properties.time (ms)' unless ($p->{time} // 0) == (1704067200 + $id) * 1000 + 123;
	push @w, '$insert_id' unless ($p->{'$insert_id'} // '') =~ /^[0-9a-f-]{36}$/;
	push @w, 'amount' unless defined $p->{amount} && abs($p->{amount} - $x->{amount}) < 1e-9;
	push @w, 'id' unless ($p->{id} // '') eq $id;
	push @w, 'keys' unless join(',', sort keys %$rec) eq 'event,properties';
	$ins{ $p->{'$insert_id'} // '' }++;
	push @why, "user $id: @w" if @w;
}
ok(!@why, 'events are {event, properties: {time in ms, distinct_id, $insert_id, ...}}')
  or diag(join("\n", @why[ 0 .. ($#why < 4 ? $#why : 4) ]) . "\n" . json_encode($recs->[0]{record}));
is(scalar(keys %ins), scalar @$recs, '$insert_ids are distinct');
my $preview = sql_json($node, "SELECT jsonb_agg(e) FROM retl_preview('s', 5, format => 'standard') e");
my %want = map { ($_->{userId} => $_->{messageId}) }
  grep { !$REJECT{ order_id_of($_->{userId}) // 0 } } @$preview;
my %have = map { ($_->{record}{properties}{distinct_id} => $_->{record}{properties}{'$insert_id'}) } @$recs;
ok(%want && !grep({ ($have{$_} // '') ne $want{$_} } keys %want),
	'$insert_id is the event\'s messageId');

my %sent;
for my $q (@$reqs)
{
	$sent{ $_->{properties}{distinct_id} }++ for @{ json_decode($q->{body}) };
}
is(join(',', map { $sent{"user-$_"} // 0 } @REJECT), join(',', map { 1 } @REJECT),
	'failed records are never resent (a strict-mode 400 is final)');
ok(!grep({ $_ > 1 } values %sent), 'no event was sent twice');

my $fe = failed_rows($node, 's');
is(join(',', sort { $a <=> $b } map { $_->{primary_key} } @$fe), join(',', @REJECT),
	'retl.failed_events holds exactly the failed_records');
ok(@$fe && !grep({ ($_->{error} // '') !~ /^Mixpanel: 'properties.distinct_id' is invalid/
			  || ($_->{http_status} // 0) != 400 } @$fe),
	'their reason is the failed record\'s message, with HTTP status 400')
  or diag(json_encode([ map { [ $_->{error}, $_->{http_status} ] } @$fe ]));
ok(@$fe && !grep({ ($_->{message_id} // '') ne
			  (eval { json_decode($_->{payload})->{properties}{'$insert_id'} } // '-') } @$fe),
	'failed_events.message_id is the event\'s messageId (the $insert_id)')
  or diag('message_id: ' . join(', ', map { $_->{message_id} // 'NULL' } @$fe));

# ----- Mixpanel's 2 MB request cap --------------------------------------------
# /import takes at most 2 MB (2097152 bytes) uncompressed per request
# (Mixpanel's Import Events reference and its 413 answer): 1,000 events of
# about 2.5 KB must not go in one request.
$v->reset;
$v->config({ basic => "$USER:$SECRET" });
sql($node, q{CREATE TABLE wide AS SELECT id, user_id, repeat('x', 2500) AS note FROM orders WHERE id <= 1000;
ALTER TABLE wide ADD PRIMARY KEY (id);});
create_track_sync($node, 'wide', 'wide', 'mp',
	mapping => { userId => 'user_id', event => { value => 'Viewed' } });
($run, $status) = run_sync($node, 'wide');
is($status, 'succeeded', 'the run of 2.5 KB events succeeded');
$reqs = $v->requests(vendor => 'mixpanel');
my @big = grep { length($_->{body}) > 2097152 } @$reqs;
ok(!@big, 'no /import request is over 2 MB (Mixpanel answers 413 to those)')
  or diag(scalar(@big) . ' request(s) over 2 MB, the largest '
	  . max_of(map { length($_->{body}) } @big) . ' bytes, answered '
	  . join(',', map { $_->{status} } @big));
check_ids([ map { order_id_of($_->{user}) } @{ $v->records(vendor => 'mixpanel') } ],
	[ 1 .. 1000 ], 'every wide row was imported exactly once');

# ----- identify: /engage --------------------------------------------------------
# /engage answers 200 even when it rejects the update: the body says so.
$v->reset;
$v->config({ reject_users => ['user-7'] });
sql($node, q{CREATE TABLE people AS SELECT id, user_id, status FROM orders WHERE id <= 20;
ALTER TABLE people ADD PRIMARY KEY (id);});
create_dest($node, 'mp1', 'mixpanel', { url => $url, project_token => $TOKEN,
	api_secret => 'mp-api-secret-2', batch_size => 1 });
create_track_sync($node, 'ident', 'people', 'mp1', event_type => 'identify',
	mapping => { userId => 'user_id', 'traits.plan' => 'status' });
($run, $status, $r) = run_sync($node, 'ident');
is($status, 'succeeded', 'the identify run succeeded');
$reqs = $v->requests(vendor => 'mixpanel');
ok(@$reqs && !grep({ $_->{path} ne '/engage' || $_->{method} ne 'POST' } @$reqs),
	'identify posts to /engage (profile batch update)');
$recs = $v->records(vendor => 'mixpanel', kind => 'engage');
check_ids([ map { order_id_of($_->{user}) } @$recs ], [ grep { $_ != 7 } 1 .. 20 ],
	'every profile update but the rejected one was applied once');
@why = grep {
	my $x = expected_order(order_id_of($_->{'$distinct_id'}) // 0);
	!(($_->{'$token'} // '') eq $TOKEN && (dig($_, '$set', 'plan') // '') eq $x->{status})
} map { $_->{record} } @$recs;
ok(@$recs && !@why, 'updates are {$token, $distinct_id, $set: traits}')
  or diag(json_encode($why[0] // {}));
$fe = failed_rows($node, 'ident');
is(join(',', map { $_->{primary_key} } @$fe), '7',
	'the profile update /engage rejected (in the body of its 200) is in retl.failed_events')
  or diag('answers: ' . join(' | ', map { "$_->{status} $_->{response}" } grep { $_->{body} =~ /user-7"/ } @$reqs));
is($r->{events_failed}, 1, 'the identify run counts it as failed');

is(sql($node, "SELECT retl._redact(config)->>'secret' FROM retl.destinations WHERE name = 'mp'"),
	'***', 'retl._redact hides the service account secret');
secret_nowhere($node, $SECRET, 'the service account secret appears in no run error or failed event');
secret_nowhere($node, 'mp-api-secret-2', 'the api_secret appears in no run error or failed event');

stop_ok($node);
done_testing();
