/*-------------------------------------------------------------------------
 *
 * fingerprints.c
 *	  retl.fingerprints, for the content diff (read/diff.c): the load of a
 *	  sync's fingerprints, the writes of acknowledged ones, the deletes,
 *	  and the pages of the deletions walk.
 *
 * Statements run as the worker, in the reader's page transaction (the
 * walk, the deletes of gone keys), in the transaction that sets a run up
 * (the load) or in a short transaction of their own (acknowledged
 * batches).  Statements that scan fingerprints are planned per call
 * (CURSOR_OPT_CUSTOM_PLAN), keeping only their parse: a generic plan made
 * while a sync had few fingerprints (the first pages of its first run)
 * would be kept for the worker's life and scan them all once there are
 * millions (test/bench/README.md).
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

static RetlStoreStmt scan_stmt = {
	"SELECT pk, fingerprint, previous FROM retl.fingerprints"
	" WHERE sync_id = $1",
	1, {INT8OID}, CURSOR_OPT_CUSTOM_PLAN, true
};

/*
 * Hands every fingerprint of a sync to fn, through a cursor of its own
 * that lives only while this function runs (no owner's code runs
 * meanwhile).  Runs in the caller's transaction.
 */
void
retl_store_fp_scan(int64 sync_id, RetlStoredFn fn, void *arg)
{
	Datum		values[1] = {Int64GetDatum(sync_id)};
	Portal		portal = SPI_cursor_open(NULL, retl_store_prepare(&scan_stmt),
										 values, NULL, true);

	for (;;)
	{
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			text	   *pk = DatumGetTextPP(SPI_getbinval(SPI_tuptable->vals[i],
														  SPI_tuptable->tupdesc, 1, &isnull));

			fn(arg, VARDATA_ANY(pk), VARSIZE_ANY_EXHDR(pk),
			   DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
										   SPI_tuptable->tupdesc, 2, &isnull)),
			   DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
										   SPI_tuptable->tupdesc, 3, &isnull)));
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
}

static RetlStoreStmt first_page_stmt = {
	"SELECT pk, fingerprint, identity FROM retl.fingerprints"
	" WHERE sync_id = $1 ORDER BY pk"
	" LIMIT " CppAsString2(RETL_STORE_FP_PAGE),
	1, {INT8OID}, CURSOR_OPT_CUSTOM_PLAN, true
};
static RetlStoreStmt next_page_stmt = {
	"SELECT pk, fingerprint, identity FROM retl.fingerprints"
	" WHERE sync_id = $1 AND pk > $2 ORDER BY pk"
	" LIMIT " CppAsString2(RETL_STORE_FP_PAGE),
	2, {INT8OID, TEXTOID}, CURSOR_OPT_CUSTOM_PLAN, true
};

/*
 * Reads the next page of a sync's stored keys, in key order, after the
 * key after (NULL: from the first), at most RETL_STORE_FP_PAGE, in the
 * caller's (page) transaction and memory.  Returns how many.  The page
 * must be read along the primary key's index: a generic plan that sorts
 * the keys after the last one (its estimate of a sync's keys is blind)
 * would make the walk quadratic, so sorts and bitmap scans are off while
 * it plans.
 */
int
retl_store_fp_page(int64 sync_id, const char *after, RetlStoredRow **rows)
{
	Datum		values[2] = {Int64GetDatum(sync_id), 0};
	int			level = NewGUCNestLevel();
	SPITupleTable *tt;
	int			n;

	(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);

	if (after == NULL)
		retl_store_exec(&first_page_stmt, values, NULL, SPI_OK_SELECT);
	else
	{
		values[1] = CStringGetTextDatum(after);
		retl_store_exec(&next_page_stmt, values, NULL, SPI_OK_SELECT);
	}
	AtEOXact_GUC(false, level);
	tt = SPI_tuptable;
	n = (int) SPI_processed;
	*rows = palloc(Max(n, 1) * sizeof(RetlStoredRow));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		(*rows)[i].pk = SPI_getvalue(tt->vals[i], tt->tupdesc, 1);
		(*rows)[i].fp = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		(*rows)[i].identity = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);
	}
	SPI_freetuptable(tt);
	return n;
}

static RetlStoreStmt forget_stmt = {
	"DELETE FROM retl.fingerprints"
	" WHERE sync_id = $1 AND pk = ANY ($2)",
	2, {INT8OID, TEXTARRAYOID}, CURSOR_OPT_CUSTOM_PLAN
};

/*
 * Forgets the fingerprints of n keys, in one statement, in the caller's
 * transaction.
 */
void
retl_store_fp_forget(int64 sync_id, char **pks, int n)
{
	Datum		values[2];

	if (n == 0)
		return;
	values[0] = Int64GetDatum(sync_id);
	values[1] = PointerGetDatum(retl_store_text_array(pks, n, false));
	retl_store_exec(&forget_stmt, values, NULL, 0);
}

/*
 * The statement's arguments for a set of keys: the sync, then the keys,
 * fingerprints, identities and previous fingerprints as arrays.
 */
static void
acked_args(int64 sync_id, const RetlFpRows *k, Datum *values)
{
	values[0] = Int64GetDatum(sync_id);
	values[1] = PointerGetDatum(retl_store_text_array(k->pks, k->n, false));
	values[2] = PointerGetDatum(retl_store_int8_array(k->fps, k->n));
	values[3] = PointerGetDatum(retl_store_text_array(k->idents, k->n, true));
	values[4] = PointerGetDatum(retl_store_int8_array(k->prevs, k->n));
}

static RetlStoreStmt upsert_stmt = {
	"WITH s AS (SELECT id FROM retl.syncs WHERE id = $1 FOR KEY SHARE)"
	" INSERT INTO retl.fingerprints AS f"
	"  (sync_id, pk, fingerprint, identity, previous)"
	" SELECT DISTINCT ON (u.pk) s.id, u.pk, u.fp, u.ident, u.prev"
	" FROM s, ROWS FROM (pg_catalog.unnest($2),"
	"  pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5))"
	"  WITH ORDINALITY AS u (pk, fp, ident, prev, ord)"
	" ORDER BY u.pk, u.ord DESC"
	" ON CONFLICT (sync_id, pk) DO UPDATE SET"
	" fingerprint = EXCLUDED.fingerprint, identity = EXCLUDED.identity,"
	" previous = EXCLUDED.previous"
	" WHERE (f.fingerprint, f.identity, f.previous) IS DISTINCT FROM"
	" (EXCLUDED.fingerprint, EXCLUDED.identity, EXCLUDED.previous)",
	5, {INT8OID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID, INT8ARRAYOID},
	CURSOR_OPT_CUSTOM_PLAN
};

/*
 * Stores fingerprints of keys that may be stored already: an upsert that
 * keeps the last of a key sent twice and leaves rows that did not change.
 * The sync is locked against a concurrent drop (whose trigger forgets its
 * fingerprints) once, not per row.
 */
static void
upsert_keys(int64 sync_id, const RetlFpRows *k)
{
	Datum		values[5];

	acked_args(sync_id, k, values);
	retl_store_exec(&upsert_stmt, values, NULL, 0);
}

/* scans no fingerprints: its saved plan can be generic */
static RetlStoreStmt insert_stmt = {
	"WITH s AS (SELECT id FROM retl.syncs WHERE id = $1 FOR KEY SHARE)"
	" INSERT INTO retl.fingerprints (sync_id, pk, fingerprint, identity, previous)"
	" SELECT s.id, u.pk, u.fp, u.ident, u.prev"
	" FROM s, ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3),"
	"  pg_catalog.unnest($4), pg_catalog.unnest($5)) AS u (pk, fp, ident, prev)",
	5, {INT8OID, TEXTARRAYOID, INT8ARRAYOID, TEXTARRAYOID, INT8ARRAYOID}
};

/*
 * Stores the fingerprints of keys that had none when the run began, with
 * a plain INSERT: a first run writes every key this way, and the upsert's
 * conflict check and speculative insertion cost as much as the insert
 * itself.  The statement scans no fingerprints, so its saved plan can be
 * generic.  A key stored meanwhile (sent twice in one run) makes it fail
 * with a unique violation: it is then rolled back, as a subtransaction,
 * and the keys go through the upsert.
 */
static void
insert_fresh_keys(int64 sync_id, const RetlFpRows *k)
{
	Datum		values[5];
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	SPIPlanPtr	plan = retl_store_prepare(&insert_stmt);

	acked_args(sync_id, k, values);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		if (SPI_execute_plan(plan, values, NULL, false, 0) < 0)
			elog(ERROR, "retl: writing fingerprints failed");
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		upsert_keys(sync_id, k);
	}
	PG_END_TRY();
}

/*
 * Stores the fingerprints of acknowledged events, and forgets the keys
 * whose deletion was acknowledged, in one short transaction: fresh keys
 * (none stored when the run began) are inserted, known ones upserted.
 */
void
retl_store_fp_acked(int64 sync_id, const RetlFpRows *fresh,
					const RetlFpRows *known, char **dels, int ndel)
{
	MemoryContext cxt = CurrentMemoryContext;

	StartTransactionCommand();

	/*
	 * A fingerprint lost in a crash only makes the next run send its event
	 * again, with the same messageId: no need to wait for the WAL flush.
	 */
	(void) set_config_option("synchronous_commit", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_LOCAL, true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "retl: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (fresh->n > 0)
		insert_fresh_keys(sync_id, fresh);
	if (known->n > 0)
		upsert_keys(sync_id, known);
	retl_store_fp_forget(sync_id, dels, ndel);
	retl_store_commit(cxt);
}
