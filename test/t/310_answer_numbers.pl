# Numbers in vendor answers that are not what they should be -- an index
# of 1e20, -1 or 1.5, a Kafka error_code of 1e20 -- never abort the
# handling of the answer (1e20 used to raise "bigint out of range" after
# the batch had left the in-flight list, failing the run) and are never
# read as "delivered": the outcome is unknown, so the batch is sent again,
# and the vendor's next, well-formed answer decides.  Measured at
# test/vendors.py.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $node = retl_node('numbers');
my $v = start_vendors();
my $url = $v->url;
create_orders($node, 'orders', 20);
my $REJECT = 5;

# One sync of $kind whose first answer rejecting user-5 carries $bad where
# the index (or error code) belongs: the run succeeds, user-5 is the one
# failed event, the others are delivered, and the batch went twice.
sub bad_number_case
{
	my ($name, $kind, $dest_cfg, $bad, $vendor) = @_;
	$v->reset;
	$v->config({ reject_users => ["user-$REJECT"], bad_number => $bad + 0 });
	create_dest($node, $name, $kind, { url => $url, max_backoff_ms => 50, %$dest_cfg });
	create_track_sync($node, $name, 'orders', $name);
	my ($run, $status, $r) = run_sync($node, $name);
	is($status, 'succeeded', "$name: the run succeeded (the answer's $bad did not abort it)");
	my $reqs = $v->requests(vendor => $vendor);
	ok(@$reqs == 2 && ($reqs->[0]{response} // '') =~ /\Q$bad\E/
		  && $reqs->[1]{body} eq $reqs->[0]{body},
		"$name: the batch whose answer said $bad was sent again, whole")
	  or diag(join(' | ', map { "$_->{status} " . substr($_->{response} // '', 0, 300) } @$reqs));
	is(join(',', map { $_->{primary_key} } @{ failed_rows($node, $name) }), $REJECT,
		"$name: the record the well-formed answer rejects is the one failed event");
	check_ids([ map { order_id_of($_->{user}) } @{ $v->records(vendor => $vendor) } ],
		[ grep { $_ != $REJECT } 1 .. 20 ], "$name: every other record was delivered",
		exact => 0);
	is("$r->{events_sent}/$r->{events_succeeded}/$r->{events_failed}", '20/19/1',
		"$name: 20 sent, 19 succeeded, 1 failed");
	return;
}

bad_number_case('braze_big', 'braze', { api_key => 'k' }, '1e+20', 'braze');
bad_number_case('braze_negative', 'braze', { api_key => 'k' }, '-1', 'braze');
bad_number_case('braze_fraction', 'braze', { api_key => 'k' }, '1.5', 'braze');
bad_number_case('mixpanel_big', 'mixpanel',
	{ project_token => 't', api_secret => 's', batch_size => 20 }, '1e+20', 'mixpanel');
bad_number_case('mixpanel_negative', 'mixpanel',
	{ project_token => 't', api_secret => 's', batch_size => 20 }, '-3', 'mixpanel');
bad_number_case('kafka_big', 'kafka_rest', { topic => 't' }, '1e+20', 'kafka');
bad_number_case('kafka_fraction', 'kafka_rest', { topic => 't' }, '1.5', 'kafka');

# The worker kept serving: a plain run after all of them goes through.
$v->reset;
create_dest($node, 'after', 'braze', { url => $url, api_key => 'k' });
create_track_sync($node, 'after', 'orders', 'after');
my ($run, $status) = run_sync($node, 'after');
is($status, 'succeeded', 'a run after the bad answers succeeds');
check_ids([ map { order_id_of($_->{user}) } @{ $v->records(vendor => 'braze') } ], [ 1 .. 20 ],
	'and delivers every record once');

stop_ok($node);
done_testing();
