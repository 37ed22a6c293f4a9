/*-------------------------------------------------------------------------
 *
 * setup.c
 *	  Setting up claimed runs: the run's mapping, destination, snapshot,
 *	  checkpoint, diff state and reader, from the rows the store reads.
 *
 * A run is set up in one transaction, as the worker, in the run's memory
 * context; a run that cannot be set up is marked failed in a transaction
 * of its own, and its memory is freed.
 *
 *-------------------------------------------------------------------------
 */
#include "run.h"
#include "store.h"
#include "setup.h"

#include "access/xact.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

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
 * Takes the stored row of a claimed run into the run (in its memory).
 */
static void
load_run(RetlRun *run, RetlRunRow *row)
{
	run->sync_id = row->sync_id;
	run->sync_name = row->sync_name;
	run->full = row->full;
	run->relid = row->relid;
	run->owner = row->owner;
	run->prev_snapshot = row->prev_snapshot;
	run->snapshot = row->snapshot;
	if (row->checkpoint != NULL)
		load_checkpoint(run, row->checkpoint);
	run->retry_failed = row->retry_failed;
	run->diff = row->diff;
	run->mirror = row->mirror;
	/* a sync without failed events skips the retry phase */
	run->retry_failed &= row->has_retryable;
	run->fp_values = row->fp_values;
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
 * Checks what a run reads from and sends to before setting it up: the
 * destination's secrets, the sync's owner, the source.
 */
static void
check_run(RetlRun *run, RetlRunRow *row)
{
	if (row->config == NULL)
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
}

/*
 * Sets up a claimed run: compiles its mapping, opens its destination,
 * applies the cursor guards, takes the run's snapshot and records it.
 */
static void
setup_run(RetlRun *run)
{
	RetlRunRow	row;
	const char *reason;
	MemoryContext old;
	MemoryContext caller = retl_store_begin();

	if (!retl_store_run_row(run->id, run->cxt, &row))
		elog(ERROR, "the sync of this run was dropped");
	old = MemoryContextSwitchTo(run->cxt);
	load_run(run, &row);
	MemoryContextSwitchTo(old);
	check_run(run, &row);
	old = MemoryContextSwitchTo(run->cxt);
	run->map = retl_mapping_compile(run->relid, strcmp(row.event_type, "track") == 0,
									row.mapping, row.pk, row.options);
	retl_dest_open(&run->dest, row.kind, row.config,
				   strcmp(row.event_type, "track") == 0);
	run->secrets = retl_secrets_values(&run->dest, row.config);
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
		setup_diff(run, row.options);
	retl_reader_start(run);
	MemoryContextSwitchTo(old);
	run->rows_estimated = retl_reader_estimate(run->relid);
	retl_store_run_started(run->id, run->snapshot, reason, run->rows_estimated);
	retl_store_commit(caller);
}

/*
 * A new run of id, with its memory context, none of it set up yet.
 */
static RetlRun *
new_run(int64 id)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "retl run",
											  ALLOCSET_DEFAULT_SIZES);
	RetlRun    *run = MemoryContextAllocZero(cxt, sizeof(RetlRun));

	run->cxt = cxt;
	run->id = id;
	run->row_cxt = AllocSetContextCreate(cxt, "retl row",
										 ALLOCSET_DEFAULT_SIZES);
	dlist_init(&run->ready);
	dlist_init(&run->waiting);
	dlist_init(&run->inflight);
	return run;
}

/*
 * Claims the next queued run and sets it up.  Returns NULL when there is
 * nothing to claim; a run that cannot be set up is marked failed.  The
 * queue keeps the runs claimed in the catalog and not set up yet.
 */
RetlRun *
retl_run_claim(RetlClaimQueue *queue)
{
	for (;;)
	{
		int64		id;
		MemoryContext cxt;
		RetlRun    *run;
		MemoryContext caller = CurrentMemoryContext;
		bool		ok = false;

		if (queue->next == queue->n)
		{
			queue->n = retl_store_claim_runs(queue->ids, lengthof(queue->ids));
			queue->next = 0;
			if (queue->n == 0)
				return NULL;
		}
		id = queue->ids[queue->next++];
		run = new_run(id);
		cxt = run->cxt;
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
			retl_store_setup_failed(id, edata->message);
		}
		PG_END_TRY();
		if (ok)
			return run;
	}
}
