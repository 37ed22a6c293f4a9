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
