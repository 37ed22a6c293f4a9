/*-------------------------------------------------------------------------
 *
 * store.c
 *	  The store's transactions and saved statements, and the worker's
 *	  checks of its extension and database: version, recovery of a dead
 *	  worker's runs, history pruning.
 *
 * Every function of the store runs its own short transaction (except
 * where noted) so that no transaction is ever open while HTTP requests
 * are in flight.  The SQL is schema-qualified and the worker runs with
 * search_path = pg_catalog, so a hostile search_path changes nothing.
 * Statements run as the worker, in the memory of the caller's SPI
 * procedure; each is prepared once per worker (store_internal.h).
 *
 *-------------------------------------------------------------------------
 */
#include "store_internal.h"

#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/*
 * Starts a transaction with SPI connected and a snapshot set.  Returns
 * the caller's memory context, which retl_store_commit gives back.
 */
MemoryContext
retl_store_begin(void)
{
	MemoryContext caller = CurrentMemoryContext;

	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "retl: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	return caller;
}

/*
 * Ends what retl_store_begin started, committing, back in the caller's
 * memory context.
 */
void
retl_store_commit(MemoryContext caller)
{
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
}

/*
 * The saved plan of a statement, prepared and kept at its first use.
 */
SPIPlanPtr
retl_store_prepare(RetlStoreStmt *stmt)
{
	if (stmt->plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare_cursor(stmt->sql, stmt->nargs, stmt->types,
										   stmt->cursor_options);

		if (p == NULL || SPI_keepplan(p) != 0)
			elog(ERROR, "retl: preparing a catalog statement failed (%s): %s",
				 SPI_result_code_string(SPI_result), stmt->sql);
		stmt->plan = p;
	}
	return stmt->plan;
}

/*
 * Runs a statement with arguments and checks its result code: expect, or
 * any success when expect is 0.
 */
void
retl_store_exec(RetlStoreStmt *stmt, Datum *values, const char *nulls,
				int expect)
{
	int			rc = SPI_execute_plan(retl_store_prepare(stmt), values, nulls,
									  stmt->read_only, 0);

	if (expect != 0 ? rc != expect : rc < 0)
		elog(ERROR, "retl: catalog statement failed (%s): %s",
			 SPI_result_code_string(rc), stmt->sql);
}

/*
 * Runs a statement whose one argument is an id (a run's, a failed
 * event's).
 */
void
retl_store_exec_id(RetlStoreStmt *stmt, int64 id, int expect)
{
	Datum		values[1] = {Int64GetDatum(id)};

	retl_store_exec(stmt, values, NULL, expect);
}

/*
 * Copies the ids that the last statement returned (its first column,
 * bigint) into ids, and returns how many.
 */
int
retl_store_result_ids(int64 *ids)
{
	int			n = (int) SPI_processed;

	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	return n;
}

/*
 * A text[] of the non-NULL strings among n, with NULL elements where
 * allow_nulls and a string is NULL.
 */
ArrayType *
retl_store_text_array(char **strs, int n, bool allow_nulls)
{
	Datum	   *elems = palloc(Max(n, 1) * sizeof(Datum));
	bool	   *nulls = palloc(Max(n, 1) * sizeof(bool));
	int			m = 0;
	int			dims[1];
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
	{
		if (strs[i] == NULL && !allow_nulls)
			continue;
		nulls[m] = strs[i] == NULL;
		elems[m++] = strs[i] ? CStringGetTextDatum(strs[i]) : (Datum) 0;
	}
	dims[0] = m;
	return construct_md_array(elems, nulls, 1, dims, lbs, TEXTOID, -1, false,
							  TYPALIGN_INT);
}

/*
 * A bigint[] of n values.
 */
ArrayType *
retl_store_int8_array(const int64 *vals, int n)
{
	Datum	   *elems = palloc(Max(n, 1) * sizeof(Datum));

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(vals[i]);
	return construct_array(elems, n, INT8OID, 8, FLOAT8PASSBYVAL,
						   TYPALIGN_DOUBLE);
}

/*
 * The OID of the extension in this database, or InvalidOid.  A worker whose
 * extension was dropped (or dropped and created again) exits.
 */
Oid
retl_store_extension_oid(void)
{
	Oid			oid;
	MemoryContext cxt = CurrentMemoryContext;

	StartTransactionCommand();
	oid = get_extension_oid("retl", true);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return oid;
}

static RetlStoreStmt version_stmt = {
	"SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'retl'"
};

/*
 * Is the extension in this database the version this library serves?
 * After a package upgrade, the catalog of the old version stays until
 * ALTER EXTENSION retl UPDATE: say so instead of failing every run.
 */
bool
retl_store_version_ok(void)
{
	bool		ok = false;
	MemoryContext cxt = retl_store_begin();

	retl_store_exec(&version_stmt, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed == 1)
	{
		char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		ok = strcmp(v, RETL_VERSION) == 0;
		if (!ok)
			ereport(WARNING,
					(errmsg("retl worker idle: extension retl is version %s in database \"%s\", the library is version %s",
							v, get_database_name(MyDatabaseId), RETL_VERSION),
					 errhint("Run ALTER EXTENSION retl UPDATE in that database; queued runs start then.")));
	}
	retl_store_commit(cxt);
	return ok;
}

static RetlStoreStmt recover_stmt = {
	"UPDATE retl.runs SET "
	" status = CASE WHEN status = 'running' THEN 'queued' ELSE 'stopped' END,"
	" finished_at = CASE WHEN status = 'running' THEN NULL ELSE clock_timestamp() END,"
	" started_at = CASE WHEN status = 'running' THEN NULL ELSE started_at END,"
	" rows_read = coalesce((checkpoint->>'rows')::bigint, 0),"
	" events_sent = coalesce((checkpoint->>'dispatched')::bigint,"
	"  (checkpoint->>'sent')::bigint, 0),"
	" checkpoint = CASE WHEN checkpoint ? 'dispatched' THEN checkpoint"
	"  || pg_catalog.jsonb_build_object('resent',"
	"   coalesce((checkpoint->>'resent')::bigint, 0)"
	"   + (checkpoint->>'dispatched')::bigint - (checkpoint->>'sent')::bigint,"
	"   'sent', (checkpoint->>'dispatched')::bigint)"
	"  ELSE checkpoint END,"
	" events_succeeded = coalesce((checkpoint->>'succeeded')::bigint, 0),"
	" events_failed = coalesce((checkpoint->>'failed')::bigint, 0),"
	" error = CASE WHEN status = 'running' THEN NULL"
	"  ELSE 'the worker restarted while the run was stopping' END"
	" WHERE status IN ('running', 'stopping', 'draining')"
};

/*
 * Requeues the runs a dead worker left running, and ends those it was
 * stopping.  Nothing is dropped: a requeued run resumes from its
 * checkpoint, with the counters it had there, and re-sends what was not
 * acknowledged.  Those events were counted as sent before the crash
 * ("dispatched" at the last write) and are counted again when re-sent, so
 * events_sent counts what the destination received; their first outcome
 * is lost, and the checkpoint's "resent" counts them, so that
 * events_succeeded + events_failed + resent = events_sent.
 */
void
retl_store_recover(void)
{
	MemoryContext cxt = retl_store_begin();

	retl_store_exec(&recover_stmt, NULL, NULL, SPI_OK_UPDATE);
	retl_store_commit(cxt);
}

/*
 * Is somebody dropping (or renaming, or moving) this database?  DROP
 * DATABASE holds an AccessExclusiveLock on the database object while it
 * waits for the other connections to go away; PostgreSQL 15 does not
 * signal background workers, so the worker asks for a conflicting lock,
 * without waiting, and leaves when it cannot have it.
 */
bool
retl_store_database_locked(void)
{
	LOCKTAG		tag;
	LockAcquireResult r;
	MemoryContext cxt = CurrentMemoryContext;

	StartTransactionCommand();
	SET_LOCKTAG_OBJECT(tag, InvalidOid, DatabaseRelationId, MyDatabaseId, 0);
	r = LockAcquire(&tag, RowExclusiveLock, false, true);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return r == LOCKACQUIRE_NOT_AVAIL;
}

static RetlStoreStmt prune_stmt = {
	"DELETE FROM retl.runs WHERE id IN (SELECT id FROM retl.runs"
	" WHERE status IN ('succeeded', 'failed', 'stopped')"
	" AND finished_at < pg_catalog.now() - $1::interval"
	" AND id NOT IN (SELECT s.cursor_run_id FROM retl.syncs s"
	"   WHERE s.cursor_run_id IS NOT NULL)"
	" ORDER BY id LIMIT 1000)",
	1, {TEXTOID}
};

/*
 * Deletes finished runs older than retl.history_retention, a thousand at a
 * time, so that history does not grow without limit (pg_cron #416, #408).
 */
void
retl_store_prune_history(void)
{
	Datum		values[1] = {CStringGetTextDatum(retl_history_retention)};
	MemoryContext cxt = retl_store_begin();

	retl_store_exec(&prune_stmt, values, NULL, SPI_OK_DELETE);
	retl_store_commit(cxt);
}
