# Destination kind kafka_rest against test/vendors.py's Confluent REST
# Proxy: v2 POST /topics/{topic} (application/vnd.kafka.json.v2+json,
# Basic auth) and v3 POST /v3/clusters/{id}/topics/{topic}/records
# (concatenated JSON records, one delivery report each).  The record key is
# the userId and the value the whole event; per-record error codes: the
# retriable ones (v2 error_code 2, v3 50003) are sent again, alone, until
# delivered; the others (v2 error_code 1, v3 40002) go to
# retl.failed_events and are not sent again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $N = 600;
my ($USER, $PASSWORD) = ('retl', 'kafka-proxy-password-3a9e');
my $TOPIC = 'orders-events';
my $REJECT = 4;
my @RETRY = (6, 550);

my $node = retl_node('kafka');
my $v = start_vendors();
create_orders($node, 'orders', $N);
my $url = $v->url;

# ----- create-time validation ------------------------------------------------
sql_fails($node, qq{SELECT retl_create_destination('x', 'kafka_rest', '{"topic": "t"}')},
	'22023', qr/needs "url"/, 'a kafka_rest destination without url is refused');
sql_fails($node, qq{SELECT retl_create_destination('x', 'kafka_rest', '{"url": "kafka://broker:9092", "topic": "t"}')},
	'22023', qr/http or https/, 'a non-http url is refused');
sql_fails($node, qq{SELECT retl_create_destination('x', 'kafka_rest', '{"url": "$url"}')},
	'22023', qr/valid "topic"/, 'a kafka_rest destination without topic is refused');
sql_fails($node, qq{SELECT retl_create_destination('x', 'kafka_rest', '{"url": "$url", "topic": "a/b"}')},
	'22023', qr/valid "topic"/, 'a topic that would change the URL path is refused');
sql_fails($node, qq{SELECT retl_create_destination('x', 'kafka_rest', '{"url": "$url", "topic": "t", "api_version": "v4"}')},
	'22023', qr/invalid api_version/, 'an unknown api_version is refused');
sql_fails($node, qq{SELECT retl_create_destination('x', 'kafka_rest', '{"url": "$url", "topic": "t", "api_version": "v3"}')},
	'22023', qr/needs "cluster_id"/, 'v3 without cluster_id is refused');

my $MAPPING = {
	userId => 'user_id',
	event => { value => 'Order Completed' },
	'properties.amount' => 'amount',
};

# Checks the delivered records of one API version; $get_user and
# $get_value read a record.
sub check_delivery
{
	my ($ver, $run, $get_key, $get_value) = @_;
	my $recs = $v->records(vendor => 'kafka');
	check_ids([ map { order_id_of($_->{user}) } @$recs ], [ grep { $_ != $REJECT } 1 .. $N ],
		"$ver: every row was produced exactly once (retriable errors resent), the rejected one not");
	my (@why, %mids);
	for my $rec (map { $_->{record} } @$recs)
	{
		my $key = $get_key->($rec);
		my $e = $get_value->($rec);
		my $id = order_id_of($key) // 0;
		$mids{ $e->{messageId} // '' }++;
		push @why, "record $id: value is not the whole event with key = userId"
		  unless ref $e eq 'HASH' && ($e->{userId} // '') eq $key
		  && ($e->{messageId} // '') =~ /^[0-9a-f-]{36}$/
		  && (dig($e, qw(properties id)) // '') eq $id
		  && (dig($e, qw(context sources job_run_id)) // '') eq $run;
	}
	ok(!@why, "$ver: the record key is the userId and the value the whole event")
	  or diag(join("\n", @why[ 0 .. ($#why < 4 ? $#why : 4) ]) . "\n" . json_encode($recs->[0]{record}));
	is(scalar(keys %mids), scalar @$recs, "$ver: values carry distinct messageIds");
	return;
}

# ----- v2 ----------------------------------------------------------------------------
$v->config({ basic => "$USER:$PASSWORD", reject_users => ["user-$REJECT"],
	retry_users => [ map { "user-$_" } @RETRY ] });
create_dest($node, 'k2', 'kafka_rest', { url => "$url/", topic => $TOPIC,
	username => $USER, password => $PASSWORD, max_backoff_ms => 50 });
create_track_sync($node, 's2', 'orders', 'k2', mapping => $MAPPING);
my ($run, $status, $r) = run_sync($node, 's2');
is($status, 'succeeded', 'v2: the run succeeded');
my $reqs = $v->requests(vendor => 'kafka');
my $basic = 'Basic ' . MIME::Base64::encode_base64("$USER:$PASSWORD", '');
my @bad = grep {
	     $_->{method} ne 'POST'
	  || $_->{path} ne "/topics/$TOPIC"
	  || ($_->{headers}{'content-type'} // '') ne 'application/vnd.kafka.json.v2+json'
	  || ($_->{headers}{authorization} // '') ne $basic
} @$reqs;
ok(@$reqs && !@bad, 'v2: POST /topics/{topic}, application/vnd.kafka.json.v2+json, Basic auth')
  or diag(json_encode({ path => $bad[0]{path}, headers => $bad[0]{headers} }));
my (%sent, @sizes);
my $shape_ok = 1;
for my $q (@$reqs)
{
	my $doc = json_decode($q->{body});
	$shape_ok = 0 unless join(',', keys %$doc) eq 'records';
	push @sizes, scalar @{ $doc->{records} // [] };
	$sent{ $_->{key} }++ for @{ $doc->{records} // [] };
}
ok($shape_ok, 'v2: bodies are {"records": [{"key", "value"}]}');
is(max_of(@sizes), 500, 'v2: 500 records per request by default') or diag("sizes: @sizes");
check_delivery('v2', $run, sub { $_[0]{key} }, sub { $_[0]{value} });
is(join(',', map { $sent{"user-$_"} } @RETRY), '2,2', 'v2: records with error_code 2 were sent again');
my @again = sort { $a->{seq} <=> $b->{seq} } grep { $_->{body} =~ /"key":"user-6"/ } @$reqs;
ok(@again == 2 && @{ json_decode($again[1]{body})->{records} } <= 2,
	'v2: only the records with error_code 2 are sent again, not their batch');
is($sent{"user-$REJECT"}, 1, 'v2: the record with error_code 1 is not sent again');
my $fe = failed_rows($node, 's2');
is(join(',', map { $_->{primary_key} } @$fe), $REJECT, 'v2: it is in retl.failed_events');
like($fe->[0]{error} // '', qr/^Kafka REST error 1: This record is rejected/, 'v2: with the proxy\'s error');
is($fe->[0]{message_id} // 'NULL', eval { json_decode($fe->[0]{payload})->{value}{messageId} } // '-',
	'v2: failed_events.message_id is the event\'s messageId');
is($r->{events_failed}, 1, 'v2: events_failed = 1');
is($r->{events_succeeded}, $N - 1, 'v2: events_succeeded = N - 1');
is($r->{events_sent}, $N, 'v2: events_sent = N (succeeded + failed)');

# ----- v3 ----------------------------------------------------------------------------
$v->reset;
$v->config({ reject_users => ["user-$REJECT"], retry_users => [ map { "user-$_" } @RETRY ] });
create_dest($node, 'k3', 'kafka_rest', { url => $url, topic => $TOPIC, api_version => 'v3',
	cluster_id => 'lkc-abc123', max_attempts => 3, max_backoff_ms => 50 });
create_track_sync($node, 's3', 'orders', 'k3', mapping => $MAPPING);
($run, $status, $r) = run_sync($node, 's3');
is($status, 'succeeded', 'v3: the run succeeded');
$reqs = $v->requests(vendor => 'kafka');
@bad = grep {
	     $_->{method} ne 'POST'
	  || $_->{path} ne "/v3/clusters/lkc-abc123/topics/$TOPIC/records"
	  || ($_->{headers}{'content-type'} // '') !~ m{^application/json}
	  || exists $_->{headers}{authorization}
} @$reqs;
ok(@$reqs && !@bad, 'v3: POST /v3/clusters/{id}/topics/{topic}/records, application/json, no auth')
  or diag(json_encode({ path => $bad[0]{path}, headers => $bad[0]{headers} }));
%sent = ();
$shape_ok = 1;
for my $q (@$reqs)
{
	for my $line (split /\n/, $q->{body})
	{
		my $rec = eval { json_decode($line) };
		$shape_ok = 0 unless ref $rec eq 'HASH'
		  && (dig($rec, qw(key type)) // '') eq 'JSON'
		  && (dig($rec, qw(value type)) // '') eq 'JSON';
		$sent{ dig($rec, qw(key data)) // '' }++;
	}
}
ok($shape_ok, 'v3: one JSON record per line, {"key": {"type": "JSON", "data"}, "value": {...}}');
check_delivery('v3', $run, sub { dig($_[0], qw(key data)) }, sub { dig($_[0], qw(value data)) });
is(join(',', map { $sent{"user-$_"} } @RETRY), '2,2', 'v3: records with error_code 50003 (retriable) were sent again');
is($sent{"user-$REJECT"}, 1,
	'v3: the record with error_code 40002 (bad request, not retriable) is not sent again');
$fe = failed_rows($node, 's3');
is(join(',', map { $_->{primary_key} } @$fe), $REJECT, 'v3: it is in retl.failed_events');
like($fe->[0]{error} // '', qr/^Kafka REST error 40002: This record is rejected/,
	'v3: with the delivery report\'s error, not as a throttled record');
is($r->{events_failed}, 1, 'v3: events_failed = 1');

is(sql($node, "SELECT retl._redact(config)->>'password' FROM retl.destinations WHERE name = 'k2'"),
	'***', 'retl._redact hides the password');
secret_nowhere($node, $PASSWORD, 'the proxy password appears in no run error or failed event');

stop_ok($node);
done_testing();
