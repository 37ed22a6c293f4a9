# Whole-request throttling, answered as each vendor documents it (see
# THROTTLE_ANSWERS in test/vendors.py; Kinesis's is in 311): the request
# is refused whole with a 429, and retl sends the same request again,
# whole, after the wait the vendor documents -- at least 30 s for
# Amplitude, 2 s for Mixpanel, even with max_backoff_ms far lower -- until
# it is taken; every record is delivered exactly once and nothing fails.
# For the kinds without a documented wait it is retried with backoff.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $node = retl_node('throttle');
my $v = start_vendors();
my $url = $v->url;
my $N = 10;
create_orders($node, 'orders', $N);

# name, vendor, kind, config, throttled answers, documented wait (s)
my @CASES = (
	[ 'amp', 'amplitude', 'amplitude', { url => $url, api_key => 'amp-key' }, 1, 30 ],
	[ 'mp', 'mixpanel', 'mixpanel', { url => $url, project_token => 'tok',
		username => 'svc', secret => 'mp-secret', project_id => '7' }, 2, 2 ],
	[ 'it', 'iterable', 'iterable', { url => $url, api_key => 'it-key' }, 2, 0 ],
	[ 'k2', 'kafka', 'kafka_rest', { url => $url, topic => 'events' }, 2, 0 ],
	[ 'k3', 'kafka', 'kafka_rest', { url => $url, topic => 'events', api_version => 'v3',
		cluster_id => 'lkc-1' }, 2, 0 ],
	[ 'st', 'statsig', 'statsig', { url => $url, api_key => 'secret-st' }, 2, 0 ],
);

for my $case (@CASES)
{
	my ($name, $vendor, $kind, $cfg, $n429, $wait) = @$case;
	$v->reset;
	$v->config({ throttle_calls => { $vendor => $n429 } });
	create_dest($node, $name, $kind, { %$cfg, max_backoff_ms => 200 });
	create_track_sync($node, $name, 'orders', $name);
	my ($run, $status, $r) = run_sync($node, $name, 180);
	is($status, 'succeeded', "$name: the run succeeded after $n429 throttled call(s)");
	my @reqs = sort { $a->{seq} <=> $b->{seq} } @{ $v->requests(vendor => $vendor) };
	is(join(',', map { $_->{status} =~ /^2\d\d$/ ? '2xx' : $_->{status} } @reqs),
		join(',', (429) x $n429, '2xx'), "$name: $n429 call(s) answered 429, then one taken");
	is(scalar(grep { $_->{body} eq $reqs[0]{body} } @reqs), $n429 + 1,
		"$name: each time the same request was sent again whole");
	my @gaps = map { $reqs[ $_ + 1 ]{time} - $reqs[$_]{time} } 0 .. $n429 - 1;
	if ($wait > 0)
	{
		ok(!grep({ $_ < $wait - 0.1 } @gaps),
			"$name: retl waited at least the documented $wait s, despite max_backoff_ms 200")
		  or diag('gaps: ' . join(', ', map { sprintf('%.3f', $_) } @gaps));
	}
	else
	{
		ok(!grep({ $_ > 20 } @gaps), "$name: retried with backoff (no documented wait)")
		  or diag('gaps: ' . join(', ', map { sprintf('%.3f', $_) } @gaps));
	}
	check_ids([ map { order_id_of($_->{user}) } @{ $v->records(vendor => $vendor) } ],
		[ 1 .. $N ], "$name: every record was taken exactly once");
	is("$r->{events_succeeded}/$r->{events_failed}", "$N/0",
		"$name: $N succeeded, none failed");
	is(scalar @{ failed_rows($node, $name) }, 0, "$name: no failed events");
}

stop_ok($node);
done_testing();
