
=pod

=head1 NAME

RetlSink - a fast counting sink (test/lib/countsink.py) for the tests of
crash re-sends and failed runs at high throughput

=head1 SYNOPSIS

  use RetlSink;
  my $sink = start_sink();
  $sink->config({ delays_ms => [200, 3000] });   # or { down => 1 }
  my $s = $sink->stats($run);   # {events, distinct, duplicates, ...}

=cut

package RetlSink;

use strict;
use warnings;

use Cwd qw(abs_path);
use Exporter qw(import);
use File::Basename qw(dirname);
use HTTP::Tiny;
use JSON::PP;
use RetlTest;

our @EXPORT = qw(start_sink);

my $SCRIPT = abs_path(dirname(__FILE__) . '/countsink.py');
my $J = JSON::PP->new->utf8->canonical;

=pod

=head2 start_sink()

Starts the sink; returns an object with url($path), stats($run_id),
config(\%cfg), reset() and wait_events($n, $timeout, $what, $run_id).

=cut

sub start_sink
{
	my $self = RetlTest::spawn_server('sink', '/usr/bin/python3', $SCRIPT);
	$self->{http} = HTTP::Tiny->new(timeout => 60, keep_alive => 1);
	return bless $self, 'RetlSink::Sink';
}

package RetlSink::Sink;

use strict;
use warnings;
use Carp;

sub url { return $_[0]->{url} . ($_[1] // ''); }

sub _call
{
	my ($self, $method, $path, $body) = @_;
	my $res = $self->{http}->request($method, $self->{url} . $path,
		{ headers => { 'Content-Type' => 'application/json' },
		  content => $J->encode($body // {}) });
	croak "$method $path: $res->{status} $res->{content}" unless $res->{success};
	return $J->decode($res->{content});
}

sub stats
{
	my ($self, $run) = @_;
	return $self->_call('GET', '/_stats' . (defined $run ? "?run_id=$run" : ''));
}
sub ids { return $_[0]->_call('GET', '/_ids'); }
sub config { return $_[0]->_call('POST', '/_config', $_[1]); }
sub reset { return $_[0]->_call('POST', '/_reset', {}); }

sub wait_events
{
	my ($self, $n, $timeout, $what, $run) = @_;
	return RetlTest::wait_for(
		sub { my $c = $self->stats($run)->{events}; $c >= $n ? ($c || '0E0') : 0 },
		$timeout, $what // "$n events at the sink");
}

1;
