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
