
=pod

=head1 NAME

RetlVendors - helpers for the destination-kind tests (test/t/30x)

=head1 SYNOPSIS

  use RetlTest;
  use RetlVendors;

  my $v = start_vendors();                  # test/vendors.py
  $v->config({ reject_users => ['user-7'], api_key => 'k' });
  my $recs = $v->records(vendor => 'braze');   # accepted records
  my $reqs = $v->requests(path => '/users/track');

  my $k = start_kinesalite();               # test/kinesalite.js
  $k->create_stream('events', 2);
  my $got = $k->read_stream('events');      # [{PartitionKey, Data, ...}]

  create_dest($node, 'd', 'braze', { url => $v->url, api_key => 'k' });
  my ($run, $status) = run_sync($node, 's');
  sql_fails($node, $sql, '22023', qr/api_key/, 'missing key');
  secret_nowhere($node, 'k', 'the key is never shown');
  my $fe = failed_rows($node, 's');

=head1 DESCRIPTION

The emulators run on 127.0.0.1 with a free port each and are stopped at
the end of the test.  C<sigv4_signature> is an independent AWS Signature
Version 4 signer, used both to sign requests to kinesalite and to verify
the signature retl (libcurl) put on a captured request.

=cut

package RetlVendors;

use strict;
use warnings;

use Carp;
use Cwd qw(abs_path);
use Digest::SHA qw(sha256_hex hmac_sha256 hmac_sha256_hex);
use Exporter qw(import);
use File::Basename qw(dirname);
use HTTP::Tiny;
use JSON::PP;
use MIME::Base64 qw(decode_base64);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();
use RetlTest;
use RetlFaults ();

our @EXPORT = qw(
  start_vendors start_kinesalite create_dest run_sync sql_fails
  secret_nowhere failed_rows sigv4_signature sigv4_check
  json_decode json_encode order_id_of max_of
);

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;
my $PYTHON = '/usr/bin/python3';
my $TESTDIR = abs_path(dirname(__FILE__) . '/..');

sub json_decode { return $JSON->decode($_[0]); }
sub json_encode { return $JSON->encode($_[0]); }

sub max_of
{
	my $m;
	for (@_) { $m = $_ if !defined $m || $_ > $m; }
	return $m // 0;
}

# The order id of a user id 'user-<id>'.
sub order_id_of
{
	my ($user) = @_;
	return defined $user && $user =~ /^user-(\d+)$/ ? $1 : undef;
}

=pod

=head2 start_vendors(%opts)

Starts test/vendors.py; returns a RetlVendors::Server with url($path),
requests(%filter), records(%filter), stats(), config(\%cfg), reset(),
wait_records($n).  Filters of requests: vendor, path (exact); of records:
vendor, kind.  Option verbose => 1 logs every request.

=cut

sub start_vendors
{
	my (%opts) = @_;
	my @cmd = ($PYTHON, "$TESTDIR/vendors.py");
	push @cmd, '--verbose' if $opts{verbose};
	my $server = RetlTest::spawn_server('vendors', @cmd);
	$server->{http} = HTTP::Tiny->new(timeout => 60, keep_alive => 1);
	return bless $server, 'RetlVendors::Server';
}

=pod

=head2 start_kinesalite()

Starts kinesalite (test/node_modules, through test/kinesalite.js) on
127.0.0.1; returns a RetlVendors::Kinesalite with url, call($op, \%body),
create_stream($name, $shards), read_stream($name).  Returns undef (after a
failed test) when kinesalite is not installed: test/check installs it with
npm ci.

=cut

sub start_kinesalite
{
	my $mod = "$TESTDIR/node_modules/kinesalite/package.json";
	unless (-e $mod)
	{
		fail("kinesalite is installed in test/node_modules "
			  . "(npm ci --prefix test, as test/check does)");
		return undef;
	}
	my $server = RetlTest::spawn_server('kinesalite', 'node', "$TESTDIR/kinesalite.js",
		'--createStreamMs', '0');
	$server->{http} = HTTP::Tiny->new(timeout => 60, keep_alive => 1);
	return bless $server, 'RetlVendors::Kinesalite';
}

=pod

=head2 sigv4_signature(%a)

The hex AWS SigV4 signature of a request: method, path, query, headers
(hashref, lowercase names), signed (arrayref of lowercase names), body,
secret, amz_date (YYYYMMDDTHHMMSSZ), region, service.

=head2 sigv4_check($req, %a)

Checks a request captured by vendors.py ({method, path, query, headers,
body}) against the credentials (key_id, secret, region, service): returns
a list of problems, empty when the Authorization header is a well-formed
SigV4 header whose signature is right.

=cut

sub _uri_escape
{
	my ($s) = @_;
	$s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord($1))/ge;
	return $s;
}

sub sigv4_signature
{
	my (%a) = @_;
	my @signed = @{ $a{signed} };
	my $canon_headers = '';
	for my $h (@signed)
	{
		my $v = $a{headers}{$h} // '';
		$v =~ s/^\s+|\s+$//g;
		$v =~ s/\s+/ /g;
		$canon_headers .= "$h:$v\n";
	}
	my @q;
	for my $pair (split /&/, $a{query} // '')
	{
		next if $pair eq '';
		my ($k, $v) = split /=/, $pair, 2;
		push @q, [ _uri_escape($k), _uri_escape($v // '') ];
	}
	my $canon_query = join '&',
	  map { "$_->[0]=$_->[1]" } sort { $a->[0] cmp $b->[0] || $a->[1] cmp $b->[1] } @q;
	my $body = $a{body} // '';
	utf8::encode($body) if utf8::is_utf8($body);
	my $canon = join("\n",
		$a{method}, $a{path}, $canon_query, $canon_headers,
		join(';', @signed), sha256_hex($body));
	my $day = substr($a{amz_date}, 0, 8);
	my $scope = "$day/$a{region}/$a{service}/aws4_request";
	my $sts = join("\n", 'AWS4-HMAC-SHA256', $a{amz_date}, $scope,
		sha256_hex($canon));
	my $k = hmac_sha256($day, "AWS4$a{secret}");
	$k = hmac_sha256($a{region}, $k);
	$k = hmac_sha256($a{service}, $k);
	$k = hmac_sha256('aws4_request', $k);
	return hmac_sha256_hex($sts, $k);
}

sub sigv4_check
{
	my ($req, %a) = @_;
	my @why;
	my $h = $req->{headers} // {};
	my $auth = $h->{authorization} // '';
	my $date = $h->{'x-amz-date'} // '';
	push @why, "x-amz-date '$date' is not YYYYMMDDTHHMMSSZ"
	  unless $date =~ /^\d{8}T\d{6}Z$/;
	my ($key, $day, $region, $service, $signed, $sig) = $auth =~
	  m{^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]+)$};
	unless (defined $sig)
	{
		push @why, "Authorization is not a SigV4 header: '$auth'";
		return @why;
	}
	push @why, "credential key '$key' is not '$a{key_id}'"
	  unless $key eq $a{key_id};
	push @why, "credential date $day is not the x-amz-date's"
	  unless substr($date, 0, 8) eq $day;
	push @why, "credential region '$region' is not '$a{region}'"
	  unless $region eq $a{region};
	push @why, "credential service '$service' is not '$a{service}'"
	  unless $service eq $a{service};
	my @signed = split /;/, $signed;
	for my $need (qw(host x-amz-date))
	{
		push @why, "SignedHeaders '$signed' lacks $need"
		  unless grep { $_ eq $need } @signed;
	}
	push @why, "SignedHeaders '$signed' is not sorted"
	  unless join(';', sort @signed) eq $signed;
	push @why, "Signature is not 64 hex digits" unless length($sig) == 64;
	return @why if @why;
	my $want = sigv4_signature(
		method => $req->{method},
		path => $req->{path},
		query => $req->{query},
		headers => $h,
		signed => \@signed,
		body => $req->{body},
		secret => $a{secret},
		amz_date => $date,
		region => $a{region},
		service => $a{service});
	push @why, "Signature $sig is not the SigV4 signature $want of the request"
	  unless $sig eq $want;
	return @why;
}

=pod

=head2 create_dest($node, $name, $kind, \%config)

retl_create_destination($name, $kind, $config).

=head2 run_sync($node, $sync, $timeout)

Queues a run with retl_sync_now and waits for its end; returns the run id
and its final status (and the run row as a third value).

=head2 failed_rows($node, $sync)

The rows of retl.failed_events of a sync, oldest first (arrayref of
hashrefs).

=cut

sub create_dest
{
	my ($node, $name, $kind, $config) = @_;
	return sql($node,
		"SELECT retl_create_destination(" . sql_lit($name) . ', '
		  . sql_lit($kind) . ', ' . sql_lit($JSON->encode($config)) . '::jsonb)');
}

sub run_sync
{
	my ($node, $sync, $timeout) = @_;
	my $run = sql($node, 'SELECT retl_sync_now(' . sql_lit($sync) . ')');
	my $status = wait_run($node, $run, $timeout);
	return ($run, $status, run_row($node, $run));
}

sub failed_rows
{
	return RetlFaults::failed_events(@_);
}

=pod

=head2 sql_fails($node, $sql, $sqlstate, $message_re, $name)

One test: the SQL fails with that SQLSTATE and a message matching the
pattern.  Returns the error text.

=cut

sub sql_fails
{
	my ($node, $query, $state, $re, $name) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $query,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	$err //= '';
	my ($got_state, $msg) = $err =~ /ERROR:\s+([0-9A-Z]{5}):\s+(.*)/;
	my $ok = ok($rc != 0 && defined $got_state && $got_state eq $state
		  && $msg =~ $re, $name);
	diag("psql exit $rc, stderr: $err") unless $ok;
	return $err;
}

=pod

=head2 secret_nowhere($node, $secret, $name)

One test: the secret appears in no retl.runs.error and in no error,
response body or payload of retl.failed_events, nor in any config shown
through retl._redact.

=cut

sub secret_nowhere
{
	my ($node, $secret, $name) = @_;
	my $lit = sql_lit($secret);
	my $where = sql($node, qq{
SELECT string_agg(w, ', ') FROM (
  SELECT 'retl.runs ' || id AS w FROM retl.runs WHERE strpos(coalesce(error, ''), $lit) > 0
  UNION ALL
  SELECT 'retl.failed_events ' || id FROM retl.failed_events
   WHERE strpos(coalesce(error, '') || coalesce(response_body, '') || payload, $lit) > 0
  UNION ALL
  SELECT 'retl._redact of destination ' || name FROM retl.destinations
   WHERE strpos(retl._redact(config)::text, $lit) > 0
) x});
	return ok($where eq '', $name) || diag("the secret shows in: $where");
}

package RetlVendors::Server;

use strict;
use warnings;
use Carp;

# The control client (url, _get, _post, _query) is the receiver's.
use parent -norequire, 'RetlTest::Receiver';

# Requests to vendor endpoints, whatever the answer; filters: vendor, path.
sub requests
{
	my ($self, %f) = @_;
	my $all = $self->_get('/_requests');
	return [ grep {
		     (!defined $f{vendor} || ($_->{vendor} // '') eq $f{vendor})
		  && (!defined $f{path} || $_->{path} eq $f{path})
	} @$all ];
}

# Records the vendors accepted; filters: vendor, kind.
sub records
{
	my ($self, %f) = @_;
	return $self->_get('/_records' . RetlTest::Receiver::_query(%f));
}

sub stats { return $_[0]->_get('/_stats'); }
sub reset { return $_[0]->_post('/_reset', {}); }
sub config { my ($self, $cfg) = @_; return $self->_post('/_config', $cfg); }

package RetlVendors::Kinesalite;

use strict;
use warnings;
use Carp;
use MIME::Base64 qw(decode_base64);
use POSIX ();

sub url { return $_[0]->{url}; }

# Calls a Kinesis operation, signed with SigV4 (any credentials do:
# kinesalite checks the header's form, not the signature).  Returns the
# HTTP status and the decoded answer.
sub call
{
	my ($self, $op, $body) = @_;
	my $content = RetlVendors::json_encode($body);
	my $date = POSIX::strftime('%Y%m%dT%H%M%SZ', gmtime());
	my %h = (
		'content-type' => 'application/x-amz-json-1.1',
		'host' => "127.0.0.1:$self->{port}",
		'x-amz-date' => $date,
		'x-amz-target' => "Kinesis_20131202.$op",
	);
	my @signed = sort keys %h;
	my $sig = RetlVendors::sigv4_signature(
		method => 'POST', path => '/', query => '', headers => \%h,
		signed => \@signed, body => $content, secret => 'test-secret',
		amz_date => $date, region => 'us-east-1', service => 'kinesis');
	my %send = %h;
	delete $send{host};
	$send{authorization} = 'AWS4-HMAC-SHA256 Credential=AKIDTEST/'
	  . substr($date, 0, 8) . '/us-east-1/kinesis/aws4_request, SignedHeaders='
	  . join(';', @signed) . ", Signature=$sig";
	my $res = $self->{http}->post("$self->{url}/",
		{ headers => \%send, content => $content });
	my $doc = $res->{content} ne ''
	  ? eval { RetlVendors::json_decode($res->{content}) } : {};
	return ($res->{status}, $doc // { raw => $res->{content} });
}

sub _ok
{
	my ($self, $op, $body) = @_;
	my ($status, $doc) = $self->call($op, $body);
	croak "kinesalite $op: HTTP $status " . RetlVendors::json_encode($doc)
	  unless $status == 200;
	return $doc;
}

# Creates a stream and waits until it is ACTIVE.
sub create_stream
{
	my ($self, $name, $shards) = @_;
	$self->_ok('CreateStream', { StreamName => $name, ShardCount => $shards // 1 });
	my $deadline = Time::HiRes::time() + 30;
	while (Time::HiRes::time() < $deadline)
	{
		my $d = $self->_ok('DescribeStream', { StreamName => $name });
		return $d if $d->{StreamDescription}{StreamStatus} eq 'ACTIVE';
		Time::HiRes::sleep(0.05);
	}
	croak "stream $name did not become ACTIVE";
}

# Every record of every shard of a stream, read with GetShardIterator
# (TRIM_HORIZON) and GetRecords: [{ShardId, SequenceNumber, PartitionKey,
# Data (decoded from base64)}].
sub read_stream
{
	my ($self, $name) = @_;
	my $d = $self->_ok('DescribeStream', { StreamName => $name });
	my @out;
	for my $shard (@{ $d->{StreamDescription}{Shards} })
	{
		my $it = $self->_ok('GetShardIterator', {
			StreamName => $name,
			ShardId => $shard->{ShardId},
			ShardIteratorType => 'TRIM_HORIZON' })->{ShardIterator};
		my $empty = 0;
		for (my $i = 0; $i < 1000 && defined $it && $empty < 2; $i++)
		{
			my $r = $self->_ok('GetRecords', { ShardIterator => $it, Limit => 10000 });
			my $recs = $r->{Records} // [];
			$empty = @$recs ? 0 : $empty + 1;
			for my $rec (@$recs)
			{
				push @out, {
					ShardId => $shard->{ShardId},
					SequenceNumber => $rec->{SequenceNumber},
					PartitionKey => $rec->{PartitionKey},
					Data => decode_base64($rec->{Data}),
				};
			}
			$it = $r->{NextShardIterator};
		}
	}
	return \@out;
}

1;
