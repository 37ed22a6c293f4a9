/* retl--0.1--0.2.sql: roles, per-owner visibility and a secrets store */

\echo Use "ALTER EXTENSION retl UPDATE TO '0.2'" to load this file. \quit

/*
 * Model (as pg_cron's cron.job): the API functions run with the caller's
 * privileges; row-level security on the catalog limits every role to the
 * syncs and destinations it owns (or is a member of the owner of).
 * Members of retl_admin manage every sync and destination.  Superusers
 * and the background workers bypass row-level security.  Column grants
 * keep a sync's owner fixed: it is always the role that created it.
 */

DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles
					WHERE rolname OPERATOR(pg_catalog.=) 'retl_admin') THEN
		CREATE ROLE retl_admin NOLOGIN;
	END IF;
END $$;
COMMENT ON ROLE retl_admin IS 'retl: members manage every sync and destination';

/* ---------------------------------------------------------------------
 * Secrets.  The full config lives in retl.destination_secrets, readable
 * by the destination's owner (and superusers, and the workers) only;
 * retl.destinations.config keeps a copy with every secret as "***".
 * ------------------------------------------------------------------- */

CREATE TABLE retl.destination_secrets (
	destination_id bigint PRIMARY KEY
		REFERENCES retl.destinations (id) ON DELETE CASCADE,
	owner		regrole NOT NULL DEFAULT current_user::regrole,
	config		jsonb NOT NULL
);
COMMENT ON TABLE retl.destination_secrets IS
	'retl: the full config of each destination; only its owner and superusers read it';
INSERT INTO retl.destination_secrets (destination_id, owner, config)
	SELECT id, owner, config FROM retl.destinations;
UPDATE retl.destinations SET config = retl._redact(config);
SELECT pg_catalog.pg_extension_config_dump('retl.destination_secrets', '');

/* ---------------------------------------------------------------------
 * Who may see and change a row
 * ------------------------------------------------------------------- */

/* Does the current role manage what role "owner" owns? */
CREATE FUNCTION retl._manages(owner regrole)
RETURNS boolean LANGUAGE sql STABLE AS $$
	SELECT pg_catalog.pg_has_role(current_user, owner::oid, 'MEMBER')
		OR pg_catalog.pg_has_role(current_user, 'retl_admin', 'MEMBER')
$$;

/*
 * Does a sync or destination of this name exist, whoever owns it?  Lets
 * the API say "permission denied" rather than "does not exist" to a role
 * that may not see it, as PostgreSQL does for tables.
 */
CREATE FUNCTION retl._exists(what text, object_name text)
RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER AS $$
	SELECT CASE what
		WHEN 'sync' THEN EXISTS (SELECT 1 FROM retl.syncs
								  WHERE name OPERATOR(pg_catalog.=) object_name)
		WHEN 'destination' THEN EXISTS (SELECT 1 FROM retl.destinations
										 WHERE name OPERATOR(pg_catalog.=) object_name)
		ELSE false END
$$ SET search_path = pg_catalog, pg_temp;

/*
 * Raises insufficient_privilege when a sync or destination the caller
 * could not find exists all the same: it belongs to another role.
 */
CREATE FUNCTION retl._deny_if_hidden(what text, object_name text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	IF retl._exists(what, object_name) THEN
		RAISE EXCEPTION 'permission denied for % "%"', what, object_name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = pg_catalog.format('Only the %s''s owner, members of the owner role, members of retl_admin and superusers manage it.', what);
	END IF;
END $$ SET search_path = pg_catalog, pg_temp;

ALTER TABLE retl.destinations ENABLE ROW LEVEL SECURITY;
ALTER TABLE retl.destination_secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE retl.syncs ENABLE ROW LEVEL SECURITY;
ALTER TABLE retl.runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE retl.failed_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE retl.fingerprints ENABLE ROW LEVEL SECURITY;

CREATE POLICY manage ON retl.destinations
	USING (retl._manages(owner));
-- secrets: the owner only, not retl_admin; and only for the owner's own
-- destination (else a role could give another's destination a URL)
CREATE POLICY owner_only ON retl.destination_secrets
	USING (pg_catalog.pg_has_role(current_user, owner::oid, 'MEMBER'))
	WITH CHECK (pg_catalog.pg_has_role(current_user, owner::oid, 'MEMBER')
				AND EXISTS (SELECT 1 FROM retl.destinations d
							 WHERE d.id OPERATOR(pg_catalog.=) destination_id
							   AND d.owner OPERATOR(pg_catalog.=) destination_secrets.owner));
-- a sync may only point at a destination its creator can see
CREATE POLICY manage ON retl.syncs
	USING (retl._manages(owner))
	WITH CHECK (retl._manages(owner)
				AND EXISTS (SELECT 1 FROM retl.destinations d
							 WHERE d.id OPERATOR(pg_catalog.=) destination_id));
-- runs and failed events follow their sync; a dropped sync's runs are
-- retl_admin's
CREATE POLICY manage ON retl.runs
	USING (EXISTS (SELECT 1 FROM retl.syncs s WHERE s.id OPERATOR(pg_catalog.=) sync_id)
		   OR (sync_id IS NULL AND pg_catalog.pg_has_role(current_user, 'retl_admin', 'MEMBER')));
CREATE POLICY manage ON retl.failed_events
	USING (EXISTS (SELECT 1 FROM retl.syncs s WHERE s.id OPERATOR(pg_catalog.=) sync_id));
CREATE POLICY manage ON retl.fingerprints
	USING (EXISTS (SELECT 1 FROM retl.syncs s WHERE s.id OPERATOR(pg_catalog.=) sync_id));

/*
 * What the API needs, and no more: nobody may set a row's owner, a run's
 * counters or a sync's cursor.  (SELECT ... FOR UPDATE needs UPDATE on
 * one column; destinations.config is only the redacted copy.)
 */
GRANT USAGE ON SCHEMA retl TO PUBLIC;
GRANT SELECT, DELETE ON retl.destinations TO PUBLIC;
GRANT INSERT (name, kind, config), UPDATE (config) ON retl.destinations TO PUBLIC;
GRANT SELECT ON retl.destination_secrets TO PUBLIC;
GRANT INSERT (destination_id, config) ON retl.destination_secrets TO PUBLIC;
GRANT SELECT, DELETE ON retl.syncs TO PUBLIC;
GRANT INSERT (name, source, destination_id, event_type, mapping, primary_key, mode,
			  options, detector) ON retl.syncs TO PUBLIC;
GRANT UPDATE (mapping, options, detector, needs_full, full_reason, enabled)
	ON retl.syncs TO PUBLIC;
GRANT SELECT ON retl.runs TO PUBLIC;
GRANT INSERT (sync_id, sync_name, kind, full_reason, retry_failed, snapshot, checkpoint)
	ON retl.runs TO PUBLIC;
GRANT UPDATE (status, finished_at, kind, full_reason, snapshot, checkpoint, retry_failed)
	ON retl.runs TO PUBLIC;
GRANT SELECT ON retl.failed_events TO PUBLIC;

-- the status view applies the caller's row-level security, not its owner's
ALTER VIEW retl.sync_status SET (security_invoker = true);
GRANT SELECT ON retl.sync_status TO PUBLIC;

/* ---------------------------------------------------------------------
 * API changes
 * ------------------------------------------------------------------- */

CREATE OR REPLACE FUNCTION retl._sync(sync_name text, lock boolean DEFAULT false)
RETURNS retl.syncs LANGUAGE plpgsql AS $$
DECLARE
	s retl.syncs;
BEGIN
	IF lock THEN
		SELECT * INTO s FROM retl.syncs WHERE name OPERATOR(pg_catalog.=) sync_name FOR UPDATE;
	ELSE
		SELECT * INTO s FROM retl.syncs WHERE name OPERATOR(pg_catalog.=) sync_name;
	END IF;
	IF NOT FOUND THEN
		PERFORM retl._deny_if_hidden('sync', sync_name);
		RAISE EXCEPTION 'sync "%" does not exist', sync_name
			USING ERRCODE = 'undefined_object',
				  HINT = 'SELECT name FROM retl.syncs lists the existing syncs.';
	END IF;
	RETURN s;
END $$ SET search_path = pg_catalog, pg_temp;

/* The stored config keeps secrets only in retl.destination_secrets. */
CREATE OR REPLACE FUNCTION @extschema@.retl_create_destination(name text, kind text, config jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	new_id bigint;
BEGIN
	IF name IS NULL OR kind IS NULL OR config IS NULL THEN
		RAISE EXCEPTION 'name, kind and config must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM retl._validate_destination(kind, config);
	BEGIN
		INSERT INTO retl.destinations (name, kind, config)
			VALUES (name, kind, retl._redact(config)) RETURNING id INTO new_id;
	EXCEPTION WHEN unique_violation THEN
		RAISE EXCEPTION 'destination "%" already exists', name
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Drop it with retl_drop_destination() or choose another name.';
	END;
	INSERT INTO retl.destination_secrets (destination_id, config) VALUES (new_id, config);
	RETURN new_id;
END $$ SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION @extschema@.retl_drop_destination(name text, cascade boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	d retl.destinations;
	users text;
	s retl.syncs;
BEGIN
	SELECT * INTO d FROM retl.destinations x WHERE x.name OPERATOR(pg_catalog.=) retl_drop_destination.name FOR UPDATE;
	IF NOT FOUND THEN
		PERFORM retl._deny_if_hidden('destination', name);
		RAISE EXCEPTION 'destination "%" does not exist', name
			USING ERRCODE = 'undefined_object',
				  HINT = 'SELECT name FROM retl.destinations lists the existing destinations.';
	END IF;
	SELECT string_agg(x.name, ', ' ORDER BY x.name) INTO users
		FROM retl.syncs x WHERE x.destination_id OPERATOR(pg_catalog.=) d.id;
	IF users IS NOT NULL AND NOT cascade THEN
		RAISE EXCEPTION 'destination "%" is used by syncs: %', name, users
			USING ERRCODE = 'dependent_objects_still_exist',
				  HINT = 'Drop those syncs first, or call retl_drop_destination(name, cascade => true) to drop them too.';
	END IF;
	-- dropped syncs stop and drain their active runs, as retl_drop_sync does
	FOR s IN SELECT * FROM retl.syncs x WHERE x.destination_id OPERATOR(pg_catalog.=) d.id FOR UPDATE LOOP
		PERFORM retl._stop_active(s.id);
		DELETE FROM retl.syncs WHERE id OPERATOR(pg_catalog.=) s.id;
	END LOOP;
	-- syncs of roles the caller may not see keep the destination alive
	BEGIN
		DELETE FROM retl.destinations WHERE id OPERATOR(pg_catalog.=) d.id;
	EXCEPTION WHEN foreign_key_violation THEN
		RAISE EXCEPTION 'destination "%" is used by syncs of other roles', name
			USING ERRCODE = 'dependent_objects_still_exist',
				  HINT = 'Their owners, or a member of retl_admin, must drop those syncs first.';
	END;
END $$ SET search_path = pg_catalog, pg_temp;

/* A destination of another role is "permission denied", not "does not exist". */
CREATE OR REPLACE FUNCTION @extschema@.retl_create_sync(name text, source regclass, destination text,
	event_type text, mapping jsonb, primary_key text DEFAULT NULL,
	mode text DEFAULT 'upsert', options jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	dest_id bigint;
	dest_kind text;
	new_id bigint;
BEGIN
	IF name IS NULL OR source IS NULL OR destination IS NULL OR event_type IS NULL OR mapping IS NULL THEN
		RAISE EXCEPTION 'name, source, destination, event_type and mapping must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT d.id, d.kind INTO dest_id, dest_kind FROM retl.destinations d
	 WHERE d.name OPERATOR(pg_catalog.=) destination;
	IF NOT FOUND THEN
		PERFORM retl._deny_if_hidden('destination', destination);
		RAISE EXCEPTION 'destination "%" does not exist', destination
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it first with retl_create_destination().';
	END IF;
	IF event_type NOT IN ('track', 'identify') THEN
		RAISE EXCEPTION 'invalid event_type "%"', event_type
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'event_type is ''track'' or ''identify''.';
	END IF;
	IF mode IS NULL OR mode NOT IN ('upsert', 'mirror') THEN
		RAISE EXCEPTION 'invalid mode "%"', mode
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'mode is ''upsert'' or ''mirror''.';
	END IF;
	PERFORM retl._check_event_type(dest_kind, event_type);
	PERFORM retl._validate_sync(source, event_type, mapping, primary_key,
								coalesce(options, '{}'));
	BEGIN
		INSERT INTO retl.syncs (name, source, destination_id, event_type, mapping,
								primary_key, mode, options, detector)
			VALUES (name, source, dest_id, event_type, mapping, primary_key, mode,
					coalesce(options, '{}'),
					retl._detector(source, event_type, mode, primary_key,
								   coalesce(options, '{}')))
			RETURNING id INTO new_id;
	EXCEPTION WHEN unique_violation THEN
		RAISE EXCEPTION 'sync "%" already exists', name
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Drop it with retl_drop_sync() or choose another name.';
	END;
	RETURN new_id;
END $$ SET search_path = pg_catalog, pg_temp;

-- runs queued while the catalog was older than the library start now
SELECT retl._wake();
