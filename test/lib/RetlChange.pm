=pod

=head1 NAME

RetlChange - helpers for retl's change-detection TAP tests (test/t/2xx)

=head1 SYNOPSIS

  use RetlTest;
  use RetlChange;

  my ($run, $row) = sync_run($node, 's', 'after the insert');
  only_ids(event_ids($recv->events(run_id => $run)), [1 .. 10], 'no old row');
  my $st = sync_status($node, 's');

=head1 DESCRIPTION

Built on RetlTest.  Nothing here sleeps a fixed time.

=cut

package RetlChange;

use strict;
use warnings;

use Carp;
use Exporter qw(import);
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

our @EXPORT = qw(
  sync_run queue_run create_sync sync_status status_shows
  only_ids no_dups by_key frozen_count xid_epoch bump_xid_epoch
  run_snapshot_xids
);

my $JSON = JSON::PP->new->utf8->canonical;

=pod

=head2 queue_run($node, $sync, %opts)

Queues a run with retl_sync_now (or retl_force_full with C<< full => 1 >>)
and returns its id.

=head2 sync_run($node, $sync, $what, %opts)

Queues a run, waits for it and tests that it succeeded.  In list context
returns (run id, retl.runs row); in scalar context the run id.  Option
C<kind> also tests the kind of the run.

=cut

sub queue_run
{
	my ($node, $sync, %opts) = @_;
	my $fn = $opts{full} ? 'retl_force_full' : 'retl_sync_now';
	return sql($node, "SELECT $fn(" . sql_lit($sync) . ")");
}

sub sync_run
{
	my ($node, $sync, $what, %opts) = @_;
	my $id = queue_run($node, $sync, %opts);
	is(wait_run($node, $id, $opts{timeout}), 'succeeded', "$what: run $id succeeded");
	my $row = run_row($node, $id);
	is($row->{kind}, $opts{kind}, "$what: run is $opts{kind}")
	  if defined $opts{kind};
	return wantarray ? ($id, $row) : $id;
}

=pod

=head2 create_sync($node, %args)

retl_create_sync with named arguments: name, source, destination,
event_type (default 'track'), mapping (hashref), primary_key (default
'id'; undef for none), mode (default 'upsert'), options (hashref).
Returns the sync id.

=cut

sub create_sync
{
	my ($node, %a) = @_;
	my $pk = exists $a{primary_key} ? $a{primary_key} : 'id';
	return sql($node,
		"SELECT retl_create_sync(name => " . sql_lit($a{name})
		  . ", source => " . sql_lit($a{source})
		  . ", destination => " . sql_lit($a{destination})
		  . ", event_type => " . sql_lit($a{event_type} // 'track')
		  . ", mapping => " . sql_lit($JSON->encode($a{mapping})) . "::jsonb"
		  . ", primary_key => " . (defined $pk ? sql_lit($pk) : 'NULL')
		  . ", mode => " . sql_lit($a{mode} // 'upsert')
		  . ", options => " . sql_lit($JSON->encode($a{options} // {})) . "::jsonb)");
}

=pod

=head2 sync_status($node, $sync)

The retl.sync_status row of a sync, as a hashref.

=head2 status_shows($node, $sync, $text, $name)

One test: some column of the sync's retl.sync_status row equals $text.

=cut

sub sync_status
{
	my ($node, $sync) = @_;
	return sql_json($node,
		"SELECT to_jsonb(s) FROM retl.sync_status s WHERE s.sync = " . sql_lit($sync));
}

sub status_shows
{
	my ($node, $sync, $text, $name) = @_;
	my $st = sync_status($node, $sync) // {};
	my @cols = grep { defined $st->{$_} && !ref $st->{$_} && $st->{$_} eq $text }
	  sort keys %$st;
	my $ok = ok(defined $text && @cols > 0, $name);
	diag("retl.sync_status of $sync: " . $JSON->encode($st)
		  . "\nno column equals: " . ($text // 'undef'))
	  unless $ok;
	return $ok;
}

=pod

=head2 only_ids(\@got, \@allowed, $name)

One test: every id received is one of @allowed (nothing unrelated was
sent; duplicates and missing ids are not checked).

=head2 no_dups(\@got, $name)

One test: no id occurs twice.

=cut

sub only_ids
{
	my ($got, $allowed, $name) = @_;
	my %ok = map { $_ => 1 } @$allowed;
	my @extra = grep { !$ok{ $_ // 'undef' } } @$got;
	my $res = ok(!@extra, $name);
	unless ($res)
	{
		my %u;
		my @u = grep { !$u{$_}++ } map { $_ // 'undef' } @extra;
		diag(scalar(@u) . ' unexpected ids: '
			  . join(', ', @u[ 0 .. ($#u < 19 ? $#u : 19) ]));
	}
	return $res;
}

sub no_dups
{
	my ($got, $name) = @_;
	my %c;
	$c{ $_ // 'undef' }++ for @$got;
	my @d = sort grep { $c{$_} > 1 } keys %c;
	my $res = ok(!@d, $name);
	diag('duplicated: ' . join(', ', @d[ 0 .. ($#d < 19 ? $#d : 19) ])) unless $res;
	return $res;
}

=pod

=head2 by_key($events, @path)

A hashref from the value at @path (default properties.id, or traits.id)
to the last event carrying it.

=cut

sub by_key
{
	my ($events, @path) = @_;
	my %h;
	for my $e (@$events)
	{
		my $k = @path ? dig($e, @path)
		  : (dig($e, 'properties', 'id') // dig($e, 'traits', 'id'));
		$h{ $k // 'undef' } = $e;
	}
	return \%h;
}

=pod

=head2 frozen_count($node, $table, $where)

How many live tuples of $table (optionally those matching $where, an SQL
condition on the table's columns, qualified with alias t: C<t.id E<gt> 5>) have HEAP_XMIN_FROZEN set on disk, read
with pageinspect (created on first use).

=cut

sub frozen_count
{
	my ($node, $table, $where) = @_;
	$where //= 'true';
	sql($node, 'CREATE EXTENSION IF NOT EXISTS pageinspect');
	return sql($node, qq{
SELECT count(*)
  FROM generate_series(0, pg_relation_size('$table') / current_setting('block_size')::int - 1) b,
	   heap_page_items(get_raw_page('$table', b::int)) i,
	   $table t
 WHERE t.ctid = format('(%s,%s)', b, i.lp)::tid
   AND ($where) AND (i.t_infomask & 768) = 768});    # HEAP_XMIN_FROZEN
}

=pod

=head2 xid_epoch($node)

The epoch of the next transaction id (consumes no xid).

=head2 bump_xid_epoch($node)

Stops the node, adds one to its xid epoch with C<pg_resetwal -e> (2^32
transaction ids pass at once; no clog is needed because the 32-bit xids do
not change) and starts it again.  Returns the new epoch.

=cut

sub xid_epoch
{
	my ($node) = @_;
	return sql($node,
		"SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint >> 32");
}

sub bump_xid_epoch
{
	my ($node) = @_;
	my $epoch = xid_epoch($node);
	$node->stop('fast');
	PostgreSQL::Test::Utils::system_or_bail('pg_resetwal', '-e', $epoch + 1,
		$node->data_dir);
	$node->start;
	return xid_epoch($node);
}

=pod

=head2 run_snapshot_xids($node, $run_id)

The in-progress xids (xip and subxip) recorded in a run's snapshot, as an
arrayref of 64-bit xids, from retl.snapshot_text (xmin:xmax:xids).

=cut

sub run_snapshot_xids
{
	my ($node, $run) = @_;
	my $t = sql($node,
		"SELECT retl.snapshot_text(snapshot) FROM retl.runs WHERE id = $run");
	my (undef, undef, $xip) = split /:/, ($t // ''), 3;
	return [ grep { length } split /,/, ($xip // '') ];
}

1;
