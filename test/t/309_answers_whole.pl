# Answers whose per-event outcomes retl reads are read whole, or the batch
# is sent again: an unknown outcome is never counted as delivered.
#   - Kinesis: a full batch of 500 records all throttled, an answer of over
#     80 KB (over the 64 KB retl used to keep), is resent until taken;
#   - Iterable: a list of failed users of over 64 KB fails exactly them;
#   - Kafka REST v3: a rejection at index 450 of a 500-record batch (the
#     delivery reports are over 100 KB) fails exactly that record;
#   - answers the emulator cuts short (Braze, Kinesis) or that omit the
#     last record (Kafka v2) are retried, not taken as success; so is an
#     answer longer than the kind's max_answer_bytes (Braze, 200 KB).
# Each is measured at test/vendors.py: what it accepted, what it answered.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $node = retl_node('answers');
my $v = start_vendors();
my $url = $v->url;
create_orders($node, 'orders', 500);
sql($node, q{CREATE TABLE few AS SELECT * FROM orders WHERE id <= 20;
ALTER TABLE few ADD PRIMARY KEY (id);});

my %KINESIS = (region => 'us-east-1', stream => 'events', access_key_id => 'AKIDTEST',
	secret_access_key => 'kinesis-secret', endpoint => "$url/", max_backoff_ms => 50);

# Resets the emulator with $cfg, creates destination and sync $name of
# $kind on $table, runs it; returns the run row, and checks it succeeded.
sub run_case
{
	my ($name, $kind, $dest_cfg, $cfg, $table, %sync) = @_;
	$v->reset;
	$v->config($cfg);
	create_dest($node, $name, $kind, $dest_cfg);
	create_track_sync($node, $name, $table, $name, %sync);
	my ($run, $status, $r) = run_sync($node, $name);
	is($status, 'succeeded', "$name: the run succeeded");
	return $r;
}

# The order ids of the records a vendor accepted.
sub accepted_ids
{
	my ($vendor) = @_;
	return [ map { order_id_of($_->{user}) } @{ $v->records(vendor => $vendor) } ];
}

# The primary keys in retl.failed_events of a sync, as "1,2,3".
sub failed_keys
{
	my ($sync) = @_;
	return join(',', sort { $a <=> $b } map { $_->{primary_key} } @{ failed_rows($node, $sync) });
}

# ----- Kinesis: 500 records, all throttled: an answer over 80 KB ------------
my $r = run_case('kin500', 'kinesis', \%KINESIS, { kinesis_throttle_all => 1 }, 'orders');
my $reqs = $v->requests(vendor => 'kinesis');
my $first = json_decode($reqs->[0]{response} // '{}');
ok(length($reqs->[0]{response} // '') > 80_000
	  && ($first->{FailedRecordCount} // 0) == 500,
	'kin500: the first answer throttles all 500 records in over 80 KB')
  or diag('answer of ' . length($reqs->[0]{response} // '') . ' bytes');
check_ids(accepted_ids('kinesis'), [ 1 .. 500 ],
	'kin500: every throttled record was sent again and taken, once');
is(scalar(@$reqs), 2, 'kin500: the 500 records went again in one request');
is("$r->{events_succeeded}/$r->{events_failed}", '500/0', 'kin500: 500 succeeded, none failed');

# ----- Iterable: a failed-user list over 64 KB -------------------------------
sql($node, q{CREATE TABLE longids (id bigint PRIMARY KEY, user_id text NOT NULL);
INSERT INTO longids SELECT g, repeat('u', 200) || '-' || g FROM generate_series(1, 500) g;});
my @even = grep { $_ % 2 == 0 } 1 .. 500;
$r = run_case('itlong', 'iterable', { url => $url, api_key => 'k', batch_size => 500,
		max_backoff_ms => 50 },
	{ reject_users => [ map { 'u' x 200 . "-$_" } @even ] }, 'longids',
	mapping => { userId => 'user_id', event => { value => 'Order Completed' } });
$reqs = $v->requests(vendor => 'iterable');
ok(@$reqs == 1 && length($reqs->[0]{response} // '') > 65_536,
	'itlong: one request, answered with lists of failed users over 64 KB')
  or diag(scalar(@$reqs) . ' requests, first answer ' . length($reqs->[0]{response} // '') . ' bytes');
is(failed_keys('itlong'), join(',', @even),
	'itlong: exactly the listed users\' events are in retl.failed_events');
is("$r->{events_succeeded}/$r->{events_failed}", '250/250', 'itlong: 250 succeeded, 250 failed');

# ----- Kafka v3: a rejection at index 450 of 500 -----------------------------
$r = run_case('kafka450', 'kafka_rest', { url => $url, topic => 't', api_version => 'v3',
		cluster_id => 'c1', max_backoff_ms => 50 },
	{ reject_users => ['user-451'] }, 'orders');
$reqs = $v->requests(vendor => 'kafka');
my @lines = split /\n/, ($reqs->[0]{response} // '');
ok(@$reqs == 1 && @lines == 500 && length($reqs->[0]{response}) > 100_000
	  && ($lines[450] // '') =~ /"error_code": 40002/,
	'kafka450: 500 delivery reports over 100 KB, the one at index 450 a rejection');
is(failed_keys('kafka450'), '451', 'kafka450: the record at index 450 is in retl.failed_events');
check_ids(accepted_ids('kafka'), [ grep { $_ != 451 } 1 .. 500 ],
	'kafka450: the others were produced once');
is("$r->{events_succeeded}/$r->{events_failed}", '499/1', 'kafka450: 499 succeeded, 1 failed');

# ----- Braze: an answer cut short ------------------------------------------------
$r = run_case('brazecut', 'braze', { url => $url, api_key => 'k', max_backoff_ms => 50 },
	{ truncate_answers => 1, reject_users => ['user-8'] }, 'few');
$reqs = $v->requests(vendor => 'braze');
ok(@$reqs == 2 && !eval { json_decode($reqs->[0]{response}); 1 }
	  && $reqs->[1]{body} eq $reqs->[0]{body},
	'brazecut: the batch whose answer was cut short was sent again, whole')
  or diag(join(' | ', map { "$_->{status} $_->{response}" } @$reqs));
is(failed_keys('brazecut'), '8', 'brazecut: the object the full answer rejects is failed');
is("$r->{events_succeeded}/$r->{events_failed}", '19/1', 'brazecut: 19 succeeded, 1 failed');

# ----- Kinesis: an answer cut short, with a throttled record in it -----------
$r = run_case('kincut', 'kinesis', \%KINESIS,
	{ truncate_answers => 1, retry_users => ['user-7'] }, 'few');
$reqs = $v->requests(vendor => 'kinesis');
ok(@$reqs == 2 && $reqs->[1]{body} eq $reqs->[0]{body},
	'kincut: the batch whose answer was cut short was sent again, whole');
check_ids(accepted_ids('kinesis'), [ 1 .. 20 ],
	'kincut: the record throttled in the cut answer was taken the second time', exact => 0);
is("$r->{events_succeeded}/$r->{events_failed}", '20/0', 'kincut: 20 succeeded');

# ----- Kafka v2: an answer without the last record's offset ------------------
$r = run_case('kafkaomit', 'kafka_rest', { url => $url, topic => 't', max_backoff_ms => 50 },
	{ omit_last_report => 1, retry_users => ['user-20'] }, 'few');
$reqs = $v->requests(vendor => 'kafka');
ok(@$reqs == 2 && @{ json_decode($reqs->[0]{response})->{offsets} } == 19
	  && $reqs->[1]{body} eq $reqs->[0]{body},
	'kafkaomit: a batch whose answer lists 19 offsets for 20 records was sent again, whole');
check_ids(accepted_ids('kafka'), [ 1 .. 20 ],
	'kafkaomit: the record the answer left out was produced the second time', exact => 0);
is("$r->{events_succeeded}/$r->{events_failed}", '20/0', 'kafkaomit: 20 succeeded');

# ----- Braze: an answer longer than retl reads from Braze -------------------
$r = run_case('brazebig', 'braze', { url => $url, api_key => 'k', max_backoff_ms => 50 },
	{ pad_answers => 1, reject_users => ['user-8'] }, 'few');
$reqs = $v->requests(vendor => 'braze');
ok(@$reqs == 2 && length($reqs->[0]{response}) > 200_000 && $reqs->[1]{body} eq $reqs->[0]{body},
	'brazebig: the batch whose answer was over 200 KB was sent again, whole');
is(failed_keys('brazebig'), '8', 'brazebig: the object the readable answer rejects is failed');
$v->reset;
$v->config({ pad_answers => 1 });
create_dest($node, 'brazebig1', 'braze', { url => $url, api_key => 'k', max_attempts => 1 });
create_track_sync($node, 'brazebig1', 'few', 'brazebig1');
my ($run, $status, $r1) = run_sync($node, 'brazebig1');
is($status, 'failed', 'brazebig1: with max_attempts 1, an answer too long to read fails the run');
like($r1->{error} // '', qr/the answer \(HTTP 201\) is longer than the \d+ bytes retl reads from a braze destination, so the outcome of its events is unknown/,
	'brazebig1: the run error says why');

stop_ok($node);
done_testing();
