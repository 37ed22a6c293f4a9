-- ALTER EXTENSION retl UPDATE from every released version (0.1, 0.2), with
-- data in the catalog; the result is the schema a fresh install has,
-- privileges included, and the roles that own syncs or destinations are
-- members of retl_user.
CREATE DATABASE retl_upgrade;
CREATE DATABASE retl_upgrade_02;
CREATE DATABASE retl_upgrade_04;
CREATE DATABASE retl_fresh;
CREATE ROLE retl_old_owner;
CREATE ROLE retl_old_owner_02;
\c retl_upgrade
CREATE EXTENSION retl VERSION '0.1';
SELECT extversion FROM pg_extension WHERE extname = 'retl';
CREATE TABLE orders (id int PRIMARY KEY, user_id text);
SELECT retl_create_destination('seg', 'segment',
  '{"url": "http://127.0.0.1:9", "write_key": "planted-write-key"}') > 0 AS created;
SELECT retl_create_sync('orders', 'orders', 'seg', 'track',
  '{"userId": "user_id", "event": {"value": "Order"}}', primary_key => 'id') > 0 AS created;
-- a destination of an ordinary role (0.1 had no grants: written directly)
INSERT INTO retl.destinations (name, kind, config, owner)
  VALUES ('old_hook', 'webhook', '{"url": "http://svc:planted-pw@127.0.0.1:9/old"}', 'retl_old_owner');
ALTER EXTENSION retl UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'retl';
-- the secrets moved to retl.destination_secrets; the catalog shows "***"
-- (a URL's password too)
SELECT name, config FROM retl.destinations ORDER BY id;
SELECT d.name, s.owner = d.owner AS same_owner, s.config->>'write_key' AS write_key
  FROM retl.destinations d JOIN retl.destination_secrets s ON s.destination_id = d.id
 ORDER BY d.id;
-- the sync survived and still works with the new API
SELECT name, source, detector FROM retl.syncs;
SELECT retl_create_destination('hook', 'webhook',
  '{"url": "http://127.0.0.1:9/hook", "secret": "planted-hmac"}') > 0 AS created;
SELECT name, config FROM retl.destinations ORDER BY id;
SELECT count(*) FROM retl.destination_secrets;
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN ('retl_admin', 'retl_user') ORDER BY 1;
-- the owner of a destination is now a member of retl_user, and uses the API
SELECT m.roleid::regrole AS granted, m.member::regrole AS member
  FROM pg_auth_members m WHERE m.member = 'retl_old_owner'::regrole;
SET ROLE retl_old_owner;
SELECT name FROM retl.destinations;
SELECT retl_drop_destination('old_hook');
RESET ROLE;
SELECT relname, relrowsecurity FROM pg_class
 WHERE relnamespace = 'retl'::regnamespace AND relkind = 'r' ORDER BY relname;
-- the same objects as a fresh install of the default version: members,
-- function bodies, table columns and privileges, policies, function and
-- schema grants
\i sql/retl_schema.psql
SELECT string_agg(x, E'\x1e' ORDER BY x) AS upgraded
  FROM (SELECT * FROM pg_temp.retl_schema() UNION ALL
        SELECT * FROM pg_temp.retl_privileges()) s(x) \gset
-- from 0.2: the owner created its destination and sync through the API
\c retl_upgrade_02
CREATE EXTENSION retl VERSION '0.2';
SELECT extversion FROM pg_extension WHERE extname = 'retl';
CREATE TABLE orders (id int PRIMARY KEY, user_id text);
GRANT SELECT ON orders TO retl_old_owner_02;
SET ROLE retl_old_owner_02;
SELECT retl_create_destination('hook02', 'webhook',
  '{"url": "http://127.0.0.1:9/hook"}') > 0 AS created;
SELECT retl_create_sync('orders02', 'orders', 'hook02', 'track',
  '{"userId": "user_id", "event": {"value": "Order"}}', primary_key => 'id') > 0 AS created;
RESET ROLE;
ALTER EXTENSION retl UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'retl';
SELECT m.roleid::regrole AS granted, m.member::regrole AS member
  FROM pg_auth_members m WHERE m.member = 'retl_old_owner_02'::regrole;
SET ROLE retl_old_owner_02;
SELECT retl_preview('orders02', 1);
SELECT retl_drop_sync('orders02');
RESET ROLE;
\i sql/retl_schema.psql
SELECT string_agg(x, E'\x1e' ORDER BY x) AS upgraded_02
  FROM (SELECT * FROM pg_temp.retl_schema() UNION ALL
        SELECT * FROM pg_temp.retl_privileges()) s(x) \gset
-- from 0.4: a content-diff sync's fingerprints become chunks of up to
-- 1,000 keys; retl.fingerprints, now a view, shows the same rows
\c retl_upgrade_04
CREATE EXTENSION retl VERSION '0.4';
CREATE TABLE users (id int PRIMARY KEY, email text);
CREATE VIEW user_view AS SELECT id, email FROM users;
SELECT retl_create_destination('hook04', 'webhook', '{"url": "http://127.0.0.1:9/hook"}') > 0 AS created;
SELECT retl_create_sync('users04', 'user_view', 'hook04', 'identify',
  '{"userId": "email"}', primary_key => 'id', mode => 'mirror') > 0 AS created;
INSERT INTO retl.fingerprints (sync_id, pk, fingerprint, identity, previous)
  SELECT s.id, g::text, g * 7919, CASE WHEN g % 3 = 0 THEN '"userId":"u' || g || '"' END, g % 5
    FROM retl.syncs s, generate_series(1, 2500) g;
SELECT md5(string_agg(f::text, ',' ORDER BY pk)) AS fingerprints_04 FROM retl.fingerprints f \gset
ALTER EXTENSION retl UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'retl';
SELECT md5(string_agg(f::text, ',' ORDER BY pk)) = :'fingerprints_04' AS same_fingerprints,
       count(*) AS keys FROM retl.fingerprints f;
SELECT count(*) AS chunks, sum(cardinality(pks)) AS entries, max(cardinality(pks)) AS largest
  FROM retl.fingerprint_chunks;
SELECT relname FROM pg_extension e, unnest(e.extconfig) c JOIN pg_class r ON r.oid = c
 WHERE e.extname = 'retl' ORDER BY 1;
SELECT cardinality(extconfig) AS config_tables FROM pg_extension WHERE extname = 'retl';
-- dropping the sync forgets its chunks
SELECT retl_drop_sync('users04');
SELECT count(*) AS chunks_left FROM retl.fingerprint_chunks;
\i sql/retl_schema.psql
SELECT string_agg(x, E'\x1e' ORDER BY x) AS upgraded_04
  FROM (SELECT * FROM pg_temp.retl_schema() UNION ALL
        SELECT * FROM pg_temp.retl_privileges()) s(x) \gset
\c retl_fresh
CREATE EXTENSION retl;
SELECT extversion FROM pg_extension WHERE extname = 'retl';
\i sql/retl_schema.psql
CREATE TEMP TABLE fresh (x text);
INSERT INTO fresh
  SELECT * FROM pg_temp.retl_schema() UNION ALL SELECT * FROM pg_temp.retl_privileges();
SELECT count(*) > 50 AS compared, count(*) FILTER (WHERE x LIKE 'function acl %') > 20 AS with_grants
  FROM fresh;
SELECT x AS only_after_upgrade
  FROM unnest(string_to_array(:'upgraded', E'\x1e')) x
EXCEPT SELECT * FROM fresh;
SELECT x AS only_in_fresh_install FROM fresh
EXCEPT SELECT unnest(string_to_array(:'upgraded', E'\x1e'));
SELECT x AS only_after_upgrade_from_02
  FROM unnest(string_to_array(:'upgraded_02', E'\x1e')) x
EXCEPT SELECT * FROM fresh;
SELECT x AS only_in_fresh_install_not_02 FROM fresh
EXCEPT SELECT unnest(string_to_array(:'upgraded_02', E'\x1e'));
SELECT x AS only_after_upgrade_from_04
  FROM unnest(string_to_array(:'upgraded_04', E'\x1e')) x
EXCEPT SELECT * FROM fresh;
SELECT x AS only_in_fresh_install_not_04 FROM fresh
EXCEPT SELECT unnest(string_to_array(:'upgraded_04', E'\x1e'));
\c contrib_regression
DROP DATABASE retl_upgrade WITH (FORCE);
DROP DATABASE retl_upgrade_02 WITH (FORCE);
DROP DATABASE retl_upgrade_04 WITH (FORCE);
DROP DATABASE retl_fresh WITH (FORCE);
DROP ROLE retl_old_owner, retl_old_owner_02;
