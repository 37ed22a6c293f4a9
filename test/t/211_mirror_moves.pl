# A mirror sync must never send a deletion for a key that is alive.  A
# forced full run of a plain table reads it by ranges of blocks, each page
# with a fresh snapshot; while the run is in the later blocks, one non-HOT
# UPDATE moves 1,000 rows that it has not read yet into free space of the
# blocks it has already read.  The run never meets those keys: it must not
# take them for deleted (today's main sends 1,000 deletion events for
# live keys, issue #11).  Real deletes during the same run are reported
# exactly once, by that run or the next (see below what is exact).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;
use RetlRead;

my $N = 20000;
my @MOVED = (15001 .. 16000);    # updated while the run reads blocks before them

my $node = retl_node('mirrormoves');
my $recv = start_receiver();

# About 60 rows a block, 330 blocks.  Two thirds of the rows of ids up to
# 3,000 (the first 50 blocks) are deleted and VACUUM records the free
# space, so that new row versions go there.  Autovacuum stays off: nothing
# but the test moves rows.  tag is indexed: updating it is never HOT.
sql($node, qq{
CREATE TABLE users (id int PRIMARY KEY, user_id text NOT NULL, email text,
					plan text, tag int NOT NULL, pad text)
  WITH (autovacuum_enabled = off);
CREATE INDEX users_tag ON users (tag);
INSERT INTO users SELECT g, 'u-' || g, 'u' || g || '\@example.com', 'free', 0, repeat('x', 60)
  FROM generate_series(1, $N) g;
DELETE FROM users WHERE id <= 3000 AND id % 3 <> 0;
VACUUM users;
});
my @live0 = grep { $_ > 3000 || $_ % 3 == 0 } 1 .. $N;
note('users: ' . sql($node, "SELECT pg_relation_size('users') / 8192") . ' blocks');

create_webhook($node, 'd', $recv->url('/hook'), batch_size => 50, max_in_flight => 2);
create_sync($node, name => 'm', source => 'users', destination => 'd',
	event_type => 'identify', mode => 'mirror', options => { unmapped => 'drop' },
	mapping => { 'userId' => 'user_id', 'traits.email' => 'email',
		'traits.plan' => 'plan', 'traits.tag' => 'tag', 'traits.id' => 'id' });

my @PATHS = qw(userId context.retl.deleted traits.tag);
# The events of a run as [key, deleted ('true' or undef), tag]; the key is
# read from the userId ('u-<id>'), which deletion events carry too.
sub events_of
{
	my (%f) = @_;
	return [ map { [ ($_->[0] // '') =~ /^u-(\d+)$/ ? $1 : $_->[0], @$_[ 1, 2 ] ] }
		  @{ event_rows($recv, \@PATHS, %f) } ];
}

# A sorted list of the distinct keys of a list; and the duplicated ones.
sub keys_of { my %k = map { $_ => 1 } @{ $_[0] }; return [ sort { $a <=> $b } keys %k ]; }
sub dups_of { my %c; $c{$_}++ for @{ $_[0] }; return [ sort { $a <=> $b } grep { $c{$_} > 1 } keys %c ]; }

my ($run1) = sync_run($node, 'm', 'first run', kind => 'full');
check_ids(event_ids_of(events_of(run_id => $run1)), \@live0, 'first run sent every live row once');

# ---------------------------------------------------------------------
# The forced full run, on a slow receiver (about 1,000 events/s).
# ---------------------------------------------------------------------
$recv->config({ delay_ms => 100 });
my $base = $recv->stats->{events};
my $run2 = queue_run($node, 'm', full => 1);
wait_more_events($recv, $base, 4000, 120, 'the forced run to deliver 4,000 events');

my %acked = map { $_->[0] => 1 } @{ events_of(run_id => $run2) };
my $passed = (sort { $b <=> $a } keys %acked)[0];
my $passed_block = sql($node, "SELECT (ctid::text::point)[0]::int FROM users WHERE id = $passed");
note("the forced run has delivered up to id $passed, in block $passed_block");

# Real deletes: 20 keys the run has read already, 20 it has not.
my @D_READ = map { 4000 + 50 * $_ } 1 .. 20;        # 4050 .. 5000
my @D_UNREAD = map { 17000 + 50 * $_ } 1 .. 20;     # 17050 .. 18000
is(scalar(grep { $acked{$_} } @D_READ), 20, 'the keys of D_read were delivered by the run before they were deleted');
sql($node, 'BEGIN;
UPDATE users SET tag = tag + 1 WHERE id BETWEEN ' . $MOVED[0] . ' AND ' . $MOVED[-1] . ';
DELETE FROM users WHERE id IN (' . join(',', @D_READ, @D_UNREAD) . ');
COMMIT;');
my $after = (sort { $b <=> $a } map { $_->[0] } @{ events_of(run_id => $run2) })[0];
cmp_ok($after, '<', $MOVED[0] - 1000,
	"the run had not reached the updated rows when they moved (delivered up to id $after)");
is(sql($node, "SELECT count(*) FROM users WHERE id BETWEEN $MOVED[0] AND $MOVED[-1] "
	  . "AND (ctid::text::point)[0] < $passed_block"), scalar @MOVED,
	"the 1,000 new row versions are in blocks the run had already read (before block $passed_block)");
is(run_row($node, $run2)->{status}, 'running', 'the forced run is still running');

$recv->config({ delay_ms => 0 });
is(wait_run($node, $run2, 180), 'succeeded', "the forced run $run2 succeeded");
my $r2 = run_row($node, $run2);
is($r2->{kind}, 'full', 'it is full');
my $ev2 = events_of(run_id => $run2);
my %live = map { $_ => 1 } split /\n/, sql($node, 'SELECT id FROM users');
my ($del2) = split_deleted($ev2, 0, 1);

# What is exact.  The run reads each block range with a fresh snapshot:
# - D_unread were deleted before the run reached their blocks: it never
#   sees them and must send their deletions now, each once;
# - D_read were deleted after the run had read them alive (and sent them):
#   this run may send their deletion only if it checks again at the end,
#   at most once; whatever it does not send, the next run must;
# - the moved rows are alive: no run may send a deletion for them.
# So this run's deletions lie between D_unread and D_unread + D_read, and
# the two runs together send exactly one deletion per key of D_read and
# D_unread.
my @wrong2 = grep { $live{$_} } @$del2;
ok(!@wrong2, 'the forced run sent no deletion for a key that is alive')
  or diag(scalar(@wrong2) . ' deletions of live keys ('
	  . scalar(grep { $_ >= $MOVED[0] && $_ <= $MOVED[-1] } @wrong2)
	  . ' of the moved rows): ' . join(', ', @{ keys_of(\@wrong2) }[ 0 .. 9 ]));
my %del2 = map { $_ => 1 } @$del2;
is(scalar(grep { $del2{$_} } @D_UNREAD), 20,
	'it sent the deletion of every key deleted before it read its block (D_unread)');
my %real = map { $_ => 1 } @D_READ, @D_UNREAD;
is(scalar(grep { !$real{$_} } @$del2), 0, 'its deletions are all keys really deleted');
is_deeply(dups_of($del2), [], 'it sent each deletion once');
is($r2->{rows_deleted}, scalar @$del2,
	"rows_deleted = its deletion events (" . scalar(@$del2) . ')');
my @old_tag = grep { $_->[0] >= $MOVED[0] && $_->[0] <= $MOVED[-1] && !defined $_->[1]
	  && ($_->[2] // '') eq '0' } @$ev2;
is(scalar @old_tag, 0, 'it never sent a moved row in its version from before the UPDATE');

# ---------------------------------------------------------------------
# The next run sends the deletions the forced run could not know.
# ---------------------------------------------------------------------
my ($run3, $r3) = sync_run($node, 'm', 'the run after the forced run', kind => 'incremental');
my ($del3) = split_deleted(events_of(run_id => $run3), 0, 1);
my @wrong3 = grep { $live{$_} } @$del3;
ok(!@wrong3, 'the next run sent no deletion for a key that is alive')
  or diag(scalar(@wrong3) . ' deletions of live keys');
is_deeply(keys_of([ @$del2, @$del3 ]), [ sort { $a <=> $b } @D_READ, @D_UNREAD ],
	'the two runs sent the deletion of exactly the 40 keys deleted');
is(scalar(@$del2) + scalar(@$del3), 40, '... 40 deletion events, one per key');
is($r3->{rows_deleted}, scalar @$del3, "rows_deleted of the next run = its deletion events");

# The destination ends with every live key, in its last version.
my %last;
$last{ $_->[0] } = $_ for @{ events_of(sync => 'm') };
my $tags = id_map($node, 'SELECT id, tag FROM users');
my @stale = grep { !$last{$_} || defined $last{$_}[1] || ($last{$_}[2] // '') ne $tags->{$_} }
  sort { $a <=> $b } keys %$tags;
ok(!@stale, 'the last event of every live key is an upsert of its final version')
  or diag(scalar(@stale) . ' keys: ' . join(', ', @stale[ 0 .. ($#stale < 9 ? $#stale : 9) ]));

my ($run4, $r4) = sync_run($node, 'm', 'a run with no change');
is($r4->{events_sent} . ' ' . $r4->{rows_deleted}, '0 0', 'it sends and deletes nothing');

stop_ok($node);

done_testing();
