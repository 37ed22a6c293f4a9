# Two syncs of two tables to two destinations run at the same time.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $NA = 3000;
my $NB = 2000;

my $node = retl_node('two');
my $recvA = start_receiver();
my $recvB = start_receiver();

# Slow enough that each run lasts a few seconds: they must overlap.
$recvA->config({ delay_ms => 100 });
$recvB->config({ delay_ms => 100 });

create_orders($node, 'orders', $NA);
sql($node, qq{
CREATE TABLE customers (
	id int PRIMARY KEY,
	email text NOT NULL,
	name text,
	vip boolean NOT NULL
);
INSERT INTO customers
SELECT g, 'c' || g || '\@example.com', 'Customer ' || g, g % 10 = 0
  FROM generate_series(1, $NB) g;});

create_webhook($node, 'da', $recvA->url('/orders'),
	batch_size => 50, max_in_flight => 2);
create_webhook($node, 'db', $recvB->url('/customers'),
	batch_size => 50, max_in_flight => 2);
create_track_sync($node, 'sa', 'orders', 'da');
create_track_sync($node, 'sb', 'customers', 'db',
	event_type => 'identify',
	mapping => { userId => 'email', 'traits.full_name' => 'name' });

my ($runA, $runB) = split /\|/,
  sql($node, "SELECT retl_sync_now('sa'), retl_sync_now('sb')");
isnt($runA, $runB, 'two runs queued');

is(wait_run($node, $runA), 'succeeded', 'run of sync sa succeeded');
is(wait_run($node, $runB), 'succeeded', 'run of sync sb succeeded');

my $rA = run_row($node, $runA);
my $rB = run_row($node, $runB);
is($rA->{events_succeeded}, $NA, "sa: events_succeeded = $NA");
is($rB->{events_succeeded}, $NB, "sb: events_succeeded = $NB");

is(sql($node, "SELECT a.started_at < b.finished_at AND b.started_at < a.finished_at "
	  . "FROM retl.runs a, retl.runs b WHERE a.id = $runA AND b.id = $runB"),
	't', 'the two runs overlapped in time')
  or diag("sa: $rA->{started_at} .. $rA->{finished_at}; "
	  . "sb: $rB->{started_at} .. $rB->{finished_at}");

my $evA = $recvA->events;
my $evB = $recvB->events;
check_ids(event_ids($evA), [ 1 .. $NA ], 'sa: every order arrived once');
check_ids(event_ids($evB, 'id'), [ 1 .. $NB ],
	'sb: every customer arrived once (traits.id)');

my @wrongA = grep {
	     ($_->{type} // '') ne 'track'
	  || (dig($_, qw(context sources sync)) // '') ne 'sa'
	  || (dig($_, qw(context sources job_run_id)) // '') ne $runA
} @$evA;
ok(!@wrongA, 'sa: track events of sync sa, run A');
my @wrongB = grep {
	my $id = dig($_, 'traits', 'id') // 0;
	     ($_->{type} // '') ne 'identify'
	  || ($_->{userId} // '') ne "c$id\@example.com"
	  || (dig($_, 'traits', 'full_name') // '') ne "Customer $id"
	  || exists $_->{event}
	  || (defined dig($_, 'traits', 'vip') && dig($_, 'traits', 'vip') ne ($id % 10 == 0 ? 1 : 0))
	  || !defined dig($_, 'traits', 'vip')
	  || (dig($_, qw(context sources sync)) // '') ne 'sb'
	  || (dig($_, qw(context sources job_run_id)) // '') ne $runB
} @$evB;
ok(!@wrongB, 'sb: identify events with traits, of sync sb, run B')
  or diag(JSON::PP->new->canonical->encode($wrongB[0]));
ok(JSON::PP::is_bool(dig($evB->[0], 'traits', 'vip')),
	'booleans are sent as JSON booleans');

stop_ok($node);

done_testing();
