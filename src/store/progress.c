/*-------------------------------------------------------------------------
 *
 * progress.c
 *	  What retl.runs records of an active run: the stops retl_stop()
 *	  asked for, the counters and checkpoint, and the end of the run.
 *
 * Each function here that takes a run runs one short transaction; the
 * statements it calls take plain values, and run inside it
 * (retl_store_draining runs its own).
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "store_internal.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

/*
 * The run whose counters are being written, if any: an error raised then
 * is charged to it.
 */
RetlRun    *retl_store_writing = NULL;

static RetlStoreStmt draining_stmt = {
	"UPDATE retl.runs SET status = 'draining'"
	" WHERE id = ANY ($1) AND status = 'stopping' RETURNING id",
	1, {INT8ARRAYOID}
};

/*
 * Moves the runs among ids that retl_stop() asked to stop from 'stopping'
 * to 'draining', in one statement, and returns their ids in draining.
 */
int
retl_store_draining(const int64 *ids, int n, int64 *draining)
{
	Datum		values[1] = {PointerGetDatum(retl_store_int8_array(ids, n))};
	MemoryContext cxt = retl_store_begin();
	int			ndraining;

	retl_store_exec(&draining_stmt, values, NULL, SPI_OK_UPDATE_RETURNING);
	ndraining = retl_store_result_ids(draining);
	retl_store_commit(cxt);
	return ndraining;
}

/*
 * Notices runs that retl_stop() asked to stop, and moves them from
 * 'stopping' to 'draining'.  One statement for all active runs.
 */
void
retl_store_poll_stops(dlist_head *runs)
{
	dlist_iter	iter;
	int			n = 0;
	int64	   *ids;
	int64	   *draining;
	int			ndraining;

	dlist_foreach(iter, runs)
		n++;
	ids = palloc(n * sizeof(int64));
	draining = palloc(n * sizeof(int64));
	n = 0;
	dlist_foreach(iter, runs)
	{
		RetlRun    *run = dlist_container(RetlRun, node, iter.cur);

		if (!run->stopping)
			ids[n++] = run->id;
	}
	if (n == 0)
		return;
	ndraining = retl_store_draining(ids, n, draining);
	for (int i = 0; i < ndraining; i++)
	{
		dlist_foreach(iter, runs)
		{
			RetlRun    *run = dlist_container(RetlRun, node, iter.cur);

			if (run->id != draining[i])
				continue;
			run->stopping = true;
			run->drain_deadline = GetCurrentTimestamp() +
				(int64) retl_drain_timeout_ms * 1000;
		}
	}
}

/*
 * The checkpoint of a run as JSON: the position (a leaf and block, or the
 * last key read) and the counters there.
 */
static char *
checkpoint_json(const RetlRunProgress *p)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"pos\": " INT64_FORMAT ", \"rows\": " INT64_FORMAT
					 ", \"sent\": " INT64_FORMAT ", \"succeeded\": " INT64_FORMAT
					 ", \"failed\": " INT64_FORMAT ", \"resent\": " INT64_FORMAT
					 ", \"dispatched\": " INT64_FORMAT,
					 p->ckpt_pos, p->ckpt_rows, p->ckpt_sent,
					 p->ckpt_succeeded, p->ckpt_failed, p->ckpt_resent,
					 p->events_sent);
	if (p->ckpt_key != NULL)
	{
		appendStringInfoString(&buf, ", \"key\": ");
		retl_json_escape(&buf, p->ckpt_key, strlen(p->ckpt_key));
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

static RetlStoreStmt progress_stmt = {
	"UPDATE retl.runs SET rows_read = $2, events_sent = $3,"
	" events_succeeded = $4, events_failed = $5, checkpoint = $6::jsonb,"
	" rows_deleted = $7, rows_estimated = $8,"
	" read_method = coalesce($9, read_method) WHERE id = $1",
	9, {INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, TEXTOID, INT8OID,
	INT8OID, TEXTOID}
};

/*
 * Writes a run's counters, checkpoint and read method.  Runs inside the
 * caller's transaction.
 */
void
retl_store_progress(const RetlRunProgress *p)
{
	Datum		values[9] = {
		Int64GetDatum(p->run_id), Int64GetDatum(p->rows_read),
		Int64GetDatum(p->events_sent), Int64GetDatum(p->events_succeeded),
		Int64GetDatum(p->events_failed),
		CStringGetTextDatum(checkpoint_json(p)),
		Int64GetDatum(p->rows_deleted), Int64GetDatum(p->rows_estimated),
		p->read_method ? CStringGetTextDatum(p->read_method) : (Datum) 0
	};
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ',
		p->rows_estimated < 0 ? 'n' : ' ',
	p->read_method ? ' ' : 'n'};

	retl_store_exec(&progress_stmt, values, nulls, SPI_OK_UPDATE);
}

/*
 * Writes a run's counters, checkpoint and read method, and notes that
 * they are written.
 */
static void
write_counters(RetlRun *run)
{
	RetlRunProgress p = {
		.run_id = run->id,
		.rows_read = run->rows_read,
		.rows_estimated = run->rows_estimated,
		.rows_deleted = run->rows_deleted,
		.events_sent = run->events_sent,
		.events_succeeded = run->events_succeeded,
		.events_failed = run->events_failed,
		.read_method = run->method_chosen
		? retl_read_method_name(run->read_method) : NULL,
		.ckpt_pos = run->ckpt.pos,
		.ckpt_key = run->ckpt.key,
		.ckpt_rows = run->ckpt.rows,
		.ckpt_sent = run->ckpt.sent,
		.ckpt_succeeded = run->ckpt.succeeded,
		.ckpt_failed = run->ckpt.failed,
		.ckpt_resent = run->ckpt.resent
	};

	retl_store_writing = run;
	retl_store_progress(&p);
	retl_store_writing = NULL;
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
retl_store_flush_due(dlist_head *runs, int interval_ms, int ckpt_interval_ms)
{
	dlist_iter	iter;
	MemoryContext caller = NULL;
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
			caller = retl_store_begin();
		started = true;
		write_counters(run);
	}
	if (started)
		retl_store_commit(caller);
}

static RetlStoreStmt lock_sync_stmt = {
	"SELECT 1 FROM retl.syncs s JOIN retl.runs r ON r.sync_id = s.id"
	" WHERE r.id = $1 FOR KEY SHARE OF s",
	1, {INT8OID}
};

/*
 * Locks the sync of a run FOR KEY SHARE, in the caller's transaction.
 */
void
retl_store_lock_sync(int64 run_id)
{
	retl_store_exec_id(&lock_sync_stmt, run_id, SPI_OK_SELECT);
}

/* the end of a run, its sync's cursor, and the notification */
static RetlStoreStmt end_stmt = {
	"UPDATE retl.runs SET status = $2, error = $3,"
	" finished_at = clock_timestamp() WHERE id = $1",
	4, {INT8OID, TEXTOID, TEXTOID, BYTEAOID}
};
static RetlStoreStmt cursor_stmt = {
	"UPDATE retl.syncs s SET cursor_snapshot = $4, cursor_run_id = r.id,"
	" needs_full = s.needs_full AND r.kind <> 'full',"
	" full_reason = CASE WHEN r.kind = 'full' THEN NULL ELSE s.full_reason END"
	" FROM retl.runs r WHERE r.id = $1 AND s.id = r.sync_id",
	4, {INT8OID, TEXTOID, TEXTOID, BYTEAOID}
};
static RetlStoreStmt notify_stmt = {
	/* names over the limit exist from before 0.4: cut, they always fit */
	"SELECT pg_catalog.pg_notify('retl_runs', pg_catalog.json_build_object("
	"'run', $1, 'sync', pg_catalog.left(r.sync_name, 255), 'status', $2)::text)"
	" FROM retl.runs r WHERE r.id = $1",
	4, {INT8OID, TEXTOID, TEXTOID, BYTEAOID}
};

/*
 * Records the end of a run: its status and error (NULL: none); on
 * success, advances the sync's cursor to the run's snapshot.  Notifies
 * channel retl_runs.  Runs inside the caller's transaction.
 */
void
retl_store_run_end(int64 run_id, const char *status, text *error,
				   bytea *snapshot)
{
	Datum		values[4] = {
		Int64GetDatum(run_id), CStringGetTextDatum(status),
		PointerGetDatum(error), PointerGetDatum(snapshot)
	};
	char		nulls[4] = {' ', ' ', error ? ' ' : 'n', ' '};

	retl_store_exec(&end_stmt, values, nulls, SPI_OK_UPDATE);
	if (strcmp(status, "succeeded") == 0)
		retl_store_exec(&cursor_stmt, values, nulls, SPI_OK_UPDATE);
	retl_store_exec(&notify_stmt, values, nulls, SPI_OK_SELECT);
}

/*
 * Records the end of a run: its status, counters and error; on success,
 * advances the sync's cursor to the run's snapshot.  Notifies channel
 * retl_runs.
 */
void
retl_store_finish(RetlRun *run)
{
	const char *status = run->stopping ? "stopped" :
		run->failed ? "failed" : "succeeded";
	text	   *error = run->error ? retl_secrets_scrub(run->secrets, run->error, -1) : NULL;
	MemoryContext caller = retl_store_begin();

	/*
	 * The sync's row first, then the run's, in the order of the API
	 * (retl._sync(name, true), retl._enqueue_run): the second UPDATE of the
	 * run below rechecks its foreign key, which locks the sync's row, and
	 * taking the run's row before it deadlocked with retl_drop_sync.
	 */
	retl_store_lock_sync(run->id);
	write_counters(run);
	retl_store_run_end(run->id, status, error, run->snapshot);
	retl_store_commit(caller);
}

static RetlStoreStmt end_failed_stmt = {
	"UPDATE retl.runs SET status = 'failed', error = $2,"
	" finished_at = clock_timestamp()"
	" WHERE id = $1 AND status IN ('running', 'stopping', 'draining')",
	2, {INT8OID, TEXTOID}
};

/*
 * Marks a run failed with error, whatever it was doing.
 */
void
retl_store_end_failed(int64 run_id, text *error)
{
	Datum		values[2] = {Int64GetDatum(run_id), PointerGetDatum(error)};
	MemoryContext caller = retl_store_begin();

	retl_store_exec(&end_failed_stmt, values, NULL, SPI_OK_UPDATE);
	retl_store_commit(caller);
}

/*
 * Ends a run whose regular end (retl_store_finish) raised an error: the
 * run is failed with that error, whatever it was doing, so that it is
 * never left active.  The counters keep their last written values.
 */
void
retl_store_finish_failed(RetlRun *run, const char *error)
{
	retl_store_end_failed(run->id,
						  retl_secrets_scrub(run->secrets,
											 psprintf("recording the end of the run failed: %s", error),
											 -1));
}
