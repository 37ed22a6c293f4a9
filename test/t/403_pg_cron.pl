# pg_cron (Debian's postgresql-15-cron, 1.4: minute granularity, no
# '[1-59] seconds' schedules) runs syncs on a schedule with
#
#   SELECT cron.schedule('orders', '* * * * *', $$SELECT retl_sync_now('orders')$$);
#
# A scheduled call that finds a run of its sync queued or running returns
# that run instead of queueing another (retl._enqueue: retl_sync_now never
# inserts a run while one of the sync is queued or running, so scheduled
# calls keep at most one run of a sync in progress), however many calls
# come at once.
#
# To stay short, the test waits for two minute ticks (at most about two
# minutes in all) and makes each count:
#   tick 1: sync 'busy' has a run in progress (started by hand, held by the
#           receiver), sync 'orders' is idle; at the same tick three jobs
#           per sync call retl_sync_now (the documented command, and two
#           that record the run id returned).  Every 'busy' call returns the
#           run in progress; the 'orders' calls create one run and all
#           return it.
#   tick 2: (the first tick after both runs finished) the documented jobs
#           alone: 'orders' delivers the rows inserted since,
#           incrementally; each sync has one more run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

# pg_cron connects with libpq (its default) through the test's Unix
# socket directory.  A later shared_preload_libraries line wins over the
# one retl_node writes.
my $sockdir = $PostgreSQL::Test::Cluster::test_pghost;
my $node = retl_node(
	'cron', conf => qq{
shared_preload_libraries = 'retl,pg_cron'
cron.database_name = 'postgres'
cron.host = '$sockdir'
});
sql($node, 'CREATE EXTENSION pg_cron');
note('pg_cron ' . sql($node,
	"SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'"));

my $recv = start_receiver();
my $mapping = {
	'userId' => 'user_id',
	'event' => { value => 'Order Completed' },
	'properties.id' => 'id',
};

# Held requests must outlive a minute tick: a long timeout, one attempt.
create_orders($node, 'orders', 200);
create_webhook($node, 'd_orders', $recv->url('/orders'),
	batch_size => 50, timeout_ms => 600000, max_attempts => 1);
create_track_sync($node, 'orders', 'orders', 'd_orders', mapping => $mapping);
create_orders($node, 'busy', 50);
create_webhook($node, 'd_busy', $recv->url('/busy'),
	batch_size => 10, timeout_ms => 600000, max_attempts => 1);
create_track_sync($node, 'busy', 'busy', 'd_busy', mapping => $mapping);
sql($node, 'CREATE TABLE cron_calls (job text, run_id bigint, '
	  . 'at timestamptz DEFAULT clock_timestamp())');

# Finished pg_cron job runs of some jobs, as { jobid => [rows] }, each row
# { runid, status, return_message }, oldest first.
sub job_runs
{
	my (@jobids) = @_;
	my $rows = sql_json($node, q{
SELECT coalesce(jsonb_agg(jsonb_build_object('jobid', jobid, 'runid', runid,
	'status', status, 'return_message', return_message) ORDER BY runid), '[]')
  FROM cron.job_run_details
 WHERE jobid IN (} . join(',', @jobids) . q{)
   AND status IN ('succeeded', 'failed')});
	my %by;
	push @{ $by{ $_->{jobid} } }, $_ for @$rows;
	return \%by;
}

# ---------------------------------------------------------------------
# A run of 'busy' in progress, held by the receiver.
# ---------------------------------------------------------------------
$recv->config({ hang => 1 });
my $busy_run = sql($node, "SELECT retl_sync_now('busy')");
$recv->wait_requests(1, 60, 'the first request of the busy run');
is(run_row($node, $busy_run)->{status}, 'running',
	"run $busy_run of 'busy' is in progress (its first request is held)");

# ---------------------------------------------------------------------
# Tick 1.  All jobs in one transaction, so that they fire at the same tick.
# ---------------------------------------------------------------------
my %job;
my @names;
my $schedule = "BEGIN;\n";
for my $s ('orders', 'busy')
{
	push @names, $s;
	$schedule .= "SELECT '$s', cron.schedule('$s', '* * * * *', "
	  . "\$\$SELECT retl_sync_now('$s')\$\$);\n";
	for my $i (1, 2)
	{
		my $n = "$s-probe-$i";
		push @names, $n;
		$schedule .= "SELECT '$n', cron.schedule('$n', '* * * * *', "
		  . "\$\$INSERT INTO cron_calls (job, run_id) "
		  . "SELECT '$n', retl_sync_now('$s')\$\$);\n";
	}
}
$schedule .= "COMMIT;\n";
for my $line (split /\n/, sql($node, $schedule))
{
	my ($n, $id) = split /\|/, $line;
	$job{$n} = $id if defined $id;
}
is(scalar keys %job, 6, 'six pg_cron jobs scheduled, every minute');
note('jobs: ' . join(', ', map { "$_=$job{$_}" } @names));

my $tick1 = wait_for(
	sub {
		my $by = job_runs(values %job);
		return (scalar(grep { $by->{ $job{$_} } } @names) == 6) ? $by : undef;
	},
	150, 'every job to run once (the next minute tick)');

# The probes ran once: unschedule them before the next tick.
sql($node, "SELECT cron.unschedule('$_')") for grep { /probe/ } @names;
is(sql($node, "SELECT string_agg(jobname, ',' ORDER BY jobname) FROM cron.job"),
	'busy,orders', 'the probes are unscheduled: cron.job keeps busy and orders');

SKIP:
{
	skip 'no pg_cron tick', 13 unless $tick1;

	# pg_cron's return_message: "N row(s)" for a query, the command tag
	# otherwise (so the documented job shows "1 row", not the run id)
	for my $n (@names)
	{
		my $r = $tick1->{ $job{$n} }[0];
		my $want = $n =~ /probe/ ? 'INSERT 0 1' : '1 row';
		ok($r->{status} eq 'succeeded' && $r->{return_message} eq $want,
			"cron.job_run_details: job $n succeeded with return_message '$want'")
		  or diag(explain($r));
	}

	# busy: every call returned the run in progress, nothing was queued
	is(sql($node, "SELECT string_agg(DISTINCT run_id::text, ',') FROM cron_calls "
		  . "WHERE job LIKE 'busy-%'"),
		$busy_run,
		"the scheduled calls of 'busy' returned run $busy_run, the run in progress");
	is(sql($node, "SELECT count(*) FROM cron_calls WHERE job LIKE 'busy-%'"),
		'2', '... (both probes recorded a call)');
	my $busy_runs = runs_of($node, 'busy');
	is(scalar @$busy_runs, 1, "... and 'busy' still has that one run");
	is($busy_runs->[-1]{status}, 'running', '... still running');

	# orders: the three concurrent calls made one run
	my $orders_runs = runs_of($node, 'orders');
	is(scalar @$orders_runs, 1,
		"the three scheduled calls of idle 'orders' at one tick created one run");
	my $c = $orders_runs->[0]{id};
	is(sql($node, "SELECT string_agg(DISTINCT run_id::text, ',') FROM cron_calls "
		  . "WHERE job LIKE 'orders-%'"),
		$c, "... and the probes were given that run ($c)");
	is(sql($node, "SELECT count(*) FROM retl.runs WHERE status = 'queued'"),
		'0', '... no run is queued behind one in progress');
}

# ---------------------------------------------------------------------
# Release the receiver: both runs finish and deliver every row once.
# ---------------------------------------------------------------------
$recv->config({ hang => undef });
is(wait_run($node, $busy_run), 'succeeded', "run $busy_run of 'busy' succeeded");
check_ids(event_ids($recv->events(run_id => $busy_run)), [ 1 .. 50 ],
	'... and delivered every row of busy once');
my $orders1 = runs_of($node, 'orders')->[0]{id};
is(wait_run($node, $orders1), 'succeeded',
	"the run of 'orders' created by pg_cron ($orders1) succeeded");
check_ids(event_ids($recv->events(run_id => $orders1)), [ 1 .. 200 ],
	'... and delivered every row of orders once');

# ---------------------------------------------------------------------
# Tick 2: the documented jobs alone; orders sends what changed.  The first
# tick that starts after both runs finished counts (a tick that came
# earlier would have returned the runs in progress).
# ---------------------------------------------------------------------
create_orders($node, 'orders', 10, from => 201, insert_only => 1);
my $t_done = sql($node, 'SELECT clock_timestamp()');
my $tick2 = wait_for(
	sub {
		my $n = sql($node, "SELECT count(DISTINCT jobid) FROM cron.job_run_details "
			  . "WHERE jobid IN ($job{orders}, $job{busy}) "
			  . "AND status IN ('succeeded', 'failed') AND start_time > '$t_done'");
		return $n == 2 ? job_runs($job{orders}, $job{busy}) : undef;
	},
	150, 'the jobs orders and busy to run again (the next minute tick)');

SKIP:
{
	skip 'no second pg_cron tick', 8 unless $tick2;
	for my $n (qw(orders busy))
	{
		my $r = $tick2->{ $job{$n} }[-1];
		ok($r->{status} eq 'succeeded' && $r->{return_message} eq '1 row',
			"next tick: job $n succeeded with return_message '1 row'")
		  or diag(explain($r));
	}
	my $new = sql_json($node, "SELECT coalesce(jsonb_agg(id ORDER BY id), '[]') FROM retl.runs "
		  . "WHERE sync_name = 'orders' AND requested_at > '$t_done'");
	is(scalar @$new, 1, "the next tick made one more run of 'orders'");
	my $c2 = $new->[-1];
	is(wait_run($node, $c2), 'succeeded', "... run $c2 succeeded");
	is(run_row($node, $c2)->{kind}, 'incremental', '... incrementally');
	check_ids(event_ids($recv->events(run_id => $c2)), [ 201 .. 210 ],
		'... and delivered the 10 new rows once');

	$new = sql_json($node, "SELECT coalesce(jsonb_agg(id ORDER BY id), '[]') FROM retl.runs "
		  . "WHERE sync_name = 'busy' AND requested_at > '$t_done'");
	is(scalar @$new, 1, "the next tick made one more run of 'busy'");
	is(wait_run($node, $new->[-1]), 'succeeded', '... which succeeded');
}

# ---------------------------------------------------------------------
# Unscheduling stops the calls.
# ---------------------------------------------------------------------
is(sql($node, "SELECT cron.unschedule('orders') AND cron.unschedule('busy')"),
	't', "cron.unschedule('orders') and cron.unschedule('busy')");
is(sql($node, 'SELECT count(*) FROM cron.job'), '0', 'no job is left');

stop_ok($node);

done_testing();
