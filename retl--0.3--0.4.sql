/* retl 0.3 -> 0.4: security and operations defaults, delivery fixes */

\echo Use "ALTER EXTENSION retl UPDATE TO '0.4'" to load this file. \quit

/*
 * Issue 14, item 6: messageIds name row versions.  A diff sync's event id
 * mixes in the fingerprint the destination had before (0 for a key's
 * first content, which keeps the ids of 0.3); an unchanged row sent again
 * keeps its version, stored here.
 */
ALTER TABLE retl.fingerprints ADD COLUMN previous bigint NOT NULL DEFAULT 0;

/* ---------------------------------------------------------------------
 * Issue 14, item 14: retl_preview shows the destination kind's records
 * (format 'records', the default), or the standard events (format
 * 'standard').  Calls without a format keep working.
 * ------------------------------------------------------------------- */
DROP FUNCTION @extschema@.retl_preview(text, integer);
DROP FUNCTION retl._preview(bigint, integer);

CREATE FUNCTION retl._preview(sync_id bigint, n integer, standard boolean)
RETURNS SETOF jsonb LANGUAGE C STRICT AS 'MODULE_PATHNAME', 'retl_preview';

CREATE FUNCTION @extschema@.retl_preview(sync text, n integer DEFAULT 5,
										 format text DEFAULT 'records')
RETURNS SETOF jsonb LANGUAGE plpgsql AS $$
DECLARE
	s retl.syncs := retl._sync(sync);
BEGIN
	IF n IS NULL OR n < 0 THEN
		RAISE EXCEPTION 'n must be zero or more'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF format IS NULL OR format NOT IN ('records', 'standard') THEN
		RAISE EXCEPTION 'invalid preview format "%"', format
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use ''records'' (the destination kind''s records, the default) or ''standard'' (the standard events).';
	END IF;
	RETURN QUERY SELECT * FROM retl._preview(s.id, n, format = 'standard');
END $$ SET search_path = pg_catalog, pg_temp;

/* ---------------------------------------------------------------------
 * Issue 14, item 9: the next run of a failed run resumes from its
 * checkpoint, as after a stop, when it is of the same kind: a failed run
 * stops reading at once, so the rows it never reached are read then.
 * The resumed run starts after the checkpoint's key as well as at its
 * block position (sources read by key resume too).  (In
 * retl._enqueue_run, below.)
 * ------------------------------------------------------------------- */

/* ---------------------------------------------------------------------
 * Issue 12, items 1 and 2: a grant to use retl, and runs written only by
 * retl.
 *
 * Using retl takes a grant, as pg_cron and pg_net do: EXECUTE on the API
 * and access to the catalog go to retl_user and retl_admin, not PUBLIC.
 * Members still see only what they own (row-level security, 0.2).
 * Nobody but retl writes a run: a queued run's snapshot becomes its
 * sync's cursor and its checkpoint its counters.  The API queues and
 * stops runs through retl._run_control (C), which checks, with the
 * caller's row-level security, that the caller manages the sync, and
 * then runs retl._enqueue_run or retl._stop_run as the owner of the
 * catalog; those two are executable by that owner only.
 * ------------------------------------------------------------------- */

DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles
					WHERE rolname OPERATOR(pg_catalog.=) 'retl_user') THEN
		CREATE ROLE retl_user NOLOGIN;
	END IF;
END $$;
COMMENT ON ROLE retl_user IS 'retl: members create and manage their own syncs and destinations';

/* Queues a run of a sync the caller manages (retl._run_control checked it). */
CREATE FUNCTION retl._enqueue_run(sync_id bigint, want_full boolean, retry boolean)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	s retl.syncs;
	r retl.runs;
	last retl.runs;
	new_kind text;
	new_id bigint;
	resume jsonb;
BEGIN
	SELECT * INTO s FROM retl.syncs x WHERE x.id OPERATOR(pg_catalog.=) _enqueue_run.sync_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'sync % does not exist', sync_id
			USING ERRCODE = 'undefined_object';
	END IF;
	IF NOT s.enabled THEN
		RAISE EXCEPTION 'sync "%" is disabled', s.name
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
	-- a stopped or failed run of the same kind is resumed from its checkpoint
	-- (issue 14, item 9: a failed run stops reading at once)
	IF NOT FOUND OR last.status OPERATOR(pg_catalog.=) 'succeeded'
	   OR last.kind OPERATOR(pg_catalog.<>) new_kind
	   OR want_full THEN
		last := NULL;
	END IF;
	resume := pg_catalog.jsonb_build_object('pos', coalesce(last.checkpoint->'pos', '0'));
	IF last.checkpoint ? 'key' THEN
		resume := resume OPERATOR(pg_catalog.||)
			pg_catalog.jsonb_build_object('key', last.checkpoint->'key');
	END IF;
	INSERT INTO retl.runs (sync_id, sync_name, kind, full_reason, retry_failed,
						   snapshot, checkpoint)
		VALUES (s.id, s.name, new_kind,
				CASE WHEN s.needs_full THEN s.full_reason END, retry,
				last.snapshot, resume)
		RETURNING id INTO new_id;
	PERFORM retl._wake();
	RETURN new_id;
END $$ SET search_path = pg_catalog, pg_temp;

/* Stops the active run of a sync the caller manages; returns its id. */
CREATE FUNCTION retl._stop_run(sync_id bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	r retl.runs;
BEGIN
	SELECT * INTO r FROM retl.runs x
	 WHERE x.sync_id OPERATOR(pg_catalog.=) _stop_run.sync_id
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
	 WHERE retl.runs.sync_id OPERATOR(pg_catalog.=) _stop_run.sync_id
	   AND status OPERATOR(pg_catalog.=) 'queued';
	RETURN r.id;
END $$ SET search_path = pg_catalog, pg_temp;

/* action 'enqueue' or 'stop'; want_full and retry only for 'enqueue' */
CREATE FUNCTION retl._run_control(action text, sync_id bigint,
	want_full boolean DEFAULT false, retry boolean DEFAULT false)
RETURNS bigint LANGUAGE C AS 'MODULE_PATHNAME', 'retl_run_control';

/* The callers' side: look the sync up as the caller, then go through the gate. */
CREATE OR REPLACE FUNCTION retl._enqueue(sync_name text, want_full boolean, retry boolean DEFAULT false)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	s retl.syncs := retl._sync(sync_name, true);
BEGIN
	RETURN retl._run_control('enqueue', s.id, want_full, retry);
END $$ SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION retl._stop_active(sync_id bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
	RETURN retl._run_control('stop', sync_id);
END $$ SET search_path = pg_catalog, pg_temp;

/*
 * The catalog: members of retl_user and retl_admin, no longer PUBLIC.  The
 * schema stays usable by PUBLIC: a sync's runs read its source as its
 * owner, with a filter that calls retl._xmin_is_new, and keep working
 * for an owner whose grant was revoked (the grant is for using the API).
 */
REVOKE ALL ON retl.destinations, retl.destination_secrets, retl.syncs, retl.runs,
	retl.failed_events, retl.fingerprints, retl.sync_status FROM PUBLIC;
GRANT SELECT, DELETE ON retl.destinations TO retl_user, retl_admin;
GRANT INSERT (name, kind, config), UPDATE (config) ON retl.destinations TO retl_user, retl_admin;
GRANT SELECT ON retl.destination_secrets TO retl_user, retl_admin;
GRANT INSERT (destination_id, config) ON retl.destination_secrets TO retl_user, retl_admin;
GRANT SELECT, DELETE ON retl.syncs TO retl_user, retl_admin;
GRANT INSERT (name, source, destination_id, event_type, mapping, primary_key, mode,
			  options, detector) ON retl.syncs TO retl_user, retl_admin;
GRANT UPDATE (mapping, options, detector, needs_full, full_reason, enabled)
	ON retl.syncs TO retl_user, retl_admin;
-- runs: read only; retl._enqueue_run and retl._stop_run write them
GRANT SELECT ON retl.runs TO retl_user, retl_admin;
GRANT SELECT ON retl.failed_events TO retl_user, retl_admin;
GRANT SELECT ON retl.sync_status TO retl_user, retl_admin;

/*
 * Functions: nothing to PUBLIC.  The API and the helpers it calls with
 * the caller's privileges (or that row-level security and the status view
 * call) go to retl_user and retl_admin.  retl._xmin_is_new stays PUBLIC:
 * a run's filter calls it as the sync's owner, which may have lost its
 * grant since (a pure function of its arguments).
 */
DO $$
DECLARE
	f regprocedure;
BEGIN
	FOR f IN SELECT p.oid FROM pg_catalog.pg_proc p
			   JOIN pg_catalog.pg_depend d ON d.objid OPERATOR(pg_catalog.=) p.oid
			  WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
				AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
				AND d.deptype OPERATOR(pg_catalog.=) 'e'
				AND d.refobjid OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_extension
													   WHERE extname OPERATOR(pg_catalog.=) 'retl')
	LOOP
		EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
	END LOOP;
END $$;
GRANT EXECUTE ON FUNCTION
	@extschema@.retl_create_destination(text, text, jsonb),
	@extschema@.retl_drop_destination(text, boolean),
	@extschema@.retl_create_sync(text, regclass, text, text, jsonb, text, text, jsonb),
	@extschema@.retl_alter_sync(text, jsonb, jsonb),
	@extschema@.retl_drop_sync(text),
	@extschema@.retl_enable_sync(text),
	@extschema@.retl_disable_sync(text),
	@extschema@.retl_sync_now(text),
	@extschema@.retl_force_full(text),
	@extschema@.retl_retry_failed(text),
	@extschema@.retl_stop(text),
	@extschema@.retl_preview(text, integer, text),
	retl._validate_destination(text, jsonb),
	retl._validate_sync(regclass, text, jsonb, text, jsonb),
	retl._check_event_type(text, text),
	retl._redact(jsonb),
	retl._detector(regclass, text, text, text, jsonb),
	retl._sync(text, boolean),
	retl._enqueue(text, boolean, boolean),
	retl._stop_active(bigint),
	retl._run_control(text, bigint, boolean, boolean),
	retl._preview(bigint, integer, boolean),
	retl._manages(regrole),
	retl._exists(text, text),
	retl._deny_if_hidden(text, text),
	retl.snapshot_text(bytea)
	TO retl_user, retl_admin;
GRANT EXECUTE ON FUNCTION retl._xmin_is_new(xid, bytea) TO PUBLIC;

/* Roles that own syncs or destinations keep working after the update. */
DO $$
DECLARE
	r regrole;
BEGIN
	-- owners still in pg_roles (a dropped owner's syncs only fail their runs)
	FOR r IN SELECT o.owner FROM (SELECT owner FROM retl.syncs
								  UNION SELECT owner FROM retl.destinations) o
			   JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) o.owner::oid
	LOOP
		IF NOT pg_catalog.pg_has_role(r::oid, 'retl_user', 'MEMBER') THEN
			EXECUTE pg_catalog.format('GRANT retl_user TO %s', r);
		END IF;
	END LOOP;
END $$;

/* ---------------------------------------------------------------------
 * Issue 12, item 3: credentials in URLs are redacted.  retl._redact now
 * shows a URL's userinfo as "***" (and, with "url_is_secret": true, only
 * its scheme and host): redact the stored copies again from the full
 * configs.
 * ------------------------------------------------------------------- */
UPDATE retl.destinations d SET config = retl._redact(s.config)
  FROM retl.destination_secrets s
 WHERE s.destination_id OPERATOR(pg_catalog.=) d.id;

/* ---------------------------------------------------------------------
 * Issue 12, items 4 and 6: database slots are freed, idle workers make
 * room, and databases waiting for a worker show in retl.workers.
 * ------------------------------------------------------------------- */
CREATE FUNCTION retl._workers(OUT dboid oid, OUT pid integer, OUT state text,
	OUT waiting_since timestamptz)
RETURNS SETOF record LANGUAGE C STRICT VOLATILE AS 'MODULE_PATHNAME', 'retl_workers';
REVOKE ALL ON FUNCTION retl._workers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION retl._workers() TO retl_user, retl_admin;

/*
 * One row per database that has a retl worker or wants one: state
 * 'running', 'idle', 'leaving' (asked to make room), 'starting', or
 * 'waiting' for a background worker slot since waiting_since.
 */
CREATE VIEW retl.workers AS
SELECT w.dboid, d.datname AS database, w.pid, w.state, w.waiting_since
  FROM retl._workers() w
  LEFT JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) w.dboid;
REVOKE ALL ON retl.workers FROM PUBLIC;
GRANT SELECT ON retl.workers TO retl_user, retl_admin;

/* ---------------------------------------------------------------------
 * Issue 14, item 10: sync names are at most 255 bytes, so that every
 * notification (NOTIFY retl_runs carries the name) stays far under
 * PostgreSQL's 8,000-byte payload limit.  Checked when a sync is
 * created: longer names made before 0.4 keep working (the worker cuts
 * them in the notification).
 * ------------------------------------------------------------------- */
CREATE FUNCTION retl._check_sync_name() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	IF pg_catalog.octet_length(NEW.name) OPERATOR(pg_catalog.>) 255 THEN
		RAISE EXCEPTION 'sync name is too long (% bytes)', pg_catalog.octet_length(NEW.name)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A sync name has at most 255 bytes.';
	END IF;
	RETURN NEW;
END $$ SET search_path = pg_catalog, pg_temp;
CREATE TRIGGER check_sync_name BEFORE INSERT ON retl.syncs
	FOR EACH ROW EXECUTE FUNCTION retl._check_sync_name();
REVOKE ALL ON FUNCTION retl._check_sync_name() FROM PUBLIC;

/* ---------------------------------------------------------------------
 * Issue 14, item 5: Braze, Iterable and Mixpanel requests carry one event
 * type (an identify sync's batches go to their user endpoints), so a
 * mirror sync's deletions cannot be track events there: on_delete
 * {"event": ...} is refused when the sync is created or altered, rather
 * than sending records that delete nothing.  Runs as the caller, who sees
 * its own destination.
 * ------------------------------------------------------------------- */
CREATE FUNCTION retl._check_on_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	dest_kind text;
BEGIN
	IF NEW.mode OPERATOR(pg_catalog.<>) 'mirror'
	   OR pg_catalog.jsonb_typeof(NEW.options->'on_delete') IS DISTINCT FROM 'object' THEN
		RETURN NEW;
	END IF;
	SELECT d.kind INTO dest_kind FROM retl.destinations d
	 WHERE d.id OPERATOR(pg_catalog.=) NEW.destination_id;
	IF dest_kind IN ('braze', 'iterable', 'mixpanel') THEN
		RAISE EXCEPTION 'option "on_delete" {"event": ...} is not supported by % destinations', dest_kind
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'A ' || dest_kind || ' request carries one event type: the deletions of an identify sync go to its user endpoint.',
				  HINT = 'Leave on_delete out (deleted keys get their mapped traits set to null) or use "skip".';
	END IF;
	RETURN NEW;
END $$ SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION retl._check_on_delete() FROM PUBLIC;
CREATE TRIGGER check_on_delete BEFORE INSERT OR UPDATE OF options, mode ON retl.syncs
	FOR EACH ROW EXECUTE FUNCTION retl._check_on_delete();

/* ---------------------------------------------------------------------
 * Issue 11: content-diff fingerprints hash a row's column values, so an
 * unchanged row is skipped before its event is built ('values').  Syncs
 * made before 0.4 keep fingerprints of the event's content ('event'):
 * their stored fingerprints stay valid, and switching would make every
 * row look changed once.
 * ------------------------------------------------------------------- */
ALTER TABLE retl.syncs ADD COLUMN fingerprints text NOT NULL DEFAULT 'event'
	CHECK (fingerprints IN ('event', 'values'));
ALTER TABLE retl.syncs ALTER COLUMN fingerprints SET DEFAULT 'values';
COMMENT ON COLUMN retl.syncs.fingerprints IS
	'content diff: what a fingerprint hashes: the column values (0.4) or the event (syncs made before 0.4)';
