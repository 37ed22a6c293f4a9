# A full sync of 10,000 rows: every row arrives exactly once, with the
# mapped fields, and the run row counts them.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $N = 10_000;

my $node = retl_node('full');
my $recv = start_receiver();

create_orders($node, 'orders', $N);
create_webhook($node, 'd', $recv->url('/hook'),
	batch_size => 100, max_in_flight => 4);
create_track_sync($node, 's', 'orders', 'd');

is(sql($node, "SELECT next_run_kind FROM retl.sync_status WHERE sync = 's'"),
	'full', 'a new sync runs full first');

# Two calls in one transaction: the second finds the first's queued run.
my ($run, $again) = split /\|/,
  sql($node, "SELECT retl_sync_now('s'), retl_sync_now('s')");
like($run, qr/^\d+$/, 'retl_sync_now returns a run id');
is($again, $run, 'a second retl_sync_now returns the run already queued');

is(wait_run($node, $run), 'succeeded', 'the full run succeeded');

my $r = run_row($node, $run);
is($r->{kind}, 'full', 'run kind is full');
is($r->{sync_name}, 's', 'run sync_name');
is($r->{rows_read}, $N, "rows_read = $N");
is($r->{events_sent}, $N, "events_sent = $N");
is($r->{events_succeeded}, $N, "events_succeeded = $N");
is($r->{events_failed}, 0, 'events_failed = 0');
ok(defined $r->{started_at} && defined $r->{finished_at},
	'started_at and finished_at are set');
ok(!defined $r->{error}, 'no error') or diag("error: $r->{error}");

my $events = $recv->events;
is(scalar @$events, $N, "the receiver got $N events");
check_ids(event_ids($events), [ 1 .. $N ],
	'every row arrived exactly once (properties.id)');

# Every event carries the mapped and generated fields.
my $iso_ms = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
my (@bad, %message_ids);
for my $e (@$events)
{
	my $p = ref $e->{properties} eq 'HASH' ? $e->{properties} : {};
	my $id = $p->{id} // 'undef';
	my $x = $id =~ /^\d+$/ ? expected_order($id) : {};
	my @why;
	push @why, 'type' unless ($e->{type} // '') eq 'track';
	push @why, 'event' unless ($e->{event} // '') eq 'Order Completed';
	push @why, 'userId'
	  unless defined $x->{user_id} && ($e->{userId} // '') eq $x->{user_id};
	push @why, 'properties.amount'
	  unless defined $p->{amount} && defined $x->{amount}
	  && $p->{amount} =~ /^-?[\d.]+(?:[eE][-+]?\d+)?$/
	  && abs($p->{amount} - $x->{amount}) < 1e-9;
	push @why, 'properties.status (unmapped column)'
	  unless ($p->{status} // '') eq ($x->{status} // '-');
	push @why, 'properties.created_at (timestamptz as ISO UTC ms Z)'
	  unless ($p->{created_at} // '') eq ($x->{created_at} // '-');
	push @why, 'properties.version' unless ($p->{version} // '') eq '1';
	push @why, 'mapped column user_id also under properties'
	  if exists $p->{user_id};
	push @why, 'context.library.name'
	  unless (dig($e, qw(context library name)) // '') eq 'retl';
	push @why, 'context.library.version'
	  unless defined dig($e, qw(context library version));
	push @why, 'context.sources.job_run_id'
	  unless (dig($e, qw(context sources job_run_id)) // '') eq $run;
	push @why, 'context.sources.sync'
	  unless (dig($e, qw(context sources sync)) // '') eq 's';
	push @why, 'messageId'
	  unless defined $e->{messageId} && !ref $e->{messageId}
	  && length $e->{messageId};
	for my $f (qw(timestamp originalTimestamp sentAt))
	{
		push @why, $f unless ($e->{$f} // '') =~ $iso_ms;
	}
	push @why, 'timestamp = originalTimestamp when not mapped'
	  unless ($e->{timestamp} // '') eq ($e->{originalTimestamp} // '-');
	$message_ids{ $e->{messageId} }++ if defined $e->{messageId};
	push @bad, "id $id: " . join(', ', @why) if @why;
}
ok(!@bad, 'every event has the mapped and generated fields')
  or diag(join("\n", @bad[ 0 .. ($#bad < 9 ? $#bad : 9) ])
	  . "\nfirst event: " . JSON::PP->new->canonical->encode($events->[0]));
is(scalar(keys %message_ids), $N, 'messageIds are distinct across rows');

# The transport: JSON arrays of at most batch_size events, POSTed.
my $reqs = $recv->requests;
my @bad_reqs = grep {
	     $_->{method} ne 'POST'
	  || $_->{path} ne '/hook'
	  || ($_->{headers}{'content-type'} // '') !~ m{^application/json}
	  || $_->{events} > 100
	  || $_->{body} !~ /^\s*\[/
} @$reqs;
ok(!@bad_reqs, 'every request is a POST of a JSON array of <= 100 events')
  or diag(JSON::PP->new->canonical->encode($bad_reqs[0]));
cmp_ok(scalar @$reqs, '>=', $N / 100, 'at least N / batch_size requests');
like($reqs->[0]{body}, qr/"amount":\s*\d/, 'numbers are sent as JSON numbers');

my $st = sql_json($node,
	"SELECT to_jsonb(s) FROM retl.sync_status s WHERE sync = 's'");
is($st->{last_run_id}, $run, 'sync_status shows the last run');
is($st->{last_run_status}, 'succeeded', 'sync_status shows its status');
is($st->{next_run_kind}, 'incremental', 'the next run is incremental');
ok(defined $st->{cursor_position}, 'sync_status shows a cursor position');

stop_ok($node);

done_testing();
