# Roles and secrets: every role manages only the syncs and destinations it
# owns, and sees nothing of other roles'; members of retl_admin manage every
# sync; destination secrets are readable by their owner and superusers only
# and show as "***" everywhere else.  A planted secret, echoed back by the
# destination in its error answers, is found in no retl table, no view, no
# preview and no server log line.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MIME::Base64 ();
use RetlTest;

# Statement logging is off, as by default: like CREATE ROLE ... PASSWORD,
# a logged statement would carry the config it creates (see the README).
my $node = retl_node('roles', conf => "log_statement = 'none'\n");
my $recv = start_receiver();

my $SECRET = 'PLANTED-s3cr3t-7f1c9a';          # webhook HMAC secret
my $BEARER = 'PLANTED-bearer-b81e44d0';         # Authorization header
my $RS_KEY = 'PLANTED-writekey-0c3e91';         # RudderStack write key
my $RS_B64 = MIME::Base64::encode_base64("$RS_KEY:", '');   # as Basic auth
my $URL_PW = 'PLANTED-urlpw-3b9d27';           # password in a URL's userinfo
my $URL_B64 = MIME::Base64::encode_base64("svc:$URL_PW", '');   # as Basic auth
my $PATH_TOKEN = 'PLANTED-T000-B000-9e4f';      # token in a URL's path

# $query as $role must succeed; returns its output.
sub ok_as
{
	my ($role, $query, $name) = @_;
	my ($rc, $out, $err) = psql_as($node, $role, $query);
	is($rc, 0, $name) or diag($err);
	return $out;
}

# retl_user exists since 0.4; created here if missing (older builds)
sql($node, q{DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'retl_user')
  THEN CREATE ROLE retl_user; END IF; END $$});
sql($node, q{
CREATE ROLE alice IN ROLE retl_user; CREATE ROLE bob IN ROLE retl_user; CREATE ROLE carol IN ROLE retl_admin;
CREATE TABLE orders_a (id int PRIMARY KEY, user_id text, amount numeric);
CREATE TABLE orders_b (id int PRIMARY KEY, user_id text, amount numeric);
INSERT INTO orders_a SELECT g, 'a' || g, g FROM generate_series(1, 20) g;
INSERT INTO orders_b SELECT g, 'b' || g, g FROM generate_series(1, 10) g;
GRANT SELECT ON orders_a TO alice;
GRANT SELECT ON orders_b TO bob;
});

my $mapping = q('{"userId": "user_id", "event": {"value": "Order"}, "properties.amount": "amount"}');
my $hook_a = $recv->url('/alice');
ok_as('alice', qq{
SELECT retl_create_destination('dest_a', 'webhook',
  '{"url": "$hook_a", "secret": "$SECRET", "batch_size": 5,
    "headers": {"Authorization": "Bearer $BEARER"}}');
SELECT retl_create_destination('rs_a', 'rudderstack',
  '{"url": "$hook_a", "write_key": "$RS_KEY"}');
SELECT retl_create_sync('sync_a', 'orders_a', 'dest_a', 'track', $mapping, 'id');
}, 'alice creates her destinations and sync');
my $hook_b = $recv->url('/bob');
ok_as('bob', qq{
SELECT retl_create_destination('dest_b', 'webhook', '{"url": "$hook_b"}');
SELECT retl_create_sync('sync_b', 'orders_b', 'dest_b', 'track', $mapping, 'id');
}, 'bob creates his destination and sync');

my $run_a = ok_as('alice', "SELECT retl_sync_now('sync_a')", 'alice queues her sync');
is(wait_run($node, $run_a), 'succeeded', "alice's run succeeds");
is(scalar @{ $recv->events(path => '/alice') }, 20, "alice's 20 rows arrive");
my $run_b = ok_as('bob', "SELECT retl_sync_now('sync_b')", 'bob queues his sync');
is(wait_run($node, $run_b), 'succeeded', "bob's run succeeds");

# ---------------------------------------------------------------------
# Visibility: each role sees its own rows only; retl_admin sees all.
# ---------------------------------------------------------------------
my $seen = q{
SELECT (SELECT string_agg(name, ',' ORDER BY name) FROM retl.destinations) || ' | ' ||
       (SELECT string_agg(name, ',' ORDER BY name) FROM retl.syncs) || ' | ' ||
       (SELECT string_agg(DISTINCT sync_name, ',') FROM retl.runs) || ' | ' ||
       (SELECT string_agg(sync, ',' ORDER BY sync) FROM retl.sync_status)};
is(ok_as('alice', $seen, 'alice lists'), 'dest_a,rs_a | sync_a | sync_a | sync_a',
	'alice sees only her destinations, syncs, runs and status');
is(ok_as('bob', $seen, 'bob lists'), 'dest_b | sync_b | sync_b | sync_b',
	'bob sees only his');
is(ok_as('carol', $seen, 'carol lists'),
	'dest_a,dest_b,rs_a | sync_a,sync_b | sync_a,sync_b | sync_a,sync_b',
	'a member of retl_admin sees every sync and destination');

# ---------------------------------------------------------------------
# Managing: another role's sync is "permission denied" (42501).
# ---------------------------------------------------------------------
for my $call ("retl_sync_now('sync_a')", "retl_force_full('sync_a')",
	"retl_stop('sync_a')", "retl_drop_sync('sync_a')",
	"retl_disable_sync('sync_a')", "retl_retry_failed('sync_a')",
	"retl_alter_sync('sync_a', options => '{}')", "retl_preview('sync_a')")
{
	fails_as($node, 'bob', "SELECT $call", '42501', "bob: $call");
}
my $err = fails_as($node, 'bob', "SELECT retl_drop_destination('dest_a')", '42501',
	"bob drops alice's destination");
like($err, qr/permission denied for destination "dest_a"/, '... and says so');
fails_as($node, 'bob', qq{SELECT retl_create_sync('sneak', 'orders_b', 'dest_a', 'track', $mapping)},
	'42501', "bob's sync on alice's destination");
fails_as($node, 'bob', q{
INSERT INTO retl.syncs (name, source, destination_id, event_type, mapping)
SELECT 'sneak', 'orders_b', id, 'track', '{"userId": "user_id", "event": "user_id"}'
  FROM retl.destinations WHERE name = 'dest_b';
UPDATE retl.syncs SET destination_id = (SELECT min(id) FROM retl.destinations WHERE name = 'dest_a')
 WHERE name = 'sync_b';
INSERT INTO retl.syncs (name, source, destination_id, event_type, mapping)
VALUES ('sneak2', 'orders_b', 1, 'track', '{"userId": "user_id", "event": "user_id"}')},
	'42501', 'a direct INSERT pointing at a destination bob cannot see');
# a destination made by a direct INSERT has no secrets row: another role
# cannot supply one (it would choose where the owner's events go)
ok_as('alice', q{INSERT INTO retl.destinations (name, kind, config)
  VALUES ('bare_a', 'webhook', '{}')}, 'alice inserts a destination directly');
my $bare = sql($node, "SELECT id FROM retl.destinations WHERE name = 'bare_a'");
fails_as($node, 'bob', qq{INSERT INTO retl.destination_secrets (destination_id, config)
  VALUES ($bare, '{"url": "http://127.0.0.1:9/bob"}')}, '42501',
	"bob's secrets row for alice's destination");
fails_as($node, 'carol', qq{INSERT INTO retl.destination_secrets (destination_id, config)
  VALUES ($bare, '{"url": "http://127.0.0.1:9/carol"}')}, '42501',
	"retl_admin's secrets row for alice's destination");
ok_as('alice', qq{INSERT INTO retl.destination_secrets (destination_id, config)
  VALUES ($bare, '{"url": "http://127.0.0.1:9/alice"}');
DELETE FROM retl.destinations WHERE name = 'bare_a'}, 'alice may supply her own, and drop it');
fails_as($node, 'bob', "UPDATE retl.syncs SET owner = 'alice' WHERE name = 'sync_b'",
	'42501', 'changing the owner of a sync');
fails_as($node, 'bob', "UPDATE retl.runs SET events_sent = 0", '42501',
	'changing the counters of a run');
is(ok_as('bob', "DELETE FROM retl.syncs WHERE name = 'sync_a' RETURNING id", 'bob deletes syncs')
	  . ok_as('bob', "UPDATE retl.syncs SET enabled = false WHERE name = 'sync_a' RETURNING id",
		'bob updates syncs'), '', "bob's direct DELETE and UPDATE reach no row of alice's");
fails_as($node, 'bob', "SELECT * FROM retl.fingerprints", '42501',
	'the diff state is the workers\'');
fails_as($node, 'bob', "SELECT * FROM retl.fingerprint_chunks", '42501',
	'the diff state\'s chunks too');
fails_as($node, 'bob', qq{INSERT INTO retl.fingerprint_chunks (sync_id, chunk, pks, fingerprints, previous)
  SELECT id, 1000000, ARRAY['1'], ARRAY[1], ARRAY[0] FROM retl.syncs LIMIT 1}, '42501',
	'planting a fingerprint (which would hide a row\'s changes)');

# retl_admin: carol manages alice's sync
my $run_c = ok_as('carol', "SELECT retl_force_full('sync_a')",
	'carol (retl_admin) queues a run of alice\'s sync');
is(wait_run($node, $run_c), 'succeeded', '... which succeeds');
is(sql($node, "SELECT kind || ' ' || sync_name FROM retl.runs WHERE id = $run_c"),
	'full sync_a', '... as a full run of sync_a');
ok_as('carol', "SELECT retl_disable_sync('sync_a'); SELECT retl_enable_sync('sync_a')",
	'carol disables and enables it');

# ---------------------------------------------------------------------
# Secrets: only the owner (and superusers) read them.
# ---------------------------------------------------------------------
is(ok_as('alice', q{SELECT s.config->>'secret' FROM retl.destination_secrets s
  JOIN retl.destinations d ON d.id = s.destination_id WHERE d.name = 'dest_a'},
	'alice reads her secrets'), $SECRET, 'the owner reads the secret');
is(ok_as('carol', 'SELECT count(*) FROM retl.destination_secrets', 'carol'), '0',
	'retl_admin members do not read secrets');
is(ok_as('bob', q{SELECT string_agg(config->>'url', ' ') FROM retl.destination_secrets},
	'bob'), $hook_b, 'other roles read only their own');
is(sql($node, q{SELECT config->>'secret' || ' ' || (config->'headers'->>'Authorization')
  FROM retl.destinations WHERE name = 'dest_a'}), '*** ***',
	'retl.destinations shows secrets and credential headers as "***", even to superusers');
is(sql($node, q{SELECT config->>'write_key' FROM retl.destinations WHERE name = 'rs_a'}),
	'***', 'and write keys');

# ---------------------------------------------------------------------
# The planted secret: the destination echoes the request headers (the
# Authorization header with it) in 401 answers; rudderstack's write key
# travels as Basic auth.
# ---------------------------------------------------------------------
ok_as('alice', qq{
SELECT retl_create_sync('sync_rs', 'orders_a', 'rs_a', 'identify',
  '{"userId": "user_id", "traits.amount": "amount"}', 'id')}, 'alice: a rudderstack sync');
# URLs with credentials: a password in the userinfo, a token in the path
(my $url_pw = $recv->url('/userinfo')) =~ s{^http://}{http://svc:$URL_PW\@};
my $url_tok = $recv->url("/hooks/$PATH_TOKEN");
ok_as('alice', qq{
SELECT retl_create_destination('url_a', 'webhook', '{"url": "$url_pw"}');
SELECT retl_create_destination('tok_a', 'webhook', '{"url": "$url_tok", "url_is_secret": true}');
SELECT retl_create_sync('sync_url', 'orders_a', 'url_a', 'track', $mapping, 'id');
SELECT retl_create_sync('sync_tok', 'orders_a', 'tok_a', 'track', $mapping, 'id')},
	'alice: destinations with credentials in their URLs');
like(sql($node, q{SELECT config->>'url' FROM retl.destinations WHERE name = 'url_a'}),
	qr{^http://svc:\*\*\*\@127\.0\.0\.1:\d+/userinfo$}, 'a URL shows its password as "***"');
like(sql($node, q{SELECT config->>'url' FROM retl.destinations WHERE name = 'tok_a'}),
	qr{^http://127\.0\.0\.1:\d+/\*\*\*$}, 'a secret URL shows only its scheme and host');
$recv->config({ status => 401, echo_headers => JSON::PP::true });
for my $sync ('sync_a', 'sync_rs', 'sync_url', 'sync_tok')
{
	my $run = ok_as('alice', "SELECT retl_force_full('$sync')", "queue $sync against 401s");
	my $status = wait_run($node, $run);
	is($status, 'failed', "$sync run fails (a 401 is a 4xx that fails the run)");
}
cmp_ok(sql($node, "SELECT count(*) FROM retl.failed_events WHERE http_status = 401"),
	'>', 0, 'the 401s are failed events');
my $leaked_header = sql($node, qq{SELECT count(*) FROM retl.failed_events
  WHERE response_body LIKE '%Authorization%'});
cmp_ok($leaked_header, '>', 0, 'their response bodies echo the Authorization header');
$recv->config({ status => undef, echo_headers => undef });

# every retl table and view, as text (the secrets store aside)
my %tables = map { $_ => 1 } split /\n/, sql($node, q{
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'retl'::regnamespace AND c.relkind IN ('r', 'v')
   AND c.relname <> 'destination_secrets'});
ok(exists $tables{$_}, "retl.$_ is among the tables searched")
  for qw(runs failed_events syncs destinations sync_status fingerprints);
my $found = '';
for my $t (sort keys %tables)
{
	my $text = sql($node, "SELECT coalesce(string_agg(t::text, ' '), '') FROM retl.$t t");
	for my $s ($SECRET, $BEARER, $RS_KEY, $RS_B64, $URL_PW, $URL_B64, $PATH_TOKEN)
	{
		$found .= "retl.$t holds $s\n" if index($text, $s) >= 0;
	}
}
my $preview = ok_as('alice', "SELECT retl_preview('sync_a', 20)::text", 'preview as alice')
  . ok_as('alice', "SELECT retl_preview('sync_rs', 20)::text", 'preview of sync_rs');
my $log = slurp_file($node->logfile);
for my $s ($SECRET, $BEARER, $RS_KEY, $RS_B64, $URL_PW, $URL_B64, $PATH_TOKEN)
{
	$found .= "retl_preview shows $s\n" if index($preview, $s) >= 0;
	$found .= "the server log holds $s\n" if index($log, $s) >= 0;
}
is($found, '', 'the planted secrets are in no retl table, view, preview or log line');
my $bodies = sql($node, q{SELECT string_agg(response_body, ' ') FROM retl.failed_events});
like($bodies, qr/"Authorization": "\*\*\*"/,
	'the echoed Authorization header shows as "***"');
like($bodies, qr/"Authorization": "Basic \*\*\*"/,
	'and so does the echoed Basic auth of the write key');
ok(index(sql($node, 'SELECT string_agg(config::text, \' \') FROM retl.destination_secrets'),
	$SECRET) >= 0, 'the secrets store itself still holds the secret (superuser)');

# ---------------------------------------------------------------------
# An owner's code runs in the worker (a row-level security policy, a
# view's function) but cannot change the worker's session for the syncs
# of others: a read-only default or a 1 ms statement_timeout would fail
# every later catalog write.
# ---------------------------------------------------------------------
sql($node, q{
CREATE FUNCTION public.meddle(i int) RETURNS int LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM set_config('default_transaction_read_only', 'on', false);
  PERFORM set_config('statement_timeout', '1', false);
  RETURN i;
END $f$;
CREATE TABLE meddling_t (id int PRIMARY KEY, user_id text, amount numeric);
INSERT INTO meddling_t SELECT g, 'm' || g, g FROM generate_series(1, 30) g;
ALTER TABLE meddling_t ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON meddling_t FOR SELECT USING (public.meddle(id) > 0);
CREATE VIEW meddling_v AS SELECT id, user_id, amount, public.meddle(id) AS m FROM meddling_t;
GRANT SELECT ON meddling_t, meddling_v TO alice;
});
my $hook_m = $recv->url('/meddle');
ok_as('alice', qq{SELECT retl_create_destination('dest_m', 'webhook', '{"url": "$hook_m"}');
SELECT retl_create_sync('m_table', 'meddling_t', 'dest_m', 'track', $mapping, 'id');
SELECT retl_create_sync('m_view', 'meddling_v', 'dest_m', 'track', $mapping, 'id')}, 'alice syncs a table and a view that change settings');
for my $sync ('m_table', 'm_view')
{
	my $run = ok_as('alice', "SELECT retl_sync_now('$sync')", "queue $sync");
	is(wait_run($node, $run), 'succeeded', "$sync: the run succeeds");
	my $after = ok_as('bob', "SELECT retl_force_full('sync_b')", "then bob's sync");
	is(wait_run($node, $after), 'succeeded',
		"after $sync, another owner's run in the same worker succeeds");
}
is(scalar @{ $recv->events(path => '/meddle') }, 60, 'both meddling syncs delivered');

# ---------------------------------------------------------------------
# Dropping: a destination with another role's syncs is refused.
# ---------------------------------------------------------------------
sql($node, 'GRANT SELECT ON orders_b TO carol');
ok_as('carol', qq{SELECT retl_create_sync('sync_c', 'orders_b', 'dest_b', 'track', $mapping)},
	"carol (retl_admin) creates a sync on bob's destination");
$err = fails_as($node, 'bob', "SELECT retl_drop_destination('dest_b', cascade => true)", '2BP01',
	'bob drops his destination that carol\'s sync uses');
like($err, qr/used by syncs of other roles/, '... and is told why');
ok_as('carol', "SELECT retl_drop_sync('sync_c')", 'carol drops her sync');
ok_as('bob', "SELECT retl_drop_destination('dest_b', cascade => true)",
	'then bob drops his destination');
is(sql($node, "SELECT count(*) FROM retl.syncs WHERE name = 'sync_b'"), '0',
	'and his sync went with it');
is(sql($node, 'SELECT count(*) FROM retl.destination_secrets s WHERE NOT EXISTS '
	  . '(SELECT 1 FROM retl.destinations d WHERE d.id = s.destination_id)'), '0',
	'no orphan secrets');

# ---------------------------------------------------------------------
# A dropped owner: PostgreSQL does not know retl's rows, so DROP ROLE
# succeeds; the sync's next run says what happened.
# ---------------------------------------------------------------------
sql($node, 'CREATE ROLE dave IN ROLE retl_user; GRANT SELECT ON orders_a TO dave');
my $hook_d = $recv->url('/dave');
ok_as('dave', qq{SELECT retl_create_destination('dest_d', 'webhook', '{"url": "$hook_d"}');
SELECT retl_create_sync('sync_d', 'orders_a', 'dest_d', 'track', $mapping, 'id')},
	'dave creates a sync');
sql($node, 'REVOKE SELECT ON orders_a FROM dave; DROP ROLE dave');
my $run_d = sql($node, "SELECT retl_sync_now('sync_d')");
is(wait_run($node, $run_d), 'failed', "the run of a dropped role's sync fails");
like(sql($node, "SELECT error FROM retl.runs WHERE id = $run_d"),
	qr/the owner of sync "sync_d" \(role OID \d+\) no longer exists/, '... saying why');
is(scalar @{ $recv->all_events(path => '/dave') }, 0, '... and sends nothing');

done_testing();
