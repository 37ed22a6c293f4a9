# Webhook formats and signatures against test/receiver.py: "format":
# "ndjson" (application/x-ndjson, one event a line) and "object" (one event
# per request), and "secret": every request, retries included, carries
# X-Retl-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, t + "." + body)>,
# checked here over the raw bytes of the body.
use strict;
use warnings;
use Digest::SHA qw(hmac_sha256_hex);
use Encode qw(encode_utf8);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use RetlTest;
use RetlVendors;

my $N = 200;
my $SECRET = 'whsec-retl-test-6c51f0e2';

my $node = retl_node('webhook');
my $recv = start_receiver();
create_orders($node, 'orders', $N);
# non-ASCII text: the signature covers the UTF-8 bytes of the body
sql($node, "UPDATE orders SET status = 'payé ✓' WHERE id % 10 = 0");

# ----- create-time validation ------------------------------------------------
my $url = $recv->url('/x');
sql_fails($node, qq{SELECT retl_create_destination('x', 'webhook', '{"url": "$url", "format": "xml"}')},
	'22023', qr/invalid webhook format "xml"/, 'an unknown format is refused');
sql_fails($node, qq{SELECT retl_create_destination('x', 'webhook', '{"url": "$url", "secret": ""}')},
	'22023', qr/"secret" must not be empty/, 'an empty secret is refused');
sql_fails($node, qq{SELECT retl_create_destination('x', 'webhook', '{"url": "$url", "format": "object", "batch_size": 2}')},
	'22023', qr/between 1 and 1/, '"object" sends one event per request: batch_size 2 is refused');
sql_fails($node, qq{SELECT retl_create_destination('x', 'webhook', '{"url": "ws://127.0.0.1/x"}')},
	'22023', qr/http or https/, 'a non-http url is refused');

# ----- ndjson ----------------------------------------------------------------------
create_webhook($node, 'nd', $recv->url('/nd'), format => 'ndjson', batch_size => 50);
create_track_sync($node, 'nd', 'orders', 'nd');
my ($run, $status) = run_sync($node, 'nd');
is($status, 'succeeded', 'ndjson: the run succeeded');
my $reqs = [ grep { $_->{path} eq '/nd' } @{ $recv->requests } ];
my @bad = grep { ($_->{headers}{'content-type'} // '') ne 'application/x-ndjson' } @$reqs;
ok(@$reqs && !@bad, 'ndjson: Content-Type is application/x-ndjson')
  or diag($bad[0]{headers}{'content-type'});
my (@why, @sizes);
for my $q (@$reqs)
{
	my $body = $q->{body};
	push @why, "request $q->{seq} does not end with a newline" unless $body =~ /\n\z/;
	my @lines = split /\n/, $body;
	push @sizes, scalar @lines;
	for my $line (@lines)
	{
		my $e = eval { json_decode(encode_utf8($line)) };
		push @why, "request $q->{seq}: a line is not one JSON event: " . substr($line, 0, 60)
		  unless ref $e eq 'HASH' && defined $e->{messageId};
	}
}
ok(!@why, 'ndjson: each line is one JSON event, and the body ends with a newline')
  or diag(join("\n", @why[ 0 .. ($#why < 4 ? $#why : 4) ]));
is(max_of(@sizes), 50, 'ndjson: batch_size 50 events per request') or diag("sizes: @sizes");
check_ids(event_ids($recv->events(path => '/nd')), [ 1 .. $N ], 'ndjson: every row exactly once');

# A json (not jsonb) column keeps its text as written, newlines included:
# retl sends it compactly, so each event stays on one NDJSON line.
sql($node, qq{CREATE TABLE docs (id bigint PRIMARY KEY, user_id text NOT NULL, doc json);
INSERT INTO docs VALUES (1, 'user-1', '{"a":\n 1, "b": [1,\r\n\t2], "s": "x \\n y"}'),
  (2, 'user-2', '[\n]'), (3, 'user-3', '  "text"\n');});
create_webhook($node, 'ndjson_docs', $recv->url('/docs'), format => 'ndjson');
create_track_sync($node, 'docs', 'docs', 'ndjson_docs',
	mapping => { userId => 'user_id', event => { value => 'Order Completed' } });
($run, $status) = run_sync($node, 'docs');
is($status, 'succeeded', 'ndjson json column: the run succeeded');
my ($doc_req) = grep { $_->{path} eq '/docs' } @{ $recv->requests };
my @doc_lines = split /\n/, ($doc_req->{body} // '');
is(scalar(grep { ref(eval { json_decode(encode_utf8($_)) }) eq 'HASH' } @doc_lines), 3,
	'ndjson json column: three events, each one JSON line, despite newlines in the json values')
  or diag($doc_req->{body});
my %docs = map { (dig($_, qw(properties id)) => dig($_, qw(properties doc))) }
  @{ $recv->events(path => '/docs') };
is(json_encode([ @docs{ 1 .. 3 } ]), '[{"a":1,"b":[1,2],"s":"x \\n y"},[],"text"]',
	'ndjson json column: the json values arrive intact');
like($doc_req->{body} // '', qr/"doc":\{"a":1,"b":\[1,2\],"s":"x \\n y"\}/,
	'ndjson json column: sent compactly, the string inside untouched');

# ----- object --------------------------------------------------------------------------
sql($node, q{CREATE TABLE few AS SELECT * FROM orders WHERE id <= 30; ALTER TABLE few ADD PRIMARY KEY (id);});
create_webhook($node, 'obj', $recv->url('/obj'), format => 'object');
create_track_sync($node, 'obj', 'few', 'obj');
($run, $status) = run_sync($node, 'obj');
is($status, 'succeeded', 'object: the run succeeded');
$reqs = [ grep { $_->{path} eq '/obj' } @{ $recv->requests } ];
is(scalar @$reqs, 30, 'object: one request per event');
@bad = grep {
	my $e = eval { json_decode(encode_utf8($_->{body})) };
	!(ref $e eq 'HASH' && defined $e->{messageId} && $_->{body} =~ /^\s*\{/)
	  || ($_->{headers}{'content-type'} // '') !~ m{^application/json}
} @$reqs;
ok(!@bad, 'object: each body is one JSON event object (application/json)')
  or diag(substr($bad[0]{body}, 0, 200));
check_ids(event_ids($recv->events(path => '/obj')), [ 1 .. 30 ], 'object: every row exactly once');

# ----- signatures ----------------------------------------------------------------
# The first delivery fails (503): its retry is signed anew.
$recv->config({ fail_first => 1, fail_status => 503 });
create_webhook($node, 'signed', $recv->url('/signed'), format => 'ndjson', batch_size => 25,
	secret => $SECRET, max_backoff_ms => 50);
create_track_sync($node, 'signed', 'orders', 'signed');
($run, $status) = run_sync($node, 'signed');
is($status, 'succeeded', 'signed: the run succeeded');
$reqs = [ grep { $_->{path} eq '/signed' } @{ $recv->requests } ];
is(scalar(grep { ($_->{status} // 0) == 503 } @$reqs), 1, 'signed: one delivery was answered 503 and retried');
my $now = time();
@why = ();
my $checked = 0;
for my $q (@$reqs)
{
	my $h = $q->{headers}{'x-retl-signature'} // '';
	my ($t, $sig) = $h =~ /^t=(\d+),v1=([0-9a-f]{64})$/;
	unless (defined $sig)
	{
		push @why, "request $q->{seq}: X-Retl-Signature '$h' is not t=<unix>,v1=<64 hex>";
		next;
	}
	my $raw = encode_utf8($q->{body});
	my $want = hmac_sha256_hex("$t.$raw", $SECRET);
	push @why, "request $q->{seq}: v1 $sig is not HMAC-SHA256(secret, t.body) $want" if $sig ne $want;
	push @why, "request $q->{seq}: t=$t is not the time of sending (now $now)"
	  if abs($t - $q->{time}) > 5;
	push @why, "request $q->{seq}: the signature also verifies with another secret"
	  if hmac_sha256_hex("$t.$raw", "$SECRET-other") eq $sig;
	$checked++;
}
ok($checked == @$reqs && $checked > 0 && !@why,
	"signed: all $checked requests carry a valid X-Retl-Signature over t + \".\" + raw body")
  or diag(join("\n", @why[ 0 .. ($#why < 4 ? $#why : 4) ]));
my @failed = grep { ($_->{status} // 0) == 503 } @$reqs;
my @retry = grep { $_->{seq} > ($failed[0]{seq} // 0) && $_->{body} eq ($failed[0]{body} // '') } @$reqs;
ok(@failed && @retry, 'signed: the failed delivery was sent again with the same body, signed again')
  or diag('no retry of the failed body found');
ok(!grep({ exists $_->{headers}{'x-retl-signature'} } grep { $_->{path} ne '/signed' } @{ $recv->requests }),
	'webhooks without a secret send no signature');
check_ids(event_ids($recv->events(path => '/signed')), [ 1 .. $N ], 'signed: every row exactly once');
my $events = $recv->events(path => '/signed');
my ($accent) = grep { (dig($_, qw(properties id)) // 0) == 10 } @$events;
is(dig($accent, qw(properties status)) // '', "pay\x{e9} \x{2713}", 'signed: non-ASCII text arrives intact');

is(sql($node, "SELECT retl._redact(config)->>'secret' FROM retl.destinations WHERE name = 'signed'"),
	'***', 'retl._redact hides the signing secret');
secret_nowhere($node, $SECRET, 'the signing secret appears in no run error or failed event');

stop_ok($node);
done_testing();
