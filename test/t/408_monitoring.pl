# Monitoring: the launcher and the workers in pg_stat_activity (named
# "retl launcher" and "retl worker <dbname>", the current syncs as the
# query text); retl.sync_status's progress, events/s and time since the
# last success; NOTIFY retl_runs when a run ends.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP ();
use RetlTest;

my $node = retl_node('monitor');
my $recv = start_receiver();
create_orders($node, 'orders', 400);
create_webhook($node, 'hook', $recv->url('/m'), batch_size => 10, max_in_flight => 1);
create_track_sync($node, 'orders_sync', 'orders', 'hook');

is(sql($node, "SELECT application_name FROM pg_stat_activity WHERE backend_type = 'retl launcher'"),
	'retl launcher', 'the launcher is "retl launcher" in pg_stat_activity');

# a slow destination keeps the run going: 40 requests of 150 ms
$recv->config({ delay_ms => 150 });
my $run = sql($node, "SELECT retl_sync_now('orders_sync')");
my $row = wait_for(
	sub {
		my $r = sql($node, q{SELECT application_name || '|' || query FROM pg_stat_activity
		  WHERE backend_type = 'retl worker' AND datname = 'postgres'});
		return $r =~ /orders_sync/ ? $r : undef;
	},
	60, 'the worker to show its sync');
like($row // '', qr/^retl worker postgres\|.*orders_sync/,
	'the worker is "retl worker postgres", with its current sync as the query text');

my $progress = wait_for(
	sub {
		my $p = sql_json($node, q{SELECT to_jsonb(s) FROM retl.sync_status s
		  WHERE sync = 'orders_sync' AND progress_rows > 0});
		return $p && $p->{last_run_status} eq 'running' ? $p : undef;
	},
	60, 'progress to show');
ok($progress, 'a running sync shows progress');
cmp_ok($progress->{progress_percent} // -1, '>', 0, 'progress_percent is above 0');
cmp_ok($progress->{progress_percent} // 101, '<=', 100, '... and at most 100');
# the planner's estimate, right for a table never analyzed too
cmp_ok($progress->{progress_total} // 0, '>=', 200, 'progress_total estimates the 400 rows');
cmp_ok($progress->{progress_total} // 1e9, '<=', 800, '... within a factor of 2');
ok(defined $progress->{events_per_second}, 'events_per_second is shown while running');
ok(!defined $progress->{since_last_success}, 'no success yet: since_last_success is null');

# NOTIFY retl_runs: a session that listens hears how each run ended
my ($rc, $out, $err) = $node->psql('postgres', qq{
LISTEN retl_runs;
DO \$\$ BEGIN
  FOR i IN 1..1200 LOOP
    EXIT WHEN (SELECT status FROM retl.runs WHERE id = $run) IN ('succeeded', 'failed', 'stopped');
    PERFORM pg_sleep(0.1);
  END LOOP;
END \$\$;
SELECT 'done';
});
is($rc, 0, 'the listening session ran') or diag($err);
my ($payload) = $out =~ /Asynchronous notification "retl_runs" with payload "(.*)" received/;
ok(defined $payload, 'it received a notification on channel retl_runs') or diag($out);
is_deeply(JSON::PP->new->decode($payload // '{}'),
	{ run => $run + 0, sync => 'orders_sync', status => 'succeeded' },
	'the payload is {"run": id, "sync": name, "status": ...}');

my $done = sql_json($node, q{SELECT to_jsonb(s) FROM retl.sync_status s WHERE sync = 'orders_sync'});
is($done->{last_run_status}, 'succeeded', 'the run succeeded');
ok(!defined $done->{progress_percent}, 'progress is null once the run has ended');
cmp_ok($done->{events_per_second}, '>', 0, 'events_per_second of the finished run');
like($done->{since_last_success} // '', qr/^\d\d:\d\d:\d\d/, 'since_last_success is an interval');
cmp_ok(sql($node, q{SELECT extract(epoch FROM since_last_success) FROM retl.sync_status
  WHERE sync = 'orders_sync'}), '<', 300, '... counted from the success just now');

# an incremental run knows how many rows changed before it reads them
$recv->config({ delay_ms => 400 });
create_orders($node, 'orders', 50, from => 401, insert_only => 1);
$run = sql($node, "SELECT retl_sync_now('orders_sync')");
my $inc = wait_for(
	sub {
		my $p = sql_json($node, q{SELECT to_jsonb(s) FROM retl.sync_status s
		  WHERE sync = 'orders_sync' AND last_run_kind = 'incremental'
		    AND progress_rows > 0});
		return $p && $p->{last_run_status} eq 'running' ? $p : undef;
	},
	60, 'the incremental run to show progress');
is($inc->{progress_total}, 50, 'an incremental run counts the 50 changed rows as its total');
$recv->config({ delay_ms => 0 });
is(wait_run($node, $run), 'succeeded', 'the incremental run succeeds');

done_testing();
