
=pod

=head1 NAME

RetlRead - helpers for the TAP tests of how retl reads its sources
(test/t/209..212: owner isolation, resumes, mirror moves, diff at scale)

=head1 SYNOPSIS

  use RetlTest;
  use RetlRead;

  my $rows = event_rows($recv, [qw(properties.id messageId)], run_id => $run);
  my $live = id_map($node, 'SELECT id, version FROM t');
  my @pick = spread(500, @ids);
  receiver_quiet($recv);        # no delivery is waiting for its answer
  kill_worker($node, 'label');  # kill -9 of the retl worker, wait for the restart

=head1 DESCRIPTION

Built on RetlTest and RetlFaults.  Nothing here sleeps a fixed time.

=cut

package RetlRead;

use strict;
use warnings;

use Carp;
use Exporter qw(import);
use Test::More;
use Time::HiRes ();
use RetlTest;
use RetlFaults;

our @EXPORT = qw(
  event_rows event_ids_of id_map spread receiver_quiet wait_more_events
  kill_worker as_role read_method_is split_deleted
);

my $PYTHON = '/usr/bin/python3';

# Fetches the receiver's events and prints one line per event: the values
# at the given dotted paths, tab-separated, \N for a missing value, JSON for
# a value that is not a plain string or number.  Python's C JSON decoder
# reads 100,000 events in a second; JSON::PP takes about fifteen.
my $SUMMARIZE = <<'PY';
import json, sys, urllib.request
url = sys.argv[1]
paths = [p.split('.') for p in sys.argv[2:]]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(url, timeout=600) as r:
    events = json.load(r)
out = []
for e in events:
    row = []
    for p in paths:
        v = e
        for k in p:
            v = v.get(k) if isinstance(v, dict) else None
        if v is None:
            row.append('\\N')
        elif isinstance(v, bool):
            row.append('true' if v else 'false')
        elif isinstance(v, (int, float)):
            row.append(repr(v))
        elif isinstance(v, str) and not any(c in v for c in '\t\n\\'):
            row.append(v)
        else:
            row.append(json.dumps(v))
    out.append('\t'.join(row))
sys.stdout.write('\n'.join(out) + ('\n' if out else ''))
PY

=pod

=head2 event_rows($recv, \@paths, %filter)

The events the receiver acknowledged (2xx; C<< all => 1 >>: every event
received), filtered as C<< $recv->events >> is (path, run_id, sync), as an
arrayref of arrayrefs: for each event, in arrival order, the values at the
dotted @paths (C<properties.id>, C<context.retl.deleted>, C<messageId>);
undef where an event has no such value; booleans as 'true' / 'false'.
Decoded by Python, so that 100,000 events take a second.

=head2 event_ids_of($rows, $col)

The column $col (default 0) of event_rows' rows, as an arrayref.

=cut

sub event_rows
{
	my ($recv, $paths, %f) = @_;
	my $all = delete $f{all};
	my $url = $recv->url(($all ? '/_all_events' : '/_events')
		  . RetlTest::Receiver::_query(%f));
	open(my $fh, '-|', $PYTHON, '-c', $SUMMARIZE, $url, @$paths)
	  or croak "cannot run $PYTHON: $!";
	my @rows;
	while (my $line = <$fh>)
	{
		chomp $line;
		push @rows, [ map { $_ eq '\\N' ? undef : $_ } split /\t/, $line, -1 ];
	}
	close($fh) or croak "summarizing the events of $url failed ($?)";
	return \@rows;
}

sub event_ids_of
{
	my ($rows, $col) = @_;
	$col //= 0;
	return [ map { $_->[$col] } @$rows ];
}

=pod

=head2 split_deleted($rows, $key_col, $deleted_col)

Splits event_rows' rows into (deletion events, other events): a row is a
deletion when its column $deleted_col is 'true'.  Returns two arrayrefs of
the column $key_col.

=cut

sub split_deleted
{
	my ($rows, $key_col, $del_col) = @_;
	my (@del, @other);
	for my $r (@$rows)
	{
		if (($r->[$del_col] // '') eq 'true') { push @del, $r->[$key_col]; }
		else { push @other, $r->[$key_col]; }
	}
	return (\@del, \@other);
}

=pod

=head2 id_map($node, $query)

Runs a query of two columns in database postgres and returns a hashref
from the first to the second.

=cut

sub id_map
{
	my ($node, $query) = @_;
	my %m;
	for my $line (split /\n/, sql($node, $query))
	{
		my ($k, $v) = split /\|/, $line, 2;
		$m{$k} = $v;
	}
	return \%m;
}

=pod

=head2 spread($n, @values)

$n of @values (sorted numerically first), evenly spread over the list:
the first, then one every len/n.  All of them when there are no more
than $n.

=cut

sub spread
{
	my ($n, @v) = @_;
	@v = sort { $a <=> $b } @v;
	return @v if @v <= $n;
	my $step = @v / $n;
	return map { $v[ int($_ * $step) ] } 0 .. $n - 1;
}

=pod

=head2 receiver_quiet($recv, $timeout_s)

Waits until the receiver has answered every delivery it recorded (one
/_stats, read under its lock, where requests = answers).  Once it returns,
every request that arrived before the call has been answered: a fault
configured before the call then applies to every later answer.

=head2 wait_more_events($recv, $base, $n, $timeout_s, $what)

Waits until the receiver has acknowledged $n events more than $base (a
count of C<< $recv->stats->{events} >> taken before); returns how many
more.

=cut

sub receiver_quiet
{
	my ($recv, $timeout) = @_;
	return wait_for(
		sub {
			my $s = $recv->stats;
			my $answered = 0;
			$answered += $_ for values %{ $s->{answered} };
			return $answered == $s->{requests};
		},
		$timeout // 60,
		'every delivery at the receiver to be answered');
}

sub wait_more_events
{
	my ($recv, $base, $n, $timeout, $what) = @_;
	return wait_for(
		sub {
			my $more = $recv->stats->{events} - $base;
			return $more >= $n ? $more : 0;
		},
		$timeout,
		$what // "$n more events at the receiver");
}

=pod

=head2 kill_worker($node, $label)

Kills the node's one retl worker with SIGKILL (the node needs
C<restart_after_crash = on>), waits until the postmaster has noticed and
the server accepts connections again.  Three tests: one worker was
running, it was killed with signal 9, the server came back.  Returns the
pid killed.

=cut

sub kill_worker
{
	my ($node, $label) = @_;
	my @pids = worker_pids($node);
	is(scalar @pids, 1, "$label: one retl worker is running");
	my $offset = -s $node->logfile;
	kill 'KILL', $pids[0];
	wait_for(sub { $node->log_contains(qr/terminated by signal 9/, $offset) },
		120, "$label: the postmaster to notice the killed worker");
	ok($node->log_contains(qr/\(PID $pids[0]\) was terminated by signal 9/, $offset),
		"$label: the worker (pid $pids[0]) was killed with signal 9");
	wait_server_up($node, 180, "$label: the server to restart after the crash");
	return $pids[0];
}

=pod

=head2 as_role($node, $role, $sql, $name)

One test: $sql run as $role (psql_as) succeeds.  Returns its output.

=cut

sub as_role
{
	my ($node, $role, $query, $name) = @_;
	my ($rc, $out, $err) = psql_as($node, $role, $query);
	is($rc, 0, $name) or diag($err);
	return $out;
}

=pod

=head2 read_method_is($node, $sync, $want, $name)

One test: retl.sync_status.read_method of the sync is $want ('blocks',
'keys' or 'materialized').  The column comes with the rewrite of the
readers (issue #11); before it the test fails on a NULL, never with an
error, so the assertions of a test never depend on it.

=cut

sub read_method_is
{
	my ($node, $sync, $want, $name) = @_;
	my $got = sql($node,
		"SELECT to_jsonb(s)->>'read_method' FROM retl.sync_status s WHERE s.sync = "
		  . sql_lit($sync));
	return is($got eq '' ? undef : $got, $want, $name);
}

1;
