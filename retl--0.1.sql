/* retl--0.1.sql: catalog, SQL API and status views of retl 0.1 */

\echo Use "CREATE EXTENSION retl" to load this file. \quit

CREATE SCHEMA IF NOT EXISTS retl;

/* ---------------------------------------------------------------------
 * Catalog tables.  All WAL-logged: a crash must never lose queued work.
 * ------------------------------------------------------------------- */

CREATE TABLE retl.destinations (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name		text NOT NULL UNIQUE,
	kind		text NOT NULL,
	config		jsonb NOT NULL,
	owner		regrole NOT NULL DEFAULT current_user::regrole,
	created_at	timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE retl.syncs (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name		text NOT NULL UNIQUE,
	source		regclass NOT NULL,
	destination_id bigint NOT NULL REFERENCES retl.destinations (id),
	event_type	text NOT NULL CHECK (event_type IN ('track', 'identify')),
	mapping		jsonb NOT NULL,
	primary_key text,
	mode		text NOT NULL DEFAULT 'upsert' CHECK (mode IN ('upsert', 'mirror')),
	options		jsonb NOT NULL DEFAULT '{}',
	detector	text NOT NULL DEFAULT 'xmin' CHECK (detector IN ('xmin', 'diff', 'full')),
	enabled		boolean NOT NULL DEFAULT true,
	owner		regrole NOT NULL DEFAULT current_user::regrole,
	needs_full	boolean NOT NULL DEFAULT true,
	full_reason text DEFAULT 'first run',
	cursor_snapshot bytea,
	cursor_run_id bigint,
	created_at	timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE retl.runs (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	sync_id		bigint REFERENCES retl.syncs (id) ON DELETE SET NULL,
	sync_name	text NOT NULL,
	kind		text NOT NULL CHECK (kind IN ('full', 'incremental')),
	status		text NOT NULL DEFAULT 'queued'
				CHECK (status IN ('queued', 'running', 'stopping', 'draining',
								  'succeeded', 'failed', 'stopped')),
	requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	started_at	timestamptz,
	finished_at timestamptz,
	rows_read	bigint NOT NULL DEFAULT 0,
	rows_deleted bigint NOT NULL DEFAULT 0,
	events_sent bigint NOT NULL DEFAULT 0,
	events_succeeded bigint NOT NULL DEFAULT 0,
	events_failed bigint NOT NULL DEFAULT 0,
	rows_estimated bigint,
	full_reason text,
	snapshot	bytea,
	checkpoint	jsonb,
	retry_failed boolean NOT NULL DEFAULT false,
	error		text
);
CREATE INDEX runs_sync_requested ON retl.runs (sync_id, requested_at);
CREATE INDEX runs_active ON retl.runs (sync_id)
	WHERE status IN ('queued', 'running', 'stopping', 'draining');

CREATE TABLE retl.failed_events (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	sync_id		bigint REFERENCES retl.syncs (id) ON DELETE CASCADE,
	run_id		bigint,
	primary_key text,
	message_id	text,
	payload		text NOT NULL,
	http_status integer,
	response_body text,
	error		text NOT NULL,
	attempts	integer NOT NULL DEFAULT 1,
	retryable	boolean NOT NULL DEFAULT true,
	first_failed_at timestamptz NOT NULL DEFAULT now(),
	last_failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX failed_events_sync ON retl.failed_events (sync_id, id);
CREATE UNIQUE INDEX failed_events_message ON retl.failed_events (sync_id, message_id);

/* The diff detector's state: one fingerprint per acknowledged key. */
CREATE TABLE retl.fingerprints (
	sync_id		bigint NOT NULL REFERENCES retl.syncs (id) ON DELETE CASCADE,
	pk			text NOT NULL,
	fingerprint bigint NOT NULL,
	identity	text,
	PRIMARY KEY (sync_id, pk)
);

SELECT pg_catalog.pg_extension_config_dump('retl.destinations', '');
SELECT pg_catalog.pg_extension_config_dump('retl.fingerprints', '');
SELECT pg_catalog.pg_extension_config_dump('retl.syncs', '');
SELECT pg_catalog.pg_extension_config_dump('retl.runs', '');
SELECT pg_catalog.pg_extension_config_dump('retl.failed_events', '');

/* ---------------------------------------------------------------------
 * C helpers.  They live in retl's schema: users call the wrappers below.
 * ------------------------------------------------------------------- */

CREATE FUNCTION retl._validate_destination(kind text, config jsonb)
RETURNS void LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'retl_validate_destination';

CREATE FUNCTION retl._validate_sync(source regclass, event_type text,
	mapping jsonb, primary_key text, options jsonb)
RETURNS void LANGUAGE C AS 'MODULE_PATHNAME', 'retl_validate_sync';

CREATE FUNCTION retl._check_event_type(kind text, event_type text)
RETURNS void LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'retl_check_event_type';

CREATE FUNCTION retl._wake()
RETURNS void LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'retl_wake';

CREATE FUNCTION retl._xmin_is_new(xid, bytea)
RETURNS boolean LANGUAGE C STRICT STABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'retl_xmin_is_new';

CREATE FUNCTION retl.snapshot_text(bytea)
RETURNS text LANGUAGE C STRICT IMMUTABLE
AS 'MODULE_PATHNAME', 'retl_snapshot_text';

CREATE FUNCTION retl._redact(config jsonb)
RETURNS jsonb LANGUAGE C STRICT IMMUTABLE
AS 'MODULE_PATHNAME', 'retl_redact_config';

/*
 * Chooses the change detector of a sync: the xmin cursor for tables and
 * for views that expose an xmin column, the content diff for other views
 * with a primary key and for mirror syncs, else a full read every run.
 */
CREATE FUNCTION retl._detector(source regclass, event_type text, mode text,
	primary_key text, options jsonb)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	relkind "char";
	detector text := options->>'cursor';
BEGIN
	SELECT c.relkind INTO relkind FROM pg_catalog.pg_class c
	 WHERE c.oid OPERATOR(pg_catalog.=) source;
	IF mode OPERATOR(pg_catalog.=) 'mirror' AND event_type OPERATOR(pg_catalog.=) 'track' THEN
		RAISE EXCEPTION 'mode ''mirror'' is not allowed for track syncs'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Track events are append-only and cannot be deleted (RudderStack does not allow it either); mirror an identify sync.';
	END IF;
	IF detector IS NULL THEN
		detector := CASE
			WHEN mode OPERATOR(pg_catalog.=) 'mirror' THEN 'diff'
			WHEN relkind IN ('r', 'p', 'm') OR options ? 'xmin_column' THEN 'xmin'
			WHEN primary_key IS NOT NULL THEN 'diff'
			ELSE 'full' END;
	END IF;
	IF detector OPERATOR(pg_catalog.=) 'diff' AND primary_key IS NULL THEN
		RAISE EXCEPTION 'the diff detector needs a primary key'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass primary_key => ''<column>'' to retl_create_sync().';
	END IF;
	IF mode OPERATOR(pg_catalog.=) 'mirror' AND detector OPERATOR(pg_catalog.<>) 'diff' THEN
		RAISE EXCEPTION 'mode ''mirror'' requires the diff detector'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Remove option "cursor", or set it to "diff": only the diff detector sees deletes.';
	END IF;
	IF detector OPERATOR(pg_catalog.=) 'xmin' AND relkind IN ('v', 'f')
	   AND NOT options ? 'xmin_column' THEN
		RAISE EXCEPTION 'the xmin cursor needs an xmin column on a view'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Expose one base table''s xmin in the view (SELECT o.xmin AS _retl_xmin, ...) and set option "xmin_column", or use {"cursor": "diff"} with a primary key.';
	END IF;
	RETURN detector;
END $$ SET search_path = pg_catalog, pg_temp;

/* Looks a sync up by name, with a clear error when there is none. */
CREATE FUNCTION retl._sync(sync_name text, lock boolean DEFAULT false)
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
		RAISE EXCEPTION 'sync "%" does not exist', sync_name
			USING ERRCODE = 'undefined_object',
				  HINT = 'SELECT name FROM retl.syncs lists the existing syncs.';
	END IF;
	RETURN s;
END $$ SET search_path = pg_catalog, pg_temp;

/* ---------------------------------------------------------------------
 * SQL API
 * ------------------------------------------------------------------- */

CREATE FUNCTION @extschema@.retl_create_destination(name text, kind text, config jsonb)
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
			VALUES (name, kind, config) RETURNING id INTO new_id;
	EXCEPTION WHEN unique_violation THEN
		RAISE EXCEPTION 'destination "%" already exists', name
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Drop it with retl_drop_destination() or choose another name.';
	END;
	RETURN new_id;
END $$ SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION @extschema@.retl_drop_destination(name text, cascade boolean DEFAULT false)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	d retl.destinations;
	users text;
	s retl.syncs;
BEGIN
	SELECT * INTO d FROM retl.destinations x WHERE x.name OPERATOR(pg_catalog.=) retl_drop_destination.name FOR UPDATE;
	IF NOT FOUND THEN
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
	DELETE FROM retl.destinations WHERE id OPERATOR(pg_catalog.=) d.id;
END $$ SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION @extschema@.retl_create_sync(name text, source regclass, destination text,
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

CREATE FUNCTION @extschema@.retl_alter_sync(name text, mapping jsonb DEFAULT NULL,
	options jsonb DEFAULT NULL)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	s retl.syncs := retl._sync(name, true);
BEGIN
	PERFORM retl._validate_sync(s.source, s.event_type, coalesce(mapping, s.mapping),
								s.primary_key, coalesce(options, s.options));
	UPDATE retl.syncs x
	   SET mapping = coalesce(retl_alter_sync.mapping, x.mapping),
		   options = coalesce(retl_alter_sync.options, x.options),
		   detector = retl._detector(x.source, x.event_type, x.mode, x.primary_key,
									 coalesce(retl_alter_sync.options, x.options)),
		   needs_full = x.needs_full OR retl_alter_sync.mapping IS NOT NULL,
		   full_reason = CASE WHEN retl_alter_sync.mapping IS NOT NULL
							  THEN 'mapping changed' ELSE x.full_reason END
	 WHERE x.id OPERATOR(pg_catalog.=) s.id;
END $$ SET search_path = pg_catalog, pg_temp;

/* Asks the active run of a sync, if any, to stop; returns its id. */
CREATE FUNCTION retl._stop_active(sync_id bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	r retl.runs;
BEGIN
	SELECT * INTO r FROM retl.runs x
	 WHERE x.sync_id OPERATOR(pg_catalog.=) _stop_active.sync_id
	   AND x.status IN ('queued', 'running', 'stopping', 'draining')
	 ORDER BY x.id FOR UPDATE LIMIT 1;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	IF r.status OPERATOR(pg_catalog.=) 'queued' THEN
		UPDATE retl.runs SET status = 'stopped', finished_at = clock_timestamp()
		 WHERE id OPERATOR(pg_catalog.=) r.id;
	ELSIF r.status OPERATOR(pg_catalog.=) 'running' THEN
		UPDATE retl.runs SET status = 'stopping' WHERE id OPERATOR(pg_catalog.=) r.id;
		PERFORM retl._wake();
	END IF;
	-- a queued run behind the stopped one is stopped too: nothing runs after a stop
	UPDATE retl.runs SET status = 'stopped', finished_at = clock_timestamp()
	 WHERE retl.runs.sync_id OPERATOR(pg_catalog.=) _stop_active.sync_id
	   AND status OPERATOR(pg_catalog.=) 'queued';
	RETURN r.id;
END $$ SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION @extschema@.retl_drop_sync(name text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	s retl.syncs := retl._sync(name, true);
BEGIN
	PERFORM retl._stop_active(s.id);
	DELETE FROM retl.syncs WHERE id OPERATOR(pg_catalog.=) s.id;
END $$ SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION @extschema@.retl_enable_sync(name text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	s retl.syncs := retl._sync(name, true);
BEGIN
	UPDATE retl.syncs SET enabled = true WHERE id OPERATOR(pg_catalog.=) s.id;
END $$ SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION @extschema@.retl_disable_sync(name text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	s retl.syncs := retl._sync(name, true);
BEGIN
	PERFORM retl._stop_active(s.id);
	UPDATE retl.syncs SET enabled = false WHERE id OPERATOR(pg_catalog.=) s.id;
END $$ SET search_path = pg_catalog, pg_temp;

/*
 * Queues a run, or returns the run already queued or running.  A run after
 * a stopped run of the same kind resumes from its snapshot and checkpoint.
 */
CREATE FUNCTION retl._enqueue(sync_name text, want_full boolean, retry boolean DEFAULT false)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	s retl.syncs := retl._sync(sync_name, true);
	r retl.runs;
	last retl.runs;
	new_kind text;
	new_id bigint;
BEGIN
	IF NOT s.enabled THEN
		RAISE EXCEPTION 'sync "%" is disabled', sync_name
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Enable it with retl_enable_sync().';
	END IF;
	IF want_full AND NOT s.needs_full THEN
		UPDATE retl.syncs SET needs_full = true, full_reason = 'forced'
		 WHERE id OPERATOR(pg_catalog.=) s.id;
		s.needs_full := true;
		s.full_reason := 'forced';
	END IF;
	SELECT * INTO r FROM retl.runs x
	 WHERE x.sync_id OPERATOR(pg_catalog.=) s.id AND x.status IN ('queued', 'running')
	 ORDER BY x.id DESC LIMIT 1;
	IF FOUND THEN
		IF r.status OPERATOR(pg_catalog.=) 'queued' THEN
			IF want_full AND r.kind OPERATOR(pg_catalog.<>) 'full' THEN
				UPDATE retl.runs SET kind = 'full', full_reason = 'forced',
					   snapshot = NULL, checkpoint = NULL
				 WHERE id OPERATOR(pg_catalog.=) r.id;
			END IF;
			IF retry THEN
				UPDATE retl.runs SET retry_failed = true WHERE id OPERATOR(pg_catalog.=) r.id;
			END IF;
			RETURN r.id;
		ELSIF NOT want_full OR r.kind OPERATOR(pg_catalog.=) 'full' THEN
			RETURN r.id;
		END IF;
	END IF;
	-- a full run already queued behind a running incremental serves both calls
	SELECT * INTO r FROM retl.runs x
	 WHERE x.sync_id OPERATOR(pg_catalog.=) s.id AND x.status OPERATOR(pg_catalog.=) 'queued';
	IF FOUND THEN
		RETURN r.id;
	END IF;
	new_kind := CASE WHEN s.needs_full THEN 'full' ELSE 'incremental' END;
	SELECT * INTO last FROM retl.runs x
	 WHERE x.sync_id OPERATOR(pg_catalog.=) s.id
	   AND x.status IN ('succeeded', 'failed', 'stopped', 'stopping', 'draining')
	 ORDER BY x.id DESC LIMIT 1;
	IF NOT FOUND OR last.status IN ('succeeded', 'failed')
	   OR last.kind OPERATOR(pg_catalog.<>) new_kind
	   OR want_full THEN
		last := NULL;
	END IF;
	INSERT INTO retl.runs (sync_id, sync_name, kind, full_reason, retry_failed,
						   snapshot, checkpoint)
		VALUES (s.id, s.name, new_kind,
				CASE WHEN s.needs_full THEN s.full_reason END, retry,
				last.snapshot,
				pg_catalog.jsonb_build_object('pos', coalesce(last.checkpoint->'pos', '0')))
		RETURNING id INTO new_id;
	PERFORM retl._wake();
	RETURN new_id;
END $$ SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION @extschema@.retl_sync_now(sync text)
RETURNS bigint LANGUAGE sql AS $$ SELECT retl._enqueue(sync, false) $$;

CREATE FUNCTION @extschema@.retl_force_full(sync text)
RETURNS bigint LANGUAGE sql AS $$ SELECT retl._enqueue(sync, true) $$;

CREATE FUNCTION @extschema@.retl_retry_failed(sync text)
RETURNS bigint LANGUAGE sql AS $$ SELECT retl._enqueue(sync, false, true) $$;

CREATE FUNCTION @extschema@.retl_stop(sync text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	s retl.syncs := retl._sync(sync, true);
BEGIN
	RETURN retl._stop_active(s.id);
END $$ SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION retl._preview(sync_id bigint, n integer)
RETURNS SETOF jsonb LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'retl_preview';

CREATE FUNCTION @extschema@.retl_preview(sync text, n integer DEFAULT 5)
RETURNS SETOF jsonb LANGUAGE plpgsql AS $$
DECLARE
	s retl.syncs := retl._sync(sync);
BEGIN
	IF n IS NULL OR n < 0 THEN
		RAISE EXCEPTION 'n must be zero or more'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY SELECT * FROM retl._preview(s.id, n);
END $$ SET search_path = pg_catalog, pg_temp;

/* ---------------------------------------------------------------------
 * Status
 * ------------------------------------------------------------------- */

CREATE VIEW retl.sync_status AS
SELECT s.id AS sync_id,
	   s.name AS sync,
	   s.enabled,
	   d.name AS destination,
	   d.kind AS destination_kind,
	   s.source,
	   s.event_type,
	   s.mode,
	   s.detector,
	   CASE WHEN s.needs_full THEN 'full' ELSE 'incremental' END AS next_run_kind,
	   s.full_reason AS next_full_reason,
	   lr.id AS last_run_id,
	   lr.kind AS last_run_kind,
	   lr.status AS last_run_status,
	   lr.requested_at AS last_run_requested_at,
	   lr.started_at AS last_run_started_at,
	   lr.finished_at AS last_run_finished_at,
	   lr.rows_read,
	   lr.rows_deleted,
	   lr.events_sent,
	   lr.events_succeeded,
	   lr.events_failed,
	   lr.error AS last_error,
	   lr.full_reason AS last_run_full_reason,
	   CASE WHEN lr.status IN ('running', 'stopping', 'draining')
			THEN lr.rows_read END AS progress_rows,
	   CASE WHEN lr.status IN ('running', 'stopping', 'draining')
			THEN lr.rows_estimated END AS progress_total,
	   CASE WHEN lr.status IN ('running', 'stopping', 'draining') AND lr.rows_estimated > 0
			THEN round(100.0 * least(lr.rows_read, lr.rows_estimated) / lr.rows_estimated, 1)
	   END AS progress_percent,
	   round(lr.events_sent / greatest(extract(epoch FROM
			 coalesce(lr.finished_at, clock_timestamp()) - lr.started_at), 0.001))::bigint
		 AS events_per_second,
	   clock_timestamp() - (SELECT max(r.finished_at) FROM retl.runs r
							 WHERE r.sync_id OPERATOR(pg_catalog.=) s.id
							   AND r.status OPERATOR(pg_catalog.=) 'succeeded')
		 AS since_last_success,
	   s.cursor_run_id,
	   retl.snapshot_text(s.cursor_snapshot) AS cursor_position,
	   (SELECT count(*) FROM retl.failed_events f
		 WHERE f.sync_id OPERATOR(pg_catalog.=) s.id) AS failed_events
  FROM retl.syncs s
  JOIN retl.destinations d ON d.id OPERATOR(pg_catalog.=) s.destination_id
  LEFT JOIN LATERAL (SELECT * FROM retl.runs r
					  WHERE r.sync_id OPERATOR(pg_catalog.=) s.id
					  ORDER BY r.id DESC LIMIT 1) lr ON true;
