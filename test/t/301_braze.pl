# Destination kind braze against test/vendors.py's Braze /users/track:
# Bearer auth, events / attributes shapes, at most 75 objects per request
# (and a lower batch_size), per-object rejections from the 201 "errors"
# array into retl.failed_events (never resent within the run), their
# delivery by the next run, user aliases, create-time validation, and the
# key never shown.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $N = 200;
my $KEY = 'braze-rest-key-5e0c1d9a';
my @REJECT = (17, 101);
my %REJECT = map { $_ => 1 } @REJECT;

my $node = retl_node('braze');
my $v = start_vendors();
$v->config({ api_key => $KEY, reject_users => [ map { "user-$_" } @REJECT ] });
create_orders($node, 'orders', $N);

my $MAPPING = {
	userId => 'user_id',
	event => { value => 'Order Completed' },
	'properties.amount' => 'amount',
	timestamp => 'created_at',
};

# ----- create-time validation ------------------------------------------------
my $url = $v->url;
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'braze', '{"url": "$url"}')},
	'22023', qr/needs "api_key"/, 'a braze destination without api_key is refused');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'braze', '{"url": "ftp://example.com", "api_key": "k"}')},
	'22023', qr/http or https/, 'a non-http url is refused');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'braze', '{"api_key": "k"}')},
	'22023', qr/needs "url"/, 'a braze destination without url is refused');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'braze', '{"url": "$url", "api_key": "k", "batch_size": 76}')},
	'22023', qr/between 1 and 75/, 'batch_size above Braze\'s 75 is refused');
sql_fails($node,
	qq{SELECT retl_create_destination('x', 'braze', '{"url": "$url", "api_key": "k", "apikey": "k"}')},
	'22023', qr/unknown setting "apikey"/, 'an unknown setting is refused');

# ----- track: events, 75 per request, rejections ---------------------------
create_dest($node, 'braze', 'braze', { url => "$url/", api_key => $KEY });
create_track_sync($node, 's', 'orders', 'braze', mapping => $MAPPING);

my ($run, $status, $r) = run_sync($node, 's');
is($status, 'succeeded', 'the run succeeded despite rejected objects');
is($r->{events_sent}, $N, "events_sent = $N");
is($r->{events_succeeded}, $N - @REJECT, 'events_succeeded = N - rejected');
is($r->{events_failed}, scalar @REJECT, 'events_failed = the rejected objects');

my $reqs = $v->requests(vendor => 'braze');
my @bad = grep {
	     $_->{method} ne 'POST'
	  || $_->{path} ne '/users/track'
	  || ($_->{headers}{authorization} // '') ne "Bearer $KEY"
	  || ($_->{headers}{'content-type'} // '') !~ m{^application/json}
} @$reqs;
ok(!@bad, 'every request is POST /users/track with the Bearer key and JSON')
  or diag(json_encode($bad[0]{headers}) . ' ' . $bad[0]{path});
my @sizes;
my %sent;    # external_id -> times sent
my $shape_ok = 1;
for my $q (@$reqs)
{
	my $doc = json_decode($q->{body});
	$shape_ok = 0 unless ref $doc eq 'HASH' && join(',', sort keys %$doc) eq 'events';
	push @sizes, scalar @{ $doc->{events} // [] };
	$sent{ $_->{external_id} // 'undef' }++ for @{ $doc->{events} // [] };
}
ok($shape_ok, 'track requests carry only an "events" array');
is(max_of(@sizes), 75, 'at most 75 events per request, and batches fill up to 75')
  or diag("sizes: @sizes");
cmp_ok(scalar @$reqs, '>=', 3, 'at least ceil(200 / 75) requests');
is(join(',', map { $sent{"user-$_"} // 0 } @REJECT), join(',', map { 1 } @REJECT),
	'rejected objects were sent once, never resent (Braze has no dedupe key)');
my @dup = grep { $sent{$_} > 1 } keys %sent;
ok(!@dup, 'no object was sent twice') or diag("sent twice: @dup[0 .. ($#dup < 9 ? $#dup : 9)]");

my $recs = $v->records(vendor => 'braze', kind => 'events');
check_ids([ map { order_id_of($_->{user}) } @$recs ],
	[ grep { !$REJECT{$_} } 1 .. $N ],
	'Braze processed every row exactly once, and no rejected one');
my @why;
for my $rec (map { $_->{record} } @$recs)
{
	my $id = order_id_of($rec->{external_id}) // 0;
	my $x = expected_order($id);
	my @w;
	push @w, 'name' unless ($rec->{name} // '') eq 'Order Completed';
	push @w, 'time' unless ($rec->{time} // '') eq $x->{created_at};
	push @w, 'properties.amount'
	  unless defined dig($rec, qw(properties amount))
	  && abs($rec->{properties}{amount} - $x->{amount}) < 1e-9;
	push @w, 'properties.id' unless (dig($rec, qw(properties id)) // '') eq $id;
	push @w, 'no user_alias with an external_id' if exists $rec->{user_alias};
	push @why, "user $id: @w" if @w;
}
ok(!@why, 'events have external_id, name, time (the mapped timestamp) and properties')
  or diag(join("\n", @why[ 0 .. ($#why < 4 ? $#why : 4) ]) . "\n" . json_encode($recs->[0]{record}));

my $fe = failed_rows($node, 's');
is(join(',', sort { $a <=> $b } map { $_->{primary_key} } @$fe), join(',', @REJECT),
	'retl.failed_events holds exactly the rejected rows');
@why = ();
for my $f (@$fe)
{
	my @w;
	push @w, "error '$f->{error}'"
	  unless ($f->{error} // '') =~ /Braze rejected the object: 'external_id' is invalid/;
	push @w, 'http_status' unless ($f->{http_status} // 0) == 201;
	push @w, "run_id" unless ($f->{run_id} // '') eq $run;
	my $p = eval { json_decode($f->{payload}) } // {};
	push @w, 'payload is not the Braze event object'
	  unless ($p->{external_id} // '') eq "user-$f->{primary_key}" && exists $p->{name};
	push @why, "row $f->{primary_key}: @w" if @w;
}
ok(@$fe && !@why, 'each failed row has the reason from Braze\'s errors array and the Braze object')
  or diag(join("\n", @why));
ok(@$fe && !grep({ ($_->{message_id} // '') !~ /^[0-9a-f-]{36}$/ } @$fe),
	'failed_events.message_id carries the event\'s messageId (README: failed events keep it)')
  or diag('message_id: ' . join(', ', map { $_->{message_id} // 'NULL' } @$fe));

# The next run sends the failed objects again, now accepted; nothing else.
$v->reset;
$v->config({ api_key => $KEY });
my ($run2, $status2, $r2) = run_sync($node, 's');
is($status2, 'succeeded', 'the next run succeeded');
$recs = $v->records(vendor => 'braze', kind => 'events');
is(join(',', sort { $a <=> $b } map { order_id_of($_->{user}) } @$recs), join(',', @REJECT),
	'the next run delivered the failed objects, once, as Braze events');
is(scalar @{ failed_rows($node, 's') }, 0, 'retl.failed_events is empty after their delivery');
is($r2->{events_succeeded}, scalar @REJECT, 'the next run counts them as succeeded');

# ----- a lower batch_size is honoured ----------------------------------------
$v->reset;
$v->config({ api_key => $KEY });
create_dest($node, 'braze50', 'braze', { url => $url, api_key => $KEY, batch_size => 50 });
create_track_sync($node, 's50', 'orders', 'braze50', mapping => $MAPPING);
($run, $status) = run_sync($node, 's50');
is($status, 'succeeded', 'the batch_size 50 run succeeded');
@sizes = map { scalar @{ json_decode($_->{body})->{events} } } @{ $v->requests(vendor => 'braze') };
is(max_of(@sizes), 50, 'batch_size 50: at most 50 events per request') or diag("sizes: @sizes");
check_ids([ map { order_id_of($_->{user}) } @{ $v->records(vendor => 'braze') } ],
	[ 1 .. $N ], 'batch_size 50: every row exactly once');

# ----- identify: attributes ---------------------------------------------------
$v->reset;
$v->config({ api_key => $KEY });
create_track_sync($node, 'ident', 'orders', 'braze', event_type => 'identify',
	mapping => { userId => 'user_id', 'traits.plan' => 'status' });
($run, $status) = run_sync($node, 'ident');
is($status, 'succeeded', 'the identify run succeeded');
$reqs = $v->requests(vendor => 'braze');
@sizes = ();
$shape_ok = 1;
for my $q (@$reqs)
{
	my $doc = json_decode($q->{body});
	$shape_ok = 0 unless join(',', sort keys %$doc) eq 'attributes';
	push @sizes, scalar @{ $doc->{attributes} // [] };
}
ok($shape_ok, 'identify requests carry only an "attributes" array');
ok(max_of(@sizes) <= 75, 'at most 75 attribute objects per request') or diag("sizes: @sizes");
$recs = $v->records(vendor => 'braze', kind => 'attributes');
check_ids([ map { order_id_of($_->{user}) } @$recs ], [ 1 .. $N ],
	'every row arrived once as an attributes object');
@why = ();
for my $rec (map { $_->{record} } @$recs)
{
	my $id = order_id_of($rec->{external_id}) // 0;
	my $x = expected_order($id);
	push @why, "user $id" unless ($rec->{plan} // '') eq $x->{status}
	  && ($rec->{id} // '') eq $id && !exists $rec->{traits} && !exists $rec->{name};
}
ok(!@why, 'attributes objects have external_id and the traits as top-level fields')
  or diag(json_encode($recs->[0]{record}));

# A user without userId is addressed by a user alias of its anonymousId.
sql($node, q{CREATE TABLE visitors (id int PRIMARY KEY, anon text, plan text);
INSERT INTO visitors VALUES (1, 'anon-1', 'free'), (2, 'anon-2', 'pro');});
$v->reset;
$v->config({ api_key => $KEY });
create_track_sync($node, 'anon', 'visitors', 'braze', event_type => 'identify',
	mapping => { anonymousId => 'anon' });
($run, $status) = run_sync($node, 'anon');
is($status, 'succeeded', 'the anonymous identify run succeeded');
$recs = $v->records(vendor => 'braze', kind => 'attributes');
is(json_encode([ sort { $a->{user_alias}{alias_name} cmp $b->{user_alias}{alias_name} }
	  map { $_->{record} } @$recs ]),
	json_encode([
		{ id => 1, plan => 'free', user_alias => { alias_name => 'anon-1', alias_label => 'anonymous_id' } },
		{ id => 2, plan => 'pro', user_alias => { alias_name => 'anon-2', alias_label => 'anonymous_id' } } ]),
	'anonymous users are addressed by user_alias {alias_name: anonymousId, alias_label: "anonymous_id"}');

# ----- a 429 waits until X-RateLimit-Reset ------------------------------------
$v->reset;
$v->config({ api_key => $KEY, braze_throttle => 1 });
sql($node, "INSERT INTO visitors VALUES (3, 'anon-3', 'free')");
($run, $status) = run_sync($node, 'anon');
is($status, 'succeeded', 'a run throttled once by a 429 succeeds');
my @reqs = @{ $v->requests(vendor => 'braze') };
is(join(',', map { $_->{status} } @reqs), '429,201', 'one 429, then the retry is accepted');
# the reset is whole epoch seconds, now + 3: at least 2 s away; retl's own
# backoff for a first retry is at most 0.5 s
cmp_ok($reqs[1]{time} - $reqs[0]{time}, '>=', 1.5,
	'the retry waited for X-RateLimit-Reset (a 429 without Retry-After)');

# ----- a wrong key fails the run, and no key is ever shown --------------------
my $WRONG = 'wrong-braze-key-77aa';
create_dest($node, 'bad', 'braze', { url => $url, api_key => $WRONG, max_attempts => 1 });
create_track_sync($node, 'badkey', 'visitors', 'bad', event_type => 'identify',
	mapping => { anonymousId => 'anon' });
($run, $status, $r) = run_sync($node, 'badkey');
is($status, 'failed', 'a 401 (wrong key) fails the run');
like($r->{error} // '', qr/401/, 'the run error says 401');
is(sql($node, "SELECT retl._redact(config)->>'api_key' FROM retl.destinations WHERE name = 'braze'"),
	'***', 'retl._redact hides api_key');
secret_nowhere($node, $KEY, 'the Braze key appears in no run error or failed event');
secret_nowhere($node, $WRONG, 'the wrong key appears in no run error or failed event');

stop_ok($node);
done_testing();
