/*-------------------------------------------------------------------------
 *
 * fingerprints.c
 *	  retl.fingerprint_chunks, for the content diff (read/diff.c): the load
 *	  of a sync's chunks, the chunks the deletions walk reads, the chunks
 *	  of each acknowledged batch, and the rewrite of a sync's chunks.
 *
 * A chunk is one row of arrays: keys, fingerprints, identities (or a NULL
 * array) and previous fingerprints (or a NULL array: all 0), of about 8 kB
 * at the most, so that it stays in its heap page (toast_tuple_target).  A
 * key's fingerprint is its last entry in chunk order (then array order); a
 * fingerprint 0 forgets the key.  retl.fingerprints is the view of that.
 * Writes append chunks numbered above the sync's last, so one statement
 * stores a whole batch, with no index entry a key (src/README, "Stored
 * fingerprints").  Only the worker that runs the sync writes its chunks.
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
 * chunk, pks, fingerprints, previous (NULL: all 0) and, when with_idents,
 * identities.  The arrays live in the current memory context (or in the
 * result).
 */
static void
read_chunk(SPITupleTable *tt, uint64 i, bool with_idents, RetlFpChunk *c)
{
	HeapTuple	tup = tt->vals[i];
	TupleDesc	desc = tt->tupdesc;
	bool		isnull;
	bool	   *nulls;
	Datum		d;

	c->chunk = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	deconstruct_array(DatumGetArrayTypeP(SPI_getbinval(tup, desc, 2, &isnull)),
					  TEXTOID, -1, false, TYPALIGN_INT, &c->pks, &nulls, &c->n);
	for (int j = 0; j < c->n; j++)
		if (nulls[j])
			elog(ERROR, "retl: a fingerprint chunk has a NULL key");
	c->fps = int8_elems(SPI_getbinval(tup, desc, 3, &isnull), c->n);
	d = SPI_getbinval(tup, desc, 4, &isnull);
	c->prevs = isnull ? palloc0(Max(c->n, 1) * sizeof(int64)) : int8_elems(d, c->n);
	c->idents = NULL;
	c->ident_nulls = NULL;
	if (with_idents)
	{
		int			m;

		d = SPI_getbinval(tup, desc, 5, &isnull);
		if (isnull)
			return;
		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false,
						  TYPALIGN_INT, &c->idents, &c->ident_nulls, &m);
		if (m != c->n)
			elog(ERROR, "retl: a fingerprint chunk's arrays do not match");
	}
}

/* An open scan of a sync's chunks (retl_store_fp_open). */
struct RetlFpCursor
{
	Portal		portal;
	SPITupleTable *tt;			/* the rows fetched, kept apart from SPI's globals */
	uint64		n;
	uint64		i;				/* the next row of tt */
	bool		with_idents;
	MemoryContext cxt;			/* the chunk last returned */
};

static RetlStoreStmt scan_stmt = {
	"SELECT chunk, pks, fingerprints, previous, identities"
	" FROM retl.fingerprint_chunks"
	" WHERE sync_id = $1 AND chunk > $2 AND chunk <= $3 ORDER BY chunk",
	3, {INT8OID, INT8OID, INT8OID}, 0, true
};

/*
 * Opens a scan of the chunks of a sync numbered above after and up to
 * upto, in chunk order, identities read only when with_idents, in the
 * caller's transaction.  Its cursor sees the chunks as they are now, not
 * what the caller writes or deletes while it is open.  The caller runs no
 * owner's code while it is open, and closes it (retl_store_fp_close)
 * before the transaction ends.
 */
RetlFpCursor *
retl_store_fp_open(int64 sync_id, int64 after, int64 upto, bool with_idents)
{
	Datum		values[3] = {Int64GetDatum(sync_id), Int64GetDatum(after),
	Int64GetDatum(upto)};
	RetlFpCursor *cur = palloc0(sizeof(RetlFpCursor));

	cur->portal = SPI_cursor_open(NULL, retl_store_prepare(&scan_stmt),
								  values, NULL, true);
	cur->with_idents = with_idents;
	cur->cxt = AllocSetContextCreate(CurrentMemoryContext,
									 "retl fingerprint chunk",
									 ALLOCSET_DEFAULT_SIZES);
	return cur;
}

/*
 * The next chunk of a scan, in *c, whose arrays live until the next call;
 * false when there is none.  The caller may run statements between calls.
 */
bool
retl_store_fp_next(RetlFpCursor *cur, RetlFpChunk *c)
{
	MemoryContext old;

	MemoryContextReset(cur->cxt);
	if (cur->i == cur->n)
	{
		if (cur->tt != NULL)
			SPI_freetuptable(cur->tt);
		SPI_cursor_fetch(cur->portal, true, 100);
		cur->tt = SPI_tuptable;
		cur->n = SPI_processed;
		cur->i = 0;
		if (cur->n == 0)
			return false;
	}
	old = MemoryContextSwitchTo(cur->cxt);
	read_chunk(cur->tt, cur->i++, cur->with_idents, c);
	MemoryContextSwitchTo(old);
	return true;
}

/*
 * Ends a scan.
 */
void
retl_store_fp_close(RetlFpCursor *cur)
{
	if (cur->tt != NULL)
		SPI_freetuptable(cur->tt);
	SPI_cursor_close(cur->portal);
	MemoryContextDelete(cur->cxt);
	pfree(cur);
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

/*
 * Stores the parts of a set of keys as chunks, a row each: part i holds
 * the keys lo[i] to hi[i] of the arrays, with its identities and previous
 * fingerprints stored as NULL where has_idents[i] or has_prevs[i] says
 * there is none.  Each row is numbered the sync's newest, in order, or,
 * with $8, $8 and down.  Scans no chunks but the last: its saved plan can
 * be generic.
 */
static RetlStoreStmt write_stmt = {
	"INSERT INTO retl.fingerprint_chunks"
	" (sync_id, chunk, pks, fingerprints, identities, previous)"
	" SELECT s.id, CASE WHEN $8 IS NULL"
	"   THEN coalesce((SELECT max(c.chunk) FROM retl.fingerprint_chunks c"
	"    WHERE c.sync_id = $1), 0) + p.i ELSE $8 - p.i + 1 END,"
	"  $2[p.lo:p.hi], $3[p.lo:p.hi], CASE WHEN p.idents THEN $4[p.lo:p.hi] END,"
	"  CASE WHEN p.prevs THEN $5[p.lo:p.hi] END"
	" FROM retl.syncs s, ROWS FROM (pg_catalog.unnest($6), pg_catalog.unnest($7),"
	"  pg_catalog.unnest($9), pg_catalog.unnest($10))"
	"  WITH ORDINALITY AS p (lo, hi, idents, prevs, i)"
	" WHERE s.id = $1 FOR KEY SHARE OF s",
	10, {INT8OID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID, INT8ARRAYOID,
	INT4ARRAYOID, INT4ARRAYOID, INT8OID, BOOLARRAYOID, BOOLARRAYOID}
};

/*
 * How many of the keys k[from ..] make one chunk row that stays in its
 * heap page (toast_tuple_target 8160): their array elements within
 * ROW_BYTES, and at least one.
 */
#define ROW_BYTES 7600

static int
row_keys(const RetlFpRows *k, int from)
{
	Size		bytes = 0;
	int			i = from;

	for (; i < k->n; i++)
	{
		bytes += INTALIGN(VARHDRSZ + strlen(k->pks[i])) + 2 * sizeof(int64) +
			(k->idents[i] ? INTALIGN(VARHDRSZ + strlen(k->idents[i])) : 0);
		if (bytes > ROW_BYTES && i > from)
			break;
	}
	return i - from;
}

/* The rows that a set of keys is stored in. */
typedef struct FpParts
{
	Datum	   *lo;				/* int4: first key, from 1 */
	Datum	   *hi;				/* int4: last key */
	Datum	   *idents;			/* bool: some identity is not NULL */
	Datum	   *prevs;			/* bool: some previous fingerprint is not 0 */
	int			n;
	bool		any_idents;
	bool		any_prevs;
} FpParts;

/*
 * Cuts a set of keys into rows of about 8 kB at the most (row_keys).
 */
static void
cut_parts(const RetlFpRows *k, FpParts *p)
{
	int			cap = 4;

	memset(p, 0, sizeof(*p));
	p->lo = palloc(cap * sizeof(Datum));
	p->hi = palloc(cap * sizeof(Datum));
	p->idents = palloc(cap * sizeof(Datum));
	p->prevs = palloc(cap * sizeof(Datum));
	for (int from = 0, n; from < k->n; from += n)
	{
		bool		idents = false,
					prevs = false;

		n = row_keys(k, from);
		for (int i = from; i < from + n; i++)
		{
			idents |= k->idents[i] != NULL;
			prevs |= k->prevs[i] != 0;
		}
		if (p->n == cap)
		{
			cap *= 2;
			p->lo = repalloc(p->lo, cap * sizeof(Datum));
			p->hi = repalloc(p->hi, cap * sizeof(Datum));
			p->idents = repalloc(p->idents, cap * sizeof(Datum));
			p->prevs = repalloc(p->prevs, cap * sizeof(Datum));
		}
		p->lo[p->n] = Int32GetDatum(from + 1);
		p->hi[p->n] = Int32GetDatum(from + n);
		p->idents[p->n] = BoolGetDatum(idents);
		p->prevs[p->n++] = BoolGetDatum(prevs);
		p->any_idents |= idents;
		p->any_prevs |= prevs;
	}
}

/*
 * Stores keys as chunks, in one statement in the caller's transaction: a
 * row of about 8 kB at the most each (row_keys), each the sync's newest,
 * or, with chunk not NULL, numbered *chunk, then one less each (a
 * rewrite's numbers, below the chunks written after it; *chunk is left at
 * the next).  An array whose elements are all NULL (identities) or 0
 * (previous) is stored as NULL.  The sync is locked against a concurrent
 * drop (whose trigger forgets its chunks); a dropped sync stores nothing.
 */
void
retl_store_fp_write(int64 sync_id, int64 *chunk, const RetlFpRows *k)
{
	Datum		values[10];
	char		nulls[11] = "          ";
	FpParts		p;

	if (k->n == 0)
		return;
	cut_parts(k, &p);
	values[0] = Int64GetDatum(sync_id);
	values[1] = PointerGetDatum(retl_store_text_array(k->pks, k->n, false));
	values[2] = PointerGetDatum(retl_store_int8_array(k->fps, k->n));
	values[3] = p.any_idents
		? PointerGetDatum(retl_store_text_array(k->idents, k->n, true)) : (Datum) 0;
	values[4] = p.any_prevs
		? PointerGetDatum(retl_store_int8_array(k->prevs, k->n)) : (Datum) 0;
	values[5] = PointerGetDatum(construct_array(p.lo, p.n, INT4OID, 4, true, TYPALIGN_INT));
	values[6] = PointerGetDatum(construct_array(p.hi, p.n, INT4OID, 4, true, TYPALIGN_INT));
	values[7] = chunk ? Int64GetDatum(*chunk) : (Datum) 0;
	values[8] = PointerGetDatum(construct_array(p.idents, p.n, BOOLOID, 1, true, TYPALIGN_CHAR));
	values[9] = PointerGetDatum(construct_array(p.prevs, p.n, BOOLOID, 1, true, TYPALIGN_CHAR));
	if (!p.any_idents)
		nulls[3] = 'n';
	if (!p.any_prevs)
		nulls[4] = 'n';
	if (chunk == NULL)
		nulls[7] = 'n';
	else
		*chunk -= p.n;
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
	retl_store_fp_write(sync_id, NULL, k);
	retl_store_commit(cxt);
}

static RetlStoreStmt drop_stmt = {
	"DELETE FROM retl.fingerprint_chunks WHERE sync_id = $1 AND chunk <= $2",
	2, {INT8OID, INT8OID}
};

/*
 * Deletes a sync's chunks numbered up to upto, in the caller's
 * transaction (a rewrite: a scan opened before reads them still).
 */
void
retl_store_fp_drop(int64 sync_id, int64 upto)
{
	Datum		values[2] = {Int64GetDatum(sync_id), Int64GetDatum(upto)};

	retl_store_exec(&drop_stmt, values, NULL, 0);
}
