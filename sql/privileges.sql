-- Using retl takes a grant (retl_user, or retl_admin), as pg_cron and
-- pg_net do; retl's runs are written by retl only.
\set SHOW_CONTEXT never
-- a database of its own: fresh identities, its own extension
CREATE DATABASE retl_privileges;
\c retl_privileges
CREATE EXTENSION retl;
SELECT rolname, rolcanlogin FROM pg_roles
 WHERE rolname IN ('retl_admin', 'retl_user') ORDER BY rolname;
-- what PUBLIC may use: only retl._xmin_is_new (a run's filter, as the owner)
SELECT p.oid::regprocedure AS public_function
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'retl')
   AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))
 ORDER BY 1::text;
SELECT c.oid::regclass AS public_relation FROM pg_class c
 WHERE c.relnamespace = 'retl'::regnamespace
   AND EXISTS (SELECT 1 FROM aclexplode(c.relacl) a WHERE a.grantee = 0);
-- the schema stays usable: a run's filter calls retl._xmin_is_new as the owner
SELECT has_schema_privilege('public', 'retl', 'USAGE') AS public_schema_usage;
-- nobody but the catalog's owner writes a run's cursor, counters or status
SELECT r AS role, c AS column_name,
       has_column_privilege(r, 'retl.runs', c, 'INSERT') AS can_insert,
       has_column_privilege(r, 'retl.runs', c, 'UPDATE') AS can_update
  FROM unnest(ARRAY['retl_user', 'retl_admin']) r,
       unnest(ARRAY['snapshot', 'checkpoint', 'status', 'events_sent']) c
 ORDER BY 1, 2;
CREATE ROLE retl_nobody;
CREATE ROLE retl_member;
GRANT retl_user TO retl_member;
CREATE ROLE retl_ops;
GRANT retl_admin TO retl_ops;
CREATE TABLE priv_orders (id int PRIMARY KEY, user_id text);
INSERT INTO priv_orders VALUES (1, 'u1');
GRANT SELECT ON priv_orders TO retl_member;
SELECT retl_create_destination('super_hook', 'webhook',
  '{"url": "http://127.0.0.1:9/hook"}') > 0 AS created;
SELECT retl_create_sync('super_orders', 'priv_orders', 'super_hook', 'track',
  '{"userId": "user_id", "event": {"value": "Order"}}', primary_key => 'id') AS super_sync \gset
-- a role without retl_user: 42501, with a hint naming the grant
SET ROLE retl_nobody;
SELECT retl_create_destination('nope', 'webhook', '{"url": "http://127.0.0.1:9/hook"}');
\echo :LAST_ERROR_SQLSTATE
SELECT retl_sync_now('super_orders');
\echo :LAST_ERROR_SQLSTATE
SELECT retl_preview('super_orders');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM retl.syncs;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM retl.runs;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- a member of retl_user uses the API on what it owns
SET ROLE retl_member;
SELECT retl_create_destination('hook', 'webhook',
  '{"url": "http://127.0.0.1:9/hook", "max_attempts": 100, "max_backoff_ms": 60000}') > 0 AS created;
SELECT retl_create_sync('orders', 'priv_orders', 'hook', 'track',
  '{"userId": "user_id", "event": {"value": "Order"}}', primary_key => 'id') > 0 AS created;
SELECT retl_preview('orders', 1) ->> 'userId' AS previewed;
SELECT retl_sync_now('orders') AS run \gset
SELECT retl_sync_now('orders') = :run AS same_run;
SELECT retl_force_full('orders') > 0 AS queued;
SELECT kind, status IN ('queued', 'running') AS active FROM retl.runs WHERE id = :run;
-- ... but writes no run itself: not its cursor, counters or status
UPDATE retl.runs SET snapshot = '\x00', checkpoint = '{"pos": 9, "sent": 9}' WHERE id = :run;
\echo :LAST_ERROR_SQLSTATE
UPDATE retl.runs SET status = 'succeeded' WHERE id = :run;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO retl.runs (sync_id, sync_name, kind, snapshot, checkpoint)
  SELECT id, name, 'incremental', '\x00', '{"pos": 9}' FROM retl.syncs;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM retl.runs;
\echo :LAST_ERROR_SQLSTATE
-- nor calls retl's internal helpers
SELECT retl._enqueue_run(:run, false, false);
\echo :LAST_ERROR_SQLSTATE
SELECT retl._stop_run(:super_sync);
\echo :LAST_ERROR_SQLSTATE
SELECT retl._wake();
\echo :LAST_ERROR_SQLSTATE
-- the gate checks the caller's rights: another role's sync is refused
SELECT retl._run_control('enqueue', :super_sync);
\echo :LAST_ERROR_SQLSTATE
SELECT retl._run_control('stop', :super_sync);
\echo :LAST_ERROR_SQLSTATE
SELECT retl_sync_now('super_orders');
\echo :LAST_ERROR_SQLSTATE
SELECT retl_stop('orders') = :run AS stopped;
SELECT status IN ('stopped', 'stopping', 'draining') AS stopping FROM retl.runs WHERE id = :run;
RESET ROLE;
-- a member of retl_admin manages every sync (and still writes no run)
SET ROLE retl_ops;
SELECT retl_disable_sync('orders');
SELECT retl_enable_sync('orders');
SELECT name FROM retl.syncs ORDER BY name;
UPDATE retl.runs SET checkpoint = '{"pos": 9}';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE retl_member;
SELECT retl_drop_sync('orders');
SELECT retl_drop_destination('hook');
RESET ROLE;
SELECT retl_drop_destination('super_hook', cascade => true);
\c contrib_regression
DROP DATABASE retl_privileges WITH (FORCE);
DROP ROLE retl_nobody, retl_member, retl_ops;
