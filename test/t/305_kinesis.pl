# Destination kind kinesis: PutRecords against kinesalite (a real Kinesis
# API implementation, npm, pinned in test/package.json), every row read
# back with GetShardIterator + GetRecords exactly once; and one destination
# pointed at test/vendors.py to check the request itself: the AWS SigV4
# Authorization header (recomputed here with the secret), X-Amz-Target,
# the body, at most 500 records per request, and per-record
# ProvisionedThroughputExceededException retried record by record.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $N = 1200;
my ($KEY_ID, $SECRET, $REGION) = ('AKIDRETLTEST0001', 'kinesis-secret-access-key-8d2f', 'eu-west-1');

my $node = retl_node('kinesis');
my $v = start_vendors();
create_orders($node, 'orders', $N);
my $url = $v->url;

# ----- create-time validation ------------------------------------------------
my %ok = (region => $REGION, stream => 'events', access_key_id => 'a', secret_access_key => 's');
for my $missing (qw(region stream access_key_id secret_access_key))
{
	my %c = %ok;
	delete $c{$missing};
	my $cfg = json_encode(\%c);
	sql_fails($node, qq{SELECT retl_create_destination('x', 'kinesis', '$cfg')},
		'22023', qr/needs "$missing"/, "a kinesis destination without $missing is refused");
}
my $cfg = json_encode({ %ok, endpoint => 'kinesis.local:4567' });
sql_fails($node, qq{SELECT retl_create_destination('x', 'kinesis', '$cfg')},
	'22023', qr/http or https/, 'a non-http endpoint is refused');
$cfg = json_encode({ %ok, region => 'eu west 1' });
sql_fails($node, qq{SELECT retl_create_destination('x', 'kinesis', '$cfg')},
	'22023', qr/invalid AWS region/, 'a malformed region is refused');
$cfg = json_encode({ %ok, batch_size => 501 });
sql_fails($node, qq{SELECT retl_create_destination('x', 'kinesis', '$cfg')},
	'22023', qr/between 1 and 500/, 'batch_size above PutRecords\' 500 records is refused');

my $MAPPING = {
	userId => 'user_id',
	event => { value => 'Order Completed' },
	'properties.amount' => 'amount',
};

# ----- kinesalite ----------------------------------------------------------------
SKIP:
{
	my $k = start_kinesalite();
	skip 'kinesalite is not installed', 1 unless $k;
	$k->create_stream('events', 2);
	create_dest($node, 'kin', 'kinesis', { region => 'us-east-1', stream => 'events',
		access_key_id => $KEY_ID, secret_access_key => $SECRET, endpoint => $k->url });
	create_track_sync($node, 's', 'orders', 'kin', mapping => $MAPPING);
	my ($run, $status, $r) = run_sync($node, 's');
	is($status, 'succeeded', 'the run to kinesalite succeeded');
	is($r->{events_succeeded}, $N, "events_succeeded = $N");

	my $got = $k->read_stream('events');
	is(scalar @$got, $N, "kinesalite holds $N records");
	my (@events, @why, %mids, %shards);
	for my $rec (@$got)
	{
		my $e = eval { json_decode($rec->{Data}) };
		unless (ref $e eq 'HASH')
		{
			push @why, "record $rec->{SequenceNumber}: data is not JSON";
			next;
		}
		push @events, $e;
		$mids{ $e->{messageId} // '' }++;
		$shards{ $rec->{ShardId} }++;
		push @why, "record of $e->{userId}: PartitionKey $rec->{PartitionKey}"
		  unless ($rec->{PartitionKey} // '') eq ($e->{userId} // '-');
		push @why, "record of $e->{userId}: not the retl event"
		  unless ($e->{type} // '') eq 'track' && ($e->{event} // '') eq 'Order Completed'
		  && ($e->{messageId} // '') =~ /^[0-9a-f-]{36}$/
		  && (dig($e, qw(context sources job_run_id)) // '') eq $run;
	}
	check_ids(event_ids(\@events), [ 1 .. $N ],
		'every row is in the stream exactly once (GetShardIterator + GetRecords)');
	ok(!@why, 'each record\'s data is the whole retl event and its PartitionKey the userId')
	  or diag(join("\n", @why[ 0 .. ($#why < 4 ? $#why : 4) ]));
	is(scalar(keys %mids), $N, 'each record carries its own messageId');
	is(scalar(keys %shards), 2, 'partition keys spread the records over both shards');
	secret_nowhere($node, $SECRET, 'the secret access key appears in no run error or failed event');
}

# ----- the request, captured by vendors.py --------------------------------------
my @RETRY = (3, 510);
my $REJECT = 9;
$v->config({ retry_users => [ map { "user-$_" } @RETRY ], reject_users => ["user-$REJECT"] });
sql($node, q{CREATE TABLE few AS SELECT * FROM orders WHERE id <= 520;
ALTER TABLE few ADD PRIMARY KEY (id);});
create_dest($node, 'cap', 'kinesis', { region => $REGION, stream => 'events',
	access_key_id => $KEY_ID, secret_access_key => $SECRET, endpoint => "$url/",
	max_attempts => 3, max_backoff_ms => 50 });
create_track_sync($node, 'cap', 'few', 'cap', mapping => $MAPPING);
my ($run, $status, $r) = run_sync($node, 'cap');
is($status, 'succeeded', 'the run to the emulator succeeded');
my $reqs = $v->requests(vendor => 'kinesis');
ok(scalar @$reqs >= 2, 'the emulator got the PutRecords requests');

my $q = $reqs->[0];
is($q->{method} . ' ' . $q->{path}, 'POST /', 'PutRecords is POST /');
is($q->{headers}{'x-amz-target'}, 'Kinesis_20131202.PutRecords', 'X-Amz-Target is Kinesis_20131202.PutRecords');
like($q->{headers}{'content-type'} // '', qr{^application/x-amz-json-1\.1$}, 'Content-Type is application/x-amz-json-1.1');
like($q->{headers}{authorization} // '',
	qr{^AWS4-HMAC-SHA256 Credential=\Q$KEY_ID\E/\d{8}/\Q$REGION\E/kinesis/aws4_request, ?SignedHeaders=[a-z0-9;-]*host[a-z0-9;-]*, ?Signature=[0-9a-f]{64}$},
	'Authorization is a SigV4 header: credential scope <key>/<date>/<region>/kinesis/aws4_request');
like($q->{headers}{authorization} // '', qr{SignedHeaders=[a-z0-9;-]*x-amz-date}, 'SignedHeaders include x-amz-date');
my @bad;
for my $req (@$reqs)
{
	my @why = sigv4_check($req, key_id => $KEY_ID, secret => $SECRET,
		region => $REGION, service => 'kinesis');
	push @bad, "request $req->{seq}: @why" if @why;
}
ok(!@bad, 'every request carries the right SigV4 signature (recomputed with the secret)')
  or diag(join("\n", @bad[ 0 .. ($#bad < 2 ? $#bad : 2) ]));
ok(!grep({ index(json_encode($_), $SECRET) >= 0 } @$reqs), 'the secret itself is never sent');

my (@sizes, $shape_ok, %sent);
$shape_ok = 1;
for my $req (@$reqs)
{
	my $doc = json_decode($req->{body});
	$shape_ok = 0 unless ($doc->{StreamName} // '') eq 'events'
	  && join(',', sort keys %$doc) eq 'Records,StreamName';
	push @sizes, scalar @{ $doc->{Records} // [] };
	for my $rec (@{ $doc->{Records} // [] })
	{
		$shape_ok = 0 unless join(',', sort keys %$rec) eq 'Data,PartitionKey';
		$sent{ $rec->{PartitionKey} }++;
	}
}
ok($shape_ok, 'bodies are {"StreamName", "Records": [{"Data", "PartitionKey"}]}');
is(max_of(@sizes), 500, 'at most 500 records per request (and batches fill up)') or diag("sizes: @sizes");

my $recs = $v->records(vendor => 'kinesis');
check_ids([ map { order_id_of($_->{user}) } @$recs ], [ grep { $_ != $REJECT } 1 .. 520 ],
	'every row was accepted exactly once (throttled records resent until taken)');
is(join(',', map { $sent{"user-$_"} } @RETRY), '2,2',
	'a record refused once with ProvisionedThroughputExceededException is sent again, alone');
my @again = sort { $a->{seq} <=> $b->{seq} } grep { $_->{body} =~ /"PartitionKey":"user-3"/ } @$reqs;
ok(@again == 2 && scalar(@{ json_decode($again[1]{body})->{Records} }) <= 2,
	'only the throttled records are sent again, not their batch');
is($sent{"user-$REJECT"}, 3, 'a record throttled every time is sent max_attempts (3) times');
my $fe = failed_rows($node, 'cap');
is(join(',', map { $_->{primary_key} } @$fe), $REJECT, 'then it goes to retl.failed_events');
like($fe->[0]{error} // '', qr/still throttled after 3 attempts: Kinesis: ProvisionedThroughputExceededException/,
	'with the reason');
is($r->{events_succeeded}, 519, 'events_succeeded = 519');
is($r->{events_failed}, 1, 'events_failed = 1');
is($r->{events_sent}, 520, 'events_sent = 520 (succeeded + failed)');

is(sql($node, "SELECT retl._redact(config)->>'secret_access_key' FROM retl.destinations WHERE name = 'cap'"),
	'***', 'retl._redact hides secret_access_key');
secret_nowhere($node, $SECRET, 'the secret access key appears in no run error or failed event');

stop_ok($node);
done_testing();
