
=pod

=head1 NAME

RetlFaults - extra helpers for retl's fault tests (test/t/10x)

=head1 SYNOPSIS

  use RetlTest;
  use RetlFaults;

  my $fe = failed_events($node, 's');        # rows of retl.failed_events
  my $d = duplicate_stats($recv->events(run_id => $run));
  my @pids = worker_pids($node);
  my $same = requests_with_body($recv->requests, $body);

=cut

package RetlFaults;

use strict;
use warnings;

use Carp;
use Exporter qw(import);
use POSIX ();
use Test::More;
use Time::HiRes ();
use RetlTest;

our @EXPORT = qw(
  failed_events worker_pids duplicate_stats requests_with_body
  http_date wait_server_up count_by wait_receiver_idle
);

=pod

=head2 failed_events($node, $sync)

The rows of retl.failed_events of a sync, oldest first, as an arrayref of
hashrefs (every column).

=cut

sub failed_events
{
	my ($node, $sync) = @_;
	return sql_json($node,
		"SELECT coalesce(jsonb_agg(to_jsonb(f) ORDER BY f.id), '[]') "
		  . "FROM retl.failed_events f JOIN retl.syncs s ON s.id = f.sync_id "
		  . "WHERE s.name = " . sql_lit($sync));
}

=pod

=head2 worker_pids($node)

The pids of the node's retl workers (backend_type 'retl worker').

=cut

sub worker_pids
{
	my ($node) = @_;
	my $out = sql($node,
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'retl worker' "
		  . "ORDER BY pid");
	return grep { /^\d+$/ } split /\n/, ($out // '');
}

=pod

=head2 duplicate_stats($events, $key)

Counts the events of a list by properties.$key (default 'id'):
C<total>, C<distinct>, C<duplicates> (total - distinct), C<dup_ids> (ids
received more than once) and C<mixed> (ids whose copies do not all carry
the same messageId, each with its messageIds).

=cut

sub duplicate_stats
{
	my ($events, $key) = @_;
	$key //= 'id';
	my (%count, %mids);
	for my $e (@$events)
	{
		my $id = RetlTest::dig($e, 'properties', $key)
		  // RetlTest::dig($e, 'traits', $key) // 'undef';
		$count{$id}++;
		$mids{$id}{ $e->{messageId} // 'undef' } = 1;
	}
	my @dup_ids = sort { $a <=> $b } grep { $count{$_} > 1 && /^\d+$/ } keys %count;
	my @mixed = map { "$_: " . join(', ', sort keys %{ $mids{$_} }) }
	  grep { keys %{ $mids{$_} } > 1 } sort keys %mids;
	return {
		total => scalar @$events,
		distinct => scalar(keys %count),
		duplicates => scalar(@$events) - scalar(keys %count),
		dup_ids => \@dup_ids,
		mixed => \@mixed,
	};
}

=pod

=head2 requests_with_body($requests, $body)

The recorded deliveries (from $recv->requests) whose body is exactly
$body, in arrival order.  A retried batch is re-sent with the same body.

=cut

sub requests_with_body
{
	my ($reqs, $body) = @_;
	return [ sort { $a->{seq} <=> $b->{seq} }
		  grep { $_->{body} eq $body } @$reqs ];
}

=pod

=head2 count_by($list, $code)

A hashref: value of $code->($item) => number of items.

=cut

sub count_by
{
	my ($list, $code) = @_;
	my %c;
	$c{ $code->($_) // 'undef' }++ for @$list;
	return \%c;
}

=pod

=head2 http_date($epoch)

An IMF-fixdate (RFC 9110), e.g. "Sun, 06 Nov 1994 08:49:37 GMT".

=cut

sub http_date
{
	my ($t) = @_;
	my @d = qw(Sun Mon Tue Wed Thu Fri Sat);
	my @m = qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec);
	my @g = gmtime($t);
	return sprintf('%s, %02d %s %04d %02d:%02d:%02d GMT',
		$d[ $g[6] ], $g[3], $m[ $g[4] ], $g[5] + 1900, $g[2], $g[1], $g[0]);
}

=pod

=head2 wait_receiver_idle($recv, $timeout_s)

Waits until every delivery the receiver got has been answered (or given
up), so that its counts are final: a request that was in flight when the
worker died is still answered after the receiver's delay.

=cut

sub wait_receiver_idle
{
	my ($recv, $timeout) = @_;
	return RetlTest::wait_for(
		sub {
			return !grep { !defined $_->{status} } @{ $recv->requests };
		},
		$timeout,
		'every delivery at the receiver to be answered');
}

=pod

=head2 wait_server_up($node, $timeout_s, $what)

Polls until the node accepts queries (after a crash restart); returns
true, or fails a test on timeout.

=cut

sub wait_server_up
{
	my ($node, $timeout, $what) = @_;
	return RetlTest::wait_for(
		sub {
			my ($rc, $out) = $node->psql('postgres', 'SELECT 1');
			return $rc == 0 && defined $out && $out eq '1';
		},
		$timeout,
		$what // 'the server to accept connections');
}

1;
