# Bad input never crashes a worker.  Each case below either is refused with
# a clear SQL error (and SQLSTATE) when the sync or destination is created,
# or ends in a run that fails with a clear retl.runs.error, or in events
# that are delivered or recorded as failed with a clear reason.  After each
# one a healthy sync of the same database still runs and delivers, served by
# the same worker process, and the server never restarted.
#
#   1. a mapping with 10,000 keys (and one key 10,000 levels deep)
#   2. a 100 MB jsonb value
#   3. a column of every built-in type (generated from pg_type), arrays,
#      ranges, multiranges, domains, composites and enums
#   4. invalid UTF-8 in a SQL_ASCII database (and LATIN1 text, converted)
#   5. a source view that raises an error mid-scan
#   6. a source (and a mapped column) dropped between runs
#   7. destination URLs of 10,000 characters
use strict;
use warnings;
use JSON::PP;
use Math::BigFloat;
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;

my $node = retl_node('bad');
my $recv = start_receiver();
my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;
my $BIGJSON = JSON::PP->new->allow_nonref->allow_bignum;
my $START = sql($node, 'SELECT pg_postmaster_start_time()');

# ---------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------

# One test: $query fails with SQLSTATE $state and an error matching $re.
sub fails_with
{
	my ($db, $query, $state, $re, $name) = @_;
	my ($rc, $out, $err) = psql_as($node, undef, $query, db => $db);
	my $ok = ok($rc != 0 && $err =~ /ERROR:\s+$state:/ && $err =~ $re, $name);
	diag("rc $rc, stderr: " . substr($err, 0, 2000)) unless $ok;
	return $ok;
}

# The error of a run, or ''.
sub run_error
{
	my ($db, $run) = @_;
	return $node->safe_psql($db, "SELECT error FROM retl.runs WHERE id = $run")
	  // '';
}

# run_row for any database.
sub run_row_db
{
	my ($db, $run) = @_;
	return $JSON->decode($node->safe_psql($db,
		"SELECT to_jsonb(r) - 'snapshot' FROM retl.runs r WHERE id = $run"));
}

# The pid of the worker that claimed run $run of sync $sync, from the log:
# "retl run N of sync "x" started" (or "retl run N failed to start").
sub run_pid
{
	my ($run, $sync) = @_;
	my $pid;
	for (split /\n/, slurp_file($node->logfile))
	{
		$pid = $1
		  if /\[(\d+)\].*retl run $run (?:of sync "\Q$sync\E" started|failed to start)/;
	}
	return $pid;
}

# A healthy sync of 10 rows per database, and the path it sends to.
my %HEALTHY;

sub setup_healthy
{
	my ($db) = @_;
	my $path = "/ok_$db";
	$node->safe_psql($db, qq{
CREATE TABLE healthy (id bigint PRIMARY KEY, user_id text NOT NULL, amount numeric);
INSERT INTO healthy SELECT g, 'user-' || g, g FROM generate_series(1, 10) g;
SELECT retl_create_destination('d_ok', 'webhook',
  '{"url": "@{[ $recv->url($path) ]}", "batch_size": 5}');
SELECT retl_create_sync(name => 's_ok', source => 'healthy', destination => 'd_ok',
  event_type => 'track', primary_key => 'id',
  mapping => '{"userId": "user_id", "event": {"value": "Healthy"}}');
});
	$HEALTHY{$db} = $path;
	return;
}

# Queues a full run of the healthy sync of $db and returns its id.
sub queue_healthy
{
	my ($db) = @_;
	return $node->safe_psql($db, "SELECT retl_force_full('s_ok')");
}

# After a bad case: the healthy run $hrun (queued with, or after, the bad
# run $brun of sync $bsync) succeeded and delivered every row, the same
# worker process ran both, and the server did not restart or lose a
# process.
sub still_serving
{
	my ($label, $db, $hrun, $brun, $bsync) = @_;
	is(wait_run_db($node, $db, $hrun), 'succeeded',
		"$label: a healthy sync of the same database still runs");
	check_ids(
		event_ids($recv->events(path => $HEALTHY{$db}, run_id => $hrun)),
		[ 1 .. 10 ], "$label: ... and delivers every row");
	my $bad_pid = run_pid($brun, $bsync);
	my $ok_pid = run_pid($hrun, 's_ok');
	ok(defined $bad_pid && defined $ok_pid && $bad_pid == $ok_pid,
		"$label: the same worker process ran the bad run and the healthy one")
	  or diag('pids: ' . ($bad_pid // 'undef') . ' and ' . ($ok_pid // 'undef'));
	server_ok($label);
	return;
}

# The server never restarted, and no process died from a signal or exited
# with an error.
sub server_ok
{
	my ($label) = @_;
	is(sql($node, 'SELECT pg_postmaster_start_time()'), $START,
		"$label: the server did not restart");
	my @bad = grep { /terminated by signal|exited with exit code [1-9]|PANIC/ }
	  split /\n/, slurp_file($node->logfile);
	ok(!@bad, "$label: no process crashed") or diag(join("\n", @bad));
	return;
}

# Runs sync $sync of $db together with the healthy sync; returns
# (status of the bad run, its id, the healthy run's id).
sub run_with_healthy
{
	my ($db, $sync) = @_;
	my $run = $node->safe_psql($db, "SELECT retl_sync_now('$sync')");
	my $hrun = queue_healthy($db);
	return (wait_run_db($node, $db, $run), $run, $hrun);
}

setup_healthy('postgres');

# ---------------------------------------------------------------------
# 1. A mapping with 10,000 keys works; a key 10,000 levels deep is refused.
# ---------------------------------------------------------------------
{
	my $NKEYS = 10_000;
	sql($node, q{
CREATE TABLE wide (id bigint PRIMARY KEY, user_id text, a int, b text);
INSERT INTO wide SELECT g, 'user-' || g, g * 10, 'b-' || g FROM generate_series(1, 5) g;
});
	create_webhook($node, 'd_wide', $recv->url('/wide'), batch_size => 2);
	my %mapping = (userId => 'user_id', event => { value => 'Wide' });
	for my $i (0 .. $NKEYS - 1)
	{
		my $k = sprintf('properties.k%05d', $i);
		$mapping{$k} = $i % 3 == 0 ? 'a' : $i % 3 == 1 ? 'b' : { value => $i };
	}
	my ($rc, $out, $err) = psql_as($node, undef,
		"SELECT retl_create_sync(name => 's_wide', source => 'wide',"
		  . " destination => 'd_wide', event_type => 'track', primary_key => 'id',"
		  . " mapping => '" . $JSON->encode(\%mapping) . "')");
	is($rc, 0, '1: a mapping with 10,000 keys is accepted') or diag($err);

	my ($status, $run, $hrun) = run_with_healthy('postgres', 's_wide');
	is($status, 'succeeded', '1: its run succeeds');
	my $events = $recv->events(path => '/wide', run_id => $run);
	check_ids(event_ids($events), [ 1 .. 5 ], '1: every row is delivered once');
	my @wrong;
	for my $e (@$events)
	{
		my $p = $e->{properties} // {};
		my $id = $p->{id} // 0;
		push @wrong, "event $id has " . scalar(keys %$p) . ' properties'
		  if keys %$p != $NKEYS + 1;
		for my $i (0 .. $NKEYS - 1)
		{
			my $want = $i % 3 == 0 ? $id * 10 : $i % 3 == 1 ? "b-$id" : $i;
			my $got = $p->{ sprintf('k%05d', $i) };
			push @wrong, "event $id k$i: " . ($got // 'missing')
			  if !defined $got || $got ne $want;
			last if @wrong > 5;
		}
	}
	ok(!@wrong, '1: each event carries the 10,000 mapped properties')
	  or diag(join("\n", @wrong));
	still_serving('1', 'postgres', $hrun, $run, 's_wide');

	# one key whose path has 10,000 levels: refused with the limit
	my $deep = 'properties.' . join('.', ('d') x $NKEYS);
	fails_with('postgres',
		"SELECT retl_create_sync(name => 's_deep', source => 'wide',"
		  . " destination => 'd_wide', event_type => 'track',"
		  . " mapping => '{\"userId\": \"user_id\", \"event\": {\"value\": \"Deep\"},"
		  . " \"$deep\": \"a\"}')",
		'22023', qr/levels.*limit|limit.*levels/s,
		'1: a mapping key 10,000 levels deep is refused at create time (22023, with the limit)');
}

# ---------------------------------------------------------------------
# 2. A 100 MB jsonb value: the event becomes a failed event that says it is
#    too large; the other rows are delivered and the run succeeds.
# ---------------------------------------------------------------------
{
	sql($node, q{
CREATE TABLE big (id bigint PRIMARY KEY, user_id text, doc jsonb);
INSERT INTO big VALUES (1, 'user-1', '{"small": true}'),
  (2, 'user-2', jsonb_build_object('blob', repeat('x', 100 * 1024 * 1024))),
  (3, 'user-3', '{"small": [1, 2, 3]}');
});
	is(sql($node, 'SELECT octet_length(doc::text) > 100 * 1024 * 1024 FROM big WHERE id = 2'),
		't', '2: row 2 holds a jsonb value of more than 100 MB');
	create_webhook($node, 'd_big', $recv->url('/big'));
	create_track_sync($node, 's_big', 'big', 'd_big',
		mapping => { userId => 'user_id', event => { value => 'Big' } });

	my ($status, $run, $hrun) = run_with_healthy('postgres', 's_big');
	is($status, 'succeeded', '2: the run succeeds');
	my $r = run_row($node, $run);
	is_deeply([ @$r{qw(rows_read events_sent events_succeeded events_failed)} ],
		[ 3, 3, 2, 1 ], '2: 3 rows read, 3 events sent, 2 delivered, 1 failed');
	check_ids(event_ids($recv->all_events(path => '/big')), [ 1, 3 ],
		'2: the small rows are delivered, the big one is never sent');
	my $fe = sql_json($node, q{
SELECT jsonb_agg(jsonb_build_object('pk', f.primary_key, 'error', f.error,
  'retryable', f.retryable, 'bytes', octet_length(f.payload)))
  FROM retl.failed_events f JOIN retl.syncs s ON s.id = f.sync_id
 WHERE s.name = 's_big'});
	is(scalar @{ $fe // [] }, 1, '2: one failed event is recorded');
	is($fe->[0]{pk}, '2', '2: ... for row 2');
	like($fe->[0]{error} // '',
		qr/event is \d+ bytes, over the destination's limit of \d+ bytes/,
		'2: ... saying the event is over the size limit');
	cmp_ok($fe->[0]{bytes} // 0, '>', 100 * 1024 * 1024, '2: ... with its payload');
	ok(!$fe->[0]{retryable}, '2: ... and not retried');
	my $wpid = run_pid($run, 's_big');
	ok(defined $wpid, '2: the log names the pid of the worker that ran it');
	$wpid //= 0;
	my ($hwm) = (eval { slurp_file("/proc/$wpid/status") } // '') =~ /^VmHWM:\s+(\d+) kB/m;
	ok(defined $hwm, "2: the worker (pid $wpid) is still there and its peak memory is read");
	note('peak memory of the worker: ' . int(($hwm // 0) / 1024) . ' MB');
	cmp_ok(int(($hwm // 1024 * 1024 * 1024) / 1024), '<', 1024,
		'2: the worker used less than 1 GB for it');
	still_serving('2', 'postgres', $hrun, $run, 's_big');
	# free the space: the next cases need no 100 MB rows
	sql($node, q{DELETE FROM retl.failed_events WHERE primary_key = '2'
	  AND sync_id = (SELECT id FROM retl.syncs WHERE name = 's_big')});
	sql($node, 'DROP TABLE big CASCADE');
}

# ---------------------------------------------------------------------
# 3. A column of every type that can be a table column, generated from
#    pg_type: base types (with a literal their input function accepts),
#    the information_schema domains, ranges, multiranges, an enum, a
#    composite, domains of ours, and an array of each.  Row 1 has values,
#    row 2 only NULLs (kept as null).
# ---------------------------------------------------------------------
{
	sql($node, q{
CREATE TYPE my_enum AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN my_dint AS int4 CHECK (VALUE > 0);
CREATE DOMAIN my_dtext AS text CHECK (VALUE <> '');
CREATE DOMAIN my_darr AS int4[];
CREATE TYPE my_comp AS (a int, b text, c my_enum, d int[], e timestamptz, f my_dint);
CREATE DOMAIN my_dcomp AS my_comp;
CREATE TYPE floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);
CREATE FUNCTION first_valid(typ text, lits text[]) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	l text;
BEGIN
	FOREACH l IN ARRAY lits LOOP
		CONTINUE WHEN l IS NULL;
		BEGIN
			EXECUTE format('SELECT %L::%s', l, typ);
			RETURN l;
		EXCEPTION WHEN OTHERS THEN
			NULL;
		END;
	END LOOP;
	RETURN NULL;
END $$;
});
	# Literals tried first for some types, to send more than '1'.
	my %prefer = (
		bool => 'true', int2 => '-32768', int4 => '2147483647',
		int8 => '-9223372036854775808', float4 => '-1.5', float8 => '1.5e300',
		numeric => '-12345678901234567890.123456789', money => '-1234.56',
		text => qq{tab\t "quote" \\ new\nline \x{e9} \x{1F600} \x01},
		varchar => 'v', bpchar => 'c', name => 'a name',
		bytea => '\x00ff10', json => '{"a": [1, {"b": null}], "c": "\u00e9"}',
		jsonb => '{"a": [1, {"b": null}], "c": "\u00e9"}',
		xml => '<a b="1">x</a>',
		timestamptz => '2024-02-29 23:59:59.999+05',
		timestamp => '2024-02-29 23:59:59.999', date => '2024-02-29',
		time => '23:59:59.999', timetz => '23:59:59.999+05',
		interval => '1 year 2 mons -3 days 04:05:06.789',
		tsvector => 'a fat cat sat on a mat', tsquery => 'fat & (rat | cat)',
		uuid => 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		inet => '192.168.0.1/24', cidr => '10.1.0.0/16',
		my_enum => 'happy', my_dint => '7', my_dtext => 'dom',
		my_darr => '{1,2,3}', my_comp => '(1,"b, \"c\"",ok,"{1,2}",2024-01-01 00:00:00+00,3)',
		my_dcomp => '(2,x,sad,{},,4)', floatrange => '[1.5,2.5)',
		floatmultirange => '{[1.5,2.5),[3,4]}', jsonpath => '$.a[*] ? (@ > 1)',
		regclass => 'pg_class', regtype => 'integer', regproc => 'now',
		regnamespace => 'pg_catalog', regrole => 'pg_monitor',
		regconfig => 'english', regdictionary => 'simple',
		regcollation => '"C"', regprocedure => 'now()', regoper => '||/',
		regoperator => '+(integer,integer)', yes_or_no => 'YES',
		aclitem => '=r/postgres', pg_namespace => '(1,x,10,)',
		cardinal_number => '42', character_data => 'chars',
		sql_identifier => 'ident', time_stamp => '2024-01-02 03:04:05.67+00');
	my @candidates = ('1', 't', '2024-01-02 03:04:05.678+00', '12:34:56',
		'(1,2)', '((1,2),(3,4))', '<(1,2),3>', '{1,2,3}', '[1,2]',
		'[2024-01-02,2024-01-03)', '{[1,2]}', '{[2024-01-02,2024-01-03)}',
		'1 2', '\x00ff', '127.0.0.1', '08:00:2b:01:02:03',
		'00000000-0000-0000-0000-000000000001', '0/16B3748', '1:2:', 'a',
		'{}');
	my $lits = join(', ', map { "\$lit\$$_\$lit\$" } @candidates);
	my $prefs = $JSON->encode(\%prefer);
	$prefs =~ s/'/''/g;
	my $types = sql_json($node, qq{
SELECT jsonb_agg(jsonb_build_object('oid', t.oid, 'name', t.typname,
		'sql', format_type(t.oid, NULL), 'type', t.typtype,
		'base', coalesce(nullif(t.typbasetype, 0), t.oid)::regtype::text,
		'array', t.typarray <> 0, 'lit', l.lit) ORDER BY t.typname)
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace,
	LATERAL (SELECT first_valid(format_type(t.oid, NULL),
		coalesce(ARRAY['$prefs'::jsonb ->> t.typname], '{}') || ARRAY[$lits]) AS lit) l
 WHERE t.typisdefined
   AND (n.nspname IN ('pg_catalog', 'information_schema')
		AND t.typtype IN ('b', 'd', 'r', 'm')
		OR n.nspname = 'public' AND t.typname IN ('my_enum', 'my_dint',
		'my_dtext', 'my_darr', 'my_comp', 'my_dcomp', 'floatrange',
		'floatmultirange')
		OR t.oid = 'pg_namespace'::regtype)
   AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)});
	my @usable = grep { defined $_->{lit} } @$types;
	my @skipped = map { $_->{name} } grep { !defined $_->{lit} } @$types;
	note('types without a literal their input accepts: ' . join(', ', @skipped));
	my %must = map { $_ => 1 } qw(money interval tsvector int4range int4multirange
	  tstzrange datemultirange my_enum my_comp my_dint my_dcomp floatrange
	  floatmultirange cardinal_number jsonb bytea timestamptz numeric);
	my @missing = grep { my $n = $_; !grep { $_->{name} eq $n } @usable } sort keys %must;
	ok(!@missing, '3: the generated table covers money, interval, tsvector, ranges, '
		  . 'multiranges, domains, enums and composites') or diag("missing: @missing");
	cmp_ok(scalar @usable, '>', 80, '3: ... and more than 80 types: ' . scalar @usable);

	# the table: c_<type> and a_<type> (array of two: the value and NULL)
	my (@cols, @vals);
	for my $t (@usable)
	{
		my $lit = $t->{lit};
		$lit =~ s/'/''/g;
		if ($t->{name} eq 'pg_namespace')
		{
			push @cols, { col => 'c_pg_namespace', t => $t, kind => 'row' };
			push @vals, "(SELECT n FROM pg_namespace n WHERE nspname = 'pg_catalog')";
			next;
		}
		push @cols, { col => "c_$t->{name}", t => $t, kind => 'scalar' };
		push @vals, "'$lit'::$t->{sql}";
		next unless $t->{array};
		push @cols, { col => "a_$t->{name}", t => $t, kind => 'array' };
		if ($t->{base} !~ /\[\]$/)
		{
			push @vals, "ARRAY['$lit'::$t->{sql}, NULL]";
			next;
		}
		# ARRAY[...] cannot hold a domain over an array: an array literal can
		my $q = q{'"' || replace(replace(('} . $lit . "'::$t->{sql})::text, "
		  . q{'\\', '\\\\'), '"', '\\"') || '"'};
		push @vals, "('{' || $q || ',NULL}')::$t->{sql}" . '[]';
	}
	# special values: [column, type, value, the JSON retl must send]
	my @extra = (
		[ x_nan => 'float8', q{'NaN'}, '"NaN"' ],
		[ x_inf => 'numeric', q{'-Infinity'}, '"-Infinity"' ],
		[ x_ts_inf => 'timestamptz', q{'infinity'}, '"infinity"' ],
		[ x_date_inf => 'date', q{'-infinity'}, '"-infinity"' ],
		[ x_date_bc => 'date', q{'0044-03-15 BC'}, '"0044-03-15 BC"' ],
		[ x_ts_far => 'timestamp', q{'294276-12-31 23:59:59'},
			'"294276-12-31T23:59:59.000Z"' ],
		[ x_arr2d => 'int[]', q{'{{1,2},{3,4}}'}, '[[1,2],[3,4]]' ],
		[ x_arr_empty => 'text[]', q{'{}'}, '[]' ],
		[ x_arr_lb => 'int[]', q{'[0:1]={5,6}'}, '[5,6]' ],
		[ x_comp_arr => 'my_comp[]', q{ARRAY[ROW(1,'x','ok','{}',NULL,1)::my_comp]},
			'[{"a":1,"b":"x","c":"ok","d":[],"e":null,"f":1}]' ],
		[ x_empty_range => 'int4range', q{'empty'}, '"empty"' ],
		[ x_text_empty => 'text', q{''}, '""' ]);
	for my $x (@extra)
	{
		push @cols, { col => $x->[0], t => { sql => $x->[1] }, kind => 'extra',
			want => $x->[3] };
		push @vals, "$x->[2]::$x->[1]";
	}
	my $ddl = 'CREATE TABLE all_types (id int PRIMARY KEY, user_id text, '
	  . join(', ', map { my $s = $_->{t}{sql}; $s .= '[]' if $_->{kind} eq 'array';
		  "$_->{col} $s" } @cols) . ')';
	sql($node, $ddl);
	sql($node, 'INSERT INTO all_types VALUES (1, \'user-1\', ' . join(', ', @vals) . ')');
	# explicit NULLs: information_schema.time_stamp has a default
	sql($node, 'INSERT INTO all_types (id, user_id, '
		  . join(', ', map { $_->{col} } @cols) . ') VALUES (2, \'user-2\', '
		  . join(', ', ('NULL') x @cols) . ')');
	note('all_types has ' . (2 + @cols) . ' columns');

	# what each column must become: its text, or for times the ISO text
	my @exprs;
	for my $c (@cols)
	{
		my $base = $c->{t}{base} // '';
		my $v = $c->{kind} eq 'array' ? "($c->{col})[1]" : $c->{col};
		push @exprs,
		    $base eq 'timestamp with time zone'
		  ? qq{to_char($v AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')}
		  : $base eq 'timestamp without time zone'
		  ? qq{to_char($v, 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')}
		  : $base eq 'date' ? qq{to_char($v, 'YYYY-MM-DD')}
		  : "$v\::text";
	}
	my $expect = sql_json($node, 'SELECT json_object(ARRAY['
		  . join(', ', map { "'$_->{col}'" } @cols) . '], ARRAY['
		  . join(', ', @exprs) . ']) FROM all_types WHERE id = 1');

	create_webhook($node, 'd_types', $recv->url('/types'));
	create_track_sync($node, 's_types', 'all_types', 'd_types',
		mapping => { userId => 'user_id', event => { value => 'Types' } },
		options => { nulls => 'keep' });
	my ($status, $run, $hrun) = run_with_healthy('postgres', 's_types');
	is($status, 'succeeded', '3: the run of the every-type table succeeds');
	# the bodies as sent (the receiver's events went through Python floats)
	my @events;
	my $bad_json = 0;
	for my $req (@{ $recv->requests })
	{
		next unless $req->{path} eq '/types';
		my $arr = eval { $BIGJSON->decode($req->{body}) };
		$bad_json++ unless ref $arr eq 'ARRAY';
		push @events, grep { dig($_, 'context', 'sources', 'job_run_id') == $run }
		  @{ $arr // [] };
	}
	is($bad_json, 0, '3: every request body is valid JSON');
	my %by_id = map { (dig($_, 'properties', 'id') // 0) => $_ } @events;
	is(scalar @events, 2, '3: both rows are delivered');

	my @wrong;
	my $p1 = dig($by_id{1}, 'properties') // {};
	for my $c (@cols)
	{
		my $err = check_value($c, $p1->{ $c->{col} }, $expect->{ $c->{col} });
		push @wrong, "$c->{col}: $err" if $err;
	}
	ok(!@wrong, '3: every column of row 1 has its JSON form ('
		  . scalar(@cols) . ' columns)')
	  or diag(join("\n", @wrong));
	my $p2 = dig($by_id{2}, 'properties') // {};
	my @notnull = grep { !exists $p2->{ $_->{col} } || defined $p2->{ $_->{col} } } @cols;
	ok(!@notnull, '3: every column of row 2 is null')
	  or diag('not null: ' . join(', ', map { $_->{col} } @notnull));
	still_serving('3', 'postgres', $hrun, $run, 's_types');
}

# Is $v a JSON number (as decoded by $BIGJSON) equal to the text $want?
sub num_eq
{
	my ($v, $want) = @_;
	return 0 unless defined $v && defined $want;
	return 0 if !ref $v && $BIGJSON->encode($v) =~ /^"/;
	return Math::BigFloat->new("$v")->bcmp(Math::BigFloat->new($want)) == 0;
}

# Checks one column's JSON value against what retl promises for its type;
# returns '' or what is wrong.
sub check_value
{
	my ($c, $got, $want) = @_;
	my $kind = $c->{kind};
	my $show = sub {
		(ref $got ? $BIGJSON->encode($got) : $got // 'undef')
		  . ' (want ' . ($want // 'undef') . ')';
	};
	if ($kind eq 'extra')
	{
		my $enc = JSON::PP->new->canonical->allow_nonref->encode($got);
		return $enc eq $c->{want} ? '' : "got $enc, want $c->{want}";
	}
	if ($kind eq 'array')
	{
		return 'not an array of 2: ' . $show->()
		  unless ref $got eq 'ARRAY' && @$got == 2 && !defined $got->[1];
		return check_value({ %$c, kind => 'scalar' }, $got->[0], $want);
	}
	if ($kind eq 'row')
	{
		return ref $got eq 'HASH' && ($got->{nspname} // '') eq 'pg_catalog'
		  ? '' : 'not the pg_namespace row: ' . $show->();
	}
	return 'missing' unless defined $got;
	my $base = $c->{t}{base};
	if ($base =~ /^(smallint|integer|bigint|oid|real|double precision|numeric)$/)
	{
		return num_eq($got, $want) ? '' : 'not the number ' . $show->();
	}
	if ($base eq 'boolean')
	{
		return JSON::PP::is_bool($got) && ($got ? 'true' : 'false') eq $want ? ''
		  : 'not the boolean ' . $show->();
	}
	if ($base eq 'json' || $base eq 'jsonb')
	{
		my $w = $BIGJSON->decode($want);
		return JSON::PP->new->canonical->allow_nonref->encode($got) eq
		  JSON::PP->new->canonical->allow_nonref->encode($w)
		  ? '' : 'not the embedded JSON ' . $show->();
	}
	if ($base eq 'bytea')
	{
		(my $hex = $want) =~ s/^\\x//;
		return $got eq encode_base64(pack('H*', $hex), '') ? ''
		  : 'not base64 ' . $show->();
	}
	if ($base =~ /\[\]$/)
	{
		(my $w = $want) =~ s/^\{|\}$//g;
		return ref $got eq 'ARRAY' && join(',', @$got) eq $w ? ''
		  : 'not an array ' . $show->();
	}
	if ($base eq 'int2vector' || $base eq 'oidvector')
	{
		return ref $got eq 'ARRAY' && join(' ', @$got) eq $want ? ''
		  : 'not an array of numbers ' . $show->();
	}
	if ($base eq 'my_comp')
	{
		my %comp = (
			my_comp => { a => 1, b => 'b, "c"', c => 'ok', d => [ 1, 2 ],
				e => '2024-01-01T00:00:00.000Z', f => 3 },
			my_dcomp => { a => 2, b => 'x', c => 'sad', d => [], e => undef, f => 4 });
		my $enc = JSON::PP->new->canonical;
		return $enc->encode($got) eq $enc->encode($comp{ $c->{t}{name} })
		  ? '' : 'not the object ' . $show->();
	}
	return !ref $got && $got eq $want ? '' : 'not its text ' . $show->();
}

# ---------------------------------------------------------------------
# 4. Invalid UTF-8 in a SQL_ASCII database: JSON must be UTF-8, so that
#    row becomes a failed event that says so; the others are delivered,
#    valid UTF-8 bytes untouched.
# ---------------------------------------------------------------------
{
	sql($node, q{CREATE DATABASE ascii ENCODING SQL_ASCII LC_COLLATE 'C'
	  LC_CTYPE 'C' TEMPLATE template0});
	$node->safe_psql('ascii', 'CREATE EXTENSION retl');
	setup_healthy('ascii');
	$node->safe_psql('ascii', qq{
CREATE TABLE notes (id bigint PRIMARY KEY, user_id text, note text);
INSERT INTO notes VALUES (1, 'user-1', 'plain ascii'),
  (2, 'user-2', E'bad \\xff\\xfe bytes'),
  (3, 'user-3', E'caf\\xc3\\xa9'),
  (4, 'user-4', E'cut \\xe2\\x82');
SELECT retl_create_destination('d_notes', 'webhook',
  '{"url": "@{[ $recv->url('/ascii') ]}"}');
SELECT retl_create_sync(name => 's_notes', source => 'notes', destination => 'd_notes',
  event_type => 'track', primary_key => 'id',
  mapping => '{"userId": "user_id", "event": {"value": "Note"}}');
});
	is($node->safe_psql('ascii',
			"SELECT string_agg(octet_length(note)::text, ',' ORDER BY id) FROM notes"),
		'11,12,5,6', '4: the rows hold the raw bytes');
	my ($status, $run, $hrun) = run_with_healthy('ascii', 's_notes');
	is($status, 'succeeded', '4: the run succeeds');
	my $bodies = join('', map { $_->{body} } grep { $_->{path} eq '/ascii' } @{ $recv->requests });
	unlike($bodies, qr/\x{FFFD}/, '4: every request body is valid UTF-8');
	is_deeply([ @{ run_row_db('ascii', $run) }{qw(rows_read events_sent events_succeeded events_failed)} ],
		[ 4, 4, 2, 2 ], '4: 4 rows read, 4 events sent, 2 delivered, 2 failed');
	my $events = $recv->events(path => '/ascii');
	check_ids(event_ids($events), [ 1, 3 ], '4: the valid rows are delivered');
	my ($cafe) = grep { (dig($_, 'properties', 'id') // 0) == 3 } @$events;
	is(dig($cafe, 'properties', 'note'), "caf\x{e9}", '4: ... with their UTF-8 text intact');
	my $fe = $node->safe_psql('ascii', q{
SELECT string_agg(primary_key || ': ' || error, E'\n' ORDER BY primary_key)
  FROM retl.failed_events});
	like($fe, qr/^2: .*UTF-8.*0xff/m,
		'4: row 2 is a failed event that names the invalid byte');
	like($fe, qr/^4: .*UTF-8.*0xe2 0x82/m, '4: ... and so is row 4 (a cut sequence)');
	still_serving('4 (SQL_ASCII)', 'ascii', $hrun, $run, 's_notes');
	my $h = queue_healthy('postgres');
	is(wait_run($node, $h), 'succeeded', '4: the healthy sync of database postgres still runs');

	# a LATIN1 database: its text is converted to UTF-8
	sql($node, q{CREATE DATABASE latin1 ENCODING LATIN1 LC_COLLATE 'C'
	  LC_CTYPE 'C' TEMPLATE template0});
	$node->safe_psql('latin1', qq{
CREATE EXTENSION retl;
CREATE TABLE notes (id bigint PRIMARY KEY, user_id text, note text);
INSERT INTO notes VALUES (1, 'user-1', 'caf' || chr(233) || ' ' || chr(189));
SELECT retl_create_destination('d_notes', 'webhook',
  '{"url": "@{[ $recv->url('/latin1') ]}"}');
SELECT retl_create_sync(name => 's_notes', source => 'notes', destination => 'd_notes',
  event_type => 'track', primary_key => 'id',
  mapping => '{"userId": "user_id", "event": {"value": "Note"}}');
});
	$run = $node->safe_psql('latin1', "SELECT retl_sync_now('s_notes')");
	is(wait_run_db($node, 'latin1', $run), 'succeeded', '4: a run in a LATIN1 database succeeds');
	is(dig($recv->events(path => '/latin1')->[0], 'properties', 'note'),
		"caf\x{e9} \x{bd}", '4: ... and sends its text as UTF-8');
}

# ---------------------------------------------------------------------
# 5. A source view that raises an error mid-scan: the run fails with the
#    error; once the view is fixed, a run delivers every row.
# ---------------------------------------------------------------------
{
	my $N = 3000;
	sql($node, qq{
CREATE TABLE vsrc (id bigint PRIMARY KEY, user_id text NOT NULL);
INSERT INTO vsrc SELECT g, 'user-' || g FROM generate_series(1, $N) g;
CREATE TABLE knob (bad int);
INSERT INTO knob VALUES (500);
CREATE VIEW v_err AS
  SELECT id, user_id, 1 / (id - (SELECT bad FROM knob)) AS inv FROM vsrc;
});
	create_webhook($node, 'd_view', $recv->url('/view'), batch_size => 100);
	create_track_sync($node, 's_view', 'v_err', 'd_view',
		mapping => { userId => 'user_id', event => { value => 'View' } });
	is(sql($node, "SELECT detector FROM retl.sync_status WHERE sync = 's_view'"),
		'diff', '5: the view is synced with the diff detector');

	# row 500 fails while the first page is fetched
	my ($status, $run, $hrun) = run_with_healthy('postgres', 's_view');
	is($status, 'failed', '5: a run whose view fails at row 500 fails');
	like(run_error('postgres', $run), qr/division by zero/,
		'5: ... with the error of the view');
	still_serving('5', 'postgres', $hrun, $run, 's_view');

	# row 2500 fails after the first page, when the cursor is materialized
	sql($node, 'UPDATE knob SET bad = 2500');
	($status, $run, $hrun) = run_with_healthy('postgres', 's_view');
	is($status, 'failed', '5: a run whose view fails at row 2500 fails');
	like(run_error('postgres', $run), qr/division by zero/,
		'5: ... with the error of the view');
	still_serving('5 (row 2500)', 'postgres', $hrun, $run, 's_view');

	sql($node, 'UPDATE knob SET bad = 0');
	$run = sql($node, "SELECT retl_sync_now('s_view')");
	is(wait_run($node, $run), 'succeeded', '5: once the view is fixed, a run succeeds');
	check_ids_at_least(event_ids($recv->events(path => '/view')), [ 1 .. $N ],
		'5: ... and no row is lost');
	is(sql($node, q{SELECT count(*) FROM retl.failed_events f JOIN retl.syncs s
	  ON s.id = f.sync_id WHERE s.name = 's_view'}), '0',
		'5: ... and no failed event is left');
}

# ---------------------------------------------------------------------
# 6. A source dropped between runs, and a mapped column dropped between
#    runs: the next run fails and says so; the sync can still be dropped.
# ---------------------------------------------------------------------
{
	create_orders($node, 'gone', 5);
	create_orders($node, 'shrink', 5);
	create_webhook($node, 'd_gone', $recv->url('/gone'));
	create_track_sync($node, 's_gone', 'gone', 'd_gone');
	create_track_sync($node, 's_shrink', 'shrink', 'd_gone');
	for my $s (qw(s_gone s_shrink))
	{
		my $run = sql($node, "SELECT retl_sync_now('$s')");
		is(wait_run($node, $run), 'succeeded', "6: a first run of $s succeeds");
	}
	sql($node, 'DROP TABLE gone');
	sql($node, 'ALTER TABLE shrink DROP COLUMN amount');

	my ($status, $run, $hrun) = run_with_healthy('postgres', 's_gone');
	is($status, 'failed', '6: after DROP TABLE the next run fails');
	like(run_error('postgres', $run),
		qr/source relation of sync "s_gone" no longer exists/,
		'6: ... saying the source no longer exists');
	still_serving('6', 'postgres', $hrun, $run, 's_gone');
	fails_with('postgres', "SELECT retl_preview('s_gone')", '42P01',
		qr/no longer exists/, '6: retl_preview says so too (42P01)');

	($status, $run, $hrun) = run_with_healthy('postgres', 's_shrink');
	is($status, 'failed', '6: after DROP COLUMN of a mapped column the next run fails');
	like(run_error('postgres', $run),
		qr/column "amount" of the mapping does not exist in "shrink"/,
		'6: ... naming the column');
	still_serving('6 (column)', 'postgres', $hrun, $run, 's_shrink');

	my ($rc, $out, $err) = psql_as($node, undef,
		"SELECT retl_drop_sync('s_gone'); SELECT retl_drop_sync('s_shrink')");
	is($rc, 0, '6: both syncs can be dropped') or diag($err);
}

# ---------------------------------------------------------------------
# 7. Destination URLs of 10,000 characters: a long path works; a long
#    host name, or a malformed URL, is refused at create time.
# ---------------------------------------------------------------------
{
	my $base = $recv->url('/long/');
	my $path = '/long/' . ('p' x (10_000 - length($base)));
	my $url = $recv->url($path);
	is(length($url), 10_000, '7: the URL has 10,000 characters');
	create_webhook($node, 'd_long', $url);
	create_orders($node, 'lorders', 5);
	create_track_sync($node, 's_long', 'lorders', 'd_long');
	my ($status, $run, $hrun) = run_with_healthy('postgres', 's_long');
	is($status, 'succeeded', '7: a run to a URL with a 10,000-character path succeeds');
	check_ids(event_ids($recv->events(path => $path)), [ 1 .. 5 ],
		'7: ... and its events arrive at that path');
	still_serving('7', 'postgres', $hrun, $run, 's_long');

	my $host = 'h' x (10_000 - length('http:///x'));
	fails_with('postgres',
		"SELECT retl_create_destination('d_host', 'webhook', '{\"url\": \"http://$host/x\"}')",
		'22023', qr/host name is 9991 characters long.*253/s,
		'7: a URL with a 10,000-character host name is refused (22023)');
	fails_with('postgres',
		"SELECT retl_create_destination('d_bad', 'webhook', '{\"url\": \"http://127.0.0.1/"
		  . (' ' x 9983) . "\"}')",
		'22023', qr/not a valid URL/,
		'7: a malformed 10,000-character URL is refused (22023)');
	is(sql($node, q{SELECT count(*) FROM retl.destinations
	  WHERE name IN ('d_host', 'd_bad')}), '0', '7: ... and neither is created');
}

server_ok('end');
stop_ok($node);

done_testing();
