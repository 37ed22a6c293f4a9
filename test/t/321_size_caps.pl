# Size caps, enforced by the emulators (test/vendors.py: SIZE_CAPS;
# test/receiver.py: max_body_bytes, max_events, max_event_bytes), with
# rows wide enough that each cap forces a split: the emulator refuses no
# request, the rows are split into several requests, and the largest body
# is under the cap and within two events of it.
#   - Amplitude /batch 20 MiB and 2,000 events, /2/httpapi 1 MiB;
#   - Iterable 4 MB;
#   - Kinesis 5 MiB per request; a record over 1 MiB (data and partition
#     key) is never sent, one just under it is;
#   - RudderStack 4 MiB per request, 32 KB per event (an event over it is
#     never sent), with the write key as Basic auth checked;
#   - Segment 500 KB per request (its 2,500 events cannot bind first).
use strict;
use warnings;
use MIME::Base64 ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $node = retl_node('caps');
my $v = start_vendors();
my $recv = start_receiver();
my $url = $v->url;
my $MiB = 1024 * 1024;

# A table of $n rows whose pad column holds $width bytes.
sub wide_table
{
	my ($table, $n, $width) = @_;
	sql($node, qq{
CREATE TABLE $table (id bigint PRIMARY KEY, user_id text NOT NULL, pad text);
INSERT INTO $table SELECT g, 'user-' || g, repeat('x', $width)
  FROM generate_series(1, $n) g;});
	return;
}

sub wide_sync
{
	my ($name, $table, $dest) = @_;
	create_track_sync($node, $name, $table, $dest, mapping => {
		userId => 'user_id', event => { value => 'Wide' }, 'properties.pad' => 'pad' });
	return;
}

# Checks the requests (brief: bytes, status) of one case against $cap;
# $slack is two events' worth of bytes.
sub check_bodies
{
	my ($name, $reqs, $cap, $slack) = @_;
	my @refused = grep { $_->{status} !~ /^2\d\d$/ } @$reqs;
	is(scalar @refused, 0, "$name: the emulator refused no request")
	  or diag(json_encode([ map { [ $_->{status}, $_->{bytes}, $_->{error} ] } @refused ]));
	cmp_ok(scalar @$reqs, '>=', 2, "$name: the cap split the rows into several requests");
	my $max = max_of(map { $_->{bytes} } @$reqs);
	cmp_ok($max, '<=', $cap, "$name: the largest body ($max bytes) is within the cap ($cap)");
	cmp_ok($max, '>', $cap - $slack,
		"$name: and close to it (within two events, $slack bytes)");
	return;
}

# Runs the sync and checks that it delivered ids 1 .. $n once each at the
# emulator $v (vendor $vendor).
sub run_vendor_case
{
	my ($name, $vendor, $n) = @_;
	my ($run, $status, $r) = run_sync($node, $name, 300);
	is($status, 'succeeded', "$name: the run succeeded");
	check_ids([ map { order_id_of($_->{user}) } @{ $v->records(vendor => $vendor, brief => 1) } ],
		[ 1 .. $n ], "$name: every row was taken exactly once");
	return $r;
}

# ----- Amplitude /batch: 20 MiB ------------------------------------------------
wide_table('w30k', 1000, 30000);
$v->reset;
create_dest($node, 'amp', 'amplitude', { url => $url, api_key => 'amp-key' });
wide_sync('amp', 'w30k', 'amp');
run_vendor_case('amp', 'amplitude', 1000);
check_bodies('amplitude /batch', $v->_get('/_requests?brief=1'), 20 * $MiB, 2 * 31000);

# ----- Amplitude /batch: 2,000 events -------------------------------------------
create_orders($node, 'tiny', 2500);
$v->reset;
create_dest($node, 'amp_n', 'amplitude', { url => $url, api_key => 'amp-key',
	batch_size => 2000 });
create_track_sync($node, 'amp_n', 'tiny', 'amp_n');
run_vendor_case('amp_n', 'amplitude', 2500);
my %per_request;
$per_request{ $_->{seq} }++ for @{ $v->records(vendor => 'amplitude', brief => 1) };
is(max_of(values %per_request), 2000, 'amplitude: the largest request has 2,000 events, the cap');
is(scalar(grep { $_->{status} != 200 } @{ $v->_get('/_requests?brief=1') }), 0,
	'amplitude: no request was refused (over 2,000 events is a 413)');

# ----- Amplitude /2/httpapi: 1 MiB ----------------------------------------------
wide_table('w30k_s', 80, 30000);
$v->reset;
create_dest($node, 'amp_h', 'amplitude', { url => $url, api_key => 'amp-key',
	endpoint => 'httpapi' });
wide_sync('amp_h', 'w30k_s', 'amp_h');
run_vendor_case('amp_h', 'amplitude', 80);
check_bodies('amplitude /2/httpapi', $v->_get('/_requests?brief=1'), $MiB, 2 * 31000);

# ----- Iterable: 4 MB -------------------------------------------------------------
wide_table('w30k_m', 200, 30000);
$v->reset;
create_dest($node, 'it', 'iterable', { url => $url, api_key => 'it-key' });
wide_sync('it', 'w30k_m', 'it');
run_vendor_case('it', 'iterable', 200);
check_bodies('iterable', $v->_get('/_requests?brief=1'), 4 * 1000 * 1000, 2 * 31000);

# ----- Kinesis: 5 MiB per request, 1 MiB per record -----------------------------
my %KINESIS = (region => 'us-east-1', stream => 'events', access_key_id => 'AKIDTEST',
	secret_access_key => 'kinesis-secret', endpoint => "$url/", max_backoff_ms => 50);
wide_table('w200k', 60, 200000);
$v->reset;
create_dest($node, 'kin', 'kinesis', \%KINESIS);
wide_sync('kin', 'w200k', 'kin');
run_vendor_case('kin', 'kinesis', 60);
# a record's data is base64 in the body: 4/3 of the event
check_bodies('kinesis', $v->_get('/_requests?brief=1'), 5 * $MiB, 2 * 268000);

# data and partition key: 1,000,000 bytes of pad is under 1 MiB, 1,100,000 over
sql($node, q{
CREATE TABLE kin_big (id bigint PRIMARY KEY, user_id text NOT NULL, pad text);
INSERT INTO kin_big VALUES (1, 'user-1', repeat('x', 1000000)),
                           (2, 'user-2', repeat('x', 1100000));});
$v->reset;
wide_sync('kin_big', 'kin_big', 'kin');
my ($run, $status, $r) = run_sync($node, 'kin_big', 300);
is($status, 'succeeded', 'kinesis 1 MiB: the run succeeded');
check_ids([ map { order_id_of($_->{user}) } @{ $v->records(vendor => 'kinesis', brief => 1) } ],
	[1], 'kinesis 1 MiB: the record under 1 MiB was put, the one over it was not');
is(scalar(grep { $_->{status} != 200 } @{ $v->_get('/_requests?brief=1') }), 0,
	'kinesis 1 MiB: the record over 1 MiB was never sent (no request refused)');
my $fe = failed_rows($node, 'kin_big');
is(join(',', map { $_->{primary_key} } @$fe), '2',
	'kinesis 1 MiB: it is a failed event')
  or diag(json_encode([ map { $_->{error} } @$fe ]));

# ----- RudderStack: 4 MiB per request, 32 KB per event, Basic auth -----------------
wide_table('w30k_r', 200, 30000);
sql($node, q{INSERT INTO w30k_r VALUES (201, 'user-201', repeat('x', 40000))});
$recv->reset;
$recv->config({ basic => 'rs-write-key:', max_body_bytes => 4 * $MiB,
	max_event_bytes => 32 * 1024 });
sql($node, "SELECT retl_create_destination('rs', 'rudderstack', "
	  . sql_lit(json_encode({ url => $recv->url(''), write_key => 'rs-write-key' })) . ')');
wide_sync('rs', 'w30k_r', 'rs');
($run, $status, $r) = run_sync($node, 'rs', 300);
is($status, 'succeeded', 'rudderstack: the run succeeded');
my $rreqs = $recv->_get('/_requests?brief=1');
is(join(',', sort keys %{ { map { $_->{path} => 1 } @$rreqs } }), '/v1/batch',
	'rudderstack: every request went to /v1/batch');
is(scalar(grep { ($_->{authorization} // '') ne
	  'Basic ' . MIME::Base64::encode_base64('rs-write-key:', '') } @$rreqs), 0,
	'rudderstack: every request carried the write key as Basic auth, empty password');
check_ids(event_ids($recv->events()), [ 1 .. 200 ],
	'rudderstack: every row under 32 KB arrived once, the one over it never');
check_bodies('rudderstack', $rreqs, 4 * $MiB, 2 * 31000);
$fe = failed_rows($node, 'rs');
is(join(',', map { $_->{primary_key} } @$fe), '201', 'rudderstack: the 40 KB event is a failed event');
like($fe->[0]{error} // '', qr/over the destination's limit/, 'rudderstack: saying why');
is("$r->{events_succeeded}/$r->{events_failed}", '200/1', 'rudderstack: 200 succeeded, 1 failed');

# ----- Segment: 500 KB and 2,500 events per request ------------------------------
wide_table('w30k_g', 40, 30000);
$recv->reset;
$recv->config({ basic => 'seg-key:', max_body_bytes => 500 * 1000, max_events => 2500,
	max_event_bytes => 32 * 1024 });
sql($node, "SELECT retl_create_destination('seg', 'segment', "
	  . sql_lit(json_encode({ url => $recv->url(''), write_key => 'seg-key',
		batch_size => 2500 })) . ')');
wide_sync('seg', 'w30k_g', 'seg');
($run, $status) = run_sync($node, 'seg', 300);
is($status, 'succeeded', 'segment: the run succeeded');
check_ids(event_ids($recv->events()), [ 1 .. 40 ], 'segment: every row arrived once');
check_bodies('segment', $recv->_get('/_requests?brief=1'), 500 * 1000, 2 * 31000);

# (Segment's 2,500 events cannot bind: retl's smallest events, some 400
# bytes with their envelope, reach 500 KB first; max_events stays set above.)

stop_ok($node);
done_testing();
