# Credentials in destination URLs are redacted (issue 12, item 3): the
# password of a URL's userinfo (or a user name without one) always shows
# as "***" in retl.destinations, to retl_admin as to anyone, and is
# scrubbed from run errors and failed events with its Basic auth form;
# "url_is_secret": true keeps the whole URL a secret, shown as scheme and
# host only.  The full URL stays in retl.destination_secrets for the
# owner, and is what the worker sends to.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MIME::Base64 ();
use RetlTest;

my $node = retl_node('urlcreds', conf => "log_statement = 'none'\n");
my $recv = start_receiver();
my $port = $recv->{port};
create_orders($node, 'orders', 10);
# retl_user exists since 0.4 (CREATE EXTENSION creates it); created here
# if missing, so that the test also runs, and fails, on older builds
sql($node, q{DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'retl_user')
  THEN CREATE ROLE retl_user; END IF; END $$});
sql($node, q{
CREATE ROLE alice LOGIN IN ROLE retl_user;
CREATE ROLE carol LOGIN IN ROLE retl_admin;
GRANT SELECT ON orders TO alice;
});
my $PW = 'S3cr3tPw-1c2d';
my $TOKEN = 'TOK-B000-XXXX-77aa';
my $USER_TOKEN = 'usertok-9f8e7d';

# $query as $role must succeed; returns its output.
sub ok_as
{
	my ($role, $query, $name) = @_;
	my ($rc, $out, $err) = psql_as($node, $role, $query);
	is($rc, 0, $name) or diag($err);
	return $out;
}

my $mapping = q('{"userId": "user_id", "event": {"value": "Order"}}');
ok_as('alice', qq{
SELECT retl_create_destination('d_pw', 'webhook', '{"url": "http://svc:$PW\@127.0.0.1:$port/pw"}');
SELECT retl_create_destination('d_user', 'webhook', '{"url": "http://$USER_TOKEN\@127.0.0.1:$port/user"}');
SELECT retl_create_destination('d_tok', 'webhook',
  '{"url": "http://127.0.0.1:$port/hooks/$TOKEN", "url_is_secret": true}');
SELECT retl_create_destination('d_plain', 'webhook', '{"url": "http://127.0.0.1:$port/plain?a=1"}');
SELECT retl_create_destination('k_pw', 'kafka_rest',
  '{"url": "http://svc:$PW\@127.0.0.1:$port", "topic": "t"}');
SELECT retl_create_sync('s_pw', 'orders', 'd_pw', 'track', $mapping, 'id');
SELECT retl_create_sync('s_tok', 'orders', 'd_tok', 'track', $mapping, 'id');
}, 'alice creates destinations with credentials in their URLs');

my %want = (
	d_pw => "http://svc:***\@127.0.0.1:$port/pw",
	d_user => "http://***\@127.0.0.1:$port/user",
	d_tok => "http://127.0.0.1:$port/***",
	d_plain => "http://127.0.0.1:$port/plain?a=1",
	k_pw => "http://svc:***\@127.0.0.1:$port/",
);
for my $role ('carol', 'alice', undef)
{
	my $who = $role // 'a superuser';
	for my $d (sort keys %want)
	{
		is(ok_as($role, "SELECT config->>'url' FROM retl.destinations WHERE name = '$d'",
				"$who reads $d"),
			$want{$d}, "$who sees the URL of $d as $want{$d}");
	}
	my $all = ok_as($role, 'SELECT string_agg(config::text, \' \') FROM retl.destinations',
		"$who reads every config");
	unlike($all, qr/\Q$PW\E|\Q$TOKEN\E|\Q$USER_TOKEN\E/,
		"no credential of a URL in retl.destinations for $who");
}
like(ok_as('alice', q{SELECT s.config->>'url' FROM retl.destination_secrets s
  JOIN retl.destinations d ON d.id = s.destination_id WHERE d.name = 'd_tok'}, 'alice reads her secrets'),
	qr/\Q$TOKEN\E/, 'the owner finds the whole URL in retl.destination_secrets');
fails_as($node, 'alice', qq{SELECT retl_create_destination('d_bad', 'webhook',
  '{"url": "http://127.0.0.1:$port/x", "url_is_secret": "yes"}')}, '22023',
	'url_is_secret must be a boolean');

# the worker sends to the whole URL, credentials included
my $run = ok_as('alice', q{SELECT retl_sync_now('s_tok')}, 'queue the secret-URL sync');
is(wait_run($node, $run), 'succeeded', 'it succeeds');
is(scalar @{ $recv->events(path => "/hooks/$TOKEN") }, 10, 'its events went to the whole URL');
$run = ok_as('alice', q{SELECT retl_sync_now('s_pw')}, 'queue the userinfo sync');
is(wait_run($node, $run), 'succeeded', 'it succeeds');
is(scalar @{ $recv->events(path => '/pw') }, 10, 'its events arrive');

# failures that echo the request: no credential in runs or failed events
$recv->config({ status => 401, echo_headers => JSON::PP::true });
for my $s ('s_pw', 's_tok')
{
	$run = ok_as('alice', "SELECT retl_force_full('$s')", "queue $s against 401s");
	like(wait_run($node, $run), qr/^(succeeded|failed)$/, "$s ends");
}
$recv->config({ status => undef, echo_headers => undef });
my $b64 = MIME::Base64::encode_base64("svc:$PW", '');
my $text = sql($node, q{SELECT coalesce(string_agg(f::text, ' '), '') FROM retl.failed_events f})
  . sql($node, q{SELECT coalesce(string_agg(r::text, ' '), '') FROM retl.runs r})
  . sql($node, q{SELECT coalesce(string_agg(s::text, ' '), '') FROM retl.sync_status s});
cmp_ok(sql($node, 'SELECT count(*) FROM retl.failed_events WHERE http_status = 401'), '>', 0,
	'the 401s are failed events');
like($text, qr/Basic \*\*\*/, 'the echoed Basic auth of the userinfo shows as "***"');
for my $s ($PW, $b64, $TOKEN)
{
	unlike($text, qr/\Q$s\E/, "retl.runs, failed_events and sync_status do not hold $s");
}
my $log = slurp_file($node->logfile);
for my $s ($PW, $b64, $TOKEN, $USER_TOKEN)
{
	ok(index($log, $s) < 0, "the server log does not hold $s");
}

done_testing();
