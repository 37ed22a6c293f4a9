# Security and operations: a sync reads its source as its owner (SELECT is
# required at create time, row-level security applies to what is sent);
# retl.allowed_hosts is checked at create time and at send time;
# DROP DATABASE and DROP EXTENSION do not hang while a worker is connected
# or a run is in flight; retl.history_retention prunes old runs but keeps
# each sync's cursor run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use RetlTest;

my $node = retl_node('secops');
my $recv = start_receiver();

# ---------------------------------------------------------------------
# 1. Privileges: SELECT on the source is required; the run reads as the
#    owner, so row-level security applies.
# ---------------------------------------------------------------------
create_orders($node, 'orders_rls', 50);
# alice needs the grant to use retl (retl_user), and nothing on its catalog
sql($node, q{
CREATE ROLE alice LOGIN IN ROLE retl_user;
ALTER TABLE orders_rls ENABLE ROW LEVEL SECURITY;
CREATE POLICY alice_low ON orders_rls FOR SELECT TO alice USING (id <= 10);
});
my $rls_url = $recv->url('/rls');
my ($rc, $out, $err) = psql_as($node, 'alice', qq{SELECT retl_create_destination('d_rls',
  'webhook', '{"url": "$rls_url", "batch_size": 10}')});
is($rc, 0, 'alice creates her destination') or diag($err);

my $create_rls = q{SELECT retl_create_sync(name => 's_rls', source => 'orders_rls',
  destination => 'd_rls', event_type => 'track',
  mapping => '{"userId":"user_id","event":{"value":"Order Completed"}}',
  primary_key => 'id');};

($rc, $out, $err) = psql_as($node, 'alice', $create_rls);
isnt($rc, 0, 'retl_create_sync without SELECT on the source fails');
like($err, qr/42501/, '... with SQLSTATE 42501 (insufficient_privilege)')
  or diag($err);
like($err, qr/HINT:.*GRANT SELECT/, '... and a hint to GRANT SELECT')
  or diag($err);
is(sql($node, "SELECT count(*) FROM retl.syncs WHERE name = 's_rls'"),
	'0', '... and creates no sync');

sql($node, 'GRANT SELECT ON orders_rls TO alice');
($rc, $out, $err) = psql_as($node, 'alice', $create_rls);
is($rc, 0, 'after GRANT SELECT the same call succeeds') or diag($err);
is(sql($node, "SELECT owner::text FROM retl.syncs WHERE name = 's_rls'"),
	'alice', 'the sync is owned by its creator');

my $run = sql($node, "SELECT retl_sync_now('s_rls')");
is(wait_run($node, $run, 30), 'succeeded', 'the run of the RLS sync succeeded');
check_ids(event_ids($recv->events(path => '/rls')), [ 1 .. 10 ],
	'only the rows visible to the owner under RLS arrive');

# the owner loses SELECT: the next run fails with that error
sql($node, 'REVOKE SELECT ON orders_rls FROM alice');
$run = sql($node, "SELECT retl_force_full('s_rls')");
is(wait_run($node, $run, 30), 'failed', 'after REVOKE SELECT the run fails');
like(sql($node, "SELECT error FROM retl.runs WHERE id = $run"),
	qr/permission denied for table orders_rls/, '... with the permission error');
sql($node, 'GRANT SELECT ON orders_rls TO alice');

# ---------------------------------------------------------------------
# 2. retl.allowed_hosts: at create time and at send time.
# ---------------------------------------------------------------------
create_orders($node, 'orders_h', 20);
my $hook_h = $recv->url('/hosts');
my $cfg_h = qq{'{"url": "$hook_h", "batch_size": 10}'::jsonb};

set_system($node, 'retl.allowed_hosts', 'example.com');
($rc, $out, $err) = psql_as($node, undef,
	"SELECT retl_create_destination('d_h', 'webhook', $cfg_h)");
isnt($rc, 0, 'a destination outside retl.allowed_hosts is rejected');
like($err, qr/42501/, '... with SQLSTATE 42501') or diag($err);
like($err, qr/retl\.allowed_hosts/, '... mentioning retl.allowed_hosts')
  or diag($err);

set_system($node, 'retl.allowed_hosts', '127.0.0.1');
($rc, $out, $err) = psql_as($node, undef,
	"SELECT retl_create_destination('d_h', 'webhook', $cfg_h)");
is($rc, 0, 'with the host allowed, the destination is created') or diag($err);
create_track_sync($node, 's_h', 'orders_h', 'd_h');
$run = sql($node, "SELECT retl_sync_now('s_h')");
is(wait_run($node, $run, 30), 'succeeded', 'a run to an allowed host succeeds');

set_system($node, 'retl.allowed_hosts', 'example.com');
sql($node, 'INSERT INTO orders_h SELECT 1000, user_id, amount, status, '
	  . 'created_at, version FROM orders_h WHERE id = 1');
my $before = scalar @{ $recv->all_events(path => '/hosts') };
$run = sql($node, "SELECT retl_force_full('s_h')");
is(wait_run($node, $run, 30), 'failed',
	'after narrowing retl.allowed_hosts the next run fails');
like(run_row($node, $run)->{error} // '', qr/allowed_hosts/,
	'... with an error mentioning allowed_hosts');
is(scalar @{ $recv->all_events(path => '/hosts') }, $before,
	'... and nothing more reached the host');
set_system($node, 'retl.allowed_hosts', undef);

# ---------------------------------------------------------------------
# 5. retl.history_retention: old runs are pruned, the cursor run is kept.
#    (Before 4, which drops the extension.)
# ---------------------------------------------------------------------
create_orders($node, 'orders_r', 5);
create_webhook($node, 'd_r', $recv->url('/ret'));
create_track_sync($node, 's_r', 'orders_r', 'd_r');
my $old = sql($node, "SELECT retl_sync_now('s_r')");
is(wait_run($node, $old, 30), 'succeeded', 'retention: first run succeeded');
my $kept = sql($node, "SELECT retl_sync_now('s_r')");
is(wait_run($node, $kept, 30), 'succeeded', 'retention: second run succeeded');
is(sql($node, "SELECT cursor_run_id FROM retl.syncs WHERE name = 's_r'"),
	$kept, 'the second run is the cursor run');

set_system($node, 'retl.history_retention', '1s');
sql($node, "UPDATE retl.runs SET finished_at = now() - interval '1 day' "
	  . "WHERE id IN ($old, $kept)");

# The worker prunes when it starts and then once a minute: restart it
# (terminate it while idle; queuing a run starts a new one).
my $wpid = sql($node, "SELECT pid FROM pg_stat_activity "
	  . "WHERE backend_type = 'retl worker' AND datname = 'postgres'");
if ($wpid =~ /^\d+$/)
{
	sql($node, "SELECT pg_terminate_backend($wpid)");
	wait_for(
		sub {
			sql($node, "SELECT count(*) FROM pg_stat_activity WHERE pid = $wpid")
			  eq '0';
		},
		20, 'the old worker to exit');
}
$run = sql($node, "SELECT retl_sync_now('s_rls')");
ok(wait_for(
		sub {
			sql($node, "SELECT count(*) FROM retl.runs WHERE id = $old") eq '0';
		},
		30, 'the old run to be pruned'),
	'a finished run older than retl.history_retention is deleted');
is(sql($node, "SELECT count(*) FROM retl.runs WHERE id = $kept"), '1',
	'the cursor run of the sync is kept');
is(wait_run($node, $run, 30), 'succeeded', 'the run queued meanwhile succeeds');
set_system($node, 'retl.history_retention', undef);

# ---------------------------------------------------------------------
# 3. DROP DATABASE of a database whose worker is connected.
# ---------------------------------------------------------------------
sql($node, 'CREATE DATABASE d2');
$node->safe_psql('d2', qq{
CREATE EXTENSION retl;
CREATE TABLE t2 (id bigint PRIMARY KEY, user_id text);
INSERT INTO t2 SELECT g, 'u' || g FROM generate_series(1, 20) g;
SELECT retl_create_destination('d', 'webhook',
  '{"url": "@{[ $recv->url('/d2') ]}"}'::jsonb);
SELECT retl_create_sync(name => 's', source => 't2', destination => 'd',
  event_type => 'track', mapping => '{"userId":"user_id","event":{"value":"E"}}',
  primary_key => 'id');
});
$run = $node->safe_psql('d2', "SELECT retl_sync_now('s')");
is(wait_run_db($node, 'd2', $run), 'succeeded', 'a run in database d2 succeeded');
is(sql($node, "SELECT count(*) FROM pg_stat_activity "
	  . "WHERE backend_type = 'retl worker' AND datname = 'd2'"),
	'1', 'the retl worker of d2 is connected');

my $t0 = Time::HiRes::time();
($rc, $out, $err) = psql_as($node, undef, 'DROP DATABASE d2',
	timeout => 30);
my $took = Time::HiRes::time() - $t0;
is($rc, 0, 'DROP DATABASE d2 succeeds while its worker was connected')
  or diag($err);
cmp_ok($took, '<', 10, 'DROP DATABASE d2 takes less than 10 s');
note(sprintf('DROP DATABASE took %.1f s', $took));
is(sql($node, "SELECT count(*) FROM pg_database WHERE datname = 'd2'"), '0',
	'd2 is gone');

# ---------------------------------------------------------------------
# 4. DROP EXTENSION while a run is in flight.
# ---------------------------------------------------------------------
create_orders($node, 'orders_x', 3000);
create_webhook($node, 'd_x', $recv->url('/x'),
	batch_size => 10, max_in_flight => 2);
create_track_sync($node, 's_x', 'orders_x', 'd_x');
$recv->config({ delay_ms => 300 });
$run = sql($node, "SELECT retl_sync_now('s_x')");
$recv->wait_events(20, 30, 'the run to deliver its first batches');
is(run_row($node, $run)->{status}, 'running', 'the run is in flight');

$t0 = Time::HiRes::time();
($rc, $out, $err) = psql_as($node, undef, 'DROP EXTENSION retl',
	timeout => 30);
is($rc, 0, 'DROP EXTENSION retl during a run succeeds') or diag($err);
note(sprintf('DROP EXTENSION took %.1f s', Time::HiRes::time() - $t0));
ok(node_running($node), 'the server keeps running');
ok(wait_for(sub {
		sql($node, "SELECT count(*) FROM pg_stat_activity"
			  . " WHERE backend_type = 'retl worker' AND datname = 'postgres'") == 0
	}, 30, 'the worker to leave'),
	'the worker of the database leaves after DROP EXTENSION');
my $x_events = scalar @{ $recv->all_events(path => '/x') };
$recv->config({ delay_ms => 0 });

sql($node, 'CREATE EXTENSION retl');
create_webhook($node, 'd_y', $recv->url('/y'), batch_size => 100);
create_track_sync($node, 's_y', 'orders_x', 'd_y');
$run = sql($node, "SELECT retl_sync_now('s_y')");
is(wait_run($node, $run, 40), 'succeeded',
	'after CREATE EXTENSION again a sync runs');
is(scalar @{ $recv->all_events(path => '/x') }, $x_events,
	'the run of the dropped extension sends nothing more');
check_ids(event_ids($recv->events(path => '/y')), [ 1 .. 3000 ],
	'... and delivers every row once');

stop_ok($node);

done_testing();
