-- retl_preview shows events exactly as they would be sent, for every type
-- of the type mapping.  sentAt and originalTimestamp are the time of the
-- preview, so they are checked for their format and then removed.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS retl;
RESET client_min_messages;
SELECT retl_create_destination('preview_hook', 'webhook', '{"url": "http://127.0.0.1:9/"}') > 0 AS ok;
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TYPE address AS (street text, zip int);
CREATE TABLE everything (
  id bigint PRIMARY KEY,
  user_id int,
  i2 smallint, i4 int, i8 bigint, f4 real, f8 double precision, num numeric,
  flag boolean, t text, vc varchar(10), ch char(3),
  ts timestamptz, tsn timestamp, d date,
  j json, jb jsonb, arr int[], tarr text[], nested int[][],
  addr address, bin bytea, m mood, u uuid, iv interval, nul text
);
SET timezone = 'America/New_York';
INSERT INTO everything VALUES (
  1, 42, -2, 4, 9007199254740993, 1.5, -0.25, 12345.678900, true,
  E'quote " backslash \\ newline \n tab \t', 'varchar', 'ab',
  '2024-03-05 10:11:12.345678+01', '2024-03-05 10:11:12.3', '2024-03-05',
  '{"a": [1, 2]}', '{"b": {"c": null}}', '{1,NULL,3}', '{"x","y z"}', '{{1,2},{3,4}}',
  ROW('Main St', 12345), '\x00ff10', 'happy', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '1 day 02:03:04', NULL);
INSERT INTO everything (id, user_id, f8, num) VALUES (2, 7, 'NaN', 'Infinity');

SELECT retl_create_sync('everything', 'everything', 'preview_hook', 'track',
  '{"userId": "user_id", "event": {"value": "Everything"},
    "properties.address.city": {"value": "Paris"}, "context.campaign.name": {"value": "spring"},
    "context.ip": {"value": "10.0.0.1"}}',
  primary_key => 'id') > 0 AS ok;

SELECT e->>'sentAt' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$' AS sent_at_format,
       e->>'originalTimestamp' = e->>'sentAt' AS same_times,
       e->>'timestamp' = e->>'originalTimestamp' AS default_timestamp,
       length(e->>'messageId') AS message_id_length
  FROM retl_preview('everything', 1) e;
SELECT jsonb_pretty(e - 'sentAt' - 'originalTimestamp' - 'timestamp' - 'messageId')
  FROM retl_preview('everything') e ORDER BY e->'properties'->>'id';

-- the messageId is deterministic
SELECT count(DISTINCT e->>'messageId') AS distinct_ids
  FROM (SELECT * FROM retl_preview('everything') UNION ALL SELECT * FROM retl_preview('everything')) x(e);

-- nulls: keep, unmapped: drop, a mapped timestamp, an identify sync
SELECT retl_create_sync('ident', 'everything', 'preview_hook', 'identify',
  '{"userId": "user_id", "traits.when": "ts", "traits.gone": "nul", "timestamp": "d"}',
  options => '{"unmapped": "drop", "nulls": "keep"}') > 0 AS ok;
SELECT jsonb_pretty(e - 'sentAt' - 'originalTimestamp' - 'messageId')
  FROM retl_preview('ident', 1) e;
SELECT count(*) FROM retl_preview('ident', 0);
SELECT retl_preview('ident', -1);
SELECT retl_preview('nope');
-- unmapped columns are keys under their own names, dots included; a name
-- the mapping already uses (as an object) is left out
CREATE TABLE dotted (id int PRIMARY KEY, "a.b" int, age int, "x.y" text);
INSERT INTO dotted VALUES (1, 5, 40, NULL);
SELECT retl_create_sync('dotted', 'dotted', 'preview_hook', 'track',
  '{"userId": "id", "event": {"value": "E"}, "properties.age.years": "age"}') > 0 AS ok;
SELECT e->'properties' AS properties FROM retl_preview('dotted', 1) e;
RESET timezone;

-- Previews show the destination kind's records, as the worker encodes
-- them (format 'records', the default); format 'standard' shows the
-- standard events.  Kinds without an encoding of their own send the
-- standard event: both formats agree.  A mapped timestamp keeps the
-- records' times fixed; messageIds are compared, then removed.
CREATE TABLE shop (id int PRIMARY KEY, user_id text, anon_id text, amount numeric,
                   plan text, created_at timestamptz);
INSERT INTO shop VALUES (1, 'user-1', NULL, 9.5, 'free', '2024-03-05 10:11:12.345+00'),
                        (2, NULL, 'anon-2', 20, 'pro', '2024-03-06 00:00:00+00');
SELECT retl_create_destination('p_braze', 'braze', '{"url": "http://127.0.0.1:9", "api_key": "planted-braze-key"}') > 0 AS ok;
SELECT retl_create_destination('p_iterable', 'iterable', '{"url": "http://127.0.0.1:9", "api_key": "planted-iterable-key"}') > 0 AS ok;
SELECT retl_create_destination('p_amplitude', 'amplitude', '{"url": "http://127.0.0.1:9", "api_key": "planted-amplitude-key"}') > 0 AS ok;
SELECT retl_create_destination('p_mixpanel', 'mixpanel', '{"url": "http://127.0.0.1:9", "project_token": "tok", "api_secret": "planted-mixpanel-secret"}') > 0 AS ok;
SELECT retl_create_destination('p_kinesis', 'kinesis', '{"region": "us-east-1", "stream": "s", "access_key_id": "AKID", "secret_access_key": "planted-aws-secret", "endpoint": "http://127.0.0.1:9/"}') > 0 AS ok;
SELECT retl_create_destination('p_kafka2', 'kafka_rest', '{"url": "http://127.0.0.1:9", "topic": "t"}') > 0 AS ok;
SELECT retl_create_destination('p_kafka3', 'kafka_rest', '{"url": "http://127.0.0.1:9", "topic": "t", "api_version": "v3", "cluster_id": "c"}') > 0 AS ok;
SELECT retl_create_destination('p_statsig', 'statsig', '{"url": "http://127.0.0.1:9", "api_key": "planted-statsig-key"}') > 0 AS ok;
SELECT retl_create_destination('p_segment', 'segment', '{"url": "http://127.0.0.1:9", "write_key": "planted-write-key"}') > 0 AS ok;
CREATE FUNCTION pg_temp.sync_both(kind text, dest text) RETURNS void LANGUAGE sql AS $$
  SELECT retl_create_sync(kind || '_track', 'shop', dest, 'track',
    '{"userId": "user_id", "anonymousId": "anon_id", "event": {"value": "Bought"},
      "properties.amount": "amount", "timestamp": "created_at"}',
    primary_key => 'id', options => '{"unmapped": "drop"}');
  SELECT retl_create_sync(kind || '_identify', 'shop', dest, 'identify',
    '{"userId": "user_id", "anonymousId": "anon_id", "traits.plan": "plan",
      "timestamp": "created_at"}',
    primary_key => 'id', options => '{"unmapped": "drop"}')
   WHERE kind <> 'statsig';
$$;
SELECT pg_temp.sync_both(k, 'p_' || k)
  FROM unnest(ARRAY['braze', 'iterable', 'amplitude', 'mixpanel', 'kinesis', 'kafka2',
                    'kafka3', 'statsig', 'segment']) k;
-- the records, without their messageIds and, inside Kinesis data and
-- Kafka values, without the preview's time
CREATE FUNCTION pg_temp.stable(r jsonb) RETURNS jsonb LANGUAGE sql AS $$
  SELECT CASE
    WHEN r ? 'Data' THEN jsonb_set(r, '{Data}',
      convert_from(decode(r->>'Data', 'base64'), 'UTF8')::jsonb
        - 'sentAt' - 'originalTimestamp' - 'messageId')
    WHEN r->'value' ? 'data' THEN r #- '{value,data,sentAt}' #- '{value,data,originalTimestamp}'
                                    #- '{value,data,messageId}'
    WHEN r ? 'value' THEN r #- '{value,sentAt}' #- '{value,originalTimestamp}' #- '{value,messageId}'
    WHEN r->'properties' ? '$insert_id' THEN r #- '{properties,$insert_id}'
    ELSE r - 'insert_id' - 'id' - 'messageId' - 'sentAt' - 'originalTimestamp'
  END $$;
SELECT s.name, pg_temp.stable(e) AS record
  FROM retl.syncs s, retl_preview(s.name, 2) e
 WHERE s.source = 'shop'::regclass ORDER BY s.name, pg_temp.stable(e)::text;
-- the records carry the standard events' messageIds (Amplitude insert_id,
-- Mixpanel $insert_id, Iterable id, Kinesis and Kafka inside the event)
SELECT s.name, count(*) AS same_ids
  FROM retl.syncs s, retl_preview(s.name, 2) e,
       retl_preview(s.name, 2, format => 'standard') st
 WHERE s.source = 'shop'::regclass
   AND st->>'messageId' IN (e->>'insert_id', e->'properties'->>'$insert_id', e->>'id',
                            convert_from(decode(e->>'Data', 'base64'), 'UTF8')::jsonb->>'messageId',
                            e->'value'->>'messageId', e->'value'->'data'->>'messageId')
 GROUP BY s.name ORDER BY s.name;
-- format 'standard' is the standard event; segment's records are the same
SELECT count(*) AS standard_events FROM retl_preview('braze_track', 2, format => 'standard') e
 WHERE e->>'type' = 'track' AND e->>'event' = 'Bought';
SELECT (SELECT array_agg(e - 'sentAt' - 'originalTimestamp' ORDER BY e::text) FROM retl_preview('segment_track', 2) e)
     = (SELECT array_agg(e - 'sentAt' - 'originalTimestamp' ORDER BY e::text)
          FROM retl_preview('segment_track', 2, format => 'standard') e) AS segment_same;
-- no record shows a secret (the destination is opened from its catalog row)
SELECT count(*) AS secrets_shown FROM retl.syncs s, retl_preview(s.name, 2) e
 WHERE s.source = 'shop'::regclass AND e::text ~ 'planted';
SELECT retl_preview('braze_track', 1, format => 'request');
SELECT retl_preview('braze_track', 1, format => NULL);
