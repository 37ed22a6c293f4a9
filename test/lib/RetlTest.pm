
=pod

=head1 NAME

RetlTest - helpers for retl's TAP tests

=head1 SYNOPSIS

  use lib ...;              # prove -I test/lib
  use RetlTest;

  my $node = retl_node('main');
  my $recv = start_receiver();
  create_orders($node, 'orders', 1000);
  create_webhook($node, 'd', $recv->url('/hook'), batch_size => 100);
  create_track_sync($node, 's', 'orders', 'd');
  my $run = sql($node, "SELECT retl_sync_now('s')");
  is(wait_run($node, $run), 'succeeded', 'run succeeded');
  my $events = $recv->events(run_id => $run);
  check_ids(event_ids($events), [1 .. 1000], 'every row once', exact => 1);

=head1 DESCRIPTION

Built on PostgreSQL::Test::Cluster.  Tests never sleep a fixed time to
assert timing: they poll with generous timeouts (wait_for, wait_run).

=cut

package RetlTest;

use strict;
use warnings;

use Carp;
use Cwd qw(abs_path);
use Exporter qw(import);
use File::Basename qw(dirname);
use HTTP::Tiny;
use JSON::PP;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

our @EXPORT = qw(
  retl_node start_receiver wait_run wait_for
  sql sql_json run_row runs_of
  create_orders expected_order create_webhook create_track_sync
  event_ids check_ids check_ids_at_least dig
  dump_state node_running diag_server_log stop_ok
  psql_as fails_as set_system wait_run_db sql_lit
);

# Default timeout of wait_run, in seconds.
our $RUN_TIMEOUT = 120;

# Statuses seen by wait_run, by run id, in order, without repeats.
our %SEEN_STATUSES;

my $JSON = JSON::PP->new->utf8->canonical;
my @SERVERS;    # of spawn_server, stopped at the end
my @NODES;

# Cluster::init runs "$PG_REGRESS --config-auth": default it for developers
# who run prove by hand (test/check sets it).
$ENV{PG_REGRESS} //=
  '/usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress';

# Runs before PostgreSQL::Test::Cluster's END (END blocks run last-defined
# first): a node whose server died would make its teardown BAIL_OUT and
# stop the whole prove run, so forget its pid; say so, and fail the file.
END
{
	my $exit = $?;
	for my $node (@NODES)
	{
		next unless defined $node->{_pid};
		next if node_running($node);
		print STDERR "# server of node " . $node->name
		  . " is not running any more (crashed?)\n";
		$node->{_pid} = undef;
		$exit ||= 1;
	}
	$? = $exit;
}

my $PYTHON = '/usr/bin/python3';
my $RECEIVER_SCRIPT = abs_path(dirname(__FILE__) . '/../receiver.py');

=pod

=head2 retl_node($name, %opts)

Creates and starts a node with retl preloaded, and runs
C<CREATE EXTENSION retl> in database postgres.  Options:

  conf         => extra postgresql.conf text
  no_extension => 1 to skip CREATE EXTENSION
  naptime      => value of retl.naptime (default '1s')
  init         => hashref of options for PostgreSQL::Test::Cluster::init

=cut

sub retl_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	push @NODES, $node;
	$node->init(%{ $opts{init} // {} });
	my $naptime = $opts{naptime} // '1s';
	$node->append_conf(
		'postgresql.conf', qq{
shared_preload_libraries = 'retl'
retl.naptime = '$naptime'
log_min_messages = debug1
log_line_prefix = '%m [%p] %b %q%a '
log_error_verbosity = default
max_worker_processes = 16
});
	$node->append_conf('postgresql.conf', $opts{conf}) if defined $opts{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION retl')
	  unless $opts{no_extension};
	return $node;
}

=pod

=head2 sql($node, $sql) / sql_json($node, $sql)

C<sql> runs SQL in database postgres with safe_psql and returns its output.
C<sql_json> runs a query that returns one json value and decodes it
(undef when the query returns nothing).

=cut

sub sql
{
	my ($node, $query) = @_;
	return $node->safe_psql('postgres', $query);
}

sub sql_json
{
	my ($node, $query) = @_;
	my $out = $node->safe_psql('postgres', $query);
	return undef if !defined $out || $out eq '';
	return $JSON->decode($out);
}

=pod

=head2 run_row($node, $run_id) / runs_of($node, $sync)

The retl.runs row of a run as a hashref (snapshot left out); all runs of a
sync, oldest first, as an arrayref of hashrefs.

=cut

sub run_row
{
	my ($node, $id) = @_;
	croak "run id missing" unless defined $id && $id ne '';
	return sql_json($node,
		"SELECT to_jsonb(r) - 'snapshot' FROM retl.runs r WHERE id = $id");
}

sub runs_of
{
	my ($node, $sync) = @_;
	return sql_json($node,
		"SELECT coalesce(jsonb_agg(to_jsonb(r) - 'snapshot' ORDER BY id), '[]') "
		  . "FROM retl.runs r WHERE sync_name = " . sql_lit($sync));
}

=pod

=head2 psql_as($node, $role, $sql, %opts) / fails_as($node, $role, $sql, $sqlstate, $name)

C<psql_as> runs $sql as $role (C<SET ROLE>; undef: the bootstrap
superuser) without stopping on error and returns (rc, stdout, stderr);
VERBOSITY verbose puts the SQLSTATE and hint in stderr.  Option db (default
postgres); other options go to PostgreSQL::Test::Cluster::psql.
C<fails_as> asserts that $sql fails with SQLSTATE $sqlstate (two tests)
and returns stderr.

=cut

sub psql_as
{
	my ($node, $role, $query, %opts) = @_;
	my $db = delete $opts{db} // 'postgres';
	my $pre = "\\set VERBOSITY verbose\n";
	$pre .= "SET ROLE $role;\n" if defined $role;
	my ($rc, $out, $err) = $node->psql($db, $pre . $query, %opts);
	return ($rc, $out // '', $err // '');
}

sub fails_as
{
	my ($node, $role, $query, $state, $name) = @_;
	my ($rc, $out, $err) = psql_as($node, $role, $query);
	isnt($rc, 0, "$name: fails");
	like($err, qr/ERROR:\s+$state:/, "$name: SQLSTATE $state") or diag($err);
	return $err;
}

=pod

=head2 set_system($node, $guc, $value)

Sets a GUC with ALTER SYSTEM (undef: RESET), reloads, and waits until a
new session shows the value (the postmaster has then signalled the
workers to reload too).

=cut

sub set_system
{
	my ($node, $guc, $value) = @_;
	sql($node, defined $value
		? "ALTER SYSTEM SET $guc = '$value'"
		: "ALTER SYSTEM RESET $guc");
	sql($node, 'SELECT pg_reload_conf()');
	my $want = $value // sql($node,
		"SELECT boot_val FROM pg_settings WHERE name = '$guc'");
	return wait_for(
		sub { sql($node, "SELECT current_setting('$guc')") eq $want },
		30, "$guc = '$want' after reload");
}

=pod

=head2 wait_for($code, $timeout_s, $what)

Calls $code every 0.1 s until it returns a true value, which it returns.
On timeout (default 120 s) it fails a test named "timed out waiting for
$what" and returns undef.

=cut

sub wait_for
{
	my ($code, $timeout, $what) = @_;
	$timeout //= $RUN_TIMEOUT;
	$what //= 'condition';
	my $deadline = Time::HiRes::time() + $timeout;
	while (1)
	{
		my $v = $code->();
		return $v if $v;
		last if Time::HiRes::time() > $deadline;
		Time::HiRes::sleep(0.1);
	}
	fail("timed out after ${timeout}s waiting for $what");
	return undef;
}

=pod

=head2 wait_run($node, $run_id, $timeout_s)

Polls retl.runs until the run is succeeded, failed or stopped and returns
that status.  Errors of psql (a restarting server) are ignored while
polling.  On timeout (default 120 s) it fails a test, prints the run row,
the sync status and the retl processes, and returns the last status seen.
The statuses seen are kept in @{ $RetlTest::SEEN_STATUSES{$run_id} }.

=cut

sub wait_run
{
	my ($node, $run_id, $timeout) = @_;
	croak "run id missing" unless defined $run_id && $run_id =~ /^\d+$/;
	$timeout //= $RUN_TIMEOUT;
	my $deadline = Time::HiRes::time() + $timeout;
	my $seen = $SEEN_STATUSES{$run_id} //= [];
	my $status = '';
	while (1)
	{
		my ($rc, $out, $err) = $node->psql('postgres',
			"SELECT status FROM retl.runs WHERE id = $run_id");
		if ($rc == 0 && defined $out && $out ne '')
		{
			$status = $out;
			push @$seen, $status if !@$seen || $seen->[-1] ne $status;
			if ($status =~ /^(succeeded|failed|stopped)$/)
			{
				if ($status eq 'failed')
				{
					my ($rc2, $err2) = $node->psql('postgres',
						"SELECT error FROM retl.runs WHERE id = $run_id");
					diag("run $run_id failed: " . ($err2 // ''));
				}
				return $status;
			}
		}
		elsif ($rc != 0 && !node_running($node))
		{
			fail("run $run_id finished: the server is not running any more "
				  . "(last status: '$status')");
			diag_server_log($node);
			return $status;
		}
		last if Time::HiRes::time() > $deadline;
		Time::HiRes::sleep(0.1);
	}
	fail("run $run_id finished within ${timeout}s (last status: '$status')");
	dump_state($node, $run_id);
	return $status;
}

# wait_run for database $db (wait_run itself when it is postgres).
sub wait_run_db
{
	my ($node, $db, $run, $timeout) = @_;
	return wait_run($node, $run, $timeout) if $db eq 'postgres';
	my $status = '';
	wait_for(
		sub {
			$status = $node->safe_psql($db,
				"SELECT status FROM retl.runs WHERE id = $run");
			return $status =~ /^(succeeded|failed|stopped)$/;
		},
		$timeout // $RUN_TIMEOUT,
		"run $run of database $db to finish");
	return $status;
}

=pod

=head2 node_running($node)

True when the node's postmaster process is alive.

=head2 diag_server_log($node, $lines)

Prints (diag) the crash and error lines of the node's server log and its
last lines.

=head2 stop_ok($node, $mode)

One test: the node stops with pg_ctl stop -m $mode (default fast) within
pg_ctl's timeout, i.e. retl's processes obey the shutdown.  When it does
not, the node is stopped in immediate mode.

=cut

sub node_running
{
	my ($node) = @_;
	my $pid = $node->{_pid};
	return 0 unless defined $pid && $pid =~ /^\d+$/;
	return kill(0, $pid) ? 1 : 0;
}

sub diag_server_log
{
	my ($node, $lines) = @_;
	$lines //= 30;
	my $log = $node->logfile;
	return unless -e $log;
	my @all = split /\n/, slurp_file($log);
	my @bad = grep { /terminated by signal|PANIC|FATAL|ERROR|exited with exit code/ } @all;
	@bad = @bad[ -20 .. -1 ] if @bad > 20;
	diag("server log $log, errors:\n" . join("\n", @bad)) if @bad;
	my @tail = grep { !/ DEBUG: / || /retl/ } @all;
	@tail = @tail[ -$lines .. -1 ] if @tail > $lines;
	diag("server log, last lines:\n" . join("\n", @tail));
	return;
}

sub stop_ok
{
	my ($node, $mode) = @_;
	$mode //= 'fast';
	my $alive = node_running($node);
	my $ok = ok($alive && $node->stop($mode, fail_ok => 1),
		"the server stops (pg_ctl stop -m $mode)");
	if (!$ok)
	{
		diag('the server was not running') unless $alive;
		diag_server_log($node);
		if (node_running($node))
		{
			$node->stop('immediate', fail_ok => 1);
		}
		else
		{
			$node->{_pid} = undef;
		}
	}
	return $ok;
}

=pod

=head2 dump_state($node, $run_id)

Prints (diag) the run row, retl.sync_status and the retl processes.

=cut

sub dump_state
{
	my ($node, $run_id) = @_;
	my ($rc, $out, $err);
	if (defined $run_id)
	{
		($rc, $out, $err) = $node->psql('postgres',
			"SELECT * FROM retl.runs WHERE id = $run_id",
			extra_params => ['-x']);
		diag("retl.runs row of run $run_id:\n" . ($out // '') . ($err // ''));
	}
	($rc, $out, $err) = $node->psql('postgres',
		"SELECT * FROM retl.sync_status", extra_params => ['-x']);
	diag("retl.sync_status:\n" . ($out // '') . ($err // ''));
	($rc, $out, $err) = $node->psql('postgres',
		"SELECT pid, backend_type, state, wait_event_type, wait_event, "
		  . "left(query, 80) FROM pg_stat_activity "
		  . "WHERE backend_type NOT IN ('client backend', 'checkpointer', "
		  . "'background writer', 'walwriter', 'autovacuum launcher')");
	diag("processes:\n" . ($out // '') . ($err // ''));
	return;
}

=pod

=head2 create_orders($node, $table, $n, %opts)

Creates a table

  id bigint PRIMARY KEY, user_id text, amount numeric(12,2), status text,
  created_at timestamptz, version int

with rows 1..$n: user_id 'user-<id>', amount (id % 1000) + 0.25, status
'paid' for even ids and 'open' for odd ones, created_at
2024-01-01 00:00:00.123+00 plus id seconds, version 1.  Option C<from>
starts the ids elsewhere (then the table must exist: C<insert_only>).

=cut

sub create_orders
{
	my ($node, $table, $n, %opts) = @_;
	my $from = $opts{from} // 1;
	my $to = $from + $n - 1;
	my $ddl = $opts{insert_only} ? '' : qq{
CREATE TABLE $table (
	id bigint PRIMARY KEY,
	user_id text NOT NULL,
	amount numeric(12,2),
	status text,
	created_at timestamptz,
	version int NOT NULL DEFAULT 1
);};
	sql($node, $ddl . qq{
INSERT INTO $table
SELECT g, 'user-' || g, (g % 1000) + 0.25,
	   CASE WHEN g % 2 = 0 THEN 'paid' ELSE 'open' END,
	   timestamptz '2024-01-01 00:00:00.123+00' + g * interval '1 second', 1
  FROM generate_series($from, $to) g;});
	return;
}

=pod

=head2 expected_order($id, $version)

The values that create_orders writes for one id, as a hashref (amount as a
number, created_at as the ISO string retl must send).

=cut

sub expected_order
{
	my ($id) = @_;
	my @t = gmtime(1704067200 + $id);
	return {
		user_id => "user-$id",
		amount => ($id % 1000) + 0.25,
		status => ($id % 2 == 0 ? 'paid' : 'open'),
		created_at => sprintf('%04d-%02d-%02dT%02d:%02d:%02d.123Z',
			$t[5] + 1900, $t[4] + 1, $t[3], $t[2], $t[1], $t[0]),
	};
}

=pod

=head2 create_webhook($node, $name, $url, %config)

retl_create_destination($name, 'webhook', {url => $url, %config}).

=head2 create_track_sync($node, $name, $table, $destination, %opts)

retl_create_sync with event_type 'track' (or C<< event_type => ... >>),
primary key 'id' and by default the mapping

  {"userId":"user_id","event":{"value":"Order Completed"},
   "properties.amount":"amount"}

Options: mapping (hashref), event_type, primary_key, options (hashref).

=cut

# A SQL string literal of $s.
sub sql_lit
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}

sub create_webhook
{
	my ($node, $name, $url, %config) = @_;
	my $cfg = $JSON->encode({ url => $url, %config });
	return sql($node,
		"SELECT retl_create_destination(" . sql_lit($name) . ", 'webhook', "
		  . sql_lit($cfg) . "::jsonb)");
}

our $DEFAULT_MAPPING = {
	'userId' => 'user_id',
	'event' => { value => 'Order Completed' },
	'properties.amount' => 'amount',
};

sub create_track_sync
{
	my ($node, $name, $table, $dest, %opts) = @_;
	my $mapping = $JSON->encode($opts{mapping} // $DEFAULT_MAPPING);
	my $options = $JSON->encode($opts{options} // {});
	my $event_type = $opts{event_type} // 'track';
	my $pk = exists $opts{primary_key} ? $opts{primary_key} : 'id';
	my $pk_sql = defined $pk ? sql_lit($pk) : 'NULL';
	return sql($node,
		"SELECT retl_create_sync(name => "
		  . sql_lit($name)
		  . ", source => "
		  . sql_lit($table)
		  . ", destination => "
		  . sql_lit($dest)
		  . ", event_type => "
		  . sql_lit($event_type)
		  . ", mapping => "
		  . sql_lit($mapping)
		  . "::jsonb, primary_key => $pk_sql, options => "
		  . sql_lit($options)
		  . "::jsonb)");
}

=pod

=head2 dig($data, @keys)

Follows hash keys (and array indexes) without autovivifying or dying on a
value of the wrong type; undef when the path does not exist.

=cut

sub dig
{
	my ($v, @keys) = @_;
	for my $k (@keys)
	{
		if (ref $v eq 'HASH') { $v = $v->{$k}; }
		elsif (ref $v eq 'ARRAY' && $k =~ /^-?\d+$/) { $v = $v->[$k]; }
		else { return undef; }
	}
	return $v;
}

=pod

=head2 event_ids($events, $key)

The values of properties.$key (or traits.$key for identify events) of a
list of events, in order; $key defaults to 'id'.  Events without it give
undef.

=cut

sub event_ids
{
	my ($events, $key) = @_;
	$key //= 'id';
	my @ids;
	for my $e (@$events)
	{
		my $bag = ref $e eq 'HASH'
		  ? ($e->{properties} // $e->{traits} // {})
		  : {};
		push @ids, $bag->{$key};
	}
	return \@ids;
}

sub _sample
{
	my @v = sort { $a <=> $b } grep { defined && /^-?\d+$/ } @_;
	my @other = grep { !defined || !/^-?\d+$/ } @_;
	my @all = (@v, map { $_ // 'undef' } @other);
	my $more = @all > 20 ? ' ... (' . scalar(@all) . ' in all)' : '';
	return join(', ', @all[ 0 .. ($#all < 19 ? $#all : 19) ]) . $more;
}

=pod

=head2 check_ids(\@got, \@expected, $name, %opts)

One test: the ids received are exactly the expected set.  With
C<< exact => 1 >> (the default) each must arrive exactly once; with
C<< exact => 0 >> duplicates are allowed.  The diagnostics list missing,
unexpected and duplicated ids.

=head2 check_ids_at_least(\@got, \@expected, $name)

One test: every expected id is among those received (others may be too).

=cut

sub check_ids
{
	my ($got, $expected, $name, %opts) = @_;
	my $exact = $opts{exact} // 1;
	my (%want, %count);
	$want{$_} = 1 for @$expected;
	$count{ $_ // 'undef' }++ for @$got;
	my @missing = grep { !$count{$_} } keys %want;
	my @extra = grep { !$want{$_} } keys %count;
	my @dups = $exact ? grep { $count{$_} > 1 } keys %count : ();
	my $ok = ok(!@missing && !@extra && !@dups, $name);
	unless ($ok)
	{
		diag('received ' . scalar(@$got) . ' ids, expected '
			  . scalar(keys %want) . ' distinct');
		diag('missing: ' . _sample(@missing)) if @missing;
		diag('unexpected: ' . _sample(@extra)) if @extra;
		diag('duplicated: ' . _sample(@dups)) if @dups;
	}
	return $ok;
}

sub check_ids_at_least
{
	my ($got, $expected, $name) = @_;
	my %have;
	$have{ $_ // 'undef' } = 1 for @$got;
	my @missing = grep { !$have{$_} } @$expected;
	my $ok = ok(!@missing, $name);
	diag('missing: ' . _sample(@missing)) unless $ok;
	return $ok;
}

=pod

=head2 start_receiver(%opts)

Starts test/receiver.py on a free port of 127.0.0.1 and returns a
RetlTest::Receiver: C<< $r->{port} >>, C<< $r->{url} >>
(http://127.0.0.1:PORT) and methods url($path), events(%filter),
all_events(%filter), requests(), stats(), reset(), config(\%cfg),
wait_events($n, $timeout).  Filters: path, run_id, sync.  Receivers are
killed at the end of the test.  Option verbose => 1 logs each request;
tls => [$cert_pem, $key_pem] also serves HTTPS, at C<< $r->{tls_url} >>;
any_address => 1 listens on every local address (IPv4 and IPv6), not only
127.0.0.1.

=cut

sub start_receiver
{
	my (%opts) = @_;
	my @cmd = ($PYTHON, $RECEIVER_SCRIPT);
	my $tls_file;
	push @cmd, '--verbose' if $opts{verbose};
	push @cmd, '--any-address' if $opts{any_address};
	if ($opts{tls})
	{
		$tls_file = PostgreSQL::Test::Utils::tempdir() . '/tls.port';
		push @cmd, '--tls-cert', $opts{tls}->[0], '--tls-key', $opts{tls}->[1],
		  '--tls-port-file', $tls_file;
	}
	my $self = spawn_server('receiver', @cmd);
	$self->{http} = HTTP::Tiny->new(timeout => 120, keep_alive => 1);
	bless $self, 'RetlTest::Receiver';
	if ($tls_file)
	{
		# the HTTPS port is written before the plain one
		my $tls = slurp_file($tls_file);
		$self->{tls_url} = 'https://127.0.0.1:' . ($tls =~ /^(\d+)/)[0];
	}
	return $self;
}

=pod

=head2 spawn_server($what, @cmd) / stop_server($server)

C<spawn_server> starts @cmd, a server that takes C<--port 0 --port-file
FILE> and writes the port it chose there, with its output in
tmp_check/log/<test>_<what>N.log; it waits up to 60 s for the port and
returns C<< {pid, port, url, log} >>.  Every server is stopped at the end
of the test; C<stop_server> stops one before.

=cut

sub spawn_server
{
	my ($what, @cmd) = @_;
	my $port_file = PostgreSQL::Test::Utils::tempdir() . "/$what.port";
	my $test = File::Basename::basename($0);
	$test =~ s/\.[^.]+$//;
	my $log = "$PostgreSQL::Test::Utils::log_path/${test}_$what"
	  . (scalar(@SERVERS) + 1) . ".log";
	push @cmd, '--port', '0', '--port-file', $port_file;
	my $pid = fork();
	croak "fork failed: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', $log) or POSIX::_exit(126);
		open(STDERR, '>&', \*STDOUT) or POSIX::_exit(126);
		exec(@cmd) or POSIX::_exit(127);
	}
	my $server = { pid => $pid, log => $log };
	push @SERVERS, $server;
	my $deadline = Time::HiRes::time() + 60;
	while (Time::HiRes::time() < $deadline)
	{
		if (-s $port_file && slurp_file($port_file) =~ /^(\d+)/)
		{
			$server->{port} = $1;
			last;
		}
		if (waitpid($pid, POSIX::WNOHANG()) == $pid)
		{
			$server->{pid} = undef;
			croak "$what exited at start, see $log: " . slurp_file($log);
		}
		Time::HiRes::sleep(0.05);
	}
	croak "$what did not write $port_file within 60 s" unless $server->{port};
	$server->{url} = "http://127.0.0.1:$server->{port}";
	note("$what pid $pid on $server->{url}, log $log");
	return $server;
}

sub stop_server
{
	my ($server) = @_;
	my $pid = $server->{pid} or return;
	kill 'TERM', $pid;
	my $deadline = Time::HiRes::time() + 10;
	while (Time::HiRes::time() < $deadline)
	{
		last if waitpid($pid, POSIX::WNOHANG()) == $pid;
		Time::HiRes::sleep(0.05);
	}
	if (kill(0, $pid))
	{
		kill 'KILL', $pid;
		waitpid($pid, 0);
	}
	$server->{pid} = undef;
	return;
}

END
{
	local $?;    # keep the test's exit status: waitpid below changes $?
	stop_server($_) for @SERVERS;
}

package RetlTest::Receiver;

use strict;
use warnings;
use Carp;
use Time::HiRes ();

my $RJSON = JSON::PP->new->utf8->canonical->allow_nonref;

sub url
{
	my ($self, $path) = @_;
	return $self->{url} . ($path // '');
}

sub _get
{
	my ($self, $path) = @_;
	my $res = $self->{http}->get($self->{url} . $path);
	croak "GET $path: $res->{status} $res->{reason} $res->{content}"
	  unless $res->{success};
	return $RJSON->decode($res->{content});
}

sub _post
{
	my ($self, $path, $body) = @_;
	my $res = $self->{http}->post(
		$self->{url} . $path,
		{
			headers => { 'Content-Type' => 'application/json' },
			content => $RJSON->encode($body // {}),
		});
	croak "POST $path: $res->{status} $res->{reason} $res->{content}"
	  unless $res->{success};
	return $RJSON->decode($res->{content});
}

sub _query
{
	my (%f) = @_;
	my @q;
	for my $k (sort keys %f)
	{
		next unless defined $f{$k};
		my $v = $f{$k};
		$v =~ s/([^A-Za-z0-9_.~\/-])/sprintf('%%%02X', ord($1))/ge;
		push @q, "$k=$v";
	}
	return @q ? '?' . join('&', @q) : '';
}

# Events of the deliveries answered 2xx; filters: path, run_id, sync.
sub events
{
	my ($self, %f) = @_;
	return $self->_get('/_events' . _query(%f));
}

# Events of every delivery, whatever the answer.
sub all_events
{
	my ($self, %f) = @_;
	return $self->_get('/_all_events' . _query(%f));
}

sub requests { return $_[0]->_get('/_requests'); }
sub stats { return $_[0]->_get('/_stats'); }
sub reset { return $_[0]->_post('/_reset', {}); }

sub config
{
	my ($self, $cfg) = @_;
	return $self->_post('/_config', $cfg);
}

# Waits until at least $n events were answered 2xx; returns the count.
sub wait_events
{
	my ($self, $n, $timeout, $what) = @_;
	return RetlTest::wait_for(
		sub {
			my $c = $self->stats->{events};
			return $c >= $n ? ($c || '0E0') : 0;
		},
		$timeout,
		$what // "$n events at the receiver");
}

# Waits until at least $n deliveries arrived, whatever their answer.
sub wait_requests
{
	my ($self, $n, $timeout, $what) = @_;
	return RetlTest::wait_for(
		sub {
			my $c = $self->stats->{requests};
			return $c >= $n ? ($c || '0E0') : 0;
		},
		$timeout,
		$what // "$n requests at the receiver");
}

sub stop { RetlTest::stop_server($_[0]); return; }

1;
