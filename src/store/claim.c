/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  Claiming queued runs, and the rows a run is set up from: its sync,
 *	  destination and stored state; then its start, or its failure to
 *	  start.
 *
 * retl_store_claim_runs and retl_store_setup_failed run a transaction of
 * their own; retl_store_run_row and retl_store_run_started run in the
 * transaction that sets the run up (run/setup.c), as the worker.
 *
 *-------------------------------------------------------------------------
 */
#include "store_internal.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

static RetlStoreStmt claim_stmt = {
	"UPDATE retl.runs r SET status = 'running', started_at = clock_timestamp()"
	" WHERE r.id IN (SELECT q.id FROM retl.runs q"
	"  WHERE q.status = 'queued' AND NOT EXISTS (SELECT 1 FROM retl.runs a"
	"   WHERE a.sync_id = q.sync_id AND a.status IN ('running', 'stopping', 'draining'))"
	"   AND q.id = (SELECT min(b.id) FROM retl.runs b"
	"    WHERE b.sync_id = q.sync_id AND b.status = 'queued')"
	"  ORDER BY q.id LIMIT $1 FOR UPDATE SKIP LOCKED)"
	" RETURNING r.id",
	1, {INT4OID}
};

/*
 * Marks the claimable queued runs as running, oldest first, and returns
 * their ids (at most max).  A run is claimable when no other run of its
 * sync is active, so a run requested during a drain waits for the drain to
 * end.  One statement claims them all, so 50 syncs started at once cost
 * one transaction, not 50.
 */
int
retl_store_claim_runs(int64 *ids, int max)
{
	Datum		values[1] = {Int32GetDatum(max)};
	int			n;
	MemoryContext cxt = retl_store_begin();

	retl_store_exec(&claim_stmt, values, NULL, SPI_OK_UPDATE_RETURNING);
	n = retl_store_result_ids(ids);
	retl_store_commit(cxt);
	return n;
}

/*
 * Copies a text column of the current SPI row into the current context.
 */
static char *
get_text(int col)
{
	char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);

	return v;
}

/*
 * Returns a jsonb column of the current SPI row.
 */
static Jsonb *
get_jsonb(int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								  col, &isnull);

	return isnull ? NULL : DatumGetJsonbPCopy(d);
}

/*
 * Returns a boolean column of the current SPI row (NULL is false).
 */
static bool
get_bool(int col)
{
	bool		isnull;

	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, col, &isnull));
}

static RetlStoreStmt run_row_stmt = {
	"SELECT r.sync_id, s.name, r.kind, s.source::oid, s.owner::oid,"
	" s.event_type, s.mapping, s.primary_key, s.options, d.kind, ds.config,"
	" s.cursor_snapshot, r.snapshot, r.checkpoint,"
	" r.retry_failed OR coalesce((s.options->>'retry_failed')::boolean, true),"
	" s.detector = 'diff', s.mode = 'mirror',"
	" EXISTS (SELECT 1 FROM retl.failed_events f WHERE f.sync_id = s.id AND f.retryable),"
	" s.fingerprints = 'values'"
	" FROM retl.runs r JOIN retl.syncs s ON s.id = r.sync_id"
	" JOIN retl.destinations d ON d.id = s.destination_id"
	" LEFT JOIN retl.destination_secrets ds ON ds.destination_id = d.id"
	" WHERE r.id = $1",
	1, {INT8OID}
};

/*
 * Reads the sync and destination of a claimed run, and the state the run
 * has stored, into cxt (the checkpoint is read in place).  Returns false
 * when the sync is gone.
 */
bool
retl_store_run_row(int64 run_id, MemoryContext cxt, RetlRunRow *row)
{
	Datum		values[1] = {Int64GetDatum(run_id)};
	bool		isnull;
	Datum		d;
	MemoryContext old;

	retl_store_exec(&run_row_stmt, values, NULL, SPI_OK_SELECT);
	if (SPI_processed != 1)
		return false;
	old = MemoryContextSwitchTo(cxt);
	row->sync_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	row->sync_name = get_text(2);
	row->full = strcmp(get_text(3), "full") == 0;
	row->relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	row->owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	row->event_type = get_text(6);
	row->mapping = get_jsonb(7);
	row->pk = get_text(8);
	row->options = get_jsonb(9);
	row->kind = get_text(10);
	row->config = get_jsonb(11);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 12, &isnull);
	row->prev_snapshot = isnull ? NULL : DatumGetByteaPCopy(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 13, &isnull);
	row->snapshot = isnull ? NULL : DatumGetByteaPCopy(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 14, &isnull);
	row->checkpoint = isnull ? NULL : DatumGetJsonbP(d);
	row->retry_failed = get_bool(15);
	row->diff = get_bool(16);
	row->mirror = get_bool(17);
	row->has_retryable = get_bool(18);
	row->fp_values = get_bool(19);
	MemoryContextSwitchTo(old);
	return true;
}

static RetlStoreStmt started_stmt = {
	"UPDATE retl.runs SET snapshot = $2,"
	" kind = CASE WHEN $3 IS NULL THEN kind ELSE 'full' END,"
	" full_reason = coalesce($3, full_reason),"
	" rows_estimated = $4"
	" WHERE id = $1",
	4, {INT8OID, BYTEAOID, TEXTOID, INT8OID}
};

/*
 * Records a run's start: its snapshot, why it reads every row (or NULL:
 * it may not), and the rows it will read (-1: unknown).
 */
void
retl_store_run_started(int64 run_id, bytea *snapshot, const char *full_reason,
					   int64 rows_estimated)
{
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(run_id);
	values[1] = PointerGetDatum(snapshot);
	values[2] = full_reason ? CStringGetTextDatum(full_reason) : (Datum) 0;
	nulls[2] = full_reason ? ' ' : 'n';
	values[3] = Int64GetDatum(rows_estimated);
	nulls[3] = rows_estimated < 0 ? 'n' : ' ';
	retl_store_exec(&started_stmt, values, nulls, SPI_OK_UPDATE);
}

static RetlStoreStmt setup_failed_stmt = {
	"UPDATE retl.runs SET status = 'failed', finished_at = clock_timestamp(),"
	" error = $2 WHERE id = $1",
	2, {INT8OID, TEXTOID}
};

/*
 * Marks a run that could not be set up as failed, with the error.
 */
void
retl_store_setup_failed(int64 run_id, const char *error)
{
	Datum		values[2] = {Int64GetDatum(run_id), CStringGetTextDatum(error)};
	MemoryContext cxt = retl_store_begin();

	retl_store_exec(&setup_failed_stmt, values, NULL, SPI_OK_UPDATE);
	retl_store_commit(cxt);
}
