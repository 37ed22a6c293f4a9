/*-------------------------------------------------------------------------
 *
 * fingerprints.c
 *	  retl.fingerprint_chunks, for the content diff (read/diff.c): the load
 *	  of a sync's chunks, the chunks the deletions walk reads, the chunk
 *	  of each acknowledged batch, and the rewrite of a sync's chunks.
 *
 * A chunk is one row of arrays: keys, fingerprints, identities (or a NULL
 * array) and previous fingerprints.  A key's fingerprint is its last entry
 * in chunk order (then array order); a fingerprint 0 forgets the key.
 * retl.fingerprints is the view of that.  Writes append a chunk numbered
 * one above the sync's last, so one statement stores a whole batch, with
 * no index entry a key (src/README, "Stored fingerprints").  Only the
 * worker that runs the sync writes its chunks.
 *
 * Statements run as the worker, in the reader's page transaction (the
 * walk, the chunk of forgotten keys, the rewrite), in the transaction
 * that sets a run up (the load) or in a short transaction of their own
 * (acknowledged batches).
 *
 *-------------------------------------------------------------------------
 */
#include "store_internal.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/*
 * The elements of a bigint[] column that must have n of them, none NULL.
 */
static int64 *
int8_elems(Datum d, int n)
{
	ArrayType  *a = DatumGetArrayTypeP(d);

	if (ARR_NDIM(a) > 1 || ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a)) != n ||
		ARR_HASNULL(a) || ARR_ELEMTYPE(a) != INT8OID)
		elog(ERROR, "retl: a fingerprint chunk's arrays do not match");
	return (int64 *) ARR_DATA_PTR(a);
}

/*
 * Deconstructs the chunk of row i of the SPI result whose columns are
 * chunk, pks, fingerprints, previous and, when with_idents, identities.
 * The arrays live in the current memory context (or in the result).
 */
static void
read_chunk(SPITupleTable *tt, uint64 i, bool with_idents, RetlFpChunk *c)
{
	HeapTuple	tup = tt->vals[i];
	TupleDesc	desc = tt->tupdesc;
	bool		isnull;
	bool	   *nulls;

	c->chunk = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 2, &isnull)),
					  TEXTOID, -1, false, TYPALIGN_INT, &c->pks, &nulls, &c->n);
	for (int j = 0; j < c->n; j++)
		if (nulls[j])
			elog(ERROR, "retl: a fingerprint chunk has a NULL key");
	c->fps = int8_elems(SPI_getbinval(tup, desc, 3, &isnull), c->n);
	c->prevs = int8_elems(SPI_getbinval(tup, desc, 4, &isnull), c->n);
	c->idents = NULL;
	c->ident_nulls = NULL;
	if (with_idents)
	{
		Datum		d = SPI_getbinval(tup, desc, 5, &isnull);
		int			m;

		if (isnull)
			return;
		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false,
						  TYPALIGN_INT, &c->idents, &c->ident_nulls, &m);
		if (m != c->n)
			elog(ERROR, "retl: a fingerprint chunk's arrays do not match");
	}
}

static RetlStoreStmt scan_stmt = {
	"SELECT chunk, pks, fingerprints, previous FROM retl.fingerprint_chunks"
	" WHERE sync_id = $1 ORDER BY chunk",
	1, {INT8OID}, 0, true
};

/*
 * Hands every chunk of a sync to fn, in chunk order, through a cursor of
 * its own that lives only while this function runs (no owner's code runs
 * meanwhile).  Each chunk's arrays are freed when fn returns.  Runs in
 * the caller's transaction.
 */
void
retl_store_fp_scan(int64 sync_id, RetlFpChunkFn fn, void *arg)
{
	Datum		values[1] = {Int64GetDatum(sync_id)};
	Portal		portal = SPI_cursor_open(NULL, retl_store_prepare(&scan_stmt),
										 values, NULL, true);
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "retl fingerprint chunk",
											  ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		SPI_cursor_fetch(portal, true, 100);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);
			RetlFpChunk c;

			read_chunk(SPI_tuptable, i, false, &c);
			MemoryContextSwitchTo(old);
			fn(arg, &c);
			MemoryContextReset(cxt);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(cxt);
}

static RetlStoreStmt chunks_stmt = {
	"SELECT chunk, pks, fingerprints, previous, identities"
	" FROM retl.fingerprint_chunks"
	" WHERE sync_id = $1 AND chunk = ANY ($2) ORDER BY chunk",
	2, {INT8OID, INT8ARRAYOID}, 0, true
};

/*
 * Reads the chunks of a sync numbered chunks[0 .. n-1], identities
 * included, in chunk order, into *out, in the caller's (page) transaction
 * and memory.  Returns how many there are (a chunk may be gone).
 */
int
retl_store_fp_chunks(int64 sync_id, const int64 *chunks, int n,
					 RetlFpChunk **out)
{
	Datum		values[2] = {Int64GetDatum(sync_id),
	PointerGetDatum(retl_store_int8_array(chunks, n))};
	SPITupleTable *tt;
	int			m;

	retl_store_exec(&chunks_stmt, values, NULL, SPI_OK_SELECT);
	tt = SPI_tuptable;
	m = (int) SPI_processed;
	*out = palloc(Max(m, 1) * sizeof(RetlFpChunk));
	for (int i = 0; i < m; i++)
		read_chunk(tt, i, true, &(*out)[i]);
	return m;
}

/* scans no chunks but the last: its saved plan can be generic */
static RetlStoreStmt write_stmt = {
	"INSERT INTO retl.fingerprint_chunks"
	" (sync_id, chunk, pks, fingerprints, identities, previous)"
	" SELECT s.id, coalesce((SELECT max(c.chunk) FROM retl.fingerprint_chunks c"
	"   WHERE c.sync_id = $1), 0) + 1, $2, $3, $4, $5"
	" FROM retl.syncs s WHERE s.id = $1 FOR KEY SHARE",
	5, {INT8OID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID, INT8ARRAYOID}
};

/*
 * Stores n keys as one chunk, the sync's newest, in the caller's
 * transaction.  The sync is locked against a concurrent drop (whose
 * trigger forgets its chunks); a dropped sync stores nothing.  A chunk
 * without identities stores a NULL array.
 */
void
retl_store_fp_write(int64 sync_id, const RetlFpRows *k)
{
	Datum		values[5];
	char		nulls[6] = "     ";
	bool		idents = false;

	if (k->n == 0)
		return;
	for (int i = 0; i < k->n && !idents; i++)
		idents = k->idents[i] != NULL;
	values[0] = Int64GetDatum(sync_id);
	values[1] = PointerGetDatum(retl_store_text_array(k->pks, k->n, false));
	values[2] = PointerGetDatum(retl_store_int8_array(k->fps, k->n));
	values[3] = idents
		? PointerGetDatum(retl_store_text_array(k->idents, k->n, true)) : (Datum) 0;
	values[4] = PointerGetDatum(retl_store_int8_array(k->prevs, k->n));
	if (!idents)
		nulls[3] = 'n';
	retl_store_exec(&write_stmt, values, nulls, 0);
}

/*
 * Stores the chunk of an acknowledged batch (its fingerprints, and 0 for
 * the keys whose deletion was acknowledged) in a short transaction of its
 * own.
 */
void
retl_store_fp_acked(int64 sync_id, const RetlFpRows *k)
{
	MemoryContext cxt;

	if (k->n == 0)
		return;
	cxt = retl_store_begin();

	/*
	 * A fingerprint lost in a crash only makes the next run send its event
	 * again, with the same messageId: no need to wait for the WAL flush.
	 */
	(void) set_config_option("synchronous_commit", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
	retl_store_fp_write(sync_id, k);
	retl_store_commit(cxt);
}

static RetlStoreStmt rewrite_stmt = {
	"WITH s AS (SELECT id FROM retl.syncs WHERE id = $1 FOR KEY SHARE),"
	" old AS (DELETE FROM retl.fingerprint_chunks WHERE sync_id = $1"
	"  RETURNING chunk, pks, fingerprints, identities, previous),"
	" top AS (SELECT coalesce(max(chunk), 0) AS top FROM old),"
	" last AS (SELECT DISTINCT ON (u.pk) u.pk, u.fp, u.ident, u.prev"
	"  FROM old, ROWS FROM (pg_catalog.unnest(old.pks),"
	"   pg_catalog.unnest(old.fingerprints), pg_catalog.unnest(old.identities),"
	"   pg_catalog.unnest(old.previous))"
	"   WITH ORDINALITY AS u (pk, fp, ident, prev, n)"
	"  ORDER BY u.pk, old.chunk DESC, u.n DESC),"
	" live AS (SELECT l.*, (pg_catalog.row_number() OVER (ORDER BY l.pk) - 1)"
	"   / " CppAsString2(RETL_STORE_FP_CHUNK) " AS g FROM last l WHERE l.fp <> 0)"
	" INSERT INTO retl.fingerprint_chunks"
	" (sync_id, chunk, pks, fingerprints, identities, previous)"
	" SELECT s.id, top.top + 1 + l.g, pg_catalog.array_agg(l.pk ORDER BY l.pk),"
	"  pg_catalog.array_agg(l.fp ORDER BY l.pk),"
	"  CASE WHEN pg_catalog.bool_or(l.ident IS NOT NULL)"
	"   THEN pg_catalog.array_agg(l.ident ORDER BY l.pk) END,"
	"  pg_catalog.array_agg(l.prev ORDER BY l.pk)"
	" FROM s, top, live l GROUP BY s.id, top.top, l.g",
	1, {INT8OID}
};

/*
 * Rewrites a sync's chunks as chunks of its live keys only, in key order,
 * numbered above the old ones, in one statement in the caller's
 * transaction.  The run calls it when most stored entries are stale (keys
 * stored again, or forgotten), so a sync's chunks stay within a few times
 * its keys and the load reads few rows.
 */
void
retl_store_fp_rewrite(int64 sync_id)
{
	Datum		values[1] = {Int64GetDatum(sync_id)};
	int			level = NewGUCNestLevel();

	/* one sort of every entry: in memory for a few million keys */
	(void) set_config_option("work_mem", "262144", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	retl_store_exec(&rewrite_stmt, values, NULL, 0);
	AtEOXact_GUC(false, level);
}
