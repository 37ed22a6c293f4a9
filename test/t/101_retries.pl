# Retries: 5xx answers are retried until every row is delivered; a 429
# with Retry-After (seconds, then HTTP-date) delays the retry of that batch
# by at least that long while the other batches keep flowing; max_attempts
# bounds the attempts of a batch and, when exhausted, fails the run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use RetlTest;
use RetlFaults;

my $node = retl_node('retries');
my $recv = start_receiver();

# ---------------------------------------------------------------------
# A. 503 on the first 20 requests: every row arrives, the run succeeds.
# ---------------------------------------------------------------------
my $NA = 500;
create_orders($node, 'orders', $NA);
# max_attempts above 20: no batch can exhaust its attempts on 20 failures,
# however they are spread; a small max_backoff_ms keeps the test short.
create_webhook($node, 'da', $recv->url('/a'),
	batch_size => 10, max_in_flight => 4,
	max_attempts => 25, max_backoff_ms => 100);
create_track_sync($node, 'sa', 'orders', 'da');

$recv->config({ fail_first => 20, fail_status => 503 });
my $runA = sql($node, "SELECT retl_sync_now('sa')");
is(wait_run($node, $runA), 'succeeded', 'A: the run succeeded despite 20 answers 503');

my $stA = $recv->stats;
is($stA->{answered}{503}, 20, 'A: the receiver answered 503 to 20 requests');
check_ids(event_ids($recv->events(run_id => $runA)), [ 1 .. $NA ],
	'A: every row arrived exactly once (2xx answers)');
my $rA = run_row($node, $runA);
is($rA->{events_sent}, $NA, "A: events_sent = $NA (a retry is not a new event)");
is($rA->{events_succeeded}, $NA, "A: events_succeeded = $NA");
is($rA->{events_failed}, 0, 'A: events_failed = 0');
ok(!defined $rA->{error}, 'A: no error') or diag("error: $rA->{error}");
is(scalar @{ failed_events($node, 'sa') }, 0, 'A: retl.failed_events is empty');

# Each batch answered 503 was re-sent, with the same body, and delivered.
{
	my $reqs = $recv->requests;
	my @failed = grep { ($_->{status} // '') eq '503' } @$reqs;
	my @not_retried;
	for my $f (@failed)
	{
		my @later = grep {
			$_->{seq} > $f->{seq} && ($_->{status} // '') eq '200'
		} @{ requests_with_body($reqs, $f->{body}) };
		push @not_retried, $f->{seq} unless @later;
	}
	ok(@failed == 20 && !@not_retried,
		'A: every request answered 503 was retried with the same body and then answered 200')
	  or diag('requests never retried successfully: ' . join(', ', @not_retried));
}

# ---------------------------------------------------------------------
# B. 429 with "Retry-After: 2".  max_backoff_ms is 100, so a retry 2 s or
#    more after the 429 can only come from honouring Retry-After.
# ---------------------------------------------------------------------
my $NB = 200;
create_orders($node, 'orders_b', $NB);
create_webhook($node, 'db', $recv->url('/b'),
	batch_size => 10, max_in_flight => 2,
	max_attempts => 5, max_backoff_ms => 100);
create_track_sync($node, 'sb', 'orders_b', 'db');

# Checks the retry of the (single) request answered 429: returns the first
# request, its retry, and the requests answered 2xx in between.
sub check_429_retry
{
	my ($label) = @_;
	my $reqs = $recv->requests;
	my @r429 = grep { ($_->{status} // '') eq '429' } @$reqs;
	is(scalar @r429, 1, "$label: exactly one request was answered 429")
	  or return;
	my $first = $r429[0];
	my @same = grep { $_->{seq} > $first->{seq} }
	  @{ requests_with_body($reqs, $first->{body}) };
	ok(scalar @same, "$label: the batch answered 429 was sent again, with the same body")
	  or return;
	my $retry = $same[0];
	is($retry->{status}, 200, "$label: the retry was answered 200");
	my @between = grep {
		     $_->{seq} > $first->{seq}
		  && $_->{seq} < $retry->{seq}
		  && ($_->{status} // '') =~ /^2/
	} @$reqs;
	return ($first, $retry, \@between);
}

$recv->reset;
$recv->config({ fail_first => 1, fail_status => 429, retry_after => '2' });
my $runB = sql($node, "SELECT retl_sync_now('sb')");
is(wait_run($node, $runB), 'succeeded', 'B: the run succeeded after a 429');
check_ids(event_ids($recv->events(run_id => $runB)), [ 1 .. $NB ],
	'B: every row arrived exactly once');
{
	my ($first, $retry, $between) = check_429_retry('B');
	if ($retry)
	{
		my $gap = $retry->{time} - $first->{time};
		cmp_ok($gap, '>=', 2.0,
			'B: the retry arrived at least 2 s (Retry-After: 2) after the 429 request');
		note(sprintf('B: retry %.3f s after the 429', $gap));
		cmp_ok(scalar @$between, '>=', 1,
			'B: while the batch waited, other batches of the run were delivered');
		note('B: ' . scalar(@$between) . ' requests answered 2xx during the wait');
	}
}
my $rB = run_row($node, $runB);
is($rB->{events_succeeded} + $rB->{events_failed}, $rB->{events_sent},
	'B: events_succeeded + events_failed = events_sent');
is($rB->{events_succeeded}, $NB, "B: events_succeeded = $NB");

# ---------------------------------------------------------------------
# C. 429 with Retry-After as an HTTP-date: the retry does not come before
#    that date.
# ---------------------------------------------------------------------
sql($node, "UPDATE orders_b SET version = 2");
$recv->reset;
my $date = int(Time::HiRes::time()) + 4;
$recv->config({ fail_first => 1, fail_status => 429,
	retry_after => http_date($date) });
my $runC = sql($node, "SELECT retl_sync_now('sb')");
is(wait_run($node, $runC), 'succeeded', 'C: the run succeeded after a 429');
is(run_row($node, $runC)->{kind}, 'incremental', 'C: the run is incremental');
check_ids(event_ids($recv->events(run_id => $runC)), [ 1 .. $NB ],
	'C: every updated row arrived exactly once');
{
	my ($first, $retry, $between) = check_429_retry('C');
	if ($retry)
	{
		cmp_ok($retry->{time}, '>=', $date,
			'C: the retry arrived no earlier than the Retry-After HTTP-date');
		note(sprintf('C: 429 at %.3f, date %d, retry at %.3f',
				$first->{time}, $date, $retry->{time}));
		note('C: ' . scalar(@$between) . ' requests answered 2xx during the wait');
	}
}

# ---------------------------------------------------------------------
# D. max_attempts: a destination that always answers 503 gets each batch
#    at most max_attempts times; the first batch whose attempts run out
#    fails the run, with a readable error, and the run stops at once:
#    only the events of the batches that ran out of attempts are recorded
#    as failed, the others are left to the next run.
# ---------------------------------------------------------------------
my $ND = 40;
create_orders($node, 'orders_d', $ND);
create_webhook($node, 'dd', $recv->url('/d'),
	batch_size => 10, max_in_flight => 2,
	max_attempts => 3, max_backoff_ms => 50);
create_track_sync($node, 'sd', 'orders_d', 'dd');

$recv->reset;
$recv->config({ status => 503 });
my $runD = sql($node, "SELECT retl_sync_now('sd')");
is(wait_run($node, $runD), 'failed', 'D: the run failed once attempts were exhausted');
my $rD = run_row($node, $runD);
like($rD->{error} // '', qr/503/, 'D: the error names the status 503');
like($rD->{error} // '', qr/3 attempt/, 'D: the error says how many attempts were made');
is($rD->{events_succeeded} + $rD->{events_failed}, $rD->{events_sent},
	'D: events_succeeded + events_failed = events_sent');
cmp_ok($rD->{events_failed}, '<', $ND, "D: events_failed ($rD->{events_failed}) < $ND: the run stopped");
my $feD = failed_events($node, 'sd');
is(scalar @$feD, $rD->{events_failed}, 'D: retl.failed_events holds the failed events');
{
	my $reqs = $recv->requests;
	my $per_body = count_by($reqs, sub { $_[0]{body} });
	my @wrong = grep { $per_body->{$_} > 3 } keys %$per_body;
	ok(@$reqs && !@wrong, 'D: no batch was attempted more than max_attempts (3) times')
	  or diag('attempts per batch: ' . join(', ', map { $per_body->{$_} } keys %$per_body));
	is(scalar @{ $recv->events }, 0, 'D: nothing was answered 2xx');
}
ok(@$feD && !grep({ ($_->{http_status} // 0) != 503 || $_->{attempts} != 3 } @$feD),
	'D: the failed events record status 503 and 3 attempts')
  or diag(explain([ map { { pk => $_->{primary_key}, st => $_->{http_status}, att => $_->{attempts} } } @$feD ]));
$recv->config({ status => undef });

stop_ok($node);

done_testing();
