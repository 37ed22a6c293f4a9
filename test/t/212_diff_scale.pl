# The content diff detector at 100,000 rows, on its two kinds of sources:
# a view over a join with a primary key (upsert), and a plain table synced
# in mirror mode.  Four runs each: the first sends every row, an unchanged
# run sends nothing, a run after 1% of the rows changed sends exactly
# those, a run after 1% were deleted sends exactly their deletions (mirror)
# or none (upsert), and counts them.  The receiver's events and the
# counters of retl.runs (rows_read, events_sent, events_succeeded,
# rows_deleted) must be exact.
#
# Why: a diff run over 100,000 rows took minutes (quadratic; on the
# build before the fix the first run had read about 40,000 rows after
# 300 s) and issue #11 reports wrong rows_read counters too.  Each run may
# take 300 s (RETL_DIFF_TIMEOUT) so that a slow run fails here rather than
# the whole test hanging; the fixed code takes 10 to 20 s a run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlChange;
use RetlRead;

my $N = 100_000;
my $TIMEOUT = $ENV{RETL_DIFF_TIMEOUT} // 300;    # seconds per run (more: to see main finish)

my $node = retl_node('diffscale');
my $recv = start_receiver();

sql($node, qq{
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, tier text NOT NULL);
INSERT INTO customers SELECT g, 'customer ' || g, 'basic' FROM generate_series(1, 1000) g;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
					 amount numeric(12,2) NOT NULL, note text);
INSERT INTO orders SELECT g, (g % 1000) + 1, (g % 500) + 0.5, 'n' FROM generate_series(1, $N) g;
CREATE VIEW order_view AS
SELECT o.id, 'user-' || c.id AS user_id, c.name AS customer, c.tier, o.amount, o.note
  FROM orders o JOIN customers c ON c.id = o.customer_id;
CREATE TABLE members (id bigint PRIMARY KEY, user_id text NOT NULL, email text, plan text);
INSERT INTO members SELECT g, 'm-' || g, 'm' || g || '\@example.com', 'free'
  FROM generate_series(1, $N) g;
ANALYZE;
});
create_webhook($node, 'd', $recv->url('/hook'), batch_size => 500, max_in_flight => 4);
create_sync($node, name => 'v', source => 'order_view', destination => 'd',
	mapping => { 'userId' => 'user_id', 'event' => { value => 'Order' },
		'properties.amount' => 'amount' });
create_sync($node, name => 'm', source => 'members', destination => 'd',
	event_type => 'identify', mode => 'mirror',
	mapping => { 'userId' => 'user_id', 'traits.email' => 'email',
		'traits.plan' => 'plan', 'traits.id' => 'id' });
is(sync_status($node, 'v')->{detector}, 'diff', 'the view uses the diff detector');
is(sync_status($node, 'm')->{detector}, 'diff', 'the mirror sync uses the diff detector');

# Runs both syncs at once and waits for them; returns {sync => run row}.
# A run still going after $TIMEOUT s leaves nothing to compare the later
# runs with: the test ends there (after its failed test).
sub run_both
{
	my ($what, $kind) = @_;
	my %id = map { $_ => queue_run($node, $_) } qw(v m);
	my %row;
	for my $s (qw(v m))
	{
		my $status = wait_run($node, $id{$s}, $TIMEOUT);
		is($status, 'succeeded', "$what: run $id{$s} of $s succeeded");
		$row{$s} = run_row($node, $id{$s});
		if ($status !~ /^(succeeded|failed|stopped)$/)
		{
			diag("$what: run $id{$s} of $s did not finish within $TIMEOUT s: "
				  . "rows_read $row{$s}{rows_read}, events_sent $row{$s}{events_sent}; "
				  . 'the later runs are not checked');
			stop_ok($node);
			done_testing();
			exit;
		}
		is($row{$s}{kind}, $kind, "$what: run of $s is $kind");
		note("$what: $s took " . sql($node, "SELECT round(extract(epoch FROM finished_at - started_at), 1) "
			  . "FROM retl.runs WHERE id = $id{$s}") . ' s');
	}
	return \%row;
}

# The counters of a run, compared at once: rows_read events_sent
# events_succeeded events_failed rows_deleted.
sub counters_are
{
	my ($r, $want, $name) = @_;
	my $got = join(' ', map { $r->{$_} // 'NULL' }
		  qw(rows_read events_sent events_succeeded events_failed rows_deleted));
	return is($got, $want, "$name: rows_read events_sent events_succeeded events_failed "
		  . "rows_deleted = $want");
}

# The events of a run as [key, deleted ('true' or undef)]: the key is
# properties.id for the view; the userId's number for the mirror sync
# (deletion events carry the userId, not the traits).
sub events_of
{
	my ($s, $run) = @_;
	if ($s eq 'v')
	{
		return event_rows($recv, [qw(properties.id context.retl.deleted)], run_id => $run);
	}
	return [ map { [ ($_->[0] // '') =~ /^m-(\d+)$/ ? $1 : $_->[0], $_->[1] ] }
		  @{ event_rows($recv, [qw(userId context.retl.deleted)], run_id => $run) } ];
}

my $fingerprints = q{SELECT s.name || ' ' || count(f.pk) FROM retl.syncs s
  LEFT JOIN retl.fingerprints f ON f.sync_id = s.id GROUP BY s.name ORDER BY s.name};

# ---------------------------------------------------------------------
# 1. The first run sends every row.
# ---------------------------------------------------------------------
my $r = run_both('first run', 'full');
for my $s (qw(v m))
{
	check_ids(event_ids_of(events_of($s, $r->{$s}{id})), [ 1 .. $N ],
		"first run: $s sent every row once");
	counters_are($r->{$s}, "$N $N $N 0 0", "first run of $s");
}
is(sql($node, $fingerprints), "m $N\nv $N", 'one fingerprint per key of each sync');

# ---------------------------------------------------------------------
# 2. Nothing changed: nothing is sent, every row is read.
# ---------------------------------------------------------------------
$r = run_both('unchanged run', 'incremental');
for my $s (qw(v m))
{
	is(scalar @{ events_of($s, $r->{$s}{id}) }, 0, "unchanged run: $s sent nothing");
	counters_are($r->{$s}, "$N 0 0 0 0", "unchanged run of $s");
}

# ---------------------------------------------------------------------
# 3. 1% of the rows changed: exactly those are sent.
# ---------------------------------------------------------------------
sql($node, q{
UPDATE orders SET amount = amount + 1000 WHERE id % 100 = 7;
UPDATE members SET plan = 'pro' WHERE id % 100 = 7;
});
my @changed = grep { $_ % 100 == 7 } 1 .. $N;
my $C = scalar @changed;    # 1,000
$r = run_both('run after 1% changed', 'incremental');
for my $s (qw(v m))
{
	check_ids(event_ids_of(events_of($s, $r->{$s}{id})), \@changed,
		"1% changed: $s sent exactly the $C changed rows, once");
	counters_are($r->{$s}, "$N $C $C 0 0", "1% changed, run of $s");
}
my $amounts = event_rows($recv, ['properties.amount'], run_id => $r->{v}{id});
is(scalar(grep { ($_->[0] // 0) >= 1000 } @$amounts), $C, '1% changed: v sent the new amounts');
my $plans = event_rows($recv, ['traits.plan'], run_id => $r->{m}{id});
is(scalar(grep { ($_->[0] // '') eq 'pro' } @$plans), $C, '1% changed: m sent the new plans');

# ---------------------------------------------------------------------
# 4. 1% of the rows deleted: the mirror sync sends exactly their
#    deletions; the view (upsert) sends nothing; both count them.
# ---------------------------------------------------------------------
sql($node, q{
DELETE FROM orders WHERE id % 100 = 42;
DELETE FROM members WHERE id % 100 = 42;
});
my @gone = grep { $_ % 100 == 42 } 1 .. $N;
my $G = scalar @gone;    # 1,000
my $left = $N - $G;
$r = run_both('run after 1% deleted', 'incremental');
is(scalar @{ events_of('v', $r->{v}{id}) }, 0, '1% deleted: v (upsert) sent nothing');
counters_are($r->{v}, "$left 0 0 0 $G", '1% deleted, run of v');
my ($del, $other) = split_deleted(events_of('m', $r->{m}{id}), 0, 1);
check_ids($del, \@gone, '1% deleted: m sent exactly one deletion per deleted key');
is(scalar @$other, 0, '1% deleted: and nothing else');
counters_are($r->{m}, "$left $G $G 0 $G", '1% deleted, run of m');
is(sql($node, $fingerprints), "m $left\nv $left", 'the deleted keys are forgotten');

# ---------------------------------------------------------------------
# 5. And then nothing is left to do.
# ---------------------------------------------------------------------
$r = run_both('run after the deletes', 'incremental');
for my $s (qw(v m))
{
	is(scalar @{ events_of($s, $r->{$s}{id}) }, 0, "run after the deletes: $s sent nothing");
	counters_are($r->{$s}, "$left 0 0 0 0", "run after the deletes, run of $s");
}

stop_ok($node);

done_testing();
