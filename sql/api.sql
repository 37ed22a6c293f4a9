-- The SQL contract of retl: destinations, syncs, runs and their errors.
CREATE EXTENSION retl;
-- err(sql) runs a statement that must fail and shows its SQLSTATE, message and hint
CREATE FUNCTION err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; hint text;
BEGIN
  EXECUTE sql;
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
  RETURN st || ': ' || msg || CASE WHEN hint <> '' THEN E'\nHINT: ' || hint ELSE '' END;
END $$;
CREATE SEQUENCE some_seq;
-- destinations
SELECT retl_create_destination('hook', 'webhook',
  '{"url": "http://127.0.0.1:9/hook", "batch_size": 10, "max_in_flight": 2}') > 0 AS created;
SELECT retl_create_destination('rs', 'rudderstack',
  '{"url": "http://127.0.0.1:9", "write_key": "rs-secret-key"}') > 0 AS created;
SELECT retl_create_destination('seg', 'segment',
  '{"url": "http://127.0.0.1:9", "write_key": "seg-secret-key"}') > 0 AS created;
SELECT err($q$SELECT retl_create_destination('hook', 'webhook', '{"url": "http://127.0.0.1:9/"}')$q$);
SELECT err($q$SELECT retl_create_destination('bad', 'carrier_pigeon', '{}')$q$);
SELECT err($q$SELECT retl_create_destination('bad', 'webhook', '{}')$q$);
SELECT err($q$SELECT retl_create_destination('bad', 'webhook', '{"url": "ftp://example.com/x"}')$q$);
SELECT err($q$SELECT retl_create_destination('bad', 'webhook', '{"url": "http://x", "batch_size": 0}')$q$);
SELECT err($q$SELECT retl_create_destination('bad', 'webhook', '{"url": "http://x", "bogus": 1}')$q$);
SELECT err($q$SELECT retl_create_destination('bad', 'segment', '{"url": "http://x"}')$q$);
SELECT err($q$SELECT retl_create_destination('bad', 'webhook', '[1]')$q$);
SELECT name, kind, retl._redact(config) AS config FROM retl.destinations ORDER BY id;
-- syncs
CREATE TABLE orders (id int PRIMARY KEY, user_id int, amount numeric, note text);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE amount > 100;
SELECT retl_create_sync('orders', 'orders', 'hook', 'track',
  '{"userId": "user_id", "event": {"value": "Order Completed"}, "properties.total": "amount"}',
  primary_key => 'id') > 0 AS created;
SELECT retl_create_sync('big', 'big_orders', 'rs', 'identify',
  '{"userId": "user_id", "traits.note": "note"}', options => '{"unmapped": "drop"}') > 0 AS created;
-- errors
SELECT err($q$SELECT retl_create_sync('orders', 'orders', 'hook', 'track',
  '{"userId": "user_id", "event": {"value": "x"}}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'track', '{"userId": "nope", "event": {"value": "x"}}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'track', '{"userId": "user_id"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'identify', '{"traits.note": "note"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'nowhere', 'track', '{"userId": "user_id", "event": {"value": "x"}}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'page', '{"userId": "user_id"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'identify', '{"userId": "user_id", "event": {"value": "x"}}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'track', '{"userId": "user_id", "event": {"value": "x"}, "messageId": "id"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'track', '{"userId": "user_id", "event": 42}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'track', '{"userId": "user_id", "event": {"value": "x"}, "properties.a": "id", "properties.a.b": "note"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'track', '{"userId": "user_id", "event": {"value": "x"}}', primary_key => 'missing')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'track', '{"userId": "user_id", "event": {"value": "x"}}', options => '{"colour": "red"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'track', '{"userId": "user_id", "event": {"value": "x"}}', options => '{"nulls": "sometimes"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'identify', '{"userId": "user_id"}', mode => 'mirror')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'track', '{"userId": "user_id", "event": {"value": "x"}}', primary_key => 'id', mode => 'mirror')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'identify', '{"userId": "user_id"}', primary_key => 'id', mode => 'mirror', options => '{"cursor": "xmin"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'big_orders', 'hook', 'identify', '{"userId": "user_id"}', options => '{"cursor": "xmin"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'big_orders', 'hook', 'identify', '{"userId": "user_id"}', options => '{"cursor": "diff"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'identify', '{"userId": "user_id"}', options => '{"cursor": "magic"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'identify', '{"userId": "user_id"}', primary_key => 'id', mode => 'mirror', options => '{"on_delete": "explode"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'orders', 'hook', 'identify', '{"userId": "user_id"}', mode => 'merge')$q$);
-- the detector is chosen automatically
SELECT retl_create_sync('m', 'orders', 'hook', 'identify', '{"userId": "user_id"}', primary_key => 'id', mode => 'mirror', options => '{"on_delete": {"event": "User Deleted"}}') > 0 AS created;
SELECT retl_create_sync('v', 'big_orders', 'hook', 'identify', '{"userId": "user_id"}', primary_key => 'id') > 0 AS created;
SELECT sync, detector FROM retl.sync_status WHERE sync IN ('m', 'v', 'big', 'orders') ORDER BY sync;
SELECT retl_drop_sync('m'), retl_drop_sync('v');
SELECT err($q$SELECT retl_create_sync('x', 'some_seq', 'hook', 'identify', '{"userId": "user_id"}')$q$);
SELECT err($q$SELECT retl_create_sync('x', 'no_such_table', 'hook', 'identify', '{"userId": "user_id"}')$q$);
SELECT err($q$SELECT retl_drop_destination('hook')$q$);
SELECT err($q$SELECT retl_drop_destination('nowhere')$q$);
-- alter
SELECT retl_alter_sync('orders', options => '{"nulls": "keep"}');
SELECT err($q$SELECT retl_alter_sync('orders', mapping => '{"userId": "missing"}')$q$);
SELECT err($q$SELECT retl_alter_sync('nope', options => '{}')$q$);
SELECT name, options, next_run_kind, next_full_reason
  FROM retl.syncs s JOIN retl.sync_status st ON st.sync_id = s.id ORDER BY s.id;
-- runs: a second request while one is queued or running returns the same run
BEGIN;
SELECT retl_sync_now('orders') AS r1 \gset
SELECT retl_sync_now('orders') = :r1 AS same_run;
SELECT kind, full_reason FROM retl.runs WHERE id = :r1;
SELECT retl_force_full('orders') = :r1 AS force_full_reuses_queued_full;
SELECT retl_stop('orders') = :r1 AS stopped_the_run;
SELECT status FROM retl.runs WHERE id = :r1;
SELECT retl_stop('orders') IS NULL AS nothing_to_stop;
COMMIT;
SELECT err($q$SELECT retl_sync_now('nope')$q$);
SELECT err($q$SELECT retl_force_full('nope')$q$);
SELECT err($q$SELECT retl_stop('nope')$q$);
SELECT err($q$SELECT retl_retry_failed('nope')$q$);
SELECT err($q$SELECT retl_preview('nope')$q$);
-- disable / enable
SELECT retl_disable_sync('big');
SELECT err($q$SELECT retl_sync_now('big')$q$);
SELECT retl_enable_sync('big');
SELECT enabled FROM retl.syncs WHERE name = 'big';
-- status view has one row per sync
SELECT sync, enabled, destination, destination_kind, event_type, mode, last_run_kind
  FROM retl.sync_status ORDER BY sync_id;
-- drop
BEGIN;
SELECT retl_sync_now('big') IS NOT NULL AS queued;
SELECT retl_drop_sync('big');
SELECT count(*) AS active_runs_left FROM retl.runs
 WHERE sync_name = 'big' AND status IN ('queued', 'running');
COMMIT;
SELECT err($q$SELECT retl_drop_sync('big')$q$);
SELECT retl_drop_sync('orders');
SELECT retl_drop_destination('hook');
-- cascade drops the syncs of a destination, stopping their runs first
SELECT retl_create_sync('on_rs', 'orders', 'rs', 'identify', '{"userId": "user_id"}') > 0 AS created;
BEGIN;
SELECT retl_sync_now('on_rs') AS r2 \gset
SELECT err($q$SELECT retl_drop_destination('rs')$q$);
SELECT retl_drop_destination('rs', cascade => true);
SELECT status FROM retl.runs WHERE id = :r2;
SELECT count(*) AS syncs_left FROM retl.syncs WHERE name = 'on_rs';
ROLLBACK;
SELECT name FROM retl.destinations ORDER BY id;
