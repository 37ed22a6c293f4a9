# messageIds name row versions, not contents (issue 14, item 6).  A row
# whose content goes A -> B -> A gets three ids: destinations that
# deduplicate on the id (Segment, Amplitude insert_id, Mixpanel
# $insert_id, Iterable id) would otherwise drop the last A and keep B.
# The same version keeps its id: a forced full run re-sends each row with
# the id it had, and rows that never changed keep their first id.
#
# On every source shape: a table, a partitioned table and a materialized
# view (xmin syncs: the row's xmin is mixed in), a view with an
# xmin_column (xmin), and a view with a key (content diff: the
# fingerprint the destination had before is mixed in).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;
use RetlRead;

my $node = retl_node('versionids');
my $recv = start_receiver();

sql($node, q{
CREATE TABLE plain (id int PRIMARY KEY, user_id text NOT NULL, plan text);
CREATE TABLE parted (id int, user_id text NOT NULL, plan text, PRIMARY KEY (id))
  PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (1) TO (3);
CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (3) TO (100);
CREATE TABLE base (id int PRIMARY KEY, user_id text NOT NULL, plan text);
CREATE MATERIALIZED VIEW mat AS SELECT id, user_id, plan FROM base;
CREATE UNIQUE INDEX ON mat (id);
CREATE VIEW xview AS SELECT b.xmin AS _retl_xmin, b.id, b.user_id, b.plan FROM base b;
CREATE TABLE teams (id int PRIMARY KEY, name text);
INSERT INTO teams VALUES (1, 'red');
CREATE VIEW kview AS SELECT b.id, b.user_id, b.plan, t.name AS team
  FROM base b JOIN teams t ON t.id = 1;
});
for my $t (qw(plain parted base))
{
	sql($node, "INSERT INTO $t SELECT g, 'u-' || g, 'A' FROM generate_series(1, 4) g");
}
sql($node, 'REFRESH MATERIALIZED VIEW mat');
create_webhook($node, 'd', $recv->url('/hook'), batch_size => 10);

my %shape = (
	plain => { source => 'plain', table => 'plain', detector => 'xmin' },
	parted => { source => 'parted', table => 'parted', detector => 'xmin' },
	mat => { source => 'mat', table => 'base', detector => 'xmin', refresh => 1 },
	xview => { source => 'xview', table => 'base', detector => 'xmin',
		options => { xmin_column => '_retl_xmin' } },
	kview => { source => 'kview', table => 'base', detector => 'diff' },
);
for my $name (sort keys %shape)
{
	my $s = $shape{$name};
	create_sync($node, name => $name, source => $s->{source}, destination => 'd',
		event_type => 'identify', options => $s->{options} // {},
		mapping => { 'userId' => 'user_id', 'traits.plan' => 'plan' });
	is(sync_status($node, $name)->{detector}, $s->{detector},
		"$name uses the $s->{detector} detector");
}

# Runs a sync and returns {user id => messageId} of what it sent.
sub ids_of_run
{
	my ($name, $what, %opts) = @_;
	$recv->reset;
	my ($run) = sync_run($node, $name, "$name: $what", %opts);
	my %ids = map { $_->{userId} => $_->{messageId} } @{ $recv->events(run_id => $run) };
	return \%ids;
}

# Sets row 1 of the shape's table to a plan (and refreshes a matview).
sub set_plan
{
	my ($s, $plan) = @_;
	sql($node, "UPDATE $s->{table} SET plan = '$plan' WHERE id = 1");
	sql($node, "REFRESH MATERIALIZED VIEW CONCURRENTLY mat") if $s->{refresh};
}

for my $name (sort keys %shape)
{
	my $s = $shape{$name};
	my $first = ids_of_run($name, 'first run', kind => 'full');
	is(scalar keys %$first, 4, "$name: the first run sends the 4 rows");
	set_plan($s, 'B');
	my $b = ids_of_run($name, 'A -> B', kind => 'incremental');
	is_deeply([ keys %$b ], ['u-1'], "$name: A -> B sends row 1 only");
	set_plan($s, 'A');
	my $a2 = ids_of_run($name, 'B -> A', kind => 'incremental');
	is_deeply([ keys %$a2 ], ['u-1'], "$name: B -> A sends row 1 only");

	isnt($b->{'u-1'}, $first->{'u-1'}, "$name: B has an id of its own");
	isnt($a2->{'u-1'}, $first->{'u-1'},
		"$name: A again gets a new id, not the first A's (a deduplicating destination keeps it)");
	isnt($a2->{'u-1'}, $b->{'u-1'}, "$name: ... nor B's");

	my $full = ids_of_run($name, 'forced full', full => 1, kind => 'full');
	is($full->{'u-1'}, $a2->{'u-1'}, "$name: a forced full run re-sends row 1 with its version's id");
	is_deeply([ map { $full->{"u-$_"} } 2 .. 4 ], [ map { $first->{"u-$_"} } 2 .. 4 ],
		"$name: the rows that never changed keep their first ids");
	my %preview = map { split /\|/ } split /\n/, sql($node,
		"SELECT e->>'userId', e->>'messageId' FROM retl_preview('$name', 10, format => 'standard') e");
	is_deeply(\%preview, $full, "$name: retl_preview shows the ids that are sent");
}

# An owner that is not a superuser previews its diff sync: the preview
# reads the sync's fingerprints (the worker's, which the owner cannot
# read) and shows the ids that were sent.
sql($node, q{
CREATE ROLE pat LOGIN;
GRANT retl_user TO pat;
CREATE SCHEMA p AUTHORIZATION pat;
});
as_role($node, 'pat', qq{
CREATE TABLE p.base (id int PRIMARY KEY, user_id text NOT NULL, plan text);
INSERT INTO p.base SELECT g, 'u-' || g, 'A' FROM generate_series(1, 4) g;
CREATE VIEW p.kv AS SELECT b.id, b.user_id, b.plan, 1 AS one FROM p.base b;
SELECT retl_create_destination('pd', 'webhook', '{"url": "@{[ $recv->url('/pat') ]}"}');
SELECT retl_create_sync('pk', 'p.kv', 'pd', 'identify',
  '{"userId": "user_id", "traits.plan": "plan"}', 'id');
}, 'pat creates a keyed view and its diff sync');
is(sync_status($node, 'pk')->{detector}, 'diff', 'pat\'s view sync uses the diff detector');
ids_of_run('pk', 'first run', kind => 'full');
as_role($node, 'pat', "UPDATE p.base SET plan = 'B' WHERE id = 1", 'pat changes row 1');
my $pb = ids_of_run('pk', 'A -> B', kind => 'incremental');
my $pfull = ids_of_run('pk', 'forced full', full => 1, kind => 'full');
is($pfull->{'u-1'}, $pb->{'u-1'}, 'pk: the forced full run re-sends row 1 with its version\'s id');
my %ppreview = map { split /\|/ } split /\n/, as_role($node, 'pat',
	"SELECT e->>'userId', e->>'messageId' FROM retl_preview('pk', 10, format => 'standard') e",
	'pat previews its sync');
is_deeply(\%ppreview, $pfull, 'pk: pat\'s preview shows the ids that are sent');

done_testing();
