/* retl 0.2 -> 0.3: how each run reads its source */

\echo Use "ALTER EXTENSION retl UPDATE TO '0.3'" to load this file. \quit

/*
 * read_method: how the run read its source, once its first page chose it:
 * 'blocks' (tables, materialized views, partition leaves: ranges of
 * blocks), 'keys' (views whose key pages stream: WHERE key > last ORDER BY
 * key) or 'materialized' (other views, read once into the worker's own
 * store, sorted by key).  Written by the worker only.
 */
ALTER TABLE retl.runs ADD COLUMN read_method text
	CHECK (read_method IN ('blocks', 'keys', 'materialized'));

/*
 * Fingerprint keys compare bytewise: the worker probes and walks them by
 * the thousand, and a linguistic collation made every comparison strcoll.
 */
ALTER TABLE retl.fingerprints ALTER COLUMN pk TYPE text COLLATE "C";

/*
 * The worker writes fingerprints a batch at a time; a foreign key checked
 * every row of every batch (a query each) and cost as much as the write.
 * The worker locks the sync once per batch instead (FOR KEY SHARE, so a
 * sync being dropped is waited for), and dropping a sync forgets its
 * fingerprints here, as the foreign key's cascade did (as the extension's
 * owner: the deleted sync's fingerprints are no longer visible to its
 * owner through row-level security).
 */
ALTER TABLE retl.fingerprints DROP CONSTRAINT fingerprints_sync_id_fkey;

CREATE FUNCTION retl._forget_fingerprints() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
	DELETE FROM retl.fingerprints f USING gone g
	 WHERE f.sync_id OPERATOR(pg_catalog.=) g.id;
	RETURN NULL;
END $$ SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION retl._forget_fingerprints() FROM PUBLIC;

CREATE TRIGGER forget_fingerprints AFTER DELETE ON retl.syncs
	REFERENCING OLD TABLE AS gone
	FOR EACH STATEMENT EXECUTE FUNCTION retl._forget_fingerprints();

CREATE OR REPLACE VIEW retl.sync_status AS
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
		 WHERE f.sync_id OPERATOR(pg_catalog.=) s.id) AS failed_events,
	   lr.read_method
  FROM retl.syncs s
  JOIN retl.destinations d ON d.id OPERATOR(pg_catalog.=) s.destination_id
  LEFT JOIN LATERAL (SELECT * FROM retl.runs r
					  WHERE r.sync_id OPERATOR(pg_catalog.=) s.id
					  ORDER BY r.id DESC LIMIT 1) lr ON true;

-- CREATE OR REPLACE VIEW resets the view's options
ALTER VIEW retl.sync_status SET (security_invoker = true);
