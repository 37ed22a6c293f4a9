/* retl 0.4 -> 0.5: the content diff's fingerprints, in chunks of keys */

\echo Use "ALTER EXTENSION retl UPDATE TO '0.5'" to load this file. \quit

/*
 * Issue 11: a content-diff sync's fingerprints are kept as chunks, one row
 * for each acknowledged batch (arrays of its keys, fingerprints,
 * identities and previous fingerprints), not a row and a primary-key
 * entry for each key: on a first run, the primary key's btree (a descent,
 * a unique check and a WAL record a key) cost more worker time than
 * reading the source.  A key's fingerprint is its last entry, in chunk
 * order; a fingerprint 0 marks a forgotten key, a NULL previous array
 * previous fingerprints of 0.  The worker loads every chunk of a sync at
 * the start of a run (it kept every key in memory already), and rewrites a
 * sync's chunks when most of their entries are stale (src/README, "Stored
 * fingerprints").  It writes a batch as rows of up to about 8 kB, which
 * toast_tuple_target keeps in the heap page: toasting them (a compression
 * attempt, then a toast row and a toast index entry every 2 kB) cost a
 * first run more than the rest of the write.
 */
CREATE TABLE retl.fingerprint_chunks (
	sync_id		bigint NOT NULL,
	chunk		bigint NOT NULL,
	pks			text[] COLLATE "C" NOT NULL,
	fingerprints bigint[] NOT NULL,
	identities	text[],
	previous	bigint[],
	PRIMARY KEY (sync_id, chunk),
	CHECK (pg_catalog.cardinality(pks) OPERATOR(pg_catalog.=)
		   pg_catalog.cardinality(fingerprints)
		   AND (previous IS NULL OR pg_catalog.cardinality(pks) OPERATOR(pg_catalog.=)
				pg_catalog.cardinality(previous)))
) WITH (toast_tuple_target = 8160);
/* a row that is toasted all the same is not compressed: fingerprints are random */
ALTER TABLE retl.fingerprint_chunks ALTER COLUMN pks SET STORAGE EXTERNAL,
	ALTER COLUMN fingerprints SET STORAGE EXTERNAL,
	ALTER COLUMN identities SET STORAGE EXTERNAL,
	ALTER COLUMN previous SET STORAGE EXTERNAL;
COMMENT ON TABLE retl.fingerprint_chunks IS
	'the content diff''s state: the fingerprints of a sync''s acknowledged batches; read retl.fingerprints';
SELECT pg_catalog.pg_extension_config_dump('retl.fingerprint_chunks', '');
ALTER TABLE retl.fingerprint_chunks ENABLE ROW LEVEL SECURITY;
CREATE POLICY manage ON retl.fingerprint_chunks
	USING (EXISTS (SELECT 1 FROM retl.syncs s WHERE s.id OPERATOR(pg_catalog.=) sync_id));
REVOKE ALL ON retl.fingerprint_chunks FROM PUBLIC;

/* the stored keys of 0.4, a chunk of up to 250 keys (a row in its page) */
INSERT INTO retl.fingerprint_chunks
	(sync_id, chunk, pks, fingerprints, identities, previous)
SELECT sync_id, g OPERATOR(pg_catalog.+) 1,
	   pg_catalog.array_agg(pk ORDER BY pk),
	   pg_catalog.array_agg(fingerprint ORDER BY pk),
	   pg_catalog.array_agg(identity ORDER BY pk),
	   pg_catalog.array_agg(previous ORDER BY pk)
  FROM (SELECT f.*, (pg_catalog.row_number() OVER (PARTITION BY sync_id ORDER BY pk)
					 OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog./) 250 AS g
		  FROM retl.fingerprints f) s
 GROUP BY sync_id, g;

ALTER EXTENSION retl DROP TABLE retl.fingerprints;
DROP TABLE retl.fingerprints;

/* a key's fingerprint, as 0.4 kept it: its last entry, unless forgotten */
CREATE VIEW retl.fingerprints AS
SELECT sync_id, pk, fingerprint, identity, previous
  FROM (SELECT DISTINCT ON (c.sync_id, u.pk)
			   c.sync_id, u.pk, u.fingerprint, u.identity,
			   COALESCE(u.previous, 0) AS previous
		  FROM retl.fingerprint_chunks c,
			   ROWS FROM (pg_catalog.unnest(c.pks), pg_catalog.unnest(c.fingerprints),
						  pg_catalog.unnest(c.identities), pg_catalog.unnest(c.previous))
			   WITH ORDINALITY AS u (pk, fingerprint, identity, previous, n)
		 ORDER BY c.sync_id, u.pk, c.chunk DESC, u.n DESC) f
 WHERE fingerprint OPERATOR(pg_catalog.<>) 0;
COMMENT ON VIEW retl.fingerprints IS
	'the content diff''s state: the fingerprint the destination has of each key of each sync';
REVOKE ALL ON retl.fingerprints FROM PUBLIC;

CREATE OR REPLACE FUNCTION retl._forget_fingerprints() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
	DELETE FROM retl.fingerprint_chunks f USING gone g
	 WHERE f.sync_id OPERATOR(pg_catalog.=) g.id;
	RETURN NULL;
END $$ SET search_path = pg_catalog, pg_temp;
