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
 * block position (sources read by key resume too).
 * ------------------------------------------------------------------- */
CREATE OR REPLACE FUNCTION retl._enqueue(sync_name text, want_full boolean, retry boolean DEFAULT false)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	s retl.syncs := retl._sync(sync_name, true);
	r retl.runs;
	last retl.runs;
	new_kind text;
	new_id bigint;
	resume jsonb;
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
