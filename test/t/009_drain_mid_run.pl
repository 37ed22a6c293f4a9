# README claims about runs that are running (not only queued):
#   1. Disabling a sync, dropping it, or dropping its destination with
#      cascade stops its running run and drains it as retl_stop does: the
#      requests in flight are answered (not aborted), nothing more is read
#      or sent, the run ends stopped (its row stays).
#   2. DROP DATABASE of a database whose run has requests in flight is not
#      blocked.
#   3. A destination that is down does not grow the worker's memory: a run
#      of 200,000 rows (some 100 MB of events) against a closed port keeps
#      the worker's private memory within 32 MB of what it was.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use RetlTest;

my $node = retl_node('drainmid');
my $recv = start_receiver();
my $M = 2;
create_orders($node, 'orders', 400);

# ---------------------------------------------------------------------
# 1. disable, drop, drop destination with cascade: mid-run.
# ---------------------------------------------------------------------
my %ACTION = (
	disable => "SELECT retl_disable_sync('s_disable')",
	drop => "SELECT retl_drop_sync('s_drop')",
	cascade => "SELECT retl_drop_destination('d_cascade', cascade => true)",
);
for my $how (qw(disable drop cascade))
{
	$recv->reset;
	$recv->config({ delay_ms => 1500 });
	create_webhook($node, "d_$how", $recv->url("/$how"), batch_size => 10,
		max_in_flight => $M);
	create_track_sync($node, "s_$how", 'orders', "d_$how");
	my $run = sql($node, "SELECT retl_sync_now('s_$how')");
	$recv->wait_requests($M, 60, "$how: $M requests in flight");
	is(sql($node, "SELECT status FROM retl.runs WHERE id = $run"), 'running',
		"$how: the run is running, $M requests in flight");
	my ($rc, $out, $err) = $node->psql('postgres', $ACTION{$how});
	is($rc, 0, "$how: the call succeeds mid-run") or diag($err);
	my $sent_at_call = $recv->stats->{requests};
	# the run ends stopped, or its row goes with the dropped sync
	ok( wait_for(
			sub {
				my $s = sql($node,
					"SELECT coalesce((SELECT status FROM retl.runs WHERE id = $run), 'gone')");
				$s =~ /^(stopped|gone)$/;
			},
			60,
			"$how: the run to end"),
		"$how: the run ended");
	my $st = sql($node,
		"SELECT coalesce((SELECT status FROM retl.runs WHERE id = $run), 'gone')");
	is($st, 'stopped', "$how: the run ended stopped (its row stays)");
	Time::HiRes::sleep(2);
	my $stats = $recv->stats;
	cmp_ok($stats->{requests}, '<=', $sent_at_call + $M,
		"$how: nothing more was sent after the call than what was in flight");
	cmp_ok($stats->{requests}, '<', 40, "$how: the run did not go on to send its 400 rows");
	is($stats->{answered}{200} // 0, $stats->{requests},
		"$how: every request in flight was answered 200, none aborted (drained)")
	  or diag(JSON::PP->new->canonical->encode($stats));
	if ($how eq 'disable')
	{
		my $r = run_row($node, $run);
		is($r->{events_succeeded}, $stats->{events},
			"disable: events_succeeded is what the receiver got ($stats->{events})");
	}
}
$recv->config({ delay_ms => undef });

# ---------------------------------------------------------------------
# 2. DROP DATABASE with requests in flight.
# ---------------------------------------------------------------------
$recv->reset;
$recv->config({ delay_ms => 5000 });
sql($node, 'CREATE DATABASE d3');
$node->safe_psql('d3', qq{
CREATE EXTENSION retl;
CREATE TABLE t3 (id bigint PRIMARY KEY, user_id text);
INSERT INTO t3 SELECT g, 'u' || g FROM generate_series(1, 200) g;
SELECT retl_create_destination('d', 'webhook',
  '{"url": "@{[ $recv->url('/d3') ]}", "batch_size": 10, "max_in_flight": 2}'::jsonb);
SELECT retl_create_sync(name => 's', source => 't3', destination => 'd',
  event_type => 'track', mapping => '{"userId":"user_id","event":{"value":"E"}}',
  primary_key => 'id');
});
my $run3 = $node->safe_psql('d3', "SELECT retl_sync_now('s')");
$recv->wait_requests(1, 60, 'a request of the d3 run in flight');
is($node->safe_psql('d3', "SELECT status FROM retl.runs WHERE id = $run3"), 'running',
	'd3: the run is running, a request in flight');
my $t0 = Time::HiRes::time();
my ($rc, $out, $err) = psql_as($node, undef, 'DROP DATABASE d3', timeout => 30);
my $took = Time::HiRes::time() - $t0;
is($rc, 0, 'DROP DATABASE d3 succeeds mid-run') or diag($err);
cmp_ok($took, '<', 10, 'DROP DATABASE d3 takes less than 10 s');
note(sprintf('DROP DATABASE mid-run took %.1f s', $took));
is(sql($node, "SELECT count(*) FROM pg_database WHERE datname = 'd3'"), '0', 'd3 is gone');
$recv->config({ delay_ms => undef });

# ---------------------------------------------------------------------
# 3. A destination that is down: the worker's memory stays bounded.
# ---------------------------------------------------------------------
sql($node, q{CREATE TABLE wide (id bigint PRIMARY KEY, user_id text NOT NULL, pad text);
INSERT INTO wide SELECT g, 'user-' || g, repeat('y', 400) FROM generate_series(1, 200000) g;});
# a port nobody listens on: every request fails to connect, and is retried
my $dead = PostgreSQL::Test::Cluster::get_free_port();
create_webhook($node, 'd_down', "http://127.0.0.1:$dead/down", batch_size => 100,
	max_in_flight => 4, max_attempts => 100, max_backoff_ms => 1000);
create_track_sync($node, 's_down', 'wide', 'd_down',
	mapping => { userId => 'user_id', event => { value => 'Wide' }, 'properties.pad' => 'pad' });

sub worker_pid
{
	return sql($node, q{SELECT pid FROM pg_stat_activity
	  WHERE backend_type = 'retl worker' AND datname = 'postgres'});
}

sub rss_anon_kb
{
	my ($pid) = @_;
	my ($kb) = (eval { slurp_file("/proc/$pid/status") } // '') =~ /^RssAnon:\s+(\d+) kB/m;
	return $kb;
}

my $rund = sql($node, "SELECT retl_sync_now('s_down')");
ok(wait_for(sub { sql($node, "SELECT status FROM retl.runs WHERE id = $rund") eq 'running' },
		60, 'the run against the closed port to start'), 'down: the run is running');
my $pid = worker_pid();
ok($pid, "down: the worker is found (pid $pid)");
my $base = rss_anon_kb($pid);
ok(defined $base, "down: its RssAnon is read ($base kB)");
my $peak = $base // 0;
my $t_end = Time::HiRes::time() + 15;
while (Time::HiRes::time() < $t_end)
{
	my $kb = rss_anon_kb($pid);
	$peak = $kb if defined $kb && $kb > $peak;
	Time::HiRes::sleep(0.1);
}
my $r = run_row($node, $rund);
is($r->{status}, 'running', 'down: 15 s later the run is still running (retrying)');
is($r->{events_succeeded}, 0, 'down: nothing was delivered');
cmp_ok($r->{rows_read}, '<', 200000, 'down: it did not read the whole source ahead');
my $growth = (($peak // 0) - ($base // 0)) / 1024;
note(sprintf('down: RssAnon %d kB at the start, peak %d kB, rows_read %d',
	$base // 0, $peak, $r->{rows_read}));
cmp_ok($growth, '<', 32, 'down: the worker grew by less than 32 MB (the source is ~100 MB)');
sql($node, "SELECT retl_stop('s_down')");
is(wait_run($node, $rund, 60), 'stopped', 'down: the run stops');

stop_ok($node);
done_testing();
