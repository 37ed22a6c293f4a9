-- ALTER EXTENSION retl UPDATE from every released version (0.1), with data
-- in the catalog; the result is the schema a fresh install has.
CREATE DATABASE retl_upgrade;
CREATE DATABASE retl_fresh;
\c retl_upgrade
CREATE EXTENSION retl VERSION '0.1';
SELECT extversion FROM pg_extension WHERE extname = 'retl';
CREATE TABLE orders (id int PRIMARY KEY, user_id text);
SELECT retl_create_destination('seg', 'segment',
  '{"url": "http://127.0.0.1:9", "write_key": "planted-write-key"}') > 0 AS created;
SELECT retl_create_sync('orders', 'orders', 'seg', 'track',
  '{"userId": "user_id", "event": {"value": "Order"}}', primary_key => 'id') > 0 AS created;
ALTER EXTENSION retl UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'retl';
-- the secret moved to retl.destination_secrets; the catalog shows "***"
SELECT name, config FROM retl.destinations;
SELECT d.name, s.owner = d.owner AS same_owner, s.config->>'write_key' AS write_key
  FROM retl.destinations d JOIN retl.destination_secrets s ON s.destination_id = d.id;
-- the sync survived and still works with the new API
SELECT name, source, detector FROM retl.syncs;
SELECT retl_create_destination('hook', 'webhook',
  '{"url": "http://127.0.0.1:9/hook", "secret": "planted-hmac"}') > 0 AS created;
SELECT name, config FROM retl.destinations ORDER BY id;
SELECT count(*) FROM retl.destination_secrets;
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = 'retl_admin';
SELECT relname, relrowsecurity FROM pg_class
 WHERE relnamespace = 'retl'::regnamespace AND relkind = 'r' ORDER BY relname;
-- the same objects as a fresh install of the default version: members,
-- function bodies, table columns and privileges, policies
\i sql/retl_schema.psql
SELECT string_agg(x, E'\x1e' ORDER BY x) AS upgraded FROM pg_temp.retl_schema() x \gset
\c retl_fresh
CREATE EXTENSION retl;
SELECT extversion FROM pg_extension WHERE extname = 'retl';
\i sql/retl_schema.psql
SELECT count(*) > 50 AS compared FROM pg_temp.retl_schema();
SELECT x AS only_after_upgrade
  FROM unnest(string_to_array(:'upgraded', E'\x1e')) x
EXCEPT SELECT * FROM pg_temp.retl_schema();
SELECT x AS only_in_fresh_install FROM pg_temp.retl_schema() x
EXCEPT SELECT unnest(string_to_array(:'upgraded', E'\x1e'));
\c contrib_regression
DROP DATABASE retl_upgrade WITH (FORCE);
DROP DATABASE retl_fresh WITH (FORCE);
