# A destination that is down for the whole run: the run ends 'failed' with
# a readable error as soon as a batch has run out of attempts, and stops
# reading at once.  retl.failed_events holds only the events that were in
# flight (each sent max_attempts times), at most 2 x max_in_flight x
# batch_size; the events not sent are left to the next run, which resumes
# from the checkpoint.  Once the receiver is back, that run (full, as the
# failed one) delivers every row, and retl.failed_events is empty.  A 401
# is not retried: the run fails at once with an error that names the
# status, and only the batches sent are recorded.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlFaults;

# Large enough that the source is not read in one page.
my $N = 3000;
my $ATTEMPTS = 3;
my $B = 10;
my $M = 2;
my $BOUND = 2 * $M * $B;

my $node = retl_node('down');
my $recv = start_receiver();

create_orders($node, 'orders', $N);
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => $B, max_in_flight => $M,
	max_attempts => $ATTEMPTS, max_backoff_ms => 100);
create_track_sync($node, 's', 'orders', 'd');

# ---------------------------------------------------------------------
# A. The receiver closes every connection without answering.
# ---------------------------------------------------------------------
$recv->config({ down => 1 });
my $run1 = sql($node, "SELECT retl_sync_now('s')");
is(wait_run($node, $run1), 'failed', 'A: the run ends failed');
my $r1 = run_row($node, $run1);
like($r1->{error} // '', qr/request failed after $ATTEMPTS attempt/,
	'A: the error is readable: the request failed after max_attempts attempts');
note("A: error: " . ($r1->{error} // ''));
cmp_ok($r1->{rows_read}, '<', $N, "A: reading stopped ($r1->{rows_read} of $N rows read)");
cmp_ok($r1->{events_sent}, '<=', $BOUND, "A: events_sent <= $BOUND ($r1->{events_sent})");
is($r1->{events_succeeded}, 0, 'A: events_succeeded = 0');
is($r1->{events_failed}, $r1->{events_sent}, 'A: events_failed = events_sent');
is(scalar @{ $recv->events }, 0, 'A: nothing was delivered');

my $fe = failed_events($node, 's');
cmp_ok(scalar @$fe, '<=', $BOUND,
	"A: retl.failed_events holds at most 2 x max_in_flight x batch_size events");
is(scalar @$fe, $r1->{events_failed}, 'A: ... the run\'s failed events');
ok(!grep({ ($_->{run_id} // 0) != $run1 } @$fe), 'A: each names the run');
ok(!grep({ !defined $_->{payload} || !defined $_->{message_id} } @$fe),
	'A: each has its payload and messageId');
is(sql($node, "SELECT failed_events FROM retl.sync_status WHERE sync = 's'"),
	scalar @$fe, "A: retl.sync_status counts them");
ok(@$fe && !grep({ ($_->{attempts} // 0) != $ATTEMPTS } @$fe),
	"A: each was sent, $ATTEMPTS times")
  or diag('attempts: ' . join(',', map { $_->{attempts} } @$fe));
ok(!grep({ ($_->{error} // '') =~ /^not sent: / } @$fe),
	'A: no event is recorded as "not sent"');
my %at_receiver = map { ($_ // '') => 1 } @{ event_ids($recv->all_events) };
ok(!grep({ !$at_receiver{ $_->{primary_key} } } @$fe),
	'A: the failed events did reach the receiver');
is(sql($node, "SELECT next_run_kind FROM retl.sync_status WHERE sync = 's'"),
	'full', 'A: the next run is full');

my %failed_mid = map { $_->{message_id} => $_->{primary_key} } @$fe;

# ---------------------------------------------------------------------
# B. The receiver is back: retl_retry_failed delivers every failed event.
# ---------------------------------------------------------------------
$recv->reset;
my $run2 = sql($node, "SELECT retl_retry_failed('s')");
isnt($run2, $run1, 'B: retl_retry_failed queues a new run');
is(wait_run($node, $run2), 'succeeded', 'B: the retry run succeeded');
is(run_row($node, $run2)->{kind}, 'full', 'B: it is full, as the failed run');
my $ev2 = $recv->events(run_id => $run2);
check_ids(event_ids($ev2), [ 1 .. $N ], 'B: every row was delivered', exact => 0);
my $d2 = duplicate_stats($ev2);
cmp_ok($d2->{duplicates}, '<=', $BOUND,
	"B: rows sent twice (the failed ones, re-sent first and read again) <= $BOUND ($d2->{duplicates})");
my %got_mid = map { ($_->{messageId} // '') => 1 } @$ev2;
my @missing = grep { !$got_mid{$_} } keys %failed_mid;
ok(!@missing, 'B: every failed event was delivered, with its messageId')
  or diag('missing: ' . join(', ', map { $failed_mid{$_} } @missing[ 0 .. ($#missing < 9 ? $#missing : 9) ]));
# The run is full (the failed first run did not advance the cursor) and
# resumes from its checkpoint, so its source read delivers the failed
# rows too; only the retry of the failed events removes them from
# retl.failed_events.
is(scalar @{ failed_events($node, 's') }, 0,
	'B: retl.failed_events is empty: every failed event was re-sent and removed')
  or diag("left in retl.failed_events (error, attempts, count):\n" . sql($node,
	"SELECT left(error, 40), attempts, count(*) FROM retl.failed_events GROUP BY 1, 2 ORDER BY 1, 2"));
my $r2 = run_row($node, $run2);
is($r2->{events_failed}, 0, 'B: events_failed = 0');
is($r2->{events_succeeded} + $r2->{events_failed}, $r2->{events_sent},
	'B: events_succeeded + events_failed = events_sent');
is(sql($node, "SELECT failed_events FROM retl.sync_status WHERE sync = 's'"),
	0, 'B: retl.sync_status counts no failed event');

# ---------------------------------------------------------------------
# C. 401: not retried, the run fails with an error naming 401.
# ---------------------------------------------------------------------
create_webhook($node, 'd401', $recv->url('/auth'),
	batch_size => $B, max_in_flight => $M,
	max_attempts => $ATTEMPTS, max_backoff_ms => 100);
create_track_sync($node, 's401', 'orders', 'd401');
$recv->reset;
$recv->config({ status => 401 });
my $run3 = sql($node, "SELECT retl_sync_now('s401')");
is(wait_run($node, $run3), 'failed', 'C: a 401 fails the run');
my $r3 = run_row($node, $run3);
like($r3->{error} // '', qr/\b401\b/, 'C: the error mentions 401');
note("C: error: " . ($r3->{error} // ''));
my $reqs = $recv->requests;
ok(@$reqs >= 1 && @$reqs <= $M,
	"C: at most max_in_flight ($M) requests: nothing sent after the 401, no retry")
  or diag(scalar(@$reqs) . ' requests');
ok(!grep({ $_->{events} != $B } @$reqs),
	'C: the batch answered 401 was not split');
my %per_body = %{ count_by($reqs, sub { $_[0]{body} }) };
ok(!grep({ $_ != 1 } values %per_body), 'C: each batch was sent once');
my $fe3 = failed_events($node, 's401');
my @f401 = grep { ($_->{http_status} // 0) == 401 } @$fe3;
is(scalar @$fe3, $B * scalar(@$reqs),
	'C: retl.failed_events holds the events sent, and only them');
is(scalar @f401, scalar @$fe3, 'C: ... each with status 401');
ok(!grep({ $_->{attempts} != 1 || ($_->{response_body} // '') !~ /configured status/ } @f401),
	'C: ... with 1 attempt and the response body');
is($r3->{events_failed}, scalar @$fe3, "C: events_failed = the events sent");
cmp_ok($r3->{rows_read}, '<', $N, "C: reading stopped ($r3->{rows_read} of $N rows read)");
is($r3->{events_succeeded} + $r3->{events_failed}, $r3->{events_sent},
	'C: events_succeeded + events_failed = events_sent');
$recv->config({ status => undef });

stop_ok($node);

done_testing();
