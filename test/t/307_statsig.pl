# Destination kind statsig against test/vendors.py's Statsig
# /v1/log_event: the statsig-api-key header, the event shape (eventName,
# user.userID, metadata, time in ms), batch_size, an identify sync refused
# at retl_create_sync (0A000), and a whole-request 400 (Statsig has no
# per-event answer) isolated by splitting the batch: only the bad event
# goes to retl.failed_events.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $N = 300;
my $KEY = 'secret-statsig-server-key-1b2c';
my $REJECT = 77;

my $node = retl_node('statsig');
my $v = start_vendors();
$v->config({ api_key => $KEY, reject_users => ["user-$REJECT"] });
create_orders($node, 'orders', $N);
my $url = $v->url;

# ----- create-time validation ------------------------------------------------
sql_fails($node, qq{SELECT retl_create_destination('x', 'statsig', '{"url": "$url"}')},
	'22023', qr/needs "api_key"/, 'a statsig destination without api_key is refused');
sql_fails($node, qq{SELECT retl_create_destination('x', 'statsig', '{"url": "events.statsigapi.net", "api_key": "k"}')},
	'22023', qr/http or https/, 'a non-http url is refused');
sql_fails($node, qq{SELECT retl_create_destination('x', 'statsig', '{"api_key": "k", "batch_size": 1001}')},
	'22023', qr/between 1 and 1000/, 'batch_size above 1000 is refused');

create_dest($node, 'st', 'statsig', { url => $url, api_key => $KEY, batch_size => 100 });
sql_fails($node, q{SELECT retl_create_sync(name => 'ident', source => 'orders', destination => 'st',
	event_type => 'identify', mapping => '{"userId": "user_id"}', primary_key => 'id')},
	'0A000', qr/destination kind "statsig" has no identify call/,
	'an identify sync on a statsig destination is refused at retl_create_sync (0A000)');
is(sql($node, "SELECT count(*) FROM retl.syncs WHERE name = 'ident'"), '0', 'and not created');

# ----- track --------------------------------------------------------------------
create_track_sync($node, 's', 'orders', 'st', mapping => {
	userId => 'user_id',
	event => { value => 'Order Completed' },
	'properties.amount' => 'amount',
	timestamp => 'created_at',
});
my ($run, $status, $r) = run_sync($node, 's');
is($status, 'succeeded', 'the run succeeded despite the 400');
is($r->{events_succeeded}, $N - 1, 'events_succeeded = N - 1');
is($r->{events_failed}, 1, 'events_failed = 1: the batch was split until the bad event was alone');

my $reqs = $v->requests(vendor => 'statsig');
my @bad = grep {
	     $_->{method} ne 'POST'
	  || $_->{path} ne '/v1/log_event'
	  || ($_->{headers}{'statsig-api-key'} // '') ne $KEY
	  || ($_->{headers}{'content-type'} // '') !~ m{^application/json}
} @$reqs;
ok(@$reqs && !@bad, 'every request is POST /v1/log_event with the statsig-api-key header')
  or diag(json_encode($bad[0] // {}));
my @sizes = map { scalar @{ json_decode($_->{body})->{events} // [] } } @$reqs;
is(max_of(@sizes), 100, 'batch_size 100 is honoured (and filled)') or diag("sizes: @sizes");
ok(!grep({ join(',', keys %{ json_decode($_->{body}) }) ne 'events' } @$reqs),
	'bodies are {"events": [...]}');

my $recs = $v->records(vendor => 'statsig');
check_ids([ map { order_id_of($_->{user}) } @$recs ], [ grep { $_ != $REJECT } 1 .. $N ],
	'Statsig logged every row exactly once, not the rejected one');
my @why;
for my $rec (map { $_->{record} } @$recs)
{
	my $id = order_id_of(dig($rec, qw(user userID))) // 0;
	my $x = expected_order($id);
	my @w;
	push @w, 'eventName' unless ($rec->{eventName} // '') eq 'Order Completed';
	push @w, 'time (ms)' unless ($rec->{time} // 0) == (1704067200 + $id) * 1000 + 123;
	push @w, 'metadata.amount'
	  unless defined dig($rec, qw(metadata amount))
	  && abs($rec->{metadata}{amount} - $x->{amount}) < 1e-9;
	push @w, 'metadata.id' unless (dig($rec, qw(metadata id)) // '') eq $id;
	push @why, "user $id: @w" if @w;
}
ok(!@why, 'events have eventName, user.userID, metadata and time in ms')
  or diag(join("\n", @why[ 0 .. ($#why < 4 ? $#why : 4) ]) . "\n" . json_encode($recs->[0]{record}));

my $fe = failed_rows($node, 's');
is(join(',', map { $_->{primary_key} } @$fe), $REJECT, 'retl.failed_events holds the rejected event only');
ok(($fe->[0]{error} // '') =~ /HTTP 400/ && ($fe->[0]{http_status} // 0) == 400,
	'its reason is the 400 answer') or diag($fe->[0]{error});
my $p = eval { json_decode($fe->[0]{payload}) } // {};
is(dig($p, qw(user userID)) // '', "user-$REJECT", 'its payload is the Statsig event');

# ----- a wrong key fails the run; the key is never shown ---------------------
my $WRONG = 'secret-wrong-statsig-key-0000';
sql($node, q{CREATE TABLE few AS SELECT * FROM orders WHERE id <= 3; ALTER TABLE few ADD PRIMARY KEY (id);});
create_dest($node, 'bad', 'statsig', { url => $url, api_key => $WRONG, max_attempts => 1 });
create_track_sync($node, 'badkey', 'few', 'bad');
($run, $status, $r) = run_sync($node, 'badkey');
is($status, 'failed', 'a 401 (wrong key) fails the run');
like($r->{error} // '', qr/HTTP 401/, 'the run error says 401');
is(sql($node, "SELECT retl._redact(config)->>'api_key' FROM retl.destinations WHERE name = 'st'"),
	'***', 'retl._redact hides api_key');
secret_nowhere($node, $KEY, 'the Statsig key appears in no run error or failed event');
secret_nowhere($node, $WRONG, 'the wrong key appears in no run error or failed event');

stop_ok($node);
done_testing();
