# Mirror deletions on every destination kind that takes identify (every
# kind but statsig): each deleted key becomes one deletion record in the
# kind's own format, addressed to the user the key's last event was sent
# to -- by userId, and by anonymousId when the mapping has no userId:
#   - webhook, segment, rudderstack: an identify with userId (or
#     anonymousId), the mapped traits null, context.retl.deleted;
#   - braze: an attributes object of external_id (or user_alias) with the
#     mapped attributes null (Braze removes a null attribute);
#   - iterable: a bulkUpdate user with userId and null dataFields;
#   - amplitude: an $identify of user_id (or device_id) that $unsets the
#     mapped user properties (Amplitude ignores null values);
#   - mixpanel: an /engage $unset of the mapped properties for
#     $distinct_id;
#   - kinesis: a record keyed by the user whose data is the deletion event;
#   - kafka_rest v2 and v3: a record keyed by the user whose value is it.
#   - amplitude with on_delete {"event": ...}: a track event of that name.
# Measured at the receiver and test/vendors.py.  On the build before the
# identity was computed in C, every kind but the webhook/Segment shape sent
# its deletions with "anonymousId": null, to no user.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MIME::Base64 qw(decode_base64);
use RetlTest;
use RetlChange;
use RetlVendors;

my $node = retl_node('mirror_kinds');
my $v = start_vendors();
my $recv = start_receiver();
my $url = $v->url;

sql($node, q{
CREATE TABLE people (id int PRIMARY KEY, user_id text NOT NULL, anon_id text NOT NULL,
					 email text, plan text);
INSERT INTO people SELECT g, 'user-' || g, 'anon-' || g, 'p' || g || '@example.com', 'free'
  FROM generate_series(1, 6) g;
});

my %KINESIS = (region => 'us-east-1', stream => 'events', access_key_id => 'AKIDTEST',
	secret_access_key => 'kinesis-secret', endpoint => "$url/");
my @KINDS = (
	[ 'webhook', 'webhook', { url => $recv->url('/hook') } ],
	[ 'segment', 'segment', { url => $recv->url(''), write_key => 'wk' } ],
	[ 'rudder', 'rudderstack', { url => $recv->url(''), write_key => 'wk' } ],
	[ 'braze', 'braze', { url => $url, api_key => 'k' } ],
	[ 'iterable', 'iterable', { url => $url, api_key => 'k' } ],
	[ 'amplitude', 'amplitude', { url => $url, api_key => 'k' } ],
	[ 'mixpanel', 'mixpanel', { url => $url, project_token => 'tok', api_secret => 's' } ],
	[ 'kinesis', 'kinesis', \%KINESIS ],
	[ 'kafka2', 'kafka_rest', { url => $url, topic => 'k2' } ],
	[ 'kafka3', 'kafka_rest', { url => $url, topic => 'k3', api_version => 'v3',
			cluster_id => 'c1' } ],
);
my %ID = (u => 'userId', a => 'anonymousId');
my %COL = (u => 'user_id', a => 'anon_id');
my %PREFIX = (u => 'user', a => 'anon');

# One mirror identify sync per kind and identity, plus an on_delete event.
my @syncs;
for my $k (@KINDS)
{
	my ($name, $kind, $cfg) = @$k;
	create_dest($node, $name, $kind, { %$cfg, max_backoff_ms => 50 });
	for my $who ('u', 'a')
	{
		create_sync($node, name => "${name}_$who", source => 'people', destination => $name,
			event_type => 'identify', mode => 'mirror', options => { unmapped => 'drop' },
			mapping => { $ID{$who} => $COL{$who}, 'traits.email' => 'email',
				'traits.plan' => 'plan' });
		push @syncs, "${name}_$who";
	}
}
create_sync($node, name => 'amplitude_e', source => 'people', destination => 'amplitude',
	event_type => 'identify', mode => 'mirror',
	options => { unmapped => 'drop', on_delete => { event => 'User Deleted' } },
	mapping => { userId => 'user_id', 'traits.email' => 'email', 'traits.plan' => 'plan' });
push @syncs, 'amplitude_e';

# Braze, Iterable and Mixpanel requests carry one event type: a track
# deletion event is refused when the sync is created or altered.
for my $kind (qw(braze iterable mixpanel))
{
	fails_as($node, undef, qq{SELECT retl_create_sync('${kind}_e', 'people', '$kind', 'identify',
	  '{"userId": "user_id"}', 'id', 'mirror', '{"on_delete": {"event": "User Deleted"}}')},
		'0A000', "$kind: a mirror sync with on_delete {\"event\"} is refused");
	fails_as($node, undef, qq{SELECT retl_alter_sync('${kind}_u',
	  options => '{"unmapped": "drop", "on_delete": {"event": "User Deleted"}}')},
		'0A000', "$kind: ... and so is altering a mirror sync to it");
}

sync_run($node, $_, "$_: first run", kind => 'full') for @syncs;

sql($node, 'DELETE FROM people WHERE id IN (2, 5)');
$v->reset;
$recv->reset;
for my $s (@syncs)
{
	my ($id, $r) = sync_run($node, $s, "$s: run after the deletes");
	is("$r->{rows_deleted}/$r->{events_sent}/$r->{events_succeeded}", '2/2/2',
		"$s: two keys deleted, two deletion records sent and acknowledged");
}

# Checks one kind's deletion records: exactly one per deleted key, each
# passing $check (which returns a list of problems), addressed to the
# expected users.
sub deletions_ok
{
	my ($what, $who, $recs, $user_of, $check) = @_;
	my @why;
	for my $rec (@$recs)
	{
		push @why, map { "$_ in " . json_encode($rec) } $check->($rec);
	}
	my @users = sort map { $user_of->($_) // 'undef' } @$recs;
	is(join(',', @users), "$PREFIX{$who}-2,$PREFIX{$who}-5",
		"$what: one deletion record for each deleted key, to the user last sent");
	ok(!@why, "$what: in the kind's own deletion format") or diag(join("\n", @why));
}

# Problems of a standard deletion event (webhook shape) of identity $who.
sub standard_deletion
{
	my ($ev, $who) = @_;
	my @why;
	push @why, 'not an identify' unless ($ev->{type} // '') eq 'identify';
	push @why, 'not marked context.retl.deleted' unless dig($ev, 'context', 'retl', 'deleted');
	push @why, "$ID{$who} missing" unless defined $ev->{ $ID{$who} };
	push @why, 'carries the other identity' if exists $ev->{ $ID{ $who eq 'u' ? 'a' : 'u' } };
	my $t = $ev->{traits};
	push @why, 'traits are not {email: null, plan: null}'
	  unless ref $t eq 'HASH' && join(',', sort keys %$t) eq 'email,plan'
	  && !grep { defined } values %$t;
	return @why;
}

for my $who ('u', 'a')
{
	my $id = $ID{$who};

	# webhook, segment, rudderstack: the standard event
	for my $s ([ 'webhook', '/hook' ], [ 'segment', '/v1/batch' ], [ 'rudder', '/v1/batch' ])
	{
		my $evs = [ grep { dig($_, 'context', 'retl', 'deleted') }
			  @{ $recv->events(sync => "$s->[0]_$who", path => $s->[1]) } ];
		deletions_ok("$s->[0] ($id)", $who, $evs, sub { $_[0]{$id} },
			sub { standard_deletion($_[0], $who) });
	}

	# braze: attributes objects
	my $recs = [ grep { ($_->{user} // '') =~ /^$PREFIX{$who}-/ }
		  @{ $v->records(vendor => 'braze') } ];
	deletions_ok("braze ($id)", $who, $recs, sub { $_[0]{user} }, sub {
		my ($r) = @_;
		my $o = $r->{record};
		my @why;
		push @why, "array $r->{kind}, not attributes" unless $r->{kind} eq 'attributes';
		if ($who eq 'u')
		{
			push @why, 'no external_id' unless ($o->{external_id} // '') eq $r->{user};
		}
		else
		{
			push @why, 'no user_alias'
			  unless (dig($o, 'user_alias', 'alias_name') // '') eq $r->{user}
			  && (dig($o, 'user_alias', 'alias_label') // '') eq 'anonymous_id';
			push @why, 'an external_id' if exists $o->{external_id};
		}
		my %attr = map { $_ => $o->{$_} } grep { $_ ne 'external_id' && $_ ne 'user_alias' } keys %$o;
		push @why, 'attributes are not {email: null, plan: null}'
		  unless join(',', sort keys %attr) eq 'email,plan' && !grep { defined } values %attr;
		return @why;
	});

	# iterable: bulkUpdate users
	$recs = [ grep { ($_->{user} // '') =~ /^$PREFIX{$who}-/ }
		  @{ $v->records(vendor => 'iterable') } ];
	deletions_ok("iterable ($id)", $who, $recs, sub { $_[0]{user} }, sub {
		my ($r) = @_;
		my $o = $r->{record};
		my @why;
		push @why, "array $r->{kind}, not users" unless $r->{kind} eq 'users';
		push @why, 'userId is not the user' unless ($o->{userId} // '') eq $r->{user};
		my $d = $o->{dataFields};
		push @why, 'dataFields are not {email: null, plan: null}'
		  unless ref $d eq 'HASH' && join(',', sort keys %$d) eq 'email,plan'
		  && !grep { defined } values %$d;
		return @why;
	});

	# amplitude: $identify with $unset
	$recs = [ grep { ($_->{user} // '') =~ /^$PREFIX{$who}-/
			  && ($_->{record}{event_type} // '') ne 'User Deleted' }
		  @{ $v->records(vendor => 'amplitude') } ];
	deletions_ok("amplitude ($id)", $who, $recs, sub { $_[0]{user} }, sub {
		my ($r) = @_;
		my $o = $r->{record};
		my $key = $who eq 'u' ? 'user_id' : 'device_id';
		my @why;
		push @why, 'not an $identify' unless ($o->{event_type} // '') eq '$identify';
		push @why, "$key is not the user" unless ($o->{$key} // '') eq $r->{user};
		push @why, 'no insert_id' unless $o->{insert_id};
		my $up = $o->{user_properties};
		push @why, 'user_properties are not {"$unset": {email: "-", plan: "-"}}'
		  unless ref $up eq 'HASH' && join(',', keys %$up) eq '$unset'
		  && json_encode($up->{'$unset'}) eq '{"email":"-","plan":"-"}';
		return @why;
	});

	# mixpanel: /engage $unset
	$recs = [ grep { ($_->{user} // '') =~ /^$PREFIX{$who}-/ }
		  @{ $v->records(vendor => 'mixpanel') } ];
	deletions_ok("mixpanel ($id)", $who, $recs, sub { $_[0]{user} }, sub {
		my ($r) = @_;
		my $o = $r->{record};
		my @why;
		push @why, "endpoint $r->{kind}, not engage" unless $r->{kind} eq 'engage';
		push @why, 'no $token' unless ($o->{'$token'} // '') eq 'tok';
		push @why, '$distinct_id is not the user' unless ($o->{'$distinct_id'} // '') eq $r->{user};
		push @why, 'not an $unset of email and plan (alone)'
		  unless ref $o->{'$unset'} eq 'ARRAY'
		  && join(',', sort @{ $o->{'$unset'} }) eq 'email,plan'
		  && join(',', sort keys %$o) eq '$distinct_id,$token,$unset';
		return @why;
	});

	# kinesis: the deletion event as the record's data, keyed by the user
	$recs = [ grep { ($_->{user} // '') =~ /^$PREFIX{$who}-/ }
		  @{ $v->records(vendor => 'kinesis') } ];
	deletions_ok("kinesis ($id)", $who, $recs, sub { $_[0]{user} }, sub {
		my ($r) = @_;
		my $ev = eval { json_decode(decode_base64($r->{record}{Data} // '')) } // {};
		my @why = standard_deletion($ev, $who);
		push @why, 'the data is not the user\'s' unless ($ev->{$id} // '') eq $r->{user};
		return @why;
	});

	# kafka_rest v2 and v3: the deletion event as the value, keyed by the user
	for my $topic ('k2', 'k3')
	{
		$recs = [ grep { $_->{kind} eq $topic && ($_->{user} // '') =~ /^$PREFIX{$who}-/ }
			  @{ $v->records(vendor => 'kafka') } ];
		deletions_ok("kafka_rest $topic ($id)", $who, $recs, sub { $_[0]{user} }, sub {
			my ($r) = @_;
			my $ev = $topic eq 'k2' ? $r->{record}{value} : dig($r->{record}, 'value', 'data');
			my @why = standard_deletion($ev // {}, $who);
			push @why, 'the value is not the user\'s' unless ($ev->{$id} // '') eq $r->{user};
			return @why;
		});
	}
}

# amplitude, on_delete {"event": "User Deleted"}: a track event per key
my $recs = [ grep { ($_->{record}{event_type} // '') eq 'User Deleted' }
	  @{ $v->records(vendor => 'amplitude') } ];
deletions_ok('amplitude (on_delete event)', 'u', $recs, sub { $_[0]{user} }, sub {
	my $o = $_[0]{record};
	my @why;
	push @why, 'user_id is not the user' unless ($o->{user_id} // '') eq $_[0]{user};
	push @why, 'user_properties in a track event' if exists $o->{user_properties};
	push @why, 'no event_properties' unless ref $o->{event_properties} eq 'HASH';
	return @why;
});

stop_ok($node);
done_testing();
