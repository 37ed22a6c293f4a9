/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  The worker's reads and writes of retl's catalog tables: claiming
 *	  queued runs, recovering runs of a dead worker, recording progress,
 *	  failed events and the end of a run.
 *
 * Every function here runs its own short transaction (except where noted)
 * so that no transaction is ever open while HTTP requests are in flight.
 * The SQL is schema-qualified and the worker runs with search_path =
 * pg_catalog, so a hostile search_path changes nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "worker.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "commands/dbcommands.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "catalog/pg_database.h"
#include "storage/lock.h"

/*
 * Starts a transaction with SPI connected and a snapshot set.
 */
static MemoryContext xact_caller_cxt = NULL;

static void
xact_begin(void)
{
	xact_caller_cxt = CurrentMemoryContext;
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "retl: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

/*
 * Ends what xact_begin started, committing.
 */
static void
xact_end(void)
{
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	MemoryContextSwitchTo(xact_caller_cxt);
}

/*
 * Runs one statement with arguments and checks its result code.
 */
static void
exec_args(const char *sql, int nargs, Oid *types, Datum *values,
		  const char *nulls, int expect)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls,
										   false, 0);

	if (rc != expect)
		elog(ERROR, "retl: catalog statement failed (%s): %s",
			 SPI_result_code_string(rc), sql);
}

/*
 * The OID of the extension in this database, or InvalidOid.  A worker whose
 * extension was dropped (or dropped and created again) exits.
 */
Oid
retl_catalog_extension_oid(void)
{
	Oid			oid;
	MemoryContext cxt = CurrentMemoryContext;

	StartTransactionCommand();
	oid = get_extension_oid("retl", true);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return oid;
}

/*
 * Is the extension in this database the version this library serves?
 * After a package upgrade, the catalog of the old version stays until
 * ALTER EXTENSION retl UPDATE: say so instead of failing every run.
 */
bool
retl_catalog_version_ok(void)
{
	bool		ok = false;
	MemoryContext cxt = CurrentMemoryContext;

	xact_begin();
	exec_args("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'retl'",
			  0, NULL, NULL, NULL, SPI_OK_SELECT);
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
	xact_end();
	MemoryContextSwitchTo(cxt);
	return ok;
}

/*
 * The run whose counters are being written, if any: an error raised then
 * is charged to it.
 */
RetlRun    *retl_catalog_writing = NULL;

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
retl_catalog_recover(void)
{
	xact_begin();
	exec_args("UPDATE retl.runs SET "
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
			  " WHERE status IN ('running', 'stopping', 'draining')",
			  0, NULL, NULL, NULL, SPI_OK_UPDATE);
	xact_end();
}

/*
 * Copies a text column of the current SPI row into the run's context.
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
 * Marks the claimable queued runs as running, oldest first, and returns
 * their ids (at most max).  A run is claimable when no other run of its
 * sync is active, so a run requested during a drain waits for the drain to
 * end.  One statement claims them all, so 50 syncs started at once cost
 * one transaction, not 50.
 */
static int
claim_ids(int64 *ids, int max)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(max)};
	int			n;

	xact_begin();
	exec_args("UPDATE retl.runs r SET status = 'running', started_at = clock_timestamp()"
			  " WHERE r.id IN (SELECT q.id FROM retl.runs q"
			  "  WHERE q.status = 'queued' AND NOT EXISTS (SELECT 1 FROM retl.runs a"
			  "   WHERE a.sync_id = q.sync_id AND a.status IN ('running', 'stopping', 'draining'))"
			  "   AND q.id = (SELECT min(b.id) FROM retl.runs b"
			  "    WHERE b.sync_id = q.sync_id AND b.status = 'queued')"
			  "  ORDER BY q.id LIMIT $1 FOR UPDATE SKIP LOCKED)"
			  " RETURNING r.id",
			  1, types, values, NULL, SPI_OK_UPDATE_RETURNING);
	n = (int) SPI_processed;
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	xact_end();
	return n;
}

/*
 * Reads a stored checkpoint: where to resume, and the counters there.
 */
static void
load_checkpoint(RetlRun *run, Jsonb *jb)
{
	retl_jsonb_get_int(jb, "pos", &run->ckpt.pos);
	run->ckpt.key = retl_jsonb_get_text(jb, "key");
	retl_jsonb_get_int(jb, "rows", &run->ckpt.rows);
	retl_jsonb_get_int(jb, "sent", &run->ckpt.sent);
	retl_jsonb_get_int(jb, "succeeded", &run->ckpt.succeeded);
	retl_jsonb_get_int(jb, "failed", &run->ckpt.failed);
	retl_jsonb_get_int(jb, "resent", &run->ckpt.resent);
	run->rows_read = run->ckpt.rows;
	run->events_sent = run->ckpt.sent;
	run->events_succeeded = run->ckpt.succeeded;
	run->events_failed = run->ckpt.failed;
}

/*
 * Loads the sync and destination of a claimed run into the run's memory.
 * Returns false when the sync is gone.
 */
static bool
load_run(RetlRun *run, Jsonb **mapping, Jsonb **options, Jsonb **config,
		 char **pk, char **event_type, char **kind)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(run->id)};
	bool		isnull;
	MemoryContext old;

	exec_args("SELECT r.sync_id, s.name, r.kind, s.source::oid, s.owner::oid,"
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
			  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed != 1)
		return false;
	old = MemoryContextSwitchTo(run->cxt);
	run->sync_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	run->sync_name = get_text(2);
	run->full = strcmp(get_text(3), "full") == 0;
	run->relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	run->owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
	*event_type = get_text(6);
	*mapping = get_jsonb(7);
	*pk = get_text(8);
	*options = get_jsonb(9);
	*kind = get_text(10);
	*config = get_jsonb(11);
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 12, &isnull);

		run->prev_snapshot = isnull ? NULL : DatumGetByteaPCopy(d);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 13, &isnull);
		run->snapshot = isnull ? NULL : DatumGetByteaPCopy(d);
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 14, &isnull);
		if (!isnull)
			load_checkpoint(run, DatumGetJsonbP(d));
		run->retry_failed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 15, &isnull));
		run->diff = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 16, &isnull));
		run->mirror = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 17, &isnull));
		/* a sync without failed events skips the retry phase */
		run->retry_failed &= DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 18, &isnull));
		run->fp_values = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 19, &isnull));
	}
	MemoryContextSwitchTo(old);
	return true;
}

/*
 * Decides whether an incremental run can use its cursor.  Returns the
 * reason it must be full, or NULL.
 */
static const char *
full_reason(RetlRun *run)
{
	if (run->full || run->diff)
		return NULL;
	if (run->map->relkind == RELKIND_VIEW && run->map->xmin_column < 0)
		return "the source is a view without an xmin column: every row is sent";
	if (run->map->relkind == RELKIND_FOREIGN_TABLE)
		return "the source is a foreign table: every row is sent";
	return retl_snapshot_guard(run->prev_snapshot, run->relid);
}

/*
 * Prepares a diff run.  It always reads the whole source (the fingerprints
 * make that cheap), so it does not resume from a checkpoint: the set of
 * keys seen must be complete to detect deletions.
 */
static void
setup_diff(RetlRun *run, Jsonb *options)
{
	JsonbValue *v = options ? getKeyJsonValueFromContainer(&options->root,
														   "on_delete", 9, NULL) : NULL;

	run->ckpt.pos = 0;
	run->ckpt.key = NULL;
	if (v != NULL && v->type == jbvString)
		run->on_delete_skip = v->val.string.len == 4 &&
			strncmp(v->val.string.val, "skip", 4) == 0;
	else if (v != NULL && v->type == jbvBinary)
	{
		Jsonb	   *obj = JsonbValueToJsonb(v);

		run->on_delete_event = retl_jsonb_get_text(obj, "event");
	}
	retl_diff_start(run);
}

/*
 * Sets up a claimed run: compiles its mapping, opens its destination,
 * applies the cursor guards, takes the run's snapshot and records it.
 */
static void
setup_run(RetlRun *run)
{
	Jsonb	   *mapping,
			   *options,
			   *config;
	char	   *pk,
			   *event_type,
			   *kind;
	const char *reason;
	MemoryContext old;
	Oid			types[4] = {INT8OID, BYTEAOID, TEXTOID, INT8OID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	xact_begin();
	if (!load_run(run, &mapping, &options, &config, &pk, &event_type, &kind))
		elog(ERROR, "the sync of this run was dropped");
	if (config == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the destination of sync \"%s\" has no row in retl.destination_secrets",
						run->sync_name),
				 errhint("Drop the destination and create it again with retl_create_destination().")));
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(run->owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the owner of sync \"%s\" (role OID %u) no longer exists",
						run->sync_name, run->owner),
				 errhint("A sync reads as its owner: drop it and create it again as another role.")));
	if (get_rel_relkind(run->relid) == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the source relation of sync \"%s\" no longer exists",
						run->sync_name)));
	old = MemoryContextSwitchTo(run->cxt);
	run->map = retl_mapping_compile(run->relid, strcmp(event_type, "track") == 0,
									mapping, pk, options);
	retl_dest_open(&run->dest, kind, config, strcmp(event_type, "track") == 0);
	run->secrets = retl_secret_values(&run->dest, config);
	if (run->dest.insecure)
		ereport(WARNING,
				(errmsg("retl run " INT64_FORMAT " of sync \"%s\": TLS verification is off (insecure_skip_verify)",
						run->id, run->sync_name)));
	retl_event_ctx_init(&run->ectx, run->sync_id, run->sync_name, run->id);
	reason = full_reason(run);
	if (reason != NULL)
		run->full = true;
	if (run->full || run->diff)
		run->prev_snapshot = NULL;	/* these runs read every row */
	if (run->snapshot == NULL || (reason != NULL &&
								  (run->ckpt.pos != 0 || run->ckpt.key != NULL) &&
								  strcmp(reason, "no cursor yet") != 0))
	{
		/* a fresh start: a resumed run keeps the snapshot it began with */
		memset(&run->ckpt, 0, sizeof(run->ckpt));
		run->rows_read = run->events_sent = 0;
		run->events_succeeded = run->events_failed = 0;
		run->snapshot = retl_snapshot_capture(run->relid);
	}
	if (run->diff)
		setup_diff(run, options);
	retl_reader_start(run);
	MemoryContextSwitchTo(old);
	values[0] = Int64GetDatum(run->id);
	values[1] = PointerGetDatum(run->snapshot);
	values[2] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
	nulls[2] = reason ? ' ' : 'n';
	run->rows_estimated = retl_reader_estimate(run->relid);
	values[3] = Int64GetDatum(run->rows_estimated);
	nulls[3] = run->rows_estimated < 0 ? 'n' : ' ';
	exec_args("UPDATE retl.runs SET snapshot = $2,"
			  " kind = CASE WHEN $3 IS NULL THEN kind ELSE 'full' END,"
			  " full_reason = coalesce($3, full_reason),"
			  " rows_estimated = $4"
			  " WHERE id = $1",
			  4, types, values, nulls, SPI_OK_UPDATE);
	xact_end();
}

/*
 * Marks a run that could not be set up as failed, with the error.
 */
static void
fail_setup(int64 id, const char *error)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {Int64GetDatum(id), CStringGetTextDatum(error)};

	xact_begin();
	exec_args("UPDATE retl.runs SET status = 'failed', finished_at = clock_timestamp(),"
			  " error = $2 WHERE id = $1",
			  2, types, values, NULL, SPI_OK_UPDATE);
	xact_end();
}

/*
 * Claims the next queued run and sets it up.  Returns NULL when there is
 * nothing to claim; a run that cannot be set up is marked failed.
 */
RetlRun *
retl_catalog_claim(void)
{
	static int64 claimed[64];
	static int	nclaimed = 0;
	static int	next = 0;

	for (;;)
	{
		int64		id;
		MemoryContext cxt;
		RetlRun    *run;
		MemoryContext caller = CurrentMemoryContext;
		bool		ok = false;

		if (next == nclaimed)
		{
			nclaimed = claim_ids(claimed, lengthof(claimed));
			next = 0;
			if (nclaimed == 0)
				return NULL;
		}
		id = claimed[next++];
		cxt = AllocSetContextCreate(TopMemoryContext, "retl run",
									ALLOCSET_DEFAULT_SIZES);
		run = MemoryContextAllocZero(cxt, sizeof(RetlRun));
		run->cxt = cxt;
		run->id = id;
		run->row_cxt = AllocSetContextCreate(cxt, "retl row",
											 ALLOCSET_DEFAULT_SIZES);
		dlist_init(&run->ready);
		dlist_init(&run->waiting);
		dlist_init(&run->inflight);
		PG_TRY();
		{
			setup_run(run);
			ok = true;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(caller);
			edata = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			MemoryContextDelete(cxt);
			ereport(LOG,
					(errmsg("retl run " INT64_FORMAT " failed to start: %s",
							id, edata->message)));
			fail_setup(id, edata->message);
		}
		PG_END_TRY();
		if (ok)
			return run;
	}
}

/*
 * Notices runs that retl_stop() asked to stop, and moves them from
 * 'stopping' to 'draining'.  One statement for all active runs.
 */
void
retl_catalog_poll_stops(dlist_head *runs)
{
	dlist_iter	iter;
	StringInfoData ids;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	initStringInfo(&ids);
	dlist_foreach(iter, runs)
	{
		RetlRun    *run = dlist_container(RetlRun, node, iter.cur);

		if (!run->stopping)
			appendStringInfo(&ids, "%s" INT64_FORMAT, ids.len ? "," : "{", run->id);
	}
	if (ids.len == 0)
		return;
	appendStringInfoChar(&ids, '}');
	values[0] = CStringGetTextDatum(ids.data);
	xact_begin();
	exec_args("UPDATE retl.runs SET status = 'draining'"
			  " WHERE id = ANY ($1::bigint[]) AND status = 'stopping' RETURNING id",
			  1, types, values, NULL, SPI_OK_UPDATE_RETURNING);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, 1, &isnull));

		dlist_foreach(iter, runs)
		{
			RetlRun    *run = dlist_container(RetlRun, node, iter.cur);

			if (run->id != id)
				continue;
			run->stopping = true;
			run->drain_deadline = GetCurrentTimestamp() +
				(int64) retl_drain_timeout_ms * 1000;
		}
	}
	xact_end();
}

/*
 * The checkpoint of a run as JSON: the position (a leaf and block, or the
 * last key read) and the counters there.
 */
static char *
checkpoint_json(RetlRun *run)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"pos\": " INT64_FORMAT ", \"rows\": " INT64_FORMAT
					 ", \"sent\": " INT64_FORMAT ", \"succeeded\": " INT64_FORMAT
					 ", \"failed\": " INT64_FORMAT ", \"resent\": " INT64_FORMAT
					 ", \"dispatched\": " INT64_FORMAT,
					 run->ckpt.pos, run->ckpt.rows, run->ckpt.sent,
					 run->ckpt.succeeded, run->ckpt.failed, run->ckpt.resent,
					 run->events_sent);
	if (run->ckpt.key != NULL)
	{
		appendStringInfoString(&buf, ", \"key\": ");
		retl_json_escape(&buf, run->ckpt.key, strlen(run->ckpt.key));
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * Writes a run's counters, checkpoint and read method.
 */
static void
write_counters(RetlRun *run)
{
	Oid			types[9] = {INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, TEXTOID, INT8OID,
	INT8OID, TEXTOID};
	Datum		values[9] = {
		Int64GetDatum(run->id), Int64GetDatum(run->rows_read),
		Int64GetDatum(run->events_sent), Int64GetDatum(run->events_succeeded),
		Int64GetDatum(run->events_failed),
		CStringGetTextDatum(checkpoint_json(run)),
		Int64GetDatum(run->rows_deleted), Int64GetDatum(run->rows_estimated),
		run->method_chosen
		? CStringGetTextDatum(retl_read_method_name(run->read_method)) : (Datum) 0
	};
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ',
		run->rows_estimated < 0 ? 'n' : ' ',
	run->method_chosen ? ' ' : 'n'};

	retl_catalog_writing = run;
	exec_args("UPDATE retl.runs SET rows_read = $2, events_sent = $3,"
			  " events_succeeded = $4, events_failed = $5, checkpoint = $6::jsonb,"
			  " rows_deleted = $7, rows_estimated = $8,"
			  " read_method = coalesce($9, read_method) WHERE id = $1",
			  9, types, values, nulls, SPI_OK_UPDATE);
	retl_catalog_writing = NULL;
	run->ckpt_written_seq = run->ckpt.seq;
	run->acked_since_write = 0;
	run->window_full = false;	/* dispatch looks again at once */
	run->ckpt_dirty = false;
	run->dirty = false;
	run->last_flush = GetCurrentTimestamp();
}

/*
 * Records the progress of every run whose counters changed more than
 * interval_ms ago, or whose checkpoint advanced and either
 * ckpt_interval_ms passed since the last write, max_in_flight batches
 * were done since then, or a batch waits for it (retl_ckpt_may_send), in
 * one short transaction: a worker with many runs must not spend its time
 * committing counters, but a checkpoint that lags lets a crash re-send
 * acknowledged batches (src/README, "Checkpoints").
 */
void
retl_catalog_flush_due(dlist_head *runs, int interval_ms, int ckpt_interval_ms)
{
	dlist_iter	iter;
	bool		started = false;
	TimestampTz now = GetCurrentTimestamp();

	dlist_foreach(iter, runs)
	{
		RetlRun    *run = dlist_container(RetlRun, node, iter.cur);

		if (!((run->dirty &&
			   TimestampDifferenceExceeds(run->last_flush, now, interval_ms)) ||
			  (run->ckpt_dirty &&
			   (run->acked_since_write >= run->dest.max_in_flight ||
				run->window_full ||
				TimestampDifferenceExceeds(run->last_flush, now, ckpt_interval_ms)))))
			continue;
		if (!started)
			xact_begin();
		started = true;
		write_counters(run);
	}
	if (started)
		xact_end();
}

/*
 * Records the end of a run: its status, counters and error; on success,
 * advances the sync's cursor to the run's snapshot.  Notifies channel
 * retl_runs.
 */
void
retl_catalog_finish(RetlRun *run)
{
	const char *status = run->stopping ? "stopped" :
		run->failed ? "failed" : "succeeded";
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, BYTEAOID};
	Datum		values[4] = {
		Int64GetDatum(run->id), CStringGetTextDatum(status),
		run->error ? PointerGetDatum(retl_scrub(run->secrets, run->error, -1)) : (Datum) 0,
		PointerGetDatum(run->snapshot)
	};
	char		nulls[4] = {' ', ' ', run->error ? ' ' : 'n', ' '};

	xact_begin();

	/*
	 * The sync's row first, then the run's, in the order of the API
	 * (retl._sync(name, true), retl._enqueue_run): the second UPDATE of the
	 * run below rechecks its foreign key, which locks the sync's row, and
	 * taking the run's row before it deadlocked with retl_drop_sync.
	 */
	exec_args("SELECT 1 FROM retl.syncs s JOIN retl.runs r ON r.sync_id = s.id"
			  " WHERE r.id = $1 FOR KEY SHARE OF s",
			  4, types, values, nulls, SPI_OK_SELECT);
	write_counters(run);
	exec_args("UPDATE retl.runs SET status = $2, error = $3,"
			  " finished_at = clock_timestamp() WHERE id = $1",
			  4, types, values, nulls, SPI_OK_UPDATE);
	if (strcmp(status, "succeeded") == 0)
		exec_args("UPDATE retl.syncs s SET cursor_snapshot = $4, cursor_run_id = r.id,"
				  " needs_full = s.needs_full AND r.kind <> 'full',"
				  " full_reason = CASE WHEN r.kind = 'full' THEN NULL ELSE s.full_reason END"
				  " FROM retl.runs r WHERE r.id = $1 AND s.id = r.sync_id",
				  4, types, values, nulls, SPI_OK_UPDATE);
	/* names over the limit exist from before 0.4: cut, they always fit */
	exec_args("SELECT pg_catalog.pg_notify('retl_runs', pg_catalog.json_build_object("
			  "'run', $1, 'sync', pg_catalog.left(r.sync_name, 255), 'status', $2)::text)"
			  " FROM retl.runs r WHERE r.id = $1",
			  4, types, values, nulls, SPI_OK_SELECT);
	xact_end();
}

/*
 * Ends a run whose regular end (retl_catalog_finish) raised an error: the
 * run is failed with that error, whatever it was doing, so that it is
 * never left active.  The counters keep their last written values.
 */
void
retl_catalog_finish_failed(RetlRun *run, const char *error)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {
		Int64GetDatum(run->id),
		PointerGetDatum(retl_scrub(run->secrets,
								   psprintf("recording the end of the run failed: %s", error),
								   -1))
	};

	xact_begin();
	exec_args("UPDATE retl.runs SET status = 'failed', error = $2,"
			  " finished_at = clock_timestamp()"
			  " WHERE id = $1 AND status IN ('running', 'stopping', 'draining')",
			  2, types, values, NULL, SPI_OK_UPDATE);
	xact_end();
}

/*
 * Records one failed event: a retried one updates its row, a new one is
 * inserted, or merged with the same event (sync, messageId) recorded
 * before, so that re-sends do not pile up duplicates.  Must run inside a
 * transaction with SPI connected.
 */
static void
record_failed(RetlRun *run, int64 failed_id, const char *pk,
			  const char *message_id, const char *payload, int len,
			  int http_status, const char *response, const char *error,
			  int attempts, bool retryable)
{
	Oid			types[11] = {INT8OID, INT8OID, TEXTOID, TEXTOID, INT4OID,
	TEXTOID, TEXTOID, INT4OID, INT8OID, BOOLOID, TEXTOID};
	Datum		values[11];
	char		nulls[11] = {' ', ' ', pk ? ' ' : 'n', ' ',
		http_status ? ' ' : 'n', response ? ' ' : 'n', ' ', ' ', ' ', ' ',
	message_id && message_id[0] ? ' ' : 'n'};

	values[0] = Int64GetDatum(run->sync_id);
	values[1] = Int64GetDatum(run->id);
	values[2] = pk ? CStringGetTextDatum(pk) : (Datum) 0;
	/* a vendor may echo a credential back: none reaches the table */
	values[3] = PointerGetDatum(retl_scrub(run->secrets, payload, len));
	values[4] = Int32GetDatum(http_status);
	values[5] = response ? PointerGetDatum(retl_scrub(run->secrets, response, -1)) : (Datum) 0;
	values[6] = PointerGetDatum(retl_scrub(run->secrets, error, -1));
	values[7] = Int32GetDatum(attempts);
	values[8] = Int64GetDatum(failed_id);
	values[9] = BoolGetDatum(retryable);
	values[10] = message_id && message_id[0] ? CStringGetTextDatum(message_id) : (Datum) 0;
	if (failed_id != 0)
		exec_args("UPDATE retl.failed_events SET run_id = $2, payload = $4,"
				  " message_id = coalesce($11, message_id),"
				  " http_status = $5, response_body = left($6, 4096), error = $7,"
				  " attempts = attempts + $8, last_failed_at = now()"
				  " WHERE id = $9",
				  11, types, values, nulls, SPI_OK_UPDATE);
	else
		exec_args("INSERT INTO retl.failed_events AS f (sync_id, run_id, primary_key,"
				  " message_id, payload, http_status, response_body, error, attempts, retryable)"
				  " SELECT (SELECT s.id FROM retl.syncs s WHERE s.id = $1), $2, $3,"
				  " $11, $4, $5, left($6, 4096), $7, $8, $10"
				  " ON CONFLICT (sync_id, message_id) DO UPDATE SET run_id = EXCLUDED.run_id,"
				  " http_status = EXCLUDED.http_status, response_body = EXCLUDED.response_body,"
				  " error = EXCLUDED.error, attempts = f.attempts + EXCLUDED.attempts,"
				  " retryable = EXCLUDED.retryable, last_failed_at = now()",
				  11, types, values, nulls, SPI_OK_INSERT);
}

/*
 * Records an event that is never sent (e.g. over the size limit).  Runs in
 * the reader's page transaction, usually inside the owner's scope, which
 * is suspended meanwhile: the owner may not write retl.failed_events, the
 * worker does.  It counts as sent and failed, so that
 * events_succeeded + events_failed = events_sent.
 */
void
retl_catalog_fail_event(RetlRun *run, const char *pk, const char *payload,
						int len, const char *error)
{
	/* rejected before sending (invalid key, oversize): retrying cannot help */
	retl_owner_suspend(run);
	record_failed(run, 0, pk, run->message_id, payload, len, 0, NULL, error, 0,
				  false);
	retl_owner_resume(run);
	run->events_sent++;
	run->events_failed++;
	run->dirty = true;
}

/*
 * Records the events of a batch that failed for good (all of them, or
 * those whose outcome is RETL_OUTCOME_FAIL), each with its own reason when
 * the destination gave one, in a short transaction of its own.
 */
void
retl_catalog_fail_batch(RetlBatch *b, const char *error,
						const RetlOutcome *outcomes, char **reasons)
{
	xact_begin();
	for (int i = 0; i < b->nevents; i++)
	{
		if (outcomes != NULL && outcomes[i] != RETL_OUTCOME_FAIL)
			continue;
		record_failed(b->run, b->ev_failed_id[i], b->ev_pk[i], b->ev_msgid[i],
					  b->body.data + b->ev_start[i], b->ev_len[i],
					  (int) b->http_status, b->resp,
					  reasons && reasons[i] ? reasons[i] : error, b->attempts,
					  true);
	}
	xact_end();
}

/*
 * Removes the failed events that a delivered batch re-sent successfully.
 */
void
retl_catalog_batch_delivered(RetlBatch *b)
{
	StringInfoData ids;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];

	initStringInfo(&ids);
	for (int i = 0; i < b->nevents; i++)
		if (b->ev_failed_id[i] != 0)
			appendStringInfo(&ids, "%s" INT64_FORMAT, ids.len ? "," : "{",
							 b->ev_failed_id[i]);
	if (ids.len == 0)
		return;
	appendStringInfoChar(&ids, '}');
	values[0] = CStringGetTextDatum(ids.data);
	xact_begin();
	exec_args("DELETE FROM retl.failed_events WHERE id = ANY ($1::bigint[])",
			  1, types, values, NULL, SPI_OK_DELETE);
	xact_end();
}

/*
 * Is somebody dropping (or renaming, or moving) this database?  DROP
 * DATABASE holds an AccessExclusiveLock on the database object while it
 * waits for the other connections to go away; PostgreSQL 15 does not
 * signal background workers, so the worker asks for a conflicting lock,
 * without waiting, and leaves when it cannot have it.
 */
bool
retl_catalog_database_locked(void)
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

/*
 * Deletes finished runs older than retl.history_retention, a thousand at a
 * time, so that history does not grow without limit (pg_cron #416, #408).
 */
void
retl_catalog_prune_history(void)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(retl_history_retention)};

	xact_begin();
	exec_args("DELETE FROM retl.runs WHERE id IN (SELECT id FROM retl.runs"
			  " WHERE status IN ('succeeded', 'failed', 'stopped')"
			  " AND finished_at < pg_catalog.now() - $1::interval"
			  " AND id NOT IN (SELECT s.cursor_run_id FROM retl.syncs s"
			  "   WHERE s.cursor_run_id IS NOT NULL)"
			  " ORDER BY id LIMIT 1000)",
			  1, types, values, NULL, SPI_OK_DELETE);
	xact_end();
}
