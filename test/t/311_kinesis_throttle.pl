# Kinesis refuses a throttled PutRecords call whole: HTTP 400 with an AWS
# JSON error, {"__type": "ProvisionedThroughputExceededException"} (or
# KMSThrottlingException, LimitExceededException), and InternalFailure as
# a 500.  Such a call is sent again whole, with the same body, after at
# least a second -- never split into single records and failed as if they
# were bad.  Throttling that outlasts max_attempts fails the records with
# the reason.  And a partition key over 256 bytes is cut at a character
# boundary, never inside a multibyte character.  Against test/vendors.py.
use strict;
use warnings;
use Encode qw(encode_utf8);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $node = retl_node('kinthrottle');
my $v = start_vendors();
my $url = $v->url;
create_orders($node, 'orders', 10);
my %KINESIS = (region => 'us-east-1', stream => 'events', access_key_id => 'AKIDTEST',
	secret_access_key => 'kinesis-secret', endpoint => "$url/", max_backoff_ms => 50);
my @ERRORS = qw(ProvisionedThroughputExceededException KMSThrottlingException
  LimitExceededException InternalFailure);

# ----- throttled calls are sent again whole, after a second -------------------
$v->config({ kinesis_call_errors => \@ERRORS });
create_dest($node, 'kin', 'kinesis', \%KINESIS);
create_track_sync($node, 'kin', 'orders', 'kin');
my ($run, $status, $r) = run_sync($node, 'kin');
is($status, 'succeeded', 'the run succeeded despite four refused calls');
my @reqs = sort { $a->{seq} <=> $b->{seq} } @{ $v->requests(vendor => 'kinesis') };
is(join(',', map { $_->{status} } @reqs), '400,400,400,500,200',
	'three calls refused 400 (throttled), one 500 (InternalFailure), then taken');
is(scalar(grep { $_->{body} eq $reqs[0]{body} } @reqs), 5,
	'each time the same call was sent again whole, not split');
my @gaps = map { $reqs[ $_ + 1 ]{time} - $reqs[$_]{time} } 0 .. 2;
ok(!grep({ $_ < 0.9 } @gaps), 'after each throttled call retl waited at least a second')
  or diag('gaps: ' . join(', ', map { sprintf('%.3f', $_) } @gaps));
check_ids([ map { order_id_of($_->{user}) } @{ $v->records(vendor => 'kinesis') } ], [ 1 .. 10 ],
	'every record was put exactly once');
is(scalar @{ failed_rows($node, 'kin') }, 0, 'no record went to retl.failed_events');
is("$r->{events_succeeded}/$r->{events_failed}", '10/0', '10 succeeded, none failed');

# ----- throttling that outlasts max_attempts -----------------------------------
$v->reset;
$v->config({ kinesis_call_errors => [ ('ProvisionedThroughputExceededException') x 2 ] });
create_dest($node, 'kin2', 'kinesis', { %KINESIS, max_attempts => 2 });
create_track_sync($node, 'kin2', 'orders', 'kin2');
($run, $status, $r) = run_sync($node, 'kin2');
is(scalar @{ $v->requests(vendor => 'kinesis') }, 2, 'max_attempts 2: the call was made twice');
my $fe = failed_rows($node, 'kin2');
is(scalar(grep { ($_->{error} // '') =~ /still throttled after 2 attempts: Kinesis: ProvisionedThroughputExceededException/ } @$fe),
	10, 'then its 10 records are in retl.failed_events, with the reason')
  or diag(json_encode([ map { $_->{error} } @$fe ]));

# ----- a multibyte partition key is cut at a character boundary ---------------
# 'x' and 200 two-byte characters: byte 256 is the first byte of the 128th
sql($node, q{CREATE TABLE accents (id bigint PRIMARY KEY, user_id text NOT NULL);
INSERT INTO accents VALUES (1, 'x' || repeat('é', 200)), (2, 'short-é');});
$v->reset;
create_dest($node, 'kin3', 'kinesis', \%KINESIS);
create_track_sync($node, 'kin3', 'accents', 'kin3',
	mapping => { userId => 'user_id', event => { value => 'Order Completed' } });
($run, $status) = run_sync($node, 'kin3');
is($status, 'succeeded', 'the run with multibyte partition keys succeeded');
my %keys = map { (dig($_, qw(record PartitionKey)) // '') => 1 } @{ $v->records(vendor => 'kinesis') };
my $cut = 'x' . ("\x{e9}" x 127);
ok($keys{$cut}, 'a key of 401 bytes arrives as its first 255 bytes: 127 whole characters')
  or diag('keys: ' . join(', ', map { length(encode_utf8($_)) . ' bytes' } keys %keys));
ok($keys{"short-\x{e9}"}, 'a short key arrives whole');
is(scalar @{ failed_rows($node, 'kin3') }, 0, 'no record went to retl.failed_events');

stop_ok($node);
done_testing();
