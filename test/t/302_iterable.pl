# Destination kind iterable against test/vendors.py's Iterable API:
# trackBulk and bulkUpdate with the Api-Key header, the event id from the
# messageId, createdAt in seconds, dataFields, a lower batch_size, the
# failed users of a 200 answer (failCount, invalidUserIds, failedUpdates)
# into retl.failed_events, create-time validation, the key never shown.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $N = 300;
my $KEY = 'iterable-server-key-93be';
my @REJECT = (5, 250);
my %REJECT = map { $_ => 1 } @REJECT;
my $BAD_DATA = 42;    # identify: listed under failedUpdates.invalidDataUserIds

my $node = retl_node('iterable');
my $v = start_vendors();
$v->config({ api_key => $KEY, reject_users => [ map { "user-$_" } @REJECT ] });
create_orders($node, 'orders', $N);
my $url = $v->url;

# ----- create-time validation ------------------------------------------------
sql_fails($node, qq{SELECT retl_create_destination('x', 'iterable', '{"url": "$url"}')},
	'22023', qr/needs "api_key"/, 'an iterable destination without api_key is refused');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'iterable', '{"url": "api.iterable.com", "api_key": "k"}')},
	'22023', qr/http or https/, 'a url without http(s) is refused');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'iterable', '{"api_key": "k", "batch_size": 0}')},
	'22023', qr/"batch_size" must be between/, 'batch_size 0 is refused');
ok(eval { create_dest($node, 'default_url', 'iterable', { api_key => 'k' }); 1 },
	'url is optional (https://api.iterable.com by default)');

# ----- track: trackBulk --------------------------------------------------------
create_dest($node, 'it', 'iterable', { url => $url, api_key => $KEY, batch_size => 120 });
create_track_sync($node, 's', 'orders', 'it', mapping => {
	userId => 'user_id',
	event => { value => 'Order Completed' },
	'properties.amount' => 'amount',
	timestamp => 'created_at',
});
my ($run, $status, $r) = run_sync($node, 's');
is($status, 'succeeded', 'the run succeeded despite failed users');
is($r->{events_succeeded}, $N - @REJECT, 'events_succeeded = N - rejected');
is($r->{events_failed}, scalar @REJECT, 'events_failed = the events of the failed users');

my $reqs = $v->requests(vendor => 'iterable');
my @bad = grep {
	     $_->{method} ne 'POST'
	  || $_->{path} ne '/api/events/trackBulk'
	  || ($_->{headers}{'api-key'} // '') ne $KEY
	  || ($_->{headers}{'content-type'} // '') !~ m{^application/json}
	  || exists $_->{headers}{authorization}
} @$reqs;
ok(@$reqs && !@bad, 'every request is POST /api/events/trackBulk with the Api-Key header')
  or diag(json_encode($bad[0] // {}));
my @sizes = map { scalar @{ json_decode($_->{body})->{events} // [] } } @$reqs;
is(max_of(@sizes), 120, 'batch_size 120 is honoured (and filled)') or diag("sizes: @sizes");

my $recs = $v->records(vendor => 'iterable', kind => 'events');
check_ids([ map { order_id_of($_->{user}) } @$recs ], [ grep { !$REJECT{$_} } 1 .. $N ],
	'Iterable took every row exactly once, and no event of a failed user');
my (@why, %ids);
for my $rec (map { $_->{record} } @$recs)
{
	my $id = order_id_of($rec->{userId}) // 0;
	my $x = expected_order($id);
	my @w;
	push @w, 'eventName' unless ($rec->{eventName} // '') eq 'Order Completed';
	push @w, 'id (messageId)' unless ($rec->{id} // '') =~ /^[0-9a-f-]{36}$/;
	push @w, 'createdAt (seconds)' unless ($rec->{createdAt} // 0) == 1704067200 + $id;
	push @w, 'dataFields.amount'
	  unless defined dig($rec, qw(dataFields amount))
	  && abs($rec->{dataFields}{amount} - $x->{amount}) < 1e-9;
	push @w, 'dataFields.id' unless (dig($rec, qw(dataFields id)) // '') eq $id;
	$ids{ $rec->{id} // '' }++;
	push @why, "user $id: @w" if @w;
}
ok(!@why, 'events have userId, eventName, id, createdAt (seconds) and dataFields')
  or diag(join("\n", @why[ 0 .. ($#why < 4 ? $#why : 4) ]) . "\n" . json_encode($recs->[0]{record}));
is(scalar(keys %ids), scalar @$recs, 'event ids are distinct');

# The event id is the messageId: compare with what retl_preview builds.
my $preview = sql_json($node, "SELECT jsonb_agg(e) FROM retl_preview('s', 3, format => 'standard') e");
my %want = map { ($_->{userId} => $_->{messageId}) } @$preview;
my %have = map { ($_->{record}{userId} => $_->{record}{id}) } @$recs;
ok(%want && !grep({ ($have{$_} // '') ne $want{$_} } keys %want),
	'the Iterable event id is the event\'s messageId')
  or diag('preview: ' . json_encode(\%want) . ' sent: '
	  . json_encode({ map { ($_ => $have{$_}) } keys %want }));

my $fe = failed_rows($node, 's');
is(join(',', sort { $a <=> $b } map { $_->{primary_key} } @$fe), join(',', @REJECT),
	'retl.failed_events holds exactly the events of the failed users');
ok(@$fe && !grep({ ($_->{error} // '') !~ /Iterable: invalidUserIds/ } @$fe),
	'their reason names the Iterable list (invalidUserIds)')
  or diag(json_encode([ map { $_->{error} } @$fe ]));
ok(@$fe && !grep({ ($_->{message_id} // '') ne (eval { json_decode($_->{payload})->{id} } // '-') } @$fe),
	'failed_events.message_id is the event\'s messageId (the Iterable id)')
  or diag('message_id: ' . join(', ', map { $_->{message_id} // 'NULL' } @$fe));

# ----- identify: bulkUpdate ----------------------------------------------------
$v->reset;
$v->config({ api_key => $KEY, reject_users => ['user-7'],
	invalid_data_users => ["user-$BAD_DATA"] });
create_track_sync($node, 'ident', 'orders', 'it', event_type => 'identify',
	mapping => { userId => 'user_id', 'traits.plan' => 'status' });
($run, $status, $r) = run_sync($node, 'ident');
is($status, 'succeeded', 'the identify run succeeded');
$reqs = $v->requests(vendor => 'iterable');
@bad = grep { $_->{path} ne '/api/users/bulkUpdate' || ($_->{headers}{'api-key'} // '') ne $KEY } @$reqs;
ok(@$reqs && !@bad, 'identify goes to POST /api/users/bulkUpdate with the Api-Key header');
ok(!grep({ join(',', keys %{ json_decode($_->{body}) }) ne 'users' } @$reqs),
	'bulkUpdate bodies are {"users": [...]}');
$recs = $v->records(vendor => 'iterable', kind => 'users');
check_ids([ map { order_id_of($_->{user}) } @$recs ], [ grep { $_ != 7 && $_ != $BAD_DATA } 1 .. $N ],
	'Iterable updated every user once but the failed ones');
@why = grep {
	my $x = expected_order(order_id_of($_->{userId}) // 0);
	!($_->{preferUserId} && ($_->{dataFields}{plan} // '') eq $x->{status})
} map { $_->{record} } @$recs;
ok(!@why, 'users have userId, preferUserId and the traits as dataFields')
  or diag(json_encode($why[0]));
$fe = failed_rows($node, 'ident');
is(join(',', sort { $a <=> $b } map { $_->{primary_key} } @$fe), join(',', 7, $BAD_DATA),
	'users listed in invalidUserIds and failedUpdates.invalidDataUserIds go to retl.failed_events')
  or diag(json_encode([ map { [ $_->{primary_key}, $_->{error} ] } @$fe ]));
is($r->{events_failed}, 2, 'the identify run counts both as failed');

secret_nowhere($node, $KEY, 'the Iterable key appears in no run error or failed event');

stop_ok($node);
done_testing();
